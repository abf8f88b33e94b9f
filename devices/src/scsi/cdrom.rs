//! A SCSI CD-ROM drive (MMC-6 basics) over a read-only [`BlockBackend`] holding an ISO 9660
//! image: one data track of 2048-byte blocks, a removable medium that the guest may lock
//! (PREVENT ALLOW MEDIUM REMOVAL) and eject/load (START STOP UNIT with LOEJ).
//!
//! Commands: TEST UNIT READY, REQUEST SENSE, INQUIRY (peripheral device type 05h, RMB = 1;
//! VPD 00/80/83), MODE SENSE(6/10) (page 2Ah, CD capabilities and mechanical status),
//! START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, READ CAPACITY(10), READ(6/10/12/16),
//! READ TOC/PMA/ATIP formats 0 (TOC) and 1 (session information), GET CONFIGURATION,
//! GET EVENT STATUS NOTIFICATION (polled, media class), SYNCHRONIZE CACHE, VERIFY,
//! REPORT LUNS. Writes end in CHECK CONDITION, DATA PROTECT / WRITE PROTECTED; everything
//! else in ILLEGAL REQUEST with the SPC-4 sense data.

use super::cdb::{be16, Cdb};
use super::disk::report_luns;
use super::sense::{Sense, SenseKey};
use super::{ScsiResponse, ScsiTarget};
use crate::block::BlockBackend;

/// Logical block size of CD-ROM data (Mode 1 user data), bytes.
pub const CD_BLOCK_SIZE: u32 = 2048;
/// Longest READ accepted (blocks of 2048 bytes, 8 MiB), as for the disk.
pub const CD_MAX_TRANSFER_BLOCKS: u32 = 4096;

/// MMC operation codes handled before the SPC/SBC parser (MMC-6 §6).
pub mod op {
    /// READ TOC/PMA/ATIP.
    pub const READ_TOC: u8 = 0x43;
    /// GET CONFIGURATION.
    pub const GET_CONFIGURATION: u8 = 0x46;
    /// GET EVENT STATUS NOTIFICATION.
    pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
}

/// MEDIUM NOT PRESENT (3Ah/00h).
const MEDIUM_NOT_PRESENT: Sense = Sense::new(SenseKey::NotReady, 0x3a, 0x00);
/// MEDIUM REMOVAL PREVENTED (53h/02h).
const REMOVAL_PREVENTED: Sense = Sense::new(SenseKey::IllegalRequest, 0x53, 0x02);
/// SAVING PARAMETERS NOT SUPPORTED (39h/00h).
const SAVING_NOT_SUPPORTED: Sense = Sense::new(SenseKey::IllegalRequest, 0x39, 0x00);
/// MMC profile 0008h: CD-ROM.
const PROFILE_CD_ROM: u16 = 0x0008;

/// A CD-ROM drive: logical unit 0 of a target, holding one ISO image.
#[derive(Debug)]
pub struct ScsiCdrom {
    backend: Box<dyn BlockBackend>,
    serial: String,
    /// Medium loaded (false after an eject).
    loaded: bool,
    /// PREVENT ALLOW MEDIUM REMOVAL state (bit 0: prevent).
    prevent: bool,
    /// A NEW MEDIA event is pending for GET EVENT STATUS NOTIFICATION.
    media_event: u8,
}

impl ScsiCdrom {
    /// A drive with the medium `backend` loaded (its size is rounded down to whole 2048-byte
    /// blocks; writes are never issued to it).
    pub fn new(backend: Box<dyn BlockBackend>, serial: &str) -> Self {
        let serial: String = serial
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(20)
            .collect();
        Self {
            backend,
            serial,
            loaded: true,
            prevent: false,
            media_event: 2, // NewMedia: the medium was loaded at power-on
        }
    }

    /// Number of 2048-byte blocks on the medium.
    pub fn blocks(&self) -> u64 {
        self.backend.size() / u64::from(CD_BLOCK_SIZE)
    }

    fn not_ready(&self) -> Option<ScsiResponse> {
        (!self.loaded).then(|| ScsiResponse::check(MEDIUM_NOT_PRESENT))
    }

