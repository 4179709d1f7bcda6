//! Hostile memory: a fake address space serves adversarial data to the stack walker, the
//! line-table decoders and the locals formatter, which must never panic, hang, allocate
//! without bound or break their output limits.
//!
//! Images are generated structure-first (a plausible interpreter for a random supported
//! layout, checked to walk exactly when left alone), then mutated: cyclic frame chains and
//! thread lists, huge and negative sizes, pointers to nowhere or into other objects,
//! invalid text, truncated line tables, arbitrary word overwrites and bit flips.
//!
//! The two fuzz tests run for `PYSPY_FUZZ_SECONDS` each (default 60), concurrently, and
//! print how many cases they ran. A failure prints its shrunk case and a
//! `PYSPY_FUZZ_SEED=N:B` that replays it; hangs (> 10 s per case) and allocations over
//! 64 MiB (or a live heap over 512 MiB) abort the binary with the same report. Proptest's
//! failure persistence is off: nothing is written into the source tree.

#[path = "hostile_memory/harness.rs"]
mod harness;
#[path = "hostile_memory/image.rs"]
mod image;
#[path = "hostile_memory/spec.rs"]
mod spec;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use harness::CountingAllocator;
use image::{encode_linetable, truncated, Image, Space, GARBAGE_BASE};
use py_spy::layout::{layout_for, supported_versions, Layout};
use py_spy::linetable::{line_for_offset, LineTableFormat};
use py_spy::objects::{ObjectReader, REPR_MAX};
use py_spy::threads;
use py_spy::walker::{CodeCache, ThreadStack, Walker, MAX_CACHED_CODES, MAX_FRAMES, MAX_THREADS};
use spec::{ImageSpec, Mutation, ObjClass};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Most locals the walker reports for one frame (its `MAX_LOCALS`).
const MAX_LOCALS: usize = 1024;
/// Longest text the object reader returns for a whole string (`MAX_STRING_BYTES` chars).
const MAX_STRING_CHARS: usize = 1 << 16;
/// Most stacks walked per image: a mutated thread list may name thousands of addresses.
const MAX_STACKS_PER_CASE: usize = 12;

fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        supported_versions()
            .iter()
            .map(|name| {
                let ft = name.ends_with('t');
                let (major, minor) = name.trim_end_matches('t').split_once('.').unwrap();
                layout_for(major.parse().unwrap(), minor.parse().unwrap(), ft, None).unwrap()
            })
            .collect()
    })
}

fn layout_of(spec: &ImageSpec) -> (usize, &'static Layout) {
    let all = layouts();
    let i = spec.version.index(all.len());
    (i, &all[i])
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

// ---- The walker ----

/// Checks the output limits of one walked stack, and its exact content when `expected`.
fn check_stack(
    stack: &ThreadStack,
    with_locals: bool,
    expected: Option<&image::ExpectedThread>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        stack.frames.len() <= MAX_FRAMES,
        "{} frames",
        stack.frames.len()
    );
    for f in &stack.frames {
        prop_assert!(chars(&f.name) <= MAX_STRING_CHARS);
        prop_assert!(chars(&f.filename) <= MAX_STRING_CHARS);
        prop_assert_eq!(f.locals.is_some(), with_locals);
        for local in f.locals.iter().flatten() {
            prop_assert!(chars(&local.repr) <= REPR_MAX, "repr {:?}", local.repr);
            prop_assert!(chars(&local.name) <= MAX_STRING_CHARS);
        }
        prop_assert!(f.locals.as_ref().map_or(0, Vec::len) <= MAX_LOCALS);
    }
    let Some(e) = expected else { return Ok(()) };
    prop_assert_eq!(stack.tstate, e.tstate);
    prop_assert_eq!(stack.python_thread_id, e.thread_id);
    prop_assert_eq!(stack.native_thread_id, e.native_id);
    prop_assert_eq!(stack.truncated, e.truncated);
    prop_assert_eq!(stack.frames.len(), e.frames.len());
    for (got, want) in stack.frames.iter().zip(&e.frames) {
        prop_assert_eq!(&*got.name, want.name.as_str());
        prop_assert_eq!(&*got.filename, want.filename.as_str());
        prop_assert_eq!(got.line, want.line, "line of {}", want.name);
        prop_assert_eq!(got.first_line, want.first_line);
        if with_locals {
            let locals: Vec<(String, String, bool)> = got
                .locals
                .iter()
                .flatten()
                .map(|l| (l.name.clone(), l.repr.clone(), l.is_arg))
                .collect();
            prop_assert_eq!(&locals, &want.locals, "locals of {}", want.name);
        }
    }
    Ok(())
}

