//! Assembly of the legacy PC chipset on a [`Bus`] with the standard ports and ISA IRQs
//! (IBM PC/AT Technical Reference I/O map; PIIX3/PIIX4 layout for ELCR, reset control and
//! ACPI PM).
//!
//! | device            | ports                    | IRQ |
//! |-------------------|--------------------------|-----|
//! | PIC pair + ELCR   | 0x20-21, 0xA0-A1, 0x4D0-1 | -   |
//! | PIT + port B      | 0x40-43, 0x61            | 0   |
//! | i8042             | 0x60, 0x64               | 1, 12 |
//! | RTC/CMOS          | 0x70-71                  | 8   |
//! | POST              | 0x80                     | -   |
//! | port A (A20/reset)| 0x92                     | -   |
//! | isa-debug-exit    | 0xF4                     | -   |
//! | COM1..COM4        | 0x3F8, 0x2F8, 0x3E8, 0x2E8 | 4, 3, 4, 3 |
//! | ACPI PM           | 0x600-60B, 0x620-623     | 9 (SCI) |
//! | PCI conf #1 + RC  | 0xCF8-CFF                | -   |

use crate::acpi::{AcpiPm, ACPI_PM_WINDOWS, SCI_IRQ};
use crate::bus::{Bus, BusError, DeviceId};
use crate::clock::Clock;
use crate::events::EventSender;
use crate::i8042::{A20Gate, AUX_IRQ, I8042, I8042_WINDOWS, KBD_IRQ};
use crate::irq::IrqLines;
use crate::misc::{DebugExit, PostPort, SystemControlA, DEBUG_EXIT_PORT, PORT92, POST_PORT};
use crate::pci::{PciRoot, PCI_WINDOWS};
use crate::pic::{PicPair, PIC_WINDOWS};
use crate::pit::{Pit, PIT_IRQ, PIT_WINDOWS};
use crate::rtc::{Rtc, RTC_IRQ, RTC_WINDOWS};
use crate::uart::{SerialBackend, Uart, COM_PORTS, UART_PORT_LEN};

/// Ids of the devices the machine needs to reach after assembly.
#[derive(Debug, Clone)]
pub struct PcDevices {
    /// The PIC pair: poll with `bus.pio_device_mut::<PicPair>(pic)`.
    pub pic: DeviceId,
    /// The PIT.
    pub pit: DeviceId,
    /// The RTC (set memory sizes with `Rtc::set_memory_layout`).
    pub rtc: DeviceId,
    /// The keyboard controller (host key input).
    pub i8042: DeviceId,
    /// UARTs in COM order (only those given a back-end).
    pub uarts: Vec<DeviceId>,
    /// ACPI PM block (power button).
    pub acpi: DeviceId,
    /// PCI host interface (plug functions in with `PciRoot::insert`).
    pub pci: DeviceId,
    /// The A20 gate shared by the i8042 and port 0x92 (the MMU masks bit 20 when off).
    pub a20: A20Gate,
}

