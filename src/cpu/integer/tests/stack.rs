//! Unit tests: PUSH/POP/PUSHA/POPA/ENTER/LEAVE.

use super::*;
use crate::testing::TestMode;
use iced_x86::code_asm::*;

#[test]
fn push_rsp_pushes_old_value_and_pop_mem_uses_new_rsp() {
    for mode in [TestMode::Flat32, TestMode::Long64] {
        let mut t = machine(mode, |a| {
            if mode == TestMode::Long64 {
                a.push(rsp).unwrap();
                a.pop(qword_ptr(rsp)).unwrap();
            } else {
                a.push(esp).unwrap();
                a.pop(dword_ptr(esp)).unwrap();
            }
            a.hlt().unwrap();
        });
        let sp0 = t.gpr(RSP);
        run(&mut t);
        assert_eq!(t.gpr(RSP), sp0);
        // PUSH stored the old SP at sp0-w; POP read it and stored at [new RSP] = sp0.
        let w = if mode == TestMode::Long64 { 8 } else { 4 };
        assert_eq!(t.mem.read_le(sp0 - w, w as usize).unwrap(), sp0);
        assert_eq!(t.mem.read_le(sp0, w as usize).unwrap(), sp0);
    }
}

#[test]
fn pusha_popa_roundtrip() {
    let mut t = machine(TestMode::Real, |a| {
        a.mov(ax, 1).unwrap();
        a.mov(cx, 2).unwrap();
        a.mov(bp, 6).unwrap();
        a.pusha().unwrap();
        a.mov(ax, 0).unwrap();
        a.mov(cx, 0).unwrap();
        a.mov(bp, 0).unwrap();
        a.popa().unwrap();
        a.hlt().unwrap();
    });
    run(&mut t);
    assert_eq!(t.gpr(RAX) & 0xffff, 1);
    assert_eq!(t.gpr(RCX) & 0xffff, 2);
    assert_eq!(t.gpr(RBP) & 0xffff, 6);
    assert_eq!(t.gpr(RSP), 0xfffe);
}

#[test]
fn enter_with_nesting_and_leave() {
    let mut t = machine(TestMode::Flat32, |a| {
        a.enter(16, 2).unwrap();
        a.hlt().unwrap();
    });
    let sp0 = t.gpr(RSP);
    t.cpu.s.gpr[RBP] = 0x7000;
    t.mem.write_le(0x7000 - 4, 4, 0xabcd).unwrap();
    run(&mut t);
    // push ebp; push [ebp-4]; push frame_temp; ebp = frame_temp; esp -= 16
    let ft = sp0 - 4;
    assert_eq!(t.gpr(RBP), ft);
    assert_eq!(t.mem.read_le(sp0 - 4, 4).unwrap(), 0x7000);
    assert_eq!(t.mem.read_le(sp0 - 8, 4).unwrap(), 0xabcd);
    assert_eq!(t.mem.read_le(sp0 - 12, 4).unwrap(), ft);
    assert_eq!(t.gpr(RSP), sp0 - 12 - 16);
    let mut t = machine(TestMode::Flat32, |a| {
        a.enter(8, 0).unwrap();
        a.leave().unwrap();
        a.hlt().unwrap();
    });
    let sp0 = t.gpr(RSP);
    t.cpu.s.gpr[RBP] = 0x1234;
    run(&mut t);
    assert_eq!(t.gpr(RSP), sp0);
    assert_eq!(t.gpr(RBP), 0x1234);
}
