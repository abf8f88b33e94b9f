//! Parsers for option values (memory sizes, serial back-end specs). Every malformed value is a
//! clear error message, never a panic.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Smallest guest RAM rinx accepts (bytes): enough for the boot structures and a kernel.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest guest RAM rinx accepts (bytes).
pub const MAX_MEMORY: u64 = 64 << 30;

/// Parses a memory size such as `512M`, `2G`, `65536K` or a plain byte count.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mul: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix '{c}' (use K, M or G)")),
            };
            (&t[..i], mul)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512M, 2G)"))?;
    let bytes = n
        .checked_mul(mul)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes < MIN_MEMORY {
        return Err(format!(
            "guest memory must be at least {} MiB (got {bytes} bytes)",
            MIN_MEMORY >> 20
        ));
    }
    if bytes > MAX_MEMORY {
        return Err(format!(
            "guest memory must be at most {} GiB",
            MAX_MEMORY >> 30
        ));
    }
    if bytes % 4096 != 0 {
        return Err("guest memory must be a multiple of 4 KiB".into());
    }
    Ok(bytes)
}

/// Where a serial port's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialSpec {
    /// The terminal, in raw mode, with Ctrl-A x to quit.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// A TCP listener on a loopback address; the first client gets the port.
    Tcp(SocketAddr),
    /// Discard output.
    Null,
}

/// Parses `stdio`, `file:PATH`, `tcp:ADDR:PORT` or `null`.
pub fn parse_serial(s: &str) -> Result<SerialSpec, String> {
    if s == "stdio" {
        return Ok(SerialSpec::Stdio);
    }
    if s == "null" {
        return Ok(SerialSpec::Null);
    }
    if let Some(p) = s.strip_prefix("file:") {
        if p.is_empty() {
            return Err("file: needs a path, e.g. file:serial.log".into());
        }
        return Ok(SerialSpec::File(PathBuf::from(p)));
    }
    if let Some(a) = s.strip_prefix("tcp:") {
        let addr: SocketAddr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an address:port, e.g. tcp:127.0.0.1:4444"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "tcp serial listens on loopback only; '{}' is not a loopback address",
                addr.ip()
            ));
        }
        return Ok(SerialSpec::Tcp(addr));
    }
    Err(format!(
        "unknown serial back-end '{s}': use stdio, file:PATH, tcp:127.0.0.1:PORT or null"
    ))
}

/// Image format of a `--drive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveFormat {
    /// Raw image: the disk is the file's bytes.
    Raw,
    /// qcow2 (version 2 or 3) image.
    Qcow2,
}

impl From<DriveFormat> for devices::block::ImageFormat {
    fn from(f: DriveFormat) -> Self {
        match f {
            DriveFormat::Raw => Self::Raw,
            DriveFormat::Qcow2 => Self::Qcow2,
        }
    }
}

/// Controller a `--drive` is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveInterface {
    /// virtio-scsi host (PCI), disk at target 0 LUN 0.
    VirtioScsi,
    /// virtio-scsi host (PCI) with a CD-ROM drive (MMC, 2048-byte blocks, read-only) at
    /// target 0 LUN 0 holding the image (an ISO 9660 file).
    Cdrom,
    /// BusLogic BT-958 PCI SCSI host adapter (Linux `BusLogic` driver); every such drive is
    /// a target on one adapter, SCSI IDs 0-6 in command-line order.
    BusLogic,
}

/// A `--drive` option: `file=PATH[,format=raw|qcow2][,if=virtio-scsi|cdrom|buslogic][,mode=...][,undo=...][,readonly=on]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveSpec {
    /// Host image.
    pub file: PathBuf,
    /// Image format.
    pub format: DriveFormat,
    /// Controller.
    pub interface: DriveInterface,
    /// Disk mode (persistent, nonpersistent, undoable with keep/discard).
    pub mode: devices::block::DiskMode,
    /// Open the image read-only (guest writes fail with DATA PROTECT).
    pub read_only: bool,
}

