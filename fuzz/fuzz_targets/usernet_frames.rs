//! Feeds arbitrary Ethernet frames from "the guest" to the user-mode NAT's frame handler
//! (`devices::net::user::Nat`), without threads: every frame must be answered, dropped or
//! counted as malformed, never panic, and the outgoing queue must stay bounded.
//! Input layout: a sequence of records, each a 2-byte little-endian length (mod 2048) and
//! that many frame bytes (fewer at the end of the input). The NAT runs in `restrict` mode so
//! fuzzed SYNs and datagrams open no host sockets (they get RST / are dropped); DHCP, ARP,
//! ICMP, and the TCP/UDP parsing and classification all run as for a normal guest.

#![no_main]

use devices::net::user::{Nat, UserConfig, OUT_QUEUE_HARD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = UserConfig {
        restrict: true,
        ..UserConfig::default()
    };
    let mut nat = Nat::new(cfg).expect("NAT without forwards starts");
    let mut rest = data;
    let mut frames = 0u64;
    while rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) % 2048) as usize;
        rest = &rest[2..];
        let n = n.min(rest.len());
        nat.handle_guest_frame(&rest[..n]);
        frames += 1;
        rest = &rest[n..];
        nat.service();
        let mut out = 0;
        while let Some(f) = nat.pop_outgoing() {
            assert!(f.len() >= 14 && f.len() <= devices::net::MAX_FRAME);
            out += 1;
        }
        assert!(out <= OUT_QUEUE_HARD);
    }
    assert_eq!(nat.stats().snapshot().frames_in, frames);
});
