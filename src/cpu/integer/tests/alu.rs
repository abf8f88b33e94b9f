//! Unit tests: ADD/ADC/SUB/SBB/logic/INC/DEC/NEG, LOCK.

use super::*;
use crate::cpu::Fault;
use crate::testing::{TestMachine, TestMode};
use iced_x86::code_asm::*;
use jit::abi::flags as fl;

#[test]
fn add_sub_adc_sbb_flags() {
    for mode in ALL {
        let mut t = machine(mode, |a| {
            a.mov(al, 0xffu32 as i32).unwrap();
            a.add(al, 1).unwrap(); // 0, CF ZF AF PF
            a.hlt().unwrap();
        });
        run(&mut t);
        assert_eq!(t.gpr(RAX) & 0xff, 0);
        assert_eq!(
            t.cpu.s.rflags & fl::STATUS,
            fl::CF | fl::ZF | fl::AF | fl::PF
        );
    }
    // ADC uses CF; SBB borrows.
    let mut t = machine(TestMode::Flat32, |a| {
        a.stc().unwrap();
        a.mov(eax, 5).unwrap();
        a.adc(eax, 5).unwrap(); // 11
        a.stc().unwrap();
        a.mov(ebx, 0).unwrap();
        a.sbb(ebx, 0).unwrap(); // -1, CF
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 11);
    assert_eq!(t.gpr(RBX), 0xffff_ffff);
    assert_ne!(t.cpu.s.rflags & fl::CF, 0);
}

#[test]
fn inc_keeps_cf_neg_sets_cf_and_32bit_writes_zero_extend() {
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(rax, -1i64).unwrap();
        a.stc().unwrap();
        a.inc(eax).unwrap(); // 0, ZF, CF kept, upper half cleared
        a.mov(rbx, 5i64).unwrap();
        a.neg(rbx).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0);
    assert_eq!(t.gpr(RBX), (-5i64) as u64);
    // NEG of a non-zero value sets CF.
    assert_ne!(t.cpu.s.rflags & fl::CF, 0);
    // 8/16-bit writes keep the rest of the register.
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(rax, 0x1122_3344_5566_7788i64).unwrap();
        a.add(ah, 1).unwrap();
        a.add(ax, 1).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0x1122_3344_5566_7889);
}

#[test]
fn logic_clears_cf_of() {
    let mut t = machine(TestMode::Real, |a| {
        a.stc().unwrap();
        a.mov(ax, 0x8000).unwrap();
        a.or(ax, 1).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.cpu.s.rflags & fl::STATUS, fl::SF);
}

#[test]
fn lock_on_register_destination_is_ud() {
    // lock add eax, ebx (F0 01 D8)
    let mut t = TestMachine::new(TestMode::Flat32, &[0xf0, 0x01, 0xd8, 0xf4]);
    assert_eq!(exec1(&mut t), Err(Fault::Ud));
    // lock add [ebx], eax is fine.
    let mut t = TestMachine::new(TestMode::Flat32, &[0xf0, 0x01, 0x03, 0xf4]);
    t.cpu.s.gpr[RBX] = 0x2000;
    t.cpu.s.gpr[RAX] = 7;
    exec1(&mut t).unwrap();
    assert_eq!(t.mem.read_le(0x2000, 4).unwrap(), 7);
}
