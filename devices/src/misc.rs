//! Small legacy ports: system control port A (0x92), the POST diagnostic port (0x80) and the
//! QEMU-compatible `isa-debug-exit` device (0xF4).

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::events::{EventSender, MachineEvent};
use crate::i8042::A20Gate;

/// System control port A (IBM PS/2 "Fast A20 and reset", port 0x92).
pub const PORT92: u16 = 0x92;
/// POST code port.
pub const POST_PORT: u16 = 0x80;
/// isa-debug-exit port (QEMU default iobase 0xF4, size 1).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Port 0x92: bit 1 = A20 enable, bit 0 = fast reset (a 0-to-1 write resets the CPU).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SystemControlA {
    value: u8,
    #[serde(skip)]
    a20: A20Gate,
    #[serde(skip)]
    events: EventSender,
}

impl SystemControlA {
    /// Port 0x92 controlling `a20` and reporting resets to `events`.
    pub fn new(a20: A20Gate, events: EventSender) -> Self {
        Self {
            value: 0,
            a20,
            events,
        }
    }
}

impl PioDevice for SystemControlA {
    fn read(&mut self, _offset: u16, _size: u8) -> u32 {
        u32::from((self.value & !0x03) | if self.a20.enabled() { 0x02 } else { 0 })
    }

    fn write(&mut self, _offset: u16, _size: u8, value: u32) {
        let v = value as u8;
        self.a20.set(v & 0x02 != 0);
        if v & 0x01 != 0 && self.value & 0x01 == 0 {
            self.events.send(MachineEvent::Reset);
        }
        self.value = v;
    }
}

/// POST diagnostic port: writes are logged at trace level; reads return the last code.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PostPort {
    last: u8,
}

impl PioDevice for PostPort {
    fn read(&mut self, _offset: u16, _size: u8) -> u32 {
        u32::from(self.last)
    }

    fn write(&mut self, _offset: u16, _size: u8, value: u32) {
        self.last = value as u8;
        log::trace!(target: "devices::post", "POST code {:#04x}", self.last);
    }
}

/// isa-debug-exit: writing `v` requests [`MachineEvent::Exit`] with status `(v << 1) | 1`,
/// as QEMU's device does (so a guest can never exit with status 0).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DebugExit {
    #[serde(skip)]
    events: EventSender,
}

impl DebugExit {
    /// The device reporting to `events`.
    pub fn new(events: EventSender) -> Self {
        Self { events }
    }
}

impl PioDevice for DebugExit {
    fn read(&mut self, _offset: u16, size: u8) -> u32 {
        crate::bus::all_ones(size)
    }

    fn write(&mut self, _offset: u16, _size: u8, value: u32) {
        self.events
            .send(MachineEvent::Exit(value.wrapping_shl(1) | 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Port};
    use crate::events::event_channel;

    #[test]
    fn debug_exit_and_port92_and_post() {
        let (tx, rx) = event_channel();
        let a20 = A20Gate::new(false);
        let mut bus = Bus::new();
        bus.add_pio_at(
            Box::new(DebugExit::new(tx.clone())),
            &[(DEBUG_EXIT_PORT, 1, 0)],
        )
        .unwrap();
        bus.add_pio_at(
            Box::new(SystemControlA::new(a20.clone(), tx)),
            &[(PORT92, 1, 0)],
        )
        .unwrap();
        bus.add_pio_at(Box::new(PostPort::default()), &[(POST_PORT, 1, 0)])
            .unwrap();
        bus.pio_write(Port(0xf4), 1, 0x10);
        assert_eq!(rx.poll(), Some(MachineEvent::Exit(0x21)));
        bus.pio_write(Port(0x92), 1, 0x02);
        assert!(a20.enabled());
        assert_eq!(bus.pio_read(Port(0x92), 1), 0x02);
        assert_eq!(rx.poll(), None);
        bus.pio_write(Port(0x92), 1, 0x03);
        assert_eq!(rx.poll(), Some(MachineEvent::Reset));
        bus.pio_write(Port(0x80), 1, 0x42);
        assert_eq!(bus.pio_read(Port(0x80), 1), 0x42);
    }
}
