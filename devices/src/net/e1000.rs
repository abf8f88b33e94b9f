//! Intel 82540EM gigabit Ethernet controller (PCI 8086:100E), the "e1000" that Linux, the BSDs
//! and Windows drive with their in-box drivers. Follows the PCI/PCI-X Family of Gigabit
//! Ethernet Controllers Software Developer's Manual (Intel 8254x SDM, rev. 4.0):
//!
//! * registers in a 128 KiB memory BAR 0 (§13); no I/O BAR (Linux's e1000 only uses the I/O
//!   window for workarounds on other MAC types);
//! * a 64-word Microwire EEPROM (§5.2-5.3) read either bit-banged through EECD (what Linux does
//!   for the 82540) or through EERD, holding the MAC address and a checksum that makes words
//!   0x00-0x3F sum to 0xBABA (§5.6.1);
//! * an M88E1011-compatible PHY behind MDIC (§13.4.9) reporting 1000 Mb/s full duplex with
//!   auto-negotiation complete and link up;
//! * legacy receive descriptors (§3.2.3) with buffer sizes from RCTL.BSIZE/BSEX, frames split
//!   over several descriptors, the 4-byte FCS appended unless RCTL.SECRC, unicast (RAL/RAH),
//!   multicast (MTA hash, RCTL.MO), broadcast (RCTL.BAM) and promiscuous filtering, VLAN tag
//!   stripping under CTRL.VME;
//! * legacy transmit descriptors with IC checksum insertion (§3.3.3), the extended context and
//!   data descriptors (§3.3.6-3.3.7) with IP/TCP/UDP checksum insertion (POPTS.IXSM/TXSM) and
//!   TCP segmentation (TSE, §3.5), since Linux enables checksum offload and TSO on the 82540
//!   whatever the device says;
//! * interrupts ICR/ICS/IMS/IMC (§13.4.17-13.4.21) on the legacy INTx line given to
//!   [`E1000::new`] (the 82540 has no MSI). Interrupt moderation timers (ITR, RDTR, RADV, TIDV,
//!   TADV) are accepted and ignored: causes are signalled at once.
//!
//! Guest-supplied ring bases, lengths and indices are validated on every use; a bad one stops
//! that ring (nothing is transferred and nothing is written) until the driver reprograms it.
//! DMA goes through [`GuestMemory`], which bounds-checks every access.

use crate::irq::IrqLine;
use crate::net::{MacAddr, NetPort, MAX_FRAME, MIN_FRAME};
use crate::pci::{reg, BarKind, PciConfigSpace, PciDevice};
use crate::virtio::GuestMemory;

/// PCI vendor ID (Intel).
pub const VENDOR_ID: u16 = 0x8086;
/// PCI device ID of the 82540EM (desktop).
pub const DEVICE_ID: u16 = 0x100e;
/// Size of the register BAR (bytes).
pub const BAR_SIZE: u32 = 0x2_0000;

/// Register offsets in BAR 0 (Intel 8254x SDM §13, table 13-2).
pub mod regs {
    /// Device Control.
    pub const CTRL: u32 = 0x0000;
    /// Device Status (read-only).
    pub const STATUS: u32 = 0x0008;
    /// EEPROM/Flash Control and Data (bit-banged Microwire).
    pub const EECD: u32 = 0x0010;
    /// EEPROM Read.
    pub const EERD: u32 = 0x0014;
    /// Extended Device Control.
    pub const CTRL_EXT: u32 = 0x0018;
    /// MDI Control (PHY access).
    pub const MDIC: u32 = 0x0020;
    /// Interrupt Cause Read (read clears).
    pub const ICR: u32 = 0x00c0;
    /// Interrupt Throttling.
    pub const ITR: u32 = 0x00c4;
    /// Interrupt Cause Set.
    pub const ICS: u32 = 0x00c8;
    /// Interrupt Mask Set / Read.
    pub const IMS: u32 = 0x00d0;
    /// Interrupt Mask Clear.
    pub const IMC: u32 = 0x00d8;
    /// Receive Control.
    pub const RCTL: u32 = 0x0100;
    /// Transmit Control.
    pub const TCTL: u32 = 0x0400;
    /// Receive Descriptor Base Address Low.
    pub const RDBAL: u32 = 0x2800;
    /// Receive Descriptor Base Address High.
    pub const RDBAH: u32 = 0x2804;
    /// Receive Descriptor Length (bytes, multiple of 128).
    pub const RDLEN: u32 = 0x2808;
    /// Receive Descriptor Head.
    pub const RDH: u32 = 0x2810;
    /// Receive Descriptor Tail.
    pub const RDT: u32 = 0x2818;
    /// Transmit Descriptor Base Address Low.
    pub const TDBAL: u32 = 0x3800;
    /// Transmit Descriptor Base Address High.
    pub const TDBAH: u32 = 0x3804;
    /// Transmit Descriptor Length.
    pub const TDLEN: u32 = 0x3808;
    /// Transmit Descriptor Head.
    pub const TDH: u32 = 0x3810;
    /// Transmit Descriptor Tail.
    pub const TDT: u32 = 0x3818;
    /// First statistics register; 0x4000-0x40FF clear on read.
    pub const STATS: u32 = 0x4000;
    /// Good Packets Received Count.
    pub const GPRC: u32 = 0x4074;
    /// Broadcast Packets Received Count.
    pub const BPRC: u32 = 0x4078;
    /// Multicast Packets Received Count.
    pub const MPRC: u32 = 0x407c;
    /// Good Packets Transmitted Count.
    pub const GPTC: u32 = 0x4080;
    /// Good Octets Received Count (low).
    pub const GORCL: u32 = 0x4088;
    /// Good Octets Transmitted Count (low).
    pub const GOTCL: u32 = 0x4090;
    /// Total Packets Received.
    pub const TPR: u32 = 0x40d0;
    /// Total Packets Transmitted.
    pub const TPT: u32 = 0x40d4;
    /// Multicast Table Array (128 dwords).
    pub const MTA: u32 = 0x5200;
    /// Receive Address Low 0 (RAL n at 0x5400 + 8n).
    pub const RAL0: u32 = 0x5400;
    /// Receive Address High 0 (bit 31: Address Valid).
    pub const RAH0: u32 = 0x5404;
    /// VLAN Ether Type.
    pub const VET: u32 = 0x0038;
}

/// Interrupt cause bits (ICR, ICS, IMS, IMC; §13.4.17).
pub mod icr {
    /// Transmit Descriptor Written Back.
    pub const TXDW: u32 = 1 << 0;
    /// Transmit Queue Empty.
    pub const TXQE: u32 = 1 << 1;
    /// Link Status Change.
    pub const LSC: u32 = 1 << 2;
    /// Receive Descriptor Minimum Threshold reached.
    pub const RXDMT0: u32 = 1 << 4;
    /// Receiver Overrun.
    pub const RXO: u32 = 1 << 6;
    /// Receiver Timer Interrupt (a frame was stored).
    pub const RXT0: u32 = 1 << 7;
    /// MDI/O Access Complete.
    pub const MDAC: u32 = 1 << 9;
}

const CTRL_RST: u32 = 1 << 26;
const CTRL_VME: u32 = 1 << 30;
const CTRL_SLU: u32 = 1 << 6;
/// STATUS: FD, LU, SPEED = 10b (1000 Mb/s), ASDV = 10b.
const STATUS_LINK_1000FD: u32 = 0x1 | 0x2 | (0b10 << 6) | (0b10 << 8);

const EECD_SK: u32 = 1 << 0;
const EECD_CS: u32 = 1 << 1;
const EECD_DI: u32 = 1 << 2;
const EECD_DO: u32 = 1 << 3;
const EECD_REQ: u32 = 1 << 6;
const EECD_GNT: u32 = 1 << 7;
const EECD_PRES: u32 = 1 << 8;

const EERD_START: u32 = 1 << 0;
const EERD_DONE: u32 = 1 << 4;

const MDIC_READY: u32 = 1 << 28;
const MDIC_IE: u32 = 1 << 29;
const MDIC_ERROR: u32 = 1 << 30;

