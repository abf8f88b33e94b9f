//! PCI configuration access, mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): CONFIG_ADDRESS at
//! 0xCF8 (dword), CONFIG_DATA at 0xCFC-0xCFF (byte/word/dword), bus 0 only, with an Intel
//! 82441FX (i440FX) host bridge at 00.0 and an 82371SB (PIIX3) PCI-to-ISA bridge at 01.0.
//! Also the PIIX3 reset control register at 0xCF9 (82371SB datasheet §4.1.12, "RC").

use serde::{Deserialize, Serialize};

use crate::bus::{AsAny, PioDevice};
use crate::events::{EventSender, MachineEvent};
use crate::irq::{IrqLine, IrqLines, PIRQ_LINE_BASE};

/// Port windows `(base, len, device offset)`: 0xCF8-0xCFF -> offsets 0-7.
pub const PCI_WINDOWS: [(u16, u16, u16); 1] = [(0xcf8, 8, 0)];
/// Reset control register port (also usable as the ACPI FADT RESET_REG, value 0x06).
pub const RESET_CONTROL_PORT: u16 = 0xcf9;

/// Standard header offsets (PCI Local Bus 3.0 §6.1).
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u8 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u8 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u8 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u8 = 0x06;
    /// Revision ID.
    pub const REVISION: u8 = 0x08;
    /// Class code (prog-if, subclass, base class at 0x09-0x0B).
    pub const CLASS: u8 = 0x09;
    /// Header type (bit 7 = multi-function).
    pub const HEADER_TYPE: u8 = 0x0e;
    /// First base address register.
    pub const BAR0: u8 = 0x10;
    /// Interrupt line (written by software).
    pub const INTERRUPT_LINE: u8 = 0x3c;
    /// Interrupt pin (1 = INTA#).
    pub const INTERRUPT_PIN: u8 = 0x3d;
}

/// A function on the PCI bus, as seen through configuration space.
pub trait PciDevice: AsAny + Send {
    /// Configuration read of `size` (1, 2, 4) bytes at `offset` (0-255, naturally aligned).
    fn config_read(&mut self, offset: u8, size: u8) -> u32;
    /// Configuration write.
    fn config_write(&mut self, offset: u8, size: u8, value: u32);
}

/// Kind of a base address register (PCI Local Bus 3.0 §6.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarKind {
    /// I/O space BAR (bit 0 = 1).
    Io,
    /// 32-bit memory BAR.
    Mem32 {
        /// Prefetchable (bit 3).
        prefetchable: bool,
    },
}

/// A 256-byte configuration space with per-bit write masks, giving BAR sizing for free:
/// writing all ones to a BAR reads back the size mask plus the type bits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PciConfigSpace {
    data: Vec<u8>,
    wmask: Vec<u8>,
}

impl PciConfigSpace {
    /// A type-0 header with the given IDs, class code and header type.
    pub fn new(vendor: u16, device: u16, class: [u8; 3], revision: u8, header_type: u8) -> Self {
        let mut s = Self {
            data: vec![0; 256],
            wmask: vec![0; 256],
        };
        s.set_u16(reg::VENDOR_ID, vendor);
        s.set_u16(reg::DEVICE_ID, device);
        s.data[usize::from(reg::REVISION)] = revision;
        // class = [base class, subclass, prog-if]
        s.data[0x09] = class[2];
        s.data[0x0a] = class[1];
        s.data[0x0b] = class[0];
        s.data[usize::from(reg::HEADER_TYPE)] = header_type;
        // Command: I/O, memory, bus master, parity, SERR, INTx disable are writable.
        s.wmask[0x04] = 0x47;
        s.wmask[0x05] = 0x05;
        s.wmask[usize::from(reg::INTERRUPT_LINE)] = 0xff;
        s
    }

