//! PC devices: port-I/O and MMIO bus, chipset, timers, UARTs, PCI. No CPU knowledge.
//!
//! Wiring overview (see each module for the spec it follows):
//!
//! * [`bus::Bus`] dispatches port I/O through a flat 64 Ki port table and MMIO through sorted
//!   ranges. Devices implement [`bus::PioDevice`] / [`bus::MmioDevice`] and see offsets.
//! * [`irq::IrqLines`] is the shared set of interrupt-request lines (ISA IRQ 0-15 / GSI 0-23).
//!   Devices hold an [`irq::IrqLine`] and raise/lower it; the interrupt controller
//!   ([`pic::PicPair`]) samples the lines when the vCPU polls it at a block boundary.
//! * [`clock::Clock`] is virtual time in nanoseconds since power-on (host monotonic or a manually
//!   advanced instruction-count clock). Timed devices read it and report their next deadline.
//! * [`events::MachineEvent`] carries power-off / reset / exit requests to the machine.

pub mod acpi;
pub mod apic;
pub mod block;
pub mod bus;
pub mod clock;
pub mod events;
pub mod hpet;
pub mod i8042;
pub mod irq;
pub mod misc;
pub mod net;
pub mod pc;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod scsi;
pub mod uart;
pub mod virtio;

pub use bus::{Bus, BusError, DeviceId, MmioDevice, PioDevice, Port};
pub use clock::Clock;
pub use events::{EventReceiver, EventSender, MachineEvent};
pub use irq::{IrqLine, IrqLines};
