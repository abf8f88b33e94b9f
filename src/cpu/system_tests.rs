//! Unit tests of the system architecture: one instruction at a time on a [`TestMachine`], with
//! expected values taken from the Intel SDM (section cited per test).

use crate::cpu::interrupt::{self, EventKind};
use crate::cpu::{dispatch, Ctx, Fault, Res};
use crate::mmu::walk::Translation;
use crate::testing::{TestMachine, TestMode, STACK_TOP};
use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use jit::abi::{cr, flags as fl, reg, sreg, Segment};

const GDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
const IDT: u64 = 0x4000;

/// Flat code/data descriptor: access byte and flags nibble (Figure 3-8).
fn desc(access: u64, flags: u64) -> u64 {
    0xffff | (0xf << 48) | (access << 40) | (flags << 52)
}

/// GDT: 0x08 code32 DPL0, 0x10 data DPL0, 0x18 code32 DPL3, 0x20 data DPL3, 0x28 32-bit TSS,
/// 0x30 data DPL0 not present, 0x38 code64 DPL0, 0x40 code64 DPL3, 0x48 64-bit TSS (16 bytes),
/// 0x58 32-bit call gate (DPL3) to 0x08:0x20000.
fn machine(mode: TestMode) -> TestMachine {
    let mut t = TestMachine::new(mode, &[]);
    let tss32 = 0x67 | (TSS << 16) | (0x89 << 40);
    let tss64 = 0x67 | ((TSS + 0x100) << 16) | (0x89 << 40);
    let gate = (0x08 << 16) | (0xec << 40) | (0x0002 << 48);
    let gdt = [
        0,
        desc(0x9a, 0xc),
        desc(0x92, 0xc),
        desc(0xfa, 0xc),
        desc(0xf2, 0xc),
        tss32,
        desc(0x12, 0xc),
        desc(0x9a, 0xa),
        desc(0xfa, 0xa),
        tss64,
        0,
        gate,
    ];
    for (i, d) in gdt.iter().enumerate() {
        t.mem.write_le(GDT + 8 * i as u64, 8, *d).unwrap();
    }
    t.cpu.s.gdtr.base = GDT;
    t.cpu.s.gdtr.limit = (gdt.len() * 8 - 1) as u32;
    t.cpu.s.idtr.base = IDT;
    t.cpu.s.idtr.limit = 0xfff;
    // 32-bit TSS: ESP0 = 0x70000, SS0 = 0x10. 64-bit TSS: RSP0 = 0x70000, IST1 = 0x60008.
    t.mem.write_le(TSS + 4, 4, 0x7_0000).unwrap();
    t.mem.write_le(TSS + 8, 2, 0x10).unwrap();
    t.mem.write_le(TSS + 0x104, 8, 0x7_0000).unwrap();
    t.mem.write_le(TSS + 0x124, 8, 0x6_0008).unwrap();
    let long = mode == TestMode::Long64;
    t.cpu.s.tr = Segment {
        base: if long { TSS + 0x100 } else { TSS },
        limit: 0x67,
        selector: if long { 0x48 } else { 0x28 },
        attr: Segment::ATTR_P | 0xb,
    };
    t
}

/// Moves the machine to CPL 3 with user segments (32-bit or 64-bit code).
fn to_user(t: &mut TestMachine) {
    let long = t.cpu.long_mode();
    let code = if long { 0x40 } else { 0x18 };
    t.cpu.s.seg[sreg::CS] = Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: code | 3,
        attr: 0xc0fb & if long { !Segment::ATTR_DB } else { 0xffff }
            | if long { Segment::ATTR_L } else { 0 },
    };
    let data = Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x23,
        attr: 0xc0f3,
    };
    for s in [sreg::SS, sreg::DS, sreg::ES] {
        t.cpu.s.seg[s] = data;
    }
    t.cpu.s.cpl = 3;
}

fn asm(bits: u32, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.assemble(0).unwrap()
}

/// Executes one instruction; on success RIP advances, on a fault the state must be unchanged.
fn run1(t: &mut TestMachine, code: &[u8]) -> Res<()> {
    let rip = t.cpu.s.rip;
    let bits = t.cpu.bitness();
    let insn = Decoder::with_ip(bits, code, rip, DecoderOptions::NONE).decode();
    let before = t.cpu.s;
    let mut ctx = Ctx::new(&mut t.cpu, &mut t.mem, &mut t.plat);
    ctx.cpu.cur_rip = rip;
    ctx.next_rip = rip + insn.len() as u64;
    let r = dispatch::execute(&mut ctx, &insn);
    match r {
        Ok(()) => {
            ctx.cpu.s.rip = ctx.next_rip;
            ctx.cpu.icount += 1;
        }
        Err(_) => assert_eq!(t.cpu.s, before, "a fault must leave the state unchanged"),
    }
    r
}

fn ctx(t: &mut TestMachine) -> Ctx<'_, crate::cpu::NullPlatform> {
    Ctx::new(&mut t.cpu, &mut t.mem, &mut t.plat)
}

