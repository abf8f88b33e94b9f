//! String instructions: MOVS, CMPS, SCAS, LODS, STOS, INS, OUTS with REP/REPE/REPNE
//! (Intel SDM Vol. 1 §7.3.9; Vol. 2 pages "MOVS", "CMPS", "SCAS", "LODS", "STOS", "INS",
//! "OUTS", "REP/REPE/REPZ/REPNE/REPNZ").
//!
//! The address size (from iced's operand kind: `MemorySegSI`/`ESI`/`RSI`, `MemoryESDI`/...)
//! selects SI/ESI/RSI, DI/EDI/RDI and the CX/ECX/RCX counter. The source segment honours
//! overrides; the destination is always ES. Each iteration commits its registers after its
//! accesses succeed, so a fault leaves the completed iterations in place (as hardware does).
//! A REP instruction runs at most [`CHUNK`] iterations per step and then re-executes itself,
//! so pending interrupts are taken between chunks. Forward REP MOVS/STOS over RAM move whole
//! page-bounded runs at once (see `bulk`), with the same architectural result.

use super::set_flags;
use crate::cpu::flags::{self, mask};
use crate::cpu::{Ctx, Platform, Res};
use crate::mmu::walk::Access;
use iced_x86::{Instruction, OpKind};
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
/// CMPS m, m (flags of SRC - DEST, i.e. `[SI]` - `ES:[DI]`).
pub fn cmps<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Cmps)
}
/// SCAS: flags of accumulator - `ES:[DI]`.
pub fn scas<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Scas)
}
/// LODS: accumulator = `[SI]`.
pub fn lods<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Lods)
}
/// STOS: `ES:[DI]` = accumulator.
pub fn stos<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    run(ctx, insn, Op::Stos)
}
/// INS: `ES:[DI]` = port DX. IOPL-sensitive: checked by `ring::io::check_io` and counted in the
/// ring statistics.
pub fn ins<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    io_checked(ctx, insn, Op::Ins)
}
/// OUTS: port DX = `[SI]`. IOPL-sensitive like INS.
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
    // With debug breakpoints enabled, element by element: a data breakpoint traps after the
    // iteration that hit it (SDM Vol. 3B §18.3.1.2).
    let bulk_ok = rep
        && matches!(op, Op::Movs | Op::Stos)
        && ctx.cpu.s.rflags & fl::DF == 0
        && ctx.cpu.s.dr[7] & crate::cpu::debug::DR7_ENABLES == 0;
    let mut n = 0;
    loop {
        if rep {
            let cx = ctx.gpr(reg::RCX, asz);
            if cx == 0 {
                return Ok(());
            }
            if n >= CHUNK || ctx.cpu.db_hits != 0 {
                // Leave RIP at this instruction; it resumes after pending events (or the #DB
                // trap of a data breakpoint the last iteration hit).
                ctx.next_rip = ctx.cpu.cur_rip;
                return Ok(());
            }
            if bulk_ok {
                let max = cx.min(u64::from(CHUNK - n));
                let k = bulk(ctx, op, src_seg, asz, size, max);
                if k > 0 {
                    let bytes = k * u64::from(size);
                    if op == Op::Movs {
                        let si = ctx.gpr(reg::RSI, asz).wrapping_add(bytes) & am;
                        ctx.set_gpr(reg::RSI, asz, si);
                    }
                    let di = ctx.gpr(reg::RDI, asz).wrapping_add(bytes) & am;
                    ctx.set_gpr(reg::RDI, asz, di);
                    ctx.set_gpr(reg::RCX, asz, cx - k);
                    n += k as u32;
                    continue;
                }
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

/// Bulk path of a forward REP MOVS/STOS: moves as many whole elements (at most `max`) as lie
/// within one RAM page on each side, within the segment limits and without address-size
/// wrap-around, through the ordinary linear-memory accessors. Returns how many elements it did;
/// 0 means "take the element-by-element path" (page or limit boundary, MMIO, a pending fault,
/// or an overlap where element order matters), which then faults precisely if it must.
fn bulk<P: Platform + ?Sized>(
    ctx: &mut Ctx<'_, P>,
    op: Op,
    src_seg: usize,
    asz: u32,
    size: u32,
    max: u64,
) -> u64 {
    let sz = u64::from(size);
    let am = mask(asz);
    let di = ctx.gpr(reg::RDI, asz);
    let si = ctx.gpr(reg::RSI, asz);
    let Ok(la_d) = ctx.linear(sreg::ES, di, size, true) else {
        return 0;
    };
    let mut n = max.min((4096 - (la_d & 0xfff)) / sz);
    if asz < 8 {
        n = n.min((am - di + 1) / sz);
    }
    let mut la_s = 0;
    if op == Op::Movs {
        let Ok(la) = ctx.linear(src_seg, si, size, false) else {
            return 0;
        };
        la_s = la;
        n = n.min((4096 - (la_s & 0xfff)) / sz);
        if asz < 8 {
            n = n.min((am - si + 1) / sz);
        }
    }
    if n < 2 {
        return 0;
    }
    let bytes = n * sz;
    let blen = bytes as u32;
    if ctx.linear(sreg::ES, di, blen, true).is_err() {
        return 0;
    }
    let Ok(pd) = ctx.translate(la_d, Access::Write, false) else {
        return 0;
    };
    if pd.host.is_none() {
        return 0;
    }
    // Most copies are short (memcpy of a few cache lines): zero only what is used.
    let mut small = [0u8; 256];
    let mut big = Vec::new();
    let data = if bytes <= 256 {
        &mut small[..bytes as usize]
    } else {
        big.resize(bytes as usize, 0);
        &mut big[..]
    };
    if op == Op::Movs {
        if ctx.linear(src_seg, si, blen, false).is_err() {
            return 0;
        }
        let Ok(ps) = ctx.translate(la_s, Access::Read, false) else {
            return 0;
        };
        if ps.host.is_none() {
            return 0;
        }
        // A destination that starts inside the source range replicates elements when copied
        // one by one; leave that to the exact path.
        let (pa_s, pa_d) = (ps.pa_page | (la_s & 0xfff), pd.pa_page | (la_d & 0xfff));
        if pa_d > pa_s && pa_d < pa_s + bytes {
            return 0;
        }
        if ctx.read_linear_bytes(la_s, data, false).is_err() {
            return 0;
        }
    } else {
        let v = ctx.gpr(reg::RAX, size).to_le_bytes();
        for chunk in data.chunks_exact_mut(size as usize) {
            chunk.copy_from_slice(&v[..size as usize]);
        }
    }
    if ctx.write_linear_bytes(la_d, data, false).is_err() {
        return 0;
    }
    n
}
