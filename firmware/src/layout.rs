//! Guest physical address layout of a rinx PC and the firmware structures placed in it.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA                      usable RAM (e820 type 1)
//! 0x0000_0500  boot GDT (Linux 32-bit / Multiboot)      [BOOT_GDT32_ADDR]
//! 0x0000_0540  boot GDT (Linux 64-bit)                  [BOOT_GDT64_ADDR]
//! 0x0000_7000  Linux boot_params ("zero page")          [BOOT_PARAMS_ADDR]
//! 0x0000_9000  PML4, PDPT, 4 PDs (identity, 2 MiB pages, 0-4 GiB) [PAGE_TABLES_ADDR]
//! 0x0001_0000  Multiboot info area (info, mmap, modules, strings)  [MULTIBOOT_INFO_ADDR]
//! 0x0002_0000  kernel command line (up to 64 KiB)       [CMDLINE_ADDR]
//! 0x0009_FC00  EBDA                                     reserved
//! 0x000A_0000  VGA / option ROM hole                    (not in e820)
//! 0x000E_0000  RSDP (ACPI 6.5 §5.2.5.1)                 reserved, BIOS area [RSDP_ADDR]
//! 0x000F_0000  MP floating pointer + config table       reserved, BIOS area [MP_TABLE_ADDR]
//! 0x0010_0000  protected-mode kernel / Multiboot image  usable RAM
//!  ...         initrd (as high as possible)             usable RAM
//! low_end-64K  ACPI tables (RSDT, XSDT, FADT, FACS, DSDT, MADT, HPET)  ACPI reclaimable
//! low_end      = min(RAM, PCI_HOLE_START)
//! 0xC000_0000  PCI hole (MMIO: IOAPIC 0xFEC0_0000, HPET 0xFED0_0000, LAPIC 0xFEE0_0000)
//! 0x1_0000_0000 RAM above 4 GiB (RAM - low_end bytes)   usable RAM
//! ```
//!
//! The PCI hole starts at 3 GiB ([`PCI_HOLE_START`]) for every RAM size, like QEMU's i440fx
//! machine for large guests: one rule, a 1 GiB window for PCI BARs, and all RAM above it remapped
//! above 4 GiB.

use thiserror::Error;

/// Start of the PCI hole (MMIO window below 4 GiB). RAM never appears in `[PCI_HOLE_START, 4 GiB)`.
pub const PCI_HOLE_START: u64 = 0xC000_0000;
/// 4 GiB: where RAM above the PCI hole resumes.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// Start of the Extended BIOS Data Area (reserved to 640 KiB).
pub const EBDA_START: u64 = 0x9_FC00;
/// End of conventional (low) memory, 640 KiB.
pub const LOW_MEM_END: u64 = 0xA_0000;
/// Start of the BIOS read-only area searched for the RSDP and MP floating pointer.
pub const BIOS_AREA_START: u64 = 0xE_0000;
/// End (exclusive) of the BIOS area, 1 MiB.
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// 1 MiB: start of extended memory; Linux protected-mode kernel default load address.
pub const HIMEM_START: u64 = 0x10_0000;

