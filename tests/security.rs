//! Security, one table per property:
//!
//! - py-spy never writes to the target: each command runs under `strace`, and the trace
//!   must show reads (`process_vm_readv`) and only the ptrace requests that stop and
//!   resume threads — no `PTRACE_POKE*`/`SET*`, no `process_vm_writev`, no
//!   `/proc/PID/mem`.
//! - `sudo py-spy record -- prog` runs prog as the user who ran sudo (SUDO_UID/SUDO_GID),
//!   with their groups and home, and gives them the profile file. sudo itself is not
//!   needed to test this: root with the three variables sudo sets is exactly what py-spy
//!   sees under sudo.
//! - The output file is never written through a symlink planted by another user.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::ChildGuard;

/// Python on every machine, readable by any user (pyenv's live under /root).
const PYTHON: &str = "/usr/bin/python3.11";
const SCRIPT: &str = "busy_ids.py";
const NOBODY: u32 = 65534;

/// Skips (or, under CI, fails) a test that needs root or a tool.
fn can_run(test: &str, needs: &[&str]) -> bool {
    let mut missing: Vec<String> = needs
        .iter()
        .filter(|tool| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
                .unwrap_or(false)
        })
        .map(|t| format!("{t} (run tests/provision)"))
        .collect();
    if !common::is_root() {
        missing.push("root".into());
    }
    if !Path::new(PYTHON).exists() {
        missing.push(PYTHON.into());
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("SKIP {test}: needs {}", missing.join(", "));
    assert!(!common::in_ci(), "{message}");
    println!("{message}");
    false
}

/// A scratch directory any user may read and write (the script is copied in, so a
/// program running as `nobody` can read it wherever the checkout is).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("py-spy-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::copy(common::scripts_dir().join(SCRIPT), dir.join(SCRIPT)).unwrap();
        fs::set_permissions(dir.join(SCRIPT), fs::Permissions::from_mode(0o644)).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn run(command: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    run_and_interrupt(command, timeout, None)
}

/// Runs `command`; kills it after `timeout`. With `interrupt`, py-spy gets SIGINT after
/// that long (the command's child when it runs under strace).
fn run_and_interrupt(
    command: &mut Command,
    timeout: Duration,
    interrupt: Option<Duration>,
) -> (Option<i32>, String, String) {
    let out = common::output_within(command, timeout, interrupt);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Folded lines of a raw profile: (stack, count).
fn folded(path: &str) -> Vec<(String, u64)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (stack, n) = l.rsplit_once(' ')?;
            Some((stack.to_string(), n.parse().ok()?))
        })
        .collect()
}

// --------------------------------------------------------- never writes --

/// ptrace requests that stop, inspect the stop of, and resume a thread: all py-spy may
/// use. Everything else (POKE*, SETREGS, SETSIGINFO, SETOPTIONS with exit-kill…) could
/// change the target.
const ALLOWED_PTRACE: &[&str] = &[
    "PTRACE_SEIZE",
    "PTRACE_INTERRUPT",
    "PTRACE_DETACH",
    "PTRACE_CONT",
    "PTRACE_LISTEN",
    "PTRACE_GETSIGINFO",
    "PTRACE_GETEVENTMSG",
];

struct TraceRow {
    what: &'static str,
    /// py-spy's arguments; `{pid}` is the target, `{dir}` the scratch directory.
    args: &'static [&'static str],
    /// Whether this command stops the target (so ptrace must appear in the trace).
    pauses: bool,
    /// A command that runs until told: py-spy gets SIGINT after this long.
    stop_after: Option<Duration>,
}

#[rustfmt::skip]
const TRACE_ROWS: &[TraceRow] = &[
    TraceRow { what: "dump", args: &["dump", "--pid", "{pid}"], pauses: true, stop_after: None },
    TraceRow { what: "dump --locals", args: &["dump", "--pid", "{pid}", "--locals"], pauses: true, stop_after: None },
    TraceRow { what: "dump --nonblocking", args: &["dump", "--pid", "{pid}", "--nonblocking"], pauses: false, stop_after: None },
    TraceRow { what: "record", args: &["record", "--pid", "{pid}", "-d", "1", "-r", "200", "-f", "raw", "-o", "{dir}/r.txt"], pauses: true, stop_after: None },
    TraceRow { what: "record --idle --threads --gil", args: &["record", "--pid", "{pid}", "-d", "1", "-i", "-t", "-g", "-f", "raw", "-o", "{dir}/r2.txt"], pauses: true, stop_after: None },
    TraceRow { what: "record --nonblocking", args: &["record", "--pid", "{pid}", "-d", "1", "--nonblocking", "-f", "raw", "-o", "{dir}/r3.txt"], pauses: false, stop_after: None },
    TraceRow { what: "top (plain text)", args: &["top", "--pid", "{pid}", "--delay", "0.3"], pauses: true, stop_after: Some(Duration::from_secs(1)) },
];

