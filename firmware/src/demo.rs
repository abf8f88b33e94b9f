//! The built-in demo guest: what `rinx run` boots when no `--kernel` is given.
//!
//! A small operating system in a few hundred instructions, assembled here with iced-x86's code
//! assembler, so rinx needs nothing downloaded to show that it works. It walks an x86 CPU
//! through the steps every PC operating system takes, and prints one line per step on the
//! serial console COM1:
//!
//! 1. **real mode**, where the CPU starts (like a boot sector at 0000:1000);
//! 2. **protected mode**: its own GDT, CR0.PE = 1, a far jump into a 32-bit code segment;
//! 3. **paging**: 32-bit paging with one 4 MiB page;
//! 4. **long mode**: 4-level paging, EFER.LME, a far jump into a 64-bit code segment;
//! 5. **ring 3**: a user program entered with IRETQ, which cannot touch the hardware...
//! 6. ...so it prints through a **system call** (SYSCALL: `write(1, buf, len)`, Linux numbers);
//! 7. a **page fault** that the kernel handles by mapping the page, and a **general protection
//!    fault** (HLT in ring 3) that it handles by skipping the instruction;
//! 8. **timer interrupts**: the 8254 PIT at 100 Hz through the 8259A PIC, five ticks;
//! 9. **power-off** through the ACPI PM1a control register.
//!
//! Section numbers in comments refer to the Intel SDM Vol. 3A unless noted. The same walk,
//! reporting through debug ports instead of the serial console, is the mode-walk integration
//! test (`tests/mode_walk.rs`).
//!
//! Guest memory (physical = linear: everything is identity-mapped):
//!
//! ```text
//! 0x1000  real-mode code (entry 0000:1000)   0x7000  boot stack top (real / protected mode)
//! 0x2000  32-bit protected-mode code         0x8000  IDT (256 x 16 bytes)
//! 0x3000  64-bit kernel                      0xA000  kernel stack top (TSS.RSP0)
//! 0x4000  user program (user page)           0xA800  IST1 stack top (#GP)
//! 0x5000  GDT, GDTR and IDTR images          0xC000  user stack top (page 0xB000, user)
//! 0x5200  kernel variables                   0xD000  kernel strings
//! 0x6000  64-bit TSS                         0x10000 32-bit page directory
//! 0x20000 PML4, 0x21000 PDPT, 0x22000 PD, 0x23000 PT (first 2 MiB, 4 KiB pages)
//! 0x1F0000 the page that is missing until the page-fault handler maps it
//! ```
//!
//! ```
//! let image = firmware::demo::build()?;
//! let mut ram = firmware::VecMemory::new(4 << 20);
//! let entry = firmware::demo::load(&mut ram)?;
//! assert_eq!((entry.cs, entry.ip), (0, 0x1000));
//! assert_eq!(ram.read(0x1000, 3), Some(&image.chunks[0].bytes[..3]));
//! # Ok::<(), firmware::demo::DemoError>(())
//! ```

use crate::mem::{GuestMemWrite, MemError};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use thiserror::Error;

/// Real-mode code; the entry point is `0000:REAL_CODE`.
pub const REAL_CODE: u64 = 0x1000;
/// 32-bit protected-mode code.
pub const PM_CODE: u64 = 0x2000;
/// 64-bit kernel code (one page).
pub const KERNEL_CODE: u64 = 0x3000;
/// 64-bit user program and its data (one user-accessible page).
pub const USER_CODE: u64 = 0x4000;
/// Global descriptor table.
pub const GDT: u64 = 0x5000;
/// Kernel variables: timer tick count, the user RSP during a system call, a flag.
pub const KERNEL_VARS: u64 = 0x5200;
/// 64-bit task-state segment (RSP0 and IST1 live here).
pub const TSS: u64 = 0x6000;
/// Interrupt descriptor table.
pub const IDT: u64 = 0x8000;
/// Kernel strings (NUL-terminated).
pub const STRINGS: u64 = 0xD000;
/// The user page that is not present until the page-fault handler maps it.
pub const MISSING_PAGE: u64 = 0x1F_0000;
/// Guest RAM the demo needs (it uses the first 2 MiB).
pub const MIN_RAM: u64 = 2 << 20;

const GDTR: u64 = 0x5100;
const IDTR: u64 = 0x5110;
const TICKS: u64 = KERNEL_VARS;
const SAVED_USER_RSP: u64 = KERNEL_VARS + 8;
const SYSCALL_TRACED: u64 = KERNEL_VARS + 16;
const BOOT_STACK_TOP: u64 = 0x7000;
const KERNEL_STACK_TOP: u64 = 0xA000;
const IST1_STACK_TOP: u64 = 0xA800;
const USER_STACK_PAGE: u64 = 0xB000;
const USER_STACK_TOP: u64 = 0xC000;
const PD32: u64 = 0x1_0000;
const PML4: u64 = 0x2_0000;
const PDPT: u64 = 0x2_1000;
const PD: u64 = 0x2_2000;
const PT: u64 = 0x2_3000;

// GDT selectors. 0x18..0x38 are in the order SYSCALL/SYSRET require (§5.8.8): IA32_STAR[47:32]
// = 0x18 gives kernel CS 0x18 and SS 0x20; IA32_STAR[63:48] = 0x28 gives 32-bit user CS 0x28,
// user SS 0x30 (0x28 + 8) and 64-bit user CS 0x38 (0x28 + 16).
const CODE32: u16 = 0x08;
const DATA32: u16 = 0x10;
const KCODE64: u16 = 0x18;
const UDATA: u16 = 0x30;
const UCODE64: u16 = 0x38;
const TSS_SEL: u16 = 0x40;

// Model-specific registers (§2.2.1, Vol. 4 Table 2-2).
const IA32_EFER: u32 = 0xC000_0080;
const IA32_STAR: u32 = 0xC000_0081;
const IA32_LSTAR: u32 = 0xC000_0082;
const IA32_FMASK: u32 = 0xC000_0084;
const EFER_SCE: u32 = 1 << 0;
const EFER_LME: u32 = 1 << 8;
const EFER_NXE: u32 = 1 << 11;
const CR0_PE: u32 = 1 << 0;
const CR0_ET: u32 = 1 << 4;
const CR0_WP: u32 = 1 << 16;
const CR0_PG: u32 = 1 << 31;
const CR4_PSE: u32 = 1 << 4;
const CR4_PAE: u32 = 1 << 5;

