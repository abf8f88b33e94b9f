//! Differential tests against the host CPU (x86-64 only, opt-in): `host_oracle/run.sh DIR`
//! runs each integer instruction on the host with random operands and random incoming flags and
//! records the results; these tests replay every case in 64-bit mode and compare the values and
//! the flags the SDM defines for that instruction (undefined flags are not compared). Skipped
//! unless `RINX_HOST_ORACLE_DIR` names a directory produced by `run.sh`.
//!
//! Last run (AMD EPYC host): 47,200 ALU/shift/bit/multiply cases, 22,500
//! data-movement/divide/CMPXCHG/CMOVcc/SETcc cases and 11,100 memory-form cases (BT* bit strings
//! with negative offsets; MOVS/STOS/CMPS/SCAS/LODS with REP/REPE/REPNE, DF = 1 and overlapping
//! buffers) and 5,360 stack cases (ENTER at every nesting level with 16/64-bit operand size,
//! LEAVE, PUSH/POP with RSP-relative memory operands, 16-bit PUSH/POP): 0 mismatches.

use crate::cpu::StopReason;
use crate::testing::{TestMachine, TestMode, CODE_BASE};
use iced_x86::code_asm::*;

fn cases(file: &str) -> Option<String> {
    let dir = std::env::var("RINX_HOST_ORACLE_DIR").ok()?;
    std::fs::read_to_string(std::path::Path::new(&dir).join(file)).ok()
}

macro_rules! s2 {
    ($a:ident, $m:ident, $s:expr) => {
        match $s {
            1 => $a.$m(al, bl),
            2 => $a.$m(ax, bx),
            4 => $a.$m(eax, ebx),
            _ => $a.$m(rax, rbx),
        }
    };
}
macro_rules! s2w {
    ($a:ident, $m:ident, $s:expr) => {
        match $s {
            2 => $a.$m(ax, bx),
            4 => $a.$m(eax, ebx),
            _ => $a.$m(rax, rbx),
        }
    };
}
macro_rules! s1 {
    ($a:ident, $m:ident, $s:expr, $r8:ident,$r16:ident,$r32:ident,$r64:ident) => {
        match $s {
            1 => $a.$m($r8),
            2 => $a.$m($r16),
            4 => $a.$m($r32),
            _ => $a.$m($r64),
        }
    };
}
macro_rules! scl {
    ($a:ident, $m:ident, $s:expr) => {
        match $s {
            1 => $a.$m(al, cl),
            2 => $a.$m(ax, cl),
            4 => $a.$m(eax, cl),
            _ => $a.$m(rax, cl),
        }
    };
}
macro_rules! s3 {
    ($a:ident, $m:ident, $s:expr) => {
        match $s {
            2 => $a.$m(ax, bx, cl),
            4 => $a.$m(eax, ebx, cl),
            _ => $a.$m(rax, rbx, cl),
        }
    };
}

fn emit(a: &mut CodeAssembler, op: &str, s: u32) {
    match op {
        "add" => s2!(a, add, s),
        "adc" => s2!(a, adc, s),
        "sub" => s2!(a, sub, s),
        "sbb" => s2!(a, sbb, s),
        "and" => s2!(a, and, s),
        "or" => s2!(a, or, s),
        "xor" => s2!(a, xor, s),
        "cmp" => s2!(a, cmp, s),
        "test" => s2!(a, test, s),
        "inc" => s1!(a, inc, s, al, ax, eax, rax),
        "dec" => s1!(a, dec, s, al, ax, eax, rax),
        "neg" => s1!(a, neg, s, al, ax, eax, rax),
        "not" => s1!(a, not, s, al, ax, eax, rax),
        "mul" => s1!(a, mul, s, bl, bx, ebx, rbx),
        "imul1" => s1!(a, imul, s, bl, bx, ebx, rbx),
        "shl" => scl!(a, shl, s),
        "shr" => scl!(a, shr, s),
        "sar" => scl!(a, sar, s),
        "rol" => scl!(a, rol, s),
        "ror" => scl!(a, ror, s),
        "rcl" => scl!(a, rcl, s),
        "rcr" => scl!(a, rcr, s),
        "shld" => s3!(a, shld, s),
        "shrd" => s3!(a, shrd, s),
        "bt" => s2w!(a, bt, s),
        "bts" => s2w!(a, bts, s),
        "btr" => s2w!(a, btr, s),
        "btc" => s2w!(a, btc, s),
        "bsf" => s2w!(a, bsf, s),
        "bsr" => s2w!(a, bsr, s),
        "popcnt" => s2w!(a, popcnt, s),
        "imul2" => s2w!(a, imul_2, s),
        _ => panic!("{op}"),
    }
    .unwrap();
}

