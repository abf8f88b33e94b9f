//! BusLogic BT-958 ("MultiMaster" W series, firmware 5.07B) PCI SCSI host adapter, the HBA that
//! Linux's in-tree `BusLogic` driver (drivers/scsi/BusLogic.c) drives, exposing up to seven
//! [`ScsiDisk`] targets (SCSI IDs 0-6; the adapter is ID 7).
//!
//! # Interface (BusLogic MultiMaster host adapter technical reference, as used by Linux)
//!
//! Four I/O registers at BAR 0 (mirrored at the start of memory BAR 1):
//!
//! | offset | read                    | write                       |
//! |--------|-------------------------|-----------------------------|
//! | 0      | status ([`status`])     | control ([`control`])       |
//! | 1      | data-in (reply bytes)   | command / parameter         |
//! | 2      | interrupt ([`intr`])    | -                           |
//! | 3      | geometry (0: no translation) | -                      |
//!
//! Adapter commands are an opcode byte, a fixed (or self-described) number of parameter bytes
//! and reply bytes read from the data-in register; completion sets CMDC in the interrupt
//! register. SCSI commands travel in 32-bit mode mailboxes set up by Initialize Extended
//! Mailbox (0x81): `count` outgoing mailboxes (CCB address u32, 3 reserved bytes, action code)
//! followed by `count` incoming mailboxes (CCB address u32, host adapter status, target status,
//! reserved, completion code). The driver fills an outgoing mailbox and writes Start Mailbox
//! Command (0x02); the adapter runs each CCB, DMAs data through its data pointer or
//! scatter/gather list, writes autosense data, stores the statuses in CCB bytes 14-15, posts an
//! incoming mailbox and raises IMBL.
//!
//! Mailbox work runs in [`BusLogic::process`] (on the vCPU thread after a slice, like the
//! virtio queues), with DMA through the bounds-checked [`GuestMemory`]. Guest-supplied
//! addresses, counts, lengths, SG lists and action codes are untrusted: bad ones complete the
//! CCB with the adapter's error status (0x15 invalid outgoing mailbox action, 0x16 invalid CCB
//! opcode, 0x1A invalid CCB parameter, 0x20 host adapter hardware failure for DMA outside
//! RAM), never a host panic.
//!
//! Not modelled: the 24-bit (ISA) mailbox format of Initialize Mailbox (0x01), target mode,
//! the BIOS commands, local RAM writes and firmware download; they report Command Invalid.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::bus::{MmioDevice, PioDevice};

use crate::irq::IrqLine;
use crate::pci::{reg, BarKind, PciConfigSpace, PciDevice};
use crate::scsi::cdb::Cdb;
use crate::scsi::disk::{BLOCK_SIZE, MAX_TRANSFER_BLOCKS};
use crate::scsi::{unsupported_lun, ScsiDisk, ScsiResponse, Status};
use crate::virtio::GuestMemory;

/// PCI vendor ID of BusLogic (Mylex).
pub const VENDOR_ID: u16 = 0x104b;
/// PCI device ID of the MultiMaster adapters (BT-946C/948/958).
pub const DEVICE_ID: u16 = 0x1040;
/// Size of the I/O BAR (bytes).
pub const IO_SIZE: u16 = 4;
/// Size of the memory BAR (bytes; the registers are mirrored at offsets 0-3).
pub const MMIO_SIZE: u32 = 0x1000;
/// SCSI ID of the adapter itself.
pub const HOST_ID: u8 = 7;
/// Number of targets the adapter can hold (narrow bus: IDs 0-7 minus the adapter).
pub const MAX_TARGETS: usize = 7;
/// Scatter/gather segments per CCB the adapter reports (Inquire Extended Setup Information).
pub const SG_LIMIT: u16 = 128;
/// Largest SG list the adapter walks (entries); longer lists are an invalid CCB parameter.
const SG_MAX_WALK: u32 = 8192;
/// Largest data transfer of one CCB (bytes): the disk target's limit.
const MAX_XFER: u64 = MAX_TRANSFER_BLOCKS as u64 * BLOCK_SIZE as u64;

/// Status register bits (read at offset 0).
pub mod status {
    /// Command Invalid.
    pub const CMDINV: u8 = 0x01;
    /// Data In Register Ready.
    pub const DIRRDY: u8 = 0x04;
    /// Command/Parameter Out Register Busy.
    pub const CPRBSY: u8 = 0x08;
    /// Host Adapter Ready.
    pub const HARDY: u8 = 0x10;
    /// Mailbox Initialization Required.
    pub const INREQ: u8 = 0x20;
    /// Diagnostic Failure.
    pub const DFAIL: u8 = 0x40;
    /// Diagnostic Active.
    pub const DACT: u8 = 0x80;
}

