//! The built-in demo guest (`rinx run` without `--kernel`) boots on the whole machine, narrates
//! every step on COM1 and powers off through ACPI.

use rinx::cli::spec::SerialSpec;
use rinx::exec::EngineKind;
use rinx::machine::{Machine, MachineConfig, Outcome};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// The lines the demo must print, in this order (the user RIP of the first system call
/// depends on the instruction encodings, so only its prefix is fixed).
const STEPS: &[&str] = &[
    "rinx demo: real mode (CS:IP = 0000:1000)",
    "protected mode: CR0=0x11 (PE=1), CS=0x8 (32-bit code segment)",
    "paging: CR0=0x80000011 (PG=1), CR3=0x10000, one 4 MiB page (CR4.PSE)",
    "long mode: EFER=0xd01 (LMA=1), CS=0x18 (64-bit code segment)",
    "ring 3: CPL=3",
    "syscall: write() from ring 3 -> kernel at CPL 0, returning to user RIP=0x40",
    "page fault handled at CR2=0x1f0000 (error code 0x6: user write, page not present): mapped the page",
    "ring 3: the store to the missing page worked on the second try",
    "general protection: HLT in ring 3 at RIP=0x40",
    "ring 3: still running after the #GP",
    "exit: the user program finished with status 0",
    "timer: PIT channel 0 at 100 Hz -> 8259A IRQ 0 -> vector 0x20",
    "timer: tick 1",
    "timer: tick 2",
    "timer: tick 3",
    "timer: tick 4",
    "timer: tick 5",
    "powering off (ACPI S5)",
];

fn serial_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rinx-demo-{}-{name}.log", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Boots the demo on a 64 MiB machine and returns how it ended and what COM1 received. The
/// machine runs on its own thread so that a guest that hangs fails the test instead of
/// hanging it.
fn boot(name: &str, icount: Option<u8>) -> (Outcome, String, u64) {
    boot_on(name, icount, EngineKind::Interp)
}

fn boot_on(name: &str, icount: Option<u8>, engine: EngineKind) -> (Outcome, String, u64) {
    let path = serial_path(name);
    let cfg = MachineConfig {
        memory: 64 << 20,
        kernel: None,
        initrd: None,
        cmdline: String::new(),
        serial: SerialSpec::File(path.clone()),
        icount,
        drives: Vec::new(),
        nics: Vec::new(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut m = Machine::new(&cfg).expect("machine");
        m.set_engine(engine).expect("engine");
        let outcome = m.run();
        let _ = tx.send((outcome, m.cpu.icount));
    });
    let (outcome, icount) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let partial = std::fs::read_to_string(&path).unwrap_or_default();
            panic!("the demo did not finish within 60 s; serial so far:\n{partial}")
        });
    let out = std::fs::read_to_string(&path).expect("serial log");
    let _ = std::fs::remove_file(&path);
    (outcome, out, icount)
}

/// Checks that `out` is exactly the expected narration: each line starts with the expected
/// step (the two lines with a code address only up to it), in order, nothing else.
fn check(out: &str, outcome: &Outcome) {
    assert_eq!(*outcome, Outcome::PowerOff, "serial output:\n{out}");
    assert!(
        out.ends_with("\r\n") && !out.replace("\r\n", "").contains(['\r', '\n']),
        "lines end in CR LF for raw terminals: {out:?}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), STEPS.len(), "serial output:\n{out}");
    for (line, step) in lines.iter().zip(STEPS) {
        assert!(
            line.starts_with(step),
            "expected {step:?}, got {line:?}\n{out}"
        );
    }
    let ticks = lines.iter().filter(|l| l.contains("tick")).count();
    assert!(ticks >= 3, "{ticks} timer ticks");
    // The addresses: user RIPs in the user page, the #GP on the IST1 stack.
    assert!(lines[5].ends_with(" with SYSRET"), "{}", lines[5]);
    // IST1 top 0xA800 minus the 6-qword exception frame.
    assert!(
        lines[8].ends_with(", error code 0x0, frame on the IST1 stack at RSP=0xa7d0: skipped it"),
        "{}",
        lines[8]
    );
}

#[test]
fn demo_boots_and_powers_off_on_the_host_clock() {
    let (outcome, out, _) = boot("host", None);
    check(&out, &outcome);
}

#[test]
fn demo_is_deterministic_with_icount() {
    // Virtual time advances 2^3 ns per instruction and jumps to the next timer deadline on
    // HLT, so two runs execute exactly the same instructions.
    let a = boot("icount-a", Some(3));
    check(&a.1, &a.0);
    let b = boot("icount-b", Some(3));
    assert_eq!(a, b);
}

#[test]
fn demo_boots_under_the_jit() {
    // Real mode -> protected mode -> paging -> long mode -> ring 3 -> SYSCALL -> faults ->
    // timer interrupts -> power-off, with compiled blocks; deterministic under --icount too
    // (interrupts are taken at block boundaries, so the count differs from the interpreter's).
    let (outcome, out, _) = boot_on("jit-host", None, EngineKind::Jit);
    check(&out, &outcome);
    let a = boot_on("jit-icount-a", Some(3), EngineKind::Jit);
    check(&a.1, &a.0);
    let b = boot_on("jit-icount-b", Some(3), EngineKind::Jit);
    assert_eq!(a, b);
}

#[test]
fn demo_boots_in_lockstep_without_divergence() {
    // The whole machine (timer interrupts, serial, ACPI power-off, every mode switch) on the
    // JIT with the interpreter shadowing it: any register, device access or RAM difference
    // would end the run with Outcome::Divergence instead of the power-off.
    let (outcome, out, _) = boot_on("lockstep", None, EngineKind::Lockstep);
    check(&out, &outcome);
}
