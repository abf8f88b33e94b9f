//! Command-line interface (clap): `rinx run ...`.

pub mod spec;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// rinx: a full-system x86 emulator that needs no hardware virtualization.
#[derive(Debug, Parser)]
#[command(name = "rinx", version, about, long_about = None)]
pub struct Cli {
    /// More log output: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest: a Linux bzImage with --kernel, or the built-in demo guest without it.
    Run(Box<RunArgs>),
    /// Run a learning Ethernet switch that connects the NICs of several rinx machines on this
    /// host (`--nic model=...,net=switch:ADDR`). Frames travel as UDP datagrams on loopback.
    Switch(SwitchArgs),
}

/// `rinx switch` options.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Loopback UDP address to listen on, e.g. 127.0.0.1:5555 (port 0 picks a free port; the
    /// address is printed on stdout as "rinx switch: listening on ADDR").
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
}

/// Execution engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The reference interpreter (every host).
    Interp,
    /// The dynamic recompiler (x86-64 hosts; elsewhere the interpreter runs instead).
    Jit,
    /// Both: the JIT runs the machine and the interpreter shadows it on a copy of the CPU and
    /// RAM, comparing registers after every block; the first divergence stops the run (exit
    /// status 4) with its address, instructions and differing registers. About as slow as
    /// both engines together; no --drive.
    Lockstep,
}

impl Engine {
    /// The default `--engine`: the recompiler where it has a backend (x86-64 hosts).
    pub fn host_default() -> Self {
        if jit::HOST_SUPPORTED {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }
}

impl From<Engine> for crate::exec::EngineKind {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Interp => crate::exec::EngineKind::Interp,
            Engine::Jit => crate::exec::EngineKind::Jit,
            Engine::Lockstep => crate::exec::EngineKind::Lockstep,
        }
    }
}

