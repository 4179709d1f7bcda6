//! Integration tests for `py-spy top`, on 3.9, 3.12 and the 3.15 chroot.
//!
//! The full-screen view runs in a real terminal: a detached tmux session (unique name,
//! killed on drop) runs a small shell script that saves `stty -a`, runs `py-spy top --
//! python tests/scripts/top_busy.py`, prints its exit status and saves `stty -a` again.
//! The test reads the screen with `capture-pane`: `hot` at its `# HOT` line leads with
//! `%Own` ≥ 80; after `4` (sort by TotalTime) `<module>` at its `# CALL main` line leads;
//! after `q` the shell prompt is back and `stty -a` is what it was. A second run is ended
//! with SIGTERM instead, with the same checks on the terminal.
//!
//! Plain text: with stdout a pipe, `top --delay 1` on a 3-second workload prints a table
//! per refresh; the tables are parsed and checked the same way, and `top` exits with the
//! program's status.

mod common;

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{spawn_py_spy, Interpreter, Workdir, PY_SPY};

const SCRIPT: &str = "top_busy.py";
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);
const PROMPT: &str = "toptest$ ";

fn marker_line(marker: &str) -> u32 {
    common::marker_line(SCRIPT, marker)
}

/// One row of a table: `%Own %Total OwnTime TotalTime Function (file:line)`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    own_percent: f64,
    total_percent: f64,
    own_time: f64,
    total_time: f64,
    function: String,
}

fn parse_row(line: &str) -> Option<Row> {
    let mut parts = line.split_whitespace();
    let mut number =
        |suffix: char| -> Option<f64> { parts.next()?.strip_suffix(suffix)?.parse().ok() };
    let own_percent = number('%')?;
    let total_percent = number('%')?;
    let own_time = number('s')?;
    let total_time = number('s')?;
    // The function column is what follows the fourth number.
    let mut rest = line;
    for _ in 0..4 {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace)?..];
    }
    Some(Row {
        own_percent,
        total_percent,
        own_time,
        total_time,
        function: rest.trim().to_string(),
    })
}

/// The tables in `text`: the rows after each title line, up to a blank line.
fn tables(text: &str) -> Vec<Vec<Row>> {
    let mut tables = Vec::new();
    let mut current: Option<Vec<Row>> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("%Own") {
            if let Some(t) = current.take() {
                tables.push(t);
            }
            current = Some(Vec::new());
            continue;
        }
        if let Some(t) = current.as_mut() {
            match parse_row(line) {
                Some(row) => t.push(row),
                None => tables.push(current.take().unwrap()),
            }
        }
    }
    if let Some(t) = current {
        tables.push(t);
    }
    tables
}

fn hot() -> String {
    format!("hot ({SCRIPT}:{})", marker_line("HOT"))
}

fn module() -> String {
    format!("<module> ({SCRIPT}:{})", marker_line("CALL main"))
}

// ------------------------------------------------------------------------ tmux --

/// A detached tmux session, killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(label: &str, width: u32, height: u32) -> Tmux {
        let name = format!(
            "pyspy-top-{label}-{}-{:?}",
            std::process::id(),
            Instant::now()
        )
        .replace(['.', ':', ' '], "_");
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", &width.to_string()])
            .args(["-y", &height.to_string()])
            .args([
                "env",
                &format!("PS1={PROMPT}"),
                "bash",
                "--norc",
                "--noprofile",
            ])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Tmux { name }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `check` accepts the screen; panics with the screen after the timeout.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.capture();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}; the screen:\n{screen}",
                self.name
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The pid of the `py-spy` child of the shell `parent`.
fn find_py_spy(parent: &str) -> Option<i32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
        if args.first().map(String::as_str) == Some(PY_SPY) && ppid.as_deref() == Some(parent) {
            return Some(pid);
        }
    }
    None
}