/// Create the legacy devices on `bus`. `serial` holds back-ends for COM1, COM2, ... (at most
/// four). All devices read virtual time from `clock`, raise `lines` and report to `events`.
pub fn build_pc(
    bus: &mut Bus,
    clock: &Clock,
    lines: &IrqLines,
    events: &EventSender,
    serial: Vec<Box<dyn SerialBackend>>,
) -> Result<PcDevices, BusError> {
    let a20 = A20Gate::new(true);
    let pic = bus.add_pio_at(Box::new(PicPair::new(lines.clone())), &PIC_WINDOWS)?;
    let pit = bus.add_pio_at(
        Box::new(Pit::new(clock.clone(), lines.line(PIT_IRQ))),
        &PIT_WINDOWS,
    )?;
    let i8042 = bus.add_pio_at(
        Box::new(I8042::new(
            lines.line(KBD_IRQ),
            lines.line(AUX_IRQ),
            events.clone(),
            a20.clone(),
        )),
        &I8042_WINDOWS,
    )?;
    let rtc = bus.add_pio_at(
        Box::new(Rtc::new(clock.clone(), lines.line(RTC_IRQ))),
        &RTC_WINDOWS,
    )?;
    bus.add_pio_at(Box::new(PostPort::default()), &[(POST_PORT, 1, 0)])?;
    bus.add_pio_at(
        Box::new(SystemControlA::new(a20.clone(), events.clone())),
        &[(PORT92, 1, 0)],
    )?;
    bus.add_pio_at(
        Box::new(DebugExit::new(events.clone())),
        &[(DEBUG_EXIT_PORT, 1, 0)],
    )?;
    let mut uarts = Vec::new();
    for (backend, &(base, irq)) in serial.into_iter().zip(COM_PORTS.iter()) {
        uarts.push(bus.add_pio_at(
            Box::new(Uart::new(lines.line(irq), backend)),
            &[(base, UART_PORT_LEN, 0)],
        )?);
    }
    let acpi = bus.add_pio_at(
        Box::new(AcpiPm::new(
            clock.clone(),
            lines.line(SCI_IRQ),
            events.clone(),
        )),
        &ACPI_PM_WINDOWS,
    )?;
    let mut root = PciRoot::new(events.clone());
    root.connect_irqs(lines);
    let pci = bus.add_pio_at(Box::new(root), &PCI_WINDOWS)?;
    Ok(PcDevices {
        pic,
        pit,
        rtc,
        i8042,
        uarts,
        acpi,
        pci,
        a20,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Port;
    use crate::events::event_channel;
    use crate::uart::BufferBackend;

    #[test]
    fn timer_interrupt_end_to_end() {
        let mut bus = Bus::new();
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let (tx, _rx) = event_channel();
        let com1 = BufferBackend::default();
        let pc = build_pc(&mut bus, &clock, &lines, &tx, vec![Box::new(com1.clone())]).unwrap();
        // Guest: PIC init (vectors 0x20/0x28), unmask IRQ0, PIT 100 Hz periodic.
        for (p, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x28),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xfe),
            (0x43, 0x34),
            (0x40, 0x9c),
            (0x40, 0x2e),
        ] {
            bus.pio_write(Port(p), 1, v);
        }
        // vCPU loop: HLT sleeps until the next deadline, ticks devices, polls the PIC.
        let d = bus.next_deadline().unwrap();
        clock.set_ns(d);
        bus.tick(clock.now_ns());
        let pic = bus.pio_device_mut::<PicPair>(pc.pic).unwrap();
        assert_eq!(pic.pending_vector(), Some(0x20));
        assert_eq!(pic.acknowledge(), 0x20);
        bus.pio_write(Port(0x20), 1, 0x20);
        bus.pio_write(Port(0x3f8), 1, u32::from(b'!'));
        assert_eq!(&*com1.output.lock().unwrap(), b"!");
        assert_eq!(bus.pio_read(Port(0xcfc), 4), 0xffff_ffff);
        assert_eq!(bus.pio_read(Port(0x2f8), 1), 0xff, "COM2 not present");
        assert!(pc.a20.enabled());
    }

    #[test]
    fn random_guest_port_traffic_never_panics() {
        let mut bus = Bus::new();
        let clock = Clock::manual();
        let lines = IrqLines::new();
        let (tx, _rx) = event_channel();
        let pc = build_pc(
            &mut bus,
            &clock,
            &lines,
            &tx,
            vec![Box::new(BufferBackend::default())],
        )
        .unwrap();
        let ports: Vec<u16> = (0..=0xffffu16)
            .filter(|&p| bus.port_claimed(Port(p)))
            .collect();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let r = next();
            let port = ports[(r as usize >> 8) % ports.len()];
            let size = [1u8, 2, 4][(r % 3) as usize];
            if r & 0x10 != 0 {
                bus.pio_write(Port(port), size, (r >> 32) as u32);
            } else {
                bus.pio_read(Port(port), size);
            }
            if r & 0xf00 == 0 {
                clock.advance_ns(r >> 40);
                bus.tick(clock.now_ns());
                let pic = bus.pio_device_mut::<PicPair>(pc.pic).unwrap();
                if pic.pending_vector().is_some() {
                    pic.acknowledge();
                }
            }
        }
    }
}
