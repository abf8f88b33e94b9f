//! Soft-float core shared by the x87 FPU and SSE: IEEE-754 binary32/binary64 and the x87
//! 80-bit double-extended format (Intel SDM Vol. 1 §4.2, §4.8, §8.2).
//!
//! Arithmetic is computed exactly or with a sticky bit (round-to-odd) in binary128 through
//! `rustc_apfloat` (113-bit significand, the same 15-bit exponent range as double-extended), then
//! rounded once by [`round_pack`] to the destination precision with the x86 rules: rounding
//! control, x87 precision control, tininess detected after rounding, masked responses, FTZ.
//! Square root is an exact integer algorithm. Special operands (NaN, infinity, zero, x87
//! unsupported encodings) are handled here with the x86 rules (SDM Vol. 1 §4.8.3.5, Table 4-7),
//! never by the library.

use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, Round, Status};

/// Invalid operation (IE / MXCSR.IE), bit 0 of FSW and MXCSR.
pub const IE: u32 = 0x01;
/// Denormal operand (DE).
pub const DE: u32 = 0x02;
/// Zero divide (ZE).
pub const ZE: u32 = 0x04;
/// Overflow (OE).
pub const OE: u32 = 0x08;
/// Underflow (UE).
pub const UE: u32 = 0x10;
/// Precision / inexact (PE).
pub const PE: u32 = 0x20;

/// A floating-point format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fmt {
    /// Significand bits including the integer bit.
    pub prec: u32,
    /// Exponent field bits.
    pub ebits: u32,
    /// The integer bit is stored (double-extended).
    pub explicit: bool,
}

/// binary32.
pub const F32: Fmt = Fmt {
    prec: 24,
    ebits: 8,
    explicit: false,
};
/// binary64.
pub const F64: Fmt = Fmt {
    prec: 53,
    ebits: 11,
    explicit: false,
};
/// x87 double-extended (80 bits).
pub const F80: Fmt = Fmt {
    prec: 64,
    ebits: 15,
    explicit: true,
};

impl Fmt {
    /// Exponent bias.
    pub fn bias(&self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }
    /// Smallest normal unbiased exponent.
    pub fn emin(&self) -> i32 {
        1 - self.bias()
    }
    /// Largest finite unbiased exponent.
    pub fn emax(&self) -> i32 {
        self.bias()
    }
    fn frac_bits(&self) -> u32 {
        if self.explicit {
            self.prec
        } else {
            self.prec - 1
        }
    }
    fn emask(&self) -> u32 {
        (1 << self.ebits) - 1
    }
    /// Total width in bits.
    pub fn width(&self) -> u32 {
        1 + self.ebits + self.frac_bits()
    }
    /// The QNaN floating-point indefinite (SDM Vol. 1 §4.8.3.7).
    pub fn indefinite(&self) -> u128 {
        let s = 1u128 << (self.width() - 1);
        let e = u128::from(self.emask()) << self.frac_bits();
        let q = if self.explicit {
            3u128 << 62
        } else {
            1u128 << (self.frac_bits() - 1)
        };
        s | e | q
    }
    /// Infinity with `sign`.
    pub fn inf(&self, sign: bool) -> u128 {
        let s = u128::from(sign) << (self.width() - 1);
        let j = if self.explicit { 1u128 << 63 } else { 0 };
        s | (u128::from(self.emask()) << self.frac_bits()) | j
    }
    /// Zero with `sign`.
    pub fn zero(&self, sign: bool) -> u128 {
        u128::from(sign) << (self.width() - 1)
    }
    /// Largest finite magnitude with `sign` and `prec` significant bits.
    fn max_finite(&self, sign: bool, prec: u32) -> u128 {
        let s = u128::from(sign) << (self.width() - 1);
        let e = u128::from(self.emask() - 1) << self.frac_bits();
        let m = ((1u128 << prec) - 1) << (self.prec - prec);
        let m = if self.explicit {
            m
        } else {
            m & ((1u128 << self.frac_bits()) - 1)
        };
        s | e | m
    }
}

