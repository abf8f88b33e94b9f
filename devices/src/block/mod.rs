//! Host back-ends of emulated disks: a byte-addressed [`BlockBackend`] trait, raw image files
//! ([`RawFile`]), an in-memory disk for tests ([`MemDisk`]), a copy-on-write overlay
//! ([`CowOverlay`]) and the classic VMM disk modes built from them ([`DiskMode`], [`open`]).
//!
//! Durability contract: [`BlockBackend::flush`] returns only after every completed write has
//! reached stable storage (fsync on the host file); a SCSI SYNCHRONIZE CACHE or a write with
//! FUA calls it before the command completes.

mod cow;
mod qcow2;
mod raw;

use std::path::{Path, PathBuf};

pub use cow::{journal_path, recover_commit, CowOverlay};
pub use qcow2::Qcow2File;
pub use raw::RawFile;

/// Format of a disk image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// The disk is the file's bytes.
    #[default]
    Raw,
    /// qcow2 version 2 or 3 ([`Qcow2File`]).
    Qcow2,
}

/// Open the image `path` of `format` directly (no disk mode).
pub fn open_image(
    path: &Path,
    format: ImageFormat,
    read_only: bool,
) -> Result<Box<dyn BlockBackend>, BlockError> {
    Ok(match format {
        ImageFormat::Raw => Box::new(RawFile::open(path, read_only)?),
        ImageFormat::Qcow2 => Box::new(Qcow2File::open(path, read_only)?),
    })
}

/// Errors of the disk back-ends.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The access `offset..offset+len` lies outside the disk.
    #[error("access at {offset:#x}+{len:#x} beyond the end of the disk ({size:#x} bytes)")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Disk size in bytes.
        size: u64,
    },
    /// A write to a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// Host I/O error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The host file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A disk image as a flat array of bytes.
pub trait BlockBackend: Send + std::fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Read `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Write `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), BlockError>;
    /// Make every completed write durable (fsync).
    fn flush(&mut self) -> Result<(), BlockError>;
    /// Make `offset..offset+len` read back as zeros (writes zeros; host storage stays
    /// allocated as the back-end sees fit). Errors as [`BlockBackend::write_at`].
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        write_zeroes_by_writes(self, offset, len)
    }
    /// Deallocate `offset..offset+len` (SCSI UNMAP, WRITE SAME with UNMAP): afterwards the
    /// range reads back as zeros, and the back-end releases host storage where it can (raw:
    /// punched holes; qcow2: discarded clusters). The default writes zeros. Errors as
    /// [`BlockBackend::write_at`].
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.write_zeroes(offset, len)
    }
    /// Power-off: the overlay of a nonpersistent or undoable disk is discarded or committed
    /// here. The default flushes.
    fn power_off(&mut self) -> Result<(), BlockError> {
        self.flush()
    }
}

/// [`BlockBackend::write_zeroes`] by plain writes of a zero buffer (at most 1 MiB at a time).
pub(crate) fn write_zeroes_by_writes<B: BlockBackend + ?Sized>(
    b: &mut B,
    offset: u64,
    len: u64,
) -> Result<(), BlockError> {
    if b.read_only() {
        return Err(BlockError::ReadOnly);
    }
    check_span(offset, len, b.size())?;
    let end = offset + len;
    let zeros = vec![0u8; (len.min(1 << 20)) as usize];
    let mut pos = offset;
    while pos < end {
        let n = (end - pos).min(zeros.len() as u64) as usize;
        b.write_at(pos, &zeros[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// Check that `offset..offset+len` (a 64-bit length: discards) lies within `size` bytes.
pub(crate) fn check_span(offset: u64, len: u64, size: u64) -> Result<(), BlockError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

/// Check that `offset..offset+len` lies within `size` bytes.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> Result<(), BlockError> {
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

/// A disk held in host memory (tests, scratch disks).
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    /// Contents.
    pub data: Vec<u8>,
    /// Refuse writes.
    pub read_only: bool,
    /// Number of `flush` calls (tests check that FUA / SYNCHRONIZE CACHE reach the back-end).
    pub flushes: u64,
}

impl MemDisk {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            data: vec![0; size],
            ..Self::default()
        }
    }
}

impl BlockBackend for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.data[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, buf.len(), self.size())?;
        let o = offset as usize;
        self.data[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.flushes += 1;
        Ok(())
    }
}

/// What happens to a guest's writes (the disk modes of classic VMMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    /// Writes go straight to the image.
    Persistent,
    /// Writes go to a copy-on-write overlay that is discarded at power-off; the image is
    /// never written.
    Nonpersistent,
    /// Writes go to a copy-on-write overlay that is committed into the image at power-off
    /// when `keep` is true, discarded otherwise.
    Undoable {
        /// Commit the overlay at power-off.
        keep: bool,
    },
}

/// Open the image `path` of `format` in `mode`. `read_only` opens the image read-only (guest
/// writes then fail with DATA PROTECT); nonpersistent and undoable disks open the image
/// read-only until an undoable commit, and keep their overlay in a temporary file.
pub fn open(
    path: &Path,
    format: ImageFormat,
    mode: DiskMode,
    read_only: bool,
) -> Result<Box<dyn BlockBackend>, BlockError> {
    // An undoable commit a crash interrupted is finished first (all of it or, when its
    // journal never became complete, none), whatever mode the image is opened in now.
    if !read_only || mode != DiskMode::Persistent {
        recover_commit(path, format)?;
    }
    match mode {
        DiskMode::Persistent => open_image(path, format, read_only),
        DiskMode::Nonpersistent => {
            let base = open_image(path, format, true)?;
            Ok(Box::new(CowOverlay::new_temp(base, None)?))
        }
        DiskMode::Undoable { keep } => {
            let base = open_image(path, format, true)?;
            let commit_to = (keep && !read_only).then(|| (path.to_path_buf(), format));
            Ok(Box::new(CowOverlay::new_temp(base, commit_to)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_disk_bounds() {
        let mut d = MemDisk::new(1024);
        let mut b = [0u8; 16];
        assert!(d.read_at(1008, &mut b).is_ok());
        assert!(matches!(
            d.read_at(1009, &mut b),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.write_at(u64::MAX, &b),
            Err(BlockError::OutOfRange { .. })
        ));
        d.read_only = true;
        assert!(matches!(d.write_at(0, &b), Err(BlockError::ReadOnly)));
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// A file name in the temp directory, removed on drop.
    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new(tag: &str) -> Self {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Self(std::env::temp_dir().join(format!("rinx-test-{tag}-{}-{n}", std::process::id())))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