/// What a strace log shows py-spy doing to the target; problems found, and a count of
/// the reads and ptrace calls seen.
fn audit_trace(log: &str, target: u32) -> (Vec<String>, usize, usize) {
    let mut problems = Vec::new();
    let (mut reads, mut ptraces) = (0, 0);
    let mem = format!("/proc/{target}/mem");
    for line in log.lines() {
        if line.contains("process_vm_writev(") {
            problems.push(format!("writes memory: {line}"));
        }
        if line.contains("process_vm_readv(") {
            reads += 1;
        }
        if let Some(rest) = line.split("ptrace(").nth(1) {
            ptraces += 1;
            let request = rest.split([',', ')']).next().unwrap_or("");
            if !ALLOWED_PTRACE.contains(&request) {
                problems.push(format!("ptrace request {request}: {line}"));
            }
        }
        if line.contains(&mem) {
            problems.push(format!("opens the target's memory file: {line}"));
        }
        let proc_dir = format!("\"/proc/{target}/");
        let writable = line.contains("O_WRONLY") || line.contains("O_RDWR");
        if line.contains("open") && line.contains(&proc_dir) && writable {
            problems.push(format!(
                "opens a /proc file of the target for writing: {line}"
            ));
        }
    }
    (problems, reads, ptraces)
}

