//! The dynamic recompiler: guest blocks from the `decoder` crate -> host code (dynasmrt), code
//! cache, chaining and invalidation.
//!
//! For now this crate owns the ABI shared by compiled code and the interpreter ([`abi`]).
//! Helpers arrive as a table of function pointers filled by the machine crate, so `jit` never
//! imports the machine (DESIGN.md "Crates").

pub mod abi;
