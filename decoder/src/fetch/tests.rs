use iced_x86::{Code, Mnemonic};

use crate::testmem::{decode_bytes, TestMem};
use crate::{
    decode_at, Class, DecodeError, FetchFault, FetchFaultKind, InvalidKind, Mode, MAX_INSN_LEN,
};

/// `mov eax, 0x12345678` + `add dword [ebx+0x11223344], 0x55667788` style long instructions,
/// one per mode, used for split tests.
fn long_insn(mode: Mode) -> &'static [u8] {
    match mode {
        // mov dword [ebx+0x11223344], 0x55667788 (with 0x66/0x67 in 16-bit: 32-bit forms)
        Mode::Real16 | Mode::Bits16 => &[
            0x66, 0x67, 0xc7, 0x83, 0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55,
        ],
        Mode::Bits32 => &[0xc7, 0x83, 0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55],
        // mov rax, 0x1122334455667788
        Mode::Bits64 => &[0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
    }
}

#[test]
fn split_instruction_decodes_like_unsplit_in_every_mode_and_split_point() {
    for mode in Mode::ALL {
        let bytes = long_insn(mode);
        let whole = decode_bytes(mode, bytes);
        assert_eq!(usize::from(whole.len), bytes.len(), "{mode:?}");
        assert!(whole.invalid.is_none());
        for split in 1..bytes.len() {
            let page2 = 0x0004_0000u64;
            let start = page2 - split as u64;
            let mut mem = TestMem::new();
            mem.write(start, bytes);
            let d = decode_at(mode, 0, start, &mut |a, b| mem.fetch(a, b)).unwrap();
            assert_eq!(d.insn.code(), whole.insn.code(), "{mode:?} split {split}");
            assert_eq!(d.insn.immediate(1), whole.insn.immediate(1));
            assert_eq!(
                d.insn.memory_displacement64(),
                whole.insn.memory_displacement64()
            );
            assert_eq!(d.len, whole.len);
            assert_eq!(d.bytes(), bytes);
            assert_eq!(d.linear, start);
            // Exactly one request per page: the first up to the page end, the second at the
            // next page's base.
            assert_eq!(
                mem.requests.len(),
                2,
                "{mode:?} split {split}: {:x?}",
                mem.requests
            );
            assert_eq!(mem.requests[0], (start, split));
            assert_eq!(mem.requests[1].0, page2);
        }
    }
}

#[test]
fn second_page_missing_faults_at_the_second_page_base() {
    for mode in Mode::ALL {
        let bytes = long_insn(mode);
        for split in 1..bytes.len() {
            let page2 = 0x0004_0000u64;
            let start = page2 - split as u64;
            let mut mem = TestMem::new();
            mem.write(start, &bytes[..split]);
            let r = decode_at(mode, 0, start, &mut |a, b| mem.fetch(a, b));
            assert_eq!(
                r,
                Err(DecodeError::Fetch(FetchFault {
                    addr: page2,
                    kind: FetchFaultKind::PageFault { error_code: 0x10 },
                })),
                "{mode:?} split {split}"
            );
        }
    }
}

#[test]
fn instruction_ending_exactly_at_page_end_does_not_touch_next_page() {
    for mode in Mode::ALL {
        let bytes = long_insn(mode);
        let page2 = 0x0004_0000u64;
        let start = page2 - bytes.len() as u64;
        let mut mem = TestMem::new();
        mem.write(start, bytes);
        let d = decode_at(mode, 0, start, &mut |a, b| mem.fetch(a, b)).unwrap();
        assert_eq!(usize::from(d.len), bytes.len());
        assert!(
            mem.requests.iter().all(|&(a, _)| a < page2),
            "{:x?}",
            mem.requests
        );
        // Also for one-byte instructions in the last byte of a page.
        let mut mem = TestMem::new();
        mem.write(page2 - 1, &[0x90]);
        let d = decode_at(mode, 0, page2 - 1, &mut |a, b| mem.fetch(a, b)).unwrap();
        assert_eq!((d.insn.mnemonic(), d.len), (Mnemonic::Nop, 1));
    }
}

