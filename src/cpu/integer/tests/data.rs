//! Unit tests: data movement, CMPXCHG, BCD, flags, misc.

use super::*;
use crate::cpu::Fault;
use crate::testing::{TestMachine, TestMode, CODE_BASE};
use iced_x86::code_asm::*;
use jit::abi::flags as fl;

#[test]
fn cmov_false_still_zero_extends_32bit_destination() {
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(rax, -1i64).unwrap();
        a.xor(ebx, ebx).unwrap(); // ZF = 1
        a.cmovne(eax, ebx).unwrap(); // not taken
        a.mov(rcx, -1i64).unwrap();
        a.cmove(cx, bx).unwrap(); // 16-bit taken
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0xffff_ffff);
    assert_eq!(t.gpr(RCX), 0xffff_ffff_ffff_0000);
}

#[test]
fn lea_truncates_to_operand_and_address_size() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(ebx, 0x1234_fff0).unwrap();
        a.lea(ax, ptr(ebx + 0x20)).unwrap(); // operand size 16: 0x0010
        a.hlt().unwrap();
    });
    t.cpu.s.gpr[RAX] = 0xaaaa_aaaa;
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0xaaaa_0010);
    // 67 8D 47 10: lea eax, [bx+0x10] (16-bit address) in 32-bit code -> zero-extended.
    let mut t = TestMachine::new(TestMode::Flat32, &[0x67, 0x8d, 0x47, 0x10, 0xf4]);
    t.cpu.s.gpr[RBX] = 0x1_fff8;
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0x0008);
}

#[test]
fn cmpxchg_success_and_failure() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.cmpxchg(dword_ptr(0x2000), ecx).unwrap();
        a.hlt().unwrap();
    });
    t.mem.write_le(0x2000, 4, 5).unwrap();
    t.cpu.s.gpr[RAX] = 5;
    t.cpu.s.gpr[RCX] = 9;
    exec1(&mut t).unwrap();
    assert_eq!(t.mem.read_le(0x2000, 4).unwrap(), 9);
    assert_ne!(t.cpu.s.rflags & fl::ZF, 0);
    t.cpu.s.rip = CODE_BASE;
    exec1(&mut t).unwrap(); // EAX 5 != 9: EAX = 9, ZF = 0
    assert_eq!(t.gpr(RAX), 9);
    assert_eq!(t.cpu.s.rflags & fl::ZF, 0);
}

#[test]
fn cmpxchg8b_16b() {
    let mut t = machine(TestMode::Long64, |a| {
        a.cmpxchg16b(xmmword_ptr(rsi)).unwrap();
        a.hlt().unwrap();
    });
    t.cpu.s.gpr[RSI] = 0x3008; // misaligned
    assert_eq!(exec1(&mut t), Err(Fault::Gp(0)));
    t.cpu.s.gpr[RSI] = 0x3000;
    t.mem.write_le(0x3000, 8, 1).unwrap();
    t.mem.write_le(0x3008, 8, 2).unwrap();
    t.cpu.s.gpr[RAX] = 1;
    t.cpu.s.gpr[RDX] = 2;
    t.cpu.s.gpr[RBX] = 3;
    t.cpu.s.gpr[RCX] = 4;
    exec1(&mut t).unwrap();
    assert_eq!(t.mem.read_le(0x3000, 8).unwrap(), 3);
    assert_eq!(t.mem.read_le(0x3008, 8).unwrap(), 4);
    assert_ne!(t.cpu.s.rflags & fl::ZF, 0);
    let mut t = machine(TestMode::Flat32, |a| {
        a.cmpxchg8b(qword_ptr(esi)).unwrap();
        a.hlt().unwrap();
    });
    t.cpu.s.gpr[RSI] = 0x3000;
    t.mem.write_le(0x3000, 8, 0x1111_2222_3333_4444).unwrap();
    exec1(&mut t).unwrap(); // mismatch: EDX:EAX = memory
    assert_eq!(t.gpr(RAX), 0x3333_4444);
    assert_eq!(t.gpr(RDX), 0x1111_2222);
    assert_eq!(t.cpu.s.rflags & fl::ZF, 0);
}

#[test]
fn xadd_xchg_cbw_cwd() {
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(eax, 3).unwrap();
        a.mov(ebx, 4).unwrap();
        a.xadd(eax, ebx).unwrap(); // eax 7, ebx 3
        a.xchg(ecx, eax).unwrap();
        a.mov(eax, 0x80).unwrap();
        a.cbw().unwrap(); // ax = ff80
        a.cwde().unwrap(); // eax = ffffff80
        a.cdqe().unwrap();
        a.cqo().unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RCX), 7);
    assert_eq!(t.gpr(RBX), 3);
    assert_eq!(t.gpr(RAX), (-128i64) as u64);
    assert_eq!(t.gpr(RDX), u64::MAX);
}

