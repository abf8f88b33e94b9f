//! Intel 8254 programmable interval timer (Intel 8254 datasheet, order no. 231164), clocked
//! at 1.193182 MHz from the virtual [`Clock`], plus the PC/AT system control
//! port B (0x61) that gates channel 2 and reads back its output.
//!
//! Modes 0-5, counter latch, read-back (status and count), LSB/MSB/LSB-then-MSB access and BCD
//! counting are implemented. Channel 0 output drives ISA IRQ0; channel 1 (DRAM refresh) is
//! unconnected; channel 2 gate is port 0x61 bit 0 and its output is port 0x61 bit 5.
//! Device offsets: 0-3 = ports 0x40-0x43, 4 = port 0x61 (see [`PIT_WINDOWS`]).

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::clock::{ns_to_ticks, ticks_to_ns, Clock};
use crate::irq::IrqLine;

/// Input clock of the PC's 8254, Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Port windows `(base, len, device offset)` to map on the bus.
pub const PIT_WINDOWS: [(u16, u16, u16); 2] = [(0x40, 4, 0), (0x61, 1, 4)];
/// ISA IRQ driven by channel 0.
pub const PIT_IRQ: u8 = 0;

/// Refresh-request toggle period of port 0x61 bit 4 (15.085 µs on the PC/AT).
const REFRESH_NS: u64 = 15_085;

