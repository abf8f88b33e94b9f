//! x87 instruction semantics (SDM Vol. 1 §8.3 instruction set, Vol. 2 instruction pages).
//!
//! Every instruction reads its memory operand first and writes memory before committing any
//! register state, so a fault leaves the FPU unchanged (precise exceptions).

use super::sf::{self, Class, Cmp, Op, Unp, F32, F64, F80};
use super::{check_x87, consts, env_of, FpuExt, C0, C1, C2, C3, SF};
use crate::cpu::{Ctx, Fault, Platform, Res};
use iced_x86::{Code, Instruction, MemorySize, Mnemonic, OpKind, Register};
use jit::abi::{cr, flags as fl};

/// Indefinite (QNaN) in double-extended format.
pub const INDEF: u128 = 0xFFFF_C000_0000_0000_0000;

fn st_index(r: Register) -> Option<usize> {
    let n = r as u32;
    let b = Register::ST0 as u32;
    if (b..b + 8).contains(&n) {
        Some((n - b) as usize)
    } else {
        None
    }
}

fn mem_operand(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory)
}

/// Loads a memory operand as an unpacked double-extended value (exact conversion).
fn load_mem<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<Unp> {
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    Ok(match insn.memory_size() {
        MemorySize::Float32 => sf::unpack(u128::from(ctx.read_mem(seg, off, 4)?), F32),
        MemorySize::Float64 => sf::unpack(u128::from(ctx.read_mem(seg, off, 8)?), F64),
        MemorySize::Float80 => {
            let mut b = [0u8; 16];
            ctx.read_mem_bytes(seg, off, &mut b[..10])?;
            sf::unpack(u128::from_le_bytes(b), F80)
        }
        MemorySize::Int16 => int_unp(i64::from(ctx.read_mem(seg, off, 2)? as u16 as i16)),
        MemorySize::Int32 => int_unp(i64::from(ctx.read_mem(seg, off, 4)? as u32 as i32)),
        MemorySize::Int64 => int_unp(ctx.read_mem(seg, off, 8)? as i64),
        _ => return Err(Fault::Ud),
    })
}

fn int_unp(v: i64) -> Unp {
    let (b, _) = sf::from_int(v, F80, &sf::Env::nearest(F80));
    sf::unpack(b, F80)
}

/// Records the last-instruction pointers for a non-control instruction (§8.1.8).
fn note_ip<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) {
    let mem = if mem_operand(insn) {
        Some((ctx.ea(insn), ctx.cpu.s.seg[ctx.mem_seg(insn)].selector))
    } else {
        None
    };
    let cs_seg = ctx.cpu.s.seg[jit::abi::sreg::CS];
    let cs = cs_seg.selector;
    // FOP: the low 3 bits of the escape opcode and the ModR/M byte (§8.1.8). The bytes were
    // just fetched, so re-reading them cannot fault in practice; if it does, FOP is kept.
    let mut bytes = [0u8; 15];
    let len = insn.len().min(15);
    let la = if ctx.cpu.mode64() {
        ctx.cpu.cur_rip
    } else {
        cs_seg.base.wrapping_add(ctx.cpu.cur_rip) & 0xffff_ffff
    };
    let fop = if ctx.read_linear_bytes(la, &mut bytes[..len], false).is_ok() {
        let mut i = 0;
        while i + 1 < len
            && (matches!(
                bytes[i],
                0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0x9b
            ) || (ctx.cpu.mode64() && bytes[i] & 0xf0 == 0x40))
        {
            i += 1;
        }
        if (0xd8..=0xdf).contains(&bytes[i]) && i + 1 < len {
            Some((u16::from(bytes[i] & 7) << 8) | u16::from(bytes[i + 1]))
        } else {
            None
        }
    } else {
        None
    };
    let f = &mut ctx.cpu.s.fpu;
    if let Some(op) = fop {
        f.fop = op;
    }
    f.fip = ctx.cpu.cur_rip;
    f.fcs = cs;
    if let Some((dp, ds)) = mem {
        f.fdp = dp;
        f.fds = ds;
    }
}

