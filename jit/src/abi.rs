//! The ABI of compiled code: the `#[repr(C)]` guest CPU state whose field offsets generated code
//! hard-codes, and the exit codes compiled blocks return.
//!
//! The interpreter (in the `rinx` crate) uses this very structure as its CPU state, so both
//! engines read and write the same bytes (DESIGN.md "One source of semantics").

use core::mem::offset_of;

/// Index of each general-purpose register in [`CpuState::gpr`], in the order of the x86 ModRM
/// register encoding (Intel SDM Vol. 2A §2.1.5, Table 2-2 and REX.R/B extension).
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// Index of each segment register in [`CpuState::seg`], in the Sreg encoding of the ModRM reg
/// field (Intel SDM Vol. 2A §3.1.1.3: ES=0, CS=1, SS=2, DS=3, FS=4, GS=5).
pub mod sreg {
    pub const ES: usize = 0;
    pub const CS: usize = 1;
    pub const SS: usize = 2;
    pub const DS: usize = 3;
    pub const FS: usize = 4;
    pub const GS: usize = 5;
}

/// RFLAGS bits (Intel SDM Vol. 1 §3.4.3, Vol. 3A §2.3).
pub mod flags {
    pub const CF: u64 = 1 << 0;
    /// Bit 1 is reserved and always reads as 1.
    pub const FIXED1: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const IOPL_SHIFT: u32 = 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Control-register bits (Intel SDM Vol. 3A §2.5).
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;

    pub const CR4_VME: u64 = 1 << 0;
    pub const CR4_PVI: u64 = 1 << 1;
    pub const CR4_TSD: u64 = 1 << 2;
    pub const CR4_DE: u64 = 1 << 3;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_MCE: u64 = 1 << 6;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_PCE: u64 = 1 << 8;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const CR4_UMIP: u64 = 1 << 11;
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;

    /// IA32_EFER bits (Intel SDM Vol. 3A §2.2.1, Table 2-1).
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

/// A segment register: the visible selector and the hidden descriptor cache
/// (Intel SDM Vol. 3A §3.4.3).
///
/// `attr` holds descriptor bits 40..=55 shifted down by 40, as the VMX "access rights" field
/// does: bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G. `limit` is the byte-granular
/// limit after applying G, so a 4 GiB flat segment has `limit == 0xffff_ffff`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub attr: u16,
}

impl Segment {
    pub const ATTR_ACCESSED: u16 = 1 << 0;
    pub const ATTR_S: u16 = 1 << 4;
    pub const ATTR_P: u16 = 1 << 7;
    pub const ATTR_L: u16 = 1 << 13;
    pub const ATTR_DB: u16 = 1 << 14;
    pub const ATTR_G: u16 = 1 << 15;

    /// Descriptor type field (bits 0-3 of `attr`).
    pub fn typ(&self) -> u8 {
        (self.attr & 0xf) as u8
    }
    /// Descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }
    pub fn present(&self) -> bool {
        self.attr & Self::ATTR_P != 0
    }
    /// D/B bit: default operand/address size 32 for code, big stack for SS.
    pub fn db(&self) -> bool {
        self.attr & Self::ATTR_DB != 0
    }
    /// L bit: 64-bit code segment (meaningful only for CS with EFER.LMA).
    pub fn long(&self) -> bool {
        self.attr & Self::ATTR_L != 0
    }
    /// A segment as real mode sets it on a load: base = selector * 16, limit kept (so a limit
    /// raised in protected mode survives: "unreal" mode), present, read/write data.
    pub fn real_mode(selector: u16, keep_limit: u32) -> Self {
        Segment {
            base: u64::from(selector) << 4,
            limit: keep_limit,
            selector,
            attr: Self::ATTR_P | Self::ATTR_S | 0x3,
        }
    }
}

/// GDTR or IDTR (Intel SDM Vol. 3A §2.4.1): linear base and 16-bit limit.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableReg {
    pub base: u64,
    pub limit: u32,
    pub _pad: u32,
}

