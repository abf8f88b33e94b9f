//! Multiboot (version 1, specification 0.6.96) loading: header search (§3.1.1), header flags
//! (§3.1.2), address fields / "a.out kludge" (§3.1.3), ELF32 loading, the boot information
//! structure (§3.3) and the machine state at entry (§3.2).

use crate::e820::build_e820;
use crate::layout::{
    MemoryLayout, CMDLINE_ADDR, CMDLINE_MAX, HIMEM_START, MULTIBOOT_INFO_ADDR, MULTIBOOT_INFO_END,
};
use crate::linux::BootGdt;
use crate::mem::{get_u16, get_u32, put_u32, GuestMemWrite, MemError};
use thiserror::Error;

/// Header magic (§3.1.2).
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Value in EAX at entry (§3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie within the first 8192 bytes, 32-bit aligned (§3.1.1).
pub const SEARCH_LIMIT: usize = 8192;
/// Header flag 0: align modules on 4 KiB boundaries.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag 1: memory information required.
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag 2: video mode table required.
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag 16: the address fields (a.out kludge) are valid.
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Info flags (§3.3).
pub mod info_flags {
    /// mem_lower / mem_upper valid.
    pub const MEMORY: u32 = 1 << 0;
    /// cmdline valid.
    pub const CMDLINE: u32 = 1 << 2;
    /// mods_count / mods_addr valid.
    pub const MODS: u32 = 1 << 3;
    /// mmap_length / mmap_addr valid.
    pub const MMAP: u32 = 1 << 6;
    /// boot_loader_name valid.
    pub const BOOT_LOADER_NAME: u32 = 1 << 9;
}
/// Size of the boot information structure up to and including the framebuffer fields.
pub const INFO_SIZE: usize = 116;
/// Name reported in `boot_loader_name`.
pub const BOOT_LOADER_NAME: &str = "rinx";

/// Errors loading a Multiboot image.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MultibootError {
    /// No valid header in the first 8192 bytes.
    #[error(
        "no Multiboot header (magic 0x1BADB002 with a valid checksum) in the first 8192 bytes"
    )]
    NoHeader,
    /// The header runs past the end of the file.
    #[error("Multiboot header at offset {0:#x} is truncated")]
    HeaderTruncated(usize),
    /// A required feature (flags bits 0-15) is not supported.
    #[error("Multiboot header requires unsupported features (flags {0:#010x}); supported: page align, memory info")]
    UnsupportedFlags(u32),
    /// Inconsistent a.out kludge address fields.
    #[error("invalid Multiboot address fields: {0}")]
    BadAddresses(&'static str),
    /// Not a loadable ELF32 image (and no a.out kludge).
    #[error("not a loadable ELF32 i386 executable: {0}")]
    BadElf(&'static str),
    /// A segment or module lies outside usable RAM above 1 MiB.
    #[error("{what} at {addr:#x}+{len:#x} is outside usable RAM [0x100000, {end:#x})")]
    OutOfRam {
        /// What was being placed.
        what: &'static str,
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// End of usable RAM.
        end: u64,
    },
    /// The command lines, module list and memory map overflow the info area.
    #[error("Multiboot information (command lines, module list, memory map) exceeds {0:#x} bytes")]
    InfoTooLarge(u64),
    /// The command line is too long or contains a NUL.
    #[error("command line must be shorter than {CMDLINE_MAX} bytes and contain no NUL")]
    BadCmdline,
    /// A write failed.
    #[error("writing the Multiboot image: {0}")]
    Mem(#[from] MemError),
}

/// a.out kludge address fields (§3.1.3), present when flag 16 is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFields {
    /// Physical address of the header's magic.
    pub header_addr: u32,
    /// Physical address where the text segment (and the file from the matching offset) loads.
    pub load_addr: u32,
    /// End of the data to load (0: up to the end of the file).
    pub load_end_addr: u32,
    /// End of the bss (0: no bss).
    pub bss_end_addr: u32,
    /// Entry point.
    pub entry_addr: u32,
}

/// A parsed Multiboot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the magic.
    pub offset: usize,
    /// Header flags.
    pub flags: u32,
    /// Address fields, if flag 16 is set.
    pub addresses: Option<AddressFields>,
}

