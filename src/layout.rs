//! Offsets of every interpreter field the profiler reads, per CPython version.
//!
//! This is the one place where versions differ. Each table is computed with
//! `core::mem::offset_of!` from the bindgen structs in the `python-bindings` crate; no offset
//! is typed by hand. The walker and the object readers only ever see a [`Layout`].
//! Versions are grouped into families that share a frame model; `python_bindings`'s
//! `for_each_version!` macro lists every generated version with its family, so a new minor
//! of an existing family needs no change here.

use crate::linetable::LineTableFormat;

/// A CPython version as found in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// 2 or 3.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level, when known.
    pub patch: Option<u32>,
    /// Built with `--disable-gil`.
    pub free_threaded: bool,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(patch) = self.patch {
            write!(f, ".{patch}")?;
        }
        if self.free_threaded {
            write!(f, "t")?;
        }
        Ok(())
    }
}

/// How a thread's current frame is found and how frames link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameModel {
    /// ≤ 3.10: `tstate->frame` is a `PyFrameObject`, linked by `f_back`; `f_lasti` is an int.
    FrameObject,
    /// 3.11–3.12: `tstate->cframe->current_frame` is a `_PyInterpreterFrame`, linked by
    /// `previous`; the position is the pointer `prev_instr`.
    CFrame,
    /// 3.13+: `tstate->current_frame`; the position is the pointer `instr_ptr`.
    CurrentFrame,
}

/// Where the thread holding the GIL is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilModel {
    /// ≤ 3.6: the global `_PyThreadState_Current` (found by symbol).
    ThreadStateCurrentSymbol,
    /// 3.7–3.11: `_PyRuntime.gilstate.tstate_current` at this offset.
    RuntimeTstateCurrent(usize),
    /// 3.12+: `interp->ceval.gil` points to a `_gil_runtime_state`.
    InterpreterGil {
        /// Offset of the `gil` pointer in the interpreter state.
        ceval_gil: usize,
        /// Offset of `locked` in `_gil_runtime_state`.
        locked: usize,
        /// Offset of `last_holder` in `_gil_runtime_state`.
        last_holder: usize,
    },
    /// A free-threaded build: there is no GIL.
    NoGil,
}

/// How strings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrModel {
    /// Python 2: `str` is `PyStringObject` (bytes); `unicode` holds a `Py_UNICODE*` buffer.
    Py2 {
        /// Offset of `ob_sval` in `PyStringObject`.
        string_sval: usize,
        /// Offset of `str` (the buffer pointer) in `PyUnicodeObject`.
        unicode_str: usize,
        /// Offset of `length` in `PyUnicodeObject`.
        unicode_length: usize,
        /// Bytes per `Py_UNICODE` (2 or 4).
        unicode_char_size: usize,
    },
    /// Python 3 PEP 393 strings.
    Pep393 {
        /// Offset of `length` in `PyASCIIObject`.
        length: usize,
        /// Offset of the `state` bitfield in `PyASCIIObject`.
        state: usize,
        /// `sizeof(PyASCIIObject)`: where compact ASCII data starts.
        ascii_size: usize,
        /// `sizeof(PyCompactUnicodeObject)`: where other compact data starts.
        compact_size: usize,
        /// Offset of `data.any` in `PyUnicodeObject` (non-compact strings).
        data_any: usize,
        /// Bit position and width of `state.kind`.
        kind_shift: u32,
        /// Bit position of `state.compact`.
        compact_bit: u32,
        /// Bit position of `state.ascii`.
        ascii_bit: u32,
    },
}

/// How an `int` stores its size and sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongModel {
    /// ≤ 3.11: the sign of `ob_size` is the sign, its magnitude the digit count.
    SignedSize,
    /// 3.12+: `lv_tag` = digits << 3 | sign bits (0 positive, 1 zero, 2 negative).
    Tagged {
        /// Offset of `long_value.lv_tag`.
        lv_tag: usize,
    },
}

/// How a dict's keys object is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictModel {
    /// 2.7: `ma_mask` and a table of `PyDictEntry`.
    Py27 {
        /// Offset of `ma_mask` in `PyDictObject`.
        ma_mask: usize,
        /// Offset of `ma_table` in `PyDictObject`.
        ma_table: usize,
    },
    /// 3.6–3.10: `dk_size` (a power of two) and an index table sized from it.
    Py36 {
        /// Offset of `dk_size`.
        dk_size: usize,
    },
    /// 3.11+: `dk_log2_size`, `dk_log2_index_bytes`, `dk_kind`.
    Py311 {
        /// Offset of `dk_log2_size`.
        dk_log2_size: usize,
        /// Offset of `dk_log2_index_bytes`.
        dk_log2_index_bytes: usize,
        /// Offset of `dk_kind`.
        dk_kind: usize,
        /// `sizeof(PyDictUnicodeEntry)`.
        unicode_entry_size: usize,
        /// Offset of the values array in `PyDictValues`.
        values_array: usize,
    },
}

