//! Taking a snapshot of every Python thread of a process: its stack, OS id, name, whether
//! it runs and whether it holds the GIL. `dump` takes one; `record` and `top` take many.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::interpreter::{self, Interpreter, ShutdownMark};
use crate::memory::{is_process_gone, MemoryReaderExt};
use crate::process::{PauseGuard, Process, ThreadActivity};
use crate::threads;
use crate::walker::{CodeCache, Frame, ThreadStack, Walker};

/// Attempts at reading one thread's stack before reporting it as unreadable: without
/// pausing, a running thread can change its stack under us.
const STACK_ATTEMPTS: usize = 3;
/// How long a paused thread whose stack did not walk is let run before it is read again,
/// one nudge after another (see `Sampler::read_nudged`).
const NUDGES: [Duration; 3] = [
    Duration::from_micros(50),
    Duration::from_micros(250),
    Duration::from_millis(1),
];
/// Times in a row a thread's stack may fail to walk after every nudge before it is no
/// longer nudged.
const UNSETTLED_LIMIT: u32 = 3;
/// Most thread states remembered as unsettled.
const MAX_UNSETTLED: usize = 1024;
/// Thread names change rarely; reading them walks dictionaries, so a sampler rereads
/// them at most this often, or sooner when a thread it has no name for appears...
const NAMES_MAX_AGE: Duration = Duration::from_secs(1);
/// ...but not more often than this, so a burst of new threads does not cost a read each.
const NAMES_MIN_AGE: Duration = Duration::from_millis(100);
/// Without pausing, the OS thread list is listed again at least this often, or at the
/// next snapshot when this one met a thread it does not hold (listing `/proc/PID/task`
/// costs about a tenth of a nonblocking pass at 1 kHz).
const THREAD_LIST_MAX_AGE: Duration = Duration::from_millis(100);

/// A snapshot failed because the interpreter is shutting down (`Py_FinalizeEx` has begun
/// freeing what the sampler reads): the process is about to exit, and the failure is not
/// counted as a sampling error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterExiting;

impl std::fmt::Display for InterpreterExiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the interpreter is shutting down")
    }
}

impl std::error::Error for InterpreterExiting {}

/// Whether `err` is (or wraps) [`InterpreterExiting`].
pub fn is_interpreter_exiting(err: &anyhow::Error) -> bool {
    err.downcast_ref::<InterpreterExiting>().is_some()
}

/// What to collect.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotOptions {
    /// Read arguments and local variables.
    pub locals: bool,
    /// Read without stopping the target (less consistent, no pause).
    pub nonblocking: bool,
    /// Read the names `threading` gave the threads (cached between snapshots).
    pub thread_names: bool,
    /// Read which thread holds the GIL (else no thread is said to own it).
    pub gil: bool,
    /// The caller drops idle threads: threads found waiting before the pause are neither
    /// stopped nor walked (they are listed idle, with no frames). Used only where the
    /// layout gives each thread state its OS thread id (3.11+), so that the threads can be
    /// told apart before their stacks are read.
    pub skip_idle: bool,
    /// Keep the threads attached between snapshots (see [`Process::keep_attached`]): for
    /// callers that take many, on one thread, sleeping with [`crate::process::sleep`].
    pub hold: bool,
}

/// One thread at the moment of the snapshot.
#[derive(Debug, Clone)]
pub struct ThreadSnapshot {
    /// The OS thread id, when known.
    pub os_thread_id: Option<i64>,
    /// `threading.get_ident()`.
    pub python_thread_id: u64,
    /// The name `threading` gave the thread.
    pub name: Option<String>,
    /// Running (not blocked in a waiting system call).
    pub active: bool,
    /// Holds the GIL (always false unless the snapshot asked, [`SnapshotOptions::gil`]).
    pub owns_gil: bool,
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// The stack was deeper than we follow.
    pub truncated: bool,
    /// Why the stack could not be read, if it could not.
    pub error: Option<String>,
}

/// Every thread of one interpreter.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Threads, oldest first (the main thread usually leads).
    pub threads: Vec<ThreadSnapshot>,
}

/// A process with its interpreter located, and what it learnt in earlier snapshots.
pub struct Sampler<P: Process> {
    process: P,
    interpreter: Interpreter,
    state: RefCell<State>,
}

