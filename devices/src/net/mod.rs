//! Networking: NIC models (guest side) and host back-ends exchange Ethernet frames through a
//! [`NetPort`], a pair of channels, so a back-end can run on its own thread (host sockets,
//! a TCP/IP stack, a TAP device) while the NIC model runs on the vCPU thread.
//!
//! Frames are whole Ethernet II frames as they appear on the wire without preamble and FCS:
//! destination MAC, source MAC, EtherType, payload; 14 to [`MAX_FRAME`] bytes.

pub mod e1000;
pub mod nic;
pub mod switch;
pub mod tap;
pub mod user;
pub mod virtio_net;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};

/// Largest frame a back-end or NIC accepts (bytes): a 9000-byte jumbo payload plus header and
/// a VLAN tag, rounded up. Larger frames are dropped and counted, never truncated.
pub const MAX_FRAME: usize = 9216;
/// Smallest frame (bytes): an Ethernet II header.
pub const MIN_FRAME: usize = 14;
/// Frames buffered in each direction before the sender drops (like a full NIC ring).
pub const QUEUE_FRAMES: usize = 1024;

/// A 48-bit IEEE 802 MAC address.
pub type MacAddr = [u8; 6];

/// One end of a frame pipe. The NIC model holds the guest end: it sends the frames the guest
/// transmits into `tx` and polls `rx` for frames to deliver to the guest. The back-end holds
/// the other end with the directions swapped.
#[derive(Debug, Clone)]
pub struct NetPort {
    /// Frames leaving this end.
    pub tx: Sender<Vec<u8>>,
    /// Frames arriving at this end.
    pub rx: Receiver<Vec<u8>>,
    /// Arrival flag of the peer, raised after each frame this end sends (see
    /// [`NetPort::set_arrival_flag`]).
    peer_bell: Arc<OnceLock<Arc<AtomicBool>>>,
    /// This end's own arrival flag slot (shared with the peer's `peer_bell`).
    bell: Arc<OnceLock<Arc<AtomicBool>>>,
}

impl NetPort {
    /// Two connected ends: what one end sends, the other receives. Each direction holds at
    /// most [`QUEUE_FRAMES`] frames; [`NetPort::send`] drops when the peer is that far behind.
    pub fn pair() -> (NetPort, NetPort) {
        let (a_tx, b_rx) = bounded(QUEUE_FRAMES);
        let (b_tx, a_rx) = bounded(QUEUE_FRAMES);
        let (bell_a, bell_b) = (Arc::default(), Arc::default());
        (
            NetPort {
                tx: a_tx,
                rx: a_rx,
                peer_bell: Arc::clone(&bell_b),
                bell: Arc::clone(&bell_a),
            },
            NetPort {
                tx: b_tx,
                rx: b_rx,
                peer_bell: bell_a,
                bell: bell_b,
            },
        )
    }

    /// Have every frame the peer sends to this end (through [`NetPort::send`] or
    /// [`NetPort::try_send`]) raise `flag` once it is queued, so a consumer that polls (the
    /// vCPU loop) notices arrivals without waiting on the channel. Only the first flag set on
    /// a pair's end counts; later calls are ignored.
    pub fn set_arrival_flag(&self, flag: Arc<AtomicBool>) {
        let _ = self.bell.set(flag);
    }

    fn ring(&self) {
        if let Some(f) = self.peer_bell.get() {
            f.store(true, Ordering::Release);
        }
    }

    /// Queues one frame without blocking and without length checks (the caller checked), and
    /// raises the peer's arrival flag. Errors: the queue is full or the peer is gone.
    pub fn try_send(&self, frame: Vec<u8>) -> Result<(), TrySendError<Vec<u8>>> {
        self.tx.try_send(frame)?;
        self.ring();
        Ok(())
    }

    /// Sends one frame without blocking. Returns `false` (frame dropped) if it is shorter than
    /// [`MIN_FRAME`] or longer than [`MAX_FRAME`], the queue is full or the peer is gone; a
    /// real wire loses frames too, and the guest's protocols recover.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return false;
        }
        self.try_send(frame).is_ok()
    }

    /// The next arrived frame, if any, without blocking.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_the_pair_and_bad_lengths_are_dropped() {
        let (a, b) = NetPort::pair();
        assert!(a.send(vec![0xaa; 60]));
        assert!(!a.send(vec![0; 13]));
        assert!(!a.send(vec![0; MAX_FRAME + 1]));
        assert_eq!(b.try_recv(), Some(vec![0xaa; 60]));
        assert_eq!(b.try_recv(), None);
        assert!(b.send(vec![1; 14]));
        assert_eq!(a.try_recv(), Some(vec![1; 14]));
    }

    #[test]
    fn sending_raises_the_peers_arrival_flag() {
        let (a, b) = NetPort::pair();
        let flag = Arc::new(AtomicBool::new(false));
        b.set_arrival_flag(flag.clone());
        // b's own sends do not raise b's flag.
        assert!(b.send(vec![0; 60]));
        assert!(!flag.load(Ordering::Acquire));
        assert!(a.send(vec![0; 60]));
        assert!(flag.swap(false, Ordering::Acquire));
        assert!(a.try_send(vec![0; 60]).is_ok());
        assert!(flag.load(Ordering::Acquire));
        // A dropped frame does not.
        flag.store(false, Ordering::Release);
        assert!(!a.send(vec![0; 10]));
        assert!(!flag.load(Ordering::Acquire));
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (a, _b) = NetPort::pair();
        for _ in 0..QUEUE_FRAMES {
            assert!(a.send(vec![0; 64]));
        }
        assert!(!a.send(vec![0; 64]));
    }
}
