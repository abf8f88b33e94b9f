//! Guest physical memory access for firmware writers.
//!
//! The firmware crate has no CPU or RAM knowledge: it writes boot structures through
//! [`GuestMemWrite`], which the machine crate implements over its RAM mapping and tests implement
//! with [`VecMemory`].

use thiserror::Error;

/// Errors from guest memory writes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemError {
    /// A write fell (partly) outside guest RAM.
    #[error("guest physical write of {len:#x} bytes at {gpa:#x} is outside guest RAM")]
    OutOfRange {
        /// Guest physical address of the write.
        gpa: u64,
        /// Length of the write in bytes.
        len: u64,
    },
}

/// Write access to guest physical memory (RAM only; MMIO is never a firmware target).
pub trait GuestMemWrite {
    /// Copies `data` to guest physical address `gpa`. Must fail (not panic) if any byte of
    /// `[gpa, gpa + data.len())` is not backed by RAM.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;
}

/// Flat guest RAM `[0, len)` in a `Vec<u8>`: for tests and tools.
#[derive(Debug, Clone)]
pub struct VecMemory {
    bytes: Vec<u8>,
}

impl VecMemory {
    /// Zero-filled RAM of `len` bytes starting at guest physical address 0.
    pub fn new(len: usize) -> Self {
        Self {
            bytes: vec![0; len],
        }
    }

    /// All of RAM.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// `len` bytes at `gpa`, or `None` if out of range.
    pub fn read(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(gpa).ok()?;
        let end = start.checked_add(len)?;
        self.bytes.get(start..end)
    }

    /// Little-endian u16 at `gpa` (0 if out of range).
    pub fn read_u16(&self, gpa: u64) -> u16 {
        self.read(gpa, 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// Little-endian u32 at `gpa` (0 if out of range).
    pub fn read_u32(&self, gpa: u64) -> u32 {
        self.read(gpa, 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Little-endian u64 at `gpa` (0 if out of range).
    pub fn read_u64(&self, gpa: u64) -> u64 {
        self.read(gpa, 8).map_or(0, |b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }
}

impl GuestMemWrite for VecMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let err = MemError::OutOfRange {
            gpa,
            len: data.len() as u64,
        };
        let start = usize::try_from(gpa).map_err(|_| err.clone())?;
        let end = start.checked_add(data.len()).ok_or(err.clone())?;
        let dst = self.bytes.get_mut(start..end).ok_or(err)?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

/// Little-endian byte-buffer helpers for building tables.
pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u16(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}
pub(crate) fn get_u32(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}
pub(crate) fn get_u64(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// Byte sum checksum fix-up: the value that makes `bytes` sum to zero mod 256.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_memory_bounds() {
        let mut m = VecMemory::new(16);
        assert!(m.write(12, &[1, 2, 3, 4]).is_ok());
        assert_eq!(m.read_u32(12), 0x0403_0201);
        assert_eq!(
            m.write(13, &[0; 4]),
            Err(MemError::OutOfRange { gpa: 13, len: 4 })
        );
        assert!(m.write(u64::MAX, &[0]).is_err());
    }

    #[test]
    fn checksum_zeroes_sum() {
        let mut b = [1u8, 2, 250, 0];
        b[3] = checksum(&b[..3]);
        assert_eq!(b.iter().fold(0u8, |a, &x| a.wrapping_add(x)), 0);
    }
}
