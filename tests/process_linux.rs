//! `LinuxProcess` and `Binary` against real CPython processes (pyenv builds under
//! /root/.pyenv/versions, and Debian's /usr/bin/python3.11). A missing interpreter skips its
//! test with a message, unless CI=true, where it fails.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use py_spy::binary::Binary;
use py_spy::memory::{MemoryReader, MemoryReaderExt, ReadErrorKind};
use py_spy::process::{
    is_permission_error, AlreadyTraced, LinuxProcess, PermissionDenied, Process, ThreadActivity,
};

/// The interpreter of a pyenv version (`3.12.1` → `.../bin/python3.12`), or `None` (after
/// saying why) if it is not installed. Under CI=true a missing interpreter fails the test.
fn pyenv_python(version: &str) -> Option<PathBuf> {
    let short: Vec<&str> = version.split('.').take(2).collect();
    let exe = PathBuf::from(format!(
        "/root/.pyenv/versions/{version}/bin/python{}",
        short.join(".")
    ));
    require(exe)
}

/// `exe` if it exists; otherwise skip (or fail under CI=true).
fn require(exe: PathBuf) -> Option<PathBuf> {
    if exe.exists() {
        return Some(exe);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing (CI=true: not skipping)", exe.display());
    }
    eprintln!("skipping: {} is not installed", exe.display());
    None
}

/// A Python process running a script; killed and reaped when dropped.
struct Target {
    child: Child,
    out: BufReader<ChildStdout>,
    /// Held open so that a script blocked reading stdin stays blocked.
    _stdin: ChildStdin,
    /// A line already read (while checking the target started), returned by `line` first.
    first_line: Option<String>,
}

impl Target {
    fn spawn(exe: &Path, script: &str, args: &[&str]) -> Target {
        let mut cmd = Command::new(exe);
        cmd.arg("-c").arg(script).args(args);
        Target::run(cmd)
    }

    /// Starts `cmd`, which must end up (by `exec`, keeping the pid) running Python.
    fn run(mut cmd: Command) -> Target {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let stdin = child.stdin.take().expect("stdin");
        Target {
            child,
            out,
            _stdin: stdin,
            first_line: None,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line the script prints, split on whitespace.
    fn line(&mut self) -> Vec<String> {
        let mut s = self.first_line.take().unwrap_or_default();
        if s.is_empty() {
            self.out.read_line(&mut s).expect("reading from python");
        }
        assert!(!s.is_empty(), "python exited before printing");
        s.split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex number")
}

/// State letter of every thread of `pid`, by tid.
fn thread_states(pid: i32) -> HashMap<i32, char> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Ok(stat) = fs::read_to_string(entry.path().join("stat")) {
            if let Some(i) = stat.rfind(')') {
                if let Some(c) = stat[i + 1..].trim_start().chars().next() {
                    out.insert(tid, c);
                }
            }
        }
    }
    out
}

/// Polls `f` until it returns true or `secs` pass.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds the mapped file whose name starts with `prefix` (e.g. `libpython3.12`).
fn mapped_path(process: &LinuxProcess, prefix: &str) -> PathBuf {
    process
        .maps()
        .unwrap()
        .into_iter()
        .filter_map(|m| m.path)
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("{prefix} not mapped"))
}

// ---------------------------------------------------------------------------------------
// LinuxProcess
// ---------------------------------------------------------------------------------------

const THREADS_SCRIPT: &str = r#"
import sys, threading, time
ids = {}
ev = threading.Event()
def sleeper():
    ids['sleeper'] = threading.get_native_id()
    time.sleep(100000)
def waiter():
    ids['waiter'] = threading.get_native_id()
    ev.wait()
def spinner():
    ids['spinner'] = threading.get_native_id()
    while True:
        pass
for f in (sleeper, waiter, spinner):
    threading.Thread(target=f, daemon=True).start()
