//! Builds a QEMU-loadable boot image from the firmware crate's output, to check the Linux boot
//! plan, e820, zero page and ACPI/MP tables against a real kernel before rinx can run one:
//!
//! ```text
//! cargo run -p firmware --example qemu_image -- VMLINUZ INITRD OUTDIR RAM_MIB 32|64 CPUS CMDLINE
//! ```
//!
//! OUTDIR receives `bios.bin` (128 KiB: the BIOS area 0xE0000-0xFFFFF with the RSDP, MP tables
//! and a reset-vector trampoline) and `blob-<hexaddr>.bin` RAM pieces; `qemu-args` lists the
//! matching `-bios`/`-device loader` options (see scripts/qemu-firmware-check.sh).
//!
//! The trampoline stands in for the register set-up rinx's machine crate will do: real mode ->
//! protected mode with the plan's GDT -> (64: PAE, CR3 = plan.cr3, EFER.LME, paging, 64-bit GDT)
//! -> kernel entry with ESI/RSI = boot_params. It also enables QEMU's PIIX4 PM I/O block at the
//! FADT's PM base (0x600), which SeaBIOS would normally do, so ACPI poweroff can be exercised.

use firmware::layout::{MemoryLayout, BIOS_AREA_START, BOOT_PARAMS_ADDR, HIMEM_START};
use firmware::mem::VecMemory;
use firmware::{load_linux, write_pc_tables, AcpiConfig, LinuxBootConfig};
use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Trampoline location: physical 0xFF000 = F000:F000.
const TRAMP: u32 = 0xF_F000;

fn trampoline(entry32: u32, gdt32: (u64, u16), e64: Option<(u64, u64, (u64, u16))>) -> Vec<u8> {
    let mut c = vec![0u8; 0x400];
    // GDTR pseudo-descriptors at +0x100 (32-bit GDT) and +0x110 (64-bit GDT).
    c[0x100..0x102].copy_from_slice(&gdt32.1.to_le_bytes());
    c[0x102..0x106].copy_from_slice(&(gdt32.0 as u32).to_le_bytes());
    if let Some((_, _, g)) = e64 {
        c[0x110..0x112].copy_from_slice(&g.1.to_le_bytes());
        c[0x112..0x116].copy_from_slice(&(g.0 as u32).to_le_bytes());
    }
    // 16-bit code at +0 (CS base 0xF0000, IP 0xF000).
    let mut s16 = vec![0xFA]; // cli
    s16.extend([0x66, 0x2E, 0x0F, 0x01, 0x16, 0x00, 0xF1]); // o32 lgdt cs:[0xF100]
    s16.extend([0x0F, 0x20, 0xC0]); // mov eax, cr0
    s16.extend([0x66, 0x83, 0xC8, 0x01]); // or eax, 1
    s16.extend([0x0F, 0x22, 0xC0]); // mov cr0, eax
    s16.extend([0x66, 0xEA]); // jmp dword 0x10:TRAMP+0x200
    s16.extend((TRAMP + 0x200).to_le_bytes());
    s16.extend(0x10u16.to_le_bytes());
    c[..s16.len()].copy_from_slice(&s16);
    // 32-bit code at +0x200.
    let mut s32: Vec<u8> = vec![0xB8, 0x18, 0, 0, 0]; // mov eax, 0x18
    s32.extend([0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0x8E, 0xE0, 0x8E, 0xE8]); // ds es ss fs gs
                                                                              // PIIX4 PM (bus 0, dev 1, fn 3): PMBA (0x40) = 0x601, PMREGMISC (0x80) bit 0 = enable.
    for (reg, val) in [(0x40u32, 0x601u32), (0x80, 1)] {
        s32.push(0xB8);
        s32.extend((0x8000_0000u32 | (1 << 11) | (3 << 8) | reg).to_le_bytes());
        s32.extend([0x66, 0xBA, 0xF8, 0x0C, 0xEF]); // mov dx, 0xCF8; out dx, eax
        s32.push(0xB8);
        s32.extend(val.to_le_bytes());
        s32.extend([0x66, 0xBA, 0xFC, 0x0C, 0xEF]); // mov dx, 0xCFC; out dx, eax
    }
    s32.push(0xBE); // mov esi, boot_params
    s32.extend((BOOT_PARAMS_ADDR as u32).to_le_bytes());
    s32.extend([0x31, 0xED, 0x31, 0xFF, 0x31, 0xDB]); // xor ebp, edi, ebx
    match e64 {
        None => {
            s32.push(0xB8); // mov eax, entry32; jmp eax
            s32.extend(entry32.to_le_bytes());
            s32.extend([0xFF, 0xE0]);
        }
        Some((rip, cr3, _)) => {
            s32.extend([0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F, 0x22, 0xE0]); // cr4 |= PAE
            s32.push(0xB8); // mov eax, cr3; mov cr3, eax
            s32.extend((cr3 as u32).to_le_bytes());
            s32.extend([0x0F, 0x22, 0xD8]);
            s32.extend([0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32]); // rdmsr EFER
            s32.extend([0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30]); // |= LME; wrmsr
            s32.extend([
                0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0,
            ]); // PG
            s32.extend([0x0F, 0x01, 0x15]); // lgdt [TRAMP+0x110]
            s32.extend((TRAMP + 0x110).to_le_bytes());
            s32.push(0xEA); // jmp 0x10:TRAMP+0x300
            s32.extend((TRAMP + 0x300).to_le_bytes());
            s32.extend(0x10u16.to_le_bytes());
            let mut s64: Vec<u8> = vec![0xB8, 0x18, 0, 0, 0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0];
            s64.push(0xBE); // mov esi, boot_params (zero-extends to rsi)
            s64.extend((BOOT_PARAMS_ADDR as u32).to_le_bytes());
            s64.extend([0x48, 0xB8]); // mov rax, rip; jmp rax
            s64.extend(rip.to_le_bytes());
            s64.extend([0xFF, 0xE0]);
            c[0x300..0x300 + s64.len()].copy_from_slice(&s64);
        }
    }
    assert!(s32.len() <= 0x100, "32-bit trampoline too long");
    c[0x200..0x200 + s32.len()].copy_from_slice(&s32);
    c
}

