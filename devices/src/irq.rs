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

#[derive(Debug, Default)]
struct Inner {
    level: AtomicU32,
    edges: [AtomicU32; 2],
    activity: AtomicBool,
}

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
                for e in &self.inner.edges {
                    e.fetch_or(bit, Ordering::AcqRel);
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

    /// Current levels, bit `n` = line `n`.
    pub fn levels(&self) -> u32 {
        self.inner.level.load(Ordering::Acquire)
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
