//! Linux implementation of [`super::Process`].
//!
//! Everything comes from `/proc/PID` and three system calls: `process_vm_readv` for memory,
//! and `ptrace` (seize, interrupt, detach) plus `waitpid` to pause the target: per pause,
//! or once for a sampler that keeps the threads attached (`super::tracer`). Nothing here
//! needs the target's cooperation, and nothing survives us: if the profiler dies while the
//! target is paused or held, the kernel detaches and the target resumes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::c_void;
use std::fs::{self, File};
use std::io::{self, IoSliceMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use super::tracer;
use super::{AlreadyTraced, MapRange, PauseGuard, PermissionDenied, Process, ThreadActivity};
use crate::memory::{MemoryReader, ReadError, ReadErrorKind, ReadResult};

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether the process at `proc_dir` is a kernel thread: it has no memory of its own, and
/// its missing `exe` link would otherwise read as "the process has exited".
fn is_kernel_thread(proc_dir: &Path) -> bool {
    fs::read_to_string(proc_dir.join("stat")).is_ok_and(|stat| {
        // Fields after the command name, which may itself hold spaces or parentheses;
        // flags is the 9th field of the line, the 7th after the name.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        rest.split_whitespace()
            .nth(6)
            .and_then(|f| f.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    })
}

/// A live process on Linux, inspected through `/proc/PID`, `process_vm_readv` and `ptrace`.
#[derive(Debug)]
pub struct LinuxProcess {
    pid: i32,
    /// `/proc/PID`, kept so every lookup names the same directory.
    proc_dir: PathBuf,
    /// Task whose id we hand to `process_vm_readv`: the pid, unless the main thread has
    /// exited (its task then has no memory) while other threads run on.
    mem_task: AtomicI32,
    /// Open `stat` and `syscall` files of threads, reread with `pread` on every sample
    /// instead of opened and closed each time. Bounded by [`max_task_files`]; a thread
    /// beyond it has its files opened per read, as do threads whose file failed.
    task_files: Mutex<HashMap<(i32, TaskFile), File>>,
    /// The thread list the last pause ended with, for the next snapshot.
    recent_threads: Mutex<Option<Vec<i32>>>,
    /// A `syscall` file was refused (it needs ptrace-level access): activity comes from
    /// `stat` alone from then on, instead of a refused open per thread and sample.
    syscall_denied: AtomicBool,
    /// Threads stay seized between pauses (see [`Process::keep_attached`] and `tracer`).
    held: AtomicBool,
    /// Held, and every thread was seized by a pause that listed until nothing was new:
    /// from then on the kernel hands us each new thread (`PTRACE_O_TRACECLONE`).
    established: AtomicBool,
}

/// Most task files one process keeps open: a quarter of the descriptors we may open
/// (256 under the common soft limit of 1,024; a thousand-thread server's whole set under
/// the larger limits of containers and systemd services), at most 4,096. Beyond it a
/// thread's file is opened for each read, which costs three system calls instead of one.
fn max_task_files() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        usize::try_from(soft / 4)
            .unwrap_or(usize::MAX)
            .clamp(64, 4096)
    })
}

/// A per-thread `/proc` file read on every sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TaskFile {
    Stat,
    Syscall,
}

impl LinuxProcess {
    /// Opens the process `pid`. Fails with `no process with pid N` if there is none (or it is
    /// a zombie that already exited), and refuses a thread id that is not a process id, since
    /// `/proc/TID` exists for threads too but names only part of a process.
    pub fn open(pid: i32) -> Result<Self> {
        if pid <= 0 {
            bail!("no process with pid {pid}");
        }
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let status = match fs::read_to_string(proc_dir.join("status")) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => bail!("no process with pid {pid}"),
            Err(e) => {
                return Err(e).with_context(|| format!("reading /proc/{pid}/status"));
            }
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        if let Some(tgid) = field("Tgid:").and_then(|t| t.parse::<i32>().ok()) {
            if tgid != pid {
                bail!("{pid} is a thread of process {tgid}, not a process id; use {tgid}");
            }
        }
        if is_kernel_thread(&proc_dir) {
            let name = field("Name:").unwrap_or("?");
            bail!("{pid} ({name}) is a kernel thread, not a Python process");
        }
        let process = LinuxProcess {
            pid,
            proc_dir,
            mem_task: AtomicI32::new(pid),
            task_files: Mutex::new(HashMap::new()),
            recent_threads: Mutex::new(None),
            syscall_denied: AtomicBool::new(false),
            held: AtomicBool::new(false),
            established: AtomicBool::new(false),
        };
        // The state shown is the main thread's: a zombie there may still have live threads.
        let zombie = field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X'));
        if zombie && !process.is_alive() {
            bail!("process {pid} is a zombie: it exited, and its parent has not reaped it yet");
        }
        Ok(process)
    }

    /// Whether the process still exists and has not exited. A zombie keeps its `/proc`
    /// entry but has no memory any more, so it counts as gone; a process whose main thread
    /// alone exited is alive.
    fn is_alive(&self) -> bool {
        alive(&self.proc_dir.join("stat")) || self.live_task().is_some()
    }