while len(ids) < 3:
    time.sleep(0.01)
print(threading.get_native_id(), ids['sleeper'], ids['waiter'], ids['spinner'], flush=True)
sys.stdin.readline()
"#;

#[test]
fn threads_and_their_activity() {
    for version in ["3.12.1", "3.8.18", "3.13.0"] {
        let Some(exe) = pyenv_python(version) else {
            continue;
        };
        let mut t = Target::spawn(&exe, THREADS_SCRIPT, &[]);
        let ids: Vec<i32> = t.line().iter().map(|s| s.parse().unwrap()).collect();
        let (main, sleeper, waiter, spinner) = (ids[0], ids[1], ids[2], ids[3]);
        assert_eq!(main, t.pid());
        let p = LinuxProcess::open(t.pid()).unwrap();
        let mut others = vec![sleeper, waiter, spinner];
        others.sort();
        let mut expected = vec![main];
        expected.extend(others);
        assert_eq!(
            p.threads().unwrap(),
            expected,
            "{version}: main first, then sorted"
        );

        let want = [
            (main, ThreadActivity::Idle), // blocked reading stdin
            (sleeper, ThreadActivity::Idle),
            (waiter, ThreadActivity::Idle),
            (spinner, ThreadActivity::Active),
        ];
        // The threads print their ids just before blocking: give them a moment to get there.
        let settled = eventually(5, || {
            want.iter()
                .all(|&(tid, a)| p.thread_activity(tid).ok() == Some(a))
        });
        let got: Vec<_> = want
            .iter()
            .map(|&(tid, _)| p.thread_activity(tid).unwrap())
            .collect();
        assert!(settled, "{version}: activity {got:?}, wanted {want:?}");
        // Stable, not a lucky moment: ask again a few times.
        for _ in 0..20 {
            for &(tid, a) in &want {
                assert_eq!(p.thread_activity(tid).unwrap(), a, "{version} thread {tid}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(p.thread_activity(i32::MAX).is_err());
    }
}

const MEMORY_SCRIPT: &str = r#"
import ctypes, sys
buf = ctypes.create_string_buffer(b"py-spy reads this", 32)
sys.stdout.write("%x\n" % ctypes.addressof(buf))
sys.stdout.flush()
sys.stdin.readline()
"#;

#[test]
fn reads_memory_command_line_exe_and_maps() {
    let Some(exe) = pyenv_python("3.12.1") else {
        return;
    };
    let mut t = Target::spawn(&exe, MEMORY_SCRIPT, &["an arg", "x"]);
    let addr = hex(&t.line()[0]);
    let p = LinuxProcess::open(t.pid()).unwrap();
    assert_eq!(p.pid(), t.pid());
    assert_eq!(p.read_c_string(addr, 64).unwrap(), b"py-spy reads this");
    let mut buf = [0u8; 6];
    p.read(addr, &mut buf).unwrap();
    assert_eq!(&buf, b"py-spy");

    assert_eq!(
        p.command_line().unwrap(),
        vec![exe.to_str().unwrap(), "-c", MEMORY_SCRIPT, "an arg", "x"]
    );
    assert_eq!(p.exe_path().unwrap(), fs::canonicalize(&exe).unwrap());

    let maps = p.maps().unwrap();
    let holding = maps
        .iter()
        .find(|m| m.start <= addr && addr < m.end)
        .unwrap();
    assert!(holding.read && holding.write && !holding.exec);
    // Reads that leave mapped memory fail whole, with BadAddress.
    let gap = maps
        .iter()
        .find(|m| m.read && !maps.iter().any(|n| n.start == m.end))
        .unwrap();
    let mut two = [0u8; 16];
    let err = p.read(gap.end - 8, &mut two).unwrap_err();
    assert_eq!(err.kind, ReadErrorKind::BadAddress);
    assert_eq!(
        p.read_u64(0x10).unwrap_err().kind,
        ReadErrorKind::BadAddress
    );

    // The mapped library opens, and it is the very file on disk.
    let lib = mapped_path(&p, "libpython3.12");
    let map = maps
        .iter()
        .find(|m| m.path.as_deref() == Some(lib.as_path()))
        .unwrap();
    let f = p.open_mapped_file(map).unwrap();
    assert_eq!(
        f.metadata().unwrap().ino(),
        fs::metadata(&lib).unwrap().ino()
    );
    let anon = maps.iter().find(|m| m.path.is_none()).unwrap();
    assert!(p.open_mapped_file(anon).is_err());
}

#[test]
fn a_dead_process_is_reported_gone() {
    let Some(exe) = pyenv_python("3.12.1") else {
        return;
    };
    let mut t = Target::spawn(&exe, MEMORY_SCRIPT, &[]);
    let addr = hex(&t.line()[0]);
    let pid = t.pid();
    let p = LinuxProcess::open(pid).unwrap();
    assert!(p.read_u64(addr).is_ok());

    // Killed but not reaped: a zombie, with a /proc entry but no memory.
    t.child.kill().unwrap();
    assert!(eventually(5, || thread_states(pid).get(&pid) == Some(&'Z')));
    assert_eq!(
        p.read_u64(addr).unwrap_err().kind,
        ReadErrorKind::ProcessGone
    );
    let err = LinuxProcess::open(pid).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("process {pid} is a zombie")),
        "{err}"
    );

    // Reaped: nothing left at all.
    t.child.wait().unwrap();
    assert_eq!(
        p.read_u64(addr).unwrap_err().kind,
        ReadErrorKind::ProcessGone
    );
    assert!(p.threads().is_err());
    assert!(p.maps().is_err());
    assert!(p.pause().is_err());
    assert_eq!(
        LinuxProcess::open(pid).unwrap_err().to_string(),
        format!("no process with pid {pid}")
    );
}

#[test]
fn a_thread_id_is_not_a_process() {
    let Some(exe) = pyenv_python("3.12.1") else {
        return;
    };
    let mut t = Target::spawn(&exe, THREADS_SCRIPT, &[]);
    let sleeper: i32 = t.line()[1].parse().unwrap();
    let err = LinuxProcess::open(sleeper).unwrap_err().to_string();
    assert!(
        err.contains(&format!("thread of process {}", t.pid())),
        "{err}"
    );
}

/// Counts forever in the main thread, publishing the count to a file (atomically, by
/// rename) every few thousand iterations, while a second thread sleeps in short naps.
const COUNTER_SCRIPT: &str = r#"
import os, sys, threading, time
path = sys.argv[1]
def napper():
    while True:
        time.sleep(0.001)
threading.Thread(target=napper, daemon=True).start()
print("ready", flush=True)
n = 0
while True:
    n += 1
    if n % 5000 == 0:
        with open(path + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(path + ".tmp", path)
"#;

/// Threads are born and die all the time here.
const CHURN_SCRIPT: &str = r#"
import os, sys, threading
path = sys.argv[1]
def work():
    sum(range(100))
print("ready", flush=True)
n = 0
while True:
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts: t.start()
    for t in ts: t.join()
    n += 1
    if n % 20 == 0:
        with open(path + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(path + ".tmp", path)
"#;

struct Counter {
    path: PathBuf,
}

impl Counter {
    fn new(name: &str) -> Counter {
        let path = std::env::temp_dir().join(format!("py-spy-{name}-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        Counter { path }
    }
    fn value(&self) -> u64 {
        fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
    /// Whether the count grows past its current value within a few seconds.
    fn grows(&self) -> bool {
        let before = self.value();
        eventually(5, || self.value() > before)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(self.path.with_extension("tmp"));
    }
}

/// Every thread of `pid` is in a ptrace stop (or already dead).
fn all_stopped(pid: i32) -> bool {
    let states = thread_states(pid);
    !states.is_empty() && states.values().all(|c| matches!(c, 't' | 'Z' | 'X'))
}

/// No thread of `pid` is in a ptrace stop.
fn none_stopped(pid: i32) -> bool {
    thread_states(pid).values().all(|&c| c != 't')
}

/// A counting target. Fields drop in order: the target is killed before its counter file
/// is removed, so it cannot write the file again afterwards.
struct Counting {
    target: Target,
    counter: Counter,
    process: LinuxProcess,
}

fn start_counter(script: &str, name: &str) -> Option<Counting> {
    let exe = pyenv_python("3.12.1")?;
    let counter = Counter::new(name);
    let mut t = Target::spawn(&exe, script, &[counter.path.to_str().unwrap()]);
    assert_eq!(t.line(), vec!["ready"]);
    assert!(counter.grows(), "target never started counting");
    let p = LinuxProcess::open(t.pid()).unwrap();
    Some(Counting {
        target: t,
        counter,
        process: p,
    })
}

#[test]
fn pause_stops_everything_and_resumes_on_drop() {
    let Some(c) = start_counter(COUNTER_SCRIPT, "pause") else {
        return;
    };
    // Borrowed, not moved out, so that `c` drops its fields in order.
    let (t, counter, p) = (&c.target, &c.counter, &c.process);
    let pid = t.pid();
    assert_eq!(p.threads().unwrap().len(), 2);
    for _ in 0..3 {
        let guard = p.pause().unwrap();
        assert!(
            all_stopped(pid),
            "states while paused: {:?}",
            thread_states(pid)
        );
        let frozen = counter.value();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(counter.value(), frozen, "the target ran while paused");
        drop(guard);
        assert!(
            eventually(5, || none_stopped(pid)),
            "{:?}",
            thread_states(pid)
        );
        assert!(counter.grows(), "the target did not resume");
    }
}

#[test]
fn a_panic_while_paused_still_resumes() {
    let Some(c) = start_counter(COUNTER_SCRIPT, "panic") else {
        return;
    };
    // Borrowed, not moved out, so that `c` drops its fields in order.
    let (t, counter, p) = (&c.target, &c.counter, &c.process);
    let pid = t.pid();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = p.pause().unwrap();
        assert!(all_stopped(pid));
        panic!("deliberate panic while the target is paused");
    }));
    assert!(result.is_err());
    assert!(
        eventually(5, || none_stopped(pid)),
        "{:?}",
        thread_states(pid)
    );
    assert!(counter.grows(), "the target did not resume after the panic");
}

/// Counts in a C integer as fast as Python can, after printing the integer's address.
const SPIN_COUNTER_SCRIPT: &str = r#"
import ctypes, sys
count = ctypes.c_uint64(0)
print(hex(ctypes.addressof(count)), flush=True)
while True:
    count.value += 1
"#;

/// A nudge lets the one thread run and stops it again, with both kinds of pause (the one
/// `dump` makes and the held one of `record` and `top`); a thread the pause did not stop,
/// or one in a group stop, is not let run. Letting a SIGSTOPped process go leaves it
/// stopped, and returns (a held one used to wait forever).
#[test]
fn a_nudge_lets_one_paused_thread_run_and_stops_it_again() {
    let Some(exe) = pyenv_python("3.12.1") else {
        return;
    };
    for held in [false, true] {
        let mut t = Target::spawn(&exe, SPIN_COUNTER_SCRIPT, &[]);
        let at = hex(&t.line()[0]);
        let pid = t.pid();
        // The tracer is per thread, so the whole case runs on one; a hang is a failure.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nudge_case(pid, at, held);
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "held {held}: still going after 60 s: {:?}",
                    thread_states(pid)
                )
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("held {held}: the case failed (see its panic above)")
            }
        }
    }
}