// Devices (IBM PC/AT I/O map).
/// COM1 (16550): transmit holding register; the line status register is at +5.
const COM1: u16 = 0x3F8;
const COM1_LSR: u16 = COM1 + 5;
/// LSR bit 5: THRE, the transmitter can take another byte.
const LSR_THRE: u32 = 1 << 5;
const PIC_MASTER_CMD: u32 = 0x20;
const PIC_MASTER_IMR: u32 = 0x21;
const PIC_SLAVE_CMD: u32 = 0xA0;
const PIC_SLAVE_IMR: u32 = 0xA1;
/// Non-specific end of interrupt (OCW2).
const PIC_EOI: u32 = 0x20;
/// The vector the master 8259A gives IRQ 0 after the remap (slave: 0x28).
const TIMER_VECTOR: u8 = 0x20;
/// IRQ 7 comes out of the master as a spurious interrupt when a request disappears before
/// the INTA cycle; it must not be acknowledged with an EOI.
const SPURIOUS_VECTOR: u8 = 0x27;
const PIT_CH0: u32 = 0x40;
const PIT_MODE: u32 = 0x43;
/// The PIT input clock (Hz), and the divisor for 100 interrupts per second.
const PIT_HZ: u32 = 1_193_182;
const TIMER_HZ: u32 = 100;
const PIT_DIVISOR: u32 = (PIT_HZ + TIMER_HZ / 2) / TIMER_HZ;
/// Timer interrupts to wait for before powering off.
pub const TICKS_TO_COUNT: u32 = 5;
/// Port 0x92 ("system control port A"): bit 1 = A20 gate, bit 0 = fast reset.
const PORT_A: u32 = 0x92;
/// ACPI PM1a control block (PIIX4-style PM base 0x600 + 4; ACPI 6.5 §4.8.3.2.1).
const PM1A_CNT: u16 = 0x604;
/// SLP_TYP for S5 (from the DSDT's `\_S5` package) in bits 12:10, and SLP_EN (bit 13).
const PM1_S5_SLP_EN: u32 = ((crate::acpi::S5_SLP_TYP as u32) << 10) | (1 << 13);
/// isa-debug-exit: writing v ends the emulator with exit status (v << 1) | 1.
const DEBUG_EXIT: u32 = 0xF4;

// The demo kernel's system calls: Linux x86-64 numbers and registers (RAX = number,
// RDI, RSI, RDX = arguments, RAX = result; SYSCALL itself clobbers RCX and R11).
const SYS_WRITE: u32 = 1;
const SYS_EXIT: u32 = 60;
const ENOSYS: i32 = -38;
const EBADF: i32 = -9;

/// Errors building or loading the demo image.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DemoError {
    /// The code assembler rejected the program (a bug in this module).
    #[error("assembling the demo guest: {0}")]
    Assemble(String),
    /// A piece of the image outgrew the space reserved for it (a bug in this module).
    #[error("demo {what} is {len:#x} bytes, more than the {max:#x} reserved for it")]
    TooLarge {
        /// Which piece.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The space reserved for it.
        max: usize,
    },
    /// Guest RAM is too small.
    #[error(transparent)]
    Mem(#[from] MemError),
}

impl From<IcedError> for DemoError {
    fn from(e: IcedError) -> Self {
        DemoError::Assemble(e.to_string())
    }
}

/// Bytes to copy to one guest-physical address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoChunk {
    /// What this is ("real-mode code", "GDT", ...).
    pub what: &'static str,
    /// Guest physical address.
    pub gpa: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// The real-mode state the CPU must be in when the demo starts, as a BIOS leaves it when it
/// jumps to a boot sector: CS:IP at the entry, SS:SP a usable stack, DS = ES = 0, interrupts
/// disabled, and otherwise the reset state of Intel SDM Vol. 3A Table 9-1 (CR0 = 0x60000010,
/// every segment a real-mode segment with base = selector << 4 and limit 0xFFFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealModeEntry {
    /// Code segment selector.
    pub cs: u16,
    /// Instruction pointer.
    pub ip: u16,
    /// Stack segment selector.
    pub ss: u16,
    /// Stack pointer.
    pub sp: u16,
}

/// The assembled demo: the pieces to copy into RAM and the entry state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoImage {
    /// Code and data, at distinct non-overlapping addresses below [`MIN_RAM`].
    pub chunks: Vec<DemoChunk>,
    /// Where and how to start the CPU.
    pub entry: RealModeEntry,
}

/// Assembles the demo guest.
pub fn build() -> Result<DemoImage, DemoError> {
    let mut s = Strings::new(STRINGS);
    let real = assemble(16, REAL_CODE, |a| real_mode(a, &mut s))?;
    let pm = assemble(32, PM_CODE, |a| protected_mode(a, &mut s))?;
    let (kernel, handlers) = kernel(&mut s)?;
    let user = user()?;
    let chunks = vec![
        chunk("real-mode code", REAL_CODE, real, 0x1000)?,
        chunk("protected-mode code", PM_CODE, pm, 0x1000)?,
        chunk("kernel", KERNEL_CODE, kernel, 0x1000)?,
        chunk("user program", USER_CODE, user, 0x1000)?,
        chunk("GDT and descriptor-table registers", GDT, gdt_page(), 0x200)?,
        chunk("TSS", TSS, tss(), 0x68)?,
        chunk("IDT", IDT, idt(&handlers), 0x1000)?,
        chunk("kernel strings", STRINGS, s.bytes, 0x1000)?,
        chunk(
            "32-bit page directory",
            PD32,
            0x83u32.to_le_bytes().to_vec(),
            0x1000,
        )?,
        chunk("4-level page tables", PML4, page_tables(), 0x4000)?,
    ];
    Ok(DemoImage {
        chunks,
        entry: RealModeEntry {
            cs: 0,
            ip: REAL_CODE as u16,
            ss: 0,
            sp: BOOT_STACK_TOP as u16,
        },
    })
}