// --- Privilege checks of the ring layer ---------------------------------------------------

#[test]
fn lgdt_at_cpl3_is_gp0_but_sgdt_works() {
    // SDM Vol. 2A LGDT: #GP(0) if CPL != 0; SGDT is not privileged (no UMIP).
    let mut t = machine(TestMode::Flat32);
    to_user(&mut t);
    let lgdt = asm(32, |a| a.lgdt(ptr(0x5000)));
    assert_eq!(run1(&mut t, &lgdt), Err(Fault::Gp(0)));
    let sgdt = asm(32, |a| a.sgdt(ptr(0x5000)));
    assert_eq!(run1(&mut t, &sgdt), Ok(()));
    assert_eq!(t.mem.read_le(0x5000, 2).unwrap(), 0x5f);
    assert_eq!(t.mem.read_le(0x5002, 4).unwrap(), GDT);
    for m in [
        asm(32, |a| a.mov(cr3, eax)),
        asm(32, |a| a.wrmsr()),
        asm(32, |a| a.hlt()),
        asm(32, |a| a.clts()),
        asm(32, |a| a.invlpg(ptr(0))),
        asm(32, |a| a.cli()),
    ] {
        assert_eq!(run1(&mut t, &m), Err(Fault::Gp(0)), "{m:x?}");
    }
    assert_eq!(t.cpu.ring_stats.get(Mnemonic::Lgdt), 1);
    assert_eq!(t.cpu.ring_stats.refused, 7);
}

#[test]
fn popf_at_cpl3_keeps_iopl_and_if() {
    // SDM Vol. 2B POPF: at CPL > 0, IOPL is unchanged; IF changes only if CPL <= IOPL.
    let mut t = machine(TestMode::Flat32);
    to_user(&mut t);
    t.cpu.s.rflags = fl::FIXED1 | fl::IF;
    t.mem.write_le(STACK_TOP - 4, 4, 0x3000 | fl::CF).unwrap();
    t.cpu.s.gpr[reg::RSP] = STACK_TOP - 4;
    run1(&mut t, &asm(32, |a| a.popfd())).unwrap();
    assert_eq!(t.cpu.s.rflags, fl::FIXED1 | fl::IF | fl::CF);
    assert_eq!(t.cpu.s.gpr[reg::RSP], STACK_TOP);
}

#[test]
fn sti_and_mov_ss_set_the_interrupt_shadow() {
    // SDM Vol. 3A §6.8.3: inhibit interrupts until after the next instruction.
    let mut t = machine(TestMode::Flat32);
    t.cpu.icount = 10;
    run1(&mut t, &asm(32, |a| a.sti())).unwrap();
    assert_eq!(t.cpu.shadow_until, 12);
    t.cpu.icount = 20;
    t.cpu.s.gpr[reg::RAX] = 0;
    assert_eq!(run1(&mut t, &asm(32, |a| a.mov(ss, ax))), Err(Fault::Gp(0)));
    assert_eq!(t.cpu.shadow_until, 12, "a faulting MOV SS sets no shadow");
    t.cpu.s.gpr[reg::RAX] = 0x10;
    run1(&mut t, &asm(32, |a| a.mov(ss, ax))).unwrap();
    assert_eq!(t.cpu.shadow_until, 22);
}

// --- Control registers and the TLB ---------------------------------------------------------

fn tr(global: bool) -> Translation {
    Translation {
        pa_page: 0x5000,
        writable: true,
        user: true,
        nx: false,
        global,
        dirty: true,
        page_size: 4096,
    }
}

#[test]
fn mov_cr3_keeps_global_entries_and_cr4_pge_flushes_all() {
    // SDM Vol. 3A §4.10.4.1: MOV to CR3 invalidates non-global entries; changing CR4.PGE
    // invalidates all.
    let mut t = machine(TestMode::Long64);
    t.cpu.s.cr4 |= cr::CR4_PGE;
    t.cpu.tlb.insert(0xffff_8000_0000_0000, None, tr(true));
    t.cpu.tlb.insert(0x40_1000, None, tr(false));
    t.cpu.s.gpr[reg::RAX] = t.cpu.s.cr3;
    run1(&mut t, &asm(64, |a| a.mov(cr3, rax))).unwrap();
    assert!(t.cpu.tlb.lookup(0xffff_8000_0000_0000).is_some());
    assert!(t.cpu.tlb.lookup(0x40_1000).is_none());
    t.cpu.s.gpr[reg::RAX] = cr::CR4_PAE;
    run1(&mut t, &asm(64, |a| a.mov(cr4, rax))).unwrap();
    assert!(t.cpu.tlb.lookup(0xffff_8000_0000_0000).is_none());
    // Clearing PAE in IA-32e mode and setting an unadvertised bit (VME) are #GP(0).
    t.cpu.s.gpr[reg::RAX] = 0;
    assert_eq!(
        run1(&mut t, &asm(64, |a| a.mov(cr4, rax))),
        Err(Fault::Gp(0))
    );
    t.cpu.s.gpr[reg::RAX] = cr::CR4_PAE | cr::CR4_VME;
    assert_eq!(
        run1(&mut t, &asm(64, |a| a.mov(cr4, rax))),
        Err(Fault::Gp(0))
    );
}