    fn standard_inquiry() -> Vec<u8> {
        let mut d = vec![0u8; 36];
        d[0] = 0x05; // CD/DVD device
        d[1] = 0x80; // RMB: removable medium
        d[2] = 0x05; // VERSION: SPC-3
        d[3] = 0x02; // RESPONSE DATA FORMAT 2
        d[4] = 36 - 5;
        d[8..16].copy_from_slice(b"RINX    ");
        d[16..32].copy_from_slice(b"VIRTUAL CD-ROM  ");
        d[32..36].copy_from_slice(b"0001");
        d
    }

    fn vpd_page(&self, page: u8) -> Option<Vec<u8>> {
        let body: Vec<u8> = match page {
            0x00 => vec![0x00, 0x80, 0x83],
            0x80 => self.serial.as_bytes().to_vec(),
            0x83 => {
                let mut id = b"RINX    VIRTUAL CD-ROM  ".to_vec();
                id.extend_from_slice(self.serial.as_bytes());
                let mut d = vec![0x02, 0x01, 0x00, id.len() as u8];
                d.extend_from_slice(&id);
                d
            }
            _ => return None,
        };
        let mut d = vec![0x05, page];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&body);
        Some(d)
    }

    /// CD Capabilities and Mechanical Status mode page 2Ah (MMC-3 §5.5.10; 22 bytes).
    fn capabilities_page(&self, pc: u8) -> Vec<u8> {
        let mut p = vec![0u8; 22];
        p[0] = 0x2a;
        p[1] = 20;
        if pc == 1 {
            return p; // nothing is changeable
        }
        p[2] = 0x00; // reads CD-ROM only (no CD-R/RW/DVD reading claimed)
        p[3] = 0x00; // writes nothing
        p[4] = 0x40; // multi-session
        p[5] = 0x00;
        // Loading mechanism 001b (tray), eject supported, lock supported, lock state.
        p[6] = 0x20 | 0x08 | 0x01 | if self.prevent { 0x02 } else { 0 };
        p[8..10].copy_from_slice(&(176u16 * 24).to_be_bytes()); // max read speed, kB/s
        p[12..14].copy_from_slice(&2048u16.to_be_bytes()); // buffer size, KiB
        p[14..16].copy_from_slice(&(176u16 * 24).to_be_bytes()); // current read speed
        p
    }

    fn mode_sense(&self, ten: bool, pc: u8, page: u8, subpage: u8, max: usize) -> ScsiResponse {
        if pc == 3 {
            return ScsiResponse::check(SAVING_NOT_SUPPORTED);
        }
        if page != 0x2a && page != 0x3f {
            return ScsiResponse::check(Sense::invalid_cdb_field(2, Some(5)));
        }
        if subpage != 0 && !(page == 0x3f && subpage == 0xff) {
            return ScsiResponse::check(Sense::invalid_cdb_field(3, None));
        }
        // No block descriptors (MMC); medium type 0.
        let body = self.capabilities_page(pc);
        let mut d = if ten {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&((body.len() + 6) as u16).to_be_bytes());
            h
        } else {
            vec![(body.len() + 3) as u8, 0, 0, 0]
        };
        d.extend_from_slice(&body);
        ScsiResponse::good(d, max)
    }

    /// An LBA as MSF (minutes, seconds, frames; 75 frames a second, +150 for the 2-second
    /// pre-gap), MMC-6 §4.2.3.4.
    fn msf(lba: u64) -> [u8; 4] {
        let f = lba + 150;
        [
            0,
            (f / (60 * 75)).min(255) as u8,
            ((f / 75) % 60) as u8,
            (f % 75) as u8,
        ]
    }

    fn addr(lba: u64, msf: bool) -> [u8; 4] {
        if msf {
            Self::msf(lba)
        } else {
            (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
        }
    }

    /// READ TOC/PMA/ATIP (MMC-6 §6.26): format 0 (TOC: track 1 data + lead-out AAh) and
    /// format 1 (session information: first track of the last session).
    fn read_toc(&self, c: &[u8], max: usize) -> ScsiResponse {
        if let Some(r) = self.not_ready() {
            return r;
        }
        let msf = c[1] & 0x02 != 0;
        let format = c[2] & 0x0f;
        let track = c[6];
        let alloc = usize::from(be16(c, 7)).min(max);
        // Track descriptor: reserved, ADR 1 / CONTROL 4 (data track), track number, reserved,
        // address.
        let desc = |n: u8, lba: u64| {
            let mut d = vec![0, 0x14, n, 0];
            d.extend_from_slice(&Self::addr(lba, msf));
            d
        };
        let mut body = Vec::new();
        match format {
            0 => match track {
                0 | 1 => {
                    body.extend(desc(1, 0));
                    body.extend(desc(0xaa, self.blocks()));
                }
                0xaa => body.extend(desc(0xaa, self.blocks())),
                _ => return ScsiResponse::check(Sense::invalid_cdb_field(6, None)),
            },
            1 => body.extend(desc(1, 0)),
            _ => return ScsiResponse::check(Sense::invalid_cdb_field(2, Some(3))),
        }
        // Header: data length (excluding itself), first and last track / session.
        let mut d = ((body.len() + 2) as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&[1, 1]);
        d.extend_from_slice(&body);
        ScsiResponse::good(d, alloc)
    }

    /// GET CONFIGURATION (MMC-6 §6.6): profile list (CD-ROM), Core, Removable Medium,
    /// Random Readable, CD Read features.
    fn get_configuration(&self, c: &[u8], max: usize) -> ScsiResponse {
        let rt = c[1] & 0x03;
        if rt == 3 {
            return ScsiResponse::check(Sense::invalid_cdb_field(1, Some(1)));
        }
        let start = be16(c, 2);
        let alloc = usize::from(be16(c, 7)).min(max);
        let current = self.loaded;
        let feature = |code: u16, current: bool, data: &[u8]| {
            let mut f = code.to_be_bytes().to_vec();
            // VERSION in bits 5:2, PERSISTENT bit 1, CURRENT bit 0.
            f.push(if current { 0x01 } else { 0 } | 0x02);
            f.push(data.len() as u8);
            f.extend_from_slice(data);
            f
        };
        let features: Vec<(u16, Vec<u8>)> = vec![
            (
                0x0000,
                feature(0x0000, true, &[0x00, 0x08, u8::from(current), 0]),
            ),
            // Core: physical interface 1 (SCSI family).
            (0x0001, feature(0x0001, true, &[0, 0, 0, 1, 0, 0, 0, 0])),
            // Removable Medium: tray (001b), eject, lock.
            (0x0003, feature(0x0003, true, &[0x29, 0, 0, 0])),
            // Random Readable: 2048-byte blocks, blocking 1.
            (0x0010, {
                let mut d = CD_BLOCK_SIZE.to_be_bytes().to_vec();
                d.extend_from_slice(&[0, 1, 0, 0]);
                feature(0x0010, current, &d)
            }),
            // CD Read.
            (0x001e, feature(0x001e, current, &[0, 0, 0, 0])),
        ];
        let mut d = vec![0u8; 8];
        let profile = if current { PROFILE_CD_ROM } else { 0 };
        d[6..8].copy_from_slice(&profile.to_be_bytes());
        for (code, f) in features {
            let take = match rt {
                0 => code >= start,
                1 => code >= start && f[2] & 1 != 0,
                _ => code == start,
            };
            if take {
                d.extend_from_slice(&f);
            }
        }
        let len = (d.len() - 4) as u32;
        d[0..4].copy_from_slice(&len.to_be_bytes());
        ScsiResponse::good(d, alloc)
    }

    /// GET EVENT STATUS NOTIFICATION (MMC-6 §6.7), polled only (IMMED = 1): the media class.
    fn get_event_status(&mut self, c: &[u8], max: usize) -> ScsiResponse {
        if c[1] & 0x01 == 0 {
            // Asynchronous operation is not supported.
            return ScsiResponse::check(Sense::invalid_cdb_field(1, Some(0)));
        }
        let classes = c[4];
        let alloc = usize::from(be16(c, 7)).min(max);
        // Supported event classes: media (bit 4).
        let supported = 0x10u8;
        if classes & supported == 0 {
            // No requested class is supported: NEA = 1, header only.
            return ScsiResponse::good(vec![0, 2, 0x80, supported], alloc);
        }
        let event = std::mem::take(&mut self.media_event);
        let status = if self.loaded { 0x02 } else { 0x00 }; // media present
        let d = vec![0, 6, 0x04, supported, event, status, 0, 0];
        ScsiResponse::good(d, alloc)
    }

    fn run(&mut self, cdb: Cdb, data_out: &[u8], max: usize) -> ScsiResponse {
        let _ = data_out;
        match cdb {
            Cdb::TestUnitReady => self
                .not_ready()
                .unwrap_or_else(|| ScsiResponse::good(Vec::new(), 0)),
            Cdb::RequestSense { alloc_len } => {
                let s = if self.loaded {
                    Sense::NO_SENSE
                } else {
                    MEDIUM_NOT_PRESENT
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
                    return ScsiResponse::good(Self::standard_inquiry(), max);
                }
                match self.vpd_page(page) {
                    Some(d) => ScsiResponse::good(d, max),
                    None => ScsiResponse::check(Sense::invalid_cdb_field(2, None)),
                }
            }
            Cdb::ModeSense {
                ten,
                pc,
                page,
                subpage,
                alloc_len,
                ..
            } => self.mode_sense(ten, pc, page, subpage, usize::from(alloc_len).min(max)),
            Cdb::StartStopUnit { start, loej } => {
                if loej {
                    if !start && self.prevent {
                        return ScsiResponse::check(REMOVAL_PREVENTED);
                    }
                    if start != self.loaded {
                        self.loaded = start;
                        self.media_event = if start { 2 } else { 3 }; // NewMedia / MediaRemoval
                    }
                }
                ScsiResponse::good(Vec::new(), 0)
            }
            Cdb::PreventAllowMediumRemoval { prevent } => {
                self.prevent = prevent & 1 != 0;
                ScsiResponse::good(Vec::new(), 0)
            }
            Cdb::ReadCapacity10 => {
                if let Some(r) = self.not_ready() {
                    return r;
                }
                let last = self.blocks().saturating_sub(1).min(0xffff_ffff) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&CD_BLOCK_SIZE.to_be_bytes());
                ScsiResponse::good(d, max)
            }
            Cdb::ReadCapacity16 { .. } => ScsiResponse::check(Sense::INVALID_OPCODE),
            Cdb::Read { lba, blocks, .. } => {
                if let Some(r) = self.not_ready() {
                    return r;
                }
                if let Err(r) = self.check_range(lba, blocks) {
                    return r;
                }
                if blocks > CD_MAX_TRANSFER_BLOCKS {
                    return ScsiResponse::check(Sense::INVALID_FIELD_IN_CDB);
                }
                let len = blocks as usize * CD_BLOCK_SIZE as usize;
                if len > max {
                    return ScsiResponse::check(Sense::DATA_PHASE_ERROR);
                }
                let mut d = vec![0u8; len];
                match self.backend.read_at(lba * u64::from(CD_BLOCK_SIZE), &mut d) {
                    Ok(()) => ScsiResponse::good(d, max),
                    Err(e) => {
                        log::warn!(target: "devices::scsi", "CD read at LBA {lba}: {e}");
                        let s = Sense::UNRECOVERED_READ_ERROR;
                        ScsiResponse::check(match u32::try_from(lba) {
                            Ok(l) => s.with_information(l),
                            Err(_) => s,
                        })
                    }
                }
            }
            // SBC commands an MMC device does not have.
            Cdb::Unmap { .. } | Cdb::WriteSame { .. } => ScsiResponse::check(Sense::INVALID_OPCODE),
            Cdb::Write { .. } => match self.not_ready() {
                Some(r) => r,
                None => ScsiResponse::check(Sense::WRITE_PROTECTED),
            },
            Cdb::Verify { lba, blocks } => {
                if let Some(r) = self.not_ready() {
                    return r;
                }
                match self.check_range(lba, blocks) {
                    Ok(()) => ScsiResponse::good(Vec::new(), 0),
                    Err(r) => r,
                }
            }
            // Nothing is cached for writing.
            Cdb::SynchronizeCache { .. } => self
                .not_ready()
                .unwrap_or_else(|| ScsiResponse::good(Vec::new(), 0)),
            Cdb::ReportLuns {
                select_report,
                alloc_len,
            } => report_luns(select_report, alloc_len, max, &[0]),
        }
    }

    fn check_range(&self, lba: u64, blocks: u32) -> Result<(), ScsiResponse> {
        match lba.checked_add(u64::from(blocks)) {
            Some(end) if end <= self.blocks() => Ok(()),
            _ => Err(ScsiResponse::check(Sense::LBA_OUT_OF_RANGE)),
        }
    }
}