impl MultibootHeader {
    /// Searches the first 8192 bytes of `image` for a header with a valid checksum and checks
    /// the required flags (bits 0-15) are ones rinx supports.
    pub fn find(image: &[u8]) -> Result<Self, MultibootError> {
        let limit = image.len().min(SEARCH_LIMIT);
        let mut off = 0;
        while off + 12 <= limit {
            let magic = get_u32(image, off).unwrap_or(0);
            let flags = get_u32(image, off + 4).unwrap_or(0);
            let sum = get_u32(image, off + 8).unwrap_or(0);
            if magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0 {
                return Self::from_found(image, off, flags);
            }
            off += 4;
        }
        Err(MultibootError::NoHeader)
    }

    fn from_found(image: &[u8], offset: usize, flags: u32) -> Result<Self, MultibootError> {
        let required = flags & 0xFFFF;
        if required & !(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO) != 0 {
            return Err(MultibootError::UnsupportedFlags(flags));
        }
        let addresses = if flags & FLAG_AOUT_KLUDGE != 0 {
            let rd = |i: usize| {
                get_u32(image, offset + 12 + 4 * i).ok_or(MultibootError::HeaderTruncated(offset))
            };
            Some(AddressFields {
                header_addr: rd(0)?,
                load_addr: rd(1)?,
                load_end_addr: rd(2)?,
                bss_end_addr: rd(3)?,
                entry_addr: rd(4)?,
            })
        } else {
            None
        };
        Ok(Self {
            offset,
            flags,
            addresses,
        })
    }
}

/// A boot module (§3.3 "mods"): contents and its command line.
#[derive(Debug, Clone, Copy)]
pub struct MultibootModule<'a> {
    /// Module contents.
    pub data: &'a [u8],
    /// Module string (command line).
    pub cmdline: &'a str,
}

/// The machine state at entry (§3.2): protected mode, paging off, interrupts off, A20 on,
/// CS a flat 32-bit read/execute segment and DS/ES/FS/GS/SS flat read/write segments (the
/// [`BootGdt::flat32`] descriptors, though the OS must not rely on the GDT), EAX =
/// [`BOOTLOADER_MAGIC`], EBX = info structure, EIP = entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultibootPlan {
    /// EIP.
    pub eip: u32,
    /// EAX: [`BOOTLOADER_MAGIC`].
    pub eax: u32,
    /// EBX: physical address of the boot information structure.
    pub ebx: u32,
    /// GDT for CS (0x10) and the data segments (0x18).
    pub gdt: BootGdt,
    /// The header found.
    pub header: MultibootHeader,
    /// Loaded image range `[start, end)` including bss.
    pub image: (u64, u64),
    /// Module ranges `[start, end)`.
    pub modules: Vec<(u64, u64)>,
}

/// Loaded image extent and entry point.
struct Loaded {
    start: u64,
    end: u64,
    entry: u32,
}

fn check_ram(
    what: &'static str,
    addr: u64,
    len: u64,
    layout: &MemoryLayout,
) -> Result<(), MultibootError> {
    let end = layout.usable_low_end();
    let fits = matches!(addr.checked_add(len), Some(e) if e <= end);
    if addr < HIMEM_START || !fits {
        return Err(MultibootError::OutOfRam {
            what,
            addr,
            len,
            end,
        });
    }
    Ok(())
}

fn write_zeros(mem: &mut dyn GuestMemWrite, mut addr: u64, mut len: u64) -> Result<(), MemError> {
    let zeros = [0u8; 4096];
    while len > 0 {
        let n = len.min(zeros.len() as u64);
        mem.write(addr, &zeros[..n as usize])?;
        addr += n;
        len -= n;
    }
    Ok(())
}