/// Class of an unpacked operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Zero,
    /// Finite nonzero (normal or denormal; `denormal` tells which).
    Finite,
    Inf,
    QNan,
    SNan,
    /// x87 unsupported encoding (unnormal, pseudo-NaN, pseudo-infinity): invalid operand.
    Unsupported,
}

/// An unpacked operand: value = sig / 2^63 * 2^exp for finite nonzero values (sig normalized,
/// bit 63 set). For NaNs `sig` holds the fraction left-aligned below bit 63 (quiet bit = bit 62).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unp {
    pub class: Class,
    pub sign: bool,
    pub exp: i32,
    pub sig: u64,
    pub denormal: bool,
}

impl Unp {
    /// True for QNaN or SNaN.
    pub fn is_nan(&self) -> bool {
        matches!(self.class, Class::QNan | Class::SNan)
    }
}

/// Splits `bits` of format `f` (SDM Vol. 1 §4.2.2, §8.2.2 for unsupported x87 encodings).
pub fn unpack(bits: u128, f: Fmt) -> Unp {
    let fb = f.frac_bits();
    let sign = (bits >> (f.width() - 1)) & 1 != 0;
    let e = ((bits >> fb) as u32) & f.emask();
    let frac = (bits & ((1u128 << fb) - 1)) as u64;
    // Left-align the stored significand so that bit 63 is the integer bit.
    let (j, fr) = if f.explicit {
        (frac >> 63 != 0, frac << 1)
    } else {
        (e != 0, frac << (64 - fb))
    };
    let mut u = Unp {
        class: Class::Finite,
        sign,
        exp: 0,
        sig: 0,
        denormal: false,
    };
    if e == f.emask() {
        if f.explicit && !j {
            u.class = Class::Unsupported;
            return u;
        }
        if fr == 0 {
            u.class = Class::Inf;
        } else {
            u.sig = (1 << 63) | (fr >> 1);
            u.class = if fr >> 63 != 0 {
                Class::QNan
            } else {
                Class::SNan
            };
        }
        return u;
    }
    if e == 0 {
        let m = if f.explicit { frac } else { fr >> 1 };
        if m == 0 {
            u.class = Class::Zero;
            return u;
        }
        // Denormal (or x87 pseudo-denormal): exponent emin, no implicit bit.
        let lz = m.leading_zeros();
        u.sig = m << lz;
        u.exp = f.emin() - lz as i32;
        u.denormal = true;
        return u;
    }
    if f.explicit && !j {
        u.class = Class::Unsupported;
        return u;
    }
    u.sig = (1 << 63) | (fr >> 1);
    u.exp = e as i32 - f.bias();
    u
}

/// Packs a NaN with sign and left-aligned fraction (the quiet bit is forced).
pub fn pack_nan(sign: bool, sig: u64, f: Fmt) -> u128 {
    let fb = f.frac_bits();
    let s = u128::from(sign) << (f.width() - 1);
    let e = u128::from(f.emask()) << fb;
    let frac = if f.explicit {
        u128::from(sig | (3 << 62))
    } else {
        u128::from((sig << 1) >> (64 - fb)) | (1u128 << (fb - 1))
    };
    s | e | frac
}

/// Packs an exact finite value (no rounding needed by construction) or zero.
pub fn pack_exact(sign: bool, exp: i32, sig: u64, f: Fmt) -> u128 {
    round_pack(sign, exp, u128::from(sig) << 64, false, f, f.prec, 0, false).0
}

/// Rounding control encoding shared by FCW.RC and MXCSR.RC (SDM Vol. 1 Table 4-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rc {
    Nearest,
    Down,
    Up,
    Zero,
}

impl Rc {
    /// From the 2-bit RC field.
    pub fn from_bits(b: u32) -> Rc {
        match b & 3 {
            0 => Rc::Nearest,
            1 => Rc::Down,
            2 => Rc::Up,
            _ => Rc::Zero,
        }
    }
}

/// Environment of one operation: rounding, precision (x87 PC; `F.prec` otherwise), FTZ, the
/// underflow mask (FTZ applies only when UE is masked), and DAZ.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    pub rc: Rc,
    pub prec: u32,
    pub ftz: bool,
    pub daz: bool,
    pub um: bool,
}

