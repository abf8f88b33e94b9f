//! Data movement, conversion, flag-control, exchange, BCD and miscellaneous instructions
//! (Intel SDM Vol. 1 §7.3.1-§7.3.3, §7.3.6, §7.3.13-§7.3.16; Vol. 2 instruction pages).

use super::{condition, set_flags, sext};
use crate::cpu::flags::{self, mask};
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use jit::abi::{flags as fl, reg};

/// MOV r/m, r / r, r/m / r, imm / moffs forms (SDM Vol. 2B "MOV"), and MOVNTI (a MOV with a
/// non-temporal hint, SDM Vol. 2B "MOVNTI"). No flags.
#[inline]
pub fn mov<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.read_op(insn, 1)?;
    ctx.write_op(insn, 0, v)
}

/// MOVZX (SDM Vol. 2B "MOVZX").
pub fn movzx<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.read_op(insn, 1)?;
    ctx.write_op(insn, 0, v)
}

/// MOVSX / MOVSXD (SDM Vol. 2B "MOVSX/MOVSXD"). MOVSXD with a 16/32-bit destination is a
/// plain move.
pub fn movsx<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let ss = ctx.op_size(insn, 1);
    let v = ctx.read_op(insn, 1)?;
    ctx.write_op(insn, 0, sext(v, ss))
}

/// LEA: the effective address, computed at the address size and then truncated or
/// zero-extended to the operand size (SDM Vol. 2A "LEA", Table 3-53).
pub fn lea<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    if insn.op_kind(1) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let ea = ctx.ea(insn);
    ctx.write_op(insn, 0, ea)
}

/// XCHG (SDM Vol. 2B "XCHG"). The memory operand (if any) is written first so a fault
/// leaves the registers intact.
pub fn xchg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let a = ctx.read_op(insn, 0)?;
    let b = ctx.read_op(insn, 1)?;
    if insn.op_kind(1) == OpKind::Memory {
        ctx.write_op(insn, 1, a)?;
        ctx.write_op(insn, 0, b)
    } else {
        ctx.write_op(insn, 0, b)?;
        ctx.write_op(insn, 1, a)
    }
}

/// XLAT/XLATB: AL = [seg:(E/R)BX + AL] (SDM Vol. 2B "XLAT/XLATB").
pub fn xlat<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.read_op(insn, 0)?;
    ctx.set_reg(Register::AL, v);
    Ok(())
}

/// CBW/CWDE/CDQE: sign-extend the lower half of the accumulator (SDM Vol. 2A "CBW/CWDE/CDQE").
pub fn cbw<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = match insn.mnemonic() {
        Mnemonic::Cbw => 2,
        Mnemonic::Cwde => 4,
        _ => 8,
    };
    let v = sext(ctx.gpr(reg::RAX, size / 2), size / 2);
    ctx.set_gpr(reg::RAX, size, v);
    Ok(())
}

/// CWD/CDQ/CQO: (E/R)DX = sign of the accumulator (SDM Vol. 2A "CWD/CDQ/CQO").
pub fn cwd<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = match insn.mnemonic() {
        Mnemonic::Cwd => 2,
        Mnemonic::Cdq => 4,
        _ => 8,
    };
    let neg = ctx.gpr(reg::RAX, size) & flags::sign_bit(size) != 0;
    ctx.set_gpr(reg::RDX, size, if neg { u64::MAX } else { 0 });
    Ok(())
}

/// CMOVcc (SDM Vol. 2A "CMOVcc"). The source is always read (a memory source may fault even
/// when the condition is false); a 32-bit destination is zero-extended in 64-bit mode even when
/// the condition is false.
pub fn cmov<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.read_op(insn, 1)?;
    let v = if condition(ctx.cpu.s.rflags, insn.condition_code()) {
        v
    } else {
        ctx.read_op(insn, 0)?
    };
    ctx.write_op(insn, 0, v)
}

