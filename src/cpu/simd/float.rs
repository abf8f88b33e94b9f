//! SSE/SSE2/SSE3 floating-point instructions (SDM Vol. 1 §10.4, §11.4, §12.x; Vol. 2 pages).
//!
//! Arithmetic uses the soft-float core ([`crate::cpu::fpu::sf`]) for every rounding mode, so
//! results and MXCSR flags are exact for all RC settings, with DAZ/FTZ (§10.2.3.3-4) and the
//! SSE NaN rules (first source operand wins, §4.8.3.5 Table 4-7). RCPPS/RSQRTPS return the
//! correctly rounded single-precision reciprocal / reciprocal square root (relative error
//! <= 2^-24, inside the architectural bound 1.5 * 2^-12; bits differ from Intel's tables).

use super::int::{build, lane};
use super::{loc, Loc};
use crate::cpu::fpu::sf::{self, Class, Cmp, Env, Fmt, Op, Unp, F32, F64};
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, Mnemonic as M};
use jit::abi::{cr, flags as fl};

/// True for the mnemonics this module implements.
pub fn handles(m: M) -> bool {
    matches!(
        m,
        M::Movaps
            | M::Movups
            | M::Movapd
            | M::Movupd
            | M::Movss
            | M::Movsd
            | M::Movlps
            | M::Movhps
            | M::Movlpd
            | M::Movhpd
            | M::Movlhps
            | M::Movhlps
            | M::Movntps
            | M::Movntpd
            | M::Movmskps
            | M::Movmskpd
            | M::Movshdup
            | M::Movsldup
            | M::Movddup
            | M::Addps
            | M::Addss
            | M::Addpd
            | M::Addsd
            | M::Subps
            | M::Subss
            | M::Subpd
            | M::Subsd
            | M::Mulps
            | M::Mulss
            | M::Mulpd
            | M::Mulsd
            | M::Divps
            | M::Divss
            | M::Divpd
            | M::Divsd
            | M::Sqrtps
            | M::Sqrtss
            | M::Sqrtpd
            | M::Sqrtsd
            | M::Minps
            | M::Minss
            | M::Minpd
            | M::Minsd
            | M::Maxps
            | M::Maxss
            | M::Maxpd
            | M::Maxsd
            | M::Rcpps
            | M::Rcpss
            | M::Rsqrtps
            | M::Rsqrtss
            | M::Cmpps
            | M::Cmpss
            | M::Cmppd
            | M::Cmpsd
            | M::Comiss
            | M::Ucomiss
            | M::Comisd
            | M::Ucomisd
            | M::Andps
            | M::Andnps
            | M::Orps
            | M::Xorps
            | M::Andpd
            | M::Andnpd
            | M::Orpd
            | M::Xorpd
            | M::Shufps
            | M::Shufpd
            | M::Unpcklps
            | M::Unpckhps
            | M::Unpcklpd
            | M::Unpckhpd
            | M::Addsubps
            | M::Addsubpd
            | M::Haddps
            | M::Haddpd
            | M::Hsubps
            | M::Hsubpd
            | M::Cvtsi2ss
            | M::Cvtsi2sd
            | M::Cvtss2si
            | M::Cvttss2si
            | M::Cvtsd2si
            | M::Cvttsd2si
            | M::Cvtss2sd
            | M::Cvtsd2ss
            | M::Cvtps2pd
            | M::Cvtpd2ps
            | M::Cvtdq2ps
            | M::Cvtps2dq
            | M::Cvttps2dq
            | M::Cvtdq2pd
            | M::Cvtpd2dq
            | M::Cvttpd2dq
            | M::Cvtpi2ps
            | M::Cvtps2pi
            | M::Cvttps2pi
            | M::Cvtpi2pd
            | M::Cvtpd2pi
            | M::Cvttpd2pi
    )
}

/// The SSE environment of MXCSR (§10.2.3): RC bits 13-14, FTZ bit 15, DAZ bit 6, UM bit 11.
pub fn env(mxcsr: u32, f: Fmt) -> Env {
    Env {
        rc: sf::Rc::from_bits(mxcsr >> 13),
        prec: f.prec,
        ftz: mxcsr & 0x8000 != 0,
        daz: mxcsr & 0x40 != 0,
        um: mxcsr & 0x800 != 0,
    }
}

/// Unpacks an SSE operand, applying DAZ (denormals become signed zeros, no DE).
pub fn unp(bits: u64, f: Fmt, daz: bool) -> Unp {
    let mut u = sf::unpack(u128::from(bits), f);
    if daz && u.denormal {
        u.class = Class::Zero;
        u.denormal = false;
    }
    u
}

