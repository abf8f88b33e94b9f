//! Guest physical memory as devices see it for DMA. Every access is bounds-checked by the
//! implementation: a guest-supplied address outside RAM is an error value, never a host
//! out-of-bounds access.

/// A DMA access outside guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DMA access at {addr:#x}+{len:#x} outside guest RAM")]
pub struct DmaError {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Guest RAM for device DMA.
pub trait GuestMemory {
    /// Read `buf.len()` bytes at guest physical `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    /// Write `data` at guest physical `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError>;
    /// Whether `addr..addr+len` lies entirely in guest RAM.
    fn check(&self, addr: u64, len: u64) -> Result<(), DmaError>;

    /// Little-endian u16 at `addr`.
    fn read_u16(&self, addr: u64) -> Result<u16, DmaError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Little-endian u32 at `addr`.
    fn read_u32(&self, addr: u64) -> Result<u32, DmaError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Little-endian u64 at `addr`.
    fn read_u64(&self, addr: u64) -> Result<u64, DmaError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Store a little-endian u16.
    fn write_u16(&mut self, addr: u64, v: u16) -> Result<(), DmaError> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Store a little-endian u32.
    fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), DmaError> {
        self.write(addr, &v.to_le_bytes())
    }
}

/// Guest RAM as one flat vector starting at address 0 (tests, fuzzing).
#[derive(Debug, Clone)]
pub struct FlatMemory(pub Vec<u8>);

impl FlatMemory {
    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, DmaError> {
        let err = DmaError {
            addr,
            len: len as u64,
        };
        let start = usize::try_from(addr).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.0.len() {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl GuestMemory for FlatMemory {
    fn check(&self, addr: u64, len: u64) -> Result<(), DmaError> {
        let l = usize::try_from(len).map_err(|_| DmaError { addr, len })?;
        self.range(addr, l).map(|_| ())
    }
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        let r = self.range(addr, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }
}
