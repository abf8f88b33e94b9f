//! A learning Ethernet switch for connecting virtual machines on one host, over UDP on the
//! loopback interface (so it works the same on Linux, macOS and Windows).
//!
//! Wire protocol: every UDP datagram between a machine and the switch carries exactly one
//! Ethernet frame ([`MIN_FRAME`]..=[`MAX_FRAME`] bytes, no FCS). An empty datagram is a
//! keep-alive: machines send one when they connect and every [`KEEPALIVE`], so the switch
//! knows them (and floods to them) before they transmit. UDP keeps frame boundaries, never
//! blocks a sender on a slow peer and loses frames under overload like a real switch does;
//! the guests' TCP recovers.
//!
//! The switch learns source MAC addresses per port (a port is a peer's UDP address), forwards
//! unicast frames to the learned port and floods broadcast, multicast and unknown unicast to
//! every other live port. A port silent for [`PORT_TIMEOUT`] is forgotten together with the
//! addresses learned on it.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::RecvTimeoutError;

use super::{MacAddr, NetPort, MAX_FRAME, MIN_FRAME};

/// Interval between keep-alive datagrams from a connected machine.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// A port that sent nothing (not even a keep-alive) for this long is dropped.
pub const PORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwarding counters of a switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Frames received from ports.
    pub frames_in: u64,
    /// Datagrams sent to ports (a flooded frame counts once per port).
    pub frames_out: u64,
    /// Datagrams of an invalid size, dropped.
    pub bad: u64,
}

/// The switch: a bound UDP socket plus the forwarding table.
#[derive(Debug)]
pub struct Switch {
    socket: UdpSocket,
    ports: HashMap<SocketAddr, Instant>,
    table: HashMap<MacAddr, SocketAddr>,
    /// Counters.
    pub stats: SwitchStats,
}

impl Switch {
    /// Bind the switch to `addr`. Only loopback addresses are accepted: frames from the socket
    /// go straight into guests, so the switch must not be reachable from other hosts.
    ///
    /// Errors: a non-loopback address (`InvalidInput`), or the bind error.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the switch listens on loopback only; {} is not a loopback address",
                    addr.ip()
                ),
            ));
        }
        let socket = UdpSocket::bind(addr)?;
        socket.set_read_timeout(Some(KEEPALIVE))?;
        Ok(Self {
            socket,
            ports: HashMap::new(),
            table: HashMap::new(),
            stats: SwitchStats::default(),
        })
    }

    /// The bound address (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Forward frames until `stop` is set (checked at least every [`KEEPALIVE`]).
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 65536];
        let mut last_expiry = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.handle(&buf[..n], from),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                // Windows reports an earlier send to a vanished peer as ConnectionReset on the
                // next receive; a dead peer is not the switch's problem.
                Err(e) => log::debug!(target: "devices::switch", "recv: {e}"),
            }
            if last_expiry.elapsed() >= KEEPALIVE {
                last_expiry = Instant::now();
                self.expire();
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let before = self.ports.len();
        self.ports
            .retain(|_, seen| now.duration_since(*seen) < PORT_TIMEOUT);
        if self.ports.len() != before {
            let ports = &self.ports;
            self.table.retain(|_, p| ports.contains_key(p));
            log::info!(target: "devices::switch", "{} port(s) timed out", before - self.ports.len());
        }
    }

    /// Handle one datagram from `from`.
    fn handle(&mut self, data: &[u8], from: SocketAddr) {
        if self.ports.insert(from, Instant::now()).is_none() {
            log::info!(target: "devices::switch", "port {from} connected");
        }
        if data.is_empty() {
            return;
        }
        if !(MIN_FRAME..=MAX_FRAME).contains(&data.len()) {
            self.stats.bad += 1;
            return;
        }
        self.stats.frames_in += 1;
        let dst: MacAddr = [data[0], data[1], data[2], data[3], data[4], data[5]];
        let src: MacAddr = [data[6], data[7], data[8], data[9], data[10], data[11]];
        if src[0] & 1 == 0 {
            self.table.insert(src, from);
        }
        let target = if dst[0] & 1 == 0 {
            self.table.get(&dst).copied()
        } else {
            None
        };
        match target {
            Some(p) if p == from => {}
            Some(p) => self.send(data, p),
            None => {
                let ports: Vec<SocketAddr> =
                    self.ports.keys().copied().filter(|&p| p != from).collect();
                for p in ports {
                    self.send(data, p);
                }
            }
        }
    }

    fn send(&mut self, data: &[u8], to: SocketAddr) {
        if self.socket.send_to(data, to).is_ok() {
            self.stats.frames_out += 1;
        }
    }
}