/// Walks every thread of `img` with a fresh walker (exact when `exact`) and returns the
/// thread states it walked.
fn walk_fresh(img: &Image<'_>, mem: &Space, exact: bool) -> Result<Vec<u64>, TestCaseError> {
    let mut walker = Walker::new(mem, img.layout);
    let listed = walker.thread_states(img.interp);
    let expected: Vec<u64> = img.threads.iter().map(|t| t.tstate).collect();
    if exact {
        match &listed {
            Ok(list) => prop_assert_eq!(list, &expected),
            Err(e) => return Err(TestCaseError::fail(format!("thread list: {e:#}"))),
        }
    }
    let mut tstates = match &listed {
        Ok(list) => {
            prop_assert!(list.len() <= MAX_THREADS);
            list.clone()
        }
        Err(_) => Vec::new(),
    };
    // The real thread states are walked too, whatever the list says after mutation.
    for t in expected {
        if !tstates.contains(&t) {
            tstates.push(t);
        }
    }
    tstates.truncate(MAX_STACKS_PER_CASE);
    for t in &tstates {
        let want = if exact {
            img.threads.iter().find(|e| e.tstate == *t)
        } else {
            None
        };
        for with_locals in [false, true] {
            match walker.stack(*t, with_locals) {
                Ok(stack) => check_stack(&stack, with_locals, want)?,
                Err(e) if exact => {
                    return Err(TestCaseError::fail(format!("stack of {t:#x}: {e:#}")))
                }
                Err(_) => {}
            }
        }
    }
    Ok(tstates)
}

thread_local! {
    /// One code cache per layout, kept across every image this thread walks, as the
    /// sampler keeps one across samples: reused addresses must not confuse it.
    static CACHES: RefCell<HashMap<usize, CodeCache>> = RefCell::new(HashMap::new());
}

/// Walks `tstates` with the long-lived cache of this layout (limits only: a reused
/// address with the same fingerprint is trusted by design).
fn walk_cached(
    index: usize,
    img: &Image<'_>,
    mem: &Space,
    tstates: &[u64],
    with_locals: bool,
) -> Result<(), TestCaseError> {
    CACHES.with(|caches| {
        let mut caches = caches.borrow_mut();
        let mut cache = caches.remove(&index).unwrap_or_default();
        cache.begin_pass();
        let mut result = if cache.len() <= MAX_CACHED_CODES {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{} cached code objects",
                cache.len()
            )))
        };
        let mut walker = Walker::with_cache(mem, img.layout, cache);
        for t in tstates {
            if let Ok(stack) = walker.stack(*t, with_locals) {
                result = result.and(check_stack(&stack, with_locals, None));
            }
        }
        caches.insert(index, walker.into_cache());
        result
    })
}

fn walker_case(
    spec: &ImageSpec,
    mutations: &[Mutation],
    cached_locals: bool,
) -> Result<(), TestCaseError> {
    let (index, layout) = layout_of(spec);
    let mut img = image::build(spec, layout);
    for m in mutations {
        img.mutate(m);
    }
    let mem = img.memory();
    let tstates = walk_fresh(&img, &mem, mutations.is_empty())?;
    walk_cached(index, &img, &mem, &tstates, cached_locals)
}

#[test]
fn hostile_memory_walker() {
    harness::fuzz(
        &harness::WALKER,
        (spec::image(), spec::mutations(), any::<bool>()),
        |(spec, mutations, cached_locals)| walker_case(spec, mutations, *cached_locals),
    );
}

// ---- Line tables and objects ----

const FORMATS: [LineTableFormat; 4] = [
    LineTableFormat::Lnotab27,
    LineTableFormat::Lnotab36,
    LineTableFormat::LineTable310,
    LineTableFormat::Locations311,
];

