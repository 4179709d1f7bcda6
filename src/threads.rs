//! Facts about Python threads that are not on their stacks: the OS thread id, the name
//! the `threading` module gave them, and which one holds the GIL.

use std::collections::{HashMap, HashSet};

use crate::interpreter::Interpreter;
use crate::layout::GilModel;
use crate::memory::{Fields, MemoryReader, MemoryReaderExt};
use crate::objects::ObjectReader;

/// How far into glibc's/musl's `struct pthread` we look for the kernel thread id.
const PTHREAD_SCAN_BYTES: usize = 0x800;
/// Most threads we name (entries of `threading._active`).
const MAX_NAMED_THREADS: usize = 4096;

/// Maps `pthread_t` values (`PyThreadState.thread_id`, before 3.11 the only id recorded) to
/// OS thread ids, and says at which offset of `struct pthread` it found them.
///
/// `pthread_t` points at the thread's `struct pthread`, which stores the kernel tid at an
/// offset the C library chooses. We find the one offset at which every thread's struct
/// holds a distinct tid of this process, and read all of them there. Later samples pass
/// that offset to [`os_thread_ids_at`] instead of scanning again.
pub fn os_thread_ids<M: MemoryReader + ?Sized>(
    mem: &M,
    pthread_ids: &[u64],
    os_tids: &[i32],
) -> (HashMap<u64, i32>, Option<usize>) {
    let tids: HashSet<i32> = os_tids.iter().copied().collect();
    let blocks: Vec<(u64, Vec<u8>)> = pthread_ids
        .iter()
        .filter(|p| **p != 0)
        .filter_map(|p| {
            mem.read_vec(*p, PTHREAD_SCAN_BYTES, PTHREAD_SCAN_BYTES)
                .ok()
                .map(|b| (*p, b))
        })
        .collect();
    if blocks.is_empty() {
        return (HashMap::new(), None);
    }
    for offset in (0..PTHREAD_SCAN_BYTES).step_by(4) {
        let found: Vec<i32> = blocks.iter().map(|(_, b)| b.i32_at(offset)).collect();
        if plausible(&found, &tids) {
            let map = blocks.iter().map(|(p, _)| *p).zip(found).collect();
            return (map, Some(offset));
        }
    }
    (HashMap::new(), None)
}