/// `rinx run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Linux kernel image (bzImage, boot protocol >= 2.06). Without it, rinx boots its built-in
    /// demo guest.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (e.g. a cpio newc initramfs), loaded below the kernel's initrd_addr_max.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(
        long,
        value_name = "CMDLINE",
        default_value = "console=ttyS0",
        requires = "kernel"
    )]
    pub append: String,
    /// Guest RAM size: a number of bytes with an optional K, M, G suffix (binary units).
    #[arg(short = 'm', long, value_name = "SIZE", default_value = "512M", value_parser = spec::parse_memory)]
    pub memory: u64,
    /// Where COM1 goes: stdio | file:PATH (appended) | tcp:ADDR (a loopback listener, e.g.
    /// tcp:127.0.0.1:4444; the guest starts when a client connects) | null.
    #[arg(long, value_name = "SPEC", default_value = "stdio", value_parser = spec::parse_serial)]
    pub serial: spec::SerialSpec,
    /// Execution engine: jit by default on x86-64 hosts, interp elsewhere.
    #[arg(long, value_enum, default_value_t = Engine::host_default())]
    pub engine: Engine,
    /// Deterministic virtual clock: advance time by 2^N ns per guest instruction instead of
    /// following the host monotonic clock (like QEMU's -icount shift=N).
    #[arg(long, value_name = "SHIFT", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub icount: Option<u8>,
    /// Trace execution: a comma list of insn (instructions, register and memory effects),
    /// ring (ring-compression layer), mode (privilege and mode changes), walk (page walks),
    /// exc (interrupts and exceptions), block (blocks of code entered, with their disassembly
    /// the first time), or all. Under --engine jit every kind but insn is produced while
    /// compiled code runs; insn makes the JIT step every instruction through the interpreter.
    #[arg(long, value_name = "KINDS", value_parser = parse_kinds)]
    pub trace: Option<crate::trace::Kinds>,
    /// Trace only instructions whose linear RIP is in START-END (hexadecimal, inclusive).
    #[arg(long, value_name = "START-END", value_parser = parse_hex_range, requires = "trace")]
    pub trace_range: Option<(u64, u64)>,
    /// Trace only instructions that start at this CPL.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=3), requires = "trace")]
    pub trace_cpl: Option<u8>,
    /// Trace only instructions numbered FIRST-LAST (decimal, inclusive, counting from 0).
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_dec_range, requires = "trace")]
    pub trace_window: Option<(u64, u64)>,
    /// Write the trace to this file instead of stderr.
    #[arg(long, value_name = "PATH", requires = "trace")]
    pub trace_out: Option<PathBuf>,
    /// Trace format: text lines, or JSON lines (one object per record).
    #[arg(long, value_enum, default_value_t = TraceFormat::Text)]
    pub trace_format: TraceFormat,
    /// Attach a disk (repeatable): file=PATH[,format=raw|qcow2][,if=virtio-scsi|cdrom|buslogic]
    /// [,mode=persistent|nonpersistent|undoable][,undo=keep|discard][,readonly=on].
    /// persistent writes go to the image; nonpersistent writes go to a temporary overlay
    /// dropped at exit; undoable writes go to an overlay committed to the image at exit with
    /// undo=keep, dropped with undo=discard. Each drive is a virtio-scsi PCI function (00:03.0,
    /// 00:04.0, ...) with the disk at target 0, LUN 0; the guest finds it through the ACPI
    /// PCI root bridge and uses MSI-X, or INTx routed as the DSDT's _PRT says. if=buslogic
    /// drives are targets 0-6 of one BusLogic BT-958 PCI SCSI adapter (00:0c.0, Linux's
    /// BusLogic driver; INTA# routed as the _PRT says). Writable disks are thin provisioned:
    /// guest UNMAP / WRITE SAME (fstrim) punch holes in raw images and free qcow2 clusters.
    #[arg(long = "drive", value_name = "SPEC", value_parser = spec::parse_drive)]
    pub drives: Vec<spec::DriveSpec>,
    /// Attach a NIC (repeatable): model=e1000|virtio,net=user|switch:ADDR|tap:NAME
    /// [,hostfwd=tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (repeatable, net=user)]
    /// [,mac=XX:XX:XX:XX:XX:XX]. e1000 is an Intel 82540EM, virtio a virtio-net device; NICs
    /// sit at 00:10.0, 00:11.0, ... net=switch connects to `rinx switch --listen ADDR` (a
    /// loopback address), net=tap to a Linux TAP interface, net=user to user-mode NAT. Without
    /// mac= the NIC gets 02:52:PID:INDEX.
    #[arg(long = "nic", value_name = "SPEC", value_parser = spec::parse_nic)]
    pub nics: Vec<spec::NicSpec>,
    /// Print execution statistics to stderr at exit.
    #[arg(long)]
    pub stats: bool,
    /// Serve the GDB remote protocol: tcp:ADDR (a loopback listener, e.g. tcp:127.0.0.1:1234;
    /// port 0 picks a free port, printed on stderr). Connect with gdb's `target remote ADDR`.
    #[arg(long, value_name = "SPEC", value_parser = parse_gdb)]
    pub gdb: Option<crate::gdb::GdbSpec>,
    /// Wait for the debugger to attach before the first guest instruction.
    #[arg(long, requires = "gdb")]
    pub wait_gdb: bool,
    /// Register layout shown to gdb: auto (x86-64 if the guest is in long mode when gdb
    /// attaches, i386 otherwise), i386 or x86-64.
    #[arg(long, value_enum, default_value_t = GdbArch::Auto, requires = "gdb")]
    pub gdb_arch: GdbArch,
    /// Record the basic blocks the guest executes and write them at exit: drcov:PATH
    /// (DynamoRIO drcov format, version 2).
    #[arg(long, value_name = "SPEC", value_parser = parse_coverage)]
    pub coverage: Option<PathBuf>,
}

/// `--gdb-arch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GdbArch {
    /// x86-64 in long mode, i386 otherwise (decided when gdb attaches).
    Auto,
    /// gdb's i386 register layout.
    I386,
    /// gdb's x86-64 register layout.
    #[value(name = "x86-64")]
    X86_64,
}

fn parse_gdb(s: &str) -> Result<crate::gdb::GdbSpec, String> {
    crate::gdb::parse_spec(s)
}

fn parse_coverage(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("drcov:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!(
            "unknown coverage spec '{s}': use drcov:PATH (DynamoRIO drcov format)"
        )),
    }
}

/// `--trace-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// One human-readable line per record.
    Text,
    /// JSON lines.
    Json,
}

fn parse_kinds(s: &str) -> Result<crate::trace::Kinds, String> {
    crate::trace::Kinds::parse(s).map_err(|e| e.to_string())
}

fn parse_hex_range(s: &str) -> Result<(u64, u64), String> {
    crate::trace::parse_hex_range(s).map_err(|e| e.to_string())
}

fn parse_dec_range(s: &str) -> Result<(u64, u64), String> {
    crate::trace::parse_dec_range(s).map_err(|e| e.to_string())
}
