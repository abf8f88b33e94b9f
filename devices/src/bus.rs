//! Port-I/O and MMIO dispatch.
//!
//! Port I/O goes through a flat table of 65536 entries (port -> device slot and the offset that
//! device sees), so a dispatch is two array loads and a virtual call with `&mut` access. A device
//! may be mapped at several port windows; each window says which device offset its first port is,
//! so e.g. the PIC pair sees 0-1 (master), 2-3 (slave), 4-5 (ELCR). MMIO ranges are kept sorted
//! and looked up by binary search. Unclaimed ports read as all ones (an undriven ISA bus floats
//! high) and are logged once per port.

use std::any::Any;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An x86 I/O port number (Intel SDM Vol. 1 §19.2, "I/O port addressing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Port(pub u16);

/// Identifies a device registered on a [`Bus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(usize);

/// Errors when registering devices.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// A port window overlaps one already mapped.
    #[error("port {port:#x} is already claimed")]
    PortInUse {
        /// First conflicting port.
        port: u16,
    },
    /// A port window runs past port 0xFFFF or is empty.
    #[error("port window {base:#x}+{len} is invalid")]
    BadPortWindow {
        /// Window base.
        base: u16,
        /// Window length.
        len: u32,
    },
    /// An MMIO range overlaps one already mapped, is empty or wraps.
    #[error("MMIO range {base:#x}+{len:#x} overlaps or is invalid")]
    BadMmioRange {
        /// Range base.
        base: u64,
        /// Range length.
        len: u64,
    },
    /// The device id does not name a device of the right kind.
    #[error("no such device")]
    NoSuchDevice,
}

/// Upcast helper so the machine can reach a concrete device through the bus.
pub trait AsAny: Any {
    /// `self` as `&dyn Any`.
    fn as_any(&self) -> &dyn Any;
    /// `self` as `&mut dyn Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A device reached through x86 port I/O (IN/OUT/INS/OUTS, Intel SDM Vol. 1 §19.2).
///
/// `offset` is relative to the device's register block; `size` is 1, 2 or 4 bytes. A read
/// returns the value in the low `size` bytes (the bus masks the rest). Implementations must
/// accept any offset and size without panicking.
pub trait PioDevice: AsAny + Send {
    /// Guest `IN` of `size` bytes at `offset`.
    fn read(&mut self, offset: u16, size: u8) -> u32;
    /// Guest `OUT` of `size` bytes at `offset`.
    fn write(&mut self, offset: u16, size: u8, value: u32);
    /// Advance device time to `now_ns` (raise timer interrupts that fell due).
    fn tick(&mut self, _now_ns: u64) {}
    /// The earliest virtual time (ns) at which this device has something to do, if any.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}

/// A device reached through memory-mapped I/O. `offset` is relative to the range base.
pub trait MmioDevice: AsAny + Send {
    /// Guest load of `size` bytes (1, 2, 4 or 8) at `offset`.
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// Guest store of `size` bytes at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64);
    /// Advance device time to `now_ns`.
    fn tick(&mut self, _now_ns: u64) {}
    /// The earliest virtual time (ns) at which this device has something to do, if any.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}

const NO_SLOT: u16 = u16::MAX;

#[derive(Debug, Clone, Copy)]
struct PortEntry {
    slot: u16,
    offset: u16,
}

#[derive(Debug, Clone, Copy)]
struct MmioRange {
    base: u64,
    len: u64,
    slot: usize,
}

/// All-ones value of an access of `size` bytes.
pub fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// The I/O bus of one machine.
pub struct Bus {
    ports: Vec<PortEntry>,
    pio: Vec<Box<dyn PioDevice>>,
    mmio_ranges: Vec<MmioRange>,
    mmio: Vec<Box<dyn MmioDevice>>,
    warned_ports: Vec<u64>,
    warned_mmio: HashSet<u64>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("pio_devices", &self.pio.len())
            .field("mmio_ranges", &self.mmio_ranges)
            .finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

/// Mask a 32-bit value to an access of `size` bytes.
fn mask32(value: u32, size: u8) -> u32 {
    value & all_ones(size)
}

impl Bus {
    /// An empty bus: every port reads all ones.
    pub fn new() -> Self {
        Self {
            ports: vec![
                PortEntry {
                    slot: NO_SLOT,
                    offset: 0
                };
                1 << 16
            ],
            pio: Vec::new(),
            mmio_ranges: Vec::new(),
            mmio: Vec::new(),
            warned_ports: vec![0; (1 << 16) / 64],
            warned_mmio: HashSet::new(),
        }
    }

    /// Add a port-I/O device (not yet mapped at any port).
    pub fn add_pio(&mut self, dev: Box<dyn PioDevice>) -> DeviceId {
        self.pio.push(dev);
        DeviceId(self.pio.len() - 1)
    }

