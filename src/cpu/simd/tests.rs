//! MMX/SSE conformance tests with SDM examples, run in Flat32 and Long64 through
//! [`TestMachine`]. Memory operands use [EBX]/[RBX] (data at 0x2000).

use super::{mm_get, xmm_get};
use crate::testing::{TestMachine, TestMode};
use jit::abi::cr;

pub(super) const DATA: u64 = 0x2000;

pub(super) fn run(
    mode: TestMode,
    code: &[u8],
    data: &[u8],
    setup: impl Fn(&mut TestMachine),
) -> TestMachine {
    let mut c = code.to_vec();
    c.push(0xf4);
    let mut t = TestMachine::new(mode, &c);
    t.cpu.s.cr0 |= cr::CR0_NE | cr::CR0_MP;
    t.cpu.s.cr4 |= cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
    t.cpu.s.gpr[3] = DATA;
    t.mem.write(DATA, data).unwrap();
    setup(&mut t);
    t.run(1000);
    t
}

pub(super) fn both(
    code: &[u8],
    data: &[u8],
    setup: impl Fn(&mut TestMachine),
    check: impl Fn(&TestMachine),
) {
    for mode in [TestMode::Flat32, TestMode::Long64] {
        let t = run(mode, code, data, &setup);
        check(&t);
    }
}

pub(super) fn x(t: &TestMachine, i: usize) -> u128 {
    xmm_get(&t.cpu.s.xmm[i])
}

pub(super) fn set_x(t: &mut TestMachine, i: usize, v: u128) {
    t.cpu.s.xmm[i] = super::xmm_split(v);
}

#[test]
fn pshufb_sdm_example() {
    // PSHUFB xmm0, xmm1: reverse bytes, 0x80 zeroes.
    both(
        &[0x66, 0x0f, 0x38, 0x00, 0xc1],
        &[],
        |t| {
            set_x(t, 0, 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100);
            set_x(t, 1, 0x8000_0102_0304_0506_0708_090a_0b0c_0d0f);
        },
        |t| assert_eq!(x(t, 0), 0x0000_0102_0304_0506_0708_090a_0b0c_0d0f),
    );
}

#[test]
fn cvttsd2si_nan_is_integer_indefinite() {
    // CVTTSD2SI eax, xmm0 with a QNaN: 0x80000000, MXCSR.IE set.
    both(
        &[0xf2, 0x0f, 0x2c, 0xc0],
        &[],
        |t| set_x(t, 0, u128::from(f64::NAN.to_bits())),
        |t| {
            assert_eq!(t.gpr(0), 0x8000_0000);
            assert_eq!(t.cpu.s.mxcsr & 1, 1);
        },
    );
    // CVTSD2SI with RC = nearest: 2.5 -> 2, -1.5 -> -2.
    both(
        &[0xf2, 0x0f, 0x2d, 0xc0, 0xf2, 0x0f, 0x2d, 0xc9],
        &[],
        |t| {
            set_x(t, 0, u128::from(2.5f64.to_bits()));
            set_x(t, 1, u128::from((-1.5f64).to_bits()));
        },
        |t| {
            assert_eq!(t.gpr(0), 2);
            assert_eq!(t.gpr(1) as u32, (-2i32) as u32);
        },
    );
}

#[test]
fn pmaddwd_and_movmskps() {
    // PMADDWD xmm0, [ebx]; MOVMSKPS ecx, xmm2.
    let mut d = Vec::new();
    for w in [5i16, 6, 7, 8, -32768, -32768, 1, 1] {
        d.extend_from_slice(&w.to_le_bytes());
    }
    both(
        &[0x66, 0x0f, 0xf5, 0x03, 0x0f, 0x50, 0xca],
        &d,
        |t| {
            let a: u128 = [1u16, 2, 3, 4, 0x8000, 0x8000, 7, 8]
                .iter()
                .enumerate()
                .fold(0, |acc, (i, &w)| acc | u128::from(w) << (16 * i));
            set_x(t, 0, a);
            set_x(t, 2, 0x8000_0000_0000_0000_8000_0000_3f80_0000);
        },
        |t| {
            assert_eq!(x(t, 0), 0x0000_000f_8000_0000_0000_0035_0000_0011);
            assert_eq!(t.gpr(1), 0b1010);
        },
    );
}

#[test]
fn single_division_rounding_and_flags() {
    // DIVSS xmm0, xmm1 (1/3) under each rounding mode via LDMXCSR [ebx].
    for (rc, want) in [
        (0u32, 0x3eaa_aaab),
        (1, 0x3eaa_aaaa),
        (2, 0x3eaa_aaab),
        (3, 0x3eaa_aaaa),
    ] {
        let mx = 0x1f80 | rc << 13;
        both(
            &[0x0f, 0xae, 0x13, 0xf3, 0x0f, 0x5e, 0xc1],
            &mx.to_le_bytes(),
            |t| {
                set_x(t, 0, 0x1234_5678_0000_0000_0000_0000_3f80_0000);
                set_x(t, 1, 0x4040_0000);
            },
            |t| {
                assert_eq!(x(t, 0), 0x1234_5678_0000_0000_0000_0000_0000_0000 | want);
                assert_eq!(t.cpu.s.mxcsr & 0x3f, 0x20);
            },
        );
    }
}

