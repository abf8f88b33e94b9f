//! Unit tests: MUL/IMUL/DIV/IDIV.

use super::*;
use crate::cpu::Fault;
use crate::testing::TestMode;
use iced_x86::code_asm::*;
use jit::abi::flags as fl;

#[test]
fn imul_three_operand_overflow() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(ebx, 0x4000_0000).unwrap();
        a.imul_3(eax, ebx, 4).unwrap(); // overflow: CF = OF = 1, EAX = 0
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0);
    assert_eq!(t.cpu.s.rflags & (fl::CF | fl::OF), fl::CF | fl::OF);
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(rbx, -3i64).unwrap();
        a.imul_3(rax, rbx, 5).unwrap(); // -15, no overflow
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), (-15i64) as u64);
    assert_eq!(t.cpu.s.rflags & (fl::CF | fl::OF), 0);
}

#[test]
fn mul_and_one_operand_imul() {
    let mut t = machine(TestMode::Real, |a| {
        a.mov(al, 0x80).unwrap();
        a.mov(bl, 2).unwrap();
        a.mul(bl).unwrap(); // AX = 0x100, CF = OF = 1
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xffff, 0x100);
    assert_eq!(t.cpu.s.rflags & (fl::CF | fl::OF), fl::CF | fl::OF);
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(rax, -2i64).unwrap();
        a.mov(rbx, 3i64).unwrap();
        a.imul(rbx).unwrap(); // RDX:RAX = -6
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), (-6i64) as u64);
    assert_eq!(t.gpr(RDX), u64::MAX);
    assert_eq!(t.cpu.s.rflags & (fl::CF | fl::OF), 0);
}

#[test]
fn div_raises_de_on_zero_and_overflow_without_side_effects() {
    for mode in ALL {
        let mut t = machine(mode, |a| {
            a.div(ebx).unwrap();
            a.hlt().unwrap();
        });
        t.cpu.s.gpr[RAX] = 10;
        t.cpu.s.gpr[RDX] = 0;
        t.cpu.s.gpr[RBX] = 0;
        let before = t.cpu.s.gpr;
        assert_eq!(exec1(&mut t), Err(Fault::De));
        assert_eq!(t.cpu.s.gpr, before);
        // Quotient overflow: EDX:EAX = 2^32, divisor 1.
        t.cpu.s.gpr[RDX] = 1;
        t.cpu.s.gpr[RBX] = 1;
        assert_eq!(exec1(&mut t), Err(Fault::De));
    }
    // IDIV: -128 / -1 in 8 bits overflows; AX = -7 / 2 = -3 rem -1.
    let mut t = machine(TestMode::Flat32, |a| {
        a.idiv(bl).unwrap();
        a.hlt().unwrap();
    });
    t.cpu.s.gpr[RAX] = 0xff80;
    t.cpu.s.gpr[RBX] = 0xff;
    assert_eq!(exec1(&mut t), Err(Fault::De));
    t.cpu.s.gpr[RAX] = (-7i16) as u16 as u64;
    t.cpu.s.gpr[RBX] = 2;
    exec1(&mut t).unwrap();
    assert_eq!(t.gpr(RAX) & 0xffff, 0xfffd);
    // IDIV r64 of i128::MIN-like dividend by -1 must fault, not panic.
    let mut t = machine(TestMode::Long64, |a| {
        a.idiv(rbx).unwrap();
        a.hlt().unwrap();
    });
    t.cpu.s.gpr[RAX] = 0;
    t.cpu.s.gpr[RDX] = 1 << 63;
    t.cpu.s.gpr[RBX] = u64::MAX;
    assert_eq!(exec1(&mut t), Err(Fault::De));
}
