//! x87 conformance tests with expected values from the SDM, run in 32-bit flat protected mode
//! and in 64-bit mode through [`TestMachine`].

use crate::cpu::StopReason;
use crate::testing::{TestMachine, TestMode};
use jit::abi::cr;

/// Data area addressed through [EBX]/[RBX] (the same encoding in both modes).
const DATA: u64 = 0x2000;

fn run(mode: TestMode, code: &[u8], data: &[u8]) -> TestMachine {
    let mut c = code.to_vec();
    c.push(0xf4);
    let mut t = TestMachine::new(mode, &c);
    t.cpu.s.cr0 |= cr::CR0_NE | cr::CR0_MP;
    t.cpu.s.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
    t.cpu.s.gpr[3] = DATA;
    t.mem.write(DATA, data).unwrap();
    t.run(1000);
    t
}

fn both(code: &[u8], data: &[u8], check: impl Fn(&TestMachine)) {
    for mode in [TestMode::Flat32, TestMode::Long64] {
        let t = run(mode, code, data);
        check(&t);
    }
}

fn st(t: &TestMachine, i: usize) -> u128 {
    let f = &t.cpu.s.fpu;
    let p = ((f.fsw >> 11) as usize + i) & 7;
    super::slot_get(&f.st[p])
}

#[test]
fn fldpi_rounding_control() {
    // FLDPI (SDM: 66-bit constant rounded by RC): nearest -> ...C235, down -> ...C234.
    both(&[0xd9, 0xeb], &[], |t| {
        assert_eq!(st(t, 0), 0x4000_C90F_DAA2_2168_C235)
    });
    // FLDCW [ebx] (RC = down), FLDPI.
    both(&[0xd9, 0x2b, 0xd9, 0xeb], &0x077fu16.to_le_bytes(), |t| {
        assert_eq!(st(t, 0), 0x4000_C90F_DAA2_2168_C234)
    });
    both(
        &[
            0xd9, 0xea, 0xd9, 0xe9, 0xd9, 0xec, 0xd9, 0xed, 0xd9, 0xe8, 0xd9, 0xee,
        ],
        &[],
        |t| {
            assert_eq!(st(t, 5), 0x3FFF_B8AA_3B29_5C17_F0BC); // L2E
            assert_eq!(st(t, 4), 0x4000_D49A_784B_CD1B_8AFE); // L2T
            assert_eq!(st(t, 3), 0x3FFD_9A20_9A84_FBCF_F799); // LG2
            assert_eq!(st(t, 2), 0x3FFE_B172_17F7_D1CF_79AC); // LN2
            assert_eq!(st(t, 1), 0x3FFF_8000_0000_0000_0000); // 1
            assert_eq!(st(t, 0), 0); // +0
        },
    );
}

#[test]
fn fsqrt_of_two() {
    // FLD1; FLD1; FADDP; FSQRT.
    both(
        &[0xd9, 0xe8, 0xd9, 0xe8, 0xde, 0xc1, 0xd9, 0xfa],
        &[],
        |t| {
            assert_eq!(st(t, 0), 0x3FFF_B504_F333_F9DE_6484);
            assert_eq!(t.cpu.s.fpu.fsw & 0x3f, 0x20); // PE only
        },
    );
}

#[test]
fn one_third_under_precision_control() {
    // FLDCW [ebx]; FLD1; FIDIV word [ebx+2] (3).
    for (pc, expect) in [
        (0u16, {
            let u = super::sf::unpack(u128::from((1.0f32 / 3.0).to_bits()), super::sf::F32);
            super::sf::pack_raw(&u, super::sf::F80)
        }),
        (2, {
            let u = super::sf::unpack(u128::from((1.0f64 / 3.0).to_bits()), super::sf::F64);
            super::sf::pack_raw(&u, super::sf::F80)
        }),
        (3, 0x3FFD_AAAA_AAAA_AAAA_AAAB),
    ] {
        let fcw = 0x007f | (pc << 8);
        let mut data = fcw.to_le_bytes().to_vec();
        data.extend_from_slice(&3u16.to_le_bytes());
        both(&[0xd9, 0x2b, 0xd9, 0xe8, 0xde, 0x73, 0x02], &data, |t| {
            assert_eq!(st(t, 0), expect, "PC={pc}");
        });
    }
}

