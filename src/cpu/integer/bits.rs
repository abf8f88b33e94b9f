//! Bit and byte instructions: BT/BTS/BTR/BTC, BSF/BSR (and TZCNT/LZCNT, which execute as
//! BSF/BSR because BMI1/ABM are not advertised), SHLD/SHRD, BSWAP, POPCNT (Intel SDM Vol. 1
//! §7.3.7; Vol. 2 pages).

use super::{set_flags, sext};
use crate::cpu::flags::{self, mask, sign_bit};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic, OpKind};
use jit::abi::flags as fl;

/// BT/BTS/BTR/BTC r/m, r / imm8 (SDM Vol. 2A "BT", "BTC", "BTR", "BTS"). CF = the selected
/// bit; the other flags are unchanged (OF, SF, AF, PF are undefined). With a register bit
/// offset and a memory operand the offset is a signed bit-string index: the operand address
/// moves by `(offset >> log2(bits)) * bytes` (Vol. 1 §3.4.1 "Bit field and bit-string").
pub fn bt<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let bits = u64::from(size * 8);
    let raw = ctx.read_op(insn, 1)?;
    let m = insn.mnemonic();
    let (bit, cur, mem) = if insn.op0_kind() == OpKind::Memory {
        let seg = ctx.mem_seg(insn);
        let mut off = ctx.ea(insn);
        if insn.op1_kind() == OpKind::Register {
            let s = sext(raw, size) as i64;
            let disp = (s >> bits.trailing_zeros()).wrapping_mul(i64::from(size as i32));
            off = off.wrapping_add(disp as u64) & mask(ctx.addr_size(insn));
        }
        let v = ctx.read_mem(seg, off, size)?;
        (raw & (bits - 1), v, Some((seg, off)))
    } else {
        (raw & (bits - 1), ctx.read_op(insn, 0)?, None)
    };
    let cf = (cur >> bit) & 1;
    let new = match m {
        Mnemonic::Bts => Some(cur | (1 << bit)),
        Mnemonic::Btr => Some(cur & !(1 << bit)),
        Mnemonic::Btc => Some(cur ^ (1 << bit)),
        _ => None,
    };
    if let Some(v) = new {
        match mem {
            Some((seg, off)) => ctx.write_mem(seg, off, size, v)?,
            None => ctx.write_op(insn, 0, v)?,
        }
    }
    set_flags(ctx, fl::CF, cf);
    Ok(())
}

/// BSF (and TZCNT without BMI1): index of the lowest set bit. A zero source sets ZF and leaves
/// the destination unchanged (SDM Vol. 2A "BSF"; AMD and Intel both leave it unmodified).
/// CF, OF, SF, AF, PF are undefined and left unchanged.
pub fn bsf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let src = ctx.read_op(insn, 1)?;
    if src == 0 {
        ctx.cpu.s.rflags |= fl::ZF;
        return Ok(());
    }
    ctx.write_op(insn, 0, u64::from(src.trailing_zeros()))?;
    ctx.cpu.s.rflags &= !fl::ZF;
    Ok(())
}

/// BSR (and LZCNT without ABM): index of the highest set bit; zero source as for BSF
/// (SDM Vol. 2A "BSR").
pub fn bsr<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let src = ctx.read_op(insn, 1)?;
    if src == 0 {
        ctx.cpu.s.rflags |= fl::ZF;
        return Ok(());
    }
    ctx.write_op(insn, 0, u64::from(63 - src.leading_zeros()))?;
    ctx.cpu.s.rflags &= !fl::ZF;
    Ok(())
}