#[test]
fn first_page_missing_faults_at_the_instruction_address() {
    let mut mem = TestMem::new();
    let r = decode_at(Mode::Bits64, 0, 0x7000_1234, &mut |a, b| mem.fetch(a, b));
    assert!(matches!(
        r,
        Err(DecodeError::Fetch(FetchFault {
            addr: 0x7000_1234,
            ..
        }))
    ));
}

#[test]
fn cs_base_is_added_and_linear_addresses_wrap_at_4g_outside_long_mode() {
    // Real mode: CS = 0x1234 -> base 0x12340, IP 0x10.
    let mut mem = TestMem::new();
    mem.write(0x12350, &[0xb8, 0x34, 0x12]); // mov ax, 0x1234
    let d = decode_at(Mode::Real16, 0x12340, 0x10, &mut |a, b| mem.fetch(a, b)).unwrap();
    assert_eq!(
        (d.insn.code(), d.linear, d.ip(), d.next_ip()),
        (Code::Mov_r16_imm16, 0x12350, 0x10, 0x13)
    );
    assert_eq!(mem.requests[0].0, 0x12350);

    // 32-bit: an instruction at linear 0xFFFF_FFFE continues at linear 0.
    let mut mem = TestMem::new();
    mem.write(0xFFFF_FFFE, &[0xb8, 0x78]);
    mem.write(0, &[0x56, 0x34, 0x12]);
    let d = decode_at(Mode::Bits32, 0xFFFF_0000, 0xFFFE, &mut |a, b| {
        mem.fetch(a, b)
    })
    .unwrap();
    assert_eq!(d.insn.code(), Code::Mov_r32_imm32);
    assert_eq!(d.insn.immediate32(), 0x1234_5678);
    assert_eq!(mem.requests, vec![(0xFFFF_FFFE, 2), (0, 13)]);
}

#[test]
fn short_fetch_counts_are_continued_lazily() {
    // A callback that returns one byte at a time (e.g. a CS limit it handles itself).
    let bytes = [0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 0x90];
    let mut calls = Vec::new();
    let mut fetch = |a: u64, buf: &mut [u8]| -> Result<usize, FetchFault> {
        calls.push(a);
        buf[0] = bytes[usize::try_from(a - 0x1000).unwrap()];
        Ok(1)
    };
    let d = decode_at(Mode::Bits64, 0, 0x1000, &mut fetch).unwrap();
    assert_eq!((d.insn.code(), d.len), (Code::Mov_r64_imm64, 10));
    assert_eq!(d.insn.immediate64(), 0x0807_0605_0403_0201);
    // It never asked for the byte after the instruction.
    assert_eq!(calls, (0x1000..0x100a).collect::<Vec<u64>>());
}

#[test]
fn a_stalling_callback_is_an_error_not_a_hang() {
    let r = decode_at(Mode::Bits32, 0, 0x1000, &mut |_, _| Ok(0));
    assert_eq!(r, Err(DecodeError::FetchStalled { addr: 0x1000 }));
}

#[test]
fn sixteen_byte_instruction_is_too_long_gp() {
    // 14 operand-size prefixes + nop (15 bytes) is valid; 15 prefixes + nop (16) is #GP(0).
    for mode in Mode::ALL {
        let mut ok = vec![0x66; 14];
        ok.push(0x90);
        let d = decode_bytes(mode, &ok);
        assert_eq!(
            (d.invalid, usize::from(d.len)),
            (None, MAX_INSN_LEN),
            "{mode:?}"
        );
        assert_eq!(d.insn.mnemonic(), Mnemonic::Nop);

        let mut long = vec![0x66; 15];
        long.push(0x90);
        let d = decode_bytes(mode, &long);
        assert_eq!(d.invalid, Some(InvalidKind::TooLong), "{mode:?}");
        assert_eq!(d.class, Class::INVALID);
        assert_eq!(usize::from(d.len), MAX_INSN_LEN);

        // A short undefined opcode is #UD, not #GP.
        let d = decode_bytes(mode, &[0x0f, 0x04]);
        assert_eq!(d.invalid, Some(InvalidKind::Opcode));
    }
}

