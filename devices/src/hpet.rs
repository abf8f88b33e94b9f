//! High Precision Event Timer (IA-PC HPET Specification 1.0a): a 64-bit main counter at
//! 100 MHz and three comparators (one-shot or periodic, edge or level), with legacy
//! replacement routing (timer 0 -> ISA IRQ0, timer 1 -> ISA IRQ8, spec §2.3.9.2.2).
//!
//! MMIO at [`HPET_BASE`] (declare in the ACPI HPET table, spec §3.2.4). In legacy replacement
//! mode the guest is expected to stop the PIT (Linux does), as both drive line 0 here.
//! Non-legacy timers may be routed to I/O APIC inputs 16-23 ([`INT_ROUTE_CAP`]).

use serde::{Deserialize, Serialize};

use crate::bus::MmioDevice;
use crate::clock::Clock;
use crate::irq::IrqLines;

/// HPET MMIO base.
pub const HPET_BASE: u64 = 0xfed0_0000;
/// Size of the register block.
pub const HPET_SIZE: u64 = 0x400;
/// Main counter tick period in femtoseconds (10 ns = 100 MHz).
pub const HPET_PERIOD_FS: u64 = 10_000_000;
/// Nanoseconds per main counter tick.
const NS_PER_TICK: u64 = HPET_PERIOD_FS / 1_000_000;
/// Number of comparators.
pub const HPET_TIMERS: usize = 3;
/// I/O APIC inputs a timer may be routed to (bit n = GSI n).
pub const INT_ROUTE_CAP: u32 = 0x00ff_0000;

const CFG_ENABLE: u64 = 1 << 0;
const CFG_LEGACY: u64 = 1 << 1;

const TN_LEVEL: u64 = 1 << 1;
const TN_INT_ENB: u64 = 1 << 2;
const TN_PERIODIC: u64 = 1 << 3;
const TN_PER_CAP: u64 = 1 << 4;
const TN_SIZE_CAP: u64 = 1 << 5;
const TN_VAL_SET: u64 = 1 << 6;
const TN_32BIT: u64 = 1 << 8;
const TN_WRITABLE: u64 = TN_LEVEL | TN_INT_ENB | TN_PERIODIC | TN_VAL_SET | TN_32BIT | (0x1f << 9);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Timer {
    config: u64,
    comparator: u64,
    period: u64,
}

/// The HPET block.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hpet {
    config: u64,
    isr: u64,
    /// Main counter value at `enabled_at_ns` (or the held value while halted).
    counter_base: u64,
    enabled_at_ns: u64,
    /// Counter value up to which comparators have been checked.
    checked: u64,
    timers: Vec<Timer>,
    #[serde(skip)]
    clock: Clock,
    #[serde(skip)]
    lines: IrqLines,
}

impl Hpet {
    /// An HPET (halted, all timers disabled) on `clock`, raising `lines`.
    pub fn new(clock: Clock, lines: IrqLines) -> Self {
        let timers = (0..HPET_TIMERS)
            .map(|i| Timer {
                // Timer 0 supports periodic mode; all are 64-bit capable.
                config: TN_SIZE_CAP
                    | if i == 0 { TN_PER_CAP } else { 0 }
                    | u64::from(INT_ROUTE_CAP) << 32,
                comparator: u64::MAX,
                period: 0,
            })
            .collect();
        Self {
            config: 0,
            isr: 0,
            counter_base: 0,
            enabled_at_ns: 0,
            checked: 0,
            timers,
            clock,
            lines,
        }
    }

    /// Reconnect after a restore.
    pub fn connect(&mut self, clock: Clock, lines: IrqLines) {
        self.clock = clock;
        self.lines = lines;
    }

    fn counter(&self, now: u64) -> u64 {
        if self.config & CFG_ENABLE != 0 {
            self.counter_base
                .wrapping_add(now.saturating_sub(self.enabled_at_ns) / NS_PER_TICK)
        } else {
            self.counter_base
        }
    }

    fn line_of(&self, n: usize) -> u8 {
        if self.config & CFG_LEGACY != 0 && n < 2 {
            [0, 8][n]
        } else {
            ((self.timers[n].config >> 9) & 0x1f) as u8
        }
    }