/// Interrupt register bits (read at offset 2).
pub mod intr {
    /// Incoming Mailbox Loaded.
    pub const IMBL: u8 = 0x01;
    /// Outgoing Mailbox Available.
    pub const OMBR: u8 = 0x02;
    /// Command Complete.
    pub const CMDC: u8 = 0x04;
    /// External SCSI Bus Reset.
    pub const SCRD: u8 = 0x08;
    /// Interrupt Valid (any of the above).
    pub const INTV: u8 = 0x80;
}

/// Control register bits (written at offset 0).
pub mod control {
    /// SCSI Bus Reset.
    pub const SCRST: u8 = 0x10;
    /// Interrupt Reset.
    pub const IRST: u8 = 0x20;
    /// Soft Reset.
    pub const SRST: u8 = 0x40;
    /// Hard Reset (also resets the SCSI bus).
    pub const HRST: u8 = 0x80;
}

/// Host adapter status codes (incoming mailbox byte 4, CCB byte 14).
pub mod hastat {
    /// Command completed normally.
    pub const OK: u8 = 0x00;
    /// Selection timeout: no device at that target ID.
    pub const SELECT_TIMEOUT: u8 = 0x11;
    /// Data overrun / underrun.
    pub const DATA_OVERRUN: u8 = 0x12;
    /// Invalid outgoing mailbox action code.
    pub const INVALID_OUTBOX_CODE: u8 = 0x15;
    /// Invalid CCB operation code.
    pub const INVALID_CMD_CODE: u8 = 0x16;
    /// Invalid CCB parameter.
    pub const BAD_CMD_PARAM: u8 = 0x1a;
    /// Host adapter hardware failure (here: DMA outside guest RAM).
    pub const HW_FAIL: u8 = 0x20;
}

/// Incoming mailbox completion codes (byte 7).
pub mod comp {
    /// Incoming mailbox free.
    pub const FREE: u8 = 0x00;
    /// CCB completed without error.
    pub const GOOD: u8 = 0x01;
    /// Aborted CCB not found.
    pub const NOT_FOUND: u8 = 0x03;
    /// CCB completed with error (see the statuses).
    pub const ERROR: u8 = 0x04;
}

/// Adapter command opcodes (written at offset 1).
pub mod op {
    /// Test Command Complete Interrupt.
    pub const TEST_CMDC: u8 = 0x00;
    /// Initialize Mailbox (24-bit mode; not supported).
    pub const INIT_MBOX: u8 = 0x01;
    /// Start Mailbox Command.
    pub const START_MBOX: u8 = 0x02;
    /// Inquire Board ID.
    pub const INQ_BOARD_ID: u8 = 0x04;
    /// Enable Outgoing Mailbox Available Interrupt.
    pub const ENABLE_OMBR_INT: u8 = 0x05;
    /// Set SCSI Selection Time Out.
    pub const SET_SEL_TIMEOUT: u8 = 0x06;
    /// Set Preempt Time on Bus.
    pub const SET_PREEMPT: u8 = 0x07;
    /// Set Time Off Bus.
    pub const SET_TIMEOFF: u8 = 0x08;
    /// Set Bus Transfer Rate.
    pub const SET_RATE: u8 = 0x09;
    /// Inquire Installed Devices ID 0 to 7.
    pub const INQ_DEV0TO7: u8 = 0x0a;
    /// Inquire Configuration.
    pub const INQ_CONFIG: u8 = 0x0b;
    /// Inquire Setup Information.
    pub const INQ_SETUP: u8 = 0x0d;
    /// Echo Command Data.
    pub const ECHO: u8 = 0x1f;
    /// Host Adapter Diagnostic.
    pub const DIAG: u8 = 0x20;
    /// Set Adapter Options.
    pub const SET_OPTIONS: u8 = 0x21;
    /// Inquire Installed Devices ID 8 to 15.
    pub const INQ_DEV8TO15: u8 = 0x23;
    /// Inquire Target Devices.
    pub const INQ_DEV: u8 = 0x24;
    /// Disable Host Adapter Interrupt.
    pub const DISABLE_INT: u8 = 0x25;
    /// Initialize Extended Mailbox (32-bit mode).
    pub const INIT_EXT_MBOX: u8 = 0x81;
    /// Inquire Firmware Version 3rd Digit.
    pub const INQ_FW_D3: u8 = 0x84;
    /// Inquire Firmware Version Letter.
    pub const INQ_FW_LETTER: u8 = 0x85;
    /// Inquire PCI Host Adapter Information.
    pub const INQ_PCI_INFO: u8 = 0x86;
    /// Inquire Host Adapter Model Number.
    pub const INQ_MODEL: u8 = 0x8b;
    /// Inquire Synchronous Period.
    pub const INQ_SYNC_PERIOD: u8 = 0x8c;
    /// Inquire Extended Setup Information.
    pub const INQ_EXT_SETUP: u8 = 0x8d;
    /// Enable Strict Round Robin Mode.
    pub const STRICT_RR: u8 = 0x8f;
    /// Fetch Host Adapter Local RAM.
    pub const FETCH_LOCAL_RAM: u8 = 0x91;
    /// Modify I/O Address (ISA-compatible port of PCI adapters).
    pub const MOD_IO_ADDR: u8 = 0x95;
    /// Set CCB Format (legacy / extended LUN).
    pub const SET_CCB_FORMAT: u8 = 0x96;
}

