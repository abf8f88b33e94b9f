//! The host-independent front end: a decoded guest block lowered to [`BlockIr`].
//!
//! The IR is deliberately small. Each guest instruction becomes exactly one [`Op`] (or the
//! block [`Exit`] for a direct branch), so "instruction `i` of the block" has the same meaning
//! for the front end, the backend and the helper, and the number of retired instructions at any
//! point of a straight-line block is known at translation time (precise RIP and instruction
//! count on a fault in a helper).
//!
//! Natively emitted forms never touch guest memory and never fault: MOV / ADD / ADC / SUB /
//! SBB / CMP / AND / OR / XOR / TEST with general registers and immediates, INC / DEC / NEG /
//! NOT on a general register, SHL / SHR / SAR / ROL / ROR of a register by a constant or CL,
//! CMOVcc / SETcc / IMUL / MOVZX / MOVSX / MOVSXD / XCHG / BSWAP / BT with register
//! operands, direct JMP / Jcc ending the block, and direct Jcc inside a superblock
//! ([`Op::SideExit`]). Everything else,
//! including every privileged, IOPL-sensitive or sensitive instruction and anything with a
//! LOCK prefix, is an [`Op::Helper`]: a call of the interpreter's semantic function.

use crate::abi::{flags as fl, OFFSET_GPR};
use decoder::{Block, Class, DecodedInsn, Mode};
use iced_x86::{Code, ConditionCode, Instruction, Mnemonic, OpKind, Register};

/// A guest general-purpose register operand: GPR index (ModRM order), width in bytes
/// (1, 2, 4, 8) and whether it is one of AH, CH, DH, BH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestReg {
    /// Index into `CpuState::gpr` (0..16).
    pub index: u8,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Bits 8..15 of the register (AH, CH, DH, BH).
    pub high: bool,
}

impl GuestReg {
    /// Byte offset of the operand in `CpuState`.
    pub fn offset(&self) -> i32 {
        (OFFSET_GPR + usize::from(self.index) * 8 + usize::from(self.high)) as i32
    }

    /// The operand an iced-x86 general-purpose register names, if it is one.
    pub fn from_iced(r: Register) -> Option<GuestReg> {
        let n = r as u32;
        let (index, size, high) = if (Register::AH as u32..=Register::BH as u32).contains(&n) {
            (n - Register::AH as u32, 1, true)
        } else if (Register::AL as u32..=Register::R15L as u32).contains(&n) {
            let i = n - Register::AL as u32;
            (if i < 4 { i } else { i - 4 }, 1, false)
        } else if (Register::AX as u32..=Register::R15W as u32).contains(&n) {
            (n - Register::AX as u32, 2, false)
        } else if (Register::EAX as u32..=Register::R15D as u32).contains(&n) {
            (n - Register::EAX as u32, 4, false)
        } else if (Register::RAX as u32..=Register::R15 as u32).contains(&n) {
            (n - Register::RAX as u32, 8, false)
        } else {
            return None;
        };
        Some(GuestReg {
            index: index as u8,
            size,
            high,
        })
    }
}

/// Source operand of a native ALU op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// A general register of the same width as the destination.
    Reg(GuestReg),
    /// An immediate, already sign- or zero-extended as the instruction defines; the backend
    /// truncates it to the operand width.
    Imm(u64),
    /// No source (INC, DEC, NEG, NOT).
    None,
}

/// The native ALU operations (Intel SDM Vol. 2 instruction pages of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AluOp {
    Mov,
    Add,
    Adc,
    Sub,
    Sbb,
    Cmp,
    And,
    Or,
    Xor,
    Test,
    Inc,
    Dec,
    Neg,
    Not,
}

impl AluOp {
    /// RFLAGS bits the operation defines, taken from the host flags after the host executes
    /// the same operation (same ISA: the host flags are the guest flags).
    pub fn captured_flags(self) -> u64 {
        match self {
            AluOp::Mov | AluOp::Not => 0,
            // AF is undefined after logic ops; the interpreter leaves it clear.
            AluOp::And | AluOp::Or | AluOp::Xor | AluOp::Test => fl::STATUS & !fl::AF,
            AluOp::Inc | AluOp::Dec => fl::STATUS & !fl::CF,
            _ => fl::STATUS,
        }
    }

    /// RFLAGS bits the operation writes (captured bits plus bits it clears).
    pub fn written_flags(self) -> u64 {
        match self {
            AluOp::And | AluOp::Or | AluOp::Xor | AluOp::Test => fl::STATUS,
            o => o.captured_flags(),
        }
    }

    /// True if the destination register is written (not CMP / TEST).
    pub fn writes_dst(self) -> bool {
        !matches!(self, AluOp::Cmp | AluOp::Test)
    }
}

/// An x86 condition code in its encoding order (SDM Vol. 1 Appendix B, Table B-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cond {
    O = 0,
    No,
    B,
    Ae,
    E,
    Ne,
    Be,
    A,
    S,
    Ns,
    P,
    Np,
    L,
    Ge,
    Le,
    G,
}

impl Cond {
    /// RFLAGS bits the condition reads (SDM Vol. 1 Appendix B, Table B-1).
    pub fn reads(self) -> u64 {
        match self {
            Cond::O | Cond::No => fl::OF,
            Cond::B | Cond::Ae => fl::CF,
            Cond::E | Cond::Ne => fl::ZF,
            Cond::Be | Cond::A => fl::CF | fl::ZF,
            Cond::S | Cond::Ns => fl::SF,
            Cond::P | Cond::Np => fl::PF,
            Cond::L | Cond::Ge => fl::SF | fl::OF,
            Cond::Le | Cond::G => fl::ZF | fl::SF | fl::OF,
        }
    }

    fn from_iced(c: ConditionCode) -> Option<Cond> {
        use ConditionCode as C;
        Some(match c {
            C::o => Cond::O,
            C::no => Cond::No,
            C::b => Cond::B,
            C::ae => Cond::Ae,
            C::e => Cond::E,
            C::ne => Cond::Ne,
            C::be => Cond::Be,
            C::a => Cond::A,
            C::s => Cond::S,
            C::ns => Cond::Ns,
            C::p => Cond::P,
            C::np => Cond::Np,
            C::l => Cond::L,
            C::ge => Cond::Ge,
            C::le => Cond::Le,
            C::g => Cond::G,
            _ => return None,
        })
    }
}

/// Shifts and rotates with a native form (SDM Vol. 2B "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftOp {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
}

impl ShiftOp {
    /// True for ROL / ROR (only CF and OF written).
    pub fn is_rotate(self) -> bool {
        matches!(self, ShiftOp::Rol | ShiftOp::Ror)
    }
}

/// A memory operand `seg:[base + index * scale + disp]` of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRef {
    /// Segment register index (`abi::sreg`: ES, CS, SS, DS, FS, GS), after overrides.
    pub seg: u8,
    /// Base register index, if any (full register read; the sum is masked).
    pub base: Option<u8>,
    /// Index register and scale (1, 2, 4, 8), if any.
    pub index: Option<(u8, u8)>,
    /// Displacement; for RIP-relative forms the absolute address.
    pub disp: u64,
    /// Address size in bytes (2, 4, 8): the offset wraps at this width.
    pub addr_size: u8,
    /// Access size in bytes (1, 2, 4, 8).
    pub size: u8,
}

