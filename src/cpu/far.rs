//! Far control transfers: JMP/CALL ptr and m16:xx (direct, through call gates, to a TSS or task
//! gate), RET far (RETF, RETF imm16), IRET/IRETD/IRETQ and INT n / INT3 / INTO / INT1
//! (Intel SDM Vol. 2 instruction pages; Vol. 3A §5.8 "Privilege level checking when
//! transferring program control between code segments", §6.12-§6.14, §20.2).
//!
//! Every transfer runs under [`Ctx::atomically`]: a fault restores the architectural state of the
//! faulting instruction (precise exceptions).

use super::flags::mask;
use super::interrupt::{self, EventKind};
use super::segment::{is_null, null_ss, sel_err, sys, Desc, FarKind};
use super::{Ctx, Fault, Platform, Res};
use iced_x86::{Code, Instruction, Mnemonic};
use jit::abi::{flags as fl, reg, sreg, Segment};

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Runs `f`; if it fails, restores the CPU state and `next_rip` as they were.
    pub fn atomically<T>(&mut self, f: impl FnOnce(&mut Self) -> Res<T>) -> Res<T> {
        let saved = self.cpu.s;
        let rip = self.next_rip;
        let r = f(self);
        if r.is_err() {
            self.cpu.s = saved;
            self.next_rip = rip;
        }
        r
    }

    /// Sets RSP after a stack switch with the width of the new stack: 64-bit, ESP (B = 1) or
    /// SP only.
    fn set_sp_for(&mut self, ss: &Segment, long: bool, v: u64) {
        let g = &mut self.cpu.s.gpr[reg::RSP];
        *g = if long {
            v
        } else if ss.db() {
            v & 0xffff_ffff
        } else {
            (*g & !0xffff) | (v & 0xffff)
        };
    }
}

/// Executes far-transfer and software-interrupt instructions; `None` for others.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    let far_branch = matches!(
        insn.code(),
        Code::Jmp_ptr1616
            | Code::Jmp_ptr1632
            | Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
            | Code::Call_ptr1616
            | Code::Call_ptr1632
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
    );
    Some(match insn.mnemonic() {
        Mnemonic::Jmp | Mnemonic::Call if far_branch => {
            let kind = if insn.mnemonic() == Mnemonic::Jmp {
                FarKind::Jmp
            } else {
                FarKind::Call
            };
            ctx.atomically(|c| {
                let (sel, off, osz) = c.read_far_ptr(insn)?;
                far_transfer(c, kind, sel, off, osz)
            })
        }
        Mnemonic::Retf => {
            let osz = match insn.code() {
                Code::Retfw | Code::Retfw_imm16 => 2,
                Code::Retfq | Code::Retfq_imm16 => 8,
                _ => 4,
            };
            let imm = match insn.code() {
                Code::Retfw_imm16 | Code::Retfd_imm16 | Code::Retfq_imm16 => {
                    u64::from(insn.immediate16())
                }
                _ => 0,
            };
            ctx.atomically(|c| retf(c, osz, imm))
        }
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => {
            let osz = match insn.code() {
                Code::Iretw => 2,
                Code::Iretq => 8,
                _ => 4,
            };
            ctx.atomically(|c| iret(c, osz))
        }
        Mnemonic::Int => int_n(ctx, insn.immediate8(), EventKind::Software),
        Mnemonic::Int3 => int_n(ctx, 3, EventKind::SoftException),
        Mnemonic::Into => {
            if ctx.cpu.mode64() {
                Err(Fault::Ud)
            } else if ctx.cpu.s.rflags & fl::OF != 0 {
                int_n(ctx, 4, EventKind::SoftException)
            } else {
                Ok(())
            }
        }
        Mnemonic::Int1 => int_n(ctx, 1, EventKind::Icebp),
        _ => return None,
    })
}