/// One counter of the 8254.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Channel {
    mode: u8,
    /// RW bits of the control word: 1 LSB, 2 MSB, 3 LSB then MSB.
    access: u8,
    bcd: bool,
    /// Count register as written (binary value, 1..=65536 or 1..=10000 in BCD).
    reload: u32,
    /// Counter value at `start_ns` (or the held value while not counting).
    base: u32,
    start_ns: u64,
    counting: bool,
    /// Mode 1/5: count written, waiting for a gate trigger (or triggered).
    armed: bool,
    /// Output level while not counting.
    out_held: bool,
    gate: bool,
    null_count: bool,
    write_msb_next: bool,
    write_lsb: u8,
    read_msb_next: bool,
    latched_count: Option<u16>,
    latched_msb_next: bool,
    latched_status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Self {
            mode: 0,
            access: 3,
            bcd: false,
            reload: 0x10000,
            base: 0x10000,
            start_ns: 0,
            counting: false,
            armed: false,
            out_held: false,
            gate,
            null_count: true,
            write_msb_next: false,
            write_lsb: 0,
            read_msb_next: false,
            latched_count: None,
            latched_msb_next: false,
            latched_status: None,
        }
    }

    fn modulus(&self) -> u32 {
        if self.bcd {
            10_000
        } else {
            0x10000
        }
    }

    fn elapsed(&self, now_ns: u64) -> u64 {
        ns_to_ticks(now_ns.saturating_sub(self.start_ns), PIT_HZ)
    }

    /// Binary counter value at `now_ns`.
    fn value(&self, now_ns: u64) -> u32 {
        let m = u64::from(self.modulus());
        if !self.counting {
            return (u64::from(self.base) % m) as u32;
        }
        let e = self.elapsed(now_ns);
        let reload = u64::from(self.reload.max(1));
        let v = match self.mode {
            2 | 6 => reload - e % reload,
            3 | 7 => {
                // Decrements by two, twice per period (square wave).
                let half = reload.div_ceil(2);
                let p = e % reload;
                (reload - 2 * (p % half)) & !1
            }
            _ => (u64::from(self.base) + m * (e / m + 1) - e % m) % m,
        };
        (v % m) as u32
    }

    /// Output level at `now_ns` (datasheet waveforms, one tick per CLK).
    fn output(&self, now_ns: u64) -> bool {
        if !self.counting {
            return self.out_held;
        }
        let e = self.elapsed(now_ns);
        let base = u64::from(self.base);
        let reload = u64::from(self.reload.max(1));
        match self.mode {
            0 => e >= base,
            1 => e >= base,
            2 | 6 => e % reload != reload - 1 || reload == 1,
            3 | 7 => e % reload < reload.div_ceil(2),
            _ => e != base, // 4, 5: strobe
        }
    }

    fn decode(&self, raw: u16) -> u32 {
        let v = if self.bcd {
            let d = |s: u16| u32::from((raw >> s) & 0xf).min(9);
            d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)
        } else {
            u32::from(raw)
        };
        if v == 0 {
            self.modulus()
        } else {
            v
        }
    }

    fn encode(&self, v: u32) -> u16 {
        let v = v % self.modulus();
        if self.bcd {
            let v = v as u16;
            (v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)
        } else {
            v as u16
        }
    }

    fn status(&self, now_ns: u64) -> u8 {
        (u8::from(self.output(now_ns)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.access << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, now_ns: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.encode(self.value(now_ns)));
            self.latched_msb_next = false;
        }
    }

    fn set_control(&mut self, cw: u8) {
        self.access = (cw >> 4) & 3;
        self.mode = (cw >> 1) & 7;
        if self.mode > 5 {
            self.mode -= 4; // 6 and 7 alias modes 2 and 3
        }
        self.bcd = cw & 1 != 0;
        self.counting = false;
        self.armed = false;
        self.out_held = self.mode != 0;
        self.null_count = true;
        self.write_msb_next = false;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
    }

    fn load(&mut self, raw: u16, now_ns: u64) {
        self.reload = self.decode(raw);
        self.null_count = false;
        match self.mode {
            1 | 5 => {
                self.armed = true;
                if self.counting {
                    // Takes effect at the next trigger.
                    return;
                }
                self.out_held = true;
            }
            _ => {
                self.base = self.reload;
                self.start_ns = now_ns;
                self.counting = self.gate;
                self.out_held = self.mode != 0;
            }
        }
    }

    fn write_count(&mut self, v: u8, now_ns: u64) {
        match self.access {
            1 => self.load(u16::from(v), now_ns),
            2 => self.load(u16::from(v) << 8, now_ns),
            _ => {
                if self.write_msb_next {
                    self.write_msb_next = false;
                    self.load(u16::from(v) << 8 | u16::from(self.write_lsb), now_ns);
                } else {
                    self.write_msb_next = true;
                    self.write_lsb = v;
                    if self.mode == 0 && self.counting {
                        // Mode 0: writing the first byte stops the count (datasheet).
                        self.base = self.value(now_ns);
                        self.counting = false;
                        self.out_held = false;
                    }
                }
            }
        }
    }

    fn read_count(&mut self, now_ns: u64) -> u8 {
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        let (v, msb) = match self.latched_count {
            Some(l) => {
                let msb = match self.access {
                    2 => true,
                    3 => self.latched_msb_next,
                    _ => false,
                };
                if self.access == 3 && !self.latched_msb_next {
                    self.latched_msb_next = true;
                } else {
                    self.latched_count = None;
                }
                (l, msb)
            }
            None => {
                let v = self.encode(self.value(now_ns));
                let msb = match self.access {
                    2 => true,
                    3 => {
                        let m = self.read_msb_next;
                        self.read_msb_next = !m;
                        m
                    }
                    _ => false,
                };
                (v, msb)
            }
        };
        if msb {
            (v >> 8) as u8
        } else {
            v as u8
        }
    }

    fn set_gate(&mut self, gate: bool, now_ns: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        let rising = gate;
        match self.mode {
            0 | 4 => {
                if rising {
                    if !self.null_count {
                        self.start_ns = now_ns;
                        self.counting = true;
                    }
                } else if self.counting {
                    self.out_held = self.output(now_ns);
                    self.base = self.value(now_ns);
                    self.counting = false;
                }
            }
            1 | 5 => {
                if rising && self.armed {
                    self.base = self.reload;
                    self.start_ns = now_ns;
                    self.counting = true;
                }
            }
            _ => {
                if rising {
                    if !self.null_count {
                        self.base = self.reload;
                        self.start_ns = now_ns;
                        self.counting = true;
                    }
                } else if self.counting {
                    self.base = self.value(now_ns);
                    self.counting = false;
                    self.out_held = true;
                }
            }
        }
    }

    /// Whether an output rising edge falls in `(from_ns, to_ns]`, and the time of the next one
    /// after `to_ns`.
    fn edges(&self, from_ns: u64, to_ns: u64) -> (bool, Option<u64>) {
        if !self.counting {
            return (false, None);
        }
        let at = |ticks: u64| self.start_ns.saturating_add(ticks_to_ns(ticks, PIT_HZ));
        let e0 = if from_ns < self.start_ns {
            None
        } else {
            Some(self.elapsed(from_ns))
        };
        let e1 = self.elapsed(to_ns);
        let reload = u64::from(self.reload.max(1));
        match self.mode {
            2 | 3 => {
                let k0 = e0.map_or(0, |e| e / reload);
                let fired = to_ns >= self.start_ns && e1 / reload > k0;
                (fired, Some(at((e1 / reload + 1) * reload)))
            }
            0 | 1 | 4 | 5 => {
                let target = u64::from(self.base) + u64::from(matches!(self.mode, 4 | 5));
                let before = e0.map_or(true, |e| e < target);
                let fired = before && to_ns >= self.start_ns && e1 >= target;
                let next = (e1 < target).then(|| at(target));
                (fired, next)
            }
            _ => (false, None),
        }
    }
}

/// The 8254 with its three channels and port 0x61.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pit {
    /// Counters 0-2.
    pub channels: [Channel; 3],
    /// Port 0x61 bits 0-3 as last written.
    port61: u8,
    last_tick_ns: u64,
    #[serde(skip)]
    irq: IrqLine,
    #[serde(skip)]
    clock: Clock,
}