#[test]
fn cr0_pg_with_lme_activates_ia32e() {
    // SDM Vol. 3A §9.8.5: CR0.PG = 1 with EFER.LME = 1 and CR4.PAE = 1 sets EFER.LMA.
    let mut t = machine(TestMode::Flat32);
    t.cpu.s.efer = cr::EFER_LME;
    t.cpu.s.gpr[reg::RAX] = 0x8000_0011;
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.mov(cr0, eax))),
        Err(Fault::Gp(0)),
        "PAE off"
    );
    t.cpu.s.cr4 = cr::CR4_PAE;
    run1(&mut t, &asm(32, |a| a.mov(cr0, eax))).unwrap();
    assert_ne!(t.cpu.s.efer & cr::EFER_LMA, 0);
    assert!(t.cpu.long_mode() && !t.cpu.mode64());
    // PG without PE is #GP(0).
    let mut t = machine(TestMode::Flat32);
    t.cpu.s.gpr[reg::RAX] = 0x8000_0010;
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.mov(cr0, eax))),
        Err(Fault::Gp(0))
    );
}

// --- MSRs, CPUID, TSC ------------------------------------------------------------------------

#[test]
fn msrs_unknown_reserved_and_read_only() {
    let mut t = machine(TestMode::Long64);
    t.cpu.s.gpr[reg::RCX] = 0x1234;
    assert_eq!(run1(&mut t, &asm(64, |a| a.rdmsr())), Err(Fault::Gp(0)));
    let mut c = ctx(&mut t);
    // EFER: LMA is read-only (a written 0 is ignored), bit 1 is reserved.
    let efer = c.read_msr(0xc000_0080).unwrap();
    c.write_msr(0xc000_0080, efer & !cr::EFER_LMA).unwrap();
    assert_eq!(c.read_msr(0xc000_0080).unwrap(), efer);
    assert_eq!(c.write_msr(0xc000_0080, efer | 2), Err(Fault::Gp(0)));
    // LME cannot change while paging is on.
    assert_eq!(
        c.write_msr(0xc000_0080, efer & !cr::EFER_LME),
        Err(Fault::Gp(0))
    );
    // Canonical checks; GS_BASE goes to the segment cache.
    assert_eq!(
        c.write_msr(0xc000_0101, 0x8000_0000_0000),
        Err(Fault::Gp(0))
    );
    c.write_msr(0xc000_0101, 0xffff_8000_1234_0000).unwrap();
    assert_eq!(c.cpu.s.seg[sreg::GS].base, 0xffff_8000_1234_0000);
    // PAT: type 2 is reserved.
    assert_eq!(c.write_msr(0x277, 0x0202), Err(Fault::Gp(0)));
    // IA32_TSC write sets the offset.
    c.write_msr(0x10, 1_000_000).unwrap();
    let now = c.read_msr(0x10).unwrap();
    assert!((1_000_000..1_000_010).contains(&now));
    assert_eq!(c.read_msr(0xfe).unwrap(), 0x508);
}

#[test]
fn rdtsc_with_tsd_at_cpl3_and_rdpmc() {
    // SDM Vol. 2B RDTSC: #GP(0) if CR4.TSD = 1 and CPL > 0.
    let mut t = machine(TestMode::Flat32);
    to_user(&mut t);
    run1(&mut t, &asm(32, |a| a.rdtsc())).unwrap();
    t.cpu.s.cr4 |= cr::CR4_TSD;
    assert_eq!(run1(&mut t, &asm(32, |a| a.rdtsc())), Err(Fault::Gp(0)));
    assert_eq!(run1(&mut t, &asm(32, |a| a.rdpmc())), Err(Fault::Gp(0)));
    assert_eq!(run1(&mut t, &asm(32, |a| a.xgetbv())), Err(Fault::Ud));
    t.cpu.s.gpr[reg::RAX] = 0;
    run1(&mut t, &asm(32, |a| a.cpuid())).unwrap();
    assert_eq!(t.cpu.s.gpr[reg::RBX] as u32, u32::from_le_bytes(*b"Genu"));
}

// --- Segment loads ----------------------------------------------------------------------------

