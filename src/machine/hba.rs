//! Classic SCSI host adapters: the `--drive ...,if=buslogic` disks become targets (SCSI IDs
//! 0-6 in command-line order) of one BusLogic BT-958 at PCI 00:0c.0, with its I/O BAR 0 at
//! [`BUSLOGIC_IO_BASE`] and memory BAR 1 at the start of the HBA family's MMIO window
//! ([`HBA_MMIO_BASE`]), assigned firmware style. INTA# drives the PIRQ the board wires slot 12
//! to (`devices::pci::intx_line`), as the ACPI `_PRT` says; the PIRQ is a wired-OR, so an e1000
//! in slot 16 (also PIRQD#) shares it without either losing an assertion. Mailbox work runs on the vCPU thread after each slice, like the virtio queues.

use std::sync::{Arc, Mutex};

use devices::bus::{Bus, DeviceId};
use devices::pci::{devfn, PciRoot};
use devices::scsi::buslogic::{self, BusLogic, BusLogicPci, BusLogicRegs, SharedBusLogic};
use devices::scsi::ScsiDisk;
use devices::IrqLines;

use crate::cli::spec::DriveSpec;
use crate::exec::dcache::DecodeCache;
use crate::mmu::GuestMemory;

use super::storage::DmaMemory;

/// Start of the classic HBAs' part of the PCI MMIO window (16 MiB, slots 12-13).
pub const HBA_MMIO_BASE: u64 = 0xe100_0000;
/// PCI device number of the BusLogic adapter.
pub const BUSLOGIC_SLOT: u8 = 12;
/// I/O port base of the BusLogic register block (4 ports).
pub const BUSLOGIC_IO_BASE: u16 = 0xc000;

/// The BusLogic adapter of a machine, if any drive asked for one.
#[derive(Debug, Default)]
pub struct Hbas {
    buslogic: Option<SharedBusLogic>,
}

impl Hbas {
    /// Build the adapter for `drives` (all with `if=buslogic`) on `pci` and `bus`, with INTA# on
    /// its slot's PIRQ line.
    pub fn build(
        drives: &[&DriveSpec],
        bus: &mut Bus,
        pci: DeviceId,
        lines: &IrqLines,
    ) -> Result<Self, String> {
        if drives.is_empty() {
            return Ok(Self::default());
        }
        let mut disks = Vec::new();
        for (i, d) in drives.iter().enumerate() {
            let backend = devices::block::open(&d.file, d.format.into(), d.mode, d.read_only)
                .map_err(|e| format!("{}: {e}", d.file.display()))?;
            disks.push(ScsiDisk::new(backend, &format!("RINX-BT-{i}")));
            log::info!(target: "rinx::storage", "buslogic target {i}: {} ({:?})",
                d.file.display(), d.mode);
        }
        let mut hba = BusLogic::new(disks, devices::pci::intx_line(lines, BUSLOGIC_SLOT, 1))?;
        let irq = devices::pci::firmware_interrupt_line(BUSLOGIC_SLOT, 1);
        hba.set_interrupt_line(irq);
        hba.assign_bars(BUSLOGIC_IO_BASE, HBA_MMIO_BASE as u32);
        let shared: SharedBusLogic = Arc::new(Mutex::new(hba));
        bus.pio_device_mut::<PciRoot>(pci)
            .ok_or("no PCI host bridge")?
            .insert(
                devfn(BUSLOGIC_SLOT, 0),
                Box::new(BusLogicPci(shared.clone())),
            );
        bus.add_pio_at(
            Box::new(BusLogicRegs(shared.clone())),
            &[(BUSLOGIC_IO_BASE, buslogic::IO_SIZE, 0)],
        )
        .map_err(|e| e.to_string())?;
        bus.add_mmio(
            HBA_MMIO_BASE,
            u64::from(buslogic::MMIO_SIZE),
            Box::new(BusLogicRegs(shared.clone())),
        )
        .map_err(|e| e.to_string())?;
        log::info!(target: "rinx::storage",
            "BusLogic BT-958 at 00:{BUSLOGIC_SLOT:02x}.0, I/O {BUSLOGIC_IO_BASE:#x}, IRQ {irq}");
        Ok(Self {
            buslogic: Some(shared),
        })
    }