impl ScsiTarget for ScsiCdrom {
    fn execute(&mut self, cdb: &[u8], data_out: &[u8], data_in_max: usize) -> ScsiResponse {
        let mmc = match cdb.first() {
            Some(
                &o @ (op::READ_TOC | op::GET_CONFIGURATION | op::GET_EVENT_STATUS_NOTIFICATION),
            ) => Some(o),
            _ => None,
        };
        let r = if let Some(o) = mmc {
            // 10-byte CDBs; NACA in the CONTROL byte is not supported.
            if cdb.len() < 10 {
                ScsiResponse::check(Sense::invalid_cdb_field(cdb.len() as u16, None))
            } else if cdb[9] & 0x04 != 0 {
                ScsiResponse::check(Sense::invalid_cdb_field(9, Some(2)))
            } else {
                match o {
                    op::READ_TOC => self.read_toc(cdb, data_in_max),
                    op::GET_CONFIGURATION => self.get_configuration(cdb, data_in_max),
                    _ => self.get_event_status(cdb, data_in_max),
                }
            }
        } else {
            match Cdb::parse(cdb) {
                Ok(c) => self.run(c, data_out, data_in_max),
                Err(sense) => ScsiResponse::check(sense),
            }
        };
        if let Some(s) = &r.sense {
            log::debug!(target: "devices::scsi", "CD-ROM {:02x?}: CHECK CONDITION {:?} {:02x}/{:02x}",
                cdb.first(), s.key, s.asc, s.ascq);
        }
        r
    }

