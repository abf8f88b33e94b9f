//! Packed-integer instructions on MMX and XMM registers (SDM Vol. 1 §9.4, §11.4.3, §12.3
//! SSSE3), and the integer moves (MOVD/MOVQ, MOVDQA/MOVDQU, PMOVMSKB, MASKMOV*).

use super::{loc, Loc};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic as M};

/// True for the mnemonics this module implements.
pub fn handles(m: M) -> bool {
    matches!(
        m,
        M::Emms
            | M::Movd
            | M::Movq
            | M::Movdqa
            | M::Movdqu
            | M::Lddqu
            | M::Movntdq
            | M::Movnti
            | M::Movntq
            | M::Movq2dq
            | M::Movdq2q
            | M::Maskmovq
            | M::Maskmovdqu
            | M::Pmovmskb
            | M::Paddb
            | M::Paddw
            | M::Paddd
            | M::Paddq
            | M::Psubb
            | M::Psubw
            | M::Psubd
            | M::Psubq
            | M::Paddsb
            | M::Paddsw
            | M::Paddusb
            | M::Paddusw
            | M::Psubsb
            | M::Psubsw
            | M::Psubusb
            | M::Psubusw
            | M::Pcmpeqb
            | M::Pcmpeqw
            | M::Pcmpeqd
            | M::Pcmpgtb
            | M::Pcmpgtw
            | M::Pcmpgtd
            | M::Packsswb
            | M::Packssdw
            | M::Packuswb
            | M::Punpcklbw
            | M::Punpcklwd
            | M::Punpckldq
            | M::Punpcklqdq
            | M::Punpckhbw
            | M::Punpckhwd
            | M::Punpckhdq
            | M::Punpckhqdq
            | M::Pand
            | M::Pandn
            | M::Por
            | M::Pxor
            | M::Psllw
            | M::Pslld
            | M::Psllq
            | M::Psrlw
            | M::Psrld
            | M::Psrlq
            | M::Psraw
            | M::Psrad
            | M::Pslldq
            | M::Psrldq
            | M::Pmullw
            | M::Pmulhw
            | M::Pmulhuw
            | M::Pmaddwd
            | M::Pmuludq
            | M::Psadbw
            | M::Pavgb
            | M::Pavgw
            | M::Pminub
            | M::Pminsw
            | M::Pmaxub
            | M::Pmaxsw
            | M::Pshufd
            | M::Pshufhw
            | M::Pshuflw
            | M::Pshufw
            | M::Pextrw
            | M::Pinsrw
            | M::Pshufb
            | M::Phaddw
            | M::Phaddd
            | M::Phaddsw
            | M::Phsubw
            | M::Phsubd
            | M::Phsubsw
            | M::Pmaddubsw
            | M::Pmulhrsw
            | M::Psignb
            | M::Psignw
            | M::Psignd
            | M::Pabsb
            | M::Pabsw
            | M::Pabsd
            | M::Palignr
    )
}

/// Lane `i` of width `w` bytes, zero-extended.
#[inline]
pub fn lane(v: u128, w: usize, i: usize) -> u64 {
    let bits = w * 8;
    ((v >> (i * bits)) & ((1u128 << bits) - 1)) as u64
}

/// Lane `i` of width `w`, sign-extended.
#[inline]
pub fn slane(v: u128, w: usize, i: usize) -> i64 {
    let s = 64 - w as u32 * 8;
    ((lane(v, w, i) << s) as i64) >> s
}

/// Builds a vector of `n` lanes of width `w` from a lane function (values are truncated).
#[inline]
pub fn build(n: usize, w: usize, mut f: impl FnMut(usize) -> u64) -> u128 {
    let bits = w * 8;
    let m = (1u128 << bits) - 1;
    (0..n).fold(0u128, |acc, i| acc | ((u128::from(f(i)) & m) << (i * bits)))
}

fn sat_s(v: i64, w: usize) -> u64 {
    let bits = w as u32 * 8;
    let (lo, hi) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
    v.clamp(lo, hi) as u64
}

