//! End-to-end test of the BusLogic BT-958 HBA on Debian 12's amd64 kernel: the host makes two
//! ext4 images with mkfs.ext4, each holding a file; they are targets 0 and 1 of one BusLogic
//! adapter (`--drive ...,if=buslogic`). The guest loads the in-tree `BusLogic` driver, sd_mod and
//! ext4 (modules from the same kernel package, `guest-cache/amd64/hba-modules.cpio` appended to
//! the initramfs), mounts both disks, checks each file's sha256, writes 64 MiB to the first
//! (8 MiB to the second), syncs, measures dd throughput and powers off; the host's `e2fsck -fn`
//! must be clean and `debugfs` must read the written files back.
//!
//! The same boot has an e1000 NIC (user networking) in slot 16, whose INTA# shares PIRQD# with
//! the adapter's (slot 12): the guest pings the NAT gateway in the background while it writes
//! to the disks, and its /proc/interrupts must show both devices on one IRQ, each with
//! interrupts, with every ping answered (the shared line is a wired-OR, `devices::irq`).
//!
//! Slow (a Linux boot) and needs e2fsprogs on the host: ignored by default,
//!
//! ```sh
//! RINX_ENGINE=jit cargo test --release --test boot_hba -- --ignored --test-threads 1 --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// Size of the file the guest writes to the persistent disk (the others get 8 MiB).
const WRITE_BYTES: usize = 64 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A cpio archive in the "newc" format the kernel's initramfs unpacker reads, holding regular
/// files (mode 0755) at the root, with the TRAILER!!! entry.
fn cpio_newc(files: &[(&str, &[u8])]) -> Vec<u8> {
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

fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum on the host");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rinx-hba-{}-{name}", std::process::id()))
}

/// 1 MiB of xorshift bytes: the file mkfs.ext4 puts in the image.
fn data_file() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn written_file(name: &str) -> Vec<u8> {
    let n = if name == "persistent" {
        WRITE_BYTES
    } else {
        8 << 20
    };
    b"rinx-storage\n".iter().copied().cycle().take(n).collect()
}

