//! Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPE/LOOPNE, JCXZ/JECXZ/JRCXZ
//! (Intel SDM Vol. 1 §6.3 "Calling Procedures Using CALL and RET", §7.3.8; Vol. 2 pages).
//! Far forms belong to the system instructions.

use super::condition;
use crate::cpu::flags::mask;
use crate::cpu::mem::canonical;
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use jit::abi::{flags as fl, reg, sreg};

/// Sets the next RIP to `target` after the checks a near branch makes: in 64-bit mode the
/// target must be canonical, elsewhere within the CS limit; both raise #GP(0) with no state
/// changed (SDM Vol. 2A "JMP" / "CALL" protected-mode and 64-bit exceptions).
#[inline]
pub fn branch<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, target: u64) -> Res<()> {
    check_target(ctx, target)?;
    ctx.next_rip = target;
    Ok(())
}

/// The #GP(0) check of a near branch target without taking the branch.
#[inline]
pub fn check_target<P: Platform + ?Sized>(ctx: &Ctx<'_, P>, target: u64) -> Res<()> {
    let ok = if ctx.cpu.mode64() {
        canonical(target)
    } else {
        target <= u64::from(ctx.cpu.s.seg[sreg::CS].limit)
    };
    if ok {
        Ok(())
    } else {
        Err(Fault::Gp(0))
    }
}

/// Operand size (bytes) of a near branch with a relative target, from iced's branch kind.
#[inline]
fn rel_size(insn: &Instruction) -> u32 {
    match insn.op0_kind() {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        _ => 8,
    }
}

/// Near JMP rel / r/m (SDM Vol. 2A "JMP"). An indirect target is read at the operand size
/// (zero-extended: EIP/IP truncation).
#[inline]
pub fn jmp<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let target = match insn.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            insn.near_branch_target()
        }
        _ => ctx.read_op(insn, 0)?,
    };
    branch(ctx, target)
}

/// Jcc rel (SDM Vol. 2A "Jcc").
#[inline]
pub fn jcc<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    if condition(ctx.cpu.s.rflags, insn.condition_code()) {
        branch(ctx, insn.near_branch_target())
    } else {
        Ok(())
    }
}

/// Near CALL rel / r/m: push the return address at the operand size, then branch. The
/// target is checked before the push so a fault leaves RSP and memory intact
/// (SDM Vol. 2A "CALL").
#[inline]
pub fn call<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let (target, size) = match insn.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            (insn.near_branch_target(), rel_size(insn))
        }
        _ => (ctx.read_op(insn, 0)?, ctx.op_size(insn, 0)),
    };
    check_target(ctx, target)?;
    let ret = ctx.next_rip & mask(size);
    ctx.push(ret, size)?;
    ctx.next_rip = target;
    Ok(())
}

/// Near RET / RET imm16: pop the return address at the operand size, then release imm16 more
/// bytes of stack (SDM Vol. 2B "RET").
#[inline]
pub fn ret<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let (size, imm) = match insn.code() {
        Code::Retnw => (2, 0),
        Code::Retnd => (4, 0),
        Code::Retnq => (8, 0),
        Code::Retnw_imm16 => (2, u64::from(insn.immediate16())),
        Code::Retnd_imm16 => (4, u64::from(insn.immediate16())),
        Code::Retnq_imm16 => (8, u64::from(insn.immediate16())),
        _ => return Err(Fault::Ud),
    };
    let target = ctx.peek(0, size)?;
    check_target(ctx, target)?;
    let ss = ctx.stack_size();
    let sp = ctx
        .gpr(reg::RSP, ss)
        .wrapping_add(u64::from(size))
        .wrapping_add(imm);
    ctx.set_gpr(reg::RSP, ss, sp & mask(ss));
    ctx.next_rip = target;
    Ok(())
}

/// Counter width (bytes) of LOOP/LOOPE/LOOPNE: the address size, which names the register.
fn loop_counter(code: Code) -> u32 {
    use Code as C;
    match code {
        C::Loop_rel8_16_CX | C::Loop_rel8_32_CX | C::Loope_rel8_16_CX | C::Loope_rel8_32_CX => 2,
        C::Loopne_rel8_16_CX | C::Loopne_rel8_32_CX => 2,
        C::Loop_rel8_16_RCX
        | C::Loop_rel8_64_RCX
        | C::Loope_rel8_16_RCX
        | C::Loope_rel8_64_RCX
        | C::Loopne_rel8_16_RCX
        | C::Loopne_rel8_64_RCX => 8,
        _ => 4,
    }
}

/// LOOP/LOOPE/LOOPNE rel8: decrement the address-size counter without changing flags and
/// branch if it is not zero (and ZF matches) (SDM Vol. 2A "LOOP/LOOPcc").
pub fn loop_<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let asz = loop_counter(insn.code());
    let count = ctx.gpr(reg::RCX, asz).wrapping_sub(1) & mask(asz);
    let zf = ctx.cpu.s.rflags & fl::ZF != 0;
    let take = count != 0
        && match insn.mnemonic() {
            Mnemonic::Loope => zf,
            Mnemonic::Loopne => !zf,
            _ => true,
        };
    if take {
        check_target(ctx, insn.near_branch_target())?;
        ctx.next_rip = insn.near_branch_target();
    }
    ctx.set_gpr(reg::RCX, asz, count);
    Ok(())
}

/// JCXZ/JECXZ/JRCXZ rel8: branch if the counter of that width is zero (SDM Vol. 2A "Jcc").
pub fn jcxz<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let asz = match insn.mnemonic() {
        Mnemonic::Jcxz => 2,
        Mnemonic::Jecxz => 4,
        _ => 8,
    };
    if ctx.gpr(reg::RCX, asz) == 0 {
        branch(ctx, insn.near_branch_target())
    } else {
        Ok(())
    }
}