    /// A thread whose `/proc` entry shows the process's memory, maps and files: the main
    /// thread normally. Once the main thread has exited (`pthread_exit` while others run)
    /// its entries are empty, so another live thread stands in.
    fn mm_task(&self) -> i32 {
        let task = self.mem_task.load(Ordering::Relaxed);
        if self.thread_alive(task) {
            return task;
        }
        match self.live_task() {
            Some(live) => {
                self.mem_task.store(live, Ordering::Relaxed);
                live
            }
            None => task,
        }
    }

    /// `/proc/TID` of [`Self::mm_task`] (the same as `/proc/PID` normally).
    fn mm_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.mm_task()))
    }

    /// Some thread of the process that has not exited, if any.
    fn live_task(&self) -> Option<i32> {
        fs::read_dir(self.proc_dir.join("task"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&tid| self.thread_alive(tid))
    }

    /// Error for the file `name` of `/proc/PID` that could not be read: "process gone" if
    /// that is the reason, a [`PermissionDenied`] if access was refused, else the OS error.
    fn proc_error(&self, err: io::Error, name: &str) -> anyhow::Error {
        let file = self.proc_dir.join(name);
        if err.kind() == io::ErrorKind::NotFound || !self.is_alive() {
            anyhow!(
                "process {} has exited (reading {})",
                self.pid,
                file.display()
            )
        } else if err.kind() == io::ErrorKind::PermissionDenied {
            // The file name and errno add nothing a user can act on: what matters is that
            // the kernel refuses us this process (see `errors::one_line` for the hint).
            anyhow::Error::new(err).context(PermissionDenied(format!(
                "cannot read process {}: permission denied",
                self.pid
            )))
        } else {
            anyhow::Error::new(err).context(format!("reading {}", file.display()))
        }
    }

    /// Seizes one thread and asks it to stop, without waiting for the stop (see
    /// [`Process::pause`] for why). Records it in `guard` as soon as it is seized so that
    /// any failure afterwards still detaches it.
    fn seize_and_interrupt(&self, tid: i32, guard: &mut Paused) -> Result<()> {
        let pid = Pid::from_raw(tid);
        // PTRACE_O_TRACEEXEC: a thread that execs while we hold it stops when the exec is
        // done. Without it the stop we ask for can be lost in the exec: the new program ran
        // on, traced, and the pause waited until it exited (a `sleep 3` made a 3 s pause).
        if !self.seize(tid, || {
            ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACEEXEC)
        })? {
            return Ok(());
        }
        guard.add(tid);
        match ptrace::interrupt(pid) {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => {
                // Gone (released): nothing to wait for, detaching would fail anyway.
                guard.forget_last();
                Ok(())
            }
            Err(e) => {
                Err(io::Error::from(e)).with_context(|| format!("ptrace interrupt of thread {tid}"))
            }
        }
    }

    /// Seizes thread `tid` with `seize`, turning its failure into the error a user can act
    /// on. False if the thread is gone (nothing to stop).
    fn seize(&self, tid: i32, seize: impl FnOnce() -> nix::Result<()>) -> Result<bool> {
        match seize() {
            Ok(()) => Ok(true),
            // The thread exited between listing and attaching: nothing to stop.
            Err(Errno::ESRCH) => Ok(false),
            // The kernel also answers EPERM for a thread that already exited (a zombie
            // thread, e.g. a main thread that returned while others run): skip it rather
            // than report a permission problem.
            Err(Errno::EPERM) if !self.thread_alive(tid) => Ok(false),
            // A debugger (gdb, strace, another profiler) already holds the thread: this is
            // not about privileges, and the fix is different, so say who holds it.
            Err(Errno::EPERM) if self.tracer_of(tid).is_some() => {
                let tracer = self.tracer_of(tid).unwrap_or_default();
                let name = fs::read_to_string(format!("/proc/{tracer}/comm"))
                    .map(|comm| format!(" ({})", comm.trim_end()))
                    .unwrap_or_default();
                Err(AlreadyTraced(format!(
                    "process {} is already traced by process {tracer}{name}, and a process \
                     can have only one tracer (hint: detach the other tracer, or pass \
                     --nonblocking to read without stopping the process)",
                    self.pid
                ))
                .into())
            }
            Err(e @ (Errno::EPERM | Errno::EACCES)) => Err(anyhow::Error::new(io::Error::from(e))
                .context(PermissionDenied(format!(
                    "cannot attach to thread {tid} of process {} with ptrace: permission denied \
                 (ptrace restrictions or missing CAP_SYS_PTRACE, or another debugger is \
                 already attached)",
                    self.pid
                )))),
            Err(e) => {
                Err(io::Error::from(e)).with_context(|| format!("ptrace seize of thread {tid}"))
            }
        }
    }
}

/// The text of a small `/proc` file (a `stat` or `syscall` line), read into `buf` without
/// the size query and heap buffer of `fs::read_to_string`: these are read on every sample.
/// Text that does not fit is cut at the end of `buf`.
fn read_small<'b>(path: &Path, buf: &'b mut [u8]) -> io::Result<&'b str> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    std::str::from_utf8(&buf[..len]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Whether the task whose `stat` file is `stat` exists and is neither a zombie nor dead.
fn alive(stat: &Path) -> bool {
    match fs::read_to_string(stat) {
        Ok(text) => !matches!(stat_state(&text), Some('Z' | 'X') | None),
        Err(_) => false,
    }
}

