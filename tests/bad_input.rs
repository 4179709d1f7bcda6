//! Bad input, one table: every row is a way to misuse py-spy, with the exit status and the
//! words of the one error line it must produce.
//!
//! Contract (README.md, "Exit status"): a usage error exits 2 and ends with
//! `(see --help)`; any other error exits 1; either way stderr holds exactly one line,
//! `Error: …`, never a panic or a backtrace, and nothing is started or written. A closed
//! stdout (`| head -1`) is not an error: exit status 0 and nothing on stderr.
//!
//! Rows needing root to set up (a process owned by another user) run py-spy as `nobody`
//! through `setpriv`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_py_spy, ChildGuard, Interpreter, Run, Target};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Python on every machine, readable by `nobody` (pyenv's live under /root).
const STATIC_PYTHON: &str = "/usr/bin/python3.11";
/// A Python that a root-owned target runs.
const PYENV_PYTHON: &str = "/root/.pyenv/versions/3.12.1/bin/python";

/// Who runs py-spy for a row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum User {
    Root,
    /// uid and gid 65534, no groups: not allowed to trace root's processes.
    Nobody,
}

/// What the error line must say (compared in lower case).
#[derive(Clone, Copy, Debug)]
enum Says {
    /// Every one of these.
    All(&'static [&'static str]),
    /// At least one of these (for rows whose answer depends on the machine, e.g. pid 1).
    Any(&'static [&'static str]),
}

struct Row {
    what: &'static str,
    user: User,
    /// Arguments after `py-spy`; `{name}` placeholders come from [`Fixtures::fill`].
    args: &'static [&'static str],
    exit: i32,
    says: Says,
    /// Words the line must not contain (a wrong hint is worse than none).
    never: &'static [&'static str],
}

const USAGE: i32 = 2;
const FAILURE: i32 = 1;

