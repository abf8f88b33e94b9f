//! The interpreter's decoded-instruction cache, keyed by guest physical address (plus the linear
//! RIP and decode mode, since iced-x86 bakes the IP into branch targets).
//!
//! Self-modifying code: every physical page that holds cached instructions is marked in a
//! bitmap; a store to a marked page bumps the page's generation, which invalidates all of its
//! entries at once (DESIGN.md "Self-modifying code"). Linux patches its own text at boot
//! (alternatives, static keys), so this path is exercised by every real boot.

use crate::cpu::dispatch::Family;
use iced_x86::Instruction;

/// Number of direct-mapped entries (power of two).
const ENTRIES: usize = 1 << 15;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Guest physical address of the first byte (u64::MAX = empty).
    pa: u64,
    rip: u64,
    gen: u32,
    mode: u8,
    len: u8,
    family: Family,
    insn: Instruction,
}

/// Counters shown by `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Code pages invalidated by guest stores.
    pub invalidations: u64,
}

/// The cache. The entry table is allocated on first use: short-lived CPUs (conformance
/// tests) never pay for it.
#[derive(Debug)]
pub struct DecodeCache {
    /// Unique identity of this cache (see [`DecodeCache::id`]).
    id: u64,
    entries: Vec<Entry>,
    /// Generation per physical page (grown on demand).
    page_gen: Vec<u32>,
    /// One bit per physical page: some entry was decoded from it.
    code_bits: Vec<u64>,
    /// Inserts refused before the table is allocated.
    warmup: u32,
    /// Bumped whenever a page generation changes (see [`DecodeCache::inval_count`]).
    inval: u64,
    pub stats: DecodeCacheStats,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Default for DecodeCache {
    fn default() -> Self {
        DecodeCache {
            id: fresh_id(),
            entries: Vec::new(),
            page_gen: Vec::new(),
            code_bits: Vec::new(),
            warmup: 0,
            inval: 0,
            stats: DecodeCacheStats::default(),
        }
    }
}

impl Clone for DecodeCache {
    /// A clone is a new cache (new [`DecodeCache::id`]) with the same contents.
    fn clone(&self) -> Self {
        DecodeCache {
            id: fresh_id(),
            entries: self.entries.clone(),
            page_gen: self.page_gen.clone(),
            code_bits: self.code_bits.clone(),
            warmup: self.warmup,
            inval: self.inval,
            stats: self.stats,
        }
    }
}

#[inline]
fn slot(pa: u64) -> usize {
    ((pa ^ (pa >> 15)) as usize) & (ENTRIES - 1)
}

impl DecodeCache {
    /// A process-unique identity: page generations are only comparable within one cache, so
    /// the JIT drops its translations when it finds itself attached to another one (a new or
    /// cloned CPU).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The cached instruction at physical `pa`, decoded at `rip` in `mode`.
    #[inline]
    pub fn lookup(&mut self, pa: u64, rip: u64, mode: u8) -> Option<(Instruction, u8, Family)> {
        let e = self.entries.get(slot(pa))?;
        let page = (pa >> 12) as usize;
        if e.pa == pa
            && e.rip == rip
            && e.mode == mode
            && self.page_gen.get(page).copied() == Some(e.gen)
        {
            self.stats.hits += 1;
            return Some((e.insn, e.len, e.family));
        }
        self.stats.misses += 1;
        None
    }

    /// Caches an instruction that lies entirely in the page of `pa`.
    pub fn insert(&mut self, pa: u64, rip: u64, mode: u8, insn: &Instruction, len: u8) {
        if self.entries.is_empty() {
            // Short runs (conformance tests execute one instruction per CPU) skip the cache.
            if self.warmup < 256 {
                self.warmup += 1;
                return;
            }
            self.entries = vec![
                Entry {
                    pa: u64::MAX,
                    rip: 0,
                    gen: 0,
                    mode: 0,
                    len: 0,
                    family: Family::Unknown,
                    insn: Instruction::default(),
                };
                ENTRIES
            ];
        }
        let page = (pa >> 12) as usize;
        if page >= self.page_gen.len() {
            self.page_gen.resize(page + 1, 0);
            self.code_bits.resize(page / 64 + 1, 0);
        }
        self.code_bits[page / 64] |= 1 << (page % 64);
        self.entries[slot(pa)] = Entry {
            pa,
            rip,
            gen: self.page_gen[page],
            mode,
            len,
            family: Family::Unknown,
            insn: *insn,
        };
    }

    /// Records which family executed the instruction cached for `pa`.
    #[inline]
    pub fn set_family(&mut self, pa: u64, family: Family) {
        if let Some(e) = self.entries.get_mut(slot(pa)) {
            if e.pa == pa {
                e.family = family;
            }
        }
    }

    /// A store to the physical page `pa_page` (any address in it): drops its entries if it
    /// holds cached code.
    #[inline]
    pub fn note_write(&mut self, pa_page: u64) {
        let page = (pa_page >> 12) as usize;
        if let Some(w) = self.code_bits.get_mut(page / 64) {
            let bit = 1u64 << (page % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.page_gen[page] = self.page_gen[page].wrapping_add(1);
                self.inval += 1;
                self.stats.invalidations += 1;
            }
        }
    }

    /// Marks physical page `pa_page` (any address in it) as holding code translated by the
    /// JIT and returns its current generation: a later store to the page bumps the generation,
    /// which is how the JIT learns that blocks translated from it are stale.
    pub fn track_page(&mut self, pa_page: u64) -> u32 {
        let page = (pa_page >> 12) as usize;
        if page >= self.page_gen.len() {
            self.page_gen.resize(page + 1, 0);
            self.code_bits.resize(page / 64 + 1, 0);
        }
        self.code_bits[page / 64] |= 1 << (page % 64);
        self.page_gen[page]
    }

    /// True if physical page `pa_page` holds decoded or translated code (stores to it must go
    /// through [`DecodeCache::note_write`]).
    #[inline]
    pub fn is_code_page(&self, pa_page: u64) -> bool {
        let page = (pa_page >> 12) as usize;
        self.code_bits
            .get(page / 64)
            .is_some_and(|w| w & (1u64 << (page % 64)) != 0)
    }

    /// Current generation of physical page `pa_page` (`None` if never tracked).
    #[inline]
    pub fn page_gen(&self, pa_page: u64) -> Option<u32> {
        self.page_gen.get((pa_page >> 12) as usize).copied()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        for g in self.page_gen.iter_mut() {
            *g = g.wrapping_add(1);
        }
        self.code_bits.fill(0);
        self.inval += 1;
    }

    /// Number of page-generation changes so far: while it stays the same, every translation
    /// and decoded instruction that was valid is still valid (the JIT's jump cache uses this).
    #[inline]
    pub fn inval_count(&self) -> u64 {
        self.inval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_to_code_page_invalidates_only_that_page() {
        let mut c = DecodeCache {
            warmup: u32::MAX,
            ..Default::default()
        };
        let i = Instruction::default();
        c.insert(0x1234, 0x1234, 2, &i, 3);
        c.insert(0x5678, 0x5678, 2, &i, 3);
        assert!(c.lookup(0x1234, 0x1234, 2).is_some());
        assert!(c.lookup(0x1234, 0x9234, 2).is_none(), "other RIP alias");
        c.note_write(0x1000);
        assert!(c.lookup(0x1234, 0x1234, 2).is_none());
        assert!(c.lookup(0x5678, 0x5678, 2).is_some());
        assert_eq!(c.stats.invalidations, 1);
    }
}
