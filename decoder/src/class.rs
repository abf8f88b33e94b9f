//! Instruction classification: which instructions end a block, which must leave translated code
//! for the ring-compression layer, and which touch memory.
//!
//! Driven by iced-x86's `Mnemonic`, `Code` and `FlowControl`, with the sensitive sets written as
//! tables over mnemonics so they can be audited against the SDM in one place.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

use iced_x86::{FlowControl, Instruction, Mnemonic, OpKind, Register};

use crate::Mode;

/// A small set of classification flags (hand-rolled bitset).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Class(u16);

impl Class {
    /// No flag.
    pub const NONE: Class = Class(0);
    /// Ends a basic block: any branch, call, return, software interrupt, fast system call,
    /// far transfer, HLT, or an instruction that always faults (UD0/UD1/UD2) — Intel SDM Vol. 1
    /// §6.3 "Calling Procedures Using CALL and RET" and §6.4 "Interrupts and Exceptions".
    pub const CONTROL_TRANSFER: Class = Class(1 << 0);
    /// Executes only at CPL 0; at CPL > 0 it raises #GP(0) (Intel SDM Vol. 3A §5.9
    /// "Privileged Instructions").
    pub const PRIVILEGED: Class = Class(1 << 1);
    /// Checked against EFLAGS.IOPL (and the TSS I/O bitmap): IN, OUT, INS, OUTS, CLI, STI;
    /// in virtual-8086 mode also PUSHF, POPF, INT n and IRET (Intel SDM Vol. 1 §19.5.1
    /// "I/O Privilege Level", Vol. 3A §20.2.7 "Sensitive Instructions").
    pub const IOPL_SENSITIVE: Class = Class(1 << 2);
    /// Unprivileged but sensitive in the Popek–Goldberg sense: its result depends on, or it
    /// changes, privileged processor state (descriptor tables, segment descriptors, CPL, EFLAGS
    /// system bits, CPU identity, time stamp counter), so a binary translator must emulate it
    /// (Robin & Irvine, "Analysis of the Intel Pentium's Ability to Support a Secure Virtual
    /// Machine Monitor", USENIX Security 2000; Adams & Agesen, ASPLOS 2006).
    pub const SENSITIVE: Class = Class(1 << 3);
    /// Has an explicit memory operand (ModRM memory, moffs, XLAT) or a string operand. LEA, the
    /// hint NOPs, PREFETCHh and INVLPG compute an address without accessing memory and are
    /// excluded.
    pub const MEMORY: Class = Class(1 << 4);
    /// A string instruction (MOVS, CMPS, SCAS, LODS, STOS, INS, OUTS), Intel SDM Vol. 1 §7.3.9.
    pub const STRING: Class = Class(1 << 5);
    /// Not a valid instruction in this mode: the guest gets #UD, or #GP(0) when longer than 15
    /// bytes (see [`crate::InvalidKind`]). Intel SDM Vol. 2A §2.3.11 and §2.1.
    pub const INVALID: Class = Class(1 << 6);

    const NAMES: [(Class, &'static str); 7] = [
        (Class::CONTROL_TRANSFER, "CONTROL_TRANSFER"),
        (Class::PRIVILEGED, "PRIVILEGED"),
        (Class::IOPL_SENSITIVE, "IOPL_SENSITIVE"),
        (Class::SENSITIVE, "SENSITIVE"),
        (Class::MEMORY, "MEMORY"),
        (Class::STRING, "STRING"),
        (Class::INVALID, "INVALID"),
    ];

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// `true` if every flag of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Class) -> bool {
        self.0 & other.0 == other.0
    }

    /// `true` if any flag of `other` is set in `self`.
    #[must_use]
    pub const fn intersects(self, other: Class) -> bool {
        self.0 & other.0 != 0
    }

    /// `true` if no flag is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Set union.
    #[must_use]
    pub const fn union(self, other: Class) -> Class {
        Class(self.0 | other.0)
    }

    /// `true` if the instruction must leave translated code and be emulated by the
    /// ring-compression layer: PRIVILEGED, IOPL_SENSITIVE or SENSITIVE (DESIGN.md "What rinx is").
    #[must_use]
    pub const fn needs_ring_layer(self) -> bool {
        self.intersects(Class(
            Class::PRIVILEGED.0 | Class::IOPL_SENSITIVE.0 | Class::SENSITIVE.0,
        ))
    }
}

impl BitOr for Class {
    type Output = Class;
    fn bitor(self, rhs: Class) -> Class {
        self.union(rhs)
    }
}

