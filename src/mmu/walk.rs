//! Guest page walks: linear (VA) -> guest physical (PA), Intel SDM Vol. 3A chapter 4.
//!
//! Supports 32-bit paging (with PSE 4 MiB pages and PSE-36), PAE paging (2 MiB pages) and
//! 4-level paging (2 MiB pages; 1 GiB pages are not advertised so PS in a PDPTE is reserved).
//! Accessed and dirty bits are set as the walk succeeds (§4.8).

use super::phys::GuestMemory;
use jit::abi::{cr, CpuState};

/// MAXPHYADDR reported by CPUID.80000008H:EAX[7:0] (bits).
pub const MAX_PHYS_BITS: u32 = 40;

/// The kind of access being translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// #PF error code bits (Intel SDM Vol. 3A §4.7, Figure 4-12).
pub mod pf {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const ID: u32 = 1 << 4;
}

/// A page fault: the linear address for CR2 and the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    pub addr: u64,
    pub code: u32,
}

/// One level of a successful or failed walk, for traces (level 4 = PML4 ... 1 = PT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStep {
    pub level: u8,
    /// Guest physical address of the entry.
    pub entry_addr: u64,
    pub entry: u64,
}

/// The result of a successful walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Guest physical address of the 4 KiB page that holds the linear address.
    pub pa_page: u64,
    /// Writable at every level (R/W = 1 everywhere).
    pub writable: bool,
    /// User-accessible at every level (U/S = 1 everywhere).
    pub user: bool,
    /// Execute-disable at some level (only when EFER.NXE = 1).
    pub nx: bool,
    /// Global page (G = 1 in the final entry and CR4.PGE = 1).
    pub global: bool,
    /// The final entry's dirty bit is set (so a later write needs no walk).
    pub dirty: bool,
    /// Size in bytes of the page that maps the address (4 KiB, 2 MiB, 4 MiB).
    pub page_size: u64,
}

/// Who performs the access, for the permission checks of §4.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    /// CPL = 3 and not an implicit supervisor access (descriptor tables, TSS...).
    pub user: bool,
    /// EFLAGS.AC, for SMAP.
    pub ac: bool,
}

const ADDR_MASK_40: u64 = ((1u64 << MAX_PHYS_BITS) - 1) & !0xfff;

fn read_entry(mem: &GuestMemory, addr: u64, size: usize) -> u64 {
    // Page-table entries outside RAM read as 0 (not present) rather than dispatching to MMIO.
    mem.read_le(addr, size).unwrap_or(0)
}

fn set_bits(mem: &mut GuestMemory, addr: u64, size: usize, old: u64, bits: u64) {
    if old & bits != bits {
        let _ = mem.write_le(addr, size, old | bits);
    }
}

/// Checks the permissions of a translation against an access (Intel SDM Vol. 3A §4.6).
/// Returns false on a violation.
pub fn permitted(s: &CpuState, t: &Translation, access: Access, who: Requester) -> bool {
    let wp = s.cr0 & cr::CR0_WP != 0;
    match access {
        Access::Execute => {
            if t.nx {
                return false;
            }
            if who.user {
                if !t.user {
                    return false;
                }
            } else if t.user && s.cr4 & cr::CR4_SMEP != 0 {
                return false;
            }
        }
        Access::Read | Access::Write => {
            if who.user {
                if !t.user || (access == Access::Write && !t.writable) {
                    return false;
                }
            } else {
                if t.user && s.cr4 & cr::CR4_SMAP != 0 && !who.ac {
                    return false;
                }
                if access == Access::Write && !t.writable && wp {
                    return false;
                }
            }
        }
    }
    true
}

/// The error code bits that describe the access itself (W, U, I/D).
pub fn access_code(s: &CpuState, access: Access, who: Requester) -> u32 {
    let mut code = 0;
    if access == Access::Write {
        code |= pf::W;
    }
    if who.user {
        code |= pf::U;
    }
    if access == Access::Execute
        && (s.efer & cr::EFER_NXE != 0 || s.cr4 & cr::CR4_SMEP != 0)
        && s.cr4 & cr::CR4_PAE != 0
    {
        code |= pf::ID;
    }
    code
}

