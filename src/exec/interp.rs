//! The interpreter driver: fetch, decode, execute, with interrupts taken at instruction
//! boundaries (respecting the STI / MOV SS shadow, SDM Vol. 3A §6.8.3).

use crate::cpu::{debug, dispatch, interrupt, Cpu, Ctx, Fault, Platform, Res, StopReason};
use crate::mmu::GuestMemory;
use jit::abi::flags as fl;

/// Runs at most `budget` instructions.
pub fn run<P: Platform + ?Sized>(
    cpu: &mut Cpu,
    mem: &mut GuestMemory,
    plat: &mut P,
    budget: u64,
) -> StopReason {
    let end = cpu.icount.saturating_add(budget);
    let mut ctx = Ctx::new(cpu, mem, plat);
    loop {
        if ctx.cpu.stop_requested || ctx.plat.stop_pending() {
            ctx.cpu.stop_requested = false;
            return StopReason::PlatformStop;
        }
        if ctx.cpu.icount >= end {
            return StopReason::Budget;
        }
        if ctx.cpu.s.rflags & fl::IF != 0
            && ctx.cpu.icount >= ctx.cpu.shadow_until
            && ctx.plat.interrupt_pending()
        {
            if let Some(v) = ctx.plat.acknowledge_interrupt() {
                ctx.cpu.halted = false;
                if interrupt::external(&mut ctx, v).is_err() {
                    return StopReason::TripleFault;
                }
            }
        }
        if ctx.cpu.halted {
            return StopReason::Halted;
        }
        if step(&mut ctx).is_err() {
            return StopReason::TripleFault;
        }
    }
}

/// What an instrumented run ([`run_probed`]) checks around each instruction. Used only while a
/// debugger is attached or coverage is recorded; [`run`] stays free of these checks.
#[derive(Debug, Default)]
pub struct Probes {
    /// Linear addresses that stop execution before the instruction there runs (debugger
    /// software and hardware breakpoints: checked by address, guest memory is never patched).
    pub breakpoints: std::collections::BTreeSet<u64>,
    /// Stop after one instruction. External interrupts are held off while stepping (as QEMU's
    /// gdbstub does by default) unless the CPU is halted.
    pub single_step: bool,
    /// Basic-block coverage recorder.
    pub coverage: Option<crate::trace::coverage::Coverage>,
    /// Linear address of the instruction the debugger resumed at: it runs even if it holds a
    /// breakpoint (so continuing from a breakpoint makes progress). Cleared at the first
    /// instruction reached after the resume.
    pub resume_over_breakpoint: Option<u64>,
}

/// Runs at most `budget` instructions like [`run`], with the checks of `probes`: breakpoints
/// (before an instruction, except the first one after a resume: see
/// [`Probes::resume_over_breakpoint`]), data watchpoints attached to `cpu.trace` (after the
/// instruction that made the access), single-step and coverage.
pub fn run_probed<P: Platform + ?Sized>(
    cpu: &mut Cpu,
    mem: &mut GuestMemory,
    plat: &mut P,
    budget: u64,
    probes: &mut Probes,
) -> StopReason {
    let end = cpu.icount.saturating_add(budget);
    let mut ctx = Ctx::new(cpu, mem, plat);
    loop {
        if ctx.cpu.stop_requested || ctx.plat.stop_pending() {
            ctx.cpu.stop_requested = false;
            return StopReason::PlatformStop;
        }
        if ctx.cpu.icount >= end {
            return StopReason::Budget;
        }
        if ctx.cpu.s.rflags & fl::IF != 0
            && ctx.cpu.icount >= ctx.cpu.shadow_until
            && (!probes.single_step || ctx.cpu.halted)
            && ctx.plat.interrupt_pending()
        {
            if let Some(v) = ctx.plat.acknowledge_interrupt() {
                ctx.cpu.halted = false;
                if interrupt::external(&mut ctx, v).is_err() {
                    return StopReason::TripleFault;
                }
            }
        }
        if ctx.cpu.halted {
            return StopReason::Halted;
        }
        let la = crate::trace::hooks::linear_ip(ctx.cpu, ctx.cpu.s.rip);
        if probes.resume_over_breakpoint.take() != Some(la) && probes.breakpoints.contains(&la) {
            return StopReason::Debug(DebugStop::Breakpoint(la));
        }
        if let Some(c) = probes.coverage.as_mut() {
            c.before(ctx.cpu, ctx.mem, la);
        }
        if step(&mut ctx).is_err() {
            return StopReason::TripleFault;
        }
        if let Some(hit) = ctx.cpu.trace.take_watch_hit() {
            return StopReason::Debug(DebugStop::Watchpoint(hit));
        }
        if probes.single_step {
            return StopReason::Debug(DebugStop::Step);
        }
    }
}

