//! Disks: each `--drive` becomes a virtio-scsi PCI function (00:03.0, 00:04.0, ...) whose BAR 0
//! is assigned in the PCI MMIO window at [`PCI_MMIO_BASE`], firmware style, and whose
//! interrupts are MSI-X messages to the local APIC, or INTA# when the guest does not enable
//! MSI-X, routed like every PCI device's INTx by [`devices::pci::intx_line`] (PIIX3 PIRQ ->
//! I/O APIC input 16-19 or the ISA IRQ of the PIRQ route register; the DSDT's `_PRT` says so). Queue work is done on the vCPU thread after each slice, with DMA
//! through [`DmaMemory`], which keeps the decoded-instruction cache coherent.

use std::sync::{Arc, Mutex};

use devices::apic::ApicBus;
use devices::block::BlockBackend;
use devices::bus::{Bus, DeviceId};
use devices::pci::{devfn, firmware_interrupt_line, intx_line, PciRoot};
use devices::scsi::{ScsiCdrom, ScsiDisk};
use devices::virtio::pci::{layout, PciHandle, PciMmioWindow, SharedVirtioPci};
use devices::virtio::{DmaError, VirtioPci, VirtioScsi};
use devices::IrqLines;

use crate::cli::spec::{DriveInterface, DriveSpec};
use crate::exec::dcache::DecodeCache;
use crate::mmu::GuestMemory;

/// Start of the PCI MMIO window where BARs live (inside the PCI hole, below the I/O APIC).
///
/// The 256 MiB hole at 0xE000_0000 is split, 16 MiB per device family, so each family's
/// window is one bus range: virtio-scsi drives at 0xE000_0000 (slots 3-10), classic SCSI HBAs
/// at 0xE100_0000 (slots 12-13), NICs at 0xE200_0000 (slots 16-23).
pub const PCI_MMIO_BASE: u64 = 0xe000_0000;
/// Size of the virtio-scsi drives' part of the PCI MMIO window (bytes).
pub const PCI_MMIO_SIZE: u64 = 0x0100_0000;
/// First PCI device number used for drives.
pub const FIRST_DRIVE_SLOT: u8 = 3;
/// Interrupt pin of the virtio-scsi functions: INTA#.
pub const VIRTIO_INTX_PIN: u8 = 1;

/// Guest RAM for device DMA: bounds-checked by [`GuestMemory`]; writes invalidate cached
/// decoded instructions of the pages they touch.
#[derive(Debug)]
pub struct DmaMemory<'a> {
    /// Guest RAM.
    pub mem: &'a mut GuestMemory,
    /// The vCPU's decoded-instruction cache.
    pub dcache: &'a mut DecodeCache,
}

impl devices::virtio::GuestMemory for DmaMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.mem.read(addr, buf).map_err(|_| DmaError {
            addr,
            len: buf.len() as u64,
        })
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        let err = DmaError {
            addr,
            len: data.len() as u64,
        };
        self.mem.write(addr, data).map_err(|_| err)?;
        if let Some(last) = addr.checked_add(data.len() as u64) {
            let mut page = addr & !0xfff;
            while page < last {
                self.dcache.note_write(page);
                page += 0x1000;
            }
        }
        Ok(())
    }
    fn check(&self, addr: u64, len: u64) -> Result<(), DmaError> {
        if len == 0 {
            return Ok(());
        }
        // GuestMemory::read checks the range; probe the first and last byte, then the whole
        // range lies in one region if both ends are in the same one.
        let err = DmaError { addr, len };
        let end = addr.checked_add(len - 1).ok_or(err)?;
        let (a, b) = (self.mem.page(addr), self.mem.page(end));
        match (a, b) {
            (Some(pa), Some(pb)) if pa.region == pb.region => Ok(()),
            _ => Err(err),
        }
    }
}

/// The disks of a machine.
#[derive(Debug, Default)]
pub struct Storage {
    drives: Vec<SharedVirtioPci<VirtioScsi>>,
    /// Classic HBAs (`if=buslogic` drives).
    pub hbas: super::hba::Hbas,
}

