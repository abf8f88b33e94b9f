//! rinx: a full-system x86 emulator without hardware virtualization.
//!
//! Layout (DESIGN.md): [`cpu`] holds the CPU state and the reference semantics, [`mmu`] the
//! page walks and the shadow TLB, [`ring`] the ring-compression layer, [`exec`] the engines.

pub mod cli;
pub mod cpu;
pub mod exec;
pub mod gdb;
pub mod machine;
pub mod mmu;
pub mod ring;
pub mod testing;
pub mod trace;
