//! Drives the adapter the way Linux's BusLogic driver does: probe, hard reset, the inquiry
//! commands of blogic_rdconfig, mailbox initialization, then CCBs through the mailboxes.

use super::*;
use crate::block::{BlockBackend, MemDisk};
use crate::irq::IrqLines;
use crate::virtio::FlatMemory;

const MBOX: u32 = 0x1000;
const COUNT: u8 = 4;
const CCB: u64 = 0x2000;
const SG: u64 = 0x3000;
const BUF: u64 = 0x10000;
const SENSE: u64 = 0x4000;

fn adapter(n: usize) -> (BusLogic, IrqLines) {
    let lines = IrqLines::new();
    let disks = (0..n)
        .map(|i| {
            let mut m = MemDisk::new(1 << 20);
            m.write_at(0, format!("disk{i}").as_bytes()).unwrap();
            ScsiDisk::new(Box::new(m), &format!("BT{i}"))
        })
        .collect();
    (BusLogic::new(disks, lines.line(10)).unwrap(), lines)
}

/// blogic_cmd: wait ready, opcode, parameters (stop on CMDC / DIRRDY), then reply bytes until
/// Command Complete; returns the reply or "invalid".
fn cmd(
    d: &mut BusLogic,
    opcode: u8,
    params: &[u8],
    reply_len: usize,
) -> Result<Vec<u8>, &'static str> {
    let st = d.read_reg(0);
    if st & status::HARDY == 0 || st & status::CPRBSY != 0 {
        return Err("not ready");
    }
    d.write_reg(1, opcode);
    let mut p = params.iter();
    let mut left = params.len();
    while left > 0 {
        if d.read_reg(2) & intr::CMDC != 0 || d.read_reg(0) & status::DIRRDY != 0 {
            break;
        }
        d.write_reg(1, *p.next().unwrap());
        left -= 1;
    }
    if opcode == op::MOD_IO_ADDR {
        return if d.read_reg(0) & status::CMDINV != 0 {
            Err("invalid")
        } else {
            Ok(vec![])
        };
    }
    let mut reply = Vec::new();
    for _ in 0..10_000 {
        let i = d.read_reg(2);
        let s = d.read_reg(0);
        if i & intr::CMDC != 0 {
            d.write_reg(0, control::IRST);
            if s & status::CMDINV != 0 {
                return Err("invalid");
            }
            if left > 0 {
                return Err("excess parameters");
            }
            assert!(reply.len() <= reply_len.max(reply.len()));
            return Ok(reply);
        }
        if s & status::DIRRDY != 0 {
            reply.push(d.read_reg(1));
        }
        if opcode == op::FETCH_LOCAL_RAM && s & status::HARDY != 0 {
            d.write_reg(0, control::IRST);
            return Ok(reply);
        }
    }
    Err("timeout")
}