fn nudge_case(pid: i32, at: u64, held: bool) {
    let p = LinuxProcess::open(pid).unwrap();
    let count = || p.read_u64(at).unwrap();
    let before = count();
    assert!(
        eventually(5, || count() > before),
        "the target never counted"
    );
    if held {
        p.keep_attached();
    }
    let mut guard = p.pause().unwrap();
    let frozen = count();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(count(), frozen, "held {held}: the target ran while paused");
    assert!(!guard
        .nudge(pid + 100_000, Duration::from_millis(1))
        .unwrap());
    assert!(guard.nudge(pid, Duration::from_millis(20)).unwrap());
    assert!(all_stopped(pid), "held {held}: {:?}", thread_states(pid));
    let nudged = count();
    assert!(nudged > frozen, "held {held}: the nudge did not let it run");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(count(), nudged, "held {held}: it ran on after the nudge");
    drop(guard);
    assert!(
        eventually(5, || count() > nudged),
        "held {held}: not resumed"
    );

    // SIGSTOPped, the process stays stopped: a nudge must not let it run.
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // Held, the stop is reported to us, and goes on into a group stop once we pass the
    // signal on, which the sampler's sleep does.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !thread_states(pid).values().all(|&c| c == 'T' || c == 't') {
        py_spy::process::sleep(Duration::from_millis(10));
    }
    py_spy::process::sleep(Duration::from_millis(50));
    let mut guard = p.pause().unwrap();
    let stopped = count();
    assert!(
        !guard.nudge(pid, Duration::from_millis(20)).unwrap(),
        "held {held}"
    );
    assert_eq!(count(), stopped, "held {held}: a group-stopped thread ran");
    drop(guard);
    drop(p);
    // Detached, it wakes up only to go back into its group stop.
    assert!(
        eventually(5, || thread_states(pid).values().all(|&c| c == 'T')),
        "held {held}: let go, it must be stopped, untraced: {:?}",
        thread_states(pid)
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        count_of(pid, at),
        stopped,
        "held {held}: the SIGSTOP was lost"
    );
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(
        eventually(5, || count_of(pid, at) > stopped),
        "held {held}: the SIGCONT did not resume it"
    );
}

