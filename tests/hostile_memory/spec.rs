//! What proptest generates: a small recipe for a plausible interpreter image (threads,
//! frames, code objects, line tables, locals of many types) and a list of adversarial
//! mutations to apply to the bytes once it is built. Recipes, not images, are generated so
//! that proptest can shrink a failure down to a readable case.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// One interpreter image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Which supported layout (an index into `layout::supported_versions()`).
    pub version: Index,
    /// Threads, newest first (the order of the interpreter's list).
    pub threads: Vec<ThreadSpec>,
    /// When set, the first thread gets this many extra frames: deeper than `MAX_FRAMES`.
    pub deep: Option<u16>,
    /// Whether `threading._active` is built, so thread names can be read.
    pub threading: bool,
    /// Which thread holds the GIL (index into `threads`, if any).
    pub gil_holder: Option<Index>,
}

/// One thread state.
#[derive(Debug, Clone)]
pub struct ThreadSpec {
    /// Frames, innermost first.
    pub frames: Vec<FrameSpec>,
    /// Name given to it by `threading` (index into the text pool).
    pub name: Index,
    /// An interpreter entry frame (shim) below the outermost frame (3.12+).
    pub entry_shim: bool,
    /// How `threading` stores the thread's attributes (3.11+: a dict or inline values).
    pub attrs_inline: bool,
}

/// One Python frame and its code object.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// Function (index into the function pool).
    pub func: Index,
    /// Filename (index into the filename pool).
    pub file: Index,
    /// Store the function name and filename as legacy (non-compact) strings.
    pub legacy_names: bool,
    /// `co_firstlineno`.
    pub first_line: i32,
    /// Line-table ranges: length in code units, line delta, whether the range has no line.
    pub ranges: Vec<(u8, i8, bool)>,
    /// Which range the frame is executing, and where in it.
    pub at: (Index, u8),
    /// The frame has not started yet (`f_lasti` -1 / instruction before the first).
    pub not_started: bool,
    /// Which entry form the 3.11+ location table uses for this code object.
    pub entry_style: u8,
    /// Fast locals, in `co_varnames` order.
    pub locals: Vec<LocalSpec>,
    /// `co_argcount`, `co_kwonlyargcount` (both capped at the locals), `*args`, `**kwargs`.
    pub args: (u8, u8, bool, bool),
    /// A C-stack shim frame is pushed right after (outside) this one (3.12+).
    pub shim_after: bool,
    /// 3.14+: tag bits on the frame's code reference.
    pub tag: u8,
    /// The line table goes on past the frame's position for over 64 KiB, as a very long
    /// module's does.
    pub big_table: bool,
}

/// One fast local.
#[derive(Debug, Clone)]
pub struct LocalSpec {
    /// Variable name (index into the name pool).
    pub name: Index,
    /// How it is stored.
    pub kind: LocalKind,
    /// Its value.
    pub value: Value,
}

/// How a fast local is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// A plain local.
    Plain,
    /// A cell variable (3.11+: the slot holds a cell).
    Cell,
    /// A free variable (3.11+: the slot holds a cell).
    Free,
    /// A hidden comprehension temporary (3.12+), never shown.
    Hidden,
    /// Not assigned yet: a null slot.
    Unbound,
}

/// A Python value.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// A machine-sized int (`int` on Python 2).
    Int(i64),
    /// A big int (`long` on Python 2).
    Big(i128),
    /// A float from the float pool.
    Float(Index),
    /// A string from the text pool; `true` for the legacy representation (Python 2:
    /// `unicode` instead of `str`).
    Str(Index, bool),
    /// Bytes from the bytes pool (Python 2: a `str`).
    Bytes(Index),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict with string keys from the text pool; the byte picks the table form.
    Dict(Vec<(Index, Value)>, u8),
    /// A set (or frozenset) of small ints, with a deleted slot when the byte is odd.
    Set(Vec<i16>, bool, u8),
    /// An instance of a class from the class pool.
    Instance(Index),
}

/// Where a mutation writes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A recorded field of some kind (the n-th of that kind, modulo how many there are).
    Field(FieldKind, Index),
    /// Any byte of any arena.
    Anywhere(Index, Index),
}

