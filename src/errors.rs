//! Turning errors into the one line a user sees, with the hint that fixes them.

use crate::interpreter::{NotPython, Unsupported};
use crate::memory::is_process_gone;
use crate::process::{is_permission_error, AlreadyTraced, PermissionDenied};
use crate::sampler::is_interpreter_exiting;

/// Whether the error is a closed stdout (`py-spy dump | head -1`): a quiet success.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The whole chain on one line, most general first, plus a hint where we know the fix.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    // A refusal is explained whole by its own message: the contexts around it ("reading
    // the memory map", the errno) would only push the hint off the screen.
    let mut line = if let Some(denied) = err.downcast_ref::<PermissionDenied>() {
        denied.0.clone()
    } else if let Some(traced) = err.downcast_ref::<AlreadyTraced>() {
        traced.0.clone()
    } else {
        parts.join(": ")
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_permission_error(err) && is_root {
        // Root was refused: the usual advice does not apply. The kernel also refuses a
        // tracer whose capabilities are not a superset of the target's.
        line.push_str(
            " (hint: py-spy already runs as root; the target may hold capabilities py-spy \
             lacks, be in another user namespace, or be protected by a security module \
             such as SELinux or AppArmor)",
        );
    } else if is_permission_error(err) {
        line.push_str(
            " (hint: run as root, or in Docker add --cap-add SYS_PTRACE; \
             a non-root user also needs /proc/sys/kernel/yama/ptrace_scope set to 0)",
        );
    } else if is_process_gone(err) {
        line.push_str(" (the process exited while it was being read)");
    } else if is_interpreter_exiting(err) {
        line.push_str(" (the process is exiting; try again while it runs)");
    } else if let Some(not_python) = err.downcast_ref::<NotPython>() {
        match &not_python.python_descendant {
            Some((pid, name)) => line.push_str(&format!(
                " (hint: its child process {pid} runs {name}: pass --pid {pid})"
            )),
            None => line.push_str(
                " (hint: pass the pid of the python process itself, not of a shell or wrapper)",
            ),
        }
    } else if err.downcast_ref::<Unsupported>().is_some() {
        // The message already lists what is supported.
    } else if line.starts_with("no process with pid") {
        line.push_str(" (hint: check the pid with `ps`)");
    }
    line
}