/// INT n / INT3 / INTO / INT1: delivers `vector` with the return address after the instruction.
/// INT n in virtual-8086 mode with IOPL < 3 raises #GP(0) (no VME, SDM §20.3.3).
pub fn int_n<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, vector: u8, kind: EventKind) -> Res<()> {
    if kind == EventKind::Software && ctx.cpu.v86() && ctx.cpu.iopl() < 3 {
        return Err(Fault::Gp(0));
    }
    let ret = ctx.next_rip;
    interrupt::deliver(ctx, vector, kind, None, ret)
}

/// Far JMP or CALL to `sel:off` with operand size `osz` bytes.
pub fn far_transfer<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    kind: FarKind,
    sel: u16,
    off: u64,
    osz: u32,
) -> Res<()> {
    let off = off & mask(osz);
    if !ctx.cpu.protected() || ctx.cpu.v86() {
        if kind == FarKind::Call {
            let cs = u64::from(ctx.cpu.s.seg[sreg::CS].selector);
            ctx.push(cs, osz)?;
            ctx.push(ctx.next_rip, osz)?;
        }
        if off > u64::from(ctx.cpu.s.seg[sreg::CS].limit) {
            return Err(Fault::Gp(0));
        }
        ctx.load_seg_real(sreg::CS, sel);
        ctx.next_rip = off;
        return Ok(());
    }
    if is_null(sel) {
        return Err(Fault::Gp(0));
    }
    let d = ctx.read_desc(sel)?;
    if d.is_code() {
        let cs = ctx.check_code_direct(sel, d)?;
        let cpl = ctx.cpu.cpl();
        if kind == FarKind::Call {
            let old_cs = u64::from(ctx.cpu.s.seg[sreg::CS].selector);
            ctx.push(old_cs, osz)?;
            ctx.push(ctx.next_rip, osz)?;
        }
        return ctx.commit_cs(cs, off, cpl);
    }
    if d.s() {
        return Err(Fault::Gp(sel_err(sel)));
    }
    let long = ctx.cpu.long_mode();
    match d.typ() {
        sys::CALL if long => call_gate(ctx, kind, sel),
        sys::CALL16 | sys::CALL if !long => call_gate(ctx, kind, sel),
        sys::TSS16_AVAIL | sys::TSS_AVAIL | sys::TASK if !long => {
            super::task::far_to_task(ctx, kind, sel, d)
        }
        _ => Err(Fault::Gp(sel_err(sel))),
    }
}