fn sat_u(v: i64, w: usize) -> u64 {
    let bits = w as u32 * 8;
    v.clamp(0, (1i64 << bits) - 1) as u64
}

/// Two-operand packed-integer operation on `nb`-byte vectors (8 = MMX, 16 = XMM).
pub fn binop(m: M, a: u128, b: u128, nb: usize, imm: u8) -> u128 {
    let lanes = |w: usize| nb / w;
    let ew = |w: usize, f: &dyn Fn(u64, u64) -> u64| {
        build(lanes(w), w, |i| f(lane(a, w, i), lane(b, w, i)))
    };
    let sw = |w: usize, f: &dyn Fn(i64, i64) -> i64| {
        build(lanes(w), w, |i| f(slane(a, w, i), slane(b, w, i)) as u64)
    };
    let full = if nb == 16 {
        u128::MAX
    } else {
        u128::from(u64::MAX)
    };
    match m {
        M::Paddb => ew(1, &|x, y| x.wrapping_add(y)),
        M::Paddw => ew(2, &|x, y| x.wrapping_add(y)),
        M::Paddd => ew(4, &|x, y| x.wrapping_add(y)),
        M::Paddq => ew(8, &|x, y| x.wrapping_add(y)),
        M::Psubb => ew(1, &|x, y| x.wrapping_sub(y)),
        M::Psubw => ew(2, &|x, y| x.wrapping_sub(y)),
        M::Psubd => ew(4, &|x, y| x.wrapping_sub(y)),
        M::Psubq => ew(8, &|x, y| x.wrapping_sub(y)),
        M::Paddsb => sw(1, &|x, y| sat_s(x + y, 1) as i64),
        M::Paddsw => sw(2, &|x, y| sat_s(x + y, 2) as i64),
        M::Psubsb => sw(1, &|x, y| sat_s(x - y, 1) as i64),
        M::Psubsw => sw(2, &|x, y| sat_s(x - y, 2) as i64),
        M::Paddusb => ew(1, &|x, y| sat_u(x as i64 + y as i64, 1)),
        M::Paddusw => ew(2, &|x, y| sat_u(x as i64 + y as i64, 2)),
        M::Psubusb => ew(1, &|x, y| sat_u(x as i64 - y as i64, 1)),
        M::Psubusw => ew(2, &|x, y| sat_u(x as i64 - y as i64, 2)),
        M::Pcmpeqb => ew(1, &|x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqw => ew(2, &|x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqd => ew(4, &|x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpgtb => sw(1, &|x, y| if x > y { -1 } else { 0 }),
        M::Pcmpgtw => sw(2, &|x, y| if x > y { -1 } else { 0 }),
        M::Pcmpgtd => sw(4, &|x, y| if x > y { -1 } else { 0 }),
        M::Packsswb | M::Packssdw | M::Packuswb => {
            let (w, signed) = match m {
                M::Packsswb => (2, true),
                M::Packssdw => (4, true),
                _ => (2, false),
            };
            let n = lanes(w);
            build(2 * n, w / 2, |i| {
                let v = if i < n {
                    slane(a, w, i)
                } else {
                    slane(b, w, i - n)
                };
                if signed {
                    sat_s(v, w / 2)
                } else {
                    sat_u(v, w / 2)
                }
            })
        }
        M::Punpcklbw
        | M::Punpcklwd
        | M::Punpckldq
        | M::Punpcklqdq
        | M::Punpckhbw
        | M::Punpckhwd
        | M::Punpckhdq
        | M::Punpckhqdq => {
            let (w, high) = match m {
                M::Punpcklbw => (1, false),
                M::Punpcklwd => (2, false),
                M::Punpckldq => (4, false),
                M::Punpcklqdq => (8, false),
                M::Punpckhbw => (1, true),
                M::Punpckhwd => (2, true),
                M::Punpckhdq => (4, true),
                _ => (8, true),
            };
            let base = if high { lanes(w) / 2 } else { 0 };
            build(lanes(w), w, |i| {
                let src = if i % 2 == 0 { a } else { b };
                lane(src, w, base + i / 2)
            })
        }
        M::Pand => a & b,
        M::Pandn => !a & b & full,
        M::Por => a | b,
        M::Pxor => a ^ b,
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad => {
            // The count is the whole low 64 bits of the source (or the immediate).
            let cnt = b as u64;
            let (w, kind) = match m {
                M::Psllw => (2, 0),
                M::Pslld => (4, 0),
                M::Psllq => (8, 0),
                M::Psrlw => (2, 1),
                M::Psrld => (4, 1),
                M::Psrlq => (8, 1),
                M::Psraw => (2, 2),
                _ => (4, 2),
            };
            let bits = (w * 8) as u64;
            build(lanes(w), w, |i| match kind {
                0 if cnt >= bits => 0,
                0 => lane(a, w, i) << cnt,
                1 if cnt >= bits => 0,
                1 => lane(a, w, i) >> cnt,
                _ => (slane(a, w, i) >> cnt.min(bits - 1)) as u64,
            })
        }
        M::Pslldq => {
            let n = u32::from(imm.min(16)) * 8;
            if n >= 128 {
                0
            } else {
                a << n
            }
        }
        M::Psrldq => {
            let n = u32::from(imm.min(16)) * 8;
            if n >= 128 {
                0
            } else {
                a >> n
            }
        }
        M::Pmullw => sw(2, &|x, y| x * y),
        M::Pmulhw => sw(2, &|x, y| (x * y) >> 16),
        M::Pmulhuw => ew(2, &|x, y| (x * y) >> 16),
        M::Pmaddwd => build(lanes(4), 4, |i| {
            let p = slane(a, 2, 2 * i) * slane(b, 2, 2 * i)
                + slane(a, 2, 2 * i + 1) * slane(b, 2, 2 * i + 1);
            p as u64
        }),
        M::Pmuludq => build(lanes(8), 8, |i| lane(a, 4, 2 * i) * lane(b, 4, 2 * i)),
        M::Psadbw => build(lanes(8), 8, |i| {
            (0..8)
                .map(|j| lane(a, 1, 8 * i + j).abs_diff(lane(b, 1, 8 * i + j)))
                .sum()
        }),
        M::Pavgb => ew(1, &|x, y| (x + y + 1) >> 1),
        M::Pavgw => ew(2, &|x, y| (x + y + 1) >> 1),
        M::Pminub => ew(1, &|x, y| x.min(y)),
        M::Pmaxub => ew(1, &|x, y| x.max(y)),
        M::Pminsw => sw(2, &|x, y| x.min(y)),
        M::Pmaxsw => sw(2, &|x, y| x.max(y)),
        M::Pshufb => build(nb, 1, |i| {
            let s = lane(b, 1, i);
            if s & 0x80 != 0 {
                0
            } else {
                lane(a, 1, (s as usize) & (nb - 1))
            }
        }),
        M::Phaddw | M::Phaddd | M::Phaddsw | M::Phsubw | M::Phsubd | M::Phsubsw => {
            let w = if matches!(m, M::Phaddd | M::Phsubd) {
                4
            } else {
                2
            };
            let n = lanes(w);
            build(n, w, |i| {
                let (src, k) = if i < n / 2 {
                    (a, 2 * i)
                } else {
                    (b, 2 * (i - n / 2))
                };
                let (x, y) = (slane(src, w, k), slane(src, w, k + 1));
                match m {
                    M::Phaddw | M::Phaddd => x.wrapping_add(y) as u64,
                    M::Phsubw | M::Phsubd => x.wrapping_sub(y) as u64,
                    M::Phaddsw => sat_s(x + y, 2),
                    _ => sat_s(x - y, 2),
                }
            })
        }
        M::Pmaddubsw => build(lanes(2), 2, |i| {
            let p = lane(a, 1, 2 * i) as i64 * slane(b, 1, 2 * i)
                + lane(a, 1, 2 * i + 1) as i64 * slane(b, 1, 2 * i + 1);
            sat_s(p, 2)
        }),
        M::Pmulhrsw => sw(2, &|x, y| (((x * y) >> 14) + 1) >> 1),
        M::Psignb | M::Psignw | M::Psignd => {
            let w = match m {
                M::Psignb => 1,
                M::Psignw => 2,
                _ => 4,
            };
            sw(w, &|x, y| match y.signum() {
                -1 => x.wrapping_neg(),
                0 => 0,
                _ => x,
            })
        }
        M::Pabsb => build(lanes(1), 1, |i| slane(b, 1, i).unsigned_abs()),
        M::Pabsw => build(lanes(2), 2, |i| slane(b, 2, i).unsigned_abs()),
        M::Pabsd => build(lanes(4), 4, |i| slane(b, 4, i).unsigned_abs()),
        M::Palignr => {
            // (a:b) >> imm*8, keeping nb bytes.
            let sh = usize::from(imm);
            build(nb, 1, |i| {
                let k = i + sh;
                if k < nb {
                    lane(b, 1, k)
                } else if k < 2 * nb {
                    lane(a, 1, k - nb)
                } else {
                    0
                }
            })
        }
        _ => a,
    }
}

fn is_mm(insn: &Instruction, i: u32) -> bool {
    matches!(loc(insn, i), Loc::Mm(_))
}

/// Executes a packed-integer or integer-move instruction.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let m = insn.mnemonic();
    let nb = if is_mm(insn, 0) { 8 } else { 16 };
    match m {
        M::Emms => Ok(()),
        M::Movd
        | M::Movq
        | M::Movdqa
        | M::Movdqu
        | M::Lddqu
        | M::Movntdq
        | M::Movnti
        | M::Movntq
        | M::Movq2dq
        | M::Movdq2q => {
            let v = ctx.vread(insn, 1)?;
            // MOVD/MOVQ zero-extend into XMM; MOVQ to a 64-bit destination keeps 64 bits.
            let v = match (m, loc(insn, 1)) {
                (M::Movd, _) => v & 0xffff_ffff,
                (M::Movq, Loc::Xmm(_)) | (M::Movdq2q, _) => v & u128::from(u64::MAX),
                _ => v,
            };
            let v = if m == M::Movq && matches!(loc(insn, 1), Loc::Gpr(_)) {
                v & u128::from(u64::MAX)
            } else {
                v
            };
            ctx.vwrite(insn, 0, v)
        }
        M::Pmovmskb => {
            let v = ctx.vread(insn, 1)?;
            let n = if is_mm(insn, 1) { 8 } else { 16 };
            let mask = (0..n).fold(0u64, |acc, i| acc | ((lane(v, 1, i) >> 7) << i));
            ctx.vwrite(insn, 0, u128::from(mask))
        }
        M::Maskmovq | M::Maskmovdqu => {
            // Operand 0 is the implicit DS:(E/R)DI destination (segment overridable).
            let data = ctx.vread(insn, 1)?;
            let mask = ctx.vread(insn, 2)?;
            let n = if m == M::Maskmovq { 8 } else { 16 };
            let seg = ctx.mem_seg(insn);
            let off = match insn.op0_kind() {
                iced_x86::OpKind::MemorySegDI => ctx.cpu.s.gpr[7] & 0xffff,
                iced_x86::OpKind::MemorySegEDI => ctx.cpu.s.gpr[7] & 0xffff_ffff,
                _ => ctx.cpu.s.gpr[7],
            };
            for i in 0..n {
                if lane(mask, 1, i) & 0x80 != 0 {
                    ctx.probe_write(seg, off.wrapping_add(i as u64), 1)?;
                }
            }
            for i in 0..n {
                if lane(mask, 1, i) & 0x80 != 0 {
                    ctx.write_mem(seg, off.wrapping_add(i as u64), 1, lane(data, 1, i))?;
                }
            }
            Ok(())
        }
        M::Pshufd | M::Pshufhw | M::Pshuflw | M::Pshufw => {
            let src = ctx.vread(insn, 1)?;
            let imm = insn.immediate8();
            let sel = |i: usize| usize::from((imm >> (2 * i)) & 3);
            let r = match m {
                M::Pshufd => build(4, 4, |i| lane(src, 4, sel(i))),
                M::Pshufw => build(4, 2, |i| lane(src, 2, sel(i))),
                M::Pshuflw => build(8, 2, |i| {
                    if i < 4 {
                        lane(src, 2, sel(i))
                    } else {
                        lane(src, 2, i)
                    }
                }),
                _ => build(8, 2, |i| {
                    if i >= 4 {
                        lane(src, 2, 4 + sel(i - 4))
                    } else {
                        lane(src, 2, i)
                    }
                }),
            };
            ctx.vwrite(insn, 0, r)
        }
        M::Pextrw => {
            let src = ctx.vread(insn, 1)?;
            let n = if is_mm(insn, 1) { 4 } else { 8 };
            let i = usize::from(insn.immediate8()) % n;
            ctx.vwrite(insn, 0, u128::from(lane(src, 2, i)))
        }
        M::Pinsrw => {
            let dst = ctx.vread(insn, 0)?;
            let v = ctx.vread(insn, 1)? & 0xffff;
            let n = nb / 2;
            let i = usize::from(insn.immediate8()) % n;
            let r = (dst & !(0xffffu128 << (16 * i))) | (v << (16 * i));
            ctx.vwrite(insn, 0, r)
        }
        M::Pslldq | M::Psrldq => {
            let a = ctx.vread(insn, 0)?;
            ctx.vwrite(insn, 0, binop(m, a, 0, 16, insn.immediate8()))
        }
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let b = if loc(insn, 1) == Loc::Imm {
                u128::from(insn.immediate8())
            } else {
                b
            };
            // The count is the low 64 bits of the source operand.
            let b = b & u128::from(u64::MAX);
            ctx.vwrite(insn, 0, binop(m, a, b, nb, 0))
        }
        _ => {
            let a = ctx.vread(insn, 0)?;
            let b = ctx.vread(insn, 1)?;
            let imm = if insn.op_count() > 2 {
                insn.immediate8()
            } else {
                0
            };
            let r = binop(m, a, b, nb, imm);
            if nb == 8 {
                ctx.vwrite(insn, 0, r & u128::from(u64::MAX))
            } else {
                ctx.vwrite(insn, 0, r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pshufb_sdm_example() {
        // Index 0x80 zeroes the byte; others select within the 16 bytes.
        let a: u128 = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;
        let b: u128 = 0x8000_0102_0304_0506_0708_090a_0b0c_0d0f;
        let r = binop(M::Pshufb, a, b, 16, 0);
        assert_eq!(r, 0x0000_0102_0304_0506_0708_090a_0b0c_0d0f);
    }

    #[test]
    fn pmaddwd_and_saturation() {
        let a: u128 = build(8, 2, |i| [1, 2, 3, 4, 0x8000, 0x8000, 7, 8][i]);
        let b: u128 = build(8, 2, |i| [5, 6, 7, 8, 0x8000, 0x8000, 1, 1][i]);
        let r = binop(M::Pmaddwd, a, b, 16, 0);
        assert_eq!(lane(r, 4, 0), 17);
        assert_eq!(lane(r, 4, 1), 53);
        // (-32768)^2 * 2 wraps to 0x80000000 (the documented PMADDWD corner case).
        assert_eq!(lane(r, 4, 2), 0x8000_0000);
        assert_eq!(lane(r, 4, 3), 15);
        assert_eq!(binop(M::Paddsw, 0x7fff, 1, 8, 0) & 0xffff, 0x7fff);
        assert_eq!(binop(M::Packuswb, 0xffff_0100, 0, 8, 0) & 0xff_ff, 0x00ff);
    }
}
