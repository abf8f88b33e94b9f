//! Trace records: one type per kind, serialised as JSON lines (`"kind"` names the record) or
//! shown as one text line each. Addresses and register values are hexadecimal strings in JSON
//! (`"0x1f0000"`), so 64-bit values survive JavaScript-based tools.

use serde::{Serialize, Serializer};
use std::fmt;

/// A value shown in hexadecimal (`0x...` in JSON and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", self.0))
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// One trace record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An executed instruction.
    Insn(Insn),
    /// An instruction handled by the ring-compression layer.
    Ring(Ring),
    /// A privilege or mode transition.
    Mode(Mode),
    /// A page walk on a TLB miss.
    Walk(Walk),
    /// An interrupt or exception delivery.
    Exc(Exc),
    /// A block of code entered.
    Block(Block),
}

/// A register (or flag set, segment selector, control register) that an instruction changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Register name (`rax`, `eax`, `rflags`, `cs`, `cr0`, `efer`...).
    pub reg: &'static str,
    /// Value before.
    pub old: Hex,
    /// Value after.
    pub new: Hex,
    /// For RFLAGS: the flags set (`+ZF`) and cleared (`-CF`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A data memory access (linear address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemAccess {
    /// `"r"` or `"w"`.
    pub op: &'static str,
    /// Linear address.
    pub la: Hex,
    /// Size in bytes.
    pub size: u32,
    /// The value (little-endian) for accesses up to 8 bytes; longer ones give the bytes in
    /// memory order as a hex string (`bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Hex>,
    /// Bytes of accesses longer than 8 bytes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bytes: String,
    /// An implicit supervisor access (descriptor table, TSS, IDT) rather than an operand.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
}

impl MemAccess {
    /// Builds an access record from the bytes transferred.
    pub fn new(write: bool, la: u64, data: &[u8], system: bool) -> Self {
        let (value, bytes) = if data.len() <= 8 {
            let mut b = [0u8; 8];
            b[..data.len()].copy_from_slice(data);
            (Some(Hex(u64::from_le_bytes(b))), String::new())
        } else {
            (None, hex_bytes(data))
        };
        MemAccess {
            op: if write { "w" } else { "r" },
            la: Hex(la),
            size: data.len() as u32,
            value,
            bytes,
            system,
        }
    }
}

/// Bytes as a lower-case hex string without separators.
pub fn hex_bytes(data: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An executed instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Insn {
    /// Instruction number (instructions retired before it).
    pub n: u64,
    /// CS selector.
    pub cs: Hex,
    /// RIP (offset in CS).
    pub rip: Hex,
    /// Linear address of the first byte.
    pub la: Hex,
    /// CPL when it started.
    pub cpl: u8,
    /// Execution mode: `real`, `v86`, `prot16`, `prot32`, `compat16`, `compat32`, `long64`.
    pub mode: &'static str,
    /// Instruction bytes (hex).
    pub bytes: String,
    /// Intel-syntax disassembly.
    pub asm: String,
    /// Registers it changed.
    pub changes: Vec<Change>,
    /// Memory it read and wrote (data operands and implicit system accesses).
    pub mem: Vec<MemAccess>,
    /// Accesses left out after [`super::MAX_MEM_PER_INSN`].
    #[serde(skip_serializing_if = "is_zero")]
    pub mem_dropped: u32,
    /// The exception it raised instead of completing (its delivery follows as an `exc` record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// An instruction handled by the ring-compression layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ring {
    /// Instruction number.
    pub n: u64,
    /// Linear address of the instruction.
    pub la: Hex,
    /// CPL at which it trapped into the layer.
    pub cpl: u8,
    /// Mnemonic (lower case).
    pub insn: String,
    /// Why it traps: `privileged`, `iopl-sensitive` or `sensitive`.
    pub class: &'static str,
    /// `done`, or the fault the layer raised (e.g. `#GP(0x0)`).
    pub result: String,
}

/// One privilege / mode transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mode {
    /// Number of the instruction that caused it (or that was about to run).
    pub n: u64,
    /// Linear address of that instruction.
    pub la: Hex,
    /// What changed: `cpl`, `cr0.pe`, `cr0.pg`, `efer.lma`, `cs.l`.
    pub what: &'static str,
    /// Old value.
    pub from: u64,
    /// New value.
    pub to: u64,
    /// The execution mode afterwards (see [`Insn::mode`]).
    pub mode: &'static str,
    /// What caused it: the instruction's mnemonic, or the event delivered (`#PF`, `int 0x20`).
    pub cause: String,
}

/// One level of a page walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Level {
    /// `PML4`, `PDPT`, `PD` or `PT`.
    pub table: &'static str,
    /// Guest physical address of the entry.
    pub entry_addr: Hex,
    /// The entry's value (before the walk set A/D).
    pub entry: Hex,
}

/// A page walk after a TLB miss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Walk {
    /// Instruction number.
    pub n: u64,
    /// The linear (virtual) address translated.
    pub va: Hex,
    /// `read`, `write` or `exec`.
    pub access: &'static str,
    /// A user-mode (CPL 3) access.
    pub user: bool,
    /// `2-level` (32-bit), `pae` or `4-level`.
    pub paging: &'static str,
    /// The entries read, from the top level down.
    pub levels: Vec<Level>,
    /// Guest physical address (on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pa: Option<Hex>,
    /// Size of the page mapping it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
    /// Host memory: `ram<region>+<offset>`, or `mmio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ma: Option<String>,
    /// The page fault, if the walk failed: error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pf_code: Option<Hex>,
}

