//! The NAT engine: one [`Nat`] owns the smoltcp interface that plays the gateway (10.0.2.2)
//! and DNS (10.0.2.3) hosts, the table of flows and their host sockets, and a `mio` poller.
//! It has no threads of its own: [`super::spawn`] drives it from the `usernet` thread, and
//! the fuzz target drives it directly.
//!
//! Frame path, guest to host: [`Nat::handle_guest_frame`] parses every frame with smoltcp's
//! checked wire types (anything malformed is dropped and counted), answers DHCP itself,
//! relays UDP through per-flow host sockets, and passes ARP, ICMP and TCP to smoltcp. A TCP
//! SYN for a new flow is held back while a non-blocking host connect runs; on success a
//! listening smoltcp socket is created for exactly that destination and the SYN replayed into
//! it, on failure the SYN is replayed with no listener and smoltcp answers RST (RFC 793
//! §3.4), which the guest reports as "connection refused".

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress,
    IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use super::{dhcp, host_resolver, Proto, UserConfig, UserNetError};
use crate::net::MAX_FRAME;

/// MAC address of the gateway/DNS side (the host), as in QEMU's user networking.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
/// Largest frame the NAT sends or accepts for TCP/UDP (bytes): a 1500-byte IP MTU plus the
/// Ethernet header. UDP replies that do not fit are dropped (the NAT does not fragment).
pub const FRAME_MTU: usize = 1514;
/// Most TCP flows at once (outbound, connecting and inbound forwards together); SYNs beyond
/// it are refused with RST and forwarded host connections closed.
pub const MAX_TCP_FLOWS: usize = 256;
/// Receive and send buffer of each NAT-side TCP socket (bytes each way). With
/// [`MAX_TCP_FLOWS`] this caps TCP buffering at 64 MiB; the receive buffer is the window the
/// guest sees, so a slow host peer throttles the guest instead of growing a queue.
pub const TCP_BUF: usize = 128 * 1024;
/// Most outbound UDP flows (guest address/port, destination address/port); the least
/// recently used one is closed to make room.
pub const MAX_UDP_FLOWS: usize = 256;
/// Most host peers per UDP forward table (all UDP host forwards together).
pub const MAX_UDP_FWD_PEERS: usize = 256;
/// A UDP flow with no datagram either way for this long is closed.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// DNS flows close sooner: one query, one answer.
pub const DNS_IDLE: Duration = Duration::from_secs(10);
/// A host connect that has not completed by then is answered with RST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames smoltcp may queue toward the guest before it has to wait (backpressure).
pub const OUT_QUEUE: usize = 512;
/// Hard cap of the outgoing queue, including replies and UDP; beyond it frames are dropped.
pub const OUT_QUEUE_HARD: usize = 2048;
/// How long a flow in TIME-WAIT is kept after both sides closed.
pub const TIME_WAIT_LINGER: Duration = Duration::from_millis(200);
/// Guest frames queued for smoltcp between two [`Nat::service`] calls; more are dropped.
pub const IN_QUEUE: usize = 1024;
/// Extra smoltcp egress passes per service round (each sends at most one segment per socket).
const EGRESS_PASSES: usize = 64;
/// Guest neighbours (IPv4 to MAC) remembered for UDP replies.
const MAX_NEIGHBORS: usize = 256;
/// First ephemeral port the gateway uses for connections into the guest (IANA dynamic range).
const EPHEMERAL_FIRST: u16 = 49152;

/// The poller token the cross-thread waker uses.
const WAKER: Token = Token(0);

/// Counters of the NAT, updated by its thread and read by anyone (relaxed atomics).
#[derive(Debug, Default)]
pub struct NatStats {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    tcp_flows: AtomicU64,
    tcp_refused: AtomicU64,
    udp_flows: AtomicU64,
    dhcp_replies: AtomicU64,
}

/// A copy of [`NatStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatStatsSnapshot {
    /// Frames received from the guest.
    pub frames_in: u64,
    /// Frames queued toward the guest.
    pub frames_out: u64,
    /// Guest frames dropped because they did not parse (bad length, header or checksum).
    pub malformed: u64,
    /// Well-formed frames or datagrams dropped on purpose (not for us, over a limit, no route).
    pub dropped: u64,
    /// TCP flows opened (both directions).
    pub tcp_flows: u64,
    /// Guest connections answered with RST because the host connect failed or a cap was hit.
    pub tcp_refused: u64,
    /// UDP flows opened.
    pub udp_flows: u64,
    /// DHCP replies sent.
    pub dhcp_replies: u64,
}

