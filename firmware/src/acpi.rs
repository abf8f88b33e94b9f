//! ACPI tables (ACPI 6.5): RSDP, RSDT, XSDT, FADT, FACS, DSDT (AML `\_S5_`), MADT and HPET,
//! generated from the machine configuration and written into guest memory.
//!
//! Placement: the RSDP at [`RSDP_ADDR`] (ACPI 6.5 §5.2.5.1, BIOS read-only area, 16-byte
//! aligned; also passed to Linux in `boot_params.acpi_rsdp_addr`), every other table in the
//! ACPI-reclaimable region at [`MemoryLayout::acpi_base`] (e820 type 3).

use crate::layout::{MemoryLayout, ACPI_REGION_SIZE, RSDP_ADDR};
use crate::mem::{checksum, put_u16, put_u32, put_u64, GuestMemWrite, MemError};
use thiserror::Error;

/// SLP_TYP value of the `\_S5_` object: the OS writes `SLP_TYP << 10 | SLP_EN (1 << 13)` to
/// PM1a_CNT to power off (ACPI 6.5 §4.8.3.2.1, §7.4.2). The devices crate's PM1 control
/// register must treat `SLP_EN` with this SLP_TYP as soft-off. 0, as QEMU's PIIX4 PM uses.
pub const S5_SLP_TYP: u8 = 0;
/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"RINX  ";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"RINXPC  ";
/// Creator ID in every table header.
pub const CREATOR_ID: [u8; 4] = *b"RINX";
/// Size of the common description header (ACPI 6.5 §5.2.6, Table 5.4).
pub const HEADER_LEN: usize = 36;
/// FADT length for revision 6 (ACPI 6.5 §5.2.9, Table 5.9).
pub const FADT_LEN: usize = 276;
/// FADT flags (ACPI 6.5 Table 5.10).
pub mod fadt_flags {
    /// WBINVD works.
    pub const WBINVD: u32 = 1 << 0;
    /// C1 supported on all processors.
    pub const PROC_C1: u32 = 1 << 2;
    /// Power button is a control-method device or absent (no fixed-feature power button).
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// Sleep button is a control-method device or absent.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// RTC wake status is not in the fixed register space.
    pub const FIX_RTC: u32 = 1 << 6;
    /// PM timer is 32 bits (else 24).
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    /// RESET_REG is supported.
    pub const RESET_REG_SUP: u32 = 1 << 10;
}
/// IA-PC boot architecture flags (ACPI 6.5 Table 5.11).
pub mod iapc_boot_arch {
    /// Legacy devices (ISA) present.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    /// An 8042 keyboard controller is present.
    pub const I8042: u16 = 1 << 1;
    /// VGA not present: the OS must not probe VGA.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
}

/// Errors generating ACPI tables.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AcpiError {
    /// CPU count outside 1..=254 (8-bit APIC IDs, 0xFF is broadcast).
    #[error("{0} CPUs cannot be described with 8-bit local APIC IDs (1..=254 supported)")]
    BadCpuCount(usize),
    /// The SCI must be an ISA IRQ other than 0 (timer, overridden to GSI 2) and 2 (cascade).
    #[error("SCI IRQ {0} is invalid: must be an ISA IRQ in 1..=15 other than 2")]
    BadSciIrq(u8),
    /// The tables exceed the ACPI region.
    #[error("ACPI tables need {0:#x} bytes, more than the {ACPI_REGION_SIZE:#x}-byte region")]
    TooLarge(usize),
    /// A write failed.
    #[error("writing ACPI tables: {0}")]
    Mem(#[from] MemError),
}

/// Machine parameters described by the tables. Defaults match the rinx PC: PIIX4-style PM block
/// at 0x600, SCI on IRQ 9, reset via port 0xCF9, IOAPIC 0xFEC00000 (ID 0), LAPIC 0xFEE00000,
/// HPET 0xFED00000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of CPUs (local APIC IDs 0..num_cpus, ACPI processor UIDs the same).
    pub num_cpus: usize,
    /// Local APIC MMIO base.
    pub lapic_addr: u32,
    /// IOAPIC MMIO base.
    pub ioapic_addr: u32,
    /// IOAPIC ID (must match the IOAPIC ID register of the device).
    pub ioapic_id: u8,
    /// HPET MMIO base; `None` omits the HPET table.
    pub hpet_addr: Option<u64>,
    /// HPET General Capabilities bits 31:0 (IA-PC HPET spec 1.0a §3.2.5 / HPET table "Event
    /// Timer Block ID"): default 0x8086A201 = vendor 0x8086, legacy route capable, 64-bit
    /// counter, 3 comparators, revision 1.
    pub hpet_block_id: u32,
    /// PM1a event block I/O port (4 bytes: PM1_STS, PM1_EN).
    pub pm1a_evt_blk: u16,
    /// PM1a control block I/O port (2 bytes).
    pub pm1a_cnt_blk: u16,
    /// PM timer I/O port (4 bytes, 3.579545 MHz).
    pub pm_tmr_blk: u16,
    /// The PM timer counts 32 bits (FADT TMR_VAL_EXT); else 24 bits.
    pub pm_timer_32bit: bool,
    /// GPE0 block port and length in bytes (length 0 = none).
    pub gpe0_blk: (u16, u8),
    /// SCI interrupt (ISA IRQ; MADT overrides it to level/active-high).
    pub sci_irq: u8,
    /// Reset register I/O port (FADT RESET_REG).
    pub reset_port: u16,
    /// Value written to the reset register.
    pub reset_value: u8,
    /// An i8042 keyboard controller exists (IAPC_BOOT_ARCH 8042).
    pub i8042: bool,
    /// A VGA adapter exists (else IAPC_BOOT_ARCH VGA Not Present).
    pub vga: bool,
    /// CMOS RTC century register index (0 = none).
    pub rtc_century: u8,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        Self {
            num_cpus: 1,
            lapic_addr: 0xFEE0_0000,
            ioapic_addr: 0xFEC0_0000,
            ioapic_id: 0,
            hpet_addr: Some(0xFED0_0000),
            hpet_block_id: 0x8086_A201,
            pm1a_evt_blk: 0x600,
            pm1a_cnt_blk: 0x604,
            pm_tmr_blk: 0x608,
            pm_timer_32bit: false,
            gpe0_blk: (0, 0),
            sci_irq: 9,
            reset_port: 0xCF9,
            reset_value: 0x06,
            i8042: true,
            vga: false,
            rtc_century: 0x32,
        }
    }
}

