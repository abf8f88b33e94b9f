//! MMX, SSE, SSE2, SSE3, SSSE3, SSE4.1 and SSE4.2 instructions (Intel SDM Vol. 1 chapters 9-12).
//!
//! Values are handled as `u128` (XMM) or the low 64 bits of one (MMX). Every instruction
//! checks its availability first (§9.6, §13.1: CR0.EM, CR0.TS, CR4.OSFXSR), reads all sources
//! (faults leave state unchanged), computes, reports SIMD floating-point exceptions (§11.5.1)
//! and only then writes its destination.

pub mod float;
pub mod int;
pub mod pcmpstr;
pub mod sse4;
pub mod state;

use super::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use jit::abi::cr;

/// Where an operand lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    Xmm(usize),
    Mm(usize),
    Gpr(Register),
    Mem,
    Imm,
}

/// Classifies operand `i`.
pub fn loc(insn: &Instruction, i: u32) -> Loc {
    match insn.op_kind(i) {
        OpKind::Register => {
            let r = insn.op_register(i);
            if r.is_xmm() {
                Loc::Xmm(r as usize - Register::XMM0 as usize)
            } else if r.is_mm() {
                Loc::Mm(r as usize - Register::MM0 as usize)
            } else {
                Loc::Gpr(r)
            }
        }
        OpKind::Memory => Loc::Mem,
        _ => Loc::Imm,
    }
}

fn uses_mmx(insn: &Instruction) -> bool {
    insn.mnemonic() == Mnemonic::Emms
        || (0..insn.op_count()).any(|i| matches!(loc(insn, i), Loc::Mm(_)))
}

/// Instructions whose 128-bit memory operand need not be 16-byte aligned (§12.4 / Vol. 2).
fn unaligned_ok(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Movups
            | Mnemonic::Movupd
            | Mnemonic::Movdqu
            | Mnemonic::Lddqu
            | Mnemonic::Maskmovdqu
            // SSE4.2 string instructions (SDM Vol. 2B §4.1.1: no alignment requirement).
            | Mnemonic::Pcmpestri
            | Mnemonic::Pcmpestri64
            | Mnemonic::Pcmpestrm
            | Mnemonic::Pcmpestrm64
            | Mnemonic::Pcmpistri
            | Mnemonic::Pcmpistrm
    )
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Reads operand `i` as a vector (XMM, MMX, GPR, memory zero-extended, or immediate).
    /// 16-byte memory operands of aligned forms fault with #GP(0) when misaligned (§11.4.1).
    pub fn vread(&mut self, insn: &Instruction, i: u32) -> Res<u128> {
        match loc(insn, i) {
            Loc::Xmm(x) => Ok(xmm_get(&self.cpu.s.xmm[x])),
            Loc::Mm(m) => Ok(u128::from(mm_get(&self.cpu.s.fpu, m))),
            Loc::Gpr(r) => Ok(u128::from(self.reg(r))),
            Loc::Imm => Ok(u128::from(insn.immediate(i))),
            Loc::Mem => {
                let size = insn.memory_size().size();
                let seg = self.mem_seg(insn);
                let off = self.ea(insn);
                if size == 16 && off & 15 != 0 && !unaligned_ok(insn.mnemonic()) {
                    return Err(Fault::Gp(0));
                }
                let mut b = [0u8; 16];
                self.read_mem_bytes(seg, off, &mut b[..size.clamp(1, 16)])?;
                Ok(u128::from_le_bytes(b))
            }
        }
    }

    /// Writes operand `i`: XMM (all 128 bits), MMX (64 bits, with the x87 aliasing effects),
    /// GPR (by its size) or memory (the operand's memory size).
    pub fn vwrite(&mut self, insn: &Instruction, i: u32, v: u128) -> Res<()> {
        match loc(insn, i) {
            Loc::Xmm(x) => {
                self.cpu.s.xmm[x] = xmm_split(v);
                Ok(())
            }
            Loc::Mm(m) => {
                mm_set(&mut self.cpu.s.fpu, m, v as u64);
                Ok(())
            }
            Loc::Gpr(r) => {
                self.set_reg(r, v as u64);
                Ok(())
            }
            Loc::Mem => {
                let size = insn.memory_size().size();
                let seg = self.mem_seg(insn);
                let off = self.ea(insn);
                if size == 16 && off & 15 != 0 && !unaligned_ok(insn.mnemonic()) {
                    return Err(Fault::Gp(0));
                }
                self.write_mem_bytes(seg, off, &v.to_le_bytes()[..size.clamp(1, 16)])
            }
            Loc::Imm => Err(Fault::Ud),
        }
    }
}