    /// Map ports `base..base+len` to device `id`; port `base + i` is seen as offset
    /// `dev_offset + i`.
    pub fn map_pio(
        &mut self,
        id: DeviceId,
        base: u16,
        len: u16,
        dev_offset: u16,
    ) -> Result<(), BusError> {
        if id.0 >= self.pio.len() || id.0 >= usize::from(NO_SLOT) {
            return Err(BusError::NoSuchDevice);
        }
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 1 << 16 || u32::from(dev_offset) + u32::from(len) > 1 << 16 {
            return Err(BusError::BadPortWindow {
                base,
                len: u32::from(len),
            });
        }
        for p in base..=(end - 1) as u16 {
            if self.ports[usize::from(p)].slot != NO_SLOT {
                return Err(BusError::PortInUse { port: p });
            }
        }
        for i in 0..len {
            self.ports[usize::from(base + i)] = PortEntry {
                slot: id.0 as u16,
                offset: dev_offset + i,
            };
        }
        Ok(())
    }

    /// Add a device and map it at each `(base, len, dev_offset)` window.
    pub fn add_pio_at(
        &mut self,
        dev: Box<dyn PioDevice>,
        windows: &[(u16, u16, u16)],
    ) -> Result<DeviceId, BusError> {
        let id = self.add_pio(dev);
        for &(base, len, off) in windows {
            self.map_pio(id, base, len, off)?;
        }
        Ok(id)
    }

    /// Add an MMIO device at `base..base+len`.
    pub fn add_mmio(
        &mut self,
        base: u64,
        len: u64,
        dev: Box<dyn MmioDevice>,
    ) -> Result<DeviceId, BusError> {
        let bad = BusError::BadMmioRange { base, len };
        let Some(end) = base.checked_add(len) else {
            return Err(bad);
        };
        if len == 0 {
            return Err(bad);
        }
        let pos = self.mmio_ranges.partition_point(|r| r.base < base);
        if pos > 0 {
            let prev = self.mmio_ranges[pos - 1];
            if prev.base + prev.len > base {
                return Err(bad);
            }
        }
        if let Some(next) = self.mmio_ranges.get(pos) {
            if next.base < end {
                return Err(bad);
            }
        }
        self.mmio.push(dev);
        let slot = self.mmio.len() - 1;
        self.mmio_ranges.insert(pos, MmioRange { base, len, slot });
        Ok(DeviceId(slot))
    }

    /// Whether `port` is claimed by a device.
    pub fn port_claimed(&self, port: Port) -> bool {
        self.ports[usize::from(port.0)].slot != NO_SLOT
    }

    fn warn_port(&mut self, port: u16, what: &str) {
        let (w, b) = (usize::from(port) / 64, port % 64);
        if self.warned_ports[w] & (1 << b) == 0 {
            self.warned_ports[w] |= 1 << b;
            log::warn!(target: "devices::bus", "{what} of unclaimed port {port:#06x}");
        }
    }

    /// Guest `IN` of `size` (1, 2 or 4) bytes from `port`. Unclaimed ports read all ones.
    pub fn pio_read(&mut self, port: Port, size: u8) -> u32 {
        let size = normalize_size(size);
        let e = self.ports[usize::from(port.0)];
        if e.slot == NO_SLOT {
            self.warn_port(port.0, "read");
            return all_ones(size);
        }
        let v = self.pio[usize::from(e.slot)].read(e.offset, size);
        mask32(v, size)
    }

    /// Guest `OUT` of `size` bytes to `port`. Writes to unclaimed ports are dropped.
    pub fn pio_write(&mut self, port: Port, size: u8, value: u32) {
        let size = normalize_size(size);
        let e = self.ports[usize::from(port.0)];
        if e.slot == NO_SLOT {
            self.warn_port(port.0, "write");
            return;
        }
        self.pio[usize::from(e.slot)].write(e.offset, size, mask32(value, size));
    }

    fn find_mmio(&self, addr: u64) -> Option<(usize, u64)> {
        let pos = self.mmio_ranges.partition_point(|r| r.base <= addr);
        let r = self.mmio_ranges.get(pos.checked_sub(1)?)?;
        (addr - r.base < r.len).then_some((r.slot, addr - r.base))
    }

    /// Whether guest-physical `addr` is claimed by an MMIO device.
    pub fn mmio_claimed(&self, addr: u64) -> bool {
        self.find_mmio(addr).is_some()
    }

    /// Guest load from MMIO address `addr`; unclaimed addresses read all ones.
    pub fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        match self.find_mmio(addr) {
            Some((slot, off)) => self.mmio[slot].read(off, size),
            None => {
                if self.warned_mmio.insert(addr) {
                    log::warn!(target: "devices::bus", "read of unclaimed MMIO {addr:#x}");
                }
                match size {
                    8 => u64::MAX,
                    s => u64::from(all_ones(s)),
                }
            }
        }
    }

