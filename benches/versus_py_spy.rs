//! Our py-spy against the original py-spy 0.4.3, in the same run: `cargo bench --bench
//! versus_py_spy` (BENCHMARKS.md explains the rows, the method and the latest results).
//!
//! The original is installed from PyPI (pip's default index) into a venv cached outside
//! the checkout, once. Every row runs both profilers on the same workload, interleaved
//! (py-spy, ours, py-spy, ours, ...), `PYSPY_BENCH_REPEATS` times, on every interpreter,
//! and reports medians, min–max, the ratio ours / py-spy and whether the goal of issue 7
//! is met. Progress goes to stderr; the markdown tables go to stdout and to a file.
//!
//! Environment (all optional):
//!   PYSPY_BENCH_PYTHONS      interpreters, separated by `:` (default: pyenv's shared
//!                            3.11.7 and Debian's static /usr/bin/python3.11)
//!   PYSPY_BENCH_OURS         our binary to measure (default: the one cargo just built
//!                            with the release settings, target/release/py-spy)
//!   PYSPY_BENCH_PY_SPY       an original py-spy binary to use instead of installing one
//!   PYSPY_BENCH_CACHE        where the venv goes (default /var/cache/py-spy-ci/bench)
//!   PYSPY_BENCH_VENV_PYTHON  the Python that creates the venv (default /usr/bin/python3)
//!   PYSPY_BENCH_REPEATS      repeats of every row (default 5, quick 2)
//!   PYSPY_BENCH_QUICK=1      short durations and 2 repeats, to try the harness
//!   PYSPY_BENCH_REPORT       markdown output (default target/versus_py_spy.md)
//! Arguments that do not start with `-` select rows by their key (see `GROUPS`), e.g.
//! `cargo bench --bench versus_py_spy -- dump accuracy`.
//!
//! Timings are only measured and printed here, never asserted.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const PY_SPY_VERSION: &str = "0.4.3";
const DEFAULT_PYTHONS: &[&str] = &[
    "/root/.pyenv/versions/3.11.7/bin/python3.11",
    "/usr/bin/python3.11",
];
/// Row keys, in the order they run and print, with what each measures.
const GROUPS: &[(&str, &str)] = &[
    ("cpu10", "CPU per sample at depth 10, and peak RSS"),
    ("cpu100", "CPU per sample at depth 100"),
    ("rate10k", "achieved rate at 10 kHz, depth 100"),
    ("threads8", "achieved rate, 8 threads x depth 100, 1 kHz"),
    ("slowdown", "target slowdown at 10 kHz and 100 Hz"),
    ("dump", "dump --pid wall time"),
    ("accuracy", "attribution error on the accuracy workload"),
];
/// A profiler run that takes this much longer than asked is killed and counted as failed.
const GRACE: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A slowdown run that takes this many times the workload's time alone (plus 10 s) is
/// stopped and counted at that time, a lower bound marked `≥` in the table.
const SLOWDOWN_CAP: f64 = 25.0;

fn main() {
    let started = Instant::now();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("versus_py_spy: {e}");
            std::process::exit(2);
        }
    };
    let theirs = match &config.theirs {
        Some(path) => path.clone(),
        None => match install_py_spy(&config) {
            Ok(path) => path,
            Err(e) => {
                eprintln!("versus_py_spy: installing py-spy {PY_SPY_VERSION}: {e}");
                std::process::exit(2);
            }
        },
    };
    let tools = [
        Tool {
            name: format!("py-spy {PY_SPY_VERSION}"),
            path: theirs,
            kind: Kind::Theirs,
        },
        Tool {
            name: "ours".to_string(),
            path: config.ours.clone(),
            kind: Kind::Ours,
        },
    ];
    let work = match Workdir::new() {
        Ok(work) => work,
        Err(e) => {
            eprintln!("versus_py_spy: {e}");
            std::process::exit(2);
        }
    };
    let header = header(&config, &tools);
    eprint!("{header}");
    let mut report = header.clone();
    for python in &config.pythons {
        let info = python_info(python);
        let load_before = load_average();
        eprintln!("\n== {info}; load average {load_before}");
        let mut bench = Bench {
            config: &config,
            tools: &tools,
            python,
            work: &work,
            rows: Vec::new(),
        };
        bench.run_all();
        let mut table = render_table(&info, &bench.rows, &tools[0].name);
        // Other work on the machine shows up in every row; this says whether there was any.
        let _ = writeln!(
            table,
            "\nLoad average (1, 5, 15 min) before: {load_before}; after: {}.",
            load_average()
        );
        println!("\n{table}");
        report.push('\n');
        report.push_str(&table);
    }
    let _ = writeln!(
        report,
        "\nTotal run time: {:.1} min.",
        started.elapsed().as_secs_f64() / 60.0
    );
    if let Some(dir) = config.report.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&config.report, &report) {
        Ok(()) => eprintln!("\nwrote {}", config.report.display()),
        Err(e) => eprintln!("\ncould not write {}: {e}", config.report.display()),
    }
    eprintln!(
        "total run time {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
}

// --------------------------------------------------------------------- settings --

struct Config {
    ours: PathBuf,
    theirs: Option<PathBuf>,
    cache: PathBuf,
    venv_python: PathBuf,
    pythons: Vec<PathBuf>,
    repeats: usize,
    quick: bool,
    only: Vec<String>,
    report: PathBuf,
    durations: Durations,
}

