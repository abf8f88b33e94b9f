//! Port I/O: IN/OUT with the IOPL and TSS I/O-permission-bitmap checks
//! (Intel SDM Vol. 1 §19.5, "Protection Mode I/O").

use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use jit::abi::reg;

/// Checks whether the current privilege may access `size` bytes at `port`: allowed when
/// CPL <= IOPL (protected mode, not V86), else every covered bit of the TSS I/O bitmap must be 0.
pub fn check_io<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, port: u16, size: u32) -> Res<()> {
    if !ctx.cpu.protected() {
        return Ok(());
    }
    if !ctx.cpu.v86() && ctx.cpu.cpl() <= ctx.cpu.iopl() {
        return Ok(());
    }
    // 32-bit/64-bit TSS only (type 9/11); a 16-bit TSS has no bitmap.
    let tr = ctx.cpu.s.tr;
    if tr.typ() & 0x7 != 0x1 || tr.typ() & 0x8 == 0 || tr.limit < 0x67 {
        return Err(Fault::Gp(0));
    }
    let base_off = ctx.read_linear(tr.base.wrapping_add(0x66), 2, true)?;
    let byte = base_off + u64::from(port / 8);
    if byte + 1 > u64::from(tr.limit) {
        return Err(Fault::Gp(0));
    }
    let bits = ctx.read_linear(tr.base.wrapping_add(byte), 2, true)?;
    let want = ((1u64 << size) - 1) << (port % 8);
    if bits & want != 0 {
        return Err(Fault::Gp(0));
    }
    Ok(())
}

/// IN and OUT (not the string forms).
pub fn in_out<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    let is_in = insn.mnemonic() == Mnemonic::In;
    let (port_op, data_op) = if is_in { (1, 0) } else { (0, 1) };
    let port = match insn.op_kind(port_op) {
        OpKind::Immediate8 => u16::from(insn.immediate8()),
        _ => ctx.reg(Register::DX) as u16,
    };
    let size = ctx.op_size(insn, data_op);
    check_io(ctx, port, size)?;
    if is_in {
        let v = ctx.plat.io_read(port, size as u8);
        ctx.set_gpr(reg::RAX, size, u64::from(v));
    } else {
        let v = ctx.gpr(reg::RAX, size) as u32;
        ctx.plat.io_write(port, size as u8, v);
    }
    Ok(())
}
