//! The decoded instruction shared by the interpreter and the JIT.

use iced_x86::Instruction;

use crate::{Class, Mode};

/// Maximum length of an x86 instruction in bytes (Intel SDM Vol. 2A §2.1 "Instruction Format
/// for Protected Mode, Real-Address Mode, and Virtual-8086 Mode": "... exceeding the limit of 15
/// bytes ... causes a general-protection exception").
pub const MAX_INSN_LEN: usize = 15;

/// Why an instruction cannot execute, and which exception the guest gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    /// Undefined or not valid in this mode (including a LOCK prefix on an instruction that does
    /// not allow it): #UD (Intel SDM Vol. 2A §2.1.1, §2.3.11; Vol. 3A §6.15 "Interrupt 6").
    Opcode,
    /// Longer than 15 bytes: #GP(0) (Intel SDM Vol. 2A §2.1, Vol. 3A §6.15 "Interrupt 13").
    ///
    /// Detected as "iced-x86 needed more than the 15 bytes it was given"; an invalid
    /// instruction of exactly 15 bytes (undefined opcode, or LOCK on a register form) is told
    /// apart and reported as [`InvalidKind::Opcode`].
    TooLong,
}

/// One decoded guest instruction with its classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedInsn {
    /// The iced-x86 instruction. Its `ip()` is the guest IP (offset in CS) it was decoded at.
    /// When [`DecodedInsn::invalid`] is `Some`, it must not be executed (it may be
    /// `Code::INVALID`, or a real-mode-unrecognised instruction kept for traces).
    pub insn: Instruction,
    /// Length in bytes, 1..=15. For an invalid instruction: how many bytes were examined.
    pub len: u8,
    /// Classification flags.
    pub class: Class,
    /// `Some` when the guest must get an exception instead of executing the instruction.
    pub invalid: Option<InvalidKind>,
    /// Linear address of the first byte (CS base + IP, wrapped per [`Mode::linear_mask`]).
    pub linear: u64,
    /// The mode it was decoded in.
    pub mode: Mode,
    bytes: [u8; MAX_INSN_LEN],
}

impl DecodedInsn {
    /// Builds a `DecodedInsn` from the decode result; `bytes` holds at least `len` bytes.
    pub(crate) fn new(
        insn: Instruction,
        len: u8,
        class: Class,
        invalid: Option<InvalidKind>,
        linear: u64,
        mode: Mode,
        bytes: &[u8],
    ) -> DecodedInsn {
        let mut raw = [0u8; MAX_INSN_LEN];
        let n = usize::from(len).min(bytes.len()).min(MAX_INSN_LEN);
        raw[..n].copy_from_slice(&bytes[..n]);
        DecodedInsn {
            insn,
            len,
            class,
            invalid,
            linear,
            mode,
            bytes: raw,
        }
    }

    /// The instruction's guest bytes (`len` of them).
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(MAX_INSN_LEN)]
    }

    /// The guest IP (offset in CS) of the instruction.
    #[must_use]
    pub fn ip(&self) -> u64 {
        self.insn.ip()
    }

    /// The IP of the next sequential instruction, wrapped to the code size (16-bit IP wraps at
    /// 64 KiB, 32-bit EIP at 4 GiB; Intel SDM Vol. 1 §3.5 "Instruction Pointer").
    #[must_use]
    pub fn next_ip(&self) -> u64 {
        let next = self.insn.ip().wrapping_add(u64::from(self.len));
        match self.mode {
            Mode::Real16 | Mode::Bits16 => next & 0xFFFF,
            Mode::Bits32 => next & 0xFFFF_FFFF,
            Mode::Bits64 => next,
        }
    }

    /// Shorthand for `self.class.needs_ring_layer()`.
    #[must_use]
    pub fn needs_ring_layer(&self) -> bool {
        self.class.needs_ring_layer()
    }
}