/// How long each kind of run lasts. py-spy's `-d` takes whole seconds only.
struct Durations {
    cpu10_secs: u32,
    cpu100_secs: u32,
    rate_secs: u32,
    accuracy_secs: u32,
    /// Wall seconds the slowdown workload should take with no profiler.
    slowdown_alone: f64,
    dumps_per_repeat: usize,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let quick = var("PYSPY_BENCH_QUICK").is_some_and(|v| v != "0");
        let repeats = match var("PYSPY_BENCH_REPEATS") {
            Some(v) => v
                .to_str()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or("PYSPY_BENCH_REPEATS must be a positive number")?,
            None if quick => 2,
            None => 5,
        };
        let pythons: Vec<PathBuf> = match var("PYSPY_BENCH_PYTHONS") {
            Some(list) => std::env::split_paths(&list).collect(),
            None => DEFAULT_PYTHONS.iter().map(PathBuf::from).collect(),
        };
        let mut found = Vec::new();
        for python in pythons {
            if python.exists() {
                found.push(python);
            } else {
                eprintln!("versus_py_spy: skipping {}: not found", python.display());
            }
        }
        if found.is_empty() {
            return Err("no interpreter to run (PYSPY_BENCH_PYTHONS)".into());
        }
        let only: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        for key in &only {
            if !GROUPS.iter().any(|(group, _)| group == key) {
                let keys: Vec<&str> = GROUPS.iter().map(|(k, _)| *k).collect();
                return Err(format!("no row matches {key:?}; rows: {}", keys.join(", ")));
            }
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let durations = if quick {
            Durations {
                cpu10_secs: 2,
                cpu100_secs: 2,
                rate_secs: 1,
                accuracy_secs: 2,
                slowdown_alone: 1.0,
                dumps_per_repeat: 5,
            }
        } else {
            Durations {
                cpu10_secs: 10,
                cpu100_secs: 5,
                // py-spy takes HZ × SECS passes however long they take: at 10 kHz it
                // needs about 7 s of wall time per second asked.
                rate_secs: 1,
                accuracy_secs: 4,
                slowdown_alone: 1.5,
                dumps_per_repeat: 10,
            }
        };
        Ok(Config {
            ours: var("PYSPY_BENCH_OURS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_py-spy"))),
            theirs: var("PYSPY_BENCH_PY_SPY").map(PathBuf::from),
            cache: var("PYSPY_BENCH_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/cache/py-spy-ci/bench")),
            venv_python: var("PYSPY_BENCH_VENV_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/python3")),
            pythons: found,
            repeats,
            quick,
            only,
            report: var("PYSPY_BENCH_REPORT")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("target").join("versus_py_spy.md")),
            durations,
        })
    }

    fn selected(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|key| key == group)
    }
}

/// Installs py-spy `PY_SPY_VERSION` into `<cache>/py-spy-<version>` unless a previous run
/// finished doing so (it leaves a stamp file last), and returns its binary.
fn install_py_spy(config: &Config) -> Result<PathBuf, String> {
    let venv = config.cache.join(format!("py-spy-{PY_SPY_VERSION}"));
    let binary = venv.join("bin").join("py-spy");
    let stamp = venv.join(".installed-by-versus_py_spy");
    if stamp.exists() && binary.exists() {
        return Ok(binary);
    }
    eprintln!(
        "installing py-spy {PY_SPY_VERSION} into {} ...",
        venv.display()
    );
    // Without the stamp, whatever is there is a half-finished venv of ours.
    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(|e| format!("removing {}: {e}", venv.display()))?;
    }
    fs::create_dir_all(&config.cache)
        .map_err(|e| format!("creating {}: {e}", config.cache.display()))?;
    let venv_os = venv.as_os_str().to_os_string();
    run_checked(Command::new(&config.venv_python).args([
        OsString::from("-m"),
        "venv".into(),
        venv_os,
    ]))?;
    // A binary wheel only: a source build would need Rust and measure a different build.
    run_checked(Command::new(venv.join("bin").join("python")).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        "--only-binary=:all:",
        &format!("py-spy=={PY_SPY_VERSION}"),
    ]))?;
    let version = version_of(&binary);
    if version != format!("py-spy {PY_SPY_VERSION}") {
        return Err(format!("{} --version says {version:?}", binary.display()));
    }
    fs::write(&stamp, "").map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    Ok(binary)
}

fn run_checked(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn version_of(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("(--version failed: {e})"))
}

/// A private scratch directory, removed at the end.
struct Workdir(PathBuf);

impl Workdir {
    fn new() -> Result<Workdir, String> {
        let dir = std::env::temp_dir().join(format!("versus_py_spy.{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Workdir(dir))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join("workloads")
        .join(name)
}

fn accuracy_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scripts")
        .join("record_accuracy.py")
}

// ---------------------------------------------------------------------- machine --

fn header(config: &Config, tools: &[Tool]) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.1} GiB RAM", kb / 1048576.0)
        });
    let d = &config.durations;
    let mut out = String::new();
    let _ = writeln!(out, "## versus_py_spy\n");
    let _ = writeln!(
        out,
        "- machine: {cpu}, {cores} cores{memory}; {os}, Linux {kernel}"
    );
    for tool in tools {
        let _ = writeln!(
            out,
            "- {}: `{}` ({})",
            tool.name,
            tool.path.display(),
            version_of(&tool.path)
        );
    }
    let _ = writeln!(
        out,
        "- {} repeats{}; record runs: depth 10 for {} s, depth 100 for {} s, rates for {} s, \
         accuracy for {} s; slowdown workload about {} s alone; {} dumps per repeat",
        config.repeats,
        if config.quick { " (quick mode)" } else { "" },
        d.cpu10_secs,
        d.cpu100_secs,
        d.rate_secs,
        d.accuracy_secs,
        d.slowdown_alone,
        d.dumps_per_repeat
    );
    out
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn python_info(python: &Path) -> String {
    // Debian's python3.11 has Py_ENABLE_SHARED set but links libpython statically into
    // the executable; what the profilers see is whether libpython is mapped.
    let probe = "import sys; print('%s %s' % (sys.version.split()[0], \
                 'shared' if 'libpython' in open('/proc/self/maps').read() else 'static'))";
    let described = Command::new(python)
        .args(["-c", probe])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    match described.as_deref().and_then(|d| d.split_once(' ')) {
        Some((version, linkage)) => {
            format!("CPython {version} ({linkage}, {})", python.display())
        }
        None => format!("{} (version unknown)", python.display()),
    }
}

// -------------------------------------------------------------------- processes --

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Theirs,
    Ours,
}

struct Tool {
    name: String,
    path: PathBuf,
    kind: Kind,
}