/// Fields the builder records as mutation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    TstateHead,
    ThreadNext,
    ThreadFrame,
    CurrentFrame,
    FrameBack,
    FrameCode,
    FrameLasti,
    FrameOwner,
    Local,
    CodeName,
    CodeFile,
    CodeTable,
    CodeVarnames,
    CodeKinds,
    CodeFirstLine,
    CodeArgs,
    ObType,
    Size,
    StrState,
    StrData,
    LineBytes,
    LegacyData,
    ListItems,
    DictKeys,
    DictValues,
    DictMask,
    KeysLog2,
    KeysKind,
    KeysEntries,
    TpName,
    TpDictOffset,
    TpBasicSize,
    CachedKeys,
    Modules,
    CellRef,
    SetTable,
    Gil,
}

impl FieldKind {
    /// Every kind, for `select`.
    pub const ALL: &'static [FieldKind] = &[
        FieldKind::TstateHead,
        FieldKind::ThreadNext,
        FieldKind::ThreadFrame,
        FieldKind::CurrentFrame,
        FieldKind::FrameBack,
        FieldKind::FrameCode,
        FieldKind::FrameLasti,
        FieldKind::FrameOwner,
        FieldKind::Local,
        FieldKind::CodeName,
        FieldKind::CodeFile,
        FieldKind::CodeTable,
        FieldKind::CodeVarnames,
        FieldKind::CodeKinds,
        FieldKind::CodeFirstLine,
        FieldKind::CodeArgs,
        FieldKind::ObType,
        FieldKind::Size,
        FieldKind::StrState,
        FieldKind::StrData,
        FieldKind::LineBytes,
        FieldKind::LegacyData,
        FieldKind::ListItems,
        FieldKind::DictKeys,
        FieldKind::DictValues,
        FieldKind::DictMask,
        FieldKind::KeysLog2,
        FieldKind::KeysKind,
        FieldKind::KeysEntries,
        FieldKind::TpName,
        FieldKind::TpDictOffset,
        FieldKind::TpBasicSize,
        FieldKind::CachedKeys,
        FieldKind::Modules,
        FieldKind::CellRef,
        FieldKind::SetTable,
        FieldKind::Gil,
    ];
}

/// Classes of recorded objects a mutated pointer can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjClass {
    Tstate,
    Frame,
    Code,
    Str,
    Type,
    Container,
    Any,
}

/// The value a word mutation writes.
#[derive(Debug, Clone)]
pub enum WordValue {
    Zero,
    Ones,
    MinI64,
    MaxI64,
    /// A huge positive size (2^31 and up).
    Huge(u64),
    /// A small negative number.
    Negative(u32),
    /// A small non-negative number.
    Small(u16),
    /// A pointer to (or `offset` bytes into) an object of a class.
    Object(ObjClass, Index, u8),
    /// A pointer to a recorded object plus 1..7: misaligned.
    Misaligned(ObjClass, Index, u8),
    /// An address between or past the mapped arenas.
    Unmapped(Index, u32),
    /// An address in the shared garbage region (8-aligned when the flag is set).
    Garbage(Index, bool),
    /// The address of the object holding the field: a self-reference.
    SelfRef,
    /// Anything.
    Random(u64),
}

/// A code unit written into a string's character data.
#[derive(Debug, Clone)]
pub enum UnitValue {
    /// A lone UTF-16 surrogate.
    Surrogate(u16),
    /// Past the last code point.
    BeyondUnicode(u32),
    /// A byte that is never valid UTF-8 alone, or a truncated sequence start.
    BadUtf8(u8),
    /// Anything.
    Random(u32),
}

/// One adversarial change to a built image.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Overwrite a word (or the field's width) with a hostile value.
    Word(Target, WordValue),
    /// Flip bits of one byte.
    Flip(Target, u8),
    /// Overwrite one code unit of a string's data.
    Unit(Index, Index, UnitValue),
    /// Cut an arena short: its tail becomes unmapped.
    Truncate(Index, Index),
}

