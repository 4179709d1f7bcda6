//! The workloads of `benches/versus_py_spy.rs` do what the benchmark's rows assume (the
//! benchmark itself is not run here, and nothing is timed):
//!
//! - `spin.py THREADS DEPTH` holds THREADS threads, each exactly DEPTH Python frames deep
//!   with `spin` innermost, as `py-spy dump --json` sees them;
//! - `cpumix.py UNITS` waits for a line on stdin, works, prints its elapsed seconds and
//!   exits 0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{interpreter, run_py_spy, ChildGuard};

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join("workloads")
        .join(name)
}

/// Starts `python script args…` with piped stdin and stdout and waits for its "ready".
fn start(
    python: &Path,
    script: &str,
    args: &[&str],
) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    let mut child = ChildGuard(
        Command::new(python)
            .arg(workload(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", python.display())),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout pipe"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read ready");
    assert_eq!(line.trim(), "ready", "{script} printed {line:?}");
    (child, stdout)
}

/// Frame counts of every thread, innermost function names, from one `dump --json`.
fn stacks(pid: u32) -> Vec<(usize, String)> {
    let run = run_py_spy(
        &["dump", "--pid", &pid.to_string(), "--json"],
        Duration::from_secs(30),
    );
    assert!(run.status.success(), "{}", run.describe());
    let dump: Value = serde_json::from_str(&run.stdout).expect("dump --json is JSON");
    dump["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .map(|thread| {
            let frames = thread["frames"].as_array().expect("frames");
            let innermost = frames
                .first()
                .and_then(|frame| frame["name"].as_str())
                .unwrap_or("")
                .to_string();
            (frames.len(), innermost)
        })
        .collect()
}

#[test]
fn spin_holds_every_thread_at_the_depth_asked() {
    let interp = interpreter("py311");
    if !interp.available() {
        return;
    }
    let python = interp.host_path();
    for (threads, depth) in [(1usize, 10usize), (3, 25)] {
        let (child, _stdout) = start(
            &python,
            "spin.py",
            &[&threads.to_string(), &depth.to_string()],
        );
        let want = vec![(depth, "spin".to_string()); threads];
        // The main thread prints "ready" before it descends itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = stacks(child.pid());
        while got != want && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            got = stacks(child.pid());
        }
        assert_eq!(
            got, want,
            "spin.py {threads} {depth}: (frames, innermost) per thread"
        );
    }
}

#[test]
fn cpumix_works_after_go_and_reports_its_time() {
    let interp = interpreter("py311");
    if !interp.available() {
        return;
    }
    let (mut child, mut stdout) = start(&interp.host_path(), "cpumix.py", &["200"]);
    let mut stdin = child.0.stdin.take().expect("stdin pipe");
    stdin.write_all(b"go\n").expect("write go");
    drop(stdin);
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the result");
    let seconds: f64 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("cpumix.py printed {line:?}"));
    assert!(seconds > 0.0, "cpumix.py printed {seconds}");
    let status = child.0.wait().expect("wait for cpumix.py");
    assert!(status.success(), "cpumix.py ended with {status}");
}