#[test]
fn daz_ftz_and_minmax() {
    // MULSS with FTZ: tiny product -> +0 with UE|PE.
    both(
        &[0xf3, 0x0f, 0x59, 0xc1],
        &[],
        |t| {
            t.cpu.s.mxcsr = 0x9f80;
            set_x(t, 0, 0x0080_0000);
            set_x(t, 1, 0x3f00_0000);
        },
        |t| {
            assert_eq!(x(t, 0), 0);
            assert_eq!(t.cpu.s.mxcsr & 0x3f, 0x30);
        },
    );
    // MAXPS with a NaN in the first operand returns the second; IE is set.
    both(
        &[0x0f, 0x5f, 0xc1],
        &[],
        |t| {
            set_x(t, 0, 0x7fc0_0000);
            set_x(t, 1, 0x3f80_0000);
        },
        |t| {
            assert_eq!(x(t, 0) as u32, 0x3f80_0000);
            assert_eq!(t.cpu.s.mxcsr & 1, 1);
        },
    );
}

#[test]
fn faults_are_precise() {
    for mode in [TestMode::Flat32, TestMode::Long64] {
        // MOVAPS xmm0, [ebx+1]: misaligned -> #GP(0), xmm0 unchanged.
        let t = run(mode, &[0x0f, 0x28, 0x43, 0x01], &[0xaa; 32], |t| {
            set_x(t, 0, 7)
        });
        assert_eq!(t.cpu.exceptions[13], 1);
        assert_eq!(x(&t, 0), 7);
        // MOVUPS is fine.
        let t = run(mode, &[0x0f, 0x10, 0x43, 0x01], &[0xaa; 32], |_| {});
        assert_eq!(x(&t, 0), u128::from_le_bytes([0xaa; 16]));
        // CR0.TS -> #NM; CR4.OSFXSR = 0 -> #UD; CR0.EM -> #UD.
        let t = run(mode, &[0x0f, 0x58, 0xc1], &[], |t| {
            t.cpu.s.cr0 |= cr::CR0_TS
        });
        assert_eq!(t.cpu.exceptions[7], 1);
        let t = run(mode, &[0x0f, 0x58, 0xc1], &[], |t| {
            t.cpu.s.cr4 &= !cr::CR4_OSFXSR
        });
        assert_eq!(t.cpu.exceptions[6], 1);
        let t = run(mode, &[0x0f, 0x58, 0xc1], &[], |t| {
            t.cpu.s.cr0 |= cr::CR0_EM
        });
        assert_eq!(t.cpu.exceptions[6], 1);
        // Unmasked ZE: DIVSS by zero -> #XM (OSXMMEXCPT) or #UD, destination unchanged,
        // MXCSR.ZE recorded.
        let div = [0xf3, 0x0f, 0x5e, 0xc1];
        let setup = |t: &mut TestMachine| {
            t.cpu.s.mxcsr = 0x1f80 & !0x200;
            set_x(t, 0, 0x3f80_0000);
        };
        let t = run(mode, &div, &[], setup);
        assert_eq!(t.cpu.exceptions[19], 1);
        assert_eq!(x(&t, 0), 0x3f80_0000);
        assert_eq!(t.cpu.s.mxcsr & 0x3f, 0x04);
        let t = run(mode, &div, &[], |t| {
            setup(t);
            t.cpu.s.cr4 &= !cr::CR4_OSXMMEXCPT;
        });
        assert_eq!(t.cpu.exceptions[6], 1);
        // LDMXCSR with a reserved bit -> #GP(0).
        let t = run(mode, &[0x0f, 0xae, 0x13], &0x10000u32.to_le_bytes(), |_| {});
        assert_eq!(t.cpu.exceptions[13], 1);
        assert_eq!(t.cpu.s.mxcsr, 0x1f80);
    }
}

#[test]
fn mmx_aliases_x87() {
    // MOVQ mm1, [ebx]; PADDB mm1, mm1 -> exponent all ones, TOP = 0, tags valid; EMMS empties.
    both(
        &[0x0f, 0x6f, 0x0b, 0x0f, 0xfc, 0xc9],
        &0x0102_0304_0506_0780u64.to_le_bytes(),
        |t| t.cpu.s.fpu.fsw = 5 << 11,
        |t| {
            let f = &t.cpu.s.fpu;
            assert_eq!(mm_get(f, 1), 0x0204_0608_0a0c_0e00);
            assert_eq!(&f.st[1][8..10], &[0xff, 0xff]);
            assert_eq!(f.ftw, 0);
            assert_eq!(f.fsw & 0x3800, 0);
        },
    );
    both(
        &[0x0f, 0x6f, 0x0b, 0x0f, 0x77],
        &[0; 8],
        |_| {},
        |t| assert_eq!(t.cpu.s.fpu.ftw, 0xffff),
    );
}