impl NatStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> NatStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatStatsSnapshot {
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            malformed: g(&self.malformed),
            dropped: g(&self.dropped),
            tcp_flows: g(&self.tcp_flows),
            tcp_refused: g(&self.tcp_refused),
            udp_flows: g(&self.udp_flows),
            dhcp_replies: g(&self.dhcp_replies),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// (guest address and port, remote address and port as the guest sees it).
type FlowKey = (SocketAddrV4, SocketAddrV4);

#[derive(Debug, Clone, Copy)]
enum Owner {
    Tcp(SocketHandle),
    Pending(FlowKey),
    Udp(FlowKey),
    FwdTcp(usize),
    FwdUdp(usize),
}

#[derive(Debug)]
struct TcpFlow {
    stream: TcpStream,
    token: Token,
    /// Host socket may have data / room (mio is edge-triggered: set on an event, cleared on
    /// `WouldBlock`).
    readable: bool,
    writable: bool,
    /// The host peer closed its sending side; the guest got (or will get) our FIN.
    host_eof: bool,
    /// The guest's FIN has been passed on as a host write shutdown.
    host_wr_shut: bool,
    /// Outbound flows: their key, for duplicate-SYN detection.
    key: Option<FlowKey>,
    /// Inbound (hostfwd) flows: the gateway port used toward the guest.
    local_port: Option<u16>,
    /// When the socket entered TIME-WAIT (it lingers [`TIME_WAIT_LINGER`] so the ACK of the
    /// guest's FIN, which smoltcp may delay, still goes out).
    time_wait_since: Option<StdInstant>,
}

#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    token: Token,
    syn: Vec<u8>,
    deadline: StdInstant,
}

#[derive(Debug)]
struct UdpFlow {
    sock: UdpSocket,
    token: Token,
    guest_mac: EthernetAddress,
    last: StdInstant,
    idle: Duration,
}

#[derive(Debug)]
struct FwdUdp {
    sock: UdpSocket,
    guest: SocketAddrV4,
}

#[derive(Debug)]
struct FwdUdpPeer {
    fwd: usize,
    peer: SocketAddr,
    last: StdInstant,
}

