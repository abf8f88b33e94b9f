//! The guest CPU: state, memory access through segmentation and the shadow TLB, instruction
//! fetch/decode, and the reference interpreter's step loop.
//!
//! Each instruction's semantics are written once, as functions over [`Ctx`] (the CPU plus the
//! memory and the platform it is attached to). The interpreter calls them; the JIT calls the
//! same functions for everything it does not emit natively (DESIGN.md "Execution").

pub mod cpuid;
pub mod dispatch;
pub mod far;
pub mod fault;
pub mod flags;
pub mod fpu;
pub mod gates;
pub mod integer;
pub mod interrupt;
pub mod mem;
pub mod msr;
pub mod operand;
pub mod segment;
pub mod simd;
pub mod system;
pub mod task;

pub use fault::{Fault, Res};
pub use jit::abi::CpuState;

use crate::mmu::{GuestMemory, Tlb};
use iced_x86::{Decoder, DecoderOptions, Instruction};
use jit::abi::{cr, flags as fl, sreg};

/// What the CPU needs from the machine around it: port I/O, MMIO, time, interrupts.
///
/// Implemented by the machine (`crate::machine`) and by test harnesses.
pub trait Platform {
    /// IN from `port`, `size` bytes (1, 2 or 4).
    fn io_read(&mut self, port: u16, size: u8) -> u32;
    /// OUT to `port`, `size` bytes (1, 2 or 4).
    fn io_write(&mut self, port: u16, size: u8, value: u32);
    /// A load from a guest physical address that is not RAM (`size` 1, 2, 4 or 8 bytes).
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64;
    /// A store to a guest physical address that is not RAM.
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64);
    /// The virtual time-stamp counter before IA32_TSC's offset (cycles).
    fn tsc(&mut self) -> u64;
    /// True when an external maskable interrupt is pending (INTR asserted).
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    /// The INTA cycle: the vector of the highest-priority pending interrupt, now in service.
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }
}

/// A platform with no devices: unclaimed ports read all ones, MMIO reads all ones, the TSC
/// counts instructions. For unit tests and conformance suites.
#[derive(Debug, Default)]
pub struct NullPlatform {
    pub tsc: u64,
    /// Every OUT performed: (port, size, value).
    pub outs: Vec<(u16, u8, u32)>,
}

impl Platform for NullPlatform {
    fn io_read(&mut self, _port: u16, size: u8) -> u32 {
        (flags::mask(u32::from(size)) & 0xffff_ffff) as u32
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.outs.push((port, size, value));
    }
    fn mmio_read(&mut self, _gpa: u64, size: u8) -> u64 {
        flags::mask(u32::from(size))
    }
    fn mmio_write(&mut self, _gpa: u64, _size: u8, _value: u64) {}
    fn tsc(&mut self) -> u64 {
        self.tsc += 1;
        self.tsc
    }
}

/// Why the run loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The instruction budget ran out.
    Budget,
    /// HLT with interrupts disabled and nothing pending, or waiting for an interrupt (the
    /// caller sleeps until its next timer deadline and calls `run` again).
    Halted,
    /// Triple fault: the processor shuts down (SDM Vol. 3A §6.15, "Interrupt 8").
    TripleFault,
    /// The platform asked to stop (power-off, reset, exit device) during an I/O access.
    PlatformStop,
}

