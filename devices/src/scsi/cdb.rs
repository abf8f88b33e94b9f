//! Command descriptor block parser for the SPC-4 / SBC-3 commands a direct-access block
//! device (disk) implements. Every byte comes from the guest: any reserved or unsupported
//! field yields the sense data SPC-4 prescribes, never a panic.

use super::sense::Sense;

/// Operation codes (SPC-4 annex D.3.1, SBC-3 §5).
pub mod op {
    /// TEST UNIT READY (SPC-4 §6.47).
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// REQUEST SENSE (SPC-4 §6.39).
    pub const REQUEST_SENSE: u8 = 0x03;
    /// READ(6) (SBC-3 §5.13).
    pub const READ_6: u8 = 0x08;
    /// WRITE(6) (SBC-3 §5.38).
    pub const WRITE_6: u8 = 0x0a;
    /// INQUIRY (SPC-4 §6.6).
    pub const INQUIRY: u8 = 0x12;
    /// MODE SENSE(6) (SPC-4 §6.13).
    pub const MODE_SENSE_6: u8 = 0x1a;
    /// START STOP UNIT (SBC-3 §5.25).
    pub const START_STOP_UNIT: u8 = 0x1b;
    /// PREVENT ALLOW MEDIUM REMOVAL (SPC-4 §6.17).
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    /// READ CAPACITY(10) (SBC-3 §5.15).
    pub const READ_CAPACITY_10: u8 = 0x25;
    /// READ(10) (SBC-3 §5.9).
    pub const READ_10: u8 = 0x28;
    /// WRITE(10) (SBC-3 §5.32).
    pub const WRITE_10: u8 = 0x2a;
    /// VERIFY(10) (SBC-3 §5.27).
    pub const VERIFY_10: u8 = 0x2f;
    /// WRITE SAME(10) (SBC-4 §5.48).
    pub const WRITE_SAME_10: u8 = 0x41;
    /// UNMAP (SBC-4 §5.32).
    pub const UNMAP: u8 = 0x42;
    /// WRITE SAME(16) (SBC-4 §5.49).
    pub const WRITE_SAME_16: u8 = 0x93;
    /// SYNCHRONIZE CACHE(10) (SBC-3 §5.22).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// MODE SENSE(10) (SPC-4 §6.14).
    pub const MODE_SENSE_10: u8 = 0x5a;
    /// READ(16) (SBC-3 §5.11).
    pub const READ_16: u8 = 0x88;
    /// WRITE(16) (SBC-3 §5.34).
    pub const WRITE_16: u8 = 0x8a;
    /// VERIFY(16) (SBC-3 §5.29).
    pub const VERIFY_16: u8 = 0x8f;
    /// SYNCHRONIZE CACHE(16) (SBC-3 §5.23).
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// SERVICE ACTION IN(16); service action 10h is READ CAPACITY(16) (SBC-3 §5.16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    /// REPORT LUNS (SPC-4 §6.33).
    pub const REPORT_LUNS: u8 = 0xa0;
    /// READ(12) (SBC-3 §5.10).
    pub const READ_12: u8 = 0xa8;
    /// WRITE(12) (SBC-3 §5.33).
    pub const WRITE_12: u8 = 0xaa;
    /// VERIFY(12) (SBC-3 §5.28).
    pub const VERIFY_12: u8 = 0xaf;
}

/// READ CAPACITY(16) service action (SBC-3 §5.16).
pub const SA_READ_CAPACITY_16: u8 = 0x10;

