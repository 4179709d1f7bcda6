//! Builds a plausible CPython address space from an [`ImageSpec`], for any supported
//! layout, and records what a correct walk of it returns; then applies mutations to it.
//!
//! Everything is placed through the [`Layout`]'s offsets, so the same builder makes a 2.7
//! frame object, a 3.12 `_PyInterpreterFrame` behind a `_PyCFrame` or a 3.14 frame with
//! tagged stack references. Three arenas (statics, heap, thread stacks) leave unmapped
//! space between them for hostile pointers to land in.

use std::collections::HashMap;
use std::path::PathBuf;

use py_spy::interpreter::Interpreter;
use py_spy::layout::{
    DictModel, FrameModel, GilModel, InstanceDictModel, Layout, LongModel, StrModel,
};
use py_spy::linetable::LineTableFormat;
use py_spy::memory::{FakeMemory, MemoryReader, ReadResult};
use py_spy::walker::MAX_FRAMES;

use super::spec::{
    FieldKind, FrameSpec, ImageSpec, LocalKind, Mutation, ObjClass, Target, UnitValue, Value,
    WordValue, BYTES, CLASSES, FILES, FLOATS, FUNCS, LONG, NAMES, TEXTS,
};

/// Arena bases: statics (types, interpreter, runtime), heap objects, thread stacks.
const BASES: [u64; 3] = [0x5555_5550_0000, 0x7f3a_1000_0000, 0x7ffd_8000_0000];
/// Where the shared garbage region is mapped.
pub const GARBAGE_BASE: u64 = 0x7f3b_0000_0000;
/// Size of the garbage region: room for the largest reads the readers allow (a dict scan
/// of 65 536 entries is 1.5 MiB), so huge sizes are not always stopped by an unmapped page.
const GARBAGE_LEN: usize = 2 << 20;

/// A large mapped region of pseudo-random words, built once and shared by every image:
/// pointers into itself (aligned or not) and into the arenas, small numbers, sizes at and
/// around the readers' limits, and noise.
pub fn garbage() -> &'static [u8] {
    static GARBAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    GARBAGE.get_or_init(|| {
        const SIZES: [u64; 16] = [
            1,
            2,
            7,
            8,
            255,
            256,
            1023,
            1024,
            1025,
            4096,
            65_535,
            65_536,
            131_072,
            1 << 20,
            i64::MAX as u64,
            u64::MAX,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut out = Vec::with_capacity(GARBAGE_LEN);
        while out.len() < GARBAGE_LEN {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = state >> 8;
            let word = match state % 8 {
                0 | 1 => GARBAGE_BASE + ((r % GARBAGE_LEN as u64) & !7),
                2 => BASES[(r % 3) as usize] + (r >> 8) % 0x4000,
                3 => r % 64,
                4 => SIZES[(r % 16) as usize],
                5 => GARBAGE_BASE + r % GARBAGE_LEN as u64,
                6 => state,
                _ => 0,
            };
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    })
}

/// An image's address space: its arenas (a [`FakeMemory`]) and the shared garbage region.
pub struct Space {
    image: FakeMemory,
}

impl MemoryReader for Space {
    fn read(&self, addr: u64, buf: &mut [u8]) -> ReadResult<()> {
        if let Some(off) = addr.checked_sub(GARBAGE_BASE) {
            let g = garbage();
            if off < g.len() as u64 && off as usize + buf.len() <= g.len() {
                buf.copy_from_slice(&g[off as usize..off as usize + buf.len()]);
                return Ok(());
            }
        }
        self.image.read(addr, buf)
    }
}
const STATIC: usize = 0;
const HEAP: usize = 1;
const STACK: usize = 2;

/// A field the mutations may aim at.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Where it is.
    pub addr: u64,
    /// How many bytes it covers (a word, an int, a byte, or a whole data region).
    pub width: usize,
    /// The object it belongs to (for self-references).
    pub owner: u64,
}

/// A string's character data, for code-unit mutations.
#[derive(Debug, Clone, Copy)]
pub struct StrData {
    addr: u64,
    width: usize,
    units: usize,
}

/// What a correct walk of a thread returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedThread {
    pub tstate: u64,
    pub thread_id: u64,
    pub native_id: Option<u64>,
    pub frames: Vec<ExpectedFrame>,
    pub truncated: bool,
}

/// What a correct walk returns for a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedFrame {
    pub name: String,
    pub filename: String,
    pub line: Option<i32>,
    pub first_line: i32,
    /// (name, repr, is_arg).
    pub locals: Vec<(String, String, bool)>,
}

/// A built image.
pub struct Image<'l> {
    pub layout: &'l Layout,
    arenas: Vec<Vec<u8>>,
    fields: HashMap<FieldKind, Vec<Field>>,
    objects: HashMap<ObjClass, Vec<u64>>,
    strings: Vec<StrData>,
    types: HashMap<String, u64>,
    /// The interpreter state.
    pub interp: u64,
    /// `_PyRuntime`.
    pub runtime: u64,
    /// The `_PyThreadState_Current` word (≤ 3.6).
    pub tstate_current: u64,
    /// Threads as a walk should return them.
    pub threads: Vec<ExpectedThread>,
    /// `threading` names by ident.
    pub names: HashMap<u64, String>,
    /// The GIL holder `gil_holder` should report.
    pub gil: Option<u64>,
    /// Every value built, with its expected repr (complete, before truncation).
    pub values: Vec<(u64, String)>,
}

/// Python's repr limit, mirrored: over 128 characters keeps 125 and adds "...".
pub fn truncated(repr: String) -> String {
    const MAX: usize = 128;
    if repr.chars().count() <= MAX {
        return repr;
    }
    let mut out: String = repr.chars().take(MAX - 3).collect();
    out.push_str("...");
    out
}

fn py2(layout: &Layout) -> bool {
    matches!(layout.strings, StrModel::Py2 { .. })
}

