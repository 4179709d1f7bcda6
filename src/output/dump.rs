//! `dump`'s output: a snapshot for people (py-spy's layout) and for programs (JSON).

use std::io::{self, Write};

use serde_json::{json, Value};

use super::short_filename;
use crate::sampler::{Snapshot, ThreadSnapshot};

/// What the header says about the process.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Command line, joined by spaces.
    pub command_line: String,
    /// `X.Y.Z` (or `X.Y` when the patch level is unknown).
    pub version: String,
    /// The interpreter's executable.
    pub executable: String,
    /// A free-threaded build.
    pub free_threaded: bool,
}

/// How to print frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Print full paths instead of short filenames.
    pub full_filenames: bool,
}

fn status(thread: &ThreadSnapshot) -> &'static str {
    match (thread.active, thread.owns_gil) {
        (_, true) => "active+gil",
        (true, false) => "active",
        (false, false) => "idle",
    }
}

fn thread_label(thread: &ThreadSnapshot) -> String {
    match thread.os_thread_id {
        Some(id) => id.to_string(),
        None => format!("{:#x}", thread.python_thread_id),
    }
}

/// Writes the text dump.
pub fn write_text(
    out: &mut dyn Write,
    process: &ProcessInfo,
    snapshot: &Snapshot,
    options: RenderOptions,
) -> io::Result<()> {
    writeln!(out, "Process {}: {}", process.pid, process.command_line)?;
    let suffix = if process.free_threaded { "t" } else { "" };
    writeln!(
        out,
        "Python v{}{suffix} ({})",
        process.version, process.executable
    )?;
    writeln!(out)?;
    for thread in &snapshot.threads {
        write!(out, "Thread {} ({})", thread_label(thread), status(thread))?;
        match &thread.name {
            Some(name) => writeln!(out, ": \"{name}\"")?,
            None => writeln!(out)?,
        }
        if let Some(error) = &thread.error {
            writeln!(out, "    <stack unreadable: {error}>")?;
        }
        for frame in &thread.frames {
            let file = if options.full_filenames {
                &frame.filename
            } else {
                short_filename(&frame.filename)
            };
            match frame.line {
                Some(line) => writeln!(out, "    {} ({}:{})", frame.name, file, line)?,
                None => writeln!(out, "    {} ({})", frame.name, file)?,
            }
            if let Some(locals) = &frame.locals {
                let (args, others): (Vec<_>, Vec<_>) = locals.iter().partition(|l| l.is_arg);
                for (title, group) in [("Arguments", args), ("Locals", others)] {
                    if !group.is_empty() {
                        writeln!(out, "        {title}:")?;
                        for local in group {
                            writeln!(out, "            {}: {}", local.name, local.repr)?;
                        }
                    }
                }
            }
        }
        if thread.truncated {
            writeln!(out, "    ... (stack truncated)")?;
        }
    }
    Ok(())
}

/// The JSON document described in README.md.
pub fn to_json(process: &ProcessInfo, snapshot: &Snapshot) -> Value {
    let threads: Vec<Value> = snapshot
        .threads
        .iter()
        .map(|t| {
            let frames: Vec<Value> = t
                .frames
                .iter()
                .map(|f| {
                    let mut frame = json!({
                        "name": &*f.name,
                        "filename": &*f.filename,
                        "short_filename": short_filename(&f.filename),
                        "line": f.line,
                    });
                    if let Some(locals) = &f.locals {
                        frame["locals"] = locals
                            .iter()
                            .map(|l| json!({"name": l.name, "repr": l.repr, "is_arg": l.is_arg}))
                            .collect();
                    }
                    frame
                })
                .collect();
            json!({
                "thread_id": t.os_thread_id,
                "python_thread_id": t.python_thread_id,
                "name": t.name,
                "status": status(t),
                "active": t.active,
                "owns_gil": t.owns_gil,
                "frames": frames,
                "truncated": t.truncated,
                "error": t.error,
            })
        })
        .collect();
    json!({
        "pid": process.pid,
        "command_line": process.command_line,
        "python": {
            "version": process.version,
            "executable": process.executable,
            "free_threaded": process.free_threaded,
        },
        "threads": threads,
    })
}
