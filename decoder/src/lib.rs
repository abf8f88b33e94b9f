//! Guest instruction decoding (iced-x86) and classification, shared by the interpreter and the JIT.
//!
//! - [`decode_at`] decodes one instruction through a fetch callback that may fault, fetching
//!   the second page of a page-straddling instruction only when the instruction needs it.
//! - [`classify`] / [`Class`] say whether an instruction ends a block, must go to the
//!   ring-compression layer, touches memory, or is invalid.
//! - [`scan_block`] decodes a straight-line block; [`scan_superblock`] goes on past direct
//!   conditional branches into their fall-through (side exits).
//! - [`Disassembler`] formats instructions in Intel syntax for traces.
//!
//! References: Intel 64 and IA-32 Architectures Software Developer's Manual (SDM), Vol. 2A
//! chapter 2 (instruction format) and Vol. 3A chapters 5–6 (protection, exceptions).
//!
//! Design notes:
//! - Fetching takes the CS base as well as the IP: page boundaries are boundaries of *linear*
//!   addresses, and in real mode and 16/32-bit protected mode CS bases are rarely page aligned.
//!   Segment-limit and canonical-address checks stay in the fetch callback (the MMU).
//! - The callback is asked for at most one page's worth of bytes at a time and for the next
//!   page only when iced-x86 says the instruction is longer than what it has, so the fault of a
//!   straddling instruction names the first byte of the second page, and a short instruction
//!   ending at a page end never touches the next page.
//! - A block's last instruction may straddle into the next page; [`Block::pages`] lists both
//!   pages so the caller can key its cache and self-modifying-code tracking on both.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod block;
mod class;
mod fetch;
mod format;
mod insn;
mod mode;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod testmem;

pub use block::{scan_block, scan_superblock, Block, BlockEnd};
pub use class::{
    classify, invalid_in_mode, Class, IOPL_SENSITIVE_MNEMONICS, NOT_IN_REAL_MODE_MNEMONICS,
    PRIVILEGED_MNEMONICS, SENSITIVE_MNEMONICS,
};
pub use fetch::{
    bytes_to_page_end, decode_at, linear_addr, DecodeError, FetchFault, FetchFaultKind, FetchFn,
    PAGE_SIZE,
};
pub use format::{format_intel, Disassembler};
pub use iced_x86;
pub use insn::{DecodedInsn, InvalidKind, MAX_INSN_LEN};
pub use mode::Mode;
