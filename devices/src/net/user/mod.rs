//! User-mode networking (NAT), like QEMU's `-netdev user`: the guest sees a private network
//! with a gateway, a DHCP server and a DNS forwarder; its TCP and UDP flows leave through
//! ordinary host sockets, and host loopback ports can be forwarded into the guest.
//!
//! [`spawn`] starts the back-end: it returns the guest end of a [`NetPort`] for a NIC model
//! and a [`UserNetHandle`] that owns the NAT thread. The TCP/IP work on the guest side (ARP,
//! ICMP echo, TCP state machines) is done by `smoltcp`; DHCP replies and UDP datagrams are
//! built with smoltcp's wire types; host traffic uses ordinary `mio` sockets, so it runs
//! unprivileged on Linux, macOS and Windows. Design, limits and addresses: docs/network.md,
//! section "User-mode networking". Besides the unit tests (a smoltcp test guest on loopback),
//! scripts/usernet-tap-check.sh runs busybox udhcpc and the host kernel's TCP stack against it.

mod dhcp;
mod nat;
#[cfg(test)]
mod tests;

pub use nat::{
    Nat, NatStats, NatStatsSnapshot, CONNECT_TIMEOUT, DNS_IDLE, FRAME_MTU, GATEWAY_MAC,
    MAX_TCP_FLOWS, MAX_UDP_FLOWS, MAX_UDP_FWD_PEERS, OUT_QUEUE, OUT_QUEUE_HARD, TCP_BUF, UDP_IDLE,
};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{bounded, RecvTimeoutError, TryRecvError};

use super::{NetPort, QUEUE_FRAMES};

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One `hostfwd=PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` rule: connections to `host`
/// on the host are relayed to `guest_port` on the guest (at `guest_addr`, the DHCP address by
/// default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostForward {
    /// TCP or UDP.
    pub proto: Proto,
    /// Host address and port to listen on (127.0.0.1 when the rule leaves the address empty).
    pub host: SocketAddr,
    /// Guest address; `None` means the address the DHCP server hands out.
    pub guest_addr: Option<Ipv4Addr>,
    /// Guest port.
    pub guest_port: u16,
}

/// The private network the guest sees (defaults as in QEMU's user networking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// Network address; the prefix is /24.
    pub network: Ipv4Addr,
    /// Gateway / host alias: TCP and UDP to this address reach host loopback.
    pub gateway: Ipv4Addr,
    /// DNS forwarder address (queries go to the host's resolver).
    pub dns: Ipv4Addr,
    /// Address the DHCP server hands to the guest.
    pub guest: Ipv4Addr,
    /// Inbound port forwards.
    pub host_forwards: Vec<HostForward>,
    /// Where queries to `dns`:53 are forwarded; `None` means the host's resolver (see
    /// [`host_resolver`]). Tests point this at a fake resolver on loopback.
    pub dns_server: Option<SocketAddr>,
    /// Isolate the guest (QEMU's `restrict=on`): no outbound TCP (answered with RST), no
    /// outbound UDP and no DNS forwarding; DHCP, ARP, ICMP echo to the gateway and the
    /// `host_forwards` still work.
    pub restrict: bool,
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            network: Ipv4Addr::new(10, 0, 2, 0),
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            guest: Ipv4Addr::new(10, 0, 2, 15),
            host_forwards: Vec::new(),
            dns_server: None,
            restrict: false,
        }
    }
}

impl UserConfig {
    /// Checks that the gateway, DNS and guest addresses are distinct host addresses inside
    /// `network`/24 and that every forward's guest address is too.
    pub fn validate(&self) -> Result<(), UserNetError> {
        let net = u32::from(self.network) & 0xffff_ff00;
        let inside = |a: Ipv4Addr| {
            let v = u32::from(a);
            v & 0xffff_ff00 == net && !matches!(v & 0xff, 0 | 255)
        };
        for (name, a) in [
            ("gateway", self.gateway),
            ("dns", self.dns),
            ("guest", self.guest),
        ] {
            if !inside(a) {
                return Err(UserNetError::Config(format!(
                    "{name} address {a} is not a host address in {}/24",
                    self.network
                )));
            }
        }
        if self.gateway == self.dns || self.gateway == self.guest || self.dns == self.guest {
            return Err(UserNetError::Config(
                "gateway, dns and guest addresses must differ".into(),
            ));
        }
        for f in &self.host_forwards {
            let g = f.guest_addr.unwrap_or(self.guest);
            if !inside(g) || g == self.gateway || g == self.dns {
                return Err(UserNetError::Config(format!(
                    "hostfwd guest address {g} is not a guest address in {}/24",
                    self.network
                )));
            }
        }
        Ok(())
    }
}

/// Errors starting the user-mode network back-end.
#[derive(Debug, thiserror::Error)]
pub enum UserNetError {
    /// The addresses in [`UserConfig`] are inconsistent.
    #[error("user network config: {0}")]
    Config(String),
    /// A host socket or the event loop could not be set up (e.g. a hostfwd port in use).
    #[error("user network: {what}: {source}")]
    Io {
        /// What was being set up.
        what: String,
        /// The host error.
        source: std::io::Error,
    },
}

