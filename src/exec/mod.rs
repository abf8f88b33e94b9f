//! Execution engines and the dispatcher loop.

pub mod interp;
pub mod diag;
