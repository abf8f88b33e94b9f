//! Intel 8259A programmable interrupt controller, master/slave pair as wired in the PC/AT,
//! plus the PIIX edge/level control registers (ELCR, ports 0x4D0/0x4D1).
//!
//! Follows the Intel 8259A datasheet (ICW1-ICW4, OCW1-OCW3, priority resolution, EOI modes,
//! poll command, special mask mode, special fully nested mode) and Intel 82371SB (PIIX3)
//! datasheet §4.1.11 (ELCR1/ELCR2).
//!
//! Wiring: map with [`PIC_WINDOWS`]. The vCPU calls [`PicPair::pending_vector`] at a block
//! boundary when EFLAGS.IF = 1 and, when it delivers the interrupt, [`PicPair::acknowledge`]
//! (the two INTA cycles), which returns the vector to use (spurious IRQ7/IRQ15 vectors included).

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::irq::IrqLines;

/// Master command/data ports.
pub const MASTER_PORT: u16 = 0x20;
/// Slave command/data ports.
pub const SLAVE_PORT: u16 = 0xa0;
/// ELCR1/ELCR2 ports (PIIX3 datasheet §4.1.11).
pub const ELCR_PORT: u16 = 0x4d0;
/// Port windows `(base, len, device offset)` to map on the bus.
pub const PIC_WINDOWS: [(u16, u16, u16); 3] =
    [(MASTER_PORT, 2, 0), (SLAVE_PORT, 2, 2), (ELCR_PORT, 2, 4)];
/// The master IR input the slave's INT output is wired to.
pub const CASCADE_IRQ: u8 = 2;

/// One 8259A.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pic8259 {
    /// Interrupt request register.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// Input levels as last seen (edge detection).
    last_level: u8,
    /// Edge/level control (ELCR): 1 = level-triggered.
    pub elcr: u8,
    /// ELCR bits that may be set.
    elcr_mask: u8,
    /// ICW1 LTIM: all inputs level-triggered.
    ltim: bool,
    /// Vector base from ICW2 (T7-T3).
    pub vector_base: u8,
    /// Lowest-priority rotation: IR `priority_add` has the highest priority.
    priority_add: u8,
    /// Initialization state: 0 ready, 1 expecting ICW2, 2 ICW3, 3 ICW4.
    init_state: u8,
    icw4_needed: bool,
    single: bool,
    /// ICW4 AEOI.
    pub auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    /// ICW4 SFNM.
    special_fully_nested: bool,
    /// OCW3 RR/RIS: read ISR instead of IRR.
    read_isr: bool,
    /// OCW3 P: next read is a poll.
    poll: bool,
    /// OCW3 SMM.
    special_mask: bool,
}

/// Priority index (0 = highest) of the highest-priority bit of `mask`, or 8 if empty.
fn priority_of(mask: u8, priority_add: u8) -> u8 {
    (0..8)
        .find(|p| mask & (1 << ((p + priority_add) & 7)) != 0)
        .unwrap_or(8)
}

impl Pic8259 {
    fn new(elcr_mask: u8) -> Self {
        Self {
            elcr_mask,
            ..Self::default()
        }
    }

    fn level_mask(&self) -> u8 {
        if self.ltim {
            0xff
        } else {
            self.elcr
        }
    }

