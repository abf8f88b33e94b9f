//! The GDB remote stub: `rinx run --gdb tcp:127.0.0.1:1234 [--wait-gdb]` lets gdb (`target
//! remote 127.0.0.1:1234`) debug the guest. The GDB Remote Serial Protocol (gdb manual, appendix
//! E "GDB Remote Serial Protocol") is spoken by the `gdbstub` crate; this module implements its
//! target over the machine:
//!
//! - registers in gdb's i386 or x86-64 layout ([`regs`]; `--gdb-arch auto` picks x86-64 if the
//!   guest is in IA-32e mode when gdb attaches, i386 otherwise; gdb cannot switch layouts
//!   within a session);
//! - memory at guest-*linear* addresses, translated through the guest's page tables without side
//!   effects ([`crate::mmu::debug`]); unmapped or device memory is an error (`E0e`);
//! - software (`Z0`) and hardware (`Z1`) breakpoints, both checked by the emulator by linear
//!   address before each instruction (guest memory is never patched with INT3);
//! - watchpoints (`Z2` write, `Z3` read, `Z4` access) checked on the emulator's data-access
//!   hooks, reported after the accessing instruction (a trap, like the debug registers);
//! - single-step (`s`, external interrupts held off meanwhile), continue (`c`), Ctrl-C, detach
//!   (`D`: the guest runs on and another debugger may attach) and kill (`k`: rinx exits).
//!
//! - `monitor` commands ([`monitor`]: `monitor cr`, `monitor walk VA`, `monitor stats`) for what
//!   gdb's register layouts leave out: control registers, EFER, segment bases, descriptor-table
//!   registers, and the page walk behind an address.
//!
//! While no debugger is attached (and no coverage is recorded) the machine runs its plain,
//! uninstrumented loop: the stub costs nothing.

pub mod monitor;
pub mod regs;

use crate::exec::interp::{DebugStop, Probes};
use crate::machine::{Machine, Outcome, Slice};
use crate::trace::watch::{WatchKind as RWatchKind, Watchpoint};
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};
use regs::GuestArch;
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};

/// EFAULT: the errno gdb receives for memory that is not mapped.
const EFAULT: u8 = 14;

/// `--gdb` values: where the stub listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GdbSpec {
    /// A TCP listener on a loopback address (port 0: any free port, printed on stderr).
    Tcp(SocketAddr),
}

/// Parses `tcp:HOST:PORT` (loopback addresses only).
pub fn parse_spec(s: &str) -> Result<GdbSpec, String> {
    let a = s
        .strip_prefix("tcp:")
        .ok_or_else(|| format!("unknown gdb transport '{s}': use tcp:127.0.0.1:PORT"))?;
    let addr: SocketAddr = a
        .parse()
        .map_err(|_| format!("'{a}' is not an address:port, e.g. tcp:127.0.0.1:1234"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "the gdb stub listens on loopback only; '{}' is not a loopback address",
            addr.ip()
        ));
    }
    Ok(GdbSpec::Tcp(addr))
}

/// Which register layout gdb gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchChoice {
    /// x86-64 if the guest is in IA-32e mode when the debugger attaches, else i386.
    Auto,
    /// gdb's i386 layout (32-bit registers).
    I386,
    /// gdb's x86-64 layout.
    X86_64,
}