/// GDT used for the Linux 32-bit boot protocol and Multiboot (selectors 0x10 code, 0x18 data).
pub const BOOT_GDT32_ADDR: u64 = 0x500;
/// GDT used for the Linux 64-bit boot protocol (0x10 is a 64-bit code segment).
pub const BOOT_GDT64_ADDR: u64 = 0x540;
/// Linux `struct boot_params` (zero page), Documentation/arch/x86/zero-page.rst.
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// Identity-mapping page tables for the 64-bit entry: PML4 here, PDPT at +0x1000, PDs at
/// +0x2000..+0x6000 (4 pages, 2 MiB pages, 0-4 GiB).
pub const PAGE_TABLES_ADDR: u64 = 0x9000;
/// Start of the Multiboot information area.
pub const MULTIBOOT_INFO_ADDR: u64 = 0x1_0000;
/// End (exclusive) of the Multiboot information area.
pub const MULTIBOOT_INFO_END: u64 = 0x2_0000;
/// Kernel command line (Linux `cmd_line_ptr`, Multiboot `cmdline`).
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Maximum command line buffer, including the terminating NUL.
pub const CMDLINE_MAX: u64 = 0x1_0000;
/// RSDP location (ACPI 6.5 §5.2.5.1: 16-byte boundary within 0xE0000-0xFFFFF).
pub const RSDP_ADDR: u64 = 0xE_0000;
/// MP floating pointer (Intel MP spec 1.4 §4.1: BIOS ROM area 0xF0000-0xFFFFF); the MP
/// configuration table follows it.
pub const MP_TABLE_ADDR: u64 = 0xF_0000;
/// Size of the ACPI table region at the top of low RAM.
pub const ACPI_REGION_SIZE: u64 = 0x1_0000;
/// Smallest guest RAM accepted.
pub const MIN_RAM: u64 = 16 << 20;

/// Errors in the machine memory configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// RAM smaller than [`MIN_RAM`].
    #[error("guest RAM of {0:#x} bytes is too small (minimum {MIN_RAM:#x})")]
    TooSmall(u64),
    /// RAM size not a multiple of 4 KiB or absurdly large.
    #[error("guest RAM size {0:#x} must be a multiple of 4 KiB and below 2^52 bytes")]
    BadSize(u64),
}

/// Where guest RAM lives, derived from the RAM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Total RAM in bytes.
    pub ram_size: u64,
    /// End (exclusive) of RAM below the PCI hole: `min(ram_size, PCI_HOLE_START)`.
    pub low_ram_end: u64,
    /// Bytes of RAM mapped at [`HIGH_RAM_START`].
    pub high_ram_size: u64,
    /// Base of the ACPI table region (`low_ram_end - ACPI_REGION_SIZE`), ACPI reclaimable.
    pub acpi_base: u64,
}

impl MemoryLayout {
    /// Lays out `ram_size` bytes of RAM around the PCI hole at [`PCI_HOLE_START`].
    pub fn new(ram_size: u64) -> Result<Self, LayoutError> {
        if ram_size % 0x1000 != 0 || ram_size >= 1 << 52 {
            return Err(LayoutError::BadSize(ram_size));
        }
        if ram_size < MIN_RAM {
            return Err(LayoutError::TooSmall(ram_size));
        }
        let low_ram_end = ram_size.min(PCI_HOLE_START);
        Ok(Self {
            ram_size,
            low_ram_end,
            high_ram_size: ram_size - low_ram_end,
            acpi_base: low_ram_end - ACPI_REGION_SIZE,
        })
    }

    /// End (exclusive) of usable RAM starting at 1 MiB (the ACPI region follows it).
    pub fn usable_low_end(&self) -> u64 {
        self.acpi_base
    }

    /// RAM ranges `(start, len)` the machine must back with memory.
    pub fn ram_ranges(&self) -> Vec<(u64, u64)> {
        let mut v = vec![(0, self.low_ram_end)];
        if self.high_ram_size > 0 {
            v.push((HIGH_RAM_START, self.high_ram_size));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes() {
        let l = MemoryLayout::new(6 << 30).unwrap();
        assert_eq!(l.low_ram_end, PCI_HOLE_START);
        assert_eq!(l.high_ram_size, 3 << 30);
        assert_eq!(
            l.ram_ranges(),
            vec![(0, 3 << 30), (HIGH_RAM_START, 3 << 30)]
        );
        let l = MemoryLayout::new(128 << 20).unwrap();
        assert_eq!(l.acpi_base, (128 << 20) - ACPI_REGION_SIZE);
        assert_eq!(l.ram_ranges().len(), 1);
        assert_eq!(
            MemoryLayout::new(1 << 20),
            Err(LayoutError::TooSmall(1 << 20))
        );
        assert!(matches!(
            MemoryLayout::new((128 << 20) + 1),
            Err(LayoutError::BadSize(_))
        ));
    }
}
