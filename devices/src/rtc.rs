//! Motorola MC146818 real-time clock and CMOS RAM (MC146818A datasheet), as wired in the PC/AT:
//! index port 0x70 (bit 7 = NMI disable), data port 0x71, IRQ8.
//!
//! The wall clock starts at the host's `SystemTime` at power-on and then advances with the
//! virtual [`Clock`], so an instruction-count clock keeps guest time deterministic relative to
//! the start. Registers 0-9 are computed on read in BCD or binary (register B DM bit) and
//! 12/24-hour format (register B 24/12 bit). Register A's UIP bit reads 1 during the 244 µs
//! before each update; periodic (PF), alarm (AF) and update-ended (UF) flags are latched in
//! register C (cleared on read) and assert IRQ8 when enabled in register B.
//! CMOS layout follows the IBM PC/AT BIOS convention (memory sizes, century at 0x32).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::clock::{Clock, NS_PER_SEC};
use crate::irq::IrqLine;

/// Index/data ports.
pub const RTC_PORT: u16 = 0x70;
/// Port windows `(base, len, device offset)` to map on the bus.
pub const RTC_WINDOWS: [(u16, u16, u16); 1] = [(RTC_PORT, 2, 0)];
/// ISA IRQ of the RTC.
pub const RTC_IRQ: u8 = 8;
/// CMOS index of the century byte (for the ACPI FADT CENTURY field).
pub const CMOS_CENTURY: u8 = 0x32;

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;

const A_UIP: u8 = 0x80;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

/// Update cycle length: UIP is set this long before the registers change (datasheet: 244 µs
/// with the 32.768 kHz time base).
const UIP_NS: u64 = 244_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn to_bcd(v: u8) -> u8 {
    (v / 10) << 4 | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4).min(9) * 10 + (v & 0xf).min(9)
}

/// The RTC/CMOS device.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rtc {
    cmos: Vec<u8>,
    index: u8,
    nmi_disabled: bool,
    /// Guest wall-clock time (ns since the Unix epoch) at virtual time 0.
    base_unix_ns: i128,
    last_tick_ns: u64,
    irq_level: bool,
    #[serde(skip)]
    irq: IrqLine,
    #[serde(skip)]
    clock: Clock,
}

impl Rtc {
    /// An RTC showing host time now, on virtual `clock`, interrupting on `irq8`.
    pub fn new(clock: Clock, irq8: IrqLine) -> Self {
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let mut cmos = vec![0u8; 128];
        cmos[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        cmos[REG_B] = B_24H; // BCD, 24-hour
        cmos[REG_D] = 0x80; // VRT: battery good
        cmos[0x14] = 0x06; // equipment: FPU, VGA
        let mut rtc = Self {
            cmos,
            index: 0,
            nmi_disabled: false,
            base_unix_ns: host - i128::from(clock.now_ns()),
            last_tick_ns: clock.now_ns(),
            irq_level: false,
            irq: irq8,
            clock,
        };
        rtc.set_memory_layout(640 << 10, 0);
        rtc
    }

    /// Reconnect after a restore.
    pub fn connect(&mut self, clock: Clock, irq8: IrqLine) {
        self.clock = clock;
        self.irq = irq8;
    }

    /// Whether NMIs are disabled (port 0x70 bit 7), for the machine's NMI delivery.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Set a CMOS byte (machine set-up). Indexes 0x00-0x0D are clock registers.
    pub fn set_cmos(&mut self, index: u8, value: u8) {
        if let Some(b) = self.cmos.get_mut(usize::from(index)) {
            *b = value;
        }
    }

    /// Read a CMOS byte as stored (no clock computation).
    pub fn cmos(&self, index: u8) -> u8 {
        self.cmos.get(usize::from(index)).copied().unwrap_or(0xff)
    }

    /// Fill the IBM-compatible memory size bytes: `below_4g` = RAM bytes below 4 GiB (from 0),
    /// `above_4g` = RAM bytes mapped from 4 GiB. Also updates the 0x10-0x2D checksum.
    pub fn set_memory_layout(&mut self, below_4g: u64, above_4g: u64) {
        const K: u64 = 1024;
        const M: u64 = 1024 * K;
        let base_kb = (below_4g / K).min(640) as u16;
        self.cmos[0x15] = base_kb as u8;
        self.cmos[0x16] = (base_kb >> 8) as u8;
        let ext_kb = (below_4g.saturating_sub(M) / K).min(0xffff) as u16;
        for idx in [0x17, 0x30] {
            self.cmos[idx] = ext_kb as u8;
            self.cmos[idx + 1] = (ext_kb >> 8) as u8;
        }
        let above16 = (below_4g.saturating_sub(16 * M) / (64 * K)).min(0xffff) as u16;
        self.cmos[0x34] = above16 as u8;
        self.cmos[0x35] = (above16 >> 8) as u8;
        let high = (above_4g / (64 * K)).min(0xff_ffff) as u32;
        self.cmos[0x5b] = high as u8;
        self.cmos[0x5c] = (high >> 8) as u8;
        self.cmos[0x5d] = (high >> 16) as u8;
        let sum: u16 = self.cmos[0x10..=0x2d].iter().map(|&b| u16::from(b)).sum();
        self.cmos[0x2e] = (sum >> 8) as u8;
        self.cmos[0x2f] = sum as u8;
    }

    fn unix_ns(&self, now_ns: u64) -> i128 {
        self.base_unix_ns + i128::from(now_ns)
    }

    fn encode(&self, v: u8) -> u8 {
        if self.cmos[REG_B] & B_DM_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.cmos[REG_B] & B_DM_BINARY != 0 {
            v
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, h: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.encode(h)
        } else {
            let pm = if h >= 12 { 0x80 } else { 0 };
            let h12 = match h % 12 {
                0 => 12,
                x => x,
            };
            self.encode(h12) | pm
        }
    }

    fn decode_hour(&self, v: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.decode(v)
        } else {
            let h = self.decode(v & 0x7f) % 12;
            if v & 0x80 != 0 {
                h + 12
            } else {
                h
            }
        }
    }

