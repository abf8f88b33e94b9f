//! Execution engines and the dispatcher loop.

pub mod interp;
