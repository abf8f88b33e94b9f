//! Lockstep: the JIT and the interpreter run the same guest side by side; after every JIT
//! block the interpreter executes the same number of instructions and the architectural states
//! are compared. The first divergence is reported with its address, the block's instructions
//! and the differing registers; it is then narrowed to one instruction by replaying with
//! single-instruction blocks.

use crate::cpu::{Cpu, Ctx, NullPlatform, StopReason};
use crate::exec::{interp, jit::JitEngine};
use crate::testing::TestMachine;
use std::fmt;

/// The first point where the engines disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Instruction count at the start of the diverging block (or step).
    pub icount: u64,
    /// RIP at the start of the diverging block.
    pub rip: u64,
    /// Disassembly of the instructions from `rip` (up to the block length).
    pub instructions: Vec<String>,
    /// `name: interp=... jit=...` for each differing register or field.
    pub differences: Vec<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "engines diverge after the block at rip={:#x} (instruction {}):",
            self.rip, self.icount
        )?;
        for i in &self.instructions {
            writeln!(f, "    {i}")?;
        }
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// Field-by-field differences of two CPUs (`a` = interpreter, `b` = JIT).
pub fn diff_cpus(a: &Cpu, b: &Cpu) -> Vec<String> {
    let mut d = Vec::new();
    let names = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    let mut cmp = |n: &str, x: u64, y: u64| {
        if x != y {
            d.push(format!("{n}: interp={x:#x} jit={y:#x}"));
        }
    };
    for (i, n) in names.iter().enumerate() {
        cmp(n, a.s.gpr[i], b.s.gpr[i]);
    }
    cmp("rip", a.s.rip, b.s.rip);
    cmp("rflags", a.s.rflags, b.s.rflags);
    cmp("icount", a.icount, b.icount);
    cmp("halted", a.halted as u64, b.halted as u64);
    if a.s != b.s && d.is_empty() {
        d.push(format!(
            "system state differs (segments, control registers, FPU/SSE or MSRs): interp={:?} jit={:?}",
            a.s, b.s
        ));
    }
    d
}

fn disasm(cpu: &Cpu, mem: &mut crate::mmu::GuestMemory, n: usize) -> Vec<String> {
    let mut c = cpu.clone();
    let mut plat = NullPlatform::default();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut ctx = Ctx::new(&mut c, mem, &mut plat);
        match ctx.fetch_decode() {
            Ok(d) => {
                out.push(format!("{:#x}: {}", c.s.rip, decoder::format_intel(&d)));
                c.s.rip = d.next_ip();
            }
            Err(_) => break,
        }
    }
    out
}

/// Runs `make()` twice, under the JIT (blocks of at most `block_insns` instructions) and the
/// interpreter, comparing after every block, for at most `budget` instructions or until the
/// JIT side stops (halt, triple fault). Guest RAM is compared at the end. Returns the
/// instruction count reached, or the first divergence, narrowed to a single instruction.
pub fn lockstep(make: &dyn Fn() -> TestMachine, budget: u64) -> Result<u64, Box<Divergence>> {
    match lockstep_blocks(make, budget, crate::exec::jit::MAX_BLOCK_INSNS) {
        Ok(n) => Ok(n),
        Err(d) => Err(lockstep_blocks(make, budget, 1).err().unwrap_or(d)),
    }
}

fn lockstep_blocks(
    make: &dyn Fn() -> TestMachine,
    budget: u64,
    block_insns: usize,
) -> Result<u64, Box<Divergence>> {
    let mut j = make();
    let mut i = make();
    let mut jit = JitEngine::new().expect("JIT code memory");
    jit.max_block_insns = block_insns;
    while j.cpu.icount < budget {
        let (start, rip) = (j.cpu.icount, j.cpu.s.rip);
        let before = j.cpu.clone();
        let stop = jit.run_one(&mut j.cpu, &mut j.mem, &mut j.plat, budget - start);
        let n = j.cpu.icount - start;
        let istop = if n > 0 {
            interp::run(&mut i.cpu, &mut i.mem, &mut i.plat, n)
        } else {
            interp::run(&mut i.cpu, &mut i.mem, &mut i.plat, 0)
        };
        let mut diffs = diff_cpus(&i.cpu, &j.cpu);
        if i.plat.outs != j.plat.outs {
            diffs.push(format!(
                "port output: interp={:?} jit={:?}",
                i.plat.outs, j.plat.outs
            ));
        }
        let stopped = stop != StopReason::Budget || (n == 0 && istop != StopReason::Budget);
        if stopped && diffs.is_empty() {
            let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
            let mut addr = 0;
            while i.mem.read(addr, &mut a).is_ok() && j.mem.read(addr, &mut b).is_ok() {
                if a != b {
                    diffs.push(format!("guest RAM differs in page {addr:#x}"));
                    break;
                }
                addr += 4096;
            }
        }
        if !diffs.is_empty() {
            let mut m = make();
            let instructions = disasm(&before, &mut m.mem, n.clamp(1, 64) as usize);
            return Err(Box::new(Divergence {
                icount: start,
                rip,
                instructions,
                differences: diffs,
            }));
        }
        if stopped {
            break;
        }
    }
    Ok(j.cpu.icount)
}