/// The state letter of a `/proc/.../stat` line. The command name in parentheses may itself
/// contain spaces and parentheses, so the state is found after the *last* `)`.
fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Whether an x86_64 system call number is one a thread sits in while waiting for something
/// (I/O, a lock, a timer, a child, a signal), so that a thread blocked in it is idle rather
/// than working. `sched_yield` is deliberately absent: a spinning thread that yields is busy.
fn is_waiting_syscall_x86_64(nr: i64) -> bool {
    matches!(
        nr,
        0       // read
        | 7     // poll
        | 23    // select
        | 34    // pause
        | 35    // nanosleep
        | 42    // connect
        | 43    // accept
        | 45    // recvfrom
        | 47    // recvmsg
        | 61    // wait4
        | 65    // semop
        | 70    // msgrcv
        | 128   // rt_sigtimedwait
        | 130   // rt_sigsuspend
        | 202   // futex
        | 219   // restart_syscall: resuming one of these after an interruption (ours)
        | 220   // semtimedop
        | 230   // clock_nanosleep
        | 232   // epoll_wait
        | 247   // waitid
        | 270   // pselect6
        | 271   // ppoll
        | 281   // epoll_pwait
        | 288   // accept4
        | 441   // epoll_pwait2
        | 449 // futex_waitv
    )
}

/// Decides activity from a thread's state letter (`'?'` when only the `syscall` file was
/// read) and the contents of its `syscall` file (`None` when that file could not be read).
fn activity_from(state: char, syscall: Option<&str>) -> ThreadActivity {
    if state == 'R' {
        return ThreadActivity::Active;
    }
    match syscall {
        Some(text) => {
            // "running", "-1 ..." (not in a system call) or "NR args...".
            let first = text.split_whitespace().next().unwrap_or("");
            match first.parse::<i64>() {
                Ok(nr) if nr >= 0 && waiting_syscall(nr) => ThreadActivity::Idle,
                _ => ThreadActivity::Active,
            }
        }
        // The syscall file needs ptrace-level access; without it, a sleeping thread
        // (interruptible or not) is almost always blocked in a waiting call.
        None if matches!(state, 'S' | 'D' | 'I') => ThreadActivity::Idle,
        None => ThreadActivity::Active,
    }
}

/// The waiting-syscall table for the architecture we run on (only x86_64 so far; elsewhere
/// nothing counts as waiting and every thread looks active).
fn waiting_syscall(nr: i64) -> bool {
    if cfg!(target_arch = "x86_64") {
        is_waiting_syscall_x86_64(nr)
    } else {
        false
    }
}

/// Exit statuses of processes that a pause reaped: a launched program is both our child
/// and our tracee, so waiting for its threads to stop can consume its exit status.
static REAPED: Mutex<BTreeMap<i32, libc::c_int>> = Mutex::new(BTreeMap::new());

/// The raw wait status of `pid` if a pause reaped it (once; the entry is removed).
pub fn take_reaped_status(pid: i32) -> Option<libc::c_int> {
    REAPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid)
}

