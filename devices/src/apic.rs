//! Local APIC (xAPIC, MMIO at 0xFEE00000; Intel SDM Vol. 3A ch. 11 "Advanced Programmable
//! Interrupt Controller") and I/O APIC (Intel 82093AA datasheet; MMIO at 0xFEC00000, IOREGSEL
//! at +0x00, IOWIN at +0x10, 24 redirection entries).
//!
//! Single-processor model: every fixed / lowest-priority interrupt from the I/O APIC and every
//! self IPI goes to the one local APIC, whatever the destination field says. The two halves
//! talk through an [`ApicBus`] (atomics): the I/O APIC posts vectors, the local APIC posts EOIs
//! of level-triggered vectors back (the EOI broadcast that clears Remote IRR).
//!
//! vCPU side, at a block boundary with EFLAGS.IF = 1: `ioapic.service()` (sample lines, post
//! vectors), then `lapic.pending_vector()` / `lapic.acknowledge()`. If the local APIC is
//! software-disabled or LINT0 is programmed as ExtINT ([`Lapic::accepts_pic`]), interrupts
//! from the 8259A pair are delivered as in virtual-wire mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bus::MmioDevice;
use crate::clock::{Clock, NS_PER_SEC};
use crate::irq::{EdgeConsumer, IrqLines};

/// Default local APIC base (IA32_APIC_BASE reset value).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Size of the local APIC register page.
pub const LAPIC_SIZE: u64 = 0x1000;
/// I/O APIC base address (declare in the MADT).
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of the I/O APIC register window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of I/O APIC inputs (GSI 0-23).
pub const IOAPIC_PINS: usize = 24;
/// GSI of the PIT: ISA IRQ 0 is wired to I/O APIC pin 2 (MADT interrupt source override
/// bus 0, source 0 -> GSI 2), as on most PCs. Pin 0 is not connected to an ISA line.
pub const PIT_GSI: u8 = 2;
/// Local APIC timer input frequency (the "bus clock"), Hz: one tick per nanosecond.
pub const LAPIC_TIMER_HZ: u64 = NS_PER_SEC;

#[derive(Debug, Default)]
struct ApicBusInner {
    pending: [AtomicU64; 4],
    level: [AtomicU64; 4],
    eoi: [AtomicU64; 4],
}

/// The message path between the I/O APIC and the local APIC. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ApicBus(Arc<ApicBusInner>);

impl ApicBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Post `vector` to the local APIC (`level` = level-triggered: sets TMR on acceptance).
    pub fn deliver(&self, vector: u8, level: bool) {
        let (w, b) = (usize::from(vector >> 6), vector & 63);
        if level {
            self.0.level[w].fetch_or(1 << b, Ordering::AcqRel);
        }
        self.0.pending[w].fetch_or(1 << b, Ordering::AcqRel);
    }

    fn take_pending(&self) -> ([u64; 4], [u64; 4]) {
        let mut p = [0; 4];
        let mut l = [0; 4];
        for i in 0..4 {
            p[i] = self.0.pending[i].swap(0, Ordering::AcqRel);
            l[i] = self.0.level[i].fetch_and(!p[i], Ordering::AcqRel) & p[i];
        }
        (p, l)
    }

    fn broadcast_eoi(&self, vector: u8) {
        self.0.eoi[usize::from(vector >> 6)].fetch_or(1 << (vector & 63), Ordering::AcqRel);
    }

    fn take_eois(&self) -> [u64; 4] {
        let mut e = [0; 4];
        for (i, x) in e.iter_mut().enumerate() {
            *x = self.0.eoi[i].swap(0, Ordering::AcqRel);
        }
        e
    }
}

fn bit(v: &[u64; 4], vector: u8) -> bool {
    v[usize::from(vector >> 6)] & (1 << (vector & 63)) != 0
}

fn set_bit(v: &mut [u64; 4], vector: u8, on: bool) {
    let m = 1u64 << (vector & 63);
    if on {
        v[usize::from(vector >> 6)] |= m;
    } else {
        v[usize::from(vector >> 6)] &= !m;
    }
}

fn highest(v: &[u64; 4]) -> Option<u8> {
    (0..4)
        .rev()
        .find(|&i| v[i] != 0)
        .map(|i| (i as u8) * 64 + (63 - v[i].leading_zeros() as u8))
}

