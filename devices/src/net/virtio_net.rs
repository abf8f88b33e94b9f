//! virtio-net (virtio 1.2 §5.1) over the modern PCI transport ([`crate::virtio::VirtioPci`],
//! PCI device ID 0x1041): queue 0 receives, queue 1 transmits; no control queue, one queue
//! pair. Offered features: VIRTIO_NET_F_MAC (the station address in the configuration
//! space) and VIRTIO_NET_F_STATUS (link status, always up). No checksum or segmentation
//! offloads are offered, so every packet carries a zero `virtio_net_hdr` (12 bytes, the
//! VIRTIO_F_VERSION_1 layout with `num_buffers`) and the guest computes its own checksums.
//!
//! Receiving needs guest memory, so it happens on the vCPU thread: the machine calls
//! [`crate::virtio::VirtioPci::kick`] for queue 0 when frames wait on the back-end and the
//! guest has posted buffers ([`VirtioNet::wants_rx_kick`]); a frame that finds no buffer is
//! held (not dropped) until the driver posts more and notifies.

use crate::net::{MacAddr, NetPort, MAX_FRAME, MIN_FRAME};
use crate::virtio::{GuestMemory, QueueError, SplitQueue, VirtioDevice};

/// virtio device ID of a network card (§5.1).
pub const DEVICE_ID: u16 = 1;
/// VIRTIO_NET_F_MAC (§5.1.3).
pub const F_MAC: u64 = 1 << 5;
/// VIRTIO_NET_F_STATUS.
pub const F_STATUS: u64 = 1 << 16;
/// VIRTIO_NET_S_LINK_UP (§5.1.4).
pub const S_LINK_UP: u16 = 1;
/// Size of `struct virtio_net_hdr` with VIRTIO_F_VERSION_1 (bytes, §5.1.6).
pub const HDR_LEN: usize = 12;
/// Queue size offered for both queues.
pub const QUEUE_SIZE: u16 = 256;

/// Receive queue index.
pub const RX: u16 = 0;
/// Transmit queue index.
pub const TX: u16 = 1;

/// Counters (tests, diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames sent to the back-end.
    pub tx_frames: u64,
    /// Frames placed in receive buffers.
    pub rx_frames: u64,
    /// Frames dropped: bad length, too big for the posted buffer, back-end full.
    pub dropped: u64,
}

/// The virtio-net device model.
#[derive(Debug)]
pub struct VirtioNet {
    mac: MacAddr,
    port: NetPort,
    held: Option<Vec<u8>>,
    /// The receive queue ran out of buffers with a frame waiting; cleared when the queue is
    /// processed again (the driver's notification after refilling).
    starved: bool,
    /// Counters.
    pub counters: NetCounters,
}

impl VirtioNet {
    /// A NIC with station address `mac` on the guest end `port` of a frame pipe.
    pub fn new(mac: MacAddr, port: NetPort) -> Self {
        Self {
            mac,
            port,
            held: None,
            starved: false,
            counters: NetCounters::default(),
        }
    }

    /// The back-end pipe (for waiting on arriving frames).
    pub fn port(&self) -> &NetPort {
        &self.port
    }

    /// Whether the receive queue should be processed for frames waiting on the back-end:
    /// some are waiting and the last attempt did not run out of buffers.
    pub fn wants_rx_kick(&self) -> bool {
        !self.starved && (self.held.is_some() || !self.port.rx.is_empty())
    }

    /// Whether frames arriving now could be delivered without waiting for the driver.
    pub fn can_receive(&self) -> bool {
        !self.starved && self.held.is_none()
    }

    fn receive(
        &mut self,
        queue: &mut SplitQueue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        self.starved = false;
        let mut notify = false;
        loop {
            let frame = match self.held.take() {
                Some(f) => f,
                None => match self.port.try_recv() {
                    Some(f) => f,
                    None => break,
                },
            };
            if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
                self.counters.dropped += 1;
                continue;
            }
            let Some(chain) = queue.pop(mem)? else {
                self.held = Some(frame);
                self.starved = true;
                break;
            };
            let need = (HDR_LEN + frame.len()) as u64;
            if chain.writable_len() < need {
                // The driver posted a buffer too small for this frame: it is dropped and the
                // buffer returned unused (len 0), like a NIC discarding an oversized frame.
                self.counters.dropped += 1;
                notify |= queue.push_used(mem, chain.head, 0)?;
                continue;
            }
            let mut hdr = [0u8; HDR_LEN];
            // num_buffers = 1: without VIRTIO_NET_F_MRG_RXBUF each packet uses one buffer.
            hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
            chain.write_at(mem, 0, &hdr)?;
            chain.write_at(mem, HDR_LEN as u64, &frame)?;
            notify |= queue.push_used(mem, chain.head, need as u32)?;
            self.counters.rx_frames += 1;
        }
        Ok(notify)
    }

    fn transmit(
        &mut self,
        queue: &mut SplitQueue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut notify = false;
        while let Some(chain) = queue.pop(mem)? {
            let len = chain.readable_len();
            if len >= (HDR_LEN + MIN_FRAME) as u64 && len <= (HDR_LEN + MAX_FRAME) as u64 {
                let mut buf = vec![0u8; len as usize];
                chain.read_at(mem, 0, &mut buf)?;
                // No offloads negotiated: the header's flags and gso_type are 0 and ignored.
                if self.port.send(buf.split_off(HDR_LEN)) {
                    self.counters.tx_frames += 1;
                } else {
                    self.counters.dropped += 1;
                }
            } else {
                self.counters.dropped += 1;
            }
            notify |= queue.push_used(mem, chain.head, 0)?;
        }
        Ok(notify)
    }
}

