//! Drives virtio-net over the modern PCI transport with arbitrary BAR writes (common
//! configuration, queue addresses, notifications) against arbitrary guest memory, with frames
//! arriving from the wire: only DEVICE_NEEDS_RESET or dropped frames may result, never a panic
//! or an out-of-bounds access.
//!
//! Input layout: bytes 0..2 = little-endian length L of the operation stream (at most 4 KiB),
//! then L bytes of operations, the rest is guest RAM at address 0 (at most 256 KiB). Each
//! operation is 8 bytes: kind, size (1/2/4/8 from bits 0-1), BAR offset (u16), value (u32).
//! kind % 4 == 0: BAR write; 1: BAR read; 2: a frame of value % 2 KiB bytes arrives and the
//! receive queue is kicked; 3: process queues.

#![no_main]

use devices::irq::IrqLines;
use devices::net::virtio_net::VirtioNet;
use devices::net::NetPort;
use devices::virtio::{FlatMemory, VirtioPci};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct NoMsi;
impl devices::virtio::MsiSink for NoMsi {
    fn signal(&self, _addr: u64, _data: u32) {}
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ops_len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(4096);
    let rest = &data[2..];
    let (ops, ram) = rest.split_at(ops_len.min(rest.len()));
    let mut mem = FlatMemory(ram[..ram.len().min(256 << 10)].to_vec());
    let (guest, wire) = NetPort::pair();
    let mut dev = VirtioPci::new(
        VirtioNet::new([0x52, 0x54, 0, 1, 2, 3], guest),
        IrqLines::new().line(11),
        Box::new(NoMsi),
    );
    dev.assign_bar0(0xe200_0000);
    for op in ops.chunks_exact(8) {
        let size = 1u8 << (op[1] & 3);
        let off = u64::from(u16::from_le_bytes([op[2], op[3]]));
        let value = u32::from_le_bytes([op[4], op[5], op[6], op[7]]);
        match op[0] % 4 {
            0 => dev.bar_write(off, size, u64::from(value)),
            1 => {
                let _ = dev.bar_read(off, size);
            }
            2 => {
                let _ = wire.send(vec![op[1]; value as usize % 2048]);
                dev.kick(0);
            }
            _ => dev.process(&mut mem),
        }
        while wire.try_recv().is_some() {}
    }
    dev.process(&mut mem);
});
