//! virtio over PCI, modern (1.x) interface (virtio 1.2 §4.1): vendor capabilities for the
//! common configuration (§4.1.4.3), notifications (§4.1.4.4), ISR status (§4.1.4.5), device
//! configuration (§4.1.4.6) and the PCI configuration access window (§4.1.4.9), all in a
//! 32-bit memory BAR 0, plus MSI-X (PCI Local Bus 3.0 §6.8.2) with its table and PBA in the
//! same BAR. Interrupts go out as MSI-X messages when the driver enables MSI-X, otherwise
//! through INTx (ISR bit 0/1 and the INTA# line).
//!
//! Notifications are recorded by the MMIO write; the machine then calls
//! [`VirtioPci::process`] with guest memory so the device can walk its queues.

use super::mem::GuestMemory;
use super::queue::{QueueError, SplitQueue, MAX_QUEUE_SIZE};
use crate::irq::IrqLine;
use crate::pci::{reg, BarKind, PciConfigSpace, PciDevice};

/// PCI vendor ID of virtio devices (§4.1.2).
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + virtio device ID (§4.1.2.1).
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// VIRTIO_F_VERSION_1 (§6): the modern interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (§2.1).
pub mod status {
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u8 = 1;
    /// DRIVER.
    pub const DRIVER: u8 = 2;
    /// DRIVER_OK.
    pub const DRIVER_OK: u8 = 4;
    /// FEATURES_OK.
    pub const FEATURES_OK: u8 = 8;
    /// DEVICE_NEEDS_RESET.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// FAILED.
    pub const FAILED: u8 = 0x80;
}

/// MSI-X "no vector" (§4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;

/// BAR 0 layout.
pub mod layout {
    /// Size of BAR 0.
    pub const BAR_SIZE: u32 = 0x8000;
    /// Common configuration structure.
    pub const COMMON: u64 = 0x0000;
    /// Length of the common configuration structure (virtio 1.2, with queue_reset).
    pub const COMMON_LEN: u64 = 0x3c;
    /// ISR status.
    pub const ISR: u64 = 0x1000;
    /// Device-specific configuration.
    pub const DEVICE: u64 = 0x2000;
    /// Length of the device configuration window.
    pub const DEVICE_LEN: u64 = 0x1000;
    /// Notification area: queue `n` at `NOTIFY + 4 * n`.
    pub const NOTIFY: u64 = 0x3000;
    /// notify_off_multiplier.
    pub const NOTIFY_MULTIPLIER: u32 = 4;
    /// MSI-X table.
    pub const MSIX_TABLE: u64 = 0x4000;
    /// MSI-X pending bit array.
    pub const MSIX_PBA: u64 = 0x6000;
}

/// Where MSI-X messages go (the local APIC, for a PC).
pub trait MsiSink: Send + std::fmt::Debug {
    /// Deliver the message `data` written at `addr`.
    fn signal(&self, addr: u64, data: u32);
}

impl MsiSink for crate::apic::ApicBus {
    /// MSI address 0xFEEx_xxxx, data bits 7:0 vector, bit 15 trigger mode (Intel SDM vol. 3
    /// §11.11). Only fixed / lowest-priority delivery to the one CPU is modelled.
    fn signal(&self, addr: u64, data: u32) {
        if addr >> 20 != 0xfee || (data >> 8) & 7 > 1 {
            log::warn!(target: "devices::virtio", "unsupported MSI {addr:#x} {data:#x}");
            return;
        }
        self.deliver(data as u8, data & 0x8000 != 0);
    }
}

