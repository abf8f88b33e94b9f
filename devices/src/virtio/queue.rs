//! Split virtqueues (virtio 1.2 §2.7), device side. Every descriptor chain the driver posts
//! is validated before the device touches it (§2.7.4.2, §2.7.5): head and `next` indices
//! within the queue, no loops (at most queue-size descriptors per chain), device-writable
//! descriptors only after the device-readable ones, every buffer inside guest RAM, total
//! length within 32 bits. Indirect descriptors are not offered (VIRTIO_F_INDIRECT_DESC), so a
//! chain using them is malformed. A malformed chain is an error value; the transport then
//! sets DEVICE_NEEDS_RESET (§2.1.2) instead of panicking.

use super::mem::{DmaError, GuestMemory};

/// Descriptor flag: the chain continues at `next` (§2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: device-writable buffer.
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of indirect descriptors (§2.7.5.3).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver does not want interrupts (§2.7.7).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Largest queue size the spec allows (§2.7: Queue Size up to 32768).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// A driver error in a virtqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A ring or buffer lies outside guest RAM.
    #[error(transparent)]
    Dma(#[from] DmaError),
    /// The available index moved by more than the queue size.
    #[error("available index {avail} is more than the queue size ahead of {seen}")]
    AvailIndex {
        /// idx read from the available ring.
        avail: u16,
        /// Next index the device expected.
        seen: u16,
    },
    /// A head or `next` descriptor index at or beyond the queue size.
    #[error("descriptor index {0} out of range")]
    DescIndex(u16),
    /// The chain is longer than the queue (a loop).
    #[error("descriptor chain longer than the queue (loop)")]
    Loop,
    /// VIRTQ_DESC_F_INDIRECT without the feature.
    #[error("indirect descriptor not negotiated")]
    Indirect,
    /// A device-readable descriptor after a device-writable one.
    #[error("readable descriptor after a writable one")]
    ReadableAfterWritable,
    /// Total length of the chain exceeds 32 bits.
    #[error("descriptor chain length overflows")]
    Length,
    /// The queue is not enabled or not configured.
    #[error("queue not ready")]
    NotReady,
}

/// One guest buffer: guest physical address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// A validated descriptor chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescChain {
    /// Head descriptor index (returned in the used ring).
    pub head: u16,
    /// Device-readable buffers, in order.
    pub readable: Vec<Buffer>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Buffer>,
}

fn total(bufs: &[Buffer]) -> u64 {
    bufs.iter().map(|b| u64::from(b.len)).sum()
}

/// Copy between a scatter list and `data`, starting `offset` bytes into the list.
fn scatter(
    bufs: &[Buffer],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), DmaError>,
) -> Result<usize, DmaError> {
    let mut done = 0usize;
    for b in bufs {
        if done == len {
            break;
        }
        let blen = u64::from(b.len);
        if offset >= blen {
            offset -= blen;
            continue;
        }
        let n = ((blen - offset) as usize).min(len - done);
        f(b.addr + offset, done..done + n)?;
        done += n;
        offset = 0;
    }
    Ok(done)
}

impl DescChain {
    /// Total bytes of the device-readable part.
    pub fn readable_len(&self) -> u64 {
        total(&self.readable)
    }
    /// Total bytes of the device-writable part.
    pub fn writable_len(&self) -> u64 {
        total(&self.writable)
    }
    /// Read up to `buf.len()` bytes of the readable part starting at `offset`; returns the
    /// number read.
    pub fn read_at(
        &self,
        mem: &dyn GuestMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, DmaError> {
        let len = buf.len();
        scatter(&self.readable, offset, len, |a, r| mem.read(a, &mut buf[r]))
    }
    /// Write up to `data.len()` bytes into the writable part at `offset`; returns the number
    /// written.
    pub fn write_at(
        &self,
        mem: &mut dyn GuestMemory,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, DmaError> {
        scatter(&self.writable, offset, data.len(), |a, r| {
            mem.write(a, &data[r])
        })
    }
}

/// Device-side state of one split virtqueue, as configured through the transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitQueue {
    /// Queue size (power of two, at most the device maximum).
    pub size: u16,
    /// queue_enable.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Driver area (available ring) address.
    pub avail: u64,
    /// Device area (used ring) address.
    pub used: u64,
    /// MSI-X vector for this queue (0xFFFF = none).
    pub msix_vector: u16,
    /// Next available-ring index the device will consume.
    pub next_avail: u16,
    /// Next used-ring index the device will fill.
    pub next_used: u16,
}

impl SplitQueue {
    /// A disabled queue of `size` entries.
    pub fn new(size: u16) -> Self {
        Self {
            size,
            msix_vector: 0xffff,
            ..Self::default()
        }
    }

