//! Hardware task switching (Intel SDM Vol. 3A chapter 7): JMP/CALL to a TSS or task gate, task
//! gates in the IDT, and IRET with EFLAGS.NT. Only outside IA-32e mode (callers refuse it
//! there). Both TSS formats: the 32-bit TSS (Figure 7-2) and the 80286 16-bit TSS (Figure 7-10),
//! which has no CR3, FS, GS or I/O map and 16-bit IP/FLAGS/registers (§7.6).
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

/// 16-bit TSS field offsets (Figure 7-10).
mod off16 {
    pub const IP: u64 = 0x0e;
    pub const FLAGS: u64 = 0x10;
    pub const AX: u64 = 0x12;
    /// ES, CS, SS, DS in that order.
    pub const ES: u64 = 0x22;
    pub const LDT: u64 = 0x2a;
    /// Smallest valid limit of a 16-bit TSS.
    pub const MIN_LIMIT: u32 = 0x2b;
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
    if d.s()
        || !matches!(
            d.typ(),
            sys::TSS_AVAIL | sys::TSS_BUSY | sys::TSS16_AVAIL | sys::TSS16_BUSY
        )
    {
        return Err(if reason == Reason::Iret {
            ts
        } else {
            Fault::Gp(sel_err(sel))
        });
    }
    // Type bit 3 selects the 32-bit format; bit 1 is busy.
    let new16 = d.typ() & 8 == 0;
    let busy = d.typ() & 2 != 0;
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
    if d.limit() < if new16 { off16::MIN_LIMIT } else { 0x67 } {
        return Err(ts);
    }
    let old_tr = ctx.cpu.s.tr;
    let old16 = old_tr.typ() == sys::TSS16_BUSY;
    if !(old16 || old_tr.typ() == sys::TSS_BUSY)
        || old_tr.limit < if old16 { off16::MIN_LIMIT } else { 0x67 }
    {
        return Err(Fault::Ts(sel_err(old_tr.selector)));
    }
    // Save the outgoing task (dynamic fields only).
    let ob = old_tr.base;
    let w = |o: u64| (ob + o) & 0xffff_ffff;
    let mut eflags = ctx.cpu.s.rflags & 0xffff_ffff;
    if reason == Reason::Iret {
        eflags &= !fl::NT;
    }
    if old16 {
        // The upper halves of EIP, EFLAGS and the registers are lost (§7.6).
        ctx.write_linear(w(off16::IP), 2, ret & 0xffff, true)?;
        ctx.write_linear(w(off16::FLAGS), 2, eflags & 0xffff, true)?;
        for i in 0..8 {
            let v = ctx.cpu.s.gpr[i] & 0xffff;
            ctx.write_linear(w(off16::AX + 2 * i as u64), 2, v, true)?;
        }
        for i in 0..4 {
            let v = u64::from(ctx.cpu.s.seg[i].selector);
            ctx.write_linear(w(off16::ES + 2 * i as u64), 2, v, true)?;
        }
    } else {
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
    }
    if matches!(reason, Reason::Jmp | Reason::Iret) {
        set_busy(ctx, old_tr.selector, false)?;
    }
    // Read the incoming task.
    let nb = d.base(false);
    let r = |o: u64| (nb + o) & 0xffff_ffff;
    let mut regs = [0u64; 8];
    // Null FS/GS for a 16-bit task, which has no fields for them.
    let mut sels = [0u16; 6];
    let (new_cr3, new_eip, mut new_flags, ldt);
    if new16 {
        for (i, x) in regs.iter_mut().enumerate() {
            // The SDM leaves the upper halves undefined (§7.6); like Bochs, set them to ones.
            *x = 0xffff_0000 | ctx.read_linear(r(off16::AX + 2 * i as u64), 2, true)?;
        }
        for (i, x) in sels.iter_mut().take(4).enumerate() {
            *x = ctx.read_linear(r(off16::ES + 2 * i as u64), 2, true)? as u16;
        }
        // No CR3 field: the 16-bit task keeps the current page tables.
        new_cr3 = None;
        new_eip = ctx.read_linear(r(off16::IP), 2, true)?;
        new_flags = ctx.read_linear(r(off16::FLAGS), 2, true)? | fl::FIXED1;
        ldt = ctx.read_linear(r(off16::LDT), 2, true)? as u16;
    } else {
        for (i, x) in regs.iter_mut().enumerate() {
            *x = ctx.read_linear(r(off::EAX + 4 * i as u64), 4, true)?;
        }
        for (i, x) in sels.iter_mut().enumerate() {
            *x = ctx.read_linear(r(off::ES + 4 * i as u64), 2, true)? as u16;
        }
        new_cr3 = Some(ctx.read_linear(r(off::CR3), 4, true)?);
        new_eip = ctx.read_linear(r(off::EIP), 4, true)?;
        new_flags = ctx.read_linear(r(off::EFLAGS), 4, true)? | fl::FIXED1;
        ldt = ctx.read_linear(r(off::LDT), 2, true)? as u16;
    }
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
    if let (true, Some(cr3)) = (ctx.cpu.paging(), new_cr3) {
        ctx.set_cr3(cr3)?;
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
        // The error code's width follows the new task's TSS format.
        let size = if new16 { 2 } else { 4 };
        ctx.push(u64::from(e), size)?;
    }
    Ok(())
}