/// Executes `insn` if it is an x87 instruction.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    if insn.has_lock_prefix() && is_x87(m) {
        return Some(Err(Fault::Ud));
    }
    let r = match m {
        // 8087/287 FENI, FDISI, FSETPM: no-ops on later processors (SDM Vol. 1 §8.8 note).
        M::Fneni | M::Fndisi | M::Fnsetpm | M::Feni | M::Fdisi | M::Fsetpm => check_x87(ctx, false),
        M::Fninit | M::Fnclex | M::Fnstcw | M::Fnstsw | M::Fnstenv | M::Fnsave => {
            check_x87(ctx, false).and_then(|_| control(ctx, insn))
        }
        M::Finit
        | M::Fclex
        | M::Fstcw
        | M::Fstsw
        | M::Fstenv
        | M::Fsave
        | M::Fldcw
        | M::Fldenv
        | M::Frstor => check_x87(ctx, true).and_then(|_| control(ctx, insn)),
        M::Wait => {
            let cr0 = ctx.cpu.s.cr0;
            if cr0 & cr::CR0_TS != 0 && cr0 & cr::CR0_MP != 0 {
                Err(Fault::Nm)
            } else if ctx.cpu.s.fpu.fsw & super::ES != 0 {
                Err(Fault::Mf)
            } else {
                Ok(())
            }
        }
        M::Fld
        | M::Fild
        | M::Fbld
        | M::Fst
        | M::Fstp
        | M::Fstpnce
        | M::Fist
        | M::Fistp
        | M::Fisttp
        | M::Fbstp
        | M::Fld1
        | M::Fldz
        | M::Fldpi
        | M::Fldl2e
        | M::Fldl2t
        | M::Fldlg2
        | M::Fldln2
        | M::Fxch
        | M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr
        | M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ficom
        | M::Ficomp
        | M::Fcomi
        | M::Fcomip
        | M::Fucomi
        | M::Fucomip
        | M::Ftst
        | M::Fxam
        | M::Fchs
        | M::Fabs
        | M::Fsqrt
        | M::Frndint
        | M::Fscale
        | M::Fxtract
        | M::Fprem
        | M::Fprem1
        | M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu
        | M::Ffree
        | M::Ffreep
        | M::Fincstp
        | M::Fdecstp
        | M::Fnop
        | M::Fsin
        | M::Fcos
        | M::Fsincos
        | M::Fptan
        | M::Fpatan
        | M::F2xm1
        | M::Fyl2x
        | M::Fyl2xp1 => check_x87(ctx, true).and_then(|_| {
            let saved = ctx.cpu.s.fpu;
            // C1 is cleared unless the instruction sets it (rounding, stack fault, FXAM).
            ctx.cpu.s.fpu.fsw &= !C1;
            let r = arith(ctx, insn);
            if r.is_err() {
                ctx.cpu.s.fpu = saved;
            } else {
                note_ip(ctx, insn);
            }
            r
        }),
        _ => return None,
    };
    Some(r)
}

fn is_x87(m: Mnemonic) -> bool {
    format!("{m:?}").starts_with('F') || m == Mnemonic::Wait
}

/// Stack underflow: IE + SF with C1 = 0 (§8.5.1.1). Returns true if the masked response
/// (store the indefinite) should be applied.
fn underflow(f: &mut jit::abi::FpuState) -> bool {
    f.fsw &= !C1;
    f.raise(sf::IE | u32::from(SF))
}

/// Stack overflow: IE + SF with C1 = 1.
fn overflow(f: &mut jit::abi::FpuState) -> bool {
    f.fsw |= C1;
    f.raise(sf::IE | u32::from(SF))
}

/// Pushes `v`, handling stack overflow (the masked response pushes the indefinite).
fn push_checked(f: &mut jit::abi::FpuState, v: u128) {
    if !f.st_empty(7) {
        if overflow(f) {
            f.push(INDEF);
        }
        return;
    }
    f.push(v);
}

fn set_c1(f: &mut jit::abi::FpuState, up: bool) {
    if up {
        f.fsw |= C1;
    } else {
        f.fsw &= !C1;
    }
}

fn rc(fcw: u16) -> u32 {
    u32::from(fcw >> 10) & 3
}

