//! SIGKILL of the real `rinx` binary while a Debian 12 amd64 guest writes to its disks, 20
//! times in a loop (`RINX_CRASH_KILLS` overrides the count). Every boot attaches three ext4
//! images made by mkfs.ext4 through virtio-scsi:
//!
//! * `nonpersistent` (raw): after every kill the image file is byte-identical to the original;
//! * `keep` (raw, `mode=undoable,undo=keep`): after every kill (and the journal recovery the
//!   next `rinx` run would do) the image is either exactly what it was before the killed
//!   session, or the killed session's whole commit: `e2fsck -fn` clean and `/out.bin` holding
//!   that session's data. Never anything in between;
//! * `qcow2` (persistent): `qemu-img check` finds no corruption (leaked clusters are harmless)
//!   and the file system, after ext4's journal replay by `e2fsck -fy` on a copy, has no
//!   uncorrected errors; the guest mounts it again on the next boot.
//!
//! The first session runs to its end (all three disks written, synced, powered off) and times
//! the guest's write phase on the host clock; each later session is SIGKILLed at a random
//! moment: odd ones within that span after the guest's "writing" marker (its writes and
//! syncs), even ones once the undoable disk's commit journal appears at power-off, within 1.2x
//! the first session's commit time (so in the middle of the commit, or just after it).
//!
//! tests/storage_crash.rs runs the same checks far faster (a child driving the disk stack
//! directly, 20 kills per mode, in `cargo test`); this group is the end-to-end proof with a
//! real guest and the real binary. Slow (20 Linux boots): ignored by default,
//!
//! ```sh
//! RINX_ENGINE=jit cargo test --release --test crash_linux -- --ignored --nocapture
//! ```

#![cfg(unix)]

mod common;

use common::{cpio_newc, sha256, sha256_file};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devices::block::{journal_path, recover_commit, ImageFormat};

const KILLS: usize = 20;
/// Bytes the guest writes to each disk per session.
const WRITE_BYTES: usize = 6 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rinx-crashlinux-{}-{name}", std::process::id()))
}

fn engine() -> String {
    std::env::var("RINX_ENGINE").unwrap_or_else(|_| "interp".into())
}

