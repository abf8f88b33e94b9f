//! Hardware task switching (Intel SDM Vol. 3A chapter 7): JMP/CALL to a TSS or task gate, task
//! gates in the IDT, and IRET with EFLAGS.NT. Only outside IA-32e mode (callers refuse it
//! there). Only 32-bit TSSs are supported: a 16-bit TSS raises #TS(selector).
//!
//! The whole switch runs inside the caller's `atomically` scope, so a fault at any point rolls
//! the processor back to the old task. (Hardware commits after saving the old state and reports
//! later faults in the new task's context; guests that depend on that are rare. Linux uses a
//! task gate only for the i386 double-fault handler.)

use super::segment::{is_null, sel_err, sys, Desc, FarKind};
use super::{Ctx, Fault, Platform, Res};
use jit::abi::{cr, flags as fl, sreg};

/// Why a task switch happens (SDM §7.3, Table 7-2): decides busy bits, NT and the back link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Jmp,
    Call,
    Iret,
    Interrupt,
}

/// 32-bit TSS field offsets (Figure 7-2).
mod off {
    pub const LINK: u64 = 0x00;
    pub const CR3: u64 = 0x1c;
    pub const EIP: u64 = 0x20;
    pub const EFLAGS: u64 = 0x24;
    pub const EAX: u64 = 0x28;
    pub const ES: u64 = 0x48;
    pub const LDT: u64 = 0x60;
}

/// Far JMP/CALL to a TSS descriptor or a task gate (SDM §7.3, Vol. 2 JMP/CALL).
pub fn far_to_task<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    kind: FarKind,
    sel: u16,
    d: Desc,
) -> Res<()> {
    let cpl = ctx.cpu.cpl();
    let rpl = (sel & 3) as u8;
    if d.dpl() < cpl || d.dpl() < rpl {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    let (tss_sel, tss) = if d.typ() == sys::TASK {
        let t = d.gate_selector();
        if t & 4 != 0 || is_null(t) {
            return Err(Fault::Gp(sel_err(t)));
        }
        (t, ctx.read_desc(t)?)
    } else {
        (sel, d)
    };
    let reason = if kind == FarKind::Jmp {
        Reason::Jmp
    } else {
        Reason::Call
    };
    let ret = ctx.next_rip;
    switch(ctx, tss_sel, tss, reason, ret, None)
}

/// Interrupt or exception through a task gate in the IDT (SDM §6.11.2, §7.3).
pub fn task_gate_interrupt<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    tss_sel: u16,
    error_code: Option<u32>,
    return_rip: u64,
) -> Res<()> {
    if tss_sel & 4 != 0 || is_null(tss_sel) {
        return Err(Fault::Ts(sel_err(tss_sel)));
    }
    let d = ctx.read_desc(tss_sel)?;
    switch(ctx, tss_sel, d, Reason::Interrupt, return_rip, error_code)
}

/// IRET with EFLAGS.NT = 1: return to the task in the current TSS's back link (SDM §7.3).
pub fn iret_task_return<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    let tr = ctx.cpu.s.tr;
    let link = ctx.read_linear(tr.base.wrapping_add(off::LINK) & 0xffff_ffff, 2, true)? as u16;
    if link & 4 != 0 || is_null(link) {
        return Err(Fault::Ts(sel_err(link)));
    }
    let d = ctx.read_desc(link)?;
    let ret = ctx.next_rip;
    switch(ctx, link, d, Reason::Iret, ret, None)
}

/// Sets or clears the busy bit (type bit 1) of the TSS descriptor `sel` in the GDT.
fn set_busy<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, sel: u16, busy: bool) -> Res<()> {
    let la = ctx.desc_addr(sel, 8).ok_or(Fault::Ts(sel_err(sel)))?;
    let b = ctx.read_linear(la + 5, 1, true)?;
    let nb = if busy { b | 2 } else { b & !2 };
    ctx.write_linear(la + 5, 1, nb, true)
}

