//! Property-style robustness test: pseudo-random bytes through decode and scan in all modes.

use crate::testmem::TestMem;
use crate::{decode_at, scan_block, BlockEnd, Class, Disassembler, Mode, MAX_INSN_LEN};

/// xorshift64 (Marsaglia 2003), deterministic.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn random_bytes_never_panic_and_lengths_are_sane() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut disasm = Disassembler::new();
    let mut invalid = 0usize;
    let mut total = 0usize;
    for round in 0..3000u32 {
        // 64 random bytes placed so they straddle a page boundary at a random point; the
        // second page is present on even rounds and absent on odd ones.
        let mut bytes = [0u8; 64];
        for b in bytes.iter_mut() {
            *b = rng.next() as u8;
        }
        let split = 1 + (rng.next() % 40);
        let start = 0x0010_0000 - split;
        let mut mem = TestMem::new();
        mem.write(start, &bytes);
        if round % 2 == 1 {
            mem.unmap(0x0010_0000);
        }
        for mode in Mode::ALL {
            let max = 1 + (rng.next() % 20) as usize;
            match decode_at(mode, 0, start, &mut |a, x| mem.fetch(a, x)) {
                Ok(d) => {
                    total += 1;
                    assert!((1..=MAX_INSN_LEN).contains(&usize::from(d.len)), "{d:?}");
                    assert_eq!(d.invalid.is_some(), d.class.contains(Class::INVALID));
                    if d.invalid.is_some() {
                        invalid += 1;
                    } else {
                        assert_eq!(usize::from(d.len), d.insn.len());
                        assert_eq!(d.bytes(), &bytes[..usize::from(d.len)]);
                    }
                    assert!(!disasm.format(&d).is_empty());
                }
                Err(e) => {
                    // Only the absent second page can fault, at its base.
                    assert_eq!(round % 2, 1);
                    assert!(matches!(e, crate::DecodeError::Fetch(f) if f.addr == 0x0010_0000));
                }
            }
            if let Ok(b) = scan_block(mode, 0, start, &mut |a, x| mem.fetch(a, x), max) {
                assert!(!b.insns.is_empty() && b.insns.len() <= max);
                let sum: u64 = b.insns.iter().map(|i| u64::from(i.len)).sum();
                assert_eq!(sum, b.byte_len);
                assert!(b.pages().len() <= 2);
                // Only the last instruction may end the block for a class reason.
                for i in &b.insns[..b.insns.len() - 1] {
                    assert!(!i.class.intersects(Class::CONTROL_TRANSFER | Class::INVALID));
                    assert!(!i.needs_ring_layer());
                }
                if b.end == BlockEnd::MaxInsns {
                    assert_eq!(b.insns.len(), max);
                }
            }
        }
    }
    // The generator really exercised both valid and invalid encodings.
    assert!(invalid > 100 && invalid < total, "{invalid}/{total}");
}
