//! General-purpose integer instructions, 8086 to x86-64 (Intel SDM Vol. 1 §5.1 "General-Purpose
//! Instructions", Vol. 2 instruction pages), one file per family.
//!
//! Every handler obeys the precise-exception rule: all reads and fault checks happen before any
//! architectural state is committed; memory writes come first (they are the only commits that
//! can fault) or are probed with [`Ctx::probe_write`], registers and flags last.

pub mod alu;
pub mod bits;
pub mod control;
pub mod data;
pub mod muldiv;
pub mod shift;
pub mod stack;
pub mod string;

use super::{Ctx, Fault, Platform, Res};
use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind};
use jit::abi::flags as fl;

/// A handler: the semantics of one instruction family member over [`Ctx`].
type Handler<P> = for<'a, 'b> fn(&'b mut Ctx<'a, P>, &Instruction) -> Res<()>;

/// Executes `insn` if it is an integer instruction this module implements.
///
/// A LOCK prefix on an instruction that does not accept it, or whose destination is not
/// memory, raises #UD (SDM Vol. 2A §2.1.1, "LOCK" instruction page).
#[inline]
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    let h = handler::<P>(insn)?;
    if insn.has_lock_prefix() && !lockable(insn) {
        return Some(Err(Fault::Ud));
    }
    Some(h(ctx, insn))
}

/// True if `insn` accepts a LOCK prefix: one of the read-modify-write instructions listed on the
/// LOCK page (SDM Vol. 2A) with a memory destination.
pub fn lockable(insn: &Instruction) -> bool {
    use Mnemonic as M;
    matches!(
        insn.mnemonic(),
        M::Add
            | M::Adc
            | M::And
            | M::Btc
            | M::Btr
            | M::Bts
            | M::Cmpxchg
            | M::Cmpxchg8b
            | M::Cmpxchg16b
            | M::Dec
            | M::Inc
            | M::Neg
            | M::Not
            | M::Or
            | M::Sbb
            | M::Sub
            | M::Xor
            | M::Xadd
            | M::Xchg
    ) && insn.op_kind(0) == OpKind::Memory
}

/// True if operand `i` is a segment, control, debug or test register (those forms of MOV,
/// PUSH and POP belong to the system instructions).
#[inline]
fn system_operand(insn: &Instruction, i: u32) -> bool {
    if insn.op_count() <= i || insn.op_kind(i) != OpKind::Register {
        return false;
    }
    let r = insn.op_register(i);
    r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr()
}