/// SETcc r/m8 (SDM Vol. 2B "SETcc").
pub fn setcc<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = u64::from(condition(ctx.cpu.s.rflags, insn.condition_code()));
    ctx.write_op(insn, 0, v)
}

/// LAHF: AH = SF:ZF:0:AF:0:PF:1:CF (SDM Vol. 2A "LAHF"). In 64-bit mode valid because the
/// CPU model advertises LAHF-SAHF (CPUID.80000001H:ECX.LAHF-SAHF[bit 0]).
pub fn lahf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let f = ctx.cpu.s.rflags & (fl::STATUS & !fl::OF) | fl::FIXED1;
    ctx.set_reg(Register::AH, f);
    Ok(())
}

/// SAHF: SF, ZF, AF, PF, CF = AH bits 7, 6, 4, 2, 0 (SDM Vol. 2B "SAHF").
pub fn sahf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let ah = ctx.reg(Register::AH);
    set_flags(ctx, fl::STATUS & !fl::OF, ah);
    Ok(())
}

/// CLC, STC, CMC, CLD, STD (SDM Vol. 2A/2B pages of the same names).
pub fn flag_op<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let f = &mut ctx.cpu.s.rflags;
    match insn.mnemonic() {
        Mnemonic::Clc => *f &= !fl::CF,
        Mnemonic::Stc => *f |= fl::CF,
        Mnemonic::Cmc => *f ^= fl::CF,
        Mnemonic::Cld => *f &= !fl::DF,
        _ => *f |= fl::DF,
    }
    Ok(())
}

/// XADD: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP (SDM Vol. 2B "XADD").
pub fn xadd<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let d = ctx.read_op(insn, 0)?;
    let s = ctx.read_op(insn, 1)?;
    let (r, f) = flags::add(d, s, 0, size);
    if insn.op_kind(0) == OpKind::Memory {
        ctx.write_op(insn, 0, r)?;
        ctx.write_op(insn, 1, d)?;
    } else {
        ctx.write_op(insn, 1, d)?;
        ctx.write_op(insn, 0, r)?;
    }
    set_flags(ctx, fl::STATUS, f);
    Ok(())
}

/// CMPXCHG: compare the accumulator with DEST; equal: ZF = 1, DEST = SRC; else ZF = 0 and the
/// accumulator = DEST. A memory DEST is written back with its own value on failure (the locked
/// cycle always writes); a register DEST is left untouched, so a 32-bit register destination
/// keeps its upper half in 64-bit mode (as measured on hardware). Flags as CMP accumulator, DEST
/// (SDM Vol. 2A "CMPXCHG").
pub fn cmpxchg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let d = ctx.read_op(insn, 0)?;
    let s = ctx.read_op(insn, 1)?;
    let acc = ctx.gpr(reg::RAX, size);
    let (_, f) = flags::sub(acc, d, 0, size);
    if acc == d {
        ctx.write_op(insn, 0, s)?;
    } else {
        if insn.op0_kind() == OpKind::Memory {
            ctx.write_op(insn, 0, d)?;
        }
        ctx.set_gpr(reg::RAX, size, d);
    }
    set_flags(ctx, fl::STATUS, f);
    Ok(())
}

