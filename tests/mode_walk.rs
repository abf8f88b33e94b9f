//! The mode walk: one small guest program that takes an x86 CPU from real mode all the way to a
//! 64-bit user process and back into its kernel, the way a boot loader and an operating system
//! do. It doubles as a teaching example, so every step is commented with the SDM section that
//! explains it (Intel SDM Vol. 3A unless noted).
//!
//! The walk, and the step code it reports with `out 0xE9, al` at each milestone:
//!
//! | code | where                                                                       |
//! |------|-----------------------------------------------------------------------------|
//! | 0x01 | real mode, right after "reset" (CS:IP = 0000:1000)                          |
//! | 0x02 | 32-bit protected mode: own GDT, CR0.PE = 1, far jump (§9.9.1)                |
//! | 0x03 | 32-bit paging with a 4 MiB PSE page (CR4.PSE, CR3, CR0.PG; §4.3)            |
//! | 0x04 | 64-bit mode: paging off, CR4.PAE, EFER.LME, CR0.PG, far jump (§9.8.5)       |
//! | 0x05 | ring 3, entered with IRETQ (IOPL = 3 lets user code use OUT; §6.14.3)       |
//! | 0x06 | in the kernel through SYSCALL (§5.8.8)                                      |
//! | 0x07 | back in ring 3 after SYSRETQ                                                |
//! | 0x0E | #PF handler: the user wrote to an unmapped page; it reports CR2 and the error code, maps the page and returns to retry the store (§4.7, §6.15) |
//! | 0x09 | user: the retried store worked                                              |
//! | 0x0D | #GP handler (on IST1): the user ran HLT at CPL 3; it skips the instruction   |
//! | 0x0B | user: after the skipped HLT                                                 |
//! | 0xFF | INT 0x80 through a DPL-3 gate: the kernel says goodbye and halts            |
//!
//! Values (CR2, error codes, ...) go to port 0xEA as 32-bit OUTs. The program is built from
//! plain data moves and the system instructions only (no PUSH/CALL/CMP), so it exercises the
//! system architecture and little else.
//!
//! Memory map (guest physical = linear; identity-mapped):
//!
//! ```text
//! 0x1000  real-mode code          0x5000  GDT        0x5100 GDTR image   0x5110 IDTR image
//! 0x2000  32-bit code             0x6000  64-bit TSS (RSP0 = 0xA000, IST1 = 0xA800)
//! 0x3000  64-bit kernel entry     0x7000  boot stack top (real / protected mode)
//! 0x3400  SYSCALL handler         0x8000  IDT (256 x 16 bytes)
//! 0x3500  #PF handler             0xA000  kernel stack top (RSP0), 0xA800 IST1 stack top
//! 0x3600  #GP handler             0xC000  user stack top (page 0xB000, user)
//! 0x3700  INT 0x80 handler        0x10000 32-bit page directory (one 4 MiB page)
//! 0x4000  user code (user page)   0x20000 PML4, 0x21000 PDPT, 0x22000 PD, 0x23000 PT
//! 0x1F0000 the page that is missing until the #PF handler maps it
//! ```

use iced_x86::code_asm::*;
use iced_x86::Mnemonic;
use jit::abi::{cr, sreg, Segment};
use rinx::cpu::{Cpu, NullPlatform, StopReason};
use rinx::exec::{Engine, EngineKind};
use rinx::mmu::GuestMemory;

const STEP: i32 = 0xe9;
const VALUE: i32 = 0xea;

const GDT: u64 = 0x5000;
const GDTR: u64 = 0x5100;
const IDTR: u64 = 0x5110;
const TSS: u64 = 0x6000;
const IDT: u64 = 0x8000;
const PD32: u64 = 0x10000;
const PML4: u64 = 0x20000;
const PT: u64 = 0x23000;
const MISSING: u64 = 0x1f_0000;

