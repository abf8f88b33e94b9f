//! Intel-syntax disassembly of decoded instructions, for traces.

use core::fmt;

use iced_x86::{Formatter, IntelFormatter, MemorySizeOptions};

use crate::{DecodedInsn, InvalidKind};

/// A reusable Intel-syntax formatter (iced-x86 `IntelFormatter`, operands as in the Intel SDM
/// Vol. 2A §3.1 "Interpreting the Instruction Reference Pages").
pub struct Disassembler {
    formatter: IntelFormatter,
}

impl fmt::Debug for Disassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disassembler").finish_non_exhaustive()
    }
}

impl Default for Disassembler {
    fn default() -> Self {
        Disassembler::new()
    }
}

impl Disassembler {
    /// A formatter with lower-case mnemonics, hexadecimal numbers with an `h` suffix, a space
    /// after each comma, and the memory operand size always spelled out (`dword ptr`).
    #[must_use]
    pub fn new() -> Disassembler {
        let mut formatter = IntelFormatter::new();
        let options = formatter.options_mut();
        options.set_memory_size_options(MemorySizeOptions::Always);
        options.set_space_after_operand_separator(true);
        Disassembler { formatter }
    }

    /// The instruction's text, e.g. `lgdt fword ptr [eax]`. Invalid instructions are shown as
    /// `(bad)`, or `(bad: longer than 15 bytes)`.
    pub fn format(&mut self, insn: &DecodedInsn) -> String {
        match insn.invalid {
            Some(InvalidKind::TooLong) => "(bad: longer than 15 bytes)".to_string(),
            Some(InvalidKind::Opcode) if insn.insn.is_invalid() => "(bad)".to_string(),
            Some(InvalidKind::Opcode) => {
                let mut out = String::from("(bad in this mode) ");
                self.formatter.format(&insn.insn, &mut out);
                out
            }
            None => {
                let mut out = String::new();
                self.formatter.format(&insn.insn, &mut out);
                out
            }
        }
    }

    /// A trace line: IP, the bytes in hex, and the text, e.g.
    /// `0000000000001000 0f0110        lgdt fword ptr [eax]`.
    pub fn trace_line(&mut self, insn: &DecodedInsn) -> String {
        let mut hex = String::with_capacity(2 * insn.bytes().len());
        for b in insn.bytes() {
            hex.push_str(&format!("{b:02x}"));
        }
        format!("{:016x} {:<30} {}", insn.ip(), hex, self.format(insn))
    }
}

/// Formats one instruction in Intel syntax (allocates a formatter; use [`Disassembler`] in loops).
#[must_use]
pub fn format_intel(insn: &DecodedInsn) -> String {
    Disassembler::new().format(insn)
}

#[cfg(test)]
mod tests {
    use crate::testmem::decode_bytes;
    use crate::{format_intel, Disassembler, Mode};

    #[test]
    fn intel_syntax_text() {
        let cases: &[(Mode, &[u8], &str)] = &[
            (Mode::Bits32, &[0x0f, 0x01, 0x10], "lgdt fword ptr [eax]"),
            (
                Mode::Bits64,
                &[0x48, 0x8b, 0x43, 0x08],
                "mov rax, qword ptr [rbx+8]",
            ),
            (Mode::Bits32, &[0xe4, 0x60], "in al, 60h"),
            (Mode::Bits16, &[0x9c], "pushf"),
            (Mode::Bits64, &[0x06], "(bad)"),
            (
                Mode::Real16,
                &[0x0f, 0x00, 0xd8],
                "(bad in this mode) ltr ax",
            ),
        ];
        for (mode, bytes, text) in cases {
            assert_eq!(
                format_intel(&decode_bytes(*mode, bytes)),
                *text,
                "{bytes:02x?}"
            );
        }
        let mut long = vec![0x66; 15];
        long.push(0x90);
        assert_eq!(
            format_intel(&decode_bytes(Mode::Bits32, &long)),
            "(bad: longer than 15 bytes)"
        );
    }

    #[test]
    fn trace_line_has_ip_bytes_and_text() {
        let d = decode_bytes(Mode::Bits32, &[0x0f, 0xa2]);
        let line = Disassembler::new().trace_line(&d);
        assert!(line.starts_with("0000000000001000 0fa2 "), "{line}");
        assert!(line.ends_with(" cpuid"), "{line}");
    }
}
