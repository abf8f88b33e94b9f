//! Unit tests: BT*/BSF/BSR/TZCNT/LZCNT/SHLD/SHRD/BSWAP/POPCNT.

use super::*;
use crate::testing::{TestMachine, TestMode};
use iced_x86::code_asm::*;
use jit::abi::flags as fl;

#[test]
fn bsf_bsr_zero_source_leaves_destination() {
    for mode in [TestMode::Flat32, TestMode::Long64] {
        let mut t = machine(mode, |a| {
            a.mov(eax, 0x1234).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.bsf(eax, ebx).unwrap();
            a.hlt().unwrap();
        });
        run(&mut t);
        assert_eq!(t.gpr(RAX), 0x1234);
        assert_ne!(t.cpu.s.rflags & fl::ZF, 0);
    }
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(ebx, 0x0001_0100).unwrap();
        a.bsf(eax, ebx).unwrap();
        a.bsr(ecx, ebx).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 8);
    assert_eq!(t.gpr(RCX), 16);
    assert_eq!(t.cpu.s.rflags & fl::ZF, 0);
}

#[test]
fn tzcnt_lzcnt_execute_as_bsf_bsr() {
    // F3 0F BC C3 = tzcnt eax, ebx; F3 0F BD CB = lzcnt ecx, ebx
    let mut t = TestMachine::new(
        TestMode::Flat32,
        &[0xf3, 0x0f, 0xbc, 0xc3, 0xf3, 0x0f, 0xbd, 0xcb, 0xf4],
    );
    t.cpu.s.gpr[RBX] = 0x10;
    run(&mut t);
    assert_eq!(t.gpr(RAX), 4); // BSF
    assert_eq!(t.gpr(RCX), 4); // BSR, not LZCNT (27)
}

#[test]
fn bt_family_with_register_offsets_into_bit_strings() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(ebx, 0x2004).unwrap();
        a.mov(ecx, -1).unwrap(); // bit -1: byte 0x2003 bit 7 (dword at 0x2000, bit 31)
        a.bts(dword_ptr(ebx), ecx).unwrap();
        a.mov(ecx, 33).unwrap(); // dword at 0x2008 bit 1
        a.bts(dword_ptr(ebx), ecx).unwrap();
        a.bt(dword_ptr(ebx), ecx).unwrap(); // CF = 1
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.mem.read_le(0x2000, 4).unwrap(), 0x8000_0000);
    assert_eq!(t.mem.read_le(0x2008, 4).unwrap(), 2);
    assert_ne!(t.cpu.s.rflags & fl::CF, 0);
    // Immediate offsets are taken modulo the operand size.
    let mut t = machine(TestMode::Real, |a| {
        a.mov(ax, 0).unwrap();
        a.bts(ax, 17).unwrap();
        a.btc(ax, 1).unwrap(); // clears it again, CF = 1
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xffff, 0);
    assert_ne!(t.cpu.s.rflags & fl::CF, 0);
}

#[test]
fn shld_shrd_bswap_popcnt() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.mov(eax, 0x1234_5678).unwrap();
        a.mov(ebx, 0x9abc_def0u32 as i32).unwrap();
        a.shld(eax, ebx, 8).unwrap(); // 0x3456789a
        a.mov(ecx, 0x1234_5678).unwrap();
        a.shrd(ecx, ebx, 8).unwrap(); // 0xf0123456
        a.mov(edx, 0x1122_3344).unwrap();
        a.bswap(edx).unwrap();
        a.popcnt(esi, ebx).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0x3456_789a);
    assert_eq!(t.gpr(RCX), 0xf012_3456);
    assert_eq!(t.gpr(RDX), 0x4433_2211);
    assert_eq!(t.gpr(RSI), u64::from(0x9abc_def0u32.count_ones()));
    let mut t = machine(TestMode::Long64, |a| {
        a.mov(rax, 0x0102_0304_0506_0708i64).unwrap();
        a.bswap(rax).unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX), 0x0807_0605_0403_0201);
}