// GDT selectors. The order of 0x18..0x38 is the one SYSCALL/SYSRET require (§5.8.8):
// STAR[47:32] = 0x18 gives kernel CS 0x18 and SS 0x20; STAR[63:48] = 0x28 gives a 32-bit user
// CS 0x28, user SS 0x30 and 64-bit user CS 0x38.
const CODE32: u16 = 0x08;
const DATA32: u16 = 0x10;
const KCODE64: u16 = 0x18;
const UDATA: u16 = 0x30;
const UCODE64: u16 = 0x38;
const TSS_SEL: u16 = 0x40;

/// An 8-byte code/data descriptor (Figure 3-8): flat base 0, limit 0xFFFFF pages.
fn seg_desc(access: u64, flags: u64) -> u64 {
    0xffff | (0xf << 48) | (access << 40) | (flags << 52)
}

/// A 64-bit interrupt gate (Figure 6-8) to `target` in KCODE64.
fn int_gate64(target: u64, dpl: u64, ist: u64) -> [u64; 2] {
    let lo = (target & 0xffff)
        | (u64::from(KCODE64) << 16)
        | (ist << 32)
        | (0xe << 40)
        | (dpl << 45)
        | (1 << 47)
        | ((target >> 16 & 0xffff) << 48);
    [lo, target >> 32]
}

fn asm(bits: u32, at: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.assemble(at).unwrap()
}