const RCTL_EN: u32 = 1 << 1;
const RCTL_SBP: u32 = 1 << 2;
const RCTL_UPE: u32 = 1 << 3;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_LPE: u32 = 1 << 5;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_BSEX: u32 = 1 << 25;
const RCTL_SECRC: u32 = 1 << 26;
const TCTL_EN: u32 = 1 << 1;

/// Receive descriptor status bits (§3.2.3.1).
const RXD_DD: u8 = 0x01;
const RXD_EOP: u8 = 0x02;
/// Ignore Checksum Indication: the guest verifies checksums itself.
const RXD_IXSM: u8 = 0x04;
const RXD_VP: u8 = 0x08;

/// Transmit command bits (byte 11 of a descriptor).
const TXD_EOP: u8 = 0x01;
const TXD_IC: u8 = 0x04;
const TXD_TSE: u8 = 0x04;
const TXD_RS: u8 = 0x08;
const TXD_DEXT: u8 = 0x20;
const TXD_VLE: u8 = 0x40;
/// TUCMD of a context descriptor.
const TUCMD_TCP: u8 = 0x01;
const TUCMD_IP: u8 = 0x02;
const POPTS_IXSM: u8 = 0x01;
const POPTS_TXSM: u8 = 0x02;

/// Largest packet the transmit path assembles from descriptors (bytes): a TSO super-frame is
/// at most 64 KiB of payload plus headers.
const MAX_TX_PACKET: usize = 0x1_0000 + 256;
/// EEPROM words (a 93C46-class part: 64 x 16 bits, 6 address bits).
const EEPROM_WORDS: usize = 64;
/// Register file size in dwords.
const NREGS: usize = (BAR_SIZE / 4) as usize;

/// PHY registers (IEEE 802.3 clause 22 plus the M88E1011 specific ones).
mod phy {
    pub const BMCR: usize = 0;
    pub const BMSR: usize = 1;
    pub const ID1: usize = 2;
    pub const ID2: usize = 3;
    pub const ANAR: usize = 4;
    pub const ANLPAR: usize = 5;
    pub const ANER: usize = 6;
    pub const GBCR: usize = 9;
    pub const GBSR: usize = 10;
    pub const EXT_STATUS: usize = 15;
    pub const M88_SPEC_STATUS: usize = 17;
}

/// Offload context from the last context descriptor (§3.3.6).
#[derive(Debug, Clone, Copy, Default)]
struct TxContext {
    ipcss: usize,
    ipcso: usize,
    ipcse: usize,
    tucss: usize,
    tucso: usize,
    tucse: usize,
    tucmd: u8,
    hdrlen: usize,
    mss: usize,
}

/// State of the bit-banged Microwire interface (93C46 READ: start bit 1, opcode 10, 6-bit
/// address, then 16 data bits MSB first).
#[derive(Debug, Clone, Copy, Default)]
struct Microwire {
    bits: u32,
    nbits: u32,
    /// Reading: word address and next data bit (15..0).
    reading: Option<(usize, u32)>,
    dout: bool,
}

/// Counters kept for tests and `--stats`-style reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct E1000Counters {
    /// Frames sent to the back-end.
    pub tx_frames: u64,
    /// Frames delivered into the receive ring.
    pub rx_frames: u64,
    /// Frames dropped (filter mismatch excluded): receiver off, bad length, ring errors.
    pub dropped: u64,
}

/// The 82540EM.
#[derive(Debug)]
pub struct E1000 {
    config: PciConfigSpace,
    regs: Vec<u32>,
    mac: MacAddr,
    eeprom: [u16; EEPROM_WORDS],
    mw: Microwire,
    phy: [u16; 32],
    port: NetPort,
    irq: IrqLine,
    tx_pending: bool,
    tx_packet: Vec<u8>,
    tx_ctx: TxContext,
    /// POPTS and TSE of the packet being assembled (taken from its first data descriptor).
    tx_opts: Option<(u8, bool)>,
    /// The packet being assembled grew past [`MAX_TX_PACKET`]; it is dropped at EOP.
    tx_oversize: bool,
    /// A frame taken from the back-end that did not fit in the receive ring yet.
    rx_held: Option<Vec<u8>>,
    ring_warned: [bool; 2],
    /// Traffic counters.
    pub counters: E1000Counters,
}

/// Ones'-complement sum of `data` (RFC 1071) added to `sum`, not yet folded.
fn csum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