/// Assembles the demo and writes it into guest RAM (which must be zero-filled, as fresh RAM
/// is). Returns the entry state for the CPU.
pub fn load(mem: &mut dyn GuestMemWrite) -> Result<RealModeEntry, DemoError> {
    let image = build()?;
    for c in &image.chunks {
        mem.write(c.gpa, &c.bytes)?;
    }
    Ok(image.entry)
}

fn chunk(what: &'static str, gpa: u64, bytes: Vec<u8>, max: usize) -> Result<DemoChunk, DemoError> {
    if bytes.len() > max {
        return Err(DemoError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    Ok(DemoChunk { what, gpa, bytes })
}

fn assemble(
    bits: u32,
    at: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, DemoError> {
    let mut a = CodeAssembler::new(bits)?;
    f(&mut a)?;
    Ok(a.assemble(at)?)
}

/// The kernel's strings, NUL-terminated, at fixed addresses so that 16-, 32- and 64-bit code
/// can all load them with a plain `mov esi, address`.
struct Strings {
    base: u64,
    bytes: Vec<u8>,
}

impl Strings {
    fn new(base: u64) -> Self {
        Self {
            base,
            bytes: Vec::new(),
        }
    }
    fn add(&mut self, text: &str) -> u32 {
        let at = self.base + self.bytes.len() as u64;
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.push(0);
        at as u32
    }
}

/// The console routines, assembled once per operating mode.
#[derive(Clone, Copy)]
struct Console {
    /// Prints AL; `'\n'` becomes `"\r\n"`, as Linux's serial console does, so the lines look
    /// right on a raw terminal. Preserves every register.
    putc: CodeLabel,
    /// Prints the NUL-terminated string at (E/R)SI. Preserves every register.
    puts: CodeLabel,
    /// Prints (E/R)BX in hex, without leading zeros but with at least EDX digits (1..=16).
    /// Preserves every register.
    hex: CodeLabel,
}

/// Emits `putc`, `puts` and `hex`. The instructions are the same in every mode except for
/// the register width: 32-bit registers in 16- and 32-bit code (a 16-bit instruction with a
/// 0x66 operand-size prefix uses them; §3.6 of Vol. 1), 64-bit ones in 64-bit code.
fn console(a: &mut CodeAssembler) -> Result<Console, IcedError> {
    let long = a.bitness() == 64;
    let (ax_, bx_, cx_, dx_, si_) = if long {
        (
            Gpr::R(rax),
            Gpr::R(rbx),
            Gpr::R(rcx),
            Gpr::R(rdx),
            Gpr::R(rsi),
        )
    } else {
        (
            Gpr::E(eax),
            Gpr::E(ebx),
            Gpr::E(ecx),
            Gpr::E(edx),
            Gpr::E(esi),
        )
    };
    let mut putc = a.create_label();
    let mut raw_putc = a.create_label();
    let mut wait = a.create_label();
    let mut puts = a.create_label();
    let mut next = a.create_label();
    let mut done = a.create_label();
    let mut hex = a.create_label();
    let mut skip = a.create_label();
    let mut digit = a.create_label();
    let mut decimal = a.create_label();

    a.set_label(&mut putc)?;
    a.cmp(al, u32::from(b'\n'))?;
    a.jne(raw_putc)?;
    a.mov(al, u32::from(b'\r'))?;
    a.call(raw_putc)?;
    a.mov(al, u32::from(b'\n'))?;
    // 16550 UART: poll the line status register until the transmit holding register is
    // empty (THRE), then write the byte. Port numbers above 0xFF need DX.
    a.set_label(&mut raw_putc)?;
    dx_.push(a)?;
    ax_.push(a)?;
    a.mov(dx, u32::from(COM1_LSR))?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, LSR_THRE)?;
    a.jz(wait)?;
    ax_.pop(a)?;
    a.mov(dx, u32::from(COM1))?;
    a.out(dx, al)?;
    dx_.pop(a)?;
    a.ret()?;

    // LODSB reads DS:(E/R)SI and steps it forward (DF = 0).
    a.set_label(&mut puts)?;
    si_.push(a)?;
    ax_.push(a)?;
    a.set_label(&mut next)?;
    a.lodsb()?;
    a.test(al, al)?;
    a.jz(done)?;
    a.call(putc)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    ax_.pop(a)?;
    si_.pop(a)?;
    a.ret()?;

    // ECX walks the nibbles from the top (bit 28 or 60) down to 0; EDX = digits * 4 is the
    // position below which zeros are printed.
    a.set_label(&mut hex)?;
    ax_.push(a)?;
    cx_.push(a)?;
    dx_.push(a)?;
    a.shl(edx, 2)?;
    a.mov(ecx, if long { 60 } else { 28 })?;
    a.set_label(&mut skip)?;
    a.cmp(ecx, edx)?;
    a.jb(digit)?;
    bx_.mov_to_ax(a)?;
    ax_.shr_cl(a)?;
    a.test(al, 0xf)?;
    a.jnz(digit)?;
    a.sub(ecx, 4)?;
    a.jmp(skip)?;
    a.set_label(&mut digit)?;
    bx_.mov_to_ax(a)?;
    ax_.shr_cl(a)?;
    a.and(eax, 0xf)?;
    a.cmp(al, 10)?;
    a.jb(decimal)?;
    a.add(al, u32::from(b'a' - b'0' - 10))?;
    a.set_label(&mut decimal)?;
    a.add(al, u32::from(b'0'))?;
    a.call(putc)?;
    a.sub(ecx, 4)?;
    a.jns(digit)?;
    dx_.pop(a)?;
    cx_.pop(a)?;
    ax_.pop(a)?;
    a.ret()?;
    Ok(Console { putc, puts, hex })
}

/// A general-purpose register at the width the console routines use in the current mode.
#[derive(Clone, Copy)]
enum Gpr {
    E(AsmRegister32),
    R(AsmRegister64),
}

impl Gpr {
    fn push(self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        match self {
            Gpr::E(r) => a.push(r),
            Gpr::R(r) => a.push(r),
        }
    }
    fn pop(self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        match self {
            Gpr::E(r) => a.pop(r),
            Gpr::R(r) => a.pop(r),
        }
    }
    fn mov_to_ax(self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        match self {
            Gpr::E(r) => a.mov(eax, r),
            Gpr::R(r) => a.mov(rax, r),
        }
    }
    fn shr_cl(self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        match self {
            Gpr::E(r) => a.shr(r, cl),
            Gpr::R(r) => a.shr(r, cl),
        }
    }
}

/// `puts(text)`.
fn print(a: &mut CodeAssembler, c: &Console, s: &mut Strings, text: &str) -> Result<(), IcedError> {
    a.mov(esi, s.add(text))?;
    a.call(c.puts)
}

/// `hex(EBX / RBX)` with at least `digits` digits.
fn print_hex(a: &mut CodeAssembler, c: &Console, digits: u32) -> Result<(), IcedError> {
    a.mov(edx, digits)?;
    a.call(c.hex)
}

/// Real mode (§9.1, §20.1): 16-bit code, segment:offset addresses, no protection. The CPU
/// comes here like a boot sector, from a BIOS, with SS:SP already usable.
fn real_mode(a: &mut CodeAssembler, s: &mut Strings) -> Result<(), IcedError> {
    let mut start = a.create_label();
    let mut here = a.create_label();
    let mut code = a.create_label();
    a.set_label(&mut start)?;
    // There is no `mov bx, ip`: CALL pushes the address of the next instruction, which is
    // the entry point + 3 (the length of CALL rel16).
    a.call(here)?;
    a.set_label(&mut here)?;
    a.pop(di)?;
    a.sub(di, 3)?;
    a.cli()?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    // MOV SS blocks interrupts for one instruction (§6.8.3), so SS:SP change together.
    a.mov(ss, ax)?;
    a.mov(sp, BOOT_STACK_TOP as u32)?;
    a.jmp(code)?;
    let c = console(a)?;
    a.set_label(&mut code)?;
    print(a, &c, s, "rinx demo: real mode (CS:IP = ")?;
    a.mov(bx, cs)?;
    a.movzx(ebx, bx)?;
    print_hex(a, &c, 4)?;
    a.mov(al, u32::from(b':'))?;
    a.call(c.putc)?;
    a.movzx(ebx, di)?;
    print_hex(a, &c, 4)?;
    print(a, &c, s, ")\n")?;
    // Open the A20 gate ("fast A20", port 0x92 bit 1) so that addresses with bit 20 set do
    // not wrap around at 1 MiB like on an 8086; keep bit 0 (reset) clear.
    a.in_(al, PORT_A)?;
    a.or(al, 2)?;
    a.and(al, 0xfe)?;
    a.out(PORT_A, al)?;
    // LGDT with a 16-bit operand size loads a 24-bit base: fine below 16 MiB.
    a.lgdt(ptr(GDTR as u32))?;
    // CR0.PE = 1 (§9.9.1): protected mode. CS keeps its real-mode descriptor cache until the
    // far jump loads a selector from the GDT; jumping right away is what the SDM asks for.
    a.mov(eax, CR0_PE | CR0_ET)?;
    a.mov(cr0, eax)?;
    a.jmp_far(CODE32, PM_CODE as u32)
}

/// 32-bit protected mode (§3.4, §9.9.1), then 32-bit paging (§4.3), then the switch to
/// IA-32e mode (§9.8.5).
fn protected_mode(a: &mut CodeAssembler, s: &mut Strings) -> Result<(), IcedError> {
    let mut code = a.create_label();
    // Data segments still hold real-mode caches: load flat 32-bit data selectors.
    a.mov(ax, u32::from(DATA32))?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    a.mov(esp, BOOT_STACK_TOP as u32)?;
    a.jmp(code)?;
    let c = console(a)?;
    a.set_label(&mut code)?;
    print(a, &c, s, "protected mode: CR0=0x")?;
    a.mov(ebx, cr0)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, " (PE=1), CS=0x")?;
    a.mov(bx, cs)?;
    a.movzx(ebx, bx)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, " (32-bit code segment)\n")?;

    // 32-bit paging (§4.3): CR3 points at a page directory whose entry 0 maps a 4 MiB page
    // (PS = 1, allowed by CR4.PSE) at physical 0, so the code keeps running where it is.
    a.mov(eax, CR4_PSE)?;
    a.mov(cr4, eax)?;
    a.mov(eax, PD32 as u32)?;
    a.mov(cr3, eax)?;
    a.mov(eax, CR0_PG | CR0_ET | CR0_PE)?;
    a.mov(cr0, eax)?;
    print(a, &c, s, "paging: CR0=0x")?;
    a.mov(ebx, cr0)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, " (PG=1), CR3=0x")?;
    a.mov(ebx, cr3)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, ", one 4 MiB page (CR4.PSE)\n")?;

    // Into IA-32e mode (§9.8.5): paging off (this code is identity-mapped, so that is safe),
    // CR4.PAE on, CR3 = the PML4, EFER.LME = 1 (plus SCE for SYSCALL and NXE), paging on:
    // the CPU sets EFER.LMA and runs in compatibility mode until a far jump to a code
    // segment with L = 1.
    a.mov(eax, CR0_ET | CR0_PE)?;
    a.mov(cr0, eax)?;
    a.mov(eax, CR4_PAE)?;
    a.mov(cr4, eax)?;
    a.mov(eax, PML4 as u32)?;
    a.mov(cr3, eax)?;
    a.mov(ecx, IA32_EFER)?;
    a.mov(eax, EFER_LME | EFER_NXE | EFER_SCE)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    // CR0.WP makes read-only pages read-only for the kernel too (§4.6).
    a.mov(eax, CR0_PG | CR0_WP | CR0_ET | CR0_PE)?;
    a.mov(cr0, eax)?;
    a.jmp_far(KCODE64, KERNEL_CODE as u32)
}

