//! General-purpose integer instructions (Intel SDM Vol. 1 §5.1, Vol. 2 instruction pages).

use super::flags::{self, mask};
use super::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic};
use jit::abi::flags as fl;

/// Executes `insn` if it is an integer instruction this module implements.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    Some(match insn.mnemonic() {
        Mnemonic::Nop => Ok(()),
        Mnemonic::Mov => mov(ctx, insn),
        Mnemonic::Add => alu_add(ctx, insn),
        Mnemonic::Jmp => {
            ctx.next_rip = insn.near_branch_target();
            Ok(())
        }
        _ => return None,
    })
}

fn mov<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.read_op(insn, 1)?;
    ctx.write_op(insn, 0, v)
}

fn alu_add<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let a = ctx.read_op(insn, 0)?;
    let b = ctx.read_op(insn, 1)? & mask(size);
    let (r, f) = flags::add(a, b, 0, size);
    ctx.write_op(insn, 0, r)?;
    ctx.cpu.s.rflags = (ctx.cpu.s.rflags & !fl::STATUS) | f;
    Ok(())
}
