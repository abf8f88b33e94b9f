//! x87 FPU instructions (Intel SDM Vol. 1 chapter 8).
//!
//! Registers are kept by physical index in [`jit::abi::FpuState`] (`st[i]` holds the 80-bit
//! value in its first 10 bytes); ST(i) is physical register (TOP + i) mod 8 (§8.1.2). The full
//! 16-bit tag word is maintained (§8.1.7). Arithmetic goes through [`sf`], the soft-float core
//! also used by SSE.

pub mod consts;
pub mod sf;
pub mod state;
pub mod transc;
pub mod x87;

use super::{Ctx, Fault, Platform, Res};
use iced_x86::Instruction;
use jit::abi::{cr, FpuState};

pub use sf::{DE, IE, OE, PE, UE, ZE};

/// Stack fault (FSW.SF, §8.1.3.1).
pub const SF: u16 = 0x40;
/// Exception summary status (FSW.ES).
pub const ES: u16 = 0x80;
/// Condition code C0.
pub const C0: u16 = 0x100;
/// Condition code C1.
pub const C1: u16 = 0x200;
/// Condition code C2.
pub const C2: u16 = 0x400;
/// Condition code C3.
pub const C3: u16 = 0x4000;
/// FPU busy (FSW.B), mirrors ES.
pub const B: u16 = 0x8000;

/// Tag values (§8.1.7).
pub const TAG_VALID: u16 = 0;
/// Tag: zero.
pub const TAG_ZERO: u16 = 1;
/// Tag: NaN, infinity, denormal or unsupported.
pub const TAG_SPECIAL: u16 = 2;
/// Tag: empty.
pub const TAG_EMPTY: u16 = 3;

/// Reads the 80-bit value of a physical register slot.
#[inline]
pub fn slot_get(s: &[u8; 16]) -> u128 {
    let mut b = [0u8; 16];
    b[..10].copy_from_slice(&s[..10]);
    u128::from_le_bytes(b)
}

/// Writes an 80-bit value to a physical register slot (bytes 10..16 are cleared).
#[inline]
pub fn slot_set(s: &mut [u8; 16], v: u128) {
    let b = v.to_le_bytes();
    s[..10].copy_from_slice(&b[..10]);
    s[10..].fill(0);
}

/// The tag an 80-bit value deserves (§8.1.7, FXRSTOR reconstruction §10.5.1.1 / Table 10-2).
pub fn tag_of(v: u128) -> u16 {
    let e = (v >> 64) as u16 & 0x7fff;
    let m = v as u64;
    if e == 0x7fff {
        TAG_SPECIAL
    } else if e == 0 {
        if m == 0 {
            TAG_ZERO
        } else {
            TAG_SPECIAL
        }
    } else if m >> 63 == 0 {
        TAG_SPECIAL
    } else {
        TAG_VALID
    }
}

/// Stack and status helpers over the architectural x87 state.
pub trait FpuExt {
    /// FSW.TOP.
    fn top(&self) -> usize;
    /// Sets FSW.TOP.
    fn set_top(&mut self, t: usize);
    /// Physical register number of ST(i).
    fn phys(&self, i: usize) -> usize;
    /// Tag of physical register `p`.
    fn tag(&self, p: usize) -> u16;
    /// Sets the tag of physical register `p`.
    fn set_tag(&mut self, p: usize, t: u16);
    /// True when ST(i) is empty.
    fn st_empty(&self, i: usize) -> bool;
    /// The value of ST(i).
    fn st(&self, i: usize) -> u128;
    /// Writes ST(i) and its tag.
    fn set_st(&mut self, i: usize, v: u128);
    /// Decrements TOP and writes ST(0).
    fn push(&mut self, v: u128);
    /// Marks ST(0) empty and increments TOP.
    fn pop(&mut self);
    /// Records `flags` (IE..PE, plus SF) in FSW; sets ES and B when any is unmasked. Returns
    /// true when the destination may be written (no unmasked IE, DE or ZE, §8.5).
    fn raise(&mut self, flags: u32) -> bool;
    /// Sets C0..C3 from a 4-bit value (C0 = bit 0, C1 = bit 1, C2 = bit 2, C3 = bit 3).
    fn set_cc(&mut self, cc: u16);
}