/// Far JMP/CALL through a call gate (SDM §5.8.4-§5.8.6; IA-32e §5.8.3.1).
fn call_gate<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, kind: FarKind, gsel: u16) -> Res<()> {
    let long = ctx.cpu.long_mode();
    let gate = if long {
        ctx.read_desc16(gsel)?
    } else {
        ctx.read_desc(gsel)?
    };
    if long && (gate.hi >> 40) & 0x1f != 0 {
        return Err(Fault::Gp(sel_err(gsel)));
    }
    let cpl = ctx.cpu.cpl();
    let rpl = (gsel & 3) as u8;
    if gate.dpl() < cpl || gate.dpl() < rpl {
        return Err(Fault::Gp(sel_err(gsel)));
    }
    if !gate.present() {
        return Err(Fault::Np(sel_err(gsel)));
    }
    let sel = gate.gate_selector();
    if is_null(sel) {
        return Err(Fault::Gp(0));
    }
    let mut d = ctx.read_desc(sel)?;
    if !d.is_code() || d.dpl() > cpl {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if long && (!d.l() || d.db()) {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if kind == FarKind::Jmp && !d.conforming() && d.dpl() != cpl {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    let gsize: u32 = if long {
        8
    } else if gate.typ() == sys::CALL {
        4
    } else {
        2
    };
    let mut target = gate.gate_offset(long);
    if gsize == 2 {
        target &= 0xffff;
    }
    let new_cpl = if d.conforming() { cpl } else { d.dpl() };
    ctx.set_accessed(sel, &mut d)?;
    let cs = d.cache((sel & 0xfffc) | u16::from(new_cpl), false);
    let old = ctx.cpu.s;
    if kind == FarKind::Call && new_cpl < cpl {
        // More privilege: switch to the TSS stack of the new level and copy parameters.
        if long {
            let rsp = super::gates::tss_rsp64(ctx, 4 + 8 * u64::from(new_cpl))?;
            if !super::mem::canonical(rsp) {
                return Err(Fault::Ss(0));
            }
            ctx.cpu.s.seg[sreg::CS] = cs;
            ctx.cpu.s.cpl = new_cpl;
            ctx.cpu.s.seg[sreg::SS] = null_ss(u16::from(new_cpl), new_cpl);
            ctx.cpu.s.gpr[reg::RSP] = rsp;
            ctx.push(u64::from(old.seg[sreg::SS].selector), 8)?;
            ctx.push(old.gpr[reg::RSP], 8)?;
        } else {
            let (ss_sel, esp) = super::gates::tss_stack(ctx, new_cpl)?;
            let ss = ctx.check_stack_seg(ss_sel, new_cpl, false, false)?;
            let n = gate.gate_params();
            // Read parameters from the old stack first (still at the old privilege).
            let mut params = Vec::with_capacity(n as usize);
            for i in 0..n {
                params.push(ctx.peek(u64::from(i * gsize), gsize)?);
            }
            ctx.cpu.s.seg[sreg::SS] = ss;
            ctx.cpu.s.gpr[reg::RSP] = esp & 0xffff_ffff;
            ctx.cpu.s.cpl = new_cpl;
            let old_sp = if old.seg[sreg::SS].db() {
                old.gpr[reg::RSP] & 0xffff_ffff
            } else {
                old.gpr[reg::RSP] & 0xffff
            };
            ctx.push(u64::from(old.seg[sreg::SS].selector), gsize)?;
            ctx.push(old_sp, gsize)?;
            for p in params.iter().rev() {
                ctx.push(*p, gsize)?;
            }
        }
    }
    if kind == FarKind::Call {
        if long {
            ctx.cpu.s.seg[sreg::CS] = cs;
        }
        ctx.push(u64::from(old.seg[sreg::CS].selector), gsize)?;
        ctx.push(ctx.next_rip, gsize)?;
    }
    ctx.commit_cs(cs, target, new_cpl)
}

/// Checks a return code segment (RETF, IRET): RPL >= CPL; conforming DPL <= RPL,
/// non-conforming DPL = RPL; present.
fn check_return_cs<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, sel: u16) -> Res<Desc> {
    if is_null(sel) {
        return Err(Fault::Gp(0));
    }
    let mut d = ctx.read_desc(sel)?;
    let rpl = (sel & 3) as u8;
    if !d.is_code() || rpl < ctx.cpu.cpl() {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if ctx.cpu.long_mode() && d.l() && d.db() {
        return Err(Fault::Gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::Np(sel_err(sel)));
    }
    ctx.set_accessed(sel, &mut d)?;
    Ok(d)
}

/// After a return to an outer level, data segment registers the new CPL may not use are
/// nulled (SDM Vol. 2 RET/IRET "FOR each SegReg in (ES, FS, GS, DS)").
fn null_inaccessible_segments<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) {
    let cpl = ctx.cpu.cpl();
    for s in [sreg::ES, sreg::FS, sreg::GS, sreg::DS] {
        let c = ctx.cpu.s.seg[s];
        let data_or_nc = c.attr & 0x10 != 0 && (c.typ() & 8 == 0 || c.typ() & 4 == 0);
        if data_or_nc && c.dpl() < cpl && !(ctx.cpu.mode64() && is_null(c.selector)) {
            ctx.cpu.s.seg[s] = super::mem::unusable_segment(0);
        }
    }
}

/// RET far with `imm` bytes of parameters to release.
fn retf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, osz: u32, imm: u64) -> Res<()> {
    if !ctx.cpu.protected() || ctx.cpu.v86() {
        let ip = ctx.peek(0, osz)?;
        let cs = ctx.peek(u64::from(osz), osz)? as u16;
        if ip > u64::from(ctx.cpu.s.seg[sreg::CS].limit) {
            return Err(Fault::Gp(0));
        }
        ctx.pop(osz)?;
        ctx.pop(osz)?;
        release(ctx, imm);
        ctx.load_seg_real(sreg::CS, cs);
        ctx.next_rip = ip;
        return Ok(());
    }
    let ip = ctx.peek(0, osz)?;
    let sel = ctx.peek(u64::from(osz), osz)? as u16;
    let d = check_return_cs(ctx, sel)?;
    let rpl = (sel & 3) as u8;
    let long_target = ctx.cpu.long_mode() && d.l();
    let cs = d.cache(sel, false);
    if rpl == ctx.cpu.cpl() {
        ctx.pop(osz)?;
        ctx.pop(osz)?;
        release(ctx, imm);
        return ctx.commit_cs(cs, ip, rpl);
    }
    // Return to an outer privilege level: SS:ESP follow the parameters.
    let base = 2 * u64::from(osz) + imm;
    let sp = ctx.peek(base, osz)?;
    let ss_sel = ctx.peek(base + u64::from(osz), osz)? as u16;
    let ss = ctx.check_stack_seg(ss_sel, rpl, true, long_target)?;
    ctx.commit_cs(cs, ip, rpl)?;
    ctx.cpu.s.seg[sreg::SS] = ss;
    ctx.set_sp_for(&ss, long_target, sp.wrapping_add(imm));
    null_inaccessible_segments(ctx);
    Ok(())
}

/// Adds `imm` to the stack pointer with the current stack width.
fn release<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, imm: u64) {
    if imm != 0 {
        let ss = ctx.stack_size();
        let sp = ctx.gpr(reg::RSP, ss).wrapping_add(imm) & mask(ss);
        ctx.set_gpr(reg::RSP, ss, sp);
    }
}

