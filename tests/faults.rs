//! Faults that `py-spy record` survives, as one table ([`ROWS`]).
//!
//! Each row names the fault, the target script and its arguments, attach or launch mode,
//! the py-spy arguments, what is done to whom (the action) and the checks. The runner
//! starts the target, starts `py-spy record -f raw -o FILE ...`, acts, waits for py-spy
//! (a py-spy that does not end is reported with the kernel's view of both processes), then
//! runs the checks; every failure of a row is reported together with the py-spy run.
//!
//! Every row runs on one interpreter per frame model: 3.9 (`PyFrameObject`), 3.12
//! (`_PyInterpreterFrame` via `cframe`) and the 3.15 chroot (`current_frame`, tagged stack
//! references); the SIGKILL row runs on 3.12 only. One test per row and interpreter,
//! `<interpreter>::<row>`. A missing interpreter is a SKIP line (a failure with CI=true).
//!
//! The targets are `tests/scripts/faults.py` (one mode per fault), `record_exit.py` and
//! `record_idle.py`; the lines checked are found through their marker comments.
//!
//! The SIGKILL row prints `SIGKILL trials: ..., kills while the target was stopped: ...,
//! targets left stopped: ...`; the churn, thread and recursion rows print their figures
//! too (run with `--nocapture` to see them).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::RwLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::profiles::{self, Folded, Label, Summary};
use common::{
    marker_line, run_py_spy, short_filename, spawn_py_spy, ChildGuard, Interpreter, Run,
    RunningPySpy, Workdir,
};

/// How long a py-spy run may take before it counts as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a target may take to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the kernel may take to show a target resumed once py-spy is gone.
const SETTLE: Duration = Duration::from_millis(100);
/// The frames the walker follows (`walker::MAX_FRAMES`), and the frame `record` puts in
/// place of the rest.
const MAX_FRAMES: usize = 4096;
const TRUNCATED_FRAME: &str = "(stack truncated: more than 4096 frames)";

// ------------------------------------------------------------------------- table --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `py-spy record --pid PID` on a running target.
    Attach,
    /// `py-spy record -- python SCRIPT ...`.
    Launch,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// Nothing: the target ends or execs by itself, or `-d` ends the recording.
    Nothing,
    /// SIGKILL the target this long after py-spy started recording.
    KillTarget(Duration),
    /// Send py-spy this signal this long after it started recording (launch mode: after
    /// the program wrote its ready file).
    SignalPySpy(i32, Duration),
    /// SIGKILL py-spy this many times at random moments, each a new py-spy on the same
    /// target, and check after each that no thread of the target is left stopped.
    KillPySpy(u32),
}