impl Env {
    /// Round-to-nearest, full precision of `f`, no FTZ/DAZ.
    pub fn nearest(f: Fmt) -> Env {
        Env {
            rc: Rc::Nearest,
            prec: f.prec,
            ftz: false,
            daz: false,
            um: true,
        }
    }
}

/// Rounds sign * (sig / 2^127) * 2^exp (+ sticky below sig) to `prec` bits in format `f` and packs
/// it. `sig` must be normalized (bit 127 set). Returns (bits, flags, rounded-up-in-magnitude).
/// Tininess is detected after rounding, as on x86; masked overflow gives infinity or the
/// largest finite number by the rounding direction (SDM Vol. 1 §4.9.1.4, §4.9.1.5).
#[allow(clippy::too_many_arguments)]
pub fn round_pack(
    sign: bool,
    exp: i32,
    sig: u128,
    sticky: bool,
    f: Fmt,
    prec: u32,
    rcbits: u32,
    ftz: bool,
) -> (u128, u32, bool) {
    let rc = Rc::from_bits(rcbits);
    if sig == 0 {
        return (f.zero(sign), 0, false);
    }
    let emin = f.emin();
    let round = |shift: u32| -> (u128, bool, bool) {
        // Returns (rounded magnitude at 2^shift granularity, inexact, incremented).
        let (kept, rest_nz, half, above_half) = if shift > 128 {
            (0u128, true, false, false)
        } else if shift == 128 {
            // Everything is discarded; the leading bit is the rounding bit.
            let h = 1u128 << 127;
            (
                0u128,
                true,
                sig == h && !sticky,
                sig > h || (sig == h && sticky),
            )
        } else {
            let kept = sig >> shift;
            let rest = sig & ((1u128 << shift) - 1);
            let halfv = if shift == 0 { 0 } else { 1u128 << (shift - 1) };
            (
                kept,
                rest != 0 || sticky,
                shift > 0 && rest == halfv && !sticky,
                shift > 0 && (rest > halfv || (rest == halfv && sticky)),
            )
        };
        if !rest_nz {
            return (kept, false, false);
        }
        let inc = match rc {
            Rc::Nearest => above_half || (half && kept & 1 != 0),
            Rc::Zero => false,
            Rc::Up => !sign,
            Rc::Down => sign,
        };
        (kept + u128::from(inc), true, inc)
    };
    // Tininess after rounding: round with unbounded exponent and see whether it is < 2^emin.
    let (m_unb, _, up_unb) = round(128 - prec);
    let exp_unb = if m_unb >> prec != 0 { exp + 1 } else { exp };
    let tiny = exp_unb < emin;
    let mut flags = 0;
    let (mant, e, inexact, up);
    if exp >= emin {
        let (m, ix, u) = round(128 - prec);
        inexact = ix;
        up = u;
        if m >> prec != 0 {
            mant = m >> 1;
            e = exp + 1;
        } else {
            mant = m;
            e = exp;
        }
    } else {
        let extra = (emin - exp) as u32;
        let (m, ix, u) = round((128 - prec).saturating_add(extra).min(200));
        inexact = ix;
        up = u;
        mant = m;
        e = emin;
    }
    if tiny && inexact {
        flags |= UE;
    }
    // The x87 C1 "rounded up" bit follows the rounding to precision before denormalization
    // (observed on hardware).
    let up = if tiny { up_unb } else { up };
    if inexact {
        flags |= PE;
    }
    if tiny && ftz {
        return (f.zero(sign), UE | PE, false);
    }
    if e > f.emax() {
        let to_inf = match rc {
            Rc::Nearest => true,
            Rc::Zero => false,
            Rc::Up => !sign,
            Rc::Down => sign,
        };
        let r = if to_inf {
            f.inf(sign)
        } else {
            f.max_finite(sign, prec)
        };
        return (r, OE | PE, to_inf);
    }
    // Encode: mant has `prec` bits; left-align to the format's precision.
    let m = mant << (f.prec - prec);
    let normal = m >> (f.prec - 1) != 0;
    let be: u128 = if normal { (e + f.bias()) as u128 } else { 0 };
    let frac = if f.explicit {
        m
    } else {
        m & ((1u128 << (f.prec - 1)) - 1)
    };
    let bits = (u128::from(sign) << (f.width() - 1)) | (be << f.frac_bits()) | frac;
    (bits, flags, up)
}

