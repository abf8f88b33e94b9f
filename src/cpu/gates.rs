//! Protected-mode and IA-32e interrupt delivery through IDT gates (Intel SDM Vol. 3A §6.10-
//! §6.14, and the INT n pseudo-code of Vol. 2A). Also the TSS stack-pointer lookups used by
//! privilege-changing delivery and call gates (§7.2.1, §7.7).
//!
//! Error codes are built without the EXT bit and get it at the end when the event is external to
//! the program (hardware interrupt, NMI, exception, INT1), per §6.13.

use super::interrupt::EventKind;
use super::segment::{is_null, null_ss, sel_err, sys, Desc};
use super::{Ctx, Fault, Platform, Res};
use jit::abi::{flags as fl, reg, sreg, Segment};

/// Legacy TSS stack for privilege level `pl`: (SS, ESP) from a 32-bit TSS (offsets 4+8n, 8+8n)
/// or (SS, SP) from a 16-bit TSS (offsets 2+4n, 4+4n). Past the TSS limit: #TS(TR).
pub fn tss_stack<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, pl: u8) -> Res<(u16, u64)> {
    let tr = ctx.cpu.s.tr;
    let ts = Fault::Ts(sel_err(tr.selector));
    if tr.typ() & 8 != 0 {
        let off = 4 + 8 * u64::from(pl);
        if off + 5 > u64::from(tr.limit) {
            return Err(ts);
        }
        let esp = ctx.read_linear(tr.base.wrapping_add(off) & 0xffff_ffff, 4, true)?;
        let ss = ctx.read_linear(tr.base.wrapping_add(off + 4) & 0xffff_ffff, 2, true)?;
        Ok((ss as u16, esp))
    } else {
        let off = 2 + 4 * u64::from(pl);
        if off + 3 > u64::from(tr.limit) {
            return Err(ts);
        }
        let sp = ctx.read_linear(tr.base.wrapping_add(off) & 0xffff_ffff, 2, true)?;
        let ss = ctx.read_linear(tr.base.wrapping_add(off + 2) & 0xffff_ffff, 2, true)?;
        Ok((ss as u16, sp))
    }
}

/// IA-32e TSS stack pointer at byte offset `off` (RSPn at 4+8n, ISTn at 0x1C+8n), §7.7.
pub fn tss_rsp64<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, off: u64) -> Res<u64> {
    let tr = ctx.cpu.s.tr;
    if off + 7 > u64::from(tr.limit) {
        return Err(Fault::Ts(sel_err(tr.selector)));
    }
    ctx.read_linear(tr.base.wrapping_add(off), 8, true)
}

/// Adds EXT (bit 0) to a selector error code.
fn with_ext(f: Fault, ext: u32) -> Fault {
    match f {
        Fault::Gp(e) => Fault::Gp(e | ext),
        Fault::Np(e) => Fault::Np(e | ext),
        Fault::Ts(e) => Fault::Ts(e | ext),
        Fault::Ss(e) => Fault::Ss(e | ext),
        f => f,
    }
}

/// Delivers `vector` through the IDT in protected mode or IA-32e mode. The caller restores the
/// state if this fails (see [`super::interrupt::deliver`]).
pub fn deliver_protected<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    vector: u8,
    kind: EventKind,
    error_code: Option<u32>,
    return_rip: u64,
) -> Res<()> {
    let ext = match kind {
        EventKind::Software | EventKind::SoftException => 0,
        _ => 1,
    };
    let r = if ctx.cpu.long_mode() {
        deliver_ia32e(ctx, vector, kind, error_code, return_rip)
    } else {
        deliver_legacy(ctx, vector, kind, error_code, return_rip)
    };
    r.map_err(|f| with_ext(f, ext))
}

/// Error code naming IDT entry `vector` (IDT bit set).
fn idt_err(vector: u8) -> u32 {
    u32::from(vector) * 8 + 2
}

/// Checks the gate's DPL for software interrupts and presence (§6.12.1.1).
fn check_gate(cpl: u8, d: &Desc, vector: u8, kind: EventKind) -> Res<()> {
    if matches!(kind, EventKind::Software | EventKind::SoftException) && d.dpl() < cpl {
        return Err(Fault::Gp(idt_err(vector)));
    }
    if !d.present() {
        return Err(Fault::Np(idt_err(vector)));
    }
    Ok(())
}

