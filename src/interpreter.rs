//! Finding the interpreter inside a process: which binary holds CPython, which version it
//! is, and where its `PyInterpreterState` lives.
//!
//! Order of evidence: `Py_Version` (3.11+) and `_Py_DebugOffsets` (3.13+) from the target's
//! memory; the binary's name (`libpython3.9.so`, `python3.11`); and finally trying every
//! layout we know. The interpreter is found by symbol (`_PyRuntime`, `interp_head`) or,
//! when symbols are stripped, by scanning `.PyRuntime`, `.bss` and `.data` for a pointer
//! that validates as an interpreter whose threads point back to it and whose stack walks.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::binary::Binary;
use crate::debug_offsets::DebugOffsets;
use crate::layout::{layout_for, newest_layout, supported_versions, Layout};
use crate::memory::MemoryReaderExt;
use crate::objects::ObjectReader;
use crate::process::{MapRange, Process};
use crate::walker::Walker;

/// Most bytes of a section we scan for an interpreter pointer when symbols are stripped.
const MAX_SCAN_BYTES: u64 = 32 << 20;

/// A located interpreter.
pub struct Interpreter {
    /// Offsets for the target's version.
    pub layout: Layout,
    /// Address of the (main) `PyInterpreterState`.
    pub interp: u64,
    /// Address of `_PyRuntime` (3.7+), when known.
    pub runtime: Option<u64>,
    /// Address of the `_PyThreadState_Current` global (≤ 3.6), when known.
    pub tstate_current: Option<u64>,
    /// Where the target shows that its interpreter is shutting down, when known.
    pub shutdown: Option<ShutdownMark>,
    /// The executable, as the target sees it.
    pub executable: PathBuf,
    /// Where the debug offsets disagreed with our generated layout (3.13+); empty if none.
    pub debug_offset_mismatches: Vec<String>,
}

/// The binary that holds CPython: a `libpython` if one is mapped, else the executable.
fn python_binary_path(maps: &[MapRange], exe: &Path) -> PathBuf {
    maps.iter()
        .filter_map(|m| m.path.as_ref())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libpython") && n.contains(".so"))
        })
        .cloned()
        .unwrap_or_else(|| exe.to_path_buf())
}

/// `(major, minor, free_threaded)` from a name like `libpython3.13t.so.1.0` or `python2.7`.
pub fn version_from_name(name: &str) -> Option<(u32, u32, bool)> {
    let at = name.rfind("python")?;
    let rest = &name[at + "python".len()..];
    let (major, rest) = rest.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let minor: u32 = digits.parse().ok()?;
    let free_threaded = rest[digits.len()..].starts_with('t');
    matches!(major, 2 | 3).then_some((major, minor, free_threaded))
}

/// `(major, minor, micro)` of a `PY_VERSION_HEX`.
fn split_hex_version(v: u64) -> (u32, u32, u32) {
    (
        ((v >> 24) & 0xff) as u32,
        ((v >> 16) & 0xff) as u32,
        ((v >> 8) & 0xff) as u32,
    )
}

/// Whether to use the interpreter-state symbols or act as if the binary were stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symbols {
    /// Use `_PyRuntime` / `interp_head` when present (the normal case).
    Use,
    /// Find the interpreter state by scanning only; for testing the stripped-binary path.
    Ignore,
}

/// Finds the interpreter in `process`.
pub fn find(process: &dyn Process) -> Result<Interpreter> {
    find_with(process, Symbols::Use)
}

