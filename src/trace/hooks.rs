//! The trace hooks. Each is called behind a single `cpu.trace.is_on()` test at its hook point:
//! the traced interpreter step ([`step`], from `exec::interp::step`), page walks ([`walk`],
//! from `Ctx::translate` on a TLB miss), the ring-compression layer ([`ring`], from
//! `ring::exec`), event delivery ([`event`], from `cpu::interrupt::deliver`) and data accesses
//! ([`super::Tracer::mem_access`], from `cpu::mem`); and in the JIT ([`jit_gate`] and
//! [`jit_block`] from the dispatcher, [`jit_insn_begin`] / [`jit_insn_end`] around the helper's
//! instructions). Only [`step`] and [`block_at_step`] are generic over the platform; the others
//! take the CPU alone, so they are compiled once.

use super::record::{self, Change, Hex, Record};
use super::{Kinds, Tracer};
use crate::cpu::interrupt::{EventKind, Shutdown};
use crate::cpu::{Cpu, CpuState, Ctx, Fault, Platform, Res};
use crate::exec::interp;
use crate::mmu::walk::{self, Access, PageFault, Requester, Translation, WalkStep};
use crate::mmu::GuestMemory;
use iced_x86::Instruction;
use jit::abi::{cr, flags as fl, sreg};

/// The mode bits whose changes `mode` records report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSnap {
    cpl: u8,
    pe: bool,
    pg: bool,
    lma: bool,
    csl: bool,
}

impl ModeSnap {
    fn of(s: &CpuState) -> Self {
        ModeSnap {
            cpl: s.cpl,
            pe: s.cr0 & cr::CR0_PE != 0,
            pg: s.cr0 & cr::CR0_PG != 0,
            lma: s.efer & cr::EFER_LMA != 0,
            csl: s.seg[sreg::CS].long(),
        }
    }
}

/// The execution mode's name: `real`, `v86`, `prot16`, `prot32`, `compat16`, `compat32`,
/// `long64`.
pub fn mode_name(cpu: &Cpu) -> &'static str {
    mode_name_in(&cpu.s)
}

/// [`mode_name`] of a saved state.
fn mode_name_in(s: &CpuState) -> &'static str {
    let cs = &s.seg[sreg::CS];
    let big = cs.db();
    if s.cr0 & cr::CR0_PE == 0 {
        "real"
    } else if s.rflags & fl::VM != 0 {
        "v86"
    } else if s.efer & cr::EFER_LMA != 0 {
        if cs.long() {
            "long64"
        } else if big {
            "compat32"
        } else {
            "compat16"
        }
    } else if big {
        "prot32"
    } else {
        "prot16"
    }
}

/// Linear address of `rip` in the current code segment.
pub fn linear_ip(cpu: &Cpu, rip: u64) -> u64 {
    if cpu.mode64() {
        rip
    } else {
        cpu.s.seg[sreg::CS].base.wrapping_add(rip & 0xffff_ffff) & 0xffff_ffff
    }
}

/// Linear address of `rip` in the code segment of state `s` (64-bit mode: `rip` itself).
fn linear_ip_in(s: &CpuState, rip: u64) -> u64 {
    if s.efer & cr::EFER_LMA != 0 && s.seg[sreg::CS].long() {
        rip
    } else {
        s.seg[sreg::CS].base.wrapping_add(rip & 0xffff_ffff) & 0xffff_ffff
    }
}

/// The instruction events are attributed to, as (number, linear address, passes the filter):
/// the one being executed (set by the traced step, or by the JIT's helper), or between
/// instructions the next one to run in state `s` (for an interrupt: the state before delivery).
fn attribution(cpu: &Cpu, t: &Tracer, s: &CpuState) -> (u64, u64, bool) {
    if let Some((n, la)) = t.cur_insn {
        return (n, la, t.cur_pass.unwrap_or(false));
    }
    let la = linear_ip_in(s, s.rip);
    (cpu.icount, la, t.filter.passes(cpu.icount, la, s.cpl))
}

/// [`attribution`] in the current state.
fn current(cpu: &Cpu) -> Option<(u64, u64, bool)> {
    cpu.trace.get().map(|t| attribution(cpu, t, &cpu.s))
}

