//! The per-vCPU shadow TLB: linear page -> guest physical page -> host page, with the
//! permission bits of the walk cached so that each access only re-checks them.
//!
//! Flushed exactly as hardware flushes (Intel SDM Vol. 3A §4.10.4): MOV to CR3 drops non-global
//! entries, INVLPG drops the entries of one page, and changes to CR0.PG/WP, CR4.PGE/PAE/PSE/
//! SMEP/SMAP or EFER.NXE/LMA drop everything.

use super::phys::HostPage;
use super::walk::Translation;
pub use jit::abi::JitTlbEntry;

/// Number of sets (indexed by linear page number); each has [`WAYS`] entries, set `s` being
/// entries `s` and `s + TLB_ENTRIES` (the JIT's inline probe checks way 0 first).
pub const TLB_ENTRIES: usize = jit::abi::JTLB_ENTRIES;
/// Entries per set.
pub const WAYS: usize = jit::abi::JTLB_WAYS;
const ALL: usize = TLB_ENTRIES * WAYS;

/// One cached translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbEntry {
    /// Linear page number + 1 (0 = invalid).
    pub tag: u64,
    /// Guest physical address of the 4 KiB page.
    pub pa_page: u64,
    /// Where the page lives in host memory; `None` for MMIO / unassigned addresses.
    pub host: Option<HostPage>,
    pub t: Translation,
}

impl TlbEntry {
    const INVALID: TlbEntry = TlbEntry {
        tag: 0,
        pa_page: 0,
        host: None,
        t: Translation {
            pa_page: 0,
            writable: false,
            user: false,
            nx: false,
            global: false,
            dirty: false,
            page_size: 4096,
        },
    };
}

/// Hit/miss counters (shown by `--stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlbStats {
    pub hits: u64,
    pub misses: u64,
    pub flushes: u64,
}

/// The shadow TLB.
#[derive(Debug, Clone)]
pub struct Tlb {
    entries: Box<[TlbEntry; ALL]>,
    /// The JIT's view of the same translations with raw host addresses (see [`JitTlbEntry`]).
    /// Every flush below drops it too, so it never outlives the entry it was derived from.
    pub jit: Box<[JitTlbEntry; ALL]>,
    /// Host address of the guest RAM the `jit` entries point into (0 = none filled yet): a
    /// CPU moved to other guest memory (a clone) must not use them.
    pub jit_mem: usize,
    /// Set when an entry from a large page was inserted (INVLPG must then search).
    has_large: bool,
    /// Bumped whenever entries are dropped (flushes, INVLPG, `flush_phys`): a translation
    /// cached elsewhere (the JIT's jump cache) is valid only while this stays the same.
    pub gen: u64,
    pub stats: TlbStats,
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            entries: Box::new([TlbEntry::INVALID; ALL]),
            jit: Box::new([JitTlbEntry::INVALID; ALL]),
            jit_mem: 0,
            has_large: false,
            gen: 0,
            stats: TlbStats::default(),
        }
    }
}

fn slot(la: u64) -> usize {
    ((la >> 12) as usize) & (TLB_ENTRIES - 1)
}

impl Tlb {
    /// The cached entry for linear address `la`, if any.
    #[inline]
    pub fn lookup(&self, la: u64) -> Option<&TlbEntry> {
        let s = slot(la);
        let tag = (la >> 12) + 1;
        let e = &self.entries[s];
        if e.tag == tag {
            return Some(e);
        }
        let e = &self.entries[s + TLB_ENTRIES];
        (e.tag == tag).then_some(e)
    }

    /// Caches a translation for linear address `la`.
    pub fn insert(&mut self, la: u64, host: Option<HostPage>, t: Translation) {
        if t.page_size > 4096 {
            self.has_large = true;
        }
        let s = slot(la);
        let tag = (la >> 12) + 1;
        // The newest entry goes to way 0; the one it displaces (another page) to way 1.
        if self.entries[s + TLB_ENTRIES].tag == tag {
            self.entries[s + TLB_ENTRIES] = TlbEntry::INVALID;
        }
        if self.entries[s].tag != 0 && self.entries[s].tag != tag {
            self.entries[s + TLB_ENTRIES] = self.entries[s];
        }
        self.entries[s] = TlbEntry {
            tag,
            pa_page: t.pa_page,
            host,
            t,
        };
    }

    /// Index of the entry for linear address `la` (generated code computes the same).
    #[inline]
    pub fn jit_slot(la: u64) -> usize {
        slot(la)
    }

    /// Fills the JIT entry for the page of `la` (see [`JitTlbEntry`] for when a caller may).
    /// `host_page` is the host address of the 4 KiB page; `write` also allows stores.
    pub fn jit_fill(&mut self, la: u64, pa_page: u64, host_page: usize, user: bool, write: bool) {
        let page = la & !0xfff;
        let tag = page | u64::from(user);
        let s = slot(la);
        let i = if self.jit[s + TLB_ENTRIES].read_tag == tag {
            // Way 1 holds this page (e.g. its read tag, now filled for a store).
            s + TLB_ENTRIES
        } else {
            if self.jit[s].read_tag != tag && self.jit[s].read_tag != JitTlbEntry::INVALID.read_tag
            {
                self.jit[s + TLB_ENTRIES] = self.jit[s];
            }
            s
        };
        let e = &mut self.jit[i];
        if e.read_tag != tag || e.pa_page != pa_page {
            *e = JitTlbEntry::INVALID;
        }
        e.read_tag = tag;
        if write {
            e.write_tag = tag;
        }
        e.addend = (host_page as u64).wrapping_sub(page);
        e.pa_page = pa_page;
    }

