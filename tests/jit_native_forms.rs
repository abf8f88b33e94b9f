//! Differential tests of the JIT's native forms beyond plain ALU code (jit/src/ir.rs): shifts
//! and rotates by CL, rotates by a constant, CMOVcc, SETcc, IMUL (2 and 3 operands), MOVZX /
//! MOVSX / MOVSXD, XCHG, BSWAP, BT, one-operand MUL / IMUL / DIV / IDIV, BSF / BSR (TZCNT /
//! LZCNT), CBW..CQO, NOPs and JMP r64 with register operands. Each program runs under the
//! JIT and the interpreter in lockstep (state compared after every block, guest RAM at the
//! end); a PUSHF after every tested instruction records its RFLAGS on the stack, so a flag
//! that a later instruction overwrites is still compared.

use rinx::exec::lockstep::lockstep;
use rinx::testing::{TestMachine, TestMode};

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }
}

/// Shift counts worth testing: 0, 1, width - 1, width, width + 1 for every width, masked
/// counts (32, 64, 255) and random ones.
const COUNTS: &[u8] = &[
    0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 0x3f, 0x40, 0x7f, 0xff,
];

/// Random code exercising the native forms; every tested instruction is followed by PUSHF.
/// Register operands never name the stack pointer (SPL only without REX: AH).
fn random_forms(rng: &mut Rng, mode: TestMode, n: usize, pushf: bool) -> Vec<u8> {
    let long = mode == TestMode::Long64;
    let mut c = Vec::new();
    for _ in 0..n {
        let o16 = rng.below(4) == 0;
        let rex = if long && rng.below(2) == 0 {
            Some(0x40 | (rng.byte() & 0x0f))
        } else {
            None
        };
        // A register number (ModRM field) that is not the stack pointer for the width.
        let reg = |rng: &mut Rng, byte: bool| loop {
            let r = rng.below(8);
            if r != 4 || (byte && rex.is_none()) {
                break r;
            }
        };
        let kind = rng.below(16);
        if kind == 0 {
            // mov cl, count
            c.extend_from_slice(&[0xb1, COUNTS[usize::from(rng.below(COUNTS.len() as u8))]]);
            continue;
        }
        if kind == 1 {
            // Flags churn: add/sub/xor r, r, or stc/clc/cmc.
            if rng.below(2) == 0 {
                c.push([0xf5, 0xf9, 0xf8][usize::from(rng.below(3))]);
            } else {
                let op = [0x01, 0x29, 0x31, 0x00, 0x28][usize::from(rng.below(5))];
                let byte = op == 0x00 || op == 0x28;
                let m = 0xc0 | (reg(rng, byte) << 3) | reg(rng, byte);
                if o16 {
                    c.push(0x66);
                }
                if let Some(r) = rex {
                    c.push(r);
                }
                c.extend_from_slice(&[op, m]);
            }
            continue;
        }
        let start = c.len();
        if o16 {
            c.push(0x66);
        }
        if let Some(r) = rex {
            c.push(r);
        }
        match kind {
            12 => {
                // One-operand MUL / IMUL / DIV / IDIV r (F7 /4../7, F6 for bytes). Divides
                // mostly get a dividend and divisor that cannot fault (xor edx, edx or
                // CWD / CDQ / CQO, then or r, 1); now and then anything goes (#DE ends the
                // program under both engines, with the faulting state compared).
                let ext = 4 + rng.below(4);
                let r = reg(rng, false);
                let p: Vec<u8> = c[start..].to_vec();
                c.truncate(start);
                if ext >= 6 && rng.below(16) != 0 {
                    if r != 2 {
                        c.extend_from_slice(&p);
                        if ext == 6 {
                            c.extend_from_slice(&[0x31, 0xd2]); // xor edx, edx
                        } else {
                            c.push(0x99); // cwd / cdq / cqo (same prefixes)
                        }
                    }
                    c.extend_from_slice(&p);
                    c.extend_from_slice(&[0x83, 0xc8 | r, 1]); // or r, 1
                }
                let op = if rng.below(8) == 0 { 0xf6 } else { 0xf7 };
                c.extend_from_slice(&p);
                c.extend_from_slice(&[op, 0xc0 | (ext << 3) | r]);
            }
            13 => {
                // CBW / CWDE / CDQE, CWD / CDQ / CQO, NOP forms (90 with REX.B is XCHG).
                match rng.below(5) {
                    0 => c.push(0x98),
                    1 => c.push(0x99),
                    2 => c.extend_from_slice(&[0x0f, 0x1f, 0x44, 0x00, 0x00]),
                    3 => c.extend_from_slice(&[0x0f, 0x18, 0x08 | (rng.below(4) << 3)]),
                    _ => {
                        c.insert(start, 0xf3); // PAUSE
                        c.push(0x90);
                    }
                }
            }
            14 => {
                // BSF / BSR / TZCNT / LZCNT r, r (F3 before the other prefixes).
                let m = 0xc0 | (reg(rng, false) << 3) | reg(rng, false);
                if rng.below(2) == 0 {
                    c.insert(start, 0xf3);
                }
                c.extend_from_slice(&[0x0f, 0xbc | rng.below(2), m]);
            }
            15 if long => {
                // lea r11, [rip + 3]; jmp r11 (lands on the PUSHF after it).
                c.truncate(start);
                c.extend_from_slice(&[0x4c, 0x8d, 0x1d, 3, 0, 0, 0, 0x41, 0xff, 0xe3]);
            }
            15 => c.extend_from_slice(&[0x70 | rng.below(16), 1]),
            2 | 3 => {
                // Shift / rotate by CL (D2 / D3) or by an immediate (C0 / C1 / D0 / D1).
                let ext = [0u8, 1, 4, 5, 6, 7][usize::from(rng.below(6))];
                let byte = rng.below(2) == 0;
                let m = 0xc0 | (ext << 3) | reg(rng, byte);
                match rng.below(3) {
                    0 => c.extend_from_slice(&[0xd2 | u8::from(!byte), m]),
                    1 => c.extend_from_slice(&[
                        0xc0 | u8::from(!byte),
                        m,
                        COUNTS[usize::from(rng.below(COUNTS.len() as u8))],
                    ]),
                    _ => c.extend_from_slice(&[0xd0 | u8::from(!byte), m]),
                }
            }
            4 => {
                // CMOVcc r, r
                let m = 0xc0 | (reg(rng, false) << 3) | reg(rng, false);
                c.extend_from_slice(&[0x0f, 0x40 | rng.below(16), m]);
            }
            5 => {
                // SETcc r8
                let m = 0xc0 | reg(rng, true);
                c.extend_from_slice(&[0x0f, 0x90 | rng.below(16), m]);
            }
            6 => {
                // IMUL r, r / r, r, imm8 / r, r, imm16/32
                let m = 0xc0 | (reg(rng, false) << 3) | reg(rng, false);
                match rng.below(3) {
                    0 => c.extend_from_slice(&[0x0f, 0xaf, m]),
                    1 => c.extend_from_slice(&[0x6b, m, rng.byte()]),
                    _ => {
                        c.extend_from_slice(&[0x69, m]);
                        let w = rex.is_some_and(|r| r & 8 != 0);
                        let k = if !w && (o16 != (mode == TestMode::Real)) {
                            2
                        } else {
                            4
                        };
                        for _ in 0..k {
                            c.push(rng.byte());
                        }
                    }
                }
            }
            7 => {
                // MOVZX / MOVSX r, r8 / r16, and MOVSXD in 64-bit mode.
                let (op, byte) = match rng.below(if long { 5 } else { 4 }) {
                    0 => (0xb6, true),
                    1 => (0xbe, true),
                    2 => (0xb7, false),
                    3 => (0xbf, false),
                    _ => (0x63, false),
                };
                let m = 0xc0 | (reg(rng, false) << 3) | reg(rng, byte);
                if op == 0x63 {
                    c.extend_from_slice(&[0x63, m]);
                } else {
                    c.extend_from_slice(&[0x0f, op, m]);
                }
            }
            8 => {
                // XCHG r, r (86 / 87) and XCHG rAX, r (90+r, not 90 itself).
                let byte = rng.below(2) == 0;
                if rng.below(3) == 0 {
                    let r = loop {
                        let r = reg(rng, false);
                        if r != 0 {
                            break r;
                        }
                    };
                    c.push(0x90 | r);
                } else {
                    let m = 0xc0 | (reg(rng, byte) << 3) | reg(rng, byte);
                    c.extend_from_slice(&[0x86 | u8::from(!byte), m]);
                }
            }
            9 => {
                // BSWAP r
                c.extend_from_slice(&[0x0f, 0xc8 | reg(rng, false)]);
            }
            10 => {
                // BT r, r / BT r, imm8
                let m = 0xc0 | (reg(rng, false) << 3) | reg(rng, false);
                if rng.below(2) == 0 {
                    c.extend_from_slice(&[0x0f, 0xa3, m]);
                } else {
                    c.extend_from_slice(&[0x0f, 0xba, 0xe0 | (m & 7), rng.byte()]);
                }
            }
            _ => {
                // Jcc rel8 over PUSHF (the branch reads flags the last native op wrote).
                c.extend_from_slice(&[0x70 | rng.below(16), 1]);
            }
        }
        if pushf {
            c.push(0x9c);
        }
    }
    c.push(0xf4);
    c
}