impl FpuExt for FpuState {
    #[inline]
    fn top(&self) -> usize {
        usize::from((self.fsw >> 11) & 7)
    }
    #[inline]
    fn set_top(&mut self, t: usize) {
        self.fsw = (self.fsw & !0x3800) | (((t & 7) as u16) << 11);
    }
    #[inline]
    fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }
    #[inline]
    fn tag(&self, p: usize) -> u16 {
        (self.ftw >> (2 * p)) & 3
    }
    #[inline]
    fn set_tag(&mut self, p: usize, t: u16) {
        self.ftw = (self.ftw & !(3 << (2 * p))) | (t << (2 * p));
    }
    fn st_empty(&self, i: usize) -> bool {
        self.tag(self.phys(i)) == TAG_EMPTY
    }
    fn st(&self, i: usize) -> u128 {
        slot_get(&self.st[self.phys(i)])
    }
    fn set_st(&mut self, i: usize, v: u128) {
        let p = self.phys(i);
        slot_set(&mut self.st[p], v);
        self.set_tag(p, tag_of(v));
    }
    fn push(&mut self, v: u128) {
        let t = (self.top() + 7) & 7;
        self.set_top(t);
        self.set_st(0, v);
    }
    fn pop(&mut self) {
        let p = self.phys(0);
        self.set_tag(p, TAG_EMPTY);
        self.set_top(self.top() + 1);
    }
    fn raise(&mut self, flags: u32) -> bool {
        // IE and ZE take precedence over DE (observed on hardware).
        let flags = if flags & (IE | ZE) != 0 {
            flags & !DE
        } else {
            flags
        };
        self.fsw |= (flags & 0x7f) as u16;
        let unmasked = flags & !u32::from(self.fcw) & 0x3f;
        if unmasked != 0 {
            self.fsw |= ES | B;
        }
        unmasked & (IE | DE | ZE) == 0
    }
    fn set_cc(&mut self, cc: u16) {
        self.fsw &= !(C0 | C1 | C2 | C3);
        if cc & 1 != 0 {
            self.fsw |= C0;
        }
        if cc & 2 != 0 {
            self.fsw |= C1;
        }
        if cc & 4 != 0 {
            self.fsw |= C2;
        }
        if cc & 8 != 0 {
            self.fsw |= C3;
        }
    }
}

/// The soft-float environment of the x87 control word: RC (bits 10-11), PC (bits 8-9,
/// §8.1.5.2: 00 = 24 bits, 10 = 53 bits, 11 = 64 bits; 01 reserved, treated as 64).
pub fn env_of(fcw: u16) -> sf::Env {
    sf::Env {
        rc: sf::Rc::from_bits(u32::from(fcw >> 10)),
        prec: match (fcw >> 8) & 3 {
            0 => 24,
            2 => 53,
            _ => 64,
        },
        ftz: false,
        daz: false,
        um: fcw & 0x10 != 0,
    }
}

/// Device-not-available and pending-exception checks common to x87 instructions
/// (SDM Vol. 1 §8.6, Vol. 3A §2.5 CR0.EM/TS/NE). `waiting` is false for the FN* control
/// instructions, which do not check for pending unmasked exceptions.
pub fn check_x87<P: Platform + ?Sized>(ctx: &Ctx<'_, P>, waiting: bool) -> Res<()> {
    let cr0 = ctx.cpu.s.cr0;
    if cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Fault::Nm);
    }
    if waiting && ctx.cpu.s.fpu.fsw & ES != 0 {
        // With CR0.NE = 0 the legacy FERR#/IGNNE# path would signal IRQ 13 externally;
        // rinx reports #MF in both cases (documented deviation).
        return Err(Fault::Mf);
    }
    Ok(())
}

/// Executes `insn` if it is an x87 instruction this module implements.
pub fn exec<P: Platform + ?Sized>(ctx: &mut Ctx<'_, P>, insn: &Instruction) -> Option<Res<()>> {
    x87::exec(ctx, insn)
}

#[cfg(test)]
mod tests;
