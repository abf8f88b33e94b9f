//! SSE4.1 / SSE4.2 / CRC32 conformance tests with values from the SDM definitions, run in
//! Flat32 and Long64 through [`TestMachine`]. Memory operands use [EBX]/[RBX].

use super::tests::{both, run, set_x, x};
use crate::cpu::cpuid::bits::ecx1;
use crate::testing::{TestMachine, TestMode};
use jit::abi::{cr, flags as fl};

fn ps(v: [f32; 4]) -> u128 {
    v.iter()
        .enumerate()
        .fold(0u128, |a, (i, f)| a | u128::from(f.to_bits()) << (32 * i))
}

fn lanes_ps(v: u128) -> [f32; 4] {
    [0, 1, 2, 3].map(|i| f32::from_bits((v >> (32 * i)) as u32))
}

/// ROUNDPS xmm0, xmm1, imm8.
fn roundps(imm: u8, mxcsr: u32, src: [f32; 4]) -> TestMachine {
    run(
        TestMode::Long64,
        &[0x66, 0x0f, 0x3a, 0x08, 0xc1, imm],
        &[],
        |t| {
            t.cpu.s.mxcsr = mxcsr;
            set_x(t, 0, 0x5555);
            set_x(t, 1, ps(src));
        },
    )
}

#[test]
fn round_modes_from_imm8_and_mxcsr() {
    let src = [2.5, -2.5, 1.5, -0.3];
    // imm8[1:0]: nearest-even, down, up, toward zero (SDM Vol. 2B Table 4-18).
    for (imm, want) in [
        (0u8, [2.0, -2.0, 2.0, -0.0]),
        (1, [2.0, -3.0, 1.0, -1.0]),
        (2, [3.0, -2.0, 2.0, -0.0]),
        (3, [2.0, -2.0, 1.0, -0.0]),
    ] {
        let t = roundps(imm, 0x1f80, src);
        let got = lanes_ps(x(&t, 0));
        assert_eq!(got, want, "imm {imm}");
        // -0.3 rounds to -0.0, not +0.0.
        if imm != 1 {
            assert!(got[3].is_sign_negative());
        }
        assert_eq!(t.cpu.s.mxcsr & 0x3f, 0x20, "PE without imm8[3]");
    }
    // imm8[2] = 1: MXCSR.RC (up) wins over imm8[1:0] (toward zero).
    let t = roundps(0x07, 0x1f80 | 2 << 13, src);
    assert_eq!(lanes_ps(x(&t, 0)), [3.0, -2.0, 2.0, -0.0]);
    let t = roundps(0x04, 0x1f80 | 1 << 13, src);
    assert_eq!(lanes_ps(x(&t, 0)), [2.0, -3.0, 1.0, -1.0]);
    // imm8[3] = 1: precision exception suppressed (not even flagged).
    let t = roundps(0x08, 0x1f80, src);
    assert_eq!(lanes_ps(x(&t, 0)), [2.0, -2.0, 2.0, -0.0]);
    assert_eq!(t.cpu.s.mxcsr & 0x3f, 0);
    // Exact integers raise nothing.
    let t = roundps(0x00, 0x1f80, [3.0, -7.0, 0.0, 1e30]);
    assert_eq!(lanes_ps(x(&t, 0)), [3.0, -7.0, 0.0, 1e30]);
    assert_eq!(t.cpu.s.mxcsr & 0x3f, 0);
    // Unmasked PE (MXCSR.PM = 0): #XM, destination unchanged; with imm8[3] no fault.
    let t = roundps(0x00, 0x1f80 & !0x1000, src);
    assert_eq!(t.cpu.exceptions[19], 1);
    assert_eq!(x(&t, 0), 0x5555);
    let t = roundps(0x08, 0x1f80 & !0x1000, src);
    assert_eq!(t.cpu.exceptions[19], 0);
    assert_eq!(lanes_ps(x(&t, 0)), [2.0, -2.0, 2.0, -0.0]);
}

