//! Shared harness for the integration tests: which Python interpreters exist, starting a
//! target script under one of them (on the host or inside the Debian chroot), waiting for
//! the "truth" file it writes, and running the `py-spy` binary with a time limit.
//!
//! Interpreters live at fixed paths (see [`interpreters`]); the chroot and the
//! free-threaded build sit under the cache directory, `$PYSPY_TEST_CACHE` or
//! `/var/cache/py-spy-ci`. A missing interpreter makes its test print
//! `SKIP <label>: <path> not found (run tests/provision)` and pass, unless `CI=true`, in
//! which case it fails.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

pub mod profiles;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const PY_SPY: &str = env!("CARGO_BIN_EXE_py-spy");

/// Where the provisioned interpreters (chroot, free-threaded build) live.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("PYSPY_TEST_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/var/cache/py-spy-ci"),
    }
}

/// The directory holding the target scripts (`tests/scripts`).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scripts")
}

/// How to start one interpreter.
#[derive(Debug, Clone)]
pub enum Launch {
    /// An executable on the host.
    Host { python: PathBuf },
    /// `chroot ROOT PYTHON ...`, where `python` is the path inside the chroot. `chroot`
    /// execs the interpreter, so the spawned pid is the Python process's pid.
    Chroot { root: PathBuf, python: String },
}

/// One interpreter the tests run against.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// Short name used in test names and messages, e.g. `py312-chroot`.
    pub label: &'static str,
    pub launch: Launch,
}

const PYENV: &[(&str, &str)] = &[
    ("py27", "2.7.18"),
    ("py36", "3.6.15"),
    ("py37", "3.7.16"),
    ("py38", "3.8.18"),
    ("py39", "3.9.18"),
    ("py310", "3.10.13"),
    ("py311", "3.11.7"),
    ("py312", "3.12.1"),
    ("py313", "3.13.0"),
];

/// Every interpreter the tests know about (14).
pub fn interpreters() -> Vec<Interpreter> {
    let mut all: Vec<Interpreter> = PYENV
        .iter()
        .map(|(label, version)| Interpreter {
            label,
            launch: Launch::Host {
                python: PathBuf::from(format!("/root/.pyenv/versions/{version}/bin/python")),
            },
        })
        .collect();
    all.push(Interpreter {
        label: "py311-debian",
        launch: Launch::Host {
            python: PathBuf::from("/usr/bin/python3.11"),
        },
    });
    let root = cache_dir().join("sid-root");
    for (label, python) in [
        (
            "py312-chroot",
            "/root/.pyenv/versions/3.12.1/bin/python3.12",
        ),
        ("py314-chroot", "/usr/bin/python3.14"),
        ("py315-chroot", "/usr/bin/python3.15"),
    ] {
        all.push(Interpreter {
            label,
            launch: Launch::Chroot {
                root: root.clone(),
                python: python.to_string(),
            },
        });
    }
    all.push(Interpreter {
        label: "py313t",
        launch: Launch::Host {
            python: cache_dir().join("python3.13t/bin/python3.13t"),
        },
    });
    all
}

/// The interpreter with this label; panics on an unknown label.
pub fn interpreter(label: &str) -> Interpreter {
    interpreters()
        .into_iter()
        .find(|i| i.label == label)
        .unwrap_or_else(|| panic!("unknown interpreter label {label:?}"))
}

/// Whether `CI=true` is set: then missing interpreters are failures, not skips.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

impl Interpreter {
    /// The host path of the interpreter executable (inside the chroot directory for
    /// chroot interpreters).
    pub fn host_path(&self) -> PathBuf {
        match &self.launch {
            Launch::Host { python } => python.clone(),
            Launch::Chroot { root, python } => root.join(python.trim_start_matches('/')),
        }
    }

    /// Whether the interpreter exists. When it does not, prints the SKIP line and returns
    /// false — or panics under `CI=true`.
    pub fn available(&self) -> bool {
        let path = self.host_path();
        // symlink_metadata: a chroot's absolute symlinks do not resolve from the host.
        if fs::symlink_metadata(&path).is_ok() {
            return true;
        }
        let message = format!(
            "SKIP {}: {} not found (run tests/provision)",
            self.label,
            path.display()
        );
        if in_ci() {
            panic!("{message} (CI=true: missing interpreters are failures)");
        }
        println!("{message}");
        eprintln!("{message}");
        false
    }

