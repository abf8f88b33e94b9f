//! Unit tests of the integer families. Expected values come from the SDM definitions
//! (instruction pages' Operation sections and their worked examples), run in 16-, 32- and
//! 64-bit modes through [`TestMachine`].

use crate::cpu::{dispatch, Ctx, Fault, Res, StopReason};
use crate::testing::{TestMachine, TestMode, CODE_BASE};
use iced_x86::code_asm::*;
use jit::abi::{flags as fl, reg};

const RAX: usize = reg::RAX;
const RCX: usize = reg::RCX;
const RDX: usize = reg::RDX;
const RBX: usize = reg::RBX;
const RSP: usize = reg::RSP;
const RBP: usize = reg::RBP;
const RSI: usize = reg::RSI;
const RDI: usize = reg::RDI;

fn bitness(mode: TestMode) -> u32 {
    match mode {
        TestMode::Real => 16,
        TestMode::Flat32 => 32,
        TestMode::Long64 => 64,
    }
}

fn ip0(mode: TestMode) -> u64 {
    if mode == TestMode::Real {
        0
    } else {
        CODE_BASE
    }
}

/// Assembles `f` for `mode` and returns a machine loaded with it.
fn machine(mode: TestMode, f: impl FnOnce(&mut CodeAssembler)) -> TestMachine {
    let mut a = CodeAssembler::new(bitness(mode)).unwrap();
    f(&mut a);
    let code = a.assemble(ip0(mode)).unwrap();
    TestMachine::new(mode, &code)
}

/// Executes exactly one instruction without exception delivery; on `Err` the state must be as
/// before the instruction.
fn exec1(t: &mut TestMachine) -> Res<()> {
    let mut ctx = Ctx::new(&mut t.cpu, &mut t.mem, &mut t.plat);
    let rip = ctx.cpu.s.rip;
    ctx.cpu.cur_rip = rip;
    let insn = ctx.fetch_decode()?;
    let m = crate::cpu::flags::mask(ctx.default_ip_size());
    ctx.next_rip = rip.wrapping_add(u64::from(insn.len)) & m;
    dispatch::execute(&mut ctx, &insn.insn)?;
    ctx.cpu.s.rip = ctx.next_rip;
    Ok(())
}

/// Runs to the HLT at the end of the program.
fn run(t: &mut TestMachine) {
    assert_eq!(t.run(100_000), StopReason::Halted);
}

const ALL: [TestMode; 3] = [TestMode::Real, TestMode::Flat32, TestMode::Long64];

// ---------------------------------------------------------------- alu

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

// ---------------------------------------------------------------- shift

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

// ---------------------------------------------------------------- muldiv

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

// ---------------------------------------------------------------- bits

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

// ---------------------------------------------------------------- string

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
    assert_eq!(t.gpr(RCX), 0x2000 - u64::from(super::string::CHUNK));
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

// ---------------------------------------------------------------- control

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

// ---------------------------------------------------------------- stack

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

// ---------------------------------------------------------------- data

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

/// Random instruction bytes with random registers in every mode: the integer handlers must
/// return `Ok` or a fault, never panic (the guest must not be able to crash the host).
#[test]
fn random_instructions_never_panic() {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let iters: u32 = std::env::var("RINX_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (mut ok, mut faults) = (0u32, 0u32);
    for mode in ALL {
        let mut t = TestMachine::new(mode, &[0x90; 16]);
        let base = t.cpu.clone();
        for _ in 0..iters {
            let mut code = [0u8; 16];
            for c in code.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            // Bias towards one-byte opcodes with a few prefixes, and towards 0F xx.
            if next() % 3 == 0 {
                code[0] = 0x0f;
            }
            t.cpu = base.clone();
            for r in 0..16 {
                let v = next();
                t.cpu.s.gpr[r] = match v % 4 {
                    0 => v >> 40,
                    1 => 0,
                    2 => v,
                    _ => v & 0xffff,
                };
            }
            t.cpu.s.gpr[RSP] = base.s.gpr[RSP];
            t.cpu.s.rflags = (next() & 0xcd5) | 2;
            let rip = t.cpu.s.rip;
            let la = if mode == TestMode::Real {
                CODE_BASE + rip
            } else {
                rip
            };
            t.mem.write(la, &code).unwrap();
            let mut ctx = Ctx::new(&mut t.cpu, &mut t.mem, &mut t.plat);
            ctx.cpu.cur_rip = rip;
            let Ok(insn) = ctx.fetch_decode() else {
                continue;
            };
            ctx.next_rip = rip.wrapping_add(insn.len() as u64);
            match super::exec(&mut ctx, &insn) {
                Some(Ok(())) => ok += 1,
                Some(Err(_)) => faults += 1,
                None => {}
            }
        }
    }
    // Most random encodings must reach an integer handler, or the test proves little.
    assert!(ok + faults > iters, "only {ok} + {faults} executed");
}
