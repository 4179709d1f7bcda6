//! The processes a recording samples: one, or with `--subprocesses` a process and all its
//! descendants, including those that start later.
//!
//! A process is sampled once its interpreter is found. Until then it is looked at again
//! with a growing delay (a launched program, or a child between `fork` and `exec`, is not
//! Python yet), and at once when its executable changes (it `exec`ed something else).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::interpreter::NotPython;
use crate::memory::is_process_gone;
use crate::process::{is_permission_error, LinuxProcess, Process};
use crate::sampler::{is_interpreter_exiting, Sampler};
use crate::sampling::version_string;

/// How often descendants are looked for.
const SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// First and longest delay before looking at a process that was not Python again.
const FIRST_RETRY: Duration = Duration::from_millis(2);
const LONGEST_RETRY: Duration = Duration::from_secs(1);
/// How long a process whose interpreter is found without its patch level (before 3.11:
/// no `sys.version` yet) is looked at again before it is sampled without it.
const PATCH_WAIT: Duration = Duration::from_millis(200);
/// Most processes followed at once: a fork bomb is not followed to the end.
const MAX_PROCESSES: usize = 1024;
/// Deepest descendant tree followed.
const MAX_DEPTH: usize = 64;
/// Failed samples in a row after which a process's interpreter is looked for again.
const MAX_FAILURES: u32 = 20;

/// One process of the recording.
pub struct Target {
    /// Its pid.
    pub pid: i32,
    /// Its command line when it was attached, joined by spaces.
    pub command_line: String,
    state: State,
}

enum State {
    /// Interpreter found.
    Sampling {
        sampler: Box<Sampler<LinuxProcess>>,
        exe: Option<PathBuf>,
        /// Samples that failed in a row.
        failures: u32,
    },
    /// Not (yet) Python: look again at `retry`, or when the executable changes.
    Waiting {
        exe: Option<PathBuf>,
        retry: Instant,
        delay: Duration,
        why: String,
        /// When the waiting began.
        since: Instant,
    },
}

/// What happened to a process that was looked at.
#[derive(Debug)]
pub enum Event {
    /// Its interpreter was found; sampling starts.
    Attached {
        /// The process.
        pid: i32,
        /// `X.Y.Z` and a `t` for free-threaded builds.
        version: String,
        /// Free-threaded build (no GIL).
        free_threaded: bool,
    },
    /// It cannot be sampled and will not be tried again (e.g. permission denied).
    Skipped {
        /// The process.
        pid: i32,
        /// Why, in one line.
        why: String,
    },
}

/// The processes of one recording.
pub struct Targets {
    root: i32,
    descendants: bool,
    targets: BTreeMap<i32, Target>,
    /// Pids seen and given up on (not followed again).
    skipped: BTreeSet<i32>,
    last_scan: Option<Instant>,
}

impl Targets {
    /// Follows `root`, and its descendants when `descendants`.
    pub fn new(root: i32, descendants: bool) -> Targets {
        Targets {
            root,
            descendants,
            targets: BTreeMap::new(),
            skipped: BTreeSet::new(),
            last_scan: None,
        }
    }

    /// Starts from a sampler already attached to the root (attach mode checks the pid is
    /// Python before anything else happens).
    pub fn with_root_sampler(sampler: Sampler<LinuxProcess>, descendants: bool) -> Targets {
        let pid = sampler.process().pid();
        let mut targets = Targets::new(pid, descendants);
        let command_line = command_line(sampler.process());
        let exe = sampler.process().exe_path().ok();
        targets.targets.insert(
            pid,
            Target {
                pid,
                command_line,
                state: State::Sampling {
                    sampler: Box::new(sampler),
                    exe,
                    failures: 0,
                },
            },
        );
        targets
    }

    /// The root pid.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// Tries to attach to the root now, whatever its retry delay (a launched program is
    /// watched closely so that sampling starts with its first Python code).
    pub fn attach_root_now(&mut self) -> Option<Event> {
        let now = Instant::now();
        if !self.targets.contains_key(&self.root) && !self.skipped.contains(&self.root) {
            self.add_waiting(self.root, now);
        }
        if let Some(Target {
            state: State::Waiting { retry, .. },
            ..
        }) = self.targets.get_mut(&self.root)
        {
            *retry = now;
        }
        self.try_attach(self.root, now)
    }