    /// Write the current time into registers 0x00-0x09 and the century byte.
    fn store_time(&mut self, now_ns: u64) {
        let secs = self.unix_ns(now_ns).div_euclid(i128::from(NS_PER_SEC)) as i64;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let wday = ((days + 4).rem_euclid(7) + 1) as u8; // 1970-01-01 was a Thursday; 1 = Sunday
        self.cmos[0] = self.encode((sod % 60) as u8);
        self.cmos[2] = self.encode((sod / 60 % 60) as u8);
        self.cmos[4] = self.encode_hour((sod / 3600) as u8);
        self.cmos[6] = self.encode(wday);
        self.cmos[7] = self.encode(d as u8);
        self.cmos[8] = self.encode(m as u8);
        self.cmos[9] = self.encode(y.rem_euclid(100) as u8);
        self.cmos[usize::from(CMOS_CENTURY)] = self.encode(y.div_euclid(100).clamp(0, 99) as u8);
    }

    /// Take the guest-written time registers as the new wall-clock time.
    fn load_time(&mut self, now_ns: u64) {
        let c = &self.cmos;
        let year = i64::from(self.decode(c[9])) + 100 * i64::from(self.decode(c[0x32]));
        let month = u32::from(self.decode(c[8])).clamp(1, 12);
        let day = u32::from(self.decode(c[7])).clamp(1, 31);
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400
            + i64::from(self.decode_hour(c[4])) * 3600
            + i64::from(self.decode(c[2])) * 60
            + i64::from(self.decode(c[0]));
        self.base_unix_ns = i128::from(secs) * i128::from(NS_PER_SEC) - i128::from(now_ns);
        log::debug!(target: "devices::rtc", "guest set time to unix {secs}");
    }

    fn periodic_ns(&self) -> Option<u64> {
        let rs = self.cmos[REG_A] & 0x0f;
        let rs = match rs {
            0 => return None,
            1 | 2 => rs + 7,
            _ => rs,
        };
        // Rate = 32768 Hz >> (RS - 1).
        Some(NS_PER_SEC * (1u64 << (rs - 1)) / 32_768)
    }

    fn running(&self) -> bool {
        self.cmos[REG_B] & B_SET == 0 && (self.cmos[REG_A] >> 4) & 7 == 2
    }

    fn update_irq(&mut self) {
        let b = self.cmos[REG_B];
        let c = self.cmos[REG_C] & 0x70;
        let irqf = c & (b & (B_PIE | B_AIE | B_UIE)) != 0;
        if irqf {
            self.cmos[REG_C] |= C_IRQF;
        }
        if irqf != self.irq_level {
            self.irq_level = irqf;
            self.irq.set(irqf);
        }
    }

    fn alarm_matches(&mut self, now_ns: u64) -> bool {
        self.store_time(now_ns);
        [(0usize, 1usize), (2, 3), (4, 5)]
            .iter()
            .all(|&(t, a)| self.cmos[a] & 0xc0 == 0xc0 || self.cmos[a] == self.cmos[t])
    }

