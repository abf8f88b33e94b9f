//! Model-specific registers (Intel SDM Vol. 4, "Architectural MSRs", Table 2-2) backed by
//! [`jit::abi::MsrState`], plus the read-only ones Linux probes. Unknown MSRs and writes of
//! reserved bits raise #GP(0) (SDM Vol. 2B RDMSR/WRMSR).

use super::mem::canonical;
use super::{cpuid, Ctx, Fault, Platform, Res};
use jit::abi::{cr, sreg};

/// MSR indices.
pub mod idx {
    pub const TSC: u32 = 0x10;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    pub const MTRRCAP: u32 = 0xfe;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MCG_CAP: u32 = 0x179;
    pub const MCG_STATUS: u32 = 0x17a;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const DEBUGCTL: u32 = 0x1d9;
    pub const MTRR_PHYS_FIRST: u32 = 0x200;
    pub const MTRR_PHYS_LAST: u32 = 0x20f;
    pub const MTRR_FIX64K: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_FIRST: u32 = 0x268;
    pub const MTRR_FIX4K_LAST: u32 = 0x26f;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// IA32_MTRRCAP: 8 variable ranges, fixed ranges, write-combining (SDM Vol. 3A §11.11.1).
pub const MTRRCAP_VALUE: u64 = 0x508;
/// IA32_ARCH_CAPABILITIES (read-only; Intel SDM Vol. 4 Table 2-2, enumerated by
/// CPUID.(EAX=07H,ECX=0):EDX[29]): the "not affected" bits RDCL_NO (0, no Meltdown), SSB_NO (4),
/// MDS_NO (5), IF_PSCHANGE_MC_NO (6), TAA_NO (8), SBDR_SSDP_NO (13), FBSDP_NO (14), PSDP_NO
/// (15), BHI_NO (20), PBRSB_NO (24), GDS_NO (26), RFDS_NO (27). They are true of rinx: guest
/// code never runs speculatively past a privilege check, a fault or a buffer of another
/// context (every guest access is checked before it is made). Linux then uses no page-table
/// isolation (two CR3 writes per kernel entry) and no VERW on return to user mode.
pub const ARCH_CAPABILITIES_VALUE: u64 = 1 << 0
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27;

/// Bits above MAXPHYADDR in a physical-address field.
fn above_phys() -> u64 {
    !((1u64 << cpuid::PHYS_BITS) - 1)
}

/// EFER bits a WRMSR may set (SDM Vol. 3A §2.2.1, Table 2-1), given the advertised features.
fn efer_writable() -> u64 {
    let mut ok = 0;
    if cpuid::EXT1_EDX & cpuid::bits::edx81::SYSCALL != 0 {
        ok |= cr::EFER_SCE;
    }
    if cpuid::EXT1_EDX & cpuid::bits::edx81::LM != 0 {
        ok |= cr::EFER_LME;
    }
    if cpuid::EXT1_EDX & cpuid::bits::edx81::NX != 0 {
        ok |= cr::EFER_NXE;
    }
    ok
}

fn fixed_index(i: u32) -> Option<usize> {
    match i {
        idx::MTRR_FIX64K => Some(0),
        idx::MTRR_FIX16K_80000 => Some(1),
        idx::MTRR_FIX16K_A0000 => Some(2),
        idx::MTRR_FIX4K_FIRST..=idx::MTRR_FIX4K_LAST => {
            Some((i - idx::MTRR_FIX4K_FIRST) as usize + 3)
        }
        _ => None,
    }
}

/// A memory type byte valid in PAT / MTRRs: UC, WC, WT, WP, WB (and UC- for PAT).
fn valid_type(t: u8, pat: bool) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6) || (pat && t == 7)
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// RDMSR semantics without the CPL check.
    pub fn read_msr(&mut self, i: u32) -> Res<u64> {
        let m = &self.cpu.s.msr;
        Ok(match i {
            idx::TSC => self.plat.tsc().wrapping_add(m.tsc_offset),
            idx::PLATFORM_ID | idx::BIOS_SIGN_ID | idx::MCG_CAP | idx::MCG_STATUS => 0,
            idx::DEBUGCTL => 0,
            // Locked, VMX disabled.
            idx::FEATURE_CONTROL => 1,
            idx::APIC_BASE => m.apic_base,
            idx::MTRRCAP => MTRRCAP_VALUE,
            idx::ARCH_CAPABILITIES => ARCH_CAPABILITIES_VALUE,
            idx::SYSENTER_CS => m.sysenter_cs,
            idx::SYSENTER_ESP => m.sysenter_esp,
            idx::SYSENTER_EIP => m.sysenter_eip,
            idx::MISC_ENABLE => m.misc_enable,
            idx::MTRR_PHYS_FIRST..=idx::MTRR_PHYS_LAST => {
                m.mtrr_var[(i - idx::MTRR_PHYS_FIRST) as usize]
            }
            idx::PAT => m.pat,
            idx::MTRR_DEF_TYPE => m.mtrr_def_type,
            idx::EFER => self.cpu.s.efer,
            idx::STAR => m.star,
            idx::LSTAR => m.lstar,
            idx::CSTAR => m.cstar,
            idx::SFMASK => m.sfmask,
            idx::FS_BASE => self.cpu.s.seg[sreg::FS].base,
            idx::GS_BASE => self.cpu.s.seg[sreg::GS].base,
            idx::KERNEL_GS_BASE => m.kernel_gs_base,
            idx::TSC_AUX => m.tsc_aux,
            _ => match fixed_index(i) {
                Some(k) => m.mtrr_fixed[k],
                None => {
                    log::debug!(target: "rinx::msr", "RDMSR of unknown MSR {i:#x}");
                    return Err(Fault::Gp(0));
                }
            },
        })
    }

    /// WRMSR semantics without the CPL check.
    pub fn write_msr(&mut self, i: u32, v: u64) -> Res<()> {
        let gp = Err(Fault::Gp(0));
        match i {
            idx::TSC => {
                let now = self.plat.tsc();
                self.cpu.s.msr.tsc_offset = v.wrapping_sub(now);
            }
            // Writing 0 before CPUID(1) makes the microcode revision readable; ignored.
            idx::BIOS_SIGN_ID => {}
            idx::MCG_STATUS if v == 0 => {}
            idx::DEBUGCTL if v == 0 => {}
            idx::APIC_BASE => {
                // BSP (8), global enable (11), base (12..MAXPHYADDR); x2APIC (10) unsupported.
                if v & (0x6ff | above_phys()) != 0 {
                    return gp;
                }
                self.cpu.s.msr.apic_base = v;
            }
            idx::SYSENTER_CS => self.cpu.s.msr.sysenter_cs = v & 0xffff_ffff,
            idx::SYSENTER_ESP | idx::SYSENTER_EIP => {
                if !canonical(v) {
                    return gp;
                }
                if i == idx::SYSENTER_ESP {
                    self.cpu.s.msr.sysenter_esp = v;
                } else {
                    self.cpu.s.msr.sysenter_eip = v;
                }
            }
            idx::MISC_ENABLE => self.cpu.s.msr.misc_enable = v,
            idx::MTRR_PHYS_FIRST..=idx::MTRR_PHYS_LAST => {
                let base = (i - idx::MTRR_PHYS_FIRST) % 2 == 0;
                let reserved = if base { 0xf00 } else { 0x7ff } | above_phys();
                if v & reserved != 0 || (base && !valid_type(v as u8, false)) {
                    return gp;
                }
                self.cpu.s.msr.mtrr_var[(i - idx::MTRR_PHYS_FIRST) as usize] = v;
            }
            idx::PAT => {
                if v.to_le_bytes().iter().any(|&t| !valid_type(t, true)) {
                    return gp;
                }
                self.cpu.s.msr.pat = v;
            }
            idx::MTRR_DEF_TYPE => {
                if v & !0xcff != 0 || !valid_type(v as u8, false) {
                    return gp;
                }
                self.cpu.s.msr.mtrr_def_type = v;
            }
            idx::EFER => {
                let old = self.cpu.s.efer;
                // LMA is read-only: the written value is ignored (SDM §2.2.1).
                if v & !(efer_writable() | cr::EFER_LMA) != 0 {
                    return gp;
                }
                // LME may not change while paging is enabled (SDM §9.8.5).
                if self.cpu.paging() && (v ^ old) & cr::EFER_LME != 0 {
                    return gp;
                }
                let new = (v & efer_writable()) | (old & cr::EFER_LMA);
                self.cpu.s.efer = new;
                if (old ^ new) & cr::EFER_NXE != 0 {
                    self.cpu.tlb.flush_all();
                }
            }
            idx::STAR => self.cpu.s.msr.star = v,
            idx::LSTAR | idx::CSTAR | idx::FS_BASE | idx::GS_BASE | idx::KERNEL_GS_BASE => {
                if !canonical(v) {
                    return gp;
                }
                match i {
                    idx::LSTAR => self.cpu.s.msr.lstar = v,
                    idx::CSTAR => self.cpu.s.msr.cstar = v,
                    idx::FS_BASE => self.cpu.s.seg[sreg::FS].base = v,
                    idx::GS_BASE => self.cpu.s.seg[sreg::GS].base = v,
                    _ => self.cpu.s.msr.kernel_gs_base = v,
                }
            }
            idx::SFMASK => {
                if v >> 32 != 0 {
                    return gp;
                }
                self.cpu.s.msr.sfmask = v;
            }
            idx::TSC_AUX => {
                if v >> 32 != 0 {
                    return gp;
                }
                self.cpu.s.msr.tsc_aux = v;
            }
            _ => match fixed_index(i) {
                Some(k) if v.to_le_bytes().iter().all(|&t| valid_type(t, false)) => {
                    self.cpu.s.msr.mtrr_fixed[k] = v;
                }
                _ => {
                    log::debug!(target: "rinx::msr", "WRMSR {i:#x} <- {v:#x} refused");
                    return gp;
                }
            },
        }
        Ok(())
    }

    /// The guest's time-stamp counter: platform time plus the IA32_TSC offset.
    pub fn read_tsc(&mut self) -> u64 {
        self.plat.tsc().wrapping_add(self.cpu.s.msr.tsc_offset)
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::StopReason;
    use crate::testing::{TestMachine, TestMode};

    #[test]
    fn arch_capabilities_is_enumerated_readable_and_read_only() {
        // mov eax, 7; xor ecx, ecx; cpuid; mov edi, edx; mov ecx, 0x10a; rdmsr; hlt
        let code = [
            0xb8, 7, 0, 0, 0, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xd7, 0xb9, 0x0a, 0x01, 0, 0, 0x0f,
            0x32, 0xf4,
        ];
        let mut t = TestMachine::new(TestMode::Long64, &code);
        assert_eq!(t.run(100), StopReason::Halted);
        assert_ne!(t.gpr(7) & (1 << 29), 0, "CPUID.7.0:EDX[29]");
        let v = t.gpr(0) | t.gpr(2) << 32;
        assert_eq!(v, super::ARCH_CAPABILITIES_VALUE);
        assert_eq!(v & 0b10_0001, 0b10_0001, "RDCL_NO and MDS_NO");
        // mov ecx, 0x10a; xor eax, eax; xor edx, edx; wrmsr: #GP(0), and with no IDT a
        // triple fault.
        let code = [
            0xb9, 0x0a, 0x01, 0, 0, 0x31, 0xc0, 0x31, 0xd2, 0x0f, 0x30, 0xf4,
        ];
        let mut t = TestMachine::new(TestMode::Long64, &code);
        assert_eq!(t.run(100), StopReason::TripleFault);
    }
}
