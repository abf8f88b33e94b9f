//! Intel MultiProcessor Specification 1.4 tables: the MP floating pointer structure (§4.1) and
//! the MP configuration table (§4.2, base entries §4.3), placed in the BIOS ROM area at
//! [`MP_TABLE_ADDR`] where OSes search for them (§4: "in the BIOS ROM address space between
//! 0F0000h and 0FFFFFh").

use crate::layout::{BIOS_AREA_END, MP_TABLE_ADDR};
use crate::mem::{checksum, put_u16, put_u32, GuestMemWrite, MemError};
use thiserror::Error;

/// MP spec revision 1.4.
pub const MP_SPEC_REV: u8 = 4;
/// Local APIC version reported for each processor (integrated xAPIC).
pub const LAPIC_VERSION: u8 = 0x14;
/// IOAPIC version reported (82093AA-compatible).
pub const IOAPIC_VERSION: u8 = 0x11;
/// Polarity/trigger flags "conforms to bus" (§4.3.4, Table 4-10).
pub const INT_FLAGS_CONFORM: u16 = 0;
/// Active high, level triggered (§4.3.4: PO = 01, EL = 11).
pub const INT_FLAGS_HIGH_LEVEL: u16 = 0b1101;

/// Errors generating MP tables.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MpError {
    /// CPU count outside 1..=254.
    #[error("{0} CPUs cannot be described with 8-bit APIC IDs (1..=254 supported)")]
    BadCpuCount(usize),
    /// The tables do not fit below 1 MiB.
    #[error("MP tables of {0} bytes do not fit in the BIOS area")]
    TooLarge(usize),
    /// A write failed.
    #[error("writing MP tables: {0}")]
    Mem(#[from] MemError),
}

/// Machine parameters for the MP tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpConfig {
    /// Number of CPUs (APIC IDs 0..num_cpus; CPU 0 is the bootstrap processor).
    pub num_cpus: usize,
    /// Local APIC MMIO base.
    pub lapic_addr: u32,
    /// IOAPIC MMIO base.
    pub ioapic_addr: u32,
    /// IOAPIC ID.
    pub ioapic_id: u8,
    /// ISA IRQ of the ACPI SCI, described as level/active-high like the MADT override.
    pub sci_irq: u8,
}

impl From<&crate::acpi::AcpiConfig> for MpConfig {
    /// The MP view of the same machine the ACPI tables describe (keeps both consistent).
    fn from(a: &crate::acpi::AcpiConfig) -> Self {
        Self {
            num_cpus: a.num_cpus,
            lapic_addr: a.lapic_addr,
            ioapic_addr: a.ioapic_addr,
            ioapic_id: a.ioapic_id,
            sci_irq: a.sci_irq,
        }
    }
}

impl Default for MpConfig {
    fn default() -> Self {
        Self {
            num_cpus: 1,
            lapic_addr: 0xFEE0_0000,
            ioapic_addr: 0xFEC0_0000,
            ioapic_id: 0,
            sci_irq: 9,
        }
    }
}

/// Where the MP structures were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpTables {
    /// MP floating pointer structure (16 bytes).
    pub floating_pointer: u64,
    /// MP configuration table.
    pub config_table: u64,
    /// Length of the configuration table (header + base entries).
    pub config_len: usize,
    /// Number of base entries.
    pub entry_count: u16,
}

const ISA_BUS_ID: u8 = 0;

