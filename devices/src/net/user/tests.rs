//! User-mode networking tests with real host sockets on loopback. The "guest" is a second
//! smoltcp interface on the guest end of the [`NetPort`], so these exercise the same frames a
//! NIC model would carry, without booting anything.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant as StdInstant};

use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr,
    IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
};

use super::nat::{udp_frame, GATEWAY_MAC};
use super::*;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

// ---- the test guest: smoltcp on the NIC end of the NetPort ----

struct GuestDev {
    port: NetPort,
    stash: VecDeque<Vec<u8>>,
}

struct GRx(Vec<u8>);
struct GTx<'a>(&'a NetPort);

impl phy::RxToken for GRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for GTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.send(b);
        r
    }
}

impl Device for GuestDev {
    type RxToken<'a> = GRx;
    type TxToken<'a> = GTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(GRx, GTx<'_>)> {
        let f = self.stash.pop_front().or_else(|| self.port.try_recv())?;
        Some((GRx(f), GTx(&self.port)))
    }

    fn transmit(&mut self, _: Instant) -> Option<GTx<'_>> {
        (!self.port.tx.is_full()).then_some(GTx(&self.port))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

struct Guest {
    iface: Interface,
    dev: GuestDev,
    sockets: SocketSet<'static>,
    epoch: StdInstant,
}

impl Guest {
    /// A guest with `addr`/24 and default route 10.0.2.2, or no address (for DHCP).
    fn new(port: NetPort, addr: Option<Ipv4Addr>) -> Guest {
        let mut dev = GuestDev {
            port,
            stash: VecDeque::new(),
        };
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        cfg.random_seed = 0x1234_5678;
        let mut iface = Interface::new(cfg, &mut dev, Instant::ZERO);
        if let Some(a) = addr {
            iface.update_ip_addrs(|v| {
                let _ = v.push(IpCidr::new(IpAddress::Ipv4(a), 24));
            });
            iface.routes_mut().add_default_ipv4_route(GW).unwrap();
        }
        Guest {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            epoch: StdInstant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn poll(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        // One segment per socket per egress pass: repeat to send a burst, like a real stack.
        for _ in 0..64 {
            if self
                .iface
                .poll_egress(now, &mut self.dev, &mut self.sockets)
                == smoltcp::iface::PollResult::None
            {
                break;
            }
        }
    }

    /// Polls until `f` returns `Some`, failing the test after `secs` seconds.
    fn run_until<T>(&mut self, secs: u64, mut f: impl FnMut(&mut Guest) -> Option<T>) -> T {
        let deadline = StdInstant::now() + Duration::from_secs(secs);
        loop {
            self.poll();
            if let Some(t) = f(self) {
                return t;
            }
            assert!(StdInstant::now() < deadline, "test guest timed out");
            let now = self.now();
            let d = self
                .iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_millis(2))
                .min(Duration::from_millis(2));
            if let Ok(f) = self.dev.port.rx.recv_timeout(d) {
                self.dev.stash.push_back(f);
                while let Some(f) = self.dev.port.try_recv() {
                    self.dev.stash.push_back(f);
                }
            }
        }
    }

    fn tcp_socket(&mut self) -> SocketHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        self.sockets.add(s)
    }

    fn connect(&mut self, h: SocketHandle, dst: SocketAddrV4, local_port: u16) {
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(*dst.ip()), dst.port()), local_port)
            .unwrap();
    }

    fn udp_socket(&mut self, port: u16) -> SocketHandle {
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
        );
        s.bind(port).unwrap();
        self.sockets.add(s)
    }
}

fn start(cfg: UserConfig, addr: Option<Ipv4Addr>) -> (Guest, UserNetHandle) {
    let (port, handle) = spawn(cfg).expect("spawn user network");
    (Guest::new(port, addr), handle)
}

// ---- deterministic data streams ----

/// Byte `i` of stream `seed` (splitmix64 of the 8-byte block index).
fn pattern(seed: u64, pos: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let i = pos + k as u64;
        let mut z = seed.wrapping_add(i / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        *b = (z >> ((i % 8) * 8)) as u8;
    }
}