/// Parameter bytes of `opcode`, or `None` if the adapter does not implement it.
/// [`op::SET_OPTIONS`] takes one more byte than its first parameter says; that is handled
/// when the first parameter arrives.
fn param_len(opcode: u8) -> Option<usize> {
    Some(match opcode {
        op::TEST_CMDC | op::START_MBOX | op::INQ_BOARD_ID | op::INQ_DEV0TO7 | op::INQ_CONFIG => 0,
        op::DIAG | op::INQ_DEV8TO15 | op::INQ_DEV | op::INQ_FW_D3 | op::INQ_FW_LETTER => 0,
        op::INQ_PCI_INFO => 0,
        op::ENABLE_OMBR_INT | op::SET_PREEMPT | op::SET_TIMEOFF | op::SET_RATE => 1,
        op::INQ_SETUP | op::ECHO | op::SET_OPTIONS | op::DISABLE_INT | op::INQ_MODEL => 1,
        op::INQ_SYNC_PERIOD | op::INQ_EXT_SETUP | op::STRICT_RR | op::MOD_IO_ADDR => 1,
        op::SET_CCB_FORMAT => 1,
        op::FETCH_LOCAL_RAM => 2,
        op::SET_SEL_TIMEOUT => 4,
        op::INIT_EXT_MBOX => 5,
        _ => return None,
    })
}

/// Board ID reply: board type, custom features, firmware major and minor digits ("5.0").
const BOARD_ID: [u8; 4] = [b'A', b'A', b'5', b'0'];
/// Firmware version third digit and letter: 5.07B.
const FW_D3: u8 = b'7';
const FW_LETTER: u8 = b'B';
/// Model number reply ("958", space terminated).
const MODEL: &[u8] = b"958 ";

/// Where a CCB's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
    None,
}

/// The BT-958 host adapter: PCI function, registers, mailboxes and targets.
pub struct BusLogic {
    config: PciConfigSpace,
    irq: IrqLine,
    targets: Vec<Option<ScsiDisk>>,
    status: u8,
    intr: u8,
    /// Status reads left that still show Diagnostic Active after a reset.
    diag_reads: u8,
    /// Opcode being received, with the parameters so far and the number expected.
    cmd: Option<(u8, Vec<u8>, usize)>,
    reply: VecDeque<u8>,
    /// Extended mailboxes: (count, base address), once initialized.
    mbox: Option<(u32, u32)>,
    out_idx: u32,
    in_idx: u32,
    /// Completions waiting for a free incoming mailbox.
    pending: VecDeque<[u8; 8]>,
    /// Start Mailbox Commands written since the last scan: in strict round robin mode each
    /// one makes the adapter examine exactly one (the next) outgoing mailbox.
    start: u32,
    strict_rr: bool,
    ext_lun: bool,
    int_enabled: bool,
    isa_port: u8,
    io_base: u16,
}

impl std::fmt::Debug for BusLogic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusLogic")
            .field("status", &self.status)
            .field("intr", &self.intr)
            .field("mbox", &self.mbox)
            .finish_non_exhaustive()
    }
}