/// How a Python-level object finds its instance `__dict__`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceDictModel {
    /// ≤ 3.10: `tp_dictoffset` is the offset of the dict pointer.
    DictOffset,
    /// 3.11: managed dict pointer, and a separate values pointer just before it.
    Managed311 {
        /// Offset (negative) of the dict pointer from the object.
        dict: i64,
        /// Offset (negative) of the values pointer.
        values: i64,
    },
    /// 3.12: one tagged pointer: a dict, or values when the low bit is set.
    Managed312 {
        /// Offset (negative) of the dict-or-values pointer.
        dict_or_values: i64,
    },
    /// 3.13+: values inline after the object (`tp_basicsize`), and a managed dict pointer.
    Inline313 {
        /// Offset (negative) of the managed dict pointer.
        dict: i64,
        /// Offset of `valid` in `PyDictValues` (inline values are stale when 0).
        values_valid: usize,
    },
}

/// Offsets shared by every object kind: headers, types, simple containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectOffsets {
    /// `PyObject.ob_type`.
    pub ob_type: usize,
    /// `PyVarObject.ob_size`.
    pub ob_size: usize,
    /// `PyTypeObject.tp_name`.
    pub tp_name: usize,
    /// `PyTypeObject.tp_basicsize`.
    pub tp_basicsize: usize,
    /// `PyTypeObject.tp_dictoffset`.
    pub tp_dictoffset: usize,
    /// `PyTypeObject.tp_flags`.
    pub tp_flags: usize,
    /// `PyHeapTypeObject.ht_cached_keys` (3.11+).
    pub ht_cached_keys: Option<usize>,
    /// `PyBytesObject.ob_sval` (`PyStringObject` on 2.7).
    pub bytes_sval: usize,
    /// `PyIntObject.ob_ival` (2.7).
    pub int_ival: Option<usize>,
    /// `PyLongObject`'s digit array.
    pub long_digits: usize,
    /// Bits per digit (15 or 30).
    pub digit_bits: u32,
    /// `PyFloatObject.ob_fval`.
    pub float_fval: usize,
    /// `PyTupleObject.ob_item`.
    pub tuple_items: usize,
    /// `PyListObject.ob_item`.
    pub list_items: usize,
    /// `PySetObject.table`.
    pub set_table: usize,
    /// `PySetObject.mask`.
    pub set_mask: usize,
    /// `PySetObject.used`.
    pub set_used: usize,
    /// `sizeof(setentry)`.
    pub set_entry_size: usize,
    /// `setentry.key`.
    pub set_entry_key: usize,
    /// `PyCellObject.ob_ref`.
    pub cell_ref: usize,
}

/// Dict offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictOffsets {
    /// Keys object representation.
    pub model: DictModel,
    /// `PyDictObject.ma_used`.
    pub used: usize,
    /// `PyDictObject.ma_keys` (3.x).
    pub keys: usize,
    /// `PyDictObject.ma_values` (3.x).
    pub values: usize,
    /// `dk_nentries` (3.x).
    pub nentries: usize,
    /// `dk_indices`: where the index table starts (3.x).
    pub indices: usize,
    /// `sizeof(PyDictKeyEntry)` (`PyDictEntry` on 2.7).
    pub entry_size: usize,
}

/// Interpreter-state offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpOffsets {
    /// `_PyRuntimeState.interpreters.head` (3.7+; before, the `interp_head` symbol).
    pub runtime_interp_head: Option<usize>,
    /// `_PyRuntimeState.finalizing` / `_finalizing` (3.7+): the thread state running
    /// `Py_FinalizeEx`, set before it frees the thread states and the interpreter (3.6
    /// has the `_Py_Finalizing` symbol instead; 2.7 nothing we can read).
    pub runtime_finalizing: Option<usize>,
    /// `PyInterpreterState.next`.
    pub next: usize,
    /// `tstate_head` / `threads.head`.
    pub tstate_head: usize,
    /// `modules` / `imports.modules`.
    pub modules: usize,
    /// `sysdict`.
    pub sysdict: usize,
}

/// Thread-state offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadOffsets {
    /// `next`.
    pub next: usize,
    /// `interp`.
    pub interp: usize,
    /// `frame` (≤ 3.10), `cframe` (3.11–3.12) or `current_frame` (3.13+).
    pub frame: usize,
    /// `_PyCFrame.current_frame` (3.11–3.12).
    pub cframe_current_frame: Option<usize>,
    /// `thread_id` (the `threading` ident, a `pthread_t`).
    pub thread_id: usize,
    /// `native_thread_id` (3.11+): the OS thread id.
    pub native_thread_id: Option<usize>,
    /// `datastack_chunk` and `datastack_top` (3.11+): the frames of the thread live in a
    /// stack of chunks, the newest from `datastack_chunk` up to `datastack_top`, so the
    /// innermost frames can be read with one read.
    pub datastack: Option<(usize, usize)>,
    /// Bytes to read to cover every field above.
    pub size: usize,
}