fn pattern_sha(seed: u64, len: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut buf = vec![0; 65536];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        pattern(seed, pos, &mut buf[..n]);
        h.update(&buf[..n]);
        pos += n as u64;
    }
    h.finalize().to_vec()
}

/// Host side of a transfer: accepts one connection, sends `send_len` bytes of `send_seed`
/// (then FIN) while hashing everything received until the guest's FIN. Returns
/// (received bytes, sha256, seconds from accept to the guest's FIN).
fn host_peer(
    listener: TcpListener,
    send_seed: u64,
    send_len: u64,
) -> std::thread::JoinHandle<(u64, Vec<u8>, f64)> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let t0 = StdInstant::now();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut buf = vec![0; 65536];
            let mut pos = 0;
            while pos < send_len {
                let n = (send_len - pos).min(buf.len() as u64) as usize;
                pattern(send_seed, pos, &mut buf[..n]);
                w.write_all(&buf[..n]).unwrap();
                pos += n as u64;
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut h = Sha256::new();
        let mut buf = vec![0; 65536];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
        let secs = t0.elapsed().as_secs_f64();
        writer.join().unwrap();
        (total, h.finalize().to_vec(), secs)
    })
}

/// Guest side: connects `h` to 10.0.2.2:`port`, sends `send_len` bytes of `send_seed`, then
/// FIN, and hashes what arrives until the host's FIN. Returns (received, sha256, seconds).
fn guest_transfer(
    g: &mut Guest,
    port: u16,
    send_seed: u64,
    send_len: u64,
    secs: u64,
) -> (u64, Vec<u8>, f64) {
    let h = g.tcp_socket();
    g.connect(h, SocketAddrV4::new(GW, port), 40000);
    let t0 = StdInstant::now();
    let mut sent = 0u64;
    let mut closed = false;
    let mut got = 0u64;
    let mut sha = Sha256::new();
    g.run_until(secs, |g| {
        let s = g.sockets.get_mut::<tcp::Socket>(h);
        while s.can_send() && sent < send_len {
            let n = s
                .send(|buf| {
                    let n = (send_len - sent).min(buf.len() as u64) as usize;
                    pattern(send_seed, sent, &mut buf[..n]);
                    (n, n)
                })
                .unwrap();
            sent += n as u64;
        }
        // close() before the handshake completes would abandon the connection.
        if sent == send_len && !closed && s.may_send() {
            s.close();
            closed = true;
        }
        while s.can_recv() {
            let n = s
                .recv(|buf| {
                    sha.update(&*buf);
                    (buf.len(), buf.len())
                })
                .unwrap();
            got += n as u64;
        }
        assert!(
            s.state() != tcp::State::Closed || (closed && !s.may_recv()),
            "guest connection reset in state {}",
            s.state()
        );
        if std::env::var("USERNET_DEBUG").is_ok() && t0.elapsed().as_millis() % 1000 < 2 {
            eprintln!(
                "guest: sent {sent} got {got} state {} recvq {} sendq {}",
                s.state(),
                s.recv_queue(),
                s.send_queue()
            );
        }
        // The host's FIN arrived and all our data and FIN were acknowledged.
        let done = closed
            && !s.may_recv()
            && matches!(s.state(), tcp::State::TimeWait | tcp::State::Closed);
        done.then_some(())
    });
    (
        got,
        sha.finalize_reset().to_vec(),
        t0.elapsed().as_secs_f64(),
    )
}

// ---- DHCP ----

#[test]
fn dhcp_client_gets_the_lease_address_router_and_dns() {
    let (mut g, _h) = start(UserConfig::default(), None);
    let d = g.sockets.add(dhcpv4::Socket::new());
    let (addr, router, dns) = g.run_until(10, |g| {
        match g.sockets.get_mut::<dhcpv4::Socket>(d).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                Some((c.address, c.router, c.dns_servers.to_vec()))
            }
            _ => None,
        }
    });
    assert_eq!(addr.address(), GUEST);
    assert_eq!(addr.prefix_len(), 24);
    assert_eq!(router, Some(GW));
    assert_eq!(dns, vec![DNS]);
}

