//! Lockstep: the JIT and the interpreter run the same guest side by side; after every JIT
//! block the interpreter executes the same number of instructions and the architectural states
//! are compared. The first divergence is reported with its address, the block's instructions
//! and the differing registers; it is then narrowed to one instruction by replaying with
//! single-instruction blocks.

use crate::cpu::{Cpu, Ctx, NullPlatform, StopReason};
use crate::exec::{interp, jit::JitEngine};
use crate::testing::TestMachine;
use std::fmt;

/// The first point where the engines disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Instruction count at the start of the diverging block (or step).
    pub icount: u64,
    /// RIP at the start of the diverging block.
    pub rip: u64,
    /// Disassembly of the instructions from `rip` (up to the block length).
    pub instructions: Vec<String>,
    /// `name: interp=... jit=...` for each differing register or field.
    pub differences: Vec<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "engines diverge after the block at rip={:#x} (instruction {}):",
            self.rip, self.icount
        )?;
        for i in &self.instructions {
            writeln!(f, "    {i}")?;
        }
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// Field-by-field differences of two CPUs (`a` = interpreter, `b` = JIT).
pub fn diff_cpus(a: &Cpu, b: &Cpu) -> Vec<String> {
    let mut d = Vec::new();
    let names = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    let mut cmp = |n: &str, x: u64, y: u64| {
        if x != y {
            d.push(format!("{n}: interp={x:#x} jit={y:#x}"));
        }
    };
    for (i, n) in names.iter().enumerate() {
        cmp(n, a.s.gpr[i], b.s.gpr[i]);
    }
    cmp("rip", a.s.rip, b.s.rip);
    cmp("rflags", a.s.rflags, b.s.rflags);
    cmp("icount", a.icount, b.icount);
    cmp("halted", a.halted as u64, b.halted as u64);
    if a.s != b.s && d.is_empty() {
        d.push(format!(
            "system state differs (segments, control registers, FPU/SSE or MSRs): interp={:?} jit={:?}",
            a.s, b.s
        ));
    }
    d
}

fn disasm(cpu: &Cpu, mem: &mut crate::mmu::GuestMemory, n: usize) -> Vec<String> {
    let mut c = cpu.clone();
    let mut plat = NullPlatform::default();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut ctx = Ctx::new(&mut c, mem, &mut plat);
        match ctx.fetch_decode() {
            Ok(d) => {
                out.push(format!("{:#x}: {}", c.s.rip, decoder::format_intel(&d)));
                c.s.rip = d.next_ip();
            }
            Err(_) => break,
        }
    }
    out
}

/// Runs `make()` twice, under the JIT (blocks of at most `block_insns` instructions) and the
/// interpreter, comparing after every block, for at most `budget` instructions or until the
/// JIT side stops (halt, triple fault). Guest RAM is compared at the end. Returns the
/// instruction count reached, or the first divergence, narrowed to a single instruction.
pub fn lockstep(make: &dyn Fn() -> TestMachine, budget: u64) -> Result<u64, Box<Divergence>> {
    match lockstep_blocks(make, budget, crate::exec::jit::MAX_BLOCK_INSNS) {
        Ok(n) => Ok(n),
        Err(d) => Err(lockstep_blocks(make, budget, 1).err().unwrap_or(d)),
    }
}

fn lockstep_blocks(
    make: &dyn Fn() -> TestMachine,
    budget: u64,
    block_insns: usize,
) -> Result<u64, Box<Divergence>> {
    let mut j = make();
    let mut i = make();
    let mut jit = JitEngine::new().expect("JIT code memory");
    jit.max_block_insns = block_insns;
    while j.cpu.icount < budget {
        let (start, rip) = (j.cpu.icount, j.cpu.s.rip);
        let before = j.cpu.clone();
        let stop = jit.run_one(&mut j.cpu, &mut j.mem, &mut j.plat, budget - start);
        let n = j.cpu.icount - start;
        let istop = if n > 0 {
            interp::run(&mut i.cpu, &mut i.mem, &mut i.plat, n)
        } else {
            interp::run(&mut i.cpu, &mut i.mem, &mut i.plat, 0)
        };
        let mut diffs = diff_cpus(&i.cpu, &j.cpu);
        if i.plat.outs != j.plat.outs {
            diffs.push(format!(
                "port output: interp={:?} jit={:?}",
                i.plat.outs, j.plat.outs
            ));
        }
        let stopped = stop != StopReason::Budget || (n == 0 && istop != StopReason::Budget);
        if stopped && diffs.is_empty() {
            let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
            let mut addr = 0;
            while i.mem.read(addr, &mut a).is_ok() && j.mem.read(addr, &mut b).is_ok() {
                if a != b {
                    diffs.push(format!("guest RAM differs in page {addr:#x}"));
                    break;
                }
                addr += 4096;
            }
        }
        if !diffs.is_empty() {
            let mut m = make();
            let instructions = disasm(&before, &mut m.mem, n.clamp(1, 64) as usize);
            return Err(Box::new(Divergence {
                icount: start,
                rip,
                instructions,
                differences: diffs,
            }));
        }
        if stopped {
            break;
        }
    }
    Ok(j.cpu.icount)
}

