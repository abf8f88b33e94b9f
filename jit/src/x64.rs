//! The x86-64 backend: [`BlockIr`] -> host machine code (dynasmrt).
//!
//! Calling convention of a compiled block (System V on every OS, `extern "sysv64"`):
//! `block(state: *mut CpuState, env: *mut JitEnv) -> u64`, returning the number of guest
//! instructions retired (RIP stored in `state`) or [`EXIT_SYNCED`].
//!
//! Register use: `rbx` = state, `r12` = env, `r13` = instructions retired by earlier loop
//! iterations of this invocation; `rax`, `rcx`, `rdx` are scratch. Guest registers live in
//! `CpuState` (each native op loads and stores them), so every guest instruction boundary is
//! a precise state and a helper sees the exact architectural state.
//!
//! Flags: a native ALU op runs the same host instruction on the guest values, so the host
//! flags *are* the guest flags; they are captured with `pushfq` and merged into the eager
//! guest RFLAGS. A Jcc right after such an op branches on the live host flags.

use crate::abi::{
    JitEnv, EXIT_SYNCED, OFFSET_ENV_HELPER, OFFSET_ENV_LIMIT, OFFSET_RFLAGS, OFFSET_RIP,
};
use crate::ir::{AluOp, BlockIr, Cond, Exit, GuestReg, Op, Src};
use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

/// Signature of a compiled block.
pub type BlockFn =
    unsafe extern "sysv64" fn(state: *mut crate::abi::CpuState, env: *mut JitEnv) -> u64;

/// Signature of the helper in [`JitEnv::helper`]: `(env, index, retired_before)`; returns 0
/// to continue in the block, anything else to leave it ([`EXIT_SYNCED`]).
pub type HelperFn = unsafe extern "sysv64" fn(env: *mut JitEnv, index: u64, done: u64) -> u64;

type Asm = VecAssembler<X64Relocation>;

const RFLAGS: i32 = OFFSET_RFLAGS as i32;
const RIP: i32 = OFFSET_RIP as i32;
const HELPER: i32 = OFFSET_ENV_HELPER as i32;
const LIMIT: i32 = OFFSET_ENV_LIMIT as i32;
/// Status flags Jcc reads when it must reload them from the guest RFLAGS.
const STATUS: i32 = crate::abi::flags::STATUS as i32;

/// Emits host code for `ir`, to be placed at host address `base`.
pub fn emit(ir: &BlockIr, base: usize) -> Vec<u8> {
    let mut a = Asm::new(base);
    let body = a.new_dynamic_label();
    let epilogue = a.new_dynamic_label();
    let synced = a.new_dynamic_label();
    dynasm!(a
        ; .arch x64
        ; push rbx
        ; push r12
        ; push r13
        ; mov rbx, rdi
        ; mov r12, rsi
        ; xor r13d, r13d
        ; =>body
    );
    let n_ops = ir.ops.len();
    // A Jcc directly after a native op that defines every flag it reads branches on the live
    // host flags (not after INC/DEC for a CF condition: the host CF is not the guest's there).
    let fuse = match (ir.exit, ir.ops.last()) {
        (Exit::Branch { cond, .. }, Some(Op::Alu { op, .. })) => {
            op.captured_flags() != 0 && cond.reads() & !op.written_flags() == 0
        }
        _ => false,
    };
    for (i, op) in ir.ops.iter().enumerate() {
        match *op {
            Op::Alu { op, dst, src } => {
                let fused = fuse && i + 1 == n_ops;
                alu(&mut a, op, dst, src, !fused);
            }
            Op::Lea {
                dst,
                base,
                index,
                disp,
                addr_size,
            } => lea(&mut a, dst, base, index, disp, addr_size),
            Op::Helper { index } => {
                dynasm!(a
                    ; .arch x64
                    ; mov rdi, r12
                    ; mov esi, index as i32
                    ; mov rdx, r13
                    ; call QWORD [r12 + HELPER]
                    ; test rax, rax
                    ; jnz =>synced
                );
            }
        }
    }
    let n = ir.ninsns as i32;
    match ir.exit {
        Exit::Fallthrough { next } => exit_to(&mut a, ir, next, n, body, epilogue),
        Exit::Jump { target } => exit_to(&mut a, ir, target, n, body, epilogue),
        Exit::Branch {
            cond,
            taken,
            not_taken,
        } => {
            let taken_l = a.new_dynamic_label();
            let last_alu = match ir.ops.last() {
                Some(Op::Alu { op, .. }) if fuse => Some(*op),
                _ => None,
            };
            if last_alu.is_none() {
                // Host flags from the guest status flags (DF/TF/AC cleared: safe for the host).
                dynasm!(a
                    ; .arch x64
                    ; mov rax, QWORD [rbx + RFLAGS]
                    ; and eax, STATUS
                    ; push rax
                    ; popfq
                );
            }
            jcc(&mut a, cond, taken_l);
            if let Some(op) = last_alu {
                merge_flags(&mut a, op);
            }
            exit_to(&mut a, ir, not_taken, n, body, epilogue);
            dynasm!(a ; .arch x64 ; =>taken_l);
            if let Some(op) = last_alu {
                merge_flags(&mut a, op);
            }
            exit_to(&mut a, ir, taken, n, body, epilogue);
        }
    }
    dynasm!(a
        ; .arch x64
        ; =>synced
        ; mov rax, QWORD EXIT_SYNCED as i64
        ; =>epilogue
        ; pop r13
        ; pop r12
        ; pop rbx
        ; ret
    );
    a.finalize().expect("labels of a generated block resolve")
}