#[test]
fn round_scalar_nan_and_daz() {
    // ROUNDSS xmm0, xmm1, 0: SNaN -> QNaN with IE; upper lanes of xmm0 kept.
    both(
        &[0x66, 0x0f, 0x3a, 0x0a, 0xc1, 0x00],
        &[],
        |t| {
            set_x(t, 0, 0x1111_2222_3333_4444_5555_6666_0000_0000);
            set_x(t, 1, 0x7fa0_0001);
        },
        |t| {
            assert_eq!(x(t, 0), 0x1111_2222_3333_4444_5555_6666_7fe0_0001);
            assert_eq!(t.cpu.s.mxcsr & 0x3f, 0x01);
        },
    );
    // ROUNDSD xmm0, [ebx], 0x0a (up, no PE) on 1.25 -> 2.0; with DAZ a denormal -> +0.0.
    both(
        &[0x66, 0x0f, 0x3a, 0x0b, 0x03, 0x0a],
        &1.25f64.to_bits().to_le_bytes(),
        |_| {},
        |t| {
            assert_eq!(x(t, 0) as u64, 2.0f64.to_bits());
            assert_eq!(t.cpu.s.mxcsr & 0x3f, 0);
        },
    );
    both(
        &[0x66, 0x0f, 0x3a, 0x0b, 0x03, 0x02],
        &1u64.to_le_bytes(),
        |t| t.cpu.s.mxcsr = 0x1f80 | 0x40,
        |t| {
            assert_eq!(x(t, 0) as u64, 0);
            assert_eq!(t.cpu.s.mxcsr & 0x3f, 0);
        },
    );
}

#[test]
fn dot_products() {
    // DPPS xmm0, xmm1, 0xf1: (1,2,3,4).(5,6,7,8) = 70 in lane 0; 0x72: lanes 0-2, to lane 1.
    // DPPD xmm2, xmm3, 0x33: 1.5*2 + 2*4 = 11 in both lanes.
    both(
        &[
            0x66, 0x0f, 0x3a, 0x40, 0xc1, 0xf1, 0x66, 0x0f, 0x3a, 0x40, 0xe1, 0x72, 0x66, 0x0f,
            0x3a, 0x41, 0xd3, 0x33,
        ],
        &[],
        |t| {
            set_x(t, 0, ps([1.0, 2.0, 3.0, 4.0]));
            set_x(t, 4, ps([1.0, 2.0, 3.0, 4.0]));
            set_x(t, 1, ps([5.0, 6.0, 7.0, 8.0]));
            set_x(
                t,
                2,
                u128::from(1.5f64.to_bits()) | u128::from(2.0f64.to_bits()) << 64,
            );
            set_x(
                t,
                3,
                u128::from(2.0f64.to_bits()) | u128::from(4.0f64.to_bits()) << 64,
            );
        },
        |t| {
            assert_eq!(lanes_ps(x(t, 0)), [70.0, 0.0, 0.0, 0.0]);
            assert_eq!(lanes_ps(x(t, 4)), [0.0, 38.0, 0.0, 0.0]);
            let e = u128::from(11.0f64.to_bits());
            assert_eq!(x(t, 2), e | e << 64);
            assert_eq!(t.cpu.s.mxcsr & 0x3f, 0);
        },
    );
}

#[test]
fn sse41_integer_samples() {
    // PHMINPOSUW xmm0, xmm1; INSERTPS xmm2, xmm3, 0x98; PEXTRB eax, xmm1, 0x14 (index 4);
    // PMOVSXBW xmm4, [ebx]; MPSADBW xmm5, xmm6, 0; PTEST xmm6, xmm6.
    let code = [
        0x66, 0x0f, 0x38, 0x41, 0xc1, 0x66, 0x0f, 0x3a, 0x21, 0xd3, 0x98, 0x66, 0x0f, 0x3a, 0x14,
        0xc8, 0x14, 0x66, 0x0f, 0x38, 0x20, 0x23, 0x66, 0x0f, 0x3a, 0x42, 0xee, 0x00, 0x66, 0x0f,
        0x38, 0x17, 0xf6,
    ];
    both(
        &code,
        &[0x80, 0x7f, 0xff, 0x01, 0, 0, 0, 0],
        |t| {
            t.cpu.s.gpr[0] = u64::MAX;
            set_x(
                t,
                1,
                0xffff_0007_0003_0009_0003_0005u128 | 0xabcd_abcd << 96,
            );
            set_x(t, 2, 0x4444_4444_3333_3333_2222_2222_1111_1111);
            set_x(t, 3, 0xdddd_dddd_cccc_cccc_bbbb_bbbb_aaaa_aaaa);
            set_x(t, 5, (0..16).fold(0u128, |a, i| a | (i as u128) << (8 * i)));
            set_x(t, 6, 0x0302_0100);
        },
        |t| {
            assert_eq!(x(t, 0), 0x0001_0003);
            assert_eq!(x(t, 2), 0x0000_0000_3333_3333_cccc_cccc_1111_1111);
            assert_eq!(t.gpr(0), 0x09, "byte 4 of xmm1, zero-extended");
            assert_eq!(x(t, 4) as u64, 0x0001_ffff_007f_ff80);
            let want = (0..8).fold(0u128, |a, i| a | ((4 * i) as u128) << (16 * i));
            assert_eq!(x(t, 5), want);
            // PTEST of a nonzero value with itself: ZF = 0, CF = 1.
            assert_eq!(t.cpu.s.rflags & (fl::ZF | fl::CF), fl::CF);
        },
    );
}