/// The C integer at `at` in process `pid`, read through a fresh handle.
fn count_of(pid: i32, at: u64) -> u64 {
    LinuxProcess::open(pid).unwrap().read_u64(at).unwrap()
}

#[test]
fn pausing_an_already_traced_process_names_the_tracer() {
    let Some(c) = start_counter(COUNTER_SCRIPT, "traced") else {
        return;
    };
    // Borrowed, not moved out, so that `c` drops its fields in order.
    let (t, counter, p) = (&c.target, &c.counter, &c.process);
    let pid = t.pid();
    let first = p.pause().unwrap();
    // A second tracer (here: a second attach, from this thread) is refused with EPERM by
    // the kernel; that is not a privilege problem, and the error says who holds it.
    let err = match p.pause() {
        Ok(_) => panic!("second pause succeeded"),
        Err(e) => e,
    };
    assert!(!is_permission_error(&err), "{err:#}");
    // SAFETY: gettid has no preconditions.
    let tracer = unsafe { libc::gettid() };
    let traced = err
        .downcast_ref::<AlreadyTraced>()
        .unwrap_or_else(|| panic!("not an AlreadyTraced error: {err:#}"));
    assert!(
        traced.0.starts_with(&format!(
            "process {pid} is already traced by process {tracer} ("
        )),
        "{}",
        traced.0
    );
    assert!(traced.0.contains("pass --nonblocking"), "{}", traced.0);
    // Context added by a caller does not hide it.
    assert!(err
        .context("while pausing")
        .downcast_ref::<AlreadyTraced>()
        .is_some());
    // The failed attempt did not release the first pause.
    assert!(all_stopped(pid));
    drop(first);
    assert!(eventually(5, || none_stopped(pid)));
    assert!(counter.grows());
    assert!(!is_permission_error(&anyhow::anyhow!("unrelated")));
    // A refusal stays recognisable under a caller's context (the real one, another
    // user's process, is in tests/bad_input.rs).
    let denied = anyhow::Error::new(PermissionDenied("permission denied".into()));
    assert!(is_permission_error(&denied.context("while pausing")));
}

