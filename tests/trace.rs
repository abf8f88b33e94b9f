//! `--trace`: small guests with a known instruction flow, traced as JSON lines, and the trace's
//! content checked record by record; plus the `rinx run --trace ...` command line on the demo.

use iced_x86::code_asm::*;
use jit::abi::{sreg, Segment};
use rinx::cpu::StopReason;
use rinx::exec::{Engine, EngineKind};
use rinx::testing::{TestMachine, TestMode, CODE_BASE};
use rinx::trace::{Filter, Format, Kinds, SharedBuf, Tracer};
use serde_json::Value;

/// Assembles 64-bit code at CODE_BASE.
fn asm64(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(CODE_BASE).unwrap()
}

/// Runs `t` with a JSON tracer of `kinds` and returns the records.
fn traced(t: &mut TestMachine, kinds: &str, budget: u64) -> (StopReason, Vec<Value>) {
    let buf = SharedBuf::default();
    let kinds = Kinds::parse(kinds).unwrap();
    t.cpu.trace.set(Tracer::new(
        kinds,
        Filter::default(),
        Format::Json,
        Box::new(buf.clone()),
    ));
    let stop = t.run(budget);
    t.cpu.trace.take().unwrap().finish().unwrap();
    let recs = buf
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (stop, recs)
}

/// The records without the field that says which engine ran a block (everything else must be
/// the same under both engines).
fn engine_neutral(recs: &[Value]) -> Vec<Value> {
    recs.iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("engine");
            r
        })
        .collect()
}

/// Compiled-block entries the JIT made (0 under the interpreter).
fn jit_entries(t: &TestMachine) -> u64 {
    match &t.engine {
        Engine::Jit(j) => j.stats.entries,
        Engine::Lockstep(l) => l.jit().stats.entries,
        Engine::Interp => 0,
    }
}

fn of_kind<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["kind"] == kind).collect()
}

fn change<'a>(insn: &'a Value, reg: &str) -> Option<&'a Value> {
    insn["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["reg"] == reg)
}

#[test]
fn insn_records_show_bytes_text_registers_flags_and_memory() {
    let code = asm64(|a| {
        a.mov(eax, 5)?;
        a.add(eax, -5)?; // 0: ZF and PF set, CF set (5 + 0xFFFFFFFB carries)
        a.mov(rbx, 0x2_0000u64)?;
        a.mov(qword_ptr(rbx + 8), rbx)?;
        a.mov(rcx, qword_ptr(rbx + 8))?;
        a.hlt()
    });
    let mut t = TestMachine::new(TestMode::Long64, &code);
    let (stop, recs) = traced(&mut t, "insn", 100);
    assert_eq!(stop, StopReason::Halted);
    let insns = of_kind(&recs, "insn");
    assert_eq!(insns.len(), 6, "{recs:#?}");
    let i0 = insns[0];
    assert_eq!(i0["n"], 0);
    assert_eq!(i0["rip"], "0x10000");
    assert_eq!(i0["la"], "0x10000");
    assert_eq!(i0["cs"], "0x8");
    assert_eq!(i0["mode"], "long64");
    assert_eq!(i0["bytes"], "b805000000");
    assert_eq!(i0["asm"], "mov eax, 5");
    let c_rax = change(i0, "rax").unwrap();
    assert_eq!(
        (&c_rax["old"], &c_rax["new"]),
        (&"0x0".into(), &"0x5".into())
    );
    assert_eq!(i0["changes"].as_array().unwrap().len(), 1, "{i0}");
    // add eax, -5: RAX 5 -> 0 and the flags ZF, PF, CF, AF set.
    let i1 = insns[1];
    assert_eq!(i1["asm"], "add eax, 0FFFFFFFBh");
    assert_eq!(change(i1, "rax").unwrap()["new"], "0x0");
    let fl = change(i1, "rflags").unwrap();
    let detail = fl["detail"].as_str().unwrap();
    for f in ["+CF", "+PF", "+AF", "+ZF"] {
        assert!(detail.contains(f), "{detail}");
    }
    // The store and the load, with address, size and value.
    let st = &insns[3]["mem"][0];
    assert_eq!(st["op"], "w");
    assert_eq!(st["la"], "0x20008");
    assert_eq!(st["size"], 8);
    assert_eq!(st["value"], "0x20000");
    assert_eq!(insns[3]["changes"].as_array().unwrap().len(), 0);
    let ld = &insns[4]["mem"][0];
    assert_eq!(
        (&ld["op"], &ld["la"], &ld["value"]),
        (&"r".into(), &"0x20008".into(), &"0x20000".into())
    );
    assert_eq!(change(insns[4], "rcx").unwrap()["new"], "0x20000");
    assert_eq!(insns[5]["asm"], "hlt");
}