#[test]
fn string_compare_index_and_mask() {
    let s = |t: &str| {
        let mut b = [0u8; 16];
        b[..t.len()].copy_from_slice(t.as_bytes());
        u128::from_le_bytes(b)
    };
    // PCMPISTRI xmm0, xmm1, 0x0c (equal ordered): "lo" in "hello world" -> ECX = 3.
    both(
        &[0x66, 0x0f, 0x3a, 0x63, 0xc1, 0x0c],
        &[],
        |t| {
            t.cpu.s.gpr[1] = u64::MAX;
            set_x(t, 0, s("lo"));
            set_x(t, 1, s("hello world"));
        },
        |t| {
            assert_eq!(t.gpr(1), 3);
            let f = t.cpu.s.rflags & fl::STATUS;
            assert_eq!(f, fl::CF | fl::ZF | fl::SF);
        },
    );
    // PCMPESTRM xmm1, xmm2, 0x40 (equal any, byte mask) with EAX = 3, EDX = -5: the set
    // "abc" in "xaybz" -> bytes 1 and 3 of XMM0.
    both(
        &[0x66, 0x0f, 0x3a, 0x60, 0xca, 0x40],
        &[],
        |t| {
            t.cpu.s.gpr[0] = 3;
            t.cpu.s.gpr[2] = (-5i64) as u64;
            set_x(t, 1, s("abcdefghijklmnop"));
            set_x(t, 2, s("xaybzccccccccccc"));
        },
        |t| {
            assert_eq!(x(t, 0), 0xff00_ff00);
            assert_eq!(t.cpu.s.rflags & fl::STATUS, fl::CF | fl::ZF | fl::SF);
        },
    );
}

