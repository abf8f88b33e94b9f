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
}

/// Runs at most `budget` instructions like [`run`], with the checks of `probes`: breakpoints
/// (before an instruction; the first instruction of the run is exempt, so resuming from a
/// breakpoint makes progress), data watchpoints attached to `cpu.trace` (after the instruction
/// that made the access), single-step and coverage.
pub fn run_probed<P: Platform + ?Sized>(
    cpu: &mut Cpu,
    mem: &mut GuestMemory,
    plat: &mut P,
    budget: u64,
    probes: &mut Probes,
) -> StopReason {
    let end = cpu.icount.saturating_add(budget);
    let start = cpu.icount;
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
        if ctx.cpu.icount != start && probes.breakpoints.contains(&la) {
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
