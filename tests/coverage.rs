//! `rinx run --coverage drcov:PATH` on the built-in demo guest: the file parses as drcov
//! version 2 (header, module table, binary BB table) and lists the demo's known blocks.

use std::collections::HashMap;
use std::process::Command;

/// A parsed drcov file: module table lines and (start, size, module id) records.
struct Drcov {
    header: Vec<String>,
    modules: Vec<String>,
    bbs: Vec<(u32, u16, u16)>,
}

fn parse(data: &[u8]) -> Drcov {
    let mut pos = 0;
    let mut line = || {
        let end = pos
            + data[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("a text line");
        let l = std::str::from_utf8(&data[pos..end]).unwrap().to_string();
        pos = end + 1;
        l
    };
    let header = vec![line(), line()];
    let table = line();
    let count: usize = table
        .strip_prefix("Module Table: version 2, count ")
        .expect("module table header")
        .parse()
        .unwrap();
    assert_eq!(
        line(),
        "Columns: id, base, end, entry, checksum, timestamp, path"
    );
    let modules: Vec<String> = (0..count).map(|_| line()).collect();
    let n: usize = line()
        .strip_prefix("BB Table: ")
        .and_then(|l| l.strip_suffix(" bbs"))
        .expect("BB table header")
        .parse()
        .unwrap();
    let bin = &data[pos..];
    assert_eq!(bin.len(), n * 8, "8 bytes per block record");
    let bbs = bin
        .chunks_exact(8)
        .map(|c| {
            (
                u32::from_le_bytes(c[0..4].try_into().unwrap()),
                u16::from_le_bytes(c[4..6].try_into().unwrap()),
                u16::from_le_bytes(c[6..8].try_into().unwrap()),
            )
        })
        .collect();
    Drcov {
        header,
        modules,
        bbs,
    }
}

#[test]
fn demo_guest_drcov_lists_known_blocks() {
    let path = std::env::temp_dir().join(format!("rinx-cov-{}.drcov", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rinx"))
        .args(["run", "--serial", "null", "--coverage"])
        .arg(format!("drcov:{}", path.display()))
        .output()
        .expect("run rinx");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let d = parse(&data);
    assert_eq!(d.header, ["DRCOV VERSION: 2", "DRCOV FLAVOR: drcov"]);
    // A 16/32/64-bit guest that stays below 4 GiB: one module, base 0, offsets = linear addresses.
    assert_eq!(d.modules.len(), 1);
    let cols: Vec<&str> = d.modules[0].split(',').map(str::trim).collect();
    assert_eq!(cols[..3], ["0", "0x0000000000000000", "0x0000000100000000"]);
    assert!(d.bbs.iter().all(|&(_, size, m)| size > 0 && m == 0));
    let blocks: HashMap<u32, u16> = d.bbs.iter().map(|&(s, z, _)| (s, z)).collect();
    assert_eq!(blocks.len(), d.bbs.len(), "each block is listed once");
    // The first block is the real-mode entry point 0000:1000.
    assert_eq!(d.bbs[0].0, 0x1000);
    // `mov eax, 11h` (6 bytes) + `mov cr0, eax` (3 bytes, privileged: ends the block), then the
    // far jump into protected mode alone (docs/tutorial.md shows these instructions).
    assert_eq!(blocks.get(&0x10d1), Some(&9));
    assert_eq!(blocks.get(&0x10da), Some(&5));
    // Entered by control transfers: 32-bit code, the SYSCALL entry (IA32_LSTAR), the #PF
    // handler, the user program.
    for start in [0x2000, 0x315d, 0x32dd, 0x4000] {
        assert!(blocks.contains_key(&start), "block at {start:#x}");
    }
}