    /// Set a 16-bit field (device set-up, not subject to the write mask).
    pub fn set_u16(&mut self, offset: u8, v: u16) {
        let o = usize::from(offset);
        self.data[o] = v as u8;
        if let Some(b) = self.data.get_mut(o + 1) {
            *b = (v >> 8) as u8;
        }
    }

    /// Set a byte and its write mask.
    pub fn set_byte(&mut self, offset: u8, v: u8, wmask: u8) {
        self.data[usize::from(offset)] = v;
        self.wmask[usize::from(offset)] = wmask;
    }

    /// Declare BAR `index` (0-5) of `size` bytes (a power of two; at least 16 for memory, 4
    /// for I/O).
    pub fn set_bar(&mut self, index: u8, kind: BarKind, size: u32) {
        let off = usize::from(reg::BAR0) + 4 * usize::from(index.min(5));
        let (flags, min) = match kind {
            BarKind::Io => (0x1u32, 4u32),
            BarKind::Mem32 { prefetchable } => (if prefetchable { 0x8 } else { 0 }, 16),
        };
        let size = size.max(min).next_power_of_two();
        let mask = !(size - 1);
        self.data[off..off + 4].copy_from_slice(&flags.to_le_bytes());
        self.wmask[off..off + 4].copy_from_slice(&mask.to_le_bytes());
    }

    /// Current value of BAR `index` with the type bits masked off.
    pub fn bar_address(&self, index: u8) -> u32 {
        let off = usize::from(reg::BAR0) + 4 * usize::from(index.min(5));
        let v = u32::from_le_bytes([
            self.data[off],
            self.data[off + 1],
            self.data[off + 2],
            self.data[off + 3],
        ]);
        if v & 1 != 0 {
            v & !0x3
        } else {
            v & !0xf
        }
    }

    /// Read `size` bytes at `offset` (little-endian; bytes past 255 read as 0xFF).
    pub fn read(&self, offset: u8, size: u8) -> u32 {
        (0..u32::from(size.min(4)))
            .map(|i| {
                let b = self
                    .data
                    .get(usize::from(offset) + i as usize)
                    .copied()
                    .unwrap_or(0xff);
                u32::from(b) << (8 * i)
            })
            .sum()
    }

    /// Write `size` bytes at `offset` through the write mask.
    pub fn write(&mut self, offset: u8, size: u8, value: u32) {
        for i in 0..usize::from(size.min(4)) {
            let o = usize::from(offset) + i;
            if o >= 256 {
                break;
            }
            let b = (value >> (8 * i)) as u8;
            self.data[o] = (self.data[o] & !self.wmask[o]) | (b & self.wmask[o]);
        }
    }
}

/// Intel 82441FX (i440FX) PCI and memory controller, function 0 (host bridge 8086:1237).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct I440fx {
    /// Configuration space.
    pub config: PciConfigSpace,
}

impl Default for I440fx {
    fn default() -> Self {
        let mut config = PciConfigSpace::new(0x8086, 0x1237, [0x06, 0x00, 0x00], 0x02, 0x00);
        // PAM0-PAM6 (0x59-0x5F) and SMRAM (0x72): writable, no effect (no BIOS shadowing).
        for o in 0x59..=0x5f {
            config.set_byte(o, 0, 0xff);
        }
        config.set_byte(0x72, 0x02, 0x78);
        Self { config }
    }
}

impl PciDevice for I440fx {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        self.config.read(offset, size)
    }
    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        self.config.write(offset, size, value);
    }
}

/// Intel 82371SB (PIIX3) function 0: PCI-to-ISA bridge (8086:7000), with the PIRQ route
/// control registers PIRQRC A-D at 0x60-0x63 (82371SB datasheet §4.1.8). Writes to them steer
/// the PIRQ lines of the connected [`IrqLines`] (see [`intx_line`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Piix3 {
    /// Configuration space.
    pub config: PciConfigSpace,
    /// The interrupt lines whose PIRQ routing follows the route registers.
    #[serde(skip)]
    lines: Option<IrqLines>,
}