/// Emits `mode` records for what changed since the last check; `at` is the instruction the
/// change is attributed to (see [`attribution`]).
fn check_mode(cpu: &mut Cpu, at: (u64, u64, bool), cause: &dyn Fn() -> String) {
    let now = ModeSnap::of(&cpu.s);
    let (n, la, pass) = at;
    let Some(t) = cpu.trace.get_mut() else { return };
    if t.last_mode == Some(now) {
        return;
    }
    let Some(last) = t.last_mode.replace(now) else {
        return;
    };
    if !t.kinds.has(Kinds::MODE) || !pass {
        return;
    }
    let name = mode_name(cpu);
    let Some(t) = cpu.trace.get_mut() else { return };
    let b = |x: bool| u64::from(x);
    let items: [(&'static str, u64, u64); 5] = [
        ("cpl", u64::from(last.cpl), u64::from(now.cpl)),
        ("cr0.pe", b(last.pe), b(now.pe)),
        ("cr0.pg", b(last.pg), b(now.pg)),
        ("efer.lma", b(last.lma), b(now.lma)),
        ("cs.l", b(last.csl), b(now.csl)),
    ];
    let cause = cause();
    for (what, from, to) in items {
        if from != to {
            t.emit(Record::Mode(record::Mode {
                n,
                la: Hex(la),
                what,
                from,
                to,
                mode: name,
                cause: cause.clone(),
            }));
        }
    }
}

/// [`check_mode`] attributed to the current instruction.
fn check_mode_now(cpu: &mut Cpu, cause: &dyn Fn() -> String) {
    if let Some(at) = current(cpu) {
        check_mode(cpu, at, cause);
    }
}

/// The block being executed, for `block` records: the IPs of its instructions and the
/// instruction number of its first one. Execution is still inside it while the next
/// instruction to run is number `start + k` at `ips[k]`; an event delivery ends it.
#[derive(Debug, Clone)]
pub struct BlockRun {
    ips: Vec<u64>,
    start: u64,
}

impl BlockRun {
    fn inside(&self, icount: u64, rip: u64) -> bool {
        icount
            .checked_sub(self.start)
            .and_then(|k| self.ips.get(usize::try_from(k).ok()?))
            .is_some_and(|&ip| ip == rip)
    }
}

/// The instructions of the block at CS:`rip` (linear `la`, physical `pa`), with the
/// boundaries the JIT gives its translations (`exec::jit`): the decoder's block scan
/// (`decoder::scan_block`, at most `exec::jit::MAX_BLOCK_INSNS` instructions) reading only
/// this physical page, cut where `jit::ir::lower` cuts it. An instruction that straddles into
/// the next page (which the JIT interprets) is a block of its own.
fn scan(
    cpu: &Cpu,
    mem: &GuestMemory,
    mode: decoder::Mode,
    la: u64,
    pa: u64,
) -> Vec<(Instruction, u8)> {
    let cs_base = cpu.s.seg[sreg::CS].base;
    let rip = cpu.s.rip;
    let page_la = la & !0xfff;
    let pa_page = pa & !0xfff;
    let mut fetch = |a: u64, buf: &mut [u8]| -> Result<usize, decoder::FetchFault> {
        let fault = decoder::FetchFault {
            addr: a,
            kind: decoder::FetchFaultKind::GeneralProtection,
        };
        if a & !0xfff != page_la {
            return Err(fault);
        }
        let n = buf.len().min((0x1000 - (a & 0xfff)) as usize);
        mem.read(pa_page | (a & 0xfff), &mut buf[..n])
            .map_err(|_| fault)?;
        Ok(n)
    };
    let max = crate::exec::jit::MAX_BLOCK_INSNS;
    if let Ok(b) = decoder::scan_block(mode, cs_base, rip, &mut fetch, max) {
        if let Some(ir) = jit::ir::lower(&b) {
            return b.insns[..ir.ninsns as usize]
                .iter()
                .map(|d| (d.insn, d.len))
                .collect();
        }
    }
    let s = &cpu.s;
    let mut peek = |a: u64, buf: &mut [u8]| -> Result<usize, decoder::FetchFault> {
        match crate::mmu::debug::peek(s, mem, a, buf) {
            0 => Err(decoder::FetchFault {
                addr: a,
                kind: decoder::FetchFaultKind::PageFault { error_code: 0x10 },
            }),
            n => Ok(n),
        }
    };
    decoder::scan_block(mode, cs_base, rip, &mut peek, 1)
        .map(|b| b.insns.iter().take(1).map(|d| (d.insn, d.len)).collect())
        .unwrap_or_default()
}

/// Starts the block of `insns` at the current RIP (linear `la`, physical `pa`, code page
/// generation `gen`) and writes its `block` record if it passes the filter.
#[allow(clippy::too_many_arguments)]
fn start_block(
    cpu: &mut Cpu,
    mem: &GuestMemory,
    la: u64,
    pa: u64,
    mode: decoder::Mode,
    insns: &[(Instruction, u8)],
    gen: u32,
    engine: &'static str,
) {
    let n = cpu.icount;
    let rip = cpu.s.rip;
    let cs = cpu.s.seg[sreg::CS].selector;
    let cpl = cpu.cpl();
    let mname = mode_name(cpu);
    let Some(t) = cpu.trace.get_mut() else { return };
    t.blk = Some(BlockRun {
        ips: insns.iter().map(|(i, _)| i.ip()).collect(),
        start: n,
    });
    if !t.filter.passes(n, la, cpl) {
        return;
    }
    let key = (pa, mode as u8);
    let show = t.seen.get(&key) != Some(&gen);
    if show {
        if t.seen.len() >= super::MAX_SEEN_BLOCKS {
            t.seen.clear();
        }
        t.seen.insert(key, gen);
    }
    let mut asm = Vec::new();
    if show {
        use iced_x86::Formatter;
        for (i, len) in insns {
            let off = i.ip().wrapping_sub(rip) & 0xfff;
            let mut bytes = vec![0u8; usize::from(*len)];
            let _ = mem.read(pa.wrapping_add(off), &mut bytes);
            let mut text = String::new();
            t.fmt.format(i, &mut text);
            asm.push(format!(
                "{:#x}  {:<20} {text}",
                la.wrapping_add(off),
                record::hex_bytes(&bytes)
            ));
        }
    }
    let size = insns.iter().map(|(_, l)| u64::from(*l)).sum();
    t.emit(Record::Block(record::Block {
        n,
        cs: Hex(u64::from(cs)),
        rip: Hex(rip),
        la: Hex(la),
        pa: Hex(pa),
        cpl,
        mode: mname,
        insns: insns.len() as u64,
        size,
        engine,
        asm,
    }));
}

/// `block` tracing in the interpreter's traced step, before the instruction at linear `la`
/// runs: if it does not continue the current block, a block starts here (the decoder's
/// boundaries, as the JIT would translate it: `scan`). The code page is translated the way
/// the JIT's dispatcher translates it before looking for a block (the instruction fetch that
/// follows hits the TLB), so `walk` records come in the same order under both engines.
pub fn block_at_step<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, la: u64) {
    let (n, rip) = (ctx.cpu.icount, ctx.cpu.s.rip);
    let Some(t) = ctx.cpu.trace.get_mut() else {
        return;
    };
    if !t.kinds.has(Kinds::BLOCK) || t.blk.as_ref().is_some_and(|b| b.inside(n, rip)) {
        return;
    }
    t.blk = None;
    if ctx.cpu.mode64() && !crate::cpu::mem::canonical(rip) {
        return;
    }
    // Code that is not in RAM, or whose fetch faults (the fault is traced as `exc`).
    let Ok(p) = ctx.translate(la, Access::Execute, false) else {
        return;
    };
    if p.host.is_none() {
        return;
    }
    start_block_at(ctx.cpu, ctx.mem, la, p.pa_page | (la & 0xfff));
}