fn dhcp_frame(kind: DhcpMessageType, xid: u32, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: EthernetAddress(GUEST_MAC),
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: requested,
        client_identifier: Some(EthernetAddress(GUEST_MAC)),
        server_identifier: requested.map(|_| GW),
        parameter_request_list: Some(&[1, 3, 6, 12, 15, 28, 42]),
        dns_servers: None,
        max_size: Some(576),
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut payload = vec![0; repr.buffer_len().max(300)];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..]))
        .unwrap();
    udp_frame(
        EthernetAddress(GUEST_MAC),
        EthernetAddress::BROADCAST,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        &payload,
    )
    .unwrap()
}

/// Runs one DHCP exchange on a thread-less NAT and returns the reply's
/// (Ethernet dst, IP dst, message type, yiaddr, options as (code, data)).
#[allow(clippy::type_complexity)]
fn dhcp_exchange(
    nat: &mut Nat,
    frame: &[u8],
) -> (
    EthernetAddress,
    Ipv4Addr,
    DhcpMessageType,
    Ipv4Addr,
    Vec<(u8, Vec<u8>)>,
) {
    nat.handle_guest_frame(frame);
    nat.service();
    let out = nat.pop_outgoing().expect("a DHCP reply");
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
    assert_eq!(ip.src_addr(), GW);
    let pkt = DhcpPacket::new_checked(udp.payload()).unwrap();
    let repr = DhcpRepr::parse(&pkt).unwrap();
    let opts = pkt.options().map(|o| (o.kind, o.data.to_vec())).collect();
    (
        eth.dst_addr(),
        ip.dst_addr(),
        repr.message_type,
        repr.your_ip,
        opts,
    )
}

#[test]
fn dhcp_offer_and_ack_carry_the_options_udhcpc_needs() {
    let mut nat = Nat::new(UserConfig::default()).unwrap();
    let opt = |o: &[(u8, Vec<u8>)], k: u8| o.iter().find(|(c, _)| *c == k).map(|(_, d)| d.clone());

    let (mac, dst, kind, yiaddr, o) =
        dhcp_exchange(&mut nat, &dhcp_frame(DhcpMessageType::Discover, 7, None));
    assert_eq!(kind, DhcpMessageType::Offer);
    // No broadcast flag: unicast to chaddr and yiaddr (RFC 2131 §4.1).
    assert_eq!(
        (mac, dst, yiaddr),
        (EthernetAddress(GUEST_MAC), GUEST, GUEST)
    );
    for (k, want) in [
        (53u8, vec![2u8]),
        (54, GW.octets().to_vec()),
        (1, vec![255, 255, 255, 0]),
        (3, GW.octets().to_vec()),
        (6, DNS.octets().to_vec()),
        (51, 86_400u32.to_be_bytes().to_vec()),
    ] {
        assert_eq!(opt(&o, k), Some(want), "OFFER option {k}");
    }

    let (_, _, kind, yiaddr, o) = dhcp_exchange(
        &mut nat,
        &dhcp_frame(DhcpMessageType::Request, 8, Some(GUEST)),
    );
    assert_eq!((kind, yiaddr), (DhcpMessageType::Ack, GUEST));
    for k in [53u8, 54, 1, 3, 6, 51] {
        assert!(opt(&o, k).is_some(), "ACK option {k}");
    }
    assert_eq!(opt(&o, 53), Some(vec![5]));

    let (mac, dst, kind, _, _) = dhcp_exchange(
        &mut nat,
        &dhcp_frame(
            DhcpMessageType::Request,
            9,
            Some(Ipv4Addr::new(10, 0, 2, 99)),
        ),
    );
    assert_eq!(kind, DhcpMessageType::Nak);
    assert_eq!(
        (mac, dst),
        (EthernetAddress::BROADCAST, Ipv4Addr::BROADCAST)
    );
    assert_eq!(nat.stats().snapshot().dhcp_replies, 3);
}

// ---- ARP and ICMP ----

