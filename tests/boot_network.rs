//! End-to-end networking on Debian 12's amd64 kernel: two guests boot concurrently, each with
//! an e1000 and a virtio-net NIC; the e1000s share one `rinx switch` (10.0.1.0/24) and the
//! virtio-net NICs another (10.0.2.0/24), so each model carries its own traffic. The guests
//! load e1000 / virtio_net (modules from the same kernel package,
//! `guest-cache/amd64/net-modules.cpio`), set static addresses, ping each other over both
//! models, and guest B sends 4 MiB of random data to guest A over TCP (busybox nc) once per
//! model; A reports the sha256 of what it received, B of what it sent, and A acknowledges
//! back to B over TCP. The sender's timing gives the guest-to-guest TCP throughput per model.
//!
//! Slow (two Linux boots at once): ignored by default,
//!
//! ```sh
//! RINX_ENGINE=jit cargo test --release --test boot_network -- --ignored two_guests --nocapture
//! ```
//!
//! `qemu_tcg_reference_throughput` runs the same scenario on QEMU TCG for comparison (not in
//! CI; run it by name).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: on a loaded 2-core host the pair took 27 minutes to reach the first ping (a quiet
/// host boots each in ~3 minutes).
const BOOT_TIMEOUT: Duration = Duration::from_secs(55 * 60);
/// Bytes B sends per model.
const SIZE_MIB: u32 = 4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rinx binary under test: `RINX_BIN` if set (to compare another build on the same
/// scenario), else the one Cargo built with this test.
fn rinx_bin() -> String {
    std::env::var("RINX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rinx").to_string())
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rinx-net-{}-{name}", std::process::id()))
}

/// `RINX_ENGINE` (interp / jit); jit by default on x86-64 hosts (two concurrent boots).
fn engine() -> String {
    std::env::var("RINX_ENGINE").unwrap_or_else(|_| {
        if cfg!(target_arch = "x86_64") {
            "jit".into()
        } else {
            "interp".into()
        }
    })
}

/// The guest script; `rinx.role=1` (receiver A) or `rinx.role=2` (sender B) on the command
/// line says which half it runs.
const SCRIPT: &str = r#"#!/bin/sh
ME=$(sed -n 's/.*rinx\.role=\([12]\).*/\1/p' /proc/cmdline)
PEER=$((3 - ME))
SIZE=$((SIZE_MIB * 1048576))
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
E=""; V=""; i=0
while [ -z "$E" -o -z "$V" ] && [ $i -lt 60 ]; do
  for d in /sys/class/net/*; do
    case "$(cat $d/address)" in
      52:54:00:00:01:0$ME) E=${d##*/} ;;
      52:54:00:00:02:0$ME) V=${d##*/} ;;
    esac
  done
  [ -z "$E" -o -z "$V" ] && sleep 1
  i=$((i+1))
done
echo "=== ifaces"
echo "e1000=$E $(cat /sys/class/net/$E/device/vendor):$(cat /sys/class/net/$E/device/device) virtio=$V $(cat /sys/class/net/$V/device/vendor):$(cat /sys/class/net/$V/device/device)"
ip link set lo up
ip link set $E up && ip addr add 10.0.1.$ME/24 dev $E
ip link set $V up && ip addr add 10.0.2.$ME/24 dev $V
waitping() { i=0; until ping -c 1 -W 1 $1 >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 600 ] && return 1; done; return 0; }
waitping 10.0.1.$PEER || echo "peer unreachable over e1000"
waitping 10.0.2.$PEER || echo "peer unreachable over virtio"
echo "=== ping-e1000"; ping -c 3 10.0.1.$PEER
echo "=== ping-virtio"; ping -c 3 10.0.2.$PEER
echo "=== link"; cat /sys/class/net/$E/carrier /sys/class/net/$E/speed /sys/class/net/$V/carrier
waitsize() { i=0; while [ "$(stat -c %s $1 2>/dev/null || echo 0)" -lt $2 ] && [ $i -lt 6000 ]; do usleep 100000; i=$((i+1)); done; }
if [ $ME = 1 ]; then
  sleep 900 | nc -l -p 5001 > /tmp/e.bin &
  sleep 900 | nc -l -p 5002 > /tmp/v.bin &
  waitsize /tmp/e.bin $SIZE
  echo "=== recv-e1000"; stat -c %s /tmp/e.bin; sha256sum /tmp/e.bin
  waitsize /tmp/v.bin $SIZE
  echo "=== recv-virtio"; stat -c %s /tmp/v.bin; sha256sum /tmp/v.bin
  i=0; until sha256sum /tmp/e.bin /tmp/v.bin | nc 10.0.1.2 5003; do sleep 1; i=$((i+1)); [ $i -ge 120 ] && break; done
