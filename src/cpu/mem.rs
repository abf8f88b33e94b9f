//! Guest memory access: segmentation (logical -> linear, Intel SDM Vol. 3A §3.4, §5.3), paging
//! through the shadow TLB (linear -> guest physical, §4) and RAM or MMIO (physical -> host).
//!
//! Multi-byte accesses that cross a page boundary translate both pages before touching either,
//! so a faulting access has no side effect (precise exceptions).

use super::{Ctx, Fault, Platform, Res};
use crate::mmu::walk::{self, Access, Requester};
use crate::mmu::HostPage;
use jit::abi::{flags as fl, sreg, Segment};

/// True if `la` is canonical for 48-bit linear addresses (SDM Vol. 1 §3.3.7.1).
#[inline]
pub fn canonical(la: u64) -> bool {
    ((la as i64) << 16 >> 16) as u64 == la
}

/// Where a translated linear page lives.
#[derive(Debug, Clone, Copy)]
pub struct PhysPage {
    pub pa_page: u64,
    pub host: Option<HostPage>,
}

impl<P: Platform + ?Sized> Ctx<'_, P> {
    /// Logical -> linear for a data access of `size` bytes at `off` in segment `seg`
    /// (an [`sreg`] index), with the limit and type checks of protected mode.
    /// `off` must already be truncated to the address size.
    pub fn linear(&self, seg: usize, off: u64, size: u32, write: bool) -> Res<u64> {
        let s = &self.cpu.s.seg[seg];
        let seg_fault = |_: ()| {
            if seg == sreg::SS {
                Fault::Ss(0)
            } else {
                Fault::Gp(0)
            }
        };
        if self.cpu.mode64() {
            // Only FS and GS have a base in 64-bit mode; no limit or type checks (§3.2.4).
            let base = if seg == sreg::FS || seg == sreg::GS {
                s.base
            } else {
                0
            };
            let la = base.wrapping_add(off);
            if !canonical(la) || !canonical(la.wrapping_add(u64::from(size) - 1)) {
                return Err(seg_fault(()));
            }
            return Ok(la);
        }
        if self.cpu.protected() && !self.cpu.v86() {
            // Null selector / unusable segment (P = 0 in our cache marks it unusable).
            if !s.present() {
                return Err(seg_fault(()));
            }
            let typ = s.typ();
            if typ & 0x8 != 0 {
                // Code segment: never writable; readable only if R (bit 1).
                if write || typ & 0x2 == 0 {
                    return Err(seg_fault(()));
                }
            } else if write && typ & 0x2 == 0 {
                return Err(seg_fault(()));
            }
            let last = off.wrapping_add(u64::from(size) - 1);
            if typ & 0xc == 0x4 {
                // Expand-down data segment: valid offsets are limit+1 ..= 0xFFFF or 0xFFFFFFFF.
                let upper = if s.db() { 0xffff_ffffu64 } else { 0xffff };
                if off <= u64::from(s.limit) || last > upper || last < off {
                    return Err(seg_fault(()));
                }
            } else if last > u64::from(s.limit) || last < off {
                return Err(seg_fault(()));
            }
        } else {
            // Real and V86 mode still check the cached limit (so "unreal" mode works).
            let last = off.wrapping_add(u64::from(size) - 1);
            if last > u64::from(s.limit) {
                return Err(seg_fault(()));
            }
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Who is accessing memory for page-level protection: CPL 3 is user.
    #[inline]
    fn requester(&self, system: bool) -> Requester {
        Requester {
            user: !system && self.cpu.s.cpl == 3,
            ac: self.cpu.s.rflags & fl::AC != 0,
        }
    }

    /// Translates linear `la` for `access`: TLB hit, else a page walk (or the identity when
    /// paging is off). `system` marks implicit supervisor accesses (descriptor tables, TSS).
    pub fn translate(&mut self, la: u64, access: Access, system: bool) -> Res<PhysPage> {
        let who = self.requester(system);
        if let Some(e) = self.cpu.tlb.lookup(la) {
            if walk::permitted(&self.cpu.s, &e.t, access, who)
                && (access != Access::Write || e.t.dirty)
            {
                let r = PhysPage {
                    pa_page: e.pa_page,
                    host: e.host,
                };
                self.cpu.tlb.stats.hits += 1;
                return Ok(r);
            }
        }
        self.cpu.tlb.stats.misses += 1;
        let t = if self.cpu.paging() {
            let r = if self.cpu.trace.is_on() {
                crate::trace::hooks::walk(self.cpu, self.mem, la, access, who)
            } else {
                walk::walk(&self.cpu.s, self.mem, la, access, who, None)
            };
            r.map_err(|pf| Fault::Pf {
                addr: pf.addr,
                code: pf.code,
            })?
        } else {
            walk::Translation {
                pa_page: la & !0xfff & 0xffff_ffff,
                writable: true,
                user: true,
                nx: false,
                global: false,
                dirty: true,
                page_size: 4096,
            }
        };
        let host = self.mem.page(t.pa_page);
        self.cpu.tlb.insert(la, host, t);
        Ok(PhysPage {
            pa_page: t.pa_page,
            host,
        })
    }

    /// Reads instruction bytes at linear `la` (all within one page).
    pub(crate) fn read_code(&mut self, la: u64, buf: &mut [u8]) -> Res<()> {
        let p = self.translate(la, Access::Execute, false)?;
        self.read_phys_page(p, la, buf);
        Ok(())
    }

    fn read_phys_page(&mut self, p: PhysPage, la: u64, buf: &mut [u8]) {
        let off = (la & 0xfff) as usize;
        match p.host {
            Some(h) => buf.copy_from_slice(&self.mem.page_slice(h)[off..off + buf.len()]),
            None => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = self.plat.mmio_read(p.pa_page + (off + i) as u64, 1) as u8;
                }
            }
        }
    }

    fn write_phys_page(&mut self, p: PhysPage, la: u64, data: &[u8]) {
        let off = (la & 0xfff) as usize;
        match p.host {
            Some(h) => {
                self.cpu.dcache.note_write(p.pa_page);
                self.mem.page_slice_mut(h)[off..off + data.len()].copy_from_slice(data)
            }
            None => {
                for (i, b) in data.iter().enumerate() {
                    self.plat
                        .mmio_write(p.pa_page + (off + i) as u64, 1, u64::from(*b));
                }
            }
        }
    }

    /// Reads `buf.len()` bytes at linear `la` (may cross one page boundary).
    pub fn read_linear_bytes(&mut self, la: u64, buf: &mut [u8], system: bool) -> Res<()> {
        if self.cpu.s.dr[7] & super::debug::DR7_ENABLES != 0 && !system {
            self.note_data_access(la, buf.len() as u64, false);
        }
        let first = (4096 - (la & 0xfff) as usize).min(buf.len());
        let p1 = self.translate(la, Access::Read, system)?;
        if first == buf.len() {
            self.read_phys_page(p1, la, buf);
        } else {
            let la2 = self.wrap_linear(la.wrapping_add(first as u64));
            let p2 = self.translate(la2, Access::Read, system)?;
            let (a, b) = buf.split_at_mut(first);
            self.read_phys_page(p1, la, a);
            self.read_phys_page(p2, la2, b);
        }
        if self.cpu.trace.is_on() {
            self.cpu.trace.data_access(false, la, buf, system);
        }
        Ok(())
    }

    /// Writes `data` at linear `la` (may cross one page boundary); both pages are translated
    /// before either is written.
    pub fn write_linear_bytes(&mut self, la: u64, data: &[u8], system: bool) -> Res<()> {
        if self.cpu.s.dr[7] & super::debug::DR7_ENABLES != 0 && !system {
            self.note_data_access(la, data.len() as u64, true);
        }
        let first = (4096 - (la & 0xfff) as usize).min(data.len());
        let p1 = self.translate(la, Access::Write, system)?;
        if first == data.len() {
            if self.cpu.trace.is_on() {
                self.cpu.trace.data_access(true, la, data, system);
            }
            self.write_phys_page(p1, la, data);
            return Ok(());
        }
        let la2 = self.wrap_linear(la.wrapping_add(first as u64));
        let p2 = self.translate(la2, Access::Write, system)?;
        if self.cpu.trace.is_on() {
            self.cpu.trace.data_access(true, la, data, system);
        }
        self.write_phys_page(p1, la, &data[..first]);
        self.write_phys_page(p2, la2, &data[first..]);
        Ok(())
    }

    /// Records the data breakpoints an access hits (out of line: callers test DR7 first).
    #[cold]
    #[inline(never)]
    fn note_data_access(&mut self, la: u64, size: u64, write: bool) {
        self.cpu.db_hits |= super::debug::data_hits(&self.cpu.s.dr, la, size, write);
    }

    /// Linear addresses wrap at 4 GiB outside IA-32e mode.
    #[inline]
    fn wrap_linear(&self, la: u64) -> u64 {
        if self.cpu.long_mode() {
            la
        } else {
            la & 0xffff_ffff
        }
    }

    /// Reads a little-endian value of `size` bytes (1, 2, 4, 8) at linear `la`.
    pub fn read_linear(&mut self, la: u64, size: u32, system: bool) -> Res<u64> {
        if self.cpu.s.dr[7] & super::debug::DR7_ENABLES != 0 && !system {
            self.note_data_access(la, u64::from(size), false);
        }
        // Fast path: RAM, within one page.
        if (la & 0xfff) + u64::from(size) <= 4096 {
            let p = self.translate(la, Access::Read, system)?;
            if let Some(h) = p.host {
                let off = (la & 0xfff) as usize;
                let page = self.mem.page_slice(h);
                let mut b = [0u8; 8];
                b[..size as usize].copy_from_slice(&page[off..off + size as usize]);
                let v = u64::from_le_bytes(b);
                if self.cpu.trace.is_on() {
                    trace_value(self.cpu, false, la, size, v, system);
                }
                return Ok(v);
            }
            let v = self.plat.mmio_read(p.pa_page | (la & 0xfff), size as u8);
            if self.cpu.trace.is_on() {
                trace_value(self.cpu, false, la, size, v, system);
            }
            return Ok(v);
        }
        let mut b = [0u8; 8];
        self.read_linear_bytes(la, &mut b[..size as usize], system)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes the low `size` bytes (1, 2, 4, 8) of `v` at linear `la`.
    pub fn write_linear(&mut self, la: u64, size: u32, v: u64, system: bool) -> Res<()> {
        if self.cpu.s.dr[7] & super::debug::DR7_ENABLES != 0 && !system {
            self.note_data_access(la, u64::from(size), true);
        }
        if (la & 0xfff) + u64::from(size) <= 4096 {
            let p = self.translate(la, Access::Write, system)?;
            if self.cpu.trace.is_on() {
                trace_value(self.cpu, true, la, size, v, system);
            }
            if let Some(h) = p.host {
                self.cpu.dcache.note_write(p.pa_page);
                let off = (la & 0xfff) as usize;
                let page = self.mem.page_slice_mut(h);
                page[off..off + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
                return Ok(());
            }
            self.plat
                .mmio_write(p.pa_page | (la & 0xfff), size as u8, v);
            return Ok(());
        }
        self.write_linear_bytes(la, &v.to_le_bytes()[..size as usize], system)
    }

    /// Reads `size` bytes at `seg:off` (off already truncated to the address size).
    #[inline]
    pub fn read_mem(&mut self, seg: usize, off: u64, size: u32) -> Res<u64> {
        let la = self.linear(seg, off, size, false)?;
        self.read_linear(la, size, false)
    }

    /// Writes `size` bytes at `seg:off`.
    #[inline]
    pub fn write_mem(&mut self, seg: usize, off: u64, size: u32, v: u64) -> Res<()> {
        let la = self.linear(seg, off, size, true)?;
        self.write_linear(la, size, v, false)
    }

    /// Reads an arbitrary-length operand (x87 80-bit, XMM 128-bit, FXSAVE areas).
    pub fn read_mem_bytes(&mut self, seg: usize, off: u64, buf: &mut [u8]) -> Res<()> {
        let la = self.linear(seg, off, buf.len() as u32, false)?;
        self.read_linear_bytes(la, buf, false)
    }

    /// Writes an arbitrary-length operand.
    pub fn write_mem_bytes(&mut self, seg: usize, off: u64, data: &[u8]) -> Res<()> {
        let la = self.linear(seg, off, data.len() as u32, true)?;
        self.write_linear_bytes(la, data, false)
    }

    /// Checks that `seg:off..+size` could be written, without writing (for instructions that
    /// must fault before changing any state).
    pub fn probe_write(&mut self, seg: usize, off: u64, size: u32) -> Res<()> {
        let la = self.linear(seg, off, size, true)?;
        self.translate(la, Access::Write, false)?;
        let end = la.wrapping_add(u64::from(size) - 1);
        if end >> 12 != la >> 12 {
            self.translate(self.wrap_linear(end), Access::Write, false)?;
        }
        Ok(())
    }
}

/// Reports a data access of up to 8 bytes to the tracer and the watchpoints (out of line: the
/// callers only test `cpu.trace.is_on()`).
#[cold]
#[inline(never)]
fn trace_value(cpu: &mut super::Cpu, write: bool, la: u64, size: u32, v: u64, system: bool) {
    cpu.trace
        .data_access(write, la, &v.to_le_bytes()[..size as usize], system);
}

/// A segment cache that marks a segment unusable (null selector loaded in protected mode).
pub fn unusable_segment(selector: u16) -> Segment {
    Segment {
        base: 0,
        limit: 0,
        selector,
        attr: 0,
    }
}