/// What does not change between snapshots, or changes slowly.
#[derive(Default)]
struct State {
    codes: CodeCache,
    names: HashMap<u64, String>,
    names_read: Option<Instant>,
    /// Where this C library keeps the kernel tid in `struct pthread` (before 3.11).
    tid_offset: Option<usize>,
    /// The OS thread list of an earlier nonblocking snapshot, and when it was listed.
    listed: Option<(Vec<i32>, Instant)>,
    /// The last snapshot met a thread that `listed` lacks, or one that has gone.
    relist: bool,
    /// Thread states whose stack did not walk after every nudge, with how many passes in
    /// a row that happened.
    unsettled: HashMap<u64, u32>,
}

impl<P: Process> Sampler<P> {
    /// Finds the interpreter in `process`.
    pub fn new(process: P) -> Result<Self> {
        let interpreter = interpreter::find(&process)?;
        Ok(Sampler {
            process,
            interpreter,
            state: RefCell::new(State::default()),
        })
    }

    /// The process being sampled.
    pub fn process(&self) -> &P {
        &self.process
    }

    /// The interpreter found in it.
    pub fn interpreter(&self) -> &Interpreter {
        &self.interpreter
    }

    /// Reads every thread once. Unless `nonblocking`, the target is stopped for the read and
    /// resumed before this returns, whatever happens.
    pub fn snapshot(&self, options: SnapshotOptions) -> Result<Snapshot> {
        let recent = if options.nonblocking {
            None
        } else {
            self.process.recent_threads()
        };
        let os_tids = match recent {
            Some(tids) => tids,
            None if options.nonblocking => self.listed_threads()?,
            None => self.process.threads().context("listing threads")?,
        };
        // Activity is read before pausing: a stopped thread's state letter says only that
        // it is stopped. Idle threads (most of a server's) are settled by this read.
        let mut activity: HashMap<i32, ThreadActivity> = os_tids
            .iter()
            .filter_map(|t| self.process.thread_activity(*t).ok().map(|a| (*t, a)))
            .collect();
        if activity.len() < os_tids.len() {
            self.state.borrow_mut().relist = true;
        }
        let skip_idle =
            options.skip_idle && self.interpreter.layout.thread.native_thread_id.is_some();
        // (A pause that attaches stops the main thread even when it is listed here; see
        // `Process::pause_listed`. It is still not walked.)
        let skipped: Vec<i32> = if skip_idle {
            os_tids
                .iter()
                .copied()
                .filter(|t| activity.get(t) == Some(&ThreadActivity::Idle))
                .collect()
        } else {
            Vec::new()
        };
        let mut pause = if options.nonblocking {
            None
        } else {
            if options.hold {
                self.process.keep_attached();
            }
            let pause = self
                .process
                .pause_listed(&os_tids, &skipped)
                .context("pausing the process")?;
            // A thread that looked runnable may only be on its way back into a wait that
            // our previous pause interrupted (on a busy machine it can sit runnable for
            // milliseconds). Stopped, its `syscall` file tells: the call it is in, or
            // none while it runs Python.
            for (tid, state) in activity.iter_mut() {
                if *state == ThreadActivity::Active {
                    if let Ok(now) = self.process.paused_thread_activity(*tid) {
                        *state = now;
                    }
                }
            }
            Some(pause)
        };
        let pause = pause.as_mut().map(|p| &mut **p as &mut dyn PauseGuard);
        let snapshot = self.read_threads(options, &os_tids, &activity, &skipped, pause);
        // `Py_FinalizeEx` frees the thread states and then the interpreter while the
        // process lives on for a few more milliseconds: what fails to read then is the
        // shutdown, not a bad sample. (Read while the threads are still stopped.)
        let unreadable = match &snapshot {
            Ok(s) => s.threads.iter().any(|t| t.error.is_some()),
            Err(err) => !is_process_gone(err),
        };
        if unreadable && self.interpreter_exiting() {
            return Err(match snapshot {
                Ok(_) => anyhow::Error::new(InterpreterExiting),
                Err(err) => err.context(InterpreterExiting),
            });
        }
        snapshot
    }