    /// Whether the root is being sampled.
    pub fn root_sampling(&self) -> bool {
        matches!(
            self.targets.get(&self.root).map(|t| &t.state),
            Some(State::Sampling { .. })
        )
    }

    /// Looks for new descendants (at most every 100 ms) and attaches to processes whose
    /// turn has come. Returns what changed.
    pub fn refresh(&mut self) -> Vec<Event> {
        let now = Instant::now();
        let mut events = Vec::new();
        if !self.targets.contains_key(&self.root) && !self.skipped.contains(&self.root) {
            self.add_waiting(self.root, now);
        }
        if self.descendants && self.last_scan.is_none_or(|t| now - t >= SCAN_INTERVAL) {
            self.last_scan = Some(now);
            let alive = descendants(self.root);
            for pid in &alive {
                if !self.targets.contains_key(pid)
                    && !self.skipped.contains(pid)
                    && self.targets.len() < MAX_PROCESSES
                {
                    self.add_waiting(*pid, now);
                }
            }
            // Forget descendants that are gone (the root is watched by the caller).
            let root = self.root;
            self.targets
                .retain(|pid, _| *pid == root || alive.contains(pid));
            self.skipped
                .retain(|pid| alive.contains(pid) || *pid == root);
        }
        let pids: Vec<i32> = self.targets.keys().copied().collect();
        for pid in pids {
            if let Some(event) = self.try_attach(pid, now) {
                events.push(event);
            }
        }
        events
    }

    fn add_waiting(&mut self, pid: i32, now: Instant) {
        self.targets.insert(
            pid,
            Target {
                pid,
                command_line: String::new(),
                state: State::Waiting {
                    exe: None,
                    retry: now,
                    delay: FIRST_RETRY,
                    why: String::new(),
                    since: now,
                },
            },
        );
    }

    fn try_attach(&mut self, pid: i32, now: Instant) -> Option<Event> {
        let target = self.targets.get_mut(&pid)?;
        let State::Waiting {
            exe,
            retry,
            delay,
            since,
            ..
        } = &target.state
        else {
            return None;
        };
        let since = *since;
        let current_exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
        if now < *retry && (exe.is_none() || current_exe == *exe) {
            return None;
        }
        let next_delay = (*delay * 2).min(LONGEST_RETRY);
        match LinuxProcess::open(pid).and_then(Sampler::new) {
            // Before 3.11 the patch level is read from `sys.version`, which an interpreter
            // that is still starting has not made yet: a program launched a moment ago is
            // looked at again, for a while, so that it is reported as `3.9.18` rather than
            // `3.9`. It runs no Python code before `sys` exists, so no sample is lost.
            Ok(sampler)
                if sampler.interpreter().layout.version.patch.is_none()
                    && now.duration_since(since) < PATCH_WAIT =>
            {
                target.state = State::Waiting {
                    exe: current_exe,
                    retry: now + FIRST_RETRY,
                    delay: FIRST_RETRY,
                    why: "its interpreter is starting".to_owned(),
                    since,
                };
                None
            }
            Ok(sampler) => {
                let version = version_string(&sampler);
                let free_threaded = sampler.interpreter().layout.version.free_threaded;
                target.command_line = command_line(sampler.process());
                target.state = State::Sampling {
                    sampler: Box::new(sampler),
                    exe: current_exe,
                    failures: 0,
                };
                Some(Event::Attached {
                    pid,
                    version,
                    free_threaded,
                })
            }
            Err(err) if is_permission_error(&err) => {
                self.targets.remove(&pid);
                self.skipped.insert(pid);
                Some(Event::Skipped {
                    pid,
                    why: crate::errors::one_line(&err),
                })
            }
            Err(err) => {
                let why = if err.downcast_ref::<NotPython>().is_some() {
                    "not a Python program".to_owned()
                } else {
                    format!("{err:#}")
                };
                target.state = State::Waiting {
                    exe: current_exe,
                    retry: now + next_delay,
                    delay: next_delay,
                    why,
                    since,
                };
                None
            }
        }
    }