/// The result of a two-operand operation before packing.
#[derive(Debug, Clone, Copy)]
pub enum Raw {
    /// Already packed in the destination format (special result).
    Bits(u128),
    /// Finite value: sign, exponent, normalized 128-bit significand, sticky.
    Val(bool, i32, u128, bool),
    Zero(bool),
    Inf(bool),
}

/// Exact conversion of a finite or infinite operand to binary128.
pub fn to_quad(u: &Unp) -> Quad {
    let s = u128::from(u.sign) << 127;
    match u.class {
        Class::Zero => Quad::from_bits(s),
        Class::Inf => Quad::from_bits(s | (0x7fffu128 << 112)),
        _ => {
            let full = u128::from(u.sig) << 49; // integer bit at 112
            if u.exp >= -16382 {
                Quad::from_bits(s | (((u.exp + 16383) as u128) << 112) | (full & ((1 << 112) - 1)))
            } else {
                Quad::from_bits(s | (full >> (-16382 - u.exp) as u32))
            }
        }
    }
}

/// A binary128 result (with `status` for the sticky bit) as a [`Raw`] value.
pub fn from_quad(q: Quad, status: Status) -> Raw {
    let b = q.to_bits();
    let sign = b >> 127 != 0;
    let e = ((b >> 112) & 0x7fff) as i32;
    let frac = b & ((1u128 << 112) - 1);
    let sticky = status.contains(Status::INEXACT);
    if e == 0x7fff {
        return Raw::Inf(sign);
    }
    // rustc_apfloat reports a round-toward-zero overflow as the largest finite value with
    // INEXACT only; any such result is beyond the double-extended range too.
    let max_finite = (b & !(1u128 << 127)) == (0x7ffeu128 << 112) | ((1u128 << 112) - 1);
    if status.contains(Status::OVERFLOW) || (max_finite && sticky) {
        // Beyond the binary128 (= double-extended) exponent range: a certain overflow.
        return Raw::Val(sign, 100_000, 1 << 127, true);
    }
    let (sig, exp) = if e == 0 {
        if frac == 0 {
            if sticky {
                // Underflowed below binary128: a tiny nonzero value.
                return Raw::Val(sign, -100_000, 1 << 127, true);
            }
            return Raw::Zero(sign);
        }
        (frac, -16382)
    } else {
        (frac | (1 << 112), e - 16383)
    };
    let lz = sig.leading_zeros();
    // The value is sig * 2^(exp - 112); normalized so bit 127 is the leading one.
    Raw::Val(sign, exp - (lz as i32 - 15), sig << lz, sticky)
}

/// Two-operand arithmetic operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// Chooses the NaN result of an operation with a NaN operand (SDM Vol. 1 Table 4-7). `x87`
/// selects the x87 rule (larger significand wins, QNaN preferred over SNaN) instead of the SSE
/// rule (first source operand wins).
pub fn pick_nan(a: &Unp, b: &Unp, x87: bool) -> (bool, u64) {
    let q = |u: &Unp| (u.sign, u.sig | (1 << 62));
    match (a.is_nan(), b.is_nan()) {
        (true, false) => q(a),
        (false, true) => q(b),
        _ => {
            if !x87 {
                return q(a);
            }
            match (a.class, b.class) {
                (Class::QNan, Class::SNan) => q(a),
                (Class::SNan, Class::QNan) => q(b),
                _ => {
                    let (ma, mb) = (a.sig | (1 << 62), b.sig | (1 << 62));
                    if ma > mb || (ma == mb && !a.sign) {
                        q(a)
                    } else {
                        q(b)
                    }
                }
            }
        }
    }
}

