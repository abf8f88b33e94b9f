//! Boot payloads: Linux direct boot (boot.rst 32/64-bit entry) and the built-in demo guest.

use super::{MachineConfig, MachineError};
use crate::cpu::Cpu;
use crate::mmu::GuestMemory;
use firmware::linux::{BootGdt, SegmentDescriptor};
use firmware::{GuestMemWrite, MemoryLayout};
use jit::abi::{reg, sreg, Segment, TableReg};

/// Lets the firmware crate write boot structures into guest RAM.
pub(super) struct Ram<'a>(pub(super) &'a mut GuestMemory);

impl GuestMemWrite for Ram<'_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), firmware::MemError> {
        self.0
            .write(gpa, data)
            .map_err(|_| firmware::MemError::OutOfRange {
                gpa,
                len: data.len() as u64,
            })
    }
}

/// The hidden descriptor cache for a flat boot descriptor.
fn seg_from(d: &SegmentDescriptor) -> Segment {
    Segment {
        base: u64::from(d.base),
        limit: d.limit,
        selector: d.selector,
        attr: ((d.raw >> 40) as u16) & 0xf0ff,
    }
}

fn load_gdt(cpu: &mut Cpu, gdt: &BootGdt) {
    cpu.s.gdtr = TableReg {
        base: gdt.base,
        limit: u32::from(gdt.limit),
        _pad: 0,
    };
    cpu.s.idtr = TableReg::default();
    cpu.s.seg[sreg::CS] = seg_from(&gdt.code);
    for i in [sreg::DS, sreg::ES, sreg::SS, sreg::FS, sreg::GS] {
        cpu.s.seg[i] = seg_from(&gdt.data);
    }
    cpu.s.cpl = 0;
}

/// Loads the payload named by `cfg` and puts the CPU at its entry point.
pub fn load(
    cpu: &mut Cpu,
    mem: &mut GuestMemory,
    layout: &MemoryLayout,
    cfg: &MachineConfig,
) -> Result<(), MachineError> {
    let Some(kernel) = &cfg.kernel else {
        return crate::machine::demo::load(cpu, mem);
    };
    let acpi = firmware::AcpiConfig::default();
    let tables = firmware::write_pc_tables(&mut Ram(mem), layout, &acpi)
        .map_err(|e| MachineError::Boot(e.to_string()))?;
    // Not a bzImage ("HdrS" at 0x202) but a Multiboot v1 image: boot it the Multiboot way
    // (the initrd, if any, becomes module 0, as with QEMU's -initrd).
    let is_bzimage = kernel.get(0x202..0x206) == Some(&b"HdrS"[..]);
    if !is_bzimage && firmware::MultibootHeader::find(kernel).is_ok() {
        let modules: Vec<firmware::MultibootModule<'_>> = cfg
            .initrd
            .as_deref()
            .map(|d| firmware::MultibootModule {
                data: d,
                cmdline: "",
            })
            .into_iter()
            .collect();
        let plan = firmware::load_multiboot(&mut Ram(mem), layout, kernel, &cfg.cmdline, &modules)
            .map_err(|e| MachineError::Boot(e.to_string()))?;
        load_gdt(cpu, &plan.gdt);
        cpu.s.cr0 = firmware::linux::Entry32::CR0;
        cpu.s.rflags = firmware::linux::Entry32::RFLAGS;
        cpu.s.gpr = [0; 16];
        cpu.s.gpr[reg::RAX] = u64::from(plan.eax);
        cpu.s.gpr[reg::RBX] = u64::from(plan.ebx);
        cpu.s.rip = u64::from(plan.eip);
        cpu.tlb.flush_all();
        log::info!(target: "rinx::boot", "Multiboot image at {:#x?}, entry {:#x}", plan.image, plan.eip);
        return Ok(());
    }
    let plan = firmware::load_linux(
        &mut Ram(mem),
        layout,
        kernel,
        cfg.initrd.as_deref(),
        &cfg.cmdline,
        &firmware::LinuxBootConfig {
            acpi_rsdp_addr: Some(tables.acpi.rsdp),
            ..Default::default()
        },
    )
    .map_err(|e| MachineError::Boot(e.to_string()))?;
    match &plan.entry64 {
        Some(e) => {
            load_gdt(cpu, &e.gdt);
            cpu.s.cr0 = firmware::linux::Entry64::CR0;
            cpu.s.cr4 = firmware::linux::Entry64::CR4;
            cpu.s.efer = firmware::linux::Entry64::EFER;
            cpu.s.cr3 = e.cr3;
            cpu.s.rflags = firmware::linux::Entry64::RFLAGS;
            cpu.s.gpr = [0; 16];
            cpu.s.gpr[reg::RSI] = e.rsi;
            cpu.s.rip = e.rip;
        }
        None => {
            let e = &plan.entry32;
            load_gdt(cpu, &e.gdt);
            cpu.s.cr0 = firmware::linux::Entry32::CR0;
            cpu.s.rflags = firmware::linux::Entry32::RFLAGS;
            cpu.s.gpr = [0; 16];
            cpu.s.gpr[reg::RSI] = u64::from(e.esi);
            cpu.s.rip = u64::from(e.eip);
        }
    }
    cpu.tlb.flush_all();
    log::info!(
        target: "rinx::boot",
        "Linux boot protocol {:#x}: kernel at {:#x}, boot_params at {:#x}, initrd {:?}, entry {:#x}",
        plan.header.version,
        plan.kernel_addr,
        plan.boot_params_addr,
        plan.initrd,
        cpu.s.rip
    );
    Ok(())
}
