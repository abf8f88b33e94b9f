//! The JIT against the interpreter: the same guest programs run under both engines (lockstep,
//! comparing the architectural state after every block) in real, 32-bit and 64-bit mode,
//! including random register-ALU code with every width, flags-consuming instructions and
//! conditional branches, faults in the middle of blocks, and self-modifying code.

use rinx::cpu::StopReason;
use rinx::exec::lockstep::lockstep;
use rinx::exec::EngineKind;
use rinx::testing::{TestMachine, TestMode, CODE_BASE};

fn both(mode: TestMode, code: &[u8], budget: u64) -> (TestMachine, TestMachine) {
    let mut i = TestMachine::new(mode, code).with_engine(EngineKind::Interp);
    let mut j = TestMachine::new(mode, code).with_engine(EngineKind::Jit);
    let si = i.run(budget);
    let sj = j.run(budget);
    assert_eq!(si, sj, "stop reasons differ");
    assert_eq!(i.cpu.s, j.cpu.s, "architectural state differs");
    assert_eq!(i.cpu.icount, j.cpu.icount, "instruction counts differ");
    (i, j)
}

fn check_lockstep(mode: TestMode, code: &[u8], budget: u64) -> u64 {
    let code = code.to_vec();
    match lockstep(&|| TestMachine::new(mode, &code), budget) {
        Ok(n) => n,
        Err(d) => panic!("{d}"),
    }
}

/// mov ecx, 1000; xor eax, eax; L: add eax, ecx; xor edx, eax; sub ebx, 3; adc esi, edx;
/// dec ecx; jnz L; hlt
const INT_LOOP32: &[u8] = &[
    0xb9, 0xe8, 0x03, 0, 0, 0x31, 0xc0, 0x01, 0xc8, 0x31, 0xc2, 0x83, 0xeb, 0x03, 0x11, 0xd6, 0x49,
    0x75, 0xf4, 0xf4,
];

#[test]
fn integer_loop_matches_and_runs_in_compiled_code() {
    let (i, mut j) = both(TestMode::Flat32, INT_LOOP32, 100_000);
    assert_eq!(i.cpu.icount, 2 + 6 * 1000 + 1);
    assert_ne!(i.gpr(0), 0);
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        assert!(jit.stats.block_insns > 5000, "{:?}", jit.stats);
        assert!(jit.stats.translations <= 4, "{:?}", jit.stats);
    }
}

#[test]
fn budget_is_exact_inside_a_loop_block() {
    for budget in [1, 2, 3, 7, 100, 1001, 4097] {
        let mut i = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Interp);
        let mut j = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Jit);
        assert_eq!(i.run(budget), StopReason::Budget);
        assert_eq!(j.run(budget), StopReason::Budget);
        assert_eq!(j.cpu.icount, budget);
        assert_eq!(i.cpu.s, j.cpu.s, "budget {budget}");
    }
}

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
}

/// Random straight-line register code: ALU r/m,r and r,r/m forms (register operands), the
/// 80/81/83 immediate group, INC/DEC/NOT/NEG, MOV r,imm, with random 66 / REX prefixes, and
/// short forward Jcc over a few bytes; ends with HLT.
fn random_alu(rng: &mut Rng, mode: TestMode, n: usize) -> Vec<u8> {
    let mut c = Vec::new();
    for _ in 0..n {
        if rng.byte() % 4 == 0 {
            c.push(0x66);
        }
        if mode == TestMode::Long64 && rng.byte() % 2 == 0 {
            c.push(0x40 | (rng.byte() & 0x0f));
        }
        let modrm = 0xc0 | (rng.byte() & 0x3f);
        match rng.byte() % 8 {
            0..=2 => {
                // ADD/OR/ADC/SBB/AND/SUB/XOR/CMP, forms 00-03 (+8*k), and TEST 84/85.
                let op = if rng.byte() % 8 == 0 {
                    0x84 | (rng.byte() & 1)
                } else {
                    ((rng.byte() % 8) << 3) | (rng.byte() & 3)
                };
                c.extend_from_slice(&[op, modrm]);
            }
            3 => {
                let op = [0x80, 0x81, 0x83][usize::from(rng.byte() % 3)];
                c.extend_from_slice(&[op, modrm]);
                let imm = if op == 0x81 { 4 } else { 1 };
                for _ in 0..imm {
                    c.push(rng.byte());
                }
            }
            4 => {
                // INC/DEC (FE/FF /0 /1), NOT/NEG (F6/F7 /2 /3).
                let (op, reg) = if rng.byte() % 2 == 0 {
                    (0xfe | (rng.byte() & 1), rng.byte() % 2)
                } else {
                    (0xf6 | (rng.byte() & 1), 2 + rng.byte() % 2)
                };
                c.extend_from_slice(&[op, (modrm & 0xc7) | (reg << 3)]);
            }
            5 => {
                // MOV r, imm (B0-BF) and MOV r, r (88-8B).
                if rng.byte() % 2 == 0 {
                    let op = 0xb0 | (rng.byte() & 0x0f);
                    c.push(op);
                    let imm = if op < 0xb8 { 1 } else { 4 };
                    for _ in 0..imm {
                        c.push(rng.byte());
                    }
                } else {
                    c.extend_from_slice(&[0x88 | (rng.byte() & 3), modrm]);
                }
            }
            6 if rng.byte() % 2 == 0 => {
                // LEA r, [base + index*scale + disp8] (8D /r with SIB, mod=01), and the
                // ModRM-only [reg + disp8] form (16-bit addressing in real mode).
                let reg = rng.byte() & 0x38;
                if rng.byte() % 2 == 0 && mode != TestMode::Real {
                    c.extend_from_slice(&[0x8d, 0x44 | reg, rng.byte(), rng.byte()]);
                } else {
                    let rm = rng.byte() & 7;
                    c.extend_from_slice(&[
                        0x8d,
                        0x40 | reg | if rm == 4 { 5 } else { rm },
                        rng.byte(),
                    ]);
                }
            }
            6 => {
                // Jcc rel8 skipping a 2-byte instruction (xor eax, ecx).
                c.extend_from_slice(&[0x70 | (rng.byte() & 0x0f), 2, 0x31, 0xc8]);
            }
            _ if rng.byte() % 2 == 0 => {
                // Flags reloaded from RFLAGS: CMC / STC / CLC, then SETcc-free ADC.
                c.push([0xf5, 0xf9, 0xf8][usize::from(rng.byte() % 3)]);
            }
            _ => {
                // SHL / SHR / SAR by an immediate (C0/C1, any count: masked, 0, >= width) or
                // by 1 (D0/D1).
                let reg = [4u8, 5, 7][usize::from(rng.byte() % 3)];
                let op = [0xc0u8, 0xc1, 0xd0, 0xd1][usize::from(rng.byte() % 4)];
                c.extend_from_slice(&[op, (modrm & 0xc7) | (reg << 3)]);
                if op < 0xd0 {
                    c.push(if rng.byte() % 2 == 0 {
                        rng.byte() % 9
                    } else {
                        rng.byte()
                    });
                }
            }
        }
    }
    c.push(0xf4);
    c
}

#[test]
fn random_register_alu_code_matches_the_interpreter() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..150 {
        let mode = [TestMode::Real, TestMode::Flat32, TestMode::Long64][round % 3];
        let code = random_alu(&mut rng, mode, 40);
        let seeds: Vec<u64> = (0..16).map(|_| rng.next()).collect();
        let make = || {
            let mut t = TestMachine::new(mode, &code);
            for (r, v) in seeds.iter().enumerate() {
                if r != 4 {
                    t.cpu.s.gpr[r] = *v;
                }
            }
            t.cpu.s.rflags |= seeds[4] & 0x8d5;
            t
        };
        if let Err(d) = lockstep(&make, 10_000) {
            panic!("round {round} ({mode:?}), code {code:02x?}:\n{d}");
        }
    }
}

#[test]
fn fault_in_the_middle_of_a_block_is_precise() {
    // 64-bit: mov eax, 5; add eax, 1; mov rax, [0x8000_0000_0000_0000] (non-canonical: #GP);
    // inc eax; hlt. No IDT: the #GP escalates to a triple fault; the state must be that of the
    // faulting instruction (the two native instructions before it retired, RIP at it).
    let nc = [
        0xb8, 5, 0, 0, 0, 0x83, 0xc0, 0x01, 0x48, 0xa1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0xc0, 0xf4,
    ];
    let (i, _) = both(TestMode::Long64, &nc, 1000);
    assert_eq!(i.cpu.s.gpr[0], 6);
    assert_eq!(i.cpu.s.rip, CODE_BASE + 8);
    check_lockstep(TestMode::Long64, &nc, 1000);
}

#[test]
fn flags_before_a_faulting_access_are_exact_even_when_later_overwritten() {
    // 64-bit: xor ecx, ecx; add ecx, 0x7fffffff (dead: overwritten by the CMP); cmp ecx, -1
    // (CF = 1, ZF = 0: needed, a fault may follow); mov rax, [0x8000_0000_0000_0000] (#GP,
    // no IDT: triple fault); sub ecx, ecx (would overwrite every flag); hlt.
    let code = [
        0x31, 0xc9, 0x81, 0xc1, 0xff, 0xff, 0xff, 0x7f, 0x83, 0xf9, 0xff, 0x48, 0xa1, 0, 0, 0, 0,
        0, 0, 0, 0x80, 0x29, 0xc9, 0xf4,
    ];
    let (i, _) = both(TestMode::Long64, &code, 1000);
    assert_eq!(i.cpu.s.rip, CODE_BASE + 11, "stopped at the faulting load");
    assert_eq!(
        i.cpu.s.rflags & 0x41,
        0x01,
        "CF set, ZF clear, as the CMP left them"
    );
    check_lockstep(TestMode::Long64, &code, 1000);
}