/// Leaves the block towards guest IP `target` after `n` instructions of this iteration; a
/// branch back to the block start loops while the next iteration fits in `env.limit`.
fn exit_to(
    a: &mut Asm,
    ir: &BlockIr,
    target: u64,
    n: i32,
    body: DynamicLabel,
    epilogue: DynamicLabel,
) {
    if target == ir.start_ip {
        dynasm!(a
            ; .arch x64
            ; add r13, n
            ; lea rax, [r13 + n]
            ; cmp rax, QWORD [r12 + LIMIT]
            ; jbe =>body
            ; mov rax, QWORD target as i64
            ; mov QWORD [rbx + RIP], rax
            ; mov rax, r13
            ; jmp =>epilogue
        );
    } else {
        dynasm!(a
            ; .arch x64
            ; mov rax, QWORD target as i64
            ; mov QWORD [rbx + RIP], rax
            ; lea rax, [r13 + n]
            ; jmp =>epilogue
        );
    }
}

fn jcc(a: &mut Asm, c: Cond, l: DynamicLabel) {
    match c {
        Cond::O => dynasm!(a ; .arch x64 ; jo =>l),
        Cond::No => dynasm!(a ; .arch x64 ; jno =>l),
        Cond::B => dynasm!(a ; .arch x64 ; jb =>l),
        Cond::Ae => dynasm!(a ; .arch x64 ; jae =>l),
        Cond::E => dynasm!(a ; .arch x64 ; je =>l),
        Cond::Ne => dynasm!(a ; .arch x64 ; jne =>l),
        Cond::Be => dynasm!(a ; .arch x64 ; jbe =>l),
        Cond::A => dynasm!(a ; .arch x64 ; ja =>l),
        Cond::S => dynasm!(a ; .arch x64 ; js =>l),
        Cond::Ns => dynasm!(a ; .arch x64 ; jns =>l),
        Cond::P => dynasm!(a ; .arch x64 ; jp =>l),
        Cond::Np => dynasm!(a ; .arch x64 ; jnp =>l),
        Cond::L => dynasm!(a ; .arch x64 ; jl =>l),
        Cond::Ge => dynasm!(a ; .arch x64 ; jge =>l),
        Cond::Le => dynasm!(a ; .arch x64 ; jle =>l),
        Cond::G => dynasm!(a ; .arch x64 ; jg =>l),
    }
}

/// Loads guest register `r` into rax (`dst == 0`) or rcx (`dst == 1`) at its width.
fn load(a: &mut Asm, host: u8, r: GuestReg) {
    let off = r.offset();
    match (host, r.size) {
        (0, 8) => dynasm!(a ; .arch x64 ; mov rax, QWORD [rbx + off]),
        (0, 4) => dynasm!(a ; .arch x64 ; mov eax, DWORD [rbx + off]),
        (0, 2) => dynasm!(a ; .arch x64 ; mov ax, WORD [rbx + off]),
        (0, _) => dynasm!(a ; .arch x64 ; mov al, BYTE [rbx + off]),
        (_, 8) => dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + off]),
        (_, 4) => dynasm!(a ; .arch x64 ; mov ecx, DWORD [rbx + off]),
        (_, 2) => dynasm!(a ; .arch x64 ; mov cx, WORD [rbx + off]),
        (_, _) => dynasm!(a ; .arch x64 ; mov cl, BYTE [rbx + off]),
    }
}

