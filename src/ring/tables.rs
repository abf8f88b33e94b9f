//! Descriptor-table registers and descriptor queries: LGDT/LIDT/SGDT/SIDT, LLDT/SLDT, LTR/STR,
//! LAR/LSL/VERR/VERW and ARPL (SDM Vol. 2 instruction pages; Vol. 3A §2.4, §2.6, §5.10.1).
//! SGDT/SIDT/SLDT/STR are sensitive but not privileged (UMIP is not advertised): they work at
//! CPL 3 and reveal the guest's virtual tables, never the host's.

use super::{require_cpl0, require_protected};
use crate::cpu::segment::{is_null, sel_err, sys, Desc};
use crate::cpu::{flags::mask, Ctx, Fault, Platform, Res};
use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use jit::abi::{flags as fl, TableReg};

/// Reads a 16-bit selector operand (register or memory).
fn read_sel<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction, i: u32) -> Res<u16> {
    match insn.op_kind(i) {
        OpKind::Memory => {
            let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
            Ok(ctx.read_mem(s, o, 2)? as u16)
        }
        _ => Ok(ctx.reg(insn.op_register(i)) as u16),
    }
}

/// Writes a selector-sized result: 2 bytes to memory, zero-extended to a register.
fn write_sel<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction, v: u64) -> Res<()> {
    match insn.op_kind(0) {
        OpKind::Memory => {
            let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
            ctx.write_mem(s, o, 2, v & 0xffff)
        }
        _ => {
            ctx.set_reg(insn.op_register(0), v);
            Ok(())
        }
    }
}

/// Size of the base field of a pseudo-descriptor operand: 8 in 64-bit mode, else 4 (a 16-bit
/// LGDT/LIDT uses only 24 bits of it).
fn base_size<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> u32 {
    if ctx.cpu.mode64() {
        8
    } else {
        4
    }
}

/// LGDT / LIDT m16&32 (m16&64 in 64-bit mode). CPL 0 only.
pub fn lgdt_lidt<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_cpl0(ctx)?;
    if insn.op_kind(0) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
    let am = mask(ctx.addr_size(insn));
    let limit = ctx.read_mem(s, o, 2)?;
    let bs = base_size(ctx);
    let mut base = ctx.read_mem(s, o.wrapping_add(2) & am, bs)?;
    if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
        base &= 0xff_ffff;
    }
    if bs == 8 && !crate::cpu::mem::canonical(base) {
        return Err(Fault::Gp(0));
    }
    let t = TableReg {
        base,
        limit: limit as u32,
        _pad: 0,
    };
    if insn.mnemonic() == Mnemonic::Lgdt {
        ctx.cpu.s.gdtr = t;
    } else {
        ctx.cpu.s.idtr = t;
    }
    Ok(())
}

/// SGDT / SIDT: stores limit and the full 32-bit (64-bit in 64-bit mode) base at any CPL.
pub fn sgdt_sidt<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    if insn.op_kind(0) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let t = if insn.mnemonic() == Mnemonic::Sgdt {
        ctx.cpu.s.gdtr
    } else {
        ctx.cpu.s.idtr
    };
    let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
    let am = mask(ctx.addr_size(insn));
    let bs = base_size(ctx);
    ctx.probe_write(s, o, 2 + bs)?;
    ctx.write_mem(s, o, 2, u64::from(t.limit))?;
    ctx.write_mem(s, o.wrapping_add(2) & am, bs, t.base)
}