/// One guest instruction of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A register/immediate ALU instruction emitted natively.
    Alu {
        /// Operation.
        op: AluOp,
        /// Destination (and first source) register.
        dst: GuestReg,
        /// Second source.
        src: Src,
    },
    /// LEA (SDM Vol. 2A "LEA"): `dst = (disp + base + index * scale) mod 2^(8 * addr_size)`,
    /// written at the destination's width. No memory access, no flags, no faults.
    Lea {
        /// Destination register (16, 32 or 64 bits).
        dst: GuestReg,
        /// Base register index (full register read; the result is masked), if any.
        base: Option<u8>,
        /// Index register and scale (1, 2, 4, 8), if any.
        index: Option<(u8, u8)>,
        /// Displacement; for RIP-relative forms the absolute address.
        disp: u64,
        /// Address size in bytes (2, 4, 8).
        addr_size: u8,
    },
    /// SHL / SHR / SAR of a register by a constant count with `1 <= count < 8 * dst.size`
    /// (after the architectural masking), or ROL / ROR by any non-zero masked count. Flags
    /// follow the interpreter's definitions of the bits the SDM leaves undefined
    /// (`src/cpu/integer/shift.rs`): shifts write all status flags with AF = 0, OF =
    /// MSB(result) XOR CF for SHL, MSB(source) for SHR by 1 and 0 otherwise; rotates write
    /// only CF and OF, CF = LSB(result) (ROL) or MSB(result) (ROR), OF = MSB(result) XOR CF
    /// (ROL) or the XOR of the two top bits of the result (ROR), for every count.
    Shift {
        /// Operation.
        op: ShiftOp,
        /// Register shifted.
        dst: GuestReg,
        /// Count (already masked, non-zero; below the width for SHL / SHR / SAR).
        count: u8,
    },
    /// The same shifts and rotates of a register by CL. A masked count of 0 changes nothing
    /// but still zero-extends a 32-bit destination; an 8- or 16-bit SHL / SHR / SAR by a
    /// count of at least the width runs instruction `index` through the helper.
    ShiftCl {
        /// Operation.
        op: ShiftOp,
        /// Register shifted.
        dst: GuestReg,
        /// Index of the instruction in the block (slow path).
        index: u32,
    },
    /// CMOVcc r, r (SDM Vol. 2A "CMOVcc"): the destination is written either way (a 32-bit
    /// destination is zero-extended even when the condition is false). No flags.
    Cmov {
        /// Condition for the move.
        cond: Cond,
        /// Destination (16, 32 or 64 bits).
        dst: GuestReg,
        /// Source, same width.
        src: GuestReg,
    },
    /// SETcc r8 (SDM Vol. 2B "SETcc"): `dst = cond ? 1 : 0`. No flags.
    Setcc {
        /// Condition.
        cond: Cond,
        /// 8-bit destination.
        dst: GuestReg,
    },
    /// IMUL r, r (`dst = dst * src`) or IMUL r, r, imm (`dst = src * imm`), truncated to
    /// the destination width (SDM Vol. 2A "IMUL"). CF = OF = signed overflow; SF, ZF, PF from
    /// the truncated result and AF = 0 (the interpreter's `muldiv.rs` definitions).
    Imul {
        /// Destination (16, 32 or 64 bits).
        dst: GuestReg,
        /// Register source, same width.
        src: GuestReg,
        /// Immediate of the three-operand form (sign-extended).
        imm: Option<u64>,
    },
    /// MOVZX / MOVSX / MOVSXD r, r (SDM Vol. 2B): `dst` = `src` zero- or sign-extended from
    /// its width (`src.size <= dst.size`; equal widths are a plain move). No flags.
    Movx {
        /// Destination (16, 32 or 64 bits).
        dst: GuestReg,
        /// Source.
        src: GuestReg,
        /// Sign-extend.
        sign: bool,
    },
    /// XCHG r, r (SDM Vol. 2B "XCHG"), same widths. No flags.
    Xchg {
        /// First operand (written first).
        a: GuestReg,
        /// Second operand.
        b: GuestReg,
    },
    /// BSWAP r32 / r64 (SDM Vol. 2A "BSWAP"). No flags.
    Bswap {
        /// Register swapped (4 or 8 bytes).
        dst: GuestReg,
    },
    /// BT r, r / BT r, imm8 (SDM Vol. 2A "BT"): CF = bit (`src` mod width) of `dst`; the
    /// other flags are unchanged (the interpreter's `bits.rs` writes only CF).
    Bt {
        /// Register tested.
        dst: GuestReg,
        /// Bit offset (register of the same width or immediate).
        src: Src,
    },
    /// `dst = [mem]`, zero- or sign-extended from `mem.size` to `dst.size` (MOV, MOVZX,
    /// MOVSX, MOVSXD); `index` is the guest instruction for the slow path.
    Load {
        /// Destination register.
        dst: GuestReg,
        /// Source operand.
        mem: MemRef,
        /// Sign-extend (MOVSX / MOVSXD).
        sign: bool,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// `[mem] = src` (MOV with a register or immediate source of `mem.size` bytes).
    Store {
        /// Value stored.
        src: Src,
        /// Destination operand.
        mem: MemRef,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// `dst = dst op [mem]` (CMP / TEST only compare).
    AluLoad {
        /// Operation (not MOV or a unary op).
        op: AluOp,
        /// Destination register.
        dst: GuestReg,
        /// Source operand.
        mem: MemRef,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// `[mem] = [mem] op src` (read-modify-write; CMP / TEST only read).
    AluStore {
        /// Operation (not MOV).
        op: AluOp,
        /// Destination operand.
        mem: MemRef,
        /// Second source (`Src::None` for INC / DEC / NEG / NOT).
        src: Src,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// 64-bit mode PUSH of a 64-bit register or sign-extended immediate (`mem` describes
    /// the stack slot: SS, 8 bytes).
    Push {
        /// Value pushed.
        src: Src,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// 64-bit mode POP into a 64-bit register.
    Pop {
        /// Destination register.
        dst: GuestReg,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// An instruction the interpreter runs as a no-op (`src/cpu/integer/data.rs` `nop`): NOP
    /// in every encoding (a memory operand is never accessed), PAUSE, PREFETCHh, LFENCE /
    /// MFENCE / SFENCE, ENDBR32 / ENDBR64. Only RIP advances.
    Nop,
    /// CWD / CDQ / CQO (SDM Vol. 2A "CWD/CDQ/CQO"): rDX = all ones if the sign bit of rAX at
    /// `size` bytes is set, else 0 (a 4-byte result is zero-extended). No flags.
    SignFill {
        /// Operand size in bytes (2, 4, 8).
        size: u8,
    },
    /// One-operand MUL / IMUL / DIV / IDIV of rDX:rAX by a 32- or 64-bit register (SDM Vol. 2A
    /// "DIV", "IDIV", "IMUL", Vol. 2B "MUL"). Multiplies: CF = OF = upper half significant,
    /// SF / ZF / PF from the low half, AF = 0 (`muldiv.rs`). Divides leave the flags alone; a
    /// zero divisor, a quotient that may not fit, or (IDIV) a dividend that is not the sign
    /// extension of rAX runs instruction `index` through the helper (which raises #DE).
    MulDiv {
        /// Operation.
        op: MulDivOp,
        /// Multiplier or divisor (4 or 8 bytes).
        src: GuestReg,
        /// Index of the instruction in the block (slow path).
        index: u32,
    },
    /// BSF / BSR r, r (and TZCNT / LZCNT, which this CPU model runs as BSF / BSR: `bits.rs`):
    /// a zero source sets ZF and leaves the destination unchanged; otherwise the bit index
    /// is written and ZF cleared. Other flags unchanged.
    BitScan {
        /// BSR (highest set bit) rather than BSF.
        reverse: bool,
        /// Destination (2, 4 or 8 bytes).
        dst: GuestReg,
        /// Source, same width.
        src: GuestReg,
    },
    /// A direct Jcc inside a superblock (`decoder::scan_superblock`): if `cond` holds, the
    /// block leaves for `taken` after this instruction; otherwise it goes on with the next
    /// op (the Jcc's fall-through). Reads the status flags `cond` names; writes none.
    SideExit {
        /// Condition for leaving.
        cond: Cond,
        /// Target IP when the condition holds.
        taken: u64,
        /// Index of the Jcc in the block (the exit retires `index + 1` instructions).
        index: u32,
    },
    /// MOVD xmm, r/m32 (66 0F 6E; SDM Vol. 2B "MOVD/MOVQ"): XMM`xmm` = the 32-bit source
    /// zero-extended to 128 bits. Like every SSE instruction it needs CR0.EM = 0, CR0.TS = 0
    /// and CR4.OSFXSR = 1 (Vol. 3A Table 13-1); otherwise, or on a memory slow path, the
    /// helper runs instruction `index` (#UD / #NM / the fault).
    MovdToXmm {
        /// Destination XMM register (0-15).
        xmm: u8,
        /// 32-bit general register or 4-byte memory operand.
        src: RegOrMem,
        /// Index of the instruction in the block (slow path).
        index: u32,
    },
    /// MOVD r/m32, xmm (66 0F 7E): the low 32 bits of XMM`xmm` (a register destination is
    /// zero-extended to 64 bits). Availability and slow path as [`Op::MovdToXmm`].
    MovdFromXmm {
        /// Source XMM register (0-15).
        xmm: u8,
        /// 32-bit general register or 4-byte memory operand.
        dst: RegOrMem,
        /// Index of the instruction in the block (slow path).
        index: u32,
    },
    /// PSLLW / PSLLD / PSLLQ / PSRLW / PSRLD / PSRLQ / PSRAW / PSRAD xmm, imm8 (SDM Vol. 2B):
    /// each element shifted by the immediate (a count above the element width gives 0, or
    /// the sign for PSRA), done by the same host instruction on the register's copy in
    /// `CpuState`. Availability as [`Op::MovdToXmm`].
    XmmShiftImm {
        /// Host instruction: the iced code (one of the eight `*_xmm_imm8` forms).
        code: Code,
        /// XMM register (0-15).
        xmm: u8,
        /// Count.
        imm: u8,
        /// Index of the instruction in the block (slow path).
        index: u32,
    },
    /// SHL / SAL / SHR / SAR of a memory operand by a constant (the 1 form or an imm8 whose
    /// masked count is 1 ..= width - 1; SDM Vol. 2B "SAL/SAR/SHL/SHR"): read-modify-write of
    /// `mem` with the flags of the register form (CF = last bit out, OF for a count of 1,
    /// AF cleared as `shift.rs` does). A count of 0 (no access to flags) or >= the width, and
    /// the rotates, stay with the helper. `index` is the instruction for the slow path.
    ShiftMem {
        /// Operation (not a rotate).
        op: ShiftOp,
        /// Destination operand (1, 2, 4 or 8 bytes).
        mem: MemRef,
        /// Masked count, 1 ..= width - 1.
        count: u8,
        /// Index of the instruction in the block.
        index: u32,
    },
    /// REP MOVS / REP STOS (F3 prefix) in 64-bit mode with 64-bit addresses and the default
    /// segments (SDM Vol. 2B "REP/REPE/REPZ/REPNE/REPNZ", "MOVS/MOVSB/MOVSW/MOVSD/MOVSQ",
    /// "STOS/STOSB/STOSW/STOSD/STOSQ"): RCX elements of `size` bytes copied from [RSI] to
    /// [RDI] (or rAX stored to [RDI]), RSI / RDI advanced, RCX = 0; no flags. Compiled code
    /// does it with one host REP MOVS / STOS when DF = 0, the whole destination (and source)
    /// lies in one page, and both pages hit the JIT TLB; anything else (DF = 1, a range that
    /// crosses a page, a miss the fill cannot serve, more than a page's worth) runs
    /// instruction `index` through the helper. Either way the instruction retires in one
    /// step, as in the interpreter (`string::run` finishes up to `CHUNK` elements a step).
    RepString {
        /// MOVS (else STOS).
        movs: bool,
        /// Element size in bytes (1, 2, 4, 8).
        size: u8,
        /// Index of the instruction in the block (slow path).
        index: u32,
    },
    /// Guest instruction `index` of the block, executed by the interpreter's semantic function
    /// through the helper. The helper may end the block (fault, mode change, branch, SMC).
    Helper {
        /// Index of the instruction in the block.
        index: u32,
    },
}

/// A general-register or memory operand ([`Op::MovdToXmm`], [`Op::MovdFromXmm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegOrMem {
    /// A general register.
    Reg(GuestReg),
    /// A memory operand.
    Mem(MemRef),
}

/// Operation of [`Op::MulDiv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulDivOp {
    /// Unsigned multiply.
    Mul,
    /// Signed multiply (one-operand form).
    Imul,
    /// Unsigned divide.
    Div,
    /// Signed divide.
    Idiv,
}

/// How a block ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 64-bit mode JMP r64 (counted as one guest instruction): RIP = the register; a
    /// non-canonical target takes the slow path (instruction `index` through the helper,
    /// which raises #GP(0)).
    JmpReg {
        /// Register holding the target.
        src: GuestReg,
        /// Index of the JMP in the block (for the helper).
        index: u32,
    },
    /// 64-bit mode near CALL rel32 (counted as one guest instruction): pushes `ret` (8 bytes,
    /// inline store) and continues at `target`; instruction `index` is the slow path.
    Call {
        /// Target IP (canonical).
        target: u64,
        /// Return address pushed.
        ret: u64,
        /// Index of the CALL in the block (for the helper).
        index: u32,
    },
    /// 64-bit mode CALL r64 (counted as one guest instruction): reads the target from the
    /// register, pushes `ret` (8 bytes, inline store) and continues at the target; a
    /// non-canonical target or a store that cannot be done inline takes the slow path
    /// (instruction `index` through the helper, which raises #GP(0) or the fault).
    CallReg {
        /// Register holding the target.
        src: GuestReg,
        /// Return address pushed.
        ret: u64,
        /// Index of the CALL in the block (for the helper).
        index: u32,
    },
    /// 64-bit mode CALL m64 (counted as one guest instruction): reads the target from `mem`
    /// (inline load), then pushes `ret` and continues at the target through the jump cache,
    /// as [`Exit::CallReg`]. A load or store that cannot be done inline, or a non-canonical
    /// target, takes the slow path (instruction `index` through the helper: the fault, with
    /// nothing pushed).
    CallMem {
        /// Where the target is (8 bytes).
        mem: MemRef,
        /// Return address pushed.
        ret: u64,
        /// Index of the CALL in the block (for the helper).
        index: u32,
    },
    /// 64-bit mode near RET without an immediate (counted as one guest instruction): pops
    /// RIP (inline load; a non-canonical target takes the slow path, which raises #GP).
    Ret {
        /// Index of the RET in the block (for the helper).
        index: u32,
    },
    /// The last op was a helper; if the helper did not end the block, RIP = `next`.
    Fallthrough {
        /// IP after the last instruction.
        next: u64,
    },
    /// A direct near JMP (counted as one guest instruction).
    Jump {
        /// Target IP.
        target: u64,
    },
    /// A direct Jcc (counted as one guest instruction).
    Branch {
        /// Condition for `taken`.
        cond: Cond,
        /// Target IP when the condition holds.
        taken: u64,
        /// IP of the next instruction.
        not_taken: u64,
    },
}

/// A lowered guest block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockIr {
    /// IP of the first instruction (a branch back to it is a loop inside the block).
    pub start_ip: u64,
    /// 64-bit mode: flat segments (only FS / GS have a base, no limit checks), canonical
    /// addresses; outside it the backend checks segment type and limit inline.
    pub bits64: bool,
    /// One op per guest instruction except a final direct branch.
    pub ops: Vec<Op>,
    /// The block exit.
    pub exit: Exit,
    /// Guest instructions in the block (`ops.len()` plus one for a direct-branch exit).
    pub ninsns: u32,
    /// Highest IP the block fetches from or branches to natively; outside 64-bit mode the
    /// block may run only while this is within the CS limit (else the interpreter raises #GP).
    pub max_ip: u64,
}

impl Op {
    /// How the op uses the guest status flags when it runs natively: (flags read, flags
    /// always written, barrier). A barrier may run the helper or leave the block (a slow
    /// path, a fault), so every status flag must be in the guest RFLAGS before it.
    fn flag_use(&self) -> (u64, u64, bool) {
        let st = fl::STATUS;
        match *self {
            Op::Alu { op, .. } => {
                let r = if matches!(op, AluOp::Adc | AluOp::Sbb) {
                    fl::CF
                } else {
                    0
                };
                (r, op.written_flags(), false)
            }
            Op::Shift { op, .. } => (0, if op.is_rotate() { fl::CF | fl::OF } else { st }, false),
            Op::Cmov { cond, .. } | Op::Setcc { cond, .. } => (cond.reads(), 0, false),
            Op::Imul { .. } => (0, st, false),
            Op::Bt { .. } => (0, fl::CF, false),
            Op::BitScan { .. } => (0, fl::ZF, false),
            Op::MulDiv {
                op: MulDivOp::Mul | MulDivOp::Imul,
                ..
            } => (0, st, false),
            Op::AluLoad { op, .. } | Op::AluStore { op, .. } => (st, op.written_flags(), true),
            Op::ShiftMem { .. } => (st, st, true),
            Op::Lea { .. }
            | Op::Movx { .. }
            | Op::Xchg { .. }
            | Op::Bswap { .. }
            | Op::Nop
            | Op::SignFill { .. } => (0, 0, false),
            // No flags, but a slow path (the helper may raise #UD / #NM / a fault).
            Op::MovdToXmm { .. } | Op::MovdFromXmm { .. } | Op::XmmShiftImm { .. } => (st, 0, true),
            Op::ShiftCl { .. }
            | Op::MulDiv { .. }
            | Op::Load { .. }
            | Op::Store { .. }
            | Op::Push { .. }
            | Op::Pop { .. }
            | Op::RepString { .. }
            | Op::Helper { .. } => (st, 0, true),
            // The exit may leave the block: every status flag must be exact there.
            Op::SideExit { .. } => (st, 0, true),
        }
    }
}

/// Flag liveness of a block: for each op, whether a status flag it writes is observed later
/// (read by a later op, needed by a barrier, or live at the block exit, where the guest
/// RFLAGS must be exact). Ops whose flags are dead need not compute them: the next writer
/// replaces every one of them before anything can look. Ops that do not write flags get
/// `false`.
pub fn flags_needed(ir: &BlockIr) -> Vec<bool> {
    let mut live = fl::STATUS;
    let mut need = vec![false; ir.ops.len()];
    for (i, op) in ir.ops.iter().enumerate().rev() {
        let (reads, writes, barrier) = op.flag_use();
        need[i] = writes & live != 0;
        live = if barrier {
            fl::STATUS
        } else {
            (live & !writes) | reads
        };
    }
    need
}

fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

/// Lowers one instruction to a native op, if it has a native form.
fn lower_alu(insn: &Instruction) -> Option<Op> {
    use Mnemonic as M;
    if insn.has_lock_prefix() || insn.op_count() == 0 || insn.op0_kind() != OpKind::Register {
        return None;
    }
    let op = match insn.mnemonic() {
        M::Mov => AluOp::Mov,
        m => alu_op(m)?,
    };
    let dst = GuestReg::from_iced(insn.op0_register())?;
    let unary = matches!(op, AluOp::Inc | AluOp::Dec | AluOp::Neg | AluOp::Not);
    let src = if unary {
        if insn.op_count() != 1 {
            return None;
        }
        Src::None
    } else {
        if insn.op_count() != 2 {
            return None;
        }
        match insn.op1_kind() {
            OpKind::Register => {
                let s = GuestReg::from_iced(insn.op1_register())?;
                if s.size != dst.size {
                    return None;
                }
                Src::Reg(s)
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Src::Imm(insn.immediate(1)),
            _ => return None,
        }
    };
    Some(Op::Alu { op, dst, src })
}

/// A guest block whose instructions all lie in one 4 KiB page, lowered to IR. Returns `None`
/// if not even the first instruction qualifies (the caller interprets it).
///
/// Instructions that straddle into the next page are left out (the block ends before them),
/// so a block depends on the bytes of one physical page; except that a *first* instruction
/// crossing into the next page makes a one-instruction block (its translator then depends on
/// both pages), so that a hot loop with such an instruction stays in compiled code.
pub fn lower(block: &Block) -> Option<BlockIr> {
    let page = block.start_linear & !0xfff;
    let mut insns: Vec<&DecodedInsn> = Vec::new();
    for d in &block.insns {
        let last = d.linear.wrapping_add(u64::from(d.len).saturating_sub(1));
        if d.linear & !0xfff != page || d.len == 0 {
            break;
        }
        if last & !0xfff != page {
            // A first instruction that crosses into the next page is a block of its own (the
            // driver then depends on both pages); any later one starts the next block.
            if insns.is_empty() && last & !0xfff == page.wrapping_add(0x1000) {
                insns.push(d);
            }
            break;
        }
        insns.push(d);
    }
    let (last, body) = insns.split_last()?;
    let mut ops = Vec::with_capacity(insns.len());
    let mut max_ip = last.ip().wrapping_add(u64::from(last.len)).wrapping_sub(1);
    let direct_ok =
        |d: &DecodedInsn| d.mode != Mode::Bits64 || canonical(d.insn.near_branch_target());
    let plain = |d: &DecodedInsn| {
        d.invalid.is_none() && !d.class.needs_ring_layer() && !d.class.contains(Class::INVALID)
    };
    for (i, d) in body.iter().enumerate() {
        // A Jcc inside the block (a superblock goes on with its fall-through).
        let side = plain(d) && d.insn.is_jcc_short_or_near() && direct_ok(d);
        match Cond::from_iced(d.insn.condition_code()).filter(|_| side) {
            Some(cond) => {
                let t = d.insn.near_branch_target();
                max_ip = max_ip.max(t);
                ops.push(Op::SideExit {
                    cond,
                    taken: t,
                    index: i as u32,
                });
            }
            None => ops.push(lower_one(d, i as u32)),
        }
    }
    let li = body.len() as u32;
    let direct_ok = |t: u64| last.mode != Mode::Bits64 || canonical(t);
    let plain = plain(last);
    let exit = if plain
        && last.insn.is_jcc_short_or_near()
        && direct_ok(last.insn.near_branch_target())
    {
        let cond = Cond::from_iced(last.insn.condition_code())?;
        let t = last.insn.near_branch_target();
        max_ip = max_ip.max(t);
        Exit::Branch {
            cond,
            taken: t,
            not_taken: last.next_ip(),
        }
    } else if plain && last.insn.is_jmp_short_or_near() && direct_ok(last.insn.near_branch_target())
    {
        let t = last.insn.near_branch_target();
        max_ip = max_ip.max(t);
        Exit::Jump { target: t }
    } else if plain
        && last.mode == Mode::Bits64
        && last.insn.code() == Code::Call_rel32_64
        && canonical(last.insn.near_branch_target())
    {
        Exit::Call {
            target: last.insn.near_branch_target(),
            ret: last.next_ip(),
            index: li,
        }
    } else if plain && last.mode == Mode::Bits64 && last.insn.code() == Code::Retnq {
        Exit::Ret { index: li }
    } else if plain
        && last.mode == Mode::Bits64
        && last.insn.code() == Code::Jmp_rm64
        && last.insn.op0_kind() == OpKind::Register
    {
        Exit::JmpReg {
            src: GuestReg::from_iced(last.insn.op0_register())?,
            index: li,
        }
    } else if plain
        && last.mode == Mode::Bits64
        && last.insn.code() == Code::Call_rm64
        && last.insn.op0_kind() == OpKind::Register
    {
        Exit::CallReg {
            src: GuestReg::from_iced(last.insn.op0_register())?,
            ret: last.next_ip(),
            index: li,
        }
    } else if let Some(mem) = (plain
        && last.mode == Mode::Bits64
        && last.insn.code() == Code::Call_rm64
        && last.insn.op0_kind() == OpKind::Memory)
        .then(|| mem_ref(&last.insn, Mode::Bits64))
        .flatten()
        .filter(|m| m.size == 8)
    {
        Exit::CallMem {
            mem,
            ret: last.next_ip(),
            index: li,
        }
    } else {
        ops.push(lower_one(last, li));
        Exit::Fallthrough {
            next: last.next_ip(),
        }
    };
    let ninsns = insns.len() as u32;
    Some(BlockIr {
        start_ip: block.start_ip,
        bits64: last.mode == Mode::Bits64,
        ops,
        exit,
        ninsns,
        max_ip,
    })
}

fn lower_one(d: &DecodedInsn, index: u32) -> Op {
    if d.invalid.is_some() || d.class.needs_ring_layer() || d.class.contains(Class::INVALID) {
        return Op::Helper { index };
    }
    lower_nop(&d.insn)
        .or_else(|| lower_alu(&d.insn))
        .or_else(|| lower_shift(&d.insn, index))
        .or_else(|| lower_misc(&d.insn))
        .or_else(|| lower_muldiv(&d.insn, index))
        .or_else(|| lower_lea(&d.insn))
        .or_else(|| lower_mem(&d.insn, d.mode, index))
        .or_else(|| lower_rep_string(&d.insn, d.mode, index))
        .or_else(|| lower_shift_mem(&d.insn, d.mode, index))
        .or_else(|| lower_sse(&d.insn, d.mode, index))
        .unwrap_or(Op::Helper { index })
}

/// The SSE forms with a native op: MOVD to / from an XMM register, shifts by an immediate.
fn lower_sse(insn: &Instruction, mode: Mode, index: u32) -> Option<Op> {
    if insn.has_lock_prefix() {
        return None;
    }
    let xmm_of = |r: Register| -> Option<u8> {
        let i = (r as u32).checked_sub(Register::XMM0 as u32)?;
        (i < 16).then_some(i as u8)
    };
    let rm = |k: OpKind, r: Register| -> Option<RegOrMem> {
        match k {
            OpKind::Register => {
                let g = GuestReg::from_iced(r)?;
                (g.size == 4).then_some(RegOrMem::Reg(g))
            }
            OpKind::Memory => mem_ref(insn, mode)
                .filter(|m| m.size == 4)
                .map(RegOrMem::Mem),
            _ => None,
        }
    };
    match insn.code() {
        Code::Movd_xmm_rm32 => Some(Op::MovdToXmm {
            xmm: xmm_of(insn.op0_register())?,
            src: rm(insn.op1_kind(), insn.op1_register())?,
            index,
        }),
        Code::Movd_rm32_xmm => Some(Op::MovdFromXmm {
            xmm: xmm_of(insn.op1_register())?,
            dst: rm(insn.op0_kind(), insn.op0_register())?,
            index,
        }),
        c @ (Code::Psllw_xmm_imm8
        | Code::Pslld_xmm_imm8
        | Code::Psllq_xmm_imm8
        | Code::Psrlw_xmm_imm8
        | Code::Psrld_xmm_imm8
        | Code::Psrlq_xmm_imm8
        | Code::Psraw_xmm_imm8
        | Code::Psrad_xmm_imm8) => Some(Op::XmmShiftImm {
            code: c,
            xmm: xmm_of(insn.op0_register())?,
            imm: insn.immediate8(),
            index,
        }),
        _ => None,
    }
}

/// SHL / SHR / SAR of a memory operand by a constant ([`Op::ShiftMem`]).
fn lower_shift_mem(insn: &Instruction, mode: Mode, index: u32) -> Option<Op> {
    let op = match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => ShiftOp::Shl,
        Mnemonic::Shr => ShiftOp::Shr,
        Mnemonic::Sar => ShiftOp::Sar,
        _ => return None,
    };
    if insn.has_lock_prefix() || insn.op0_kind() != OpKind::Memory {
        return None;
    }
    let mem = mem_ref(insn, mode)?;
    let raw = match insn.op_count() {
        1 => 1,
        2 if insn.op1_kind() == OpKind::Immediate8 => insn.immediate(1),
        _ => return None,
    };
    let count = raw & if mem.size == 8 { 0x3f } else { 0x1f };
    if count == 0 || count >= u64::from(mem.size) * 8 {
        return None;
    }
    Some(Op::ShiftMem {
        op,
        mem,
        count: count as u8,
        index,
    })
}

/// REP MOVS / REP STOS with 64-bit addresses and default segments in 64-bit mode
/// ([`Op::RepString`]).
fn lower_rep_string(insn: &Instruction, mode: Mode, index: u32) -> Option<Op> {
    if mode != Mode::Bits64
        || !insn.has_rep_prefix()
        || insn.has_repne_prefix()
        || insn.has_lock_prefix()
        || insn.segment_prefix() != iced_x86::Register::None
        || insn.op0_kind() != OpKind::MemoryESRDI
    {
        return None;
    }
    let (movs, size) = match insn.code() {
        Code::Movsb_m8_m8 => (true, 1),
        Code::Movsw_m16_m16 => (true, 2),
        Code::Movsd_m32_m32 => (true, 4),
        Code::Movsq_m64_m64 => (true, 8),
        Code::Stosb_m8_AL => (false, 1),
        Code::Stosw_m16_AX => (false, 2),
        Code::Stosd_m32_EAX => (false, 4),
        Code::Stosq_m64_RAX => (false, 8),
        _ => return None,
    };
    if movs && insn.op1_kind() != OpKind::MemorySegRSI {
        return None;
    }
    Some(Op::RepString { movs, size, index })
}

/// The no-op forms of [`Op::Nop`], and the accumulator forms CBW / CWDE / CDQE (as
/// [`Op::Movx`]) and CWD / CDQ / CQO ([`Op::SignFill`]).
fn lower_nop(insn: &Instruction) -> Option<Op> {
    use Mnemonic as M;
    if insn.has_lock_prefix() {
        return None;
    }
    let acc = |size: u8| GuestReg {
        index: 0,
        size,
        high: false,
    };
    Some(match insn.mnemonic() {
        M::Nop
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Endbr32
        | M::Endbr64 => Op::Nop,
        M::Cbw => Op::Movx {
            dst: acc(2),
            src: acc(1),
            sign: true,
        },
        M::Cwde => Op::Movx {
            dst: acc(4),
            src: acc(2),
            sign: true,
        },
        M::Cdqe => Op::Movx {
            dst: acc(8),
            src: acc(4),
            sign: true,
        },
        M::Cwd => Op::SignFill { size: 2 },
        M::Cdq => Op::SignFill { size: 4 },
        M::Cqo => Op::SignFill { size: 8 },
        _ => return None,
    })
}

/// SHL / SAL / SHR / SAR / ROL / ROR of a register by an immediate, the implicit 1 or CL.
fn lower_shift(insn: &Instruction, index: u32) -> Option<Op> {
    let op = match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => ShiftOp::Shl,
        Mnemonic::Shr => ShiftOp::Shr,
        Mnemonic::Sar => ShiftOp::Sar,
        Mnemonic::Rol => ShiftOp::Rol,
        Mnemonic::Ror => ShiftOp::Ror,
        _ => return None,
    };
    if insn.has_lock_prefix() || insn.op0_kind() != OpKind::Register {
        return None;
    }
    let dst = GuestReg::from_iced(insn.op0_register())?;
    let raw = match insn.op_count() {
        1 => 1,
        2 if insn.op1_kind() == OpKind::Immediate8 => insn.immediate(1),
        2 if insn.op1_kind() == OpKind::Register && insn.op1_register() == Register::CL => {
            return Some(Op::ShiftCl { op, dst, index });
        }
        _ => return None,
    };
    let count = raw & if dst.size == 8 { 0x3f } else { 0x1f };
    if count == 0 || (!op.is_rotate() && count >= u64::from(dst.size) * 8) {
        return None;
    }
    Some(Op::Shift {
        op,
        dst,
        count: count as u8,
    })
}

