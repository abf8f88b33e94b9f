//! The SSE4.2 string and text instructions PCMPESTRI, PCMPESTRM, PCMPISTRI, PCMPISTRM (SDM
//! Vol. 2B §4.1 "Imm8 Control Byte Operation for PCMPESTRI / PCMPESTRM / PCMPISTRI /
//! PCMPISTRM").
//!
//! The first operand (xmm1, "arg1") and the second (xmm2/m128, "arg2") hold 16 bytes or 8
//! words (imm8[0]), compared unsigned or signed (imm8[1]). Each has a valid length: explicit
//! (|EAX| / |EDX|, or |RAX| / |RDX| with REX.W, saturated to the element count) or implicit
//! (up to the first zero element). imm8[3:2] selects the aggregation (§4.1.4: equal any,
//! ranges, equal each, equal ordered) with the invalid-element overrides of Table 4-7;
//! imm8[5:4] the polarity (§4.1.5); imm8[6] the index (least / most significant) or the mask
//! form (bit mask / element mask) of the output (§4.1.6).

use super::int::{build, lane, slane};
use jit::abi::flags as fl;

/// The result of one comparison: IntRes2 and the facts the flags report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrRes {
    /// IntRes2, one bit per element.
    pub res2: u32,
    /// Number of elements (16 or 8).
    pub n: u32,
    /// arg1 (xmm1) is shorter than `n` elements.
    pub short1: bool,
    /// arg2 (xmm2/m128) is shorter than `n` elements.
    pub short2: bool,
}

impl StrRes {
    /// The index output (ECX): least (imm8[6] = 0) or most significant set bit of IntRes2,
    /// or the element count when IntRes2 = 0 (§4.1.6.1).
    pub fn index(&self, imm: u8) -> u32 {
        if self.res2 == 0 {
            self.n
        } else if imm & 0x40 != 0 {
            31 - self.res2.leading_zeros()
        } else {
            self.res2.trailing_zeros()
        }
    }

    /// The mask output (XMM0): IntRes2 zero-extended (imm8[6] = 0) or expanded to a byte/word
    /// mask (imm8[6] = 1) (§4.1.6.2).
    pub fn mask(&self, imm: u8) -> u128 {
        if imm & 0x40 == 0 {
            return u128::from(self.res2);
        }
        let w = 16 / self.n as usize;
        build(self.n as usize, w, |i| {
            if (self.res2 >> i) & 1 != 0 {
                u64::MAX
            } else {
                0
            }
        })
    }

    /// The arithmetic flags (§4.1.7): CF = IntRes2 != 0, ZF = arg2 short, SF = arg1 short,
    /// OF = IntRes2[0], AF = PF = 0.
    pub fn flags(&self) -> u64 {
        let mut f = 0;
        if self.res2 != 0 {
            f |= fl::CF;
        }
        if self.short2 {
            f |= fl::ZF;
        }
        if self.short1 {
            f |= fl::SF;
        }
        if self.res2 & 1 != 0 {
            f |= fl::OF;
        }
        f
    }
}

/// Explicit length from EAX/EDX (`w64` = false, a signed 32-bit value) or RAX/RDX: the
/// absolute value, saturated to `n` (§4.1.2).
pub fn explicit_len(v: u64, w64: bool, n: usize) -> usize {
    let x = if w64 {
        v as i64
    } else {
        i64::from(v as u32 as i32)
    };
    x.unsigned_abs().min(n as u64) as usize
}

/// Implicit length: the index of the first zero element, or the element count.
pub fn implicit_len(v: u128, imm: u8) -> usize {
    let (w, n) = if imm & 1 != 0 { (2, 8) } else { (1, 16) };
    (0..n).find(|&i| lane(v, w, i) == 0).unwrap_or(n)
}

