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
}

/// Controller a `--drive` is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveInterface {
    /// virtio-scsi host (PCI), target 0 LUN 0.
    VirtioScsi,
    /// BusLogic BT-958 PCI SCSI host adapter (Linux `BusLogic` driver); every such drive is
    /// a target on one adapter, SCSI IDs 0-6 in command-line order.
    BusLogic,
}

/// A `--drive` option: `file=PATH[,format=raw][,if=virtio-scsi|buslogic][,mode=...][,undo=...][,readonly=on]`.
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
            ("format", "qcow2") => {
                return Err("format=qcow2 is not supported yet; convert with \
                    `qemu-img convert -O raw IN.qcow2 OUT.img`"
                    .into())
            }
            ("format", f) => return Err(format!("unknown drive format '{f}': use raw")),
            ("if", "virtio-scsi") => interface = DriveInterface::VirtioScsi,
            ("if", "buslogic") => interface = DriveInterface::BusLogic,
            ("if", i) => {
                return Err(format!(
                    "unknown drive interface '{i}': use virtio-scsi or buslogic"
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
    Ok(DriveSpec {
        file,
        format,
        interface,
        mode,
        read_only,
    })
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
        for bad in [
            "",
            "a.img",
            "format=raw",
            "file=",
            "file=a,format=vmdk",
            "file=a,format=qcow2",
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