impl VirtioDevice for VirtioNet {
    fn device_id(&self) -> u16 {
        DEVICE_ID
    }
    fn class(&self) -> [u8; 3] {
        [0x02, 0x00, 0x00]
    }
    fn features(&self) -> u64 {
        F_MAC | F_STATUS
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6], status (le16), max_virtqueue_pairs (le16).
        let mut cfg = [0u8; 10];
        cfg[0..6].copy_from_slice(&self.mac);
        cfg[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (§5.1.4.2).
    }
    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        match index {
            RX => self.receive(queue, mem),
            TX => self.transmit(queue, mem),
            _ => Ok(false),
        }
    }
    fn reset(&mut self) {
        self.held = None;
        self.starved = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::IrqLines;
    use crate::pci::PciDevice;
    use crate::virtio::pci::{layout, status, MsiSink, VirtioPci};
    use crate::virtio::queue::testing::{layout as qlayout, post, set_desc, used};
    use crate::virtio::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
    use crate::virtio::FlatMemory;
    use std::sync::{Arc, Mutex};

    const MAC: MacAddr = [0x52, 0x54, 0, 0, 2, 1];

    #[derive(Debug, Clone, Default)]
    struct Msis(Arc<Mutex<Vec<(u64, u32)>>>);
    impl MsiSink for Msis {
        fn signal(&self, addr: u64, data: u32) {
            self.0.lock().unwrap().push((addr, data));
        }
    }

    struct Rig {
        dev: VirtioPci<VirtioNet>,
        wire: NetPort,
        mem: FlatMemory,
        msis: Msis,
        rxq: SplitQueue,
        txq: SplitQueue,
    }

    /// Driver initialisation as Linux's virtio_pci_modern + virtio_net do it: features MAC and
    /// STATUS, two queues with MSI-X vectors 1 and 2.
    fn rig() -> Rig {
        let (guest, wire) = NetPort::pair();
        let msis = Msis::default();
        let mut dev = VirtioPci::new(
            VirtioNet::new(MAC, guest),
            IrqLines::new().line(11),
            Box::new(msis.clone()),
        );
        assert_eq!(dev.config_read(0, 4), 0x1041_1af4);
        assert_eq!(dev.config_read(0x08, 4) >> 8, 0x02_0000, "class: Ethernet");
        dev.assign_bar0(0xe200_0000);
        dev.config_write(0x98 + 2, 2, 0x8000);
        for v in 0..3u64 {
            dev.bar_write(layout::MSIX_TABLE + 16 * v, 4, 0xfee0_0000);
            dev.bar_write(layout::MSIX_TABLE + 16 * v + 8, 4, 0x50 + v);
            dev.bar_write(layout::MSIX_TABLE + 16 * v + 12, 4, 0);
        }
        dev.bar_write(0x14, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER));
        dev.bar_write(0x00, 4, 0);
        let f = dev.bar_read(0x04, 4);
        assert_eq!(f, F_MAC | F_STATUS);
        dev.bar_write(0x08, 4, 0);
        dev.bar_write(0x0c, 4, f);
        dev.bar_write(0x08, 4, 1);
        dev.bar_write(0x0c, 4, 1);
        dev.bar_write(
            0x14,
            1,
            u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        );
        assert_ne!(dev.status() & status::FEATURES_OK, 0);
        assert_eq!(dev.bar_read(0x12, 2), 2, "num_queues");
        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = dev.bar_read(layout::DEVICE + i as u64, 1) as u8;
        }
        assert_eq!(mac, MAC);
        assert_eq!(dev.bar_read(layout::DEVICE + 6, 2), u64::from(S_LINK_UP));
        let rxq = qlayout(16, 0x10000);
        let txq = qlayout(16, 0x11000);
        for (i, q) in [&rxq, &txq].into_iter().enumerate() {
            dev.bar_write(0x16, 2, i as u64);
            assert_eq!(dev.bar_read(0x18, 2), u64::from(QUEUE_SIZE));
            dev.bar_write(0x18, 2, 16);
            dev.bar_write(0x1a, 2, i as u64 + 1);
            dev.bar_write(0x20, 8, q.desc);
            dev.bar_write(0x28, 8, q.avail);
            dev.bar_write(0x30, 8, q.used);
            dev.bar_write(0x1c, 2, 1);
        }
        dev.bar_write(0x14, 1, 0x0f);
        assert_eq!(dev.status(), 0x0f);
        Rig {
            dev,
            wire,
            mem: FlatMemory(vec![0; 0x80000]),
            msis,
            rxq,
            txq,
        }
    }

    impl Rig {
        /// Post `n` receive buffers of `len` bytes (one writable descriptor each, as
        /// add_recvbuf_small does) and notify.
        fn post_rx(&mut self, first: u16, n: u16, len: u32) {
            for i in first..first + n {
                set_desc(
                    &mut self.mem,
                    &self.rxq,
                    i,
                    0x20000 + 0x1000 * u64::from(i),
                    len,
                    VIRTQ_DESC_F_WRITE,
                    0,
                );
                post(&mut self.mem, &self.rxq, i);
            }
            self.dev.bar_write(layout::NOTIFY, 2, 0);
        }
        fn process(&mut self) {
            self.dev.process(&mut self.mem);
        }
    }

    #[test]
    fn transmit_strips_the_header_and_receive_prepends_it() {
        let mut r = rig();
        // Transmit: header and frame in two descriptors (xmit_skb with a separate header).
        let frame: Vec<u8> = (0..64u8).collect();
        r.mem.write(0x30000, &[0; HDR_LEN]).unwrap();
        r.mem.write(0x30100, &frame).unwrap();
        set_desc(
            &mut r.mem,
            &r.txq,
            0,
            0x30000,
            HDR_LEN as u32,
            VIRTQ_DESC_F_NEXT,
            1,
        );
        set_desc(&mut r.mem, &r.txq, 1, 0x30100, 64, 0, 0);
        post(&mut r.mem, &r.txq, 0);
        r.dev.bar_write(layout::NOTIFY + 4, 2, 1);
        r.process();
        assert_eq!(r.wire.try_recv(), Some(frame.clone()));
        assert_eq!(used(&r.mem, &r.txq, 0), (0, 0, 1));
        assert!(r.msis.0.lock().unwrap().contains(&(0xfee0_0000, 0x52)));

        // Receive with no buffers posted: the frame is held, not dropped.
        assert!(r.wire.send(frame.clone()));
        assert!(r.dev.device.wants_rx_kick());
        r.dev.kick(RX);
        r.process();
        assert!(
            !r.dev.device.wants_rx_kick(),
            "starved until the driver refills"
        );
        assert!(!r.dev.device.can_receive());
        r.post_rx(0, 2, 1526);
        r.process();
        let (id, len, idx) = used(&r.mem, &r.rxq, 0);
        assert_eq!((id, len, idx), (0, (HDR_LEN + 64) as u32, 1));
        let mut got = vec![0u8; HDR_LEN + 64];
        r.mem.read(0x20000, &mut got).unwrap();
        assert_eq!(&got[..10], &[0; 10], "no offload flags");
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(&got[HDR_LEN..], &frame[..]);
        assert!(r.msis.0.lock().unwrap().contains(&(0xfee0_0000, 0x51)));
        assert_eq!(r.dev.device.counters.rx_frames, 1);
    }

    #[test]
    fn small_buffers_drop_the_frame_and_bad_chains_need_reset() {
        let mut r = rig();
        r.post_rx(0, 1, 20);
        assert!(r.wire.send(vec![0xee; 100]));
        r.dev.kick(RX);
        r.process();
        assert_eq!(used(&r.mem, &r.rxq, 0), (0, 0, 1));
        assert_eq!(r.dev.device.counters.dropped, 1);
        // A transmit chain with a descriptor index beyond the queue.
        set_desc(&mut r.mem, &r.txq, 0, 0x30000, 100, VIRTQ_DESC_F_NEXT, 99);
        post(&mut r.mem, &r.txq, 0);
        r.dev.bar_write(layout::NOTIFY + 4, 2, 1);
        r.process();
        assert_ne!(r.dev.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(r.wire.try_recv(), None);
    }
}