/// The host resolver DNS queries are forwarded to when [`UserConfig::dns_server`] is `None`:
/// the first `nameserver` line of /etc/resolv.conf on Unix hosts (port 53). Elsewhere, or when
/// that file has no usable line, the documented fallback is Google Public DNS, 8.8.8.8:53;
/// set `dns_server` to override it.
pub fn host_resolver() -> SocketAddr {
    #[cfg(unix)]
    if let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") {
        if let Some(a) = parse_resolv_conf(&text) {
            return a;
        }
    }
    SocketAddr::from(([8, 8, 8, 8], 53))
}

/// First usable `nameserver` of a resolv.conf(5) text, port 53. IPv6 link-local addresses with
/// a `%zone` suffix are skipped (they need a scope the forwarder does not track).
pub fn parse_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .find_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// Owns the NAT thread started by [`spawn`]. Dropping it stops the thread (within ~100 ms)
/// and closes every host socket; the guest end of the [`NetPort`] then stops receiving.
#[derive(Debug)]
pub struct UserNetHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<NatStats>,
    forward_addrs: Vec<SocketAddr>,
}

impl UserNetHandle {
    /// The host addresses the `host_forwards` listen on, in config order (with the actual
    /// port when a rule asked for port 0).
    pub fn forward_addrs(&self) -> &[SocketAddr] {
        &self.forward_addrs
    }

    /// Counters of the NAT (frames, drops, flows).
    pub fn stats(&self) -> NatStatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for UserNetHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long the pump thread blocks on the guest queue before checking for shutdown.
const PUMP_TICK: Duration = Duration::from_millis(100);
/// Guest frames the NAT thread handles per loop iteration before servicing host sockets.
const FRAMES_PER_ROUND: usize = 256;

/// Starts user-mode networking for `cfg`: binds the host forwards, then runs the NAT on a
/// thread named `usernet` (plus a small `usernet-rx` thread that wakes it when the guest
/// sends). Returns the guest end of the frame pipe, for the NIC model, and the handle that
/// keeps the NAT alive.
///
/// Errors: [`UserNetError::Config`] for inconsistent addresses, [`UserNetError::Io`] when the
/// event loop cannot be created or a forward's host address cannot be bound.
pub fn spawn(cfg: UserConfig) -> Result<(NetPort, UserNetHandle), UserNetError> {
    let mut nat = Nat::new(cfg)?;
    let (guest, back) = NetPort::pair();
    let waker = nat.waker()?;
    let stats = nat.stats();
    let forward_addrs = nat.forward_addrs().to_vec();
    let stop = Arc::new(AtomicBool::new(false));

    // mio cannot wait on a crossbeam channel, so a pump thread moves guest frames into an
    // internal queue and wakes the event loop.
    let (in_tx, in_rx) = bounded::<Vec<u8>>(QUEUE_FRAMES);
    let pump = {
        let (stop, waker, rx) = (stop.clone(), waker.clone(), back.rx.clone());
        std::thread::Builder::new()
            .name("usernet-rx".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match rx.recv_timeout(PUMP_TICK) {
                        Ok(f) => {
                            if in_tx.send(f).is_err() {
                                break;
                            }
                            // Always wake: a conditional wake races with the loop draining
                            // the queue just before it sleeps.
                            let _ = waker.wake();
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = waker.wake();
            })
            .map_err(|e| UserNetError::Io {
                what: "spawning the usernet-rx thread".into(),
                source: e,
            })?
    };
    let main = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("usernet".into())
            .spawn(move || {
                let tx = back;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut more = false;
                    let mut guest_gone = false;
                    for i in 0..=FRAMES_PER_ROUND {
                        if i == FRAMES_PER_ROUND {
                            more = true;
                            break;
                        }
                        match in_rx.try_recv() {
                            Ok(f) => nat.handle_guest_frame(&f),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                guest_gone = true;
                                break;
                            }
                        }
                    }
                    nat.service();
                    // Hand frames to the NIC only while its queue has room; what stays
                    // queued holds smoltcp back (TCP backpressure instead of drops).
                    while !tx.tx.is_full() {
                        match nat.pop_outgoing() {
                            Some(f) => {
                                if tx.try_send(f).is_err() {
                                    break;
                                }
                            }
                            None => break,
                        }
                    }
                    if guest_gone && in_rx.is_empty() {
                        break;
                    }
                    let timeout = if more || !in_rx.is_empty() {
                        Duration::ZERO
                    } else if nat.has_outgoing() {
                        Duration::from_millis(1)
                    } else {
                        nat.poll_delay().min(Duration::from_secs(1))
                    };
                    nat.wait(timeout);
                }
            })
            .map_err(|e| UserNetError::Io {
                what: "spawning the usernet thread".into(),
                source: e,
            })?
    };
    Ok((
        guest,
        UserNetHandle {
            stop,
            waker,
            threads: vec![main, pump],
            stats,
            forward_addrs,
        },
    ))
}