/// Frame offsets (`PyFrameObject` ≤ 3.10, `_PyInterpreterFrame` after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameOffsets {
    /// `f_back` / `previous`.
    pub back: usize,
    /// `f_code` / `f_executable`.
    pub code: usize,
    /// `f_lasti` (int, ≤ 3.10) or `prev_instr` / `instr_ptr` (pointer, 3.11+).
    pub lasti: usize,
    /// `f_localsplus` / `localsplus`: the fast locals array.
    pub localsplus: usize,
    /// `owner` (3.11+).
    pub owner: Option<usize>,
    /// Frames whose `owner` is this value or above are shims the interpreter pushes for
    /// itself (C-stack entry frames), not Python code (3.12+).
    pub owner_first_shim: Option<u8>,
    /// Bytes to read to cover every field above.
    pub size: usize,
}

/// Code-object offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeOffsets {
    /// `co_filename`.
    pub filename: usize,
    /// `co_name`.
    pub name: usize,
    /// `co_qualname` (3.11+).
    pub qualname: Option<usize>,
    /// `co_firstlineno`.
    pub firstlineno: usize,
    /// `co_lnotab` (≤ 3.9) or `co_linetable` (3.10+).
    pub linetable: usize,
    /// `co_code_adaptive` (3.11+): where the instructions start, inside the code object.
    pub code_adaptive: Option<usize>,
    /// `co_varnames` (≤ 3.10) or `co_localsplusnames` (3.11+).
    pub varnames: usize,
    /// `co_localspluskinds` (3.11+).
    pub localspluskinds: Option<usize>,
    /// `co_argcount`.
    pub argcount: usize,
    /// `co_kwonlyargcount` (3.x).
    pub kwonlyargcount: Option<usize>,
    /// `co_flags`.
    pub flags: usize,
    /// Bytes to read to cover every field above.
    pub size: usize,
    /// `CO_VARARGS`.
    pub varargs_flag: u32,
    /// `CO_VARKEYWORDS`.
    pub varkeywords_flag: u32,
    /// Kind bits of `co_localspluskinds` (3.11+).
    pub fast_kinds: Option<FastKinds>,
}

/// Kind bits of `co_localspluskinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastKinds {
    /// `CO_FAST_LOCAL`.
    pub local: u8,
    /// `CO_FAST_CELL`.
    pub cell: u8,
    /// `CO_FAST_FREE`.
    pub free: u8,
    /// `CO_FAST_HIDDEN` (3.12+), for comprehension temporaries.
    pub hidden: u8,
}

/// Every offset and model the engine needs for one CPython version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The version these offsets describe.
    pub version: Version,
    /// How frames are found and linked.
    pub frame_model: FrameModel,
    /// 3.14+: frame code and local variables are `_PyStackRef`s with tag bits to mask.
    pub tagged_stackrefs: bool,
    /// Encoding of the code object's line table.
    pub line_format: LineTableFormat,
    /// Where the GIL holder is recorded.
    pub gil: GilModel,
    /// String representation.
    pub strings: StrModel,
    /// Integer representation.
    pub longs: LongModel,
    /// Instance attribute storage.
    pub instance_dicts: InstanceDictModel,
    /// Object headers, types and simple containers.
    pub objects: ObjectOffsets,
    /// Dicts.
    pub dicts: DictOffsets,
    /// Interpreter state.
    pub interp: InterpOffsets,
    /// Thread state.
    pub thread: ThreadOffsets,
    /// Frames.
    pub frame: FrameOffsets,
    /// Code objects.
    pub code: CodeOffsets,
}

/// The end of the furthest field, so one read of that many bytes covers them all.
fn span(offsets: &[usize]) -> usize {
    offsets.iter().copied().max().unwrap_or(0) + 8
}

/// Bit position of a bitfield: set it through bindgen's setter on a zeroed struct and see
/// which bit moved. Keeps bit positions as data from the headers, not numbers typed here.
macro_rules! bit_of {
    ($ty:ty, $field:ident . $setter:ident, $field_off:expr) => {{
        // SAFETY: bindgen structs of integers and pointers are valid when zeroed.
        let mut value: $ty = unsafe { core::mem::zeroed() };
        value.$field.$setter(1);
        // SAFETY: reading the bytes of a plain struct we own.
        let bytes: &[u8] = unsafe {
            core::slice::from_raw_parts(
                (&value as *const $ty).cast::<u8>(),
                core::mem::size_of::<$ty>(),
            )
        };
        let word = bytes[$field_off..$field_off + 4]
            .iter()
            .rev()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        word.trailing_zeros()
    }};
}