/// Encodes `(units, delta, no_line)` ranges into the layout's line-table format; returns the
/// table and, per range, the line `line_for_offset` must give inside it.
pub fn encode_linetable(
    format: LineTableFormat,
    ranges: &[(u8, i8, bool)],
    first_line: i32,
    style: u8,
) -> (Vec<u8>, Vec<Option<i32>>) {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let mut line = first_line;
    let mut prev_bytes = 0u8;
    for (j, &(units, delta, no_line)) in ranges.iter().enumerate() {
        let units = units.max(1);
        let bytes = units * 2;
        match format {
            LineTableFormat::Lnotab27 | LineTableFormat::Lnotab36 => {
                // Increments only in 2.7; the line of a range is the running line after its
                // pair, and the pair's address increment is the previous range's length.
                let d = if format == LineTableFormat::Lnotab27 {
                    delta.unsigned_abs() as i8
                } else {
                    delta
                };
                out.push(if j == 0 { 0 } else { prev_bytes });
                out.push(d as u8);
                line += i32::from(d);
                lines.push(Some(line));
            }
            LineTableFormat::LineTable310 => {
                out.push(bytes);
                if no_line {
                    out.push(0x80);
                    lines.push(None);
                } else {
                    out.push(delta as u8);
                    line += i32::from(delta);
                    lines.push(Some(line));
                }
            }
            LineTableFormat::Locations311 => {
                let mut left = units;
                let mut first = true;
                while left > 0 {
                    let n = left.min(8);
                    left -= n;
                    let d = if first && !no_line { delta } else { 0 };
                    first = false;
                    let len_bits = n - 1;
                    if no_line {
                        out.push(0x80 | (15 << 3) | len_bits);
                        continue;
                    }
                    match (style % 4, d) {
                        (0, 0) => {
                            // Short form: same line, one column byte.
                            out.push(0x80 | ((style >> 2) % 10) << 3 | len_bits);
                            out.push(style & 0x3f);
                        }
                        (1, 0..=2) => {
                            // One-line form: delta in the kind, two column bytes.
                            out.push(0x80 | ((10 + d as u8) << 3) | len_bits);
                            out.push(4);
                            out.push(9);
                        }
                        (2, _) => {
                            // Long form: delta, end-line delta, column + 1, end column + 1.
                            out.push(0x80 | (14 << 3) | len_bits);
                            push_signed_varint(&mut out, i32::from(d));
                            push_varint(&mut out, 1);
                            push_varint(&mut out, 70);
                            push_varint(&mut out, 3);
                        }
                        _ => {
                            // No columns: signed varint delta.
                            out.push(0x80 | (13 << 3) | len_bits);
                            push_signed_varint(&mut out, i32::from(d));
                        }
                    }
                }
                if no_line {
                    lines.push(None);
                } else {
                    line += i32::from(delta);
                    lines.push(Some(line));
                }
            }
        }
        prev_bytes = bytes;
    }
    (out, lines)
}

fn push_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x40 {
        out.push(0x40 | (v & 0x3f) as u8);
        v >>= 6;
    }
    out.push(v as u8);
}

fn push_signed_varint(out: &mut Vec<u8>, v: i32) {
    let raw = if v < 0 {
        (v.unsigned_abs() << 1) | 1
    } else {
        (v as u32) << 1
    };
    push_varint(out, raw);
}

impl<'l> Image<'l> {
    fn new(layout: &'l Layout) -> Self {
        Image {
            layout,
            arenas: vec![Vec::new(), Vec::new(), Vec::new()],
            fields: HashMap::new(),
            objects: HashMap::new(),
            strings: Vec::new(),
            types: HashMap::new(),
            interp: 0,
            runtime: 0,
            tstate_current: 0,
            threads: Vec::new(),
            names: HashMap::new(),
            gil: None,
            values: Vec::new(),
        }
    }

    // ---- Raw space ----

    fn alloc(&mut self, arena: usize, size: usize) -> u64 {
        let bytes = &mut self.arenas[arena];
        let at = bytes.len().next_multiple_of(16);
        bytes.resize(at + size.max(8), 0);
        BASES[arena] + at as u64
    }

    fn slice(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let arena = (0..3)
            .rev()
            .find(|a| addr >= BASES[*a])
            .expect("address in an arena");
        let off = (addr - BASES[arena]) as usize;
        &mut self.arenas[arena][off..off + len]
    }

    fn put(&mut self, addr: u64, bytes: &[u8]) {
        self.slice(addr, bytes.len()).copy_from_slice(bytes);
    }