impl BusLogic {
    /// An adapter with `disks` at SCSI IDs 0, 1, ... (at most [`MAX_TARGETS`]; extra disks are
    /// an error), interrupting on `irq` (INTA#; also written to the interrupt line register).
    pub fn new(disks: Vec<ScsiDisk>, irq: IrqLine) -> Result<Self, String> {
        if disks.len() > MAX_TARGETS {
            return Err(format!(
                "a BusLogic adapter holds at most {MAX_TARGETS} disks (got {})",
                disks.len()
            ));
        }
        // Class 01/00/00: mass storage, SCSI bus controller.
        let mut config = PciConfigSpace::new(VENDOR_ID, DEVICE_ID, [0x01, 0x00, 0x00], 0x08, 0);
        config.set_bar(0, BarKind::Io, u32::from(IO_SIZE));
        config.set_bar(
            1,
            BarKind::Mem32 {
                prefetchable: false,
            },
            MMIO_SIZE,
        );
        config.set_u16(0x2c, VENDOR_ID);
        config.set_u16(0x2e, DEVICE_ID);
        config.set_byte(reg::INTERRUPT_PIN, 1, 0);
        config.set_byte(reg::INTERRUPT_LINE, irq.number(), 0xff);
        let mut targets: Vec<Option<ScsiDisk>> = disks.into_iter().map(Some).collect();
        targets.resize_with(8, || None);
        let mut s = Self {
            config,
            irq,
            targets,
            status: 0,
            intr: 0,
            diag_reads: 0,
            cmd: None,
            reply: VecDeque::new(),
            mbox: None,
            out_idx: 0,
            in_idx: 0,
            pending: VecDeque::new(),
            start: 0,
            strict_rr: false,
            ext_lun: false,
            int_enabled: true,
            isa_port: 6,
            io_base: 0,
        };
        s.reset();
        s.diag_reads = 0;
        Ok(s)
    }

    /// Sets the Interrupt Line register (what firmware writes: the ISA IRQ the INTx pin's PIRQ
    /// is routed to at power-on).
    pub fn set_interrupt_line(&mut self, irq: u8) {
        self.config.set_byte(reg::INTERRUPT_LINE, irq, 0xff);
    }

    /// Firmware-style BAR assignment: I/O BAR 0 at `io`, memory BAR 1 at `mem`.
    pub fn assign_bars(&mut self, io: u16, mem: u32) {
        self.io_base = io;
        self.config.write(reg::BAR0, 4, u32::from(io));
        self.config.write(reg::BAR0 + 4, 4, mem);
        // I/O and memory decoding on, as firmware leaves a boot adapter.
        self.config.write(reg::COMMAND, 2, 0x0003);
    }

    /// The disk at SCSI ID `id` (power-off handling, tests).
    pub fn disk_mut(&mut self, id: usize) -> Option<&mut ScsiDisk> {
        self.targets.get_mut(id).and_then(|t| t.as_mut())
    }

    /// All disks (power-off handling).
    pub fn disks_mut(&mut self) -> impl Iterator<Item = &mut ScsiDisk> {
        self.targets.iter_mut().flatten()
    }

    /// Whether mailbox work is queued for [`BusLogic::process`].
    pub fn has_work(&self) -> bool {
        self.mbox.is_some() && (self.start > 0 || !self.pending.is_empty())
    }

    fn update_irq(&self) {
        self.irq
            .set(self.int_enabled && self.intr & intr::INTV != 0);
    }

    fn raise(&mut self, bits: u8) {
        self.intr |= bits | intr::INTV;
        self.update_irq();
    }

    /// Hard or soft reset: mailboxes, commands and interrupts are cleared; the next status
    /// read shows Diagnostic Active, then the adapter is ready and needs mailbox setup.
    fn reset(&mut self) {
        self.status = status::HARDY | status::INREQ;
        self.intr = 0;
        self.diag_reads = 1;
        self.cmd = None;
        self.reply.clear();
        self.mbox = None;
        self.out_idx = 0;
        self.in_idx = 0;
        self.pending.clear();
        self.start = 0;
        self.strict_rr = false;
        self.ext_lun = false;
        self.int_enabled = true;
        self.update_irq();
    }

    /// Register read of one byte at `offset` (0-3).
    pub fn read_reg(&mut self, offset: u16) -> u8 {
        match offset {
            0 => {
                if self.diag_reads > 0 {
                    self.diag_reads -= 1;
                    return status::DACT;
                }
                self.status
            }
            1 => {
                let b = self.reply.pop_front().unwrap_or(0);
                if self.reply.is_empty() && self.status & status::DIRRDY != 0 {
                    self.status &= !status::DIRRDY;
                    self.finish_cmd();
                }
                b
            }
            2 => self.intr,
            // Geometry: no extended translation, no BIOS drives.
            3 => 0,
            _ => 0xff,
        }
    }

    /// Register write of one byte at `offset` (0-3).
    pub fn write_reg(&mut self, offset: u16, v: u8) {
        match offset {
            0 => {
                if v & (control::HRST | control::SRST) != 0 {
                    self.reset();
                    return;
                }
                if v & control::IRST != 0 {
                    self.intr = 0;
                    self.update_irq();
                }
                // SCRST: commands complete synchronously, so none is in flight to abort.
            }
            1 => self.command_byte(v),
            _ => {}
        }
    }

