//! Linux x86 boot protocol: bzImage setup header parsing and direct (protected-mode / 64-bit)
//! boot, per Linux Documentation/arch/x86/boot.rst and Documentation/arch/x86/zero-page.rst.
//!
//! The real-mode setup code is not run. The loader copies the protected-mode kernel into RAM,
//! builds `struct boot_params` (the "zero page") from a copy of the image's setup header, and
//! returns a [`LinuxBootPlan`] with the register state for the 32-bit entry (boot.rst "32-bit Boot
//! Protocol") and, for kernels with `XLF_KERNEL_64`, the 64-bit entry ("64-bit Boot Protocol").

use crate::e820::{build_e820, E820Entry};
use crate::layout::{
    MemoryLayout, BOOT_GDT32_ADDR, BOOT_GDT64_ADDR, BOOT_PARAMS_ADDR, CMDLINE_ADDR, CMDLINE_MAX,
    HIMEM_START, PAGE_TABLES_ADDR, RSDP_ADDR,
};
use crate::mem::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, GuestMemWrite, MemError};
use thiserror::Error;

/// boot.rst: `boot_flag` (0x1FE) must be 0xAA55.
pub const BOOT_FLAG: u16 = 0xAA55;
/// boot.rst: `header` (0x202) magic "HdrS".
pub const HDRS_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// Oldest boot protocol accepted: 2.06 (adds `cmdline_size`; boot.rst "Details of header fields").
pub const MIN_PROTOCOL: u16 = 0x0206;
/// boot.rst `loadflags` bit 0: protected-mode code is loaded at 0x100000.
pub const LOADED_HIGH: u8 = 0x01;
/// boot.rst `loadflags` bit 7: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// boot.rst `xloadflags` bit 0: the kernel has the legacy 64-bit entry point at 0x200.
pub const XLF_KERNEL_64: u16 = 0x01;
/// boot.rst `type_of_loader`: 0xFF = undefined boot loader.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xFF;
/// boot.rst `vid_mode`: 0xFFFF = "normal" (80x25 text).
pub const VID_MODE_NORMAL: u16 = 0xFFFF;
/// boot.rst "32-bit Boot Protocol": `__BOOT_CS`.
pub const BOOT_CS: u16 = 0x10;
/// boot.rst "32-bit Boot Protocol": `__BOOT_DS`.
pub const BOOT_DS: u16 = 0x18;
/// Size of `struct boot_params` (zero-page.rst).
pub const BOOT_PARAMS_SIZE: usize = 4096;
/// Maximum number of e820 entries in `boot_params.e820_table` (zero-page.rst: 128).
pub const E820_MAX_ENTRIES: usize = 128;

/// Offsets inside `struct boot_params` (zero-page.rst) and the setup header (boot.rst: header
/// field offsets are given relative to the start of the image = start of the zero page).
pub mod offsets {
    /// `screen_info.ext_mem_k` (u16): KiB of memory above 1 MiB, capped at 0xFC00.
    pub const EXT_MEM_K: usize = 0x002;
    /// `acpi_rsdp_addr` (u64), protocol 2.14+.
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// `alt_mem_k` (u32): KiB of memory above 1 MiB.
    pub const ALT_MEM_K: usize = 0x1E0;
    /// `e820_entries` (u8).
    pub const E820_ENTRIES: usize = 0x1E8;
    /// Start of the setup header copy (`hdr`).
    pub const HDR: usize = 0x1F1;
    /// `setup_sects` (u8).
    pub const SETUP_SECTS: usize = 0x1F1;
    /// `syssize` (u32, 16-byte paragraphs).
    pub const SYSSIZE: usize = 0x1F4;
    /// `vid_mode` (u16).
    pub const VID_MODE: usize = 0x1FA;
    /// `boot_flag` (u16).
    pub const BOOT_FLAG: usize = 0x1FE;
    /// `jump` (u16); its second byte + 0x202 is the end of the setup header.
    pub const JUMP: usize = 0x200;
    /// `header` (u32) "HdrS".
    pub const HEADER: usize = 0x202;
    /// `version` (u16).
    pub const VERSION: usize = 0x206;
    /// `type_of_loader` (u8).
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// `loadflags` (u8).
    pub const LOADFLAGS: usize = 0x211;
    /// `code32_start` (u32).
    pub const CODE32_START: usize = 0x214;
    /// `ramdisk_image` (u32).
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// `ramdisk_size` (u32).
    pub const RAMDISK_SIZE: usize = 0x21C;
    /// `heap_end_ptr` (u16).
    pub const HEAP_END_PTR: usize = 0x224;
    /// `cmd_line_ptr` (u32).
    pub const CMD_LINE_PTR: usize = 0x228;
    /// `initrd_addr_max` (u32).
    pub const INITRD_ADDR_MAX: usize = 0x22C;
    /// `kernel_alignment` (u32).
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// `relocatable_kernel` (u8).
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    /// `xloadflags` (u16).
    pub const XLOADFLAGS: usize = 0x236;
    /// `cmdline_size` (u32).
    pub const CMDLINE_SIZE: usize = 0x238;
    /// `pref_address` (u64).
    pub const PREF_ADDRESS: usize = 0x258;
    /// `init_size` (u32).
    pub const INIT_SIZE: usize = 0x260;
    /// End of the setup header as of protocol 2.15 (`kernel_info_offset` ends at 0x26C).
    pub const HDR_END_MAX: usize = 0x26C;
    /// `e820_table` (128 x 20 bytes).
    pub const E820_TABLE: usize = 0x2D0;
}

