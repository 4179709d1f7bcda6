//! What `record` and `top` share beyond the sampler: one pass over every process being
//! sampled, the choice of threads to keep, and how processes are described.

use std::time::{Duration, Instant};

use crate::binary::NotMapped;
use crate::interpreter::NotPython;
use crate::launch::{Exit, Launched};
use crate::memory::is_process_gone;
use crate::process::{LinuxProcess, Process};
use crate::sampler::{is_interpreter_exiting, Sampler, Snapshot, SnapshotOptions, ThreadSnapshot};
use crate::signals::{StopSignal, StopSignals};
use crate::targets::{Change, Event, Target, Targets};

/// Opens process `pid` and finds its interpreter. When it is not Python but a descendant
/// is (a shell script or a wrapper that started python), the error names that process.
pub fn attach(pid: i32) -> anyhow::Result<Sampler<LinuxProcess>> {
    let deadline = Instant::now() + EXEC_WAIT;
    loop {
        let err = match Sampler::new(LinuxProcess::open(pid)?) {
            Ok(sampler) => return Ok(sampler),
            Err(err) => err,
        };
        // A program met in the middle of an `execve` has a memory map that lacks the binary
        // its `exe` names: the map was read before the exec and `exe` after it, or the
        // kernel had installed the new address space and `exe` but not yet mapped the
        // program into it (`Command::spawn` returns at that point, so a program launched
        // just before py-spy is met there when the machine is busy). Read it again until
        // the exec is done.
        let mid_exec = err.chain().any(|e| e.downcast_ref::<NotMapped>().is_some());
        if !mid_exec || is_process_gone(&err) || Instant::now() >= deadline {
            return attach_error(pid, Err(err));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long [`attach`] waits for an `execve` it met to finish.
const EXEC_WAIT: Duration = Duration::from_millis(200);

/// The result of [`attach`], with its error told in terms of what happened to the process.
fn attach_error(
    pid: i32,
    result: anyhow::Result<Sampler<LinuxProcess>>,
) -> anyhow::Result<Sampler<LinuxProcess>> {
    result.map_err(|mut err| {
        // A process that exits while we read its maps and binaries fails in whatever
        // step met it first ("… is not mapped", a short read); the cause is the exit.
        if !is_process_gone(&err) && has_exited(pid) {
            return anyhow::anyhow!("process {pid} exited while py-spy was attaching");
        }
        if let Some(not_python) = err.downcast_mut::<NotPython>() {
            not_python.python_descendant = python_descendant(pid);
        }
        err
    })
}

/// Whether process `pid` is gone, a zombie (its `/proc/PID/stat` state is `Z` or `X`), or
/// on its way there: every thread has `PF_EXITING` set. (An exiting process loses its
/// memory map before it turns zombie, so its binaries stop being mapped a moment before
/// its state says it exited.)
fn has_exited(pid: i32) -> bool {
    /// `PF_EXITING` in the flags field of `/proc/PID/task/TID/stat`.
    const PF_EXITING: u64 = 0x4;
    // The fields after the command name, which may itself hold spaces or parentheses.
    let fields = |stat: &str| -> Vec<String> {
        stat.rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .take(7)
            .map(str::to_owned)
            .collect()
    };
    let main = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => fields(&stat),
        Err(_) => return true,
    };
    if main
        .first()
        .is_none_or(|state| matches!(state.as_str(), "Z" | "X"))
    {
        return true;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            fields(&stat)
                .get(6)
                .and_then(|flags| flags.parse::<u64>().ok())
                .is_some_and(|flags| flags & PF_EXITING != 0)
        })
    })
}

/// Stops and resumes the process once when sampling will pause it, so that a process that
/// cannot be paused (another tracer holds it, or ptrace is refused) is a clear error at
/// the start instead of every sample failing afterwards.
pub fn check_pausable(sampler: &Sampler<LinuxProcess>, nonblocking: bool) -> anyhow::Result<()> {
    if !nonblocking {
        drop(sampler.process().pause()?);
    }
    Ok(())
}

/// The first descendant of `pid` whose program is named like a Python interpreter.
fn python_descendant(pid: i32) -> Option<(i32, String)> {
    crate::targets::descendants(pid)
        .into_iter()
        .find_map(|child| {
            let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok()?;
            let name = exe.file_name()?.to_string_lossy().into_owned();
            name.starts_with("python").then_some((child, name))
        })
}