// ---------------------------------------------------------------------------------------------
// Whole-machine lockstep (`--engine lockstep`).
// ---------------------------------------------------------------------------------------------

use crate::cpu::{interrupt, Platform};
use crate::mmu::GuestMemory;
use std::collections::VecDeque;

/// Instructions between two comparisons of the whole guest RAM (registers are compared after
/// every block). A full compare of 512 MiB costs ~0.1 s.
const RAM_COMPARE_EVERY: u64 = 200_000_000;

/// One interaction of the JIT side with the devices, replayed to the interpreter side so both
/// see the same device values, timer reads and interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    IoRead {
        port: u16,
        size: u8,
        value: u32,
    },
    IoWrite {
        port: u16,
        size: u8,
        value: u32,
    },
    MmioRead {
        gpa: u64,
        size: u8,
        value: u64,
    },
    MmioWrite {
        gpa: u64,
        size: u8,
        value: u64,
    },
    Tsc(u64),
    /// INTA at instruction count `icount` (before that instruction) with its vector.
    Ack {
        icount: u64,
        vector: Option<u8>,
    },
}

/// Wraps the real platform on the JIT side and logs every interaction.
struct Recorder<'a, P: Platform + ?Sized> {
    inner: &'a mut P,
    log: &'a mut VecDeque<Event>,
    /// Instruction count at the start of the block (interrupts are taken only there).
    icount: u64,
}

impl<P: Platform + ?Sized> Platform for Recorder<'_, P> {
    fn io_read(&mut self, port: u16, size: u8) -> u32 {
        let value = self.inner.io_read(port, size);
        self.log.push_back(Event::IoRead { port, size, value });
        value
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.inner.io_write(port, size, value);
        self.log.push_back(Event::IoWrite { port, size, value });
    }
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        let value = self.inner.mmio_read(gpa, size);
        self.log.push_back(Event::MmioRead { gpa, size, value });
        value
    }
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        self.inner.mmio_write(gpa, size, value);
        self.log.push_back(Event::MmioWrite { gpa, size, value });
    }
    fn tsc(&mut self) -> u64 {
        let v = self.inner.tsc();
        self.log.push_back(Event::Tsc(v));
        v
    }
    fn interrupt_pending(&mut self) -> bool {
        self.inner.interrupt_pending()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        let vector = self.inner.acknowledge_interrupt();
        self.log.push_back(Event::Ack {
            icount: self.icount,
            vector,
        });
        vector
    }
    fn stop_pending(&self) -> bool {
        self.inner.stop_pending()
    }
}

/// Feeds the recorded interactions to the interpreter side, checking that it makes the same
/// ones in the same order (a different port, address, size or written value is a divergence).
struct Replayer<'a> {
    log: &'a mut VecDeque<Event>,
    /// The interpreter's instruction count before the current instruction.
    icount: u64,
    mismatch: Option<String>,
}

impl Replayer<'_> {
    fn take(&mut self, what: &str) -> Option<Event> {
        let e = self.log.pop_front();
        if e.is_none() && self.mismatch.is_none() {
            self.mismatch = Some(format!(
                "interpreter made a device access the JIT did not: {what}"
            ));
        }
        e
    }
    fn expect(&mut self, want: Event) {
        let what = format!("{want:x?}");
        match self.take(&what) {
            Some(got) if got == want => {}
            Some(got) if self.mismatch.is_none() => {
                self.mismatch = Some(format!("device access: interp={want:x?} jit={got:x?}"));
            }
            _ => {}
        }
    }
}