/// Errors from parsing or loading a Linux kernel.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LinuxError {
    /// The file ends before the setup header or the protected-mode kernel.
    #[error("kernel image truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// Actual file length.
        len: usize,
        /// Bytes required.
        need: usize,
    },
    /// No 0xAA55 boot flag at 0x1FE.
    #[error("not a Linux bzImage: boot_flag at 0x1FE is {0:#06x}, expected 0xAA55")]
    BadBootFlag(u16),
    /// No "HdrS" at 0x202.
    #[error("not a Linux bzImage: no \"HdrS\" magic at 0x202 (found {0:#010x}); zImage/pre-2.0 kernels are not supported")]
    NoHdrS(u32),
    /// Protocol older than 2.06.
    #[error("boot protocol {}.{:02} is too old, need >= 2.06", .0 >> 8, .0 & 0xff)]
    TooOld(u16),
    /// `loadflags` lacks LOADED_HIGH (a zImage).
    #[error(
        "kernel does not set LOADED_HIGH (a zImage loaded at 0x10000); only bzImage is supported"
    )]
    NotLoadedHigh,
    /// `kernel_alignment` is not a power of two.
    #[error("kernel_alignment {0:#x} is not a power of two")]
    BadAlignment(u32),
    /// The command line does not fit.
    #[error("command line of {len} bytes exceeds the kernel's cmdline_size {max}")]
    CmdlineTooLong {
        /// Command line length.
        len: usize,
        /// Kernel limit.
        max: usize,
    },
    /// The command line holds a NUL byte.
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    /// The kernel's init_size does not fit into usable RAM at the load address.
    #[error("kernel needs {need:#x} bytes at {addr:#x}, beyond usable RAM end {end:#x}")]
    KernelTooLarge {
        /// Load address.
        addr: u64,
        /// Bytes needed (max of image and init_size).
        need: u64,
        /// End of usable low RAM.
        end: u64,
    },
    /// The initrd does not fit between the kernel and `min(initrd_addr_max, usable RAM end)`.
    #[error("initrd of {size:#x} bytes does not fit below {limit:#x} above the kernel end {kernel_end:#x}")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// Highest end address allowed.
        limit: u64,
        /// End of the kernel's memory footprint.
        kernel_end: u64,
    },
    /// Too many e820 entries for the zero page.
    #[error("{0} e820 entries exceed the zero page's {E820_MAX_ENTRIES}")]
    TooManyE820(usize),
    /// A write to guest memory failed.
    #[error("writing the kernel into guest memory: {0}")]
    Mem(#[from] MemError),
}

