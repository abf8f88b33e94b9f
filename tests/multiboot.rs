//! A Multiboot v1 kernel (a.out-kludge header, Multiboot 0.6.96 §3.1) booted with
//! `Machine`: the entry sees EAX = 0x2BADB002 and EBX -> the info structure with memory
//! information, and reports through isa-debug-exit.

use iced_x86::code_asm::*;
use rinx::cli::spec::SerialSpec;
use rinx::machine::{Machine, MachineConfig, Outcome};

const LOAD: u32 = 0x10_0000;

fn image() -> Vec<u8> {
    let entry = LOAD + 32;
    let flags: u32 = (1 << 0) | (1 << 1) | (1 << 16);
    let magic: u32 = 0x1bad_b002;
    let mut hdr = Vec::new();
    for w in [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        LOAD, // header_addr
        LOAD, // load_addr
        0,    // load_end_addr: whole file
        0,    // bss_end_addr: none
        entry,
    ] {
        hdr.extend_from_slice(&w.to_le_bytes());
    }
    let mut a = CodeAssembler::new(32).unwrap();
    let mut bad = a.create_label();
    a.cmp(eax, 0x2bad_b002u32).unwrap();
    a.jne(bad).unwrap();
    a.mov(eax, dword_ptr(ebx)).unwrap(); // info->flags
    a.test(eax, 1).unwrap(); // mem_lower/mem_upper valid
    a.jz(bad).unwrap();
    a.mov(eax, dword_ptr(ebx + 8)).unwrap(); // mem_upper in KiB
    a.cmp(eax, 60 * 1024).unwrap(); // 64 MiB of RAM: about 63 MiB above 1 MiB
    a.jb(bad).unwrap();
    a.mov(al, 0x10).unwrap();
    a.out(0xf4, al).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut bad).unwrap();
    a.mov(al, 0x01).unwrap();
    a.out(0xf4, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(u64::from(entry)).unwrap();
    hdr.extend_from_slice(&code);
    hdr
}

#[test]
fn multiboot_kernel_gets_magic_and_memory_info() {
    let cfg = MachineConfig {
        memory: 64 << 20,
        kernel: Some(image()),
        initrd: None,
        cmdline: "rinx".into(),
        serial: SerialSpec::Null,
        icount: Some(0),
        drives: Vec::new(),
        nics: Vec::new(),
    };
    let mut m = Machine::new(&cfg).unwrap();
    assert_eq!(m.run(), Outcome::Exit((0x10 << 1) | 1));
}
