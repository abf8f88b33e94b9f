//! The JIT engine driver: block lookup by (guest physical address, RIP, mode), translation
//! through `jit::ir` and the x86-64 backend, execution of compiled blocks, and the helper
//! through which compiled code calls the interpreter's semantic functions.
//!
//! The dispatcher loop mirrors [`super::interp::run`]: stop requests, the instruction budget,
//! external interrupts and HLT are handled between blocks, so an interrupt waits at most one
//! block (a loop inside a block re-checks `JitEnv::limit` on every back edge). Whatever cannot
//! run as a block (trace on, TF set, code outside RAM, a block not fitting in the remaining
//! budget or the CS limit) takes one interpreter step instead.

// Without a backend (non-x86-64 hosts) the block structures exist but are never executed.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]

use crate::cpu::dispatch::Family;
use crate::cpu::{debug, interrupt, mem, Cpu, Ctx, Platform, StopReason};
use crate::exec::interp;
use crate::mmu::walk::Access;
use crate::mmu::GuestMemory;
use jit::abi::{cr, flags as fl, sreg};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

/// Most guest instructions per block.
pub const MAX_BLOCK_INSNS: usize = 64;
/// Most guest instructions one block invocation may retire (loops inside a block), which
/// bounds the latency of external interrupts.
pub const MAX_INSNS_PER_ENTRY: u64 = 16384;

/// Counters shown by `--stats` and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks translated.
    pub translations: u64,
    /// Compiled-block entries.
    pub entries: u64,
    /// Guest instructions retired inside compiled blocks.
    pub block_insns: u64,
    /// Single interpreter steps taken by the dispatcher.
    pub interp_steps: u64,
    /// Blocks dropped because their page was written (self-modifying code).
    pub invalidations: u64,
    /// Code-cache flushes (cache full).
    pub flushes: u64,
    /// Host nanoseconds spent translating (failed attempts included).
    pub translate_ns: u64,
    /// Translation attempts that failed (the instruction is interpreted instead).
    pub failed_translations: u64,
    /// Block lookups that found a valid translation in the code cache.
    pub cache_hits: u64,
    /// Block lookups that had to translate (first sight, SMC, flushed cache, or code that
    /// cannot be translated: see `failed_translations`).
    pub cache_misses: u64,
    /// Compiled-block exits, indexed by [`ExitReason`].
    pub exits: [u64; ExitReason::COUNT],
    /// Host nanoseconds inside [`JitEngine::run`] / [`JitEngine::run_one`] (dispatcher,
    /// compiled code and its helpers, translation and interpreter steps together).
    pub run_ns: u64,
    /// Host nanoseconds of the dispatcher's interpreter steps (estimated: one step in 16 is
    /// timed).
    pub interp_ns: u64,
    /// Block exits patched to jump straight to the next block (chaining).
    pub chains: u64,
    /// Dispatcher lookups answered by the jump cache (no translation of RIP, no map lookup).
    pub jc_hits: u64,
    /// Jump-cache entries written by the dispatcher.
    pub jc_fills: u64,
}

/// Why a compiled block returned to the dispatcher (`--stats`: "exits by reason").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It ran to its end: fell through, or left by its final branch.
    End,
    /// A loop back to the block's start ran out of instruction allowance
    /// ([`MAX_INSNS_PER_ENTRY`], the budget, or one pass while `block` is traced).
    LoopLimit,
    /// It ended with an instruction for the ring-compression layer (privileged or sensitive).
    Ring,
    /// An instruction raised an exception (delivered before the exit).
    Exception,
    /// It wrote to its own page (self-modifying code).
    Smc,
    /// A stop was requested (debugger, user) or HLT left the CPU halted.
    Stop,
    /// TF, RF, a debug-register breakpoint or a pending #DB appeared.
    Debug,
    /// Exception delivery failed (triple fault).
    Shutdown,
}

impl ExitReason {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// Every reason, in index order.
    pub const ALL: [ExitReason; Self::COUNT] = [
        ExitReason::End,
        ExitReason::LoopLimit,
        ExitReason::Ring,
        ExitReason::Exception,
        ExitReason::Smc,
        ExitReason::Stop,
        ExitReason::Debug,
        ExitReason::Shutdown,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::End => "end",
            ExitReason::LoopLimit => "loop-limit",
            ExitReason::Ring => "ring-layer",
            ExitReason::Exception => "exception",
            ExitReason::Smc => "smc",
            ExitReason::Stop => "stop/halt",
            ExitReason::Debug => "debug",
            ExitReason::Shutdown => "shutdown",
        }
    }
}

/// The mode bits a translation depends on: decode mode, CPL, CR0.PE/PG, CR4.PAE, EFER.LMA
/// and EFLAGS.VM (DESIGN.md "Execution": blocks are keyed by these).
fn mode_bits(cpu: &Cpu, mode: decoder::Mode) -> u32 {
    let s = &cpu.s;
    (mode as u32)
        | (u32::from(s.cpl) << 2)
        | (((s.cr0 & cr::CR0_PE != 0) as u32) << 4)
        | (((s.cr0 & cr::CR0_PG != 0) as u32) << 5)
        | (((s.cr4 & cr::CR4_PAE != 0) as u32) << 6)
        | (((s.efer & cr::EFER_LMA != 0) as u32) << 7)
        | (((s.rflags & fl::VM != 0) as u32) << 8)
        | if cpu.trace.is_on() { MODE_TRACED } else { 0 }
}

