//! Interrupt-request lines shared between devices and interrupt controllers.
//!
//! A line has a level (asserted or not) and an edge latch set on every low-to-high transition, so
//! a short pulse between two controller samples is not lost (the 8259A edge-sense latch, Intel
//! 8259A datasheet "Edge and level triggered modes"). Lines are atomics: a device on any thread can
//! raise one without locking; the controller samples them when the vCPU polls for interrupts.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

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
    level: AtomicU32,
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

    /// A handle to line `n` (ISA IRQ / GSI number). Out-of-range numbers give a dead line.
    pub fn line(&self, n: u8) -> IrqLine {
        IrqLine {
            lines: Some(self.clone()),
            n,
        }
    }

    /// Drive line `n` to `level`.
    pub fn set_level(&self, n: u8, level: bool) {
        if n >= NUM_LINES {
            return;
        }
        let bit = 1u32 << n;
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
            l.set_level(self.n, level);
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
