//! Interpreter vs JIT: guest instructions per second on an integer loop, a memory-heavy loop
//! and call/return-heavy code (64-bit mode), and the JIT's translation time per block.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rinx::cpu::StopReason;
use rinx::exec::{Engine, EngineKind};
use rinx::testing::{TestMachine, TestMode};
use rinx::trace::{Filter, Format, Kinds, Tracer};

const ITER: u32 = 20_000;

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

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    for (name, code, per_iter) in [
        ("int_loop", int_loop(), 4u64),
        ("mem_loop", mem_loop(), 7),
        ("call_ret", call_loop(), 5),
    ] {
        for kind in EngineKind::ALL {
            let label = format!("{name}/{kind:?}").to_lowercase();
            let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(kind);
            assert_eq!(
                t.run(u64::MAX),
                StopReason::Halted,
                "{label} must reach HLT"
            );
            g.throughput(Throughput::Elements(per_iter * u64::from(ITER)));
            // One engine (and code cache) per benchmark, reused across iterations like a
            // running machine; each iteration is a fresh guest.
            let mut engine = Engine::new(kind);
            g.bench_function(&label, |b| {
                b.iter(|| {
                    let mut t = TestMachine::new(TestMode::Long64, &code);
                    engine.run(&mut t.cpu, &mut t.mem, &mut t.plat, u64::MAX)
                })
            });
        }
    }
    // Tracing on under the JIT engine: with `ring` compiled blocks keep running (the records
    // come from the helper and the ring layer); `insn` steps every instruction through the
    // interpreter's traced step. `cargo bench --bench trace` covers every kind.
    for (name, kinds) in [
        ("int_loop_trace_ring_text/jit", Kinds::RING),
        ("int_loop_trace_insn_text/jit", Kinds::INSN),
    ] {
        let code = int_loop();
        g.throughput(Throughput::Elements(4 * u64::from(ITER)));
        let mut engine = Engine::new(EngineKind::Jit);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = TestMachine::new(TestMode::Long64, &code);
                t.cpu.trace.set(Tracer::new(
                    kinds,
                    Filter::default(),
                    Format::Text,
                    Box::new(std::io::sink()),
                ));
                engine.run(&mut t.cpu, &mut t.mem, &mut t.plat, u64::MAX)
            })
        });
    }
    g.finish();

    // Translation time per block (scan + lower + emit + install), from the JIT's own clock
    // over the three programs, and the end-to-end cost of a run that must translate first.
    let mut j = rinx::exec::jit::JitEngine::new().expect("code memory");
    for code in [int_loop(), mem_loop(), call_loop()] {
        let mut t = TestMachine::new(TestMode::Long64, &code);
        j.flush();
        j.run(&mut t.cpu, &mut t.mem, &mut t.plat, u64::MAX);
    }
    eprintln!(
        "jit: {} blocks translated, {:.1} us per block",
        j.stats.translations,
        j.stats.translate_ns as f64 / j.stats.translations.max(1) as f64 / 1000.0
    );
    let mut g = c.benchmark_group("jit_translate");
    let code = call_loop();
    g.bench_function("fresh_cpu_translate_and_run_call_loop_prefix", |b| {
        b.iter(|| {
            // A fresh CPU invalidates every translation: this times translating the program's
            // blocks plus running 50 instructions.
            let mut t = TestMachine::new(TestMode::Long64, &code);
            j.run(&mut t.cpu, &mut t.mem, &mut t.plat, 50)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