/// Finds the interpreter in `process`, optionally without the interpreter-state symbols.
pub fn find_with(process: &dyn Process, symbols: Symbols) -> Result<Interpreter> {
    let maps = process.maps().context("reading the memory map")?;
    let exe = process.exe_path().context("reading the executable path")?;
    let path = python_binary_path(&maps, &exe);
    let binary = Binary::load(process, &maps, &path)
        .with_context(|| format!("reading {}", path.display()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name_hint = version_from_name(&file_name);

    let runtime = binary
        .symbol("_PyRuntime")
        .or_else(|| binary.section(".PyRuntime").map(|s| s.addr));
    let debug = match runtime {
        Some(addr) => DebugOffsets::read(process, addr).ok().flatten(),
        None => None,
    };
    let py_version = match binary.symbol("Py_Version") {
        Some(addr) => process.read_u32(addr).ok().map(u64::from),
        None => None,
    };
    let looks_like_python = name_hint.is_some()
        || runtime.is_some()
        || py_version.is_some()
        || binary.symbol("interp_head").is_some()
        || binary.symbol("Py_Initialize").is_some();
    if !looks_like_python {
        bail!(NotPython::new(&exe));
    }

    // The exact version: debug offsets, then Py_Version, then the name (patch read later).
    let hex = debug.as_ref().map(|d| d.version).or(py_version);
    let (major, minor, patch, free_threaded) = match (hex, name_hint) {
        (Some(v), hint) => {
            let (major, minor, micro) = split_hex_version(v);
            let ft = debug.as_ref().is_some_and(|d| d.free_threaded)
                || hint.is_some_and(|(_, _, ft)| ft);
            (major, minor, Some(micro), ft)
        }
        (None, Some((major, minor, ft))) => (major, minor, None, ft),
        (None, None) => return find_by_trying_every_layout(process, &binary, &maps, exe),
    };

    let mut layout = match layout_for(major, minor, free_threaded, patch) {
        Some(layout) => layout,
        // A minor newer than any we generated: its debug offsets can fill in what moved.
        None if debug.is_some() && (major, minor) > (3, 13) => {
            let mut base =
                newest_layout(free_threaded).ok_or_else(|| anyhow!("no layout to start from"))?;
            base.version.minor = minor;
            base.version.patch = patch;
            base
        }
        None => bail!(Unsupported(format!(
            "{major}.{minor}{}",
            if free_threaded { "t" } else { "" }
        ))),
    };
    let mut mismatches = Vec::new();
    if let Some(debug) = &debug {
        mismatches = debug.apply(&mut layout);
    }
    let interp = locate_interpreter(process, &binary, &maps, &layout, runtime, symbols)?;
    let shutdown = shutdown_mark(&binary, &layout, runtime);
    let mut interpreter = Interpreter {
        layout,
        interp,
        runtime,
        tstate_current: binary.symbol("_PyThreadState_Current"),
        shutdown,
        executable: exe,
        debug_offset_mismatches: mismatches,
    };
    if interpreter.layout.version.patch.is_none() {
        interpreter.layout.version.patch = read_patch_level(process, &interpreter);
    }
    Ok(interpreter)
}

/// Where a process shows that its interpreter is shutting down (`Py_FinalizeEx` frees the
/// thread states and the interpreter while the process lives on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMark {
    /// The address of a pointer set before anything is freed: `_PyRuntime`'s
    /// `finalizing` (3.7+) or the `_Py_Finalizing` global (3.6).
    Finalizing(u64),
    /// The address of the interpreter list's head (`interp_head`), which 2.7 clears once
    /// the interpreter is freed: 2.7 keeps its finalizing flag in a static of its own.
    InterpreterList(u64),
}

fn shutdown_mark(binary: &Binary, layout: &Layout, runtime: Option<u64>) -> Option<ShutdownMark> {
    match (layout.interp.runtime_finalizing, runtime) {
        (Some(offset), Some(runtime)) => Some(ShutdownMark::Finalizing(
            runtime.wrapping_add(offset as u64),
        )),
        (Some(_), None) => None,
        (None, _) => binary
            .symbol("_Py_Finalizing")
            .map(ShutdownMark::Finalizing)
            .or_else(|| {
                binary
                    .symbol("interp_head")
                    .map(ShutdownMark::InterpreterList)
            }),
    }
}

/// No name, no version symbol: try each layout until one finds a valid interpreter.
fn find_by_trying_every_layout(
    process: &dyn Process,
    binary: &Binary,
    maps: &[MapRange],
    exe: PathBuf,
) -> Result<Interpreter> {
    let runtime = binary.symbol("_PyRuntime");
    for name in supported_versions().iter().rev() {
        let Some((major, minor, ft)) = version_from_name(&format!("python{name}")) else {
            continue;
        };
        let Some(layout) = layout_for(major, minor, ft, None) else {
            continue;
        };
        if let Ok(interp) =
            locate_interpreter(process, binary, maps, &layout, runtime, Symbols::Use)
        {
            let shutdown = shutdown_mark(binary, &layout, runtime);
            let mut interpreter = Interpreter {
                layout,
                interp,
                runtime,
                tstate_current: binary.symbol("_PyThreadState_Current"),
                shutdown,
                executable: exe,
                debug_offset_mismatches: Vec::new(),
            };
            interpreter.layout.version.patch = read_patch_level(process, &interpreter);
            return Ok(interpreter);
        }
    }
    bail!(NotPython::new(&exe))
}

/// The interpreter's address: by symbol when we have one, else by scanning.
fn locate_interpreter(
    process: &dyn Process,
    binary: &Binary,
    maps: &[MapRange],
    layout: &Layout,
    runtime: Option<u64>,
    symbols: Symbols,
) -> Result<u64> {
    let by_symbol = match (layout.interp.runtime_interp_head, runtime) {
        _ if symbols == Symbols::Ignore => None,
        (Some(head), Some(runtime)) => process.read_u64(runtime.wrapping_add(head as u64)).ok(),
        (None, _) => binary
            .symbol("interp_head")
            .and_then(|addr| process.read_u64(addr).ok()),
        _ => None,
    };
    match by_symbol {
        Some(interp) if interp != 0 && validate(process, layout, interp) => return Ok(interp),
        // The symbol says there is no interpreter yet (or any more). Scanning could not do
        // better and would cost a launched program's first moments, which `record` polls.
        Some(0) => bail!(not_running(layout)),
        _ => {}
    }
    for section in [".PyRuntime", ".bss", ".data"] {
        let Some(s) = binary.section(section) else {
            continue;
        };
        if let Some(interp) = scan(process, maps, layout, s.addr, s.size.min(MAX_SCAN_BYTES)) {
            return Ok(interp);
        }
    }
    bail!(not_running(layout))
}

fn not_running(layout: &Layout) -> String {
    format!(
        "found Python {} but no running interpreter in it (is it starting up or exiting?)",
        layout.version
    )
}

/// Scans `[start, start+size)` for a pointer to a valid interpreter.
fn scan(
    process: &dyn Process,
    maps: &[MapRange],
    layout: &Layout,
    start: u64,
    size: u64,
) -> Option<u64> {
    let writable = |p: u64| maps.iter().any(|m| m.write && m.start <= p && p < m.end);
    let mut chunk = vec![0u8; 1 << 16];
    let mut at = start & !7;
    let end = start.saturating_add(size);
    while at < end {
        let len = ((end - at) as usize).min(chunk.len());
        if process.read(at, &mut chunk[..len]).is_ok() {
            for word in chunk[..len].chunks_exact(8) {
                let p = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
                if p != 0 && p % 8 == 0 && writable(p) && validate(process, layout, p) {
                    return Some(p);
                }
            }
        }
        at += len as u64;
    }
    None
}

/// An interpreter is real when every thread in its list points back to it and the first
/// thread's stack walks.
fn validate(process: &dyn Process, layout: &Layout, interp: u64) -> bool {
    let mut walker = Walker::new(process, layout);
    let Ok(tstates) = walker.thread_states(interp) else {
        return false;
    };
    if tstates.is_empty() {
        return false;
    }
    let points_back = |t: &u64| {
        t % 8 == 0
            && process
                .read_u64(t.wrapping_add(layout.thread.interp as u64))
                .ok()
                == Some(interp)
    };
    if !tstates.iter().all(points_back) {
        return false;
    }
    walker.stack(tstates[0], false).is_ok()
}

/// The patch level from `sys.version` in the target (for versions without `Py_Version`).
fn read_patch_level(process: &dyn Process, interpreter: &Interpreter) -> Option<u32> {
    let objects = ObjectReader::new(process, &interpreter.layout);
    let sysdict = process
        .read_u64(
            interpreter
                .interp
                .wrapping_add(interpreter.layout.interp.sysdict as u64),
        )
        .ok()?;
    let version = objects.dict_get_str(sysdict, "version").ok()??;
    let text = objects.read_string_prefix(version, 32).ok()?.0;
    let number = text.split_whitespace().next()?;
    let patch = number.split('.').nth(2)?;
    let digits: String = patch.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The process is not running Python.
#[derive(Debug)]
pub struct NotPython {
    /// The executable we looked in.
    pub executable: String,
    /// A descendant that does run Python (pid and program name), when the process is a
    /// shell or a wrapper around it: the pid the user probably meant.
    pub python_descendant: Option<(i32, String)>,
}

impl NotPython {
    fn new(executable: &Path) -> NotPython {
        NotPython {
            executable: executable.display().to_string(),
            python_descendant: None,
        }
    }
}

impl std::fmt::Display for NotPython {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not a Python process: found no CPython interpreter in {}",
            self.executable
        )
    }
}

impl std::error::Error for NotPython {}

/// The process runs a CPython version we have no layout for.
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unsupported Python version {} (supported: {})",
            self.0,
            supported_versions().join(", ")
        )
    }
}

impl std::error::Error for Unsupported {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(
            version_from_name("libpython3.13t.so.1.0"),
            Some((3, 13, true))
        );
        assert_eq!(
            version_from_name("libpython3.6m.so.1.0"),
            Some((3, 6, false))
        );
        assert_eq!(version_from_name("python2.7"), Some((2, 7, false)));
        assert_eq!(version_from_name("python3.11"), Some((3, 11, false)));
        assert_eq!(version_from_name("python"), None);
        assert_eq!(version_from_name("bash"), None);
    }

    #[test]
    fn unsupported_versions_name_the_supported_ones() {
        let message = Unsupported("3.5".to_string()).to_string();
        assert!(message.starts_with("unsupported Python version 3.5 (supported: 2.7, 3.6,"));
        assert!(
            message.contains("3.13t") && message.ends_with("3.15)"),
            "{message}"
        );
    }

    #[test]
    fn hex_versions() {
        assert_eq!(split_hex_version(0x030c01f0), (3, 12, 1));
    }
}