/// The smoltcp device: frames queued for smoltcp to read, and frames it wrote for the guest.
#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxTok(Vec<u8>);
struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxTok, TxTok<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxTok(f), TxTok(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
        // Refusing a token makes smoltcp keep segments in its socket buffers: backpressure
        // from a slow guest reaches the TCP windows instead of this queue.
        (self.tx.len() < OUT_QUEUE).then_some(TxTok(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = FRAME_MTU;
        c
    }
}

/// The user-mode NAT: see the module documentation. Single-threaded; every method returns
/// promptly except [`Nat::wait`].
pub struct Nat {
    cfg: UserConfig,
    resolver: SocketAddr,
    mac: EthernetAddress,
    epoch: StdInstant,
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    poll: Poll,
    events: Events,
    next_token: usize,
    owners: HashMap<Token, Owner>,
    tcp: HashMap<SocketHandle, TcpFlow>,
    tcp_keys: HashMap<FlowKey, SocketHandle>,
    pending: HashMap<FlowKey, Pending>,
    udp: HashMap<FlowKey, UdpFlow>,
    fwd_tcp: Vec<(TcpListener, SocketAddrV4)>,
    fwd_udp: Vec<FwdUdp>,
    fwd_peers: HashMap<u16, FwdUdpPeer>,
    fwd_peer_ports: HashMap<(usize, SocketAddr), u16>,
    used_ports: HashSet<u16>,
    next_port: u16,
    forward_addrs: Vec<SocketAddr>,
    neighbors: HashMap<Ipv4Addr, EthernetAddress>,
    stats: Arc<NatStats>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nat")
            .field("cfg", &self.cfg)
            .field("tcp_flows", &self.tcp.len())
            .field("pending", &self.pending.len())
            .field("udp_flows", &self.udp.len())
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> UserNetError {
    let what = what.into();
    move |source| UserNetError::Io { what, source }
}

impl Nat {
    /// Builds the NAT for `cfg` and binds every host forward.
    ///
    /// Errors: [`UserNetError::Config`] for inconsistent addresses, [`UserNetError::Io`] if the
    /// poller cannot be created or a forward's host address cannot be bound.
    pub fn new(cfg: UserConfig) -> Result<Nat, UserNetError> {
        cfg.validate()?;
        let poll = Poll::new().map_err(io_err("creating the event poller"))?;
        let mac = EthernetAddress(GATEWAY_MAC);
        let epoch = StdInstant::now();
        let mut dev = Queues::default();
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        // Initial sequence numbers must not be predictable (RFC 6528).
        config.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
            ^ (&dev as *const Queues as u64);
        let mut iface = Interface::new(config, &mut dev, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.gateway), 24));
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.dns), 24));
        });
        // "Any IP" plus a default route through our own address: smoltcp then accepts TCP
        // segments for every destination, so one listening socket per flow can impersonate
        // any remote host.
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        iface.set_any_ip(true);

        let resolver = cfg.dns_server.unwrap_or_else(host_resolver);
        let mut nat = Nat {
            resolver,
            mac,
            epoch,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            poll,
            events: Events::with_capacity(256),
            next_token: 1,
            owners: HashMap::new(),
            tcp: HashMap::new(),
            tcp_keys: HashMap::new(),
            pending: HashMap::new(),
            udp: HashMap::new(),
            fwd_tcp: Vec::new(),
            fwd_udp: Vec::new(),
            fwd_peers: HashMap::new(),
            fwd_peer_ports: HashMap::new(),
            used_ports: HashSet::new(),
            next_port: EPHEMERAL_FIRST,
            forward_addrs: Vec::new(),
            neighbors: HashMap::new(),
            stats: Arc::new(NatStats::default()),
            buf: vec![0; 65536],
            cfg,
        };
        for f in nat.cfg.host_forwards.clone() {
            let guest = SocketAddrV4::new(f.guest_addr.unwrap_or(nat.cfg.guest), f.guest_port);
            let what = format!("hostfwd {:?} {} -> {}", f.proto, f.host, guest);
            let token = nat.token();
            match f.proto {
                Proto::Tcp => {
                    let mut l = TcpListener::bind(f.host).map_err(io_err(what.clone()))?;
                    nat.poll
                        .registry()
                        .register(&mut l, token, Interest::READABLE)
                        .map_err(io_err(what.clone()))?;
                    nat.forward_addrs
                        .push(l.local_addr().map_err(io_err(what))?);
                    nat.owners.insert(token, Owner::FwdTcp(nat.fwd_tcp.len()));
                    nat.fwd_tcp.push((l, guest));
                }
                Proto::Udp => {
                    let mut s = UdpSocket::bind(f.host).map_err(io_err(what.clone()))?;
                    nat.poll
                        .registry()
                        .register(&mut s, token, Interest::READABLE)
                        .map_err(io_err(what.clone()))?;
                    nat.forward_addrs
                        .push(s.local_addr().map_err(io_err(what))?);
                    nat.owners.insert(token, Owner::FwdUdp(nat.fwd_udp.len()));
                    nat.fwd_udp.push(FwdUdp { sock: s, guest });
                }
            }
        }
        Ok(nat)
    }

    /// A waker that interrupts [`Nat::wait`] from another thread. Call at most once: mio allows
    /// one waker per poller.
    pub fn waker(&self) -> Result<Arc<Waker>, UserNetError> {
        Waker::new(self.poll.registry(), WAKER)
            .map(Arc::new)
            .map_err(io_err("creating the poller waker"))
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<NatStats> {
        self.stats.clone()
    }

    /// Host addresses the forwards are bound to, in config order.
    pub fn forward_addrs(&self) -> &[SocketAddr] {
        &self.forward_addrs
    }

    /// Next frame for the guest, if any.
    pub fn pop_outgoing(&mut self) -> Option<Vec<u8>> {
        let f = self.dev.tx.pop_front()?;
        bump(&self.stats.frames_out);
        Some(f)
    }

    /// Whether frames for the guest are waiting.
    pub fn has_outgoing(&self) -> bool {
        !self.dev.tx.is_empty()
    }

    /// How long the NAT can sleep before smoltcp needs a timer serviced (retransmissions,
    /// delayed ACKs); at most one second so idle flows and connects time out.
    pub fn poll_delay(&mut self) -> Duration {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    fn alloc_port(&mut self) -> Option<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let p = self.next_port;
            self.next_port = if p == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            if self.used_ports.insert(p) {
                return Some(p);
            }
        }
        None
    }

    /// Queues a guest frame for smoltcp (processed at the next [`Nat::service`]).
    fn queue_for_stack(&mut self, frame: &[u8]) {
        if self.dev.rx.len() < IN_QUEUE {
            self.dev.rx.push_back(frame.to_vec());
        } else {
            bump(&self.stats.dropped);
        }
    }

    fn push_out(&mut self, frame: Vec<u8>) {
        if self.dev.tx.len() < OUT_QUEUE_HARD {
            self.dev.tx.push_back(frame);
        } else {
            bump(&self.stats.dropped);
        }
    }

    fn learn(&mut self, ip: Ipv4Addr, mac: EthernetAddress) {
        if !mac.is_unicast() || !self.in_subnet(ip) {
            return;
        }
        if self.neighbors.len() >= MAX_NEIGHBORS && !self.neighbors.contains_key(&ip) {
            self.neighbors.clear();
        }
        self.neighbors.insert(ip, mac);
    }

    fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & 0xffff_ff00 == u32::from(self.cfg.network) & 0xffff_ff00
    }

    fn is_ours(&self, ip: Ipv4Addr) -> bool {
        ip == self.cfg.gateway || ip == self.cfg.dns
    }

    /// Where a guest flow to `dst` goes on the host: the gateway means host loopback (like
    /// QEMU), other addresses of the private network and non-unicast addresses go nowhere.
    fn host_target(&self, dst: SocketAddrV4) -> Option<SocketAddr> {
        let ip = *dst.ip();
        if self.cfg.restrict {
            return None;
        }
        if ip == self.cfg.gateway {
            return Some(SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port())));
        }
        if ip == self.cfg.dns {
            return (dst.port() == 53).then_some(self.resolver);
        }
        if self.in_subnet(ip)
            || ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_broadcast()
            || ip.is_multicast()
            || ip.is_link_local()
            || dst.port() == 0
        {
            return None;
        }
        Some(SocketAddr::V4(dst))
    }

    /// Handles one frame the guest transmitted. Never panics on any input; frames that do not
    /// parse are counted in [`NatStatsSnapshot::malformed`].
    pub fn handle_guest_frame(&mut self, frame: &[u8]) {
        bump(&self.stats.frames_in);
        if frame.len() > MAX_FRAME {
            bump(&self.stats.malformed);
            return;
        }
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            bump(&self.stats.malformed);
            return;
        };
        let dst = eth.dst_addr();
        if dst != self.mac && !dst.is_broadcast() && !dst.is_multicast() {
            bump(&self.stats.dropped);
            return;
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(repr) =
                    ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
                else {
                    bump(&self.stats.malformed);
                    return;
                };
                let ArpRepr::EthernetIpv4 {
                    source_hardware_addr,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                } = repr
                else {
                    bump(&self.stats.dropped);
                    return;
                };
                self.learn(source_protocol_addr, source_hardware_addr);
                // smoltcp in any-IP mode would answer ARP for every address, including the
                // guest's own duplicate-address probes; only our two addresses are answered.
                if self.is_ours(target_protocol_addr) {
                    self.queue_for_stack(frame);
                } else {
                    bump(&self.stats.dropped);
                }
            }
            EthernetProtocol::Ipv4 => self.handle_ipv4(frame, eth.src_addr(), eth.payload()),
            _ => bump(&self.stats.dropped),
        }
    }

    fn handle_ipv4(&mut self, frame: &[u8], src_mac: EthernetAddress, payload: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            bump(&self.stats.malformed);
            return;
        };
        if ip.version() != 4 || !ip.verify_checksum() {
            bump(&self.stats.malformed);
            return;
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            // No reassembly: guests use path MTU 1500 and do not fragment TCP or DNS.
            bump(&self.stats.dropped);
            return;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if !src.is_unspecified() {
            self.learn(src, src_mac);
        }
        match ip.next_header() {
            IpProtocol::Udp => self.handle_udp(src_mac, src, dst, ip.payload()),
            IpProtocol::Tcp => self.handle_tcp(frame, src, dst, ip.payload()),
            // Echo to our own addresses is answered by smoltcp; other ICMP (pings to the
            // outside need privileges on most hosts) is dropped.
            IpProtocol::Icmp if self.is_ours(dst) => self.queue_for_stack(frame),
            _ => bump(&self.stats.dropped),
        }
    }

    fn handle_tcp(&mut self, frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) {
        let Ok(tcp) = TcpPacket::new_checked(seg) else {
            bump(&self.stats.malformed);
            return;
        };
        if !tcp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
            bump(&self.stats.malformed);
            return;
        }
        if !self.in_subnet(src) || dst.is_broadcast() || dst.is_multicast() {
            bump(&self.stats.dropped);
            return;
        }
        let key = (
            SocketAddrV4::new(src, tcp.src_port()),
            SocketAddrV4::new(dst, tcp.dst_port()),
        );
        let new_syn = tcp.syn() && !tcp.ack() && !tcp.rst();
        if !new_syn || self.tcp_keys.contains_key(&key) {
            self.queue_for_stack(frame);
            return;
        }
        if self.pending.contains_key(&key) {
            // Retransmitted SYN while the host connect is still running.
            return;
        }
        let target = self.host_target(key.1);
        let full = self.tcp.len() + self.pending.len() >= MAX_TCP_FLOWS;
        let stream = match target {
            Some(t) if !full => TcpStream::connect(t).ok(),
            _ => None,
        };
        let Some(mut stream) = stream else {
            // No listener exists for this segment, so smoltcp answers RST.
            bump(&self.stats.tcp_refused);
            self.queue_for_stack(frame);
            return;
        };
        let token = self.token();
        if self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            bump(&self.stats.tcp_refused);
            self.queue_for_stack(frame);
            return;
        }
        self.owners.insert(token, Owner::Pending(key));
        self.pending.insert(
            key,
            Pending {
                stream,
                token,
                syn: frame.to_vec(),
                deadline: StdInstant::now() + CONNECT_TIMEOUT,
            },
        );
    }

    fn handle_udp(&mut self, src_mac: EthernetAddress, src: Ipv4Addr, dst: Ipv4Addr, d: &[u8]) {
        let Ok(udp) = UdpPacket::new_checked(d) else {
            bump(&self.stats.malformed);
            return;
        };
        if !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
            bump(&self.stats.malformed);
            return;
        }
        let (sport, dport) = (udp.src_port(), udp.dst_port());
        let payload = udp.payload();
        if dport == dhcp::SERVER_PORT && sport == dhcp::CLIENT_PORT {
            if dst.is_broadcast() || self.is_ours(dst) {
                self.handle_dhcp(payload);
            } else {
                bump(&self.stats.dropped);
            }
            return;
        }
        if !self.in_subnet(src) || !src_mac.is_unicast() {
            bump(&self.stats.dropped);
            return;
        }
        let key = (SocketAddrV4::new(src, sport), SocketAddrV4::new(dst, dport));
        // A reply from the guest to a host peer of a UDP forward.
        if dst == self.cfg.gateway {
            if let Some(p) = self.fwd_peers.get_mut(&dport) {
                if let Some(f) = self.fwd_udp.get(p.fwd) {
                    if f.guest == key.0 {
                        p.last = StdInstant::now();
                        if f.sock.send_to(payload, p.peer).is_err() {
                            bump(&self.stats.dropped);
                        }
                        return;
                    }
                }
            }
        }
        let now = StdInstant::now();
        if let Some(flow) = self.udp.get_mut(&key) {
            flow.last = now;
            flow.guest_mac = src_mac;
            if flow.sock.send(payload).is_err() {
                bump(&self.stats.dropped);
            }
            return;
        }
        let Some(target) = self.host_target(key.1) else {
            bump(&self.stats.dropped);
            return;
        };
        if self.udp.len() >= MAX_UDP_FLOWS {
            if let Some(oldest) = self.udp.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                self.remove_udp(oldest);
            }
        }
        let bind: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let token = self.token();
        let sock = UdpSocket::bind(bind).and_then(|mut s| {
            s.connect(target)?;
            self.poll
                .registry()
                .register(&mut s, token, Interest::READABLE)?;
            Ok(s)
        });
        let Ok(sock) = sock else {
            bump(&self.stats.dropped);
            return;
        };
        if sock.send(payload).is_err() {
            bump(&self.stats.dropped);
        }
        bump(&self.stats.udp_flows);
        let idle = if dst == self.cfg.dns {
            DNS_IDLE
        } else {
            UDP_IDLE
        };
        self.owners.insert(token, Owner::Udp(key));
        self.udp.insert(
            key,
            UdpFlow {
                sock,
                token,
                guest_mac: src_mac,
                last: now,
                idle,
            },
        );
    }

    fn handle_dhcp(&mut self, payload: &[u8]) {
        let Some(reply) = dhcp::handle(&self.cfg, payload) else {
            bump(&self.stats.dropped);
            return;
        };
        if let Some((ip, mac)) = reply.bound {
            self.learn(ip, mac);
        }
        let src = SocketAddrV4::new(self.cfg.gateway, dhcp::SERVER_PORT);
        let dst = SocketAddrV4::new(reply.dst_ip, dhcp::CLIENT_PORT);
        if let Some(f) = udp_frame(self.mac, reply.dst_mac, src, dst, &reply.payload) {
            bump(&self.stats.dhcp_replies);
            self.push_out(f);
        }
    }

    fn remove_udp(&mut self, key: FlowKey) {
        if let Some(mut f) = self.udp.remove(&key) {
            let _ = self.poll.registry().deregister(&mut f.sock);
            self.owners.remove(&f.token);
        }
    }

    fn remove_tcp(&mut self, h: SocketHandle) {
        if let Some(mut f) = self.tcp.remove(&h) {
            let _ = self.poll.registry().deregister(&mut f.stream);
            self.owners.remove(&f.token);
            if let Some(k) = f.key {
                self.tcp_keys.remove(&k);
            }
            if let Some(p) = f.local_port {
                self.used_ports.remove(&p);
            }
        }
        self.sockets.remove(h);
    }

    fn new_tcp_socket() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
        );
        // The host side already coalesces; a relay should not add Nagle latency of its own.
        // The default delayed ACK (at most 10 ms, immediate after two full segments) stays:
        // every frame saved is an interrupt the emulated guest does not take.
        s.set_nagle_enabled(false);
        s
    }

    /// The host connect for `key` finished (or failed): replay the guest's SYN into a
    /// listening socket, or with no listener so that smoltcp answers RST.
    fn finish_connect(&mut self, key: FlowKey, timed_out: bool) {
        let Some(p) = self.pending.get(&key) else {
            return;
        };
        let ok = !timed_out
            && match p.stream.take_error() {
                Ok(None) => match p.stream.peer_addr() {
                    Ok(_) => true,
                    // Not finished yet: wait for the next event (mio's documented protocol).
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(_) => false,
                },
                _ => false,
            };
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        self.owners.remove(&p.token);
        let now = self.now();
        if !ok {
            let mut stream = p.stream;
            let _ = self.poll.registry().deregister(&mut stream);
            bump(&self.stats.tcp_refused);
            self.dev.rx.push_back(p.syn);
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            return;
        }
        let mut sock = Self::new_tcp_socket();
        if sock
            .listen((IpAddress::Ipv4(*key.1.ip()), key.1.port()))
            .is_err()
        {
            bump(&self.stats.tcp_refused);
            return;
        }
        let h = self.sockets.add(sock);
        self.dev.rx.push_back(p.syn);
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        let state = self.sockets.get::<tcp::Socket>(h).state();
        if state == tcp::State::Listen {
            // The SYN was not taken (cannot happen for a checksummed SYN; be safe).
            self.sockets.remove(h);
            bump(&self.stats.tcp_refused);
            return;
        }
        let _ = p.stream.set_nodelay(true);
        bump(&self.stats.tcp_flows);
        self.owners.insert(p.token, Owner::Tcp(h));
        self.tcp_keys.insert(key, h);
        self.tcp.insert(
            h,
            TcpFlow {
                stream: p.stream,
                token: p.token,
                readable: true,
                writable: true,
                host_eof: false,
                host_wr_shut: false,
                key: Some(key),
                local_port: None,
                time_wait_since: None,
            },
        );
    }

    fn accept_forward(&mut self, i: usize) {
        loop {
            let Some((l, guest)) = self.fwd_tcp.get(i) else {
                return;
            };
            let guest = *guest;
            let (mut stream, _) = match l.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.tcp.len() + self.pending.len() >= MAX_TCP_FLOWS {
                bump(&self.stats.dropped);
                continue;
            }
            let Some(port) = self.alloc_port() else {
                bump(&self.stats.dropped);
                continue;
            };
            let mut sock = Self::new_tcp_socket();
            let remote = (IpAddress::Ipv4(*guest.ip()), guest.port());
            let local = (IpAddress::Ipv4(self.cfg.gateway), port);
            let token = self.token();
            if sock.connect(self.iface.context(), remote, local).is_err()
                || self
                    .poll
                    .registry()
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
            {
                self.used_ports.remove(&port);
                bump(&self.stats.dropped);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let h = self.sockets.add(sock);
            bump(&self.stats.tcp_flows);
            self.owners.insert(token, Owner::Tcp(h));
            self.tcp.insert(
                h,
                TcpFlow {
                    stream,
                    token,
                    readable: true,
                    writable: true,
                    host_eof: false,
                    host_wr_shut: false,
                    key: None,
                    local_port: Some(port),
                    time_wait_since: None,
                },
            );
        }
    }

    fn read_forward_udp(&mut self, i: usize) {
        loop {
            let Some(f) = self.fwd_udp.get(i) else {
                return;
            };
            let guest = f.guest;
            let (n, peer) = match f.sock.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let port = match self.fwd_peer_ports.get(&(i, peer)) {
                Some(p) => *p,
                None => {
                    if self.fwd_peers.len() >= MAX_UDP_FWD_PEERS {
                        bump(&self.stats.dropped);
                        continue;
                    }
                    let Some(p) = self.alloc_port() else {
                        bump(&self.stats.dropped);
                        continue;
                    };
                    self.fwd_peer_ports.insert((i, peer), p);
                    p
                }
            };
            self.fwd_peers.insert(
                port,
                FwdUdpPeer {
                    fwd: i,
                    peer,
                    last: StdInstant::now(),
                },
            );
            let Some(mac) = self.neighbors.get(guest.ip()).copied() else {
                // The guest's MAC is unknown: ask for it (its reply is learned) and drop
                // this datagram; UDP senders retry.
                let arp = arp_request(self.mac, self.cfg.gateway, *guest.ip());
                self.push_out(arp);
                bump(&self.stats.dropped);
                continue;
            };
            let src = SocketAddrV4::new(self.cfg.gateway, port);
            match udp_frame(self.mac, mac, src, guest, &self.buf[..n]) {
                Some(fr) => self.push_out(fr),
                None => bump(&self.stats.dropped),
            }
        }
    }

    fn read_udp_flow(&mut self, key: FlowKey) {
        loop {
            let Some(f) = self.udp.get_mut(&key) else {
                return;
            };
            let n = match f.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface as ConnectionRefused on connected UDP sockets.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            f.last = StdInstant::now();
            let mac = f.guest_mac;
            match udp_frame(self.mac, mac, key.1, key.0, &self.buf[..n]) {
                Some(fr) => self.push_out(fr),
                None => bump(&self.stats.dropped),
            }
        }
    }

    /// Waits up to `timeout` for host socket events (or the waker) and records them.
    pub fn wait(&mut self, timeout: Duration) {
        if self.poll.poll(&mut self.events, Some(timeout)).is_err() {
            return;
        }
        let evs: Vec<(Token, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                let hup = e.is_error() || e.is_read_closed() || e.is_write_closed();
                (e.token(), e.is_readable() || hup, e.is_writable() || hup)
            })
            .collect();
        for (tok, r, w) in evs {
            match self.owners.get(&tok).copied() {
                Some(Owner::Tcp(h)) => {
                    if let Some(f) = self.tcp.get_mut(&h) {
                        f.readable |= r;
                        f.writable |= w;
                    }
                }
                Some(Owner::Pending(k)) => self.finish_connect(k, false),
                Some(Owner::Udp(k)) => self.read_udp_flow(k),
                Some(Owner::FwdTcp(i)) => self.accept_forward(i),
                Some(Owner::FwdUdp(i)) => self.read_forward_udp(i),
                None => {}
            }
        }
    }

    /// Runs smoltcp, moves data between smoltcp sockets and host sockets within the
    /// buffers' free space, and expires idle flows and stuck connects. Never blocks.
    pub fn service(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        let mut done = Vec::new();
        for (h, flow) in self.tcp.iter_mut() {
            let sock = self.sockets.get_mut::<tcp::Socket>(*h);
            if pump(flow, sock) {
                done.push(*h);
            }
        }
        // Sends what the pump queued, including RSTs of aborted sockets, before removal.
        // smoltcp emits at most one segment per socket per egress pass, so repeat passes
        // (bounded) to send a burst up to the window or the outgoing-queue limit.
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        for _ in 0..EGRESS_PASSES {
            if self.dev.tx.len() >= OUT_QUEUE
                || self
                    .iface
                    .poll_egress(now, &mut self.dev, &mut self.sockets)
                    == smoltcp::iface::PollResult::None
            {
                break;
            }
        }
        for h in done {
            self.remove_tcp(h);
        }
        let t = StdInstant::now();
        let late: Vec<FlowKey> = self
            .pending
            .iter()
            .filter(|(_, p)| t >= p.deadline)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            self.finish_connect(k, true);
        }
        let idle: Vec<FlowKey> = self
            .udp
            .iter()
            .filter(|(_, f)| t.duration_since(f.last) >= f.idle)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.remove_udp(k);
        }
        let idle: Vec<u16> = self
            .fwd_peers
            .iter()
            .filter(|(_, p)| t.duration_since(p.last) >= UDP_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for port in idle {
            if let Some(p) = self.fwd_peers.remove(&port) {
                self.fwd_peer_ports.remove(&(p.fwd, p.peer));
                self.used_ports.remove(&port);
            }
        }
    }
}