/// Reads and checks the handler's code segment; returns (descriptor, new CPL).
fn handler_cs<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, sel: u16) -> Res<(Desc, u8)> {
    if is_null(sel) {
        return Err(Fault::Gp(0));
    }
    let d = ctx.read_desc(sel)?;
    let cpl = ctx.cpu.cpl();
    if !d.is_code() || d.dpl() > cpl {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if ctx.cpu.long_mode() && (!d.l() || d.db()) {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    let new_cpl = if d.conforming() { cpl } else { d.dpl() };
    Ok((d, new_cpl))
}

fn finish_flags<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, interrupt_gate: bool) {
    ctx.cpu.s.rflags &= !(fl::TF | fl::NT | fl::RF | fl::VM);
    if interrupt_gate {
        ctx.cpu.s.rflags &= !fl::IF;
    }
}

fn deliver_legacy<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    vector: u8,
    kind: EventKind,
    error_code: Option<u32>,
    return_rip: u64,
) -> Res<()> {
    let idtr = ctx.cpu.s.idtr;
    let off = u64::from(vector) * 8;
    if off + 7 > u64::from(idtr.limit) {
        return Err(Fault::Gp(idt_err(vector)));
    }
    let raw = ctx.read_linear(idtr.base.wrapping_add(off) & 0xffff_ffff, 8, true)?;
    let gate = Desc { raw, hi: 0 };
    let typ = gate.typ();
    if gate.s()
        || !matches!(
            typ,
            sys::TASK | sys::INT16 | sys::TRAP16 | sys::INT | sys::TRAP
        )
    {
        return Err(Fault::Gp(idt_err(vector)));
    }
    let cpl = ctx.cpu.cpl();
    check_gate(cpl, &gate, vector, kind)?;
    if typ == sys::TASK {
        return super::task::task_gate_interrupt(ctx, gate.gate_selector(), error_code, return_rip);
    }
    let size: u32 = if typ & 8 != 0 { 4 } else { 2 };
    let sel = gate.gate_selector();
    let (mut cs_d, new_cpl) = handler_cs(ctx, sel)?;
    let v86 = ctx.cpu.v86();
    let old = ctx.cpu.s;
    let eflags = old.rflags & 0xffff_ffff;
    if new_cpl < cpl {
        // Inter-privilege: new stack from the TSS (§6.12.1, Figure 6-4).
        if v86 && new_cpl != 0 {
            return Err(Fault::Gp(sel_err(sel)));
        }
        let (ss_sel, esp) = tss_stack(ctx, new_cpl)?;
        let ss = ctx.check_stack_seg(ss_sel, new_cpl, false, false)?;
        ctx.cpu.s.seg[sreg::SS] = ss;
        ctx.cpu.s.gpr[reg::RSP] = esp & 0xffff_ffff;
        ctx.cpu.s.cpl = new_cpl;
        ctx.cpu.s.rflags &= !fl::VM;
        if v86 {
            for s in [sreg::GS, sreg::FS, sreg::DS, sreg::ES] {
                ctx.push(u64::from(old.seg[s].selector), size)?;
            }
        }
        ctx.push(u64::from(old.seg[sreg::SS].selector), size)?;
        ctx.push(old.gpr[reg::RSP] & 0xffff_ffff, size)?;
    } else if v86 {
        return Err(Fault::Gp(sel_err(sel)));
    }
    ctx.push(eflags, size)?;
    ctx.push(u64::from(old.seg[sreg::CS].selector), size)?;
    ctx.push(return_rip, size)?;
    if let Some(e) = error_code {
        ctx.push(u64::from(e), size)?;
    }
    if v86 {
        for s in [sreg::GS, sreg::FS, sreg::DS, sreg::ES] {
            ctx.cpu.s.seg[s] = super::mem::unusable_segment(0);
        }
    }
    ctx.set_accessed(sel, &mut cs_d)?;
    let cs = cs_d.cache((sel & 0xfffc) | u16::from(new_cpl), false);
    let mut target = gate.gate_offset(false);
    if size == 2 {
        target &= 0xffff;
    }
    ctx.commit_cs(cs, target, new_cpl)?;
    finish_flags(ctx, typ & 1 == 0);
    Ok(())
}

fn deliver_ia32e<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    vector: u8,
    kind: EventKind,
    error_code: Option<u32>,
    return_rip: u64,
) -> Res<()> {
    let idtr = ctx.cpu.s.idtr;
    let off = u64::from(vector) * 16;
    if off + 15 > u64::from(idtr.limit) {
        return Err(Fault::Gp(idt_err(vector)));
    }
    let raw = ctx.read_linear(idtr.base.wrapping_add(off), 8, true)?;
    let hi = ctx.read_linear(idtr.base.wrapping_add(off + 8), 8, true)?;
    let gate = Desc { raw, hi };
    let typ = gate.typ();
    // Only 64-bit interrupt and trap gates exist in the IA-32e IDT (§6.14.1); the upper
    // type field must be 0.
    if gate.s() || !matches!(typ, sys::INT | sys::TRAP) || (hi >> 40) & 0x1f != 0 {
        return Err(Fault::Gp(idt_err(vector)));
    }
    let cpl = ctx.cpu.cpl();
    check_gate(cpl, &gate, vector, kind)?;
    let sel = gate.gate_selector();
    let (mut cs_d, new_cpl) = handler_cs(ctx, sel)?;
    let target = gate.gate_offset(true);
    if !super::mem::canonical(target) {
        return Err(Fault::Gp(0));
    }
    let old = ctx.cpu.s;
    let ist = gate.gate_ist();
    let mut rsp = old.gpr[reg::RSP];
    if ist != 0 {
        rsp = tss_rsp64(ctx, 0x1c + 8 * u64::from(ist))?;
    } else if new_cpl < cpl {
        rsp = tss_rsp64(ctx, 4 + 8 * u64::from(new_cpl))?;
    }
    if !super::mem::canonical(rsp) {
        return Err(Fault::Ss(0));
    }
    rsp &= !0xf;
    if new_cpl < cpl {
        // SS becomes a null selector with RPL = new CPL (§6.14.4).
        ctx.cpu.s.seg[sreg::SS] = null_ss(u16::from(new_cpl), new_cpl);
    }
    ctx.set_accessed(sel, &mut cs_d)?;
    let cs: Segment = cs_d.cache((sel & 0xfffc) | u16::from(new_cpl), false);
    ctx.cpu.s.seg[sreg::CS] = cs;
    ctx.cpu.s.cpl = new_cpl;
    ctx.cpu.s.gpr[reg::RSP] = rsp;
    ctx.push(u64::from(old.seg[sreg::SS].selector), 8)?;
    ctx.push(old.gpr[reg::RSP], 8)?;
    ctx.push(old.rflags, 8)?;
    ctx.push(u64::from(old.seg[sreg::CS].selector), 8)?;
    ctx.push(return_rip, 8)?;
    if let Some(e) = error_code {
        ctx.push(u64::from(e), 8)?;
    }
    ctx.commit_cs(cs, target, new_cpl)?;
    finish_flags(ctx, typ & 1 == 0);
    Ok(())
}
