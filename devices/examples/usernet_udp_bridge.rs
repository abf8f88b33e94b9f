//! Manual check of the user-mode NAT against a real Linux TCP/IP stack and busybox udhcpc,
//! used by scripts/usernet-tap-check.sh: runs the NAT and carries its guest-side frames over
//! UDP on loopback (one datagram per Ethernet frame) to a TAP bridge.
//!
//! Usage: usernet_udp_bridge BIND_ADDR [HOSTFWD_TCP_HOST_ADDR GUEST_PORT]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use devices::net::user::{spawn, HostForward, Proto, UserConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let bind: SocketAddr = args.get(1).ok_or("usage: BIND_ADDR")?.parse()?;
    let mut cfg = UserConfig::default();
    if let (Some(h), Some(p)) = (args.get(2), args.get(3)) {
        cfg.host_forwards.push(HostForward {
            proto: Proto::Tcp,
            host: h.parse()?,
            guest_addr: None,
            guest_port: p.parse()?,
        });
    }
    let (port, handle) = spawn(cfg)?;
    eprintln!(
        "usernet bridge on {bind}, forwards {:?}",
        handle.forward_addrs()
    );
    let sock = Arc::new(UdpSocket::bind(bind)?);
    let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let to_tap = {
        let (sock, peer, rx) = (sock.clone(), peer.clone(), port.rx.clone());
        std::thread::spawn(move || {
            while let Ok(f) = rx.recv() {
                let p = *peer.lock().unwrap();
                if let Some(p) = p {
                    let _ = sock.send_to(&f, p);
                }
            }
        })
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        *peer.lock().unwrap() = Some(from);
        // A full queue drops like a wire; the guest's TCP recovers.
        port.send(buf[..n].to_vec());
        if to_tap.is_finished() {
            break;
        }
    }
    drop(handle);
    Ok(())
}