/// Where each table was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// RSDP (pass to Linux as `acpi_rsdp_addr`).
    pub rsdp: u64,
    /// RSDT.
    pub rsdt: u64,
    /// XSDT.
    pub xsdt: u64,
    /// FADT ("FACP").
    pub fadt: u64,
    /// FACS.
    pub facs: u64,
    /// DSDT.
    pub dsdt: u64,
    /// MADT ("APIC").
    pub madt: u64,
    /// HPET table, if any.
    pub hpet: Option<u64>,
    /// Every table's bytes with its address, RSDP first (for dumping and tests).
    pub blobs: Vec<(u64, [u8; 4], Vec<u8>)>,
}

/// A table under construction: header + body; `finish` fixes length and checksum.
fn table(sig: &[u8; 4], revision: u8, body_len: usize) -> Vec<u8> {
    let mut t = vec![0u8; HEADER_LEN + body_len];
    t[0..4].copy_from_slice(sig);
    t[8] = revision;
    t[10..16].copy_from_slice(&OEM_ID);
    t[16..24].copy_from_slice(&OEM_TABLE_ID);
    put_u32(&mut t, 24, 1);
    t[28..32].copy_from_slice(&CREATOR_ID);
    put_u32(&mut t, 32, 1);
    t
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    let len = t.len() as u32;
    put_u32(&mut t, 4, len);
    t[9] = 0;
    t[9] = checksum(&t);
    t
}

/// Generic Address Structure (ACPI 6.5 §5.2.3.2): 12 bytes.
fn gas(space: u8, bit_width: u8, access_size: u8, addr: u64) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = space;
    g[1] = bit_width;
    g[3] = access_size;
    g[4..12].copy_from_slice(&addr.to_le_bytes());
    g
}
const SPACE_MEMORY: u8 = 0;
const SPACE_IO: u8 = 1;

/// Encodes an AML integer constant (ACPI 6.5 §20.2.3): ZeroOp, OneOp, BytePrefix, WordPrefix,
/// DWordPrefix or QWordPrefix.
pub fn aml_integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![0x00],
        1 => vec![0x01],
        2..=0xFF => vec![0x0A, v as u8],
        0x100..=0xFFFF => {
            let mut o = vec![0x0B];
            o.extend_from_slice(&(v as u16).to_le_bytes());
            o
        }
        0x1_0000..=0xFFFF_FFFF => {
            let mut o = vec![0x0C];
            o.extend_from_slice(&(v as u32).to_le_bytes());
            o
        }
        _ => {
            let mut o = vec![0x0E];
            o.extend_from_slice(&v.to_le_bytes());
            o
        }
    }
}

/// Encodes a PkgLength (ACPI 6.5 §20.2.4) for `payload_len` bytes that follow it; the encoded
/// length includes the PkgLength bytes themselves.
pub fn aml_pkg_length(payload_len: usize) -> Vec<u8> {
    // One byte holds up to 63; n extra bytes hold 4 + 8n bits.
    for extra in 0..=3usize {
        let total = payload_len + 1 + extra;
        let fits = if extra == 0 {
            total < 0x40
        } else {
            total < 1 << (4 + 8 * extra)
        };
        if fits {
            if extra == 0 {
                return vec![total as u8];
            }
            let mut o = vec![((extra as u8) << 6) | (total & 0xF) as u8];
            for i in 0..extra {
                o.push((total >> (4 + 8 * i)) as u8);
            }
            return o;
        }
    }
    vec![0xFF, 0xFF, 0xFF, 0xFF]
}

/// AML for `Name(_S5_, Package() { S5_SLP_TYP, S5_SLP_TYP, 0, 0 })` (ACPI 6.5 §7.4.2:
/// PM1a SLP_TYP, PM1b SLP_TYP, reserved, reserved).
pub fn aml_s5() -> Vec<u8> {
    let mut elems = vec![4u8]; // NumElements
    for v in [S5_SLP_TYP, S5_SLP_TYP, 0, 0] {
        elems.extend(aml_integer(u64::from(v)));
    }
    let mut o = vec![0x08]; // NameOp
    o.extend_from_slice(b"_S5_");
    o.push(0x12); // PackageOp
    o.extend(aml_pkg_length(elems.len()));
    o.extend(elems);
    o
}