/// PIIX3 PIRQ (0 = PIRQA# .. 3 = PIRQD#) that INTx pin `pin` (1 = INTA# .. 4 = INTD#, the
/// Interrupt Pin register's encoding) of the device in `slot` drives on the rinx PC: the
/// rotation `(slot - 1 + pin - 1) mod 4` of the i440FX board, so slot 1 INTA# is PIRQA#.
/// The firmware's ACPI `_PRT` describes the same wiring (`firmware::acpi::prt_pirq`).
pub fn pirq_of(slot: u8, pin: u8) -> u8 {
    slot.wrapping_sub(1).wrapping_add(pin.wrapping_sub(1)) & 3
}

/// The interrupt line a PCI device in `slot` asserts for its INTx pin `pin` (1 = INTA# ..
/// 4 = INTD#): its PIRQ, which reaches I/O APIC input `16 + pirq` and, through the PIIX3 route
/// register, an ISA IRQ of the 8259 pair. Every PCI device model takes its INTx line from here.
///
/// Several devices may drive one PIRQ (slots 12 and 16 both reach PIRQD#): the PIRQ is a
/// wired-OR with the device's slot as its source bit ([`IrqLines::source_line`]), so it stays
/// asserted while any of them asserts it. For one PIRQ the slot determines the pin, so slots
/// give distinct sources; the functions of one multi-function slot using the same pin would
/// share one (no rinx device has several functions).
pub fn intx_line(lines: &IrqLines, slot: u8, pin: u8) -> IrqLine {
    lines.source_line(PIRQ_LINE_BASE + pirq_of(slot, pin), slot)
}

/// ISA IRQs the firmware programs into PIRQRC A-D at power-on (as a PC BIOS does before the
/// OS starts; ACPI OSes may reprogram them through the link devices' `_SRS`).
pub const FIRMWARE_PIRQ_ROUTES: [u8; 4] = [10, 10, 11, 11];

/// The Interrupt Line register value firmware writes for (`slot`, `pin`): the ISA IRQ its
/// PIRQ is routed to at power-on.
pub fn firmware_interrupt_line(slot: u8, pin: u8) -> u8 {
    FIRMWARE_PIRQ_ROUTES[usize::from(pirq_of(slot, pin))]
}

impl Default for Piix3 {
    fn default() -> Self {
        // Header type 0x80: multi-function device.
        let mut config = PciConfigSpace::new(0x8086, 0x7000, [0x06, 0x01, 0x00], 0x00, 0x80);
        config.set_u16(reg::COMMAND, 0x0007);
        for o in 0x60..=0x63 {
            config.set_byte(o, 0x80, 0x8f); // routing disabled
        }
        Self {
            config,
            lines: None,
        }
    }
}

impl Piix3 {
    /// ISA IRQ that PIRQ `n` (0 = A .. 3 = D) is routed to, or `None` when disabled.
    pub fn pirq_route(&self, n: u8) -> Option<u8> {
        let v = self.config.read(0x60 + (n & 3), 1) as u8;
        (v & 0x80 == 0 && v & 0x0f >= 3).then_some(v & 0x0f)
    }

    /// Steer the PIRQ lines of `lines` by the route registers from now on (also after a
    /// snapshot restore, which does not carry the connection).
    pub fn connect(&mut self, lines: IrqLines) {
        for n in 0..4 {
            lines.set_pirq_route(n, self.config.read(0x60 + n, 1) as u8);
        }
        self.lines = Some(lines);
    }
}

impl PciDevice for Piix3 {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        self.config.read(offset, size)
    }
    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        self.config.write(offset, size, value);
        let end = u16::from(offset) + u16::from(size);
        if let Some(lines) = &self.lines {
            if u16::from(offset) < 0x64 && end > 0x60 {
                for n in 0..4 {
                    lines.set_pirq_route(n, self.config.read(0x60 + n, 1) as u8);
                }
            }
        }
    }
}