#[test]
fn fprem_partial_remainder_and_quotient_bits() {
    // FILD word [ebx] (3); FILD word [ebx+2] (10); FPREM -> 1, quotient 3: C0=0 C3=1 C1=1.
    let mut d = 3u16.to_le_bytes().to_vec();
    d.extend_from_slice(&10u16.to_le_bytes());
    both(&[0xdf, 0x03, 0xdf, 0x43, 0x02, 0xd9, 0xf8], &d, |t| {
        assert_eq!(st(t, 0), 0x3FFF_8000_0000_0000_0000);
        let sw = t.cpu.s.fpu.fsw;
        assert_eq!(
            sw & (super::C0 | super::C1 | super::C2 | super::C3),
            super::C3 | super::C1
        );
    });
    // 2^100 mod 3: exponent difference 99 > 63 -> partial (C2 = 1), then loop to completion.
    let mut d = 3u16.to_le_bytes().to_vec();
    d.extend_from_slice(&[0; 6]);
    d.extend_from_slice(&(((0x3FFF_u128 + 100) << 64) | (1 << 63)).to_le_bytes()[..10]);
    // FILD [ebx]; FLD tbyte [ebx+8]; FPREM -> C2 = 1; FPREM; FPREM -> C2 = 0, 2^100 mod 3 = 1.
    both(&[0xdf, 0x03, 0xdb, 0x6b, 0x08, 0xd9, 0xf8], &d, |t| {
        assert_ne!(t.cpu.s.fpu.fsw & super::C2, 0)
    });
    both(
        &[
            0xdf, 0x03, 0xdb, 0x6b, 0x08, 0xd9, 0xf8, 0xd9, 0xf8, 0xd9, 0xf8,
        ],
        &d,
        |t| {
            assert_eq!(t.cpu.s.fpu.fsw & super::C2, 0);
            assert_eq!(st(t, 0), 0x3FFF_8000_0000_0000_0000);
        },
    );
}

#[test]
fn fxam_classes() {
    // (C3, C2, C0) per SDM FXAM: empty 101, zero 100, normal 010, inf 011, NaN 001, denormal 110.
    let cc = |t: &TestMachine| {
        let s = t.cpu.s.fpu.fsw;
        (
            s & super::C3 != 0,
            s & super::C2 != 0,
            s & super::C0 != 0,
            s & super::C1 != 0,
        )
    };
    both(&[0xd9, 0xe5], &[], |t| {
        assert_eq!(cc(t), (true, false, true, false))
    });
    both(&[0xd9, 0xee, 0xd9, 0xe5], &[], |t| {
        assert_eq!(cc(t), (true, false, false, false))
    });
    both(&[0xd9, 0xe8, 0xd9, 0xe0, 0xd9, 0xe5], &[], |t| {
        assert_eq!(cc(t), (false, true, false, true))
    });
    let cases: [(u128, (bool, bool, bool, bool)); 3] = [
        (0x7FFF_8000_0000_0000_0000, (false, true, true, false)),
        (0x7FFF_C000_0000_0000_0000, (false, false, true, false)),
        (0x0000_0000_0000_0000_0001, (true, true, false, false)),
    ];
    for (v, want) in cases {
        both(&[0xdb, 0x2b, 0xd9, 0xe5], &v.to_le_bytes()[..10], |t| {
            assert_eq!(cc(t), want)
        });
    }
}

#[test]
fn stack_overflow_and_underflow_masked() {
    // Nine FLD1: the ninth overflows -> IE|SF, C1 = 1, ST(0) = indefinite.
    let code: Vec<u8> = [0xd9, 0xe8].repeat(9);
    both(&code, &[], |t| {
        let sw = t.cpu.s.fpu.fsw;
        assert_eq!(sw & 0x41, 0x41);
        assert_ne!(sw & super::C1, 0);
        assert_eq!(st(t, 0), super::x87::INDEF);
    });
    // FADD with empty registers: underflow, C1 = 0.
    both(&[0xd8, 0xc1], &[], |t| {
        assert_eq!(t.cpu.s.fpu.fsw & 0x241, 0x41);
    });
}

#[test]
fn fist_fbstp_and_fbld() {
    // FLD qword [ebx] (-2.5); FISTP word [ebx+8] (nearest-even: -2); FLD again; FBSTP [ebx+16].
    let mut d = (-2.5f64).to_bits().to_le_bytes().to_vec();
    d.resize(32, 0);
    both(
        &[0xdd, 0x03, 0xdf, 0x5b, 0x08, 0xdd, 0x03, 0xdf, 0x73, 0x10],
        &d,
        |t| {
            let mut b = [0u8; 12];
            t.mem.read(DATA + 8, &mut b[..2]).unwrap();
            assert_eq!(i16::from_le_bytes([b[0], b[1]]), -2);
            t.mem.read(DATA + 16, &mut b[..10]).unwrap();
            assert_eq!(b[0], 0x02);
            assert_eq!(b[9], 0x80);
        },
    );
    // FBLD of 123456789 -> FISTP dword.
    let mut d = vec![0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0, 0];
    d.resize(16, 0);
    both(&[0xdf, 0x23, 0xdb, 0x5b, 0x0c], &d, |t| {
        assert_eq!(t.mem.read_le(DATA + 12, 4).unwrap(), 123_456_789);
    });
}

#[test]
fn fcomi_sets_eflags_and_fucomip_pops() {
    // FLD1; FLDZ; FCOMI st, st(1) -> 0 < 1: CF = 1.
    both(&[0xd9, 0xe8, 0xd9, 0xee, 0xdb, 0xf1], &[], |t| {
        assert_eq!(t.cpu.s.rflags & 0x45, 0x01);
    });
    both(&[0xd9, 0xe8, 0xd9, 0xe8, 0xdf, 0xe9], &[], |t| {
        assert_eq!(t.cpu.s.rflags & 0x45, 0x40);
        assert_eq!((t.cpu.s.fpu.fsw >> 11) & 7, 7);
    });
}