fn csum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// IEEE 802.3 frame check sequence (CRC-32, reflected, polynomial 0xEDB88320).
pub fn ethernet_fcs(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Insert the ones'-complement checksum of `pkt[start..=end]` (plus `extra`, already in
/// ones'-complement form) at `at`. Out-of-range offsets leave the packet unchanged (a driver
/// error the hardware would also turn into a bad checksum, never a host fault).
fn insert_csum(pkt: &mut [u8], start: usize, end: usize, at: usize, extra: u64, zero_first: bool) {
    if start > end || end >= pkt.len() || at + 2 > pkt.len() {
        return;
    }
    if zero_first {
        pkt[at..at + 2].fill(0);
    }
    let c = !csum_fold(csum_add(extra, &pkt[start..=end]));
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn put_be16(pkt: &mut [u8], at: usize, v: u16) {
    if let Some(s) = pkt.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn get_be16(pkt: &[u8], at: usize) -> Option<u16> {
    pkt.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
}

impl E1000 {
    /// A controller with station address `mac`, exchanging frames through `port` (the guest
    /// end of a [`NetPort`]) and signalling interrupts on `irq` (INTA#, level: asserted while
    /// `ICR & IMS != 0`).
    pub fn new(mac: MacAddr, port: NetPort, irq: IrqLine) -> Self {
        let mut config = PciConfigSpace::new(VENDOR_ID, DEVICE_ID, [0x02, 0x00, 0x00], 0x03, 0);
        config.set_u16(0x2c, VENDOR_ID);
        config.set_u16(0x2e, 0x001e);
        config.set_byte(reg::INTERRUPT_PIN, 1, 0);
        config.set_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            BAR_SIZE,
        );
        let mut eeprom = [0u16; EEPROM_WORDS];
        for i in 0..3 {
            eeprom[i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
        }
        // PBA number, init control words, subsystem and device IDs (§5.6, table 5-2).
        eeprom[0x08] = 0x5402;
        eeprom[0x09] = 0x00ff;
        eeprom[0x0a] = 0x4c08;
        eeprom[0x0b] = 0x001e;
        eeprom[0x0c] = VENDOR_ID;
        eeprom[0x0d] = DEVICE_ID;
        eeprom[0x0e] = VENDOR_ID;
        eeprom[0x0f] = 0x3040;
        let sum = eeprom[..EEPROM_WORDS - 1]
            .iter()
            .fold(0u16, |a, &w| a.wrapping_add(w));
        eeprom[EEPROM_WORDS - 1] = 0xbaba_u16.wrapping_sub(sum);
        let mut s = Self {
            config,
            regs: vec![0; NREGS],
            mac,
            eeprom,
            mw: Microwire::default(),
            phy: [0; 32],
            port,
            irq,
            tx_pending: false,
            tx_packet: Vec::new(),
            tx_ctx: TxContext::default(),
            tx_opts: None,
            tx_oversize: false,
            rx_held: None,
            ring_warned: [false; 2],
            counters: E1000Counters::default(),
        };
        s.reset();
        s
    }

    /// The station address from the EEPROM.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Program BAR 0 (firmware-style, before the guest runs) and enable memory decoding and
    /// bus mastering.
    pub fn assign_bar0(&mut self, base: u32) {
        self.config.write(reg::BAR0, 4, base);
        self.config.write(reg::COMMAND, 2, 0x6);
    }

    /// Set the interrupt line register (firmware-style).
    pub fn set_interrupt_line(&mut self, irq: u8) {
        self.config.write(reg::INTERRUPT_LINE, 1, u32::from(irq));
    }

    /// Software / power-on reset (CTRL.RST, §14.9): registers to their defaults, station
    /// address reloaded from the EEPROM, rings stopped, held frames and interrupts dropped.
    fn reset(&mut self) {
        self.regs.fill(0);
        self.set(regs::CTRL, CTRL_SLU | 0x1);
        self.set(regs::EECD, EECD_PRES);
        self.set(regs::VET, 0x8100);
        self.set(regs::ITR, 0);
        self.set(
            regs::RAL0,
            u32::from_le_bytes([self.mac[0], self.mac[1], self.mac[2], self.mac[3]]),
        );
        self.set(
            regs::RAH0,
            u32::from(u16::from_le_bytes([self.mac[4], self.mac[5]])) | (1 << 31),
        );
        self.phy = [0; 32];
        self.phy[phy::BMCR] = 0x1140;
        // Link up, auto-negotiation complete and able, 10/100/1000 abilities, extended status.
        self.phy[phy::BMSR] = 0x796d;
        self.phy[phy::ID1] = 0x0141;
        self.phy[phy::ID2] = 0x0c20;
        self.phy[phy::ANAR] = 0x01e1;
        self.phy[phy::ANLPAR] = 0x45e1;
        self.phy[phy::ANER] = 0x0001;
        self.phy[phy::GBCR] = 0x0300;
        self.phy[phy::GBSR] = 0x3c00;
        self.phy[phy::EXT_STATUS] = 0x3000;
        // 1000 Mb/s, full duplex, speed/duplex resolved, link up.
        self.phy[phy::M88_SPEC_STATUS] = 0xac00;
        self.mw = Microwire::default();
        self.tx_pending = false;
        self.tx_packet.clear();
        self.tx_opts = None;
        self.tx_oversize = false;
        self.tx_ctx = TxContext::default();
        self.rx_held = None;
        self.ring_warned = [false; 2];
        self.update_irq();
    }

    fn get(&self, r: u32) -> u32 {
        self.regs[(r as usize / 4) % NREGS]
    }

    fn set(&mut self, r: u32, v: u32) {
        self.regs[(r as usize / 4) % NREGS] = v;
    }

    fn update_irq(&mut self) {
        let level = self.get(regs::ICR) & self.get(regs::IMS) != 0
            && self.config.read(reg::COMMAND, 2) & 0x400 == 0;
        self.irq.set(level);
    }

    /// Set interrupt causes and re-evaluate INTA#.
    fn cause(&mut self, bits: u32) {
        let v = self.get(regs::ICR) | bits;
        self.set(regs::ICR, v);
        self.update_irq();
    }

    fn read_reg(&mut self, r: u32) -> u32 {
        match r {
            // The link is always up: the back-end is the wire.
            regs::STATUS => STATUS_LINK_1000FD,
            regs::EECD => {
                let mut v = self.get(regs::EECD) | EECD_PRES;
                if v & EECD_REQ != 0 {
                    v |= EECD_GNT;
                }
                if self.mw.dout {
                    v |= EECD_DO;
                } else {
                    v &= !EECD_DO;
                }
                v
            }
            regs::ICR => {
                // Reading ICR clears every cause (§13.4.17) and so deasserts INTA#.
                let v = self.get(regs::ICR);
                self.set(regs::ICR, 0);
                self.update_irq();
                v
            }
            r if (regs::STATS..regs::STATS + 0x100).contains(&r) => {
                let v = self.get(r);
                self.set(r, 0);
                v
            }
            // Write-only registers read as 0.
            regs::ICS | regs::IMC => 0,
            _ => self.get(r),
        }
    }

    fn write_reg(&mut self, r: u32, v: u32) {
        match r {
            regs::CTRL => {
                if v & CTRL_RST != 0 {
                    self.reset();
                    return;
                }
                self.set(r, v);
            }
            regs::STATUS => {}
            regs::EECD => {
                let old = self.get(regs::EECD);
                self.set(r, v & (EECD_SK | EECD_CS | EECD_DI | EECD_REQ | 0x30));
                self.microwire(old, v);
            }
            regs::EERD => {
                if v & EERD_START != 0 {
                    let addr = ((v >> 8) & 0xff) as usize;
                    let data = self.eeprom.get(addr).copied().unwrap_or(0xffff);
                    self.set(r, (u32::from(data) << 16) | (v & 0xff00) | EERD_DONE);
                }
            }
            regs::MDIC => self.mdic(v),
            regs::ICR => {
                // Writing 1s clears the corresponding causes.
                let c = self.get(regs::ICR) & !v;
                self.set(regs::ICR, c);
                self.update_irq();
            }
            regs::ICS => self.cause(v),
            regs::IMS => {
                let m = self.get(regs::IMS) | v;
                self.set(regs::IMS, m);
                self.update_irq();
            }
            regs::IMC => {
                let m = self.get(regs::IMS) & !v;
                self.set(regs::IMS, m);
                self.update_irq();
            }
            regs::RDLEN | regs::TDLEN => {
                self.set(r, v & 0x000f_ff80);
                self.ring_warned = [false; 2];
            }
            regs::RDH | regs::RDT | regs::TDH => {
                self.set(r, v & 0xffff);
                self.ring_warned = [false; 2];
            }
            regs::TDT => {
                self.set(r, v & 0xffff);
                self.tx_pending = true;
            }
            regs::TCTL => {
                self.set(r, v);
                if v & TCTL_EN != 0 {
                    self.tx_pending = true;
                }
            }
            r if (regs::STATS..regs::STATS + 0x100).contains(&r) => {}
            _ => self.set(r, v),
        }
    }

    fn microwire(&mut self, old: u32, new: u32) {
        if new & EECD_CS == 0 {
            // Deselect: the part returns to standby and forgets a partial command.
            self.mw = Microwire::default();
            return;
        }
        let rising = old & EECD_SK == 0 && new & EECD_SK != 0;
        if !rising {
            return;
        }
        if let Some((addr, bit)) = self.mw.reading {
            let word = self.eeprom[addr % EEPROM_WORDS];
            self.mw.dout = (word >> bit) & 1 != 0;
            self.mw.reading = Some(if bit == 0 {
                ((addr + 1) % EEPROM_WORDS, 15)
            } else {
                (addr, bit - 1)
            });
            return;
        }
        self.mw.bits = (self.mw.bits << 1) | u32::from(new & EECD_DI != 0);
        self.mw.nbits += 1;
        // Leading zeros before the start bit are ignored.
        if self.mw.nbits == 1 && self.mw.bits == 0 {
            self.mw.nbits = 0;
            return;
        }
        if self.mw.nbits == 9 {
            let opcode = self.mw.bits >> 6;
            let addr = (self.mw.bits & 0x3f) as usize;
            if opcode == 0b110 {
                // READ: a dummy 0 is driven until the first data clock.
                self.mw.reading = Some((addr, 15));
                self.mw.dout = false;
            } else {
                // EWEN/EWDS/WRITE/ERASE: the EEPROM is write-protected; ignore the command.
                self.mw.bits = 0;
                self.mw.nbits = 0;
            }
        }
    }

    fn mdic(&mut self, v: u32) {
        let data = v & 0xffff;
        let regn = ((v >> 16) & 0x1f) as usize;
        let phy_addr = (v >> 21) & 0x1f;
        let op = (v >> 26) & 3;
        let mut out = v & !(MDIC_READY | MDIC_ERROR);
        if phy_addr != 1 || !(op == 1 || op == 2) {
            out |= MDIC_ERROR;
        } else if op == 2 {
            out = (out & !0xffff) | u32::from(self.phy[regn]);
        } else {
            let mut d = data as u16;
            match regn {
                // Reset and restart-auto-negotiation bits self-clear; the link stays up.
                phy::BMCR => d &= !(0x8000 | 0x0200),
                phy::BMSR | phy::ID1 | phy::ID2 | phy::ANLPAR | phy::GBSR | phy::EXT_STATUS => {
                    d = self.phy[regn];
                }
                phy::M88_SPEC_STATUS => d = self.phy[regn],
                _ => {}
            }
            self.phy[regn] = d;
        }
        out |= MDIC_READY;
        self.set(regs::MDIC, out);
        if v & MDIC_IE != 0 {
            self.cause(icr::MDAC);
        }
    }

    /// Guest load from BAR 0. Registers are 32 bits wide; narrower loads return the addressed
    /// bytes, 64-bit loads two consecutive registers.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        if offset >= u64::from(BAR_SIZE) {
            return 0;
        }
        let r = (offset & !3) as u32;
        let shift = 8 * (offset & 3);
        let v = u64::from(self.read_reg(r));
        match size {
            8 if shift == 0 => v | (u64::from(self.read_reg(r.wrapping_add(4) % BAR_SIZE)) << 32),
            4 | 8 => v >> shift,
            2 => (v >> shift) & 0xffff,
            _ => (v >> shift) & 0xff,
        }
    }

    /// Guest store to BAR 0. Narrow stores merge into the register (read-modify-write without
    /// read side effects).
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) {
        if offset >= u64::from(BAR_SIZE) {
            return;
        }
        let r = (offset & !3) as u32;
        let shift = 8 * (offset & 3);
        match size {
            8 if shift == 0 => {
                self.write_reg(r, value as u32);
                self.write_reg(r.wrapping_add(4) % BAR_SIZE, (value >> 32) as u32);
            }
            4 | 8 => self.write_reg(r, (value as u32) << shift),
            _ => {
                let mask = if size == 2 { 0xffffu32 } else { 0xff } << shift;
                let v = (self.get(r) & !mask) | (((value as u32) << shift) & mask);
                self.write_reg(r, v);
            }
        }
    }

    /// Whether [`E1000::process`] has work: descriptors to transmit, or frames waiting while
    /// the receive ring has room (or the receiver is off, so they must be dropped).
    pub fn has_work(&self) -> bool {
        self.tx_pending || (self.has_rx() && (!self.rx_enabled() || self.rx_room()))
    }

    fn has_rx(&self) -> bool {
        self.rx_held.is_some() || !self.port.rx.is_empty()
    }

    fn rx_enabled(&self) -> bool {
        self.get(regs::RCTL) & RCTL_EN != 0
    }

    /// Whether the receive ring has free descriptors (RDH != RDT), i.e. an arriving frame can
    /// be stored now. The machine waits on the back-end only for NICs that can receive.
    pub fn can_receive(&self) -> bool {
        self.rx_enabled() && self.rx_room() && self.rx_held.is_none()
    }

    fn rx_room(&self) -> bool {
        self.get(regs::RDH) != self.get(regs::RDT)
    }

    /// The back-end's receiver (for waiting on arriving frames).
    pub fn port(&self) -> &NetPort {
        &self.port
    }

    /// Transmit pending descriptors and store arrived frames, with DMA through `mem`.
    pub fn process(&mut self, mem: &mut dyn GuestMemory) {
        if self.config.read(reg::COMMAND, 2) & 0x4 == 0 {
            // Bus mastering off: no DMA. Work stays pending until the driver enables it.
            return;
        }
        if std::mem::take(&mut self.tx_pending) {
            self.process_tx(mem);
        }
        self.process_rx(mem);
    }

    /// A validated ring: base address, number of descriptors, head, tail.
    fn ring(&mut self, mem: &dyn GuestMemory, tx: bool) -> Option<(u64, u32, u32, u32)> {
        let (bal, bah, len, h, t) = if tx {
            (regs::TDBAL, regs::TDBAH, regs::TDLEN, regs::TDH, regs::TDT)
        } else {
            (regs::RDBAL, regs::RDBAH, regs::RDLEN, regs::RDH, regs::RDT)
        };
        let base = u64::from(self.get(bal) & !0xf) | (u64::from(self.get(bah)) << 32);
        let n = self.get(len) / 16;
        let (head, tail) = (self.get(h), self.get(t));
        let bad = if n == 0 {
            Some("length 0")
        } else if head >= n || tail >= n {
            Some("head or tail beyond the ring")
        } else if mem.check(base, u64::from(n) * 16).is_err() {
            Some("ring outside guest RAM")
        } else {
            None
        };
        if let Some(why) = bad {
            let w = &mut self.ring_warned[usize::from(tx)];
            if !*w {
                *w = true;
                log::warn!(target: "devices::e1000", "{} ring stopped: {why} (base {base:#x}, {n} descriptors, head {head}, tail {tail})",
                    if tx { "transmit" } else { "receive" });
            }
            return None;
        }
        Some((base, n, head, tail))
    }

    fn process_tx(&mut self, mem: &mut dyn GuestMemory) {
        if self.get(regs::TCTL) & TCTL_EN == 0 {
            return;
        }
        let Some((base, n, mut head, tail)) = self.ring(mem, true) else {
            return;
        };
        let mut causes = 0;
        let mut done_any = false;
        while head != tail {
            let at = base + u64::from(head) * 16;
            let mut d = [0u8; 16];
            if mem.read(at, &mut d).is_err() {
                break;
            }
            if !self.tx_descriptor(&d, mem) {
                // A buffer outside RAM: stop the ring where it is.
                log::warn!(target: "devices::e1000", "transmit buffer outside guest RAM; ring stopped at {head}");
                break;
            }
            if d[11] & TXD_RS != 0 {
                // Write back DD in the status byte (§3.3.3.2).
                if mem.write(at + 12, &[d[12] | 1]).is_err() {
                    break;
                }
                causes |= icr::TXDW;
            }
            head = (head + 1) % n;
            done_any = true;
        }
        self.set(regs::TDH, head);
        if done_any && head == tail {
            causes |= icr::TXQE;
        }
        if causes != 0 {
            self.cause(causes);
        }
    }

    /// Handle one transmit descriptor; `false` if its buffer is not in guest RAM.
    fn tx_descriptor(&mut self, d: &[u8; 16], mem: &dyn GuestMemory) -> bool {
        let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or([0; 8]));
        let cmd = d[11];
        let dword2 = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
        let (len, legacy) = if cmd & TXD_DEXT == 0 {
            (usize::from(u16::from_le_bytes([d[8], d[9]])), true)
        } else {
            let dtyp = (dword2 >> 20) & 0xf;
            if dtyp == 0 {
                // Context descriptor: remember the offload parameters.
                self.tx_ctx = TxContext {
                    ipcss: usize::from(d[0]),
                    ipcso: usize::from(d[1]),
                    ipcse: usize::from(u16::from_le_bytes([d[2], d[3]])),
                    tucss: usize::from(d[4]),
                    tucso: usize::from(d[5]),
                    tucse: usize::from(u16::from_le_bytes([d[6], d[7]])),
                    tucmd: cmd,
                    hdrlen: usize::from(d[13]),
                    mss: usize::from(u16::from_le_bytes([d[14], d[15]])),
                };
                return true;
            }
            if dtyp != 1 {
                // Reserved descriptor type: skipped.
                return true;
            }
            ((dword2 & 0xf_ffff) as usize, false)
        };
        if !legacy && self.tx_opts.is_none() {
            self.tx_opts = Some((d[13], cmd & TXD_TSE != 0));
        }
        if len > 0 {
            if mem.check(addr, len as u64).is_err() {
                self.tx_packet.clear();
                self.tx_opts = None;
                return false;
            }
            if self.tx_oversize || self.tx_packet.len() + len > MAX_TX_PACKET {
                // Oversized packet: the rest of it is skipped and it is dropped at EOP.
                self.tx_oversize = true;
                self.tx_packet.clear();
            } else {
                let start = self.tx_packet.len();
                self.tx_packet.resize(start + len, 0);
                if mem.read(addr, &mut self.tx_packet[start..]).is_err() {
                    self.tx_packet.clear();
                    self.tx_opts = None;
                    return false;
                }
            }
        }
        if cmd & TXD_EOP != 0 && std::mem::take(&mut self.tx_oversize) {
            self.counters.dropped += 1;
            self.tx_opts = None;
        } else if cmd & TXD_EOP != 0 {
            let mut pkt = std::mem::take(&mut self.tx_packet);
            let vlan = (cmd & TXD_VLE != 0 && self.get(regs::CTRL) & CTRL_VME != 0)
                .then(|| u16::from_le_bytes([d[14], d[15]]));
            if legacy {
                if cmd & TXD_IC != 0 {
                    let (cso, css) = (usize::from(d[10]), usize::from(d[13]));
                    let end = pkt.len().saturating_sub(1);
                    insert_csum(&mut pkt, css, end, cso, 0, false);
                }
                self.emit(pkt, vlan);
            } else {
                let (popts, tse) = self.tx_opts.take().unwrap_or((0, false));
                if tse && self.tx_ctx.tucmd & TXD_TSE != 0 {
                    self.segment(&pkt, popts, vlan);
                } else {
                    self.offload(&mut pkt, popts, 0);
                    self.emit(pkt, vlan);
                }
            }
            self.tx_opts = None;
        }
        true
    }

    /// Insert the checksums POPTS asks for with the current context; `l4_len_extra` is the L4
    /// length the hardware adds to the pseudo-header sum when segmenting (0 otherwise).
    fn offload(&self, pkt: &mut [u8], popts: u8, l4_len_extra: u64) {
        let c = self.tx_ctx;
        let last = pkt.len().saturating_sub(1);
        if popts & POPTS_IXSM != 0 {
            let end = if c.ipcse == 0 { last } else { c.ipcse };
            insert_csum(pkt, c.ipcss, end, c.ipcso, 0, true);
        }
        if popts & POPTS_TXSM != 0 {
            let end = if c.tucse == 0 { last } else { c.tucse };
            insert_csum(pkt, c.tucss, end, c.tucso, l4_len_extra, false);
        }
    }

    /// TCP segmentation (§3.5): split the payload after HDRLEN into MSS-sized segments, each
    /// with a copy of the header whose IP length / identification, TCP sequence number and
    /// flags (FIN and PSH only on the last) and checksums are fixed up.
    fn segment(&mut self, pkt: &[u8], popts: u8, vlan: Option<u16>) {
        let c = self.tx_ctx;
        if c.mss == 0 || c.hdrlen == 0 || c.hdrlen > pkt.len() {
            self.counters.dropped += 1;
            return;
        }
        let (hdr, payload) = pkt.split_at(c.hdrlen);
        let ipv4 = c.tucmd & TUCMD_IP != 0;
        let tcp = c.tucmd & TUCMD_TCP != 0;
        let ip_id = get_be16(hdr, c.ipcss + 4).unwrap_or(0);
        let seq = hdr
            .get(c.tucss + 4..c.tucss + 8)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .unwrap_or(0);
        let nseg = payload.len().div_ceil(c.mss).max(1);
        for i in 0..nseg {
            let chunk = payload
                .get(i * c.mss..((i + 1) * c.mss).min(payload.len()))
                .unwrap_or(&[]);
            let mut seg = Vec::with_capacity(hdr.len() + chunk.len());
            seg.extend_from_slice(hdr);
            seg.extend_from_slice(chunk);
            let total = seg.len();
            if ipv4 {
                put_be16(&mut seg, c.ipcss + 2, total.saturating_sub(c.ipcss) as u16);
                put_be16(&mut seg, c.ipcss + 4, ip_id.wrapping_add(i as u16));
            } else {
                put_be16(
                    &mut seg,
                    c.ipcss + 4,
                    total.saturating_sub(c.ipcss + 40) as u16,
                );
            }
            if tcp {
                let s = seq.wrapping_add((i * c.mss) as u32);
                if let Some(f) = seg.get_mut(c.tucss + 4..c.tucss + 8) {
                    f.copy_from_slice(&s.to_be_bytes());
                }
                if i + 1 < nseg {
                    if let Some(flags) = seg.get_mut(c.tucss + 13) {
                        *flags &= !(0x01 | 0x08);
                    }
                }
            } else {
                put_be16(&mut seg, c.tucss + 4, total.saturating_sub(c.tucss) as u16);
            }
            let l4_len = total.saturating_sub(c.tucss) as u64;
            self.offload(&mut seg, popts, l4_len);
            self.emit(seg, vlan);
        }
    }

    fn emit(&mut self, mut frame: Vec<u8>, vlan: Option<u16>) {
        if let Some(tci) = vlan {
            if frame.len() >= 12 {
                let vet = self.get(regs::VET) as u16;
                let mut tag = vet.to_be_bytes().to_vec();
                tag.extend_from_slice(&tci.to_be_bytes());
                frame.splice(12..12, tag);
            }
        }
        let len = frame.len() as u32;
        if self.port.send(frame) {
            self.counters.tx_frames += 1;
            self.bump(regs::GPTC, 1);
            self.bump(regs::TPT, 1);
            self.bump(regs::GOTCL, len);
        } else {
            self.counters.dropped += 1;
        }
    }

    fn bump(&mut self, r: u32, by: u32) {
        let v = self.get(r).saturating_add(by);
        self.set(r, v);
    }

    /// Destination filtering (§3.2.1): station addresses, multicast hash, broadcast,
    /// promiscuous modes.
    fn accept(&self, frame: &[u8]) -> bool {
        let rctl = self.get(regs::RCTL);
        let dst: MacAddr = match frame.get(0..6) {
            Some(d) => [d[0], d[1], d[2], d[3], d[4], d[5]],
            None => return false,
        };
        if dst == [0xff; 6] {
            return rctl & RCTL_BAM != 0 || rctl & RCTL_MPE != 0;
        }
        if dst[0] & 1 != 0 {
            if rctl & RCTL_MPE != 0 {
                return true;
            }
            let mo = (rctl >> 12) & 3;
            let hash = match mo {
                0 => (u32::from(dst[4]) >> 4) | (u32::from(dst[5]) << 4),
                1 => (u32::from(dst[4]) >> 3) | (u32::from(dst[5]) << 5),
                2 => (u32::from(dst[4]) >> 2) | (u32::from(dst[5]) << 6),
                _ => u32::from(dst[4]) | (u32::from(dst[5]) << 8),
            } & 0xfff;
            let word = self.get(regs::MTA + 4 * (hash >> 5));
            return word & (1 << (hash & 31)) != 0;
        }
        if rctl & RCTL_UPE != 0 {
            return true;
        }
        (0..16).any(|i| {
            let lo = self.get(regs::RAL0 + 8 * i);
            let hi = self.get(regs::RAH0 + 8 * i);
            hi & (1 << 31) != 0 && {
                let l = lo.to_le_bytes();
                let h = hi.to_le_bytes();
                dst == [l[0], l[1], l[2], l[3], h[0], h[1]]
            }
        })
    }

    fn rx_buffer_size(&self) -> usize {
        let rctl = self.get(regs::RCTL);
        let bsize = (rctl >> 16) & 3;
        if rctl & RCTL_BSEX != 0 {
            match bsize {
                1 => 16384,
                2 => 8192,
                3 => 4096,
                _ => 2048,
            }
        } else {
            2048 >> bsize
        }
    }

    fn process_rx(&mut self, mem: &mut dyn GuestMemory) {
        if !self.rx_enabled() {
            // Receiver off: frames on the wire are lost.
            self.rx_held = None;
            while self.port.try_recv().is_some() {
                self.counters.dropped += 1;
            }
            return;
        }
        let mut causes = 0;
        loop {
            if !self.rx_room() {
                break;
            }
            let frame = match self.rx_held.take() {
                Some(f) => f,
                None => match self.port.try_recv() {
                    Some(f) => f,
                    None => break,
                },
            };
            let Some(buf) = self.rx_prepare(frame) else {
                continue;
            };
            match self.rx_store(mem, &buf.0, buf.1) {
                RxStore::Stored => {
                    causes |= icr::RXT0;
                }
                RxStore::NoRoom => {
                    self.rx_held = Some(buf.2);
                    break;
                }
                RxStore::Stopped => {
                    self.rx_held = Some(buf.2);
                    break;
                }
            }
        }
        if causes != 0 {
            if let Some((_, n, head, tail)) = self.ring(mem, false) {
                let free = (tail + n - head) % n;
                let shift = match (self.get(regs::RCTL) >> 8) & 3 {
                    0 => 1,
                    1 => 2,
                    _ => 3,
                };
                if free <= n >> shift {
                    causes |= icr::RXDMT0;
                }
            }
            self.cause(causes);
        }
    }

    /// Filter and shape an arrived frame: `(bytes to store, VLAN tag, original frame)`.
    fn rx_prepare(&mut self, frame: Vec<u8>) -> Option<(Vec<u8>, Option<u16>, Vec<u8>)> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            self.counters.dropped += 1;
            return None;
        }
        if !self.accept(&frame) {
            return None;
        }
        let rctl = self.get(regs::RCTL);
        let mut data = frame.clone();
        let mut vlan = None;
        let vet = self.get(regs::VET) as u16;
        if self.get(regs::CTRL) & CTRL_VME != 0
            && get_be16(&data, 12) == Some(vet)
            && data.len() >= 18
        {
            vlan = get_be16(&data, 14);
            data.drain(12..16);
        }
        if data.len() < 60 {
            data.resize(60, 0);
        }
        // Long frames need RCTL.LPE (or SBP for stored bad packets); 1518 bytes + FCS else.
        if data.len() > 1518 && rctl & (RCTL_LPE | RCTL_SBP) == 0 {
            self.counters.dropped += 1;
            return None;
        }
        if rctl & RCTL_SECRC == 0 {
            let fcs = ethernet_fcs(&data);
            data.extend_from_slice(&fcs.to_le_bytes());
        }
        Some((data, vlan, frame))
    }

    fn rx_store(&mut self, mem: &mut dyn GuestMemory, data: &[u8], vlan: Option<u16>) -> RxStore {
        let Some((base, n, mut head, tail)) = self.ring(mem, false) else {
            return RxStore::Stopped;
        };
        let bsize = self.rx_buffer_size();
        let need = data.len().div_ceil(bsize) as u32;
        let free = (tail + n - head) % n;
        if free < need {
            if need > n.saturating_sub(1) {
                // Can never fit: drop instead of stalling the ring forever.
                self.counters.dropped += 1;
                return RxStore::Stored;
            }
            return RxStore::NoRoom;
        }
        for (i, chunk) in data.chunks(bsize).enumerate() {
            let at = base + u64::from(head) * 16;
            let mut d = [0u8; 16];
            if mem.read(at, &mut d).is_err() {
                return RxStore::Stopped;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or([0; 8]));
            if mem.write(addr, chunk).is_err() {
                let w = &mut self.ring_warned[0];
                if !*w {
                    *w = true;
                    log::warn!(target: "devices::e1000", "receive buffer {addr:#x} outside guest RAM; ring stopped");
                }
                return RxStore::Stopped;
            }
            let last = (i as u32) + 1 == need;
            let mut status = RXD_DD | RXD_IXSM;
            if last {
                status |= RXD_EOP;
            }
            if vlan.is_some() {
                status |= RXD_VP;
            }
            let mut wb = [0u8; 8];
            wb[0..2].copy_from_slice(&(chunk.len() as u16).to_le_bytes());
            wb[4] = status;
            wb[6..8].copy_from_slice(&vlan.unwrap_or(0).to_le_bytes());
            if mem.write(at + 8, &wb).is_err() {
                return RxStore::Stopped;
            }
            head = (head + 1) % n;
        }
        self.set(regs::RDH, head);
        self.counters.rx_frames += 1;
        self.bump(regs::GPRC, 1);
        self.bump(regs::TPR, 1);
        self.bump(regs::GORCL, data.len() as u32);
        if data.first().is_some_and(|b| b & 1 != 0) {
            if data[..6] == [0xff; 6] {
                self.bump(regs::BPRC, 1);
            } else {
                self.bump(regs::MPRC, 1);
            }
        }
        RxStore::Stored
    }
}

