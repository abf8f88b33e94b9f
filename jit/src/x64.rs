//! The x86-64 backend: [`BlockIr`] -> host machine code (dynasmrt).
//!
//! Calling convention of a compiled block (System V on every OS, `extern "sysv64"`):
//! `block(state: *mut CpuState, env: *mut JitEnv) -> u64`, returning the number of guest
//! instructions retired (RIP stored in `state`) or [`EXIT_SYNCED`].
//!
//! Register use: `rbx` = state, `r12` = env, `r13` = instructions retired by earlier loop
//! iterations of this invocation; `rax`, `rcx`, `rdx`, `rsi`, `rdi` are scratch; `rbp`, `r14`,
//! `r15`, `r8`-`r11` and `rdi` hold copies of up to eight guest GPRs (`CACHED`), written
//! back to `CpuState` before anything else can look at it (slow paths, helpers, exits; see
//! `DIRTY`), so every point where control can leave compiled code is a precise state.
//!
//! A block may be a superblock: inner direct Jcc are side exits ([`Op::SideExit`]), whose
//! taken paths are out of line; the fall-through goes on with the copies and pending flags
//! as they are.
//!
//! Flags: a native ALU op runs the same host instruction on the guest values, so the host
//! flags *are* the guest flags; they are captured (LAHF, SETO) and merged into the eager
//! guest RFLAGS, unless [`flags_needed`] shows nothing can observe them. A Jcc right after
//! such an op branches on the live host flags. In 64-bit blocks the captured flags may stay
//! pending in rdx across loads, stores and block exits (see [`ENTRY_OP`]; merged on their
//! slow paths, at the next op that needs RFLAGS, or on the way back to the driver) and are
//! dropped when a later op overwrites them all.

use crate::abi::{
    JitEnv, EXIT_SYNCED, JC_ENTRIES, JC_ENTRY_SHIFT, JTLB_ENTRIES, JTLB_ENTRY_SHIFT, OFFSET_CR0,
    OFFSET_CR4, OFFSET_ENV_CUR, OFFSET_ENV_FILL, OFFSET_ENV_HELPER, OFFSET_ENV_JC,
    OFFSET_ENV_JC_TAG, OFFSET_ENV_LAST_EXIT, OFFSET_ENV_LIMIT, OFFSET_ENV_TLB, OFFSET_GPR,
    OFFSET_JC_HOST, OFFSET_JC_RIP, OFFSET_JC_TAG, OFFSET_JTLB_ADDEND, OFFSET_JTLB_READ,
    OFFSET_JTLB_WRITE, OFFSET_RFLAGS, OFFSET_RIP, OFFSET_SEG, OFFSET_XMM,
};
use crate::ir::{
    flags_needed, AluOp, BlockIr, Cond, Exit, GuestReg, MemRef, MulDivOp, Op, RegOrMem, ShiftOp,
    Src,
};
use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

/// Signature of a compiled block.
pub type BlockFn =
    unsafe extern "sysv64" fn(state: *mut crate::abi::CpuState, env: *mut JitEnv) -> u64;

/// Signature of the helper in [`JitEnv::helper`]: `(env, index, retired_before)`; returns 0
/// to continue in the block, 1 to leave it ([`EXIT_SYNCED`]), or `2 + retired` (instructions
/// retired in this invocation, the helper's included) to leave it through the jump cache
/// (control flow went elsewhere and nothing else needs the driver; RIP is in the state).
pub type HelperFn = unsafe extern "sysv64" fn(env: *mut JitEnv, index: u64, done: u64) -> u64;

/// Signature of the TLB fill in [`JitEnv::fill`]: `(env, la, size | 0x100 for stores)`;
/// returns 0 if the inline probe for `la` now hits, anything else to run the instruction
/// through the helper.
pub type FillFn = unsafe extern "sysv64" fn(env: *mut JitEnv, la: u64, kind: u64) -> u64;

type Asm = VecAssembler<X64Relocation>;

const RFLAGS: i32 = OFFSET_RFLAGS as i32;
const RIP: i32 = OFFSET_RIP as i32;
const HELPER: i32 = OFFSET_ENV_HELPER as i32;
const LIMIT: i32 = OFFSET_ENV_LIMIT as i32;

const FILL: i32 = OFFSET_ENV_FILL as i32;
const CUR: i32 = OFFSET_ENV_CUR as i32;
const LAST_EXIT: i32 = OFFSET_ENV_LAST_EXIT as i32;
const TLB: i32 = OFFSET_ENV_TLB as i32;
const RSP: i32 = (OFFSET_GPR + 4 * 8) as i32;
const JC: i32 = OFFSET_ENV_JC as i32;
const JC_TAG_ENV: i32 = OFFSET_ENV_JC_TAG as i32;

/// Out-of-line slow path of one inline memory access.
struct Slow {
    /// Probe of way 0 missed (la in rax, entry address in rcx, tag in rsi; rdx may hold pending flags): check way 1 (hit:
    /// host address in rsi, continue at `hit`), else ask `fill`, then retry at `retry`.
    fill: DynamicLabel,
    hit: DynamicLabel,
    /// Offset of the tag the probe compares (read or write tag).
    tag_off: i32,
    /// Run the whole instruction through the helper, then continue at `done`.
    helper: DynamicLabel,
    retry: DynamicLabel,
    done: DynamicLabel,
    kind: u64,
    index: u32,
    /// The op's host flags feed a fused Jcc: after the helper ran the instruction, rdx and
    /// the host status flags are set from the guest RFLAGS it wrote.
    restore_flags: bool,
    /// Flags of this op captured in rdx and not yet in the guest RFLAGS where the slow path
    /// is entered (see [`PENDING`]): merged before any call.
    pending: Option<AluOp>,
}

impl Slow {
    /// A slow path that only runs instruction `index` through the helper (no memory access
    /// to fill): entered at `helper`, continuing at `done` when the block goes on.
    fn helper_only(helper: DynamicLabel, done: DynamicLabel, index: u32) -> Slow {
        Slow {
            fill: helper,
            hit: done,
            tag_off: 0,
            helper,
            retry: done,
            done,
            kind: 0,
            index,
            restore_flags: false,
            pending: pending(),
        }
    }
}

/// Subroutines shared by a block's slow paths, emitted once per block when used (called
/// with rsp 8 below the block's 16-byte alignment; each realigns before calling Rust).
///
/// Every one writes back *every* cached guest register, not only the ones dirty at the
/// calling site: a clean copy equals its slot, so the extra stores are harmless, and the
/// code is the same for every site. After the call they reload the copies and, so that a
/// later merge of rdx is a no-op, rdx from RFLAGS (the callee may have written it; where
/// nothing is pending rdx is dead).
#[derive(Default)]
struct SlowSubs {
    /// rax = linear address, edx = kind: the TLB fill ([`FillFn`]); returns its result in rax.
    fill: Option<DynamicLabel>,
    /// esi = instruction index: the helper ([`HelperFn`]); returns its result in rax.
    helper: Option<DynamicLabel>,
    /// Merge of pending flags ([`merge_flags`]) keeping rax and rdx, by op.
    merges: Vec<(AluOp, DynamicLabel)>,
}

impl SlowSubs {
    /// Calls the merge subroutine of `pending` flags, if any.
    fn merge(&mut self, a: &mut Asm, pending: Option<AluOp>) {
        let Some(op) = pending else {
            return;
        };
        if op.captured_flags() == 0 {
            return;
        }
        let l = match self.merges.iter().find(|(o, _)| *o == op) {
            Some(&(_, l)) => l,
            None => {
                let l = a.new_dynamic_label();
                self.merges.push((op, l));
                l
            }
        };
        dynasm!(a ; .arch x64 ; call =>l);
    }

    fn emit(&self, a: &mut Asm) {
        // Spill every copy, set up the call's arguments (`args`), call, reload, return.
        let call_sub = |a: &mut Asm, l: DynamicLabel, args: &dyn Fn(&mut Asm), f: i32| {
            dynasm!(a ; .arch x64 ; =>l ; sub rsp, 8);
            write_back(a, 0xffff);
            dynasm!(a ; .arch x64 ; mov rdi, r12);
            args(a);
            dynasm!(a ; .arch x64 ; call QWORD [r12 + f]);
            reload_all(a);
            reload_captured(a);
            dynasm!(a ; .arch x64 ; add rsp, 8 ; ret);
        };
        if let Some(l) = self.fill {
            call_sub(a, l, &|a| dynasm!(a ; .arch x64 ; mov rsi, rax), FILL);
        }
        if let Some(l) = self.helper {
            call_sub(a, l, &|a| dynasm!(a ; .arch x64 ; mov rdx, r13), HELPER);
        }
        for &(op, l) in &self.merges {
            dynasm!(a ; .arch x64 ; =>l);
            merge_into_rflags(a, Some(op));
            dynasm!(a ; .arch x64 ; ret);
        }
    }
}

/// The out-of-line "taken" path of an [`Op::SideExit`].
struct SideStub {
    label: DynamicLabel,
    /// Guest GPRs dirty at the Jcc (written back on the way out).
    dirty: u16,
    /// What rdx holds at the Jcc.
    arm: InRdx,
    target: u64,
    /// Instructions retired by the exit (this iteration).
    n: i32,
}

/// The ALU op whose live host flags a Jcc on `cond` right after `op` may branch on: one that
/// captures flags and writes every flag `cond` reads (not INC / DEC for a CF condition: the
/// host CF is not the guest's there).
fn fusable(op: &Op, cond: Cond) -> Option<AluOp> {
    match *op {
        Op::Alu { op, .. } | Op::AluLoad { op, .. } | Op::AluStore { op, .. }
            if op.captured_flags() != 0 && cond.reads() & !op.written_flags() == 0 =>
        {
            Some(op)
        }
        _ => None,
    }
}

/// A jump of a block exit that the driver may patch to go straight to the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainExit {
    /// Offset in the code of the jump's rel32 field (the opcode byte 0xE9 precedes it).
    pub site: usize,
    /// Guest IP the exit continues at.
    pub target: u64,
}

/// A block's code and what the driver needs for chaining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The machine code, to be installed at the `base` it was emitted for.
    pub code: Vec<u8>,
    /// Offset of the chained entry: jumped to (not called) from another block of the same
    /// invocation, with `r13` = instructions retired so far; it re-checks `env.limit`, sets
    /// `env.cur` and runs the body, or leaves with RIP = block start if the block would not
    /// fit.
    pub chain_entry: usize,
    /// Patchable exits (`exit index` = position in this vector).
    pub exits: Vec<ChainExit>,
}

/// Emits host code for `ir`, to be placed at host address `base` (see [`emit_block`]).
pub fn emit(ir: &BlockIr, base: usize, user: bool) -> Vec<u8> {
    emit_block(ir, base, user, 0, false).code
}

