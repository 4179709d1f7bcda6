//! Walking the interpreter's threads and each thread's Python frames.
//!
//! Written once against [`Layout`]: the frame model decides how the first frame is found
//! and how positions are read, nothing else differs. Code objects are decoded once and
//! cached by address, with their line tables; a cache kept across samples checks each
//! entry once per pass, because a freed code object's address may be reused.

use rustc_hash::FxHashMap;
use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use anyhow::{bail, Context, Result};

use crate::layout::{FrameModel, Layout};
use crate::linetable::{line_for_offset, LineTableFormat};
use crate::memory::{Fields, MemoryReader, MemoryReaderExt};
use crate::objects::ObjectReader;

/// Most threads we follow in one interpreter's list: a cycle in garbage stops here.
pub const MAX_THREADS: usize = 4096;
/// Most frames we follow in one stack; deeper stacks are marked truncated.
pub const MAX_FRAMES: usize = 4096;
/// Longest line table we read.
const MAX_LINETABLE: usize = 1 << 20;
/// Largest fixed part of a frame struct (`PyFrameObject` is the biggest, under 512 bytes).
const MAX_FRAME_BYTES: usize = 1024;
/// Most local variables we read for one frame.
const MAX_LOCALS: usize = 1024;
/// Offsets whose line each code object remembers (see `CodeInfo::line_at`).
const RECENT_LINES: usize = 8;
/// Largest frame chunk copied in one read; a bigger one (a single huge frame) is read frame
/// by frame instead. CPython's chunks are 16 KiB unless one frame needs more.
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Most frames read ahead in one pass (see [`Walker::plan_ahead`]), and most reads of a
/// read-ahead that may fail (frames that have gone) before it gives up.
const MAX_AHEAD_FRAMES: usize = 1 << 16;
const MAX_AHEAD_FAILURES: usize = 16;
/// Most code objects read ahead in one pass: those the last pass used.
const MAX_AHEAD_CODES: usize = 4096;
/// Largest fixed part of a code object struct we read (all are well under this).
const MAX_CODE_BYTES: usize = 1024;
/// Longest local variable name we keep (identifiers are short; a garbage names tuple of
/// 1024 strings of 65 536 characters would otherwise cost a quarter of a gigabyte).
const MAX_LOCAL_NAME_CHARS: usize = 256;
/// Most code objects a [`CodeCache`] keeps between passes.
pub const MAX_CACHED_CODES: usize = 1 << 14;
/// Most bytes of names, filenames and line tables a [`CodeCache`] keeps between passes.
const MAX_CACHED_BYTES: usize = 64 << 20;
/// When the cache is over a limit, entries used in this many recent passes survive.
const RECENT_PASSES: u64 = 64;

/// What we keep of a code object.
#[derive(Debug, Clone)]
pub struct CodeInfo {
    /// `co_qualname` on 3.11+, else `co_name`.
    pub name: Rc<str>,
    /// `co_filename`.
    pub filename: Rc<str>,
    /// `co_firstlineno`.
    pub first_line: i32,
    /// The raw line table.
    pub linetable: Rc<[u8]>,
    /// How many leading locals are arguments (positional, keyword-only, *args, **kwargs).
    pub arg_count: usize,
    /// The tuple of local names and the bytes of their kinds, read only when locals are
    /// asked for: sampling never needs them.
    varnames_tuple: u64,
    kinds_bytes: u64,
    locals_names: OnceCell<LocalNames>,
    /// The lines of the last few instruction offsets looked up: a frame sits at the same
    /// few places (its call sites, a loop) sample after sample, and decoding the table
    /// from its start for each was the walker's biggest cost on deep stacks.
    recent_lines: RefCell<RecentLines>,
}

/// A small round-robin memo of `offset → line` for one code object.
#[derive(Debug, Clone, Default)]
struct RecentLines {
    entries: [(i32, Option<i32>); RECENT_LINES],
    len: usize,
    next: usize,
}

impl CodeInfo {
    /// The line of instruction `offset` (in bytes), decoded from the line table once and
    /// then remembered among the recent ones.
    pub fn line_at(&self, format: LineTableFormat, offset: i32) -> Option<i32> {
        let mut recent = self.recent_lines.borrow_mut();
        if let Some(&(_, line)) = recent.entries[..recent.len]
            .iter()
            .find(|(o, _)| *o == offset)
        {
            return line;
        }
        let line = line_for_offset(format, &self.linetable, self.first_line, offset);
        let slot = recent.next;
        recent.entries[slot] = (offset, line);
        recent.next = (slot + 1) % RECENT_LINES;
        recent.len = (recent.len + 1).min(RECENT_LINES);
        line
    }
}

/// Names of the fast locals (`co_varnames` / `co_localsplusnames`) and, on 3.11+, their
/// kinds (`co_localspluskinds`, one byte per name).
#[derive(Debug, Clone)]
struct LocalNames {
    names: Rc<[Rc<str>]>,
    kinds: Rc<[u8]>,
}

/// What identifies the code object at an address: if any of these changed, the object
/// was freed and another one took its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CodeFingerprint {
    name: u64,
    filename: u64,
    linetable: u64,
    first_line: i32,
}

#[derive(Debug)]
struct CachedCode {
    info: Rc<CodeInfo>,
    fingerprint: CodeFingerprint,
    /// The pass in which the entry was last known to be current.
    checked: u64,
}

impl CachedCode {
    /// Roughly the bytes this entry keeps alive (local names, read later, not included:
    /// they are bounded per code object).
    fn cost(&self) -> usize {
        let i = &self.info;
        std::mem::size_of::<CachedCode>()
            + std::mem::size_of::<CodeInfo>()
            + i.name.len()
            + i.filename.len()
            + i.linetable.len()
    }
}