    /// Drive input `irq` to `level`.
    fn set_input(&mut self, irq: u8, level: bool) {
        let bit = 1u8 << (irq & 7);
        if self.level_mask() & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.last_level & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.last_level |= bit;
        } else {
            self.last_level &= !bit;
        }
    }

    /// The IR input that would be serviced now, if any (priority resolver vs. ISR).
    fn pending_irq(&self, is_master: bool) -> Option<u8> {
        let req = self.irr & !self.imr;
        let p = priority_of(req, self.priority_add);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if is_master && self.special_fully_nested {
            in_service &= !(1 << CASCADE_IRQ);
        }
        let cur = priority_of(in_service, self.priority_add);
        (p < cur).then_some((p + self.priority_add) & 7)
    }

    /// INTA: move `irq` from IRR to ISR (unless AEOI).
    fn ack(&mut self, irq: u8) {
        let bit = 1u8 << irq;
        if self.level_mask() & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn highest_isr(&self) -> Option<u8> {
        let p = priority_of(self.isr, self.priority_add);
        (p < 8).then_some((p + self.priority_add) & 7)
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1: reset the edge-sense latch, IMR, ISR, priorities, SMM; read IRR next.
            self.init_state = 1;
            self.icw4_needed = v & 0x01 != 0;
            self.single = v & 0x02 != 0;
            self.ltim = v & 0x08 != 0;
            self.imr = 0;
            self.isr = 0;
            self.irr &= self.level_mask();
            self.last_level = 0;
            self.priority_add = 0;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            self.auto_eoi = false;
            self.rotate_on_auto_eoi = false;
            self.special_fully_nested = false;
        } else if v & 0x08 != 0 {
            // OCW3.
            if v & 0x04 != 0 {
                self.poll = true;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
        } else {
            // OCW2: R SL EOI.
            let level = v & 7;
            match v >> 5 {
                0b001 | 0b101 => {
                    if let Some(irq) = self.highest_isr() {
                        self.isr &= !(1 << irq);
                        if v >> 5 == 0b101 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                0b011 => self.isr &= !(1 << level),
                0b111 => {
                    self.isr &= !(1 << level);
                    self.priority_add = (level + 1) & 7;
                }
                0b110 => self.priority_add = (level + 1) & 7,
                0b100 => self.rotate_on_auto_eoi = true,
                0b000 => self.rotate_on_auto_eoi = false,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_state {
            1 => {
                self.vector_base = v & 0xf8;
                self.init_state = if !self.single {
                    2
                } else if self.icw4_needed {
                    3
                } else {
                    0
                };
            }
            2 => {
                // ICW3: cascade wiring is fixed on the PC (slave on IR2, ID 2).
                self.init_state = if self.icw4_needed { 3 } else { 0 };
            }
            3 => {
                self.auto_eoi = v & 0x02 != 0;
                self.special_fully_nested = v & 0x10 != 0;
                self.init_state = 0;
            }
            _ => self.imr = v,
        }
    }
}

/// The PC/AT master/slave 8259A pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PicPair {
    /// Master (IRQ 0-7, ports 0x20/0x21).
    pub master: Pic8259,
    /// Slave (IRQ 8-15, ports 0xA0/0xA1), cascaded on master IR2.
    pub slave: Pic8259,
    #[serde(skip)]
    lines: IrqLines,
    /// Line levels already applied to the chips.
    applied_levels: u16,
}

impl PicPair {
    /// A pair in power-on state, sampling ISA IRQ 0-15 from `lines`.
    pub fn new(lines: IrqLines) -> Self {
        Self {
            // PIIX3: IRQ 0, 1, 2, 8 and 13 are always edge-triggered.
            master: Pic8259::new(0xf8),
            slave: Pic8259::new(0xde),
            lines,
            applied_levels: 0,
        }
    }

    /// Reconnect to the machine's lines after a restore.
    pub fn connect(&mut self, lines: IrqLines) {
        self.lines = lines;
    }

    /// Apply line changes to the IRRs and propagate the slave's INT to master IR2.
    fn sync(&mut self) {
        let edges = self.lines.take_edges() as u16;
        let levels = self.lines.levels() as u16;
        let changed = edges | (levels ^ self.applied_levels);
        for n in 0..16u8 {
            let bit = 1u16 << n;
            if changed & bit == 0 || n == CASCADE_IRQ {
                continue;
            }
            let chip = if n < 8 {
                &mut self.master
            } else {
                &mut self.slave
            };
            if edges & bit != 0 {
                // A pulse (or re-assertion) since the last sample: present a fresh rising edge.
                chip.set_input(n, false);
                chip.set_input(n, true);
            }
            chip.set_input(n, levels & bit != 0);
        }
        self.applied_levels = levels;
        self.update_cascade();
    }

    fn update_cascade(&mut self) {
        // The slave's INT output is a level into master IR2: it follows the slave directly, so a
        // request withdrawn on the slave does not leave a stale cascade request on the master.
        let slave_int = self.slave.pending_irq(false).is_some();
        let bit = 1u8 << CASCADE_IRQ;
        if slave_int {
            self.master.irr |= bit;
            self.master.last_level |= bit;
        } else {
            self.master.irr &= !bit;
            self.master.last_level &= !bit;
        }
    }

    /// Whether the master's INT output is asserted (an interrupt is pending for the CPU).
    pub fn interrupt_pending(&mut self) -> bool {
        self.sync();
        self.master.pending_irq(true).is_some()
    }

    /// The vector [`PicPair::acknowledge`] would return now, or `None` if INT is not asserted.
    pub fn pending_vector(&mut self) -> Option<u8> {
        self.sync();
        let irq = self.master.pending_irq(true)?;
        if irq == CASCADE_IRQ && !self.master.single {
            let s = self.slave.pending_irq(false).unwrap_or(7);
            return Some(self.slave.vector_base | s);
        }
        Some(self.master.vector_base | irq)
    }

    /// The INTA cycle: the highest-priority request goes in service and its vector is returned.
    /// If no request is pending any more the 8259A answers with IR7 of the master (or IR7 of
    /// the slave for a vanished cascaded request) without setting ISR: a spurious interrupt.
    pub fn acknowledge(&mut self) -> u8 {
        self.sync();
        let vector = match self.master.pending_irq(true) {
            None => {
                log::debug!(target: "devices::pic", "spurious IRQ7");
                self.master.vector_base | 7
            }
            Some(irq) => {
                self.master.ack(irq);
                if irq == CASCADE_IRQ && !self.master.single {
                    match self.slave.pending_irq(false) {
                        Some(s) => {
                            self.slave.ack(s);
                            self.slave.vector_base | s
                        }
                        None => {
                            log::debug!(target: "devices::pic", "spurious IRQ15");
                            self.slave.vector_base | 7
                        }
                    }
                } else {
                    self.master.vector_base | irq
                }
            }
        };
        self.update_cascade();
        vector
    }

    fn read_chip(&mut self, slave: bool, data: bool) -> u8 {
        self.sync();
        let is_master = !slave;
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        if chip.poll {
            // Poll command (8259A datasheet "The Poll Command"): acts as an INTA.
            chip.poll = false;
            let r = match chip.pending_irq(is_master) {
                Some(irq) => {
                    chip.ack(irq);
                    0x80 | irq
                }
                None => 0,
            };
            self.update_cascade();
            return r;
        }
        if data {
            chip.imr
        } else if chip.read_isr {
            chip.isr
        } else {
            chip.irr
        }
    }
}

impl PioDevice for PicPair {
    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        u32::from(match offset {
            0 | 1 => self.read_chip(false, offset == 1),
            2 | 3 => self.read_chip(true, offset == 3),
            4 => self.master.elcr,
            5 => self.slave.elcr,
            _ => 0xff,
        })
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) {
        let v = value as u8;
        log::trace!(target: "devices::pic", "write offset {offset} value {v:#04x}");
        self.sync();
        match offset {
            0 => self.master.write_command(v),
            1 => self.master.write_data(v),
            2 => self.slave.write_command(v),
            3 => self.slave.write_data(v),
            4 => self.master.elcr = v & self.master.elcr_mask,
            5 => self.slave.elcr = v & self.slave.elcr_mask,
            _ => {}
        }
        // Re-apply current levels (ICW1 and ELCR changes alter how they are seen).
        let levels = self.lines.levels() as u16;
        for n in (0..16u8).filter(|&n| n != CASCADE_IRQ) {
            let chip = if n < 8 {
                &mut self.master
            } else {
                &mut self.slave
            };
            let bit = 1u8 << (n & 7);
            if chip.level_mask() & bit != 0 {
                chip.set_input(n, levels & (1 << n) != 0);
            }
        }
        self.update_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Port};

    fn setup() -> (Bus, crate::bus::DeviceId, IrqLines) {
        let lines = IrqLines::new();
        let mut bus = Bus::new();
        let id = bus
            .add_pio_at(Box::new(PicPair::new(lines.clone())), &PIC_WINDOWS)
            .unwrap();
        // Linux init_8259A (arch/x86/kernel/i8259.c sequence of port writes).
        bus.pio_write(Port(0x21), 1, 0xff);
        bus.pio_write(Port(0xa1), 1, 0xff);
        bus.pio_write(Port(0x20), 1, 0x11); // ICW1: edge, cascade, ICW4
        bus.pio_write(Port(0x21), 1, 0x30); // ICW2: vectors 0x30-0x37
        bus.pio_write(Port(0x21), 1, 0x04); // ICW3: slave on IR2
        bus.pio_write(Port(0x21), 1, 0x01); // ICW4: 8086, normal EOI
        bus.pio_write(Port(0xa0), 1, 0x11);
        bus.pio_write(Port(0xa1), 1, 0x38);
        bus.pio_write(Port(0xa1), 1, 0x02);
        bus.pio_write(Port(0xa1), 1, 0x01);
        bus.pio_write(Port(0x21), 1, 0xfa); // unmask IRQ0 and cascade
        bus.pio_write(Port(0xa1), 1, 0xff);
        (bus, id, lines)
    }

    fn pic(bus: &mut Bus, id: crate::bus::DeviceId) -> &mut PicPair {
        bus.pio_device_mut::<PicPair>(id).unwrap()
    }

    #[test]
    fn irq0_delivers_vector_and_eoi_clears_isr() {
        let (mut bus, id, lines) = setup();
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
        lines.line(0).pulse();
        assert_eq!(pic(&mut bus, id).pending_vector(), Some(0x30));
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x30);
        // OCW3 read ISR.
        bus.pio_write(Port(0x20), 1, 0x0b);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0x01);
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
        // Another IRQ0 while in service is latched in IRR but not delivered.
        lines.line(0).pulse();
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
        bus.pio_write(Port(0x20), 1, 0x0a);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0x01);
        bus.pio_write(Port(0x20), 1, 0x20); // non-specific EOI
        bus.pio_write(Port(0x20), 1, 0x0b);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0x00);
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x30);
    }

    #[test]
    fn masked_irq_is_held_until_unmasked() {
        let (mut bus, id, lines) = setup();
        lines.line(1).pulse();
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
        assert_eq!(bus.pio_read(Port(0x21), 1), 0xfa);
        bus.pio_write(Port(0x21), 1, 0xf8);
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x31);
    }

    #[test]
    fn slave_irq_cascades_through_ir2() {
        let (mut bus, id, lines) = setup();
        bus.pio_write(Port(0xa1), 1, 0xfe); // unmask IRQ8
        lines.line(8).raise();
        assert_eq!(pic(&mut bus, id).pending_vector(), Some(0x38));
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x38);
        bus.pio_write(Port(0xa0), 1, 0x0b);
        bus.pio_write(Port(0x20), 1, 0x0b);
        assert_eq!(bus.pio_read(Port(0xa0), 1), 0x01);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0x04);
        // Linux EOIs the slave (specific) and then the master's cascade line.
        bus.pio_write(Port(0xa0), 1, 0x60);
        bus.pio_write(Port(0x20), 1, 0x62);
        assert_eq!(bus.pio_read(Port(0xa0), 1), 0);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0);
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
    }

    #[test]
    fn priority_and_nesting() {
        let (mut bus, id, lines) = setup();
        bus.pio_write(Port(0x21), 1, 0x00);
        lines.line(3).pulse();
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x33);
        // Lower priority IRQ5 waits; higher priority IRQ1 nests.
        lines.line(5).pulse();
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
        lines.line(1).pulse();
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x31);
        bus.pio_write(Port(0x20), 1, 0x20); // EOI IRQ1
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
        bus.pio_write(Port(0x20), 1, 0x20); // EOI IRQ3
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x35);
    }

    #[test]
    fn spurious_irq7_when_request_vanishes() {
        let (mut bus, id, lines) = setup();
        bus.pio_write(Port(0x4d0), 1, 0xff);
        assert_eq!(bus.pio_read(Port(0x4d0), 1), 0xf8);
        bus.pio_write(Port(0x21), 1, 0x00);
        lines.line(4).raise();
        bus.pio_write(Port(0x4d0), 1, 0x10); // IRQ4 level-triggered
        assert_eq!(pic(&mut bus, id).pending_vector(), Some(0x34));
        lines.line(4).lower();
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x37);
        bus.pio_write(Port(0x20), 1, 0x0b);
        assert_eq!(
            bus.pio_read(Port(0x20), 1),
            0x00,
            "spurious IRQ7 sets no ISR bit"
        );
    }

    #[test]
    fn level_triggered_reasserts_after_eoi() {
        let (mut bus, id, lines) = setup();
        bus.pio_write(Port(0x4d1), 1, 0x02); // IRQ9 level (ACPI SCI)
        bus.pio_write(Port(0xa1), 1, 0xfd);
        lines.line(9).raise();
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x39);
        bus.pio_write(Port(0xa0), 1, 0x20);
        bus.pio_write(Port(0x20), 1, 0x20);
        assert_eq!(pic(&mut bus, id).pending_vector(), Some(0x39));
        lines.line(9).lower();
        assert_eq!(pic(&mut bus, id).pending_vector(), None);
    }

    #[test]
    fn auto_eoi_and_poll() {
        let (mut bus, id, lines) = setup();
        bus.pio_write(Port(0x20), 1, 0x11);
        bus.pio_write(Port(0x21), 1, 0x08);
        bus.pio_write(Port(0x21), 1, 0x04);
        bus.pio_write(Port(0x21), 1, 0x03); // AEOI
        lines.line(6).pulse();
        assert_eq!(pic(&mut bus, id).acknowledge(), 0x0e);
        bus.pio_write(Port(0x20), 1, 0x0b);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0);
        lines.line(7).pulse();
        bus.pio_write(Port(0x20), 1, 0x0c); // poll
        assert_eq!(bus.pio_read(Port(0x20), 1), 0x87);
        bus.pio_write(Port(0x20), 1, 0x0c);
        assert_eq!(bus.pio_read(Port(0x20), 1), 0x00);
    }

    #[test]
    fn serde_round_trip() {
        let (mut bus, id, lines) = setup();
        lines.line(0).pulse();
        let p = pic(&mut bus, id);
        p.acknowledge();
        let json = serde_json::to_string(p).unwrap();
        let mut q: PicPair = serde_json::from_str(&json).unwrap();
        q.connect(lines);
        assert_eq!(q.master.isr, 1);
        assert_eq!(q.master.vector_base, 0x30);
    }
}