/// Emits host code for `ir`, to be placed at host address `base`.
///
/// `user` is true when the block runs at CPL 3 (part of the block key): the inline TLB
/// probe compares tags filled for that privilege class. `id` is the driver's number for the
/// block (stored in `env.cur` by the chained entry, reported in `env.last_exit`). With
/// `chain`, exits to other IPs of the block's page are patchable jumps.
pub fn emit_block(ir: &BlockIr, base: usize, user: bool, id: u32, chain: bool) -> Emitted {
    let mut slow: Vec<Slow> = Vec::new();
    let mut exits: Vec<ChainExit> = Vec::new();
    let mut a = Asm::new(base);
    let body = a.new_dynamic_label();
    let epilogue = a.new_dynamic_label();
    let synced = a.new_dynamic_label();
    let jc = a.new_dynamic_label();
    let mut cx = ExitCtx {
        chain,
        id,
        exits: &mut exits,
        jc,
    };
    CACHED.with(|c| c.set(choose_cache(ir)));
    DIRTY.with(|d| d.set(0));
    PENDING.with(|p| p.set(ir.bits64.then_some(ENTRY_OP)));
    DEFER.with(|d| d.set(ir.bits64));
    // Six pushes and 8 more bytes keep rsp 16-byte aligned at the calls of the helpers.
    dynasm!(a
        ; .arch x64
        ; push rbx
        ; push r12
        ; push r13
        ; push rbp
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; mov rbx, rdi
        ; mov r12, rsi
        ; xor r13d, r13d
    );
    // 64-bit blocks are entered with the guest status flags in rdx ([`ENTRY_OP`]): from
    // the driver, the RFLAGS image; from another block, possibly flags not merged yet.
    let entry_flags = ir.bits64;
    if entry_flags {
        reload_captured(&mut a);
    }
    dynasm!(a ; .arch x64 ; =>body);
    reload_all(&mut a);
    // Loop back edges come here: the cached copies are still current.
    let hot = a.new_dynamic_label();
    dynasm!(a ; .arch x64 ; =>hot);
    // A back edge jumps here without writing the copies back (see `exit_to`), so in a block
    // that loops to its start every cached copy counts as dirty from here on: exits write
    // them all back (on the first pass they equal their slots: harmless stores).
    let loops = match ir.exit {
        Exit::Jump { target } => target == ir.start_ip,
        Exit::Branch {
            taken, not_taken, ..
        } => taken == ir.start_ip || not_taken == ir.start_ip,
        _ => false,
    } || ir
        .ops
        .iter()
        .any(|op| matches!(op, Op::SideExit { taken, .. } if *taken == ir.start_ip));
    if loops {
        let all = (0..16u8)
            .filter(|&i| cached(i).is_some())
            .fold(0u16, |m, i| m | 1 << i);
        DIRTY.with(|d| d.set(all));
    }
    let n_ops = ir.ops.len();
    // A Jcc directly after a native op that defines every flag it reads branches on the live
    // host flags (not after INC/DEC for a CF condition: the host CF is not the guest's there).
    // Also after an op with a memory operand (CMP [mem], r; DEC [mem]; ...): its slow path
    // (the helper ran the instruction) restores the host flags from the guest RFLAGS.
    let fuse = match (ir.exit, ir.ops.last()) {
        (Exit::Branch { cond, .. }, Some(op)) => fusable(op, cond).is_some(),
        _ => false,
    };
    // The same for each op: whether its host flags feed the flag reader right after it (a
    // side exit of a superblock, the final branch, CMOVcc or SETcc).
    let fused: Vec<bool> = (0..n_ops)
        .map(|i| match ir.ops.get(i + 1) {
            Some(&Op::SideExit { cond, .. } | &Op::Cmov { cond, .. } | &Op::Setcc { cond, .. }) => {
                fusable(&ir.ops[i], cond).is_some()
            }
            None => fuse,
            Some(_) => false,
        })
        .collect();
    // Side exits, emitted out of line after the block's final exit.
    let mut sides: Vec<SideStub> = Vec::new();
    // The previous op was an INC / DEC whose capture holds every status flag (see below).
    let mut prev_carried_cf = false;
    // Ops whose flags nothing observes skip computing them (see `flags_needed`).
    let need = flags_needed(ir);
    // The last op was an INC / DEC whose host CF came from the pending flags (its capture
    // holds every status flag).
    let mut last_carried_cf = false;
    for (i, op) in ir.ops.iter().enumerate() {
        let need = need[i];
        // Ops that read or write guest registers in `CpuState` directly (or call out) see the
        // cached copies written back first; the others work on the copies (see `DIRTY`).
        if matches!(
            op,
            Op::ShiftCl { .. }
                | Op::MulDiv { .. }
                | Op::Push { .. }
                | Op::Pop { .. }
                | Op::RepString { .. }
                | Op::Helper { .. }
        ) {
            flush_dirty(&mut a);
        }
        // Pending flags (see `PENDING`) stay in rdx across ops that neither read RFLAGS nor
        // use rdx; an ALU op that overwrites every flag they hold drops them (its slow path,
        // entered before it ran, still merges them).
        let mut dropping = false;
        let mut carry_cf = false;
        if let Some(p) = pending() {
            match *op {
                Op::Load { .. } | Op::Store { .. } | Op::Lea { .. } | Op::Movx { .. } | Op::Nop => {
                }
                // rdx untouched (their slow paths merge the pending flags first).
                Op::MovdToXmm { .. } | Op::MovdFromXmm { .. } | Op::XmmShiftImm { .. } => {}
                Op::Alu { op: AluOp::Mov, .. } | Op::Xchg { .. } | Op::Bswap { .. } => {}
                // A shift or rotate whose own flags are dead (computed nowhere, rdx untouched):
                // the pending flags it overwrites are dead with them, the others stay exact.
                Op::Shift { .. } if !need => {}
                // A shift by a constant whose flags are live writes every status flag (its
                // own capture replaces the pending one; it has no slow path).
                Op::Shift { op, .. } if !op.is_rotate() => dropping = true,
                // The same for a memory shift (its slow path, entered before it ran, merges
                // the pending flags recorded at the probe).
                Op::ShiftMem { .. } if !need => {}
                Op::ShiftMem { .. } => dropping = true,
                Op::Alu {
                    op: AluOp::Inc | AluOp::Dec,
                    ..
                } if (need || fused[i])
                    && p.written_flags() == crate::abi::flags::STATUS
                    && p.captured_flags() & crate::abi::flags::CF != 0 =>
                {
                    // INC / DEC keep CF: the host CF is set from the pending one (bit 0 of
                    // rdx in both layouts `merge_flags` takes), so the op's own capture
                    // (made: its flags are live) holds every status flag and replaces the
                    // pending flags (no merge).
                    dynasm!(a ; .arch x64 ; bt edx, 0);
                    carry_cf = true;
                    dropping = true;
                }
                Op::Alu { op: o, .. } | Op::AluLoad { op: o, .. } | Op::AluStore { op: o, .. }
                    if !matches!(o, AluOp::Adc | AluOp::Sbb)
                        && o.written_flags() & p.written_flags() == p.written_flags() =>
                {
                    dropping = true;
                }
                _ => merge_pending(&mut a),
            }
        }
        // For a flag reader fused with op i - 1 (see `fused`): the op standing for the flags
        // live on the host and captured in rdx (ENTRY_OP after an INC / DEC that took CF
        // from the pending flags: its capture holds every status flag).
        let live_prev = |cond: Cond| {
            let op = i.checked_sub(1).filter(|&p| fused[p])?;
            let op = fusable(&ir.ops[op], cond)?;
            Some(if prev_carried_cf { ENTRY_OP } else { op })
        };
        match *op {
            Op::Alu { op, dst, src } => {
                let fused = fused[i];
                alu(&mut a, op, dst, src, need || fused, need && !fused);
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
                reload_all(&mut a);
            }
            Op::Shift { op, dst, count } => shift(&mut a, op, dst, Some(count), need),
            Op::ShiftCl { op, dst, index } => {
                let done = a.new_dynamic_label();
                let helper = a.new_dynamic_label();
                shift_cl(&mut a, op, dst, helper, done);
                slow.push(Slow::helper_only(helper, done, index));
            }
            Op::Cmov { cond, dst, src } => {
                // The previous op's flags are live on the host (its capture is in rdx):
                // use them, then settle them as if it had not been fused.
                let live = live_prev(cond);
                cmov(&mut a, cond, dst, src, live.is_some());
                if let Some(op) = live {
                    settle_flags(&mut a, op);
                }
            }
            Op::Setcc { cond, dst } => {
                let live = live_prev(cond);
                setcc(&mut a, cond, dst, live.is_some());
                if let Some(op) = live {
                    settle_flags(&mut a, op);
                }
            }
            Op::Imul { dst, src, imm } => imul(&mut a, dst, src, imm, need),
            Op::Movx { dst, src, sign } => movx(&mut a, dst, src, sign),
            Op::Xchg { a: x, b: y } => {
                load(&mut a, 0, x);
                load(&mut a, 1, y);
                dynasm!(a ; .arch x64 ; xchg rax, rcx);
                store(&mut a, x);
                dynasm!(a ; .arch x64 ; mov rax, rcx);
                store(&mut a, y);
            }
            Op::Bswap { dst } => {
                load(&mut a, 0, dst);
                if dst.size == 8 {
                    dynasm!(a ; .arch x64 ; bswap rax);
                } else {
                    dynasm!(a ; .arch x64 ; bswap eax);
                }
                store(&mut a, dst);
            }
            Op::Bt { dst, src } => bt(&mut a, dst, src),
            Op::Nop => {}
            Op::SideExit { cond, taken, index } => {
                let arm = match live_prev(cond) {
                    // The previous op's capture is in rdx and its flags are live on the host.
                    Some(op) => InRdx::Pending(op),
                    None => {
                        // RFLAGS must be current for the Jcc to read it.
                        let arm = match pending() {
                            Some(op) if op.written_flags() == crate::abi::flags::STATUS => {
                                InRdx::Image
                            }
                            _ => InRdx::Unknown,
                        };
                        merge_pending(&mut a);
                        load_guest_flags(&mut a, cond);
                        arm
                    }
                };
                let label = a.new_dynamic_label();
                jcc(&mut a, cond, label);
                // Not taken: the previous op's flags become pending (or are merged) as if it
                // had not been fused.
                if let InRdx::Pending(op) = arm {
                    settle_flags(&mut a, op);
                }
                sides.push(SideStub {
                    label,
                    dirty: dirty(),
                    arm,
                    target: taken,
                    n: index as i32 + 1,
                });
            }
            Op::SignFill { size } => sign_fill(&mut a, size),
            Op::BitScan { reverse, dst, src } => bit_scan(&mut a, reverse, dst, src),
            Op::MulDiv { op, src, index } => {
                let done = a.new_dynamic_label();
                let helper = a.new_dynamic_label();
                mul_div(&mut a, op, src, helper);
                dynasm!(a ; .arch x64 ; =>done);
                if matches!(op, MulDivOp::Div | MulDivOp::Idiv) {
                    slow.push(Slow::helper_only(helper, done, index));
                }
            }
            Op::Load {
                dst,
                mem,
                sign,
                index,
            } => {
                let s = mem_access(&mut a, ir, &mem, false, user, index, &mut slow);
                if !load_cached(&mut a, dst, mem.size, sign) {
                    load_host(&mut a, mem.size, sign);
                    if dst.size == 4 {
                        dynasm!(a ; .arch x64 ; mov eax, eax);
                    }
                    store(&mut a, dst);
                }
                dynasm!(a ; .arch x64 ; =>s);
            }
            Op::Store { src, mem, index } => {
                let s = mem_access(&mut a, ir, &mem, true, user, index, &mut slow);
                match src {
                    Src::Reg(r) => load(&mut a, 0, r),
                    Src::Imm(v) => dynasm!(a ; .arch x64 ; mov rax, QWORD v as i64),
                    Src::None => unreachable!("store without a source"),
                }
                store_host(&mut a, mem.size);
                dynasm!(a ; .arch x64 ; =>s);
            }
            Op::AluLoad {
                op,
                dst,
                mem,
                index,
            } => {
                let fused = fused[i];
                let s = mem_access(&mut a, ir, &mem, false, user, index, &mut slow);
                if let Some(sl) = slow.last_mut() {
                    sl.restore_flags = fused;
                }
                let (capture, merge) = (need || fused, need && !fused);
                if mem.size != dst.size || !alu_cached_op(&mut a, op, dst, S::Host, capture, merge)
                {
                    match mem.size {
                        8 => dynasm!(a ; .arch x64 ; mov rcx, QWORD [rsi]),
                        4 => dynasm!(a ; .arch x64 ; mov ecx, DWORD [rsi]),
                        2 => dynasm!(a ; .arch x64 ; movzx ecx, WORD [rsi]),
                        _ => dynasm!(a ; .arch x64 ; movzx ecx, BYTE [rsi]),
                    }
                    alu_core(&mut a, op, dst, capture, merge);
                }
                dynasm!(a ; .arch x64 ; =>s);
            }
            Op::AluStore {
                op,
                mem,
                src,
                index,
            } => {
                let fused = fused[i];
                let s = mem_access(&mut a, ir, &mem, op.writes_dst(), user, index, &mut slow);
                if let Some(sl) = slow.last_mut() {
                    sl.restore_flags = fused;
                }
                load_host(&mut a, mem.size, false);
                match src {
                    Src::Reg(r) => load(&mut a, 1, r),
                    Src::Imm(v) => dynasm!(a ; .arch x64 ; mov rcx, QWORD v as i64),
                    Src::None => {}
                }
                alu_op(&mut a, op, mem.size);
                if op.writes_dst() {
                    store_host(&mut a, mem.size);
                }
                if (need || fused) && op.captured_flags() != 0 {
                    capture_flags(&mut a);
                }
                if need && !fused {
                    settle_flags(&mut a, op);
                }
                dynasm!(a ; .arch x64 ; =>s);
            }
            Op::Push { src, index } => {
                let retry = a.new_dynamic_label();
                dynasm!(a
                    ; .arch x64
                    ; =>retry
                    ; mov rax, QWORD [rbx + RSP]
                    ; sub rax, 8
                );
                let s = probe(&mut a, 8, true, user, index, retry, &mut slow);
                match src {
                    Src::Reg(r) => dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + r.offset()]),
                    Src::Imm(v) => dynasm!(a ; .arch x64 ; mov rcx, QWORD v as i64),
                    Src::None => unreachable!("push without a source"),
                }
                dynasm!(a
                    ; .arch x64
                    ; mov QWORD [rsi], rcx
                    ; sub QWORD [rbx + RSP], 8
                );
                refresh(&mut a, 4);
                dynasm!(a ; .arch x64 ; =>s);
            }
            Op::MovdToXmm { xmm, src, index } => {
                let (x, done) = sse_prologue(&mut a, xmm, index, &mut slow);
                let mut s = None;
                match src {
                    RegOrMem::Reg(r) => load(&mut a, 0, r),
                    RegOrMem::Mem(m) => {
                        s = Some(mem_access(&mut a, ir, &m, false, user, index, &mut slow));
                        dynasm!(a ; .arch x64 ; mov eax, DWORD [rsi]);
                    }
                }
                dynasm!(a
                    ; .arch x64
                    ; mov QWORD [rbx + x], rax
                    ; mov QWORD [rbx + x + 8], 0
                    ; =>done
                );
                if let Some(s) = s {
                    dynasm!(a ; .arch x64 ; =>s);
                }
            }
            Op::MovdFromXmm { xmm, dst, index } => {
                let (x, done) = sse_prologue(&mut a, xmm, index, &mut slow);
                let mut s = None;
                match dst {
                    RegOrMem::Reg(r) => {
                        dynasm!(a ; .arch x64 ; mov eax, DWORD [rbx + x]);
                        store(&mut a, r);
                    }
                    RegOrMem::Mem(m) => {
                        s = Some(mem_access(&mut a, ir, &m, true, user, index, &mut slow));
                        dynasm!(a
                            ; .arch x64
                            ; mov eax, DWORD [rbx + x]
                            ; mov DWORD [rsi], eax
                        );
                    }
                }
                dynasm!(a ; .arch x64 ; =>done);
                if let Some(s) = s {
                    dynasm!(a ; .arch x64 ; =>s);
                }
            }
            Op::XmmShiftImm {
                code,
                xmm,
                imm,
                index,
            } => {
                let (x, done) = sse_prologue(&mut a, xmm, index, &mut slow);
                let c = imm as i8;
                dynasm!(a ; .arch x64 ; movdqu xmm0, [rbx + x]);
                match code {
                    iced_x86::Code::Psllw_xmm_imm8 => dynasm!(a ; .arch x64 ; psllw xmm0, c),
                    iced_x86::Code::Pslld_xmm_imm8 => dynasm!(a ; .arch x64 ; pslld xmm0, c),
                    iced_x86::Code::Psllq_xmm_imm8 => dynasm!(a ; .arch x64 ; psllq xmm0, c),
                    iced_x86::Code::Psrlw_xmm_imm8 => dynasm!(a ; .arch x64 ; psrlw xmm0, c),
                    iced_x86::Code::Psrld_xmm_imm8 => dynasm!(a ; .arch x64 ; psrld xmm0, c),
                    iced_x86::Code::Psrlq_xmm_imm8 => dynasm!(a ; .arch x64 ; psrlq xmm0, c),
                    iced_x86::Code::Psraw_xmm_imm8 => dynasm!(a ; .arch x64 ; psraw xmm0, c),
                    _ => dynasm!(a ; .arch x64 ; psrad xmm0, c),
                }
                dynasm!(a
                    ; .arch x64
                    ; movdqu [rbx + x], xmm0
                    ; =>done
                );
            }
            Op::ShiftMem {
                op,
                mem,
                count,
                index,
            } => {
                let s = mem_access(&mut a, ir, &mem, true, user, index, &mut slow);
                load_host(&mut a, mem.size, false);
                shift_in_rax(&mut a, op, mem.size, Some(count));
                store_host(&mut a, mem.size);
                if need {
                    shift_const_flags(&mut a, op, count);
                }
                dynasm!(a ; .arch x64 ; =>s);
            }
            Op::RepString { movs, size, index } => {
                rep_string(&mut a, movs, size, user, index, &mut slow);
            }
            Op::Pop { dst, index } => {
                let retry = a.new_dynamic_label();
                dynasm!(a
                    ; .arch x64
                    ; =>retry
                    ; mov rax, QWORD [rbx + RSP]
                );
                let s = probe(&mut a, 8, false, user, index, retry, &mut slow);
                let off = dst.offset();
                dynasm!(a
                    ; .arch x64
                    ; mov rcx, QWORD [rsi]
                    ; add QWORD [rbx + RSP], 8
                    ; mov QWORD [rbx + off], rcx
                );
                refresh(&mut a, 4);
                refresh(&mut a, dst.index);
                dynasm!(a ; .arch x64 ; =>s);
            }
        }
        if carry_cf {
            if i + 1 == n_ops {
                last_carried_cf = true;
            }
            if pending().is_some_and(|p| matches!(p, AluOp::Inc | AluOp::Dec)) {
                PENDING.with(|p| p.set(Some(ENTRY_OP)));
            }
        }
        // A dropping op that did not leave its own flags pending (dead, or fused with the
        // branch) leaves nothing pending: what was is overwritten.
        if dropping && (!need || fused[i]) {
            PENDING.with(|p| p.set(None));
        }
        prev_carried_cf = carry_cf;
    }
    let n = ir.ninsns as i32;
    // Every exit leaves `CpuState` current (plain moves, so live host flags survive for a
    // fused Jcc): the direct exits in `exit_to` (a loop back edge only when it leaves), the
    // others here.
    let wb = dirty();
    DIRTY.with(|d| d.set(0));
    if !matches!(
        ir.exit,
        Exit::Fallthrough { .. } | Exit::Jump { .. } | Exit::Branch { .. }
    ) {
        write_back(&mut a, wb);
    }
    // 64-bit blocks leave with the flags still pending in rdx ([`ENTRY_OP`]); the others
    // merge them here.
    let at_exit = if entry_flags {
        match pending() {
            Some(op) => InRdx::Pending(op),
            None => InRdx::Unknown,
        }
    } else {
        merge_pending(&mut a);
        InRdx::Unknown
    };
    if entry_flags && !matches!(ir.exit, Exit::Branch { .. }) {
        settle_exit(&mut a, at_exit);
    }
    match ir.exit {
        Exit::Fallthrough { next } => exit_to(&mut a, ir, next, n, wb, hot, epilogue, &mut cx),
        Exit::Jump { target } => exit_to(&mut a, ir, target, n, wb, hot, epilogue, &mut cx),
        Exit::Call { target, ret, index } => {
            let retry = a.new_dynamic_label();
            dynasm!(a
                ; .arch x64
                ; =>retry
                ; mov rax, QWORD [rbx + RSP]
                ; sub rax, 8
            );
            let s = probe(&mut a, 8, true, user, index, retry, &mut slow);
            dynasm!(a
                ; .arch x64
                ; mov rcx, QWORD ret as i64
                ; mov QWORD [rsi], rcx
                ; sub QWORD [rbx + RSP], 8
            );
            refresh(&mut a, 4);
            exit_to(&mut a, ir, target, n, 0, hot, epilogue, &mut cx);
            // The slow path's helper ran the CALL and left the block (RIP changed).
            dynasm!(a ; .arch x64 ; =>s ; jmp =>synced);
        }
        Exit::CallReg { src, ret, index } => {
            let retry = a.new_dynamic_label();
            let helper = a.new_dynamic_label();
            dynasm!(a
                ; .arch x64
                ; =>retry
                ; mov rax, QWORD [rbx + RSP]
                ; sub rax, 8
            );
            let s = probe_with(&mut a, 8, true, user, index, retry, helper, &mut slow);
            // SDM Vol. 2A "CALL": the target is read before the push (`call rsp` jumps to
            // the old RSP); a non-canonical one is #GP(0) with nothing pushed (helper).
            dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + src.offset()]);
            canonical_or(&mut a, helper);
            dynasm!(a
                ; .arch x64
                ; mov rax, QWORD ret as i64
                ; mov QWORD [rsi], rax
                ; sub QWORD [rbx + RSP], 8
                ; mov QWORD [rbx + RIP], rcx
            );
            refresh(&mut a, 4);
            exit_to_rcx(&mut a, ir, chain, jc, epilogue);
            // The slow path's helper ran the CALL (or raised the fault) and left the block.
            dynasm!(a ; .arch x64 ; =>s ; jmp =>synced);
        }
        Exit::CallMem { mem, ret, index } => {
            let retry = a.new_dynamic_label();
            let helper = a.new_dynamic_label();
            dynasm!(a ; .arch x64 ; =>retry);
            // SDM Vol. 2A "CALL": the target is read first (a fault there pushes nothing);
            // it is parked in RIP while the push is probed (the helper, if it runs the CALL,
            // sets RIP itself).
            let s1 = mem_access(&mut a, ir, &mem, false, user, index, &mut slow);
            dynasm!(a ; .arch x64 ; mov rcx, QWORD [rsi]);
            canonical_or(&mut a, helper);
            dynasm!(a
                ; .arch x64
                ; mov QWORD [rbx + RIP], rcx
                ; mov rax, QWORD [rbx + RSP]
                ; sub rax, 8
            );
            let s2 = probe_with(&mut a, 8, true, user, index, retry, helper, &mut slow);
            dynasm!(a
                ; .arch x64
                ; mov rax, QWORD ret as i64
                ; mov QWORD [rsi], rax
                ; sub QWORD [rbx + RSP], 8
                ; mov rcx, QWORD [rbx + RIP]
            );
            refresh(&mut a, 4);
            exit_to_rcx(&mut a, ir, chain, jc, epilogue);
            // The slow path's helper ran the CALL (or raised the fault) and left the block.
            dynasm!(a ; .arch x64 ; =>s1 ; =>s2 ; jmp =>synced);
        }
        Exit::JmpReg { src, index } => {
            let helper = a.new_dynamic_label();
            let done = a.new_dynamic_label();
            // SDM Vol. 2A "JMP": a non-canonical target is #GP(0) (helper).
            dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + src.offset()]);
            canonical_or(&mut a, helper);
            dynasm!(a ; .arch x64 ; mov QWORD [rbx + RIP], rcx);
            exit_to_rcx(&mut a, ir, chain, jc, epilogue);
            // The helper ran the JMP (or raised the fault) and left the block.
            dynasm!(a ; .arch x64 ; =>done ; jmp =>synced);
            slow.push(Slow::helper_only(helper, done, index));
        }
        Exit::Ret { index } => {
            let retry = a.new_dynamic_label();
            let helper = a.new_dynamic_label();
            dynasm!(a
                ; .arch x64
                ; =>retry
                ; mov rax, QWORD [rbx + RSP]
            );
            let s = probe_with(&mut a, 8, false, user, index, retry, helper, &mut slow);
            // SDM Vol. 2B "RET": a non-canonical return address is #GP(0) (helper).
            dynasm!(a ; .arch x64 ; mov rcx, QWORD [rsi]);
            canonical_or(&mut a, helper);
            dynasm!(a
                ; .arch x64
                ; add QWORD [rbx + RSP], 8
                ; mov QWORD [rbx + RIP], rcx
            );
            exit_to_rcx(&mut a, ir, chain, jc, epilogue);
            dynasm!(a
                ; .arch x64
                ; =>s
                ; jmp =>synced
            );
        }
        Exit::Branch {
            cond,
            taken,
            not_taken,
        } => {
            let taken_l = a.new_dynamic_label();
            let last_alu = match ir.ops.last() {
                Some(Op::Alu { op, .. } | Op::AluLoad { op, .. } | Op::AluStore { op, .. })
                    if fuse =>
                {
                    Some(*op)
                }
                _ => None,
            };
            // What rdx holds on both arms (fused: the op's capture).
            let mut arm = at_exit;
            if last_alu.is_none() {
                if let InRdx::Pending(op) = at_exit {
                    // RFLAGS must be current for the Jcc to read it.
                    merge_pending(&mut a);
                    arm = if op.written_flags() == crate::abi::flags::STATUS {
                        InRdx::Image
                    } else {
                        InRdx::Unknown
                    };
                }
                load_guest_flags(&mut a, cond);
            }
            if let Some(op) = last_alu {
                arm = InRdx::Pending(if last_carried_cf { ENTRY_OP } else { op });
            }
            jcc(&mut a, cond, taken_l);
            let arm_exit = |a: &mut Asm| {
                if entry_flags {
                    settle_exit(a, arm);
                } else if let InRdx::Pending(op) = arm {
                    merge_flags(a, op);
                }
            };
            arm_exit(&mut a);
            exit_to(&mut a, ir, not_taken, n, wb, hot, epilogue, &mut cx);
            dynasm!(a ; .arch x64 ; =>taken_l);
            arm_exit(&mut a);
            exit_to(&mut a, ir, taken, n, wb, hot, epilogue, &mut cx);
        }
    }
    for st in &sides {
        dynasm!(a ; .arch x64 ; =>st.label);
        if entry_flags {
            settle_exit(&mut a, st.arm);
        } else if let InRdx::Pending(op) = st.arm {
            merge_flags(&mut a, op);
        }
        exit_to(
            &mut a, ir, st.target, st.n, st.dirty, hot, epilogue, &mut cx,
        );
    }
    // Slow paths share per-block subroutines (`SlowSubs`) for what is the same at every site
    // of the block (spilling and reloading the cached registers, the calls), so each site
    // costs a few dozen bytes. `fill` is `helper` for sites with no memory access (kind 0).
    let mut subs = SlowSubs::default();
    for sl in &slow {
        if sl.kind != 0 {
            let way1 = (JTLB_ENTRIES << JTLB_ENTRY_SHIFT) as i32;
            let addend = OFFSET_JTLB_ADDEND as i32;
            dynasm!(a
                ; .arch x64
                ; =>sl.fill
                ; cmp rsi, QWORD [rcx + way1 + sl.tag_off]
                ; jne >fill
                ; mov rsi, rax
                ; add rsi, QWORD [rcx + way1 + addend]
                ; jmp =>sl.hit
                ; fill:
            );
            subs.merge(&mut a, sl.pending);
            let fill = *subs.fill.get_or_insert_with(|| a.new_dynamic_label());
            dynasm!(a
                ; .arch x64
                ; mov edx, sl.kind as i32
                ; call =>fill
                ; test rax, rax
                ; jz =>sl.retry
            );
        }
        dynasm!(a ; .arch x64 ; =>sl.helper);
        subs.merge(&mut a, sl.pending);
        let helper = *subs.helper.get_or_insert_with(|| a.new_dynamic_label());
        dynasm!(a
            ; .arch x64
            ; mov esi, sl.index as i32
            ; call =>helper
            ; test rax, rax
            ; jnz =>synced
        );
        if sl.restore_flags {
            // Status flags only (POPFQ of the whole RFLAGS could set AC or TF on the host).
            let status = crate::abi::flags::STATUS as i32;
            dynasm!(a
                ; .arch x64
                ; mov rax, QWORD [rbx + RFLAGS]
                ; and eax, status
                ; mov rdx, rax
                ; push rax
                ; popfq
            );
        }
        dynasm!(a ; .arch x64 ; jmp =>sl.done);
    }
    subs.emit(&mut a);
    CACHED.with(|c| c.set([UNCACHED; 16]));
    DIRTY.with(|d| d.set(0));
    PENDING.with(|p| p.set(None));
    DEFER.with(|d| d.set(false));
    // Jump-cache probe (see `JcEntry`): rcx = RIP (already in the state), r13 = instructions
    // retired in this invocation. A hit continues at the block's chained entry; a miss
    // returns the count to the driver.
    let jc_mask = (JC_ENTRIES - 1) as i32;
    let jc_shift = JC_ENTRY_SHIFT as i8;
    dynasm!(a
        ; .arch x64
        ; =>jc
        ; mov rax, rcx
        ; shr rax, 12
        ; xor rax, rcx
        ; and eax, jc_mask
        ; shl eax, jc_shift
        ; add rax, QWORD [r12 + JC]
        ; cmp rcx, QWORD [rax + OFFSET_JC_RIP as i32]
        ; jne >miss
        // rsi: rdx may hold pending flags (`ENTRY_OP`).
        ; mov rsi, QWORD [r12 + JC_TAG_ENV]
        ; cmp rsi, QWORD [rax + OFFSET_JC_TAG as i32]
        ; jne >miss
        ; jmp QWORD [rax + OFFSET_JC_HOST as i32]
        ; miss:
    );
    merge_entry_flags(&mut a, entry_flags);
    dynasm!(a
        ; .arch x64
        ; mov rax, r13
        ; jmp =>epilogue
        // rax = what the helper returned: 1 = synced exit, 2 + retired = jump-cache exit.
        ; =>synced
        ; cmp rax, 1
        ; jbe >plain
        ; lea r13, [rax - 2]
    );
    if entry_flags {
        // The helper wrote RFLAGS: the next block gets its image.
        reload_captured(&mut a);
    }
    dynasm!(a
        ; .arch x64
        ; mov rcx, QWORD [rbx + RIP]
        ; jmp =>jc
        ; plain:
        ; mov rax, QWORD EXIT_SYNCED as i64
        ; =>epilogue
        ; add rsp, 8
        ; pop r15
        ; pop r14
        ; pop rbp
        ; pop r13
        ; pop r12
        ; pop rbx
        ; ret
    );
    let chain_entry = a.offset().0;
    let n = ir.ninsns as i32;
    let start = ir.start_ip;
    dynasm!(a
        ; .arch x64
        ; lea rax, [r13 + n]
        ; cmp rax, QWORD [r12 + LIMIT]
        ; ja >bail
        ; mov QWORD [r12 + CUR], id as i32
        ; jmp =>body
        ; bail:
    );
    merge_entry_flags(&mut a, entry_flags);
    dynasm!(a
        ; .arch x64
        ; mov rax, QWORD start as i64
        ; mov QWORD [rbx + RIP], rax
        ; mov rax, r13
        ; jmp =>epilogue
    );
    let code = a.finalize().expect("labels of a generated block resolve");
    // Keep only exits whose jump really is `E9 rel32`.
    exits.retain(|e| e.site >= 1 && code.get(e.site - 1) == Some(&0xe9));
    Emitted {
        code,
        chain_entry,
        exits,
    }
}

