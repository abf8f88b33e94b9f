//! Runs arbitrary guest code under the JIT and under the interpreter, in lockstep (the states
//! are compared after every JIT block, guest RAM at the end), in real mode, 32-bit protected
//! mode and 64-bit mode. Any difference is a bug in one of the engines. Input layout as in
//! `exec_any`: byte 0 selects the mode, bytes 1..129 seed the GPRs, the rest is code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rinx::exec::lockstep::lockstep;
use rinx::testing::{TestMachine, TestMode, STACK_TOP};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mode = match data[0] % 3 {
        0 => TestMode::Real,
        1 => TestMode::Flat32,
        _ => TestMode::Long64,
    };
    let regs = &data[1..data.len().min(129)];
    let code = data.get(129..).unwrap_or(&[]);
    let make = || {
        let mut t = TestMachine::new(mode, code);
        for (i, c) in regs.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            t.cpu.s.gpr[i] = u64::from_le_bytes(b);
        }
        t.cpu.s.gpr[4] = if mode == TestMode::Real { 0xfff0 } else { STACK_TOP };
        t
    };
    if let Err(d) = lockstep(&make, 10_000) {
        panic!("{d}");
    }
});
