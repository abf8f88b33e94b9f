//! x87 transcendental instructions (SDM Vol. 1 §8.3.9-8.3.10; Vol. 2A FSIN, FCOS, FSINCOS,
//! FPTAN, FPATAN, F2XM1, FYL2X, FYL2XP1).
//!
//! Values are evaluated in binary128 (113-bit significand, `rustc_apfloat`) with convergent
//! series, then rounded once to the destination under FCW.RC/PC, so results are within 1 ulp
//! of the 64-bit significand (almost always correctly rounded). Trigonometric argument
//! reduction uses the same 66-bit approximation of π as the hardware (§8.3.8), reduced exactly
//! in integer arithmetic, so large arguments behave like the hardware too.

use super::sf::{self, Class, Env, Raw, Unp, F80};
use iced_x86::Mnemonic;
use rustc_apfloat::ieee::Quad;
use rustc_apfloat::{Float, Status};
use std::ops::Neg;
use std::sync::OnceLock;

/// The hardware's 66-bit π as an integer: floor(π * 2^64) (the next bit is 0, so this is
/// also π rounded to 66 bits). π/2 = PI66 * 2^-65.
const PI66: u128 = 0x3_243F_6A88_85A3_08D3;

fn pi66() -> u128 {
    PI66
}

fn q(x: f64) -> Quad {
    from_f64(x)
}

fn from_f64(x: f64) -> Quad {
    let u = sf::unpack(u128::from(x.to_bits()), sf::F64);
    sf::to_quad(&u)
}

fn add(a: Quad, b: Quad) -> Quad {
    (a + b).value
}
fn sub(a: Quad, b: Quad) -> Quad {
    (a - b).value
}
fn mul(a: Quad, b: Quad) -> Quad {
    (a * b).value
}
fn div(a: Quad, b: Quad) -> Quad {
    (a / b).value
}

/// atanh(z) = z + z^3/3 + z^5/5 + ... for |z| <= 1/2 or so.
fn atanh_series(z: Quad) -> Quad {
    let z2 = mul(z, z);
    let mut term = z;
    let mut sum = z;
    for k in 1..400 {
        term = mul(term, z2);
        let t = div(term, q(f64::from(2 * k + 1)));
        let ns = add(sum, t);
        if ns.to_bits() == sum.to_bits() {
            break;
        }
        sum = ns;
    }
    sum
}

fn ln2() -> Quad {
    static C: OnceLock<u128> = OnceLock::new();
    Quad::from_bits(*C.get_or_init(|| mul(q(2.0), atanh_series(div(q(1.0), q(3.0)))).to_bits()))
}

/// Natural logarithm of a positive finite binary128 value.
fn ln(x: Quad) -> Quad {
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)).
    let b = x.to_bits();
    let mut e = ((b >> 112) & 0x7fff) as i32 - 16383;
    let mut m = Quad::from_bits((b & ((1u128 << 112) - 1)) | (16383u128 << 112));
    if e == -16383 {
        // binary128 denormal: normalize through an exact scaling.
        let r = sf::from_quad(x, Status::OK);
        if let Raw::Val(_, ex, sig, _) = r {
            e = ex;
            m = Quad::from_bits(((sig >> 15) & ((1u128 << 112) - 1)) | (16383u128 << 112));
        }
    }
    if m.to_bits() > from_f64(std::f64::consts::SQRT_2).to_bits() {
        m = div(m, q(2.0));
        e += 1;
    }
    let z = div(sub(m, q(1.0)), add(m, q(1.0)));
    add(mul(q(2.0), atanh_series(z)), mul(q(f64::from(e)), ln2()))
}

/// e^x - 1 for |x| < 1 (Taylor series).
fn expm1(x: Quad) -> Quad {
    let mut term = x;
    let mut sum = x;
    for k in 2..200 {
        term = div(mul(term, x), q(f64::from(k)));
        let ns = add(sum, term);
        if ns.to_bits() == sum.to_bits() {
            break;
        }
        sum = ns;
    }
    sum
}

