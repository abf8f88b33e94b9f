#!/usr/bin/env python3
"""Write seed inputs for the `boot_images` fuzz target into DIR (default
fuzz/corpus/boot_images): minimal Linux bzImage setup headers and Multiboot v1 images (ELF32
and a.out kludge). Without them libFuzzer has to discover "HdrS" at 0x202, 0xAA55 at 0x1FE
or a Multiboot magic with its checksum by itself; in two 270 s runs it found none (84 and 85
covered edges, docs/fuzzing.md). Input layout of the target: byte 0 picks the command-line
length, the rest is the image. Called by scripts/fuzz.sh; the corpus directory is gitignored.
"""
import os
import struct
import sys


def put(buf, off, fmt, val):
    struct.pack_into("<" + fmt, buf, off, val)


def bzimage(version, setup_sects, pm_len, xloadflags=1, relocatable=1):
    sects = setup_sects or 4
    v = bytearray((sects + 1) * 512 + pm_len)
    v[0x1F1] = setup_sects
    put(v, 0x1FE, "H", 0xAA55)
    v[0x200] = 0xEB
    v[0x201] = 0x26C - 0x202
    v[0x202:0x206] = b"HdrS"
    put(v, 0x206, "H", version)
    v[0x211] = 0x01  # LOADED_HIGH
    put(v, 0x214, "I", 0x100000)  # code32_start
    put(v, 0x22C, "I", 0x7FFFFFFF)  # initrd_addr_max
    put(v, 0x230, "I", 0x200000)  # kernel_alignment
    v[0x234] = relocatable
    put(v, 0x236, "H", xloadflags)
    put(v, 0x238, "I", 2047)  # cmdline_size
    put(v, 0x258, "Q", 0x1000000)  # pref_address
    put(v, 0x260, "I", 0x400000)  # init_size
    for i in range((sects + 1) * 512, len(v)):
        v[i] = i % 251
    return bytes(v)


def mb_header(flags):
    return struct.pack("<III", 0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xFFFFFFFF)


def mb_elf():
    f = bytearray(0x400)
    f[0:7] = b"\x7fELF\x01\x01\x01"
    put(f, 16, "H", 2)  # ET_EXEC
    put(f, 18, "H", 3)  # EM_386
    put(f, 20, "I", 1)
    put(f, 24, "I", 0xC0200010)  # e_entry
    put(f, 28, "I", 52)  # e_phoff
    put(f, 40, "H", 52)
    put(f, 42, "H", 32)  # e_phentsize
    put(f, 44, "H", 2)  # e_phnum
    for i, (off, va, pa, fs, ms) in enumerate(
        [(0x200, 0xC0200000, 0x200000, 0x100, 0x100), (0x300, 0xC0201000, 0x201000, 0x10, 0x1000)]
    ):
        struct.pack_into("<IIIIII", f, 52 + 32 * i, 1, off, va, pa, fs, ms)
    h = mb_header(0x3)
    f[0x100 : 0x100 + len(h)] = h
    f[0x200:0x300] = b"\x90" * 0x100
    f[0x300:0x310] = b"\xdd" * 0x10
    return bytes(f)


def mb_aout():
    img = bytearray(b"\xaa" * 0x200)
    h = mb_header(0x10001) + struct.pack("<IIIII", 0x100040, 0x100000, 0x100200, 0x101000, 0x100080)
    img[0x40 : 0x40 + len(h)] = h
    return bytes(img)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/boot_images"
    os.makedirs(out, exist_ok=True)
    seeds = {
        "bzimage-2.15": bzimage(0x020F, 1, 0x400),
        "bzimage-2.06-setup0": bzimage(0x0206, 0, 0x200, xloadflags=0, relocatable=0),
        "multiboot-elf": mb_elf(),
        "multiboot-aout": mb_aout(),
    }
    for name, img in seeds.items():
        with open(os.path.join(out, "seed-" + name), "wb") as fh:
            fh.write(b"\x02" + img)


if __name__ == "__main__":
    main()