enum RxStore {
    Stored,
    NoRoom,
    Stopped,
}

impl PciDevice for E1000 {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        self.config.read(offset, size)
    }
    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        self.config.write(offset, size, value);
        if offset <= reg::COMMAND + 1 && offset + size > reg::COMMAND {
            // INTx Disable may have changed.
            self.update_irq();
        }
    }
}

impl crate::net::nic::BarFunction for E1000 {
    fn bar(&self) -> Option<(u64, u64)> {
        let mem_enabled = self.config.read(reg::COMMAND, 2) & 0x2 != 0;
        let base = self.config.bar_address(0);
        (mem_enabled && base != 0).then_some((u64::from(base), u64::from(BAR_SIZE)))
    }
    fn bar_read(&mut self, offset: u64, size: u8) -> u64 {
        self.mmio_read(offset, size)
    }
    fn bar_write(&mut self, offset: u64, size: u8, value: u64) {
        self.mmio_write(offset, size, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::IrqLines;
    use crate::virtio::FlatMemory;

    const MAC: MacAddr = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const IRQ: u8 = 10;
    const TX_RING: u64 = 0x1000;
    const RX_RING: u64 = 0x2000;
    const TX_BUF: u64 = 0x10000;
    const RX_BUF: u64 = 0x40000;

    struct Rig {
        nic: E1000,
        wire: NetPort,
        lines: IrqLines,
        mem: FlatMemory,
    }

    fn rig() -> Rig {
        let (guest, wire) = NetPort::pair();
        let lines = IrqLines::new();
        let mut nic = E1000::new(MAC, guest, lines.line(IRQ));
        nic.assign_bar0(0xe200_0000);
        Rig {
            nic,
            wire,
            lines,
            mem: FlatMemory(vec![0; 1 << 20]),
        }
    }

    impl Rig {
        fn w(&mut self, r: u32, v: u32) {
            self.nic.mmio_write(u64::from(r), 4, u64::from(v));
        }
        fn r(&mut self, r: u32) -> u32 {
            self.nic.mmio_read(u64::from(r), 4) as u32
        }
        fn irq(&self) -> bool {
            self.lines.levels() & (1 << IRQ) != 0
        }
        /// The bring-up Linux's e1000_open performs (rings, RCTL/TCTL, IMS).
        fn up(&mut self, rx_bufs: u32) {
            self.w(regs::TDBAL, TX_RING as u32);
            self.w(regs::TDBAH, 0);
            self.w(regs::TDLEN, 16 * 16);
            self.w(regs::TDH, 0);
            self.w(regs::TDT, 0);
            self.w(regs::TCTL, TCTL_EN | (1 << 3));
            self.w(regs::RDBAL, RX_RING as u32);
            self.w(regs::RDBAH, 0);
            self.w(regs::RDLEN, 16 * 16);
            self.w(regs::RDH, 0);
            for i in 0..16u64 {
                self.mem
                    .write(RX_RING + 16 * i, &(RX_BUF + 0x800 * i).to_le_bytes())
                    .unwrap();
            }
            self.w(regs::RDT, rx_bufs);
            self.w(regs::RCTL, RCTL_EN | RCTL_BAM);
            self.w(regs::IMS, icr::RXT0 | icr::TXDW | icr::LSC);
        }
        fn process(&mut self) {
            self.nic.process(&mut self.mem);
        }
        /// Write transmit descriptor `i` (raw 16 bytes).
        fn txd(&mut self, i: u64, d: [u8; 16]) {
            self.mem.write(TX_RING + 16 * i, &d).unwrap();
        }
    }

    fn legacy(addr: u64, len: u16, cmd: u8) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..10].copy_from_slice(&len.to_le_bytes());
        d[11] = cmd;
        d
    }

