//! Boot tests on real guests: Debian 12's unmodified amd64 and i386 (-686) kernels with a static
//! busybox initramfs, built by `scripts/guest-images.sh` into `guest-cache/`.
//!
//! These boots take minutes, so they are a separate test group: `#[ignore]` in plain
//! `cargo test`, run by CI (and by hand) with
//!
//! ```sh
//! cargo test --release --test boot_linux -- --ignored --test-threads 1 --nocapture
//! ```
//!
//! Each boot runs a script in the guest (passed base64-encoded as `rinx.script=` on the kernel
//! command line), checks what it prints on the serial console, and expects an ACPI power-off
//! (exit status 0). On failure the whole boot log is printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of deterministic data the guest hashes.
const DATA_BYTES: usize = 16 << 20;
/// Default limit for one boot; `RINX_BOOT_TIMEOUT_SECS` overrides it (lockstep runs both
/// engines and takes longer).
const BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn boot_timeout() -> Duration {
    std::env::var("RINX_BOOT_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(BOOT_TIMEOUT)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes sure the guest images exist (the script is a no-op when they do).
fn guest_cache() -> PathBuf {
    let cache = repo().join("guest-cache");
    let ok = ["amd64", "i386"].iter().all(|a| {
        cache.join(a).join("vmlinuz").is_file() && cache.join(a).join("initrd.img").is_file()
    });
    if !ok {
        let st = Command::new("bash")
            .arg(repo().join("scripts/guest-images.sh"))
            .status()
            .expect("run scripts/guest-images.sh");
        assert!(st.success(), "scripts/guest-images.sh failed");
    }
    cache
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                o.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// The script the guest runs: each section starts with a marker line.
const SCRIPT: &str = r#"echo "=== uname"; uname -a
echo "=== cpuinfo"; cat /proc/cpuinfo
echo "=== md5"; yes rinx | head -c 16777216 | md5sum
echo "=== date"; date +%s
echo "=== dmesg"; dmesg
echo "=== end"
"#;

/// The md5 of what `yes rinx | head -c 16777216` prints, computed by the host's md5sum.
fn host_md5() -> String {
    let data: Vec<u8> = b"rinx\n".iter().copied().cycle().take(DATA_BYTES).collect();
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum on the host");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

struct Boot {
    status: Option<i32>,
    log: String,
    wall: Duration,
}

fn boot(arch: &str, engine: &str) -> Boot {
    let cache = guest_cache();
    let dir = cache.join(arch);
    let log_path = std::env::temp_dir().join(format!(
        "rinx-boot-{arch}-{engine}-{}.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log_path);
    let append = format!(
        "console=ttyS0 panic=-1 rinx.script={}",
        base64(SCRIPT.as_bytes())
    );
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(["run", "--memory", "512M", "--engine", engine])
        .arg("--kernel")
        .arg(dir.join("vmlinuz"))
        .arg("--initrd")
        .arg(dir.join("initrd.img"))
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
        if start.elapsed() > boot_timeout() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let wall = start.elapsed();
    // The guest's tty turns "\n" into "\r\n".
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default())
        .replace("\r\n", "\n");
    Boot { status, log, wall }
}

/// The lines between `=== name` and the next marker.
fn section<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let start = log.find(&format!("=== {name}\n"))? + name.len() + 5;
    let rest = &log[start..];
    let end = rest.find("\n=== ").map(|e| e + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn check(path: &Path, b: &Boot, arch_word: &str) -> Result<(), String> {
    let log = &b.log;
    if b.status != Some(0) {
        return Err(format!(
            "exit status {:?} (expected 0 from ACPI power-off)",
            b.status
        ));
    }
    let uname = section(log, "uname").ok_or("no uname output")?;
    if !uname.contains("Linux") || !uname.contains(arch_word) {
        return Err(format!("uname: {uname}"));
    }
    let cpuinfo = section(log, "cpuinfo").ok_or("no cpuinfo")?;
    if !cpuinfo.contains("flags") || !cpuinfo.contains("GenuineIntel") {
        return Err("cpuinfo lacks flags/vendor".into());
    }
    let md5 = section(log, "md5").ok_or("no md5")?;
    let want = host_md5();
    if !md5.contains(&want) {
        return Err(format!("md5 {md5:?}, host says {want}"));
    }
    let date = section(log, "date").ok_or("no date")?;
    let guest: i64 = date.trim().parse().map_err(|_| format!("date: {date:?}"))?;
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // The guest printed its date before the rest of the script and shutdown ran.
    if (host - guest).abs() > 5 + b.wall.as_secs() as i64 / 10 {
        return Err(format!("guest date {guest} vs host {host}"));
    }
    let dmesg = section(log, "dmesg").ok_or("no dmesg")?;
    for bad in [
        "unchecked MSR",
        "Call Trace",
        "marked unstable",
        "BUG:",
        "WARNING:",
    ] {
        if dmesg.contains(bad) {
            return Err(format!("dmesg contains {bad:?}"));
        }
    }
    for line in dmesg.lines() {
        let l = line.to_ascii_lowercase();
        if (l.contains("apic") || l.contains("irq") || l.contains("timer"))
            && (l.contains("error") || l.contains("fail") || l.contains("bug"))
        {
            return Err(format!("dmesg: {line}"));
        }
    }
    let _ = path;
    Ok(())
}

fn run_boot(arch: &str, arch_word: &str) {
    let engine = std::env::var("RINX_ENGINE").unwrap_or_else(|_| "interp".into());
    let b = boot(arch, &engine);
    eprintln!(
        "boot {arch} ({engine}): status {:?} in {:.1} s",
        b.status,
        b.wall.as_secs_f64()
    );
    if let Err(e) = check(Path::new(arch), &b, arch_word) {
        panic!(
            "{arch} boot failed: {e}\n----- guest boot log -----\n{}\n----- end -----",
            b.log
        );
    }
}

#[test]
#[ignore = "boots a real kernel (minutes): run with --ignored"]
fn debian_amd64_boots_to_shell_and_powers_off() {
    run_boot("amd64", "x86_64");
}

#[test]
#[ignore = "boots a real kernel (minutes): run with --ignored"]
fn debian_i386_boots_to_shell_and_powers_off() {
    run_boot("i386", "i686");
}

#[test]
fn base64_matches_rfc4648_examples() {
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
}