/// The task switch proper (SDM §7.3 steps 1-13).
fn switch<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    sel: u16,
    d: Desc,
    reason: Reason,
    ret: u64,
    error_code: Option<u32>,
) -> Res<()> {
    let ts = Fault::Ts(sel_err(sel));
    if d.s() || !matches!(d.typ(), sys::TSS_AVAIL | sys::TSS_BUSY) {
        // 16-bit TSSs are not supported.
        return Err(if reason == Reason::Iret {
            ts
        } else {
            Fault::Gp(sel_err(sel))
        });
    }
    let busy = d.typ() == sys::TSS_BUSY;
    match reason {
        Reason::Iret if !busy => return Err(ts),
        Reason::Jmp | Reason::Call | Reason::Interrupt if busy => {
            return Err(Fault::Gp(sel_err(sel)))
        }
        _ => {}
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    if d.limit() < 0x67 {
        return Err(ts);
    }
    let old_tr = ctx.cpu.s.tr;
    if old_tr.typ() != sys::TSS_BUSY || old_tr.limit < 0x67 {
        return Err(Fault::Ts(sel_err(old_tr.selector)));
    }
    // Save the outgoing task (dynamic fields only).
    let ob = old_tr.base;
    let w = |o: u64| (ob + o) & 0xffff_ffff;
    let mut eflags = ctx.cpu.s.rflags & 0xffff_ffff;
    if reason == Reason::Iret {
        eflags &= !fl::NT;
    }
    ctx.write_linear(w(off::EIP), 4, ret & 0xffff_ffff, true)?;
    ctx.write_linear(w(off::EFLAGS), 4, eflags, true)?;
    for i in 0..8 {
        let v = ctx.cpu.s.gpr[i] & 0xffff_ffff;
        ctx.write_linear(w(off::EAX + 4 * i as u64), 4, v, true)?;
    }
    for i in 0..6 {
        let v = u64::from(ctx.cpu.s.seg[i].selector);
        ctx.write_linear(w(off::ES + 4 * i as u64), 2, v, true)?;
    }
    if matches!(reason, Reason::Jmp | Reason::Iret) {
        set_busy(ctx, old_tr.selector, false)?;
    }
    // Read the incoming task.
    let nb = d.base(false);
    let r = |o: u64| (nb + o) & 0xffff_ffff;
    let mut regs = [0u64; 8];
    for (i, x) in regs.iter_mut().enumerate() {
        *x = ctx.read_linear(r(off::EAX + 4 * i as u64), 4, true)?;
    }
    let mut sels = [0u16; 6];
    for (i, x) in sels.iter_mut().enumerate() {
        *x = ctx.read_linear(r(off::ES + 4 * i as u64), 2, true)? as u16;
    }
    let new_cr3 = ctx.read_linear(r(off::CR3), 4, true)?;
    let new_eip = ctx.read_linear(r(off::EIP), 4, true)?;
    let mut new_flags = ctx.read_linear(r(off::EFLAGS), 4, true)? | fl::FIXED1;
    let ldt = ctx.read_linear(r(off::LDT), 2, true)? as u16;
    if matches!(reason, Reason::Call | Reason::Interrupt) {
        ctx.write_linear(r(off::LINK), 2, u64::from(old_tr.selector), true)?;
        new_flags |= fl::NT;
    }
    if reason != Reason::Iret {
        set_busy(ctx, sel, true)?;
    }
    let mut nd = d;
    nd.raw |= 2 << 40;
    ctx.cpu.s.tr = nd.cache(sel, false);
    ctx.cpu.s.cr0 |= cr::CR0_TS;
    if ctx.cpu.paging() {
        ctx.set_cr3(new_cr3)?;
    }
    ctx.cpu.s.rflags = new_flags;
    for (i, v) in regs.into_iter().enumerate() {
        ctx.cpu.s.gpr[i] = v;
    }
    // LDT, then the segment registers at the new CPL (#TS for a bad selector).
    let to_ts = |f: Fault| match f {
        Fault::Gp(e) => Fault::Ts(e),
        f => f,
    };
    if is_null(ldt) {
        ctx.cpu.s.ldtr = super::mem::unusable_segment(ldt);
    } else {
        let ld = ctx.read_desc(ldt & !4).map_err(to_ts)?;
        if ldt & 4 != 0 || ld.s() || ld.typ() != sys::LDT || !ld.present() {
            return Err(Fault::Ts(sel_err(ldt)));
        }
        ctx.cpu.s.ldtr = ld.cache(ldt, false);
    }
    if new_flags & fl::VM != 0 {
        ctx.cpu.s.cpl = 3;
        for (i, s) in sels.into_iter().enumerate() {
            ctx.load_seg_real(i, s);
        }
    } else {
        let cs = sels[sreg::CS];
        let cpl = (cs & 3) as u8;
        if is_null(cs) {
            return Err(Fault::Ts(0));
        }
        let mut cd = ctx.read_desc(cs).map_err(to_ts)?;
        let ok = cd.is_code()
            && if cd.conforming() {
                cd.dpl() <= cpl
            } else {
                cd.dpl() == cpl
            };
        if !ok {
            return Err(Fault::Ts(sel_err(cs)));
        }
        if !cd.present() {
            return Err(Fault::Np(sel_err(cs)));
        }
        ctx.set_accessed(cs, &mut cd)?;
        ctx.cpu.s.seg[sreg::CS] = cd.cache(cs, false);
        ctx.cpu.s.cpl = cpl;
        for i in [sreg::SS, sreg::DS, sreg::ES, sreg::FS, sreg::GS] {
            ctx.load_seg(i, sels[i]).map_err(|f| match f {
                Fault::Gp(_) => Fault::Ts(sel_err(sels[i])),
                f => f,
            })?;
        }
    }
    ctx.commit_cs(ctx.cpu.s.seg[sreg::CS], new_eip, ctx.cpu.s.cpl)?;
    if let Some(e) = error_code {
        let size = if ctx.cpu.s.seg[sreg::SS].db() { 4 } else { 2 };
        ctx.push(u64::from(e), size)?;
    }
    Ok(())
}
