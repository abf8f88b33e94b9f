//! SSE4.1 and SSE4.2 vector instructions (SDM Vol. 1 §12.10 "SSE4.1", §12.11 "SSE4.2"; Vol. 2
//! instruction pages). The string and text instructions (PCMPxSTRx) are in [`super::pcmpstr`];
//! CRC32, a general-purpose instruction, is in `cpu::integer::bits`.
//!
//! None of these instructions has an MMX form: all need CR4.OSFXSR (checked by the caller,
//! like SSE2). Floating-point ones (ROUND*, DP*) report MXCSR exceptions through the same
//! commit rule as SSE2 arithmetic: an unmasked exception leaves the destination unchanged.

use super::float::{commit_flags, env, lane_op, unp};
use super::int::{build, lane, slane};
use super::pcmpstr;
use crate::cpu::fpu::sf::{self, Fmt, F32, F64};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};
use jit::abi::flags as fl;

/// True for the mnemonics this module implements.
pub fn handles(m: M) -> bool {
    matches!(
        m,
        M::Pmulld
            | M::Pmuldq
            | M::Pminsb
            | M::Pminsd
            | M::Pminuw
            | M::Pminud
            | M::Pmaxsb
            | M::Pmaxsd
            | M::Pmaxuw
            | M::Pmaxud
            | M::Pblendw
            | M::Pblendvb
            | M::Blendps
            | M::Blendpd
            | M::Blendvps
            | M::Blendvpd
            | M::Ptest
            | M::Pextrb
            | M::Pextrd
            | M::Pextrq
            | M::Extractps
            | M::Pinsrb
            | M::Pinsrd
            | M::Pinsrq
            | M::Insertps
            | M::Pmovsxbw
            | M::Pmovsxbd
            | M::Pmovsxbq
            | M::Pmovsxwd
            | M::Pmovsxwq
            | M::Pmovsxdq
            | M::Pmovzxbw
            | M::Pmovzxbd
            | M::Pmovzxbq
            | M::Pmovzxwd
            | M::Pmovzxwq
            | M::Pmovzxdq
            | M::Packusdw
            | M::Pcmpeqq
            | M::Pcmpgtq
            | M::Phminposuw
            | M::Movntdqa
            | M::Roundps
            | M::Roundpd
            | M::Roundss
            | M::Roundsd
            | M::Dpps
            | M::Dppd
            | M::Mpsadbw
            | M::Pcmpestri
            | M::Pcmpestri64
            | M::Pcmpestrm
            | M::Pcmpestrm64
            | M::Pcmpistri
            | M::Pcmpistrm
    )
}

/// The imm8 operand, or 0 when the instruction has none.
fn imm8(insn: &Instruction) -> u8 {
    if (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Immediate8) {
        insn.immediate8()
    } else {
        0
    }
}