/// Decoded code objects by address, kept across samples of one process.
///
/// Entries for code that has stopped appearing on stacks (freed code objects, or garbage
/// read from a stack that was changing) are dropped once the cache grows past
/// [`MAX_CACHED_CODES`] entries or 64 MiB, so a long profile does not grow without bound.
#[derive(Debug, Default)]
pub struct CodeCache {
    /// Keyed by address with a fast hash: looked up for every frame of every sample, and
    /// the keys are the target's pointers, not input anyone could choose to collide.
    entries: FxHashMap<u64, CachedCode>,
    code_type: Option<u64>,
    pass: u64,
    /// Approximate bytes held by the entries (see [`CachedCode::cost`]).
    bytes: usize,
    /// The buffer a thread's newest frame chunk is copied into (see `Walker::load_chunk`),
    /// kept here only so that it is allocated once per process, not once per pass.
    chunk: Vec<u8>,
    /// Code objects read ahead in one batch for the stack being walked (see
    /// `Walker::prefetch_codes`): their addresses, and their blocks back to back in
    /// `prefetched_bytes`. Kept here, like `chunk`, for the allocations.
    prefetched: Vec<u64>,
    prefetched_bytes: Vec<u8>,
    /// Thread states copied whole while [`Walker::thread_states`] followed the list (it
    /// needs their `next` field; the walk needs the rest), back to back in `tstate_bytes`,
    /// indexed by address: each is used once, by the first [`Walker::stack_if`] of that
    /// thread state, so that a thread costs one read for both. A retry reads afresh.
    tstates: FxHashMap<u64, usize>,
    tstate_bytes: Vec<u8>,
    /// The thread list of the last pass, read ahead by the next.
    last_tstates: Vec<u64>,
    /// Where the last walk of each thread state found its frames outside the chunk copy
    /// (innermost first), with the pass of that walk: the next pass reads them ahead, all
    /// threads together, in a few system calls (see [`Walker::plan_ahead`]).
    last_frames: FxHashMap<u64, (u64, Vec<u64>)>,
    /// The frames read ahead this pass: address → offset of its block in `ahead_bytes`.
    ahead: FxHashMap<u64, usize>,
    ahead_bytes: Vec<u8>,
    ahead_addrs: Vec<u64>,
    /// The frames of the stack being walked that came from outside the chunk copy.
    walked: Vec<u64>,
    /// The code objects read ahead this pass (those of `last_codes`): address → offset
    /// of its block in `ahead_bytes`, after the frames'.
    ahead_codes: FxHashMap<u64, usize>,
    /// The code objects the last pass checked, read ahead by this one, and those this
    /// pass has checked so far (bounded by [`MAX_AHEAD_CODES`]).
    last_codes: Vec<u64>,
    pass_codes: Vec<u64>,
}

impl CodeCache {
    /// Starts a sampling pass: every entry is checked against the target once before it
    /// is used again.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
        std::mem::swap(&mut self.last_codes, &mut self.pass_codes);
        self.pass_codes.clear();
        // Evict in steps: first what no recent pass used, then what the last pass did not
        // use, then everything. Runs only when over a limit, so not on the hot path.
        for keep_after in [
            self.pass.saturating_sub(RECENT_PASSES),
            self.pass - 1,
            u64::MAX,
        ] {
            if self.entries.len() <= MAX_CACHED_CODES && self.bytes <= MAX_CACHED_BYTES {
                break;
            }
            self.entries.retain(|_, e| e.checked >= keep_after);
            self.bytes = self.entries.values().map(CachedCode::cost).sum();
        }
    }

    /// Code objects cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One local variable of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Variable name.
    pub name: String,
    /// Python-style repr of its value.
    pub repr: String,
    /// Whether it is one of the function's arguments.
    pub is_arg: bool,
}

/// One Python frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Function name (qualified on 3.11+).
    pub name: Rc<str>,
    /// Full filename as the code object has it.
    pub filename: Rc<str>,
    /// The line being executed, as `traceback` reports it.
    pub line: Option<i32>,
    /// The function's first line (`co_firstlineno`).
    pub first_line: i32,
    /// Arguments and locals, when asked for.
    pub locals: Option<Vec<Local>>,
}

/// A thread state and its stack.
#[derive(Debug, Clone)]
pub struct ThreadStack {
    /// Address of the `PyThreadState`.
    pub tstate: u64,
    /// `threading.get_ident()` of the thread (`pthread_self()`).
    pub python_thread_id: u64,
    /// The OS thread id, when the thread state records it (3.11+).
    pub native_thread_id: Option<u64>,
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// More frames existed than [`MAX_FRAMES`].
    pub truncated: bool,
}

/// Walks threads and stacks of one interpreter.
pub struct Walker<'a, M: MemoryReader + ?Sized> {
    objects: ObjectReader<'a, M>,
    cache: CodeCache,
    /// Target address of `cache.chunk[..chunk_len]`: the stack being walked's newest chunk.
    chunk_start: u64,
    chunk_len: usize,
}

impl<'a, M: MemoryReader + ?Sized> Walker<'a, M> {
    /// A walker over `mem` with `layout` and an empty cache.
    pub fn new(mem: &'a M, layout: &'a Layout) -> Self {
        Self::with_cache(mem, layout, CodeCache::default())
    }

    /// A walker reusing the code objects decoded by an earlier one of the same process.
    pub fn with_cache(mem: &'a M, layout: &'a Layout, cache: CodeCache) -> Self {
        Walker {
            objects: ObjectReader::new(mem, layout),
            cache,
            chunk_start: 0,
            chunk_len: 0,
        }
    }

    /// The cache, to hand to the next walker of this process.
    pub fn into_cache(self) -> CodeCache {
        self.cache
    }

