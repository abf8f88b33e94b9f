//! Boot protocols (Linux, Multiboot), e820, ACPI and MP tables. No CPU knowledge.
//!
//! Everything here writes into guest physical memory through [`mem::GuestMemWrite`] and returns a
//! plan describing the CPU state the machine must establish; see [`layout`] for the addresses.

pub mod e820;
pub mod layout;
pub mod mem;

pub use e820::{build_e820, E820Entry, E820Type};
pub use layout::{LayoutError, MemoryLayout};
pub use mem::{GuestMemWrite, MemError, VecMemory};