fn arith<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    let has_mem = mem_operand(insn);
    // C1 is cleared by most instructions unless they set it (§8.1.3.1); done per case.
    match m {
        M::Fld | M::Fild | M::Fbld => {
            let v = if m == M::Fbld {
                let seg = ctx.mem_seg(insn);
                let off = ctx.ea(insn);
                let mut b = [0u8; 10];
                ctx.read_mem_bytes(seg, off, &mut b)?;
                Some(bcd_to_f80(&b))
            } else if has_mem && insn.memory_size() == MemorySize::Float80 {
                // FLD m80 loads the bits unchanged (no conversion, no exception).
                let seg = ctx.mem_seg(insn);
                let off = ctx.ea(insn);
                let mut b = [0u8; 16];
                ctx.read_mem_bytes(seg, off, &mut b[..10])?;
                Some(u128::from_le_bytes(b))
            } else if has_mem {
                let u = load_mem(ctx, insn)?;
                let (b, flags, _) = sf::convert(&u, F80, &sf::Env::nearest(F80));
                let f = &mut ctx.cpu.s.fpu;
                if !f.st_empty(7) {
                    if overflow(f) {
                        f.push(INDEF);
                    }
                    return Ok(());
                }
                // An SNaN source raises IE; a denormal single/double raises DE.
                let flags = if insn.memory_size() == MemorySize::Float80 {
                    0
                } else {
                    flags
                };
                if !f.raise(flags) {
                    return Ok(());
                }
                f.fsw &= !C1;
                f.push(b);
                return Ok(());
            } else {
                let i = st_index(insn.op_register(0)).unwrap_or(0);
                let f = &mut ctx.cpu.s.fpu;
                if f.st_empty(i) {
                    if underflow(f) {
                        f.push(INDEF);
                    }
                    return Ok(());
                }
                Some(f.st(i))
            };
            let f = &mut ctx.cpu.s.fpu;
            f.fsw &= !C1;
            push_checked(f, v.unwrap_or(INDEF));
            Ok(())
        }
        M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => {
            let f = &mut ctx.cpu.s.fpu;
            let r = rc(f.fcw);
            let v = match m {
                M::Fld1 => 0x3FFF_8000_0000_0000_0000,
                M::Fldz => 0,
                M::Fldpi => consts::PI.rounded(r),
                M::Fldl2e => consts::L2E.rounded(r),
                M::Fldl2t => consts::L2T.rounded(r),
                M::Fldlg2 => consts::LG2.rounded(r),
                _ => consts::LN2.rounded(r),
            };
            f.fsw &= !C1;
            push_checked(f, v);
            Ok(())
        }
        M::Fst | M::Fstp | M::Fstpnce | M::Fist | M::Fistp | M::Fisttp | M::Fbstp => {
            store(ctx, insn)
        }
        M::Fxch => {
            let i = st_index(insn.op_register(1)).unwrap_or(1);
            let f = &mut ctx.cpu.s.fpu;
            let (e0, ei) = (f.st_empty(0), f.st_empty(i));
            if e0 || ei {
                if !underflow(f) {
                    return Ok(());
                }
                let a = if e0 { INDEF } else { f.st(0) };
                let b = if ei { INDEF } else { f.st(i) };
                f.set_st(0, b);
                f.set_st(i, a);
                return Ok(());
            }
            let (a, b) = (f.st(0), f.st(i));
            f.set_st(0, b);
            f.set_st(i, a);
            f.fsw &= !C1;
            Ok(())
        }
        M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr => {
            let (op, rev) = match m {
                M::Fadd | M::Faddp | M::Fiadd => (Op::Add, false),
                M::Fsub | M::Fsubp | M::Fisub => (Op::Sub, false),
                M::Fsubr | M::Fsubrp | M::Fisubr => (Op::Sub, true),
                M::Fmul | M::Fmulp | M::Fimul => (Op::Mul, false),
                M::Fdiv | M::Fdivp | M::Fidiv => (Op::Div, false),
                _ => (Op::Div, true),
            };
            let pop = matches!(
                m,
                M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
            );
            // dest index, and the source (unpacked) or its stack index.
            let (dst, src) = if has_mem {
                (0usize, Err(load_mem(ctx, insn)?))
            } else {
                let d = st_index(insn.op_register(0)).unwrap_or(0);
                let s = st_index(insn.op_register(1)).unwrap_or(0);
                (d, Ok(s))
            };
            let f = &mut ctx.cpu.s.fpu;
            let src_empty = matches!(src, Ok(s) if f.st_empty(s));
            if f.st_empty(dst) || src_empty {
                if underflow(f) {
                    f.set_st(dst, INDEF);
                    if pop {
                        f.pop();
                    }
                }
                return Ok(());
            }
            let d = sf::unpack(f.st(dst), F80);
            let s = match src {
                Ok(i) => sf::unpack(f.st(i), F80),
                Err(u) => u,
            };
            let (a, b) = if rev { (s, d) } else { (d, s) };
            let (r, flags, up) = arith_wrapped(op, &a, &b, f.fcw);
            if f.raise(flags) {
                f.set_st(dst, r);
                set_c1(f, up);
                if pop {
                    f.pop();
                }
            }
            Ok(())
        }
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ficom
        | M::Ficomp
        | M::Fcomi
        | M::Fcomip
        | M::Fucomi
        | M::Fucomip
        | M::Ftst => {
            let unordered_ok = matches!(
                m,
                M::Fucom | M::Fucomp | M::Fucompp | M::Fucomi | M::Fucomip
            );
            let eflags = matches!(m, M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip);
            let pops = match m {
                M::Fcomp | M::Fucomp | M::Ficomp | M::Fcomip | M::Fucomip => 1,
                M::Fcompp | M::Fucompp => 2,
                _ => 0,
            };
            let src = if m == M::Ftst {
                Err(sf::unpack(0, F80))
            } else if has_mem {
                Err(load_mem(ctx, insn)?)
            } else {
                let i = match insn.op_count() {
                    0 => Some(1),
                    1 => st_index(insn.op_register(0)),
                    _ => st_index(insn.op_register(1)),
                };
                Ok(i.unwrap_or(1))
            };
            let f = &mut ctx.cpu.s.fpu;
            let src_empty = matches!(src, Ok(s) if f.st_empty(s));
            let (rel, flags) = if f.st_empty(0) || src_empty {
                (Cmp::Unordered, sf::IE | u32::from(SF))
            } else {
                let a = sf::unpack(f.st(0), F80);
                let b = match src {
                    Ok(i) => sf::unpack(f.st(i), F80),
                    Err(u) => u,
                };
                sf::compare(&a, &b, !unordered_ok)
            };
            if flags & u32::from(SF) != 0 {
                f.fsw &= !C1;
            }
            if !f.raise(flags) {
                return Ok(());
            }
            let (c3, c2, c0) = match rel {
                Cmp::Greater => (false, false, false),
                Cmp::Less => (false, false, true),
                Cmp::Equal => (true, false, false),
                Cmp::Unordered => (true, true, true),
            };
            if eflags {
                let rf = &mut ctx.cpu.s.rflags;
                *rf &= !(fl::ZF | fl::PF | fl::CF | fl::OF | fl::SF | fl::AF);
                if c3 {
                    *rf |= fl::ZF;
                }
                if c2 {
                    *rf |= fl::PF;
                }
                if c0 {
                    *rf |= fl::CF;
                }
                f.fsw &= !C1;
            } else {
                f.set_cc(u16::from(c0) | (u16::from(c2) << 2) | (u16::from(c3) << 3));
            }
            for _ in 0..pops {
                f.pop();
            }
            Ok(())
        }
        M::Fxam => {
            let f = &mut ctx.cpu.s.fpu;
            let v = f.st(0);
            let sign = (v >> 79) & 1 != 0;
            let u = sf::unpack(v, F80);
            // (C3, C2, C0) per the FXAM table (SDM Vol. 2A "FXAM").
            let cls: u16 = if f.st_empty(0) {
                0b101
            } else {
                match u.class {
                    Class::Unsupported => 0b000,
                    Class::QNan | Class::SNan => 0b001,
                    Class::Inf => 0b011,
                    Class::Zero => 0b100,
                    Class::Finite if u.denormal => 0b110,
                    Class::Finite => 0b010,
                }
            };
            let cc =
                ((cls >> 2) & 1) << 3 | ((cls >> 1) & 1) << 2 | (cls & 1) | (u16::from(sign) << 1);
            f.set_cc(cc);
            Ok(())
        }
        M::Fchs | M::Fabs | M::Fsqrt | M::Frndint | M::Fsin | M::Fcos | M::F2xm1 => {
            let f = &mut ctx.cpu.s.fpu;
            if f.st_empty(0) {
                if underflow(f) {
                    f.set_st(0, INDEF);
                }
                return Ok(());
            }
            let v = f.st(0);
            let env = if m == M::Fsqrt {
                env_of(f.fcw)
            } else {
                sf::Env {
                    prec: 64,
                    ..env_of(f.fcw)
                }
            };
            let (r, flags, up) = match m {
                M::Fchs => (v ^ (1 << 79), 0, false),
                M::Fabs => (v & !(1 << 79), 0, false),
                M::Fsqrt => sf::sqrt(&sf::unpack(v, F80), F80, &env, true),
                M::Frndint => sf::round_int(&sf::unpack(v, F80), F80, rc(f.fcw)),
                _ => {
                    let u = sf::unpack(v, F80);
                    match super::transc::unary(m, &u, &env) {
                        Some(x) => x,
                        None => {
                            // Out of range (|x| >= 2^63): C2 = 1, operand unchanged.
                            f.fsw |= C2;
                            return Ok(());
                        }
                    }
                }
            };
            if f.raise(flags) {
                f.set_st(0, r);
                set_c1(f, up);
                if matches!(m, M::Fsin | M::Fcos) {
                    f.fsw &= !C2;
                }
            }
            Ok(())
        }
        M::Fsincos | M::Fptan => {
            let f = &mut ctx.cpu.s.fpu;
            if f.st_empty(0) {
                if underflow(f) {
                    f.set_st(0, INDEF);
                    f.push(INDEF);
                }
                return Ok(());
            }
            if !f.st_empty(7) {
                if overflow(f) {
                    f.set_st(0, INDEF);
                    f.push(INDEF);
                }
                return Ok(());
            }
            let u = sf::unpack(f.st(0), F80);
            let env = sf::Env {
                prec: 64,
                ..env_of(f.fcw)
            };
            match super::transc::pair(m, &u, &env) {
                None => {
                    f.fsw |= C2;
                    Ok(())
                }
                Some((st1, st0, flags, up)) => {
                    if f.raise(flags) {
                        f.set_st(0, st1);
                        f.push(st0);
                        set_c1(f, up);
                        f.fsw &= !C2;
                    }
                    Ok(())
                }
            }
        }
        M::Fpatan | M::Fyl2x | M::Fyl2xp1 | M::Fscale | M::Fprem | M::Fprem1 => {
            let f = &mut ctx.cpu.s.fpu;
            let pop = matches!(m, M::Fpatan | M::Fyl2x | M::Fyl2xp1);
            if f.st_empty(0) || f.st_empty(1) {
                if underflow(f) {
                    if pop {
                        f.set_st(1, INDEF);
                        f.pop();
                    } else {
                        f.set_st(0, INDEF);
                    }
                }
                return Ok(());
            }
            let a = sf::unpack(f.st(0), F80);
            let b = sf::unpack(f.st(1), F80);
            // Precision control affects only FADD/FSUB/FMUL/FDIV/FSQRT (SDM Vol. 1 §8.1.5.2).
            let env = sf::Env {
                prec: 64,
                ..env_of(f.fcw)
            };
            match m {
                M::Fscale => {
                    let (r, flags, up) = fscale(&a, &b, &env);
                    if f.raise(flags) {
                        f.set_st(0, r);
                        set_c1(f, up);
                    }
                }
                M::Fprem | M::Fprem1 => {
                    let (r, flags, cc) = fprem(&a, &b, m == M::Fprem1);
                    if f.raise(flags) {
                        f.set_st(0, r);
                        f.set_cc(cc);
                    }
                }
                _ => {
                    let (r, flags, up) = super::transc::binary(m, &a, &b, &env);
                    if f.raise(flags) {
                        f.set_st(1, r);
                        f.pop();
                        set_c1(f, up);
                    }
                }
            }
            Ok(())
        }
        M::Fxtract => {
            let f = &mut ctx.cpu.s.fpu;
            if f.st_empty(0) {
                if underflow(f) {
                    f.set_st(0, INDEF);
                    f.push(INDEF);
                }
                return Ok(());
            }
            if !f.st_empty(7) {
                if overflow(f) {
                    f.set_st(0, INDEF);
                    f.push(INDEF);
                }
                return Ok(());
            }
            let v = f.st(0);
            let u = sf::unpack(v, F80);
            let (e, s, flags) = match u.class {
                Class::Finite => (
                    int_bits(i64::from(u.exp)),
                    sf::pack_exact(u.sign, 0, u.sig, F80),
                    if u.denormal { sf::DE } else { 0 },
                ),
                Class::Zero => (F80.inf(true), v, sf::ZE),
                Class::Inf => (F80.inf(false), v, 0),
                Class::QNan => (v, v, 0),
                Class::SNan => {
                    let q = v | (1 << 62);
                    (q, q, sf::IE)
                }
                Class::Unsupported => (INDEF, INDEF, sf::IE),
            };
            if f.raise(flags) {
                f.set_st(0, e);
                f.push(s);
            }
            Ok(())
        }
        M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu => {
            let rf = ctx.cpu.s.rflags;
            let (cf, zf, pf) = (rf & fl::CF != 0, rf & fl::ZF != 0, rf & fl::PF != 0);
            let cond = match m {
                M::Fcmovb => cf,
                M::Fcmove => zf,
                M::Fcmovbe => cf || zf,
                M::Fcmovu => pf,
                M::Fcmovnb => !cf,
                M::Fcmovne => !zf,
                M::Fcmovnbe => !cf && !zf,
                _ => !pf,
            };
            let i = st_index(insn.op_register(1)).unwrap_or(1);
            let f = &mut ctx.cpu.s.fpu;
            if f.st_empty(0) || f.st_empty(i) {
                if underflow(f) {
                    f.set_st(0, INDEF);
                }
                return Ok(());
            }
            f.fsw &= !C1;
            if cond {
                let v = f.st(i);
                f.set_st(0, v);
            }
            Ok(())
        }
        M::Ffree | M::Ffreep => {
            let i = st_index(insn.op_register(0)).unwrap_or(0);
            let f = &mut ctx.cpu.s.fpu;
            let p = f.phys(i);
            f.set_tag(p, super::TAG_EMPTY);
            if m == M::Ffreep {
                f.set_top(f.top() + 1);
            }
            Ok(())
        }
        M::Fincstp | M::Fdecstp => {
            let f = &mut ctx.cpu.s.fpu;
            let t = if m == M::Fincstp {
                f.top() + 1
            } else {
                f.top() + 7
            };
            f.set_top(t);
            f.fsw &= !C1;
            Ok(())
        }
        M::Fnop => Ok(()),
        _ => Err(Fault::Ud),
    }
}