/// Register-only forms of CMOVcc, SETcc, IMUL (2 and 3 operands), MOVZX / MOVSX / MOVSXD,
/// XCHG, BSWAP and BT (see the [`Op`] variants).
fn lower_misc(insn: &Instruction) -> Option<Op> {
    use Mnemonic as M;
    if insn.has_lock_prefix() || insn.op_count() == 0 || insn.op0_kind() != OpKind::Register {
        return None;
    }
    let dst = GuestReg::from_iced(insn.op0_register())?;
    let n = insn.op_count();
    let reg1 = || {
        if n >= 2 && insn.op1_kind() == OpKind::Register {
            GuestReg::from_iced(insn.op1_register())
        } else {
            None
        }
    };
    let m = insn.mnemonic();
    match m {
        M::Movzx | M::Movsx | M::Movsxd if n == 2 => {
            let src = reg1()?;
            if src.size > dst.size || dst.size == 1 {
                return None;
            }
            Some(Op::Movx {
                dst,
                src,
                sign: m != M::Movzx,
            })
        }
        M::Xchg if n == 2 => {
            let b = reg1()?;
            (b.size == dst.size).then_some(Op::Xchg { a: dst, b })
        }
        M::Bswap if n == 1 && dst.size >= 4 => Some(Op::Bswap { dst }),
        M::Bsf | M::Tzcnt | M::Bsr | M::Lzcnt if n == 2 && dst.size >= 2 => {
            let src = reg1()?;
            (src.size == dst.size).then_some(Op::BitScan {
                reverse: matches!(m, M::Bsr | M::Lzcnt),
                dst,
                src,
            })
        }
        M::Bt if n == 2 && dst.size >= 2 => {
            let src = match insn.op1_kind() {
                OpKind::Register => {
                    let s = reg1()?;
                    if s.size != dst.size {
                        return None;
                    }
                    Src::Reg(s)
                }
                OpKind::Immediate8 => Src::Imm(insn.immediate(1)),
                _ => return None,
            };
            Some(Op::Bt { dst, src })
        }
        M::Imul if n >= 2 && dst.size >= 2 => {
            let src = reg1()?;
            if src.size != dst.size {
                return None;
            }
            let imm = match n {
                2 => None,
                3 if is_imm(insn.op2_kind()) => Some(insn.immediate(2)),
                _ => return None,
            };
            Some(Op::Imul { dst, src, imm })
        }
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
        | M::Cmovg
            if n == 2 =>
        {
            let src = reg1()?;
            if src.size != dst.size || dst.size < 2 {
                return None;
            }
            Some(Op::Cmov {
                cond: Cond::from_iced(insn.condition_code())?,
                dst,
                src,
            })
        }
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
        | M::Setg
            if n == 1 && dst.size == 1 =>
        {
            Some(Op::Setcc {
                cond: Cond::from_iced(insn.condition_code())?,
                dst,
            })
        }
        _ => None,
    }
}

