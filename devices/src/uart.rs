//! NS16550A UART (PC16550D datasheet): divisor latch, IER, IIR with prioritized interrupt
//! identification, FCR with 16-byte FIFOs, LCR, MCR with loopback, LSR, MSR, SCR.
//!
//! Transmission is instantaneous: a byte written to THR goes straight to the [`SerialBackend`]
//! (or into the receive FIFO in loopback mode), so LSR.THRE and LSR.TEMT read 1 and the THRE
//! interrupt fires as soon as it is enabled. Input arrives through [`Uart::receive`] or the
//! back-end's [`SerialBackend::poll_input`] on [`PioDevice::tick`].
//!
//! On the PC the IRQ output is gated by MCR.OUT2 (it enables the interrupt driver on the board);
//! in loopback mode OUT2 is disconnected from the pin, so no interrupt reaches the PIC.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bus::PioDevice;
use crate::irq::IrqLine;

/// Standard PC COM port bases and ISA IRQs: COM1-COM4.
pub const COM_PORTS: [(u16, u8); 4] = [(0x3f8, 4), (0x2f8, 3), (0x3e8, 4), (0x2e8, 3)];
/// Number of ports a UART occupies.
pub const UART_PORT_LEN: u16 = 8;
/// FIFO depth of the 16550A.
pub const FIFO_LEN: usize = 16;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IER_RLS: u8 = 0x04;
const IER_MS: u8 = 0x08;

const IIR_NONE: u8 = 0x01;
const IIR_MS: u8 = 0x00;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_RLS: u8 = 0x06;
const IIR_TIMEOUT: u8 = 0x0c;
const IIR_FIFO: u8 = 0xc0;

const LCR_DLAB: u8 = 0x80;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_BI: u8 = 0x10;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

/// Where a UART's output goes and (optionally) where its input comes from.
pub trait SerialBackend: Send {
    /// The guest transmitted `byte`.
    fn write_byte(&mut self, byte: u8);
    /// A byte of input, if one is available now (polled on `tick`). Default: none; the machine
    /// may instead push input with [`Uart::receive`].
    fn poll_input(&mut self) -> Option<u8> {
        None
    }
}

/// A back-end that discards output.
#[derive(Debug, Default)]
pub struct NullBackend;

impl SerialBackend for NullBackend {
    fn write_byte(&mut self, _byte: u8) {}
}

/// A back-end that collects output in a shared buffer and serves input from a shared queue
/// (tests, log capture).
#[derive(Debug, Clone, Default)]
pub struct BufferBackend {
    /// Bytes the guest transmitted.
    pub output: Arc<Mutex<Vec<u8>>>,
    /// Bytes waiting to be received by the guest.
    pub input: Arc<Mutex<VecDeque<u8>>>,
}

impl SerialBackend for BufferBackend {
    fn write_byte(&mut self, byte: u8) {
        if let Ok(mut o) = self.output.lock() {
            o.push(byte);
        }
    }
    fn poll_input(&mut self) -> Option<u8> {
        self.input.lock().ok()?.pop_front()
    }
}

/// A back-end over crossbeam channels: output bytes are sent to `tx`, input bytes are taken
/// from `rx` (e.g. a stdin reader thread).
#[derive(Debug)]
pub struct ChannelBackend {
    /// Output channel.
    pub tx: crossbeam::channel::Sender<u8>,
    /// Input channel.
    pub rx: crossbeam::channel::Receiver<u8>,
}

impl SerialBackend for ChannelBackend {
    fn write_byte(&mut self, byte: u8) {
        let _ = self.tx.send(byte);
    }
    fn poll_input(&mut self) -> Option<u8> {
        self.rx.try_recv().ok()
    }
}

fn null_backend() -> Box<dyn SerialBackend> {
    Box::new(NullBackend)
}

/// One 16550A.
#[derive(Serialize, Deserialize)]
pub struct Uart {
    dll: u8,
    dlm: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr: u8,
    /// MSR status bits (high nibble) as driven by the modem lines (or loopback).
    msr: u8,
    scr: u8,
    fcr: u8,
    rx: VecDeque<u8>,
    /// A THRE interrupt is pending (cleared by reading IIR when it is the source, or a THR write).
    thre_pending: bool,
    /// MSR delta bits pending (low nibble).
    msr_delta: u8,
    #[serde(skip)]
    irq: IrqLine,
    #[serde(skip, default = "null_backend")]
    backend: Box<dyn SerialBackend>,
    irq_level: bool,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart")
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("mcr", &self.mcr)
            .field("lsr", &self.lsr)
            .field("rx_len", &self.rx.len())
            .field("irq", &self.irq.number())
            .finish()
    }
}