    fn command_byte(&mut self, v: u8) {
        let Some((opcode, mut params, need)) = self.cmd.take() else {
            // A new opcode: any unread reply of an earlier command is dropped.
            self.reply.clear();
            self.status &= !(status::CMDINV | status::DIRRDY);
            match param_len(v) {
                None => {
                    log::debug!(target: "devices::buslogic", "invalid adapter command {v:#04x}");
                    self.status |= status::CMDINV;
                    self.finish_cmd();
                }
                Some(0) => self.execute(v, &[]),
                Some(n) => {
                    self.status &= !status::HARDY;
                    self.cmd = Some((v, Vec::with_capacity(n), n));
                }
            }
            return;
        };
        params.push(v);
        let need = if opcode == op::SET_OPTIONS && params.len() == 1 {
            1 + usize::from(v)
        } else {
            need
        };
        if params.len() < need {
            self.cmd = Some((opcode, params, need));
        } else {
            self.execute(opcode, &params);
        }
    }

    /// Command done: ready again, Command Complete interrupt.
    fn finish_cmd(&mut self) {
        self.status |= status::HARDY;
        self.raise(intr::CMDC);
    }

    fn invalid(&mut self) {
        self.status |= status::CMDINV;
        self.finish_cmd();
    }

    fn execute(&mut self, opcode: u8, p: &[u8]) {
        let reply: Vec<u8> = match opcode {
            op::TEST_CMDC | op::DIAG => Vec::new(),
            op::START_MBOX => {
                // No Command Complete for this one: the driver writes it without the
                // handshake, and completions arrive as incoming mailboxes.
                self.status |= status::HARDY;
                self.start = self.start.saturating_add(1);
                return;
            }
            op::INQ_BOARD_ID => BOARD_ID.to_vec(),
            op::ENABLE_OMBR_INT | op::SET_SEL_TIMEOUT | op::SET_PREEMPT | op::SET_TIMEOFF => {
                Vec::new()
            }
            op::SET_RATE | op::SET_OPTIONS => Vec::new(),
            op::INQ_DEV0TO7 => (0..8).map(|t| u8::from(self.present(t))).collect(),
            op::INQ_DEV8TO15 => vec![0; 8],
            op::INQ_DEV => {
                let m: u16 = (0..8).filter(|&t| self.present(t)).map(|t| 1 << t).sum();
                m.to_le_bytes().to_vec()
            }
            op::INQ_CONFIG => {
                let irq_bits = match self.irq.number() {
                    9 => 0x01,
                    10 => 0x02,
                    11 => 0x04,
                    12 => 0x08,
                    14 => 0x20,
                    15 => 0x40,
                    _ => 0,
                };
                vec![0, irq_bits, HOST_ID]
            }
            op::INQ_SETUP => self.setup_info(usize::from(p[0])),
            op::ECHO => vec![p[0]],
            op::DISABLE_INT => {
                self.int_enabled = p[0] & 1 == 0;
                self.update_irq();
                Vec::new()
            }
            op::INIT_EXT_MBOX => {
                let count = u32::from(p[0]);
                let base = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
                if count == 0 {
                    return self.invalid();
                }
                self.mbox = Some((count, base));
                self.out_idx = 0;
                self.in_idx = 0;
                self.pending.clear();
                self.status &= !status::INREQ;
                Vec::new()
            }
            op::INQ_FW_D3 => vec![FW_D3],
            op::INQ_FW_LETTER => vec![FW_LETTER],
            op::INQ_PCI_INFO => {
                // ISA port, IRQ, termination (low+high, valid), reserved.
                vec![self.isa_port, self.irq.number(), 0x83, 0]
            }
            op::INQ_MODEL => sized(MODEL, usize::from(p[0])),
            // Asynchronous transfers: period 0 for every target.
            op::INQ_SYNC_PERIOD => vec![0; usize::from(p[0])],
            op::INQ_EXT_SETUP => self.ext_setup(usize::from(p[0])),
            op::STRICT_RR => {
                if p[0] > 1 {
                    return self.invalid();
                }
                self.strict_rr = p[0] == 1;
                Vec::new()
            }
            op::FETCH_LOCAL_RAM => {
                let ram = local_ram();
                let (off, n) = (usize::from(p[0]), usize::from(p[1]));
                (off..off + n)
                    .map(|i| ram.get(i).copied().unwrap_or(0))
                    .collect()
            }
            op::MOD_IO_ADDR => {
                if p[0] > 7 {
                    self.status |= status::CMDINV;
                } else {
                    self.isa_port = p[0];
                }
                // Modify I/O Address completes without a Command Complete interrupt.
                self.status |= status::HARDY;
                return;
            }
            op::SET_CCB_FORMAT => {
                if p[0] > 1 {
                    return self.invalid();
                }
                self.ext_lun = p[0] == 1;
                Vec::new()
            }
            _ => return self.invalid(),
        };
        if reply.is_empty() {
            self.finish_cmd();
        } else {
            // Host Adapter Ready stays clear until the host has read every reply byte.
            self.status &= !status::HARDY;
            self.status |= status::DIRRDY;
            self.reply = reply.into();
        }
    }