/// The validated setup header of a bzImage (boot.rst "The Real-Mode Kernel Header").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupHeader {
    /// `setup_sects` with 0 replaced by 4 (boot.rst).
    pub setup_sects: u8,
    /// `version`, e.g. 0x020F.
    pub version: u16,
    /// `loadflags`.
    pub loadflags: u8,
    /// `code32_start` from the image (normally 0x100000).
    pub code32_start: u32,
    /// `initrd_addr_max`: highest address the initrd may occupy.
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel != 0`.
    pub relocatable: bool,
    /// `xloadflags` (0 below protocol 2.12).
    pub xloadflags: u16,
    /// `cmdline_size`: max command line length without the NUL.
    pub cmdline_size: u32,
    /// `pref_address` (protocol 2.10+, else 0x100000).
    pub pref_address: u64,
    /// `init_size` (protocol 2.10+, else 0): memory the kernel needs from its load address.
    pub init_size: u32,
    /// Offset of the protected-mode kernel in the file: `(setup_sects + 1) * 512`.
    pub pm_offset: usize,
    /// Length of the protected-mode kernel.
    pub pm_size: usize,
    /// Length of the header copied into the zero page, from 0x1F1.
    pub hdr_len: usize,
}

impl SetupHeader {
    /// Parses and validates the setup header of `image` (untrusted bytes).
    pub fn parse(image: &[u8]) -> Result<Self, LinuxError> {
        use offsets as o;
        let trunc = |need| LinuxError::Truncated {
            len: image.len(),
            need,
        };
        if image.len() < o::HEADER + 4 {
            return Err(trunc(o::HEADER + 4));
        }
        let boot_flag = get_u16(image, o::BOOT_FLAG).ok_or(trunc(0x200))?;
        if boot_flag != BOOT_FLAG {
            return Err(LinuxError::BadBootFlag(boot_flag));
        }
        let magic = get_u32(image, o::HEADER).ok_or(trunc(o::HEADER + 4))?;
        if magic != HDRS_MAGIC {
            return Err(LinuxError::NoHdrS(magic));
        }
        // boot.rst: the header ends at 0x202 + the byte at 0x201 (jump offset).
        let hdr_end = (0x202 + usize::from(image[o::JUMP + 1])).min(o::HDR_END_MAX);
        if image.len() < o::CMDLINE_SIZE + 4 {
            return Err(trunc(o::CMDLINE_SIZE + 4));
        }
        let version = get_u16(image, o::VERSION).ok_or(trunc(o::VERSION + 2))?;
        if version < MIN_PROTOCOL {
            return Err(LinuxError::TooOld(version));
        }
        if hdr_end < o::CMDLINE_SIZE + 4 {
            return Err(trunc(o::CMDLINE_SIZE + 4));
        }
        let setup_sects = match image[o::SETUP_SECTS] {
            0 => 4,
            n => n,
        };
        let loadflags = image[o::LOADFLAGS];
        if loadflags & LOADED_HIGH == 0 {
            return Err(LinuxError::NotLoadedHigh);
        }
        let rd32 = |off| get_u32(image, off).ok_or(trunc(off + 4));
        let kernel_alignment = rd32(o::KERNEL_ALIGNMENT)?;
        if !kernel_alignment.is_power_of_two() {
            return Err(LinuxError::BadAlignment(kernel_alignment));
        }
        let (pref_address, init_size) = if version >= 0x020A && hdr_end >= o::INIT_SIZE + 4 {
            (
                get_u64(image, o::PREF_ADDRESS).ok_or(trunc(o::PREF_ADDRESS + 8))?,
                rd32(o::INIT_SIZE)?,
            )
        } else {
            (HIMEM_START, 0)
        };
        let xloadflags = if version >= 0x020C {
            get_u16(image, o::XLOADFLAGS).ok_or(trunc(o::XLOADFLAGS + 2))?
        } else {
            0
        };
        let pm_offset = (usize::from(setup_sects) + 1) * 512;
        if image.len() <= pm_offset {
            return Err(trunc(pm_offset + 1));
        }
        // syssize counts the protected-mode part in 16-byte paragraphs (boot.rst); a file
        // shorter than that was cut off (e.g. an interrupted download).
        let syssize = rd32(o::SYSSIZE)? as usize;
        let need = pm_offset.saturating_add(syssize.saturating_mul(16));
        if version >= 0x0204 && image.len() < need {
            return Err(trunc(need));
        }
        Ok(Self {
            setup_sects,
            version,
            loadflags,
            code32_start: rd32(o::CODE32_START)?,
            initrd_addr_max: rd32(o::INITRD_ADDR_MAX)?,
            kernel_alignment,
            relocatable: image[o::RELOCATABLE_KERNEL] != 0,
            xloadflags,
            cmdline_size: rd32(o::CMDLINE_SIZE)?,
            pref_address,
            init_size,
            pm_offset,
            pm_size: image.len() - pm_offset,
            hdr_len: hdr_end - o::HDR,
        })
    }

    /// Whether the 64-bit entry point (load address + 0x200) exists (`XLF_KERNEL_64`).
    pub fn has_64bit_entry(&self) -> bool {
        self.xloadflags & XLF_KERNEL_64 != 0
    }
}

/// One GDT descriptor as the machine must load it into a segment register's hidden part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentDescriptor {
    /// Selector (index * 8, TI=0, RPL=0).
    pub selector: u16,
    /// The raw 8-byte descriptor as written in the GDT.
    pub raw: u64,
    /// Base (always 0: flat).
    pub base: u32,
    /// Limit in bytes - 1 after granularity scaling (0xFFFF_FFFF).
    pub limit: u32,
    /// Access byte (P, DPL, S, type): 0x9A code, 0x92 data.
    pub access: u8,
    /// Flags nibble (G, D/B, L, AVL): 0xC (32-bit, 4 KiB granularity) or 0xA (64-bit code).
    pub flags: u8,
}

impl SegmentDescriptor {
    const fn flat(selector: u16, access: u8, flags: u8) -> Self {
        // limit 0xFFFFF with G=1 -> 4 GiB; base 0 (Intel SDM Vol. 3A §3.4.5).
        let raw = 0xFFFF | (0xF << 48) | ((access as u64) << 40) | ((flags as u64) << 52);
        Self {
            selector,
            raw,
            base: 0,
            limit: 0xFFFF_FFFF,
            access,
            flags,
        }
    }
}

/// A boot GDT placed in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootGdt {
    /// GDTR base.
    pub base: u64,
    /// GDTR limit (size - 1).
    pub limit: u16,
    /// Code segment (selector [`BOOT_CS`]).
    pub code: SegmentDescriptor,
    /// Data segment (selector [`BOOT_DS`]) for DS, ES, SS (and FS, GS).
    pub data: SegmentDescriptor,
}

impl BootGdt {
    /// Flat 32-bit GDT: null, null, 0x10 code (execute/read), 0x18 data (read/write), as
    /// boot.rst "32-bit Boot Protocol" requires (also used for Multiboot).
    pub fn flat32() -> Self {
        Self {
            base: BOOT_GDT32_ADDR,
            limit: 4 * 8 - 1,
            code: SegmentDescriptor::flat(BOOT_CS, 0x9A, 0xC),
            data: SegmentDescriptor::flat(BOOT_DS, 0x92, 0xC),
        }
    }

    /// GDT for boot.rst "64-bit Boot Protocol": 0x10 a 64-bit code segment (L=1, D=0),
    /// 0x18 flat data.
    pub fn flat64() -> Self {
        Self {
            base: BOOT_GDT64_ADDR,
            limit: 4 * 8 - 1,
            code: SegmentDescriptor::flat(BOOT_CS, 0x9A, 0xA),
            data: SegmentDescriptor::flat(BOOT_DS, 0x92, 0xC),
        }
    }

    /// The 32 bytes of the table (entries 0 and 1 are null).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[16..24].copy_from_slice(&self.code.raw.to_le_bytes());
        b[24..32].copy_from_slice(&self.data.raw.to_le_bytes());
        b
    }

    /// Writes the table at [`BootGdt::base`].
    pub fn write(&self, mem: &mut dyn GuestMemWrite) -> Result<(), MemError> {
        mem.write(self.base, &self.to_bytes())
    }
}

/// CPU state for the 32-bit entry (boot.rst "32-bit Boot Protocol"): protected mode, paging
/// off, interrupts disabled, CS = [`BOOT_CS`], DS/ES/SS = [`BOOT_DS`] (flat 4 GiB),
/// ESI = boot_params, EBP = EDI = EBX = 0, EIP = `eip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry32 {
    /// EIP: `code32_start` (= the load address).
    pub eip: u32,
    /// ESI: address of `struct boot_params`.
    pub esi: u32,
    /// GDT to load (GDTR) and the descriptors for CS and DS/ES/SS.
    pub gdt: BootGdt,
}

/// CPU state for the 64-bit entry (boot.rst "64-bit Boot Protocol"): long mode with paging,
/// CR0 = PE|PG (plus ET), CR4.PAE = 1, EFER.LME = EFER.LMA = 1, CR3 = `cr3` (identity map of
/// 0-4 GiB with 2 MiB pages, already written), CS = [`BOOT_CS`] (64-bit), DS/ES/SS =
/// [`BOOT_DS`], interrupts disabled, RSI = boot_params, RIP = load address + 0x200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry64 {
    /// RIP.
    pub rip: u64,
    /// RSI: address of `struct boot_params`.
    pub rsi: u64,
    /// CR3: the PML4 at [`PAGE_TABLES_ADDR`].
    pub cr3: u64,
    /// GDT to load.
    pub gdt: BootGdt,
}