impl Uart {
    /// A UART in reset state driving `irq`, sending output to `backend`.
    pub fn new(irq: IrqLine, backend: Box<dyn SerialBackend>) -> Self {
        Self {
            dll: 0x0c, // 9600 baud
            dlm: 0,
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr: LSR_THRE | LSR_TEMT,
            // A host terminal is "connected": DCD, DSR, CTS asserted.
            msr: 0xb0,
            scr: 0,
            fcr: 0,
            rx: VecDeque::new(),
            thre_pending: false,
            msr_delta: 0,
            irq,
            backend,
            irq_level: false,
        }
    }

    /// Reconnect the IRQ line and back-end after a restore.
    pub fn connect(&mut self, irq: IrqLine, backend: Box<dyn SerialBackend>) {
        self.irq = irq;
        self.backend = backend;
        self.irq_level = false;
        self.update_irq();
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & 0x01 != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_LEN
        } else {
            1
        }
    }

    fn rx_trigger(&self) -> usize {
        if !self.fifo_enabled() {
            return 1;
        }
        match self.fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// Free space in the receive FIFO (the machine can hold input back instead of overrunning).
    pub fn rx_space(&self) -> usize {
        self.rx_capacity().saturating_sub(self.rx.len())
    }

    /// Deliver one byte from the outside world. Returns `false` (and flags an overrun error,
    /// as the hardware does) if the receive FIFO was full.
    pub fn receive(&mut self, byte: u8) -> bool {
        let ok = self.push_rx(byte);
        self.update_irq();
        ok
    }

    fn push_rx(&mut self, byte: u8) -> bool {
        if self.rx.len() >= self.rx_capacity() {
            self.lsr |= LSR_OE;
            return false;
        }
        self.rx.push_back(byte);
        self.lsr |= LSR_DR;
        true
    }

    /// The interrupt identification (IIR bits 3-0) by the datasheet's priority order.
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.lsr & (LSR_OE | LSR_BI | 0x0c) != 0 {
            IIR_RLS
        } else if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            // Below the trigger level the character-timeout indication is reported at once.
            if self.rx.len() >= self.rx_trigger() {
                IIR_RDA
            } else {
                IIR_TIMEOUT
            }
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else if self.ier & IER_MS != 0 && self.msr_delta != 0 {
            IIR_MS
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        let pending = self.interrupt_id() != IIR_NONE;
        let level = pending && self.mcr & MCR_OUT2 != 0 && self.mcr & MCR_LOOP == 0;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set(level);
        }
    }

    fn modem_status(&self) -> u8 {
        if self.mcr & MCR_LOOP != 0 {
            // Loopback: CTS<-RTS, DSR<-DTR, RI<-OUT1, DCD<-OUT2.
            let m = self.mcr;
            (if m & MCR_RTS != 0 { 0x10 } else { 0 })
                | (if m & MCR_DTR != 0 { 0x20 } else { 0 })
                | (if m & MCR_OUT1 != 0 { 0x40 } else { 0 })
                | (if m & MCR_OUT2 != 0 { 0x80 } else { 0 })
        } else {
            self.msr & 0xf0
        }
    }

    fn set_mcr(&mut self, v: u8) {
        let before = self.modem_status();
        self.mcr = v & 0x1f;
        let after = self.modem_status();
        let changed = before ^ after;
        // Delta bits: DCTS, DDSR, TERI (trailing edge of RI), DDCD.
        let mut delta = 0;
        if changed & 0x10 != 0 {
            delta |= 0x01;
        }
        if changed & 0x20 != 0 {
            delta |= 0x02;
        }
        if changed & 0x40 != 0 && after & 0x40 == 0 {
            delta |= 0x04;
        }
        if changed & 0x80 != 0 {
            delta |= 0x08;
        }
        self.msr_delta |= delta;
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            self.push_rx(byte);
        } else {
            self.backend.write_byte(byte);
        }
        // THR and the shift register are empty again at once.
        self.lsr |= LSR_THRE | LSR_TEMT;
        self.thre_pending = true;
    }

    fn read_reg(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll,
            0 => {
                let b = self.rx.pop_front().unwrap_or(0);
                if self.rx.is_empty() {
                    self.lsr &= !LSR_DR;
                }
                b
            }
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.interrupt_id();
                if id == IIR_THRE {
                    self.thre_pending = false;
                }
                id | if self.fifo_enabled() { IIR_FIFO } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr | if self.rx.is_empty() { 0 } else { LSR_DR };
                // Reading LSR clears the error bits (OE, PE, FE, BI).
                self.lsr &= !0x1e;
                v
            }
            6 => {
                let v = self.modem_status() | self.msr_delta;
                self.msr_delta = 0;
                v
            }
            7 => self.scr,
            _ => 0xff,
        }
    }

    fn write_reg(&mut self, offset: u16, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = v,
            0 => self.transmit(v),
            1 if dlab => self.dlm = v,
            1 => {
                let old = self.ier;
                self.ier = v & 0x0f;
                // Enabling ETBEI with THR empty raises the THRE interrupt (16550 behaviour
                // that Linux's 8250 driver relies on in serial8250_do_startup).
                if old & IER_THRE == 0 && self.ier & IER_THRE != 0 && self.lsr & LSR_THRE != 0 {
                    self.thre_pending = true;
                }
            }
            2 => {
                let was_enabled = self.fifo_enabled();
                if v & 0x01 != 0 && !was_enabled || v & 0x01 == 0 && was_enabled {
                    // Changing the FIFO enable clears both FIFOs.
                    self.rx.clear();
                    self.lsr &= !LSR_DR;
                }
                self.fcr = v & 0xc9;
                if v & 0x02 != 0 {
                    self.rx.clear();
                    self.lsr &= !LSR_DR;
                }
                // bit 2 (clear TX FIFO): the transmit side is always empty here.
                if !self.fifo_enabled() {
                    self.fcr = 0;
                }
            }
            3 => self.lcr = v,
            4 => self.set_mcr(v),
            5 | 6 => {} // LSR/MSR are read-only (factory test writes ignored).
            7 => self.scr = v,
            _ => {}
        }
    }
}

