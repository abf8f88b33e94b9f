//! Data watchpoints: linear address ranges whose reads and / or writes stop the guest (the
//! debugger's `watch`, `rwatch`, `awatch`; GDB Remote Serial Protocol packets `Z2`, `Z3`, `Z4`).
//!
//! They are checked on the data-access hooks of `cpu::mem` (the same hook points as the trace
//! of memory accesses), so they cost nothing while no watchpoint and no tracer is attached. Like
//! the x86 debug registers (Intel SDM Vol. 3A §17.2.4), a hit is a trap: the access completes and
//! the run loop stops after the instruction that made it.

/// Which accesses a watchpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// Writes (gdb `watch`).
    Write,
    /// Reads (gdb `rwatch`).
    Read,
    /// Reads and writes (gdb `awatch`).
    Access,
}

impl WatchKind {
    fn matches(self, write: bool) -> bool {
        match self {
            WatchKind::Write => write,
            WatchKind::Read => !write,
            WatchKind::Access => true,
        }
    }
}

/// One watchpoint: `len` bytes at linear address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Watchpoint {
    /// First linear address watched.
    pub addr: u64,
    /// Bytes watched (at least 1).
    pub len: u64,
    /// Accesses reported.
    pub kind: WatchKind,
}

/// The first watchpoint hit since the last [`Watchpoints::take_hit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchHit {
    /// The watchpoint that was hit.
    pub watch: Watchpoint,
    /// Linear address of the access (its first byte).
    pub la: u64,
    /// True for a write access.
    pub write: bool,
}

/// The set of watchpoints and the pending hit.
#[derive(Debug, Clone, Default)]
pub struct Watchpoints {
    list: Vec<Watchpoint>,
    hit: Option<WatchHit>,
}

impl Watchpoints {
    /// Adds a watchpoint (a duplicate is kept once).
    pub fn add(&mut self, w: Watchpoint) {
        if !self.list.contains(&w) {
            self.list.push(w);
        }
    }

    /// Removes a watchpoint; false if it was not set.
    pub fn remove(&mut self, w: Watchpoint) -> bool {
        let n = self.list.len();
        self.list.retain(|x| *x != w);
        self.list.len() != n
    }

    /// True when no watchpoint is set.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Checks an access of `len` bytes at `la`; remembers the first hit.
    #[inline]
    pub fn check(&mut self, write: bool, la: u64, len: u64) {
        if self.hit.is_some() {
            return;
        }
        let end = la.wrapping_add(len.max(1));
        for w in &self.list {
            let wend = w.addr.wrapping_add(w.len.max(1));
            if la < wend && w.addr < end && w.kind.matches(write) {
                self.hit = Some(WatchHit {
                    watch: *w,
                    la,
                    write,
                });
                return;
            }
        }
    }

    /// Returns and clears the pending hit.
    pub fn take_hit(&mut self) -> Option<WatchHit> {
        self.hit.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_kind() {
        let mut w = Watchpoints::default();
        w.add(Watchpoint {
            addr: 0x100,
            len: 4,
            kind: WatchKind::Write,
        });
        w.check(false, 0x100, 4);
        assert_eq!(w.take_hit(), None, "a read does not hit a write watchpoint");
        w.check(true, 0xfc, 4);
        assert_eq!(
            w.take_hit(),
            None,
            "0xfc..0x100 does not overlap 0x100..0x104"
        );
        w.check(true, 0xfe, 4);
        let h = w.take_hit().expect("0xfe..0x102 overlaps");
        assert_eq!((h.la, h.write, h.watch.addr), (0xfe, true, 0x100));
        assert_eq!(w.take_hit(), None);
        assert!(w.remove(Watchpoint {
            addr: 0x100,
            len: 4,
            kind: WatchKind::Write
        }));
        assert!(w.is_empty());
    }
}