/// [`block_at_step`] once the code's physical address `pa` is known.
fn start_block_at(cpu: &mut Cpu, mem: &GuestMemory, la: u64, pa: u64) {
    let mode = super::coverage::decode_mode(cpu);
    let insns = scan(cpu, mem, mode, la, pa);
    if insns.is_empty() {
        return;
    }
    let gen = cpu.dcache.track_page(pa & !0xfff);
    start_block(cpu, mem, la, pa, mode, &insns, gen, "interp");
}

/// The JIT's dispatcher, tracing on, before it looks for a compiled block: takes the first mode
/// snapshot, and says whether a compiled block may run. Not when `insn`
/// records are wanted or a watchpoint is set (both need every instruction: the interpreter's
/// traced step produces them), nor in the middle of a block the tracer is stepping through
/// (which keeps the `block` sequence the interpreter's).
#[inline(never)]
pub fn jit_gate(cpu: &mut Cpu) -> bool {
    // The first look at the mode (later changes come from ring-layer instructions and event
    // deliveries, which check for themselves; the traced step also checks before each step).
    if cpu.trace.get().is_some_and(|t| t.last_mode.is_none()) {
        check_mode_now(cpu, &|| "state change".to_string());
    }
    if cpu.trace.has_watchpoints() {
        return false;
    }
    match cpu.trace.get() {
        None => true,
        Some(t) => {
            !t.kinds.has(Kinds::INSN)
                && !t
                    .blk
                    .as_ref()
                    .is_some_and(|b| b.inside(cpu.icount, cpu.s.rip))
        }
    }
}

