//! Virtual time for devices: nanoseconds since power-on.
//!
//! The machine chooses the source: [`Clock::host`] follows the host monotonic clock,
//! [`Clock::manual`] is advanced explicitly by the machine (the `--icount` deterministic clock,
//! and unit tests). Devices never read host time directly, except the RTC's wall-clock epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Nanoseconds in one second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug)]
enum Source {
    Host(Instant),
    Manual(AtomicU64),
}

/// A shared, cheaply clonable virtual clock (ns since power-on, monotonic).
#[derive(Debug, Clone)]
pub struct Clock {
    source: Arc<Source>,
}

impl Default for Clock {
    /// A manual clock at time 0 (deterministic; used for devices restored before wiring).
    fn default() -> Self {
        Self::manual()
    }
}

impl Clock {
    /// A clock following the host monotonic clock, starting at 0 now.
    pub fn host() -> Self {
        Self {
            source: Arc::new(Source::Host(Instant::now())),
        }
    }

    /// A clock that only moves when [`Clock::advance_ns`] or [`Clock::set_ns`] is called
    /// (instruction-count driven time).
    pub fn manual() -> Self {
        Self {
            source: Arc::new(Source::Manual(AtomicU64::new(0))),
        }
    }

    /// Current virtual time in nanoseconds since power-on.
    pub fn now_ns(&self) -> u64 {
        match &*self.source {
            Source::Host(start) => u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Source::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Whether this clock is manually driven.
    pub fn is_manual(&self) -> bool {
        matches!(&*self.source, Source::Manual(_))
    }

    /// Advance a manual clock by `delta_ns` (no effect on a host clock).
    pub fn advance_ns(&self, delta_ns: u64) {
        if let Source::Manual(t) = &*self.source {
            t.fetch_add(delta_ns, Ordering::AcqRel);
        }
    }

    /// Move a manual clock forward to `ns` (never backwards; no effect on a host clock).
    pub fn set_ns(&self, ns: u64) {
        if let Source::Manual(t) = &*self.source {
            t.fetch_max(ns, Ordering::AcqRel);
        }
    }
}

/// Convert a count of `hz` ticks to nanoseconds, rounding up.
pub fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    let ns = (u128::from(ticks) * u128::from(NS_PER_SEC)).div_ceil(u128::from(hz.max(1)));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Number of whole `hz` ticks elapsed in `ns` nanoseconds.
pub fn ns_to_ticks(ns: u64, hz: u64) -> u64 {
    let t = u128::from(ns) * u128::from(hz) / u128::from(NS_PER_SEC);
    u64::try_from(t).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_monotonic_and_shared() {
        let c = Clock::manual();
        let c2 = c.clone();
        c.advance_ns(100);
        assert_eq!(c2.now_ns(), 100);
        c.set_ns(50);
        assert_eq!(c.now_ns(), 100);
        c.set_ns(1000);
        assert_eq!(c2.now_ns(), 1000);
    }

    #[test]
    fn tick_conversion_round_trips() {
        let hz = 1_193_182;
        let ns = ticks_to_ns(1000, hz);
        assert_eq!(ns_to_ticks(ns, hz), 1000);
        assert_eq!(ns_to_ticks(NS_PER_SEC, hz), hz);
    }
}