impl Entry32 {
    /// CR0 at entry: PE | ET (Intel SDM Vol. 3A §2.5); paging off.
    pub const CR0: u64 = 0x11;
    /// EFLAGS at entry: only the reserved bit 1 (IF = 0).
    pub const RFLAGS: u64 = 0x2;
}

impl Entry64 {
    /// CR0 at entry: PG | ET | PE.
    pub const CR0: u64 = 0x8000_0011;
    /// CR4 at entry: PAE.
    pub const CR4: u64 = 0x20;
    /// IA32_EFER at entry: LME | LMA (Intel SDM Vol. 3A §2.2.1).
    pub const EFER: u64 = 0x500;
    /// RFLAGS at entry: only the reserved bit 1 (IF = 0).
    pub const RFLAGS: u64 = 0x2;
}

/// Options for [`load_linux`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxBootConfig {
    /// Use `pref_address` as the load address for relocatable kernels when the kernel's
    /// `init_size` fits there (boot.rst: "a relocating bootloader should attempt to load at
    /// this address if possible"); otherwise load at 0x100000 (`code32_start` default), from
    /// where the decompressor relocates itself. Default true.
    pub use_pref_address: bool,
    /// Address of the ACPI RSDP, stored in `acpi_rsdp_addr` for protocol >= 2.14 kernels.
    pub acpi_rsdp_addr: Option<u64>,
}

impl Default for LinuxBootConfig {
    fn default() -> Self {
        Self {
            use_pref_address: true,
            acpi_rsdp_addr: Some(RSDP_ADDR),
        }
    }
}

/// Everything the machine needs after [`load_linux`] wrote the kernel, initrd, command line,
/// zero page, GDTs and page tables into guest memory: it only has to set CPU registers from
/// `entry64` (if present and the CPU is 64-bit) or `entry32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxBootPlan {
    /// The parsed setup header.
    pub header: SetupHeader,
    /// Where the protected-mode kernel was copied.
    pub kernel_addr: u64,
    /// Where `struct boot_params` lives ([`BOOT_PARAMS_ADDR`]).
    pub boot_params_addr: u64,
    /// Where the command line lives ([`CMDLINE_ADDR`]).
    pub cmdline_addr: u64,
    /// Initrd `(address, size)`, if any.
    pub initrd: Option<(u64, u64)>,
    /// The e820 map given to the kernel.
    pub e820: Vec<E820Entry>,
    /// 32-bit entry state (always available).
    pub entry32: Entry32,
    /// 64-bit entry state (kernels with `XLF_KERNEL_64`).
    pub entry64: Option<Entry64>,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Writes identity-mapping page tables for 0-4 GiB at `base`: PML4 at `base`, PDPT at
/// `base + 0x1000`, four page directories of 2 MiB pages at `base + 0x2000 ..= base + 0x5000`
/// (Intel SDM Vol. 3A §4.5, 4-level paging). Returns the CR3 value (`base`). Entries are
/// present + writable (supervisor); the PDEs set PS.
pub fn write_identity_page_tables(mem: &mut dyn GuestMemWrite, base: u64) -> Result<u64, MemError> {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    let mut pml4 = [0u8; 4096];
    put_u64(&mut pml4, 0, (base + 0x1000) | P_RW);
    mem.write(base, &pml4)?;
    let mut pdpt = [0u8; 4096];
    for i in 0..4u64 {
        put_u64(
            &mut pdpt,
            i as usize * 8,
            (base + 0x2000 + i * 0x1000) | P_RW,
        );
    }
    mem.write(base + 0x1000, &pdpt)?;
    for i in 0..4u64 {
        let mut pd = [0u8; 4096];
        for j in 0..512u64 {
            let phys = (i * 512 + j) << 21;
            put_u64(&mut pd, j as usize * 8, phys | P_RW | PS);
        }
        mem.write(base + 0x2000 + i * 0x1000, &pd)?;
    }
    Ok(base)
}

