//! SSE state management: LDMXCSR/STMXCSR (SDM Vol. 1 §10.2.3) and FXSAVE/FXRSTOR (Vol. 2A
//! "FXSAVE", Tables 10-2 and 10-3: 512-byte image, abridged tag word, 32- vs 64-bit FIP/FDP).

use super::{check, xmm_get, xmm_split};
use crate::cpu::fpu::{slot_get, slot_set, tag_of, FpuExt, TAG_EMPTY};
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, Mnemonic as M};

/// MXCSR bits that may be set (MXCSR_MASK with DAZ supported, §11.6.6).
pub const MXCSR_MASK: u32 = 0xffff;

/// Executes LDMXCSR, STMXCSR, FXSAVE(64), FXRSTOR(64).
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    let m = insn.mnemonic();
    let r = match m {
        M::Ldmxcsr => check(ctx, false, true).and_then(|_| {
            let v = ctx.read_op(insn, 0)? as u32;
            if v & !MXCSR_MASK != 0 {
                return Err(Fault::Gp(0));
            }
            ctx.cpu.s.mxcsr = v;
            Ok(())
        }),
        M::Stmxcsr => check(ctx, false, true).and_then(|_| {
            let v = ctx.cpu.s.mxcsr;
            ctx.write_op(insn, 0, u64::from(v))
        }),
        M::Fxsave | M::Fxsave64 => fxsave(ctx, insn, m == M::Fxsave64),
        // SSE/SSE2 cache-control hints and fences: architecturally no-ops for a
        // sequentially consistent interpreter (SDM Vol. 1 §10.4.6, §11.4.4).
        M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Sfence
        | M::Lfence
        | M::Mfence => Ok(()),
        // CLFLUSH: faults like a byte load of the line (SDM Vol. 2A "CLFLUSH"); no cache.
        M::Clflush => {
            let seg = ctx.mem_seg(insn);
            let off = ctx.ea(insn);
            ctx.read_mem(seg, off, 1).map(|_| ())
        }
        M::Fxrstor | M::Fxrstor64 => fxrstor(ctx, insn, m == M::Fxrstor64),
        _ => return None,
    };
    Some(r)
}

fn fx_check<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<(usize, u64)> {
    // FXSAVE/FXRSTOR: #NM on CR0.TS or CR0.EM; not gated by CR4.OSFXSR (which only controls
    // whether the XMM part is saved, §10.5.1 — rinx always saves it).
    if ctx.cpu.s.cr0 & (jit::abi::cr::CR0_TS | jit::abi::cr::CR0_EM) != 0 {
        return Err(Fault::Nm);
    }
    let off = ctx.ea(insn);
    if off & 15 != 0 {
        return Err(Fault::Gp(0));
    }
    Ok((ctx.mem_seg(insn), off))
}

fn nregs<P: Platform + ?Sized>(ctx: &Ctx<'_, P>) -> usize {
    if ctx.cpu.mode64() {
        16
    } else {
        8
    }
}

fn fxsave<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction, w64: bool) -> Res<()> {
    let (seg, off) = fx_check(ctx, insn)?;
    let f = ctx.cpu.s.fpu;
    let mut img = vec![0u8; 512];
    img[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    img[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    img[4] = (0..8).fold(0u8, |acc, p| acc | (u8::from(f.tag(p) != TAG_EMPTY) << p));
    img[6..8].copy_from_slice(&(f.fop & 0x7ff).to_le_bytes());
    if w64 {
        img[8..16].copy_from_slice(&f.fip.to_le_bytes());
        img[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    } else {
        img[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
        img[12..14].copy_from_slice(&f.fcs.to_le_bytes());
        img[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        img[20..22].copy_from_slice(&f.fds.to_le_bytes());
    }
    img[24..28].copy_from_slice(&ctx.cpu.s.mxcsr.to_le_bytes());
    img[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    for i in 0..8 {
        let v = slot_get(&f.st[f.phys(i)]);
        img[32 + 16 * i..42 + 16 * i].copy_from_slice(&v.to_le_bytes()[..10]);
    }
    for i in 0..nregs(ctx) {
        img[160 + 16 * i..176 + 16 * i].copy_from_slice(&xmm_get(&ctx.cpu.s.xmm[i]).to_le_bytes());
    }
    ctx.write_mem_bytes(seg, off, &img)
}

fn fxrstor<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction, w64: bool) -> Res<()> {
    let (seg, off) = fx_check(ctx, insn)?;
    let mut img = vec![0u8; 512];
    ctx.read_mem_bytes(seg, off, &mut img)?;
    let r16 = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
    let r32 = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap_or([0; 4]));
    let r64 = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap_or([0; 8]));
    let mxcsr = r32(24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::Gp(0));
    }
    let mut f = ctx.cpu.s.fpu;
    f.fcw = r16(0);
    f.fsw = r16(2);
    f.fop = r16(6) & 0x7ff;
    if w64 {
        f.fip = r64(8);
        f.fdp = r64(16);
    } else {
        f.fip = u64::from(r32(8));
        f.fcs = r16(12);
        f.fdp = u64::from(r32(16));
        f.fds = r16(20);
    }
    for i in 0..8 {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&img[32 + 16 * i..42 + 16 * i]);
        let p = f.phys(i);
        slot_set(&mut f.st[p], u128::from_le_bytes(b));
    }
    // Rebuild the full tag word from the abridged one and the register contents.
    let abr = img[4];
    for p in 0..8 {
        let t = if abr & (1 << p) == 0 {
            TAG_EMPTY
        } else {
            tag_of(slot_get(&f.st[p]))
        };
        f.set_tag(p, t);
    }
    crate::cpu::fpu::x87::update_es(&mut f);
    ctx.cpu.s.fpu = f;
    ctx.cpu.s.mxcsr = mxcsr;
    for i in 0..nregs(ctx) {
        let mut b = [0u8; 16];
        b.copy_from_slice(&img[160 + 16 * i..176 + 16 * i]);
        ctx.cpu.s.xmm[i] = xmm_split(u128::from_le_bytes(b));
    }
    Ok(())
}
