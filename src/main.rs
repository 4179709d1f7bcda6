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
        Err(e)
            if e.use_stderr()
                && e.kind() != clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            // Usage errors get one line like every other error; clap's own text spans
            // several (the error, a blank line, a pointer to --help).
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let first = first.trim_start_matches("error: ");
            eprintln!("Error: {first} (see --help)");
            return ExitCode::from(e.exit_code() as u8);
        }
        Err(e) => {
            // --help, --version, and the help a bare `py-spy record` gets.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(err)) if errors::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("Error: {}", errors::one_line(&err));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(2),
    }
}

/// Runs the request; returns the exit code.
fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.into_request() {
        Request::Dump(options) => {
            let stdout = io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            py_spy::dump::run(options, &mut out).map(|()| 0)
        }
        Request::Record(options) => py_spy::record::run(options),
        Request::Top(options) => py_spy::top::run(options),
    }
}
