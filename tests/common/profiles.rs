//! Reading back what `py-spy record` wrote, and checking each format the way its consumer
//! would: folded stacks (`-f raw`), speedscope JSON (validated against speedscope's own
//! schema by Python's `jsonschema`), Chrome trace events (balanced `B`/`E` per thread) and
//! SVG flame graphs (well-formed XML; loaded in headless Chromium with the flame graph's
//! search run, and no script errors).
//!
//! Every checker returns `Err(message)` rather than panicking, so a test can collect all
//! its failures. The external tools are Debian's `/usr/bin/python3` (with
//! `python3-jsonschema`) and `chromium`, and the schema file that `tests/provision`
//! puts under the cache directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The system Python that runs the XML and JSON-schema checks (Debian's, where
/// `python3-jsonschema` is installed; not a pyenv shim).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

// ------------------------------------------------------------------------ labels --

/// A frame label `function (file:line)`, `function (file)`, or a root frame
/// (`thread 123 "name"`, `process 45: "cmd"`) that has no file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Label {
    /// Parses one label. A trailing ` (...)` is the location: `file:line` when the part
    /// after the last `:` is a number, else the whole `file`.
    pub fn parse(text: &str) -> Label {
        if let Some(body) = text.strip_suffix(')') {
            if let Some(open) = body.rfind(" (") {
                let name = &body[..open];
                let location = &body[open + 2..];
                if !name.is_empty() && !location.is_empty() && !is_root_label(text) {
                    if let Some((file, line)) = location.rsplit_once(':') {
                        if let Ok(line) = line.parse::<u32>() {
                            return Label {
                                name: name.to_string(),
                                file: Some(file.to_string()),
                                line: Some(line),
                            };
                        }
                    }
                    return Label {
                        name: name.to_string(),
                        file: Some(location.to_string()),
                        line: None,
                    };
                }
            }
        }
        Label {
            name: text.to_string(),
            file: None,
            line: None,
        }
    }
}

/// Whether a label is one of the root frames `--threads` / `--subprocesses` add.
pub fn is_root_label(text: &str) -> bool {
    parse_thread_root(text).is_some() || parse_process_root(text).is_some()
}

/// `thread <tid> "<name>"` (or `thread <tid>` for a thread without a name) → (tid, name).
/// In folded files the space of a label ending in a number is a no-break space (U+00A0),
/// so that `thread 1234 5` cannot be misread: `thread\u{a0}1234` is accepted too.
pub fn parse_thread_root(text: &str) -> Option<(u64, Option<String>)> {
    let rest = text
        .strip_prefix("thread ")
        .or_else(|| text.strip_prefix("thread\u{a0}"))?;
    let (tid, name) = match rest.split_once(' ') {
        Some((tid, name)) => (tid, Some(name)),
        None => (rest, None),
    };
    let tid = tid.parse().ok()?;
    let name = match name {
        Some(quoted) => Some(quoted.strip_prefix('"')?.strip_suffix('"')?.to_string()),
        None => None,
    };
    Some((tid, name))
}

/// `process <pid>: "<command line>"` → (pid, command line).
pub fn parse_process_root(text: &str) -> Option<(u32, String)> {
    let rest = text.strip_prefix("process ")?;
    let (pid, rest) = rest.split_once(": ")?;
    let pid = pid.parse().ok()?;
    let cmdline = rest.strip_prefix('"')?.strip_suffix('"')?;
    Some((pid, cmdline.to_string()))
}

// ------------------------------------------------------------------------ folded --

/// A folded-stacks file (`-f raw`): `root;...;leaf count` per line.
#[derive(Debug, Clone, Default)]
pub struct Folded {
    /// Stack (as written, `;`-separated, root first) → count.
    pub stacks: BTreeMap<String, u64>,
    pub total: u64,
}