/// SHLD/SHRD r/m, r, imm8 / CL (SDM Vol. 2B "SHLD", "SHRD"). The count is masked to 5 bits
/// (6 for 64-bit operands); 0 changes nothing. A 16-bit count above 16 gives an undefined
/// result; this model shifts through the 48-bit concatenation dest:src:dest.
pub fn shld<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let raw = ctx.read_op(insn, 2)?;
    let c = (raw & if size == 8 { 0x3f } else { 0x1f }) as u32;
    let d = ctx.read_op(insn, 0)?;
    let s = ctx.read_op(insn, 1)?;
    if c == 0 {
        // As for shifts: no flag changes, but a 32-bit register destination is zero-extended.
        if insn.op0_kind() == OpKind::Register {
            ctx.write_op(insn, 0, d)?;
        }
        return Ok(());
    }
    let (r, cf) = shld_compute(insn.mnemonic() == Mnemonic::Shld, d, s, c, size);
    let of = u64::from((r ^ d) & sign_bit(size) != 0);
    ctx.write_op(insn, 0, r)?;
    set_flags(
        ctx,
        fl::STATUS,
        flags::szp(r, size) | (cf * fl::CF) | (of * fl::OF),
    );
    Ok(())
}

/// The double-precision shift (value, CF) for a non-zero masked count `c`.
pub fn shld_compute(left: bool, d: u64, s: u64, c: u32, size: u32) -> (u64, u64) {
    let bits = size * 8;
    let mk = mask(size);
    if size == 2 {
        // 48-bit concatenation so counts 17..31 are deterministic.
        let (d, s) = (u128::from(d & 0xffff), u128::from(s & 0xffff));
        if left {
            let x = (d << 32) | (s << 16) | d;
            let y = x << c;
            (((y >> 32) as u64) & mk, ((y >> 48) & 1) as u64)
        } else {
            let w = (d << 32) | (s << 16) | d;
            let r = (w >> c) & 0xffff;
            let cf = (w >> (c - 1)) & 1;
            (r as u64, cf as u64)
        }
    } else {
        let (d, s) = (u128::from(d & mk), u128::from(s & mk));
        if left {
            let x = (d << bits) | s;
            let y = x << c;
            let r = ((y >> bits) as u64) & mk;
            let cf = ((d >> (bits - c)) & 1) as u64;
            (r, cf)
        } else {
            let x = (s << bits) | d;
            let r = ((x >> c) as u64) & mk;
            let cf = ((x >> (c - 1)) & 1) as u64;
            (r, cf)
        }
    }
}

/// BSWAP r32/r64 (SDM Vol. 2A "BSWAP"). With a 16-bit operand the result is undefined; this
/// model clears the register's low 16 bits, as Intel processors do.
pub fn bswap<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let v = ctx.read_op(insn, 0)?;
    let r = match size {
        4 => u64::from((v as u32).swap_bytes()),
        8 => v.swap_bytes(),
        _ => 0,
    };
    ctx.write_op(insn, 0, r)
}

/// POPCNT r, r/m (SDM Vol. 2B "POPCNT"): ZF = (source = 0); OF, SF, AF, CF, PF cleared.
pub fn popcnt<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.read_op(insn, 1)?;
    ctx.write_op(insn, 0, u64::from(v.count_ones()))?;
    set_flags(ctx, fl::STATUS, if v == 0 { fl::ZF } else { 0 });
    Ok(())
}

/// CRC32C update of `crc` with the low `bytes` bytes of `data`, least significant first: the
/// bit-reflected CRC with polynomial 11EDC6F41H and no initial or final inversion, which is
/// what the SDM's BIT_REFLECT / MOD2 definition computes (SDM Vol. 2A "CRC32").
pub fn crc32c(crc: u32, data: u64, bytes: u32) -> u32 {
    let mut c = crc;
    for i in 0..bytes {
        c ^= u32::from((data >> (8 * i)) as u8);
        for _ in 0..8 {
            c = (c >> 1) ^ (0x82f6_3b78 & (c & 1).wrapping_neg());
        }
    }
    c
}

/// CRC32 r32/r64, r/m8/16/32/64 (SSE4.2, SDM Vol. 2A "CRC32"): accumulates the source into
/// the low 32 bits of the destination; a 64-bit destination gets its upper half cleared.
/// Flags are unaffected; LOCK is #UD (not in [`super::lockable`]).
pub fn crc32<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 1);
    let v = ctx.read_op(insn, 1)?;
    let crc = ctx.read_op(insn, 0)? as u32;
    ctx.write_op(insn, 0, u64::from(crc32c(crc, v, size)))
}
