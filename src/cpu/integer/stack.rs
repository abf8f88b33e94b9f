//! Stack instructions: PUSH, POP, PUSHA/PUSHAD, POPA/POPAD, ENTER, LEAVE (Intel SDM Vol. 1
//! §6.2, §7.3.1.5, §7.5; Vol. 2 pages). PUSH/POP of segment registers belong to the system
//! instructions.

use crate::cpu::flags::mask;
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, OpKind};
use jit::abi::{reg, sreg};

/// PUSH r/m / imm (SDM Vol. 2B "PUSH"). The operand is read before RSP changes, so PUSH RSP
/// pushes the old value (as the 286 and later do).
#[inline]
pub fn push<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    let v = ctx.read_op(insn, 0)?;
    ctx.push(v, size)
}

/// POP r/m (SDM Vol. 2B "POP"). A memory destination's address is computed with the RSP
/// value after the pop; if the store faults, RSP is restored.
#[inline]
pub fn pop<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = ctx.op_size(insn, 0);
    if insn.op0_kind() == OpKind::Register {
        let v = ctx.pop(size)?;
        ctx.set_reg(insn.op0_register(), v);
        return Ok(());
    }
    let old = ctx.cpu.s.gpr[reg::RSP];
    let v = ctx.pop(size)?;
    if let Err(f) = ctx.write_op(insn, 0, v) {
        ctx.cpu.s.gpr[reg::RSP] = old;
        return Err(f);
    }
    Ok(())
}

/// Operand size of PUSHA/POPA from the mnemonic (PUSHAD/POPAD: 4).
#[inline]
fn pusha_size(insn: &Instruction) -> u32 {
    match insn.mnemonic() {
        iced_x86::Mnemonic::Pushad | iced_x86::Mnemonic::Popad => 4,
        _ => 2,
    }
}

/// PUSHA/PUSHAD: push AX, CX, DX, BX, the original SP, BP, SI, DI (SDM Vol. 2B "PUSHA").
/// Every slot is probed before any is written.
pub fn pusha<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = pusha_size(insn);
    let ss = ctx.stack_size();
    let sp0 = ctx.gpr(reg::RSP, ss);
    let step = u64::from(size);
    for i in 1..=8u64 {
        ctx.probe_write(sreg::SS, sp0.wrapping_sub(i * step) & mask(ss), size)?;
    }
    for i in 0..8usize {
        let v = ctx.gpr(i, size);
        let a = sp0.wrapping_sub((i as u64 + 1) * step) & mask(ss);
        ctx.write_mem(sreg::SS, a, size, v)?;
    }
    ctx.set_gpr(reg::RSP, ss, sp0.wrapping_sub(8 * step) & mask(ss));
    Ok(())
}

/// POPA/POPAD: pop DI, SI, BP, (skip SP), BX, DX, CX, AX (SDM Vol. 2B "POPA").
pub fn popa<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = pusha_size(insn);
    let step = u64::from(size);
    let mut vals = [0u64; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = ctx.peek(k as u64 * step, size)?;
    }
    for (k, v) in vals.iter().enumerate() {
        let r = 7 - k;
        if r != reg::RSP {
            ctx.set_gpr(r, size, *v);
        }
    }
    let ss = ctx.stack_size();
    let sp = ctx.gpr(reg::RSP, ss).wrapping_add(8 * step) & mask(ss);
    ctx.set_gpr(reg::RSP, ss, sp);
    Ok(())
}

/// ENTER imm16, imm8: make a stack frame with `imm8 mod 32` nesting levels
/// (SDM Vol. 2A "ENTER" pseudo-code). All frame-pointer reads happen and every store is probed
/// before anything is committed; a read that overlaps an earlier push of the same ENTER sees the
/// pushed bytes, as the sequential hardware operation does.
pub fn enter<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = if ctx.cpu.mode64() {
        if insn.code() == iced_x86::Code::Enterw_imm16_imm8 {
            2
        } else {
            8
        }
    } else {
        match insn.code() {
            iced_x86::Code::Enterd_imm16_imm8 => 4,
            _ => 2,
        }
    };
    let alloc = u64::from(insn.immediate16());
    let level = u64::from(insn.immediate8_2nd() & 31);
    let ss = ctx.stack_size();
    let sm = mask(ss);
    let step = u64::from(size);
    // Stores to make: (offset, value); at most 1 + 31 + 1.
    let mut stores = [(0u64, 0u64); 33];
    let mut n = 0;
    let mut sp = ctx.gpr(reg::RSP, ss);
    sp = sp.wrapping_sub(step) & sm;
    stores[n] = (sp, ctx.gpr(reg::RBP, size));
    n += 1;
    let frame_temp = sp;
    if level > 0 {
        let mut bp = ctx.gpr(reg::RBP, ss);
        for _ in 1..level {
            bp = bp.wrapping_sub(step) & sm;
            // Hardware reads and pushes one after the other, so a read can see an earlier push
            // of this same instruction: overlay the pending stores on what memory holds.
            let v = overlay(
                ctx.read_mem(sreg::SS, bp, size)?,
                bp,
                size,
                &stores[..n],
                sm,
            );
            sp = sp.wrapping_sub(step) & sm;
            stores[n] = (sp, v);
            n += 1;
        }
        sp = sp.wrapping_sub(step) & sm;
        stores[n] = (sp, frame_temp);
        n += 1;
    }
    let new_sp = sp.wrapping_sub(alloc) & sm;
    for &(a, _) in &stores[..n] {
        ctx.probe_write(sreg::SS, a, size)?;
    }
    for &(a, v) in &stores[..n] {
        ctx.write_mem(sreg::SS, a, size, v)?;
    }
    ctx.set_gpr(reg::RBP, size, frame_temp);
    ctx.set_gpr(reg::RSP, ss, new_sp);
    Ok(())
}

/// The `size`-byte value at stack offset `at`, given that memory holds `mem` there and the
/// `stores` (offset, value) of `size` bytes each are to be applied first, in order.
fn overlay(mem: u64, at: u64, size: u32, stores: &[(u64, u64)], sm: u64) -> u64 {
    let mut v = mem;
    for &(a, val) in stores {
        for j in 0..u64::from(size) {
            let k = (at.wrapping_add(j)).wrapping_sub(a) & sm;
            if k < u64::from(size) {
                let byte = (val >> (8 * k)) & 0xff;
                v = (v & !(0xff << (8 * j))) | (byte << (8 * j));
            }
        }
    }
    v
}

/// LEAVE: RSP = RBP (stack-address size), then pop RBP (operand size) (SDM Vol. 2A "LEAVE").
pub fn leave<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let size = match insn.code() {
        iced_x86::Code::Leavew => 2,
        iced_x86::Code::Leaved => 4,
        iced_x86::Code::Leaveq => 8,
        _ => return Err(Fault::Ud),
    };
    let ss = ctx.stack_size();
    let bp = ctx.gpr(reg::RBP, ss);
    let v = ctx.read_mem(sreg::SS, bp, size)?;
    ctx.set_gpr(reg::RSP, ss, bp.wrapping_add(u64::from(size)) & mask(ss));
    ctx.set_gpr(reg::RBP, size, v);
    Ok(())
}