/// Parses a `--drive` value (see [`DriveSpec`]); `mode=undoable` needs `undo=keep` or
/// `undo=discard` (what happens to the guest's writes at power-off).
pub fn parse_drive(s: &str) -> Result<DriveSpec, String> {
    use devices::block::DiskMode;
    let mut file = None;
    let mut format = DriveFormat::Raw;
    let mut interface = DriveInterface::VirtioScsi;
    let mut mode = None;
    let mut undo = None;
    let mut read_only = false;
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "'{part}' in --drive is not key=value (e.g. file=disk.img)"
            ));
        };
        match (k, v) {
            ("file", "") => return Err("file= needs a path".into()),
            ("file", p) => file = Some(PathBuf::from(p)),
            ("format", "raw") => format = DriveFormat::Raw,
            ("format", "qcow2") => format = DriveFormat::Qcow2,
            ("format", f) => return Err(format!("unknown drive format '{f}': use raw or qcow2")),
            ("if", "virtio-scsi") => interface = DriveInterface::VirtioScsi,
            ("if", "cdrom") => interface = DriveInterface::Cdrom,
            ("if", "buslogic") => interface = DriveInterface::BusLogic,
            ("if", i) => {
                return Err(format!(
                    "unknown drive interface '{i}': use virtio-scsi, cdrom or buslogic"
                ))
            }
            ("mode", "persistent") => mode = Some(DiskMode::Persistent),
            ("mode", "nonpersistent") => mode = Some(DiskMode::Nonpersistent),
            ("mode", "undoable") => mode = Some(DiskMode::Undoable { keep: false }),
            ("mode", m) => {
                return Err(format!(
                    "unknown drive mode '{m}': use persistent, nonpersistent or undoable"
                ))
            }
            ("undo", "keep") => undo = Some(true),
            ("undo", "discard") => undo = Some(false),
            ("undo", u) => return Err(format!("unknown undo action '{u}': use keep or discard")),
            ("readonly", "on") => read_only = true,
            ("readonly", "off") => read_only = false,
            ("readonly", r) => return Err(format!("readonly={r}: use on or off")),
            (k, _) => {
                return Err(format!(
                    "unknown --drive key '{k}': use file, format, if, mode, undo, readonly"
                ))
            }
        }
    }
    let file = file.ok_or("--drive needs file=PATH")?;
    let mode = match (mode.unwrap_or(DiskMode::Persistent), undo) {
        (DiskMode::Undoable { .. }, Some(keep)) => DiskMode::Undoable { keep },
        (DiskMode::Undoable { .. }, None) => {
            return Err(
                "mode=undoable needs undo=keep or undo=discard (what to do with the \
                guest's writes at power-off)"
                    .into(),
            )
        }
        (_, Some(_)) => return Err("undo= only applies to mode=undoable".into()),
        (m, None) => m,
    };
    if interface == DriveInterface::Cdrom && mode != DiskMode::Persistent {
        return Err("if=cdrom is read-only: mode= does not apply".into());
    }
    // A CD-ROM medium is never written.
    let read_only = read_only || interface == DriveInterface::Cdrom;
    Ok(DriveSpec {
        file,
        format,
        interface,
        mode,
        read_only,
    })
}

/// NIC model of a `--nic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// Intel 82540EM (PCI 8086:100E), driven by Linux's `e1000`.
    E1000,
    /// virtio-net, modern PCI (1AF4:1041), driven by Linux's `virtio_net`.
    Virtio,
}

/// Where a NIC's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackendSpec {
    /// User-mode NAT (like QEMU's `-netdev user`) with its port forwards.
    User(devices::net::user::UserConfig),
    /// The `rinx switch` listening on this loopback UDP address.
    Switch(SocketAddr),
    /// A host TAP interface (Linux).
    Tap(String),
}

/// A `--nic` option: `model=e1000|virtio,net=user|switch:ADDR|tap:NAME[,hostfwd=...][,mac=...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// Device model.
    pub model: NicModel,
    /// Back-end.
    pub net: NetBackendSpec,
    /// Station address; `None` picks a locally administered one (02:...).
    pub mac: Option<devices::net::MacAddr>,
}

/// Parses `XX:XX:XX:XX:XX:XX` (hex, `:` or `-` separated); multicast addresses are refused.
pub fn parse_mac(s: &str) -> Result<devices::net::MacAddr, String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || format!("'{s}' is not a MAC address (e.g. 52:54:00:12:34:56)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s} is a multicast address; a NIC needs a unicast one"
        ));
    }
    Ok(mac)
}

