//! Binary arithmetic and logic: ADD, ADC, SUB, SBB, CMP, AND, OR, XOR, TEST, INC, DEC, NEG, NOT
//! (Intel SDM Vol. 2A/2B instruction pages; flags per Vol. 1 Appendix A).

use super::set_flags;
use crate::cpu::flags::{self, mask};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic};
use jit::abi::flags as fl;

/// ADD/ADC/SUB/SBB/CMP/AND/OR/XOR/TEST `op0, op1` (SDM Vol. 2A "ADD", "ADC", "AND", "CMP";
/// Vol. 2B "OR", "SBB", "SUB", "TEST", "XOR"). Logical forms clear CF and OF; AF is
/// undefined for them and left clear.
pub fn binop<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let a = ctx.read_op(insn, 0)?;
    let b = ctx.read_op(insn, 1)? & mask(size);
    let cf = ctx.cpu.s.rflags & fl::CF;
    let (r, f, write) = match insn.mnemonic() {
        Mnemonic::Add => tup(flags::add(a, b, 0, size), true),
        Mnemonic::Adc => tup(flags::add(a, b, cf, size), true),
        Mnemonic::Sub => tup(flags::sub(a, b, 0, size), true),
        Mnemonic::Sbb => tup(flags::sub(a, b, cf, size), true),
        Mnemonic::Cmp => tup(flags::sub(a, b, 0, size), false),
        Mnemonic::And => (a & b, flags::logic(a & b, size), true),
        Mnemonic::Or => (a | b, flags::logic(a | b, size), true),
        Mnemonic::Xor => (a ^ b, flags::logic(a ^ b, size), true),
        _ => (a & b, flags::logic(a & b, size), false), // TEST
    };
    if write {
        ctx.write_op(insn, 0, r)?;
    }
    set_flags(ctx, fl::STATUS, f);
    Ok(())
}

#[inline]
fn tup((r, f): (u64, u64), w: bool) -> (u64, u64, bool) {
    (r, f, w)
}

/// INC/DEC: add or subtract 1, CF unchanged (SDM Vol. 2A "INC", "DEC").
pub fn incdec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let a = ctx.read_op(insn, 0)?;
    let (r, f) = if insn.mnemonic() == Mnemonic::Inc {
        flags::add(a, 1, 0, size)
    } else {
        flags::sub(a, 1, 0, size)
    };
    ctx.write_op(insn, 0, r)?;
    set_flags(ctx, fl::STATUS & !fl::CF, f);
    Ok(())
}

/// NEG: two's complement, CF = (source != 0) (SDM Vol. 2B "NEG").
pub fn neg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let a = ctx.read_op(insn, 0)?;
    let (r, f) = flags::sub(0, a, 0, size);
    ctx.write_op(insn, 0, r)?;
    set_flags(ctx, fl::STATUS, f);
    Ok(())
}

/// NOT: one's complement, no flags (SDM Vol. 2B "NOT").
pub fn not<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let a = ctx.read_op(insn, 0)?;
    ctx.write_op(insn, 0, !a & mask(size))
}
