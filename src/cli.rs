//! The command line. All clap types live here and are turned into plain option structs;
//! nothing below the CLI knows clap exists.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::dump::DumpOptions;
use crate::output::Format;
use crate::record::{RecordOptions, RecordTarget};
use crate::top::TopOptions;

/// Highest sampling rate accepted: beyond it a sample could not even be read in time.
pub const MAX_RATE: f64 = 100_000.0;
/// Longest duration accepted (a year), so that the deadline arithmetic cannot overflow.
pub const MAX_DURATION: f64 = 365.0 * 24.0 * 3600.0;

/// Sampling profiler for Python programs.
#[derive(Debug, Parser)]
#[command(
    name = "py-spy",
    // The package version and the commit it was built from (build.rs).
    version = env!("PY_SPY_VERSION"),
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
    /// Sample a running or launched program and write a flame graph or another profile.
    Record(RecordArgs),
    /// Print every thread's current Python stack once (for hung or slow programs).
    Dump(DumpArgs),
    /// Live view of the functions taking the most time, like `top` (q to quit).
    Top(TopArgs),
    /// Print the shell completion script for py-spy (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// What `record` and `top` sample: a running process or a program to start.
#[derive(Debug, Args)]
struct TargetArgs {
    /// PID of a running Python program.
    #[arg(
        short,
        long,
        value_name = "PID",
        value_parser = clap::value_parser!(i32).range(1..),
        required_unless_present = "command",
        conflicts_with = "command"
    )]
    pid: Option<i32>,
    /// The program to start, with its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

impl TargetArgs {
    fn into_target(self) -> RecordTarget {
        match self.pid {
            Some(pid) => RecordTarget::Pid(pid),
            None => RecordTarget::Command(self.command),
        }
    }
}

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
struct TopArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Samples per second.
    #[arg(
        short,
        long,
        value_name = "RATE",
        default_value = "100",
        value_parser = parse_rate,
        allow_negative_numbers = true
    )]
    rate: f64,
    /// Seconds between refreshes of the view (fractions allowed).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "1",
        value_parser = parse_duration,
        allow_negative_numbers = true
    )]
    delay: f64,
    /// Include idle threads (waiting for I/O, a lock, or sleeping).
    #[arg(short, long)]
    idle: bool,
    /// Only include the thread holding the GIL.
    #[arg(short, long)]
    gil: bool,
    /// Also sample child processes (and theirs).
    #[arg(short, long)]
    subprocesses: bool,
    /// Read without pausing the program (lower overhead, less consistent stacks).
    #[arg(long)]
    nonblocking: bool,
    /// Show full paths instead of short filenames.
    #[arg(long)]
    full_filenames: bool,
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Interactive SVG flame graph (open in a browser).
    Flamegraph,
    /// JSON for https://www.speedscope.app.
    Speedscope,
    /// Folded stacks, one `a;b;c count` line per stack (for inferno, flamegraph.pl).
    Raw,
    /// Trace Event Format JSON (open in https://ui.perfetto.dev or chrome://tracing).
    Chrometrace,
}

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
struct RecordArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Output file [default: <program>-<timestamp>.<ext> in the current directory].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "flamegraph")]
    format: FormatArg,
    /// Samples per second.
    #[arg(
        short,
        long,
        value_name = "RATE",
        default_value = "100",
        value_parser = parse_rate,
        allow_negative_numbers = true
    )]
    rate: f64,
    /// Stop after this many seconds of wall-clock time (fractions allowed) [default: until
    /// the program exits or Ctrl-C].
    #[arg(
        short,
        long,
        value_name = "SECONDS",
        value_parser = parse_duration,
        allow_negative_numbers = true
    )]
    duration: Option<f64>,
    /// Include idle threads (waiting for I/O, a lock, or sleeping).
    #[arg(short, long)]
    idle: bool,
    /// Only include the thread holding the GIL.
    #[arg(short, long)]
    gil: bool,
    /// Add a root frame per thread with its id and name.
    #[arg(short, long)]
    threads: bool,
    /// Aggregate by function (its first line) rather than by line.
    #[arg(short = 'F', long, conflicts_with = "nolineno")]
    function: bool,
    /// Leave out line numbers.
    #[arg(long)]
    nolineno: bool,
    /// Show full paths instead of short filenames.
    #[arg(long)]
    full_filenames: bool,
    /// Read without pausing the program (lower overhead, less consistent stacks).
    #[arg(long)]
    nonblocking: bool,
    /// Also record child processes (and theirs), with a root frame per process.
    #[arg(short, long)]
    subprocesses: bool,
}

