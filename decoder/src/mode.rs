//! Decode modes (the processor state that changes how bytes decode).

/// The decoding mode of the guest code segment.
///
/// The default operand/address size comes from CS.D and, in IA-32e mode, CS.L (Intel SDM Vol. 3A
/// §3.4.5 "Segment Descriptors", and Vol. 1 §3.6 "Operand-Size and Address-Size Attributes").
/// Real-address and virtual-8086 mode decode exactly like 16-bit protected mode, but a few
/// protected-mode-only instructions are not recognised there (#UD), so they are a separate mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Real-address mode or virtual-8086 mode: 16-bit code; LAR, LSL, VERR, VERW, SLDT, STR,
    /// LLDT, LTR and ARPL raise #UD (Intel SDM Vol. 2 "Real-Address Mode Exceptions" and
    /// "Virtual-8086 Mode Exceptions" of each of those instructions).
    Real16,
    /// 16-bit protected mode (CS.D = 0), including 16-bit compatibility-mode code.
    Bits16,
    /// 32-bit protected mode (CS.D = 1), including 32-bit compatibility-mode code.
    Bits32,
    /// 64-bit mode (IA-32e mode with CS.L = 1), Intel SDM Vol. 1 §3.2.1.
    Bits64,
}

impl Mode {
    /// The default code size in bits (16, 32 or 64) as iced-x86's `Decoder` expects it.
    #[must_use]
    pub const fn bitness(self) -> u32 {
        match self {
            Mode::Real16 | Mode::Bits16 => 16,
            Mode::Bits32 => 32,
            Mode::Bits64 => 64,
        }
    }

    /// Linear addresses wrap at 2^32 outside IA-32e mode and at 2^64 in 64-bit mode (Intel SDM
    /// Vol. 3A §3.3.1 and §3.3.7); this mask applies that wrap.
    #[must_use]
    pub const fn linear_mask(self) -> u64 {
        match self {
            Mode::Bits64 => u64::MAX,
            Mode::Real16 | Mode::Bits16 | Mode::Bits32 => 0xFFFF_FFFF,
        }
    }

    /// All modes, for table-driven tests and tools.
    pub const ALL: [Mode; 4] = [Mode::Real16, Mode::Bits16, Mode::Bits32, Mode::Bits64];
}
