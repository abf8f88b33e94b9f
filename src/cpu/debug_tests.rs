//! Debug-register breakpoints and single-step (Intel SDM Vol. 3B §18.2-18.3), run through
//! the interpreter on a 64-bit [`TestMachine`] with a #DB handler.

use crate::testing::{TestMachine, TestMode, CODE_BASE, STACK_TOP};
use jit::abi::{flags as fl, reg};

const GDT: u64 = 0x2000;
const IDT: u64 = 0x4000;
/// The #DB handler: HLT.
const HANDLER: u64 = 0x2_0000;

/// A 64-bit machine whose GDT holds a 64-bit code segment at 0x08 and whose IDT routes
/// vector 1 (#DB) to [`HANDLER`] through a 64-bit interrupt gate (SDM Vol. 3A Figure 6-8).
fn machine() -> TestMachine {
    let mut t = TestMachine::new(TestMode::Long64, &[]);
    let code64 = 0xffff | (0xf << 48) | (0x9a << 40) | (0xa << 52);
    t.mem.write_le(GDT, 8, 0).unwrap();
    t.mem.write_le(GDT + 8, 8, code64).unwrap();
    t.cpu.s.gdtr.base = GDT;
    t.cpu.s.gdtr.limit = 15;
    t.cpu.s.idtr.base = IDT;
    t.cpu.s.idtr.limit = 0xfff;
    let gate = (HANDLER & 0xffff)
        | (0x08 << 16)
        | (0xe << 40)
        | (1 << 47)
        | ((HANDLER >> 16 & 0xffff) << 48);
    t.mem.write_le(IDT + 16, 8, gate).unwrap();
    t.mem.write_le(IDT + 24, 8, 0).unwrap();
    t
}

/// Runs `code` at CODE_BASE in 64-bit mode with a #DB handler (HLT at 0x20000) until it
/// halts; returns the machine and the RIP the #DB frame holds (if one was delivered).
fn run_db(code: &[u8], setup: impl Fn(&mut TestMachine)) -> (TestMachine, u64) {
    let mut t = machine();
    t.mem.write(HANDLER, &[0xf4]).unwrap();
    t.mem.write(CODE_BASE, code).unwrap();
    t.cpu.s.gpr[reg::RBX] = 0x8000;
    setup(&mut t);
    t.run(10);
    let frame_rip = t.mem.read_le(STACK_TOP - 40, 8).unwrap();
    (t, frame_rip)
}

/// DR7 with breakpoint `n` globally enabled, R/W `rw` and LEN `len` (SDM Vol. 3B Figure 18-1).
fn dr7_bp(n: u64, rw: u64, len: u64) -> u64 {
    0x400 | (2 << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n))
}

#[test]
fn data_breakpoint_is_a_trap_after_the_access() {
    // SDM Vol. 3B §18.3.1.2: MOV [RBX], EAX hits a 4-byte write breakpoint at 0x8002 (aligned
    // to 0x8000): the store is done, #DB returns to the next instruction, DR6.B1 set.
    let code = [0x89, 0x03, 0x90, 0xf4]; // mov [rbx], eax; nop; hlt
    let (t, frame_rip) = run_db(&code, |t| {
        t.cpu.s.gpr[reg::RAX] = 0x1234_5678;
        t.cpu.s.dr[1] = 0x8002;
        t.cpu.s.dr[7] = dr7_bp(1, 1, 3);
    });
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(t.mem.read_le(0x8000, 4).unwrap(), 0x1234_5678);
    assert_eq!(frame_rip, 0x1_0002);
    assert_eq!(t.cpu.s.dr[6], 0xffff_0ff2);
    assert_eq!(t.cpu.s.rip, 0x2_0001, "in the handler");
    // A read does not match a write breakpoint; R/W = 11 matches it.
    let code = [0x8b, 0x03, 0x90, 0xf4]; // mov eax, [rbx]; nop; hlt
    let (t, _) = run_db(&code, |t| {
        t.cpu.s.dr[1] = 0x8002;
        t.cpu.s.dr[7] = dr7_bp(1, 1, 3);
    });
    assert_eq!(t.cpu.exceptions[1], 0);
    let (t, frame_rip) = run_db(&code, |t| {
        t.cpu.s.dr[1] = 0x8002;
        t.cpu.s.dr[7] = dr7_bp(1, 3, 3);
    });
    assert_eq!((t.cpu.exceptions[1], frame_rip), (1, 0x1_0002));
    // Disabled (L1 = G1 = 0): nothing.
    let (t, _) = run_db(&code, |t| {
        t.cpu.s.dr[1] = 0x8002;
        t.cpu.s.dr[7] = dr7_bp(1, 3, 3) & !0xff;
    });
    assert_eq!(t.cpu.exceptions[1], 0);
}

