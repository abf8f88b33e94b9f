//! Copy-on-write overlay over a read-only base disk: the nonpersistent and undoable modes.
//!
//! The overlay store is a sparse temporary file of the base's size; a bitmap in host memory
//! records which clusters the guest has written. Reads take each cluster from the overlay or
//! the base; the first write to a cluster copies it from the base (read-modify-write) unless
//! the write covers it entirely. The base is never opened for writing until an undoable
//! commit at power-off, so a crash (even SIGKILL) before the commit leaves it intact.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{check_range, BlockBackend, BlockError, RawFile};

/// Granularity of the overlay (bytes).
pub const CLUSTER: u64 = 4096;

/// Where an undoable overlay is committed at power-off.
#[derive(Debug)]
enum Commit {
    /// Discard at power-off (nonpersistent, undoable-discard).
    Discard,
    /// Reopen this image read-write and copy the overlay into it.
    Path(PathBuf),
    /// Copy the overlay into this back-end (tests).
    Backend(Box<dyn BlockBackend>),
}

/// A copy-on-write overlay; see the module documentation.
#[derive(Debug)]
pub struct CowOverlay {
    base: Box<dyn BlockBackend>,
    store: Box<dyn BlockBackend>,
    /// Store file to delete on drop (hosts that cannot unlink an open file).
    remove_on_drop: Option<PathBuf>,
    present: Vec<u64>,
    commit: Commit,
    done: bool,
}

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

impl CowOverlay {
    /// An overlay over `base` whose store is a new temporary file. At power-off the overlay
    /// is committed into the image at `commit_to` if given, discarded otherwise.
    pub fn new_temp(
        base: Box<dyn BlockBackend>,
        commit_to: Option<PathBuf>,
    ) -> Result<Self, BlockError> {
        let path = std::env::temp_dir().join(format!(
            "rinx-overlay-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what, source| BlockError::Io {
            what,
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io("cannot create overlay", e))?;
        file.set_len(base.size())
            .map_err(|e| io("cannot size overlay", e))?;
        // On Unix the open file outlives its name: unlink it now so that nothing is left
        // behind even if rinx is killed.
        let remove_on_drop = if cfg!(unix) {
            std::fs::remove_file(&path).map_err(|e| io("cannot unlink overlay", e))?;
            None
        } else {
            Some(path.clone())
        };
        let size = base.size();
        let store = Box::new(RawFile::from_file(file, path, size));
        let commit = commit_to.map_or(Commit::Discard, Commit::Path);
        let mut s = Self::with_store(base, store, None);
        s.commit = commit;
        s.remove_on_drop = remove_on_drop;
        Ok(s)
    }

    /// An overlay over `base` kept in `store` (at least as large as `base`); at power-off it
    /// is committed into `commit` if given, discarded otherwise.
    pub fn with_store(
        base: Box<dyn BlockBackend>,
        store: Box<dyn BlockBackend>,
        commit: Option<Box<dyn BlockBackend>>,
    ) -> Self {
        let clusters = base.size().div_ceil(CLUSTER);
        Self {
            base,
            store,
            remove_on_drop: None,
            present: vec![0; clusters.div_ceil(64) as usize],
            commit: commit.map_or(Commit::Discard, Commit::Backend),
            done: false,
        }
    }

    fn is_present(&self, cluster: u64) -> bool {
        self.present[(cluster / 64) as usize] & (1 << (cluster % 64)) != 0
    }

    fn set_present(&mut self, cluster: u64) {
        self.present[(cluster / 64) as usize] |= 1 << (cluster % 64);
    }

    /// Number of clusters the guest has written.
    pub fn dirty_clusters(&self) -> u64 {
        self.present.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Split `offset..offset+len` into per-cluster pieces `(cluster, offset, len, buffer
    /// start)`.
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, u64, usize, usize)> {
        let end = offset + len as u64;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let cluster = pos / CLUSTER;
            let next = ((cluster + 1) * CLUSTER).min(end);
            let piece = (cluster, pos, (next - pos) as usize, (pos - offset) as usize);
            pos = next;
            Some(piece)
        })
    }

    fn cluster_len(&self, cluster: u64) -> usize {
        (self.base.size() - cluster * CLUSTER).min(CLUSTER) as usize
    }

    fn commit_into(&mut self, target: &mut dyn BlockBackend) -> Result<(), BlockError> {
        let mut buf = vec![0u8; CLUSTER as usize];
        let clusters = self.base.size().div_ceil(CLUSTER);
        for cluster in 0..clusters {
            if !self.is_present(cluster) {
                continue;
            }
            let len = self.cluster_len(cluster);
            self.store.read_at(cluster * CLUSTER, &mut buf[..len])?;
            target.write_at(cluster * CLUSTER, &buf[..len])?;
        }
        target.flush()
    }
}