    fn present(&self, t: usize) -> bool {
        self.targets.get(t).is_some_and(|d| d.is_some())
    }

    /// Inquire Setup Information reply, `n` bytes.
    fn setup_info(&self, n: usize) -> Vec<u8> {
        let mut b = [0u8; 34];
        b[0] = 0x02; // parity checking on, synchronous negotiation off
        let (count, base) = self.mbox.unwrap_or((0, 0));
        b[4] = count as u8;
        b[5..8].copy_from_slice(&base.to_be_bytes()[1..]);
        b[16] = 0xff; // disconnect permitted, IDs 0-7
        b[17] = b'B';
        b[18] = b'D';
        b[19] = b'E';
        sized(&b, n)
    }

    /// Inquire Extended Setup Information reply, `n` bytes.
    fn ext_setup(&self, n: usize) -> Vec<u8> {
        let mut b = [0u8; 14];
        b[0] = b'E'; // bus type
        b[1] = 0; // BIOS disabled
        b[2..4].copy_from_slice(&SG_LIMIT.to_le_bytes());
        let (count, base) = self.mbox.unwrap_or((0, 0));
        b[4] = count as u8;
        b[5..9].copy_from_slice(&base.to_le_bytes());
        b[9] = 0x40; // level-sensitive interrupt (PCI)
        b[10..13].copy_from_slice(b"07B");
        b[13] = 0; // narrow, single-ended, no SCAM, not Ultra
        sized(&b, n)
    }

    /// Run the outgoing mailboxes after Start Mailbox Command, and deliver completions that
    /// waited for a free incoming mailbox.
    ///
    /// Strict round robin mode examines one outgoing mailbox per Start Mailbox Command, so an
    /// entry the host is still filling (its action code stored before its CCB address) is
    /// never taken early; the default mode scans every outgoing mailbox once.
    pub fn process(&mut self, mem: &mut dyn GuestMemory) {
        let Some((count, base)) = self.mbox else {
            self.start = 0;
            return;
        };
        self.flush_pending(mem, count, base);
        let starts = std::mem::take(&mut self.start);
        if starts == 0 {
            return;
        }
        let budget = if self.strict_rr {
            starts.min(count)
        } else {
            count
        };
        for _ in 0..budget {
            let at = u64::from(base) + u64::from(self.out_idx) * 8;
            let mut ob = [0u8; 8];
            if mem.read(at, &mut ob).is_err() {
                log::warn!(target: "devices::buslogic", "outgoing mailbox at {at:#x} outside RAM");
                return;
            }
            let action = ob[7];
            if action == 0 {
                if self.strict_rr {
                    // Spurious start: the next command still goes to this mailbox.
                    continue;
                }
                self.out_idx = (self.out_idx + 1) % count;
                continue;
            }
            // Free the outgoing mailbox before running the CCB (the driver may reuse it as
            // soon as it sees the completion).
            if mem.write(at + 7, &[0]).is_err() {
                return;
            }
            self.out_idx = (self.out_idx + 1) % count;
            let ccb = u32::from_le_bytes([ob[0], ob[1], ob[2], ob[3]]);
            let entry = match action {
                1 => self.run_ccb(mem, ccb),
                // Abort: every CCB has completed by the time the host could abort it.
                2 => inbox(ccb, 0, 0, comp::NOT_FOUND),
                _ => inbox(ccb, hastat::INVALID_OUTBOX_CODE, 0, comp::ERROR),
            };
            self.pending.push_back(entry);
            self.flush_pending(mem, count, base);
        }
    }

    fn flush_pending(&mut self, mem: &mut dyn GuestMemory, count: u32, base: u32) {
        let in_base = u64::from(base) + u64::from(count) * 8;
        while let Some(e) = self.pending.front() {
            let at = in_base + u64::from(self.in_idx) * 8;
            let mut cur = [0u8; 8];
            if mem.read(at, &mut cur).is_err() {
                log::warn!(target: "devices::buslogic", "incoming mailbox at {at:#x} outside RAM");
                self.pending.clear();
                return;
            }
            if cur[7] != comp::FREE {
                // Incoming mailboxes full: retry after the host frees some (next process).
                return;
            }
            if mem.write(at, e).is_err() {
                self.pending.clear();
                return;
            }
            self.pending.pop_front();
            self.in_idx = (self.in_idx + 1) % count;
            self.raise(intr::IMBL);
        }
    }