#[test]
fn registers_cached_in_host_registers_see_pop_push_mul_and_div_writes() {
    // 64-bit: mov eax, 5; push rax; mov ecx, 1; add ecx, ecx; pop rcx; add rcx, rcx;
    // add rcx, rcx (RCX used often enough to live in a host register, then written by POP);
    // mov edx, 7; mul rcx; add rax, rax; add rdx, rdx; hlt.
    let code = [
        0xb8, 5, 0, 0, 0, 0x50, 0xb9, 1, 0, 0, 0, 0x01, 0xc9, 0x59, 0x48, 0x01, 0xc9, 0x48, 0x01,
        0xc9, 0xba, 7, 0, 0, 0, 0x48, 0xf7, 0xe1, 0x48, 0x01, 0xc0, 0x48, 0x01, 0xd2, 0xf4,
    ];
    let (i, _) = both(TestMode::Long64, &code, 1000);
    assert_eq!(i.cpu.s.gpr[1], 20, "RCX after POP and two doublings");
    assert_eq!(i.cpu.s.gpr[0], 200, "RAX = 2 * (5 * 20)");
    assert_eq!(i.cpu.s.gpr[2], 0, "RDX = 2 * high half");
    check_lockstep(TestMode::Long64, &code, 1000);
}

#[test]
fn scaled_index_loads_through_cached_registers_match() {
    // 64-bit: lea rsi, [rip + 0x100]; mov ecx, 16; xor eax, eax;
    // L: add eax, [rsi + rcx*4 + 8]; add rax, [rsi + rcx*8 - 16]; add eax, [rsi + rcx];
    // dec ecx; jnz L; hlt. RSI, RCX and RAX live in host registers; the addresses are one LEA.
    let code = [
        0x48, 0x8d, 0x35, 0x00, 0x01, 0, 0, 0xb9, 16, 0, 0, 0, 0x31, 0xc0, 0x03, 0x44, 0x8e, 0x08,
        0x48, 0x03, 0x44, 0xce, 0xf0, 0x03, 0x04, 0x0e, 0xff, 0xc9, 0x75, 0xf0, 0xf4,
    ];
    let mut code = code.to_vec();
    code.resize(0x100 + 0x1a0, 0);
    for (k, b) in code.iter_mut().enumerate().skip(0x107) {
        *b = (k * 37 % 251) as u8;
    }
    let (i, _) = both(TestMode::Long64, &code, 10_000);
    assert_eq!(i.cpu.s.gpr[1], 0, "loop ran to the end");
    check_lockstep(TestMode::Long64, &code, 10_000);
}

#[test]
fn memory_and_call_ret_loops_match() {
    // 32-bit: mov ecx, 300; mov esi, 0x20000; L: mov eax, [esi]; add eax, ecx; mov [esi+4], eax;
    // call F; dec ecx; jnz L; hlt; F: add edx, eax; ret
    let code = [
        0xb9, 0x2c, 0x01, 0, 0, 0xbe, 0, 0, 2, 0, 0x8b, 0x06, 0x01, 0xc8, 0x89, 0x46, 0x04, 0xe8,
        0x04, 0, 0, 0, 0x49, 0x75, 0xf0, 0xf4, 0x01, 0xc2, 0xc3,
    ];
    let (i, _) = both(TestMode::Flat32, &code, 100_000);
    assert_eq!(i.cpu.s.rip, CODE_BASE + 0x1a, "halted after the loop");
    check_lockstep(TestMode::Flat32, &code, 100_000);
}

#[test]
fn self_modifying_loop_sees_its_own_stores() {
    // 32-bit: L: mov byte [imm_byte], cl (patches the immediate of the add below);
    // add eax, imm8 (83 c0 xx); dec ecx; jnz L; hlt. ECX = 5 initially.
    let patch = CODE_BASE + 6 + 2;
    let mut code = vec![0xb9, 5, 0, 0, 0]; // mov ecx, 5
    code.extend_from_slice(&[0x88, 0x0d]);
    code.extend_from_slice(&(patch as u32).to_le_bytes()); // mov [patch], cl
    code.extend_from_slice(&[0x83, 0xc0, 0x00, 0x49, 0x75, 0xf2, 0xf4]);
    // Fix the patch address: the add is at CODE_BASE + 11, its immediate at +13.
    let imm_at = (CODE_BASE + 13) as u32;
    code[7..11].copy_from_slice(&imm_at.to_le_bytes());
    let (i, _) = both(TestMode::Flat32, &code, 10_000);
    assert_eq!(i.cpu.s.gpr[0], 5 + 4 + 3 + 2 + 1);
    check_lockstep(TestMode::Flat32, &code, 10_000);
    let _ = patch;
}

#[test]
fn real_mode_and_high_byte_registers_match() {
    // Real mode: mov cx, 200; L: add ah, cl; adc bh, ah; xor dl, bh; sub si, dx; dec cx;
    // jnz L; hlt
    let code = [
        0xb9, 0xc8, 0x00, 0x00, 0xcc, 0x10, 0xe7, 0x30, 0xfa, 0x29, 0xd6, 0x49, 0x75, 0xf4, 0xf4,
    ];
    both(TestMode::Real, &code, 10_000);
    check_lockstep(TestMode::Real, &code, 10_000);
}

#[test]
fn random_bytes_match_the_interpreter() {
    // Arbitrary code (the fuzz target `jit_vs_interp` in miniature): helpers, faults, mode
    // changes, stores into the code, whatever the bytes say.
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    for round in 0..300 {
        let mode = [TestMode::Real, TestMode::Flat32, TestMode::Long64][round % 3];
        let code: Vec<u8> = (0..96).map(|_| rng.byte()).collect();
        let seeds: Vec<u64> = (0..16).map(|_| rng.next() & 0xffff).collect();
        let make = || {
            let mut t = TestMachine::new(mode, &code);
            for (r, v) in seeds.iter().enumerate() {
                if r != 4 {
                    t.cpu.s.gpr[r] = *v;
                }
            }
            t
        };
        if let Err(d) = lockstep(&make, 2_000) {
            panic!("round {round} ({mode:?}), code {code:02x?}:\n{d}");
        }
    }
}

#[test]
fn a_full_code_cache_flushes_and_execution_stays_correct() {
    // Many distinct blocks (a chain of 200 `add eax, N; jmp next` blocks, run 20 times) in a
    // 4 KiB code cache: the cache fills, flushes, and retranslates, with identical results.
    let mut code = vec![0xb9, 20, 0, 0, 0]; // mov ecx, 20
    let top = code.len();
    for n in 0..200u8 {
        code.extend_from_slice(&[0x83, 0xc0, n, 0xeb, 0x00]); // add eax, n; jmp +0
    }
    code.push(0x49); // dec ecx
    let back = top as i64 - (code.len() as i64 + 6);
    code.extend_from_slice(&[0x0f, 0x85]);
    code.extend_from_slice(&(back as i32).to_le_bytes()); // jnz top
    code.push(0xf4);
    let mut i = TestMachine::new(TestMode::Flat32, &code).with_engine(EngineKind::Interp);
    assert_eq!(i.run(1_000_000), StopReason::Halted);
    let mut j = TestMachine::new(TestMode::Flat32, &code);
    let mut jit = rinx::exec::jit::JitEngine::with_cache_size(4096).expect("code memory");
    assert_eq!(
        jit.run(&mut j.cpu, &mut j.mem, &mut j.plat, 1_000_000),
        StopReason::Halted
    );
    assert_eq!(i.cpu.s, j.cpu.s);
    assert_eq!(i.cpu.icount, j.cpu.icount);
    // imm8 is sign-extended: 128..199 add negative values.
    let sum: i64 = (0..200u8).map(|n| i64::from(n as i8)).sum();
    assert_eq!(i.gpr(0), (20 * sum) as u64 & 0xffff_ffff);
    if jit::HOST_SUPPORTED {
        assert!(jit.stats.flushes >= 2, "{:?}", jit.stats);
        assert!(jit.cached_blocks() < 200, "{:?}", jit.stats);
    }
}

#[test]
fn single_step_and_breakpoints_fall_back_to_the_interpreter() {
    // TF set (no IDT: the #DB after the first instruction escalates to a triple fault), and a
    // DR0 instruction breakpoint on the loop's `dec ecx`: both engines stop at the same state.
    for setup in [
        |t: &mut TestMachine| t.cpu.s.rflags |= jit::abi::flags::TF,
        |t: &mut TestMachine| {
            t.cpu.s.dr[0] = CODE_BASE + 16; // dec ecx
            t.cpu.s.dr[7] |= 1; // L0, execute, 1 byte
        },
    ] {
        let mut i = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Interp);
        let mut j = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Jit);
        setup(&mut i);
        setup(&mut j);
        let (si, sj) = (i.run(100_000), j.run(100_000));
        assert_eq!(si, sj);
        assert_eq!(si, StopReason::TripleFault);
        assert_eq!(i.cpu.s, j.cpu.s);
        assert_eq!(i.cpu.icount, j.cpu.icount);
    }
}