    fn advance(&mut self, now_ns: u64) {
        let last = self.last_tick_ns;
        if now_ns <= last {
            return;
        }
        if let Some(p) = self.periodic_ns() {
            if now_ns / p > last / p {
                self.cmos[REG_C] |= C_PF;
            }
        }
        if self.running() {
            let s0 = self.unix_ns(last).div_euclid(i128::from(NS_PER_SEC));
            let s1 = self.unix_ns(now_ns).div_euclid(i128::from(NS_PER_SEC));
            if s1 > s0 {
                self.cmos[REG_C] |= C_UF;
                if self.alarm_matches(now_ns) {
                    self.cmos[REG_C] |= C_AF;
                }
            }
        }
        self.last_tick_ns = now_ns;
        self.update_irq();
    }

    fn read_data(&mut self, now: u64) -> u8 {
        let idx = usize::from(self.index);
        match idx {
            0..=9 | 0x32 => {
                if self.running() {
                    self.store_time(now);
                }
                self.cmos[idx]
            }
            REG_A => {
                let frac = self.unix_ns(now).rem_euclid(i128::from(NS_PER_SEC)) as u64;
                let uip = self.running() && frac >= NS_PER_SEC - UIP_NS;
                (self.cmos[REG_A] & 0x7f) | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.advance(now);
                let v = self.cmos[REG_C];
                self.cmos[REG_C] = 0;
                self.update_irq();
                v
            }
            _ => self.cmos[idx],
        }
    }

    fn write_data(&mut self, v: u8, now: u64) {
        let idx = usize::from(self.index);
        match idx {
            REG_A => self.cmos[REG_A] = v & 0x7f,
            REG_B => {
                let old = self.cmos[REG_B];
                if v & B_SET != 0 && old & B_SET == 0 {
                    // Freeze the registers so the guest can rewrite them.
                    self.store_time(now);
                }
                // Changing data mode rewrites how the frozen registers are read: refresh them.
                self.cmos[REG_B] = if v & B_SET != 0 { v & !B_UIE } else { v };
                if v & B_SET == 0 && old & B_SET != 0 {
                    self.load_time(now);
                }
                self.update_irq();
            }
            REG_C | REG_D => {} // read-only
            _ => self.cmos[idx] = v,
        }
    }
}