    fn check_ready(&self) -> Result<(), QueueError> {
        if !self.ready || self.size == 0 || !self.size.is_power_of_two() {
            return Err(QueueError::NotReady);
        }
        Ok(())
    }

    /// Whether the rings themselves lie in guest RAM (checked when the driver enables the
    /// queue and before each use).
    pub fn check_rings(&self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        self.check_ready()?;
        let n = u64::from(self.size);
        mem.check(self.desc, 16 * n)?;
        mem.check(self.avail, 6 + 2 * n)?;
        mem.check(self.used, 6 + 8 * n)?;
        Ok(())
    }

    /// Take the next available descriptor chain, if any, validating it.
    pub fn pop(&mut self, mem: &dyn GuestMemory) -> Result<Option<DescChain>, QueueError> {
        self.check_ready()?;
        let avail_idx = mem.read_u16(self.avail + 2)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::AvailIndex {
                avail: avail_idx,
                seen: self.next_avail,
            });
        }
        let slot = u64::from(self.next_avail % self.size);
        let head = mem.read_u16(self.avail + 4 + 2 * slot)?;
        let chain = self.walk(mem, head)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<DescChain, QueueError> {
        let mut chain = DescChain {
            head,
            ..DescChain::default()
        };
        let mut idx = head;
        let mut total: u64 = 0;
        for _ in 0..self.size {
            if idx >= self.size {
                return Err(QueueError::DescIndex(idx));
            }
            let at = self.desc + 16 * u64::from(idx);
            let addr = mem.read_u64(at)?;
            let len = mem.read_u32(at + 8)?;
            let flags = mem.read_u16(at + 12)?;
            let next = mem.read_u16(at + 14)?;
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect);
            }
            mem.check(addr, u64::from(len))?;
            total += u64::from(len);
            if total > u64::from(u32::MAX) {
                return Err(QueueError::Length);
            }
            let buf = Buffer { addr, len };
            if flags & VIRTQ_DESC_F_WRITE != 0 {
                chain.writable.push(buf);
            } else if chain.writable.is_empty() {
                chain.readable.push(buf);
            } else {
                return Err(QueueError::ReadableAfterWritable);
            }
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(chain);
            }
            idx = next;
        }
        Err(QueueError::Loop)
    }

    /// Return chain `head` to the driver with `len` bytes written (§2.7.8). Returns whether
    /// the driver wants an interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT clear, §2.7.7).
    pub fn push_used(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<bool, QueueError> {
        self.check_ready()?;
        let slot = u64::from(self.next_used % self.size);
        let at = self.used + 4 + 8 * slot;
        mem.write_u32(at, u32::from(head))?;
        mem.write_u32(at + 4, len)?;
        self.next_used = self.next_used.wrapping_add(1);
        mem.write_u16(self.used + 2, self.next_used)?;
        let flags = mem.read_u16(self.avail)?;
        Ok(flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0)
    }
}

/// Driver-side helpers that lay out a queue in a [`super::mem::FlatMemory`] (tests, fuzz).
pub mod testing {
    use super::*;
    use crate::virtio::mem::FlatMemory;