#[test]
fn machine_lockstep_reports_the_register_that_differs() {
    // The comparison itself can fail: run the loop part way, corrupt EBX on the interpreter's
    // side, and the next block must stop the run with a report naming rbx.
    let mut t = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Lockstep);
    assert_eq!(t.run(50), StopReason::Budget);
    let rinx::exec::Engine::Lockstep(l) = &mut t.engine else {
        panic!("lockstep engine expected on this host")
    };
    assert!(l.divergence.is_none());
    l.shadow_cpu_mut()
        .expect("shadow after the first run")
        .s
        .gpr[3] ^= 0x40;
    assert_eq!(t.run(50), StopReason::PlatformStop);
    let d = t.engine.take_divergence().expect("divergence reported");
    let text = d.to_string();
    assert!(
        d.differences.iter().any(|x| x.starts_with("rbx: ")),
        "{text}"
    );
    assert!(
        text.contains("engines diverge after the block at rip="),
        "{text}"
    );
    assert!(!d.instructions.is_empty(), "{text}");
}

#[test]
fn machine_lockstep_runs_the_loop_to_the_same_end() {
    let mut t = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Lockstep);
    let mut i = TestMachine::new(TestMode::Flat32, INT_LOOP32).with_engine(EngineKind::Interp);
    assert_eq!(t.run(100_000), StopReason::Halted);
    assert_eq!(i.run(100_000), StopReason::Halted);
    assert!(t.engine.take_divergence().is_none());
    assert_eq!(t.cpu.s, i.cpu.s);
}

#[test]
fn inline_memory_accesses_match_at_page_edges_code_pages_and_faults() {
    // 64-bit: mov ecx, 100; mov esi, 0x20ffc; L: mov rax, [rsi] (crosses a page: slow path);
    // add [rsi-8], rax; mov [rsi+4], eax (crosses); push rax; pop rbx; inc qword [rsi-0x100];
    // cmp dword [rsi-0x100], 5; movzx edx, byte [rsi+1]; movsx rdx, word [rsi+2];
    // mov [rip+0x40], al (a store into the code page: SMC tracking); dec ecx; jnz L;
    // mov rax, [0x8000_0000_0000_0000] (non-canonical: #GP, no IDT: triple fault).
    let mut code = vec![0xb9, 100, 0, 0, 0, 0xbe, 0xfc, 0x0f, 0x02, 0x00];
    let body: &[u8] = &[
        0x48, 0x8b, 0x06, 0x48, 0x01, 0x46, 0xf8, 0x89, 0x46, 0x04, 0x50, 0x5b, 0x48, 0xff, 0x86,
        0x00, 0xff, 0xff, 0xff, 0x83, 0xbe, 0x00, 0xff, 0xff, 0xff, 0x05, 0x0f, 0xb6, 0x56, 0x01,
        0x48, 0x0f, 0xbf, 0x56, 0x02, 0x88, 0x05, 0x40, 0, 0, 0, 0xff, 0xc9,
    ];
    code.extend_from_slice(body);
    code.extend_from_slice(&[0x75, (-(body.len() as i8) - 2) as u8]);
    code.extend_from_slice(&[0x48, 0xa1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xf4]);
    let (i, j) = both(TestMode::Long64, &code, 100_000);
    assert_eq!(i.cpu.s.gpr[1], 0, "the loop ran to the end");
    let mut a = [0u8; 0x110];
    let mut b = [0u8; 0x110];
    i.mem.read(0x20ef0, &mut a).unwrap();
    j.mem.read(0x20ef0, &mut b).unwrap();
    assert_eq!(a, b, "guest memory written by both engines");
    assert_ne!(a[0x0c], 0, "inc qword [rsi-0x100] ran");
    check_lockstep(TestMode::Long64, &code, 100_000);

    // The same loop in 32-bit protected mode (inline segment checks; PUSH / POP through the
    // helper there): mov ecx, 100; mov esi, 0x20ffc; L: mov eax, [esi]; add [esi-8], eax;
    // mov [esi+4], ax; inc dword [esi-0x100]; movsx edx, byte [esi+1]; dec ecx; jnz L; hlt.
    let mut code = vec![0xb9, 100, 0, 0, 0, 0xbe, 0xfc, 0x0f, 0x02, 0x00];
    let body: &[u8] = &[
        0x8b, 0x06, 0x01, 0x46, 0xf8, 0x66, 0x89, 0x46, 0x04, 0xff, 0x86, 0x00, 0xff, 0xff, 0xff,
        0x0f, 0xbe, 0x56, 0x01, 0x49,
    ];
    code.extend_from_slice(body);
    code.extend_from_slice(&[0x75, (-(body.len() as i8) - 2) as u8, 0xf4]);
    let (i, _) = both(TestMode::Flat32, &code, 100_000);
    assert_eq!(i.cpu.s.gpr[1], 0);
    check_lockstep(TestMode::Flat32, &code, 100_000);
}

/// 64-bit: mov ecx, 3000; L: add eax, ecx; push rax; jmp M; M: pop rdx; xor eax, edx;
/// dec ecx; jnz L; hlt — a loop over two blocks, which chaining links in generated code.
const TWO_BLOCK_LOOP64: &[u8] = &[
    0xb9, 0xb8, 0x0b, 0, 0, 0x01, 0xc8, 0x50, 0xeb, 0x00, 0x5a, 0x31, 0xd0, 0xff, 0xc9, 0x75, 0xf4,
    0xf4,
];

#[test]
fn chained_blocks_keep_budgets_exact_and_run_in_compiled_code() {
    let (i, mut j) = both(TestMode::Long64, TWO_BLOCK_LOOP64, 1_000_000);
    assert_eq!(i.cpu.icount, 1 + 7 * 3000 + 1);
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        assert!(jit.stats.chains >= 2, "{:?}", jit.stats);
        // Without chaining every iteration would be two dispatcher entries.
        assert!(jit.stats.entries < 100, "{:?}", jit.stats);
    }
    // Budgets that end inside the chained loop, at and around the 4096-instruction limit.
    for budget in [1, 2, 5, 6, 7, 8, 100, 1001, 4095, 4096, 4097, 9000, 20_003] {
        let mut i =
            TestMachine::new(TestMode::Long64, TWO_BLOCK_LOOP64).with_engine(EngineKind::Interp);
        let mut j =
            TestMachine::new(TestMode::Long64, TWO_BLOCK_LOOP64).with_engine(EngineKind::Jit);
        assert_eq!(i.run(budget), StopReason::Budget);
        // Several slices on the JIT, as the machine runs them (links made in one slice are
        // followed in the next).
        let mut left = budget;
        while left > 0 {
            let step = left.min(777);
            assert_eq!(j.run(step), StopReason::Budget);
            left -= step;
        }
        assert_eq!(j.cpu.icount, budget);
        assert_eq!(i.cpu.s, j.cpu.s, "budget {budget}");
    }
    check_lockstep(TestMode::Long64, TWO_BLOCK_LOOP64, 1_000_000);
}

#[test]
fn native_call_and_ret_match_including_a_non_canonical_return() {
    // 64-bit: mov ecx, 300; L: call F; dec ecx; jnz L; mov rax, 1 << 63; push rax; ret
    // (#GP: non-canonical return address, no IDT: triple fault); F: add eax, ecx; ret.
    let code = [
        0xb9, 0x2c, 0x01, 0, 0, 0xe8, 0x10, 0, 0, 0, 0xff, 0xc9, 0x75, 0xf7, 0x48, 0xb8, 0, 0, 0,
        0, 0, 0, 0, 0x80, 0x50, 0xc3, 0x01, 0xc8, 0xc3,
    ];
    let (i, _) = both(TestMode::Long64, &code, 100_000);
    assert_eq!(i.cpu.s.gpr[0], 1 << 63);
    assert_eq!(i.cpu.s.rip, CODE_BASE + 25, "faulted at the RET");
    check_lockstep(TestMode::Long64, &code, 100_000);
}

