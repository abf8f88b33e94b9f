//! Control and debug registers: MOV to/from CR0/CR2/CR3/CR4/CR8 and DR0-DR7, LMSW/SMSW, CLTS,
//! INVLPG (SDM Vol. 3A §2.5, §2.7, §4.10.4 for TLB invalidation, §9.8.5 for IA-32e
//! activation; Vol. 2 MOV CR/DR pages).
//!
//! The shadow TLB is flushed exactly when hardware flushes: a CR3 write drops non-global
//! entries; changes of CR0.PG/WP/PE (and CD) or CR4.PGE/PAE/PSE/SMEP/SMAP drop everything.

use super::require_cpl0;
use crate::cpu::{cpuid, Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, OpKind, Register};
use jit::abi::{cr, sreg};

/// True for MOV forms whose operands include a control or debug register.
pub fn is_cr_dr(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        insn.op_kind(i) == OpKind::Register && {
            let r = insn.op_register(i);
            r.is_cr() || r.is_dr()
        }
    })
}

/// CR0 bits that exist (others are ignored on write, read as 0); bits 63:32 must be 0.
const CR0_DEFINED: u64 = cr::CR0_PE
    | cr::CR0_MP
    | cr::CR0_EM
    | cr::CR0_TS
    | cr::CR0_ET
    | cr::CR0_NE
    | cr::CR0_WP
    | cr::CR0_AM
    | cr::CR0_NW
    | cr::CR0_CD
    | cr::CR0_PG;

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// MOV to CR0 semantics (also LMSW and CLTS), with IA-32e activation (§9.8.5).
    pub fn set_cr0(&mut self, v: u64) -> Res<()> {
        if v >> 32 != 0 {
            return Err(Fault::Gp(0));
        }
        let new = (v & CR0_DEFINED) | cr::CR0_ET;
        if (new & cr::CR0_PG != 0 && new & cr::CR0_PE == 0)
            || (new & cr::CR0_NW != 0 && new & cr::CR0_CD == 0)
        {
            return Err(Fault::Gp(0));
        }
        let old = self.cpu.s.cr0;
        let s = &self.cpu.s;
        let mut efer = s.efer;
        if new & cr::CR0_PG != 0 && old & cr::CR0_PG == 0 && s.efer & cr::EFER_LME != 0 {
            // Activating IA-32e mode needs PAE and a non-64-bit CS (§9.8.5).
            if s.cr4 & cr::CR4_PAE == 0 || s.seg[sreg::CS].long() {
                return Err(Fault::Gp(0));
            }
            efer |= cr::EFER_LMA;
        }
        if new & cr::CR0_PG == 0 && old & cr::CR0_PG != 0 && s.efer & cr::EFER_LMA != 0 {
            // Leaving IA-32e mode is only possible from compatibility mode.
            if self.cpu.mode64() {
                return Err(Fault::Gp(0));
            }
            efer &= !cr::EFER_LMA;
        }
        if new & cr::CR0_PE == 0 && efer & cr::EFER_LMA != 0 {
            return Err(Fault::Gp(0));
        }
        self.cpu.s.cr0 = new;
        self.cpu.s.efer = efer;
        if (old ^ new) & (cr::CR0_PG | cr::CR0_WP | cr::CR0_PE | cr::CR0_CD) != 0 {
            self.cpu.tlb.flush_all();
        }
        Ok(())
    }

    /// MOV to CR3: non-global TLB entries are flushed (§4.10.4.1).
    pub fn set_cr3(&mut self, v: u64) -> Res<()> {
        let v = if self.cpu.long_mode() {
            if v & !((1u64 << cpuid::PHYS_BITS) - 1) != 0 {
                return Err(Fault::Gp(0));
            }
            v
        } else {
            v & 0xffff_ffff
        };
        self.cpu.s.cr3 = v;
        self.cpu.tlb.flush_non_global();
        Ok(())
    }

    /// MOV to CR4: reserved or unadvertised bits #GP(0); PAE may not be cleared in IA-32e mode.
    pub fn set_cr4(&mut self, v: u64) -> Res<()> {
        if v & cpuid::cr4_reserved() != 0 {
            return Err(Fault::Gp(0));
        }
        let old = self.cpu.s.cr4;
        if self.cpu.long_mode() && v & cr::CR4_PAE == 0 {
            return Err(Fault::Gp(0));
        }
        self.cpu.s.cr4 = v;
        let flush = cr::CR4_PGE | cr::CR4_PAE | cr::CR4_PSE | cr::CR4_SMEP | cr::CR4_SMAP;
        if (old ^ v) & flush != 0 {
            self.cpu.tlb.flush_all();
        }
        Ok(())
    }
}

