//! The PC board: guest RAM around the PCI hole, the legacy chipset on the device bus, virtual
//! time, IRQ routing to the CPU, boot (Linux direct boot or the built-in demo guest), and the
//! vCPU run loop with power-off / reset / exit events.

pub mod boot;
pub mod demo;
pub mod hba;
pub mod network;
pub mod serial;
pub mod storage;

use crate::cli::spec::SerialSpec;
use crate::cpu::{Cpu, Platform, StopReason};
use crate::exec::interp;
use crate::mmu::GuestMemory;
use devices::apic::{ApicBus, IoApic, Lapic, IOAPIC_BASE, IOAPIC_SIZE, LAPIC_BASE, LAPIC_SIZE};
use devices::bus::DeviceId;
use devices::bus::Port;
use devices::hpet::{Hpet, HPET_BASE, HPET_SIZE};
use devices::pc::{build_pc, PcDevices};
use devices::pic::PicPair;
use devices::{Bus, Clock, EventReceiver, IrqLines, MachineEvent};
use thiserror::Error;

/// Instructions executed between two device ticks (bounds interrupt latency from timers):
/// ~1-2 ms of guest time on the interpreter.
const SLICE: u64 = 20_000;
/// The same on the JIT (~0.1-0.2 ms of guest time at its speed): a longer slice means fewer
/// slice ends, where a block that no longer fits runs through the interpreter instead
/// (docs/performance.md, JIT round 6).
const SLICE_JIT: u64 = 65_536;
/// Longest host sleep while the guest is halted (ns), so serial input is noticed promptly.
const MAX_HALT_SLEEP_NS: u64 = 5_000_000;
/// TSC frequency: 1 GHz, so TSC cycles are virtual nanoseconds.
pub const TSC_HZ: u64 = 1_000_000_000;

/// Errors that stop the machine before or while it runs.
#[derive(Debug, Error)]
pub enum MachineError {
    /// Guest RAM could not be set up.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The boot files were rejected.
    #[error("boot: {0}")]
    Boot(String),
    /// A device could not be created.
    #[error("devices: {0}")]
    Devices(String),
    /// A serial back-end could not be opened.
    #[error("serial: {0}")]
    Serial(#[from] std::io::Error),
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Linux bzImage; `None` boots the demo guest.
    pub kernel: Option<Vec<u8>>,
    /// Initial ramdisk.
    pub initrd: Option<Vec<u8>>,
    /// Kernel command line.
    pub cmdline: String,
    /// COM1 back-end.
    pub serial: SerialSpec,
    /// `--icount N`: 2^N ns of virtual time per instruction; `None`: host monotonic clock.
    pub icount: Option<u8>,
    /// Disks (`--drive`).
    pub drives: Vec<crate::cli::spec::DriveSpec>,
    /// NICs (`--nic`).
    pub nics: Vec<crate::cli::spec::NicSpec>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// ACPI S5 power-off.
    PowerOff,
    /// The guest reset the platform (rinx stops, like QEMU with -no-reboot).
    Reset,
    /// isa-debug-exit: the process exit status `(v << 1) | 1`.
    Exit(u32),
    /// The user typed Ctrl-A x.
    Quit,
    /// Triple fault (shutdown); the string is a diagnostic.
    TripleFault(String),
    /// The debugger killed the guest (gdb `kill`).
    Killed,
    /// `--engine lockstep` found the engines disagreeing; the string is the report.
    Divergence(String),
}

impl Outcome {
    /// The process exit status for this outcome.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::PowerOff | Outcome::Quit | Outcome::Reset | Outcome::Killed => 0,
            Outcome::Exit(v) => *v as i32,
            Outcome::TripleFault(_) => 3,
            Outcome::Divergence(_) => 4,
        }
    }
}

/// Everything outside the CPU and RAM: the bus and its devices, time, interrupts.
#[derive(Debug)]
pub struct Board {
    pub bus: Bus,
    pub clock: Clock,
    pub lines: IrqLines,
    pub events: EventReceiver,
    pub pc: PcDevices,
    /// Local APIC (MMIO at 0xFEE00000).
    pub lapic: DeviceId,
    /// I/O APIC (MMIO at 0xFEC00000).
    pub ioapic: DeviceId,
    /// Disks.
    pub storage: storage::Storage,
    /// NICs.
    pub network: network::Network,
    /// Cached INTR state, recomputed after every device access and tick.
    intr: bool,
    /// A device asked for power-off/reset/exit during the current slice.
    stop: Option<MachineEvent>,
    /// A guest register write gave a NIC work: end the slice so it runs now.
    net_doorbell: bool,
    /// TSC value at the last `--icount` sync.
    icount_shift: Option<u8>,
}