/// One thread we seized.
#[derive(Debug)]
struct Stopped {
    tid: i32,
    state: StopState,
    /// Signal to deliver on detach (0 for none).
    signal: i32,
    /// The stop is a group stop (SIGSTOP and the like): the thread stays stopped after us.
    group_stop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopState {
    /// Seized and asked to stop; no stop seen yet (a running tracee cannot be detached).
    Pending,
    /// In a ptrace stop: ours to read, then to detach.
    Stopped,
    /// Exited (and reaped) or vanished: nothing left to detach.
    Gone,
}

/// Keeps the seized threads stopped; detaches them all on drop.
#[derive(Debug)]
struct Paused {
    /// The process (its main thread's id).
    pid: i32,
    threads: Vec<Stopped>,
    /// Index in `threads` by thread id.
    index: HashMap<i32, usize>,
}

impl PauseGuard for Paused {
    fn nudge(&mut self, tid: i32, run_for: Duration) -> Result<bool> {
        let Some(&i) = self.index.get(&tid) else {
            return Ok(false);
        };
        let t = &mut self.threads[i];
        if t.state != StopState::Stopped || t.group_stop || !cont(tid, t.signal) {
            return Ok(false);
        }
        t.signal = 0;
        t.state = StopState::Pending;
        std::thread::sleep(run_for);
        // ESRCH: it is exiting; `wait_pending` takes its exit.
        let _ = ptrace::interrupt(Pid::from_raw(tid));
        self.wait_pending()?;
        Ok(self.threads[i].state == StopState::Stopped)
    }
}

impl Paused {
    fn new(pid: i32) -> Paused {
        Paused {
            pid,
            threads: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(&mut self, tid: i32) {
        self.index.insert(tid, self.threads.len());
        self.threads.push(Stopped {
            tid,
            state: StopState::Pending,
            signal: 0,
            group_stop: false,
        });
    }

    fn forget_last(&mut self) {
        if let Some(t) = self.threads.pop() {
            self.index.remove(&t.tid);
        }
    }

    fn any(&self, state: StopState) -> bool {
        self.threads.iter().any(|t| t.state == state)
    }

    /// Waits until no seized thread is [`StopState::Pending`].
    ///
    /// When no pending thread has reported yet, this waits for a report from any of our
    /// tracees, never for one particular thread: a thread inside `execve` does not stop
    /// until every other thread of its process is gone, and those we hold, killed by the
    /// exec, are gone only once we reap them. Waiting for the exec'ing thread alone
    /// deadlocked both processes (py-spy in `wait4`, the target in `begin_new_exec`). But
    /// such a wait looks at every tracee, so reports are first collected thread by thread
    /// without blocking: with a thousand threads, waiting on any tracee each time made
    /// the pause cost quadratic.
    ///
    /// Uses `libc::waitpid` rather than nix's wrapper: nix fails to decode stops for
    /// real-time signals, and the status it consumed would be lost.
    fn wait_pending(&mut self) -> Result<()> {
        loop {
            for i in 0..self.threads.len() {
                if self.threads[i].state != StopState::Pending {
                    continue;
                }
                let tid = self.threads[i].tid;
                match wait_status(tid, libc::WNOHANG)? {
                    // Nothing yet.
                    Some((0, _)) => {}
                    Some((r, status)) => self.report(r, status),
                    // Not a tracee of ours any more: a thread that exec'd from another
                    // thread than the main one now reports under the main thread's id, and
                    // its own id is gone without a report.
                    None => self.threads[i].state = StopState::Gone,
                }
            }
            if !self.any(StopState::Pending) {
                return Ok(());
            }
            match wait_status(-1, 0)? {
                Some((r, status)) => self.report(r, status),
                // No tracee or child left at all: whatever is pending is gone.
                None => self.forget_pending(),
            }
        }
    }

    /// Marks every pending thread as gone.
    fn forget_pending(&mut self) {
        for t in &mut self.threads {
            if t.state == StopState::Pending {
                t.state = StopState::Gone;
            }
        }
    }

    /// Takes in one wait status of `who`.
    fn report(&mut self, who: i32, status: libc::c_int) {
        let ended = libc::WIFEXITED(status) || libc::WIFSIGNALED(status);
        match self.index.get(&who).map(|&i| &mut self.threads[i]) {
            Some(t) if ended => {
                t.state = StopState::Gone;
                // Our own child (a launched program): its exit status was just consumed;
                // keep it for whoever waits for the program.
                if who == self.pid {
                    stash_exit(who, status);
                }
            }
            Some(t) if libc::WIFSTOPPED(status) => {
                let event = status >> 16;
                // An event stop (our interrupt, or a group stop) carries no signal to
                // re-inject; a plain stop is a signal on its way in, which must not be lost.
                t.signal = if event == 0 {
                    libc::WSTOPSIG(status)
                } else {
                    0
                };
                t.group_stop = event == libc::PTRACE_EVENT_STOP
                    && tracer::is_stop_signal(libc::WSTOPSIG(status));
                t.state = StopState::Stopped;
            }
            Some(_) => {}
            // A thread another sampler of ours holds between its passes.
            None if tracer::is_held(who) => tracer::report(who, status),
            // Not one of this pause's threads: a child of ours that ended (a launched
            // program, while one of its descendants was being paused), or a tracee that
            // is not ours to keep: release it.
            None if ended => stash_exit(who, status),
            None if libc::WIFSTOPPED(status) => {
                detach(who, 0);
            }
            None => {}
        }
    }
}

/// `waitpid(who, __WALL | __WNOTHREAD | flags)`: `Some((pid, status))` for a report,
/// `Some((0, 0))` when WNOHANG found none, `None` when `who` is no tracee or child of
/// ours (ECHILD). __WNOTHREAD: only this thread's tracees and children, not those of
/// other threads of ours.
pub(super) fn wait_status(who: i32, flags: libc::c_int) -> Result<Option<(i32, libc::c_int)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain system call with a valid pointer to a local.
        let r =
            unsafe { libc::waitpid(who, &mut status, libc::__WALL | libc::__WNOTHREAD | flags) };
        if r >= 0 {
            return Ok(Some((r, status)));
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::ECHILD => return Ok(None),
            e => return Err(io::Error::from(e)).context("waiting for threads to stop"),
        }
    }
}

pub(super) fn stash_exit(pid: i32, status: libc::c_int) {
    REAPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid, status);
}

/// Resumes a stopped tracee, delivering `signal` (0 for none). False if it was not
/// attached and stopped any more.
pub(super) fn cont(tid: i32, signal: i32) -> bool {
    restart(libc::PTRACE_CONT, tid, signal)
}

/// Detaches a stopped tracee, delivering `signal` (0 for none). False if it was not
/// attached and stopped any more (killed, or gone).
pub(super) fn detach(tid: i32, signal: i32) -> bool {
    restart(libc::PTRACE_DETACH, tid, signal)
}

