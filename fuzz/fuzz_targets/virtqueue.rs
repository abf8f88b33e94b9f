//! Parses arbitrary guest memory as a split virtqueue (virtio 1.2 §2.7) and consumes every
//! chain: only `QueueError` values may result, never a panic or an out-of-bounds access.
//! Input layout: byte 0 = log2 queue size (mod 8), bytes 1..3 = initial next_avail, the rest
//! is guest RAM (at most 64 KiB) holding the rings at address 0.

#![no_main]

use devices::virtio::queue::testing::layout;
use devices::virtio::{FlatMemory, GuestMemory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let size = 1u16 << (data[0] % 8);
    let mut mem = FlatMemory(data[3..data.len().min(3 + 65536)].to_vec());
    let mut q = layout(size, 0);
    q.next_avail = u16::from_le_bytes([data[1], data[2]]);
    q.next_used = q.next_avail;
    if q.check_rings(&mem).is_err() {
        return;
    }
    for _ in 0..2 * u32::from(size) {
        match q.pop(&mem) {
            Ok(Some(c)) => {
                let mut buf = vec![0u8; c.readable_len().min(1 << 16) as usize];
                let n = c.read_at(&mem, 0, &mut buf).unwrap();
                assert_eq!(n, buf.len());
                let w = c.writable_len().min(1 << 16) as usize;
                assert_eq!(c.write_at(&mut mem, 0, &vec![0xa5; w]).unwrap(), w);
                let _ = q.push_used(&mut mem, c.head, w as u32);
                let _ = mem.read_u16(0);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