/// A virtio device behind the transport.
pub trait VirtioDevice: Send + std::fmt::Debug {
    /// virtio device ID (§5: 8 = SCSI host).
    fn device_id(&self) -> u16;
    /// PCI class code `[base, sub, prog-if]`.
    fn class(&self) -> [u8; 3];
    /// Device feature bits (the transport adds VIRTIO_F_VERSION_1).
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Read device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write device configuration space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Process queue `index`; returns whether the driver should be interrupted.
    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError>;
    /// Device reset (status written 0).
    fn reset(&mut self);
}

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CAP_COMMON: u8 = 0x40;
const CAP_NOTIFY: u8 = 0x50;
const CAP_ISR: u8 = 0x64;
const CAP_DEVICE: u8 = 0x74;
const CAP_PCI_CFG: u8 = 0x84;
const CAP_MSIX_AT: u8 = 0x98;
/// pci_cfg_data of the VIRTIO_PCI_CAP_PCI_CFG capability.
const PCI_CFG_DATA: u8 = CAP_PCI_CFG + 16;

/// A virtio device on the PCI bus.
#[derive(Debug)]
pub struct VirtioPci<D: VirtioDevice> {
    /// The device.
    pub device: D,
    config: PciConfigSpace,
    queues: Vec<SplitQueue>,
    max_sizes: Vec<u16>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    config_msix_vector: u16,
    isr: u8,
    pending_notify: Vec<bool>,
    msix_table: Vec<[u32; 4]>,
    msix_pending: Vec<bool>,
    intx: IrqLine,
    msi: Box<dyn MsiSink>,
}