impl Platform for Replayer<'_> {
    fn io_read(&mut self, port: u16, size: u8) -> u32 {
        match self.take("io read") {
            Some(Event::IoRead {
                port: p,
                size: s,
                value,
            }) if p == port && s == size => value,
            other => {
                if self.mismatch.is_none() {
                    self.mismatch = Some(format!(
                        "device access: interp=IoRead {{ port: {port:#x}, size: {size} }} jit={other:x?}"
                    ));
                }
                u32::MAX
            }
        }
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.expect(Event::IoWrite { port, size, value });
    }
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        match self.take("mmio read") {
            Some(Event::MmioRead {
                gpa: a,
                size: s,
                value,
            }) if a == gpa && s == size => value,
            other => {
                if self.mismatch.is_none() {
                    self.mismatch = Some(format!(
                        "device access: interp=MmioRead {{ gpa: {gpa:#x}, size: {size} }} jit={other:x?}"
                    ));
                }
                u64::MAX
            }
        }
    }
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        self.expect(Event::MmioWrite { gpa, size, value });
    }
    fn tsc(&mut self) -> u64 {
        match self.take("rdtsc") {
            Some(Event::Tsc(v)) => v,
            other => {
                if self.mismatch.is_none() {
                    self.mismatch = Some(format!("device access: interp=Tsc jit={other:x?}"));
                }
                0
            }
        }
    }
    fn interrupt_pending(&mut self) -> bool {
        matches!(self.log.front(), Some(Event::Ack { icount, .. }) if *icount == self.icount)
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        match self.log.pop_front() {
            Some(Event::Ack { vector, .. }) => vector,
            _ => None,
        }
    }
}

/// The whole machine run by the JIT, with the interpreter shadowing it on a private copy of
/// the CPU and guest RAM. After every JIT block the interpreter runs the same number of
/// instructions, replaying the block's device reads, timer reads and interrupt
/// acknowledgements, and the registers are compared; guest RAM is compared every
/// [`RAM_COMPARE_EVERY`] instructions and when the machine stops. The first divergence stops
/// the run with a [`Divergence`] report. Device DMA into guest RAM is not mirrored, so the
/// machine refuses drives in this mode.
#[derive(Debug)]
pub struct MachineLockstep {
    jit: JitEngine,
    shadow: Option<(Box<Cpu>, GuestMemory)>,
    log: VecDeque<Event>,
    next_ram_compare: u64,
    /// The first divergence, once found (the engine then runs nothing more).
    pub divergence: Option<Box<Divergence>>,
    /// Blocks compared so far.
    pub blocks: u64,
}

impl MachineLockstep {
    /// A lockstep engine; fails if the JIT's code memory cannot be mapped.
    pub fn new() -> std::io::Result<Self> {
        let mut jit = JitEngine::new()?;
        if let Some(n) = std::env::var("RINX_LOCKSTEP_BLOCK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            // Smaller blocks pinpoint a divergence (1 = compare after every instruction).
            jit.max_block_insns = n.max(1);
        }
        Ok(MachineLockstep {
            jit,
            shadow: None,
            log: VecDeque::new(),
            next_ram_compare: RAM_COMPARE_EVERY,
            divergence: None,
            blocks: 0,
        })
    }

    /// The JIT that runs the machine (its counters feed `--stats`).
    pub fn jit(&self) -> &JitEngine {
        &self.jit
    }

    /// The interpreter side's CPU (after the first run), for fault-injection tests of the
    /// comparison itself.
    pub fn shadow_cpu_mut(&mut self) -> Option<&mut Cpu> {
        self.shadow.as_mut().map(|(c, _)| &mut **c)
    }