/// Mode bit of blocks translated while tracing is on: those are plain blocks
/// ([`decoder::scan_block`]), so the trace's `block` records list the same blocks under both
/// engines; other blocks are superblocks ([`decoder::scan_superblock`]).
const MODE_TRACED: u32 = 1 << 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    pa: u64,
    rip: u64,
    mode: u32,
}

/// A multiplicative hasher for [`Key`] (the block lookup runs once per block; SipHash's
/// DoS resistance buys nothing for guest addresses).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type BlockMap = HashMap<Key, Rc<Block>, std::hash::BuildHasherDefault<KeyHasher>>;

/// Jump-cache tag that no entry holds: the cache is off (tracing, one-instruction blocks).
const JC_OFF: u64 = u64::MAX - 1;

/// What a jump-cache tag stands for besides the global part ([`JcGlobal`]): the mode bits
/// of the block key, CS base and CS limit.
type JcCtx = (u32, u64, u32);

/// The global part of every jump-cache tag: code-cache epoch, `DecodeCache::inval_count`
/// (any page generation change) and `Tlb::gen` (any TLB flush or INVLPG).
type JcGlobal = (u64, u64, u64);

/// The context of the running CPU for the jump cache (see [`JitEngine::jc_tag`]).
fn jc_now(cpu: &Cpu, epoch: u64, mode: u32) -> (JcGlobal, JcCtx) {
    let cs = &cpu.s.seg[sreg::CS];
    (
        (epoch, cpu.dcache.inval_count(), cpu.tlb.gen),
        (mode, cs.base, cs.limit),
    )
}

#[derive(Debug)]
struct Insn {
    insn: iced_x86::Instruction,
    len: u8,
    next_ip: u64,
    ring: bool,
    /// A ring-layer instruction after which the block may go on (see [`continues_block`]).
    ring_continue: bool,
    family: Cell<Family>,
}

/// One translated block.
#[derive(Debug)]
struct Block {
    entry: usize,
    /// Host address of the chained entry (see `jit::x64::Emitted::chain_entry`).
    chain_entry: usize,
    /// Patchable exits: host address of the rel32 field, target IP, already patched.
    exits: Vec<(usize, u64, Cell<bool>)>,
    /// Number in `JitEngine::arena` (what generated code stores in `JitEnv::cur`).
    id: u32,
    /// Mode bits of the block key.
    mode: u32,
    /// Code-cache epoch the entry belongs to.
    epoch: u64,
    pa_page: u64,
    gen: u32,
    /// Frame and generation of the next page when the first instruction crosses into it
    /// (the block is then that one instruction). Such a block is only entered after its
    /// second page's translation was checked (`run_block`), never through a chained exit.
    page2: Option<(u64, u32)>,
    ninsns: u64,
    max_ip: u64,
    insns: Vec<Insn>,
}

/// The JIT engine of one vCPU: code cache and block map.
#[derive(Debug)]
pub struct JitEngine {
    #[cfg(target_arch = "x86_64")]
    cache: jit::cache::CodeCache,
    blocks: BlockMap,
    /// Every block translated in the current code-cache epoch, by id: chained code and the
    /// helper refer to blocks by id, so none is freed before the flush that frees its code.
    arena: Vec<Rc<Block>>,
    /// The patchable exit (block id, exit index) the last block invocation left through.
    pending_chain: Option<(u32, u8)>,
    /// Counters.
    pub stats: JitStats,
    /// Largest block translated (instructions); `1` makes every block a single instruction
    /// (used by the lockstep harness to pinpoint a divergence).
    pub max_block_insns: usize,
    /// `DecodeCache::id` of the CPU the translations were validated against.
    cpu_id: u64,
    /// The jump cache (`jit::abi::JcEntry`), probed by generated code and by `run_block`.
    jc: Box<[jit::abi::JcEntry; jit::abi::JC_ENTRIES]>,
    /// Global part the tags in `jc_tags` were issued for.
    jc_global: JcGlobal,
    /// Tag per context, for the current `jc_global` (cleared when it changes).
    jc_tags: HashMap<JcCtx, u64>,
    /// The last context looked up and its tag.
    jc_last: Option<(JcCtx, u64)>,
    /// Last tag issued (tags are never reused, so a stale entry can never match).
    jc_next: u64,
    /// Helper calls (instructions run through the interpreter's semantics from compiled code),
    /// indexed by `iced_x86::Code as usize` (instruction form): shows which instructions to emit natively next.
    pub helper_calls: Vec<u64>,
    /// `RINX_PERF_MAP=1`: one line per installed block (`host-addr size name`, hex) appended
    /// to `/tmp/perf-<pid>.map`, the file Linux `perf report` reads to name JIT code.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    perf_map: Option<PerfFile>,
    /// `RINX_PERF_MAP=2`: also `/tmp/rinx-jit-<pid>.dump`, one line per block: host entry,
    /// guest RIP, host code (hex), guest instructions.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    code_dump: Option<PerfFile>,
}

/// Opens the perf map when `RINX_PERF_MAP` is 1 or 2 (Linux perf's
/// `tools/perf/Documentation/jit-interface.txt`), and with 2 also the code dump.
fn open_perf_files() -> (Option<PerfFile>, Option<PerfFile>) {
    let mode = std::env::var("RINX_PERF_MAP").unwrap_or_default();
    if !matches!(mode.as_str(), "1" | "2") {
        return (None, None);
    }
    let pid = std::process::id();
    let open = |name: String| {
        let path = std::env::temp_dir().join(name);
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Some(std::io::LineWriter::new(f)),
            Err(e) => {
                log::warn!("RINX_PERF_MAP: cannot open {}: {e}", path.display());
                None
            }
        }
    };
    let dump = (mode == "2")
        .then(|| open(format!("rinx-jit-{pid}.dump")))
        .flatten();
    (open(format!("perf-{pid}.map")), dump)
}

