//! virtio 1.2 devices over the modern PCI transport (OASIS virtio v1.2, cs01).
//!
//! * [`mem`]: guest RAM for DMA, bounds-checked.
//! * [`queue`]: split virtqueues (§2.7) with validation of every descriptor chain.

pub mod mem;
pub mod queue;

pub use mem::{DmaError, FlatMemory, GuestMemory};
pub use queue::{DescChain, QueueError, SplitQueue};
