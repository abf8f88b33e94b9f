//! Self-modifying code: a store into an instruction that the interpreter has already decoded
//! and cached must take effect the next time it executes (Intel SDM Vol. 3A §8.1.3).

use iced_x86::code_asm::*;
use rinx::cpu::StopReason;
use rinx::exec::{Engine, EngineKind};
use rinx::testing::{TestMachine, TestMode, CODE_BASE};

#[test]
fn patched_immediate_takes_effect() {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    let mut target = a.create_label();
    a.mov(ecx, 300u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.call(target).unwrap();
    a.add(ebx, eax).unwrap();
    a.dec(ecx).unwrap();
    a.jne(top).unwrap();
    // Patch the imm32 of `mov eax, 1` (opcode B8 at target, immediate at target + 1).
    a.lea(rdi, ptr(target)).unwrap();
    a.mov(byte_ptr(rdi + 1), 7).unwrap();
    a.call(target).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut target).unwrap();
    a.mov(eax, 1u32).unwrap();
    a.ret().unwrap();
    let code = a.assemble(CODE_BASE).unwrap();

    for engine in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(engine);
        assert_eq!(t.run(100_000), StopReason::Halted);
        assert_eq!(t.gpr(3), 300, "the loop ran the original instruction");
        assert_eq!(t.gpr(0), 7, "the patched instruction ran after the store");
        assert_eq!(t.cpu.dcache.stats.invalidations, 1);
        match &t.engine {
            Engine::Interp => assert!(t.cpu.dcache.stats.hits > 500, "the loop ran from the cache"),
            Engine::Jit(j) => {
                if jit::HOST_SUPPORTED {
                    assert!(
                        j.stats.block_insns > 1000,
                        "the loop ran as compiled blocks"
                    );
                    assert!(
                        j.stats.invalidations >= 1,
                        "the patched block was retranslated"
                    );
                }
            }
            Engine::Lockstep(l) => assert!(l.divergence.is_none()),
        }
    }
}

/// Code in another page, patched between calls and reached through a direct CALL, an indirect
/// CALL (run by the helper) and a RET into patched code: none of these exits may reach a block
/// translated before the store (the JIT's jump cache must miss after it).
#[test]
fn code_patched_in_another_page_is_seen_through_call_indirect_call_and_ret() {
    for bits in [64u32, 32] {
        let far = CODE_BASE + 0x1000;
        // F (other page): mov eax, imm32; ret. G (other page): call H; mov edx, imm32; ret,
        // where H (first page) patches G's `mov edx` immediate before returning into it.
        let mut f = CodeAssembler::new(bits).unwrap();
        f.mov(eax, 0u32).unwrap();
        f.ret().unwrap();
        let f_code = f.assemble(far).unwrap();
        let g_at = far + 0x40;
        let h_at = CODE_BASE + 0x800;
        let mut g = CodeAssembler::new(bits).unwrap();
        g.call(h_at).unwrap();
        g.mov(edx, 0u32).unwrap();
        g.ret().unwrap();
        let g_code = g.assemble(g_at).unwrap();
        let g_imm = g_at + 5 + 1;
        // H: mov [g_imm], ecx; ret
        let mut h = CodeAssembler::new(bits).unwrap();
        h.mov(dword_ptr(g_imm), ecx).unwrap();
        h.ret().unwrap();
        let h_code = h.assemble(h_at).unwrap();

        // Main: for ecx = 1..=100 { [far+1] = ecx; call F; add ebx, eax;
        //   [far+1] = ecx*2 (through esi); mov eax, far; call eax/rax; add ebp, eax;
        //   call G; add edi, edx }; hlt
        let mut a = CodeAssembler::new(bits).unwrap();
        let mut top = a.create_label();
        a.mov(ecx, 1u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.mov(dword_ptr(far + 1), ecx).unwrap();
        a.call(far).unwrap();
        a.add(ebx, eax).unwrap();
        a.lea(esi, ptr(ecx + ecx)).unwrap();
        a.mov(dword_ptr(far + 1), esi).unwrap();
        a.mov(eax, far as u32).unwrap();
        if bits == 64 {
            a.call(rax).unwrap();
        } else {
            a.call(eax).unwrap();
        }
        a.add(ebp, eax).unwrap();
        a.call(g_at).unwrap();
        a.add(edi, edx).unwrap();
        a.inc(ecx).unwrap();
        a.cmp(ecx, 101).unwrap();
        a.jne(top).unwrap();
        a.hlt().unwrap();
        let code = a.assemble(CODE_BASE).unwrap();
        assert!(code.len() < 0x800);

        let mode = if bits == 64 {
            TestMode::Long64
        } else {
            TestMode::Flat32
        };
        for engine in EngineKind::ALL {
            let mut t = TestMachine::new(mode, &code).with_engine(engine);
            t.mem.write(far, &f_code).unwrap();
            t.mem.write(g_at, &g_code).unwrap();
            t.mem.write(h_at, &h_code).unwrap();
            assert_eq!(
                t.run(1_000_000),
                StopReason::Halted,
                "{bits}-bit {engine:?}"
            );
            let sum: u64 = (1..=100).sum();
            assert_eq!(t.gpr(3), sum, "direct call ({bits}-bit, {engine:?})");
            assert_eq!(t.gpr(5), 2 * sum, "indirect call ({bits}-bit, {engine:?})");
            assert_eq!(
                t.gpr(7),
                sum,
                "ret into patched code ({bits}-bit, {engine:?})"
            );
            if let Engine::Lockstep(l) = &t.engine {
                assert!(l.divergence.is_none());
            }
        }
    }
}
