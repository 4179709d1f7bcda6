//! The command line. All clap types live here and are turned into plain option structs;
//! nothing below the CLI knows clap exists.

use clap::{Args, Parser, Subcommand};

use crate::dump::DumpOptions;

/// Sampling profiler for Python programs.
#[derive(Debug, Parser)]
#[command(
    name = "py-spy",
    version,
    about = "Sampling profiler for Python programs: reads a running CPython from outside",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every thread's current Python stack once (for hung or slow programs).
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// PID of the running Python program.
    #[arg(short, long, value_name = "PID", value_parser = clap::value_parser!(i32).range(1..))]
    pid: i32,
    /// Show each frame's arguments and local variables.
    #[arg(short, long)]
    locals: bool,
    /// Print one JSON document instead of text (format in README.md).
    #[arg(short, long)]
    json: bool,
    /// Show full paths instead of short filenames.
    #[arg(long)]
    full_filenames: bool,
    /// Read without pausing the program (less consistent stacks, no pause at all).
    #[arg(long)]
    nonblocking: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// `py-spy dump`.
    Dump(DumpOptions),
}

impl Cli {
    /// The request as plain options.
    pub fn into_request(self) -> Request {
        match self.command {
            Command::Dump(a) => Request::Dump(DumpOptions {
                pid: a.pid,
                locals: a.locals,
                json: a.json,
                full_filenames: a.full_filenames,
                nonblocking: a.nonblocking,
            }),
        }
    }
}
