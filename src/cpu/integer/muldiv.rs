//! Multiplication and division: MUL, IMUL (one-, two- and three-operand forms), DIV, IDIV
//! (Intel SDM Vol. 2A "DIV", "IDIV", "IMUL"; Vol. 2B "MUL").
//!
//! MUL/IMUL define only CF and OF; SF, ZF, AF and PF are undefined and this model sets SF,
//! ZF and PF from the low half of the result and clears AF. DIV/IDIV leave every flag
//! unchanged (all are undefined). Division faults (#DE) leave all state unchanged.

use super::{set_flags, sext};
use crate::cpu::flags::{self, mask};
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::Instruction;
use jit::abi::{flags as fl, reg};

/// Reads the implicit accumulator pair of a `size`-byte one-operand multiply or divide:
/// AX (size 1, as one value), DX:AX, EDX:EAX, RDX:RAX.
#[inline]
fn acc_pair<P: Platform + ?Sized>(ctx: &Ctx<'_, P>, size: u32) -> u128 {
    if size == 1 {
        u128::from(ctx.gpr(reg::RAX, 2))
    } else {
        (u128::from(ctx.gpr(reg::RDX, size)) << (size * 8)) | u128::from(ctx.gpr(reg::RAX, size))
    }
}

/// Writes a double-width product / (quotient, remainder) pair to AX or rDX:rAX.
#[inline]
fn set_pair<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, size: u32, lo: u64, hi: u64) {
    if size == 1 {
        ctx.set_gpr(reg::RAX, 2, (lo & 0xff) | ((hi & 0xff) << 8));
    } else {
        ctx.set_gpr(reg::RAX, size, lo);
        ctx.set_gpr(reg::RDX, size, hi);
    }
}

#[inline]
fn mul_flags(lo: u64, size: u32, overflow: bool) -> u64 {
    flags::szp(lo, size) | if overflow { fl::CF | fl::OF } else { 0 }
}

/// MUL r/m: unsigned rDX:rAX = rAX * src; CF = OF = (upper half != 0).
pub fn mul<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let src = ctx.read_op(insn, 0)?;
    let a = ctx.gpr(reg::RAX, size);
    let p = u128::from(a) * u128::from(src);
    let bits = size * 8;
    let lo = (p as u64) & mask(size);
    let hi = ((p >> bits) as u64) & mask(size);
    set_pair(ctx, size, lo, hi);
    set_flags(ctx, fl::STATUS, mul_flags(lo, size, hi != 0));
    Ok(())
}

/// IMUL r/m (one operand, double-width result), IMUL r, r/m and IMUL r, r/m, imm (truncated
/// result). CF = OF = (the signed result does not fit the destination).
pub fn imul<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let bits = size * 8;
    if insn.op_count() == 1 {
        let src = sext(ctx.read_op(insn, 0)?, size) as i64;
        let a = sext(ctx.gpr(reg::RAX, size), size) as i64;
        let p = i128::from(a) * i128::from(src);
        let lo = (p as u64) & mask(size);
        let hi = ((p >> bits) as u64) & mask(size);
        let overflow = i128::from(sext(lo, size) as i64) != p;
        set_pair(ctx, size, lo, hi);
        set_flags(ctx, fl::STATUS, mul_flags(lo, size, overflow));
        return Ok(());
    }
    let (x, y) = if insn.op_count() == 2 {
        (ctx.read_op(insn, 0)?, ctx.read_op(insn, 1)?)
    } else {
        (ctx.read_op(insn, 1)?, ctx.read_op(insn, 2)?)
    };
    let p = i128::from(sext(x, size) as i64) * i128::from(sext(y, size) as i64);
    let lo = (p as u64) & mask(size);
    let overflow = i128::from(sext(lo, size) as i64) != p;
    ctx.write_op(insn, 0, lo)?;
    set_flags(ctx, fl::STATUS, mul_flags(lo, size, overflow));
    Ok(())
}

/// DIV r/m: unsigned rDX:rAX / src; #DE on a zero divisor or a quotient that does not fit.
pub fn div<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let src = u128::from(ctx.read_op(insn, 0)?);
    if src == 0 {
        return Err(Fault::De);
    }
    let n = acc_pair(ctx, size);
    let q = n / src;
    let r = n % src;
    if q > u128::from(mask(size)) {
        return Err(Fault::De);
    }
    set_pair(ctx, size, q as u64, r as u64);
    Ok(())
}

/// IDIV r/m: signed rDX:rAX / src, quotient truncated toward zero, remainder with the sign of
/// the dividend; #DE on a zero divisor or a quotient outside the signed range.
pub fn idiv<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let bits = size * 8;
    let src = i128::from(sext(ctx.read_op(insn, 0)?, size) as i64);
    if src == 0 {
        return Err(Fault::De);
    }
    let raw = acc_pair(ctx, size);
    // Sign-extend the 2*bits-wide dividend.
    let sh = 128 - 2 * bits;
    let n = ((raw << sh) as i128) >> sh;
    let (Some(q), Some(r)) = (n.checked_div(src), n.checked_rem(src)) else {
        return Err(Fault::De);
    };
    let max = (1i128 << (bits - 1)) - 1;
    let min = -(1i128 << (bits - 1));
    if q > max || q < min {
        return Err(Fault::De);
    }
    set_pair(ctx, size, q as u64 & mask(size), r as u64 & mask(size));
    Ok(())
}