/// CMPXCHG8B m64 / CMPXCHG16B m128: compare (E/R)DX:(E/R)AX with the memory operand; equal:
/// ZF = 1, memory = (E/R)CX:(E/R)BX; else ZF = 0 and (E/R)DX:(E/R)AX = memory. Only ZF changes.
/// CMPXCHG16B needs a 16-byte-aligned operand, else #GP(0) (SDM Vol. 2A "CMPXCHG8B/CMPXCHG16B").
pub fn cmpxchg8b<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    if insn.op_kind(0) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let half = if insn.mnemonic() == Mnemonic::Cmpxchg16b {
        8
    } else {
        4
    };
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    if half == 8 && off & 15 != 0 {
        return Err(Fault::Gp(0));
    }
    let mut buf = [0u8; 16];
    let n = (half * 2) as usize;
    ctx.read_mem_bytes(seg, off, &mut buf[..n])?;
    let lo = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default()) & mask(half);
    let hi_bytes: [u8; 8] = buf[half as usize..half as usize + 8]
        .try_into()
        .unwrap_or_default();
    let hi = u64::from_le_bytes(hi_bytes) & mask(half);
    let (ax, dx) = (ctx.gpr(reg::RAX, half), ctx.gpr(reg::RDX, half));
    let mut out = [0u8; 16];
    if ax == lo && dx == hi {
        let (bx, cx) = (ctx.gpr(reg::RBX, half), ctx.gpr(reg::RCX, half));
        out[..8].copy_from_slice(&bx.to_le_bytes());
        out[half as usize..half as usize + 8].copy_from_slice(&cx.to_le_bytes());
        ctx.write_mem_bytes(seg, off, &out[..n])?;
        ctx.cpu.s.rflags |= fl::ZF;
    } else {
        ctx.write_mem_bytes(seg, off, &buf[..n])?;
        ctx.set_gpr(reg::RAX, half, lo);
        ctx.set_gpr(reg::RDX, half, hi);
        ctx.cpu.s.rflags &= !fl::ZF;
    }
    Ok(())
}

/// BOUND r16/32, m16&16 / m32&32: #BR unless lower <= index <= upper, signed
/// (SDM Vol. 2A "BOUND").
pub fn bound<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    if insn.op_kind(1) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let size = ctx.op_size(insn, 0);
    let idx = sext(ctx.read_op(insn, 0)?, size) as i64;
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    let am = mask(ctx.addr_size(insn));
    let lower = sext(ctx.read_mem(seg, off, size)?, size) as i64;
    let upper = sext(
        ctx.read_mem(seg, off.wrapping_add(u64::from(size)) & am, size)?,
        size,
    ) as i64;
    if idx < lower || idx > upper {
        return Err(Fault::Br);
    }
    Ok(())
}

#[inline]
fn al<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> u64 {
    ctx.gpr(reg::RAX, 1)
}

/// DAA: decimal adjust AL after addition (SDM Vol. 2A "DAA" pseudo-code). OF is undefined
/// and left clear.
pub fn daa<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let old_al = al(ctx);
    let old_cf = ctx.cpu.s.rflags & fl::CF != 0;
    let af = ctx.cpu.s.rflags & fl::AF != 0;
    let mut a = old_al;
    let mut f = 0;
    if a & 0xf > 9 || af {
        a += 6;
        f |= fl::AF;
    }
    if old_al > 0x99 || old_cf {
        a += 0x60;
        f |= fl::CF;
    }
    let a = a & 0xff;
    ctx.set_gpr(reg::RAX, 1, a);
    set_flags(ctx, fl::STATUS, f | flags::szp(a, 1));
    Ok(())
}

/// DAS: decimal adjust AL after subtraction (SDM Vol. 2A "DAS"). OF undefined, left clear.
pub fn das<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let old_al = al(ctx);
    let old_cf = ctx.cpu.s.rflags & fl::CF != 0;
    let af = ctx.cpu.s.rflags & fl::AF != 0;
    let mut a = old_al;
    let mut f = 0;
    if a & 0xf > 9 || af {
        if old_cf || a < 6 {
            f |= fl::CF;
        }
        a = a.wrapping_sub(6);
        f |= fl::AF;
    }
    if old_al > 0x99 || old_cf {
        a = a.wrapping_sub(0x60);
        f |= fl::CF;
    }
    let a = a & 0xff;
    ctx.set_gpr(reg::RAX, 1, a);
    set_flags(ctx, fl::STATUS, f | flags::szp(a, 1));
    Ok(())
}