/// sin and cos of |r| <= π/2 + ε.
fn sincos_small(r: Quad) -> (Quad, Quad) {
    let r2 = mul(r, r);
    let (mut s, mut st) = (r, r);
    let (mut c, mut ct) = (q(1.0), q(1.0));
    for k in 1..100 {
        let k2 = f64::from(2 * k);
        st = div(mul(st, r2), q(k2 * (k2 + 1.0)));
        ct = div(mul(ct, r2), q((k2 - 1.0) * k2));
        let (ns, nc) = if k % 2 == 1 {
            (sub(s, st), sub(c, ct))
        } else {
            (add(s, st), add(c, ct))
        };
        let done = ns.to_bits() == s.to_bits() && nc.to_bits() == c.to_bits();
        s = ns;
        c = nc;
        if done {
            break;
        }
    }
    (s, c)
}

/// atan(z) for |z| <= 1 (Euler's series, ratio z^2/(1+z^2) <= 1/2).
fn atan_small(z: Quad) -> Quad {
    let z2 = mul(z, z);
    let d = add(q(1.0), z2);
    let y = div(z2, d);
    let mut term = div(z, d);
    let mut sum = term;
    for n in 1..400 {
        let nf = f64::from(n);
        term = div(mul(term, mul(y, q(2.0 * nf))), q(2.0 * nf + 1.0));
        let ns = add(sum, term);
        if ns.to_bits() == sum.to_bits() {
            break;
        }
        sum = ns;
    }
    sum
}

fn pi_q() -> Quad {
    static C: OnceLock<u128> = OnceLock::new();
    Quad::from_bits(*C.get_or_init(|| mul(q(4.0), atan_small(q(1.0))).to_bits()))
}

fn round(x: Quad, env: &Env) -> (u128, u32, bool) {
    let (b, f, up) = sf::finish(sf::from_quad(x, Status::INEXACT), F80, env);
    (b, f | sf::PE, up)
}

/// Exact reduction of a finite x (|x| < 2^63) by the hardware's π/2: (quadrant, r) with
/// r = x - quadrant * π66/2 in [0, π66/2), as binary128.
fn reduce(u: &Unp) -> (u32, Quad) {
    // π66/2 = P * 2^-65 with P = the 66-bit significand of π, i.e. round-toward-zero of π * 2^64.
    let p = pi66();
    let sh = u.exp + 2; // x * 2^65 = sig * 2^(exp - 63 + 65)
    if sh < 0 {
        return (0, sf::to_quad(&Unp { sign: false, ..*u }));
    }
    let num = u128::from(u.sig) << sh;
    let quo = num / p;
    let rem = num % p;
    // rem * 2^-65 exactly (rem has at most 66 significant bits).
    let r = Quad::from_u128(rem).value.scalbn(-65);
    ((quo & 3) as u32, r)
}

fn sin_cos(u: &Unp) -> Option<(Quad, Quad)> {
    if u.exp >= 63 {
        return None;
    }
    let (quad, r) = reduce(u);
    let (s, c) = sincos_small(r);
    let (mut s, c) = match quad {
        0 => (s, c),
        1 => (c, s.neg()),
        2 => (s.neg(), c.neg()),
        _ => (c.neg(), s),
    };
    if u.sign {
        s = s.neg();
    }
    Some((s, c))
}

fn nan_or_invalid(u: &Unp) -> Option<(u128, u32, bool)> {
    match u.class {
        Class::QNan => Some((sf::pack_raw(u, F80), 0, false)),
        Class::SNan => Some((sf::pack_nan(u.sign, u.sig, F80), sf::IE, false)),
        Class::Unsupported => Some((F80.indefinite(), sf::IE, false)),
        _ => None,
    }
}