    fn w64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }

    fn w32(&mut self, addr: u64, v: u32) {
        self.put(addr, &v.to_le_bytes());
    }

    fn field(&mut self, kind: FieldKind, addr: u64, width: usize, owner: u64) {
        self.fields
            .entry(kind)
            .or_default()
            .push(Field { addr, width, owner });
    }

    /// Writes a word and records it as a mutation target.
    fn wf(&mut self, kind: FieldKind, owner: u64, off: usize, v: u64) {
        let addr = owner + off as u64;
        self.w64(addr, v);
        self.field(kind, addr, 8, owner);
    }

    fn record(&mut self, class: ObjClass, addr: u64) {
        self.objects.entry(class).or_default().push(addr);
        self.objects.entry(ObjClass::Any).or_default().push(addr);
    }

    // ---- Types and object headers ----

    fn ty(&mut self, name: &str) -> u64 {
        if let Some(t) = self.types.get(name) {
            return *t;
        }
        let o = self.layout.objects;
        let size = [
            o.tp_name,
            o.tp_basicsize,
            o.tp_dictoffset,
            o.tp_flags,
            o.ht_cached_keys.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap()
            + 8;
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let name_at = self.alloc(STATIC, cname.len());
        self.put(name_at, &cname);
        self.field(FieldKind::StrData, name_at, cname.len() - 1, name_at);
        let t = self.alloc(STATIC, size);
        self.wf(FieldKind::TpName, t, o.tp_name, name_at);
        // Instances keep their dict pointer right after the header (≤ 3.10, modules).
        let header = o.ob_type + 8;
        self.wf(FieldKind::TpBasicSize, t, o.tp_basicsize, header as u64 + 8);
        let dictoffset = if matches!(name, "module") || CLASSES.contains(&name) {
            header as u64
        } else {
            0
        };
        self.wf(FieldKind::TpDictOffset, t, o.tp_dictoffset, dictoffset);
        self.record(ObjClass::Type, t);
        self.types.insert(name.to_string(), t);
        t
    }

    /// An object of type `tp` with `size` bytes (at least the header).
    fn object(&mut self, tp: &str, size: usize, class: ObjClass) -> u64 {
        self.object_with_preheader(tp, size, 0, class)
    }

    fn object_with_preheader(&mut self, tp: &str, size: usize, pre: usize, class: ObjClass) -> u64 {
        let t = self.ty(tp);
        let o = self.layout.objects;
        let size = size.max(o.ob_size + 8);
        let obj = self.alloc(HEAP, pre + size) + pre as u64;
        self.wf(FieldKind::ObType, obj, o.ob_type, t);
        self.record(class, obj);
        obj
    }

    // ---- Strings, bytes, numbers ----

    /// A `str` (Python 2: a UTF-8 `str`, or a `unicode` when `legacy`).
    fn string(&mut self, text: &str, legacy: bool) -> u64 {
        let units: Vec<u32> = text.chars().map(u32::from).collect();
        match self.layout.strings {
            StrModel::Pep393 {
                length,
                state,
                ascii_size,
                compact_size,
                data_any,
                kind_shift,
                compact_bit,
                ascii_bit,
            } => {
                let max = units.iter().copied().max().unwrap_or(0);
                let kind = if max < 0x100 {
                    1
                } else if max < 0x10000 {
                    2
                } else {
                    4
                };
                let ascii = text.is_ascii();
                let data_bytes: Vec<u8> = units
                    .iter()
                    .chain(std::iter::once(&0))
                    .flat_map(|u| u.to_le_bytes()[..kind].to_vec())
                    .collect();
                let (obj, data) = if legacy {
                    let obj = self.object("str", compact_size.max(data_any + 8), ObjClass::Str);
                    let data = self.alloc(HEAP, data_bytes.len());
                    self.wf(FieldKind::LegacyData, obj, data_any, data);
                    (obj, data)
                } else {
                    let start = if ascii { ascii_size } else { compact_size };
                    let obj = self.object("str", start + data_bytes.len(), ObjClass::Str);
                    (obj, obj + start as u64)
                };
                self.put(data, &data_bytes);
                self.wf(FieldKind::Size, obj, length, units.len() as u64);
                let bits = (kind as u32) << kind_shift
                    | u32::from(!legacy) << compact_bit
                    | u32::from(ascii) << ascii_bit;
                self.w32(obj + state as u64, bits);
                self.field(FieldKind::StrState, obj + state as u64, 4, obj);
                self.str_data(data, kind, units.len());
                obj
            }
            StrModel::Py2 {
                string_sval,
                unicode_str,
                unicode_length,
                unicode_char_size,
            } => {
                if legacy {
                    let obj = self.object(
                        "unicode",
                        unicode_str.max(unicode_length) + 8,
                        ObjClass::Str,
                    );
                    let data_bytes: Vec<u8> = units
                        .iter()
                        .chain(std::iter::once(&0))
                        .flat_map(|u| u.to_le_bytes()[..unicode_char_size].to_vec())
                        .collect();
                    let data = self.alloc(HEAP, data_bytes.len());
                    self.put(data, &data_bytes);
                    self.wf(FieldKind::LegacyData, obj, unicode_str, data);
                    self.wf(FieldKind::Size, obj, unicode_length, units.len() as u64);
                    self.str_data(data, unicode_char_size, units.len());
                    obj
                } else {
                    self.bytes_object("str", text.as_bytes(), string_sval)
                }
            }
        }
    }

    fn str_data(&mut self, addr: u64, width: usize, units: usize) {
        self.strings.push(StrData { addr, width, units });
        self.field(FieldKind::StrData, addr, (units * width).max(1), addr);
    }

    /// A bytes-like object: ob_size and inline data (`bytes`, or a Python 2 `str`).
    fn bytes_object(&mut self, tp: &str, data: &[u8], sval: usize) -> u64 {
        let obj = self.object(tp, sval + data.len() + 1, ObjClass::Str);
        self.put(obj + sval as u64, data);
        self.wf(
            FieldKind::Size,
            obj,
            self.layout.objects.ob_size,
            data.len() as u64,
        );
        self.str_data(obj + sval as u64, 1, data.len());
        obj
    }

    fn bytes(&mut self, data: &[u8]) -> u64 {
        let tp = if py2(self.layout) { "str" } else { "bytes" };
        self.bytes_object(tp, data, self.layout.objects.bytes_sval)
    }

    /// An `int`/`long`/`bool` with digits (Python 3 ints, Python 2 longs).
    fn long(&mut self, tp: &str, value: i128) -> u64 {
        let o = self.layout.objects;
        let bits = o.digit_bits;
        let mut mag = value.unsigned_abs();
        let mut digits = Vec::new();
        while mag != 0 {
            digits.push((mag & ((1 << bits) - 1)) as u32);
            mag >>= bits;
        }
        let width = if bits == 30 { 4 } else { 2 };
        let obj = self.object(
            tp,
            o.long_digits + width * digits.len().max(1),
            ObjClass::Any,
        );
        for (i, d) in digits.iter().enumerate() {
            let at = obj + (o.long_digits + i * width) as u64;
            self.put(at, &d.to_le_bytes()[..width]);
        }
        let n = digits.len() as u64;
        match self.layout.longs {
            LongModel::SignedSize => {
                let size = if value < 0 { n.wrapping_neg() } else { n };
                self.wf(FieldKind::Size, obj, o.ob_size, size);
            }
            LongModel::Tagged { lv_tag } => {
                let sign = match value.signum() {
                    0 => 1,
                    -1 => 2,
                    _ => 0,
                };
                self.wf(FieldKind::Size, obj, lv_tag, n << 3 | sign);
            }
        }
        obj
    }

    /// A Python 2 `int` or `bool`: one machine word.
    fn small_int(&mut self, tp: &str, value: i64) -> u64 {
        let ival = self.layout.objects.int_ival.expect("Python 2 ints");
        let obj = self.object(tp, ival + 8, ObjClass::Any);
        self.w64(obj + ival as u64, value as u64);
        obj
    }

    fn int(&mut self, value: i64) -> u64 {
        if py2(self.layout) {
            self.small_int("int", value)
        } else {
            self.long("int", i128::from(value))
        }
    }

    // ---- Values ----

    /// Builds `value`; returns its address and full repr.
    fn value(&mut self, value: &Value) -> (u64, String) {
        let l = self.layout;
        let p2 = py2(l);
        let (addr, repr) = match value {
            Value::None => (
                self.object("NoneType", 0, ObjClass::Any),
                "None".to_string(),
            ),
            Value::Bool(b) => {
                let obj = if p2 {
                    self.small_int("bool", i64::from(*b))
                } else {
                    self.long("bool", i128::from(*b))
                };
                (obj, if *b { "True" } else { "False" }.to_string())
            }
            Value::Int(v) => (self.int(*v), v.to_string()),
            Value::Big(v) => {
                if p2 {
                    (self.long("long", *v), format!("{v}L"))
                } else {
                    (self.long("int", *v), v.to_string())
                }
            }
            Value::Float(i) => {
                let (x, repr) = FLOATS[i.index(FLOATS.len())];
                let fval = l.objects.float_fval;
                let obj = self.object("float", fval + 8, ObjClass::Any);
                self.w64(obj + fval as u64, x.to_bits());
                (obj, repr.to_string())
            }
            Value::Str(i, legacy) => {
                let (text, r3, r2, r2u) = TEXTS[i.index(TEXTS.len())];
                let repr = match (p2, legacy) {
                    _ if text == LONG => {
                        let prefix = if p2 && *legacy { "u" } else { "" };
                        format!("{prefix}'{LONG}'")
                    }
                    (false, _) => r3.to_string(),
                    (true, false) => r2.to_string(),
                    (true, true) => r2u.to_string(),
                };
                (self.string(text, *legacy), repr)
            }
            Value::Bytes(i) => {
                let (data, repr) = BYTES[i.index(BYTES.len())];
                let obj = self.bytes(data);
                // A Python 2 `str` has no b prefix.
                let repr = if p2 { &repr[1..] } else { repr };
                (obj, repr.to_string())
            }
            Value::Tuple(items) | Value::List(items) => {
                let list = matches!(value, Value::List(_));
                let built: Vec<(u64, String)> = items.iter().map(|v| self.value(v)).collect();
                let o = l.objects;
                let obj = if list {
                    let obj = self.object("list", o.list_items + 16, ObjClass::Container);
                    let array = self.alloc(HEAP, 8 * built.len());
                    for (i, (a, _)) in built.iter().enumerate() {
                        self.w64(array + 8 * i as u64, *a);
                    }
                    self.wf(FieldKind::ListItems, obj, o.list_items, array);
                    obj
                } else {
                    let obj = self.object(
                        "tuple",
                        o.tuple_items + 8 * built.len(),
                        ObjClass::Container,
                    );
                    for (i, (a, _)) in built.iter().enumerate() {
                        self.w64(obj + (o.tuple_items + 8 * i) as u64, *a);
                    }
                    obj
                };
                self.wf(FieldKind::Size, obj, o.ob_size, built.len() as u64);
                let inner: Vec<&str> = built.iter().map(|(_, r)| r.as_str()).collect();
                let inner = inner.join(", ");
                let repr = match (list, built.len()) {
                    (true, _) => format!("[{inner}]"),
                    (false, 1) => format!("({inner},)"),
                    (false, _) => format!("({inner})"),
                };
                (obj, repr)
            }
            Value::Dict(items, form) => {
                let built: Vec<((u64, String), (u64, String))> = items
                    .iter()
                    .map(|(k, v)| {
                        let key = self.value(&Value::Str(*k, false));
                        (key, self.value(v))
                    })
                    .collect();
                let pairs: Vec<(u64, u64)> =
                    built.iter().map(|((k, _), (v, _))| (*k, *v)).collect();
                let obj = self.dict(&pairs, *form, true);
                let inner: Vec<String> = built
                    .iter()
                    .map(|((_, k), (_, v))| format!("{k}: {v}"))
                    .collect();
                (obj, format!("{{{}}}", inner.join(", ")))
            }
            Value::Set(members, frozen, pattern) => {
                let built: Vec<(u64, String)> = members
                    .iter()
                    .map(|m| self.value(&Value::Int(i64::from(*m))))
                    .collect();
                let tp = if *frozen { "frozenset" } else { "set" };
                let o = l.objects;
                let obj = self.object(tp, o.set_table.max(o.set_mask) + 8, ObjClass::Container);
                let table = self.alloc(HEAP, 8 * o.set_entry_size);
                let dummy = if pattern & 1 == 1 {
                    Some(self.object("object", 0, ObjClass::Any))
                } else {
                    None
                };
                let mut slot = 0usize;
                for (i, (m, _)) in built.iter().enumerate() {
                    let left = built.len() - i;
                    if pattern >> (1 + i % 7) & 1 == 1 && 8 - slot > left {
                        if let Some(d) = dummy {
                            self.w64(
                                table + (slot * o.set_entry_size + o.set_entry_key) as u64,
                                d,
                            );
                        }
                        slot += 1;
                    }
                    self.w64(
                        table + (slot * o.set_entry_size + o.set_entry_key) as u64,
                        *m,
                    );
                    slot += 1;
                }
                self.wf(FieldKind::SetTable, obj, o.set_table, table);
                self.wf(FieldKind::DictMask, obj, o.set_mask, 7);
                let inner: Vec<&str> = built.iter().map(|(_, r)| r.as_str()).collect();
                let inner = inner.join(", ");
                let repr = match (p2, inner.is_empty()) {
                    (false, true) => format!("{tp}()"),
                    (false, false) if !frozen => format!("{{{inner}}}"),
                    (false, false) => format!("{tp}({{{inner}}})"),
                    (true, _) => format!("{tp}([{inner}])"),
                };
                (obj, repr)
            }
            Value::Instance(i) => {
                let class = CLASSES[i.index(CLASSES.len())];
                let obj = self.instance(class, &[], false);
                (obj, format!("<{class} at {obj:#x}>"))
            }
        };
        self.values.push((addr, repr.clone()));
        (addr, repr)
    }

    // ---- Dicts and instances ----

    /// A dict of `pairs` in one of the table forms the layout has. `str_keys` says whether
    /// every key is a str (3.11 unicode and split tables need that).
    fn dict(&mut self, pairs: &[(u64, u64)], form: u8, str_keys: bool) -> u64 {
        let l = self.layout;
        let d = l.dicts;
        let o = l.objects;
        let table_fields = match d.model {
            DictModel::Py27 { ma_mask, ma_table } => ma_mask.max(ma_table),
            _ => 0,
        };
        let obj = self.object(
            "dict",
            d.used.max(d.keys).max(d.values).max(table_fields) + 8,
            ObjClass::Container,
        );
        // Slots: 8 (enough for the few items generated), with gaps where form bits say.
        let slots = 8usize.max(pairs.len().next_power_of_two());
        let deleted = form & 0x80 != 0;
        match d.model {
            DictModel::Py27 { ma_mask, ma_table } => {
                let table = self.alloc(HEAP, slots * d.entry_size);
                let mut slot = 0;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if form >> (i % 7) & 1 == 1 && slots - slot > pairs.len() - i {
                        slot += 1;
                    }
                    let e = table + (slot * d.entry_size) as u64;
                    self.w64(e + 8, *k);
                    self.w64(e + 16, *v);
                    slot += 1;
                }
                self.wf(FieldKind::DictMask, obj, ma_mask, slots as u64 - 1);
                self.wf(FieldKind::DictKeys, obj, ma_table, table);
            }
            DictModel::Py36 { dk_size } => {
                let split = form & 1 == 1 && str_keys && !deleted;
                let n = pairs.len() + usize::from(deleted);
                let keys = self.alloc(HEAP, d.indices + slots + n * d.entry_size);
                self.record(ObjClass::Container, keys);
                let entries = keys + (d.indices + slots) as u64;
                for i in 0..slots {
                    let index = if i < n { i as u8 } else { 0xff };
                    self.put(keys + (d.indices + i) as u64, &[index]);
                }
                let values = if split {
                    self.alloc(HEAP, 8 * pairs.len())
                } else {
                    0
                };
                let mut e = entries;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if deleted && i == 0 {
                        // A deleted entry: key left behind, value cleared.
                        self.w64(e + 8, *k);
                        e += d.entry_size as u64;
                    }
                    self.w64(e + 8, *k);
                    if split {
                        self.w64(values + 8 * i as u64, *v);
                    } else {
                        self.w64(e + 16, *v);
                    }
                    e += d.entry_size as u64;
                }
                self.wf(FieldKind::Size, keys, dk_size, slots as u64);
                self.wf(FieldKind::KeysEntries, keys, d.nentries, n as u64);
                self.wf(FieldKind::DictKeys, obj, d.keys, keys);
                self.wf(FieldKind::DictValues, obj, d.values, values);
            }
            DictModel::Py311 {
                dk_log2_size,
                dk_log2_index_bytes,
                dk_kind,
                unicode_entry_size,
                values_array,
            } => {
                let kind = if str_keys { form % 3 } else { 0 };
                let deleted = deleted && kind != 2;
                let n = pairs.len() + usize::from(deleted);
                let entry_size = if kind == 0 {
                    d.entry_size
                } else {
                    unicode_entry_size
                };
                let key_at = if kind == 0 { 8 } else { 0 };
                let keys = self.alloc(HEAP, d.indices + slots + n * entry_size);
                self.record(ObjClass::Container, keys);
                self.put(keys + dk_log2_size as u64, &[slots.trailing_zeros() as u8]);
                self.put(
                    keys + dk_log2_index_bytes as u64,
                    &[slots.trailing_zeros() as u8],
                );
                self.field(
                    FieldKind::KeysLog2,
                    keys + dk_log2_index_bytes as u64,
                    1,
                    keys,
                );
                self.put(keys + dk_kind as u64, &[kind]);
                self.field(FieldKind::KeysKind, keys + dk_kind as u64, 1, keys);
                for i in 0..slots {
                    let index = if i < n { i as u8 } else { 0xff };
                    self.put(keys + (d.indices + i) as u64, &[index]);
                }
                let entries = keys + (d.indices + slots) as u64;
                let values = if kind == 2 {
                    let v = self.alloc(HEAP, values_array + 8 * pairs.len());
                    self.record(ObjClass::Container, v);
                    v
                } else {
                    0
                };
                let mut e = entries;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if deleted && i == 0 {
                        self.w64(e + key_at as u64, *k);
                        e += entry_size as u64;
                    }
                    self.w64(e + key_at as u64, *k);
                    if kind == 2 {
                        self.w64(values + (values_array + 8 * i) as u64, *v);
                    } else {
                        self.w64(e + key_at as u64 + 8, *v);
                    }
                    e += entry_size as u64;
                }
                self.wf(FieldKind::KeysEntries, keys, d.nentries, n as u64);
                self.wf(FieldKind::DictKeys, obj, d.keys, keys);
                self.wf(FieldKind::DictValues, obj, d.values, values);
            }
        }
        let _ = o;
        obj
    }

    /// An instance of `class` with string-keyed `attrs`, in a `__dict__` or (3.11+, when
    /// `inline`) in values described by the type's cached keys.
    fn instance(&mut self, class: &str, attrs: &[(&str, u64)], inline: bool) -> u64 {
        let l = self.layout;
        let o = l.objects;
        let header = o.ob_type + 8;
        let pre = match l.instance_dicts {
            InstanceDictModel::DictOffset => 0,
            InstanceDictModel::Managed311 { dict, values } => (-dict).max(-values) as usize,
            InstanceDictModel::Managed312 { dict_or_values } => (-dict_or_values) as usize,
            InstanceDictModel::Inline313 { dict, .. } => (-dict) as usize,
        }
        .next_multiple_of(16);
        let values_array = match l.dicts.model {
            DictModel::Py311 { values_array, .. } => values_array,
            _ => 0,
        };
        let inline = inline && !matches!(l.instance_dicts, InstanceDictModel::DictOffset);
        // Inline values (3.13+) follow the object, at tp_basicsize.
        let size = header + 8 + values_array + 8 * attrs.len() + 8;
        let obj = self.object_with_preheader(class, size, pre, ObjClass::Any);
        let key_objs: Vec<u64> = attrs.iter().map(|(k, _)| self.string(k, false)).collect();
        if !inline {
            let pairs: Vec<(u64, u64)> = key_objs
                .iter()
                .zip(attrs)
                .map(|(k, (_, v))| (*k, *v))
                .collect();
            let dict = self.dict(&pairs, 1, true);
            match l.instance_dicts {
                InstanceDictModel::DictOffset => self.wf(FieldKind::Local, obj, header, dict),
                InstanceDictModel::Managed311 { dict: at, .. }
                | InstanceDictModel::Managed312 { dict_or_values: at }
                | InstanceDictModel::Inline313 { dict: at, .. } => {
                    self.wf(FieldKind::Local, obj.wrapping_add(at as u64), 0, dict)
                }
            }
            return obj;
        }
        // Values described by the type's shared keys: a split keys object on the type.
        let tp = self.ty(class);
        let pairs: Vec<(u64, u64)> = key_objs.iter().map(|k| (*k, 0)).collect();
        let holder = self.dict(&pairs, 2, true);
        let keys = self.read_u64(holder + l.dicts.keys as u64);
        let cached = o.ht_cached_keys.expect("3.11+ heap types");
        self.wf(FieldKind::CachedKeys, tp, cached, keys);
        let values = match l.instance_dicts {
            InstanceDictModel::Inline313 { values_valid, .. } => {
                let basic = header as u64 + 8;
                self.w64(tp + o.tp_basicsize as u64, basic);
                let values = obj + basic;
                self.put(values + values_valid as u64, &[1]);
                values
            }
            _ => self.alloc(HEAP, values_array + 8 * attrs.len()),
        };
        for (i, (_, v)) in attrs.iter().enumerate() {
            self.w64(values + (values_array + 8 * i) as u64, *v);
        }
        match l.instance_dicts {
            InstanceDictModel::Managed311 { values: at, .. } => self.wf(
                FieldKind::DictValues,
                obj.wrapping_add(at as u64),
                0,
                values,
            ),
            InstanceDictModel::Managed312 { dict_or_values } => self.wf(
                FieldKind::DictValues,
                obj.wrapping_add(dict_or_values as u64),
                0,
                values - 1,
            ),
            _ => {}
        }
        obj
    }

    fn read_u64(&mut self, addr: u64) -> u64 {
        u64::from_le_bytes(self.slice(addr, 8).try_into().unwrap())
    }

    // ---- Code objects and frames ----

    fn text(&mut self, text: &str, legacy: bool) -> u64 {
        // Code objects hold `str`s; on Python 2 that is the bytes-like str.
        self.string(text, legacy && !py2(self.layout))
    }

    /// A code object for `f`; returns it, the expected frame (locals not yet filled in)
    /// and the byte offset the frame stands at.
    fn code(&mut self, f: &FrameSpec) -> (u64, ExpectedFrame, i64) {
        let l = self.layout;
        let c = l.code;
        let (name, qualname) = FUNCS[f.func.index(FUNCS.len())];
        let filename = FILES[f.file.index(FILES.len())];
        let mut ranges = f.ranges.clone();
        if f.big_table {
            // 36 000 more ranges of at least two bytes each: well over 64 KiB.
            ranges.extend(std::iter::repeat_n((8, 0, false), 36_000));
        }
        let (table, lines) = encode_linetable(l.line_format, &ranges, f.first_line, f.entry_style);
        let j = f.at.0.index(f.ranges.len());
        let start: i64 = f.ranges[..j].iter().map(|r| i64::from(r.0.max(1))).sum();
        let units = i64::from(f.ranges[j].0.max(1));
        let (offset, line) = if f.not_started {
            (-2, Some(f.first_line))
        } else {
            ((start + i64::from(f.at.1) % units) * 2, lines[j])
        };
        let total_units: usize = f.ranges.iter().map(|r| usize::from(r.0.max(1))).sum();
        let size = c
            .size
            .max(c.code_adaptive.unwrap_or(0) + 2 * total_units + 2);
        let code = self.object("code", size, ObjClass::Code);
        let name_obj = self.text(name, f.legacy_names);
        self.wf(FieldKind::CodeName, code, c.name, name_obj);
        let shown = match c.qualname {
            Some(q) => {
                let q_obj = self.text(qualname, f.legacy_names);
                self.wf(FieldKind::CodeName, code, q, q_obj);
                qualname
            }
            None => name,
        };
        let file_obj = self.text(filename, f.legacy_names);
        self.wf(FieldKind::CodeFile, code, c.filename, file_obj);
        self.w32(code + c.firstlineno as u64, f.first_line as u32);
        self.field(
            FieldKind::CodeFirstLine,
            code + c.firstlineno as u64,
            4,
            code,
        );
        let table_obj = self.bytes_object(
            if py2(l) { "str" } else { "bytes" },
            &table,
            l.objects.bytes_sval,
        );
        let sval = l.objects.bytes_sval as u64;
        self.field(
            FieldKind::LineBytes,
            table_obj + sval,
            table.len().max(1),
            table_obj,
        );
        self.wf(FieldKind::CodeTable, code, c.linetable, table_obj);
        (
            code,
            ExpectedFrame {
                name: shown.to_string(),
                filename: filename.to_string(),
                line,
                first_line: f.first_line,
                locals: Vec::new(),
            },
            offset,
        )
    }

    /// Writes the local-variable parts of `code` for `f`; returns the slot values and the
    /// expected locals.
    fn code_locals(&mut self, code: u64, f: &FrameSpec) -> (Vec<u64>, Vec<(String, String, bool)>) {
        let l = self.layout;
        let c = l.code;
        let n = f.locals.len();
        let argcount = usize::from(f.args.0).min(n);
        let kwonly = if c.kwonlyargcount.is_some() {
            usize::from(f.args.1).min(n - argcount)
        } else {
            0
        };
        let varargs = f.args.2 && argcount + kwonly < n;
        let varkw = f.args.3 && argcount + kwonly + usize::from(varargs) < n;
        let arg_count = argcount + kwonly + usize::from(varargs) + usize::from(varkw);
        self.w32(code + c.argcount as u64, argcount as u32);
        self.field(FieldKind::CodeArgs, code + c.argcount as u64, 4, code);
        if let Some(k) = c.kwonlyargcount {
            self.w32(code + k as u64, kwonly as u32);
        }
        // CO_OPTIMIZED | CO_NEWLOCALS, plus the argument flags.
        let mut flags = 3;
        if varargs {
            flags |= c.varargs_flag;
        }
        if varkw {
            flags |= c.varkeywords_flag;
        }
        self.w32(code + c.flags as u64, flags);

        let fast = c.fast_kinds;
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        let mut slots = Vec::new();
        let mut expected = Vec::new();
        for (i, local) in f.locals.iter().enumerate() {
            let name = NAMES[local.name.index(NAMES.len())];
            names.push(self.text(name, false));
            let (value, repr) = self.value(&local.value);
            let mut kind = fast.map_or(0, |k| k.local);
            let mut slot = value;
            let mut shown = true;
            match (local.kind, fast) {
                (LocalKind::Unbound, _) => {
                    slot = 0;
                    shown = false;
                }
                (LocalKind::Cell | LocalKind::Free, Some(k)) => {
                    kind = if local.kind == LocalKind::Cell {
                        k.cell
                    } else {
                        k.free
                    };
                    let cell_ref = l.objects.cell_ref;
                    let cell = self.object("cell", cell_ref + 8, ObjClass::Any);
                    self.wf(FieldKind::CellRef, cell, cell_ref, value);
                    slot = cell;
                }
                (LocalKind::Hidden, Some(k)) if k.hidden != 0 => {
                    kind |= k.hidden;
                    shown = false;
                }
                _ => {}
            }
            kinds.push(kind);
            slots.push(slot);
            if shown {
                expected.push((name.to_string(), truncated(repr), i < arg_count));
            }
        }
        let tuple = self.object(
            "tuple",
            l.objects.tuple_items + 8 * names.len(),
            ObjClass::Container,
        );
        for (i, name) in names.iter().enumerate() {
            self.w64(tuple + (l.objects.tuple_items + 8 * i) as u64, *name);
        }
        self.wf(
            FieldKind::Size,
            tuple,
            l.objects.ob_size,
            names.len() as u64,
        );
        self.wf(FieldKind::CodeVarnames, code, c.varnames, tuple);
        if let Some(k) = c.localspluskinds {
            let kinds_obj = self.bytes_object("bytes", &kinds, l.objects.bytes_sval);
            self.wf(FieldKind::CodeKinds, code, k, kinds_obj);
        }
        (slots, expected)
    }

    /// One frame struct; returns its address. `code_ref` is what the frame's code field
    /// holds (a tagged reference on 3.14+), `offset` the byte offset it stands at.
    fn frame(&mut self, code: u64, code_ref: u64, offset: i64, slots: &[u64], owner: u8) -> u64 {
        let l = self.layout;
        let fr = l.frame;
        let frame = self.alloc(STACK, fr.localsplus + 8 * slots.len() + 8);
        self.record(ObjClass::Frame, frame);
        self.wf(FieldKind::FrameCode, frame, fr.code, code_ref);
        match l.frame_model {
            FrameModel::FrameObject => {
                // 3.10 counts code units, earlier versions bytes; -1 means not started.
                let lasti = match (offset < 0, l.line_format) {
                    (true, _) => -1,
                    (false, LineTableFormat::LineTable310) => offset / 2,
                    (false, _) => offset,
                };
                self.w32(frame + fr.lasti as u64, lasti as u32);
                self.field(FieldKind::FrameLasti, frame + fr.lasti as u64, 4, frame);
            }
            FrameModel::CFrame | FrameModel::CurrentFrame => {
                let start = code + l.code.code_adaptive.unwrap_or(0) as u64;
                let instr = start.wrapping_add(offset as u64);
                self.wf(FieldKind::FrameLasti, frame, fr.lasti, instr);
            }
        }
        if let Some(o) = fr.owner {
            self.put(frame + o as u64, &[owner]);
            self.field(FieldKind::FrameOwner, frame + o as u64, 1, frame);
        }
        for (i, s) in slots.iter().enumerate() {
            self.wf(FieldKind::Local, frame, fr.localsplus + 8 * i, *s);
        }
        frame
    }

    /// A shim frame the interpreter pushes for itself (3.12+): never reported.
    fn shim(&mut self) -> u64 {
        let shim_owner = self.layout.frame.owner_first_shim.expect("3.12+");
        let none = self.object("NoneType", 0, ObjClass::Any);
        self.frame(none, none, 0, &[], shim_owner)
    }

    fn tag(&self, value: u64, tag: u8) -> u64 {
        if self.layout.tagged_stackrefs && value != 0 {
            value | u64::from(tag & 7)
        } else {
            value
        }
    }
}

