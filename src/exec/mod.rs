//! Execution engines and the dispatcher loop.

pub mod dcache;
pub mod diag;
pub mod interp;
pub mod jit;
pub mod lockstep;

use crate::cpu::{Cpu, Platform, StopReason};
use crate::mmu::GuestMemory;

/// Which engine executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// The reference interpreter (every host).
    Interp,
    /// The dynamic recompiler (x86-64 hosts; elsewhere it runs the interpreter).
    Jit,
    /// The JIT runs the machine while the interpreter shadows it on a copy of the CPU and
    /// RAM; the first difference stops the run ([`lockstep::MachineLockstep`]).
    Lockstep,
}

impl EngineKind {
    /// Both engines, for tests that must pass under each.
    pub const ALL: [EngineKind; 2] = [EngineKind::Interp, EngineKind::Jit];

    /// The engine named by the environment variable `RINX_ENGINE` (`interp`, `jit` or
    /// `lockstep`), interpreter by default.
    pub fn from_env() -> EngineKind {
        match std::env::var("RINX_ENGINE").as_deref() {
            Ok("jit") => EngineKind::Jit,
            Ok("lockstep") => EngineKind::Lockstep,
            _ => EngineKind::Interp,
        }
    }
}

/// An engine instance (the JIT owns a code cache).
#[derive(Debug)]
pub enum Engine {
    /// [`interp::run`].
    Interp,
    /// [`jit::JitEngine::run`].
    Jit(Box<jit::JitEngine>),
    /// [`lockstep::MachineLockstep::run`].
    Lockstep(Box<lockstep::MachineLockstep>),
}

impl Engine {
    /// Creates an engine of `kind`. Falls back to the interpreter (with a warning) if the
    /// JIT's code memory cannot be mapped.
    pub fn new(kind: EngineKind) -> Engine {
        match kind {
            EngineKind::Interp => Engine::Interp,
            EngineKind::Jit => match jit::JitEngine::new() {
                Ok(j) => Engine::Jit(Box::new(j)),
                Err(e) => {
                    log::warn!(target: "rinx::exec", "JIT unavailable ({e}); using the interpreter");
                    Engine::Interp
                }
            },
            EngineKind::Lockstep => match lockstep::MachineLockstep::new() {
                Ok(l) => Engine::Lockstep(Box::new(l)),
                Err(e) => {
                    log::warn!(target: "rinx::exec", "JIT unavailable ({e}); using the interpreter");
                    Engine::Interp
                }
            },
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Interp => EngineKind::Interp,
            Engine::Jit(_) => EngineKind::Jit,
            Engine::Lockstep(_) => EngineKind::Lockstep,
        }
    }

    /// Runs at most `budget` guest instructions.
    pub fn run<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
    ) -> StopReason {
        match self {
            Engine::Interp => interp::run(cpu, mem, plat, budget),
            Engine::Jit(j) => j.run(cpu, mem, plat, budget),
            Engine::Lockstep(l) => l.run(cpu, mem, plat, budget),
        }
    }

    /// Runs about `budget` guest instructions: exactly on the interpreter and the lockstep
    /// engine; the JIT may go on for up to [`jit::MAX_BLOCK_INSNS`] more to finish a block
    /// rather than interpret the slice's last instructions ([`jit::JitEngine::run_with_slack`]).
    /// For the machine's slices, whose length only paces the devices.
    pub fn run_slice<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
    ) -> StopReason {
        match self {
            Engine::Jit(j) => j.run_with_slack(cpu, mem, plat, budget, jit::MAX_BLOCK_INSNS as u64),
            _ => self.run(cpu, mem, plat, budget),
        }
    }

    /// The lockstep engine's first divergence, if it found one (taken: reported once).
    pub fn take_divergence(&mut self) -> Option<Box<lockstep::Divergence>> {
        match self {
            Engine::Lockstep(l) => l.divergence.take(),
            _ => None,
        }
    }
}