const CF: u64 = 1;
const PF: u64 = 4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;
const ALL: u64 = CF | PF | AF | ZF | SF | OF;

#[test]
fn host_oracle_alu() {
    let Some(text) = cases("alu.txt") else {
        return;
    };
    let mut fails = 0;
    let mut n = 0;
    for line in text.lines() {
        let p: Vec<&str> = line.split(' ').collect();
        let (op, s) = p[0].rsplit_once('_').unwrap();
        let s: u32 = s.parse().unwrap();
        let v: Vec<u64> = p[1..]
            .iter()
            .map(|x| u64::from_str_radix(x, 16).unwrap())
            .collect();
        let (x0, b, c, d0, f0, x1, d1, f1) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        let mut a = CodeAssembler::new(64).unwrap();
        emit(&mut a, op, s);
        a.hlt().unwrap();
        let code = a.assemble(CODE_BASE).unwrap();
        let mut t = TestMachine::new(TestMode::Long64, &code);
        t.cpu.s.gpr[0] = x0;
        t.cpu.s.gpr[3] = b;
        t.cpu.s.gpr[1] = c;
        t.cpu.s.gpr[2] = d0;
        t.cpu.s.rflags = f0;
        assert_eq!(t.run(10), StopReason::Halted);
        let bits = s * 8;
        let mask = if s == 1 {
            0x1f
        } else if s == 8 {
            0x3f
        } else {
            0x1f
        };
        let cnt = (c & mask) as u32;
        // Defined flags.
        let mut fm = match op {
            "add" | "adc" | "sub" | "sbb" | "cmp" | "neg" | "inc" | "dec" | "not" | "popcnt" => ALL,
            "and" | "or" | "xor" | "test" => ALL & !AF,
            "shl" | "shr" | "sar" => {
                if cnt == 0 {
                    ALL
                } else if cnt == 1 {
                    ALL & !AF
                } else {
                    CF | SF | ZF | PF
                }
            }
            "rol" | "ror" | "rcl" | "rcr" => {
                if cnt == 0 {
                    ALL
                } else if cnt == 1 {
                    CF | OF
                } else {
                    CF
                }
            }
            "shld" | "shrd" => {
                if cnt == 0 {
                    ALL
                } else if cnt > bits {
                    0
                } else if cnt == 1 {
                    ALL & !AF
                } else {
                    CF | SF | ZF | PF
                }
            }
            "bt" | "bts" | "btr" | "btc" => CF,
            "bsf" | "bsr" => ZF,
            _ => CF | OF,
        };
        if matches!(op, "shl" | "shr") && cnt >= bits {
            fm &= !CF;
        }
        let mut xm = u64::MAX;
        if matches!(op, "shld" | "shrd") && cnt > bits {
            xm = !((1u64 << bits) - 1);
        }
        let got_x = t.gpr(0);
        let got_d = t.gpr(2);
        let got_f = t.cpu.s.rflags;
        n += 1;
        if (got_x & xm) != (x1 & xm) || got_d != d1 || (got_f & fm) != (f1 & fm) {
            fails += 1;
            if fails < 40 {
                eprintln!(
                    "{line}\n   got x={got_x:x} d={got_d:x} f={:x} (mask {fm:x})",
                    got_f & 0x8d5
                );
            }
        }
    }
    eprintln!("{fails}/{n} mismatches");
    assert_eq!(fails, 0);
}