const IDT: u64 = 0x3_0000;
const TSS: u64 = 0x3_1000;
const GDT: u64 = 0x3_2000;
const HANDLER: u64 = CODE_BASE + 0x800;

/// A 64-bit kernel around the test machine: GDT (0x08 = 64-bit code), IDT with #GP and #PF
/// gates to a HLT at HANDLER, a TSS with RSP0; then drops to CPL 3 (CS 0x1b) for the program.
fn kernel_then_user(t: &mut TestMachine) {
    let m = &mut t.mem;
    m.write_le(GDT + 8, 8, 0x0020_9a00_0000_0000).unwrap();
    m.write_le(GDT + 16, 8, 0x0000_9200_0000_0000).unwrap();
    for v in [13u64, 14] {
        let lo = (HANDLER & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((HANDLER >> 16) << 48);
        m.write_le(IDT + v * 16, 8, lo).unwrap();
        m.write_le(IDT + v * 16 + 8, 8, 0).unwrap();
    }
    m.write_le(TSS + 4, 8, 0x7_0000).unwrap();
    m.write(HANDLER, &[0xf4]).unwrap();
    let s = &mut t.cpu.s;
    s.gdtr.base = GDT;
    s.gdtr.limit = 0x17;
    s.idtr.base = IDT;
    s.idtr.limit = 0xfff;
    s.tr = Segment {
        base: TSS,
        limit: 0x67,
        selector: 0x18,
        attr: Segment::ATTR_P | 0xb,
    };
    s.cpl = 3;
    s.seg[sreg::CS].selector = 0x1b;
    s.seg[sreg::CS].attr |= 3 << 5;
}

#[test]
fn ring_trace_shows_sgdt_done_at_cpl3_and_lgdt_refused_with_gp0() {
    let code = asm64(|a| {
        // Native ALU ops first, so that the JIT has something to compile around the helpers.
        a.mov(eax, 7)?;
        a.add(eax, 1)?;
        a.sgdt(ptr(0x2_0000u64))?;
        a.lgdt(ptr(0x2_0000u64))?;
        a.hlt()
    });
    let mut per_engine = Vec::new();
    for e in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(e);
        kernel_then_user(&mut t);
        let (stop, recs) = traced(&mut t, "ring,exc,mode", 100);
        assert_eq!(stop, StopReason::Halted, "{e:?}");
        check_ring_trace(&t, &recs);
        if e == EngineKind::Jit && jit::HOST_SUPPORTED {
            // The records came from compiled blocks, not from interpreter steps.
            assert!(jit_entries(&t) >= 2, "the JIT ran its blocks");
        }
        per_engine.push(recs);
    }
    assert_eq!(
        per_engine[0], per_engine[1],
        "same records under both engines"
    );
}

