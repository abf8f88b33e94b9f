//! Unit tests: string instructions.

use super::*;
use crate::cpu::Fault;
use crate::testing::{TestMachine, TestMode, CODE_BASE};
use jit::abi::flags as fl;

#[test]
fn rep_movsb_backwards_with_df() {
    for mode in ALL {
        let mut t = machine(mode, |a| {
            a.std().unwrap();
            a.rep().movsb().unwrap();
            a.hlt().unwrap();
        });
        let base = if mode == TestMode::Real { CODE_BASE } else { 0 };
        t.mem.write(base + 0x3000, b"abcd").unwrap();
        t.cpu.s.gpr[RSI] = 0x3003;
        t.cpu.s.gpr[RDI] = 0x4003;
        t.cpu.s.gpr[RCX] = 4;
        run(&mut t);
        let mut b = [0u8; 4];
        t.mem.read(base + 0x4000, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        assert_eq!(t.gpr(RSI), 0x2fff);
        assert_eq!(t.gpr(RDI), 0x3fff);
        assert_eq!(t.gpr(RCX), 0);
    }
}

#[test]
fn repe_cmpsb_stops_at_first_difference_and_repne_scasb_finds() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.cld().unwrap();
        a.repe().cmpsb().unwrap();
        a.hlt().unwrap();
    });
    t.mem.write(0x3000, b"abcX").unwrap();
    t.mem.write(0x4000, b"abcY").unwrap();
    t.cpu.s.gpr[RSI] = 0x3000;
    t.cpu.s.gpr[RDI] = 0x4000;
    t.cpu.s.gpr[RCX] = 10;
    run(&mut t);
    assert_eq!(t.gpr(RCX), 6);
    assert_eq!(t.gpr(RSI), 0x3004);
    assert_eq!(t.cpu.s.rflags & fl::ZF, 0);
    let mut t = machine(TestMode::Long64, |a| {
        a.repne().scasb().unwrap();
        a.hlt().unwrap();
    });
    t.mem.write(0x5000, b"hello\0").unwrap();
    t.cpu.s.gpr[RDI] = 0x5000;
    t.cpu.s.gpr[RCX] = u64::MAX;
    t.cpu.s.gpr[RAX] = 0;
    run(&mut t);
    assert_eq!(t.gpr(RDI), 0x5006);
    assert_eq!(!t.gpr(RCX) - 1, 5); // strlen idiom
}

#[test]
fn rep_is_chunked_and_32bit_address_size_zero_extends() {
    // 67 F3 AB: rep stosd with ECX/EDI in 64-bit mode.
    let mut t = TestMachine::new(TestMode::Long64, &[0x67, 0xf3, 0xab, 0xf4]);
    t.cpu.s.gpr[RDI] = 0xffff_ffff_0000_6000;
    t.cpu.s.gpr[RCX] = 0xdead_0000_0000_2000; // ECX = 0x2000 iterations
    t.cpu.s.gpr[RAX] = 0x5555_5555;
    exec1(&mut t).unwrap();
    // One chunk done, RIP still at the instruction.
    assert_eq!(t.cpu.s.rip, CODE_BASE);
    assert_eq!(
        t.gpr(RCX),
        0x2000 - u64::from(crate::cpu::integer::string::CHUNK)
    );
    run(&mut t);
    assert_eq!(t.gpr(RCX), 0);
    assert_eq!(t.gpr(RDI), 0x6000 + 4 * 0x2000);
    assert_eq!(t.mem.read_le(0x6000 + 4 * 0x1fff, 4).unwrap(), 0x5555_5555);
}

