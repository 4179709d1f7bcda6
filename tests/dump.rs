//! Integration tests for `py-spy dump`, one test per interpreter (see `tests/common`).
//!
//! Each test starts `tests/scripts/dump_target.py` (its docstring lists where every thread
//! parks), waits for the truth file the script writes about itself, then checks four dumps
//! of the same process against it:
//!
//! 1. `dump --json` (blocking): every thread — OS id, Python id, name, status — and every
//!    frame (name, filename, short filename, line) exactly; the busy thread too.
//! 2. `dump --json --nonblocking`: the same for the parked threads; for the busy thread
//!    only that its frames (name, filename) are the outer part of the true stack.
//! 3. `dump --json --locals`: as 1, plus the locals and arguments of every frame in the
//!    test scripts (Python's repr; `<TypeName at 0x` prefix for other objects).
//! 4. `dump` (text): the `Process` and `Python` header lines, each thread's header line
//!    and its frame lines (short filenames); then the same with `--full-filenames`
//!    (the frame lines show `co_filename` whole).
//!
//! All mismatches of a test are collected and reported together, followed by the py-spy
//! output of the failing runs and a summary of the truth; the target's directory (with
//! `truth.json`) is kept when a test fails.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{run_py_spy, short_filename, Run, Target};

const TRUTH_TIMEOUT: Duration = Duration::from_secs(30);
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

macro_rules! dump_tests {
    ($($name:ident => $label:literal,)*) => {
        $(
            #[test]
            fn $name() {
                check_interpreter($label);
            }
        )*
    };
}

dump_tests! {
    dump_py27 => "py27",
    dump_py36 => "py36",
    dump_py37 => "py37",
    dump_py38 => "py38",
    dump_py39 => "py39",
    dump_py310 => "py310",
    dump_py311 => "py311",
    dump_py312 => "py312",
    dump_py313 => "py313",
    dump_py311_debian => "py311-debian",
    dump_py312_chroot => "py312-chroot",
    dump_py314_chroot => "py314-chroot",
    dump_py315_chroot => "py315-chroot",
    dump_py313t => "py313t",
}

fn check_interpreter(label: &str) {
    let interp = common::interpreter(label);
    if !interp.available() {
        return;
    }
    let mut target = Target::start(&interp, "dump_target.py");
    let truth = target.wait_truth(TRUTH_TIMEOUT);
    let mut checker = Checker::new(&target, &truth);
    checker.check_json(Mode::Blocking);
    checker.check_json(Mode::Nonblocking);
    checker.check_json(Mode::Locals);
    checker.check_text(false);
    checker.check_text(true);
    checker.finish();
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `--json`
    Blocking,
    /// `--json --nonblocking`
    Nonblocking,
    /// `--json --locals`
    Locals,
}

/// One expected thread, from the truth file.
struct TruthThread<'a> {
    native_id: u64,
    value: &'a Value,
}

impl TruthThread<'_> {
    fn busy(&self) -> bool {
        self.value["busy"].as_bool().unwrap_or(false)
    }
    fn frames(&self) -> &[Value] {
        self.value["frames"].as_array().map_or(&[], Vec::as_slice)
    }
    fn name(&self) -> &Value {
        &self.value["name"]
    }
    fn role(&self) -> &str {
        self.value["role"].as_str().unwrap_or("?")
    }
}

