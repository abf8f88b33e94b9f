//! Unit tests of the integer families. Expected values come from the SDM definitions
//! (instruction pages' Operation sections and their worked examples), run in 16-, 32- and
//! 64-bit modes through [`TestMachine`].

use crate::cpu::{dispatch, Ctx, Res, StopReason};
use crate::testing::{TestMachine, TestMode, CODE_BASE};
use iced_x86::code_asm::CodeAssembler;
use jit::abi::reg;

pub(super) const RAX: usize = reg::RAX;
pub(super) const RCX: usize = reg::RCX;
pub(super) const RDX: usize = reg::RDX;
pub(super) const RBX: usize = reg::RBX;
pub(super) const RSP: usize = reg::RSP;
pub(super) const RBP: usize = reg::RBP;
pub(super) const RSI: usize = reg::RSI;
pub(super) const RDI: usize = reg::RDI;

fn bitness(mode: TestMode) -> u32 {
    match mode {
        TestMode::Real => 16,
        TestMode::Flat32 => 32,
        TestMode::Long64 => 64,
    }
}

fn ip0(mode: TestMode) -> u64 {
    if mode == TestMode::Real {
        0
    } else {
        CODE_BASE
    }
}

/// Assembles `f` for `mode` and returns a machine loaded with it.
pub(super) fn machine(mode: TestMode, f: impl FnOnce(&mut CodeAssembler)) -> TestMachine {
    let mut a = CodeAssembler::new(bitness(mode)).unwrap();
    f(&mut a);
    let code = a.assemble(ip0(mode)).unwrap();
    TestMachine::new(mode, &code)
}

/// Executes exactly one instruction without exception delivery; on `Err` the state must be as
/// before the instruction.
pub(super) fn exec1(t: &mut TestMachine) -> Res<()> {
    let mut ctx = Ctx::new(&mut t.cpu, &mut t.mem, &mut t.plat);
    let rip = ctx.cpu.s.rip;
    ctx.cpu.cur_rip = rip;
    let insn = ctx.fetch_decode()?;
    let m = crate::cpu::flags::mask(ctx.default_ip_size());
    ctx.next_rip = rip.wrapping_add(u64::from(insn.len)) & m;
    dispatch::execute(&mut ctx, &insn.insn)?;
    ctx.cpu.s.rip = ctx.next_rip;
    Ok(())
}

/// Runs to the HLT at the end of the program.
pub(super) fn run(t: &mut TestMachine) {
    assert_eq!(t.run(100_000), StopReason::Halted);
}

pub(super) const ALL: [TestMode; 3] = [TestMode::Real, TestMode::Flat32, TestMode::Long64];

mod alu;
mod bits;
mod control;
mod data;
mod fuzz;
mod muldiv;
mod shift;
mod stack;
mod string;