/// AAA: ASCII adjust after addition (SDM Vol. 2A "AAA"): AX += 106H when AL's low nibble > 9
/// or AF; AL &= 0FH. OF, SF, ZF, PF undefined: left as computed from AL.
pub fn aaa<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let ax = ctx.gpr(reg::RAX, 2);
    let (ax, f) = if ax & 0xf > 9 || ctx.cpu.s.rflags & fl::AF != 0 {
        (ax.wrapping_add(0x106), fl::AF | fl::CF)
    } else {
        (ax, 0)
    };
    let ax = ax & 0xff0f;
    ctx.set_gpr(reg::RAX, 2, ax);
    set_flags(ctx, fl::STATUS, f | flags::szp(ax, 1));
    Ok(())
}

/// AAS: ASCII adjust after subtraction (SDM Vol. 2A "AAS"): AX -= 6, AH -= 1 when AL's low
/// nibble > 9 or AF; AL &= 0FH.
pub fn aas<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let ax = ctx.gpr(reg::RAX, 2);
    let (ax, f) = if ax & 0xf > 9 || ctx.cpu.s.rflags & fl::AF != 0 {
        (ax.wrapping_sub(6).wrapping_sub(0x100), fl::AF | fl::CF)
    } else {
        (ax, 0)
    };
    let ax = ax & 0xff0f;
    ctx.set_gpr(reg::RAX, 2, ax);
    set_flags(ctx, fl::STATUS, f | flags::szp(ax, 1));
    Ok(())
}

/// AAM imm8: AH = AL / imm8, AL = AL mod imm8; #DE when imm8 = 0 (SDM Vol. 2A "AAM").
pub fn aam<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let base = u64::from(insn.immediate8());
    if base == 0 {
        return Err(Fault::De);
    }
    let a = al(ctx);
    let ax = ((a / base) << 8) | (a % base);
    ctx.set_gpr(reg::RAX, 2, ax);
    set_flags(ctx, fl::STATUS, flags::logic(ax, 1));
    Ok(())
}

/// AAD imm8: AL = (AL + AH * imm8) & FFH, AH = 0 (SDM Vol. 2A "AAD"). The undefined flags
/// are those of the final byte addition, as processors compute them.
pub fn aad<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let base = u64::from(insn.immediate8());
    let ax = ctx.gpr(reg::RAX, 2);
    let (r, f) = flags::add(ax & 0xff, ((ax >> 8) * base) & 0xff, 0, 1);
    ctx.set_gpr(reg::RAX, 2, r);
    set_flags(ctx, fl::STATUS, f);
    Ok(())
}

/// SALC (undocumented D6): AL = CF ? FFH : 00H.
pub fn salc<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    let v = if ctx.cpu.s.rflags & fl::CF != 0 {
        0xff
    } else {
        0
    };
    ctx.set_gpr(reg::RAX, 1, v);
    Ok(())
}

/// NOP, PAUSE, multi-byte NOP, reserved NOPs, fences, CLFLUSH/CLFLUSHOPT/CLWB and prefetches:
/// no architectural effect in this model (SDM Vol. 2B "NOP", "PAUSE", "LFENCE", "MFENCE",
/// "SFENCE", "CLFLUSH", "PREFETCHh"). ENDBR32/ENDBR64 and RDSSPD/RDSSPQ sit in the reserved-NOP
/// space (0F 1E) and execute as NOPs when CET is not enabled (SDM Vol. 1 §18.3, "ENDBRANCH";
/// Vol. 2B "RDSSPD/RDSSPQ": the destination is unchanged), which is how Debian's
/// `-fcf-protection` binaries run on processors without CET.
#[inline]
pub fn nop<P: Platform + ?Sized>(_ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    Ok(())
}

/// UD0/UD1/UD2, and MOVBE (not advertised in CPUID): #UD (SDM Vol. 2B "UD").
pub fn ud<P: Platform + ?Sized>(_ctx: &mut Ctx<'_, P>, _insn: &Instruction) -> Res<()> {
    Err(Fault::Ud)
}