/// Builds the image `spec` describes for `layout`.
pub fn build<'l>(spec: &ImageSpec, layout: &'l Layout) -> Image<'l> {
    let mut img = Image::new(layout);
    let l = layout;
    let shims = l.frame.owner_first_shim.is_some();

    // The interpreter and runtime come first, at stable addresses.
    let mut interp_size = [
        l.interp.next,
        l.interp.tstate_head,
        l.interp.modules,
        l.interp.sysdict,
    ]
    .into_iter()
    .max()
    .unwrap()
        + 8;
    if let GilModel::InterpreterGil { ceval_gil, .. } = l.gil {
        interp_size = interp_size.max(ceval_gil + 8);
    }
    let interp = img.alloc(STATIC, interp_size);
    img.interp = interp;
    let rt_slot = match l.gil {
        GilModel::RuntimeTstateCurrent(off) => off,
        _ => 0,
    };
    let runtime = img.alloc(
        STATIC,
        l.interp.runtime_interp_head.unwrap_or(0).max(rt_slot) + 8,
    );
    img.runtime = runtime;
    if let Some(head) = l.interp.runtime_interp_head {
        img.w64(runtime + head as u64, interp);
    }
    img.tstate_current = img.alloc(STATIC, 8);

    // Thread states, linked newest first.
    let tstates: Vec<u64> = spec
        .threads
        .iter()
        .map(|_| {
            let t = img.alloc(STACK, l.thread.size + 8);
            img.record(ObjClass::Tstate, t);
            t
        })
        .collect();
    img.wf(
        FieldKind::TstateHead,
        interp,
        l.interp.tstate_head,
        tstates[0],
    );
    let mut deep_code = None;
    for (ti, (t, th)) in tstates.iter().zip(&spec.threads).enumerate() {
        let next = tstates.get(ti + 1).copied().unwrap_or(0);
        img.wf(FieldKind::ThreadNext, *t, l.thread.next, next);
        img.w64(t + l.thread.interp as u64, interp);
        let thread_id = 0x7f3a_0000_0700 + ti as u64 * 0x80_0000;
        img.w64(t + l.thread.thread_id as u64, thread_id);
        let native_id = l.thread.native_thread_id.map(|o| {
            let id = 4000 + ti as u64;
            img.w64(t + o as u64, id);
            id
        });

        // The chain, innermost first: (frame address, expected frame if Python code).
        let mut chain: Vec<(u64, Option<ExpectedFrame>)> = Vec::new();
        for f in &th.frames {
            let (code, mut exp, offset) = img.code(f);
            let (slots, locals) = img.code_locals(code, f);
            exp.locals = locals;
            let slots: Vec<u64> = slots.iter().map(|s| img.tag(*s, f.tag)).collect();
            let code_ref = img.tag(code, f.tag);
            let frame = img.frame(code, code_ref, offset, &slots, 0);
            chain.push((frame, Some(exp)));
            if f.shim_after && shims {
                chain.push((img.shim(), None));
            }
        }
        if ti == 0 {
            if let Some(extra) = spec.deep {
                // A stack deeper than the walker follows, all running one code object.
                let any_index = th.name;
                let f = FrameSpec {
                    func: any_index,
                    file: any_index,
                    legacy_names: false,
                    first_line: 7,
                    ranges: vec![(4, 1, false)],
                    at: (any_index, 1),
                    not_started: false,
                    entry_style: 3,
                    locals: Vec::new(),
                    args: (0, 0, false, false),
                    shim_after: false,
                    tag: 0,
                    big_table: false,
                };
                let (code, exp, offset) = deep_code
                    .get_or_insert_with(|| {
                        let (code, exp, offset) = img.code(&f);
                        img.code_locals(code, &f);
                        (code, exp, offset)
                    })
                    .clone();
                for _ in 0..extra {
                    let frame = img.frame(code, code, offset, &[], 0);
                    chain.push((frame, Some(exp.clone())));
                }
            }
        }
        if th.entry_shim && shims {
            chain.push((img.shim(), None));
        }
        for w in 0..chain.len() {
            let back = chain.get(w + 1).map_or(0, |c| c.0);
            let at = chain[w].0;
            img.wf(FieldKind::FrameBack, at, l.frame.back, back);
        }
        let innermost = chain.first().map_or(0, |c| c.0);
        let top = match l.thread.cframe_current_frame {
            Some(current) => {
                let cframe = img.alloc(STACK, current + 8);
                img.wf(FieldKind::CurrentFrame, cframe, current, innermost);
                cframe
            }
            None => innermost,
        };
        img.wf(FieldKind::ThreadFrame, *t, l.thread.frame, top);
        let truncated = chain.len() > MAX_FRAMES;
        let frames = chain
            .into_iter()
            .take(MAX_FRAMES)
            .filter_map(|(_, f)| f)
            .collect();
        img.threads.push(ExpectedThread {
            tstate: *t,
            thread_id,
            native_id,
            frames,
            truncated,
        });
    }

    // sys.modules, with `threading._active` naming the threads.
    let mut modules_pairs = Vec::new();
    if spec.threading {
        let mut active = Vec::new();
        for (ti, th) in spec.threads.iter().enumerate() {
            let (text, ..) = TEXTS[th.name.index(TEXTS.len())];
            let name = img.string(text, false);
            let attr = if py2(l) { "_Thread__name" } else { "_name" };
            let daemon = img.value(&Value::Bool(ti % 2 == 1)).0;
            let thread = img.instance(
                "Thread",
                &[(attr, name), ("daemon", daemon)],
                th.attrs_inline,
            );
            let ident = img.threads[ti].thread_id;
            let key = if py2(l) {
                img.small_int("int", ident as i64)
            } else {
                img.long("int", i128::from(ident))
            };
            active.push((key, thread));
            img.names.insert(ident, text.to_string());
        }
        let active = img.dict(&active, 0, false);
        let dunder = img.string("__name__", false);
        let module_name = img.string("threading", false);
        let active_key = img.string("_active", false);
        let namespace = img.dict(&[(dunder, module_name), (active_key, active)], 1, true);
        let header = l.objects.ob_type + 8;
        let module = img.object("module", header + 8, ObjClass::Any);
        img.wf(FieldKind::Local, module, header, namespace);
        let key = img.string("threading", false);
        modules_pairs.push((key, module));
    }
    let sys_key = img.string("sys", false);
    let none = img.object("NoneType", 0, ObjClass::Any);
    modules_pairs.insert(0, (sys_key, none));
    let modules = img.dict(&modules_pairs, 0, true);
    img.wf(FieldKind::Modules, interp, l.interp.modules, modules);

    // The GIL.
    let holder = spec.gil_holder.map(|i| tstates[i.index(tstates.len())]);
    img.gil = match l.gil {
        GilModel::NoGil => None,
        GilModel::ThreadStateCurrentSymbol => {
            let at = img.tstate_current;
            img.wf(FieldKind::Gil, at, 0, holder.unwrap_or(0));
            holder
        }
        GilModel::RuntimeTstateCurrent(off) => {
            img.wf(FieldKind::Gil, runtime, off, holder.unwrap_or(0));
            holder
        }
        GilModel::InterpreterGil {
            ceval_gil,
            locked,
            last_holder,
        } => {
            let gil = img.alloc(STATIC, locked.max(last_holder) + 8);
            img.wf(FieldKind::Gil, interp, ceval_gil, gil);
            img.w32(gil + locked as u64, u32::from(holder.is_some()));
            img.field(FieldKind::Gil, gil + locked as u64, 4, gil);
            // The last holder stays recorded after it lets go.
            img.wf(
                FieldKind::Gil,
                gil,
                last_holder,
                holder.unwrap_or(tstates[0]),
            );
            holder
        }
    };
    img
}