/// A parsed CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cdb {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE (fixed format only: DESC = 1 is rejected at parse time).
    RequestSense {
        /// Allocation length.
        alloc_len: u16,
    },
    /// INQUIRY, standard data or a vital product data page.
    Inquiry {
        /// EVPD bit: return VPD page `page`.
        evpd: bool,
        /// Page code (0 when EVPD = 0).
        page: u8,
        /// Allocation length.
        alloc_len: u16,
    },
    /// MODE SENSE(6) or MODE SENSE(10).
    ModeSense {
        /// MODE SENSE(10) (8-byte header) rather than MODE SENSE(6).
        ten: bool,
        /// DBD: no block descriptors.
        dbd: bool,
        /// LLBAA (MODE SENSE(10) only): long LBA block descriptor allowed.
        llbaa: bool,
        /// Page control: 0 current, 1 changeable, 2 default, 3 saved.
        pc: u8,
        /// Page code (3Fh = all pages).
        page: u8,
        /// Subpage code.
        subpage: u8,
        /// Allocation length.
        alloc_len: u16,
    },
    /// START STOP UNIT.
    StartStopUnit {
        /// START bit (with power condition 0).
        start: bool,
        /// LOEJ bit.
        loej: bool,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL.
    PreventAllowMediumRemoval {
        /// PREVENT field.
        prevent: u8,
    },
    /// READ CAPACITY(10).
    ReadCapacity10,
    /// READ CAPACITY(16).
    ReadCapacity16 {
        /// Allocation length.
        alloc_len: u32,
    },
    /// READ(6/10/12/16).
    Read {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks.
        blocks: u32,
        /// Force unit access.
        fua: bool,
    },
    /// WRITE(6/10/12/16).
    Write {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks.
        blocks: u32,
        /// Force unit access: the data reaches stable storage before completion.
        fua: bool,
    },
    /// VERIFY(10/12/16) with BYTCHK = 0 (medium verification only).
    Verify {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks.
        blocks: u32,
    },
    /// SYNCHRONIZE CACHE(10/16).
    SynchronizeCache {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks (0 = to the end of the medium).
        blocks: u32,
    },
    /// UNMAP (ANCHOR = 0; ANCHOR = 1 is rejected at parse time: no anchored state).
    Unmap {
        /// PARAMETER LIST LENGTH (bytes of the data-out buffer holding the parameter list).
        param_len: u16,
    },
    /// WRITE SAME(10/16) (ANCHOR = 0, WRPROTECT = 0).
    WriteSame {
        /// First logical block.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (0 is rejected by the disk: WSNZ = 1).
        blocks: u32,
        /// UNMAP bit: deallocate the blocks if the data is zeros.
        unmap: bool,
        /// NDOB (WRITE SAME(16) only): no data-out buffer, the data is zeros.
        ndob: bool,
        /// Byte of the CDB holding NUMBER OF LOGICAL BLOCKS (for the sense field pointer).
        blocks_field: u16,
    },
    /// REPORT LUNS.
    ReportLuns {
        /// SELECT REPORT.
        select_report: u8,
        /// Allocation length.
        alloc_len: u32,
    },
}

/// CDB length implied by the GROUP CODE of an operation code (SPC-4 §4.2.5.1, table 5);
/// `None` for reserved and vendor-specific groups.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Fail with INVALID FIELD IN CDB at `byte` if any bit of `mask` is set in it.
fn reserved(c: &[u8], byte: usize, mask: u8) -> Result<(), Sense> {
    let v = c[byte] & mask;
    if v != 0 {
        Err(Sense::invalid_cdb_field(
            byte as u16,
            Some(7 - v.leading_zeros() as u8),
        ))
    } else {
        Ok(())
    }
}

/// The RDPROTECT / WRPROTECT field (byte 1 bits 7-5) must be zero: the medium has no
/// protection information (SBC-3 §4.22.2.3, table 99 ff.).
fn no_protect(c: &[u8]) -> Result<(), Sense> {
    reserved(c, 1, 0xe0)
}