    /// The bit-banged Microwire read of Linux's e1000_read_eeprom (82540: no EERD use).
    fn ee_read(r: &mut Rig, addr: u16) -> u16 {
        let mut eecd = r.r(regs::EECD);
        eecd |= EECD_REQ;
        r.w(regs::EECD, eecd);
        assert!(r.r(regs::EECD) & EECD_GNT != 0);
        eecd &= !(EECD_DI | EECD_SK);
        r.w(regs::EECD, eecd);
        eecd |= EECD_CS;
        r.w(regs::EECD, eecd);
        let mut shift_out = |r: &mut Rig, data: u16, count: u32| {
            for i in (0..count).rev() {
                eecd &= !EECD_DI;
                if data & (1 << i) != 0 {
                    eecd |= EECD_DI;
                }
                r.w(regs::EECD, eecd);
                r.w(regs::EECD, eecd | EECD_SK);
                r.w(regs::EECD, eecd);
            }
        };
        shift_out(r, 0b110, 3);
        shift_out(r, addr, 6);
        let mut v = 0u16;
        eecd &= !(EECD_DO | EECD_DI);
        for _ in 0..16 {
            v <<= 1;
            r.w(regs::EECD, eecd | EECD_SK);
            if r.r(regs::EECD) & EECD_DO != 0 {
                v |= 1;
            }
            r.w(regs::EECD, eecd);
        }
        // Standby / release: CS low.
        r.w(regs::EECD, eecd & !(EECD_CS | EECD_SK | EECD_REQ));
        v
    }

