//! A SCSI direct-access block device (SBC-3, with SBC-4 logical block provisioning: UNMAP and
//! WRITE SAME) over a [`BlockBackend`].

use super::cdb::Cdb;
use super::sense::{Sense, SenseKey};
use super::ScsiResponse;
use crate::block::BlockBackend;

/// Logical block size in bytes.
pub const BLOCK_SIZE: u32 = 512;
/// MAXIMUM TRANSFER LENGTH advertised in the Block Limits VPD page (blocks, 8 MiB); longer
/// transfers are rejected with INVALID FIELD IN CDB (SBC-3 §6.5.3).
pub const MAX_TRANSFER_BLOCKS: u32 = 16384;
/// MAXIMUM UNMAP LBA COUNT (Block Limits VPD): blocks one UNMAP command may deallocate in
/// all its descriptors together (128 MiB); more -> INVALID FIELD IN PARAMETER LIST.
pub const MAX_UNMAP_BLOCKS: u32 = 0x4_0000;
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (Block Limits VPD); more -> INVALID FIELD IN
/// PARAMETER LIST.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 64;
/// OPTIMAL UNMAP GRANULARITY (Block Limits VPD, blocks): 4 KiB, the host page / file system
/// block and the overlay cluster.
pub const UNMAP_GRANULARITY: u32 = 8;
/// MAXIMUM WRITE SAME LENGTH (Block Limits VPD, blocks, 128 MiB); longer -> INVALID FIELD IN
/// CDB. A NUMBER OF LOGICAL BLOCKS of 0 is invalid too (WSNZ = 1).
pub const MAX_WRITE_SAME_BLOCKS: u32 = 0x4_0000;
/// Vital product data pages supported, in ascending order (SPC-4 §7.8.13).
pub const VPD_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

const VENDOR: &[u8; 8] = b"RINX    ";
const PRODUCT: &[u8; 16] = b"VIRTUAL DISK    ";
const REVISION: &[u8; 4] = b"0001";

/// SAVING PARAMETERS NOT SUPPORTED (39h/00h): MODE SENSE with PC = saved values.
const SAVING_NOT_SUPPORTED: Sense = Sense::new(SenseKey::IllegalRequest, 0x39, 0x00);

/// Standard INQUIRY data (SPC-4 §6.6.2, table 142), 36 bytes, for a disk.
pub(crate) fn standard_inquiry() -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = 0x00; // peripheral qualifier 000b, direct access block device
    d[1] = 0x00; // RMB = 0: not removable
    d[2] = 0x06; // VERSION: SPC-4
    d[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
    d[4] = 36 - 5; // ADDITIONAL LENGTH
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    d
}

