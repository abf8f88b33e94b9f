use iced_x86::Mnemonic;

use crate::testmem::decode_bytes;
use crate::{Class, InvalidKind, Mode};

const CT: Class = Class::CONTROL_TRANSFER;
const PRIV: Class = Class::PRIVILEGED;
const IOPL: Class = Class::IOPL_SENSITIVE;
const SENS: Class = Class::SENSITIVE;
const MEM: Class = Class::MEMORY;
const STR: Class = Class::STRING;
const INV: Class = Class::INVALID;
const NONE: Class = Class::NONE;

const fn c(a: Class, b: Class) -> Class {
    a.union(b)
}
const fn c3(a: Class, b: Class, d: Class) -> Class {
    a.union(b).union(d)
}

type Row = (&'static [u8], Mnemonic, Class);

const BITS32: &[Row] = &[
    (&[0x0f, 0x01, 0x10], Mnemonic::Lgdt, c(PRIV, MEM)),
    (&[0x0f, 0x01, 0x18], Mnemonic::Lidt, c(PRIV, MEM)),
    (&[0x0f, 0x01, 0x00], Mnemonic::Sgdt, c(SENS, MEM)),
    (&[0x0f, 0x01, 0x08], Mnemonic::Sidt, c(SENS, MEM)),
    (&[0x0f, 0x00, 0xd0], Mnemonic::Lldt, PRIV),
    (&[0x0f, 0x00, 0xd8], Mnemonic::Ltr, PRIV),
    (&[0x0f, 0x00, 0xc0], Mnemonic::Sldt, SENS),
    (&[0x0f, 0x00, 0xc8], Mnemonic::Str, SENS),
    (&[0x0f, 0x01, 0xe0], Mnemonic::Smsw, SENS),
    (&[0x0f, 0x01, 0xf0], Mnemonic::Lmsw, PRIV),
    (&[0x0f, 0x22, 0xd8], Mnemonic::Mov, PRIV), // mov cr3, eax
    (&[0x0f, 0x20, 0xc0], Mnemonic::Mov, PRIV), // mov eax, cr0
    (&[0x0f, 0x23, 0xf8], Mnemonic::Mov, PRIV), // mov dr7, eax
    (&[0x0f, 0x21, 0xf0], Mnemonic::Mov, PRIV), // mov eax, dr6
    (&[0x0f, 0x06], Mnemonic::Clts, PRIV),
    (&[0x0f, 0x08], Mnemonic::Invd, PRIV),
    (&[0x0f, 0x09], Mnemonic::Wbinvd, PRIV),
    (&[0x0f, 0x01, 0x38], Mnemonic::Invlpg, PRIV),
    (&[0xf4], Mnemonic::Hlt, c(PRIV, CT)),
    (&[0x0f, 0x32], Mnemonic::Rdmsr, PRIV),
    (&[0x0f, 0x30], Mnemonic::Wrmsr, PRIV),
    (&[0x0f, 0x35], Mnemonic::Sysexit, c(PRIV, CT)),
    (&[0x0f, 0x34], Mnemonic::Sysenter, c(SENS, CT)),
    (&[0x0f, 0x05], Mnemonic::Syscall, c(SENS, CT)),
    (&[0x0f, 0x01, 0xca], Mnemonic::Clac, PRIV),
    (&[0x0f, 0x01, 0xd1], Mnemonic::Xsetbv, PRIV),
    (&[0x0f, 0x01, 0xd0], Mnemonic::Xgetbv, SENS),
    (&[0xf3, 0x0f, 0xc7, 0x30], Mnemonic::Vmxon, c(PRIV, MEM)), // via iced is_privileged()
    (&[0x9c], Mnemonic::Pushfd, c(SENS, IOPL)),
    (&[0x9d], Mnemonic::Popfd, c(SENS, IOPL)),
    (&[0xe4, 0x60], Mnemonic::In, IOPL),
    (&[0xec], Mnemonic::In, IOPL),
    (&[0xe6, 0x80], Mnemonic::Out, IOPL),
    (&[0xee], Mnemonic::Out, IOPL),
    (&[0x6c], Mnemonic::Insb, c3(IOPL, STR, MEM)),
    (&[0xf3, 0x6f], Mnemonic::Outsd, c3(IOPL, STR, MEM)),
    (&[0xfa], Mnemonic::Cli, IOPL),
    (&[0xfb], Mnemonic::Sti, IOPL),
    (&[0x0f, 0x0b], Mnemonic::Ud2, CT),
    (&[0x0f, 0xa2], Mnemonic::Cpuid, SENS),
    (&[0x0f, 0x31], Mnemonic::Rdtsc, SENS),
    (&[0x0f, 0x01, 0xf9], Mnemonic::Rdtscp, SENS),
    (&[0x0f, 0x33], Mnemonic::Rdpmc, SENS),
    (&[0xcd, 0x80], Mnemonic::Int, c3(CT, SENS, IOPL)),
    (&[0xcc], Mnemonic::Int3, c(CT, SENS)),
    (&[0xf1], Mnemonic::Int1, c(CT, SENS)),
    (&[0xce], Mnemonic::Into, c(CT, SENS)),
    (&[0xcf], Mnemonic::Iretd, c3(CT, SENS, IOPL)),
    (&[0xea, 0, 0, 0, 0, 0x08, 0], Mnemonic::Jmp, c(CT, SENS)),
    (&[0x9a, 0, 0, 0, 0, 0x08, 0], Mnemonic::Call, c(CT, SENS)),
    (&[0xff, 0x28], Mnemonic::Jmp, c3(CT, SENS, MEM)),
    (&[0xff, 0x18], Mnemonic::Call, c3(CT, SENS, MEM)),
    (&[0xcb], Mnemonic::Retf, c(CT, SENS)),
    (&[0x8e, 0xd8], Mnemonic::Mov, SENS),         // mov ds, ax
    (&[0x8c, 0xc8], Mnemonic::Mov, SENS),         // mov eax, cs
    (&[0x8e, 0x10], Mnemonic::Mov, c(SENS, MEM)), // mov ss, [eax]
    (&[0x1e], Mnemonic::Push, SENS),
    (&[0x1f], Mnemonic::Pop, SENS),
    (&[0x0e], Mnemonic::Push, SENS),
    (&[0x17], Mnemonic::Pop, SENS),
    (&[0x06], Mnemonic::Push, SENS),
    (&[0x0f, 0xa0], Mnemonic::Push, SENS),
    (&[0xc5, 0x00], Mnemonic::Lds, c(SENS, MEM)),
    (&[0x0f, 0xb2, 0x00], Mnemonic::Lss, c(SENS, MEM)),
    (&[0x0f, 0x02, 0xc0], Mnemonic::Lar, SENS),
    (&[0x0f, 0x03, 0xc0], Mnemonic::Lsl, SENS),
    (&[0x0f, 0x00, 0xe0], Mnemonic::Verr, SENS),
    (&[0x0f, 0x00, 0xe8], Mnemonic::Verw, SENS),
    (&[0x63, 0xc0], Mnemonic::Arpl, NONE),
    (&[0x89, 0xd8], Mnemonic::Mov, NONE),
    (&[0x8b, 0x03], Mnemonic::Mov, MEM),
    (&[0xa1, 0, 0, 0, 0], Mnemonic::Mov, MEM),
    (&[0xd7], Mnemonic::Xlatb, MEM),
    (&[0x8d, 0x03], Mnemonic::Lea, NONE),
    (&[0x0f, 0x1f, 0x00], Mnemonic::Nop, NONE),
    (&[0x0f, 0x18, 0x08], Mnemonic::Prefetcht0, NONE),
    (&[0x50], Mnemonic::Push, NONE),
    (&[0xa5], Mnemonic::Movsd, c(STR, MEM)),
    (&[0xf3, 0xa4], Mnemonic::Movsb, c(STR, MEM)),
    (&[0xf2, 0xae], Mnemonic::Scasb, c(STR, MEM)),
    (&[0xeb, 0xfe], Mnemonic::Jmp, CT),
    (&[0x74, 0x00], Mnemonic::Je, CT),
    (&[0xe8, 0, 0, 0, 0], Mnemonic::Call, CT),
    (&[0xc3], Mnemonic::Ret, CT),
    (&[0xc2, 0x04, 0x00], Mnemonic::Ret, CT),
    (&[0xe2, 0xfe], Mnemonic::Loop, CT),
    (&[0xe3, 0xfe], Mnemonic::Jecxz, CT),
    (&[0xff, 0xe0], Mnemonic::Jmp, CT),
    (&[0xff, 0xd0], Mnemonic::Call, CT),
    (&[0xff, 0x10], Mnemonic::Call, c(CT, MEM)),
    (&[0xf0, 0x01, 0x03], Mnemonic::Add, MEM), // lock add [ebx], eax
    (&[0xf0, 0x90], Mnemonic::INVALID, INV),   // LOCK not allowed: #UD
    (&[0xf0, 0x01, 0xc3], Mnemonic::INVALID, INV), // lock with a register destination
    (&[0x0f, 0x04], Mnemonic::INVALID, INV),
    (&[0x0f, 0x01, 0xf8], Mnemonic::INVALID, INV), // swapgs is 64-bit only
];

const BITS64: &[Row] = &[
    (&[0x06], Mnemonic::INVALID, INV),                      // push es
    (&[0x07], Mnemonic::INVALID, INV),                      // pop es
    (&[0x1e], Mnemonic::INVALID, INV),                      // push ds
    (&[0x27], Mnemonic::INVALID, INV),                      // daa
    (&[0x60], Mnemonic::INVALID, INV),                      // pusha
    (&[0xce], Mnemonic::INVALID, INV),                      // into
    (&[0xea, 0, 0, 0, 0, 0x08, 0], Mnemonic::INVALID, INV), // jmp ptr16:32
    (&[0x0f, 0x04], Mnemonic::INVALID, INV),
    (&[0x0f, 0x01, 0xf8], Mnemonic::Swapgs, PRIV),
    (&[0x0f, 0x05], Mnemonic::Syscall, c(SENS, CT)),
    (&[0x48, 0x0f, 0x07], Mnemonic::Sysretq, c(PRIV, CT)),
    (&[0x48, 0xcf], Mnemonic::Iretq, c3(CT, SENS, IOPL)),
    (&[0x9c], Mnemonic::Pushfq, c(SENS, IOPL)),
    (&[0x9d], Mnemonic::Popfq, c(SENS, IOPL)),
    (&[0x0f, 0x22, 0xd8], Mnemonic::Mov, PRIV), // mov cr3, rax
    (&[0x44, 0x0f, 0x22, 0xc0], Mnemonic::Mov, PRIV), // mov cr8, rax
    (&[0x0f, 0x01, 0x10], Mnemonic::Lgdt, c(PRIV, MEM)),
    (&[0x0f, 0x01, 0x00], Mnemonic::Sgdt, c(SENS, MEM)),
    (&[0x48, 0x8b, 0x05, 0, 0, 0, 0], Mnemonic::Mov, MEM), // mov rax, [rip]
    (&[0x48, 0x8d, 0x05, 0, 0, 0, 0], Mnemonic::Lea, NONE),
    (&[0x0f, 0xa0], Mnemonic::Push, SENS), // push fs
    (&[0x0f, 0xa9], Mnemonic::Pop, SENS),  // pop gs
    (&[0xf3, 0x48, 0x0f, 0xae, 0xc0], Mnemonic::Rdfsbase, SENS),
    (&[0x48, 0xff, 0x28], Mnemonic::Jmp, c3(CT, SENS, MEM)), // jmp far m16:64
    (&[0x48, 0xcb], Mnemonic::Retf, c(CT, SENS)),
    (&[0x0f, 0x0b], Mnemonic::Ud2, CT),
    (&[0x63, 0xc0], Mnemonic::Movsxd, NONE),
    (&[0xe4, 0x60], Mnemonic::In, IOPL),
    (&[0xcd, 0x80], Mnemonic::Int, c3(CT, SENS, IOPL)),
    (&[0x0f, 0xa2], Mnemonic::Cpuid, SENS),
    (&[0xf4], Mnemonic::Hlt, c(PRIV, CT)),
    (&[0x48, 0xa5], Mnemonic::Movsq, c(STR, MEM)),
    (&[0xff, 0xe0], Mnemonic::Jmp, CT),
];

const BITS16: &[Row] = &[
    (&[0x0f, 0x01, 0x10], Mnemonic::Lgdt, c(PRIV, MEM)),
    (&[0x9c], Mnemonic::Pushf, c(SENS, IOPL)),
    (&[0x9d], Mnemonic::Popf, c(SENS, IOPL)),
    (&[0xcd, 0x21], Mnemonic::Int, c3(CT, SENS, IOPL)),
    (&[0xcf], Mnemonic::Iret, c3(CT, SENS, IOPL)),
    (&[0xea, 0x00, 0x00, 0x00, 0xf0], Mnemonic::Jmp, c(CT, SENS)),
    (&[0x0f, 0x00, 0xc0], Mnemonic::Sldt, SENS),
    (&[0x0f, 0x02, 0xc0], Mnemonic::Lar, SENS),
    (&[0x63, 0xc0], Mnemonic::Arpl, NONE),
    (&[0xe4, 0x60], Mnemonic::In, IOPL),
    (&[0x8e, 0xd0], Mnemonic::Mov, SENS), // mov ss, ax
    (&[0xa4], Mnemonic::Movsb, c(STR, MEM)),
    (&[0xf3, 0xab], Mnemonic::Stosw, c(STR, MEM)),
    (&[0x8b, 0x00], Mnemonic::Mov, MEM),        // mov ax, [bx+si]
    (&[0x0f, 0x22, 0xc0], Mnemonic::Mov, PRIV), // mov cr0, eax
    (&[0x0f, 0x0b], Mnemonic::Ud2, CT),
    (&[0x0f, 0x04], Mnemonic::INVALID, INV),
    (&[0x0f, 0x05], Mnemonic::Syscall, c(SENS, CT)),
];

const REAL16: &[Row] = &[
    (&[0xfa], Mnemonic::Cli, IOPL),
    (&[0x0f, 0x01, 0x10], Mnemonic::Lgdt, c(PRIV, MEM)), // valid in real mode
    (&[0x0f, 0x20, 0xc0], Mnemonic::Mov, PRIV),          // mov eax, cr0
    (&[0x0f, 0x01, 0xe0], Mnemonic::Smsw, SENS),
    (&[0xcf], Mnemonic::Iret, c3(CT, SENS, IOPL)),
    (&[0xea, 0x00, 0x7c, 0x00, 0x00], Mnemonic::Jmp, c(CT, SENS)),
    (&[0xe8, 0x00, 0x00], Mnemonic::Call, CT),
    // Not recognised in real-address / virtual-8086 mode: kept as the mnemonic, classified #UD.
    (&[0x0f, 0x00, 0xd0], Mnemonic::Lldt, INV),
    (&[0x0f, 0x00, 0xd8], Mnemonic::Ltr, INV),
    (&[0x0f, 0x00, 0xc0], Mnemonic::Sldt, INV),
    (&[0x0f, 0x00, 0xc8], Mnemonic::Str, INV),
    (&[0x0f, 0x00, 0xe0], Mnemonic::Verr, INV),
    (&[0x0f, 0x00, 0xe8], Mnemonic::Verw, INV),
    (&[0x0f, 0x02, 0xc0], Mnemonic::Lar, INV),
    (&[0x0f, 0x03, 0xc0], Mnemonic::Lsl, INV),
    (&[0x63, 0xc0], Mnemonic::Arpl, INV),
    (&[0x0f, 0x04], Mnemonic::INVALID, INV),
];

fn check_table(mode: Mode, rows: &[Row]) {
    let mut failures = Vec::new();
    for (bytes, mnemonic, class) in rows {
        let d = decode_bytes(mode, bytes);
        let ok = d.insn.mnemonic() == *mnemonic
            && d.class == *class
            && (class.contains(INV) || usize::from(d.len) == bytes.len())
            && (d.invalid == Some(InvalidKind::Opcode)) == class.contains(INV);
        if !ok {
            failures.push(format!(
                "{mode:?} {bytes:02x?}: got {:?} {:?} len {} invalid {:?}, want {mnemonic:?} {class:?}",
                d.insn.mnemonic(),
                d.class,
                d.len,
                d.invalid
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn classify_bits32() {
    check_table(Mode::Bits32, BITS32);
}

#[test]
fn classify_bits64() {
    check_table(Mode::Bits64, BITS64);
}

#[test]
fn classify_bits16() {
    check_table(Mode::Bits16, BITS16);
}

#[test]
fn classify_real16() {
    check_table(Mode::Real16, REAL16);
}

#[test]
fn needs_ring_layer_is_the_union_of_the_three_flags() {
    assert!(PRIV.needs_ring_layer());
    assert!(IOPL.needs_ring_layer());
    assert!(SENS.needs_ring_layer());
    assert!(c(MEM, PRIV).needs_ring_layer());
    for other in [NONE, CT, MEM, STR, INV, c3(CT, MEM, STR)] {
        assert!(!other.needs_ring_layer(), "{other:?}");
    }
    assert!(decode_bytes(Mode::Bits32, &[0x0f, 0xa2]).needs_ring_layer());
    assert!(!decode_bytes(Mode::Bits32, &[0x01, 0xd8]).needs_ring_layer());
}

#[test]
fn class_set_operations_and_debug() {
    let x = CT | MEM;
    assert!(x.contains(CT) && x.contains(MEM) && !x.contains(PRIV));
    assert!(x.contains(CT | MEM) && !x.contains(CT | PRIV));
    assert!(x.intersects(CT | PRIV) && !x.intersects(PRIV | SENS));
    assert_eq!((x & MEM), MEM);
    assert_eq!(x.bits(), CT.bits() | MEM.bits());
    let mut y = NONE;
    assert!(y.is_empty());
    y |= STR;
    assert_eq!(y, STR);
    assert_eq!(format!("{x:?}"), "Class(CONTROL_TRANSFER | MEMORY)");
    assert_eq!(format!("{NONE:?}"), "Class(NONE)");
}

#[test]
fn every_table_mnemonic_exists_in_some_iced_code() {
    // Guard against a table entry that iced-x86 never produces a Code for (a misspelling would
    // not compile, but a mnemonic from the wrong vendor could silently never match).
    use iced_x86::Code;
    for table in [
        crate::PRIVILEGED_MNEMONICS,
        crate::IOPL_SENSITIVE_MNEMONICS,
        crate::SENSITIVE_MNEMONICS,
    ] {
        for m in table {
            assert!(
                Code::values().any(|code| code.mnemonic() == *m),
                "{m:?} has no Code in iced-x86"
            );
        }
    }
}
