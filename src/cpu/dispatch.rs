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