/// A line-buffered profiler file (perf map, code dump).
type PerfFile = std::io::LineWriter<std::fs::File>;

/// What the helper needs, behind `JitEnv::user`.
struct HelperCtx<'c, 'a, P: Platform + ?Sized> {
    ctx: &'c mut Ctx<'a, P>,
    /// Jump-cache context at entry: the helper makes the block exit when it changes.
    jc: (JcGlobal, JcCtx),
    /// Code-cache epoch of the invocation.
    epoch: u64,
    /// `JitEngine::arena`; the running block is `arena[env.cur]`.
    arena: *const Vec<Rc<Block>>,
    entry_icount: u64,
    shutdown: bool,
    /// Why the helper made the block exit (when it did).
    exit: ExitReason,
    /// `JitEngine::helper_calls`.
    helper_calls: &'c mut [u64],
}

impl JitEngine {
    /// A JIT with a code cache of `code_bytes` bytes.
    pub fn with_cache_size(code_bytes: usize) -> std::io::Result<Self> {
        let (perf_map, code_dump) = open_perf_files();
        Ok(JitEngine {
            #[cfg(target_arch = "x86_64")]
            cache: jit::cache::CodeCache::new(code_bytes)?,
            blocks: BlockMap::default(),
            arena: Vec::new(),
            pending_chain: None,
            stats: JitStats::default(),
            max_block_insns: MAX_BLOCK_INSNS,
            cpu_id: 0,
            jc: Box::new([jit::abi::JcEntry::INVALID; jit::abi::JC_ENTRIES]),
            jc_global: (u64::MAX, 0, 0),
            jc_tags: HashMap::new(),
            jc_last: None,
            jc_next: 0,
            helper_calls: vec![0; iced_x86::Code::values().len()],
            perf_map,
            code_dump,
        })
    }

    /// A JIT with the default code cache size.
    pub fn new() -> std::io::Result<Self> {
        Self::with_cache_size(jit::cache::DEFAULT_CODE_BYTES)
    }

    /// Number of blocks currently cached.
    pub fn cached_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Drops every translation.
    pub fn flush(&mut self) {
        self.blocks.clear();
        self.arena.clear();
        self.pending_chain = None;
        self.jc.fill(jit::abi::JcEntry::INVALID);
        self.jc_tags.clear();
        self.jc_last = None;
        #[cfg(target_arch = "x86_64")]
        self.cache.flush();
        self.stats.flushes += 1;
    }

    /// Code-cache epoch (blocks and jump-cache entries are valid within one).
    fn epoch(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        return self.cache.flushes;
        #[cfg(not(target_arch = "x86_64"))]
        0
    }

    /// The jump-cache tag of the CPU's current context (mode bits `mode`), or [`JC_OFF`]
    /// when the jump cache must not be used. Equal tags mean: same code-cache epoch, no page
    /// generation change and no TLB flush / INVLPG in between, same mode bits, CS base and CS
    /// limit, so the dispatcher's lookup of a RIP gives the same block (the translation of
    /// RIP can only change through a TLB flush, since the JIT caches no more than the TLB).
    fn jc_tag(&mut self, cpu: &Cpu, mode: u32) -> u64 {
        if !jit::HOST_SUPPORTED || self.max_block_insns <= 1 || cpu.trace.is_on() {
            return JC_OFF;
        }
        let (g, c) = jc_now(cpu, self.epoch(), mode);
        if g != self.jc_global {
            self.jc_global = g;
            self.jc_tags.clear();
            self.jc_last = None;
        }
        if let Some((lc, t)) = self.jc_last {
            if lc == c {
                return t;
            }
        }
        let t = match self.jc_tags.get(&c) {
            Some(t) => *t,
            None => {
                self.jc_next += 1;
                self.jc_tags.insert(c, self.jc_next);
                self.jc_next
            }
        };
        self.jc_last = Some((c, t));
        t
    }