fn arp_request_frame(target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(GUEST_MAC),
        source_protocol_addr: GUEST,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = vec![0; 14 + repr.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(EthernetAddress(GUEST_MAC));
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_ethertype(EthernetProtocol::Arp);
    repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    buf
}

#[test]
fn arp_answers_gateway_and_dns_only_and_the_gateway_answers_ping() {
    let mut nat = Nat::new(UserConfig::default()).unwrap();
    for target in [GW, DNS] {
        nat.handle_guest_frame(&arp_request_frame(target));
        nat.service();
        let out = nat.pop_outgoing().expect("ARP reply");
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            ..
        } = repr
        else {
            panic!("not IPv4 ARP")
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr, EthernetAddress(GATEWAY_MAC));
        assert_eq!(source_protocol_addr, target);
    }
    // The guest probing its own address (duplicate address detection) or a free neighbour
    // must see no answer.
    for target in [GUEST, Ipv4Addr::new(10, 0, 2, 77)] {
        nat.handle_guest_frame(&arp_request_frame(target));
        nat.service();
        assert!(nat.pop_outgoing().is_none(), "ARP for {target} answered");
    }

    // ICMP echo request 10.0.2.15 -> 10.0.2.2.
    let data = b"rinx ping";
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x42,
        seq_no: 1,
        data,
    };
    let ip = Ipv4Repr {
        src_addr: GUEST,
        dst_addr: GW,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0; 14 + ip.buffer_len() + icmp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(EthernetAddress(GUEST_MAC));
    eth.set_dst_addr(EthernetAddress(GATEWAY_MAC));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let caps = ChecksumCapabilities::default();
    let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut ipp, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(ipp.payload_mut()), &caps);
    nat.handle_guest_frame(&buf);
    nat.service();
    let out = nat.pop_outgoing().expect("echo reply");
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress(GUEST_MAC));
    let ipp = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ipp.src_addr(), ipp.dst_addr()), (GW, GUEST));
    let reply =
        Icmpv4Repr::parse(&Icmpv4Packet::new_checked(ipp.payload()).unwrap(), &caps).unwrap();
    assert_eq!(
        reply,
        Icmpv4Repr::EchoReply {
            ident: 0x42,
            seq_no: 1,
            data
        }
    );
}

// ---- TCP ----

#[test]
fn tcp_to_the_gateway_reaches_host_loopback_8mib_each_way_byte_exact() {
    const LEN: u64 = 8 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = host_peer(listener, 2, LEN);
    let (mut g, h) = start(UserConfig::default(), Some(GUEST));
    let (got, sha, _) = guest_transfer(&mut g, port, 1, LEN, 120);
    let (host_got, host_sha, _) = host.join().unwrap();
    assert_eq!(host_got, LEN, "host received");
    assert_eq!(host_sha, pattern_sha(1, LEN), "guest-to-host bytes");
    assert_eq!(got, LEN, "guest received");
    assert_eq!(sha, pattern_sha(2, LEN), "host-to-guest bytes");
    let st = h.stats();
    assert_eq!((st.tcp_flows, st.tcp_refused, st.malformed), (1, 0, 0));
}

/// Single-flow throughput through the NAT, both directions, 64 MiB each (prints MB/s; the
/// speed target lives in the benchmark scripts, not here). Both transfers must be exact.
#[test]
fn tcp_64mib_each_direction_byte_exact_and_throughput() {
    const LEN: u64 = 64 << 20;
    for (up, down) in [(0, LEN), (LEN, 0)] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let host = host_peer(listener, 4, down);
        let (mut g, _h) = start(UserConfig::default(), Some(GUEST));
        let (got, sha, secs) = guest_transfer(&mut g, port, 3, up, 300);
        let (host_got, host_sha, _) = host.join().unwrap();
        assert_eq!((host_got, got), (up, down));
        assert_eq!(host_sha, pattern_sha(3, up));
        assert_eq!(sha, pattern_sha(4, down));
        let dir = if up > 0 { "guest->host" } else { "host->guest" };
        eprintln!(
            "usernet single-flow TCP {dir}: {:.1} MB/s ({} MiB in {secs:.2} s)",
            LEN as f64 / 1e6 / secs,
            LEN >> 20
        );
    }
}

#[test]
fn tcp_to_a_closed_port_is_reset() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut g, h) = start(UserConfig::default(), Some(GUEST));
    let s = g.tcp_socket();
    g.connect(s, SocketAddrV4::new(GW, port), 40001);
    g.run_until(10, |g| {
        (g.sockets.get::<tcp::Socket>(s).state() == tcp::State::Closed).then_some(())
    });
    assert_eq!(h.stats().tcp_refused, 1);
}