/// Two address spaces mapping the same linear page to different code: after each MOV CR3 the
/// code at that address (reached by a direct CALL, an indirect CALL and RET) must be the new
/// space's, never a block (or jump-cache entry) of the other one.
#[test]
fn cr3_switch_maps_the_same_address_to_different_code() {
    use rinx::testing::PAGE_TABLES;
    let va: u64 = 0x20_0000; // second 2 MiB page
                             // Space A (the harness tables): va -> pa 0x200000: mov eax, 1; ret.
                             // Space B: a copy whose PD maps va -> pa 0x400000: mov eax, 2; ret.
    let f_a = [0xb8, 1, 0, 0, 0, 0xc3];
    let f_b = [0xb8, 2, 0, 0, 0, 0xc3];
    let pml4_b: u64 = 0xa_0000;
    // Main (64-bit): mov ecx, 200; L: call va; add ebx, eax; mov rax, B; mov cr3, rax;
    // call va; add ebp, eax; mov rax, va; call rax; add edi, eax; mov rax, A; mov cr3, rax;
    // mov rax, va; call rax; add esi, eax; dec ecx; jnz L; hlt
    let mut code = vec![0xb9, 200, 0, 0, 0];
    let top = code.len();
    let call_va = |code: &mut Vec<u8>| {
        let next = CODE_BASE + code.len() as u64 + 5;
        code.push(0xe8);
        code.extend_from_slice(&((va.wrapping_sub(next)) as u32).to_le_bytes());
    };
    let mov_rax = |code: &mut Vec<u8>, v: u64| {
        code.extend_from_slice(&[0x48, 0xb8]);
        code.extend_from_slice(&v.to_le_bytes());
    };
    call_va(&mut code);
    code.extend_from_slice(&[0x01, 0xc3]); // add ebx, eax
    mov_rax(&mut code, pml4_b);
    code.extend_from_slice(&[0x0f, 0x22, 0xd8]); // mov cr3, rax
    call_va(&mut code);
    code.extend_from_slice(&[0x01, 0xc5]); // add ebp, eax
    mov_rax(&mut code, va);
    code.extend_from_slice(&[0xff, 0xd0, 0x01, 0xc7]); // call rax; add edi, eax
    mov_rax(&mut code, PAGE_TABLES);
    code.extend_from_slice(&[0x0f, 0x22, 0xd8]); // mov cr3, rax
    mov_rax(&mut code, va);
    code.extend_from_slice(&[0xff, 0xd0, 0x01, 0xc6]); // call rax; add esi, eax
    code.extend_from_slice(&[0xff, 0xc9, 0x0f, 0x85]); // dec ecx; jnz rel32
    let next = code.len() as i64 + 4;
    code.extend_from_slice(&((top as i64 - next) as i32).to_le_bytes());
    code.push(0xf4);

    let setup = |t: &mut TestMachine| {
        t.mem.write(va, &f_a).unwrap();
        t.mem.write(0x40_0000, &f_b).unwrap();
        // B: PML4 -> PDPT -> PDs of the harness, except the first PD, copied with entry 1
        // pointing at 0x400000.
        let pdpt_b = pml4_b + 0x1000;
        let pd_b = pml4_b + 0x2000;
        t.mem.write_le(pml4_b, 8, pdpt_b | 7).unwrap();
        for i in 0..4u64 {
            let e = t.mem.read_le(PAGE_TABLES + 0x1000 + i * 8, 8).unwrap();
            t.mem.write_le(pdpt_b + i * 8, 8, e).unwrap();
        }
        t.mem.write_le(pdpt_b, 8, pd_b | 7).unwrap();
        for j in 0..512u64 {
            let e = t.mem.read_le(PAGE_TABLES + 0x2000 + j * 8, 8).unwrap();
            t.mem.write_le(pd_b + j * 8, 8, e).unwrap();
        }
        t.mem.write_le(pd_b + 8, 8, 0x40_0000 | 0x87).unwrap();
    };
    let mut results = Vec::new();
    for engine in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(engine);
        setup(&mut t);
        assert_eq!(t.run(1_000_000), StopReason::Halted, "{engine:?}");
        assert_eq!(t.gpr(3), 200, "space A by direct call ({engine:?})");
        assert_eq!(t.gpr(5), 400, "space B by direct call ({engine:?})");
        assert_eq!(t.gpr(7), 400, "space B by indirect call ({engine:?})");
        assert_eq!(t.gpr(6), 200, "space A by indirect call ({engine:?})");
        results.push((t.cpu.s, t.cpu.icount));
    }
    assert_eq!(results[0], results[1]);
}

/// 32-bit: mov ecx, 50; xor eax, eax; jmp L; ... L (at CODE_BASE + 0xffe): add eax, imm32 —
/// an instruction whose immediate continues on the next page; then, with `patch`,
/// mov [CODE_BASE + 0x1000], cl (rewrites the immediate's second byte, on the second page);
/// dec ecx; jnz L; hlt.
fn page_crossing_loop32(patch: bool) -> Vec<u8> {
    let mut code = vec![0xb9, 50, 0, 0, 0, 0x31, 0xc0, 0xe9];
    let l = 0xffe_usize;
    code.extend_from_slice(&((l - (code.len() + 4)) as u32).to_le_bytes());
    code.resize(l, 0x90);
    code.extend_from_slice(&[0x05, 0x11, 0x02, 0x00, 0x00]); // add eax, 0x211
    if patch {
        code.extend_from_slice(&[0x88, 0x0d]);
        code.extend_from_slice(&((CODE_BASE + 0x1000) as u32).to_le_bytes());
    }
    code.extend_from_slice(&[0x49, 0x0f, 0x85]);
    let next = code.len() + 4;
    code.extend_from_slice(&((l as i64 - next as i64) as i32).to_le_bytes());
    code.push(0xf4);
    code
}

#[test]
fn an_instruction_crossing_into_the_next_page_runs_in_compiled_code() {
    let code = page_crossing_loop32(false);
    let (i, mut j) = both(TestMode::Flat32, &code, 100_000);
    assert_eq!(i.gpr(0), 50 * 0x211);
    check_lockstep(TestMode::Flat32, &code, 100_000);
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        assert_eq!(jit.stats.failed_translations, 0, "{:?}", jit.stats);
        assert!(jit.stats.block_insns >= 150, "{:?}", jit.stats);
    }
}

#[test]
fn a_store_to_the_second_page_of_a_crossing_instruction_retranslates_it() {
    let code = page_crossing_loop32(true);
    let (i, _) = both(TestMode::Flat32, &code, 100_000);
    // Iteration k (ECX = 50 - k) adds 0x11 + 0x100 * (its byte), which the previous
    // iteration set to its ECX (0x02 before the first).
    let want: u64 = (0..50u64)
        .map(|k| 0x11 + 0x100 * if k == 0 { 2 } else { 51 - k })
        .sum();
    assert_eq!(i.gpr(0), want);
    check_lockstep(TestMode::Flat32, &code, 100_000);
}

/// The second page of a crossing instruction is remapped (4 KiB PTE rewritten, INVLPG)
/// between calls: each call must fetch the bytes of the current mapping.
#[test]
fn remapping_the_second_page_of_a_crossing_instruction_changes_what_runs() {
    let pt: u64 = 0xb_0000;
    let f = 0x20_0ffe_u64; // mov eax, imm32 at the end of page 0x200000; ret on the next page
    let frame_x: u64 = 0x20_1000;
    let frame_y: u64 = 0x40_0000;
    // 64-bit main: mov ecx, 100; mov esi, 0x201000; mov rdi, pt + 8; L: call f; add ebx, eax;
    // mov rdx, Y | 7; mov [rdi], rdx; invlpg [rsi]; call f; add ebp, eax; mov rdx, X | 7;
    // mov [rdi], rdx; invlpg [rsi]; dec ecx; jnz L; hlt
    let mut code = vec![0xb9, 100, 0, 0, 0, 0xbe, 0x00, 0x10, 0x20, 0x00, 0x48, 0xbf];
    code.extend_from_slice(&(pt + 8).to_le_bytes());
    let top = code.len();
    let call_f = |code: &mut Vec<u8>| {
        let next = CODE_BASE + code.len() as u64 + 5;
        code.push(0xe8);
        code.extend_from_slice(&(f.wrapping_sub(next) as u32).to_le_bytes());
    };
    let remap = |code: &mut Vec<u8>, frame: u64| {
        code.extend_from_slice(&[0x48, 0xba]);
        code.extend_from_slice(&(frame | 7).to_le_bytes());
        code.extend_from_slice(&[0x48, 0x89, 0x17, 0x0f, 0x01, 0x3e]);
    };
    call_f(&mut code);
    code.extend_from_slice(&[0x01, 0xc3]); // add ebx, eax
    remap(&mut code, frame_y);
    call_f(&mut code);
    code.extend_from_slice(&[0x01, 0xc5]); // add ebp, eax
    remap(&mut code, frame_x);
    code.extend_from_slice(&[0xff, 0xc9, 0x0f, 0x85]);
    let next = code.len() as i64 + 4;
    code.extend_from_slice(&((top as i64 - next) as i32).to_le_bytes());
    code.push(0xf4);
    let setup = |t: &mut TestMachine| {
        // PD entry 1 (va 0x200000..0x400000) -> a page table of 4 KiB pages, identity-mapped.
        for i in 0..512u64 {
            t.mem
                .write_le(pt + i * 8, 8, (0x20_0000 + i * 0x1000) | 7)
                .unwrap();
        }
        t.mem.write_le(PAGE_TABLES_PD0 + 8, 8, pt | 7).unwrap();
        t.mem.write(f, &[0xb8, 0x11]).unwrap();
        t.mem.write(frame_x, &[0x00, 0x00, 0x00, 0xc3]).unwrap(); // eax = 0x11
        t.mem.write(frame_y, &[0x01, 0x00, 0x00, 0xc3]).unwrap(); // eax = 0x111
    };
    let mut results = Vec::new();
    for engine in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(engine);
        setup(&mut t);
        assert_eq!(t.run(1_000_000), StopReason::Halted, "{engine:?}");
        assert_eq!(t.gpr(3), 100 * 0x11, "frame X ({engine:?})");
        assert_eq!(t.gpr(5), 100 * 0x111, "frame Y ({engine:?})");
        results.push((t.cpu.s, t.cpu.icount));
    }
    assert_eq!(results[0], results[1]);
}

/// The first page directory of the harness's 64-bit page tables (see `TestMachine::new`).
const PAGE_TABLES_PD0: u64 = rinx::testing::PAGE_TABLES + 0x2000;

