//! Arbitrary guest bytes in every mode: only guest-visible exceptions, never a host panic or a
//! hang (the instruction budget bounds each run). The cargo-fuzz target in fuzz/ does the same
//! coverage-guided; this is its deterministic slice for every `cargo test`.

use rinx::cpu::StopReason;
use rinx::testing::{TestMachine, TestMode, CODE_BASE};

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[test]
fn random_code_never_panics() {
    let cases: u64 = std::env::var("RINX_ROBUST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for case in 0..cases {
        let mode = [TestMode::Real, TestMode::Flat32, TestMode::Long64][(case % 3) as usize];
        let len = 16 + (xorshift(&mut seed) % 240) as usize;
        let code: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        let mut t = TestMachine::new(mode, &code);
        // Random registers, including pointers into and out of RAM.
        for i in 0..16 {
            t.cpu.s.gpr[i] = match xorshift(&mut seed) % 3 {
                0 => xorshift(&mut seed),
                1 => CODE_BASE + (xorshift(&mut seed) % 0x1000),
                _ => xorshift(&mut seed) % 0x100,
            };
        }
        if mode != TestMode::Real {
            t.cpu.s.gpr[4] = rinx::testing::STACK_TOP;
        } else {
            t.cpu.s.gpr[4] = 0xfff0;
        }
        let r = t.run(2_000);
        assert!(
            matches!(
                r,
                StopReason::Halted | StopReason::Budget | StopReason::TripleFault
            ),
            "case {case}: unexpected stop {r:?}"
        );
    }
}
