//! Segment descriptors and segment-register loads (Intel SDM Vol. 3A §3.4-§3.5, §5.5-§5.8,
//! and the MOV/POP/LDS pages of Vol. 2).
//!
//! A load in protected mode reads the descriptor from the GDT or LDT (system access, so a CPL 3
//! load still reads supervisor pages), checks it, sets its accessed bit and fills the hidden
//! cache ([`Segment`]). Real-address and virtual-8086 loads only set the selector and base; the
//! cached limit is kept in real mode, which gives "unreal" mode (§20.1.1).

use super::flags::mask;
use super::operand::sreg_index;
use super::{Ctx, Fault, Platform, Res};
use iced_x86::{Code, Instruction, OpKind};
use jit::abi::{sreg, Segment};

/// Descriptor types of system descriptors (S = 0), SDM Vol. 3A §3.5, Table 3-2.
pub mod sys {
    /// 16-bit available TSS.
    pub const TSS16_AVAIL: u8 = 1;
    /// LDT.
    pub const LDT: u8 = 2;
    /// 16-bit busy TSS.
    pub const TSS16_BUSY: u8 = 3;
    /// 16-bit call gate.
    pub const CALL16: u8 = 4;
    /// Task gate.
    pub const TASK: u8 = 5;
    /// 16-bit interrupt gate.
    pub const INT16: u8 = 6;
    /// 16-bit trap gate.
    pub const TRAP16: u8 = 7;
    /// 32/64-bit available TSS.
    pub const TSS_AVAIL: u8 = 9;
    /// 32/64-bit busy TSS.
    pub const TSS_BUSY: u8 = 11;
    /// 32/64-bit call gate.
    pub const CALL: u8 = 12;
    /// 32/64-bit interrupt gate.
    pub const INT: u8 = 14;
    /// 32/64-bit trap gate.
    pub const TRAP: u8 = 15;
}

/// A raw 8-byte descriptor (plus the upper 8 bytes of a 16-byte IA-32e system descriptor or
/// gate), SDM Vol. 3A §3.4.5 Figure 3-8, §5.8.3.1, §6.14.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    pub raw: u64,
    pub hi: u64,
}

impl Desc {
    /// Type field (bits 40-43).
    #[inline]
    pub fn typ(&self) -> u8 {
        ((self.raw >> 40) & 0xf) as u8
    }
    /// S flag: code/data (true) or system (false).
    #[inline]
    pub fn s(&self) -> bool {
        self.raw & (1 << 44) != 0
    }
    /// Descriptor privilege level.
    #[inline]
    pub fn dpl(&self) -> u8 {
        ((self.raw >> 45) & 3) as u8
    }
    /// Present flag.
    #[inline]
    pub fn present(&self) -> bool {
        self.raw & (1 << 47) != 0
    }
    /// Code segment (S = 1, type bit 3).
    #[inline]
    pub fn is_code(&self) -> bool {
        self.s() && self.typ() & 8 != 0
    }
    /// Data segment (S = 1, type bit 3 clear).
    #[inline]
    pub fn is_data(&self) -> bool {
        self.s() && self.typ() & 8 == 0
    }
    /// Conforming code segment.
    #[inline]
    pub fn conforming(&self) -> bool {
        self.is_code() && self.typ() & 4 != 0
    }
    /// Readable (code) or always (data).
    #[inline]
    pub fn readable(&self) -> bool {
        self.is_data() || (self.is_code() && self.typ() & 2 != 0)
    }
    /// Writable data segment.
    #[inline]
    pub fn writable(&self) -> bool {
        self.is_data() && self.typ() & 2 != 0
    }
    /// L flag (64-bit code).
    #[inline]
    pub fn l(&self) -> bool {
        self.raw & (1 << 53) != 0
    }
    /// D/B flag.
    #[inline]
    pub fn db(&self) -> bool {
        self.raw & (1 << 54) != 0
    }
    /// Segment base (bits 16-39, 56-63; plus bits 32-63 of `hi` for 16-byte descriptors when
    /// `wide`).
    pub fn base(&self, wide: bool) -> u64 {
        let b = ((self.raw >> 16) & 0xff_ffff) | (((self.raw >> 56) & 0xff) << 24);
        if wide {
            b | ((self.hi & 0xffff_ffff) << 32)
        } else {
            b
        }
    }
    /// Byte-granular limit (G applied).
    pub fn limit(&self) -> u32 {
        let l = ((self.raw & 0xffff) | ((self.raw >> 32) & 0xf_0000)) as u32;
        if self.raw & (1 << 55) != 0 {
            (l << 12) | 0xfff
        } else {
            l
        }
    }
    /// The hidden-cache attributes (descriptor bits 40-55, as VMX access rights).
    pub fn attr(&self) -> u16 {
        ((self.raw >> 40) & 0xf0ff) as u16
    }
    /// The segment cache for selector `sel`.
    pub fn cache(&self, sel: u16, wide: bool) -> Segment {
        Segment {
            base: self.base(wide),
            limit: self.limit(),
            selector: sel,
            attr: self.attr(),
        }
    }
    /// Gate: target selector (bits 16-31).
    pub fn gate_selector(&self) -> u16 {
        (self.raw >> 16) as u16
    }
    /// Gate: target offset (32-bit; 64-bit with `hi` when `wide`).
    pub fn gate_offset(&self, wide: bool) -> u64 {
        let o = (self.raw & 0xffff) | ((self.raw >> 32) & 0xffff_0000);
        if wide {
            o | ((self.hi & 0xffff_ffff) << 32)
        } else {
            o
        }
    }
    /// Call gate: parameter count (bits 32-36).
    pub fn gate_params(&self) -> u32 {
        ((self.raw >> 32) & 0x1f) as u32
    }
    /// IA-32e interrupt gate: IST index (bits 32-34).
    pub fn gate_ist(&self) -> u32 {
        ((self.raw >> 32) & 7) as u32
    }
}