    /// Whether the target has begun to shut its interpreter down (false when we cannot
    /// tell: no symbol to read it from).
    fn interpreter_exiting(&self) -> bool {
        match self.interpreter.shutdown {
            Some(ShutdownMark::Finalizing(at)) => self.process.read_u64(at).is_ok_and(|t| t != 0),
            Some(ShutdownMark::InterpreterList(at)) => self.process.read_u64(at) == Ok(0),
            None => false,
        }
    }

    /// Reads again, between nudges ([`PauseGuard::nudge`]), the stack of a paused thread
    /// whose read failed: CPython stopped at the wrong instruction can hold a stack that
    /// does not walk (3.11 and 3.12 point the thread state at a new evaluation loop's C
    /// frame some twenty instructions before they write that frame), and a few
    /// microseconds later it walks. A thread whose stack did not walk after every nudge
    /// [`UNSETTLED_LIMIT`] times in a row is not nudged any more until it walks again:
    /// a stack that never walks would otherwise cost every pass the nudges' time.
    #[allow(clippy::too_many_arguments)]
    fn read_nudged(
        &self,
        walker: &mut Walker<'_, P>,
        state: &mut State,
        pause: &mut dyn PauseGuard,
        tstate: u64,
        options: SnapshotOptions,
        walk: impl Fn(Option<u64>) -> bool + Copy,
        mut result: Result<ThreadStack>,
    ) -> Result<Result<ThreadStack>> {
        if state
            .unsettled
            .get(&tstate)
            .is_some_and(|&n| n >= UNSETTLED_LIMIT)
        {
            return Ok(result);
        }
        // Only a thread state that names its OS thread (3.11+) can be nudged.
        let Some(tid) = walker.native_thread_id(tstate) else {
            return Ok(result);
        };
        for run_for in NUDGES {
            if !pause
                .nudge(tid, run_for)
                .context("letting a thread run on")?
            {
                break;
            }
            walker.forget_read_ahead();
            result = walker.stack_if(tstate, options.locals, walk);
            if result.is_ok() {
                state.unsettled.remove(&tstate);
                return Ok(result);
            }
        }
        // Threads that end unsettled leave their entry behind: bounded, since thread
        // states come and go for as long as the program runs.
        if state.unsettled.len() >= MAX_UNSETTLED {
            state.unsettled.clear();
        }
        *state.unsettled.entry(tstate).or_default() += 1;
        Ok(result)
    }

    /// The OS thread list for a nonblocking snapshot: the one listed before while it is
    /// fresh, else listed again.
    fn listed_threads(&self) -> Result<Vec<i32>> {
        let mut state = self.state.borrow_mut();
        if let Some((tids, at)) = &state.listed {
            if !state.relist && at.elapsed() < THREAD_LIST_MAX_AGE {
                return Ok(tids.clone());
            }
        }
        let tids = self.process.threads().context("listing threads")?;
        state.listed = Some((tids.clone(), Instant::now()));
        state.relist = false;
        Ok(tids)
    }