/// A Jcc fused with a memory-operand op (`dec dword [esi]; jnz`, `cmp [esi], eax; jne`) whose
/// access crosses a page, so the helper runs it every time: the branch must follow the flags
/// the helper wrote. 32-bit: mov esi, 0x20ffe; mov dword [esi], 3; L1: inc ebx;
/// dec dword [esi]; jnz L1; mov eax, 7; mov dword [esi], 0; L2: inc edi; inc dword [esi];
/// cmp [esi], eax; jne L2; hlt.
#[test]
fn fused_branches_after_memory_ops_follow_the_helper_on_the_slow_path() {
    let mut code = vec![0xbe, 0xfe, 0x0f, 0x02, 0x00, 0xc7, 0x06, 3, 0, 0, 0];
    code.extend_from_slice(&[0x43, 0xff, 0x0e, 0x75, 0xfb]);
    code.extend_from_slice(&[0xb8, 7, 0, 0, 0, 0xc7, 0x06, 0, 0, 0, 0]);
    code.extend_from_slice(&[0x47, 0xff, 0x06, 0x39, 0x06, 0x75, 0xf9, 0xf4]);
    let (i, _) = both(TestMode::Flat32, &code, 10_000);
    assert_eq!(i.gpr(3), 3, "dec/jnz iterations");
    assert_eq!(i.gpr(7), 7, "inc/cmp/jne iterations");
    check_lockstep(TestMode::Flat32, &code, 10_000);
    // The same with the data inside one page (inline accesses, live host flags).
    code[1] = 0x00;
    let (i, _) = both(TestMode::Flat32, &code, 10_000);
    assert_eq!((i.gpr(3), i.gpr(7)), (3, 7));
    check_lockstep(TestMode::Flat32, &code, 10_000);
}

/// Two pages 4 MiB apart share a TLB set: the loop's accesses alternate between them, so the
/// inline probe hits way 0 for one and way 1 (out of line) for the other. The first is
/// mapped to other physical memory (va 0x400000 -> pa 0xa00000) so that using the wrong
/// way's host address would show. 64-bit: mov ecx, 500; mov esi, 0x400ff8;
/// mov edi, 0x800ff8; L: add [rsi], rcx; mov rax, [rsi]; add [rdi], rax; mov rdx, [rdi];
/// add [rsi+8], edx (crosses into the next page: helper); dec ecx; jnz L; hlt
#[test]
fn two_pages_of_one_tlb_set_alternate_in_a_loop() {
    let code = [
        0xb9, 0xf4, 0x01, 0, 0, 0xbe, 0xf8, 0x0f, 0x40, 0x00, 0xbf, 0xf8, 0x0f, 0x80, 0x00, 0x48,
        0x01, 0x0e, 0x48, 0x8b, 0x06, 0x48, 0x01, 0x07, 0x48, 0x8b, 0x17, 0x01, 0x56, 0x08, 0xff,
        0xc9, 0x75, 0xeb, 0xf4,
    ];
    let mut results = Vec::new();
    for engine in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(engine);
        // PD0 entry 2 (va 0x400000, 2 MiB) -> pa 0xa00000.
        t.mem
            .write_le(PAGE_TABLES_PD0 + 16, 8, 0xa0_0000 | 0x87)
            .unwrap();
        assert_eq!(t.run(100_000), StopReason::Halted, "{engine:?}");
        assert_eq!(t.gpr(1), 0, "the loop ran to the end ({engine:?})");
        let mut m = Vec::new();
        for pa in [0xa0_0ff8u64, 0x80_0ff8, 0xa0_1000, 0x40_0ff8] {
            m.push(t.mem.read_le(pa, 8).unwrap());
        }
        assert_ne!(m[0], 0, "{engine:?}");
        assert_eq!(
            m[3], 0,
            "nothing written at the identity address ({engine:?})"
        );
        results.push((t.cpu.s, t.cpu.icount, m));
    }
    assert_eq!(results[0], results[1]);
}

/// A loop body with two forward Jcc (an if and an if-else join) inside one superblock
/// (`decoder::scan_superblock`): each inner Jcc is a side exit, fused with the TEST / CMP
/// before it; loads, an ALU store and stores to memory on both paths. Runs in 32-bit and
/// 64-bit mode (no REX prefixes). mov ecx, 3000; mov esi, 0x20000; xor edi, edi;
/// L: mov eax, [rsi]; add eax, ecx; test cl, 3; jz SKIP; add [rsi+4], eax; xor edx, eax;
/// SKIP: cmp edx, 0x1000; jb L2; sub edx, 0x800; L2: mov [rsi+8], edx; add edi, edx;
/// dec ecx; jnz L; hlt
const SUPERBLOCK_LOOP: &[u8] = &[
    0xb9, 0xb8, 0x0b, 0x00, 0x00, 0xbe, 0x00, 0x00, 0x02, 0x00, 0x31, 0xff, 0x8b, 0x06, 0x01, 0xc8,
    0xf6, 0xc1, 0x03, 0x74, 0x05, 0x01, 0x46, 0x04, 0x31, 0xc2, 0x81, 0xfa, 0x00, 0x10, 0x00, 0x00,
    0x72, 0x06, 0x81, 0xea, 0x00, 0x08, 0x00, 0x00, 0x89, 0x56, 0x08, 0x01, 0xd7, 0xff, 0xc9, 0x75,
    0xdb, 0xf4,
];

/// An inner loop whose back edge is a side exit to the block start, in the middle of an
/// outer loop (the block's final branch also goes to the start): mov ecx, 7; mov edi, 400;
/// xor eax, eax; mov esi, 0x20000; L: add eax, ecx; add [rsi], eax; dec ecx; jnz L;
/// add ebx, eax; mov ecx, 5; dec edi; jnz L; hlt
const SIDE_EXIT_BACK_EDGE: &[u8] = &[
    0xb9, 0x07, 0x00, 0x00, 0x00, 0xbf, 0x90, 0x01, 0x00, 0x00, 0x31, 0xc0, 0xbe, 0x00, 0x00, 0x02,
    0x00, 0x01, 0xc8, 0x01, 0x06, 0xff, 0xc9, 0x75, 0xf8, 0x01, 0xc3, 0xb9, 0x05, 0x00, 0x00, 0x00,
    0xff, 0xcf, 0x75, 0xed, 0xf4,
];

#[test]
fn superblock_side_exits_match_with_exact_budgets() {
    // (program, name, the loop counter that ends at 0: ECX, EDI)
    for (code, name, counter) in [
        (SUPERBLOCK_LOOP, "superblock loop", 1),
        (SIDE_EXIT_BACK_EDGE, "side-exit back edge", 7),
    ] {
        for mode in [TestMode::Flat32, TestMode::Long64] {
            let (i, mut j) = both(mode, code, 1_000_000);
            assert_eq!(
                i.cpu.s.rip,
                CODE_BASE + code.len() as u64,
                "{name}: halted at the end"
            );
            assert_eq!(i.gpr(counter), 0, "{name}: the loop ran to the end");
            let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
                panic!("JIT engine expected on this host")
            };
            if jit::HOST_SUPPORTED {
                // The whole loop is one block: a few translations (the loop's, the code
                // before it, the side-exit targets), nearly every instruction compiled, and
                // far fewer entries than iterations.
                assert!(
                    jit.stats.translations <= 8,
                    "{name} {mode:?}: {:?}",
                    jit.stats
                );
                assert!(
                    jit.stats.block_insns * 10 > i.cpu.icount * 9,
                    "{name} {mode:?}: {:?}",
                    jit.stats
                );
            }
            // Budgets that end at and around side exits and back edges, over several slices.
            for budget in [
                1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 100, 1001, 4097, 9_001,
            ] {
                let mut i = TestMachine::new(mode, code).with_engine(EngineKind::Interp);
                let mut j = TestMachine::new(mode, code).with_engine(EngineKind::Jit);
                assert_eq!(i.run(budget), StopReason::Budget);
                let mut left = budget;
                while left > 0 {
                    let step = left.min(333);
                    assert_eq!(j.run(step), StopReason::Budget);
                    left -= step;
                }
                assert_eq!(j.cpu.icount, budget);
                assert_eq!(i.cpu.s, j.cpu.s, "{name} {mode:?} budget {budget}");
            }
            check_lockstep(mode, code, 1_000_000);
        }
    }
}

/// CALL r64 in compiled code (`jit::ir::Exit::CallReg`): a loop of indirect calls, a call
/// whose callee sees the pushed return address through RSP, then a call to a non-canonical
/// target (#GP(0) with nothing pushed; no IDT, so a triple fault whose state must be that
/// of the faulting CALL). 64-bit: lea rax, [rip + F]; mov ecx, 100; L: call rax; dec ecx;
/// jnz L; mov rbx, rsp; lea rsi, [rip + G]; call rsi; mov rax, 0x8000_0000_0000_0000;
/// call rax; hlt; F: add edx, 3; ret; G: add rdi, rsp; ret
#[test]
fn native_call_r64_matches_including_a_non_canonical_target() {
    let code = [
        0x48, 0x8d, 0x05, 0x24, 0x00, 0x00, 0x00, 0xb9, 0x64, 0x00, 0x00, 0x00, 0xff, 0xd0, 0xff,
        0xc9, 0x75, 0xfa, 0x48, 0x89, 0xe3, 0x48, 0x8d, 0x35, 0x13, 0x00, 0x00, 0x00, 0xff, 0xd6,
        0x48, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0xff, 0xd0, 0xf4, 0x83, 0xc2,
        0x03, 0xc3, 0x48, 0x01, 0xe7, 0xc3,
    ];
    let start = TestMachine::new(TestMode::Long64, &code);
    let (edx, rdi) = (start.gpr(2), start.gpr(7));
    let (i, _) = both(TestMode::Long64, &code, 10_000);
    assert_eq!(i.gpr(2), (edx + 300) & 0xffff_ffff, "100 calls of F");
    assert_eq!(
        i.gpr(7),
        rdi.wrapping_add(i.gpr(3) - 8),
        "G saw RSP with the return address pushed"
    );
    assert_eq!(
        i.cpu.s.rip,
        CODE_BASE + 40,
        "stopped at the non-canonical CALL"
    );
    assert_eq!(
        i.cpu.s.gpr[4],
        i.gpr(3),
        "nothing pushed by the faulting CALL"
    );
    check_lockstep(TestMode::Long64, &code, 10_000);
}