#[test]
fn segment_loads_check_privilege_presence_and_null_rules() {
    // SDM Vol. 2B MOV (protected-mode checks).
    let mut t = machine(TestMode::Flat32);
    t.cpu.s.gpr[reg::RAX] = 0x30; // not present
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.mov(ds, ax))),
        Err(Fault::Np(0x30))
    );
    t.cpu.s.gpr[reg::RAX] = 0x60; // beyond the GDT limit
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.mov(ds, ax))),
        Err(Fault::Gp(0x60))
    );
    t.cpu.s.gpr[reg::RAX] = 0x08; // execute-only? no: readable code is fine for DS
    run1(&mut t, &asm(32, |a| a.mov(es, ax))).unwrap();
    t.cpu.s.gpr[reg::RAX] = 0x3; // null selector with RPL 3: loads, marks DS unusable
    run1(&mut t, &asm(32, |a| a.mov(ds, ax))).unwrap();
    assert!(!t.cpu.s.seg[sreg::DS].present());
    t.cpu.s.gpr[reg::RAX] = 0;
    assert_eq!(run1(&mut t, &asm(32, |a| a.mov(ss, ax))), Err(Fault::Gp(0)));
    t.cpu.s.gpr[reg::RAX] = 0x08; // code into SS
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.mov(ss, ax))),
        Err(Fault::Gp(0x08))
    );
    t.cpu.s.gpr[reg::RAX] = 0x10;
    run1(&mut t, &asm(32, |a| a.mov(ss, ax))).unwrap();
    // The accessed bit was set in the GDT.
    assert_ne!(t.mem.read_le(GDT + 0x10 + 5, 1).unwrap() & 1, 0);
    // At CPL 3 a DPL 0 data segment is #GP(sel).
    to_user(&mut t);
    t.cpu.s.gpr[reg::RAX] = 0x13;
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.mov(fs, ax))),
        Err(Fault::Gp(0x10))
    );
    // 64-bit mode: a null SS is allowed at CPL 0 with RPL = CPL.
    let mut t = machine(TestMode::Long64);
    t.cpu.s.gpr[reg::RAX] = 0;
    run1(&mut t, &asm(64, |a| a.mov(ss, ax))).unwrap();
}

#[test]
fn real_mode_loads_keep_the_cached_limit() {
    // SDM Vol. 3A §20.1.1: base = selector << 4; the limit stays (unreal mode).
    let mut t = TestMachine::new(TestMode::Real, &[]);
    t.cpu.s.seg[sreg::DS].limit = 0xffff_ffff;
    t.cpu.s.gpr[reg::RAX] = 0x1234;
    run1(&mut t, &asm(16, |a| a.mov(ds, ax))).unwrap();
    assert_eq!(t.cpu.s.seg[sreg::DS].base, 0x12340);
    assert_eq!(t.cpu.s.seg[sreg::DS].limit, 0xffff_ffff);
}

// --- Interrupt delivery ---------------------------------------------------------------------

fn gate32(vector: u64, target: u64, dpl: u64, typ: u64, mem: &mut crate::mmu::GuestMemory) {
    let g = (target & 0xffff)
        | (0x08 << 16)
        | (typ << 40)
        | (dpl << 45)
        | (1 << 47)
        | ((target >> 16) << 48);
    mem.write_le(IDT + vector * 8, 8, g).unwrap();
}

fn gate64(vector: u64, target: u64, dpl: u64, ist: u64, mem: &mut crate::mmu::GuestMemory) {
    let lo = (target & 0xffff)
        | (0x38 << 16)
        | (ist << 32)
        | (0xe << 40)
        | (dpl << 45)
        | (1 << 47)
        | ((target >> 16 & 0xffff) << 48);
    mem.write_le(IDT + vector * 16, 8, lo).unwrap();
    mem.write_le(IDT + vector * 16 + 8, 8, target >> 32)
        .unwrap();
}

#[test]
fn protected_mode_delivery_from_cpl3_switches_stacks() {
    // SDM Vol. 3A §6.12.1, Figure 6-4: with a privilege change the handler's stack holds
    // SS, ESP, EFLAGS, CS, EIP, error code; IF is cleared for an interrupt gate.
    let mut t = machine(TestMode::Flat32);
    gate32(13, 0x12345, 0, 0xe, &mut t.mem);
    to_user(&mut t);
    t.cpu.s.rflags = fl::FIXED1 | fl::IF | fl::TF;
    t.cpu.s.gpr[reg::RSP] = 0x5_0000;
    t.cpu.cur_rip = 0x10_0007;
    let mut c = ctx(&mut t);
    interrupt::raise(&mut c, Fault::Gp(0x18)).unwrap();
    let s = &t.cpu.s;
    assert_eq!((s.cpl, s.seg[sreg::CS].selector, s.rip), (0, 0x08, 0x12345));
    assert_eq!(s.seg[sreg::SS].selector, 0x10);
    assert_eq!(s.gpr[reg::RSP], 0x7_0000 - 24);
    assert_eq!(s.rflags & (fl::IF | fl::TF), 0);
    let frame: Vec<u64> = (0..6)
        .map(|i| t.mem.read_le(0x7_0000 - 24 + 4 * i, 4).unwrap())
        .collect();
    assert_eq!(
        frame,
        vec![
            0x18,
            0x10_0007,
            0x1b,
            fl::FIXED1 | fl::IF | fl::TF,
            0x5_0000,
            0x23
        ]
    );

    // IRET back to CPL 3 reloads SS:ESP (SDM Vol. 2A IRET, RETURN-TO-OUTER-PRIVILEGE-LEVEL).
    t.cpu.s.gpr[reg::RSP] += 4; // drop the error code as a handler would
    t.cpu.s.rip = 0x10_0000;
    run1(&mut t, &asm(32, |a| a.iretd())).unwrap();
    let s = &t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.rip),
        (3, 0x1b, 0x10_0007)
    );
    assert_eq!(
        (s.seg[sreg::SS].selector, s.gpr[reg::RSP]),
        (0x23, 0x5_0000)
    );
    assert_eq!(s.rflags, fl::FIXED1 | fl::IF | fl::TF);
}