const PERMISSION: Says = Says::All(&[
    "permission denied",
    "run as root",
    "--cap-add sys_ptrace",
    "ptrace_scope",
]);
const NOT_PYTHON: &[&str] = &["not a python process", "hint: pass the pid of the python"];

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // ---- which process
    Row { what: "dump, no such pid", user: User::Root, args: &["dump", "--pid", "{unused}"], exit: FAILURE,
          says: Says::All(&["no process with pid {unused}", "check the pid with `ps`"]), never: &[] },
    Row { what: "record, no such pid", user: User::Root, args: &["record", "--pid", "{unused}", "-o", "{out}"], exit: FAILURE,
          says: Says::All(&["no process with pid {unused}"]), never: &[] },
    Row { what: "top, no such pid", user: User::Root, args: &["top", "--pid", "{unused}"], exit: FAILURE,
          says: Says::All(&["no process with pid {unused}"]), never: &[] },
    // What pid 1 is depends on the machine: an init that is not Python, one we may not
    // trace even as root (it holds more capabilities), or a container's Python app.
    Row { what: "dump, pid 1", user: User::Root, args: &["dump", "--pid", "1"], exit: FAILURE,
          says: Says::Any(&["not a python process", "py-spy already runs as root", "kernel thread"]), never: &[] },
    Row { what: "dump, a kernel thread", user: User::Root, args: &["dump", "--pid", "{kthread}"], exit: FAILURE,
          says: Says::All(&["is a kernel thread, not a python process"]), never: &["exited"] },
    Row { what: "dump, sleep (a C program)", user: User::Root, args: &["dump", "--pid", "{sleep}"], exit: FAILURE,
          says: Says::All(NOT_PYTHON), never: &[] },
    Row { what: "record, sleep (a C program)", user: User::Root, args: &["record", "--pid", "{sleep}", "-o", "{out}"], exit: FAILURE,
          says: Says::All(NOT_PYTHON), never: &[] },
    Row { what: "top, sleep (a C program)", user: User::Root, args: &["top", "--pid", "{sleep}"], exit: FAILURE,
          says: Says::All(NOT_PYTHON), never: &[] },
    Row { what: "dump, a shell", user: User::Root, args: &["dump", "--pid", "{shell}"], exit: FAILURE,
          says: Says::All(&["not a python process", "bash"]), never: &[] },
    Row { what: "dump, a shell that started python", user: User::Root, args: &["dump", "--pid", "{wrapper}"], exit: FAILURE,
          says: Says::All(&["not a python process", "its child process {wrapped} runs python3.12: pass --pid {wrapped}"]), never: &[] },
    Row { what: "dump, py-spy's own pid", user: User::Root, args: &["dump", "--pid", "{self}"], exit: FAILURE,
          says: Says::All(&["is this py-spy process itself"]), never: &[] },
    Row { what: "record, py-spy's own pid", user: User::Root, args: &["record", "--pid", "{self}", "-o", "{out}"], exit: FAILURE,
          says: Says::All(&["is this py-spy process itself"]), never: &[] },
    Row { what: "dump, a zombie", user: User::Root, args: &["dump", "--pid", "{zombie}"], exit: FAILURE,
          says: Says::All(&["process {zombie} is a zombie"]), never: &[] },
    Row { what: "dump, a process strace holds", user: User::Root, args: &["dump", "--pid", "{traced}"], exit: FAILURE,
          says: Says::All(&["process {traced} is already traced by process {tracer} (strace)", "pass --nonblocking"]), never: &["root"] },
    Row { what: "record, a process strace holds", user: User::Root, args: &["record", "--pid", "{traced}", "-o", "{out}"], exit: FAILURE,
          says: Says::All(&["process {traced} is already traced by process {tracer} (strace)", "pass --nonblocking"]), never: &["root"] },
    Row { what: "top, a process strace holds", user: User::Root, args: &["top", "--pid", "{traced}"], exit: FAILURE,
          says: Says::All(&["process {traced} is already traced by process {tracer} (strace)", "pass --nonblocking"]), never: &["root"] },
    Row { what: "dump, another user's process", user: User::Nobody, args: &["dump", "--pid", "{python}"], exit: FAILURE,
          says: PERMISSION, never: &[] },
    Row { what: "record, another user's process", user: User::Nobody, args: &["record", "--pid", "{python}", "-o", "{public}/out.svg"], exit: FAILURE,
          says: PERMISSION, never: &[] },
    Row { what: "top, another user's process", user: User::Nobody, args: &["top", "--pid", "{python}"], exit: FAILURE,
          says: PERMISSION, never: &[] },
    Row { what: "record, a program that does not exist", user: User::Root, args: &["record", "-o", "{out}", "--", "/no/such/program"], exit: FAILURE,
          says: Says::All(&["cannot run `/no/such/program`", "no such file"]), never: &["root"] },
    // ---- option values
    Row { what: "record -r 0", user: User::Root, args: &["record", "-r", "0", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["rate", "(see --help)"]), never: &[] },
    Row { what: "record -r -5", user: User::Root, args: &["record", "-r", "-5", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["rate", "-5", "(see --help)"]), never: &[] },
    Row { what: "record -r 1e9", user: User::Root, args: &["record", "-r", "1e9", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["rate", "at most 100000"]), never: &[] },
    Row { what: "top -r 0", user: User::Root, args: &["top", "-r", "0", "--pid", "{python}"], exit: USAGE,
          says: Says::All(&["rate", "(see --help)"]), never: &[] },
    Row { what: "record -d 0", user: User::Root, args: &["record", "-d", "0", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["duration", "(see --help)"]), never: &[] },
    Row { what: "record -d abc", user: User::Root, args: &["record", "-d", "abc", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["duration", "abc"]), never: &[] },
    Row { what: "dump -p abc", user: User::Root, args: &["dump", "-p", "abc"], exit: USAGE,
          says: Says::All(&["'abc'", "--pid"]), never: &[] },
    Row { what: "record -p abc", user: User::Root, args: &["record", "-p", "abc", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["'abc'", "--pid"]), never: &[] },
    Row { what: "top -p abc", user: User::Root, args: &["top", "-p", "abc"], exit: USAGE,
          says: Says::All(&["'abc'", "--pid"]), never: &[] },
    Row { what: "record -f png", user: User::Root, args: &["record", "-f", "png", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["'png'", "--format", "flamegraph"]), never: &[] },
    Row { what: "record --function --nolineno", user: User::Root, args: &["record", "--function", "--nolineno", "--pid", "{python}", "-o", "{out}"], exit: USAGE,
          says: Says::All(&["--function", "--nolineno"]), never: &[] },
    Row { what: "record --pid and a command", user: User::Root, args: &["record", "--pid", "{python}", "-o", "{out}", "--", "{py}", "-c", "open('{marker}', 'w')"], exit: USAGE,
          says: Says::All(&["--pid", "(see --help)"]), never: &[] },
    Row { what: "dump without --pid", user: User::Root, args: &["dump"], exit: USAGE,
          says: Says::All(&["required arguments were not provided: --pid <pid> (see --help)"]), never: &[] },
    Row { what: "completions without a shell", user: User::Root, args: &["completions"], exit: USAGE,
          says: Says::All(&["required arguments were not provided: <shell> (see --help)"]), never: &[] },
    Row { what: "completions nushell", user: User::Root, args: &["completions", "nushell"], exit: USAGE,
          says: Says::All(&["invalid value 'nushell' for '<shell>' (possible values: bash, elvish, fish, powershell, zsh) (see --help)"]), never: &[] },
    // ---- output file: checked before anything is sampled or started
    Row { what: "record -o in a missing directory (attach)", user: User::Root, args: &["record", "--pid", "{python}", "-o", "{missing}/out.svg"], exit: FAILURE,
          says: Says::All(&["directory {missing} does not exist"]), never: &[] },
    Row { what: "record -o in a missing directory (launch)", user: User::Root, args: &["record", "-o", "{missing}/out.svg", "--", "{py}", "-c", "open('{marker}', 'w')"], exit: FAILURE,
          says: Says::All(&["directory {missing} does not exist"]), never: &[] },
    Row { what: "record -o a directory", user: User::Root, args: &["record", "--pid", "{python}", "-o", "{public}"], exit: FAILURE,
          says: Says::All(&["{public} is a directory"]), never: &[] },
    Row { what: "record -o in a read-only directory", user: User::Nobody, args: &["record", "-o", "{readonly}/out.svg", "--", "{py}", "-c", "open('{marker}', 'w')"], exit: FAILURE,
          says: Says::All(&["cannot write to directory {readonly}: permission denied"]), never: &["root", "ptrace"] },
    Row { what: "record -o a block device", user: User::Root, args: &["record", "-o", "{blockdev}", "--", "{py}", "-c", "open('{marker}', 'w')"], exit: FAILURE,
          says: Says::All(&["{blockdev} is a block device"]), never: &[] },
];

