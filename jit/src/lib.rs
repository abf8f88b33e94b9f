//! The dynamic recompiler: guest blocks from the `decoder` crate -> host code (dynasmrt), code
//! cache and invalidation bookkeeping.
//!
//! Layers (DESIGN.md "Execution"):
//! - [`abi`]: the `#[repr(C)]` CPU state and the calling convention of compiled blocks.
//! - [`ir`]: the host-independent front end: a decoded guest block lowered to a short list of
//!   operations (native register ALU ops, calls of the interpreter's semantic function for one
//!   guest instruction, and a block exit). A new host backend consumes only this IR.
//! - [`x64`] (x86-64 hosts only): the dynasmrt backend.
//! - [`exec_mem`] / [`cache`]: W^X executable memory and the bounded code cache.
//!
//! Helpers arrive as a function pointer in the [`abi::JitEnv`] filled by the machine crate, so
//! `jit` never imports the machine (DESIGN.md "Crates").

pub mod abi;
pub mod cache;
pub mod exec_mem;
pub mod ir;
#[cfg(target_arch = "x86_64")]
pub mod x64;

/// True when this host has a JIT backend (x86-64); other hosts run the interpreter.
pub const HOST_SUPPORTED: bool = cfg!(target_arch = "x86_64");
