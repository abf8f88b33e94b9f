//! Exception and interrupt delivery (Intel SDM Vol. 3A chapter 6): the real-mode IVT,
//! protected-mode and IA-32e IDT gates, the double-fault rules and triple fault.

use super::{Ctx, Fault, Platform, Res};
use jit::abi::{flags as fl, reg, sreg, Segment};

/// What caused an event; decides the return address, the privilege check on the gate's DPL and
/// the error code (SDM Vol. 3A §6.4, §6.12.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An external interrupt from the PIC / APIC.
    External,
    /// NMI.
    Nmi,
    /// A fault or abort raised by an instruction (return to the faulting instruction).
    Exception,
    /// INT n (gate DPL checked against CPL; return after the instruction).
    Software,
    /// INT3 / INTO: software exceptions (gate DPL checked; return after the instruction).
    SoftException,
    /// INT1 (ICEBP): privileged software exception without the DPL check.
    Icebp,
}

/// The processor shut down (triple fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown;

/// Delivers `vector` with the given kind; `return_rip` is the RIP pushed as the return address.
pub fn deliver<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    vector: u8,
    kind: EventKind,
    error_code: Option<u32>,
    return_rip: u64,
) -> Res<()> {
    // Delivery either completes or leaves the state of the interrupted instruction (stack
    // writes below the stack pointer may remain, as on hardware).
    let saved = ctx.cpu.s;
    let saved_rip = ctx.next_rip;
    let r = if !ctx.cpu.protected() {
        deliver_real(ctx, vector, return_rip)
    } else {
        super::gates::deliver_protected(ctx, vector, kind, error_code, return_rip)
    };
    if r.is_err() {
        ctx.cpu.s = saved;
        ctx.next_rip = saved_rip;
    } else {
        ctx.cpu.halted = false;
    }
    if ctx.cpu.trace.is_on() {
        let handler = ctx.next_rip;
        crate::trace::hooks::event(
            ctx.cpu, &saved, vector, kind, error_code, return_rip, handler, &r,
        );
    }
    r
}

/// Real-address-mode delivery through the IVT (SDM Vol. 3A §20.1.4).
fn deliver_real<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    vector: u8,
    return_rip: u64,
) -> Res<()> {
    let idtr = ctx.cpu.s.idtr;
    let off = u64::from(vector) * 4;
    if off + 3 > u64::from(idtr.limit) {
        return Err(Fault::Gp(0));
    }
    let entry = ctx.read_linear(idtr.base.wrapping_add(off) & 0xffff_ffff, 4, true)?;
    let flags = ctx.cpu.s.rflags;
    let cs = ctx.cpu.s.seg[sreg::CS].selector;
    ctx.push(flags & 0xffff, 2)?;
    ctx.push(u64::from(cs), 2)?;
    ctx.push(return_rip & 0xffff, 2)?;
    ctx.cpu.s.rflags &= !(fl::IF | fl::TF | fl::AC | fl::RF);
    let new_cs = (entry >> 16) as u16;
    let limit = ctx.cpu.s.seg[sreg::CS].limit;
    ctx.cpu.s.seg[sreg::CS] = Segment {
        attr: ctx.cpu.s.seg[sreg::CS].attr,
        ..Segment::real_mode(new_cs, limit)
    };
    ctx.cpu.s.rip = entry & 0xffff;
    ctx.next_rip = ctx.cpu.s.rip;
    Ok(())
}

/// Raises `f` for the instruction at `ctx.cpu.cur_rip`, applying the double-fault rules
/// (SDM Vol. 3A §6.15, Table 6-5). Returns `Err(Shutdown)` on a triple fault.
pub fn raise<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, f: Fault) -> Result<(), Shutdown> {
    let mut cur = f;
    let mut first: Option<Fault> = None;
    // #BP and #OF are traps: they return past the instruction (SDM Vol. 3A §6.5).
    let trap_rip = ctx.next_rip;
    loop {
        if let Fault::Pf { addr, .. } = cur {
            ctx.cpu.s.cr2 = addr;
        }
        let v = cur.vector() as usize;
        ctx.cpu.exceptions[v] += 1;
        let rip = match cur {
            Fault::Bp | Fault::Of if first.is_none() => trap_rip,
            _ => ctx.cpu.cur_rip,
        };
        let kind = match cur {
            Fault::Bp | Fault::Of => EventKind::SoftException,
            _ => EventKind::Exception,
        };
        log::trace!(target: "rinx::cpu", "exception {} at {:#x}", cur.name(), rip);
        // Real-mode events carry no error code.
        let code = if ctx.cpu.protected() {
            cur.error_code()
        } else {
            None
        };
        match deliver(ctx, cur.vector(), kind, code, rip) {
            Ok(()) => {
                ctx.cpu.s.rip = ctx.next_rip;
                return Ok(());
            }
            Err(f2) => {
                if matches!(cur, Fault::Df) {
                    return Err(Shutdown);
                }
                let double = match first.unwrap_or(cur) {
                    a if a.is_contributory() => f2.is_contributory(),
                    Fault::Pf { .. } => f2.is_contributory() || matches!(f2, Fault::Pf { .. }),
                    _ => false,
                };
                first = Some(cur);
                cur = if double { Fault::Df } else { f2 };
                if !ctx.cpu.protected() && double {
                    // Real mode: a fault during delivery escalates like protected mode; a
                    // #DF that cannot be delivered shuts down.
                    cur = Fault::Df;
                }
            }
        }
    }
}

/// Delivers an external interrupt `vector` at an instruction boundary.
pub fn external<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, vector: u8) -> Result<(), Shutdown> {
    ctx.cpu.interrupts += 1;
    let rip = ctx.cpu.s.rip;
    ctx.cpu.cur_rip = rip;
    match deliver(ctx, vector, EventKind::External, None, rip) {
        Ok(()) => {
            ctx.cpu.s.rip = ctx.next_rip;
            Ok(())
        }
        Err(f) => raise(ctx, f),
    }
}

/// Pushes an error code of the current stack width (helper for gate delivery).
pub fn push_error_code<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    code: u32,
    size: u32,
) -> Res<()> {
    ctx.push(u64::from(code), size)
}

/// Unused register index kept for symmetry with the push helpers.
pub const STACK_REG: usize = reg::RSP;