/// Computes `a op b` for operands already unpacked (denormals flushed by the caller if DAZ),
/// rounding to format `f` under `env`. `x87` selects x87 NaN rules. Returns (bits, flags, C1).
pub fn arith(op: Op, a: &Unp, b: &Unp, f: Fmt, env: &Env, x87: bool) -> (u128, u32, bool) {
    let mut flags = 0;
    if a.class == Class::Unsupported || b.class == Class::Unsupported {
        return (f.indefinite(), IE, false);
    }
    if a.is_nan() || b.is_nan() {
        if a.class == Class::SNan || b.class == Class::SNan {
            flags |= IE;
        }
        let (s, m) = pick_nan(a, b, x87);
        return (pack_nan(s, m, f), flags, false);
    }
    if a.denormal || b.denormal {
        flags |= DE;
    }
    let (qa, qb) = (to_quad(a), to_quad(b));
    let r = match op {
        Op::Add => qa.add_r(qb, Round::TowardZero),
        Op::Sub => qa.sub_r(qb, Round::TowardZero),
        Op::Mul => qa.mul_r(qb, Round::TowardZero),
        Op::Div => qa.div_r(qb, Round::TowardZero),
    };
    if r.status.contains(Status::INVALID_OP) {
        // An invalid operation does not also report DE (observed on hardware).
        return (f.indefinite(), IE, false);
    }
    if r.status.contains(Status::DIV_BY_ZERO) {
        // Zero-divide does not also report DE for a denormal dividend (observed on hardware).
        return (f.inf(a.sign ^ b.sign), ZE, false);
    }
    let raw = from_quad(r.value, r.status);
    let raw = match raw {
        // An exact zero sum of opposite signs is -0 only when rounding down (IEEE 754 §6.3).
        Raw::Zero(_) if matches!(op, Op::Add | Op::Sub) && !r.status.contains(Status::INEXACT) => {
            let bs = if op == Op::Sub { !b.sign } else { b.sign };
            if a.sign == bs && a.class == Class::Zero && b.class == Class::Zero {
                Raw::Zero(a.sign)
            } else if a.class == Class::Zero && b.class != Class::Zero {
                Raw::Zero(bs)
            } else if b.class == Class::Zero && a.class != Class::Zero {
                Raw::Zero(a.sign)
            } else {
                Raw::Zero(env.rc == Rc::Down)
            }
        }
        x => x,
    };
    let (bits, fl, up) = finish(raw, f, env);
    (bits, flags | fl, up)
}

/// Rounds and packs a [`Raw`] result.
pub fn finish(raw: Raw, f: Fmt, env: &Env) -> (u128, u32, bool) {
    match raw {
        Raw::Bits(b) => (b, 0, false),
        Raw::Zero(s) => (f.zero(s), 0, false),
        Raw::Inf(s) => (f.inf(s), 0, false),
        Raw::Val(s, e, m, st) => {
            let rcb = match env.rc {
                Rc::Nearest => 0,
                Rc::Down => 1,
                Rc::Up => 2,
                Rc::Zero => 3,
            };
            round_pack(s, e, m, st, f, env.prec, rcb, env.ftz && env.um)
        }
    }
}

/// Square root (exact integer algorithm, SDM Vol. 1 §4.9.1.2 for the invalid cases).
pub fn sqrt(a: &Unp, f: Fmt, env: &Env, x87: bool) -> (u128, u32, bool) {
    match a.class {
        Class::Unsupported => return (f.indefinite(), IE, false),
        Class::QNan | Class::SNan => {
            let (s, m) = pick_nan(a, a, x87);
            return (
                pack_nan(s, m, f),
                if a.class == Class::SNan { IE } else { 0 },
                false,
            );
        }
        Class::Zero => return (f.zero(a.sign), 0, false),
        Class::Inf if !a.sign => return (f.inf(false), 0, false),
        _ => {}
    }
    if a.sign {
        return (f.indefinite(), IE, false);
    }
    let de = if a.denormal { DE } else { 0 };
    // value = sig * 2^(exp-63) = rad * 2^e with rad in [2^126, 2^128) and e even.
    let mut e = a.exp - 126;
    let mut rad = u128::from(a.sig) << 63;
    if e & 1 != 0 {
        rad <<= 1;
        e -= 1;
    }
    // R = rad * 2^8 (68 root bits); floor(sqrt(R)) and whether the remainder is nonzero.
    let (root, rem_nz) = isqrt_ext(rad, 4);
    let lz = root.leading_zeros();
    let re = (e - 8) / 2; // sqrt(value) = root * 2^re
    let (bits, fl, up) = round_pack(
        false,
        re + (127 - lz as i32),
        root << lz,
        rem_nz,
        f,
        env.prec,
        match env.rc {
            Rc::Nearest => 0,
            Rc::Down => 1,
            Rc::Up => 2,
            Rc::Zero => 3,
        },
        env.ftz && env.um,
    );
    (bits, fl | de, up)
}