    /// The processes being sampled, with their samplers.
    pub fn sampling(&self) -> impl Iterator<Item = (&Target, &Sampler<LinuxProcess>)> {
        self.targets.values().filter_map(|t| match &t.state {
            State::Sampling { sampler, .. } => Some((t, &**sampler)),
            State::Waiting { .. } => None,
        })
    }

    /// Whether any process is being sampled.
    pub fn any_sampling(&self) -> bool {
        self.sampling().next().is_some()
    }

    /// Why the root is not sampled yet, if it is not.
    pub fn root_waiting_reason(&self) -> Option<&str> {
        match &self.targets.get(&self.root)?.state {
            State::Waiting { why, .. } => Some(why),
            State::Sampling { .. } => None,
        }
    }

    /// Notes a good sample of `pid`.
    pub fn sample_succeeded(&mut self, pid: i32) {
        if let Some(State::Sampling { failures, .. }) =
            self.targets.get_mut(&pid).map(|t| &mut t.state)
        {
            *failures = 0;
        }
    }

    /// Handles a failed sample of `pid`: a process that exited is dropped; one that
    /// `exec`ed another program, or that keeps failing (it may have `exec`ed the same
    /// program again), is looked at anew; one whose interpreter has shut down is left
    /// alone until it exits. Says which, if either.
    pub fn sample_failed(&mut self, pid: i32, err: &anyhow::Error) -> Option<Change> {
        let target = self.targets.get_mut(&pid)?;
        let State::Sampling { exe, failures, .. } = &mut target.state else {
            return None;
        };
        // A shut-down interpreter fails every pass until the process exits; that is not
        // a sign of a new program to look for.
        if !is_interpreter_exiting(err) {
            *failures += 1;
        }
        let current_exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
        if is_process_gone(err) || current_exe.is_none() {
            if pid == self.root {
                // Keep the root's entry: the caller decides when the recording ends.
                target.state = waiting(None, "exited".to_owned());
            } else {
                self.targets.remove(&pid);
            }
            return Some(Change::Exited);
        }
        if current_exe != *exe {
            target.state = waiting(current_exe, "exec'd another program".to_owned());
            return Some(Change::Exec);
        }
        if *failures >= MAX_FAILURES {
            target.state = waiting(current_exe, "exec'd another program".to_owned());
            return Some(Change::Reset);
        }
        None
    }
}

/// What a failed sample revealed about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It exited.
    Exited,
    /// It runs another program now (its executable changed); its interpreter is looked
    /// for again.
    Exec,
    /// It could not be read many times in a row (it may have `exec`ed the same program
    /// again); its interpreter is looked for again.
    Reset,
}

fn waiting(exe: Option<PathBuf>, why: String) -> State {
    let now = Instant::now();
    State::Waiting {
        exe,
        retry: now,
        delay: FIRST_RETRY,
        why,
        since: now,
    }
}

fn command_line(process: &LinuxProcess) -> String {
    process
        .command_line()
        .map(|args| args.join(" "))
        .unwrap_or_default()
}

/// Every live descendant of `root`, from `/proc/PID/task/TID/children` (a child belongs
/// to the thread that forked it, so every thread is read). Bounded in count and depth.
pub(crate) fn descendants(root: i32) -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut level = vec![root];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for pid in level {
            for child in children(pid) {
                if child != root && found.len() < MAX_PROCESSES && found.insert(child) {
                    next.push(child);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    found
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_children_and_grandchildren() {
        // sh starts a sleep (child) and another sh that starts a sleep (grandchild).
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 5 & sh -c 'sleep 5 & wait' & wait"])
            .spawn()
            .unwrap();
        let root = sh.id() as i32;
        let start = Instant::now();
        let mut found = BTreeSet::new();
        while start.elapsed() < Duration::from_secs(5) {
            found = descendants(root);
            if found.len() >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let comms: Vec<String> = found
            .iter()
            .filter_map(|p| fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| c.trim().to_owned())
            .collect();
        let _ = Command::new("pkill")
            .args(["-P", &root.to_string()])
            .status();
        for pid in &found {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = sh.kill();
        let _ = sh.wait();
        assert_eq!(found.len(), 3, "{comms:?}");
        assert_eq!(
            comms.iter().filter(|c| *c == "sleep").count(),
            2,
            "{comms:?}"
        );
    }
}
