//! Instruction dispatch: each family module claims the mnemonics it implements and returns
//! `None` for the others. An instruction no family claims raises #UD, so an unimplemented
//! instruction is a guest-visible fault, never a host panic.

use super::{Ctx, Fault, Platform, Res};
use iced_x86::Instruction;

/// Executes one decoded instruction. On `Ok`, `ctx.next_rip` holds the next RIP; on `Err`,
/// the architectural state is as it was before the instruction (except for completed
/// iterations of REP string instructions, as on hardware).
pub fn execute<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    // System first: it claims only the MOV/PUSH/POP/JMP/CALL forms with segment, control or
    // debug registers or far operands, which the integer family must not see.
    if let Some(r) = super::system::exec(ctx, insn) {
        return r;
    }
    if let Some(r) = super::integer::exec(ctx, insn) {
        return r;
    }
    if let Some(r) = super::fpu::exec(ctx, insn) {
        return r;
    }
    if let Some(r) = super::simd::exec(ctx, insn) {
        return r;
    }
    log::debug!(target: "rinx::cpu", "unimplemented instruction at {:#x}: {:?}", ctx.cpu.cur_rip, insn.code());
    Err(Fault::Ud)
}

/// Which family claimed an instruction (a hint cached with decoded instructions so that a hit
/// goes straight to its family instead of walking the chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Family {
    /// Not yet known: walk the chain.
    #[default]
    Unknown = 0,
    System = 1,
    Integer = 2,
    Fpu = 3,
    Simd = 4,
}

fn run_family<P: Platform + ?Sized>(
    f: Family,
    ctx: &mut Ctx<'_, P>,
    insn: &Instruction,
) -> Option<Res<()>> {
    match f {
        Family::System => super::system::exec(ctx, insn),
        Family::Integer => super::integer::exec(ctx, insn),
        Family::Fpu => super::fpu::exec(ctx, insn),
        Family::Simd => super::simd::exec(ctx, insn),
        Family::Unknown => None,
    }
}

/// Like [`execute`], trying the family in `hint` first and updating it with the family that
/// claimed the instruction. The chain order is the same, so the result is identical: a family
/// claims an instruction by its mnemonic and operands only, and a hint is only ever learned
/// from the chain for the same instruction.
pub fn execute_hinted<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    insn: &Instruction,
    hint: &mut Family,
) -> Res<()> {
    if let Some(r) = run_family(*hint, ctx, insn) {
        return r;
    }
    for f in [Family::System, Family::Integer, Family::Fpu, Family::Simd] {
        if let Some(r) = run_family(f, ctx, insn) {
            *hint = f;
            return r;
        }
    }
    log::debug!(target: "rinx::cpu", "unimplemented instruction at {:#x}: {:?}", ctx.cpu.cur_rip, insn.code());
    Err(Fault::Ud)
}
