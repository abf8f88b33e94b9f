//! Intel 8042 keyboard controller as on the PC/AT, with a PS/2 keyboard and mouse behind it
//! (IBM PC/AT Technical Reference, "Keyboard Controller"; IBM PS/2 Hardware Interface Technical
//! Reference, "Keyboard/Auxiliary Device Controller"). Ports: 0x60 data, 0x64 status/command.
//! IRQ1 for keyboard output, IRQ12 for auxiliary (mouse) output.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::events::{EventSender, MachineEvent};
use crate::irq::IrqLine;

/// Port windows `(base, len, device offset)`: 0x60 -> offset 0, 0x64 -> offset 4.
pub const I8042_WINDOWS: [(u16, u16, u16); 2] = [(0x60, 1, 0), (0x64, 1, 4)];
/// ISA IRQ of the keyboard.
pub const KBD_IRQ: u8 = 1;
/// ISA IRQ of the auxiliary (mouse) port.
pub const AUX_IRQ: u8 = 12;

const ST_OBF: u8 = 0x01;
const ST_SYS: u8 = 0x04;
const ST_CMD: u8 = 0x08;
const ST_UNLOCKED: u8 = 0x10;
const ST_AUX_OBF: u8 = 0x20;

const CB_KBD_INT: u8 = 0x01;
const CB_AUX_INT: u8 = 0x02;
const CB_SYS: u8 = 0x04;
const CB_KBD_DISABLE: u8 = 0x10;
const CB_AUX_DISABLE: u8 = 0x20;
const CB_XLATE: u8 = 0x40;

/// The state of the A20 address line, shared by the 8042 output port and port 0x92.
#[derive(Debug, Clone, Default)]
pub struct A20Gate(Arc<AtomicBool>);

impl A20Gate {
    /// A20 starts enabled, as firmware that hands over to Linux leaves it.
    pub fn new(enabled: bool) -> Self {
        Self(Arc::new(AtomicBool::new(enabled)))
    }
    /// Whether address bit 20 passes through (the MMU masks it when false).
    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    /// Set the gate.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}

/// Which controller command is waiting for a data byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Pending {
    None,
    CommandByte,
    OutputPort,
    KbdOutput,
    AuxOutput,
    AuxWrite,
}

/// The controller plus attached keyboard and mouse.
#[derive(Debug, Serialize, Deserialize)]
pub struct I8042 {
    command_byte: u8,
    status: u8,
    pending: Pending,
    /// Output buffer contents and whether it came from the aux device.
    out: VecDeque<(u8, bool)>,
    current: Option<(u8, bool)>,
    output_port: u8,
    kbd_enabled: bool,
    /// Keyboard command awaiting a parameter byte.
    kbd_param_for: Option<u8>,
    scancode_set: u8,
    aux_enabled: bool,
    aux_param_for: Option<u8>,
    aux_present: bool,
    #[serde(skip)]
    kbd_irq: IrqLine,
    #[serde(skip)]
    aux_irq: IrqLine,
    #[serde(skip)]
    events: EventSender,
    #[serde(skip)]
    a20: A20Gate,
}

impl I8042 {
    /// A controller with keyboard and mouse attached.
    pub fn new(kbd_irq: IrqLine, aux_irq: IrqLine, events: EventSender, a20: A20Gate) -> Self {
        Self {
            command_byte: CB_KBD_INT | CB_SYS | CB_XLATE,
            status: ST_UNLOCKED | ST_SYS,
            pending: Pending::None,
            out: VecDeque::new(),
            current: None,
            output_port: 0x03 | if a20.enabled() { 0x02 } else { 0 },
            kbd_enabled: true,
            kbd_param_for: None,
            scancode_set: 2,
            aux_enabled: false,
            aux_param_for: None,
            aux_present: true,
            kbd_irq,
            aux_irq,
            events,
            a20,
        }
    }