/// The #GP/#NP/#TS error code for a selector: index and TI, EXT/IDT clear (SDM §6.13).
#[inline]
pub fn sel_err(sel: u16) -> u32 {
    u32::from(sel & 0xfffc)
}

/// Null selector: index 0 in the GDT (RPL ignored).
#[inline]
pub fn is_null(sel: u16) -> bool {
    sel & 0xfffc == 0
}

/// Which part of a far transfer is loading a code segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarKind {
    Jmp,
    Call,
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Linear address of the descriptor for `sel`, or `None` when it lies beyond the GDT/LDT
    /// limit (or the LDT is unusable). `sel` must not be null for GDT lookups.
    pub fn desc_addr(&self, sel: u16, size: u32) -> Option<u64> {
        let off = u64::from(sel & 0xfff8);
        let (base, limit) = if sel & 4 != 0 {
            let l = &self.cpu.s.ldtr;
            if !l.present() || is_null(l.selector) {
                return None;
            }
            (l.base, u64::from(l.limit))
        } else {
            (self.cpu.s.gdtr.base, u64::from(self.cpu.s.gdtr.limit))
        };
        if off + u64::from(size) - 1 > limit {
            return None;
        }
        let la = base.wrapping_add(off);
        Some(if self.cpu.long_mode() {
            la
        } else {
            la & 0xffff_ffff
        })
    }

    /// Reads the 8-byte descriptor for `sel`; beyond the table limit raises `#GP(sel)`.
    pub fn read_desc(&mut self, sel: u16) -> Res<Desc> {
        let la = self.desc_addr(sel, 8).ok_or(Fault::Gp(sel_err(sel)))?;
        let raw = self.read_linear(la, 8, true)?;
        Ok(Desc { raw, hi: 0 })
    }

    /// Reads a 16-byte IA-32e system descriptor / call gate for `sel` (#GP(sel) past the limit).
    pub fn read_desc16(&mut self, sel: u16) -> Res<Desc> {
        let la = self.desc_addr(sel, 16).ok_or(Fault::Gp(sel_err(sel)))?;
        let raw = self.read_linear(la, 8, true)?;
        let hi = self.read_linear(la.wrapping_add(8), 8, true)?;
        Ok(Desc { raw, hi })
    }

    /// Sets the accessed bit of a code/data descriptor in memory (SDM §3.4.5.1).
    pub fn set_accessed(&mut self, sel: u16, d: &mut Desc) -> Res<()> {
        if d.raw & (1 << 40) == 0 {
            if let Some(la) = self.desc_addr(sel, 8) {
                d.raw |= 1 << 40;
                self.write_linear(la.wrapping_add(5), 1, (d.raw >> 40) & 0xff, true)?;
            }
        }
        Ok(())
    }

    /// A real-mode or V86 segment load: base = selector * 16. Real mode keeps the cached limit
    /// (unreal mode) and attributes; V86 forces a 64 KiB DPL-3 segment (SDM §20.1.1, §20.2).
    pub fn load_seg_real(&mut self, idx: usize, sel: u16) {
        let old = self.cpu.s.seg[idx];
        self.cpu.s.seg[idx] = if self.cpu.v86() {
            let typ = if idx == sreg::CS { 0xb } else { 0x3 };
            Segment {
                base: u64::from(sel) << 4,
                limit: 0xffff,
                selector: sel,
                attr: Segment::ATTR_P | Segment::ATTR_S | (3 << 5) | typ,
            }
        } else {
            let attr = if old.present() {
                old.attr & !0x60
            } else {
                Segment::ATTR_P | Segment::ATTR_S | 0x3
            };
            Segment {
                base: u64::from(sel) << 4,
                limit: old.limit,
                selector: sel,
                attr,
            }
        };
    }

    /// Checks and returns the cache for loading `sel` into data segment register `idx`
    /// (DS, ES, FS, GS) in protected mode; does not modify the register (SDM Vol. 2 MOV).
    pub fn check_data_seg(&mut self, sel: u16) -> Res<Segment> {
        if is_null(sel) {
            return Ok(super::mem::unusable_segment(sel));
        }
        let mut d = self.read_desc(sel)?;
        let rpl = (sel & 3) as u8;
        let cpl = self.cpu.cpl();
        if !d.readable() {
            return Err(Fault::Gp(sel_err(sel)));
        }
        if !d.conforming() && (rpl > d.dpl() || cpl > d.dpl()) {
            return Err(Fault::Gp(sel_err(sel)));
        }
        if !d.present() {
            return Err(Fault::Np(sel_err(sel)));
        }
        self.set_accessed(sel, &mut d)?;
        Ok(d.cache(sel, false))
    }

    /// Checks and returns the cache for loading `sel` into SS in protected mode at privilege
    /// `cpl`. `gp` selects the fault for a bad selector (#GP for MOV/POP/LSS/RET/IRET, #TS for
    /// stack switches). In 64-bit mode a null SS is allowed at CPL < 3 with RPL = CPL.
    pub fn check_stack_seg(&mut self, sel: u16, cpl: u8, gp: bool, mode64: bool) -> Res<Segment> {
        let bad = |e: u32| if gp { Fault::Gp(e) } else { Fault::Ts(e) };
        let rpl = (sel & 3) as u8;
        if is_null(sel) {
            if mode64 && cpl < 3 && rpl == cpl {
                return Ok(null_ss(sel, cpl));
            }
            return Err(bad(0));
        }
        let la = self.desc_addr(sel, 8).ok_or(bad(sel_err(sel)))?;
        let mut d = Desc {
            raw: self.read_linear(la, 8, true)?,
            hi: 0,
        };
        if rpl != cpl || !d.writable() || d.dpl() != cpl {
            return Err(bad(sel_err(sel)));
        }
        if !d.present() {
            return Err(Fault::Ss(sel_err(sel)));
        }
        self.set_accessed(sel, &mut d)?;
        Ok(d.cache(sel, false))
    }

    /// Loads segment register `idx` with `sel` under the rules of the current mode
    /// (MOV Sreg, POP Sreg, LDS/LES/LFS/LGS/LSS). CS cannot be loaded this way.
    pub fn load_seg(&mut self, idx: usize, sel: u16) -> Res<()> {
        if idx == sreg::CS {
            return Err(Fault::Ud);
        }
        if !self.cpu.protected() || self.cpu.v86() {
            self.load_seg_real(idx, sel);
            return Ok(());
        }
        let cache = if idx == sreg::SS {
            let (cpl, m64) = (self.cpu.cpl(), self.cpu.mode64());
            self.check_stack_seg(sel, cpl, true, m64)?
        } else {
            let mut c = self.check_data_seg(sel)?;
            if is_null(sel) && self.cpu.mode64() && (idx == sreg::FS || idx == sreg::GS) {
                // 64-bit mode keeps a usable FS/GS base of 0 (SDM Vol. 2 MOV, §3.4.4).
                c.base = 0;
            }
            c
        };
        self.cpu.s.seg[idx] = cache;
        Ok(())
    }

    /// Checks a code segment for a direct far JMP/CALL (no gate), SDM Vol. 2 JMP/CALL:
    /// conforming DPL <= CPL; non-conforming RPL <= CPL and DPL = CPL. Returns the cache with
    /// RPL = CPL.
    pub fn check_code_direct(&mut self, sel: u16, mut d: Desc) -> Res<Segment> {
        let cpl = self.cpu.cpl();
        let rpl = (sel & 3) as u8;
        if d.conforming() {
            if d.dpl() > cpl {
                return Err(Fault::Gp(sel_err(sel)));
            }
        } else if rpl > cpl || d.dpl() != cpl {
            return Err(Fault::Gp(sel_err(sel)));
        }
        if self.cpu.long_mode() && d.l() && d.db() {
            return Err(Fault::Gp(sel_err(sel)));
        }
        if !d.present() {
            return Err(Fault::Np(sel_err(sel)));
        }
        let nsel = (sel & 0xfffc) | u16::from(cpl);
        self.set_accessed(sel, &mut d)?;
        Ok(d.cache(nsel, false))
    }

    /// Sets CS and RIP after a far transfer, checking the offset against the new limit
    /// (#GP(0)) or, for 64-bit code, canonicality.
    pub fn commit_cs(&mut self, cs: Segment, rip: u64, cpl: u8) -> Res<()> {
        let long = self.cpu.long_mode() && cs.long();
        if long {
            if !super::mem::canonical(rip) {
                return Err(Fault::Gp(0));
            }
        } else if self.cpu.protected() && !self.cpu.v86() && rip > u64::from(cs.limit) {
            return Err(Fault::Gp(0));
        }
        self.cpu.s.seg[sreg::CS] = cs;
        self.cpu.s.cpl = cpl;
        self.next_rip = rip;
        Ok(())
    }

    /// Reads a far pointer operand `m16:16/32/64` (offset first, then selector).
    pub fn read_far_ptr(&mut self, insn: &Instruction) -> Res<(u16, u64, u32)> {
        match insn.op_kind(0) {
            OpKind::FarBranch16 => Ok((
                insn.far_branch_selector(),
                u64::from(insn.far_branch16()),
                2,
            )),
            OpKind::FarBranch32 => Ok((
                insn.far_branch_selector(),
                u64::from(insn.far_branch32()),
                4,
            )),
            _ => {
                let osz = match insn.code() {
                    Code::Jmp_m1616 | Code::Call_m1616 => 2,
                    Code::Jmp_m1664 | Code::Call_m1664 => 8,
                    Code::Jmp_m1632 | Code::Call_m1632 => 4,
                    _ => far_mem_size(insn),
                };
                let seg = self.mem_seg(insn);
                let off = self.ea(insn);
                let am = mask(self.addr_size(insn));
                let o = self.read_mem(seg, off, osz)?;
                let s = self.read_mem(seg, off.wrapping_add(u64::from(osz)) & am, 2)?;
                Ok((s as u16, o, osz))
            }
        }
    }
}