impl PioDevice for Rtc {
    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        let now = self.clock.now_ns();
        u32::from(match offset {
            0 => 0xff, // index register is write-only on the AT
            _ => self.read_data(now),
        })
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) {
        let now = self.clock.now_ns();
        let v = value as u8;
        match offset {
            0 => {
                self.nmi_disabled = v & 0x80 != 0;
                self.index = v & 0x7f;
            }
            _ => self.write_data(v, now),
        }
    }

    fn tick(&mut self, now_ns: u64) {
        self.advance(now_ns);
    }

    fn next_deadline(&self) -> Option<u64> {
        let b = self.cmos[REG_B];
        let now = self.last_tick_ns;
        let mut d: Option<u64> = None;
        if b & B_PIE != 0 {
            if let Some(p) = self.periodic_ns() {
                d = Some((now / p + 1) * p);
            }
        }
        if b & (B_UIE | B_AIE) != 0 && self.running() {
            let frac = self.unix_ns(now).rem_euclid(i128::from(NS_PER_SEC)) as u64;
            let next = now + (NS_PER_SEC - frac);
            d = Some(d.map_or(next, |x| x.min(next)));
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Port};
    use crate::irq::IrqLines;

    fn setup() -> (Bus, Clock, IrqLines) {
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let mut bus = Bus::new();
        bus.add_pio_at(
            Box::new(Rtc::new(clock.clone(), lines.line(8))),
            &RTC_WINDOWS,
        )
        .unwrap();
        (bus, clock, lines)
    }

    fn cmos(bus: &mut Bus, i: u8) -> u8 {
        bus.pio_write(Port(0x70), 1, u32::from(i));
        bus.pio_read(Port(0x71), 1) as u8
    }

    #[test]
    fn date_conversion() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-1000, 0, 11_016, 19_000, 20_000, 60_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn reads_host_time_like_mc146818_get_time() {
        let (mut bus, clock, _) = setup();
        // Wait for UIP clear as Linux does, then read BCD registers.
        let mut guard = 0;
        while cmos(&mut bus, 0x0a) & 0x80 != 0 {
            clock.advance_ns(100_000);
            guard += 1;
            assert!(guard < 10);
        }
        let sec = from_bcd(cmos(&mut bus, 0));
        let min = from_bcd(cmos(&mut bus, 2));
        let hour = from_bcd(cmos(&mut bus, 4));
        let day = from_bcd(cmos(&mut bus, 7));
        let mon = from_bcd(cmos(&mut bus, 8));
        let year = from_bcd(cmos(&mut bus, 9));
        let cent = from_bcd(cmos(&mut bus, 0x32));
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let guest = days_from_civil(
            i64::from(cent) * 100 + i64::from(year),
            mon.into(),
            day.into(),
        ) * 86_400
            + i64::from(hour) * 3600
            + i64::from(min) * 60
            + i64::from(sec);
        assert!((host - guest).abs() <= 2, "host {host} guest {guest}");
        assert_eq!(cmos(&mut bus, 0x0d), 0x80);
    }

    #[test]
    fn uip_set_just_before_the_second_changes() {
        let (mut bus, clock, _) = setup();
        // Find the UIP window by stepping virtual time.
        let mut seen = false;
        for _ in 0..20_000 {
            clock.advance_ns(100_000);
            if cmos(&mut bus, 0x0a) & 0x80 != 0 {
                let s = cmos(&mut bus, 0);
                clock.advance_ns(UIP_NS);
                assert_ne!(cmos(&mut bus, 0), s, "seconds change after UIP");
                seen = true;
                break;
            }
        }
        assert!(seen);
    }

    #[test]
    fn set_time_binary_12h_and_read_back() {
        let (mut bus, clock, _) = setup();
        let w = |bus: &mut Bus, i: u32, v: u32| {
            bus.pio_write(Port(0x70), 1, i);
            bus.pio_write(Port(0x71), 1, v);
        };
        w(&mut bus, 0x0b, 0x80 | 0x04); // SET, binary, 12h
        w(&mut bus, 0, 58);
        w(&mut bus, 2, 59);
        w(&mut bus, 4, 0x80 | 11); // 11 PM
        w(&mut bus, 7, 31);
        w(&mut bus, 8, 12);
        w(&mut bus, 9, 99);
        w(&mut bus, 0x32, 20);
        w(&mut bus, 0x0b, 0x04);
        clock.advance_ns(3 * NS_PER_SEC);
        assert_eq!(cmos(&mut bus, 9), 0);
        assert_eq!(cmos(&mut bus, 0x32), 21);
        assert_eq!(cmos(&mut bus, 8), 1);
        assert_eq!(cmos(&mut bus, 7), 1);
        assert_eq!(cmos(&mut bus, 4), 12, "12 AM");
        assert_eq!(cmos(&mut bus, 0), 1);
        assert_eq!(cmos(&mut bus, 6), 6, "2100-01-01 is a Friday (1 = Sunday)");
    }

    #[test]
    fn periodic_interrupt_on_irq8_cleared_by_reading_c() {
        let (mut bus, clock, lines) = setup();
        bus.pio_write(Port(0x70), 1, 0x8b); // NMI off, reg B
        let b = bus.pio_read(Port(0x71), 1);
        bus.pio_write(Port(0x71), 1, b | 0x40);
        let d = bus.next_deadline().unwrap();
        assert_eq!(d, 976_562); // 1024 Hz
        clock.set_ns(d);
        bus.tick(d);
        assert_ne!(lines.levels() & (1 << 8), 0);
        assert_eq!(cmos(&mut bus, 0x0c) & 0xc0, 0xc0);
        assert_eq!(lines.levels() & (1 << 8), 0);
        assert_eq!(cmos(&mut bus, 0x0c), 0);
    }

    #[test]
    fn memory_size_bytes() {
        let clock = Clock::manual();
        let mut rtc = Rtc::new(clock, IrqLine::disconnected());
        rtc.set_memory_layout(3 << 30, 1 << 30);
        let w = |a: u8| u16::from(rtc.cmos(a)) | u16::from(rtc.cmos(a + 1)) << 8;
        assert_eq!(w(0x15), 640);
        assert_eq!(w(0x17), 0xffff);
        assert_eq!(w(0x30), 0xffff);
        assert_eq!(w(0x34), 48_896, "(3 GiB - 16 MiB) / 64 KiB");
        assert_eq!(rtc.cmos(0x5c), 0x40);
        let json = serde_json::to_string(&rtc).unwrap();
        let r2: Rtc = serde_json::from_str(&json).unwrap();
        assert_eq!(r2.cmos(0x5c), 0x40);
    }
}
