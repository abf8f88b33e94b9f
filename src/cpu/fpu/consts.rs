//! x87 constants (FLD1, FLDPI, ... SDM Vol. 2A "FLD1/FLDL2T/FLDL2E/FLDPI/FLDLG2/FLDLN2/FLDZ").
//!
//! The constants are stored internally with a 66-bit significand and rounded to 64 bits by
//! FCW.RC (§8.3.8); precision control does not apply. Each entry holds the value rounded
//! toward zero (as an 80-bit number) and whether rounding up in magnitude yields the next
//! representable value, and whether the discarded part is above one half (for nearest).

/// (truncated 80-bit value, discarded bits > 1/2 ulp, discarded bits nonzero).
#[derive(Debug, Clone, Copy)]
pub struct Konst {
    pub trunc: u128,
    pub above_half: bool,
    pub inexact: bool,
}

/// π = 0x4000_C90FDAA2_2168C234_C4C6... (66-bit: ...C234 + 3/4 ulp -> nearest is ...C235).
pub const PI: Konst = Konst {
    trunc: 0x4000_C90F_DAA2_2168_C234,
    above_half: true,
    inexact: true,
};
/// log2(10) = 0x4000_D49A784B_CD1B8AFE_492B...
pub const L2T: Konst = Konst {
    trunc: 0x4000_D49A_784B_CD1B_8AFE,
    above_half: false,
    inexact: true,
};
/// log2(e) = 0x3FFF_B8AA3B29_5C17F0BB_BE87...
pub const L2E: Konst = Konst {
    trunc: 0x3FFF_B8AA_3B29_5C17_F0BB,
    above_half: true,
    inexact: true,
};
/// log10(2) = 0x3FFD_9A209A84_FBCFF798_8F89...
pub const LG2: Konst = Konst {
    trunc: 0x3FFD_9A20_9A84_FBCF_F798,
    above_half: true,
    inexact: true,
};
/// ln(2) = 0x3FFE_B17217F7_D1CF79AB_C9E3...
pub const LN2: Konst = Konst {
    trunc: 0x3FFE_B172_17F7_D1CF_79AB,
    above_half: true,
    inexact: true,
};

impl Konst {
    /// The value rounded by the 2-bit RC field (constants are positive).
    pub fn rounded(&self, rc: u32) -> u128 {
        let up = match rc & 3 {
            0 => self.above_half,
            2 => self.inexact,
            _ => false,
        };
        self.trunc + u128::from(up)
    }
}