    #[test]
    fn eeprom_bit_banged_and_eerd_reads_hold_mac_and_checksum() {
        let mut r = rig();
        let words: Vec<u16> = (0..64).map(|a| ee_read(&mut r, a)).collect();
        let sum = words.iter().fold(0u16, |a, &w| a.wrapping_add(w));
        assert_eq!(sum, 0xbaba);
        assert_eq!(words[0], 0x5452);
        assert_eq!(words[1], 0x1200);
        assert_eq!(words[2], 0x5634);
        r.w(regs::EERD, EERD_START | (2 << 8));
        let v = r.r(regs::EERD);
        assert!(v & EERD_DONE != 0);
        assert_eq!(v >> 16, 0x5634);
    }

    #[test]
    fn phy_reports_link_and_bad_phy_addresses_fail() {
        let mut r = rig();
        let mdic = |r: &mut Rig, op: u32, phy: u32, reg: u32, data: u32| {
            r.w(regs::MDIC, (op << 26) | (phy << 21) | (reg << 16) | data);
            r.r(regs::MDIC)
        };
        let v = mdic(&mut r, 2, 1, 2, 0);
        assert!(v & MDIC_READY != 0 && v & MDIC_ERROR == 0);
        assert_eq!(v & 0xffff, 0x0141);
        assert_eq!(mdic(&mut r, 2, 1, 3, 0) & 0xfff0, 0x0c20);
        // BMSR: link status and auto-negotiation complete.
        assert_eq!(mdic(&mut r, 2, 1, 1, 0) & 0x24, 0x24);
        // PHY reset + restart auto-negotiation self-clear.
        mdic(&mut r, 1, 1, 0, 0x9340);
        assert_eq!(mdic(&mut r, 2, 1, 0, 0) & 0x8200, 0);
        assert!(mdic(&mut r, 2, 2, 1, 0) & MDIC_ERROR != 0);
        let st = r.r(regs::STATUS);
        assert_eq!(st & 0x3, 0x3, "FD and LU");
        assert_eq!((st >> 6) & 3, 0b10, "1000 Mb/s");
        // CTRL.RST reloads RAL/RAH from the EEPROM and clears the mask.
        r.w(regs::IMS, 0xff);
        r.w(regs::RAL0, 0);
        r.w(regs::CTRL, CTRL_RST);
        assert_eq!(r.r(regs::IMS), 0);
        assert_eq!(r.r(regs::RAL0), 0x1200_5452);
        assert_eq!(r.r(regs::RAH0), 0x8000_5634);
    }