    fn fire(&mut self, n: usize) {
        let line = self.lines.line(self.line_of(n));
        if self.timers[n].config & TN_LEVEL != 0 {
            self.isr |= 1 << n;
            line.raise();
        } else {
            line.pulse();
        }
    }

    fn advance(&mut self, now: u64) {
        if self.config & CFG_ENABLE == 0 {
            return;
        }
        let c = self.counter(now);
        let from = self.checked;
        if c <= from {
            return;
        }
        for n in 0..HPET_TIMERS {
            let t = &mut self.timers[n];
            if t.comparator <= from || t.comparator > c {
                continue;
            }
            if t.config & TN_PERIODIC != 0 && t.period > 0 {
                let k = (c - t.comparator) / t.period + 1;
                t.comparator = t.comparator.saturating_add(k.saturating_mul(t.period));
            }
            if t.config & TN_INT_ENB != 0 {
                self.fire(n);
            }
        }
        self.checked = c;
    }

    fn read64(&mut self, reg: u64, now: u64) -> u64 {
        match reg {
            0x000 => {
                HPET_PERIOD_FS << 32
                    | 0x8086 << 16
                    | 1 << 15 // LEG_RT_CAP
                    | 1 << 13 // COUNT_SIZE_CAP: 64-bit
                    | ((HPET_TIMERS as u64 - 1) << 8)
                    | 0x01
            }
            0x010 => self.config,
            0x020 => self.isr,
            0x0f0 => self.counter(now),
            r if (0x100..0x100 + 0x20 * HPET_TIMERS as u64).contains(&r) => {
                let t = &self.timers[((r - 0x100) / 0x20) as usize];
                match r & 0x1f {
                    0x00 => t.config,
                    0x08 => t.comparator,
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    fn write64(&mut self, reg: u64, v: u64, now: u64) {
        match reg {
            0x010 => {
                let was = self.config & CFG_ENABLE != 0;
                let counter = self.counter(now);
                self.config = v & (CFG_ENABLE | CFG_LEGACY);
                let is = self.config & CFG_ENABLE != 0;
                if was != is {
                    self.counter_base = counter;
                    self.enabled_at_ns = now;
                    self.checked = counter;
                }
            }
            0x020 => {
                // Write 1 to clear level-triggered status (and deassert the line).
                let clear = v & self.isr;
                self.isr &= !clear;
                for n in 0..HPET_TIMERS {
                    if clear & (1 << n) != 0 {
                        self.lines.line(self.line_of(n)).lower();
                    }
                }
            }
            // The main counter is writable only while halted (spec §2.3.9.2.2 note).
            0x0f0 if self.config & CFG_ENABLE == 0 => {
                self.counter_base = v;
                self.checked = v;
            }
            r if (0x100..0x100 + 0x20 * HPET_TIMERS as u64).contains(&r) => {
                let n = ((r - 0x100) / 0x20) as usize;
                let t = &mut self.timers[n];
                match r & 0x1f {
                    0x00 => {
                        let mut w = TN_WRITABLE;
                        if t.config & TN_PER_CAP == 0 {
                            w &= !TN_PERIODIC;
                        }
                        t.config = (t.config & !w) | (v & w);
                    }
                    0x08 => {
                        if t.config & TN_PERIODIC != 0 {
                            if t.config & TN_VAL_SET != 0 {
                                t.comparator = v;
                                t.config &= !TN_VAL_SET;
                            }
                            t.period = v;
                            if t.comparator <= self.checked {
                                t.comparator = self.checked.saturating_add(v.max(1));
                            }
                        } else {
                            t.comparator = v;
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

impl MmioDevice for Hpet {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let now = self.clock.now_ns();
        self.advance(now);
        let v = self.read64(offset & !7, now);
        match (size, offset & 7) {
            (8, 0) => v,
            (4, 0) => v & 0xffff_ffff,
            (4, 4) => v >> 32,
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let now = self.clock.now_ns();
        self.advance(now);
        let reg = offset & !7;
        let old = self.read64(reg, now);
        let v = match (size, offset & 7) {
            (8, 0) => value,
            (4, 0) => (old & !0xffff_ffff) | (value & 0xffff_ffff),
            (4, 4) => (old & 0xffff_ffff) | (value << 32),
            _ => return,
        };
        // In periodic mode a 32-bit comparator write is the whole new value (Linux writes
        // only the low half with the high half zero).
        let v = if reg >= 0x100 && reg & 0x1f == 0x08 && size == 4 && offset & 7 == 0 {
            value & 0xffff_ffff
        } else {
            v
        };
        self.write64(reg, v, now);
    }

    fn tick(&mut self, now_ns: u64) {
        self.advance(now_ns);
    }

    fn next_deadline(&self) -> Option<u64> {
        if self.config & CFG_ENABLE == 0 {
            return None;
        }
        self.timers
            .iter()
            .filter(|t| t.config & TN_INT_ENB != 0 && t.comparator > self.checked)
            .map(|t| {
                let ticks = t.comparator - self.counter_base;
                self.enabled_at_ns
                    .saturating_add(ticks.saturating_mul(NS_PER_TICK))
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;

    fn setup() -> (Bus, Clock, IrqLines) {
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let mut bus = Bus::new();
        bus.add_mmio(
            HPET_BASE,
            HPET_SIZE,
            Box::new(Hpet::new(clock.clone(), lines.clone())),
        )
        .unwrap();
        (bus, clock, lines)
    }

    #[test]
    fn capabilities_and_counter() {
        let (mut bus, clock, _) = setup();
        assert_eq!(bus.mmio_read(HPET_BASE + 4, 4), HPET_PERIOD_FS);
        assert_eq!(bus.mmio_read(HPET_BASE, 4) & 0xffff_00ff, 0x8086_0001);
        clock.set_ns(1_000);
        assert_eq!(bus.mmio_read(HPET_BASE + 0xf0, 4), 0, "halted");
        bus.mmio_write(HPET_BASE + 0x10, 4, 1);
        clock.set_ns(2_000);
        assert_eq!(bus.mmio_read(HPET_BASE + 0xf0, 4), 100);
        assert_eq!(bus.mmio_read(HPET_BASE + 0xf0, 8), 100);
    }

    #[test]
    fn legacy_periodic_timer0_as_linux_programs_it() {
        let (mut bus, clock, lines) = setup();
        bus.mmio_write(HPET_BASE + 0x10, 4, 0x3); // enable + legacy replacement
        let delta = 100_000u64; // 1 ms
        let cnt = bus.mmio_read(HPET_BASE + 0xf0, 4);
        let cfg = bus.mmio_read(HPET_BASE + 0x100, 4);
        bus.mmio_write(
            HPET_BASE + 0x100,
            4,
            cfg | TN_INT_ENB | TN_PERIODIC | TN_VAL_SET,
        );
        bus.mmio_write(HPET_BASE + 0x108, 4, cnt + delta);
        bus.mmio_write(HPET_BASE + 0x108, 4, delta);
        lines.take_edges();
        assert_eq!(bus.next_deadline(), Some(1_000_000));
        for k in 1..=3u64 {
            clock.set_ns(k * 1_000_000);
            bus.tick(clock.now_ns());
            assert_eq!(lines.take_edges(), 1, "IRQ0 period {k}");
        }
        assert_eq!(bus.next_deadline(), Some(4_000_000));
    }

    #[test]
    fn one_shot_level_routed_to_gsi_and_cleared() {
        let (mut bus, clock, lines) = setup();
        bus.mmio_write(HPET_BASE + 0x10, 4, 0x1);
        bus.mmio_write(HPET_BASE + 0x120, 4, TN_INT_ENB | TN_LEVEL | (20 << 9));
        assert_eq!(bus.mmio_read(HPET_BASE + 0x120, 4) >> 9 & 0x1f, 20);
        bus.mmio_write(HPET_BASE + 0x128, 4, 50);
        clock.set_ns(500);
        bus.tick(500);
        assert_ne!(lines.levels() & (1 << 20), 0);
        assert_eq!(bus.mmio_read(HPET_BASE + 0x20, 4), 0b10);
        bus.mmio_write(HPET_BASE + 0x20, 4, 0b10);
        assert_eq!(lines.levels() & (1 << 20), 0);
        assert_eq!(bus.next_deadline(), None);
    }
}