impl Image<'_> {
    /// The interpreter as `threads` sees it.
    pub fn interpreter(&self) -> Interpreter {
        Interpreter {
            layout: self.layout.clone(),
            interp: self.interp,
            runtime: Some(self.runtime),
            tstate_current: Some(self.tstate_current),
            shutdown: None,
            executable: PathBuf::from("/usr/bin/python"),
            debug_offset_mismatches: Vec::new(),
        }
    }

    /// The address space: the arenas in a [`FakeMemory`], and the garbage region.
    pub fn memory(&self) -> Space {
        let mut image = FakeMemory::new();
        for (base, bytes) in BASES.iter().zip(&self.arenas) {
            image.map(*base, bytes.clone());
        }
        Space { image }
    }

    /// Addresses never mapped: around and between the arenas, and far away.
    fn unmapped(&self, i: usize, off: u32) -> u64 {
        let candidates = [
            0x1000,
            BASES[STATIC] - 0x1000,
            BASES[STATIC] + self.arenas[STATIC].len() as u64 + 0x100,
            BASES[HEAP] + self.arenas[HEAP].len() as u64,
            BASES[STACK] + self.arenas[STACK].len() as u64 + 8,
            GARBAGE_BASE + GARBAGE_LEN as u64,
            GARBAGE_BASE - 8,
            0x8000_0000_0000,
            0xffff_ffff_ffff_f000,
        ];
        candidates[i % candidates.len()].wrapping_add(u64::from(off) & !7)
    }

    fn pick_object(&self, class: ObjClass, i: &proptest::sample::Index) -> u64 {
        let list = self
            .objects
            .get(&class)
            .filter(|l| !l.is_empty())
            .or_else(|| self.objects.get(&ObjClass::Any))
            .expect("objects");
        list[i.index(list.len())]
    }

    /// Every object address of a class (for probing readers directly).
    pub fn objects_of(&self, class: ObjClass) -> &[u64] {
        self.objects.get(&class).map_or(&[], |v| v.as_slice())
    }

    /// Resolves a mutation target to an address and width, if there is any such target.
    fn target(&self, t: &Target) -> Option<Field> {
        match t {
            Target::Field(kind, i) => {
                let list = self.fields.get(kind)?;
                Some(list[i.index(list.len())])
            }
            Target::Anywhere(a, i) => {
                let arena = a.index(3);
                let len = self.arenas[arena].len();
                if len == 0 {
                    return None;
                }
                let addr = BASES[arena] + i.index(len) as u64;
                Some(Field {
                    addr,
                    width: 8,
                    owner: addr & !15,
                })
            }
        }
    }

    /// Writes `bytes` where they land inside the arenas (clipped at an arena's end).
    fn poke(&mut self, addr: u64, bytes: &[u8]) {
        for (a, base) in BASES.iter().enumerate() {
            let arena = &mut self.arenas[a];
            if addr >= *base && addr < base + arena.len() as u64 {
                let off = (addr - base) as usize;
                let n = bytes.len().min(arena.len() - off);
                arena[off..off + n].copy_from_slice(&bytes[..n]);
            }
        }
    }

    /// Applies one mutation.
    pub fn mutate(&mut self, m: &Mutation) {
        match m {
            Mutation::Word(t, v) => {
                let Some(f) = self.target(t) else { return };
                let value = match v {
                    WordValue::Zero => 0,
                    WordValue::Ones => u64::MAX,
                    WordValue::MinI64 => i64::MIN as u64,
                    WordValue::MaxI64 => i64::MAX as u64,
                    WordValue::Huge(h) => *h,
                    WordValue::Negative(n) => (-i64::from(*n)) as u64,
                    WordValue::Small(s) => u64::from(*s),
                    WordValue::Object(c, i, off) => {
                        self.pick_object(*c, i).wrapping_add(u64::from(*off))
                    }
                    WordValue::Misaligned(c, i, off) => {
                        self.pick_object(*c, i).wrapping_add(u64::from(*off))
                    }
                    WordValue::Unmapped(i, off) => self.unmapped(i.index(1 << 16), *off),
                    WordValue::Garbage(i, aligned) => {
                        let off = i.index(GARBAGE_LEN) as u64;
                        GARBAGE_BASE + if *aligned { off & !7 } else { off }
                    }
                    WordValue::SelfRef => f.owner,
                    WordValue::Random(r) => *r,
                };
                let width = f.width.min(8);
                self.poke(f.addr, &value.to_le_bytes()[..width]);
            }
            Mutation::Flip(t, x) => {
                let Some(f) = self.target(t) else { return };
                let at = f.addr + (usize::from(*x) * 7 % f.width.max(1)) as u64;
                let arena = (0..3).rev().find(|a| at >= BASES[*a]).unwrap_or(0);
                let off = at.wrapping_sub(BASES[arena]) as usize;
                if let Some(b) = self.arenas[arena].get_mut(off) {
                    *b ^= x;
                }
            }
            Mutation::Unit(s, u, v) => {
                if self.strings.is_empty() {
                    return;
                }
                let sd = self.strings[s.index(self.strings.len())];
                if sd.units == 0 {
                    return;
                }
                let at = sd.addr + (u.index(sd.units) * sd.width) as u64;
                let raw: u32 = match v {
                    UnitValue::Surrogate(x) => u32::from(*x),
                    UnitValue::BeyondUnicode(x) => *x,
                    UnitValue::BadUtf8(x) => u32::from(*x),
                    UnitValue::Random(x) => *x,
                };
                self.poke(at, &raw.to_le_bytes()[..sd.width.min(4)]);
            }
            Mutation::Truncate(a, keep) => {
                let arena = &mut self.arenas[a.index(3)];
                let n = keep.index(arena.len() + 1);
                arena.truncate(n);
            }
        }
    }
}