    #[test]
    fn legacy_transmit_and_receive_with_interrupts() {
        let mut r = rig();
        r.up(8);
        // LSC from ICS, as e1000_open fires it.
        r.w(regs::ICS, icr::LSC);
        assert!(r.irq());
        assert_eq!(r.r(regs::ICR), icr::LSC);
        assert!(!r.irq());
        // Transmit a 60-byte frame split over two legacy descriptors.
        let frame: Vec<u8> = (0..60u8).collect();
        r.mem.write(TX_BUF, &frame[..20]).unwrap();
        r.mem.write(TX_BUF + 0x100, &frame[20..]).unwrap();
        r.txd(0, legacy(TX_BUF, 20, 0));
        r.txd(1, legacy(TX_BUF + 0x100, 40, TXD_EOP | 0x02 | TXD_RS));
        r.w(regs::TDT, 2);
        assert!(r.nic.has_work());
        r.process();
        assert_eq!(r.wire.try_recv(), Some(frame));
        assert_eq!(r.r(regs::TDH), 2);
        let mut st = [0u8; 1];
        r.mem.read(TX_RING + 16 + 12, &mut st).unwrap();
        assert_eq!(st[0] & 1, 1, "DD written back on the RS descriptor");
        assert!(r.irq());
        assert_eq!(
            r.r(regs::ICR) & (icr::TXDW | icr::TXQE),
            icr::TXDW | icr::TXQE
        );

        // Receive: one frame for us, one for someone else, one broadcast.
        let mut ours = MAC.to_vec();
        ours.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        ours.extend(std::iter::repeat(0xab).take(100));
        let mut other = ours.clone();
        other[5] ^= 1;
        let mut bcast = ours.clone();
        bcast[..6].fill(0xff);
        for f in [&ours, &other, &bcast] {
            assert!(r.wire.send(f.clone()));
        }
        assert!(r.nic.can_receive());
        r.process();
        assert_eq!(r.r(regs::RDH), 2);
        let mut d = [0u8; 16];
        r.mem.read(RX_RING, &mut d).unwrap();
        let len = usize::from(u16::from_le_bytes([d[8], d[9]]));
        assert_eq!(len, ours.len() + 4, "FCS appended");
        assert_eq!(d[12] & (RXD_DD | RXD_EOP), RXD_DD | RXD_EOP);
        let mut got = vec![0u8; len];
        r.mem.read(RX_BUF, &mut got).unwrap();
        assert_eq!(&got[..ours.len()], &ours[..]);
        assert_eq!(
            u32::from_le_bytes(got[ours.len()..].try_into().unwrap()),
            ethernet_fcs(&ours)
        );
        let mut b = vec![0u8; 6];
        r.mem.read(RX_BUF + 0x800, &mut b).unwrap();
        assert_eq!(b, [0xff; 6]);
        assert!(r.irq());
        assert!(r.r(regs::ICR) & icr::RXT0 != 0);
        assert_eq!(r.nic.counters.rx_frames, 2);
        // Statistics clear on read.
        assert_eq!(r.r(regs::GPRC), 2);
        assert_eq!(r.r(regs::GPRC), 0);
    }

    #[test]
    fn full_receive_ring_holds_the_frame_until_the_driver_refills() {
        let mut r = rig();
        r.up(1);
        let mut f = MAC.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend(std::iter::repeat(1).take(50));
        assert!(r.wire.send(f.clone()));
        let mut g = f.clone();
        g[20] = 2;
        assert!(r.wire.send(g.clone()));
        r.process();
        assert_eq!(r.r(regs::RDH), 1);
        assert!(!r.nic.can_receive());
        assert!(!r.nic.has_work());
        r.w(regs::RDT, 2);
        assert!(r.nic.has_work());
        r.process();
        assert_eq!(r.r(regs::RDH), 2);
        let mut b = [0u8; 1];
        r.mem.read(RX_BUF + 0x800 + 20, &mut b).unwrap();
        assert_eq!(b[0], 2);
    }

    fn ipv4_tcp(payload: usize) -> Vec<u8> {
        let mut p = vec![
            2, 0, 0, 0, 0, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x00,
        ];
        let total = 20 + 20 + payload;
        p.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        p.extend_from_slice(&[10, 0, 1, 2, 10, 0, 1, 1]);
        // TCP: ports, seq 1000, ack, data offset 5, flags PSH|ACK|FIN, window.
        p.extend_from_slice(&[
            0x13, 0x89, 0x00, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 1, 0x50, 0x19, 0xff, 0xff, 0, 0, 0,
            0,
        ]);
        p.extend((0..payload).map(|i| (i * 7) as u8));
        p
    }

    fn tcp_checksum_ok(seg: &[u8]) -> bool {
        let ihl = usize::from(seg[14] & 0xf) * 4;
        let l4 = &seg[14 + ihl..];
        let mut sum = csum_add(0, &seg[14 + 12..14 + 20]);
        sum += 6 + l4.len() as u64;
        csum_fold(csum_add(sum, l4)) == 0xffff
    }