/// One-operand MUL / IMUL / DIV / IDIV by a 32- or 64-bit register ([`Op::MulDiv`]).
fn lower_muldiv(insn: &Instruction, index: u32) -> Option<Op> {
    use Mnemonic as M;
    if insn.has_lock_prefix() || insn.op_count() != 1 || insn.op0_kind() != OpKind::Register {
        return None;
    }
    let op = match insn.mnemonic() {
        M::Mul => MulDivOp::Mul,
        M::Imul => MulDivOp::Imul,
        M::Div => MulDivOp::Div,
        M::Idiv => MulDivOp::Idiv,
        _ => return None,
    };
    let src = GuestReg::from_iced(insn.op0_register())?;
    (src.size >= 4).then_some(Op::MulDiv { op, src, index })
}

fn alu_op(m: Mnemonic) -> Option<AluOp> {
    use Mnemonic as M;
    Some(match m {
        M::Add => AluOp::Add,
        M::Adc => AluOp::Adc,
        M::Sub => AluOp::Sub,
        M::Sbb => AluOp::Sbb,
        M::Cmp => AluOp::Cmp,
        M::And => AluOp::And,
        M::Or => AluOp::Or,
        M::Xor => AluOp::Xor,
        M::Test => AluOp::Test,
        M::Inc => AluOp::Inc,
        M::Dec => AluOp::Dec,
        M::Neg => AluOp::Neg,
        M::Not => AluOp::Not,
        _ => return None,
    })
}

fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// The memory operand of `insn` if it is a plain general-register address (no VSIB, no
/// 16-bit BP/BX forms with odd registers matter: any GPR base / index works), with the
/// address size the interpreter's `Ctx::addr_size` would use.
fn mem_ref(insn: &Instruction, mode: Mode) -> Option<MemRef> {
    let size = insn.memory_size().size();
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let seg = (insn.memory_segment() as u32).checked_sub(Register::ES as u32)?;
    if seg > 5 {
        return None;
    }
    let (base, base_size) = match insn.memory_base() {
        Register::None => (None, 0),
        Register::RIP => (None, 8),
        Register::EIP => (None, 4),
        r => {
            let g = GuestReg::from_iced(r)?;
            if g.size < 2 || g.high {
                return None;
            }
            (Some(g.index), g.size)
        }
    };
    let (index, ix_size) = match insn.memory_index() {
        Register::None => (None, 0),
        r => {
            let g = GuestReg::from_iced(r)?;
            if g.size < 2 || g.high {
                return None;
            }
            (Some((g.index, insn.memory_index_scale() as u8)), g.size)
        }
    };
    let addr_size = if base_size != 0 {
        base_size
    } else if ix_size != 0 {
        ix_size
    } else {
        match insn.memory_displ_size() {
            2 => 2,
            4 => 4,
            8 => 8,
            _ => match mode {
                Mode::Real16 | Mode::Bits16 => 2,
                Mode::Bits32 => 4,
                Mode::Bits64 => 8,
            },
        }
    };
    Some(MemRef {
        seg: seg as u8,
        base,
        index,
        disp: insn.memory_displacement64(),
        addr_size,
        size: size as u8,
    })
}

