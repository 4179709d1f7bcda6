//! The `py-spy` binary: parse the command line, run it, turn any error into one line and an
//! exit code.

use std::io::{self, BufWriter};
use std::process::ExitCode;

use clap::Parser;

use py_spy::cli::{Cli, Request};
use py_spy::errors;

fn main() -> ExitCode {
    // A panic is a bug, but the user still gets one line, not a backtrace; any pause guard
    // has already resumed the target while unwinding.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("Error: internal error: {info} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) if errors::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("Error: {}", errors::one_line(&err));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(2),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match cli.into_request() {
        Request::Dump(options) => py_spy::dump::run(options, &mut out),
    }
}