impl BitOrAssign for Class {
    fn bitor_assign(&mut self, rhs: Class) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Class {
    type Output = Class;
    fn bitand(self, rhs: Class) -> Class {
        Class(self.0 & rhs.0)
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("Class(NONE)");
        }
        f.write_str("Class(")?;
        let mut first = true;
        for (flag, name) in Class::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// Instructions that raise #GP(0) at CPL > 0 (Intel SDM Vol. 3A §5.9 "Privileged Instructions",
/// plus the later CPL-0-only additions: SWAPGS, SYSRET, SYSEXIT, XSETBV, XSAVES/XRSTORS, CLAC/STAC,
/// INVPCID, MONITOR/MWAIT when not enabled for CPL 3, AMD INVLPGA/INVLPGB/TLBSYNC).
/// MOV to/from CRn/DRn is matched by operand, see [`classify`]. Anything else that iced-x86
/// marks `is_privileged()` (VMX, SVM, SGX system leaves...) is added on top of this table.
pub const PRIVILEGED_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Lgdt,
    Mnemonic::Lidt,
    Mnemonic::Lldt,
    Mnemonic::Ltr,
    Mnemonic::Clts,
    Mnemonic::Lmsw,
    Mnemonic::Invd,
    Mnemonic::Wbinvd,
    Mnemonic::Wbnoinvd,
    Mnemonic::Invlpg,
    Mnemonic::Invlpga,
    Mnemonic::Invlpgb,
    Mnemonic::Tlbsync,
    Mnemonic::Invpcid,
    Mnemonic::Hlt,
    Mnemonic::Rdmsr,
    Mnemonic::Wrmsr,
    Mnemonic::Wrmsrns,
    Mnemonic::Rdmsrlist,
    Mnemonic::Wrmsrlist,
    Mnemonic::Swapgs,
    Mnemonic::Sysexit,
    Mnemonic::Sysexitq,
    Mnemonic::Sysret,
    Mnemonic::Sysretq,
    Mnemonic::Monitor,
    Mnemonic::Mwait,
    Mnemonic::Xsetbv,
    Mnemonic::Xsaves,
    Mnemonic::Xsaves64,
    Mnemonic::Xrstors,
    Mnemonic::Xrstors64,
    Mnemonic::Clac,
    Mnemonic::Stac,
    Mnemonic::Rsm,
    Mnemonic::Lkgs,
];

/// IOPL-sensitive instructions (Intel SDM Vol. 1 §19.5.1 "I/O Privilege Level"; Vol. 3A §20.2.7
/// "Sensitive Instructions" for PUSHF/POPF/INT n/IRET in virtual-8086 mode).
pub const IOPL_SENSITIVE_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::In,
    Mnemonic::Out,
    Mnemonic::Insb,
    Mnemonic::Insw,
    Mnemonic::Insd,
    Mnemonic::Outsb,
    Mnemonic::Outsw,
    Mnemonic::Outsd,
    Mnemonic::Cli,
    Mnemonic::Sti,
    Mnemonic::Pushf,
    Mnemonic::Pushfd,
    Mnemonic::Pushfq,
    Mnemonic::Popf,
    Mnemonic::Popfd,
    Mnemonic::Popfq,
    Mnemonic::Int,
    Mnemonic::Iret,
    Mnemonic::Iretd,
    Mnemonic::Iretq,
];

/// Sensitive unprivileged instructions (Robin & Irvine 2000 list, extended with later
/// additions). MOV/PUSH/POP of a segment register and far CALL/JMP are matched by operand/code,
/// see [`classify`].
pub const SENSITIVE_MNEMONICS: &[Mnemonic] = &[
    // Read descriptor-table registers / CR0 (Intel SDM Vol. 3A §2.8, UMIP §2.5).
    Mnemonic::Sgdt,
    Mnemonic::Sidt,
    Mnemonic::Sldt,
    Mnemonic::Str,
    Mnemonic::Smsw,
    // EFLAGS system bits (IF, IOPL, VM...).
    Mnemonic::Pushf,
    Mnemonic::Pushfd,
    Mnemonic::Pushfq,
    Mnemonic::Popf,
    Mnemonic::Popfd,
    Mnemonic::Popfq,
    // Descriptor inspection.
    Mnemonic::Lar,
    Mnemonic::Lsl,
    Mnemonic::Verr,
    Mnemonic::Verw,
    // Far transfers and segment loads.
    Mnemonic::Retf,
    Mnemonic::Lss,
    Mnemonic::Lds,
    Mnemonic::Les,
    Mnemonic::Lfs,
    Mnemonic::Lgs,
    // Interrupts and returns through gates.
    Mnemonic::Int,
    Mnemonic::Int1,
    Mnemonic::Int3,
    Mnemonic::Into,
    Mnemonic::Iret,
    Mnemonic::Iretd,
    Mnemonic::Iretq,
    Mnemonic::Syscall,
    Mnemonic::Sysenter,
    // CPU identity, counters and other virtualised state.
    Mnemonic::Cpuid,
    Mnemonic::Rdtsc,
    Mnemonic::Rdtscp,
    Mnemonic::Rdpmc,
    Mnemonic::Rdpid,
    Mnemonic::Rdpru,
    Mnemonic::Xgetbv,
    Mnemonic::Rdfsbase,
    Mnemonic::Rdgsbase,
    Mnemonic::Wrfsbase,
    Mnemonic::Wrgsbase,
];

