//! Bad input on the command line and in boot files: each gets a clear message and a non-zero
//! exit status, never a panic (Rust panics exit with 101 and print "panicked").

use std::process::Command;

fn rinx(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(args)
        .output()
        .expect("run rinx");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "rinx panicked: {err}");
    (out.status.code().unwrap_or(-1), err)
}

fn tmp(name: &str, data: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("rinx-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, data).unwrap();
    p.display().to_string()
}

/// A bzImage header (boot.rst) claiming `syssize` paragraphs of protected-mode code, followed by
/// only `pm_bytes` bytes of it.
fn bzimage(syssize: u32, pm_bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; 5 * 512 + pm_bytes];
    v[0x1f1] = 4; // setup_sects
    v[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    v[0x1fe] = 0x55;
    v[0x1ff] = 0xaa;
    v[0x202..0x206].copy_from_slice(b"HdrS");
    v[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    v[0x211] = 1; // LOADED_HIGH
    v[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    v
}

#[test]
fn missing_kernel_file() {
    let (st, err) = rinx(&[
        "run",
        "--kernel",
        "/nonexistent/vmlinuz",
        "--serial",
        "null",
    ]);
    assert_eq!(st, 1);
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn not_a_bzimage() {
    let k = tmp("garbage", &[0x5a; 4096]);
    let (st, err) = rinx(&["run", "--kernel", &k, "--serial", "null"]);
    assert_eq!(st, 1);
    assert!(err.contains("not a Linux bzImage"), "{err}");
}

#[test]
fn truncated_bzimage() {
    let k = tmp("truncated", &bzimage(0x1000, 512));
    let (st, err) = rinx(&["run", "--kernel", &k, "--serial", "null"]);
    assert_eq!(st, 1);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn initrd_larger_than_memory() {
    let k = tmp("kernel-ok", &bzimage(1, 16));
    let big = std::env::temp_dir().join(format!("rinx-cli-{}-bigrd", std::process::id()));
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap(); // sparse: 64 MiB
    let (st, err) = rinx(&[
        "run",
        "--kernel",
        &k,
        "--initrd",
        &big.display().to_string(),
        "--memory",
        "32M",
        "--serial",
        "null",
    ]);
    assert_eq!(st, 1);
    assert!(err.contains("larger than guest memory"), "{err}");
}

#[test]
fn zero_memory_and_bad_serial() {
    let (st, err) = rinx(&["run", "--memory", "0"]);
    assert_eq!(st, 2);
    assert!(err.contains("at least"), "{err}");
    let (st, err) = rinx(&["run", "--serial", "pty"]);
    assert_eq!(st, 2);
    assert!(err.contains("unknown serial back-end"), "{err}");
}

#[test]
fn help_lists_every_run_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--kernel",
        "--initrd",
        "--append",
        "--memory",
        "--serial",
        "--engine",
        "--icount",
        "--trace",
        "--stats",
        "--gdb",
        "--wait-gdb",
        "--gdb-arch",
        "--coverage",
    ] {
        assert!(help.contains(opt), "run --help lacks {opt}");
    }
}

#[test]
fn bad_drive_specs() {
    for (spec, msg) in [
        ("file=x.img,mode=sometimes", "unknown drive mode"),
        ("file=x.img,if=ide", "unknown drive interface"),
        ("file=x.img,format=vmdk", "unknown drive format"),
        ("file=x.img,mode=undoable", "undo=keep or undo=discard"),
        ("mode=persistent", "needs file=PATH"),
    ] {
        let (st, err) = rinx(&["run", "--drive", spec]);
        assert_eq!(st, 2, "{spec}: {err}");
        assert!(err.contains(msg), "{spec}: {err}");
    }
    // A missing image is a host-side error (exit status 1) naming the file.
    let missing = std::env::temp_dir().join(format!("rinx-cli-{}-missing.img", std::process::id()));
    let (st, err) = rinx(&[
        "run",
        "--serial",
        "null",
        "--drive",
        &format!("file={}", missing.display()),
    ]);
    assert_eq!(st, 1, "{err}");
    assert!(err.contains("missing.img"), "{err}");
}

#[test]
fn bad_gdb_and_coverage_specs() {
    let (st, err) = rinx(&["run", "--gdb", "tcp:8.8.8.8:1234"]);
    assert_eq!(st, 2);
    assert!(err.contains("loopback only"), "{err}");
    let (st, err) = rinx(&["run", "--gdb", "serial:/dev/ttyS0"]);
    assert_eq!(st, 2);
    assert!(err.contains("unknown gdb transport"), "{err}");
    let (st, err) = rinx(&["run", "--wait-gdb"]);
    assert_eq!(st, 2, "--wait-gdb needs --gdb: {err}");
    let (st, err) = rinx(&["run", "--coverage", "cov.log"]);
    assert_eq!(st, 2);
    assert!(err.contains("drcov:PATH"), "{err}");
    let (st, err) = rinx(&[
        "run",
        "--serial",
        "null",
        "--coverage",
        "drcov:/nonexistent-dir/x",
    ]);
    assert_eq!(st, 1);
    assert!(err.contains("creating coverage file"), "{err}");
}