/// Offsets shared by every version.
macro_rules! objects {
    ($b:ident, $long_digits:expr, $int_ival:expr, $bytes_sval:expr, $cached_keys:expr) => {{
        use core::mem::{offset_of, size_of};
        use python_bindings::$b as b;
        let digit = size_of::<b::digit>();
        ObjectOffsets {
            ob_type: offset_of!(b::PyObject, ob_type),
            ob_size: offset_of!(b::PyVarObject, ob_size),
            tp_name: offset_of!(b::PyTypeObject, tp_name),
            tp_basicsize: offset_of!(b::PyTypeObject, tp_basicsize),
            tp_dictoffset: offset_of!(b::PyTypeObject, tp_dictoffset),
            tp_flags: offset_of!(b::PyTypeObject, tp_flags),
            ht_cached_keys: $cached_keys,
            bytes_sval: $bytes_sval,
            int_ival: $int_ival,
            long_digits: $long_digits,
            // A digit is stored in a 16- or 32-bit word with one or two spare bits.
            digit_bits: if digit == 4 { 30 } else { 15 },
            float_fval: offset_of!(b::PyFloatObject, ob_fval),
            tuple_items: offset_of!(b::PyTupleObject, ob_item),
            list_items: offset_of!(b::PyListObject, ob_item),
            set_table: offset_of!(b::PySetObject, table),
            set_mask: offset_of!(b::PySetObject, mask),
            set_used: offset_of!(b::PySetObject, used),
            set_entry_size: size_of::<b::setentry>(),
            set_entry_key: offset_of!(b::setentry, key),
            cell_ref: offset_of!(b::PyCellObject, ob_ref),
        }
    }};
}

/// PEP 393 strings (3.3+).
macro_rules! pep393 {
    ($b:ident) => {{
        use core::mem::{offset_of, size_of};
        use python_bindings::$b as b;
        let state = offset_of!(b::PyASCIIObject, state);
        StrModel::Pep393 {
            length: offset_of!(b::PyASCIIObject, length),
            state,
            ascii_size: size_of::<b::PyASCIIObject>(),
            compact_size: size_of::<b::PyCompactUnicodeObject>(),
            data_any: offset_of!(b::PyUnicodeObject, data),
            kind_shift: bit_of!(b::PyASCIIObject, state.set_kind, state),
            compact_bit: bit_of!(b::PyASCIIObject, state.set_compact, state),
            ascii_bit: bit_of!(b::PyASCIIObject, state.set_ascii, state),
        }
    }};
}

/// 3.6–3.10 dicts: `PyDictKeysObject` with `dk_size`.
macro_rules! dicts36 {
    ($b:ident) => {{
        use core::mem::{offset_of, size_of};
        use python_bindings::$b as b;
        DictOffsets {
            model: DictModel::Py36 {
                dk_size: offset_of!(b::PyDictKeysObject, dk_size),
            },
            used: offset_of!(b::PyDictObject, ma_used),
            keys: offset_of!(b::PyDictObject, ma_keys),
            values: offset_of!(b::PyDictObject, ma_values),
            nentries: offset_of!(b::PyDictKeysObject, dk_nentries),
            indices: offset_of!(b::PyDictKeysObject, dk_indices),
            entry_size: size_of::<b::PyDictKeyEntry>(),
        }
    }};
}

/// 3.11+ dicts: log2 sizes and a kind byte.
macro_rules! dicts311 {
    ($b:ident) => {{
        use core::mem::{offset_of, size_of};
        use python_bindings::$b as b;
        DictOffsets {
            model: DictModel::Py311 {
                dk_log2_size: offset_of!(b::PyDictKeysObject, dk_log2_size),
                dk_log2_index_bytes: offset_of!(b::PyDictKeysObject, dk_log2_index_bytes),
                dk_kind: offset_of!(b::PyDictKeysObject, dk_kind),
                unicode_entry_size: size_of::<b::PyDictUnicodeEntry>(),
                values_array: offset_of!(b::PyDictValues, values),
            },
            used: offset_of!(b::PyDictObject, ma_used),
            keys: offset_of!(b::PyDictObject, ma_keys),
            values: offset_of!(b::PyDictObject, ma_values),
            nentries: offset_of!(b::PyDictKeysObject, dk_nentries),
            indices: offset_of!(b::PyDictKeysObject, dk_indices),
            entry_size: size_of::<b::PyDictKeyEntry>(),
        }
    }};
}