/// Register seeds: random values mixed with edge values of every width.
fn seed(rng: &mut Rng) -> u64 {
    const EDGES: &[u64] = &[
        0,
        1,
        0x7f,
        0x80,
        0xff,
        0x7fff,
        0x8000,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    match rng.below(3) {
        0 => EDGES[usize::from(rng.below(EDGES.len() as u8))],
        _ => rng.next(),
    }
}

/// Rounds alternate between programs with a PUSHF after every tested instruction and
/// programs without: there most flags are overwritten before anything reads them, which
/// exercises the JIT's dead-flag elimination (`jit::ir::flags_needed`); the state, RFLAGS
/// included, is still compared at every block end.
fn run_rounds(seed0: u64, rounds: usize, len: usize) {
    let mut rng = Rng(seed0);
    for round in 0..rounds {
        let mode = [TestMode::Real, TestMode::Flat32, TestMode::Long64][round % 3];
        let code = random_forms(&mut rng, mode, len, (round / 3) % 2 == 0);
        let seeds: Vec<u64> = (0..16).map(|_| seed(&mut rng)).collect();
        let flags = rng.next() & 0x8d5;
        let make = || {
            let mut t = TestMachine::new(mode, &code);
            for (r, v) in seeds.iter().enumerate() {
                if r != 4 {
                    t.cpu.s.gpr[r] = if mode == TestMode::Real {
                        *v & 0xffff_ffff
                    } else {
                        *v
                    };
                }
            }
            t.cpu.s.rflags |= flags;
            t
        };
        if let Err(d) = lockstep(&make, 20_000) {
            panic!("round {round} ({mode:?}), code {code:02x?}:\n{d}");
        }
    }
}

/// `RINX_NATIVE_FORMS_ROUNDS` (default 600) sets the number of random programs, e.g. for a
/// longer soak than the default `cargo test` run.
#[test]
fn random_native_forms_match_the_interpreter() {
    let rounds = std::env::var("RINX_NATIVE_FORMS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    run_rounds(0x5eed_0001_2345_6789, rounds, 48);
}

#[test]
fn every_shift_and_rotate_by_cl_count_and_width_matches() {
    // For each op (ROL ROR SHL SHR SAR), width (8 low, 8 high, 16, 32, 64) and count:
    // mov cl, count; op reg, cl; pushf — in 64-bit mode, with edge and random values.
    let mut rng = Rng(0xc0ff_ee00_1111_2222);
    for ext in [0u8, 1, 4, 5, 7] {
        for width in 0..5 {
            let mut code = Vec::new();
            for &k in COUNTS.iter().chain(&[3, 5, 24, 48, 62]) {
                code.extend_from_slice(&[0xb1, k]);
                // Destination: BL / BH / BX / EBX / RBX (or CL itself now and then).
                let rm = if k % 5 == 0 && width != 1 { 1 } else { 3 };
                let rm = if width == 1 { 7 } else { rm };
                match width {
                    0 | 1 => code.extend_from_slice(&[0xd2, 0xc0 | (ext << 3) | rm]),
                    2 => code.extend_from_slice(&[0x66, 0xd3, 0xc0 | (ext << 3) | rm]),
                    3 => code.extend_from_slice(&[0xd3, 0xc0 | (ext << 3) | rm]),
                    _ => code.extend_from_slice(&[0x48, 0xd3, 0xc0 | (ext << 3) | rm]),
                }
                code.push(0x9c);
                // Fresh operand bits for the next count.
                code.extend_from_slice(&[0x48, 0x31, 0xc3]); // xor rbx, rax
                code.extend_from_slice(&[0x48, 0xc1, 0xc0, 0x0d]); // rol rax, 13
            }
            code.push(0xf4);
            for _ in 0..6 {
                let (a, b) = (seed(&mut rng), seed(&mut rng));
                let f = rng.next() & 0x8d5;
                let make = || {
                    let mut t = TestMachine::new(TestMode::Long64, &code);
                    t.cpu.s.gpr[0] = a;
                    t.cpu.s.gpr[3] = b;
                    t.cpu.s.rflags |= f;
                    t
                };
                if let Err(d) = lockstep(&make, 10_000) {
                    panic!("/{ext} width {width}, code {code:02x?}:\n{d}");
                }
            }
        }
    }
}
