//! Feeds arbitrary CDBs, data-out bytes and data-in buffer sizes to the SCSI disk target and
//! to the CD-ROM target (MMC commands: READ TOC, GET CONFIGURATION, GET EVENT STATUS ...).
//! Only SCSI status and sense data may result: a host panic or out-of-bounds access is a
//! bug. Input layout: byte 0 = CDB length (mod 33), then the CDB, two bytes of data-in buffer
//! size (x16), the rest is data-out.
//!
//! The same data-out also goes, as the parameter list or pattern, to an UNMAP and a WRITE
//! SAME(16) whose fields come from the CDB bytes, so the parameter-list parser and the
//! provisioning paths are reached without the fuzzer first finding their opcodes; a block
//! an UNMAP or a zero-pattern WRITE SAME reported GOOD for must then read back as zeros.

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
    provisioning(cdb, data_out);
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

/// UNMAP and WRITE SAME(16) built from `seed` (the fuzzed CDB bytes) with `data_out` as the
/// parameter list / pattern, on a disk of 64 blocks filled with 0xff.
fn provisioning(seed: &[u8], data_out: &[u8]) {
    let byte = |i: usize| seed.get(i).copied().unwrap_or(0);
    let mut m = MemDisk::new(64 * 512);
    m.data.fill(0xff);
    let mut disk = ScsiDisk::new(Box::new(m), "FUZZ");
    let mut unmap = [0u8; 10];
    unmap[0] = 0x42;
    unmap[1] = byte(0) & 1;
    let len = (data_out.len() as u16).wrapping_add(u16::from(byte(1) & 7)).wrapping_sub(4);
    unmap[7..9].copy_from_slice(&len.to_be_bytes());
    let r = disk.execute(&unmap, data_out, 0);
    assert!(r.data_in.is_empty());
    assert_eq!(r.status == Status::CheckCondition, r.sense.is_some());
    if r.status == Status::Good && data_out.len() >= 24 && usize::from(len) >= 24 {
        // The first descriptor, when complete and non-empty, now reads as zeros.
        let desc = u16::from_be_bytes([data_out[2], data_out[3]]);
        let lba = u64::from_be_bytes(data_out[8..16].try_into().unwrap());
        let n = u32::from_be_bytes(data_out[16..20].try_into().unwrap());
        if desc >= 16 && n > 0 {
            let mut b = [0xaau8; 512];
            disk.backend_mut().read_at(lba * 512, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == 0), "unmapped LBA {lba} reads non-zero");
        }
    }
    let mut ws = [0u8; 16];
    ws[0] = 0x93;
    ws[1] = byte(2) & 0x0f;
    ws[9] = byte(3) & 0x7f;
    ws[13] = byte(4) & 0x7f;
    let r = disk.execute(&ws, data_out, 0);
    assert!(r.data_in.is_empty());
    assert_eq!(r.status == Status::CheckCondition, r.sense.is_some());
    let ndob = ws[1] & 1 != 0;
    let zero = ndob || data_out.get(..512).is_some_and(|p| p.iter().all(|&x| x == 0));
    if r.status == Status::Good && zero {
        let mut b = [0xaau8; 512];
        disk.backend_mut()
            .read_at(u64::from(ws[9]) * 512, &mut b)
            .unwrap();
        assert!(b.iter().all(|&x| x == 0), "WRITE SAME of zeros left data");
    }
}