impl Storage {
    /// Create one virtio-scsi function per `if=virtio-scsi` drive on `pci` and the MMIO window on
    /// `bus`; `if=buslogic` drives go to one BusLogic adapter ([`super::hba`]).
    pub fn build(
        drives: &[DriveSpec],
        bus: &mut Bus,
        pci: DeviceId,
        lines: &IrqLines,
        apic: &ApicBus,
    ) -> Result<Self, String> {
        let hba_drives: Vec<&DriveSpec> = drives
            .iter()
            .filter(|d| d.interface == DriveInterface::BusLogic)
            .collect();
        let hbas = super::hba::Hbas::build(&hba_drives, bus, pci, lines)?;
        let drives: Vec<&DriveSpec> = drives
            .iter()
            .filter(|d| d.interface != DriveInterface::BusLogic)
            .collect();
        if drives.len() > 8 {
            return Err(format!(
                "at most 8 virtio-scsi drives (got {})",
                drives.len()
            ));
        }
        let mut out = Vec::new();
        for (i, d) in drives.iter().enumerate() {
            let backend: Box<dyn BlockBackend> =
                devices::block::open(&d.file, d.format.into(), d.mode, d.read_only)
                    .map_err(|e| e.to_string())?;
            let slot = FIRST_DRIVE_SLOT + i as u8;
            let scsi = match d.interface {
                DriveInterface::VirtioScsi => {
                    VirtioScsi::new(ScsiDisk::new(backend, &format!("RINX-DISK-{i}")))
                }
                DriveInterface::Cdrom => {
                    VirtioScsi::new(ScsiCdrom::new(backend, &format!("RINX-CD-{i}")))
                }
                // Filtered out above: they are targets of the BusLogic adapter.
                DriveInterface::BusLogic => continue,
            };
            let mut dev = VirtioPci::new(
                scsi,
                intx_line(lines, slot, VIRTIO_INTX_PIN),
                Box::new(apic.clone()),
            );
            let bar = PCI_MMIO_BASE + i as u64 * u64::from(layout::BAR_SIZE);
            dev.assign_bar0(bar as u32);
            dev.set_interrupt_line(firmware_interrupt_line(slot, VIRTIO_INTX_PIN));
            let shared = Arc::new(Mutex::new(dev));
            bus.pio_device_mut::<PciRoot>(pci)
                .ok_or("no PCI host bridge")?
                .insert(devfn(slot, 0), Box::new(PciHandle(shared.clone())));
            log::info!(target: "rinx::storage", "drive {i}: {} ({:?}) at 00:{slot:02x}.0, BAR0 {bar:#x}",
                d.file.display(), d.mode);
            out.push(shared);
        }
        if !out.is_empty() {
            bus.add_mmio(
                PCI_MMIO_BASE,
                PCI_MMIO_SIZE,
                Box::new(PciMmioWindow::new(PCI_MMIO_BASE, out.clone())),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(Self { drives: out, hbas })
    }

    /// Run queued device work (after guest notifications) against guest memory.
    pub fn process(&self, mem: &mut GuestMemory, dcache: &mut DecodeCache) {
        self.hbas.process(mem, dcache);
        for d in &self.drives {
            let Ok(mut d) = d.lock() else { continue };
            if d.has_work() {
                d.process(&mut DmaMemory {
                    mem: &mut *mem,
                    dcache: &mut *dcache,
                });
            }
        }
    }

    /// Number of drives.
    pub fn drive_count(&self) -> usize {
        self.drives.len()
    }

    /// Whether any drive has queued work.
    pub fn has_work(&self) -> bool {
        self.hbas.has_work()
            || self
                .drives
                .iter()
                .any(|d| d.lock().map(|d| d.has_work()).unwrap_or(false))
    }

    /// Power-off: flush, and commit or discard overlays. Errors are logged and returned.
    pub fn power_off(&self) -> Result<(), String> {
        let mut first_err = self.hbas.power_off();
        for d in &self.drives {
            let Ok(mut d) = d.lock() else { continue };
            if let Err(e) = d.device.disk_mut().backend_mut().power_off() {
                log::error!(target: "rinx::storage", "drive power-off: {e}");
                if first_err.is_ok() {
                    first_err = Err(e.to_string());
                }
            }
        }
        first_err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::Port;
    use devices::events::event_channel;

    /// The devices' INTx wiring and the DSDT's `_PRT` describe the same board.
    #[test]
    fn intx_wiring_matches_the_acpi_prt() {
        for slot in 0..32 {
            for pin in 1..=4 {
                assert_eq!(
                    devices::pci::pirq_of(slot, pin),
                    firmware::acpi::prt_pirq(slot, pin - 1),
                    "slot {slot} pin {pin}"
                );
            }
        }
        assert_eq!(
            devices::irq::PIRQ_LINE_BASE as u32,
            firmware::acpi::PIRQ_GSI_BASE
        );
    }

    #[test]
    fn drive_enumerates_on_pci_and_decodes_its_bar() {
        let img = std::env::temp_dir().join(format!("rinx-storage-unit-{}", std::process::id()));
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let spec = crate::cli::spec::parse_drive(&format!("file={}", img.display())).unwrap();
        let mut bus = Bus::new();
        let (tx, _rx) = event_channel();
        let pci = bus
            .add_pio_at(Box::new(PciRoot::new(tx)), &devices::pci::PCI_WINDOWS)
            .unwrap();
        let lines = IrqLines::new();
        let s = Storage::build(&[spec], &mut bus, pci, &lines, &ApicBus::new()).unwrap();
        let cfg = |bus: &mut Bus, off: u32| {
            bus.pio_write(Port(0xcf8), 4, 0x8000_0000 | (3 << 11) | off);
            bus.pio_read(Port(0xcfc), 4)
        };
        assert_eq!(cfg(&mut bus, 0), 0x1048_1af4);
        assert_eq!(cfg(&mut bus, 0x10), PCI_MMIO_BASE as u32);
        // INTA#, interrupt line 11: slot 3 INTA# is PIRQC#, which firmware routes to IRQ 11.
        assert_eq!(cfg(&mut bus, 0x3c) & 0xffff, 0x010b);
        // num_queues in the common configuration through the MMIO window.
        assert_eq!(bus.mmio_read(PCI_MMIO_BASE + 0x12, 2), 3);
        // Device config: max_sectors.
        assert_eq!(bus.mmio_read(PCI_MMIO_BASE + layout::DEVICE + 8, 4), 16384);
        assert!(!s.has_work());
        bus.mmio_write(PCI_MMIO_BASE + layout::NOTIFY + 8, 2, 2);
        assert!(s.has_work());
        let mut mem = GuestMemory::flat(1 << 20).unwrap();
        let mut dcache = DecodeCache::default();
        s.process(&mut mem, &mut dcache);
        assert!(!s.has_work());
        s.power_off().unwrap();
        let _ = std::fs::remove_file(&img);
    }

    #[test]
    fn undoable_keep_commits_and_discard_drops_at_power_off() {
        for (undo, committed) in [("keep", true), ("discard", false)] {
            let img = std::env::temp_dir()
                .join(format!("rinx-storage-undo-{undo}-{}", std::process::id()));
            std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
            let spec = crate::cli::spec::parse_drive(&format!(
                "file={},mode=undoable,undo={undo}",
                img.display()
            ))
            .unwrap();
            let mut bus = Bus::new();
            let (tx, _rx) = event_channel();
            let pci = bus
                .add_pio_at(Box::new(PciRoot::new(tx)), &devices::pci::PCI_WINDOWS)
                .unwrap();
            let s =
                Storage::build(&[spec], &mut bus, pci, &IrqLines::new(), &ApicBus::new()).unwrap();
            // WRITE(10) of LBA 2 with FUA, as the guest would send it.
            let r = s.drives[0].lock().unwrap().device.disk_mut().execute(
                &[0x2a, 0x08, 0, 0, 0, 2, 0, 0, 1, 0],
                &[0xee; 512],
                0,
            );
            assert_eq!(r.status, devices::scsi::Status::Good);
            assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0));
            s.power_off().unwrap();
            let after = std::fs::read(&img).unwrap();
            assert_eq!(
                after[1024..1536] == [0xee; 512][..],
                committed,
                "undo={undo}"
            );
            assert_eq!(after.len(), 1 << 20);
            let _ = std::fs::remove_file(&img);
        }
    }
}
