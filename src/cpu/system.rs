//! System instructions: routing of segment-register loads and far transfers (`cpu::segment`,
//! `cpu::far`) and of every privileged or sensitive instruction to the ring-compression layer
//! (`crate::ring::exec`, its single entry point).
//!
//! Dispatch runs this module before the integer family so that the MOV/PUSH/POP/JMP/CALL forms
//! with segment, control or debug registers and far operands land here.

use super::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic};

/// Executes `insn` if it is a system instruction this module implements.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Mov | M::Push | M::Pop | M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => {
            if let Some(r) = super::segment::exec_sreg(ctx, insn) {
                return Some(r);
            }
            if insn.mnemonic() == M::Mov && crate::ring::control::is_cr_dr(insn) {
                return crate::ring::exec(ctx, insn);
            }
            None
        }
        M::Jmp
        | M::Call
        | M::Retf
        | M::Iret
        | M::Iretd
        | M::Iretq
        | M::Int
        | M::Int1
        | M::Int3
        | M::Into => super::far::exec(ctx, insn),
        _ => crate::ring::exec(ctx, insn),
    }
}

#[cfg(test)]
#[path = "system_tests.rs"]
mod tests;