/// Builds the program image in RAM.
fn build(mem: &mut GuestMemory) {
    // --- Real mode (16-bit code at 0000:1000) ---------------------------------------------
    let real = asm(16, 0x1000, |a| {
        a.mov(ax, 0)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?; // MOV SS inhibits interrupts for one instruction (§6.8.3)...
        a.mov(sp, 0x7000)?; // ...so SS:SP change atomically.
        a.mov(al, 0x01)?;
        a.out(STEP, al)?;
        a.cli()?;
        // LGDT with a 16-bit operand size loads a 24-bit base: enough below 16 MiB.
        a.lgdt(ptr(GDTR as u32))?;
        // CR0.PE = 1 (ET stays 1; CD/NW cleared). We are now in protected mode but CS still
        // holds its real-mode cache until the far jump reloads it (§9.9.1 step 3-4).
        a.mov(eax, 0x11)?;
        a.mov(cr0, eax)?;
        a.jmp_far(CODE32, 0x2000)
    });
    // --- 32-bit protected mode ------------------------------------------------------------
    let pm = asm(32, 0x2000, |a| {
        a.mov(ax, DATA32 as u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x7000)?;
        a.mov(al, 0x02)?;
        a.out(STEP, al)?;
        // 32-bit paging (§4.3): one 4 MiB page (PDE.PS, needs CR4.PSE) maps 0..4 MiB.
        a.mov(eax, cr::CR4_PSE as u32)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PD32 as u32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, 0x8000_0011u32)?;
        a.mov(cr0, eax)?;
        a.mov(al, 0x03)?;
        a.out(STEP, al)?;
        // Into IA-32e mode (§9.8.5): paging off, PAE on, CR3 = PML4, EFER.LME (+ SCE for
        // SYSCALL, NXE for execute-disable), paging on -> EFER.LMA = 1 (compatibility mode).
        a.mov(eax, 0x11)?;
        a.mov(cr0, eax)?;
        a.mov(eax, cr::CR4_PAE as u32)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PML4 as u32)?;
        a.mov(cr3, eax)?;
        a.mov(ecx, 0xc000_0080u32)?; // IA32_EFER
        a.mov(eax, (cr::EFER_LME | cr::EFER_NXE | cr::EFER_SCE) as u32)?;
        a.mov(edx, 0)?;
        a.wrmsr()?;
        a.mov(eax, 0x8001_0011u32)?; // PG | WP | ET | PE
        a.mov(cr0, eax)?;
        // A far jump to a code segment with L = 1 enters 64-bit mode.
        a.jmp_far(KCODE64, 0x3000)
    });
    // --- 64-bit kernel --------------------------------------------------------------------
    let kernel = asm(64, 0x3000, |a| {
        a.mov(al, 0x04)?;
        a.out(STEP, al)?;
        a.lidt(ptr(IDTR))?;
        a.mov(ax, TSS_SEL as u32)?;
        a.ltr(ax)?; // marks the TSS descriptor busy (§7.2.4)
                    // IA32_STAR = user base 0x28 << 48 | kernel base 0x18 << 32; IA32_LSTAR = handler.
        a.mov(ecx, 0xc000_0081u32)?;
        a.mov(edx, 0x0028_0018)?;
        a.mov(eax, 0)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0082u32)?;
        a.mov(edx, 0)?;
        a.mov(eax, 0x3400)?;
        a.wrmsr()?;
        // Build the IRETQ frame by hand (§6.14.3, Figure 6-9): SS, RSP, RFLAGS, CS, RIP.
        a.mov(rsp, 0xa000u64 - 40)?;
        a.mov(qword_ptr(rsp), 0x4000)?; // RIP
        a.mov(qword_ptr(rsp + 8), i32::from(UCODE64 | 3))?; // CS, RPL 3
        a.mov(qword_ptr(rsp + 16), 0x3202)?; // RFLAGS: IOPL = 3, IF = 1
        a.mov(qword_ptr(rsp + 24), 0xc000)?; // RSP
        a.mov(qword_ptr(rsp + 32), i32::from(UDATA | 3))?; // SS, RPL 3
        a.iretq()
    });
    // SYSCALL entry: CPL 0, still on the user stack (SYSCALL does not switch stacks).
    let syscall = asm(64, 0x3400, |a| {
        a.mov(al, 0x06)?;
        a.out(STEP, al)?;
        a.mov(eax, ecx)?; // RCX = the user's return RIP
        a.out(VALUE, eax)?;
        a.sysretq() // RIP = RCX, RFLAGS = R11, CS = 0x3B, SS = 0x33
    });
    // #PF handler: error code on top of the stack (§6.13), faulting address in CR2 (§4.7).
    // It clobbers RAX, which the user program tolerates.
    let pf = asm(64, 0x3500, |a| {
        a.mov(al, 0x0e)?;
        a.out(STEP, al)?;
        a.mov(rax, cr2)?;
        a.out(VALUE, eax)?;
        a.invlpg(ptr(rax))?; // not needed for a not-present entry, but the habit is right
        a.mov(rax, qword_ptr(rsp))?;
        a.out(VALUE, eax)?;
        // Map the page: PTE = MISSING | U | W | P.
        a.mov(rax, PT + (MISSING >> 12) * 8)?;
        a.mov(qword_ptr(rax), (MISSING | 7) as i32)?;
        a.add(rsp, 8)?; // drop the error code
        a.iretq() // restart the faulting store
    });
    // #GP handler, on the IST1 stack: skip the 1-byte HLT.
    let gp = asm(64, 0x3600, |a| {
        a.mov(al, 0x0d)?;
        a.out(STEP, al)?;
        a.mov(rax, qword_ptr(rsp))?;
        a.out(VALUE, eax)?; // error code
        a.mov(rax, rsp)?;
        a.out(VALUE, eax)?; // proves the IST stack: 0xA800 - 6 * 8
        a.add(qword_ptr(rsp + 8), 1)?; // saved RIP += length of HLT
        a.add(rsp, 8)?;
        a.iretq()
    });
    let exit = asm(64, 0x3700, |a| {
        a.mov(al, 0xff)?;
        a.out(STEP, al)?;
        a.hlt()
    });
    // --- 64-bit user program (CPL 3) ------------------------------------------------------
    let user = asm(64, 0x4000, |a| {
        a.mov(al, 0x05)?;
        a.out(STEP, al)?;
        a.syscall()?;
        a.mov(al, 0x07)?;
        a.out(STEP, al)?;
        a.mov(rbx, MISSING)?;
        a.mov(dword_ptr(rbx), 0xc0ffee)?; // #PF: not present, write, user -> code 6
        a.mov(eax, dword_ptr(rbx))?;
        a.out(VALUE, eax)?;
        a.mov(al, 0x09)?;
        a.out(STEP, al)?;
        a.hlt()?; // privileged: #GP(0)
        a.mov(al, 0x0b)?;
        a.out(STEP, al)?;
        a.int(0x80)
    });
    for (at, code) in [
        (0x1000, real),
        (0x2000, pm),
        (0x3000, kernel),
        (0x3400, syscall),
        (0x3500, pf),
        (0x3600, gp),
        (0x3700, exit),
        (0x4000, user),
    ] {
        mem.write(at, &code).unwrap();
    }

    // --- Descriptor tables ----------------------------------------------------------------
    // Access bytes: 0x9A code DPL0, 0x92 data DPL0, 0xFA code DPL3, 0xF2 data DPL3.
    // Flags nibble: 0xC = G + D (32-bit), 0xA = G + L (64-bit).
    let gdt = [
        0,
        seg_desc(0x9a, 0xc), // 0x08 32-bit kernel code
        seg_desc(0x92, 0xc), // 0x10 kernel data
        seg_desc(0x9a, 0xa), // 0x18 64-bit kernel code
        seg_desc(0x92, 0xc), // 0x20 kernel data (SYSCALL SS)
        seg_desc(0xfa, 0xc), // 0x28 32-bit user code
        seg_desc(0xf2, 0xc), // 0x30 user data
        seg_desc(0xfa, 0xa), // 0x38 64-bit user code
        // 0x40: 64-bit available TSS (type 9), 16 bytes (§7.2.3).
        0x67 | ((TSS & 0xff_ffff) << 16) | (0x89 << 40),
        0,
    ];
    for (i, d) in gdt.iter().enumerate() {
        mem.write_le(GDT + 8 * i as u64, 8, *d).unwrap();
    }
    mem.write_le(GDTR, 2, (gdt.len() * 8 - 1) as u64).unwrap();
    mem.write_le(GDTR + 2, 8, GDT).unwrap();
    mem.write_le(IDTR, 2, 0xfff).unwrap();
    mem.write_le(IDTR + 2, 8, IDT).unwrap();
    // TSS: RSP0 at +4, IST1 at +0x24 (Figure 7-11).
    mem.write_le(TSS + 4, 8, 0xa000).unwrap();
    mem.write_le(TSS + 0x24, 8, 0xa800).unwrap();
    for (vector, target, dpl, ist) in [
        (13u64, 0x3600, 0, 1),
        (14, 0x3500, 0, 0),
        (0x80, 0x3700, 3, 0),
    ] {
        let g = int_gate64(target, dpl, ist);
        mem.write_le(IDT + vector * 16, 8, g[0]).unwrap();
        mem.write_le(IDT + vector * 16 + 8, 8, g[1]).unwrap();
    }

    // --- Page tables ----------------------------------------------------------------------
    // 32-bit: PDE 0 = 4 MiB page at 0 (PS | W | P).
    mem.write_le(PD32, 4, 0x83).unwrap();
    // 4-level: PML4[0] -> PDPT[0] -> PD[0] -> PT, user-accessible at the upper levels; the
    // leaf entries decide. The first 2 MiB are mapped 4 KiB at a time, supervisor-only, except
    // the user code and stack pages; MISSING stays not present.
    mem.write_le(PML4, 8, 0x21000 | 7).unwrap();
    mem.write_le(0x21000, 8, 0x22000 | 7).unwrap();
    mem.write_le(0x22000, 8, PT | 7).unwrap();
    for i in 0..512u64 {
        let pa = i << 12;
        let user = pa == 0x4000 || pa == 0xb000;
        let e = if pa == MISSING {
            0
        } else {
            pa | 3 | if user { 4 } else { 0 }
        };
        mem.write_le(PT + i * 8, 8, e).unwrap();
    }
}