/// Lets a stopped tracee go on as `request` says, delivering `signal`.
fn restart(request: libc::c_uint, tid: i32, signal: i32) -> bool {
    // SAFETY: PTRACE_CONT and PTRACE_DETACH take no pointers; the signal travels in `data`.
    let r = unsafe {
        libc::ptrace(
            request,
            tid,
            std::ptr::null_mut::<c_void>(),
            signal as usize as *mut c_void,
        )
    };
    r == 0
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.any(StopState::Pending) {
            // Seized but never seen stopped (we failed in between): stop them now, since
            // a running tracee cannot be detached and would later stop at its next signal
            // waiting for us.
            for t in &self.threads {
                if t.state == StopState::Pending {
                    let _ = ptrace::interrupt(Pid::from_raw(t.tid));
                }
            }
            let _ = self.wait_pending();
        }
        // The main thread is resumed last. Resumed first, it could go straight into an
        // `execve` it was about to make, which kills every other thread and waits until
        // they are reaped: those we still held were then reaped by nobody (detaching a
        // killed tracee fails), and the exec and our next attach (which blocks while an
        // exec is under way) waited for each other forever. Seen in the fault tests with
        // the main thread resumed first: about one run in five at 2000 samples/s.
        let leader = self.pid;
        let mut killed = false;
        let mut order: Vec<usize> = (0..self.threads.len()).collect();
        order.sort_by_key(|&i| self.threads[i].tid == leader);
        for i in order {
            let t = &mut self.threads[i];
            if t.state != StopState::Stopped {
                continue;
            }
            t.state = StopState::Gone;
            if !detach(t.tid, t.signal) {
                // Killed while stopped (SIGKILL is the only way out of a ptrace stop that
                // we did not make): its exit is ours to reap, or its process cannot end.
                t.state = StopState::Pending;
                killed = true;
            }
        }
        if killed {
            let _ = self.wait_pending();
        }
    }
}

/// Keeps a held process's threads stopped for one pass; resumes them on drop.
#[derive(Debug)]
struct HeldPause {
    pid: i32,
}

impl PauseGuard for HeldPause {
    fn nudge(&mut self, tid: i32, run_for: Duration) -> Result<bool> {
        tracer::nudge(tid, run_for)
    }
}

impl Drop for HeldPause {
    fn drop(&mut self) {
        tracer::resume(self.pid);
    }
}

impl Drop for LinuxProcess {
    fn drop(&mut self) {
        if self.held.load(Ordering::Relaxed) {
            tracer::unhold(self.pid);
        }
    }
}

impl MemoryReader for LinuxProcess {
    fn read_batch(&self, requests: &mut [(u64, &mut [u8])]) -> usize {
        // One process_vm_readv for all (at most IOV_MAX at a time); it stops at the first
        // range it cannot read, and the bytes it returns tell how far it got.
        const IOV_MAX: usize = 1024;
        let task = Pid::from_raw(self.mem_task.load(Ordering::Relaxed));
        let mut done = 0;
        for group in requests.chunks_mut(IOV_MAX) {
            let remote: Vec<RemoteIoVec> = group
                .iter()
                .map(|(addr, buf)| RemoteIoVec {
                    base: *addr as usize,
                    len: buf.len(),
                })
                .collect();
            let lens: Vec<usize> = group.iter().map(|(_, buf)| buf.len()).collect();
            let mut local: Vec<IoSliceMut> = group
                .iter_mut()
                .map(|(_, buf)| IoSliceMut::new(buf))
                .collect();
            let Ok(mut bytes) = process_vm_readv(task, &mut local, &remote) else {
                return done;
            };
            for len in lens {
                if bytes < len {
                    return done;
                }
                bytes -= len;
                done += 1;
            }
        }
        done
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> ReadResult<()> {
        let len = buf.len();
        if len == 0 {
            return Ok(());
        }
        let fail = |kind| ReadError { addr, len, kind };
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let task = self.mem_task.load(Ordering::Relaxed);
        let mut local = [IoSliceMut::new(buf)];
        match process_vm_readv(Pid::from_raw(task), &mut local, &remote) {
            Ok(n) if n == len => Ok(()),
            // A short read means the range ran into an unmapped page.
            Ok(_) => Err(fail(ReadErrorKind::BadAddress)),
            Err(Errno::ESRCH) => {
                // The task we read through exited; if another thread lives, the memory
                // does too: switch to that thread and try once more.
                match self.live_task() {
                    Some(live) if live != task => {
                        self.mem_task.store(live, Ordering::Relaxed);
                        self.read(addr, buf)
                    }
                    _ => Err(fail(ReadErrorKind::ProcessGone)),
                }
            }
            Err(Errno::EPERM | Errno::EACCES) => Err(fail(ReadErrorKind::PermissionDenied)),
            // A process that died mid-read can surface as a fault; tell the two apart.
            Err(Errno::EFAULT | Errno::EIO) if !self.is_alive() => {
                Err(fail(ReadErrorKind::ProcessGone))
            }
            Err(Errno::EFAULT | Errno::EIO) => Err(fail(ReadErrorKind::BadAddress)),
            Err(e) => Err(fail(ReadErrorKind::Os(e as i32))),
        }
    }
}

impl Process for LinuxProcess {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn command_line(&self) -> Result<Vec<String>> {
        let raw =
            fs::read(self.mm_dir().join("cmdline")).map_err(|e| self.proc_error(e, "cmdline"))?;
        // Arguments are NUL-terminated; the last terminator leaves one empty piece behind.
        let mut args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.last().is_some_and(String::is_empty) {
            args.pop();
        }
        Ok(args)
    }

    fn exe_path(&self) -> Result<PathBuf> {
        fs::read_link(self.mm_dir().join("exe")).map_err(|e| self.proc_error(e, "exe"))
    }

    fn maps(&self) -> Result<Vec<MapRange>> {
        let maps =
            proc_maps::get_process_maps(self.mm_task()).map_err(|e| self.proc_error(e, "maps"))?;
        Ok(maps
            .iter()
            .map(|m| MapRange {
                start: m.start() as u64,
                end: (m.start() + m.size()) as u64,
                offset: m.offset as u64,
                read: m.is_read(),
                write: m.is_write(),
                exec: m.is_exec(),
                path: m.filename().map(Path::to_path_buf),
            })
            .collect())
    }