/// Accumulates per-lane flags and applies them to MXCSR (§11.5.2): if any unmasked
/// exception occurred, #XM (CR4.OSXMMEXCPT = 1) or #UD, with the destination unchanged;
/// unmasked pre-computation exceptions (IE, DE, ZE) suppress the post-computation ones.
pub(crate) fn commit_flags<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, flags: u32) -> Res<()> {
    let mx = ctx.cpu.s.mxcsr;
    let unmasked = flags & !(mx >> 7) & 0x3f;
    if unmasked != 0 {
        let pre = unmasked & (sf::IE | sf::DE | sf::ZE);
        ctx.cpu.s.mxcsr |= if pre != 0 {
            flags & (sf::IE | sf::DE | sf::ZE)
        } else {
            flags
        };
        return Err(if ctx.cpu.s.cr4 & cr::CR4_OSXMMEXCPT != 0 {
            Fault::Xm
        } else {
            Fault::Ud
        });
    }
    ctx.cpu.s.mxcsr |= flags;
    Ok(())
}

fn fmt_of(w: usize) -> Fmt {
    if w == 4 {
        F32
    } else {
        F64
    }
}

/// MIN/MAX (§11.4 / Vol. 2 MINPS): any NaN or both zero -> the second operand; IE for any NaN.
fn minmax(a: &Unp, b: &Unp, ab: u64, bb: u64, max: bool) -> (u64, u32) {
    let (c, mut flags) = sf::compare(a, b, true);
    if (a.denormal || b.denormal) && flags & sf::IE == 0 {
        flags |= sf::DE;
    }
    let pick_a = match c {
        Cmp::Unordered | Cmp::Equal => false,
        Cmp::Less => !max,
        Cmp::Greater => max,
    };
    (if pick_a { ab } else { bb }, flags)
}

/// CMPPS predicate (imm8 bits 2:0) -> (result, signaling).
fn cmp_pred(c: Cmp, p: u8) -> (bool, bool) {
    let (lt, eq, un) = (c == Cmp::Less, c == Cmp::Equal, c == Cmp::Unordered);
    match p & 7 {
        0 => (eq, false),
        1 => (lt, true),
        2 => (lt || eq, true),
        3 => (un, false),
        4 => (!eq, false),
        5 => (!lt, true),
        6 => (!(lt || eq), true),
        _ => (!un, false),
    }
}

/// Per-lane computation of a two-source float operation; returns (result bits, flags).
pub(crate) fn lane_op(m: M, a: u64, b: u64, f: Fmt, e: &Env, imm: u8) -> (u64, u32) {
    let ua = unp(a, f, e.daz);
    let ub = unp(b, f, e.daz);
    let ar = |op: Op| {
        let normal = |u: &Unp| u.class == Class::Finite && !u.denormal;
        if e.rc == sf::Rc::Nearest && normal(&ua) && normal(&ub) {
            if let Some(r) = fast(op, a, b, f) {
                return r;
            }
        }
        let (r, fl, _) = sf::arith(op, &ua, &ub, f, e, false);
        (r as u64, fl)
    };
    match m {
        M::Addps | M::Addss | M::Addpd | M::Addsd | M::Haddps | M::Haddpd => ar(Op::Add),
        M::Subps | M::Subss | M::Subpd | M::Subsd | M::Hsubps | M::Hsubpd => ar(Op::Sub),
        M::Mulps | M::Mulss | M::Mulpd | M::Mulsd => ar(Op::Mul),
        M::Divps | M::Divss | M::Divpd | M::Divsd => ar(Op::Div),
        M::Sqrtps | M::Sqrtss | M::Sqrtpd | M::Sqrtsd => {
            let (r, fl, _) = sf::sqrt(&ub, f, e, false);
            (r as u64, fl)
        }
        M::Minps | M::Minss | M::Minpd | M::Minsd | M::Maxps | M::Maxss | M::Maxpd | M::Maxsd => {
            // With DAZ the flushed (zero) operand is what gets returned.
            let sm = 1u64 << (f.width() - 1);
            let fa = if ua.class == Class::Zero { a & sm } else { a };
            let fb = if ub.class == Class::Zero { b & sm } else { b };
            minmax(
                &ua,
                &ub,
                fa,
                fb,
                matches!(m, M::Maxps | M::Maxss | M::Maxpd | M::Maxsd),
            )
        }
        M::Cmpps | M::Cmpss | M::Cmppd | M::Cmpsd => {
            let (c, mut fl) = sf::compare(&ua, &ub, false);
            let (res, signaling) = cmp_pred(c, imm);
            if signaling && c == Cmp::Unordered {
                fl |= sf::IE;
            }
            let ones = if f == F32 { 0xffff_ffff } else { u64::MAX };
            (if res { ones } else { 0 }, fl)
        }
        M::Rcpps | M::Rcpss | M::Rsqrtps | M::Rsqrtss => (approx(m, b as u32) as u64, 0),
        _ => (a, 0),
    }
}

