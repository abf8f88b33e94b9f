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

    fn receive(&mut self, queue: &mut SplitQueue, mem: &mut dyn GuestMemory) -> Result<bool, QueueError> {
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

    fn transmit(&mut self, queue: &mut SplitQueue, mem: &mut dyn GuestMemory) -> Result<bool, QueueError> {
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
