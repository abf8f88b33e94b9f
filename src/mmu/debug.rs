//! Guest memory as a debugger sees it: linear addresses translated through the guest's own page
//! tables by [`walk::probe`], so reading or writing has no side effect on the guest (no accessed
//! or dirty bit is set, the shadow TLB is neither consulted nor filled, no fault is raised).
//! Only RAM is reachable: MMIO reads have side effects on devices, so device memory reads as
//! unmapped.

use super::walk;
use super::GuestMemory;
use jit::abi::{cr, CpuState};

/// True if `la` can be translated in the CPU's current mode: canonical in IA-32e mode (Intel
/// SDM Vol. 1 §3.3.7.1), below 4 GiB otherwise.
fn valid_linear(s: &CpuState, la: u64) -> bool {
    if s.efer & cr::EFER_LMA != 0 {
        ((la as i64) << 16 >> 16) as u64 == la
    } else {
        la <= 0xffff_ffff
    }
}

/// Calls `f(pa, offset_in_buf, len)` for each page-sized piece of `len` bytes at linear `la`,
/// stopping at the first byte that is unmapped or not RAM. Returns the bytes covered.
fn for_each_piece(
    s: &CpuState,
    mem: &GuestMemory,
    la: u64,
    len: usize,
    mut f: impl FnMut(u64, usize, usize),
) -> usize {
    let mut done = 0;
    while done < len {
        let cur = la.wrapping_add(done as u64);
        if !valid_linear(s, cur) {
            break;
        }
        let Some(pa) = walk::probe(s, mem, cur) else {
            break;
        };
        let n = ((0x1000 - (cur & 0xfff)) as usize).min(len - done);
        if mem.page(pa & !0xfff).is_none() {
            break;
        }
        f(pa, done, n);
        done += n;
    }
    done
}

/// Reads guest memory at linear address `la` into `buf`, through the guest's page tables,
/// without side effects. Returns the number of bytes read: fewer than `buf.len()` when the
/// range runs into an unmapped page or non-RAM memory (0 if `la` itself is unreadable).
pub fn peek(s: &CpuState, mem: &GuestMemory, la: u64, buf: &mut [u8]) -> usize {
    let mut pieces = Vec::new();
    let n = for_each_piece(s, mem, la, buf.len(), |pa, off, len| {
        pieces.push((pa, off, len))
    });
    for (pa, off, len) in pieces {
        if mem.read(pa, &mut buf[off..off + len]).is_err() {
            return off;
        }
    }
    n
}

/// Writes `data` to guest memory at linear address `la` through the guest's page tables,
/// whatever the page permissions (a debugger may patch code), without touching accessed /
/// dirty bits. `written_page(pa_page)` is called for every guest physical page written, so the
/// caller can drop decoded instructions cached from it. Returns the bytes written (the write
/// stops at the first unmapped or non-RAM byte; nothing is written past it).
pub fn poke(
    s: &CpuState,
    mem: &mut GuestMemory,
    la: u64,
    data: &[u8],
    mut written_page: impl FnMut(u64),
) -> usize {
    let mut pieces = Vec::new();
    for_each_piece(s, mem, la, data.len(), |pa, off, len| {
        pieces.push((pa, off, len))
    });
    let mut done = 0;
    for (pa, off, len) in pieces {
        if mem.write(pa, &data[off..off + len]).is_err() {
            break;
        }
        written_page(pa & !0xfff);
        done = off + len;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestMachine, TestMode};

    #[test]
    fn peek_and_poke_follow_the_page_tables_without_setting_accessed_bits() {
        let mut t = TestMachine::new(TestMode::Long64, &[0xf4]);
        // Remap linear 0x40_0000 (PD entry 2) to physical 0x60_0000, accessed bit clear.
        let pd = crate::testing::PAGE_TABLES + 0x2000;
        t.mem.write_le(pd + 2 * 8, 8, 0x60_0000 | 0x83).unwrap();
        t.mem.write(0x60_0010, b"rinx").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(peek(&t.cpu.s, &t.mem, 0x40_0010, &mut buf), 4);
        assert_eq!(&buf, b"rinx");
        assert_eq!(
            t.mem.read_le(pd + 16, 8).unwrap() & 0x20,
            0,
            "A bit untouched"
        );
        let mut pages = Vec::new();
        assert_eq!(
            poke(&t.cpu.s, &mut t.mem, 0x40_0011, b"IN", |p| pages.push(p)),
            2
        );
        assert_eq!(pages, vec![0x60_0000]);
        assert_eq!(
            t.mem.read_le(0x60_0010, 4).unwrap(),
            u64::from_le_bytes(*b"rINx\0\0\0\0")
        );
        // Not present (PML4 entry 1), and non-canonical: nothing read.
        assert_eq!(peek(&t.cpu.s, &t.mem, 0x80_0000_0000, &mut buf), 0);
        assert_eq!(peek(&t.cpu.s, &t.mem, 0x8000_0000_0000, &mut buf), 0);
        // A read running off the end of RAM stops there.
        let end = crate::testing::TEST_RAM;
        let mut big = [0u8; 32];
        assert_eq!(peek(&t.cpu.s, &t.mem, end - 16, &mut big), 16);
    }
}