    fn backend_mut(&mut self) -> &mut dyn BlockBackend {
        self.backend.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use crate::scsi::Status;

    fn cd() -> ScsiCdrom {
        let mut m = MemDisk::new(100 * 2048);
        for (i, b) in m.data.iter_mut().enumerate() {
            *b = (i / 2048) as u8;
        }
        m.read_only = true;
        ScsiCdrom::new(Box::new(m), "CD0")
    }

    fn sense(r: &ScsiResponse) -> (SenseKey, u8, u8) {
        let s = r.sense.expect("sense");
        (s.key, s.asc, s.ascq)
    }

    #[test]
    fn identity_capacity_and_reads() {
        let mut c = cd();
        let r = c.execute(&[0x12, 0, 0, 0, 36, 0], &[], 96);
        assert_eq!(r.data_in[0], 5);
        assert_eq!(r.data_in[1], 0x80);
        let r = c.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
        assert_eq!(r.data_in, [0, 0, 0, 99, 0, 0, 8, 0]);
        // READ(10) LBA 7, 2 blocks; READ(12) LBA 99, 1 block.
        let r = c.execute(&[0x28, 0, 0, 0, 0, 7, 0, 0, 2, 0], &[], 4096);
        assert_eq!(r.status, Status::Good);
        assert!(r.data_in[..2048].iter().all(|&b| b == 7));
        assert!(r.data_in[2048..].iter().all(|&b| b == 8));
        let r = c.execute(&[0xa8, 0, 0, 0, 0, 99, 0, 0, 0, 1, 0, 0], &[], 2048);
        assert!(r.data_in.iter().all(|&b| b == 99));
        let r = c.execute(&[0x28, 0, 0, 0, 0, 99, 0, 0, 2, 0], &[], 4096);
        assert_eq!(sense(&r), (SenseKey::IllegalRequest, 0x21, 0));
    }

    #[test]
    fn writes_are_data_protect() {
        let mut c = cd();
        for cdb in [
            &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0][..],
            &[0x0a, 0, 0, 0, 1, 0],
            &[0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ] {
            let r = c.execute(cdb, &[0; 2048], 0);
            assert_eq!(sense(&r), (SenseKey::DataProtect, 0x27, 0), "{cdb:02x?}");
        }
    }

    #[test]
    fn toc_configuration_events_mode_page() {
        let mut c = cd();
        let r = c.execute(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0], &[], 100);
        assert_eq!(&r.data_in[..4], &[0, 18, 1, 1]);
        assert_eq!(&r.data_in[4..12], &[0, 0x14, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&r.data_in[12..20], &[0, 0x14, 0xaa, 0, 0, 0, 0, 100]);
        // MSF lead-out: 100 + 150 frames = 0:03:25.
        let r = c.execute(&[0x43, 2, 0, 0, 0, 0, 0xaa, 0, 100, 0], &[], 100);
        assert_eq!(&r.data_in[4..12], &[0, 0x14, 0xaa, 0, 0, 0, 3, 25]);
        let r = c.execute(&[0x43, 0, 0, 0, 0, 0, 2, 0, 100, 0], &[], 100);
        assert_eq!(sense(&r), (SenseKey::IllegalRequest, 0x24, 0));
        let r = c.execute(&[0x46, 0, 0, 0, 0, 0, 0, 0, 255, 0], &[], 255);
        assert_eq!(&r.data_in[6..8], &[0, 8], "current profile CD-ROM");
        assert_eq!(
            u32::from_be_bytes(r.data_in[0..4].try_into().unwrap()) as usize,
            r.data_in.len() - 4
        );
        let r = c.execute(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], &[], 8);
        assert_eq!(r.data_in, [0, 6, 4, 0x10, 2, 2, 0, 0], "new media, present");
        let r = c.execute(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], &[], 8);
        assert_eq!(r.data_in[4], 0, "no change");
        let r = c.execute(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 64, 0], &[], 64);
        assert_eq!(r.data_in[8], 0x2a);
        assert_eq!(
            u16::from_be_bytes([r.data_in[0], r.data_in[1]]) as usize,
            r.data_in.len() - 2
        );
        let r = c.execute(&[0x5a, 0, 0x08, 0, 0, 0, 0, 0, 64, 0], &[], 64);
        assert_eq!(sense(&r), (SenseKey::IllegalRequest, 0x24, 0));
    }

    #[test]
    fn lock_eject_load() {
        let mut c = cd();
        c.execute(&[0x1e, 0, 0, 0, 1, 0], &[], 0);
        let r = c.execute(&[0x1b, 0, 0, 0, 0x02, 0], &[], 0);
        assert_eq!(sense(&r), (SenseKey::IllegalRequest, 0x53, 2));
        c.execute(&[0x1e, 0, 0, 0, 0, 0], &[], 0);
        let r = c.execute(&[0x1b, 0, 0, 0, 0x02, 0], &[], 0);
        assert_eq!(r.status, Status::Good);
        let r = c.execute(&[0, 0, 0, 0, 0, 0], &[], 0);
        assert_eq!(sense(&r), (SenseKey::NotReady, 0x3a, 0));
        c.execute(&[0x1b, 0, 0, 0, 0x03, 0], &[], 0);
        let r = c.execute(&[0, 0, 0, 0, 0, 0], &[], 0);
        assert_eq!(r.status, Status::Good);
    }

    #[test]
    fn random_cdbs_never_panic() {
        let mut c = cd();
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20000 {
            let mut cdb = [0u8; 16];
            for b in &mut cdb {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Bias toward the MMC and common opcodes.
            cdb[0] =
                [0x43, 0x46, 0x4a, 0x28, 0xa8, 0x25, 0x5a, 0x1b, 0x12, cdb[0]][(x % 10) as usize];
            let len = (x >> 8) as usize % 17;
            let r = c.execute(&cdb[..len], &[0; 512], (x >> 16) as usize % 9000);
            if r.status == Status::CheckCondition {
                assert!(r.sense.is_some());
            }
        }
    }
}
