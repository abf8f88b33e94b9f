//! virtio SCSI host (virtio 1.2 §5.6) on top of the [`crate::scsi`] disk target: one
//! control queue, one event queue and one request queue; target 0, LUN 0 is the disk.

use super::mem::GuestMemory;
use super::pci::VirtioDevice;
use super::queue::{DescChain, QueueError, SplitQueue};
use crate::scsi::disk::MAX_TRANSFER_BLOCKS;
use crate::scsi::{unsupported_lun, ScsiTarget, Status};

/// virtio device ID of a SCSI host (§5.6.1).
pub const VIRTIO_ID_SCSI: u16 = 8;
/// Queue size of every queue.
pub const QUEUE_SIZE: u16 = 128;
/// Default (and largest accepted) CDB size (§5.6.4).
pub const CDB_SIZE: u32 = 32;
/// Default (and largest accepted) sense size (§5.6.4).
pub const SENSE_SIZE: u32 = 96;

/// Response codes (§5.6.6.1).
pub mod response {
    /// VIRTIO_SCSI_S_OK.
    pub const OK: u8 = 0;
    /// VIRTIO_SCSI_S_OVERRUN.
    pub const OVERRUN: u8 = 1;
    /// VIRTIO_SCSI_S_BAD_TARGET.
    pub const BAD_TARGET: u8 = 3;
    /// VIRTIO_SCSI_S_FAILURE.
    pub const FAILURE: u8 = 9;
    /// VIRTIO_SCSI_S_FUNCTION_COMPLETE (task management, §5.6.6.2).
    pub const FUNCTION_COMPLETE: u8 = 0;
}

/// Size of the request header before the CDB: lun[8], id, task_attr, prio, crn.
const REQ_HDR: u64 = 19;
/// Size of the response header before the sense bytes: sense_len, residual,
/// status_qualifier, status, response.
const RESP_HDR: u64 = 12;

/// A virtio-scsi host with one logical unit (disk or CD-ROM) at target 0, LUN 0.
#[derive(Debug)]
pub struct VirtioScsi {
    disk: Box<dyn ScsiTarget>,
    cdb_size: u32,
    sense_size: u32,
}

impl VirtioScsi {
    /// A host adapter with `disk` (a [`crate::scsi::ScsiDisk`] or
    /// [`crate::scsi::ScsiCdrom`]) at target 0, LUN 0.
    pub fn new(disk: impl ScsiTarget + 'static) -> Self {
        Self {
            disk: Box::new(disk),
            cdb_size: CDB_SIZE,
            sense_size: SENSE_SIZE,
        }
    }

    /// The logical unit (power-off handling).
    pub fn disk_mut(&mut self) -> &mut dyn ScsiTarget {
        self.disk.as_mut()
    }