/// Why an instrumented run stopped for the debugger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugStop {
    /// Before the instruction at this linear address, which holds a breakpoint.
    Breakpoint(u64),
    /// After an instruction that accessed watched memory.
    Watchpoint(crate::trace::watch::WatchHit),
    /// After one instruction (single-step).
    Step,
}

/// Executes one instruction (or delivers the exception it raises).
pub fn step<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Result<(), interrupt::Shutdown> {
    // The only cost of tracing when it is off: one test of a pointer in `Cpu`.
    if ctx.cpu.trace.is_on() {
        return crate::trace::hooks::step(ctx);
    }
    step_untraced(ctx)
}

/// [`step`] without the tracer (also used when only watchpoints are attached).
#[inline(always)]
pub(crate) fn step_untraced<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
) -> Result<(), interrupt::Shutdown> {
    let rip = begin_step(ctx);
    let fetched = ctx.fetch_cached();
    let r = execute_fetched(ctx, rip, fetched);
    retire(ctx, r)
}

/// First part of a step: records the instruction's RIP (for faults and diagnostics).
#[inline(always)]
pub(crate) fn begin_step<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> u64 {
    let rip = ctx.cpu.s.rip;
    ctx.cpu.cur_rip = rip;
    ctx.cpu.recent[(ctx.cpu.icount as usize) % crate::cpu::RECENT] = rip;
    rip
}

/// Second part: executes the fetched instruction at `rip`.
#[inline(always)]
pub(crate) fn execute_fetched<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    rip: u64,
    fetched: Res<(iced_x86::Instruction, u8, dispatch::Family, u64)>,
) -> Res<()> {
    let tf_rf = ctx.cpu.s.rflags & (fl::RF | fl::TF);
    // Code breakpoints come before faults of fetching the instruction (SDM Vol. 3A Table 6-2).
    if ctx.cpu.s.dr[7] & debug::DR7_ENABLES != 0 && tf_rf & fl::RF == 0 {
        insn_breakpoint(ctx, rip)?;
    }
    fetched.and_then(|(insn, len, fam, pa)| {
        let mut hint = fam;
        let r = execute_decoded(ctx, rip, &insn, len, tf_rf, &mut hint);
        if hint != fam && pa != u64::MAX {
            ctx.cpu.dcache.set_family(pa, hint);
        }
        r
    })
}

/// Executes a decoded instruction at `rip` (after the instruction-breakpoint check) with the
/// single-step / RF / deferred data-breakpoint bookkeeping; `tf_rf` is RFLAGS.TF|RF at the start
/// of the instruction, `hint` the family hint (updated). The JIT's helper calls this too.
#[inline(always)]
pub(crate) fn execute_decoded<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    rip: u64,
    insn: &iced_x86::Instruction,
    len: u8,
    tf_rf: u64,
    hint: &mut dispatch::Family,
) -> Res<()> {
    let m = crate::cpu::flags::mask(ctx.default_ip_size());
    ctx.next_rip = rip.wrapping_add(u64::from(len)) & m;
    let r = dispatch::execute_hinted(ctx, insn, hint);
    if tf_rf != 0 && r.is_ok() {
        completed_with_tf_rf(ctx, insn, tf_rf);
    }
    if (ctx.cpu.db_hits | ctx.cpu.db_deferred) != 0 && r.is_ok() {
        defer_after_ss_load(ctx, insn);
    }
    r
}