    /// Reconnect after a restore.
    pub fn connect(
        &mut self,
        kbd_irq: IrqLine,
        aux_irq: IrqLine,
        events: EventSender,
        a20: A20Gate,
    ) {
        self.kbd_irq = kbd_irq;
        self.aux_irq = aux_irq;
        self.events = events;
        self.a20 = a20;
    }

    /// Host key input: queue scan-code bytes as the guest should read them from port 0x60.
    /// The controller's set-2-to-set-1 translation (command byte bit 6) is not modelled, so the
    /// caller sends set-1 codes when translation is on (the PC default).
    pub fn key_event(&mut self, bytes: &[u8]) {
        if !self.kbd_enabled || self.command_byte & CB_KBD_DISABLE != 0 {
            return;
        }
        for &b in bytes {
            self.out.push_back((b, false));
        }
        self.refill();
    }

    fn push(&mut self, b: u8, aux: bool) {
        self.out.push_back((b, aux));
        self.refill();
    }

    fn refill(&mut self) {
        if self.current.is_none() {
            self.current = self.out.pop_front();
        }
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let (kbd, aux) = match self.current {
            Some((_, false)) => (self.command_byte & CB_KBD_INT != 0, false),
            Some((_, true)) => (false, self.command_byte & CB_AUX_INT != 0),
            None => (false, false),
        };
        self.kbd_irq.set(kbd);
        self.aux_irq.set(aux);
    }

    fn status(&self) -> u8 {
        let mut s = self.status & !(ST_OBF | ST_AUX_OBF);
        match self.current {
            Some((_, false)) => s |= ST_OBF,
            Some((_, true)) => s |= ST_OBF | ST_AUX_OBF,
            None => {}
        }
        s
    }

    fn write_output_port(&mut self, v: u8) {
        self.output_port = v;
        self.a20.set(v & 0x02 != 0);
        if v & 0x01 == 0 {
            self.events.send(MachineEvent::Reset);
        }
    }

    fn command(&mut self, c: u8) {
        log::trace!(target: "devices::i8042", "command {c:#04x}");
        self.status |= ST_CMD;
        match c {
            0x20 => self.push(self.command_byte, false),
            0x60 => self.pending = Pending::CommandByte,
            0xa7 => self.command_byte |= CB_AUX_DISABLE,
            0xa8 => self.command_byte &= !CB_AUX_DISABLE,
            0xa9 => self.push(if self.aux_present { 0x00 } else { 0xff }, false),
            0xaa => {
                self.status |= ST_SYS;
                self.push(0x55, false);
            }
            0xab => self.push(0x00, false),
            0xad => self.command_byte |= CB_KBD_DISABLE,
            0xae => self.command_byte &= !CB_KBD_DISABLE,
            0xc0 => self.push(0x80, false), // input port: keyboard not inhibited
            0xd0 => self.push(self.output_port, false),
            0xd1 => self.pending = Pending::OutputPort,
            0xd2 => self.pending = Pending::KbdOutput,
            0xd3 => self.pending = Pending::AuxOutput,
            0xd4 => self.pending = Pending::AuxWrite,
            0xdd => self.a20.set(false),
            0xdf => self.a20.set(true),
            0xf0..=0xff => {
                // Pulse output port bits 0-3 low where the command's bit is 0: bit 0 = reset.
                if c & 0x01 == 0 {
                    self.events.send(MachineEvent::Reset);
                }
            }
            _ => log::debug!(target: "devices::i8042", "unhandled command {c:#04x}"),
        }
        self.update_irq();
    }

