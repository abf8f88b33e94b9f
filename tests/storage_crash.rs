//! Crash safety of the disk back-ends and disk modes: a child process drives the real device
//! stack (`devices::block::open` + the SCSI disk target executing WRITE(10) with FUA and
//! SYNCHRONIZE CACHE CDBs, then the power-off that commits or drops an overlay) and the test
//! SIGKILLs it at a random moment, 20 times per mode, checking after every kill:
//!
//! * nonpersistent and undoable,undo=discard: the base image is byte-identical;
//! * undoable,undo=keep (raw and qcow2): after the next open's journal recovery the image holds
//!   all of the killed session's writes or none of them (the commit is atomic);
//! * persistent (raw and qcow2): every 4 KiB block holds its old or its new content, never
//!   anything else, and a qcow2 image passes `qemu-img check` (leaked clusters allowed, they
//!   are harmless; corruption is not).
//!
//! A kill of rinx during a guest's writes reaches the back-ends through exactly these calls, so
//! this loop covers many more kill points per second than booting a guest for each kill;
//! tests/crash_linux.rs does the latter (the `rinx` binary, Debian, ext4). Unix only (SIGKILL).

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devices::block::{open, recover_commit, DiskMode, ImageFormat};
use devices::scsi::{ScsiDisk, Status};

const BLOCK: usize = 4096;
const IMAGE_BLOCKS: usize = 1024; // 4 MiB
const WRITES_PER_SESSION: usize = 384;
const KILLS: usize = 20;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rinx-crash-{}-{name}", std::process::id()))
}

/// The blocks session `s` writes (deterministic), each filled with byte `s + 1`.
fn session_blocks(s: usize) -> Vec<usize> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (s as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1);
    (0..WRITES_PER_SESSION)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % IMAGE_BLOCKS as u64) as usize
        })
        .collect()
}

fn parse_mode(m: &str) -> DiskMode {
    match m {
        "persistent" => DiskMode::Persistent,
        "nonpersistent" => DiskMode::Nonpersistent,
        "keep" => DiskMode::Undoable { keep: true },
        _ => DiskMode::Undoable { keep: false },
    }
}

fn parse_format(f: &str) -> ImageFormat {
    if f == "qcow2" {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    }
}

/// The child: one guest session of writes, then power-off. Does nothing unless started by
/// [`crash_loop`] (it is `#[ignore]`d so that a plain test run skips it).
#[test]
#[ignore]
fn crash_child() {
    let Ok(spec) = std::env::var("RINX_CRASH_CHILD") else {
        return;
    };
    let v: Vec<&str> = spec.split(',').collect();
    let (img, format, mode, session) = (
        Path::new(v[0]),
        parse_format(v[1]),
        parse_mode(v[2]),
        v[3].parse::<usize>().unwrap(),
    );
    let backend = open(img, format, mode, false).expect("open");
    let mut disk = ScsiDisk::new(backend, "CRASH");
    let data = vec![session as u8 + 1; BLOCK];
    for (i, b) in session_blocks(session).into_iter().enumerate() {
        let lba = (b * BLOCK / 512) as u32;
        let l = lba.to_be_bytes();
        // WRITE(10), FUA, 8 blocks of 512 bytes.
        let cdb = [0x2a, 0x08, l[0], l[1], l[2], l[3], 0, 0, 8, 0];
        assert_eq!(disk.execute(&cdb, &data, 0).status, Status::Good);
        if i % 64 == 63 {
            // SYNCHRONIZE CACHE(10), whole disk.
            let r = disk.execute(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);
            assert_eq!(r.status, Status::Good);
        }
    }
    disk.backend_mut().power_off().expect("power off");
    println!("SESSION-DONE");
}