fn load_aout(
    mem: &mut dyn GuestMemWrite,
    layout: &MemoryLayout,
    image: &[u8],
    header_offset: usize,
    a: &AddressFields,
) -> Result<Loaded, MultibootError> {
    use MultibootError::BadAddresses;
    if a.load_addr > a.header_addr {
        return Err(BadAddresses("load_addr is above header_addr"));
    }
    let back = (a.header_addr - a.load_addr) as usize;
    let file_off = header_offset
        .checked_sub(back)
        .ok_or(BadAddresses("load_addr lies before the start of the file"))?;
    let len = if a.load_end_addr == 0 {
        (image.len() - file_off) as u64
    } else {
        if a.load_end_addr < a.load_addr {
            return Err(BadAddresses("load_end_addr is below load_addr"));
        }
        u64::from(a.load_end_addr - a.load_addr)
    };
    if file_off as u64 + len > image.len() as u64 {
        return Err(BadAddresses("load_end_addr is beyond the end of the file"));
    }
    let load_end = u64::from(a.load_addr) + len;
    let end = if a.bss_end_addr == 0 {
        load_end
    } else if u64::from(a.bss_end_addr) < load_end {
        return Err(BadAddresses("bss_end_addr is below load_end_addr"));
    } else {
        u64::from(a.bss_end_addr)
    };
    let start = u64::from(a.load_addr);
    check_ram("a.out kludge image", start, end - start, layout)?;
    if u64::from(a.entry_addr) < start || u64::from(a.entry_addr) >= end {
        return Err(BadAddresses("entry_addr is outside the loaded image"));
    }
    mem.write(start, &image[file_off..file_off + len as usize])?;
    write_zeros(mem, load_end, end - load_end)?;
    Ok(Loaded {
        start,
        end,
        entry: a.entry_addr,
    })
}

fn load_elf32(
    mem: &mut dyn GuestMemWrite,
    layout: &MemoryLayout,
    image: &[u8],
) -> Result<Loaded, MultibootError> {
    use MultibootError::BadElf;
    if image.len() < 52 || image[0..4] != *b"\x7fELF" {
        return Err(BadElf("no ELF magic (and no a.out kludge address fields)"));
    }
    if image[4] != 1 {
        return Err(BadElf("not ELFCLASS32 (64-bit ELF needs the a.out kludge)"));
    }
    if image[5] != 1 {
        return Err(BadElf("not little-endian"));
    }
    let e_type = get_u16(image, 16).ok_or(BadElf("truncated header"))?;
    let e_machine = get_u16(image, 18).ok_or(BadElf("truncated header"))?;
    if e_type != 2 || e_machine != 3 {
        return Err(BadElf("not an EM_386 ET_EXEC executable"));
    }
    let entry = get_u32(image, 24).ok_or(BadElf("truncated header"))?;
    let phoff = get_u32(image, 28).ok_or(BadElf("truncated header"))? as usize;
    let phentsize = usize::from(get_u16(image, 42).ok_or(BadElf("truncated header"))?);
    let phnum = usize::from(get_u16(image, 44).ok_or(BadElf("truncated header"))?);
    if phentsize < 32 {
        return Err(BadElf("e_phentsize smaller than Elf32_Phdr"));
    }
    if !matches!(phoff.checked_add(phnum * phentsize), Some(e) if e <= image.len()) {
        return Err(BadElf("program headers beyond the end of the file"));
    }
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut phys_entry = None;
    let mut loaded = 0;
    for i in 0..phnum {
        let ph = &image[phoff + i * phentsize..phoff + (i + 1) * phentsize];
        let field = |o: usize| get_u32(ph, o).unwrap_or(0);
        if field(0) != 1 {
            continue; // not PT_LOAD
        }
        let (offset, vaddr, paddr, filesz, memsz) =
            (field(4) as usize, field(8), field(12), field(16), field(20));
        if filesz > memsz {
            return Err(BadElf("segment p_filesz exceeds p_memsz"));
        }
        let data = offset
            .checked_add(filesz as usize)
            .and_then(|e| image.get(offset..e))
            .ok_or(BadElf("segment data beyond the end of the file"))?;
        if memsz == 0 {
            continue;
        }
        let pa = u64::from(paddr);
        check_ram("ELF segment", pa, u64::from(memsz), layout)?;
        mem.write(pa, data)?;
        write_zeros(mem, pa + u64::from(filesz), u64::from(memsz - filesz))?;
        start = start.min(pa);
        end = end.max(pa + u64::from(memsz));
        // The entry is a virtual address; translate it through the segment containing it.
        if entry >= vaddr && u64::from(entry) < u64::from(vaddr) + u64::from(memsz) {
            phys_entry = Some(paddr.wrapping_add(entry - vaddr));
        }
        loaded += 1;
    }
    if loaded == 0 {
        return Err(BadElf("no loadable segments"));
    }
    let entry = phys_entry.ok_or(BadElf("entry point outside every loadable segment"))?;
    Ok(Loaded { start, end, entry })
}