#[test]
fn never_writes_to_the_target() {
    if !can_run("never_writes_to_the_target", &["strace"]) {
        return;
    }
    let scratch = Scratch::new("no-writes");
    let ids = scratch.path("ids.json");
    let target = ChildGuard(
        Command::new(PYTHON)
            .args([&scratch.path(SCRIPT), &ids, "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start python"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Path::new(&ids).exists() {
        assert!(Instant::now() < deadline, "the target did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = target.pid().to_string();
    let mut failures = Vec::new();
    for row in TRACE_ROWS {
        let args: Vec<String> = row
            .args
            .iter()
            .map(|a| {
                a.replace("{pid}", &pid)
                    .replace("{dir}", &scratch.0.display().to_string())
            })
            .collect();
        let log = scratch.path("strace.log");
        let (code, _, stderr) = run_and_interrupt(
            Command::new("strace")
                .args(["-f", "-qq", "-o", &log])
                .args([
                    "-e",
                    "trace=ptrace,process_vm_readv,process_vm_writev,open,openat",
                ])
                .arg(common::PY_SPY)
                .args(&args),
            Duration::from_secs(30),
            row.stop_after,
        );
        let trace = fs::read_to_string(&log).unwrap_or_default();
        let (mut problems, reads, ptraces) = audit_trace(&trace, target.pid());
        if code != Some(0) {
            problems.push(format!("py-spy exited with {code:?}: {stderr}"));
        }
        if reads == 0 {
            problems.push("no process_vm_readv in the trace: did it trace py-spy?".into());
        }
        if row.pauses && ptraces == 0 {
            problems.push("no ptrace call in the trace of a blocking command".into());
        }
        if !row.pauses && ptraces != 0 {
            problems.push(format!("{ptraces} ptrace calls in --nonblocking mode"));
        }
        println!(
            "{:6} {:32} {reads} reads, {ptraces} ptrace calls",
            if problems.is_empty() { "ok" } else { "FAILED" },
            row.what
        );
        if !problems.is_empty() {
            failures.push(format!("{}: {}", row.what, problems.join("\n  ")));
        }
    }
    let state = common::process_state(target.pid());
    assert!(
        matches!(state, Some('R' | 'S')),
        "target left in state {state:?}"
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn audit_catches_writes() {
    // The audit must be able to fail: feed it the lines it exists to catch.
    let log = "12 ptrace(PTRACE_SEIZE, 34, NULL, 0) = 0\n\
               12 ptrace(PTRACE_POKEDATA, 34, 0x1000, 0x2) = 0\n\
               12 process_vm_writev(34, [...], 1, [...], 1, 0) = 8\n\
               12 openat(AT_FDCWD, \"/proc/34/mem\", O_RDONLY) = 3\n\
               12 openat(AT_FDCWD, \"/proc/34/attr/current\", O_WRONLY) = 3\n\
               12 process_vm_readv(34, [...], 1, [...], 1, 0) = 8\n";
    let (problems, reads, ptraces) = audit_trace(log, 34);
    assert_eq!((reads, ptraces), (1, 2));
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

// ---------------------------------------------------------------- sudo --

struct SudoRow {
    what: &'static str,
    /// py-spy's arguments before `--`; `{dir}` is the scratch directory.
    args: &'static [&'static str],
    /// Extra environment: empty runs as plain root.
    env: &'static [(&'static str, &'static str)],
    /// uid, gid and groups the program must run with, HOME and USER it must see
    /// (`None`: whatever root has).
    uid: u32,
    gid: u32,
    groups: &'static [u32],
    home: Option<&'static str>,
    user: Option<&'static str>,
    /// The profile file, if the command writes one, and who must own it.
    profile: Option<(&'static str, u32)>,
}

const SUDO_NOBODY: &[(&str, &str)] = &[
    ("SUDO_UID", "65534"),
    ("SUDO_GID", "65534"),
    ("SUDO_USER", "nobody"),
];

#[rustfmt::skip]
const SUDO_ROWS: &[SudoRow] = &[
    SudoRow { what: "sudo py-spy record", args: &["record", "-r", "200", "-f", "raw", "-o", "{dir}/sudo.txt"],
              env: SUDO_NOBODY, uid: NOBODY, gid: NOBODY, groups: &[NOBODY], home: Some("/nonexistent"), user: Some("nobody"),
              profile: Some(("sudo.txt", NOBODY)) },
    SudoRow { what: "sudo py-spy top", args: &["top", "--delay", "0.3"],
              env: SUDO_NOBODY, uid: NOBODY, gid: NOBODY, groups: &[NOBODY], home: Some("/nonexistent"), user: Some("nobody"),
              profile: None },
    // sudo run by root itself: nothing to drop.
    SudoRow { what: "sudo (by root) py-spy record", args: &["record", "-r", "200", "-f", "raw", "-o", "{dir}/root-sudo.txt"],
              env: &[("SUDO_UID", "0"), ("SUDO_GID", "0")], uid: 0, gid: 0, groups: &[], home: None, user: None,
              profile: Some(("root-sudo.txt", 0)) },
    SudoRow { what: "root py-spy record", args: &["record", "-r", "200", "-f", "raw", "-o", "{dir}/root.txt"],
              env: &[], uid: 0, gid: 0, groups: &[], home: None, user: None,
              profile: Some(("root.txt", 0)) },
];

#[test]
fn sudo_runs_the_program_as_the_invoking_user() {
    if !can_run("sudo_runs_the_program_as_the_invoking_user", &[]) {
        return;
    }
    let scratch = Scratch::new("sudo");
    let busy_line = common::marker_line(SCRIPT, "BUSY");
    let mut failures = Vec::new();
    for row in SUDO_ROWS {
        let ids = scratch.path("ids.json");
        let _ = fs::remove_file(&ids);
        let dir = scratch.0.display().to_string();
        let mut command = Command::new(common::PY_SPY);
        command
            .args(row.args.iter().map(|a| a.replace("{dir}", &dir)))
            .args(["--", PYTHON, &scratch.path(SCRIPT), &ids, "1.0"])
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env_remove("SUDO_USER")
            .envs(row.env.iter().copied());
        let (code, stdout, stderr) = run(&mut command, Duration::from_secs(30));
        let mut problems = Vec::new();
        if code != Some(0) {
            problems.push(format!("exit status {code:?}"));
        }
        match fs::read_to_string(&ids).map(|t| serde_json::from_str::<Value>(&t)) {
            Ok(Ok(seen)) => {
                let num = |k: &str| seen[k].as_u64().map(|v| v as u32);
                if num("uid") != Some(row.uid) || num("gid") != Some(row.gid) {
                    problems.push(format!(
                        "ran as {seen}, expected uid {} gid {}",
                        row.uid, row.gid
                    ));
                }
                let groups: Vec<u32> = seen["groups"]
                    .as_array()
                    .map(|g| {
                        g.iter()
                            .filter_map(|v| v.as_u64().map(|v| v as u32))
                            .collect()
                    })
                    .unwrap_or_default();
                if row.uid != 0 && groups != row.groups {
                    problems.push(format!("groups {groups:?}, expected {:?}", row.groups));
                }
                if let Some(home) = row.home {
                    if seen["home"] != home {
                        problems.push(format!("HOME {}, expected {home}", seen["home"]));
                    }
                }
                if let Some(user) = row.user {
                    if seen["user"] != user {
                        problems.push(format!("USER {}, expected {user}", seen["user"]));
                    }
                }
            }
            other => problems.push(format!("the program wrote no ids: {other:?}")),
        }
        if let Some((name, owner)) = row.profile {
            let path = scratch.path(name);
            match fs::metadata(&path) {
                Ok(meta) if meta.uid() == owner && meta.gid() == owner => {}
                Ok(meta) => problems.push(format!(
                    "{name} belongs to {}:{}, expected {owner}",
                    meta.uid(),
                    meta.gid()
                )),
                Err(err) => problems.push(format!("{name}: {err}")),
            }
            // The program was profiled, not only started: its busy line is there.
            let busy = format!("busy ({SCRIPT}:{busy_line})");
            let hits: u64 = folded(&path)
                .iter()
                .filter(|(stack, _)| stack.ends_with(&busy))
                .map(|(_, n)| n)
                .sum();
            if hits < 50 {
                problems.push(format!("{hits} samples end in {busy}, expected about 200"));
            }
        } else if !stdout.contains(&format!("busy ({SCRIPT}:{busy_line})")) {
            problems.push("top never showed busy".into());
        }
        println!(
            "{:6} {}",
            if problems.is_empty() { "ok" } else { "FAILED" },
            row.what
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n--- stderr ---\n{stderr}",
                row.what,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ------------------------------------------------------------ symlinks --

struct LinkRow {
    what: &'static str,
    /// Who owns the link at the output path.
    link_owner: u32,
    /// Whether the link must have been followed (else replaced by the profile).
    followed: bool,
}

#[rustfmt::skip]
const LINK_ROWS: &[LinkRow] = &[
    LinkRow { what: "link planted by another user", link_owner: NOBODY, followed: false },
    LinkRow { what: "our own link", link_owner: 0, followed: true },
];

#[test]
fn never_writes_through_a_planted_symlink() {
    if !can_run("never_writes_through_a_planted_symlink", &[]) {
        return;
    }
    let scratch = Scratch::new("symlink");
    let mut failures = Vec::new();
    for row in LINK_ROWS {
        let victim = scratch.path("victim.txt");
        fs::write(&victim, "precious").unwrap();
        let out = scratch.path("profile.txt");
        let _ = fs::remove_file(&out);
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        std::os::unix::fs::lchown(&out, Some(row.link_owner), Some(row.link_owner)).unwrap();
        let (code, _, stderr) = run(
            Command::new(common::PY_SPY)
                .args(["record", "-f", "raw", "-o", &out, "--", PYTHON])
                .args([&scratch.path(SCRIPT), &scratch.path("ids.json"), "0.3"]),
            Duration::from_secs(30),
        );
        let mut problems = Vec::new();
        if code != Some(0) {
            problems.push(format!("exit status {code:?}: {stderr}"));
        }
        let victim_text = fs::read_to_string(&victim).unwrap_or_default();
        let link_kept = fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink());
        let written = if row.followed { &victim } else { &out };
        if row.followed {
            if !link_kept {
                problems.push("our own link was replaced".into());
            }
        } else {
            if victim_text != "precious" {
                problems.push(format!(
                    "the link's target was overwritten: {victim_text:?}"
                ));
            }
            if link_kept {
                problems.push("the planted link is still there".into());
            }
        }
        if !folded(written)
            .iter()
            .any(|(s, _)| s.contains("busy (busy_ids.py:"))
        {
            problems.push(format!("{written} holds no profile"));
        }
        println!(
            "{:6} {}",
            if problems.is_empty() { "ok" } else { "FAILED" },
            row.what
        );
        if !problems.is_empty() {
            failures.push(format!("{}: {}", row.what, problems.join("; ")));
        }
        let _ = fs::remove_file(&out);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