impl Folded {
    /// Parses and checks the format: every line `STACK COUNT` with a positive count and a
    /// non-empty stack of non-empty frames, no stack twice, lines in sorted order.
    pub fn parse(text: &str) -> Result<Folded, String> {
        let mut folded = Folded::default();
        let mut previous: Option<&str> = None;
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            let (stack, count) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("line {number} has no count: {line:?}"))?;
            let count: u64 = count
                .parse()
                .map_err(|_| format!("line {number}: bad count in {line:?}"))?;
            if count == 0 {
                return Err(format!("line {number}: count 0 in {line:?}"));
            }
            if stack.is_empty() || stack.split(';').any(str::is_empty) {
                return Err(format!("line {number}: empty stack or frame in {line:?}"));
            }
            if let Some(prev) = previous {
                if prev >= line {
                    return Err(format!(
                        "lines are not sorted (or repeat): line {} {prev:?} before line {number} {line:?}",
                        number - 1
                    ));
                }
            }
            previous = Some(line);
            if folded.stacks.insert(stack.to_string(), count).is_some() {
                return Err(format!("line {number}: stack {stack:?} appears twice"));
            }
            folded.total += count;
        }
        Ok(folded)
    }

    pub fn read(path: &Path) -> Result<Folded, String> {
        let text =
            fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Folded::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every stack as its frame labels (root first) with its count.
    pub fn iter(&self) -> impl Iterator<Item = (Vec<&str>, u64)> + '_ {
        self.stacks
            .iter()
            .map(|(stack, &count)| (stack.split(';').collect(), count))
    }

    /// Samples whose stack satisfies `pred`.
    pub fn count_where(&self, mut pred: impl FnMut(&[&str]) -> bool) -> u64 {
        self.iter()
            .filter(|(frames, _)| pred(frames))
            .map(|(_, count)| count)
            .sum()
    }

    /// Samples with a frame of function `name` anywhere in the stack.
    pub fn count_function(&self, name: &str) -> u64 {
        self.count_where(|frames| frames.iter().any(|f| Label::parse(f).name == name))
    }

    /// Every distinct frame label with the number of samples it appears in (once per
    /// sample even if a stack holds it twice).
    pub fn labels(&self) -> BTreeMap<String, u64> {
        let mut labels = BTreeMap::new();
        for (frames, count) in self.iter() {
            let distinct: BTreeSet<&str> = frames.into_iter().collect();
            for frame in distinct {
                *labels.entry(frame.to_string()).or_insert(0) += count;
            }
        }
        labels
    }

    /// The labels of function `name` (any file and line) with their sample counts.
    pub fn labels_of(&self, name: &str) -> BTreeMap<String, u64> {
        self.labels()
            .into_iter()
            .filter(|(label, _)| Label::parse(label).name == name)
            .collect()
    }

    /// The heaviest stacks, for failure messages.
    pub fn top(&self, n: usize) -> String {
        let mut stacks: Vec<(&String, &u64)> = self.stacks.iter().collect();
        stacks.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut out = format!(
            "{} samples in {} stacks; heaviest:\n",
            self.total,
            stacks.len()
        );
        for (stack, count) in stacks.into_iter().take(n) {
            let _ = writeln!(out, "  {count:6}  {stack}");
        }
        out
    }
}

// ----------------------------------------------------------------------- summary --

/// py-spy's closing line on stderr:
/// `py-spy: wrote <FILE>: <N> samples from <P> passes in <T> s (<R>/s of <Q>/s asked), <E> errors`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub line: String,
    pub samples: u64,
    pub errors: u64,
    /// `<P>`, `<T>`, `<R>` and `<Q>`, when the line has them.
    pub passes: Option<u64>,
    pub seconds: Option<f64>,
    pub achieved: Option<f64>,
    pub asked: Option<f64>,
}

/// The text between the last `start` and the following `end` in `line`, as a number.
fn float_between(line: &str, start: &str, end: &str) -> Option<f64> {
    let from = line.rfind(start)? + start.len();
    let len = line[from..].find(end)?;
    line[from..from + len].trim().parse().ok()
}

/// The number just before ` <word>` in `line`, e.g. `number_before(line, " samples")`.
fn number_before(line: &str, word: &str) -> Option<u64> {
    let end = line.find(word)?;
    let digits: String = line[..end]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

impl Summary {
    /// Finds the summary line in py-spy's stderr.
    pub fn find(stderr: &str) -> Result<Summary, String> {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("py-spy: wrote "))
            .ok_or_else(|| "no `py-spy: wrote ...` summary line on stderr".to_string())?;
        let samples = number_before(line, " samples")
            .ok_or_else(|| format!("no `<N> samples` in the summary line {line:?}"))?;
        let errors = number_before(line, " errors")
            .or_else(|| number_before(line, " error"))
            .ok_or_else(|| format!("no `<E> errors` in the summary line {line:?}"))?;
        Ok(Summary {
            line: line.to_string(),
            samples,
            errors,
            passes: number_before(line, " passes"),
            seconds: float_between(line, " passes in ", " s ("),
            achieved: float_between(line, " s (", "/s of "),
            asked: float_between(line, "/s of ", "/s asked)"),
        })
    }
}

