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
    Run(RunArgs),
}

/// Execution engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The reference interpreter (every host).
    Interp,
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
    /// Where COM1 goes: stdio | file:PATH | tcp:ADDR (a loopback listener, e.g. tcp:127.0.0.1:4444).
    #[arg(long, value_name = "SPEC", default_value = "stdio", value_parser = spec::parse_serial)]
    pub serial: spec::SerialSpec,
    /// Execution engine.
    #[arg(long, value_enum, default_value_t = Engine::Interp)]
    pub engine: Engine,
    /// Deterministic virtual clock: advance time by 2^N ns per guest instruction instead of
    /// following the host monotonic clock (like QEMU's -icount shift=N).
    #[arg(long, value_name = "SHIFT", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub icount: Option<u8>,
}