struct Checker<'a> {
    label: &'static str,
    target: &'a Target,
    truth: &'a Value,
    threads: BTreeMap<u64, TruthThread<'a>>,
    free_threaded: bool,
    command_line: String,
    failures: Vec<String>,
    outputs: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(target: &'a Target, truth: &'a Value) -> Self {
        let mut threads = BTreeMap::new();
        for value in truth["threads"].as_array().expect("truth threads") {
            let native_id = value["native_id"].as_u64().expect("truth native_id");
            threads.insert(native_id, TruthThread { native_id, value });
        }
        Checker {
            label: target.label,
            target,
            truth,
            threads,
            free_threaded: truth["free_threaded"].as_bool().unwrap_or(false),
            command_line: target.command_line(),
            failures: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn pid(&self) -> String {
        self.target.pid.to_string()
    }

    fn record(&mut self, what: &str, errors: Vec<String>, run: &Run) {
        if !errors.is_empty() {
            self.failures
                .push(format!("[{what}]\n  - {}", errors.join("\n  - ")));
            self.outputs.push(run.describe());
        }
    }

    /// Errors common to every run: exit status, panics.
    fn run_errors(run: &Run) -> Vec<String> {
        let mut errors = Vec::new();
        if !run.status.success() {
            errors.push(format!("exit status {} (expected 0)", run.status));
        }
        for line in run.stderr.lines() {
            if line.contains("panicked") || line.contains("RUST_BACKTRACE") {
                errors.push(format!("panic on stderr: {line}"));
            }
        }
        errors
    }

    fn check_json(&mut self, mode: Mode) {
        let pid = self.pid();
        let mut args = vec!["dump", "--pid", pid.as_str(), "--json"];
        match mode {
            Mode::Blocking => {}
            Mode::Nonblocking => args.push("--nonblocking"),
            Mode::Locals => args.push("--locals"),
        }
        let run = run_py_spy(&args, DUMP_TIMEOUT);
        let mut errors = Self::run_errors(&run);
        if run.status.success() {
            match serde_json::from_str::<Value>(run.stdout.trim()) {
                Ok(doc) => self.compare_document(&doc, mode, &mut errors),
                Err(e) => errors.push(format!("stdout is not one JSON document: {e}")),
            }
        }
        let what = format!("{} {}", self.label, args.join(" "));
        self.record(&what, errors, &run);
    }

    fn compare_document(&self, doc: &Value, mode: Mode, errors: &mut Vec<String>) {
        if doc["pid"].as_u64() != Some(u64::from(self.target.pid)) {
            errors.push(format!(
                "pid: got {}, expected {}",
                doc["pid"], self.target.pid
            ));
        }
        if doc["command_line"].as_str() != Some(self.command_line.as_str()) {
            errors.push(format!(
                "command_line: got {}, expected {:?}",
                doc["command_line"], self.command_line
            ));
        }
        let python = &doc["python"];
        if python["version"] != self.truth["version"] {
            errors.push(format!(
                "python.version: got {}, expected {}",
                python["version"], self.truth["version"]
            ));
        }
        if python["free_threaded"].as_bool() != Some(self.free_threaded) {
            errors.push(format!(
                "python.free_threaded: got {}, expected {}",
                python["free_threaded"], self.free_threaded
            ));
        }
        match python["executable"].as_str() {
            Some(path) if self.executable_matches(path) => {}
            _ => errors.push(format!(
                "python.executable: got {}, expected a path to {} or {}",
                python["executable"], self.truth["executable"], self.truth["executable_realpath"]
            )),
        }

        let Some(threads) = doc["threads"].as_array() else {
            errors.push("no \"threads\" array".to_string());
            return;
        };
        let mut dumped: BTreeMap<u64, &Value> = BTreeMap::new();
        for thread in threads {
            match thread["thread_id"].as_u64() {
                Some(tid) => {
                    if dumped.insert(tid, thread).is_some() {
                        errors.push(format!("thread_id {tid} appears twice"));
                    }
                }
                None => errors.push(format!("thread without a numeric thread_id: {thread}")),
            }
        }
        for tid in dumped.keys() {
            if !self.threads.contains_key(tid) {
                errors.push(format!("unexpected thread {tid} (not in the truth)"));
            }
        }
        for (tid, expected) in &self.threads {
            match dumped.get(tid) {
                None => errors.push(format!(
                    "thread {tid} ({}, {}) missing from the dump",
                    expected.role(),
                    expected.name()
                )),
                Some(thread) => self.compare_thread(thread, expected, mode, errors),
            }
        }
    }

    fn executable_matches(&self, path: &str) -> bool {
        let base = |p: &str| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        };
        let got = base(path);
        got.is_some()
            && [
                &self.truth["executable"],
                &self.truth["executable_realpath"],
            ]
            .iter()
            .any(|v| v.as_str().map(base) == Some(got.clone()))
    }

    fn status_ok(&self, expected: &TruthThread, status: &str) -> bool {
        if !expected.busy() {
            status == "idle"
        } else if self.free_threaded {
            status == "active"
        } else {
            status == "active" || status == "active+gil"
        }
    }

    fn expected_status(&self, expected: &TruthThread) -> &'static str {
        match (expected.busy(), self.free_threaded) {
            (false, _) => "\"idle\"",
            (true, true) => "\"active\"",
            (true, false) => "\"active\" or \"active+gil\"",
        }
    }

    fn compare_thread(
        &self,
        thread: &Value,
        expected: &TruthThread,
        mode: Mode,
        errors: &mut Vec<String>,
    ) {
        let who = format!(
            "thread {} ({}, {})",
            expected.native_id,
            expected.role(),
            expected.name()
        );
        if thread["python_thread_id"] != expected.value["ident"] {
            errors.push(format!(
                "{who}: python_thread_id {} != threading ident {}",
                thread["python_thread_id"], expected.value["ident"]
            ));
        }
        if &thread["name"] != expected.name() {
            errors.push(format!(
                "{who}: name {}, expected {}",
                thread["name"],
                expected.name()
            ));
        }
        let status = thread["status"].as_str().unwrap_or("<missing>");
        if !self.status_ok(expected, status) {
            errors.push(format!(
                "{who}: status {status:?}, expected {}",
                self.expected_status(expected)
            ));
        }
        let active = status.starts_with("active");
        let owns_gil = status.ends_with("+gil");
        if thread["active"].as_bool() != Some(active)
            || thread["owns_gil"].as_bool() != Some(owns_gil)
        {
            errors.push(format!(
                "{who}: active={} owns_gil={} disagree with status {status:?}",
                thread["active"], thread["owns_gil"]
            ));
        }

        let frames: &[Value] = thread["frames"].as_array().map_or(&[], Vec::as_slice);
        let truth_frames = expected.frames();
        if expected.busy() && mode == Mode::Nonblocking {
            // The busy thread runs while it is read: only its outer frames must agree.
            let key = |f: &Value| (f["name"].clone(), f["filename"].clone());
            let got: Vec<_> = frames.iter().map(key).collect();
            let want: Vec<_> = truth_frames.iter().map(key).collect();
            if got.is_empty() || !want.ends_with(&got) {
                errors.push(format!(
                    "{who}: frames are not the outer part of the true stack\n{}",
                    side_by_side(frames, truth_frames)
                ));
            }
            return;
        }
        let mut frame_errors = Vec::new();
        if frames.len() != truth_frames.len() {
            frame_errors.push(format!(
                "{} frames, expected {}",
                frames.len(),
                truth_frames.len()
            ));
        }
        for (i, (got, want)) in frames.iter().zip(truth_frames).enumerate() {
            for field in ["name", "filename", "line"] {
                if got[field] != want[field] {
                    frame_errors.push(format!(
                        "frame {i}: {field} {}, expected {}",
                        got[field], want[field]
                    ));
                }
            }
            if let Some(filename) = want["filename"].as_str() {
                let short = short_filename(filename);
                if got["short_filename"].as_str() != Some(short.as_str()) {
                    frame_errors.push(format!(
                        "frame {i}: short_filename {}, expected {short:?}",
                        got["short_filename"]
                    ));
                }
            }
            match mode {
                Mode::Locals => {
                    if !want["locals"].is_null() {
                        compare_locals(i, got, want, &mut frame_errors);
                    }
                }
                _ => {
                    if got.get("locals").is_some() {
                        frame_errors
                            .push(format!("frame {i}: has a \"locals\" key without --locals"));
                    }
                }
            }
        }
        if !frame_errors.is_empty() {
            errors.push(format!(
                "{who}:\n      {}\n{}",
                frame_errors.join("\n      "),
                side_by_side(frames, truth_frames)
            ));
        }
    }

    fn check_text(&mut self, full_filenames: bool) {
        let pid = self.pid();
        let mut args = vec!["dump", "--pid", pid.as_str()];
        if full_filenames {
            args.push("--full-filenames");
        }
        let run = run_py_spy(&args, DUMP_TIMEOUT);
        let mut errors = Self::run_errors(&run);
        if run.status.success() {
            self.compare_text(&run.stdout, full_filenames, &mut errors);
        }
        let what = format!("{} {}", self.label, args.join(" "));
        self.record(&what, errors, &run);
    }

    fn compare_text(&self, stdout: &str, full_filenames: bool, errors: &mut Vec<String>) {
        let lines: Vec<&str> = stdout.lines().collect();
        let first = format!("Process {}: {}", self.target.pid, self.command_line);
        if lines.first() != Some(&first.as_str()) {
            errors.push(format!("line 1: {:?}, expected {first:?}", lines.first()));
        }
        let version = self.truth["version"].as_str().unwrap_or("?");
        // A free-threaded build is named like its binary: `3.13.5t`.
        let suffix = if self.free_threaded { "t" } else { "" };
        let prefix = format!("Python v{version}{suffix} (");
        match lines.get(1) {
            Some(line) if line.starts_with(&prefix) && line.ends_with(')') => {
                let path = &line[prefix.len()..line.len() - 1];
                if !self.executable_matches(path) {
                    errors.push(format!(
                        "line 2: executable {path:?} is not {} or {}",
                        self.truth["executable"], self.truth["executable_realpath"]
                    ));
                }
            }
            other => errors.push(format!(
                "line 2: {other:?}, expected \"{prefix}<executable>)\""
            )),
        }

        let mut seen = BTreeMap::new();
        let mut i = 2;
        while i < lines.len() {
            let line = lines[i];
            i += 1;
            if !line.starts_with("Thread ") {
                continue;
            }
            let mut frame_lines = Vec::new();
            while i < lines.len() && !lines[i].starts_with("Thread ") {
                let l = lines[i];
                if l.starts_with("    ") && !l.starts_with("     ") {
                    frame_lines.push(l);
                }
                i += 1;
            }
            let Some((tid, status, name)) = parse_thread_header(line) else {
                errors.push(format!(
                    "bad thread header {line:?}: expected `Thread <tid> (<status>): \"<name>\"`"
                ));
                continue;
            };
            if seen.insert(tid, ()).is_some() {
                errors.push(format!("thread {tid} appears twice"));
            }
            let Some(expected) = self.threads.get(&tid) else {
                errors.push(format!("unexpected thread header {line:?}"));
                continue;
            };
            let who = format!("thread {tid} ({})", expected.role());
            if !self.status_ok(expected, &status) {
                errors.push(format!(
                    "{who}: status {status:?} in {line:?}, expected {}",
                    self.expected_status(expected)
                ));
            }
            let want_name = expected.name().as_str().map(str::to_string);
            if name != want_name {
                errors.push(format!(
                    "{who}: header {line:?} names {name:?}, expected {want_name:?}"
                ));
            }
            let want_lines: Vec<String> = expected
                .frames()
                .iter()
                .map(|f| {
                    let filename = f["filename"].as_str().unwrap_or("?");
                    let shown = if full_filenames {
                        filename.to_string()
                    } else {
                        short_filename(filename)
                    };
                    format!(
                        "    {} ({shown}:{})",
                        f["name"].as_str().unwrap_or("?"),
                        f["line"]
                    )
                })
                .collect();
            if frame_lines != want_lines {
                let first_diff = frame_lines
                    .iter()
                    .zip(&want_lines)
                    .position(|(a, b)| *a != b.as_str())
                    .unwrap_or(frame_lines.len().min(want_lines.len()));
                errors.push(format!(
                    "{who}: frame lines differ (first at index {first_diff}: got {:?}, expected {:?}; {} lines, expected {})",
                    frame_lines.get(first_diff),
                    want_lines.get(first_diff),
                    frame_lines.len(),
                    want_lines.len()
                ));
            }
        }
        for (tid, expected) in &self.threads {
            if !seen.contains_key(tid) {
                errors.push(format!(
                    "thread {tid} ({}, {}) has no header line",
                    expected.role(),
                    expected.name()
                ));
            }
        }
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
            let _ = write!(message, "\n===== py-spy run =====\n{output}\n");
        }
        let _ = write!(
            message,
            "\n===== truth (full file: {}/truth.json) =====\n{}",
            self.target.dir.display(),
            summarize_truth(self.truth)
        );
        panic!("{message}");
    }
}

