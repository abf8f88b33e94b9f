//! The guest CPU: state, memory access through segmentation and the shadow TLB, instruction
//! fetch/decode, and the reference interpreter's step loop.
//!
//! Each instruction's semantics are written once, as functions over [`Ctx`] (the CPU plus the
//! memory and the platform it is attached to). The interpreter calls them; the JIT calls the
//! same functions for everything it does not emit natively (DESIGN.md "Execution").

pub mod cpuid;
pub mod debug;
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
    /// True when a device asked the machine to stop (power-off, reset, exit); the run loop
    /// returns [`StopReason::PlatformStop`] after the current instruction.
    fn stop_pending(&self) -> bool {
        false
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
    /// A debugger stop (breakpoint, watchpoint, single-step) in an instrumented run.
    Debug(crate::exec::interp::DebugStop),
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
    /// RIPs of the most recently started instructions (ring buffer, for diagnostics).
    pub recent: [u64; RECENT],
    /// Decoded instructions by physical address (the interpreter's block cache).
    pub dcache: crate::exec::dcache::DecodeCache,
    /// The tracer (`--trace`); off unless attached. Hooks test it with one branch.
    pub trace: crate::trace::TraceSlot,
    /// Data breakpoints (DR6.B0-B3 bits) hit by the current instruction and single-step
    /// (DR6.BS), reported as a #DB trap when it completes ([`debug`]).
    pub db_hits: u64,
    /// Data-breakpoint hits of a MOV SS / POP SS, held until the next instruction completes
    /// (SDM Vol. 3B §18.3.1.2; Vol. 2B "MOV": debug traps after a load of SS are delayed).
    pub db_deferred: u64,
}

/// How many recent RIPs [`Cpu::recent`] keeps.
pub const RECENT: usize = 16;

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
            recent: [0; RECENT],
            dcache: Default::default(),
            trace: Default::default(),
            db_hits: 0,
            db_deferred: 0,
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

#[inline]
fn mem_access_exec() -> crate::mmu::walk::Access {
    crate::mmu::walk::Access::Execute
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

    /// The decoder mode of the current code segment.
    pub fn decode_mode(&self) -> decoder::Mode {
        match self.cpu.bitness() {
            64 => decoder::Mode::Bits64,
            32 => decoder::Mode::Bits32,
            _ if !self.cpu.protected() || self.cpu.v86() => decoder::Mode::Real16,
            _ => decoder::Mode::Bits16,
        }
    }

    /// Fetches the instruction at CS:RIP through the decoded-instruction cache: a hit costs a
    /// TLB lookup (with the execute-permission check) and a cache probe; a miss decodes with
    /// [`Ctx::fetch_decode`] and caches the result when it lies within one RAM page.
    /// Returns the instruction, its length, the cached family hint and the physical address
    /// it was cached under (`u64::MAX` if uncacheable).
    pub fn fetch_cached(&mut self) -> Res<(iced_x86::Instruction, u8, dispatch::Family, u64)> {
        let mode = self.decode_mode();
        let key = mode as u8;
        let rip = self.cpu.s.rip;
        let cs = self.cpu.s.seg[sreg::CS];
        let (la, limit_room) = if mode == decoder::Mode::Bits64 {
            if !mem::canonical(rip) {
                return self
                    .fetch_decode()
                    .map(|d| (d.insn, d.len, dispatch::Family::Unknown, u64::MAX));
            }
            (rip, u64::MAX)
        } else {
            let off = rip & 0xffff_ffff;
            let room = if self.cpu.protected() && !self.cpu.v86() {
                u64::from(cs.limit).wrapping_sub(off).wrapping_add(1)
            } else {
                u64::MAX
            };
            (cs.base.wrapping_add(off) & 0xffff_ffff, room)
        };
        if (la & 0xfff) > 4096 - MAX_INSN_LEN as u64 || limit_room < MAX_INSN_LEN as u64 {
            // Might straddle a page or the CS limit: take the exact path.
            return self
                .fetch_decode()
                .map(|d| (d.insn, d.len, dispatch::Family::Unknown, u64::MAX));
        }
        let p = self.translate(la, mem_access_exec(), false)?;
        if p.host.is_none() {
            return self
                .fetch_decode()
                .map(|d| (d.insn, d.len, dispatch::Family::Unknown, u64::MAX));
        }
        let pa = p.pa_page | (la & 0xfff);
        if let Some((insn, len, fam)) = self.cpu.dcache.lookup(pa, rip, key) {
            return Ok((insn, len, fam, pa));
        }
        let d = self.fetch_decode()?;
        let was_code = self.cpu.dcache.is_code_page(pa);
        self.cpu.dcache.insert(pa, rip, key, &d.insn, d.len);
        if !was_code && self.cpu.dcache.is_code_page(pa) {
            // The JIT's inline stores bypass `note_write`: they must stop for this page.
            self.cpu.tlb.jit_protect(pa & !0xfff);
        }
        Ok((d.insn, d.len, dispatch::Family::Unknown, pa))
    }

    /// Fetches and decodes the instruction at CS:RIP through the shadow TLB. The second page
    /// of a straddling instruction is fetched only when the instruction needs bytes from it, so
    /// a fault there reports that page's address in CR2; the CS limit is checked per byte
    /// (SDM Vol. 3A §5.3); undefined encodings give #UD and over-long ones #GP(0).
    pub fn fetch_decode(&mut self) -> Res<decoder::DecodedInsn> {
        let mode = self.decode_mode();
        let rip = self.cpu.s.rip;
        let cs = self.cpu.s.seg[sreg::CS];
        let check_limit = self.cpu.protected() && !self.cpu.v86() && mode != decoder::Mode::Bits64;
        let mut fault = None;
        let mut fetch = |la: u64, buf: &mut [u8]| -> Result<usize, decoder::FetchFault> {
            let mut n = buf.len();
            if mode == decoder::Mode::Bits64 && !mem::canonical(la) {
                fault = Some(Fault::Gp(0));
                return Err(decoder::FetchFault {
                    addr: la,
                    kind: decoder::FetchFaultKind::GeneralProtection,
                });
            }
            if check_limit {
                let off = la.wrapping_sub(cs.base) & 0xffff_ffff;
                if off > u64::from(cs.limit) {
                    fault = Some(Fault::Gp(0));
                    return Err(decoder::FetchFault {
                        addr: la,
                        kind: decoder::FetchFaultKind::GeneralProtection,
                    });
                }
                n = n.min((u64::from(cs.limit) - off + 1) as usize);
            }
            match self.read_code(la, &mut buf[..n]) {
                Ok(()) => Ok(n),
                Err(f) => {
                    fault = Some(f);
                    Err(decoder::FetchFault {
                        addr: la,
                        kind: decoder::FetchFaultKind::GeneralProtection,
                    })
                }
            }
        };
        let r = decoder::decode_at(mode, cs.base, rip, &mut fetch);
        match r {
            Ok(d) => match d.invalid {
                None => Ok(d),
                Some(decoder::InvalidKind::Opcode) => Err(Fault::Ud),
                Some(decoder::InvalidKind::TooLong) => Err(Fault::Gp(0)),
            },
            Err(_) => Err(fault.unwrap_or(Fault::Gp(0))),
        }
    }
}