/// Integer square root of `hi * 4^extra` (restoring method, 2 radicand bits per root bit);
/// returns (root, remainder != 0). `extra` <= 8 keeps every intermediate within 128 bits.
fn isqrt_ext(hi: u128, extra: u32) -> (u128, bool) {
    let mut rem: u128 = 0;
    let mut root: u128 = 0;
    for i in (0..64 + extra).rev() {
        let pair = if i >= extra {
            (hi >> ((i - extra) * 2)) & 3
        } else {
            0
        };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        root <<= 1;
        if rem >= trial {
            rem -= trial;
            root |= 1;
        }
    }
    (root, rem != 0)
}

/// Result of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Less,
    Equal,
    Greater,
    Unordered,
}

/// Compares two unpacked operands. Returns the relation and flags: IE for an SNaN (or any NaN
/// when `signaling`), DE for denormal operands.
pub fn compare(a: &Unp, b: &Unp, signaling: bool) -> (Cmp, u32) {
    if a.class == Class::Unsupported || b.class == Class::Unsupported {
        return (Cmp::Unordered, IE);
    }
    if a.is_nan() || b.is_nan() {
        let snan = a.class == Class::SNan || b.class == Class::SNan;
        return (Cmp::Unordered, if snan || signaling { IE } else { 0 });
    }
    let de = if a.denormal || b.denormal { DE } else { 0 };
    (cmp_ordered(a, b), de)
    // (NaN operands return above without DE: invalid takes precedence.)
}

fn key(u: &Unp) -> (i32, i64, u64) {
    match u.class {
        Class::Zero => (0, 0, 0),
        Class::Inf => (if u.sign { -1 } else { 1 }, i64::MAX, 0),
        _ => (if u.sign { -1 } else { 1 }, i64::from(u.exp), u.sig),
    }
}

fn cmp_ordered(a: &Unp, b: &Unp) -> Cmp {
    let (sa, ea, ma) = key(a);
    let (sb, eb, mb) = key(b);
    use std::cmp::Ordering::*;
    let ord = if sa != sb {
        sa.cmp(&sb)
    } else if sa == 0 {
        Equal
    } else {
        let mag = (ea, ma).cmp(&(eb, mb));
        if sa < 0 {
            mag.reverse()
        } else {
            mag
        }
    };
    match ord {
        Less => Cmp::Less,
        Equal => Cmp::Equal,
        Greater => Cmp::Greater,
    }
}

/// Converts to a signed integer of `width` bits (16, 32, 64) with rounding `rc` (2-bit field,
/// 3 = truncate). Out of range or NaN: the integer indefinite (only the sign bit set) and IE
/// (SDM Vol. 1 §4.8.3.7). Returns (value, flags).
pub fn to_int(a: &Unp, width: u32, rcbits: u32) -> (u64, u32) {
    let indef = 1u64 << (width - 1);
    match a.class {
        Class::Zero => return (0, 0),
        Class::Finite => {}
        _ => return (indef, IE),
    }
    let de = if a.denormal { DE } else { 0 };
    // value = sig * 2^(exp-63)
    let (int, frac_nz, half, above) = if a.exp >= 63 {
        if a.exp > 63 {
            return (indef, IE);
        }
        (u128::from(a.sig), false, false, false)
    } else if a.exp < -1 {
        (0, true, false, false)
    } else if a.exp == -1 {
        // 0.5 <= |x| < 1.
        let half = a.sig == 1 << 63;
        (0, true, half, !half)
    } else {
        let sh = (63 - a.exp) as u32; // 1..=65
        let s = u128::from(a.sig) << 64;
        let int = s >> (64 + sh);
        let rest = s & ((1u128 << (64 + sh)) - 1);
        let h = 1u128 << (63 + sh);
        (int, rest != 0, rest == h, rest > h)
    };
    let inc = frac_nz
        && match Rc::from_bits(rcbits) {
            Rc::Nearest => above || (half && int & 1 != 0),
            Rc::Zero => false,
            Rc::Up => !a.sign,
            Rc::Down => a.sign,
        };
    let mag = int + u128::from(inc);
    let limit = if a.sign {
        1u128 << (width - 1)
    } else {
        (1u128 << (width - 1)) - 1
    };
    if mag > limit {
        return (indef, IE);
    }
    let v = if a.sign {
        (mag as u64).wrapping_neg()
    } else {
        mag as u64
    };
    let m = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    // Integer conversions do not report DE (observed on hardware for FIST and CVT*2SI).
    let _ = de;
    (v & m, if frac_nz { PE } else { 0 })
}

