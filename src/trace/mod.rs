//! Execution tracing for teaching and debugging: instructions with their register and memory
//! effects, the ring-compression layer's decisions, privilege / mode transitions, page walks,
//! interrupt / exception delivery, and the blocks of code executed (`rinx run --trace KINDS`).
//!
//! Both engines produce the same records. Under the JIT, `ring`, `mode`, `walk`, `exc` and
//! `block` come from the Rust paths compiled code already calls (the ring-compression layer,
//! the JIT's helper, exception delivery, the page walker, the dispatcher's block entry) while
//! compiled blocks keep running; only `insn` needs every instruction's effects, so with `insn`
//! selected (or a debugger's watchpoint attached) the JIT takes the interpreter's traced step
//! for every instruction, which makes those records identical by construction.
//!
//! Cost model: the CPU holds an optional [`Tracer`] ([`TraceSlot`]). With tracing off, every
//! hook is a single test of that slot (`Option<Box<_>>::is_some`, a null-pointer test that the
//! branch predictor learns at once); all tracing code lives in out-of-line functions in
//! [`hooks`]. With tracing on, records stream through a buffered writer as they are produced:
//! nothing accumulates beyond one instruction's records, so a whole boot can be traced to a
//! file. The only other state is bounded: the block being executed (at most 64 IPs) and the
//! set of blocks whose disassembly was shown ([`MAX_SEEN_BLOCKS`]).

pub mod coverage;
pub mod hooks;
pub mod record;
pub mod stats;
pub mod watch;

use record::Record;
use std::fmt;
use std::io::{self, BufWriter, Write};
use thiserror::Error;

/// Errors in `--trace*` option values.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TraceError {
    /// An unknown trace kind in `--trace`.
    #[error("unknown trace kind {0:?} (expected insn, ring, mode, walk, exc, block or all)")]
    Kind(String),
    /// A malformed `START-END` range.
    #[error("bad range {0:?} (expected START-END, e.g. 1000-1fff)")]
    Range(String),
}

/// Which kinds of records to produce (a set of bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    /// Every instruction: address, bytes, disassembly, register / flag changes, memory accesses.
    pub const INSN: Kinds = Kinds(1);
    /// Instructions handled by the ring-compression layer, with CPL and result.
    pub const RING: Kinds = Kinds(2);
    /// CPL, CR0.PE / CR0.PG, EFER.LMA and CS.L changes.
    pub const MODE: Kinds = Kinds(4);
    /// Page walks on TLB misses.
    pub const WALK: Kinds = Kinds(8);
    /// Interrupts and exceptions.
    pub const EXC: Kinds = Kinds(16);
    /// Blocks of code executed: one record per translated block the JIT enters, and under the
    /// interpreter per basic block with the same boundaries (see [`hooks::block_at_step`]).
    pub const BLOCK: Kinds = Kinds(32);
    /// Everything.
    pub const ALL: Kinds = Kinds(63);

    /// True if every kind of `k` is selected.
    #[inline]
    pub fn has(self, k: Kinds) -> bool {
        self.0 & k.0 == k.0
    }

    /// Parses a comma list such as `insn,mode` (or `all`).
    pub fn parse(s: &str) -> Result<Kinds, TraceError> {
        let mut k = 0;
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            k |= match w {
                "insn" => Kinds::INSN.0,
                "ring" => Kinds::RING.0,
                "mode" => Kinds::MODE.0,
                "walk" => Kinds::WALK.0,
                "exc" => Kinds::EXC.0,
                "block" => Kinds::BLOCK.0,
                "all" => Kinds::ALL.0,
                _ => return Err(TraceError::Kind(w.to_string())),
            };
        }
        if k == 0 {
            return Err(TraceError::Kind(s.to_string()));
        }
        Ok(Kinds(k))
    }
}

/// Parses `START-END` (inclusive) with hexadecimal bounds (an optional `0x` prefix).
pub fn parse_hex_range(s: &str) -> Result<(u64, u64), TraceError> {
    parse_range(s, 16)
}

/// Parses `FIRST-LAST` (inclusive) with decimal bounds.
pub fn parse_dec_range(s: &str) -> Result<(u64, u64), TraceError> {
    parse_range(s, 10)
}