    /// Runs at most `budget` instructions, like [`interp::run`].
    pub fn run<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
    ) -> StopReason {
        self.run_with_slack(cpu, mem, plat, budget, 0)
    }

    /// Like [`JitEngine::run`], but a block that does not fit in what is left of `budget`
    /// still runs if it fits in `slack` more instructions, so the run may retire up to
    /// `budget + slack`. For the machine's slices, whose length only paces the devices:
    /// without it the last instructions of every slice would go through the interpreter
    /// one by one (a superblock holds up to [`MAX_BLOCK_INSNS`]).
    pub fn run_with_slack<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
        slack: u64,
    ) -> StopReason {
        let t0 = std::time::Instant::now();
        let r = self.run_inner(cpu, mem, plat, budget, slack, false);
        self.stats.run_ns += t0.elapsed().as_nanos() as u64;
        r
    }

    /// Like [`JitEngine::run`] but returns after one block or one interpreter step
    /// ([`StopReason::Budget`] if neither stopped the machine); for the lockstep harness.
    pub fn run_one<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
    ) -> StopReason {
        let t0 = std::time::Instant::now();
        let r = self.run_inner(cpu, mem, plat, budget, 0, true);
        self.stats.run_ns += t0.elapsed().as_nanos() as u64;
        r
    }

    fn run_inner<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
        slack: u64,
        once: bool,
    ) -> StopReason {
        let end = cpu.icount.saturating_add(budget);
        if cpu.dcache.id() != self.cpu_id {
            // Another CPU (or a fresh one): its page generations say nothing about our blocks.
            self.flush();
            self.cpu_id = cpu.dcache.id();
        }
        let mut ctx = Ctx::new(cpu, mem, plat);
        loop {
            if ctx.cpu.stop_requested || ctx.plat.stop_pending() {
                ctx.cpu.stop_requested = false;
                return StopReason::PlatformStop;
            }
            if ctx.cpu.icount >= end {
                return StopReason::Budget;
            }
            if ctx.cpu.s.rflags & fl::IF != 0
                && ctx.cpu.icount >= ctx.cpu.shadow_until
                && ctx.plat.interrupt_pending()
            {
                if let Some(v) = ctx.plat.acknowledge_interrupt() {
                    ctx.cpu.halted = false;
                    if interrupt::external(&mut ctx, v).is_err() {
                        return StopReason::TripleFault;
                    }
                }
            }
            if ctx.cpu.halted {
                return StopReason::Halted;
            }
            let mut remaining = end - ctx.cpu.icount + slack;
            if ctx.cpu.icount < ctx.cpu.shadow_until
                && ctx.cpu.s.rflags & fl::IF != 0
                && ctx.plat.interrupt_pending()
            {
                // STI / MOV SS just opened an interrupt window with an interrupt waiting: it is
                // taken right after the shadowed instruction (SDM Vol. 3A §6.8.3), so run only
                // that one and come back to the check above. Chained blocks never return here
                // on their own, so otherwise the interrupt would wait for the slice's end, and
                // a guest that re-disables interrupts each time round a loop (the kernel's
                // entropy wait: `cli ... sti ... schedule()`) could be at IF = 0 at every
                // slice end and never take its timer interrupt.
                remaining = remaining.min(ctx.cpu.shadow_until - ctx.cpu.icount);
            }
            match self.run_block(&mut ctx, remaining) {
                Some(Ok(())) => {}
                Some(Err(interrupt::Shutdown)) => return StopReason::TripleFault,
                None => {
                    self.stats.interp_steps += 1;
                    // Timed one step in 16 (two clock reads cost as much as a short step).
                    let t0 = (self.stats.interp_steps % 16 == 0).then(std::time::Instant::now);
                    let r = interp::step(&mut ctx);
                    if let Some(t0) = t0 {
                        self.stats.interp_ns += 16 * t0.elapsed().as_nanos() as u64;
                    }
                    if r.is_err() {
                        return StopReason::TripleFault;
                    }
                }
            }
            if once {
                return if ctx.cpu.halted {
                    StopReason::Halted
                } else {
                    StopReason::Budget
                };
            }
        }
    }

    /// Finds or translates the block at CS:RIP and runs it once, retiring at most `remaining`
    /// instructions. `None` when the next instruction must be interpreted instead.
    fn run_block<P: Platform + ?Sized>(
        &mut self,
        ctx: &mut Ctx<'_, P>,
        remaining: u64,
    ) -> Option<Result<(), interrupt::Shutdown>> {
        // Single-step, RF, debug-register breakpoints and pending #DB state need the
        // interpreter's per-instruction checks (natively executed instructions skip them), as
        // do `insn` tracing and watchpoints (`trace::hooks::jit_gate`).
        if !jit::HOST_SUPPORTED
            || (ctx.cpu.trace.is_on() && !crate::trace::hooks::jit_gate(ctx.cpu))
            || ctx.cpu.s.rflags & (fl::TF | fl::RF) != 0
            || ctx.cpu.s.dr[7] & debug::DR7_ENABLES != 0
            || (ctx.cpu.db_hits | ctx.cpu.db_deferred) != 0
        {
            return None;
        }
        let mode = ctx.decode_mode();
        let rip = ctx.cpu.s.rip;
        let cs = ctx.cpu.s.seg[sreg::CS];
        let mbits = mode_bits(ctx.cpu, mode);
        let mut tag = self.jc_tag(ctx.cpu, mbits);
        let e = self.jc[jit::abi::jc_slot(rip)];
        if e.rip == rip && e.tag == tag {
            // Filled for this RIP in this very context: the lookup below would find this block.
            self.stats.cache_hits += 1;
            self.stats.jc_hits += 1;
            let block = self.arena[e.id as usize].clone();
            let link = self.pending_chain.take();
            if block.ninsns > remaining {
                return None;
            }
            if let Some((from, k)) = link {
                self.chain(from, k, &block);
            }
            return Some(self.enter(ctx, &block, remaining, tag));
        }
        let la = if mode == decoder::Mode::Bits64 {
            if !mem::canonical(rip) {
                return None;
            }
            rip
        } else {
            cs.base.wrapping_add(rip & 0xffff_ffff) & 0xffff_ffff
        };
        let p = ctx.translate(la, Access::Execute, false).ok()?;
        p.host?;
        let pa = p.pa_page | (la & 0xfff);
        let key = Key {
            pa,
            rip,
            mode: mbits,
        };
        let block = match self.blocks.get(&key) {
            Some(b) if self.valid(ctx.cpu, b) && page2_current(ctx, b, la) => {
                self.stats.cache_hits += 1;
                b.clone()
            }
            _ => {
                self.stats.cache_misses += 1;
                if self.blocks.remove(&key).is_some() {
                    self.stats.invalidations += 1;
                }
                let t0 = std::time::Instant::now();
                let Some(b) = self.translate(ctx, mode, la, p.pa_page, key.mode) else {
                    // Not translatable (e.g. its first instruction straddles a page): it is
                    // interpreted, and the attempt is made again next time.
                    self.stats.failed_translations += 1;
                    self.stats.translate_ns += t0.elapsed().as_nanos() as u64;
                    return None;
                };
                self.blocks.insert(key, b.clone());
                // Translation may have flushed the cache (new epoch).
                tag = self.jc_tag(ctx.cpu, mbits);
                b
            }
        };
        let link = self.pending_chain.take();
        if block.ninsns > remaining
            || (mode != decoder::Mode::Bits64 && block.max_ip > u64::from(cs.limit))
        {
            return None;
        }
        // Tracing: the `block` record, and one pass per entry so each iteration of a loop
        // inside the block gets its own; compiled blocks are not chained to one another while
        // the trace slot is on, for the same reason.
        let limit = if ctx.cpu.trace.is_on() {
            let mut insns = block.insns.iter().map(|i| (i.insn, i.len));
            crate::trace::hooks::jit_block(
                ctx.cpu, ctx.mem, la, pa, block.gen, &mut insns, remaining,
            )
        } else {
            if let Some((from, k)) = link {
                self.chain(from, k, &block);
            }
            if tag != JC_OFF && block.epoch == self.epoch() {
                // The block may run here now (gates, CS limit and validity checked above).
                self.jc[jit::abi::jc_slot(rip)] = jit::abi::JcEntry {
                    rip,
                    tag,
                    host: block.chain_entry as u64,
                    id: u64::from(block.id),
                };
                self.stats.jc_fills += 1;
            }
            remaining
        };
        Some(self.enter(ctx, &block, limit, tag))
    }

    fn valid(&self, cpu: &Cpu, b: &Block) -> bool {
        #[cfg(target_arch = "x86_64")]
        if b.epoch != self.cache.flushes {
            return false;
        }
        cpu.dcache.page_gen(b.pa_page) == Some(b.gen)
            && b.page2
                .map_or(true, |(p2, g2)| cpu.dcache.page_gen(p2) == Some(g2))
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn translate<P: Platform + ?Sized>(
        &mut self,
        _ctx: &mut Ctx<'_, P>,
        _mode: decoder::Mode,
        _la: u64,
        _pa_page: u64,
        _key_mode: u32,
    ) -> Option<Rc<Block>> {
        None
    }

    #[cfg(target_arch = "x86_64")]
    fn translate<P: Platform + ?Sized>(
        &mut self,
        ctx: &mut Ctx<'_, P>,
        mode: decoder::Mode,
        la: u64,
        pa_page: u64,
        key_mode: u32,
    ) -> Option<Rc<Block>> {
        let t0 = std::time::Instant::now();
        let cs_base = ctx.cpu.s.seg[sreg::CS].base;
        let rip = ctx.cpu.s.rip;
        let page_la = la & !0xfff;
        let scan = |mem: &GuestMemory, page2: Option<u64>| {
            // Fetch only from this physical page (and, for a first instruction that crosses
            // into the next page, from that page's frame `page2`).
            let mut fetch = |a: u64, buf: &mut [u8]| -> Result<usize, decoder::FetchFault> {
                let fault = decoder::FetchFault {
                    addr: a,
                    kind: decoder::FetchFaultKind::GeneralProtection,
                };
                let pa = match page2 {
                    _ if a & !0xfff == page_la => pa_page,
                    Some(p2) if a & !0xfff == page_la.wrapping_add(0x1000) => p2,
                    _ => return Err(fault),
                };
                let n = buf.len().min((0x1000 - (a & 0xfff)) as usize);
                mem.read(pa | (a & 0xfff), &mut buf[..n])
                    .map_err(|_| fault)?;
                Ok(n)
            };
            let scan = if key_mode & MODE_TRACED == 0 {
                decoder::scan_superblock
            } else {
                decoder::scan_block
            };
            let blk = scan(mode, cs_base, rip, &mut fetch, self.max_block_insns).ok()?;
            let ir = jit::ir::lower(&blk)?;
            Some((blk, ir))
        };
        let mut page2 = None;
        let (blk, ir) = match scan(ctx.mem, None) {
            Some(r) => r,
            // The first instruction may cross into the next page (MAX_INSN_LEN = 15): that
            // page's frame joins the block's dependencies, translated now as the interpreter's
            // fetch would (a fault or MMIO leaves the instruction to the interpreter).
            None if la & 0xfff > 0x1000 - 15
                && page_la & 0xffff_ffff != 0xffff_f000
                // A 16-bit IP wraps inside CS: its next bytes are not at the next page.
                && (matches!(mode, decoder::Mode::Bits32 | decoder::Mode::Bits64)
                    || rip & 0xffff <= 0xfff0) =>
            {
                let p2 = ctx
                    .translate(page_la + 0x1000, Access::Execute, false)
                    .ok()?;
                p2.host?;
                page2 = Some(p2.pa_page);
                scan(ctx.mem, page2)?
            }
            None => return None,
        };
        let insns: Vec<Insn> = blk.insns[..ir.ninsns as usize]
            .iter()
            .map(|d| Insn {
                insn: d.insn,
                len: d.len,
                next_ip: d.next_ip(),
                ring: d.needs_ring_layer(),
                ring_continue: continues_block(&d.insn),
                family: Cell::new(Family::Unknown),
            })
            .collect();
        let user = ctx.cpu.s.cpl == 3;
        // At most: the current chunk, the next one, and a fresh cache after a flush.
        let mut done = None;
        for attempt in 0..3 {
            // The id is the block's future index in the arena (a flush empties it).
            let id = self.arena.len() as u32;
            let chain = self.max_block_insns > 1 && id < 1 << 23;
            let e = jit::x64::emit_block(&ir, self.cache.next_addr(), user, id, chain);
            if let Some(entry) = self.cache.install(&e.code).ok()? {
                done = Some((entry, e, id));
                break;
            }
            if attempt == 1 {
                self.flush();
            }
        }
        let (entry, e, id) = done?;
        if let Some(m) = &mut self.perf_map {
            use std::io::Write;
            // A failed write only loses profiler names.
            let _ = writeln!(m, "{entry:x} {:x} rinx:{rip:#x}@{pa_page:#x}", e.code.len());
            if let Some(d) = &mut self.code_dump {
                // `RINX_PERF_MAP=2`: host bytes and guest instructions of every block, for
                // reading profiles at instruction level (scripts/jit-profile.py).
                let hex: String = e.code.iter().map(|b| format!("{b:02x}")).collect();
                let guest: Vec<String> = insns.iter().map(|i| format!("{}", i.insn)).collect();
                let _ = writeln!(d, "{entry:x} {rip:x} {hex} {}", guest.join(";"));
            }
        }
        if !ctx.cpu.dcache.is_code_page(pa_page) {
            // Inline stores bypass `note_write`: they must not reach this page any more.
            ctx.cpu.tlb.jit_protect(pa_page);
        }
        let gen = ctx.cpu.dcache.track_page(pa_page);
        let page2 = page2.map(|p2| {
            if !ctx.cpu.dcache.is_code_page(p2) {
                ctx.cpu.tlb.jit_protect(p2);
            }
            (p2, ctx.cpu.dcache.track_page(p2))
        });
        self.stats.translations += 1;
        self.stats.translate_ns += t0.elapsed().as_nanos() as u64;
        let b = Rc::new(Block {
            entry,
            chain_entry: entry + e.chain_entry,
            exits: e
                .exits
                .iter()
                .map(|x| (entry + x.site, x.target, Cell::new(false)))
                .collect(),
            id,
            mode: key_mode,
            epoch: self.cache.flushes,
            pa_page,
            gen,
            page2,
            ninsns: u64::from(ir.ninsns),
            max_ip: ir.max_ip,
            insns,
        });
        self.arena.push(b.clone());
        Some(b)
    }

    /// Patches exit `k` of block `from` to jump to `to`'s chained entry, if both belong to
    /// the same code-cache epoch, physical page, page generation and mode, and the exit
    /// targets `to`'s IP. Both blocks become stale together (same page), so the link never
    /// outlives its target; a flush drops both.
    #[cfg(target_arch = "x86_64")]
    fn chain(&mut self, from: u32, k: u8, to: &Block) {
        let Some(a) = self.arena.get(from as usize) else {
            return;
        };
        let Some((site, target, patched)) = a.exits.get(usize::from(k)) else {
            return;
        };
        if patched.get()
            || a.epoch != to.epoch
            || a.pa_page != to.pa_page
            || a.gen != to.gen
            || a.mode != to.mode
            || to.page2.is_some()
            || *target != to.insns[0].insn.ip()
        {
            return;
        }
        let Ok(rel) = i32::try_from(to.chain_entry as i64 - (*site as i64 + 4)) else {
            return;
        };
        if self.cache.patch(*site, &rel.to_le_bytes()).is_ok() {
            patched.set(true);
            self.stats.chains += 1;
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn chain(&mut self, _from: u32, _k: u8, _to: &Block) {}

    #[cfg(not(target_arch = "x86_64"))]
    fn enter<P: Platform + ?Sized>(
        &mut self,
        _ctx: &mut Ctx<'_, P>,
        _block: &Block,
        _remaining: u64,
        _tag: u64,
    ) -> Result<(), interrupt::Shutdown> {
        unreachable!("no JIT backend on this host")
    }

    #[cfg(target_arch = "x86_64")]
    fn enter<P: Platform + ?Sized>(
        &mut self,
        ctx: &mut Ctx<'_, P>,
        block: &Block,
        remaining: u64,
        tag: u64,
    ) -> Result<(), interrupt::Shutdown> {
        let entry_icount = ctx.cpu.icount;
        let epoch = self.epoch();
        let jc_ctx = jc_now(ctx.cpu, epoch, block.mode);
        let ident = ctx.mem.host_ident();
        if ctx.cpu.tlb.jit_mem != ident {
            // Host addresses of another guest memory (a cloned CPU): never use them.
            ctx.cpu.tlb.jit_flush();
            ctx.cpu.tlb.jit_mem = ident;
        }
        let tlb = ctx.cpu.tlb.jit.as_ptr() as usize;
        let state: *mut jit::abi::CpuState = &mut ctx.cpu.s;
        let mut h = HelperCtx {
            ctx,
            jc: jc_ctx,
            epoch,
            arena: &self.arena,
            entry_icount,
            shutdown: false,
            exit: ExitReason::End,
            helper_calls: &mut self.helper_calls,
        };
        let mut env = jit::abi::JitEnv {
            helper: helper::<P> as jit::x64::HelperFn as usize,
            limit: remaining.min(MAX_INSNS_PER_ENTRY),
            user: (&mut h as *mut HelperCtx<'_, '_, P>).cast(),
            tlb,
            fill: fill::<P> as jit::x64::FillFn as usize,
            cur: u64::from(block.id),
            last_exit: u64::MAX,
            jc: self.jc.as_ptr() as usize,
            jc_tag: tag,
        };
        // SAFETY: `block.entry` is the address of code emitted by `jit::x64::emit` into the
        // executable code cache in the current epoch (checked by `valid`; the cache is only
        // flushed between blocks), following the `BlockFn` convention. `state` points to the
        // live `CpuState` and `env` to a `JitEnv` whose `user` is the `HelperCtx` above; both
        // outlive the call, and Rust code touches them during the call only through the helper
        // and the fill. Chained entries jump to blocks of `self.arena` (kept alive, with
        // their code, until the next flush); `h.arena` is not modified during the call.
        // `env.jc` is the boxed jump cache (never reallocated, not written during the call);
        // its entries with tag `env.jc_tag` hold chained entries of blocks of `self.arena`.
        // `tlb` is the boxed JIT TLB array of this CPU (never reallocated); its
        // entries hold host addresses of pages of `ctx.mem` (checked through `jit_mem` above),
        // each valid for the 4096 bytes of a RAM page, which is all generated code touches.
        let r = unsafe {
            let f: jit::x64::BlockFn = std::mem::transmute(block.entry);
            f(state, &mut env)
        };
        self.stats.entries += 1;
        if env.last_exit != u64::MAX {
            self.pending_chain = Some(((env.last_exit >> 8) as u32, env.last_exit as u8));
        }
        let ctx = h.ctx;
        if r != jit::abi::EXIT_SYNCED {
            ctx.cpu.icount = entry_icount + r;
        }
        self.stats.block_insns += ctx.cpu.icount - entry_icount;
        let why = if h.shutdown {
            ExitReason::Shutdown
        } else if r != jit::abi::EXIT_SYNCED && ctx.cpu.s.rip == block.insns[0].insn.ip() {
            ExitReason::LoopLimit
        } else if r != jit::abi::EXIT_SYNCED {
            ExitReason::End
        } else {
            h.exit
        };
        self.stats.exits[why as usize] += 1;
        if h.shutdown {
            Err(interrupt::Shutdown)
        } else {
            Ok(())
        }
    }
}

/// True unless `b` crosses into a second page that linear `la`'s next page no longer maps to
/// (translated as the interpreter's fetch of the instruction would).
fn page2_current<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, b: &Block, la: u64) -> bool {
    let Some((p2, _)) = b.page2 else {
        return true;
    };
    ctx.translate((la & !0xfff) + 0x1000, Access::Execute, false)
        .is_ok_and(|p| p.pa_page == p2 && p.host.is_some())
}

/// The TLB fill compiled code calls when its inline probe misses for an access of
/// `kind & 0xff` bytes at linear `la` (a store if `kind & 0x100`): translates `la` exactly as
/// the interpreter would (page walk, A/D bits) and, when the result may be cached for inline
/// use (see `mmu::tlb::JitTlbEntry`), fills the JIT entry and returns 0 so that the access is
/// retried. Anything else (fault, MMIO, page crossing, a code page, SMAP) returns 1: the
/// instruction then runs through [`helper`], which delivers a fault with its exact error code.
///
/// # Safety
/// `env` must be the `JitEnv` set up by `JitEngine::enter` for the running block.
#[cfg(target_arch = "x86_64")]
unsafe extern "sysv64" fn fill<P: Platform + ?Sized>(
    env: *mut jit::abi::JitEnv,
    la: u64,
    kind: u64,
) -> u64 {
    // SAFETY: as in `helper`: `user` points to the live `HelperCtx` of `enter`.
    let h = unsafe { &mut *((*env).user as *mut HelperCtx<'_, '_, P>) };
    let ctx = &mut *h.ctx;
    let size = kind & 0xff;
    let write = kind & 0x100 != 0;
    // Non-canonical addresses fault (#GP / #SS) in the helper; the page walk would ignore
    // bits 63:48, so they must never be filled (SDM Vol. 1 §3.3.7.1).
    if (la & 0xfff) + size > 4096 || !mem::canonical(la) {
        return 1;
    }
    // While tracing, every access goes through the helper so that `walk` records are those of
    // the interpreter: a fill's walk that faults would be repeated by the helper (two records
    // for one access), and a filled entry would hide later walks the interpreter makes.
    if ctx.cpu.trace.is_on() {
        return 1;
    }
    let access = if write { Access::Write } else { Access::Read };
    let Ok(p) = ctx.translate(la, access, false) else {
        return 1;
    };
    let Some(hp) = p.host else {
        return 1;
    };
    if write && ctx.cpu.dcache.is_code_page(p.pa_page) {
        return 1;
    }
    let user = ctx.cpu.s.cpl == 3;
    let Some(e) = ctx.cpu.tlb.lookup(la) else {
        return 1;
    };
    // A supervisor access to a user page under SMAP depends on RFLAGS.AC, which the tag
    // does not capture (SDM Vol. 3A §4.6.1).
    if !user && e.t.user && ctx.cpu.s.cr4 & cr::CR4_SMAP != 0 {
        return 1;
    }
    let host = ctx.mem.host_page_addr(hp);
    ctx.cpu.tlb.jit_fill(la, p.pa_page, host, user, write);
    0
}

/// The helper compiled code calls for guest instruction `index` of the running block: it
/// executes the instruction with the interpreter's own step functions ([`interp::begin_step`],
/// [`interp::execute_fetched`], [`interp::retire`]), so both engines share one source of
/// semantics, and says whether the block may go on (0) or must exit (1).
///
/// # Safety
/// `env` must be the `JitEnv` set up by `JitEngine::enter` for this block.
#[cfg(target_arch = "x86_64")]
unsafe extern "sysv64" fn helper<P: Platform + ?Sized>(
    env: *mut jit::abi::JitEnv,
    index: u64,
    done: u64,
) -> u64 {
    // SAFETY: per the contract above, `user` points to the live `HelperCtx` of `enter`, which
    // is not otherwise accessed while the block runs, and `arena` to the engine's block list,
    // which holds the running block at index `cur` (set by `enter` or a chained entry).
    let (h, block) = unsafe {
        let h = &mut *((*env).user as *mut HelperCtx<'_, '_, P>);
        let b: &Block = &(&*h.arena)[(*env).cur as usize];
        (h, b)
    };
    let i = index as usize;
    let ins = &block.insns[i];
    if let Some(c) = h.helper_calls.get_mut(ins.insn.code() as usize) {
        *c += 1;
    }
    let ctx = &mut *h.ctx;
    ctx.cpu.icount = h.entry_icount + done + index;
    ctx.cpu.s.rip = ins.insn.ip();
    let rip = interp::begin_step(ctx);
    if ctx.cpu.trace.is_on() {
        crate::trace::hooks::jit_insn_begin(ctx.cpu);
    }
    // Blocks run only with TF, RF and DR7 breakpoints clear (see `run_block`), so the
    // instruction-breakpoint check of `interp::execute_fetched` has nothing to do here.
    let tf_rf = ctx.cpu.s.rflags & (fl::RF | fl::TF);
    let mut hint = ins.family.get();
    let r = interp::execute_decoded(ctx, rip, &ins.insn, ins.len, tf_rf, &mut hint);
    ins.family.set(hint);
    let faulted = r.is_err();
    if interp::retire(ctx, r).is_err() {
        h.shutdown = true;
        return 1;
    }
    if ctx.cpu.trace.is_on() {
        crate::trace::hooks::jit_insn_end(ctx.cpu, &ins.insn, faulted, ins.ring);
    }
    // Anything that may change what the dispatcher runs at a RIP (a page generation, a TLB
    // flush, the mode bits, CS) ends the block: later exits of this invocation probe the jump
    // cache with the tag of the entry context.
    let may_go_on = !faulted
        && (!ins.ring || ins.ring_continue)
        && ctx.cpu.dcache.page_gen(block.pa_page) == Some(block.gen)
        && !ctx.cpu.stop_requested
        && !ctx.cpu.halted
        && ctx.cpu.s.rflags & (fl::TF | fl::RF) == 0
        && ctx.cpu.s.dr[7] & debug::DR7_ENABLES == 0
        && (ctx.cpu.db_hits | ctx.cpu.db_deferred) == 0
        && {
            let mode = mode_bits(ctx.cpu, ctx.decode_mode());
            jc_now(ctx.cpu, h.epoch, mode) == h.jc
        };
    if may_go_on && i + 1 < block.insns.len() && ctx.cpu.s.rip == ins.next_ip {
        return 0;
    }
    h.exit = exit_reason(ctx.cpu, block, ins, faulted);
    if may_go_on && h.exit == ExitReason::End {
        // Control went elsewhere (or the block ended): continue through the jump cache.
        return 2 + (ctx.cpu.icount - h.entry_icount);
    }
    1
}

/// Ring-layer instructions that change nothing the block depends on (mode, CS, paging,
/// IF = 1 interrupt windows, control flow) and are frequent in guest kernels: after the ring
/// layer ran them the block goes on instead of returning to the dispatcher. RDTSC/RDTSCP
/// (timekeeping), PUSHF (`local_irq_save`), CLI (interrupts only become *disabled*), CPUID.
/// Everything else the helper checks after any instruction (faults, page generations, the
/// jump-cache context, TF/RF/DR7, stop requests) still applies.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn continues_block(insn: &iced_x86::Instruction) -> bool {
    use iced_x86::Mnemonic as M;
    matches!(
        insn.mnemonic(),
        M::Rdtsc | M::Rdtscp | M::Pushf | M::Pushfd | M::Pushfq | M::Cli | M::Cpuid
    )
}

/// Why the helper ends the block after `ins` (for `--stats`).
#[cfg(target_arch = "x86_64")]
#[cold]
fn exit_reason(cpu: &Cpu, block: &Block, ins: &Insn, faulted: bool) -> ExitReason {
    if faulted {
        ExitReason::Exception
    } else if ins.ring && !ins.ring_continue {
        ExitReason::Ring
    } else if cpu.dcache.page_gen(block.pa_page) != Some(block.gen) {
        ExitReason::Smc
    } else if cpu.stop_requested || cpu.halted {
        ExitReason::Stop
    } else if cpu.s.rflags & (fl::TF | fl::RF) != 0
        || cpu.s.dr[7] & debug::DR7_ENABLES != 0
        || (cpu.db_hits | cpu.db_deferred) != 0
    {
        ExitReason::Debug
    } else {
        ExitReason::End
    }
}