    /// The object reader this walker uses.
    pub fn objects(&self) -> &ObjectReader<'a, M> {
        &self.objects
    }

    fn mem(&self) -> &'a M {
        self.objects.memory()
    }

    fn layout(&self) -> &'a Layout {
        self.objects.layout()
    }

    /// Plans the read-ahead that [`Walker::thread_states`] does in its batch: the frames
    /// that the last walk of each of `tstates` found outside its chunk copy, and the code
    /// objects the last pass used. A thread whose stack has not changed since (most of a
    /// server's, waiting) then costs no read per frame, and a cached code object no read
    /// to check it. Only the addresses come from the last pass; the bytes are this
    /// pass's, so a frame or code object taken from them is what a read of its own would
    /// give now. One that has gone is simply not asked for, or is read on its own.
    ///
    /// Lists in `ahead_addrs` what to read (the frames, then the code objects) and sizes
    /// `ahead_bytes` for it; says how many are frames, or `None` if nothing is to be read.
    fn plan_ahead(&mut self, tstates: &[u64]) -> Option<usize> {
        let size = self.layout().frame.size;
        let code_size = self.layout().code.size;
        let cache = &mut self.cache;
        cache.ahead.clear();
        cache.ahead_codes.clear();
        cache.ahead_addrs.clear();
        let pass = cache.pass;
        if cache.last_frames.len() > 2 * tstates.len() + 16 {
            cache
                .last_frames
                .retain(|_, (walked, _)| *walked + 2 >= pass);
        }
        if size > MAX_FRAME_BYTES || code_size > MAX_CODE_BYTES {
            return None;
        }
        for tstate in tstates {
            if let Some((_, frames)) = cache.last_frames.get(tstate) {
                let room = MAX_AHEAD_FRAMES - cache.ahead_addrs.len();
                cache.ahead_addrs.extend(frames.iter().take(room));
            }
        }
        // On a stack of frame objects (3.10 and before) each code object would otherwise
        // cost a read of its own every pass, to check that the cached one is still there.
        let frames = cache.ahead_addrs.len();
        cache.ahead_addrs.extend_from_slice(&cache.last_codes);
        let codes = cache.ahead_addrs.len() - frames;
        cache
            .ahead_bytes
            .resize(frames * size + codes * code_size, 0);
        (!cache.ahead_addrs.is_empty()).then_some(frames)
    }

    /// The planned read-ahead as batch requests, from its `start`th entry on.
    fn ahead_requests<'b>(
        addrs: &'b [u64],
        bytes: &'b mut [u8],
        frames: usize,
        (size, code_size): (usize, usize),
        start: usize,
    ) -> impl Iterator<Item = (u64, &'b mut [u8])> {
        let (frame_bytes, code_bytes) = bytes.split_at_mut(frames * size);
        addrs
            .iter()
            .copied()
            .zip(
                frame_bytes
                    .chunks_mut(size)
                    .chain(code_bytes.chunks_mut(code_size)),
            )
            .skip(start)
    }

    /// Notes that the planned entries `start..start + filled` were read.
    fn note_ahead(&mut self, start: usize, filled: usize, frames: usize) {
        let (size, code_size) = (self.layout().frame.size, self.layout().code.size);
        let cache = &mut self.cache;
        for (i, &addr) in cache
            .ahead_addrs
            .iter()
            .enumerate()
            .skip(start)
            .take(filled)
        {
            if i < frames {
                cache.ahead.insert(addr, i * size);
            } else {
                cache
                    .ahead_codes
                    .insert(addr, frames * size + (i - frames) * code_size);
            }
        }
    }

    /// Reads the planned entries from `start` on, skipping each that stops a batch.
    fn read_ahead_from(&mut self, mut start: usize, frames: usize) {
        let sizes = (self.layout().frame.size, self.layout().code.size);
        let mem = self.mem();
        let mut failures = 0;
        while start < self.cache.ahead_addrs.len() && failures <= MAX_AHEAD_FAILURES {
            let addrs = std::mem::take(&mut self.cache.ahead_addrs);
            let mut bytes = std::mem::take(&mut self.cache.ahead_bytes);
            let mut requests: Vec<(u64, &mut [u8])> =
                Self::ahead_requests(&addrs, &mut bytes, frames, sizes, start).collect();
            let filled = mem.read_batch(&mut requests);
            drop(requests);
            self.cache.ahead_addrs = addrs;
            self.cache.ahead_bytes = bytes;
            self.note_ahead(start, filled, frames);
            // The one after those stopped the batch: skip it and go on.
            start += filled + 1;
            failures += 1;
        }
    }

    /// Drops what this pass read ahead: for a caller that let the target run since (a
    /// nudge), after which those bytes are no longer the target's.
    pub fn forget_read_ahead(&mut self) {
        self.cache.ahead.clear();
        self.cache.ahead_codes.clear();
        self.cache.tstates.clear();
    }

    /// Fills `block` with the frame at `addr` if it was read ahead this pass.
    fn copy_ahead(&self, addr: u64, block: &mut [u8]) -> bool {
        Self::copy_from(&self.cache.ahead, &self.cache.ahead_bytes, addr, block)
    }

    /// Fills `block` with the code object at `addr` if this pass read it already: ahead
    /// of the walk ([`Walker::plan_ahead`]) or with the frames of its chunk.
    fn copy_code_read(&self, addr: u64, block: &mut [u8]) -> bool {
        self.copy_prefetched(addr, block)
            || Self::copy_from(
                &self.cache.ahead_codes,
                &self.cache.ahead_bytes,
                addr,
                block,
            )
    }

    fn copy_from(
        offsets: &FxHashMap<u64, usize>,
        bytes: &[u8],
        addr: u64,
        block: &mut [u8],
    ) -> bool {
        match offsets.get(&addr) {
            Some(&at) => match bytes.get(at..at + block.len()) {
                Some(bytes) => {
                    block.copy_from_slice(bytes);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Thread-state addresses of `interp`, in list order (newest first), bounded. Starts
    /// a pass's reads: in the same batch, what the last pass suggests this one will read
    /// (its thread states, frames and code objects; see [`Walker::plan_ahead`]).
    pub fn thread_states(&mut self, interp: u64) -> Result<Vec<u64>> {
        let l = self.layout();
        let size = l.thread.size;
        let mem = self.mem();
        let head_at = interp.wrapping_add(l.interp.tstate_head as u64);
        self.cache.tstates.clear();
        self.cache.tstate_bytes.clear();
        // The head is read together with the thread states the last pass listed: a list
        // that has not changed then costs one system call in all, whatever its length.
        // (Only addresses come from the last pass; every byte used is this pass's.)
        let mut guessed = std::mem::take(&mut self.cache.last_tstates);
        // The read-ahead of frames and code objects (see `plan_ahead`) rides in the same
        // batch, planned from the same last pass.
        let ahead = self.plan_ahead(&guessed);
        let mut head = [0u8; 8];
        let mut head_read = false;
        if size <= 1 << 16 {
            let sizes = (l.frame.size, l.code.size);
            let cache = &mut self.cache;
            let addrs = std::mem::take(&mut cache.ahead_addrs);
            let mut bytes = std::mem::take(&mut cache.ahead_bytes);
            cache.tstate_bytes.resize(guessed.len() * size, 0);
            let mut requests: Vec<(u64, &mut [u8])> = std::iter::once((head_at, &mut head[..]))
                .chain(
                    guessed
                        .iter()
                        .copied()
                        .zip(cache.tstate_bytes.chunks_mut(size)),
                )
                .chain(
                    ahead
                        .map(|frames| Self::ahead_requests(&addrs, &mut bytes, frames, sizes, 0))
                        .into_iter()
                        .flatten(),
                )
                .collect();
            let filled = mem.read_batch(&mut requests);
            drop(requests);
            cache.ahead_addrs = addrs;
            cache.ahead_bytes = bytes;
            head_read = filled >= 1;
            let copied = filled.saturating_sub(1).min(guessed.len());
            cache.tstate_bytes.truncate(copied * size);
            for (i, &tstate) in guessed.iter().enumerate().take(copied) {
                cache.tstates.entry(tstate).or_insert(i * size);
            }
            if let Some(frames) = ahead {
                let list = 1 + guessed.len();
                let read = filled.saturating_sub(list);
                self.note_ahead(0, read, frames);
                // Stopped by a thread state that has gone, or inside the read-ahead: the
                // rest on its own, past the one that stopped it.
                let next = if filled < list { 0 } else { read + 1 };
                self.read_ahead_from(next, frames);
            }
        } else if let Some(frames) = ahead {
            self.read_ahead_from(0, frames);
        }
        let mut tstate = if head_read {
            u64::from_le_bytes(head)
        } else {
            mem.read_u64(head_at)
                .context("reading the interpreter's thread list")?
        };
        let mut out = Vec::new();
        // A loop is found with Brent's method, as in `stack`: searching the list so far
        // for every entry would cost a million comparisons per pass with 1,000 threads.
        let (mut mark, mut power, mut since_mark) = (0u64, 1usize, 0usize);
        while tstate != 0 {
            if out.len() >= MAX_THREADS || tstate == mark {
                bail!("thread list of interpreter {interp:#x} does not end");
            }
            out.push(tstate);
            since_mark += 1;
            if since_mark == power {
                mark = tstate;
                power *= 2;
                since_mark = 0;
            }
            let next_at = l.thread.next;
            tstate = match self.cache.tstates.get(&tstate) {
                Some(&at) => self.cache.tstate_bytes.u64_at(at + next_at),
                None => match self.copy_tstate(tstate, size) {
                    Some(block) => block.u64_at(next_at),
                    None => mem.read_u64(tstate.wrapping_add(next_at as u64))?,
                },
            };
        }
        guessed.clear();
        guessed.extend_from_slice(&out);
        self.cache.last_tstates = guessed;
        Ok(out)
    }

    /// Copies the thread state at `tstate` into the cache for [`Walker::stack_if`] and
    /// returns the copy; `None` if it cannot be read whole (the caller reads what it needs
    /// on its own) or is too big to keep.
    fn copy_tstate(&mut self, tstate: u64, size: usize) -> Option<&[u8]> {
        if size > 1 << 16 || self.cache.tstates.contains_key(&tstate) {
            return None;
        }
        let start = self.cache.tstate_bytes.len();
        self.cache.tstate_bytes.resize(start + size, 0);
        let mem = self.mem();
        if mem
            .read(tstate, &mut self.cache.tstate_bytes[start..])
            .is_err()
        {
            self.cache.tstate_bytes.truncate(start);
            return None;
        }
        self.cache.tstates.insert(tstate, start);
        Some(&self.cache.tstate_bytes[start..])
    }

    /// The OS thread id that the thread state at `tstate` names (3.11+), read afresh.
    pub fn native_thread_id(&self, tstate: u64) -> Option<i32> {
        let offset = self.layout().thread.native_thread_id?;
        let id = self
            .mem()
            .read_u64(tstate.wrapping_add(offset as u64))
            .ok()?;
        i32::try_from(id).ok().filter(|&id| id > 0)
    }

    /// The stack of the thread whose state is at `tstate`.
    pub fn stack(&mut self, tstate: u64, with_locals: bool) -> Result<ThreadStack> {
        self.stack_if(tstate, with_locals, |_| true)
    }

    /// [`Walker::stack`], but the frames are walked only if `walk` says so given the
    /// thread's OS id (when the layout records it); else the stack comes back empty.
    pub fn stack_if(
        &mut self,
        tstate: u64,
        with_locals: bool,
        walk: impl Fn(Option<u64>) -> bool,
    ) -> Result<ThreadStack> {
        let l = self.layout();
        let copied = self
            .cache
            .tstates
            .remove(&tstate)
            .and_then(|start| self.cache.tstate_bytes.get(start..start + l.thread.size))
            .map(<[u8]>::to_vec);
        let block = match copied {
            Some(block) => block,
            None => self
                .mem()
                .read_vec(tstate, l.thread.size, 1 << 16)
                .with_context(|| format!("reading thread state {tstate:#x}"))?,
        };
        let python_thread_id = block.u64_at(l.thread.thread_id);
        let native_thread_id = l.thread.native_thread_id.map(|o| block.u64_at(o));
        if !walk(native_thread_id) {
            return Ok(ThreadStack {
                tstate,
                python_thread_id,
                native_thread_id,
                frames: Vec::new(),
                truncated: false,
            });
        }
        let mut frame = block.u64_at(l.thread.frame);
        // 3.11–3.12: `frame` is the C frame, whose current frame is read in the same
        // system call as the chunk copy.
        let cframe = match l.thread.cframe_current_frame {
            Some(current) if frame != 0 => Some(frame.wrapping_add(current as u64)),
            Some(_) => {
                frame = 0;
                None
            }
            None => None,
        };
        let current = self.load_chunk(&block, cframe);
        self.cache.prefetched.clear();
        if let Some(at) = cframe {
            frame = match current {
                Some(current) => current,
                None => self.mem().read_u64(at)?,
            };
        }
        self.prefetch_codes(frame);
        self.cache.walked.clear();
        let walked = self.walk_frames(tstate, frame, with_locals);
        // Remembered on every path: a stack that failed half way is read ahead as far as
        // it went.
        let pass = self.cache.pass;
        let cache = &mut self.cache;
        let (when, frames) = cache.last_frames.entry(tstate).or_default();
        *when = pass;
        frames.clear();
        frames.extend_from_slice(&cache.walked);
        let (frames, truncated) = walked?;
        Ok(ThreadStack {
            tstate,
            python_thread_id,
            native_thread_id,
            frames,
            truncated,
        })
    }

    /// The frames of the chain that starts at `frame`, innermost first, and whether it
    /// went on past [`MAX_FRAMES`].
    fn walk_frames(
        &mut self,
        tstate: u64,
        mut frame: u64,
        with_locals: bool,
    ) -> Result<(Vec<Frame>, bool)> {
        let mut frames = Vec::new();
        let mut seen = 0usize;
        // A chain read while the thread was changing it can loop back on itself. Without
        // this check a loop would be reported as a MAX_FRAMES-deep stack (and, with locals,
        // cost MAX_FRAMES times the formatting work) instead of failing so the caller can
        // read again. Brent's method: `mark` is a frame `power` steps back, moved forward at
        // powers of two, so any loop is met again within a few times its length, with no
        // allocation.
        let mut mark = frame;
        let mut power = 1usize;
        let mut since_mark = 0usize;
        while frame != 0 {
            if seen >= MAX_FRAMES {
                return Ok((frames, true));
            }
            seen += 1;
            let (next, f) = self
                .frame(frame, with_locals)
                .with_context(|| format!("reading frame {frame:#x}"))?;
            if let Some(f) = f {
                frames.push(f);
            }
            frame = next;
            if frame == mark {
                bail!("the frame chain of thread state {tstate:#x} loops back to frame {frame:#x}");
            }
            since_mark += 1;
            if since_mark == power {
                mark = frame;
                power *= 2;
                since_mark = 0;
            }
        }
        Ok((frames, false))
    }

    /// Copies the thread's newest frame chunk (3.11+: `datastack_chunk` up to
    /// `datastack_top`, where the innermost frames live) with one read, so that those
    /// frames cost no read of their own. Anything odd (no chunk, a size out of bounds, an
    /// unreadable range) just leaves the copy empty: every frame is then read on its own,
    /// as before. The copy is the target's memory read during this pass, so a frame taken
    /// from it is the same bytes a read of its own would give while the target is paused.
    ///
    /// With `pointer`, the pointer at that address is read in the same system call and
    /// returned (`None` if that failed: the caller reads it on its own, and learns why).
    fn load_chunk(&mut self, tstate_block: &[u8], pointer: Option<u64>) -> Option<u64> {
        self.chunk_len = 0;
        let mem = self.mem();
        let mut word = [0u8; 8];
        let chunk = self
            .layout()
            .thread
            .datastack
            .and_then(|(chunk_field, top_field)| {
                let start = tstate_block.u64_at(chunk_field);
                let top = tstate_block.u64_at(top_field);
                top.checked_sub(start)
                    .filter(|&len| len > 0 && len <= MAX_CHUNK_BYTES as u64)
                    .map(|len| (start, len as usize))
            });
        let buffer = &mut self.cache.chunk;
        buffer.resize(chunk.map_or(0, |(_, len)| len), 0);
        let mut requests: [(u64, &mut [u8]); 2] = [(0, &mut []), (0, &mut [])];
        let mut n = 0;
        if let Some(at) = pointer {
            requests[n] = (at, &mut word);
            n += 1;
        }
        if let Some((start, _)) = chunk {
            requests[n] = (start, buffer.as_mut_slice());
            n += 1;
        }
        let filled = mem.read_batch(&mut requests[..n]);
        if chunk.is_some() && filled == n {
            if let Some((start, len)) = chunk {
                self.chunk_start = start;
                self.chunk_len = len;
            }
        } else if chunk.is_some() && pointer.is_some() && filled == 0 {
            // The pointer failed and stopped the batch: the chunk on its own.
            if let Some((start, len)) = chunk {
                if mem.read(start, &mut self.cache.chunk).is_ok() {
                    self.chunk_start = start;
                    self.chunk_len = len;
                }
            }
        }
        (pointer.is_some() && filled >= 1).then(|| u64::from_le_bytes(word))
    }

    /// Reads, in one batch, the code objects of the frames that lie in the chunk copy and
    /// that this pass has not checked yet: a stack of distinct functions would otherwise
    /// cost a read per function. Follows the frame chain inside the copy only (bounded
    /// by [`MAX_FRAMES`]); what it cannot read ahead is read one by one later, as before.
    fn prefetch_codes(&mut self, first_frame: u64) {
        let l = self.layout();
        if self.chunk_len == 0 || l.code.size > MAX_CODE_BYTES {
            return;
        }
        let mut wanted: Vec<u64> = std::mem::take(&mut self.cache.prefetched);
        wanted.clear();
        let mut frame = first_frame;
        let mut buf = [0u8; MAX_FRAME_BYTES];
        for _ in 0..MAX_FRAMES {
            let Some(block) = buf.get_mut(..l.frame.size) else {
                break;
            };
            if frame == 0 || !self.copy_from_chunk(frame, block) {
                break;
            }
            let mut code = block.u64_at(l.frame.code);
            if l.tagged_stackrefs {
                code &= !TAG_BITS;
            }
            if code != 0
                && !self.checked_this_pass(code)
                && !self.cache.ahead_codes.contains_key(&code)
                && !wanted.contains(&code)
            {
                wanted.push(code);
            }
            let back = block.u64_at(l.frame.back);
            if back == frame {
                break;
            }
            frame = back;
        }
        let size = l.code.size;
        let mut bytes = std::mem::take(&mut self.cache.prefetched_bytes);
        bytes.resize(wanted.len() * size, 0);
        let mut requests: Vec<(u64, &mut [u8])> =
            wanted.iter().copied().zip(bytes.chunks_mut(size)).collect();
        let filled = self.mem().read_batch(&mut requests);
        drop(requests);
        wanted.truncate(filled);
        self.cache.prefetched = wanted;
        self.cache.prefetched_bytes = bytes;
    }

    /// Fills `block` with the code object at `addr` if it was read ahead.
    fn copy_prefetched(&self, addr: u64, block: &mut [u8]) -> bool {
        let size = self.layout().code.size;
        match self.cache.prefetched.iter().position(|&a| a == addr) {
            Some(i) if block.len() == size => {
                block.copy_from_slice(&self.cache.prefetched_bytes[i * size..(i + 1) * size]);
                true
            }
            _ => false,
        }
    }

    /// Fills `block` from the chunk copy if it lies wholly inside it.
    fn copy_from_chunk(&self, addr: u64, block: &mut [u8]) -> bool {
        let Some(offset) = addr.checked_sub(self.chunk_start) else {
            return false;
        };
        let Some(end) = (offset as usize).checked_add(block.len()) else {
            return false;
        };
        if offset >= self.chunk_len as u64 || end > self.chunk_len {
            return false;
        }
        block.copy_from_slice(&self.cache.chunk[offset as usize..end]);
        true
    }

    /// Reads one frame: the next frame's address, and the frame unless it is a shim.
    fn frame(&mut self, addr: u64, with_locals: bool) -> Result<(u64, Option<Frame>)> {
        let l = self.layout();
        // Frames are small fixed structs: read each into the stack, one read, no allocation.
        let mut buf = [0u8; MAX_FRAME_BYTES];
        let Some(block) = buf.get_mut(..l.frame.size) else {
            bail!(
                "frame layout of {} bytes exceeds {MAX_FRAME_BYTES}",
                l.frame.size
            );
        };
        if !self.copy_from_chunk(addr, block) {
            if self.cache.walked.len() < MAX_FRAMES {
                self.cache.walked.push(addr);
            }
            if !self.copy_ahead(addr, block) {
                self.mem().read(addr, block)?;
            }
        }
        let block = &*block;
        let back = block.u64_at(l.frame.back);
        if let (Some(owner), Some(shim)) = (l.frame.owner, l.frame.owner_first_shim) {
            if block.u8_at(owner) >= shim {
                return Ok((back, None));
            }
        }
        let mut code_addr = block.u64_at(l.frame.code);
        if l.tagged_stackrefs {
            code_addr &= !TAG_BITS;
        }
        if code_addr == 0 {
            return Ok((back, None));
        }
        if l.frame_model == FrameModel::CurrentFrame
            && !self.checked_this_pass(code_addr)
            && !self.is_code(code_addr)?
        {
            // 3.13+ frames may run something other than a code object (e.g. None for the
            // interpreter's own entry frames); they are not Python frames.
            return Ok((back, None));
        }
        let code = self.code(code_addr)?;
        let offset = match l.frame_model {
            FrameModel::FrameObject => {
                let lasti = block.i32_at(l.frame.lasti);
                if l.line_format == LineTableFormat::LineTable310 {
                    // 3.10 counts code units; the table counts bytes.
                    lasti.saturating_mul(2)
                } else {
                    lasti
                }
            }
            FrameModel::CFrame | FrameModel::CurrentFrame => {
                let instr = block.u64_at(l.frame.lasti);
                let start = code_addr.wrapping_add(l.code.code_adaptive.unwrap_or(0) as u64);
                let units = (instr.wrapping_sub(start) as i64) / 2;
                // prev_instr may sit one unit before the first instruction (not started).
                if !(-1..(1 << 24)).contains(&units) {
                    bail!("instruction pointer {instr:#x} is outside code {code_addr:#x}");
                }
                (units as i32) * 2
            }
        };
        let line = code.line_at(l.line_format, offset);
        let locals = if with_locals {
            Some(self.locals(addr, &code)?)
        } else {
            None
        };
        Ok((
            back,
            Some(Frame {
                name: code.name.clone(),
                filename: code.filename.clone(),
                line,
                first_line: code.first_line,
                locals,
            }),
        ))
    }

    /// Whether the code object at `addr` was read and checked earlier in this pass (so it
    /// is known to be a code object now).
    fn checked_this_pass(&self, addr: u64) -> bool {
        self.cache
            .entries
            .get(&addr)
            .is_some_and(|entry| entry.checked == self.cache.pass)
    }

    /// Whether `addr` is a code object (the code type is learnt from its name once).
    fn is_code(&mut self, addr: u64) -> Result<bool> {
        let mut header = [0u8; MAX_CODE_BYTES];
        let size = self.layout().code.size.min(MAX_CODE_BYTES);
        let block = &mut header[..size];
        let tp = if self.copy_code_read(addr, block) {
            block.u64_at(self.layout().objects.ob_type)
        } else {
            self.objects.type_of(addr)?
        };
        if let Some(code_type) = self.cache.code_type {
            return Ok(tp == code_type);
        }
        if self.objects.type_name(tp)? == "code" {
            self.cache.code_type = Some(tp);
            return Ok(true);
        }
        Ok(false)
    }

    /// The decoded code object at `addr`, from the cache when it is still the same object.
    pub fn code(&mut self, addr: u64) -> Result<Rc<CodeInfo>> {
        let pass = self.cache.pass;
        if let Some(entry) = self.cache.entries.get(&addr) {
            if entry.checked == pass {
                return Ok(entry.info.clone());
            }
        }
        let l = self.layout();
        let mut buf = [0u8; MAX_CODE_BYTES];
        let Some(block) = buf.get_mut(..l.code.size) else {
            bail!(
                "code layout of {} bytes exceeds {MAX_CODE_BYTES}",
                l.code.size
            );
        };
        if !self.copy_code_read(addr, block) {
            self.mem().read(addr, block)?;
        }
        if self.cache.pass_codes.len() < MAX_AHEAD_CODES {
            self.cache.pass_codes.push(addr);
        }
        let block = &*block;
        let fingerprint = CodeFingerprint {
            name: block.u64_at(l.code.qualname.unwrap_or(l.code.name)),
            filename: block.u64_at(l.code.filename),
            linetable: block.u64_at(l.code.linetable),
            first_line: block.i32_at(l.code.firstlineno),
        };
        if let Some(entry) = self.cache.entries.get_mut(&addr) {
            if entry.fingerprint == fingerprint {
                entry.checked = pass;
                return Ok(entry.info.clone());
            }
        }
        let info = Rc::new(self.decode_code(block, fingerprint)?);
        let entry = CachedCode {
            info: info.clone(),
            fingerprint,
            checked: pass,
        };
        self.cache.bytes += entry.cost();
        if let Some(old) = self.cache.entries.insert(addr, entry) {
            self.cache.bytes -= old.cost();
        }
        Ok(info)
    }

    fn decode_code(&self, block: &[u8], fp: CodeFingerprint) -> Result<CodeInfo> {
        let l = self.layout();
        let o = &self.objects;
        let name: Rc<str> = o.read_string(fp.name).context("function name")?.into();
        let filename: Rc<str> = o.read_string(fp.filename).context("filename")?.into();
        let linetable: Rc<[u8]> = o
            .read_bytes_prefix(fp.linetable, MAX_LINETABLE)
            .context("line table")?
            .0
            .into();
        let flags = block.u32_at(l.code.flags);
        let mut arg_count = block.i32_at(l.code.argcount).max(0) as usize;
        if let Some(kw) = l.code.kwonlyargcount {
            arg_count += block.i32_at(kw).max(0) as usize;
        }
        arg_count += usize::from(flags & l.code.varargs_flag != 0);
        arg_count += usize::from(flags & l.code.varkeywords_flag != 0);
        Ok(CodeInfo {
            name,
            filename,
            first_line: fp.first_line,
            linetable,
            arg_count,
            varnames_tuple: block.u64_at(l.code.varnames),
            kinds_bytes: l.code.localspluskinds.map_or(0, |k| block.u64_at(k)),
            locals_names: OnceCell::new(),
            recent_lines: RefCell::default(),
        })
    }

    /// The names (and kinds) of `code`'s fast locals, read on first use.
    fn local_names(&self, code: &CodeInfo) -> Result<LocalNames> {
        if let Some(names) = code.locals_names.get() {
            return Ok(names.clone());
        }
        let o = &self.objects;
        let items = o.tuple_items(code.varnames_tuple, MAX_LOCALS)?;
        let names: Rc<[Rc<str>]> = items
            .iter()
            .map(|n| {
                o.read_string_prefix(*n, MAX_LOCAL_NAME_CHARS)
                    .map(|(name, _)| Rc::from(name))
            })
            .collect::<Result<Vec<_>>>()
            .context("variable names")?
            .into();
        let kinds: Rc<[u8]> = if self.layout().code.localspluskinds.is_some() {
            o.read_bytes_prefix(code.kinds_bytes, MAX_LOCALS)?.0.into()
        } else {
            Rc::from(Vec::new())
        };
        let names = LocalNames { names, kinds };
        let _ = code.locals_names.set(names.clone());
        Ok(names)
    }

    /// Arguments and locals of the frame at `frame` running `code`.
    fn locals(&self, frame: u64, code: &CodeInfo) -> Result<Vec<Local>> {
        let l = self.layout();
        let LocalNames { names, kinds } = self.local_names(code)?;
        let n = names.len().min(MAX_LOCALS);
        let raw = self.mem().read_vec(
            frame.wrapping_add(l.frame.localsplus as u64),
            n * 8,
            MAX_LOCALS * 8,
        )?;
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate().take(n) {
            let mut value = raw.u64_at(i * 8);
            if l.tagged_stackrefs {
                value &= !TAG_BITS;
            }
            if let (Some(fast), Some(kind)) = (l.code.fast_kinds, kinds.get(i)) {
                if kind & fast.hidden != 0 {
                    continue;
                }
                if kind & (fast.cell | fast.free) != 0 && value != 0 {
                    // Cell and free variables hold a cell; show what it refers to.
                    if self.objects.type_name_of(value).ok().as_deref() == Some("cell") {
                        value = self
                            .mem()
                            .read_u64(value.wrapping_add(l.objects.cell_ref as u64))
                            .unwrap_or(0);
                    }
                }
            }
            if value == 0 {
                // Unbound (not yet assigned, or deleted): `f_locals` leaves it out too.
                continue;
            }
            out.push(Local {
                name: name.to_string(),
                repr: self.objects.repr(value),
                is_arg: i < code.arg_count,
            });
        }
        Ok(out)
    }
}

/// Low bits of a `_PyStackRef` (3.14+) that tag, rather than address, the object; objects
/// are at least 8-byte aligned so masking three bits is always safe.
const TAG_BITS: u64 = 0b111;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{layout_for, supported_versions, StrModel};
    use crate::memory::FakeMemory;

    /// An address space of pseudo-random words, many of which point back into it, so the
    /// walker follows long chains of garbage.
    fn garbage(seed: u64, base: u64, len: usize) -> FakeMemory {
        let mut state = seed | 1;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let word = match state % 4 {
                0 => base + (state >> 8) % len as u64,
                1 => (state >> 16) % 64,
                2 => u64::MAX - (state % 64),
                _ => state,
            };
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        let mut mem = FakeMemory::new();
        mem.map(base, bytes);
        mem
    }

    /// A 3.13 thread state at 0x1000 whose frame chain is `links` shim frames (which the
    /// walker passes over without reading code), frame `i` at 0x10_0000 + i * 0x100 with
    /// its back pointer at `back(i)`.
    fn shim_chain(layout: &Layout, links: usize, back: impl Fn(u64) -> u64) -> FakeMemory {
        let mut mem = FakeMemory::new();
        let mut tstate = vec![0u8; layout.thread.size];
        let first = 0x10_0000u64;
        tstate[layout.thread.frame..layout.thread.frame + 8].copy_from_slice(&first.to_le_bytes());
        mem.map(0x1000, tstate);
        let mut frames = vec![0u8; links * 0x100];
        for i in 0..links {
            let at = i * 0x100;
            let b = back(i as u64).to_le_bytes();
            frames[at + layout.frame.back..at + layout.frame.back + 8].copy_from_slice(&b);
            frames[at + layout.frame.owner.unwrap()] = layout.frame.owner_first_shim.unwrap();
        }
        mem.map(first, frames);
        mem
    }

    #[test]
    fn looping_frame_chains_fail_instead_of_filling_max_frames() {
        let layout = layout_for(3, 13, false, None).unwrap();
        let frame = |i: u64| 0x10_0000 + i * 0x100;
        // A frame that is its own parent, and a loop back to an earlier frame after a tail.
        for (links, back) in [
            (1, Box::new(|_| frame(0)) as Box<dyn Fn(u64) -> u64>),
            (
                50,
                Box::new(move |i| if i == 49 { frame(7) } else { frame(i + 1) }),
            ),
        ] {
            let mem = shim_chain(&layout, links, back);
            let err = Walker::new(&mem, &layout).stack(0x1000, true).unwrap_err();
            assert!(err.to_string().contains("loops back"), "{err:#}");
        }
        // A long chain without a loop is still only cut at MAX_FRAMES.
        let mem = shim_chain(&layout, MAX_FRAMES + 10, |i| {
            if i + 1 == (MAX_FRAMES + 10) as u64 {
                0
            } else {
                frame(i + 1)
            }
        });
        let stack = Walker::new(&mem, &layout).stack(0x1000, false).unwrap();
        assert!(stack.truncated);
        let mem = shim_chain(&layout, 300, |i| if i == 299 { 0 } else { frame(i + 1) });
        let stack = Walker::new(&mem, &layout).stack(0x1000, false).unwrap();
        assert!(!stack.truncated && stack.frames.is_empty());
    }

    fn cached(checked: u64, table_bytes: usize) -> CachedCode {
        CachedCode {
            info: Rc::new(CodeInfo {
                name: "f".into(),
                filename: "f.py".into(),
                first_line: 1,
                linetable: vec![0; table_bytes].into(),
                arg_count: 0,
                varnames_tuple: 0,
                kinds_bytes: 0,
                locals_names: OnceCell::new(),
                recent_lines: RefCell::default(),
            }),
            fingerprint: CodeFingerprint {
                name: 0,
                filename: 0,
                linetable: 0,
                first_line: 0,
            },
            checked,
        }
    }

    fn fill(cache: &mut CodeCache, addrs: std::ops::Range<u64>, checked: u64, table: usize) {
        for addr in addrs {
            let entry = cached(checked, table);
            cache.bytes += entry.cost();
            cache.entries.insert(addr, entry);
        }
    }

    #[test]
    fn code_cache_drops_code_no_longer_seen_once_over_its_limits() {
        let mut cache = CodeCache {
            pass: 1000,
            ..CodeCache::default()
        };
        // Long unused entries up to the limit, and a hundred the last pass used.
        fill(&mut cache, 0..MAX_CACHED_CODES as u64, 10, 0);
        fill(&mut cache, 1 << 32..(1 << 32) + 100, 1000, 0);
        cache.begin_pass();
        assert_eq!(cache.len(), 100);
        // Under the limits nothing goes, however old.
        fill(&mut cache, 0..10, 1, 0);
        cache.begin_pass();
        assert_eq!(cache.len(), 110);
        // Over the count, recently used entries survive while the rest fits.
        let recent = cache.pass - 5;
        fill(
            &mut cache,
            2 << 32..(2 << 32) + MAX_CACHED_CODES as u64 - 150,
            recent,
            0,
        );
        fill(&mut cache, 3 << 32..(3 << 32) + 100, 1, 0);
        cache.begin_pass();
        assert_eq!(cache.len(), MAX_CACHED_CODES - 50);
        // ...and the byte limit holds even when the last pass used everything.
        let pass = cache.pass;
        fill(&mut cache, 0..80, pass, 1 << 20);
        cache.begin_pass();
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn local_names_are_cut_short() {
        let layout = layout_for(3, 10, false, None).unwrap();
        let o = layout.objects;
        let StrModel::Pep393 {
            length,
            state,
            ascii_size,
            kind_shift,
            compact_bit,
            ascii_bit,
            ..
        } = layout.strings
        else {
            panic!("3.10 strings")
        };
        let mut mem = FakeMemory::new();
        // A tuple of one str of 5000 ASCII characters.
        let mut tuple = vec![0u8; o.tuple_items + 8];
        tuple[o.ob_size..o.ob_size + 8].copy_from_slice(&1u64.to_le_bytes());
        tuple[o.tuple_items..o.tuple_items + 8].copy_from_slice(&0x2000u64.to_le_bytes());
        mem.map(0x1000, tuple);
        let mut name = vec![b'n'; ascii_size + 5001];
        name[..ascii_size].fill(0);
        name[length..length + 8].copy_from_slice(&5000u64.to_le_bytes());
        let bits: u32 = 1 << kind_shift | 1 << compact_bit | 1 << ascii_bit;
        name[state..state + 4].copy_from_slice(&bits.to_le_bytes());
        mem.map(0x2000, name);
        let mut code = cached(0, 0).info.as_ref().clone();
        code.varnames_tuple = 0x1000;
        let names = Walker::new(&mem, &layout).local_names(&code).unwrap();
        assert_eq!(names.names.len(), 1);
        assert_eq!(names.names[0].len(), MAX_LOCAL_NAME_CHARS);
    }

    #[test]
    fn looping_thread_lists_fail_and_proper_ones_end() {
        let layout = layout_for(3, 12, false, None).unwrap();
        let (head, next) = (layout.interp.tstate_head as u64, layout.thread.next as u64);
        // Thread states at 0x10000 + 0x1000 * i; `links[i]` is where state i points next.
        let list = |links: &[u64]| {
            let mut mem = FakeMemory::new();
            let mut interp = vec![0u8; head as usize + 8];
            interp[head as usize..].copy_from_slice(&0x10000u64.to_le_bytes());
            mem.map(0x1000, interp);
            for (i, link) in links.iter().enumerate() {
                let mut state = vec![0u8; next as usize + 8];
                state[next as usize..].copy_from_slice(&link.to_le_bytes());
                mem.map(0x10000 + 0x1000 * i as u64, state);
            }
            mem
        };
        let walk = |mem: &FakeMemory| Walker::new(mem, &layout).thread_states(0x1000);
        let ends = list(&[0x11000, 0x12000, 0]);
        assert_eq!(walk(&ends).unwrap(), vec![0x10000, 0x11000, 0x12000]);
        assert!(walk(&list(&[0x10000])).is_err(), "a state naming itself");
        assert!(
            walk(&list(&[0x11000, 0x12000, 0x10000])).is_err(),
            "a cycle of 3"
        );
        assert!(
            walk(&list(&[0x11000, 0x12000, 0x11000])).is_err(),
            "a tail and a cycle"
        );
    }

    #[test]
    fn garbage_memory_never_panics_or_hangs() {
        for name in supported_versions() {
            let ft = name.ends_with('t');
            let (major, minor) = name.trim_end_matches('t').split_once('.').unwrap();
            let layout =
                layout_for(major.parse().unwrap(), minor.parse().unwrap(), ft, None).unwrap();
            for seed in 1..40u64 {
                let base = 0x10_0000;
                let mem = garbage(seed * 7919, base, 1 << 15);
                let mut walker = Walker::new(&mem, &layout);
                for start in (0..64).map(|i| base + i * 136) {
                    let _ = walker.thread_states(start);
                    if let Ok(stack) = walker.stack(start, true) {
                        assert!(stack.frames.len() <= MAX_FRAMES);
                    }
                    let _ = walker.objects().repr(start);
                    let _ = walker.objects().dict_items(start, 100);
                    let _ = walker.objects().instance_attr(start, "_name");
                }
            }
        }
    }
}