    /// The first available host (non-chroot) interpreter, without printing anything.
    pub fn any_host() -> Option<Interpreter> {
        interpreters().into_iter().find(|i| {
            matches!(i.launch, Launch::Host { .. }) && fs::symlink_metadata(i.host_path()).is_ok()
        })
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, even on panic.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running target script and its working directory (truth file, stdout, stderr).
pub struct Target {
    pub label: &'static str,
    /// The Python process's pid.
    pub pid: u32,
    /// Host-side working directory; removed on drop unless the test failed.
    pub dir: PathBuf,
    truth_path: PathBuf,
    child: ChildGuard,
}

impl Target {
    /// Starts `tests/scripts/<script> <truth path>` under `interp`. Host interpreters run
    /// the script in place; chroot interpreters get copies of every file in
    /// `tests/scripts` under the chroot's `/tmp/pyspy-tests/<unique>/`.
    pub fn start(interp: &Interpreter, script: &str) -> Target {
        let unique = format!(
            "{}-{}-{}",
            interp.label,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let (dir, mut command, truth_path) = match &interp.launch {
            Launch::Host { python } => {
                let dir = std::env::temp_dir().join("pyspy-tests").join(&unique);
                fs::create_dir_all(&dir).expect("create the test directory");
                let truth = dir.join("truth.json");
                let mut command = Command::new(python);
                command.arg(scripts_dir().join(script)).arg(&truth);
                (dir, command, truth)
            }
            Launch::Chroot { root, python } => {
                let inside = format!("/tmp/pyspy-tests/{unique}");
                let dir = root.join(inside.trim_start_matches('/'));
                fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("create {} in the chroot: {e}", dir.display()));
                for entry in fs::read_dir(scripts_dir()).expect("list tests/scripts") {
                    let entry = entry.expect("read tests/scripts");
                    if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        fs::copy(entry.path(), dir.join(entry.file_name()))
                            .expect("copy a script into the chroot");
                    }
                }
                let mut command = Command::new("chroot");
                command
                    .arg(root)
                    .arg(python)
                    .arg(format!("{inside}/{script}"))
                    .arg(format!("{inside}/truth.json"));
                (dir.clone(), command, dir.join("truth.json"))
            }
        };
        let stdout = fs::File::create(dir.join("stdout.txt")).expect("create stdout.txt");
        let stderr = fs::File::create(dir.join("stderr.txt")).expect("create stderr.txt");
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("PYTHONIOENCODING", "utf-8");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {command:?}: {e}", interp.label));
        Target {
            label: interp.label,
            pid: child.id(),
            dir,
            truth_path,
            child: ChildGuard(child),
        }
    }

    /// What the target wrote on stdout and stderr so far.
    pub fn output(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- target stdout ---\n{}--- target stderr ---\n{}",
            read("stdout.txt"),
            read("stderr.txt")
        )
    }