    fn open_mapped_file(&self, map: &MapRange) -> Result<File> {
        // Most reliable first: map_files names the mapping itself, so it finds the very file
        // mapped even inside a container or after the file was replaced on disk (it needs
        // CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, though).
        let by_range = self
            .mm_dir()
            .join("map_files")
            .join(format!("{:x}-{:x}", map.start, map.end));
        let mut errors = Vec::new();
        match File::open(&by_range) {
            Ok(f) => return Ok(f),
            Err(e) => errors.push(format!("{}: {e}", by_range.display())),
        }
        let path = map
            .path
            .as_ref()
            .with_context(|| format!("mapping at {:#x} is not backed by a file", map.start))?;
        let inode = self.map_inode(map.start);
        let mut first_open = None;
        for c in self.path_candidates(path) {
            match File::open(&c) {
                Ok(f) => {
                    use std::os::unix::fs::MetadataExt;
                    let same = match (inode, f.metadata()) {
                        (Some(ino), Ok(meta)) => meta.ino() == ino,
                        _ => false,
                    };
                    if same {
                        return Ok(f);
                    }
                    first_open.get_or_insert(f);
                }
                Err(e) => errors.push(format!("{}: {e}", c.display())),
            }
        }
        first_open.ok_or_else(|| {
            anyhow!(
                "cannot open {} mapped in process {} (tried {})",
                path.display(),
                self.pid,
                errors.join("; ")
            )
        })
    }

    fn threads(&self) -> Result<Vec<i32>> {
        let dir =
            fs::read_dir(self.proc_dir.join("task")).map_err(|e| self.proc_error(e, "task"))?;
        let mut tids: Vec<i32> = dir
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        // Files of threads that are gone are closed here, where the live ones are known.
        if let Ok(mut files) = self.task_files.lock() {
            if files.keys().any(|(tid, _)| !tids.contains(tid)) {
                files.retain(|(tid, _), _| tids.contains(tid));
            }
        }
        // Main thread first, the rest in id order (roughly creation order).
        tids.sort_by_key(|&t| (t != self.pid, t));
        Ok(tids)
    }

    fn thread_activity(&self, tid: i32) -> Result<ThreadActivity> {
        // Read on every sample for every thread, into stack buffers. The `syscall` file
        // alone settles it: "running" exactly when the state letter would be R, else the
        // call the thread waits in. It costs a quarter of `stat` (0.6 against 2–2.6 µs for
        // a running thread, measured here), which formats some fifty fields.
        if !self.syscall_denied.load(Ordering::Relaxed) {
            let mut buf = [0u8; 256];
            match self.read_task_file(tid, TaskFile::Syscall, &mut buf) {
                Ok(syscall) => return Ok(activity_from('?', Some(syscall))),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    self.syscall_denied.store(true, Ordering::Relaxed);
                }
                // `stat` tells whether the thread is gone.
                Err(_) => {}
            }
        }
        let mut buf = [0u8; 1024];
        let stat = self
            .read_task_file(tid, TaskFile::Stat, &mut buf)
            .map_err(|e| anyhow!("thread {tid} of process {} is gone: {e}", self.pid))?;
        let state = stat_state(stat)
            .with_context(|| format!("unexpected /proc/{}/task/{tid}/stat format", self.pid))?;
        if state == 'R' || self.syscall_denied.load(Ordering::Relaxed) {
            return Ok(activity_from(state, None));
        }
        let mut syscall_buf = [0u8; 256];
        let syscall = self
            .read_task_file(tid, TaskFile::Syscall, &mut syscall_buf)
            .ok();
        Ok(activity_from(state, syscall))
    }

    fn paused_thread_activity(&self, tid: i32) -> Result<ThreadActivity> {
        // Stopped by us, the state letter says only that; the system call it sits in (or
        // none, while it runs Python) is the whole answer.
        let mut buf = [0u8; 256];
        let syscall = self
            .read_task_file(tid, TaskFile::Syscall, &mut buf)
            .map_err(|e| anyhow!("thread {tid} of process {} is gone: {e}", self.pid))?;
        Ok(activity_from('t', Some(syscall)))
    }

    fn pause(&self) -> Result<Box<dyn PauseGuard>> {
        self.pause_from(None, &[])
    }

    fn keep_attached(&self) {
        if !self.held.swap(true, Ordering::Relaxed) {
            tracer::hold(self.pid);
        }
    }