/// Walks the guest page tables for linear address `la` (CR0.PG must be 1), checks permissions,
/// and sets accessed/dirty bits. `trace` receives each level's entry.
pub fn walk(
    s: &CpuState,
    mem: &mut GuestMemory,
    la: u64,
    access: Access,
    who: Requester,
    trace: Option<&mut Vec<WalkStep>>,
) -> Result<Translation, PageFault> {
    let Found {
        t,
        visited,
        nvisited,
        last_entry,
        esize,
    } = lookup(s, mem, la, access, who, trace)?;
    if !permitted(s, &t, access, who) {
        return Err(PageFault {
            addr: la,
            code: access_code(s, access, who) | pf::P,
        });
    }
    for &(addr, e) in &visited[..nvisited] {
        if addr != last_entry.0 {
            set_bits(mem, addr, esize, e, 0x20);
        }
    }
    let ad = if access == Access::Write { 0x60 } else { 0x20 };
    set_bits(mem, last_entry.0, esize, last_entry.1, ad);
    Ok(t)
}

/// A debugger's view of a linear address: the guest physical address the guest's page tables
/// map `la` to, whatever the page's permissions, with no side effect (no accessed / dirty bit
/// is set, the TLB is not consulted or filled). `None` if `la` is not mapped. With paging off,
/// the linear address is the physical address (wrapped at 4 GiB).
pub fn probe(s: &CpuState, mem: &GuestMemory, la: u64) -> Option<u64> {
    if s.cr0 & cr::CR0_PG == 0 {
        return Some(la & 0xffff_ffff);
    }
    let who = Requester {
        user: false,
        ac: true,
    };
    let f = lookup(s, mem, la, Access::Read, who, None).ok()?;
    Some(f.t.pa_page | (la & 0xfff))
}

/// [`probe`] with the entries it read (top level first) and the whole translation or the page
/// fault a supervisor read would get, for debuggers (`monitor walk`): no accessed / dirty bit
/// is set, no TLB is touched.
pub fn probe_steps(
    s: &CpuState,
    mem: &GuestMemory,
    la: u64,
    steps: &mut Vec<WalkStep>,
) -> Result<Translation, PageFault> {
    let who = Requester {
        user: false,
        ac: true,
    };
    lookup(s, mem, la, Access::Read, who, Some(steps)).map(|f| f.t)
}

/// What [`lookup`] found: the translation and the entries to mark accessed / dirty.
struct Found {
    t: Translation,
    /// Non-final entries visited (address, value); the first `nvisited` are valid.
    visited: [(u64, u64); 4],
    nvisited: usize,
    /// The entry that mapped the page (address, value).
    last_entry: (u64, u64),
    /// Entry size in bytes (4 or 8).
    esize: usize,
}

