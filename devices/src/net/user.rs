//! User-mode networking (NAT), like QEMU's `-netdev user`: the guest sees a private network
//! with a gateway, a DHCP server and a DNS forwarder; its TCP and UDP flows leave through
//! ordinary host sockets, and host loopback ports can be forwarded into the guest.
//!
//! Configuration types only so far; the back-end itself is being built.

use std::net::{Ipv4Addr, SocketAddr};

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
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            network: Ipv4Addr::new(10, 0, 2, 0),
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            guest: Ipv4Addr::new(10, 0, 2, 15),
            host_forwards: Vec::new(),
        }
    }
}