/// PCI interrupt routing of the rinx PC (PCI Local Bus 3.0 §2.2.6 and the i440FX/PIIX3 wiring
/// QEMU also uses): INTx pin `pin` (0 = INTA# .. 3 = INTD#) of the device in `slot` drives PIIX3
/// PIRQ `(slot - 1 + pin) mod 4` (0 = PIRQA#). The devices crate's `pci::pirq_of` must agree
/// (a test in the machine checks it).
pub fn prt_pirq(slot: u8, pin: u8) -> u8 {
    (slot.wrapping_sub(1).wrapping_add(pin)) & 3
}

/// GSI of PIRQ A in APIC mode: PIRQA#-PIRQD# also reach I/O APIC inputs 16-19.
pub const PIRQ_GSI_BASE: u32 = 16;
/// ISA IRQs the PIRQ link devices offer in PIC mode (`_PRS`): 5, 10 and 11 are free on the
/// rinx PC (0 PIT, 1/12 i8042, 3/4 UARTs, 8 RTC, 9 SCI).
pub const PIRQ_ISA_CHOICES: [u8; 3] = [5, 10, 11];

/// Small IRQ descriptor (ACPI 6.5 §6.4.2.1), level-triggered, active-low, shared, with the
/// IRQs in `mask` (bit n = IRQ n).
fn irq_descriptor(mask: u16) -> Vec<u8> {
    let m = mask.to_le_bytes();
    vec![0x23, m[0], m[1], 0x18]
}

/// The PCI root bridge's current resources (ACPI 6.5 §6.4.3.5 address space descriptors):
/// bus 0-255, the configuration ports 0xCF8-0xCFF, the rest of I/O space, and the MMIO hole
/// from [`crate::layout::PCI_HOLE_START`] up to the I/O APIC.
fn pci0_crs(cfg: &AcpiConfig) -> Vec<u8> {
    use crate::aml::resource_template;
    // Word Address Space Descriptor: type 0x88, length 13, resource type, general flags
    // (MinFixed | MaxFixed, producer, positive decode), type flags, _GRA _MIN _MAX _TRA _LEN.
    let word = |rtype: u8, tflags: u8, min: u16, max: u16| {
        let mut d = vec![0x88, 0x0D, 0x00, rtype, 0x0C, tflags];
        for v in [0, min, max, 0, max - min + 1] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d
    };
    let bus = word(2, 0, 0, 0xFF);
    // IO descriptor (decode 16), 0xCF8 length 8: consumed by the bridge itself.
    let cfg_io = vec![0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08];
    let io_lo = word(1, 0x03, 0x0000, 0x0CF7);
    let io_hi = word(1, 0x03, 0x0D00, 0xFFFF);
    // DWord Memory descriptor: type 0x87, length 23, read/write, non-cacheable.
    let min = crate::layout::PCI_HOLE_START as u32;
    let max = cfg.ioapic_addr - 1;
    let mut mem = vec![0x87, 0x17, 0x00, 0x00, 0x0C, 0x01];
    for v in [0, min, max, 0, max - min + 1] {
        mem.extend_from_slice(&v.to_le_bytes());
    }
    resource_template(&[bus, cfg_io, io_lo, io_hi, mem])
}