#[test]
fn restricted_guest_cannot_reach_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let cfg = UserConfig {
        restrict: true,
        ..UserConfig::default()
    };
    let (mut g, _h) = start(cfg, Some(GUEST));
    let s = g.tcp_socket();
    g.connect(s, SocketAddrV4::new(GW, port), 40002);
    g.run_until(10, |g| {
        (g.sockets.get::<tcp::Socket>(s).state() == tcp::State::Closed).then_some(())
    });
    assert!(
        listener.accept().is_err(),
        "restricted guest reached the host"
    );
}

#[test]
fn guest_reset_closes_the_host_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut g, _h) = start(UserConfig::default(), Some(GUEST));
    let s = g.tcp_socket();
    g.connect(s, SocketAddrV4::new(GW, port), 40003);
    g.run_until(10, |g| {
        g.sockets.get::<tcp::Socket>(s).may_send().then_some(())
    });
    let (mut host, _) = listener.accept().unwrap();
    g.sockets.get_mut::<tcp::Socket>(s).abort();
    g.poll();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 16];
    // EOF or ECONNRESET both mean the NAT closed its side; a timeout would fail here.
    match host.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "host connection stayed open: {e}"
        ),
    }
}

// ---- UDP and DNS ----

fn udp_roundtrip(g: &mut Guest, dst: SocketAddrV4, msg: &[u8]) -> (Vec<u8>, SocketAddrV4) {
    let u = g.udp_socket(5555);
    let mut next_send = StdInstant::now();
    g.run_until(10, |g| {
        let s = g.sockets.get_mut::<udp::Socket>(u);
        if let Ok((data, meta)) = s.recv() {
            let IpAddress::Ipv4(a) = meta.endpoint.addr;
            return Some((data.to_vec(), SocketAddrV4::new(a, meta.endpoint.port)));
        }
        // Retry: the first datagram waits for the guest's ARP of the gateway.
        if StdInstant::now() >= next_send {
            s.send_slice(msg, (IpAddress::Ipv4(*dst.ip()), dst.port()))
                .unwrap();
            next_send = StdInstant::now() + Duration::from_millis(300);
        }
        None
    })
}

#[test]
fn udp_echo_through_the_nat() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        let (n, from) = echo.recv_from(&mut b).unwrap();
        let mut r = b"echo:".to_vec();
        r.extend_from_slice(&b[..n]);
        echo.send_to(&r, from).unwrap();
        from
    });
    let (mut g, h) = start(UserConfig::default(), Some(GUEST));
    let (data, from) = udp_roundtrip(&mut g, SocketAddrV4::new(GW, port), b"hello");
    assert_eq!(data, b"echo:hello");
    assert_eq!(from, SocketAddrV4::new(GW, port));
    assert!(t.join().unwrap().ip().is_loopback());
    assert!(h.stats().udp_flows >= 1);
}

#[test]
fn dns_queries_go_to_the_configured_resolver() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let raddr = resolver.local_addr().unwrap();
    resolver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A query for "example.test A", id 0xbeef.
    let mut query = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x07example\x04test\x00\x00\x01\x00\x01");
    let q = query.clone();
    let t = std::thread::spawn(move || {
        let mut b = [0u8; 512];
        let (n, from) = resolver.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], &q[..], "query forwarded unchanged");
        // Answer: same id, QR|RD|RA, one answer 192.0.2.7 (TEST-NET-1, never contacted).
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        resolver.send_to(&r, from).unwrap();
        r
    });
    let cfg = UserConfig {
        dns_server: Some(raddr),
        ..UserConfig::default()
    };
    let (mut g, _h) = start(cfg, Some(GUEST));
    let (data, from) = udp_roundtrip(&mut g, SocketAddrV4::new(DNS, 53), &query);
    let want = t.join().unwrap();
    assert_eq!(data, want);
    assert_eq!(from, SocketAddrV4::new(DNS, 53));
}

// ---- host forwards ----