/// True if `insn` is a string instruction (as opposed to the SSE MOVSD/CMPSD of the same
/// mnemonic).
#[inline]
fn is_string_form(insn: &Instruction) -> bool {
    (0..insn.op_count().min(2)).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

/// Maps an instruction to its handler, or `None` if it is not an integer instruction.
fn handler<P: Platform + ?Sized>(insn: &Instruction) -> Option<Handler<P>> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        // data.rs
        M::Mov => {
            if system_operand(insn, 0) || system_operand(insn, 1) {
                return None;
            }
            data::mov
        }
        M::Movzx => data::movzx,
        M::Movsx | M::Movsxd => data::movsx,
        M::Lea => data::lea,
        M::Xchg => data::xchg,
        M::Xlatb => data::xlat,
        M::Cbw | M::Cwde | M::Cdqe => data::cbw,
        M::Cwd | M::Cdq | M::Cqo => data::cwd,
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => data::cmov,
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => data::setcc,
        M::Lahf => data::lahf,
        M::Sahf => data::sahf,
        M::Clc | M::Stc | M::Cmc | M::Cld | M::Std => data::flag_op,
        M::Xadd => data::xadd,
        M::Cmpxchg => data::cmpxchg,
        M::Cmpxchg8b | M::Cmpxchg16b => data::cmpxchg8b,
        M::Bound => data::bound,
        M::Daa => data::daa,
        M::Das => data::das,
        M::Aaa => data::aaa,
        M::Aas => data::aas,
        M::Aam => data::aam,
        M::Aad => data::aad,
        M::Salc => data::salc,
        M::Nop
        | M::Pause
        | M::Reservednop
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Clflush
        | M::Clflushopt
        | M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Clwb
        | M::Endbr32
        | M::Endbr64
        | M::Rdsspd
        | M::Rdsspq => data::nop,
        M::Movnti => data::mov,
        M::Ud0 | M::Ud1 | M::Ud2 | M::Movbe => data::ud,
        // alu.rs
        M::Add | M::Adc | M::Sub | M::Sbb | M::Cmp | M::And | M::Or | M::Xor | M::Test => {
            alu::binop
        }
        M::Inc | M::Dec => alu::incdec,
        M::Neg => alu::neg,
        M::Not => alu::not,
        // shift.rs
        M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shl | M::Sal | M::Shr | M::Sar => shift::shift,
        // muldiv.rs
        M::Mul => muldiv::mul,
        M::Imul => muldiv::imul,
        M::Div => muldiv::div,
        M::Idiv => muldiv::idiv,
        // bits.rs
        M::Bt | M::Bts | M::Btr | M::Btc => bits::bt,
        M::Bsf | M::Tzcnt => bits::bsf,
        M::Bsr | M::Lzcnt => bits::bsr,
        M::Shld | M::Shrd => bits::shld,
        M::Bswap => bits::bswap,
        M::Popcnt => bits::popcnt,
        M::Crc32 => bits::crc32,
        // control.rs
        M::Jmp => {
            if insn.is_jmp_far() || insn.is_jmp_far_indirect() {
                return None;
            }
            control::jmp
        }
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => control::jcc,
        M::Call => {
            if insn.is_call_far() || insn.is_call_far_indirect() {
                return None;
            }
            control::call
        }
        M::Ret => control::ret,
        M::Loop | M::Loope | M::Loopne => control::loop_,
        M::Jcxz | M::Jecxz | M::Jrcxz => control::jcxz,
        // stack.rs
        M::Push => {
            if system_operand(insn, 0) {
                return None;
            }
            stack::push
        }
        M::Pop => {
            if system_operand(insn, 0) {
                return None;
            }
            stack::pop
        }
        M::Pusha | M::Pushad => stack::pusha,
        M::Popa | M::Popad => stack::popa,
        M::Enter => stack::enter,
        M::Leave => stack::leave,
        // string.rs
        M::Movsb | M::Movsw | M::Movsq => string::movs,
        M::Movsd if is_string_form(insn) => string::movs,
        M::Cmpsb | M::Cmpsw | M::Cmpsq => string::cmps,
        M::Cmpsd if is_string_form(insn) => string::cmps,
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => string::scas,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => string::lods,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => string::stos,
        M::Insb | M::Insw | M::Insd => string::ins,
        M::Outsb | M::Outsw | M::Outsd => string::outs,
        _ => return None,
    })
}

/// Replaces the status flags selected by `which` with those of `f` (other RFLAGS bits kept).
#[inline]
pub(crate) fn set_flags<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, which: u64, f: u64) {
    ctx.cpu.s.rflags = (ctx.cpu.s.rflags & !which) | (f & which);
}

/// Evaluates a condition code against RFLAGS (SDM Vol. 1 Appendix B, "EFLAGS Condition Codes").
#[inline]
pub fn condition(rflags: u64, cc: ConditionCode) -> bool {
    let f = |b: u64| rflags & b != 0;
    match cc {
        ConditionCode::o => f(fl::OF),
        ConditionCode::no => !f(fl::OF),
        ConditionCode::b => f(fl::CF),
        ConditionCode::ae => !f(fl::CF),
        ConditionCode::e => f(fl::ZF),
        ConditionCode::ne => !f(fl::ZF),
        ConditionCode::be => f(fl::CF) || f(fl::ZF),
        ConditionCode::a => !f(fl::CF) && !f(fl::ZF),
        ConditionCode::s => f(fl::SF),
        ConditionCode::ns => !f(fl::SF),
        ConditionCode::p => f(fl::PF),
        ConditionCode::np => !f(fl::PF),
        ConditionCode::l => f(fl::SF) != f(fl::OF),
        ConditionCode::ge => f(fl::SF) == f(fl::OF),
        ConditionCode::le => f(fl::ZF) || f(fl::SF) != f(fl::OF),
        ConditionCode::g => !f(fl::ZF) && f(fl::SF) == f(fl::OF),
        ConditionCode::None => true,
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline]
pub fn sext(v: u64, size: u32) -> u64 {
    if size == 0 || size >= 8 {
        return v;
    }
    let sh = 64 - size * 8;
    (((v << sh) as i64) >> sh) as u64
}

#[cfg(test)]
mod host_oracle;
#[cfg(test)]
mod tests;