/// The JIT's dispatcher is about to enter a compiled block at linear `la` / physical `pa`
/// (page generation `gen`) made of `insns` (instruction, length); `remaining` is its
/// instruction allowance. Writes the `block` record and returns the allowance to use: with
/// `block` tracing, one pass through the block (a loop back to its start exits to the
/// dispatcher, so every iteration gets its record, as under the interpreter).
#[inline(never)]
pub fn jit_block(
    cpu: &mut Cpu,
    mem: &GuestMemory,
    la: u64,
    pa: u64,
    gen: u32,
    insns: &mut dyn Iterator<Item = (Instruction, u8)>,
    remaining: u64,
) -> u64 {
    if !cpu.trace.get().is_some_and(|t| t.kinds.has(Kinds::BLOCK)) {
        return remaining;
    }
    let insns: Vec<_> = insns.collect();
    let mode = super::coverage::decode_mode(cpu);
    start_block(cpu, mem, la, pa, mode, &insns, gen, "jit");
    (insns.len() as u64).min(remaining)
}

/// The JIT's helper is about to execute instruction number `cpu.icount` at `cpu.s.rip`:
/// events it causes are attributed to it, as in the traced step.
#[inline(never)]
pub fn jit_insn_begin(cpu: &mut Cpu) {
    let n = cpu.icount;
    let la = linear_ip(cpu, cpu.s.rip);
    let cpl = cpu.cpl();
    if let Some(t) = cpu.trace.get_mut() {
        t.cur_pass = Some(t.filter.passes(n, la, cpl));
        t.cur_insn = Some((n, la));
    }
}

/// The JIT's helper retired `insn` (or delivered the exception it raised: `faulted`); `ring`:
/// it is an instruction for the ring-compression layer. Only those, and event deliveries
/// (which check for themselves), change CPL, CR0.PE/PG, EFER.LMA or CS.L: far transfers,
/// IRET, SYSCALL/SYSRET, SYSENTER/SYSEXIT, MOV CR0, LMSW, WRMSR are all sensitive or privileged.
#[inline(never)]
pub fn jit_insn_end(cpu: &mut Cpu, insn: &Instruction, faulted: bool, ring: bool) {
    if ring || faulted {
        let m = insn.mnemonic();
        check_mode_now(cpu, &|| {
            if faulted {
                "exception delivery".to_string()
            } else {
                format!("{m:?}").to_lowercase()
            }
        });
    }
    if let Some(t) = cpu.trace.get_mut() {
        t.cur_pass = None;
        t.cur_insn = None;
    }
}