#[test]
fn too_long_instruction_never_fetches_a_16th_byte() {
    // 15 prefixes ending exactly at a page end, next page absent: #GP(0), not #PF.
    let mut mem = TestMem::new();
    mem.write(0x2000 - 15, &[0x66; 15]);
    let d = decode_at(Mode::Bits32, 0, 0x2000 - 15, &mut |a, b| mem.fetch(a, b)).unwrap();
    assert_eq!(d.invalid, Some(InvalidKind::TooLong));
    // 15 prefixes straddling into an absent page: the page fault comes first.
    let mut mem = TestMem::new();
    mem.write(0x2000 - 10, &[0x66; 10]);
    let r = decode_at(Mode::Bits32, 0, 0x2000 - 10, &mut |a, b| mem.fetch(a, b));
    assert!(matches!(
        r,
        Err(DecodeError::Fetch(FetchFault { addr: 0x2000, .. }))
    ));
}

#[test]
fn invalid_instruction_keeps_its_address() {
    let mut mem = TestMem::new();
    mem.write(0x5000, &[0x06]);
    let d = decode_at(Mode::Bits64, 0, 0x5000, &mut |a, b| mem.fetch(a, b)).unwrap();
    assert_eq!(
        (d.invalid, d.ip(), d.linear),
        (Some(InvalidKind::Opcode), 0x5000, 0x5000)
    );
    assert!((1..=MAX_INSN_LEN).contains(&usize::from(d.len)));
}

#[test]
fn next_ip_wraps_at_the_code_size() {
    let mut mem = TestMem::new();
    mem.write(0xFFFF, &[0x90]);
    let d = decode_at(Mode::Bits16, 0, 0xFFFF, &mut |a, b| mem.fetch(a, b)).unwrap();
    assert_eq!(d.next_ip(), 0);
    let mut mem = TestMem::new();
    mem.write(0xFFFF_FFFF, &[0x90]);
    let d = decode_at(Mode::Bits32, 0, 0xFFFF_FFFF, &mut |a, b| mem.fetch(a, b)).unwrap();
    assert_eq!(d.next_ip(), 0);
}

#[test]
fn invalid_opcode_at_page_end_is_ud_without_touching_the_next_page() {
    // iced-x86 reads a ModRM byte even for undefined opcodes; the processor does not need it
    // to know that `06` is undefined in 64-bit mode, so there is no #PF on the next page.
    for (mode, bytes) in [
        (Mode::Bits64, &[0x06u8][..]),
        (Mode::Bits64, &[0x48, 0x27]),
        (Mode::Bits32, &[0x0f, 0x04]),
        (Mode::Bits16, &[0x66, 0x0f, 0x04]),
    ] {
        let start = 0x3000 - bytes.len() as u64;
        let mut mem = TestMem::new();
        mem.write(start, bytes);
        let d = decode_at(mode, 0, start, &mut |a, b| mem.fetch(a, b)).unwrap();
        assert_eq!(
            d.invalid,
            Some(InvalidKind::Opcode),
            "{mode:?} {bytes:02x?}"
        );
        assert_eq!(usize::from(d.len), bytes.len());
        assert_eq!((d.ip(), d.linear), (start, start));
        assert!(
            mem.requests.iter().all(|&(a, _)| a < 0x3000),
            "{:x?}",
            mem.requests
        );
    }
    // But an opcode whose validity depends on the ModRM byte needs the next page:
    // `f0 01 /r` is a valid `lock add` with a memory ModRM, #UD with a register one.
    let mut mem = TestMem::new();
    mem.write(0x3000 - 2, &[0xf0, 0x01]);
    let r = decode_at(Mode::Bits32, 0, 0x3000 - 2, &mut |a, b| mem.fetch(a, b));
    assert!(
        matches!(r, Err(DecodeError::Fetch(FetchFault { addr: 0x3000, .. }))),
        "{r:?}"
    );
}