/// A platform whose interrupt line carries `vector` until the CPU acknowledges it (once).
struct IrqLine {
    vector: Option<u8>,
    acks: u32,
}

impl rinx::cpu::Platform for IrqLine {
    fn io_read(&mut self, _port: u16, _size: u8) -> u32 {
        u32::MAX
    }
    fn io_write(&mut self, _port: u16, _size: u8, _value: u32) {}
    fn mmio_read(&mut self, _gpa: u64, _size: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _gpa: u64, _size: u8, _value: u64) {}
    fn tsc(&mut self) -> u64 {
        0
    }
    fn interrupt_pending(&mut self) -> bool {
        self.vector.is_some()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.acks += 1;
        self.vector.take()
    }
}

/// Runs real-mode `code` (at CS:0) with vector 0x20 pending from the start and its IVT entry
/// pointing at CS:0x80, under `kind`; returns the machine and how it stopped.
fn run_with_pending_irq(kind: EngineKind, code: &[u8], budget: u64) -> (TestMachine, StopReason) {
    let mut t = TestMachine::new(TestMode::Real, code);
    t.cpu.s.idtr.base = 0;
    t.cpu.s.idtr.limit = 0x3ff;
    let cs = (CODE_BASE >> 4) as u16;
    t.mem.write(0x20 * 4, &[0x80, 0x00]).unwrap();
    t.mem.write(0x20 * 4 + 2, &cs.to_le_bytes()).unwrap();
    // Handler: mov bx, ax; hlt.
    t.mem.write(CODE_BASE + 0x80, &[0x89, 0xc3, 0xf4]).unwrap();
    let mut plat = IrqLine {
        vector: Some(0x20),
        acks: 0,
    };
    let mut engine = rinx::exec::Engine::new(kind);
    let stop = engine.run(&mut t.cpu, &mut t.mem, &mut plat, budget);
    assert_eq!(
        plat.acks, 1,
        "{kind:?}: the interrupt is acknowledged exactly once"
    );
    (t, stop)
}

#[test]
fn an_interrupt_waiting_at_sti_is_taken_after_the_next_instruction() {
    // sti; inc ax x 20; hlt. The interrupt is pending all along: the handler must see AX = 1
    // (SDM Vol. 3A §6.8.3: the STI shadow covers exactly one instruction), not the value
    // at the end of the compiled block that follows the STI.
    let mut straight = vec![0xfb];
    straight.extend([0x40; 20]);
    straight.push(0xf4);
    // L: cli; sti; inc ax; inc ax; inc ax; jmp L -- interrupts are open only in the STI
    // shadow and the two instructions after it, as in the kernel's entropy wait. The
    // interrupt must be taken on the first pass (AX = 1), not when a slice happens to end
    // in the window.
    let looped = [0xfa, 0xfb, 0x40, 0x40, 0x40, 0xeb, 0xf9];
    for (name, code) in [("straight", &straight[..]), ("loop", &looped[..])] {
        let mut ip = None;
        for kind in [EngineKind::Interp, EngineKind::Jit] {
            let (t, stop) = run_with_pending_irq(kind, code, 100_000);
            assert_eq!(stop, StopReason::Halted, "{name} {kind:?}");
            assert_eq!(
                t.gpr(3) & 0xffff,
                1,
                "{name} {kind:?}: AX when the interrupt came"
            );
            assert_eq!(t.cpu.s.rip, 0x83, "{name} {kind:?}: halted in the handler");
            let st = &t.cpu.s;
            let here = (st.gpr[0], st.gpr[4], t.cpu.icount);
            assert_eq!(*ip.get_or_insert(here), here, "{name}: engines differ");
        }
    }
}

/// REP MOVS / REP STOS in 64-bit mode (`Op::RepString`): native when DF = 0 and each range
/// stays in its page, the helper otherwise. 64-bit program (data at 0x20000..0x2A000):
/// 1 rep stosq over a whole page; 2 rep stosb (100 bytes at 0x21003); 3 rep movsb of 64
/// bytes; 4 rep movsq of a whole page; 5 rep movsd whose source crosses a page; 6 rep movsw
/// whose destination crosses a page; 7 rep movsb with the destination one byte above the
/// source (replicates); 8 rep movsq with RCX = 0 and a non-canonical RSI (nothing happens);
/// 9 rep movsb with DF = 1; 10 rep stosb of 5,000 bytes; 11 rep movsb of two NOPs over the
/// `inc ebx` right after it (self-modifying); 12 rep stosd, 13 rep stosw, 13b rep movsd,
/// 13c rep movsw (each size natively); 14 rep movsb from a non-canonical source (#GP, no IDT: triple fault).
#[test]
fn rep_movs_and_stos_match_in_and_out_of_compiled_code() {
    let code = [
        0x48, 0xb8, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xbf, 0x00, 0x00, 0x02, 0x00,
        0xb9, 0x00, 0x02, 0x00, 0x00, 0xf3, 0x48, 0xab, 0xb0, 0x5a, 0xbf, 0x03, 0x10, 0x02, 0x00,
        0xb9, 0x64, 0x00, 0x00, 0x00, 0xf3, 0xaa, 0xbe, 0x05, 0x00, 0x02, 0x00, 0xbf, 0x07, 0x20,
        0x02, 0x00, 0xb9, 0x40, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xbe, 0x00, 0x00, 0x02, 0x00, 0xbf,
        0x00, 0x30, 0x02, 0x00, 0xb9, 0x00, 0x02, 0x00, 0x00, 0xf3, 0x48, 0xa5, 0xbe, 0xf0, 0x0f,
        0x02, 0x00, 0xbf, 0x00, 0x40, 0x02, 0x00, 0xb9, 0x08, 0x00, 0x00, 0x00, 0xf3, 0xa5, 0xbe,
        0x00, 0x10, 0x02, 0x00, 0xbf, 0xfc, 0x4f, 0x02, 0x00, 0xb9, 0x04, 0x00, 0x00, 0x00, 0x66,
        0xf3, 0xa5, 0xbe, 0x07, 0x20, 0x02, 0x00, 0xbf, 0x08, 0x20, 0x02, 0x00, 0xb9, 0x32, 0x00,
        0x00, 0x00, 0xf3, 0xa4, 0x48, 0xbe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x31,
        0xc9, 0xf3, 0x48, 0xa5, 0xfd, 0xbe, 0x00, 0x01, 0x02, 0x00, 0xbf, 0x00, 0x51, 0x02, 0x00,
        0xb9, 0x10, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xfc, 0xb8, 0x77, 0x00, 0x00, 0x00, 0xbf, 0x00,
        0x60, 0x02, 0x00, 0xb9, 0x88, 0x13, 0x00, 0x00, 0xf3, 0xaa, 0x66, 0xc7, 0x04, 0x25, 0x00,
        0x70, 0x02, 0x00, 0x90, 0x90, 0xbe, 0x00, 0x70, 0x02, 0x00, 0x48, 0x8d, 0x3d, 0x07, 0x00,
        0x00, 0x00, 0xb9, 0x02, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xff, 0xc3, 0xbf, 0x00, 0x80, 0x02,
        0x00, 0xb8, 0xcd, 0xab, 0x34, 0x12, 0xb9, 0x07, 0x00, 0x00, 0x00, 0xf3, 0xab, 0xbf, 0x20,
        0x80, 0x02, 0x00, 0xb9, 0x03, 0x00, 0x00, 0x00, 0x66, 0xf3, 0xab, 0xbe, 0x40, 0x00, 0x02,
        0x00, 0xbf, 0x00, 0x81, 0x02, 0x00, 0xb9, 0x05, 0x00, 0x00, 0x00, 0xf3, 0xa5, 0xbe, 0x80,
        0x00, 0x02, 0x00, 0xbf, 0x00, 0x82, 0x02, 0x00, 0xb9, 0x03, 0x00, 0x00, 0x00, 0x66, 0xf3,
        0xa5, 0x48, 0xbe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0xbf, 0x00, 0x90, 0x02,
        0x00, 0xb9, 0x03, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xf4,
    ];
    let (i, mut j) = both(TestMode::Long64, &code, 100_000);
    assert_eq!(
        i.cpu.s.rip,
        CODE_BASE + 0x123,
        "stopped at the faulting rep movsb"
    );
    let start = TestMachine::new(TestMode::Long64, &code);
    assert_eq!(
        i.gpr(3),
        start.gpr(3),
        "the inc ebx was patched out before it ran"
    );
    let (mut mi, mut mj) = (vec![0u8; 0xa000], vec![0u8; 0xa000]);
    i.mem.read(0x20000, &mut mi).unwrap();
    j.mem.read(0x20000, &mut mj).unwrap();
    for (k, (x, y)) in mi.iter().zip(&mj).enumerate() {
        assert_eq!(x, y, "memory differs at {:#x}", 0x20000 + k);
    }
    // Spot checks against the architecture, not only against the interpreter.
    let at = |a: usize| a - 0x20000;
    let q = |a: usize| u64::from_le_bytes(mi[at(a)..at(a) + 8].try_into().unwrap());
    assert_eq!(
        q(0x23ff8),
        0x0123_4567_89ab_cdef,
        "4: the last qword of the page copy"
    );
    assert_eq!(
        mi[at(0x22008)..at(0x2203a)],
        [mi[at(0x22007)]; 50],
        "7: replicated"
    );
    assert_eq!(
        mi[at(0x250f1)..=at(0x25100)],
        mi[at(0x200f1)..=at(0x20100)],
        "9: DF = 1"
    );
    assert_eq!(mi[at(0x26000 + 4999)], 0x77, "10");
    assert_eq!(q(0x28018) as u32, 0x1234_abcd, "12: the 7th dword");
    assert_eq!(q(0x28020) & 0xffff_ffff_ffff, 0xabcd_abcd_abcd, "13");
    assert_eq!(
        mi[at(0x28100)..at(0x28114)],
        mi[at(0x20040)..at(0x20054)],
        "13b"
    );
    assert_eq!(
        mi[at(0x28200)..at(0x28208)],
        [0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0, 0],
        "13c"
    );
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        use iced_x86::Code;
        let calls = |c: Code| jit.helper_calls[c as usize];
        // Natively: 1, 2, 3, 4, 7, 8, 12, 13, 13b, 13c. Through the helper: 5, 6, 9, 10,
        // 11, 14.
        assert_eq!(calls(Code::Stosq_m64_RAX), 0);
        assert_eq!(calls(Code::Movsq_m64_m64), 0);
        assert_eq!(calls(Code::Stosd_m32_EAX), 0);
        assert_eq!(calls(Code::Stosw_m16_AX), 0);
        assert_eq!(calls(Code::Movsd_m32_m32), 1);
        assert_eq!(calls(Code::Movsw_m16_m16), 1);
        assert_eq!(calls(Code::Stosb_m8_AL), 1);
        assert_eq!(calls(Code::Movsb_m8_m8), 3);
    }
    check_lockstep(TestMode::Long64, &code, 100_000);
}