/// Host fast path for round-to-nearest on normal operands: the host's IEEE-754 f32/f64
/// operations round to nearest-even exactly like SSE; inexactness comes from error-free
/// transformations (TwoSum, FMA residuals, exact in this range). Results outside the safe normal
/// range (possible overflow, underflow, denormal or zero) return `None` and take the soft-float
/// path, which owns every other flag. A quotient's residual `r*y - x` is about 2^-p |x|: with
/// a dividend near the bottom of the normal range it would be a denormal and need not be
/// exact (the FMA could round it to zero and hide PE), so such divisions take the slow path.
fn fast(op: Op, a: u64, b: u64, f: Fmt) -> Option<(u64, u32)> {
    fn two_sum_err<T>(x: T, y: T, s: T) -> T
    where
        T: Copy + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
    {
        let bb = s - x;
        (x - (s - bb)) + (y - bb)
    }
    if f == F64 {
        if op == Op::Div && (a >> 52) & 0x7ff < 64 {
            return None;
        }
        let (x, y) = (f64::from_bits(a), f64::from_bits(b));
        let (r, err) = match op {
            Op::Add => {
                let r = x + y;
                (r, two_sum_err(x, y, r))
            }
            Op::Sub => {
                let r = x - y;
                (r, two_sum_err(x, -y, r))
            }
            Op::Mul => {
                let r = x * y;
                (r, x.mul_add(y, -r))
            }
            Op::Div => {
                let r = x / y;
                (r, r.mul_add(y, -x))
            }
        };
        let ex = (r.to_bits() >> 52) & 0x7ff;
        if !(64..=0x7fd).contains(&ex) {
            return None;
        }
        Some((r.to_bits(), if err != 0.0 { sf::PE } else { 0 }))
    } else {
        if op == Op::Div && (a >> 23) & 0xff < 32 {
            return None;
        }
        let (x, y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
        let (r, err) = match op {
            Op::Add => {
                let r = x + y;
                (r, two_sum_err(x, y, r))
            }
            Op::Sub => {
                let r = x - y;
                (r, two_sum_err(x, -y, r))
            }
            Op::Mul => {
                let r = x * y;
                (r, x.mul_add(y, -r))
            }
            Op::Div => {
                let r = x / y;
                (r, r.mul_add(y, -x))
            }
        };
        let ex = (r.to_bits() >> 23) & 0xff;
        if !(32..=0xfd).contains(&ex) {
            return None;
        }
        Some((u64::from(r.to_bits()), if err != 0.0 { sf::PE } else { 0 }))
    }
}

/// RCP/RSQRT approximations: the correctly rounded value (denormal inputs act as zero, tiny
/// results flush to zero, as the hardware's table lookup does).
fn approx(m: M, b: u32) -> u32 {
    let x = f32::from_bits(b);
    let sign = b & 0x8000_0000;
    let exp = (b >> 23) & 0xff;
    let rsqrt = matches!(m, M::Rsqrtps | M::Rsqrtss);
    if exp == 0 {
        // ±0 or denormal -> ±infinity.
        return sign | 0x7f80_0000;
    }
    if x.is_nan() {
        return b | 0x0040_0000;
    }
    if rsqrt {
        if sign != 0 {
            return 0xffc0_0000;
        }
        if x.is_infinite() {
            return 0;
        }
        return ((1.0 / f64::from(x).sqrt()) as f32).to_bits();
    }
    if x.is_infinite() {
        return sign;
    }
    let r = (1.0 / f64::from(x)) as f32;
    if r.to_bits() & 0x7f80_0000 == 0 {
        return sign;
    }
    r.to_bits()
}

/// Executes an SSE floating-point instruction.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let m = insn.mnemonic();
    let mx = ctx.cpu.s.mxcsr;
    match m {
        M::Movaps | M::Movups | M::Movapd | M::Movupd | M::Movntps | M::Movntpd => {
            let v = ctx.vread(insn, 1)?;
            ctx.vwrite(insn, 0, v)
        }
        M::Movss | M::Movsd => {
            let w: u32 = if m == M::Movss { 32 } else { 64 };
            let lowm = (1u128 << w) - 1;
            let v = ctx.vread(insn, 1)?;
            match (loc(insn, 0), loc(insn, 1)) {
                (Loc::Xmm(_), Loc::Xmm(_)) => {
                    let d = ctx.vread(insn, 0)?;
                    ctx.vwrite(insn, 0, (d & !lowm) | (v & lowm))
                }
                (Loc::Xmm(_), _) => ctx.vwrite(insn, 0, v & lowm),
                _ => ctx.vwrite(insn, 0, v & lowm),
            }
        }
        M::Movlps | M::Movlpd | M::Movhps | M::Movhpd | M::Movlhps | M::Movhlps => {
            let v = ctx.vread(insn, 1)?;
            let lo = u128::from(u64::MAX);
            if matches!(loc(insn, 0), Loc::Mem) {
                // Store: MOVLPS m64, xmm (low) / MOVHPS m64, xmm (high).
                let x = if matches!(m, M::Movhps | M::Movhpd) {
                    v >> 64
                } else {
                    v
                };
                return ctx.vwrite(insn, 0, x & lo);
            }
            let d = ctx.vread(insn, 0)?;
            let r = match m {
                M::Movlps | M::Movlpd => (d & !lo) | (v & lo),
                M::Movhlps => (d & !lo) | (v >> 64),
                M::Movhps | M::Movhpd | M::Movlhps => (d & lo) | ((v & lo) << 64),
                _ => d,
            };
            ctx.vwrite(insn, 0, r)
        }
        M::Movmskps | M::Movmskpd => {
            let v = ctx.vread(insn, 1)?;
            let (n, w) = if m == M::Movmskps { (4, 4) } else { (2, 8) };
            let r = (0..n).fold(0u64, |acc, i| acc | ((lane(v, w, i) >> (w * 8 - 1)) << i));
            ctx.vwrite(insn, 0, u128::from(r))
        }
        M::Movshdup | M::Movsldup | M::Movddup => {
            let v = ctx.vread(insn, 1)?;
            let r = match m {
                M::Movshdup => build(4, 4, |i| lane(v, 4, i | 1)),
                M::Movsldup => build(4, 4, |i| lane(v, 4, i & !1)),
                _ => build(2, 8, |_| lane(v, 8, 0)),
            };
            ctx.vwrite(insn, 0, r)
        }
        M::Andps | M::Andpd => bitop(ctx, insn, |a, b| a & b),
        M::Andnps | M::Andnpd => bitop(ctx, insn, |a, b| !a & b),
        M::Orps | M::Orpd => bitop(ctx, insn, |a, b| a | b),
        M::Xorps | M::Xorpd => bitop(ctx, insn, |a, b| a ^ b),
        M::Shufps | M::Shufpd | M::Unpcklps | M::Unpckhps | M::Unpcklpd | M::Unpckhpd => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let imm = if insn.op_count() > 2 {
                insn.immediate8()
            } else {
                0
            };
            let r = match m {
                M::Shufps => build(4, 4, |i| {
                    let s = usize::from((imm >> (2 * i)) & 3);
                    if i < 2 {
                        lane(a, 4, s)
                    } else {
                        lane(b, 4, s)
                    }
                }),
                M::Shufpd => build(2, 8, |i| {
                    let s = usize::from((imm >> i) & 1);
                    if i == 0 {
                        lane(a, 8, s)
                    } else {
                        lane(b, 8, s)
                    }
                }),
                M::Unpcklps => build(4, 4, |i| lane(if i % 2 == 0 { a } else { b }, 4, i / 2)),
                M::Unpckhps => build(4, 4, |i| lane(if i % 2 == 0 { a } else { b }, 4, 2 + i / 2)),
                M::Unpcklpd => build(2, 8, |i| lane(if i == 0 { a } else { b }, 8, 0)),
                _ => build(2, 8, |i| lane(if i == 0 { a } else { b }, 8, 1)),
            };
            ctx.vwrite(insn, 0, r)
        }
        M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => {
            let w = if matches!(m, M::Comiss | M::Ucomiss) {
                4
            } else {
                8
            };
            let f = fmt_of(w);
            let daz = mx & 0x40 != 0;
            let a = unp(lane(ctx.vread(insn, 0)?, w, 0), f, daz);
            let b = unp(lane(ctx.vread(insn, 1)?, w, 0), f, daz);
            let (c, mut flags) = sf::compare(&a, &b, matches!(m, M::Comiss | M::Comisd));
            if (a.denormal || b.denormal) && !a.is_nan() && !b.is_nan() {
                flags |= sf::DE;
            }
            commit_flags(ctx, flags)?;
            let rf = &mut ctx.cpu.s.rflags;
            *rf &= !(fl::ZF | fl::PF | fl::CF | fl::OF | fl::SF | fl::AF);
            *rf |= match c {
                Cmp::Unordered => fl::ZF | fl::PF | fl::CF,
                Cmp::Less => fl::CF,
                Cmp::Equal => fl::ZF,
                Cmp::Greater => 0,
            };
            Ok(())
        }
        M::Addsubps | M::Addsubpd | M::Haddps | M::Haddpd | M::Hsubps | M::Hsubpd => {
            let w = if matches!(m, M::Addsubps | M::Haddps | M::Hsubps) {
                4
            } else {
                8
            };
            let f = fmt_of(w);
            let e = env(mx, f);
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let n = 16 / w;
            let mut flags = 0;
            let r = build(n, w, |i| {
                let (r, fl) = match m {
                    M::Addsubps | M::Addsubpd => {
                        let op = if i % 2 == 0 { M::Subps } else { M::Addps };
                        lane_op(op, lane(a, w, i), lane(b, w, i), f, &e, 0)
                    }
                    _ => {
                        let (src, k) = if i < n / 2 {
                            (a, 2 * i)
                        } else {
                            (b, 2 * (i - n / 2))
                        };
                        lane_op(m, lane(src, w, k), lane(src, w, k + 1), f, &e, 0)
                    }
                };
                flags |= fl;
                r
            });
            commit_flags(ctx, flags)?;
            ctx.vwrite(insn, 0, r)
        }
        M::Cvtsi2ss
        | M::Cvtsi2sd
        | M::Cvtss2si
        | M::Cvttss2si
        | M::Cvtsd2si
        | M::Cvttsd2si
        | M::Cvtss2sd
        | M::Cvtsd2ss
        | M::Cvtps2pd
        | M::Cvtpd2ps
        | M::Cvtdq2ps
        | M::Cvtps2dq
        | M::Cvttps2dq
        | M::Cvtdq2pd
        | M::Cvtpd2dq
        | M::Cvttpd2dq
        | M::Cvtpi2ps
        | M::Cvtps2pi
        | M::Cvttps2pi
        | M::Cvtpi2pd
        | M::Cvtpd2pi
        | M::Cvttpd2pi => convert(ctx, insn),
        _ => {
            // Packed / scalar arithmetic, compare, min/max, sqrt, rcp/rsqrt.
            let (scalar, w) = shape(m);
            let f = fmt_of(w);
            let e = env(mx, f);
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let imm = if insn.op_count() > 2 {
                insn.immediate8()
            } else {
                0
            };
            let n = if scalar { 1 } else { 16 / w };
            let mut flags = 0;
            let mut r = build(n, w, |i| {
                let (r, fl) = lane_op(m, lane(a, w, i), lane(b, w, i), f, &e, imm);
                flags |= fl;
                r
            });
            if scalar {
                let lowm = (1u128 << (w * 8)) - 1;
                r = (a & !lowm) | (r & lowm);
            }
            commit_flags(ctx, flags)?;
            ctx.vwrite(insn, 0, r)
        }
    }
}