/// Converts a signed 64-bit integer to format `f` (rounding if `f` is narrower).
pub fn from_int(v: i64, f: Fmt, env: &Env) -> (u128, u32) {
    if v == 0 {
        return (f.zero(false), 0);
    }
    let m = v.unsigned_abs();
    let lz = m.leading_zeros();
    let (b, fl, _) = finish(
        Raw::Val(v < 0, 63 - lz as i32, u128::from(m << lz) << 64, false),
        f,
        env,
    );
    (b, fl)
}

/// Converts between formats (SDM Vol. 1 §4.8.3.6 for NaNs: an SNaN is quieted, IE).
pub fn convert(a: &Unp, to: Fmt, env: &Env) -> (u128, u32, bool) {
    match a.class {
        Class::Zero => (to.zero(a.sign), 0, false),
        Class::Inf => (to.inf(a.sign), 0, false),
        Class::QNan => (pack_nan(a.sign, a.sig, to), 0, false),
        Class::SNan => (pack_nan(a.sign, a.sig, to), IE, false),
        Class::Unsupported => (to.indefinite(), IE, false),
        Class::Finite => {
            let (b, f, up) = finish(
                Raw::Val(a.sign, a.exp, u128::from(a.sig) << 64, false),
                to,
                env,
            );
            (b, f | if a.denormal { DE } else { 0 }, up)
        }
    }
}

/// Rounds to an integral value in the same format (FRNDINT, ROUNDSS-style).
pub fn round_int(a: &Unp, f: Fmt, rcbits: u32) -> (u128, u32, bool) {
    match a.class {
        Class::Finite => {}
        Class::SNan => return (pack_nan(a.sign, a.sig, f), IE, false),
        Class::Unsupported => return (f.indefinite(), IE, false),
        _ => return (pack_raw(a, f), 0, false),
    }
    let de = if a.denormal { DE } else { 0 };
    if a.exp >= 63 {
        return (pack_raw(a, f), de, false);
    }
    let (v, fl) = to_int(
        &Unp {
            exp: a.exp,
            sign: false,
            ..*a
        },
        64,
        // Rounding direction is applied to the magnitude: swap up/down for negatives.
        match (Rc::from_bits(rcbits), a.sign) {
            (Rc::Up, true) => 1,
            (Rc::Down, true) => 2,
            _ => rcbits,
        },
    );
    let fl = fl & PE;
    if v == 0 {
        return (f.zero(a.sign), fl | de, false);
    }
    let lz = v.leading_zeros();
    let up = (v << lz) > a.sig || (63 - lz as i32) > a.exp;
    (
        pack_exact(a.sign, 63 - lz as i32, v << lz, f),
        fl | de,
        up && fl != 0,
    )
}

