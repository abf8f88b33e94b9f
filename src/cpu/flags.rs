//! Arithmetic flag computation (Intel SDM Vol. 1 §3.4.3.1, Appendix A "EFLAGS Cross-Reference").
//!
//! Flags are computed eagerly: every instruction leaves the architectural RFLAGS value, so the
//! interpreter, the JIT and traces see the same state without lazy-flag bookkeeping.

use jit::abi::flags::*;

/// Value mask of an operand of `size` bytes.
#[inline]
pub fn mask(size: u32) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Sign bit of an operand of `size` bytes.
#[inline]
pub fn sign_bit(size: u32) -> u64 {
    1u64 << (size * 8 - 1)
}

/// PF: set when the low byte of the result has an even number of 1 bits.
#[inline]
pub fn parity(v: u64) -> u64 {
    if (v as u8).count_ones() % 2 == 0 {
        PF
    } else {
        0
    }
}

/// ZF, SF and PF of a result of `size` bytes.
#[inline]
pub fn szp(r: u64, size: u32) -> u64 {
    let r = r & mask(size);
    let mut f = parity(r);
    if r == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    f
}

/// Flags of `a + b + carry_in` (ADD/ADC): returns (result masked, status flags).
#[inline]
pub fn add(a: u64, b: u64, carry_in: u64, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let full = (a as u128) + (b as u128) + (carry_in as u128);
    let r = (full as u64) & m;
    let mut f = szp(r, size);
    if full > m as u128 {
        f |= CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    if (!(a ^ b) & (a ^ r)) & sign_bit(size) != 0 {
        f |= OF;
    }
    (r, f)
}

/// Flags of `a - b - borrow_in` (SUB/SBB/CMP/NEG): returns (result masked, status flags).
#[inline]
pub fn sub(a: u64, b: u64, borrow_in: u64, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b).wrapping_sub(borrow_in) & m;
    let mut f = szp(r, size);
    if (a as u128) < (b as u128) + (borrow_in as u128) {
        f |= CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    if ((a ^ b) & (a ^ r)) & sign_bit(size) != 0 {
        f |= OF;
    }
    (r, f)
}

/// Flags of a logical operation (AND/OR/XOR/TEST): CF = OF = 0, AF undefined (cleared, as
/// current Intel and AMD processors do).
#[inline]
pub fn logic(r: u64, size: u32) -> u64 {
    szp(r, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sub_flags_follow_sdm_definitions() {
        assert_eq!(add(0xff, 1, 0, 1), (0, CF | ZF | PF | AF));
        assert_eq!(add(0x7f, 1, 0, 1), (0x80, OF | SF | AF));
        assert_eq!(sub(0, 1, 0, 2), (0xffff, CF | SF | PF | AF));
        assert_eq!(sub(0x8000_0000, 1, 0, 4).1 & OF, OF);
        assert_eq!(add(u64::MAX, 0, 1, 8), (0, CF | ZF | PF | AF));
    }
}