/// Runs the machine under the stub until the guest's run ends or a debugger kills it.
/// `wait`: wait for a debugger before the first instruction. `probes` may carry a coverage
/// recorder, which is returned with the outcome.
pub fn serve(
    m: &mut Machine,
    listener: &TcpListener,
    wait: bool,
    arch: ArchChoice,
    mut probes: Probes,
) -> std::io::Result<(Outcome, Probes)> {
    let started = std::time::Instant::now();
    let mut wait = wait;
    loop {
        let stream = if wait {
            listener.set_nonblocking(false)?;
            listener.accept()?.0
        } else {
            listener.set_nonblocking(true)?;
            match run_until_attach(m, listener, &mut probes)? {
                Ok(s) => s,
                Err(outcome) => return Ok((outcome, probes)),
            }
        };
        stream.set_nonblocking(false)?;
        let layout = match arch {
            ArchChoice::Auto if m.cpu.long_mode() => ArchChoice::X86_64,
            ArchChoice::Auto => ArchChoice::I386,
            a => a,
        };
        let end = match layout {
            ArchChoice::X86_64 => session::<X86_64_SSE>(m, &mut probes, stream, started),
            _ => session::<X86_SSE>(m, &mut probes, stream, started),
        };
        match end {
            SessionEnd::Finished(o) => return Ok((o, probes)),
            SessionEnd::Detached => {
                log::info!(target: "rinx::gdb", "debugger detached; the guest runs on");
                wait = false;
            }
        }
    }
}

/// Runs (uninstrumented unless coverage is on) until a debugger connects or the run ends.
fn run_until_attach(
    m: &mut Machine,
    listener: &TcpListener,
    probes: &mut Probes,
) -> std::io::Result<Result<TcpStream, Outcome>> {
    let instrumented = probes.coverage.is_some();
    loop {
        let slice = if instrumented {
            m.run_slice(Some(probes))
        } else {
            m.run_slice(None)
        };
        if let Slice::Done(o) = slice {
            return Ok(Err(o));
        }
        match listener.accept() {
            Ok((s, _)) => return Ok(Ok(s)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// How one debugger session ended.
enum SessionEnd {
    /// The guest's run is over (it exited while debugged, or the debugger killed it).
    Finished(Outcome),
    /// The debugger detached or went away; the guest runs on.
    Detached,
}

fn session<A: GuestArch>(
    m: &mut Machine,
    probes: &mut Probes,
    stream: TcpStream,
    started: std::time::Instant,
) -> SessionEnd {
    log::info!(target: "rinx::gdb", "debugger attached ({} registers)", A::NAME);
    let mut t = GdbTarget::<A> {
        m,
        probes,
        sw: BTreeSet::new(),
        hw: BTreeSet::new(),
        watches: Vec::new(),
        step: false,
        outcome: None,
        started,
        _arch: PhantomData,
    };
    let r = GdbStub::new(stream).run_blocking::<EventLoop<A>>(&mut t);
    // Whatever the debugger left set goes away with it.
    for w in std::mem::take(&mut t.watches) {
        t.m.cpu.trace.remove_watchpoint(w);
    }
    t.probes.breakpoints.clear();
    t.probes.single_step = false;
    let outcome = t.outcome.take();
    match r {
        Ok(DisconnectReason::Kill) => SessionEnd::Finished(outcome.unwrap_or(Outcome::Killed)),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {
            SessionEnd::Finished(outcome.unwrap_or(Outcome::Killed))
        }
        Ok(DisconnectReason::Disconnect) => match outcome {
            Some(o) => SessionEnd::Finished(o),
            None => SessionEnd::Detached,
        },
        Err(e) => {
            log::warn!(target: "rinx::gdb", "debugger session ended: {e}");
            match outcome {
                Some(o) => SessionEnd::Finished(o),
                None => SessionEnd::Detached,
            }
        }
    }
}

/// The stub's target: the machine, the instrumented-run checks, and the breakpoints by kind.
struct GdbTarget<'a, A> {
    m: &'a mut Machine,
    probes: &'a mut Probes,
    sw: BTreeSet<u64>,
    hw: BTreeSet<u64>,
    watches: Vec<Watchpoint>,
    /// The pending resume is a single-step.
    step: bool,
    /// The run ended while the debugger was attached.
    outcome: Option<Outcome>,
    /// When the stub started (the run's wall time, for `monitor stats`).
    started: std::time::Instant,
    _arch: PhantomData<A>,
}

impl<A: GuestArch> GdbTarget<'_, A> {
    fn sync_breakpoints(&mut self) {
        self.probes.breakpoints = self.sw.union(&self.hw).copied().collect();
    }

    /// Runs slices until a stop; `poll` says whether the debugger sent something.
    fn run(&mut self, mut poll: impl FnMut() -> bool) -> Option<SingleThreadStopReason<A::Usize>> {
        if let Some(o) = &self.outcome {
            return Some(exit_reason(o));
        }
        self.probes.single_step = self.step;
        loop {
            match self.m.run_slice(Some(self.probes)) {
                Slice::Running => {}
                Slice::Done(o) => {
                    let r = exit_reason(&o);
                    self.outcome = Some(o);
                    return Some(r);
                }
                Slice::Debug(DebugStop::Step) => return Some(SingleThreadStopReason::DoneStep),
                Slice::Debug(DebugStop::Breakpoint(la)) => {
                    return Some(if self.sw.contains(&la) {
                        SingleThreadStopReason::SwBreak(())
                    } else {
                        SingleThreadStopReason::HwBreak(())
                    })
                }
                Slice::Debug(DebugStop::Watchpoint(hit)) => {
                    return Some(SingleThreadStopReason::Watch {
                        tid: (),
                        kind: match hit.watch.kind {
                            RWatchKind::Write => WatchKind::Write,
                            RWatchKind::Read => WatchKind::Read,
                            RWatchKind::Access => WatchKind::ReadWrite,
                        },
                        addr: A::usize(hit.watch.addr),
                    })
                }
            }
            if poll() {
                return None;
            }
        }
    }
}

/// The stop reply for the end of the run: `W` with the exit status, or `X` SIGSEGV after a
/// triple fault (the diagnostic goes to stderr as without a debugger).
fn exit_reason<U>(o: &Outcome) -> SingleThreadStopReason<U> {
    match o {
        Outcome::TripleFault(_) => SingleThreadStopReason::Terminated(Signal::SIGSEGV),
        o => SingleThreadStopReason::Exited(o.exit_status().clamp(0, 255) as u8),
    }
}

impl<A: GuestArch> Target for GdbTarget<'_, A> {
    type Arch = A;
    type Error = String;

    #[inline(always)]
    fn base_ops(&mut self) -> BaseOps<'_, A, String> {
        BaseOps::SingleThread(self)
    }

    #[inline(always)]
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GuestArch> MonitorCmd for GdbTarget<'_, A> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), String> {
        let text = monitor::run(
            self.m,
            self.started.elapsed(),
            &String::from_utf8_lossy(cmd),
        );
        for line in text.lines() {
            gdbstub::outputln!(out, "{line}");
        }
        Ok(())
    }
}