/// Moves data both ways for one flow and propagates FIN/RST. Returns true when the flow is
/// finished and can be removed after the next interface poll.
fn pump(flow: &mut TcpFlow, sock: &mut tcp::Socket<'_>) -> bool {
    use tcp::State;
    // Guest to host: only what the host accepts leaves the receive buffer, so the window the
    // guest sees shrinks while the host peer is slow.
    while flow.writable && sock.can_recv() {
        let r = sock.recv(|buf| match flow.stream.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => {
                sock.abort();
                return true;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.writable = false,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                // Host peer reset or gone: reset the guest side too.
                sock.abort();
                return true;
            }
            Err(_) => break,
        }
    }
    let state = sock.state();
    if !flow.host_wr_shut
        && matches!(
            state,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        )
        && sock.recv_queue() == 0
    {
        // The guest sent FIN and everything before it reached the host.
        let _ = flow.stream.shutdown(Shutdown::Write);
        flow.host_wr_shut = true;
    }
    // Host to guest: read only into free send-buffer space.
    while flow.readable && !flow.host_eof && sock.can_send() {
        let r = sock.send(|buf| match flow.stream.read(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => {
                flow.host_eof = true;
                sock.close();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.readable = false,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                sock.abort();
                return true;
            }
            Err(_) => break,
        }
    }
    match sock.state() {
        State::Closed => true,
        // Both FINs are through and the host saw both. The socket lingers briefly instead of
        // the full 2*MSL: the ACK of the guest's FIN must leave first (removing the socket
        // sooner makes the guest retransmit its FIN ~1 s later and get RST), but holding a
        // flow slot for 2*MSL would throttle connection churn.
        State::TimeWait if sock.recv_queue() == 0 => {
            let since = *flow.time_wait_since.get_or_insert_with(StdInstant::now);
            since.elapsed() >= TIME_WAIT_LINGER
        }
        _ => false,
    }
}

/// An ARP request (RFC 826) from `src_mac`/`src_ip` asking for `target`'s MAC.
fn arp_request(src_mac: EthernetAddress, src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: smoltcp::wire::ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = vec![0u8; 14 + repr.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(src_mac);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_ethertype(EthernetProtocol::Arp);
    repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    buf
}

/// Builds an Ethernet/IPv4/UDP frame with valid checksums, or `None` if it would exceed
/// [`FRAME_MTU`].
pub(crate) fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let len = 14 + ip.buffer_len() + ip.payload_len;
    if len > FRAME_MTU {
        return None;
    }
    let mut buf = vec![0u8; len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(src_mac);
    eth.set_dst_addr(dst_mac);
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let caps = ChecksumCapabilities::default();
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp, &caps);
    let mut udpp = UdpPacket::new_unchecked(ipp.payload_mut());
    udp.emit(
        &mut udpp,
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    Some(buf)
}