    fn kbd_write(&mut self, v: u8) {
        if let Some(cmd) = self.kbd_param_for.take() {
            if cmd == 0xf0 && v == 0 {
                self.push(0xfa, false);
                self.push(self.scancode_set, false);
            } else {
                if cmd == 0xf0 && (1..=3).contains(&v) {
                    self.scancode_set = v;
                }
                self.push(0xfa, false);
            }
            return;
        }
        match v {
            0xff => {
                self.kbd_enabled = true;
                self.scancode_set = 2;
                self.push(0xfa, false);
                self.push(0xaa, false);
            }
            0xf2 => {
                // MF2 keyboard ID 0xAB 0x83; with command-byte translation (bit 6) on, the
                // controller translates the second byte to 0x41, as Linux atkbd expects.
                self.push(0xfa, false);
                self.push(0xab, false);
                let id = if self.command_byte & CB_XLATE != 0 {
                    0x41
                } else {
                    0x83
                };
                self.push(id, false);
            }
            0xf4 => {
                self.kbd_enabled = true;
                self.push(0xfa, false);
            }
            0xf5 => {
                self.kbd_enabled = false;
                self.push(0xfa, false);
            }
            0xf6 => self.push(0xfa, false),
            0xee => self.push(0xee, false),
            0xed | 0xf3 | 0xf0 => {
                self.kbd_param_for = Some(v);
                self.push(0xfa, false);
            }
            _ => self.push(0xfe, false),
        }
    }

    fn aux_write(&mut self, v: u8) {
        if !self.aux_present {
            return;
        }
        if self.aux_param_for.take().is_some() {
            self.push(0xfa, true);
            return;
        }
        match v {
            0xff => {
                self.aux_enabled = false;
                for b in [0xfa, 0xaa, 0x00] {
                    self.push(b, true);
                }
            }
            0xf2 => {
                self.push(0xfa, true);
                self.push(0x00, true);
            }
            0xf4 => {
                self.aux_enabled = true;
                self.push(0xfa, true);
            }
            0xf5 => {
                self.aux_enabled = false;
                self.push(0xfa, true);
            }
            0xe9 => {
                for b in [0xfa, 0x00, 0x02, 0x64] {
                    self.push(b, true);
                }
            }
            0xeb => {
                for b in [0xfa, 0x08, 0x00, 0x00] {
                    self.push(b, true);
                }
            }
            0xf3 | 0xe8 => {
                self.aux_param_for = Some(v);
                self.push(0xfa, true);
            }
            0xe6 | 0xe7 | 0xea | 0xf0 | 0xf6 => self.push(0xfa, true),
            _ => self.push(0xfe, true),
        }
    }