else
  sleep 900 | nc -l -p 5003 > /tmp/ack &
  dd if=/dev/urandom of=/tmp/d.bin bs=1M count=SIZE_MIB 2>/dev/null
  echo "=== sent"; sha256sum /tmp/d.bin
  for t in e1000:1:5001 virtio:2:5002; do
    n=${t%%:*}; r=${t#*:}; net=${r%%:*}; port=${r#*:}
    i=0
    a=$(cut -d" " -f1 /proc/uptime)
    until nc 10.0.$net.1 $port < /tmp/d.bin; do
      sleep 1; i=$((i+1)); [ $i -ge 300 ] && break
      a=$(cut -d" " -f1 /proc/uptime)
    done
    z=$(cut -d" " -f1 /proc/uptime)
    echo "=== tput-$n"; echo "SIZE_MIB $a $z"
  done
  waitsize /tmp/ack 100
  echo "=== ack"; cat /tmp/ack
fi
echo "=== stats"; grep Tcp: /proc/net/snmp; grep -iE "eth|virtio|e1000" /proc/interrupts
echo "=== dmesg"; dmesg | grep -iE "e1000|virtio|eth|irq|link" | tail -n 30
echo "=== end"
"#;

/// A cpio newc archive holding `/net-test.sh` (appended to the initramfs; the kernel unpacks
/// concatenated archives in order).
fn script_cpio() -> Vec<u8> {
    cpio_with_script(&SCRIPT.replace("SIZE_MIB", &SIZE_MIB.to_string()))
}

/// A cpio newc archive holding `script` as `/net-test.sh`.
fn cpio_with_script(script: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |ino: u32, name: &str, mode: u32, data: &[u8]| {
        let fields = [
            ino,
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
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    entry(3000, "net-test.sh", 0o100755, script.as_bytes());
    entry(0, "TRAILER!!!", 0, b"");
    while out.len() % 512 != 0 {
        out.push(0);
    }
    out
}

/// `rinx switch --listen 127.0.0.1:0`, with the address it printed.
fn start_switch() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(["switch", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start rinx switch");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("rinx switch: listening on ")
        .unwrap_or_else(|| panic!("unexpected switch output {line:?}"))
        .to_string();
    (child, addr)
}

struct Boot {
    status: Option<i32>,
    log: String,
    wall: Duration,
}

fn start_guest(role: u32, initrd: &PathBuf, sw_e: &str, sw_v: &str) -> (Child, PathBuf) {
    let cache = repo().join("guest-cache/amd64");
    let log_path = tmp(&format!("serial-{role}.log"));
    let _ = std::fs::remove_file(&log_path);
    // No pci=noacpi: Linux finds the NICs through the DSDT's PCI root bridge and routes the
    // e1000's INTA# as its _PRT says.
    let append = format!("console=ttyS0 panic=-1 rinx.role={role} rinx.script=/net-test.sh");
    let child = Command::new(rinx_bin())
        .args(["run", "--memory", "512M", "--engine", &engine(), "--stats"])
        .arg("--nic")
        .arg(format!(
            "model=e1000,net=switch:{sw_e},mac=52:54:00:00:01:0{role}"
        ))
        .arg("--nic")
        .arg(format!(
            "model=virtio,net=switch:{sw_v},mac=52:54:00:00:02:0{role}"
        ))
        .arg("--kernel")
        .arg(cache.join("vmlinuz"))
        .arg("--initrd")
        .arg(initrd)
        .arg("--append")
        .arg(&append)
        .arg("--serial")
        .arg(format!("file:{}", log_path.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start rinx");
    (child, log_path)
}

fn finish(mut child: Child, log_path: &PathBuf, start: Instant) -> Boot {
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
    let log =
        String::from_utf8_lossy(&std::fs::read(log_path).unwrap_or_default()).replace("\r\n", "\n");
    let _ = std::fs::remove_file(log_path);
    Boot {
        status,
        log,
        wall: start.elapsed(),
    }
}

fn section<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let start = log.find(&format!("=== {name}\n"))? + name.len() + 5;
    let rest = &log[start..];
    let end = rest.find("\n=== ").map(|e| e + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn sha_in(s: &str) -> Option<String> {
    s.split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
}

fn checks(a: &Boot, b: &Boot) -> Result<(), String> {
    for (n, g) in [("A", a), ("B", b)] {
        if g.status != Some(0) {
            return Err(format!("guest {n}: exit status {:?}", g.status));
        }
        let ifs = section(&g.log, "ifaces").ok_or(format!("{n}: no ifaces"))?;
        // The e1000's sysfs device is the PCI function; virtio_net's is the virtio device
        // (vendor 0x1af4, virtio device ID 1 = network).
        if !ifs.contains("0x8086:0x100e") || !ifs.contains("0x1af4:0x0001") {
            return Err(format!("{n}: NICs not found: {ifs:?}"));
        }
        for m in ["e1000", "virtio"] {
            let p = section(&g.log, &format!("ping-{m}")).ok_or(format!("{n}: no ping-{m}"))?;
            if !p.contains("3 packets received") {
                return Err(format!("{n}: ping over {m}: {p:?}"));
            }
        }
        let link = section(&g.log, "link").ok_or(format!("{n}: no link"))?;
        if !link.starts_with("1\n1000\n1\n") {
            return Err(format!("{n}: carrier/speed {link:?}"));
        }
    }
    let sent = sha_in(section(&b.log, "sent").ok_or("B: no sent")?).ok_or("B: no sha")?;
    let size = (SIZE_MIB << 20).to_string();
    for m in ["e1000", "virtio"] {
        let r = section(&a.log, &format!("recv-{m}")).ok_or(format!("A: no recv-{m}"))?;
        if !r.starts_with(&format!("{size}\n")) || sha_in(r).as_deref() != Some(&sent) {
            return Err(format!("A received over {m}: {r:?}, B sent {sent}"));
        }
    }
    let ack = section(&b.log, "ack").ok_or("B: no ack")?;
    if ack.matches(&sent).count() != 2 {
        return Err(format!("B's ack from A: {ack:?}"));
    }
    Ok(())
}

fn throughput(b: &Boot, m: &str) -> Option<f64> {
    let v: Vec<f64> = section(&b.log, &format!("tput-{m}"))?
        .lines()
        .next()?
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v[..] {
        [mib, a, z] => Some(mib * 1.048_576 / (z - a).max(0.001)),
        _ => None,
    }
}

/// The same two-guest scenario on QEMU TCG (`qemu-system-x86_64 -accel tcg`, the reference
/// peer), with each model's NICs joined by `-netdev dgram` UDP sockets on loopback: prints
/// QEMU's guest-to-guest TCP throughput for docs/network.md. Not in CI (run it by name).
#[test]
#[ignore = "benchmark against QEMU; run by name with --ignored"]
fn qemu_tcg_reference_throughput() {
    let cache = repo().join("guest-cache/amd64");
    let mut initrd = std::fs::read(cache.join("initrd.img")).unwrap();
    initrd.extend(std::fs::read(cache.join("net-modules.cpio")).unwrap());
    initrd.extend(script_cpio());
    let initrd_path = tmp("initrd-qemu.img");
    std::fs::write(&initrd_path, initrd).unwrap();
    let base = 20000 + (std::process::id() % 20000) as u16;
    let start = Instant::now();
    let guest = |role: u16| {
        let log_path = tmp(&format!("qemu-serial-{role}.log"));
        let _ = std::fs::remove_file(&log_path);
        // Ports: e1000 A/B = base, base+1; virtio A/B = base+2, base+3.
        let (me, peer) = if role == 1 { (0, 1) } else { (1, 0) };
        let dgram = |id: &str, off: u16| {
            format!(
                "dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                base + off + me,
                base + off + peer
            )
        };
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel", "tcg", "-m", "512M", "-display", "none", "-monitor", "none",
            ])
            .args(["-netdev", &dgram("e", 0)])
            .args([
                "-device",
                &format!("e1000,netdev=e,mac=52:54:00:00:01:0{role}"),
            ])
            .args(["-netdev", &dgram("v", 2)])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=v,disable-legacy=on,mac=52:54:00:00:02:0{role}"),
            ])
            .arg("-kernel")
            .arg(cache.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd_path)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 rinx.role={role} rinx.script=/net-test.sh"
            ))
            .arg("-serial")
            .arg(format!("file:{}", log_path.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64");
        (child, log_path)
    };
    let (ca, la) = guest(1);
    let (cb, lb) = guest(2);
    let b = std::thread::spawn(move || finish(cb, &lb, start));
    let a = finish(ca, &la, start);
    let b = b.join().unwrap();
    let _ = std::fs::remove_file(&initrd_path);
    eprintln!(
        "qemu tcg: A exit {:?} after {:.0} s, B exit {:?} after {:.0} s",
        a.status,
        a.wall.as_secs_f64(),
        b.status,
        b.wall.as_secs_f64()
    );
    for m in ["e1000", "virtio"] {
        if let Some(t) = throughput(&b, m) {
            eprintln!("qemu tcg: guest-to-guest TCP over {m}: {t:.2} MB/s ({SIZE_MIB} MiB)");
        }
    }
    if let Err(e) = checks(&a, &b) {
        panic!(
            "{e}\n--- guest A ---\n{}\n--- guest B ---\n{}",
            a.log, b.log
        );
    }
}

/// Two guests on two switches (one per NIC model): ping both ways over each model, 4 MiB
/// over TCP per model with sha256 checks, and an acknowledgement back over TCP.
#[test]
#[ignore = "boots Linux twice (minutes); run with --ignored"]
fn two_guests_e1000_and_virtio_net_over_switches() {
    let cache = repo().join("guest-cache/amd64");
    if !cache.join("net-modules.cpio").is_file() {
        let st = Command::new("bash")
            .arg(repo().join("scripts/guest-images.sh"))
            .status()
            .expect("run scripts/guest-images.sh");
        assert!(st.success(), "scripts/guest-images.sh failed");
    }
    let mut initrd = std::fs::read(cache.join("initrd.img")).unwrap();
    initrd.extend(std::fs::read(cache.join("net-modules.cpio")).unwrap());
    initrd.extend(script_cpio());
    let initrd_path = tmp("initrd.img");
    std::fs::write(&initrd_path, initrd).unwrap();
    let (mut sw_e, addr_e) = start_switch();
    let (mut sw_v, addr_v) = start_switch();
    let start = Instant::now();
    let (ca, la) = start_guest(1, &initrd_path, &addr_e, &addr_v);
    let (cb, lb) = start_guest(2, &initrd_path, &addr_e, &addr_v);
    let b = std::thread::spawn(move || finish(cb, &lb, start));
    let a = finish(ca, &la, start);
    let b = b.join().unwrap();
    let _ = sw_e.kill();
    let _ = sw_v.kill();
    let _ = sw_e.wait();
    let _ = sw_v.wait();
    let _ = std::fs::remove_file(&initrd_path);
    eprintln!(
        "boot_network ({}): A exit {:?} after {:.0} s, B exit {:?} after {:.0} s",
        engine(),
        a.status,
        a.wall.as_secs_f64(),
        b.status,
        b.wall.as_secs_f64()
    );
    for m in ["e1000", "virtio"] {
        if let Some(t) = throughput(&b, m) {
            eprintln!("boot_network: guest-to-guest TCP over {m}: {t:.2} MB/s ({SIZE_MIB} MiB)");
        }
    }
    // TCP counters (retransmissions) and interrupt counts, for looking into throughput.
    for (n, g) in [("A", &a), ("B", &b)] {
        if let Some(s) = section(&g.log, "stats") {
            eprintln!("boot_network: guest {n} stats:\n{}", s.trim_end());
        }
    }
    if let Err(e) = checks(&a, &b) {
        panic!(
            "{e}\n--- guest A ---\n{}\n--- guest B ---\n{}",
            a.log, b.log
        );
    }
}

/// The user-networking guest script: for each NIC model in turn (found by MAC), bring the
/// interface up, take a DHCP lease from the NAT, ping the gateway, download `USER_MIB` MiB
/// from the host's HTTP server at 10.0.2.2:HTTP_PORT (host loopback) and hash it, then listen
/// on guest port 8080 so the host can connect through the `hostfwd` rule, then take the
/// interface down (both NATs hand out 10.0.2.15).
const USER_SCRIPT: &str = r#"#!/bin/sh
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
printf '#!/bin/sh\n[ "$1" = bound ] && ifconfig $interface $ip netmask $subnet up && route add default gw $router && echo "lease-$N $ip router $router dns $dns"\nexit 0\n' > /tmp/u.sh
chmod +x /tmp/u.sh
ip link set lo up
for t in e1000:01 virtio:02; do
  n=${t%%:*}; mac=52:54:00:12:34:${t#*:}; IF=""; i=0
  while [ -z "$IF" ] && [ $i -lt 60 ]; do
    for d in /sys/class/net/*; do [ "$(cat $d/address)" = $mac ] && IF=${d##*/}; done
    [ -z "$IF" ] && sleep 1; i=$((i+1))
  done
  ip link set $IF up
  N=$n udhcpc -i $IF -n -q -t 10 -s /tmp/u.sh
  ping -c 2 10.0.2.2 > /tmp/ping.txt && echo "ping-ok-$n $(grep -c 'bytes from 10.0.2.2' /tmp/ping.txt)"
  a=$(cut -d" " -f1 /proc/uptime)
  echo "sha-$n $(wget -q -O - http://10.0.2.2:HTTP_PORT/data.bin | sha256sum)"
  echo "time-$n USER_MIB $a $(cut -d" " -f1 /proc/uptime)"
  echo "listen-ready-$n"
  echo "hello-from-guest-over-$n" | nc -l -p 8080
  ip addr flush dev $IF; ip link set $IF down
done
echo "=== end"
"#;

/// MiB the guest downloads per model through the NAT.
const USER_MIB: usize = 64;

/// Serves `data` to every HTTP GET on 127.0.0.1 (any path) until the process exits.
fn http_server(data: std::sync::Arc<Vec<u8>>) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                let mut req = [0u8; 4096];
                let _ = c.read(&mut req);
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    data.len()
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(&data);
            });
        }
    });
    port
}