impl Pit {
    /// A PIT in power-on state reading time from `clock`, channel 0 driving `irq0`.
    pub fn new(clock: Clock, irq0: IrqLine) -> Self {
        Self {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port61: 0,
            last_tick_ns: 0,
            irq: irq0,
            clock,
        }
    }

    /// Reconnect after a restore.
    pub fn connect(&mut self, clock: Clock, irq0: IrqLine) {
        self.clock = clock;
        self.irq = irq0;
    }

    fn control(&mut self, cw: u8, now: u64) {
        let sel = cw >> 6;
        if sel == 3 {
            // Read-back command: D5 = !COUNT, D4 = !STATUS, D3-D1 select counters 2-0.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if cw & (2 << i) == 0 {
                    continue;
                }
                if cw & 0x10 == 0 && ch.latched_status.is_none() {
                    ch.latched_status = Some(ch.status(now));
                }
                if cw & 0x20 == 0 {
                    ch.latch_count(now);
                }
            }
            return;
        }
        let ch = &mut self.channels[usize::from(sel)];
        if cw & 0x30 == 0 {
            ch.latch_count(now);
        } else {
            ch.set_control(cw);
            if sel == 0 {
                // IRQ0 follows the output level only in mode 0 (low after a control word);
                // periodic and strobe modes deliver pulses from `tick`, so keep the line low.
                self.irq.lower();
            }
        }
    }
}