/// Text pool: (text, repr on Python 3, repr of the UTF-8 `str` on Python 2, repr as a
/// Python 2 `unicode`).
pub const TEXTS: &[(&str, &str, &str, &str)] = &[
    ("abc", "'abc'", "'abc'", "u'abc'"),
    ("it's", "\"it's\"", "\"it's\"", "u\"it's\""),
    ("café", "'café'", "'caf\\xc3\\xa9'", "u'caf\\xe9'"),
    (
        "привет",
        "'привет'",
        "'\\xd0\\xbf\\xd1\\x80\\xd0\\xb8\\xd0\\xb2\\xd0\\xb5\\xd1\\x82'",
        "u'\\u043f\\u0440\\u0438\\u0432\\u0435\\u0442'",
    ),
    ("🐍", "'🐍'", "'\\xf0\\x9f\\x90\\x8d'", "u'\\U0001f40d'"),
    (
        "tab\tnl\n",
        "'tab\\tnl\\n'",
        "'tab\\tnl\\n'",
        "u'tab\\tnl\\n'",
    ),
    ("", "''", "''", "u''"),
    ("a\\b\"", "'a\\\\b\"'", "'a\\\\b\"'", "u'a\\\\b\"'"),
    (
        "MainThread",
        "'MainThread'",
        "'MainThread'",
        "u'MainThread'",
    ),
    (
        "名前",
        "'名前'",
        "'\\xe5\\x90\\x8d\\xe5\\x89\\x8d'",
        "u'\\u540d\\u524d'",
    ),
    // Longer than a repr may be: cut to 125 characters and "...".
    (LONG, "", "", ""),
];

/// A string longer than `REPR_MAX`; its reprs are computed.
pub const LONG: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// Functions: (co_name, co_qualname).
pub const FUNCS: &[(&str, &str)] = &[
    ("main", "main"),
    ("run", "Worker.run"),
    ("<module>", "<module>"),
    ("λ", "outer.<locals>.λ"),
    ("funç", "Klass.funç"),
    ("<lambda>", "f.<locals>.<lambda>"),
    ("🐍", "Snake.🐍"),
];

/// Filenames.
pub const FILES: &[&str] = &[
    "/srv/app/main.py",
    "/tmp/модуль.py",
    "<string>",
    "/usr/lib/python3/threading.py",
    "/home/ü/🐍.py",
];

/// Local variable names.
pub const NAMES: &[&str] = &["x", "self", "data", "i", "résumé", "名前", "_", "args"];

/// Floats and their reprs.
pub const FLOATS: &[(f64, &str)] = &[
    (1.5, "1.5"),
    (-0.0, "-0.0"),
    (1e20, "1e+20"),
    (0.1, "0.1"),
    (f64::INFINITY, "inf"),
    (f64::NAN, "nan"),
    (2.5e-7, "2.5e-07"),
    (123456789.125, "123456789.125"),
];

/// Bytes and their Python 3 reprs.
pub const BYTES: &[(&[u8], &str)] = &[
    (b"ab", "b'ab'"),
    (b"\x00\xff'", "b\"\\x00\\xff'\""),
    (b"", "b''"),
    (b"\\\n", "b'\\\\\\n'"),
];

/// Class names for instances.
pub const CLASSES: &[&str] = &["Foo", "Thread", "Ünïcode"];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![-300i64..300, any::<i64>()].prop_map(Value::Int),
        any::<i128>().prop_map(Value::Big),
        any::<Index>().prop_map(Value::Float),
        (any::<Index>(), any::<bool>()).prop_map(|(i, legacy)| Value::Str(i, legacy)),
        any::<Index>().prop_map(Value::Bytes),
        (vec(-60i16..60, 0..5), any::<bool>(), any::<u8>())
            .prop_map(|(m, frozen, pattern)| Value::Set(m, frozen, pattern)),
        any::<Index>().prop_map(Value::Instance),
    ];
    // Two levels of containers stay inside the formatter's depth limit, so every repr
    // of an unmutated image is known exactly.
    leaf.prop_recursive(2, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Tuple),
            vec(inner.clone(), 0..4).prop_map(Value::List),
            (vec((any::<Index>(), inner), 0..4), any::<u8>())
                .prop_map(|(items, form)| Value::Dict(items, form)),
        ]
    })
}

fn local() -> impl Strategy<Value = LocalSpec> {
    let kind = prop_oneof![
        6 => Just(LocalKind::Plain),
        1 => Just(LocalKind::Cell),
        1 => Just(LocalKind::Free),
        1 => Just(LocalKind::Hidden),
        1 => Just(LocalKind::Unbound),
    ];
    (any::<Index>(), kind, value()).prop_map(|(name, kind, value)| LocalSpec { name, kind, value })
}