/// Exponent bias adjustment for unmasked x87 overflow/underflow (SDM Vol. 1 §8.5.4.1,
/// §8.5.5.1).
const WRAP: i32 = 24576;

/// Two-operand x87 arithmetic with the unmasked-overflow/underflow responses: the result is
/// delivered with its exponent divided (overflow) or multiplied (underflow) by 2^24576. With
/// UE unmasked, an exact tiny result also signals underflow.
fn arith_wrapped(op: Op, a: &Unp, b: &Unp, fcw: u16) -> (u128, u32, bool) {
    let env = env_of(fcw);
    let (r, mut flags, up) = sf::arith(op, a, b, F80, &env, true);
    let denormal = (r >> 64) & 0x7fff == 0 && r as u64 != 0;
    if fcw & 0x10 == 0 && denormal {
        flags |= sf::UE;
    }
    let adj = if flags & sf::OE != 0 && fcw & 0x08 == 0 {
        -WRAP
    } else if flags & sf::UE != 0 && fcw & 0x10 == 0 {
        WRAP
    } else {
        return (r, flags, up);
    };
    if a.class != Class::Finite || b.class != Class::Finite {
        return (r, flags, up);
    }
    let (mut a2, mut b2) = (*a, *b);
    let ok = |e: i32| (-16382..=16383).contains(&e);
    match op {
        Op::Add | Op::Sub => {
            a2.exp += adj;
            b2.exp += adj;
        }
        Op::Mul => {
            if ok(a.exp + adj) {
                a2.exp += adj;
            } else {
                b2.exp += adj;
            }
        }
        Op::Div => {
            if ok(a.exp + adj) {
                a2.exp += adj;
            } else {
                b2.exp -= adj;
            }
        }
    }
    let (r2, f2, up2) = sf::arith(op, &a2, &b2, F80, &env, true);
    (
        r2,
        (flags & (sf::OE | sf::UE | sf::DE)) | (f2 & sf::PE),
        up2,
    )
}