/// Chaining context of [`exit_to`].
struct ExitCtx<'e> {
    chain: bool,
    id: u32,
    exits: &'e mut Vec<ChainExit>,
    /// The block's jump-cache probe (rcx = RIP stored, r13 = retired).
    jc: DynamicLabel,
}

/// Leaves the block towards guest IP `target` after `n` instructions of this iteration; a
/// branch back to the block start loops while the next iteration fits in `env.limit`.
///
/// A chainable exit (another IP in the block's page, 64-bit mode) adds the instructions to
/// `r13` and jumps through a patchable `jmp rel32`, which first targets a stub that reports
/// the exit in `env.last_exit` and returns to the driver; once patched it goes to the next
/// block's chained entry. Other exits (another page, or outside 64-bit mode) and the stub
/// probe the jump cache before returning (only with chaining on).
#[allow(clippy::too_many_arguments)]
fn exit_to(
    a: &mut Asm,
    ir: &BlockIr,
    target: u64,
    n: i32,
    wb: u16,
    body: DynamicLabel,
    epilogue: DynamicLabel,
    cx: &mut ExitCtx<'_>,
) {
    // The copies in `wb` are written back on the way out; a back edge that goes round again
    // keeps them in their host registers (the loop head treats every copy as dirty).
    if target != ir.start_ip {
        write_back(a, wb);
    }
    if cx.chain
        && ir.bits64
        && target != ir.start_ip
        && target & !0xfff == ir.start_ip & !0xfff
        && cx.exits.len() < 255
    {
        let stub = a.new_dynamic_label();
        let k = cx.exits.len() as i32;
        let tag = (cx.id as i32) << 8 | k;
        dynasm!(a
            ; .arch x64
            ; add r13, n
            ; jmp =>stub
        );
        cx.exits.push(ChainExit {
            site: a.offset().0 - 4,
            target,
        });
        dynasm!(a
            ; .arch x64
            ; =>stub
            ; mov QWORD [r12 + LAST_EXIT], tag
            ; mov rcx, QWORD target as i64
            ; mov QWORD [rbx + RIP], rcx
            ; jmp =>cx.jc
        );
        return;
    }
    if cx.chain && target != ir.start_ip {
        dynasm!(a
            ; .arch x64
            ; add r13, n
            ; mov rcx, QWORD target as i64
            ; mov QWORD [rbx + RIP], rcx
            ; jmp =>cx.jc
        );
        return;
    }
    if target == ir.start_ip {
        // The next iteration may run the whole block (`n` is less at a side exit).
        let full = ir.ninsns as i32;
        dynasm!(a
            ; .arch x64
            ; add r13, n
            ; lea rax, [r13 + full]
            ; cmp rax, QWORD [r12 + LIMIT]
            ; jbe =>body
        );
        write_back(a, wb);
        merge_entry_flags(a, ir.bits64);
        dynasm!(a
            ; .arch x64
            ; mov rax, QWORD target as i64
            ; mov QWORD [rbx + RIP], rax
            ; mov rax, r13
            ; jmp =>epilogue
        );
    } else {
        merge_entry_flags(a, ir.bits64);
        dynasm!(a
            ; .arch x64
            ; mov rax, QWORD target as i64
            ; mov QWORD [rbx + RIP], rax
            ; lea rax, [r13 + n]
            ; jmp =>epilogue
        );
    }
}

/// Jumps to `helper` unless the branch target in rcx is canonical (clobbers rax; rdx may
/// hold pending flags).
fn canonical_or(a: &mut Asm, helper: DynamicLabel) {
    dynasm!(a
        ; .arch x64
        ; mov rax, rcx
        ; shl rax, 16
        ; sar rax, 16
        ; cmp rax, rcx
        ; jne =>helper
    );
}

