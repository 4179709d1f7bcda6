//! `_Py_DebugOffsets` (3.13+): the offsets table CPython itself places at the start of
//! `_PyRuntime` for out-of-process tools, marked by the cookie `xdebugpy`.
//!
//! We read it from the target and use it to fill and cross-check our generated layout. For
//! a minor newer than any we generated it is what makes the walker work at all; for the
//! ones we know, a disagreement means a patched or differently-configured build, and the
//! target's own numbers win.

use anyhow::Result;

use crate::layout::{GilModel, Layout};
use crate::memory::{Fields, MemoryReader, MemoryReaderExt};

/// The cookie at the start of `_PyRuntime`.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// The subset of `_Py_DebugOffsets` the walker uses, each an offset into its struct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` of the target.
    pub version: u64,
    /// The target is a free-threaded build.
    pub free_threaded: bool,
    /// Named offsets, as (our field name, value).
    pub fields: Vec<(&'static str, u64)>,
}

/// Parses the debug offsets with the struct of bindings module `$b`.
macro_rules! parse_with {
    ($b:ident, $block:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b::_Py_DebugOffsets as D;
        let block: &[u8] = $block;
        let at = |off: usize| block.u64_at(off);
        DebugOffsets {
            version: at(offset_of!(D, version)),
            free_threaded: at(offset_of!(D, free_threaded)) != 0,
            fields: vec![
                (
                    "interp.runtime_interp_head",
                    at(offset_of!(D, runtime_state.interpreters_head)),
                ),
                (
                    "interp.runtime_finalizing",
                    at(offset_of!(D, runtime_state.finalizing)),
                ),
                ("interp.next", at(offset_of!(D, interpreter_state.next))),
                (
                    "interp.tstate_head",
                    at(offset_of!(D, interpreter_state.threads_head)),
                ),
                (
                    "interp.modules",
                    at(offset_of!(D, interpreter_state.imports_modules)),
                ),
                (
                    "interp.sysdict",
                    at(offset_of!(D, interpreter_state.sysdict)),
                ),
                (
                    "interp.ceval_gil",
                    at(offset_of!(D, interpreter_state.ceval_gil)),
                ),
                ("thread.next", at(offset_of!(D, thread_state.next))),
                ("thread.interp", at(offset_of!(D, thread_state.interp))),
                (
                    "thread.frame",
                    at(offset_of!(D, thread_state.current_frame)),
                ),
                (
                    "thread.thread_id",
                    at(offset_of!(D, thread_state.thread_id)),
                ),
                (
                    "thread.native_thread_id",
                    at(offset_of!(D, thread_state.native_thread_id)),
                ),
                ("frame.back", at(offset_of!(D, interpreter_frame.previous))),
                (
                    "frame.code",
                    at(offset_of!(D, interpreter_frame.executable)),
                ),
                (
                    "frame.lasti",
                    at(offset_of!(D, interpreter_frame.instr_ptr)),
                ),
                (
                    "frame.localsplus",
                    at(offset_of!(D, interpreter_frame.localsplus)),
                ),
                ("frame.owner", at(offset_of!(D, interpreter_frame.owner))),
                ("code.filename", at(offset_of!(D, code_object.filename))),
                ("code.name", at(offset_of!(D, code_object.name))),
                ("code.qualname", at(offset_of!(D, code_object.qualname))),
                ("code.linetable", at(offset_of!(D, code_object.linetable))),
                (
                    "code.firstlineno",
                    at(offset_of!(D, code_object.firstlineno)),
                ),
                ("code.argcount", at(offset_of!(D, code_object.argcount))),
                (
                    "code.varnames",
                    at(offset_of!(D, code_object.localsplusnames)),
                ),
                (
                    "code.localspluskinds",
                    at(offset_of!(D, code_object.localspluskinds)),
                ),
                (
                    "code.code_adaptive",
                    at(offset_of!(D, code_object.co_code_adaptive)),
                ),
                ("objects.ob_type", at(offset_of!(D, pyobject.ob_type))),
                ("objects.tp_name", at(offset_of!(D, type_object.tp_name))),
                ("objects.tp_flags", at(offset_of!(D, type_object.tp_flags))),
                (
                    "objects.tuple_items",
                    at(offset_of!(D, tuple_object.ob_item)),
                ),
                ("objects.list_items", at(offset_of!(D, list_object.ob_item))),
                (
                    "objects.float_fval",
                    at(offset_of!(D, float_object.ob_fval)),
                ),
                (
                    "objects.long_digits",
                    at(offset_of!(D, long_object.ob_digit)),
                ),
                (
                    "objects.bytes_sval",
                    at(offset_of!(D, bytes_object.ob_sval)),
                ),
                ("dicts.keys", at(offset_of!(D, dict_object.ma_keys))),
                ("dicts.values", at(offset_of!(D, dict_object.ma_values))),
            ],
        }
    }};
}