#[test]
fn real_to_long_to_user_and_back() {
    walk(EngineKind::Interp);
}

#[test]
fn real_to_long_to_user_and_back_under_the_jit() {
    walk(EngineKind::Jit);
}

#[test]
fn mode_walk_in_lockstep() {
    // Real -> protected -> paging -> long mode -> ring 3 -> SYSCALL -> #PF/#GP, compared
    // instruction block by instruction block between the JIT and the interpreter.
    let make = || {
        let mut mem = GuestMemory::flat(16 << 20).unwrap();
        build(&mut mem);
        let mut cpu = Cpu::new();
        cpu.s.seg[sreg::CS] = Segment {
            attr: Segment::ATTR_P | Segment::ATTR_S | 0xb,
            ..Segment::real_mode(0, 0xffff)
        };
        cpu.s.rip = 0x1000;
        rinx::testing::TestMachine {
            cpu,
            mem,
            plat: NullPlatform::default(),
            engine: Engine::new(EngineKind::Interp),
        }
    };
    match rinx::exec::lockstep::lockstep(&make, 10_000) {
        Ok(n) => assert!(n > 50, "the walk ran ({n} instructions)"),
        Err(d) => panic!("{d}"),
    }
}

fn walk(engine: EngineKind) {
    let mut mem = GuestMemory::flat(16 << 20).unwrap();
    build(&mut mem);
    // Reset-like state (SDM Table 9-1), except that execution starts at 0000:1000 the way a
    // BIOS hands over to a boot sector, instead of FFFF:FFF0.
    let mut cpu = Cpu::new();
    cpu.s.seg[sreg::CS] = Segment {
        attr: Segment::ATTR_P | Segment::ATTR_S | 0xb,
        ..Segment::real_mode(0, 0xffff)
    };
    cpu.s.rip = 0x1000;
    let mut plat = NullPlatform::default();
    let stop = Engine::new(engine).run(&mut cpu, &mut mem, &mut plat, 10_000);

    let steps: Vec<u32> = plat
        .outs
        .iter()
        .filter(|o| o.0 == 0xe9)
        .map(|o| o.2)
        .collect();
    let values: Vec<u32> = plat
        .outs
        .iter()
        .filter(|o| o.0 == 0xea)
        .map(|o| o.2)
        .collect();
    assert_eq!(
        steps,
        vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0e, 0x09, 0x0d, 0x0b, 0xff],
        "step codes (values {values:x?}, rip {:#x}, stop {stop:?})",
        cpu.s.rip
    );
    // SYSCALL's RCX (return address in the user program), CR2, the #PF error code
    // (W | U, not present), the stored value read back, the #GP error code and the IST1
    // stack pointer after the 6-qword frame.
    let syscall_ret = 0x4000 + 4 + 2;
    assert_eq!(
        values,
        vec![syscall_ret, MISSING as u32, 0x6, 0xc0ffee, 0, 0xa800 - 48]
    );
    assert_eq!(stop, StopReason::Halted);
    // Final state: halted in the 64-bit kernel at CPL 0, IA-32e active.
    assert_eq!(cpu.s.cpl, 0);
    assert_eq!(cpu.s.seg[sreg::CS].selector, KCODE64);
    assert_ne!(cpu.s.efer & cr::EFER_LMA, 0);
    assert_eq!(cpu.s.cr2, MISSING);
    assert_eq!(cpu.s.tr.selector, TSS_SEL);
    assert_eq!(cpu.s.tr.typ(), 0xb, "LTR marked the TSS busy");
    assert_eq!(mem.read_le(GDT + 0x40 + 5, 1).unwrap(), 0x8b);
    assert_eq!(mem.read_le(MISSING, 4).unwrap(), 0xc0ffee);
    // The PTE got accessed and dirty bits from the retried store.
    assert_eq!(
        mem.read_le(PT + (MISSING >> 12) * 8, 8).unwrap(),
        MISSING | 0x67
    );
    assert_eq!(cpu.exceptions[14], 1);
    assert_eq!(cpu.exceptions[13], 1);
    // The ring layer saw each privileged instruction.
    let rs = &cpu.ring_stats;
    assert_eq!(rs.get(Mnemonic::Syscall), 1);
    assert_eq!(rs.get(Mnemonic::Sysretq), 1);
    assert_eq!(rs.get(Mnemonic::Wrmsr), 3);
    assert_eq!(rs.get(Mnemonic::Hlt), 2);
    assert_eq!(rs.refused, 1, "only the user HLT was refused");
}