    fn recent_threads(&self) -> Option<Vec<i32>> {
        if self.established.load(Ordering::Relaxed) {
            return Some(tracer::threads(self.pid));
        }
        self.recent_threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn pause_listed(&self, tids: &[i32], skip: &[i32]) -> Result<Box<dyn PauseGuard>> {
        self.pause_from(Some(tids), skip)
    }
}

impl LinuxProcess {
    /// Reads `/proc/PID/task/TID/{stat,syscall}` into `buf`, through a kept-open file when
    /// there is room for one. A failed read of a kept file (the thread exited, or its id
    /// now names another task) drops it and tries a fresh open once.
    fn read_task_file<'b>(
        &self,
        tid: i32,
        which: TaskFile,
        buf: &'b mut [u8],
    ) -> io::Result<&'b str> {
        use std::os::unix::fs::FileExt;
        let mut files = self.task_files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get(&(tid, which)) {
            match file.read_at(buf, 0) {
                Ok(len) if len < buf.len() => {
                    return std::str::from_utf8(&buf[..len])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
                }
                _ => {
                    files.remove(&(tid, which));
                }
            }
        }
        let name = match which {
            TaskFile::Stat => "stat",
            TaskFile::Syscall => "syscall",
        };
        let path = self.proc_dir.join(format!("task/{tid}/{name}"));
        if files.len() >= max_task_files() {
            drop(files);
            return read_small(&path, buf);
        }
        let file = File::open(&path)?;
        let len = file.read_at(buf, 0)?;
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        files.insert((tid, which), file);
        Ok(text)
    }

    /// Stops every thread but those in `skip`, starting with the `listed` ones if the
    /// caller has a fresh list.
    fn pause_from(&self, mut listed: Option<&[i32]>, skip: &[i32]) -> Result<Box<dyn PauseGuard>> {
        if self.held.load(Ordering::Relaxed) {
            return self.pause_held(listed, skip);
        }
        // The guard exists before the first attach, so an early return detaches whatever
        // was attached so far.
        let mut guard = Paused::new(self.pid);
        // Skipped threads count as seen, so that listing them again is not news.
        let mut seen: HashSet<i32> = skip.iter().copied().filter(|&t| t != self.pid).collect();
        // Threads not yet stopped can start new ones while we attach, so list again until a
        // listing brings nothing new (bounded, in case something spawns threads endlessly).
        for _ in 0..8 {
            let (tids, fresh) = match listed.take() {
                Some(tids) => (tids.to_vec(), false),
                None => (self.threads()?, true),
            };
            let new: Vec<i32> = tids.iter().copied().filter(|t| seen.insert(*t)).collect();
            if new.is_empty() {
                if fresh {
                    // The listing that found nothing new is as fresh as any the next pass
                    // could make: it starts from it (see `Process::recent_threads`).
                    *self
                        .recent_threads
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(tids);
                }
                break;
            }
            // The main thread is stopped first: once it is, it cannot start an `execve`
            // while we attach to the others. An exec kills every other thread and waits
            // until they are reaped, and attaching blocks until the exec is done: the exec
            // would wait for us to reap the threads we already hold while we wait in the
            // attach. (An exec from another thread can still do this; the kernel offers no
            // way out.)
            if new.contains(&self.pid) {
                self.seize_and_interrupt(self.pid, &mut guard)?;
                guard.wait_pending()?;
            }
            // The others are all asked to stop before we wait for any: they then stop in
            // parallel, instead of one scheduling round trip after another (with a
            // thousand threads that made a pause cost tens of milliseconds).
            for tid in new.into_iter().filter(|&t| t != self.pid) {
                self.seize_and_interrupt(tid, &mut guard)?;
            }
            guard.wait_pending()?;
        }
        if !guard.any(StopState::Stopped) {
            bail!("process {} has exited (no thread left to pause)", self.pid);
        }
        Ok(Box::new(guard))
    }
}

impl LinuxProcess {
    /// [`Self::pause_from`] for a held process: the threads stay seized, so a pause is an
    /// interrupt per thread, and the guard lets them go with `PTRACE_CONT`.
    fn pause_held(&self, listed: Option<&[i32]>, skip: &[i32]) -> Result<Box<dyn PauseGuard>> {
        // Exists before the first interrupt, so that an early return resumes what stopped.
        let guard = HeldPause { pid: self.pid };
        if self.established.load(Ordering::Relaxed) {
            let tids = match listed {
                Some(tids) => tids.to_vec(),
                None => tracer::threads(self.pid),
            };
            // Nothing is attached any more, so the main thread need not be stopped when
            // idle: an exec it makes while we hold others stopped waits until we reap the
            // threads it kills, which the wait below and `tracer::sleep` do.
            for tid in tids.into_iter().filter(|t| !skip.contains(t)) {
                tracer::interrupt(tid);
            }
            tracer::wait_pending()?;
            if !tracer::holds_threads_of(self.pid) {
                bail!("process {} has exited (no thread left to pause)", self.pid);
            }
        } else {
            self.establish(listed, skip)?;
            if !tracer::any_stopped(self.pid) {
                bail!("process {} has exited (no thread left to pause)", self.pid);
            }
        }
        Ok(Box::new(guard))
    }

    /// The first held pause: seizes every thread, the skipped ones too (they are left
    /// running), listing again until a listing brings nothing new, since threads not yet
    /// seized can start new ones that nobody would hand us. The main thread is seized and
    /// stopped first, for the reason [`Self::pause_from`] gives.
    fn establish(&self, mut listed: Option<&[i32]>, skip: &[i32]) -> Result<()> {
        let mut seen: HashSet<i32> = HashSet::new();
        for _ in 0..8 {
            let tids = match listed.take() {
                Some(tids) => tids.to_vec(),
                None => self.threads()?,
            };
            let new: Vec<i32> = tids.iter().copied().filter(|t| seen.insert(*t)).collect();
            if new.is_empty() {
                self.established.store(true, Ordering::Relaxed);
                return Ok(());
            }
            let seize = |tid: i32| -> Result<()> {
                let stop = tid == self.pid || !skip.contains(&tid);
                if self.seize(tid, || tracer::seize(self.pid, tid))? && stop {
                    tracer::interrupt(tid);
                }
                Ok(())
            };
            if new.contains(&self.pid) {
                seize(self.pid)?;
                tracer::wait_pending()?;
            }
            for tid in new.into_iter().filter(|&t| t != self.pid) {
                seize(tid)?;
            }
            tracer::wait_pending()?;
        }
        // Something starts threads endlessly: the next pause lists again.
        Ok(())
    }

