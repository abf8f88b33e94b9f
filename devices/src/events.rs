//! Machine-level events raised by devices (power off, reset, debug exit), polled by the machine.

use crossbeam::channel::{unbounded, Receiver, Sender};
use serde::{Deserialize, Serialize};

/// A request from a device to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineEvent {
    /// Power off (ACPI S5 via PM1a_CNT SLP_EN, ACPI 6.5 §4.8.3.2.1 / §16.1.5).
    PowerOff,
    /// Platform reset (i8042 0xFE, port 0x92 bit 0, PIIX reset control 0xCF9).
    Reset,
    /// Exit the emulator with this status (QEMU-compatible isa-debug-exit: `(v << 1) | 1`).
    Exit(u32),
}

/// Device side of the event queue: cheap to clone, never blocks, never fails visibly.
#[derive(Debug, Clone, Default)]
pub struct EventSender {
    tx: Option<Sender<MachineEvent>>,
}

impl EventSender {
    /// A sender that drops every event (for tests or devices restored before wiring).
    pub fn disconnected() -> Self {
        Self { tx: None }
    }

    /// Queue `event` for the machine. Logged; dropped if the machine has gone away.
    pub fn send(&self, event: MachineEvent) {
        log::info!(target: "devices::events", "machine event {event:?}");
        if let Some(tx) = &self.tx {
            // A closed receiver means the machine is shutting down: nothing to do.
            let _ = tx.send(event);
        }
    }
}

/// Machine side of the event queue.
#[derive(Debug)]
pub struct EventReceiver {
    rx: Receiver<MachineEvent>,
}

impl EventReceiver {
    /// Next pending event, if any (non-blocking; poll at block boundaries or after port I/O).
    pub fn poll(&self) -> Option<MachineEvent> {
        self.rx.try_recv().ok()
    }

    /// The underlying channel, for `select!` with other host events.
    pub fn channel(&self) -> &Receiver<MachineEvent> {
        &self.rx
    }
}

/// Create a connected sender/receiver pair.
pub fn event_channel() -> (EventSender, EventReceiver) {
    let (tx, rx) = unbounded();
    (EventSender { tx: Some(tx) }, EventReceiver { rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_delivered_in_order() {
        let (tx, rx) = event_channel();
        tx.clone().send(MachineEvent::Reset);
        tx.send(MachineEvent::Exit(3));
        assert_eq!(rx.poll(), Some(MachineEvent::Reset));
        assert_eq!(rx.poll(), Some(MachineEvent::Exit(3)));
        assert_eq!(rx.poll(), None);
        EventSender::disconnected().send(MachineEvent::PowerOff);
    }
}
