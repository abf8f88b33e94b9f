//! Feeds arbitrary bytes to the boot loaders as a kernel image: the Linux bzImage loader
//! (setup header, boot_params, initrd placement) and the Multiboot v1 loader (header search,
//! a.out kludge, ELF32 program headers). A kernel file is untrusted input: a bad one must give a
//! loader error, never a host panic, hang or out-of-bounds write.
//! Input layout: byte 0 picks the command line length, the rest is the image.

#![no_main]

use firmware::linux::{load_linux, LinuxBootConfig};
use firmware::mem::VecMemory;
use firmware::multiboot::{load_multiboot, MultibootModule};
use firmware::MemoryLayout;
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&n, image)) = data.split_first() else {
        return;
    };
    let layout = MemoryLayout::new(RAM).expect("layout");
    let cmdline = "x".repeat(usize::from(n) * 16);
    let initrd = [0u8; 4096];
    let mut mem = VecMemory::new(RAM as usize);
    let _ = load_linux(
        &mut mem,
        &layout,
        image,
        Some(&initrd),
        &cmdline,
        &LinuxBootConfig::default(),
    );
    let mut mem = VecMemory::new(RAM as usize);
    let module = MultibootModule {
        data: &initrd,
        cmdline: "m",
    };
    let _ = load_multiboot(&mut mem, &layout, image, &cmdline, &[module]);
});
