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