/// x87 FPU state (Intel SDM Vol. 1 §8.1). Registers are stored as 80-bit extended values
/// (64-bit significand in the low 8 bytes, sign+exponent in the next 2) by *physical* register
/// number, as FXSAVE stores them relative to TOP.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpuState {
    /// Physical registers R0..R7; MMX registers MM0..MM7 alias the significands (§9.2.1).
    pub st: [[u8; 16]; 8],
    pub fcw: u16,
    /// Status word with TOP in bits 11-13.
    pub fsw: u16,
    /// Full 16-bit tag word (2 bits per register, 11 = empty).
    pub ftw: u16,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub fcs: u16,
    pub fds: u16,
    pub _pad: u32,
}

impl Default for FpuState {
    fn default() -> Self {
        // FNINIT state (SDM Vol. 1 §8.1.9 Table 8-1... the reset/FINIT values).
        FpuState {
            st: [[0; 16]; 8],
            fcw: 0x037f,
            fsw: 0,
            ftw: 0xffff,
            fop: 0,
            fip: 0,
            fdp: 0,
            fcs: 0,
            fds: 0,
            _pad: 0,
        }
    }
}

/// Model-specific registers that rinx implements (Intel SDM Vol. 4). Unknown MSRs raise #GP(0).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsrState {
    pub apic_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub tsc_aux: u64,
    pub pat: u64,
    pub misc_enable: u64,
    /// Guest TSC = host-derived virtual time + this offset (written via IA32_TSC).
    pub tsc_offset: u64,
    pub mtrr_def_type: u64,
    /// IA32_MTRR_PHYSBASE0..7 / PHYSMASK0..7 interleaved.
    pub mtrr_var: [u64; 16],
    /// Fixed-range MTRRs: 64K_00000, 16K_80000, 16K_A0000, 4K_C0000..4K_F8000.
    pub mtrr_fixed: [u64; 11],
}

/// The complete architectural state of one guest vCPU.
///
/// Field offsets are part of the JIT ABI (see the `OFFSET_*` constants); add fields only at the
/// end or update the constants and the generated code together.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuState {
    /// RAX..R15 in ModRM order (see [`reg`]).
    pub gpr: [u64; 16],
    pub rip: u64,
    /// Architectural RFLAGS (bit 1 always set). The arithmetic flags are kept eagerly.
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS (see [`sreg`]).
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// CR8 = TPR\[7:4\] (Intel SDM Vol. 3A §10.8.6.1).
    pub cr8: u64,
    pub efer: u64,
    pub dr: [u64; 8],
    /// XMM0..XMM15, little-endian 128-bit values as two u64 halves (low first).
    pub xmm: [[u64; 2]; 16],
    pub mxcsr: u32,
    /// Current privilege level (0..=3). Architecturally CS.RPL outside real/V86 mode; kept
    /// explicitly because real mode and SYSRET set it without a descriptor load.
    pub cpl: u8,
    pub _pad0: [u8; 3],
    pub fpu: FpuState,
    pub msr: MsrState,
}

/// Byte offset of [`CpuState::gpr`], for generated code.
pub const OFFSET_GPR: usize = offset_of!(CpuState, gpr);
/// Byte offset of [`CpuState::rip`].
pub const OFFSET_RIP: usize = offset_of!(CpuState, rip);
/// Byte offset of [`CpuState::rflags`].
pub const OFFSET_RFLAGS: usize = offset_of!(CpuState, rflags);
/// Byte offset of [`CpuState::seg`].
pub const OFFSET_SEG: usize = offset_of!(CpuState, seg);
/// Byte offset of [`CpuState::cr0`].
pub const OFFSET_CR0: usize = offset_of!(CpuState, cr0);
/// Byte offset of [`CpuState::cr4`].
pub const OFFSET_CR4: usize = offset_of!(CpuState, cr4);
/// Byte offset of [`CpuState::xmm`] (16 registers of 16 bytes, low quadword first).
pub const OFFSET_XMM: usize = offset_of!(CpuState, xmm);

