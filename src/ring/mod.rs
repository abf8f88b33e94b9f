//! The ring-compression layer: every privileged and sensitive instruction leaves the engine and
//! is emulated here against the virtual CPU state (the guest kernel believes it runs at CPL 0;
//! the host runs it as ordinary user code). The layer performs the CPL / IOPL / TSS I/O-bitmap
//! checks, raises #GP/#UD exactly like hardware, and counts every kind it handles.

use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, Mnemonic};

/// Per-mnemonic counts of instructions handled by the ring layer, plus the faults it raised.
#[derive(Debug, Clone, Default)]
pub struct RingStats {
    counts: Vec<u64>,
    /// Instructions that the layer refused with a fault (#GP, #UD...).
    pub refused: u64,
}

impl RingStats {
    /// Counts one handled instruction.
    #[inline]
    pub fn count(&mut self, m: Mnemonic) {
        let i = m as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }

    /// How many times `m` was handled.
    pub fn get(&self, m: Mnemonic) -> u64 {
        self.counts.get(m as usize).copied().unwrap_or(0)
    }

    /// All non-zero counts as (mnemonic, count), most frequent first.
    pub fn nonzero(&self) -> Vec<(Mnemonic, u64)> {
        let mut v: Vec<(Mnemonic, u64)> = iced_x86::Mnemonic::values()
            .filter_map(|m| {
                let c = self.get(m);
                (c > 0).then_some((m, c))
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

/// Emulates a privileged or sensitive instruction. Returns `None` if `insn` is not one the
/// layer implements. This is the single entry point of the layer: `cpu::system` routes every
/// privileged and sensitive instruction here.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    let cpl = ctx.cpu.s.cpl;
    let r = match m {
        M::Hlt => hlt(ctx),
        M::In | M::Out => io::in_out(ctx, insn),
        M::Pushf | M::Pushfd | M::Pushfq => flags::pushf(ctx, insn),
        M::Popf | M::Popfd | M::Popfq => flags::popf(ctx, insn),
        M::Cli => flags::cli(ctx),
        M::Sti => flags::sti(ctx),
        M::Lgdt | M::Lidt => tables::lgdt_lidt(ctx, insn),
        M::Sgdt | M::Sidt => tables::sgdt_sidt(ctx, insn),
        M::Lldt => tables::lldt(ctx, insn),
        M::Ltr => tables::ltr(ctx, insn),
        M::Sldt | M::Str => tables::sldt_str(ctx, insn),
        M::Lar | M::Lsl => tables::lar_lsl(ctx, insn),
        M::Verr | M::Verw => tables::verr_verw(ctx, insn),
        M::Arpl => tables::arpl(ctx, insn),
        M::Mov if control::is_cr_dr(insn) => control::mov_cr_dr(ctx, insn),
        M::Lmsw => control::lmsw(ctx, insn),
        M::Smsw => control::smsw(ctx, insn),
        M::Clts => control::clts(ctx),
        M::Invlpg => control::invlpg(ctx, insn),
        M::Invd | M::Wbinvd => require_cpl0(ctx),
        M::Rdmsr => msr::rdmsr(ctx),
        M::Wrmsr => msr::wrmsr(ctx),
        M::Rdtsc | M::Rdtscp => msr::rdtsc(ctx, m == M::Rdtscp),
        M::Rdpmc => msr::rdpmc(ctx),
        M::Cpuid => msr::cpuid(ctx),
        M::Syscall => fast::syscall(ctx),
        M::Sysret | M::Sysretq => fast::sysret(ctx, m == M::Sysretq),
        M::Sysenter => fast::sysenter(ctx),
        M::Sysexit | M::Sysexitq => fast::sysexit(ctx, m == M::Sysexitq),
        M::Swapgs => fast::swapgs(ctx),
        // Not advertised by CPUID (SDM Vol. 2: #UD when the feature flag is clear).
        M::Monitor | M::Mwait | M::Xgetbv | M::Xsetbv | M::Rdrand | M::Rdseed => Err(Fault::Ud),
        _ => return None,
    };
    ctx.cpu.ring_stats.count(m);
    if r.is_err() {
        ctx.cpu.ring_stats.refused += 1;
    }
    if ctx.cpu.trace.is_on() {
        let mode = ctx.decode_mode();
        crate::trace::hooks::ring(ctx.cpu, mode, insn, cpl, &r);
    }
    Some(r)
}

/// Requires CPL 0 in protected mode; real mode is always CPL 0 and V86 mode is CPL 3
/// (SDM Vol. 3A §5.9).
pub fn require_cpl0<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> Res<()> {
    if ctx.cpu.protected() && (ctx.cpu.cpl() != 0 || ctx.cpu.v86()) {
        Err(Fault::Gp(0))
    } else {
        Ok(())
    }
}

fn hlt<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    require_cpl0(ctx)?;
    ctx.cpu.halted = true;
    Ok(())
}

pub mod control;
pub mod fast;
pub mod flags;
pub mod io;
pub mod msr;
pub mod tables;

/// Instructions that exist only in protected mode (not real-address or V86 mode) raise #UD
/// elsewhere (LLDT, LTR, SLDT, STR, LAR, LSL, VERR, VERW, ARPL; SDM Vol. 2).
pub fn require_protected<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> Res<()> {
    if !ctx.cpu.protected() || ctx.cpu.v86() {
        Err(Fault::Ud)
    } else {
        Ok(())
    }
}