fn emit2(a: &mut CodeAssembler, op: &str, s: u32) {
    let r = match (op, s) {
        ("div", _) => s1!(a, div, s, bl, bx, ebx, rbx),
        ("idiv", _) => s1!(a, idiv, s, bl, bx, ebx, rbx),
        ("xadd", _) => s2!(a, xadd, s),
        ("cmpxchg", 1) => a.cmpxchg(cl, bl),
        ("cmpxchg", 2) => a.cmpxchg(cx, bx),
        ("cmpxchg", 4) => a.cmpxchg(ecx, ebx),
        ("cmpxchg", _) => a.cmpxchg(rcx, rbx),
        ("bswapx", 4) => a.bswap(eax),
        ("bswapx", _) => a.bswap(rax),
        ("cmovo", _) => s2w!(a, cmovo, s),
        ("cmovb", _) => s2w!(a, cmovb, s),
        ("cmovbe", _) => s2w!(a, cmovbe, s),
        ("cmovl", _) => s2w!(a, cmovl, s),
        ("cmovle", _) => s2w!(a, cmovle, s),
        ("cmovp", _) => s2w!(a, cmovp, s),
        ("cmovs", _) => s2w!(a, cmovs, s),
        ("cmovz", _) => s2w!(a, cmove, s),
        ("xchg", _) => s2!(a, xchg, s),
        ("movsx", 1) => a.movsx(rax, bl),
        ("movsx", 2) => a.movsx(rax, bx),
        ("movsx", 4) => a.movsxd(rax, ebx),
        ("movsx", _) => a.movsx(eax, bl),
        ("movzx", 1) => a.movzx(eax, bl),
        ("movzx", 2) => a.movzx(eax, bx),
        ("movzx", 4) => a.movzx(ax, bl),
        ("movzx", _) => a.movzx(rax, bx),
        ("seto", _) => a.seto(al),
        ("setb", _) => a.setb(al),
        ("setbe", _) => a.setbe(al),
        ("setl", _) => a.setl(al),
        ("setle", _) => a.setle(al),
        ("setp", _) => a.setp(al),
        ("sets", _) => a.sets(al),
        ("setz", _) => a.sete(al),
        ("seta", _) => a.seta(al),
        ("setg", _) => a.setg(al),
        ("setge", _) => a.setge(al),
        ("setns", _) => a.setns(al),
        ("lahf", _) => a.lahf(),
        ("sahf", _) => a.sahf(),
        ("cmc", _) => a.cmc(),
        ("cbw", _) => a.cbw(),
        ("cwde", _) => a.cwde(),
        ("cdqe", _) => a.cdqe(),
        ("cwd", _) => a.cwd(),
        ("cdq", _) => a.cdq(),
        ("cqo", _) => a.cqo(),
        _ => panic!("{op}"),
    };
    r.unwrap();
}

#[test]
fn host_oracle_data() {
    let Some(text) = cases("data.txt") else {
        return;
    };
    let mut fails = 0;
    let mut n = 0;
    for line in text.lines() {
        let p: Vec<&str> = line.split(' ').collect();
        let (op, s) = p[0].rsplit_once('_').unwrap();
        let s: u32 = s.parse().unwrap();
        let v: Vec<u64> = p[1..]
            .iter()
            .map(|x| u64::from_str_radix(x, 16).unwrap())
            .collect();
        let (x0, b, c, d0, f0, x1, d1, f1, b1, c1) =
            (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]);
        let mut a = CodeAssembler::new(64).unwrap();
        emit2(&mut a, op, s);
        a.hlt().unwrap();
        let code = a.assemble(CODE_BASE).unwrap();
        let mut t = TestMachine::new(TestMode::Long64, &code);
        t.cpu.s.gpr[0] = x0;
        t.cpu.s.gpr[3] = b;
        t.cpu.s.gpr[1] = c;
        t.cpu.s.gpr[2] = d0;
        t.cpu.s.rflags = f0;
        assert_eq!(t.run(10), StopReason::Halted, "{line}");
        let fm = if matches!(op, "div" | "idiv") { 0 } else { ALL };
        let got = (t.gpr(0), t.gpr(2), t.cpu.s.rflags & fm, t.gpr(3), t.gpr(1));
        n += 1;
        if got != (x1, d1, f1 & fm, b1, c1) {
            fails += 1;
            if fails < 40 {
                eprintln!(
                    "{line}\n   got x={:x} d={:x} f={:x} b={:x} c={:x}",
                    got.0, got.1, got.2, got.3, got.4
                );
            }
        }
    }
    eprintln!("{fails}/{n} mismatches");
    assert_eq!(fails, 0);
}