impl DebugOffsets {
    /// Reads the debug offsets at `runtime` (the start of `_PyRuntime`); `None` when the
    /// cookie is not there (before 3.13, or not a runtime).
    pub fn read<M: MemoryReader + ?Sized>(mem: &M, runtime: u64) -> Result<Option<Self>> {
        let head = mem.read_vec(runtime, 16, 16)?;
        if &head[..8] != COOKIE {
            return Ok(None);
        }
        let version = head.u64_at(8);
        let minor = ((version >> 16) & 0xff) as u32;
        let major = ((version >> 24) & 0xff) as u32;
        Ok(Self::parse_for(major, minor, |size| {
            mem.read_vec(runtime, size, 1 << 16)
        }))
    }

    /// Parses with the struct of the matching minor, or the newest we have for a newer one.
    fn parse_for(
        major: u32,
        minor: u32,
        read: impl Fn(usize) -> Result<Vec<u8>, crate::memory::ReadError>,
    ) -> Option<Self> {
        let mut best: Option<DebugOffsets> = None;
        macro_rules! try_module {
            ($m:ident, $major:literal, $minor:literal, $ft:literal, py313) => {
                try_module!(@parse $m, $major, $minor)
            };
            ($m:ident, $major:literal, $minor:literal, $ft:literal, py314) => {
                try_module!(@parse $m, $major, $minor)
            };
            ($m:ident, $major:literal, $minor:literal, $ft:literal, $family:ident) => {};
            (@parse $m:ident, $major:literal, $minor:literal) => {
                // Versions come oldest first, so the last match is the closest one.
                if major == $major && $minor <= minor {
                    let size = core::mem::size_of::<python_bindings::$m::_Py_DebugOffsets>();
                    if let Ok(block) = read(size) {
                        best = Some(parse_with!($m, &block));
                    }
                }
            };
        }
        python_bindings::for_each_version!(try_module);
        best
    }