    /// A queue of `size` entries at `base` in `mem`: descriptors, then the available ring,
    /// then the used ring (4-byte aligned).
    pub fn layout(size: u16, base: u64) -> SplitQueue {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        SplitQueue {
            size,
            ready: true,
            desc: base,
            avail,
            used,
            ..SplitQueue::new(size)
        }
    }

    /// Write descriptor `i`.
    pub fn set_desc(
        mem: &mut FlatMemory,
        q: &SplitQueue,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = q.desc + 16 * u64::from(i);
        mem.write(at, &addr.to_le_bytes()).unwrap();
        mem.write_u32(at + 8, len).unwrap();
        mem.write_u16(at + 12, flags).unwrap();
        mem.write_u16(at + 14, next).unwrap();
    }

    /// Post chain `head` in the available ring and bump its index.
    pub fn post(mem: &mut FlatMemory, q: &SplitQueue, head: u16) {
        let idx = mem.read_u16(q.avail + 2).unwrap();
        let slot = u64::from(idx % q.size);
        mem.write_u16(q.avail + 4 + 2 * slot, head).unwrap();
        mem.write_u16(q.avail + 2, idx.wrapping_add(1)).unwrap();
    }

    /// Used-ring entry `i` (id, len) and the used index.
    pub fn used(mem: &FlatMemory, q: &SplitQueue, i: u16) -> (u32, u32, u16) {
        let at = q.used + 4 + 8 * u64::from(i % q.size);
        (
            mem.read_u32(at).unwrap(),
            mem.read_u32(at + 4).unwrap(),
            mem.read_u16(q.used + 2).unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::virtio::mem::FlatMemory;

    fn setup() -> (FlatMemory, SplitQueue) {
        let mem = FlatMemory(vec![0; 0x10000]);
        let q = layout(8, 0x1000);
        (mem, q)
    }

    #[test]
    fn pop_and_push() {
        let (mut mem, mut q) = setup();
        assert_eq!(q.pop(&mem), Ok(None));
        set_desc(&mut mem, &q, 3, 0x4000, 10, VIRTQ_DESC_F_NEXT, 5);
        set_desc(&mut mem, &q, 5, 0x5000, 20, VIRTQ_DESC_F_NEXT, 1);
        set_desc(&mut mem, &q, 1, 0x6000, 30, VIRTQ_DESC_F_WRITE, 0);
        mem.write(0x4000, b"0123456789").unwrap();
        mem.write(0x5000, b"abcdefghijklmnopqrst").unwrap();
        post(&mut mem, &q, 3);
        let c = q.pop(&mem).unwrap().unwrap();
        assert_eq!(c.head, 3);
        assert_eq!(c.readable.len(), 2);
        assert_eq!(c.readable_len(), 30);
        assert_eq!(c.writable_len(), 30);
        let mut b = [0u8; 6];
        assert_eq!(c.read_at(&mem, 8, &mut b).unwrap(), 6);
        assert_eq!(&b, b"89abcd");
        assert_eq!(c.read_at(&mem, 28, &mut b).unwrap(), 2);
        assert_eq!(c.write_at(&mut mem, 25, b"hello world").unwrap(), 5);
        assert_eq!(q.pop(&mem), Ok(None));
        assert!(q.push_used(&mut mem, 3, 30).unwrap());
        assert_eq!(used(&mem, &q, 0), (3, 30, 1));
        mem.write_u16(q.avail, VIRTQ_AVAIL_F_NO_INTERRUPT).unwrap();
        assert!(!q.push_used(&mut mem, 3, 0).unwrap());
        assert_eq!(&mem.0[0x6019..0x601e], b"hello");
    }

    #[test]
    fn malformed_chains() {
        let (mut mem, mut q) = setup();
        // Loop: 0 -> 1 -> 0.
        set_desc(&mut mem, &q, 0, 0x4000, 1, VIRTQ_DESC_F_NEXT, 1);
        set_desc(&mut mem, &q, 1, 0x4000, 1, VIRTQ_DESC_F_NEXT, 0);
        post(&mut mem, &q, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::Loop));
        // Head out of range.
        let (mut mem, mut q) = setup();
        post(&mut mem, &q, 8);
        assert_eq!(q.pop(&mem), Err(QueueError::DescIndex(8)));
        // next out of range.
        let (mut mem, mut q) = setup();
        set_desc(&mut mem, &q, 0, 0x4000, 1, VIRTQ_DESC_F_NEXT, 100);
        post(&mut mem, &q, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::DescIndex(100)));
        // Buffer outside RAM, and wrapping.
        for addr in [0xfff0, u64::MAX - 4] {
            let (mut mem, mut q) = setup();
            set_desc(&mut mem, &q, 0, addr, 0x20, 0, 0);
            post(&mut mem, &q, 0);
            assert!(matches!(q.pop(&mem), Err(QueueError::Dma(_))));
        }
        // Readable after writable.
        let (mut mem, mut q) = setup();
        set_desc(
            &mut mem,
            &q,
            0,
            0x4000,
            1,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            1,
        );
        set_desc(&mut mem, &q, 1, 0x4000, 1, 0, 0);
        post(&mut mem, &q, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::ReadableAfterWritable));
        // Indirect (not negotiated).
        let (mut mem, mut q) = setup();
        set_desc(&mut mem, &q, 0, 0x4000, 16, VIRTQ_DESC_F_INDIRECT, 0);
        post(&mut mem, &q, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::Indirect));
        // Available index running ahead by more than the queue size.
        let (mut mem, mut q) = setup();
        mem.write_u16(q.avail + 2, 9).unwrap();
        assert!(matches!(q.pop(&mem), Err(QueueError::AvailIndex { .. })));
        // Rings outside RAM; queue not ready.
        let mut q2 = layout(8, 0xffa0);
        assert!(q2.check_rings(&mem).is_err());
        q2.ready = false;
        assert_eq!(q2.pop(&mem), Err(QueueError::NotReady));
    }

    #[test]
    fn index_wraps() {
        let (mut mem, mut q) = setup();
        q.next_avail = 0xffff;
        q.next_used = 0xffff;
        mem.write_u16(q.avail + 2, 0xffff).unwrap();
        set_desc(&mut mem, &q, 2, 0x4000, 4, VIRTQ_DESC_F_WRITE, 0);
        post(&mut mem, &q, 2);
        let c = q.pop(&mem).unwrap().unwrap();
        assert_eq!(c.head, 2);
        assert_eq!(q.next_avail, 0);
        q.push_used(&mut mem, 2, 4).unwrap();
        assert_eq!(used(&mem, &q, 0xffff), (2, 4, 0));
    }

    /// The fuzz target's property (fuzz/fuzz_targets/virtqueue.rs) on pseudo-random rings:
    /// only `QueueError` values, never a panic; every accepted chain lies in RAM.
    #[test]
    fn random_rings_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2_000 {
            let mut mem = FlatMemory(vec![0; 0x2000]);
            for b in mem.0.iter_mut() {
                let r = next();
                *b = if r & 1 == 0 { 0 } else { (r >> 8) as u8 & 0x1f };
            }
            let size = 1u16 << (round % 6);
            let mut q = layout(size, 0);
            q.next_avail = (next() % 4) as u16;
            q.next_used = q.next_avail;
            for _ in 0..2 * size {
                match q.pop(&mem) {
                    Ok(Some(c)) => {
                        for b in c.readable.iter().chain(&c.writable) {
                            assert!(mem.check(b.addr, u64::from(b.len)).is_ok());
                        }
                        let mut buf = vec![0u8; c.readable_len() as usize];
                        assert_eq!(c.read_at(&mem, 0, &mut buf).unwrap(), buf.len());
                        let w = c.writable_len() as usize;
                        assert_eq!(c.write_at(&mut mem, 0, &vec![1; w]).unwrap(), w);
                        let _ = q.push_used(&mut mem, c.head, w as u32);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
