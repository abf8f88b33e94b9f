//! The `rinx` command.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rinx::cli::{Cli, Command, GdbArch, RunArgs, TraceFormat};
use rinx::machine::{Machine, MachineConfig, Outcome, Slice};
use rinx::trace::{Filter, Format, Tracer};
use std::process::ExitCode;

fn read_file(what: &str, p: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(p).with_context(|| format!("{what} {}", p.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", p.display());
    }
    if meta.len() > max {
        bail!(
            "{what} {} is {} bytes, larger than guest memory ({max} bytes)",
            p.display(),
            meta.len()
        );
    }
    std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
}

/// `rinx switch`: forward frames until killed.
fn switch(args: rinx::cli::SwitchArgs) -> Result<i32> {
    let mut sw = devices::net::switch::Switch::bind(args.listen)
        .with_context(|| format!("switch on {}", args.listen))?;
    let addr = sw.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "rinx switch: listening on {addr}")?;
        out.flush()?;
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    sw.run(&stop);
    Ok(0)
}

fn run(args: RunArgs) -> Result<i32> {
    let kernel = match &args.kernel {
        Some(p) => Some(read_file("kernel", p, args.memory)?),
        None => None,
    };
    let initrd = match &args.initrd {
        Some(p) => Some(read_file("initrd", p, args.memory)?),
        None => None,
    };
    let cfg = MachineConfig {
        memory: args.memory,
        kernel,
        initrd,
        cmdline: args.append.clone(),
        serial: args.serial.clone(),
        icount: args.icount,
        drives: args.drives.clone(),
        nics: args.nics.clone(),
    };
    let mut m = Machine::new(&cfg)?;
    m.set_engine(args.engine.into())?;
    if let Some(kinds) = args.trace {
        let out: Box<dyn std::io::Write + Send> = match &args.trace_out {
            Some(p) => Box::new(
                std::fs::File::create(p)
                    .with_context(|| format!("creating trace file {}", p.display()))?,
            ),
            None => Box::new(std::io::stderr()),
        };
        let filter = Filter {
            range: args.trace_range,
            cpl: args.trace_cpl,
            window: args.trace_window,
        };
        let format = match args.trace_format {
            TraceFormat::Text => Format::Text,
            TraceFormat::Json => Format::Json,
        };
        m.cpu.trace.set(Tracer::new(kinds, filter, format, out));
    }
    let listener = match args.gdb {
        Some(rinx::gdb::GdbSpec::Tcp(addr)) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("gdb stub: listening on {addr}"))?,
        ),
        None => None,
    };
    // Created before the run, so a bad path fails at once.
    let coverage_file = match &args.coverage {
        Some(p) => Some(
            std::fs::File::create(p)
                .with_context(|| format!("creating coverage file {}", p.display()))?,
        ),
        None => None,
    };
    let mut probes = rinx::exec::interp::Probes {
        coverage: args
            .coverage
            .as_ref()
            .map(|_| rinx::trace::coverage::Coverage::new()),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let outcome = match &listener {
        Some(l) => {
            let arch = match args.gdb_arch {
                GdbArch::Auto => rinx::gdb::ArchChoice::Auto,
                GdbArch::I386 => rinx::gdb::ArchChoice::I386,
                GdbArch::X86_64 => rinx::gdb::ArchChoice::X86_64,
            };
            let addr = l.local_addr().context("gdb stub")?;
            if args.wait_gdb {
                eprintln!("rinx: gdb: waiting for a debugger on {addr} (target remote {addr})");
            } else {
                eprintln!("rinx: gdb: listening on {addr} (target remote {addr})");
            }
            let (o, p) =
                rinx::gdb::serve(&mut m, l, args.wait_gdb, arch, probes).context("gdb stub")?;
            probes = p;
            o
        }
        None if probes.coverage.is_some() => loop {
            if let Slice::Done(o) = m.run_slice(Some(&mut probes)) {
                break o;
            }
        },
        None => m.run(),
    };
    let wall = start.elapsed();
    if let (Some(path), Some(f), Some(cov)) = (&args.coverage, coverage_file, &probes.coverage) {
        cov.write_drcov(&mut std::io::BufWriter::new(f))
            .with_context(|| format!("writing coverage file {}", path.display()))?;
    }
    let status = outcome.exit_status();
    drop(m.take_raw_guard());
    if let Some(mut t) = m.cpu.trace.take() {
        t.finish().context("writing the trace")?;
    }
    if args.stats {
        eprint!(
            "{}",
            rinx::trace::stats::report(&m.cpu, wall, m.halted_time)
        );
        match &m.engine {
            rinx::exec::Engine::Jit(j) => {
                eprint!("{}", rinx::trace::stats::jit_report(&j.stats));
                eprint!(
                    "{}",
                    rinx::trace::stats::jit_helper_report(&j.helper_calls, 12)
                );
            }
            rinx::exec::Engine::Lockstep(l) => {
                eprint!("{}", rinx::trace::stats::jit_report(&l.jit().stats));
                eprintln!(
                    "  lockstep                {} blocks compared, no divergence",
                    l.blocks
                );
            }
            rinx::exec::Engine::Interp => eprintln!(
                "  time per engine         interpreter {:.3} s",
                wall.saturating_sub(m.halted_time).as_secs_f64()
            ),
        }
        if !m.board.network.is_empty() {
            let n = m.board.network.stats;
            eprintln!(
                "  network                 {} slices ended by arriving frames, {} by NIC doorbells, {} halts woken by frames",
                n.arrival_stops, n.doorbell_stops, n.halt_wakes
            );
        }
    }
    log::info!(target: "rinx", "{outcome:?} after {:.3} s, {} instructions", start.elapsed().as_secs_f64(), m.cpu.icount);
    if outcome == Outcome::Reset {
        // Said on stderr so that a guest that panics and reboots (panic=-1) is not mistaken for
        // a clean power-off by someone reading only the exit status.
        eprintln!("rinx: the guest reset the machine; rinx stops (like QEMU with -no-reboot)");
    }
    if let Outcome::Divergence(report) = &outcome {
        eprintln!("rinx: lockstep: {report}");
    }
    if let Outcome::TripleFault(diag) = &outcome {
        eprintln!("rinx: the guest triple-faulted (processor shutdown)\n{diag}");
    }
    Ok(status)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let r = match cli.command {
        Command::Run(a) => run(*a),
        Command::Switch(a) => switch(a),
    };
    match r {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("rinx: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