/// Snapshot of the host interface registers; each function saves its own config space
/// ([`I440fx`] and [`Piix3`] derive serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciRootState {
    /// CONFIG_ADDRESS.
    pub address: u32,
    /// Reset control register.
    pub reset_control: u8,
}

/// The configuration mechanism #1 host interface and bus 0.
pub struct PciRoot {
    address: u32,
    reset_control: u8,
    devices: Vec<Option<Box<dyn PciDevice>>>,
    events: EventSender,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present: Vec<usize> = (0..256).filter(|&i| self.devices[i].is_some()).collect();
        f.debug_struct("PciRoot")
            .field("address", &self.address)
            .field("devfns", &present)
            .finish()
    }
}

/// Device/function number on bus 0: `(device << 3) | function`.
pub fn devfn(device: u8, function: u8) -> u8 {
    (device & 0x1f) << 3 | (function & 7)
}

impl PciRoot {
    /// Bus 0 with the i440FX at 00.0 and the PIIX3 at 01.0; resets go to `events`.
    pub fn new(events: EventSender) -> Self {
        let mut root = Self {
            address: 0,
            reset_control: 0,
            devices: (0..256).map(|_| None).collect(),
            events,
        };
        root.insert(devfn(0, 0), Box::new(I440fx::default()));
        root.insert(devfn(1, 0), Box::new(Piix3::default()));
        root
    }

    /// Wire the PIIX3's PIRQ routing to `lines` and program the route registers with
    /// [`FIRMWARE_PIRQ_ROUTES`], as firmware does at power-on.
    pub fn connect_irqs(&mut self, lines: &IrqLines) {
        if let Some(piix) = self.device_mut::<Piix3>(devfn(1, 0)) {
            for (n, irq) in FIRMWARE_PIRQ_ROUTES.iter().enumerate() {
                piix.config.write(0x60 + n as u8, 1, u32::from(*irq));
            }
            piix.connect(lines.clone());
        }
    }

    /// Save the host interface registers.
    pub fn state(&self) -> PciRootState {
        PciRootState {
            address: self.address,
            reset_control: self.reset_control,
        }
    }

    /// Restore the host interface registers.
    pub fn restore(&mut self, s: PciRootState) {
        self.address = s.address & 0x80ff_fffc;
        self.reset_control = s.reset_control & 0x0a;
    }

    /// Plug a function in at `devfn` (replacing any previous one).
    pub fn insert(&mut self, devfn: u8, dev: Box<dyn PciDevice>) {
        self.devices[usize::from(devfn)] = Some(dev);
    }

    /// Typed access to the function at `devfn`.
    pub fn device_mut<T: PciDevice>(&mut self, devfn: u8) -> Option<&mut T> {
        let d = self.devices[usize::from(devfn)].as_mut()?;
        (**d).as_any_mut().downcast_mut::<T>()
    }

    /// The CONFIG_ADDRESS target for a data-port access at byte `lane`, if it names bus 0.
    fn target(&self, lane: u16) -> Option<(usize, u8)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xff != 0 {
            return None;
        }
        let devfn = ((a >> 8) & 0xff) as usize;
        let offset = (a & 0xfc) as u8 | (lane as u8 & 3);
        Some((devfn, offset))
    }
}