#[test]
fn fsave_frstor_and_fstenv_roundtrip() {
    // FLDPI; FNSAVE [ebx]; (FPU reinitialized) FRSTOR [ebx]; ST0 = pi again.
    both(&[0xd9, 0xeb, 0xdd, 0x33, 0xdd, 0x23], &[0; 120], |t| {
        assert_eq!(st(t, 0), 0x4000_C90F_DAA2_2168_C235);
        assert_eq!(t.cpu.s.fpu.ftw, 0x3fff);
    });
    // FNSTENV masks all exceptions afterwards; FSTCW reads it.
    both(&[0xd9, 0x33, 0xd9, 0x7b, 0x40], &[0; 80], |t| {
        assert_eq!(t.mem.read_le(DATA, 2).unwrap(), 0x037f);
        assert_eq!(t.mem.read_le(DATA + 0x40, 2).unwrap(), 0x037f);
    });
}

#[test]
fn device_not_available_and_pending_exception() {
    // CR0.TS: FLD1 -> #NM.
    for mode in [TestMode::Flat32, TestMode::Long64] {
        let mut t = TestMachine::new(mode, &[0xd9, 0xe8, 0xf4]);
        t.cpu.s.cr0 |= cr::CR0_TS;
        assert_ne!(t.run(10), StopReason::Halted);
        assert_eq!(t.cpu.exceptions[7], 1);
        assert_eq!(t.cpu.s.fpu.fsw, 0);
    }
    // Unmask ZE, divide by zero (sets ES), then FWAIT -> #MF.
    let data = 0x037bu16.to_le_bytes();
    for mode in [TestMode::Flat32, TestMode::Long64] {
        let t = run(
            mode,
            &[0xd9, 0x2b, 0xd9, 0xe8, 0xd9, 0xee, 0xde, 0xf9, 0x9b],
            &data,
        );
        assert_eq!(t.cpu.exceptions[16], 1);
        assert_ne!(t.cpu.s.fpu.fsw & super::ES, 0);
        // The unmasked ZE left the destination unchanged.
        assert_eq!(st(&t, 0), 0);
    }
}

#[test]
fn transcendentals_match_reference_values() {
    // FLD1; FPATAN (atan(1/1) = pi/4) -> 0x3FFE_C90FDAA22168C235 rounded.
    both(&[0xd9, 0xe8, 0xd9, 0xe8, 0xd9, 0xf3], &[], |t| {
        assert_eq!(st(t, 0), 0x3FFE_C90F_DAA2_2168_C235)
    });
    // FLD1; FLD1; FYL2X: 1 * log2(1) = 0.
    both(&[0xd9, 0xe8, 0xd9, 0xe8, 0xd9, 0xf1], &[], |t| {
        assert_eq!(st(t, 0) & !(1 << 79), 0)
    });
    // FLDZ; FCOS = 1; FLD1; FSIN ~ 0.841470984807896506652502321630...
    both(
        &[0xd9, 0xee, 0xd9, 0xff, 0xd9, 0xe8, 0xd9, 0xfe],
        &[],
        |t| {
            assert_eq!(st(t, 1), 0x3FFF_8000_0000_0000_0000);
            let s = st(t, 0);
            assert_eq!(s >> 64, 0x3FFE);
            // 0.8414709848078965066525 = 0xD76AA47848677021 (+/- 1 ulp).
            assert!((s as u64).abs_diff(0xD76A_A478_4867_7021) <= 1, "{s:#x}");
        },
    );
}

#[test]
fn unmasked_overflow_delivers_bias_adjusted_result() {
    // FLDCW (OE unmasked); FLD tbyte [ebx] (2^16000); FMUL st, st -> 2^32000 / 2^24576.
    let mut d = 0x0377u16.to_le_bytes().to_vec();
    d.resize(16, 0);
    d.extend_from_slice(&(((0x3FFF_u128 + 16000) << 64) | (1 << 63)).to_le_bytes()[..10]);
    both(&[0xd9, 0x2b, 0xdb, 0x6b, 0x10, 0xd8, 0xc8], &d, |t| {
        assert_eq!(st(t, 0), ((0x3FFF_u128 + 32000 - 24576) << 64) | (1 << 63));
        assert_eq!(t.cpu.s.fpu.fsw & 0x80bf, 0x8088);
    });
}

#[test]
fn last_instruction_pointers_and_opcode() {
    // FLD1; FADD qword [ebx] -> FOP = 0x003 (DC /0 with ModR/M 03 -> (4 << 8) | 0x03), FDP = EBX.
    both(
        &[0xd9, 0xe8, 0xdc, 0x03],
        &1.0f64.to_bits().to_le_bytes(),
        |t| {
            let f = &t.cpu.s.fpu;
            assert_eq!(f.fop, 0x403);
            assert_eq!(f.fdp, DATA);
            assert_eq!(f.fip, crate::testing::CODE_BASE + 2);
        },
    );
}
