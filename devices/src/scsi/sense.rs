//! SCSI status codes and fixed-format sense data (SPC-4 §4.5.3, §4.5.6, SAM-5 §5.3.1).

/// SCSI status byte (SAM-5 §5.3.1, table 38).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// GOOD.
    Good = 0x00,
    /// CHECK CONDITION: sense data describes the error.
    CheckCondition = 0x02,
    /// BUSY.
    Busy = 0x08,
    /// RESERVATION CONFLICT.
    ReservationConflict = 0x18,
    /// TASK SET FULL.
    TaskSetFull = 0x28,
}

/// Sense key (SPC-4 §4.5.6, table 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    /// NO SENSE.
    NoSense = 0x0,
    /// RECOVERED ERROR.
    RecoveredError = 0x1,
    /// NOT READY.
    NotReady = 0x2,
    /// MEDIUM ERROR.
    MediumError = 0x3,
    /// HARDWARE ERROR.
    HardwareError = 0x4,
    /// ILLEGAL REQUEST.
    IllegalRequest = 0x5,
    /// UNIT ATTENTION.
    UnitAttention = 0x6,
    /// DATA PROTECT.
    DataProtect = 0x7,
    /// ABORTED COMMAND.
    AbortedCommand = 0xb,
}

/// Where an INVALID FIELD IN CDB error points (SPC-4 §4.5.2.4.2, field pointer sense-key
/// specific data): byte and, optionally, bit of the offending field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True when the pointer refers to the CDB (C/D = 1), false for the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit of the field's most significant bit, when meaningful (BPV = 1).
    pub bit: Option<u8>,
}

/// One sense condition: key, additional sense code and qualifier, and the optional
/// sense-key specific field pointer and INFORMATION field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code (ASC).
    pub asc: u8,
    /// Additional sense code qualifier (ASCQ).
    pub ascq: u8,
    /// Sense-key specific field pointer (ILLEGAL REQUEST only).
    pub field: Option<FieldPointer>,
    /// INFORMATION field (e.g. the failing LBA of a MEDIUM ERROR); sets the VALID bit.
    pub information: Option<u32>,
}

/// Length of the fixed-format sense data we return (SPC-4 §4.5.3: 18 bytes with an
/// ADDITIONAL SENSE LENGTH of 10).
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    /// A sense condition without field pointer or information.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Self {
        Self {
            key,
            asc,
            ascq,
            field: None,
            information: None,
        }
    }

    /// NO SENSE, NO ADDITIONAL SENSE INFORMATION (00h/00h).
    pub const NO_SENSE: Sense = Sense::new(SenseKey::NoSense, 0x00, 0x00);
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20h/00h).
    pub const INVALID_OPCODE: Sense = Sense::new(SenseKey::IllegalRequest, 0x20, 0x00);
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h).
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(SenseKey::IllegalRequest, 0x21, 0x00);
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h), without a field pointer.
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(SenseKey::IllegalRequest, 0x24, 0x00);
    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (25h/00h).
    pub const LUN_NOT_SUPPORTED: Sense = Sense::new(SenseKey::IllegalRequest, 0x25, 0x00);
    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (1Ah/00h).
    pub const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(SenseKey::IllegalRequest, 0x1a, 0x00);
    /// NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (04h/02h): the unit
    /// was stopped by START STOP UNIT.
    pub const NOT_READY_INIT_REQUIRED: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x02);
    /// DATA PROTECT, WRITE PROTECTED (27h/00h).
    pub const WRITE_PROTECTED: Sense = Sense::new(SenseKey::DataProtect, 0x27, 0x00);
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (11h/00h).
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(SenseKey::MediumError, 0x11, 0x00);
    /// MEDIUM ERROR, WRITE ERROR (0Ch/00h).
    pub const WRITE_ERROR: Sense = Sense::new(SenseKey::MediumError, 0x0c, 0x00);
    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (44h/00h).
    pub const INTERNAL_TARGET_FAILURE: Sense = Sense::new(SenseKey::HardwareError, 0x44, 0x00);
    /// ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h): the transport's buffers do not match the
    /// transfer the CDB asks for.
    pub const DATA_PHASE_ERROR: Sense = Sense::new(SenseKey::AbortedCommand, 0x4b, 0x00);
    /// UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h).
    pub const POWER_ON_RESET: Sense = Sense::new(SenseKey::UnitAttention, 0x29, 0x00);

    /// INVALID FIELD IN CDB pointing at `byte` (and `bit`, if given) of the CDB.
    pub const fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Self {
        Self {
            field: Some(FieldPointer {
                in_cdb: true,
                byte,
                bit,
            }),
            ..Self::INVALID_FIELD_IN_CDB
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26h/00h) pointing at `byte` (and
    /// `bit`, if given) of the parameter list (C/D = 0; SPC-4 §4.5.2.4.2).
    pub const fn invalid_param_field(byte: u16, bit: Option<u8>) -> Self {
        Self {
            field: Some(FieldPointer {
                in_cdb: false,
                byte,
                bit,
            }),
            ..Self::new(SenseKey::IllegalRequest, 0x26, 0x00)
        }
    }

    /// With the INFORMATION field set (VALID = 1).
    pub const fn with_information(self, information: u32) -> Self {
        Self {
            information: Some(information),
            ..self
        }
    }

    /// Fixed-format sense data (SPC-4 §4.5.3, table 45): response code 70h (current error),
    /// 18 bytes.
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut s = [0u8; FIXED_SENSE_LEN];
        s[0] = 0x70;
        if let Some(info) = self.information {
            s[0] |= 0x80;
            s[3..7].copy_from_slice(&info.to_be_bytes());
        }
        s[2] = self.key as u8;
        s[7] = (FIXED_SENSE_LEN - 8) as u8;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(f) = self.field {
            // SKSV | C/D | BPV | BIT POINTER, then FIELD POINTER (SPC-4 §4.5.2.4.2, table 51).
            let mut b = 0x80;
            if f.in_cdb {
                b |= 0x40;
            }
            if let Some(bit) = f.bit {
                b |= 0x08 | (bit & 7);
            }
            s[15] = b;
            s[16..18].copy_from_slice(&f.byte.to_be_bytes());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::LBA_OUT_OF_RANGE.to_fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x21, 0x00));
        assert_eq!(s[15], 0);
    }

    #[test]
    fn field_pointer_and_information() {
        let s = Sense::invalid_cdb_field(1, Some(0)).to_fixed();
        assert_eq!(s[15], 0x80 | 0x40 | 0x08);
        assert_eq!(&s[16..18], &[0, 1]);
        let s = Sense::UNRECOVERED_READ_ERROR
            .with_information(0x1234_5678)
            .to_fixed();
        assert_eq!(s[0], 0xf0);
        assert_eq!(&s[3..7], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(s[2], 0x03);
        let s = Sense::invalid_param_field(2, None).to_fixed();
        assert_eq!((s[2], s[12], s[13]), (0x05, 0x26, 0x00));
        assert_eq!(s[15], 0x80, "C/D = 0: the parameter list");
        assert_eq!(&s[16..18], &[0, 2]);
    }
}
