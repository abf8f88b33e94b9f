//! Unit tests: shifts and rotates.

use super::*;
use crate::testing::TestMode;
use iced_x86::code_asm::*;
use jit::abi::flags as fl;

#[test]
fn shl_by_one_sets_of_to_msb_xor_cf() {
    for mode in ALL {
        let mut t = machine(mode, |a| {
            a.mov(al, 0x40).unwrap();
            a.shl(al, 1).unwrap(); // 0x80: CF 0, OF 1
            a.hlt().unwrap();
        });
        run(&mut t);
        assert_eq!(t.gpr(RAX) & 0xff, 0x80);
        let f = t.cpu.s.rflags;
        assert_eq!(f & (fl::OF | fl::CF | fl::SF), fl::OF | fl::SF);
    }
}

#[test]
fn shift_count_zero_leaves_flags_and_counts_are_masked() {
    let mut t = machine(TestMode::Long64, |a| {
        a.stc().unwrap();
        a.mov(eax, 1).unwrap();
        a.mov(cl, 32).unwrap();
        a.shl(eax, cl).unwrap(); // masked to 0: nothing changes, CF stays 1
        a.mov(ebx, 1).unwrap();
        a.shl(ebx, 33).unwrap(); // masked to 1
        a.mov(rdx, 1i64).unwrap();
        a.shl(rdx, 63).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 1);
    assert_eq!(t.gpr(RBX), 2);
    assert_eq!(t.gpr(RDX), 1 << 63);
}

#[test]
fn rcr_and_rcl_rotate_through_cf() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.stc().unwrap();
        a.mov(al, 0x01).unwrap();
        a.rcr(al, 1).unwrap(); // CF(1) -> bit 7, bit 0 -> CF: 0x80, CF 1, OF = 1^0... (MSB xor CF before) = 0^1
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xff, 0x80);
    assert_eq!(t.cpu.s.rflags & (fl::CF | fl::OF), fl::CF | fl::OF);
    // RCL of a byte by 9 is the identity (rotation through 9 bits).
    let mut t = machine(TestMode::Real, |a| {
        a.clc().unwrap();
        a.mov(al, 0x5a).unwrap();
        a.rcl(al, 9).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xff, 0x5a);
    // 64-bit RCL by 1 moves bit 63 to CF.
    let mut t = machine(TestMode::Long64, |a| {
        a.clc().unwrap();
        a.mov(rax, i64::MIN).unwrap();
        a.rcl(rax, 1).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0);
    assert_ne!(t.cpu.s.rflags & fl::CF, 0);
}

#[test]
fn sar_rol_ror() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(eax, 0x8000_0000u32 as i32).unwrap();
        a.sar(eax, 31).unwrap(); // all ones
        a.mov(ebx, 0x8000_0001u32 as i32).unwrap();
        a.rol(ebx, 1).unwrap(); // 3, CF 1
        a.mov(ecx, 1).unwrap();
        a.ror(ecx, 1).unwrap(); // 0x80000000, CF 1, OF 1
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0xffff_ffff);
    assert_eq!(t.gpr(RBX), 3);
    assert_eq!(t.gpr(RCX), 0x8000_0000);
    assert_eq!(t.cpu.s.rflags & (fl::CF | fl::OF), fl::CF | fl::OF);
}