#[test]
fn software_int_checks_gate_dpl_and_presence() {
    // SDM Vol. 3A §6.12.1.1: INT n with gate DPL < CPL is #GP(vector * 8 + 2); a missing gate
    // is #NP(vector * 8 + 2 + EXT) for hardware events.
    let mut t = machine(TestMode::Flat32);
    gate32(0x40, 0x2000, 0, 0xe, &mut t.mem);
    to_user(&mut t);
    assert_eq!(run1(&mut t, &[0xcd, 0x40]), Err(Fault::Gp(0x40 * 8 + 2)));
    // An all-zero entry has an invalid type: #GP; a valid gate with P = 0: #NP.
    let mut c = ctx(&mut t);
    let r = interrupt::deliver(&mut c, 0x41, EventKind::External, None, 0);
    assert_eq!(r, Err(Fault::Gp(0x41 * 8 + 3)));
    gate32(0x41, 0x2000, 0, 0xe, &mut t.mem);
    let g = t.mem.read_le(IDT + 0x41 * 8, 8).unwrap();
    t.mem.write_le(IDT + 0x41 * 8, 8, g & !(1 << 47)).unwrap();
    let mut c = ctx(&mut t);
    let r = interrupt::deliver(&mut c, 0x41, EventKind::External, None, 0);
    assert_eq!(r, Err(Fault::Np(0x41 * 8 + 3)));
    // A DPL-3 trap gate works from CPL 3 and keeps IF.
    gate32(0x80, 0x2000, 3, 0xf, &mut t.mem);
    t.cpu.s.rflags |= fl::IF;
    run1(&mut t, &[0xcd, 0x80]).unwrap();
    assert_eq!((t.cpu.s.rip, t.cpu.s.cpl), (0x2000, 0));
    assert_ne!(t.cpu.s.rflags & fl::IF, 0);
}

#[test]
fn ia32e_delivery_aligns_the_stack_and_uses_ist() {
    // SDM Vol. 3A §6.14.2-§6.14.5: 16-byte gates, RSP aligned to 16, SS:RSP always pushed,
    // IST stacks, SS = null with RPL = new CPL on a privilege change.
    let mut t = machine(TestMode::Long64);
    gate64(14, 0xffff_8000_0000_1000, 0, 0, &mut t.mem);
    gate64(8, 0x3000, 0, 1, &mut t.mem);
    to_user(&mut t);
    t.cpu.s.gpr[reg::RSP] = 0x5_0008;
    t.cpu.cur_rip = 0x40_0000;
    let mut c = ctx(&mut t);
    interrupt::raise(
        &mut c,
        Fault::Pf {
            addr: 0x1234,
            code: 6,
        },
    )
    .unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.rip),
        (0, 0x38, 0xffff_8000_0000_1000)
    );
    assert_eq!((s.seg[sreg::SS].selector, s.cr2), (0, 0x1234));
    assert_eq!(s.gpr[reg::RSP], 0x7_0000 - 48);
    let frame: Vec<u64> = (0..6)
        .map(|i| t.mem.read_le(0x7_0000 - 48 + 8 * i, 8).unwrap())
        .collect();
    assert_eq!(frame, vec![6, 0x40_0000, 0x43, fl::FIXED1, 0x5_0008, 0x23]);
    // Same privilege, IST1 = 0x60008 -> aligned down to 0x60000; a #DF pushes error code 0.
    let mut c = ctx(&mut t);
    c.cpu.cur_rip = 0x1111;
    interrupt::raise(&mut c, Fault::Df).unwrap();
    assert_eq!(t.cpu.s.gpr[reg::RSP], 0x6_0000 - 48);
    assert_eq!(
        t.mem.read_le(0x6_0000 - 16, 8).unwrap(),
        0x7_0000 - 48,
        "old RSP"
    );
}

