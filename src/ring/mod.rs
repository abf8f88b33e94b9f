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
/// layer implements.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    let m = insn.mnemonic();
    let r = match m {
        Mnemonic::Hlt => hlt(ctx),
        Mnemonic::In | Mnemonic::Out => io::in_out(ctx, insn),
        _ => return None,
    };
    ctx.cpu.ring_stats.count(m);
    if r.is_err() {
        ctx.cpu.ring_stats.refused += 1;
    }
    Some(r)
}

/// Requires CPL 0 in protected mode; real mode is always CPL 0 (SDM Vol. 3A §5.9).
pub fn require_cpl0<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> Res<()> {
    if ctx.cpu.protected() && ctx.cpu.cpl() != 0 {
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

pub mod io;