/// FSIN, FCOS, F2XM1 on ST(0). `None` means the operand is out of range (C2 = 1).
pub fn unary(m: Mnemonic, u: &Unp, env: &Env) -> Option<(u128, u32, bool)> {
    if let Some(r) = nan_or_invalid(u) {
        return Some(r);
    }
    let de = if u.denormal { sf::DE } else { 0 };
    match m {
        Mnemonic::F2xm1 => {
            match u.class {
                Class::Zero => return Some((F80.zero(u.sign), 0, false)),
                Class::Inf => {
                    return Some(if u.sign {
                        (0xBFFF_8000_0000_0000_0000, 0, false)
                    } else {
                        (F80.inf(false), 0, false)
                    })
                }
                _ => {}
            }
            if u.exp >= 0 && !(u.exp == 0 && u.sig == 1 << 63) {
                // |x| > 1 is outside the domain: the operand is left unchanged (observed).
                return Some((sf::pack_raw(u, F80), 0, false));
            }
            let x = sf::to_quad(u);
            let (b, f, up) = round(expm1(mul(x, ln2())), env);
            Some((b, f | de, up))
        }
        _ => {
            match u.class {
                Class::Inf => return Some((F80.indefinite(), sf::IE, false)),
                Class::Zero if m == Mnemonic::Fsin => return Some((F80.zero(u.sign), 0, false)),
                Class::Zero => return Some((0x3FFF_8000_0000_0000_0000, 0, false)),
                _ => {}
            }
            if u.exp < -40 {
                // Tiny argument: sin x = x - tiny, cos x = 1 - tiny (directed rounding needs the
                // side of the error, which the binary128 value does not show).
                let raw = if m == Mnemonic::Fsin {
                    Raw::Val(u.sign, u.exp, (u128::from(u.sig) << 64) - 1, true)
                } else {
                    Raw::Val(false, -1, u128::MAX, true)
                };
                let (b, f, up) = sf::finish(raw, F80, env);
                return Some((b, f | sf::PE | de, up));
            }
            let (s, c) = sin_cos(u)?;
            let (b, f, up) = round(if m == Mnemonic::Fsin { s } else { c }, env);
            Some((b, f | de, up))
        }
    }
}

/// FSINCOS / FPTAN: returns (new ST(1) = the value replacing ST(0), pushed ST(0), flags, C1).
pub fn pair(m: Mnemonic, u: &Unp, env: &Env) -> Option<(u128, u128, u32, bool)> {
    if let Some((r, f, _)) = nan_or_invalid(u) {
        return Some((r, r, f, false));
    }
    let one = 0x3FFF_8000_0000_0000_0000u128;
    match u.class {
        Class::Inf => return Some((F80.indefinite(), F80.indefinite(), sf::IE, false)),
        Class::Zero if m == Mnemonic::Fptan => return Some((F80.zero(u.sign), one, 0, false)),
        Class::Zero => return Some((F80.zero(u.sign), one, 0, false)),
        _ => {}
    }
    let de = if u.denormal { sf::DE } else { 0 };
    if u.exp < -40 {
        // Tiny argument: sin x = x - tiny, cos x = 1 - tiny, tan x = x + tiny.
        let x = u128::from(u.sig) << 64;
        let (bs, fs, up) = sf::finish(Raw::Val(u.sign, u.exp, x - 1, true), F80, env);
        if m == Mnemonic::Fptan {
            let (bt, ft, up) = sf::finish(Raw::Val(u.sign, u.exp, x, true), F80, env);
            return Some((bt, one, ft | sf::PE | de, up));
        }
        let (bc, fc, _) = sf::finish(Raw::Val(false, -1, u128::MAX, true), F80, env);
        return Some((bs, bc, fs | fc | sf::PE | de, up));
    }
    let (s, c) = sin_cos(u)?;
    if m == Mnemonic::Fptan {
        let (b, f, up) = round(div(s, c), env);
        Some((b, one, f | de, up))
    } else {
        let (bs, fs, _) = round(s, env);
        let (bc, fc, up) = round(c, env);
        Some((bs, bc, fs | fc | de, up))
    }
}