/// Leaves a block of `n` instructions for the RIP in rcx (already stored in the state):
/// through the jump cache when chaining, else back to the driver.
fn exit_to_rcx(a: &mut Asm, ir: &BlockIr, chain: bool, jc: DynamicLabel, epilogue: DynamicLabel) {
    let n = ir.ninsns as i32;
    if chain {
        dynasm!(a ; .arch x64 ; add r13, n ; jmp =>jc);
    } else {
        merge_entry_flags(a, ir.bits64);
        dynasm!(a ; .arch x64 ; lea rax, [r13 + n] ; jmp =>epilogue);
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
/// Host registers that may cache guest GPRs within a block: rbp, r14, r15 (saved by the
/// prologue) and r8..r11 and rdi (clobbered by calls, so reloaded after each; rdi is set
/// only right before calls, all of which are followed by [`reload_all`]).
const CACHE_HOST: [u8; 8] = [5, 14, 15, 8, 9, 10, 11, 7];
/// "Not cached" in [`CACHED`].
const UNCACHED: u8 = 0xff;

thread_local! {
    /// Host register holding each guest GPR (by index) in the block being emitted, or
    /// [`UNCACHED`]. Set by [`emit_block`] for the duration of one emission.
    ///
    /// Native code reads and writes the host copy; `CpuState` is brought up to date
    /// ([`DIRTY`]) before anything else can look at it: calls out of generated code (slow
    /// paths, helpers), ops that use the state's slots directly, and every block exit. So
    /// each guest instruction boundary where control can leave compiled code is still a
    /// precise state. Copies are (re)loaded at the block body, after every call and after
    /// every direct write to a cached register's slot.
    static CACHED: std::cell::Cell<[u8; 16]> = const { std::cell::Cell::new([UNCACHED; 16]) };

    /// Guest GPRs (bit = index) whose host copy (in [`CACHED`]) may be newer than their slot
    /// in `CpuState`, at the point of emission. Bits are set by writes to a copy and cleared
    /// only by [`flush_dirty`] between ops, where the emitted code is straight-line; code
    /// paths that merge keep the union (an extra write-back of an equal value is harmless).
    static DIRTY: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };

    /// In 64-bit blocks: the ALU op whose captured flags (rdx) are still to be merged into
    /// the guest RFLAGS. A flag result that is live only because a later load or store might
    /// fault stays in rdx across those accesses (the probe does not use rdx) and is merged on
    /// their slow paths, at the next op that needs RFLAGS, or at the exit; or dropped when a
    /// later op overwrites every flag it wrote.
    static PENDING: std::cell::Cell<Option<AluOp>> = const { std::cell::Cell::new(None) };
    /// Whether [`PENDING`] may be used in the block being emitted (64-bit mode: no segment
    /// checks, which use rdx, before the probe).
    static DEFER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn pending() -> Option<AluOp> {
    PENDING.with(|p| p.get())
}

/// Flags captured in rdx by `op`: merged into RFLAGS now, or left pending (64-bit blocks).
fn settle_flags(a: &mut Asm, op: AluOp) {
    if DEFER.with(|d| d.get()) && op.captured_flags() != 0 {
        PENDING.with(|p| p.set(Some(op)));
    } else {
        merge_flags(a, op);
    }
}

/// Flags across block boundaries (64-bit blocks, `ir.bits64`), so that a flag result only
/// the next block could observe is not merged into RFLAGS at every exit: every 64-bit
/// block is entered, at its entry and its chained entry (jumps from other blocks, the loop
/// back edge, the jump cache), with rdx holding all six status flags in the layout
/// [`capture_flags`] gives, which RFLAGS may not hold yet: the block body starts with them
/// pending ([`ENTRY_OP`]), so they are merged only where something may observe them (a
/// slow path, a helper, an op reading RFLAGS) or dropped by the first op that overwrites
/// them all. The entry from the driver loads rdx from RFLAGS ([`reload_captured`]); each
/// exit leaves rdx so ([`settle_exit`]); every path back to the driver merges it first
/// (`merge_entry_flags`), except after a helper, which saw merged flags and wrote RFLAGS.
///
/// `ENTRY_OP` is the op standing for those entry flags in [`PENDING`]: it writes and
/// captures every status flag.
const ENTRY_OP: AluOp = AluOp::Add;

/// The op standing for the flags of a shift by a constant in rdx (see `shift_flags`): every
/// status flag written, all but AF captured (AF cleared), as after a logic op.
const SHIFT_FLAGS: AluOp = AluOp::And;

/// What rdx holds at a block exit (see [`ENTRY_OP`]).
#[derive(Clone, Copy)]
enum InRdx {
    /// The capture of this op's flags, not merged into RFLAGS.
    Pending(AluOp),
    /// The status flags of RFLAGS, which is current.
    Image,
    /// Nothing of use; RFLAGS is current.
    Unknown,
}

/// At an exit of a 64-bit block: leaves in rdx what the next block's entry expects (every
/// status flag, captured or from RFLAGS) and marks it pending.
fn settle_exit(a: &mut Asm, rdx: InRdx) {
    use crate::abi::flags::STATUS;
    match rdx {
        InRdx::Pending(op) if op.written_flags() == STATUS => {
            // Flags the op clears without capturing them (AF after logic ops).
            let clear = op.written_flags() & !op.captured_flags();
            if clear != 0 {
                let keep = !(clear as i32);
                dynasm!(a ; .arch x64 ; and edx, keep);
            }
        }
        InRdx::Pending(op) => {
            merge_flags(a, op);
            reload_captured(a);
        }
        InRdx::Image => {}
        InRdx::Unknown => reload_captured(a),
    }
    PENDING.with(|p| p.set(Some(ENTRY_OP)));
}

/// Before a block returns to the driver: merges the flags pending in rdx if it is a 64-bit
/// block (`bits64`, see [`ENTRY_OP`]); other blocks merged them at their exits already.
fn merge_entry_flags(a: &mut Asm, bits64: bool) {
    if bits64 {
        merge_flags(a, ENTRY_OP);
    }
}

/// Merges the pending flags, if any, into RFLAGS (clobbers rax, rdx and host flags).
fn merge_pending(a: &mut Asm) {
    if let Some(op) = PENDING.with(|p| p.take()) {
        merge_flags(a, op);
    }
}

fn dirty() -> u16 {
    DIRTY.with(|d| d.get())
}

fn mark_dirty(index: u8) {
    DIRTY.with(|d| d.set(d.get() | 1 << (index & 15)));
}

/// Writes the host copies of the guest GPRs in `set` back to `CpuState` (plain moves: the
/// host flags are untouched).
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn write_back(a: &mut Asm, set: u16) {
    for i in 0..16u8 {
        if set & 1 << i != 0 {
            if let Some(h) = cached(i) {
                let off = gpr_off(i);
                dynasm!(a ; .arch x64 ; mov QWORD [rbx + off], Rq(h));
            }
        }
    }
}

/// Writes back every dirty copy; `CpuState` is current afterwards.
fn flush_dirty(a: &mut Asm) {
    write_back(a, dirty());
    DIRTY.with(|d| d.set(0));
}

/// Before code reads or partly writes guest GPR `index` in `CpuState`: writes its copy back
/// if dirty (the bit stays set: this may be on one arm of a branch).
fn sync(a: &mut Asm, index: u8) {
    if dirty() & 1 << (index & 15) != 0 {
        write_back(a, 1 << (index & 15));
    }
}

fn cached(index: u8) -> Option<u8> {
    let h = CACHED.with(|c| c.get())[usize::from(index & 15)];
    (h != UNCACHED).then_some(h)
}

fn gpr_off(index: u8) -> i32 {
    (OFFSET_GPR + usize::from(index) * 8) as i32
}

/// Reloads the host copy of guest GPR `index` from `CpuState` (after a direct write).
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn refresh(a: &mut Asm, index: u8) {
    if let Some(h) = cached(index) {
        let off = gpr_off(index);
        dynasm!(a ; .arch x64 ; mov Rq(h), QWORD [rbx + off]);
    }
}

/// Reloads every cached guest GPR (block body, after calls). Does not touch the flags.
fn reload_all(a: &mut Asm) {
    for i in 0..16u8 {
        refresh(a, i);
    }
}

/// Picks the guest GPRs to cache in `ir`: the most used ones, at least two uses each.
fn choose_cache(ir: &BlockIr) -> [u8; 16] {
    let mut uses = [0u32; 16];
    let mut add = |r: GuestReg| {
        if !r.high {
            uses[usize::from(r.index & 15)] += 1;
        }
    };
    let full = |i: u8| GuestReg {
        index: i,
        size: 8,
        high: false,
    };
    let mem_regs = |m: &MemRef, add: &mut dyn FnMut(GuestReg)| {
        if let Some(b) = m.base {
            add(full(b));
        }
        if let Some((i, _)) = m.index {
            add(full(i));
        }
    };
    for op in &ir.ops {
        match *op {
            Op::Alu { dst, src, .. } => {
                add(dst);
                if let Src::Reg(r) = src {
                    add(r);
                }
            }
            Op::Lea {
                dst, base, index, ..
            } => {
                add(dst);
                if let Some(b) = base {
                    add(full(b));
                }
                if let Some((i, _)) = index {
                    add(full(i));
                }
            }
            Op::Shift { dst, .. } | Op::Setcc { dst, .. } | Op::Bswap { dst } => add(dst),
            Op::ShiftCl { dst, .. } => add(dst),
            Op::Cmov { dst, src, .. }
            | Op::Imul { dst, src, .. }
            | Op::Movx { dst, src, .. }
            | Op::BitScan { dst, src, .. } => {
                add(dst);
                add(src);
            }
            Op::Xchg { a: x, b: y } => {
                add(x);
                add(y);
            }
            Op::Bt { dst, src } => {
                add(dst);
                if let Src::Reg(r) = src {
                    add(r);
                }
            }
            Op::Load { dst, ref mem, .. } | Op::AluLoad { dst, ref mem, .. } => {
                add(dst);
                mem_regs(mem, &mut add);
            }
            Op::Store { src, ref mem, .. } | Op::AluStore { src, ref mem, .. } => {
                if let Src::Reg(r) = src {
                    add(r);
                }
                mem_regs(mem, &mut add);
            }
            Op::ShiftMem { ref mem, .. } => mem_regs(mem, &mut add),
            Op::MovdToXmm { src: rm, .. } | Op::MovdFromXmm { dst: rm, .. } => match rm {
                RegOrMem::Reg(r) => add(r),
                RegOrMem::Mem(ref m) => mem_regs(m, &mut add),
            },
            Op::XmmShiftImm { .. } => {}
            Op::MulDiv { src, .. } => add(src),
            Op::Push { .. }
            | Op::Pop { .. }
            | Op::RepString { .. }
            | Op::SideExit { .. }
            | Op::SignFill { .. }
            | Op::Nop
            | Op::Helper { .. } => {}
        }
    }
    // A register used once costs one load either way, except in a block that loops to its
    // own start: the back edge skips the reload, so every iteration saves the load.
    let loops = match ir.exit {
        Exit::Jump { target } => target == ir.start_ip,
        Exit::Branch {
            taken, not_taken, ..
        } => taken == ir.start_ip || not_taken == ir.start_ip,
        _ => false,
    };
    let min_uses = if loops { 1 } else { 2 };
    let mut order: Vec<u8> = (0..16u8)
        .filter(|&i| uses[usize::from(i)] >= min_uses)
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(uses[usize::from(i)]));
    let mut map = [UNCACHED; 16];
    for (i, h) in order.into_iter().zip(CACHE_HOST) {
        map[usize::from(i)] = h;
    }
    map
}

#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn load(a: &mut Asm, host: u8, r: GuestReg) {
    if let (Some(h), false) = (cached(r.index), r.high) {
        match (host, r.size) {
            (0, 8) => dynasm!(a ; .arch x64 ; mov rax, Rq(h)),
            (0, 4) => dynasm!(a ; .arch x64 ; mov eax, Rd(h)),
            (0, 2) => dynasm!(a ; .arch x64 ; mov ax, Rw(h)),
            (0, _) => dynasm!(a ; .arch x64 ; mov al, Rb(h)),
            (_, 8) => dynasm!(a ; .arch x64 ; mov rcx, Rq(h)),
            (_, 4) => dynasm!(a ; .arch x64 ; mov ecx, Rd(h)),
            (_, 2) => dynasm!(a ; .arch x64 ; mov cx, Rw(h)),
            (_, _) => dynasm!(a ; .arch x64 ; mov cl, Rb(h)),
        }
        return;
    }
    if r.high {
        sync(a, r.index);
    }
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
/// the interpreter and 64-bit hardware do). A cached register gets only its host copy
/// written (and becomes dirty), except AH..BH, which go through the state's slot.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn store(a: &mut Asm, r: GuestReg) {
    if let (Some(h), false) = (cached(r.index), r.high) {
        match r.size {
            8 | 4 => dynasm!(a ; .arch x64 ; mov Rq(h), rax),
            2 => dynasm!(a ; .arch x64 ; mov Rw(h), ax),
            _ => dynasm!(a ; .arch x64 ; mov Rb(h), al),
        }
        mark_dirty(r.index);
        return;
    }
    if r.high {
        sync(a, r.index);
    }
    let off = r.offset();
    match r.size {
        8 | 4 => dynasm!(a ; .arch x64 ; mov QWORD [rbx + off], rax),
        2 => dynasm!(a ; .arch x64 ; mov WORD [rbx + off], ax),
        _ => dynasm!(a ; .arch x64 ; mov BYTE [rbx + off], al),
    }
    if r.high {
        refresh(a, r.index);
    }
}

/// Records that guest register `r` (not a high-byte register, cached in host register `h`,
/// which already holds the new value; zero-extended for 32-bit writes) has changed: the copy
/// is written back to `CpuState` before anything reads the state ([`DIRTY`]).
fn written(r: GuestReg, h: u8) {
    debug_assert!(!r.high && cached(r.index) == Some(h));
    mark_dirty(r.index);
}

/// MOV r, r / MOV r, imm with a cached destination: straight into its host register (no
/// copies through rax / rcx). Returns false (nothing emitted) for other forms.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn mov_cached(a: &mut Asm, dst: GuestReg, src: Src) -> bool {
    let Some(d) = cached(dst.index).filter(|_| !dst.high) else {
        return false;
    };
    match src {
        Src::Reg(s) if !s.high && s.size == dst.size => match (cached(s.index), dst.size) {
            (Some(h), 8) => dynasm!(a ; .arch x64 ; mov Rq(d), Rq(h)),
            (Some(h), 4) => dynasm!(a ; .arch x64 ; mov Rd(d), Rd(h)),
            (Some(h), 2) => dynasm!(a ; .arch x64 ; mov Rw(d), Rw(h)),
            (Some(h), _) => dynasm!(a ; .arch x64 ; mov Rb(d), Rb(h)),
            (None, 8) => dynasm!(a ; .arch x64 ; mov Rq(d), QWORD [rbx + s.offset()]),
            (None, 4) => dynasm!(a ; .arch x64 ; mov Rd(d), DWORD [rbx + s.offset()]),
            (None, 2) => dynasm!(a ; .arch x64 ; mov Rw(d), WORD [rbx + s.offset()]),
            (None, _) => dynasm!(a ; .arch x64 ; mov Rb(d), BYTE [rbx + s.offset()]),
        },
        Src::Imm(v) => match dst.size {
            8 => match i32::try_from(v as i64) {
                Ok(i) => dynasm!(a ; .arch x64 ; mov Rq(d), DWORD i),
                Err(_) => dynasm!(a ; .arch x64 ; mov Rq(d), QWORD v as i64),
            },
            4 => dynasm!(a ; .arch x64 ; mov Rd(d), DWORD v as u32 as i32),
            2 => dynasm!(a ; .arch x64 ; mov Rw(d), WORD v as u16 as i16),
            _ => dynasm!(a ; .arch x64 ; mov Rb(d), BYTE v as u8 as i8),
        },
        _ => return false,
    }
    written(dst, d);
    true
}

/// MOV r, r / MOV r, imm with an uncached destination: straight into its `CpuState` slot
/// (32-bit writes zero-extended to 64 bits). Returns false (nothing emitted) for a high-byte
/// register on either side, a source of another size, or an immediate that does not fit.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn mov_to_slot(a: &mut Asm, dst: GuestReg, src: Src) -> bool {
    if dst.high || cached(dst.index).is_some() {
        return false;
    }
    let off = dst.offset();
    match src {
        Src::Reg(s) if !s.high && s.size == dst.size => {
            let Some(h) = cached(s.index) else {
                return false;
            };
            match dst.size {
                8 => dynasm!(a ; .arch x64 ; mov QWORD [rbx + off], Rq(h)),
                4 => dynasm!(a ; .arch x64 ; mov eax, Rd(h) ; mov QWORD [rbx + off], rax),
                2 => dynasm!(a ; .arch x64 ; mov WORD [rbx + off], Rw(h)),
                _ => dynasm!(a ; .arch x64 ; mov BYTE [rbx + off], Rb(h)),
            }
        }
        Src::Imm(v) => match dst.size {
            // The 32-bit immediate is sign-extended: a 32-bit write needs bit 31 clear.
            8 | 4 => {
                let fits = if dst.size == 8 {
                    i32::try_from(v as i64).ok()
                } else {
                    i32::try_from(v as u32).ok()
                };
                let Some(i) = fits else {
                    return false;
                };
                dynasm!(a ; .arch x64 ; mov QWORD [rbx + off], DWORD i);
            }
            2 => dynasm!(a ; .arch x64 ; mov WORD [rbx + off], WORD v as u16 as i16),
            _ => dynasm!(a ; .arch x64 ; mov BYTE [rbx + off], BYTE v as u8 as i8),
        },
        _ => return false,
    }
    true
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

macro_rules! slot_imm {
    ($a:expr, $size:expr, $m:ident, $off:expr, $v:expr) => {
        match $size {
            8 => dynasm!($a ; .arch x64 ; $m QWORD [rbx + $off], DWORD $v as i32),
            4 => dynasm!($a ; .arch x64 ; $m DWORD [rbx + $off], DWORD $v as u32 as i32),
            2 => dynasm!($a ; .arch x64 ; $m WORD [rbx + $off], WORD $v as u16 as i16),
            _ => dynasm!($a ; .arch x64 ; $m BYTE [rbx + $off], BYTE $v as u8 as i8),
        }
    };
}

macro_rules! slot_reg {
    ($a:expr, $size:expr, $m:ident, $off:expr, $h:expr) => {
        match $size {
            8 => dynasm!($a ; .arch x64 ; $m QWORD [rbx + $off], Rq($h)),
            4 => dynasm!($a ; .arch x64 ; $m DWORD [rbx + $off], Rd($h)),
            2 => dynasm!($a ; .arch x64 ; $m WORD [rbx + $off], Rw($h)),
            _ => dynasm!($a ; .arch x64 ; $m BYTE [rbx + $off], Rb($h)),
        }
    };
}

macro_rules! slot_un {
    ($a:expr, $size:expr, $m:ident, $off:expr) => {
        match $size {
            8 => dynasm!($a ; .arch x64 ; $m QWORD [rbx + $off]),
            4 => dynasm!($a ; .arch x64 ; $m DWORD [rbx + $off]),
            2 => dynasm!($a ; .arch x64 ; $m WORD [rbx + $off]),
            _ => dynasm!($a ; .arch x64 ; $m BYTE [rbx + $off]),
        }
    };
}

