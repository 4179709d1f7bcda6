//! Integration tests for how `py-spy dump` fails (and does not fail).
//!
//! Contract: on an error the binary exits non-zero and prints exactly one line on stderr,
//! `Error: ...`; it never panics (no `panicked`, no `RUST_BACKTRACE` hint). A closed
//! stdout (`| head -1`) is not an error: exit status 0, nothing on stderr.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_py_spy, ChildGuard, Interpreter, Run, Target};

const TIMEOUT: Duration = Duration::from_secs(30);

fn assert_no_panic(run: &Run) {
    for line in run.stderr.lines() {
        assert!(
            !line.contains("panicked") && !line.contains("RUST_BACKTRACE"),
            "py-spy panicked:\n{}",
            run.describe()
        );
    }
}

/// Asserts a failed run: non-zero exit, exactly one stderr line starting with `Error: `.
/// Returns that line.
fn assert_one_error_line(run: &Run) -> String {
    assert_no_panic(run);
    assert!(
        !run.status.success(),
        "expected a non-zero exit status\n{}",
        run.describe()
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr\n{}",
        run.describe()
    );
    assert!(
        lines[0].starts_with("Error: "),
        "the stderr line does not start with \"Error: \"\n{}",
        run.describe()
    );
    lines[0].to_string()
}

#[test]
fn dump_nonexistent_pid() {
    let pid = common::unused_pid().to_string();
    let run = run_py_spy(&["dump", "--pid", &pid], TIMEOUT);
    let line = assert_one_error_line(&run).to_lowercase();
    assert!(
        [
            "no process",
            "no such process",
            "not found",
            "does not exist"
        ]
        .iter()
        .any(|needle| line.contains(needle)),
        "the error does not say that process {pid} does not exist\n{}",
        run.describe()
    );
}