impl Tool {
    /// Sampling passes of a `record -r HZ -d SECS` run that ended by itself, from what the
    /// tool printed. Folded counts would not do: both count one sample per thread, py-spy
    /// leaves idle threads out, and ours weighs a sample after skipped slots by their
    /// number.
    fn passes(&self, output: &str, hz: u32, secs: u32) -> Result<u64, String> {
        match self.kind {
            Kind::Theirs => {
                // py-spy 0.4's `-d` is a number of passes, HZ × SECS, however long they
                // take; its loop ends as the last one arrives, so one fewer is recorded.
                // Its "Samples" counts thread stacks, so it only shows that it finished.
                if !output.contains("Wrote raw flamegraph data") {
                    return Err(format!("no summary in: {}", output.trim()));
                }
                if output.contains("Stopped sampling because") {
                    return Err(format!("stopped early: {}", output.trim()));
                }
                Ok(u64::from(hz) * u64::from(secs) - 1)
            }
            Kind::Ours => {
                // "py-spy: wrote ...: 2760 samples from 2760 passes in 3.00 s ..."
                let marker = " passes in ";
                let line = output
                    .lines()
                    .rev()
                    .find(|line| line.contains(marker))
                    .ok_or_else(|| format!("no summary in: {}", output.trim()))?;
                let before = &line[..line.rfind(marker).unwrap_or(0)];
                let digits: String = before
                    .chars()
                    .rev()
                    .take_while(char::is_ascii_digit)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                digits
                    .parse()
                    .map_err(|_| format!("no pass count in {line:?}"))
            }
        }
    }
}

/// What a finished profiler process used.
struct Finished {
    success: bool,
    status: String,
    /// User plus system CPU time of the process (it starts no children in attach mode).
    cpu: Duration,
    max_rss_kb: u64,
    wall: Duration,
    /// From its first message to its end. Both print a line as sampling starts, so for
    /// `record` this is the time spent sampling (plus writing the profile).
    since_first_message: Option<Duration>,
    /// What it printed, stderr first.
    output: String,
}

impl Finished {
    fn failure(&self) -> Option<String> {
        if self.success {
            return None;
        }
        let tail: Vec<&str> = self.output.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!("{}: {}", self.status, tail.join(" / ")))
    }
}

/// A profiler process whose messages are collected by threads, line by line.
struct Running {
    child: Child,
    started: Instant,
    lines: Receiver<(Instant, String)>,
    first_message: Option<Instant>,
    readers: Vec<JoinHandle<String>>,
    reaped: bool,
}

impl Drop for Running {
    /// A run abandoned on an error path is killed, not left behind.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects everything `pipe` delivers, passing each line on as it comes.
fn read_lines(
    pipe: impl std::io::Read + Send + 'static,
    sender: mpsc::Sender<(Instant, String)>,
) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = sender.send((Instant::now(), line));
        }
        all
    })
}