/// LVT indexes (registers 0x2F0, 0x320-0x370).
const LVT_CMCI: usize = 0;
const LVT_TIMER: usize = 1;
const LVT_LINT0: usize = 4;
const LVT_MASKED: u32 = 1 << 16;

/// A local APIC in xAPIC mode.
#[derive(Debug, Serialize, Deserialize)]
pub struct Lapic {
    id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    esr: u32,
    icr: u64,
    /// CMCI, timer, thermal, performance, LINT0, LINT1, error.
    lvt: [u32; 7],
    irr: [u64; 4],
    isr: [u64; 4],
    tmr: [u64; 4],
    timer_initial: u32,
    timer_divide: u32,
    timer_start_ns: u64,
    timer_running: bool,
    last_tick_ns: u64,
    #[serde(skip)]
    bus: ApicBus,
    #[serde(skip)]
    clock: Clock,
}

impl Lapic {
    /// A local APIC in power-on state with APIC ID `id`.
    pub fn new(id: u8, bus: ApicBus, clock: Clock) -> Self {
        Self {
            id,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            esr: 0,
            icr: 0,
            lvt: [LVT_MASKED; 7],
            irr: [0; 4],
            isr: [0; 4],
            tmr: [0; 4],
            timer_initial: 0,
            timer_divide: 0,
            timer_start_ns: 0,
            timer_running: false,
            last_tick_ns: clock.now_ns(),
            bus,
            clock,
        }
    }

    /// Reconnect after a restore.
    pub fn connect(&mut self, bus: ApicBus, clock: Clock) {
        self.bus = bus;
        self.clock = clock;
    }

    /// SVR bit 8: APIC software enable.
    pub fn software_enabled(&self) -> bool {
        self.svr & 0x100 != 0
    }

    /// Whether 8259A interrupts reach the CPU (APIC disabled, or LINT0 unmasked as ExtINT).
    pub fn accepts_pic(&self) -> bool {
        let l = self.lvt[LVT_LINT0];
        !self.software_enabled() || (l & LVT_MASKED == 0 && (l >> 8) & 7 == 0b111)
    }

    fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.esr |= 1 << 6; // received illegal vector
            return;
        }
        set_bit(&mut self.irr, vector, true);
        set_bit(&mut self.tmr, vector, level);
    }

    fn pull(&mut self) {
        let (p, l) = self.bus.take_pending();
        for i in 0..4 {
            self.irr[i] |= p[i];
            self.tmr[i] = (self.tmr[i] & !p[i]) | l[i];
        }
    }

    fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The vector the CPU would take now, if any (SDM Vol. 3A §11.8.3.1: priority class above
    /// the processor-priority class).
    pub fn pending_vector(&mut self) -> Option<u8> {
        self.tick(self.clock.now_ns());
        self.pull();
        if !self.software_enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        ((v >> 4) > (self.ppr() >> 4)).then_some(v)
    }

    /// INTA: the highest pending vector moves from IRR to ISR and is returned; if none
    /// qualifies any more, the spurious vector (SVR bits 7-0) is returned.
    pub fn acknowledge(&mut self) -> u8 {
        match self.pending_vector() {
            Some(v) => {
                set_bit(&mut self.irr, v, false);
                set_bit(&mut self.isr, v, true);
                v
            }
            None => self.svr as u8,
        }
    }

    fn eoi(&mut self) {
        if let Some(v) = highest(&self.isr) {
            set_bit(&mut self.isr, v, false);
            if bit(&self.tmr, v) {
                self.bus.broadcast_eoi(v);
            }
        }
    }

    fn divisor(&self) -> u64 {
        let d = (self.timer_divide & 3) | ((self.timer_divide >> 1) & 4);
        if d == 7 {
            1
        } else {
            2 << d
        }
    }

    fn timer_period_ns(&self) -> u64 {
        let ticks = u128::from(self.timer_initial) * u128::from(self.divisor());
        u64::try_from(ticks * u128::from(NS_PER_SEC) / u128::from(LAPIC_TIMER_HZ))
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn periodic(&self) -> bool {
        (self.lvt[LVT_TIMER] >> 17) & 3 == 1
    }

    fn current_count(&self, now: u64) -> u32 {
        if !self.timer_running {
            return 0;
        }
        let period = self.timer_period_ns();
        let el = now.saturating_sub(self.timer_start_ns);
        let el = if self.periodic() {
            el % period
        } else {
            el.min(period)
        };
        let ticks = el / self.divisor() * LAPIC_TIMER_HZ / NS_PER_SEC;
        self.timer_initial.saturating_sub(ticks as u32)
    }

    fn read_reg(&mut self, reg: u32) -> u32 {
        let now = self.clock.now_ns();
        let chunk = |v: &[u64; 4], i: u32| (v[(i / 2) as usize] >> (32 * (i % 2))) as u32;
        match reg {
            0x20 => u32::from(self.id) << 24,
            0x30 => 0x0005_0014, // version 0x14, 6 LVT entries
            0x80 => u32::from(self.tpr),
            0xa0 => u32::from(self.ppr()),
            0xd0 => self.ldr,
            0xe0 => self.dfr,
            0xf0 => self.svr,
            0x100..=0x170 => chunk(&self.isr, (reg - 0x100) >> 4),
            0x180..=0x1f0 => chunk(&self.tmr, (reg - 0x180) >> 4),
            0x200..=0x270 => {
                self.pull();
                chunk(&self.irr, (reg - 0x200) >> 4)
            }
            0x280 => self.esr,
            0x2f0 => self.lvt[LVT_CMCI],
            0x300 => self.icr as u32,
            0x310 => (self.icr >> 32) as u32,
            0x320..=0x370 => self.lvt[((reg - 0x320) >> 4) as usize + 1],
            0x380 => self.timer_initial,
            0x390 => self.current_count(now),
            0x3e0 => self.timer_divide,
            _ => 0,
        }
    }

    fn write_reg(&mut self, reg: u32, v: u32) {
        let now = self.clock.now_ns();
        match reg {
            0x20 => self.id = (v >> 24) as u8,
            0x80 => self.tpr = v as u8,
            0xb0 => self.eoi(),
            0xd0 => self.ldr = v & 0xff00_0000,
            0xe0 => self.dfr = v | 0x0fff_ffff,
            0xf0 => {
                self.svr = v & 0x13ff;
                if !self.software_enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            0x280 => self.esr = 0,
            0x2f0 => self.lvt[LVT_CMCI] = v & 0x1_07ff,
            0x300 => {
                self.icr = (self.icr & !0xffff_ffff) | u64::from(v & !(1 << 12));
                self.send_ipi();
            }
            0x310 => self.icr = (self.icr & 0xffff_ffff) | u64::from(v) << 32,
            0x320..=0x370 => {
                let i = ((reg - 0x320) >> 4) as usize + 1;
                let mut v = v & 0x7_17ff;
                if !self.software_enabled() {
                    v |= LVT_MASKED;
                }
                self.lvt[i] = v;
            }
            0x380 => {
                self.timer_initial = v;
                self.timer_start_ns = now;
                self.last_tick_ns = now;
                self.timer_running = v != 0;
            }
            0x3e0 => self.timer_divide = v & 0xb,
            _ => {}
        }
    }

    fn send_ipi(&mut self) {
        let vector = self.icr as u8;
        let mode = (self.icr >> 8) & 7;
        let shorthand = (self.icr >> 18) & 3;
        let dest = (self.icr >> 56) as u8;
        let to_self = match shorthand {
            1 | 2 => true,
            0 => dest == self.id || dest == 0xff,
            _ => false,
        };
        match (mode, to_self) {
            (0, true) => self.accept(vector, false),
            (0, false) => {}
            _ => {
                log::debug!(target: "devices::apic", "IPI mode {mode} not supported (icr {:#x})", self.icr)
            }
        }
    }
}

impl MmioDevice for Lapic {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let reg = (offset & 0xff0) as u32;
        let v = self.read_reg(reg);
        let shift = (offset & 3) * 8;
        if offset & 0xc != 0 {
            return 0;
        }
        let v = u64::from(v >> shift);
        match size {
            1 => v & 0xff,
            2 => v & 0xffff,
            _ => v,
        }
    }

    fn write(&mut self, offset: u64, _size: u8, value: u64) {
        if offset & 0xf != 0 {
            return; // registers are only written with aligned 32-bit stores
        }
        self.write_reg((offset & 0xff0) as u32, value as u32);
    }

    fn tick(&mut self, now_ns: u64) {
        if !self.timer_running || now_ns <= self.last_tick_ns {
            return;
        }
        let period = self.timer_period_ns();
        let k0 = self.last_tick_ns.saturating_sub(self.timer_start_ns) / period;
        let k1 = now_ns.saturating_sub(self.timer_start_ns) / period;
        self.last_tick_ns = now_ns;
        if k1 > k0 {
            if !self.periodic() {
                self.timer_running = false;
            }
            let lvt = self.lvt[LVT_TIMER];
            if lvt & LVT_MASKED == 0 {
                self.accept(lvt as u8, false);
            }
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        if !self.timer_running || self.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        let period = self.timer_period_ns();
        let k = self.last_tick_ns.saturating_sub(self.timer_start_ns) / period;
        Some(
            self.timer_start_ns
                .saturating_add(period.saturating_mul(k + 1)),
        )
    }
}

const RTE_MASKED: u64 = 1 << 16;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_REMOTE_IRR: u64 = 1 << 14;

/// The I/O APIC.
#[derive(Debug, Serialize, Deserialize)]
pub struct IoApic {
    id: u8,
    regsel: u8,
    redir: Vec<u64>,
    #[serde(skip)]
    lines: IrqLines,
    #[serde(skip)]
    bus: ApicBus,
}

impl IoApic {
    /// An I/O APIC sampling `lines` (GSI n = line n, except GSI 2 = ISA IRQ 0, see
    /// [`PIT_GSI`]) and posting to `bus`. All entries start masked.
    pub fn new(lines: IrqLines, bus: ApicBus) -> Self {
        Self {
            id: 0,
            regsel: 0,
            redir: vec![RTE_MASKED; IOAPIC_PINS],
            lines,
            bus,
        }
    }

    /// Reconnect after a restore.
    pub fn connect(&mut self, lines: IrqLines, bus: ApicBus) {
        self.lines = lines;
        self.bus = bus;
    }

    /// Which interrupt line feeds `pin`.
    fn line_of(pin: usize) -> Option<usize> {
        match pin {
            0 => None,
            2 => Some(0),
            p => Some(p),
        }
    }

    /// Sample the lines, clear Remote IRR on EOIs, and post due interrupts to the local APIC.
    /// Call before asking the local APIC for a pending vector.
    pub fn service(&mut self) {
        let eois = self.bus.take_eois();
        let edges = self.lines.take_edges_for(EdgeConsumer::IoApic);
        let levels = self.lines.levels();
        for pin in 0..IOAPIC_PINS {
            let e = &mut self.redir[pin];
            let vector = *e as u8;
            if *e & RTE_REMOTE_IRR != 0 && bit(&eois, vector) {
                *e &= !RTE_REMOTE_IRR;
            }
            let Some(line) = Self::line_of(pin) else {
                continue;
            };
            if *e & RTE_MASKED != 0 {
                continue;
            }
            let mode = (*e >> 8) & 7;
            if mode != 0 && mode != 1 {
                continue; // SMI/NMI/INIT/ExtINT not modelled
            }
            if *e & RTE_LEVEL != 0 {
                if levels & (1 << line) != 0 && *e & RTE_REMOTE_IRR == 0 {
                    *e |= RTE_REMOTE_IRR;
                    self.bus.deliver(vector, true);
                }
            } else if edges & (1 << line) != 0 {
                self.bus.deliver(vector, false);
            }
        }
    }

    fn read_reg(&self) -> u32 {
        match self.regsel {
            0x00 => u32::from(self.id) << 24,
            0x01 => ((IOAPIC_PINS as u32 - 1) << 16) | 0x11,
            0x02 => u32::from(self.id) << 24,
            r @ 0x10..=0x3f => {
                let e = self.redir[usize::from((r - 0x10) / 2)];
                if r & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, v: u32) {
        match self.regsel {
            0x00 => self.id = ((v >> 24) & 0x0f) as u8,
            r @ 0x10..=0x3f => {
                let e = &mut self.redir[usize::from((r - 0x10) / 2)];
                if r & 1 == 0 {
                    // Delivery status and Remote IRR are read-only.
                    let ro = *e & ((1 << 12) | RTE_REMOTE_IRR);
                    *e = (*e & !0xffff_ffff) | (u64::from(v) & !((1 << 12) | RTE_REMOTE_IRR)) | ro;
                    if *e & RTE_LEVEL == 0 {
                        *e &= !RTE_REMOTE_IRR;
                    }
                } else {
                    *e = (*e & 0xffff_ffff) | (u64::from(v & 0xff00_0000) << 32);
                }
            }
            _ => {}
        }
    }
}

impl MmioDevice for IoApic {
    fn read(&mut self, offset: u64, _size: u8) -> u64 {
        match offset {
            0x00 => u64::from(self.regsel),
            0x10 => u64::from(self.read_reg()),
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, _size: u8, value: u64) {
        match offset {
            0x00 => self.regsel = value as u8,
            0x10 => {
                self.write_reg(value as u32);
                self.service();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;

    struct Sys {
        bus: Bus,
        lapic: crate::bus::DeviceId,
        ioapic: crate::bus::DeviceId,
        clock: Clock,
        lines: IrqLines,
    }

    fn setup() -> Sys {
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let ab = ApicBus::new();
        let mut bus = Bus::new();
        let lapic = bus
            .add_mmio(
                LAPIC_BASE,
                LAPIC_SIZE,
                Box::new(Lapic::new(0, ab.clone(), clock.clone())),
            )
            .unwrap();
        let ioapic = bus
            .add_mmio(
                IOAPIC_BASE,
                IOAPIC_SIZE,
                Box::new(IoApic::new(lines.clone(), ab)),
            )
            .unwrap();
        // Software-enable the APIC, spurious vector 0xff.
        bus.mmio_write(LAPIC_BASE + 0xf0, 4, 0x1ff);
        Sys {
            bus,
            lapic,
            ioapic,
            clock,
            lines,
        }
    }

    impl Sys {
        fn poll(&mut self) -> Option<u8> {
            self.bus
                .mmio_device_mut::<IoApic>(self.ioapic)
                .unwrap()
                .service();
            self.bus
                .mmio_device_mut::<Lapic>(self.lapic)
                .unwrap()
                .pending_vector()
        }
        fn ack(&mut self) -> u8 {
            self.bus
                .mmio_device_mut::<Lapic>(self.lapic)
                .unwrap()
                .acknowledge()
        }
        fn route(&mut self, pin: u64, low: u32) {
            self.bus.mmio_write(IOAPIC_BASE, 4, 0x10 + 2 * pin);
            self.bus.mmio_write(IOAPIC_BASE + 0x10, 4, u64::from(low));
        }
    }

    #[test]
    fn ids_and_versions() {
        let mut s = setup();
        assert_eq!(s.bus.mmio_read(LAPIC_BASE + 0x30, 4) & 0xff, 0x14);
        s.bus.mmio_write(IOAPIC_BASE, 4, 1);
        assert_eq!(s.bus.mmio_read(IOAPIC_BASE + 0x10, 4), 0x0017_0011);
        s.bus.mmio_write(IOAPIC_BASE, 4, 0x10);
        assert_eq!(
            s.bus.mmio_read(IOAPIC_BASE + 0x10, 4),
            1 << 16,
            "masked at reset"
        );
    }

    #[test]
    fn edge_irq_through_ioapic_and_eoi() {
        let mut s = setup();
        s.route(4, 0x31);
        s.lines.line(4).pulse();
        assert_eq!(s.poll(), Some(0x31));
        assert_eq!(s.ack(), 0x31);
        assert_eq!(
            s.bus.mmio_read(LAPIC_BASE + 0x100 + 0x10, 4),
            1 << 17,
            "ISR bit 0x31"
        );
        assert_eq!(s.poll(), None);
        s.bus.mmio_write(LAPIC_BASE + 0xb0, 4, 0);
        assert_eq!(s.bus.mmio_read(LAPIC_BASE + 0x110, 4), 0);
    }

    #[test]
    fn pit_irq0_arrives_on_gsi2() {
        let mut s = setup();
        s.route(2, 0x30);
        s.lines.line(0).pulse();
        assert_eq!(s.poll(), Some(0x30));
    }

    #[test]
    fn level_irq_remote_irr_and_eoi_broadcast() {
        let mut s = setup();
        s.route(9, 0x41 | (1 << 15));
        s.lines.line(9).raise();
        assert_eq!(s.poll(), Some(0x41));
        assert_eq!(s.ack(), 0x41);
        s.bus.mmio_write(IOAPIC_BASE, 4, 0x10 + 18);
        assert_ne!(s.bus.mmio_read(IOAPIC_BASE + 0x10, 4) & (1 << 14), 0);
        assert_eq!(s.poll(), None);
        // EOI with the line still asserted: delivered again.
        s.bus.mmio_write(LAPIC_BASE + 0xb0, 4, 0);
        assert_eq!(s.poll(), Some(0x41));
        s.ack();
        s.lines.line(9).lower();
        s.bus.mmio_write(LAPIC_BASE + 0xb0, 4, 0);
        assert_eq!(s.poll(), None);
        s.bus.mmio_write(IOAPIC_BASE, 4, 0x10 + 18);
        assert_eq!(s.bus.mmio_read(IOAPIC_BASE + 0x10, 4) & (1 << 14), 0);
    }

    #[test]
    fn tpr_blocks_lower_priority_classes() {
        let mut s = setup();
        s.bus.mmio_write(LAPIC_BASE + 0x80, 4, 0x50);
        s.bus.mmio_write(LAPIC_BASE + 0x300, 4, 0x0004_0045); // self IPI 0x45
        assert_eq!(s.poll(), None);
        s.bus.mmio_write(LAPIC_BASE + 0x300, 4, 0x0004_0065);
        assert_eq!(s.poll(), Some(0x65));
        s.bus.mmio_write(LAPIC_BASE + 0x80, 4, 0);
        assert_eq!(s.ack(), 0x65);
        // 0x45 is a lower class than the in-service 0x65.
        assert_eq!(s.poll(), None);
        s.bus.mmio_write(LAPIC_BASE + 0xb0, 4, 0);
        assert_eq!(s.ack(), 0x45);
    }

    #[test]
    fn timer_one_shot_and_periodic() {
        let mut s = setup();
        s.bus.mmio_write(LAPIC_BASE + 0x3e0, 4, 0x3); // divide by 16
        s.bus.mmio_write(LAPIC_BASE + 0x320, 4, 0xec); // one-shot, vector 0xec
        s.bus.mmio_write(LAPIC_BASE + 0x380, 4, 1000);
        assert_eq!(s.bus.next_deadline(), Some(16_000));
        s.clock.set_ns(8_000);
        assert_eq!(s.bus.mmio_read(LAPIC_BASE + 0x390, 4), 500);
        s.clock.set_ns(16_000);
        s.bus.tick(16_000);
        assert_eq!(s.bus.mmio_read(LAPIC_BASE + 0x390, 4), 0);
        assert_eq!(s.poll(), Some(0xec));
        s.ack();
        s.bus.mmio_write(LAPIC_BASE + 0xb0, 4, 0);
        assert_eq!(s.bus.next_deadline(), None);
        // Periodic.
        s.bus.mmio_write(LAPIC_BASE + 0x320, 4, (1 << 17) | 0xef);
        s.bus.mmio_write(LAPIC_BASE + 0x380, 4, 100);
        let d = s.bus.next_deadline().unwrap();
        assert_eq!(d, 16_000 + 1_600);
        s.clock.set_ns(d);
        s.bus.tick(d);
        assert_eq!(s.ack(), 0xef);
        s.bus.mmio_write(LAPIC_BASE + 0xb0, 4, 0);
        assert_eq!(s.bus.next_deadline(), Some(d + 1_600));
        s.clock.set_ns(d + 1_600);
        s.bus.tick(d + 1_600);
        assert_eq!(s.poll(), Some(0xef));
    }

    #[test]
    fn disabled_apic_passes_pic_interrupts() {
        let lapic = Lapic::new(0, ApicBus::new(), Clock::manual());
        assert!(lapic.accepts_pic());
        let mut s = setup();
        let l = s.bus.mmio_device_mut::<Lapic>(s.lapic).unwrap();
        assert!(!l.accepts_pic());
        l.write(0x350, 4, 0x700); // LINT0 ExtINT, unmasked
        assert!(l.accepts_pic());
    }
}