/// Two-source packed-integer and blend operations. `a` is the destination (first source),
/// `b` the second source, `x0` the implicit XMM0 mask of the variable blends.
pub fn binop(m: M, a: u128, b: u128, imm: u8, x0: u128) -> u128 {
    let ew = |w: usize, f: &dyn Fn(u64, u64) -> u64| {
        build(16 / w, w, |i| f(lane(a, w, i), lane(b, w, i)))
    };
    let sw = |w: usize, f: &dyn Fn(i64, i64) -> i64| {
        build(16 / w, w, |i| f(slane(a, w, i), slane(b, w, i)) as u64)
    };
    // Selects lane i of `b` where `pick(i)`, else lane i of `a`.
    let blend = |w: usize, pick: &dyn Fn(usize) -> bool| {
        build(16 / w, w, |i| {
            if pick(i) {
                lane(b, w, i)
            } else {
                lane(a, w, i)
            }
        })
    };
    let bit = |i: usize| (imm >> i) & 1 != 0;
    match m {
        // PMULLD: low 32 bits of the signed 64-bit products.
        M::Pmulld => sw(4, &|x, y| x.wrapping_mul(y)),
        // PMULDQ: signed dwords 0 and 2 to quadword products.
        M::Pmuldq => build(2, 8, |i| (slane(a, 4, 2 * i) * slane(b, 4, 2 * i)) as u64),
        M::Pminsb => sw(1, &|x, y| x.min(y)),
        M::Pminsd => sw(4, &|x, y| x.min(y)),
        M::Pminuw => ew(2, &|x, y| x.min(y)),
        M::Pminud => ew(4, &|x, y| x.min(y)),
        M::Pmaxsb => sw(1, &|x, y| x.max(y)),
        M::Pmaxsd => sw(4, &|x, y| x.max(y)),
        M::Pmaxuw => ew(2, &|x, y| x.max(y)),
        M::Pmaxud => ew(4, &|x, y| x.max(y)),
        M::Pcmpeqq => ew(8, &|x, y| if x == y { u64::MAX } else { 0 }),
        // PCMPGTQ (SSE4.2): signed quadword compare.
        M::Pcmpgtq => sw(8, &|x, y| if x > y { -1 } else { 0 }),
        // PACKUSDW: signed dwords of dest then source to unsigned-saturated words.
        M::Packusdw => build(8, 2, |i| {
            let v = if i < 4 {
                slane(a, 4, i)
            } else {
                slane(b, 4, i - 4)
            };
            v.clamp(0, 0xffff) as u64
        }),
        M::Pblendw => blend(2, &|i| bit(i)),
        M::Blendps => blend(4, &|i| bit(i)),
        M::Blendpd => blend(8, &|i| bit(i)),
        // Variable blends: the sign bit of each XMM0 element selects the source.
        M::Pblendvb => blend(1, &|i| lane(x0, 1, i) >> 7 != 0),
        M::Blendvps => blend(4, &|i| lane(x0, 4, i) >> 31 != 0),
        M::Blendvpd => blend(8, &|i| lane(x0, 8, i) >> 63 != 0),
        // MPSADBW: eight sums of absolute differences of 4-byte groups; imm8[2] selects the
        // destination offset (0 or 4 bytes), imm8[1:0] the source group.
        M::Mpsadbw => {
            let ao = 4 * usize::from((imm >> 2) & 1);
            let bo = 4 * usize::from(imm & 3);
            build(8, 2, |i| {
                (0..4)
                    .map(|j| lane(a, 1, ao + i + j).abs_diff(lane(b, 1, bo + j)))
                    .sum()
            })
        }
        _ => a,
    }
}

/// PMOVSX*/PMOVZX*: (source element bytes, destination element bytes, sign-extend).
fn pmov_shape(m: M) -> (usize, usize, bool) {
    match m {
        M::Pmovsxbw => (1, 2, true),
        M::Pmovsxbd => (1, 4, true),
        M::Pmovsxbq => (1, 8, true),
        M::Pmovsxwd => (2, 4, true),
        M::Pmovsxwq => (2, 8, true),
        M::Pmovsxdq => (4, 8, true),
        M::Pmovzxbw => (1, 2, false),
        M::Pmovzxbd => (1, 4, false),
        M::Pmovzxbq => (1, 8, false),
        M::Pmovzxwd => (2, 4, false),
        M::Pmovzxwq => (2, 8, false),
        _ => (4, 8, false),
    }
}

/// PMOVSX/PMOVZX: widens the low elements of `s`.
pub fn pmov(m: M, s: u128) -> u128 {
    let (sw, dw, signed) = pmov_shape(m);
    build(16 / dw, dw, |i| {
        if signed {
            slane(s, sw, i) as u64
        } else {
            lane(s, sw, i)
        }
    })
}

/// PHMINPOSUW: the minimum unsigned word in bits 15:0, the lowest index holding it in bits
/// 18:16, the rest zero.
pub fn phminposuw(s: u128) -> u128 {
    let (idx, min) = (0..8)
        .map(|i| (i, lane(s, 2, i)))
        .min_by_key(|&(i, v)| (v, i))
        .unwrap_or((0, 0));
    u128::from(min) | (u128::from(idx as u64) << 16)
}

/// INSERTPS: imm8[7:6] selects the source dword (register source only; a memory source is
/// the loaded dword), imm8[5:4] the destination dword, imm8[3:0] zeroes dwords.
pub fn insertps(d: u128, s: u128, imm: u8, mem: bool) -> u128 {
    let v = if mem {
        lane(s, 4, 0)
    } else {
        lane(s, 4, usize::from(imm >> 6))
    };
    let cd = usize::from((imm >> 4) & 3);
    build(4, 4, |i| {
        if (imm >> i) & 1 != 0 {
            0
        } else if i == cd {
            v
        } else {
            lane(d, 4, i)
        }
    })
}