/// Probe, hard reset and configuration, as blogic_probe / blogic_hwreset / blogic_rdconfig /
/// blogic_initadapter / blogic_inquiry issue them.
fn linux_init(d: &mut BusLogic, lines: &IrqLines) {
    // Probe: status non-zero without DACT/CPRBSY/reserved/CMDINV, geometry not 0xFF.
    let st = d.read_reg(0);
    assert_ne!(st, 0);
    assert_eq!(
        st & (status::DACT | status::CPRBSY | 0x02 | status::CMDINV),
        0
    );
    assert_eq!(d.read_reg(2) & 0x70, 0);
    assert_ne!(d.read_reg(3), 0xff);
    // Hard reset: Diagnostic Active, then ready with mailbox initialization required.
    d.write_reg(0, control::HRST);
    assert_ne!(d.read_reg(0) & status::DACT, 0);
    let st = d.read_reg(0);
    assert_eq!(st & status::DACT, 0);
    assert_eq!(
        st & (status::HARDY | status::INREQ),
        status::HARDY | status::INREQ
    );
    assert_eq!(cmd(d, op::INQ_EXT_SETUP, &[14], 14).unwrap().len(), 14);
    assert_eq!(cmd(d, op::INQ_PCI_INFO, &[], 4).unwrap()[1], 10);
    cmd(d, op::MOD_IO_ADDR, &[6], 0).unwrap();
    assert_eq!(
        cmd(d, op::FETCH_LOCAL_RAM, &[64 + 45, 1], 1).unwrap(),
        vec![0]
    );
    let id = cmd(d, op::INQ_BOARD_ID, &[], 4).unwrap();
    assert_eq!(&id[2..], b"50");
    let cfg = cmd(d, op::INQ_CONFIG, &[], 3).unwrap();
    assert_eq!(cfg, vec![0, 0x02, 7], "IRQ 10, SCSI ID 7");
    assert_eq!(cmd(d, op::INQ_SETUP, &[34], 34).unwrap().len(), 34);
    let ext = cmd(d, op::INQ_EXT_SETUP, &[14], 14).unwrap();
    assert_eq!(u16::from_le_bytes([ext[2], ext[3]]), SG_LIMIT);
    assert_eq!(cmd(d, op::INQ_FW_D3, &[], 1).unwrap(), b"7");
    let model = cmd(d, op::INQ_MODEL, &[5], 5).unwrap();
    assert_eq!(&model[..3], b"958");
    assert_eq!(cmd(d, op::INQ_FW_LETTER, &[], 1).unwrap(), b"B");
    assert_eq!(cmd(d, op::INQ_PCI_INFO, &[], 4).unwrap().len(), 4);
    let ram = cmd(d, op::FETCH_LOCAL_RAM, &[64, 64], 64).unwrap();
    assert_eq!(ram.len(), 64);
    assert_eq!(ram[27] & 1, 1, "disconnect permitted for target 0");
    let mut p = vec![COUNT];
    p.extend_from_slice(&MBOX.to_le_bytes());
    cmd(d, op::INIT_EXT_MBOX, &p, 0).unwrap();
    assert_eq!(d.read_reg(0) & status::INREQ, 0);
    cmd(d, op::STRICT_RR, &[1], 0).unwrap();
    cmd(d, op::SET_CCB_FORMAT, &[1], 0).unwrap();
    let devs = cmd(d, op::INQ_DEV, &[], 2).unwrap();
    assert_eq!(devs, vec![0b11, 0]);
    assert_eq!(cmd(d, op::INQ_SYNC_PERIOD, &[16], 16).unwrap(), vec![0; 16]);
    assert_eq!(
        lines.levels() & (1 << 10),
        0,
        "interrupt reset after each command"
    );
}

struct Host {
    next_out: u32,
    next_in: u32,
}

impl Host {
    /// Put a CCB (SG opcode) in guest memory and an outgoing mailbox, then Start Mailbox.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        d: &mut BusLogic,
        m: &mut FlatMemory,
        target: u8,
        cdb: &[u8],
        datadir: u8,
        segs: &[(u32, u32)],
    ) {
        let mut c = [0u8; 40];
        c[0] = 0x02;
        c[1] = datadir << 3;
        c[2] = cdb.len() as u8;
        c[3] = 96;
        c[4..8].copy_from_slice(&((segs.len() * 8) as u32).to_le_bytes());
        c[8..12].copy_from_slice(&(SG as u32).to_le_bytes());
        c[16] = target;
        c[18..18 + cdb.len()].copy_from_slice(cdb);
        c[36..40].copy_from_slice(&(SENSE as u32).to_le_bytes());
        m.write(CCB, &c).unwrap();
        for (i, &(at, len)) in segs.iter().enumerate() {
            m.write_u32(SG + 8 * i as u64, len).unwrap();
            m.write_u32(SG + 8 * i as u64 + 4, at).unwrap();
        }
        let ob = u64::from(MBOX) + 8 * u64::from(self.next_out);
        m.write_u32(ob, CCB as u32).unwrap();
        m.write(ob + 7, &[1]).unwrap();
        self.next_out = (self.next_out + 1) % u32::from(COUNT);
        d.write_reg(1, op::START_MBOX);
        assert!(d.has_work());
        d.process(m);
    }

    /// The interrupt handler: INTV + IMBL, reset, take the next incoming mailbox.
    fn complete(&mut self, d: &mut BusLogic, m: &mut FlatMemory, lines: &IrqLines) -> [u8; 8] {
        assert_ne!(lines.levels() & (1 << 10), 0, "INTx asserted");
        let i = d.read_reg(2);
        assert_eq!(i & (intr::INTV | intr::IMBL), intr::INTV | intr::IMBL);
        d.write_reg(0, control::IRST);
        assert_eq!(lines.levels() & (1 << 10), 0);
        let at = u64::from(MBOX) + 8 * u64::from(COUNT) + 8 * u64::from(self.next_in);
        let mut e = [0u8; 8];
        m.read(at, &mut e).unwrap();
        assert_ne!(e[7], comp::FREE);
        m.write(at + 7, &[0]).unwrap();
        self.next_in = (self.next_in + 1) % u32::from(COUNT);
        assert_eq!(u32::from_le_bytes([e[0], e[1], e[2], e[3]]), CCB as u32);
        e
    }
}