/// An ALU op on a destination that is not cached, done in its `CpuState` slot by one
/// read-modify-write (or CMP / TEST) instruction on the same width, so the host flags are
/// the guest's: `inc r10` is `inc qword [slot]` rather than load, op, store. Sources: an
/// immediate (sign-extended 32-bit at 8 bytes), a register (its host copy, or rcx loaded
/// from its slot), or none. A 32-bit result zero-extends (upper half of the slot cleared
/// with a plain move, which keeps the flags). Returns false (nothing emitted) for MOV, ADC,
/// SBB and high-byte operands.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn alu_slot(a: &mut Asm, op: AluOp, dst: GuestReg, src: Src, capture: bool, merge: bool) -> bool {
    if dst.high || cached(dst.index).is_some() {
        return false;
    }
    let size = dst.size;
    let off = dst.offset();
    // The host register holding the source (a cached copy, or rcx).
    let reg = |a: &mut Asm, r: GuestReg| -> Option<u8> {
        if r.high || r.size != size {
            return None;
        }
        Some(match cached(r.index) {
            Some(h) => h,
            None => {
                let soff = r.offset();
                dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + soff]);
                1
            }
        })
    };
    macro_rules! bin {
        ($m:ident) => {
            match src {
                Src::Imm(v) => {
                    if size == 8 && i32::try_from(v as i64).is_err() {
                        return false;
                    }
                    slot_imm!(a, size, $m, off, v)
                }
                Src::Reg(r) => {
                    let Some(h) = reg(a, r) else {
                        return false;
                    };
                    slot_reg!(a, size, $m, off, h)
                }
                Src::None => return false,
            }
        };
    }
    match op {
        AluOp::Add => bin!(add),
        AluOp::Sub => bin!(sub),
        AluOp::Cmp => bin!(cmp),
        AluOp::And => bin!(and),
        AluOp::Test => bin!(test),
        AluOp::Or => bin!(or),
        AluOp::Xor => bin!(xor),
        AluOp::Inc => slot_un!(a, size, inc, off),
        AluOp::Dec => slot_un!(a, size, dec, off),
        AluOp::Neg => slot_un!(a, size, neg, off),
        AluOp::Not => slot_un!(a, size, not, off),
        AluOp::Mov | AluOp::Adc | AluOp::Sbb => return false,
    }
    if size == 4 && op.writes_dst() {
        let hi = off + 4;
        dynasm!(a ; .arch x64 ; mov DWORD [rbx + hi], 0);
    }
    if capture && op.captured_flags() != 0 {
        capture_flags(a);
    }
    if merge {
        settle_flags(a, op);
    }
    true
}

/// One native ALU op. With `merge`, the captured flags are merged into the guest RFLAGS;
/// without, they are left in rdx and the host flags stay live (for a fused Jcc).
fn alu(a: &mut Asm, op: AluOp, dst: GuestReg, src: Src, capture: bool, merge: bool) {
    if op == AluOp::Mov && mov_cached(a, dst, src) {
        return;
    }
    if alu_cached(a, op, dst, src, capture, merge) {
        return;
    }
    if op == AluOp::Mov && mov_to_slot(a, dst, src) {
        return;
    }
    if alu_slot(a, op, dst, src, capture, merge) {
        return;
    }
    match src {
        Src::Reg(s) => load(a, 1, s),
        Src::Imm(v) => dynasm!(a ; .arch x64 ; mov rcx, QWORD v as i64),
        Src::None => {}
    }
    alu_core(a, op, dst, capture, merge);
}

/// Source operand of [`alu_cached_op`].
enum S {
    /// A cached guest register: its host copy.
    R(u8),
    /// An immediate (sign-extended to the operand size).
    I(i32),
    /// An uncached guest register, read from its `CpuState` slot (current: only cached
    /// copies can be dirty).
    M(i32),
    /// The memory operand of an ALU op with a memory source, at host address rsi (the probe
    /// hit).
    Host,
    /// No source (unary ops).
    N,
}

/// The ALU op straight on the host register caching the guest destination (no copies
/// through rax / rcx); the result stays in that register (dirty, see [`DIRTY`]). Returns
/// false (nothing emitted) unless the destination is cached and not a high-byte register,
/// and the source is a register of the same size that is not a high-byte register (cached,
/// or read from its slot), or an immediate that fits 32 bits sign-extended.
fn alu_cached(a: &mut Asm, op: AluOp, dst: GuestReg, src: Src, capture: bool, merge: bool) -> bool {
    let s = match src {
        Src::Reg(r) if !r.high && r.size == dst.size => match cached(r.index) {
            Some(h) => S::R(h),
            None => S::M(r.offset()),
        },
        Src::Imm(v) => match i32::try_from(v as i64) {
            Ok(i) => S::I(i),
            // 8/16-bit immediates: only the low bits matter.
            Err(_) if dst.size <= 2 => S::I(v as u16 as i16 as i32),
            Err(_) => return false,
        },
        Src::None => S::N,
        Src::Reg(_) => return false,
    };
    alu_cached_op(a, op, dst, s, capture, merge)
}

/// [`alu_cached`] with the source already classified.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn alu_cached_op(a: &mut Asm, op: AluOp, dst: GuestReg, s: S, capture: bool, merge: bool) -> bool {
    let Some(d) = cached(dst.index).filter(|_| !dst.high) else {
        return false;
    };
    // Nothing is emitted before every reason to fall back has been checked.
    let unary = matches!(op, AluOp::Inc | AluOp::Dec | AluOp::Neg | AluOp::Not);
    if op == AluOp::Mov || matches!(s, S::N) != unary {
        return false;
    }
    if matches!(op, AluOp::Adc | AluOp::Sbb) {
        dynasm!(a ; .arch x64 ; bt QWORD [rbx + RFLAGS], 0);
    }
    macro_rules! bin {
        ($m:ident) => {
            match (dst.size, &s) {
                (8, S::R(h)) => dynasm!(a ; .arch x64 ; $m Rq(d), Rq(*h)),
                (4, S::R(h)) => dynasm!(a ; .arch x64 ; $m Rd(d), Rd(*h)),
                (2, S::R(h)) => dynasm!(a ; .arch x64 ; $m Rw(d), Rw(*h)),
                (_, S::R(h)) => dynasm!(a ; .arch x64 ; $m Rb(d), Rb(*h)),
                (8, S::I(i)) => dynasm!(a ; .arch x64 ; $m Rq(d), DWORD *i),
                (4, S::I(i)) => dynasm!(a ; .arch x64 ; $m Rd(d), DWORD *i),
                (2, S::I(i)) => dynasm!(a ; .arch x64 ; $m Rw(d), WORD *i as i16),
                (_, S::I(i)) => dynasm!(a ; .arch x64 ; $m Rb(d), BYTE *i as i8),
                (8, S::M(o)) => dynasm!(a ; .arch x64 ; $m Rq(d), QWORD [rbx + *o]),
                (4, S::M(o)) => dynasm!(a ; .arch x64 ; $m Rd(d), DWORD [rbx + *o]),
                (2, S::M(o)) => dynasm!(a ; .arch x64 ; $m Rw(d), WORD [rbx + *o]),
                (_, S::M(o)) => dynasm!(a ; .arch x64 ; $m Rb(d), BYTE [rbx + *o]),
                (8, S::Host) => dynasm!(a ; .arch x64 ; $m Rq(d), QWORD [rsi]),
                (4, S::Host) => dynasm!(a ; .arch x64 ; $m Rd(d), DWORD [rsi]),
                (2, S::Host) => dynasm!(a ; .arch x64 ; $m Rw(d), WORD [rsi]),
                (_, S::Host) => dynasm!(a ; .arch x64 ; $m Rb(d), BYTE [rsi]),
                (_, S::N) => unreachable!("binary op without a source"),
            }
        };
    }
    macro_rules! un {
        ($m:ident) => {
            match dst.size {
                8 => dynasm!(a ; .arch x64 ; $m Rq(d)),
                4 => dynasm!(a ; .arch x64 ; $m Rd(d)),
                2 => dynasm!(a ; .arch x64 ; $m Rw(d)),
                _ => dynasm!(a ; .arch x64 ; $m Rb(d)),
            }
        };
    }
    match op {
        AluOp::Add => bin!(add),
        AluOp::Adc => bin!(adc),
        AluOp::Sub => bin!(sub),
        AluOp::Sbb => bin!(sbb),
        AluOp::Cmp => bin!(cmp),
        AluOp::And => bin!(and),
        AluOp::Or => bin!(or),
        AluOp::Xor => bin!(xor),
        AluOp::Test => bin!(test),
        AluOp::Inc => un!(inc),
        AluOp::Dec => un!(dec),
        AluOp::Neg => un!(neg),
        AluOp::Not => un!(not),
        AluOp::Mov => unreachable!("handled above"),
    }
    if capture && op.captured_flags() != 0 {
        capture_flags(a);
    }
    if op.writes_dst() {
        written(dst, d);
    }
    if merge {
        settle_flags(a, op);
    }
    true
}

/// `dst op= rcx` (the source already in rcx; unused by unary ops). With `capture` the host
/// flags are saved in rdx; with `merge` they are also written to the guest RFLAGS.
fn alu_core(a: &mut Asm, op: AluOp, dst: GuestReg, capture: bool, merge: bool) {
    let size = dst.size;
    if op == AluOp::Mov {
        if size == 4 {
            // Zero-extends, as a 32-bit register write does.
            dynasm!(a ; .arch x64 ; mov eax, ecx);
        } else {
            dynasm!(a ; .arch x64 ; mov rax, rcx);
        }
        store(a, dst);
        return;
    }
    load(a, 0, dst);
    alu_op(a, op, size);
    // Plain moves: the host flags survive the store (the capture clobbers AH).
    if op.writes_dst() {
        store(a, dst);
    }
    if capture && op.captured_flags() != 0 {
        capture_flags(a);
    }
    if merge {
        settle_flags(a, op);
    }
}

/// A register shift or rotate by a constant (`Some`) or by the masked CL already in ecx
/// and known to be non-zero (`None`); flags as `Op::Shift` documents.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn shift(a: &mut Asm, op: ShiftOp, dst: GuestReg, count: Option<u8>, flags: bool) {
    // A cached destination is shifted in its host register, then copied to rax (plain moves:
    // the host flags stay those of the shift) for the flag code below.
    let hd = cached(dst.index).filter(|_| !dst.high);
    if let Some(d) = hd {
        macro_rules! shc {
            ($m:ident) => {
                match (dst.size, count) {
                    (8, Some(c)) => dynasm!(a ; .arch x64 ; $m Rq(d), c as i8),
                    (4, Some(c)) => dynasm!(a ; .arch x64 ; $m Rd(d), c as i8),
                    (2, Some(c)) => dynasm!(a ; .arch x64 ; $m Rw(d), c as i8),
                    (_, Some(c)) => dynasm!(a ; .arch x64 ; $m Rb(d), c as i8),
                    (8, None) => dynasm!(a ; .arch x64 ; $m Rq(d), cl),
                    (4, None) => dynasm!(a ; .arch x64 ; $m Rd(d), cl),
                    (2, None) => dynasm!(a ; .arch x64 ; $m Rw(d), cl),
                    (_, None) => dynasm!(a ; .arch x64 ; $m Rb(d), cl),
                }
            };
        }
        match op {
            ShiftOp::Shl => shc!(shl),
            ShiftOp::Shr => shc!(shr),
            ShiftOp::Sar => shc!(sar),
            ShiftOp::Rol => shc!(rol),
            ShiftOp::Ror => shc!(ror),
        }
        if flags {
            match dst.size {
                8 => dynasm!(a ; .arch x64 ; mov rax, Rq(d)),
                4 => dynasm!(a ; .arch x64 ; mov eax, Rd(d)),
                2 => dynasm!(a ; .arch x64 ; movzx eax, Rw(d)),
                _ => dynasm!(a ; .arch x64 ; movzx eax, Rb(d)),
            }
        }
    } else {
        shift_rax(a, op, dst, count);
    }
    let store = |a: &mut Asm, dst: GuestReg| match hd {
        Some(d) => written(dst, d),
        None => store(a, dst),
    };
    shift_flags(a, op, dst, count, flags, store);
}

/// The shift of [`shift`] on a copy of the destination in rax.
fn shift_rax(a: &mut Asm, op: ShiftOp, dst: GuestReg, count: Option<u8>) {
    load(a, 0, dst);
    shift_in_rax(a, op, dst.size, count);
}

/// Shifts the low `size` bytes of rax by `count` (CL when `None`).
fn shift_in_rax(a: &mut Asm, op: ShiftOp, size: u8, count: Option<u8>) {
    macro_rules! sh {
        ($m:ident) => {
            match (size, count) {
                (8, Some(c)) => dynasm!(a ; .arch x64 ; $m rax, c as i8),
                (4, Some(c)) => dynasm!(a ; .arch x64 ; $m eax, c as i8),
                (2, Some(c)) => dynasm!(a ; .arch x64 ; $m ax, c as i8),
                (_, Some(c)) => dynasm!(a ; .arch x64 ; $m al, c as i8),
                (8, None) => dynasm!(a ; .arch x64 ; $m rax, cl),
                (4, None) => dynasm!(a ; .arch x64 ; $m eax, cl),
                (2, None) => dynasm!(a ; .arch x64 ; $m ax, cl),
                (_, None) => dynasm!(a ; .arch x64 ; $m al, cl),
            }
        };
    }
    match op {
        ShiftOp::Shl => sh!(shl),
        ShiftOp::Shr => sh!(shr),
        ShiftOp::Sar => sh!(sar),
        ShiftOp::Rol => sh!(rol),
        ShiftOp::Ror => sh!(ror),
    }
}

/// The rest of [`shift`]: the result (in rax, host flags of the shift live) written back by
/// `store` and, with `flags`, the guest flags.
fn shift_flags(
    a: &mut Asm,
    op: ShiftOp,
    dst: GuestReg,
    count: Option<u8>,
    flags: bool,
    store: impl Fn(&mut Asm, GuestReg),
) {
    use crate::abi::flags as f;
    if !flags {
        store(a, dst);
        return;
    }
    if op.is_rotate() {
        store(a, dst);
        // Result in rax (upper bits beyond the width are not part of it). CF and OF from
        // the result, for every count (shift.rs): ROL CF = bit 0, OF = top bit ^ CF; ROR
        // CF = top bit, OF = top bit ^ next bit.
        let top = i8::try_from(dst.size * 8 - 1).unwrap_or(63);
        dynasm!(a
            ; .arch x64
            ; mov rdx, rax
            ; shr rdx, top
            ; and edx, 1
        );
        if op == ShiftOp::Rol {
            dynasm!(a
                ; .arch x64
                ; mov ecx, eax
                ; and ecx, 1
            );
        } else {
            dynasm!(a
                ; .arch x64
                ; mov rcx, rax
                ; shr rcx, top - 1
                ; and ecx, 1
            );
        }
        // edx = top bit, ecx = ROL: bit 0 / ROR: next bit.
        dynasm!(a ; .arch x64 ; xor ecx, edx);
        if op == ShiftOp::Rol {
            // CF = bit 0 = (top ^ bit0) ^ top; OF = top ^ bit0.
            dynasm!(a
                ; .arch x64
                ; xor edx, ecx
            );
        }
        // edx = CF, ecx = OF.
        let keep = !((f::CF | f::OF) as i32);
        dynasm!(a
            ; .arch x64
            ; shl ecx, 11
            ; or edx, ecx
            ; mov rax, QWORD [rbx + RFLAGS]
            ; and rax, keep
            ; or rax, rdx
            ; mov QWORD [rbx + RFLAGS], rax
        );
        return;
    }
    if let Some(c) = count {
        // A constant count (1 <= count < width): see `shift_const_flags`.
        store(a, dst);
        shift_const_flags(a, op, c);
        return;
    }
    // Host CF, PF, ZF, SF are defined for 1 <= count < width and equal the guest's; OF is
    // defined by the host only for count 1, so it is computed (SHL) or taken only then.
    let keep_of = op == ShiftOp::Shr && count.map_or(true, |c| c == 1);
    let cap = (f::CF | f::PF | f::ZF | f::SF | if keep_of { f::OF } else { 0 }) as i32;
    dynasm!(a ; .arch x64 ; pushfq ; pop rdx);
    store(a, dst);
    dynasm!(a ; .arch x64 ; and edx, cap);
    if op == ShiftOp::Shr && count.is_none() {
        // OF only for a count of 1 (ecx still holds the count).
        let no_of = !(f::OF as i32);
        dynasm!(a
            ; .arch x64
            ; cmp ecx, 1
            ; je >one
            ; and edx, no_of
            ; one:
        );
    }
    if op == ShiftOp::Shl {
        // OF = SF (MSB of the result) XOR CF, placed at bit 11.
        dynasm!(a
            ; .arch x64
            ; mov ecx, edx
            ; shr ecx, 7
            ; xor ecx, edx
            ; and ecx, 1
            ; shl ecx, 11
            ; or edx, ecx
        );
    }
    let keep = !(f::STATUS as i32);
    dynasm!(a
        ; .arch x64
        ; mov rax, QWORD [rbx + RFLAGS]
        ; and rax, keep
        ; or rax, rdx
        ; mov QWORD [rbx + RFLAGS], rax
    );
}

