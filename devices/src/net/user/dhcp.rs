//! The DHCP server of the user network (RFC 2131): one lease, the configured guest address,
//! for whichever client asks. Replies carry the options busybox udhcpc and Linux's
//! dhclient/systemd-networkd need: 53 (message type), 54 (server identifier), 51 (lease
//! time), 1 (subnet mask), 3 (router) and 6 (DNS server), RFC 2132 §3-§9.

use std::net::Ipv4Addr;

use smoltcp::wire::{DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress};

use super::UserConfig;

/// Lease time handed out (seconds): one day, like QEMU. Clients renew at half of it (T1,
/// RFC 2131 §4.4.5 default).
pub const LEASE_SECS: u32 = 86_400;
/// UDP port of the server (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;
/// UDP port of the client.
pub const CLIENT_PORT: u16 = 68;
/// Smallest BOOTP message a server sends (bytes, RFC 1542 §2.1); older clients drop shorter.
const MIN_MESSAGE: usize = 300;
/// RFC 2132 §3.8 option code: domain name server.
const OPT_DNS: u8 = 6;

/// A reply for the client, before UDP/IP/Ethernet encapsulation.
#[derive(Debug)]
pub struct Reply {
    /// Ethernet destination.
    pub dst_mac: EthernetAddress,
    /// IPv4 destination (the offered address, the client's address or the broadcast address).
    pub dst_ip: Ipv4Addr,
    /// The DHCP message (UDP payload).
    pub payload: Vec<u8>,
    /// The address the client holds after this reply, when it is an ACK with a lease.
    pub bound: Option<(Ipv4Addr, EthernetAddress)>,
}

/// Handles one client message (the UDP payload sent to port 67). Returns `None` for messages
/// that get no reply (malformed, not for this server, RELEASE/DECLINE, server replies).
pub fn handle(cfg: &UserConfig, payload: &[u8]) -> Option<Reply> {
    let packet = DhcpPacket::new_checked(payload).ok()?;
    let req = DhcpRepr::parse(&packet).ok()?;
    if !req.client_hardware_address.is_unicast() {
        return None;
    }
    let lease = cfg.guest;
    let (kind, your_ip, with_lease) = match req.message_type {
        DhcpMessageType::Discover => (DhcpMessageType::Offer, lease, true),
        DhcpMessageType::Request => {
            // A REQUEST naming another server means the client took that server's offer.
            if req.server_identifier.is_some_and(|s| s != cfg.gateway) {
                return None;
            }
            // SELECTING/INIT-REBOOT name the address in option 50, RENEWING/REBINDING in
            // ciaddr (RFC 2131 §4.3.2); anything but our one lease gets a NAK.
            let wanted = req.requested_ip.unwrap_or(req.client_ip);
            if wanted == lease {
                (DhcpMessageType::Ack, lease, true)
            } else {
                (DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED, false)
            }
        }
        // INFORM: configuration only, no address (RFC 2131 §3.4).
        DhcpMessageType::Inform => (DhcpMessageType::Ack, Ipv4Addr::UNSPECIFIED, false),
        _ => return None,
    };
    let nak = kind == DhcpMessageType::Nak;
    let netmask = Ipv4Addr::new(255, 255, 255, 0);
    let dns = cfg.dns.octets();
    let dns_opt = [DhcpOption {
        kind: OPT_DNS,
        data: &dns,
    }];
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: (!nak).then_some(cfg.gateway),
        subnet_mask: (!nak).then_some(netmask),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: req.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(cfg.gateway),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: with_lease.then_some(LEASE_SECS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: if nak { &[] } else { &dns_opt },
    };
    let mut buf = vec![0u8; repr.buffer_len().max(MIN_MESSAGE)];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
        .ok()?;

    // RFC 2131 §4.1: NAKs and replies to clients that asked for it are broadcast; a client
    // with an address gets unicast to it; otherwise unicast to chaddr and yiaddr (a client
    // without an address receives it on a raw socket).
    let client_mac = req.client_hardware_address;
    let (dst_mac, dst_ip) = if nak || req.broadcast {
        (EthernetAddress::BROADCAST, Ipv4Addr::BROADCAST)
    } else if !req.client_ip.is_unspecified() {
        (client_mac, req.client_ip)
    } else if !your_ip.is_unspecified() {
        (client_mac, your_ip)
    } else {
        (EthernetAddress::BROADCAST, Ipv4Addr::BROADCAST)
    };
    let bound = (kind == DhcpMessageType::Ack && with_lease).then_some((lease, client_mac));
    Some(Reply {
        dst_mac,
        dst_ip,
        payload: buf,
        bound,
    })
}
