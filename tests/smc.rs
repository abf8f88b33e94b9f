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
