//! virtio 1.2 devices over the modern PCI transport (OASIS virtio v1.2, cs01).
//!
//! * [`mem`]: guest RAM for DMA, bounds-checked.
//! * [`queue`]: split virtqueues (§2.7) with validation of every descriptor chain.
//! * [`pci`]: the modern PCI transport (§4.1) with MSI-X.
//! * [`scsi`]: virtio-scsi (§5.6) over the [`crate::scsi`] disk target.

pub mod mem;
pub mod queue;

pub use mem::{DmaError, FlatMemory, GuestMemory};
pub use queue::{DescChain, QueueError, SplitQueue};
pub mod pci;
pub mod scsi;

pub use pci::{MsiSink, VirtioDevice, VirtioPci};
pub use scsi::VirtioScsi;