/// Frame-object era code objects (2.7–3.10); `$table` is `co_lnotab` or `co_linetable`.
macro_rules! code_objects_legacy {
    ($b:ident, $table:ident, $kwonly:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        let fields = [
            offset_of!(b::PyCodeObject, co_filename),
            offset_of!(b::PyCodeObject, co_name),
            offset_of!(b::PyCodeObject, co_firstlineno),
            offset_of!(b::PyCodeObject, $table),
            offset_of!(b::PyCodeObject, co_varnames),
            offset_of!(b::PyCodeObject, co_argcount),
            offset_of!(b::PyCodeObject, co_flags),
        ];
        CodeOffsets {
            filename: fields[0],
            name: fields[1],
            qualname: None,
            firstlineno: fields[2],
            linetable: fields[3],
            code_adaptive: None,
            varnames: fields[4],
            localspluskinds: None,
            argcount: fields[5],
            kwonlyargcount: $kwonly,
            flags: fields[6],
            size: span(&fields),
            varargs_flag: b::CO_VARARGS as u32,
            varkeywords_flag: b::CO_VARKEYWORDS as u32,
            fast_kinds: None,
        }
    }};
}

/// 3.11+ code objects: qualified names, localsplus kinds, inline instructions.
macro_rules! code_objects_modern {
    ($b:ident, $hidden:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        let fields = [
            offset_of!(b::PyCodeObject, co_filename),
            offset_of!(b::PyCodeObject, co_name),
            offset_of!(b::PyCodeObject, co_qualname),
            offset_of!(b::PyCodeObject, co_firstlineno),
            offset_of!(b::PyCodeObject, co_linetable),
            offset_of!(b::PyCodeObject, co_localsplusnames),
            offset_of!(b::PyCodeObject, co_localspluskinds),
            offset_of!(b::PyCodeObject, co_argcount),
            offset_of!(b::PyCodeObject, co_kwonlyargcount),
            offset_of!(b::PyCodeObject, co_flags),
        ];
        CodeOffsets {
            filename: fields[0],
            name: fields[1],
            qualname: Some(fields[2]),
            firstlineno: fields[3],
            linetable: fields[4],
            code_adaptive: Some(offset_of!(b::PyCodeObject, co_code_adaptive)),
            varnames: fields[5],
            localspluskinds: Some(fields[6]),
            argcount: fields[7],
            kwonlyargcount: Some(fields[8]),
            flags: fields[9],
            size: span(&fields),
            varargs_flag: b::CO_VARARGS as u32,
            varkeywords_flag: b::CO_VARKEYWORDS as u32,
            fast_kinds: Some(FastKinds {
                local: b::CO_FAST_LOCAL as u8,
                cell: b::CO_FAST_CELL as u8,
                free: b::CO_FAST_FREE as u8,
                hidden: $hidden,
            }),
        }
    }};
}

/// `PyFrameObject` frames (2.7–3.10).
macro_rules! frame_objects {
    ($b:ident) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        let fields = [
            offset_of!(b::PyFrameObject, f_back),
            offset_of!(b::PyFrameObject, f_code),
            offset_of!(b::PyFrameObject, f_lasti),
            offset_of!(b::PyFrameObject, f_localsplus),
        ];
        FrameOffsets {
            back: fields[0],
            code: fields[1],
            lasti: fields[2],
            localsplus: fields[3],
            owner: None,
            owner_first_shim: None,
            // The locals array is read separately; the fixed part ends where it starts.
            size: fields[3],
        }
    }};
}

/// `_PyInterpreterFrame` frames (3.11+); field names differ between minors.
macro_rules! interpreter_frames {
    ($b:ident, $code:ident, $instr:ident, $cstack:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        let fields = [
            offset_of!(b::_PyInterpreterFrame, previous),
            offset_of!(b::_PyInterpreterFrame, $code),
            offset_of!(b::_PyInterpreterFrame, $instr),
            offset_of!(b::_PyInterpreterFrame, localsplus),
            offset_of!(b::_PyInterpreterFrame, owner),
        ];
        FrameOffsets {
            back: fields[0],
            code: fields[1],
            lasti: fields[2],
            localsplus: fields[3],
            owner: Some(fields[4]),
            owner_first_shim: $cstack,
            size: fields[3],
        }
    }};
}

/// Thread states; `$frame` is the field leading to the current frame.
macro_rules! thread_states {
    ($b:ident, $frame:ident, $cframe:expr, $native:expr) => {{
        thread_states!($b, $frame, $cframe, $native, None)
    }};
    ($b:ident, $frame:ident, $cframe:expr, $native:expr, datastack) => {{
        thread_states!(
            $b,
            $frame,
            $cframe,
            $native,
            Some((
                core::mem::offset_of!(python_bindings::$b::PyThreadState, datastack_chunk),
                core::mem::offset_of!(python_bindings::$b::PyThreadState, datastack_top)
            ))
        )
    }};
    ($b:ident, $frame:ident, $cframe:expr, $native:expr, $datastack:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        let fields = [
            offset_of!(b::PyThreadState, next),
            offset_of!(b::PyThreadState, interp),
            offset_of!(b::PyThreadState, $frame),
            offset_of!(b::PyThreadState, thread_id),
        ];
        let native: Option<usize> = $native;
        let datastack: Option<(usize, usize)> = $datastack;
        let (chunk, top) = datastack.unwrap_or((0, 0));
        ThreadOffsets {
            next: fields[0],
            interp: fields[1],
            frame: fields[2],
            cframe_current_frame: $cframe,
            thread_id: fields[3],
            native_thread_id: native,
            datastack,
            size: span(&[span(&fields), native.unwrap_or(0), chunk, top]),
        }
    }};
}