/// A register shift or rotate by CL (`Op::ShiftCl`): a masked count of 0 only zero-extends
/// a 32-bit destination; an 8/16-bit shift by at least the width goes to `helper`.
fn shift_cl(a: &mut Asm, op: ShiftOp, dst: GuestReg, helper: DynamicLabel, done: DynamicLabel) {
    let cl_off = (OFFSET_GPR + 8) as i32;
    let m = if dst.size == 8 { 0x3f } else { 0x1f };
    dynasm!(a
        ; .arch x64
        ; movzx ecx, BYTE [rbx + cl_off]
        ; and ecx, m
        ; jz >zero
    );
    if !op.is_rotate() && dst.size < 4 {
        let bits = i32::from(dst.size) * 8;
        dynasm!(a
            ; .arch x64
            ; cmp ecx, bits
            ; jae =>helper
        );
    }
    shift(a, op, dst, None, true);
    dynasm!(a ; .arch x64 ; jmp =>done ; zero:);
    if dst.size == 4 {
        let off = dst.offset();
        dynasm!(a
            ; .arch x64
            ; mov eax, DWORD [rbx + off]
            ; mov QWORD [rbx + off], rax
        );
        refresh(a, dst.index);
    }
    dynasm!(a ; .arch x64 ; =>done);
}

/// Host status flags that `cond` reads, from the guest RFLAGS (clobbers rax and rcx). SAHF
/// loads SF, ZF, AF, PF and CF from AH; OF, when read, is set first by an 8-bit ADD that
/// overflows exactly when guest OF is 1 (cheaper than POPFQ, which is microcoded; SAHF in
/// 64-bit mode needs CPUID LAHF-SAHF, present on every x86-64 host since 2006).
fn load_guest_flags(a: &mut Asm, cond: Cond) {
    use crate::abi::flags as f;
    if cond.reads() & f::OF == 0 {
        dynasm!(a
            ; .arch x64
            ; mov ah, BYTE [rbx + RFLAGS]
            ; sahf
        );
    } else {
        dynasm!(a
            ; .arch x64
            ; mov eax, DWORD [rbx + RFLAGS]
            ; mov ecx, eax
            ; shr ecx, 11
            ; and ecx, 1
            ; add cl, 0x7f
            ; mov ah, al
            ; sahf
        );
    }
}

/// CMOVcc r, r: the destination is rewritten either way (zero-extended at 32 bits).
/// CMOVcc r, r: a host CMOVcc on rax / rcx (64-bit: a 32-bit destination was loaded
/// zero-extended, so it is zero-extended whether or not the move happens; a 16-bit one is
/// stored at its width). `live`: the host flags are the guest's already (fused with the op
/// before); else they are loaded from RFLAGS.
fn cmov(a: &mut Asm, cond: Cond, dst: GuestReg, src: GuestReg, live: bool) {
    if !live {
        load_guest_flags(a, cond);
    }
    load(a, 0, dst);
    load(a, 1, src);
    match cond {
        Cond::O => dynasm!(a ; .arch x64 ; cmovo rax, rcx),
        Cond::No => dynasm!(a ; .arch x64 ; cmovno rax, rcx),
        Cond::B => dynasm!(a ; .arch x64 ; cmovb rax, rcx),
        Cond::Ae => dynasm!(a ; .arch x64 ; cmovae rax, rcx),
        Cond::E => dynasm!(a ; .arch x64 ; cmove rax, rcx),
        Cond::Ne => dynasm!(a ; .arch x64 ; cmovne rax, rcx),
        Cond::Be => dynasm!(a ; .arch x64 ; cmovbe rax, rcx),
        Cond::A => dynasm!(a ; .arch x64 ; cmova rax, rcx),
        Cond::S => dynasm!(a ; .arch x64 ; cmovs rax, rcx),
        Cond::Ns => dynasm!(a ; .arch x64 ; cmovns rax, rcx),
        Cond::P => dynasm!(a ; .arch x64 ; cmovp rax, rcx),
        Cond::Np => dynasm!(a ; .arch x64 ; cmovnp rax, rcx),
        Cond::L => dynasm!(a ; .arch x64 ; cmovl rax, rcx),
        Cond::Ge => dynasm!(a ; .arch x64 ; cmovge rax, rcx),
        Cond::Le => dynasm!(a ; .arch x64 ; cmovle rax, rcx),
        Cond::G => dynasm!(a ; .arch x64 ; cmovg rax, rcx),
    }
    store(a, dst);
}

/// SETcc r8 (`live` as for [`cmov`]): a host SETcc into al.
fn setcc(a: &mut Asm, cond: Cond, dst: GuestReg, live: bool) {
    if !live {
        load_guest_flags(a, cond);
    }
    // A plain move: the flags stay.
    dynasm!(a ; .arch x64 ; mov eax, 0);
    match cond {
        Cond::O => dynasm!(a ; .arch x64 ; seto al),
        Cond::No => dynasm!(a ; .arch x64 ; setno al),
        Cond::B => dynasm!(a ; .arch x64 ; setb al),
        Cond::Ae => dynasm!(a ; .arch x64 ; setae al),
        Cond::E => dynasm!(a ; .arch x64 ; sete al),
        Cond::Ne => dynasm!(a ; .arch x64 ; setne al),
        Cond::Be => dynasm!(a ; .arch x64 ; setbe al),
        Cond::A => dynasm!(a ; .arch x64 ; seta al),
        Cond::S => dynasm!(a ; .arch x64 ; sets al),
        Cond::Ns => dynasm!(a ; .arch x64 ; setns al),
        Cond::P => dynasm!(a ; .arch x64 ; setp al),
        Cond::Np => dynasm!(a ; .arch x64 ; setnp al),
        Cond::L => dynasm!(a ; .arch x64 ; setl al),
        Cond::Ge => dynasm!(a ; .arch x64 ; setge al),
        Cond::Le => dynasm!(a ; .arch x64 ; setle al),
        Cond::G => dynasm!(a ; .arch x64 ; setg al),
    }
    store(a, dst);
}

/// IMUL r, r / r, r, imm: host IMUL for the value, CF and OF; SF, ZF, PF from a TEST of the
/// truncated result; AF cleared.
fn imul(a: &mut Asm, dst: GuestReg, src: GuestReg, imm: Option<u64>, flags: bool) {
    match imm {
        None => {
            load(a, 0, dst);
            load(a, 1, src);
        }
        Some(v) => {
            load(a, 0, src);
            dynasm!(a ; .arch x64 ; mov rcx, QWORD v as i64);
        }
    }
    match dst.size {
        8 => dynasm!(a ; .arch x64 ; imul rax, rcx),
        4 => dynasm!(a ; .arch x64 ; imul eax, ecx),
        _ => dynasm!(a ; .arch x64 ; imul ax, cx),
    }
    store(a, dst);
    if flags {
        mul_flags(a, dst.size);
    }
}

/// Guest RFLAGS after a multiply whose host flags are still live and whose low half is in rax
/// (results already stored: clobbers rax, rcx, rdx): CF / OF from the multiply; SF, ZF, PF
/// of the low half; AF = 0 (the interpreter's `muldiv.rs` definitions).
fn mul_flags(a: &mut Asm, size: u8) {
    use crate::abi::flags as f;
    dynasm!(a ; .arch x64 ; pushfq ; pop rdx);
    match size {
        8 => dynasm!(a ; .arch x64 ; test rax, rax),
        4 => dynasm!(a ; .arch x64 ; test eax, eax),
        _ => dynasm!(a ; .arch x64 ; test ax, ax),
    }
    let co = (f::CF | f::OF) as i32;
    let szp = (f::SF | f::ZF | f::PF) as i32;
    let keep = !(f::STATUS as i32);
    dynasm!(a
        ; .arch x64
        ; pushfq
        ; pop rcx
        ; and edx, co
        ; and ecx, szp
        ; or edx, ecx
        ; mov rax, QWORD [rbx + RFLAGS]
        ; and rax, keep
        ; or rax, rdx
        ; mov QWORD [rbx + RFLAGS], rax
    );
}

/// MOVZX / MOVSX / MOVSXD r, r.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn movx(a: &mut Asm, dst: GuestReg, src: GuestReg, sign: bool) {
    if let Some(d) = cached(dst.index).filter(|_| !dst.high && dst.size >= 2) {
        // Straight into the destination's host register, from the source's host register
        // or (not cached, or AH..BH) its slot in the state.
        let hs = cached(src.index).filter(|_| !src.high);
        if src.high {
            sync(a, src.index);
        }
        let off = src.offset();
        macro_rules! ext {
            ($m:ident, $dst:ident, $reg:ident, $mem:ident) => {
                match hs {
                    Some(h) => dynasm!(a ; .arch x64 ; $m $dst(d), $reg(h)),
                    None => dynasm!(a ; .arch x64 ; $m $dst(d), $mem [rbx + off]),
                }
            };
        }
        match (src.size, sign, dst.size) {
            (1, false, 2) => ext!(movzx, Rw, Rb, BYTE),
            (1, false, _) => ext!(movzx, Rd, Rb, BYTE),
            (1, true, 2) => ext!(movsx, Rw, Rb, BYTE),
            (1, true, 4) => ext!(movsx, Rd, Rb, BYTE),
            (1, true, _) => ext!(movsx, Rq, Rb, BYTE),
            (2, false, 4 | 8) => ext!(movzx, Rd, Rw, WORD),
            (2, true, 4) => ext!(movsx, Rd, Rw, WORD),
            (2, true, 8) => ext!(movsx, Rq, Rw, WORD),
            (4, true, 8) => ext!(movsxd, Rq, Rd, DWORD),
            (4, false, 4 | 8) => ext!(mov, Rd, Rd, DWORD),
            _ => return movx_rax(a, dst, src, sign),
        }
        written(dst, d);
        return;
    }
    movx_rax(a, dst, src, sign);
}

/// [`movx`] through rax (any destination).
fn movx_rax(a: &mut Asm, dst: GuestReg, src: GuestReg, sign: bool) {
    load(a, 0, src);
    match (src.size, sign) {
        (1, false) => dynasm!(a ; .arch x64 ; movzx eax, al),
        (1, true) => dynasm!(a ; .arch x64 ; movsx rax, al),
        (2, false) => dynasm!(a ; .arch x64 ; movzx eax, ax),
        (2, true) => dynasm!(a ; .arch x64 ; movsx rax, ax),
        (4, true) => dynasm!(a ; .arch x64 ; movsxd rax, eax),
        _ => {}
    }
    if dst.size == 4 {
        dynasm!(a ; .arch x64 ; mov eax, eax);
    }
    store(a, dst);
}

/// CWD / CDQ / CQO: rDX = the sign of rAX, replicated (see `Op::SignFill`).
fn sign_fill(a: &mut Asm, size: u8) {
    let rax = GuestReg {
        index: 0,
        size,
        high: false,
    };
    let rdx = GuestReg { index: 2, ..rax };
    load(a, 0, rax);
    match size {
        8 => dynasm!(a ; .arch x64 ; sar rax, 63),
        4 => dynasm!(a ; .arch x64 ; sar eax, 31),
        _ => dynasm!(a ; .arch x64 ; sar ax, 15),
    }
    store(a, rdx);
}

/// BSF / BSR r, r (see `Op::BitScan`).
fn bit_scan(a: &mut Asm, reverse: bool, dst: GuestReg, src: GuestReg) {
    let zf = crate::abi::flags::ZF as i32;
    load(a, 1, src);
    match src.size {
        8 => dynasm!(a ; .arch x64 ; test rcx, rcx),
        4 => dynasm!(a ; .arch x64 ; test ecx, ecx),
        _ => dynasm!(a ; .arch x64 ; test cx, cx),
    }
    dynasm!(a ; .arch x64 ; jz >zero);
    match (reverse, src.size) {
        (false, 8) => dynasm!(a ; .arch x64 ; bsf rax, rcx),
        (false, 4) => dynasm!(a ; .arch x64 ; bsf eax, ecx),
        (false, _) => dynasm!(a ; .arch x64 ; bsf ax, cx),
        (true, 8) => dynasm!(a ; .arch x64 ; bsr rax, rcx),
        (true, 4) => dynasm!(a ; .arch x64 ; bsr eax, ecx),
        (true, _) => dynasm!(a ; .arch x64 ; bsr ax, cx),
    }
    store(a, dst);
    dynasm!(a
        ; .arch x64
        ; and QWORD [rbx + RFLAGS], !zf
        ; jmp >done
        ; zero:
        ; or QWORD [rbx + RFLAGS], zf
        ; done:
    );
}

/// One-operand MUL / IMUL / DIV / IDIV (see `Op::MulDiv`); divides jump to `helper` for
/// every case the host instruction could fault on (or the quotient might not fit).
fn mul_div(a: &mut Asm, op: MulDivOp, src: GuestReg, helper: DynamicLabel) {
    let q = src.size == 8;
    let rax_off = GuestReg {
        index: 0,
        size: 8,
        high: false,
    }
    .offset();
    let rdx_off = rax_off + 2 * 8;
    if q {
        dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + src.offset()] ; mov rax, QWORD [rbx + rax_off]);
    } else {
        dynasm!(a ; .arch x64 ; mov ecx, DWORD [rbx + src.offset()] ; mov eax, DWORD [rbx + rax_off]);
    }
    match op {
        MulDivOp::Mul | MulDivOp::Imul => {
            match (op, q) {
                (MulDivOp::Mul, true) => dynasm!(a ; .arch x64 ; mul rcx),
                (MulDivOp::Mul, false) => dynasm!(a ; .arch x64 ; mul ecx),
                (_, true) => dynasm!(a ; .arch x64 ; imul rcx),
                (_, false) => dynasm!(a ; .arch x64 ; imul ecx),
            }
            // Plain moves keep the multiply's flags live for `mul_flags`.
            dynasm!(a ; .arch x64 ; mov QWORD [rbx + rax_off], rax ; mov QWORD [rbx + rdx_off], rdx);
            refresh(a, 0);
            refresh(a, 2);
            mul_flags(a, src.size);
        }
        MulDivOp::Div | MulDivOp::Idiv => {
            if q {
                dynasm!(a ; .arch x64 ; mov rdx, QWORD [rbx + rdx_off] ; test rcx, rcx ; jz =>helper);
            } else {
                dynasm!(a ; .arch x64 ; mov edx, DWORD [rbx + rdx_off] ; test ecx, ecx ; jz =>helper);
            }
            match (op, q) {
                // The quotient fits iff the high half is below the divisor.
                (MulDivOp::Div, true) => {
                    dynasm!(a ; .arch x64 ; cmp rdx, rcx ; jae =>helper ; div rcx)
                }
                (MulDivOp::Div, false) => {
                    dynasm!(a ; .arch x64 ; cmp edx, ecx ; jae =>helper ; div ecx)
                }
                // Native only for a dividend that is rAX sign-extended, where the one
                // quotient that does not fit is MIN / -1.
                (_, true) => dynasm!(a
                    ; .arch x64
                    ; mov rsi, rax
                    ; sar rsi, 63
                    ; cmp rsi, rdx
                    ; jne =>helper
                    ; cmp rcx, -1
                    ; jne >go
                    ; mov rsi, QWORD i64::MIN
                    ; cmp rax, rsi
                    ; je =>helper
                    ; go:
                    ; idiv rcx
                ),
                (_, false) => dynasm!(a
                    ; .arch x64
                    ; mov esi, eax
                    ; sar esi, 31
                    ; cmp esi, edx
                    ; jne =>helper
                    ; cmp ecx, -1
                    ; jne >go
                    ; cmp eax, i32::MIN
                    ; je =>helper
                    ; go:
                    ; idiv ecx
                ),
            }
            dynasm!(a ; .arch x64 ; mov QWORD [rbx + rax_off], rax ; mov QWORD [rbx + rdx_off], rdx);
            refresh(a, 0);
            refresh(a, 2);
        }
    }
}