/// True for MOV SS, r/m and POP SS.
fn loads_ss(insn: &iced_x86::Instruction) -> bool {
    use iced_x86::{Mnemonic as M, OpKind, Register};
    matches!(insn.mnemonic(), M::Mov | M::Pop)
        && insn.op0_kind() == OpKind::Register
        && insn.op0_register() == Register::SS
}

/// Data-breakpoint hits of a MOV SS / POP SS wait for the next instruction boundary; those
/// held from the previous instruction join this one's (SDM Vol. 3B §18.3.1.2).
#[cold]
#[inline(never)]
fn defer_after_ss_load<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &iced_x86::Instruction) {
    if loads_ss(insn) {
        ctx.cpu.db_deferred |= std::mem::take(&mut ctx.cpu.db_hits);
    } else {
        ctx.cpu.db_hits |= std::mem::take(&mut ctx.cpu.db_deferred);
    }
}

/// After an instruction that started with RF or TF set completed (SDM Vol. 3B §18.3.1.1,
/// §18.3.1.4): RF is cleared, except by IRET, which loads it; with TF set at the start a
/// single-step trap (DR6.BS) follows, even if the instruction cleared TF, except after INT n /
/// INT3 / INTO / INT1 that delivered their interrupt (delivery clears TF; debuggers emulate
/// them) and after MOV SS / POP SS, whose traps wait for the next instruction (which traps
/// itself, TF being still set).
#[cold]
#[inline(never)]
fn completed_with_tf_rf<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    insn: &iced_x86::Instruction,
    tf_rf: u64,
) {
    use iced_x86::Mnemonic as M;
    let m = insn.mnemonic();
    if tf_rf & fl::RF != 0 && !matches!(m, M::Iret | M::Iretd | M::Iretq) {
        ctx.cpu.s.rflags &= !fl::RF;
    }
    if tf_rf & fl::TF == 0 {
        return;
    }
    let software_int =
        matches!(m, M::Int | M::Int3 | M::Into | M::Int1) && ctx.cpu.s.rflags & fl::TF == 0;
    if !software_int && !loads_ss(insn) {
        ctx.cpu.db_hits |= debug::DR6_BS;
    }
}

/// Raises the fault-class #DB of an instruction breakpoint at `rip`, setting DR6.Bn (SDM
/// Vol. 3B §18.3.1.1).
#[cold]
#[inline(never)]
fn insn_breakpoint<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, rip: u64) -> Res<()> {
    let s = &ctx.cpu.s;
    let la = if ctx.cpu.mode64() {
        rip
    } else {
        s.seg[jit::abi::sreg::CS]
            .base
            .wrapping_add(rip & 0xffff_ffff)
            & 0xffff_ffff
    };
    let hits = debug::insn_hits(&s.dr, la);
    if hits == 0 {
        return Ok(());
    }
    ctx.cpu.s.dr[6] = debug::dr6_with(ctx.cpu.s.dr[6], hits);
    Err(Fault::Db)
}

/// Delivers the trap-class #DB of the data breakpoints the instruction just retired hit and of
/// single-step (SDM Vol. 3B §18.3.1.2, §18.3.1.4): DR6.Bn / DR6.BS set, the return address is
/// the next instruction; delivery clears TF.
#[cold]
#[inline(never)]
fn data_breakpoint_trap<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
) -> Result<(), interrupt::Shutdown> {
    let hits = std::mem::take(&mut ctx.cpu.db_hits);
    if hits & 0xf != 0 {
        ctx.cpu.s.dr[6] = debug::dr6_with(ctx.cpu.s.dr[6], hits & 0xf);
    }
    ctx.cpu.s.dr[6] |= hits & debug::DR6_BS;
    ctx.cpu.cur_rip = ctx.cpu.s.rip;
    ctx.next_rip = ctx.cpu.s.rip;
    interrupt::raise(ctx, Fault::Db)
}

