//! Drives the e1000 (Intel 82540EM) model with arbitrary register writes against arbitrary
//! guest memory and arbitrary frames from the wire: ring bases, lengths, heads and tails,
//! descriptors (legacy, context, data with checksum offload and TSO) and EEPROM / PHY
//! accesses all come from the input. Only guest-visible effects may result, never a panic or
//! an out-of-bounds access.
//!
//! Input layout: bytes 0..2 = little-endian length L of the operation stream (at most 4 KiB),
//! then L bytes of operations, the rest is guest RAM at address 0 (at most 256 KiB). Each
//! operation is 7 bytes: kind, register index (u16, dword units within the BAR), value (u32).
//! kind % 4 == 0: register write; 1: register read; 2: inject a frame whose length is the value
//! (mod 2 KiB) taken from RAM at the register index * 16; 3: run the device (DMA).

#![no_main]

use devices::irq::IrqLines;
use devices::net::e1000::E1000;
use devices::net::NetPort;
use devices::virtio::FlatMemory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ops_len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(4096);
    let rest = &data[2..];
    let (ops, ram) = rest.split_at(ops_len.min(rest.len()));
    let mut mem = FlatMemory(ram[..ram.len().min(256 << 10)].to_vec());
    let (guest, wire) = NetPort::pair();
    let lines = IrqLines::new();
    let mut nic = E1000::new([0x52, 0x54, 0, 1, 2, 3], guest, lines.line(10));
    nic.assign_bar0(0xe200_0000);
    for op in ops.chunks_exact(7) {
        let reg = u64::from(u16::from_le_bytes([op[1], op[2]])) * 4;
        let value = u32::from_le_bytes([op[3], op[4], op[5], op[6]]);
        match op[0] % 4 {
            0 => nic.mmio_write(reg, 4, u64::from(value)),
            1 => {
                let _ = nic.mmio_read(reg, 4);
            }
            2 => {
                let start = (reg as usize * 4).min(mem.0.len());
                let len = (value as usize % 2048).min(mem.0.len() - start);
                let _ = wire.send(mem.0[start..start + len].to_vec());
            }
            _ => nic.process(&mut mem),
        }
        while wire.try_recv().is_some() {}
    }
    nic.process(&mut mem);
});
