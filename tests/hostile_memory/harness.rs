//! The fuzz loop and its guards: a counting global allocator that stops the process on an
//! unbounded allocation, a watchdog that stops it on a hang, and a proptest loop that runs
//! until a deadline rather than for a number of cases. Each stop prints what reproduces it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Largest single allocation a case may make.
const MAX_ALLOCATION: usize = 64 << 20;
/// Largest live heap the whole test binary may reach.
const MAX_LIVE: usize = 512 << 20;
/// Longest one case may run.
const MAX_CASE: Duration = Duration::from_secs(10);

/// Counts live bytes and refuses to let a huge allocation or a runaway heap pass silently.
pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Set once a violation is being reported: from then on the allocator only forwards, so
/// the report (which allocates) cannot trip it again.
static REPORTING: AtomicBool = AtomicBool::new(false);

// SAFETY: every method forwards to `System` with the caller's layout; the bookkeeping is
// atomics only and allocates nothing, so it cannot recurse.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        let p = System.alloc(layout);
        if !p.is_null() {
            add_live(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            add_live(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            add_live(new_size);
        }
        p
    }
}

fn check_size(size: usize) {
    if size > MAX_ALLOCATION {
        violation(&format_args!(
            "a single allocation of {size} bytes (limit {MAX_ALLOCATION})"
        ));
    }
}

fn add_live(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if live > MAX_LIVE {
        violation(&format_args!(
            "a live heap of {live} bytes (limit {MAX_LIVE})"
        ));
    }
}

/// Reports an allocation violation with the case that caused it, then aborts. Runs inside
/// the allocator: once `REPORTING` is set every allocation just forwards.
fn violation(what: &std::fmt::Arguments<'_>) {
    if REPORTING.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\nhostile memory: UNBOUNDED ALLOCATION: {what}");
    CURRENT.with(|c| {
        if let Some(slot) = c.get() {
            slot.describe(&mut err);
        }
    });
    let _ = writeln!(err, "{}", std::backtrace::Backtrace::force_capture());
    std::process::abort();
}

/// What one fuzz test is doing right now, for the watchdog and the allocator to report.
pub struct Slot {
    label: &'static str,
    seed: AtomicU64,
    batch: AtomicU64,
    /// Milliseconds since `epoch()` at which the current case started; 0 when idle.
    started: AtomicU64,
    case: Mutex<Option<Box<dyn Debug + Send>>>,
}

impl Slot {
    /// An idle slot for the test `label`.
    pub const fn new(label: &'static str) -> Self {
        Slot {
            label,
            seed: AtomicU64::new(0),
            batch: AtomicU64::new(0),
            started: AtomicU64::new(0),
            case: Mutex::new(None),
        }
    }

    fn describe(&self, out: &mut dyn Write) {
        let seed = self.seed.load(Ordering::Relaxed);
        let batch = self.batch.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "hostile memory ({}): replay with PYSPY_FUZZ_SEED={seed}:{batch}",
            self.label
        );
        match self.case.try_lock() {
            Ok(case) => match case.as_ref() {
                Some(case) => {
                    let _ = writeln!(out, "case: {case:#?}");
                }
                None => {
                    let _ = writeln!(out, "(between cases)");
                }
            },
            Err(_) => {
                let _ = writeln!(out, "(case being recorded)");
            }
        }
    }
}

thread_local! {
    /// The slot of the fuzz test running on this thread (read inside the allocator: a
    /// const initializer and no destructor, so the access itself never allocates).
    static CURRENT: Cell<Option<&'static Slot>> = const { Cell::new(None) };
    /// Inside a case: panics are recorded here instead of printed.
    static PANIC: Cell<Option<&'static Mutex<Option<String>>>> = const { Cell::new(None) };
}

fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Starts (once) the thread that aborts the process when a case hangs.
fn watchdog(slots: &'static [&'static Slot]) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            for slot in slots {
                let started = slot.started.load(Ordering::Relaxed);
                if started != 0 && now_ms().saturating_sub(started) > MAX_CASE.as_millis() as u64 {
                    REPORTING.store(true, Ordering::SeqCst);
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "\nhostile memory ({}): HANG: one case ran over {} s",
                        slot.label,
                        MAX_CASE.as_secs()
                    );
                    slot.describe(&mut err);
                    std::process::abort();
                }
            }
        });
    });
}

/// Every slot, for the watchdog.
pub static WALKER: Slot = Slot::new("walker");
/// Slot of the objects and line-table test.
pub static OBJECTS: Slot = Slot::new("objects+linetables");
/// Slot of the fixed-case tests.
pub static FIXED: Slot = Slot::new("fixed cases");
static SLOTS: [&Slot; 3] = [&WALKER, &OBJECTS, &FIXED];

/// Records panics of cases (location and message) instead of printing each one: proptest
/// reruns a failing case many times while shrinking.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| match PANIC.with(|p| p.get()) {
            Some(sink) => {
                let place = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                if let Ok(mut s) = sink.lock() {
                    *s = Some(format!("panic at {place}: {msg}"));
                }
            }
            None => default(info),
        }));
    });
}