#[test]
fn dump_non_python_process() {
    let child = Command::new("sleep")
        .arg("100")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let sleeper = ChildGuard(child);
    // Let `sleep` finish exec'ing so that the process really is /bin/sleep: the exe link
    // changes before the new binary is mapped, so wait for the mapping.
    let maps = format!("/proc/{}/maps", sleeper.pid());
    for _ in 0..200 {
        if fs::read_to_string(&maps).is_ok_and(|m| m.contains("/sleep")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = sleeper.pid().to_string();
    let run = run_py_spy(&["dump", "--pid", &pid], TIMEOUT);
    let line = assert_one_error_line(&run);
    assert!(
        line.to_lowercase().contains("python"),
        "the error does not say that the process is not a Python process\n{}",
        run.describe()
    );
}

/// Runs `py-spy ARGS | READER` through `sh -c`; returns (py-spy's exit status as sh saw
/// it, py-spy's stderr, the reader's stdout).
fn dump_into_pipe(args: &[&str], reader: &str) -> (String, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "pyspy-pipe-{}-{}",
        std::process::id(),
        reader.replace(' ', "_")
    ));
    fs::create_dir_all(&dir).expect("create a temporary directory");
    let err_path = dir.join("stderr.txt");
    let rc_path = dir.join("rc.txt");
    let script = format!(
        r#"("$0" "$@" 2>"{err}"; echo $? >"{rc}") | {reader}"#,
        err = err_path.display(),
        rc = rc_path.display()
    );
    let output = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(common::PY_SPY)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let rc = fs::read_to_string(&rc_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    (
        rc.trim().to_string(),
        stderr,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn check_closed_stdout(reader: &str) {
    let Some(interp) = Interpreter::any_host() else {
        let message = "SKIP: no Python interpreter found (run tests/provision)";
        assert!(!common::in_ci(), "{message}");
        println!("{message}");
        return;
    };
    let mut target = Target::start(&interp, "dump_target.py");
    target.wait_truth(Duration::from_secs(30));
    let pid = target.pid.to_string();
    for args in [
        vec!["dump", "--pid", pid.as_str()],
        vec!["dump", "--pid", pid.as_str(), "--locals"],
        vec!["dump", "--pid", pid.as_str(), "--json"],
    ] {
        let (rc, stderr, stdout) = dump_into_pipe(&args, reader);
        let what = format!(
            "py-spy {} | {reader} ({}): exit status {rc:?}\n--- stderr ---\n{stderr}\n--- {reader} output ---\n{stdout}",
            args.join(" "),
            interp.label
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "py-spy panicked: {what}"
        );
        assert_eq!(rc, "0", "expected exit status 0: {what}");
        assert!(stderr.is_empty(), "expected an empty stderr: {what}");
        if reader.starts_with("head") && args.len() == 3 {
            assert!(
                stdout.starts_with(&format!("Process {pid}: ")),
                "unexpected first line: {what}"
            );
        }
    }
}

/// `py-spy dump | head -1`: the reader goes away after the first line.
#[test]
fn dump_into_head() {
    check_closed_stdout("head -n 1");
}

/// `py-spy dump | true`: the reader is gone before py-spy writes anything.
#[test]
fn dump_into_closed_pipe() {
    check_closed_stdout("true");
}

/// A Python process started for an error test, killed when the test ends.
fn sleeping_python() -> ChildGuard {
    let child = Command::new("/root/.pyenv/versions/3.12.1/bin/python")
        .args(["-c", "import time\nwhile True: time.sleep(1)"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start python");
    ChildGuard(child)
}

#[test]
fn dump_without_permission() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!common::in_ci(), "CI must run as root");
        println!("SKIP dump_without_permission: needs root to drop to another user");
        return;
    }
    let target = sleeping_python();
    std::thread::sleep(Duration::from_millis(300));
    let pid = target.0.id().to_string();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::PY_SPY,
        ])
        .args(["dump", "--pid", &pid])
        .output()
        .expect("run py-spy as nobody");
    let run = Run {
        args: vec!["dump".into(), "--pid".into(), pid],
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let line = assert_one_error_line(&run);
    assert!(line.contains("permission denied"), "{line}");
    assert!(line.contains("run as root"), "{line}");
    assert!(line.contains("--cap-add SYS_PTRACE"), "{line}");
    assert!(line.contains("ptrace_scope"), "{line}");
}

#[test]
fn dump_a_process_that_exits_meanwhile() {
    // Targets that live for a few milliseconds: py-spy meets them at every stage of
    // starting and exiting. Whatever it meets, it answers with a dump or one error line.
    let mut outcomes = (0, 0);
    for _ in 0..40 {
        let child = Command::new("/root/.pyenv/versions/3.12.1/bin/python")
            .args(["-c", "import threading\nfor _ in range(3): threading.Thread(target=lambda: None).start()"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start python");
        let guard = ChildGuard(child);
        let pid = guard.0.id().to_string();
        let run = run_py_spy(&["dump", "--pid", &pid], TIMEOUT);
        assert_no_panic(&run);
        if run.status.success() {
            assert!(run.stdout.starts_with("Process "), "{}", run.describe());
            outcomes.0 += 1;
        } else {
            let line = assert_one_error_line(&run);
            assert!(!line.contains("internal error"), "{line}");
            outcomes.1 += 1;
        }
        drop(guard);
    }
    println!(
        "dumps: {} succeeded, {} failed cleanly",
        outcomes.0, outcomes.1
    );
    assert!(outcomes.1 > 0, "no run met an exiting process");
}

#[test]
fn target_keeps_running_after_a_dump() {
    let target = sleeping_python();
    std::thread::sleep(Duration::from_millis(300));
    let pid = target.0.id();
    let run = run_py_spy(&["dump", "--pid", &pid.to_string()], TIMEOUT);
    assert!(run.status.success(), "{}", run.describe());
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    assert!(
        matches!(state, Some('S' | 'R')),
        "target left in state {state:?}"
    );
    assert!(fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .any(|l| l.starts_with("TracerPid:") && l.ends_with("\t0")));
}
