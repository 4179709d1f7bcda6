//! Integration tests for `py-spy record`.
//!
//! On every interpreter (the 14 of `tests/common`, one test each):
//!
//! 1. launch mode, `-f raw` at a high rate, on `tests/scripts/record_accuracy.py` (three
//!    functions spinning 5/3/2 ms in turn, measuring their own time): the folded counts add
//!    up to the samples of the summary line; each function's share of the samples is
//!    within 2 percentage points of the share of CPU time the script measured inside it
//!    with `time.process_time` (the wall-time shares are printed alongside); every
//!    sample in a burn function has the exact stack `<module>` -> `main` -> `burn_x` with
//!    the right short file name and lines (found through marker comments in the script);
//! 2. attach mode (`--pid`, `-d`) on `tests/scripts/record_idle.py` (a thread "busy"
//!    spinning in `spin`, MainThread sleeping in `sleeper`): `spin` at its line under
//!    `busy_entry`, and no `sleeper` (idle threads are dropped by default).
//!
//! On 3.9, 3.12 and the 3.15 chroot, every option (six tests each): the output formats
//! parsed back (speedscope validated against speedscope's schema, Chrome trace balanced,
//! SVG well-formed and naming the hot function; on 3.12 the SVG is also loaded in headless
//! Chromium, its search run, no script errors), `--idle`, `--gil`, `--threads`,
//! `--function`, `--nolineno`, `--full-filenames`, `--nonblocking`, `--subprocesses` with
//! multiprocessing workers, `-d` timing, `python -m` in launch mode, `-o` in a missing
//! directory. Plus: bad option values, and `--gil` on the free-threaded 3.13t.
//!
//! Faults — the target exiting, killed or exec'ing mid-record, signals to py-spy (exit
//! codes in launch mode among them), thread churn, 1,000 threads, deep recursion — are
//! the rows of tests/faults.rs.
//!
//! Failures of a test are collected and reported together with the py-spy runs they come
//! from (command, exit status, stdout, stderr) and a summary of the profile.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::profiles::{self, Folded, Label, Summary};
use common::{run_py_spy, short_filename, spawn_py_spy, ChildGuard, Interpreter, Run, Workdir};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Sampling rate and wall seconds of the accuracy run. The workload cycles every ~10 ms,
/// so at 200/s (two samples a cycle) the shares scatter by about ±1.5 points from run to
/// run; at 1000/s (about 3000 samples, even when the debug build falls behind) by ±0.6.
const ACCURACY_RATE: &str = "1000";
const ACCURACY_SECONDS: &str = "3";
/// Allowed difference between a recorded share and the measured one.
const TOLERANCE: f64 = 0.02;
/// `-d` of the attach runs.
const ATTACH_SECONDS: &str = "1";

// ------------------------------------------------------------------- reporting --

/// The failures of one test, reported together at the end.
struct Report {
    label: String,
    failures: Vec<String>,
    outputs: Vec<String>,
}