impl PioDevice for Pit {
    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        let now = self.clock.now_ns();
        u32::from(match offset {
            0..=2 => self.channels[usize::from(offset)].read_count(now),
            3 => 0xff, // the control word register is write-only
            4 => {
                let refresh = ((now / REFRESH_NS) & 1) as u8;
                (self.port61 & 0x0f)
                    | (refresh << 4)
                    | (u8::from(self.channels[2].output(now)) << 5)
            }
            _ => 0xff,
        })
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) {
        let now = self.clock.now_ns();
        let v = value as u8;
        log::trace!(target: "devices::pit", "write offset {offset} value {v:#04x}");
        match offset {
            0..=2 => {
                let i = usize::from(offset);
                self.channels[i].write_count(v, now);
                if i == 0 {
                    let ch = &self.channels[0];
                    if matches!(ch.mode, 0 | 1) {
                        self.irq.set(ch.output(now));
                    }
                    self.last_tick_ns = now;
                }
            }
            3 => self.control(v, now),
            4 => {
                self.port61 = v & 0x0f;
                self.channels[2].set_gate(v & 1 != 0, now);
            }
            _ => {}
        }
    }

    fn tick(&mut self, now_ns: u64) {
        if now_ns <= self.last_tick_ns {
            return;
        }
        let ch = &self.channels[0];
        let (fired, _) = ch.edges(self.last_tick_ns, now_ns);
        if fired {
            if ch.mode == 0 || ch.mode == 1 {
                self.irq.raise();
            } else {
                self.irq.pulse();
            }
        }
        self.last_tick_ns = now_ns;
    }

    fn next_deadline(&self) -> Option<u64> {
        self.channels[0]
            .edges(self.last_tick_ns, self.last_tick_ns)
            .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, DeviceId, Port};
    use crate::irq::IrqLines;

    fn setup() -> (Bus, DeviceId, Clock, IrqLines) {
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let mut bus = Bus::new();
        let id = bus
            .add_pio_at(
                Box::new(Pit::new(clock.clone(), lines.line(0))),
                &PIT_WINDOWS,
            )
            .unwrap();
        (bus, id, clock, lines)
    }

    #[test]
    fn channel2_mode0_calibration_via_port61() {
        // Linux pit_calibrate_tsc(): gate on, speaker off, mode 0, count, poll bit 5.
        let (mut bus, _, clock, _) = setup();
        let v = bus.pio_read(Port(0x61), 1);
        bus.pio_write(Port(0x61), 1, (v & !0x02) | 0x01);
        bus.pio_write(Port(0x43), 1, 0xb0);
        let latch = 11932u32; // 10 ms
        bus.pio_write(Port(0x42), 1, latch & 0xff);
        bus.pio_write(Port(0x42), 1, latch >> 8);
        assert_eq!(bus.pio_read(Port(0x61), 1) & 0x20, 0);
        clock.advance_ns(5_000_000);
        assert_eq!(bus.pio_read(Port(0x61), 1) & 0x20, 0);
        clock.advance_ns(4_990_000);
        assert_eq!(bus.pio_read(Port(0x61), 1) & 0x20, 0);
        clock.advance_ns(20_000);
        assert_eq!(bus.pio_read(Port(0x61), 1) & 0x20, 0x20);
        assert_eq!(bus.pio_read(Port(0x61), 1) & 0x01, 0x01);
    }

    #[test]
    fn quick_pit_calibrate_msb_decrements() {
        let (mut bus, _, clock, _) = setup();
        bus.pio_write(Port(0x61), 1, 0x01);
        bus.pio_write(Port(0x43), 1, 0xb0);
        bus.pio_write(Port(0x42), 1, 0xff);
        bus.pio_write(Port(0x42), 1, 0xff);
        let read = |bus: &mut Bus| {
            let lo = bus.pio_read(Port(0x42), 1);
            let hi = bus.pio_read(Port(0x42), 1);
            hi << 8 | lo
        };
        assert_eq!(read(&mut bus), 0xffff);
        clock.advance_ns(1_000_000); // 1193 ticks
        let v = read(&mut bus);
        assert_eq!(v, 0xffff - 1193);
        // Gate low stops the count.
        bus.pio_write(Port(0x61), 1, 0x00);
        clock.advance_ns(1_000_000);
        assert_eq!(read(&mut bus), v);
    }

    #[test]
    fn latch_and_readback() {
        let (mut bus, _, clock, _) = setup();
        bus.pio_write(Port(0x43), 1, 0x34); // ch0 lohi mode 2
        bus.pio_write(Port(0x40), 1, 0x00);
        bus.pio_write(Port(0x40), 1, 0x10); // 4096
        clock.advance_ns(ticks_to_ns(96, PIT_HZ));
        bus.pio_write(Port(0x43), 1, 0x00); // latch ch0
        clock.advance_ns(1_000_000);
        // 4096 - 96 = 4000 = 0x0fa0, frozen by the latch.
        assert_eq!(bus.pio_read(Port(0x40), 1), 0xa0);
        assert_eq!(bus.pio_read(Port(0x40), 1), 0x0f);
        // Unlatched reads follow the counter again.
        assert_ne!(bus.pio_read(Port(0x40), 1), 0xa0);
    }

    #[test]
    fn readback_status_then_count() {
        let (mut bus, _, _, _) = setup();
        bus.pio_write(Port(0x43), 1, 0x34);
        bus.pio_write(Port(0x40), 1, 0x34);
        bus.pio_write(Port(0x40), 1, 0x12);
        bus.pio_write(Port(0x43), 1, 0xc2); // read-back count+status of ch0
        let status = bus.pio_read(Port(0x40), 1);
        assert_eq!(status & 0x3f, 0x34);
        assert_eq!(status & 0x40, 0, "count loaded");
        assert_eq!(bus.pio_read(Port(0x40), 1), 0x34);
        assert_eq!(bus.pio_read(Port(0x40), 1), 0x12);
    }

    #[test]
    fn mode2_periodic_irq0_and_deadline() {
        let (mut bus, id, clock, lines) = setup();
        bus.pio_write(Port(0x43), 1, 0x34);
        let latch = 1193u32; // ~1 ms
        bus.pio_write(Port(0x40), 1, latch & 0xff);
        bus.pio_write(Port(0x40), 1, latch >> 8);
        lines.take_edges();
        let d = bus.next_deadline().unwrap();
        assert!((999_000..1_001_000).contains(&d), "deadline {d}");
        clock.set_ns(d - 1);
        bus.tick(clock.now_ns());
        assert_eq!(lines.take_edges(), 0);
        clock.set_ns(d);
        bus.tick(clock.now_ns());
        assert_eq!(lines.take_edges(), 1);
        let d2 = bus.next_deadline().unwrap();
        assert!(d2 > d && d2 - d < 1_001_000);
        let _ = bus.pio_device_mut::<Pit>(id).unwrap();
    }

    #[test]
    fn mode4_oneshot_fires_once() {
        let (mut bus, _, clock, lines) = setup();
        bus.pio_write(Port(0x43), 1, 0x38);
        bus.pio_write(Port(0x40), 1, 100);
        bus.pio_write(Port(0x40), 1, 0);
        lines.take_edges();
        clock.advance_ns(200_000);
        bus.tick(clock.now_ns());
        assert_eq!(lines.take_edges(), 1);
        assert_eq!(bus.next_deadline(), None);
        clock.advance_ns(200_000);
        bus.tick(clock.now_ns());
        assert_eq!(lines.take_edges(), 0);
    }

    #[test]
    fn bcd_and_lsb_only_access() {
        let (mut bus, _, _, _) = setup();
        bus.pio_write(Port(0x43), 1, 0x91); // ch2, LSB only, mode 0, BCD
        bus.pio_write(Port(0x42), 1, 0x99);
        assert_eq!(bus.pio_read(Port(0x42), 1), 0x99);
        assert_eq!(bus.pio_read(Port(0x42), 1), 0x99);
    }
}