fn int_bits(v: i64) -> u128 {
    sf::from_int(v, F80, &sf::Env::nearest(F80)).0
}

/// FST/FSTP/FIST/FISTP/FISTTP/FBSTP (SDM Vol. 2A). The memory write happens before any state
/// change.
fn store<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    let pop = matches!(m, M::Fstp | M::Fstpnce | M::Fistp | M::Fisttp | M::Fbstp);
    if !mem_operand(insn) {
        // FST/FSTP ST(i).
        let i = st_index(insn.op_register(0)).unwrap_or(0);
        let f = &mut ctx.cpu.s.fpu;
        if f.st_empty(0) {
            if underflow(f) {
                f.set_st(i, INDEF);
                if pop {
                    f.pop();
                }
            }
            return Ok(());
        }
        let v = f.st(0);
        f.set_st(i, v);
        f.fsw &= !C1;
        if pop {
            f.pop();
        }
        return Ok(());
    }
    let seg = ctx.mem_seg(insn);
    let off = ctx.ea(insn);
    let fcw = ctx.cpu.s.fpu.fcw;
    let empty = ctx.cpu.s.fpu.st_empty(0);
    let v = ctx.cpu.s.fpu.st(0);
    let u = sf::unpack(v, F80);
    let env = sf::Env {
        prec: 64,
        ..env_of(fcw)
    };
    // (bytes, length, flags, c1)
    let (bytes, len, mut flags, up): (u128, usize, u32, bool) = match insn.memory_size() {
        MemorySize::Float32 | MemorySize::Float64 => {
            let fmt = if insn.memory_size() == MemorySize::Float32 {
                F32
            } else {
                F64
            };
            let env = sf::Env {
                prec: fmt.prec,
                ..env
            };
            if empty {
                (
                    fmt.indefinite(),
                    (fmt.width() / 8) as usize,
                    sf::IE | u32::from(SF),
                    false,
                )
            } else {
                let (b, f, up) = sf::convert(&u, fmt, &env);
                // Stores do not report DE for a denormal source (observed on hardware).
                (b, (fmt.width() / 8) as usize, f & !sf::DE, up)
            }
        }
        MemorySize::Float80 => {
            if empty {
                (INDEF, 10, sf::IE | u32::from(SF), false)
            } else {
                (v, 10, 0, false)
            }
        }
        MemorySize::Int16 | MemorySize::Int32 | MemorySize::Int64 => {
            let w = (insn.memory_size().size() * 8) as u32;
            let r = if m == M::Fisttp { 3 } else { rc(fcw) };
            if empty {
                (
                    u128::from(1u64 << (w - 1)),
                    (w / 8) as usize,
                    sf::IE | u32::from(SF),
                    false,
                )
            } else {
                let (x, f) = sf::to_int(&u, w, r);
                // C1 = rounded up in magnitude.
                let up = f & sf::PE != 0 && x != 0 && {
                    let back = int_unp(sign_extend(x, w));
                    (back.exp, back.sig) > (u.exp, u.sig)
                };
                (u128::from(x), (w / 8) as usize, f, up)
            }
        }
        MemorySize::Bcd => {
            if empty {
                (
                    0xFFFF_C000_0000_0000_0000,
                    10,
                    sf::IE | u32::from(SF),
                    false,
                )
            } else {
                let (x, f) = sf::to_int(&u, 64, rc(fcw));
                let xi = x as i64;
                if f & sf::IE != 0 || xi.unsigned_abs() > 999_999_999_999_999_999 {
                    (0xFFFF_C000_0000_0000_0000, 10, sf::IE | (f & sf::DE), false)
                } else {
                    {
                        let mut b = f80_bcd(xi);
                        if u.sign {
                            b |= 0x80 << 72;
                        }
                        let up = f & sf::PE != 0 && xi != 0 && {
                            let back = int_unp(xi);
                            (back.exp, back.sig) > (u.exp, u.sig)
                        };
                        (b, 10, f, up)
                    }
                }
            }
        }
        _ => return Err(Fault::Ud),
    };
    let f = &mut ctx.cpu.s.fpu;
    let unmasked = flags & !u32::from(f.fcw) & 0x3f;
    // Unmasked IE/DE: nothing is stored; unmasked OE/UE on stores also suppress the store
    // (SDM Vol. 1 §8.5.4.2: the register operand is left unchanged).
    if unmasked & (sf::IE | sf::DE | sf::OE | sf::UE) != 0 {
        if flags & u32::from(SF) != 0 {
            f.fsw &= !C1;
        }
        f.raise(flags);
        return Ok(());
    }
    ctx.write_mem_bytes(seg, off, &bytes.to_le_bytes()[..len])?;
    let f = &mut ctx.cpu.s.fpu;
    if flags & u32::from(SF) != 0 {
        f.fsw &= !C1;
        flags |= 0;
    } else {
        set_c1(f, up);
    }
    f.raise(flags);
    if pop {
        f.pop();
    }
    Ok(())
}

