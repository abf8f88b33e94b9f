//! System instructions that are neither privileged nor sensitive enough for the ring layer
//! (port I/O and HLT go through `crate::ring`).

use super::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic};

/// Executes `insn` if it is a system instruction this module implements.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    Some(match insn.mnemonic() {
        Mnemonic::Hlt | Mnemonic::Out | Mnemonic::In => crate::ring::exec(ctx, insn)?,
        _ => return None,
    })
}
