//! Decoding from guest memory through a fetch callback that may fault, page by page.
//!
//! The decoder never asks the callback for bytes across a 4 KiB boundary, and asks for the next
//! page only when iced-x86 reports that the instruction needs more bytes
//! (`DecoderError::NoMoreBytes`). So an instruction that ends exactly at the end of a page never
//! touches the next page, and one that straddles into an inaccessible page reports that page's
//! fault, as the processor does (Intel SDM Vol. 3A §6.15 "Interrupt 14—Page-Fault Exception":
//! CR2 holds the linear address that caused the fault).

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use crate::class::{classify, invalid_in_mode};
use crate::{Class, DecodedInsn, InvalidKind, Mode, MAX_INSN_LEN};

/// Size of the pages the decoder fetches by (Intel SDM Vol. 3A §4.3: the smallest page).
pub const PAGE_SIZE: u64 = 4096;

/// The exception an instruction fetch raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchFaultKind {
    /// #PF with this error code (Intel SDM Vol. 3A §4.7; I/D bit 4 set for fetches).
    PageFault {
        /// The page-fault error code.
        error_code: u32,
    },
    /// #GP(0): CS limit exceeded or non-canonical address (Intel SDM Vol. 3A §6.15
    /// "Interrupt 13").
    GeneralProtection,
}

/// A failed instruction fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("instruction fetch fault at linear {addr:#x}: {kind:?}")]
pub struct FetchFault {
    /// Linear address of the first byte that could not be fetched (the value for CR2).
    pub addr: u64,
    /// Which exception.
    pub kind: FetchFaultKind,
}

/// Why decoding produced no instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// The fetch of a byte the instruction needs faulted; deliver the fault to the guest.
    #[error(transparent)]
    Fetch(#[from] FetchFault),
    /// The fetch callback broke its contract: it returned `Ok(0)` for a non-empty request.
    #[error("fetch callback returned no bytes at linear {addr:#x}")]
    FetchStalled {
        /// The linear address that was requested.
        addr: u64,
    },
}

/// The instruction-fetch callback: `fetch(linear, buf)` copies guest bytes starting at linear
/// address `linear` into `buf` and returns how many it copied.
///
/// Contract: `[linear, linear + buf.len())` never crosses a 4 KiB boundary and `buf` is never
/// empty. Return `Ok(n)` with `1 <= n <= buf.len()` (a short count means the bytes from
/// `linear + n` on are not available *yet*; the decoder asks again from there only if it needs
/// them, e.g. for a CS limit in the middle of a page), or `Err(fault)` with `fault.addr` the
/// first inaccessible byte — normally `linear` itself. Segment-limit and canonical checks are the
/// callback's job; the decoder only computes linear addresses (CS base + IP, wrapped).
pub type FetchFn<'a> = dyn FnMut(u64, &mut [u8]) -> Result<usize, FetchFault> + 'a;

/// Linear address of the instruction byte at IP `ip` in a segment based at `cs_base`.
#[must_use]
pub fn linear_addr(mode: Mode, cs_base: u64, ip: u64) -> u64 {
    cs_base.wrapping_add(ip) & mode.linear_mask()
}

/// Bytes from `linear` to the end of its 4 KiB page.
#[must_use]
pub fn bytes_to_page_end(linear: u64) -> u64 {
    PAGE_SIZE - (linear & (PAGE_SIZE - 1))
}