/// FPATAN (atan(ST1/ST0)), FYL2X (ST1 * log2 ST0), FYL2XP1 (ST1 * log2(ST0 + 1)); `a` = ST(0),
/// `b` = ST(1). Returns the value stored to ST(1) before the pop.
pub fn binary(m: Mnemonic, a: &Unp, b: &Unp, env: &Env) -> (u128, u32, bool) {
    if a.is_nan() || b.is_nan() || a.class == Class::Unsupported || b.class == Class::Unsupported {
        let (r, f, _) = sf::arith(sf::Op::Add, b, a, F80, env, true);
        return (r, f, false);
    }
    let de = if a.denormal || b.denormal { sf::DE } else { 0 };
    let x = sf::to_quad(a);
    let y = sf::to_quad(b);
    match m {
        Mnemonic::Fpatan => {
            // atan2(y = ST1, x = ST0) with the IEEE special cases.
            let pi = pi_q();
            let r = if a.class == Class::Zero && b.class == Class::Zero {
                if a.sign {
                    pi
                } else {
                    Quad::ZERO
                }
            } else if a.class == Class::Inf || b.class == Class::Inf {
                let quarter = div(pi, q(4.0));
                match (a.class == Class::Inf, b.class == Class::Inf) {
                    (true, true) => {
                        if a.sign {
                            mul(quarter, q(3.0))
                        } else {
                            quarter
                        }
                    }
                    (true, false) => {
                        if a.sign {
                            pi
                        } else {
                            Quad::ZERO
                        }
                    }
                    _ => div(pi, q(2.0)),
                }
            } else {
                let (ax, ay) = (x.abs(), y.abs());
                let t = if ay.to_bits() <= ax.to_bits() {
                    atan_small(div(ay, ax))
                } else {
                    sub(div(pi, q(2.0)), atan_small(div(ax, ay)))
                };
                if a.sign {
                    sub(pi, t)
                } else {
                    t
                }
            };
            let r = if b.sign { r.neg() } else { r };
            if r.is_zero() {
                if b.class == Class::Zero || a.class == Class::Inf {
                    return (F80.zero(b.sign), de, false);
                }
                // |y/x| below the binary128 range: a tiny nonzero result (UE, PE).
                let (bb, f, up) = sf::finish(Raw::Val(b.sign, -100_000, 1 << 127, true), F80, env);
                return (bb, f | de, up);
            }
            let (bb, f, up) = round(r, env);
            (bb, f | de, up)
        }
        _ => {
            let arg = x;
            // Domain checks.
            if m == Mnemonic::Fyl2x {
                if a.sign && a.class != Class::Zero {
                    return (F80.indefinite(), sf::IE | de, false);
                }
                if a.class == Class::Zero {
                    if b.class == Class::Inf {
                        // ±inf * log2(0) = ∓inf, exact (no zero-divide).
                        return (F80.inf(!b.sign), de, false);
                    }
                    if b.class == Class::Zero {
                        return (F80.indefinite(), sf::IE | de, false);
                    }
                    return (F80.inf(!b.sign), sf::ZE | de, false);
                }
            } else if a.class == Class::Zero || b.class == Class::Zero {
                return (F80.zero(a.sign ^ b.sign), de, false);
            }
            let l = if m == Mnemonic::Fyl2xp1 {
                // ln(1 + x) = 2 atanh(x / (2 + x)).
                mul(q(2.0), atanh_series(div(arg, add(q(2.0), arg))))
            } else if a.class == Class::Inf {
                Quad::INFINITY
            } else {
                ln(arg)
            };
            let lg = div(l, ln2());
            if b.class == Class::Inf || a.class == Class::Inf {
                if lg.is_zero() || b.class == Class::Zero {
                    return (F80.indefinite(), sf::IE | de, false);
                }
                let neg = b.sign ^ lg.is_negative();
                return (F80.inf(neg), de, false);
            }
            let r = mul(y, lg);
            if r.is_zero() {
                return (F80.zero(b.sign ^ lg.is_negative()), de, false);
            }
            let (bb, f, up) = round(r, env);
            (bb, f | de, up)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f80_to_f64(b: u128) -> f64 {
        let u = sf::unpack(b, F80);
        f64::from_bits(sf::convert(&u, sf::F64, &Env::nearest(sf::F64)).0 as u64)
    }

    #[test]
    fn constants_match_host() {
        assert_eq!(
            f80_to_f64(round(pi_q(), &Env::nearest(F80)).0),
            std::f64::consts::PI
        );
        assert_eq!(
            f80_to_f64(round(ln2(), &Env::nearest(F80)).0),
            std::f64::consts::LN_2
        );
        // The extended-precision rounding of π is FLDPI's value.
        assert_eq!(
            round(pi_q(), &Env::nearest(F80)).0,
            0x4000_C90F_DAA2_2168_C235
        );
    }
}