#[test]
fn syscall_sysret_round_trip_and_noncanonical_sysret() {
    // SDM Vol. 2B SYSCALL/SYSRET.
    let mut t = machine(TestMode::Long64);
    t.cpu.s.msr.star = (0x28 << 48) | (0x38 << 32);
    t.cpu.s.msr.lstar = 0xffff_8000_0000_2000;
    t.cpu.s.msr.sfmask = fl::IF | fl::TF;
    to_user(&mut t);
    t.cpu.s.rflags = fl::FIXED1 | fl::IF | fl::CF;
    t.cpu.s.rip = 0x40_0000;
    run1(&mut t, &asm(64, |a| a.syscall())).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.seg[sreg::SS].selector),
        (0, 0x38, 0x40)
    );
    assert_eq!(
        (s.rip, s.gpr[reg::RCX], s.gpr[11]),
        (
            0xffff_8000_0000_2000,
            0x40_0002,
            fl::FIXED1 | fl::IF | fl::CF
        )
    );
    assert_eq!(s.rflags, fl::FIXED1 | fl::CF);
    run1(&mut t, &asm(64, |a| a.sysretq())).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.seg[sreg::SS].selector),
        (3, 0x3b, 0x33)
    );
    assert!(t.cpu.mode64());
    assert_eq!((s.rip, s.rflags), (0x40_0002, fl::FIXED1 | fl::IF | fl::CF));
    // SYSRET at CPL 3 is #GP(0); at CPL 0 with a non-canonical RCX, #GP(0) before any change.
    assert_eq!(run1(&mut t, &asm(64, |a| a.sysretq())), Err(Fault::Gp(0)));
    let mut t = machine(TestMode::Long64);
    t.cpu.s.gpr[reg::RCX] = 0x8000_0000_0000;
    assert_eq!(run1(&mut t, &asm(64, |a| a.sysretq())), Err(Fault::Gp(0)));
    // SWAPGS.
    t.cpu.s.msr.kernel_gs_base = 0x1000;
    run1(&mut t, &asm(64, |a| a.swapgs())).unwrap();
    assert_eq!(t.cpu.s.seg[sreg::GS].base, 0x1000);
}

#[test]
fn sysenter_sysexit_32bit() {
    // SDM Vol. 2B SYSENTER/SYSEXIT: CS = SYSENTER_CS, SS = +8; SYSEXIT CS = +16|3, SS = +24|3.
    let mut t = machine(TestMode::Flat32);
    t.cpu.s.msr.sysenter_cs = 0x08;
    t.cpu.s.msr.sysenter_esp = 0x7_0000;
    t.cpu.s.msr.sysenter_eip = 0x2_0000;
    to_user(&mut t);
    run1(&mut t, &asm(32, |a| a.sysenter())).unwrap();
    assert_eq!(
        (t.cpu.s.cpl, t.cpu.s.rip, t.cpu.s.gpr[reg::RSP]),
        (0, 0x2_0000, 0x7_0000)
    );
    t.cpu.s.gpr[reg::RDX] = 0x40_0000;
    t.cpu.s.gpr[reg::RCX] = 0x5_0000;
    run1(&mut t, &asm(32, |a| a.sysexit())).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.seg[sreg::SS].selector),
        (3, 0x1b, 0x23)
    );
    assert_eq!((s.rip, s.gpr[reg::RSP]), (0x40_0000, 0x5_0000));
}

#[test]
fn call_gate_to_ring0_and_retf_to_ring3() {
    // SDM Vol. 3A §5.8.5-§5.8.6, Figure 5-13: CALL through a call gate to a more privileged
    // non-conforming segment switches to the TSS stack and pushes SS, ESP, CS, EIP.
    let mut t = machine(TestMode::Flat32);
    to_user(&mut t);
    t.cpu.s.gpr[reg::RSP] = 0x5_0000;
    t.cpu.s.rip = 0x10_0000;
    let call = asm(32, |a| a.call_far(0x58 | 3, 0));
    run1(&mut t, &call).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.rip),
        (0, 0x08, 0x2_0000)
    );
    assert_eq!(
        (s.seg[sreg::SS].selector, s.gpr[reg::RSP]),
        (0x10, 0x7_0000 - 16)
    );
    let frame: Vec<u64> = (0..4)
        .map(|i| t.mem.read_le(0x7_0000 - 16 + 4 * i, 4).unwrap())
        .collect();
    assert_eq!(
        frame,
        vec![0x10_0000 + call.len() as u64, 0x1b, 0x5_0000, 0x23]
    );
    // RETF returns to CPL 3 and reloads SS:ESP; DS (DPL 0 data) is nulled on the way out.
    t.cpu.s.seg[sreg::DS] = Segment {
        selector: 0x10,
        attr: 0xc093,
        limit: 0xffff_ffff,
        base: 0,
    };
    run1(&mut t, &asm(32, |a| a.retf())).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.cpl, s.seg[sreg::CS].selector, s.gpr[reg::RSP]),
        (3, 0x1b, 0x5_0000)
    );
    assert!(!s.seg[sreg::DS].present());
    // A far JMP straight to a DPL-0 code segment from CPL 3 is #GP(sel).
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.jmp_far(0x08, 0))),
        Err(Fault::Gp(0x08))
    );
}

