//! Feeds arbitrary CDBs, data-out bytes and data-in buffer sizes to the SCSI disk target and
//! to the CD-ROM target (MMC commands: READ TOC, GET CONFIGURATION, GET EVENT STATUS ...).
//! Only SCSI status and sense data may result: a host panic or out-of-bounds access is a
//! bug. Input layout: byte 0 = CDB length (mod 33), then the CDB, two bytes of data-in buffer
//! size (x16), the rest is data-out.

#![no_main]

use devices::block::MemDisk;
use devices::scsi::{Cdb, ScsiCdrom, ScsiDisk, ScsiTarget, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 33).min(rest.len());
    let (cdb, rest) = rest.split_at(n);
    let (max, data_out) = match rest {
        [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) * 16, tail),
        _ => (4096, &[][..]),
    };
    let _ = Cdb::parse(cdb);
    let disk = ScsiDisk::new(Box::new(MemDisk::new(64 * 512)), "FUZZ");
    let mut iso = MemDisk::new(64 * 2048);
    iso.read_only = true;
    let cdrom = ScsiCdrom::new(Box::new(iso), "FUZZCD");
    let targets: [Box<dyn ScsiTarget>; 2] = [Box::new(disk), Box::new(cdrom)];
    for mut t in targets {
        // Twice: the second command sees any state the first changed (STOP UNIT, eject,
        // events).
        for _ in 0..2 {
            let r = t.execute(cdb, data_out, max);
            assert!(r.data_in.len() <= max);
            assert_eq!(r.status == Status::CheckCondition, r.sense.is_some());
        }
    }
});