    #[test]
    fn tso_segments_with_fixed_up_headers_and_checksums() {
        let mut r = rig();
        r.up(0);
        let pkt = ipv4_tcp(2500);
        // What Linux's e1000_tso leaves in the header: IP checksum 0, TCP checksum seeded
        // with the pseudo-header sum without the length.
        let mut pkt = pkt;
        let seed = csum_fold(csum_add(6, &pkt[26..34]));
        pkt[50..52].copy_from_slice(&seed.to_be_bytes());
        r.mem.write(TX_BUF, &pkt).unwrap();
        let hdrlen = 54u8;
        let mss = 1000u16;
        let mut ctx = [0u8; 16];
        ctx[0] = 14; // IPCSS
        ctx[1] = 14 + 10; // IPCSO
        ctx[2..4].copy_from_slice(&33u16.to_le_bytes()); // IPCSE
        ctx[4] = 34; // TUCSS
        ctx[5] = 34 + 16; // TUCSO
        let paylen = (pkt.len() - usize::from(hdrlen)) as u32;
        let dw = paylen | (u32::from(TXD_DEXT | TXD_TSE | TUCMD_IP | TUCMD_TCP) << 24);
        ctx[8..12].copy_from_slice(&dw.to_le_bytes());
        ctx[13] = hdrlen;
        ctx[14..16].copy_from_slice(&mss.to_le_bytes());
        r.txd(0, ctx);
        // Two data descriptors: header + part of the payload, then the rest.
        let data = |addr: u64, len: u32, cmd: u8| {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            let dw = len | (1 << 20) | (u32::from(cmd | TXD_DEXT | TXD_TSE) << 24);
            d[8..12].copy_from_slice(&dw.to_le_bytes());
            d[13] = POPTS_IXSM | POPTS_TXSM;
            d
        };
        r.txd(1, data(TX_BUF, 600, 0));
        r.txd(
            2,
            data(TX_BUF + 600, (pkt.len() - 600) as u32, TXD_EOP | TXD_RS),
        );
        r.w(regs::TDT, 3);
        r.process();
        let segs: Vec<Vec<u8>> = std::iter::from_fn(|| r.wire.try_recv()).collect();
        assert_eq!(segs.len(), 3);
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let plen = if i < 2 { 1000 } else { 500 };
            assert_eq!(s.len(), 54 + plen);
            assert_eq!(usize::from(u16::from_be_bytes([s[16], s[17]])), 40 + plen);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x1234 + i as u16);
            assert_eq!(
                csum_fold(csum_add(0, &s[14..34])),
                0xffff,
                "IP checksum {i}"
            );
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 1000 + 1000 * i as u32);
            let flags = s[47];
            assert_eq!(
                flags & 0x09 != 0,
                i == 2,
                "FIN/PSH only on the last segment"
            );
            assert!(tcp_checksum_ok(s), "TCP checksum {i}");
            payload.extend_from_slice(&s[54..]);
        }
        assert_eq!(payload, pkt[54..]);
    }

    #[test]
    fn checksum_offload_without_tso() {
        let mut r = rig();
        r.up(0);
        let mut pkt = ipv4_tcp(100);
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum including the length.
        let seed = csum_fold(csum_add(6 + 120, &pkt[26..34]));
        pkt[50..52].copy_from_slice(&seed.to_be_bytes());
        r.mem.write(TX_BUF, &pkt).unwrap();
        let mut ctx = [0u8; 16];
        ctx[4] = 34;
        ctx[5] = 50;
        ctx[8..12].copy_from_slice(&(u32::from(TXD_DEXT | TUCMD_TCP) << 24).to_le_bytes());
        r.txd(0, ctx);
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&TX_BUF.to_le_bytes());
        let dw = pkt.len() as u32 | (1 << 20) | (u32::from(TXD_EOP | TXD_RS | TXD_DEXT) << 24);
        d[8..12].copy_from_slice(&dw.to_le_bytes());
        d[13] = POPTS_TXSM;
        r.txd(1, d);
        r.w(regs::TDT, 2);
        r.process();
        let s = r.wire.try_recv().unwrap();
        assert!(tcp_checksum_ok(&s));
    }

    #[test]
    fn bad_rings_stop_without_touching_memory() {
        let mut r = rig();
        r.up(4);
        let before = r.mem.0.clone();
        // Transmit ring beyond guest RAM.
        r.w(regs::TDBAL, 0xfff0_0000);
        r.w(regs::TDT, 3);
        r.process();
        // Tail beyond the ring.
        r.w(regs::TDBAL, TX_RING as u32);
        r.w(regs::TDT, 100);
        r.process();
        // Descriptor pointing outside RAM.
        r.txd(0, legacy(0xffff_ffff_0000, 100, TXD_EOP | TXD_RS));
        r.w(regs::TDH, 0);
        r.w(regs::TDT, 1);
        r.process();
        assert_eq!(r.wire.try_recv(), None);
        // Receive ring with a huge length and a buffer outside RAM.
        r.mem
            .write(RX_RING, &0xffff_ffff_0000u64.to_le_bytes())
            .unwrap();
        let mut f = MAC.to_vec();
        f.extend_from_slice(&[0; 60]);
        assert!(r.wire.send(f));
        r.process();
        assert_eq!(r.r(regs::RDH), 0);
        r.w(regs::RDLEN, 0xf_ff80);
        r.process();
        let mut after = r.mem.0.clone();
        // Only the descriptors this test wrote differ.
        after[TX_RING as usize..TX_RING as usize + 16]
            .copy_from_slice(&before[TX_RING as usize..TX_RING as usize + 16]);
        after[RX_RING as usize..RX_RING as usize + 8]
            .copy_from_slice(&before[RX_RING as usize..RX_RING as usize + 8]);
        assert!(after == before);
    }

    #[test]
    fn multicast_hash_filter() {
        let mut r = rig();
        r.up(8);
        let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
        // MO = 0: hash = dst[4] >> 4 | dst[5] << 4.
        let hash = (u32::from(group[4]) >> 4) | (u32::from(group[5]) << 4);
        let mut f = group.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&[0; 50]);
        assert!(r.wire.send(f.clone()));
        r.process();
        assert_eq!(r.r(regs::RDH), 0, "not in the MTA: dropped");
        r.w(regs::MTA + 4 * (hash >> 5), 1 << (hash & 31));
        assert!(r.wire.send(f));
        r.process();
        assert_eq!(r.r(regs::RDH), 1);
    }

    /// Deterministic stress in the spirit of the `e1000_rings` fuzz target: random writes to
    /// the ring, control and offload registers, random descriptors in RAM and random frames;
    /// nothing may panic and every DMA stays inside the 256 KiB of RAM.
    #[test]
    fn random_register_and_ring_stress_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let interesting = [
            regs::CTRL,
            regs::EECD,
            regs::EERD,
            regs::MDIC,
            regs::ICR,
            regs::ICS,
            regs::IMS,
            regs::IMC,
            regs::RCTL,
            regs::TCTL,
            regs::RDBAL,
            regs::RDBAH,
            regs::RDLEN,
            regs::RDH,
            regs::RDT,
            regs::TDBAL,
            regs::TDBAH,
            regs::TDLEN,
            regs::TDH,
            regs::TDT,
            regs::MTA,
            regs::RAL0,
            regs::RAH0,
            regs::VET,
        ];
        for round in 0..20 {
            let mut r = rig();
            r.mem = FlatMemory((0..256 << 10).map(|_| next() as u8).collect());
            r.up(round % 16);
            for _ in 0..400 {
                let v = next();
                match v % 5 {
                    0 | 1 => {
                        let reg = interesting[(v >> 8) as usize % interesting.len()];
                        // Mostly small values so rings land inside RAM.
                        let val = if v & 0x100_0000 != 0 {
                            (v >> 32) as u32
                        } else {
                            (v >> 32) as u32 & 0x3_ffff
                        };
                        r.w(reg, val);
                    }
                    2 => {
                        let len = (v >> 16) as usize % 2000;
                        let at = (v >> 40) as usize % (200 << 10);
                        let f = r.mem.0[at..at + len].to_vec();
                        let _ = r.wire.send(f);
                    }
                    3 => {
                        let at = (v >> 20) as usize % ((256 << 10) - 16);
                        let d = next().to_le_bytes();
                        r.mem.0[at..at + 8].copy_from_slice(&d);
                    }
                    _ => r.process(),
                }
                while r.wire.try_recv().is_some() {}
            }
        }
    }
}