/// Offset size of an `m16:xx` memory operand (LDS/LSS...).
fn far_mem_size(insn: &Instruction) -> u32 {
    (insn.memory_size().size() as u32).saturating_sub(2).max(2)
}

/// The SS cache for a null selector in 64-bit mode (usable for 64-bit stack accesses).
pub fn null_ss(sel: u16, cpl: u8) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        attr: Segment::ATTR_P | Segment::ATTR_S | 0x3 | (u16::from(cpl) << 5),
    }
}

/// Operand size (bytes) of a PUSH/POP/PUSHF/POPF-like instruction from its stack increment.
pub fn stack_op_size(insn: &Instruction) -> u32 {
    insn.stack_pointer_increment().unsigned_abs().clamp(2, 8)
}

/// MOV Sreg,r/m; MOV r/m,Sreg; PUSH Sreg; POP Sreg; LDS/LES/LFS/LGS/LSS. Returns `None` for
/// other instructions. MOV SS and POP SS inhibit interrupts for one instruction (SDM §6.8.3).
pub fn exec_sreg<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    insn: &Instruction,
) -> Option<Res<()>> {
    use iced_x86::Mnemonic as M;
    let is_sreg =
        |i: u32| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_segment_register();
    Some(match insn.mnemonic() {
        M::Mov if is_sreg(0) => mov_to_sreg(ctx, insn),
        M::Mov if is_sreg(1) => mov_from_sreg(ctx, insn),
        M::Push if is_sreg(0) => {
            let sel = u64::from(ctx.cpu.s.seg[sreg_index(insn.op_register(0))].selector);
            ctx.push(sel, stack_op_size(insn))
        }
        M::Pop if is_sreg(0) => pop_sreg(ctx, insn),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => load_far_ptr(ctx, insn),
        _ => return None,
    })
}

