//! gdb `monitor` commands: what gdb's register layouts cannot show about a protected- or
//! long-mode machine (gdb's i386 / x86-64 layouts have no control registers, EFER, descriptor
//! table registers or segment bases), and the page walk behind a linear address.
//!
//! - `monitor cr`: CR0, CR2, CR3, CR4, CR8 and EFER with their flags decoded, FS.base, GS.base,
//!   IA32_KERNEL_GS_BASE, GDTR, IDTR, LDTR, TR, CPL and the execution mode;
//! - `monitor walk VA`: the guest page walk of linear address VA (hexadecimal), level by level
//!   (table, index, entry address and value), to the guest physical address (PA) and the host
//!   memory holding it (MA: RAM mapping and offset), or to the page fault a supervisor read
//!   would take; read-only (no accessed / dirty bit set, TLB untouched; Intel SDM Vol. 3A §4.3,
//!   §4.4, §4.5);
//! - `monitor stats`: the `--stats` report so far;
//! - `monitor help`.

use crate::machine::Machine;
use crate::mmu::walk::{self, WalkStep};
use jit::abi::{cr, sreg, Segment};
use std::fmt::Write;
use std::time::Duration;

const CR0_BITS: [(u32, &str); 11] = [
    (0, "PE"),
    (1, "MP"),
    (2, "EM"),
    (3, "TS"),
    (4, "ET"),
    (5, "NE"),
    (16, "WP"),
    (18, "AM"),
    (29, "NW"),
    (30, "CD"),
    (31, "PG"),
];
const CR4_BITS: [(u32, &str); 19] = [
    (0, "VME"),
    (1, "PVI"),
    (2, "TSD"),
    (3, "DE"),
    (4, "PSE"),
    (5, "PAE"),
    (6, "MCE"),
    (7, "PGE"),
    (8, "PCE"),
    (9, "OSFXSR"),
    (10, "OSXMMEXCPT"),
    (11, "UMIP"),
    (12, "LA57"),
    (16, "FSGSBASE"),
    (17, "PCIDE"),
    (18, "OSXSAVE"),
    (20, "SMEP"),
    (21, "SMAP"),
    (22, "PKE"),
];
const EFER_BITS: [(u32, &str); 4] = [(0, "SCE"), (8, "LME"), (10, "LMA"), (11, "NXE")];