    /// virtio_scsi_config (§5.6.4), little-endian.
    fn config_bytes(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        let put =
            |b: &mut [u8; 36], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 0, 1); // num_queues (request queues)
        put(&mut b, 4, u32::from(QUEUE_SIZE) - 2); // seg_max
        put(&mut b, 8, MAX_TRANSFER_BLOCKS); // max_sectors
        put(&mut b, 12, u32::from(QUEUE_SIZE)); // cmd_per_lun
        put(&mut b, 16, 16); // event_info_size
        put(&mut b, 20, self.sense_size);
        put(&mut b, 24, self.cdb_size);
        b[28..30].copy_from_slice(&0u16.to_le_bytes()); // max_channel
        b[30..32].copy_from_slice(&0u16.to_le_bytes()); // max_target
        put(&mut b, 32, 0); // max_lun
        b
    }

    /// Execute one request-queue chain (§5.6.6.1); returns the bytes written.
    fn request(&mut self, c: &DescChain, mem: &mut dyn GuestMemory) -> Result<u32, QueueError> {
        let cdb_size = u64::from(self.cdb_size);
        let sense_size = u64::from(self.sense_size);
        let resp_len = RESP_HDR + sense_size;
        if c.writable_len() < resp_len {
            // No room for a response: complete without writing anything.
            log::warn!(target: "devices::virtio", "virtio-scsi request without response buffer");
            return Ok(0);
        }
        let mut resp = vec![0u8; resp_len as usize];
        let mut hdr = vec![0u8; (REQ_HDR + cdb_size) as usize];
        if c.readable_len() < hdr.len() as u64 {
            resp[11] = response::FAILURE;
            c.write_at(mem, 0, &resp)?;
            return Ok(resp_len as u32);
        }
        c.read_at(mem, 0, &mut hdr)?;
        let lun = &hdr[0..8];
        let cdb = &hdr[REQ_HDR as usize..];
        // Data-out: the readable bytes after the header, bounded by the largest transfer.
        let out_len = (c.readable_len() - hdr.len() as u64)
            .min(u64::from(MAX_TRANSFER_BLOCKS) * 512) as usize;
        let mut data_out = vec![0u8; out_len];
        c.read_at(mem, hdr.len() as u64, &mut data_out)?;
        let in_cap = (c.writable_len() - resp_len) as usize;
        // LUN format (§5.6.6.1): byte 0 = 1, byte 1 = target, bytes 2-3 = LUN (flat space).
        let r = if lun[0] != 1 || lun[1] != 0 {
            resp[11] = response::BAD_TARGET;
            None
        } else {
            let l = u16::from_be_bytes([lun[2], lun[3]]) & 0x3fff;
            Some(if l == 0 {
                self.disk.execute(cdb, &data_out, in_cap)
            } else {
                unsupported_lun(cdb, in_cap, &[0])
            })
        };
        let mut written = resp_len as u32;
        if let Some(r) = r {
            c.write_at(mem, resp_len, &r.data_in)?;
            written += r.data_in.len() as u32;
            let residual = (in_cap - r.data_in.len()) as u32;
            resp[4..8].copy_from_slice(&residual.to_le_bytes());
            resp[10] = r.status as u8;
            resp[11] = response::OK;
            if r.status == Status::CheckCondition {
                if let Some(s) = r.sense {
                    let f = s.to_fixed();
                    let n = f.len().min(sense_size as usize);
                    resp[12..12 + n].copy_from_slice(&f[..n]);
                    resp[0..4].copy_from_slice(&(n as u32).to_le_bytes());
                }
            }
        }
        c.write_at(mem, 0, &resp)?;
        Ok(written)
    }

    /// Control queue (§5.6.6.2, §5.6.6.3): task management functions complete at once (every
    /// command has already completed); asynchronous notification queries report no events.
    fn control(c: &DescChain, mem: &mut dyn GuestMemory) -> Result<u32, QueueError> {
        let mut t = [0u8; 4];
        if c.read_at(mem, 0, &mut t)? < 4 {
            return Ok(0);
        }
        match u32::from_le_bytes(t) {
            // VIRTIO_SCSI_T_TMF: u8 response.
            0 if c.writable_len() >= 1 => {
                c.write_at(mem, 0, &[response::FUNCTION_COMPLETE])?;
                Ok(1)
            }
            // VIRTIO_SCSI_T_AN_QUERY / AN_SUBSCRIBE: le32 event_actual, u8 response.
            1 | 2 if c.writable_len() >= 5 => {
                c.write_at(mem, 0, &[0, 0, 0, 0, response::OK])?;
                Ok(5)
            }
            _ => Ok(0),
        }
    }
}

impl VirtioDevice for VirtioScsi {
    fn device_id(&self) -> u16 {
        VIRTIO_ID_SCSI
    }