impl PioDevice for PciRoot {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        match (offset, size) {
            (0, 4) => self.address,
            (1, 1) => u32::from(self.reset_control),
            (4..=7, _) => {
                let size = size.min(8 - offset as u8);
                let Some((devfn, off)) = self.target(offset - 4) else {
                    return crate::bus::all_ones(size);
                };
                match self.devices[devfn].as_mut() {
                    Some(d) => d.config_read(off, size),
                    None => crate::bus::all_ones(size),
                }
            }
            _ => crate::bus::all_ones(size),
        }
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) {
        match (offset, size) {
            (0, 4) => self.address = value & 0x80ff_fffc,
            (1, 1) => {
                let v = value as u8;
                // RC: bit 2 RCPU (0->1 resets), bit 1 SRST (hard vs soft: both reset here).
                if v & 0x04 != 0 && self.reset_control & 0x04 == 0 {
                    self.events.send(MachineEvent::Reset);
                }
                self.reset_control = v & 0x0a;
            }
            (4..=7, _) => {
                let size = size.min(8 - offset as u8);
                if let Some((devfn, off)) = self.target(offset - 4) {
                    if let Some(d) = self.devices[devfn].as_mut() {
                        d.config_write(off, size, value);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, DeviceId, Port};
    use crate::events::{event_channel, EventReceiver};

    fn setup() -> (Bus, DeviceId, EventReceiver) {
        let (tx, rx) = event_channel();
        let mut bus = Bus::new();
        let id = bus
            .add_pio_at(Box::new(PciRoot::new(tx)), &PCI_WINDOWS)
            .unwrap();
        (bus, id, rx)
    }

    fn cfg_addr(dev: u8, func: u8, off: u8) -> u32 {
        0x8000_0000 | u32::from(devfn(dev, func)) << 8 | u32::from(off & 0xfc)
    }

    fn read(bus: &mut Bus, dev: u8, func: u8, off: u8, size: u8) -> u32 {
        bus.pio_write(Port(0xcf8), 4, cfg_addr(dev, func, off));
        bus.pio_read(Port(0xcfc + u16::from(off & 3)), size)
    }

    #[test]
    fn enumerates_host_and_isa_bridge() {
        let (mut bus, _, _) = setup();
        assert_eq!(read(&mut bus, 0, 0, 0, 4), 0x1237_8086);
        assert_eq!(read(&mut bus, 0, 0, 2, 2), 0x1237);
        assert_eq!(read(&mut bus, 0, 0, 0x0a, 2), 0x0600);
        assert_eq!(read(&mut bus, 1, 0, 0, 4), 0x7000_8086);
        assert_eq!(read(&mut bus, 1, 0, 0x0e, 1), 0x80);
        assert_eq!(read(&mut bus, 1, 0, 0x0a, 2), 0x0601);
        assert_eq!(read(&mut bus, 2, 0, 0, 2), 0xffff);
        assert_eq!(read(&mut bus, 0, 1, 0, 4), 0xffff_ffff);
        // Config address reads back; disabled enable bit reads all ones.
        assert_eq!(bus.pio_read(Port(0xcf8), 4), cfg_addr(0, 1, 0));
        bus.pio_write(Port(0xcf8), 4, 0);
        assert_eq!(bus.pio_read(Port(0xcfc), 4), 0xffff_ffff);
    }

    #[test]
    fn pirq_routing_registers() {
        let (mut bus, id, _) = setup();
        assert_eq!(read(&mut bus, 1, 0, 0x60, 4), 0x8080_8080);
        bus.pio_write(Port(0xcf8), 4, cfg_addr(1, 0, 0x60));
        bus.pio_write(Port(0xcfd), 1, 0x0b); // PIRQB -> IRQ11
        assert_eq!(read(&mut bus, 1, 0, 0x60, 4), 0x8080_0b80);
        let root = bus.pio_device_mut::<PciRoot>(id).unwrap();
        let st = root.state();
        root.restore(st);
        assert_eq!(st.address, cfg_addr(1, 0, 0x60));
        let piix = root.device_mut::<Piix3>(devfn(1, 0)).unwrap();
        assert_eq!(piix.pirq_route(1), Some(11));
        assert_eq!(piix.pirq_route(0), None);
    }

    #[test]
    fn intx_follows_the_guest_programmed_pirq_route() {
        let (mut bus, id, _) = setup();
        let lines = IrqLines::new();
        bus.pio_device_mut::<PciRoot>(id)
            .unwrap()
            .connect_irqs(&lines);
        // Firmware defaults: PIRQA/B -> 10, PIRQC/D -> 11.
        assert_eq!(read(&mut bus, 1, 0, 0x60, 4), 0x0b0b_0a0a);
        // Slot 3 INTA# is PIRQC#: I/O APIC input 18 and ISA IRQ 11.
        assert_eq!(pirq_of(3, 1), 2);
        assert_eq!(firmware_interrupt_line(3, 1), 11);
        let l = intx_line(&lines, 3, 1);
        l.raise();
        assert_eq!(lines.levels(), 1 << 18 | 1 << 11);
        // The guest (an ACPI _SRS) moves PIRQC to IRQ 5.
        bus.pio_write(Port(0xcf8), 4, cfg_addr(1, 0, 0x60));
        bus.pio_write(Port(0xcfe), 1, 0x05);
        assert_eq!(lines.levels(), 1 << 18 | 1 << 5);
        // ... and disables it (_DIS).
        bus.pio_write(Port(0xcfe), 1, 0x85);
        assert_eq!(lines.levels(), 1 << 18);
        l.lower();
        assert_eq!(lines.levels(), 0);
        // Slots 12 and 16 share PIRQD#: a wired-OR, one device lowering keeps the other's.
        let hba = intx_line(&lines, 12, 1);
        let nic = intx_line(&lines, 16, 1);
        assert_eq!(pirq_of(12, 1), pirq_of(16, 1));
        hba.raise();
        nic.raise();
        hba.lower();
        assert_eq!(lines.levels(), 1 << 19 | 1 << 11);
        nic.lower();
        assert_eq!(lines.levels(), 0);
        for slot in 0..32 {
            for pin in 1..=4 {
                assert_eq!(pirq_of(slot, pin), (slot + 31 + pin - 1) % 4);
            }
        }
    }

    struct Nic(PciConfigSpace);
    impl PciDevice for Nic {
        fn config_read(&mut self, offset: u8, size: u8) -> u32 {
            self.0.read(offset, size)
        }
        fn config_write(&mut self, offset: u8, size: u8, value: u32) {
            self.0.write(offset, size, value);
        }
    }

    #[test]
    fn bar_sizing() {
        let (mut bus, id, _) = setup();
        let mut cfg = PciConfigSpace::new(0x1af4, 0x1000, [0x02, 0x00, 0x00], 0, 0);
        cfg.set_bar(0, BarKind::Io, 0x20);
        cfg.set_bar(
            1,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0x1000,
        );
        bus.pio_device_mut::<PciRoot>(id)
            .unwrap()
            .insert(devfn(3, 0), Box::new(Nic(cfg)));
        let size = |bus: &mut Bus, bar: u8| {
            bus.pio_write(Port(0xcf8), 4, cfg_addr(3, 0, 0x10 + 4 * bar));
            bus.pio_write(Port(0xcfc), 4, 0xffff_ffff);
            bus.pio_read(Port(0xcfc), 4)
        };
        assert_eq!(size(&mut bus, 0), 0xffff_ffe1);
        assert_eq!(size(&mut bus, 1), 0xffff_f000);
        assert_eq!(size(&mut bus, 2), 0, "unimplemented BAR");
        bus.pio_write(Port(0xcf8), 4, cfg_addr(3, 0, 0x14));
        bus.pio_write(Port(0xcfc), 4, 0xfebf_1234);
        assert_eq!(bus.pio_read(Port(0xcfc), 4), 0xfebf_1000);
        // Vendor ID is read-only.
        bus.pio_write(Port(0xcf8), 4, cfg_addr(3, 0, 0));
        bus.pio_write(Port(0xcfc), 2, 0);
        assert_eq!(bus.pio_read(Port(0xcfc), 2), 0x1af4);
    }

    #[test]
    fn reset_control_register() {
        let (mut bus, _, rx) = setup();
        bus.pio_write(Port(0xcf9), 1, 0x02);
        assert_eq!(rx.poll(), None);
        bus.pio_write(Port(0xcf9), 1, 0x06);
        assert_eq!(rx.poll(), Some(MachineEvent::Reset));
    }
}