/// Parses `tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (or `udp:`), QEMU's hostfwd syntax.
/// An empty host address means 127.0.0.1; an empty guest address the DHCP address.
pub fn parse_hostfwd(s: &str) -> Result<devices::net::user::HostForward, String> {
    use devices::net::user::{HostForward, Proto};
    use std::net::{IpAddr, Ipv4Addr};
    let usage = || {
        format!(
            "hostfwd '{s}': use tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. tcp::2222-:22"
        )
    };
    let (proto, rest) = match s.split_once(':') {
        Some(("tcp", r)) => (Proto::Tcp, r),
        Some(("udp", r)) => (Proto::Udp, r),
        _ => return Err(usage()),
    };
    let (host, guest) = rest.split_once('-').ok_or_else(usage)?;
    let (haddr, hport) = host.rsplit_once(':').ok_or_else(usage)?;
    let (gaddr, gport) = guest.rsplit_once(':').ok_or_else(usage)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(usage);
    let hip: IpAddr = if haddr.is_empty() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        haddr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| usage())?
    };
    let guest_addr = if gaddr.is_empty() {
        None
    } else {
        Some(gaddr.parse::<Ipv4Addr>().map_err(|_| usage())?)
    };
    Ok(HostForward {
        proto,
        host: SocketAddr::new(hip, port(hport)?),
        guest_addr,
        guest_port: port(gport)?,
    })
}

