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

/// Executes one instruction (or delivers the exception it raises).
pub fn step<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Result<(), interrupt::Shutdown> {
    // The only cost of tracing when it is off: one test of a pointer in `Cpu`.
    if ctx.cpu.trace.is_on() {
        return crate::trace::hooks::step(ctx);
    }
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