impl<A: GuestArch> SingleThreadBase for GdbTarget<'_, A> {
    fn read_registers(&mut self, regs: &mut A::Registers) -> TargetResult<(), Self> {
        A::read(&self.m.cpu, regs);
        Ok(())
    }

    fn write_registers(&mut self, regs: &A::Registers) -> TargetResult<(), Self> {
        A::write(&mut self.m.cpu, regs);
        Ok(())
    }

    fn read_addrs(&mut self, start: A::Usize, data: &mut [u8]) -> TargetResult<usize, Self> {
        let n = crate::mmu::debug::peek(&self.m.cpu.s, &self.m.mem, A::addr(start), data);
        if n == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start: A::Usize, data: &[u8]) -> TargetResult<(), Self> {
        let cpu = &mut self.m.cpu;
        let n = crate::mmu::debug::poke(&cpu.s, &mut self.m.mem, A::addr(start), data, |p| {
            cpu.dcache.note_write(p)
        });
        if n < data.len() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(())
    }

    #[inline(always)]
    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GuestArch> SingleThreadResume for GdbTarget<'_, A> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), String> {
        // Signals have no meaning for a whole machine; gdb's `signal N` is ignored.
        self.step = false;
        self.probes.resume_over_breakpoint = Some(regs::pc(&self.m.cpu));
        Ok(())
    }

    #[inline(always)]
    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GuestArch> SingleThreadSingleStep for GdbTarget<'_, A> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), String> {
        self.step = true;
        self.probes.resume_over_breakpoint = Some(regs::pc(&self.m.cpu));
        Ok(())
    }
}