#[test]
fn pause_catches_threads_that_come_and_go() {
    let Some(c) = start_counter(CHURN_SCRIPT, "churn") else {
        return;
    };
    // Borrowed, not moved out, so that `c` drops its fields in order.
    let (t, counter, p) = (&c.target, &c.counter, &c.process);
    let pid = t.pid();
    for _ in 0..30 {
        let guard = p.pause().unwrap();
        assert!(
            all_stopped(pid),
            "states while paused: {:?}",
            thread_states(pid)
        );
        drop(guard);
        assert!(
            eventually(5, || none_stopped(pid)),
            "{:?}",
            thread_states(pid)
        );
    }
    assert!(counter.grows(), "the target did not resume");
}

/// The main thread leaves (pthread_exit) while another thread keeps counting: the process
/// lives on with a zombie main thread, which ptrace refuses with EPERM.
const ZOMBIE_MAIN_SCRIPT: &str = r#"
import ctypes, os, sys, threading
path = sys.argv[1]
def count():
    n = 0
    while True:
        n += 1
        if n % 5000 == 0:
            with open(path + ".tmp", "w") as f:
                f.write(str(n))
            os.replace(path + ".tmp", path)
threading.Thread(target=count).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"#;

#[test]
fn pause_skips_a_zombie_main_thread() {
    let Some(c) = start_counter(ZOMBIE_MAIN_SCRIPT, "zombie-main") else {
        return;
    };
    let (t, counter, p) = (&c.target, &c.counter, &c.process);
    let pid = t.pid();
    assert!(eventually(5, || thread_states(pid).get(&pid) == Some(&'Z')));
    // Memory stays readable (through a live thread) and the process is not "gone".
    let maps = p.maps().unwrap();
    let exe = p.exe_path().unwrap();
    let first = maps
        .iter()
        .find(|m| m.offset == 0 && m.path.as_deref() == Some(exe.as_path()))
        .unwrap();
    assert_eq!(p.read_array::<4>(first.start).unwrap(), *b"\x7fELF");
    assert!(LinuxProcess::open(pid).is_ok());
    let guard = p
        .pause()
        .expect("a zombie main thread is not a permission problem");
    assert!(
        all_stopped(pid),
        "states while paused: {:?}",
        thread_states(pid)
    );
    let frozen = counter.value();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(counter.value(), frozen, "the target ran while paused");
    drop(guard);
    assert!(counter.grows(), "the target did not resume");
}