#[test]
fn ltr_marks_busy_and_lar_lsl_verr() {
    let mut t = machine(TestMode::Flat32);
    t.cpu.s.gpr[reg::RAX] = 0x28;
    run1(&mut t, &asm(32, |a| a.ltr(ax))).unwrap();
    assert_eq!(t.cpu.s.tr.typ(), 0xb);
    // A busy TSS cannot be loaded again: #GP(sel).
    assert_eq!(run1(&mut t, &asm(32, |a| a.ltr(ax))), Err(Fault::Gp(0x28)));
    to_user(&mut t);
    // LAR of the DPL-3 code segment: access bytes masked with 0x00F0FF00 (SDM Vol. 2A LAR).
    t.cpu.s.gpr[reg::RBX] = 0x1b;
    run1(&mut t, &asm(32, |a| a.lar(eax, ebx))).unwrap();
    assert_eq!(t.cpu.s.gpr[reg::RAX], 0x00c0_fa00);
    assert_ne!(t.cpu.s.rflags & fl::ZF, 0);
    run1(&mut t, &asm(32, |a| a.lsl(eax, ebx))).unwrap();
    assert_eq!(t.cpu.s.gpr[reg::RAX], 0xffff_ffff);
    // VERR of a DPL-0 segment at CPL 3: ZF = 0, no fault.
    t.cpu.s.gpr[reg::RBX] = 0x10;
    run1(&mut t, &asm(32, |a| a.verr(bx))).unwrap();
    assert_eq!(t.cpu.s.rflags & fl::ZF, 0);
    // ARPL raises the RPL.
    t.cpu.s.gpr[reg::RCX] = 0x3;
    run1(&mut t, &asm(32, |a| a.arpl(bx, cx))).unwrap();
    assert_eq!(t.cpu.s.gpr[reg::RBX], 0x13);
}

#[test]
fn real_mode_int_and_iret() {
    // SDM Vol. 3A §20.1.4: push FLAGS, CS, IP; clear IF/TF; IRET pops them.
    let mut t = TestMachine::new(TestMode::Real, &[]);
    t.mem.write_le(0x21 * 4, 4, 0x2000_0100).unwrap();
    t.cpu.s.rflags |= fl::IF;
    run1(&mut t, &[0xcd, 0x21]).unwrap();
    assert_eq!(
        (t.cpu.s.seg[sreg::CS].selector, t.cpu.s.rip),
        (0x2000, 0x100)
    );
    assert_eq!(t.cpu.s.rflags & fl::IF, 0);
    run1(&mut t, &[0xcf]).unwrap();
    assert_eq!((t.cpu.s.seg[sreg::CS].selector, t.cpu.s.rip), (0x1000, 2));
    assert_ne!(t.cpu.s.rflags & fl::IF, 0);
}

#[test]
fn call_to_tss_and_iret_with_nt_switch_tasks() {
    // SDM Vol. 3A §7.3, Table 7-2: CALL sets the back link and NT and marks the new TSS busy;
    // IRET with NT returns through the back link and clears the busy bit.
    let mut t = machine(TestMode::Flat32);
    let new_tss = 0x3200u64;
    t.mem
        .write_le(GDT + 0x60, 8, 0x67 | (new_tss << 16) | (0x89 << 40))
        .unwrap();
    t.cpu.s.gdtr.limit = 0x67;
    t.mem.write_le(GDT + 0x28 + 5, 1, 0x8b).unwrap();
    t.mem.write_le(new_tss + 0x20, 4, 0x2_0000).unwrap(); // EIP
    t.mem.write_le(new_tss + 0x24, 4, 0x2).unwrap(); // EFLAGS
    t.mem.write_le(new_tss + 0x28, 4, 0x1234).unwrap(); // EAX
    t.mem.write_le(new_tss + 0x38, 4, 0x6_0000).unwrap(); // ESP
    for (i, s) in [0x10u64, 0x08, 0x10, 0x10, 0x10, 0x10].iter().enumerate() {
        t.mem
            .write_le(new_tss + 0x48 + 4 * i as u64, 2, *s)
            .unwrap();
    }
    t.cpu.s.gpr[reg::RAX] = 0x77;
    t.cpu.s.rip = 0x10_0000;
    let call = asm(32, |a| a.call_far(0x60, 0));
    run1(&mut t, &call).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.rip, s.gpr[reg::RAX], s.gpr[reg::RSP]),
        (0x2_0000, 0x1234, 0x6_0000)
    );
    assert_eq!(s.tr.selector, 0x60);
    assert_ne!(s.rflags & fl::NT, 0);
    assert_ne!(s.cr0 & cr::CR0_TS, 0);
    assert_eq!(t.mem.read_le(new_tss, 2).unwrap(), 0x28, "back link");
    assert_eq!(t.mem.read_le(GDT + 0x60 + 5, 1).unwrap(), 0x8b);
    // The old task's state was saved in its TSS.
    assert_eq!(
        t.mem.read_le(TSS + 0x20, 4).unwrap(),
        0x10_0000 + call.len() as u64
    );
    assert_eq!(t.mem.read_le(TSS + 0x28, 4).unwrap(), 0x77);
    run1(&mut t, &asm(32, |a| a.iretd())).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.rip, s.gpr[reg::RAX], s.tr.selector),
        (0x10_0000 + call.len() as u64, 0x77, 0x28)
    );
    assert_eq!(
        t.mem.read_le(GDT + 0x60 + 5, 1).unwrap(),
        0x89,
        "IRET cleared busy"
    );
    // A JMP to a busy TSS is #GP(sel).
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.jmp_far(0x28, 0))),
        Err(Fault::Gp(0x28))
    );
}