#[test]
fn fifteen_byte_invalid_instructions_are_ud_not_gp() {
    for mode in Mode::ALL {
        // 12 prefixes + undefined `0f 04` + one byte: 15 bytes, undefined opcode -> #UD.
        let mut ud = vec![0x66; 12];
        ud.extend_from_slice(&[0x0f, 0x04, 0x00]);
        assert_eq!(
            decode_bytes(mode, &ud).invalid,
            Some(InvalidKind::Opcode),
            "{mode:?}"
        );
        // 12 prefixes + `lock add ebx, eax`: 15 bytes, LOCK on a register form -> #UD.
        let mut lock = vec![0x66; 12];
        lock.extend_from_slice(&[0xf0, 0x01, 0xc3]);
        assert_eq!(
            decode_bytes(mode, &lock).invalid,
            Some(InvalidKind::Opcode),
            "{mode:?}"
        );
        // 14 prefixes + `0f 04`: the opcode itself is the 16th byte -> #GP(0).
        let mut gp = vec![0x66; 14];
        gp.extend_from_slice(&[0x0f, 0x04]);
        assert_eq!(
            decode_bytes(mode, &gp).invalid,
            Some(InvalidKind::TooLong),
            "{mode:?}"
        );
        // 11 address-size prefixes + `mov r, imm`: 14 bytes with imm16 (16-bit modes) is
        // valid; 16 bytes with imm32 (32/64-bit) is #GP(0).
        let mut mov = vec![0x67; 11];
        mov.extend_from_slice(&[0xb8, 1, 2, 3, 4, 5, 6, 7]);
        let d = decode_bytes(mode, &mov);
        if matches!(mode, Mode::Real16 | Mode::Bits16) {
            assert_eq!((d.invalid, d.len), (None, 14), "{mode:?}");
        } else {
            assert_eq!(d.invalid, Some(InvalidKind::TooLong), "{mode:?}");
        }
    }
}

#[test]
fn fourteen_bytes_at_page_end_need_the_next_page_only_if_the_opcode_is_not_known_undefined() {
    // 14 prefixes at the page end: the 15th byte decides (nop -> valid, anything -> >15 bytes
    // is #GP) so it must be fetched, and the absent page faults.
    let mut mem = TestMem::new();
    mem.write(0x3000 - 14, &[0x66; 14]);
    let r = decode_at(Mode::Bits64, 0, 0x3000 - 14, &mut |a, b| mem.fetch(a, b));
    assert!(
        matches!(r, Err(DecodeError::Fetch(FetchFault { addr: 0x3000, .. }))),
        "{r:?}"
    );
    // 13 prefixes + `06` (undefined in 64-bit mode): #UD without touching the next page.
    let mut bytes = vec![0x66; 13];
    bytes.push(0x06);
    let mut mem = TestMem::new();
    mem.write(0x3000 - 14, &bytes);
    let d = decode_at(Mode::Bits64, 0, 0x3000 - 14, &mut |a, b| mem.fetch(a, b)).unwrap();
    assert_eq!((d.invalid, d.len), (Some(InvalidKind::Opcode), 14));
    assert!(
        mem.requests.iter().all(|&(a, _)| a < 0x3000),
        "{:x?}",
        mem.requests
    );
}

#[test]
fn drop_repeated_prefix_keeps_the_last_copy() {
    let mut b = [0x66, 0x2e, 0x66, 0x90, 0x66];
    assert!(super::drop_repeated_prefix(&mut b));
    assert_eq!(&b[..4], &[0x2e, 0x66, 0x90, 0x66]);
    let mut b = [0x66, 0x2e, 0x90, 0x66];
    assert!(!super::drop_repeated_prefix(&mut b));
}
