//! Execution engines and the dispatcher loop.

pub mod diag;
pub mod interp;