impl<A: GuestArch> Breakpoints for GdbTarget<'_, A> {
    #[inline(always)]
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    #[inline(always)]
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    #[inline(always)]
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl<A: GuestArch> SwBreakpoint for GdbTarget<'_, A> {
    fn add_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        self.sw.insert(A::addr(addr));
        self.sync_breakpoints();
        Ok(true)
    }
    fn remove_sw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        let r = self.sw.remove(&A::addr(addr));
        self.sync_breakpoints();
        Ok(r)
    }
}

impl<A: GuestArch> HwBreakpoint for GdbTarget<'_, A> {
    fn add_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        self.hw.insert(A::addr(addr));
        self.sync_breakpoints();
        Ok(true)
    }
    fn remove_hw_breakpoint(&mut self, addr: A::Usize, _kind: usize) -> TargetResult<bool, Self> {
        let r = self.hw.remove(&A::addr(addr));
        self.sync_breakpoints();
        Ok(r)
    }
}

fn watchpoint(addr: u64, len: u64, kind: WatchKind) -> Watchpoint {
    Watchpoint {
        addr,
        len,
        kind: match kind {
            WatchKind::Write => RWatchKind::Write,
            WatchKind::Read => RWatchKind::Read,
            WatchKind::ReadWrite => RWatchKind::Access,
        },
    }
}

impl<A: GuestArch> HwWatchpoint for GdbTarget<'_, A> {
    fn add_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let w = watchpoint(A::addr(addr), A::addr(len), kind);
        self.m.cpu.trace.add_watchpoint(w);
        self.watches.push(w);
        Ok(true)
    }
    fn remove_hw_watchpoint(
        &mut self,
        addr: A::Usize,
        len: A::Usize,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let w = watchpoint(A::addr(addr), A::addr(len), kind);
        self.watches.retain(|x| *x != w);
        Ok(self.m.cpu.trace.remove_watchpoint(w))
    }
}

/// The blocking event loop: runs the machine slice by slice (about a millisecond each) and
/// polls the connection between slices for packets and Ctrl-C.
struct EventLoop<'a, A>(PhantomData<&'a A>);

impl<'a, A: GuestArch> BlockingEventLoop for EventLoop<'a, A> {
    type Target = GdbTarget<'a, A>;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<A::Usize>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Self::Target,
        conn: &mut TcpStream,
    ) -> Result<
        Event<Self::StopReason>,
        WaitForStopReasonError<String, <TcpStream as Connection>::Error>,
    > {
        let mut poll_error = None;
        let stop = target.run(|| match conn.peek() {
            Ok(b) => b.is_some(),
            Err(e) => {
                poll_error = Some(e);
                true
            }
        });
        if let Some(e) = poll_error {
            return Err(WaitForStopReasonError::Connection(e));
        }
        match stop {
            Some(r) => Ok(Event::TargetStopped(r)),
            None => {
                let b = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                Ok(Event::IncomingData(b))
            }
        }
    }

    fn on_interrupt(_target: &mut Self::Target) -> Result<Option<Self::StopReason>, String> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert!(matches!(
            parse_spec("tcp:127.0.0.1:1234"),
            Ok(GdbSpec::Tcp(_))
        ));
        assert!(parse_spec("tcp:0.0.0.0:1234").is_err());
        assert!(parse_spec("udp:127.0.0.1:1").is_err());
        assert!(parse_spec("tcp:localhost").is_err());
    }
}