    /// Waits (at most `timeout`) for the truth file, then until the reporter thread that
    /// wrote it has exited, and returns the parsed truth. Panics with the target's output
    /// if it exits or times out.
    pub fn wait_truth(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let truth = loop {
            if let Ok(text) = fs::read_to_string(&self.truth_path) {
                break serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: bad truth file: {e}\n{text}", self.label));
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!(
                    "{}: the target exited ({status}) before writing its truth file\n{}",
                    self.label,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no truth file {} after {timeout:?}\n{}",
                    self.label,
                    self.truth_path.display(),
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            truth["pid"].as_u64(),
            Some(u64::from(self.pid)),
            "{}: the spawned pid is not the Python pid (truth pid {})",
            self.label,
            truth["pid"]
        );
        let reporter = truth["reporter_native_id"]
            .as_u64()
            .expect("reporter_native_id");
        let task = format!("/proc/{}/task/{reporter}", self.pid);
        while Path::new(&task).exists() {
            assert!(
                Instant::now() < deadline,
                "{}: the reporter thread {reporter} did not exit\n{}",
                self.label,
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
        truth
    }

    /// `/proc/PID/cmdline` with its arguments joined by single spaces.
    pub fn command_line(&self) -> String {
        let raw = fs::read(format!("/proc/{}/cmdline", self.pid)).expect("read cmdline");
        let text = String::from_utf8_lossy(&raw);
        text.trim_end_matches('\0')
            .split('\0')
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        if thread::panicking() {
            eprintln!(
                "{}: kept the target's directory {}",
                self.label,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a finished `py-spy` run produced.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The whole run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "$ py-spy {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the binary under test with `args`; kills it and panics after `timeout`.
pub fn run_py_spy(args: &[&str], timeout: Duration) -> Run {
    let mut child = Command::new(PY_SPY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PY_SPY}: {e}"));
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
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait for py-spy") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = guard.0.kill();
            let status = guard.0.wait().expect("reap py-spy");
            let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
            panic!(
                "py-spy {} did not finish within {timeout:?} ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

/// A working directory for one test: the place for the files a script writes and reads,
/// with the scripts reachable by the interpreter (copied into the chroot for chroot
/// interpreters; host interpreters run `tests/scripts` in place). Removed on drop unless
/// the test is failing.
pub struct Workdir {
    pub interp: Interpreter,
    /// The directory on the host.
    pub dir: PathBuf,
    /// The same directory as the Python program sees it (differs inside a chroot).
    seen_dir: String,
    /// Where the scripts are, as the Python program sees it.
    seen_scripts: String,
}

impl Workdir {
    pub fn new(interp: &Interpreter) -> Workdir {
        let unique = format!(
            "{}-{}-{}",
            interp.label,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        match &interp.launch {
            Launch::Host { .. } => {
                let dir = std::env::temp_dir().join("pyspy-tests").join(&unique);
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).expect("create the test directory");
                Workdir {
                    interp: interp.clone(),
                    seen_dir: dir.to_string_lossy().into_owned(),
                    dir,
                    seen_scripts: scripts_dir().to_string_lossy().into_owned(),
                }
            }
            Launch::Chroot { root, .. } => {
                let inside = format!("/tmp/pyspy-tests/{unique}");
                let dir = root.join(inside.trim_start_matches('/'));
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("create {} in the chroot: {e}", dir.display()));
                for entry in fs::read_dir(scripts_dir()).expect("list tests/scripts") {
                    let entry = entry.expect("read tests/scripts");
                    if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        fs::copy(entry.path(), dir.join(entry.file_name()))
                            .expect("copy a script into the chroot");
                    }
                }
                Workdir {
                    interp: interp.clone(),
                    dir,
                    seen_dir: inside.clone(),
                    seen_scripts: inside,
                }
            }
        }
    }

    /// `name` inside the directory, as a host path.
    pub fn host(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `name` inside the directory, as the Python program sees it.
    pub fn seen(&self, name: &str) -> String {
        format!("{}/{name}", self.seen_dir)
    }

    /// The path of a script as the Python program sees it (its `co_filename`).
    pub fn script(&self, script: &str) -> String {
        format!("{}/{script}", self.seen_scripts)
    }

    /// The command (program first) that runs `script ARGS` under the interpreter; for a
    /// chroot interpreter `chroot ROOT PYTHON ...` (chroot execs Python: same pid).
    pub fn command(&self, script: &str, args: &[&str]) -> Vec<String> {
        let mut command = Vec::new();
        match &self.interp.launch {
            Launch::Host { python } => command.push(python.to_string_lossy().into_owned()),
            Launch::Chroot { root, python } => {
                command.push("chroot".to_string());
                command.push(root.to_string_lossy().into_owned());
                command.push(python.clone());
            }
        }
        command.push(self.script(script));
        command.extend(args.iter().map(|a| a.to_string()));
        command
    }

    /// The Python process's `/proc/PID/cmdline`, joined by spaces, for `command(script,
    /// args)`.
    pub fn python_cmdline(&self, script: &str, args: &[&str]) -> String {
        let command = self.command(script, args);
        let skip = match self.interp.launch {
            Launch::Host { .. } => 0,
            Launch::Chroot { .. } => 2,
        };
        command[skip..].join(" ")
    }

    /// Starts `script ARGS` (stdout and stderr into `<stem>.stdout` / `<stem>.stderr`
    /// here); the process is killed when the guard drops.
    pub fn spawn(&self, script: &str, args: &[&str]) -> ChildGuard {
        let command = self.command(script, args);
        let stem = script.trim_end_matches(".py");
        let stdout = fs::File::create(self.host(&format!("{stem}.stdout"))).expect("stdout");
        let stderr = fs::File::create(self.host(&format!("{stem}.stderr"))).expect("stderr");
        let child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("PYTHONIOENCODING", "utf-8")
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {command:?}: {e}", self.interp.label));
        ChildGuard(child)
    }

    /// What a script started by [`Workdir::spawn`] wrote on stdout and stderr.
    pub fn script_output(&self, script: &str) -> String {
        let stem = script.trim_end_matches(".py");
        let read =
            |ext: &str| fs::read_to_string(self.host(&format!("{stem}.{ext}"))).unwrap_or_default();
        format!(
            "--- {script} stdout ---\n{}--- {script} stderr ---\n{}",
            read("stdout"),
            read("stderr")
        )
    }

    /// Waits for the JSON file `name` (written by `child`, which must keep running) and
    /// parses it. Panics with the script's output if the child exits or after `timeout`.
    pub fn wait_json(
        &self,
        name: &str,
        child: &mut ChildGuard,
        script: &str,
        timeout: Duration,
    ) -> Value {
        let path = self.host(name);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                return serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!(
                        "{}: bad JSON in {}: {e}\n{text}",
                        self.interp.label,
                        path.display()
                    )
                });
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "{}: {script} exited ({status}) before writing {name}\n{}",
                    self.interp.label,
                    self.script_output(script)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {} after {timeout:?}\n{}",
                self.interp.label,
                path.display(),
                self.script_output(script)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads and parses a JSON file of the directory.
    pub fn read_json(&self, name: &str) -> Result<Value, String> {
        let path = self.host(name);
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("bad JSON in {}: {e}", path.display()))
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "{}: kept the test directory {}",
                self.interp.label,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `py-spy` process started by [`spawn_py_spy`], its output collected in the background.
pub struct RunningPySpy {
    args: Vec<String>,
    child: ChildGuard,
    started: Instant,
    out_reader: thread::JoinHandle<Vec<u8>>,
    /// Everything py-spy wrote on stderr so far (the reader appends as it reads).
    err_buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    err_reader: thread::JoinHandle<()>,
}

/// Starts the binary under test with `args` (stdin from /dev/null, output piped).
pub fn spawn_py_spy<S: AsRef<str>>(args: &[S]) -> RunningPySpy {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let started = Instant::now();
    let mut child = Command::new(PY_SPY)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PY_SPY}: {e}"));
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = err_buffer.clone();
    let err_reader = thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match err.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    RunningPySpy {
        args,
        child: ChildGuard(child),
        started,
        out_reader,
        err_buffer,
        err_reader,
    }
}

impl RunningPySpy {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// What py-spy wrote on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err_buffer.lock().unwrap()).into_owned()
    }

    /// Waits until stderr has a line starting with `prefix`; false if py-spy exits first
    /// or `timeout` passes.
    pub fn wait_for_stderr_line(&mut self, prefix: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_so_far().lines().any(|l| l.starts_with(prefix)) {
                return true;
            }
            if !self.running() {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits at most `timeout` for it to exit; says whether it did.
    pub fn exits_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.running() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to py-spy.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain syscall on the pid of a child that has not been reaped yet.
        let rc = unsafe { libc::kill(self.child.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.pid());
    }

    /// Waits for it to exit; kills it and panics after `timeout`. Returns the run and the
    /// wall time from start to exit.
    pub fn wait(mut self, timeout: Duration) -> (Run, Duration) {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("wait for py-spy") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.0.kill();
                let status = self.child.0.wait().expect("reap py-spy");
                let stdout = String::from_utf8_lossy(&self.out_reader.join().unwrap_or_default())
                    .into_owned();
                let _ = self.err_reader.join();
                let stderr = String::from_utf8_lossy(&self.err_buffer.lock().unwrap()).into_owned();
                panic!(
                    "py-spy {} did not finish within {timeout:?} ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                    self.args.join(" ")
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let stdout =
            String::from_utf8_lossy(&self.out_reader.join().unwrap_or_default()).into_owned();
        let _ = self.err_reader.join();
        let run = Run {
            args: self.args.clone(),
            status,
            stdout,
            stderr: String::from_utf8_lossy(&self.err_buffer.lock().unwrap()).into_owned(),
        };
        (run, elapsed)
    }
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `t`, `T`, `Z`...), if the process
/// exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The contract's short filename: the part after the rightmost `/site-packages/`,
/// `/dist-packages/` or `/lib/pythonX.Y/` (also `pythonX.Yt/` of free-threaded builds)
/// component, else the basename. Pseudo-filenames such as `<string>` or
/// `<made-up/фантом.py>` are not paths and stay whole.
pub fn short_filename(path: &str) -> String {
    if path.starts_with('<') && path.ends_with('>') {
        return path.to_string();
    }
    let mut start: Option<usize> = None;
    let mut consider = |candidate: usize| {
        if !matches!(start, Some(s) if s >= candidate) {
            start = Some(candidate);
        }
    };
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some(i) = path.rfind(marker) {
            consider(i + marker.len());
        }
    }
    for (i, marker) in path.match_indices("/lib/python") {
        let rest = &path[i + marker.len()..];
        if let Some(len) = python_dir_version_len(rest) {
            consider(i + marker.len() + len + 1);
        }
    }
    match start {
        Some(s) => path[s..].to_string(),
        None => path.rsplit('/').next().unwrap_or(path).to_string(),
    }
}

/// If `rest` starts with `X.Y/` or `X.Yt/` (digits), the length of `X.Y` / `X.Yt`.
fn python_dir_version_len(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let begin = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > begin
    };
    if !digits(&mut i) || bytes.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    if !digits(&mut i) {
        return None;
    }
    if bytes.get(i) == Some(&b't') {
        i += 1;
    }
    (bytes.get(i) == Some(&b'/')).then_some(i)
}

/// Whether the tests run as root (needed to mount, to act as another user, to chown).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `command` with stdin from /dev/null and its output captured; kills it after
/// `timeout`. With `interrupt`, sends SIGINT after that long to the command's first child
/// if it has one (py-spy run under strace), else to the command itself.
pub fn output_within(
    command: &mut Command,
    timeout: Duration,
    interrupt: Option<Duration>,
) -> std::process::Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let deadline = Instant::now() + timeout;
    let watchdog = thread::spawn(move || {
        if let Some(after) = interrupt {
            thread::sleep(after);
            let children =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            let target = children
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(pid);
            // SAFETY: plain syscall on our child or its child, both still running.
            unsafe { libc::kill(target, libc::SIGINT) };
        }
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            if fs::metadata(format!("/proc/{pid}")).is_err() {
                return;
            }
        }
        // SAFETY: plain syscall; the pid is our unreaped child until wait_with_output.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("wait");
    drop(watchdog);
    out
}

/// A pid that no process has right now.
pub fn unused_pid() -> u32 {
    let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (2..max)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("a free pid")
}

/// The number of the one line of `tests/scripts/<script>` that ends with `# <marker>`:
/// tests find the lines they expect through marker comments, not typed-in numbers.
pub fn marker_line(script: &str, marker: &str) -> u32 {
    let path = scripts_dir().join(script);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let suffix = format!("# {marker}");
    let hits: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_end().ends_with(&suffix))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one line ending with {suffix:?} in {}",
        path.display()
    );
    hits[0]
}

/// The first child of process `pid` (from `/proc/PID/task/PID/children`).
pub fn first_child(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether process `pid` maps a file whose path contains `needle`.
pub fn maps_contain(pid: u32, needle: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(needle))
}

/// `TracerPid` of process `pid` (0: none, or unreadable).
pub fn tracer_pid(pid: u32) -> u32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::short_filename;

    #[test]
    fn short_filenames() {
        assert_eq!(short_filename("/abs/app.py"), "app.py");
        assert_eq!(short_filename("app.py"), "app.py");
        assert_eq!(
            short_filename("/root/.pyenv/versions/3.12.1/lib/python3.12/threading.py"),
            "threading.py"
        );
        assert_eq!(
            short_filename("/x/lib/python3.13t/concurrent/futures/thread.py"),
            "concurrent/futures/thread.py"
        );
        assert_eq!(
            short_filename("/usr/lib/python3.11/site-packages/pkg/mod.py"),
            "pkg/mod.py"
        );
        assert_eq!(
            short_filename("/usr/lib/python3/dist-packages/a.py"),
            "a.py"
        );
        assert_eq!(short_filename("<made-up/фантом.py>"), "<made-up/фантом.py>");
        assert_eq!(short_filename("<string>"), "<string>");
        assert_eq!(short_filename("/lib/python3/x.py"), "x.py");
    }
}