#[test]
fn daa_das_sdm_examples() {
    // SDM "DAA" example: ADD AL, BL with AL = 79H, BL = 35H -> AEH; DAA -> 14H, CF = AF = 1.
    let mut t = machine(TestMode::Real, |a| {
        a.mov(al, 0x79).unwrap();
        a.mov(bl, 0x35).unwrap();
        a.add(al, bl).unwrap();
        a.daa().unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xff, 0x14);
    assert_eq!(
        t.cpu.s.rflags & (fl::CF | fl::AF | fl::ZF | fl::SF | fl::PF),
        fl::CF | fl::AF | fl::PF
    );
    // SDM "DAS" example: SUB AL, BL with AL = 35H, BL = 47H -> EEH; DAS -> 88H, CF = AF = 1.
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(al, 0x35).unwrap();
        a.mov(bl, 0x47).unwrap();
        a.sub(al, bl).unwrap();
        a.das().unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xff, 0x88);
    assert_eq!(
        t.cpu.s.rflags & (fl::CF | fl::AF | fl::ZF | fl::SF | fl::PF),
        fl::CF | fl::AF | fl::SF | fl::PF
    );
}

#[test]
fn aaa_aam_aad_and_aam_zero_is_de() {
    let mut t = machine(TestMode::Real, |a| {
        a.mov(ax, 0x000b).unwrap();
        a.aaa().unwrap(); // AX = 0x0101, CF = AF = 1
        a.mov(al, 63).unwrap();
        a.aam(10).unwrap(); // AX = 0x0603
        a.aad(10).unwrap(); // AX = 63
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xffff, 63);
    // AAM 0 -> #DE (D4 00).
    let mut t = TestMachine::new(TestMode::Flat32, &[0xd4, 0x00]);
    assert_eq!(exec1(&mut t), Err(Fault::De));
}

#[test]
fn bound_raises_br() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.bound(eax, qword_ptr(0x2000)).unwrap();
        a.hlt().unwrap();
    });
    t.mem.write_le(0x2000, 4, 10).unwrap();
    t.mem.write_le(0x2004, 4, 20).unwrap();
    t.cpu.s.gpr[RAX] = 21;
    assert_eq!(exec1(&mut t), Err(Fault::Br));
    t.cpu.s.gpr[RAX] = 20;
    exec1(&mut t).unwrap();
}

#[test]
fn ud_forms_lahf_sahf_setcc() {
    // UD2, MOVBE eax,[eax] (0F 38 F0 00): #UD.
    let mut t = TestMachine::new(TestMode::Flat32, &[0x0f, 0x0b]);
    assert_eq!(exec1(&mut t), Err(Fault::Ud));
    let mut t = TestMachine::new(TestMode::Flat32, &[0x0f, 0x38, 0xf0, 0x00]);
    assert_eq!(exec1(&mut t), Err(Fault::Ud));
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(ah, 0xd5).unwrap(); // SF ZF AF PF CF
        a.sahf().unwrap();
        a.setz(bl).unwrap();
        a.lahf().unwrap();
        a.nop().unwrap();
        a.pause().unwrap();
        a.lfence().unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RBX) & 0xff, 1);
    assert_eq!((t.gpr(RAX) >> 8) & 0xff, 0xd7);
}

#[test]
fn xlat_reads_table() {
    let mut t = machine(TestMode::Long64, |a| {
        a.xlatb().unwrap();
        a.hlt().unwrap();
    });
    t.mem.write(0x2005, &[0x99]).unwrap();
    t.cpu.s.gpr[RBX] = 0x2000;
    t.cpu.s.gpr[RAX] = 0x105;
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0x199);
}

#[test]
fn faulting_store_leaves_registers_and_flags() {
    // add [0x3fff_fffe], eax in 32-bit mode beyond a 16-bit data limit: #GP, flags unchanged.
    let mut t = machine(TestMode::Flat32, |a| {
        a.add(dword_ptr(0x2000), eax).unwrap();
        a.hlt().unwrap();
    });
    t.cpu.s.seg[jit::abi::sreg::DS].limit = 0x1fff;
    t.cpu.s.rflags |= fl::CF;
    let before = t.cpu.s.rflags;
    assert_eq!(exec1(&mut t), Err(Fault::Gp(0)));
    assert_eq!(t.cpu.s.rflags, before);
    assert_eq!(t.cpu.s.rip, CODE_BASE);
}

#[test]
fn cet_hints_are_nops_and_movnti_stores() {
    // F3 0F 1E FA endbr64; F3 48 0F 1E C8 rdsspq rax; 0F C3 03 movnti [rbx], eax
    let code = [
        0xf3, 0x0f, 0x1e, 0xfa, 0xf3, 0x48, 0x0f, 0x1e, 0xc8, 0x0f, 0xc3, 0x03, 0xf4,
    ];
    let mut t = TestMachine::new(TestMode::Long64, &code);
    t.cpu.s.gpr[RAX] = 0x1234;
    t.cpu.s.gpr[RBX] = 0x2000;
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0x1234);
    assert_eq!(t.mem.read_le(0x2000, 4).unwrap(), 0x1234);
}
