//! Basic-block coverage of the guest, written in DynamoRIO's drcov format (`--coverage
//! drcov:PATH`) so that coverage tools (Lighthouse, bncov, dragondance...) can load it.
//!
//! A block starts wherever execution arrives other than by falling through from the previous
//! instruction of the current block: after a control transfer, an exception or interrupt
//! delivery, or a return into the middle of a block. Its extent is the one rinx's block scanner
//! gives ([`decoder::scan_block`]): up to and including the first control transfer, ring-layer
//! instruction or page crossing. Blocks are keyed by linear start address (and decode mode), and
//! recorded once, in the order they were first entered. The guest's code is read through its
//! page tables without side effects ([`crate::mmu::debug::peek`]).
//!
//! drcov file layout (DynamoRIO `ext/drcov`, format version 2):
//!
//! ```text
//! DRCOV VERSION: 2
//! DRCOV FLAVOR: drcov
//! Module Table: version 2, count N
//! Columns: id, base, end, entry, checksum, timestamp, path
//!   0, 0x0000000000000000, 0x0000000100000000, 0x0000000000000000, 0x00000000, 0x00000000, rinx-guest-0x0
//! BB Table: M bbs
//! <M binary records of 8 bytes: u32 start (offset from the module base), u16 size, u16 module id,
//!  little-endian>
//! ```
//!
//! A full-system guest has no loaded modules, so rinx splits the linear address space into
//! 4 GiB regions and writes one module per region that holds executed code (for a 16/32-bit
//! guest: one module, base 0, whose offsets are linear addresses). A 64-bit kernel's blocks
//! at 0xFFFFFFFF81xxxxxx land in the module based at 0xFFFFFFFF00000000.

use crate::cpu::Cpu;
use crate::mmu::{debug, GuestMemory};
use std::collections::HashMap;
use std::io::{self, Write};

/// Most instructions scanned for one block.
const MAX_BLOCK_INSNS: usize = 256;
/// Size of a module (a region of the linear address space).
const MODULE_SPAN: u64 = 1 << 32;

/// One executed basic block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicBlock {
    /// Linear address of the first byte.
    pub start: u64,
    /// Size in bytes (the sum of its instruction lengths).
    pub size: u16,
}

/// The coverage recorder (attached to an instrumented run; see `exec::interp::run_probed`).
#[derive(Debug, Default)]
pub struct Coverage {
    /// (start, decode mode) -> index in `blocks`.
    index: HashMap<(u64, u8), usize>,
    blocks: Vec<BasicBlock>,
    /// Linear extent of the block being executed.
    cur: Option<(u64, u64)>,
    /// Linear address of the last instruction seen.
    prev: u64,
}

impl Coverage {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called before each instruction, at linear address `la`.
    #[inline]
    pub fn before(&mut self, cpu: &Cpu, mem: &GuestMemory, la: u64) {
        if let Some((_, end)) = self.cur {
            if la > self.prev && la < end {
                self.prev = la;
                return;
            }
        }
        self.enter(cpu, mem, la);
    }

    /// Execution arrives at `la` other than by falling through: a block starts there.
    #[inline(never)]
    fn enter(&mut self, cpu: &Cpu, mem: &GuestMemory, la: u64) {
        let mode = decode_mode(cpu);
        self.prev = la;
        let key = (la, mode as u8);
        if let Some(&i) = self.index.get(&key) {
            let b = self.blocks[i];
            self.cur = Some((la, la.wrapping_add(u64::from(b.size))));
            return;
        }
        let cs_base = cpu.s.seg[jit::abi::sreg::CS].base;
        let mut fetch = |lin: u64, buf: &mut [u8]| {
            let n = debug::peek(&cpu.s, mem, lin, buf);
            if n == 0 {
                Err(decoder::FetchFault {
                    addr: lin,
                    kind: decoder::FetchFaultKind::PageFault { error_code: 0x10 },
                })
            } else {
                Ok(n)
            }
        };
        let size = match decoder::scan_block(mode, cs_base, cpu.s.rip, &mut fetch, MAX_BLOCK_INSNS)
        {
            Ok(b) => u16::try_from(b.byte_len).unwrap_or(u16::MAX),
            // The fetch will fault: the block is empty (the fault is delivered elsewhere).
            Err(_) => {
                self.cur = None;
                return;
            }
        };
        self.index.insert(key, self.blocks.len());
        self.blocks.push(BasicBlock { start: la, size });
        self.cur = Some((la, la.wrapping_add(u64::from(size))));
    }

