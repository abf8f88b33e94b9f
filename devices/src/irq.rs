//! Interrupt-request lines shared between devices and interrupt controllers.
//!
//! A line has a level (asserted or not) and an edge latch set on every low-to-high transition, so
//! a short pulse between two controller samples is not lost (the 8259A edge-sense latch, Intel
//! 8259A datasheet "Edge and level triggered modes"). Levels and edges are atomics: the controller
//! samples them without locking when the vCPU polls for interrupts; a device on any thread drives
//! its line through a short lock that keeps the per-source state and the level in step.
//!
//! A line may have several sources (PCI INTx pins whose PIRQ is the same): it is a wired-OR,
//! as the open-drain INTx# outputs of a PCI bus are (PCI Local Bus 3.0 §2.2.6, "shared and
//! level-sensitive"). Each source has its own bit ([`IrqLines::source_line`]); the line reads
//! asserted while any source asserts it, so one device deasserting does not drop another's
//! pending interrupt. [`IrqLines::line`] is source 0.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Number of lines: ISA IRQ 0-15 map to GSI 0-15; 16-23 are the extra I/O APIC inputs (PCI).
pub const NUM_LINES: u8 = 24;

/// Which interrupt controller is sampling edges: each keeps its own edge latches, so the PIC
/// and the I/O APIC both see every pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeConsumer {
    /// The 8259A pair.
    Pic = 0,
    /// The I/O APIC.
    IoApic = 1,
}

#[derive(Debug)]
struct Inner {
    /// Line levels, bit `n` = line `n` (= whether `sources[n]` is non-zero). Read without the
    /// lock by the interrupt controllers.
    level: AtomicU32,
    /// Per line, the bit set of sources asserting it. Writers hold this lock while they update
    /// it and `level`, so the two never disagree.
    sources: Mutex<[u32; NUM_LINES as usize]>,
    edges: [AtomicU32; 2],
    activity: AtomicBool,
    /// PIIX3 PIRQ route control registers A-D (byte n = PIRQRC n, 82371SB §4.1.8): bit 7
    /// disables the route, bits 3:0 name the ISA IRQ.
    pirq_routes: AtomicU32,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            level: AtomicU32::new(0),
            sources: Mutex::new([0; NUM_LINES as usize]),
            edges: Default::default(),
            activity: AtomicBool::new(false),
            pirq_routes: AtomicU32::new(0x8080_8080),
        }
    }
}

/// Line of PIIX3 PIRQ A (B-D follow): PIRQA#-PIRQD# are wired to I/O APIC inputs 16-19, and in
/// addition to the ISA IRQ their PIRQ route control register selects (both at once, as on the
/// i440FX/PIIX3 board; the OS uses one or the other).
pub const PIRQ_LINE_BASE: u8 = 16;

/// The set of interrupt lines of one machine. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct IrqLines {
    inner: Arc<Inner>,
}