/// Last part: retires the instruction, or raises the exception it caused.
#[inline(always)]
pub(crate) fn retire<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    r: Res<()>,
) -> Result<(), interrupt::Shutdown> {
    match r {
        Ok(()) => {
            ctx.cpu.s.rip = ctx.next_rip;
            ctx.cpu.icount += 1;
            if ctx.cpu.db_hits != 0 {
                return data_breakpoint_trap(ctx);
            }
            Ok(())
        }
        Err(f) => {
            // A faulting instruction reports no data breakpoints of its own; those held from
            // a MOV SS / POP SS before it trap once the exception is delivered, at the first
            // instruction of its handler (as hardware does).
            ctx.cpu.db_hits = 0;
            ctx.cpu.icount += 1;
            let res = interrupt::raise(ctx, f);
            if res.is_ok() && ctx.cpu.db_deferred != 0 {
                ctx.cpu.db_hits = std::mem::take(&mut ctx.cpu.db_deferred);
                return data_breakpoint_trap(ctx);
            }
            res
        }
    }
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Width of the instruction pointer in bytes for sequential execution.
    pub fn default_ip_size(&self) -> u32 {
        match self.cpu.bitness() {
            64 => 8,
            32 => 4,
            _ => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestMachine, TestMode, CODE_BASE};

    #[test]
    fn probed_run_stops_at_breakpoints_steps_and_resumes() {
        // mov ecx, 3; L: dec ecx; jnz L; mov [0x2000], eax; hlt
        let code = [
            0xb9, 3, 0, 0, 0, 0xff, 0xc9, 0x75, 0xfc, 0x89, 0x04, 0x25, 0, 0x20, 0, 0, 0xf4,
        ];
        let mut t = TestMachine::new(TestMode::Long64, &code);
        let mut p = Probes::default();
        p.breakpoints.insert(CODE_BASE + 5);
        let run = |t: &mut TestMachine, p: &mut Probes| {
            run_probed(&mut t.cpu, &mut t.mem, &mut t.plat, 100, p)
        };
        let bp = StopReason::Debug(DebugStop::Breakpoint(CODE_BASE + 5));
        assert_eq!(run(&mut t, &mut p), bp);
        assert_eq!(t.cpu.icount, 1, "stopped before `dec`");
        // Resuming at the breakpoint runs it, and the loop comes back to it.
        for left in [2, 1] {
            p.resume_over_breakpoint = Some(CODE_BASE + 5);
            assert_eq!(run(&mut t, &mut p), bp);
            assert_eq!(t.cpu.s.gpr[1], left);
        }
        p.breakpoints.clear();
        p.single_step = true;
        assert_eq!(run(&mut t, &mut p), StopReason::Debug(DebugStop::Step));
        assert_eq!(t.cpu.s.rip, CODE_BASE + 7, "one instruction");
        p.single_step = false;
        t.cpu.trace.add_watchpoint(crate::trace::watch::Watchpoint {
            addr: 0x2002,
            len: 1,
            kind: crate::trace::watch::WatchKind::Write,
        });
        match run(&mut t, &mut p) {
            StopReason::Debug(DebugStop::Watchpoint(h)) => {
                assert_eq!((h.la, h.write), (0x2000, true));
                assert_eq!(t.cpu.s.rip, CODE_BASE + 16, "after the store");
            }
            r => panic!("expected a watchpoint hit, got {r:?}"),
        }
        assert_eq!(run(&mut t, &mut p), StopReason::Halted);
    }
}
