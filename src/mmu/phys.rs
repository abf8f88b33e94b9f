//! Guest physical memory: PA -> MA.
//!
//! RAM is a set of memmap2 anonymous mappings placed in the guest physical address space (below
//! and above the PCI hole). Any guest physical address that no RAM region covers is reported to
//! the caller, which dispatches it to the MMIO bus (DESIGN.md "Memory").

use memmap2::MmapMut;
use thiserror::Error;

/// Errors from building or accessing guest physical memory.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MemError {
    /// The host refused the anonymous mapping (size in bytes).
    #[error("cannot map {0} bytes of guest RAM")]
    Map(u64),
    /// RAM regions overlap or are not page aligned.
    #[error("invalid RAM layout: {0}")]
    Layout(&'static str),
    /// A guest physical range is not entirely inside one RAM region.
    #[error("guest physical range {addr:#x}+{len:#x} is not RAM")]
    NotRam { addr: u64, len: u64 },
}

/// One contiguous block of guest RAM.
#[derive(Debug)]
struct Region {
    base: u64,
    map: MmapMut,
}

/// Where a guest physical page lives: the region index and the byte offset of the page in it.
/// This is what the TLB caches as the "MA" of a page (safe indices instead of raw pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPage {
    pub region: u32,
    pub offset: u64,
}

/// Guest physical memory: RAM regions, sorted by base.
#[derive(Debug)]
pub struct GuestMemory {
    regions: Vec<Region>,
}

/// Size of a guest page (bytes).
pub const PAGE_SIZE: u64 = 4096;

impl GuestMemory {
    /// Builds guest RAM from `(base, size)` pairs in bytes; bases and sizes must be 4 KiB
    /// aligned and the ranges must not overlap.
    pub fn new(layout: &[(u64, u64)]) -> Result<Self, MemError> {
        let mut regions = Vec::new();
        let mut sorted = layout.to_vec();
        sorted.sort();
        let mut end = 0u64;
        for &(base, size) in &sorted {
            if base % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || size == 0 {
                return Err(MemError::Layout(
                    "regions must be non-empty and page aligned",
                ));
            }
            if base < end {
                return Err(MemError::Layout("regions overlap"));
            }
            end = base
                .checked_add(size)
                .ok_or(MemError::Layout("region wraps"))?;
            let len = usize::try_from(size).map_err(|_| MemError::Map(size))?;
            let map = MmapMut::map_anon(len).map_err(|_| MemError::Map(size))?;
            regions.push(Region { base, map });
        }
        Ok(GuestMemory { regions })
    }

    /// Convenience: `size` bytes of RAM at 0 (tests, small guests).
    pub fn flat(size: u64) -> Result<Self, MemError> {
        Self::new(&[(0, size)])
    }

    /// The RAM regions as `(base, size)` in bytes.
    pub fn layout(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .map(|r| (r.base, r.map.len() as u64))
            .collect()
    }

    /// Finds the RAM page holding `gpa` (None: not RAM, i.e. MMIO or unassigned).
    pub fn page(&self, gpa: u64) -> Option<HostPage> {
        let page = gpa & !(PAGE_SIZE - 1);
        let idx = self.regions.partition_point(|r| r.base <= page);
        let r = self.regions.get(idx.checked_sub(1)?)?;
        let off = page - r.base;
        (off < r.map.len() as u64).then_some(HostPage {
            region: (idx - 1) as u32,
            offset: off,
        })
    }

    /// Host address of one RAM page (for the JIT's inline TLB; dereferenced only by generated
    /// code, which stays within the 4096 bytes). Stable for the life of `self`: regions are
    /// never remapped.
    pub fn host_page_addr(&self, hp: HostPage) -> usize {
        self.regions[hp.region as usize].map.as_ptr() as usize + hp.offset as usize
    }

    /// An identity of this memory for caches of host addresses (the first region's address).
    pub fn host_ident(&self) -> usize {
        self.regions.first().map_or(0, |r| r.map.as_ptr() as usize)
    }

    /// The bytes of one RAM page.
    pub fn page_slice(&self, hp: HostPage) -> &[u8] {
        let o = hp.offset as usize;
        &self.regions[hp.region as usize].map[o..o + PAGE_SIZE as usize]
    }

    /// The bytes of one RAM page, writable.
    pub fn page_slice_mut(&mut self, hp: HostPage) -> &mut [u8] {
        let o = hp.offset as usize;
        &mut self.regions[hp.region as usize].map[o..o + PAGE_SIZE as usize]
    }

    fn range(&self, gpa: u64, len: usize) -> Result<(usize, usize), MemError> {
        let err = MemError::NotRam {
            addr: gpa,
            len: len as u64,
        };
        let idx = self.regions.partition_point(|r| r.base <= gpa);
        let ri = idx.checked_sub(1).ok_or(err.clone())?;
        let r = &self.regions[ri];
        let off = gpa - r.base;
        let end = off.checked_add(len as u64).ok_or(err.clone())?;
        if end > r.map.len() as u64 {
            return Err(err);
        }
        Ok((ri, off as usize))
    }

    /// Reads `buf.len()` bytes at `gpa`; the range must lie in one RAM region.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let (ri, off) = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.regions[ri].map[off..off + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `gpa`; the range must lie in one RAM region.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let (ri, off) = self.range(gpa, data.len())?;
        self.regions[ri].map[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Reads a little-endian value of `size` bytes (1, 2, 4 or 8).
    pub fn read_le(&self, gpa: u64, size: usize) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b[..size])?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes the low `size` bytes (1, 2, 4 or 8) of `value`, little-endian.
    pub fn write_le(&mut self, gpa: u64, size: usize, value: u64) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes()[..size])
    }
}

impl Clone for MemError {
    fn clone(&self) -> Self {
        match self {
            MemError::Map(s) => MemError::Map(*s),
            MemError::Layout(s) => MemError::Layout(s),
            MemError::NotRam { addr, len } => MemError::NotRam {
                addr: *addr,
                len: *len,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_layout_and_holes() {
        let mut m = GuestMemory::new(&[(0, 0x10000), (0x100000, 0x2000)]).unwrap();
        assert!(m.page(0xffff).is_some());
        assert!(m.page(0x10000).is_none());
        assert!(m.page(0x101fff).is_some());
        assert!(m.page(0x102000).is_none());
        m.write_le(0x100ffe, 4, 0x1122_3344).unwrap();
        assert_eq!(m.read_le(0x100ffe, 4).unwrap(), 0x1122_3344);
        assert!(m.write(0xfffe, &[0; 4]).is_err());
        assert!(GuestMemory::new(&[(0, 0x2000), (0x1000, 0x1000)]).is_err());
    }
}