fn check_ring_trace(t: &TestMachine, recs: &[Value]) {
    let recs = recs.to_vec();
    let ring = of_kind(&recs, "ring");
    assert_eq!(ring.len(), 3, "{recs:#?}");
    assert_eq!(ring[0]["insn"], "sgdt fword ptr [20000h]");
    assert_eq!(ring[0]["cpl"], 3);
    assert_eq!(ring[0]["class"], "sensitive");
    assert_eq!(ring[0]["result"], "done");
    assert_eq!(ring[1]["insn"], "lgdt fword ptr [20000h]");
    assert_eq!(ring[1]["cpl"], 3);
    assert_eq!(ring[1]["class"], "privileged");
    assert_eq!(ring[1]["result"], "#GP(0x0)");
    // The handler's HLT, at CPL 0 now.
    assert_eq!(
        (&ring[2]["insn"], &ring[2]["cpl"]),
        (&"hlt".into(), &0.into())
    );
    // SGDT really stored the GDTR (limit 0x17, base GDT).
    assert_eq!(t.mem.read_le(0x2_0000, 2).unwrap(), 0x17);
    assert_eq!(t.mem.read_le(0x2_0002, 8).unwrap(), GDT);
    // The #GP(0) is delivered to the CPL 0 handler, which is a privilege change.
    let exc = of_kind(&recs, "exc");
    assert_eq!(exc.len(), 1, "{recs:#?}");
    assert_eq!(exc[0]["n"], 3);
    assert_eq!(exc[0]["vector"], 13);
    assert_eq!(exc[0]["name"], "#GP");
    assert_eq!(exc[0]["event"], "fault");
    assert_eq!(exc[0]["error_code"], "0x0");
    assert_eq!(exc[0]["cpl"], 3);
    assert_eq!(exc[0]["to"], format!("0008:{HANDLER:x}"));
    let mode = of_kind(&recs, "mode");
    assert_eq!(mode.len(), 1, "{recs:#?}");
    assert_eq!(
        (
            &mode[0]["what"],
            &mode[0]["from"],
            &mode[0]["to"],
            &mode[0]["cause"]
        ),
        (&"cpl".into(), &3.into(), &0.into(), &"#GP delivery".into())
    );
}

#[test]
fn walk_trace_shows_four_levels_and_the_page_fault_record() {
    // Map 0x400000 through a 4 KiB page table at 0xA0000: PTE[0] -> 0x500000, PTE[1] absent.
    const PT: u64 = 0xa_0000;
    let code = asm64(|a| {
        a.mov(rax, qword_ptr(0x40_0010u64))?;
        a.mov(qword_ptr(0x40_1008u64), rax)?;
        a.hlt()
    });
    let mut per_engine = Vec::new();
    for e in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(e);
        t.mem.write_le(PT, 8, 0x50_0000 | 0x3).unwrap();
        t.mem.write_le(0x50_0010, 8, 0x1234_5678).unwrap();
        // PD for the first GiB is at PAGE_TABLES + 0x2000; entry 2 maps 0x400000.
        let pde = rinx::testing::PAGE_TABLES + 0x2000 + 2 * 8;
        t.mem.write_le(pde, 8, PT | 0x3).unwrap();
        kernel_then_user(&mut t);
        // Stay at CPL 0 for this one.
        t.cpu.s.cpl = 0;
        t.cpu.s.seg[sreg::CS].selector = 0x08;
        t.cpu.s.seg[sreg::CS].attr &= !(3 << 5);
        let (stop, recs) = traced(&mut t, "walk,exc", 100);
        assert_eq!(stop, StopReason::Halted);
        assert_eq!(t.gpr(0), 0x1234_5678);
        let walks: Vec<_> = of_kind(&recs, "walk")
            .into_iter()
            .filter(|w| w["va"] == "0x400010" || w["va"] == "0x401008")
            .collect();
        assert_eq!(walks.len(), 2, "{recs:#?}");
        let w = walks[0];
        assert_eq!(w["paging"], "4-level");
        assert_eq!(w["access"], "read");
        let pt = rinx::testing::PAGE_TABLES;
        let expect = [
            // A (0x20) is already set there: the instruction fetch walked those levels first.
            ("PML4", pt, pt + 0x1000 + 0x27),
            ("PDPT", pt + 0x1000, pt + 0x2000 + 0x27),
            ("PD", pde, PT | 3),
            ("PT", PT, 0x50_0003),
        ];
        let levels = w["levels"].as_array().unwrap();
        assert_eq!(levels.len(), 4, "{w}");
        for (l, (table, addr, entry)) in levels.iter().zip(expect) {
            assert_eq!(l["table"], table);
            assert_eq!(l["entry_addr"], format!("{addr:#x}"), "{w}");
            assert_eq!(l["entry"], format!("{entry:#x}"), "{w}");
        }
        assert_eq!(w["pa"], "0x500010");
        assert_eq!(w["ma"], "ram0+0x500010");
        // The store to the absent page: 4 levels read, the last entry not present, #PF.
        let f = walks[1];
        assert_eq!(f["access"], "write");
        assert_eq!(f["levels"].as_array().unwrap().len(), 4);
        assert_eq!(f["levels"][3]["entry_addr"], format!("{:#x}", PT + 8));
        assert_eq!(f["levels"][3]["entry"], "0x0");
        assert_eq!(f["pf_code"], "0x2");
        assert!(f.get("pa").is_none());
        let exc = of_kind(&recs, "exc");
        assert_eq!(exc.len(), 1, "{recs:#?}");
        let ex = exc[0];
        assert_eq!(
            (ex["vector"].as_u64(), ex["name"].as_str()),
            (Some(14), Some("#PF"))
        );
        assert_eq!(ex["n"], 1);
        assert_eq!(ex["error_code"], "0x2");
        assert_eq!(ex["cr2"], "0x401008");
        assert_eq!(ex["event"], "fault");
        // The faulting store follows the 10-byte `mov rax, moffs64`.
        assert_eq!(ex["from"], format!("0008:{:x}", CODE_BASE + 10));
        if t.engine.kind() == EngineKind::Jit && jit::HOST_SUPPORTED {
            assert!(jit_entries(&t) >= 1, "the JIT ran its block");
        }
        per_engine.push((
            walks.into_iter().cloned().collect::<Vec<_>>(),
            exc.into_iter().cloned().collect::<Vec<_>>(),
        ));
    }
    assert_eq!(
        per_engine[0], per_engine[1],
        "same data walks and #PF under both engines"
    );
}