fn parse_range(s: &str, radix: u32) -> Result<(u64, u64), TraceError> {
    let err = || TraceError::Range(s.to_string());
    let (a, b) = s.split_once('-').ok_or_else(err)?;
    let num = |x: &str| {
        let x = x.trim();
        let x = if radix == 16 {
            x.trim_start_matches("0x").trim_start_matches("0X")
        } else {
            x
        };
        u64::from_str_radix(x, radix).map_err(|_| err())
    };
    let (a, b) = (num(a)?, num(b)?);
    if a > b {
        return Err(err());
    }
    Ok((a, b))
}

/// Which instructions are traced: every event is attributed to the instruction being executed
/// (or, for an external interrupt, the one about to execute) and kept only if it passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Linear RIP range (inclusive).
    pub range: Option<(u64, u64)>,
    /// Only at this CPL (the CPL when the instruction starts).
    pub cpl: Option<u8>,
    /// Instruction-count window (inclusive; instruction numbers start at 0).
    pub window: Option<(u64, u64)>,
}

impl Filter {
    /// True if an instruction numbered `n`, at linear address `la` and privilege `cpl`, is traced.
    #[inline]
    pub fn passes(&self, n: u64, la: u64, cpl: u8) -> bool {
        self.window.map_or(true, |(a, b)| (a..=b).contains(&n))
            && self.range.map_or(true, |(a, b)| (a..=b).contains(&la))
            && self.cpl.map_or(true, |c| c == cpl)
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per record.
    #[default]
    Text,
    /// JSON lines (one object per record, `"kind"` tells which).
    Json,
}

/// Most memory accesses recorded for one instruction (REP string instructions are cut off;
/// the record says how many were dropped).
pub const MAX_MEM_PER_INSN: usize = 64;

/// The tracer attached to a CPU: configuration, the output stream and the per-instruction
/// scratch state.
pub struct Tracer {
    /// Selected kinds.
    pub kinds: Kinds,
    /// Which instructions are traced.
    pub filter: Filter,
    format: Format,
    out: BufWriter<Box<dyn Write + Send>>,
    error: Option<io::Error>,
    /// Records written so far.
    pub written: u64,
    /// `Some(pass)` while a traced step runs: whether the current instruction passes the filter.
    cur_pass: Option<bool>,
    /// Number and linear address of the instruction being traced (while a traced step runs,
    /// including the delivery of the exception it raises).
    cur_insn: Option<(u64, u64)>,
    /// Formats instructions handed to the ring layer.
    fmt: iced_x86::IntelFormatter,
    /// Records of the current instruction, written after its `insn` record.
    pending: Vec<Record>,
    /// Memory accesses of the current instruction (only while `recording`).
    mem: Vec<record::MemAccess>,
    mem_dropped: u32,
    recording: bool,
    /// The last reported mode, to detect transitions.
    last_mode: Option<hooks::ModeSnap>,
    disasm: decoder::Disassembler,
    /// `block`: the block being executed (see [`hooks::BlockRun`]).
    blk: Option<hooks::BlockRun>,
    /// `block`: code already shown, (guest physical address, decode mode) -> page generation
    /// it was shown at (a new generation, i.e. the page was written, shows it again).
    /// Cleared when it reaches [`MAX_SEEN_BLOCKS`], to bound memory.
    seen: std::collections::HashMap<(u64, u8), u32>,
}

/// Most blocks whose disassembly a tracer remembers having shown (about 40 bytes each).
pub const MAX_SEEN_BLOCKS: usize = 1 << 20;

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("kinds", &self.kinds)
            .field("filter", &self.filter)
            .field("format", &self.format)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer writing `format` records to `out` (buffered here; pass an unbuffered writer).
    pub fn new(kinds: Kinds, filter: Filter, format: Format, out: Box<dyn Write + Send>) -> Self {
        Tracer {
            kinds,
            filter,
            format,
            out: BufWriter::with_capacity(64 * 1024, out),
            error: None,
            written: 0,
            cur_pass: None,
            cur_insn: None,
            fmt: {
                use iced_x86::Formatter;
                let mut f = iced_x86::IntelFormatter::new();
                f.options_mut().set_space_after_operand_separator(true);
                f.options_mut()
                    .set_memory_size_options(iced_x86::MemorySizeOptions::Always);
                f
            },
            pending: Vec::new(),
            mem: Vec::new(),
            mem_dropped: 0,
            recording: false,
            last_mode: None,
            disasm: decoder::Disassembler::new(),
            blk: None,
            seen: std::collections::HashMap::new(),
        }
    }

    /// Writes one record now (or, during a traced instruction, after its `insn` record).
    pub fn emit(&mut self, r: Record) {
        if self.recording {
            self.pending.push(r);
        } else {
            self.write(&r);
        }
    }