#[test]
fn tcp_hostfwd_reaches_the_guest_listener() {
    let cfg = UserConfig {
        host_forwards: vec![HostForward {
            proto: Proto::Tcp,
            host: "127.0.0.1:0".parse().unwrap(),
            guest_addr: None,
            guest_port: 8080,
        }],
        ..UserConfig::default()
    };
    let (mut g, h) = start(cfg, Some(GUEST));
    let addr = h.forward_addrs()[0];
    let s = g.tcp_socket();
    g.sockets.get_mut::<tcp::Socket>(s).listen(8080).unwrap();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"hello guest").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut r = Vec::new();
        c.read_to_end(&mut r).unwrap();
        r
    });
    let mut got = Vec::new();
    let mut replied = false;
    let mut peer = None;
    g.run_until(10, |g| {
        let sk = g.sockets.get_mut::<tcp::Socket>(s);
        if let Some(e) = sk.remote_endpoint() {
            peer = Some(e);
        }
        while sk.can_recv() {
            sk.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        if !replied && got == b"hello guest" && !sk.may_recv() {
            sk.send_slice(b"hello host").unwrap();
            sk.close();
            replied = true;
        }
        (replied && matches!(sk.state(), tcp::State::TimeWait | tcp::State::Closed)).then_some(())
    });
    assert_eq!(client.join().unwrap(), b"hello host");
    // The guest sees the forwarded connection come from the gateway.
    assert_eq!(peer.map(|e| e.addr), Some(IpAddress::Ipv4(GW)));
}

#[test]
fn udp_hostfwd_reaches_the_guest_and_replies_return() {
    let cfg = UserConfig {
        host_forwards: vec![HostForward {
            proto: Proto::Udp,
            host: "127.0.0.1:0".parse().unwrap(),
            guest_addr: None,
            guest_port: 5353,
        }],
        ..UserConfig::default()
    };
    let (mut g, h) = start(cfg, Some(GUEST));
    let addr = h.forward_addrs()[0];
    let u = g.udp_socket(5353);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut from = None;
    let mut next = StdInstant::now();
    let reply = g.run_until(10, |g| {
        let s = g.sockets.get_mut::<udp::Socket>(u);
        if let Ok((data, meta)) = s.recv() {
            assert_eq!(data, b"ping");
            from = Some(meta.endpoint);
            s.send_slice(b"pong", meta.endpoint).unwrap();
        }
        if from.is_some() {
            let mut b = [0u8; 64];
            if let Ok(n) = client.recv(&mut b) {
                return Some(b[..n].to_vec());
            }
        } else if StdInstant::now() >= next {
            // The first datagram may be spent on ARP for the guest; retry like a client.
            client.send_to(b"ping", addr).unwrap();
            next = StdInstant::now() + Duration::from_millis(200);
        }
        None
    });
    assert_eq!(reply, b"pong");
    let IpAddress::Ipv4(src) = from.unwrap().addr;
    assert_eq!(src, GW);
}

// ---- robustness ----

