//! Glue shared by the NIC models: a PCI function whose registers live in one memory BAR
//! ([`BarFunction`]), its configuration-space handle for [`crate::pci::PciRoot`] and the MMIO
//! window of the NIC family in the PCI hole that routes accesses to whichever function's BAR
//! decodes them (the guest may move BARs inside the window).

use std::sync::{Arc, Mutex};

use crate::pci::PciDevice;

/// A PCI function with one 32-bit memory BAR holding its registers.
pub trait BarFunction: PciDevice + std::fmt::Debug {
    /// Guest-physical base and size (bytes) of the register BAR, if memory decoding is on.
    fn bar(&self) -> Option<(u64, u64)>;
    /// Guest load of `size` bytes (1, 2, 4, 8) at byte `offset` into the BAR.
    fn bar_read(&mut self, offset: u64, size: u8) -> u64;
    /// Guest store of `size` bytes at byte `offset` into the BAR.
    fn bar_write(&mut self, offset: u64, size: u8, value: u64);
}

impl<D: crate::virtio::VirtioDevice + 'static> BarFunction for crate::virtio::VirtioPci<D> {
    fn bar(&self) -> Option<(u64, u64)> {
        self.bar0()
    }
    fn bar_read(&mut self, offset: u64, size: u8) -> u64 {
        crate::virtio::VirtioPci::bar_read(self, offset, size)
    }
    fn bar_write(&mut self, offset: u64, size: u8, value: u64) {
        crate::virtio::VirtioPci::bar_write(self, offset, size, value)
    }
}

/// A function shared by the configuration-space bus and the MMIO window.
pub type SharedFunction = Arc<Mutex<dyn BarFunction>>;

/// Configuration-space side of a [`SharedFunction`], for [`crate::pci::PciRoot::insert`].
#[derive(Debug)]
pub struct ConfigHandle(pub SharedFunction);

impl PciDevice for ConfigHandle {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        match self.0.lock() {
            Ok(mut d) => d.config_read(offset, size),
            Err(_) => crate::bus::all_ones(size),
        }
    }
    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        if let Ok(mut d) = self.0.lock() {
            d.config_write(offset, size, value);
        }
    }
}

/// The MMIO window of a NIC family: `base` is its guest-physical start; an access is passed to
/// the first function whose BAR contains it, and reads nowhere return all ones (master abort).
#[derive(Debug)]
pub struct BarWindow {
    base: u64,
    functions: Vec<SharedFunction>,
}

impl BarWindow {
    /// A window at guest-physical `base` serving `functions`.
    pub fn new(base: u64, functions: Vec<SharedFunction>) -> Self {
        Self { base, functions }
    }

    fn with<R>(&self, offset: u64, f: impl FnOnce(&mut dyn BarFunction, u64) -> R) -> Option<R> {
        let addr = self.base.checked_add(offset)?;
        for func in &self.functions {
            let Ok(mut d) = func.lock() else { continue };
            if let Some((b, len)) = d.bar() {
                if addr >= b && addr - b < len {
                    return Some(f(&mut *d, addr - b));
                }
            }
        }
        None
    }
}

impl crate::bus::MmioDevice for BarWindow {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.with(offset, |d, o| d.bar_read(o, size))
            .unwrap_or(u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8))))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.with(offset, |d, o| d.bar_write(o, size, value));
    }
}