impl IrqLines {
    /// A fresh set of lines, all deasserted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set PIRQ route control register `pirq` (0 = A .. 3 = D) to `value` (82371SB §4.1.8: bit 7
    /// = routing disabled, bits 3:0 = ISA IRQ; IRQs 0-2, 8 and 13 are reserved and route
    /// nowhere). Called by the PIIX3 when the guest writes config 0x60-0x63.
    pub fn set_pirq_route(&self, pirq: u8, value: u8) {
        let shift = 8 * u32::from(pirq & 3);
        let mut cur = self.inner.pirq_routes.load(Ordering::Acquire);
        loop {
            let new = (cur & !(0xff << shift)) | (u32::from(value) << shift);
            match self.inner.pirq_routes.compare_exchange(
                cur,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.inner.activity.store(true, Ordering::Release);
    }

    /// ISA IRQ bit mask PIRQ `pirq` is routed to (0 when disabled or reserved).
    fn pirq_target_mask(routes: u32, pirq: u8) -> u32 {
        let v = (routes >> (8 * u32::from(pirq))) as u8;
        let irq = v & 0x0f;
        if v & 0x80 != 0 || matches!(irq, 0..=2 | 8 | 13) {
            0
        } else {
            1 << irq
        }
    }

    /// ISA IRQ bits driven by asserted PIRQ lines in `raw` levels.
    fn routed(&self, raw: u32) -> u32 {
        let routes = self.inner.pirq_routes.load(Ordering::Acquire);
        (0..4u8)
            .filter(|&p| raw & (1 << (PIRQ_LINE_BASE + p)) != 0)
            .fold(0, |m, p| m | Self::pirq_target_mask(routes, p))
    }

    /// A handle to line `n` (ISA IRQ / GSI number) as its source 0 (the one device of an ISA
    /// line). Out-of-range numbers give a dead line.
    pub fn line(&self, n: u8) -> IrqLine {
        self.source_line(n, 0)
    }

    /// A handle to line `n` as source `source` (0-31; taken modulo 32) of the wired-OR: the
    /// line is asserted while any of its sources asserts it. Handles with the same `source`
    /// drive the same bit (clones of one device's handle, or a device re-wired after a
    /// snapshot restore); distinct devices sharing a line must use distinct sources.
    pub fn source_line(&self, n: u8, source: u8) -> IrqLine {
        IrqLine {
            lines: Some(self.clone()),
            n,
            source: source & 31,
        }
    }

    /// Drive line `n` to `level` as source 0.
    pub fn set_level(&self, n: u8, level: bool) {
        self.set_source_level(n, 0, level);
    }

    /// Drive source `source` (0-31) of line `n` to `level`; the line's level becomes the OR of
    /// its sources, and a rising edge of the line (not of a source joining an already asserted
    /// line) is latched for the controllers.
    pub fn set_source_level(&self, n: u8, source: u8, level: bool) {
        if n >= NUM_LINES {
            return;
        }
        let bit = 1u32 << n;
        let sbit = 1u32 << (source & 31);
        // A poisoned lock only means a panic elsewhere mid-update of plain integers; the
        // array is still a valid set of bits.
        let mut sources = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let s = &mut sources[usize::from(n)];
        let was = *s != 0;
        if level {
            *s |= sbit;
        } else {
            *s &= !sbit;
        }
        let level = *s != 0;
        if level == was {
            return;
        }
        if level {
            let prev = self.inner.level.fetch_or(bit, Ordering::AcqRel);
            if prev & bit == 0 {
                // A PIRQ also drives the ISA IRQ its route register selects.
                let edge = bit | self.routed(bit);
                for e in &self.inner.edges {
                    e.fetch_or(edge, Ordering::AcqRel);
                }
                self.inner.activity.store(true, Ordering::Release);
            }
        } else {
            let prev = self.inner.level.fetch_and(!bit, Ordering::AcqRel);
            if prev & bit != 0 {
                self.inner.activity.store(true, Ordering::Release);
            }
        }
    }

    /// Current levels, bit `n` = line `n`; an ISA IRQ also reads asserted while a PIRQ routed
    /// to it is (wired-OR, as the PIIX3 drives the ISA IRQ inputs of both interrupt controllers).
    pub fn levels(&self) -> u32 {
        let raw = self.inner.level.load(Ordering::Acquire);
        raw | self.routed(raw)
    }

    /// Rising edges latched for the PIC since its last call (clears those latches).
    pub fn take_edges(&self) -> u32 {
        self.take_edges_for(EdgeConsumer::Pic)
    }

    /// Rising edges latched for `consumer` since its last call (clears its latches).
    pub fn take_edges_for(&self, consumer: EdgeConsumer) -> u32 {
        self.inner.edges[consumer as usize].swap(0, Ordering::AcqRel)
    }

    /// Whether any line changed since the last call (clears the flag). A cheap hint for the
    /// vCPU loop; the controller must still be asked for a pending vector when its state changed.
    pub fn take_activity(&self) -> bool {
        self.inner.activity.swap(false, Ordering::AcqRel)
    }
}

/// One interrupt line as seen by a device.
#[derive(Debug, Clone, Default)]
pub struct IrqLine {
    lines: Option<IrqLines>,
    n: u8,
    /// Source bit of this handle in the line's wired-OR.
    source: u8,
}

impl IrqLine {
    /// A line connected to nothing (devices restored before wiring, tests).
    pub fn disconnected() -> Self {
        Self::default()
    }

    /// The line number (ISA IRQ / GSI).
    pub fn number(&self) -> u8 {
        self.n
    }

    /// Assert the line.
    pub fn raise(&self) {
        self.set(true);
    }

    /// Deassert the line.
    pub fn lower(&self) {
        self.set(false);
    }

    /// Drive the line to `level`.
    pub fn set(&self, level: bool) {
        if let Some(l) = &self.lines {
            l.set_source_level(self.n, self.source, level);
        }
    }

    /// A low-high-low pulse: latches an edge for edge-triggered inputs.
    pub fn pulse(&self) {
        self.raise();
        self.lower();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pirq_follows_its_route_register() {
        let lines = IrqLines::new();
        let pirqc = lines.line(PIRQ_LINE_BASE + 2);
        pirqc.raise();
        // Disabled at reset: only I/O APIC input 18 sees it.
        assert_eq!(lines.levels(), 1 << 18);
        lines.set_pirq_route(2, 11);
        assert_eq!(lines.levels(), 1 << 18 | 1 << 11);
        pirqc.lower();
        assert_eq!(lines.levels(), 0);
        lines.take_edges();
        pirqc.raise();
        assert_eq!(
            lines.take_edges(),
            1 << 18 | 1 << 11,
            "edge on the routed IRQ too"
        );
        // Reserved IRQs and the disable bit route nowhere.
        lines.set_pirq_route(2, 0x80 | 11);
        assert_eq!(lines.levels(), 1 << 18);
        lines.set_pirq_route(2, 2);
        assert_eq!(lines.levels(), 1 << 18);
    }

    #[test]
    fn shared_line_is_a_wired_or_of_its_sources() {
        let lines = IrqLines::new();
        lines.set_pirq_route(3, 10);
        let a = lines.source_line(PIRQ_LINE_BASE + 3, 12);
        let b = lines.source_line(PIRQ_LINE_BASE + 3, 16);
        a.raise();
        assert_eq!(lines.take_edges(), 1 << 19 | 1 << 10);
        b.raise();
        assert_eq!(lines.take_edges(), 0, "no new edge while already asserted");
        a.lower();
        assert_eq!(
            lines.levels(),
            1 << 19 | 1 << 10,
            "b still asserts the shared line"
        );
        a.lower();
        a.clone().lower();
        assert_eq!(
            lines.levels(),
            1 << 19 | 1 << 10,
            "lowering twice is idempotent"
        );
        b.lower();
        assert_eq!(lines.levels(), 0);
        assert!(lines.take_activity());
        // Raising one source twice and lowering it once releases it (levels, not counts).
        b.raise();
        b.raise();
        b.lower();
        assert_eq!(lines.levels(), 0);
        // Sources are per line: the same source number on another line is independent.
        let c = lines.source_line(5, 16);
        c.raise();
        b.lower();
        assert_eq!(lines.levels(), 1 << 5);
        // line() is source 0, distinct from the others.
        lines.line(5).raise();
        c.lower();
        assert_eq!(lines.levels(), 1 << 5);
        lines.line(5).lower();
        assert_eq!(lines.levels(), 0);
    }

    #[test]
    fn shared_line_survives_concurrent_sources() {
        let lines = IrqLines::new();
        let handles: Vec<_> = (0..4u8)
            .map(|s| {
                let l = lines.source_line(17, s);
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        l.raise();
                        l.lower();
                    }
                    if s == 0 {
                        l.raise();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(lines.levels(), 1 << 17, "source 0 ended asserted");
        lines.source_line(17, 0).lower();
        assert_eq!(lines.levels(), 0);
    }

    #[test]
    fn pulse_latches_an_edge() {
        let lines = IrqLines::new();
        let l = lines.line(4);
        l.pulse();
        assert_eq!(lines.levels(), 0);
        assert_eq!(lines.take_edges(), 1 << 4);
        assert_eq!(lines.take_edges(), 0);
        assert_eq!(lines.take_edges_for(EdgeConsumer::IoApic), 1 << 4);
        l.raise();
        l.raise();
        assert_eq!(lines.take_edges(), 1 << 4);
        assert_eq!(lines.levels(), 1 << 4);
        lines.line(200).raise();
        assert_eq!(lines.levels(), 1 << 4);
    }
}
