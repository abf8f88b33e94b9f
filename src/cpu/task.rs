//! Hardware task switching (Intel SDM Vol. 3A chapter 7): JMP/CALL to a TSS or task gate, task
//! gates in the IDT, and IRET with EFLAGS.NT. Not implemented yet: each entry point raises the
//! #GP a processor would raise for an unusable descriptor, so a guest that relies on task
//! switching sees a fault rather than silent misbehaviour. (Linux uses no hardware task
//! switches on amd64, and on i386 only for the double-fault task.)

use super::segment::{sel_err, Desc, FarKind};
use super::{Ctx, Fault, Platform, Res};

/// Far JMP/CALL to a TSS descriptor or a task gate (SDM §7.3).
pub fn far_to_task<P: Platform + ?Sized>(
    _ctx: &mut Ctx<'_, P>,
    _kind: FarKind,
    sel: u16,
    _d: Desc,
) -> Res<()> {
    log::warn!(target: "rinx::cpu", "task switch through {sel:#x} not implemented");
    Err(Fault::Gp(sel_err(sel)))
}

/// Interrupt or exception through a task gate in the IDT (SDM §6.11.2, §7.3).
pub fn task_gate_interrupt<P: Platform + ?Sized>(
    _ctx: &mut Ctx<'_, P>,
    tss_sel: u16,
    _error_code: Option<u32>,
    _return_rip: u64,
) -> Res<()> {
    log::warn!(target: "rinx::cpu", "task gate to {tss_sel:#x} not implemented");
    Err(Fault::Gp(sel_err(tss_sel)))
}

/// IRET with EFLAGS.NT = 1: return to the task in the current TSS's back link (SDM §7.3).
pub fn iret_task_return<P: Platform + ?Sized>(_ctx: &mut Ctx<'_, P>) -> Res<()> {
    log::warn!(target: "rinx::cpu", "IRET task return not implemented");
    Err(Fault::Gp(0))
}