/// An interrupt or exception being delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exc {
    /// Number of the instruction that raised it, or that the interrupt came before.
    pub n: u64,
    /// Vector.
    pub vector: u8,
    /// `#PF`, `#GP`, ... for vectors 0-31, else `int`.
    pub name: &'static str,
    /// `external`, `nmi`, `fault` (exceptions and aborts), `trap` (#BP/#OF), `software` (INT n).
    pub event: &'static str,
    /// Error code pushed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<Hex>,
    /// CR2 (page faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cr2: Option<Hex>,
    /// CPL before delivery.
    pub cpl: u8,
    /// Where it came from: CS:RIP of the return address.
    pub from: String,
    /// Handler CS:RIP after delivery, or `failed: <fault>` when delivery faulted.
    pub to: String,
}

/// A block of code entered: under the JIT a translated block (`engine: "jit"`), or a basic block
/// the interpreter steps through (`engine: "interp"`; also the JIT's own interpreter steps), with
/// the same boundaries: the decoder's block scan (up to and including the first control
/// transfer or ring-layer instruction, within one page, at most 64 instructions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    /// Number of its first instruction.
    pub n: u64,
    /// CS selector.
    pub cs: Hex,
    /// RIP of its first instruction.
    pub rip: Hex,
    /// Linear address of its first instruction.
    pub la: Hex,
    /// Guest physical address of its first instruction.
    pub pa: Hex,
    /// CPL.
    pub cpl: u8,
    /// Execution mode (see [`Insn::mode`]).
    pub mode: &'static str,
    /// Number of instructions in the block.
    pub insns: u64,
    /// Size of its code in bytes.
    pub size: u64,
    /// Which engine runs it: `jit` (compiled code) or `interp` (interpreter steps).
    pub engine: &'static str,
    /// The block's disassembly (`linear-address bytes text` per instruction), the first time
    /// this code is seen (or after it was rewritten); empty afterwards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub asm: Vec<String>,
}

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    show: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for it in items {
        f.write_str("  ")?;
        show(f, it)?;
    }
    Ok(())
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Insn(i) => {
                write!(
                    f,
                    "insn {:>8} {:04x}:{:<8x} la={:<#10x} cpl{} {:<8} {:<20} {:<32}",
                    i.n, i.cs.0, i.rip.0, i.la.0, i.cpl, i.mode, i.bytes, i.asm
                )?;
                write_list(f, &i.changes, |f, c| {
                    write!(f, "{}: {}->{}", c.reg, c.old, c.new)?;
                    if !c.detail.is_empty() {
                        write!(f, " ({})", c.detail)?;
                    }
                    Ok(())
                })?;
                write_list(f, &i.mem, |f, m| {
                    let sys = if m.system { " sys" } else { "" };
                    match m.value {
                        Some(v) => write!(f, "{}[{}]:{}={}{}", m.op, m.la, m.size, v, sys),
                        None => write!(f, "{}[{}]:{}={}{}", m.op, m.la, m.size, m.bytes, sys),
                    }
                })?;
                if i.mem_dropped > 0 {
                    write!(f, "  (+{} accesses)", i.mem_dropped)?;
                }
                if let Some(x) = &i.fault {
                    write!(f, "  FAULT {x}")?;
                }
                Ok(())
            }
            Record::Ring(r) => write!(
                f,
                "ring {:>8} la={:#x} cpl{} {} ({}) -> {}",
                r.n, r.la.0, r.cpl, r.insn, r.class, r.result
            ),
            Record::Mode(m) => write!(
                f,
                "mode {:>8} la={:#x} {} {} -> {} by {} (now {})",
                m.n, m.la.0, m.what, m.from, m.to, m.cause, m.mode
            ),
            Record::Walk(w) => {
                write!(
                    f,
                    "walk {:>8} va={} {}{} {}:",
                    w.n,
                    w.va,
                    w.access,
                    if w.user { " user" } else { "" },
                    w.paging
                )?;
                for l in &w.levels {
                    write!(f, " {}[{}]={}", l.table, l.entry_addr, l.entry)?;
                }
                match (&w.pa, &w.pf_code) {
                    (Some(pa), _) => write!(
                        f,
                        " -> pa={} ({} KiB page) -> ma={}",
                        pa,
                        w.page_size.unwrap_or(4096) / 1024,
                        w.ma.as_deref().unwrap_or("?")
                    ),
                    (None, Some(code)) => write!(f, " -> #PF error code {code}"),
                    (None, None) => Ok(()),
                }
            }
            Record::Block(b) => {
                write!(
                    f,
                    "block {:>7} {:04x}:{:<8x} la={:<#10x} pa={:<#10x} cpl{} {:<8} {} insn{}, {} bytes ({})",
                    b.n,
                    b.cs.0,
                    b.rip.0,
                    b.la.0,
                    b.pa.0,
                    b.cpl,
                    b.mode,
                    b.insns,
                    if b.insns == 1 { "" } else { "s" },
                    b.size,
                    b.engine
                )?;
                for l in &b.asm {
                    write!(f, "\n      | {l}")?;
                }
                Ok(())
            }
            Record::Exc(e) => {
                write!(
                    f,
                    "exc  {:>8} vector {:#04x} {} {}",
                    e.n, e.vector, e.name, e.event
                )?;
                if let Some(c) = e.error_code {
                    write!(f, " error_code={c}")?;
                }
                if let Some(c) = e.cr2 {
                    write!(f, " cr2={c}")?;
                }
                write!(f, " cpl{} from {} -> {}", e.cpl, e.from, e.to)
            }
        }
    }
}