impl<D: VirtioDevice> VirtioPci<D> {
    /// Wrap `device`; INTx goes to `intx`, MSI-X messages to `msi`.
    pub fn new(device: D, intx: IrqLine, msi: Box<dyn MsiSink>) -> Self {
        let max_sizes = device.queue_max_sizes();
        let nq = max_sizes.len();
        let id = device.device_id();
        let mut config = PciConfigSpace::new(
            VIRTIO_PCI_VENDOR,
            VIRTIO_PCI_DEVICE_BASE + id,
            device.class(),
            0x01,
            0x00,
        );
        // Subsystem vendor / ID (§4.1.2.1: any ID >= 0x40).
        config.set_u16(0x2c, VIRTIO_PCI_VENDOR);
        config.set_u16(0x2e, 0x40 + id);
        // Capabilities list present (status bit 4), first capability.
        config.set_u16(reg::STATUS, 0x0010);
        config.set_byte(0x34, CAP_COMMON, 0);
        config.set_byte(reg::INTERRUPT_PIN, 1, 0);
        config.set_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            layout::BAR_SIZE,
        );
        let mut s = Self {
            device,
            config,
            queues: max_sizes.iter().map(|&m| SplitQueue::new(m)).collect(),
            max_sizes,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            config_msix_vector: NO_VECTOR,
            isr: 0,
            pending_notify: vec![false; nq],
            msix_table: vec![[0, 0, 0, 1]; nq + 1],
            msix_pending: vec![false; nq + 1],
            intx,
            msi,
        };
        s.build_caps();
        s
    }

    /// virtio_pci_cap (§4.1.4): vendor capability of `cfg_type` at `at`.
    fn vendor_cap(&mut self, at: u8, next: u8, len: u8, cfg_type: u8, offset: u64, length: u32) {
        let bytes: [u8; 16] = {
            let mut b = [0u8; 16];
            b[0] = CAP_VENDOR;
            b[1] = next;
            b[2] = len;
            b[3] = cfg_type;
            b[4] = 0; // BAR 0
            b[8..12].copy_from_slice(&(offset as u32).to_le_bytes());
            b[12..16].copy_from_slice(&length.to_le_bytes());
            b
        };
        for (i, v) in bytes.iter().enumerate() {
            self.config.set_byte(at + i as u8, *v, 0);
        }
    }

    fn build_caps(&mut self) {
        let nq = self.queues.len() as u32;
        self.vendor_cap(
            CAP_COMMON,
            CAP_NOTIFY,
            16,
            1,
            layout::COMMON,
            layout::COMMON_LEN as u32,
        );
        self.vendor_cap(
            CAP_NOTIFY,
            CAP_ISR,
            20,
            2,
            layout::NOTIFY,
            nq * layout::NOTIFY_MULTIPLIER,
        );
        for (i, v) in layout::NOTIFY_MULTIPLIER.to_le_bytes().iter().enumerate() {
            self.config.set_byte(CAP_NOTIFY + 16 + i as u8, *v, 0);
        }
        self.vendor_cap(CAP_ISR, CAP_DEVICE, 16, 3, layout::ISR, 1);
        self.vendor_cap(
            CAP_DEVICE,
            CAP_PCI_CFG,
            16,
            4,
            layout::DEVICE,
            layout::DEVICE_LEN as u32,
        );
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset and length writable by the driver; the data
        // window is handled in config_read / config_write.
        self.vendor_cap(CAP_PCI_CFG, CAP_MSIX_AT, 20, 5, 0, 0);
        self.config.set_byte(CAP_PCI_CFG + 4, 0, 0xff);
        for i in 8..16 {
            self.config.set_byte(CAP_PCI_CFG + i, 0, 0xff);
        }
        // MSI-X capability: table size N-1, table and PBA in BAR 0.
        let msix = [CAP_MSIX, 0, (self.msix_table.len() - 1) as u8, 0];
        for (i, v) in msix.iter().enumerate() {
            self.config.set_byte(CAP_MSIX_AT + i as u8, *v, 0);
        }
        // Message control bits 15 (enable) and 14 (function mask) are writable.
        self.config.set_byte(CAP_MSIX_AT + 3, 0, 0xc0);
        for (i, v) in (layout::MSIX_TABLE as u32).to_le_bytes().iter().enumerate() {
            self.config.set_byte(CAP_MSIX_AT + 4 + i as u8, *v, 0);
        }
        for (i, v) in (layout::MSIX_PBA as u32).to_le_bytes().iter().enumerate() {
            self.config.set_byte(CAP_MSIX_AT + 8 + i as u8, *v, 0);
        }
    }

    /// Guest-physical base of BAR 0 if memory decoding is enabled.
    pub fn bar0(&self) -> Option<(u64, u64)> {
        let mem_enabled = self.config.read(reg::COMMAND, 2) & 0x2 != 0;
        let base = self.config.bar_address(0);
        (mem_enabled && base != 0).then_some((u64::from(base), u64::from(layout::BAR_SIZE)))
    }

    /// Program BAR 0 (firmware-style assignment before the guest runs) and enable memory
    /// decoding and bus mastering.
    pub fn assign_bar0(&mut self, base: u32) {
        self.config.write(reg::BAR0, 4, base);
        self.config.write(reg::COMMAND, 2, 0x6);
    }

    /// Set the interrupt line register (firmware-style, before the guest runs).
    pub fn set_interrupt_line(&mut self, irq: u8) {
        self.config.write(reg::INTERRUPT_LINE, 1, u32::from(irq));
    }

    /// Device status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The queues (tests, snapshots).
    pub fn queues(&self) -> &[SplitQueue] {
        &self.queues
    }

    fn msix_enabled(&self) -> bool {
        self.config.read(CAP_MSIX_AT + 2, 2) & 0x8000 != 0
    }

    fn msix_function_masked(&self) -> bool {
        self.config.read(CAP_MSIX_AT + 2, 2) & 0x4000 != 0
    }

    /// Raise interrupt `vector` (MSI-X) or ISR bit `isr_bit` with INTx.
    fn interrupt(&mut self, vector: u16, isr_bit: u8) {
        if self.msix_enabled() {
            let v = usize::from(vector);
            if vector == NO_VECTOR || v >= self.msix_table.len() {
                return;
            }
            if self.msix_function_masked() || self.msix_table[v][3] & 1 != 0 {
                self.msix_pending[v] = true;
                return;
            }
            let e = self.msix_table[v];
            self.msi
                .signal(u64::from(e[0]) | (u64::from(e[1]) << 32), e[2]);
        } else {
            self.isr |= isr_bit;
            let disabled = self.config.read(reg::COMMAND, 2) & 0x400 != 0;
            if !disabled {
                self.intx.raise();
            }
        }
    }

    /// Deliver MSI-X messages left pending by masking, once unmasked.
    fn deliver_pending(&mut self) {
        if !self.msix_enabled() || self.msix_function_masked() {
            return;
        }
        for v in 0..self.msix_table.len() {
            if self.msix_pending[v] && self.msix_table[v][3] & 1 == 0 {
                self.msix_pending[v] = false;
                let e = self.msix_table[v];
                self.msi
                    .signal(u64::from(e[0]) | (u64::from(e[1]) << 32), e[2]);
            }
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.queues = self.max_sizes.iter().map(|&m| SplitQueue::new(m)).collect();
        self.pending_notify.fill(false);
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.config_msix_vector = NO_VECTOR;
        self.isr = 0;
        self.intx.lower();
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Image of the common configuration structure (§4.1.4.3).
    fn common_image(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        let q = self.queues.get(usize::from(self.queue_select));
        let sel = self.device_feature_select;
        let df = if sel < 2 {
            (self.device_features() >> (32 * sel)) as u32
        } else {
            0
        };
        let drf = if self.driver_feature_select < 2 {
            (self.driver_features >> (32 * self.driver_feature_select)) as u32
        } else {
            0
        };
        b[0..4].copy_from_slice(&sel.to_le_bytes());
        b[4..8].copy_from_slice(&df.to_le_bytes());
        b[8..12].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[12..16].copy_from_slice(&drf.to_le_bytes());
        b[16..18].copy_from_slice(&self.config_msix_vector.to_le_bytes());
        b[18..20].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[20] = self.status;
        b[21] = self.config_generation;
        b[22..24].copy_from_slice(&self.queue_select.to_le_bytes());
        if let Some(q) = q {
            b[24..26].copy_from_slice(&q.size.to_le_bytes());
            b[26..28].copy_from_slice(&q.msix_vector.to_le_bytes());
            b[28..30].copy_from_slice(&u16::from(q.ready).to_le_bytes());
            b[30..32].copy_from_slice(&self.queue_select.to_le_bytes());
            b[32..40].copy_from_slice(&q.desc.to_le_bytes());
            b[40..48].copy_from_slice(&q.avail.to_le_bytes());
            b[48..56].copy_from_slice(&q.used.to_le_bytes());
            b[56..58].copy_from_slice(&self.queue_select.to_le_bytes());
        }
        b
    }

    fn common_write(&mut self, offset: u64, size: u8, value: u64) {
        let old = self.common_image();
        let mut img = old;
        let o = offset as usize;
        for i in 0..usize::from(size) {
            if let Some(b) = img.get_mut(o + i) {
                *b = (value >> (8 * i)) as u8;
            }
        }
        let touched = |lo: usize, hi: usize| o < hi && o + usize::from(size) > lo;
        let u16_at = |i: usize| u16::from_le_bytes([img[i], img[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([img[i], img[i + 1], img[i + 2], img[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        if touched(0, 4) {
            self.device_feature_select = u32_at(0);
        }
        if touched(8, 12) {
            self.driver_feature_select = u32_at(8);
        }
        // Feature words beyond the two the device has read as 0 and ignore writes
        // (`32 * select` must not be computed for them: it overflows from 0x0800_0000 on).
        if touched(12, 16)
            && self.status & status::FEATURES_OK == 0
            && self.driver_feature_select < 2
        {
            let shift = 32 * self.driver_feature_select;
            self.driver_features = (self.driver_features & !(0xffff_ffffu64 << shift))
                | (u64::from(u32_at(12)) << shift);
        }
        if touched(16, 18) {
            self.config_msix_vector = u16_at(16);
        }
        if touched(20, 21) {
            self.write_status(img[20]);
        }
        if touched(22, 24) {
            self.queue_select = u16_at(22);
        }
        let qs = usize::from(self.queue_select);
        let Some(max) = self.max_sizes.get(qs).copied() else {
            return;
        };
        let q = &mut self.queues[qs];
        // Queue registers are only writable while the queue is disabled (§4.1.4.3.2), except
        // the MSI-X vector.
        if touched(26, 28) {
            q.msix_vector = u16_at(26);
        }
        if q.ready {
            return;
        }
        if touched(24, 26) {
            let s = u16_at(24);
            // Split queues: a power of two no larger than the maximum (§2.7).
            q.size = if s.is_power_of_two() && s <= max.min(MAX_QUEUE_SIZE) {
                s
            } else {
                0
            };
        }
        if touched(32, 40) {
            q.desc = u64_at(32);
        }
        if touched(40, 48) {
            q.avail = u64_at(40);
        }
        if touched(48, 56) {
            q.used = u64_at(48);
        }
        if touched(28, 30) && u16_at(28) == 1 {
            q.ready = true;
            q.next_avail = 0;
            q.next_used = 0;
        }
    }

    fn write_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // §3.1.1: accept only a subset of the offered features including VERSION_1.
            let ok = self.driver_features & !self.device_features() == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                v &= !status::FEATURES_OK;
            }
        }
        // DEVICE_NEEDS_RESET stays until reset.
        self.status = v | (self.status & status::DEVICE_NEEDS_RESET);
    }

    /// Guest read of BAR 0 at `offset`.
    pub fn bar_read(&mut self, offset: u64, size: u8) -> u64 {
        let size = size.min(8);
        match offset {
            o if o < layout::COMMON_LEN => {
                let img = self.common_image();
                (0..u64::from(size))
                    .map(|i| u64::from(*img.get((o + i) as usize).unwrap_or(&0)) << (8 * i))
                    .sum()
            }
            layout::ISR => {
                // Reading the ISR clears it and deasserts INTx (§4.1.4.5).
                let v = self.isr;
                self.isr = 0;
                self.intx.lower();
                u64::from(v)
            }
            o if (layout::DEVICE..layout::DEVICE + layout::DEVICE_LEN).contains(&o) => {
                let mut b = [0u8; 8];
                self.device
                    .read_config(o - layout::DEVICE, &mut b[..usize::from(size)]);
                u64::from_le_bytes(b)
            }
            o if (layout::MSIX_TABLE..layout::MSIX_TABLE + 16 * self.msix_table.len() as u64)
                .contains(&o) =>
            {
                let r = o - layout::MSIX_TABLE;
                let (e, w) = ((r / 16) as usize, ((r % 16) / 4) as usize);
                let lo = u64::from(self.msix_table[e][w]);
                if size == 8 && w % 2 == 0 {
                    lo | (u64::from(self.msix_table[e][w + 1]) << 32)
                } else {
                    lo
                }
            }
            o if (layout::MSIX_PBA..layout::MSIX_PBA + 8).contains(&o) => {
                let bits: u64 = self
                    .msix_pending
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| u64::from(p) << i)
                    .sum();
                bits >> (8 * (o - layout::MSIX_PBA))
            }
            _ => 0,
        }
    }

    /// Guest write of BAR 0 at `offset`.
    pub fn bar_write(&mut self, offset: u64, size: u8, value: u64) {
        let size = size.min(8);
        match offset {
            o if o < layout::COMMON_LEN => self.common_write(o, size, value),
            o if (layout::DEVICE..layout::DEVICE + layout::DEVICE_LEN).contains(&o) => {
                let b = value.to_le_bytes();
                self.device
                    .write_config(o - layout::DEVICE, &b[..usize::from(size)]);
            }
            o if (layout::NOTIFY
                ..layout::NOTIFY
                    + u64::from(layout::NOTIFY_MULTIPLIER) * self.queues.len() as u64)
                .contains(&o) =>
            {
                // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (§4.1.5.2);
                // the address already says which queue.
                let q = ((o - layout::NOTIFY) / u64::from(layout::NOTIFY_MULTIPLIER)) as usize;
                self.pending_notify[q] = true;
            }
            o if (layout::MSIX_TABLE..layout::MSIX_TABLE + 16 * self.msix_table.len() as u64)
                .contains(&o) =>
            {
                let r = o - layout::MSIX_TABLE;
                let (e, w) = ((r / 16) as usize, ((r % 16) / 4) as usize);
                self.msix_table[e][w] = value as u32;
                if size == 8 && w % 2 == 0 {
                    self.msix_table[e][w + 1] = (value >> 32) as u32;
                }
                self.msix_table[e][3] &= 1;
                self.deliver_pending();
            }
            _ => {}
        }
    }

    /// Mark queue `index` for processing as if the driver had notified it: a device whose
    /// work starts outside the guest (frames arriving from a network back-end) uses this to
    /// get its receive queue walked by the next [`Self::process`]. Out-of-range indices are
    /// ignored.
    pub fn kick(&mut self, index: u16) {
        if let Some(p) = self.pending_notify.get_mut(usize::from(index)) {
            *p = true;
        }
    }

    /// Whether a notification is waiting for [`Self::process`].
    pub fn has_work(&self) -> bool {
        self.pending_notify.iter().any(|&p| p)
    }

    /// Process notified queues against guest memory, raising interrupts for completions. A
    /// malformed queue sets DEVICE_NEEDS_RESET and a configuration-change interrupt
    /// (§2.1.2, §4.1.5.3).
    pub fn process(&mut self, mem: &mut dyn GuestMemory) {
        if self.status & status::DRIVER_OK == 0 || self.status & status::DEVICE_NEEDS_RESET != 0 {
            self.pending_notify.fill(false);
            return;
        }
        for i in 0..self.queues.len() {
            if !std::mem::take(&mut self.pending_notify[i]) || !self.queues[i].ready {
                continue;
            }
            let res = self.queues[i].check_rings(mem).and_then(|()| {
                self.device
                    .process_queue(i as u16, &mut self.queues[i], mem)
            });
            match res {
                Ok(true) => {
                    let v = self.queues[i].msix_vector;
                    self.interrupt(v, 1);
                }
                Ok(false) => {}
                Err(e) => {
                    log::warn!(target: "devices::virtio", "queue {i}: {e}; device needs reset");
                    self.status |= status::DEVICE_NEEDS_RESET;
                    self.config_generation = self.config_generation.wrapping_add(1);
                    let v = self.config_msix_vector;
                    self.interrupt(v, 2);
                    return;
                }
            }
        }
    }
}

impl<D: VirtioDevice + 'static> PciDevice for VirtioPci<D> {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        if (PCI_CFG_DATA..PCI_CFG_DATA + 4).contains(&offset) {
            // VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9): access BAR `bar` at `offset`.
            let bar = self.config.read(CAP_PCI_CFG + 4, 1);
            let off = self.config.read(CAP_PCI_CFG + 8, 4);
            let len = self.config.read(CAP_PCI_CFG + 12, 4);
            if bar == 0 && matches!(len, 1 | 2 | 4) {
                return self.bar_read(u64::from(off), len as u8) as u32;
            }
            return 0;
        }
        self.config.read(offset, size)
    }

    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        if (PCI_CFG_DATA..PCI_CFG_DATA + 4).contains(&offset) {
            let bar = self.config.read(CAP_PCI_CFG + 4, 1);
            let off = self.config.read(CAP_PCI_CFG + 8, 4);
            let len = self.config.read(CAP_PCI_CFG + 12, 4);
            if bar == 0 && matches!(len, 1 | 2 | 4) {
                self.bar_write(u64::from(off), len as u8, u64::from(value));
            }
            return;
        }
        self.config.write(offset, size, value);
        if (CAP_MSIX_AT + 2..CAP_MSIX_AT + 4).contains(&offset) {
            self.deliver_pending();
        }
    }
}