    /// Run queued mailbox work against guest memory.
    pub fn process(&self, mem: &mut GuestMemory, dcache: &mut DecodeCache) {
        let Some(h) = &self.buslogic else { return };
        let Ok(mut h) = h.lock() else { return };
        if h.has_work() {
            h.process(&mut DmaMemory {
                mem: &mut *mem,
                dcache: &mut *dcache,
            });
        }
    }

    /// Whether any adapter has queued work.
    pub fn has_work(&self) -> bool {
        self.buslogic
            .as_ref()
            .is_some_and(|h| h.lock().map(|h| h.has_work()).unwrap_or(false))
    }

    /// Power-off: flush, and commit or discard overlays of every target.
    pub fn power_off(&self) -> Result<(), String> {
        let mut first_err = Ok(());
        let Some(h) = &self.buslogic else {
            return first_err;
        };
        let Ok(mut h) = h.lock() else {
            return first_err;
        };
        for d in h.disks_mut() {
            if let Err(e) = d.backend_mut().power_off() {
                log::error!(target: "rinx::storage", "buslogic drive power-off: {e}");
                if first_err.is_ok() {
                    first_err = Err(e.to_string());
                }
            }
        }
        first_err
    }

    /// The adapter (tests).
    pub fn buslogic(&self) -> Option<&SharedBusLogic> {
        self.buslogic.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::Port;
    use devices::events::event_channel;

    #[test]
    fn buslogic_drives_share_one_adapter_on_pci() {
        let imgs: Vec<_> = (0..2)
            .map(|i| {
                let p =
                    std::env::temp_dir().join(format!("rinx-hba-unit-{i}-{}", std::process::id()));
                std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
                p
            })
            .collect();
        let specs: Vec<DriveSpec> = imgs
            .iter()
            .map(|p| {
                crate::cli::spec::parse_drive(&format!("file={},if=buslogic", p.display())).unwrap()
            })
            .collect();
        let mut bus = Bus::new();
        let (tx, _rx) = event_channel();
        let pci = bus
            .add_pio_at(Box::new(PciRoot::new(tx)), &devices::pci::PCI_WINDOWS)
            .unwrap();
        let lines = IrqLines::new();
        let s = super::super::storage::Storage::build(
            &specs,
            &mut bus,
            pci,
            &lines,
            &devices::apic::ApicBus::new(),
        )
        .unwrap();
        let cfg = |bus: &mut Bus, off: u32| {
            bus.pio_write(
                Port(0xcf8),
                4,
                0x8000_0000 | (u32::from(BUSLOGIC_SLOT) << 11) | off,
            );
            bus.pio_read(Port(0xcfc), 4)
        };
        assert_eq!(cfg(&mut bus, 0), 0x1040_104b);
        assert_eq!(cfg(&mut bus, 0x10), u32::from(BUSLOGIC_IO_BASE) | 1);
        assert_eq!(cfg(&mut bus, 0x14), HBA_MMIO_BASE as u32);
        assert_eq!(
            cfg(&mut bus, 0x3c) & 0xffff,
            0x0100 | u32::from(devices::pci::firmware_interrupt_line(BUSLOGIC_SLOT, 1))
        );
        // No virtio function was created for them.
        bus.pio_write(Port(0xcf8), 4, 0x8000_0000 | (3 << 11));
        assert_eq!(bus.pio_read(Port(0xcfc), 4), 0xffff_ffff);
        // Status register: ready, mailbox initialization required; the MMIO mirror agrees.
        assert_eq!(bus.pio_read(Port(BUSLOGIC_IO_BASE), 1), 0x30);
        assert_eq!(bus.mmio_read(HBA_MMIO_BASE, 1), 0x30);
        // Inquire Target Devices: targets 0 and 1.
        bus.pio_write(Port(BUSLOGIC_IO_BASE + 1), 1, 0x24);
        let lo = bus.pio_read(Port(BUSLOGIC_IO_BASE + 1), 1);
        let hi = bus.pio_read(Port(BUSLOGIC_IO_BASE + 1), 1);
        assert_eq!((lo, hi), (0b11, 0));
        assert!(!s.has_work());
        s.power_off().unwrap();
        for p in imgs {
            let _ = std::fs::remove_file(p);
        }
    }
}