/// A long-mode test machine running `code` whose linear page 0x201000 maps to physical
/// 0x280000 (4 KiB page table at 0xA0000 for 0x200000..0x3FFFFF, identity otherwise), with a
/// byte pattern there: host memory is contiguous across the linear page boundary at 0x201000
/// only if the copy goes wrong.
fn remapped_machine(code: &[u8]) -> TestMachine {
    let mut t = TestMachine::new(TestMode::Long64, code);
    let pt = 0xa_0000u64;
    for k in 0..512u64 {
        let pa = if k == 1 {
            0x28_0000
        } else {
            0x20_0000 + k * 0x1000
        };
        t.mem.write_le(pt + k * 8, 8, pa | 0x7).unwrap();
    }
    // PD 0, entry 1 (0x200000): the page table instead of a 2 MiB page.
    let pd0 = rinx::testing::PAGE_TABLES + 0x2000;
    t.mem.write_le(pd0 + 8, 8, pt | 0x7).unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|k| (k * 7 + 3) as u8).collect();
    t.mem.write(0x28_0000, &pattern).unwrap();
    t
}

/// REP MOVS with 8 more registers cached in a loop (one of them in the host register the
/// native copy borrows) and ranges that cross from a page into one mapped elsewhere. Loop of
/// 50: r8..r15 and rbx updated from each other; rep movsq and rep movsb whose source crosses
/// linear 0x201000 (remapped: helper), rep movsb of 64 bytes out of the remapped page
/// (native), rep movsb whose destination crosses out of it (helper).
#[test]
fn rep_movs_keeps_cached_registers_and_respects_page_boundaries() {
    let code = [
        0xba, 0x32, 0x00, 0x00, 0x00, 0x49, 0x83, 0xc0, 0x01, 0x49, 0x83, 0xc1, 0x02, 0x49, 0x83,
        0xc2, 0x03, 0x49, 0x83, 0xc3, 0x04, 0x4d, 0x01, 0xc4, 0x4d, 0x01, 0xcd, 0x4d, 0x01, 0xd6,
        0x4d, 0x01, 0xdf, 0x4c, 0x01, 0xc3, 0xbe, 0xf0, 0x0f, 0x20, 0x00, 0xbf, 0x00, 0xa0, 0x02,
        0x00, 0xb9, 0x04, 0x00, 0x00, 0x00, 0xf3, 0x48, 0xa5, 0xbe, 0xf8, 0x0f, 0x20, 0x00, 0xbf,
        0x00, 0xa1, 0x02, 0x00, 0xb9, 0x10, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xbe, 0x00, 0x10, 0x20,
        0x00, 0xbf, 0x00, 0xa2, 0x02, 0x00, 0xb9, 0x40, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xbe, 0x00,
        0xa0, 0x02, 0x00, 0xbf, 0xf0, 0x1f, 0x20, 0x00, 0xb9, 0x14, 0x00, 0x00, 0x00, 0xf3, 0xa4,
        0x4d, 0x01, 0xe0, 0x4d, 0x01, 0xe9, 0x4d, 0x01, 0xf2, 0x4d, 0x01, 0xfb, 0x49, 0x01, 0xdc,
        0x49, 0x01, 0xdd, 0x4d, 0x01, 0xe6, 0x4d, 0x01, 0xef, 0x4c, 0x01, 0xcb, 0xff, 0xca, 0x0f,
        0x85, 0x79, 0xff, 0xff, 0xff, 0xf4,
    ];
    let mut i = remapped_machine(&code).with_engine(EngineKind::Interp);
    let mut j = remapped_machine(&code).with_engine(EngineKind::Jit);
    assert_eq!(i.run(100_000), StopReason::Halted);
    assert_eq!(j.run(100_000), StopReason::Halted);
    assert_eq!(i.cpu.s, j.cpu.s, "architectural state differs");
    assert_eq!(i.cpu.icount, j.cpu.icount);
    let (mut mi, mut mj) = (vec![0u8; 0x1000], vec![0u8; 0x1000]);
    for page in [0x2a000, 0x280000, 0x202000] {
        i.mem.read(page, &mut mi).unwrap();
        j.mem.read(page, &mut mj).unwrap();
        assert_eq!(mi, mj, "page {page:#x} differs");
    }
    i.mem.read(0x2a000, &mut mi).unwrap();
    // Linear 0x200ff8.. is zero up to the page end, then physical 0x280000's pattern.
    assert_eq!(mi[8..16], [0; 8]);
    assert_eq!(
        mi[16..32],
        (0..16u32).map(|k| (k * 7 + 3) as u8).collect::<Vec<_>>()
    );
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        use iced_x86::Code;
        assert_eq!(jit.helper_calls[Code::Movsq_m64_m64 as usize], 50);
        assert_eq!(jit.helper_calls[Code::Movsb_m8_m8 as usize], 100);
    }
    match lockstep(&|| remapped_machine(&code), 100_000) {
        Ok(_) => {}
        Err(d) => panic!("{d}"),
    }
}

/// SHL / SHR / SAR of a memory operand by a constant (`Op::ShiftMem`), random: every width,
/// the 1 form and imm8 counts (masked, 0, >= width), values at random offsets of a data page
/// (some crossing into the next page: helper), each followed by PUSHFQ into a sum, ADC
/// reading CF, or a CMP that overwrites the flags (dead shift flags), and the shifted value
/// added to a sum; then a shift of a non-canonical address (#GP, no IDT: triple fault).
#[test]
fn memory_shifts_by_a_constant_match_the_interpreter() {
    let mut rng = Rng(0x5eed_0005_f700_0001);
    let mut code = Vec::new();
    // mov esi, 0x20000
    code.extend([0xbe, 0x00, 0x00, 0x02, 0x00]);
    for _ in 0..400 {
        let size = [1u8, 2, 4, 8][(rng.next() % 4) as usize];
        let reg = [4u8, 5, 7][(rng.next() % 3) as usize]; // SHL, SHR, SAR
        let off: u32 = if rng.next() % 8 == 0 {
            0xffc
        } else {
            (rng.next() % 0xff0) as u32
        };
        // mov rax, imm64; mov [rsi + off], rax (disp32)
        code.extend([0x48, 0xb8]);
        code.extend(rng.next().to_le_bytes());
        code.extend([0x48, 0x89, 0x86]);
        code.extend(off.to_le_bytes());
        if size == 2 {
            code.push(0x66);
        }
        if size == 8 {
            code.push(0x48);
        }
        let modrm = 0x86 | (reg << 3);
        let by_one = rng.next() % 3 == 0;
        let op = match (size, by_one) {
            (1, true) => 0xd0,
            (_, true) => 0xd1,
            (1, false) => 0xc0,
            (_, false) => 0xc1,
        };
        code.extend([op, modrm]);
        code.extend(off.to_le_bytes());
        if !by_one {
            let count = match rng.next() % 4 {
                0 => rng.byte(),
                1 => 1,
                _ => (rng.next() % (u64::from(size) * 8)) as u8,
            };
            code.push(count);
        }
        match rng.next() % 3 {
            // pushfq; pop rcx; add r8, rcx
            0 => code.extend([0x9c, 0x59, 0x49, 0x01, 0xc8]),
            // adc r10, 0
            1 => code.extend([0x49, 0x83, 0xd2, 0x00]),
            // cmp ecx, edx (the shift's flags are dead)
            _ => code.extend([0x39, 0xd1]),
        }
        // mov rcx, [rsi + off]; add r9, rcx
        code.extend([0x48, 0x8b, 0x8e]);
        code.extend(off.to_le_bytes());
        code.extend([0x49, 0x01, 0xc9]);
    }
    // mov rsi, 0x8000_0000_0000_0000; shl dword [rsi], 3; hlt
    code.extend([
        0x48, 0xbe, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xc1, 0x26, 0x03, 0xf4,
    ]);
    let (i, mut j) = both(TestMode::Long64, &code, 100_000);
    assert_eq!(
        i.cpu.s.rip,
        CODE_BASE + code.len() as u64 - 4,
        "stopped at the #GP"
    );
    let (mut mi, mut mj) = (vec![0u8; 0x1008], vec![0u8; 0x1008]);
    i.mem.read(0x20000, &mut mi).unwrap();
    j.mem.read(0x20000, &mut mj).unwrap();
    assert_eq!(mi, mj, "data page differs");
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        use iced_x86::Code;
        let helper: u64 = [
            Code::Shl_rm8_1,
            Code::Shl_rm32_imm8,
            Code::Shr_rm64_1,
            Code::Sar_rm16_imm8,
        ]
        .iter()
        .map(|&c| jit.helper_calls[c as usize])
        .sum();
        assert!(
            helper < 60,
            "most memory shifts run natively ({helper} helper calls)"
        );
    }
    check_lockstep(TestMode::Long64, &code, 100_000);
}

