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
}
