//! Execution engines and the dispatcher loop.

pub mod dcache;
pub mod diag;
pub mod interp;
pub mod jit;