/// The interrupt shadow after MOV SS / POP SS covers the next instruction.
fn ss_shadow<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, idx: usize) {
    if idx == sreg::SS {
        ctx.cpu.shadow_until = ctx.cpu.icount + 2;
    }
}

fn mov_to_sreg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let idx = sreg_index(insn.op_register(0));
    let v = match insn.op_kind(1) {
        OpKind::Memory => {
            let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
            ctx.read_mem(s, o, 2)?
        }
        _ => ctx.reg(insn.op_register(1)),
    };
    ctx.load_seg(idx, v as u16)?;
    ss_shadow(ctx, idx);
    Ok(())
}

fn mov_from_sreg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let sel = u64::from(ctx.cpu.s.seg[sreg_index(insn.op_register(1))].selector);
    match insn.op_kind(0) {
        OpKind::Memory => {
            let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
            ctx.write_mem(s, o, 2, sel)
        }
        _ => {
            // To a 32/64-bit register: zero-extended (SDM Vol. 2 MOV).
            ctx.set_reg(insn.op_register(0), sel);
            Ok(())
        }
    }
}

fn pop_sreg<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let idx = sreg_index(insn.op_register(0));
    let size = stack_op_size(insn);
    let v = ctx.peek(0, size)?;
    ctx.load_seg(idx, v as u16)?;
    ctx.pop(size)?;
    ss_shadow(ctx, idx);
    Ok(())
}