/// Runs `top` in tmux on the busy workload, checks the view and the order after `4`,
/// then ends it with `how` ("q" or "SIGTERM") and checks that the terminal is restored.
fn check_screen(interp: &Interpreter, how: &str) {
    let wd = Workdir::new(interp);
    let command: Vec<String> = wd.command(SCRIPT, &[]).iter().map(|a| quote(a)).collect();
    let before = wd.host("stty.before");
    let after = wd.host("stty.after");
    let script = format!(
        "echo $$ > {}\nstty -a > {}\n{} top -- {}\necho \"EXIT=$?\"\nstty -a > {}\n",
        quote(&wd.host("shell.pid").to_string_lossy()),
        quote(&before.to_string_lossy()),
        quote(PY_SPY),
        command.join(" "),
        quote(&after.to_string_lossy()),
    );
    let run = wd.host("run.sh");
    fs::write(&run, script).unwrap();
    let tmux = Tmux::start(interp.label, 110, 30);
    tmux.wait_for("the prompt", |s| s.contains(PROMPT.trim_end()));
    tmux.keys(&[&format!("bash {}", quote(&run.to_string_lossy())), "Enter"]);

    let first_row = |screen: &str| tables(screen).first().and_then(|t| t.first().cloned());
    let hot = hot();
    let screen = tmux.wait_for("hot leading with %Own >= 80", |s| {
        first_row(s)
            .is_some_and(|r| r.function == hot && r.own_percent >= 80.0 && r.own_time >= 1.0)
    });
    assert!(screen.contains("Sort: OwnTime"), "{screen}");
    assert!(screen.contains("Total samples: "), "{screen}");
    let version = match interp.label {
        "py39" => "Python 3.9.",
        "py312" => "Python 3.12.",
        _ => "Python 3.15.",
    };
    assert!(screen.contains(version), "{}: {screen}", interp.label);
    let rows = &tables(&screen)[0];
    let light = format!("light ({SCRIPT}:{})", marker_line("LIGHT"));
    assert!(rows.iter().any(|r| r.function == light), "{screen}");

    tmux.keys(&["4"]);
    let module = module();
    let screen = tmux.wait_for("<module> leading after 4", |s| {
        first_row(s).is_some_and(|r| r.function == module)
    });
    let top = first_row(&screen).unwrap();
    assert!(top.total_percent >= 90.0, "{top:?}\n{screen}");
    assert!(screen.contains("Sort: TotalTime"), "{screen}");

    match how {
        "q" => tmux.keys(&["q"]),
        _ => {
            let shell = fs::read_to_string(wd.host("shell.pid")).unwrap();
            let pid = find_py_spy(shell.trim()).expect("the py-spy process");
            // SAFETY: plain system call.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let screen = tmux.wait_for("the prompt after py-spy", |s| {
        s.contains("EXIT=") && s.trim_end().ends_with(PROMPT.trim_end()) && after.exists()
    });
    // The view is gone (the alternate screen was left).
    assert!(!screen.contains("%Own"), "{screen}");
    // The file may be half-written when it appears.
    thread::sleep(Duration::from_millis(200));
    let before = fs::read_to_string(&before).unwrap();
    let after = fs::read_to_string(&after).unwrap();
    assert_eq!(before, after, "stty -a differs after {how}");
    assert!(
        after.contains(" icanon ") && after.contains(" echo "),
        "{after}"
    );
}