    /// Fills `layout` with the target's own offsets; returns a line for each value that
    /// differed from the generated layout.
    pub fn apply(&self, layout: &mut Layout) -> Vec<String> {
        let mut mismatches = Vec::new();
        for (name, value) in &self.fields {
            let value = *value as usize;
            let slot: Option<&mut usize> = match *name {
                "interp.next" => Some(&mut layout.interp.next),
                "interp.tstate_head" => Some(&mut layout.interp.tstate_head),
                "interp.modules" => Some(&mut layout.interp.modules),
                "interp.sysdict" => Some(&mut layout.interp.sysdict),
                "thread.next" => Some(&mut layout.thread.next),
                "thread.interp" => Some(&mut layout.thread.interp),
                "thread.frame" => Some(&mut layout.thread.frame),
                "thread.thread_id" => Some(&mut layout.thread.thread_id),
                "frame.back" => Some(&mut layout.frame.back),
                "frame.code" => Some(&mut layout.frame.code),
                "frame.lasti" => Some(&mut layout.frame.lasti),
                "frame.localsplus" => Some(&mut layout.frame.localsplus),
                "code.filename" => Some(&mut layout.code.filename),
                "code.name" => Some(&mut layout.code.name),
                "code.linetable" => Some(&mut layout.code.linetable),
                "code.firstlineno" => Some(&mut layout.code.firstlineno),
                "code.argcount" => Some(&mut layout.code.argcount),
                "code.varnames" => Some(&mut layout.code.varnames),
                "objects.ob_type" => Some(&mut layout.objects.ob_type),
                "objects.tp_name" => Some(&mut layout.objects.tp_name),
                "objects.tp_flags" => Some(&mut layout.objects.tp_flags),
                "objects.tuple_items" => Some(&mut layout.objects.tuple_items),
                "objects.list_items" => Some(&mut layout.objects.list_items),
                "objects.float_fval" => Some(&mut layout.objects.float_fval),
                "objects.long_digits" => Some(&mut layout.objects.long_digits),
                "objects.bytes_sval" => Some(&mut layout.objects.bytes_sval),
                "dicts.keys" => Some(&mut layout.dicts.keys),
                "dicts.values" => Some(&mut layout.dicts.values),
                _ => None,
            };
            let optional: Option<&mut Option<usize>> = match *name {
                "interp.runtime_interp_head" => Some(&mut layout.interp.runtime_interp_head),
                "interp.runtime_finalizing" => Some(&mut layout.interp.runtime_finalizing),
                "thread.native_thread_id" => Some(&mut layout.thread.native_thread_id),
                "frame.owner" => Some(&mut layout.frame.owner),
                "code.qualname" => Some(&mut layout.code.qualname),
                "code.localspluskinds" => Some(&mut layout.code.localspluskinds),
                "code.code_adaptive" => Some(&mut layout.code.code_adaptive),
                _ => None,
            };
            let old = match (slot, optional) {
                (Some(slot), _) => std::mem::replace(slot, value),
                (None, Some(opt)) => opt.replace(value).unwrap_or(usize::MAX),
                (None, None) => {
                    if *name == "interp.ceval_gil" {
                        if let GilModel::InterpreterGil { ceval_gil, .. } = &mut layout.gil {
                            std::mem::replace(ceval_gil, value)
                        } else {
                            value
                        }
                    } else {
                        value
                    }
                }
            };
            if old != value {
                mismatches.push(format!("{name}: generated {old}, target says {value}"));
            }
        }
        // Reads of whole structs must still cover every field we now use.
        layout.thread.size = layout.thread.size.max(
            [
                layout.thread.next,
                layout.thread.interp,
                layout.thread.frame,
                layout.thread.thread_id,
            ]
            .into_iter()
            .chain(layout.thread.native_thread_id)
            .max()
            .unwrap_or(0)
                + 8,
        );
        layout.frame.size = layout.frame.size.max(
            [layout.frame.back, layout.frame.code, layout.frame.lasti]
                .into_iter()
                .chain(layout.frame.owner)
                .max()
                .unwrap_or(0)
                + 8,
        );
        layout.code.size = layout.code.size.max(
            [
                layout.code.filename,
                layout.code.name,
                layout.code.linetable,
                layout.code.varnames,
            ]
            .into_iter()
            .chain(layout.code.qualname)
            .chain(layout.code.localspluskinds)
            .max()
            .unwrap_or(0)
                + 8,
        );
        mismatches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::layout_for;

    #[test]
    fn target_offsets_win_and_disagreements_are_reported() {
        let mut layout = layout_for(3, 13, false, Some(0)).expect("3.13 layout");
        let generated_back = layout.frame.back;
        let debug = DebugOffsets {
            version: 0x030d00f0,
            free_threaded: false,
            fields: vec![
                ("frame.back", generated_back as u64),
                ("frame.code", 4000),
                ("interp.ceval_gil", 5000),
            ],
        };
        let mismatches = debug.apply(&mut layout);
        assert_eq!(layout.frame.back, generated_back);
        assert_eq!(layout.frame.code, 4000);
        assert!(matches!(
            layout.gil,
            GilModel::InterpreterGil {
                ceval_gil: 5000,
                ..
            }
        ));
        assert_eq!(mismatches.len(), 2, "{mismatches:?}");
        assert!(mismatches[0].starts_with("frame.code: generated "));
        // Reads of the frame struct still cover the (moved) code field.
        assert!(layout.frame.size >= 4008, "{}", layout.frame.size);
    }

    #[test]
    fn no_cookie_means_no_debug_offsets() {
        let mut mem = crate::memory::FakeMemory::new();
        mem.map(0x1000, vec![0u8; 64]);
        assert_eq!(DebugOffsets::read(&mem, 0x1000).unwrap(), None);
    }
}