#[test]
fn fxsave_layout_and_restore() {
    // FLD1; FXSAVE [ebx]; FNINIT; FXRSTOR [ebx].
    both(
        &[0xd9, 0xe8, 0x0f, 0xae, 0x03, 0xdb, 0xe3, 0x0f, 0xae, 0x0b],
        &[0; 512],
        |t| {
            set_x(t, 3, 0x1111_2222_3333_4444_5555_6666_7777_8888);
            t.cpu.s.mxcsr = 0x1fa0;
        },
        |t| {
            let mut img = [0u8; 512];
            t.mem.read(DATA, &mut img).unwrap();
            assert_eq!(u16::from_le_bytes([img[0], img[1]]), 0x037f);
            assert_eq!(u16::from_le_bytes([img[2], img[3]]), 7 << 11);
            assert_eq!(img[4], 0x80); // abridged: physical register 7 valid
            assert_eq!(u32::from_le_bytes(img[24..28].try_into().unwrap()), 0x1fa0);
            assert_eq!(u32::from_le_bytes(img[28..32].try_into().unwrap()), 0xffff);
            assert_eq!(
                &img[32..42],
                &0x3FFF_8000_0000_0000_0000u128.to_le_bytes()[..10]
            );
            assert_eq!(
                u128::from_le_bytes(img[208..224].try_into().unwrap()),
                x(t, 3)
            );
            // Restored state.
            assert_eq!(t.cpu.s.fpu.ftw, 0x3fff);
            assert_eq!(t.cpu.s.fpu.fsw, 7 << 11);
        },
    );
}

#[test]
fn sse3_ssse3_samples() {
    // HADDPS xmm0, xmm1; PALIGNR xmm2, xmm3, 4; PABSW xmm4, xmm5.
    both(
        &[
            0xf2, 0x0f, 0x7c, 0xc1, 0x66, 0x0f, 0x3a, 0x0f, 0xd3, 0x04, 0x66, 0x0f, 0x38, 0x1d,
            0xe5,
        ],
        &[],
        |t| {
            let f = |v: [f32; 4]| {
                v.iter()
                    .enumerate()
                    .fold(0u128, |a, (i, x)| a | u128::from(x.to_bits()) << (32 * i))
            };
            set_x(t, 0, f([1.0, 2.0, 3.0, 4.0]));
            set_x(t, 1, f([10.0, 20.0, 30.0, 40.0]));
            set_x(t, 2, 0x2222_2222_2222_2222_2222_2222_2222_2222);
            set_x(t, 3, 0x3333_3333_3333_3333_3333_3333_4444_4444);
            set_x(t, 5, 0x8000_ffff_0001_7fff);
        },
        |t| {
            let v = x(t, 0);
            let lanes: Vec<f32> = (0..4)
                .map(|i| f32::from_bits((v >> (32 * i)) as u32))
                .collect();
            assert_eq!(lanes, vec![3.0, 7.0, 30.0, 70.0]);
            assert_eq!(x(t, 2), 0x2222_2222_3333_3333_3333_3333_3333_3333);
            assert_eq!(x(t, 4), 0x8000_0001_0001_7fff);
        },
    );
}

#[test]
fn maskmov_writes_selected_bytes() {
    // MASKMOVDQU xmm0, xmm1 to DS:[EDI]/[RDI]; MASKMOVQ mm0, mm1 to [EDI + 16].
    both(
        &[0x66, 0x0f, 0xf7, 0xc1, 0x83, 0xc7, 0x10, 0x0f, 0xf7, 0xc1],
        &[0x55; 32],
        |t| {
            t.cpu.s.gpr[7] = DATA;
            set_x(t, 0, 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100);
            set_x(t, 1, 0x8000_0000_0000_0000_0000_0000_0000_0080);
            super::mm_set(&mut t.cpu.s.fpu, 0, 0x1122_3344_5566_7788);
            super::mm_set(&mut t.cpu.s.fpu, 1, 0x0080_0000_0000_0080);
        },
        |t| {
            let mut b = [0u8; 32];
            t.mem.read(DATA, &mut b).unwrap();
            assert_eq!(b[0], 0x00);
            assert_eq!(b[15], 0x0f);
            assert_eq!(b[1..15], [0x55; 14]);
            assert_eq!(b[16], 0x88);
            assert_eq!(b[22], 0x22);
            assert_eq!(b[17], 0x55);
        },
    );
}

#[test]
fn division_inexact_with_tiny_dividend() {
    // DIVSD xmm0, xmm1 with a dividend near the bottom of the normal range: the quotient is
    // normal and inexact, its residual is below the normal range (found by the host
    // differential test: the FMA residual of the host fast path rounded to zero, hiding PE).
    both(
        &[0xf2, 0x0f, 0x5e, 0xc1],
        &[],
        |t| {
            set_x(t, 0, 0x0061_0061_6162_6380);
            set_x(t, 1, 0x30c5_00d9_4511_d2e7);
        },
        |t| {
            assert_eq!(x(t, 0) as u64, 0x0f89_e726_de70_b36d);
            assert_eq!(t.cpu.s.mxcsr & 0x3f, 0x20);
        },
    );
}
