//! `py-spy dump`: one snapshot of every thread, printed as text or JSON.

use std::io::Write;

use anyhow::{Context, Result};

use crate::output::{self, ProcessInfo, RenderOptions};
use crate::process::Process;
use crate::sampler::SnapshotOptions;

/// Options of `py-spy dump`.
#[derive(Debug, Clone, Copy)]
pub struct DumpOptions {
    /// Target process.
    pub pid: i32,
    /// Show arguments and locals.
    pub locals: bool,
    /// JSON instead of text.
    pub json: bool,
    /// Full paths instead of short filenames.
    pub full_filenames: bool,
    /// Do not pause the target.
    pub nonblocking: bool,
}

/// Runs `dump`, writing to `out`.
pub fn run(options: DumpOptions, out: &mut dyn Write) -> Result<()> {
    let sampler = crate::sampling::attach(options.pid)?;
    let snapshot = sampler.snapshot(SnapshotOptions {
        locals: options.locals,
        nonblocking: options.nonblocking,
        thread_names: true,
        gil: true,
        skip_idle: false,
        hold: false,
    })?;
    let interpreter = sampler.interpreter();
    let info = ProcessInfo {
        pid: options.pid,
        command_line: sampler
            .process()
            .command_line()
            .map(|args| args.join(" "))
            .unwrap_or_default(),
        version: {
            let v = interpreter.layout.version;
            match v.patch {
                Some(patch) => format!("{}.{}.{patch}", v.major, v.minor),
                None => format!("{}.{}", v.major, v.minor),
            }
        },
        executable: interpreter.executable.display().to_string(),
        free_threaded: interpreter.layout.version.free_threaded,
    };
    if options.json {
        let doc = output::to_json(&info, &snapshot);
        // Rendered first, then written, so a closed stdout surfaces as the io error it is.
        let text = serde_json::to_string_pretty(&doc).context("rendering JSON")?;
        writeln!(out, "{text}")?;
    } else {
        output::write_text(
            out,
            &info,
            &snapshot,
            RenderOptions {
                full_filenames: options.full_filenames,
            },
        )?;
    }
    out.flush()?;
    Ok(())
}