/// Wall-clock limit of one boot (`RINX_BOOT_TIMEOUT_S` overrides it).
fn boot_timeout() -> Duration {
    std::env::var("RINX_BOOT_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(15 * 60), Duration::from_secs)
}

/// What session `k` writes to `/out.bin` on every disk.
fn session_data(k: usize) -> Vec<u8> {
    format!("rinx-crash-session-{k}\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(WRITE_BYTES)
        .collect()
}

/// The guest script of session `k`: load the storage modules, then for each disk (found by
/// its `/which` file) write `/out.bin` in 1 MiB pieces with an fsync every 4 MiB, sync,
/// unmount; then power off (which commits the undoable disk).
fn script(k: usize) -> String {
    format!(
        r#"for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
i=0; while [ ! -b /dev/sdc ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
mkdir -p /m
echo "=== writing"
for d in /dev/sda /dev/sdb /dev/sdc; do
  mount -t ext4 $d /m || {{ echo "mount $d failed"; continue; }}
  n=$(cat /m/which)
  rm -f /m/out.bin
  yes rinx-crash-session-{k} | head -c {WRITE_BYTES} > /tmp/out.bin
  dd if=/tmp/out.bin of=/m/out.bin bs=1M conv=fsync 2>/dev/null
  sync; sha256sum /m/out.bin; echo "=== wrote-$n"
  umount /m || echo "umount failed"
done
rm -f /tmp/out.bin
echo "=== end"
"#
    )
}

/// A 64 MiB ext4 image holding `/which` = `name`.
fn make_image(name: &str) -> PathBuf {
    let dir = tmp(&format!("{name}-root"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("which"), format!("{name}\n")).unwrap();
    let img = tmp(&format!("{name}.img"));
    let _ = std::fs::remove_file(&img);
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&dir)
        .arg(&img)
        .arg("64M")
        .status()
        .expect("mkfs.ext4 (apt-get install e2fsprogs)");
    assert!(st.success(), "mkfs.ext4 failed");
    std::fs::remove_dir_all(&dir).unwrap();
    img
}

fn to_qcow2(img: &Path) -> PathBuf {
    let q = img.with_extension("qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(img)
        .arg(&q)
        .status()
        .expect("qemu-img (apt-get install qemu-utils)");
    assert!(st.success(), "qemu-img convert failed");
    std::fs::remove_file(img).unwrap();
    q
}

struct Disks {
    nonpersistent: PathBuf,
    keep: PathBuf,
    qcow2: PathBuf,
}

/// Starts session `k`; the serial console goes to the returned log file.
fn start(d: &Disks, k: usize) -> (Child, PathBuf, PathBuf) {
    let cache = repo().join("guest-cache/amd64");
    if !cache.join("storage-modules.cpio").is_file() {
        let st = Command::new("bash")
            .arg(repo().join("scripts/guest-images.sh"))
            .status()
            .expect("run scripts/guest-images.sh");
        assert!(st.success(), "scripts/guest-images.sh failed");
    }
    let mut initrd = std::fs::read(cache.join("initrd.img")).unwrap();
    initrd.extend(std::fs::read(cache.join("storage-modules.cpio")).unwrap());
    initrd.extend(cpio_newc(&[("rinx-crash.sh", script(k).as_bytes())]));
    let initrd_path = tmp("initrd.img");
    std::fs::write(&initrd_path, initrd).unwrap();
    let log = tmp("serial.log");
    let _ = std::fs::remove_file(&log);
    let drives = [
        format!(
            "file={},format=raw,if=virtio-scsi,mode=nonpersistent",
            d.nonpersistent.display()
        ),
        format!(
            "file={},format=raw,if=virtio-scsi,mode=undoable,undo=keep",
            d.keep.display()
        ),
        format!(
            "file={},format=qcow2,if=virtio-scsi,mode=persistent",
            d.qcow2.display()
        ),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(["run", "--memory", "512M", "--engine", &engine()])
        .args(drives.iter().flat_map(|d| ["--drive", d.as_str()]))
        .arg("--kernel")
        .arg(cache.join("vmlinuz"))
        .arg("--initrd")
        .arg(&initrd_path)
        .args([
            "--append",
            "console=ttyS0 panic=-1 loglevel=4 rinx.script=/rinx-crash.sh",
        ])
        .arg("--serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rinx");
    (child, log, initrd_path)
}

fn read_log(log: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).replace("\r\n", "\n")
}

/// Waits until the serial log holds `marker` (Ok: time it appeared) or the process exits /
/// the boot times out (Err: why).
fn wait_marker(
    child: &mut Child,
    log: &Path,
    marker: &str,
    t0: Instant,
) -> Result<Instant, String> {
    loop {
        if read_log(log).contains(marker) {
            return Ok(Instant::now());
        }
        if let Some(st) = child.try_wait().unwrap() {
            return Err(format!("rinx exited ({st}) before {marker:?}"));
        }
        if t0.elapsed() > boot_timeout() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no {marker:?} within {:?}", boot_timeout()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the undoable disk's commit journal (`IMAGE.rinx-commit-tmp` or
/// `IMAGE.rinx-commit`) to appear: the power-off commit has started. `None` if rinx exited
/// first (the commit was too quick to see, or there was none).
fn wait_commit(child: &mut Child, keep: &Path) -> Option<Instant> {
    let j = journal_path(keep);
    let tmp = j.with_extension("rinx-commit-tmp");
    loop {
        if tmp.exists() || j.exists() {
            return Some(Instant::now());
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn e2fsck(img: &Path, args: &str) -> (Option<i32>, String) {
    let out = Command::new("e2fsck")
        .arg(args)
        .arg(img)
        .output()
        .expect("e2fsck");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn debugfs_cat(img: &Path, file: &str) -> Vec<u8> {
    Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(img)
        .stderr(Stdio::null())
        .output()
        .expect("debugfs")
        .stdout
}

/// The persistent qcow2 disk after a kill: no qcow2 corruption, and after ext4's journal
/// replay (e2fsck -fy on a raw copy) no uncorrected file-system errors.
fn check_qcow2(q: &Path, k: usize) {
    let out = Command::new("qemu-img")
        .arg("check")
        .arg(q)
        .output()
        .unwrap();
    // 0: clean; 3: leaked clusters only (harmless). 2: corruption.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "kill {k}: qemu-img check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let raw = tmp("qcow2-check.img");
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
        .arg(q)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success(), "kill {k}: qemu-img convert failed");
    let (code, text) = e2fsck(&raw, "-fy");
    let _ = std::fs::remove_file(&raw);
    // e2fsck exit status: 0 clean, 1 errors corrected (journal replay); 4 and up: uncorrected.
    assert!(
        matches!(code, Some(0) | Some(1)),
        "kill {k}: e2fsck -fy of the persistent qcow2 disk: {code:?}\n{text}"
    );
}

#[test]
#[ignore = "boots Linux 21 times (many minutes); run with --ignored"]
fn sigkill_during_guest_writes() {
    let kills: usize = std::env::var("RINX_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS);
    let d = Disks {
        nonpersistent: make_image("nonpersistent"),
        keep: make_image("keep"),
        qcow2: to_qcow2(&make_image("qcow2")),
    };
    let np_sha = sha256_file(&d.nonpersistent);

    // Session 0 runs to its end and times the phase the kills aim at.
    let t0 = Instant::now();
    let (mut child, log, initrd) = start(&d, 0);
    let w = wait_marker(&mut child, &log, "=== writing", t0).unwrap_or_else(|e| {
        panic!("session 0: {e}\n{}", read_log(&log));
    });
    wait_marker(&mut child, &log, "=== end", t0).unwrap_or_else(|e| {
        panic!("session 0: {e}\n{}", read_log(&log));
    });
    let c0 = wait_commit(&mut child, &d.keep);
    let st = child.wait().unwrap();
    let span = w.elapsed();
    // How long the undoable commit ran (journal file seen to process exit), at least 1 ms.
    let commit = c0
        .map_or(Duration::ZERO, |c| c.elapsed())
        .max(Duration::from_millis(1));
    let text = read_log(&log);
    assert!(
        st.success() && text.contains("=== end") && text.contains("=== wrote-keep"),
        "session 0: {st}\n{text}"
    );
    assert!(
        !text.contains("mount /dev"),
        "session 0: mount failed\n{text}"
    );
    let want = sha256(&session_data(0));
    assert_eq!(
        text.matches(&want).count(),
        3,
        "session 0: the guest's sha256 of /out.bin\n{text}"
    );
    assert_eq!(sha256_file(&d.nonpersistent), np_sha);
    let (code, out) = e2fsck(&d.keep, "-fn");
    assert_eq!(code, Some(0), "session 0: keep disk not clean\n{out}");
    assert_eq!(debugfs_cat(&d.keep, "/out.bin"), session_data(0));
    check_qcow2(&d.qcow2, 0);
    eprintln!(
        "crash_linux ({}): session 0 took {:.1} s ({:.1} s from the writing marker to exit, \
         undoable commit {:.1} ms)",
        engine(),
        t0.elapsed().as_secs_f64(),
        span.as_secs_f64(),
        commit.as_secs_f64() * 1000.0
    );

    let mut keep_sha = sha256_file(&d.keep);
    let (mut whole, mut none) = (0, 0);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for k in 1..=kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Odd kills aim at the guest's writes, even ones at the power-off (the undoable
        // commit), each from its own marker so that host load cannot shift them all into
        // one phase.
        let (marker, at) = if k % 2 == 1 {
            ("=== writing", span.mul_f64((rng % 1000) as f64 / 1000.0))
        } else {
            ("commit", commit.mul_f64((rng % 1200) as f64 / 1000.0))
        };
        let t0 = Instant::now();
        let (mut child, log, _) = start(&d, k);
        let w = if k % 2 == 1 {
            wait_marker(&mut child, &log, marker, t0)
        } else {
            wait_marker(&mut child, &log, "=== end", t0)
                .map(|_| wait_commit(&mut child, &d.keep).unwrap_or_else(Instant::now))
        }
        .unwrap_or_else(|e| panic!("session {k}: {e}\n{}", read_log(&log)));
        while w.elapsed() < at {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = child.kill(); // SIGKILL
        let st = child.wait().unwrap();
        let text = read_log(&log);
        let progress = ["nonpersistent", "keep", "qcow2"]
            .iter()
            .filter(|n| text.contains(&format!("=== wrote-{n}")))
            .count();

        // What the next `rinx` run does first: finish or drop an interrupted commit.
        recover_commit(&d.keep, ImageFormat::Raw).expect("journal recovery");
        assert!(
            !journal_path(&d.keep).exists(),
            "kill {k}: journal left behind"
        );
        assert_eq!(
            sha256_file(&d.nonpersistent),
            np_sha,
            "kill {k}: the nonpersistent image changed"
        );
        let now = sha256_file(&d.keep);
        let outcome = if now == keep_sha {
            none += 1;
            "none"
        } else {
            let (code, out) = e2fsck(&d.keep, "-fn");
            assert_eq!(
                code,
                Some(0),
                "kill {k}: the undoable image changed but is not a clean commit\n{out}"
            );
            assert_eq!(
                debugfs_cat(&d.keep, "/out.bin"),
                session_data(k),
                "kill {k}: the undoable image changed but does not hold session {k}'s writes"
            );
            keep_sha = now;
            whole += 1;
            "whole"
        };
        check_qcow2(&d.qcow2, k);
        eprintln!(
            "kill {k}: {:.2} s after {marker:?} ({}; {progress}/3 disks written), \
             undoable commit {outcome}",
            at.as_secs_f64(),
            if st.success() { "had exited" } else { "killed" },
        );
        let _ = std::fs::remove_file(&log);
    }
    eprintln!(
        "crash_linux: {kills} kills; undoable commits whole {whole}, none {none}; no corruption"
    );
    let _ = std::fs::remove_file(&initrd);
    for p in [&d.nonpersistent, &d.keep, &d.qcow2] {
        let _ = std::fs::remove_file(p);
    }
}
