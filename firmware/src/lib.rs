//! Boot protocols (Linux, Multiboot), e820, ACPI and MP tables. No CPU knowledge.
//!
//! Everything here writes into guest physical memory through [`mem::GuestMemWrite`] and returns a
//! plan describing the CPU state the machine must establish; see [`layout`] for the addresses.
//! All inputs (kernel images, initrds, modules, sizes) are untrusted: bad input is an error
//! value, never a panic.
//!
//! How a machine boots Linux directly (Linux Documentation/arch/x86/boot.rst):
//!
//! ```
//! use firmware::{layout::MemoryLayout, mem::VecMemory, AcpiConfig, LinuxBootConfig};
//! # fn bzimage() -> Vec<u8> {
//! #     let mut v = vec![0u8; 2 * 512 + 16];
//! #     v[0x1F1] = 1; v[0x1FE] = 0x55; v[0x1FF] = 0xAA; v[0x201] = 0x6A;
//! #     v[0x202..0x206].copy_from_slice(b"HdrS"); v[0x206] = 0x0F; v[0x207] = 2;
//! #     v[0x211] = 1; v[0x22C..0x230].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0x7F]); v[0x232] = 0x20; v[0x234] = 1; v[0x236] = 1;
//! #     v[0x238] = 0xFF; v[0x239] = 0x07; v[0x25A] = 0x00; v[0x25B] = 0x01;
//! #     v
//! # }
//! let layout = MemoryLayout::new(128 << 20)?;            // RAM size -> RAM ranges to map
//! let mut ram = VecMemory::new(128 << 20);               // the machine implements GuestMemWrite
//! let acpi = AcpiConfig { num_cpus: 2, ..AcpiConfig::default() };
//! let tables = firmware::write_pc_tables(&mut ram, &layout, &acpi)?;  // ACPI + MP tables
//! let plan = firmware::load_linux(
//!     &mut ram, &layout, &bzimage(), Some(&[0u8; 4096][..]), "console=ttyS0",
//!     &LinuxBootConfig { acpi_rsdp_addr: Some(tables.acpi.rsdp), ..Default::default() },
//! )?;
//! match plan.entry64 {
//!     // 64-bit CPU: long mode, CR3 = e.cr3, GDTR = e.gdt, CS = 0x10 (L=1), DS/ES/SS = 0x18,
//!     // RSI = e.rsi, RIP = e.rip, IF = 0.
//!     Some(e) => assert_eq!(e.rip, plan.kernel_addr + 0x200),
//!     // 32-bit: CR0.PE = 1, paging off, CS = 0x10, DS/ES/SS = 0x18 (flat), ESI = boot_params,
//!     // EIP = entry32.eip, EBP = EDI = EBX = 0, IF = 0.
//!     None => assert_eq!(u64::from(plan.entry32.eip), plan.kernel_addr),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod acpi;
pub mod aml;
pub mod demo;
pub mod e820;
pub mod layout;
pub mod linux;
pub mod mem;
pub mod mptable;
pub mod multiboot;
pub mod pc;

pub use acpi::{write_acpi_tables, AcpiConfig, AcpiError, AcpiTables, S5_SLP_TYP};
pub use e820::{build_e820, E820Entry, E820Type};
pub use layout::{LayoutError, MemoryLayout};
pub use linux::{load_linux, LinuxBootConfig, LinuxBootPlan, LinuxError, SetupHeader};
pub use mem::{GuestMemWrite, MemError, VecMemory};
pub use mptable::{write_mp_tables, MpConfig, MpError, MpTables};
pub use multiboot::{
    load_multiboot, MultibootError, MultibootHeader, MultibootModule, MultibootPlan,
};
pub use pc::{write_pc_tables, PcTables, PcTablesError};