/// The DSDT's AML: `\_S5_`, `\_PIC`, the PCI root bridge `\_SB.PCI0` (PNP0A03) with `_CRS`
/// and `_PRT`, and the PIIX3 PIRQ link devices `\_SB.LNKA`-`LNKD` (PNP0C0F).
///
/// `_PRT` (ACPI 6.5 §6.2.13) has an entry for INTA#-INTD# of slots 1-31; in PIC mode (`\_PIC(0)`,
/// the default) each names its link device, whose `_CRS`/`_SRS`/`_DIS` read and write the
/// PIIX3 PIRQ route control register (82371SB §4.1.8, config 0x60-0x63) through a PCI_Config
/// operation region; in APIC mode (`\_PIC(1)`) each gives GSI `PIRQ_GSI_BASE + pirq` directly
/// (source 0: level-triggered, active-low, shareable).
pub fn dsdt_aml(cfg: &AcpiConfig) -> Vec<u8> {
    use crate::aml::*;
    let links = ["LNKA", "LNKB", "LNKC", "LNKD"];
    let regs = ["PRQA", "PRQB", "PRQC", "PRQD"];
    let prt = |apic: bool| {
        let mut entries = Vec::new();
        for slot in 1..32u8 {
            for pin in 0..4u8 {
                let pirq = prt_pirq(slot, pin);
                let addr = int((u64::from(slot) << 16) | 0xFFFF);
                let (source, index) = if apic {
                    (int(0), int(u64::from(PIRQ_GSI_BASE + u32::from(pirq))))
                } else {
                    (name(&format!("\\_SB.{}", links[usize::from(pirq)])), int(0))
                };
                entries.push(package(&[addr, int(u64::from(pin)), source, index]));
            }
        }
        package(&entries)
    };
    let isa = device(
        "ISA",
        &[
            def_name("_ADR", &int(0x0001_0000)),
            op_region("PIRQ", SPACE_PCI_CONFIG, 0x60, 4),
            field_bytes(
                "PIRQ",
                &[(regs[0], 8), (regs[1], 8), (regs[2], 8), (regs[3], 8)],
            ),
        ],
    );
    let pci0 = device(
        "PCI0",
        &[
            def_name("_HID", &eisa_id("PNP0A03")),
            def_name("_UID", &int(0)),
            def_name("_CRS", &pci0_crs(cfg)),
            def_name("PRTP", &prt(false)),
            def_name("PRTA", &prt(true)),
            method(
                "_PRT",
                0,
                &[
                    if_(&lequal(&name("\\PICM"), &int(0)), &[return_(&name("PRTP"))]),
                    return_(&name("PRTA")),
                ],
            ),
            isa,
        ],
    );
    let choices = PIRQ_ISA_CHOICES.iter().fold(0u16, |m, &i| m | 1 << i);
    // IQST(route): _STA of a link: present, enabled, functioning; disabled when bit 7 is set.
    let iqst = method(
        "IQST",
        1,
        &[
            if_(
                &and(&arg(0), &int(0x80), &NULL_TARGET),
                &[return_(&int(0x09))],
            ),
            return_(&int(0x0B)),
        ],
    );
    // IQCR(route): the IRQ descriptor of the routed IRQ, or an empty mask when disabled.
    let iqcr = method_serialized(
        "IQCR",
        1,
        &[
            def_name("BUF0", &resource_template(&[irq_descriptor(0)])),
            create_word_field(&name("BUF0"), &int(1), "IRQW"),
            if_(
                &lless(&arg(0), &int(0x80)),
                &[shift_left(
                    &int(1),
                    &and(&arg(0), &int(0x0F), &NULL_TARGET),
                    &name("IRQW"),
                )],
            ),
            return_(&name("BUF0")),
        ],
    );
    let mut sb = vec![pci0, iqst, iqcr];
    for (i, (link, reg)) in links.iter().zip(regs).enumerate() {
        let r = name(&format!("\\_SB.PCI0.ISA.{reg}"));
        sb.push(device(
            link,
            &[
                def_name("_HID", &eisa_id("PNP0C0F")),
                def_name("_UID", &int(i as u64 + 1)),
                def_name("_PRS", &resource_template(&[irq_descriptor(choices)])),
                method("_STA", 0, &[return_(&concat_call("IQST", &r))]),
                method("_DIS", 0, &[or(&r, &int(0x80), &r)]),
                method("_CRS", 0, &[return_(&concat_call("IQCR", &r))]),
                method_serialized(
                    "_SRS",
                    1,
                    &[
                        create_word_field(&arg(0), &int(1), "IRQW"),
                        find_set_right_bit(&name("IRQW"), &local(0)),
                        subtract(&local(0), &int(1), &local(0)),
                        store(&local(0), &r),
                    ],
                ),
            ],
        ));
    }
    let mut aml = aml_s5();
    aml.extend(def_name("PICM", &int(0)));
    aml.extend(method("_PIC", 1, &[store(&arg(0), &name("\\PICM"))]));
    aml.extend(scope("\\_SB", &sb));
    aml
}

/// A method call `NAME(arg)`: the method's NameString followed by its argument.
fn concat_call(method: &str, arg: &[u8]) -> Vec<u8> {
    let mut o = crate::aml::name(method);
    o.extend_from_slice(arg);
    o
}

fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let aml = dsdt_aml(cfg);
    let mut t = table(b"DSDT", 2, aml.len());
    t[HEADER_LEN..].copy_from_slice(&aml);
    finish(t)
}

fn facs() -> Vec<u8> {
    // ACPI 6.5 §5.2.10, Table 5.14: no header checksum; length 64; version 2.
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    put_u32(&mut f, 4, 64);
    f[32] = 2;
    f
}

