//! Boot protocols (Linux, Multiboot), e820, ACPI and MP tables. No CPU knowledge.
//!
//! Everything here writes into guest physical memory through [`mem::GuestMemWrite`] and returns a
//! plan describing the CPU state the machine must establish; see [`layout`] for the addresses.

pub mod acpi;
pub mod e820;
pub mod layout;
pub mod linux;
pub mod mem;
pub mod mptable;
pub mod multiboot;

pub use acpi::{write_acpi_tables, AcpiConfig, AcpiError, AcpiTables, S5_SLP_TYP};
pub use e820::{build_e820, E820Entry, E820Type};
pub use layout::{LayoutError, MemoryLayout};
pub use linux::{load_linux, LinuxBootConfig, LinuxBootPlan, LinuxError, SetupHeader};
pub use mem::{GuestMemWrite, MemError, VecMemory};
pub use mptable::{write_mp_tables, MpConfig, MpError, MpTables};
pub use multiboot::{
    load_multiboot, MultibootError, MultibootHeader, MultibootModule, MultibootPlan,
};