/// Run length: `PYSPY_FUZZ_SECONDS` (default 60), and the seed: `PYSPY_FUZZ_SEED`, either
/// `N` or `N:B` to start at batch `B` (what a failure prints); random when unset.
fn settings() -> (Duration, u64, u64) {
    let secs: f64 = std::env::var("PYSPY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0);
    let (seed, batch) = match std::env::var("PYSPY_FUZZ_SEED") {
        Ok(s) => {
            let (seed, batch) = s.split_once(':').unwrap_or((&s, "0"));
            (
                seed.parse().expect("PYSPY_FUZZ_SEED is N or N:B"),
                batch.parse().expect("PYSPY_FUZZ_SEED is N or N:B"),
            )
        }
        Err(_) => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64 ^ u64::from(std::process::id()), 0)
        }
    };
    (Duration::from_secs_f64(secs), seed, batch)
}

fn batch_rng(seed: u64, label: &str, batch: u64) -> TestRng {
    // splitmix64 over (seed, label, batch): independent streams per test and batch.
    let mut x = seed ^ batch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in label.bytes() {
        x = x.rotate_left(5) ^ u64::from(b);
    }
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Runs one case under the slot's guards; a panic becomes a failure naming its location.
pub fn guarded<T: Debug + Clone + Send + 'static>(
    slot: &'static Slot,
    case: &T,
    body: impl FnOnce() -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    static SINKS: [Mutex<Option<String>>; 3] =
        [Mutex::new(None), Mutex::new(None), Mutex::new(None)];
    let sink = &SINKS[SLOTS
        .iter()
        .position(|s| std::ptr::eq(*s, slot))
        .unwrap_or(2)];
    let boxed: Box<dyn Debug + Send> = Box::new(case.clone());
    *slot.case.lock().unwrap_or_else(|e| e.into_inner()) = Some(boxed);
    CURRENT.with(|c| c.set(Some(slot)));
    PANIC.with(|p| p.set(Some(sink)));
    slot.started.store(now_ms(), Ordering::Relaxed);
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    slot.started.store(0, Ordering::Relaxed);
    PANIC.with(|p| p.set(None));
    match result {
        Ok(r) => r,
        Err(_) => {
            let what = sink
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| "panic".to_string());
            Err(TestCaseError::fail(what))
        }
    }
}

/// Runs `test` on values of `strategy` until the deadline; returns the number of cases.
/// A failure panics with the shrunk case and the seed that replays it.
pub fn fuzz<S>(
    slot: &'static Slot,
    strategy: S,
    test: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) -> u64
where
    S: Strategy,
    S::Value: Clone + Debug + Send + 'static,
{
    install_panic_hook();
    watchdog(&SLOTS);
    let (length, seed, first_batch) = settings();
    slot.seed.store(seed, Ordering::Relaxed);
    let start = Instant::now();
    let cases = Cell::new(0u64);
    let slowest = Cell::new(Duration::ZERO);
    // PYSPY_FUZZ_SLOW_MS=N prints every case slower than N ms, to find what nears a hang.
    let report_slow = std::env::var("PYSPY_FUZZ_SLOW_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis);
    let mut batch = first_batch;
    while start.elapsed() < length {
        slot.batch.store(batch, Ordering::Relaxed);
        let config = Config {
            cases: 64,
            // Failures are reported with their seed; nothing is written to the source tree.
            failure_persistence: None,
            max_shrink_iters: 4096,
            max_shrink_time: 120_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, batch_rng(seed, slot.label, batch));
        let result = runner.run(&strategy, |value| {
            cases.set(cases.get() + 1);
            let began = Instant::now();
            let result = guarded(slot, &value, || test(&value));
            let took = began.elapsed();
            slowest.set(slowest.get().max(took));
            if report_slow.is_some_and(|limit| took > limit) {
                let _ = writeln!(
                    std::io::stderr(),
                    "hostile memory ({}): slow case, {:.3} s: {value:#?}",
                    slot.label,
                    took.as_secs_f64()
                );
            }
            result
        });
        if let Err(e) = result {
            let (why, case) = match e {
                TestError::Fail(why, case) => (why.to_string(), format!("{case:#?}")),
                TestError::Abort(why) => (why.to_string(), String::new()),
            };
            panic!(
                "hostile memory ({}): FAILED after {} cases: {why}\n\
                 replay with PYSPY_FUZZ_SEED={seed}:{batch}\nminimal case: {case}",
                slot.label,
                cases.get()
            );
        }
        batch += 1;
    }
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "hostile memory ({}): {} cases in {:.1} s, 0 failures (seed {seed}, slowest case {:.3} s)",
        slot.label,
        cases.get(),
        start.elapsed().as_secs_f64(),
        slowest.get().as_secs_f64()
    );
    cases.get()
}