impl CpuState {
    /// The state after RESET / INIT (Intel SDM Vol. 3A §9.1.1, Table 9-1): real mode,
    /// CS.selector = 0xF000, CS.base = 0xFFFF0000, EIP = 0xFFF0, EDX = processor signature.
    pub fn reset() -> Self {
        let mut seg = [Segment::real_mode(0, 0xffff); 6];
        seg[sreg::CS] = Segment {
            base: 0xffff_0000,
            limit: 0xffff,
            selector: 0xf000,
            attr: Segment::ATTR_P | Segment::ATTR_S | 0xb,
        };
        let mut gpr = [0u64; 16];
        gpr[reg::RDX] = 0x0000_0600;
        CpuState {
            gpr,
            rip: 0xfff0,
            rflags: flags::FIXED1,
            seg,
            ldtr: Segment {
                attr: Segment::ATTR_P | 0x2,
                limit: 0xffff,
                ..Segment::default()
            },
            tr: Segment {
                attr: Segment::ATTR_P | 0xb,
                limit: 0xffff,
                ..Segment::default()
            },
            gdtr: TableReg {
                base: 0,
                limit: 0xffff,
                _pad: 0,
            },
            idtr: TableReg {
                base: 0,
                limit: 0xffff,
                _pad: 0,
            },
            cr0: cr::CR0_ET | cr::CR0_CD | cr::CR0_NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x0000_0400],
            xmm: [[0; 2]; 16],
            mxcsr: 0x1f80,
            cpl: 0,
            _pad0: [0; 3],
            fpu: FpuState::default(),
            msr: MsrState {
                apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
                pat: 0x0007_0406_0007_0406,
                misc_enable: 1,
                ..MsrState::default()
            },
        }
    }
}

impl Default for CpuState {
    fn default() -> Self {
        Self::reset()
    }
}

/// Why a compiled block returned to the dispatcher.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Fell off the end of the block; RIP holds the next guest instruction.
    Continue = 0,
    /// The next instruction needs the interpreter / ring layer.
    Helper = 1,
    /// A guest fault was recorded in the exit data.
    Fault = 2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_offsets_are_stable() {
        assert_eq!(OFFSET_GPR, 0);
        assert_eq!(OFFSET_RIP, 128);
        assert_eq!(OFFSET_RFLAGS, 136);
        assert_eq!(OFFSET_SEG, 144);
        assert_eq!(core::mem::size_of::<Segment>(), 16);
    }

    #[test]
    fn reset_state_matches_sdm_table_9_1() {
        let s = CpuState::reset();
        assert_eq!(s.seg[sreg::CS].selector, 0xf000);
        assert_eq!(s.seg[sreg::CS].base, 0xffff_0000);
        assert_eq!(s.rip, 0xfff0);
        assert_eq!(s.rflags, 2);
        assert_eq!(s.cr0, 0x6000_0010);
    }
}

