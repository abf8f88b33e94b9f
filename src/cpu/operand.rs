//! Operand access for decoded instructions: registers, immediates, memory operands
//! (effective address, Intel SDM Vol. 2A §2.1.5 and §3.7.5) and the stack (§6.2).

use super::flags::mask;
use super::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, OpKind, Register};
use jit::abi::{reg, sreg};

/// Maps an iced-x86 segment register to its [`sreg`] index.
#[inline]
pub fn sreg_index(r: Register) -> usize {
    match r {
        Register::ES => sreg::ES,
        Register::CS => sreg::CS,
        Register::SS => sreg::SS,
        Register::FS => sreg::FS,
        Register::GS => sreg::GS,
        _ => sreg::DS,
    }
}

/// (GPR index, size in bytes, high byte) of an iced-x86 general-purpose register.
#[inline]
pub fn gpr_info(r: Register) -> (usize, u32, bool) {
    let n = r as u32;
    if (Register::AH as u32..=Register::BH as u32).contains(&n) {
        return ((n - Register::AH as u32) as usize, 1, true);
    }
    if (Register::AL as u32..=Register::R15L as u32).contains(&n) {
        let i = n - Register::AL as u32;
        // AL CL DL BL, then AH..BH (handled above), then SPL BPL SIL DIL R8L..R15L.
        let idx = if i < 4 { i } else { i - 4 };
        return (idx as usize, 1, false);
    }
    if (Register::AX as u32..=Register::R15W as u32).contains(&n) {
        return ((n - Register::AX as u32) as usize, 2, false);
    }
    if (Register::EAX as u32..=Register::R15D as u32).contains(&n) {
        return ((n - Register::EAX as u32) as usize, 4, false);
    }
    if (Register::RAX as u32..=Register::R15 as u32).contains(&n) {
        return ((n - Register::RAX as u32) as usize, 8, false);
    }
    (usize::MAX, 0, false)
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Reads a general-purpose register (any width, including AH..BH), zero-extended.
    #[inline]
    pub fn reg(&self, r: Register) -> u64 {
        let (i, size, high) = gpr_info(r);
        if i == usize::MAX {
            return match r {
                Register::RIP => self.next_rip,
                Register::EIP => self.next_rip & 0xffff_ffff,
                _ => 0,
            };
        }
        let v = self.cpu.s.gpr[i];
        if high {
            (v >> 8) & 0xff
        } else {
            v & mask(size)
        }
    }

    /// Writes a general-purpose register with the x86-64 rules: 32-bit writes zero-extend to
    /// 64 bits, 8- and 16-bit writes keep the other bits (SDM Vol. 1 §3.4.1.1).
    #[inline]
    pub fn set_reg(&mut self, r: Register, v: u64) {
        let (i, size, high) = gpr_info(r);
        if i == usize::MAX {
            return;
        }
        let g = &mut self.cpu.s.gpr[i];
        *g = match (size, high) {
            (1, true) => (*g & !0xff00) | ((v & 0xff) << 8),
            (1, false) => (*g & !0xff) | (v & 0xff),
            (2, _) => (*g & !0xffff) | (v & 0xffff),
            (4, _) => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Reads GPR `i` (0..16) with `size` bytes.
    #[inline]
    pub fn gpr(&self, i: usize, size: u32) -> u64 {
        self.cpu.s.gpr[i] & mask(size)
    }

    /// Writes GPR `i` with `size` bytes (32-bit writes zero-extend).
    #[inline]
    pub fn set_gpr(&mut self, i: usize, size: u32, v: u64) {
        let g = &mut self.cpu.s.gpr[i];
        *g = match size {
            1 => (*g & !0xff) | (v & 0xff),
            2 => (*g & !0xffff) | (v & 0xffff),
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Address size of a memory operand in bytes (2, 4, 8).
    pub fn addr_size(&self, insn: &Instruction) -> u32 {
        let b = insn.memory_base();
        if b == Register::RIP {
            return 8;
        }
        if b == Register::EIP {
            return 4;
        }
        if b != Register::None {
            return gpr_info(b).1;
        }
        let ix = insn.memory_index();
        if ix != Register::None && gpr_info(ix).1 != 0 {
            return gpr_info(ix).1;
        }
        match insn.memory_displ_size() {
            2 => 2,
            4 => 4,
            8 => 8,
            _ => self.default_addr_size(),
        }
    }

    /// The address size the current code segment implies (bytes).
    pub fn default_addr_size(&self) -> u32 {
        match self.cpu.bitness() {
            64 => 8,
            32 => 4,
            _ => 2,
        }
    }

    /// Effective address (offset within the segment) of the memory operand, truncated to the
    /// address size.
    pub fn ea(&self, insn: &Instruction) -> u64 {
        let mut a = insn.memory_displacement64();
        let base = insn.memory_base();
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            a = a.wrapping_add(self.reg(base));
        }
        let ix = insn.memory_index();
        if ix != Register::None {
            a = a.wrapping_add(
                self.reg(ix)
                    .wrapping_mul(u64::from(insn.memory_index_scale())),
            );
        }
        a & mask(self.addr_size(insn))
    }

    /// Segment index of the memory operand (after overrides and the SS default for BP/SP).
    #[inline]
    pub fn mem_seg(&self, insn: &Instruction) -> usize {
        sreg_index(insn.memory_segment())
    }

    /// Size in bytes of operand `i`.
    pub fn op_size(&self, insn: &Instruction, i: u32) -> u32 {
        match insn.op_kind(i) {
            OpKind::Register => gpr_info(insn.op_register(i)).1.max(
                // Segment registers and others: 2 bytes.
                if gpr_info(insn.op_register(i)).0 == usize::MAX {
                    2
                } else {
                    0
                },
            ),
            OpKind::Memory => insn.memory_size().size() as u32,
            OpKind::Immediate8 => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            OpKind::Immediate64 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => 8,
            _ => 0,
        }
    }

    /// Reads operand `i` (register, immediate or memory), zero-extended to 64 bits.
    pub fn read_op(&mut self, insn: &Instruction, i: u32) -> Res<u64> {
        match insn.op_kind(i) {
            OpKind::Register => Ok(self.reg(insn.op_register(i))),
            OpKind::Memory => {
                let size = insn.memory_size().size() as u32;
                let off = self.ea(insn);
                self.read_mem(self.mem_seg(insn), off, size)
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {
                let size = self.op_size(insn, i);
                Ok(insn.immediate(i) & mask(size))
            }
            OpKind::Immediate8_2nd => Ok(u64::from(insn.immediate8_2nd())),
            _ => Err(Fault::Ud),
        }
    }

    /// Writes operand `i` (register or memory).
    pub fn write_op(&mut self, insn: &Instruction, i: u32, v: u64) -> Res<()> {
        match insn.op_kind(i) {
            OpKind::Register => {
                self.set_reg(insn.op_register(i), v);
                Ok(())
            }
            OpKind::Memory => {
                let size = insn.memory_size().size() as u32;
                let off = self.ea(insn);
                self.write_mem(self.mem_seg(insn), off, size, v)
            }
            _ => Err(Fault::Ud),
        }
    }

    /// Stack address size in bytes: 8 in 64-bit mode, else 4 if SS.B, else 2.
    #[inline]
    pub fn stack_size(&self) -> u32 {
        if self.cpu.mode64() {
            8
        } else if self.cpu.s.seg[sreg::SS].db() {
            4
        } else {
            2
        }
    }

    /// Pushes `size` bytes. The store happens before RSP changes, so a fault leaves RSP intact.
    pub fn push(&mut self, v: u64, size: u32) -> Res<()> {
        let ss = self.stack_size();
        let sp = self.gpr(reg::RSP, ss).wrapping_sub(u64::from(size)) & mask(ss);
        self.write_mem(sreg::SS, sp, size, v)?;
        self.set_gpr(reg::RSP, ss, sp);
        Ok(())
    }

    /// Pops `size` bytes.
    pub fn pop(&mut self, size: u32) -> Res<u64> {
        let ss = self.stack_size();
        let sp = self.gpr(reg::RSP, ss);
        let v = self.read_mem(sreg::SS, sp, size)?;
        self.set_gpr(reg::RSP, ss, sp.wrapping_add(u64::from(size)) & mask(ss));
        Ok(v)
    }

    /// Reads `size` bytes at stack offset `RSP + delta` without changing RSP.
    pub fn peek(&mut self, delta: u64, size: u32) -> Res<u64> {
        let ss = self.stack_size();
        let sp = self.gpr(reg::RSP, ss).wrapping_add(delta) & mask(ss);
        self.read_mem(sreg::SS, sp, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_table_matches_modrm_order() {
        assert_eq!(gpr_info(Register::AL), (0, 1, false));
        assert_eq!(gpr_info(Register::BH), (3, 1, true));
        assert_eq!(gpr_info(Register::SPL), (4, 1, false));
        assert_eq!(gpr_info(Register::R15L), (15, 1, false));
        assert_eq!(gpr_info(Register::SI), (6, 2, false));
        assert_eq!(gpr_info(Register::R9D), (9, 4, false));
        assert_eq!(gpr_info(Register::RSP), (4, 8, false));
    }
}
