//! Finding the interpreter on every kind of build.
//!
//! The stripped-binary path: with the interpreter-state symbols ignored, scanning
//! `.PyRuntime`, `.bss` and `.data` must find the very same `PyInterpreterState` the
//! symbols lead to, validated by a stack walk. And on 3.13+, the `_Py_DebugOffsets` the
//! target carries must agree with the layout generated from its headers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use py_spy::interpreter::{find, find_with, Symbols};
use py_spy::process::LinuxProcess;
use py_spy::walker::Walker;

/// Kills the target when the test ends, however it ends.
struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cache() -> String {
    std::env::var("PYSPY_TEST_CACHE").unwrap_or_else(|_| "/var/cache/py-spy-ci".to_string())
}

/// Starts `python` (inside `root` when given) on a script that parks in `parked_here`.
fn start(root: Option<&str>, python: &str) -> Option<Target> {
    let host_path = match root {
        Some(root) => format!("{root}{python}"),
        None => python.to_string(),
    };
    if !Path::new(&host_path).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{host_path} missing in CI (tests/provision installs it)"
        );
        println!("SKIP {python}: {host_path} not found (run tests/provision)");
        return None;
    }
    let script = "import time\ndef parked_here():\n    time.sleep(600)\nparked_here()\n";
    let mut cmd = match root {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg(python);
            c
        }
        None => Command::new(python),
    };
    let child = cmd
        .args(["-c", script])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the interpreter");
    Some(Target(child))
}

fn check(root: Option<&str>, python: &str) {
    let Some(target) = start(root, python) else {
        return;
    };
    let pid = target.0.id() as i32;
    // Retry until the interpreter is up and parked: the walk finds `parked_here`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let process = LinuxProcess::open(pid).expect("open");
        let by_symbol = find(&process);
        let by_scan = find_with(&process, Symbols::Ignore);
        if let (Ok(by_symbol), Ok(by_scan)) = (&by_symbol, &by_scan) {
            // The target is not paused and may still be starting up: a failed walk is retried.
            let mut walker = Walker::new(&process, &by_scan.layout);
            let stack = walker
                .thread_states(by_scan.interp)
                .ok()
                .and_then(|tstates| walker.stack(*tstates.first()?, false).ok());
            if let Some(stack) =
                stack.filter(|s| s.frames.first().map(|f| &*f.name) == Some("parked_here"))
            {
                assert_eq!(by_scan.interp, by_symbol.interp, "{python}");
                assert_eq!(by_scan.layout.version, by_symbol.layout.version);
                assert_eq!(stack.frames[0].line, Some(3), "{python}");
                assert!(
                    by_symbol.debug_offset_mismatches.is_empty(),
                    "{python}: debug offsets disagree with the generated layout: {:?}",
                    by_symbol.debug_offset_mismatches
                );
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{python}: symbol {:?} / scan {:?}",
            by_symbol.err(),
            by_scan.err()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scan_finds_py27() {
    check(None, "/root/.pyenv/versions/2.7.18/bin/python");
}

#[test]
fn scan_finds_py36() {
    check(None, "/root/.pyenv/versions/3.6.15/bin/python");
}

#[test]
fn scan_finds_py39() {
    check(None, "/root/.pyenv/versions/3.9.18/bin/python");
}

#[test]
fn scan_finds_py312() {
    check(None, "/root/.pyenv/versions/3.12.1/bin/python");
}

#[test]
fn scan_finds_py313() {
    check(None, "/root/.pyenv/versions/3.13.0/bin/python");
}

#[test]
fn scan_finds_debian_static_py311() {
    check(None, "/usr/bin/python3.11");
}

#[test]
fn scan_finds_py314_in_chroot() {
    check(
        Some(&format!("{}/sid-root", cache())),
        "/usr/bin/python3.14",
    );
}

#[test]
fn scan_finds_py315_in_chroot() {
    check(
        Some(&format!("{}/sid-root", cache())),
        "/usr/bin/python3.15",
    );
}

#[test]
fn scan_finds_shared_py312_in_chroot() {
    check(
        Some(&format!("{}/sid-root", cache())),
        "/root/.pyenv/versions/3.12.1/bin/python3.12",
    );
}

#[test]
fn scan_finds_free_threaded_py313t() {
    check(None, &format!("{}/python3.13t/bin/python3.13t", cache()));
}