fn run_child(img: &Path, format: &str, mode: &str, session: usize, kill_after: Option<Duration>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            "RINX_CRASH_CHILD",
            format!("{},{format},{mode},{session}", img.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match kill_after {
        Some(d) => {
            std::thread::sleep(d);
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        None => {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            assert!(String::from_utf8_lossy(&out.stdout).contains("SESSION-DONE"));
        }
    }
}

/// Logical contents of `img` (qcow2 through the same back-end, after journal recovery).
fn contents(img: &Path, format: ImageFormat) -> Vec<u8> {
    recover_commit(img, format).expect("journal recovery");
    let mut d = devices::block::open_image(img, format, true).unwrap();
    let mut v = vec![0u8; IMAGE_BLOCKS * BLOCK];
    d.read_at(0, &mut v).unwrap();
    v
}

fn apply(prev: &[u8], session: usize) -> Vec<u8> {
    let mut v = prev.to_vec();
    for b in session_blocks(session) {
        v[b * BLOCK..(b + 1) * BLOCK].fill(session as u8 + 1);
    }
    v
}

fn make_image(img: &Path, format: &str) -> bool {
    let _ = std::fs::remove_file(img);
    if format == "qcow2" {
        match Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(img)
            .arg(format!("{}", IMAGE_BLOCKS * BLOCK))
            .status()
        {
            Ok(s) if s.success() => true,
            _ => {
                eprintln!("NOTE: qemu-img not found: qcow2 crash loop NOT run");
                false
            }
        }
    } else {
        std::fs::write(img, vec![0u8; IMAGE_BLOCKS * BLOCK]).unwrap();
        true
    }
}

fn qemu_img_check(img: &Path) {
    let out = Command::new("qemu-img")
        .arg("check")
        .arg(img)
        .output()
        .unwrap();
    // 0: clean; 3: leaked clusters only (harmless). 2 = corruption.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "qemu-img check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn crash_loop() {
    let kills: usize = std::env::var("RINX_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for (format, mode) in [
        ("raw", "nonpersistent"),
        ("raw", "discard"),
        ("raw", "keep"),
        ("raw", "persistent"),
        ("qcow2", "nonpersistent"),
        ("qcow2", "keep"),
        ("qcow2", "persistent"),
    ] {
        let img = tmp(&format!("{format}-{mode}.img"));
        if !make_image(&img, format) {
            continue;
        }
        let fmt = parse_format(format);
        // One full session timed: kills land anywhere in 0..1.2x that span, so in the
        // writes, in the commit and (sometimes) after it.
        let t0 = Instant::now();
        run_child(&img, format, mode, 0, None);
        let span = t0.elapsed();
        let mut prev = contents(&img, fmt);
        let base_file = std::fs::read(&img).unwrap();
        let (mut whole, mut none) = (0, 0);
        for k in 1..=kills {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = span.mul_f64((rng % 1200) as f64 / 1000.0);
            run_child(&img, format, mode, k, Some(at));
            let now = contents(&img, fmt);
            match mode {
                "nonpersistent" | "discard" => {
                    assert_eq!(
                        std::fs::read(&img).unwrap(),
                        base_file,
                        "{format} {mode}: base changed after kill {k}"
                    );
                }
                "keep" => {
                    let next = apply(&prev, k);
                    if now == next {
                        whole += 1;
                    } else if now == prev {
                        none += 1;
                    } else {
                        panic!("{format} keep: kill {k} left a partial commit");
                    }
                }
                _ => {
                    let next = apply(&prev, k);
                    for b in 0..IMAGE_BLOCKS {
                        let r = b * BLOCK..(b + 1) * BLOCK;
                        assert!(
                            now[r.clone()] == prev[r.clone()] || now[r.clone()] == next[r.clone()],
                            "{format} persistent: block {b} torn after kill {k}"
                        );
                    }
                }
            }
            if format == "qcow2" {
                qemu_img_check(&img);
            }
            prev = now;
        }
        eprintln!(
            "{format} {mode}: {kills} kills survived (session {:.0} ms{})",
            span.as_secs_f64() * 1000.0,
            if mode == "keep" {
                format!("; commits whole {whole}, none {none}")
            } else {
                String::new()
            }
        );
        let _ = std::fs::remove_file(&img);
        let _ = std::fs::remove_file(devices::block::journal_path(&img));
    }
}