/// A virtio PCI function shared between the configuration-space bus ([`crate::pci::PciRoot`])
/// and the MMIO window that decodes its BAR.
pub type SharedVirtioPci<D> = std::sync::Arc<std::sync::Mutex<VirtioPci<D>>>;

/// The configuration-space side of a [`SharedVirtioPci`], for [`crate::pci::PciRoot::insert`].
#[derive(Debug)]
pub struct PciHandle<D: VirtioDevice>(pub SharedVirtioPci<D>);

impl<D: VirtioDevice + 'static> PciDevice for PciHandle<D> {
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

/// An MMIO window of the PCI hole that forwards accesses to whichever function's BAR 0
/// decodes them (so the guest may move BARs within the window).
#[derive(Debug)]
pub struct PciMmioWindow<D: VirtioDevice> {
    base: u64,
    functions: Vec<SharedVirtioPci<D>>,
}

impl<D: VirtioDevice> PciMmioWindow<D> {
    /// A window starting at guest physical `base` serving `functions`.
    pub fn new(base: u64, functions: Vec<SharedVirtioPci<D>>) -> Self {
        Self { base, functions }
    }

    fn with<R>(&self, offset: u64, f: impl FnOnce(&mut VirtioPci<D>, u64) -> R) -> Option<R> {
        let addr = self.base + offset;
        for func in &self.functions {
            let Ok(mut d) = func.lock() else { continue };
            if let Some((b, len)) = d.bar0() {
                if (b..b + len).contains(&addr) {
                    return Some(f(&mut d, addr - b));
                }
            }
        }
        None
    }
}