/// CALL m64 as a native block exit (`Exit::CallMem`). 64-bit: 100 x `call [rip + table]`
/// (F: add edx, 3; ret), 50 x `call [rbx + 8]` (G: add rdi, rsp; mov r8, [rsp]; ret: sees
/// the return address pushed), then `call [rsi]` whose target is non-canonical (#GP(0) with
/// nothing pushed; no IDT: triple fault).
#[test]
fn native_call_m64_matches_including_a_non_canonical_target() {
    let code = [
        0xb9, 0x64, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x1d, 0x34, 0x00, 0x00, 0x00, 0xff, 0x15, 0x2e,
        0x00, 0x00, 0x00, 0xff, 0xc9, 0x75, 0xf6, 0xb9, 0x32, 0x00, 0x00, 0x00, 0xff, 0x53, 0x08,
        0xff, 0xc9, 0x75, 0xf9, 0x48, 0x89, 0xe5, 0x48, 0x8d, 0x35, 0x24, 0x00, 0x00, 0x00, 0xff,
        0x16, 0xf4, 0x83, 0xc2, 0x03, 0xc3, 0x48, 0x01, 0xe7, 0x4c, 0x8b, 0x04, 0x24, 0xc3, 0x0f,
        0x1f, 0x44, 0x00, 0x00, 0x2f, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x33, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80,
    ];
    let start = TestMachine::new(TestMode::Long64, &code);
    let (edx, rdi) = (start.gpr(2), start.gpr(7));
    let (i, mut j) = both(TestMode::Long64, &code, 10_000);
    assert_eq!(i.gpr(2), (edx + 300) & 0xffff_ffff, "100 calls of F");
    assert_eq!(
        i.gpr(7),
        rdi.wrapping_add(50 * (i.gpr(5) - 8)),
        "G saw RSP with the return address pushed"
    );
    assert_eq!(i.gpr(8), CODE_BASE + 0x1e, "G read its return address");
    assert_eq!(
        i.cpu.s.rip,
        CODE_BASE + 0x2c,
        "stopped at the faulting CALL"
    );
    assert_eq!(
        i.cpu.s.gpr[4],
        i.gpr(5),
        "nothing pushed by the faulting CALL"
    );
    let rinx::exec::Engine::Jit(jit) = &mut j.engine else {
        panic!("JIT engine expected on this host")
    };
    if jit::HOST_SUPPORTED {
        let calls = jit.helper_calls[iced_x86::Code::Call_rm64 as usize];
        assert!(calls <= 3, "the CALLs run natively ({calls} helper calls)");
    }
    check_lockstep(TestMode::Long64, &code, 10_000);
}

/// Random SSE code for the native forms (`Op::MovdToXmm`, `Op::MovdFromXmm`,
/// `Op::XmmShiftImm`): MOVD to and from XMM0-15 with every general register and with memory
/// (some operands crossing a page), and the eight shift-by-immediate forms with counts below,
/// at and above the element width.
fn random_sse(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut code = vec![0xbe, 0x00, 0x00, 0x02, 0x00]; // mov esi, 0x20000
    let gpr = |rng: &mut Rng| loop {
        let g = (rng.next() % 16) as u8;
        if g != 4 && g != 6 {
            break g;
        }
    };
    let rex = |r: u8, b: u8| 0x40 | (r >> 3) << 2 | (b >> 3);
    for _ in 0..n {
        let x = (rng.next() % 16) as u8;
        let off: u32 = if rng.next() % 8 == 0 {
            0xffe
        } else {
            (rng.next() % 0xff0) as u32
        };
        match rng.next() % 5 {
            0 | 1 => {
                let to = rng.next() % 2 == 0;
                let op = if to { 0x6e } else { 0x7e };
                if rng.next() % 2 == 0 {
                    let g = gpr(rng);
                    code.extend([0x66, rex(x, g), 0x0f, op, 0xc0 | (x & 7) << 3 | (g & 7)]);
                } else {
                    code.extend([0x66, rex(x, 0), 0x0f, op, 0x86 | (x & 7) << 3]);
                    code.extend(off.to_le_bytes());
                }
            }
            _ => {
                let (opc, ext) = [
                    (0x71, 6),
                    (0x72, 6),
                    (0x73, 6),
                    (0x71, 2),
                    (0x72, 2),
                    (0x73, 2),
                    (0x71, 4),
                    (0x72, 4),
                ][(rng.next() % 8) as usize];
                let imm = match rng.next() % 3 {
                    0 => rng.byte(),
                    _ => (rng.next() % 20) as u8,
                };
                code.extend([0x66, rex(0, x), 0x0f, opc, 0xc0 | ext << 3 | (x & 7), imm]);
            }
        }
        // Fresh values now and then: mov r64, imm64 into a random register.
        if rng.next() % 4 == 0 {
            let g = gpr(rng);
            code.extend([0x48 | (g >> 3), 0xb8 | (g & 7)]);
            code.extend(rng.next().to_le_bytes());
        }
    }
    code.push(0xf4);
    code
}

#[test]
fn sse_movd_and_shifts_by_immediate_match_including_unavailable_sse() {
    use rinx::exec::EngineKind as K;
    let mut rng = Rng(0x55e_0001_2345_6789);
    // CR4.OSFXSR set and CR0.TS clear (native); OSFXSR clear (#UD); CR0.TS set (#NM).
    let setups: [(u64, u64, &str); 3] = [
        (jit::abi::cr::CR4_OSFXSR, 0, "SSE enabled"),
        (0, 0, "CR4.OSFXSR = 0"),
        (jit::abi::cr::CR4_OSFXSR, jit::abi::cr::CR0_TS, "CR0.TS = 1"),
    ];
    for round in 0..6 {
        let code = random_sse(&mut rng, 300);
        for &(cr4, cr0, what) in &setups {
            let make = || {
                let mut t = TestMachine::new(TestMode::Long64, &code);
                t.cpu.s.cr4 |= cr4;
                t.cpu.s.cr0 |= cr0;
                for (k, x) in t.cpu.s.xmm.iter_mut().enumerate() {
                    *x = [
                        0x0123_4567_89ab_cdef ^ (k as u64 * 0x1111),
                        !(k as u64) << 17,
                    ];
                }
                let pattern: Vec<u8> = (0..0x1100u32).map(|k| (k * 13 + 5) as u8).collect();
                t.mem.write(0x20000, &pattern).unwrap();
                t
            };
            let mut i = make().with_engine(K::Interp);
            let mut j = make().with_engine(K::Jit);
            let si = i.run(100_000);
            assert_eq!(si, j.run(100_000), "round {round}, {what}");
            assert_eq!(i.cpu.s, j.cpu.s, "round {round}, {what}");
            assert_eq!(i.cpu.icount, j.cpu.icount, "round {round}, {what}");
            let (mut mi, mut mj) = (vec![0u8; 0x1100], vec![0u8; 0x1100]);
            i.mem.read(0x20000, &mut mi).unwrap();
            j.mem.read(0x20000, &mut mj).unwrap();
            assert_eq!(mi, mj, "round {round}, {what}: memory");
            if cr4 == 0 || cr0 != 0 {
                assert_eq!(
                    si,
                    StopReason::TripleFault,
                    "{what}: the first SSE op faults"
                );
                assert_eq!(i.cpu.s.rip, CODE_BASE + 5, "{what}: at the first SSE op");
            } else {
                assert_eq!(si, StopReason::Halted, "{what}");
                let rinx::exec::Engine::Jit(jit) = &j.engine else {
                    panic!("JIT engine expected on this host")
                };
                if jit::HOST_SUPPORTED {
                    use iced_x86::Code;
                    let h: u64 = [
                        Code::Movd_xmm_rm32,
                        Code::Movd_rm32_xmm,
                        Code::Pslld_xmm_imm8,
                    ]
                    .iter()
                    .map(|&c| jit.helper_calls[c as usize])
                    .sum();
                    assert!(h < 40, "round {round}: mostly native ({h} helper calls)");
                }
            }
            if cr4 != 0 && cr0 == 0 {
                match lockstep(&make, 100_000) {
                    Ok(_) => {}
                    Err(d) => panic!("round {round}: {d}"),
                }
            }
        }
    }
}