/// Computes IntRes2 for arg1 `a` (valid length `la`) and arg2 `b` (valid length `lb`).
pub fn compare(a: u128, la: usize, b: u128, lb: usize, imm: u8) -> StrRes {
    let (w, n) = if imm & 1 != 0 { (2, 8) } else { (1, 16) };
    let signed = imm & 2 != 0;
    let el = |v: u128, i: usize| {
        if signed {
            slane(v, w, i)
        } else {
            lane(v, w, i) as i64
        }
    };
    let mut r1 = 0u32;
    for j in 0..n {
        let hit = match (imm >> 2) & 3 {
            // Equal any: arg2[j] is one of the valid arg1 elements.
            0 => j < lb && (0..la).any(|i| el(a, i) == el(b, j)),
            // Ranges: arg1 holds (low, high) pairs; arg2[j] lies in one of the valid pairs.
            1 => {
                j < lb
                    && (0..n / 2).any(|k| {
                        2 * k + 1 < la && el(b, j) >= el(a, 2 * k) && el(b, j) <= el(a, 2 * k + 1)
                    })
            }
            // Equal each: both invalid -> true, one invalid -> false.
            2 => match (j < la, j < lb) {
                (false, false) => true,
                (true, true) => el(a, j) == el(b, j),
                _ => false,
            },
            // Equal ordered: arg1 is a substring of arg2 starting at j; an invalid arg1
            // element matches anything, a valid one never matches an invalid arg2 element.
            _ => (0..n - j).all(|i| {
                let k = i + j;
                if i >= la {
                    true
                } else {
                    k < lb && el(a, i) == el(b, k)
                }
            }),
        };
        if hit {
            r1 |= 1 << j;
        }
    }
    let full = (1u32 << n) - 1;
    let res2 = match (imm >> 4) & 3 {
        // Negative polarity: all elements inverted.
        1 => !r1 & full,
        // Masked negative: only the valid arg2 elements are inverted.
        3 => (r1 ^ ((1u32 << lb) - 1)) & full,
        _ => r1,
    };
    StrRes {
        res2,
        n: n as u32,
        short1: la < n,
        short2: lb < n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs an ASCII string into a 16-byte operand (zero-padded).
    fn s(t: &str) -> u128 {
        let mut b = [0u8; 16];
        b[..t.len()].copy_from_slice(t.as_bytes());
        u128::from_le_bytes(b)
    }

    fn implicit(a: &str, b: &str, imm: u8) -> StrRes {
        let (a, b) = (s(a), s(b));
        compare(a, implicit_len(a, imm), b, implicit_len(b, imm), imm)
    }

    #[test]
    fn equal_any_finds_first_vowel() {
        // PCMPISTRI imm 0x00: first byte of "hello world" that is in "aeiou" -> 'e' at 1.
        let r = implicit("aeiou", "hello world", 0x00);
        assert_eq!(r.res2, 0b1001_0010);
        assert_eq!(r.index(0x00), 1);
        assert_eq!(r.index(0x40), 7, "most significant: 'o' of world");
        // Both strings shorter than 16: ZF and SF; a match: CF; element 0 no match: OF = 0.
        assert_eq!(r.flags(), fl::CF | fl::ZF | fl::SF);
        // Negative polarity inverts all 16 bits, masked negative only the 11 valid ones.
        assert_eq!(
            implicit("aeiou", "hello world", 0x10).res2,
            !0b1001_0010 & 0xffff
        );
        assert_eq!(
            implicit("aeiou", "hello world", 0x30).res2,
            !0b1001_0010 & 0x7ff
        );
    }

    #[test]
    fn ranges_match_letters_and_signed_words() {
        // "az" range over "ab1Z": bytes 0, 1.
        let r = implicit("azAY", "ab1Z", 0x04);
        assert_eq!(r.res2, 0b0011);
        // An unpaired low bound (odd arg1 length) never matches.
        assert_eq!(implicit("a", "abc", 0x04).res2, 0);
        // Signed words: range [-5, 5] holds -3 and 4, not 0x8000 (-32768) or 6.
        let a = build(8, 2, |i| [(-5i16) as u16, 5, 0, 0, 0, 0, 0, 0][i] as u64);
        let b = build(8, 2, |i| {
            [(-3i16) as u16, 4, 0x8000, 6, 1, 1, 1, 1][i] as u64
        });
        let r = compare(a, 2, b, 8, 0x07);
        assert_eq!(r.res2, 0b1111_0011);
        // Unsigned, the same range [0xfffb, 5] is empty.
        assert_eq!(compare(a, 2, b, 8, 0x05).res2, 0);
    }

    #[test]
    fn equal_each_and_explicit_lengths() {
        // Equal each: invalid/invalid compares true, valid/invalid false.
        let r = compare(s("abcX"), 3, s("abdX"), 4, 0x08);
        assert_eq!(r.res2, 0xffff & !0b1100);
        assert_eq!(r.flags() & fl::OF, fl::OF);
        // Explicit lengths are absolute values saturated at 16 (8 for words).
        assert_eq!(explicit_len((-3i64) as u64, false, 16), 3);
        assert_eq!(explicit_len(0xffff_ffff_0000_0005, false, 16), 5);
        assert_eq!(explicit_len(0xffff_ffff_0000_0005, true, 16), 16);
        assert_eq!(explicit_len(i32::MIN as u32 as u64, false, 8), 8);
        assert_eq!(explicit_len(7, false, 8), 7);
    }

    #[test]
    fn equal_ordered_substring_search() {
        // "lo" in "hello world": starts at 3; partial match at the end counts.
        let r = implicit("lo", "hello world", 0x0c);
        assert_eq!(r.index(0x0c), 3);
        assert_eq!(r.res2 & 0x7ff, 1 << 3);
        // Bits past the end of arg2 are set (empty suffix of arg2 vs the needle: the needle's
        // valid elements meet invalid ones -> false; but j >= 16 - len positions only
        // compare the available part).
        assert_eq!(r.res2 >> 11, 0);
        let full = compare(s("ab"), 2, s("xxxxxxxxxxxxxxxa"), 16, 0x0c);
        assert_eq!(
            full.res2,
            1 << 15,
            "a needle cut off at the end still matches"
        );
        // An empty needle matches everywhere.
        assert_eq!(implicit("", "abc", 0x0c).res2, 0xffff);
        // Mask output, byte-expanded.
        assert_eq!(r.mask(0x4c) & 0xffff_ffff, 0xff00_0000);
    }
}