    fn shadow_of(cpu: &Cpu, mem: &GuestMemory) -> std::io::Result<(Box<Cpu>, GuestMemory)> {
        let layout = mem.layout();
        let mut copy = GuestMemory::new(&layout).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; 1 << 20];
        for (base, size) in layout {
            let mut off = 0;
            while off < size {
                let n = (size - off).min(buf.len() as u64) as usize;
                mem.read(base + off, &mut buf[..n])
                    .and_then(|_| copy.write(base + off, &buf[..n]))
                    .map_err(std::io::Error::other)?;
                off += n as u64;
            }
        }
        Ok((Box::new(cpu.clone()), copy))
    }

    /// Runs at most `budget` instructions on the JIT, shadowed by the interpreter.
    pub fn run<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        mem: &mut GuestMemory,
        plat: &mut P,
        budget: u64,
    ) -> StopReason {
        if self.divergence.is_some() {
            return StopReason::PlatformStop;
        }
        if self.shadow.is_none() {
            match Self::shadow_of(cpu, mem) {
                Ok(s) => self.shadow = Some(s),
                Err(e) => {
                    self.divergence = Some(Box::new(Divergence {
                        icount: cpu.icount,
                        rip: cpu.s.rip,
                        instructions: Vec::new(),
                        differences: vec![format!("cannot copy guest RAM: {e}")],
                    }));
                    return StopReason::PlatformStop;
                }
            }
        }
        let end = cpu.icount.saturating_add(budget);
        loop {
            let (start, rip) = (cpu.icount, cpu.s.rip);
            self.log.clear();
            let stop = {
                let mut rec = Recorder {
                    inner: plat,
                    log: &mut self.log,
                    icount: start,
                };
                self.jit
                    .run_one(cpu, mem, &mut rec, end.saturating_sub(start))
            };
            let n = cpu.icount - start;
            self.blocks += 1;
            let Some((icpu, imem)) = self.shadow.as_mut() else {
                return StopReason::PlatformStop;
            };
            let mut diffs = replay(icpu, imem, &mut self.log, n);
            if diffs.is_empty() {
                diffs = diff_cpus(icpu, cpu);
            }
            let stopped = !matches!(stop, StopReason::Budget);
            if diffs.is_empty()
                && (cpu.icount >= self.next_ram_compare || stop == StopReason::PlatformStop)
            {
                self.next_ram_compare = cpu.icount + RAM_COMPARE_EVERY;
                if let Some(d) = compare_ram(imem, mem) {
                    diffs.push(d);
                }
            }
            if !diffs.is_empty() {
                // The block's instructions, decoded from the interpreter's RAM (before the
                // block ran, RIP pointed at them; code is rarely rewritten by the block itself).
                let mut before = (**icpu).clone();
                before.s.rip = rip;
                let instructions = disasm(&before, imem, n.clamp(1, 64) as usize);
                self.divergence = Some(Box::new(Divergence {
                    icount: start,
                    rip,
                    instructions,
                    differences: diffs,
                }));
                return StopReason::PlatformStop;
            }
            if stopped || cpu.icount >= end {
                return stop;
            }
        }
    }
}

/// Runs the interpreter side for `n` instructions with the recorded device interactions:
/// interrupts are taken exactly where the JIT took them. Returns the differences found in the
/// device interactions (empty if they matched).
fn replay(cpu: &mut Cpu, mem: &mut GuestMemory, log: &mut VecDeque<Event>, n: u64) -> Vec<String> {
    let end = cpu.icount + n;
    let mut r = Replayer {
        log,
        icount: cpu.icount,
        mismatch: None,
    };
    let mut ctx = Ctx::new(cpu, mem, &mut r);
    loop {
        ctx.plat.icount = ctx.cpu.icount;
        if ctx.cpu.s.rflags & jit::abi::flags::IF != 0
            && ctx.cpu.icount >= ctx.cpu.shadow_until
            && ctx.plat.interrupt_pending()
        {
            if let Some(v) = ctx.plat.acknowledge_interrupt() {
                ctx.cpu.halted = false;
                if interrupt::external(&mut ctx, v).is_err() {
                    break;
                }
            }
        }
        if ctx.cpu.icount >= end || ctx.cpu.halted {
            break;
        }
        if interp::step(&mut ctx).is_err() {
            break;
        }
        ctx.cpu.stop_requested = false;
    }
    let mut out = Vec::new();
    if let Some(m) = r.mismatch.take() {
        out.push(m);
    }
    if let Some(e) = r.log.front() {
        out.push(format!(
            "the JIT made device accesses the interpreter did not: next {e:x?}"
        ));
    }
    out
}

/// The first 4 KiB page where the two RAMs differ.
fn compare_ram(a: &GuestMemory, b: &GuestMemory) -> Option<String> {
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (base, size) in a.layout() {
        let mut off = 0;
        while off < size {
            let n = (size - off).min(x.len() as u64) as usize;
            if a.read(base + off, &mut x[..n]).is_err() || b.read(base + off, &mut y[..n]).is_err()
            {
                return Some(format!("guest RAM layout differs at {:#x}", base + off));
            }
            if x[..n] != y[..n] {
                let i = (0..n).find(|&i| x[i] != y[i]).unwrap_or(0);
                return Some(format!(
                    "guest RAM differs at {:#x}: interp={:#04x} jit={:#04x}",
                    base + off + i as u64,
                    x[i],
                    y[i]
                ));
            }
            off += n as u64;
        }
    }
    None
}