    /// Where the file a mapping shows as `path` may be found from here, most likely first,
    /// for when map_files is not available.
    ///
    /// The kernel prints a mapped path relative to the *reader's* root. For a process in a
    /// chroot (or a container) that usually yields the path inside the target's root
    /// prefixed with that root (`/srv/jail/usr/lib/x.so`), which may not exist from here
    /// (the mounts can live in another mount namespace) and must not be prefixed twice. So:
    /// the path with the target's root stripped, reached through `/proc/PID/root`; then the
    /// path under `/proc/PID/root` as is; then the path itself.
    fn path_candidates(&self, path: &Path) -> Vec<PathBuf> {
        let root = self.mm_dir().join("root");
        let mut out = Vec::new();
        if !path.is_absolute() {
            out.push(path.to_path_buf());
            return out;
        }
        if let Ok(target_root) = fs::read_link(&root) {
            if target_root != Path::new("/") {
                if let Ok(inside) = path.strip_prefix(&target_root) {
                    out.push(root.join(inside));
                }
            }
        }
        if let Ok(rel) = path.strip_prefix("/") {
            out.push(root.join(rel));
        }
        out.push(path.to_path_buf());
        out
    }

    /// The pid of the tracer attached to thread `tid` (`TracerPid` in its status), if any.
    fn tracer_of(&self, tid: i32) -> Option<i32> {
        let status = fs::read_to_string(self.proc_dir.join(format!("task/{tid}/status"))).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("TracerPid:"))
            .and_then(|value| value.trim().parse::<i32>().ok())
            .filter(|&tracer| tracer != 0)
    }

    /// Whether thread `tid` of the process exists and has not exited.
    fn thread_alive(&self, tid: i32) -> bool {
        alive(&self.proc_dir.join(format!("task/{tid}/stat")))
    }

    /// Inode of the file mapped at `start`, from a fresh read of the maps.
    fn map_inode(&self, start: u64) -> Option<u64> {
        let maps = proc_maps::get_process_maps(self.mm_task()).ok()?;
        maps.iter()
            .find(|m| m.start() as u64 == start)
            .map(|m| m.inode as u64)
            .filter(|&i| i != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_found_after_the_last_parenthesis() {
        assert_eq!(stat_state("12 (python) S 1 2 3"), Some('S'));
        assert_eq!(stat_state("12 (a) R (b)) t 1 2"), Some('t'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn activity_decisions() {
        use ThreadActivity::*;
        assert_eq!(activity_from('R', Some("202 0x1")), Active);
        assert_eq!(activity_from('S', Some("202 0x1 0x2")), Idle);
        assert_eq!(activity_from('S', Some("230 0x1")), Idle);
        assert_eq!(
            activity_from('S', Some("24 0x1")),
            Active,
            "sched_yield is busy"
        );
        assert_eq!(activity_from('S', Some("running")), Active);
        assert_eq!(activity_from('?', Some("running")), Active);
        assert_eq!(activity_from('?', Some("230 0x1")), Idle);
        assert_eq!(activity_from('?', Some("-1 0x7ff 0x7ff")), Active);
        assert_eq!(activity_from('S', Some("-1 0x7ff 0x7ff")), Active);
        assert_eq!(activity_from('S', None), Idle);
        assert_eq!(activity_from('T', None), Active);
        assert!(is_waiting_syscall_x86_64(449));
        assert!(!is_waiting_syscall_x86_64(24));
    }

    #[test]
    fn open_rejects_missing_and_bad_pids() {
        for pid in [0, -5, i32::MAX] {
            let err = LinuxProcess::open(pid).unwrap_err();
            assert_eq!(err.to_string(), format!("no process with pid {pid}"));
        }
    }

    #[test]
    fn reads_own_memory_and_reports_bad_addresses() {
        let me = LinuxProcess::open(std::process::id() as i32).unwrap();
        let value: u64 = 0x0123_4567_89ab_cdef;
        let mut buf = [0u8; 8];
        me.read(&value as *const u64 as u64, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), value);
        let err = me.read(8, &mut buf).unwrap_err();
        assert_eq!(err.kind, ReadErrorKind::BadAddress);
        assert_eq!((err.addr, err.len), (8, 8));
    }

    #[test]
    fn map_files_name_format() {
        let me = LinuxProcess::open(std::process::id() as i32).unwrap();
        let maps = me.maps().unwrap();
        let exe = me.exe_path().unwrap();
        let map = maps
            .iter()
            .find(|m| m.path.as_deref() == Some(exe.as_path()))
            .unwrap();
        let name = format!("{:x}-{:x}", map.start, map.end);
        assert!(me.proc_dir.join("map_files").join(name).exists());
        assert!(me.open_mapped_file(map).is_ok());
    }
}