/// Decodes the instruction at `cs_base + ip` in `mode`, fetching its bytes lazily, page by page.
///
/// Invalid encodings are not errors: they come back with [`Class::INVALID`] and
/// [`DecodedInsn::invalid`] saying #UD or #GP(0) (more than 15 bytes, Intel SDM Vol. 2A §2.1).
/// An error means no instruction could be formed: a fetch fault on a byte the instruction
/// needs, to be delivered as is.
pub fn decode_at(
    mode: Mode,
    cs_base: u64,
    ip: u64,
    fetch: &mut FetchFn<'_>,
) -> Result<DecodedInsn, DecodeError> {
    let start = linear_addr(mode, cs_base, ip);
    let mut buf = [0u8; MAX_INSN_LEN];
    let mut have = 0usize;
    loop {
        // Fetch the next run of bytes: up to the end of the page, at most 15 in all.
        let lin = start.wrapping_add(have as u64) & mode.linear_mask();
        let room = usize::try_from(bytes_to_page_end(lin)).unwrap_or(MAX_INSN_LEN);
        let want = (MAX_INSN_LEN - have).min(room);
        let got = fetch(lin, &mut buf[have..have + want])?;
        if got == 0 {
            return Err(DecodeError::FetchStalled { addr: lin });
        }
        have += got.min(want);

        let mut decoder = Decoder::with_ip(mode.bitness(), &buf[..have], ip, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        decoder.decode_out(&mut insn);
        let len = insn.len().clamp(1, MAX_INSN_LEN);
        let error = decoder.last_error();
        let invalid = match error {
            DecoderError::NoMoreBytes if have < MAX_INSN_LEN => {
                if undefined_whatever_follows(mode, ip, &buf[..have]) {
                    // Invalid instructions carry no Code, but keep their address and length.
                    let mut insn = Instruction::default();
                    insn.set_len(have);
                    insn.set_ip(ip);
                    let len8 = u8::try_from(have).unwrap_or(MAX_INSN_LEN as u8);
                    let kind = Some(InvalidKind::Opcode);
                    return Ok(DecodedInsn::new(
                        insn,
                        len8,
                        Class::INVALID,
                        kind,
                        start,
                        mode,
                        &buf[..have],
                    ));
                }
                continue;
            }
            DecoderError::None if invalid_in_mode(&insn, mode) => Some(InvalidKind::Opcode),
            DecoderError::None => None,
            // iced-x86 reports InvalidInstruction, with all 15 bytes examined, when the
            // instruction would need a 16th byte.
            DecoderError::NoMoreBytes => Some(InvalidKind::TooLong),
            _ if have == MAX_INSN_LEN && insn.len() == MAX_INSN_LEN => {
                Some(fifteen_byte_invalid_kind(mode, ip, &buf))
            }
            _ => Some(InvalidKind::Opcode),
        };
        let class = if invalid.is_some() {
            Class::INVALID
        } else {
            classify(&insn, mode)
        };
        // `len` is at most 15, so the cast cannot truncate.
        let len8 = u8::try_from(len).unwrap_or(MAX_INSN_LEN as u8);
        return Ok(DecodedInsn::new(
            insn,
            len8,
            class,
            invalid,
            start,
            mode,
            &buf[..have],
        ));
    }
}

/// `true` if iced-x86, given `avail` and then any byte at all, reads exactly that one more byte
/// (the ModRM of an undefined opcode) and reports an invalid instruction.
///
/// iced-x86 reads a ModRM byte for undefined opcodes, so `06` in 64-bit mode at the last byte of
/// a page would otherwise fetch the next page and could #PF where the processor raises #UD
/// (Intel SDM Vol. 3A §6.15 "Interrupt 6": the opcode alone is undefined). Trying all 256 values
/// of the next byte keeps this exact with respect to iced-x86: if any value could start a valid
/// instruction, or makes iced-x86 read further, the answer is `false`.
///
/// iced-x86 only says "needs more bytes" while it has fewer than 15, so a probe must stay below
/// 15 bytes: longer inputs are first shortened by dropping repeated legacy prefixes, which does
/// not change the decoding (see [`drop_repeated_prefix`]); if that is impossible, `false`.
fn undefined_whatever_follows(mode: Mode, ip: u64, avail: &[u8]) -> bool {
    let mut probe = [0u8; MAX_INSN_LEN];
    let mut n = avail.len().min(MAX_INSN_LEN);
    probe[..n].copy_from_slice(&avail[..n]);
    while n + 1 >= MAX_INSN_LEN {
        if !drop_repeated_prefix(&mut probe[..n]) {
            return false;
        }
        n -= 1;
    }
    let mut insn = Instruction::default();
    (0..=255u8).all(|next| {
        probe[n] = next;
        let mut decoder = Decoder::with_ip(mode.bitness(), &probe[..=n], ip, DecoderOptions::NONE);
        decoder.decode_out(&mut insn);
        decoder.last_error() == DecoderError::InvalidInstruction && insn.len() == n + 1
    })
}

/// Legacy prefixes (Intel SDM Vol. 2A §2.1.1 "Instruction Prefixes").
const LEGACY_PREFIXES: [u8; 11] = [
    0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67,
];

/// In the leading run of legacy prefixes of `bytes`, removes the first prefix byte that occurs
/// again later in the run (shifting the rest left; the last byte becomes garbage). Repeating a
/// prefix has no further effect and the later copy keeps the same "last prefix of its group"
/// position, so the meaning is unchanged (Intel SDM Vol. 2A §2.1.1). Returns `false` if the run
/// has no repeated byte.
fn drop_repeated_prefix(bytes: &mut [u8]) -> bool {
    let run = bytes
        .iter()
        .take_while(|b| LEGACY_PREFIXES.contains(b))
        .count();
    let dup = (0..run).find(|&i| bytes[i + 1..run].contains(&bytes[i]));
    match dup {
        Some(i) => {
            bytes.copy_within(i + 1.., i);
            true
        }
        None => false,
    }
}

/// Tells #UD from #GP(0) when iced-x86 examined all 15 bytes and found no valid instruction.
///
/// iced-x86 reports both "needs a 16th byte" and "an invalid 15-byte instruction" the same way.
/// It is #UD (Intel SDM Vol. 2A §2.3.11, Vol. 3A §6.15 "Interrupt 6") if the 15 bytes form a
/// complete instruction once the LOCK/reserved-field checks are waived, or if the opcode is
/// undefined whatever the 15th byte is (iced-x86 reads a ModRM for undefined opcodes);
/// otherwise the instruction needs more than 15 bytes: #GP(0) (Vol. 2A §2.1).
fn fifteen_byte_invalid_kind(mode: Mode, ip: u64, bytes: &[u8; MAX_INSN_LEN]) -> InvalidKind {
    let mut decoder = Decoder::with_ip(mode.bitness(), bytes, ip, DecoderOptions::NO_INVALID_CHECK);
    let insn = decoder.decode();
    let complete = decoder.last_error() == DecoderError::None && insn.len() == MAX_INSN_LEN;
    if complete || undefined_whatever_follows(mode, ip, &bytes[..MAX_INSN_LEN - 1]) {
        InvalidKind::Opcode
    } else {
        InvalidKind::TooLong
    }
}

#[cfg(test)]
mod tests;