#[test]
fn lods_honours_segment_override_and_outs_counts_ring_stats() {
    // Real mode: ES override on LODSB (26 AC) reads ES:SI.
    let mut t = TestMachine::new(TestMode::Real, &[0x26, 0xac, 0x6e, 0xf4]);
    t.set_real_segment(jit::abi::sreg::ES, 0x2000);
    t.mem.write(0x2_0010, &[0x42]).unwrap();
    t.cpu.s.gpr[RSI] = 0x10;
    t.cpu.s.gpr[RDX] = 0x80;
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xff, 0x42);
    // OUTSB sent DS:SI (SI = 0x11) to port 0x80.
    assert_eq!(t.plat.outs.len(), 1);
    assert_eq!(t.cpu.ring_stats.get(iced_x86::Mnemonic::Outsb), 1);
}

#[test]
fn rep_movsb_overlap_replicates_like_element_by_element() {
    // DI = SI + 1: each byte copies the one just written (a fill with the first byte).
    let mut t = machine(TestMode::Flat32, |a| {
        a.rep().movsb().unwrap();
        a.hlt().unwrap();
    });
    t.mem.write(0x3000, b"xabcdefgh").unwrap();
    t.cpu.s.gpr[RSI] = 0x3000;
    t.cpu.s.gpr[RDI] = 0x3001;
    t.cpu.s.gpr[RCX] = 8;
    run(&mut t);
    let mut b = [0u8; 9];
    t.mem.read(0x3000, &mut b).unwrap();
    assert_eq!(&b, b"xxxxxxxxx");
    // Non-overlapping copy across page boundaries (bulk path), 64-bit MOVSQ.
    let mut t = machine(TestMode::Long64, |a| {
        a.rep().movsq().unwrap();
        a.hlt().unwrap();
    });
    let src: Vec<u8> = (0..20000u32).map(|i| (i * 7 + 3) as u8).collect();
    t.mem.write(0x10_0ff8, &src).unwrap();
    t.cpu.s.gpr[RSI] = 0x10_0ff8;
    t.cpu.s.gpr[RDI] = 0x20_0004;
    t.cpu.s.gpr[RCX] = 2500;
    run(&mut t);
    let mut dst = vec![0u8; 20000];
    t.mem.read(0x20_0004, &mut dst).unwrap();
    assert_eq!(dst, src);
    assert_eq!(t.gpr(RCX), 0);
    assert_eq!(t.gpr(RSI), 0x10_0ff8 + 20000);
}

#[test]
fn rep_stos_fault_keeps_completed_iterations() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.rep().stosb().unwrap();
        a.hlt().unwrap();
    });
    t.cpu.s.seg[jit::abi::sreg::ES].limit = 0x2fff;
    t.cpu.s.gpr[RDI] = 0x2000;
    t.cpu.s.gpr[RCX] = 0x2000;
    t.cpu.s.gpr[RAX] = 0xab;
    // The first step completes one chunk (4096 bytes, up to the limit); the next one faults.
    assert_eq!(exec1(&mut t), Ok(()));
    assert_eq!(exec1(&mut t), Err(Fault::Gp(0)));
    assert_eq!(t.gpr(RDI), 0x3000);
    assert_eq!(t.gpr(RCX), 0x1000);
    assert_eq!(t.mem.read_le(0x2fff, 1).unwrap(), 0xab);
    assert_eq!(t.cpu.s.rip, CODE_BASE);
    // 16-bit address size wraps DI within the segment.
    let mut t = machine(TestMode::Real, |a| {
        a.rep().stosw().unwrap();
        a.hlt().unwrap();
    });
    t.set_real_segment(jit::abi::sreg::ES, 0x3000);
    t.cpu.s.gpr[RDI] = 0xfffc;
    t.cpu.s.gpr[RCX] = 4;
    t.cpu.s.gpr[RAX] = 0x1234;
    run(&mut t);
    assert_eq!(t.gpr(RDI), 0x0004);
    assert_eq!(t.mem.read_le(0x3_fffe, 2).unwrap(), 0x1234);
    assert_eq!(t.mem.read_le(0x3_0002, 2).unwrap(), 0x1234);
    assert_eq!(t.mem.read_le(0x4_0000, 2).unwrap(), 0);
}
