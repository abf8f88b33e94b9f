//! Register files as gdb sees them: the `i386` (32-bit core + SSE) and `i386:x86-64` (64-bit
//! core + SSE) layouts of gdb's target descriptions (gdb/features/i386/32bit-core.xml,
//! 32bit-sse.xml, 64bit-core.xml, 64bit-sse.xml), through `gdbstub_arch`.
//!
//! The program counter is a *linear* address in every mode but 64-bit mode: CS.base + IP in real,
//! virtual-8086 and protected mode (so 0000:1000 in real mode shows as 0x1000 and `break
//! *0x1000` works), RIP in 64-bit mode. Writing the PC sets IP = PC - CS.base. Segment registers
//! show their selectors and are read-only (a selector alone does not define a segment: loading
//! one is the guest's business). With the i386 layout in 64-bit mode, registers show their low
//! 32 bits and writes keep the high halves.

use crate::cpu::Cpu;
use crate::trace::hooks::linear_ip;
use gdbstub::arch::Arch;
use gdbstub_arch::x86::reg::{X86CoreRegs, X86SegmentRegs, X86_64CoreRegs, X87FpuInternalRegs};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};
use jit::abi::{flags as fl, reg, sreg};

/// Writable RFLAGS bits (Intel SDM Vol. 1 §3.4.3); bit 1 is always set.
const RFLAGS_WRITABLE: u64 = 0x003f_7fd5;

/// gdb's order of the first 8 (16) general registers -> rinx's ModRM-order index.
const GDB_GPR_ORDER: [usize; 8] = [
    reg::RAX,
    reg::RBX,
    reg::RCX,
    reg::RDX,
    reg::RSI,
    reg::RDI,
    reg::RBP,
    reg::RSP,
];

/// An x86 register layout rinx can serve to gdb.
pub trait GuestArch: Arch<BreakpointKind = usize> {
    /// Name for messages (`i386`, `x86-64`).
    const NAME: &'static str;
    /// An address of this layout as a 64-bit linear address.
    fn addr(a: Self::Usize) -> u64;
    /// A 64-bit linear address in this layout (truncated for i386).
    fn usize(a: u64) -> Self::Usize;
    /// Fills `regs` from the CPU.
    fn read(cpu: &Cpu, regs: &mut Self::Registers);
    /// Writes `regs` to the CPU.
    fn write(cpu: &mut Cpu, regs: &Self::Registers);
}

/// The program counter gdb sees (see the module documentation).
pub fn pc(cpu: &Cpu) -> u64 {
    linear_ip(cpu, cpu.s.rip)
}

fn set_pc(cpu: &mut Cpu, pc: u64) {
    cpu.s.rip = if cpu.mode64() {
        pc
    } else {
        pc.wrapping_sub(cpu.s.seg[sreg::CS].base) & crate::cpu::flags::mask(cpu.bitness() / 8)
    };
}

fn set_rflags(cpu: &mut Cpu, v: u64) {
    cpu.s.rflags = (v & RFLAGS_WRITABLE) | fl::FIXED1;
}

fn segments(cpu: &Cpu) -> X86SegmentRegs {
    let sel = |i: usize| u32::from(cpu.s.seg[i].selector);
    X86SegmentRegs {
        cs: sel(sreg::CS),
        ss: sel(sreg::SS),
        ds: sel(sreg::DS),
        es: sel(sreg::ES),
        fs: sel(sreg::FS),
        gs: sel(sreg::GS),
    }
}

/// x87 stack registers ST(0)..ST(7) (physical register (TOP + i) mod 8, Intel SDM Vol. 1
/// §8.1.2) and the control / status words.
fn fpu_read(cpu: &Cpu) -> ([[u8; 10]; 8], X87FpuInternalRegs) {
    let f = &cpu.s.fpu;
    let top = usize::from((f.fsw >> 11) & 7);
    let mut st = [[0u8; 10]; 8];
    for (i, r) in st.iter_mut().enumerate() {
        r.copy_from_slice(&f.st[(top + i) % 8][..10]);
    }
    let internal = X87FpuInternalRegs {
        fctrl: u32::from(f.fcw),
        fstat: u32::from(f.fsw),
        ftag: u32::from(f.ftw),
        fiseg: u32::from(f.fcs),
        fioff: f.fip as u32,
        foseg: u32::from(f.fds),
        fooff: f.fdp as u32,
        fop: u32::from(f.fop),
    };
    (st, internal)
}

fn fpu_write(cpu: &mut Cpu, st: &[[u8; 10]; 8], i: &X87FpuInternalRegs) {
    let f = &mut cpu.s.fpu;
    f.fcw = i.fctrl as u16;
    f.fsw = i.fstat as u16;
    f.ftw = i.ftag as u16;
    f.fcs = i.fiseg as u16;
    f.fip = (f.fip & !0xffff_ffff) | u64::from(i.fioff);
    f.fds = i.foseg as u16;
    f.fdp = (f.fdp & !0xffff_ffff) | u64::from(i.fooff);
    f.fop = i.fop as u16;
    let top = usize::from((f.fsw >> 11) & 7);
    for (k, r) in st.iter().enumerate() {
        f.st[(top + k) % 8][..10].copy_from_slice(r);
    }
}

fn xmm(cpu: &Cpu, i: usize) -> u128 {
    u128::from(cpu.s.xmm[i][0]) | (u128::from(cpu.s.xmm[i][1]) << 64)
}

fn set_xmm(cpu: &mut Cpu, i: usize, v: u128) {
    cpu.s.xmm[i] = [v as u64, (v >> 64) as u64];
}