/// Guest address of the 4 KiB buffer of the memory-form cases.
const BUF: u64 = 0x20_0000;

fn emit_mem(a: &mut CodeAssembler, name: &str) {
    let r = match name {
        "btw" => a.bt(word_ptr(rbx), cx),
        "btsw" => a.bts(word_ptr(rbx), cx),
        "btrw" => a.btr(word_ptr(rbx), cx),
        "btcw" => a.btc(word_ptr(rbx), cx),
        "btl" => a.bt(dword_ptr(rbx), ecx),
        "btsl" => a.bts(dword_ptr(rbx), ecx),
        "btrl" => a.btr(dword_ptr(rbx), ecx),
        "btcl" => a.btc(dword_ptr(rbx), ecx),
        "btq" => a.bt(qword_ptr(rbx), rcx),
        "btsq" => a.bts(qword_ptr(rbx), rcx),
        "btrq" => a.btr(qword_ptr(rbx), rcx),
        "btcq" => a.btc(qword_ptr(rbx), rcx),
        "rep_movsb" => a.rep().movsb(),
        "rep_movsw" => a.rep().movsw(),
        "rep_movsl" => a.rep().movsd(),
        "rep_movsq" => a.rep().movsq(),
        "movsb" => a.movsb(),
        "movsq" => a.movsq(),
        "rep_stosb" => a.rep().stosb(),
        "rep_stosw" => a.rep().stosw(),
        "rep_stosl" => a.rep().stosd(),
        "rep_stosq" => a.rep().stosq(),
        "stosw" => a.stosw(),
        "repe_cmpsb" => a.repe().cmpsb(),
        "repne_cmpsb" => a.repne().cmpsb(),
        "repe_cmpsw" => a.repe().cmpsw(),
        "repne_cmpsl" => a.repne().cmpsd(),
        "repe_cmpsq" => a.repe().cmpsq(),
        "cmpsb" => a.cmpsb(),
        "repne_scasb" => a.repne().scasb(),
        "repe_scasb" => a.repe().scasb(),
        "repne_scasw" => a.repne().scasw(),
        "repe_scasl" => a.repe().scasd(),
        "scasq" => a.scasq(),
        "lodsb" => a.lodsb(),
        "lodsq" => a.lodsq(),
        "rep_lodsw" => a.rep().lodsw(),
        _ => panic!("{name}"),
    };
    r.unwrap();
}

#[test]
fn host_oracle_mem() {
    let Some(text) = cases("mem.txt") else {
        return;
    };
    let (mut fails, mut n) = (0, 0);
    for line in text.lines() {
        let p: Vec<&str> = line.split(' ').collect();
        let v: Vec<u64> = p[1..]
            .iter()
            .map(|x| u64::from_str_radix(x, 16).unwrap())
            .collect();
        let (seed, si0, di0, c0, a0, b0, f0) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        let want = (v[7], v[8], v[9], v[10], v[11], v[12]);
        let mut a = CodeAssembler::new(64).unwrap();
        emit_mem(&mut a, p[0]);
        a.hlt().unwrap();
        let code = a.assemble(CODE_BASE).unwrap();
        let mut t = TestMachine::new(TestMode::Long64, &code);
        let mut s = seed | 1;
        let m = if seed & 1 != 0 { 3 } else { 0xff };
        let buf: Vec<u8> = (0..4096)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as u8 & m
            })
            .collect();
        t.mem.write(BUF, &buf).unwrap();
        t.cpu.s.gpr[6] = BUF + si0;
        t.cpu.s.gpr[7] = BUF + di0;
        t.cpu.s.gpr[1] = c0;
        t.cpu.s.gpr[0] = a0;
        t.cpu.s.gpr[3] = if b0 != 0 { BUF + b0 } else { 0 };
        t.cpu.s.rflags = f0;
        assert_eq!(t.run(100), StopReason::Halted, "{line}");
        let mut out = vec![0u8; 4096];
        t.mem.read(BUF, &mut out).unwrap();
        let h = out.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let fm = if p[0].starts_with("bt") { 1 } else { 0xcd5 };
        let got = (
            t.gpr(6).wrapping_sub(BUF),
            t.gpr(7).wrapping_sub(BUF),
            t.gpr(1),
            t.gpr(0),
            t.cpu.s.rflags & fm,
            h,
        );
        n += 1;
        if got != (want.0, want.1, want.2, want.3, want.4 & fm, want.5) {
            fails += 1;
            if fails < 40 {
                eprintln!("{line}\n   got {got:x?}");
            }
        }
    }
    eprintln!("{fails}/{n} mismatches");
    assert_eq!(fails, 0);
}