#[derive(Debug, Clone, Copy)]
enum Check {
    /// py-spy's exit status.
    Exit(i32),
    /// The summary line, and a folded file whose counts add up to its samples.
    Output,
    /// `function (file:line)` at the line marked `# HOT function`: present, with at least
    /// 90% of the function's samples; the rest only at the lines between its `def` and
    /// that line (what it does once before its loop).
    Hot(&'static str),
    /// The function is the leaf of at least this share of the samples.
    Leaf(&'static str, f64),
    /// The function is in at most this many samples.
    AtMost(&'static str, u64),
    /// Every frame of the function (first) is called from the second, at the line marked
    /// `# CALL function`.
    CalledFrom(&'static str, &'static str),
    /// A line of py-spy's stderr starts with this (`{pid}`: the target's pid).
    Note(&'static str),
    /// No line of py-spy's stderr contains this.
    NoNote(&'static str),
    /// The summary line reports no errors.
    NoErrors,
    /// The errors of the summary line are printed (any number).
    ReportErrors,
    /// Sampling passes (and samples) at least this share of rate × duration.
    Passes(f64),
    /// The summary's achieved rate is at least this share of the asked rate.
    Rate(f64),
    /// After py-spy: the target still runs; none of its threads is stopped (`t`/`T`) or
    /// traced.
    TargetRuns,
    /// After py-spy: the target (a launched program) no longer exists.
    TargetGone,
    /// After py-spy: the target is this program now (it exec'd), running and untraced.
    TargetIs(&'static str),
    /// With `--threads`: every thread of the target (ready file's `native_ids`) has a
    /// stack in every pass, under its own root frame.
    EveryThreadEveryPass,
    /// Every stack is the truncation frame then exactly `MAX_FRAMES` Python frames:
    /// `recurse` at its call line, and `deep_spin` at its hot line as the leaf.
    Truncated,
    /// `py-spy dump` shows the deep thread's `MAX_FRAMES` frames, then the truncation line.
    DumpTruncated,
    /// Told to stop (its stop file), the churn target exits 0 having started at least this
    /// many threads per second.
    Churn(f64),
    /// Told to stop (its stop file), the workers target finishes its work: exit status 0
    /// and its `DONE` line.
    Finishes,
    /// The `signals` target's result: each of its SIGUSR1s was handled, within 0.5 s, and
    /// its SIGSTOP stopped it until the SIGCONT 0.3 s later (between 0.25 and 3 s).
    Signals,
}

/// One fault.
struct Row {
    /// The test's name.
    name: &'static str,
    /// What goes wrong.
    fault: &'static str,
    /// The target script (in `tests/scripts`).
    script: &'static str,
    /// Its arguments; `{ready}`, `{stop}` and `{result}` are files of the work directory.
    args: &'static [&'static str],
    mode: Mode,
    /// py-spy's arguments besides `record -f raw -o FILE` and the target.
    py_spy: &'static [&'static str],
    action: Action,
    checks: &'static [Check],
    /// Runs of the row (each with its own target): a race it tries to hit.
    repeat: u32,
    /// The only interpreter the row runs on, if not all.
    only: Option<&'static str>,
}

use Action::*;
use Check::*;
use Mode::*;

const ENDED: &str = "py-spy: process {pid} has ended (exited or was killed); recording stopped";
const EXECD: &str = "py-spy: the program stopped running Python (it exec'd another program)";

const ROWS: &[Row] = &[
    Row {
        name: "exit_attach",
        fault: "the target exits normally mid-record (attach)",
        script: "record_exit.py",
        args: &["0", "1.5", "{ready}"],
        mode: Attach,
        py_spy: &[],
        action: Nothing,
        checks: &[Exit(0), Output, Hot("busy_exit"), Note(ENDED)],
        repeat: 1,
        only: None,
    },
    Row {
        name: "exit_launch_0",
        fault: "the launched program exits with status 0 mid-record",
        script: "record_exit.py",
        args: &["0", "0.5"],
        mode: Launch,
        py_spy: &[],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Hot("busy_exit"),
            NoNote("py-spy: the program"),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "exit_launch_3",
        fault: "the launched program exits with status 3 mid-record",
        script: "record_exit.py",
        args: &["3", "0.5"],
        mode: Launch,
        py_spy: &[],
        action: Nothing,
        checks: &[
            Exit(3),
            Output,
            Hot("busy_exit"),
            Note("py-spy: the program exited with status 3"),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "finalized_launch",
        fault: "the program's interpreter shuts down and the process lives on for 1 s",
        script: "faults.py",
        args: &["finalized", "{ready}", "0.5", "1"],
        mode: Launch,
        py_spy: &["-r", "2000"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Hot("final_spin"),
            NoErrors,
            NoNote("py-spy: the program"),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "finalized_attach",
        fault: "the target's interpreter shuts down and the process lives on for 1 s",
        script: "faults.py",
        args: &["finalized", "{ready}", "1", "1"],
        mode: Attach,
        py_spy: &["-r", "2000"],
        action: Nothing,
        checks: &[Exit(0), Output, Hot("final_spin"), NoErrors, Note(ENDED)],
        repeat: 1,
        only: None,
    },
    Row {
        name: "kill_target_attach",
        fault: "the target is SIGKILLed mid-record (attach)",
        script: "record_exit.py",
        args: &["0", "30", "{ready}"],
        mode: Attach,
        py_spy: &[],
        action: KillTarget(Duration::from_millis(800)),
        checks: &[Exit(0), Output, Hot("busy_exit"), Note(ENDED)],
        repeat: 1,
        only: None,
    },
    Row {
        name: "killed_launch",
        fault: "the launched program is SIGKILLed mid-record",
        script: "record_exit.py",
        args: &["kill", "0.5"],
        mode: Launch,
        py_spy: &[],
        action: Nothing,
        checks: &[
            Exit(137),
            Output,
            Hot("busy_exit"),
            Note("py-spy: the program was killed by SIGKILL"),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "terminated_launch",
        fault: "the launched program is SIGTERMed mid-record",
        script: "record_exit.py",
        args: &["term", "0.5"],
        mode: Launch,
        py_spy: &[],
        action: Nothing,
        checks: &[
            Exit(143),
            Output,
            Hot("busy_exit"),
            Note("py-spy: the program was killed by SIGTERM"),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "sigint_attach",
        fault: "py-spy gets SIGINT (attach)",
        script: "record_idle.py",
        args: &["{ready}", "60"],
        mode: Attach,
        py_spy: &[],
        action: SignalPySpy(libc::SIGINT, Duration::from_millis(800)),
        checks: &[
            Exit(0),
            Output,
            Hot("spin"),
            Leaf("spin", 0.9),
            CalledFrom("spin", "busy_entry"),
            TargetRuns,
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "sigterm_attach",
        fault: "py-spy gets SIGTERM (attach)",
        script: "record_idle.py",
        args: &["{ready}", "60"],
        mode: Attach,
        py_spy: &[],
        action: SignalPySpy(libc::SIGTERM, Duration::from_millis(800)),
        checks: &[
            Exit(0),
            Output,
            Hot("spin"),
            Leaf("spin", 0.9),
            CalledFrom("spin", "busy_entry"),
            TargetRuns,
        ],
        repeat: 1,
        only: None,
    },
    Row {
        // A short lifetime: if py-spy left it running, it still ends soon.
        name: "sigterm_launch",
        fault: "py-spy gets SIGTERM (launch: passed on to the program)",
        script: "record_idle.py",
        args: &["{ready}", "20"],
        mode: Launch,
        py_spy: &[],
        action: SignalPySpy(libc::SIGTERM, Duration::from_millis(700)),
        checks: &[
            Exit(143),
            Output,
            Hot("spin"),
            Note("py-spy: the program was killed by SIGTERM"),
            TargetGone,
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "sigkill_py_spy",
        fault: "py-spy gets SIGKILL while threads are stopped (blocking mode, high rate)",
        script: "faults.py",
        args: &["workers", "{ready}", "4", "{stop}", "20"],
        mode: Attach,
        py_spy: &["-r", "2000"],
        action: KillPySpy(100),
        checks: &[Finishes],
        repeat: 1,
        only: Some("py312"),
    },
    Row {
        // --idle: the busy thread waits for the GIL part of the time, and every stack of
        // every pass is to be written.
        name: "thread_churn",
        fault: "threads started and ended hundreds of times per second",
        script: "faults.py",
        args: &["churn", "{ready}", "{stop}", "{result}"],
        mode: Attach,
        py_spy: &["--idle", "-d", "3", "-r", "200"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Passes(0.8),
            Hot("churn_spin"),
            ReportErrors,
            Churn(200.0),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        // 5/s: a pass over 1,001 threads takes about 50 ms in the debug build under test
        // (30-40 ms in a release build).
        name: "threads_1000",
        fault: "1,000 threads (blocking)",
        script: "faults.py",
        args: &["threads", "{ready}", "996", "4"],
        mode: Attach,
        py_spy: &["--idle", "--threads", "-d", "3", "-r", "5"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Rate(0.9),
            NoErrors,
            EveryThreadEveryPass,
            Hot("idle_wait"),
            Hot("spin"),
            Hot("main_sleep"),
            TargetRuns,
        ],
        repeat: 1,
        only: None,
    },
    Row {
        // Without pausing, the thread list is kept between passes; a thread it lacks
        // must make the next pass list again, or the new thread's wait (its activity not
        // yet read) is taken for work until the list ages out (100 ms: 20 samples here).
        name: "late_threads_nonblocking",
        fault: "threads started while sampling (--nonblocking)",
        script: "faults.py",
        args: &["late", "{ready}", "1"],
        mode: Attach,
        py_spy: &["--nonblocking", "-d", "3", "-r", "200"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Rate(0.9),
            NoErrors,
            Hot("late_spin"),
            AtMost("late_idle", 3),
            AtMost("main_sleep", 3),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "threads_1000_nonblocking",
        fault: "1,000 threads (--nonblocking)",
        script: "faults.py",
        args: &["threads", "{ready}", "996", "4"],
        mode: Attach,
        py_spy: &["--idle", "--threads", "--nonblocking", "-d", "3", "-r", "5"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Rate(0.9),
            NoErrors,
            EveryThreadEveryPass,
            Hot("idle_wait"),
            Hot("spin"),
            Hot("main_sleep"),
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "recursion_10000",
        fault: "recursion 10,000 deep",
        script: "faults.py",
        args: &["deep", "{ready}", "10000"],
        mode: Attach,
        py_spy: &["-d", "2", "-r", "20"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Rate(0.9),
            NoErrors,
            Truncated,
            DumpTruncated,
        ],
        repeat: 1,
        only: None,
    },
    Row {
        name: "signals_launch",
        fault: "the program gets 200 signals, stops itself and is continued",
        script: "faults.py",
        args: &["signals", "{ready}", "{result}", "3"],
        mode: Launch,
        py_spy: &["-r", "2000"],
        action: Nothing,
        checks: &[Exit(0), Output, Hot("signal_spin"), NoErrors, Signals],
        repeat: 1,
        only: None,
    },
    Row {
        name: "signals_attach",
        fault: "the target gets 200 signals, stops itself and is continued",
        script: "faults.py",
        args: &["signals", "{ready}", "{result}", "3"],
        mode: Attach,
        py_spy: &["-r", "2000"],
        action: Nothing,
        checks: &[Exit(0), Output, Hot("signal_spin"), NoErrors, Signals],
        repeat: 1,
        only: None,
    },
    Row {
        // Several runs at a high rate: an exec while py-spy held the other threads
        // deadlocked py-spy and the target in about one run in five.
        name: "exec_attach",
        fault: "the target execs a non-Python program mid-record (attach)",
        script: "faults.py",
        args: &["exec", "{ready}", "0.3", "/bin/sleep", "3"],
        mode: Attach,
        py_spy: &["-r", "2000"],
        action: Nothing,
        checks: &[
            Exit(0),
            Output,
            Hot("before_exec"),
            Note(EXECD),
            NoErrors,
            TargetIs("sleep"),
        ],
        repeat: 4,
        only: None,
    },
    Row {
        name: "exec_launch",
        fault: "the launched program execs a non-Python program mid-record",
        script: "faults.py",
        args: &[
            "exec",
            "{ready}",
            "0.3",
            "/bin/sh",
            "-c",
            "sleep 0.2; exit 7",
        ],
        mode: Launch,
        py_spy: &["-r", "2000"],
        action: Nothing,
        checks: &[
            Exit(7),
            Output,
            Hot("before_exec"),
            Note(EXECD),
            Note("py-spy: the program exited with status 7"),
            NoErrors,
        ],
        repeat: 2,
        only: None,
    },
];

// ------------------------------------------------------------------------- tests --

/// One test per row (`$row` is a row's name).
macro_rules! row_tests {
    ($label:literal; $($row:ident),* $(,)?) => {
        /// The rows these tests run, for [`super::every_row_is_tested`].
        pub const ROWS: &[&str] = &[$(stringify!($row)),*];
        $(
            #[test]
            fn $row() {
                super::run_row(stringify!($row), $label);
            }
        )*
    };
}

/// Every row but the SIGKILL one, which is tested on its own.
macro_rules! all_rows {
    ($label:literal) => {
        row_tests!($label;
            exit_attach, exit_launch_0, exit_launch_3, finalized_launch, finalized_attach,
            kill_target_attach, killed_launch,
            terminated_launch, sigint_attach, sigterm_attach, sigterm_launch, thread_churn,
            threads_1000, threads_1000_nonblocking, late_threads_nonblocking, recursion_10000,
            signals_launch, signals_attach, exec_attach, exec_launch,
        );
    };
}

mod py39 {
    all_rows!("py39");
}

mod py312 {
    all_rows!("py312");
}

mod py315_chroot {
    all_rows!("py315-chroot");
}

/// The longest row; named to sort (and so to start) first.
#[test]
fn a_sigkill_py_spy() {
    run_row("sigkill_py_spy", "py312");
}

#[test]
fn every_row_is_tested() {
    for tested in [py39::ROWS, py312::ROWS, py315_chroot::ROWS] {
        let mut names: BTreeSet<&str> = tested.iter().copied().collect();
        names.insert("sigkill_py_spy");
        let rows: BTreeSet<&str> = ROWS.iter().map(|r| r.name).collect();
        assert_eq!(names, rows, "the tests and the table disagree");
    }
}

// ------------------------------------------------------------------------ runner --

/// The failures of one test, reported together at the end.
struct Report {
    label: String,
    failures: Vec<String>,
    outputs: Vec<String>,
}

impl Report {
    fn new(label: String) -> Report {
        Report {
            label,
            failures: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Records the errors of one run; `run` and `extra` are shown when there are any.
    fn check(&mut self, what: &str, errors: Vec<String>, run: Option<&Run>, extra: &str) {
        if errors.is_empty() {
            return;
        }
        self.failures
            .push(format!("[{what}]\n  - {}", errors.join("\n  - ")));
        let mut output = format!("===== {what} =====\n");
        if let Some(run) = run {
            output.push_str(&run.describe());
            output.push('\n');
        }
        output.push_str(extra);
        self.outputs.push(output);
    }

    fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let mut message = format!(
            "{}: {} check(s) failed\n\n{}\n",
            self.label,
            self.failures.len(),
            self.failures.join("\n\n")
        );
        for output in &self.outputs {
            let _ = write!(message, "\n{output}\n");
        }
        panic!("{message}");
    }
}

/// Held shared by every row, and exclusively by those that measure the sampling rate.
static QUIET: RwLock<()> = RwLock::new(());

fn run_row(name: &str, label: &str) {
    let row = ROWS
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name:?}"));
    assert!(
        row.only.is_none_or(|only| only == label),
        "{name} is not run on {label}"
    );
    let interp = common::interpreter(label);
    if !interp.available() {
        return;
    }
    // A row that measures the sampling rate runs alone: next to another row's busy target
    // and py-spy at 2000/s, two cores are not enough to tell a slow sampler from a
    // starved one.
    let timed = row.checks.iter().any(|c| matches!(c, Rate(_) | Passes(_)));
    let _alone = timed.then(|| QUIET.write().unwrap_or_else(|e| e.into_inner()));
    let _shared = (!timed).then(|| QUIET.read().unwrap_or_else(|e| e.into_inner()));
    let mut report = Report::new(format!("{label} {name} ({})", row.fault));
    for attempt in 0..row.repeat {
        run_once(row, &interp, attempt, &mut report);
    }
    report.finish();
}

/// A running target and where its files are.
struct Started {
    // Declared first: the process is killed before its directory is removed.
    child: Option<ChildGuard>,
    wd: Workdir,
    /// The Python process's pid, once known (launch mode: from its ready file).
    pid: Option<u32>,
    ready: Option<Value>,
}

impl Started {
    /// The ready file, read now if it was not yet (launch mode).
    fn ready(&mut self) -> Option<&Value> {
        if self.ready.is_none() {
            self.ready = self.wd.read_json("ready.json").ok();
            if self.pid.is_none() {
                self.pid = self
                    .ready
                    .as_ref()
                    .and_then(|r| r["pid"].as_u64())
                    .map(|p| p as u32);
            }
        }
        self.ready.as_ref()
    }
}

fn run_once(row: &Row, interp: &Interpreter, attempt: u32, report: &mut Report) {
    let wd = Workdir::new(interp);
    let script_args: Vec<String> = row
        .args
        .iter()
        .map(|a| match *a {
            "{ready}" => wd.seen("ready.json"),
            "{stop}" => wd.seen("stop"),
            "{result}" => wd.seen("result.json"),
            other => other.to_string(),
        })
        .collect();
    let script_args: Vec<&str> = script_args.iter().map(String::as_str).collect();
    let out = wd.host("out.txt");
    let out_arg = out.to_string_lossy().into_owned();
    let mut args: Vec<String> = ["record", "-f", "raw", "-o", &out_arg]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(row.py_spy.iter().map(|s| s.to_string()));
    let mut started = match row.mode {
        Attach => {
            let mut child = wd.spawn(row.script, &script_args);
            let ready = wd.wait_json("ready.json", &mut child, row.script, READY_TIMEOUT);
            let pid = child.pid();
            assert_eq!(
                ready["pid"].as_u64(),
                Some(u64::from(pid)),
                "{}: the spawned pid is not the Python pid",
                interp.label
            );
            args.push("--pid".into());
            args.push(pid.to_string());
            Started {
                child: Some(child),
                wd,
                pid: Some(pid),
                ready: Some(ready),
            }
        }
        Launch => {
            args.push("--".into());
            args.extend(wd.command(row.script, &script_args));
            Started {
                child: None,
                wd,
                pid: None,
                ready: None,
            }
        }
    };
    let what = if row.repeat > 1 {
        format!("{} {} (run {})", interp.label, row.name, attempt + 1)
    } else {
        format!("{} {}", interp.label, row.name)
    };

    if let KillPySpy(trials) = row.action {
        let mut errors = kill_trials(&args, trials, &started);
        for check in row.checks {
            errors.extend(check_after(*check, row, &mut started, None));
        }
        report.check(&what, errors, None, &started.wd.script_output(row.script));
        return;
    }

    let mut py_spy = spawn_py_spy(&args);
    let mut errors = Vec::new();
    match row.action {
        Nothing | KillPySpy(_) => {}
        KillTarget(after) => {
            if py_spy.wait_for_stderr_line("py-spy: recording", READY_TIMEOUT) {
                thread::sleep(after);
                let pid = started.pid.expect("attach mode knows the pid");
                // SAFETY: plain syscall on the target this test started and has not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            } else {
                errors.push("py-spy never said `py-spy: recording`".into());
            }
        }
        SignalPySpy(signal, after) => {
            let ready = match row.mode {
                Attach => py_spy.wait_for_stderr_line("py-spy: recording", READY_TIMEOUT),
                Launch => wait_for_file(&started.wd.host("ready.json"), &mut py_spy),
            };
            if ready {
                thread::sleep(after);
                py_spy.signal(signal);
            } else {
                errors.push("the recording never started".into());
            }
        }
    }
    // Launch mode: the pid is in the ready file, if the program wrote one.
    started.ready();
    let (run, elapsed) = match finish(py_spy, started.pid) {
        Ok(done) => done,
        Err(stuck) => {
            errors.push(stuck);
            report.check(&what, errors, None, &started.wd.script_output(row.script));
            return;
        }
    };
    errors.extend(panics(&run));
    let summary = Summary::find(&run.stderr);
    let folded = Folded::read(&out);
    let mut extra = String::new();
    if let Ok(folded) = &folded {
        extra = folded.top(8);
    }
    let result = RunResult {
        run: &run,
        elapsed,
        summary: summary.as_ref().ok(),
        folded: folded.as_ref().ok(),
        summary_error: summary.as_ref().err().cloned(),
        folded_error: folded.as_ref().err().cloned(),
    };
    for check in row.checks {
        errors.extend(check_run(*check, row, &mut started, &result));
    }
    extra.push_str(&started.wd.script_output(row.script));
    report.check(&what, errors, Some(&run), &extra);
}

/// What one py-spy run left.
struct RunResult<'a> {
    run: &'a Run,
    elapsed: Duration,
    summary: Option<&'a Summary>,
    folded: Option<&'a Folded>,
    summary_error: Option<String>,
    folded_error: Option<String>,
}

/// Waits for py-spy; if it hangs, kills it and says where it and the target were stuck.
fn finish(mut py_spy: RunningPySpy, target: Option<u32>) -> Result<(Run, Duration), String> {
    if py_spy.exits_within(RUN_TIMEOUT) {
        return Ok(py_spy.wait(Duration::from_secs(5)));
    }
    let pid = py_spy.pid();
    let stuck = format!(
        "py-spy did not finish within {RUN_TIMEOUT:?} (killed); its kernel stack: {:?}; the \
         target's threads: {}\n--- py-spy's stderr so far ---\n{}",
        fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default(),
        target.map(describe_tasks).unwrap_or_default(),
        py_spy.stderr_so_far()
    );
    py_spy.signal(libc::SIGKILL);
    let _ = py_spy.wait(Duration::from_secs(10));
    Err(stuck)
}

/// Waits for a file the launched program writes, as long as py-spy runs.
fn wait_for_file(path: &Path, py_spy: &mut RunningPySpy) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        if !py_spy.running() {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

fn panics(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE"))
        .map(|l| format!("panic on stderr: {l}"))
        .collect()
}

/// The value after `flag` in the row's py-spy arguments.
fn flag_value(row: &Row, flag: &str) -> Option<f64> {
    let at = row.py_spy.iter().position(|a| *a == flag)?;
    row.py_spy.get(at + 1)?.parse().ok()
}

/// `function (short file:line)` at the line marked `# MARKER function` of the row's
/// script (`HOT` or `CALL`).
fn label_at(row: &Row, wd: &Workdir, function: &str, marker: &str) -> String {
    format!(
        "{function} ({}:{})",
        short_filename(&wd.script(row.script)),
        marker_line(row.script, &format!("{marker} {function}"))
    )
}

/// The line of `def function(` in a script.
fn def_line(script: &str, function: &str) -> u32 {
    let path = common::scripts_dir().join(script);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let def = format!("def {function}(");
    let at = text
        .lines()
        .position(|l| l.starts_with(&def))
        .unwrap_or_else(|| panic!("no {def:?} in {script}"));
    at as u32 + 1
}

fn check_run(check: Check, row: &Row, started: &mut Started, r: &RunResult) -> Vec<String> {
    let mut errors = Vec::new();
    let asked_rate = flag_value(row, "-r").unwrap_or(100.0);
    match check {
        Exit(code) => {
            if r.run.status.code() != Some(code) {
                errors.push(format!("exit status {} (expected {code})", r.run.status));
            }
        }
        Output => {
            errors.extend(r.summary_error.clone());
            errors.extend(r.folded_error.clone());
            if let (Some(summary), Some(folded)) = (r.summary, r.folded) {
                if folded.total != summary.samples {
                    errors.push(format!(
                        "the folded counts add up to {}, the summary line says {} samples",
                        folded.total, summary.samples
                    ));
                }
            }
        }
        Hot(function) => {
            if let Some(folded) = r.folded {
                let hot = marker_line(row.script, &format!("HOT {function}"));
                let short = short_filename(&started.wd.script(row.script));
                let allowed: Vec<String> = (def_line(row.script, function) + 1..=hot)
                    .map(|line| format!("{function} ({short}:{line})"))
                    .collect();
                let want = label_at(row, &started.wd, function, "HOT");
                let got = folded.labels_of(function);
                let all: u64 = got.values().sum();
                let at_hot = got.get(&want).copied().unwrap_or(0);
                if at_hot == 0
                    || (at_hot as f64) < 0.9 * all as f64
                    || got.keys().any(|l| !allowed.contains(l))
                {
                    errors.push(format!(
                        "{function} labels {got:?}: expected {want:?} with at least 90% of \
                         them, the rest among {allowed:?}"
                    ));
                }
            }
        }
        Leaf(function, share) => {
            if let Some(folded) = r.folded {
                let leaves = folded.count_where(|frames| {
                    frames
                        .last()
                        .is_some_and(|l| Label::parse(l).name == function)
                });
                if leaves == 0 || (leaves as f64) < share * folded.total as f64 {
                    errors.push(format!(
                        "{function} is the leaf of {leaves} of {} samples (expected at least \
                         {:.0}%)",
                        folded.total,
                        share * 100.0
                    ));
                }
            }
        }
        AtMost(function, most) => {
            if let Some(folded) = r.folded {
                let samples = folded
                    .count_where(|frames| frames.iter().any(|f| Label::parse(f).name == function));
                if samples > most {
                    errors.push(format!(
                        "{function} is in {samples} of {} samples (expected at most {most})",
                        folded.total
                    ));
                }
            }
        }
        CalledFrom(function, caller) => {
            if let Some(folded) = r.folded {
                let want = format!(
                    "{caller} ({}:{})",
                    short_filename(&started.wd.script(row.script)),
                    marker_line(row.script, &format!("CALL {function}"))
                );
                let bad: Vec<String> = folded
                    .iter()
                    .filter_map(|(frames, _)| {
                        let at = frames
                            .iter()
                            .position(|f| Label::parse(f).name == function)?;
                        (at == 0 || frames[at - 1] != want).then(|| frames.join(";"))
                    })
                    .collect();
                if !bad.is_empty() {
                    errors.push(format!("{function} not called from {want:?} in {bad:?}"));
                }
            }
        }
        Note(prefix) => {
            let prefix = prefix.replace("{pid}", &started.pid.unwrap_or(0).to_string());
            if !r.run.stderr.lines().any(|l| l.starts_with(&prefix)) {
                errors.push(format!("no line on stderr starts with {prefix:?}"));
            }
        }
        NoNote(text) => {
            if let Some(line) = r.run.stderr.lines().find(|l| l.contains(text)) {
                errors.push(format!("unexpected line on stderr: {line:?}"));
            }
        }
        NoErrors => {
            if let Some(summary) = r.summary {
                if summary.errors != 0 {
                    errors.push(format!("{} errors in the summary line", summary.errors));
                }
            }
        }
        ReportErrors => {
            if let Some(summary) = r.summary {
                println!(
                    "{}: {} errors counted: {}",
                    row.name, summary.errors, summary.line
                );
            }
        }
        Passes(share) => {
            if let Some(summary) = r.summary {
                let seconds = flag_value(row, "-d").expect("a row with Passes has -d");
                let want = share * asked_rate * seconds;
                let passes = summary.passes.unwrap_or(0);
                if (passes as f64) < want || (summary.samples as f64) < want {
                    errors.push(format!(
                        "{passes} passes and {} samples; expected at least {want:.0} of each \
                         ({:.0}% of {asked_rate}/s for {seconds} s)",
                        summary.samples,
                        share * 100.0
                    ));
                }
                println!(
                    "{}: {passes} passes, {} samples of {:.0} asked in {:?}",
                    row.name,
                    summary.samples,
                    asked_rate * seconds,
                    r.elapsed
                );
            }
        }
        Rate(share) => {
            if let Some(summary) = r.summary {
                let achieved = summary.achieved.unwrap_or(0.0);
                println!(
                    "{}: achieved {achieved}/s of {asked_rate}/s ({} passes)",
                    row.name,
                    summary.passes.unwrap_or(0)
                );
                if achieved < share * asked_rate {
                    errors.push(format!(
                        "achieved {achieved}/s, below {:.0}% of the {asked_rate}/s asked",
                        share * 100.0
                    ));
                }
            }
        }
        EveryThreadEveryPass => {
            if let (Some(summary), Some(folded), Some(ready)) =
                (r.summary, r.folded, started.ready())
            {
                every_thread_every_pass(summary, folded, ready, &mut errors);
            }
        }
        Truncated => {
            if let (Some(summary), Some(folded)) = (r.summary, r.folded) {
                truncated_stacks(row, started, summary, folded, &mut errors);
            }
        }
        DumpTruncated => dump_truncated(row, started, &mut errors),
        _ => errors.extend(check_after(check, row, started, Some(r.run))),
    }
    errors
}

/// The checks about the target once py-spy is gone.
fn check_after(check: Check, row: &Row, started: &mut Started, run: Option<&Run>) -> Vec<String> {
    let mut errors = Vec::new();
    let pid = started
        .ready()
        .and_then(|r| r["pid"].as_u64())
        .map(|p| p as u32);
    let Some(pid) = pid else {
        return vec!["the target's pid is unknown (no ready file)".into()];
    };
    match check {
        TargetRuns => {
            if common::process_state(pid).is_none() {
                errors.push(format!("the target {pid} is gone"));
            } else if let Err(e) = settled(pid) {
                errors.push(e);
            }
        }
        TargetGone => {
            if Path::new(&format!("/proc/{pid}")).exists() {
                errors.push(format!(
                    "the program {pid} still exists after py-spy exited: {}",
                    describe_tasks(pid)
                ));
                // SAFETY: plain syscall; the process is the one this test launched.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        TargetIs(program) => {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != program {
                errors.push(format!(
                    "the target {pid} runs {:?}, expected {program:?} (py-spy should stop as \
                     soon as the program is not Python any more)",
                    comm.trim()
                ));
            } else if let Err(e) = settled(pid) {
                errors.push(e);
            }
        }
        Signals => match started.wd.read_json("result.json") {
            Ok(result) => {
                let value = |key: &str| result[key].as_f64().unwrap_or(f64::NAN);
                let (lost, max_wait, stopped) =
                    (value("lost"), value("max_wait"), value("stopped"));
                println!(
                    "{}: {} SIGUSR1s handled of {}, {lost} lost, each within {:.1} ms; \
                     stopped {stopped:.3} s",
                    row.name,
                    result["handled"],
                    result["signals"],
                    max_wait * 1e3
                );
                if lost != 0.0 || result["handled"] != result["signals"] {
                    errors.push(format!("signals were lost: {result}"));
                }
                if max_wait.is_nan() || max_wait > 0.5 {
                    errors.push(format!("a signal was held up: {result}"));
                }
                if !(0.25..=3.0).contains(&stopped) {
                    errors.push(format!("SIGSTOP/SIGCONT went wrong: {result}"));
                }
            }
            Err(e) => errors.push(e),
        },
        Churn(min) => {
            let (status, output) = stop_target(row.script, started);
            if status != Some(0) {
                errors.push(format!("the churn target ended with {status:?}\n{output}"));
            }
            match started.wd.read_json("result.json") {
                Ok(result) => {
                    let rate = result["per_second"].as_f64().unwrap_or(0.0);
                    println!(
                        "{}: the target started {} threads in {:.1} s: {rate:.0} per second",
                        row.name,
                        result["started"],
                        result["seconds"].as_f64().unwrap_or(0.0)
                    );
                    if rate < min {
                        errors.push(format!(
                            "the target started only {rate:.0} threads per second (expected at \
                             least {min:.0}): {result}"
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Finishes => {
            let (status, output) = stop_target(row.script, started);
            let done = output
                .lines()
                .find(|l| l.starts_with("DONE workers="))
                .map(str::to_owned);
            if status != Some(0) || done.is_none() {
                errors.push(format!(
                    "the target did not finish its work: status {status:?}\n{output}"
                ));
            } else {
                println!(
                    "{}: the target finished: {}",
                    row.name,
                    done.unwrap_or_default()
                );
            }
        }
        other => errors.push(format!("test bug: {other:?} needs a py-spy run ({run:?})")),
    }
    errors
}

/// Creates the target's stop file and waits (30 s at most) for it to exit; its status
/// and what it wrote.
fn stop_target(script: &str, started: &mut Started) -> (Option<i32>, String) {
    if let Err(e) = fs::write(started.wd.host("stop"), b"") {
        return (None, format!("cannot write the stop file: {e}"));
    }
    let Some(child) = started.child.as_mut() else {
        return (None, "no target process".into());
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    (status, started.wd.script_output(script))
}

/// `Ok` once no thread of `pid` is stopped or traced (waiting up to [`SETTLE`]); else
/// what the threads look like.
fn settled(pid: u32) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let bad = unsettled_tasks(pid);
        if bad.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > SETTLE {
            return Err(format!(
                "threads of the target {pid} left stopped or traced {SETTLE:?} after py-spy \
                 ended: {}",
                bad.join(", ")
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The threads of `pid` that are stopped (`t`, `T`) or have a tracer, described.
fn unsettled_tasks(pid: u32) -> Vec<String> {
    tasks(pid)
        .into_iter()
        .filter(|t| matches!(t.state, 't' | 'T') || t.tracer != 0)
        .map(|t| t.describe())
        .collect()
}

fn describe_tasks(pid: u32) -> String {
    let all: Vec<String> = tasks(pid).iter().map(Task::describe).collect();
    if all.is_empty() {
        "none (gone)".into()
    } else {
        all.join(", ")
    }
}

/// One thread of a process, from `/proc/PID/task/TID`.
struct Task {
    tid: u32,
    state: char,
    tracer: u32,
    wchan: String,
}

impl Task {
    fn describe(&self) -> String {
        format!(
            "{} state {} tracer {} wchan {}",
            self.tid, self.state, self.tracer, self.wchan
        )
    }
}

fn tasks(pid: u32) -> Vec<Task> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let Some(state) = fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')')?.1.trim_start().chars().next())
        else {
            continue;
        };
        let tracer = fs::read_to_string(path.join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        let wchan = fs::read_to_string(path.join("wchan")).unwrap_or_default();
        out.push(Task {
            tid,
            state,
            tracer,
            wchan,
        });
    }
    out.sort_by_key(|t| t.tid);
    out
}

// ------------------------------------------------------------- particular checks --

/// Every thread of the ready file's `native_ids` under its own `thread <tid> "<name>"`
/// root in every pass: its samples add up to the passes, and no other thread appears.
fn every_thread_every_pass(
    summary: &Summary,
    folded: &Folded,
    ready: &Value,
    errors: &mut Vec<String>,
) {
    let want: BTreeSet<u64> = ready["native_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let passes = summary.passes.unwrap_or(0);
    let mut per_thread: BTreeMap<u64, u64> = BTreeMap::new();
    for (frames, count) in folded.iter() {
        match profiles::parse_thread_root(frames[0]) {
            Some((tid, _)) => *per_thread.entry(tid).or_insert(0) += count,
            None => {
                errors.push(format!(
                    "a stack without a thread root: {:?}",
                    frames.join(";")
                ));
                return;
            }
        }
    }
    let seen: BTreeSet<u64> = per_thread.keys().copied().collect();
    println!(
        "{} threads expected, {} seen, {passes} passes, {} samples",
        want.len(),
        seen.len(),
        summary.samples
    );
    if want.len() != 1001 {
        errors.push(format!(
            "test bug: the target reports {} threads, not 1001",
            want.len()
        ));
    }
    let missing: Vec<&u64> = want.difference(&seen).take(10).collect();
    let unknown: Vec<&u64> = seen.difference(&want).take(10).collect();
    if !missing.is_empty() || !unknown.is_empty() {
        errors.push(format!(
            "threads missing from the profile (first 10): {missing:?}; threads not of the \
             target: {unknown:?} ({} of {} seen)",
            seen.len(),
            want.len()
        ));
    }
    let short: Vec<String> = per_thread
        .iter()
        .filter(|(_, &count)| count != passes)
        .take(10)
        .map(|(tid, count)| format!("{tid}: {count}"))
        .collect();
    if passes == 0 || !short.is_empty() {
        errors.push(format!(
            "threads not in every one of the {passes} passes (first 10, tid: samples): {short:?}"
        ));
    }
}

/// Every stack: the truncation frame, then `MAX_FRAMES` frames, `recurse` at its call line
/// and `deep_spin` at its hot line last; the recursion itself is 10,000 deep.
fn truncated_stacks(
    row: &Row,
    started: &mut Started,
    summary: &Summary,
    folded: &Folded,
    errors: &mut Vec<String>,
) {
    let depth = started
        .ready()
        .and_then(|r| r["depth"].as_u64())
        .unwrap_or(0);
    if depth < 10_000 {
        errors.push(format!(
            "the target's deep thread has {depth} frames, not over 10,000"
        ));
    }
    let recurse = label_at(row, &started.wd, "recurse", "CALL");
    let leaf = label_at(row, &started.wd, "deep_spin", "HOT");
    let mut good = 0;
    for (frames, count) in folded.iter() {
        let python = &frames[1..];
        let ok = frames[0] == TRUNCATED_FRAME
            && python.len() == MAX_FRAMES
            && python[..MAX_FRAMES - 1].iter().all(|f| *f == recurse)
            && python[MAX_FRAMES - 1] == leaf;
        if ok {
            good += count;
        } else {
            let shown: Vec<&str> = frames.iter().take(3).copied().collect();
            errors.push(format!(
                "a stack of {} frames ({count} samples) starting {shown:?}, ending {:?}: \
                 expected {TRUNCATED_FRAME:?} then {} x {recurse:?} then {leaf:?}",
                frames.len(),
                frames.last(),
                MAX_FRAMES - 1
            ));
        }
    }
    if good == 0 || good != summary.samples {
        errors.push(format!(
            "{good} of {} samples have the truncated stack",
            summary.samples
        ));
    }
}

/// `py-spy dump`: the deep thread's block is `MAX_FRAMES` frame lines (the leaf first),
/// then `    ... (stack truncated)`.
fn dump_truncated(row: &Row, started: &mut Started, errors: &mut Vec<String>) {
    let Some(pid) = started.pid else {
        errors.push("no pid to dump".into());
        return;
    };
    let tid = started
        .ready()
        .and_then(|r| r["deep_native_id"].as_u64())
        .unwrap_or(0);
    let run = run_py_spy(&["dump", "--pid", &pid.to_string()], RUN_TIMEOUT);
    if !run.status.success() {
        errors.push(format!("py-spy dump failed:\n{}", run.describe()));
        return;
    }
    let header = format!("Thread {tid} ");
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with(&header))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    let recurse = format!("    {}", label_at(row, &started.wd, "recurse", "CALL"));
    let leaf = format!("    {}", label_at(row, &started.wd, "deep_spin", "HOT"));
    let ok = lines.len() == MAX_FRAMES + 1
        && lines[0] == leaf
        && lines[1..MAX_FRAMES].iter().all(|l| *l == recurse)
        && lines[MAX_FRAMES] == "    ... (stack truncated)";
    if !ok {
        errors.push(format!(
            "dump: the deep thread {tid} shows {} lines, first {:?}, last {:?}; expected \
             {leaf:?}, {} x {recurse:?}, then \"    ... (stack truncated)\"",
            lines.len(),
            lines.first(),
            lines.last(),
            MAX_FRAMES - 1
        ));
    }
}

// --------------------------------------------------------------- SIGKILL trials --

/// A small random number generator (xorshift64*), seeded from the clock or
/// `FAULTS_SEED`; the seed is printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            .max(1);
        println!("random seed {seed} (FAULTS_SEED={seed} repeats it)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max * 1000))
    }
}

/// When a trial's kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// 0-150 ms after py-spy starts: mostly while it finds the interpreter and attaches.
    Early,
    /// 0-150 ms after it said it is recording.
    Sampling,
    /// Once it records, at the first moment a thread of the target is seen stopped.
    WhileStopped,
}

/// SIGKILLs `trials` py-spys, each at a random moment, and checks after each that every
/// thread of the target runs untraced.
fn kill_trials(args: &[String], trials: u32, started: &Started) -> Vec<String> {
    let pid = started.pid.expect("attach mode");
    let mut rng = Rng::new();
    let mut errors = Vec::new();
    let mut while_stopped = 0;
    let mut left_stopped = 0;
    let mut by_moment: BTreeMap<&str, u32> = BTreeMap::new();
    let mut longest_settle = Duration::ZERO;
    let begin = Instant::now();
    let mut done = 0;
    for trial in 0..trials {
        let moment = match trial % 3 {
            0 => Moment::Early,
            1 => Moment::Sampling,
            _ => Moment::WhileStopped,
        };
        let mut py_spy = spawn_py_spy(args);
        match moment {
            Moment::Early => thread::sleep(rng.millis(150)),
            Moment::Sampling | Moment::WhileStopped => {
                if !py_spy.wait_for_stderr_line("py-spy: recording", READY_TIMEOUT) {
                    errors.push(format!(
                        "trial {trial}: py-spy never started recording:\n{}",
                        py_spy.stderr_so_far()
                    ));
                    break;
                }
                let max = if moment == Moment::Sampling { 150 } else { 50 };
                thread::sleep(rng.millis(max));
                if moment == Moment::WhileStopped {
                    let until = Instant::now() + Duration::from_millis(100);
                    while Instant::now() < until && !tasks(pid).iter().any(|t| t.state == 't') {
                        thread::yield_now();
                    }
                }
            }
        }
        // The state just before the kill: was the target held?
        let stopped = tasks(pid).iter().any(|t| t.state == 't');
        py_spy.signal(libc::SIGKILL);
        let (run, _) = py_spy.wait(Duration::from_secs(10));
        done += 1;
        if stopped {
            while_stopped += 1;
        }
        *by_moment.entry(moment_name(moment)).or_insert(0) += u32::from(stopped);
        use std::os::unix::process::ExitStatusExt;
        if run.status.signal() != Some(libc::SIGKILL) {
            errors.push(format!(
                "trial {trial}: py-spy ended before the kill ({})",
                run.describe()
            ));
        }
        match settled(pid) {
            Ok(took) => longest_settle = longest_settle.max(took),
            Err(e) => {
                left_stopped += 1;
                errors.push(format!(
                    "trial {trial} ({moment:?}, stopped before the kill: {stopped}): {e}"
                ));
                // Left stopped, the target cannot go on: the next trials would only repeat it.
                break;
            }
        }
        if common::process_state(pid).is_none() {
            errors.push(format!("trial {trial}: the target is gone"));
            break;
        }
    }
    println!(
        "SIGKILL trials: {done}, kills while the target was stopped: {while_stopped} \
         (by moment: {by_moment:?}), targets left stopped: {left_stopped}; longest wait for \
         the target to show resumed: {longest_settle:?}; {:.1} s",
        begin.elapsed().as_secs_f64()
    );
    if done < trials && errors.is_empty() {
        errors.push(format!("only {done} of {trials} trials ran"));
    }
    if while_stopped == 0 {
        errors.push("no kill landed while the target was stopped: the row tested nothing".into());
    }
    errors
}

fn moment_name(moment: Moment) -> &'static str {
    match moment {
        Moment::Early => "early",
        Moment::Sampling => "sampling",
        Moment::WhileStopped => "while stopped",
    }
}