/// A guest vCPU: architectural state plus the interpreter's private state.
#[derive(Debug, Clone)]
pub struct Cpu {
    /// The architectural state (shared ABI with the JIT).
    pub s: CpuState,
    /// The shadow TLB.
    pub tlb: Tlb,
    /// HLT executed; cleared by an interrupt.
    pub halted: bool,
    /// Interrupts are inhibited for one instruction after STI / MOV SS / POP SS (SDM Vol. 3A
    /// §6.8.3); holds the instruction count at which the shadow ends.
    pub shadow_until: u64,
    /// Guest instructions retired.
    pub icount: u64,
    /// Set by the platform side (via [`Cpu::request_stop`]) to leave the run loop.
    pub stop_requested: bool,
    /// RIP of the instruction being executed (for faults and traces).
    pub cur_rip: u64,
    /// Statistics of the ring-compression layer.
    pub ring_stats: crate::ring::RingStats,
    /// Counters per exception vector.
    pub exceptions: [u64; 32],
    /// Counter of external interrupts delivered.
    pub interrupts: u64,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpu {
    /// A CPU in the RESET state.
    pub fn new() -> Self {
        Cpu {
            s: CpuState::reset(),
            tlb: Tlb::default(),
            halted: false,
            shadow_until: 0,
            icount: 0,
            stop_requested: false,
            cur_rip: 0,
            ring_stats: Default::default(),
            exceptions: [0; 32],
            interrupts: 0,
        }
    }

    /// Asks the run loop to return after the current instruction.
    pub fn request_stop(&mut self) {
        self.stop_requested = true;
    }

    /// CR0.PE = 1.
    #[inline]
    pub fn protected(&self) -> bool {
        self.s.cr0 & cr::CR0_PE != 0
    }
    /// EFLAGS.VM = 1 (virtual-8086 mode).
    #[inline]
    pub fn v86(&self) -> bool {
        self.s.rflags & fl::VM != 0
    }
    /// IA-32e mode active (EFER.LMA).
    #[inline]
    pub fn long_mode(&self) -> bool {
        self.s.efer & cr::EFER_LMA != 0
    }
    /// 64-bit mode: IA-32e with CS.L = 1.
    #[inline]
    pub fn mode64(&self) -> bool {
        self.long_mode() && self.s.seg[sreg::CS].long()
    }
    /// Code bitness for decoding: 16, 32 or 64.
    #[inline]
    pub fn bitness(&self) -> u32 {
        if self.mode64() {
            64
        } else if self.s.seg[sreg::CS].db() && self.protected() && !self.v86() {
            32
        } else if self.s.seg[sreg::CS].db() && !self.protected() {
            // Real mode with a 32-bit CS cache left over from protected mode.
            32
        } else {
            16
        }
    }
    /// Current privilege level.
    #[inline]
    pub fn cpl(&self) -> u8 {
        self.s.cpl
    }
    /// Paging enabled.
    #[inline]
    pub fn paging(&self) -> bool {
        self.s.cr0 & cr::CR0_PG != 0
    }
    /// IOPL field of EFLAGS.
    #[inline]
    pub fn iopl(&self) -> u8 {
        ((self.s.rflags & fl::IOPL) >> fl::IOPL_SHIFT) as u8
    }
}

/// Maximum x86 instruction length (bytes), Intel SDM Vol. 2A §2.3.11.
pub const MAX_INSN_LEN: usize = 15;

/// An instruction being executed: the CPU plus everything it touches.
#[derive(Debug)]
pub struct Ctx<'a, P: Platform + ?Sized> {
    pub cpu: &'a mut Cpu,
    pub mem: &'a mut GuestMemory,
    pub plat: &'a mut P,
    /// RIP of the next instruction (RIP + length), updated by branches.
    pub next_rip: u64,
}

impl<'a, P: Platform + ?Sized> Ctx<'a, P> {
    /// Attaches a CPU to its memory and platform.
    pub fn new(cpu: &'a mut Cpu, mem: &'a mut GuestMemory, plat: &'a mut P) -> Self {
        let next_rip = cpu.s.rip;
        Ctx {
            cpu,
            mem,
            plat,
            next_rip,
        }
    }

    /// Fetches and decodes the instruction at CS:RIP. Fetches the second page only when the
    /// instruction needs bytes from it, so a fault there reports that page's address in CR2.
    pub fn fetch_decode(&mut self) -> Res<Instruction> {
        let bitness = self.cpu.bitness();
        let rip = self.cpu.s.rip;
        let cs = self.cpu.s.seg[sreg::CS];
        let mut buf = [0u8; MAX_INSN_LEN];
        let mut have = 0usize;
        loop {
            // Fetch up to the end of the current page (or the 15-byte limit).
            let off = rip.wrapping_add(have as u64);
            let la = self.fetch_linear(off, &cs)?;
            let room = (4096 - (la & 0xfff)) as usize;
            let n = room.min(MAX_INSN_LEN - have);
            self.read_code(la, &mut buf[have..have + n])?;
            have += n;
            let mut dec = Decoder::with_ip(bitness, &buf[..have], rip, DecoderOptions::NONE);
            let insn = dec.decode();
            match dec.last_error() {
                iced_x86::DecoderError::None => {
                    self.check_fetch_limit(rip, insn.len() as u64, &cs)?;
                    return Ok(insn);
                }
                iced_x86::DecoderError::NoMoreBytes if have < MAX_INSN_LEN => continue,
                iced_x86::DecoderError::NoMoreBytes => {
                    // Longer than 15 bytes: #GP(0) (SDM Vol. 2A §2.3.11).
                    return Err(Fault::Gp(0));
                }
                _ => return Err(Fault::Ud),
            }
        }
    }

    fn fetch_linear(&self, off: u64, cs: &jit::abi::Segment) -> Res<u64> {
        if self.cpu.mode64() {
            let la = off;
            if !mem::canonical(la) {
                return Err(Fault::Gp(0));
            }
            Ok(la)
        } else {
            let off = off & 0xffff_ffff;
            let off = if self.cpu.bitness() == 16 {
                off & 0xffff
            } else {
                off
            };
            if self.cpu.protected() && !self.cpu.v86() && off > u64::from(cs.limit) {
                return Err(Fault::Gp(0));
            }
            Ok(cs.base.wrapping_add(off) & 0xffff_ffff)
        }
    }

    fn check_fetch_limit(&self, rip: u64, len: u64, cs: &jit::abi::Segment) -> Res<()> {
        if !self.cpu.mode64()
            && self.cpu.protected()
            && !self.cpu.v86()
            && (rip & 0xffff_ffff) + len - 1 > u64::from(cs.limit)
        {
            return Err(Fault::Gp(0));
        }
        Ok(())
    }
}