/// Reads a system descriptor from the GDT for LLDT/LTR: 16 bytes in IA-32e mode.
fn read_sys_desc<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, sel: u16) -> Res<Desc> {
    if sel & 4 != 0 {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if ctx.cpu.long_mode() {
        ctx.read_desc16(sel)
    } else {
        ctx.read_desc(sel)
    }
}

/// LLDT r/m16: a null selector makes the LDT unusable; otherwise an LDT descriptor in the GDT.
pub fn lldt<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_protected(ctx)?;
    require_cpl0(ctx)?;
    let sel = read_sel(ctx, insn, 0)?;
    if is_null(sel) {
        ctx.cpu.s.ldtr = crate::cpu::mem::unusable_segment(sel);
        return Ok(());
    }
    let d = read_sys_desc(ctx, sel)?;
    if d.s() || d.typ() != sys::LDT {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    ctx.cpu.s.ldtr = d.cache(sel, ctx.cpu.long_mode());
    Ok(())
}

/// LTR r/m16: loads an available TSS and marks it busy in the GDT (SDM §7.2.4).
pub fn ltr<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_protected(ctx)?;
    require_cpl0(ctx)?;
    let sel = read_sel(ctx, insn, 0)?;
    if is_null(sel) {
        return Err(Fault::Gp(0));
    }
    let mut d = read_sys_desc(ctx, sel)?;
    let ok = match d.typ() {
        sys::TSS_AVAIL => true,
        sys::TSS16_AVAIL => !ctx.cpu.long_mode(),
        _ => false,
    };
    if d.s() || !ok {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    d.raw |= 2 << 40;
    let la = ctx.desc_addr(sel, 8).ok_or(Fault::Gp(sel_err(sel)))?;
    ctx.write_linear(la.wrapping_add(5), 1, (d.raw >> 40) & 0xff, true)?;
    ctx.cpu.s.tr = d.cache(sel, ctx.cpu.long_mode());
    Ok(())
}

/// SLDT / STR: store the selector (any CPL).
pub fn sldt_str<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_protected(ctx)?;
    let sel = if insn.mnemonic() == Mnemonic::Sldt {
        ctx.cpu.s.ldtr.selector
    } else {
        ctx.cpu.s.tr.selector
    };
    write_sel(ctx, insn, u64::from(sel))
}

/// The descriptor for LAR/LSL/VERR/VERW if it is visible at the current CPL and the
/// selector's RPL (conforming code is always visible), else `None` (ZF = 0, no fault).
fn visible_desc<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, sel: u16) -> Res<Option<Desc>> {
    if is_null(sel) {
        return Ok(None);
    }
    let Some(la) = ctx.desc_addr(sel, 8) else {
        return Ok(None);
    };
    let raw = ctx.read_linear(la, 8, true)?;
    let d = Desc { raw, hi: 0 };
    let rpl = (sel & 3) as u8;
    if !d.conforming() && (d.dpl() < ctx.cpu.cpl() || d.dpl() < rpl) {
        return Ok(None);
    }
    Ok(Some(d))
}

fn set_zf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, on: bool) {
    if on {
        ctx.cpu.s.rflags |= fl::ZF;
    } else {
        ctx.cpu.s.rflags &= !fl::ZF;
    }
}

/// LAR / LSL: access rights (descriptor bytes 5-6 masked with 0x00F0FF00) or the byte-granular
/// limit, with ZF = 1, when the descriptor type is valid for the instruction and visible.
pub fn lar_lsl<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_protected(ctx)?;
    let sel = read_sel(ctx, insn, 1)?;
    let lar = insn.mnemonic() == Mnemonic::Lar;
    let long = ctx.cpu.long_mode();
    let d = visible_desc(ctx, sel)?.filter(|d| {
        d.s()
            || match d.typ() {
                sys::LDT | sys::TSS_AVAIL | sys::TSS_BUSY => true,
                sys::CALL => lar,
                sys::TSS16_AVAIL | sys::TSS16_BUSY => !long,
                sys::CALL16 | sys::TASK => lar && !long,
                _ => false,
            }
    });
    match d {
        Some(d) => {
            let v = if lar {
                (d.raw >> 32) & 0x00f0_ff00
            } else {
                u64::from(d.limit())
            };
            ctx.set_reg(insn.op_register(0), v);
            set_zf(ctx, true);
        }
        None => set_zf(ctx, false),
    }
    Ok(())
}

/// VERR / VERW: ZF = 1 if the segment is readable (VERR) or writable (VERW) at this CPL.
pub fn verr_verw<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_protected(ctx)?;
    let sel = read_sel(ctx, insn, 0)?;
    let verr = insn.mnemonic() == Mnemonic::Verr;
    let ok =
        visible_desc(ctx, sel)?.is_some_and(|d| if verr { d.readable() } else { d.writable() });
    set_zf(ctx, ok);
    Ok(())
}

/// ARPL r/m16, r16: raises the destination's RPL to the source's (ZF = 1 if changed).
pub fn arpl<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_protected(ctx)?;
    let dst = read_sel(ctx, insn, 0)?;
    let src = ctx.reg(insn.op_register(1)) as u16;
    if dst & 3 < src & 3 {
        let v = (dst & !3) | (src & 3);
        match insn.op_kind(0) {
            OpKind::Memory => {
                let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
                ctx.write_mem(s, o, 2, u64::from(v))?;
            }
            _ => ctx.set_reg(insn.op_register(0), u64::from(v)),
        }
        set_zf(ctx, true);
    } else {
        set_zf(ctx, false);
    }
    Ok(())
}
