//! The `py-spy` binary: parse the command line, run it, turn any error into one line and an
//! exit code.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;

use py_spy::cli::{Cli, Request};
use py_spy::errors;
use py_spy::record::RecordTarget;

/// Whether standard output was closed when py-spy started (`py-spy dump >&-`). The Rust
/// runtime reopens a closed standard stream on /dev/null before `main`, which would turn
/// the mistake into silent success, so this is noted earlier, by a constructor.
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

extern "C" fn note_closed_stdout() {
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } == -1 {
        STDOUT_CLOSED_AT_START.store(true, Ordering::Relaxed);
    }
}

/// Runs [`note_closed_stdout`] with the C library's constructors, before the runtime
/// starts.
#[used]
#[link_section = ".init_array"]
static NOTE_CLOSED_STDOUT: extern "C" fn() = note_closed_stdout;

fn main() -> ExitCode {
    let stdout_closed = STDOUT_CLOSED_AT_START.load(Ordering::Relaxed);
    // A panic is a bug, but the user still gets one line, not a backtrace; any pause guard
    // has already resumed the target while unwinding.
    std::panic::set_hook(Box::new(|info| {
        py_spy::note!("Error: internal error: {info} (please report this)");
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
            let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
            let first = lines.next().unwrap_or("").trim_start_matches("error: ");
            // "the following required arguments were not provided:" lists them on the
            // indented lines after it; without them the line names nothing.
            let listed: Vec<&str> = if first.ends_with(':') {
                lines
                    .take_while(|l| l.starts_with(' '))
                    .map(str::trim)
                    .collect()
            } else {
                Vec::new()
            };
            let first = if listed.is_empty() {
                first.to_string()
            } else {
                format!("{} {}", first, listed.join(", "))
            };
            // An invalid choice is only useful with the valid ones beside it.
            let choices = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("[possible values: "))
                .map(|v| format!(" (possible values: {}", v.trim_end_matches(']')))
                .map_or(String::new(), |v| v + ")");
            py_spy::note!("Error: {first}{choices} (see --help)");
            return ExitCode::from(e.exit_code() as u8);
        }
        Err(e) => {
            // --help, --version, and the help a bare `py-spy record` gets.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match std::panic::catch_unwind(|| run(cli, stdout_closed)) {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(err)) if errors::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            py_spy::note!("Error: {}", errors::one_line(&err));
            ExitCode::FAILURE
        }
        // Rust's own exit code for a panic; 2 means a usage error.
        Err(_) => ExitCode::from(101),
    }
}

/// Runs the request; returns the exit code.
fn run(cli: Cli, stdout_closed: bool) -> anyhow::Result<u8> {
    let request = cli.into_request();
    if stdout_closed && !matches!(request, Request::Record(_)) {
        anyhow::bail!(
            "standard output is closed, so there is nowhere to print to \
             (redirect it to a file, or to /dev/null to discard it)"
        );
    }
    let pid = match &request {
        Request::Dump(options) => Some(options.pid),
        Request::Record(options) => target_pid(&options.target),
        Request::Top(options) => target_pid(&options.target),
        Request::Completions(_) => None,
    };
    if pid == Some(std::process::id() as i32) {
        anyhow::bail!(
            "pid {} is this py-spy process itself, not the Python program to profile",
            std::process::id()
        );
    }
    match request {
        Request::Dump(options) => {
            let stdout = io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            py_spy::dump::run(options, &mut out).map(|()| 0)
        }
        Request::Record(options) => py_spy::record::run(options),
        Request::Top(options) => py_spy::top::run(options),
        Request::Completions(script) => {
            let mut out = io::stdout().lock();
            out.write_all(script.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the completion script to standard output")?;
            Ok(0)
        }
    }
}

/// The pid a record or top request attaches to, if any.
fn target_pid(target: &RecordTarget) -> Option<i32> {
    match target {
        RecordTarget::Pid(pid) => Some(*pid),
        RecordTarget::Command(_) => None,
    }
}