/// The traced interpreter step (tracing on). Same semantics as the untraced step: it uses the
/// exact fetch path (`Ctx::fetch_decode`, no decoded-instruction cache) when the instruction's
/// bytes are needed for an `insn` record, the cached one otherwise.
#[inline(never)]
pub fn step<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Result<(), Shutdown> {
    let n = ctx.cpu.icount;
    let rip = ctx.cpu.s.rip;
    let la = linear_ip(ctx.cpu, rip);
    let cpl = ctx.cpu.cpl();
    // Catch mode changes made between instructions (e.g. by a debugger or a test harness).
    check_mode_now(ctx.cpu, &|| "state change".to_string());
    block_at_step(ctx, la);
    let Some(t) = ctx.cpu.trace.get_mut() else {
        // Only watchpoints are attached.
        return interp::step_untraced(ctx);
    };
    let pass = t.filter.passes(n, la, cpl);
    t.cur_pass = Some(pass);
    t.cur_insn = Some((n, la));
    let want_insn = pass && t.kinds.has(Kinds::INSN);
    // The state before, for the `insn` record's register changes (a large copy: only then).
    let before = if want_insn { Some(ctx.cpu.s) } else { None };
    if want_insn {
        t.recording = true;
        t.mem.clear();
        t.mem_dropped = 0;
    }
    interp::begin_step(ctx);
    let mut decoded = None;
    let fetched: Res<(Instruction, u8, crate::cpu::dispatch::Family, u64)> = if want_insn {
        ctx.fetch_decode().map(|d| {
            decoded = Some(d);
            (
                d.insn,
                d.len,
                crate::cpu::dispatch::Family::Unknown,
                u64::MAX,
            )
        })
    } else {
        ctx.fetch_cached()
    };
    let mnemonic = fetched.as_ref().ok().map(|(i, ..)| i.mnemonic());
    let r = interp::execute_fetched(ctx, rip, fetched);
    if let Some(before) = before {
        let mut after = ctx.cpu.s;
        if r.is_ok() {
            after.rip = ctx.next_rip;
        }
        let changes = diff(&before, &after, ctx.cpu.bitness());
        let Some(t) = ctx.cpu.trace.get_mut() else {
            return interp::retire(ctx, r);
        };
        let (bytes, asm) = match &decoded {
            Some(d) => (record::hex_bytes(d.bytes()), t.disasm.format(d)),
            None => (String::new(), "(fetch faulted)".to_string()),
        };
        let rec = Record::Insn(record::Insn {
            n,
            cs: Hex(u64::from(before.seg[sreg::CS].selector)),
            rip: Hex(rip),
            la: Hex(la),
            cpl,
            mode: mode_name_in(&before),
            bytes,
            asm,
            changes,
            mem: std::mem::take(&mut t.mem),
            mem_dropped: t.mem_dropped,
            fault: r.as_ref().err().map(Fault::name),
        });
        t.recording = false;
        t.write(&rec);
        if let Record::Insn(i) = rec {
            // Reuse the allocation.
            t.mem = i.mem;
            t.mem.clear();
        }
        let pending = std::mem::take(&mut t.pending);
        for p in &pending {
            t.write(p);
        }
        t.pending = pending;
        t.pending.clear();
    }
    let fault = r.as_ref().err().map(Fault::name);
    let res = interp::retire(ctx, r);
    check_mode_now(ctx.cpu, &|| match (&fault, mnemonic) {
        (Some(f), _) => format!("{f} delivery"),
        (None, Some(m)) => format!("{m:?}").to_lowercase(),
        (None, None) => "?".to_string(),
    });
    if let Some(t) = ctx.cpu.trace.get_mut() {
        t.cur_pass = None;
        t.cur_insn = None;
    }
    res
}

const GPR64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const GPR32: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
const GPR16: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
const SREG: [&str; 6] = ["es", "cs", "ss", "ds", "fs", "gs"];
const FLAGS: [(u64, &str); 17] = [
    (fl::CF, "CF"),
    (fl::PF, "PF"),
    (fl::AF, "AF"),
    (fl::ZF, "ZF"),
    (fl::SF, "SF"),
    (fl::TF, "TF"),
    (fl::IF, "IF"),
    (fl::DF, "DF"),
    (fl::OF, "OF"),
    (1 << 12, "IOPL0"),
    (1 << 13, "IOPL1"),
    (fl::NT, "NT"),
    (fl::RF, "RF"),
    (fl::VM, "VM"),
    (fl::AC, "AC"),
    (fl::VIF, "VIF"),
    (fl::ID, "ID"),
];

