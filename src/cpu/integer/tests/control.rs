//! Unit tests: near branches, LOOP, JCXZ, CALL/RET.

use super::*;
use crate::cpu::Fault;
use crate::testing::{TestMachine, TestMode, CODE_BASE};
use iced_x86::code_asm::*;

#[test]
fn loop_and_jcxz_use_the_address_size_counter() {
    let mut t = machine(TestMode::Flat32, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 5).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut top).unwrap();
        a.inc(eax).unwrap();
        a.loop_(top).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 5);
    assert_eq!(t.gpr(RCX), 0);
    // 67 E2 FE in 32-bit code: loop with CX; ECX upper half untouched.
    let mut t = TestMachine::new(TestMode::Flat32, &[0x67, 0xe2, 0xfd, 0xf4]);
    t.cpu.s.gpr[RCX] = 0x1_0003;
    run(&mut t);
    assert_eq!(t.gpr(RCX), 0x1_0000);
    // JECXZ taken when ECX = 0.
    let mut t = machine(TestMode::Flat32, |a| {
        let mut l = a.create_label();
        a.xor(ecx, ecx).unwrap();
        a.jecxz(l).unwrap();
        a.mov(eax, 1).unwrap();
        a.set_label(&mut l).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0);
}

#[test]
fn call_ret_imm16_and_operand_size() {
    let mut t = machine(TestMode::Long64, |a| {
        let mut f = a.create_label();
        a.push(1).unwrap();
        a.call(f).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut f).unwrap();
        a.mov(eax, 7).unwrap();
        a.ret_1(8).unwrap();
    });
    let sp0 = t.gpr(RSP);
    run(&mut t);
    assert_eq!(t.gpr(RAX), 7);
    assert_eq!(t.gpr(RSP), sp0);
    // 16-bit call pushes a 2-byte return address.
    let mut t = machine(TestMode::Real, |a| {
        let mut f = a.create_label();
        a.call(f).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut f).unwrap();
        a.pop(bx).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RBX) & 0xffff, 3);
    assert_eq!(t.gpr(RSP), 0xfffe);
    // 66 E9 rel16 in 32-bit code: the target is truncated to 16 bits -> beyond CS? no: flat
    // CS limit 4 GiB, target = (EIP + 4 + rel16) & 0xFFFF.
    let mut t = TestMachine::new(TestMode::Flat32, &[0x66, 0xe9, 0x00, 0x00]);
    exec1(&mut t).unwrap();
    assert_eq!(t.cpu.s.rip, (CODE_BASE + 4) & 0xffff);
}

#[test]
fn near_branch_beyond_cs_limit_faults_precisely() {
    // Real mode: 66 E8 rel32 with target > 0xFFFF -> #GP, nothing pushed.
    let mut t = TestMachine::new(TestMode::Real, &[0x66, 0xe8, 0x00, 0x00, 0x01, 0x00]);
    let sp0 = t.gpr(RSP);
    assert_eq!(exec1(&mut t), Err(Fault::Gp(0)));
    assert_eq!(t.gpr(RSP), sp0);
    // 64-bit: jmp rax with a non-canonical target.
    let mut t = machine(TestMode::Long64, |a| {
        a.jmp(rax).unwrap();
    });
    t.cpu.s.gpr[RAX] = 0x0000_8000_0000_0000;
    assert_eq!(exec1(&mut t), Err(Fault::Gp(0)));
    assert_eq!(t.cpu.s.rip, CODE_BASE);
}