/// Stores rax into guest register `r`; a 32-bit write stores all 64 bits (zero-extended, as
/// the interpreter and 64-bit hardware do).
fn store(a: &mut Asm, r: GuestReg) {
    let off = r.offset();
    match r.size {
        8 | 4 => dynasm!(a ; .arch x64 ; mov QWORD [rbx + off], rax),
        2 => dynasm!(a ; .arch x64 ; mov WORD [rbx + off], ax),
        _ => dynasm!(a ; .arch x64 ; mov BYTE [rbx + off], al),
    }
}

macro_rules! binop {
    ($a:expr, $size:expr, $m:ident) => {
        match $size {
            8 => dynasm!($a ; .arch x64 ; $m rax, rcx),
            4 => dynasm!($a ; .arch x64 ; $m eax, ecx),
            2 => dynasm!($a ; .arch x64 ; $m ax, cx),
            _ => dynasm!($a ; .arch x64 ; $m al, cl),
        }
    };
}

macro_rules! unop {
    ($a:expr, $size:expr, $m:ident) => {
        match $size {
            8 => dynasm!($a ; .arch x64 ; $m rax),
            4 => dynasm!($a ; .arch x64 ; $m eax),
            2 => dynasm!($a ; .arch x64 ; $m ax),
            _ => dynasm!($a ; .arch x64 ; $m al),
        }
    };
}

/// One native ALU op. With `merge`, the captured flags are merged into the guest RFLAGS;
/// without, they are left in rdx and the host flags stay live (for a fused Jcc).
fn alu(a: &mut Asm, op: AluOp, dst: GuestReg, src: Src, merge: bool) {
    let size = dst.size;
    match src {
        Src::Reg(s) => load(a, 1, s),
        Src::Imm(v) => dynasm!(a ; .arch x64 ; mov rcx, QWORD v as i64),
        Src::None => {}
    }
    if op == AluOp::Mov {
        dynasm!(a ; .arch x64 ; mov rax, rcx);
        if size == 4 {
            dynasm!(a ; .arch x64 ; mov eax, eax);
        }
        store(a, dst);
        return;
    }
    load(a, 0, dst);
    match op {
        AluOp::Add => binop!(a, size, add),
        AluOp::Sub | AluOp::Cmp => binop!(a, size, sub),
        AluOp::And | AluOp::Test => binop!(a, size, and),
        AluOp::Or => binop!(a, size, or),
        AluOp::Xor => binop!(a, size, xor),
        AluOp::Adc => {
            dynasm!(a ; .arch x64 ; bt QWORD [rbx + RFLAGS], 0);
            binop!(a, size, adc)
        }
        AluOp::Sbb => {
            dynasm!(a ; .arch x64 ; bt QWORD [rbx + RFLAGS], 0);
            binop!(a, size, sbb)
        }
        AluOp::Inc => unop!(a, size, inc),
        AluOp::Dec => unop!(a, size, dec),
        AluOp::Neg => unop!(a, size, neg),
        AluOp::Not => unop!(a, size, not),
        AluOp::Mov => unreachable!(),
    }
    if op.captured_flags() != 0 {
        dynasm!(a ; .arch x64 ; pushfq ; pop rdx);
    }
    if op.writes_dst() {
        store(a, dst);
    }
    if merge {
        merge_flags(a, op);
    }
}