/// The flags set (`+ZF`) and cleared (`-CF`) between two RFLAGS values.
pub fn flag_changes(old: u64, new: u64) -> String {
    let mut s = String::new();
    for (bit, name) in FLAGS {
        if (old ^ new) & bit != 0 {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push(if new & bit != 0 { '+' } else { '-' });
            s.push_str(name);
        }
    }
    s
}

/// Registers that differ between `a` and `b` (GPRs named for `bitness`, RFLAGS, segment
/// selectors and bases of FS/GS, LDTR, TR, GDTR/IDTR bases, CR0-CR4, CR8, EFER).
pub fn diff(a: &CpuState, b: &CpuState, bitness: u32) -> Vec<Change> {
    let mut v = Vec::new();
    let mut ch = |reg: &'static str, old: u64, new: u64| {
        if old != new {
            v.push(Change {
                reg,
                old: Hex(old),
                new: Hex(new),
                detail: String::new(),
            });
        }
    };
    for i in 0..16 {
        let name = match bitness {
            64 => GPR64[i],
            _ if i >= 8 => GPR64[i],
            32 => GPR32[i],
            _ if (a.gpr[i] ^ b.gpr[i]) >> 16 != 0 => GPR32[i],
            _ => GPR16[i],
        };
        ch(name, a.gpr[i], b.gpr[i]);
    }
    for (i, name) in SREG.iter().enumerate() {
        ch(
            name,
            u64::from(a.seg[i].selector),
            u64::from(b.seg[i].selector),
        );
    }
    ch("fs.base", a.seg[sreg::FS].base, b.seg[sreg::FS].base);
    ch("gs.base", a.seg[sreg::GS].base, b.seg[sreg::GS].base);
    ch("kernel_gs_base", a.msr.kernel_gs_base, b.msr.kernel_gs_base);
    ch(
        "ldtr",
        u64::from(a.ldtr.selector),
        u64::from(b.ldtr.selector),
    );
    ch("tr", u64::from(a.tr.selector), u64::from(b.tr.selector));
    ch("gdtr.base", a.gdtr.base, b.gdtr.base);
    ch("idtr.base", a.idtr.base, b.idtr.base);
    ch("cr0", a.cr0, b.cr0);
    ch("cr2", a.cr2, b.cr2);
    ch("cr3", a.cr3, b.cr3);
    ch("cr4", a.cr4, b.cr4);
    ch("cr8", a.cr8, b.cr8);
    ch("efer", a.efer, b.efer);
    if a.rflags != b.rflags {
        v.push(Change {
            reg: "rflags",
            old: Hex(a.rflags),
            new: Hex(b.rflags),
            detail: flag_changes(a.rflags, b.rflags),
        });
    }
    v
}

const TABLES: [&str; 5] = ["?", "PT", "PD", "PDPT", "PML4"];

/// A page walk with its trace (the TLB missed and paging is on).
#[inline(never)]
pub fn walk(
    cpu: &mut Cpu,
    mem: &mut GuestMemory,
    la: u64,
    access: Access,
    who: Requester,
) -> Result<Translation, PageFault> {
    let at = cpu
        .trace
        .get()
        .filter(|t| t.kinds.has(Kinds::WALK))
        .map(|t| attribution(cpu, t, &cpu.s))
        .filter(|a| a.2);
    let Some((n, ..)) = at else {
        return walk::walk(&cpu.s, mem, la, access, who, None);
    };
    let mut steps: Vec<WalkStep> = Vec::with_capacity(4);
    let r = walk::walk(&cpu.s, mem, la, access, who, Some(&mut steps));
    let paging = if cpu.s.cr4 & cr::CR4_PAE == 0 {
        "2-level"
    } else if cpu.long_mode() {
        "4-level"
    } else {
        "pae"
    };
    let (pa, page_size, ma, pf_code) = match &r {
        Ok(t) => {
            let pa = t.pa_page | (la & 0xfff);
            let ma = match mem.page(t.pa_page) {
                Some(h) => format!("ram{}+{:#x}", h.region, h.offset + (la & 0xfff)),
                None => "mmio".to_string(),
            };
            (Some(Hex(pa)), Some(t.page_size), Some(ma), None)
        }
        Err(pf) => (None, None, None, Some(Hex(u64::from(pf.code)))),
    };
    let rec = Record::Walk(record::Walk {
        n,
        va: Hex(la),
        access: match access {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "exec",
        },
        user: who.user,
        paging,
        levels: steps
            .iter()
            .map(|s| record::Level {
                table: TABLES[usize::from(s.level).min(4)],
                entry_addr: Hex(s.entry_addr),
                entry: Hex(s.entry),
            })
            .collect(),
        pa,
        page_size,
        ma,
        pf_code,
    });
    if let Some(t) = cpu.trace.get_mut() {
        t.emit(rec);
    }
    r
}