/// Instructions with one memory operand that have a native form (see the module docs).
fn lower_mem(insn: &Instruction, mode: Mode, index: u32) -> Option<Op> {
    use Mnemonic as M;
    if insn.has_lock_prefix()
        || insn.has_rep_prefix()
        || insn.has_repne_prefix()
        || insn.has_xacquire_prefix()
        || insn.has_xrelease_prefix()
    {
        return None;
    }
    let m = insn.mnemonic();
    let n = insn.op_count();
    if mode == Mode::Bits64 && m == M::Push && n == 1 {
        let src = match insn.op0_kind() {
            OpKind::Register => {
                let r = GuestReg::from_iced(insn.op0_register())?;
                if r.size != 8 {
                    return None;
                }
                Src::Reg(r)
            }
            OpKind::Immediate8to64 | OpKind::Immediate32to64 => Src::Imm(insn.immediate(0)),
            _ => return None,
        };
        return Some(Op::Push { src, index });
    }
    if mode == Mode::Bits64 && m == M::Pop && n == 1 && insn.op0_kind() == OpKind::Register {
        let dst = GuestReg::from_iced(insn.op0_register())?;
        if dst.size != 8 {
            return None;
        }
        return Some(Op::Pop { dst, index });
    }
    let k0 = insn.op0_kind();
    let k1 = if n >= 2 {
        insn.op1_kind()
    } else {
        OpKind::Register
    };
    if k0 == OpKind::Register && k1 == OpKind::Memory && n == 2 {
        let dst = GuestReg::from_iced(insn.op0_register())?;
        let mem = mem_ref(insn, mode)?;
        return match m {
            M::Mov if mem.size == dst.size => Some(Op::Load {
                dst,
                mem,
                sign: false,
                index,
            }),
            M::Movzx | M::Movsx | M::Movsxd if mem.size <= dst.size && !dst.high => {
                Some(Op::Load {
                    dst,
                    mem,
                    sign: m != M::Movzx,
                    index,
                })
            }
            _ => {
                let op = alu_op(m)?;
                if mem.size != dst.size
                    || matches!(op, AluOp::Inc | AluOp::Dec | AluOp::Neg | AluOp::Not)
                {
                    return None;
                }
                Some(Op::AluLoad {
                    op,
                    dst,
                    mem,
                    index,
                })
            }
        };
    }
    if k0 != OpKind::Memory {
        return None;
    }
    let mem = mem_ref(insn, mode)?;
    let src = if n == 1 {
        Src::None
    } else if n == 2 && k1 == OpKind::Register {
        let r = GuestReg::from_iced(insn.op1_register())?;
        if r.size != mem.size {
            return None;
        }
        Src::Reg(r)
    } else if n == 2 && is_imm(k1) {
        Src::Imm(insn.immediate(1))
    } else {
        return None;
    };
    if m == M::Mov {
        if matches!(src, Src::None) {
            return None;
        }
        return Some(Op::Store { src, mem, index });
    }
    let op = alu_op(m)?;
    let unary = matches!(op, AluOp::Inc | AluOp::Dec | AluOp::Neg | AluOp::Not);
    if unary != matches!(src, Src::None) {
        return None;
    }
    Some(Op::AluStore {
        op,
        mem,
        src,
        index,
    })
}