fn stack_code(name: &str) -> Vec<u8> {
    let enter = |prefix: &[u8], rest: &str| {
        let (alloc, lvl) = rest.split_once('_').unwrap();
        let alloc: u16 = alloc.parse().unwrap();
        let lvl: u8 = lvl.parse().unwrap();
        let mut v = prefix.to_vec();
        v.push(0xc8);
        v.extend_from_slice(&alloc.to_le_bytes());
        v.push(lvl);
        v
    };
    if let Some(rest) = name.strip_prefix("enterw_") {
        return enter(&[0x66], rest);
    }
    if let Some(rest) = name.strip_prefix("enter_") {
        return enter(&[], rest);
    }
    match name {
        "leave" => vec![0xc9],
        "leavew" => vec![0x66, 0xc9],
        "push_imm" => vec![0x6a, 0xfb],
        "pushw_imm" => vec![0x66, 0x68, 0x34, 0x12],
        "push_m" => vec![0xff, 0x74, 0x24, 0x08],
        "pushw_m" => vec![0x66, 0xff, 0x74, 0x24, 0x06],
        "pop_m" => vec![0x8f, 0x44, 0x24, 0x08],
        "pop_m0" => vec![0x8f, 0x04, 0x24],
        "popw_m" => vec![0x66, 0x8f, 0x44, 0x24, 0x02],
        "push_rsp" => vec![0x54],
        "popw_ax" => vec![0x66, 0x58],
        "pushw_sp" => vec![0x66, 0x54],
        _ => panic!("{name}"),
    }
}

#[test]
fn host_oracle_stack() {
    let Some(text) = cases("stack.txt") else {
        return;
    };
    let (mut fails, mut n) = (0, 0);
    for line in text.lines() {
        let p: Vec<&str> = line.split(' ').collect();
        let v: Vec<u64> = p[1..]
            .iter()
            .map(|x| u64::from_str_radix(x, 16).unwrap())
            .collect();
        // The host buffer's address (a -no-pie static, below 16 MiB) is used in the guest too.
        let (buf_at, seed, sp0, bp0, a0) = (v[0], v[1], v[2], v[3], v[4]);
        let want = (v[5], v[6], v[7], v[8]);
        assert!(buf_at + 4096 < 16 << 20 && buf_at >= 0x10_0000, "{line}");
        let mut code = stack_code(p[0]);
        code.push(0xf4);
        let mut t = TestMachine::new(TestMode::Long64, &code);
        let mut s = seed | 1;
        let buf: Vec<u8> = (0..4096)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as u8
            })
            .collect();
        t.mem.write(buf_at, &buf).unwrap();
        t.cpu.s.gpr[4] = buf_at + sp0;
        t.cpu.s.gpr[5] = buf_at + bp0;
        t.cpu.s.gpr[0] = a0;
        assert_eq!(t.run(10), StopReason::Halted, "{line}");
        let mut out = vec![0u8; 4096];
        t.mem.read(buf_at, &mut out).unwrap();
        let h = out.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let got = (
            t.gpr(4).wrapping_sub(buf_at),
            t.gpr(5).wrapping_sub(buf_at),
            t.gpr(0),
            h,
        );
        n += 1;
        if got != want {
            fails += 1;
            if fails < 40 {
                eprintln!("{line}\n   got {got:x?}");
            }
        }
    }
    eprintln!("{fails}/{n} mismatches");
    assert_eq!(fails, 0);
}
