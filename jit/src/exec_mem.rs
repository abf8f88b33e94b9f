//! Executable memory under W^X: a region is either writable or executable, never both.
//!
//! Every host consideration lives here:
//! - Linux: one memfd mapped twice, once read+execute (where code runs) and once read+write
//!   (where it is written); no mapping is ever writable and executable, and installing a
//!   block costs no system call. (Flipping one mapping with `mprotect` cost two system calls
//!   and a TLB shootdown per installed block or patched jump: ~15% of a Linux boot.) If
//!   memfd_create or the executable mapping is refused (a hardened kernel), the flipping
//!   scheme below is used instead.
//! - Other Unixes: an anonymous mapping flipped with `mprotect` (memmap2's `make_mut` /
//!   `make_exec`).
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
    /// Linux: the read+write view of the same memory (then `state` is never flipped).
    #[cfg(target_os = "linux")]
    rw: Option<MmapMut>,
    base: usize,
    len: usize,
}

/// Maps a fresh memfd of `len` bytes twice: read+execute and read+write.
#[cfg(target_os = "linux")]
fn dual_map(len: usize) -> io::Result<(Mmap, MmapMut)> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new owned
    // descriptor or -1 (checked before use).
    let fd = unsafe { libc::memfd_create(c"rinx-jit".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a valid descriptor we own (just created); the File closes it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(len as u64)?;
    // SAFETY: the memfd is private to this process and never truncated after this point,
    // so both mappings stay backed for their whole life.
    let rx = unsafe { memmap2::MmapOptions::new().len(len).map_exec(&file)? };
    // SAFETY: as above; the read+write view aliases the executable one by design: the code
    // cache writes only bytes no thread is executing (see `ExecMemory::write`).
    let rw = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file)? };
    Ok((rx, rw))
}

impl ExecMemory {
    /// Maps `len` bytes (rounded up by the OS to pages), initially executable.
    pub fn new(len: usize) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        if let Ok((rx, rw)) = dual_map(len) {
            let base = rx.as_ptr() as usize;
            return Ok(ExecMemory {
                state: Some(rx),
                rw: Some(rw),
                base,
                len,
            });
        }
        let m = MmapMut::map_anon(len)?;
        let base = m.as_ptr() as usize;
        let x = m.make_exec()?;
        Ok(ExecMemory {
            state: Some(x),
            #[cfg(target_os = "linux")]
            rw: None,
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
        #[cfg(target_os = "linux")]
        if let Some(rw) = self.rw.as_mut() {
            // x86-64 keeps instruction fetch coherent with stores through any alias.
            rw[offset..offset + code.len()].copy_from_slice(code);
            return Ok(());
        }
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