fn load_far_ptr<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    use iced_x86::Mnemonic as M;
    let idx = match insn.mnemonic() {
        M::Lds => sreg::DS,
        M::Les => sreg::ES,
        M::Lfs => sreg::FS,
        M::Lgs => sreg::GS,
        _ => sreg::SS,
    };
    if insn.op_kind(1) != OpKind::Memory {
        return Err(Fault::Ud);
    }
    let osz = far_mem_size(insn);
    let (s, o) = (ctx.mem_seg(insn), ctx.ea(insn));
    let am = mask(ctx.addr_size(insn));
    let off = ctx.read_mem(s, o, osz)?;
    let sel = ctx.read_mem(s, o.wrapping_add(u64::from(osz)) & am, 2)? as u16;
    ctx.load_seg(idx, sel)?;
    ctx.set_reg(insn.op_register(0), off);
    ss_shadow(ctx, idx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_fields_decode_as_figure_3_8() {
        // Flat 4 GiB 32-bit code: base 0, limit 0xFFFFF pages, P DPL0 S type 0xA, G D.
        let d = Desc {
            raw: 0x00cf_9a00_0000_ffff,
            hi: 0,
        };
        assert!(d.is_code() && d.readable() && !d.conforming() && d.present());
        assert_eq!(d.limit(), 0xffff_ffff);
        assert_eq!(d.base(false), 0);
        assert_eq!(d.attr(), 0xc09a);
        let d = Desc {
            raw: 0x1200_9234_5678_0fff,
            hi: 0,
        };
        assert_eq!(d.base(false), 0x1234_5678);
        assert_eq!(d.limit(), 0xfff);
        assert!(d.writable());
    }
}