/// A line-table case: a well-formed table to decode exactly, and garbage to survive.
#[derive(Debug, Clone)]
struct LinesCase {
    format: LineTableFormat,
    ranges: Vec<(u8, i8, bool)>,
    first_line: i32,
    style: u8,
    garbage: Vec<u8>,
    cut: Index,
    offsets: Vec<i32>,
}

fn lines_case() -> impl Strategy<Value = LinesCase> {
    let byte = prop_oneof![
        any::<u8>(),
        select(&[0x00u8, 0x7f, 0x80, 0xff, 0x40, 0xbf, 0xf8, 0xf0][..]),
    ];
    (
        select(&FORMATS[..]),
        prop::collection::vec((1u8..=20, -20i8..=40, prop::bool::weighted(0.15)), 1..12),
        prop_oneof![1i32..100_000, any::<i32>()],
        any::<u8>(),
        prop::collection::vec(byte, 0..700),
        any::<Index>(),
        prop::collection::vec(
            prop_oneof![-4i32..1500, Just(i32::MAX), Just(i32::MIN), any::<i32>()],
            1..8,
        ),
    )
        .prop_map(
            |(format, ranges, first_line, style, garbage, cut, offsets)| LinesCase {
                format,
                ranges,
                first_line,
                style,
                garbage,
                cut,
                offsets,
            },
        )
}

fn lines(case: &LinesCase) -> Result<(), TestCaseError> {
    let (table, expected) =
        encode_linetable(case.format, &case.ranges, case.first_line, case.style);
    let mut start = 0i32;
    for (r, want) in case.ranges.iter().zip(&expected) {
        let units = i32::from(r.0.max(1));
        for u in start..start + units {
            let got = line_for_offset(case.format, &table, case.first_line, u * 2);
            prop_assert_eq!(got, *want, "offset {} of {:?}", u * 2, table);
        }
        start += units;
    }
    let before = if matches!(
        case.format,
        LineTableFormat::Lnotab27 | LineTableFormat::Lnotab36
    ) {
        -1
    } else {
        -2
    };
    prop_assert_eq!(
        line_for_offset(case.format, &table, case.first_line, before),
        Some(case.first_line)
    );
    // Garbage, whole and cut short, and the good table cut short: any answer, no panic;
    // the lnotab formats always have a line.
    let cut = case.cut.index(case.garbage.len() + 1);
    let cut_good = case.cut.index(table.len() + 1);
    for bytes in [&case.garbage[..], &case.garbage[..cut], &table[..cut_good]] {
        for format in FORMATS {
            for &offset in &case.offsets {
                let line = line_for_offset(format, bytes, case.first_line, offset);
                if matches!(
                    format,
                    LineTableFormat::Lnotab27 | LineTableFormat::Lnotab36
                ) {
                    prop_assert!(line.is_some());
                }
            }
        }
    }
    Ok(())
}

/// An address to probe the object readers with.
#[derive(Debug, Clone)]
enum Probe {
    Object(ObjClass, Index, u8),
    Misaligned(ObjClass, Index, u8),
    Raw(u64),
    Garbage(Index),
}

fn probe() -> impl Strategy<Value = Probe> {
    let class = select(
        &[
            ObjClass::Str,
            ObjClass::Container,
            ObjClass::Code,
            ObjClass::Type,
            ObjClass::Frame,
            ObjClass::Any,
        ][..],
    );
    prop_oneof![
        3 => (class.clone(), any::<Index>(), prop_oneof![Just(0u8), (0u8..32).prop_map(|o| o * 8)])
            .prop_map(|(c, i, o)| Probe::Object(c, i, o)),
        1 => (class, any::<Index>(), 1u8..8).prop_map(|(c, i, o)| Probe::Misaligned(c, i, o)),
        1 => prop_oneof![Just(0u64), Just(u64::MAX), Just(u64::MAX - 7), any::<u64>()]
            .prop_map(Probe::Raw),
        2 => any::<Index>().prop_map(Probe::Garbage),
    ]
}