/// (scalar, element width) of an arithmetic/compare/min/max/sqrt/rcp mnemonic.
fn shape(m: M) -> (bool, usize) {
    match m {
        M::Addss
        | M::Subss
        | M::Mulss
        | M::Divss
        | M::Sqrtss
        | M::Minss
        | M::Maxss
        | M::Rcpss
        | M::Rsqrtss
        | M::Cmpss => (true, 4),
        M::Addsd | M::Subsd | M::Mulsd | M::Divsd | M::Sqrtsd | M::Minsd | M::Maxsd | M::Cmpsd => {
            (true, 8)
        }
        M::Addpd | M::Subpd | M::Mulpd | M::Divpd | M::Sqrtpd | M::Minpd | M::Maxpd | M::Cmppd => {
            (false, 8)
        }
        _ => (false, 4),
    }
}

fn bitop<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    insn: &Instruction,
    f: impl Fn(u128, u128) -> u128,
) -> Res<()> {
    let a = ctx.vread(insn, 0)?;
    let b = ctx.vread(insn, 1)?;
    ctx.vwrite(insn, 0, f(a, b))
}

/// CVT* conversions (SDM Vol. 1 §11.4.5). Float -> integer out of range or NaN gives the
/// integer indefinite (only the sign bit set) with IE.
fn convert<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let m = insn.mnemonic();
    let mx = ctx.cpu.s.mxcsr;
    let daz = mx & 0x40 != 0;
    let rc = (mx >> 13) & 3;
    let src = ctx.vread(insn, 1)?;
    let flags = std::cell::Cell::new(0u32);
    let trunc = matches!(
        m,
        M::Cvttss2si | M::Cvttsd2si | M::Cvttps2dq | M::Cvttpd2dq | M::Cvttps2pi | M::Cvttpd2pi
    );
    let irc = if trunc { 3 } else { rc };
    let to_i = |bits: u64, f: Fmt, width: u32| {
        let (v, fl) = sf::to_int(&unp(bits, f, daz), width, irc);
        flags.set(flags.get() | fl);
        v
    };
    let dst_mmx = matches!(loc(insn, 0), Loc::Mm(_));
    let r: u128 = match m {
        M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => {
            let w = if matches!(m, M::Cvtss2si | M::Cvttss2si) {
                4
            } else {
                8
            };
            let width = if let Loc::Gpr(r) = loc(insn, 0) {
                r.size() as u32 * 8
            } else {
                32
            };
            let v = to_i(lane(src, w, 0), fmt_of(w), width);
            commit_flags(ctx, flags.get())?;
            return ctx.vwrite(insn, 0, u128::from(v));
        }
        M::Cvtps2dq | M::Cvttps2dq => build(4, 4, |i| to_i(lane(src, 4, i), F32, 32)),
        M::Cvtps2pi | M::Cvttps2pi => build(2, 4, |i| to_i(lane(src, 4, i), F32, 32)),
        M::Cvtpd2dq | M::Cvttpd2dq | M::Cvtpd2pi | M::Cvttpd2pi => {
            build(2, 4, |i| to_i(lane(src, 8, i), F64, 32))
        }
        _ => {
            let cv = |bits: u64, from: Fmt, to: Fmt| -> u64 {
                let (r, fl, _) = sf::convert(&unp(bits, from, daz), to, &env(mx, to));
                flags.set(flags.get() | fl);
                r as u64
            };
            let fi = |v: i64, to: Fmt| -> u64 {
                let (r, fl) = sf::from_int(v, to, &env(mx, to));
                flags.set(flags.get() | fl);
                r as u64
            };
            let d = ctx.vread(insn, 0)?;
            let r = match m {
                M::Cvtsi2ss | M::Cvtsi2sd => {
                    let size = match loc(insn, 1) {
                        Loc::Gpr(r) => r.size(),
                        _ => insn.memory_size().size(),
                    };
                    let v = if size == 8 {
                        src as u64 as i64
                    } else {
                        i64::from(src as u32 as i32)
                    };
                    if m == M::Cvtsi2ss {
                        (d & !0xffff_ffffu128) | u128::from(fi(v, F32))
                    } else {
                        (d & !u128::from(u64::MAX)) | u128::from(fi(v, F64))
                    }
                }
                M::Cvtss2sd => {
                    (d & !u128::from(u64::MAX)) | u128::from(cv(lane(src, 4, 0), F32, F64))
                }
                M::Cvtsd2ss => (d & !0xffff_ffffu128) | u128::from(cv(lane(src, 8, 0), F64, F32)),
                M::Cvtps2pd => build(2, 8, |i| cv(lane(src, 4, i), F32, F64)),
                M::Cvtpd2ps => build(2, 4, |i| cv(lane(src, 8, i), F64, F32)),
                M::Cvtdq2ps => build(4, 4, |i| fi(i64::from(lane(src, 4, i) as u32 as i32), F32)),
                M::Cvtdq2pd | M::Cvtpi2pd => {
                    build(2, 8, |i| fi(i64::from(lane(src, 4, i) as u32 as i32), F64))
                }
                M::Cvtpi2ps => {
                    (d & !u128::from(u64::MAX))
                        | build(2, 4, |i| fi(i64::from(lane(src, 4, i) as u32 as i32), F32))
                }
                _ => d,
            };
            commit_flags(ctx, flags.get())?;
            return ctx.vwrite(insn, 0, r);
        }
    };
    commit_flags(ctx, flags.get())?;
    let _ = dst_mmx;
    ctx.vwrite(insn, 0, r)
}
