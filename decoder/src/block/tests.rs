use iced_x86::Mnemonic;

use crate::testmem::TestMem;
use crate::{
    scan_block, scan_superblock, BlockEnd, DecodeError, FetchFault, FetchFaultKind, InvalidKind,
    Mode,
};

fn mnemonics(b: &crate::Block) -> Vec<Mnemonic> {
    b.insns.iter().map(|i| i.insn.mnemonic()).collect()
}

#[test]
fn stops_after_a_jump_and_includes_it() {
    // nop; inc eax; add eax, ebx; jmp $; nop
    let mut mem = TestMem::new();
    mem.write(0x1100, &[0x90, 0x40, 0x01, 0xd8, 0xeb, 0xfe, 0x90]);
    let b = scan_block(Mode::Bits32, 0, 0x1100, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(
        mnemonics(&b),
        [Mnemonic::Nop, Mnemonic::Inc, Mnemonic::Add, Mnemonic::Jmp]
    );
    assert_eq!(b.end, BlockEnd::ControlTransfer);
    assert_eq!((b.start_ip, b.end_ip, b.byte_len), (0x1100, 0x1106, 6));
    assert_eq!(b.start_linear, 0x1100);
    assert_eq!(b.pages(), vec![0x1000]);
    assert_eq!(b.last().map(|i| i.insn.near_branch_target()), Some(0x1104));
}

#[test]
fn stops_at_a_page_boundary_without_fetching_the_next_page() {
    let mut mem = TestMem::new();
    mem.write(0x1ffc, &[0x90; 4]);
    mem.write(0x2000, &[0x90; 16]);
    let b = scan_block(Mode::Bits64, 0, 0x1ffc, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(b.insns.len(), 4);
    assert_eq!(b.end, BlockEnd::PageBoundary);
    assert_eq!(b.end_ip, 0x2000);
    assert_eq!(b.pages(), vec![0x1000]);
    assert!(
        mem.requests.iter().all(|&(a, _)| a < 0x2000),
        "{:x?}",
        mem.requests
    );
}

#[test]
fn straddling_instruction_is_the_last_one_and_the_block_spans_two_pages() {
    let mut mem = TestMem::new();
    // nop; nop; mov eax, 0x12345678 (3 bytes in the first page, 2 in the second); nop
    mem.write(0x1ffb, &[0x90, 0x90, 0xb8, 0x78, 0x56, 0x34, 0x12, 0x90]);
    let b = scan_block(Mode::Bits32, 0, 0x1ffb, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Nop, Mnemonic::Nop, Mnemonic::Mov]);
    assert_eq!(b.insns[2].insn.immediate32(), 0x1234_5678);
    assert_eq!(b.end, BlockEnd::PageBoundary);
    assert_eq!((b.byte_len, b.end_ip), (7, 0x2002));
    assert_eq!(b.pages(), vec![0x1000, 0x2000]);
}

#[test]
fn straddling_instruction_on_a_missing_page_ends_the_block_before_it() {
    let mut mem = TestMem::new();
    mem.write(0x1ffb, &[0x90, 0x90, 0xb8, 0x78, 0x56]);
    let b = scan_block(Mode::Bits32, 0, 0x1ffb, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Nop, Mnemonic::Nop]);
    assert_eq!(
        b.end,
        BlockEnd::FetchFault(FetchFault {
            addr: 0x2000,
            kind: FetchFaultKind::PageFault { error_code: 0x10 }
        })
    );
    assert_eq!(b.end_ip, 0x1ffd);
    // The same instruction first in a block: the fault is the result.
    let r = scan_block(Mode::Bits32, 0, 0x1ffd, &mut |a, x| mem.fetch(a, x), 64);
    assert!(
        matches!(r, Err(DecodeError::Fetch(FetchFault { addr: 0x2000, .. }))),
        "{r:?}"
    );
}

#[test]
fn first_instruction_fault_is_an_error() {
    let mut mem = TestMem::new();
    mem.map(0x1000);
    mem.unmap(0x1000);
    let r = scan_block(Mode::Bits16, 0, 0x1000, &mut |a, x| mem.fetch(a, x), 64);
    assert!(matches!(
        r,
        Err(DecodeError::Fetch(FetchFault { addr: 0x1000, .. }))
    ));
}

#[test]
fn stops_at_cpuid_and_includes_it() {
    let mut mem = TestMem::new();
    mem.write(0x4000, &[0x31, 0xc0, 0x0f, 0xa2, 0x90, 0x90]); // xor eax,eax; cpuid; nop
    let b = scan_block(Mode::Bits64, 0, 0x4000, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Xor, Mnemonic::Cpuid]);
    assert_eq!(b.end, BlockEnd::RingLayer);
    assert_eq!(b.end_ip, 0x4004);
}

#[test]
fn stops_at_privileged_and_iopl_sensitive_instructions() {
    for (bytes, m) in [
        (&[0x90, 0x0f, 0x22, 0xd8, 0x90][..], Mnemonic::Mov), // mov cr3, eax
        (&[0x90, 0xfa, 0x90], Mnemonic::Cli),
        (&[0x90, 0xe6, 0x80, 0x90], Mnemonic::Out),
        (&[0x90, 0x9d, 0x90], Mnemonic::Popfd),
    ] {
        let mut mem = TestMem::new();
        mem.write(0x4000, bytes);
        let b = scan_block(Mode::Bits32, 0, 0x4000, &mut |a, x| mem.fetch(a, x), 64).unwrap();
        assert_eq!(mnemonics(&b), [Mnemonic::Nop, m]);
        assert_eq!(b.end, BlockEnd::RingLayer);
    }
}