    /// Drops every JIT entry.
    pub fn jit_flush(&mut self) {
        self.jit.fill(JitTlbEntry::INVALID);
    }

    /// Drops the write tags of entries that map guest physical page `pa_page` (it now holds
    /// code: stores to it must be seen by the SMC tracking).
    pub fn jit_protect(&mut self, pa_page: u64) {
        for e in self.jit.iter_mut() {
            if e.pa_page == pa_page {
                e.write_tag = u64::MAX;
            }
        }
    }

    /// Drops every entry (CR0/CR4/EFER paging-mode changes, or CR3 writes with CR4.PGE = 0).
    pub fn flush_all(&mut self) {
        self.entries.fill(TlbEntry::INVALID);
        self.jit_flush();
        self.has_large = false;
        self.gen += 1;
        self.stats.flushes += 1;
    }

    /// Drops every non-global entry (MOV to CR3, task switch).
    pub fn flush_non_global(&mut self) {
        // The JIT entries do not record G: dropping all of them is always correct.
        self.jit_flush();
        for e in self.entries.iter_mut() {
            if !e.t.global {
                *e = TlbEntry::INVALID;
            }
        }
        self.gen += 1;
        self.stats.flushes += 1;
    }

    /// INVLPG: drops the entries that map the page of `la`, including every 4 KiB piece of a
    /// large page that contains it.
    pub fn invlpg(&mut self, la: u64) {
        self.gen += 1;
        let s = slot(la);
        for i in [s, s + TLB_ENTRIES] {
            if self.entries[i].tag == (la >> 12) + 1 {
                self.entries[i] = TlbEntry::INVALID;
            }
            self.jit[i] = JitTlbEntry::INVALID;
        }
        if self.has_large {
            self.jit_flush();
            for e in self.entries.iter_mut() {
                if e.tag != 0 && e.t.page_size > 4096 {
                    let mask = !(e.t.page_size - 1);
                    if ((e.tag - 1) << 12) & mask == la & mask {
                        *e = TlbEntry::INVALID;
                    }
                }
            }
        }
    }

    /// Drops entries whose guest physical page is `pa_page` (write-tracking of page tables or
    /// code pages may use this).
    pub fn flush_phys(&mut self, pa_page: u64) {
        self.gen += 1;
        for e in self.jit.iter_mut() {
            if e.pa_page == pa_page {
                *e = JitTlbEntry::INVALID;
            }
        }
        for e in self.entries.iter_mut() {
            if e.tag != 0 && e.pa_page == pa_page {
                *e = TlbEntry::INVALID;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(pa: u64, global: bool, size: u64) -> Translation {
        Translation {
            pa_page: pa,
            writable: true,
            user: true,
            nx: false,
            global,
            dirty: true,
            page_size: size,
        }
    }

    #[test]
    fn two_pages_of_one_set_both_stay_cached_and_a_third_evicts_the_older() {
        let mut t = Tlb::default();
        let (a, b, c) = (0x40_0000, 0x80_0000, 0xc0_0000); // 4 MiB apart: one set
        assert_eq!(slot(a), slot(b));
        t.insert(a, None, tr(0x1000, false, 4096));
        t.insert(b, None, tr(0x2000, false, 4096));
        assert_eq!(t.lookup(a).map(|e| e.pa_page), Some(0x1000));
        assert_eq!(t.lookup(b).map(|e| e.pa_page), Some(0x2000));
        t.insert(c, None, tr(0x3000, false, 4096));
        assert!(t.lookup(a).is_none(), "the oldest is evicted");
        assert_eq!(t.lookup(b).map(|e| e.pa_page), Some(0x2000));
        assert_eq!(t.lookup(c).map(|e| e.pa_page), Some(0x3000));
        // Re-inserting a page held in way 1 leaves one copy.
        t.insert(b, None, tr(0x4000, false, 4096));
        assert_eq!(t.lookup(b).map(|e| e.pa_page), Some(0x4000));
        t.invlpg(b);
        assert!(t.lookup(b).is_none());
        assert_eq!(t.lookup(c).map(|e| e.pa_page), Some(0x3000));
        // The JIT entries: both pages of a set, in way 0 and way 1.
        t.jit_fill(a, 0x1000, 0x10_0000, false, false);
        t.jit_fill(b, 0x2000, 0x20_0000, false, true);
        let s = Tlb::jit_slot(a);
        assert_eq!(t.jit[s].read_tag, b);
        assert_eq!(t.jit[s + TLB_ENTRIES].read_tag, a);
        // A store fill for the page in way 1 updates it there.
        t.jit_fill(a, 0x1000, 0x10_0000, false, true);
        assert_eq!(t.jit[s + TLB_ENTRIES].write_tag, a);
        assert_eq!(t.jit[s].read_tag, b);
        t.invlpg(a);
        assert_eq!(t.jit[s].read_tag, u64::MAX);
        assert_eq!(t.jit[s + TLB_ENTRIES].read_tag, u64::MAX);
    }

    #[test]
    fn cr3_flush_keeps_global_and_invlpg_hits_large_pages() {
        let mut t = Tlb::default();
        t.insert(0x1000, None, tr(0x5000, false, 4096));
        t.insert(0xc000_0000, None, tr(0x0, true, 4096));
        t.flush_non_global();
        assert!(t.lookup(0x1000).is_none());
        assert!(t.lookup(0xc000_0000).is_some());
        t.insert(0x20_1000, None, tr(0x20_1000, false, 2 << 20));
        t.invlpg(0x3f_f000);
        assert!(t.lookup(0x20_1000).is_none());
        t.flush_all();
        assert!(t.lookup(0xc000_0000).is_none());
    }
}