/// MOV r, CRn / MOV CRn, r / MOV r, DRn / MOV DRn, r. CPL 0 only (#GP(0) in V86 mode).
pub fn mov_cr_dr<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_cpl0(ctx)?;
    let (r0, r1) = (insn.op_register(0), insn.op_register(1));
    let wide = ctx.cpu.mode64();
    let m = if wide { u64::MAX } else { 0xffff_ffff };
    if r0.is_cr() {
        let v = ctx.reg(r1) & m;
        match r0 {
            Register::CR0 => ctx.set_cr0(v),
            Register::CR2 => {
                ctx.cpu.s.cr2 = v;
                Ok(())
            }
            Register::CR3 => ctx.set_cr3(v),
            Register::CR4 => ctx.set_cr4(v),
            Register::CR8 if wide => {
                if v > 15 {
                    return Err(Fault::Gp(0));
                }
                ctx.cpu.s.cr8 = v;
                Ok(())
            }
            _ => Err(Fault::Ud),
        }
    } else if r1.is_cr() {
        let v = match r1 {
            Register::CR0 => ctx.cpu.s.cr0,
            Register::CR2 => ctx.cpu.s.cr2,
            Register::CR3 => ctx.cpu.s.cr3,
            Register::CR4 => ctx.cpu.s.cr4,
            Register::CR8 if wide => ctx.cpu.s.cr8,
            _ => return Err(Fault::Ud),
        };
        ctx.set_reg(r0, v & m);
        Ok(())
    } else {
        // General detect (SDM Vol. 3B §18.2.4): with DR7.GD set, any MOV DR is a #DB fault
        // with DR6.BD set; GD is cleared so that the handler can use the debug registers.
        if ctx.cpu.s.dr[7] & crate::cpu::debug::DR7_GD != 0 {
            ctx.cpu.s.dr[7] &= !crate::cpu::debug::DR7_GD;
            ctx.cpu.s.dr[6] |= crate::cpu::debug::DR6_BD;
            return Err(Fault::Db);
        }
        // Debug registers (§17.2). DR4/DR5 alias DR6/DR7 unless CR4.DE.
        let dr_index = |r: Register| -> Res<usize> {
            let n = r as usize - Register::DR0 as usize;
            match n {
                0..=3 | 6 | 7 => Ok(n),
                4 | 5 if ctx.cpu.s.cr4 & cr::CR4_DE == 0 => Ok(n + 2),
                _ => Err(Fault::Ud),
            }
        };
        if r0.is_dr() {
            let n = dr_index(r0)?;
            let v = ctx.reg(r1) & m;
            if n >= 6 && v >> 32 != 0 {
                return Err(Fault::Gp(0));
            }
            ctx.cpu.s.dr[n] = match n {
                // DR6: bits 4-11 and 16-31 read as 1 (bit 12 as 0).
                6 => (v & 0xe00f) | 0xffff_0ff0,
                // DR7: bit 10 reads as 1, bits 11-12, 14-15 as 0.
                7 => (v & !0xd800) | 0x400,
                _ => v,
            };
        } else {
            let n = dr_index(r1)?;
            let v = ctx.cpu.s.dr[n] & m;
            ctx.set_reg(r0, v);
        }
        Ok(())
    }
}

/// LMSW r/m16: loads CR0 bits 0-3; cannot clear PE (SDM Vol. 2 LMSW).
pub fn lmsw<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_cpl0(ctx)?;
    let v = match insn.op_kind(0) {
        OpKind::Memory => {
            let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
            ctx.read_mem(s, o, 2)?
        }
        _ => ctx.reg(insn.op_register(0)),
    };
    let old = ctx.cpu.s.cr0;
    let new = (old & !0xe) | (v & 0xf) | (old & cr::CR0_PE);
    ctx.set_cr0(new)
}

/// SMSW: stores CR0 (low 16 bits to memory; the register form stores CR0 zero-extended to
/// the operand size). Not privileged without UMIP.
pub fn smsw<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let v = ctx.cpu.s.cr0;
    match insn.op_kind(0) {
        OpKind::Memory => {
            let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
            ctx.write_mem(s, o, 2, v & 0xffff)
        }
        _ => {
            ctx.set_reg(insn.op_register(0), v);
            Ok(())
        }
    }
}

/// CLTS: clears CR0.TS.
pub fn clts<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    require_cpl0(ctx)?;
    ctx.cpu.s.cr0 &= !cr::CR0_TS;
    Ok(())
}

/// INVLPG m: drops the TLB entries for the page of the operand's linear address. No segment
/// limit or canonical faults (SDM Vol. 2 INVLPG: a non-canonical address is a no-op).
pub fn invlpg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    require_cpl0(ctx)?;
    if insn.op_kind(0) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    let la = if ctx.cpu.mode64() {
        let base = if seg == sreg::FS || seg == sreg::GS {
            ctx.cpu.s.seg[seg].base
        } else {
            0
        };
        base.wrapping_add(off)
    } else {
        ctx.cpu.s.seg[seg].base.wrapping_add(off) & 0xffff_ffff
    };
    ctx.cpu.tlb.invlpg(la);
    Ok(())
}