/// Offsets of the instance-dict pointers that live in front of an object (3.11+): just
/// before the GC header.
macro_rules! preheader {
    ($b:ident, $slot:expr) => {
        -((core::mem::size_of::<python_bindings::$b::PyGC_Head>() + $slot * 8) as i64)
    };
}

/// Python 2.7.
macro_rules! py27 {
    ($b:ident, $version:expr) => {{
        use core::mem::{offset_of, size_of};
        use python_bindings::$b as b;
        Layout {
            version: $version,
            frame_model: FrameModel::FrameObject,
            tagged_stackrefs: false,
            line_format: LineTableFormat::Lnotab27,
            gil: GilModel::ThreadStateCurrentSymbol,
            strings: StrModel::Py2 {
                string_sval: offset_of!(b::PyStringObject, ob_sval),
                unicode_str: offset_of!(b::PyUnicodeObject, str_),
                unicode_length: offset_of!(b::PyUnicodeObject, length),
                unicode_char_size: size_of::<b::Py_UNICODE>(),
            },
            longs: LongModel::SignedSize,
            instance_dicts: InstanceDictModel::DictOffset,
            objects: objects!(
                $b,
                offset_of!(b::PyLongObject, ob_digit),
                Some(offset_of!(b::PyIntObject, ob_ival)),
                offset_of!(b::PyStringObject, ob_sval),
                None
            ),
            dicts: DictOffsets {
                model: DictModel::Py27 {
                    ma_mask: offset_of!(b::PyDictObject, ma_mask),
                    ma_table: offset_of!(b::PyDictObject, ma_table),
                },
                used: offset_of!(b::PyDictObject, ma_used),
                keys: 0,
                values: 0,
                nentries: 0,
                indices: 0,
                entry_size: size_of::<b::PyDictEntry>(),
            },
            interp: InterpOffsets {
                runtime_interp_head: None,
                runtime_finalizing: None,
                next: offset_of!(b::PyInterpreterState, next),
                tstate_head: offset_of!(b::PyInterpreterState, tstate_head),
                modules: offset_of!(b::PyInterpreterState, modules),
                sysdict: offset_of!(b::PyInterpreterState, sysdict),
            },
            thread: thread_states!($b, frame, None, None),
            frame: frame_objects!($b),
            code: code_objects_legacy!($b, co_lnotab, None),
        }
    }};
}

/// The 3.x frame-object era (3.6–3.10): `$line` is the line-table format, `$table` its
/// field, `$runtime` whether `_PyRuntime` exists (3.7+).
macro_rules! py3_frame_objects {
    ($b:ident, $version:expr, $line:expr, $table:ident, $head:expr, $gil:expr) => {{
        py3_frame_objects!(
            $b,
            $version,
            $line,
            $table,
            $head,
            $gil,
            runtime_finalizing!($b)
        )
    }};
    ($b:ident, $version:expr, $line:expr, $table:ident, $head:expr, $gil:expr,
     $finalizing:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        Layout {
            version: $version,
            frame_model: FrameModel::FrameObject,
            tagged_stackrefs: false,
            line_format: $line,
            gil: $gil,
            strings: pep393!($b),
            longs: LongModel::SignedSize,
            instance_dicts: InstanceDictModel::DictOffset,
            objects: objects!(
                $b,
                offset_of!(b::PyLongObject, ob_digit),
                None,
                offset_of!(b::PyBytesObject, ob_sval),
                None
            ),
            dicts: dicts36!($b),
            interp: InterpOffsets {
                runtime_interp_head: $head,
                runtime_finalizing: $finalizing,
                next: offset_of!(b::PyInterpreterState, next),
                tstate_head: offset_of!(b::PyInterpreterState, tstate_head),
                modules: offset_of!(b::PyInterpreterState, modules),
                sysdict: offset_of!(b::PyInterpreterState, sysdict),
            },
            thread: thread_states!($b, frame, None, None),
            frame: frame_objects!($b),
            code: code_objects_legacy!(
                $b,
                $table,
                Some(offset_of!(b::PyCodeObject, co_kwonlyargcount))
            ),
        }
    }};
}

/// Python 3.6: no `_PyRuntime` yet.
macro_rules! py36 {
    ($b:ident, $version:expr) => {
        py3_frame_objects!(
            $b,
            $version,
            LineTableFormat::Lnotab36,
            co_lnotab,
            None,
            GilModel::ThreadStateCurrentSymbol
        )
    };
}