    fn class(&self) -> [u8; 3] {
        // Mass storage controller, SCSI (PCI Code and ID Assignment §1.2).
        [0x01, 0x00, 0x00]
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 3]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let b = self.config_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = usize::try_from(offset)
                .ok()
                .and_then(|o| b.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // sense_size (20) and cdb_size (24) are driver-writable (§5.6.4); values above the
        // defaults are clamped.
        let mut b = self.config_bytes();
        for (i, d) in data.iter().enumerate() {
            if let Some(x) = usize::try_from(offset).ok().and_then(|o| b.get_mut(o + i)) {
                *x = *d;
            }
        }
        let get = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        self.sense_size = get(20).min(SENSE_SIZE);
        self.cdb_size = get(24).clamp(6, CDB_SIZE);
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        // The event queue only holds buffers for events, which this host never raises.
        if index == 1 {
            return Ok(false);
        }
        let mut notify = false;
        while let Some(c) = queue.pop(mem)? {
            let len = if index == 0 {
                Self::control(&c, mem)?
            } else {
                self.request(&c, mem)?
            };
            notify |= queue.push_used(mem, c.head, len)?;
        }
        Ok(notify)
    }

    fn reset(&mut self) {
        self.cdb_size = CDB_SIZE;
        self.sense_size = SENSE_SIZE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use crate::irq::IrqLines;
    use crate::pci::PciDevice;
    use crate::scsi::SenseKey;
    use crate::virtio::mem::FlatMemory;
    use crate::virtio::pci::{layout, status, MsiSink, VirtioPci, VIRTIO_F_VERSION_1};
    use crate::virtio::queue::testing::{layout as qlayout, set_desc, used};
    use crate::virtio::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    struct Msis(Arc<Mutex<Vec<(u64, u32)>>>);
    impl MsiSink for Msis {
        fn signal(&self, addr: u64, data: u32) {
            self.0.lock().unwrap().push((addr, data));
        }
    }

    struct Rig {
        dev: VirtioPci<VirtioScsi>,
        mem: FlatMemory,
        lines: IrqLines,
        msis: Msis,
        q: SplitQueue,
        next_desc: u16,
        posted: u16,
    }

    const IRQ: u8 = 11;

    fn rig(msix: bool) -> Rig {
        let mut m = MemDisk::new(1 << 20);
        m.data[512..1024].fill(0x5a);
        let lines = IrqLines::new();
        let msis = Msis::default();
        let mut dev = VirtioPci::new(
            VirtioScsi::new(crate::scsi::ScsiDisk::new(Box::new(m), "VSCSI0")),
            lines.line(IRQ),
            Box::new(msis.clone()),
        );
        // Driver initialisation (§3.1.1), like Linux virtio_pci_modern.
        assert_eq!(dev.config_read(0, 4), 0x1048_1af4);
        dev.config_write(0x10, 4, 0xffff_ffff);
        assert_eq!(dev.config_read(0x10, 4), !(layout::BAR_SIZE - 1));
        dev.assign_bar0(0xe000_0000);
        assert_eq!(dev.bar0(), Some((0xe000_0000, u64::from(layout::BAR_SIZE))));
        if msix {
            dev.config_write(0x98 + 2, 2, 0x8000);
            for v in 0..4u64 {
                dev.bar_write(layout::MSIX_TABLE + 16 * v, 4, 0xfee0_0000);
                dev.bar_write(layout::MSIX_TABLE + 16 * v + 8, 4, 0x40 + v);
                dev.bar_write(layout::MSIX_TABLE + 16 * v + 12, 4, 0);
            }
        }
        dev.bar_write(0x14, 1, 0);
        dev.bar_write(0x14, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER));
        dev.bar_write(0x00, 4, 1);
        assert_eq!(dev.bar_read(0x04, 4), 1, "VERSION_1 in the high word");
        dev.bar_write(0x08, 4, 1);
        dev.bar_write(0x0c, 4, 1);
        dev.bar_write(
            0x14,
            1,
            u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        );
        assert_ne!(dev.bar_read(0x14, 1) as u8 & status::FEATURES_OK, 0);
        assert_eq!(dev.bar_read(0x12, 2), 3, "num_queues");
        let q = qlayout(16, 0x10000);
        dev.bar_write(0x16, 2, 2);
        assert_eq!(dev.bar_read(0x18, 2), u64::from(QUEUE_SIZE));
        dev.bar_write(0x18, 2, 16);
        dev.bar_write(0x1a, 2, if msix { 2 } else { 0xffff });
        dev.bar_write(0x20, 4, q.desc);
        dev.bar_write(0x24, 4, 0);
        dev.bar_write(0x28, 8, q.avail);
        dev.bar_write(0x30, 4, q.used);
        dev.bar_write(0x1c, 2, 1);
        dev.bar_write(0x14, 1, 0x0f);
        assert_eq!(dev.status(), 0x0f);
        // Device config: sense_size, cdb_size.
        assert_eq!(dev.bar_read(layout::DEVICE + 20, 4), 96);
        assert_eq!(dev.bar_read(layout::DEVICE + 24, 4), 32);
        Rig {
            dev,
            mem: FlatMemory(vec![0; 0x40000]),
            lines,
            msis,
            q,
            next_desc: 0,
            posted: 0,
        }
    }

