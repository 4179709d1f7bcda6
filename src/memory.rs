//! Reading another address space.
//!
//! Everything above the platform layer reads the target through [`MemoryReader`]: one
//! required method that copies bytes at an address. The typed and bounded helpers in
//! [`MemoryReaderExt`] are built on it, so a live process, a core file or a fake address
//! space in a test all drive the same stack walker.

use std::fmt;

/// Why a read of the target's memory failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// The process (or the thread) no longer exists.
    ProcessGone,
    /// The kernel refused access to the process's memory.
    PermissionDenied,
    /// The address is not mapped, or only part of the range is.
    BadAddress,
    /// A length or count read from the target was larger than we accept.
    TooLarge,
    /// Any other OS error, by errno.
    Os(i32),
}

/// A failed read: where, how much, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadError {
    /// Address the read started at.
    pub addr: u64,
    /// Number of bytes asked for.
    pub len: usize,
    /// What went wrong.
    pub kind: ReadErrorKind,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.kind {
            ReadErrorKind::ProcessGone => "the process has exited".to_string(),
            ReadErrorKind::PermissionDenied => "permission denied".to_string(),
            ReadErrorKind::BadAddress => "address not mapped".to_string(),
            ReadErrorKind::TooLarge => "size read from the target is implausibly large".to_string(),
            ReadErrorKind::Os(errno) => format!("OS error {errno}"),
        };
        write!(f, "reading {} bytes at {:#x}: {why}", self.len, self.addr)
    }
}

impl std::error::Error for ReadError {}

/// Whether `err` says the target process went away (a read found it gone, or a `/proc`
/// file of it vanished); context added on top does not hide it.
pub fn is_process_gone(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<ReadError>()
            .is_some_and(|e| e.kind == ReadErrorKind::ProcessGone)
            || cause.to_string().contains("has exited")
    })
}

/// Result of a remote read.
pub type ReadResult<T> = Result<T, ReadError>;

/// An address space we can copy bytes out of.
pub trait MemoryReader {
    /// Fills all of `buf` with the bytes at `addr`; fails unless every byte was read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> ReadResult<()>;

    /// Fills each `(addr, buf)` in order, in as few system calls as the platform allows,
    /// and returns how many leading requests were filled whole (the rest may hold
    /// anything). Nothing is reported beyond the count: a caller reads what it still
    /// needs with [`MemoryReader::read`], which says what went wrong.
    fn read_batch(&self, requests: &mut [(u64, &mut [u8])]) -> usize {
        let mut filled = 0;
        for (addr, buf) in requests.iter_mut() {
            if self.read(*addr, buf).is_err() {
                break;
            }
            filled += 1;
        }
        filled
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> ReadResult<()> {
        (**self).read(addr, buf)
    }

    fn read_batch(&self, requests: &mut [(u64, &mut [u8])]) -> usize {
        (**self).read_batch(requests)
    }
}

/// Typed and bounded reads on top of [`MemoryReader::read`]. Little-endian, 64-bit targets.
pub trait MemoryReaderExt: MemoryReader {
    /// Reads `N` bytes.
    fn read_array<const N: usize>(&self, addr: u64) -> ReadResult<[u8; N]> {
        let mut buf = [0u8; N];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads a pointer-sized unsigned value.
    fn read_u64(&self, addr: u64) -> ReadResult<u64> {
        self.read_array::<8>(addr).map(u64::from_le_bytes)
    }

    /// Reads a signed 64-bit value (`Py_ssize_t`).
    fn read_i64(&self, addr: u64) -> ReadResult<i64> {
        self.read_array::<8>(addr).map(i64::from_le_bytes)
    }

    /// Reads an unsigned 32-bit value.
    fn read_u32(&self, addr: u64) -> ReadResult<u32> {
        self.read_array::<4>(addr).map(u32::from_le_bytes)
    }

    /// Reads a signed 32-bit value (`int`).
    fn read_i32(&self, addr: u64) -> ReadResult<i32> {
        self.read_array::<4>(addr).map(i32::from_le_bytes)
    }

    /// Reads one byte.
    fn read_u8(&self, addr: u64) -> ReadResult<u8> {
        self.read_array::<1>(addr).map(|b| b[0])
    }

    /// Reads `len` bytes into a new vector, refusing lengths above `max` so that a garbage
    /// length read from the target cannot make us allocate gigabytes.
    fn read_vec(&self, addr: u64, len: usize, max: usize) -> ReadResult<Vec<u8>> {
        if len > max {
            return Err(ReadError {
                addr,
                len,
                kind: ReadErrorKind::TooLarge,
            });
        }
        let mut buf = vec![0u8; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads a NUL-terminated C string of at most `max` bytes (without the NUL), chunk by chunk
    /// so that a string near the end of a mapping is still readable.
    fn read_c_string(&self, addr: u64, max: usize) -> ReadResult<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            let at = addr + out.len() as u64;
            // Never cross a 64-byte boundary in one read: the page end may follow the string.
            let room = 64 - (at % 64) as usize;
            let want = room.min(max - out.len());
            self.read(at, &mut chunk[..want])?;
            if let Some(nul) = chunk[..want].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..want]);
        }
        Ok(out)
    }
}

