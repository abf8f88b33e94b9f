//! String instructions: MOVS, CMPS, SCAS, LODS, STOS, INS, OUTS with REP/REPE/REPNE
//! (Intel SDM Vol. 1 §7.3.9; Vol. 2 pages "MOVS", "CMPS", "SCAS", "LODS", "STOS", "INS",
//! "OUTS", "REP/REPE/REPZ/REPNE/REPNZ").
//!
//! The address size (from iced's operand kind: `MemorySegSI`/`ESI`/`RSI`, `MemoryESDI`/...)
//! selects SI/ESI/RSI, DI/EDI/RDI and the CX/ECX/RCX counter. The source segment honours
//! overrides; the destination is always ES. Each iteration commits its registers after its
//! accesses succeed, so a fault leaves the completed iterations in place (as hardware does).
//! A REP instruction runs at most [`CHUNK`] iterations per step and then re-executes itself,
//! so pending interrupts are taken between chunks.

use super::set_flags;
use crate::cpu::flags::{self, mask};
use crate::cpu::{Ctx, Platform, Res};
use iced_x86::{Instruction, Mnemonic, OpKind};
use jit::abi::{flags as fl, reg, sreg};

/// Iterations a REP string instruction performs per interpreter step.
pub const CHUNK: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Movs,
    Cmps,
    Scas,
    Lods,
    Stos,
    Ins,
    Outs,
}

/// Address size (bytes) of a string instruction, from its implicit memory operand kinds.
fn addr_size(insn: &Instruction) -> u32 {
    for i in 0..insn.op_count().min(2) {
        match insn.op_kind(i) {
            OpKind::MemorySegSI | OpKind::MemoryESDI => return 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => return 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => return 8,
            _ => {}
        }
    }
    2
}

/// MOVS m, m.
pub fn movs<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Movs)
}
/// CMPS m, m (flags of SRC - DEST, i.e. [SI] - ES:[DI]).
pub fn cmps<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Cmps)
}
/// SCAS: flags of accumulator - ES:[DI].
pub fn scas<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Scas)
}
/// LODS: accumulator = [SI].
pub fn lods<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Lods)
}
/// STOS: ES:[DI] = accumulator.
pub fn stos<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Stos)
}
/// INS: ES:[DI] = port DX. IOPL-sensitive: checked by `ring::io::check_io` and counted in the
/// ring statistics.
pub fn ins<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    io_checked(ctx, insn, Op::Ins)
}
/// OUTS: port DX = [SI]. IOPL-sensitive like INS.
pub fn outs<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    io_checked(ctx, insn, Op::Outs)
}

fn io_checked<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction, op: Op) -> Res<()> {
    ctx.cpu.ring_stats.count(insn.mnemonic());
    let port = ctx.gpr(reg::RDX, 2) as u16;
    let size = insn.memory_size().size() as u32;
    if let Err(f) = crate::ring::io::check_io(ctx, port, size) {
        ctx.cpu.ring_stats.refused += 1;
        return Err(f);
    }
    run(ctx, insn, op)
}

/// The iteration loop shared by all string instructions.
fn run<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction, op: Op) -> Res<()> {
    let asz = addr_size(insn);
    let am = mask(asz);
    let size = insn.memory_size().size() as u32;
    let src_seg = crate::cpu::operand::sreg_index(insn.memory_segment());
    let delta = if ctx.cpu.s.rflags & fl::DF != 0 {
        (u64::from(size)).wrapping_neg()
    } else {
        u64::from(size)
    };
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let cond = matches!(op, Op::Cmps | Op::Scas);
    // For CMPS/SCAS: REPE (F3) stops when ZF = 0, REPNE (F2) when ZF = 1.
    let stop_on_zf = insn.has_repne_prefix();
    let port = ctx.gpr(reg::RDX, 2) as u16;
    let mut n = 0;
    loop {
        if rep {
            if ctx.gpr(reg::RCX, asz) == 0 {
                return Ok(());
            }
            if n == CHUNK {
                // Leave RIP at this instruction; it resumes after pending events.
                ctx.next_rip = ctx.cpu.cur_rip;
                return Ok(());
            }
        }
        n += 1;
        let si = ctx.gpr(reg::RSI, asz);
        let di = ctx.gpr(reg::RDI, asz);
        let (mut nsi, mut ndi) = (si, di);
        match op {
            Op::Movs => {
                let v = ctx.read_mem(src_seg, si, size)?;
                ctx.write_mem(sreg::ES, di, size, v)?;
                nsi = si.wrapping_add(delta) & am;
                ndi = di.wrapping_add(delta) & am;
            }
            Op::Cmps => {
                let a = ctx.read_mem(src_seg, si, size)?;
                let b = ctx.read_mem(sreg::ES, di, size)?;
                let (_, f) = flags::sub(a, b, 0, size);
                set_flags(ctx, fl::STATUS, f);
                nsi = si.wrapping_add(delta) & am;
                ndi = di.wrapping_add(delta) & am;
            }
            Op::Scas => {
                let b = ctx.read_mem(sreg::ES, di, size)?;
                let a = ctx.gpr(reg::RAX, size);
                let (_, f) = flags::sub(a, b, 0, size);
                set_flags(ctx, fl::STATUS, f);
                ndi = di.wrapping_add(delta) & am;
            }
            Op::Lods => {
                let v = ctx.read_mem(src_seg, si, size)?;
                ctx.set_gpr(reg::RAX, size, v);
                nsi = si.wrapping_add(delta) & am;
            }
            Op::Stos => {
                let v = ctx.gpr(reg::RAX, size);
                ctx.write_mem(sreg::ES, di, size, v)?;
                ndi = di.wrapping_add(delta) & am;
            }
            Op::Ins => {
                ctx.probe_write(sreg::ES, di, size)?;
                let v = ctx.plat.io_read(port, size as u8);
                ctx.write_mem(sreg::ES, di, size, u64::from(v))?;
                ndi = di.wrapping_add(delta) & am;
            }
            Op::Outs => {
                let v = ctx.read_mem(src_seg, si, size)?;
                ctx.plat.io_write(port, size as u8, v as u32);
                nsi = si.wrapping_add(delta) & am;
            }
        }
        if nsi != si {
            ctx.set_gpr(reg::RSI, asz, nsi);
        }
        if ndi != di {
            ctx.set_gpr(reg::RDI, asz, ndi);
        }
        if !rep {
            return Ok(());
        }
        let cx = ctx.gpr(reg::RCX, asz).wrapping_sub(1) & am;
        ctx.set_gpr(reg::RCX, asz, cx);
        if cond && ((ctx.cpu.s.rflags & fl::ZF != 0) == stop_on_zf) {
            return Ok(());
        }
    }
}

/// True for the mnemonics this module implements (used by the dispatcher's tests).
pub fn is_string_mnemonic(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Movsq
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsd
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd
    )
}
