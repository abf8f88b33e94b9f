//! Feeds arbitrary register traffic and guest memory (mailboxes, CCBs, SG lists) to the BusLogic
//! BT-958 model: only guest-visible error statuses may result, never a panic, a hang or an
//! out-of-bounds access.
//!
//! Input layout: bytes 0..2 = length N of the register program (little-endian, at most 4096);
//! the next N bytes are operations, two bytes each: `op` (bits 0-1 register offset, bit 2
//! write, bit 3 run mailbox processing after the access) and a value; the rest (at most
//! 64 KiB) is guest RAM at address 0, where a program that initializes mailboxes (opcode 0x81)
//! finds its outgoing mailboxes, CCBs and SG lists.

#![no_main]

use devices::block::MemDisk;
use devices::irq::IrqLines;
use devices::scsi::buslogic::BusLogic;
use devices::scsi::ScsiDisk;
use devices::virtio::FlatMemory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]])).min(4096);
    let rest = &data[2..];
    let (prog, ram) = rest.split_at(n.min(rest.len()));
    let mut mem = FlatMemory(ram[..ram.len().min(65536)].to_vec());
    let lines = IrqLines::new();
    let disks = vec![
        ScsiDisk::new(Box::new(MemDisk::new(64 * 512)), "F0"),
        ScsiDisk::new(Box::new(MemDisk::new(8 * 512)), "F1"),
    ];
    let mut hba = BusLogic::new(disks, lines.line(10)).unwrap();
    for op in prog.chunks_exact(2) {
        let (o, v) = (op[0], op[1]);
        let reg = u16::from(o & 3);
        if o & 4 != 0 {
            hba.write_reg(reg, v);
        } else {
            hba.read_reg(reg);
        }
        if o & 8 != 0 {
            hba.process(&mut mem);
        }
    }
    hba.process(&mut mem);
});