fn setup() -> (BusLogic, IrqLines, FlatMemory, Host) {
    let (mut d, lines) = adapter(2);
    linux_init(&mut d, &lines);
    (
        d,
        lines,
        FlatMemory(vec![0; 1 << 20]),
        Host {
            next_out: 0,
            next_in: 0,
        },
    )
}

#[test]
fn linux_style_init_and_io() {
    let (mut d, lines, mut m, mut h) = setup();
    // INQUIRY, unchecked direction (as Linux sends everything but READ/WRITE 6/10).
    h.submit(
        &mut d,
        &mut m,
        0,
        &[0x12, 0, 0, 0, 36, 0],
        0,
        &[(BUF as u32, 36)],
    );
    let e = h.complete(&mut d, &mut m, &lines);
    assert_eq!(e[7], comp::GOOD);
    let mut inq = [0u8; 36];
    m.read(BUF, &mut inq).unwrap();
    assert_eq!(inq[0], 0, "direct-access device");
    // READ(10) of LBA 0 on target 1 into two segments.
    h.submit(
        &mut d,
        &mut m,
        1,
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        1,
        &[(BUF as u32, 100), (BUF as u32 + 0x1000, 412)],
    );
    assert_eq!(h.complete(&mut d, &mut m, &lines)[7], comp::GOOD);
    let mut b = [0u8; 5];
    m.read(BUF, &mut b).unwrap();
    assert_eq!(&b, b"disk1");
    // WRITE(10) to target 0 LBA 3, then read it back.
    m.write(BUF + 0x8000, &[0xab; 512]).unwrap();
    h.submit(
        &mut d,
        &mut m,
        0,
        &[0x2a, 0, 0, 0, 0, 3, 0, 0, 1, 0],
        2,
        &[(BUF as u32 + 0x8000, 512)],
    );
    assert_eq!(h.complete(&mut d, &mut m, &lines)[7], comp::GOOD);
    let mut got = [0u8; 512];
    d.disk_mut(0)
        .unwrap()
        .backend_mut()
        .read_at(3 * 512, &mut got)
        .unwrap();
    assert_eq!(got, [0xab; 512]);
}

