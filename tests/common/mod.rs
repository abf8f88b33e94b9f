//! Helpers shared by the integration tests that boot Linux guests (each test binary includes
//! this module with `mod common;` and uses what it needs).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// A cpio archive in the "newc" format the kernel's initramfs unpacker reads, holding regular
/// files (mode 0755) at the root, with the TRAILER!!! entry (Linux
/// Documentation/driver-api/early-userspace/buffer-format.rst).
pub fn cpio_newc(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut o = Vec::new();
    let pad = |o: &mut Vec<u8>| {
        while o.len() % 4 != 0 {
            o.push(0);
        }
    };
    let entries =
        files
            .iter()
            .map(|(n, d)| (*n, *d, 0o100755u32))
            .chain([("TRAILER!!!", &[][..], 0u32)]);
    for (ino, (name, data, mode)) in entries.enumerate() {
        let fields = [
            ino as u32 + 1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        o.extend_from_slice(b"070701");
        for f in fields {
            o.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        o.extend_from_slice(name.as_bytes());
        o.push(0);
        pad(&mut o);
        o.extend_from_slice(data);
        pad(&mut o);
    }
    o
}

/// SHA-256 of `data` in lower-case hex, computed by the host's `sha256sum` (coreutils), so the
/// tests compare against an implementation independent of rinx.
pub fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum on the host");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // A write error means sha256sum died; its exit status below says so.
        let _ = stdin.write_all(data);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sha256sum failed");
    first_word(&out.stdout)
}

/// SHA-256 of the file at `path` (host `sha256sum`).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum on the host");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    first_word(&out.stdout)
}

fn first_word(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