impl GuestArch for X86_SSE {
    const NAME: &'static str = "i386";
    fn addr(a: u32) -> u64 {
        u64::from(a)
    }
    fn usize(a: u64) -> u32 {
        a as u32
    }
    fn read(cpu: &Cpu, r: &mut X86CoreRegs) {
        let g = |i: usize| cpu.s.gpr[i] as u32;
        r.eax = g(reg::RAX);
        r.ecx = g(reg::RCX);
        r.edx = g(reg::RDX);
        r.ebx = g(reg::RBX);
        r.esp = g(reg::RSP);
        r.ebp = g(reg::RBP);
        r.esi = g(reg::RSI);
        r.edi = g(reg::RDI);
        r.eip = pc(cpu) as u32;
        r.eflags = cpu.s.rflags as u32;
        r.segments = segments(cpu);
        (r.st, r.fpu) = fpu_read(cpu);
        for (i, x) in r.xmm.iter_mut().enumerate() {
            *x = xmm(cpu, i);
        }
        r.mxcsr = cpu.s.mxcsr;
    }
    fn write(cpu: &mut Cpu, r: &X86CoreRegs) {
        let mut set = |i: usize, v: u32| {
            cpu.s.gpr[i] = (cpu.s.gpr[i] & !0xffff_ffff) | u64::from(v);
        };
        set(reg::RAX, r.eax);
        set(reg::RCX, r.ecx);
        set(reg::RDX, r.edx);
        set(reg::RBX, r.ebx);
        set(reg::RSP, r.esp);
        set(reg::RBP, r.ebp);
        set(reg::RSI, r.esi);
        set(reg::RDI, r.edi);
        if u64::from(r.eip) != pc(cpu) & 0xffff_ffff {
            let hi = if cpu.mode64() {
                cpu.s.rip & !0xffff_ffff
            } else {
                0
            };
            set_pc(cpu, hi | u64::from(r.eip));
        }
        set_rflags(cpu, (cpu.s.rflags & !0xffff_ffff) | u64::from(r.eflags));
        fpu_write(cpu, &r.st, &r.fpu);
        for (i, x) in r.xmm.iter().enumerate() {
            set_xmm(cpu, i, *x);
        }
        cpu.s.mxcsr = r.mxcsr;
    }
}

impl GuestArch for X86_64_SSE {
    const NAME: &'static str = "x86-64";
    fn addr(a: u64) -> u64 {
        a
    }
    fn usize(a: u64) -> u64 {
        a
    }
    fn read(cpu: &Cpu, r: &mut X86_64CoreRegs) {
        for (k, &i) in GDB_GPR_ORDER.iter().enumerate() {
            r.regs[k] = cpu.s.gpr[i];
        }
        r.regs[8..].copy_from_slice(&cpu.s.gpr[8..]);
        r.rip = pc(cpu);
        r.eflags = cpu.s.rflags as u32;
        r.segments = segments(cpu);
        (r.st, r.fpu) = fpu_read(cpu);
        for (i, x) in r.xmm.iter_mut().enumerate() {
            *x = xmm(cpu, i);
        }
        r.mxcsr = cpu.s.mxcsr;
    }
    fn write(cpu: &mut Cpu, r: &X86_64CoreRegs) {
        for (k, &i) in GDB_GPR_ORDER.iter().enumerate() {
            cpu.s.gpr[i] = r.regs[k];
        }
        cpu.s.gpr[8..].copy_from_slice(&r.regs[8..]);
        if r.rip != pc(cpu) {
            set_pc(cpu, r.rip);
        }
        set_rflags(cpu, u64::from(r.eflags));
        fpu_write(cpu, &r.st, &r.fpu);
        for (i, x) in r.xmm.iter().enumerate() {
            set_xmm(cpu, i, *x);
        }
        cpu.s.mxcsr = r.mxcsr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestMachine, TestMode};

    #[test]
    fn real_mode_pc_is_linear_and_round_trips() {
        let mut t = TestMachine::new(TestMode::Real, &[0x90]);
        t.cpu.s.gpr[reg::RBX] = 0x1234_5678_9abc_def0;
        let mut r = X86CoreRegs::default();
        X86_SSE::read(&t.cpu, &mut r);
        assert_eq!(r.eip, 0x1_0000, "CS = 0x1000, IP = 0: linear 0x10000");
        assert_eq!(r.ebx, 0x9abc_def0);
        assert_eq!(r.segments.cs, 0x1000);
        r.eip = 0x1_0010;
        r.ebx = 7;
        X86_SSE::write(&mut t.cpu, &r);
        assert_eq!(t.cpu.s.rip, 0x10);
        assert_eq!(t.cpu.s.gpr[reg::RBX], 0x1234_5678_0000_0007);
    }

    #[test]
    fn long_mode_gpr_order() {
        let mut t = TestMachine::new(TestMode::Long64, &[0x90]);
        for i in 0..16 {
            t.cpu.s.gpr[i] = i as u64 + 100;
        }
        let mut r = X86_64CoreRegs::default();
        X86_64_SSE::read(&t.cpu, &mut r);
        // gdb: rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8..
        assert_eq!(&r.regs[..9], &[100, 103, 101, 102, 106, 107, 105, 104, 108]);
        assert_eq!(r.rip, crate::testing::CODE_BASE);
        r.regs[1] = 5;
        r.eflags = 0xffff_ffff;
        X86_64_SSE::write(&mut t.cpu, &r);
        assert_eq!(t.cpu.s.gpr[reg::RBX], 5);
        assert_eq!(t.cpu.s.rflags, RFLAGS_WRITABLE | fl::FIXED1);
    }
}