/// Where `_PyRuntime` says that the interpreter is being finalized: the field was renamed
/// `_finalizing` in 3.9, and 3.6 has no `_PyRuntime` at all.
macro_rules! runtime_finalizing {
    (v3_6) => {
        None
    };
    (v3_7) => {
        Some(core::mem::offset_of!(
            python_bindings::v3_7::_PyRuntimeState,
            finalizing
        ))
    };
    (v3_8) => {
        Some(core::mem::offset_of!(
            python_bindings::v3_8::_PyRuntimeState,
            finalizing
        ))
    };
    ($b:ident) => {
        Some(core::mem::offset_of!(
            python_bindings::$b::_PyRuntimeState,
            _finalizing
        ))
    };
}

/// The `_PyRuntime` fields of 3.7–3.11.
macro_rules! runtime37 {
    ($b:ident) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        (
            Some(offset_of!(b::_PyRuntimeState, interpreters.head)),
            GilModel::RuntimeTstateCurrent(offset_of!(b::_PyRuntimeState, gilstate.tstate_current)),
        )
    }};
}

/// Python 3.7–3.9.
macro_rules! py37 {
    ($b:ident, $version:expr) => {{
        let (head, gil) = runtime37!($b);
        py3_frame_objects!(
            $b,
            $version,
            LineTableFormat::Lnotab36,
            co_lnotab,
            head,
            gil
        )
    }};
}

/// Python 3.10: a new line table, `f_lasti` counts code units.
macro_rules! py310 {
    ($b:ident, $version:expr) => {{
        let (head, gil) = runtime37!($b);
        py3_frame_objects!(
            $b,
            $version,
            LineTableFormat::LineTable310,
            co_linetable,
            head,
            gil
        )
    }};
}

/// The interpreter-frame era (3.11+), parameterised by what moved between minors.
macro_rules! py3_interpreter_frames {
    ($b:ident, $version:expr, $gil:expr, $head:expr, $tstate_head:expr, $modules:expr,
     $thread:expr, $frame:expr, $code:expr, $longs:expr, $long_digits:expr,
     $instance_dicts:expr, $tagged:expr, $model:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        Layout {
            version: $version,
            frame_model: $model,
            tagged_stackrefs: $tagged,
            line_format: LineTableFormat::Locations311,
            gil: $gil,
            strings: pep393!($b),
            longs: $longs,
            instance_dicts: $instance_dicts,
            objects: objects!(
                $b,
                $long_digits,
                None,
                offset_of!(b::PyBytesObject, ob_sval),
                Some(offset_of!(b::PyHeapTypeObject, ht_cached_keys))
            ),
            dicts: dicts311!($b),
            interp: InterpOffsets {
                runtime_interp_head: Some($head),
                runtime_finalizing: runtime_finalizing!($b),
                next: offset_of!(b::PyInterpreterState, next),
                tstate_head: $tstate_head,
                modules: $modules,
                sysdict: offset_of!(b::PyInterpreterState, sysdict),
            },
            thread: $thread,
            frame: $frame,
            code: $code,
        }
    }};
}

/// Python 3.11.
macro_rules! py311 {
    ($b:ident, $version:expr) => {{
        // The inner macro imports the same names, which makes these look unused.
        #[allow(unused_imports)]
        use core::mem::offset_of;
        #[allow(unused_imports)]
        use python_bindings::$b as b;
        let (head, gil) = runtime37!($b);
        py3_interpreter_frames!(
            $b,
            $version,
            gil,
            head.unwrap_or(0),
            offset_of!(b::PyInterpreterState, threads.head),
            offset_of!(b::PyInterpreterState, modules),
            thread_states!(
                $b,
                cframe,
                Some(offset_of!(b::_PyCFrame, current_frame)),
                Some(offset_of!(b::PyThreadState, native_thread_id)),
                datastack
            ),
            interpreter_frames!($b, f_code, prev_instr, None),
            code_objects_modern!($b, 0),
            LongModel::SignedSize,
            offset_of!(b::PyLongObject, ob_digit),
            InstanceDictModel::Managed311 {
                dict: preheader!($b, 1),
                values: preheader!($b, 2),
            },
            false,
            FrameModel::CFrame
        )
    }};
}

/// The GIL of 3.12+: per interpreter, behind `ceval.gil`.
macro_rules! interp_gil {
    ($b:ident, $version:expr) => {{
        use core::mem::offset_of;
        use python_bindings::$b as b;
        if $version.free_threaded {
            GilModel::NoGil
        } else {
            GilModel::InterpreterGil {
                ceval_gil: offset_of!(b::PyInterpreterState, ceval.gil),
                locked: offset_of!(b::_gil_runtime_state, locked),
                last_holder: offset_of!(b::_gil_runtime_state, last_holder),
            }
        }
    }};
}