/// The EFLAGS image an IRET/POPF may install: which bits change depends on the old CPL and
/// IOPL (SDM Vol. 2 IRET, POPF). `osz` 2 changes only bits 0-15. VM, VIF and VIP are handled
/// by the callers.
pub fn merge_flags(old: u64, new: u64, cpl: u8, osz: u32, allow_vif: bool) -> u64 {
    let iopl = ((old & fl::IOPL) >> fl::IOPL_SHIFT) as u8;
    let mut changeable = fl::STATUS | fl::TF | fl::DF | fl::NT | fl::AC | fl::ID | fl::RF;
    if cpl == 0 {
        changeable |= fl::IOPL;
        if allow_vif {
            changeable |= fl::VIF | fl::VIP;
        }
    }
    if cpl <= iopl {
        changeable |= fl::IF;
    }
    if osz == 2 {
        changeable &= 0xffff;
    }
    ((old & !changeable) | (new & changeable)) | fl::FIXED1
}

/// IRET / IRETD / IRETQ (SDM Vol. 2 IRET pseudo-code).
fn iret<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, osz: u32) -> Res<()> {
    if !ctx.cpu.protected() {
        // Real-address mode.
        let ip = ctx.peek(0, osz)?;
        let cs = ctx.peek(u64::from(osz), osz)? as u16;
        let f = ctx.peek(2 * u64::from(osz), osz)?;
        if ip > u64::from(ctx.cpu.s.seg[sreg::CS].limit) {
            return Err(Fault::Gp(0));
        }
        for _ in 0..3 {
            ctx.pop(osz)?;
        }
        let old = ctx.cpu.s.rflags;
        // Reserved bits 3, 5 and 15 always read 0 (SDM Vol. 1 §3.4.3).
        ctx.cpu.s.rflags = if osz == 2 {
            (old & !0xffff) | (f & 0x7fd5)
        } else {
            (f & 0x257fd5) | (old & 0x1a_0000)
        } | fl::FIXED1;
        ctx.load_seg_real(sreg::CS, cs);
        ctx.next_rip = ip;
        return Ok(());
    }
    if ctx.cpu.v86() {
        // IOPL-sensitive in V86 mode (no VME): stays in V86, IOPL and VM unchanged.
        if ctx.cpu.iopl() < 3 {
            return Err(Fault::Gp(0));
        }
        let ip = ctx.peek(0, osz)?;
        let cs = ctx.peek(u64::from(osz), osz)? as u16;
        let f = ctx.peek(2 * u64::from(osz), osz)?;
        if ip > 0xffff {
            return Err(Fault::Gp(0));
        }
        for _ in 0..3 {
            ctx.pop(osz)?;
        }
        let old = ctx.cpu.s.rflags;
        let keep = fl::VM | fl::IOPL | fl::VIP | fl::VIF | if osz == 2 { !0xffff } else { 0 };
        ctx.cpu.s.rflags = (old & keep) | (f & !keep & 0x3f_7fd5) | fl::FIXED1;
        ctx.load_seg_real(sreg::CS, cs);
        ctx.next_rip = ip;
        return Ok(());
    }
    if ctx.cpu.s.rflags & fl::NT != 0 {
        if ctx.cpu.long_mode() {
            return Err(Fault::Gp(0));
        }
        return super::task::iret_task_return(ctx);
    }
    let cpl = ctx.cpu.cpl();
    let ip = ctx.peek(0, osz)?;
    let sel = ctx.peek(u64::from(osz), osz)? as u16;
    let f = ctx.peek(2 * u64::from(osz), osz)?;
    if f & fl::VM != 0 && cpl == 0 && osz == 4 && !ctx.cpu.long_mode() {
        return iret_to_v86(ctx, ip, sel, f);
    }
    let d = check_return_cs(ctx, sel)?;
    let rpl = (sel & 3) as u8;
    let long_target = ctx.cpu.long_mode() && d.l();
    let cs = d.cache(sel, false);
    let new_flags = merge_flags(ctx.cpu.s.rflags, f, cpl, osz, true) & !fl::VM;
    // In 64-bit mode IRET always pops SS:RSP (SDM Vol. 2 IRET, IA-32e mode).
    if rpl == cpl && !ctx.cpu.mode64() {
        for _ in 0..3 {
            ctx.pop(osz)?;
        }
        ctx.commit_cs(cs, ip, rpl)?;
        ctx.cpu.s.rflags = new_flags;
        return Ok(());
    }
    // Outer privilege, or IRETQ (which always pops SS:RSP).
    let sp = ctx.peek(3 * u64::from(osz), osz)?;
    let ss_sel = ctx.peek(4 * u64::from(osz), osz)? as u16;
    let ss = ctx.check_stack_seg(ss_sel, rpl, true, long_target)?;
    ctx.commit_cs(cs, ip, rpl)?;
    ctx.cpu.s.seg[sreg::SS] = ss;
    // IRETQ loads all 64 bits of RSP, even when returning to compatibility mode.
    ctx.set_sp_for(&ss, long_target || osz == 8, sp);
    ctx.cpu.s.rflags = new_flags;
    if rpl > cpl {
        null_inaccessible_segments(ctx);
    }
    Ok(())
}

/// IRETD at CPL 0 with VM set in the popped EFLAGS: return to virtual-8086 mode
/// (SDM Vol. 2 IRET "RETURN-TO-VIRTUAL-8086-MODE").
fn iret_to_v86<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, ip: u64, cs: u16, f: u64) -> Res<()> {
    let mut v = [0u64; 6];
    for (i, x) in v.iter_mut().enumerate() {
        *x = ctx.peek(12 + 4 * i as u64, 4)?;
    }
    let [esp, ss, es, ds, fs, gs] = v;
    ctx.cpu.s.rflags = (f & 0x3f_7fd5) | fl::FIXED1 | fl::VM;
    ctx.cpu.s.cpl = 3;
    for (idx, sel) in [
        (sreg::CS, cs),
        (sreg::SS, ss as u16),
        (sreg::ES, es as u16),
        (sreg::DS, ds as u16),
        (sreg::FS, fs as u16),
        (sreg::GS, gs as u16),
    ] {
        ctx.load_seg_real(idx, sel);
    }
    ctx.cpu.s.gpr[reg::RSP] = esp & 0xffff_ffff;
    ctx.next_rip = ip & 0xffff;
    Ok(())
}