fn sign_extend(x: u64, w: u32) -> i64 {
    ((x << (64 - w)) as i64) >> (64 - w)
}

/// Packed BCD (18 digits + sign byte, SDM Vol. 1 §4.7) to double-extended (exact).
fn bcd_to_f80(b: &[u8; 10]) -> u128 {
    let mut v: i64 = 0;
    for i in (0..9).rev() {
        v = v * 100 + i64::from(b[i] >> 4) * 10 + i64::from(b[i] & 0xf);
    }
    if b[9] & 0x80 != 0 {
        if v == 0 {
            return 1 << 79;
        }
        v = -v;
    }
    int_bits(v)
}

fn f80_bcd(x: i64) -> u128 {
    let mut m = x.unsigned_abs();
    let mut out = [0u8; 16];
    for o in out.iter_mut().take(9) {
        let lo = (m % 10) as u8;
        m /= 10;
        let hi = (m % 10) as u8;
        m /= 10;
        *o = (hi << 4) | lo;
    }
    if x < 0 {
        out[9] = 0x80;
    }
    u128::from_le_bytes(out)
}

/// FSCALE: ST(0) * 2^trunc(ST(1)) (SDM Vol. 2A "FSCALE").
fn fscale(a: &Unp, b: &Unp, env: &sf::Env) -> (u128, u32, bool) {
    if a.is_nan() || b.is_nan() || a.class == Class::Unsupported || b.class == Class::Unsupported {
        let (r, f, _) = sf::arith(Op::Add, a, b, F80, env, true);
        return (r, f, false);
    }
    let de = if a.denormal || b.denormal { sf::DE } else { 0 };
    match (a.class, b.class) {
        (Class::Inf, Class::Inf) if b.sign => return (F80.indefinite(), sf::IE, false),
        (Class::Zero, Class::Inf) if !b.sign => return (F80.indefinite(), sf::IE, false),
        (Class::Inf, _) | (Class::Zero, _) => return (sf::pack_raw(a, F80), de, false),
        (_, Class::Inf) => {
            return if b.sign {
                (F80.zero(a.sign), de, false)
            } else {
                (F80.inf(a.sign), de, false)
            }
        }
        _ => {}
    }
    let n = if b.class == Class::Zero {
        0
    } else if b.exp > 20 {
        if b.sign {
            -100_000
        } else {
            100_000
        }
    } else {
        let (x, _) = sf::to_int(b, 64, 3);
        x as i64
    };
    let (r, f, up) = sf::finish(
        sf::Raw::Val(a.sign, a.exp + n as i32, u128::from(a.sig) << 64, false),
        F80,
        env,
    );
    (r, f | de, up)
}