impl BlockBackend for CowOverlay {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size())?;
        for (cluster, pos, len, at) in Self::pieces(offset, buf.len()) {
            let dst = &mut buf[at..at + len];
            if self.is_present(cluster) {
                self.store.read_at(pos, dst)?;
            } else {
                self.base.read_at(pos, dst)?;
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        check_range(offset, buf.len(), self.size())?;
        let mut tmp = Vec::new();
        for (cluster, pos, len, at) in Self::pieces(offset, buf.len()) {
            let src = &buf[at..at + len];
            let cluster_len = self.cluster_len(cluster);
            if self.is_present(cluster) || len == cluster_len {
                self.store.write_at(pos, src)?;
            } else {
                // First partial write to this cluster: copy it up from the base.
                tmp.resize(cluster_len, 0);
                let start = cluster * CLUSTER;
                self.base.read_at(start, &mut tmp)?;
                let o = (pos - start) as usize;
                tmp[o..o + len].copy_from_slice(src);
                self.store.write_at(start, &tmp)?;
            }
            self.set_present(cluster);
        }
        Ok(())
    }

    /// The overlay is, by design, not durable before an undoable commit (its cluster map
    /// lives in host memory), so a flush has nothing to make stable; the base is read-only.
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }

    fn power_off(&mut self) -> Result<(), BlockError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        match std::mem::replace(&mut self.commit, Commit::Discard) {
            Commit::Discard => {}
            Commit::Path(path) => {
                let mut target = RawFile::open(&path, false)?;
                self.commit_into(&mut target)?;
                log::info!(target: "devices::block", "committed {} clusters to {}",
                    self.dirty_clusters(), path.display());
            }
            Commit::Backend(mut target) => {
                self.commit_into(target.as_mut())?;
                self.commit = Commit::Backend(target);
            }
        }
        self.present.fill(0);
        Ok(())
    }
}

impl Drop for CowOverlay {
    fn drop(&mut self) {
        if let Some(p) = self.remove_on_drop.take() {
            // Close the store first: Windows cannot delete an open file.
            self.store = Box::new(super::MemDisk::default());
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::testutil::TempPath;
    use crate::block::MemDisk;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn reads_through_and_copies_on_write() {
        let size = 3 * CLUSTER as usize + 512;
        let base = MemDisk {
            data: pattern(size),
            read_only: true,
            flushes: 0,
        };
        let mut o = CowOverlay::with_store(Box::new(base), Box::new(MemDisk::new(size)), None);
        let mut b = vec![0u8; size];
        o.read_at(0, &mut b).unwrap();
        assert_eq!(b, pattern(size));
        // A write straddling clusters 0 and 1, partial in both.
        o.write_at(4000, &[0xaa; 200]).unwrap();
        // The tail cluster (512 bytes) written whole.
        o.write_at(3 * CLUSTER, &[0xbb; 512]).unwrap();
        assert_eq!(o.dirty_clusters(), 3);
        o.read_at(0, &mut b).unwrap();
        let mut want = pattern(size);
        want[4000..4200].fill(0xaa);
        want[3 * CLUSTER as usize..].fill(0xbb);
        assert_eq!(b, want);
        assert!(o.write_at(size as u64 - 1, &[0, 0]).is_err());
        o.power_off().unwrap();
        // Discarded: the base shows through again.
        o.read_at(0, &mut b).unwrap();
        assert_eq!(b, pattern(size));
    }

    #[test]
    fn undoable_commit_into_backend() {
        let size = 2 * CLUSTER as usize;
        let base = MemDisk {
            data: pattern(size),
            read_only: true,
            flushes: 0,
        };
        let target = MemDisk::new(size);
        let mut o = CowOverlay::with_store(
            Box::new(base),
            Box::new(MemDisk::new(size)),
            Some(Box::new(target)),
        );
        o.write_at(10, b"xyz").unwrap();
        o.power_off().unwrap();
        let Commit::Backend(t) = &o.commit else {
            panic!("commit target kept");
        };
        let t = format!("{t:?}");
        assert!(t.contains("flushes: 1"), "{t}");
    }

    #[test]
    fn temp_file_modes_leave_base_untouched_or_commit() {
        let t = TempPath::new("cow");
        let orig = pattern(64 * 1024);
        std::fs::write(&t.0, &orig).unwrap();
        for (mode, expect_written) in [
            (super::super::DiskMode::Nonpersistent, false),
            (super::super::DiskMode::Undoable { keep: false }, false),
            (super::super::DiskMode::Undoable { keep: true }, true),
        ] {
            std::fs::write(&t.0, &orig).unwrap();
            let mut d = super::super::open(&t.0, mode, false).unwrap();
            d.write_at(5000, b"guest data").unwrap();
            d.flush().unwrap();
            let mut b = [0u8; 10];
            d.read_at(5000, &mut b).unwrap();
            assert_eq!(&b, b"guest data");
            assert_eq!(
                std::fs::read(&t.0).unwrap(),
                orig,
                "{mode:?} before power-off"
            );
            d.power_off().unwrap();
            drop(d);
            let now = std::fs::read(&t.0).unwrap();
            assert_eq!(
                &now[5000..5010] == b"guest data",
                expect_written,
                "{mode:?}"
            );
            assert_eq!(now.len(), orig.len());
        }
        // Persistent writes through.
        std::fs::write(&t.0, &orig).unwrap();
        let mut d = super::super::open(&t.0, super::super::DiskMode::Persistent, false).unwrap();
        d.write_at(0, b"p").unwrap();
        d.power_off().unwrap();
        assert_eq!(std::fs::read(&t.0).unwrap()[0], b'p');
    }
}