/// Reads the OS thread ids at a known `struct pthread` offset: one small read per thread.
/// `None` when what is there is not a distinct live tid for every thread (the C library
/// differs from the one the offset was learnt on, or a read failed): scan again then.
pub fn os_thread_ids_at<M: MemoryReader + ?Sized>(
    mem: &M,
    pthread_ids: &[u64],
    os_tids: &[i32],
    offset: usize,
) -> Option<HashMap<u64, i32>> {
    let tids: HashSet<i32> = os_tids.iter().copied().collect();
    let pthreads: Vec<u64> = pthread_ids.iter().copied().filter(|p| *p != 0).collect();
    // One system call for all: a thousand threads would otherwise cost a thousand reads
    // per sample.
    let mut bytes = vec![0u8; pthreads.len() * 4];
    let mut requests: Vec<(u64, &mut [u8])> = pthreads
        .iter()
        .map(|p| p.wrapping_add(offset as u64))
        .zip(bytes.chunks_mut(4))
        .collect();
    if mem.read_batch(&mut requests) < pthreads.len() {
        return None;
    }
    let found: Vec<i32> = bytes
        .chunks(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    plausible(&found, &tids).then(|| pthreads.into_iter().zip(found).collect())
}

/// Every value is a distinct tid of the process.
fn plausible(found: &[i32], tids: &HashSet<i32>) -> bool {
    let distinct: HashSet<i32> = found.iter().copied().collect();
    distinct.len() == found.len() && found.iter().all(|t| *t > 0 && tids.contains(t))
}

/// Thread names by `threading` ident, from `sys.modules['threading']._active`.
pub fn thread_names<M: MemoryReader + ?Sized>(
    objects: &ObjectReader<'_, M>,
    interpreter: &Interpreter,
) -> HashMap<u64, String> {
    names_or_error(objects, interpreter).unwrap_or_default()
}

fn names_or_error<M: MemoryReader + ?Sized>(
    objects: &ObjectReader<'_, M>,
    interpreter: &Interpreter,
) -> anyhow::Result<HashMap<u64, String>> {
    let mem = objects.memory();
    let layout = &interpreter.layout;
    let mut out = HashMap::new();
    let modules = mem.read_u64(
        interpreter
            .interp
            .wrapping_add(layout.interp.modules as u64),
    )?;
    let Some(threading) = objects.dict_get_str(modules, "threading")? else {
        return Ok(out);
    };
    // A module keeps its namespace where its type's tp_dictoffset says.
    let module_type = objects.type_of(threading)?;
    let dict_offset =
        mem.read_i64(module_type.wrapping_add(layout.objects.tp_dictoffset as u64))?;
    if dict_offset <= 0 {
        return Ok(out);
    }
    let namespace = mem.read_u64(threading.wrapping_add(dict_offset as u64))?;
    let Some(active) = objects.dict_get_str(namespace, "_active")? else {
        return Ok(out);
    };
    for (ident, thread) in objects.dict_items(active, MAX_NAMED_THREADS)? {
        let Ok(ident) = objects.read_int_u64(ident) else {
            continue;
        };
        // Python 2's Thread keeps the name in a private, hence mangled, attribute.
        let name = ["_name", "_Thread__name"].iter().find_map(|attr| {
            match objects.instance_attr(thread, attr) {
                Ok(Some(name)) => objects.read_string(name).ok(),
                _ => None,
            }
        });
        if let Some(name) = name {
            out.insert(ident, name);
        }
    }
    Ok(out)
}

/// The thread state holding the GIL, if any thread does (never on a free-threaded build).
pub fn gil_holder<M: MemoryReader + ?Sized>(mem: &M, interpreter: &Interpreter) -> Option<u64> {
    let holder = match interpreter.layout.gil {
        GilModel::NoGil => return None,
        GilModel::ThreadStateCurrentSymbol => mem.read_u64(interpreter.tstate_current?).ok()?,
        GilModel::RuntimeTstateCurrent(offset) => mem
            .read_u64(interpreter.runtime?.wrapping_add(offset as u64))
            .ok()?,
        GilModel::InterpreterGil {
            ceval_gil,
            locked,
            last_holder,
        } => {
            let gil = mem
                .read_u64(interpreter.interp.wrapping_add(ceval_gil as u64))
                .ok()?;
            if gil == 0 || mem.read_i32(gil.wrapping_add(locked as u64)).ok()? == 0 {
                return None;
            }
            mem.read_u64(gil.wrapping_add(last_holder as u64)).ok()?
        }
    };
    (holder != 0).then_some(holder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::FakeMemory;

    #[test]
    fn finds_the_tid_offset_shared_by_all_threads() {
        let mut mem = FakeMemory::new();
        // Two fake `struct pthread`s; the tid is at 0x2d0, and a decoy at 0x10 matches only
        // the first thread.
        for (addr, tid) in [(0x10000u64, 100i32), (0x20000, 101)] {
            let mut block = vec![0u8; PTHREAD_SCAN_BYTES];
            block[0x2d0..0x2d4].copy_from_slice(&tid.to_le_bytes());
            block[0x10..0x14].copy_from_slice(&100i32.to_le_bytes());
            mem.map(addr, block);
        }
        let (ids, offset) = os_thread_ids(&mem, &[0x10000, 0x20000], &[100, 101, 102]);
        assert_eq!(ids.get(&0x10000), Some(&100));
        assert_eq!(ids.get(&0x20000), Some(&101));
        assert_eq!(offset, Some(0x2d0));
        let again = os_thread_ids_at(&mem, &[0x10000, 0x20000], &[100, 101], 0x2d0);
        assert_eq!(again, Some(ids));
        // A tid that is no longer alive means the offset must be learnt again.
        assert_eq!(
            os_thread_ids_at(&mem, &[0x10000, 0x20000], &[100], 0x2d0),
            None
        );
    }
}
