//! Test harness: a CPU with flat RAM and a [`NullPlatform`], put directly into real mode,
//! 32-bit flat protected mode or 64-bit long mode (segment caches and identity page tables are
//! set up by the harness, not by guest code), for unit and conformance tests of instruction
//! semantics.

use crate::cpu::{Cpu, NullPlatform, StopReason};
use crate::exec::{Engine, EngineKind};
use crate::mmu::GuestMemory;
use jit::abi::{cr, sreg, Segment};

/// Guest RAM size of a test machine (bytes).
pub const TEST_RAM: u64 = 16 << 20;
/// Where [`TestMachine`] loads code.
pub const CODE_BASE: u64 = 0x1_0000;
/// Initial stack pointer in every mode.
pub const STACK_TOP: u64 = 0x8_0000;
/// Identity page tables for 64-bit mode live here (PML4, PDPT, 4 PDs: first 4 GiB in 2 MiB pages).
pub const PAGE_TABLES: u64 = 0x9_0000;

/// The mode a test starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMode {
    /// Real mode, CS = DS = ES = SS = CODE_BASE >> 4.
    Real,
    /// 32-bit flat protected mode at CPL 0, no paging.
    Flat32,
    /// 64-bit mode at CPL 0 with identity-mapped 2 MiB pages.
    Long64,
}

/// A CPU, its RAM and a null platform.
#[derive(Debug)]
pub struct TestMachine {
    pub cpu: Cpu,
    pub mem: GuestMemory,
    pub plat: NullPlatform,
    /// The engine [`TestMachine::run`] uses: `RINX_ENGINE` (`interp` / `jit`) by default,
    /// changed with [`TestMachine::set_engine`].
    pub engine: Engine,
}

fn flat(code: bool, long: bool) -> Segment {
    let typ = if code { 0xb } else { 0x3 };
    let mut attr = Segment::ATTR_P | Segment::ATTR_S | Segment::ATTR_G | typ;
    if long {
        attr |= Segment::ATTR_L;
    } else {
        attr |= Segment::ATTR_DB;
    }
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: if code { 0x08 } else { 0x10 },
        attr,
    }
}

impl TestMachine {
    /// A machine in `mode` with `code` loaded at [`CODE_BASE`] and RIP pointing at it.
    pub fn new(mode: TestMode, code: &[u8]) -> Self {
        let mut mem = GuestMemory::flat(TEST_RAM).expect("test RAM");
        mem.write(CODE_BASE, code).expect("code fits");
        let mut cpu = Cpu::new();
        let s = &mut cpu.s;
        match mode {
            TestMode::Real => {
                let sel = (CODE_BASE >> 4) as u16;
                for i in 0..6 {
                    s.seg[i] = Segment::real_mode(sel, 0xffff);
                }
                s.seg[sreg::CS].attr |= 0x8;
                s.rip = 0;
                s.gpr[4] = 0xfffe;
            }
            TestMode::Flat32 | TestMode::Long64 => {
                s.cr0 |= cr::CR0_PE;
                for i in 0..6 {
                    s.seg[i] = flat(false, false);
                }
                s.seg[sreg::CS] = flat(true, mode == TestMode::Long64);
                s.rip = CODE_BASE;
                s.gpr[4] = STACK_TOP;
                if mode == TestMode::Long64 {
                    // PML4 -> PDPT -> 4 page directories of 2 MiB pages.
                    let pml4 = PAGE_TABLES;
                    let pdpt = PAGE_TABLES + 0x1000;
                    mem.write_le(pml4, 8, pdpt | 0x7).unwrap();
                    for i in 0..4u64 {
                        let pd = PAGE_TABLES + 0x2000 + i * 0x1000;
                        mem.write_le(pdpt + i * 8, 8, pd | 0x7).unwrap();
                        for j in 0..512u64 {
                            let pa = (i << 30) | (j << 21);
                            mem.write_le(pd + j * 8, 8, pa | 0x87).unwrap();
                        }
                    }
                    s.cr3 = pml4;
                    s.cr4 |= cr::CR4_PAE;
                    s.efer |= cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
                    s.cr0 |= cr::CR0_PG;
                }
            }
        }
        TestMachine {
            cpu,
            mem,
            plat: NullPlatform::default(),
            engine: Engine::new(EngineKind::from_env()),
        }
    }

    /// Selects the engine [`TestMachine::run`] uses.
    pub fn set_engine(&mut self, kind: EngineKind) {
        if self.engine.kind() != kind {
            self.engine = Engine::new(kind);
        }
    }

    /// Builder form of [`TestMachine::set_engine`].
    pub fn with_engine(mut self, kind: EngineKind) -> Self {
        self.set_engine(kind);
        self
    }

    /// A real-mode machine with `ram` bytes of zeroed RAM, every segment register 0 (base 0,
    /// limit 0xFFFF), the IVT at 0 (IDTR base 0, limit 0x3FF) and RIP = 0: a blank slate for
    /// conformance suites that load their own register and memory state.
    pub fn blank_real(ram: u64) -> Self {
        let mem = GuestMemory::flat(ram).expect("test RAM");
        let mut cpu = Cpu::new();
        cpu.s.idtr.base = 0;
        cpu.s.idtr.limit = 0x3ff;
        let mut t = TestMachine {
            cpu,
            mem,
            plat: NullPlatform::default(),
            engine: Engine::new(EngineKind::from_env()),
        };
        for i in 0..6 {
            t.set_real_segment(i, 0);
        }
        t.cpu.s.rip = 0;
        t
    }

    /// Loads segment register `i` (an [`sreg`] index) as a real-mode load does: base =
    /// selector * 16, limit 0xFFFF; CS gets a code-segment type.
    pub fn set_real_segment(&mut self, i: usize, selector: u16) {
        self.cpu.s.seg[i] = Segment::real_mode(selector, 0xffff);
        if i == sreg::CS {
            self.cpu.s.seg[i].attr |= 0x8;
        }
    }

    /// Runs until HLT (or `budget` instructions / triple fault) and returns why it stopped.
    pub fn run(&mut self, budget: u64) -> StopReason {
        self.engine
            .run(&mut self.cpu, &mut self.mem, &mut self.plat, budget)
    }

    /// Reads a GPR (full 64 bits).
    pub fn gpr(&self, i: usize) -> u64 {
        self.cpu.s.gpr[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_runs_in_each_mode() {
        // mov eax, 5; add eax, 7; hlt   (32-bit encoding; in real mode use 66 prefixes)
        let m32 = [0xb8, 5, 0, 0, 0, 0x83, 0xc0, 7, 0xf4];
        let mut t = TestMachine::new(TestMode::Flat32, &m32);
        assert_eq!(t.run(100), StopReason::Halted);
        assert_eq!(t.gpr(0), 12);
        let mut t = TestMachine::new(
            TestMode::Long64,
            &[0x48, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0x80, 0xf4],
        );
        assert_eq!(t.run(100), StopReason::Halted);
        assert_eq!(t.gpr(0), 0x8000_0000_0000_0001);
        // Real mode: mov ax, 0x1234; out 0x80, al; hlt
        let mut t = TestMachine::new(TestMode::Real, &[0xb8, 0x34, 0x12, 0xe6, 0x80, 0xf4]);
        assert_eq!(t.run(100), StopReason::Halted);
        assert_eq!(t.plat.outs, vec![(0x80, 1, 0x34)]);
    }
}