/// Parses `Thread <tid> (<status>): "<name>"` (or without the name part).
fn parse_thread_header(line: &str) -> Option<(u64, String, Option<String>)> {
    let rest = line.strip_prefix("Thread ")?;
    let (tid, rest) = rest.split_once(' ')?;
    let tid = tid.parse().ok()?;
    let rest = rest.strip_prefix('(')?;
    let (status, rest) = rest.split_once(')')?;
    let name = if rest.is_empty() {
        None
    } else {
        let quoted = rest.strip_prefix(": \"")?.strip_suffix('"')?;
        Some(quoted.to_string())
    };
    Some((tid, status.to_string(), name))
}

fn compare_locals(index: usize, got: &Value, want: &Value, errors: &mut Vec<String>) {
    let empty = Vec::new();
    let got_locals = got["locals"].as_array().unwrap_or(&empty);
    let want_locals = want["locals"].as_array().unwrap_or(&empty);
    let names = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|l| l["name"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    if names(got_locals) != names(want_locals) {
        errors.push(format!(
            "frame {index} ({}): local names {:?}, expected {:?}",
            want["name"],
            names(got_locals),
            names(want_locals)
        ));
        return;
    }
    for (g, w) in got_locals.iter().zip(want_locals) {
        let what = format!("frame {index} ({}): local {}", want["name"], w["name"]);
        if g["is_arg"] != w["is_arg"] {
            errors.push(format!(
                "{what}: is_arg {}, expected {}",
                g["is_arg"], w["is_arg"]
            ));
        }
        if w["unchecked"].as_bool() == Some(true) {
            continue;
        }
        let repr = g["repr"].as_str();
        if let Some(exact) = w["repr"].as_str() {
            if repr != Some(exact) {
                errors.push(format!("{what}: repr {}, expected {exact:?}", g["repr"]));
            }
        } else {
            let prefixes: Vec<&str> = w["repr_prefixes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !repr.is_some_and(|r| prefixes.iter().any(|p| r.starts_with(p))) {
                errors.push(format!(
                    "{what}: repr {}, expected one starting with {prefixes:?}",
                    g["repr"]
                ));
            }
        }
    }
}

fn frame_text(frame: &Value) -> String {
    format!(
        "{} ({}:{})",
        frame["name"].as_str().unwrap_or("?"),
        frame["filename"].as_str().unwrap_or("?"),
        frame["line"]
    )
}

/// Both stacks, one frame per line: `got | expected`.
fn side_by_side(got: &[Value], want: &[Value]) -> String {
    let mut out = String::from("        dumped  ||  truth\n");
    for i in 0..got.len().max(want.len()) {
        let g = got.get(i).map(frame_text).unwrap_or_default();
        let w = want.get(i).map(frame_text).unwrap_or_default();
        let mark = if g == w { " " } else { "*" };
        let _ = writeln!(out, "      {mark} {i:2} {g}  ||  {w}");
    }
    out
}

fn summarize_truth(truth: &Value) -> String {
    let mut out = format!(
        "pid {} version {} executable {} free_threaded {}\n",
        truth["pid"], truth["version"], truth["executable"], truth["free_threaded"]
    );
    for thread in truth["threads"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "Thread {} ident {} role {} name {} busy {}",
            thread["native_id"], thread["ident"], thread["role"], thread["name"], thread["busy"]
        );
        for frame in thread["frames"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    {}", frame_text(frame));
            for local in frame["locals"].as_array().into_iter().flatten() {
                let repr = if local["repr"].is_null() {
                    format!("prefix {}", local["repr_prefixes"])
                } else {
                    local["repr"].to_string()
                };
                let _ = writeln!(
                    out,
                    "        {}{} = {repr}",
                    local["name"].as_str().unwrap_or("?"),
                    if local["is_arg"] == true {
                        " (arg)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    out
}