// ---------------------------------------------------------------------------------------
// Binary
// ---------------------------------------------------------------------------------------

/// Prints the address of `_PyRuntime` as the target's own dynamic linker resolves it, and
/// whether `interp_head` could be cross-checked (older versions).
const RUNTIME_SCRIPT: &str = r#"
import ctypes, sys
lib = ctypes.CDLL(None) if sys.argv[1] == "main" else ctypes.pythonapi
sys.stdout.write("%x\n" % ctypes.addressof(ctypes.c_char.in_dll(lib, "_PyRuntime")))
sys.stdout.flush()
sys.stdin.readline()
"#;

/// Prints what `PyInterpreterState_Head()` returns: the value stored in the static
/// `interp_head` variable of Python 2.7 and 3.6.
const INTERP_HEAD_SCRIPT: &str = r#"
import ctypes, sys
f = ctypes.pythonapi.PyInterpreterState_Head
f.restype = ctypes.c_void_p
sys.stdout.write("%x\n" % f())
sys.stdout.flush()
sys.stdin.readline()
"#;

#[test]
fn py_runtime_in_pyenv_shared_builds() {
    for version in [
        "3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0",
    ] {
        let Some(exe) = pyenv_python(version) else {
            continue;
        };
        let mut t = Target::spawn(&exe, RUNTIME_SCRIPT, &["pythonapi"]);
        let expected = hex(&t.line()[0]);
        let p = LinuxProcess::open(t.pid()).unwrap();
        let maps = p.maps().unwrap();
        let short: Vec<&str> = version.split('.').take(2).collect();
        let lib = mapped_path(&p, &format!("libpython{}", short.join(".")));
        let bin = Binary::load(&p, &maps, &lib).unwrap();
        assert_eq!(bin.symbol("_PyRuntime"), Some(expected), "{version}");
        assert_eq!(bin.path, lib);
        // Shared library: loaded at its lowest mapping, which holds file offset 0.
        let lowest = maps
            .iter()
            .filter(|m| m.path.as_deref() == Some(lib.as_path()))
            .map(|m| m.start)
            .min()
            .unwrap();
        assert_eq!(bin.load_bias, lowest, "{version}");
        // Functions land in .text.
        let text = bin.section(".text").unwrap();
        let f = bin.symbol("PyEval_EvalCode").unwrap();
        assert!(text.addr <= f && f < text.addr + text.size, "{version}");
        if let Some(sec) = bin.section(".PyRuntime") {
            assert_eq!(sec.addr, expected, "{version}: _PyRuntime opens .PyRuntime");
        }
        let data = bin.section(".data").unwrap();
        let mapped = maps
            .iter()
            .any(|m| m.start <= data.addr && data.addr + data.size <= m.end && m.write);
        assert!(mapped, "{version}: .data lies in a writable mapping");
        let full = version.to_string();
        let hits = bin.rodata_strings(|s| s.contains(full.as_str()));
        assert!(!hits.is_empty(), "{version}: no rodata string mentions it");
        // The runtime is readable at the address found.
        assert!(p.read_u64(expected).is_ok());
    }
}