#[test]
fn errors_are_guest_visible_statuses() {
    let (mut d, lines, mut m, mut h) = setup();
    // Unsupported opcode: CHECK CONDITION with autosense.
    h.submit(&mut d, &mut m, 0, &[0xc0, 0, 0, 0, 0, 0], 0, &[]);
    let e = h.complete(&mut d, &mut m, &lines);
    assert_eq!((e[4], e[5], e[7]), (0, 2, comp::ERROR));
    let mut s = [0u8; 14];
    m.read(SENSE, &mut s).unwrap();
    assert_eq!(s[0] & 0x7f, 0x70);
    assert_eq!(s[2] & 0x0f, 5, "ILLEGAL REQUEST");
    let mut st = [0u8; 2];
    m.read(CCB + 14, &mut st).unwrap();
    assert_eq!(st, [0, 2], "statuses stored in the CCB");
    // No device at target 5: selection timeout.
    h.submit(&mut d, &mut m, 5, &[0, 0, 0, 0, 0, 0], 0, &[]);
    assert_eq!(
        h.complete(&mut d, &mut m, &lines)[4],
        hastat::SELECT_TIMEOUT
    );
    // Data segment outside guest RAM.
    h.submit(
        &mut d,
        &mut m,
        0,
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        1,
        &[(0xfff0_0000, 512)],
    );
    assert_eq!(h.complete(&mut d, &mut m, &lines)[4], hastat::HW_FAIL);
    // Bad CDB length.
    let mut c = [0u8; 40];
    c[0] = 0x02;
    c[2] = 40;
    m.write(CCB, &c).unwrap();
    let ob = u64::from(MBOX) + 8 * u64::from(h.next_out);
    m.write_u32(ob, CCB as u32).unwrap();
    m.write(ob + 7, &[1]).unwrap();
    h.next_out = (h.next_out + 1) % u32::from(COUNT);
    d.write_reg(1, op::START_MBOX);
    d.process(&mut m);
    assert_eq!(h.complete(&mut d, &mut m, &lines)[4], hastat::BAD_CMD_PARAM);
    // Unknown action code.
    let ob = u64::from(MBOX) + 8 * u64::from(h.next_out);
    m.write_u32(ob, CCB as u32).unwrap();
    m.write(ob + 7, &[9]).unwrap();
    h.next_out = (h.next_out + 1) % u32::from(COUNT);
    d.write_reg(1, op::START_MBOX);
    d.process(&mut m);
    assert_eq!(
        h.complete(&mut d, &mut m, &lines)[4],
        hastat::INVALID_OUTBOX_CODE
    );
    // An invalid adapter command sets Command Invalid.
    assert_eq!(cmd(&mut d, 0x03, &[], 0), Err("invalid"));
}

#[test]
fn full_incoming_mailboxes_hold_completions() {
    let (mut d, lines, mut m, mut h) = setup();
    // Fill every incoming mailbox without the host freeing any.
    let in_base = u64::from(MBOX) + 8 * u64::from(COUNT);
    for i in 0..u64::from(COUNT) {
        m.write(in_base + 8 * i + 7, &[comp::GOOD]).unwrap();
    }
    h.submit(&mut d, &mut m, 0, &[0, 0, 0, 0, 0, 0], 0, &[]);
    assert!(d.has_work(), "completion waits for a free incoming mailbox");
    m.write(in_base + 7, &[0]).unwrap();
    d.process(&mut m);
    assert!(!d.has_work());
    assert_eq!(h.complete(&mut d, &mut m, &lines)[7], comp::GOOD);
}

#[test]
fn garbage_register_writes_and_memory_do_not_panic() {
    let (mut d, _lines) = adapter(1);
    let mut m = FlatMemory(vec![0xff; 1 << 16]);
    let mut x: u32 = 12345;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let off = (x >> 8) as u16 & 3;
        if x & 1 == 0 {
            d.write_reg(off, (x >> 16) as u8);
        } else {
            d.read_reg(off);
        }
        if x & 0x70 == 0 {
            d.process(&mut m);
        }
    }
}

#[test]
fn strict_round_robin_takes_one_mailbox_per_start() {
    let (mut d, lines, mut m, mut h) = setup();
    // The host has stored the action code of the next mailbox but not yet its CCB address
    // or Start Mailbox Command: the adapter must leave it alone.
    let next = u64::from(MBOX) + 8;
    m.write(next + 7, &[1]).unwrap();
    h.submit(&mut d, &mut m, 0, &[0, 0, 0, 0, 0, 0], 0, &[]);
    assert_eq!(h.complete(&mut d, &mut m, &lines)[7], comp::GOOD);
    let mut b = [0u8; 1];
    m.read(next + 7, &mut b).unwrap();
    assert_eq!(b[0], 1, "outgoing mailbox 1 untouched");
    assert!(!d.has_work());
    // Now the host completes it and starts it.
    h.submit(&mut d, &mut m, 1, &[0, 0, 0, 0, 0, 0], 0, &[]);
    assert_eq!(h.complete(&mut d, &mut m, &lines)[7], comp::GOOD);
    m.read(next + 7, &mut b).unwrap();
    assert_eq!(b[0], 0);
}
