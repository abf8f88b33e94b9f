//! Shifts and rotates: ROL, ROR, RCL, RCR, SHL/SAL, SHR, SAR (Intel SDM Vol. 2B
//! "RCL/RCR/ROL/ROR" and "SAL/SAR/SHL/SHR").
//!
//! The count is masked to 5 bits (6 bits with a 64-bit operand). A masked count of 0 changes
//! no flag and no value (a 32-bit register destination is still zero-extended in 64-bit mode). OF is defined only for a count of 1; for larger counts this model
//! gives the OF of the last 1-bit step (what the 286 and QEMU produce). AF is undefined for shifts
//! with a non-zero count and is cleared.

use super::set_flags;
use crate::cpu::flags::{self, mask, sign_bit};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic};
use jit::abi::flags as fl;

/// Result of one shift or rotate: value, flags, and which flags it defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftOut {
    pub value: u64,
    pub flags: u64,
    pub which: u64,
}

/// Computes `op value, count` for an operand of `size` bytes with carry-in `cf` (0 or 1).
/// `count` must already be masked and non-zero.
pub fn compute(m: Mnemonic, a: u64, count: u32, size: u32, cf: u64) -> ShiftOut {
    let bits = size * 8;
    let mk = mask(size);
    let a = a & mk;
    let msb = |v: u64| u64::from(v & sign_bit(size) != 0);
    let c = count;
    match m {
        Mnemonic::Shl | Mnemonic::Sal => {
            let full = u128::from(a) << c;
            let r = (full as u64) & mk;
            let cfo = ((full >> bits) & 1) as u64;
            let of = msb(r) ^ cfo;
            let f = flags::szp(r, size) | (cfo * fl::CF) | (of * fl::OF);
            ShiftOut {
                value: r,
                flags: f,
                which: fl::STATUS,
            }
        }
        Mnemonic::Shr => {
            let r = a >> c;
            let cfo = (a >> (c - 1)) & 1;
            // OF of the last 1-bit step: MSB before it XOR MSB after it (= MSB(a) for 1).
            let of = msb(a >> (c - 1)) ^ msb(r);
            let f = flags::szp(r, size) | (cfo * fl::CF) | (of * fl::OF);
            ShiftOut {
                value: r,
                flags: f,
                which: fl::STATUS,
            }
        }
        Mnemonic::Sar => {
            let s = super::sext(a, size) as i64;
            let r = (s >> c.min(63)) as u64 & mk;
            let cfo = ((s >> (c - 1).min(63)) & 1) as u64;
            let f = flags::szp(r, size) | (cfo * fl::CF);
            ShiftOut {
                value: r,
                flags: f,
                which: fl::STATUS,
            }
        }
        Mnemonic::Rol => {
            let t = c % bits;
            let r = if t == 0 {
                a
            } else {
                ((a << t) | (a >> (bits - t))) & mk
            };
            let cfo = r & 1;
            let of = msb(r) ^ cfo;
            ShiftOut {
                value: r,
                flags: (cfo * fl::CF) | (of * fl::OF),
                which: fl::CF | fl::OF,
            }
        }
        Mnemonic::Ror => {
            let t = c % bits;
            let r = if t == 0 {
                a
            } else {
                ((a >> t) | (a << (bits - t))) & mk
            };
            let cfo = msb(r);
            let of = msb(r) ^ msb(r << 1);
            ShiftOut {
                value: r,
                flags: (cfo * fl::CF) | (of * fl::OF),
                which: fl::CF | fl::OF,
            }
        }
        Mnemonic::Rcl => {
            // Rotate the (bits+1)-bit quantity CF:value left.
            let w = bits + 1;
            let t = if size <= 2 { c % w } else { c };
            let x = (u128::from(cf) << bits) | u128::from(a);
            let wm = (1u128 << w) - 1;
            let y = if t == 0 {
                x
            } else {
                ((x << t) | (x >> (w - t))) & wm
            };
            let r = (y as u64) & mk;
            let cfo = ((y >> bits) & 1) as u64;
            let of = msb(r) ^ cfo;
            ShiftOut {
                value: r,
                flags: (cfo * fl::CF) | (of * fl::OF),
                which: fl::CF | fl::OF,
            }
        }
        _ => {
            // RCR: OF is computed from the operand before the rotate.
            let w = bits + 1;
            let t = if size <= 2 { c % w } else { c };
            let x = (u128::from(cf) << bits) | u128::from(a);
            let wm = (1u128 << w) - 1;
            let y = if t == 0 {
                x
            } else {
                ((x >> t) | (x << (w - t))) & wm
            };
            let r = (y as u64) & mk;
            let cfo = ((y >> bits) & 1) as u64;
            let of = msb(r) ^ msb(r << 1);
            ShiftOut {
                value: r,
                flags: (cfo * fl::CF) | (of * fl::OF),
                which: fl::CF | fl::OF,
            }
        }
    }
}

/// ROL/ROR/RCL/RCR/SHL/SAL/SHR/SAR r/m, 1 / CL / imm8.
pub fn shift<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let raw = if insn.op_count() > 1 {
        ctx.read_op(insn, 1)?
    } else {
        1
    };
    let count = (raw & if size == 8 { 0x3f } else { 0x1f }) as u32;
    let a = ctx.read_op(insn, 0)?;
    if count == 0 {
        // No flags change, but a 32-bit register destination is still written, so its upper
        // half is cleared in 64-bit mode (as processors do).
        if insn.op0_kind() == iced_x86::OpKind::Register {
            ctx.write_op(insn, 0, a)?;
        }
        return Ok(());
    }
    let cf = ctx.cpu.s.rflags & fl::CF;
    let o = compute(insn.mnemonic(), a, count, size, cf);
    ctx.write_op(insn, 0, o.value)?;
    set_flags(ctx, o.which, o.flags);
    Ok(())
}
