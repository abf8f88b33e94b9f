//! Unit tests: random instructions: no panics.

use super::*;
use crate::testing::{TestMachine, TestMode, CODE_BASE};

/// Random instruction bytes with random registers in every mode: the integer handlers must
/// return `Ok` or a fault, never panic (the guest must not be able to crash the host).
#[test]
fn random_instructions_never_panic() {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let iters: u32 = std::env::var("RINX_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (mut ok, mut faults) = (0u32, 0u32);
    for mode in ALL {
        let mut t = TestMachine::new(mode, &[0x90; 16]);
        let base = t.cpu.clone();
        for _ in 0..iters {
            let mut code = [0u8; 16];
            for c in code.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            // Bias towards one-byte opcodes with a few prefixes, and towards 0F xx.
            if next() % 3 == 0 {
                code[0] = 0x0f;
            }
            t.cpu = base.clone();
            for r in 0..16 {
                let v = next();
                t.cpu.s.gpr[r] = match v % 4 {
                    0 => v >> 40,
                    1 => 0,
                    2 => v,
                    _ => v & 0xffff,
                };
            }
            t.cpu.s.gpr[RSP] = base.s.gpr[RSP];
            t.cpu.s.rflags = (next() & 0xcd5) | 2;
            let rip = t.cpu.s.rip;
            let la = if mode == TestMode::Real {
                CODE_BASE + rip
            } else {
                rip
            };
            t.mem.write(la, &code).unwrap();
            let mut ctx = Ctx::new(&mut t.cpu, &mut t.mem, &mut t.plat);
            ctx.cpu.cur_rip = rip;
            let Ok(insn) = ctx.fetch_decode() else {
                continue;
            };
            ctx.next_rip = rip.wrapping_add(u64::from(insn.len));
            match crate::cpu::integer::exec(&mut ctx, &insn.insn) {
                Some(Ok(())) => ok += 1,
                Some(Err(_)) => faults += 1,
                None => {}
            }
        }
    }
    // Most random encodings must reach an integer handler, or the test proves little.
    assert!(ok + faults > iters, "only {ok} + {faults} executed");
}