/// An instruction handled by the ring-compression layer (`cpl` is the CPL it trapped at).
#[inline(never)]
pub fn ring(cpu: &mut Cpu, mode: decoder::Mode, insn: &Instruction, cpl: u8, r: &Res<()>) {
    let Some((n, la, pass)) = current(cpu) else {
        return;
    };
    let Some(t) = cpu.trace.get_mut() else { return };
    if !t.kinds.has(Kinds::RING) || !pass {
        return;
    }
    let mut text = String::new();
    {
        use iced_x86::Formatter;
        t.fmt.format(insn, &mut text);
    }
    let c = decoder::classify(insn, mode);
    let class = if c.contains(decoder::Class::PRIVILEGED) {
        "privileged"
    } else if c.contains(decoder::Class::IOPL_SENSITIVE) {
        "iopl-sensitive"
    } else {
        "sensitive"
    };
    let rec = Record::Ring(record::Ring {
        n,
        la: Hex(la),
        cpl,
        insn: text,
        class,
        result: match r {
            Ok(()) => "done".to_string(),
            Err(f) => f.name(),
        },
    });
    if let Some(t) = cpu.trace.get_mut() {
        t.emit(rec);
    }
}

const VECTORS: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "res", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "res", "res", "res", "res",
    "res", "res", "res", "res", "#SX", "res",
];

/// An interrupt or exception delivery: `before` is the state before delivery, `handler_rip`
/// the RIP delivery left (the handler's entry point on success).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub fn event(
    cpu: &mut Cpu,
    before: &CpuState,
    vector: u8,
    kind: EventKind,
    error_code: Option<u32>,
    return_rip: u64,
    handler_rip: u64,
    r: &Res<()>,
) {
    let name = VECTORS.get(usize::from(vector)).copied().unwrap_or("int");
    let (event, name) = match kind {
        EventKind::External => ("external", if vector < 32 { name } else { "irq" }),
        EventKind::Nmi => ("nmi", name),
        EventKind::Exception => ("fault", name),
        EventKind::SoftException => ("trap", name),
        EventKind::Software | EventKind::Icebp => ("software", "int"),
    };
    let Some(at) = cpu.trace.get().map(|t| attribution(cpu, t, before)) else {
        return;
    };
    if let Some(t) = cpu.trace.get_mut() {
        // Delivery leaves the block being executed (`block` records).
        t.blk = None;
    }
    let want = cpu.trace.get().is_some_and(|t| t.kinds.has(Kinds::EXC)) && at.2;
    if want {
        let rec = Record::Exc(record::Exc {
            n: at.0,
            vector,
            name,
            event,
            error_code: error_code.map(|c| Hex(u64::from(c))),
            cr2: (vector == 14 && kind == EventKind::Exception).then_some(Hex(cpu.s.cr2)),
            cpl: before.cpl,
            from: format!("{:04x}:{:x}", before.seg[sreg::CS].selector, return_rip),
            to: match r {
                Ok(()) => format!("{:04x}:{:x}", cpu.s.seg[sreg::CS].selector, handler_rip),
                Err(f) => format!("failed: {}", f.name()),
            },
        });
        if let Some(t) = cpu.trace.get_mut() {
            t.emit(rec);
        }
    }
    if r.is_ok() {
        check_mode(cpu, at, &|| {
            if kind == EventKind::Software {
                format!("int {vector:#x}")
            } else if vector < 32 {
                format!("{name} delivery")
            } else {
                format!("interrupt {vector:#x}")
            }
        });
    }
}