/// Bump allocator for the info area.
struct InfoArea {
    next: u64,
}

impl InfoArea {
    fn alloc(&mut self, len: usize, align: u64) -> Result<u64, MultibootError> {
        let at = self.next.div_ceil(align) * align;
        let end = at + len as u64;
        if end > MULTIBOOT_INFO_END {
            return Err(MultibootError::InfoTooLarge(
                MULTIBOOT_INFO_END - MULTIBOOT_INFO_ADDR,
            ));
        }
        self.next = end;
        Ok(at)
    }

    fn string(&mut self, mem: &mut dyn GuestMemWrite, s: &str) -> Result<u64, MultibootError> {
        if s.as_bytes().contains(&0) {
            return Err(MultibootError::BadCmdline);
        }
        let at = self.alloc(s.len() + 1, 1)?;
        mem.write(at, s.as_bytes())?;
        mem.write(at + s.len() as u64, &[0])?;
        Ok(at)
    }
}

/// Loads a Multiboot image and its modules, and writes the boot information structure at
/// [`MULTIBOOT_INFO_ADDR`] (command line at [`CMDLINE_ADDR`], memory map, module list and
/// strings in the info area). The image uses the a.out kludge fields if header flag 16 is set,
/// else its ELF32 program headers (loaded at `p_paddr`). Modules follow the image, each page
/// aligned. Everything loaded must lie in usable RAM above 1 MiB.
pub fn load_multiboot(
    mem: &mut dyn GuestMemWrite,
    layout: &MemoryLayout,
    image: &[u8],
    cmdline: &str,
    modules: &[MultibootModule<'_>],
) -> Result<MultibootPlan, MultibootError> {
    let header = MultibootHeader::find(image)?;
    let loaded = match &header.addresses {
        Some(a) => load_aout(mem, layout, image, header.offset, a)?,
        None => load_elf32(mem, layout, image)?,
    };

    // Modules, page aligned after the image.
    let mut next = loaded.end.div_ceil(4096) * 4096;
    let mut module_ranges = Vec::with_capacity(modules.len());
    for m in modules {
        let len = m.data.len() as u64;
        check_ram("module", next, len, layout)?;
        mem.write(next, m.data)?;
        module_ranges.push((next, next + len));
        next = (next + len).div_ceil(4096) * 4096;
    }

    // Command line.
    if cmdline.len() >= CMDLINE_MAX as usize || cmdline.as_bytes().contains(&0) {
        return Err(MultibootError::BadCmdline);
    }
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    mem.write(CMDLINE_ADDR, &line)?;

    // Info area: info structure, memory map, module list, strings.
    let mut area = InfoArea {
        next: MULTIBOOT_INFO_ADDR,
    };
    let info_addr = area.alloc(INFO_SIZE, 8)?;
    let e820 = build_e820(layout);
    let mut mmap = Vec::with_capacity(e820.len() * 24);
    for e in &e820 {
        mmap.extend_from_slice(&20u32.to_le_bytes()); // size, excluding itself
        mmap.extend_from_slice(&e.to_bytes());
    }
    let mmap_addr = area.alloc(mmap.len(), 8)?;
    mem.write(mmap_addr, &mmap)?;
    let mods_addr = area.alloc(16 * modules.len(), 16)?;
    for (i, (m, &(start, end))) in modules.iter().zip(&module_ranges).enumerate() {
        let s = area.string(mem, m.cmdline)?;
        let mut ent = [0u8; 16];
        put_u32(&mut ent, 0, start as u32);
        put_u32(&mut ent, 4, end as u32);
        put_u32(&mut ent, 8, s as u32);
        mem.write(mods_addr + 16 * i as u64, &ent)?;
    }
    let name_addr = area.string(mem, BOOT_LOADER_NAME)?;

    let mut info = [0u8; INFO_SIZE];
    let flags = info_flags::MEMORY
        | info_flags::CMDLINE
        | info_flags::MODS
        | info_flags::MMAP
        | info_flags::BOOT_LOADER_NAME;
    put_u32(&mut info, 0, flags);
    put_u32(&mut info, 4, (crate::layout::EBDA_START >> 10) as u32); // mem_lower: 639 KiB
    put_u32(
        &mut info,
        8,
        ((layout.usable_low_end() - HIMEM_START) >> 10) as u32,
    );
    put_u32(&mut info, 16, CMDLINE_ADDR as u32);
    put_u32(&mut info, 20, modules.len() as u32);
    put_u32(&mut info, 24, mods_addr as u32);
    put_u32(&mut info, 44, mmap.len() as u32);
    put_u32(&mut info, 48, mmap_addr as u32);
    put_u32(&mut info, 64, name_addr as u32);
    mem.write(info_addr, &info)?;

    let gdt = BootGdt::flat32();
    gdt.write(mem)?;
    log::info!(
        target: "firmware::multiboot",
        "Multiboot image {:#x}..{:#x}, entry {:#x}, {} modules",
        loaded.start,
        loaded.end,
        loaded.entry,
        modules.len()
    );
    Ok(MultibootPlan {
        eip: loaded.entry,
        eax: BOOTLOADER_MAGIC,
        ebx: info_addr as u32,
        gdt,
        header,
        image: (loaded.start, loaded.end),
        modules: module_ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{put_u16, VecMemory};

    fn header(flags: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(
            &0u32
                .wrapping_sub(HEADER_MAGIC)
                .wrapping_sub(flags)
                .to_le_bytes(),
        );
        h
    }

    /// ELF32 with two PT_LOAD segments: text (vaddr 0xC0200000 -> paddr 0x200000, 0x100
    /// bytes) and data (paddr 0x201000, 0x10 bytes in the file, 0x1000 in memory: bss).
    fn elf_image() -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 1; // ELFCLASS32
        f[5] = 1; // little endian
        f[6] = 1;
        put_u16(&mut f, 16, 2); // ET_EXEC
        put_u16(&mut f, 18, 3); // EM_386
        put_u32(&mut f, 20, 1);
        put_u32(&mut f, 24, 0xC020_0010); // e_entry (virtual)
        put_u32(&mut f, 28, 52); // e_phoff
        put_u16(&mut f, 40, 52);
        put_u16(&mut f, 42, 32); // e_phentsize
        put_u16(&mut f, 44, 2); // e_phnum
        let ph = |f: &mut Vec<u8>, i: usize, off: u32, va: u32, pa: u32, fs: u32, ms: u32| {
            let b = 52 + 32 * i;
            put_u32(f, b, 1);
            put_u32(f, b + 4, off);
            put_u32(f, b + 8, va);
            put_u32(f, b + 12, pa);
            put_u32(f, b + 16, fs);
            put_u32(f, b + 20, ms);
        };
        ph(&mut f, 0, 0x200, 0xC020_0000, 0x20_0000, 0x100, 0x100);
        ph(&mut f, 1, 0x300, 0xC020_1000, 0x20_1000, 0x10, 0x1000);
        // Multiboot header inside the text segment (8192-byte search window).
        let h = header(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
        f[0x100..0x100 + h.len()].copy_from_slice(&h);
        f[0x200..0x300].fill(0x90);
        f[0x300..0x310].fill(0xDD);
        f
    }

    fn mem128() -> (VecMemory, MemoryLayout) {
        (
            VecMemory::new(128 << 20),
            MemoryLayout::new(128 << 20).unwrap(),
        )
    }

    #[test]
    fn elf_loading_and_info() {
        let img = elf_image();
        let (mut mem, layout) = mem128();
        // Dirty the bss to prove it is zeroed.
        mem.write(0x20_1010, &[0xFF; 16]).unwrap();
        let m1 = [7u8; 5000];
        let m2 = [9u8; 10];
        let mods = [
            MultibootModule {
                data: &m1,
                cmdline: "initrd one",
            },
            MultibootModule {
                data: &m2,
                cmdline: "two",
            },
        ];
        let plan = load_multiboot(&mut mem, &layout, &img, "root=/dev/ram0", &mods).unwrap();
        assert_eq!(plan.eax, 0x2BAD_B002);
        assert_eq!(plan.eip, 0x20_0010, "virtual entry translated to physical");
        assert_eq!(plan.image, (0x20_0000, 0x20_2000));
        assert_eq!(mem.read(0x20_0000, 2).unwrap(), &[0x90, 0x90]);
        assert_eq!(mem.read(0x20_1000, 0x10).unwrap(), &[0xDD; 0x10]);
        assert_eq!(mem.read(0x20_1010, 16).unwrap(), &[0; 16], "bss zeroed");
        // Modules page aligned after the image.
        assert_eq!(
            plan.modules,
            vec![(0x20_2000, 0x20_2000 + 5000), (0x20_4000, 0x20_400A)]
        );
        assert_eq!(mem.read(0x20_4000, 10).unwrap(), &[9; 10]);

        let info = u64::from(plan.ebx);
        let flags = mem.read_u32(info);
        assert_eq!(flags, 0x1 | 0x4 | 0x8 | 0x40 | 0x200);
        assert_eq!(mem.read_u32(info + 4), 639, "mem_lower");
        assert_eq!(
            u64::from(mem.read_u32(info + 8)),
            (layout.usable_low_end() - 0x100000) >> 10,
            "mem_upper"
        );
        let cmd = u64::from(mem.read_u32(info + 16));
        assert_eq!(mem.read(cmd, 15).unwrap(), b"root=/dev/ram0\0");
        assert_eq!(mem.read_u32(info + 20), 2);
        let mods_addr = u64::from(mem.read_u32(info + 24));
        assert_eq!(mem.read_u32(mods_addr), 0x20_2000);
        assert_eq!(mem.read_u32(mods_addr + 4), 0x20_2000 + 5000);
        let s = u64::from(mem.read_u32(mods_addr + 8));
        assert_eq!(mem.read(s, 11).unwrap(), b"initrd one\0");
        assert_eq!(mem.read_u32(mods_addr + 16), 0x20_4000);
        // mmap: entries of size 20 + the size field, matching the e820 map.
        let mmap_len = mem.read_u32(info + 44) as u64;
        let mmap = u64::from(mem.read_u32(info + 48));
        let e820 = build_e820(&layout);
        assert_eq!(mmap_len, 24 * e820.len() as u64);
        for (i, e) in e820.iter().enumerate() {
            let at = mmap + 24 * i as u64;
            assert_eq!(mem.read_u32(at), 20);
            assert_eq!(mem.read_u64(at + 4), e.addr);
            assert_eq!(mem.read_u64(at + 12), e.size);
            assert_eq!(mem.read_u32(at + 20), e.kind as u32);
        }
        let name = u64::from(mem.read_u32(info + 64));
        assert_eq!(mem.read(name, 5).unwrap(), b"rinx\0");
    }

    #[test]
    fn aout_kludge_loading() {
        // File: 0x40 bytes of padding, header at 0x40, code after; loads at 0x100000 from file
        // offset 0 (header_addr = 0x100040), 0x200 bytes, bss to 0x101000.
        let mut img = vec![0xAAu8; 0x200];
        let mut h = header(FLAG_AOUT_KLUDGE | FLAG_PAGE_ALIGN);
        for v in [0x10_0040u32, 0x10_0000, 0x10_0200, 0x10_1000, 0x10_0080] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        img[0x40..0x40 + h.len()].copy_from_slice(&h);
        let (mut mem, layout) = mem128();
        mem.write(0x10_0200, &[0x55; 64]).unwrap();
        let plan = load_multiboot(&mut mem, &layout, &img, "", &[]).unwrap();
        assert_eq!(plan.eip, 0x10_0080);
        assert_eq!(plan.image, (0x10_0000, 0x10_1000));
        assert_eq!(mem.read(0x10_0000, 1).unwrap(), &[0xAA]);
        assert_eq!(mem.read_u32(0x10_0040), HEADER_MAGIC);
        assert_eq!(mem.read(0x10_0200, 64).unwrap(), &[0; 64], "bss zeroed");
        assert_eq!(mem.read_u32(u64::from(plan.ebx) + 20), 0, "no modules");

        // load_end_addr 0: load to the end of the file.
        let mut img2 = img.clone();
        put_u32(&mut img2, 0x40 + 20, 0);
        put_u32(&mut img2, 0x40 + 24, 0);
        let plan = load_multiboot(&mut mem, &layout, &img2, "", &[]).unwrap();
        assert_eq!(plan.image, (0x10_0000, 0x10_0200));

        // Inconsistent fields.
        let mut bad = img.clone();
        put_u32(&mut bad, 0x40 + 16, 0x10_0100); // load_addr above header_addr
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &bad, "", &[]),
            Err(MultibootError::BadAddresses(_))
        ));
        let mut bad = img.clone();
        put_u32(&mut bad, 0x40 + 20, 0x10_9000); // load_end beyond the file
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &bad, "", &[]),
            Err(MultibootError::BadAddresses(_))
        ));
        let mut bad = img.clone();
        put_u32(&mut bad, 0x40 + 16, 0x0F_0000); // header_addr - load_addr > header offset
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &bad, "", &[]),
            Err(MultibootError::BadAddresses(_))
        ));
        let mut bad = img.clone();
        put_u32(&mut bad, 0x40 + 28, 0x20_0000); // entry outside the image
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &bad, "", &[]),
            Err(MultibootError::BadAddresses(_))
        ));
    }

    #[test]
    fn header_search_and_flags() {
        assert_eq!(
            MultibootHeader::find(&[0u8; 100]),
            Err(MultibootError::NoHeader)
        );
        assert_eq!(MultibootHeader::find(&[]), Err(MultibootError::NoHeader));
        // Header beyond 8192 bytes is not found.
        let mut far = vec![0u8; 9000];
        far[8192..8204].copy_from_slice(&header(0));
        assert_eq!(MultibootHeader::find(&far), Err(MultibootError::NoHeader));
        // Misaligned header is not found.
        let mut mis = vec![0u8; 64];
        mis[2..14].copy_from_slice(&header(0));
        assert_eq!(MultibootHeader::find(&mis), Err(MultibootError::NoHeader));
        // Bad checksum.
        let mut bad = vec![0u8; 64];
        bad[0..12].copy_from_slice(&header(0));
        bad[8] ^= 1;
        assert_eq!(MultibootHeader::find(&bad), Err(MultibootError::NoHeader));
        // Found at the last aligned slot.
        let mut last = vec![0u8; 8192];
        last[8180..8192].copy_from_slice(&header(FLAG_MEMORY_INFO));
        assert_eq!(MultibootHeader::find(&last).unwrap().offset, 8180);
        // Video mode and unknown required bits are refused.
        for flags in [FLAG_VIDEO_MODE, 1 << 5] {
            let mut v = vec![0u8; 64];
            v[0..12].copy_from_slice(&header(flags));
            assert_eq!(
                MultibootHeader::find(&v),
                Err(MultibootError::UnsupportedFlags(flags))
            );
        }
        // Address fields cut off by the end of file.
        let mut t = vec![0u8; 20];
        t[0..12].copy_from_slice(&header(FLAG_AOUT_KLUDGE));
        assert_eq!(
            MultibootHeader::find(&t),
            Err(MultibootError::HeaderTruncated(0))
        );
    }

    #[test]
    fn elf_validation() {
        let (mut mem, layout) = mem128();
        let good = elf_image();
        let mut e64 = good.clone();
        e64[4] = 2;
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &e64, "", &[]),
            Err(MultibootError::BadElf(_))
        ));
        let mut ph_oob = good.clone();
        put_u32(&mut ph_oob, 28, 0x3F0); // program headers past the end
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &ph_oob, "", &[]),
            Err(MultibootError::BadElf(_))
        ));
        let mut seg_oob = good.clone();
        put_u32(&mut seg_oob, 52 + 4, 0xFFFF_FF00); // p_offset beyond the file
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &seg_oob, "", &[]),
            Err(MultibootError::BadElf(_))
        ));
        let mut filesz = good.clone();
        put_u32(&mut filesz, 52 + 16, 0x200); // p_filesz > p_memsz
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &filesz, "", &[]),
            Err(MultibootError::BadElf(_))
        ));
        let mut low = good.clone();
        put_u32(&mut low, 52 + 12, 0x1000); // below 1 MiB: would clobber boot structures
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &low, "", &[]),
            Err(MultibootError::OutOfRam { .. })
        ));
        let mut huge = good.clone();
        put_u32(&mut huge, 52 + 32 + 20, 0xF000_0000); // bss past the end of RAM
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &huge, "", &[]),
            Err(MultibootError::OutOfRam { .. })
        ));
        let mut entry = good.clone();
        put_u32(&mut entry, 24, 0x1234);
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &entry, "", &[]),
            Err(MultibootError::BadElf(_))
        ));
        // Module too large for RAM.
        let big = vec![0u8; 130 << 20];
        let m = [MultibootModule {
            data: &big,
            cmdline: "",
        }];
        assert!(matches!(
            load_multiboot(&mut mem, &layout, &good, "", &m),
            Err(MultibootError::OutOfRam { .. })
        ));
        assert_eq!(
            load_multiboot(&mut mem, &layout, &good, "a\0b", &[]),
            Err(MultibootError::BadCmdline)
        );
    }

    #[test]
    fn mutated_images_never_panic() {
        let (mut mem, layout) = (
            VecMemory::new(16 << 20),
            MemoryLayout::new(16 << 20).unwrap(),
        );
        let mut aout = vec![0xAAu8; 0x200];
        let mut h = header(FLAG_AOUT_KLUDGE);
        for v in [0x10_0040u32, 0x10_0000, 0x10_0200, 0x10_1000, 0x10_0080] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        aout[0x40..0x40 + h.len()].copy_from_slice(&h);
        let bases = [elf_image(), aout];
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ok = 0;
        for i in 0..4000 {
            let mut img = bases[i % 2].clone();
            for _ in 0..1 + next() % 4 {
                let r = next();
                let at = if i % 2 == 0 {
                    (r as usize >> 8) % 0x80
                } else {
                    0x40 + (r as usize >> 8) % 32
                };
                img[at] = (r >> 40) as u8;
            }
            // Keep the header checksum valid for the a.out image so the loader gets past it.
            if i % 2 == 1 {
                let flags = get_u32(&img, 0x44).unwrap();
                put_u32(&mut img, 0x40, HEADER_MAGIC);
                put_u32(
                    &mut img,
                    0x48,
                    0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
                );
            }
            let m = [0u8; 300];
            let mods = [MultibootModule {
                data: &m,
                cmdline: "m",
            }];
            if let Ok(plan) = load_multiboot(&mut mem, &layout, &img, "x", &mods) {
                ok += 1;
                assert!(plan.image.0 >= 0x100000 && plan.image.1 <= layout.usable_low_end());
                assert!(plan.modules[0].1 <= layout.usable_low_end());
            }
        }
        assert!(ok > 0);
    }
}