/// Kernel entry points that go into the IDT.
struct Handlers {
    page_fault: u64,
    general_protection: u64,
    timer: u64,
    spurious: u64,
    unexpected: u64,
}

/// The 64-bit kernel: set-up, entry to ring 3, the system-call, fault and timer handlers, and
/// the final power-off.
fn kernel(s: &mut Strings) -> Result<(Vec<u8>, Handlers), DemoError> {
    let mut a = CodeAssembler::new(64)?;
    let a = &mut a;
    let mut code = a.create_label();
    let mut syscall_entry = a.create_label();
    let mut sys_write = a.create_label();
    let mut write_loop = a.create_label();
    let mut write_done = a.create_label();
    let mut sys_exit = a.create_label();
    let mut bad_fd = a.create_label();
    let mut sysret = a.create_label();
    let mut page_fault = a.create_label();
    let mut general_protection = a.create_label();
    let mut timer = a.create_label();
    let mut spurious = a.create_label();
    let mut unexpected = a.create_label();
    let mut wait_ticks = a.create_label();
    let mut ticks_done = a.create_label();
    let mut halt = a.create_label();

    a.mov(rsp, KERNEL_STACK_TOP)?;
    a.jmp(code)?;
    let c = console(a)?;
    a.set_label(&mut code)?;
    print(a, &c, s, "long mode: EFER=0x")?;
    a.mov(ecx, IA32_EFER)?;
    a.rdmsr()?;
    a.mov(ebx, eax)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, " (LMA=")?;
    a.shr(ebx, 10)?; // EFER.LMA is bit 10
    a.and(ebx, 1)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, "), CS=0x")?;
    a.mov(bx, cs)?;
    a.movzx(ebx, bx)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, " (64-bit code segment)\n")?;

    // The IDT (§6.10, §6.14.1) and the TSS, which in 64-bit mode holds no task state, only
    // the stacks the CPU switches to: RSP0 on an interrupt from ring 3, IST1 for #GP
    // (§7.7). LTR marks the TSS descriptor busy (§7.2.4).
    a.lidt(ptr(IDTR))?;
    a.mov(ax, u32::from(TSS_SEL))?;
    a.ltr(ax)?;

    // The 8259A pair, initialised like Linux's init_8259A (8259A data sheet; Linux
    // arch/x86/kernel/i8259.c). After reset its vectors for IRQ 0-7 are 8-15, which collide
    // with CPU exceptions (vectors 0-31 are reserved, §6.3.1): remap IRQ 0-7 to 0x20-0x27
    // and IRQ 8-15 to 0x28-0x2F, with every IRQ masked for now.
    for (port, value) in [
        (PIC_MASTER_IMR, 0xff),
        (PIC_SLAVE_IMR, 0xff),
        (PIC_MASTER_CMD, 0x11), // ICW1: edge-triggered, cascade, ICW4 follows
        (PIC_MASTER_IMR, u32::from(TIMER_VECTOR)), // ICW2: vector base
        (PIC_MASTER_IMR, 1 << 2), // ICW3: the slave is on IRQ 2
        (PIC_MASTER_IMR, 0x01), // ICW4: 8086 mode, normal EOI
        (PIC_SLAVE_CMD, 0x11),
        (PIC_SLAVE_IMR, u32::from(TIMER_VECTOR) + 8),
        (PIC_SLAVE_IMR, 2), // ICW3: slave identity = master IRQ 2
        (PIC_SLAVE_IMR, 0x01),
        (PIC_MASTER_IMR, 0xff), // OCW1: all masked
        (PIC_SLAVE_IMR, 0xff),
    ] {
        a.mov(al, value)?;
        a.out(port, al)?;
    }

    // SYSCALL/SYSRET (§5.8.8): IA32_STAR holds the selector bases, IA32_LSTAR the entry
    // point, IA32_FMASK the RFLAGS bits SYSCALL clears. Clearing IF matters: SYSCALL does
    // not switch stacks, and an interrupt before the kernel has its own stack would run on
    // the user's. (TF, DF, IOPL, AC and NT too, as Linux does.)
    a.mov(ecx, IA32_STAR)?;
    a.mov(edx, 0x0028_0018)?;
    a.xor(eax, eax)?;
    a.wrmsr()?;
    a.mov(ecx, IA32_LSTAR)?;
    a.lea(rax, ptr(syscall_entry))?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 32)?;
    a.wrmsr()?;
    a.mov(ecx, IA32_FMASK)?;
    a.mov(eax, 0x4_7700)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;

    // Enter ring 3 the way every kernel starts its first process: build the frame an
    // interrupt from ring 3 would have pushed (§6.14.3, Figure 6-9) and "return" through it.
    a.push(i32::from(UDATA | 3))?; // SS, RPL 3
    a.push(USER_STACK_TOP as i32)?; // RSP
    a.push(0x202i32)?; // RFLAGS: IF = 1, IOPL = 0 (no port access in ring 3)
    a.push(i32::from(UCODE64 | 3))?; // CS, RPL 3 -> CPL 3
    a.push(USER_CODE as i32)?; // RIP
    a.iretq()?;

    // --- System calls ---------------------------------------------------------------------
    // SYSCALL loaded CS/SS from IA32_STAR, RIP from IA32_LSTAR, saved RIP in RCX and RFLAGS
    // in R11, and left RSP alone: switch to the kernel stack first. (Linux keeps the user RSP
    // in per-CPU memory reached through SWAPGS; one CPU needs just one variable.)
    a.set_label(&mut syscall_entry)?;
    a.mov(qword_ptr(SAVED_USER_RSP), rsp)?;
    a.mov(rsp, KERNEL_STACK_TOP)?;
    a.push(rcx)?;
    a.push(r11)?;
    a.push(rbx)?;
    a.push(rdx)?;
    a.push(rsi)?;
    a.push(rdi)?;
    a.cmp(eax, SYS_WRITE)?;
    a.je(sys_write)?;
    a.cmp(eax, SYS_EXIT)?;
    a.je(sys_exit)?;
    a.mov(rax, i64::from(ENOSYS))?;
    a.jmp(sysret)?;

    // write(fd = RDI, buf = RSI, len = RDX) -> RAX = len. A real kernel must check that the
    // buffer lies in user memory (copy_from_user); the demo trusts its one program.
    a.set_label(&mut sys_write)?;
    a.cmp(edi, 1)?;
    a.jne(bad_fd)?;
    a.mov(rax, rdx)?;
    a.mov(rcx, rdx)?;
    a.set_label(&mut write_loop)?;
    a.test(rcx, rcx)?;
    a.jz(write_done)?;
    a.push(rax)?;
    a.lodsb()?;
    a.call(c.putc)?;
    a.pop(rax)?;
    a.dec(rcx)?;
    a.jmp(write_loop)?;
    a.set_label(&mut write_done)?;
    // After the first write, say where it ran: CS.RPL is the CPL (§5.5).
    a.cmp(byte_ptr(SYSCALL_TRACED), 0)?;
    a.jne(sysret)?;
    a.mov(byte_ptr(SYSCALL_TRACED), 1)?;
    print(a, &c, s, "syscall: write() from ring 3 -> kernel at CPL ")?;
    a.mov(bx, cs)?;
    a.movzx(ebx, bx)?;
    a.and(ebx, 3)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, ", returning to user RIP=0x")?;
    a.mov(rbx, qword_ptr(rsp + 40))?; // the saved RCX
    print_hex(a, &c, 1)?;
    print(a, &c, s, " with SYSRET\n")?;
    a.jmp(sysret)?;
    a.set_label(&mut bad_fd)?;
    a.mov(rax, i64::from(EBADF))?;
    // SYSRETQ: RIP = RCX, RFLAGS = R11, CS = STAR[63:48] + 16 | 3, SS = STAR[63:48] + 8 | 3.
    a.set_label(&mut sysret)?;
    a.pop(rdi)?;
    a.pop(rsi)?;
    a.pop(rdx)?;
    a.pop(rbx)?;
    a.pop(r11)?;
    a.pop(rcx)?;
    a.mov(rsp, qword_ptr(SAVED_USER_RSP))?;
    a.sysretq()?;

    // exit(status = RDI): the process is over; the kernel goes on with its own work.
    a.set_label(&mut sys_exit)?;
    print(a, &c, s, "exit: the user program finished with status ")?;
    a.mov(rbx, rdi)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, "\n")?;
    a.mov(rsp, KERNEL_STACK_TOP)?;

    // --- Timer interrupts -----------------------------------------------------------------
    // 8254 PIT channel 0, mode 2 (rate generator), binary, low byte then high byte of the
    // divisor: IRQ 0 at 1193182 Hz / 11932 = 100 Hz. Then unmask IRQ 0 at the master PIC.
    a.mov(al, 0x34)?;
    a.out(PIT_MODE, al)?;
    a.mov(al, PIT_DIVISOR & 0xff)?;
    a.out(PIT_CH0, al)?;
    a.mov(al, PIT_DIVISOR >> 8)?;
    a.out(PIT_CH0, al)?;
    a.mov(al, 0xfe)?;
    a.out(PIC_MASTER_IMR, al)?;
    print(
        a,
        &c,
        s,
        "timer: PIT channel 0 at 100 Hz -> 8259A IRQ 0 -> vector 0x20\n",
    )?;
    // The idle loop. Test with interrupts off, then STI; HLT: STI delays interrupts until
    // after the next instruction (§6.8.3), so a tick cannot slip in between the test and the
    // HLT and leave the CPU asleep with the count already reached.
    a.set_label(&mut wait_ticks)?;
    a.cli()?;
    a.cmp(qword_ptr(TICKS), TICKS_TO_COUNT as i32)?;
    a.jae(ticks_done)?;
    a.sti()?;
    a.hlt()?;
    a.jmp(wait_ticks)?;
    a.set_label(&mut ticks_done)?;
    a.mov(al, 0xff)?;
    a.out(PIC_MASTER_IMR, al)?;

    // --- Power off ------------------------------------------------------------------------
    // ACPI S5 (ACPI 6.5 §4.8.3.2.1, §7.4.2): SLP_TYP from the `\_S5` package and SLP_EN, in
    // one 16-bit write to PM1a_CNT. A real OS finds the port in the FADT; this platform
    // (like QEMU's PIIX4) has it at 0x604.
    print(a, &c, s, "powering off (ACPI S5)\n")?;
    a.mov(dx, u32::from(PM1A_CNT))?;
    a.mov(ax, PM1_S5_SLP_EN)?;
    a.out(dx, ax)?;
    // Still running: no ACPI. isa-debug-exit ends the emulator (exit status 1).
    print(
        a,
        &c,
        s,
        "ACPI power-off did not work; trying isa-debug-exit\n",
    )?;
    a.mov(al, 0)?;
    a.out(DEBUG_EXIT, al)?;
    a.set_label(&mut halt)?;
    a.hlt()?;
    a.jmp(halt)?;

    // IRQ 0. An interrupt gate cleared IF; the handler must preserve every register of the
    // code it interrupted, and tell the PIC it is done (EOI) or IRQ 0 stays in service and
    // blocks itself and everything of lower priority.
    a.set_label(&mut timer)?;
    a.push(rsi)?;
    a.push(rbx)?;
    a.push(rdx)?;
    a.push(rax)?;
    a.inc(qword_ptr(TICKS))?;
    print(a, &c, s, "timer: tick ")?;
    a.mov(rbx, qword_ptr(TICKS))?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, "\n")?;
    a.mov(al, PIC_EOI)?;
    a.out(PIC_MASTER_CMD, al)?;
    a.pop(rax)?;
    a.pop(rdx)?;
    a.pop(rbx)?;
    a.pop(rsi)?;
    a.iretq()?;
    // A spurious IRQ 7 is not in service: no EOI.
    a.set_label(&mut spurious)?;
    a.iretq()?;

    // #PF (§4.7, §6.15): the CPU pushed an error code (bit 0 P, bit 1 W/R, bit 2 U/S) and put
    // the linear address in CR2. Map the missing page and return: IRETQ restarts the
    // faulting instruction. Any other fault is a bug.
    a.set_label(&mut page_fault)?;
    a.push(rsi)?;
    a.push(rax)?;
    a.push(rbx)?;
    a.push(rdx)?;
    a.mov(rax, cr2)?;
    a.and(rax, -4096)?;
    a.mov(rbx, MISSING_PAGE)?;
    a.cmp(rax, rbx)?;
    a.jne(unexpected)?;
    print(a, &c, s, "page fault handled at CR2=0x")?;
    a.mov(rbx, cr2)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, " (error code 0x")?;
    a.mov(rbx, qword_ptr(rsp + 32))?; // the error code
    print_hex(a, &c, 1)?;
    print(
        a,
        &c,
        s,
        ": user write, page not present): mapped the page\n",
    )?;
    // PTE = page | U | W | P. The old entry was not present, so no TLB entry can be stale;
    // INVLPG anyway, the habit that matters when a present entry changes (§4.10.4).
    a.mov(rbx, PT + (MISSING_PAGE >> 12) * 8)?;
    a.mov(qword_ptr(rbx), (MISSING_PAGE | 7) as i32)?;
    a.invlpg(ptr(rax))?;
    a.pop(rdx)?;
    a.pop(rbx)?;
    a.pop(rax)?;
    a.pop(rsi)?;
    a.add(rsp, 8)?; // the error code
    a.iretq()?;

    // #GP (§6.15), on the IST1 stack: HLT is privileged (§5.9), so ring 3 gets #GP(0) for it.
    // Skip the 1-byte instruction; anything else is a bug.
    a.set_label(&mut general_protection)?;
    a.push(rsi)?;
    a.push(rax)?;
    a.push(rbx)?;
    a.push(rdx)?;
    a.mov(rax, qword_ptr(rsp + 40))?; // the saved RIP
    a.cmp(byte_ptr(rax), 0xf4)?;
    a.jne(unexpected)?;
    print(a, &c, s, "general protection: HLT in ring 3 at RIP=0x")?;
    a.mov(rbx, rax)?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, ", error code 0x")?;
    a.mov(rbx, qword_ptr(rsp + 32))?;
    print_hex(a, &c, 1)?;
    // The CPU switched to the IST1 stack and pushed 6 qwords (error code, RIP, CS, RFLAGS,
    // RSP, SS; §6.14.2, §6.14.5); the handler pushed 4 more.
    print(a, &c, s, ", frame on the IST1 stack at RSP=0x")?;
    a.lea(rbx, qword_ptr(rsp + 32))?;
    print_hex(a, &c, 1)?;
    print(a, &c, s, ": skipped it\n")?;
    a.add(qword_ptr(rsp + 40), 1)?;
    a.pop(rdx)?;
    a.pop(rbx)?;
    a.pop(rax)?;
    a.pop(rsi)?;
    a.add(rsp, 8)?;
    a.iretq()?;

    // Every other vector: stop with a message and a failing exit status.
    a.set_label(&mut unexpected)?;
    print(
        a,
        &c,
        s,
        "rinx demo: unexpected exception or interrupt; stopping\n",
    )?;
    a.mov(al, 1)?;
    a.out(DEBUG_EXIT, al)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(unexpected)?;

    let r = a.assemble_options(
        KERNEL_CODE,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let handlers = Handlers {
        page_fault: r.label_ip(&page_fault)?,
        general_protection: r.label_ip(&general_protection)?,
        timer: r.label_ip(&timer)?,
        spurious: r.label_ip(&spurious)?,
        unexpected: r.label_ip(&unexpected)?,
    };
    Ok((r.inner.code_buffer, handlers))
}