impl Board {
    /// Recomputes INTR: the local APIC's highest deliverable vector, or the 8259A's output
    /// when LINT0 passes it through as ExtINT (Intel SDM Vol. 3A §11.5.1 / §10.5.1).
    fn refresh_intr(&mut self) {
        if let Some(io) = self.bus.mmio_device_mut::<IoApic>(self.ioapic) {
            io.service();
        }
        let (apic, via_pic) = match self.bus.mmio_device_mut::<Lapic>(self.lapic) {
            Some(l) => (l.pending_vector().is_some(), l.accepts_pic()),
            None => (false, true),
        };
        let pic = via_pic
            && self
                .bus
                .pio_device_mut::<PicPair>(self.pc.pic)
                .map(|p| p.interrupt_pending())
                .unwrap_or(false);
        self.intr = apic || pic;
        if self.stop.is_none() {
            self.stop = self.events.poll();
        }
    }
}

impl Platform for Board {
    fn io_read(&mut self, port: u16, size: u8) -> u32 {
        let v = self.bus.pio_read(Port(port), size);
        self.refresh_intr();
        v
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.bus.pio_write(Port(port), size, value);
        self.refresh_intr();
    }
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        let v = self.bus.mmio_read(gpa, size);
        self.refresh_intr();
        v
    }
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        self.bus.mmio_write(gpa, size, value);
        if self.network.in_window(gpa) && !self.net_doorbell && self.network.has_work() {
            self.net_doorbell = true;
        }
        self.refresh_intr();
    }
    fn tsc(&mut self) -> u64 {
        // TSC_HZ = 1 GHz: cycles are nanoseconds of virtual time.
        self.clock.now_ns()
    }
    fn interrupt_pending(&mut self) -> bool {
        self.intr
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        // INTA goes to the local APIC when it has a deliverable vector, else to the 8259A if
        // LINT0 passes it through (ExtINT).
        let mut v = None;
        let mut via_pic = true;
        if let Some(l) = self.bus.mmio_device_mut::<Lapic>(self.lapic) {
            via_pic = l.accepts_pic();
            if l.pending_vector().is_some() {
                v = Some(l.acknowledge());
            }
        }
        let from_apic = v.is_some();
        if v.is_none() && via_pic {
            if let Some(p) = self.bus.pio_device_mut::<PicPair>(self.pc.pic) {
                if p.interrupt_pending() {
                    v = Some(p.acknowledge());
                }
            }
        }
        log::trace!(
            target: "rinx::irq",
            "INTA -> {v:x?} from {}",
            if from_apic { "LAPIC" } else { "8259A" }
        );
        self.refresh_intr();
        v
    }
    fn stop_pending(&self) -> bool {
        // Network work ends the slice too, so frames and doorbells are handled within one
        // translated block (at most `jit::MAX_INSNS_PER_ENTRY` instructions) instead of at
        // the end of a full slice.
        self.stop.is_some() || self.net_doorbell || self.network.arrival_pending()
    }
}

/// A whole PC: one vCPU, its RAM, the board.
#[derive(Debug)]
pub struct Machine {
    pub cpu: Cpu,
    pub mem: GuestMemory,
    pub board: Board,
    pub quit: serial::QuitFlag,
    raw: Option<serial::RawModeGuard>,
    /// Host time spent waiting in HLT (for `--stats`).
    pub halted_time: std::time::Duration,
    /// The execution engine (`RINX_ENGINE` by default; `--engine` via [`Machine::set_engine`]).
    pub engine: crate::exec::Engine,
    /// RINX_DIAG_SECS=N prints the CPU state and last instructions every N seconds (a
    /// debugging aid for guests that stop making progress).
    diag_every: Option<std::time::Duration>,
    next_diag: Option<std::time::Instant>,
}

/// How a slice of execution ([`Machine::run_slice`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slice {
    /// The guest is still running.
    Running,
    /// The run is over.
    Done(Outcome),
    /// An instrumented slice stopped for the debugger.
    Debug(interp::DebugStop),
}