#[test]
fn py_runtime_in_debian_static_python() {
    let Some(exe) = require(PathBuf::from("/usr/bin/python3.11")) else {
        return;
    };
    let mut t = Target::spawn(&exe, RUNTIME_SCRIPT, &["main"]);
    let expected = hex(&t.line()[0]);
    let p = LinuxProcess::open(t.pid()).unwrap();
    let maps = p.maps().unwrap();
    let path = p.exe_path().unwrap();
    let bin = Binary::load(&p, &maps, &path).unwrap();
    assert_eq!(bin.load_bias, 0, "non-PIE executable");
    assert_eq!(bin.symbol("_PyRuntime"), Some(expected));
    assert_eq!(bin.section(".PyRuntime").map(|s| s.addr), Some(expected));
    let versions = bin.rodata_strings(|s| s.starts_with("3.11."));
    assert!(!versions.is_empty(), "version string in .rodata");
}

#[test]
fn interp_head_is_found_in_symtab() {
    for (version, lib_prefix) in [("2.7.18", "libpython2.7"), ("3.6.15", "libpython3.6m")] {
        let Some(exe) = pyenv_python(version) else {
            continue;
        };
        let mut t = Target::spawn(&exe, INTERP_HEAD_SCRIPT, &[]);
        let head = hex(&t.line()[0]);
        assert_ne!(head, 0);
        let p = LinuxProcess::open(t.pid()).unwrap();
        let maps = p.maps().unwrap();
        let lib = mapped_path(&p, lib_prefix);
        let bin = Binary::load(&p, &maps, &lib).unwrap();
        // A local ('b') symbol: only in .symtab.
        let at = bin.symbol("interp_head").unwrap();
        assert_eq!(p.read_u64(at).unwrap(), head, "{version}");
        let bss = bin.section(".bss").unwrap();
        assert!(bss.addr <= at && at < bss.addr + bss.size, "{version}");
    }
}