fn frame() -> impl Strategy<Value = FrameSpec> {
    (
        (any::<Index>(), any::<Index>(), any::<bool>(), 1i32..100_000),
        vec((1u8..=20, -20i8..=40, prop::bool::weighted(0.1)), 1..6),
        (
            any::<Index>(),
            any::<u8>(),
            prop::bool::weighted(0.1),
            any::<u8>(),
        ),
        vec(local(), 0..5),
        (0u8..4, 0u8..2, any::<bool>(), any::<bool>()),
        (
            prop::bool::weighted(0.2),
            0u8..8,
            prop::bool::weighted(0.01),
        ),
    )
        .prop_map(
            |(
                (func, file, legacy_names, first_line),
                ranges,
                (range, within, not_started, entry_style),
                locals,
                args,
                (shim_after, tag, big_table),
            )| FrameSpec {
                func,
                file,
                legacy_names,
                first_line,
                ranges,
                at: (range, within),
                not_started,
                entry_style,
                locals,
                args,
                shim_after,
                tag,
                big_table,
            },
        )
}

fn thread() -> impl Strategy<Value = ThreadSpec> {
    (
        vec(frame(), 0..5),
        any::<Index>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(frames, name, entry_shim, attrs_inline)| ThreadSpec {
            frames,
            name,
            entry_shim,
            attrs_inline,
        })
}

/// Recipes for plausible images of every supported version.
pub fn image() -> impl Strategy<Value = ImageSpec> {
    (
        any::<Index>(),
        vec(thread(), 1..4),
        prop::option::weighted(0.03, 4000u16..4200),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.7, any::<Index>()),
    )
        .prop_map(
            |(version, threads, deep, threading, gil_holder)| ImageSpec {
                version,
                threads,
                deep,
                threading,
                gil_holder,
            },
        )
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (select(FieldKind::ALL), any::<Index>()).prop_map(|(k, i)| Target::Field(k, i)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, i)| Target::Anywhere(a, i)),
    ]
}

fn obj_class() -> impl Strategy<Value = ObjClass> {
    select(
        &[
            ObjClass::Tstate,
            ObjClass::Frame,
            ObjClass::Code,
            ObjClass::Str,
            ObjClass::Type,
            ObjClass::Container,
            ObjClass::Any,
        ][..],
    )
}

fn word_value() -> impl Strategy<Value = WordValue> {
    prop_oneof![
        1 => Just(WordValue::Zero),
        1 => Just(WordValue::Ones),
        1 => Just(WordValue::MinI64),
        1 => Just(WordValue::MaxI64),
        1 => (1u64 << 31..u64::MAX).prop_map(WordValue::Huge),
        1 => (1u32..100_000).prop_map(WordValue::Negative),
        1 => any::<u16>().prop_map(WordValue::Small),
        3 => (obj_class(), any::<Index>(), prop_oneof![Just(0u8), any::<u8>()])
            .prop_map(|(c, i, o)| WordValue::Object(c, i, o)),
        1 => (obj_class(), any::<Index>(), 1u8..8)
            .prop_map(|(c, i, o)| WordValue::Misaligned(c, i, o)),
        1 => (any::<Index>(), any::<u32>()).prop_map(|(i, o)| WordValue::Unmapped(i, o)),
        2 => (any::<Index>(), prop::bool::weighted(0.8))
            .prop_map(|(i, a)| WordValue::Garbage(i, a)),
        2 => Just(WordValue::SelfRef),
        1 => any::<u64>().prop_map(WordValue::Random),
    ]
}

fn unit_value() -> impl Strategy<Value = UnitValue> {
    prop_oneof![
        (0xd800u16..=0xdfff).prop_map(UnitValue::Surrogate),
        prop_oneof![Just(0x11_0000u32), Just(u32::MAX), 0x11_0000u32..]
            .prop_map(UnitValue::BeyondUnicode),
        select(&[0x80u8, 0xbf, 0xc0, 0xc3, 0xe2, 0xf0, 0xf8, 0xff][..])
            .prop_map(UnitValue::BadUtf8),
        any::<u32>().prop_map(UnitValue::Random),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (target(), word_value()).prop_map(|(t, v)| Mutation::Word(t, v)),
        3 => (target(), 1u8..=255).prop_map(|(t, x)| Mutation::Flip(t, x)),
        2 => (any::<Index>(), any::<Index>(), unit_value()).prop_map(|(s, u, v)| Mutation::Unit(s, u, v)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, k)| Mutation::Truncate(a, k)),
    ]
}

/// Up to a dozen mutations; none at all sometimes, so unmutated images are checked exactly
/// inside the fuzz loop too.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![
        1 => Just(Vec::new()),
        3 => vec(mutation(), 1..4),
        2 => vec(mutation(), 4..13),
    ]
}