fn objects(
    spec: &ImageSpec,
    mutations: &[Mutation],
    probes: &[Probe],
) -> Result<(), TestCaseError> {
    let (_, layout) = layout_of(spec);
    let mut img = image::build(spec, layout);
    let exact = mutations.is_empty();
    for m in mutations {
        img.mutate(m);
    }
    let mem = img.memory();
    let objects = ObjectReader::new(&mem, layout);
    for (addr, want) in img.values.iter().take(48) {
        let got = objects.repr(*addr);
        prop_assert!(chars(&got) <= REPR_MAX, "repr {:?}", got);
        if exact {
            prop_assert_eq!(&got, &truncated(want.clone()));
        }
    }
    for p in probes {
        let addr = match p {
            Probe::Object(class, i, off) | Probe::Misaligned(class, i, off) => {
                let list = img.objects_of(*class);
                if list.is_empty() {
                    continue;
                }
                list[i.index(list.len())].wrapping_add(u64::from(*off))
            }
            Probe::Raw(a) => *a,
            Probe::Garbage(i) => GARBAGE_BASE + (i.index(image::garbage().len()) as u64 & !7),
        };
        prop_assert!(chars(&objects.repr(addr)) <= REPR_MAX);
        if let Ok((text, _)) = objects.read_string_prefix(addr, 40) {
            prop_assert!(chars(&text) <= 40);
        }
        if let Ok(items) = objects.dict_items(addr, 20) {
            prop_assert!(items.len() <= 20);
        }
        if let Ok(items) = objects.tuple_items(addr, 20) {
            prop_assert!(items.len() <= 20);
        }
        if let Ok(name) = objects.type_name_of(addr) {
            prop_assert!(name.len() <= 256 * 3);
        }
        let _ = objects.instance_attr(addr, "_name");
        let _ = objects.read_int_u64(addr);
        let _ = objects.int_repr(addr);
    }
    let interpreter = img.interpreter();
    let names = threads::thread_names(&objects, &interpreter);
    let holder = threads::gil_holder(&mem, &interpreter);
    if exact {
        prop_assert_eq!(&names, &img.names);
        prop_assert_eq!(holder, img.gil);
    }
    let ids: Vec<u64> = img.threads.iter().map(|t| t.thread_id).collect();
    let _ = threads::os_thread_ids_at(&mem, &ids, &[4000, 4001], 0x2d0);
    Ok(())
}

#[derive(Debug, Clone)]
enum ObjectsCase {
    Lines(LinesCase),
    Objects(ImageSpec, Vec<Mutation>, Vec<Probe>),
}

#[test]
fn hostile_memory_objects_and_linetables() {
    let strategy = prop_oneof![
        lines_case().prop_map(ObjectsCase::Lines),
        (
            spec::image(),
            spec::mutations(),
            prop::collection::vec(probe(), 0..16)
        )
            .prop_map(|(s, m, p)| ObjectsCase::Objects(s, m, p)),
    ];
    harness::fuzz(&harness::OBJECTS, strategy, |case| match case {
        ObjectsCase::Lines(c) => lines(c),
        ObjectsCase::Objects(s, m, p) => objects(s, m, p),
    });
}

// ---- Fixed cases ----

/// Runs `cases` unmutated images through both checks with a fixed seed: if the generator
/// were wrong, fuzzing its mutations would prove little.
#[test]
fn unmutated_images_walk_exactly() {
    let config = Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let result = runner.run(
        &(spec::image(), prop::collection::vec(probe(), 0..4)),
        |(s, p)| {
            harness::guarded(&harness::FIXED, &s, || {
                walker_case(&s, &[], true)?;
                objects(&s, &[], &p)
            })
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every layout, walked exactly, with every kind of value as a local.
#[test]
fn every_layout_walks_exactly() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
    );
    let tree = spec::image();
    for v in 0..layouts().len() {
        let mut seen = 0;
        while seen < 20 {
            let mut s = tree.new_tree(&mut runner).unwrap().current();
            if layout_of(&s).0 != v {
                // Retarget the version; everything else in the recipe is version-neutral.
                s.version = loop {
                    let candidate = any::<Index>().new_tree(&mut runner).unwrap().current();
                    if candidate.index(layouts().len()) == v {
                        break candidate;
                    }
                };
            }
            if let Err(e) = harness::guarded(&harness::FIXED, &s, || walker_case(&s, &[], false)) {
                panic!("{}: {e}\n{s:#?}", supported_versions()[v]);
            }
            seen += 1;
        }
    }
}