/// An ext4 image holding /data.bin and /which (its name); 128 MiB for the persistent disk,
/// which receives 64 MiB, else 64 MiB.
fn make_image(name: &str) -> PathBuf {
    let dir = tmp(&format!("{name}-root"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.bin"), data_file()).unwrap();
    std::fs::write(dir.join("which"), format!("{name}\n")).unwrap();
    let img = tmp(&format!("{name}.img"));
    let _ = std::fs::remove_file(&img);
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&dir)
        .arg(&img)
        .arg(if name == "persistent" { "128M" } else { "64M" })
        .status()
        .expect("mkfs.ext4 (apt-get install e2fsprogs)");
    assert!(st.success(), "mkfs.ext4 failed");
    std::fs::remove_dir_all(&dir).unwrap();
    img
}

/// Drives in the order they are attached; each image holds `/which` with its name, so the
/// guest finds out which /dev/sdX is which (probe order is not fixed).
const DRIVES: [&str; 2] = ["persistent", "second"];

const SCRIPT: &str = r#"for m in $(cat /lib/hba-modules/order); do insmod /lib/hba-modules/$m.ko || echo "insmod $m failed"; done
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
i=0; while [ ! -b /dev/sdb ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
IF=""; for d in /sys/class/net/*; do [ "$(cat $d/address)" = NIC_MAC ] && IF=${d##*/}; done
echo "=== nic"; echo "if $IF"
ip addr add 10.0.2.15/24 dev $IF; ip link set $IF up
ping -c PINGS 10.0.2.2 > /tmp/ping.txt 2>&1 &
echo "=== hosts"; cat /sys/class/scsi_host/host*/proc_name; ls /sys/bus/scsi/devices/
mkdir -p /m
for d in /dev/sda /dev/sdb; do
  mount -t ext4 $d /m || { echo "mount $d failed"; continue; }
  n=$(cat /m/which)
  echo "=== disk-$n"; cat /sys/block/${d#/dev/}/size /sys/block/${d#/dev/}/device/vendor; readlink /sys/block/${d#/dev/}/device
  echo "=== sha-$n"; sha256sum /m/data.bin
  if [ "$n" = persistent ]; then c=67108864; else c=8388608; fi
  echo "=== write-$n"; yes rinx-storage | head -c $c > /m/out.bin; sync; sha256sum /m/out.bin
  if [ "$n" = persistent ]; then
    echo "=== ddw"; a=$(cut -d" " -f1 /proc/uptime); dd if=/dev/zero of=/m/zero.bin bs=1M count=16 conv=fsync 2>/dev/null; echo "16 $a $(cut -d" " -f1 /proc/uptime)"
    rm /m/zero.bin
    echo 3 > /proc/sys/vm/drop_caches
    echo "=== ddr"; a=$(cut -d" " -f1 /proc/uptime); dd if=$d of=/dev/null bs=1M count=32 2>/dev/null; echo "32 $a $(cut -d" " -f1 /proc/uptime)"
  fi
  umount /m || echo "umount failed"
done
wait
echo "=== ping"; echo "replies $(grep -c 'bytes from 10.0.2.2' /tmp/ping.txt)"
echo "=== interrupts"; cat /proc/interrupts
echo "=== dmesg"; dmesg | grep -iE "buslogic|scsi|sd[a-b]|ext4|error|fail|warn"
echo "=== end"
"#;

/// MAC of the e1000 sharing PIRQD# with the adapter; pings it sends during the disk writes.
const NIC_MAC: &str = "52:54:00:12:34:01";
const PINGS: usize = 20;

struct Boot {
    status: Option<i32>,
    log: String,
    wall: Duration,
}

/// `RINX_ENGINE` (interp / jit), as in tests/boot_linux.rs.
fn engine() -> String {
    std::env::var("RINX_ENGINE").unwrap_or_else(|_| "interp".into())
}

fn boot(drives: &[String]) -> Boot {
    let cache = repo().join("guest-cache/amd64");
    if !cache.join("hba-modules.cpio").is_file() || !cache.join("net-modules.cpio").is_file() {
        let st = Command::new("bash")
            .arg(repo().join("scripts/guest-images.sh"))
            .status()
            .expect("run scripts/guest-images.sh");
        assert!(st.success(), "scripts/guest-images.sh failed");
    }
    // The kernel unpacks concatenated cpio archives in order.
    let mut initrd = std::fs::read(cache.join("initrd.img")).unwrap();
    initrd.extend(std::fs::read(cache.join("hba-modules.cpio")).unwrap());
    initrd.extend(std::fs::read(cache.join("net-modules.cpio")).unwrap());
    let script = SCRIPT
        .replace("NIC_MAC", NIC_MAC)
        .replace("PINGS", &PINGS.to_string());
    initrd.extend(cpio_newc(&[("rinx-hba.sh", script.as_bytes())]));
    let initrd_path = tmp("initrd.img");
    std::fs::write(&initrd_path, initrd).unwrap();
    let log_path = tmp("serial.log");
    let _ = std::fs::remove_file(&log_path);
    // No pci=noacpi: Linux finds the adapter through the DSDT's PCI root bridge and routes its
    // INTA# as the _PRT says.
    // The script is /rinx-hba.sh in the initramfs (too long for the command line).
    let append = "console=ttyS0 panic=-1 rinx.script=/rinx-hba.sh".to_string();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(["run", "--memory", "512M", "--engine", &engine()])
        .args(drives.iter().flat_map(|d| ["--drive", d.as_str()]))
        .arg("--nic")
        .arg(format!("model=e1000,net=user,mac={NIC_MAC}"))
        .arg("--kernel")
        .arg(cache.join("vmlinuz"))
        .arg("--initrd")
        .arg(&initrd_path)
        .arg("--append")
        .arg(&append)
        .arg("--serial")
        .arg(format!("file:{}", log_path.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start rinx");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let wall = start.elapsed();
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default())
        .replace("\r\n", "\n");
    let _ = std::fs::remove_file(&initrd_path);
    let _ = std::fs::remove_file(&log_path);
    Boot { status, log, wall }
}

fn section<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let start = log.find(&format!("=== {name}\n"))? + name.len() + 5;
    let rest = &log[start..];
    let end = rest.find("\n=== ").map(|e| e + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn guest_checks(b: &Boot, name: &str) -> Result<(), String> {
    if b.status != Some(0) {
        return Err(format!("exit status {:?} (expected 0)", b.status));
    }
    let disk = section(&b.log, &format!("disk-{name}")).ok_or(format!("no disk-{name}"))?;
    if !disk.contains("RINX") {
        return Err(format!("disk-{name}: {disk:?}"));
    }
    let sha = section(&b.log, &format!("sha-{name}")).ok_or(format!("no sha-{name}"))?;
    let want = sha256(&data_file());
    if !sha.contains(&want) {
        return Err(format!("{name}: guest sha256 {sha:?}, host {want}"));
    }
    let w = section(&b.log, &format!("write-{name}")).ok_or(format!("no write-{name}"))?;
    let want = sha256(&written_file(name));
    if !w.contains(&want) {
        return Err(format!("{name}: written sha256 {w:?}, expected {want}"));
    }
    if b.log.contains("mount /dev") || b.log.contains("umount failed") {
        return Err("mount/umount failed".into());
    }
    Ok(())
}

/// Prints the guest's dd throughput: each dd section starts with "MIB START END" (guest
/// uptime, which follows the host clock); kernel console lines may follow.
fn report(name: &str, b: &Boot) {
    eprintln!(
        "{name}: exit {:?} after {:.0} s",
        b.status,
        b.wall.as_secs_f64()
    );
    for (s, what) in [
        ("ddw", "write 16 MiB + fsync to ext4"),
        ("ddr", "read 32 MiB from /dev/sda"),
    ] {
        let Some(t) = section(&b.log, s) else {
            continue;
        };
        let v: Vec<f64> = t
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [mib, a, z] = v[..] {
            eprintln!(
                "{name}: guest dd {what}: {:.2} s, {:.2} MB/s",
                z - a,
                mib * 1.048_576 / (z - a).max(0.01)
            );
        }
    }
}

/// The NIC shares its IRQ with the adapter and both took interrupts: the /proc/interrupts
/// line naming the NIC's interface also names the BusLogic adapter, its per-CPU counts sum to
/// more than zero, and every ping was answered.
fn shared_irq_checks(b: &Boot) -> Result<(), String> {
    let nic = section(&b.log, "nic").ok_or("no nic section")?;
    let iface = nic
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("if "))
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or(format!("no e1000 interface: {nic:?}"))?;
    let ints = section(&b.log, "interrupts").ok_or("no interrupts section")?;
    let line = ints
        .lines()
        .find(|l| l.split([' ', ',']).any(|w| w == iface))
        .ok_or(format!("{iface} not in /proc/interrupts:\n{ints}"))?;
    if !line.contains("BT-958") && !line.contains("BusLogic") {
        return Err(format!(
            "{iface} does not share the adapter's IRQ: {line:?}"
        ));
    }
    let count: u64 = line
        .split_whitespace()
        .skip(1)
        .map_while(|w| w.parse::<u64>().ok())
        .sum();
    if count == 0 {
        return Err(format!("no interrupts on the shared line: {line:?}"));
    }
    let ping = section(&b.log, "ping").ok_or("no ping section")?;
    let want = format!("replies {PINGS}");
    if !ping.contains(&want) {
        return Err(format!(
            "ping over the shared line: {ping:?}, want {want:?}"
        ));
    }
    eprintln!("shared IRQ: {}", line.trim());
    Ok(())
}

fn e2fsck_clean(img: &Path) -> Result<(), String> {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .expect("e2fsck");
    if !out.status.success() {
        return Err(format!(
            "e2fsck -fn: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(())
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

/// The image must be clean for e2fsck and hold the guest's /out.bin.
fn committed(img: &Path, name: &str) -> Result<(), String> {
    e2fsck_clean(img)?;
    let got = debugfs_cat(img, "/out.bin");
    if got == written_file(name) {
        Ok(())
    } else {
        Err(format!(
            "{name}: debugfs /out.bin: {} bytes, differs",
            got.len()
        ))
    }
}

/// One boot, two disks as targets 0 and 1 of one BusLogic adapter: both mounted and read,
/// written (64 MiB to the first), e2fsck clean and the written files readable on the host.
#[test]
#[ignore = "boots Linux (minutes); run with --ignored"]
fn buslogic_ext4_two_targets() {
    let imgs: Vec<PathBuf> = DRIVES.iter().map(|n| make_image(n)).collect();
    let drives: Vec<String> = imgs
        .iter()
        .map(|i| format!("file={},format=raw,if=buslogic", i.display()))
        .collect();
    let b = boot(&drives);
    eprintln!("boot_hba ({}): BusLogic, two targets", engine());
    report("persistent", &b);
    let mut res = Ok(());
    for (i, name) in DRIVES.iter().enumerate() {
        let r = guest_checks(&b, name).and_then(|()| committed(&imgs[i], name));
        if let (Ok(()), Err(e)) = (&res, r) {
            res = Err(e);
        }
    }
    if res.is_ok() {
        res = shared_irq_checks(&b);
    }
    if res.is_ok() && !b.log.contains("BusLogic BT-958 Initialized Successfully") {
        res = Err("the BusLogic driver did not initialize the adapter".into());
    }
    // One initialization only (a second one is the SCSI error handler resetting the adapter),
    // and no completion the driver could not match to an active CCB. Only the console part
    // counts: the script's dmesg section repeats the kernel lines.
    let console = b.log.split("=== dmesg").next().unwrap_or("");
    if res.is_ok() && console.matches("Initialized Successfully").count() != 1 {
        res = Err("the adapter was reset during the run".into());
    }
    for bad in [
        "Illegal CCB",
        "Could not find CCB",
        "Impossible State",
        "Resetting",
    ] {
        if res.is_ok() && b.log.contains(bad) {
            res = Err(format!("guest log: {bad}"));
        }
    }
    if std::env::var_os("RINX_HBA_LOG").is_some() {
        eprintln!("--- boot log ---\n{}", b.log);
    }
    for i in &imgs {
        let _ = std::fs::remove_file(i);
    }
    if let Err(e) = res {
        panic!("{e}\n--- boot log ---\n{}", b.log);
    }
}