/// Connect a NIC to the switch at `addr`: returns the guest end of a [`NetPort`] whose frames
/// travel through two background threads (socket to NIC, NIC to socket plus keep-alives).
/// The threads end when the NIC's end is dropped.
///
/// Errors: a non-loopback `addr`, or socket creation / connect errors. A switch that is not
/// running is not an error (UDP has no connection); frames are lost until it starts.
pub fn connect(addr: SocketAddr) -> io::Result<NetPort> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "switch address must be a loopback address (got {})",
                addr.ip()
            ),
        ));
    }
    let local: SocketAddr = if addr.is_ipv4() {
        "127.0.0.1:0".parse().expect("literal")
    } else {
        "[::1]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    // Hello: the switch learns this port before the guest sends anything. A send error here
    // (nothing listening yet on some hosts) is not fatal.
    let _ = socket.send(&[]);
    let (guest, back) = NetPort::pair();
    let closed = Arc::new(AtomicBool::new(false));
    let rx_sock = socket.try_clone()?;
    let rx_back = back.clone();
    let rx_closed = closed.clone();
    std::thread::Builder::new()
        .name("rinx-switch-rx".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !rx_closed.load(Ordering::Relaxed) {
                match rx_sock.recv(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        if let Err(crossbeam::channel::TrySendError::Disconnected(_)) =
                            rx_back.try_send(buf[..n].to_vec())
                        {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
    std::thread::Builder::new()
        .name("rinx-switch-tx".into())
        .spawn(move || loop {
            match back.rx.recv_timeout(KEEPALIVE) {
                Ok(frame) => {
                    let _ = socket.send(&frame);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = socket.send(&[]);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    closed.store(true, Ordering::Relaxed);
                    break;
                }
            }
        })?;
    Ok(guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: MacAddr, src: MacAddr, tag: u8) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(std::iter::repeat(tag).take(46));
        f
    }

    fn recv(p: &NetPort) -> Option<Vec<u8>> {
        p.rx.recv_timeout(Duration::from_secs(3)).ok()
    }

    #[test]
    fn switch_floods_then_learns() {
        let mut sw = Switch::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sw.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            sw.run(&s2);
            sw.stats
        });
        let (a, b, c) = (
            connect(addr).unwrap(),
            connect(addr).unwrap(),
            connect(addr).unwrap(),
        );
        // Let the hellos arrive.
        std::thread::sleep(Duration::from_millis(300));
        let (ma, mb) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        // Broadcast from A reaches B and C.
        assert!(a.send(frame([0xff; 6], ma, 1)));
        assert_eq!(recv(&b).unwrap()[14], 1);
        assert_eq!(recv(&c).unwrap()[14], 1);
        // B answers A by unicast: the switch learned A, so only A gets it.
        assert!(b.send(frame(ma, mb, 2)));
        assert_eq!(recv(&a).unwrap()[14], 2);
        // A to B: learned too; C sees nothing of the unicast exchange.
        assert!(a.send(frame(mb, ma, 3)));
        assert_eq!(recv(&b).unwrap()[14], 3);
        assert!(c.rx.recv_timeout(Duration::from_millis(300)).is_err());
        stop.store(true, Ordering::Relaxed);
        let stats = t.join().unwrap();
        assert_eq!(stats.frames_in, 3);
        assert_eq!(stats.frames_out, 4);
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        assert!(Switch::bind("0.0.0.0:0".parse().unwrap()).is_err());
        assert!(connect("192.0.2.1:5000".parse().unwrap()).is_err());
    }
}