    fn write(&mut self, r: &Record) {
        if self.error.is_some() {
            return;
        }
        let res = match self.format {
            Format::Text => writeln!(self.out, "{r}"),
            Format::Json => serde_json::to_writer(&mut self.out, r)
                .map_err(io::Error::other)
                .and_then(|()| self.out.write_all(b"\n")),
        };
        match res {
            Ok(()) => self.written += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Records a data access of the current instruction (called by the memory hooks).
    #[inline(never)]
    pub fn mem_access(&mut self, write: bool, la: u64, data: &[u8], system: bool) {
        if !self.recording {
            return;
        }
        if self.mem.len() >= MAX_MEM_PER_INSN {
            self.mem_dropped += 1;
            return;
        }
        self.mem
            .push(record::MemAccess::new(write, la, data, system));
    }

    /// Flushes the output and reports the first write error, if any.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// What hangs off the CPU's instrumentation slot: the tracer and the debugger's watchpoints.
#[derive(Debug, Default)]
pub struct Instruments {
    tracer: Option<Tracer>,
    watch: watch::Watchpoints,
}

/// The CPU's instrumentation slot: the tracer (`--trace`) and the data watchpoints of an
/// attached debugger. Empty, every hook costs one test of a null pointer. Cloning a CPU
/// (diagnostics, fuzzing) does not clone its instruments: the copy runs untraced.
#[derive(Debug, Default)]
pub struct TraceSlot(Option<Box<Instruments>>);

impl Clone for TraceSlot {
    fn clone(&self) -> Self {
        TraceSlot(None)
    }
}

impl TraceSlot {
    /// Attaches a tracer.
    pub fn set(&mut self, t: Tracer) {
        self.0.get_or_insert_with(Default::default).tracer = Some(t);
    }

    /// Detaches and returns the tracer (flush it with [`Tracer::finish`]).
    pub fn take(&mut self) -> Option<Box<Tracer>> {
        let t = self.0.as_mut()?.tracer.take().map(Box::new);
        self.drop_if_empty();
        t
    }

    fn drop_if_empty(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|i| i.tracer.is_none() && i.watch.is_empty())
        {
            self.0 = None;
        }
    }

    /// True when a tracer or a watchpoint is attached: the only test the hot paths make.
    #[inline(always)]
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The tracer, if any.
    #[inline]
    pub fn get_mut(&mut self) -> Option<&mut Tracer> {
        self.0.as_deref_mut().and_then(|i| i.tracer.as_mut())
    }

    /// True when a debugger's data watchpoint is attached (they need every data access, so the
    /// JIT steps every instruction through the interpreter while one is set).
    pub fn has_watchpoints(&self) -> bool {
        self.0.as_deref().is_some_and(|i| !i.watch.is_empty())
    }

    /// The tracer, if any.
    #[inline]
    pub fn get(&self) -> Option<&Tracer> {
        self.0.as_deref().and_then(|i| i.tracer.as_ref())
    }

    /// Adds a data watchpoint.
    pub fn add_watchpoint(&mut self, w: watch::Watchpoint) {
        self.0.get_or_insert_with(Default::default).watch.add(w);
    }

    /// Removes a data watchpoint; false if it was not set.
    pub fn remove_watchpoint(&mut self, w: watch::Watchpoint) -> bool {
        let Some(i) = self.0.as_mut() else {
            return false;
        };
        let r = i.watch.remove(w);
        self.drop_if_empty();
        r
    }

    /// Returns and clears the first watchpoint hit since the last call.
    pub fn take_watch_hit(&mut self) -> Option<watch::WatchHit> {
        self.0.as_mut()?.watch.take_hit()
    }

    /// A data access by the current instruction (`system`: an implicit supervisor access such
    /// as a descriptor-table read): recorded by the tracer, checked against the watchpoints.
    /// Callers test [`TraceSlot::is_on`] first.
    #[inline(never)]
    pub fn data_access(&mut self, write: bool, la: u64, data: &[u8], system: bool) {
        if let Some(i) = self.0.as_deref_mut() {
            if let Some(t) = i.tracer.as_mut() {
                t.mem_access(write, la, data, system);
            }
            i.watch.check(write, la, data.len() as u64);
        }
    }
}

/// A `Write` that appends to a shared buffer (for tests and in-memory traces).
#[derive(Debug, Clone, Default)]
pub struct SharedBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("trace buffer")).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("trace buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