/// Builds the zero page: a copy of the image's setup header at 0x1F1 plus the fields a boot
/// loader fills in (boot.rst "Details of header fields", zero-page.rst).
#[allow(clippy::too_many_arguments)]
pub fn build_boot_params(
    image: &[u8],
    header: &SetupHeader,
    kernel_addr: u64,
    cmdline_addr: u64,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
    layout: &MemoryLayout,
    acpi_rsdp_addr: Option<u64>,
) -> Result<Vec<u8>, LinuxError> {
    use offsets as o;
    if e820.len() > E820_MAX_ENTRIES {
        return Err(LinuxError::TooManyE820(e820.len()));
    }
    let mut bp = vec![0u8; BOOT_PARAMS_SIZE];
    let src = image
        .get(o::HDR..o::HDR + header.hdr_len)
        .ok_or(LinuxError::Truncated {
            len: image.len(),
            need: o::HDR + header.hdr_len,
        })?;
    bp[o::HDR..o::HDR + header.hdr_len].copy_from_slice(src);
    bp[o::SETUP_SECTS] = header.setup_sects;
    put_u16(&mut bp, o::VID_MODE, VID_MODE_NORMAL);
    bp[o::TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    // The real-mode setup code never runs; the heap fields describe the conventional layout
    // (setup at base, heap end 0xE000 - 0x200) for completeness.
    bp[o::LOADFLAGS] = header.loadflags | CAN_USE_HEAP;
    put_u16(&mut bp, o::HEAP_END_PTR, 0xE000 - 0x200);
    put_u32(&mut bp, o::CODE32_START, kernel_addr as u32);
    put_u32(&mut bp, o::CMD_LINE_PTR, cmdline_addr as u32);
    if let Some((addr, size)) = initrd {
        put_u32(&mut bp, o::RAMDISK_IMAGE, addr as u32);
        put_u32(&mut bp, o::RAMDISK_SIZE, size as u32);
    }
    if let (Some(rsdp), true) = (acpi_rsdp_addr, header.version >= 0x020E) {
        put_u64(&mut bp, o::ACPI_RSDP_ADDR, rsdp);
    }
    // Memory above 1 MiB up to the first hole, in KiB.
    let ext_k = (layout.low_ram_end - HIMEM_START) >> 10;
    put_u16(&mut bp, o::EXT_MEM_K, ext_k.min(0xFC00) as u16);
    put_u32(&mut bp, o::ALT_MEM_K, ext_k.min(u64::from(u32::MAX)) as u32);
    bp[o::E820_ENTRIES] = e820.len() as u8;
    for (i, e) in e820.iter().enumerate() {
        let off = o::E820_TABLE + i * E820Entry::SIZE;
        bp[off..off + E820Entry::SIZE].copy_from_slice(&e.to_bytes());
    }
    Ok(bp)
}

/// Loads a bzImage for direct boot.
///
/// * protected-mode kernel at `pref_address` (relocatable kernels, if `init_size` fits and
///   [`LinuxBootConfig::use_pref_address`]) else at 0x100000;
/// * command line at [`CMDLINE_ADDR`] (must be at most `cmdline_size` bytes);
/// * initrd page-aligned, as high as possible below
///   `min(initrd_addr_max + 1, usable low RAM end)` and above the kernel's `init_size` footprint;
/// * zero page at [`BOOT_PARAMS_ADDR`]; GDTs at [`BOOT_GDT32_ADDR`]/[`BOOT_GDT64_ADDR`];
///   identity page tables at [`PAGE_TABLES_ADDR`] (64-bit kernels).
pub fn load_linux(
    mem: &mut dyn GuestMemWrite,
    layout: &MemoryLayout,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    config: &LinuxBootConfig,
) -> Result<LinuxBootPlan, LinuxError> {
    let header = SetupHeader::parse(image)?;
    let usable_end = layout.usable_low_end();

    // Command line.
    if cmdline.as_bytes().contains(&0) {
        return Err(LinuxError::CmdlineNul);
    }
    let max = (header.cmdline_size as usize).min(CMDLINE_MAX as usize - 1);
    if cmdline.len() > max {
        return Err(LinuxError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }

    // Kernel placement.
    let footprint = (header.pm_size as u64).max(u64::from(header.init_size));
    let fits = |addr: u64| {
        addr >= HIMEM_START && addr.checked_add(footprint).is_some_and(|e| e <= usable_end)
    };
    let align = u64::from(header.kernel_alignment).max(1);
    let kernel_addr = if config.use_pref_address
        && header.relocatable
        && header.pref_address % align == 0
        && fits(header.pref_address)
    {
        header.pref_address
    } else {
        HIMEM_START
    };
    if !fits(kernel_addr) {
        return Err(LinuxError::KernelTooLarge {
            addr: kernel_addr,
            need: footprint,
            end: usable_end,
        });
    }
    let kernel_end = kernel_addr + footprint;

    // Initrd placement.
    let initrd_place = match initrd {
        None => None,
        Some(rd) => {
            let size = rd.len() as u64;
            let limit = (u64::from(header.initrd_addr_max) + 1).min(usable_end);
            let too_large = LinuxError::InitrdTooLarge {
                size,
                limit,
                kernel_end,
            };
            let addr = limit.checked_sub(size).ok_or(too_large.clone())? & !0xFFF;
            if addr < align_up(kernel_end, 0x1000) || size > u64::from(u32::MAX) {
                return Err(too_large);
            }
            mem.write(addr, rd)?;
            Some((addr, size))
        }
    };

    mem.write(kernel_addr, &image[header.pm_offset..])?;
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    mem.write(CMDLINE_ADDR, &line)?;

    let e820 = build_e820(layout);
    let bp = build_boot_params(
        image,
        &header,
        kernel_addr,
        CMDLINE_ADDR,
        initrd_place,
        &e820,
        layout,
        config.acpi_rsdp_addr,
    )?;
    mem.write(BOOT_PARAMS_ADDR, &bp)?;

    let gdt32 = BootGdt::flat32();
    gdt32.write(mem)?;
    let entry64 = if header.has_64bit_entry() {
        let gdt64 = BootGdt::flat64();
        gdt64.write(mem)?;
        let cr3 = write_identity_page_tables(mem, PAGE_TABLES_ADDR)?;
        Some(Entry64 {
            rip: kernel_addr + 0x200,
            rsi: BOOT_PARAMS_ADDR,
            cr3,
            gdt: gdt64,
        })
    } else {
        None
    };
    log::info!(
        target: "firmware::linux",
        "bzImage protocol {:#06x}: kernel {:#x}+{:#x} (init_size {:#x}), initrd {:?}, 64-bit entry {}",
        header.version,
        kernel_addr,
        header.pm_size,
        header.init_size,
        initrd_place,
        entry64.is_some()
    );
    Ok(LinuxBootPlan {
        entry32: Entry32 {
            eip: kernel_addr as u32,
            esi: BOOT_PARAMS_ADDR as u32,
            gdt: gdt32,
        },
        entry64,
        header,
        kernel_addr,
        boot_params_addr: BOOT_PARAMS_ADDR,
        cmdline_addr: CMDLINE_ADDR,
        initrd: initrd_place,
        e820,
    })
}

#[cfg(test)]
mod tests {
    use super::offsets as o;
    use super::*;
    use crate::mem::VecMemory;

    /// A minimal synthetic bzImage: setup header fields per boot.rst, `setup_sects` sectors of
    /// setup, then `pm_len` bytes of "protected-mode kernel".
    fn image(version: u16, setup_sects: u8, pm_len: usize) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let mut v = vec![0u8; (sects + 1) * 512 + pm_len];
        v[o::SETUP_SECTS] = setup_sects;
        put_u16(&mut v, o::BOOT_FLAG, 0xAA55);
        v[o::JUMP] = 0xEB;
        v[o::JUMP + 1] = (o::HDR_END_MAX - 0x202) as u8;
        put_u32(&mut v, o::HEADER, HDRS_MAGIC);
        put_u16(&mut v, o::VERSION, version);
        v[o::LOADFLAGS] = LOADED_HIGH;
        put_u32(&mut v, o::CODE32_START, 0x100000);
        put_u32(&mut v, o::INITRD_ADDR_MAX, 0x7FFF_FFFF);
        put_u32(&mut v, o::KERNEL_ALIGNMENT, 0x20_0000);
        v[o::RELOCATABLE_KERNEL] = 1;
        put_u16(&mut v, o::XLOADFLAGS, XLF_KERNEL_64);
        put_u32(&mut v, o::CMDLINE_SIZE, 2047);
        put_u64(&mut v, o::PREF_ADDRESS, 0x100_0000);
        put_u32(&mut v, o::INIT_SIZE, 0x40_0000);
        for (i, b) in v[(sects + 1) * 512..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        v
    }

    #[test]
    fn parses_minimal_header() {
        let img = image(0x020F, 0, 0x3000);
        let h = SetupHeader::parse(&img).unwrap();
        assert_eq!(h.setup_sects, 4, "setup_sects 0 means 4");
        assert_eq!(h.pm_offset, 5 * 512);
        assert_eq!(h.pm_size, 0x3000);
        assert_eq!(h.version, 0x020F);
        assert!(h.relocatable && h.has_64bit_entry());
        assert_eq!(h.pref_address, 0x100_0000);
        assert_eq!(h.init_size, 0x40_0000);
        assert_eq!(h.kernel_alignment, 0x20_0000);
        assert_eq!(h.cmdline_size, 2047);
        assert_eq!(h.initrd_addr_max, 0x7FFF_FFFF);
        assert_eq!(h.hdr_len, o::HDR_END_MAX - o::HDR);
    }

    #[test]
    fn rejects_bad_images() {
        let good = image(0x020F, 1, 16);
        assert!(matches!(
            SetupHeader::parse(&good[..0x100]),
            Err(LinuxError::Truncated { .. })
        ));
        assert!(matches!(
            SetupHeader::parse(&good[..0x220]),
            Err(LinuxError::Truncated { .. })
        ));
        // Setup sectors present but no protected-mode code.
        assert!(matches!(
            SetupHeader::parse(&good[..1024]),
            Err(LinuxError::Truncated { .. })
        ));
        assert!(SetupHeader::parse(&[]).is_err());
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(matches!(
            SetupHeader::parse(&garbage),
            Err(LinuxError::BadBootFlag(_))
        ));
        let mut no_hdrs = good.clone();
        put_u32(&mut no_hdrs, o::HEADER, 0x1234_5678);
        assert_eq!(
            SetupHeader::parse(&no_hdrs),
            Err(LinuxError::NoHdrS(0x1234_5678))
        );
        let old = image(0x0205, 1, 16);
        let e = SetupHeader::parse(&old).unwrap_err();
        assert_eq!(e, LinuxError::TooOld(0x0205));
        assert_eq!(e.to_string(), "boot protocol 2.05 is too old, need >= 2.06");
        let mut zimage = good.clone();
        zimage[o::LOADFLAGS] = 0;
        assert_eq!(SetupHeader::parse(&zimage), Err(LinuxError::NotLoadedHigh));
        let mut align = good.clone();
        put_u32(&mut align, o::KERNEL_ALIGNMENT, 0x30_0000);
        assert_eq!(
            SetupHeader::parse(&align),
            Err(LinuxError::BadAlignment(0x30_0000))
        );
        // setup_sects = 255 pointing past the end of a short file.
        let mut big_setup = good.clone();
        big_setup[o::SETUP_SECTS] = 255;
        assert!(matches!(
            SetupHeader::parse(&big_setup),
            Err(LinuxError::Truncated { .. })
        ));
    }

    #[test]
    fn boot_params_field_placement() {
        let img = image(0x020F, 2, 0x2000);
        let layout = MemoryLayout::new(128 << 20).unwrap();
        let mut mem = VecMemory::new(128 << 20);
        let rd = vec![0x5Au8; 0x1_2345];
        let plan = load_linux(
            &mut mem,
            &layout,
            &img,
            Some(&rd),
            "console=ttyS0 quiet",
            &LinuxBootConfig::default(),
        )
        .unwrap();
        let bp = BOOT_PARAMS_ADDR;
        // The header copy: magic, version, boot flag preserved.
        assert_eq!(mem.read_u16(bp + 0x1FE), 0xAA55);
        assert_eq!(mem.read_u32(bp + 0x202), HDRS_MAGIC);
        assert_eq!(mem.read_u16(bp + 0x206), 0x020F);
        assert_eq!(mem.read(bp + 0x1F1, 1).unwrap()[0], 2);
        assert_eq!(mem.read(bp + 0x210, 1).unwrap()[0], 0xFF, "type_of_loader");
        let lf = mem.read(bp + 0x211, 1).unwrap()[0];
        assert_eq!(
            lf & (LOADED_HIGH | CAN_USE_HEAP),
            LOADED_HIGH | CAN_USE_HEAP
        );
        assert_eq!(mem.read_u16(bp + 0x224), 0xDE00, "heap_end_ptr");
        assert_eq!(mem.read_u16(bp + 0x1FA), 0xFFFF, "vid_mode");
        assert_eq!(mem.read_u32(bp + 0x228), CMDLINE_ADDR as u32);
        assert_eq!(
            mem.read(CMDLINE_ADDR, 20).unwrap(),
            b"console=ttyS0 quiet\0"
        );
        // Relocatable, pref_address 16 MiB aligned: loaded there.
        assert_eq!(plan.kernel_addr, 0x100_0000);
        assert_eq!(mem.read_u32(bp + 0x214), 0x100_0000, "code32_start");
        assert_eq!(mem.read(0x100_0000, 4).unwrap(), &[0, 1, 2, 3]);
        // Initrd: page aligned, as high as possible below the ACPI region.
        let (ra, rs) = plan.initrd.unwrap();
        assert_eq!(rs, 0x1_2345);
        assert_eq!(ra % 4096, 0);
        assert!(ra + rs <= layout.acpi_base && ra + rs + 4096 > layout.acpi_base);
        assert_eq!(mem.read_u32(bp + 0x218), ra as u32);
        assert_eq!(mem.read_u32(bp + 0x21C), 0x1_2345);
        assert_eq!(mem.read(ra, 1).unwrap()[0], 0x5A);
        // Memory sizes and ACPI.
        assert_eq!(mem.read_u16(bp + 0x002), 0xFC00, "ext_mem_k capped");
        assert_eq!(mem.read_u32(bp + 0x1E0), (127 << 10), "alt_mem_k");
        assert_eq!(mem.read_u64(bp + 0x070), RSDP_ADDR);
        // e820.
        let n = mem.read(bp + 0x1E8, 1).unwrap()[0] as usize;
        assert_eq!(n, plan.e820.len());
        assert_eq!(n, 5);
        for (i, e) in plan.e820.iter().enumerate() {
            let at = bp + 0x2D0 + 20 * i as u64;
            assert_eq!(mem.read_u64(at), e.addr);
            assert_eq!(mem.read_u64(at + 8), e.size);
            assert_eq!(mem.read_u32(at + 16), e.kind as u32);
        }
        // Entry points.
        assert_eq!(plan.entry32.eip, 0x100_0000);
        assert_eq!(plan.entry32.esi, BOOT_PARAMS_ADDR as u32);
        assert_eq!(plan.entry32.gdt.code.selector, 0x10);
        assert_eq!(plan.entry32.gdt.data.selector, 0x18);
        let e64 = plan.entry64.unwrap();
        assert_eq!(e64.rip, 0x100_0200);
        assert_eq!(e64.rsi, BOOT_PARAMS_ADDR);
        assert_eq!(e64.cr3, PAGE_TABLES_ADDR);
    }

    #[test]
    fn gdt_descriptors_match_sdm_encoding() {
        let g32 = BootGdt::flat32();
        assert_eq!(g32.code.raw, 0x00CF_9A00_0000_FFFF);
        assert_eq!(g32.data.raw, 0x00CF_9200_0000_FFFF);
        let g64 = BootGdt::flat64();
        assert_eq!(g64.code.raw, 0x00AF_9A00_0000_FFFF);
        let mut mem = VecMemory::new(1 << 20);
        g64.write(&mut mem).unwrap();
        assert_eq!(mem.read_u64(g64.base + 0x10), 0x00AF_9A00_0000_FFFF);
        assert_eq!(mem.read_u64(g64.base + 0x18), 0x00CF_9200_0000_FFFF);
        assert_eq!(mem.read_u64(g64.base), 0);
    }

    #[test]
    fn identity_page_tables_map_4g() {
        let mut mem = VecMemory::new(1 << 20);
        let cr3 = write_identity_page_tables(&mut mem, PAGE_TABLES_ADDR).unwrap();
        // Walk a few addresses through the tables.
        for va in [0u64, 0x20_0000, 0x1234_5678, 0xFEE0_0000, 0xFFFF_FFFF] {
            let pml4e = mem.read_u64(cr3 + ((va >> 39) & 511) * 8);
            assert_eq!(pml4e & 1, 1);
            let pdpte = mem.read_u64((pml4e & !0xFFF) + ((va >> 30) & 511) * 8);
            assert_eq!(pdpte & 1, 1);
            let pde = mem.read_u64((pdpte & !0xFFF) + ((va >> 21) & 511) * 8);
            assert_eq!(pde & 0x83, 0x83, "present, writable, 2 MiB page");
            assert_eq!(
                (pde & !0x1F_FFFF & 0xF_FFFF_FFFF_F000) | (va & 0x1F_FFFF),
                va
            );
        }
    }

    #[test]
    fn non_relocatable_32bit_kernel_loads_at_1m() {
        let mut img = image(0x020A, 4, 0x1000);
        img[o::RELOCATABLE_KERNEL] = 0;
        put_u16(&mut img, o::XLOADFLAGS, 0);
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let mut mem = VecMemory::new(64 << 20);
        let plan = load_linux(
            &mut mem,
            &layout,
            &img,
            None,
            "",
            &LinuxBootConfig::default(),
        )
        .unwrap();
        assert_eq!(plan.kernel_addr, 0x100000);
        assert!(
            plan.entry64.is_none(),
            "XLF_KERNEL_64 clear: 32-bit entry only"
        );
        assert_eq!(plan.initrd, None);
        assert_eq!(mem.read_u32(BOOT_PARAMS_ADDR + 0x218), 0);
        // Protocol 2.10 < 2.14: no acpi_rsdp_addr.
        assert_eq!(mem.read_u64(BOOT_PARAMS_ADDR + 0x70), 0);
    }

    #[test]
    fn initrd_placement_respects_initrd_addr_max_and_size() {
        let img = image(0x020F, 1, 0x1000);
        // initrd_addr_max below the top of RAM wins: the initrd ends at or below 64 MiB.
        let mut img_low = img.clone();
        put_u32(&mut img_low, o::INITRD_ADDR_MAX, 0x03FF_FFFF); // 64 MiB - 1
        let mut mem = VecMemory::new(128 << 20);
        let layout128 = MemoryLayout::new(128 << 20).unwrap();
        let plan = load_linux(
            &mut mem,
            &layout128,
            &img_low,
            Some(&[1u8; 5000]),
            "",
            &LinuxBootConfig::default(),
        )
        .unwrap();
        assert_eq!(plan.initrd, Some((0x400_0000 - 0x2000, 5000)));

        // Too large: does not fit between the kernel footprint and the top of usable RAM.
        let big = vec![0u8; 120 << 20];
        let err = load_linux(
            &mut mem,
            &layout128,
            &img,
            Some(&big),
            "",
            &LinuxBootConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(err, LinuxError::InitrdTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("does not fit"));
    }

    #[test]
    fn cmdline_limits() {
        let img = image(0x020F, 1, 0x1000);
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let mut mem = VecMemory::new(64 << 20);
        let long = "x".repeat(2048);
        assert_eq!(
            load_linux(
                &mut mem,
                &layout,
                &img,
                None,
                &long,
                &LinuxBootConfig::default()
            ),
            Err(LinuxError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        );
        assert_eq!(
            load_linux(
                &mut mem,
                &layout,
                &img,
                None,
                "a\0b",
                &LinuxBootConfig::default()
            ),
            Err(LinuxError::CmdlineNul)
        );
    }

    #[test]
    fn memory_too_small_for_kernel() {
        let mut img = image(0x020F, 1, 0x1000);
        put_u32(&mut img, o::INIT_SIZE, 0x1000_0000);
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let mut mem = VecMemory::new(64 << 20);
        assert!(matches!(
            load_linux(
                &mut mem,
                &layout,
                &img,
                None,
                "",
                &LinuxBootConfig::default()
            ),
            Err(LinuxError::KernelTooLarge { .. })
        ));
    }

    /// Deterministic xorshift for mutation tests.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn mutated_headers_never_panic() {
        let base = image(0x020F, 2, 0x800);
        let layout = MemoryLayout::new(32 << 20).unwrap();
        let mut mem = VecMemory::new(32 << 20);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let (mut ok, mut err) = (0, 0);
        let rd_pool = vec![1u8; 40 << 20];
        for _ in 0..1500 {
            let mut img = base.clone();
            for _ in 0..1 + xorshift(&mut rng) % 6 {
                // Mutate inside the setup header most of the time.
                let r = xorshift(&mut rng);
                let at = if r % 4 == 0 {
                    (r >> 8) as usize % img.len()
                } else {
                    0x1F1 + (r >> 8) as usize % (0x26C - 0x1F1)
                };
                img[at] = (r >> 32) as u8;
            }
            let cut = if xorshift(&mut rng) % 5 == 0 {
                xorshift(&mut rng) as usize % img.len()
            } else {
                img.len()
            };
            // Mostly small initrds (fast), sometimes up to 40 MiB (too large for 32 MiB RAM).
            let rd_len = match xorshift(&mut rng) % 8 {
                0 => xorshift(&mut rng) % (40 << 20),
                _ => xorshift(&mut rng) % (64 << 10),
            };
            let rd = &rd_pool[..rd_len as usize];
            match load_linux(
                &mut mem,
                &layout,
                &img[..cut],
                Some(rd),
                "console=ttyS0",
                &LinuxBootConfig::default(),
            ) {
                Ok(plan) => {
                    ok += 1;
                    let (ra, rs) = plan.initrd.unwrap();
                    assert!(ra + rs <= layout.usable_low_end());
                    assert!(ra >= plan.kernel_addr + plan.header.pm_size as u64);
                }
                Err(e) => {
                    err += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert!(ok > 0 && err > 0, "ok {ok} err {err}");
    }

    fn real_kernel(arch: &str) -> Option<Vec<u8>> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-cache")
            .join(arch)
            .join("vmlinuz");
        match std::fs::read(&p) {
            Ok(b) => Some(b),
            Err(_) => {
                eprintln!(
                    "NOTE: {} missing; run scripts/guest-images.sh to test a real Debian kernel (skipped)",
                    p.display()
                );
                None
            }
        }
    }

    #[test]
    fn real_debian_amd64_kernel() {
        let Some(img) = real_kernel("amd64") else {
            return;
        };
        let h = SetupHeader::parse(&img).expect("Debian amd64 vmlinuz parses");
        eprintln!("amd64 vmlinuz: {h:?}");
        assert!(h.version >= 0x020F);
        assert!(h.relocatable && h.has_64bit_entry());
        assert!(h.init_size > 0);
        let layout = MemoryLayout::new(256 << 20).unwrap();
        let mut mem = VecMemory::new(256 << 20);
        let initrd = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../guest-cache/amd64/initrd.img"),
        )
        .unwrap_or_else(|_| vec![0u8; 4096]);
        let plan = load_linux(
            &mut mem,
            &layout,
            &img,
            Some(&initrd),
            "console=ttyS0",
            &LinuxBootConfig::default(),
        )
        .unwrap();
        assert_eq!(plan.kernel_addr, h.pref_address);
        let (ra, rs) = plan.initrd.unwrap();
        assert_eq!(rs, initrd.len() as u64);
        assert!(ra >= plan.kernel_addr + u64::from(h.init_size));
        assert_eq!(mem.read(ra, 6).unwrap(), &initrd[..6]);
        assert_eq!(
            mem.read(plan.kernel_addr, 64).unwrap(),
            &img[h.pm_offset..h.pm_offset + 64]
        );
        assert_eq!(plan.entry64.unwrap().rip, h.pref_address + 0x200);
    }

    #[test]
    fn real_debian_i386_kernel() {
        let Some(img) = real_kernel("i386") else {
            return;
        };
        let h = SetupHeader::parse(&img).expect("Debian 686 vmlinuz parses");
        eprintln!("i386 vmlinuz: {h:?}");
        assert!(!h.has_64bit_entry());
        let layout = MemoryLayout::new(256 << 20).unwrap();
        let mut mem = VecMemory::new(256 << 20);
        let plan = load_linux(
            &mut mem,
            &layout,
            &img,
            None,
            "console=ttyS0",
            &LinuxBootConfig::default(),
        )
        .unwrap();
        assert!(plan.entry64.is_none());
        assert_eq!(plan.entry32.eip as u64, plan.kernel_addr);
    }
}