/// Python 3.12.
macro_rules! py312 {
    ($b:ident, $version:expr) => {{
        // The inner macro imports the same names, which makes these look unused.
        #[allow(unused_imports)]
        use core::mem::offset_of;
        #[allow(unused_imports)]
        use python_bindings::$b as b;
        py3_interpreter_frames!(
            $b,
            $version,
            interp_gil!($b, $version),
            offset_of!(b::_PyRuntimeState, interpreters.head),
            offset_of!(b::PyInterpreterState, threads.head),
            offset_of!(b::PyInterpreterState, imports.modules),
            thread_states!(
                $b,
                cframe,
                Some(offset_of!(b::_PyCFrame, current_frame)),
                Some(offset_of!(b::PyThreadState, native_thread_id)),
                datastack
            ),
            interpreter_frames!($b, f_code, prev_instr, Some(b::FRAME_OWNED_BY_CSTACK as u8)),
            code_objects_modern!($b, b::CO_FAST_HIDDEN as u8),
            LongModel::Tagged {
                lv_tag: offset_of!(b::PyLongObject, long_value.lv_tag)
            },
            offset_of!(b::PyLongObject, long_value.ob_digit),
            InstanceDictModel::Managed312 {
                dict_or_values: preheader!($b, 1),
            },
            false,
            FrameModel::CFrame
        )
    }};
}

/// Python 3.13 and later: `current_frame` on the thread state; from 3.14 the frame's code
/// and locals are tagged stack references.
macro_rules! py313 {
    ($b:ident, $version:expr) => {{
        py313!($b, $version, false, FRAME_OWNED_BY_CSTACK)
    }};
    ($b:ident, $version:expr, $tagged:expr, $first_shim:ident) => {{
        // The inner macro imports the same names, which makes these look unused.
        #[allow(unused_imports)]
        use core::mem::offset_of;
        #[allow(unused_imports)]
        use python_bindings::$b as b;
        py3_interpreter_frames!(
            $b,
            $version,
            interp_gil!($b, $version),
            offset_of!(b::_PyRuntimeState, interpreters.head),
            offset_of!(b::PyInterpreterState, threads.head),
            offset_of!(b::PyInterpreterState, imports.modules),
            thread_states!(
                $b,
                current_frame,
                None,
                Some(offset_of!(b::PyThreadState, native_thread_id)),
                datastack
            ),
            interpreter_frames!($b, f_executable, instr_ptr, Some(b::$first_shim as u8)),
            code_objects_modern!($b, b::CO_FAST_HIDDEN as u8),
            LongModel::Tagged {
                lv_tag: offset_of!(b::PyLongObject, long_value.lv_tag)
            },
            offset_of!(b::PyLongObject, long_value.ob_digit),
            InstanceDictModel::Inline313 {
                dict: preheader!($b, 1),
                values_valid: offset_of!(b::PyDictValues, valid),
            },
            $tagged,
            FrameModel::CurrentFrame
        )
    }};
}

/// Python 3.14+: tagged stack references, and the interpreter's own entry frames are
/// owned by `FRAME_OWNED_BY_INTERPRETER`.
macro_rules! py314 {
    ($b:ident, $version:expr) => {
        py313!($b, $version, true, FRAME_OWNED_BY_INTERPRETER)
    };
}

/// The layout for a version we have bindings for, with `patch` filled in from the target.
pub fn layout_for(
    major: u32,
    minor: u32,
    free_threaded: bool,
    patch: Option<u32>,
) -> Option<Layout> {
    macro_rules! pick {
        ($module:ident, $major:literal, $minor:literal, $ft:literal, $family:ident) => {
            if major == $major && minor == $minor && free_threaded == $ft {
                let version = Version {
                    major,
                    minor,
                    patch,
                    free_threaded,
                };
                return Some($family!($module, version));
            }
        };
    }
    python_bindings::for_each_version!(pick);
    None
}

/// Every version we have bindings for, as `X.Y` or `X.Yt`, oldest first.
pub fn supported_versions() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! name {
        ($module:ident, $major:literal, $minor:literal, $ft:literal, $family:ident) => {
            out.push(format!(
                "{}.{}{}",
                $major,
                $minor,
                if $ft { "t" } else { "" }
            ));
        };
    }
    python_bindings::for_each_version!(name);
    out
}

/// The newest version we have bindings for (with or without free threading), used as the
/// base for a newer minor whose `_Py_DebugOffsets` fill in what moved.
pub fn newest_layout(free_threaded: bool) -> Option<Layout> {
    let mut newest: Option<(u32, u32)> = None;
    macro_rules! newest {
        ($module:ident, $major:literal, $minor:literal, $ft:literal, $family:ident) => {
            if $ft == free_threaded && newest.map_or(true, |n| ($major, $minor) > n) {
                newest = Some(($major, $minor));
            }
        };
    }
    python_bindings::for_each_version!(newest);
    let (major, minor) = newest?;
    layout_for(major, minor, free_threaded, None)
}