#[test]
fn malformed_and_random_frames_are_dropped_and_counted() {
    let cfg = UserConfig {
        restrict: true,
        ..UserConfig::default()
    };
    let mut nat = Nat::new(cfg).unwrap();
    let valid = [
        dhcp_frame(DhcpMessageType::Discover, 1, None),
        arp_request_frame(GW),
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut handled = 0;
    for i in 0..20_000 {
        let mut f = if i % 2 == 0 {
            valid[i % valid.len()].clone()
        } else {
            let n = (rnd() % 1600) as usize;
            (0..n).map(|_| rnd() as u8).collect()
        };
        // Flip a few bytes of valid frames, truncate some.
        for _ in 0..(rnd() % 4) {
            if !f.is_empty() {
                let j = (rnd() as usize) % f.len();
                f[j] ^= rnd() as u8;
            }
        }
        if rnd() % 5 == 0 {
            let n = (rnd() as usize) % (f.len() + 1);
            f.truncate(n);
        }
        nat.handle_guest_frame(&f);
        nat.service();
        while nat.pop_outgoing().is_some() {}
        handled += 1;
    }
    let st = nat.stats().snapshot();
    assert_eq!(st.frames_in, handled);
    assert!(st.malformed > 1000, "{st:?}");
}

#[test]
fn resolv_conf_first_nameserver_wins() {
    let text = "# comment\nsearch lan\nnameserver fe80::1%eth0\nnameserver 192.168.1.1\nnameserver 1.1.1.1\n";
    assert_eq!(
        parse_resolv_conf(text),
        Some(SocketAddr::from(([192, 168, 1, 1], 53)))
    );
    assert_eq!(
        parse_resolv_conf("nameserver ::1\n"),
        Some("[::1]:53".parse().unwrap())
    );
    assert_eq!(parse_resolv_conf("search x\n"), None);
}

#[test]
fn bad_configs_are_rejected() {
    let cfg = UserConfig {
        guest: Ipv4Addr::new(10, 0, 3, 15),
        ..UserConfig::default()
    };
    assert!(matches!(spawn(cfg), Err(UserNetError::Config(_))));
    let cfg = UserConfig {
        dns: GW,
        ..UserConfig::default()
    };
    assert!(matches!(spawn(cfg), Err(UserNetError::Config(_))));
}

#[test]
fn a_host_peer_that_does_not_read_throttles_the_guest() {
    const LEN: u64 = 64 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut g, _h) = start(UserConfig::default(), Some(GUEST));
    let s = g.tcp_socket();
    g.connect(s, SocketAddrV4::new(GW, port), 40004);
    let mut sent = 0u64;
    let feed = |g: &mut Guest, sent: &mut u64| {
        let sk = g.sockets.get_mut::<tcp::Socket>(s);
        while sk.can_send() && *sent < LEN {
            let n = sk
                .send(|buf| {
                    let n = (LEN - *sent).min(buf.len() as u64) as usize;
                    pattern(5, *sent, &mut buf[..n]);
                    (n, n)
                })
                .unwrap();
            *sent += n as u64;
        }
        if *sent == LEN && sk.may_send() {
            sk.close();
        }
    };
    g.run_until(10, |g| {
        g.sockets.get::<tcp::Socket>(s).may_send().then_some(())
    });
    let (mut host, _) = listener.accept().unwrap();
    // The host application reads nothing for a second: what the guest manages to send is
    // bounded by the NAT's window plus the host kernel's socket buffers, not by the NAT
    // buffering without limit.
    let stop = StdInstant::now() + Duration::from_secs(1);
    g.run_until(10, |g| {
        feed(g, &mut sent);
        (StdInstant::now() >= stop).then_some(())
    });
    assert!(
        sent < 24 << 20,
        "guest pushed {sent} bytes into a peer that reads nothing"
    );
    let reader = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut buf = vec![0; 65536];
        let mut total = 0u64;
        loop {
            let n = host.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
        (total, h.finalize().to_vec())
    });
    g.run_until(120, |g| {
        feed(g, &mut sent);
        let sk = g.sockets.get::<tcp::Socket>(s);
        (sent == LEN && sk.send_queue() == 0 && !sk.may_send()).then_some(())
    });
    let (total, sha) = reader.join().unwrap();
    assert_eq!(total, LEN);
    assert_eq!(sha, pattern_sha(5, LEN));
}

#[test]
fn host_reset_resets_the_guest_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut g, _h) = start(UserConfig::default(), Some(GUEST));
    let s = g.tcp_socket();
    g.connect(s, SocketAddrV4::new(GW, port), 40005);
    g.run_until(10, |g| {
        g.sockets.get::<tcp::Socket>(s).may_send().then_some(())
    });
    let (host, _) = listener.accept().unwrap();
    g.sockets
        .get_mut::<tcp::Socket>(s)
        .send_slice(b"unread data")
        .unwrap();
    // Wait until the bytes sit unread in the host socket, then close it: the host kernel
    // answers with RST (RFC 1122 §4.2.2.13), which must reach the guest as RST, not FIN.
    g.run_until(10, |g| {
        (g.sockets.get::<tcp::Socket>(s).send_queue() == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(host);
    g.run_until(10, |g| {
        let st = g.sockets.get::<tcp::Socket>(s).state();
        assert_ne!(st, tcp::State::CloseWait, "host reset arrived as FIN");
        (st == tcp::State::Closed).then_some(())
    });
}