impl Cdb {
    /// Parse `c` (at least the CDB length of its group; extra bytes are ignored, as with the
    /// fixed 32-byte CDB field of virtio-scsi).
    pub fn parse(c: &[u8]) -> Result<Cdb, Sense> {
        let Some(&opcode) = c.first() else {
            return Err(Sense::INVALID_OPCODE);
        };
        let Some(len) = cdb_len(opcode) else {
            return Err(Sense::INVALID_OPCODE);
        };
        if c.len() < len {
            // The transport delivered fewer bytes than the group code requires.
            return Err(Sense::invalid_cdb_field(c.len() as u16, None));
        }
        let c = &c[..len];
        // CONTROL byte (SAM-5 §5.2): NACA = 1 is not supported -> INVALID FIELD IN CDB.
        reserved(c, len - 1, 0x04)?;
        let cdb = match opcode {
            op::TEST_UNIT_READY => Cdb::TestUnitReady,
            op::REQUEST_SENSE => {
                // DESC = 1: descriptor format is not supported (SPC-4 §6.39).
                reserved(c, 1, 0x01)?;
                Cdb::RequestSense {
                    alloc_len: u16::from(c[4]),
                }
            }
            op::INQUIRY => {
                // Bit 1 is the obsolete CMDDT; it and the other reserved bits must be zero.
                reserved(c, 1, 0xfe)?;
                let evpd = c[1] & 1 != 0;
                if !evpd && c[2] != 0 {
                    return Err(Sense::invalid_cdb_field(2, None));
                }
                Cdb::Inquiry {
                    evpd,
                    page: c[2],
                    alloc_len: be16(c, 3),
                }
            }
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
                let ten = opcode == op::MODE_SENSE_10;
                reserved(c, 1, if ten { 0xe7 } else { 0xf7 })?;
                Cdb::ModeSense {
                    ten,
                    dbd: c[1] & 0x08 != 0,
                    llbaa: ten && c[1] & 0x10 != 0,
                    pc: c[2] >> 6,
                    page: c[2] & 0x3f,
                    subpage: c[3],
                    alloc_len: if ten { be16(c, 7) } else { u16::from(c[4]) },
                }
            }
            op::START_STOP_UNIT => {
                // POWER CONDITION other than START_VALID (0) is not supported.
                reserved(c, 4, 0xf0)?;
                Cdb::StartStopUnit {
                    start: c[4] & 1 != 0,
                    loej: c[4] & 2 != 0,
                }
            }
            op::PREVENT_ALLOW_MEDIUM_REMOVAL => {
                Cdb::PreventAllowMediumRemoval { prevent: c[4] & 3 }
            }
            op::READ_CAPACITY_10 => {
                // With PMI = 0 the LOGICAL BLOCK ADDRESS field must be zero (SBC-3 §5.15).
                if c[8] & 1 == 0 && be32(c, 2) != 0 {
                    return Err(Sense::invalid_cdb_field(2, None));
                }
                Cdb::ReadCapacity10
            }
            op::SERVICE_ACTION_IN_16 => {
                if c[1] & 0x1f != SA_READ_CAPACITY_16 {
                    return Err(Sense::invalid_cdb_field(1, Some(4)));
                }
                if c[14] & 1 == 0 && be64(c, 2) != 0 {
                    return Err(Sense::invalid_cdb_field(2, None));
                }
                Cdb::ReadCapacity16 {
                    alloc_len: be32(c, 10),
                }
            }
            op::READ_6 | op::WRITE_6 => {
                let lba = u64::from(be32(c, 0) & 0x001f_ffff);
                // TRANSFER LENGTH 0 means 256 blocks (SBC-3 §5.13).
                let blocks = if c[4] == 0 { 256 } else { u32::from(c[4]) };
                if opcode == op::READ_6 {
                    Cdb::Read {
                        lba,
                        blocks,
                        fua: false,
                    }
                } else {
                    Cdb::Write {
                        lba,
                        blocks,
                        fua: false,
                    }
                }
            }
            op::READ_10
            | op::WRITE_10
            | op::READ_12
            | op::WRITE_12
            | op::READ_16
            | op::WRITE_16 => {
                no_protect(c)?;
                let (lba, blocks) = match len {
                    10 => (u64::from(be32(c, 2)), u32::from(be16(c, 7))),
                    12 => (u64::from(be32(c, 2)), be32(c, 6)),
                    _ => (be64(c, 2), be32(c, 10)),
                };
                let fua = c[1] & 0x08 != 0;
                if matches!(opcode, op::READ_10 | op::READ_12 | op::READ_16) {
                    Cdb::Read { lba, blocks, fua }
                } else {
                    Cdb::Write { lba, blocks, fua }
                }
            }
            op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => {
                no_protect(c)?;
                // BYTCHK != 0 would compare data sent by the initiator: not supported.
                reserved(c, 1, 0x06)?;
                let (lba, blocks) = match len {
                    10 => (u64::from(be32(c, 2)), u32::from(be16(c, 7))),
                    12 => (u64::from(be32(c, 2)), be32(c, 6)),
                    _ => (be64(c, 2), be32(c, 10)),
                };
                Cdb::Verify { lba, blocks }
            }
            op::SYNCHRONIZE_CACHE_10 => Cdb::SynchronizeCache {
                lba: u64::from(be32(c, 2)),
                blocks: u32::from(be16(c, 7)),
            },
            op::SYNCHRONIZE_CACHE_16 => Cdb::SynchronizeCache {
                lba: be64(c, 2),
                blocks: be32(c, 10),
            },
            op::UNMAP => {
                // ANCHOR (bit 0): ANC_SUP = 0 in the Logical Block Provisioning VPD page, so
                // it is an invalid field (SBC-4 §5.32.1); bits 7-1 are reserved.
                reserved(c, 1, 0xff)?;
                Cdb::Unmap {
                    param_len: be16(c, 7),
                }
            }
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => {
                no_protect(c)?;
                // ANCHOR (bit 4) unsupported; bits 2-1 are the obsolete PBDATA/LBDATA and
                // must be zero; bit 0 is reserved in WRITE SAME(10) and NDOB in (16).
                let sixteen = opcode == op::WRITE_SAME_16;
                reserved(c, 1, if sixteen { 0x16 } else { 0x17 })?;
                let (lba, blocks, blocks_field) = if sixteen {
                    (be64(c, 2), be32(c, 10), 10)
                } else {
                    (u64::from(be32(c, 2)), u32::from(be16(c, 7)), 7)
                };
                Cdb::WriteSame {
                    lba,
                    blocks,
                    unmap: c[1] & 0x08 != 0,
                    ndob: sixteen && c[1] & 0x01 != 0,
                    blocks_field,
                }
            }
            op::REPORT_LUNS => Cdb::ReportLuns {
                select_report: c[2],
                alloc_len: be32(c, 6),
            },
            _ => return Err(Sense::INVALID_OPCODE),
        };
        Ok(cdb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::SenseKey;

    #[test]
    fn group_lengths() {
        assert_eq!(cdb_len(0x00), Some(6));
        assert_eq!(cdb_len(0x28), Some(10));
        assert_eq!(cdb_len(0x5a), Some(10));
        assert_eq!(cdb_len(0x88), Some(16));
        assert_eq!(cdb_len(0xa0), Some(12));
        assert_eq!(cdb_len(0x7f), None);
        assert_eq!(cdb_len(0xc0), None);
    }

    #[test]
    fn read_write_forms() {
        assert_eq!(
            Cdb::parse(&[0x08, 0x1f, 0xff, 0xff, 0, 0]),
            Ok(Cdb::Read {
                lba: 0x1f_ffff,
                blocks: 256,
                fua: false
            })
        );
        assert_eq!(
            Cdb::parse(&[0x2a, 0x08, 0, 0, 1, 0, 0, 0, 8, 0]),
            Ok(Cdb::Write {
                lba: 256,
                blocks: 8,
                fua: true
            })
        );
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[2..10].copy_from_slice(&0x1_0000_0000u64.to_be_bytes());
        c[10..14].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            Cdb::parse(&c),
            Ok(Cdb::Read {
                lba: 0x1_0000_0000,
                blocks: 7,
                fua: false
            })
        );
        let mut c = [0u8; 12];
        c[0] = 0xaa;
        c[6..10].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(
            Cdb::parse(&c),
            Ok(Cdb::Write {
                lba: 0,
                blocks: 3,
                fua: false
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(Cdb::parse(&[]), Err(Sense::INVALID_OPCODE));
        assert_eq!(Cdb::parse(&[0xff; 16]), Err(Sense::INVALID_OPCODE));
        assert_eq!(
            Cdb::parse(&[0x02, 0, 0, 0, 0, 0]),
            Err(Sense::INVALID_OPCODE)
        );
        // Short CDB.
        assert_eq!(
            Cdb::parse(&[0x28, 0, 0]).map_err(|s| (s.key, s.asc)),
            Err((SenseKey::IllegalRequest, 0x24))
        );
        // NACA in the control byte.
        assert_eq!(
            Cdb::parse(&[0x00, 0, 0, 0, 0, 0x04]),
            Err(Sense::invalid_cdb_field(5, Some(2)))
        );
        // RDPROTECT.
        assert_eq!(
            Cdb::parse(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(Sense::invalid_cdb_field(1, Some(5)))
        );
        // INQUIRY page code without EVPD; CMDDT.
        assert_eq!(
            Cdb::parse(&[0x12, 0, 0x80, 0, 36, 0]),
            Err(Sense::invalid_cdb_field(2, None))
        );
        assert_eq!(
            Cdb::parse(&[0x12, 2, 0, 0, 36, 0]),
            Err(Sense::invalid_cdb_field(1, Some(1)))
        );
        // REQUEST SENSE with DESC.
        assert_eq!(
            Cdb::parse(&[0x03, 1, 0, 0, 18, 0]),
            Err(Sense::invalid_cdb_field(1, Some(0)))
        );
        // READ CAPACITY(10) with an LBA but PMI = 0.
        assert_eq!(
            Cdb::parse(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(Sense::invalid_cdb_field(2, None))
        );
        // SERVICE ACTION IN(16) with another service action.
        let mut c = [0u8; 16];
        c[0] = 0x9e;
        c[1] = 0x11;
        assert_eq!(Cdb::parse(&c), Err(Sense::invalid_cdb_field(1, Some(4))));
        // START STOP UNIT with a power condition.
        assert_eq!(
            Cdb::parse(&[0x1b, 0, 0, 0, 0x31, 0]),
            Err(Sense::invalid_cdb_field(4, Some(5)))
        );
    }

    #[test]
    fn misc_commands() {
        assert_eq!(
            Cdb::parse(&[0x12, 1, 0xb0, 0x01, 0x00, 0]),
            Ok(Cdb::Inquiry {
                evpd: true,
                page: 0xb0,
                alloc_len: 256
            })
        );
        assert_eq!(
            Cdb::parse(&[0x5a, 0x18, 0x3f, 0, 0, 0, 0, 0x10, 0, 0]),
            Ok(Cdb::ModeSense {
                ten: true,
                dbd: true,
                llbaa: true,
                pc: 0,
                page: 0x3f,
                subpage: 0,
                alloc_len: 0x1000
            })
        );
        assert_eq!(
            Cdb::parse(&[0xa0, 0, 2, 0, 0, 0, 0, 0, 0, 16, 0, 0]),
            Ok(Cdb::ReportLuns {
                select_report: 2,
                alloc_len: 16
            })
        );
        assert_eq!(
            Cdb::parse(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Cdb::SynchronizeCache { lba: 0, blocks: 0 })
        );
    }
}