impl<M: MemoryReader + ?Sized> MemoryReaderExt for M {}

/// Little-endian field access into a block of bytes already copied from the target, so one
/// read of a whole struct serves all its fields.
pub trait Fields {
    /// The `u64` at byte offset `off`, or 0 if the block is too short.
    fn u64_at(&self, off: usize) -> u64;
    /// The `i64` at byte offset `off`, or 0 if the block is too short.
    fn i64_at(&self, off: usize) -> i64;
    /// The `u32` at byte offset `off`, or 0 if the block is too short.
    fn u32_at(&self, off: usize) -> u32;
    /// The `i32` at byte offset `off`, or 0 if the block is too short.
    fn i32_at(&self, off: usize) -> i32;
    /// The `u16` at byte offset `off`, or 0 if the block is too short.
    fn u16_at(&self, off: usize) -> u16;
    /// The byte at offset `off`, or 0 if the block is too short.
    fn u8_at(&self, off: usize) -> u8;
}

impl Fields for [u8] {
    fn u64_at(&self, off: usize) -> u64 {
        self.get(off..off + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn i64_at(&self, off: usize) -> i64 {
        self.u64_at(off) as i64
    }
    fn u32_at(&self, off: usize) -> u32 {
        self.get(off..off + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }
    fn i32_at(&self, off: usize) -> i32 {
        self.u32_at(off) as i32
    }
    fn u16_at(&self, off: usize) -> u16 {
        self.get(off..off + 2)
            .map_or(0, |b| u16::from_le_bytes(b.try_into().unwrap_or([0; 2])))
    }
    fn u8_at(&self, off: usize) -> u8 {
        self.get(off).copied().unwrap_or(0)
    }
}

/// A fake address space made of byte blocks at fixed addresses, for tests of the walker and
/// the object readers without a live process.
#[derive(Default, Debug, Clone)]
pub struct FakeMemory {
    blocks: Vec<(u64, Vec<u8>)>,
}

impl FakeMemory {
    /// An empty address space: every read fails with [`ReadErrorKind::BadAddress`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `bytes` at `addr`.
    pub fn map(&mut self, addr: u64, bytes: Vec<u8>) {
        self.blocks.push((addr, bytes));
    }
}

impl MemoryReader for FakeMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> ReadResult<()> {
        for (start, bytes) in &self.blocks {
            let end = start + bytes.len() as u64;
            if addr >= *start && addr.saturating_add(buf.len() as u64) <= end {
                let from = (addr - start) as usize;
                buf.copy_from_slice(&bytes[from..from + buf.len()]);
                return Ok(());
            }
        }
        Err(ReadError {
            addr,
            len: buf.len(),
            kind: ReadErrorKind::BadAddress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_reads_and_bounds() {
        let mut mem = FakeMemory::new();
        let mut block = 0x1122_3344_5566_7788u64.to_le_bytes().to_vec();
        block.extend_from_slice(b"hello\0world");
        // C-string reads go in aligned 64-byte chunks, which never cross a page.
        block.resize(0x40, 0);
        mem.map(0x1000, block);
        assert_eq!(mem.read_u64(0x1000).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(mem.read_u32(0x1000).unwrap(), 0x5566_7788);
        assert_eq!(mem.read_c_string(0x1008, 100).unwrap(), b"hello");
        assert_eq!(mem.read_c_string(0x1008, 3).unwrap(), b"hel");
        assert_eq!(
            mem.read_vec(0x1000, 1 << 40, 1 << 20).unwrap_err().kind,
            ReadErrorKind::TooLarge
        );
        assert_eq!(
            mem.read_u64(0x2000).unwrap_err().kind,
            ReadErrorKind::BadAddress
        );
        // A read running off the end of the block fails rather than returning short data.
        assert!(mem.read_u64(0x103c).is_err());
        let bytes = [1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(bytes.i32_at(4), -1);
        assert_eq!(bytes.u64_at(4), 0, "short block reads as zero");
    }
}
