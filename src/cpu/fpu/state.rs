//! x87 environment and state images: FNINIT, FSTENV/FLDENV, FSAVE/FRSTOR (SDM Vol. 1 §8.1.10,
//! Figures 8-9 to 8-12: 14/28-byte environments, 94/108-byte states, real and protected mode).

use super::{slot_get, slot_set, tag_of, FpuExt, TAG_EMPTY};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, MemorySize};
use jit::abi::FpuState;

/// FNINIT (SDM Vol. 2A "FINIT/FNINIT"): FCW = 037FH, FSW = 0, all tags empty, pointers 0.
pub fn finit(f: &mut FpuState) {
    f.fcw = 0x037f;
    f.fsw = 0;
    f.ftw = 0xffff;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
    f.fcs = 0;
    f.fds = 0;
}

fn env_bytes(f: &FpuState, big: bool, real: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(28);
    let w16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let w32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    let fop = u32::from(f.fop & 0x7ff);
    if big {
        w32(&mut v, u32::from(f.fcw) | 0xffff_0000);
        w32(&mut v, u32::from(f.fsw) | 0xffff_0000);
        w32(&mut v, u32::from(f.ftw) | 0xffff_0000);
        if real {
            w32(&mut v, (f.fip as u32 & 0xffff) | 0xffff_0000);
            w32(&mut v, ((f.fip as u32 >> 16) << 12) | fop);
            w32(&mut v, (f.fdp as u32 & 0xffff) | 0xffff_0000);
            w32(&mut v, (f.fdp as u32 >> 16) << 12);
        } else {
            w32(&mut v, f.fip as u32);
            w32(&mut v, u32::from(f.fcs) | (fop << 16));
            w32(&mut v, f.fdp as u32);
            w32(&mut v, u32::from(f.fds) | 0xffff_0000);
        }
    } else {
        w16(&mut v, f.fcw);
        w16(&mut v, f.fsw);
        w16(&mut v, f.ftw);
        if real {
            w16(&mut v, f.fip as u16);
            w16(&mut v, (((f.fip >> 16) as u16 & 0xf) << 12) | fop as u16);
            w16(&mut v, f.fdp as u16);
            w16(&mut v, ((f.fdp >> 16) as u16 & 0xf) << 12);
        } else {
            w16(&mut v, f.fip as u16);
            w16(&mut v, f.fcs);
            w16(&mut v, f.fdp as u16);
            w16(&mut v, f.fds);
        }
    }
    v
}

fn is_real<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> bool {
    !ctx.cpu.protected() || ctx.cpu.v86()
}

fn is_big(insn: &Instruction) -> bool {
    matches!(
        insn.memory_size(),
        MemorySize::FpuEnv28 | MemorySize::FpuState108
    )
}

/// FNSTENV (save = false) / FNSAVE (save = true).
pub fn fstenv<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    insn: &Instruction,
    save: bool,
) -> Res<()> {
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    let f = ctx.cpu.s.fpu;
    let mut img = env_bytes(&f, is_big(insn), is_real(ctx));
    if save {
        for i in 0..8 {
            let v = slot_get(&f.st[f.phys(i)]);
            img.extend_from_slice(&v.to_le_bytes()[..10]);
        }
    }
    ctx.write_mem_bytes(seg, off, &img)?;
    let f = &mut ctx.cpu.s.fpu;
    if save {
        finit(f);
    } else {
        f.fcw |= 0x3f;
    }
    Ok(())
}

/// FLDENV (restore = false) / FRSTOR (restore = true).
pub fn fldenv<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    insn: &Instruction,
    restore: bool,
) -> Res<()> {
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    let big = is_big(insn);
    let env_len = if big { 28 } else { 14 };
    let mut img = vec![0u8; env_len + if restore { 80 } else { 0 }];
    ctx.read_mem_bytes(seg, off, &mut img)?;
    let real = is_real(ctx);
    let r16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
    let r32 = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
    let mut f = ctx.cpu.s.fpu;
    if big {
        f.fcw = r16(0);
        f.fsw = r16(4);
        f.ftw = r16(8);
        if real {
            f.fip = u64::from((r32(12) & 0xffff) | ((r32(16) >> 12) << 16));
            f.fop = (r32(16) & 0x7ff) as u16;
            f.fdp = u64::from((r32(20) & 0xffff) | ((r32(24) >> 12) << 16));
        } else {
            f.fip = u64::from(r32(12));
            f.fcs = r16(16);
            f.fop = (r32(16) >> 16) as u16 & 0x7ff;
            f.fdp = u64::from(r32(20));
            f.fds = r16(24);
        }
    } else {
        f.fcw = r16(0);
        f.fsw = r16(2);
        f.ftw = r16(4);
        if real {
            f.fip = u64::from(r16(6)) | (u64::from(r16(8) >> 12) << 16);
            f.fop = r16(8) & 0x7ff;
            f.fdp = u64::from(r16(10)) | (u64::from(r16(12) >> 12) << 16);
        } else {
            f.fip = u64::from(r16(6));
            f.fcs = r16(8);
            f.fdp = u64::from(r16(10));
            f.fds = r16(12);
        }
    }
    if restore {
        for i in 0..8 {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&img[env_len + i * 10..env_len + i * 10 + 10]);
            let p = f.phys(i);
            slot_set(&mut f.st[p], u128::from_le_bytes(b));
        }
    }
    // Non-empty tags are recomputed from the register contents.
    for p in 0..8 {
        if f.tag(p) != TAG_EMPTY {
            f.set_tag(p, tag_of(slot_get(&f.st[p])));
        }
    }
    super::x87::update_es(&mut f);
    ctx.cpu.s.fpu = f;
    Ok(())
}
