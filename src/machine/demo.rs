//! The built-in demo guest, booted by `rinx run` without `--kernel`.

use super::MachineError;
use crate::cpu::Cpu;
use crate::mmu::GuestMemory;

/// Loads the demo guest and puts the CPU at its entry point (real mode).
pub fn load(_cpu: &mut Cpu, _mem: &mut GuestMemory) -> Result<(), MachineError> {
    Err(MachineError::Boot(
        "the built-in demo guest is not available yet; use --kernel".into(),
    ))
}