/// ROUNDPS/PD/SS/SD on one element (SDM Vol. 2B "ROUNDPS", Table 4-18): imm8[1:0] is the
/// rounding mode unless imm8[2] = 1, which selects MXCSR.RC; imm8[3] = 1 suppresses the
/// precision exception. Only IE (SNaN source, returned quieted) and PE are reported; DAZ
/// applies to the source.
pub fn round_lane(bits: u64, f: Fmt, imm: u8, mxcsr: u32) -> (u64, u32) {
    let rc = if imm & 4 != 0 {
        (mxcsr >> 13) & 3
    } else {
        u32::from(imm & 3)
    };
    let u = unp(bits, f, mxcsr & 0x40 != 0);
    let (r, mut flags, _) = sf::round_int(&u, f, rc);
    flags &= sf::IE | sf::PE;
    if imm & 8 != 0 {
        flags &= !sf::PE;
    }
    (r as u64, flags)
}

/// DPPS/DPPD (SDM Vol. 2A "DPPS", "DPPD"): products of the elements selected by imm8[7:4]
/// (others +0.0), summed pairwise ((p0 + p1) + (p2 + p3) for DPPS, p0 + p1 for DPPD), the sum
/// written to the elements selected by imm8[3:0] (others +0.0). Each multiply and add rounds
/// under MXCSR and reports its own exceptions. Returns (result, MXCSR flags).
pub fn dot(m: M, a: u128, b: u128, imm: u8, mxcsr: u32) -> (u128, u32) {
    let (w, f, mul, add) = if m == M::Dpps {
        (4, F32, M::Mulps, M::Addps)
    } else {
        (8, F64, M::Mulpd, M::Addpd)
    };
    let e = env(mxcsr, f);
    let n = 16 / w;
    let mut flags = 0;
    let mut p = [0u64; 4];
    for (i, pi) in p.iter_mut().enumerate().take(n) {
        if (imm >> (4 + i)) & 1 != 0 {
            let (r, fl) = lane_op(mul, lane(a, w, i), lane(b, w, i), f, &e, 0);
            flags |= fl;
            *pi = r;
        }
    }
    let mut sum = |x: u64, y: u64| {
        let (r, fl) = lane_op(add, x, y, f, &e, 0);
        flags |= fl;
        r
    };
    let total = if n == 4 {
        let lo = sum(p[0], p[1]);
        let hi = sum(p[2], p[3]);
        sum(lo, hi)
    } else {
        sum(p[0], p[1])
    };
    let r = build(n, w, |i| if (imm >> i) & 1 != 0 { total } else { 0 });
    (r, flags)
}

