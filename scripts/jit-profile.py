#!/usr/bin/env python3
"""Where does a guest workload spend its time under `rinx --engine jit`? (Linux hosts, perf.)

Boots Debian's amd64 kernel and busybox initramfs from guest-cache/ (scripts/guest-images.sh)
with a guest shell script, records `perf` samples of the rinx process only between the lines
PROFILE-START and PROFILE-END that the script prints, and reports:
  * the share of samples in compiled code vs rinx's own functions (helpers, fills, driver);
  * the hottest compiled blocks, with their guest instructions and, with --asm, their host
    code annotated with sample counts (objdump).

rinx writes /tmp/perf-<pid>.map (block names for `perf report`) and /tmp/rinx-jit-<pid>.dump
(host bytes and guest instructions per block) when RINX_PERF_MAP=2.

Usage: scripts/jit-profile.py SCRIPT [--rinx target/release/rinx] [--top N] [--asm N] [--boot]
(--boot: profile the boot from launch to the shell instead of the marked part; --between A B:
from the first serial output containing A to the first containing B.)
Example script: `head -c 16777216 /dev/zero > /tmp/d; echo PROFILE-START; md5sum /tmp/d;
echo PROFILE-END; poweroff -f`. Needs perf (linux-perf) and objdump (binutils).
"""
import argparse
import base64
import bisect
import collections
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("--rinx", default=os.path.join(ROOT, "target/release/rinx"))
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--asm", type=int, default=0, help="disassemble the N hottest blocks")
    ap.add_argument("--freq", type=int, default=5000)
    ap.add_argument("--boot", action="store_true",
                    help="profile from launch to the shell (`rinx: init started`) instead")
    ap.add_argument("--between", nargs=2, metavar=("FROM", "TO"),
                    help="profile between two strings of the serial output (e.g. kernel "
                         "messages) instead of the PROFILE-START / PROFILE-END markers")
    args = ap.parse_args()
    d = os.path.join(ROOT, "guest-cache", "amd64")
    append = "console=ttyS0 panic=-1 rinx.script=" + base64.b64encode(
        open(args.script, "rb").read()).decode()
    tmp = tempfile.mkdtemp(prefix="rinx-prof-")
    out_path = os.path.join(tmp, "serial.txt")
    data = os.path.join(tmp, "perf.data")
    env = dict(os.environ, RINX_PERF_MAP="2")
    with open(out_path, "wb") as out:
        p = subprocess.Popen([args.rinx, "run", "--engine", "jit", "--kernel",
                              os.path.join(d, "vmlinuz"), "--initrd", os.path.join(d, "initrd.img"),
                              "--append", append, "--memory", "512M", "--serial", "stdio"],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

        def wait_for(marker):
            while marker not in open(out_path, "rb").read():
                if p.poll() is not None:
                    sys.exit(f"rinx exited before {marker!r}; see {out_path}")
                time.sleep(0.02)

        if args.between:
            start, end = (m.encode() for m in args.between)
        elif args.boot:
            start, end = None, b"rinx: init started"
        else:
            start, end = b"PROFILE-START", b"PROFILE-END"
        if start:
            wait_for(start)
        rec = subprocess.Popen(["perf", "record", "-F", str(args.freq), "-p", str(p.pid),
                                "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        wait_for(end)
        secs = time.monotonic() - t0
        rec.send_signal(2)
        rec.wait()
        if args.boot or args.between:
            p.kill()
        p.wait()
    what = (f"{start} .. {end}" if start else "launch .. shell") if args.boot or args.between \
        else "PROFILE-START .. PROFILE-END"
    print(f"profiled {secs:.2f} s of guest time ({what})")

    blocks = []  # (entry, end, rip, hex, guest)
    dump = f"/tmp/rinx-jit-{p.pid}.dump"
    for line in open(dump):
        parts = line.rstrip("\n").split(" ", 3)
        if len(parts) < 4:
            continue
        entry, rip, hexcode, guest = int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]
        blocks.append((entry, entry + len(hexcode) // 2, rip, hexcode, guest))
    blocks.sort()
    starts = [b[0] for b in blocks]

    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"],
                            capture_output=True, text=True).stdout
    per_block = collections.Counter()
    per_ip = collections.Counter()
    per_sym = collections.Counter()
    total = 0
    for line in script.splitlines():
        f = line.split(None, 1)
        if not f:
            continue
        try:
            ip = int(f[0], 16)
        except ValueError:
            continue
        total += 1
        rest = f[1] if len(f) > 1 else ""
        if "rinx-jit" in rest:
            k = bisect.bisect_right(starts, ip) - 1
            if k >= 0 and ip < blocks[k][1]:
                per_block[k] += 1
                per_ip[ip] += 1
            else:
                per_sym["[compiled code, unknown block]"] += 1
        else:
            per_sym[rest.strip()] += 1
    if total == 0:
        sys.exit("no samples")
    jit = sum(per_block.values())
    print(f"{total} samples; compiled code {100 * jit / total:.1f}%")
    for s, n in per_sym.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {s}")
    print("\nhottest blocks:")
    for k, n in per_block.most_common(args.top):
        e, end, rip, _, guest = blocks[k]
        print(f"  {100 * n / total:5.1f}%  rip {rip:#x}  host {e:#x} ({end - e} bytes)")
        print("          " + guest[:400])
    for k, n in per_block.most_common(args.asm):
        e, end, rip, hexcode, _ = blocks[k]
        binf = os.path.join(tmp, f"b{k}.bin")
        open(binf, "wb").write(bytes.fromhex(hexcode))
        dis = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", "-M", "intel",
                              f"--adjust-vma={e:#x}", binf], capture_output=True, text=True).stdout
        print(f"\nblock rip {rip:#x} ({n} samples):")
        for line in dis.splitlines():
            a = line.split(":", 1)[0].strip()
            try:
                ip = int(a, 16)
            except ValueError:
                continue
            print(f"{per_ip.get(ip, 0):6} {line}")


if __name__ == "__main__":
    main()