    /// Guest store to MMIO address `addr`; unclaimed addresses drop the write.
    pub fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        match self.find_mmio(addr) {
            Some((slot, off)) => self.mmio[slot].write(off, size, value),
            None => {
                if self.warned_mmio.insert(addr) {
                    log::warn!(target: "devices::bus", "write of unclaimed MMIO {addr:#x}");
                }
            }
        }
    }

    /// Advance every device to `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        for d in &mut self.pio {
            d.tick(now_ns);
        }
        for d in &mut self.mmio {
            d.tick(now_ns);
        }
    }

    /// The earliest deadline of any device (ns of virtual time): HLT may sleep until then.
    pub fn next_deadline(&self) -> Option<u64> {
        let p = self.pio.iter().filter_map(|d| d.next_deadline());
        let m = self.mmio.iter().filter_map(|d| d.next_deadline());
        p.chain(m).min()
    }

    /// Typed access to a port-I/O device (e.g. the PIC, to poll for interrupts).
    pub fn pio_device_mut<T: PioDevice>(&mut self, id: DeviceId) -> Option<&mut T> {
        (**self.pio.get_mut(id.0)?).as_any_mut().downcast_mut::<T>()
    }

    /// Typed shared access to a port-I/O device.
    pub fn pio_device<T: PioDevice>(&self, id: DeviceId) -> Option<&T> {
        (**self.pio.get(id.0)?).as_any().downcast_ref::<T>()
    }

    /// Typed access to an MMIO device.
    pub fn mmio_device_mut<T: MmioDevice>(&mut self, id: DeviceId) -> Option<&mut T> {
        (**self.mmio.get_mut(id.0)?)
            .as_any_mut()
            .downcast_mut::<T>()
    }
}

/// Treat any size other than 1 or 2 as 4 (the only other width IN/OUT have).
fn normalize_size(size: u8) -> u8 {
    match size {
        1 | 2 => size,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Regs {
        last: Vec<(u16, u8, u32)>,
    }
    impl PioDevice for Regs {
        fn read(&mut self, offset: u16, _size: u8) -> u32 {
            0x1234_5600 | u32::from(offset)
        }
        fn write(&mut self, offset: u16, size: u8, value: u32) {
            self.last.push((offset, size, value));
        }
    }
    struct Mem(u64);
    impl MmioDevice for Mem {
        fn read(&mut self, offset: u64, _size: u8) -> u64 {
            self.0 + offset
        }
        fn write(&mut self, _offset: u64, _size: u8, value: u64) {
            self.0 = value;
        }
        fn next_deadline(&self) -> Option<u64> {
            Some(self.0)
        }
    }

    #[test]
    fn unclaimed_ports_read_all_ones() {
        let mut bus = Bus::new();
        assert_eq!(bus.pio_read(Port(0x1234), 1), 0xff);
        assert_eq!(bus.pio_read(Port(0x1234), 2), 0xffff);
        assert_eq!(bus.pio_read(Port(0x1234), 4), 0xffff_ffff);
        bus.pio_write(Port(0x1234), 1, 0);
        assert_eq!(bus.mmio_read(0xdead_0000, 4), 0xffff_ffff);
    }

    #[test]
    fn windows_translate_offsets_and_mask_sizes() {
        let mut bus = Bus::new();
        let id = bus
            .add_pio_at(Box::new(Regs::default()), &[(0x20, 2, 0), (0xa0, 2, 2)])
            .unwrap();
        assert_eq!(bus.pio_read(Port(0x21), 1), 0x01);
        assert_eq!(bus.pio_read(Port(0xa1), 2), 0x5603);
        bus.pio_write(Port(0xa0), 1, 0x1ff);
        let dev = bus.pio_device_mut::<Regs>(id).unwrap();
        assert_eq!(dev.last, vec![(2, 1, 0xff)]);
        assert_eq!(
            bus.map_pio(id, 0x21, 4, 0),
            Err(BusError::PortInUse { port: 0x21 })
        );
        assert!(bus.map_pio(id, 0xfffe, 4, 0).is_err());
    }

    #[test]
    fn mmio_ranges_dispatch_by_binary_search() {
        let mut bus = Bus::new();
        bus.add_mmio(0x1000, 0x100, Box::new(Mem(0))).unwrap();
        bus.add_mmio(0x3000, 0x10, Box::new(Mem(7))).unwrap();
        assert!(bus.add_mmio(0x10f0, 0x20, Box::new(Mem(0))).is_err());
        assert!(bus.add_mmio(0x2ff0, 0x11, Box::new(Mem(0))).is_err());
        assert_eq!(bus.mmio_read(0x3004, 4), 11);
        assert_eq!(bus.mmio_read(0x10ff, 4), 0xff);
        assert_eq!(bus.mmio_read(0x1100, 1), 0xff);
        bus.mmio_write(0x1000, 4, 100);
        assert_eq!(bus.next_deadline(), Some(7));
    }
}