/// Executes an SSE4.1 / SSE4.2 vector instruction (availability already checked).
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let m = insn.mnemonic();
    let imm = imm8(insn);
    let mx = ctx.cpu.s.mxcsr;
    match m {
        // PTEST: ZF = (dest AND src) = 0, CF = (src AND NOT dest) = 0; OF, SF, AF, PF = 0.
        M::Ptest => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let mut f = 0;
            if a & b == 0 {
                f |= fl::ZF;
            }
            if b & !a == 0 {
                f |= fl::CF;
            }
            crate::cpu::integer::set_flags(ctx, fl::STATUS, f);
            Ok(())
        }
        // PEXTRB/D/Q, EXTRACTPS: element imm8 (modulo the element count) to r/m; a GPR
        // destination is zero-extended.
        M::Pextrb | M::Pextrd | M::Pextrq | M::Extractps => {
            let s = ctx.vread(insn, 1)?;
            let w = match m {
                M::Pextrb => 1,
                M::Pextrq => 8,
                _ => 4,
            };
            let v = lane(s, w, usize::from(imm) % (16 / w));
            ctx.vwrite(insn, 0, u128::from(v))
        }
        // PINSRB/D/Q: the low element of r/m into element imm8 (modulo the element count).
        M::Pinsrb | M::Pinsrd | M::Pinsrq => {
            let d = ctx.vread(insn, 0)?;
            let s = ctx.vread(insn, 1)?;
            let w = match m {
                M::Pinsrb => 1,
                M::Pinsrd => 4,
                _ => 8,
            };
            let k = usize::from(imm) % (16 / w);
            let r = build(16 / w, w, |i| {
                if i == k {
                    lane(s, w, 0)
                } else {
                    lane(d, w, i)
                }
            });
            ctx.vwrite(insn, 0, r)
        }
        M::Insertps => {
            let d = ctx.vread(insn, 0)?;
            let s = ctx.vread(insn, 1)?;
            let mem = insn.op_kind(1) == OpKind::Memory;
            ctx.vwrite(insn, 0, insertps(d, s, imm, mem))
        }
        M::Pmovsxbw
        | M::Pmovsxbd
        | M::Pmovsxbq
        | M::Pmovsxwd
        | M::Pmovsxwq
        | M::Pmovsxdq
        | M::Pmovzxbw
        | M::Pmovzxbd
        | M::Pmovzxbq
        | M::Pmovzxwd
        | M::Pmovzxwq
        | M::Pmovzxdq => {
            // A memory source is exactly the bytes needed (iced's memory size: 2, 4 or 8).
            let s = ctx.vread(insn, 1)?;
            ctx.vwrite(insn, 0, pmov(m, s))
        }
        // MOVNTDQA: an aligned 16-byte load (the non-temporal hint has no effect here).
        M::Movntdqa => {
            let s = ctx.vread(insn, 1)?;
            ctx.vwrite(insn, 0, s)
        }
        M::Phminposuw => {
            let s = ctx.vread(insn, 1)?;
            ctx.vwrite(insn, 0, phminposuw(s))
        }
        M::Roundps | M::Roundpd | M::Roundss | M::Roundsd => {
            let d = ctx.vread(insn, 0)?;
            let s = ctx.vread(insn, 1)?;
            let (w, f) = if matches!(m, M::Roundps | M::Roundss) {
                (4, F32)
            } else {
                (8, F64)
            };
            let scalar = matches!(m, M::Roundss | M::Roundsd);
            let n = if scalar { 1 } else { 16 / w };
            let mut flags = 0;
            let mut r = build(n, w, |i| {
                let (v, fl) = round_lane(lane(s, w, i), f, imm, mx);
                flags |= fl;
                v
            });
            if scalar {
                let lowm = (1u128 << (w * 8)) - 1;
                r = (d & !lowm) | (r & lowm);
            }
            commit_flags(ctx, flags)?;
            ctx.vwrite(insn, 0, r)
        }
        M::Dpps | M::Dppd => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let (r, flags) = dot(m, a, b, imm, mx);
            commit_flags(ctx, flags)?;
            ctx.vwrite(insn, 0, r)
        }
        M::Pcmpestri
        | M::Pcmpestri64
        | M::Pcmpestrm
        | M::Pcmpestrm64
        | M::Pcmpistri
        | M::Pcmpistrm => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let n = if imm & 1 != 0 { 8 } else { 16 };
            let explicit = matches!(
                m,
                M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64
            );
            let (la, lb) = if explicit {
                // EAX/EDX, or RAX/RDX with REX.W (SDM Vol. 2B "PCMPESTRI").
                let w64 = matches!(m, M::Pcmpestri64 | M::Pcmpestrm64);
                (
                    pcmpstr::explicit_len(ctx.cpu.s.gpr[0], w64, n),
                    pcmpstr::explicit_len(ctx.cpu.s.gpr[2], w64, n),
                )
            } else {
                (pcmpstr::implicit_len(a, imm), pcmpstr::implicit_len(b, imm))
            };
            let res = pcmpstr::compare(a, la, b, lb, imm);
            if matches!(m, M::Pcmpestri | M::Pcmpestri64 | M::Pcmpistri) {
                ctx.set_reg(Register::ECX, u64::from(res.index(imm)));
            } else {
                ctx.cpu.s.xmm[0] = super::xmm_split(res.mask(imm));
            }
            crate::cpu::integer::set_flags(ctx, fl::STATUS, res.flags());
            Ok(())
        }
        _ => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let x0 = super::xmm_get(&ctx.cpu.s.xmm[0]);
            ctx.vwrite(insn, 0, binop(m, a, b, imm, x0))
        }
    }
}