    impl Rig {
        /// Submit a command to (target, lun) and return (response header+sense, data-in).
        fn cmd(
            &mut self,
            target: u8,
            lun: u16,
            cdb: &[u8],
            out: &[u8],
            in_len: u32,
        ) -> (Vec<u8>, Vec<u8>) {
            let base = 0x20000 + 0x4000 * u64::from(self.posted % 4);
            let mut req = vec![0u8; 51];
            req[0] = 1;
            req[1] = target;
            req[2..4].copy_from_slice(&(0x4000 | lun).to_be_bytes());
            req[19..19 + cdb.len()].copy_from_slice(cdb);
            self.mem.write(base, &req).unwrap();
            self.mem.write(base + 0x100, out).unwrap();
            let d = self.next_desc;
            let mut chain = vec![(base, 51u32, 0u16)];
            if !out.is_empty() {
                chain.push((base + 0x100, out.len() as u32, 0));
            }
            chain.push((base + 0x1000, 108, VIRTQ_DESC_F_WRITE));
            if in_len > 0 {
                chain.push((base + 0x1100, in_len, VIRTQ_DESC_F_WRITE));
            }
            let n = chain.len() as u16;
            for (i, (a, l, f)) in chain.into_iter().enumerate() {
                let idx = (d + i as u16) % 16;
                let last = i as u16 == n - 1;
                let flags = f | if last { 0 } else { VIRTQ_DESC_F_NEXT };
                set_desc(&mut self.mem, &self.q, idx, a, l, flags, (idx + 1) % 16);
            }
            self.next_desc = (d + n) % 16;
            crate::virtio::queue::testing::post(&mut self.mem, &self.q, d);
            self.dev.bar_write(layout::NOTIFY + 4 * 2, 2, 2);
            assert!(self.dev.has_work());
            self.dev.process(&mut self.mem);
            let (id, len, idx) = used(&self.mem, &self.q, self.posted);
            self.posted += 1;
            assert_eq!((id, idx), (u32::from(d), self.posted));
            let mut resp = vec![0u8; 108];
            self.mem.read(base + 0x1000, &mut resp).unwrap();
            let got_in = len.saturating_sub(108).min(in_len);
            let mut data = vec![0u8; got_in as usize];
            self.mem.read(base + 0x1100, &mut data).unwrap();
            (resp, data)
        }
    }

