//! x87 FPU instructions (Intel SDM Vol. 1 chapter 8).

use super::{Ctx, Platform, Res};
use iced_x86::Instruction;

/// Executes `insn` if it is an x87 instruction this module implements.
pub fn exec<P: Platform + ?Sized>(_ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Option<Res<()>> {
    None
}