/// Instructions that are not recognised in real-address and virtual-8086 mode (#UD), per the
/// "Real-Address Mode Exceptions" section of each in Intel SDM Vol. 2.
pub const NOT_IN_REAL_MODE_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Lar,
    Mnemonic::Lsl,
    Mnemonic::Verr,
    Mnemonic::Verw,
    Mnemonic::Sldt,
    Mnemonic::Str,
    Mnemonic::Lldt,
    Mnemonic::Ltr,
    Mnemonic::Arpl,
];

/// Mnemonics whose memory operand only names an address and is never accessed.
const NO_ACCESS_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Lea,
    Mnemonic::Invlpg,
    Mnemonic::Nop,
    Mnemonic::Prefetch,
    Mnemonic::Prefetchw,
    Mnemonic::Prefetchnta,
    Mnemonic::Prefetcht0,
    Mnemonic::Prefetcht1,
    Mnemonic::Prefetcht2,
    Mnemonic::Prefetchwt1,
    Mnemonic::Reservednop,
];

/// Extra block terminators that iced-x86 reports as `FlowControl::Next`: HLT stops the CPU,
/// and the fast system calls/returns change CS.
const EXTRA_CONTROL_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Hlt,
    Mnemonic::Syscall,
    Mnemonic::Sysenter,
    Mnemonic::Sysret,
    Mnemonic::Sysretq,
    Mnemonic::Sysexit,
    Mnemonic::Sysexitq,
    Mnemonic::Rsm,
    Mnemonic::Retf,
    Mnemonic::Iret,
    Mnemonic::Iretd,
    Mnemonic::Iretq,
];

fn has_register(insn: &Instruction, pred: fn(Register) -> bool) -> bool {
    (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Register && pred(insn.op_register(i)))
}

fn has_memory_operand(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::Memory
                | OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemorySegDI
                | OpKind::MemorySegEDI
                | OpKind::MemorySegRDI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

/// `true` if the instruction (already decoded without error) is not recognised in `mode`.
#[must_use]
pub fn invalid_in_mode(insn: &Instruction, mode: Mode) -> bool {
    mode == Mode::Real16 && NOT_IN_REAL_MODE_MNEMONICS.contains(&insn.mnemonic())
}

/// Classifies a decoded instruction for `mode`.
///
/// `Code::INVALID`, and instructions that are not recognised in `mode`, are classified as
/// [`Class::INVALID`] alone: nothing else about them may be relied on.
#[must_use]
pub fn classify(insn: &Instruction, mode: Mode) -> Class {
    if insn.is_invalid() || invalid_in_mode(insn, mode) {
        return Class::INVALID;
    }
    let m = insn.mnemonic();
    let mut class = Class::NONE;

    if insn.flow_control() != FlowControl::Next || EXTRA_CONTROL_MNEMONICS.contains(&m) {
        class |= Class::CONTROL_TRANSFER;
    }

    let iopl = IOPL_SENSITIVE_MNEMONICS.contains(&m);
    if iopl {
        class |= Class::IOPL_SENSITIVE;
    }
    // MOV to/from control, debug and (386/486) test registers: Intel SDM Vol. 2B "MOV—Move
    // to/from Control Registers", "MOV—Move to/from Debug Registers".
    let mov_system_reg =
        m == Mnemonic::Mov && has_register(insn, |r| r.is_cr() || r.is_dr() || r.is_tr());
    if PRIVILEGED_MNEMONICS.contains(&m) || mov_system_reg || (insn.is_privileged() && !iopl) {
        class |= Class::PRIVILEGED;
    }

    // MOV/PUSH/POP Sreg load descriptors (or read the selector's RPL = CPL for CS); far
    // CALL/JMP may go through call gates and change CPL (Intel SDM Vol. 3A §5.8).
    let sreg = matches!(m, Mnemonic::Mov | Mnemonic::Push | Mnemonic::Pop)
        && has_register(insn, Register::is_segment_register);
    let far = insn.is_call_far()
        || insn.is_jmp_far()
        || insn.is_call_far_indirect()
        || insn.is_jmp_far_indirect();
    if SENSITIVE_MNEMONICS.contains(&m) || sreg || far {
        class |= Class::SENSITIVE;
    }

    if insn.is_string_instruction() {
        class |= Class::STRING;
    }
    if has_memory_operand(insn) && !NO_ACCESS_MNEMONICS.contains(&m) {
        class |= Class::MEMORY;
    }
    class
}

#[cfg(test)]
mod tests;