    /// The blocks executed so far, in the order they were first entered.
    pub fn blocks(&self) -> &[BasicBlock] {
        &self.blocks
    }

    /// Writes the blocks in drcov format (version 2; see the module documentation).
    pub fn write_drcov(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut regions: Vec<u64> = self.blocks.iter().map(|b| b.start / MODULE_SPAN).collect();
        regions.sort_unstable();
        regions.dedup();
        writeln!(out, "DRCOV VERSION: 2")?;
        writeln!(out, "DRCOV FLAVOR: drcov")?;
        writeln!(out, "Module Table: version 2, count {}", regions.len())?;
        writeln!(
            out,
            "Columns: id, base, end, entry, checksum, timestamp, path"
        )?;
        for (id, r) in regions.iter().enumerate() {
            let base = r * MODULE_SPAN;
            writeln!(
                out,
                "{id:3}, {base:#018x}, {:#018x}, 0x0000000000000000, 0x00000000, 0x00000000, rinx-guest-{base:#x}",
                base.wrapping_add(MODULE_SPAN)
            )?;
        }
        writeln!(out, "BB Table: {} bbs", self.blocks.len())?;
        let mut bin = Vec::with_capacity(self.blocks.len() * 8);
        for b in &self.blocks {
            let region = b.start / MODULE_SPAN;
            let id = regions.binary_search(&region).unwrap_or(0) as u16;
            bin.extend_from_slice(&((b.start % MODULE_SPAN) as u32).to_le_bytes());
            bin.extend_from_slice(&b.size.to_le_bytes());
            bin.extend_from_slice(&id.to_le_bytes());
        }
        out.write_all(&bin)?;
        out.flush()
    }
}

/// The decoder mode of the CPU's current code segment.
pub fn decode_mode(cpu: &Cpu) -> decoder::Mode {
    match cpu.bitness() {
        64 => decoder::Mode::Bits64,
        32 => decoder::Mode::Bits32,
        _ if !cpu.protected() || cpu.v86() => decoder::Mode::Real16,
        _ => decoder::Mode::Bits16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestMachine, TestMode, CODE_BASE};

    #[test]
    fn blocks_split_at_control_transfers_and_drcov_layout() {
        // mov ecx, 2; L: dec ecx; jnz L; hlt
        let code = [0xb9, 2, 0, 0, 0, 0xff, 0xc9, 0x75, 0xfc, 0xf4];
        let mut t = TestMachine::new(TestMode::Long64, &code);
        let mut cov = Coverage::new();
        for _ in 0..6 {
            let la = t.cpu.s.rip;
            cov.before(&t.cpu, &t.mem, la);
            t.run(1);
        }
        let b = CODE_BASE;
        assert_eq!(
            cov.blocks(),
            &[
                BasicBlock { start: b, size: 9 },
                BasicBlock {
                    start: b + 5,
                    size: 4
                },
                BasicBlock {
                    start: b + 9,
                    size: 1
                },
            ]
        );
        let mut out = Vec::new();
        cov.write_drcov(&mut out).unwrap();
        let text_end = out.windows(4).position(|w| w == b"bbs\n").unwrap() + 4;
        let text = std::str::from_utf8(&out[..text_end]).unwrap();
        assert!(text.starts_with(
            "DRCOV VERSION: 2\nDRCOV FLAVOR: drcov\nModule Table: version 2, count 1\n"
        ));
        assert!(text.ends_with("BB Table: 3 bbs\n"));
        let bin = &out[text_end..];
        assert_eq!(bin.len(), 24);
        assert_eq!(&bin[8..16], &[0x05, 0, 1, 0, 4, 0, 0, 0]);
    }
}