/// XMM register as one 128-bit value.
#[inline]
pub fn xmm_get(x: &[u64; 2]) -> u128 {
    u128::from(x[0]) | (u128::from(x[1]) << 64)
}

/// Splits a 128-bit value into the XMM representation.
#[inline]
pub fn xmm_split(v: u128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}

/// Reads MMi: the significand of physical x87 register i (§9.2.1).
#[inline]
pub fn mm_get(f: &jit::abi::FpuState, i: usize) -> u64 {
    u64::from_le_bytes(f.st[i][..8].try_into().unwrap_or([0; 8]))
}

/// Writes MMi: significand = v, exponent and sign all ones (§9.5.1).
#[inline]
pub fn mm_set(f: &mut jit::abi::FpuState, i: usize, v: u64) {
    f.st[i][..8].copy_from_slice(&v.to_le_bytes());
    f.st[i][8] = 0xff;
    f.st[i][9] = 0xff;
}

/// Checks availability of an MMX/SSE instruction (SDM Vol. 3A Table 2-2 / Table 13-1 and
/// Vol. 1 §9.6): CR0.EM -> #UD; SSE with CR4.OSFXSR = 0 -> #UD; CR0.TS -> #NM; MMX with a
/// pending x87 exception -> #MF.
fn check<P: Platform + ?Sized>(ctx: &Ctx<'_, P>, mmx: bool, sse: bool) -> Res<()> {
    let s = &ctx.cpu.s;
    if s.cr0 & cr::CR0_EM != 0 {
        return Err(Fault::Ud);
    }
    if sse && s.cr4 & cr::CR4_OSFXSR == 0 {
        return Err(Fault::Ud);
    }
    if s.cr0 & cr::CR0_TS != 0 {
        return Err(Fault::Nm);
    }
    if mmx && s.fpu.fsw & crate::cpu::fpu::ES != 0 {
        return Err(Fault::Mf);
    }
    Ok(())
}

/// The x87-to-MMX transition done by every MMX instruction (§9.5.1): TOP = 0, all tags valid.
fn mmx_transition(f: &mut jit::abi::FpuState) {
    f.fsw &= !0x3800;
    f.ftw = 0;
}

/// Executes `insn` if it is an MMX/SSE instruction this module implements.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    let m = insn.mnemonic();
    if let Some(r) = state::exec(ctx, insn) {
        return Some(r);
    }
    let kind = if int::handles(m) {
        0
    } else if float::handles(m) {
        1
    } else if sse4::handles(m) {
        2
    } else {
        return None;
    };
    if insn.has_lock_prefix() {
        return Some(Err(Fault::Ud));
    }
    let mmx = uses_mmx(insn);
    // MOVNTI (a GPR store) is not gated by CR4.OSFXSR.
    let sse = m != Mnemonic::Movnti
        && (!mmx || (0..insn.op_count()).any(|i| matches!(loc(insn, i), Loc::Xmm(_))));
    if let Err(e) = check(ctx, mmx, sse) {
        return Some(Err(e));
    }
    let r = match kind {
        0 => int::exec(ctx, insn),
        1 => float::exec(ctx, insn),
        _ => sse4::exec(ctx, insn),
    };
    if r.is_ok() && mmx {
        // EMMS also resets TOP (observed on hardware), then empties every register.
        mmx_transition(&mut ctx.cpu.s.fpu);
        if m == Mnemonic::Emms {
            ctx.cpu.s.fpu.ftw = 0xffff;
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sse4;
