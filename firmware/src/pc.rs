//! One-call set-up of the PC firmware tables (ACPI 6.5 and Intel MP spec 1.4) for a machine, so
//! both descriptions come from a single [`AcpiConfig`] and cannot disagree.

use crate::acpi::{write_acpi_tables, AcpiConfig, AcpiError, AcpiTables};
use crate::layout::MemoryLayout;
use crate::mem::GuestMemWrite;
use crate::mptable::{write_mp_tables, MpConfig, MpError, MpTables};
use thiserror::Error;

/// Errors writing the PC tables.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PcTablesError {
    /// ACPI table generation failed.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// MP table generation failed.
    #[error(transparent)]
    Mp(#[from] MpError),
}

/// Addresses of everything written by [`write_pc_tables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcTables {
    /// ACPI tables (RSDP at 0xE0000).
    pub acpi: AcpiTables,
    /// MP floating pointer (0xF0000) and configuration table.
    pub mp: MpTables,
}

/// Writes the ACPI tables and the MP tables for `cfg`. Call before [`crate::linux::load_linux`]
/// or [`crate::multiboot::load_multiboot`] (they do not overlap: the tables live in the BIOS
/// area and the ACPI region, which the loaders never use).
pub fn write_pc_tables(
    mem: &mut dyn GuestMemWrite,
    layout: &MemoryLayout,
    cfg: &AcpiConfig,
) -> Result<PcTables, PcTablesError> {
    let acpi = write_acpi_tables(mem, layout, cfg)?;
    let mp = write_mp_tables(mem, &MpConfig::from(cfg))?;
    Ok(PcTables { acpi, mp })
}