/// The completion script for the whole command line, generated from its definition so the
/// two cannot drift apart.
fn completion_script(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    // Into memory, not stdout: the generator panics on a write error, and a closed pipe is
    // a quiet success here like everywhere else.
    clap_complete::generate(shell, &mut Cli::command(), "py-spy", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of samples per second"))?;
    if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE {
        return Err(format!(
            "the rate must be more than 0 and at most {MAX_RATE} samples per second"
        ));
    }
    Ok(rate)
}

fn parse_duration(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_DURATION {
        return Err("the duration must be more than 0 seconds (and at most a year)".to_owned());
    }
    Ok(seconds)
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// `py-spy record`.
    Record(RecordOptions),
    /// `py-spy dump`.
    Dump(DumpOptions),
    /// `py-spy top`.
    Top(TopOptions),
    /// `py-spy completions`: print this completion script.
    Completions(String),
}

impl Cli {
    /// The request as plain options.
    pub fn into_request(self) -> Request {
        match self.command {
            Command::Completions(a) => Request::Completions(completion_script(a.shell)),
            Command::Dump(a) => Request::Dump(DumpOptions {
                pid: a.pid,
                locals: a.locals,
                json: a.json,
                full_filenames: a.full_filenames,
                nonblocking: a.nonblocking,
            }),
            Command::Top(a) => Request::Top(TopOptions {
                target: a.target.into_target(),
                rate: a.rate,
                delay: a.delay,
                idle: a.idle,
                gil: a.gil,
                subprocesses: a.subprocesses,
                nonblocking: a.nonblocking,
                full_filenames: a.full_filenames,
            }),
            Command::Record(a) => Request::Record(RecordOptions {
                target: a.target.into_target(),
                output: a.output,
                format: match a.format {
                    FormatArg::Flamegraph => Format::Flamegraph,
                    FormatArg::Speedscope => Format::Speedscope,
                    FormatArg::Raw => Format::Raw,
                    FormatArg::Chrometrace => Format::ChromeTrace,
                },
                rate: a.rate,
                duration: a.duration,
                idle: a.idle,
                gil: a.gil,
                threads: a.threads,
                function: a.function,
                nolineno: a.nolineno,
                full_filenames: a.full_filenames,
                nonblocking: a.nonblocking,
                subprocesses: a.subprocesses,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(parse_rate("250"), Ok(250.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-5", "1e9", "nan", "inf", "abc", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("1.5"), Ok(1.5));
        for bad in ["0", "-1", "abc", "inf", "1e99"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn parse(args: &[&str]) -> Result<Request, clap::Error> {
        Cli::try_parse_from(args).map(Cli::into_request)
    }

    #[test]
    fn record_targets() {
        let Request::Record(r) = parse(&["py-spy", "record", "-p", "12"]).unwrap() else {
            panic!()
        };
        assert!(matches!(r.target, RecordTarget::Pid(12)));
        let Request::Record(r) = parse(&[
            "py-spy", "record", "-d", "1.5", "--", "python", "-m", "x", "-v",
        ])
        .unwrap() else {
            panic!()
        };
        match r.target {
            RecordTarget::Command(c) => assert_eq!(c, ["python", "-m", "x", "-v"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.duration, Some(1.5));
        assert!(parse(&["py-spy", "record", "-p", "1", "--", "python"]).is_err());
        assert!(parse(&["py-spy", "record", "-p", "1", "--function", "--nolineno"]).is_err());
        assert!(parse(&["py-spy", "record", "-p", "1", "-f", "svg"]).is_err());
    }

    #[test]
    fn top_options() {
        let Request::Top(t) = parse(&["py-spy", "top", "-p", "7"]).unwrap() else {
            panic!()
        };
        assert!(matches!(t.target, RecordTarget::Pid(7)));
        assert_eq!((t.rate, t.delay), (100.0, 1.0));
        let Request::Top(t) = parse(&[
            "py-spy", "top", "-r", "250", "--delay", "0.5", "-s", "--gil", "--", "python", "a.py",
        ])
        .unwrap() else {
            panic!()
        };
        match t.target {
            RecordTarget::Command(c) => assert_eq!(c, ["python", "a.py"]),
            other => panic!("{other:?}"),
        }
        assert_eq!((t.rate, t.delay), (250.0, 0.5));
        assert!(t.subprocesses && t.gil && !t.idle);
        assert!(parse(&["py-spy", "top", "-p", "1", "--delay", "0"]).is_err());
        assert!(parse(&["py-spy", "top", "-p", "1", "--", "python"]).is_err());
        assert!(parse(&["py-spy", "top"]).is_err());
    }
}
