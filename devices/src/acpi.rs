//! ACPI fixed-hardware power-management registers (ACPI 6.5 §4.8): PM1a event block
//! (PM1_STS/PM1_EN, §4.8.3.1), PM1a control block (SCI_EN, SLP_TYP, SLP_EN, §4.8.3.2),
//! the 24-bit PM timer at 3.579545 MHz (§4.8.3.3) and a GPE0 block (§4.8.4.1), laid out like
//! QEMU's PIIX4 PM at I/O base 0x600.
//!
//! Firmware (FADT/DSDT) must describe exactly these constants: PM1a_EVT_BLK = [`PM1A_EVT_BLK`]
//! (length 4), PM1a_CNT_BLK = [`PM1A_CNT_BLK`] (length 2), PM_TMR_BLK = [`PM_TMR_BLK`]
//! (length 4, flags TMR_VAL_EXT = 0), GPE0_BLK = [`GPE0_BLK`] (length [`GPE0_BLK_LEN`]),
//! SCI_INT = [`SCI_IRQ`], SMI_CMD = 0 (no SMM: the platform is always in ACPI mode, so SCI_EN
//! reads 1), `\_S5` = Package { [`S5_SLP_TYP`], [`S5_SLP_TYP`], 0, 0 }, RESET_REG = system I/O
//! 0xCF9 ([`crate::pci::RESET_CONTROL_PORT`]) with RESET_VALUE [`RESET_VALUE`].

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::clock::{ns_to_ticks, ticks_to_ns, Clock};
use crate::events::{EventSender, MachineEvent};
use crate::irq::IrqLine;

/// Base of the PM I/O block.
pub const PM_BASE: u16 = 0x600;
/// PM1a event block (PM1_STS at +0, PM1_EN at +2).
pub const PM1A_EVT_BLK: u16 = PM_BASE;
/// PM1a control block.
pub const PM1A_CNT_BLK: u16 = PM_BASE + 4;
/// PM timer block.
pub const PM_TMR_BLK: u16 = PM_BASE + 8;
/// GPE0 block (status bytes then enable bytes).
pub const GPE0_BLK: u16 = PM_BASE + 0x20;
/// GPE0 block length in bytes.
pub const GPE0_BLK_LEN: u16 = 4;
/// ISA IRQ of the SCI (level-triggered: set ELCR bit 9).
pub const SCI_IRQ: u8 = 9;
/// SLP_TYP value meaning S5 (soft off) on this platform.
pub const S5_SLP_TYP: u8 = 0;
/// Value to write to the FADT RESET_REG (0xCF9): RCPU | SRST.
pub const RESET_VALUE: u8 = 0x06;
/// PM timer frequency (ACPI 6.5 §4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// Port windows `(base, len, device offset)` to map on the bus.
pub const ACPI_PM_WINDOWS: [(u16, u16, u16); 2] =
    [(PM_BASE, 12, 0), (GPE0_BLK, GPE0_BLK_LEN, 0x20)];

/// PM1_STS bits.
const TMR_STS: u16 = 1 << 0;
const PWRBTN_STS: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
/// PM1_CNT bits.
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;

/// The PM register block.
#[derive(Debug, Serialize, Deserialize)]
pub struct AcpiPm {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    gpe0_sts: [u8; 2],
    gpe0_en: [u8; 2],
    last_tick_ns: u64,
    sci_level: bool,
    #[serde(skip)]
    clock: Clock,
    #[serde(skip)]
    sci: IrqLine,
    #[serde(skip)]
    events: EventSender,
}

impl AcpiPm {
    /// The PM block on `clock`, raising `sci`, reporting power-off to `events`.
    pub fn new(clock: Clock, sci: IrqLine, events: EventSender) -> Self {
        Self {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: SCI_EN,
            gpe0_sts: [0; 2],
            gpe0_en: [0; 2],
            last_tick_ns: clock.now_ns(),
            sci_level: false,
            clock,
            sci,
            events,
        }
    }

    /// Reconnect after a restore.
    pub fn connect(&mut self, clock: Clock, sci: IrqLine, events: EventSender) {
        self.clock = clock;
        self.sci = sci;
        self.events = events;
    }