impl Running {
    /// Starts `program`; its stderr is kept, and its stdout too unless `quiet` (a dump's
    /// output is not what is measured). py-spy 0.4.3 writes its messages to stdout.
    fn start(program: &Path, args: &[OsString], quiet: bool) -> Result<Running, String> {
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(if quiet { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let (sender, lines) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            readers.push(read_lines(stderr, sender.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            readers.push(read_lines(stdout, sender));
        }
        Ok(Running {
            child,
            started,
            lines,
            first_message: None,
            readers,
            reaped: false,
        })
    }

    /// Waits for the first message: both print one when they start sampling.
    fn wait_started(&mut self, timeout: Duration) -> bool {
        match self.lines.recv_timeout(timeout) {
            Ok((at, _)) => {
                self.first_message.get_or_insert(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for the process to end (killing it after `timeout`), then reaps it with
    /// `wait4` for its own resource usage.
    fn finish(mut self, timeout: Duration) -> Result<Finished, String> {
        let pid = self.child.id() as libc::pid_t;
        let (done, watch) = mpsc::channel::<()>();
        let watchdog = thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = watch.recv_timeout(timeout) {
                // SAFETY: kill has no memory effects; the pid is not reaped before this
                // thread is joined, so it still names our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            false
        });
        // Wait without reaping (WNOWAIT): the watchdog may still send its signal to the pid.
        loop {
            // SAFETY: siginfo_t is plain data, filled in by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer to a siginfo_t we own.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("waitid {pid}: {err}"));
            }
        }
        let ended = Instant::now();
        let wall = ended - self.started;
        drop(done);
        let killed = watchdog.join().unwrap_or(false);
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data, filled in by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to data we own; the child has ended, so this returns at once.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        self.reaped = rc == pid;
        if rc != pid {
            return Err(format!("wait4 {pid}: {}", std::io::Error::last_os_error()));
        }
        let output: String = self
            .readers
            .drain(..)
            .filter_map(|reader| reader.join().ok())
            .collect();
        let first_message = self
            .lines
            .try_iter()
            .map(|(at, _)| at)
            .chain(self.first_message)
            .min();
        let seconds = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
        };
        let exited = libc::WIFEXITED(status);
        let code = libc::WEXITSTATUS(status);
        let status_text = if killed {
            format!("killed after {} s", timeout.as_secs())
        } else if exited {
            format!("exit status {code}")
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        Ok(Finished {
            success: exited && code == 0 && !killed,
            status: status_text,
            cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            max_rss_kb: usage.ru_maxrss as u64,
            wall,
            since_first_message: first_message.map(|at| ended.saturating_duration_since(at)),
            output,
        })
    }
}

/// A Python workload, killed when dropped.
struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Target {
    fn start(python: &Path, script: &Path, args: &[String]) -> Result<Target, String> {
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", python.display()))?;
        let stdin = child.stdin.take();
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let target = Target {
            child,
            stdin,
            lines,
        };
        match target.lines.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line == "ready" => Ok(target),
            Ok(line) => Err(format!("{} printed {line:?}", script.display())),
            Err(_) => Err(format!("{} never got ready", script.display())),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn go(&mut self) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("no stdin")?;
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("starting the work: {e}"))
    }

    /// The next line the workload prints, as a number.
    fn number(&self, timeout: Duration) -> Result<f64, String> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .map_err(|_| "the workload printed no result".to_string())?;
        line.trim()
            .parse()
            .map_err(|_| format!("the workload printed {line:?}"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs of each 100 Hz slowdown cell (and of the workload alone) per repeat.
const LOW_RATE_RUNS: u32 = 3;

/// CPU time (µs) per wakeup of a thread that sleeps to `hz` deadlines for `secs`, and with
/// `stop` stops the main thread of `pid` and resumes it after each (seized once).
fn floor(pid: i32, hz: u32, secs: u32, stop: bool) -> Result<f64, String> {
    floor_until(pid, hz, stop, Arc::new(AtomicBool::new(false)), Some(secs))
        .join()
        .map_err(|_| "the floor thread panicked".to_string())?
}

/// [`floor`] on a thread of its own, until `done` is set (or `secs` have passed).
fn floor_until(
    pid: i32,
    hz: u32,
    stop: bool,
    done: Arc<AtomicBool>,
    secs: Option<u32>,
) -> JoinHandle<Result<f64, String>> {
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a local.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    fn ptrace(request: libc::c_uint, pid: i32) -> Result<(), String> {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: requests that take no pointers.
        if unsafe { libc::ptrace(request, pid, null, null) } < 0 {
            return Err(format!(
                "ptrace {request:#x}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
    fn stopped(pid: i32) -> Result<(), String> {
        let mut status = 0;
        // SAFETY: valid pointer to a local.
        if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
    thread::spawn(move || -> Result<f64, String> {
        if stop {
            ptrace(libc::PTRACE_SEIZE, pid)?;
        }
        let period = Duration::from_secs_f64(1.0 / f64::from(hz));
        let start = Instant::now();
        let cpu = thread_cpu();
        let mut result = Ok(());
        let mut wakeups = 0u32;
        let mut slot = 0u64;
        loop {
            let elapsed = start.elapsed();
            if done.load(Ordering::Relaxed)
                || secs.is_some_and(|s| elapsed.as_secs() >= u64::from(s))
            {
                break;
            }
            // Like our schedule: the next slot, or the current one when late (missed
            // slots are skipped, never made up back to back).
            let current = (elapsed.as_secs_f64() / period.as_secs_f64()) as u64;
            slot = (slot + 1).max(current);
            let deadline = start + period.mul_f64(slot as f64);
            let now = Instant::now();
            if deadline > now {
                thread::sleep(deadline - now);
            }
            wakeups += 1;
            if stop {
                result = ptrace(libc::PTRACE_INTERRUPT, pid)
                    .and_then(|()| stopped(pid))
                    .and_then(|()| ptrace(libc::PTRACE_CONT, pid));
                if result.is_err() {
                    break;
                }
            }
        }
        let cpu = thread_cpu() - cpu;
        if stop {
            let _ = ptrace(libc::PTRACE_INTERRUPT, pid).and_then(|()| stopped(pid));
            let _ = ptrace(libc::PTRACE_DETACH, pid);
        }
        result.map(|()| cpu.as_secs_f64() * 1e6 / f64::from(wakeups.max(1)))
    })
}

fn spin_target(python: &Path, threads: u32, depth: u32) -> Result<Target, String> {
    let target = Target::start(
        python,
        &workload("spin.py"),
        &[threads.to_string(), depth.to_string()],
    )?;
    // The main thread prints "ready" a few frames short of its depth.
    thread::sleep(Duration::from_millis(200));
    Ok(target)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

// ------------------------------------------------------------------- statistics --

#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    })
}

#[derive(Clone, Copy)]
enum Unit {
    Micros,
    PerSecond,
    Factor,
    Millis,
    Megabytes,
    Points,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::Micros => format!("{value:.0} µs"),
            Unit::PerSecond => format!("{value:.0}/s"),
            Unit::Factor => format!("{value:.3}×"),
            Unit::Millis => format!("{value:.1} ms"),
            Unit::Megabytes => format!("{value:.1} MB"),
            Unit::Points => format!("{value:.2} pp"),
        }
    }

    fn show_spread(self, values: &[f64]) -> String {
        match spread(values) {
            None => "not measured".into(),
            Some(s) if values.len() == 1 => self.show(s.median),
            Some(s) => format!(
                "{} ({}–{})",
                self.show(s.median),
                self.show(s.min).trim_end_matches(self.suffix()).trim(),
                self.show(s.max)
            ),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::PerSecond => "/s",
            Unit::Factor => "×",
            Unit::Millis => "ms",
            Unit::Megabytes => "MB",
            Unit::Points => "pp",
        }
    }
}

/// The goal of issue 7 for a row.
#[derive(Clone, Copy)]
enum Goal {
    /// Ours at most this fraction of py-spy's median.
    FractionOfTheirs(f64),
    AtLeast(f64),
    AtMost(f64),
    /// Slowdown: our extra time at most this fraction of py-spy's.
    FractionOfExtra(f64),
    /// No goal: a measurement that explains the others.
    Context,
}

impl Goal {
    fn describe(self, unit: Unit) -> String {
        match self {
            Goal::FractionOfTheirs(f) => format!("≤ 1/{:.0} of py-spy's", 1.0 / f),
            Goal::AtLeast(v) => format!("≥ {}", unit.show(v)),
            Goal::AtMost(v) if matches!(unit, Unit::Factor) => {
                format!("within noise (≤ {})", unit.show(v))
            }
            Goal::AtMost(v) => format!("≤ {}", unit.show(v)),
            Goal::FractionOfExtra(f) => format!("extra time ≤ {f} × py-spy's"),
            Goal::Context => "none (context)".into(),
        }
    }
}

struct Row {
    what: String,
    unit: Unit,
    goal: Goal,
    theirs: Vec<f64>,
    ours: Vec<f64>,
    failures: Vec<String>,
    /// Tools with a run stopped at a cap and counted at the cap: their values are lower
    /// bounds.
    capped: Vec<String>,
}

impl Row {
    fn new(what: impl Into<String>, unit: Unit, goal: Goal) -> Row {
        Row {
            what: what.into(),
            unit,
            goal,
            theirs: Vec::new(),
            ours: Vec::new(),
            failures: Vec::new(),
            capped: Vec::new(),
        }
    }

    fn push(&mut self, tool: &Tool, value: f64) {
        match tool.kind {
            Kind::Theirs => self.theirs.push(value),
            Kind::Ours => self.ours.push(value),
        }
    }

    fn fail(&mut self, tool: &Tool, why: String) {
        eprintln!("    {}: FAILED: {why}", tool.name);
        self.failures.push(format!("{}: {why}", tool.name));
    }

    fn shown(&self, kind: Kind) -> String {
        let (values, name) = match kind {
            Kind::Theirs => (&self.theirs, "theirs"),
            Kind::Ours => (&self.ours, "ours"),
        };
        let text = self.unit.show_spread(values);
        if self.capped.iter().any(|c| c == name) {
            format!("≥ {text}")
        } else {
            text
        }
    }

    /// Ours / py-spy of the medians; for slowdowns, of the extra time.
    fn ratio(&self) -> Option<f64> {
        let theirs = spread(&self.theirs)?.median;
        let ours = spread(&self.ours)?.median;
        match self.goal {
            Goal::FractionOfExtra(_) => Some((ours - 1.0) / (theirs - 1.0)),
            _ => Some(ours / theirs),
        }
    }

    fn met(&self) -> Option<bool> {
        let ours = spread(&self.ours)?.median;
        Some(match self.goal {
            Goal::FractionOfTheirs(f) => ours <= f * spread(&self.theirs)?.median,
            Goal::AtLeast(v) => ours >= v,
            Goal::AtMost(v) => ours <= v,
            Goal::FractionOfExtra(f) => ours - 1.0 <= f * (spread(&self.theirs)?.median - 1.0),
            Goal::Context => return None,
        })
    }
}

fn render_table(python: &str, rows: &[Row], theirs_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {python}\n");
    let _ = writeln!(
        out,
        "| workload | {theirs_name} | ours | ours / py-spy | goal | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for row in rows {
        let ratio = row
            .ratio()
            .filter(|r| r.is_finite())
            .map_or("–".to_string(), |r| format!("{r:.2}"));
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None if matches!(row.goal, Goal::Context) => "–",
            None => "not measured",
        };
        // Most context rows measure the harness alone, with nothing from py-spy.
        let theirs = if row.theirs.is_empty() && matches!(row.goal, Goal::Context) {
            "–".to_string()
        } else {
            row.shown(Kind::Theirs)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {} | {met} |",
            row.what,
            theirs,
            row.shown(Kind::Ours),
            row.goal.describe(row.unit)
        );
    }
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            row.failures
                .iter()
                .map(move |f| format!("{}: {f}", row.what))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailed runs (left out of the medians):\n");
        for failure in failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

// ------------------------------------------------------------------------- rows --

struct Bench<'a> {
    config: &'a Config,
    tools: &'a [Tool],
    python: &'a Path,
    work: &'a Workdir,
    rows: Vec<Row>,
}

/// How a CPU-mix run went: the seconds its work took, or the seconds after which it was
/// stopped unfinished.
enum Ran {
    Done(f64),
    Capped(f64),
}

impl Ran {
    fn describe(&self) -> String {
        match self {
            Ran::Done(seconds) => format!("{seconds:.3} s"),
            Ran::Capped(at) => {
                format!("not done after {at:.0} s; stopped and counted as {at:.0} s")
            }
        }
    }
}

/// Adds a profiled CPU-mix run to `row` as its slowdown: its seconds over the mean of the
/// runs alone just before and just after it (whichever of the two there is). A run
/// stopped unfinished counts as the seconds it was given, marked as a lower bound.
fn push_ratio(row: &mut Row, tool: &Tool, ran: &Ran, before: Option<f64>, after: Option<f64>) {
    let alone = match (before, after) {
        (Some(b), Some(a)) => (a + b) / 2.0,
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => {
            row.fail(tool, "no run of the workload alone beside it".into());
            return;
        }
    };
    match *ran {
        Ran::Done(seconds) => row.push(tool, seconds / alone),
        Ran::Capped(at) => {
            row.push(tool, at / alone);
            let name = match tool.kind {
                Kind::Theirs => "theirs",
                Kind::Ours => "ours",
            };
            row.capped.push(name.to_string());
        }
    }
}

/// What a spin row records: the target's threads and stack depth, the rate and seconds
/// asked, whether with `--nonblocking`, and whether the row reports the achieved rate
/// rather than the CPU per sample.
#[derive(Clone, Copy)]
struct Spin {
    threads: u32,
    depth: u32,
    hz: u32,
    secs: u32,
    nonblocking: bool,
    rate: bool,
}

impl Spin {
    fn record(threads: u32, depth: u32, hz: u32, secs: u32) -> Spin {
        Spin {
            threads,
            depth,
            hz,
            secs,
            nonblocking: false,
            rate: false,
        }
    }
}

/// One `record --pid` run on a spin target.
struct RecordRun {
    passes: u64,
    /// Seconds spent sampling.
    window: f64,
    cpu: Duration,
    max_rss_kb: u64,
}

impl Bench<'_> {
    fn run_all(&mut self) {
        let d = &self.config.durations;
        if self.config.selected("cpu10") {
            let secs = d.cpu10_secs;
            let mut cpu = Row::new(
                "profiler CPU per sample, 1 thread, depth 10, 1 kHz",
                Unit::Micros,
                Goal::FractionOfTheirs(0.2),
            );
            let mut rss = Row::new(
                format!("profiler peak RSS, {secs} s at 1 kHz (depth 10)"),
                Unit::Megabytes,
                Goal::AtMost(10.0),
            );
            let mut floors = [
                Row::new(
                    "floor: a thread that only sleeps to each deadline, 1 kHz (in the harness; \
                     shown as ours)",
                    Unit::Micros,
                    Goal::Context,
                ),
                Row::new(
                    "floor: the same, stopping and resuming the target's thread each time \
                     (interrupt, wait, continue; shown as ours)",
                    Unit::Micros,
                    Goal::Context,
                ),
            ];
            let mut nonblocking = Row::new(
                "the same with `--nonblocking`, both profilers (no ptrace at all)",
                Unit::Micros,
                Goal::Context,
            );
            let spin = Spin::record(1, 10, 1000, secs);
            self.spin_rows("cpu10", spin, &mut cpu, Some(&mut rss));
            self.floors(10, secs, &mut floors);
            let spin = Spin {
                nonblocking: true,
                ..spin
            };
            self.spin_rows("cpu10 nonblocking", spin, &mut nonblocking, None);
            self.rows.push(cpu);
            self.rows.extend(floors);
            self.rows.push(nonblocking);
            self.rows.push(rss);
        }
        if self.config.selected("cpu100") {
            let mut cpu = Row::new(
                "profiler CPU per sample, 1 thread, depth 100, 1 kHz",
                Unit::Micros,
                Goal::FractionOfTheirs(0.2),
            );
            let secs = d.cpu100_secs;
            self.spin_rows("cpu100", Spin::record(1, 100, 1000, secs), &mut cpu, None);
            self.rows.push(cpu);
        }
        if self.config.selected("rate10k") {
            let mut rate = Row::new(
                "achieved rate, 1 thread, depth 100, asked 10 kHz",
                Unit::PerSecond,
                Goal::AtLeast(9500.0),
            );
            let secs = d.rate_secs;
            let spin = Spin {
                rate: true,
                ..Spin::record(1, 100, 10000, secs)
            };
            self.spin_rows("rate10k", spin, &mut rate, None);
            self.rows.push(rate);
        }
        if self.config.selected("threads8") {
            let mut rate = Row::new(
                "achieved rate, 8 threads × depth 100, asked 1 kHz, blocking",
                Unit::PerSecond,
                Goal::AtLeast(950.0),
            );
            let secs = d.rate_secs;
            let spin = Spin {
                rate: true,
                ..Spin::record(8, 100, 1000, secs)
            };
            self.spin_rows("threads8", spin, &mut rate, None);
            self.rows.push(rate);
        }
        if self.config.selected("slowdown") {
            self.slowdown();
        }
        if self.config.selected("dump") {
            self.dump();
        }
        if self.config.selected("accuracy") {
            self.accuracy();
        }
    }

    /// `record --pid` on one spin target, py-spy and ours in turn. `main` gets CPU per
    /// sample, or with `spin.rate` passes per second; `rss` gets the peak RSS.
    fn spin_rows(&mut self, key: &str, spin: Spin, main: &mut Row, mut rss: Option<&mut Row>) {
        let Spin {
            threads,
            depth,
            hz,
            secs,
            ..
        } = spin;
        eprintln!("-- {key}: {threads} thread(s), depth {depth}, {hz}/s for {secs} s");
        let target = match spin_target(self.python, threads, depth) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("    FAILED: {e}");
                main.failures.push(e);
                return;
            }
        };
        for repeat in 1..=self.config.repeats {
            for tool in self.tools {
                match self.record_spin(tool, &target, spin) {
                    Ok(run) => {
                        let cpu_us = run.cpu.as_secs_f64() * 1e6 / run.passes.max(1) as f64;
                        let per_second = run.passes as f64 / run.window;
                        let mb = run.max_rss_kb as f64 / 1024.0;
                        eprintln!(
                            "  #{repeat} {:<12} {:>6} passes in {:.2} s ({per_second:.0}/s), \
                             {:.3} s CPU, {cpu_us:.0} µs/pass, peak RSS {mb:.1} MB",
                            tool.name,
                            run.passes,
                            run.window,
                            run.cpu.as_secs_f64()
                        );
                        main.push(tool, if spin.rate { per_second } else { cpu_us });
                        if let Some(rss) = rss.as_deref_mut() {
                            rss.push(tool, mb);
                        }
                    }
                    Err(e) => main.fail(tool, format!("#{repeat}: {e}")),
                }
            }
        }
    }

    /// What any blocking sampler at 1 kHz costs before it reads anything, on this machine:
    /// the CPU time of a harness thread that sleeps to each deadline (`floors[0]`), and
    /// that also stops and resumes the target's thread each time with ptrace, seized once
    /// (`floors[1]`). Recorded in the "ours" column, `repeats` times.
    fn floors(&mut self, depth: u32, secs: u32, floors: &mut [Row; 2]) {
        eprintln!("-- floors: 1 thread, depth {depth}, 1000/s for {secs} s");
        let target = match spin_target(self.python, 1, depth) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("    FAILED: {e}");
                floors[0].failures.push(e);
                return;
            }
        };
        let pid = target.child.id() as i32;
        let ours = self
            .tools
            .iter()
            .find(|t| matches!(t.kind, Kind::Ours))
            .expect("our tool");
        for repeat in 1..=self.config.repeats {
            for (i, row) in floors.iter_mut().enumerate() {
                match floor(pid, 1000, secs, i == 1) {
                    Ok(us) => {
                        eprintln!("  #{repeat} floor {i}: {us:.1} µs of CPU per wakeup");
                        row.push(ours, us);
                    }
                    Err(e) => row.fail(ours, format!("#{repeat}: {e}")),
                }
            }
        }
    }

    fn record_spin(&self, tool: &Tool, target: &Target, spin: Spin) -> Result<RecordRun, String> {
        let Spin { hz, secs, .. } = spin;
        let out = self.work.file("spin.txt");
        let _ = fs::remove_file(&out);
        let mut args = os(&["record", "--pid", &target.pid()]);
        if spin.nonblocking {
            args.push("--nonblocking".into());
        }
        args.extend(os(&[
            "-r",
            &hz.to_string(),
            "-d",
            &secs.to_string(),
            "-f",
            "raw",
            "-o",
        ]));
        args.push(out.clone().into_os_string());
        let finished = Running::start(&tool.path, &args, false)?
            .finish(Duration::from_secs(u64::from(secs)) + GRACE)?;
        if let Some(failure) = finished.failure() {
            return Err(failure);
        }
        let passes = tool.passes(&finished.output, hz, secs)?;
        if passes == 0 {
            return Err("no samples".into());
        }
        let window = finished
            .since_first_message
            .ok_or("it printed nothing")?
            .as_secs_f64();
        Ok(RecordRun {
            passes,
            window,
            cpu: finished.cpu,
            max_rss_kb: finished.max_rss_kb,
        })
    }

    /// Wall time of the CPU-mix workload alone and under each profiler; every repeat
    /// measures "alone" again, and each run's slowdown is against its repeat's "alone".
    fn slowdown(&mut self) {
        eprintln!("-- slowdown: calibrating the CPU-mix workload");
        let units = match self.calibrate() {
            Ok(units) => units,
            Err(e) => {
                eprintln!("    FAILED: {e}");
                let mut row = Row::new("target slowdown", Unit::Factor, Goal::FractionOfExtra(0.5));
                row.failures.push(format!("calibration: {e}"));
                self.rows.push(row);
                return;
            }
        };
        let modes: [(u32, bool); 4] = [(10000, false), (10000, true), (100, false), (100, true)];
        let mut rows: Vec<Row> = modes
            .iter()
            .map(|&(hz, nonblocking)| {
                let (rate, goal) = if hz >= 1000 {
                    (format!("{} kHz", hz / 1000), Goal::FractionOfExtra(0.5))
                } else {
                    (format!("{hz} Hz"), Goal::AtMost(1.05))
                };
                let mode = if nonblocking {
                    "nonblocking"
                } else {
                    "blocking"
                };
                Row::new(
                    format!("target slowdown, {rate} {mode}"),
                    Unit::Factor,
                    goal,
                )
            })
            .collect();
        let mut floor_row = Row::new(
            "floor: target slowdown while the harness only stops and resumes it 10,000 times a \
             second (no reads; shown as ours)",
            Unit::Factor,
            Goal::Context,
        );
        eprintln!("-- slowdown: {units} units of work");
        // Every profiled run sits between two runs of the workload alone and is divided by
        // their mean: how fast this machine runs the same work drifts by a factor of two
        // over minutes (other guests on the host), and a ratio against runs taken minutes
        // away measured that drift more than the profiler.
        let mut before = self.alone(units, 0, &mut rows[0]);
        let mut all_alone: Vec<f64> = before.into_iter().collect();
        // The 100 Hz cells sit within a few percent of 1: three runs per repeat make their
        // medians steadier, at a few seconds each. The 10 kHz cells run once per repeat.
        let rounds =
            (1..=self.config.repeats).flat_map(|r| (0..LOW_RATE_RUNS).map(move |k| (r, k)));
        for (repeat, round) in rounds {
            if round == 0 {
                if let Some(ours) = self.tools.iter().find(|t| matches!(t.kind, Kind::Ours)) {
                    let ran = self.cpumix_floor(10000, units);
                    let after = self.alone(units, repeat, &mut rows[0]);
                    all_alone.extend(after);
                    match ran {
                        Ok(ran) => {
                            eprintln!("  #{repeat} floor        10000/s {}", ran.describe());
                            push_ratio(&mut floor_row, ours, &ran, before, after);
                        }
                        Err(e) => floor_row.fail(ours, format!("#{repeat}: {e}")),
                    }
                    before = after;
                }
            }
            for (index, &(hz, nonblocking)) in modes.iter().enumerate() {
                if hz >= 1000 && round > 0 {
                    continue;
                }
                for tool in self.tools {
                    let ran = self.cpumix(Some((tool, hz, nonblocking)), units);
                    let after = self.alone(units, repeat, &mut rows[0]);
                    all_alone.extend(after);
                    let row = &mut rows[index];
                    match ran {
                        Ok(ran) => {
                            eprintln!(
                                "  #{repeat} {:<12} {hz}/s{} {}",
                                tool.name,
                                if nonblocking { " nonblocking" } else { "" },
                                ran.describe(),
                            );
                            push_ratio(row, tool, &ran, before, after);
                        }
                        Err(e) => row.fail(tool, format!("#{repeat}: {e}")),
                    }
                    before = after;
                }
            }
        }
        if let Some(alone) = spread(&all_alone) {
            eprintln!(
                "  alone: median {:.3} s ({:.3}–{:.3} s over {} runs)",
                alone.median,
                alone.min,
                alone.max,
                all_alone.len()
            );
        }
        rows.insert(1, floor_row);
        self.rows.extend(rows);
    }

    /// One run of the CPU-mix workload alone, for the ratios of the runs beside it; a
    /// failure is noted in `row` (the first slowdown row) and gives `None`.
    fn alone(&self, units: u64, repeat: usize, row: &mut Row) -> Option<f64> {
        match self.cpumix(None, units) {
            Ok(Ran::Done(seconds)) => {
                eprintln!("  #{repeat} alone        {seconds:.3} s");
                Some(seconds)
            }
            Ok(Ran::Capped(_)) => {
                eprintln!("  #{repeat} alone: FAILED: never finished");
                row.failures
                    .push(format!("#{repeat} alone: never finished"));
                None
            }
            Err(e) => {
                eprintln!("  #{repeat} alone: FAILED: {e}");
                row.failures.push(format!("#{repeat} alone: {e}"));
                None
            }
        }
    }

    /// How many units of work take `slowdown_alone` seconds: a short try for a first
    /// guess, then a quarter of the goal to refine it, as a try of a tenth of a second is
    /// easily thrown off by the start-up of other work on the machine.
    fn calibrate(&self) -> Result<u64, String> {
        let goal = self.config.durations.slowdown_alone;
        let mut units = 2000u64;
        for fraction in [0.25, 1.0] {
            let seconds = match self.cpumix(None, units)? {
                Ran::Done(seconds) => seconds.max(1e-3),
                Ran::Capped(_) => return Err("the workload never finished".into()),
            };
            units = ((units as f64 * goal * fraction / seconds).ceil() as u64).max(1);
        }
        Ok(units)
    }

    /// The CPU-mix workload while a harness thread only stops and resumes it `hz` times a
    /// second (seized once; no reads): what any blocking sampler at that rate costs it.
    fn cpumix_floor(&self, hz: u32, units: u64) -> Result<Ran, String> {
        let mut target = Target::start(self.python, &workload("cpumix.py"), &[units.to_string()])?;
        let done = Arc::new(AtomicBool::new(false));
        let stopper = floor_until(target.child.id() as i32, hz, true, done.clone(), None);
        thread::sleep(Duration::from_millis(300));
        target.go()?;
        let cap = SLOWDOWN_CAP * self.config.durations.slowdown_alone;
        let limit = Duration::from_secs_f64(cap + 10.0);
        let seconds = target.number(limit);
        done.store(true, Ordering::Relaxed);
        stopper
            .join()
            .map_err(|_| "the floor thread panicked".to_string())??;
        Ok(match seconds {
            Ok(seconds) => Ran::Done(seconds),
            Err(_) => Ran::Capped(limit.as_secs_f64()),
        })
    }

    /// Runs the CPU-mix workload once, with a profiler attached first if asked, and
    /// returns the wall seconds the work took.
    fn cpumix(&self, profiler: Option<(&Tool, u32, bool)>, units: u64) -> Result<Ran, String> {
        let mut target = Target::start(self.python, &workload("cpumix.py"), &[units.to_string()])?;
        let running = match profiler {
            Some((tool, hz, nonblocking)) => {
                let out = self.work.file("cpumix.txt");
                let _ = fs::remove_file(&out);
                let mut args = os(&["record", "--pid", &target.pid(), "-r", &hz.to_string()]);
                if nonblocking {
                    args.push("--nonblocking".into());
                }
                args.extend(os(&["-f", "raw", "-o"]));
                args.push(out.into_os_string());
                let mut running = Running::start(&tool.path, &args, false)?;
                if !running.wait_started(READY_TIMEOUT) {
                    return Err("the profiler printed nothing".into());
                }
                // Past its start-up, so the work is timed under steady sampling.
                thread::sleep(Duration::from_millis(300));
                Some(running)
            }
            None => None,
        };
        target.go()?;
        // py-spy 0.4.3 at 10 kHz blocking can starve the target almost completely; such a
        // run is cut short and reported rather than waited for.
        let cap = SLOWDOWN_CAP * self.config.durations.slowdown_alone;
        let limit = Duration::from_secs_f64(cap + 10.0);
        let Ok(seconds) = target.number(limit) else {
            return Ok(Ran::Capped(limit.as_secs_f64()));
        };
        if let Some(running) = running {
            // It stops by itself once the workload has exited.
            let finished = running.finish(GRACE)?;
            if let Some(failure) = finished.failure() {
                return Err(failure);
            }
        }
        Ok(Ran::Done(seconds))
    }

    fn dump(&mut self) {
        let n = self.config.durations.dumps_per_repeat;
        eprintln!("-- dump: wall time of `dump --pid`, {n} runs each per repeat");
        let mut row = Row::new("`dump --pid` wall time", Unit::Millis, Goal::AtMost(10.0));
        let target = match spin_target(self.python, 1, 10) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("    FAILED: {e}");
                row.failures.push(e);
                self.rows.push(row);
                return;
            }
        };
        for repeat in 1..=self.config.repeats {
            let mut line = format!("  #{repeat}");
            for _ in 0..n {
                for tool in self.tools {
                    let args = os(&["dump", "--pid", &target.pid()]);
                    let finished = Running::start(&tool.path, &args, true)
                        .and_then(|running| running.finish(GRACE));
                    match finished {
                        Ok(f) if f.success => {
                            let ms = f.wall.as_secs_f64() * 1e3;
                            let _ = write!(line, " {}={ms:.1}", short(tool));
                            row.push(tool, ms);
                        }
                        Ok(f) => {
                            let why = f.failure().unwrap_or_default();
                            row.fail(tool, format!("#{repeat}: {why}"));
                        }
                        Err(e) => row.fail(tool, format!("#{repeat}: {e}")),
                    }
                }
            }
            eprintln!("{line} (ms)");
        }
        self.rows.push(row);
    }

    /// `record` in launch mode on tests/scripts/record_accuracy.py; the error is the
    /// largest difference, over burn_a/b/c, between a function's share of the samples in
    /// the three and its share of the wall time the script measured inside them.
    fn accuracy(&mut self) {
        let secs = self.config.durations.accuracy_secs;
        eprintln!("-- accuracy: record_accuracy.py for {secs} s at 1000/s, launch mode");
        let mut row = Row::new(
            "attribution error vs ground truth (accuracy workload, 1 kHz)",
            Unit::Points,
            Goal::AtMost(1.0),
        );
        for repeat in 1..=self.config.repeats {
            for tool in self.tools {
                match self.accuracy_run(tool, secs) {
                    Ok((wall_error, cpu_error, samples)) => {
                        eprintln!(
                            "  #{repeat} {:<12} {samples} samples in burn_*: {wall_error:.2} pp \
                             off the wall-time shares ({cpu_error:.2} pp off the CPU-time shares)",
                            tool.name
                        );
                        row.push(tool, wall_error);
                    }
                    Err(e) => row.fail(tool, format!("#{repeat}: {e}")),
                }
            }
        }
        self.rows.push(row);
    }

    fn accuracy_run(&self, tool: &Tool, secs: u32) -> Result<(f64, f64, u64), String> {
        let out = self.work.file("accuracy.txt");
        let truth_path = self.work.file("accuracy.json");
        let _ = fs::remove_file(&out);
        let _ = fs::remove_file(&truth_path);
        let mut args = os(&["record", "-r", "1000", "-f", "raw", "-o"]);
        args.push(out.clone().into_os_string());
        args.push("--".into());
        args.push(self.python.as_os_str().to_os_string());
        args.push(accuracy_script().into_os_string());
        args.push(truth_path.clone().into_os_string());
        args.push(secs.to_string().into());
        let finished = Running::start(&tool.path, &args, false)?
            .finish(Duration::from_secs(u64::from(secs)) + GRACE)?;
        if let Some(failure) = finished.failure() {
            return Err(failure);
        }
        let folded = fs::read_to_string(&out).map_err(|e| format!("reading the profile: {e}"))?;
        let truth = fs::read_to_string(&truth_path)
            .map_err(|e| format!("reading the script's result: {e}"))?;
        let truth: serde_json::Value =
            serde_json::from_str(&truth).map_err(|e| format!("the script's result: {e}"))?;
        let keys = ["a", "b", "c"];
        let mut counts = [0u64; 3];
        for line in folded.lines() {
            let Some((stack, count)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            for (i, key) in keys.iter().enumerate() {
                if stack.contains(&format!("burn_{key} (")) {
                    counts[i] += count;
                }
            }
        }
        let samples: u64 = counts.iter().sum();
        if samples == 0 {
            return Err("no samples in burn_a/b/c".into());
        }
        let error_against = |kind: &str| -> Result<f64, String> {
            let seconds: Vec<f64> = keys
                .iter()
                .map(|k| truth[kind][k].as_f64().unwrap_or(0.0))
                .collect();
            let total: f64 = seconds.iter().sum();
            if total <= 0.0 {
                return Err(format!("no {kind} time in the script's result"));
            }
            Ok(counts
                .iter()
                .zip(&seconds)
                .map(|(&count, &s)| (count as f64 / samples as f64 - s / total).abs() * 100.0)
                .fold(0.0, f64::max))
        };
        Ok((error_against("wall")?, error_against("cpu")?, samples))
    }
}

fn short(tool: &Tool) -> &'static str {
    match tool.kind {
        Kind::Theirs => "py-spy",
        Kind::Ours => "ours",
    }
}