/// The user program (CPL 3). Its data lives in its own page, after the code.
fn user() -> Result<Vec<u8>, DemoError> {
    let mut a = CodeAssembler::new(64)?;
    let a = &mut a;
    let mut write = a.create_label();
    let mut fail = a.create_label();
    let mut msg_cpl = a.create_label();
    let mut cpl_digit = a.create_label();
    let mut msg_pf = a.create_label();
    let mut msg_gp = a.create_label();
    const CPL: &[u8] = b"ring 3: CPL=";
    const CPL_END: &[u8] = b"?\n";
    const PF: &[u8] = b"ring 3: the store to the missing page worked on the second try\n";
    const GP: &[u8] = b"ring 3: still running after the #GP\n";

    // The CPL is CS.RPL (§5.5): put it into the message as a digit.
    a.mov(ax, cs)?;
    a.and(eax, 3)?;
    a.add(al, u32::from(b'0'))?;
    a.mov(byte_ptr(cpl_digit), al)?;
    a.lea(rsi, ptr(msg_cpl))?;
    a.mov(edx, (CPL.len() + CPL_END.len()) as u32)?;
    a.call(write)?;

    // Store to a page that is not mapped: #PF; the kernel maps it and the store is retried.
    a.mov(rbx, MISSING_PAGE)?;
    a.mov(dword_ptr(rbx), 0x00c0_ffee)?;
    a.cmp(dword_ptr(rbx), 0x00c0_ffee)?;
    a.jne(fail)?;
    a.lea(rsi, ptr(msg_pf))?;
    a.mov(edx, PF.len() as u32)?;
    a.call(write)?;

    // A privileged instruction at CPL 3: #GP(0).
    a.hlt()?;
    a.lea(rsi, ptr(msg_gp))?;
    a.mov(edx, GP.len() as u32)?;
    a.call(write)?;

    a.mov(eax, SYS_EXIT)?;
    a.xor(edi, edi)?;
    a.syscall()?;
    a.set_label(&mut fail)?;
    a.mov(eax, SYS_EXIT)?;
    a.mov(edi, 1)?;
    a.syscall()?;

    // write(1, RSI, RDX); exit(1) if it did not write everything.
    a.set_label(&mut write)?;
    a.mov(eax, SYS_WRITE)?;
    a.mov(edi, 1)?;
    a.syscall()?;
    a.cmp(rax, rdx)?;
    a.jne(fail)?;
    a.ret()?;

    a.set_label(&mut msg_cpl)?;
    a.db(CPL)?;
    a.set_label(&mut cpl_digit)?;
    a.db(CPL_END)?;
    a.set_label(&mut msg_pf)?;
    a.db(PF)?;
    a.set_label(&mut msg_gp)?;
    a.db(GP)?;
    Ok(a.assemble(USER_CODE)?)
}