    /// The host asks for a graceful shutdown: set PWRBTN_STS (the guest's ACPI driver powers
    /// off when PWRBTN_EN is set).
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PWRBTN_STS;
        self.update_sci();
    }

    fn timer(&self, now_ns: u64) -> u32 {
        (ns_to_ticks(now_ns, PM_TIMER_HZ) & 0xff_ffff) as u32
    }

    fn update_sci(&mut self) {
        let gpe = (self.gpe0_sts[0] & self.gpe0_en[0]) | (self.gpe0_sts[1] & self.gpe0_en[1]);
        let level =
            self.pm1_cnt & SCI_EN != 0 && (self.pm1_sts & self.pm1_en & 0x0521 != 0 || gpe != 0);
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set(level);
        }
    }

    fn advance(&mut self, now_ns: u64) {
        if now_ns > self.last_tick_ns {
            // TMR_STS is set whenever bit 23 of the counter toggles.
            let a = ns_to_ticks(self.last_tick_ns, PM_TIMER_HZ) >> 23;
            let b = ns_to_ticks(now_ns, PM_TIMER_HZ) >> 23;
            if b != a {
                self.pm1_sts |= TMR_STS;
            }
            self.last_tick_ns = now_ns;
        }
        self.update_sci();
    }

    fn read_byte(&mut self, off: u16, now: u64) -> u8 {
        let b = |v: u16, hi: bool| if hi { (v >> 8) as u8 } else { v as u8 };
        match off {
            0 | 1 => b(self.pm1_sts, off == 1),
            2 | 3 => b(self.pm1_en, off == 3),
            4 | 5 => b(self.pm1_cnt & !SLP_EN, off == 5),
            8..=11 => (self.timer(now) >> (8 * (off - 8))) as u8,
            0x20 | 0x21 => self.gpe0_sts[usize::from(off - 0x20)],
            0x22 | 0x23 => self.gpe0_en[usize::from(off - 0x22)],
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, off: u16, v: u8) {
        let set = |r: &mut u16, hi: bool, v: u8| {
            *r = if hi {
                (*r & 0x00ff) | u16::from(v) << 8
            } else {
                (*r & 0xff00) | u16::from(v)
            };
        };
        match off {
            0 => self.pm1_sts &= !u16::from(v),
            1 => self.pm1_sts &= !(u16::from(v) << 8),
            2 | 3 => set(&mut self.pm1_en, off == 3, v),
            4 | 5 => set(&mut self.pm1_cnt, off == 5, v),
            0x20 | 0x21 => self.gpe0_sts[usize::from(off - 0x20)] &= !v,
            0x22 | 0x23 => self.gpe0_en[usize::from(off - 0x22)] = v,
            _ => {}
        }
    }

    fn sleep(&mut self) {
        let typ = ((self.pm1_cnt >> 10) & 7) as u8;
        self.pm1_cnt &= !SLP_EN;
        if typ == S5_SLP_TYP {
            log::info!(target: "devices::acpi", "S5 requested: power off");
            self.events.send(MachineEvent::PowerOff);
        } else {
            // Sleep states other than S5 are not offered in \_Sx; wake at once.
            log::warn!(target: "devices::acpi", "unsupported SLP_TYP {typ}; waking");
            self.pm1_sts |= WAK_STS;
        }
    }
}

impl PioDevice for AcpiPm {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        let now = self.clock.now_ns();
        self.advance(now);
        (0..u16::from(size))
            .map(|i| u32::from(self.read_byte(offset.wrapping_add(i), now)) << (8 * i))
            .sum()
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) {
        let now = self.clock.now_ns();
        self.advance(now);
        for i in 0..u16::from(size) {
            self.write_byte(offset.wrapping_add(i), (value >> (8 * i)) as u8);
        }
        if self.pm1_cnt & SLP_EN != 0 {
            self.sleep();
        }
        self.update_sci();
    }

    fn tick(&mut self, now_ns: u64) {
        self.advance(now_ns);
    }

    fn next_deadline(&self) -> Option<u64> {
        if self.pm1_en & TMR_STS == 0 {
            return None;
        }
        let t = ns_to_ticks(self.last_tick_ns, PM_TIMER_HZ);
        Some(ticks_to_ns(((t >> 23) + 1) << 23, PM_TIMER_HZ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Port};
    use crate::events::{event_channel, EventReceiver};
    use crate::irq::IrqLines;

    fn setup() -> (Bus, Clock, IrqLines, EventReceiver) {
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let (tx, rx) = event_channel();
        let mut bus = Bus::new();
        bus.add_pio_at(
            Box::new(AcpiPm::new(clock.clone(), lines.line(SCI_IRQ), tx)),
            &ACPI_PM_WINDOWS,
        )
        .unwrap();
        (bus, clock, lines, rx)
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_and_wraps_24_bits() {
        let (mut bus, clock, _, _) = setup();
        assert_eq!(bus.pio_read(Port(PM_TMR_BLK), 4), 0);
        clock.advance_ns(1_000_000);
        assert_eq!(bus.pio_read(Port(PM_TMR_BLK), 4), 3579);
        clock.set_ns(ticks_to_ns(1 << 24, PM_TIMER_HZ) + 1_000_000);
        assert_eq!(bus.pio_read(Port(PM_TMR_BLK), 4), 3579);
    }

    #[test]
    fn s5_powers_off() {
        let (mut bus, _, _, rx) = setup();
        assert_eq!(bus.pio_read(Port(PM1A_CNT_BLK), 2) & 1, 1, "SCI_EN");
        // SLP_TYP = 1 (not S5) does nothing but set WAK_STS.
        bus.pio_write(Port(PM1A_CNT_BLK), 2, 1 | (1 << 10) | (1 << 13));
        assert_eq!(rx.poll(), None);
        assert_ne!(bus.pio_read(Port(PM1A_EVT_BLK), 2) & 0x8000, 0);
        bus.pio_write(
            Port(PM1A_CNT_BLK),
            2,
            1 | (u32::from(S5_SLP_TYP) << 10) | (1 << 13),
        );
        assert_eq!(rx.poll(), Some(MachineEvent::PowerOff));
        assert_eq!(bus.pio_read(Port(PM1A_CNT_BLK), 2) & (1 << 13), 0);
    }

    #[test]
    fn timer_overflow_raises_sci_until_cleared() {
        let (mut bus, clock, lines, _) = setup();
        bus.pio_write(Port(PM1A_EVT_BLK + 2), 2, 0x0101); // TMR_EN | PWRBTN_EN
        let d = bus.next_deadline().unwrap();
        clock.set_ns(d);
        bus.tick(d);
        assert_ne!(lines.levels() & (1 << SCI_IRQ), 0);
        assert_eq!(bus.pio_read(Port(PM1A_EVT_BLK), 2) & 1, 1);
        bus.pio_write(Port(PM1A_EVT_BLK), 2, 1); // write-1-to-clear
        assert_eq!(lines.levels() & (1 << SCI_IRQ), 0);
    }
}
