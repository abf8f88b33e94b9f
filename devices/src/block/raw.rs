//! Raw image files: the disk is the file's bytes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{check_range, BlockBackend, BlockError};

/// A raw image file. Opened read-only, the file is never written (nor its metadata touched
/// beyond reads); opened read-write, [`BlockBackend::flush`] is `fsync` (`File::sync_data`).
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl RawFile {
    /// Open `path`; its size is the disk size.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let io = |what, source| BlockError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| io("cannot open", e))?;
        let size = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    /// Wrap an already open file of `size` bytes (overlay stores).
    pub(crate) fn from_file(file: File, path: PathBuf, size: u64) -> Self {
        Self {
            file,
            path,
            size,
            read_only: false,
        }
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> BlockError {
        BlockError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size)?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| self.io("cannot seek in", e))?;
        self.file
            .read_exact(buf)
            .map_err(|e| self.io("cannot read", e))
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, buf.len(), self.size)?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| self.io("cannot seek in", e))?;
        self.file
            .write_all(buf)
            .map_err(|e| self.io("cannot write", e))
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| self.io("cannot fsync", e))
    }

    /// Punches a hole (Linux `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`, which
    /// zeroes partial blocks itself and keeps the file size); where the host or its file
    /// system cannot, writes zeros instead.
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        super::check_span(offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
                loop {
                    // SAFETY: the descriptor is our open file for the call's duration; the
                    // other arguments are integers (checked to fit off_t). No memory is passed.
                    let r = unsafe {
                        libc::fallocate(
                            self.file.as_raw_fd(),
                            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                            off,
                            l,
                        )
                    };
                    if r == 0 {
                        return Ok(());
                    }
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // No hole punching on this file system: write zeros.
                        Some(libc::EOPNOTSUPP | libc::ENOSYS) => break,
                        _ => return Err(self.io("cannot punch a hole in", e)),
                    }
                }
            }
        }
        super::write_zeroes_by_writes(self, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::testutil::TempPath;

    #[test]
    fn read_write_flush() {
        let t = TempPath::new("raw");
        std::fs::write(&t.0, vec![7u8; 4096]).unwrap();
        let mut d = RawFile::open(&t.0, false).unwrap();
        assert_eq!(d.size(), 4096);
        d.write_at(100, b"hello").unwrap();
        d.flush().unwrap();
        let mut b = [0u8; 7];
        d.read_at(99, &mut b).unwrap();
        assert_eq!(&b, b"\x07hello\x07");
        assert!(d.write_at(4092, b"hello").is_err());
        drop(d);
        assert_eq!(&std::fs::read(&t.0).unwrap()[100..105], b"hello");
    }

    fn allocated_bytes(p: &std::path::Path) -> u64 {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).unwrap().blocks() * 512
        }
        #[cfg(not(unix))]
        {
            std::fs::metadata(p).unwrap().len()
        }
    }

    #[test]
    fn discard_reads_zeros_and_punches_holes() {
        let t = TempPath::new("raw-discard");
        std::fs::write(&t.0, vec![9u8; 1 << 20]).unwrap();
        let mut d = RawFile::open(&t.0, false).unwrap();
        d.flush().unwrap();
        let before = allocated_bytes(&t.0);
        // Unaligned head and tail: zeroed; the aligned middle is deallocated.
        d.discard(1000, (512 << 10) + 24).unwrap();
        d.flush().unwrap();
        let mut b = vec![0u8; 1 << 20];
        d.read_at(0, &mut b).unwrap();
        assert!(b[..1000].iter().all(|&x| x == 9));
        assert!(b[1000..1000 + (512 << 10) + 24].iter().all(|&x| x == 0));
        assert!(b[1000 + (512 << 10) + 24..].iter().all(|&x| x == 9));
        assert_eq!(d.size(), 1 << 20, "KEEP_SIZE");
        let after = allocated_bytes(&t.0);
        if cfg!(target_os = "linux") && after >= before {
            eprintln!("NOTE: no hole punching on this file system ({before} -> {after})");
        } else if cfg!(target_os = "linux") {
            assert!(after + (400 << 10) <= before, "{before} -> {after}");
        }
        assert!(matches!(
            d.discard((1 << 20) - 10, 11),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.discard(u64::MAX, 2),
            Err(BlockError::OutOfRange { .. })
        ));
        d.discard(5, 0).unwrap();
        // write_zeroes (no deallocation).
        d.write_zeroes(0, 10).unwrap();
        d.read_at(0, &mut b[..11]).unwrap();
        assert_eq!(&b[..11], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        drop(d);
        let mut ro = RawFile::open(&t.0, true).unwrap();
        assert!(matches!(ro.discard(0, 512), Err(BlockError::ReadOnly)));
        assert!(matches!(ro.write_zeroes(0, 512), Err(BlockError::ReadOnly)));
        assert_eq!(std::fs::read(&t.0).unwrap()[10], 9);
    }

    #[test]
    fn read_only_untouched() {
        let t = TempPath::new("raw-ro");
        std::fs::write(&t.0, vec![1u8; 1024]).unwrap();
        let mut d = RawFile::open(&t.0, true).unwrap();
        assert!(d.read_only());
        assert!(matches!(d.write_at(0, b"x"), Err(BlockError::ReadOnly)));
        d.flush().unwrap();
        drop(d);
        assert_eq!(std::fs::read(&t.0).unwrap(), vec![1u8; 1024]);
        assert!(matches!(
            RawFile::open(&t.0.with_extension("missing"), true),
            Err(BlockError::Io { .. })
        ));
    }
}