/// Re-packs an unpacked value without rounding (specials and exact values).
pub fn pack_raw(a: &Unp, f: Fmt) -> u128 {
    match a.class {
        Class::Zero => f.zero(a.sign),
        Class::Inf => f.inf(a.sign),
        Class::QNan | Class::SNan => {
            let fb = f.frac_bits();
            let s = u128::from(a.sign) << (f.width() - 1);
            let e = u128::from(f.emask()) << fb;
            let frac = if f.explicit {
                u128::from(a.sig)
            } else {
                u128::from((a.sig << 1) >> (64 - fb))
            };
            s | e | frac
        }
        Class::Unsupported => f.indefinite(),
        Class::Finite => pack_exact(a.sign, a.exp, a.sig, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64op(op: Op, a: f64, b: f64, rc: Rc) -> (f64, u32) {
        let env = Env {
            rc,
            ..Env::nearest(F64)
        };
        let (r, fl, _) = arith(
            op,
            &unpack(u128::from(a.to_bits()), F64),
            &unpack(u128::from(b.to_bits()), F64),
            F64,
            &env,
            false,
        );
        (f64::from_bits(r as u64), fl)
    }

    #[test]
    fn double_arith_matches_host_in_nearest() {
        let vals = [
            1.0, 3.0, 0.1, -7.5, 1e300, 1e-310, 2.5e-308, 123456.789, -0.0, 0.0,
        ];
        for &a in &vals {
            for &b in &vals {
                assert_eq!(
                    f64op(Op::Add, a, b, Rc::Nearest).0.to_bits(),
                    (a + b).to_bits(),
                    "{a}+{b}"
                );
                assert_eq!(
                    f64op(Op::Sub, a, b, Rc::Nearest).0.to_bits(),
                    (a - b).to_bits(),
                    "{a}-{b}"
                );
                assert_eq!(
                    f64op(Op::Mul, a, b, Rc::Nearest).0.to_bits(),
                    (a * b).to_bits(),
                    "{a}*{b}"
                );
                if b != 0.0 {
                    assert_eq!(
                        f64op(Op::Div, a, b, Rc::Nearest).0.to_bits(),
                        (a / b).to_bits(),
                        "{a}/{b}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_third_rounding_modes_and_flags() {
        let (d, fl) = f64op(Op::Div, 1.0, 3.0, Rc::Nearest);
        assert_eq!(d, 1.0 / 3.0);
        assert_eq!(fl, PE);
        let (up, _) = f64op(Op::Div, 1.0, 3.0, Rc::Up);
        assert_eq!(up.to_bits(), (1.0f64 / 3.0).to_bits() + 1);
        let (dn, _) = f64op(Op::Div, 1.0, 3.0, Rc::Down);
        assert_eq!(dn.to_bits(), (1.0f64 / 3.0).to_bits());
        let (_, fl) = f64op(Op::Div, 1.0, 0.0, Rc::Nearest);
        assert_eq!(fl, ZE);
        let (m, fl) = f64op(Op::Mul, 1e300, 1e300, Rc::Zero);
        assert_eq!(m, f64::MAX);
        assert_eq!(fl, OE | PE);
    }

    #[test]
    fn sqrt_exact_and_rounded() {
        let env = Env::nearest(F64);
        for x in [2.0f64, 4.0, 0.5, 1e-310, 12345.678, 1e300] {
            let (r, _, _) = sqrt(&unpack(u128::from(x.to_bits()), F64), F64, &env, false);
            assert_eq!(f64::from_bits(r as u64), x.sqrt(), "sqrt {x}");
        }
        let (r, fl, _) = sqrt(
            &unpack(u128::from((-1.0f64).to_bits()), F64),
            F64,
            &env,
            false,
        );
        assert_eq!(r, F64.indefinite());
        assert_eq!(fl, IE);
    }

    #[test]
    fn int_conversions() {
        let u = unpack(u128::from(2.5f64.to_bits()), F64);
        assert_eq!(to_int(&u, 32, 0), (2, PE));
        assert_eq!(to_int(&u, 32, 2), (3, PE));
        let u = unpack(u128::from((-2.5f64).to_bits()), F64);
        assert_eq!(to_int(&u, 32, 3).0 as u32 as i32, -2);
        let u = unpack(u128::from(f64::NAN.to_bits()), F64);
        assert_eq!(to_int(&u, 32, 3), (0x8000_0000, IE));
        let u = unpack(u128::from(3e9f64.to_bits()), F64);
        assert_eq!(to_int(&u, 32, 0), (0x8000_0000, IE));
        assert_eq!(
            from_int(-3, F32, &Env::nearest(F32)).0 as u32,
            (-3.0f32).to_bits()
        );
    }
}
