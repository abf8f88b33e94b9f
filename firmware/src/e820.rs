//! The BIOS e820 memory map (ACPI 6.5 §15 "System Address Map Interfaces", INT 15h E820h), as
//! passed in Linux `boot_params.e820_table` (Documentation/arch/x86/zero-page.rst) and as the
//! Multiboot `mmap` (Multiboot 0.6.96 §3.3).

use crate::layout::{
    MemoryLayout, BIOS_AREA_END, BIOS_AREA_START, EBDA_START, HIGH_RAM_START, HIMEM_START,
    LOW_MEM_END,
};

/// Address range type (ACPI 6.5 Table 15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// AddressRangeMemory: usable RAM.
    Ram = 1,
    /// AddressRangeReserved.
    Reserved = 2,
    /// AddressRangeACPI: ACPI tables, reclaimable after they are read.
    Acpi = 3,
    /// AddressRangeNVS.
    Nvs = 4,
}

/// One e820 entry: 20 bytes on the wire (u64 addr, u64 size, u32 type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Range type.
    pub kind: E820Type,
}

impl E820Entry {
    /// Size of one entry in `boot_params.e820_table` (zero-page.rst: `struct boot_e820_entry`).
    pub const SIZE: usize = 20;

    /// The 20-byte little-endian encoding.
    pub fn to_bytes(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..20].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b
    }

    /// End address (exclusive).
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// Builds the e820 map of a [`MemoryLayout`]:
///
/// | range | type |
/// |---|---|
/// | `0 .. 0x9FC00` | RAM |
/// | `0x9FC00 .. 0xA0000` | reserved (EBDA) |
/// | `0xE0000 .. 0x100000` | reserved (BIOS area: RSDP, MP tables) |
/// | `0x100000 .. acpi_base` | RAM |
/// | `acpi_base .. low_ram_end` | ACPI reclaimable |
/// | `4 GiB .. 4 GiB + high_ram_size` | RAM (if any) |
///
/// `0xA0000 .. 0xE0000` (VGA window, option ROMs) and the PCI hole are left out, as on real PCs.
pub fn build_e820(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut v = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: LOW_MEM_END - EBDA_START,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: BIOS_AREA_START,
            size: BIOS_AREA_END - BIOS_AREA_START,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: HIMEM_START,
            size: layout.acpi_base - HIMEM_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: layout.acpi_base,
            size: layout.low_ram_end - layout.acpi_base,
            kind: E820Type::Acpi,
        },
    ];
    if layout.high_ram_size > 0 {
        v.push(E820Entry {
            addr: HIGH_RAM_START,
            size: layout.high_ram_size,
            kind: E820Type::Ram,
        });
    }
    v
}

/// Sum of RAM-typed bytes in `map`.
pub fn ram_bytes(map: &[E820Entry]) -> u64 {
    map.iter()
        .filter(|e| e.kind == E820Type::Ram)
        .map(|e| e.size)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ACPI_REGION_SIZE, PCI_HOLE_START};

    fn check_sorted_disjoint(map: &[E820Entry]) {
        for w in map.windows(2) {
            assert!(w[0].end() <= w[1].addr, "{:?} overlaps {:?}", w[0], w[1]);
        }
        for e in map {
            assert!(e.size > 0);
            assert!(
                e.end() <= PCI_HOLE_START || e.addr >= HIGH_RAM_START,
                "{e:?} intrudes into the PCI hole"
            );
        }
    }

    #[test]
    fn e820_128m() {
        let l = MemoryLayout::new(128 << 20).unwrap();
        let m = build_e820(&l);
        check_sorted_disjoint(&m);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[0],
            E820Entry {
                addr: 0,
                size: 0x9FC00,
                kind: E820Type::Ram
            }
        );
        assert_eq!(m[1].kind, E820Type::Reserved);
        assert_eq!((m[1].addr, m[1].end()), (0x9FC00, 0xA0000));
        assert_eq!(
            (m[2].addr, m[2].end(), m[2].kind),
            (0xE0000, 0x100000, E820Type::Reserved)
        );
        assert_eq!(
            m[3],
            E820Entry {
                addr: 0x100000,
                size: (128 << 20) - 0x100000 - ACPI_REGION_SIZE,
                kind: E820Type::Ram
            }
        );
        assert_eq!(
            m[4],
            E820Entry {
                addr: (128 << 20) - 0x10000,
                size: 0x10000,
                kind: E820Type::Acpi
            }
        );
        assert_eq!(ram_bytes(&m), 0x9FC00 + (128 << 20) - 0x110000);
    }

    #[test]
    fn e820_3g_fills_low_memory_exactly() {
        let l = MemoryLayout::new(3 << 30).unwrap();
        let m = build_e820(&l);
        check_sorted_disjoint(&m);
        assert_eq!(m.len(), 5);
        assert_eq!(m[4].end(), PCI_HOLE_START);
        assert_eq!(m[4].kind, E820Type::Acpi);
    }

    #[test]
    fn e820_6g_has_ram_above_4g() {
        let l = MemoryLayout::new(6 << 30).unwrap();
        let m = build_e820(&l);
        check_sorted_disjoint(&m);
        assert_eq!(m.len(), 6);
        assert_eq!(m[4].end(), 0xC000_0000);
        assert_eq!(
            m[5],
            E820Entry {
                addr: 1 << 32,
                size: 3 << 30,
                kind: E820Type::Ram
            }
        );
        // All RAM except the EBDA, the 640K-1M window and the ACPI region is usable.
        assert_eq!(
            ram_bytes(&m),
            (6 << 30) - 0x400 - 0x60000 - ACPI_REGION_SIZE
        );
    }

    #[test]
    fn entry_encoding() {
        let e = E820Entry {
            addr: 0x1122_3344_5566_7788,
            size: 0x10,
            kind: E820Type::Acpi,
        };
        let b = e.to_bytes();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x10u64.to_le_bytes());
        assert_eq!(&b[16..20], &3u32.to_le_bytes());
    }
}