/// An 8-byte code or data descriptor (§3.4.5, Figure 3-8): base 0, limit 0xFFFFF pages.
fn seg_desc(access: u64, flags: u64) -> u64 {
    0xffff | (0xf << 48) | (access << 40) | (flags << 52)
}

/// The GDT at [`GDT`], then the GDTR and IDTR images LGDT/LIDT read (limit, base).
fn gdt_page() -> Vec<u8> {
    // Access bytes: 0x9A code DPL 0, 0x92 data DPL 0, 0xFA code DPL 3, 0xF2 data DPL 3.
    // Flags: 0xC = G + D/B (32-bit), 0xA = G + L (64-bit code).
    let gdt = [
        0,
        seg_desc(0x9a, 0xc), // 0x08 32-bit kernel code
        seg_desc(0x92, 0xc), // 0x10 kernel data
        seg_desc(0x9a, 0xa), // 0x18 64-bit kernel code
        seg_desc(0x92, 0xc), // 0x20 kernel data (SYSCALL's SS)
        seg_desc(0xfa, 0xc), // 0x28 32-bit user code (SYSRET to compatibility mode)
        seg_desc(0xf2, 0xc), // 0x30 user data
        seg_desc(0xfa, 0xa), // 0x38 64-bit user code
        // 0x40: a 64-bit available TSS (type 9), 16 bytes (§7.2.3, Figure 7-4).
        0x67 | ((TSS & 0xff_ffff) << 16) | (0x89 << 40),
        0,
    ];
    let mut page = vec![0u8; (IDTR - GDT) as usize + 10];
    for (i, d) in gdt.iter().enumerate() {
        page[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    let gdtr = (GDTR - GDT) as usize;
    page[gdtr..gdtr + 2].copy_from_slice(&((gdt.len() * 8 - 1) as u16).to_le_bytes());
    page[gdtr + 2..gdtr + 10].copy_from_slice(&GDT.to_le_bytes());
    let idtr = (IDTR - GDT) as usize;
    page[idtr..idtr + 2].copy_from_slice(&(256u16 * 16 - 1).to_le_bytes());
    page[idtr + 2..idtr + 10].copy_from_slice(&IDT.to_le_bytes());
    page
}

/// The 64-bit TSS (§7.7, Figure 7-11): RSP0 at +4, IST1 at +0x24.
fn tss() -> Vec<u8> {
    let mut t = vec![0u8; 0x68];
    t[4..12].copy_from_slice(&KERNEL_STACK_TOP.to_le_bytes());
    t[0x24..0x2c].copy_from_slice(&IST1_STACK_TOP.to_le_bytes());
    // I/O map base beyond the limit: no I/O permission bitmap (§20.5.2).
    t[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
    t
}

/// A 64-bit interrupt gate (§6.14.1, Figure 6-8) to `target` in the 64-bit kernel code
/// segment: type 0xE clears IF on entry.
fn int_gate64(target: u64, dpl: u64, ist: u64) -> [u8; 16] {
    let lo = (target & 0xffff)
        | (u64::from(KCODE64) << 16)
        | (ist << 32)
        | (0xe << 40)
        | (dpl << 45)
        | (1 << 47)
        | ((target >> 16 & 0xffff) << 48);
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&lo.to_le_bytes());
    g[8..].copy_from_slice(&(target >> 32).to_le_bytes());
    g
}

fn idt(h: &Handlers) -> Vec<u8> {
    let mut idt = Vec::with_capacity(256 * 16);
    for vector in 0..=255u8 {
        let (target, ist) = match vector {
            13 => (h.general_protection, 1),
            14 => (h.page_fault, 0),
            TIMER_VECTOR => (h.timer, 0),
            SPURIOUS_VECTOR => (h.spurious, 0),
            _ => (h.unexpected, 0),
        };
        idt.extend_from_slice(&int_gate64(target, 0, ist));
    }
    idt
}

/// 4-level paging (§4.5): PML4[0] -> PDPT[0] -> PD[0] -> PT, identity-mapping the first 2 MiB
/// with 4 KiB pages. The upper levels allow user access; the leaf entries decide: the user
/// program's page and stack page are user pages, everything else is supervisor-only, and
/// [`MISSING_PAGE`] is not present.
fn page_tables() -> Vec<u8> {
    let mut t = vec![0u8; 0x4000];
    let mut put = |at: u64, e: u64| {
        let o = (at - PML4) as usize;
        t[o..o + 8].copy_from_slice(&e.to_le_bytes());
    };
    put(PML4, PDPT | 7);
    put(PDPT, PD | 7);
    put(PD, PT | 7);
    for i in 0..512u64 {
        let pa = i << 12;
        let e = match pa {
            MISSING_PAGE => 0,
            USER_CODE | USER_STACK_PAGE => pa | 7, // P | W | U
            _ => pa | 3,                           // P | W
        };
        put(PT + i * 8, e);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_and_do_not_overlap() {
        let image = build().unwrap();
        let mut ranges: Vec<(u64, u64, &str)> = image
            .chunks
            .iter()
            .map(|c| (c.gpa, c.gpa + c.bytes.len() as u64, c.what))
            .collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "{} overlaps {}", w[0].2, w[1].2);
        }
        assert!(ranges.last().unwrap().1 <= MIN_RAM);
        assert_eq!(
            image.entry,
            RealModeEntry {
                cs: 0,
                ip: 0x1000,
                ss: 0,
                sp: 0x7000
            }
        );
    }

    #[test]
    fn entry_starts_with_call_rel16_and_pit_divisor_is_100hz() {
        let image = build().unwrap();
        assert_eq!(image.chunks[0].gpa, REAL_CODE);
        // CALL rel16 to the next instruction: the IP arithmetic in real_mode relies on it.
        assert_eq!(&image.chunks[0].bytes[..3], &[0xe8, 0, 0]);
        assert_eq!(PIT_DIVISOR, 11932);
        assert_eq!(PM1_S5_SLP_EN, 0x2000);
    }

    #[test]
    fn load_writes_every_chunk() {
        let mut ram = crate::VecMemory::new(MIN_RAM as usize);
        load(&mut ram).unwrap();
        for c in build().unwrap().chunks {
            assert_eq!(ram.read(c.gpa, c.bytes.len()).unwrap(), &c.bytes[..]);
        }
        let mut small = crate::VecMemory::new(0x8000);
        assert!(matches!(load(&mut small), Err(DemoError::Mem(_))));
    }
}