/// How the root process changed during a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootChange {
    /// It exited.
    Exited,
    /// It no longer runs Python (it `exec`ed another program) and nothing else is sampled.
    Exec,
}

/// Takes one snapshot of every process being sampled and hands each to `each`. Failures
/// are counted in `errors` (a process that exits or `exec`s another program is the end of
/// its samples, not an error) and passed to `targets`, which drops or re-examines the
/// process. Says whether the
/// root exited or stopped being Python; with `subprocesses`, a root that `exec`ed is not
/// the end, since its children may still be sampled.
pub fn sample_all(
    targets: &mut Targets,
    options: SnapshotOptions,
    subprocesses: bool,
    errors: &mut u64,
    mut each: impl FnMut(&Target, &Snapshot),
) -> Option<RootChange> {
    let mut failed = Vec::new();
    let mut succeeded = Vec::new();
    for (target, sampler) in targets.sampling() {
        match sampler.snapshot(options) {
            Ok(snapshot) => {
                each(target, &snapshot);
                succeeded.push(target.pid);
            }
            Err(err) => failed.push((target.pid, err)),
        }
    }
    for pid in succeeded {
        targets.sample_succeeded(pid);
    }
    let mut root_change = None;
    for (pid, err) in failed {
        let change = targets.sample_failed(pid, &err);
        if !is_process_gone(&err)
            && !is_interpreter_exiting(&err)
            && !matches!(change, Some(Change::Exited | Change::Exec))
        {
            *errors += 1;
        }
        if pid != targets.root() {
            continue;
        }
        match change {
            Some(Change::Exited) => root_change = Some(RootChange::Exited),
            Some(Change::Exec | Change::Reset) if !subprocesses => {
                root_change = Some(RootChange::Exec)
            }
            _ => {}
        }
    }
    root_change
}

/// Whether a profile keeps `thread`: with `gil` (and a GIL in the process) only the GIL
/// holder, else running threads, and idle ones too with `idle`.
pub fn keep_thread(thread: &ThreadSnapshot, gil: bool, idle: bool) -> bool {
    if gil {
        thread.owns_gil
    } else {
        idle || thread.active
    }
}

/// `X.Y.Z`, with a `t` for a free-threaded build.
pub fn version_string(sampler: &Sampler<LinuxProcess>) -> String {
    let v = sampler.interpreter().layout.version;
    let mut s = match v.patch {
        Some(p) => format!("{}.{}.{p}", v.major, v.minor),
        None => format!("{}.{}", v.major, v.minor),
    };
    if v.free_threaded {
        s.push('t');
    }
    s
}

/// `text` on one line: control characters (newlines of a `-c` program) as spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How long a launched program is watched closely (every millisecond) for its interpreter
/// before the normal, slower retries take over.
const LAUNCH_WATCH: Duration = Duration::from_secs(1);

/// What watching a launched program ended with.
#[derive(Debug)]
pub enum LaunchWatch {
    /// Its interpreter was found (or the watch ran out of time; sampling then goes on
    /// trying with `Targets`' own delays).
    Continue(Option<Event>),
    /// A stop signal arrived first.
    Signal(StopSignal),
    /// The program ended first.
    Exited(Exit),
}

/// Watches a launched program every millisecond for up to a second, until its interpreter
/// is found, so that the first samples see its first Python code.
pub fn watch_launch(
    targets: &mut Targets,
    child: &mut Launched,
    signals: &mut StopSignals,
) -> LaunchWatch {
    let watch = Instant::now();
    while watch.elapsed() < LAUNCH_WATCH && !targets.root_sampling() {
        if let Some(event) = targets.attach_root_now() {
            return LaunchWatch::Continue(Some(event));
        }
        if let Some(signal) = signals.pending().into_iter().next() {
            return LaunchWatch::Signal(signal);
        }
        if let Some(exit) = child.poll() {
            return LaunchWatch::Exited(exit);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    LaunchWatch::Continue(None)
}

/// The note for a launched program that is not Python after the watch, if it is not.
pub fn not_python_yet(targets: &Targets, subprocesses: bool) -> Option<String> {
    if targets.root_sampling() || subprocesses {
        return None;
    }
    Some(format!(
        "process {} has not started Python yet ({}); still waiting (use --subprocesses if \
         it starts Python in a child process)",
        targets.root(),
        targets.root_waiting_reason().unwrap_or("not found")
    ))
}