/// The processes, files and directories the rows point at; removed when dropped.
struct Fixtures {
    dir: PathBuf,
    python: ChildGuard,
    sleep: ChildGuard,
    shell: ChildGuard,
    /// A shell waiting for the Python it started.
    wrapper: ChildGuard,
    zombie: ChildGuard,
    /// strace, tracing the Python it started (a debugger already attached).
    tracer: ChildGuard,
    unused: u32,
    kthread: u32,
    blockdev: Option<String>,
}

impl Fixtures {
    fn start() -> Fixtures {
        let dir = std::env::temp_dir().join(format!("py-spy-bad-input-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("public")).expect("scratch directory");
        // Anyone may write here (the marker, nobody's output); `readonly` only root.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("public"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(dir.join("readonly")).unwrap();
        fs::set_permissions(dir.join("readonly"), fs::Permissions::from_mode(0o755)).unwrap();

        let spawn = |program: &str, args: &[&str]| {
            ChildGuard(
                Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {program}: {e}")),
            )
        };
        let python = spawn(
            PYENV_PYTHON,
            &["-c", "import time\nwhile True: time.sleep(1)"],
        );
        let sleep = spawn("sleep", &["300"]);
        let shell = spawn("bash", &["-c", "while :; do sleep 1; done"]);
        let wrapper = spawn(
            "bash",
            &[
                "-c",
                &format!("{PYENV_PYTHON} -c 'import time; time.sleep(300)'; true"),
            ],
        );
        // Exits at once; the guard reaps it only when the test ends.
        let zombie = spawn(PYENV_PYTHON, &["-c", "pass"]);
        let tracer = spawn(
            "strace",
            &[
                "-o",
                "/dev/null",
                PYENV_PYTHON,
                "-c",
                "import time\nwhile True: time.sleep(1)",
            ],
        );
        let kthread = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| is_kernel_thread(*pid))
            .expect("a kernel thread in /proc");
        let blockdev = fs::read_dir("/sys/class/block").ok().and_then(|entries| {
            entries
                .filter_map(|e| Some(format!("/dev/{}", e.ok()?.file_name().to_str()?)))
                .find(|dev| Path::new(dev).exists())
        });
        let fixtures = Fixtures {
            dir,
            python,
            sleep,
            shell,
            wrapper,
            zombie,
            tracer,
            unused: common::unused_pid(),
            kthread,
            blockdev,
        };
        // Each process must be what its rows say it is before they run.
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = |f: &Fixtures| {
            common::process_state(f.zombie.pid()) == Some('Z')
                && common::maps_contain(f.sleep.pid(), "sleep")
                && common::maps_contain(f.shell.pid(), "bash")
                && common::maps_contain(f.python.pid(), "libpython3.12")
                && f.wrapped()
                    .is_some_and(|p| common::maps_contain(p, "libpython3.12"))
                && f.traced().is_some_and(|p| {
                    common::maps_contain(p, "libpython3.12") && common::tracer_pid(p) != 0
                })
        };
        while !ready(&fixtures) {
            assert!(Instant::now() < deadline, "fixtures did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Give the Python target time to finish initialising its runtime.
        std::thread::sleep(Duration::from_millis(300));
        fixtures
    }

    /// The Python process the wrapper shell started.
    fn wrapped(&self) -> Option<u32> {
        common::first_child(self.wrapper.pid())
    }

    /// The Python process strace started and traces.
    fn traced(&self) -> Option<u32> {
        common::first_child(self.tracer.pid())
    }
}

impl Fixtures {
    /// `text` with every `{name}` replaced.
    fn fill(&self, text: &str) -> String {
        let dir = self.dir.display().to_string();
        text.replace("{unused}", &self.unused.to_string())
            .replace("{kthread}", &self.kthread.to_string())
            .replace("{python}", &self.python.pid().to_string())
            .replace("{sleep}", &self.sleep.pid().to_string())
            .replace("{shell}", &self.shell.pid().to_string())
            .replace("{wrapper}", &self.wrapper.pid().to_string())
            .replace("{wrapped}", &self.wrapped().unwrap_or(0).to_string())
            .replace("{traced}", &self.traced().unwrap_or(0).to_string())
            .replace("{tracer}", &self.tracer.pid().to_string())
            .replace("{zombie}", &self.zombie.pid().to_string())
            .replace(
                "{blockdev}",
                self.blockdev.as_deref().unwrap_or("{blockdev}"),
            )
            .replace("{out}", &format!("{dir}/public/out.svg"))
            .replace("{missing}", &format!("{dir}/missing"))
            .replace("{public}", &format!("{dir}/public"))
            .replace("{readonly}", &format!("{dir}/readonly"))
            .replace("{marker}", &format!("{dir}/public/started"))
            .replace("{py}", STATIC_PYTHON)
    }

    /// Runs one row's command as its user. `{self}` becomes py-spy's own pid: a shell
    /// learns its pid and then execs py-spy in its place.
    fn run(&self, row: &Row) -> Run {
        let args: Vec<String> = row.args.iter().map(|a| self.fill(a)).collect();
        let mut command = match row.user {
            User::Root => Command::new("sh"),
            User::Nobody => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"]);
                c
            }
        };
        let script = format!(
            "exec \"$0\" {}",
            args.iter()
                .map(|a| {
                    if a == "{self}" {
                        "$$".to_string()
                    } else {
                        format!("'{}'", a.replace('\'', r"'\''"))
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        command.args(["-c", &script, common::PY_SPY]);
        let out = common::output_within(&mut command, TIMEOUT, None);
        Run {
            args,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        // The grandchildren outlive their killed parents otherwise (strace's tracee is
        // detached and runs on).
        for pid in [self.wrapped(), self.traced()].into_iter().flatten() {
            // SAFETY: plain syscall on a process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn is_kernel_thread(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace()
            .nth(6)
            .and_then(|f| f.parse::<u64>().ok())
            .is_some_and(|flags| flags & 0x0020_0000 != 0)
    })
}

fn assert_no_panic(run: &Run) {
    for line in run.stderr.lines() {
        assert!(
            !line.contains("panicked")
                && !line.contains("RUST_BACKTRACE")
                && !line.contains("internal error"),
            "py-spy panicked:\n{}",
            run.describe()
        );
    }
}

/// Asserts a failed run: the exit status, exactly one stderr line starting with
/// `Error: `. Returns that line.
fn assert_one_error_line(run: &Run, exit: i32) -> Result<String, String> {
    assert_no_panic(run);
    if run.status.code() != Some(exit) {
        return Err(format!("exit status {} (expected {exit})", run.status));
    }
    let lines: Vec<&str> = run.stderr.lines().collect();
    if lines.len() != 1 {
        return Err(format!("{} lines on stderr (expected one)", lines.len()));
    }
    if !lines[0].starts_with("Error: ") {
        return Err("the stderr line does not start with \"Error: \"".into());
    }
    Ok(lines[0].to_string())
}

#[test]
fn bad_input_table() {
    if !common::is_root() {
        assert!(!common::in_ci(), "CI must run as root");
        println!("SKIP bad_input_table: needs root to set up processes of another user");
        return;
    }
    let fixtures = Fixtures::start();
    let marker = PathBuf::from(fixtures.fill("{marker}"));
    let mut failures = Vec::new();
    let mut tried = 0;
    for row in ROWS {
        if row.args.contains(&"{blockdev}") && fixtures.blockdev.is_none() {
            println!("SKIP {}: no block device in /sys/class/block", row.what);
            continue;
        }
        tried += 1;
        let started = Instant::now();
        let run = fixtures.run(row);
        let elapsed = started.elapsed();
        let mut problems = Vec::new();
        match assert_one_error_line(&run, row.exit) {
            Err(problem) => problems.push(problem),
            Ok(line) => {
                let lower = line.to_lowercase();
                let filled = |w: &str| fixtures.fill(w).to_lowercase();
                match row.says {
                    Says::All(words) => {
                        for w in words {
                            if !lower.contains(&filled(w)) {
                                problems.push(format!("does not say {:?}", filled(w)));
                            }
                        }
                    }
                    Says::Any(words) => {
                        if !words.iter().any(|w| lower.contains(&filled(w))) {
                            problems.push(format!("says none of {words:?}"));
                        }
                    }
                }
                for w in row.never {
                    if lower.contains(&filled(w)) {
                        problems.push(format!("says {w:?}, which misleads"));
                    }
                }
            }
        }
        if marker.exists() {
            problems.push("the program was started although the command was refused".into());
            let _ = fs::remove_file(&marker);
        }
        let leftovers: Vec<_> = fs::read_dir(fixtures.dir.join("public"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if !leftovers.is_empty() {
            problems.push(format!("files were written: {leftovers:?}"));
        }
        if elapsed > Duration::from_secs(5) {
            problems.push(format!("took {elapsed:?} (expected an immediate error)"));
        }
        let verdict = if problems.is_empty() { "ok" } else { "FAILED" };
        println!(
            "{verdict:6} {:45} exit {:?}  {}",
            row.what,
            run.status.code(),
            run.stderr.trim_end()
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n{}",
                row.what,
                problems.join("; "),
                run.describe()
            ));
        }
    }
    // The python fixture must have survived every attempt, untraced and running.
    let state = common::process_state(fixtures.python.pid());
    assert!(
        matches!(state, Some('S' | 'R')),
        "target left in state {state:?}"
    );
    println!("bad inputs tried: {tried}, failures: {}", failures.len());
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

// ------------------------------------------------------------------ races --

/// Targets that live for a few milliseconds: py-spy meets them at every stage of starting
/// and exiting. Whatever it meets, it answers with a result or one clean error line.
#[test]
fn a_process_that_exits_between_attach_and_first_sample() {
    let mut outcomes = [(0, 0), (0, 0)];
    let dir = std::env::temp_dir().join(format!("py-spy-exits-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    // About one run in twenty meets the exit: go on past 60 runs until a few have (at most
    // 240), so that the test always exercises the race it is about.
    for i in 0..240 {
        if i >= 60 && outcomes[0].1 + outcomes[1].1 >= 3 {
            break;
        }
        let lifetime_ms = (i * 7) % 60;
        let child = Command::new(PYENV_PYTHON)
            .args([
                "-c",
                &format!(
                    "import threading, time\n\
                     for _ in range(3): threading.Thread(target=lambda: None).start()\n\
                     t = time.time()\n\
                     while time.time() - t < {}: pass",
                    lifetime_ms as f64 / 1000.0
                ),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start python");
        let guard = ChildGuard(child);
        let pid = guard.pid().to_string();
        let dump = i % 2 == 0;
        let out = dir.join(format!("out-{i}.txt"));
        let out_arg = out.display().to_string();
        let args: Vec<&str> = if dump {
            vec!["dump", "--pid", &pid]
        } else {
            vec![
                "record", "--pid", &pid, "-f", "raw", "-r", "1000", "-o", &out_arg,
            ]
        };
        let run = run_py_spy(&args, TIMEOUT);
        assert_no_panic(&run);
        let slot = &mut outcomes[usize::from(!dump)];
        if run.status.success() {
            if dump {
                assert!(run.stdout.starts_with("Process "), "{}", run.describe());
            } else {
                assert!(out.exists(), "no output file\n{}", run.describe());
                assert!(
                    run.stderr.contains("py-spy: wrote "),
                    "no summary\n{}",
                    run.describe()
                );
            }
            slot.0 += 1;
        } else {
            let line = assert_one_error_line(&run, FAILURE)
                .unwrap_or_else(|p| panic!("{p}\n{}", run.describe()));
            // Met starting, running or exiting: each stage has its own message.
            assert!(
                ["exited", "not a Python process", "no running interpreter"]
                    .iter()
                    .any(|m| line.contains(m)),
                "{line}"
            );
            assert!(
                !out.exists(),
                "output written on failure\n{}",
                run.describe()
            );
            slot.1 += 1;
        }
        drop(guard);
    }
    let _ = fs::remove_dir_all(&dir);
    println!(
        "dump: {} succeeded, {} failed cleanly; record: {} succeeded, {} failed cleanly",
        outcomes[0].0, outcomes[0].1, outcomes[1].0, outcomes[1].1
    );
    assert!(
        outcomes[0].1 + outcomes[1].1 > 0,
        "no run met an exiting process"
    );
}

// ----------------------------------------------------------- closed stdout --

/// Runs `sh -c SCRIPT PY_SPY ARGS…` where SCRIPT starts py-spy as `"$0" "$@"`; returns
/// (py-spy's exit status as the shell saw it, py-spy's stderr, sh's stdout).
fn py_spy_in_shell(script_around: &str, args: &[&str]) -> (String, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "py-spy-pipe-{}-{}",
        std::process::id(),
        common::unused_pid()
    ));
    fs::create_dir_all(&dir).expect("create a temporary directory");
    let err_path = dir.join("stderr.txt");
    let rc_path = dir.join("rc.txt");
    let script = script_around
        .replace("{err}", &err_path.display().to_string())
        .replace("{rc}", &rc_path.display().to_string());
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

/// `dump | head -1`, `dump | true`, `top | head -1` (plain text): the reader goes away
/// early; py-spy stops quietly with status 0. With stdout closed outright (`>&-`), py-spy
/// says so in one line and exits 1 before it reads anything.
#[test]
fn closed_stdout_and_broken_pipes() {
    let Some(interp) = Interpreter::any_host() else {
        let message = "SKIP: no Python interpreter found (run tests/provision)";
        assert!(!common::in_ci(), "{message}");
        println!("{message}");
        return;
    };
    let mut target = Target::start(&interp, "dump_target.py");
    target.wait_truth(Duration::from_secs(30));
    let pid = target.pid.to_string();
    let pipe = r#"("$0" "$@" 2>"{err}"; echo $? >"{rc}") | "#;
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (format!("{pipe}head -n 1"), vec!["dump", "--pid", &pid], "0"),
        (
            format!("{pipe}head -n 1"),
            vec!["dump", "--pid", &pid, "--locals"],
            "0",
        ),
        (
            format!("{pipe}head -n 1"),
            vec!["dump", "--pid", &pid, "--json"],
            "0",
        ),
        (format!("{pipe}true"), vec!["dump", "--pid", &pid], "0"),
        (
            format!("{pipe}true"),
            vec!["dump", "--pid", &pid, "--json"],
            "0",
        ),
        (
            format!("{pipe}head -n 1"),
            vec!["top", "--pid", &pid, "--delay", "0.2"],
            "0",
        ),
        (
            r#""$0" "$@" >&- 2>"{err}"; echo $? >"{rc}""#.to_string(),
            vec!["dump", "--pid", &pid],
            "1",
        ),
    ];
    for (script, args, want_rc) in cases {
        let (rc, stderr, stdout) = py_spy_in_shell(&script, &args);
        let what = format!(
            "sh -c '{script}' py-spy {} ({}): exit status {rc:?}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
            args.join(" "),
            interp.label
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "py-spy panicked: {what}"
        );
        assert_eq!(rc, want_rc, "exit status: {what}");
        if want_rc == "0" {
            assert!(stderr.is_empty(), "expected an empty stderr: {what}");
        } else {
            assert_eq!(stderr.lines().count(), 1, "{what}");
            assert!(stderr.starts_with("Error: "), "{what}");
            assert!(stderr.contains("standard output is closed"), "{what}");
        }
        if script.contains("head") && args[0] == "dump" && args.len() == 3 {
            assert!(
                stdout.starts_with(&format!("Process {pid}: ")),
                "unexpected first line: {what}"
            );
        }
        if args[0] == "top" {
            assert!(stdout.starts_with("Collecting samples from "), "{what}");
        }
    }
    // Nothing above may leave the target stopped or traced.
    let state = common::process_state(target.pid);
    assert!(
        matches!(state, Some('S' | 'R')),
        "target left in state {state:?}"
    );
}

/// `record … 2>&1 | head -1`: stderr breaks after the first line. The messages are lost,
/// the profile is not, and the exit status is still the program's.
#[test]
fn broken_stderr_keeps_the_profile() {
    if !Path::new(STATIC_PYTHON).exists() {
        assert!(!common::in_ci(), "{STATIC_PYTHON} missing");
        println!("SKIP broken_stderr_keeps_the_profile: {STATIC_PYTHON} missing");
        return;
    }
    let dir = std::env::temp_dir().join(format!("py-spy-stderr-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("profile.txt");
    let rc = dir.join("rc.txt");
    let script = format!(
        r#"("$0" "$@" 2>&1; echo $? >"{}") | head -n 1"#,
        rc.display()
    );
    let output = Command::new("sh")
        .args(["-c", &script, common::PY_SPY])
        .args(["record", "-f", "raw", "-r", "200", "-o"])
        .arg(&out)
        .args(["--", STATIC_PYTHON, "-c"])
        .arg("import time\ndef spin():\n    t = time.time()\n    while time.time() - t < 0.5: pass\nspin()\nraise SystemExit(3)")
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let first = String::from_utf8_lossy(&output.stdout).into_owned();
    let rc = fs::read_to_string(&rc).unwrap_or_default();
    let profile = fs::read_to_string(&out).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    assert!(first.starts_with("py-spy: recording "), "{first}");
    assert_eq!(rc.trim(), "3", "exit status of py-spy");
    let spin: u64 = profile
        .lines()
        .filter(|l| l.contains("spin (<string>:4)"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(spin >= 50, "{spin} samples in spin:\n{profile}");
}
