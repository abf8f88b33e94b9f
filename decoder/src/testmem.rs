//! Sparse guest memory for tests: 4 KiB pages that are present or not.

use std::collections::HashMap;

use crate::{FetchFault, FetchFaultKind, PAGE_SIZE};

/// Test memory; absent pages fault with #PF (error code 0x10: instruction fetch, not present).
#[derive(Debug, Default)]
pub struct TestMem {
    pages: HashMap<u64, Vec<u8>>,
    /// Every `(linear, len)` the decoder asked for, in order.
    pub requests: Vec<(u64, usize)>,
}

impl TestMem {
    pub fn new() -> TestMem {
        TestMem::default()
    }

    /// Writes `bytes` at `addr`, creating (zero-filled) pages as needed.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = addr.wrapping_add(i as u64);
            let page = self
                .pages
                .entry(a & !(PAGE_SIZE - 1))
                .or_insert_with(|| vec![0; PAGE_SIZE as usize]);
            page[(a & (PAGE_SIZE - 1)) as usize] = *b;
        }
    }

    /// Makes the page containing `addr` present (zero-filled) without writing.
    pub fn map(&mut self, addr: u64) {
        self.pages
            .entry(addr & !(PAGE_SIZE - 1))
            .or_insert_with(|| vec![0; PAGE_SIZE as usize]);
    }

    /// Makes the page containing `addr` absent.
    pub fn unmap(&mut self, addr: u64) {
        self.pages.remove(&(addr & !(PAGE_SIZE - 1)));
    }

    /// The fetch callback; panics if the decoder breaks the page contract.
    pub fn fetch(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, FetchFault> {
        assert!(!buf.is_empty(), "empty fetch request");
        let off = (addr & (PAGE_SIZE - 1)) as usize;
        assert!(
            off + buf.len() <= PAGE_SIZE as usize,
            "fetch crosses a page: {addr:#x}+{}",
            buf.len()
        );
        self.requests.push((addr, buf.len()));
        match self.pages.get(&(addr & !(PAGE_SIZE - 1))) {
            Some(page) => {
                buf.copy_from_slice(&page[off..off + buf.len()]);
                Ok(buf.len())
            }
            None => Err(FetchFault {
                addr,
                kind: FetchFaultKind::PageFault { error_code: 0x10 },
            }),
        }
    }
}

/// Decodes `bytes` placed at linear 0x1000 (CS base 0) in `mode`; the page is present.
pub fn decode_bytes(mode: crate::Mode, bytes: &[u8]) -> crate::DecodedInsn {
    let mut mem = TestMem::new();
    mem.write(0x1000, bytes);
    crate::decode_at(mode, 0, 0x1000, &mut |a, b| mem.fetch(a, b)).expect("page is present")
}
