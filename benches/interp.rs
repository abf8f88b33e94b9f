//! Interpreter throughput: guest instructions per second on integer loops, memory-heavy loops
//! and call/return-heavy code (64-bit mode), measured with criterion.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rinx::cpu::StopReason;
use rinx::exec::interp::{self, Probes};
use rinx::testing::{TestMachine, TestMode};
use rinx::trace::coverage::Coverage;
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
    c.extend_from_slice(&[0x48, 0xc7, 0xc6, 0x00, 0x00, 0x20, 0x00]); // mov rsi, 0x200000
    let body = [
        0x48, 0x8b, 0x06, // mov rax, [rsi]
        0x48, 0x01, 0xc8, // add rax, rcx
        0x48, 0x89, 0x46, 0x08, // mov [rsi+8], rax
        0x48, 0x83, 0xc6, 0x08, // add rsi, 8
        0x48, 0x81, 0xe6, 0xff, 0xff, 0x20, 0x00, // and rsi, 0x20ffff
        0xff, 0xc9, // dec ecx
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
    let mut g = c.benchmark_group("interp");
    for (name, code, per_iter) in [
        ("int_loop", int_loop(), 4u64),
        ("mem_loop", mem_loop(), 7),
        ("call_ret", call_loop(), 5),
    ] {
        // Check the program runs to its HLT before timing it.
        let mut t = TestMachine::new(TestMode::Long64, &code);
        assert_eq!(t.run(u64::MAX), StopReason::Halted, "{name} must reach HLT");
        g.throughput(Throughput::Elements(per_iter * u64::from(ITER)));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = TestMachine::new(TestMode::Long64, &code);
                t.run(u64::MAX)
            })
        });
    }
    let code = int_loop();
    // The instrumented loop a debugger or --coverage uses: no breakpoint set, then coverage.
    for (name, coverage) in [("int_loop_probed", false), ("int_loop_coverage", true)] {
        g.throughput(Throughput::Elements(4 * u64::from(ITER)));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = TestMachine::new(TestMode::Long64, &code);
                let mut p = Probes {
                    coverage: coverage.then(Coverage::new),
                    ..Default::default()
                };
                interp::run_probed(&mut t.cpu, &mut t.mem, &mut t.plat, u64::MAX, &mut p)
            })
        });
    }
    // Tracing on (to a sink): the cost of the traced step, formatting and JSON/text output.
    for (name, kinds, format) in [
        ("int_loop_trace_ring_text", Kinds::RING, Format::Text),
        ("int_loop_trace_insn_text", Kinds::INSN, Format::Text),
        ("int_loop_trace_all_json", Kinds::ALL, Format::Json),
    ] {
        g.throughput(Throughput::Elements(4 * u64::from(ITER)));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = TestMachine::new(TestMode::Long64, &code);
                t.cpu.trace.set(Tracer::new(
                    kinds,
                    Filter::default(),
                    format,
                    Box::new(std::io::sink()),
                ));
                t.run(u64::MAX)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