/// LEA: the address sum in rax, masked to the address size, stored at the destination width.
fn lea(
    a: &mut Asm,
    dst: GuestReg,
    base: Option<u8>,
    index: Option<(u8, u8)>,
    disp: u64,
    addr_size: u8,
) {
    let gpr = |i: u8| (crate::abi::OFFSET_GPR + usize::from(i) * 8) as i32;
    dynasm!(a ; .arch x64 ; mov rax, QWORD disp as i64);
    if let Some(b) = base {
        let off = gpr(b);
        dynasm!(a ; .arch x64 ; add rax, QWORD [rbx + off]);
    }
    if let Some((i, scale)) = index {
        let off = gpr(i);
        dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + off]);
        match scale {
            2 => dynasm!(a ; .arch x64 ; shl rcx, 1),
            4 => dynasm!(a ; .arch x64 ; shl rcx, 2),
            8 => dynasm!(a ; .arch x64 ; shl rcx, 3),
            _ => {}
        }
        dynasm!(a ; .arch x64 ; add rax, rcx);
    }
    match addr_size {
        2 => dynasm!(a ; .arch x64 ; movzx eax, ax),
        4 => dynasm!(a ; .arch x64 ; mov eax, eax),
        _ => {}
    }
    if dst.size == 4 {
        dynasm!(a ; .arch x64 ; mov eax, eax);
    }
    store(a, dst);
}

/// Merges the host flags in rdx into the guest RFLAGS (clobbers rax, rdx and host flags).
fn merge_flags(a: &mut Asm, op: AluOp) {
    let cap = op.captured_flags() as i32;
    if cap == 0 {
        return;
    }
    let keep = !(op.written_flags() as i32);
    dynasm!(a
        ; .arch x64
        ; and edx, cap
        ; mov rax, QWORD [rbx + RFLAGS]
        ; and rax, keep
        ; or rax, rdx
        ; mov QWORD [rbx + RFLAGS], rax
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::lower;
    use decoder::{scan_block, FetchFault, Mode};
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn host_asm(mode: Mode, guest: &[u8]) -> Vec<String> {
        let mut mem = vec![0xf4u8; 4096];
        mem[..guest.len()].copy_from_slice(guest);
        let mut fetch = |la: u64, buf: &mut [u8]| -> Result<usize, FetchFault> {
            let off = (la - 0x1000) as usize;
            let n = buf.len().min(4096 - off);
            buf[..n].copy_from_slice(&mem[off..off + n]);
            Ok(n)
        };
        let b = scan_block(mode, 0, 0x1000, &mut fetch, 64).unwrap();
        let code = emit(&lower(&b).unwrap(), 0x10_0000);
        let mut d = Decoder::with_ip(64, &code, 0x10_0000, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        d.iter()
            .map(|i| {
                let mut s = String::new();
                f.format(&i, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn golden_cmp_jne_loop_branches_on_live_host_flags() {
        // Guest: L: dec ecx; cmp ecx, eax; jne L
        let h = host_asm(Mode::Bits32, &[0x49, 0x39, 0xc1, 0x75, 0xfb]);
        let text = h.join("\n");
        assert!(h.iter().any(|l| l == "dec eax"), "{text}");
        assert!(h.iter().any(|l| l == "sub eax,ecx"), "{text}");
        assert_eq!(h.iter().filter(|l| *l == "pushfq").count(), 2, "{text}");
        assert!(h.iter().any(|l| l.starts_with("jne ")), "{text}");
        assert!(
            !h.iter().any(|l| l == "popfq"),
            "fused: no reload of the flags\n{text}"
        );
        // The loop back edge checks the instruction limit in env (r12 + 8).
        assert!(h.iter().any(|l| l == "cmp rax,[r12+8]"), "{text}");
    }

    #[test]
    fn golden_inc_then_jb_reloads_guest_flags() {
        // Guest: inc eax; jb +0 — INC leaves CF, so the Jcc must read the guest RFLAGS.
        let h = host_asm(Mode::Bits32, &[0x40, 0x72, 0x00]);
        let text = h.join("\n");
        assert!(h.iter().any(|l| l == "popfq"), "{text}");
        assert!(h.iter().any(|l| l.starts_with("jb ")), "{text}");
    }

    #[test]
    fn golden_memory_operand_calls_the_helper() {
        // Guest: mov eax, [ebx]; hlt — both through the helper (call [r12]).
        let h = host_asm(Mode::Bits32, &[0x8b, 0x03, 0xf4]);
        let calls = h.iter().filter(|l| *l == "call qword ptr [r12]").count();
        assert_eq!(calls, 2, "{}", h.join("\n"));
    }
}
