//! Linux TAP back-end: the NIC's frames go to a host `tap` interface (created or attached by
//! name through TUNSETIFF on /dev/net/tun, with IFF_TAP | IFF_NO_PI so each read/write is one
//! bare Ethernet frame). Creating a TAP needs CAP_NET_ADMIN, or a persistent interface made
//! beforehand with `ip tuntap add NAME mode tap user $USER`. Other hosts get a clear error.

use std::io;

use super::NetPort;

/// Open TAP interface `name` (at most 15 bytes) and return the guest end of a [`NetPort`]
/// served by two background threads.
///
/// Errors: other host OS (`Unsupported`), a bad name (`InvalidInput`), /dev/net/tun missing or
/// not permitted, or TUNSETIFF refused (e.g. `EPERM` without CAP_NET_ADMIN).
pub fn open(name: &str) -> io::Result<NetPort> {
    imp::open(name)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::OpenOptions;
    use std::io::{self, Read, Write};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::time::Duration;

    use crossbeam::channel::RecvTimeoutError;

    use crate::net::{NetPort, MAX_FRAME};

    /// `_IOW('T', 202, int)` (linux/if_tun.h).
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;

    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }

    pub fn open(name: &str) -> io::Result<NetPort> {
        if name.is_empty() || name.len() > 15 || name.contains(['/', '\0', ' ']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{name}' is not a valid interface name (1-15 bytes, no '/' or spaces)"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes), which `IfReq` lays
        // out exactly (#[repr(C)]: 16-byte name, then the flags of the union); the fd is open.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETIFF {name}: {e} (needs CAP_NET_ADMIN, or a tap made with `ip tuntap add {name} mode tap user $USER`)"),
            ));
        }
        let file = Arc::new(file);
        let (guest, back) = NetPort::pair();
        let rfile = file.clone();
        let rback = back.clone();
        std::thread::Builder::new()
            .name("rinx-tap-rx".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    let mut pfd = libc::pollfd {
                        fd: rfile.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, count 1; the fd stays open (Arc).
                    let n = unsafe { libc::poll(&mut pfd, 1, 500) };
                    if n <= 0 {
                        // The writer thread holds the other reference until the NIC is gone.
                        if Arc::strong_count(&rfile) == 1 {
                            break;
                        }
                        continue;
                    }
                    match (&*rfile).read(&mut buf) {
                        Ok(n) if n > 0 && n <= MAX_FRAME => {
                            if let Err(crossbeam::channel::TrySendError::Disconnected(_)) =
                                rback.try_send(buf[..n].to_vec())
                            {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })?;
        std::thread::Builder::new()
            .name("rinx-tap-tx".into())
            .spawn(move || loop {
                match back.rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(frame) => {
                        let _ = (&*file).write(&frame);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            })?;
        Ok(guest)
    }

    const _: () = assert!(std::mem::size_of::<IfReq>() == 40);
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use crate::net::NetPort;

    pub fn open(name: &str) -> io::Result<NetPort> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("tap:{name}: TAP networking is only available on Linux hosts; use net=switch:ADDR or net=user"),
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    /// Frames cross a real TAP: the host's ARP request for a guest address arrives on the
    /// NetPort, and the ARP reply sent into the port makes the host kernel learn the
    /// neighbour. Needs CAP_NET_ADMIN and iproute2.
    #[test]
    #[ignore = "needs CAP_NET_ADMIN (creates a TAP interface) and iproute2"]
    fn arp_crosses_a_real_tap() {
        let name = format!("rxt{}", std::process::id() % 100_000);
        let port = super::open(&name).expect("open tap");
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["addr", "add", "10.213.7.1/24", "dev", &name]);
        ip(&["link", "set", &name, "up"]);
        // The host sends a datagram to a "guest" address: first an ARP request leaves
        // through the TAP.
        let sock = std::net::UdpSocket::bind("10.213.7.1:0").expect("bind");
        let _ = sock.send_to(b"rinx", "10.213.7.2:9");
        let req = loop {
            let f = port
                .rx
                .recv_timeout(Duration::from_secs(5))
                .expect("no frame from the TAP");
            if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == [10, 213, 7, 2] {
                break f;
            }
        };
        let host_mac = &req[6..12];
        let guest_mac = [0x02, 0, 0, 0, 0, 0x42];
        let mut reply = host_mac.to_vec();
        reply.extend_from_slice(&guest_mac);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        reply.extend_from_slice(&guest_mac);
        reply.extend_from_slice(&[10, 213, 7, 2]);
        reply.extend_from_slice(host_mac);
        reply.extend_from_slice(&[10, 213, 7, 1]);
        assert!(port.send(reply));
        let mut learned = false;
        for _ in 0..50 {
            let out = Command::new("ip")
                .args(["neigh", "show", "10.213.7.2", "dev", &name])
                .output()
                .expect("ip neigh");
            if String::from_utf8_lossy(&out.stdout).contains("02:00:00:00:00:42") {
                learned = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            learned,
            "the host did not learn the neighbour from the reply"
        );
    }
}