#[test]
fn stops_at_max_insns() {
    let mut mem = TestMem::new();
    mem.write(0x1000, &[0x90; 100]);
    let b = scan_block(Mode::Bits32, 0, 0x1000, &mut |a, x| mem.fetch(a, x), 5).unwrap();
    assert_eq!(
        (b.insns.len(), b.end, b.end_ip),
        (5, BlockEnd::MaxInsns, 0x1005)
    );
    // At least one instruction is always decoded.
    let b = scan_block(Mode::Bits32, 0, 0x1000, &mut |a, x| mem.fetch(a, x), 0).unwrap();
    assert_eq!((b.insns.len(), b.end), (1, BlockEnd::MaxInsns));
}

#[test]
fn invalid_instruction_is_included_and_ends_the_block() {
    let mut mem = TestMem::new();
    mem.write(0x1000, &[0x90, 0x06, 0x90]);
    let b = scan_block(Mode::Bits64, 0, 0x1000, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(b.insns.len(), 2);
    assert_eq!(b.end, BlockEnd::Invalid);
    assert_eq!(b.insns[1].invalid, Some(InvalidKind::Opcode));
    assert_eq!(b.insns[1].ip(), 0x1001);
    // Same bytes in 32-bit mode: push es is sensitive.
    let b = scan_block(Mode::Bits32, 0, 0x1000, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!((b.insns.len(), b.end), (2, BlockEnd::RingLayer));
}

#[test]
fn sixteen_bit_ip_wrap_ends_the_block() {
    // CS base 0x10800: IP 0xFFFE is linear 0x207FE, mid-page; IP 0 is linear 0x10800.
    let mut mem = TestMem::new();
    mem.write(0x207FE, &[0x90, 0x90, 0x90]);
    mem.write(0x10800, &[0x90; 4]);
    let b = scan_block(
        Mode::Real16,
        0x10800,
        0xFFFE,
        &mut |a, x| mem.fetch(a, x),
        64,
    )
    .unwrap();
    assert_eq!(
        (b.insns.len(), b.end, b.end_ip),
        (2, BlockEnd::PageBoundary, 0)
    );
    assert_eq!(b.start_linear, 0x207FE);
}

#[test]
fn superblock_goes_on_past_jcc_and_stops_at_jmp() {
    // inc eax; jz +2; inc ebx; jb +0; inc ecx; jmp $; nop
    let mut mem = TestMem::new();
    mem.write(
        0x1100,
        &[0x40, 0x74, 0x02, 0x43, 0x72, 0x00, 0x41, 0xeb, 0xfe, 0x90],
    );
    let b = scan_superblock(Mode::Bits32, 0, 0x1100, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(
        mnemonics(&b),
        [
            Mnemonic::Inc,
            Mnemonic::Je,
            Mnemonic::Inc,
            Mnemonic::Jb,
            Mnemonic::Inc,
            Mnemonic::Jmp
        ]
    );
    assert_eq!(b.end, BlockEnd::ControlTransfer);
    assert_eq!((b.start_ip, b.end_ip, b.byte_len), (0x1100, 0x1109, 9));
    // The plain scan stops at the first Jcc.
    let p = scan_block(Mode::Bits32, 0, 0x1100, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(p.insns.len(), 2);
}

#[test]
fn superblock_does_not_go_past_loop_jrcxz_or_the_page_or_the_limit() {
    let mut mem = TestMem::new();
    // loop $-2 (LOOP is not a Jcc); inc eax
    mem.write(0x1100, &[0xe2, 0xfe, 0x40]);
    let b = scan_superblock(Mode::Bits64, 0, 0x1100, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Loop]);
    // jrcxz +0; inc eax
    mem.write(0x1200, &[0xe3, 0x00, 0x40]);
    let b = scan_superblock(Mode::Bits64, 0, 0x1200, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Jrcxz]);
    // A Jcc ending exactly at the page end: its fall-through is in the next page.
    mem.write(0x1ffe, &[0x74, 0x00]);
    mem.write(0x2000, &[0x40; 4]);
    let b = scan_superblock(Mode::Bits64, 0, 0x1ffe, &mut |a, x| mem.fetch(a, x), 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Je]);
    assert!(mem.requests.iter().all(|&(a, _)| a < 0x2000));
    // The instruction limit counts every segment: jz +0 repeated.
    mem.write(0x1400, &[0x74, 0x00].repeat(10));
    let b = scan_superblock(Mode::Bits64, 0, 0x1400, &mut |a, x| mem.fetch(a, x), 5).unwrap();
    assert_eq!(b.insns.len(), 5);
    assert_eq!(b.end, BlockEnd::ControlTransfer);
    assert_eq!(b.byte_len, 10);
}

#[test]
fn superblock_stops_after_a_jcc_whose_fall_through_cannot_be_fetched() {
    // jz +0 where the next bytes cannot be fetched (a fetch callback that refuses them, as a
    // segment limit would): the Jcc is the last instruction; the fault is not recorded.
    let mut mem = TestMem::new();
    mem.write(0x1100, &[0x74, 0x00]);
    let mut fetch = |a: u64, x: &mut [u8]| {
        if a >= 0x1102 {
            Err(FetchFault {
                addr: a,
                kind: FetchFaultKind::GeneralProtection,
            })
        } else {
            mem.fetch(a, x)
        }
    };
    let b = scan_superblock(Mode::Bits64, 0, 0x1100, &mut fetch, 64).unwrap();
    assert_eq!(mnemonics(&b), [Mnemonic::Je]);
    assert_eq!(b.end, BlockEnd::ControlTransfer);
}
