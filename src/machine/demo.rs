//! The built-in demo guest, booted by `rinx run` without `--kernel`.
//!
//! The guest program itself (real mode -> protected mode -> paging -> long mode -> ring 3 ->
//! system calls -> page fault -> timer interrupts -> ACPI power-off, narrated on COM1) is
//! assembled by [`firmware::demo`]; this module copies it into RAM and puts the CPU where a
//! BIOS would leave it before jumping to a boot sector.

use super::boot::Ram;
use super::MachineError;
use crate::cpu::Cpu;
use crate::mmu::GuestMemory;
use jit::abi::{reg, sreg, Segment};

/// Loads the demo guest and puts the CPU at its entry point (real mode).
///
/// The CPU keeps its reset state (Intel SDM Vol. 3A Table 9-1: real mode, CR0 = 0x60000010,
/// IF = 0) except for CS:IP and SS:SP, which follow [`firmware::demo::RealModeEntry`]; all
/// segment caches are real-mode ones (base = selector << 4, limit 0xFFFF).
pub fn load(cpu: &mut Cpu, mem: &mut GuestMemory) -> Result<(), MachineError> {
    let entry = firmware::demo::load(&mut Ram(mem))
        .map_err(|e| MachineError::Boot(format!("demo guest: {e}")))?;
    cpu.s.seg[sreg::CS] = Segment {
        // A code segment (type 0xB: execute/read, accessed), unlike the data-segment
        // attributes `real_mode` gives.
        attr: Segment::ATTR_P | Segment::ATTR_S | 0xb,
        ..Segment::real_mode(entry.cs, 0xffff)
    };
    for i in [sreg::DS, sreg::ES, sreg::FS, sreg::GS] {
        cpu.s.seg[i] = Segment::real_mode(0, 0xffff);
    }
    cpu.s.seg[sreg::SS] = Segment::real_mode(entry.ss, 0xffff);
    cpu.s.rip = u64::from(entry.ip);
    cpu.s.gpr[reg::RSP] = u64::from(entry.sp);
    cpu.tlb.flush_all();
    log::info!(
        target: "rinx::boot",
        "demo guest: entry {:04x}:{:04x}, stack {:04x}:{:04x}",
        entry.cs,
        entry.ip,
        entry.ss,
        entry.sp
    );
    Ok(())
}