/// REPORT LUNS parameter data (SPC-4 §6.33) for the logical units `luns` (single-level
/// peripheral device addressing, SAM-5 §4.7.7).
pub(crate) fn report_luns(
    select_report: u8,
    alloc_len: u32,
    data_in_max: usize,
    luns: &[u16],
) -> ScsiResponse {
    let listed: &[u16] = match select_report {
        0x00 | 0x02 => luns,
        // Well-known logical units only: we have none.
        0x01 => &[],
        _ => return ScsiResponse::check(Sense::invalid_cdb_field(2, None)),
    };
    if alloc_len < 16 {
        return ScsiResponse::check(Sense::invalid_cdb_field(6, None));
    }
    let mut d = vec![0u8; 8];
    d[0..4].copy_from_slice(&((listed.len() * 8) as u32).to_be_bytes());
    for &lun in listed {
        let mut e = [0u8; 8];
        if lun < 256 {
            e[1] = lun as u8;
        } else {
            // Flat space addressing (SAM-5 §4.7.8).
            e[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
            e[1] = lun as u8;
        }
        d.extend_from_slice(&e);
    }
    ScsiResponse::good(d, (alloc_len as usize).min(data_in_max))
}

/// A SCSI disk: logical unit 0 of a target, 512-byte blocks, write-back cache (the guest
/// flushes with SYNCHRONIZE CACHE or FUA).
#[derive(Debug)]
pub struct ScsiDisk {
    backend: Box<dyn BlockBackend>,
    serial: String,
    stopped: bool,
}

impl ScsiDisk {
    /// A disk over `backend`; `serial` (ASCII, up to 20 characters kept) identifies it in the
    /// Unit Serial Number and Device Identification VPD pages.
    pub fn new(backend: Box<dyn BlockBackend>, serial: &str) -> Self {
        let serial: String = serial
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(20)
            .collect();
        Self {
            backend,
            serial,
            stopped: false,
        }
    }

    /// Number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.backend.size() / u64::from(BLOCK_SIZE)
    }

    /// The back-end (power-off handling, tests).
    pub fn backend_mut(&mut self) -> &mut dyn BlockBackend {
        self.backend.as_mut()
    }

    /// Execute one command: `cdb` as received, `data_out` the bytes the initiator sent, and
    /// `data_in_max` the size of the initiator's data-in buffer.
    pub fn execute(&mut self, cdb: &[u8], data_out: &[u8], data_in_max: usize) -> ScsiResponse {
        let parsed = match Cdb::parse(cdb) {
            Ok(c) => c,
            Err(sense) => return ScsiResponse::check(sense),
        };
        let r = self.run(parsed, data_out, data_in_max);
        if let Some(s) = &r.sense {
            log::debug!(target: "devices::scsi", "{parsed:?}: CHECK CONDITION {:?} {:02x}/{:02x}",
                s.key, s.asc, s.ascq);
        }
        r
    }

    fn run(&mut self, cdb: Cdb, data_out: &[u8], max: usize) -> ScsiResponse {
        let not_ready = self
            .stopped
            .then(|| ScsiResponse::check(Sense::NOT_READY_INIT_REQUIRED));
        match cdb {
            Cdb::TestUnitReady => not_ready.unwrap_or_else(|| ScsiResponse::good(Vec::new(), 0)),
            Cdb::RequestSense { alloc_len } => {
                // Autosense has already reported and cleared any error; only a stopped unit
                // has a pending condition (SPC-4 §6.39).
                let s = if self.stopped {
                    Sense::NOT_READY_INIT_REQUIRED
                } else {
                    Sense::NO_SENSE
                };
                ScsiResponse::good(s.to_fixed().to_vec(), usize::from(alloc_len).min(max))
            }
            Cdb::Inquiry {
                evpd,
                page,
                alloc_len,
            } => {
                let max = usize::from(alloc_len).min(max);
                if !evpd {
                    return ScsiResponse::good(standard_inquiry(), max);
                }
                match self.vpd_page(page) {
                    Some(d) => ScsiResponse::good(d, max),
                    None => ScsiResponse::check(Sense::invalid_cdb_field(2, None)),
                }
            }
            Cdb::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            } => self.mode_sense(
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                usize::from(alloc_len).min(max),
            ),
            Cdb::StartStopUnit { start, loej } => {
                if loej {
                    // The medium of a disk cannot be ejected.
                    return ScsiResponse::check(Sense::invalid_cdb_field(4, Some(1)));
                }
                if !start {
                    if let Err(e) = self.backend.flush() {
                        log::warn!(target: "devices::scsi", "flush at STOP UNIT: {e}");
                        return ScsiResponse::check(Sense::WRITE_ERROR);
                    }
                }
                self.stopped = !start;
                ScsiResponse::good(Vec::new(), 0)
            }
            Cdb::PreventAllowMediumRemoval { .. } => ScsiResponse::good(Vec::new(), 0),
            Cdb::ReadCapacity10 => {
                if let Some(r) = not_ready {
                    return r;
                }
                let last = self.blocks().saturating_sub(1).min(0xffff_ffff) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
                ScsiResponse::good(d, max)
            }
            Cdb::ReadCapacity16 { alloc_len } => {
                if let Some(r) = not_ready {
                    return r;
                }
                // SBC-4 §5.20.2, table 119: no protection, one logical block per physical
                // block; a writable disk is thin provisioned: LBPME = 1, LBPRZ = 1 (unmapped
                // blocks read as zeros).
                let mut d = vec![0u8; 32];
                d[0..8].copy_from_slice(&self.blocks().saturating_sub(1).to_be_bytes());
                d[8..12].copy_from_slice(&BLOCK_SIZE.to_be_bytes());
                if self.provisioning() {
                    d[14] = 0x80 | 0x40;
                }
                ScsiResponse::good(d, (alloc_len as usize).min(max))
            }
            Cdb::Read {
                lba,
                blocks,
                fua: _,
            } => {
                if let Some(r) = not_ready {
                    return r;
                }
                if let Err(r) = self.check_transfer(lba, blocks, max) {
                    return r;
                }
                let mut d = vec![0u8; blocks as usize * BLOCK_SIZE as usize];
                match self.backend.read_at(lba * u64::from(BLOCK_SIZE), &mut d) {
                    Ok(()) => ScsiResponse::good(d, max),
                    Err(e) => {
                        log::warn!(target: "devices::scsi", "read at LBA {lba}: {e}");
                        ScsiResponse::check(Self::with_lba(Sense::UNRECOVERED_READ_ERROR, lba))
                    }
                }
            }
            Cdb::Write { lba, blocks, fua } => {
                if let Some(r) = not_ready {
                    return r;
                }
                if self.backend.read_only() {
                    return ScsiResponse::check(Sense::WRITE_PROTECTED);
                }
                if let Err(r) = self.check_transfer(lba, blocks, data_out.len()) {
                    return r;
                }
                let len = blocks as usize * BLOCK_SIZE as usize;
                let res = self
                    .backend
                    .write_at(lba * u64::from(BLOCK_SIZE), &data_out[..len])
                    .and_then(|()| if fua { self.backend.flush() } else { Ok(()) });
                match res {
                    Ok(()) => ScsiResponse::good(Vec::new(), 0),
                    Err(e) => {
                        log::warn!(target: "devices::scsi", "write at LBA {lba}: {e}");
                        ScsiResponse::check(Self::with_lba(Sense::WRITE_ERROR, lba))
                    }
                }
            }
            Cdb::Verify { lba, blocks } => {
                if let Some(r) = not_ready {
                    return r;
                }
                match self.check_range(lba, blocks) {
                    Ok(()) => ScsiResponse::good(Vec::new(), 0),
                    Err(r) => r,
                }
            }
            Cdb::SynchronizeCache { lba, blocks } => {
                if let Some(r) = not_ready {
                    return r;
                }
                if let Err(r) = self.check_range(lba, blocks) {
                    return r;
                }
                // The whole cache is flushed whatever the range (SBC-3 §5.22 allows more).
                match self.backend.flush() {
                    Ok(()) => ScsiResponse::good(Vec::new(), 0),
                    Err(e) => {
                        log::warn!(target: "devices::scsi", "SYNCHRONIZE CACHE: {e}");
                        ScsiResponse::check(Sense::WRITE_ERROR)
                    }
                }
            }
            Cdb::Unmap { param_len } => {
                if let Some(r) = not_ready {
                    return r;
                }
                if self.backend.read_only() {
                    return ScsiResponse::check(Sense::WRITE_PROTECTED);
                }
                self.unmap(usize::from(param_len), data_out)
            }
            Cdb::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
                blocks_field,
            } => {
                if let Some(r) = not_ready {
                    return r;
                }
                if self.backend.read_only() {
                    return ScsiResponse::check(Sense::WRITE_PROTECTED);
                }
                self.write_same(lba, blocks, unmap, ndob, blocks_field, data_out)
            }
            Cdb::ReportLuns {
                select_report,
                alloc_len,
            } => report_luns(select_report, alloc_len, max, &[0]),
        }
    }

    /// Whether the disk advertises logical block provisioning (LBPME, UNMAP, WRITE SAME with
    /// UNMAP): every writable disk; a read-only one is reported fully provisioned.
    fn provisioning(&self) -> bool {
        !self.backend.read_only()
    }

    /// UNMAP with the `param_len`-byte parameter list at the start of `data_out` (SBC-4
    /// §5.32): an 8-byte header (UNMAP DATA LENGTH, UNMAP BLOCK DESCRIPTOR DATA LENGTH) and
    /// 16-byte block descriptors (LBA, NUMBER OF LOGICAL BLOCKS). Every descriptor is checked
    /// before any block is deallocated, so a bad list changes nothing.
    fn unmap(&mut self, param_len: usize, data_out: &[u8]) -> ScsiResponse {
        // A zero length transfers no list: not an error (SBC-4 §5.32.1).
        if param_len == 0 {
            return ScsiResponse::good(Vec::new(), 0);
        }
        if param_len < 8 {
            return ScsiResponse::check(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        if data_out.len() < param_len {
            return ScsiResponse::check(Sense::DATA_PHASE_ERROR);
        }
        let p = &data_out[..param_len];
        let be16 = |at: usize| usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
        // Lengths that claim more than the list holds are invalid (as QEMU does; SBC-4 leaves
        // the truncated case to the device server).
        if be16(0) + 2 > param_len {
            return ScsiResponse::check(Sense::invalid_param_field(0, None));
        }
        let desc_len = be16(2);
        if desc_len + 8 > param_len {
            return ScsiResponse::check(Sense::invalid_param_field(2, None));
        }
        // An incomplete last descriptor is ignored (SBC-4 §5.32.2).
        let count = desc_len / 16;
        if count > MAX_UNMAP_DESCRIPTORS as usize {
            return ScsiResponse::check(Sense::invalid_param_field(2, None));
        }
        let mut ranges = Vec::with_capacity(count);
        let mut total = 0u64;
        for i in 0..count {
            let d = &p[8 + 16 * i..8 + 16 * (i + 1)];
            let lba = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
            let blocks = u32::from_be_bytes(d[8..12].try_into().expect("4 bytes"));
            if let Err(r) = self.check_range(lba, blocks) {
                return r;
            }
            total += u64::from(blocks);
            if total > u64::from(MAX_UNMAP_BLOCKS) {
                return ScsiResponse::check(Sense::invalid_param_field(
                    (8 + 16 * i + 8) as u16,
                    None,
                ));
            }
            if blocks != 0 {
                ranges.push((lba, blocks));
            }
        }
        for (lba, blocks) in ranges {
            let b = u64::from(BLOCK_SIZE);
            if let Err(e) = self.backend.discard(lba * b, u64::from(blocks) * b) {
                log::warn!(target: "devices::scsi", "unmap at LBA {lba}: {e}");
                return ScsiResponse::check(Self::with_lba(Sense::WRITE_ERROR, lba));
            }
        }
        ScsiResponse::good(Vec::new(), 0)
    }

    /// WRITE SAME(10/16) (SBC-4 §5.48, §5.49): the one-block pattern from `data_out` (zeros
    /// with NDOB) written to `blocks` blocks from `lba`. With UNMAP and a zero pattern the
    /// blocks are deallocated (they read back as zeros: LBPRZ = 1); a non-zero pattern is
    /// written even with UNMAP, as unmapped blocks could not return it.
    fn write_same(
        &mut self,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
        blocks_field: u16,
        data_out: &[u8],
    ) -> ScsiResponse {
        if blocks == 0 || blocks > MAX_WRITE_SAME_BLOCKS {
            return ScsiResponse::check(Sense::invalid_cdb_field(blocks_field, None));
        }
        if let Err(r) = self.check_range(lba, blocks) {
            return r;
        }
        let bs = BLOCK_SIZE as usize;
        let pattern: &[u8] = if ndob {
            &[]
        } else if data_out.len() < bs {
            return ScsiResponse::check(Sense::DATA_PHASE_ERROR);
        } else {
            &data_out[..bs]
        };
        let off = lba * u64::from(BLOCK_SIZE);
        let len = u64::from(blocks) * u64::from(BLOCK_SIZE);
        let res = if pattern.iter().all(|&b| b == 0) {
            if unmap {
                self.backend.discard(off, len)
            } else {
                self.backend.write_zeroes(off, len)
            }
        } else {
            // Up to 256 blocks of the pattern per write.
            let chunk = pattern.repeat(blocks.min(256) as usize);
            let mut pos = off;
            let end = off + len;
            let mut r = Ok(());
            while pos < end && r.is_ok() {
                let n = (end - pos).min(chunk.len() as u64) as usize;
                r = self.backend.write_at(pos, &chunk[..n]);
                pos += n as u64;
            }
            r
        };
        match res {
            Ok(()) => ScsiResponse::good(Vec::new(), 0),
            Err(e) => {
                log::warn!(target: "devices::scsi", "write same at LBA {lba}: {e}");
                ScsiResponse::check(Self::with_lba(Sense::WRITE_ERROR, lba))
            }
        }
    }

    fn with_lba(s: Sense, lba: u64) -> Sense {
        match u32::try_from(lba) {
            Ok(l) => s.with_information(l),
            Err(_) => s,
        }
    }

    /// LOGICAL BLOCK ADDRESS OUT OF RANGE unless `lba..lba+blocks` is on the medium
    /// (SBC-3 §4.5).
    fn check_range(&self, lba: u64, blocks: u32) -> Result<(), ScsiResponse> {
        match lba.checked_add(u64::from(blocks)) {
            Some(end) if end <= self.blocks() && lba <= self.blocks() => Ok(()),
            _ => Err(ScsiResponse::check(Sense::LBA_OUT_OF_RANGE)),
        }
    }

    /// Range, MAXIMUM TRANSFER LENGTH, and the transport buffer (`avail` bytes) for a read
    /// or write of `blocks` blocks.
    fn check_transfer(&self, lba: u64, blocks: u32, avail: usize) -> Result<(), ScsiResponse> {
        self.check_range(lba, blocks)?;
        if blocks > MAX_TRANSFER_BLOCKS {
            return Err(ScsiResponse::check(Sense::INVALID_FIELD_IN_CDB));
        }
        if (blocks as usize) * (BLOCK_SIZE as usize) > avail {
            return Err(ScsiResponse::check(Sense::DATA_PHASE_ERROR));
        }
        Ok(())
    }

    /// Vital product data page `page` (SPC-4 §7.8, SBC-3 §6.5), or `None` if unsupported.
    fn vpd_page(&self, page: u8) -> Option<Vec<u8>> {
        let body: Vec<u8> = match page {
            // Supported VPD Pages (SPC-4 §7.8.13).
            0x00 => VPD_PAGES.to_vec(),
            // Unit Serial Number (SPC-4 §7.8.15).
            0x80 => self.serial.as_bytes().to_vec(),
            // Device Identification (SPC-4 §7.8.6): one T10 vendor ID based designator
            // (code set ASCII, association logical unit, type 1).
            0x83 => {
                let mut id = VENDOR.to_vec();
                id.extend_from_slice(PRODUCT);
                id.extend_from_slice(self.serial.as_bytes());
                let mut d = vec![0x02, 0x01, 0x00, id.len() as u8];
                d.extend_from_slice(&id);
                d
            }
            // Block Limits (SBC-4 §6.6.4; offsets here are the page's minus the 4-byte header).
            0xb0 => {
                let mut d = vec![0u8; 0x3c];
                // WSNZ: a WRITE SAME of 0 blocks (= to the end of the medium) is invalid.
                d[0] = 0x01;
                // OPTIMAL TRANSFER LENGTH GRANULARITY: 8 blocks (4 KiB).
                d[2..4].copy_from_slice(&8u16.to_be_bytes());
                d[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
                d[8..12].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
                if self.provisioning() {
                    d[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
                    d[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
                    d[24..28].copy_from_slice(&UNMAP_GRANULARITY.to_be_bytes());
                    d[32..40].copy_from_slice(&u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
                }
                d
            }
            // Block Device Characteristics (SBC-3 §6.5.2): non-rotating medium.
            0xb1 => {
                let mut d = vec![0u8; 0x3c];
                d[0..2].copy_from_slice(&1u16.to_be_bytes());
                d
            }
            // Logical Block Provisioning (SBC-4 §6.6.6): a writable disk has LBPU (UNMAP),
            // LBPWS / LBPWS10 (WRITE SAME(16/10) with UNMAP), LBPRZ = 001b (unmapped blocks
            // read as zeros), no anchoring, PROVISIONING TYPE 010b (thin); a read-only one
            // is fully provisioned (all zero).
            0xb2 => {
                if self.provisioning() {
                    vec![0x00, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0x00]
                } else {
                    vec![0u8; 4]
                }
            }
            _ => return None,
        };
        let mut d = vec![0x00, page];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&body);
        Some(d)
    }

    /// Mode page `page` for page control `pc` (0 current, 1 changeable, 2 default).
    fn mode_page(page: u8, pc: u8) -> Vec<u8> {
        let changeable = pc == 1;
        match page {
            // Caching (SBC-3 §6.4.5): WCE = 1 (write-back cache; the guest must flush).
            0x08 => {
                let mut p = vec![0u8; 20];
                p[0] = 0x08;
                p[1] = 18;
                if !changeable {
                    p[2] = 0x04;
                }
                p
            }
            // Control (SPC-4 §7.5.8): unrestricted reordering, fixed-format sense.
            _ => {
                let mut p = vec![0u8; 12];
                p[0] = 0x0a;
                p[1] = 10;
                if !changeable {
                    p[3] = 0x10;
                    // BUSY TIMEOUT PERIOD: unlimited.
                    p[8] = 0xff;
                    p[9] = 0xff;
                }
                p
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mode_sense(
        &self,
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        max: usize,
    ) -> ScsiResponse {
        if pc == 3 {
            return ScsiResponse::check(SAVING_NOT_SUPPORTED);
        }
        let pages: &[u8] = match page {
            0x08 => &[0x08],
            0x0a => &[0x0a],
            0x3f => &[0x08, 0x0a],
            _ => return ScsiResponse::check(Sense::invalid_cdb_field(2, Some(5))),
        };
        // Subpage 00h, or FFh (all subpages) with page 3Fh.
        if subpage != 0 && !(page == 0x3f && subpage == 0xff) {
            return ScsiResponse::check(Sense::invalid_cdb_field(3, None));
        }
        let mut body = Vec::new();
        if !dbd {
            let blocks = self.blocks();
            if ten && llbaa {
                // Long LBA block descriptor (SBC-3 §6.4.2.3).
                body.extend_from_slice(&blocks.to_be_bytes());
                body.extend_from_slice(&[0; 4]);
                body.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
            } else {
                // Short LBA block descriptor (SBC-3 §6.4.2.2).
                let n = u32::try_from(blocks).unwrap_or(0xffff_ffff);
                body.extend_from_slice(&n.to_be_bytes());
                // DENSITY CODE 0, then the 24-bit LOGICAL BLOCK LENGTH.
                body.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
            }
        }
        let bd_len = body.len();
        for &p in pages {
            body.extend_from_slice(&Self::mode_page(p, pc));
        }
        // DEVICE-SPECIFIC PARAMETER (SBC-3 §6.4.1): WP, DPOFUA (FUA is honoured).
        let dsp = if self.backend.read_only() { 0x80 } else { 0 } | 0x10;
        let mut d = if ten {
            let len = (body.len() + 6) as u16;
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&len.to_be_bytes());
            h[3] = dsp;
            h[4] = u8::from(bd_len == 16);
            h[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
            h
        } else {
            vec![(body.len() + 3) as u8, 0, dsp, bd_len as u8]
        };
        d.extend_from_slice(&body);
        ScsiResponse::good(d, max)
    }
}

impl super::ScsiTarget for ScsiDisk {
    fn execute(&mut self, cdb: &[u8], data_out: &[u8], data_in_max: usize) -> ScsiResponse {
        ScsiDisk::execute(self, cdb, data_out, data_in_max)
    }
    fn backend_mut(&mut self) -> &mut dyn BlockBackend {
        ScsiDisk::backend_mut(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use crate::scsi::Status;

    const BLOCKS: usize = 2048;

    fn disk() -> ScsiDisk {
        let mut m = MemDisk::new(BLOCKS * 512);
        for (i, b) in m.data.iter_mut().enumerate() {
            *b = (i / 512) as u8;
        }
        ScsiDisk::new(Box::new(m), "RINX-0001")
    }

    fn exec(d: &mut ScsiDisk, cdb: &[u8]) -> ScsiResponse {
        d.execute(cdb, &[], 1 << 20)
    }

    fn sense_of(r: &ScsiResponse) -> (SenseKey, u8, u8) {
        assert_eq!(r.status, Status::CheckCondition, "{r:?}");
        let s = r.sense.expect("sense");
        (s.key, s.asc, s.ascq)
    }

    fn flushes(d: &ScsiDisk) -> u64 {
        let s = format!("{:?}", d.backend);
        let i = s.find("flushes: ").unwrap() + 9;
        s[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn test_unit_ready_and_start_stop() {
        let mut d = disk();
        assert_eq!(exec(&mut d, &[0, 0, 0, 0, 0, 0]).status, Status::Good);
        assert_eq!(exec(&mut d, &[0x1b, 0, 0, 0, 0, 0]).status, Status::Good);
        assert_eq!(flushes(&d), 1);
        let r = exec(&mut d, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(sense_of(&r), (SenseKey::NotReady, 0x04, 0x02));
        let r = exec(&mut d, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(sense_of(&r), (SenseKey::NotReady, 0x04, 0x02));
        let r = exec(&mut d, &[0x03, 0, 0, 0, 18, 0]);
        assert_eq!(r.data_in[2], 0x02);
        assert_eq!(r.data_in[12], 0x04);
        assert_eq!(exec(&mut d, &[0x1b, 0, 0, 0, 1, 0]).status, Status::Good);
        assert_eq!(exec(&mut d, &[0, 0, 0, 0, 0, 0]).status, Status::Good);
        // LOEJ on a disk.
        let r = exec(&mut d, &[0x1b, 0, 0, 0, 3, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
    }

    #[test]
    fn request_sense_no_sense() {
        let mut d = disk();
        let r = exec(&mut d, &[0x03, 0, 0, 0, 252, 0]);
        assert_eq!(r.status, Status::Good);
        assert_eq!(r.data_in.len(), 18);
        assert_eq!((r.data_in[0], r.data_in[2], r.data_in[12]), (0x70, 0, 0));
        // Allocation length truncates.
        assert_eq!(exec(&mut d, &[0x03, 0, 0, 0, 8, 0]).data_in.len(), 8);
        // DESC = 1 unsupported.
        let r = exec(&mut d, &[0x03, 1, 0, 0, 18, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
    }

    #[test]
    fn inquiry_standard_and_vpd() {
        let mut d = disk();
        let r = exec(&mut d, &[0x12, 0, 0, 0, 96, 0]);
        assert_eq!(r.data_in.len(), 36);
        assert_eq!(r.data_in[0], 0);
        assert_eq!(r.data_in[2], 6);
        assert_eq!(&r.data_in[8..16], b"RINX    ");
        assert_eq!(exec(&mut d, &[0x12, 0, 0, 0, 5, 0]).data_in.len(), 5);
        let r = exec(&mut d, &[0x12, 1, 0x00, 0, 255, 0]);
        assert_eq!(&r.data_in, &[0, 0, 0, 6, 0, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
        let r = exec(&mut d, &[0x12, 1, 0x80, 0, 255, 0]);
        assert_eq!(&r.data_in[4..], b"RINX-0001");
        assert_eq!(r.data_in[3], 9);
        let r = exec(&mut d, &[0x12, 1, 0x83, 0, 255, 0]);
        assert_eq!(&r.data_in[4..8], &[0x02, 0x01, 0x00, 33]);
        assert_eq!(&r.data_in[8..16], b"RINX    ");
        assert_eq!(r.data_in.len(), 4 + 4 + 33);
        let r = exec(&mut d, &[0x12, 1, 0xb0, 0, 255, 0]);
        assert_eq!(r.data_in.len(), 64);
        assert_eq!(&r.data_in[8..12], &MAX_TRANSFER_BLOCKS.to_be_bytes());
        let r = exec(&mut d, &[0x12, 1, 0xb1, 0, 255, 0]);
        assert_eq!(&r.data_in[4..6], &[0, 1]);
        let r = exec(&mut d, &[0x12, 1, 0xb0, 0, 255, 0]);
        assert_eq!(r.data_in[4], 0x01, "WSNZ");
        assert_eq!(&r.data_in[20..24], &MAX_UNMAP_BLOCKS.to_be_bytes());
        assert_eq!(&r.data_in[24..28], &MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        assert_eq!(&r.data_in[28..32], &8u32.to_be_bytes());
        assert_eq!(
            &r.data_in[36..44],
            &u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes()
        );
        let r = exec(&mut d, &[0x12, 1, 0xb2, 0, 255, 0]);
        // LBPU, LBPWS, LBPWS10, LBPRZ = 001b; thin provisioned.
        assert_eq!(&r.data_in, &[0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0]);
        let r = exec(&mut d, &[0x12, 1, 0x89, 0, 255, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
        assert_eq!(r.sense.unwrap().to_fixed()[17], 2);
    }

    #[test]
    fn read_capacity() {
        let mut d = disk();
        let r = exec(&mut d, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r.data_in, &[0, 0, 0x07, 0xff, 0, 0, 2, 0]);
        let mut c = [0u8; 16];
        c[0] = 0x9e;
        c[1] = 0x10;
        c[13] = 32;
        let r = exec(&mut d, &c);
        assert_eq!(r.data_in.len(), 32);
        assert_eq!(
            &r.data_in[0..12],
            &[0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0]
        );
        assert_eq!(r.data_in[14], 0xc0, "LBPME, LBPRZ");
        c[13] = 12;
        assert_eq!(exec(&mut d, &c).data_in.len(), 12);
    }

    /// An UNMAP parameter list with `descs` (LBA, blocks) descriptors.
    fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
        let mut p = vec![0u8; 8];
        p[0..2].copy_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
        p[2..4].copy_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
        for &(lba, n) in descs {
            p.extend_from_slice(&lba.to_be_bytes());
            p.extend_from_slice(&n.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p
    }

    fn unmap_cdb(len: usize) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = 0x42;
        c[7..9].copy_from_slice(&(len as u16).to_be_bytes());
        c
    }

    fn read_block(d: &mut ScsiDisk, lba: u32) -> Vec<u8> {
        let mut c = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        exec(d, &c).data_in
    }

    #[test]
    fn unmap_zeroes_ranges_and_validates_the_list() {
        let mut d = disk();
        let p = unmap_list(&[(10, 3), (100, 1), (200, 0)]);
        let r = d.execute(&unmap_cdb(p.len()), &p, 0);
        assert_eq!(r.status, Status::Good, "{r:?}");
        for (lba, want) in [
            (9, 9u8),
            (10, 0),
            (12, 0),
            (13, 13),
            (100, 0),
            (101, 101),
            (200, 200),
        ] {
            assert_eq!(read_block(&mut d, lba), vec![want; 512], "LBA {lba}");
        }
        // PARAMETER LIST LENGTH 0: nothing to do.
        assert_eq!(d.execute(&unmap_cdb(0), &[], 0).status, Status::Good);
        // 1-7 bytes: PARAMETER LIST LENGTH ERROR.
        let r = d.execute(&unmap_cdb(7), &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x1a, 0));
        // Fewer bytes sent than announced.
        let r = d.execute(&unmap_cdb(p.len()), &p[..20], 0);
        assert_eq!(sense_of(&r), (SenseKey::AbortedCommand, 0x4b, 0));
        // Descriptor data length beyond the list: INVALID FIELD IN PARAMETER LIST at byte 2.
        let mut bad = unmap_list(&[(20, 1)]);
        bad[3] = 32;
        let r = d.execute(&unmap_cdb(bad.len()), &bad, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x26, 0));
        let f = r.sense.unwrap().to_fixed();
        assert_eq!((f[15], f[16], f[17]), (0x80, 0, 2));
        assert_eq!(read_block(&mut d, 20), vec![20u8; 512], "nothing unmapped");
        // UNMAP DATA LENGTH beyond the list: byte 0.
        let mut bad = unmap_list(&[(20, 1)]);
        bad[1] = 200;
        let r = d.execute(&unmap_cdb(bad.len()), &bad, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x26, 0));
        assert_eq!(r.sense.unwrap().to_fixed()[17], 0);
        // LBA out of range in the second descriptor: the first is not applied either.
        let p = unmap_list(&[(30, 1), (BLOCKS as u64 - 1, 2)]);
        let r = d.execute(&unmap_cdb(p.len()), &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x21, 0));
        assert_eq!(read_block(&mut d, 30), vec![30u8; 512]);
        let p = unmap_list(&[(u64::MAX, 1)]);
        let r = d.execute(&unmap_cdb(p.len()), &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x21, 0));
        // A truncated last descriptor is ignored.
        let mut p = unmap_list(&[(40, 1)]);
        p.extend_from_slice(&[0; 8]);
        p[3] = 24;
        p[1] = 30;
        assert_eq!(d.execute(&unmap_cdb(p.len()), &p, 0).status, Status::Good);
        assert_eq!(read_block(&mut d, 40), vec![0u8; 512]);
        // Too many descriptors; too many blocks in total.
        let many: Vec<(u64, u32)> = (0..=MAX_UNMAP_DESCRIPTORS as u64).map(|i| (i, 1)).collect();
        let p = unmap_list(&many);
        let r = d.execute(&unmap_cdb(p.len()), &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x26, 0));
        let mut big = MemDisk::new((MAX_UNMAP_BLOCKS as usize + 16) * 512);
        big.data.fill(0xaa);
        let mut d2 = ScsiDisk::new(Box::new(big), "B");
        let p = unmap_list(&[(0, 8), (8, MAX_UNMAP_BLOCKS - 7)]);
        let r = d2.execute(&unmap_cdb(p.len()), &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x26, 0));
        assert_eq!(r.sense.unwrap().to_fixed()[17], 8 + 16 + 8);
        // ANCHOR: not supported.
        let mut c = unmap_cdb(p.len());
        c[1] = 1;
        let r = d.execute(&c, &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
        // A read-only disk is write protected and does not advertise provisioning.
        let mut ro = MemDisk::new(64 * 512);
        ro.read_only = true;
        let mut d3 = ScsiDisk::new(Box::new(ro), "RO");
        let p = unmap_list(&[(0, 1)]);
        let r = d3.execute(&unmap_cdb(p.len()), &p, 0);
        assert_eq!(sense_of(&r), (SenseKey::DataProtect, 0x27, 0));
        let r = exec(&mut d3, &[0x12, 1, 0xb2, 0, 255, 0]);
        assert_eq!(&r.data_in, &[0, 0xb2, 0, 4, 0, 0, 0, 0]);
    }

    fn write_same_cdb(sixteen: bool, flags: u8, lba: u64, n: u32) -> Vec<u8> {
        if sixteen {
            let mut c = vec![0u8; 16];
            c[0] = 0x93;
            c[1] = flags;
            c[2..10].copy_from_slice(&lba.to_be_bytes());
            c[10..14].copy_from_slice(&n.to_be_bytes());
            c
        } else {
            let mut c = vec![0u8; 10];
            c[0] = 0x41;
            c[1] = flags;
            c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            c[7..9].copy_from_slice(&(n as u16).to_be_bytes());
            c
        }
    }

    #[test]
    fn write_same_pattern_zero_and_unmap() {
        let mut d = disk();
        // WRITE SAME(10) of a pattern over 3 blocks.
        let pat: Vec<u8> = (0..512).map(|i| (i * 7) as u8).collect();
        let r = d.execute(&write_same_cdb(false, 0, 50, 3), &pat, 0);
        assert_eq!(r.status, Status::Good, "{r:?}");
        for lba in 50..53 {
            assert_eq!(read_block(&mut d, lba), pat);
        }
        assert_eq!(read_block(&mut d, 53), vec![53u8; 512]);
        // The UNMAP bit with a non-zero pattern still writes the pattern.
        let r = d.execute(&write_same_cdb(true, 0x08, 60, 2), &pat, 0);
        assert_eq!(r.status, Status::Good);
        assert_eq!(read_block(&mut d, 61), pat);
        // Zeros with UNMAP (deallocate) and without (write zeros), both forms.
        for (sixteen, flags, lba) in [(false, 0x08, 70), (true, 0x08, 80), (true, 0, 90)] {
            let r = d.execute(&write_same_cdb(sixteen, flags, lba, 4), &[0u8; 512], 0);
            assert_eq!(r.status, Status::Good);
            assert_eq!(read_block(&mut d, lba as u32 + 3), vec![0u8; 512]);
            assert_eq!(read_block(&mut d, lba as u32 + 4), vec![lba as u8 + 4; 512]);
        }
        // NDOB: no data-out buffer, zeros.
        let r = d.execute(&write_same_cdb(true, 0x09, 100, 1), &[], 0);
        assert_eq!(r.status, Status::Good);
        assert_eq!(read_block(&mut d, 100), vec![0u8; 512]);
        // No data-out block without NDOB: data phase error, nothing written.
        let r = d.execute(&write_same_cdb(true, 0, 110, 1), &[1; 100], 0);
        assert_eq!(sense_of(&r), (SenseKey::AbortedCommand, 0x4b, 0));
        assert_eq!(read_block(&mut d, 110), vec![110u8; 512]);
        // 0 blocks (WSNZ = 1) and more than MAXIMUM WRITE SAME LENGTH: INVALID FIELD IN CDB
        // pointing at NUMBER OF LOGICAL BLOCKS.
        for (sixteen, n, byte) in [
            (false, 0, 7),
            (true, 0, 10),
            (true, MAX_WRITE_SAME_BLOCKS + 1, 10),
        ] {
            let r = d.execute(&write_same_cdb(sixteen, 0, 0, n), &pat, 0);
            assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
            assert_eq!(r.sense.unwrap().to_fixed()[17], byte);
        }
        // Past the end.
        let r = d.execute(&write_same_cdb(true, 0, BLOCKS as u64 - 1, 2), &pat, 0);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x21, 0));
        // ANCHOR, WRPROTECT, the obsolete bits and NDOB in WRITE SAME(10): invalid.
        for (sixteen, flags) in [(false, 0x10), (true, 0x20), (false, 0x02), (false, 0x01)] {
            let r = d.execute(&write_same_cdb(sixteen, flags, 0, 1), &pat, 0);
            assert_eq!(
                sense_of(&r),
                (SenseKey::IllegalRequest, 0x24, 0),
                "{flags:#x}"
            );
        }
        assert_eq!(read_block(&mut d, 0), vec![0u8; 512]);
        assert_eq!(read_block(&mut d, 1), vec![1u8; 512]);
    }

    #[test]
    fn read_write_all_sizes() {
        let mut d = disk();
        // READ(6) of block 5.
        let r = exec(&mut d, &[0x08, 0, 0, 5, 1, 0]);
        assert_eq!(r.data_in, vec![5u8; 512]);
        // READ(10) of blocks 7-8.
        let r = exec(&mut d, &[0x28, 0, 0, 0, 0, 7, 0, 0, 2, 0]);
        assert_eq!(&r.data_in[..512], &[7u8; 512][..]);
        assert_eq!(&r.data_in[512..], &[8u8; 512][..]);
        // READ(10) of zero blocks: no data, GOOD.
        let r = exec(&mut d, &[0x28, 0, 0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!((r.status, r.data_in.len()), (Status::Good, 0));
        // WRITE(6), WRITE(10), WRITE(12), WRITE(16) then read back.
        let data = vec![0xabu8; 512];
        assert_eq!(
            d.execute(&[0x0a, 0, 0, 1, 1, 0], &data, 0).status,
            Status::Good
        );
        let w10 = [0x2a, 0, 0, 0, 0, 2, 0, 0, 1, 0];
        assert_eq!(d.execute(&w10, &data, 0).status, Status::Good);
        let mut w12 = [0u8; 12];
        w12[0] = 0xaa;
        w12[5] = 3;
        w12[9] = 1;
        assert_eq!(d.execute(&w12, &data, 0).status, Status::Good);
        let mut w16 = [0u8; 16];
        w16[0] = 0x8a;
        w16[9] = 4;
        w16[13] = 1;
        assert_eq!(d.execute(&w16, &data, 0).status, Status::Good);
        let mut r16 = w16;
        r16[0] = 0x88;
        r16[9] = 1;
        r16[13] = 4;
        let r = exec(&mut d, &r16);
        assert_eq!(r.data_in, vec![0xab; 2048]);
        let mut r12 = w12;
        r12[0] = 0xa8;
        assert_eq!(exec(&mut d, &r12).data_in, vec![0xab; 512]);
        assert_eq!(flushes(&d), 0);
        // FUA write flushes before completion.
        let fua = [0x2a, 0x08, 0, 0, 0, 2, 0, 0, 1, 0];
        assert_eq!(d.execute(&fua, &data, 0).status, Status::Good);
        assert_eq!(flushes(&d), 1);
    }

    #[test]
    fn read_write_errors() {
        let mut d = disk();
        // Last block is fine, one past is out of range.
        let r = exec(&mut d, &[0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 1, 0]);
        assert_eq!(r.status, Status::Good);
        let r = exec(&mut d, &[0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x21, 0));
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        c[13] = 1;
        assert_eq!(
            sense_of(&exec(&mut d, &c)),
            (SenseKey::IllegalRequest, 0x21, 0)
        );
        // Over the maximum transfer length.
        let mut d = ScsiDisk::new(Box::new(MemDisk::new(64 << 20)), "big");
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[10..14].copy_from_slice(&(MAX_TRANSFER_BLOCKS + 1).to_be_bytes());
        assert_eq!(
            sense_of(&exec(&mut d, &c)),
            (SenseKey::IllegalRequest, 0x24, 0)
        );
        // Data-in buffer too small; data-out too short.
        let r = d.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[], 1000);
        assert_eq!(sense_of(&r), (SenseKey::AbortedCommand, 0x4b, 0));
        let r = d.execute(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], &[0; 1000], 0);
        assert_eq!(sense_of(&r), (SenseKey::AbortedCommand, 0x4b, 0));
        // Write protected.
        let mut m = MemDisk::new(4096);
        m.read_only = true;
        let mut d = ScsiDisk::new(Box::new(m), "ro");
        let r = d.execute(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0; 512], 0);
        assert_eq!(sense_of(&r), (SenseKey::DataProtect, 0x27, 0));
        // ...and MODE SENSE reports WP.
        let r = exec(&mut d, &[0x1a, 0x08, 0x3f, 0, 255, 0]);
        assert_eq!(r.data_in[2] & 0x80, 0x80);
    }

    #[derive(Debug)]
    struct Failing;
    impl BlockBackend for Failing {
        fn size(&self) -> u64 {
            4096
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, _: u64, _: &mut [u8]) -> Result<(), crate::block::BlockError> {
            Err(crate::block::BlockError::ReadOnly)
        }
        fn write_at(&mut self, _: u64, _: &[u8]) -> Result<(), crate::block::BlockError> {
            Err(crate::block::BlockError::ReadOnly)
        }
        fn flush(&mut self) -> Result<(), crate::block::BlockError> {
            Err(crate::block::BlockError::ReadOnly)
        }
    }

    #[test]
    fn host_errors_are_medium_errors() {
        let mut d = ScsiDisk::new(Box::new(Failing), "f");
        let r = exec(&mut d, &[0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0]);
        assert_eq!(sense_of(&r), (SenseKey::MediumError, 0x11, 0));
        assert_eq!(r.sense.unwrap().information, Some(3));
        let r = d.execute(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0; 512], 0);
        assert_eq!(sense_of(&r), (SenseKey::MediumError, 0x0c, 0));
        let r = exec(&mut d, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sense_of(&r), (SenseKey::MediumError, 0x0c, 0));
    }

    #[test]
    fn synchronize_cache_and_verify() {
        let mut d = disk();
        assert_eq!(
            exec(&mut d, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).status,
            Status::Good
        );
        let mut c = [0u8; 16];
        c[0] = 0x91;
        assert_eq!(exec(&mut d, &c).status, Status::Good);
        assert_eq!(flushes(&d), 2);
        let r = exec(&mut d, &[0x35, 0, 0, 0, 0x08, 0x00, 0, 0, 1, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x21, 0));
        assert_eq!(
            exec(&mut d, &[0x2f, 0, 0, 0, 0, 0, 0, 0, 8, 0]).status,
            Status::Good
        );
        let r = exec(&mut d, &[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
    }

    #[test]
    fn mode_sense_6_and_10() {
        let mut d = disk();
        let r = exec(&mut d, &[0x1a, 0, 0x3f, 0, 255, 0]);
        // Header 4 + block descriptor 8 + caching 20 + control 12.
        assert_eq!(r.data_in.len(), 44);
        assert_eq!(r.data_in[0], 43);
        assert_eq!(r.data_in[2], 0x10);
        assert_eq!(r.data_in[3], 8);
        assert_eq!(&r.data_in[4..8], &(BLOCKS as u32).to_be_bytes());
        assert_eq!(&r.data_in[12..15], &[0x08, 18, 0x04]);
        assert_eq!(&r.data_in[32..34], &[0x0a, 10]);
        // Caching page only, no block descriptors.
        let r = exec(&mut d, &[0x1a, 0x08, 0x08, 0, 255, 0]);
        assert_eq!(r.data_in.len(), 24);
        assert_eq!(r.data_in[3], 0);
        // Changeable values: nothing is changeable.
        let r = exec(&mut d, &[0x1a, 0x08, 0x48, 0, 255, 0]);
        assert_eq!(r.data_in[6], 0);
        // MODE SENSE(10) with LLBAA: long descriptor.
        let r = exec(&mut d, &[0x5a, 0x10, 0x0a, 0, 0, 0, 0, 0, 255, 0]);
        assert_eq!(r.data_in.len(), 8 + 16 + 12);
        assert_eq!(&r.data_in[0..2], &((8 + 16 + 12 - 2) as u16).to_be_bytes());
        assert_eq!(r.data_in[4], 1);
        assert_eq!(r.data_in[7], 16);
        // Errors: unsupported page, subpage, saved values.
        let r = exec(&mut d, &[0x1a, 0, 0x1c, 0, 255, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
        let r = exec(&mut d, &[0x1a, 0, 0x08, 1, 255, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
        assert_eq!(
            exec(&mut d, &[0x1a, 0, 0x3f, 0xff, 255, 0]).status,
            Status::Good
        );
        let r = exec(&mut d, &[0x1a, 0, 0xc8, 0, 255, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x39, 0));
    }

    #[test]
    fn report_luns_and_unsupported_lun() {
        let mut d = disk();
        let r = exec(&mut d, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(
            &r.data_in,
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let r = exec(&mut d, &[0xa0, 0, 1, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(&r.data_in, &[0; 8]);
        let r = exec(&mut d, &[0xa0, 0, 7, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));
        let r = exec(&mut d, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x24, 0));

        let r = crate::scsi::unsupported_lun(&[0x12, 0, 0, 0, 36, 0], 64, &[0]);
        assert_eq!(r.data_in[0], 0x7f);
        let r = crate::scsi::unsupported_lun(&[0x00, 0, 0, 0, 0, 0], 64, &[0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x25, 0));
        let r =
            crate::scsi::unsupported_lun(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 64, &[0, 300]);
        assert_eq!(&r.data_in[0..4], &[0, 0, 0, 16]);
        assert_eq!(&r.data_in[16..18], &[0x41, 0x2c]);
    }

    #[test]
    fn unknown_opcode() {
        let mut d = disk();
        let r = exec(&mut d, &[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sense_of(&r), (SenseKey::IllegalRequest, 0x20, 0));
    }

    /// The fuzz target's property (fuzz/fuzz_targets/scsi_cdb.rs) on pseudo-random CDBs biased
    /// towards valid opcodes: only status and sense come back, data-in never exceeds the buffer.
    #[test]
    fn random_cdbs_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ops = [
            0x00, 0x03, 0x08, 0x0a, 0x12, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2f, 0x35, 0x5a,
            0x88, 0x8a, 0x8f, 0x91, 0x9e, 0xa0, 0xa8, 0xaa, 0xaf, 0x41, 0x42, 0x93,
        ];
        let mut d = ScsiDisk::new(Box::new(MemDisk::new(64 * 512)), "R");
        for _ in 0..50_000 {
            let mut cdb = [0u8; 16];
            for b in cdb.iter_mut() {
                let r = next();
                // Mostly small values so lengths and LBAs often fall in range.
                *b = if r & 3 == 0 {
                    r as u8
                } else {
                    (r >> 8) as u8 & 0x0f
                };
            }
            cdb[0] = ops[(next() % ops.len() as u64) as usize];
            let len = (next() % 17) as usize;
            let max = (next() % 40_000) as usize;
            // Data-out with sparse small values: UNMAP lists and WRITE SAME patterns that are
            // sometimes well formed.
            let mut out = vec![0u8; (next() % 40_000) as usize];
            for _ in 0..8 {
                if !out.is_empty() {
                    let i = (next() % out.len().min(64) as u64) as usize;
                    out[i] = (next() % 48) as u8;
                }
            }
            let r = d.execute(&cdb[..len], &out, max);
            assert!(r.data_in.len() <= max);
            assert_eq!(r.status == Status::CheckCondition, r.sense.is_some());
        }
    }
}