fn flags(v: u64, names: &[(u32, &str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(b, _)| v >> b & 1 != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("  [ {} ]", set.join(" "))
    }
}

const HELP: &str = "rinx monitor commands:
  cr        control registers, EFER, segment bases, GDTR/IDTR/LDTR/TR, CPL and mode
  walk VA   page walk of linear address VA (hex): each level's entry, PA, host memory (MA)
  stats     execution statistics so far (as --stats prints at exit)
  help      this text";

/// Runs the monitor command `cmd` on `m` (stopped under the debugger) and returns its output.
/// `since` is the time the run has lasted (for `stats`). Unknown commands and bad arguments
/// give an error message, never a panic: the text comes from the debugger's user.
pub fn run(m: &Machine, since: Duration, cmd: &str) -> String {
    let mut words = cmd.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (None | Some("help"), None, _) => HELP.to_string(),
        (Some("cr"), None, _) => control_registers(m),
        (Some("walk"), Some(va), None) => match parse_hex(va) {
            Some(va) => page_walk(m, va),
            None => format!("walk: '{va}' is not a hexadecimal address (e.g. 0x1f0000)"),
        },
        (Some("walk"), _, _) => "usage: monitor walk VA (a linear address, hexadecimal)".into(),
        (Some("stats"), None, _) => {
            let mut s = crate::trace::stats::report(&m.cpu, since, m.halted_time);
            s.push_str(
                "  (wall time includes time stopped in the debugger; while gdb is attached the\n   guest runs on the interpreter's instrumented loop, whatever --engine says)\n",
            );
            if let crate::exec::Engine::Jit(j) = &m.engine {
                s.push_str(&crate::trace::stats::jit_report(&j.stats));
            }
            s
        }
        _ => format!("unknown monitor command '{}'\n{HELP}", cmd.trim()),
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim_start_matches("0x").trim_start_matches("0X");
    u64::from_str_radix(&s.replace('_', ""), 16).ok()
}

fn segment(name: &str, s: &Segment) -> String {
    format!(
        "{name:<15}{:#06x}  base={:#x} limit={:#x} attr={:#x}\n",
        s.selector, s.base, s.limit, s.attr
    )
}

fn control_registers(m: &Machine) -> String {
    let c = &m.cpu;
    let s = &c.s;
    let mut o = String::new();
    let _ = writeln!(o, "cr0            {:#x}{}", s.cr0, flags(s.cr0, &CR0_BITS));
    let _ = writeln!(o, "cr2            {:#x}", s.cr2);
    let _ = writeln!(o, "cr3            {:#x}", s.cr3);
    let _ = writeln!(o, "cr4            {:#x}{}", s.cr4, flags(s.cr4, &CR4_BITS));
    let _ = writeln!(o, "cr8            {:#x}", s.cr8);
    let _ = writeln!(
        o,
        "efer           {:#x}{}",
        s.efer,
        flags(s.efer, &EFER_BITS)
    );
    let _ = writeln!(o, "fs_base        {:#x}", s.seg[sreg::FS].base);
    let _ = writeln!(o, "gs_base        {:#x}", s.seg[sreg::GS].base);
    let _ = writeln!(o, "kernel_gs_base {:#x}", s.msr.kernel_gs_base);
    let _ = writeln!(
        o,
        "gdtr           base={:#x} limit={:#x}",
        s.gdtr.base, s.gdtr.limit
    );
    let _ = writeln!(
        o,
        "idtr           base={:#x} limit={:#x}",
        s.idtr.base, s.idtr.limit
    );
    o.push_str(&segment("ldtr", &s.ldtr));
    o.push_str(&segment("tr", &s.tr));
    let paging = if !c.paging() {
        "off"
    } else if s.cr4 & cr::CR4_PAE == 0 {
        "2-level (32-bit)"
    } else if c.long_mode() {
        "4-level"
    } else {
        "PAE"
    };
    let _ = write!(
        o,
        "cpl            {}  mode {}  paging {paging}",
        c.cpl(),
        crate::trace::hooks::mode_name(c)
    );
    o
}

/// Entry size and names of the levels, top first, for the current paging mode.
fn levels(c: &crate::cpu::Cpu) -> (u64, &'static str, &'static [&'static str]) {
    if c.s.cr4 & cr::CR4_PAE == 0 {
        (4, "2-level (32-bit) paging", &["PD", "PT"])
    } else if c.long_mode() {
        (8, "4-level paging", &["PML4", "PDPT", "PD", "PT"])
    } else {
        (8, "PAE paging", &["PDPT", "PD", "PT"])
    }
}

fn page_walk(m: &Machine, va: u64) -> String {
    let c = &m.cpu;
    let mut o = String::new();
    let ma = |pa: u64| match m.mem.page(pa & !0xfff) {
        Some(h) => format!("ram{}+{:#x}", h.region, h.offset + (pa & 0xfff)),
        None => "not RAM (device memory or unbacked)".to_string(),
    };
    if !c.paging() {
        let pa = va & 0xffff_ffff;
        let _ = write!(
            o,
            "va {va:#x}: paging is off (CR0.PG = 0), pa = linear address\n  -> pa {pa:#x} -> ma {}",
            ma(pa)
        );
        return o;
    }
    if c.long_mode() && ((va as i64) << 16 >> 16) as u64 != va {
        return format!("va {va:#x}: not canonical (a reference to it raises #GP, not #PF)");
    }
    let (esize, name, names) = levels(c);
    let _ = writeln!(o, "va {va:#x}: {name}, cr3 {:#x}", c.s.cr3);
    let mut steps: Vec<WalkStep> = Vec::with_capacity(4);
    let r = walk::probe_steps(&c.s, &m.mem, va, &mut steps);
    let top = names.len();
    for st in &steps {
        // `level` counts from the bottom (1 = PT); names are listed from the top.
        let lvl = usize::from(st.level);
        let table = top
            .checked_sub(lvl)
            .and_then(|i| names.get(i))
            .unwrap_or(&"?");
        let index = (st.entry_addr & 0xfff) / esize;
        let bits = entry_bits(st.entry, lvl > 1);
        let _ = writeln!(
            o,
            "  {table:<5}[{index:#5x}]  entry @ {:#x} = {:#x}{bits}",
            st.entry_addr, st.entry
        );
    }
    match r {
        Ok(t) => {
            let pa = t.pa_page | (va & 0xfff);
            let _ = write!(
                o,
                "  -> pa {pa:#x} ({} KiB page{}{}{}) -> ma {}",
                t.page_size / 1024,
                if t.writable {
                    ", writable"
                } else {
                    ", read-only"
                },
                if t.user { ", user" } else { ", supervisor" },
                if t.nx { ", no-execute" } else { "" },
                ma(pa)
            );
        }
        Err(pf) => {
            let _ = write!(
                o,
                "  -> not mapped: a supervisor read would raise #PF with error code {:#x}{}",
                pf.code,
                if pf.code & 1 == 0 {
                    " (P = 0: not present)"
                } else {
                    " (reserved bit set)"
                }
            );
        }
    }
    o
}

/// The flags of a paging-structure entry (Intel SDM Vol. 3A §4.5 tables 4-15 to 4-20).
fn entry_bits(e: u64, non_leaf: bool) -> String {
    if e & 1 == 0 {
        return "  [ not present ]".to_string();
    }
    let mut v = vec!["P"];
    for (bit, n) in [(1, "RW"), (2, "US"), (5, "A"), (6, "D")] {
        if e >> bit & 1 != 0 {
            v.push(n);
        }
    }
    if non_leaf && e >> 7 & 1 != 0 {
        v.push("PS");
    }
    if e >> 63 != 0 {
        v.push("XD");
    }
    format!("  [ {} ]", v.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_rejects_garbage() {
        assert_eq!(parse_hex("0x1f0000"), Some(0x1f0000));
        assert_eq!(parse_hex("ffff8000_00000000"), Some(0xffff_8000_0000_0000));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex("0x"), None);
    }

    #[test]
    fn odd_commands_give_messages_not_panics() {
        let cfg = crate::machine::MachineConfig {
            memory: 16 << 20,
            kernel: None,
            initrd: None,
            cmdline: String::new(),
            serial: crate::cli::spec::SerialSpec::Null,
            icount: Some(0),
            drives: Vec::new(),
            nics: Vec::new(),
        };
        let mut m = Machine::new(&cfg).expect("demo machine");
        // Into the demo's long mode, paging on.
        while m.cpu.icount < 6000 {
            if let crate::machine::Slice::Done(o) = m.run_slice(None) {
                panic!("demo ended early: {o:?}");
            }
        }
        assert!(m.cpu.long_mode());
        let d = Duration::ZERO;
        for (cmd, expect) in [
            ("", "rinx monitor commands"),
            ("  help  ", "rinx monitor commands"),
            ("walk", "usage: monitor walk VA"),
            ("walk 1 2", "usage: monitor walk VA"),
            ("walk 0x", "is not a hexadecimal address"),
            ("walk 1ffffffffffffffff", "is not a hexadecimal address"),
            ("walk ffffffffffffffff", "4-level paging"),
            ("walk 0x0000800000000000", "not canonical"),
            ("cr extra", "unknown monitor command 'cr extra'"),
            ("\u{fffd}\u{fffd}", "unknown monitor command"),
            ("stats", "instructions executed"),
        ] {
            let out = run(&m, d, cmd);
            assert!(out.contains(expect), "{cmd:?}: {out}");
        }
    }

    #[test]
    fn entry_flags() {
        assert_eq!(entry_bits(0x21027, true), "  [ P RW US A ]");
        assert_eq!(entry_bits(0x83, true), "  [ P RW PS ]");
        assert_eq!(entry_bits(0, false), "  [ not present ]");
        assert_eq!(flags(0x8000_0011, &CR0_BITS), "  [ PE ET PG ]");
    }
}