    #[test]
    fn inquiry_read_write_through_virtqueue_msix() {
        let mut r = rig(true);
        let (resp, data) = r.cmd(0, 0, &[0x12, 0, 0, 0, 96, 0], &[], 96);
        assert_eq!((resp[10], resp[11]), (0, response::OK));
        assert_eq!(&data[8..16], b"RINX    ");
        assert_eq!(
            u32::from_le_bytes(resp[4..8].try_into().unwrap()),
            96 - 36,
            "residual"
        );
        assert_eq!(r.msis.0.lock().unwrap().as_slice(), &[(0xfee0_0000, 0x42)]);
        // READ(10) of block 1.
        let (resp, data) = r.cmd(0, 0, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], &[], 512);
        assert_eq!(resp[10], 0);
        assert_eq!(data, vec![0x5a; 512]);
        // WRITE(10) then READ back.
        let (resp, _) = r.cmd(0, 0, &[0x2a, 0, 0, 0, 0, 9, 0, 0, 1, 0], &[0xc3; 512], 0);
        assert_eq!(resp[10], 0);
        let (_, data) = r.cmd(0, 0, &[0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0], &[], 512);
        assert_eq!(data, vec![0xc3; 512]);
        // Errors: CHECK CONDITION with autosense, LUN 1, target 1.
        let (resp, _) = r.cmd(0, 0, &[0x28, 0, 0xff, 0, 0, 0, 0, 0, 1, 0], &[], 512);
        assert_eq!(resp[10], Status::CheckCondition as u8);
        assert_eq!(u32::from_le_bytes(resp[0..4].try_into().unwrap()), 18);
        assert_eq!(
            (resp[12 + 2], resp[12 + 12]),
            (SenseKey::IllegalRequest as u8, 0x21)
        );
        let (resp, data) = r.cmd(0, 1, &[0x12, 0, 0, 0, 36, 0], &[], 36);
        assert_eq!(resp[10], 0);
        assert_eq!(data[0], 0x7f);
        let (resp, _) = r.cmd(1, 0, &[0, 0, 0, 0, 0, 0], &[], 0);
        assert_eq!(resp[11], response::BAD_TARGET);
        assert_eq!(r.dev.status(), 0x0f);
        assert!(r.lines.levels() & (1 << IRQ) == 0, "no INTx with MSI-X");
    }

    #[test]
    fn intx_and_isr() {
        let mut r = rig(false);
        r.cmd(0, 0, &[0, 0, 0, 0, 0, 0], &[], 0);
        assert_ne!(r.lines.levels() & (1 << IRQ), 0);
        assert_eq!(r.dev.bar_read(layout::ISR, 1), 1);
        assert_eq!(r.lines.levels() & (1 << IRQ), 0);
        assert_eq!(r.dev.bar_read(layout::ISR, 1), 0);
    }

    #[test]
    fn malformed_chain_needs_reset() {
        let mut r = rig(true);
        // A loop in the request queue.
        set_desc(&mut r.mem, &r.q, 0, 0x20000, 51, VIRTQ_DESC_F_NEXT, 0);
        crate::virtio::queue::testing::post(&mut r.mem, &r.q, 0);
        r.dev.bar_write(layout::NOTIFY + 8, 2, 2);
        r.dev.process(&mut r.mem);
        assert_ne!(r.dev.status() & status::DEVICE_NEEDS_RESET, 0);
        // Reset clears it; features without VERSION_1 are refused.
        r.dev.bar_write(0x14, 1, 0);
        assert_eq!(r.dev.status(), 0);
        r.dev.bar_write(0x14, 1, 3);
        r.dev.bar_write(0x08, 4, 0);
        r.dev.bar_write(0x0c, 4, 1);
        r.dev.bar_write(0x14, 1, 0x0b);
        assert_eq!(r.dev.status() & status::FEATURES_OK, 0);
        let _ = VIRTIO_F_VERSION_1;
    }

    #[test]
    fn short_buffers_do_not_panic() {
        let mut r = rig(true);
        // Request header shorter than 51 bytes but a full response buffer.
        set_desc(&mut r.mem, &r.q, 0, 0x20000, 10, VIRTQ_DESC_F_NEXT, 1);
        set_desc(&mut r.mem, &r.q, 1, 0x21000, 108, VIRTQ_DESC_F_WRITE, 0);
        crate::virtio::queue::testing::post(&mut r.mem, &r.q, 0);
        r.dev.bar_write(layout::NOTIFY + 8, 2, 2);
        r.dev.process(&mut r.mem);
        assert_eq!(r.mem.0[0x21000 + 11], response::FAILURE);
        // No response buffer at all.
        set_desc(&mut r.mem, &r.q, 2, 0x20000, 51, 0, 0);
        crate::virtio::queue::testing::post(&mut r.mem, &r.q, 2);
        r.dev.bar_write(layout::NOTIFY + 8, 2, 2);
        r.dev.process(&mut r.mem);
        assert_eq!(used(&r.mem, &r.q, 1), (2, 0, 2));
        assert_eq!(r.dev.status(), 0x0f);
    }
}