/// BT r, r / BT r, imm8: CF = the selected bit; other flags unchanged.
fn bt(a: &mut Asm, dst: GuestReg, src: Src) {
    let m = i32::from(dst.size) * 8 - 1;
    load(a, 0, dst);
    match src {
        Src::Reg(r) => load(a, 1, r),
        Src::Imm(v) => dynasm!(a ; .arch x64 ; mov ecx, (v & 0xff) as i32),
        Src::None => unreachable!("bt without a bit offset"),
    }
    dynasm!(a
        ; .arch x64
        ; and ecx, m
        ; bt rax, rcx
        ; setc dl
        ; movzx edx, dl
        ; mov rax, QWORD [rbx + RFLAGS]
        ; and rax, -2
        ; or rax, rdx
        ; mov QWORD [rbx + RFLAGS], rax
    );
}

/// `rax op= rcx` at `size` bytes (host flags = guest flags afterwards).
fn alu_op(a: &mut Asm, op: AluOp, size: u8) {
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
        AluOp::Mov => dynasm!(a ; .arch x64 ; mov rax, rcx),
    }
}

/// A load from host address rsi straight into the host register of a cached destination of 4
/// or 8 bytes (zero- or sign-extended from `size` bytes), written through. Returns false
/// (nothing emitted) for other destinations.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn load_cached(a: &mut Asm, dst: GuestReg, size: u8, sign: bool) -> bool {
    let Some(d) = cached(dst.index).filter(|_| !dst.high && dst.size >= 4) else {
        return false;
    };
    match (dst.size, size, sign) {
        (8, 8, _) => dynasm!(a ; .arch x64 ; mov Rq(d), QWORD [rsi]),
        (4, 4, _) => dynasm!(a ; .arch x64 ; mov Rd(d), DWORD [rsi]),
        (8, 4, false) => dynasm!(a ; .arch x64 ; mov Rd(d), DWORD [rsi]),
        (8, 4, true) => dynasm!(a ; .arch x64 ; movsxd Rq(d), DWORD [rsi]),
        (_, 2, false) => dynasm!(a ; .arch x64 ; movzx Rd(d), WORD [rsi]),
        (8, 2, true) => dynasm!(a ; .arch x64 ; movsx Rq(d), WORD [rsi]),
        (_, 2, true) => dynasm!(a ; .arch x64 ; movsx Rd(d), WORD [rsi]),
        (_, 1, false) => dynasm!(a ; .arch x64 ; movzx Rd(d), BYTE [rsi]),
        (8, 1, true) => dynasm!(a ; .arch x64 ; movsx Rq(d), BYTE [rsi]),
        (_, 1, true) => dynasm!(a ; .arch x64 ; movsx Rd(d), BYTE [rsi]),
        _ => return false,
    }
    written(dst, d);
    true
}

/// Loads `size` bytes at host address rsi into rax, zero- or sign-extended to 64 bits.
fn load_host(a: &mut Asm, size: u8, sign: bool) {
    match (size, sign) {
        (8, _) => dynasm!(a ; .arch x64 ; mov rax, QWORD [rsi]),
        (4, false) => dynasm!(a ; .arch x64 ; mov eax, DWORD [rsi]),
        (4, true) => dynasm!(a ; .arch x64 ; movsxd rax, DWORD [rsi]),
        (2, false) => dynasm!(a ; .arch x64 ; movzx eax, WORD [rsi]),
        (2, true) => dynasm!(a ; .arch x64 ; movsx rax, WORD [rsi]),
        (_, false) => dynasm!(a ; .arch x64 ; movzx eax, BYTE [rsi]),
        (_, true) => dynasm!(a ; .arch x64 ; movsx rax, BYTE [rsi]),
    }
}

/// Stores the low `size` bytes of rax at host address rsi.
fn store_host(a: &mut Asm, size: u8) {
    match size {
        8 => dynasm!(a ; .arch x64 ; mov QWORD [rsi], rax),
        4 => dynasm!(a ; .arch x64 ; mov DWORD [rsi], eax),
        2 => dynasm!(a ; .arch x64 ; mov WORD [rsi], ax),
        _ => dynasm!(a ; .arch x64 ; mov BYTE [rsi], al),
    }
}

/// Host register `t` (0 = rax) = base + index * scale + disp of `mem` in one LEA (registers
/// not cached in host registers loaded into rax / rcx first), when it names a register and
/// the displacement fits 32 bits sign-extended. Returns false (nothing emitted) otherwise.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn effective_address_into(a: &mut Asm, mem: &MemRef, t: u8) -> bool {
    let Ok(d) = i32::try_from(mem.disp as i64) else {
        return false;
    };
    if mem.base.is_none() && mem.index.is_none() {
        return false;
    }
    // Registers not cached are loaded into rax (base) and rcx (index) first.
    let b = mem.base.map(|r| {
        cached(r).unwrap_or_else(|| {
            let off = gpr_off(r);
            dynasm!(a ; .arch x64 ; mov rax, QWORD [rbx + off]);
            0
        })
    });
    let i = mem.index.map(|(r, s)| {
        let h = cached(r).unwrap_or_else(|| {
            let off = gpr_off(r);
            dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + off]);
            1
        });
        (h, s)
    });
    match (b, i) {
        (Some(b), None) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(b) + d]),
        (Some(b), Some((i, 1))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(b) + Rq(i) + d]),
        (Some(b), Some((i, 2))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(b) + Rq(i) * 2 + d]),
        (Some(b), Some((i, 4))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(b) + Rq(i) * 4 + d]),
        (Some(b), Some((i, _))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(b) + Rq(i) * 8 + d]),
        (None, Some((i, 1))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(i) + d]),
        (None, Some((i, 2))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(i) * 2 + d]),
        (None, Some((i, 4))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(i) * 4 + d]),
        (None, Some((i, _))) => dynasm!(a ; .arch x64 ; lea Rq(t), [Rq(i) * 8 + d]),
        (None, None) => return false,
    }
    true
}

/// rax = base + index * scale + disp of `mem` (64-bit sum, masked by the caller).
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn address_sum(a: &mut Asm, mem: &MemRef) {
    let gpr = |i: u8| (OFFSET_GPR + usize::from(i) * 8) as i32;
    dynasm!(a ; .arch x64 ; mov rax, QWORD mem.disp as i64);
    if let Some(b) = mem.base {
        match cached(b) {
            Some(h) => dynasm!(a ; .arch x64 ; add rax, Rq(h)),
            None => dynasm!(a ; .arch x64 ; add rax, QWORD [rbx + gpr(b)]),
        }
    }
    if let Some((i, scale)) = mem.index {
        match cached(i) {
            Some(h) => dynasm!(a ; .arch x64 ; mov rcx, Rq(h)),
            None => dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + gpr(i)]),
        }
        match scale {
            2 => dynasm!(a ; .arch x64 ; shl rcx, 1),
            4 => dynasm!(a ; .arch x64 ; shl rcx, 2),
            8 => dynasm!(a ; .arch x64 ; shl rcx, 3),
            _ => {}
        }
        dynasm!(a ; .arch x64 ; add rax, rcx);
    }
}

/// Computes the linear address of `mem` into rax (segment checks inline outside 64-bit
/// mode), probes the JIT TLB and leaves the host address in rsi. Returns the label that
/// follows the access, which the caller binds after emitting it; misses and failed checks go
/// to an out-of-line slow path (fill and retry, or the helper for the whole instruction).
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn mem_access(
    a: &mut Asm,
    ir: &BlockIr,
    mem: &MemRef,
    write: bool,
    user: bool,
    index: u32,
    slow: &mut Vec<Slow>,
) -> DynamicLabel {
    let retry = a.new_dynamic_label();
    let helper = a.new_dynamic_label();
    dynasm!(a ; .arch x64 ; =>retry);
    if !effective_address_into(a, mem, 0) {
        address_sum(a, mem);
    }
    match mem.addr_size {
        2 => dynasm!(a ; .arch x64 ; movzx eax, ax),
        4 => dynasm!(a ; .arch x64 ; mov eax, eax),
        _ => {}
    }
    let seg = (OFFSET_SEG + usize::from(mem.seg) * 16) as i32;
    if ir.bits64 {
        // SDM Vol. 3A §3.2.4: only FS and GS have a base in 64-bit mode; canonical checks
        // come from the tag compare (non-canonical pages are never filled).
        if mem.seg == 4 || mem.seg == 5 {
            dynasm!(a ; .arch x64 ; add rax, QWORD [rbx + seg]);
        }
    } else {
        // Present, expand-up, writable data segment (attr bits P, S, type 0x2 with bits 3
        // and 2 clear) and the access within the limit; anything else (read-only, code,
        // expand-down, unusable, limit violation) is left to the helper.
        let size = i32::from(mem.size) - 1;
        dynasm!(a
            ; .arch x64
            ; movzx edx, WORD [rbx + seg + 14]
            ; and edx, 0x9e
            ; cmp edx, 0x92
            ; jne =>helper
            ; mov edx, DWORD [rbx + seg + 8]
            ; lea rcx, [rax + size]
            ; cmp rcx, rdx
            ; ja =>helper
            ; add rax, QWORD [rbx + seg]
            ; mov eax, eax
        );
    }
    probe_with(a, mem.size, write, user, index, retry, helper, slow)
}

/// Probes the JIT TLB for an access of `size` bytes at linear rax (see [`mem_access`]).
fn probe(
    a: &mut Asm,
    size: u8,
    write: bool,
    user: bool,
    index: u32,
    retry: DynamicLabel,
    slow: &mut Vec<Slow>,
) -> DynamicLabel {
    let helper = a.new_dynamic_label();
    probe_with(a, size, write, user, index, retry, helper, slow)
}

#[allow(clippy::too_many_arguments)]
fn probe_with(
    a: &mut Asm,
    size: u8,
    write: bool,
    user: bool,
    index: u32,
    retry: DynamicLabel,
    helper: DynamicLabel,
    slow: &mut Vec<Slow>,
) -> DynamicLabel {
    let fill = a.new_dynamic_label();
    let done = a.new_dynamic_label();
    let shift = 12 - JTLB_ENTRY_SHIFT as i8;
    let mask = ((JTLB_ENTRIES - 1) << JTLB_ENTRY_SHIFT) as i32;
    let last = i32::from(size) - 1;
    let tag_off = if write {
        OFFSET_JTLB_WRITE
    } else {
        OFFSET_JTLB_READ
    } as i32;
    let addend = OFFSET_JTLB_ADDEND as i32;
    // Slot of the first byte's page; tag of the last byte's page (an access crossing a page
    // never matches the entry of its first page).
    dynasm!(a
        ; .arch x64
        ; mov rcx, rax
        ; shr rcx, shift
        ; and ecx, mask
        ; add rcx, QWORD [r12 + TLB]
        ; lea rsi, [rax + last]
        ; and rsi, -4096
    );
    if user {
        dynasm!(a ; .arch x64 ; or rsi, 1);
    }
    let hit = a.new_dynamic_label();
    dynasm!(a
        ; .arch x64
        ; cmp rsi, QWORD [rcx + tag_off]
        ; jne =>fill
        ; mov rsi, rax
        ; add rsi, QWORD [rcx + addend]
        ; =>hit
    );
    slow.push(Slow {
        fill,
        hit,
        tag_off,
        helper,
        retry,
        done,
        kind: u64::from(size) | if write { 0x100 } else { 0 },
        index,
        restore_flags: false,
        pending: pending(),
    });
    done
}

/// Byte offset of XMM register `i` in `CpuState`.
fn xmm_off(i: u8) -> i32 {
    (OFFSET_XMM + usize::from(i) * 16) as i32
}

/// The start every native SSE op shares: the availability check, whose failure runs
/// instruction `index` through the helper (a slow path continuing at the returned label,
/// which the op defines at its end), and the offset of XMM`xmm` in `CpuState`.
fn sse_prologue(a: &mut Asm, xmm: u8, index: u32, slow: &mut Vec<Slow>) -> (i32, DynamicLabel) {
    let helper = a.new_dynamic_label();
    let done = a.new_dynamic_label();
    sse_check(a, helper);
    slow.push(Slow::helper_only(helper, done, index));
    (xmm_off(xmm), done)
}

/// Jumps to `helper` unless SSE instructions may run (SDM Vol. 3A Table 13-1: CR0.EM = 0,
/// CR0.TS = 0, CR4.OSFXSR = 1); the helper then raises #UD or #NM. Host flags only.
fn sse_check(a: &mut Asm, helper: DynamicLabel) {
    let em_ts = (crate::abi::cr::CR0_EM | crate::abi::cr::CR0_TS) as i32;
    let osfxsr = crate::abi::cr::CR4_OSFXSR as i32;
    let (off0, off4) = (OFFSET_CR0 as i32, OFFSET_CR4 as i32);
    dynasm!(a
        ; .arch x64
        ; test DWORD [rbx + off0], em_ts
        ; jnz =>helper
        ; test DWORD [rbx + off4], osfxsr
        ; jz =>helper
    );
}

/// The flags of SHL / SHR / SAR by constant `c` (1 <= c < width), from the host flags of the
/// same shift (any plain moves after it leave them): captured with LAHF like an ALU op
/// (PUSHFQ is microcoded; LAHF writes AH, so the result must be stored first). CF, PF, ZF,
/// SF are the host's; OF (at bit 8 of rdx) is the host's for SHR by 1, SF ^ CF for SHL
/// (shift.rs), else 0; AF is cleared: the masks of a logic op ([`SHIFT_FLAGS`]).
fn shift_const_flags(a: &mut Asm, op: ShiftOp, c: u8) {
    dynasm!(a ; .arch x64 ; lahf ; mov dl, ah);
    match op {
        ShiftOp::Shr if c == 1 => dynasm!(a ; .arch x64 ; seto dh),
        ShiftOp::Shl => dynasm!(a
            ; .arch x64
            ; mov dh, ah
            ; shr dh, 7
            ; xor dh, ah
            ; and dh, 1
        ),
        _ => dynasm!(a ; .arch x64 ; mov dh, 0),
    }
    settle_flags(a, SHIFT_FLAGS);
}

/// [`Op::RepString`]. The guest GPRs are current in `CpuState` (written back before the op)
/// and rdx is free (pending flags merged). Checks DF = 0, 0 < RCX <= a page's worth and that
/// the destination (and source) range ends in the page it starts in, probes the JIT TLB for
/// both pages (the second probe's fill retries from the start, so rdx need not survive it),
/// then copies with the host's REP MOVS / STOS on the host addresses: forward, element by
/// element as the guest defines it, so an overlapping copy replicates as on hardware (guest
/// RAM is one host mapping: guest-physical overlap is host overlap). Anything else runs the
/// instruction through the helper.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn rep_string(a: &mut Asm, movs: bool, size: u8, user: bool, index: u32, slow: &mut Vec<Slow>) {
    let (rax_o, rcx_o, rsi_o, rdi_o) = (gpr_off(0), gpr_off(1), gpr_off(6), gpr_off(7));
    let log = size.trailing_zeros() as i8;
    let max = 4096 >> log;
    let df = crate::abi::flags::DF as i32;
    let retry = a.new_dynamic_label();
    let helper = a.new_dynamic_label();
    let nothing = a.new_dynamic_label();
    // rdx = bytes; each range must end in its first page.
    dynasm!(a
        ; .arch x64
        ; =>retry
        ; test DWORD [rbx + RFLAGS], df
        ; jnz =>helper
        ; mov rdx, QWORD [rbx + rcx_o]
        ; test rdx, rdx
        ; jz =>nothing
        ; cmp rdx, max
        ; ja =>helper
    );
    if log != 0 {
        dynasm!(a ; .arch x64 ; shl rdx, log);
    }
    let in_page = |a: &mut Asm, off: i32| {
        dynasm!(a
            ; .arch x64
            ; mov ecx, DWORD [rbx + off]
            ; and ecx, 0xfff
            ; add rcx, rdx
            ; cmp rcx, 4096
            ; ja =>helper
        );
    };
    in_page(a, rdi_o);
    if movs {
        in_page(a, rsi_o);
    }
    dynasm!(a ; .arch x64 ; mov rax, QWORD [rbx + rdi_o]);
    let d1 = probe_with(a, 1, true, user, index, retry, helper, slow);
    let mut d2 = None;
    if movs {
        dynasm!(a
            ; .arch x64
            ; mov rdx, rsi
            ; mov rax, QWORD [rbx + rsi_o]
        );
        d2 = Some(probe(a, 1, false, user, index, retry, slow));
        dynasm!(a ; .arch x64 ; mov rdi, rdx);
    } else {
        dynasm!(a
            ; .arch x64
            ; mov rdi, rsi
            ; mov rdx, rsi
            ; mov rax, QWORD [rbx + rax_o]
        );
    }
    // Host rdi may cache a guest register: its slot is current, it is reloaded below.
    dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + rcx_o]);
    match (movs, size) {
        (true, 1) => dynasm!(a ; .arch x64 ; rep movsb),
        (true, 2) => dynasm!(a ; .arch x64 ; rep movsw),
        (true, 4) => dynasm!(a ; .arch x64 ; rep movsd),
        (true, _) => dynasm!(a ; .arch x64 ; rep movsq),
        (false, 1) => dynasm!(a ; .arch x64 ; rep stosb),
        (false, 2) => dynasm!(a ; .arch x64 ; rep stosw),
        (false, 4) => dynasm!(a ; .arch x64 ; rep stosd),
        (false, _) => dynasm!(a ; .arch x64 ; rep stosq),
    }
    dynasm!(a
        ; .arch x64
        ; sub rdi, rdx
        ; add QWORD [rbx + rdi_o], rdi
    );
    if movs {
        dynasm!(a ; .arch x64 ; add QWORD [rbx + rsi_o], rdi);
    }
    dynasm!(a ; .arch x64 ; mov QWORD [rbx + rcx_o], 0);
    for i in 0..16u8 {
        if matches!(i, 1 | 6 | 7) || cached(i) == Some(7) {
            refresh(a, i);
        }
    }
    dynasm!(a ; .arch x64 ; =>nothing ; =>d1);
    if let Some(d2) = d2 {
        dynasm!(a ; .arch x64 ; =>d2);
    }
}

