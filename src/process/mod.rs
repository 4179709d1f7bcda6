//! The target process, behind one trait.
//!
//! [`Process`] is the only platform seam: memory (through [`MemoryReader`]), the memory map,
//! the target's binaries, its threads and whether each is running, and pausing it. Linux is
//! the one implementation; another OS adds a sibling module and nothing above changes.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::memory::MemoryReader;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod tracer;
#[cfg(target_os = "linux")]
pub use linux::{take_reaped_status, LinuxProcess};
#[cfg(target_os = "linux")]
pub use tracer::{held_child_exit, service, sleep};

/// Marks an error as the OS refusing us access to the target (ptrace not permitted,
/// `/proc/PID` files unreadable). Platform code attaches it to the error chain so that the
/// caller can print a hint (run as root, `CAP_SYS_PTRACE`, ptrace_scope) without parsing
/// messages; test for it with [`is_permission_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDenied(pub String);

impl std::fmt::Display for PermissionDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PermissionDenied {}

/// Another tracer (a debugger, strace, a second profiler) holds the target, so it cannot be
/// paused. Its message names the tracer and the way out; nothing around it adds to that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyTraced(pub String);

impl std::fmt::Display for AlreadyTraced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AlreadyTraced {}

/// Whether `err` was caused by missing permissions: anywhere in its chain there is a
/// [`PermissionDenied`], a [`crate::memory::ReadError`] of kind `PermissionDenied`, or an
/// `io::Error` of kind `PermissionDenied` (EPERM/EACCES). Extra context added on top by
/// callers does not hide it.
pub fn is_permission_error(err: &anyhow::Error) -> bool {
    // A context value is not its own link in `chain()`, but `downcast_ref` sees it.
    err.downcast_ref::<PermissionDenied>().is_some()
        || err.chain().any(|cause| {
            cause.is::<PermissionDenied>()
                || cause
                    .downcast_ref::<crate::memory::ReadError>()
                    .is_some_and(|e| e.kind == crate::memory::ReadErrorKind::PermissionDenied)
                || cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
        })
}

/// One mapping of the target's address space (a line of `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRange {
    /// First address of the mapping.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset into the mapped file.
    pub offset: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Path of the mapped file as the kernel shows it (for a process in a chroot or a
    /// container this path is only meaningful inside its root), or `None` for anonymous maps.
    pub path: Option<PathBuf>,
}

/// What a thread was doing when we looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadActivity {
    /// On a CPU, runnable, or stopped outside a blocking system call.
    Active,
    /// Blocked in a system call that waits (futex, poll, sleep, read, ...).
    Idle,
}

/// Keeps every thread of the target stopped while it lives; resumes them all when dropped.
pub trait PauseGuard {
    /// Lets thread `tid`, which this pause stopped, run for about `run_for` and stops it
    /// again, so that a thread stopped in the middle of updating its stack can be read a
    /// moment later. False, with nothing done, when `tid` is not a thread this pause
    /// stopped and may let run (one left running, one in a group stop, one gone); false
    /// too when it did not stop again (it exited while it ran).
    fn nudge(&mut self, tid: i32, run_for: Duration) -> Result<bool>;
}

/// A process we can inspect. Implemented per OS.
pub trait Process: MemoryReader {
    /// The process id.
    fn pid(&self) -> i32;

    /// The command line, argument by argument.
    fn command_line(&self) -> Result<Vec<String>>;

    /// Path of the main executable as the process sees it (`/proc/PID/exe`'s target).
    fn exe_path(&self) -> Result<PathBuf>;

    /// The current memory map.
    fn maps(&self) -> Result<Vec<MapRange>>;

    /// Opens the file behind a file-backed mapping in a way that works when the path only
    /// exists inside the target's root (chroot, container): `/proc/PID/map_files/<range>`.
    fn open_mapped_file(&self, map: &MapRange) -> Result<File>;

    /// OS thread ids of every thread, the main thread first.
    fn threads(&self) -> Result<Vec<i32>>;

    /// Whether the thread is running or waiting. Call before pausing: a paused thread
    /// looks stopped whatever it was doing.
    fn thread_activity(&self, tid: i32) -> Result<ThreadActivity>;

    /// The thread list a pause just ended with, once (then `None` until the next pause):
    /// a sampler that pauses every pass starts the next pass from it instead of listing
    /// `/proc/PID/task` once more. A thread started since is found by the next pause,
    /// which lists again.
    fn recent_threads(&self) -> Option<Vec<i32>> {
        None
    }

    /// Whether a thread that *we* stopped was running or waiting when it stopped (its
    /// state letter then only says "stopped").
    fn paused_thread_activity(&self, tid: i32) -> Result<ThreadActivity> {
        self.thread_activity(tid)
    }

    /// From now on, keep the threads attached between pauses, for a caller that pauses many
    /// times a second: a pause then costs a fraction (Linux: see `tracer`). The caller must
    /// then sleep with [`sleep`], pause and drop the process on one thread; dropping it
    /// lets the threads go.
    fn keep_attached(&self) {}

    /// Stops every thread for a consistent snapshot. The guard resumes them on drop, on every
    /// path out (error, panic); if the profiler dies, the kernel detaches and they resume.
    fn pause(&self) -> Result<Box<dyn PauseGuard>>;

    /// [`Process::pause`] for a caller that has just listed the threads (`tids`, from
    /// [`Process::threads`]): spares listing them again before the first attach. The
    /// threads in `skip` (ones the caller will not read) are left running, except the main
    /// thread when the pause attaches: stopped, it cannot start an `execve` while we attach
    /// to the others (an exec waits for us to reap the threads it kills, and an attach
    /// waits for an exec under way).
    fn pause_listed(&self, tids: &[i32], skip: &[i32]) -> Result<Box<dyn PauseGuard>> {
        let _ = (tids, skip);
        self.pause()
    }
}