#[test]
fn call_to_16bit_tss_and_back() {
    // SDM Vol. 3A §7.6, Figure 7-10: a 16-bit TSS holds IP, FLAGS, AX..DI, ES/CS/SS/DS and the
    // LDT selector; CR3 stays, FS/GS become null, the old 32-bit task is saved in full.
    let mut t = machine(TestMode::Flat32);
    let new_tss = 0x3200u64;
    // 0x60: 16-bit available TSS (type 1), limit 0x2B; 0x68: 16-bit code, 0x70: 16-bit data.
    t.mem
        .write_le(GDT + 0x60, 8, 0x2b | (new_tss << 16) | (0x81 << 40))
        .unwrap();
    t.mem.write_le(GDT + 0x68, 8, desc(0x9a, 0x0)).unwrap();
    t.mem.write_le(GDT + 0x70, 8, desc(0x92, 0x0)).unwrap();
    t.cpu.s.gdtr.limit = 0x77;
    t.mem.write_le(GDT + 0x28 + 5, 1, 0x8b).unwrap();
    t.mem.write_le(new_tss + 0x0e, 2, 0x1234).unwrap(); // IP
    t.mem.write_le(new_tss + 0x10, 2, 0x0002).unwrap(); // FLAGS
    t.mem.write_le(new_tss + 0x12, 2, 0xbeef).unwrap(); // AX
    t.mem.write_le(new_tss + 0x1a, 2, 0x8000).unwrap(); // SP
    for (i, s) in [0x70u64, 0x68, 0x70, 0x70].iter().enumerate() {
        t.mem
            .write_le(new_tss + 0x22 + 2 * i as u64, 2, *s)
            .unwrap();
    }
    t.cpu.s.seg[sreg::FS].selector = 0x10;
    t.cpu.s.gpr[reg::RAX] = 0x1122_3344;
    t.cpu.s.rip = 0x10_0000;
    let old_cr3 = t.cpu.s.cr3;
    let call = asm(32, |a| a.call_far(0x60, 0));
    run1(&mut t, &call).unwrap();
    let s = t.cpu.s;
    assert_eq!(s.rip, 0x1234);
    assert_eq!(s.gpr[reg::RAX] & 0xffff, 0xbeef);
    assert_eq!(s.gpr[reg::RSP] & 0xffff, 0x8000);
    assert_eq!(s.seg[sreg::CS].selector, 0x68);
    assert!(!s.seg[sreg::CS].db(), "16-bit code segment");
    assert_eq!(s.seg[sreg::FS].selector, 0, "no FS in a 16-bit TSS");
    assert_eq!(s.tr.selector, 0x60);
    assert_eq!(s.tr.typ(), 3, "busy 16-bit TSS");
    assert_eq!(s.cr3, old_cr3);
    assert_ne!(s.rflags & fl::NT, 0);
    assert_eq!(t.mem.read_le(new_tss, 2).unwrap(), 0x28, "back link");
    assert_eq!(t.mem.read_le(TSS + 0x28, 4).unwrap(), 0x1122_3344);
    // 16-bit IRET with NT: back to the 32-bit task; the 16-bit task's state is saved in 16 bits.
    t.cpu.s.gpr[reg::RAX] = 0xdead_0042;
    run1(&mut t, &asm(16, |a| a.iret())).unwrap();
    let s = t.cpu.s;
    assert_eq!(
        (s.rip, s.gpr[reg::RAX], s.tr.selector),
        (0x10_0000 + call.len() as u64, 0x1122_3344, 0x28)
    );
    assert_eq!(s.seg[sreg::FS].selector, 0x10);
    assert_eq!(t.mem.read_le(new_tss + 0x12, 2).unwrap(), 0x0042);
    assert_eq!(
        t.mem.read_le(new_tss + 0x0e, 2).unwrap(),
        0x1235,
        "IP after IRET"
    );
    assert_eq!(t.mem.read_le(GDT + 0x60 + 5, 1).unwrap(), 0x81, "not busy");
    // A 16-bit TSS with a limit below 0x2B is #TS(sel).
    t.mem
        .write_le(GDT + 0x60, 8, 0x2a | (new_tss << 16) | (0x81 << 40))
        .unwrap();
    assert_eq!(
        run1(&mut t, &asm(32, |a| a.jmp_far(0x60, 0))),
        Err(Fault::Ts(0x60))
    );
}