    fn data(&mut self, v: u8) {
        self.status &= !ST_CMD;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::CommandByte => {
                self.command_byte = v;
                self.status = (self.status & !ST_SYS) | (v & CB_SYS);
                self.update_irq();
            }
            Pending::OutputPort => self.write_output_port(v),
            Pending::KbdOutput => self.push(v, false),
            Pending::AuxOutput => self.push(v, true),
            Pending::AuxWrite => self.aux_write(v),
            Pending::None => self.kbd_write(v),
        }
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        u32::from(match offset {
            0 => {
                let v = match self.current.take() {
                    Some((b, _)) => b,
                    None => 0,
                };
                self.refill();
                v
            }
            4 => self.status(),
            _ => 0xff,
        })
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) {
        match offset {
            0 => self.data(value as u8),
            4 => self.command(value as u8),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Port};
    use crate::events::event_channel;
    use crate::irq::IrqLines;

    fn setup() -> (Bus, IrqLines, crate::events::EventReceiver, A20Gate) {
        let lines = IrqLines::new();
        let (tx, rx) = event_channel();
        let a20 = A20Gate::new(true);
        let mut bus = Bus::new();
        bus.add_pio_at(
            Box::new(I8042::new(lines.line(1), lines.line(12), tx, a20.clone())),
            &I8042_WINDOWS,
        )
        .unwrap();
        (bus, lines, rx, a20)
    }

    fn cmd(bus: &mut Bus, c: u8) -> Option<u8> {
        bus.pio_write(Port(0x64), 1, c.into());
        (bus.pio_read(Port(0x64), 1) & 1 != 0).then(|| bus.pio_read(Port(0x60), 1) as u8)
    }

    #[test]
    fn linux_i8042_probe_sequence() {
        let (mut bus, lines, _, _) = setup();
        assert_eq!(cmd(&mut bus, 0xaa), Some(0x55));
        let ctr = cmd(&mut bus, 0x20).unwrap();
        assert_eq!(ctr & CB_KBD_INT, CB_KBD_INT);
        // Write the command byte with both interrupts enabled.
        bus.pio_write(Port(0x64), 1, 0x60);
        bus.pio_write(Port(0x60), 1, u32::from(ctr | CB_AUX_INT));
        assert_eq!(cmd(&mut bus, 0x20), Some(ctr | CB_AUX_INT));
        // AUX loopback (0xD3) comes back on the aux channel with IRQ12.
        bus.pio_write(Port(0x64), 1, 0xd3);
        bus.pio_write(Port(0x60), 1, 0x5a);
        assert_eq!(bus.pio_read(Port(0x64), 1) & 0x21, 0x21);
        assert_ne!(lines.levels() & (1 << 12), 0);
        assert_eq!(bus.pio_read(Port(0x60), 1), 0x5a);
        assert_eq!(lines.levels() & (1 << 12), 0);
        // 0xA7/0xA8 toggle the aux-disable bit of the command byte.
        cmd(&mut bus, 0xa7);
        assert_ne!(cmd(&mut bus, 0x20).unwrap() & CB_AUX_DISABLE, 0);
        cmd(&mut bus, 0xa8);
        assert_eq!(cmd(&mut bus, 0x20).unwrap() & CB_AUX_DISABLE, 0);
        assert_eq!(cmd(&mut bus, 0xa9), Some(0x00));
        assert_eq!(cmd(&mut bus, 0xab), Some(0x00));
    }

    #[test]
    fn keyboard_reset_and_identify() {
        let (mut bus, lines, _, _) = setup();
        bus.pio_write(Port(0x60), 1, 0xff);
        assert_ne!(lines.levels() & 2, 0, "IRQ1 with output buffer full");
        assert_eq!(bus.pio_read(Port(0x60), 1), 0xfa);
        assert_eq!(bus.pio_read(Port(0x60), 1), 0xaa);
        assert_eq!(lines.levels() & 2, 0);
        bus.pio_write(Port(0x60), 1, 0xf2);
        let id: Vec<u32> = (0..3).map(|_| bus.pio_read(Port(0x60), 1)).collect();
        assert_eq!(id, [0xfa, 0xab, 0x41], "translated ID");
        bus.pio_write(Port(0x64), 1, 0x60);
        bus.pio_write(Port(0x60), 1, 0x01);
        bus.pio_write(Port(0x60), 1, 0xf2);
        let id: Vec<u32> = (0..3).map(|_| bus.pio_read(Port(0x60), 1)).collect();
        assert_eq!(id, [0xfa, 0xab, 0x83]);
        bus.pio_write(Port(0x60), 1, 0xf5);
        assert_eq!(bus.pio_read(Port(0x60), 1), 0xfa);
        bus.pio_write(Port(0x64), 1, 0xd4);
        bus.pio_write(Port(0x60), 1, 0xf2);
        assert_eq!(bus.pio_read(Port(0x64), 1) & 0x20, 0x20);
        assert_eq!(bus.pio_read(Port(0x60), 1), 0xfa);
        assert_eq!(bus.pio_read(Port(0x60), 1), 0x00);
    }

    #[test]
    fn reset_pulse_and_a20_via_output_port() {
        let (mut bus, _, rx, a20) = setup();
        bus.pio_write(Port(0x64), 1, 0xd1);
        bus.pio_write(Port(0x60), 1, 0x01);
        assert!(!a20.enabled());
        bus.pio_write(Port(0x64), 1, 0xd1);
        bus.pio_write(Port(0x60), 1, 0x03);
        assert!(a20.enabled());
        assert_eq!(rx.poll(), None);
        bus.pio_write(Port(0x64), 1, 0xfe);
        assert_eq!(rx.poll(), Some(MachineEvent::Reset));
    }
}
