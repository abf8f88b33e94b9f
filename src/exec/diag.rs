//! Diagnostics for fatal guest events (triple fault, emulator errors): the CPU state and the
//! last instructions executed, printed on stderr by the CLI.

use crate::cpu::{Cpu, Ctx, NullPlatform, RECENT};
use crate::mmu::GuestMemory;
use jit::abi::sreg;
use std::fmt::Write;

/// Disassembles the instruction at `rip` in the CPU's current mode (reading guest memory through
/// its page tables, without side effects on the real CPU).
fn disasm_at(cpu: &Cpu, mem: &mut GuestMemory, rip: u64) -> String {
    let mut c = cpu.clone();
    c.s.rip = rip;
    let mut plat = NullPlatform::default();
    let mut ctx = Ctx::new(&mut c, mem, &mut plat);
    match ctx.fetch_decode() {
        Ok(d) => format!("{:<24} {}", hex(d.bytes()), decoder::format_intel(&d)),
        Err(f) => format!("<cannot fetch: {}>", f.name()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A multi-line description of the CPU state and the last instructions executed, disassembled.
pub fn describe(cpu: &Cpu, mem: &mut GuestMemory) -> String {
    let s = &cpu.s;
    let mut o = String::new();
    let names = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            o,
            "{n:>4}={:016x}{}",
            s.gpr[i],
            if i % 4 == 3 { "\n" } else { " " }
        );
    }
    let _ = writeln!(
        o,
        " rip={:016x} rflags={:08x} cpl={} cr0={:08x} cr2={:016x} cr3={:016x} cr4={:08x} efer={:x}",
        s.rip, s.rflags, s.cpl, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
    );
    for (i, n) in ["es", "cs", "ss", "ds", "fs", "gs"].iter().enumerate() {
        let g = &s.seg[i];
        let _ = writeln!(
            o,
            "  {n}={:04x} base={:016x} limit={:08x} attr={:04x}",
            g.selector, g.base, g.limit, g.attr
        );
    }
    let _ = writeln!(
        o,
        " gdtr={:x}/{:x} idtr={:x}/{:x} tr={:04x} instructions={}",
        s.gdtr.base, s.gdtr.limit, s.idtr.base, s.idtr.limit, s.tr.selector, cpu.icount
    );
    let _ = writeln!(o, " last instructions (oldest first):");
    let n = (cpu.icount as usize).min(RECENT);
    for k in (0..n).rev() {
        let idx = (cpu.icount as usize + RECENT - 1 - k) % RECENT;
        let rip = cpu.recent[idx];
        let _ = writeln!(o, "   {rip:016x}  {}", disasm_at(cpu, mem, rip));
    }
    let _ = writeln!(
        o,
        " CS.L={} exceptions: {:?}",
        s.seg[sreg::CS].long(),
        nonzero(&cpu.exceptions)
    );
    o
}

fn nonzero(v: &[u64; 32]) -> Vec<(usize, u64)> {
    v.iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (i, *c))
        .collect()
}
