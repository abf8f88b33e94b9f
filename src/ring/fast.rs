//! Fast system calls: SYSCALL/SYSRET (IA-32e, SDM Vol. 2B; Vol. 3A §5.8.8), SYSENTER/SYSEXIT
//! (§5.8.7) and SWAPGS. These load flat segment caches with fixed attributes instead of reading
//! descriptors, exactly as the processor does.

use super::require_cpl0;
use crate::cpu::mem::canonical;
use crate::cpu::{Ctx, Fault, Platform, Res};
use jit::abi::{cr, flags as fl, reg, sreg, Segment};

/// A flat 4 GiB segment cache with the fixed attributes SYSCALL & co. load.
fn flat(sel: u16, code: bool, long: bool, dpl: u8) -> Segment {
    let typ: u16 = if code { 0xb } else { 0x3 };
    let mut attr =
        Segment::ATTR_P | Segment::ATTR_S | Segment::ATTR_G | typ | (u16::from(dpl) << 5);
    if code && long {
        attr |= Segment::ATTR_L;
    } else {
        attr |= Segment::ATTR_DB;
    }
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        attr,
    }
}

fn syscall_enabled<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> Res<()> {
    // Intel: #UD outside 64-bit mode or with EFER.SCE = 0.
    if !ctx.cpu.mode64() || ctx.cpu.s.efer & cr::EFER_SCE == 0 {
        return Err(Fault::Ud);
    }
    Ok(())
}

/// SYSCALL: RCX = return RIP, R11 = RFLAGS, RIP = IA32_LSTAR, RFLAGS &= !IA32_FMASK (and RF),
/// CS = STAR[47:32] (64-bit, DPL 0), SS = STAR[47:32] + 8, CPL 0.
pub fn syscall<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    syscall_enabled(ctx)?;
    let star = ctx.cpu.s.msr.star;
    let sel = ((star >> 32) as u16) & 0xfffc;
    ctx.cpu.s.gpr[reg::RCX] = ctx.next_rip;
    ctx.cpu.s.gpr[11] = ctx.cpu.s.rflags & !fl::RF;
    ctx.cpu.s.rflags &= !(ctx.cpu.s.msr.sfmask | fl::RF);
    ctx.cpu.s.rflags |= fl::FIXED1;
    ctx.cpu.s.seg[sreg::CS] = flat(sel, true, true, 0);
    ctx.cpu.s.seg[sreg::SS] = flat(sel.wrapping_add(8), false, false, 0);
    ctx.cpu.s.cpl = 0;
    ctx.next_rip = ctx.cpu.s.msr.lstar;
    Ok(())
}

/// SYSRET / SYSRETQ: back to CPL 3. 64-bit: CS = STAR[63:48] + 16, RIP = RCX (non-canonical
/// RCX raises #GP(0) at CPL 0, before any state changes); 32-bit: CS = STAR[63:48],
/// RIP = ECX. SS = STAR[63:48] + 8. RFLAGS = R11 (RF, VM cleared).
pub fn sysret<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, q: bool) -> Res<()> {
    syscall_enabled(ctx)?;
    require_cpl0(ctx)?;
    let base = (ctx.cpu.s.msr.star >> 48) as u16;
    let rcx = ctx.cpu.s.gpr[reg::RCX];
    if q && !canonical(rcx) {
        return Err(Fault::Gp(0));
    }
    let (cs, rip) = if q {
        (flat(base.wrapping_add(16) | 3, true, true, 3), rcx)
    } else {
        (flat(base | 3, true, false, 3), rcx & 0xffff_ffff)
    };
    ctx.cpu.s.rflags = (ctx.cpu.s.gpr[11] & 0x3c_7fd7) | fl::FIXED1;
    ctx.cpu.s.seg[sreg::CS] = cs;
    ctx.cpu.s.seg[sreg::SS] = flat(base.wrapping_add(8) | 3, false, false, 3);
    ctx.cpu.s.cpl = 3;
    ctx.next_rip = rip;
    Ok(())
}

/// SYSENTER: CS = IA32_SYSENTER_CS, SS = CS + 8, ESP/EIP from the MSRs, CPL 0; VM, IF, RF
/// cleared. #GP(0) in real mode or with a null SYSENTER_CS.
pub fn sysenter<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    let cs_sel = ctx.cpu.s.msr.sysenter_cs as u16;
    if !ctx.cpu.protected() || cs_sel & 0xfffc == 0 {
        return Err(Fault::Gp(0));
    }
    let long = ctx.cpu.long_mode();
    let sel = cs_sel & 0xfffc;
    ctx.cpu.s.rflags &= !(fl::VM | fl::IF | fl::RF);
    ctx.cpu.s.seg[sreg::CS] = flat(sel, true, long, 0);
    ctx.cpu.s.seg[sreg::SS] = flat(sel.wrapping_add(8), false, false, 0);
    ctx.cpu.s.cpl = 0;
    let (esp, eip) = (ctx.cpu.s.msr.sysenter_esp, ctx.cpu.s.msr.sysenter_eip);
    let m = if long { u64::MAX } else { 0xffff_ffff };
    ctx.cpu.s.gpr[reg::RSP] = esp & m;
    ctx.next_rip = eip & m;
    Ok(())
}

/// SYSEXIT / SYSEXITQ: to CPL 3 with CS = SYSENTER_CS + 16 (+32 for 64-bit), SS = CS + 8,
/// EIP = EDX (RIP = RDX), ESP = ECX (RSP = RCX).
pub fn sysexit<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, q: bool) -> Res<()> {
    let cs_sel = ctx.cpu.s.msr.sysenter_cs as u16;
    if !ctx.cpu.protected() || ctx.cpu.v86() || cs_sel & 0xfffc == 0 {
        return Err(Fault::Gp(0));
    }
    require_cpl0(ctx)?;
    let (rdx, rcx) = (ctx.cpu.s.gpr[reg::RDX], ctx.cpu.s.gpr[reg::RCX]);
    if q && (!canonical(rdx) || !canonical(rcx)) {
        return Err(Fault::Gp(0));
    }
    let off: u16 = if q { 32 } else { 16 };
    let cs = cs_sel.wrapping_add(off) | 3;
    ctx.cpu.s.seg[sreg::CS] = flat(cs, true, q, 3);
    ctx.cpu.s.seg[sreg::SS] = flat(cs.wrapping_add(8), false, false, 3);
    ctx.cpu.s.cpl = 3;
    let m = if q { u64::MAX } else { 0xffff_ffff };
    ctx.cpu.s.gpr[reg::RSP] = rcx & m;
    ctx.next_rip = rdx & m;
    Ok(())
}

/// SWAPGS: exchanges GS.base with IA32_KERNEL_GS_BASE. 64-bit mode only (#UD), CPL 0.
pub fn swapgs<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    if !ctx.cpu.mode64() {
        return Err(Fault::Ud);
    }
    require_cpl0(ctx)?;
    let s = &mut ctx.cpu.s;
    core::mem::swap(&mut s.seg[sreg::GS].base, &mut s.msr.kernel_gs_base);
    Ok(())
}