/// Non-zero extents of `mem[start..end)` (page granular, merged).
fn extents(mem: &[u8], start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for p in (start..end).step_by(4096) {
        let e = (p + 4096).min(end);
        if mem[p..e].iter().any(|&b| b != 0) {
            match out.last_mut() {
                Some(last) if last.1 == p => last.1 = e,
                _ => out.push((p, e)),
            }
        }
    }
    out
}

fn main() -> Result<(), Box<dyn Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        return Err("usage: qemu_image VMLINUZ INITRD OUTDIR RAM_MIB 32|64 CPUS [CMDLINE]".into());
    }
    let kernel = std::fs::read(&a[0])?;
    let initrd = std::fs::read(&a[1])?;
    let out = PathBuf::from(&a[2]);
    let ram: u64 = a[3].parse::<u64>()? << 20;
    let want64 = a[4] == "64";
    let num_cpus: usize = a[5].parse()?;
    let cmdline = a.get(6).cloned().unwrap_or_default();
    std::fs::create_dir_all(&out)?;

    let layout = MemoryLayout::new(ram)?;
    let mut mem = VecMemory::new(usize::try_from(layout.low_ram_end)?);
    let tables = write_pc_tables(
        &mut mem,
        &layout,
        &AcpiConfig {
            num_cpus,
            ..AcpiConfig::default()
        },
    )?;
    let cfg = LinuxBootConfig {
        acpi_rsdp_addr: Some(tables.acpi.rsdp),
        ..LinuxBootConfig::default()
    };
    let plan = load_linux(&mut mem, &layout, &kernel, Some(&initrd), &cmdline, &cfg)?;
    let e64 = match (want64, plan.entry64) {
        (true, Some(e)) => Some((e.rip, e.cr3, (e.gdt.base, e.gdt.limit))),
        (true, None) => return Err("kernel has no 64-bit entry (XLF_KERNEL_64)".into()),
        (false, _) => None,
    };
    let g = plan.entry32.gdt;
    let code = trampoline(plan.entry32.eip, (g.base, g.limit), e64);

    // BIOS image: 128 KiB = 0xE0000..0x100000.
    let bios_start = BIOS_AREA_START as usize;
    let mut bios = mem.as_slice()[bios_start..0x10_0000].to_vec();
    let t = TRAMP as usize - bios_start;
    bios[t..t + code.len()].copy_from_slice(&code);
    bios[0x1FFF0..0x1FFF5].copy_from_slice(&[0xEA, 0x00, 0xF0, 0x00, 0xF0]); // jmp F000:F000
    std::fs::write(out.join("bios.bin"), &bios)?;

    let mut args = format!("-bios {}", out.join("bios.bin").display());
    let ram_bytes = mem.as_slice();
    let mut pieces = extents(ram_bytes, 0, 0xA_0000);
    pieces.extend(extents(ram_bytes, HIMEM_START as usize, ram_bytes.len()));
    for (s, e) in pieces {
        let f = out.join(format!("blob-{s:08x}.bin"));
        std::fs::write(&f, &ram_bytes[s..e])?;
        write!(
            args,
            " -device loader,file={},addr={s:#x},force-raw=on",
            f.display()
        )?;
    }
    std::fs::write(out.join("qemu-args"), &args)?;
    println!(
        "kernel at {:#x}, initrd {:?}, entry {}",
        plan.kernel_addr,
        plan.initrd,
        if want64 { "64-bit" } else { "32-bit" }
    );
    Ok(())
}