/// Builds a chroot out of bind mounts in a private mount namespace and runs Python 3.12 in
/// it. From outside, the maps then show `<jail>/root/.pyenv/...`: a path that exists neither
/// on the host (the mounts live in the other namespace) nor under `/proc/PID/root` as is.
/// Returns `None` (after saying why) where namespaces or mounts are not allowed.
fn start_in_chroot(jail: &Path) -> Option<Target> {
    let exe = pyenv_python("3.12.1")?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipping: needs root and unshare(1) to build a chroot");
        return None;
    }
    let jail_s = jail.to_str().expect("utf-8 temp path");
    let setup = format!(
        r#"set -e
for d in usr lib lib64 bin root/.pyenv; do
  if [ -e "/$d" ]; then mkdir -p "{jail_s}/$d"; mount --bind "/$d" "{jail_s}/$d"; fi
done
exec chroot "{jail_s}" "{exe}" -c "$0" sidecar"#,
        exe = exe.display()
    );
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &setup])
        .arg(RUNTIME_SCRIPT);
    let mut t = Target::run(cmd);
    let mut s = String::new();
    if t.out.read_line(&mut s).ok()? == 0 {
        eprintln!("skipping: could not build a chroot here (unshare or mount refused)");
        return None;
    }
    t.first_line = Some(s);
    Some(t)
}

#[test]
fn binary_of_a_chrooted_process() {
    let jail = std::env::temp_dir().join(format!("py-spy-jail-{}", std::process::id()));
    fs::create_dir_all(&jail).unwrap();
    let result = std::panic::catch_unwind(|| {
        let Some(mut t) = start_in_chroot(&jail) else {
            return;
        };
        let expected = hex(&t.line()[0]);
        let p = LinuxProcess::open(t.pid()).unwrap();
        let lib = mapped_path(&p, "libpython3.12");
        assert!(lib.starts_with(&jail), "maps show {}", lib.display());
        assert!(!lib.exists(), "the jail's mounts are invisible from here");
        let maps = p.maps().unwrap();
        let bin = Binary::load(&p, &maps, &lib).unwrap();
        assert_eq!(bin.symbol("_PyRuntime"), Some(expected));

        // Again without the capability map_files needs: the path fallbacks must find it.
        let status = Command::new("setpriv")
            .args(["--bounding-set=-sys_admin,-checkpoint_restore", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "chroot_helper_without_cap_sys_admin",
                "--ignored",
            ])
            .env("PYSPY_TEST_CHROOT", format!("{} {expected:x}", t.pid()))
            .status()
            .expect("running setpriv");
        assert!(status.success(), "the helper run failed");
    });
    let _ = fs::remove_dir_all(&jail);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Run by `binary_of_a_chrooted_process` without CAP_SYS_ADMIN; does nothing on its own.
#[test]
#[ignore = "helper, run by binary_of_a_chrooted_process"]
fn chroot_helper_without_cap_sys_admin() {
    let Ok(spec) = std::env::var("PYSPY_TEST_CHROOT") else {
        return;
    };
    let mut parts = spec.split_whitespace();
    let pid: i32 = parts.next().unwrap().parse().unwrap();
    let expected = hex(parts.next().unwrap());
    let p = LinuxProcess::open(pid).unwrap();
    let maps = p.maps().unwrap();
    let lib = mapped_path(&p, "libpython3.12");
    let map = maps
        .iter()
        .find(|m| m.path.as_deref() == Some(lib.as_path()))
        .unwrap();
    let by_range = format!("/proc/{pid}/map_files/{:x}-{:x}", map.start, map.end);
    assert!(
        fs::File::open(by_range).is_err(),
        "map_files should be refused without CAP_SYS_ADMIN"
    );
    let bin = Binary::load(&p, &maps, &lib).unwrap();
    assert_eq!(bin.symbol("_PyRuntime"), Some(expected));
}