    fn read_threads(
        &self,
        options: SnapshotOptions,
        os_tids: &[i32],
        activity: &HashMap<i32, ThreadActivity>,
        skipped: &[i32],
        pause: Option<&mut dyn PauseGuard>,
    ) -> Result<Snapshot> {
        let interp = &self.interpreter;
        let mut state = self.state.borrow_mut();
        let mut codes = std::mem::take(&mut state.codes);
        codes.begin_pass();
        let mut walker = Walker::with_cache(&self.process, &interp.layout, codes);
        let result = self.read_with(
            &mut walker,
            &mut state,
            options,
            os_tids,
            activity,
            skipped,
            pause,
        );
        state.codes = walker.into_cache();
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn read_with(
        &self,
        walker: &mut Walker<'_, P>,
        state: &mut State,
        options: SnapshotOptions,
        os_tids: &[i32],
        activity: &HashMap<i32, ThreadActivity>,
        skipped: &[i32],
        mut pause: Option<&mut dyn PauseGuard>,
    ) -> Result<Snapshot> {
        let interp = &self.interpreter;
        let walk = |native: Option<u64>| native.is_none_or(|t| !skipped.contains(&(t as i32)));
        let mut tstates = walker
            .thread_states(interp.interp)
            .context("reading the thread list")?;
        // The list is newest first; people expect the main thread first.
        tstates.reverse();
        let gil = if options.gil {
            threads::gil_holder(&self.process, interp)
        } else {
            None
        };
        let mut stacks = Vec::with_capacity(tstates.len());
        for tstate in &tstates {
            let mut result = walker.stack_if(*tstate, options.locals, walk);
            match pause.as_deref_mut() {
                Some(pause) if result.is_err() => {
                    result =
                        self.read_nudged(walker, state, pause, *tstate, options, walk, result)?;
                }
                Some(_) if !state.unsettled.is_empty() => {
                    state.unsettled.remove(tstate);
                }
                Some(_) => {}
                None => {
                    for _ in 1..STACK_ATTEMPTS {
                        if result.is_ok() {
                            break;
                        }
                        result = walker.stack_if(*tstate, options.locals, walk);
                    }
                }
            }
            // A vanished process is not one unreadable thread: the whole snapshot is over.
            let result = match result {
                Err(err) if is_process_gone(&err) => {
                    return Err(err.context("reading thread stacks"));
                }
                other => other,
            };
            stacks.push((*tstate, result));
        }
        let pthreads: Vec<u64> = stacks
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.python_thread_id))
            .collect();
        if options.thread_names {
            let age = state.names_read.map(|t| t.elapsed());
            let unnamed = pthreads.iter().any(|p| !state.names.contains_key(p));
            let stale = match age {
                None => true,
                Some(age) => age >= NAMES_MAX_AGE || (unnamed && age >= NAMES_MIN_AGE),
            };
            if stale {
                state.names = threads::thread_names(walker.objects(), interp);
                state.names_read = Some(Instant::now());
            }
        }
        let names = &state.names;
        let needs_mapping = interp.layout.thread.native_thread_id.is_none();
        let os_ids = if needs_mapping {
            let known = state.tid_offset.and_then(|offset| {
                threads::os_thread_ids_at(&self.process, &pthreads, os_tids, offset)
            });
            match known {
                Some(ids) => ids,
                None => {
                    let (ids, offset) = threads::os_thread_ids(&self.process, &pthreads, os_tids);
                    state.tid_offset = offset;
                    ids
                }
            }
        } else {
            HashMap::new()
        };
        // Without pausing, the list is kept between passes (`listed_threads`): a thread
        // with no OS id, or one the list lacks, started after it was taken, so list again
        // next time. (Sorted for the lookups: a server can have a thousand threads.)
        if options.nonblocking {
            let mut listed = os_tids.to_vec();
            listed.sort_unstable();
            let unlisted = |stack: &crate::walker::ThreadStack| match stack.native_thread_id {
                Some(t) => listed.binary_search(&(t as i32)).is_err(),
                None => !os_ids.contains_key(&stack.python_thread_id),
            };
            if stacks.iter().any(|(_, s)| s.as_ref().is_ok_and(&unlisted)) {
                state.relist = true;
            }
        }
        let threads = stacks
            .into_iter()
            .map(|(tstate, result)| match result {
                Ok(stack) => {
                    let os_thread_id = stack
                        .native_thread_id
                        .map(|id| id as i64)
                        .or_else(|| os_ids.get(&stack.python_thread_id).map(|t| i64::from(*t)));
                    let active = os_thread_id
                        .and_then(|t| activity.get(&(t as i32)))
                        .is_none_or(|a| *a == ThreadActivity::Active);
                    ThreadSnapshot {
                        os_thread_id,
                        python_thread_id: stack.python_thread_id,
                        name: if options.thread_names {
                            names.get(&stack.python_thread_id).cloned()
                        } else {
                            None
                        },
                        active,
                        owns_gil: gil == Some(tstate),
                        frames: stack.frames,
                        truncated: stack.truncated,
                        error: None,
                    }
                }
                Err(err) => ThreadSnapshot {
                    os_thread_id: None,
                    python_thread_id: 0,
                    name: None,
                    active: false,
                    owns_gil: gil == Some(tstate),
                    frames: Vec::new(),
                    truncated: false,
                    error: Some(format!("{err:#}")),
                },
            })
            .collect();
        Ok(Snapshot { threads })
    }
}