#[test]
fn filters_select_instructions_by_window_range_and_cpl() {
    let code = asm64(|a| {
        for _ in 0..10 {
            a.inc(eax)?;
        }
        a.hlt()
    });
    let run = |filter: Filter| {
        let mut t = TestMachine::new(TestMode::Long64, &code);
        let buf = SharedBuf::default();
        t.cpu.trace.set(Tracer::new(
            Kinds::INSN,
            filter,
            Format::Text,
            Box::new(buf.clone()),
        ));
        t.run(100);
        t.cpu.trace.take().unwrap().finish().unwrap();
        buf.text()
    };
    let w = run(Filter {
        window: Some((3, 5)),
        ..Filter::default()
    });
    let ns: Vec<&str> = w
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(ns, ["3", "4", "5"], "{w}");
    // inc eax is 2 bytes: 0x10004..=0x10007 holds instructions 2 and 3.
    let r = run(Filter {
        range: Some((CODE_BASE + 4, CODE_BASE + 7)),
        ..Filter::default()
    });
    assert_eq!(r.lines().count(), 2, "{r}");
    assert!(r.lines().all(|l| l.contains("inc eax")), "{r}");
    assert_eq!(
        run(Filter {
            cpl: Some(3),
            ..Filter::default()
        }),
        ""
    );
    assert_eq!(
        run(Filter {
            cpl: Some(0),
            ..Filter::default()
        })
        .lines()
        .count(),
        11
    );
}

#[test]
fn cli_traces_the_demo_guest_to_a_file() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("rinx-trace-{}.txt", std::process::id()));
    let json = dir.join(format!("rinx-trace-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args([
            "run", "--serial", "null", "--memory", "16M", "--icount", "0",
        ])
        .args(["--trace", "all", "--trace-window", "0-200", "--trace-out"])
        .arg(&path)
        .arg("--stats")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stats = String::from_utf8_lossy(&out.stderr);
    assert!(stats.contains("instructions executed"), "{stats}");
    assert!(stats.contains("TLB"), "{stats}");
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let insns: Vec<&str> = text.lines().filter(|l| l.starts_with("insn")).collect();
    assert_eq!(insns.len(), 201, "{text}");
    assert!(
        insns[0].starts_with("insn        0 0000:1000     la=0x1000"),
        "{}",
        insns[0]
    );
    assert!(insns[200].starts_with("insn      200 "), "{}", insns[200]);
    assert!(
        text.contains("ring        3 la=0x1007 cpl0 cli (iopl-sensitive) -> done"),
        "{text}"
    );
    // JSON lines of the same window parse, and contain nothing past instruction 200.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args([
            "run", "--serial", "null", "--memory", "16M", "--icount", "0",
        ])
        .args([
            "--trace",
            "insn,ring",
            "--trace-format",
            "json",
            "--trace-window",
            "0-200",
        ])
        .arg("--trace-out")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recs.iter().all(|r| r["n"].as_u64().unwrap() <= 200));
    assert_eq!(of_kind(&recs, "insn").len(), 201);
    assert_eq!(of_kind(&recs, "insn")[0]["mode"], "real");
}