impl<D: VirtioDevice + 'static> crate::bus::MmioDevice for PciMmioWindow<D> {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.with(offset, |d, o| d.bar_read(o, size))
            .unwrap_or(u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8))))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.with(offset, |d, o| d.bar_write(o, size, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::IrqLines;

    #[derive(Debug)]
    struct NoMsi;
    impl MsiSink for NoMsi {
        fn signal(&self, _addr: u64, _data: u32) {}
    }

    /// A device with one queue and one feature bit, no configuration.
    #[derive(Debug)]
    struct Dummy;
    impl VirtioDevice for Dummy {
        fn device_id(&self) -> u16 {
            1
        }
        fn class(&self) -> [u8; 3] {
            [0x02, 0, 0]
        }
        fn features(&self) -> u64 {
            1 << 5
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16]
        }
        fn read_config(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn process_queue(
            &mut self,
            _index: u16,
            _queue: &mut SplitQueue,
            _mem: &mut dyn GuestMemory,
        ) -> Result<bool, QueueError> {
            Ok(false)
        }
        fn reset(&mut self) {}
    }

    /// Found by the `virtio_net` fuzz target: a driver_feature_select of 0x0800_0000 or more
    /// followed by a driver_feature write overflowed `32 * select` (a panic with overflow
    /// checks; without them the write landed in feature word 0 or 1).
    #[test]
    fn driver_feature_write_with_a_huge_select_is_ignored() {
        let mut dev = VirtioPci::new(Dummy, IrqLines::new().line(11), Box::new(NoMsi));
        dev.assign_bar0(0xe200_0000);
        dev.bar_write(0x14, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER));
        dev.bar_write(0x08, 4, 0);
        dev.bar_write(0x0c, 4, 1 << 5);
        dev.bar_write(0x08, 4, 1);
        dev.bar_write(0x0c, 4, 1);
        for sel in [2u32, 0x0800_0000, 0x0800_0001, 0xffff_ffff] {
            dev.bar_write(0x08, 4, u64::from(sel));
            dev.bar_write(0x0c, 4, 0xffff_ffff);
            assert_eq!(dev.bar_read(0x08, 4), u64::from(sel));
            assert_eq!(dev.bar_read(0x0c, 4), 0, "feature word {sel:#x} reads as 0");
        }
        dev.bar_write(0x08, 4, 0);
        assert_eq!(dev.bar_read(0x0c, 4), 1 << 5, "word 0 unchanged");
        dev.bar_write(0x08, 4, 1);
        assert_eq!(dev.bar_read(0x0c, 4), 1, "word 1 unchanged");
        dev.bar_write(
            0x14,
            1,
            u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        );
        assert_ne!(dev.status() & status::FEATURES_OK, 0);
        // The same for the device feature window: words past 1 read as 0.
        dev.bar_write(0x00, 4, 0x0800_0000);
        assert_eq!(dev.bar_read(0x04, 4), 0);
    }
}