fn fadt(cfg: &AcpiConfig, facs: u64, dsdt: u64) -> Vec<u8> {
    use fadt_flags::*;
    let mut t = table(b"FACP", 6, FADT_LEN - HEADER_LEN);
    // FIRMWARE_CTRL only: X_FIRMWARE_CTRL must be zero when it is set (ACPI 6.5 Table 5.9).
    put_u32(&mut t, 36, facs as u32);
    // DSDT and X_DSDT both hold the (below 4 GiB) DSDT address, for 32-bit-only readers.
    put_u32(&mut t, 40, dsdt as u32);
    t[45] = 0; // Preferred_PM_Profile: unspecified
    put_u16(&mut t, 46, u16::from(cfg.sci_irq));
    // SMI_CMD = 0: no SMI command port; the hardware is always in ACPI mode (SCI_EN reads 1).
    put_u32(&mut t, 56, u32::from(cfg.pm1a_evt_blk));
    put_u32(&mut t, 64, u32::from(cfg.pm1a_cnt_blk));
    put_u32(&mut t, 76, u32::from(cfg.pm_tmr_blk));
    put_u32(
        &mut t,
        80,
        u32::from(cfg.gpe0_blk.0) * u32::from(cfg.gpe0_blk.1 != 0),
    );
    t[88] = 4; // PM1_EVT_LEN
    t[89] = 2; // PM1_CNT_LEN
    t[91] = 4; // PM_TMR_LEN
    t[92] = cfg.gpe0_blk.1;
    put_u16(&mut t, 96, 101); // P_LVL2_LAT > 100: C2 not supported
    put_u16(&mut t, 98, 1001); // P_LVL3_LAT > 1000: C3 not supported
    t[108] = cfg.rtc_century;
    let mut arch = iapc_boot_arch::LEGACY_DEVICES;
    if cfg.i8042 {
        arch |= iapc_boot_arch::I8042;
    }
    if !cfg.vga {
        arch |= iapc_boot_arch::VGA_NOT_PRESENT;
    }
    put_u16(&mut t, 109, arch);
    let mut flags = WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON | FIX_RTC | RESET_REG_SUP;
    if cfg.pm_timer_32bit {
        flags |= TMR_VAL_EXT;
    }
    put_u32(&mut t, 112, flags);
    t[116..128].copy_from_slice(&gas(SPACE_IO, 8, 1, u64::from(cfg.reset_port)));
    t[128] = cfg.reset_value;
    t[131] = 5; // FADT minor version: ACPI 6.5
    put_u64(&mut t, 140, dsdt);
    t[148..160].copy_from_slice(&gas(SPACE_IO, 32, 2, u64::from(cfg.pm1a_evt_blk)));
    t[172..184].copy_from_slice(&gas(SPACE_IO, 16, 2, u64::from(cfg.pm1a_cnt_blk)));
    t[208..220].copy_from_slice(&gas(SPACE_IO, 32, 3, u64::from(cfg.pm_tmr_blk)));
    if cfg.gpe0_blk.1 != 0 {
        t[220..232].copy_from_slice(&gas(
            SPACE_IO,
            cfg.gpe0_blk.1.saturating_mul(8),
            1,
            u64::from(cfg.gpe0_blk.0),
        ));
    }
    finish(t)
}

/// MPS INTI flags (ACPI 6.5 Table 5.26): active high (01), level triggered (11 << 2).
pub const INTI_ACTIVE_HIGH_LEVEL: u16 = 0x000D;

fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&cfg.lapic_addr.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: dual 8259s present
    for id in 0..cfg.num_cpus as u8 {
        // Processor Local APIC (Table 5.22): type 0, len 8, UID, APIC ID, flags Enabled.
        body.extend_from_slice(&[0, 8, id, id]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // I/O APIC (Table 5.23): type 1, len 12, ID, reserved, address, GSI base 0.
    body.extend_from_slice(&[1, 12, cfg.ioapic_id, 0]);
    body.extend_from_slice(&cfg.ioapic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt Source Overrides (Table 5.25): type 2, len 10, bus 0 (ISA), source, GSI, flags.
    let iso = |body: &mut Vec<u8>, irq: u8, gsi: u32, flags: u16| {
        body.extend_from_slice(&[2, 10, 0, irq]);
        body.extend_from_slice(&gsi.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    };
    iso(&mut body, 0, 2, 0);
    iso(
        &mut body,
        cfg.sci_irq,
        u32::from(cfg.sci_irq),
        INTI_ACTIVE_HIGH_LEVEL,
    );
    // Local APIC NMI (Table 5.30): type 4, len 6, all processors, flags 0, LINT1.
    body.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]);
    let mut t = table(b"APIC", 5, body.len());
    t[HEADER_LEN..].copy_from_slice(&body);
    finish(t)
}

fn hpet(cfg: &AcpiConfig, addr: u64) -> Vec<u8> {
    // IA-PC HPET spec 1.0a §3.2.4, Table 3: 56 bytes.
    let mut t = table(b"HPET", 1, 20);
    put_u32(&mut t, 36, cfg.hpet_block_id);
    t[40..52].copy_from_slice(&gas(SPACE_MEMORY, 64, 0, addr));
    t[52] = 0; // HPET number
    put_u16(&mut t, 53, 0x80); // minimum clock tick in periodic mode
    t[55] = 0; // no page protection
    finish(t)
}

fn sdt(sig: &[u8; 4], entries: &[u64], wide: bool) -> Vec<u8> {
    let w = if wide { 8 } else { 4 };
    let mut t = table(sig, 1, entries.len() * w);
    for (i, &e) in entries.iter().enumerate() {
        let off = HEADER_LEN + i * w;
        if wide {
            put_u64(&mut t, off, e);
        } else {
            put_u32(&mut t, off, e as u32);
        }
    }
    finish(t)
}

/// RSDP revision 2 (ACPI 6.5 §5.2.5.3, Table 5.3): 36 bytes with both checksums.
fn rsdp(rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut r = vec![0u8; 36];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = 2;
    put_u32(&mut r, 16, rsdt as u32);
    put_u32(&mut r, 20, 36);
    put_u64(&mut r, 24, xsdt);
    r[8] = checksum(&r[0..20]);
    r[32] = checksum(&r);
    r
}

/// Builds all tables and writes them: RSDP at [`RSDP_ADDR`], the rest packed (16-byte
/// aligned, FACS 64-byte aligned) from `layout.acpi_base`.
pub fn write_acpi_tables(
    mem: &mut dyn GuestMemWrite,
    layout: &MemoryLayout,
    cfg: &AcpiConfig,
) -> Result<AcpiTables, AcpiError> {
    if cfg.num_cpus == 0 || cfg.num_cpus > 254 {
        return Err(AcpiError::BadCpuCount(cfg.num_cpus));
    }
    if !(1..=15).contains(&cfg.sci_irq) || cfg.sci_irq == 2 {
        return Err(AcpiError::BadSciIrq(cfg.sci_irq));
    }
    let base = layout.acpi_base;
    let mut next = base;
    let mut blobs: Vec<(u64, [u8; 4], Vec<u8>)> = Vec::new();
    let mut place = |bytes: Vec<u8>, sig: [u8; 4], align: u64| {
        let at = next.div_ceil(align) * align;
        next = at + bytes.len() as u64;
        blobs.push((at, sig, bytes));
        at
    };
    let facs_at = place(facs(), *b"FACS", 64);
    let dsdt_at = place(dsdt(cfg), *b"DSDT", 16);
    let fadt_at = place(fadt(cfg, facs_at, dsdt_at), *b"FACP", 16);
    let madt_at = place(madt(cfg), *b"APIC", 16);
    let hpet_at = cfg.hpet_addr.map(|a| place(hpet(cfg, a), *b"HPET", 16));
    let mut entries = vec![fadt_at, madt_at];
    entries.extend(hpet_at);
    let rsdt_at = place(sdt(b"RSDT", &entries, false), *b"RSDT", 16);
    let xsdt_at = place(sdt(b"XSDT", &entries, true), *b"XSDT", 16);
    let used = (next - base) as usize;
    if used > ACPI_REGION_SIZE as usize {
        return Err(AcpiError::TooLarge(used));
    }
    blobs.insert(0, (RSDP_ADDR, *b"RSDP", rsdp(rsdt_at, xsdt_at)));
    for (at, _, bytes) in &blobs {
        mem.write(*at, bytes)?;
    }
    log::debug!(target: "firmware::acpi", "ACPI tables: RSDP {RSDP_ADDR:#x}, XSDT {xsdt_at:#x}, {used} bytes at {base:#x}");
    Ok(AcpiTables {
        rsdp: RSDP_ADDR,
        rsdt: rsdt_at,
        xsdt: xsdt_at,
        fadt: fadt_at,
        facs: facs_at,
        dsdt: dsdt_at,
        madt: madt_at,
        hpet: hpet_at,
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMemory;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    fn setup(cpus: usize) -> (VecMemory, AcpiTables) {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let mut mem = VecMemory::new(64 << 20);
        let cfg = AcpiConfig {
            num_cpus: cpus,
            ..AcpiConfig::default()
        };
        let t = write_acpi_tables(&mut mem, &layout, &cfg).unwrap();
        (mem, t)
    }

    /// Reads a table at `at` from guest memory, checking its length and checksum.
    fn read_table(mem: &VecMemory, at: u64, sig: &[u8; 4]) -> Vec<u8> {
        assert_eq!(mem.read(at, 4).unwrap(), sig, "signature at {at:#x}");
        let len = mem.read_u32(at + 4) as usize;
        let t = mem.read(at, len).unwrap().to_vec();
        assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
        t
    }

    #[test]
    fn rsdp_checksums_and_placement() {
        let (mem, t) = setup(1);
        assert_eq!(t.rsdp % 16, 0);
        assert!((0xE0000..0x100000).contains(&t.rsdp));
        let r = mem.read(t.rsdp, 36).unwrap();
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(sum(&r[0..20]), 0, "ACPI 1.0 checksum over 20 bytes");
        assert_eq!(sum(r), 0, "extended checksum over 36 bytes");
        assert_eq!(r[15], 2, "revision 2");
        assert_eq!(mem.read_u32(t.rsdp + 20), 36);
        assert_eq!(u64::from(mem.read_u32(t.rsdp + 16)), t.rsdt);
        assert_eq!(mem.read_u64(t.rsdp + 24), t.xsdt);
    }

    #[test]
    fn linkage_rsdp_xsdt_fadt_dsdt() {
        let (mem, t) = setup(2);
        let xsdt_at = mem.read_u64(t.rsdp + 24);
        let xsdt = read_table(&mem, xsdt_at, b"XSDT");
        let entries: Vec<u64> = xsdt[HEADER_LEN..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let sigs: Vec<[u8; 4]> = entries
            .iter()
            .map(|&e| mem.read(e, 4).unwrap().try_into().unwrap())
            .collect();
        assert_eq!(sigs, vec![*b"FACP", *b"APIC", *b"HPET"]);
        for (&e, s) in entries.iter().zip(&sigs) {
            read_table(&mem, e, s);
        }
        let rsdt = read_table(&mem, t.rsdt, b"RSDT");
        let rsdt_entries: Vec<u64> = rsdt[HEADER_LEN..]
            .chunks(4)
            .map(|c| u64::from(u32::from_le_bytes(c.try_into().unwrap())))
            .collect();
        assert_eq!(rsdt_entries, entries);

        let fadt = read_table(&mem, entries[0], b"FACP");
        assert_eq!(fadt.len(), FADT_LEN);
        assert_eq!(fadt[8], 6, "FADT revision");
        let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        assert_eq!(x_dsdt, t.dsdt);
        let dsdt = read_table(&mem, x_dsdt, b"DSDT");
        // Name(_S5_, Package(4) {Zero, Zero, Zero, Zero})
        assert!(dsdt[HEADER_LEN..]
            .starts_with(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]));
        let facs_at = u64::from(u32::from_le_bytes(fadt[36..40].try_into().unwrap()));
        assert_eq!(facs_at % 64, 0);
        assert_eq!(mem.read(facs_at, 4).unwrap(), b"FACS");
        assert_eq!(mem.read_u64(entries[0] + 132), 0, "X_FIRMWARE_CTRL zero");
    }

    #[test]
    fn fadt_fields() {
        let (mem, t) = setup(1);
        let f = read_table(&mem, t.fadt, b"FACP");
        let u16_at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
        assert_eq!(u16_at(46), 9, "SCI_INT");
        assert_eq!(u32_at(48), 0, "SMI_CMD: always in ACPI mode");
        assert_eq!(u32_at(56), 0x600);
        assert_eq!(u32_at(64), 0x604);
        assert_eq!(u32_at(76), 0x608);
        assert_eq!((f[88], f[89], f[91]), (4, 2, 4));
        let flags = u32_at(112);
        assert_ne!(flags & fadt_flags::PWR_BUTTON, 0, "no fixed power button");
        assert_ne!(flags & fadt_flags::RESET_REG_SUP, 0);
        assert_eq!(
            flags & fadt_flags::TMR_VAL_EXT,
            0,
            "24-bit PM timer by default"
        );
        // RESET_REG: SystemIO, 8 bits, port 0xCF9, value 6.
        assert_eq!(&f[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(120), 0xCF9);
        assert_eq!(f[128], 6);
        // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK.
        assert_eq!((f[148], f[149], u64_at(152)), (1, 32, 0x600));
        assert_eq!((f[172], f[173], u64_at(176)), (1, 16, 0x604));
        assert_eq!((f[208], f[209], u64_at(212)), (1, 32, 0x608));
        let arch = u16_at(109);
        assert_eq!(arch, 0x7, "legacy devices, 8042, VGA not present");
    }

    #[test]
    fn madt_entries() {
        let (mem, t) = setup(4);
        let m = read_table(&mem, t.madt, b"APIC");
        assert_eq!(
            u32::from_le_bytes(m[36..40].try_into().unwrap()),
            0xFEE0_0000
        );
        assert_eq!(u32::from_le_bytes(m[40..44].try_into().unwrap()) & 1, 1);
        let mut off = 44;
        let mut lapics = vec![];
        let mut ioapics = vec![];
        let mut isos = vec![];
        let mut nmis = 0;
        while off < m.len() {
            let (ty, len) = (m[off], m[off + 1] as usize);
            assert!(len >= 2 && off + len <= m.len());
            let e = &m[off..off + len];
            match ty {
                0 => {
                    assert_eq!(len, 8);
                    assert_eq!(u32::from_le_bytes(e[4..8].try_into().unwrap()), 1);
                    lapics.push((e[2], e[3]));
                }
                1 => {
                    assert_eq!(len, 12);
                    ioapics.push((e[2], u32::from_le_bytes(e[4..8].try_into().unwrap())));
                }
                2 => {
                    assert_eq!(len, 10);
                    isos.push((
                        e[3],
                        u32::from_le_bytes(e[4..8].try_into().unwrap()),
                        u16::from_le_bytes([e[8], e[9]]),
                    ));
                }
                4 => nmis += 1,
                _ => panic!("unexpected MADT entry type {ty}"),
            }
            off += len;
        }
        assert_eq!(lapics, vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
        assert_eq!(ioapics, vec![(0, 0xFEC0_0000)]);
        assert_eq!(isos, vec![(0, 2, 0), (9, 9, 0x000D)]);
        assert_eq!(nmis, 1);
    }

    #[test]
    fn hpet_table() {
        let (mem, t) = setup(1);
        let h = read_table(&mem, t.hpet.unwrap(), b"HPET");
        assert_eq!(h.len(), 56);
        assert_eq!(
            u32::from_le_bytes(h[36..40].try_into().unwrap()),
            0x8086_A201
        );
        assert_eq!(h[40], 0, "system memory");
        assert_eq!(
            u64::from_le_bytes(h[44..52].try_into().unwrap()),
            0xFED0_0000
        );
    }

    #[test]
    fn no_hpet_and_cpu_limits() {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let mut mem = VecMemory::new(64 << 20);
        let cfg = AcpiConfig {
            hpet_addr: None,
            ..AcpiConfig::default()
        };
        let t = write_acpi_tables(&mut mem, &layout, &cfg).unwrap();
        assert!(t.hpet.is_none());
        let x = read_table(&mem, t.xsdt, b"XSDT");
        assert_eq!(x.len(), HEADER_LEN + 16);
        for n in [0, 255, 1000] {
            let cfg = AcpiConfig {
                num_cpus: n,
                ..AcpiConfig::default()
            };
            assert_eq!(
                write_acpi_tables(&mut mem, &layout, &cfg),
                Err(AcpiError::BadCpuCount(n))
            );
        }
        for irq in [0, 2, 16] {
            let cfg = AcpiConfig {
                sci_irq: irq,
                ..AcpiConfig::default()
            };
            assert_eq!(
                write_acpi_tables(&mut mem, &layout, &cfg),
                Err(AcpiError::BadSciIrq(irq))
            );
        }
        let cfg = AcpiConfig {
            num_cpus: 254,
            ..AcpiConfig::default()
        };
        assert!(write_acpi_tables(&mut mem, &layout, &cfg).is_ok());
        // Writing outside RAM is an error, not a panic.
        let mut tiny = VecMemory::new(0x1000);
        assert!(matches!(
            write_acpi_tables(&mut tiny, &layout, &AcpiConfig::default()),
            Err(AcpiError::Mem(_))
        ));
    }

    #[test]
    fn prt_swizzle() {
        // Slot 1 INTA# is PIRQA#; each slot rotates by one, each pin by one.
        assert_eq!(prt_pirq(1, 0), 0);
        assert_eq!(prt_pirq(3, 0), 2);
        assert_eq!(prt_pirq(3, 1), 3);
        assert_eq!(prt_pirq(4, 0), 3);
        assert_eq!(prt_pirq(5, 3), 3);
        assert_eq!(prt_pirq(0, 0), 3);
        if let Ok(p) = std::env::var("RINX_DUMP_DSDT") {
            std::fs::write(p, dsdt(&AcpiConfig::default())).unwrap();
        }
    }

    #[test]
    fn aml_encodings() {
        assert_eq!(aml_integer(0), [0x00]);
        assert_eq!(aml_integer(1), [0x01]);
        assert_eq!(aml_integer(5), [0x0A, 5]);
        assert_eq!(aml_integer(0x1234), [0x0B, 0x34, 0x12]);
        assert_eq!(aml_pkg_length(5), [6]);
        assert_eq!(aml_pkg_length(62), [63]);
        // 63 payload + 2 length bytes = 65 = 0x41: lead byte 0b01 << 6 | 0x1, then 0x04.
        assert_eq!(aml_pkg_length(63), [0x41, 0x04]);
        // 0x1000 payload + 3 length bytes = 0x1003: lead 0b10 << 6 | 0x3, then 0x00, 0x01.
        assert_eq!(aml_pkg_length(0x1000), [0x83, 0x00, 0x01]);
    }

    /// Disassembles every table with ACPICA's `iasl -d` (Debian package acpica-tools), the
    /// reference ACPI compiler: strong evidence that the tables parse as ACPI expects.
    #[test]
    fn iasl_disassembles_tables() {
        if std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!(
                "NOTE: iasl not found: ACPI tables NOT cross-checked with ACPICA \
                 (apt-get install acpica-tools to enable this test)"
            );
            return;
        }
        let (_, t) = setup(2);
        let dir = std::env::temp_dir().join(format!("rinx-acpi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut texts = String::new();
        for (_, sig, bytes) in &t.blobs {
            if sig == b"RSDP" {
                continue; // `iasl -d` does not accept a bare RSDP (checked by other tests)
            }
            let name = String::from_utf8_lossy(sig).to_lowercase();
            let path = dir.join(format!("{name}.dat"));
            std::fs::write(&path, bytes).unwrap();
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .current_dir(&dir)
                .output()
                .unwrap();
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "iasl -d {name}: {log}");
            let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl")))
                .unwrap_or_else(|e| panic!("iasl produced no {name}.dsl ({e}): {log}"));
            for bad in ["**** ", "Incorrect", "Invalid", "Error", "Warning"] {
                assert!(!dsl.contains(bad), "iasl flagged {name} ({bad}):\n{dsl}");
            }
            // Collapse runs of spaces so needles do not depend on iasl's column alignment.
            let flat: String = dsl
                .split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            texts.push_str(&flat);
        }
        std::fs::remove_dir_all(&dir).ok();
        for needle in [
            "Name (_S5, Package (0x04)",
            "Signature : \"FACS\"",
            "Signature : \"FACP\"",
            "PM1A Event Block Address : 00000600",
            "PM1A Control Block Address : 00000604",
            "PM Timer Block Address : 00000608",
            "SCI Interrupt : 0009",
            "Control Method Power Button (V1) : 1",
            "Reset Register Supported (V2) : 1",
            "Address : 0000000000000CF9",
            "Signature : \"APIC\"",
            "Local Apic Address : FEE00000",
            "Subtable Type : 00 [Processor Local APIC]",
            "Local Apic ID : 01",
            "Address : FEC00000",
            "Subtable Type : 02 [Interrupt Source Override]",
            "Source : 09",
            "Flags (decoded below) : 000D",
            "Signature : \"HPET\"",
            "Address : 00000000FED00000",
            "Signature : \"XSDT\"",
            "Signature : \"RSDT\"",
            "Device (PCI0)",
            "Name (_HID, EisaId (\"PNP0A03\")",
            "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
            "0xFEBFFFFF, // Range Maximum",
            "Method (_PRT, 0, NotSerialized)",
            "Method (_PIC, 1, NotSerialized)",
            "OperationRegion (PIRQ, PCI_Config, 0x60, 0x04)",
            "Device (LNKD)",
            "Name (_HID, EisaId (\"PNP0C0F\")",
            "IRQ (Level, ActiveLow, Shared, )",
            "{5,10,11}",
            "Method (_SRS, 1, Serialized)",
            "\\_SB.PCI0.ISA.PRQC = Local0",
        ] {
            assert!(
                texts.contains(needle),
                "missing {needle:?} in iasl output:\n{texts}"
            );
        }
    }
}
