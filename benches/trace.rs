//! The cost of tracing, per kind and engine: guest MIPS of three 64-bit loops with tracing off
//! and with each `--trace` kind on (text records formatted and written to a sink), under the
//! interpreter and the JIT. Not a criterion benchmark: one table, quickly.
//!
//! `cargo bench --bench trace` (all kinds) or `cargo bench --bench trace -- off` (only the
//! tracing-off baseline, e.g. to compare two builds). `RINX_TRACE_BENCH_REPS` sets the number of
//! runs per cell (default 5; the best is reported, the least disturbed by other host load).

use rinx::cpu::StopReason;
use rinx::exec::{Engine, EngineKind};
use rinx::testing::{TestMachine, TestMode};
use rinx::trace::{Filter, Format, Kinds, Tracer};
use std::time::Instant;

const ITER: u32 = 250_000;

/// mov ecx, ITER; L: add eax, ecx; xor edx, eax; dec ecx; jnz L; hlt  (4 insns per iteration)
fn int_loop() -> Vec<u8> {
    let mut c = vec![0xb9];
    c.extend_from_slice(&ITER.to_le_bytes());
    c.extend_from_slice(&[0x01, 0xc8, 0x31, 0xc2, 0xff, 0xc9, 0x75, 0xf8, 0xf4]);
    c
}

/// mov ecx, ITER; mov rsi, 0x200000; L: mov rax, [rsi]; add rax, rcx; mov [rsi+8], rax;
/// add rsi, 8; and rsi, 0x20ffff; dec ecx; jnz L; hlt  (7 insns per iteration)
fn mem_loop() -> Vec<u8> {
    let mut c = vec![0xb9];
    c.extend_from_slice(&ITER.to_le_bytes());
    c.extend_from_slice(&[0x48, 0xc7, 0xc6, 0x00, 0x00, 0x20, 0x00]);
    let body = [
        0x48, 0x8b, 0x06, 0x48, 0x01, 0xc8, 0x48, 0x89, 0x46, 0x08, 0x48, 0x83, 0xc6, 0x08, 0x48,
        0x81, 0xe6, 0xff, 0xff, 0x20, 0x00, 0xff, 0xc9,
    ];
    c.extend_from_slice(&body);
    let back = -((body.len() + 2) as i8);
    c.extend_from_slice(&[0x75, back as u8, 0xf4]);
    c
}

/// mov ecx, ITER; L: call F; dec ecx; jnz L; hlt; F: add eax, 1; ret  (5 insns per iteration)
fn call_loop() -> Vec<u8> {
    let mut c = vec![0xb9];
    c.extend_from_slice(&ITER.to_le_bytes());
    c.extend_from_slice(&[0xe8, 0x05, 0, 0, 0, 0xff, 0xc9, 0x75, 0xf7, 0xf4]);
    c.extend_from_slice(&[0x83, 0xc0, 0x01, 0xc3]);
    c
}

/// Best-of-`reps` guest MIPS of `code` on `engine` with `kinds` traced (`None`: off).
fn mips(code: &[u8], kind: EngineKind, kinds: Option<Kinds>, reps: u32) -> f64 {
    let mut engine = Engine::new(kind);
    let mut best = 0f64;
    for _ in 0..reps {
        let mut t = TestMachine::new(TestMode::Long64, code);
        if let Some(k) = kinds {
            t.cpu.trace.set(Tracer::new(
                k,
                Filter::default(),
                Format::Text,
                Box::new(std::io::sink()),
            ));
        }
        let t0 = Instant::now();
        let stop = engine.run(&mut t.cpu, &mut t.mem, &mut t.plat, u64::MAX);
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(stop, StopReason::Halted);
        best = best.max(t.cpu.icount as f64 / secs / 1e6);
    }
    best
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let reps = std::env::var("RINX_TRACE_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let kinds: Vec<&str> = ["off", "ring", "mode", "exc", "walk", "block", "insn"]
        .into_iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k))
        .collect();
    println!("guest MIPS, best of {reps} runs (ratio to tracing off in parentheses)");
    print!("| program | engine |");
    for k in &kinds {
        print!(" {k} |");
    }
    println!();
    println!("|---|---|{}", "---|".repeat(kinds.len()));
    for (name, code) in [
        ("int_loop", int_loop()),
        ("mem_loop", mem_loop()),
        ("call_ret", call_loop()),
    ] {
        for engine in EngineKind::ALL {
            print!("| {name} | {engine:?} |");
            let mut base = None;
            for k in &kinds {
                let parsed = match *k {
                    "off" => None,
                    k => match Kinds::parse(k) {
                        Ok(p) => Some(p),
                        Err(_) => {
                            print!(" n/a |");
                            continue;
                        }
                    },
                };
                let m = mips(&code, engine, parsed, reps);
                match (base, parsed) {
                    (None, None) => {
                        base = Some(m);
                        print!(" {m:.1} |");
                    }
                    (Some(b), _) => print!(" {m:.1} ({:.2}) |", m / b),
                    (None, Some(_)) => print!(" {m:.1} |"),
                }
            }
            println!();
        }
    }
}