/// LEA with a register destination and an address whose size its registers fix (a base or
/// index register, or RIP/EIP-relative); the interpreter's `Ctx::ea` computes the same sum.
fn lower_lea(insn: &Instruction) -> Option<Op> {
    if insn.mnemonic() != Mnemonic::Lea
        || insn.has_lock_prefix()
        || insn.op_count() != 2
        || insn.op0_kind() != OpKind::Register
        || insn.op1_kind() != OpKind::Memory
    {
        return None;
    }
    let dst = GuestReg::from_iced(insn.op0_register())?;
    if dst.size == 1 {
        return None;
    }
    let b = insn.memory_base();
    let ix = insn.memory_index();
    let (base, base_size) = match b {
        Register::None => (None, 0),
        Register::RIP => (None, 8),
        Register::EIP => (None, 4),
        r => {
            let g = GuestReg::from_iced(r)?;
            (Some(g.index), g.size)
        }
    };
    let (index, ix_size) = match ix {
        Register::None => (None, 0),
        r => {
            let g = GuestReg::from_iced(r)?;
            (Some((g.index, insn.memory_index_scale() as u8)), g.size)
        }
    };
    let addr_size = if base_size != 0 { base_size } else { ix_size };
    if addr_size < 2 {
        return None;
    }
    Some(Op::Lea {
        dst,
        base,
        index,
        disp: insn.memory_displacement64(),
        addr_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use decoder::{scan_block, FetchFault};

    fn block(mode: Mode, code: &[u8]) -> Block {
        let mut mem = vec![0xf4u8; 4096];
        mem[0x100..0x100 + code.len()].copy_from_slice(code);
        let mut fetch = |la: u64, buf: &mut [u8]| -> Result<usize, FetchFault> {
            let off = la as usize - 0x1000;
            let n = buf.len().min(4096 - off);
            buf[..n].copy_from_slice(&mem[off..off + n]);
            Ok(n)
        };
        scan_block(mode, 0, 0x1100, &mut fetch, 64).unwrap()
    }

    #[test]
    fn lowers_register_alu_and_loop_branch() {
        // add eax, ebx; inc ecx; mov dl, 5; cmp ecx, 10; jne 0x1100 (start)
        let b = block(
            Mode::Bits32,
            &[0x01, 0xd8, 0x41, 0xb2, 0x05, 0x83, 0xf9, 0x0a, 0x75, 0xf6],
        );
        let ir = lower(&b).unwrap();
        assert_eq!(ir.ninsns, 5);
        assert_eq!(ir.ops.len(), 4);
        assert!(matches!(ir.ops[0], Op::Alu { op: AluOp::Add, .. }));
        assert!(matches!(
            ir.ops[2],
            Op::Alu {
                op: AluOp::Mov,
                src: Src::Imm(5),
                ..
            }
        ));
        assert_eq!(
            ir.exit,
            Exit::Branch {
                cond: Cond::Ne,
                taken: 0x1100,
                not_taken: 0x110a
            }
        );
    }

    #[test]
    fn memory_operands_are_native_but_lock_and_privileged_forms_use_the_helper() {
        // add eax, [ebx]; lock add [ebx], eax; cli
        let b = block(Mode::Bits32, &[0x03, 0x03, 0xf0, 0x01, 0x03, 0xfa]);
        let ir = lower(&b).unwrap();
        assert!(
            matches!(
                ir.ops[0],
                Op::AluLoad {
                    op: AluOp::Add,
                    mem: MemRef {
                        seg: 3,
                        base: Some(3),
                        index: None,
                        disp: 0,
                        addr_size: 4,
                        size: 4
                    },
                    index: 0,
                    ..
                }
            ),
            "{:?}",
            ir.ops[0]
        );
        assert_eq!(
            &ir.ops[1..],
            &[Op::Helper { index: 1 }, Op::Helper { index: 2 }]
        );
        assert_eq!(ir.exit, Exit::Fallthrough { next: 0x1106 });
    }

    #[test]
    fn lea_lowers_to_an_address_sum() {
        // lea eax, [ebx+ecx*4+8]; lea si, [bx+di+0x10] (16-bit, with 67 prefix in 32-bit code)
        let b = block(
            Mode::Bits32,
            &[0x8d, 0x44, 0x8b, 0x08, 0x66, 0x67, 0x8d, 0x71, 0x10],
        );
        let ir = lower(&b).unwrap();
        assert_eq!(
            ir.ops[0],
            Op::Lea {
                dst: GuestReg {
                    index: 0,
                    size: 4,
                    high: false
                },
                base: Some(3),
                index: Some((1, 4)),
                disp: 8,
                addr_size: 4
            }
        );
        assert!(matches!(
            ir.ops[1],
            Op::Lea {
                base: Some(3),
                index: Some((7, 1)),
                disp: 0x10,
                addr_size: 2,
                ..
            }
        ));
    }

    #[test]
    fn constant_shifts_are_native_other_counts_use_the_helper() {
        // shl eax, 3; shr bh, 1 (D0 /5); sar eax, 32 (masked to 0: helper); shl eax, cl; hlt
        let b = block(
            Mode::Bits32,
            &[
                0xc1, 0xe0, 0x03, 0xd0, 0xef, 0xc1, 0xf8, 0x20, 0xd3, 0xe0, 0xf4,
            ],
        );
        let ir = lower(&b).unwrap();
        assert!(matches!(
            ir.ops[0],
            Op::Shift {
                op: ShiftOp::Shl,
                count: 3,
                ..
            }
        ));
        assert!(matches!(
            ir.ops[1],
            Op::Shift {
                op: ShiftOp::Shr,
                count: 1,
                dst: GuestReg { high: true, .. }
            }
        ));
        assert_eq!(ir.ops[2], Op::Helper { index: 2 });
        assert!(matches!(
            ir.ops[3],
            Op::ShiftCl {
                op: ShiftOp::Shl,
                index: 3,
                ..
            }
        ));
    }

    #[test]
    fn rotates_cmov_setcc_imul_movx_xchg_bswap_bt_are_native() {
        // rol al, 8; ror ebx, cl; cmovne eax, ebx; sete ah; imul eax, ebx, 7; movzx eax, bh;
        // movsx cx, dl; xchg eax, ebx; bswap eax; bt eax, 3; bt eax, ecx; bswap ax (66: helper);
        // rcl eax, 1 (helper); hlt
        let b = block(
            Mode::Bits32,
            &[
                0xc0, 0xc0, 0x08, 0xd3, 0xcb, 0x0f, 0x45, 0xc3, 0x0f, 0x94, 0xc4, 0x6b, 0xc3, 0x07,
                0x0f, 0xb6, 0xc7, 0x66, 0x0f, 0xbe, 0xca, 0x87, 0xd8, 0x0f, 0xc8, 0x0f, 0xba, 0xe0,
                0x03, 0x0f, 0xa3, 0xc8, 0x66, 0x0f, 0xc8, 0xd1, 0xd0, 0xf4,
            ],
        );
        let ir = lower(&b).unwrap();
        assert!(matches!(
            ir.ops[0],
            Op::Shift {
                op: ShiftOp::Rol,
                count: 8,
                ..
            }
        ));
        assert!(matches!(
            ir.ops[1],
            Op::ShiftCl {
                op: ShiftOp::Ror,
                ..
            }
        ));
        assert!(matches!(ir.ops[2], Op::Cmov { cond: Cond::Ne, .. }));
        assert!(matches!(
            ir.ops[3],
            Op::Setcc {
                cond: Cond::E,
                dst: GuestReg { high: true, .. }
            }
        ));
        assert!(matches!(ir.ops[4], Op::Imul { imm: Some(7), .. }));
        assert!(matches!(ir.ops[5], Op::Movx { sign: false, .. }));
        assert!(matches!(ir.ops[6], Op::Movx { sign: true, .. }));
        assert!(matches!(ir.ops[7], Op::Xchg { .. }));
        assert!(matches!(ir.ops[8], Op::Bswap { .. }));
        assert!(matches!(
            ir.ops[9],
            Op::Bt {
                src: Src::Imm(3),
                ..
            }
        ));
        assert!(matches!(
            ir.ops[10],
            Op::Bt {
                src: Src::Reg(_),
                ..
            }
        ));
        assert_eq!(ir.ops[11], Op::Helper { index: 11 });
        assert_eq!(ir.ops[12], Op::Helper { index: 12 });
    }

    #[test]
    fn high_byte_registers_map_to_byte_one() {
        let r = GuestReg::from_iced(Register::BH).unwrap();
        assert_eq!((r.index, r.size, r.high, r.offset()), (3, 1, true, 25));
        let r = GuestReg::from_iced(Register::SIL).unwrap();
        assert_eq!((r.index, r.high), (6, false));
        assert!(GuestReg::from_iced(Register::ES).is_none());
    }
}