/// Builds the configuration table: header (44 bytes), one processor entry per CPU, an ISA bus,
/// the IOAPIC, I/O interrupt entries for ISA IRQs 0-15 (IRQ0 on INTIN2, IRQ2 omitted, 8259
/// ExtINT on INTIN0) and local interrupt entries (ExtINT on LINT0, NMI on LINT1).
pub fn build_mp_config_table(cfg: &MpConfig) -> Result<(Vec<u8>, u16), MpError> {
    if cfg.num_cpus == 0 || cfg.num_cpus > 254 {
        return Err(MpError::BadCpuCount(cfg.num_cpus));
    }
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for id in 0..cfg.num_cpus as u8 {
        // Processor entry (§4.3.1, 20 bytes): type 0, APIC ID, version, flags (EN, BP),
        // signature (family 6), feature flags (FPU | APIC), reserved.
        let flags = 1 | if id == 0 { 2 } else { 0 };
        entries.extend_from_slice(&[0, id, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&0x0000_0600u32.to_le_bytes());
        entries.extend_from_slice(&0x0000_0201u32.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus entry (§4.3.2, 8 bytes).
    entries.extend_from_slice(&[1, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    // I/O APIC entry (§4.3.3, 8 bytes): type 2, ID, version, flags EN, address.
    entries.extend_from_slice(&[2, cfg.ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&cfg.ioapic_addr.to_le_bytes());
    count += 1;
    // I/O interrupt assignment entries (§4.3.4, 8 bytes): type 3, interrupt type, flags,
    // source bus, source IRQ, destination IOAPIC, INTIN#.
    let mut io = |kind: u8, flags: u16, irq: u8, intin: u8| {
        entries.push(3);
        entries.push(kind);
        entries.extend_from_slice(&flags.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, irq, cfg.ioapic_id, intin]);
        count += 1;
    };
    io(3, INT_FLAGS_CONFORM, 0, 0); // ExtINT: 8259 on INTIN0
    for irq in 0..16u8 {
        match irq {
            2 => {}
            0 => io(0, INT_FLAGS_CONFORM, 0, 2),
            i if i == cfg.sci_irq => io(0, INT_FLAGS_HIGH_LEVEL, i, i),
            i => io(0, INT_FLAGS_CONFORM, i, i),
        }
    }
    // Local interrupt assignment entries (§4.3.5): type 4, ExtINT -> LINT0, NMI -> LINT1, all
    // local APICs (0xFF).
    for (kind, lint) in [(3u8, 0u8), (1, 1)] {
        entries.push(4);
        entries.push(kind);
        entries.extend_from_slice(&INT_FLAGS_CONFORM.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, 0, 0xFF, lint]);
        count += 1;
    }

    // Header (§4.2, Table 4-2, 44 bytes).
    let mut t = vec![0u8; 44];
    t[0..4].copy_from_slice(b"PCMP");
    let len = 44 + entries.len();
    let len16 = u16::try_from(len).map_err(|_| MpError::TooLarge(len))?;
    put_u16(&mut t, 4, len16);
    t[6] = MP_SPEC_REV;
    t[8..16].copy_from_slice(b"RINX    ");
    t[16..28].copy_from_slice(b"RINXPC      ");
    put_u16(&mut t, 34, count);
    put_u32(&mut t, 36, cfg.lapic_addr);
    t.extend_from_slice(&entries);
    t[7] = checksum(&t);
    Ok((t, count))
}

/// The 16-byte MP floating pointer structure (§4.1, Table 4-1) pointing at `config_addr`;
/// feature byte 1 = 0 (a configuration table is present), IMCRP clear (virtual wire mode).
pub fn build_floating_pointer(config_addr: u32) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[0..4].copy_from_slice(b"_MP_");
    f[4..8].copy_from_slice(&config_addr.to_le_bytes());
    f[8] = 1; // length in 16-byte units
    f[9] = MP_SPEC_REV;
    f[10] = checksum(&f);
    f
}

/// Writes the floating pointer at [`MP_TABLE_ADDR`] and the configuration table right after it.
pub fn write_mp_tables(mem: &mut dyn GuestMemWrite, cfg: &MpConfig) -> Result<MpTables, MpError> {
    let (table, entry_count) = build_mp_config_table(cfg)?;
    let config_table = MP_TABLE_ADDR + 16;
    if config_table + table.len() as u64 > BIOS_AREA_END {
        return Err(MpError::TooLarge(table.len()));
    }
    mem.write(MP_TABLE_ADDR, &build_floating_pointer(config_table as u32))?;
    mem.write(config_table, &table)?;
    Ok(MpTables {
        floating_pointer: MP_TABLE_ADDR,
        config_table,
        config_len: table.len(),
        entry_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMemory;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    #[test]
    fn floating_pointer_and_table() {
        let mut mem = VecMemory::new(2 << 20);
        let cfg = MpConfig {
            num_cpus: 3,
            ..MpConfig::default()
        };
        let t = write_mp_tables(&mut mem, &cfg).unwrap();
        assert_eq!(t.floating_pointer % 16, 0);
        assert!((0xF0000..0x100000).contains(&t.floating_pointer));
        let fp = mem.read(t.floating_pointer, 16).unwrap();
        assert_eq!(&fp[0..4], b"_MP_");
        assert_eq!(sum(fp), 0);
        assert_eq!(
            u64::from(mem.read_u32(t.floating_pointer + 4)),
            t.config_table
        );
        assert_eq!(fp[11], 0, "config table present (no default configuration)");

        let len = mem.read_u16(t.config_table + 4) as usize;
        assert_eq!(len, t.config_len);
        let ct = mem.read(t.config_table, len).unwrap();
        assert_eq!(&ct[0..4], b"PCMP");
        assert_eq!(sum(ct), 0);
        assert_eq!(ct[6], 4);
        assert_eq!(
            u32::from_le_bytes(ct[36..40].try_into().unwrap()),
            0xFEE0_0000
        );

        // Walk the entries.
        let count = u16::from_le_bytes([ct[34], ct[35]]);
        let mut off = 44;
        let (mut cpus, mut buses, mut ioapics, mut ioints, mut lints) =
            (vec![], 0, vec![], vec![], vec![]);
        for _ in 0..count {
            let e = &ct[off..];
            match e[0] {
                0 => {
                    cpus.push((e[1], e[3]));
                    off += 20;
                }
                1 => {
                    assert_eq!(&e[2..8], b"ISA   ");
                    buses += 1;
                    off += 8;
                }
                2 => {
                    ioapics.push((e[1], u32::from_le_bytes(e[4..8].try_into().unwrap())));
                    off += 8;
                }
                3 => {
                    ioints.push((e[1], u16::from_le_bytes([e[2], e[3]]), e[5], e[7]));
                    off += 8;
                }
                4 => {
                    lints.push((e[1], e[6], e[7]));
                    off += 8;
                }
                t => panic!("bad entry type {t}"),
            }
        }
        assert_eq!(off, len, "entries fill the table exactly");
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1)], "CPU 0 is EN|BP");
        assert_eq!(buses, 1);
        assert_eq!(ioapics, vec![(0, 0xFEC0_0000)]);
        assert!(ioints.contains(&(3, 0, 0, 0)), "ExtINT on INTIN0");
        assert!(ioints.contains(&(0, 0, 0, 2)), "IRQ0 -> INTIN2");
        assert!(ioints.contains(&(0, 0xD, 9, 9)), "SCI level/high");
        assert!(ioints.contains(&(0, 0, 4, 4)));
        assert!(!ioints.iter().any(|&(k, _, irq, _)| k == 0 && irq == 2));
        assert_eq!(ioints.len(), 16);
        assert_eq!(lints, vec![(3, 0xFF, 0), (1, 0xFF, 1)]);
    }

    #[test]
    fn cpu_count_limits() {
        let mut mem = VecMemory::new(2 << 20);
        for n in [0, 255] {
            let cfg = MpConfig {
                num_cpus: n,
                ..MpConfig::default()
            };
            assert_eq!(
                write_mp_tables(&mut mem, &cfg),
                Err(MpError::BadCpuCount(n))
            );
        }
        let cfg = MpConfig {
            num_cpus: 254,
            ..MpConfig::default()
        };
        let t = write_mp_tables(&mut mem, &cfg).unwrap();
        assert!(t.config_table + t.config_len as u64 <= 0x100000);
        // Memory too small: an error, not a panic.
        let mut tiny = VecMemory::new(0x1000);
        assert!(matches!(
            write_mp_tables(&mut tiny, &MpConfig::default()),
            Err(MpError::Mem(_))
        ));
    }
}
