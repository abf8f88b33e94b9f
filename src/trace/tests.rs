//! Unit tests of the tracer (the guest-level tests are in tests/trace.rs).