impl Machine {
    /// Builds the machine and loads the boot payload.
    pub fn new(cfg: &MachineConfig) -> Result<Self, MachineError> {
        let layout = firmware::MemoryLayout::new(cfg.memory)
            .map_err(|e| MachineError::Memory(e.to_string()))?;
        let mut mem = GuestMemory::new(&layout.ram_ranges())
            .map_err(|e| MachineError::Memory(e.to_string()))?;
        let clock = if cfg.icount.is_some() {
            Clock::manual()
        } else {
            Clock::host()
        };
        let lines = IrqLines::new();
        let (tx, events) = devices::events::event_channel();
        let quit = serial::QuitFlag::default();
        let (com1, raw) = serial::open(&cfg.serial, &quit)?;
        let mut bus = Bus::new();
        let pc = build_pc(&mut bus, &clock, &lines, &tx, vec![com1])
            .map_err(|e| MachineError::Devices(e.to_string()))?;
        let apic_bus = ApicBus::new();
        let mmio = |e: devices::BusError| MachineError::Devices(e.to_string());
        let lapic = bus
            .add_mmio(
                LAPIC_BASE,
                LAPIC_SIZE,
                Box::new(Lapic::new(0, apic_bus.clone(), clock.clone())),
            )
            .map_err(mmio)?;
        let ioapic = bus
            .add_mmio(
                IOAPIC_BASE,
                IOAPIC_SIZE,
                Box::new(IoApic::new(lines.clone(), apic_bus.clone())),
            )
            .map_err(mmio)?;
        bus.add_mmio(
            HPET_BASE,
            HPET_SIZE,
            Box::new(Hpet::new(clock.clone(), lines.clone())),
        )
        .map_err(mmio)?;
        let storage = storage::Storage::build(&cfg.drives, &mut bus, pc.pci, &lines, &apic_bus)
            .map_err(MachineError::Devices)?;
        let network = network::Network::build(&cfg.nics, &mut bus, pc.pci, &lines, &apic_bus)
            .map_err(MachineError::Devices)?;
        if let Some(rtc) = bus.pio_device_mut::<devices::rtc::Rtc>(pc.rtc) {
            rtc.set_memory_layout(layout.low_ram_end, layout.high_ram_size);
        }
        if crate::exec::EngineKind::from_env() == crate::exec::EngineKind::Lockstep
            && !cfg.drives.is_empty()
        {
            return Err(MachineError::Devices(
                "RINX_ENGINE=lockstep does not support --drive (device DMA is not mirrored)".into(),
            ));
        }
        let mut cpu = Cpu::new();
        boot::load(&mut cpu, &mut mem, &layout, cfg)?;
        let diag_every = std::env::var("RINX_DIAG_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        Ok(Machine {
            cpu,
            mem,
            board: Board {
                bus,
                clock,
                lines,
                events,
                pc,
                lapic,
                ioapic,
                storage,
                network,
                intr: false,
                stop: None,
                net_doorbell: false,
                icount_shift: cfg.icount,
            },
            quit,
            raw: Some(raw),
            halted_time: std::time::Duration::ZERO,
            diag_every,
            next_diag: diag_every.map(|d| std::time::Instant::now() + d),
            engine: crate::exec::Engine::new(crate::exec::EngineKind::from_env()),
        })
    }

    /// Selects the execution engine.
    ///
    /// Errors: lockstep with disks (device DMA into guest RAM is not mirrored to the
    /// interpreter's copy, so it would report false divergences).
    pub fn set_engine(&mut self, kind: crate::exec::EngineKind) -> Result<(), MachineError> {
        if kind == crate::exec::EngineKind::Lockstep && self.board.storage.drive_count() > 0 {
            return Err(MachineError::Devices(
                "--engine lockstep does not support --drive (device DMA is not mirrored)".into(),
            ));
        }
        if self.engine.kind() != kind {
            self.engine = crate::exec::Engine::new(kind);
        }
        Ok(())
    }

    /// Hands out the terminal raw-mode guard so the caller can restore the terminal before
    /// printing diagnostics.
    pub fn take_raw_guard(&mut self) -> Option<serial::RawModeGuard> {
        self.raw.take()
    }

    /// Runs until the guest powers off, resets, exits, triple-faults, or the user quits.
    pub fn run(&mut self) -> Outcome {
        loop {
            if let Slice::Done(o) = self.run_slice(None) {
                return o;
            }
        }
    }

    /// Runs one slice of at most [`SLICE`] instructions ([`SLICE_JIT`] on the JIT), then ticks the devices and, if the
    /// guest is halted, waits for its next timer deadline. With `probes`, the slice runs
    /// instrumented (breakpoints, watchpoints, single-step, coverage) and may stop early for
    /// the debugger.
    pub fn run_slice(&mut self, probes: Option<&mut interp::Probes>) -> Slice {
        if let (Some(at), Some(every)) = (self.next_diag, self.diag_every) {
            if std::time::Instant::now() >= at {
                eprintln!(
                    "rinx: diagnostic (halted={}, intr={}, IF={})\n{}",
                    self.cpu.halted,
                    self.board.intr,
                    self.cpu.s.rflags & jit::abi::flags::IF != 0,
                    crate::exec::diag::describe(&self.cpu, &mut self.mem)
                );
                self.next_diag = Some(at + every);
            }
        }
        let before = self.cpu.icount;
        let slice = self.slice();
        let stop = match probes {
            None => self
                .engine
                .run_slice(&mut self.cpu, &mut self.mem, &mut self.board, slice),
            Some(p) => interp::run_probed(&mut self.cpu, &mut self.mem, &mut self.board, SLICE, p),
        };
        if let Some(d) = self.engine.take_divergence() {
            let _ = self.board.storage.power_off();
            return Slice::Done(Outcome::Divergence(d.to_string()));
        }
        if let Some(shift) = self.board.icount_shift {
            let n = self.cpu.icount - before;
            self.board.clock.advance_ns(n << shift);
        }
        let now = self.board.clock.now_ns();
        self.board.bus.tick(now);
        self.board
            .storage
            .process(&mut self.mem, &mut self.cpu.dcache);
        if std::mem::take(&mut self.board.net_doorbell) {
            self.board.network.stats.doorbell_stops += 1;
        }
        if self.board.network.take_arrival() && stop == StopReason::PlatformStop {
            self.board.network.stats.arrival_stops += 1;
        }
        self.board
            .network
            .process(&mut self.mem, &mut self.cpu.dcache);
        self.board.refresh_intr();
        if let Some(ev) = self.board.stop.take() {
            let _ = self.board.storage.power_off();
            return Slice::Done(match ev {
                MachineEvent::PowerOff => Outcome::PowerOff,
                MachineEvent::Reset => Outcome::Reset,
                MachineEvent::Exit(v) => Outcome::Exit(v),
            });
        }
        if self.quit.is_set() {
            let _ = self.board.storage.power_off();
            return Slice::Done(Outcome::Quit);
        }
        match stop {
            StopReason::TripleFault => {
                let _ = self.board.storage.power_off();
                return Slice::Done(Outcome::TripleFault(crate::exec::diag::describe(
                    &self.cpu,
                    &mut self.mem,
                )));
            }
            StopReason::Debug(d) => return Slice::Debug(d),
            StopReason::Halted if !self.board.intr => self.wait_halted(now),
            _ => {}
        }
        Slice::Running
    }

    /// Instructions per slice for the current engine.
    fn slice(&self) -> u64 {
        match self.engine.kind() {
            crate::exec::EngineKind::Jit => SLICE_JIT,
            _ => SLICE,
        }
    }

    /// HLT: sleep (or, with --icount, warp virtual time) until the next device deadline, or
    /// until a frame arrives for a NIC that can receive it.
    fn wait_halted(&mut self, now: u64) {
        let deadline = self.board.bus.next_deadline();
        if self.board.clock.is_manual() {
            match deadline {
                Some(d) if d > now => self.board.clock.set_ns(d),
                Some(_) => {}
                None => self.board.clock.advance_ns(MAX_HALT_SLEEP_NS),
            }
        } else {
            let wait = deadline
                .map(|d| d.saturating_sub(now))
                .unwrap_or(MAX_HALT_SLEEP_NS)
                .min(MAX_HALT_SLEEP_NS);
            if wait > 0 {
                let t = std::time::Instant::now();
                let d = std::time::Duration::from_nanos(wait);
                if self.board.network.is_empty() {
                    std::thread::sleep(d);
                } else if self.board.network.wait(d) {
                    self.board.network.stats.halt_wakes += 1;
                }
                self.halted_time += t.elapsed();
            }
        }
    }
}