    /// Execute the 32-bit mode CCB at `addr`; returns its incoming mailbox entry.
    fn run_ccb(&mut self, mem: &mut dyn GuestMemory, addr: u32) -> [u8; 8] {
        let a = u64::from(addr);
        let mut c = [0u8; 40];
        if mem.read(a, &mut c).is_err() {
            return inbox(addr, hastat::HW_FAIL, 0, comp::ERROR);
        }
        let (hs, ts) = self.ccb_statuses(mem, addr, &c);
        // CCB bytes 14-15 carry the statuses the driver reads on errors.
        let _ = mem.write(a + 14, &[hs, ts]);
        let code = if hs == hastat::OK && ts == 0 {
            comp::GOOD
        } else {
            comp::ERROR
        };
        inbox(addr, hs, ts, code)
    }

    /// Run the CCB `c` (read from `addr`): (host adapter status, target status).
    fn ccb_statuses(&mut self, mem: &mut dyn GuestMemory, addr: u32, c: &[u8; 40]) -> (u8, u8) {
        let opcode = c[0];
        let datadir = (c[1] >> 3) & 3;
        let cdb_len = usize::from(c[2]);
        let sense_len = c[3];
        let data_len = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        let data_ptr = u32::from_le_bytes([c[8], c[9], c[10], c[11]]);
        let target = usize::from(c[16]);
        let lun = c[17] & if self.ext_lun { 0x1f } else { 0x07 };
        let sense_ptr = u32::from_le_bytes([c[36], c[37], c[38], c[39]]);
        let (sg, residual) = match opcode {
            0x00 => (false, false),
            0x02 => (true, false),
            0x03 => (false, true),
            0x04 => (true, true),
            0x81 => {
                // Bus Device Reset: nothing is queued at the target.
                return if self.present(target) {
                    (hastat::OK, 0)
                } else {
                    (hastat::SELECT_TIMEOUT, 0)
                };
            }
            _ => return (hastat::INVALID_CMD_CODE, 0),
        };
        if !(1..=12).contains(&cdb_len) {
            return (hastat::BAD_CMD_PARAM, 0);
        }
        if !self.present(target) {
            return (hastat::SELECT_TIMEOUT, 0);
        }
        let cdb = &c[18..18 + cdb_len];
        // Data segments (address, length).
        let segs: Vec<(u64, u64)> = if sg {
            if data_len % 8 != 0 || data_len / 8 > SG_MAX_WALK {
                return (hastat::BAD_CMD_PARAM, 0);
            }
            let mut list = vec![0u8; data_len as usize];
            if mem.read(u64::from(data_ptr), &mut list).is_err() {
                return (hastat::HW_FAIL, 0);
            }
            list.chunks_exact(8)
                .map(|e| {
                    let len = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                    let at = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                    (u64::from(at), u64::from(len))
                })
                .filter(|&(_, len)| len > 0)
                .collect()
        } else if data_len > 0 {
            vec![(u64::from(data_ptr), u64::from(data_len))]
        } else {
            Vec::new()
        };
        let total: u64 = segs.iter().map(|s| s.1).sum();
        if total > MAX_XFER {
            return (hastat::BAD_CMD_PARAM, 0);
        }
        if segs.iter().any(|&(at, len)| mem.check(at, len).is_err()) {
            return (hastat::HW_FAIL, 0);
        }
        let dir = match datadir {
            1 => Dir::In,
            2 => Dir::Out,
            3 => Dir::None,
            // Unchecked: the direction follows the command.
            _ => match Cdb::parse(cdb) {
                Ok(Cdb::Write { .. }) => Dir::Out,
                _ if total == 0 => Dir::None,
                _ => Dir::In,
            },
        };
        let mut data_out = Vec::new();
        if dir == Dir::Out {
            data_out.resize(total as usize, 0);
            let mut off = 0usize;
            for &(at, len) in &segs {
                let len = len as usize;
                if mem.read(at, &mut data_out[off..off + len]).is_err() {
                    return (hastat::HW_FAIL, 0);
                }
                off += len;
            }
        }
        let in_max = if dir == Dir::In { total as usize } else { 0 };
        let r: ScsiResponse = match (lun, self.targets[target].as_mut()) {
            (0, Some(disk)) => disk.execute(cdb, &data_out, in_max),
            _ => unsupported_lun(cdb, in_max, &[0]),
        };
        // Data in, scattered over the segments.
        let mut done = 0usize;
        for &(at, len) in &segs {
            if done >= r.data_in.len() {
                break;
            }
            let n = (len as usize).min(r.data_in.len() - done);
            if mem.write(at, &r.data_in[done..done + n]).is_err() {
                return (hastat::HW_FAIL, 0);
            }
            done += n;
        }
        if residual {
            let moved = match dir {
                Dir::In => done as u64,
                Dir::Out => total,
                Dir::None => 0,
            };
            let res = (total - moved) as u32;
            let _ = mem.write(u64::from(addr) + 4, &res.to_le_bytes());
        }
        let ts = r.status as u8;
        if r.status == Status::CheckCondition && sense_len != 1 {
            if let Some(s) = r.sense {
                let fixed = s.to_fixed();
                // Allocation length 0 means 14 bytes (the SCSI-1 default); 1 disables autosense.
                let n = if sense_len == 0 {
                    14
                } else {
                    usize::from(sense_len)
                };
                let n = n.min(fixed.len());
                if mem.write(u64::from(sense_ptr), &fixed[..n]).is_err() {
                    return (hastat::HW_FAIL, ts);
                }
            }
        }
        (hastat::OK, ts)
    }
}