/// Plain text: stdout not a terminal, a 3-second workload.
fn check_plain(interp: &Interpreter) {
    let wd = Workdir::new(interp);
    let mut args = vec!["top".to_string(), "--delay".into(), "1".into(), "--".into()];
    args.extend(wd.command(SCRIPT, &["3"]));
    let (run, elapsed) = spawn_py_spy(&args).wait(Duration::from_secs(30));
    assert!(run.status.success(), "{}", run.describe());
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let tables = tables(&run.stdout);
    assert!(tables.len() >= 2, "{}", run.describe());
    let last = tables.last().unwrap();
    assert_eq!(last[0].function, hot(), "{}", run.describe());
    assert!(last[0].own_percent >= 80.0, "{}", run.describe());
    let module = last
        .iter()
        .find(|r| r.function == module())
        .expect("<module>");
    // Samples taken while the interpreter starts have other stacks.
    assert!(module.total_percent >= 90.0, "{}", run.describe());
    assert!(
        (1.5..=3.5).contains(&module.total_time),
        "{}",
        run.describe()
    );
    let samples: Vec<u64> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Total samples: "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(samples.windows(2).all(|w| w[0] <= w[1]), "{samples:?}");
    assert!(*samples.last().unwrap() >= 150, "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
}

macro_rules! interpreter_tests {
    ($($name:ident => $label:literal,)*) => {
        $(
            #[test]
            fn $name() {
                let interp = common::interpreter($label);
                if !interp.available() {
                    return;
                }
                let plain = {
                    let interp = interp.clone();
                    thread::spawn(move || check_plain(&interp))
                };
                check_screen(&interp, "q");
                check_screen(&interp, "SIGTERM");
                if let Err(e) = plain.join() {
                    std::panic::resume_unwind(e);
                }
            }
        )*
    };
}

interpreter_tests! {
    top_py39 => "py39",
    top_py312 => "py312",
    top_py315_chroot => "py315-chroot",
}

#[test]
fn rows_parse() {
    let row = parse_row(" 85.00%  90.00%     8.50s      9.00s  hot (top_busy.py:12)").unwrap();
    assert_eq!(row.function, "hot (top_busy.py:12)");
    assert_eq!((row.own_percent, row.total_time), (85.0, 9.0));
    assert!(parse_row("Total samples: 3").is_none());
}

/// Processes killed when dropped (whatever a failed assertion left behind).
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The children of process `parent`.
fn children(parent: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !matches!(stat.rsplit_once(") ").map(|(_, s)| &s[..1]), Some("Z")))
}

/// A terminal that hangs up without a SIGHUP for `top` ends `top`, which lets the program
/// go and ends it. (py-spy runs in a session of its own with the terminal as its stdio, so
/// the hangup signals nobody but the shell; closing a window can do the same, depending on
/// who sees the hangup first.) It used to spin on the dead terminal for ever, and never
/// took the reports of the threads it held, so the program could wait for ever at a
/// signal.
#[test]
fn a_terminal_that_hangs_up_ends_top() {
    let interp = common::interpreter("py312");
    if !interp.available() {
        return;
    }
    let wd = Workdir::new(&interp);
    let command: Vec<String> = wd.command(SCRIPT, &[]).iter().map(|a| quote(a)).collect();
    let run = wd.host("run.sh");
    fs::write(
        &run,
        format!(
            "exec setsid {} top -- {}\n",
            quote(PY_SPY),
            command.join(" ")
        ),
    )
    .unwrap();
    let socket = format!("pyspy-hangup-{}", std::process::id());
    let shell = format!("sh {}; sleep 60", quote(&run.to_string_lossy()));
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("run tmux")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "110",
        "-y",
        "30",
        "bash",
        "-c",
        &shell,
    ]);
    assert!(started.status.success(), "{started:?}");
    let server: i32 = String::from_utf8_lossy(&tmux(&["display", "-p", "#{pid}"]).stdout)
        .trim()
        .parse()
        .expect("the tmux server's pid");
    let mut reaper = Reaper(vec![server]);
    let hot = format!("hot ({SCRIPT}:{})", marker_line("HOT"));
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    loop {
        let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
        if screen.contains(&hot) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed {hot}:\n{screen}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let shells = children(server);
    let py_spy: Vec<i32> = shells.iter().flat_map(|&s| children(s)).collect();
    let python: Vec<i32> = py_spy.iter().flat_map(|&p| children(p)).collect();
    assert_eq!(
        (py_spy.len(), python.len()),
        (1, 1),
        "{shells:?} {py_spy:?}"
    );
    reaper.0.extend(py_spy.iter().chain(&python));
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while (alive(py_spy[0]) || alive(python[0])) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !alive(py_spy[0]),
        "py-spy top is still running on a dead terminal"
    );
    assert!(!alive(python[0]), "the program is still running");
}