/// LEA: the address sum in rax, masked to the address size, stored at the destination width.
#[allow(clippy::useless_conversion)] // dynasm expands a dynamic register Rq(h) to h.into()
fn lea(
    a: &mut Asm,
    dst: GuestReg,
    base: Option<u8>,
    index: Option<(u8, u8)>,
    disp: u64,
    addr_size: u8,
) {
    // Every register cached and the displacement a 32-bit one: one host LEA into the
    // destination's host register (zero-extended at 32 bits, then the size masks).
    if base.is_none() && index.is_none() && dst.size >= 4 {
        // An absolute (or RIP-relative) address is a constant.
        let mask = if dst.size == 4 || addr_size == 4 {
            0xffff_ffff
        } else {
            u64::MAX
        };
        let mask = if addr_size == 2 { 0xffff } else { mask };
        if mov_cached(a, dst, Src::Imm(disp & mask)) {
            return;
        }
    }
    if let Some(d) = cached(dst.index).filter(|_| !dst.high && dst.size >= 4 && addr_size >= 4) {
        let m = MemRef {
            base,
            index,
            disp,
            seg: 0,
            size: 8,
            addr_size,
        };
        if effective_address_into(a, &m, d) {
            if dst.size == 4 || addr_size == 4 {
                dynasm!(a ; .arch x64 ; mov Rd(d), Rd(d));
            }
            written(dst, d);
            return;
        }
    }
    let gpr = |i: u8| (crate::abi::OFFSET_GPR + usize::from(i) * 8) as i32;
    dynasm!(a ; .arch x64 ; mov rax, QWORD disp as i64);
    if let Some(b) = base {
        let off = gpr(b);
        match cached(b) {
            Some(h) => dynasm!(a ; .arch x64 ; add rax, Rq(h)),
            None => dynasm!(a ; .arch x64 ; add rax, QWORD [rbx + off]),
        }
    }
    if let Some((i, scale)) = index {
        let off = gpr(i);
        match cached(i) {
            Some(h) => dynasm!(a ; .arch x64 ; mov rcx, Rq(h)),
            None => dynasm!(a ; .arch x64 ; mov rcx, QWORD [rbx + off]),
        }
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

/// On a slow path: [`merge_flags`] of pending flags (rdx), keeping rax (the linear address)
/// and rdx; clobbers host flags.
fn merge_into_rflags(a: &mut Asm, pending: Option<AluOp>) {
    let Some(op) = pending else {
        return;
    };
    dynasm!(a ; .arch x64 ; push rax ; push rdx);
    merge_flags(a, op);
    dynasm!(a ; .arch x64 ; pop rdx ; pop rax);
}

/// Captures the host status flags in rdx without touching them (clobbers AH): bits 0-7 as
/// LAHF stores them (CF, PF, AF, ZF, SF at their RFLAGS positions), OF at bit 8; the other
/// bits are left as they were. [`merge_flags`] takes this layout, and also an RFLAGS image
/// with only status flags set (OF at bit 11, bit 8 clear). LAHF / SETO cost a few cycles
/// where PUSHFQ is microcoded (about 4 cycles of throughput and 9 of latency on the AMD
/// EPYC hosts measured, docs/performance.md "JIT round 6"). LAHF in 64-bit mode is also
/// what `load_guest_flags`' SAHF needs: every x86-64 CPU since 2006 has it.
fn capture_flags(a: &mut Asm) {
    dynasm!(a
        ; .arch x64
        ; lahf
        ; seto dh
        ; mov dl, ah
    );
}

/// rdx = the status flags of the guest RFLAGS (a layout [`merge_flags`] takes: a later
/// merge of rdx is a no-op). Clobbers host flags.
fn reload_captured(a: &mut Asm) {
    let status = crate::abi::flags::STATUS as i32;
    dynasm!(a
        ; .arch x64
        ; mov rdx, QWORD [rbx + RFLAGS]
        ; and edx, status
    );
}

/// Merges the host flags captured in rdx ([`capture_flags`]) into the guest RFLAGS
/// (clobbers rax, rdx and host flags).
fn merge_flags(a: &mut Asm, op: AluOp) {
    let cap = op.captured_flags() as i32;
    if cap == 0 {
        return;
    }
    if cap & crate::abi::flags::OF as i32 != 0 {
        // OF from bit 8 to bit 11 (a no-op for an RFLAGS image: its bit 8 is clear, and
        // what its bits 9-15 become is masked off below).
        dynasm!(a
            ; .arch x64
            ; movzx eax, dh
            ; shl eax, 11
            ; or edx, eax
        );
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
        host_asm_with(mode, guest, false)
    }

    /// `chain`: as the driver emits blocks (chainable exits, jump-cache probe).
    fn host_asm_with(mode: Mode, guest: &[u8], chain: bool) -> Vec<String> {
        let mut mem = vec![0xf4u8; 4096];
        mem[..guest.len()].copy_from_slice(guest);
        let mut fetch = |la: u64, buf: &mut [u8]| -> Result<usize, FetchFault> {
            let off = (la - 0x1000) as usize;
            let n = buf.len().min(4096 - off);
            buf[..n].copy_from_slice(&mem[off..off + n]);
            Ok(n)
        };
        let b = scan_block(mode, 0, 0x1000, &mut fetch, 64).unwrap();
        let code = if chain {
            emit_block(&lower(&b).unwrap(), 0x10_0000, false, 0, true).code
        } else {
            emit(&lower(&b).unwrap(), 0x10_0000, false)
        };
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
        // ECX and EAX live in host registers (used twice each): the ops work on those.
        assert!(h.iter().any(|l| l.starts_with("dec ")), "{text}");
        assert!(h.iter().any(|l| l.starts_with("cmp ")), "{text}");
        // DEC's flags are dead (the CMP overwrites all it writes): only the CMP's are captured.
        assert_eq!(h.iter().filter(|l| *l == "lahf").count(), 1, "{text}");
        assert!(h.iter().any(|l| l.starts_with("jne ")), "{text}");
        assert!(
            !h.iter().any(|l| l == "popfq" || l == "sahf"),
            "fused: no reload of the flags\n{text}"
        );
        // The loop back edge checks the instruction limit in env (r12 + 8).
        assert!(h.iter().any(|l| l == "cmp rax,[r12+8]"), "{text}");
    }

    #[test]
    fn golden_loop_back_edge_keeps_cached_registers_in_host_registers() {
        // Guest (64-bit): L: add eax, ecx; dec ecx; jnz L; hlt. The taken Jcc goes round
        // again without storing EAX / ECX to their slots (rbx + 0, rbx + 8); only the way
        // out (limit reached, or the fall-through exit) writes them back.
        let h = host_asm(Mode::Bits64, &[0x01, 0xc8, 0xff, 0xc9, 0x75, 0xfa, 0xf4]);
        let text = h.join("\n");
        let is_store = |l: &String| l.starts_with("mov [rbx],") || l.starts_with("mov [rbx+8],");
        let limit = h
            .iter()
            .position(|l| l == "cmp rax,[r12+8]")
            .expect("back edge limit check");
        let jne = h
            .iter()
            .position(|l| l.starts_with("jne "))
            .expect("loop Jcc");
        assert!(jne < limit, "{text}");
        // The not-taken arm (between the Jcc and the taken arm) and the way out after the
        // limit check store both; the taken arm up to the limit check stores nothing.
        let taken = h[jne + 1..limit]
            .iter()
            .rposition(|l| l.starts_with("jmp ") || l.starts_with("call "))
            .map_or(jne + 1, |k| jne + 2 + k);
        assert!(!h[taken..limit].iter().any(is_store), "{text}");
        assert_eq!(
            h[limit..].iter().filter(|l| is_store(l)).count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn golden_cached_registers_are_written_back_once_per_block_exit() {
        // Guest: add eax, ecx; add eax, ecx; xor eax, ecx; mov edx, [ebx]; add eax, edx; hlt.
        // EAX (written four times) lives in a host register; its slot in the state (rbx + 0)
        // is written before code outside the block can look (HLT's helper call, the load's
        // two slow paths), not after each op.
        let h = host_asm(
            Mode::Bits32,
            &[
                0x01, 0xc8, 0x01, 0xc8, 0x31, 0xc8, 0x8b, 0x13, 0x01, 0xd0, 0xf4,
            ],
        );
        let text = h.join("\n");
        let stores = |h: &[String]| h.iter().filter(|l| l.starts_with("mov [rbx],")).count();
        let call = h
            .iter()
            .position(|l| l.starts_with("call "))
            .expect("helper call");
        assert_eq!(stores(&h[..call]), 1, "{text}");
        assert_eq!(stores(&h), 3, "{text}");
    }

    #[test]
    fn golden_flags_before_a_load_stay_pending_and_are_dropped_when_overwritten() {
        // Guest (64-bit): add eax, ecx (live: the load may fault); mov edx, [rbx];
        // sub eax, 1 (overwrites every flag ADD wrote); hlt. ADD's flags stay in rdx across
        // the load (merged only on its slow paths) and are dropped by the SUB; only the SUB's
        // are merged into RFLAGS (rbx + 0x88), before HLT's helper call.
        let h = host_asm(
            Mode::Bits64,
            &[0x01, 0xc8, 0x8b, 0x13, 0x83, 0xe8, 0x01, 0xf4],
        );
        let text = h.join("\n");
        assert_eq!(h.iter().filter(|l| *l == "lahf").count(), 2, "{text}");
        let call = h
            .iter()
            .position(|l| l.starts_with("call "))
            .expect("helper call");
        let merges = h[..call]
            .iter()
            .filter(|l| *l == "mov [rbx+88h],rax")
            .count();
        assert_eq!(merges, 1, "{text}");
        // The load's slow paths merge ADD's flags before calling out.
        let slow = &h[call..];
        let merge = slow
            .iter()
            .position(|l| l == "push rdx")
            .expect("slow-path merge");
        assert!(
            slow[merge..].iter().any(|l| l == "mov [rbx+88h],rax"),
            "{text}"
        );
    }

    #[test]
    fn golden_dead_flags_are_not_captured_but_flags_before_a_load_are() {
        // Guest: add eax, ecx (dead: the XOR overwrites them); xor edx, eax (live: the load
        // may fault); mov eax, [ebx]; sub eax, 1 (live at the block end); hlt.
        let h = host_asm(
            Mode::Bits32,
            &[0x01, 0xc8, 0x31, 0xc2, 0x8b, 0x03, 0x83, 0xe8, 0x01, 0xf4],
        );
        let text = h.join("\n");
        assert_eq!(h.iter().filter(|l| *l == "lahf").count(), 2, "{text}");
        let add = h.iter().position(|l| l.starts_with("add ")).expect("add");
        assert_ne!(h[add + 1], "lahf", "{text}");
    }

    #[test]
    fn golden_64bit_exits_leave_the_flags_pending_for_the_next_block() {
        // Guest (64-bit): cmp eax, ecx; jne +0. Both arms leave the CMP's flags in rdx for
        // the next block (no merge into RFLAGS at rbx + 0x88 before the exit's jump); only
        // the paths back to the driver merge them.
        let h = host_asm_with(Mode::Bits64, &[0x39, 0xc8, 0x75, 0x00], true);
        let text = h.join("\n");
        let jcc = h.iter().position(|l| l.starts_with("jne ")).expect("jne");
        let merge = |l: &&String| *l == "mov [rbx+88h],rax";
        let arm = h[jcc..]
            .iter()
            .position(|l| l.starts_with("add r13,"))
            .expect("exit");
        assert!(!h[jcc..jcc + arm].iter().any(|l| merge(&l)), "{text}");
        assert!(h.iter().any(|l| merge(&l)), "{text}");
        // In 32-bit blocks the arms merge.
        let h = host_asm_with(Mode::Bits32, &[0x39, 0xc8, 0x75, 0x00], true);
        let text = h.join("\n");
        let jcc = h.iter().position(|l| l.starts_with("jne ")).expect("jne");
        assert!(h[jcc..jcc + 12].iter().any(|l| merge(&l)), "{text}");
    }

    #[test]
    fn golden_64bit_dec_takes_cf_from_the_entry_flags_without_a_merge() {
        // Guest (64-bit): dec ecx; jne +0. DEC keeps CF: it comes from the flags the block
        // was entered with (BT from rdx), not from a merge of those into RFLAGS first.
        let h = host_asm(Mode::Bits64, &[0xff, 0xc9, 0x75, 0x00]);
        let text = h.join("\n");
        let dec = h.iter().position(|l| l.starts_with("dec ")).expect("dec");
        assert!(h[..dec].iter().any(|l| l == "bt edx,0"), "{text}");
        assert!(!h[..dec].iter().any(|l| l == "mov [rbx+88h],rax"), "{text}");
    }

    #[test]
    fn golden_cmp_mem_then_jne_branches_on_live_host_flags() {
        // Guest: cmp [ebx], eax; jne +0 — the CMP with a memory operand feeds the Jcc directly;
        // only its slow path (helper) restores host flags, with POPFQ.
        let h = host_asm(Mode::Bits32, &[0x39, 0x03, 0x75, 0x00]);
        let text = h.join("\n");
        assert!(!h.iter().any(|l| l == "sahf"), "{text}");
        assert_eq!(h.iter().filter(|l| *l == "popfq").count(), 1, "{text}");
        assert!(h.iter().any(|l| l.starts_with("jne ")), "{text}");
    }

    #[test]
    fn golden_inc_then_jb_reloads_guest_flags() {
        // Guest: inc eax; jb +0 — INC leaves CF, so the Jcc must read the guest RFLAGS.
        let h = host_asm(Mode::Bits32, &[0x40, 0x72, 0x00]);
        let text = h.join("\n");
        assert!(h.iter().any(|l| l == "sahf"), "{text}");
        assert!(h.iter().any(|l| l.starts_with("jb ")), "{text}");
    }

    #[test]
    fn golden_memory_load_probes_the_tlb_inline() {
        // Guest: mov eax, [ebx]; hlt — the load is a segment check + TLB probe + host load,
        // with the fill and the helper out of line; HLT calls the helper.
        let h = host_asm(Mode::Bits32, &[0x8b, 0x03, 0xf4]);
        let text = h.join("\n");
        let helper = h.iter().filter(|l| *l == "call qword ptr [r12]").count();
        assert_eq!(helper, 2, "slow path + hlt\n{text}");
        let fill = format!("call qword ptr [r12+{:X}h]", OFFSET_ENV_FILL);
        assert_eq!(h.iter().filter(|l| **l == fill).count(), 1, "{text}");
        assert!(
            h.iter().any(|l| l == "cmp edx,92h"),
            "segment type check\n{text}"
        );
        assert!(h.iter().any(|l| l == "cmp rsi,[rcx]"), "read tag\n{text}");
        assert!(h.iter().any(|l| l == "mov eax,[rsi]"), "host load\n{text}");
    }
}