impl Report {
    fn new(label: &str) -> Report {
        Report {
            label: label.to_string(),
            failures: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Records the errors of one check; `run` and `extra` are shown when there are any.
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

/// Errors every run can have: a panic, and (when `expect_success`) a failed exit.
fn run_errors(run: &Run, expect_success: bool) -> Vec<String> {
    let mut errors = Vec::new();
    if expect_success && !run.status.success() {
        errors.push(format!("exit status {} (expected 0)", run.status));
    }
    for line in run.stderr.lines() {
        if line.contains("panicked") || line.contains("RUST_BACKTRACE") {
            errors.push(format!("panic on stderr: {line}"));
        }
    }
    errors
}

/// The summary line and the folded file `out` of a finished run, checked against each
/// other: the counts add up to the summary's samples.
fn raw_profile(run: &Run, out: &Path, errors: &mut Vec<String>) -> Option<(Summary, Folded)> {
    let summary = match Summary::find(&run.stderr) {
        Ok(summary) => summary,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let folded = match Folded::read(out) {
        Ok(folded) => folded,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    if folded.total != summary.samples {
        errors.push(format!(
            "the folded counts add up to {}, the summary line says {} samples",
            folded.total, summary.samples
        ));
    }
    Some((summary, folded))
}

fn marker_line(script: &str, marker: &str) -> u32 {
    common::marker_line(script, marker)
}

fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `[first, last]` of a function in a script's `lines` JSON.
fn line_range(info: &Value, function: &str) -> Option<(u32, u32)> {
    let lines = info["lines"][function].as_array()?;
    Some((
        lines.first()?.as_u64()? as u32,
        lines.get(1)?.as_u64()? as u32,
    ))
}

// ------------------------------------------------------- per-interpreter tests --

macro_rules! interpreter_tests {
    ($($name:ident => $label:literal,)*) => {
        $(
            #[test]
            fn $name() {
                check_interpreter($label);
            }
        )*
    };
}

interpreter_tests! {
    record_py27 => "py27",
    record_py36 => "py36",
    record_py37 => "py37",
    record_py38 => "py38",
    record_py39 => "py39",
    record_py310 => "py310",
    record_py311 => "py311",
    record_py312 => "py312",
    record_py313 => "py313",
    record_py311_debian => "py311-debian",
    record_py312_chroot => "py312-chroot",
    record_py314_chroot => "py314-chroot",
    record_py315_chroot => "py315-chroot",
    record_py313t => "py313t",
}

fn check_interpreter(label: &str) {
    let interp = common::interpreter(label);
    if !interp.available() {
        return;
    }
    let mut report = Report::new(label);
    check_accuracy(&interp, &mut report);
    check_attach(&interp, &mut report);
    report.finish();
}

const BURNS: [(&str, &str); 3] = [("burn_a", "a"), ("burn_b", "b"), ("burn_c", "c")];

fn check_accuracy(interp: &Interpreter, report: &mut Report) {
    let script = "record_accuracy.py";
    let wd = Workdir::new(interp);
    let out = wd.host("accuracy.txt");
    let truth_seen = wd.seen("accuracy.json");
    let out_arg = arg(&out);
    let mut args: Vec<String> = [
        "record",
        "-f",
        "raw",
        "-r",
        ACCURACY_RATE,
        "-o",
        &out_arg,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(wd.command(script, &[&truth_seen, ACCURACY_SECONDS]));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_py_spy(&args_ref, RUN_TIMEOUT);
    let what = format!("{} launch mode, accuracy", interp.label);
    let mut errors = run_errors(&run, true);
    let profile = raw_profile(&run, &out, &mut errors);
    let truth = match wd.read_json("accuracy.json") {
        Ok(truth) => Some(truth),
        Err(e) => {
            errors.push(format!("the script wrote no result: {e}"));
            None
        }
    };
    let mut extra = String::new();
    if let (Some((_, folded)), Some(truth)) = (&profile, &truth) {
        compare_shares(folded, truth, &mut errors);
        check_burn_stacks(&wd, folded, truth, &mut errors);
        let _ = write!(
            extra,
            "--- truth ---\n{}\n--- profile ---\n{}",
            serde_json::to_string_pretty(truth).unwrap_or_default(),
            folded.top(25)
        );
    }
    report.check(&what, errors, Some(&run), &extra);
}

fn compare_shares(folded: &Folded, truth: &Value, errors: &mut Vec<String>) {
    let counts: Vec<u64> = BURNS
        .iter()
        .map(|(function, _)| folded.count_function(function))
        .collect();
    let recorded_total: u64 = counts.iter().sum();
    if recorded_total < 200 {
        errors.push(format!(
            "only {recorded_total} samples in the burn functions (expected hundreds)"
        ));
        return;
    }
    let seconds = |kind: &str, key: &str| truth[kind][key].as_f64().unwrap_or(0.0);
    let wall_total: f64 = BURNS.iter().map(|(_, k)| seconds("wall", k)).sum();
    let cpu_total: f64 = BURNS.iter().map(|(_, k)| seconds("cpu", k)).sum();
    if wall_total <= 0.0 || cpu_total <= 0.0 {
        errors.push("the truth has no time in the burn functions".into());
        return;
    }
    let mut shares = String::new();
    for ((function, key), count) in BURNS.iter().zip(&counts) {
        let got = *count as f64 / recorded_total as f64;
        let _ = write!(
            shares,
            " {function} {:.1}% (wall {:.1}%, cpu {:.1}%)",
            got * 100.0,
            seconds("wall", key) / wall_total * 100.0,
            seconds("cpu", key) / cpu_total * 100.0
        );
        // The truth is the CPU time each function burnt (time.process_time, as the issue
        // defines it). The wall-time share is shown for comparison: on a loaded machine
        // it is disturbed by preemption inside the workload's own timing, while the
        // samples keep following the CPU shares.
        let want = seconds("cpu", key) / cpu_total;
        let wall = seconds("wall", key) / wall_total;
        if (got - want).abs() > TOLERANCE {
            errors.push(format!(
                "{function}: {:.1}% of the samples ({count} of {recorded_total}), measured {:.1}% of the CPU time ({:.1}% of the wall time); tolerance ±{:.0} points",
                got * 100.0,
                want * 100.0,
                wall * 100.0,
                TOLERANCE * 100.0
            ));
        }
    }
    println!("shares of {recorded_total} samples:{shares}");
}

/// Every sample in a burn function: stack `<module>` (CALL main) -> `main` (CALL burn)
/// -> `burn_x` (leaf) at a line of that function, mostly the HOT line.
fn check_burn_stacks(wd: &Workdir, folded: &Folded, truth: &Value, errors: &mut Vec<String>) {
    let script = "record_accuracy.py";
    let short = short_filename(&wd.script(script));
    if truth["filename"].as_str() != Some(wd.script(script).as_str()) {
        errors.push(format!(
            "test bug? co_filename {} is not {:?}",
            truth["filename"],
            wd.script(script)
        ));
    }
    let expected_parents = [
        format!("<module> ({short}:{})", marker_line(script, "CALL main")),
        format!("main ({short}:{})", marker_line(script, "CALL burn")),
    ];
    let mut stack_errors = Vec::new();
    for (frames, count) in folded.iter() {
        let Some(pos) = frames
            .iter()
            .position(|f| BURNS.iter().any(|(name, _)| Label::parse(f).name == *name))
        else {
            continue;
        };
        let label = Label::parse(frames[pos]);
        let mut problems = Vec::new();
        if pos + 1 != frames.len() {
            problems.push("the burn function is not the leaf".to_string());
        }
        if frames[..pos]
            != expected_parents
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()[..]
        {
            problems.push(format!("callers should be {expected_parents:?}"));
        }
        if label.file.as_deref() != Some(short.as_str()) {
            problems.push(format!("file should be {short:?}"));
        }
        match (label.line, line_range(truth, &label.name)) {
            (Some(line), Some((first, last))) if (first..=last).contains(&line) => {}
            (line, range) => problems.push(format!(
                "line {line:?} is not inside {}'s lines {range:?}",
                label.name
            )),
        }
        if !problems.is_empty() {
            stack_errors.push(format!(
                "stack {:?} ({count} samples): {}",
                frames.join(";"),
                problems.join("; ")
            ));
        }
    }
    if !stack_errors.is_empty() {
        let shown = stack_errors.len().min(8);
        errors.push(format!(
            "{} bad burn stack(s), first {shown}:\n      {}",
            stack_errors.len(),
            stack_errors[..shown].join("\n      ")
        ));
    }
    for (function, _) in BURNS {
        let hot = format!(
            "{function} ({short}:{})",
            marker_line(script, &format!("HOT {function}"))
        );
        let labels = folded.labels_of(function);
        let all: u64 = labels.values().sum();
        let at_hot = labels.get(&hot).copied().unwrap_or(0);
        if all > 0 && at_hot * 2 < all {
            errors.push(format!(
                "only {at_hot} of {all} samples of {function} at its spinning line ({hot:?}): {labels:?}"
            ));
        }
    }
}

/// A running `record_idle.py`: thread "busy" in `spin`, MainThread in `sleeper`.
struct IdleTarget {
    // Declared first: the process is killed before its directory is removed.
    _child: ChildGuard,
    wd: Workdir,
    ready: Value,
    pid: u32,
    short: String,
    spin_label: String,
    sleeper_label: String,
}

impl IdleTarget {
    const SCRIPT: &'static str = "record_idle.py";

    fn start(interp: &Interpreter) -> IdleTarget {
        let wd = Workdir::new(interp);
        let mut child = wd.spawn(Self::SCRIPT, &[&wd.seen("ready.json")]);
        let ready = wd.wait_json("ready.json", &mut child, Self::SCRIPT, READY_TIMEOUT);
        let pid = child.pid();
        assert_eq!(
            ready["pid"].as_u64(),
            Some(u64::from(pid)),
            "{}: the spawned pid is not the Python pid",
            interp.label
        );
        let short = short_filename(&wd.script(Self::SCRIPT));
        let spin_label = format!("spin ({short}:{})", marker_line(Self::SCRIPT, "HOT spin"));
        let sleeper_label = format!(
            "sleeper ({short}:{})",
            marker_line(Self::SCRIPT, "HOT sleeper")
        );
        IdleTarget {
            _child: child,
            wd,
            ready,
            pid,
            short,
            spin_label,
            sleeper_label,
        }
    }

    fn busy_tid(&self) -> u64 {
        self.ready["busy_native_id"]
            .as_u64()
            .expect("busy_native_id")
    }

    fn main_tid(&self) -> u64 {
        self.ready["main_native_id"]
            .as_u64()
            .expect("main_native_id")
    }

    fn busy_entry_label(&self) -> String {
        format!(
            "busy_entry ({}:{})",
            self.short,
            marker_line(Self::SCRIPT, "CALL spin")
        )
    }

    /// `py-spy record --pid PID -d ATTACH_SECONDS -o <out_name> EXTRA...`.
    fn record(&self, out_name: &str, extra: &[&str]) -> (Run, PathBuf) {
        let out = self.wd.host(out_name);
        let pid = self.pid.to_string();
        let out_arg = arg(&out);
        let mut args = vec![
            "record",
            "--pid",
            &pid,
            "-d",
            ATTACH_SECONDS,
            "-o",
            &out_arg,
        ];
        args.extend_from_slice(extra);
        (run_py_spy(&args, RUN_TIMEOUT), out)
    }

    /// A `-f raw` recording with `extra` options, checked for exit status and summary.
    fn record_raw(&self, out_name: &str, extra: &[&str]) -> (Run, Option<Folded>, Vec<String>) {
        let mut all = vec!["-f", "raw"];
        all.extend_from_slice(extra);
        let (run, out) = self.record(out_name, &all);
        let mut errors = run_errors(&run, true);
        let folded = raw_profile(&run, &out, &mut errors).map(|(_, f)| f);
        (run, folded, errors)
    }

    fn check_not_stopped(&self, errors: &mut Vec<String>) {
        for _ in 0..10 {
            match common::process_state(self.pid) {
                None => {
                    errors.push(format!("the target {} is gone", self.pid));
                    return;
                }
                Some(state @ ('t' | 'T')) => {
                    errors.push(format!(
                        "the target {} is left stopped (state {state})",
                        self.pid
                    ));
                    return;
                }
                Some(_) => {}
            }
            thread::sleep(Duration::from_millis(30));
        }
    }
}

fn check_attach(interp: &Interpreter, report: &mut Report) {
    let target = IdleTarget::start(interp);
    let (run, folded, mut errors) = target.record_raw("attach.txt", &[]);
    let mut extra = String::new();
    if let Some(folded) = &folded {
        check_spin(&target, folded, &mut errors);
        if folded.count_function("sleeper") > 0 {
            errors.push(format!(
                "the idle MainThread (sleeper) was recorded without --idle: {:?}",
                folded.labels_of("sleeper")
            ));
        }
        extra = folded.top(10);
    }
    report.check(
        &format!("{} attach mode", interp.label),
        errors,
        Some(&run),
        &extra,
    );
}

/// `spin` is the bulk of the samples, always at its HOT line, always called from
/// `busy_entry`.
fn check_spin(target: &IdleTarget, folded: &Folded, errors: &mut Vec<String>) {
    let spin = folded.count_function("spin");
    if spin == 0 || spin * 10 < folded.total * 9 {
        errors.push(format!(
            "spin has {spin} of {} samples (expected at least 90%)",
            folded.total
        ));
    }
    let labels = folded.labels_of("spin");
    if labels.keys().any(|l| *l != target.spin_label) {
        errors.push(format!(
            "spin labels {labels:?}, expected only {:?}",
            target.spin_label
        ));
    }
    let caller = target.busy_entry_label();
    let bad: Vec<String> = folded
        .iter()
        .filter(|(frames, _)| {
            frames
                .last()
                .is_some_and(|l| Label::parse(l).name == "spin")
        })
        .filter(|(frames, _)| frames.len() < 2 || frames[frames.len() - 2] != caller)
        .map(|(frames, _)| frames.join(";"))
        .collect();
    if !bad.is_empty() {
        errors.push(format!("spin not called from {caller:?} in {bad:?}"));
    }
}

// ------------------------------------------------------------- option tests --

macro_rules! option_tests {
    ($($module:ident => $label:literal,)*) => {
        $(
            mod $module {
                #[test]
                fn formats() {
                    super::option_test($label, super::check_formats);
                }
                #[test]
                fn idle_gil_threads() {
                    super::option_test($label, super::check_idle_gil_threads);
                }
                #[test]
                fn labels() {
                    super::option_test($label, super::check_labels);
                }
                #[test]
                fn subprocesses() {
                    super::option_test($label, super::check_subprocesses);
                }
                #[test]
                fn duration() {
                    super::option_test($label, super::check_duration);
                }
                #[test]
                fn module_and_output() {
                    super::option_test($label, super::check_module_and_output);
                }
            }
        )*
    };
}

option_tests! {
    options_py39 => "py39",
    options_py312 => "py312",
    options_py315_chroot => "py315-chroot",
}

fn option_test(label: &str, check: fn(&Interpreter, &mut Report)) {
    let interp = common::interpreter(label);
    if !interp.available() {
        return;
    }
    let mut report = Report::new(label);
    check(&interp, &mut report);
    report.finish();
}

fn check_formats(interp: &Interpreter, report: &mut Report) {
    let target = IdleTarget::start(interp);
    let label = interp.label;

    // speedscope
    let (run, out) = target.record("profile.speedscope.json", &["-f", "speedscope"]);
    let mut errors = run_errors(&run, true);
    let summary = Summary::find(&run.stderr).map_err(|e| errors.push(e)).ok();
    if run.status.success()
        && tool_present(
            "speedscope's schema",
            profiles::speedscope_schema().exists(),
        )
    {
        match profiles::check_speedscope(&out) {
            Ok(doc) => {
                let frames = profiles::speedscope_frames(&doc);
                let hot_line = u64::from(marker_line(IdleTarget::SCRIPT, "HOT spin"));
                let found = frames.iter().any(|(name, file, line)| {
                    (name == "spin" || *name == target.spin_label)
                        && file.as_deref().is_none_or(|f| f == target.short)
                        && line.is_none_or(|l| l == hot_line)
                });
                if !found {
                    errors.push(format!(
                        "no frame `spin` ({}, line {hot_line}) among the speedscope frames {frames:?}",
                        target.short
                    ));
                }
                let (count, _) = profiles::speedscope_samples(&doc);
                if let Some(summary) = &summary {
                    if count as u64 != summary.samples {
                        errors.push(format!(
                            "speedscope has {count} samples, the summary line says {}",
                            summary.samples
                        ));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    report.check(&format!("{label} -f speedscope"), errors, Some(&run), "");

    // Chrome trace
    let (run, out) = target.record("profile.trace.json", &["-f", "chrometrace"]);
    let mut errors = run_errors(&run, true);
    if let Err(e) = Summary::find(&run.stderr) {
        errors.push(e);
    }
    if run.status.success() {
        match profiles::check_chrome_trace(&out) {
            Ok(trace) => {
                if !trace.opened.contains_key(&target.spin_label)
                    && !trace.opened.contains_key("spin")
                {
                    errors.push(format!(
                        "no B event named {:?}; names: {:?}",
                        target.spin_label,
                        trace.opened.keys().take(20).collect::<Vec<_>>()
                    ));
                }
                let key = (i64::from(target.pid as i32), target.busy_tid() as i64);
                if !trace.tracks.contains(&key) {
                    errors.push(format!(
                        "no track (pid, tid) {key:?} for the busy thread; tracks {:?}",
                        trace.tracks
                    ));
                }
            }
            Err(e) => errors.push(format!("{}: {e}", out.display())),
        }
    }
    report.check(&format!("{label} -f chrometrace"), errors, Some(&run), "");

    // The default format: a flame graph.
    let (run, out) = target.record("profile.svg", &[]);
    let mut errors = run_errors(&run, true);
    if let Err(e) = Summary::find(&run.stderr) {
        errors.push(e);
    }
    if run.status.success() {
        match profiles::check_svg(&out, &target.spin_label) {
            Ok(0) => errors.push(format!(
                "the flame graph has no text with {:?}",
                target.spin_label
            )),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        if label == "py312" && tool_present("chromium", profiles::chromium().is_some()) {
            match profiles::browse_svg(&out, "spin", Duration::from_secs(60)) {
                Ok(browser) => {
                    println!(
                        "Chromium: matched {:?}, {} frame(s) highlighted, {} console error(s)",
                        browser.matched,
                        browser.highlighted,
                        browser.errors.len()
                    );
                    if !browser
                        .matched
                        .as_deref()
                        .is_some_and(|m| m.starts_with("Matched: "))
                    {
                        errors.push(format!(
                            "Chromium: the search for `spin` matched nothing (matched text {:?})",
                            browser.matched
                        ));
                    }
                    if browser.highlighted == 0 {
                        errors.push("Chromium: the search highlighted no frame".into());
                    }
                    if !browser.errors.is_empty() {
                        errors.push(format!("Chromium console errors: {:?}", browser.errors));
                    }
                }
                Err(e) => errors.push(format!("Chromium: {e}")),
            }
        }
    }
    report.check(
        &format!("{label} default format (flame graph)"),
        errors,
        Some(&run),
        "",
    );
}

/// Whether a checker's tool is installed; outside CI a missing one is a SKIP line.
fn tool_present(what: &str, present: bool) -> bool {
    if !present {
        let message = format!("SKIP: {what} is not installed (run tests/provision)");
        assert!(
            !common::in_ci(),
            "{message} (CI=true: missing tools are failures)"
        );
        println!("{message}");
    }
    present
}

fn check_idle_gil_threads(interp: &Interpreter, report: &mut Report) {
    let target = IdleTarget::start(interp);
    let label = interp.label;

    let (run, folded, mut errors) = target.record_raw("idle.txt", &["--idle"]);
    if let Some(folded) = &folded {
        let sleeper = folded.labels_of("sleeper");
        if sleeper.keys().ne([&target.sleeper_label]) {
            errors.push(format!(
                "--idle: sleeper labels {sleeper:?}, expected only {:?}",
                target.sleeper_label
            ));
        }
        if folded.count_function("spin") == 0 {
            errors.push("--idle: no spin samples".into());
        }
    }
    report.check(&format!("{label} --idle"), errors, Some(&run), "");

    for extra in [&["--gil"][..], &["--gil", "--idle"][..]] {
        let (run, folded, mut errors) = target.record_raw("gil.txt", extra);
        if let Some(folded) = &folded {
            check_spin(&target, folded, &mut errors);
            if folded.count_function("sleeper") > 0 {
                errors.push(format!(
                    "the MainThread (sleeper, not holding the GIL) was recorded: {:?}",
                    folded.labels_of("sleeper")
                ));
            }
        }
        report.check(
            &format!("{label} {}", extra.join(" ")),
            errors,
            Some(&run),
            "",
        );
    }

    let (run, folded, mut errors) = target.record_raw("threads.txt", &["--threads", "--idle"]);
    if let Some(folded) = &folded {
        let busy_root = format!("thread {} \"busy\"", target.busy_tid());
        let main_root = format!("thread {} \"MainThread\"", target.main_tid());
        for (frames, _) in folded.iter() {
            let root = frames[0];
            if profiles::parse_thread_root(root).is_none() {
                errors.push(format!(
                    "stack {:?} does not start with a thread frame",
                    frames.join(";")
                ));
                break;
            }
            let leaf = Label::parse(frames[frames.len() - 1]).name;
            let want = match leaf.as_str() {
                "spin" => &busy_root,
                "sleeper" => &main_root,
                _ => continue,
            };
            if root != want {
                errors.push(format!("{leaf} under {root:?}, expected {want:?}"));
            }
        }
        for want in [&busy_root, &main_root] {
            if !folded.iter().any(|(frames, _)| frames[0] == want.as_str()) {
                errors.push(format!("no stack under {want:?}"));
            }
        }
    }
    report.check(
        &format!("{label} --threads --idle"),
        errors,
        Some(&run),
        &folded.map(|f| f.top(10)).unwrap_or_default(),
    );
}

fn check_labels(interp: &Interpreter, report: &mut Report) {
    let target = IdleTarget::start(interp);
    let label = interp.label;
    let script = IdleTarget::SCRIPT;
    let (def_line, _) = line_range(&target.ready, "spin").expect("spin's lines in ready.json");
    assert_eq!(
        def_line + 1,
        marker_line(script, "HOT spin"),
        "test bug: spin's def line"
    );

    // --function: the function's first line.
    let (run, folded, mut errors) = target.record_raw("function.txt", &["--function"]);
    if let Some(folded) = &folded {
        let want = format!("spin ({}:{def_line})", target.short);
        let got = folded.labels_of("spin");
        if got.keys().ne([&want]) || folded.count_function("spin") == 0 {
            errors.push(format!("spin labels {got:?}, expected only {want:?}"));
        }
        let (entry_def, _) =
            line_range(&target.ready, "busy_entry").expect("busy_entry's lines in ready.json");
        let want_entry = format!("busy_entry ({}:{entry_def})", target.short);
        let entries = folded.labels_of("busy_entry");
        if entries.keys().ne([&want_entry]) {
            errors.push(format!(
                "busy_entry labels {entries:?}, expected only {want_entry:?}"
            ));
        }
    }
    report.check(&format!("{label} --function"), errors, Some(&run), "");

    // --nolineno: `function (file)` everywhere.
    let (run, folded, mut errors) = target.record_raw("nolineno.txt", &["--nolineno"]);
    if let Some(folded) = &folded {
        let want = format!("spin ({})", target.short);
        let got = folded.labels_of("spin");
        if got.keys().ne([&want]) || folded.count_function("spin") == 0 {
            errors.push(format!("spin labels {got:?}, expected only {want:?}"));
        }
        let with_lines: Vec<String> = folded
            .labels()
            .into_keys()
            .filter(|l| {
                let parsed = Label::parse(l);
                parsed.line.is_some() || parsed.file.is_none()
            })
            .collect();
        if !with_lines.is_empty() {
            errors.push(format!(
                "labels not of the form `function (file)`: {with_lines:?}"
            ));
        }
    }
    report.check(&format!("{label} --nolineno"), errors, Some(&run), "");

    // --full-filenames: co_filename whole.
    let (run, folded, mut errors) = target.record_raw("full.txt", &["--full-filenames"]);
    if let Some(folded) = &folded {
        let want = format!(
            "spin ({}:{})",
            target.wd.script(script),
            marker_line(script, "HOT spin")
        );
        let got = folded.labels_of("spin");
        if got.keys().ne([&want]) || folded.count_function("spin") == 0 {
            errors.push(format!("spin labels {got:?}, expected only {want:?}"));
        }
        let relative: Vec<String> = folded
            .labels()
            .into_keys()
            .filter(|l| {
                Label::parse(l)
                    .file
                    .is_some_and(|f| !f.starts_with('/') && !f.starts_with('<'))
            })
            .collect();
        if !relative.is_empty() {
            errors.push(format!("labels without a full path: {relative:?}"));
        }
    }
    report.check(&format!("{label} --full-filenames"), errors, Some(&run), "");

    // --nonblocking: same stacks, read without stopping the target.
    let (run, folded, mut errors) = target.record_raw("nonblocking.txt", &["--nonblocking"]);
    if let Some(folded) = &folded {
        let spin = folded.count_function("spin");
        if spin == 0 || spin * 10 < folded.total * 8 {
            errors.push(format!(
                "spin has {spin} of {} samples (expected at least 80%)",
                folded.total
            ));
        }
        let labels = folded.labels_of("spin");
        if labels.keys().any(|l| *l != target.spin_label) {
            errors.push(format!(
                "spin labels {labels:?}, expected only {:?}",
                target.spin_label
            ));
        }
    }
    target.check_not_stopped(&mut errors);
    report.check(&format!("{label} --nonblocking"), errors, Some(&run), "");
}

fn check_subprocesses(interp: &Interpreter, report: &mut Report) {
    let script = "record_multi.py";
    let wd = Workdir::new(interp);
    let out = wd.host("multi.txt");
    let out_arg = arg(&out);
    let result_seen = wd.seen("multi.json");
    let script_args = [result_seen.as_str(), "1.5"];
    // With --threads too: the process frame is the outermost, the thread frame next.
    let mut args: Vec<String> = [
        "record",
        "-s",
        "--threads",
        "-f",
        "raw",
        "-o",
        &out_arg,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(wd.command(script, &script_args));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_py_spy(&args_ref, RUN_TIMEOUT);
    let mut errors = run_errors(&run, true);
    let profile = raw_profile(&run, &out, &mut errors);
    let info = wd.read_json("multi.json").map_err(|e| errors.push(e)).ok();
    let mut extra = String::new();
    if let (Some((_, folded)), Some(info)) = (&profile, &info) {
        let short = short_filename(&wd.script(script));
        let hot = format!(
            "worker_burn ({short}:{})",
            marker_line(script, "HOT worker_burn")
        );
        let method = info["start_method"].as_str().unwrap_or("?");
        for (frames, _) in folded.iter() {
            if profiles::parse_process_root(frames[0]).is_none()
                || frames.len() < 2
                || profiles::parse_thread_root(frames[1]).is_none()
            {
                errors.push(format!(
                    "stack {:?} does not start with `process <pid>: \"<cmdline>\"` then `thread <tid> \"<name>\"`",
                    frames.join(";")
                ));
                break;
            }
        }
        for worker in info["workers"].as_array().into_iter().flatten() {
            let Some(pid) = worker["pid"].as_u64() else {
                errors.push(format!("worker without a pid: {worker}"));
                continue;
            };
            let prefix = format!("process {pid}: \"");
            // The exact command line when known: what the worker read itself, or, for a
            // forked worker, its parent's.
            let cmdline = worker["cmdline"]
                .as_str()
                .map(str::to_string)
                .or_else(|| (method == "fork").then(|| wd.python_cmdline(script, &script_args)));
            let roots: BTreeSet<&str> = folded
                .iter()
                .map(|(frames, _)| frames[0])
                .filter(|root| root.starts_with(&prefix))
                .collect();
            if roots.is_empty() {
                errors.push(format!(
                    "no stack under `process {pid}: ...` (worker, start method {method})"
                ));
                continue;
            }
            if let Some(cmdline) = &cmdline {
                let want = format!("process {pid}: \"{cmdline}\"");
                if roots.iter().any(|r| *r != want) {
                    errors.push(format!(
                        "roots {roots:?} for worker {pid}, expected {want:?}"
                    ));
                }
            }
            // The worker's main thread runs worker_burn: its tid is the worker's pid.
            let thread = format!("thread {pid} \"MainThread\"");
            let burns = folded.count_where(|frames| {
                frames[0].starts_with(&prefix)
                    && frames.get(1) == Some(&thread.as_str())
                    && frames.last() == Some(&hot.as_str())
            });
            if burns == 0 {
                errors.push(format!("no {hot:?} leaf under worker {pid}'s {thread:?}"));
            }
        }
        if info["workers"].as_array().map_or(0, Vec::len) != 3 {
            errors.push(format!("expected 3 workers in {info}"));
        }
        extra = format!(
            "--- multi.json ---\n{info}\n--- profile ---\n{}",
            folded.top(20)
        );
    }
    report.check(
        &format!(
            "{} --subprocesses --threads (multiprocessing)",
            interp.label
        ),
        errors,
        Some(&run),
        &extra,
    );
}

/// `-d 1.5` lasts 1.5 s of wall time. (What signals to py-spy do is a fault row of
/// tests/faults.rs.)
fn check_duration(interp: &Interpreter, report: &mut Report) {
    let label = interp.label;
    let target = IdleTarget::start(interp);
    let pid = target.pid.to_string();
    let out = target.wd.host("duration.txt");
    let out_arg = arg(&out);
    let py_spy = spawn_py_spy(&[
        "record", "--pid", &pid, "-d", "1.5", "-f", "raw", "-o", &out_arg,
    ]);
    let (run, elapsed) = py_spy.wait(RUN_TIMEOUT);
    let mut errors = run_errors(&run, true);
    raw_profile(&run, &out, &mut errors);
    if (elapsed.as_secs_f64() - 1.5).abs() > 0.3 {
        errors.push(format!("-d 1.5 took {elapsed:?} (expected 1.5 ± 0.3 s)"));
    }
    report.check(&format!("{label} -d 1.5"), errors, Some(&run), "");
}

/// `-- python -m module args`, and `-o` in a missing directory. (How the program's exit
/// status comes out of py-spy when it exits, is killed or execs mid-record is a fault row
/// of tests/faults.rs.)
fn check_module_and_output(interp: &Interpreter, report: &mut Report) {
    let label = interp.label;
    let script = "record_exit.py";
    let wd = Workdir::new(interp);
    let short = short_filename(&wd.script(script));
    let hot = format!(
        "busy_exit ({short}:{})",
        marker_line(script, "HOT busy_exit")
    );

    // `-- python -m module args`: the module runs as __main__ and keeps its exit code.
    // PYTHONPATH is set through `env`, which execs the interpreter (or chroot) in place.
    let out = wd.host("exit-module.txt");
    let out_arg = arg(&out);
    let mut args: Vec<String> = ["record", "-f", "raw", "-o", &out_arg, "--", "env"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!(
        "PYTHONPATH={}",
        wd.script(script).trim_end_matches(&format!("/{script}"))
    ));
    let command = wd.command(script, &["3", "0.3"]);
    let script_arg = wd.script(script);
    for part in command {
        if part == script_arg {
            args.push("-m".into());
            args.push(script.trim_end_matches(".py").into());
        } else {
            args.push(part);
        }
    }
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_py_spy(&args_ref, RUN_TIMEOUT);
    let mut errors = run_errors(&run, false);
    if run.status.code() != Some(3) {
        errors.push(format!("exit status {} (expected 3)", run.status));
    }
    if let Some((_, folded)) = raw_profile(&run, &out, &mut errors) {
        if folded.labels_of("busy_exit").keys().ne([&hot]) {
            errors.push(format!(
                "busy_exit labels {:?}, expected only {hot:?}",
                folded.labels_of("busy_exit")
            ));
        }
    }
    report.check(
        &format!("{label} launch mode, python -m record_exit 3"),
        errors,
        Some(&run),
        "",
    );

    // -o in a directory that does not exist: an error before anything starts.
    let missing = wd.host("no-such-dir/sub/out.svg");
    let marker = wd.host("launched.json");
    let missing_arg = arg(&missing);
    let mut args: Vec<String> = ["record", "-o", &missing_arg, "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(wd.command(script, &["0", "0.5", &wd.seen("launched.json")]));
    let started = Instant::now();
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_py_spy(&args_ref, RUN_TIMEOUT);
    let elapsed = started.elapsed();
    let mut errors = run_errors(&run, false);
    check_one_line_error(&run, &mut errors);
    if elapsed > Duration::from_secs(2) {
        errors.push(format!(
            "took {elapsed:?} to fail (expected an immediate error)"
        ));
    }
    if marker.exists() {
        errors.push("the program was started although the output cannot be written".into());
    }
    if wd.host("no-such-dir").exists() {
        errors.push("py-spy created the missing directory".into());
    }
    report.check(
        &format!("{label} -o in a missing directory"),
        errors,
        Some(&run),
        "",
    );
}

/// A failed run with exactly one line on stderr.
fn check_one_line_error(run: &Run, errors: &mut Vec<String>) {
    if run.status.success() {
        errors.push("exit status 0 (expected a failure)".into());
    }
    if run.stderr.lines().count() != 1 {
        errors.push(format!(
            "{} lines on stderr (expected exactly one)",
            run.stderr.lines().count()
        ));
    }
}

// --------------------------------------------------------------- other tests --

/// `--gil` on the free-threaded build: a warning, and every active thread kept.
#[test]
fn record_gil_free_threaded() {
    let interp = common::interpreter("py313t");
    if !interp.available() {
        return;
    }
    let target = IdleTarget::start(&interp);
    let (run, folded, mut errors) = target.record_raw("gil.txt", &["--gil"]);
    if !run
        .stderr
        .lines()
        .any(|l| l.starts_with("py-spy: warning:"))
    {
        errors.push("no `py-spy: warning:` line about --gil on a free-threaded build".into());
    }
    if let Some(folded) = &folded {
        check_spin(&target, folded, &mut errors);
        if folded.count_function("sleeper") > 0 {
            errors.push("the idle MainThread was recorded".into());
        }
    }
    let mut report = Report::new("py313t");
    report.check("py313t --gil", errors, Some(&run), "");
    report.finish();
}

/// The checkers themselves: each one rejects a broken file of its format.
#[test]
fn checkers_reject_broken_files() {
    let dir = profiles::tempdir("record-checkers").expect("temporary directory");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).expect("write a test file");
        path
    };
    let mut failures = Vec::new();

    // Chrome traces.
    let good = r#"{"traceEvents":[
        {"ph":"M","name":"thread_name","pid":1,"tid":2,"args":{"name":"x"}},
        {"ph":"B","name":"a","pid":1,"tid":2,"ts":0},{"ph":"B","name":"b","pid":1,"tid":2,"ts":1},
        {"ph":"E","name":"b","pid":1,"tid":2,"ts":2},{"ph":"E","pid":1,"tid":2,"ts":2}]}"#;
    match profiles::check_chrome_trace(&write("good.json", good)) {
        Ok(trace) if trace.opened.len() == 2 && trace.tracks.len() == 1 => {}
        other => failures.push(format!("balanced trace: {other:?}")),
    }
    for (name, text) in [
        ("E without B", r#"[{"ph":"E","pid":1,"tid":2,"ts":0}]"#),
        (
            "left open",
            r#"[{"ph":"B","name":"a","pid":1,"tid":2,"ts":0}]"#,
        ),
        (
            "crossed names",
            r#"[{"ph":"B","name":"a","pid":1,"tid":2,"ts":0},{"ph":"B","name":"b","pid":1,"tid":2,"ts":0},
                {"ph":"E","name":"a","pid":1,"tid":2,"ts":1},{"ph":"E","name":"b","pid":1,"tid":2,"ts":1}]"#,
        ),
        (
            "time going back",
            r#"[{"ph":"B","name":"a","pid":1,"tid":2,"ts":5},{"ph":"E","pid":1,"tid":2,"ts":4}]"#,
        ),
        (
            "tid over 2^31-1",
            r#"[{"ph":"B","name":"a","pid":1,"tid":2147483648,"ts":0},{"ph":"E","pid":1,"tid":2147483648,"ts":1}]"#,
        ),
        (
            "E on another thread",
            r#"[{"ph":"B","name":"a","pid":1,"tid":2,"ts":0},{"ph":"E","pid":1,"tid":3,"ts":1}]"#,
        ),
    ] {
        if profiles::check_chrome_trace(&write("bad.json", text)).is_ok() {
            failures.push(format!("chrome trace with {name} accepted"));
        }
    }

    // Speedscope against the schema.
    if profiles::speedscope_schema().exists() {
        let good = r#"{"$schema":"https://www.speedscope.app/file-format-schema.json",
            "shared":{"frames":[{"name":"a","file":"x.py","line":3}]},
            "profiles":[{"type":"sampled","name":"p","unit":"seconds","startValue":0,
                         "endValue":1,"samples":[[0]],"weights":[1]}]}"#;
        if let Err(e) = profiles::check_speedscope(&write("good.speedscope.json", good)) {
            failures.push(format!("valid speedscope file rejected: {e}"));
        }
        let bad = good.replace(r#","weights":[1]"#, "");
        if profiles::check_speedscope(&write("bad.speedscope.json", &bad)).is_ok() {
            failures.push("speedscope file without weights accepted".into());
        }
        let bad = good.replace(r#""unit":"seconds""#, r#""unit":"parsecs""#);
        if profiles::check_speedscope(&write("bad2.speedscope.json", &bad)).is_ok() {
            failures.push("speedscope file with a bad unit accepted".into());
        }
    } else {
        assert!(
            !common::in_ci(),
            "speedscope's schema is missing (run tests/provision)"
        );
    }

    // SVG: well-formed, and the label found after unescaping.
    let svg =
        r#"<svg xmlns="http://www.w3.org/2000/svg"><text>&lt;module&gt; (a.py:1)</text></svg>"#;
    match profiles::check_svg(&write("good.svg", svg), "<module> (a.py:1)") {
        Ok(1) => {}
        other => failures.push(format!("well-formed SVG: {other:?}")),
    }
    if profiles::check_svg(&write("bad.svg", "<svg><text>x</svg>"), "x").is_ok() {
        failures.push("malformed SVG accepted".into());
    }

    // Chromium reports a script error of the page.
    if profiles::chromium().is_some() {
        let broken = r#"<svg xmlns="http://www.w3.org/2000/svg" onload="init(evt)">
<script type="text/ecmascript"><![CDATA[ function init(evt) { no_such_function(); } ]]></script>
<text id="matched"> </text></svg>"#;
        match profiles::browse_svg(&write("broken.svg", broken), "x", Duration::from_secs(60)) {
            Ok(report) if !report.errors.is_empty() && report.matched.is_none() => {}
            Ok(report) => failures.push(format!(
                "Chromium on an SVG whose script throws: console errors {:?}, matched {:?}",
                report.errors, report.matched
            )),
            Err(e) => failures.push(format!("Chromium on an SVG whose script throws: {e}")),
        }
    } else {
        assert!(
            !common::in_ci(),
            "chromium is missing (run tests/provision)"
        );
    }

    let _ = fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "checker failures:\n{}",
        failures.join("\n")
    );
}
