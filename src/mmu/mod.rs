//! Memory management: guest physical memory (PA -> MA), guest page walks (VA -> PA) and the
//! per-vCPU shadow TLB.

pub mod debug;
pub mod phys;
pub mod tlb;
pub mod walk;

pub use phys::{GuestMemory, HostPage, MemError, PAGE_SIZE};
pub use tlb::Tlb;