/// The environment a compiled block receives next to the CPU state (its second argument).
///
/// Generated code reads `helper` and `limit` at the offsets [`OFFSET_ENV_HELPER`] and
/// [`OFFSET_ENV_LIMIT`]; `user` is opaque to the JIT (the machine's helper context).
#[repr(C)]
#[derive(Debug)]
pub struct JitEnv {
    /// Called for every guest instruction the block does not emit natively, as
    /// `helper(env, index_in_block, retired_before_this_iteration) -> continue(0) / exit(!= 0)`.
    /// On exit the helper has left RIP and the instruction count exact (see [`EXIT_SYNCED`]).
    pub helper: usize,
    /// Maximum number of guest instructions one invocation may retire (loops in a block stop
    /// before exceeding it, which bounds interrupt latency and keeps instruction budgets exact).
    pub limit: u64,
    /// Opaque pointer for the helper.
    pub user: *mut core::ffi::c_void,
    /// Address of the `[JitTlbEntry; JTLB_WAYS * JTLB_ENTRIES]` array the inline memory
    /// accesses probe (way 0 inline; way 1, `JTLB_ENTRIES` entries further, out of line).
    pub tlb: usize,
    /// Called when an inline probe misses, as `fill(env, la, kind) -> 0` if the entry for
    /// `la` now hits (the access is retried) or non-zero to execute the whole instruction
    /// through `helper` (faults, MMIO, page-crossing accesses, code pages). `kind` is
    /// `size | 0x100` for stores (size in bytes).
    pub fill: usize,
    /// Identifier of the block running now (the driver's block number): set by the driver on
    /// entry and by a chained entry, read by the helper to find its instruction.
    pub cur: u64,
    /// Set by an unpatched chainable exit to `block_id << 8 | exit_index` (else left as the
    /// driver initialised it): tells the driver which jump to patch to the next block.
    pub last_exit: u64,
    /// Address of the `[JcEntry; JC_ENTRIES]` jump cache generated code probes at block exits
    /// that do not continue in the block (see [`JcEntry`]).
    pub jc: usize,
    /// Context tag of the running code: a jump-cache entry is used only if its `tag` equals
    /// this (the driver sets a value no entry holds when the cache must not be used).
    pub jc_tag: u64,
}

/// Byte offset of [`JitEnv::jc`].
pub const OFFSET_ENV_JC: usize = offset_of!(JitEnv, jc);
/// Byte offset of [`JitEnv::jc_tag`].
pub const OFFSET_ENV_JC_TAG: usize = offset_of!(JitEnv, jc_tag);
/// Number of jump-cache entries (direct-mapped by [`jc_slot`]; a power of two).
pub const JC_ENTRIES: usize = 4096;
/// log2 of `size_of::<JcEntry>()` (generated code scales the slot index by it).
pub const JC_ENTRY_SHIFT: u8 = 5;
/// Byte offset of [`JcEntry::rip`].
pub const OFFSET_JC_RIP: usize = offset_of!(JcEntry, rip);
/// Byte offset of [`JcEntry::tag`].
pub const OFFSET_JC_TAG: usize = offset_of!(JcEntry, tag);
/// Byte offset of [`JcEntry::host`].
pub const OFFSET_JC_HOST: usize = offset_of!(JcEntry, host);

/// Slot of guest `rip` in the jump cache: `(rip ^ (rip >> 12)) % JC_ENTRIES` (generated code
/// computes the same).
#[inline]
pub fn jc_slot(rip: u64) -> usize {
    ((rip ^ (rip >> 12)) as usize) & (JC_ENTRIES - 1)
}

/// One entry of the jump cache (QEMU's `tb_jmp_cache` idea): guest RIP -> host chained entry
/// of the block the driver would run there, valid while the driver's context tag equals
/// `tag`. Generated code that leaves a block towards a RIP it cannot reach by a patched jump
/// (RET, an indirect branch run by the helper, exits to another page or outside 64-bit mode)
/// compares `rip` and `tag` and on a hit jumps to `host` with `r13` = instructions retired in
/// this invocation; the chained entry re-checks `JitEnv::limit`. Filled only by the driver.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JcEntry {
    /// Guest RIP of the block.
    pub rip: u64,
    /// Driver context tag the entry belongs to (`u64::MAX` = invalid).
    pub tag: u64,
    /// Host address of the block's chained entry.
    pub host: u64,
    /// Driver block number (for the driver's own lookup).
    pub id: u64,
}

impl JcEntry {
    /// An entry that never hits.
    pub const INVALID: JcEntry = JcEntry {
        rip: 0,
        tag: u64::MAX,
        host: 0,
        id: 0,
    };
}

