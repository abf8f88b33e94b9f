//! The `--stats` report printed at exit: instruction count and speed, cache hit rates,
//! exceptions, interrupts, ring-layer work, time in the engine versus halted, and under the JIT
//! its translations, code-cache hit rate, block exits by reason and time per engine.

use crate::cpu::Cpu;
use std::fmt::Write;
use std::time::Duration;

const VECTOR_NAMES: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "22", "23", "24", "25", "26",
    "27", "28", "29", "#SX", "31",
];

fn pct(hit: u64, miss: u64) -> String {
    let total = hit + miss;
    if total == 0 {
        "n/a".to_string()
    } else {
        format!("{:.2}%", 100.0 * hit as f64 / total as f64)
    }
}

/// The statistics of a run of `cpu` lasting `wall`, of which `halted` was spent waiting in HLT.
pub fn report(cpu: &Cpu, wall: Duration, halted: Duration) -> String {
    let mut s = String::new();
    let w = wall.as_secs_f64();
    let engine = wall.saturating_sub(halted).as_secs_f64();
    let mips = |secs: f64| {
        if secs > 0.0 {
            cpu.icount as f64 / secs / 1e6
        } else {
            0.0
        }
    };
    let _ = writeln!(s, "rinx statistics");
    let _ = writeln!(s, "  instructions executed   {}", cpu.icount);
    let _ = writeln!(
        s,
        "  wall time               {w:.3} s ({:.2} MIPS; {:.2} MIPS while not halted)",
        mips(w),
        mips(engine)
    );
    let _ = writeln!(
        s,
        "  time in engine / halted {engine:.3} s / {:.3} s",
        halted.as_secs_f64()
    );
    let d = &cpu.dcache.stats;
    let _ = writeln!(
        s,
        "  decoded-insn cache      {} hits, {} misses ({} hit rate), {} invalidations",
        d.hits,
        d.misses,
        pct(d.hits, d.misses),
        d.invalidations
    );
    let t = &cpu.tlb.stats;
    let _ = writeln!(
        s,
        "  TLB                     {} hits, {} misses ({} hit rate), {} flushes",
        t.hits,
        t.misses,
        pct(t.hits, t.misses),
        t.flushes
    );
    let exc: Vec<String> = cpu
        .exceptions
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(v, c)| format!("{} (vector {v}) {c}", VECTOR_NAMES[v]))
        .collect();
    let _ = writeln!(
        s,
        "  exceptions              {}",
        if exc.is_empty() {
            "none".to_string()
        } else {
            exc.join(", ")
        }
    );
    let _ = writeln!(s, "  external interrupts     {}", cpu.interrupts);
    let ring = cpu.ring_stats.nonzero();
    let total: u64 = ring.iter().map(|e| e.1).sum();
    let _ = writeln!(
        s,
        "  ring layer              {total} instructions, {} refused with a fault",
        cpu.ring_stats.refused
    );
    for (m, c) in ring {
        let _ = writeln!(s, "    {:<12} {c}", format!("{m:?}").to_lowercase());
    }
    s
}

/// The JIT's part of the report: translations, code-cache hit rate, compiled-block entries and
/// exits by reason, and host time split between compiled code (with the helpers it calls and
/// the dispatcher), translation and the dispatcher's interpreter steps.
pub fn jit_report(j: &crate::exec::jit::JitStats) -> String {
    use crate::exec::jit::ExitReason;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  jit: blocks translated  {} ({:.1} us per attempt), {} attempts failed, {} SMC invalidations, {} cache flushes",
        j.translations,
        j.translate_ns as f64 / (j.translations + j.failed_translations).max(1) as f64 / 1000.0,
        j.failed_translations,
        j.invalidations,
        j.flushes
    );
    let _ = writeln!(
        s,
        "  jit: code cache         {} hits, {} misses ({} hit rate)",
        j.cache_hits,
        j.cache_misses,
        pct(j.cache_hits, j.cache_misses)
    );
    let _ = writeln!(
        s,
        "  jit: block entries      {} ({} instructions in compiled blocks, {:.1} per entry)",
        j.entries,
        j.block_insns,
        j.block_insns as f64 / j.entries.max(1) as f64
    );
    let _ = writeln!(
        s,
        "  jit: chained exits      {} (exits patched to jump straight to the next block)",
        j.chains
    );
    let _ = writeln!(
        s,
        "  jit: jump cache         {} driver lookups hit, {} fills",
        j.jc_hits, j.jc_fills
    );
    let exits: Vec<String> = ExitReason::ALL
        .iter()
        .filter(|r| j.exits[**r as usize] > 0)
        .map(|r| format!("{} {}", r.name(), j.exits[*r as usize]))
        .collect();
    let _ = writeln!(
        s,
        "  jit: exits by reason    {}",
        if exits.is_empty() {
            "none".to_string()
        } else {
            exits.join(", ")
        }
    );
    let _ = writeln!(s, "  jit: interpreter steps  {}", j.interp_steps);
    let ns = |v: u64| v as f64 / 1e9;
    let compiled = j.run_ns.saturating_sub(j.translate_ns + j.interp_ns);
    let _ = writeln!(
        s,
        "  time per engine         compiled code {:.3} s, translation {:.3} s, interpreter steps {:.3} s",
        ns(compiled),
        ns(j.translate_ns),
        ns(j.interp_ns)
    );
    s
}

/// The JIT's helper calls by instruction form (`JitEngine::helper_calls`, indexed by
/// `iced_x86::Code`), most frequent first: the
/// instructions compiled code ran through the interpreter's semantic functions, i.e. what to
/// emit natively next. At most `top` lines; empty when there were none.
pub fn jit_helper_report(calls: &[u64], top: usize) -> String {
    let mut v: Vec<(usize, u64)> = calls
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, c)| c > 0)
        .collect();
    if v.is_empty() {
        return String::new();
    }
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = v.iter().map(|&(_, c)| c).sum();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  jit: helper calls       {total} (by instruction form, top {top}):"
    );
    for &(m, c) in v.iter().take(top) {
        let name = iced_x86::Code::values()
            .nth(m)
            .map(|m| format!("{m:?}"))
            .unwrap_or_else(|| format!("#{m}"));
        let _ = writeln!(s, "    {name:<24} {c:>14} ({})", pct(c, total - c));
    }
    s
}