/// FPREM/FPREM1 partial remainder (SDM Vol. 2A "FPREM"): returns (result, flags, C3..C0).
/// When the exponent difference exceeds 63 the reduction is partial (C2 = 1) by 32..63 bits.
fn fprem(a: &Unp, b: &Unp, ieee: bool) -> (u128, u32, u16) {
    if a.is_nan() || b.is_nan() || a.class == Class::Unsupported || b.class == Class::Unsupported {
        let (r, f, _) = sf::arith(Op::Add, a, b, F80, &sf::Env::nearest(F80), true);
        return (r, f, 0);
    }
    let de = if a.denormal || b.denormal { sf::DE } else { 0 };
    if a.class == Class::Inf || b.class == Class::Zero {
        return (F80.indefinite(), sf::IE | de, 0);
    }
    if a.class == Class::Zero || b.class == Class::Inf {
        return (sf::pack_raw(a, F80), de, 0);
    }
    let d = a.exp - b.exp;
    if d < 0 {
        if ieee && d == -1 && u128::from(a.sig) > u128::from(b.sig) / 2 {
            // |a| > |b|/2: the nearest quotient is 1.
        } else {
            return (sf::pack_raw(a, F80), de, 0);
        }
    }
    let (n, partial) = if d >= 64 {
        (32 + (d & 31), true)
    } else {
        (d.max(-1), false)
    };
    // a / b' where b' = b * 2^(d - n): quotient of (sa << n) / sb.
    let (num, den) = if n >= 0 {
        (u128::from(a.sig) << n, u128::from(b.sig))
    } else {
        (u128::from(a.sig), u128::from(b.sig) << 1)
    };
    let mut q = num / den;
    let mut r = num % den;
    let mut sign = a.sign;
    if ieee && !partial && (2 * r > den || (2 * r == den && q & 1 != 0)) {
        q += 1;
        r = den - r;
        sign = !sign;
    }
    // r * 2^(a.exp - n - 63) (for n = -1 the denominator was doubled: same scale).
    let scale = a.exp - n.max(0) - 63;
    let res = if r == 0 {
        F80.zero(a.sign)
    } else {
        let lz = r.leading_zeros();
        sf::finish(
            sf::Raw::Val(sign, scale + (127 - lz as i32), r << lz, false),
            F80,
            &sf::Env::nearest(F80),
        )
        .0
    };
    let cc = if partial {
        4
    } else {
        // C0 = Q2, C3 = Q1, C1 = Q0.
        (((q >> 2) & 1) as u16) | ((((q >> 1) & 1) as u16) << 3) | (((q & 1) as u16) << 1)
    };
    (res, de, cc)
}