#[test]
fn instruction_breakpoint_is_a_fault_and_rf_suppresses_it() {
    // SDM Vol. 3B §18.3.1.1: a breakpoint on the NOP at 0x10002 is reported before it
    // executes (the frame holds its own address), DR6.B0 set.
    let code = [0x89, 0x03, 0x90, 0xf4];
    let (t, frame_rip) = run_db(&code, |t| {
        t.cpu.s.dr[0] = 0x1_0002;
        t.cpu.s.dr[7] = dr7_bp(0, 0, 0);
    });
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(frame_rip, 0x1_0002);
    assert_eq!(t.cpu.s.dr[6] & 0xf, 0b0001);
    // With RFLAGS.RF = 1 (as IRET from the handler sets it) the NOP runs; RF is then cleared.
    let (t, _) = run_db(&code, |t| {
        t.cpu.s.dr[0] = 0x1_0002;
        t.cpu.s.dr[7] = dr7_bp(0, 0, 0);
        t.cpu.s.rip = 0x1_0002;
        t.cpu.s.rflags |= fl::RF;
    });
    assert_eq!(t.cpu.exceptions[1], 0);
    assert_eq!(t.cpu.s.rip, 0x1_0004);
    assert_eq!(t.cpu.s.rflags & fl::RF, 0);
}

#[test]
fn general_detect_faults_mov_dr() {
    // SDM Vol. 3B §18.2.4: MOV RAX, DR7 with DR7.GD = 1 is a #DB fault with DR6.BD set and
    // GD cleared for the handler.
    let (t, frame_rip) = run_db(&[0x0f, 0x21, 0xf8, 0xf4], |t| {
        t.cpu.s.dr[7] = 0x400 | crate::cpu::debug::DR7_GD;
        t.cpu.s.gpr[reg::RAX] = 7;
    });
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(frame_rip, 0x1_0000);
    assert_eq!(t.cpu.s.gpr[reg::RAX], 7);
    assert_ne!(t.cpu.s.dr[6] & crate::cpu::debug::DR6_BD, 0);
    assert_eq!(t.cpu.s.dr[7], 0x400);
}

#[test]
fn single_step_traps_after_the_instruction() {
    // SDM Vol. 3B §18.3.1.4: with TF set, #DB (DR6.BS) follows the first NOP; the frame holds
    // the next RIP and the flags image with TF; the handler runs with TF clear.
    let code = [0x90, 0x90, 0xf4];
    let (t, frame_rip) = run_db(&code, |t| t.cpu.s.rflags |= fl::TF);
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(frame_rip, 0x1_0001);
    assert_ne!(t.cpu.s.dr[6] & crate::cpu::debug::DR6_BS, 0);
    assert_eq!(t.cpu.s.dr[6] & 0xf, 0);
    assert_ne!(
        t.mem.read_le(STACK_TOP - 40 + 16, 8).unwrap() & fl::TF,
        0,
        "pushed RFLAGS keeps TF"
    );
    assert_eq!(t.cpu.s.rflags & fl::TF, 0);
    // POPF setting TF: no trap after the POPF itself, one after the next instruction.
    // push 0x302; popfq; nop; hlt
    let code = [0x68, 0x02, 0x03, 0x00, 0x00, 0x9d, 0x90, 0xf4];
    let (t, frame_rip) = run_db(&code, |_| {});
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(frame_rip, 0x1_0007);
    // No TF, no breakpoints: no #DB at all.
    let (t, _) = run_db(&[0x90, 0x90, 0xf4], |_| {});
    assert_eq!(t.cpu.exceptions[1], 0);
}

#[test]
fn rep_string_traps_after_the_iteration_that_hit() {
    // SDM Vol. 3B §18.3.1.2: REP STOSB over 0x8000..0x8008 with a 1-byte write breakpoint at
    // 0x8003 traps after the fourth store; the frame points at the REP STOSB (it resumes),
    // RCX and RDI reflect four iterations.
    let (t, frame_rip) = run_db(&[0xf3, 0xaa, 0xf4], |t| {
        t.cpu.s.gpr[reg::RAX] = 0xab;
        t.cpu.s.gpr[reg::RCX] = 8;
        t.cpu.s.gpr[reg::RDI] = 0x8000;
        t.cpu.s.dr[2] = 0x8003;
        t.cpu.s.dr[7] = dr7_bp(2, 1, 0);
    });
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(frame_rip, 0x1_0000);
    assert_eq!(t.cpu.s.gpr[reg::RCX], 4);
    assert_eq!(t.cpu.s.gpr[reg::RDI], 0x8004);
    assert_eq!(t.mem.read_le(0x8000, 8).unwrap(), 0xabab_abab);
    assert_eq!(t.cpu.s.dr[6] & 0xf, 0b0100);
}

#[test]
fn ss_load_delays_its_data_breakpoint_trap() {
    // SDM Vol. 3B §18.3.1.2 / Vol. 2B "MOV": MOV SS, [RBX] hits a read breakpoint; the #DB
    // waits until the NOP after it has completed.
    let code = [0x8e, 0x13, 0x90, 0xf4]; // mov ss, [rbx]; nop; hlt
    let (t, frame_rip) = run_db(&code, |t| {
        t.cpu.s.dr[0] = 0x8000;
        t.cpu.s.dr[7] = dr7_bp(0, 3, 1);
    });
    assert_eq!(t.cpu.exceptions[1], 1);
    assert_eq!(frame_rip, 0x1_0003);
    assert_eq!(t.cpu.s.dr[6] & 0xf, 0b0001);
    assert_eq!(t.cpu.db_deferred, 0);
}
