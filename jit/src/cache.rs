//! The bounded code cache: generated blocks are appended to fixed-size [`ExecMemory`] chunks;
//! when every chunk is full the owner flushes everything (drops every block) and starts again
//! from the first chunk. Flushing is only legal between blocks (no generated code on the host
//! stack).
//!
//! Why chunks: installing a block flips its region writable and back (W^X). The cost of that
//! protection change grows with the number of populated pages of the mapping (the kernel walks
//! every PTE), so one 32 MiB mapping made each install cost two walks over up to 8192 PTEs;
//! a profile of a Linux boot showed ~38% of the host time in those page-table updates.
//! 64 KiB chunks bound it to 16 pages.

use crate::exec_mem::ExecMemory;
use std::io;

/// Default size of the code region (bytes). A Debian boot emits ~130 MiB of host code (~900 bytes
/// per block, slow paths included); at 32 MiB it flushed 4 times and retranslated. Pages are only
/// backed once written, as with QEMU's (larger) translation buffer.
pub const DEFAULT_CODE_BYTES: usize = 128 << 20;

/// Size of one separately protected chunk (bytes); also the largest block that can be
/// installed.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Blocks are placed at this alignment (bytes), which keeps loop heads cache-line friendly.
const ALIGN: usize = 16;

/// Append-only executable code storage with wholesale flush.
#[derive(Debug)]
pub struct CodeCache {
    /// Chunks mapped so far (mapped lazily, kept across flushes).
    chunks: Vec<ExecMemory>,
    /// Most chunks (`total bytes / CHUNK_BYTES`, at least one).
    max_chunks: usize,
    /// Chunk being filled.
    cur: usize,
    /// Bytes used in the current chunk.
    used: usize,
    /// Number of flushes so far (a block's address is valid only within one epoch).
    pub flushes: u64,
    /// Bytes of code installed since creation.
    pub bytes_installed: u64,
}

impl CodeCache {
    /// A cache of `bytes` bytes of executable memory (rounded up to whole chunks; a cache
    /// smaller than one chunk is one chunk of `bytes`).
    pub fn new(bytes: usize) -> io::Result<Self> {
        let first = ExecMemory::new(bytes.min(CHUNK_BYTES))?;
        Ok(CodeCache {
            chunks: vec![first],
            max_chunks: bytes.div_ceil(CHUNK_BYTES).max(1),
            cur: 0,
            used: 0,
            flushes: 0,
            bytes_installed: 0,
        })
    }

    /// Host address where the next block will be placed.
    pub fn next_addr(&self) -> usize {
        self.chunks[self.cur].base() + self.used
    }

    /// Bytes in use (whole chunks before the current one plus its used part).
    pub fn used(&self) -> usize {
        self.cur * CHUNK_BYTES + self.used
    }

    /// Copies `code` (emitted for [`CodeCache::next_addr`]) into executable memory and returns
    /// its host address. `Ok(None)` if it does not fit in the current chunk: the cache has
    /// then moved on to the next chunk if there is one (the caller emits again for the new
    /// `next_addr` and retries) or is full (the caller flushes and retries).
    pub fn install(&mut self, code: &[u8]) -> io::Result<Option<usize>> {
        let chunk_len = self.chunks[self.cur].len();
        if self.used + code.len() > chunk_len {
            if self.used > 0 && self.cur + 1 < self.max_chunks {
                self.cur += 1;
                self.used = 0;
                if self.cur == self.chunks.len() {
                    self.chunks.push(ExecMemory::new(CHUNK_BYTES)?);
                }
            }
            return Ok(None);
        }
        let at = self.used;
        self.chunks[self.cur].write(at, code)?;
        self.used = (at + code.len()).div_ceil(ALIGN) * ALIGN;
        self.bytes_installed += code.len() as u64;
        Ok(Some(self.chunks[self.cur].base() + at))
    }

    /// Overwrites `bytes` of installed code at host address `addr` (block chaining patches a
    /// jump's rel32). The caller must not be executing code from the cache meanwhile.
    pub fn patch(&mut self, addr: usize, bytes: &[u8]) -> io::Result<()> {
        for c in &mut self.chunks {
            if addr >= c.base() && addr + bytes.len() <= c.base() + c.len() {
                return c.write(addr - c.base(), bytes);
            }
        }
        Err(io::Error::other("patch address outside the code cache"))
    }

    /// Forgets every installed block (their addresses become invalid).
    pub fn flush(&mut self) {
        self.cur = 0;
        self.used = 0;
        self.flushes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_until_full_then_flush() {
        let mut c = CodeCache::new(4096).unwrap();
        let a = c.install(&[0xc3; 2000]).unwrap().unwrap();
        let b = c.install(&[0xc3; 2000]).unwrap().unwrap();
        assert!(b >= a + 2000);
        assert!(
            c.install(&[0xc3; 2000]).unwrap().is_none(),
            "cache must report full"
        );
        c.flush();
        assert_eq!(c.install(&[0xc3; 10]).unwrap(), Some(a));
        assert_eq!(c.flushes, 1);
    }

    #[test]
    fn moves_to_the_next_chunk_then_reports_full() {
        let mut c = CodeCache::new(2 * CHUNK_BYTES).unwrap();
        let big = vec![0xc3; CHUNK_BYTES - 64];
        let a = c.install(&big).unwrap().unwrap();
        assert!(c.install(&big).unwrap().is_none(), "current chunk full");
        let next = c.next_addr();
        assert_eq!(c.install(&big).unwrap(), Some(next), "second chunk");
        assert!(c.install(&big).unwrap().is_none());
        assert!(c.install(&big).unwrap().is_none(), "no third chunk");
        c.flush();
        assert_eq!(c.install(&big).unwrap(), Some(a));
    }
}
