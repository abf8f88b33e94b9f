//! MMX, SSE, SSE2, SSE3 and SSSE3 instructions (Intel SDM Vol. 1 chapters 9-12).

use super::{Ctx, Platform, Res};
use iced_x86::Instruction;

/// Executes `insn` if it is an MMX/SSE instruction this module implements.
pub fn exec<P: Platform + ?Sized>(_ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Option<Res<()>> {
    None
}