// ---------------------------------------------------------------- system python --

/// Runs `/usr/bin/python3 -c CODE ARGS...` (time limit 60 s); Ok(stdout) on exit 0,
/// else Err(stderr).
pub fn system_python(code: &str, args: &[&str]) -> Result<String, String> {
    let output = run_with_timeout(
        Command::new(SYSTEM_PYTHON).arg("-c").arg(code).args(args),
        Duration::from_secs(60),
    )?;
    if output.success {
        Ok(output.stdout)
    } else {
        Err(format!(
            "{SYSTEM_PYTHON} check failed ({}):\n{}{}",
            output.status, output.stdout, output.stderr
        ))
    }
}

/// Where `tests/provision` keeps speedscope's JSON schema.
pub fn speedscope_schema() -> PathBuf {
    super::cache_dir()
        .join("speedscope")
        .join("file-format-schema.json")
}

const SPEEDSCOPE_CHECK: &str = r#"
import json, sys
import jsonschema
with open(sys.argv[1]) as f:
    schema = json.load(f)
with open(sys.argv[2]) as f:
    doc = json.load(f)
validator = jsonschema.validators.validator_for(schema)(schema)
errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
for error in errors[:10]:
    sys.stderr.write("at /%s: %s\n" % ("/".join(str(p) for p in error.absolute_path), error.message[:300]))
sys.exit(1 if errors else 0)
"#;

/// Validates a speedscope file against the schema and returns the parsed document.
pub fn check_speedscope(path: &Path) -> Result<Value, String> {
    let schema = speedscope_schema();
    if !schema.exists() {
        return Err(format!(
            "{} is missing (run tests/provision)",
            schema.display()
        ));
    }
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    system_python(
        SPEEDSCOPE_CHECK,
        &[&schema.to_string_lossy(), &path.to_string_lossy()],
    )
    .map_err(|e| {
        format!(
            "{} does not validate against speedscope's schema: {e}",
            path.display()
        )
    })?;
    Ok(doc)
}

