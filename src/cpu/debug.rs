//! Debug-register breakpoints (Intel SDM Vol. 3B §18.2 "Debug Registers", §18.3 "Debug
//! Exceptions"): instruction breakpoints (DR7.R/Wn = 00) raise a fault-class #DB before the
//! instruction executes unless RFLAGS.RF = 1; data breakpoints (R/Wn = 01 writes, 11 reads
//! or writes) raise a trap-class #DB after the instruction that accessed the range completes.
//! Either sets DR6.Bn for the breakpoints that matched (B0-B3 are rewritten, the other DR6 bits
//! are kept, §18.2.3). General detect (DR7.GD) is handled by MOV DR in `ring::control`.
//!
//! Single-step (RFLAGS.TF at the start of an instruction) is a trap-class #DB with DR6.BS
//! (§18.3.1.4), delivered together with data-breakpoint hits by `exec::interp`.
//!
//! Data-breakpoint traps of MOV SS / POP SS wait for the next instruction boundary (if that
//! instruction faults or delivers an interrupt, the #DB comes at the handler's first
//! instruction, as on hardware). REP string instructions trap after
//! the iteration that hit a data breakpoint (RIP stays at the instruction, which resumes with
//! the updated registers; `cpu::integer::string`). Accesses the processor makes
//! for itself (descriptor tables, TSS, page walks) do not trigger data breakpoints.
//!
//! Not modelled: I/O breakpoints (R/Wn = 10 with CR4.DE), task-switch traps (TSS T flag).
//!
//! Cost when no breakpoint is enabled: one test of DR7[7:0] per instruction and per data
//! access.

/// DR7 bits 0-7: the L0/G0 ... L3/G3 enables.
pub const DR7_ENABLES: u64 = 0xff;
/// DR7.GD, general detect (bit 13).
pub const DR7_GD: u64 = 1 << 13;
/// DR6.BD, debug-register access detected (bit 13).
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS, single step (bit 14).
pub const DR6_BS: u64 = 1 << 14;

/// Breakpoint `n` is enabled (Ln or Gn).
#[inline]
fn enabled(dr7: u64, n: usize) -> bool {
    (dr7 >> (2 * n)) & 3 != 0
}

/// R/Wn of breakpoint `n`: 0 execute, 1 write, 2 I/O, 3 read or write.
#[inline]
fn rw(dr7: u64, n: usize) -> u64 {
    (dr7 >> (16 + 4 * n)) & 3
}

/// The length in bytes encoded by LENn (00 = 1, 01 = 2, 10 = 8, 11 = 4; §18.2.5).
#[inline]
fn len(dr7: u64, n: usize) -> u64 {
    match (dr7 >> (18 + 4 * n)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

/// Instruction breakpoints (B0-B3 bits) matching the linear address `la` of an instruction.
pub fn insn_hits(dr: &[u64; 8], la: u64) -> u64 {
    let dr7 = dr[7];
    (0..4).fold(0, |acc, n| {
        if enabled(dr7, n) && rw(dr7, n) == 0 && dr[n] == la {
            acc | 1 << n
        } else {
            acc
        }
    })
}

/// Data breakpoints (B0-B3 bits) hit by an access of `size` bytes at linear `la`. The
/// breakpoint address is aligned down to its length, and any overlap matches (§18.2.5).
pub fn data_hits(dr: &[u64; 8], la: u64, size: u64, write: bool) -> u64 {
    let dr7 = dr[7];
    (0..4).fold(0, |acc, n| {
        let kind = rw(dr7, n);
        if !enabled(dr7, n) || kind == 0 || kind == 2 || (kind == 1 && !write) {
            return acc;
        }
        let l = len(dr7, n);
        let base = dr[n] & !(l - 1);
        // [la, la + size) overlaps [base, base + l).
        let overlap = la < base.wrapping_add(l) && base < la.wrapping_add(size);
        if overlap {
            acc | 1 << n
        } else {
            acc
        }
    })
}

/// DR6 after a #DB for breakpoints `hits` (B0-B3 rewritten, other bits kept).
pub fn dr6_with(dr6: u64, hits: u64) -> u64 {
    (dr6 & !0xf) | hits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DR7 with breakpoint `n` enabled (Gn) with R/W `rw` and LEN `lenbits`.
    fn dr7(n: usize, rw: u64, lenbits: u64) -> u64 {
        0x400 | (2 << (2 * n)) | (rw << (16 + 4 * n)) | (lenbits << (18 + 4 * n))
    }

    #[test]
    fn data_breakpoint_ranges_and_kinds() {
        let mut dr = [0u64; 8];
        // DR1: 4-byte write breakpoint at 0x1002 covers 0x1000..0x1004 (aligned down).
        dr[1] = 0x1002;
        dr[7] = dr7(1, 1, 3);
        assert_eq!(data_hits(&dr, 0x1000, 1, true), 0b10);
        assert_eq!(data_hits(&dr, 0x0ffe, 4, true), 0b10, "overlap from below");
        assert_eq!(data_hits(&dr, 0x1004, 4, true), 0);
        assert_eq!(data_hits(&dr, 0x0ffc, 4, true), 0);
        assert_eq!(
            data_hits(&dr, 0x1001, 1, false),
            0,
            "reads do not match R/W = 01"
        );
        // R/W = 11: reads and writes; LEN = 10: 8 bytes.
        dr[7] = dr7(1, 3, 2);
        assert_eq!(data_hits(&dr, 0x1007, 1, false), 0b10);
        assert_eq!(data_hits(&dr, 0x1008, 1, false), 0);
        // Disabled, execute or I/O kinds never match data accesses.
        dr[7] = 0x400 | (3 << (16 + 4));
        assert_eq!(data_hits(&dr, 0x1002, 1, true), 0);
        dr[7] = dr7(1, 0, 0);
        assert_eq!(data_hits(&dr, 0x1002, 1, true), 0);
        dr[7] = dr7(1, 2, 0);
        assert_eq!(data_hits(&dr, 0x1002, 1, true), 0);
    }

    #[test]
    fn instruction_breakpoints_match_exact_address() {
        let mut dr = [0u64; 8];
        dr[0] = 0x4000;
        dr[3] = 0x4000;
        dr[7] = dr7(0, 0, 0) | dr7(3, 0, 0);
        assert_eq!(insn_hits(&dr, 0x4000), 0b1001);
        assert_eq!(insn_hits(&dr, 0x4001), 0);
        // A data breakpoint at the same address is not an instruction breakpoint.
        dr[7] = dr7(0, 3, 0);
        assert_eq!(insn_hits(&dr, 0x4000), 0);
        assert_eq!(dr6_with(0xffff_0ff5, 0b0010), 0xffff_0ff2);
    }
}

#[cfg(test)]
#[path = "debug_tests.rs"]
mod machine_tests;
