//! Executable memory under W^X: a region is either writable or executable, never both.
//!
//! Every host consideration lives here:
//! - Linux and other Unixes: an anonymous mapping flipped with `mprotect` (memmap2's
//!   `make_mut` / `make_exec`).
//! - Windows: memmap2 flips the same mapping with `VirtualProtect`.
//! - macOS on Intel: `mprotect` as on Linux (a hardened-runtime build needs the
//!   `com.apple.security.cs.allow-unsigned-executable-memory` entitlement).
//! - macOS on Apple Silicon would need `MAP_JIT` and `pthread_jit_write_protect_np` (per-thread
//!   W^X toggling) plus `sys_icache_invalidate`; rinx has no AArch64 backend yet, so
//!   [`crate::HOST_SUPPORTED`] is false there and this module is never asked for code memory.
//! - x86-64 keeps the instruction cache coherent with stores, so no flush is needed after a
//!   write; an AArch64 backend must add one in [`ExecMemory::write`].

use memmap2::{Mmap, MmapMut};
use std::io;

/// A fixed-size region of host memory for generated code, executable except while a write is
/// in progress.
#[derive(Debug)]
pub struct ExecMemory {
    /// The mapping, executable; `None` only if re-protecting it failed.
    state: Option<Mmap>,
    base: usize,
    len: usize,
}

impl ExecMemory {
    /// Maps `len` bytes (rounded up by the OS to pages), initially executable.
    pub fn new(len: usize) -> io::Result<Self> {
        let m = MmapMut::map_anon(len)?;
        let base = m.as_ptr() as usize;
        let x = m.make_exec()?;
        Ok(ExecMemory {
            state: Some(x),
            base,
            len,
        })
    }

    /// Host address of the first byte.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `code` to `offset`: the region becomes writable (not executable), then executable
    /// again. The caller must not be executing code from this region meanwhile.
    pub fn write(&mut self, offset: usize, code: &[u8]) -> io::Result<()> {
        assert!(
            offset + code.len() <= self.len,
            "write past the code region"
        );
        let mut w = match self.state.take() {
            Some(x) => x.make_mut()?,
            None => return Err(io::Error::other("code region lost after a failed protect")),
        };
        w[offset..offset + code.len()].copy_from_slice(code);
        debug_assert_eq!(w.as_ptr() as usize, self.base);
        self.state = Some(w.make_exec()?);
        Ok(())
    }

    /// True while the region is executable (always, outside [`ExecMemory::write`]).
    pub fn is_executable(&self) -> bool {
        self.state.is_some()
    }
}