/// A speedscope document's frames, as (name, file, line).
pub fn speedscope_frames(doc: &Value) -> Vec<(String, Option<String>, Option<u64>)> {
    doc["shared"]["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or_default().to_string(),
                        f["file"].as_str().map(str::to_string),
                        f["line"].as_u64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Total sample count of a speedscope document: the number of sampled stacks over all
/// profiles, and the summed weights.
pub fn speedscope_samples(doc: &Value) -> (usize, f64) {
    let mut count = 0;
    let mut weight = 0.0;
    for profile in doc["profiles"].as_array().into_iter().flatten() {
        count += profile["samples"].as_array().map_or(0, Vec::len);
        weight += profile["weights"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .sum::<f64>();
    }
    (count, weight)
}

// ------------------------------------------------------------------ chrome trace --

/// What a balanced Chrome trace holds.
#[derive(Debug, Default)]
pub struct ChromeTrace {
    /// Names of the `B` events, with how often each was opened.
    pub opened: BTreeMap<String, u64>,
    /// (pid, tid) of every track with `B`/`E` events.
    pub tracks: BTreeSet<(i64, i64)>,
    pub events: usize,
}

/// Checks a Chrome trace (object form `{"traceEvents": [...]}` or a bare array): every
/// `E` closes the innermost open `B` of the same (pid, tid) (same name when the `E` has
/// one), nothing is left open, timestamps never go backwards on a track, and every pid
/// and tid is an integer in 0..=2^31-1.
pub fn check_chrome_trace(path: &Path) -> Result<ChromeTrace, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let events = match &doc {
        Value::Array(events) => events,
        Value::Object(_) => doc["traceEvents"]
            .as_array()
            .ok_or("no traceEvents array in the trace object")?,
        _ => return Err("the trace is neither an object nor an array".into()),
    };
    let mut trace = ChromeTrace {
        events: events.len(),
        ..ChromeTrace::default()
    };
    let mut open: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    let mut last_ts: HashMap<(i64, i64), f64> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let ph = event["ph"]
            .as_str()
            .ok_or_else(|| format!("event {i} has no \"ph\": {event}"))?;
        let id = |field: &str| -> Result<i64, String> {
            let v = event[field]
                .as_i64()
                .ok_or_else(|| format!("event {i}: {field} is not an integer: {event}"))?;
            if !(0..=i64::from(i32::MAX)).contains(&v) {
                return Err(format!("event {i}: {field} {v} does not fit in 0..=2^31-1"));
            }
            Ok(v)
        };
        let key = (id("pid")?, id("tid")?);
        if ph != "B" && ph != "E" {
            continue;
        }
        let ts = event["ts"]
            .as_f64()
            .ok_or_else(|| format!("event {i}: no numeric ts: {event}"))?;
        if let Some(&prev) = last_ts.get(&key) {
            if ts < prev {
                return Err(format!(
                    "event {i}: ts {ts} goes back from {prev} on (pid, tid) {key:?}"
                ));
            }
        }
        last_ts.insert(key, ts);
        trace.tracks.insert(key);
        let stack = open.entry(key).or_default();
        if ph == "B" {
            let name = event["name"]
                .as_str()
                .ok_or_else(|| format!("event {i}: B without a name: {event}"))?
                .to_string();
            *trace.opened.entry(name.clone()).or_insert(0) += 1;
            stack.push(name);
        } else {
            let top = stack.pop().ok_or_else(|| {
                format!("event {i}: E with nothing open on (pid, tid) {key:?}: {event}")
            })?;
            if let Some(name) = event["name"].as_str() {
                if name != top {
                    return Err(format!(
                        "event {i}: E {name:?} closes B {top:?} on (pid, tid) {key:?}"
                    ));
                }
            }
        }
    }
    for (key, stack) in &open {
        if !stack.is_empty() {
            return Err(format!(
                "{} event(s) left open on (pid, tid) {key:?}: {stack:?}",
                stack.len()
            ));
        }
    }
    Ok(trace)
}

// ------------------------------------------------------------------------- SVG --

const SVG_CHECK: &str = r#"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
if root.tag not in ("svg", "{http://www.w3.org/2000/svg}svg"):
    sys.stderr.write("the root element is %r, not svg\n" % root.tag)
    sys.exit(1)
needle = sys.argv[2]
hits = 0
for element in root.iter():
    for text in (element.text, element.tail):
        if text and needle in text:
            hits += 1
print(hits)
"#;

/// Checks that an SVG file is well-formed XML with an `<svg>` root, and returns how many
/// text nodes contain `needle` (after XML unescaping).
pub fn check_svg(path: &Path, needle: &str) -> Result<u64, String> {
    let out = system_python(SVG_CHECK, &[&path.to_string_lossy(), needle])
        .map_err(|e| format!("{} is not a well-formed SVG: {e}", path.display()))?;
    out.trim()
        .parse()
        .map_err(|_| format!("unexpected output of the SVG check: {out:?}"))
}

/// What headless Chromium made of a flame graph.
#[derive(Debug)]
pub struct BrowserReport {
    /// The text of the `matched` element (`Matched: 70.0%` after a successful search).
    pub matched: Option<String>,
    /// How many frames the search highlighted.
    pub highlighted: usize,
    /// Console and script error lines Chromium logged.
    pub errors: Vec<String>,
    /// The serialized DOM after load.
    pub dom: String,
}

/// The Chromium executable, if installed.
pub fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Loads `svg` in headless Chromium with the flame graph's search for `term` (inferno's
/// script runs `search(term)` on load when the URL has `?s=term`), dumps the DOM and
/// collects console errors. Chromium runs in its own process group with a fresh profile
/// directory, and the whole group is killed when it exits or after `timeout`.
pub fn browse_svg(svg: &Path, term: &str, timeout: Duration) -> Result<BrowserReport, String> {
    let chromium = chromium().ok_or("chromium is not installed (run tests/provision)")?;
    let profile_dir = tempdir("chromium-profile")?;
    let absolute = fs::canonicalize(svg).map_err(|e| format!("{}: {e}", svg.display()))?;
    let url = format!(
        "file://{}?s={}",
        percent_encode_path(&absolute.to_string_lossy()),
        percent_encode_query(term)
    );
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg("--dump-dom")
        .arg(&url)
        .process_group(0);
    let result = run_with_timeout(&mut command, timeout);
    let _ = fs::remove_dir_all(&profile_dir);
    let output = result?;
    // Chromium logs page console messages (uncaught exceptions included) as
    // `[...:INFO:CONSOLE:LINE] "message", source: URL (LINE)`.
    let errors: Vec<String> = output
        .stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    if !output.success && output.stdout.trim().is_empty() {
        return Err(format!(
            "chromium failed ({}) without a DOM:\n{}",
            output.status,
            tail(&output.stderr, 30)
        ));
    }
    if !output.stdout.contains("<svg") {
        return Err(format!(
            "chromium's DOM has no <svg> element:\n{}\n--- chromium stderr ---\n{}",
            tail(&output.stdout, 20),
            tail(&output.stderr, 30)
        ));
    }
    // The text of the element with id="matched" (the script's source also holds the
    // words "Matched: ", so look for the element, not the words).
    let matched = output.stdout.find("id=\"matched\"").and_then(|start| {
        let rest = &output.stdout[start..];
        let open_end = rest.find('>')?;
        let text = &rest[open_end + 1..];
        let end = text.find('<').unwrap_or(text.len());
        let text = text[..end].trim();
        (!text.is_empty()).then(|| text.to_string())
    });
    // The search paints matching frames in `searchcolor` and keeps the old colour in
    // `fg:orig_fill`.
    let highlighted = output.stdout.matches("fg:orig_fill").count();
    Ok(BrowserReport {
        matched,
        highlighted,
        errors,
        dom: output.stdout,
    })
}

fn percent_encode_path(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn percent_encode_query(term: &str) -> String {
    let mut out = String::new();
    for byte in term.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------- helpers --

/// A fresh, empty directory under the system temporary directory.
pub fn tempdir(what: &str) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pyspy-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The result of [`run_with_timeout`].
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` with piped stdout/stderr; after `timeout` it is killed (its whole
/// process group when it was started as a group leader) and an error returned.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let pid = child.id() as i32;
    let leader = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(2)?
                .to_string();
            Some(after == pid.to_string())
        })
        .unwrap_or(false);
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let kill_group = |pid: i32| {
        if leader {
            // SAFETY: plain syscall; the group is the one this function started.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for {what}: {e}")),
        }
        if Instant::now() > deadline {
            kill_group(pid);
            let _ = child.kill();
            let _ = child.wait();
            // The readers end once every holder of the pipes is gone.
            let stderr =
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            return Err(format!(
                "{what} did not finish within {timeout:?}; killed\n{}",
                tail(&stderr, 30)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Helpers a group leader left behind (Chromium's zygote and renderers) keep the pipes
    // open: end them too.
    kill_group(pid);
    Ok(Output {
        success: status.success(),
        status: status.to_string(),
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            Label::parse("burn_a (record_accuracy.py:41)"),
            Label {
                name: "burn_a".into(),
                file: Some("record_accuracy.py".into()),
                line: Some(41)
            }
        );
        assert_eq!(
            Label::parse("Worker.run (/a b/c.py)"),
            Label {
                name: "Worker.run".into(),
                file: Some("/a b/c.py".into()),
                line: None
            }
        );
        assert_eq!(Label::parse("<module> (x.py:3)").name, "<module>");
        assert_eq!(Label::parse("thread 12 \"busy (x)\"").file, None);
        assert_eq!(
            parse_thread_root("thread 12 \"busy\""),
            Some((12, Some("busy".into())))
        );
        assert_eq!(parse_thread_root("thread 12"), Some((12, None)));
        assert_eq!(parse_thread_root("thread\u{a0}12"), Some((12, None)));
        assert_eq!(
            parse_process_root("process 7: \"python a.py\""),
            Some((7, "python a.py".into()))
        );
        assert!(is_root_label("process 7: \"python (x.py:1)\""));
    }

    #[test]
    fn folded() {
        let f = Folded::parse("a (x.py:1);b (x.py:2) 3\na (x.py:1);c (x.py:5) 2\n").unwrap();
        assert_eq!(f.total, 5);
        assert_eq!(f.count_function("b"), 3);
        assert_eq!(f.count_function("a"), 5);
        assert_eq!(f.labels_of("c").get("c (x.py:5)"), Some(&2));
        assert!(Folded::parse("b 1\na 1\n").is_err(), "unsorted");
        assert!(Folded::parse("a 0\n").is_err());
        assert!(Folded::parse("a;;b 1\n").is_err());
        assert!(Folded::parse("a\n").is_err());
    }

    #[test]
    fn summary() {
        let s = Summary::find(
            "x\npy-spy: wrote /t/out.txt: 598 samples from 600 passes in 3.0 s (199.3/s of 200/s asked), 2 errors\n",
        )
        .unwrap();
        assert_eq!((s.samples, s.errors), (598, 2));
        assert_eq!(s.passes, Some(600));
        assert_eq!(
            (s.seconds, s.achieved, s.asked),
            (Some(3.0), Some(199.3), Some(200.0))
        );
        assert!(Summary::find("nothing").is_err());
    }
}