/// The read-only part of a walk: the translation of `la` and the entries it went through,
/// before the permission check of §4.6 and without setting any bit.
fn lookup(
    s: &CpuState,
    mem: &GuestMemory,
    la: u64,
    access: Access,
    who: Requester,
    mut trace: Option<&mut Vec<WalkStep>>,
) -> Result<Found, PageFault> {
    let base_code = access_code(s, access, who);
    let fault = |code: u32| PageFault {
        addr: la,
        code: base_code | code,
    };
    let pae = s.cr4 & cr::CR4_PAE != 0;
    let nxe = s.efer & cr::EFER_NXE != 0;
    let pge = s.cr4 & cr::CR4_PGE != 0;
    let mut writable = true;
    let mut user = true;
    let mut nx = false;
    // Entries visited, to set A (and D) only once the whole walk succeeded.
    let mut visited: [(u64, u64); 4] = [(0, 0); 4];
    let mut nvisited = 0;
    let (pa_page, page_size, last_entry, esize);

    if !pae {
        // 32-bit paging, §4.3.
        let la = la & 0xffff_ffff;
        let pde_addr = (s.cr3 & 0xffff_f000) | ((la >> 22) << 2);
        let pde = read_entry(mem, pde_addr, 4);
        if let Some(t) = trace.as_deref_mut() {
            t.push(WalkStep {
                level: 2,
                entry_addr: pde_addr,
                entry: pde,
            });
        }
        if pde & 1 == 0 {
            return Err(fault(0));
        }
        writable &= pde & 2 != 0;
        user &= pde & 4 != 0;
        visited[0] = (pde_addr, pde);
        nvisited = 1;
        if pde & 0x80 != 0 && s.cr4 & cr::CR4_PSE != 0 {
            // 4 MiB page; bits 20:13 hold PA bits 39:32 (PSE-36), bit 21 reserved.
            if pde & (1 << 21) != 0 {
                return Err(fault(pf::P | pf::RSVD));
            }
            let hi = ((pde >> 13) & 0xff) << 32;
            let base = (pde & 0xffc0_0000) | hi;
            pa_page = base | (la & 0x3f_f000);
            page_size = 4 << 20;
            last_entry = (pde_addr, pde);
            esize = 4;
        } else {
            let pte_addr = (pde & 0xffff_f000) | (((la >> 12) & 0x3ff) << 2);
            let pte = read_entry(mem, pte_addr, 4);
            if let Some(t) = trace.as_deref_mut() {
                t.push(WalkStep {
                    level: 1,
                    entry_addr: pte_addr,
                    entry: pte,
                });
            }
            if pte & 1 == 0 {
                return Err(fault(0));
            }
            writable &= pte & 2 != 0;
            user &= pte & 4 != 0;
            pa_page = pte & 0xffff_f000;
            page_size = 4096;
            last_entry = (pte_addr, pte);
            esize = 4;
        }
    } else {
        // PAE (§4.4) or 4-level (§4.5) paging: 8-byte entries.
        let lma = s.efer & cr::EFER_LMA != 0;
        let rsvd_hi = !((1u64 << MAX_PHYS_BITS) - 1) & !(1u64 << 63) & 0x7fff_ffff_ffff_ffff;
        let nx_rsvd = if nxe { 0 } else { 1u64 << 63 };
        let (mut table, mut level) = if lma {
            (s.cr3 & ADDR_MASK_40, 4u8)
        } else {
            // The PDPT: 4 entries at CR3[31:5]; P is the only permission-less bit there.
            let pdpte_addr = (s.cr3 & 0xffff_ffe0) | (((la >> 30) & 3) << 3);
            let pdpte = read_entry(mem, pdpte_addr, 8);
            if let Some(t) = trace.as_deref_mut() {
                t.push(WalkStep {
                    level: 3,
                    entry_addr: pdpte_addr,
                    entry: pdpte,
                });
            }
            if pdpte & 1 == 0 {
                return Err(fault(0));
            }
            if pdpte & (rsvd_hi | 0x1e6 | (1 << 63)) != 0 {
                return Err(fault(pf::P | pf::RSVD));
            }
            (pdpte & ADDR_MASK_40, 2u8)
        };
        loop {
            let shift = 12 + 9 * (u32::from(level) - 1);
            let e_addr = table | (((la >> shift) & 0x1ff) << 3);
            let e = read_entry(mem, e_addr, 8);
            if let Some(t) = trace.as_deref_mut() {
                t.push(WalkStep {
                    level,
                    entry_addr: e_addr,
                    entry: e,
                });
            }
            if e & 1 == 0 {
                return Err(fault(0));
            }
            let ps = e & 0x80 != 0;
            let mut rsvd = e & (rsvd_hi | nx_rsvd);
            if level == 4 || (level == 3 && lma) {
                // PS is reserved in PML4Es, and in PDPTEs since 1 GiB pages are not advertised.
                rsvd |= e & 0x80;
            }
            if level == 2 && ps {
                rsvd |= e & 0x1f_e000; // bits 20:13 of a 2 MiB PDE
            }
            if rsvd != 0 {
                return Err(fault(pf::P | pf::RSVD));
            }
            writable &= e & 2 != 0;
            user &= e & 4 != 0;
            nx |= nxe && e & (1 << 63) != 0;
            if level == 1 || (level == 2 && ps) {
                if level == 2 {
                    pa_page = (e & ADDR_MASK_40 & !0x1f_ffff) | (la & 0x1f_f000);
                    page_size = 2 << 20;
                } else {
                    pa_page = e & ADDR_MASK_40;
                    page_size = 4096;
                }
                last_entry = (e_addr, e);
                esize = 8;
                break;
            }
            visited[nvisited] = (e_addr, e);
            nvisited += 1;
            table = e & ADDR_MASK_40;
            level -= 1;
        }
    }

    let t = Translation {
        pa_page,
        writable,
        user,
        nx,
        global: pge && last_entry.1 & 0x100 != 0,
        dirty: last_entry.1 & 0x40 != 0 || access == Access::Write,
        page_size,
    };
    Ok(Found {
        t,
        visited,
        nvisited,
        last_entry,
        esize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup() -> Requester {
        Requester {
            user: false,
            ac: false,
        }
    }

    #[test]
    fn two_level_walk_sets_accessed_and_dirty() {
        let mut mem = GuestMemory::flat(0x40_0000).unwrap();
        let mut s = CpuState::reset();
        s.cr0 |= cr::CR0_PG | cr::CR0_PE;
        s.cr3 = 0x1000;
        mem.write_le(0x1000 + 4, 4, 0x2000 | 0x7).unwrap(); // PDE for 4M..8M
        mem.write_le(0x2000 + 4 * 5, 4, 0x3000 | 0x3).unwrap(); // PTE for page 5: supervisor RW
        let t = walk(&s, &mut mem, 0x40_5123, Access::Write, sup(), None).unwrap();
        assert_eq!(t.pa_page, 0x3000);
        assert_eq!(mem.read_le(0x2014, 4).unwrap(), 0x3063);
        assert_eq!(mem.read_le(0x1004, 4).unwrap() & 0x20, 0x20);
        // User read of a supervisor page: protection fault with P|U.
        let e = walk(
            &s,
            &mut mem,
            0x40_5123,
            Access::Read,
            Requester {
                user: true,
                ac: false,
            },
            None,
        )
        .unwrap_err();
        assert_eq!(
            e,
            PageFault {
                addr: 0x40_5123,
                code: pf::P | pf::U
            }
        );
        // Not present PTE: code 0 (+W).
        let e = walk(&s, &mut mem, 0x40_6000, Access::Write, sup(), None).unwrap_err();
        assert_eq!(e.code, pf::W);
    }

    #[test]
    fn four_level_walk_with_2m_page_and_nx() {
        let mut mem = GuestMemory::flat(0x40_0000).unwrap();
        let mut s = CpuState::reset();
        s.cr0 |= cr::CR0_PG | cr::CR0_PE;
        s.cr4 |= cr::CR4_PAE;
        s.efer |= cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
        s.cr3 = 0x1000;
        mem.write_le(0x1000, 8, 0x2000 | 3).unwrap();
        mem.write_le(0x2000, 8, 0x3000 | 3).unwrap();
        mem.write_le(0x3000 + 8, 8, 0x20_0000 | 0x83 | (1 << 63))
            .unwrap();
        let t = walk(&s, &mut mem, 0x2f_1234, Access::Read, sup(), None).unwrap();
        assert_eq!(t.pa_page, 0x2f_1000);
        assert_eq!(t.page_size, 2 << 20);
        let e = walk(&s, &mut mem, 0x2f_1234, Access::Execute, sup(), None).unwrap_err();
        assert_eq!(e.code, pf::P | pf::ID);
        // NX with EFER.NXE = 0 is a reserved bit.
        s.efer &= !cr::EFER_NXE;
        let e = walk(&s, &mut mem, 0x2f_1234, Access::Read, sup(), None).unwrap_err();
        assert_eq!(e.code, pf::P | pf::RSVD);
    }
}