#[test]
fn crc32_known_vectors() {
    use crate::cpu::integer::bits::crc32c;
    let bytes = |d: &[u8]| d.iter().fold(!0u32, |c, &b| crc32c(c, u64::from(b), 1)) ^ !0;
    // CRC-32C check value and the RFC 3720 §B.4 iSCSI vectors.
    assert_eq!(bytes(b"123456789"), 0xe306_9283);
    assert_eq!(bytes(&[0; 32]), 0x8a91_36aa);
    assert_eq!(bytes(&[0xff; 32]), 0x62a8_ab43);
    let inc: Vec<u8> = (0..32).collect();
    assert_eq!(bytes(&inc), 0x46dd_794e);
    // The same through the guest: dword, dword, byte / word x4, byte / (64-bit) qword, byte.
    let dwords = [
        0xf2, 0x0f, 0x38, 0xf1, 0x03, 0xf2, 0x0f, 0x38, 0xf1, 0x43, 0x04, 0xf2, 0x0f, 0x38, 0xf0,
        0x43, 0x08,
    ];
    let words = [
        0x66, 0xf2, 0x0f, 0x38, 0xf1, 0x03, 0x66, 0xf2, 0x0f, 0x38, 0xf1, 0x43, 0x02, 0x66, 0xf2,
        0x0f, 0x38, 0xf1, 0x43, 0x04, 0x66, 0xf2, 0x0f, 0x38, 0xf1, 0x43, 0x06, 0xf2, 0x0f, 0x38,
        0xf0, 0x43, 0x08,
    ];
    for code in [&dwords[..], &words[..]] {
        both(
            code,
            b"123456789",
            |t| t.cpu.s.gpr[0] = 0xffff_ffff,
            |t| assert_eq!(t.gpr(0) as u32 ^ !0, 0xe306_9283),
        );
    }
    // CRC32 rax, qword [rbx]; CRC32 rax, byte [rbx+8]: the upper half of RAX is cleared.
    let t = run(
        TestMode::Long64,
        &[
            0xf2, 0x48, 0x0f, 0x38, 0xf1, 0x03, 0xf2, 0x48, 0x0f, 0x38, 0xf0, 0x43, 0x08,
        ],
        b"123456789",
        |t| t.cpu.s.gpr[0] = 0xdead_beef_ffff_ffff,
    );
    assert_eq!(t.gpr(0), u64::from(!0xe306_9283u32));
    // Flags are unaffected; LOCK is #UD.
    let t = run(
        TestMode::Long64,
        &[0xf2, 0x0f, 0x38, 0xf0, 0xc1],
        &[],
        |t| t.cpu.s.rflags |= fl::CF | fl::ZF | fl::OF,
    );
    assert_eq!(
        t.cpu.s.rflags & (fl::CF | fl::ZF | fl::OF),
        fl::CF | fl::ZF | fl::OF
    );
    let t = run(
        TestMode::Long64,
        &[0xf0, 0xf2, 0x0f, 0x38, 0xf1, 0x03],
        &[],
        |_| {},
    );
    assert_eq!(t.cpu.exceptions[6], 1);
}

#[test]
fn sse4_availability_faults() {
    let ptest = [0x66, 0x0f, 0x38, 0x17, 0xc1];
    for mode in [TestMode::Flat32, TestMode::Long64] {
        // CR4.OSFXSR = 0 -> #UD; CR0.EM -> #UD; CR0.TS -> #NM; LOCK -> #UD.
        let t = run(mode, &ptest, &[], |t| t.cpu.s.cr4 &= !cr::CR4_OSFXSR);
        assert_eq!(t.cpu.exceptions[6], 1);
        let t = run(mode, &ptest, &[], |t| t.cpu.s.cr0 |= cr::CR0_EM);
        assert_eq!(t.cpu.exceptions[6], 1);
        let t = run(mode, &ptest, &[], |t| t.cpu.s.cr0 |= cr::CR0_TS);
        assert_eq!(t.cpu.exceptions[7], 1);
        let t = run(mode, &[0xf0, 0x66, 0x0f, 0x38, 0x17, 0xc1], &[], |_| {});
        assert_eq!(t.cpu.exceptions[6], 1);
        // MOVNTDQA needs a 16-byte aligned operand; PCMPISTRI does not.
        let t = run(mode, &[0x66, 0x0f, 0x38, 0x2a, 0x43, 0x01], &[0; 32], |t| {
            set_x(t, 0, 9)
        });
        assert_eq!(t.cpu.exceptions[13], 1);
        assert_eq!(x(&t, 0), 9);
        let t = run(
            mode,
            &[0x66, 0x0f, 0x3a, 0x63, 0x43, 0x01, 0x00],
            &[0; 32],
            |_| {},
        );
        assert_eq!(t.cpu.exceptions[13], 0);
        assert_eq!(t.gpr(1), 16, "an empty arg1 matches nothing (equal any)");
    }
}

#[test]
fn cpuid_advertises_x86_64_v2() {
    // MOV EAX, 1; CPUID: leaf 1 ECX has SSE3, SSSE3, CX16, SSE4.1, SSE4.2, POPCNT.
    both(
        &[0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2],
        &[],
        |_| {},
        |t| {
            let ecx = t.gpr(1) as u32;
            for b in [
                ecx1::SSE3,
                ecx1::SSSE3,
                ecx1::CX16,
                ecx1::SSE41,
                ecx1::SSE42,
                ecx1::POPCNT,
            ] {
                assert_ne!(ecx & b, 0, "bit {b:#x}");
            }
            // Not implemented: no AVX, XSAVE, MOVBE, PCLMULQDQ.
            assert_eq!(ecx & (ecx1::XSAVE | ecx1::MOVBE | ecx1::PCLMULQDQ), 0);
        },
    );
}