impl PioDevice for Uart {
    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        let v = self.read_reg(offset);
        self.update_irq();
        u32::from(v)
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) {
        self.write_reg(offset, value as u8);
        if offset == 0 && self.lcr & LCR_DLAB == 0 {
            // A THR write clears the THRE interrupt until the byte has "left" (at once here);
            // keep the line edge visible to the edge-triggered PIC.
            if self.irq_level {
                self.irq_level = false;
                self.irq.lower();
            }
        }
        self.update_irq();
    }

    fn tick(&mut self, _now_ns: u64) {
        while self.rx_space() > 0 {
            match self.backend.poll_input() {
                Some(b) => {
                    self.push_rx(b);
                }
                None => break,
            }
        }
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Port};
    use crate::irq::IrqLines;

    fn com1() -> (Bus, IrqLines, BufferBackend) {
        let lines = IrqLines::new();
        let be = BufferBackend::default();
        let mut bus = Bus::new();
        bus.add_pio_at(
            Box::new(Uart::new(lines.line(4), Box::new(be.clone()))),
            &[(0x3f8, UART_PORT_LEN, 0)],
        )
        .unwrap();
        (bus, lines, be)
    }

    #[test]
    fn linux_8250_autoconfig_probe() {
        let (mut bus, _, _) = com1();
        let p = |o: u16| Port(0x3f8 + o);
        // IER scratch test.
        bus.pio_write(p(1), 1, 0);
        assert_eq!(bus.pio_read(p(1), 1) & 0x0f, 0);
        bus.pio_write(p(1), 1, 0x0f);
        assert_eq!(bus.pio_read(p(1), 1) & 0x0f, 0x0f);
        bus.pio_write(p(1), 1, 0);
        // Scratch register.
        bus.pio_write(p(7), 1, 0xa5);
        assert_eq!(bus.pio_read(p(7), 1), 0xa5);
        // Loopback: MCR = LOOP | OUT2 | RTS -> MSR status = DCD | CTS.
        bus.pio_write(p(4), 1, 0x1a);
        assert_eq!(bus.pio_read(p(6), 1) & 0xf0, 0x90);
        bus.pio_write(p(4), 1, 0);
        // FIFO enable -> IIR bits 7-6 = 11 (16550A).
        bus.pio_write(p(2), 1, 0x07);
        assert_eq!(bus.pio_read(p(2), 1) >> 6, 3);
        // LCR 0xBF: the EFR probe reads IIR, which must not be 0.
        bus.pio_write(p(3), 1, 0xbf);
        assert_ne!(bus.pio_read(p(2), 1), 0);
        bus.pio_write(p(3), 1, 0x03);
        // Divisor latch.
        bus.pio_write(p(3), 1, 0x83);
        bus.pio_write(p(0), 1, 0x01);
        bus.pio_write(p(1), 1, 0x00);
        assert_eq!(bus.pio_read(p(0), 1), 0x01);
        bus.pio_write(p(3), 1, 0x03);
        assert_eq!(bus.pio_read(p(5), 1) & 0x60, 0x60, "THRE and TEMT");
    }

    #[test]
    fn output_reaches_backend_and_loopback_returns_it() {
        let (mut bus, _, be) = com1();
        for b in b"hi" {
            bus.pio_write(Port(0x3f8), 1, u32::from(*b));
        }
        assert_eq!(&*be.output.lock().unwrap(), b"hi");
        bus.pio_write(Port(0x3fc), 1, 0x10);
        bus.pio_write(Port(0x3f8), 1, 0x55);
        assert_eq!(bus.pio_read(Port(0x3fd), 1) & 1, 1);
        assert_eq!(bus.pio_read(Port(0x3f8), 1), 0x55);
        assert_eq!(bus.pio_read(Port(0x3fd), 1) & 1, 0);
        assert_eq!(be.output.lock().unwrap().len(), 2);
    }

    #[test]
    fn thre_interrupt_as_serial8250_startup_tests_it() {
        let (mut bus, lines, _) = com1();
        bus.pio_write(Port(0x3fc), 1, 0x0b); // DTR RTS OUT2
        bus.pio_write(Port(0x3f9), 1, IER_THRE.into());
        assert_eq!(bus.pio_read(Port(0x3fa), 1), 0x02);
        assert_eq!(lines.levels() & 0x10, 0, "reading IIR cleared THRE");
        assert_eq!(bus.pio_read(Port(0x3fa), 1), 0x01);
        bus.pio_write(Port(0x3f9), 1, 0);
        bus.pio_write(Port(0x3f9), 1, IER_THRE.into());
        assert_ne!(lines.levels() & 0x10, 0);
        assert_eq!(bus.pio_read(Port(0x3fa), 1) & 0x0f, 0x02);
        // Transmitting raises it again.
        lines.take_edges();
        bus.pio_write(Port(0x3f8), 1, u32::from(b'x'));
        assert_ne!(lines.take_edges() & 0x10, 0);
    }

    #[test]
    fn receive_interrupt_priority_and_fifo() {
        let (mut bus, lines, be) = com1();
        let u = Port(0x3f8);
        bus.pio_write(Port(0x3fa), 1, 0xc7); // FIFO on, trigger 14
        bus.pio_write(Port(0x3fc), 1, 0x08);
        bus.pio_write(Port(0x3f9), 1, 0x07);
        // THRE pending from enabling ETBEI; received data has priority over it.
        be.input.lock().unwrap().extend(b"abc");
        bus.tick(0);
        assert_ne!(lines.levels() & 0x10, 0);
        assert_eq!(
            bus.pio_read(Port(0x3fa), 1),
            0xcc,
            "timeout indication below trigger"
        );
        let got: Vec<u8> = (0..3).map(|_| bus.pio_read(u, 1) as u8).collect();
        assert_eq!(got, b"abc");
        assert_eq!(bus.pio_read(Port(0x3fa), 1), 0xc2);
        assert_eq!(bus.pio_read(Port(0x3fa), 1), 0xc1);
        // Overrun: 17 bytes into a 16-byte FIFO -> line status interrupt, OE in LSR.
        be.input.lock().unwrap().extend([0u8; 16]);
        bus.tick(0);
        let dev_full = bus.pio_read(Port(0x3fa), 1);
        assert_eq!(dev_full, 0xc4, "at or above trigger level");
    }

    #[test]
    fn overrun_sets_oe_and_rls_interrupt() {
        let mut u = Uart::new(IrqLine::disconnected(), Box::new(NullBackend));
        u.write(1, 1, 0x05);
        assert!(u.receive(1));
        assert!(!u.receive(2));
        assert_eq!(u.read(2, 1), 0x06);
        assert_eq!(u.read(5, 1) & 0x03, 0x03);
        assert_eq!(u.read(5, 1) & 0x02, 0, "OE cleared by reading LSR");
        assert_eq!(u.read(0, 1), 1);
    }

    #[test]
    fn irq_gated_by_out2() {
        let (mut bus, lines, _) = com1();
        bus.pio_write(Port(0x3f9), 1, IER_THRE.into());
        assert_eq!(lines.levels() & 0x10, 0);
        bus.pio_write(Port(0x3fc), 1, 0x08);
        assert_ne!(lines.levels() & 0x10, 0);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut u = Uart::new(IrqLine::disconnected(), Box::new(NullBackend));
        u.write(7, 1, 0x42);
        u.receive(9);
        let json = serde_json::to_string(&u).unwrap();
        let mut v: Uart = serde_json::from_str(&json).unwrap();
        assert_eq!(v.read(7, 1), 0x42);
        assert_eq!(v.read(0, 1), 9);
    }
}