/// Byte offset of [`JitEnv::tlb`].
pub const OFFSET_ENV_TLB: usize = offset_of!(JitEnv, tlb);
/// Byte offset of [`JitEnv::fill`].
pub const OFFSET_ENV_FILL: usize = offset_of!(JitEnv, fill);
/// Byte offset of [`JitEnv::cur`].
pub const OFFSET_ENV_CUR: usize = offset_of!(JitEnv, cur);
/// Byte offset of [`JitEnv::last_exit`].
pub const OFFSET_ENV_LAST_EXIT: usize = offset_of!(JitEnv, last_exit);
/// Byte offset of [`JitTlbEntry::read_tag`].
pub const OFFSET_JTLB_READ: usize = offset_of!(JitTlbEntry, read_tag);
/// Byte offset of [`JitTlbEntry::write_tag`].
pub const OFFSET_JTLB_WRITE: usize = offset_of!(JitTlbEntry, write_tag);
/// Byte offset of [`JitTlbEntry::addend`].
pub const OFFSET_JTLB_ADDEND: usize = offset_of!(JitTlbEntry, addend);
/// log2 of `size_of::<JitTlbEntry>()` (generated code scales the slot index by it).
pub const JTLB_ENTRY_SHIFT: u8 = 5;
/// Number of JIT TLB sets (indexed by linear page number; a power of two).
pub const JTLB_ENTRIES: usize = 1024;
/// Ways of the JIT TLB (and of the shadow TLB): set `s` is entries `s` and
/// `s + JTLB_ENTRIES`; a fill moves the previous way-0 entry to way 1 (two hot pages 4 MiB
/// apart no longer evict each other on every access).
pub const JTLB_WAYS: usize = 2;

/// One entry of the JIT's inline TLB probe, read by generated code (offsets `OFFSET_JTLB_*`).
///
/// A data access of `size` bytes at linear `la` hits when the tag of its *last* byte's page,
/// `((la + size - 1) & !0xfff) | user`, equals `read_tag` (loads) or `write_tag` (stores); a
/// hit means the whole access lies in one page of RAM whose permissions allow it for that
/// privilege class (user = CPL 3), so the host address is simply `la + addend`. Tags are only
/// filled when the answer cannot change without a TLB flush: never for MMIO, never for
/// supervisor accesses whose outcome depends on RFLAGS.AC (SMAP), write tags only for pages
/// whose PTE is already dirty and that hold no decoded or translated code (stores to those
/// must go through the interpreter's `DecodeCache::note_write` for SMC detection).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitTlbEntry {
    /// Tag for loads (`u64::MAX` = invalid: no page address has all low bits set).
    pub read_tag: u64,
    /// Tag for stores (`u64::MAX` = invalid).
    pub write_tag: u64,
    /// Host address of the page minus its linear address (wrapping).
    pub addend: u64,
    /// Guest physical page (to drop write tags when the page starts holding code).
    pub pa_page: u64,
}

impl JitTlbEntry {
    /// An entry that never hits.
    pub const INVALID: JitTlbEntry = JitTlbEntry {
        read_tag: u64::MAX,
        write_tag: u64::MAX,
        addend: 0,
        pa_page: u64::MAX,
    };
}

/// Byte offset of [`JitEnv::helper`].
pub const OFFSET_ENV_HELPER: usize = offset_of!(JitEnv, helper);
/// Byte offset of [`JitEnv::limit`].
pub const OFFSET_ENV_LIMIT: usize = offset_of!(JitEnv, limit);

/// Return value of a compiled block when a helper ended it: RIP and the instruction count are
/// already exact in the machine's state. Any other return value is the number of guest
/// instructions the block retired, with RIP stored by the block.
pub const EXIT_SYNCED: u64 = u64::MAX;

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn env_offsets_are_stable() {
        assert_eq!(OFFSET_ENV_HELPER, 0);
        assert_eq!(OFFSET_ENV_LIMIT, 8);
        assert_eq!(core::mem::size_of::<JitTlbEntry>(), 1 << JTLB_ENTRY_SHIFT);
        assert_eq!(core::mem::size_of::<JcEntry>(), 1 << JC_ENTRY_SHIFT);
    }
}