/// An incoming mailbox entry.
fn inbox(ccb: u32, hs: u8, ts: u8, code: u8) -> [u8; 8] {
    let a = ccb.to_le_bytes();
    [a[0], a[1], a[2], a[3], hs, ts, 0, code]
}

/// `data` cut or zero-padded to exactly `n` bytes (replies whose length the host chooses).
fn sized(data: &[u8], n: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(n, 0);
    v
}

/// Host adapter local RAM: BIOS area (0-63) then the AutoSCSI settings (64-127).
fn local_ram() -> [u8; 256] {
    let mut r = [0u8; 256];
    let a = 64;
    r[a] = b'B';
    r[a + 1] = b'U';
    r[a + 14] = HOST_ID;
    r[a + 15] = 0x01 | 0x02 | 0x04 | 0x20; // low/high termination, parity, bus reset enabled
    r[a + 19..a + 21].copy_from_slice(&0x00ffu16.to_le_bytes()); // devices enabled
    r[a + 23..a + 25].copy_from_slice(&0x00ffu16.to_le_bytes()); // fast permitted
    r[a + 25..a + 27].copy_from_slice(&0x00ffu16.to_le_bytes()); // synchronous permitted
    r[a + 27..a + 29].copy_from_slice(&0x00ffu16.to_le_bytes()); // disconnect permitted
    r
}

impl PciDevice for BusLogic {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        self.config.read(offset, size)
    }
    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        self.config.write(offset, size, value);
    }
}

/// A [`BusLogic`] shared by its PCI function, port, MMIO and mailbox-processing handles.
pub type SharedBusLogic = Arc<Mutex<BusLogic>>;

/// Configuration-space handle (inserted in the PCI root).
#[derive(Debug)]
pub struct BusLogicPci(pub SharedBusLogic);

impl PciDevice for BusLogicPci {
    fn config_read(&mut self, offset: u8, size: u8) -> u32 {
        match self.0.lock() {
            Ok(mut d) => d.config_read(offset, size),
            Err(_) => crate::bus::all_ones(size),
        }
    }
    fn config_write(&mut self, offset: u8, size: u8, value: u32) {
        if let Ok(mut d) = self.0.lock() {
            d.config_write(offset, size, value);
        }
    }
}

/// Register block handle: I/O BAR 0 (`PioDevice`) or the memory BAR 1 mirror (`MmioDevice`).
/// Wider accesses cover consecutive registers, lowest offset in the low byte.
#[derive(Debug)]
pub struct BusLogicRegs(pub SharedBusLogic);

impl BusLogicRegs {
    fn read_n(&self, offset: u64, size: u8) -> u32 {
        let Ok(mut d) = self.0.lock() else {
            return crate::bus::all_ones(size);
        };
        (0..u64::from(size.min(4)))
            .map(|i| {
                let o = offset + i;
                let b = if o < u64::from(IO_SIZE) {
                    d.read_reg(o as u16)
                } else {
                    0
                };
                u32::from(b) << (8 * i)
            })
            .sum()
    }
    fn write_n(&self, offset: u64, size: u8, value: u32) {
        let Ok(mut d) = self.0.lock() else { return };
        for i in 0..u64::from(size.min(4)) {
            let o = offset + i;
            if o < u64::from(IO_SIZE) {
                d.write_reg(o as u16, (value >> (8 * i)) as u8);
            }
        }
    }
}

impl PioDevice for BusLogicRegs {
    fn read(&mut self, offset: u16, size: u8) -> u32 {
        self.read_n(u64::from(offset), size)
    }
    fn write(&mut self, offset: u16, size: u8, value: u32) {
        self.write_n(u64::from(offset), size, value);
    }
}

impl MmioDevice for BusLogicRegs {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        u64::from(self.read_n(offset, size))
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.write_n(offset, size, value as u32);
    }
}

#[cfg(test)]
mod tests;
