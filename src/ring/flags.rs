//! PUSHF/POPF and CLI/STI: the IOPL-sensitive flag instructions (SDM Vol. 2 PUSHF, POPF, CLI,
//! STI; Vol. 3A §20.2.7 for virtual-8086 mode). rinx does not advertise VME or PVI, so V86 code
//! with IOPL < 3 faults with #GP(0) and the monitor emulates.

use crate::cpu::far::merge_flags;
use crate::cpu::segment::stack_op_size;
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::Instruction;
use jit::abi::flags as fl;

/// V86 mode with IOPL < 3 traps the IOPL-sensitive instructions.
fn v86_trap<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> Res<()> {
    if ctx.cpu.v86() && ctx.cpu.iopl() < 3 {
        Err(Fault::Gp(0))
    } else {
        Ok(())
    }
}

/// PUSHF/PUSHFD/PUSHFQ: the image has VM and RF cleared.
pub fn pushf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    v86_trap(ctx)?;
    let v = ctx.cpu.s.rflags & !(fl::VM | fl::RF);
    ctx.push(v, stack_op_size(insn))
}

/// POPF/POPFD/POPFQ. At CPL 0 every flag but VM, VIP and VIF may change; IOPL only at CPL 0;
/// IF only when CPL <= IOPL (silently kept otherwise); RF is cleared; 16-bit POPF changes only
/// bits 0-15. In V86 mode (IOPL = 3) IOPL is kept.
pub fn popf<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    v86_trap(ctx)?;
    let size = stack_op_size(insn);
    let v = ctx.peek(0, size)?;
    let old = ctx.cpu.s.rflags;
    let cpl = if ctx.cpu.v86() { 3 } else { ctx.cpu.cpl() };
    let mut new = merge_flags(old, v & !fl::RF, cpl, size, false);
    new = (new & !(fl::VM | fl::VIP | fl::VIF)) | (old & (fl::VM | fl::VIP | fl::VIF));
    ctx.pop(size)?;
    ctx.cpu.s.rflags = new & !fl::RF;
    Ok(())
}

/// CLI: needs CPL <= IOPL in protected mode (IOPL = 3 in V86 mode).
pub fn cli<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    check_if_change(ctx)?;
    ctx.cpu.s.rflags &= !fl::IF;
    Ok(())
}

/// STI: as CLI; when IF goes from 0 to 1, interrupts stay inhibited until after the next
/// instruction (SDM Vol. 3A §6.8.3). The run loop checks `icount >= shadow_until` before each
/// instruction and `icount` is incremented after this one, so the shadow covers exactly the
/// following instruction with `icount + 2`.
pub fn sti<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    check_if_change(ctx)?;
    if ctx.cpu.s.rflags & fl::IF == 0 {
        ctx.cpu.shadow_until = ctx.cpu.icount + 2;
    }
    ctx.cpu.s.rflags |= fl::IF;
    Ok(())
}

fn check_if_change<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> Res<()> {
    if !ctx.cpu.protected() {
        return Ok(());
    }
    if ctx.cpu.v86() {
        return v86_trap(ctx);
    }
    if ctx.cpu.cpl() > ctx.cpu.iopl() {
        return Err(Fault::Gp(0));
    }
    Ok(())
}