/// Parses a `--nic` value (see [`NicSpec`]). `hostfwd=` is repeatable and only valid with
/// `net=user`.
pub fn parse_nic(s: &str) -> Result<NicSpec, String> {
    let mut model = None;
    let mut net: Option<&str> = None;
    let mut mac = None;
    let mut fwds = Vec::new();
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "'{part}' in --nic is not key=value (e.g. model=e1000)"
            ));
        };
        match (k, v) {
            ("model", "e1000") => model = Some(NicModel::E1000),
            ("model", "virtio" | "virtio-net") => model = Some(NicModel::Virtio),
            ("model", m) => return Err(format!("unknown NIC model '{m}': use e1000 or virtio")),
            ("net", n) => net = Some(n),
            ("mac", m) => mac = Some(parse_mac(m)?),
            ("hostfwd", f) => fwds.push(parse_hostfwd(f)?),
            (k, _) => {
                return Err(format!(
                    "unknown --nic key '{k}': use model, net, hostfwd, mac"
                ))
            }
        }
    }
    let model = model.ok_or("--nic needs model=e1000 or model=virtio")?;
    let net = match net.ok_or("--nic needs net=user, net=switch:ADDR or net=tap:NAME")? {
        "user" => NetBackendSpec::User(devices::net::user::UserConfig {
            host_forwards: std::mem::take(&mut fwds),
            ..Default::default()
        }),
        n => {
            if let Some(a) = n.strip_prefix("switch:") {
                let addr: SocketAddr = a.parse().map_err(|_| {
                    format!("'{a}' is not an address:port, e.g. switch:127.0.0.1:5555")
                })?;
                if !addr.ip().is_loopback() {
                    return Err(format!(
                        "the switch runs on loopback only; '{}' is not a loopback address",
                        addr.ip()
                    ));
                }
                NetBackendSpec::Switch(addr)
            } else if let Some(t) = n.strip_prefix("tap:") {
                if t.is_empty() || t.len() > 15 {
                    return Err(format!("tap:{t}: interface names are 1-15 bytes"));
                }
                NetBackendSpec::Tap(t.to_string())
            } else {
                return Err(format!(
                    "unknown network back-end '{n}': use user, switch:127.0.0.1:PORT or tap:NAME"
                ));
            }
        }
    };
    if !fwds.is_empty() {
        return Err("hostfwd= only applies to net=user".into());
    }
    Ok(NicSpec { model, net, mac })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("2g"), Ok(2 << 30));
        assert_eq!(parse_memory("65536K"), Ok(64 << 20));
        assert!(parse_memory("0").is_err());
        assert!(parse_memory("12X").is_err());
        assert!(parse_memory("").is_err());
        assert!(parse_memory("99999999999999999999G").is_err());
        assert!(parse_memory("100G").is_err());
    }

    #[test]
    fn serial_specs() {
        assert_eq!(parse_serial("stdio"), Ok(SerialSpec::Stdio));
        assert_eq!(
            parse_serial("file:/tmp/x"),
            Ok(SerialSpec::File("/tmp/x".into()))
        );
        assert!(matches!(
            parse_serial("tcp:127.0.0.1:4444"),
            Ok(SerialSpec::Tcp(_))
        ));
        assert!(parse_serial("tcp:8.8.8.8:53").is_err());
        assert!(parse_serial("pty").is_err());
        assert!(parse_serial("file:").is_err());
    }

    #[test]
    fn nic_specs() {
        use devices::net::user::Proto;
        let n = parse_nic("model=e1000,net=switch:127.0.0.1:5555,mac=52:54:00:aa:bb:cc").unwrap();
        assert_eq!(n.model, NicModel::E1000);
        assert_eq!(
            n.net,
            NetBackendSpec::Switch("127.0.0.1:5555".parse().unwrap())
        );
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]));
        let n = parse_nic(
            "model=virtio,net=user,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:53-10.0.2.15:5353",
        )
        .unwrap();
        let NetBackendSpec::User(u) = n.net else {
            panic!("not user")
        };
        assert_eq!(u.host_forwards.len(), 2);
        assert_eq!(u.host_forwards[0].proto, Proto::Tcp);
        assert_eq!(u.host_forwards[0].host, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(u.host_forwards[0].guest_addr, None);
        assert_eq!(u.host_forwards[0].guest_port, 22);
        assert_eq!(
            u.host_forwards[1].guest_addr,
            Some("10.0.2.15".parse().unwrap())
        );
        assert_eq!(
            parse_nic("model=e1000,net=tap:tap0").unwrap().net,
            NetBackendSpec::Tap("tap0".into())
        );
        for bad in [
            "",
            "model=e1000",
            "net=user",
            "model=rtl8139,net=user",
            "model=e1000,net=switch:10.0.0.1:5",
            "model=e1000,net=switch:nowhere",
            "model=e1000,net=tap:",
            "model=e1000,net=vde",
            "model=e1000,net=switch:127.0.0.1:5,hostfwd=tcp::1-:2",
            "model=e1000,net=user,hostfwd=tcp::0-:22",
            "model=e1000,net=user,hostfwd=sctp::1-:2",
            "model=e1000,net=user,hostfwd=tcp:1-2",
            "model=e1000,net=user,mac=01:00:00:00:00:01",
            "model=e1000,net=user,mac=52:54:00:12:34",
            "model=e1000,net=user,mac=zz:54:00:12:34:56",
            "model=e1000,net=user,speed=10",
        ] {
            assert!(parse_nic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drive_specs() {
        use devices::block::DiskMode;
        let d = parse_drive("file=b.img,if=buslogic").unwrap();
        assert_eq!(d.interface, DriveInterface::BusLogic);
        let d = parse_drive("file=a.img,format=raw,if=virtio-scsi,mode=nonpersistent").unwrap();
        assert_eq!(d.file, PathBuf::from("a.img"));
        assert_eq!(d.mode, DiskMode::Nonpersistent);
        assert!(!d.read_only);
        let d = parse_drive("file=a.img").unwrap();
        assert_eq!(d.mode, DiskMode::Persistent);
        assert_eq!(
            parse_drive("file=a,mode=undoable,undo=keep").unwrap().mode,
            DiskMode::Undoable { keep: true }
        );
        assert!(parse_drive("file=a,readonly=on").unwrap().read_only);
        assert_eq!(
            parse_drive("file=a,format=qcow2").unwrap().format,
            DriveFormat::Qcow2
        );
        let cd = parse_drive("file=x.iso,if=cdrom").unwrap();
        assert_eq!(cd.interface, DriveInterface::Cdrom);
        assert!(cd.read_only);
        assert!(parse_drive("file=x.iso,if=cdrom,mode=nonpersistent").is_err());
        for bad in [
            "",
            "a.img",
            "format=raw",
            "file=",
            "file=a,format=vmdk",
            "file=a,if=ide",
            "file=a,mode=sometimes",
            "file=a,mode=undoable",
            "file=a,undo=keep",
            "file=a,readonly=yes",
            "file=a,cache=none",
        ] {
            assert!(parse_drive(bad).is_err(), "{bad}");
        }
    }
}
