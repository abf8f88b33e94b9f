//! The bounded code cache: generated blocks are appended to one [`ExecMemory`] region; when it
//! is full the owner flushes everything (drops every block) and starts again from offset 0.
//! Flushing is only legal between blocks (no generated code on the host stack).

use crate::exec_mem::ExecMemory;
use std::io;

/// Default size of the code region (bytes).
pub const DEFAULT_CODE_BYTES: usize = 32 << 20;

/// Blocks are placed at this alignment (bytes), which keeps loop heads cache-line friendly.
const ALIGN: usize = 16;

/// Append-only executable code storage with wholesale flush.
#[derive(Debug)]
pub struct CodeCache {
    mem: ExecMemory,
    used: usize,
    /// Number of flushes so far (a block's address is valid only within one epoch).
    pub flushes: u64,
    /// Bytes of code installed since creation.
    pub bytes_installed: u64,
}

impl CodeCache {
    /// A cache of `bytes` bytes of executable memory.
    pub fn new(bytes: usize) -> io::Result<Self> {
        Ok(CodeCache {
            mem: ExecMemory::new(bytes)?,
            used: 0,
            flushes: 0,
            bytes_installed: 0,
        })
    }

    /// Host address where the next block will be placed.
    pub fn next_addr(&self) -> usize {
        self.mem.base() + self.used
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Copies `code` into executable memory and returns its host address, or `Ok(None)` if it
    /// does not fit (the caller flushes and retries).
    pub fn install(&mut self, code: &[u8]) -> io::Result<Option<usize>> {
        if self.used + code.len() > self.mem.len() {
            return Ok(None);
        }
        let at = self.used;
        self.mem.write(at, code)?;
        self.used = (at + code.len()).div_ceil(ALIGN) * ALIGN;
        self.bytes_installed += code.len() as u64;
        Ok(Some(self.mem.base() + at))
    }

    /// Forgets every installed block (their addresses become invalid).
    pub fn flush(&mut self) {
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
}
