//! SCSI: a direct-access block device (disk) target implementing the SPC-4 / SBC-3 commands
//! Linux and Windows disk drivers use, independent of the transport (virtio-scsi, HBAs).
//!
//! * [`cdb`] parses command descriptor blocks into [`cdb::Cdb`].
//! * [`sense`] holds status codes and fixed-format sense data.
//! * [`disk::ScsiDisk`] executes commands against a [`crate::block::BlockBackend`].
//! * [`buslogic::BusLogic`] is a BusLogic BT-958 PCI host adapter in front of such disks.
//!
//! Transports hand the target the CDB, the data-out bytes and the size of the data-in buffer;
//! they get back a [`ScsiResponse`] (status, sense, data-in bytes). Malformed or unsupported
//! commands end in CHECK CONDITION with the SPC-4 sense data, never a host panic.

pub mod buslogic;
pub mod cdb;
pub mod cdrom;
pub mod disk;
pub mod sense;

pub use cdb::Cdb;
pub use cdrom::ScsiCdrom;
pub use disk::ScsiDisk;

/// A logical unit a transport can send commands to: a disk ([`ScsiDisk`]) or a CD-ROM drive
/// ([`ScsiCdrom`]).
pub trait ScsiTarget: Send + std::fmt::Debug {
    /// Execute one command: `cdb` as received, `data_out` the bytes the initiator sent, and
    /// `data_in_max` the size of the initiator's data-in buffer. Never panics: malformed or
    /// unsupported commands give CHECK CONDITION with sense data.
    fn execute(&mut self, cdb: &[u8], data_out: &[u8], data_in_max: usize) -> ScsiResponse;
    /// The medium's back-end (power-off handling).
    fn backend_mut(&mut self) -> &mut dyn crate::block::BlockBackend;
}
pub use sense::{Sense, SenseKey, Status};

/// Result of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    /// Status byte.
    pub status: Status,
    /// Sense data for CHECK CONDITION (autosense).
    pub sense: Option<Sense>,
    /// Data-in bytes (at most the transport's data-in buffer size).
    pub data_in: Vec<u8>,
}

impl ScsiResponse {
    /// GOOD with `data` truncated to `max` bytes (allocation length / buffer size, SPC-4
    /// §4.2.5.6).
    pub fn good(mut data: Vec<u8>, max: usize) -> Self {
        data.truncate(max);
        Self {
            status: Status::Good,
            sense: None,
            data_in: data,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: Status::CheckCondition,
            sense: Some(sense),
            data_in: Vec::new(),
        }
    }
}

/// Response of a logical unit that does not exist behind an existing target (SPC-4 §6.6.2,
/// §6.33, §4.5.5): INQUIRY reports peripheral qualifier 011b / device type 1Fh, REPORT LUNS and
/// REQUEST SENSE are answered, everything else is ILLEGAL REQUEST, LOGICAL UNIT NOT
/// SUPPORTED.
pub fn unsupported_lun(cdb: &[u8], data_in_max: usize, luns: &[u16]) -> ScsiResponse {
    match Cdb::parse(cdb) {
        Ok(Cdb::Inquiry {
            evpd: false,
            alloc_len,
            ..
        }) => {
            let mut d = disk::standard_inquiry();
            d[0] = 0x7f;
            ScsiResponse::good(d, usize::from(alloc_len).min(data_in_max))
        }
        Ok(Cdb::ReportLuns {
            select_report,
            alloc_len,
        }) => disk::report_luns(select_report, alloc_len, data_in_max, luns),
        Ok(Cdb::RequestSense { alloc_len }) => ScsiResponse::good(
            Sense::LUN_NOT_SUPPORTED.to_fixed().to_vec(),
            usize::from(alloc_len).min(data_in_max),
        ),
        _ => ScsiResponse::check(Sense::LUN_NOT_SUPPORTED),
    }
}
