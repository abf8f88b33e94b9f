//! RDMSR/WRMSR, RDTSC/RDTSCP, RDPMC and CPUID (SDM Vol. 2 instruction pages). The MSR
//! semantics live in `cpu::msr`, the feature table in `cpu::cpuid`.

use super::require_cpl0;
use crate::cpu::{cpuid as table, Ctx, Fault, Platform, Res};
use jit::abi::{cr, reg};

fn edx_eax<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, v: u64) {
    ctx.set_gpr(reg::RAX, 4, v & 0xffff_ffff);
    ctx.set_gpr(reg::RDX, 4, v >> 32);
}

/// RDMSR: EDX:EAX = MSR[ECX]; CPL 0 only; unknown MSR #GP(0).
pub fn rdmsr<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    require_cpl0(ctx)?;
    let i = ctx.gpr(reg::RCX, 4) as u32;
    let v = ctx.read_msr(i)?;
    edx_eax(ctx, v);
    Ok(())
}

/// WRMSR: MSR[ECX] = EDX:EAX; CPL 0 only.
pub fn wrmsr<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    require_cpl0(ctx)?;
    let i = ctx.gpr(reg::RCX, 4) as u32;
    let v = (ctx.gpr(reg::RDX, 4) << 32) | ctx.gpr(reg::RAX, 4);
    ctx.write_msr(i, v)
}

/// RDTSC / RDTSCP (ECX = IA32_TSC_AUX): #GP(0) at CPL > 0 when CR4.TSD = 1.
pub fn rdtsc<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, rdtscp: bool) -> Res<()> {
    if ctx.cpu.s.cr4 & cr::CR4_TSD != 0 {
        require_cpl0(ctx)?;
    }
    let t = ctx.read_tsc();
    edx_eax(ctx, t);
    if rdtscp {
        let aux = ctx.cpu.s.msr.tsc_aux & 0xffff_ffff;
        ctx.set_gpr(reg::RCX, 4, aux);
    }
    Ok(())
}

/// RDPMC: rinx has no performance counters, so every counter index is invalid: #GP(0)
/// (also at CPL > 0 with CR4.PCE = 0).
pub fn rdpmc<P: Platform + ?Sized>(_ctx: &mut Ctx<'_, P>) -> Res<()> {
    Err(Fault::Gp(0))
}

/// CPUID: EAX/EBX/ECX/EDX from the table for leaf EAX, subleaf ECX (upper halves cleared).
pub fn cpuid<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>) -> Res<()> {
    let leaf = ctx.gpr(reg::RAX, 4) as u32;
    let sub = ctx.gpr(reg::RCX, 4) as u32;
    let r = table::cpuid(leaf, sub, 0);
    for (i, v) in [reg::RAX, reg::RBX, reg::RCX, reg::RDX].into_iter().zip(r) {
        ctx.set_gpr(i, 4, u64::from(v));
    }
    Ok(())
}