/// Control instructions: FINIT, FCLEX, FSTCW, FLDCW, FSTSW, FSTENV, FLDENV, FSAVE, FRSTOR.
fn control<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Res<()> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Fninit | M::Finit => {
            super::state::finit(&mut ctx.cpu.s.fpu);
            Ok(())
        }
        M::Fnclex | M::Fclex => {
            ctx.cpu.s.fpu.fsw &= !0x80ff;
            Ok(())
        }
        M::Fnstcw | M::Fstcw => {
            let v = ctx.cpu.s.fpu.fcw;
            ctx.write_op(insn, 0, u64::from(v))
        }
        M::Fldcw => {
            let v = ctx.read_op(insn, 0)? as u16;
            let f = &mut ctx.cpu.s.fpu;
            f.fcw = v | 0x40;
            update_es(f);
            Ok(())
        }
        M::Fnstsw | M::Fstsw => {
            let v = ctx.cpu.s.fpu.fsw;
            if insn.code() == Code::Fnstsw_AX || insn.code() == Code::Fstsw_AX {
                ctx.set_reg(Register::AX, u64::from(v));
                Ok(())
            } else {
                ctx.write_op(insn, 0, u64::from(v))
            }
        }
        M::Fnstenv | M::Fstenv => super::state::fstenv(ctx, insn, false),
        M::Fnsave | M::Fsave => super::state::fstenv(ctx, insn, true),
        M::Fldenv => super::state::fldenv(ctx, insn, false),
        M::Frstor => super::state::fldenv(ctx, insn, true),
        _ => Err(Fault::Ud),
    }
}

/// Recomputes FSW.ES/B after the control or status word changed (§8.1.3.3).
pub fn update_es(f: &mut jit::abi::FpuState) {
    if f.fsw & !f.fcw & 0x3f != 0 {
        f.fsw |= super::ES | super::B;
    } else {
        f.fsw &= !(super::ES | super::B);
    }
}

#[allow(dead_code)]
fn _unused() -> u16 {
    C0 | C3
}