#[test]
#[ignore = "boots a real kernel (minutes): run with --ignored"]
fn one_guest_user_networking_dhcp_download_and_hostfwd() {
    use std::io::Read;
    let cache = repo().join("guest-cache/amd64");
    if !cache.join("net-modules.cpio").is_file() {
        let st = Command::new("bash")
            .arg(repo().join("scripts/guest-images.sh"))
            .status()
            .expect("run scripts/guest-images.sh");
        assert!(st.success(), "scripts/guest-images.sh failed");
    }
    // Deterministic data (xorshift64), hashed by the host's sha256sum.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..USER_MIB << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let data_path = tmp("user-data.bin");
    std::fs::write(&data_path, &data).unwrap();
    let out = Command::new("sha256sum")
        .arg(&data_path)
        .output()
        .expect("sha256sum");
    let _ = std::fs::remove_file(&data_path);
    let want = sha_in(&String::from_utf8_lossy(&out.stdout)).expect("host sha256");
    let http = http_server(std::sync::Arc::new(data));
    // Free host ports for the two forwards (bound and released; the NAT binds them again).
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let fwd = [("e1000", free()), ("virtio", free())];
    let script = USER_SCRIPT
        .replace("HTTP_PORT", &http.to_string())
        .replace("USER_MIB", &USER_MIB.to_string());
    let mut initrd = std::fs::read(cache.join("initrd.img")).unwrap();
    initrd.extend(std::fs::read(cache.join("net-modules.cpio")).unwrap());
    initrd.extend(cpio_with_script(&script));
    let initrd_path = tmp("user-initrd.img");
    std::fs::write(&initrd_path, initrd).unwrap();
    let log_path = tmp("user-serial.log");
    let _ = std::fs::remove_file(&log_path);
    let start = Instant::now();
    // No pci=noacpi: the e1000's INTA# is routed as the DSDT's _PRT says.
    let child = Command::new(rinx_bin())
        .args(["run", "--memory", "512M", "--engine", &engine(), "--stats"])
        .arg("--nic")
        .arg(format!(
            "model=e1000,net=user,hostfwd=tcp:127.0.0.1:{}-:8080,mac=52:54:00:12:34:01",
            fwd[0].1
        ))
        .arg("--nic")
        .arg(format!(
            "model=virtio,net=user,hostfwd=tcp:127.0.0.1:{}-:8080,mac=52:54:00:12:34:02",
            fwd[1].1
        ))
        .arg("--kernel")
        .arg(cache.join("vmlinuz"))
        .arg("--initrd")
        .arg(&initrd_path)
        .arg("--append")
        .arg("console=ttyS0 panic=-1 rinx.script=/net-test.sh")
        .arg("--serial")
        .arg(format!("file:{}", log_path.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start rinx");
    // The host side of each forward: once the guest says it listens, connect through the
    // forwarded host port and read the guest's line.
    let lp = log_path.clone();
    let fetcher = std::thread::spawn(move || {
        let mut got = Vec::new();
        for (n, port) in fwd {
            let deadline = Instant::now() + BOOT_TIMEOUT;
            while Instant::now() < deadline {
                let log = std::fs::read_to_string(&lp).unwrap_or_default();
                if log.contains(&format!("listen-ready-{n}")) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut line = String::new();
            for _ in 0..100 {
                if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    // Read up to the guest's newline, then close: busybox nc exits when the
                    // peer closes.
                    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = Vec::new();
                    let mut b = [0u8; 256];
                    while !buf.contains(&b'\n') {
                        match c.read(&mut b) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => buf.extend_from_slice(&b[..k]),
                        }
                    }
                    line = String::from_utf8_lossy(&buf).into_owned();
                    if line.contains('\n') {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            got.push((n, line.trim().to_string()));
        }
        got
    });
    let g = finish(child, &log_path, start);
    let got = fetcher.join().unwrap();
    let _ = std::fs::remove_file(&initrd_path);
    eprintln!(
        "boot_network user ({}): exit {:?} after {:.0} s",
        engine(),
        g.status,
        g.wall.as_secs_f64()
    );
    let mut errors = Vec::new();
    if g.status != Some(0) {
        errors.push(format!("rinx exit status {:?}", g.status));
    }
    for n in ["e1000", "virtio"] {
        // Markers are looked up anywhere in the log: console messages from the kernel (link
        // up, ...) can land between a script's header line and its output.
        if !g
            .log
            .contains(&format!("lease-{n} 10.0.2.15 router 10.0.2.2 dns 10.0.2.3"))
        {
            errors.push(format!("{n}: no DHCP lease"));
        }
        if !g.log.contains(&format!("ping-ok-{n} 2")) {
            errors.push(format!("{n}: gateway did not answer ping"));
        }
        if !g.log.contains(&format!("sha-{n} {want}")) {
            errors.push(format!("{n}: download sha256 differs from {want}"));
        }
        let t: Vec<f64> = g
            .log
            .lines()
            .find_map(|l| l.split_once(&format!("time-{n} {USER_MIB} ")))
            .map(|(_, r)| {
                r.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let [a, z] = t[..] {
            eprintln!(
                "boot_network user: {n}: {USER_MIB} MiB from host loopback in {:.1} s ({:.2} MB/s)",
                z - a,
                USER_MIB as f64 * 1.048_576 / (z - a).max(0.01)
            );
        }
        match got.iter().find(|(m, _)| *m == n) {
            Some((_, l)) if *l == format!("hello-from-guest-over-{n}") => {}
            other => errors.push(format!("{n}: hostfwd read {other:?}")),
        }
    }
    if !errors.is_empty() {
        panic!("{}\n--- guest ---\n{}", errors.join("\n"), g.log);
    }
}
