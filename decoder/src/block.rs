//! Block scanning: a straight-line run of guest instructions for the JIT or the interpreter.

use crate::fetch::{bytes_to_page_end, decode_at, linear_addr, DecodeError, FetchFault, FetchFn};
use crate::{Class, DecodedInsn, Mode};

/// Why a block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockEnd {
    /// The last instruction transfers control ([`Class::CONTROL_TRANSFER`]).
    ControlTransfer,
    /// The last instruction must be emulated by the ring-compression layer
    /// ([`Class::needs_ring_layer`]); it is included in the block.
    RingLayer,
    /// The last instruction is invalid ([`Class::INVALID`]); it is included so that executing
    /// the block up to it raises the exception at its address.
    Invalid,
    /// The next instruction would start in another 4 KiB page, or the last instruction
    /// straddles into the next page.
    PageBoundary,
    /// The instruction-count limit was reached.
    MaxInsns,
    /// Fetching the next instruction faulted; the block stops before it. The fault is delivered
    /// only if execution gets there (the page may have been mapped by then).
    FetchFault(FetchFault),
}

/// A straight-line run of decoded guest instructions, all in one 4 KiB page except that the
/// last instruction may straddle into the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Mode the block was decoded in.
    pub mode: Mode,
    /// IP (offset in CS) of the first instruction.
    pub start_ip: u64,
    /// IP after the last instruction (the fall-through address), wrapped to the code size.
    pub end_ip: u64,
    /// Linear address of the first byte.
    pub start_linear: u64,
    /// Guest bytes covered: the sum of the instruction lengths.
    pub byte_len: u64,
    /// The instructions, in order; never empty.
    pub insns: Vec<DecodedInsn>,
    /// Why the block ended.
    pub end: BlockEnd,
}

impl Block {
    /// Linear base addresses of the 4 KiB pages the block's bytes occupy (one or two), for
    /// self-modifying-code tracking and caching by physical page.
    #[must_use]
    pub fn pages(&self) -> Vec<u64> {
        let mask = self.mode.linear_mask();
        let first = self.start_linear & !0xFFF;
        let last_byte = self
            .start_linear
            .wrapping_add(self.byte_len.saturating_sub(1))
            & mask;
        let last = last_byte & !0xFFF;
        if last == first {
            vec![first]
        } else {
            vec![first, last]
        }
    }

    /// The last instruction.
    #[must_use]
    pub fn last(&self) -> Option<&DecodedInsn> {
        self.insns.last()
    }
}

/// Decodes a block starting at `cs_base + start_ip`.
///
/// The block ends (in this order of checks after each instruction):
/// - at an invalid instruction (included) — [`BlockEnd::Invalid`];
/// - at a control transfer (included) — [`BlockEnd::ControlTransfer`];
/// - at a privileged, IOPL-sensitive or sensitive instruction (included) —
///   [`BlockEnd::RingLayer`];
/// - when the next instruction would start in a new page, or the instruction just decoded
///   straddles into the next page (the straddling instruction is included, so a block touches at
///   most two pages), or the IP wraps around the code size — [`BlockEnd::PageBoundary`];
/// - after `max_insns` instructions (at least one is always decoded) — [`BlockEnd::MaxInsns`];
/// - before an instruction whose fetch faults — [`BlockEnd::FetchFault`].
///
/// A fault while fetching the first instruction is returned as the error.
pub fn scan_block(
    mode: Mode,
    cs_base: u64,
    start_ip: u64,
    fetch: &mut FetchFn<'_>,
    max_insns: usize,
) -> Result<Block, DecodeError> {
    let max_insns = max_insns.max(1);
    let start_linear = linear_addr(mode, cs_base, start_ip);
    let first = decode_at(mode, cs_base, start_ip, fetch)?;
    let mut block = Block {
        mode,
        start_ip,
        end_ip: start_ip,
        start_linear,
        byte_len: 0,
        insns: Vec::new(),
        end: BlockEnd::MaxInsns,
    };
    let mut next = first;
    loop {
        let insn = next;
        block.byte_len += u64::from(insn.len);
        block.end_ip = insn.next_ip();
        block.insns.push(insn);

        let stop = if insn.class.contains(Class::INVALID) {
            Some(BlockEnd::Invalid)
        } else if insn.class.contains(Class::CONTROL_TRANSFER) {
            Some(BlockEnd::ControlTransfer)
        } else if insn.class.needs_ring_layer() {
            Some(BlockEnd::RingLayer)
        } else if u64::from(insn.len) >= bytes_to_page_end(insn.linear)
            || linear_addr(mode, cs_base, block.end_ip)
                != insn.linear.wrapping_add(u64::from(insn.len)) & mode.linear_mask()
        {
            // Ends exactly at the page end, straddles into the next page, or the IP wrapped
            // (16-bit IP at 64 KiB) so the next instruction is elsewhere in memory.
            Some(BlockEnd::PageBoundary)
        } else if block.insns.len() >= max_insns {
            Some(BlockEnd::MaxInsns)
        } else {
            None
        };
        if let Some(end) = stop {
            block.end = end;
            return Ok(block);
        }
        match decode_at(mode, cs_base, block.end_ip, fetch) {
            Ok(insn) => next = insn,
            Err(DecodeError::Fetch(fault)) => {
                block.end = BlockEnd::FetchFault(fault);
                return Ok(block);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Decodes a superblock starting at `cs_base + start_ip`: like [`scan_block`], but a block
/// that ends at a direct conditional branch (Jcc rel8 / rel32; not LOOPcc or JrCXZ) goes on
/// with the branch's fall-through, which is the next instruction in memory, so the bytes
/// covered stay one contiguous run and the instructions one straight line with side exits
/// (a translator emits each inner Jcc as "leave the block if taken"). Segments are added
/// while the fall-through starts in the first instruction's 4 KiB page and fewer than
/// `max_insns` instructions are in the block; a fall-through whose fetch faults ends the
/// block after the Jcc ([`BlockEnd::ControlTransfer`], the fault is not recorded: the Jcc
/// may be taken).
///
/// Why: a loop body with an if (or a loop whose exit test sits in the middle) is then one
/// block, so the translator keeps guest registers in host registers across it instead of
/// writing them back and reloading them at each block boundary.
pub fn scan_superblock(
    mode: Mode,
    cs_base: u64,
    start_ip: u64,
    fetch: &mut FetchFn<'_>,
    max_insns: usize,
) -> Result<Block, DecodeError> {
    let max_insns = max_insns.max(1);
    let mut block = scan_block(mode, cs_base, start_ip, fetch, max_insns)?;
    let page = block.start_linear & !0xFFF;
    while let Some(last) = block.last() {
        let next_linear = linear_addr(mode, cs_base, block.end_ip);
        let extend = block.end == BlockEnd::ControlTransfer
            && last.insn.is_jcc_short_or_near()
            && block.insns.len() < max_insns
            && next_linear & !0xFFF == page
            // The fall-through is the next byte (no IP wrap at the code size).
            && next_linear == last.linear.wrapping_add(u64::from(last.len)) & mode.linear_mask();
        if !extend {
            break;
        }
        match scan_block(
            mode,
            cs_base,
            block.end_ip,
            fetch,
            max_insns - block.insns.len(),
        ) {
            Ok(more) => {
                block.byte_len += more.byte_len;
                block.end_ip = more.end_ip;
                block.end = more.end;
                block.insns.extend(more.insns);
            }
            Err(_) => break,
        }
    }
    Ok(block)
}

#[cfg(test)]
mod tests;
