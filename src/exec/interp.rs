//! The interpreter driver: fetch, decode, execute, with interrupts taken at instruction
//! boundaries (respecting the STI / MOV SS shadow, SDM Vol. 3A §6.8.3).

use crate::cpu::{dispatch, interrupt, Cpu, Ctx, Platform, Res, StopReason};
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
    fetched.and_then(|(insn, len, fam, pa)| {
        let m = crate::cpu::flags::mask(ctx.default_ip_size());
        ctx.next_rip = rip.wrapping_add(u64::from(len)) & m;
        let mut hint = fam;
        let r = dispatch::execute_hinted(ctx, &insn, &mut hint);
        if hint != fam && pa != u64::MAX {
            ctx.cpu.dcache.set_family(pa, hint);
        }
        r
    })
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
            Ok(())
        }
        Err(f) => {
            ctx.cpu.icount += 1;
            interrupt::raise(ctx, f)
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