#[test]
fn cli_stats_under_the_jit_report_its_counters() {
    if !jit::HOST_SUPPORTED {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args([
            "run", "--serial", "null", "--memory", "16M", "--icount", "0",
        ])
        .args(["--engine", "jit", "--stats", "--trace", "exc,mode"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = |tag: &str| {
        err.lines()
            .find(|l| l.contains(tag))
            .unwrap_or_else(|| panic!("no {tag:?} in\n{err}"))
            .to_string()
    };
    let num = |l: &str, after: &str| -> u64 {
        let i = l.find(after).unwrap() + after.len();
        l[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let blocks = num(&line("jit: blocks translated"), "translated  ");
    assert!(blocks > 100, "{err}");
    let cache = line("jit: code cache");
    assert!(
        num(&cache, "cache         ") > blocks,
        "mostly hits: {cache}"
    );
    // The demo's #PF and #GP both come from compiled blocks (exc and mode do not stop the JIT),
    // and its serial I/O ends blocks in the ring layer.
    let exits = line("jit: exits by reason");
    assert_eq!(num(&exits, "exception "), 2, "{exits}");
    assert!(num(&exits, "ring-layer ") > 1000, "{exits}");
    assert_eq!(num(&line("jit: interpreter steps"), "steps  "), 0, "{err}");
    assert!(line("time per engine").contains("compiled code"), "{err}");
    // Helper calls by instruction form: the serial port's IN / OUT lead the list (each of the
    // demo's characters is one IN of the line status and one OUT).
    let helpers = line("jit: helper calls");
    assert!(num(&helpers, "calls       ") > 1000, "{helpers}");
    assert!(line("In_AL_DX").contains('%'), "{err}");
    assert!(line("Out_DX_AL").contains('%'), "{err}");
    // The trace itself (stderr here): the demo's exceptions and mode switches.
    assert!(
        err.contains("vector 0x0e #PF fault error_code=0x6 cr2=0x1f0000"),
        "{err}"
    );
    assert!(err.contains("cr0.pe 0 -> 1 by mov (now prot16)"), "{err}");
}

/// A loop with a known block structure (64-bit):
///
/// ```text
/// A  0x10000  mov ecx, 3 / add eax, ecx / dec ecx / jnz L      (4 instructions; L = add)
/// B  L        add eax, ecx / dec ecx / jnz L                   (3, run twice more)
/// C  after    mov [0x20000], eax / hlt                         (2: HLT ends it, ring layer)
/// ```
fn block_guest() -> Vec<u8> {
    asm64(|a| {
        let mut l = a.create_label();
        a.mov(ecx, 3)?;
        a.set_label(&mut l)?;
        a.add(eax, ecx)?;
        a.dec(ecx)?;
        a.jnz(l)?;
        a.mov(dword_ptr(0x2_0000u64), eax)?;
        a.hlt()
    })
}

#[test]
fn block_records_follow_the_same_blocks_under_both_engines() {
    let code = block_guest();
    let l = CODE_BASE + 5; // mov ecx, imm32 is 5 bytes
    let c = l + 2 + 2 + 2; // add r32, r32; dec r32; jnz rel8
    let mut per_engine = Vec::new();
    for e in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(e);
        let (stop, recs) = traced(&mut t, "block,exc", 100);
        assert_eq!(stop, StopReason::Halted);
        assert_eq!(t.gpr(0), 6, "3 + 2 + 1");
        assert_eq!(t.mem.read_le(0x2_0000, 4).unwrap(), 6);
        let blocks = of_kind(&recs, "block");
        let got: Vec<(u64, String, String, u64)> = blocks
            .iter()
            .map(|b| {
                (
                    b["n"].as_u64().unwrap(),
                    b["la"].as_str().unwrap().to_string(),
                    b["pa"].as_str().unwrap().to_string(),
                    b["insns"].as_u64().unwrap(),
                )
            })
            .collect();
        let hex = |x: u64| format!("{x:#x}");
        assert_eq!(
            got,
            [
                (0, hex(CODE_BASE), hex(CODE_BASE), 4),
                (4, hex(l), hex(l), 3),
                (7, hex(l), hex(l), 3),
                (10, hex(c), hex(c), 2),
            ],
            "{e:?}: {recs:#?}"
        );
        // The disassembly comes with the first sight of each block only.
        let asm = |i: usize| -> Vec<&str> {
            blocks[i]["asm"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap()).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            asm(0),
            [
                "0x10000  b903000000           mov ecx, 3",
                "0x10005  01c8                 add eax, ecx",
                "0x10007  ffc9                 dec ecx",
                "0x10009  75fa                 jne short 0000000000010005h",
            ]
        );
        assert_eq!(asm(1).len(), 3);
        assert!(asm(2).is_empty(), "B was shown already");
        assert_eq!(asm(3)[1], "0x10014  f4                   hlt");
        assert_eq!(blocks[3]["size"], 10, "mov moffs32, eax (9 bytes) + hlt");
        assert_eq!(blocks[0]["mode"], "long64");
        assert_eq!(blocks[0]["cpl"], 0);
        let engines: Vec<&str> = blocks
            .iter()
            .map(|b| b["engine"].as_str().unwrap())
            .collect();
        if e == EngineKind::Jit && jit::HOST_SUPPORTED {
            // Every block ran as compiled code: one entry per record (the loop in B exits to
            // the dispatcher after each pass while `block` is traced).
            assert_eq!(engines, ["jit"; 4]);
            assert_eq!(jit_entries(&t), 4);
        } else {
            assert_eq!(engines, ["interp"; 4]);
        }
        per_engine.push(engine_neutral(&recs));
    }
    assert_eq!(
        per_engine[0], per_engine[1],
        "same block sequence under both engines"
    );
}

#[test]
fn block_records_obey_filters_and_text_format() {
    let code = block_guest();
    let l = CODE_BASE + 5;
    for e in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(e);
        let buf = SharedBuf::default();
        t.cpu.trace.set(Tracer::new(
            Kinds::parse("block").unwrap(),
            Filter {
                range: Some((l, l)),
                ..Filter::default()
            },
            Format::Text,
            Box::new(buf.clone()),
        ));
        assert_eq!(t.run(100), StopReason::Halted);
        t.cpu.trace.take().unwrap().finish().unwrap();
        let text = buf.text();
        let heads: Vec<&str> = text.lines().filter(|l| l.starts_with("block")).collect();
        assert_eq!(
            heads.len(),
            2,
            "{e:?}: only the blocks starting at L\n{text}"
        );
        assert!(
            heads[0].starts_with("block       4 0008:10005    la=0x10005    pa=0x10005    cpl0 long64   3 insns, 6 bytes"),
            "{}",
            heads[0]
        );
        assert!(heads[1].starts_with("block       7 "), "{}", heads[1]);
        // The disassembly follows the first record, one `|` line per instruction.
        let asm: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('|'))
            .collect();
        assert_eq!(asm.len(), 3, "{text}");
        assert!(
            asm[0].ends_with("0x10005  01c8                 add eax, ecx"),
            "{}",
            asm[0]
        );
        // A window that starts inside block A: A is not reported (it started before), B is.
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(e);
        let (_, recs) = {
            let buf = SharedBuf::default();
            t.cpu.trace.set(Tracer::new(
                Kinds::parse("block").unwrap(),
                Filter {
                    window: Some((2, 8)),
                    ..Filter::default()
                },
                Format::Json,
                Box::new(buf.clone()),
            ));
            t.run(100);
            t.cpu.trace.take().unwrap().finish().unwrap();
            let recs: Vec<Value> = buf
                .text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            ((), recs)
        };
        let ns: Vec<u64> = recs.iter().map(|r| r["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, [4, 7], "{e:?}");
    }
}

#[test]
fn jit_with_insn_tracing_steps_every_instruction_like_the_interpreter() {
    let code = block_guest();
    let mut per_engine = Vec::new();
    for e in EngineKind::ALL {
        let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(e);
        let (_, recs) = traced(&mut t, "insn,block", 100);
        assert_eq!(of_kind(&recs, "insn").len(), 12);
        // Blocks come before the instructions they hold.
        assert_eq!(recs[0]["kind"], "block");
        assert_eq!(recs[1]["kind"], "insn");
        assert_eq!(recs[5]["kind"], "block");
        assert_eq!(
            jit_entries(&t),
            0,
            "no compiled block runs while `insn` is traced"
        );
        per_engine.push(engine_neutral(&recs));
    }
    assert_eq!(per_engine[0], per_engine[1]);
}

#[test]
fn jit_stats_count_translations_cache_hits_and_exits_by_reason() {
    if !jit::HOST_SUPPORTED {
        return;
    }
    // A: mov ecx, 10000 / dec ecx / jnz L / out 80h, al    B (= L): dec ecx / jnz L (loops in
    // compiled code) / out 80h, al (ring layer)    D: mov rax, [non-canonical] (#GP)
    // handler: hlt. A and B are superblocks: each JNZ is a side exit, OUT its fall-through.
    let code = asm64(|a| {
        let mut l = a.create_label();
        a.mov(ecx, 10_000)?;
        a.set_label(&mut l)?;
        a.dec(ecx)?;
        a.jnz(l)?;
        a.out(0x80, al)?;
        a.mov(rax, qword_ptr(0x8000_0000_0000_0000u64))?;
        a.hlt()
    });
    let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(EngineKind::Jit);
    kernel_then_user(&mut t);
    t.cpu.s.cpl = 0;
    t.cpu.s.seg[sreg::CS].selector = 0x08;
    t.cpu.s.seg[sreg::CS].attr &= !(3 << 5);
    assert_eq!(t.run(100_000), StopReason::Halted);
    assert_eq!(t.cpu.exceptions[13], 1);
    assert_eq!(t.cpu.s.rip, HANDLER + 1);
    let Engine::Jit(j) = &t.engine else {
        unreachable!()
    };
    let s = j.stats;
    use rinx::exec::jit::ExitReason as R;
    // A, B, D and the handler's block, each translated once; B entered twice: after 8192
    // passes (16,384 instructions, MAX_INSNS_PER_ENTRY) it exits to the dispatcher.
    assert_eq!(
        (s.translations, s.cache_misses, s.cache_hits),
        (4, 4, 1),
        "{s:?}"
    );
    assert_eq!(s.entries, 5);
    assert_eq!(s.exits[R::LoopLimit as usize], 1, "{s:?}");
    assert_eq!(s.exits[R::End as usize], 1, "A (its side exit to B): {s:?}");
    assert_eq!(s.exits[R::Ring as usize], 2, "OUT and HLT: {s:?}");
    assert_eq!(s.exits[R::Exception as usize], 1, "the #GP: {s:?}");
    assert_eq!(s.exits.iter().sum::<u64>(), s.entries);
    assert_eq!(s.interp_steps, 0);
    assert_eq!(s.block_insns, t.cpu.icount);
    assert_eq!(t.cpu.icount, 1 + 2 * 10_000 + 1 + 1 + 1);
    assert!(s.run_ns > 0 && s.run_ns >= s.translate_ns + s.interp_ns);
    let report = rinx::trace::stats::jit_report(&s);
    assert!(report.contains("blocks translated  4 "), "{report}");
    assert!(
        report.contains("code cache         1 hits, 4 misses (20.00% hit rate)"),
        "{report}"
    );
    assert!(
        report.contains("exits by reason    end 1, loop-limit 1, ring-layer 2, exception 1"),
        "{report}"
    );
    assert!(report.contains("time per engine"), "{report}");
}

/// The whole demo guest (real mode to long mode, ring 3, SYSCALL, #PF, #GP, timer interrupts)
/// traced with every kind but `insn` gives the same records under both engines, the JIT's
/// coming from compiled blocks.
#[test]
fn cli_demo_trace_is_the_same_under_both_engines() {
    let run = |engine: &str| {
        let path = std::env::temp_dir().join(format!(
            "rinx-trace-eq-{engine}-{}.jsonl",
            std::process::id()
        ));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rinx"))
            .args([
                "run", "--serial", "null", "--memory", "16M", "--icount", "0",
            ])
            .args(["--engine", engine, "--trace", "ring,mode,walk,exc,block"])
            .args(["--trace-format", "json", "--trace-out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let interp = run("interp");
    let jit = run("jit");
    for kind in ["ring", "mode", "walk", "exc", "block"] {
        assert!(!of_kind(&interp, kind).is_empty(), "{kind}");
    }
    assert_eq!(
        of_kind(&interp, "exc").len(),
        7,
        "#PF, #GP and 5 timer interrupts"
    );
    assert_eq!(interp.len(), jit.len());
    for (i, (a, b)) in engine_neutral(&interp)
        .iter()
        .zip(engine_neutral(&jit))
        .enumerate()
    {
        assert_eq!(*a, b, "record {i}");
    }
    if jit::HOST_SUPPORTED {
        let compiled = of_kind(&jit, "block")
            .iter()
            .filter(|b| b["engine"] == "jit")
            .count();
        assert_eq!(
            compiled,
            of_kind(&jit, "block").len(),
            "every block compiled"
        );
    }
}

#[test]
fn jit_stats_count_failed_translations_of_page_straddling_code() {
    if !jit::HOST_SUPPORTED {
        return;
    }
    // jmp to 0x10ffd, where `mov eax, 1` (5 bytes) straddles into the next page: the JIT
    // translates it as a one-instruction block that depends on both pages.
    let code = asm64(|a| a.jmp(0x1_0ffdu64));
    let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(EngineKind::Jit);
    t.mem.write(0x1_0ffd, &[0xb8, 1, 0, 0, 0, 0xf4]).unwrap();
    assert_eq!(t.run(100), StopReason::Halted);
    assert_eq!(t.gpr(0), 1);
    let Engine::Jit(j) = &t.engine else {
        unreachable!()
    };
    let s = j.stats;
    assert_eq!((s.failed_translations, s.interp_steps), (0, 0), "{s:?}");
    assert_eq!((s.translations, s.cache_misses), (3, 3), "{s:?}");

    // The same with the second page not present (a 4 KiB page table for the first 2 MiB,
    // page 0x11000 absent): the translation fails, the interpreter runs the instruction and
    // raises #PF (no IDT: a triple fault).
    let mut t = TestMachine::new(TestMode::Long64, &code).with_engine(EngineKind::Jit);
    t.mem.write(0x1_0ffd, &[0xb8, 1, 0, 0, 0, 0xf4]).unwrap();
    let pt = 0xb_0000u64;
    for i in 0..512u64 {
        let present = if i == 0x11 { 0 } else { 7 };
        t.mem.write_le(pt + i * 8, 8, (i << 12) | present).unwrap();
    }
    t.mem
        .write_le(rinx::testing::PAGE_TABLES + 0x2000, 8, pt | 7)
        .unwrap();
    assert_eq!(t.run(100), StopReason::TripleFault);
    let Engine::Jit(j) = &t.engine else {
        unreachable!()
    };
    let s = j.stats;
    assert_eq!(s.failed_translations, 1, "{s:?}");
    assert_eq!(s.interp_steps, 1, "{s:?}");
    let report = rinx::trace::stats::jit_report(&s);
    assert!(report.contains(", 1 attempts failed,"), "{report}");
}
