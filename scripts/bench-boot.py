#!/usr/bin/env python3
"""Boot-time comparison: rinx vs qemu-system-x86_64 -accel tcg on the same kernel and initramfs.

For each kernel in guest-cache/ (amd64, i386) and each emulator, boots with a script that
powers off right away and reports, measured on this machine in the same run:
  - time to shell: from start until the guest's /init prints "rinx: init started"
  - time to power-off: until the emulator exits
and prints the ratio rinx / QEMU (lower is better for rinx).

Usage: scripts/bench-boot.py [--rinx target/release/rinx] [--engine jit|interp] [--runs N]
                             [--arch amd64,i386]
Needs: scripts/guest-images.sh run once; qemu-system-x86 (apt-get install qemu-system-x86).
"""
import argparse
import base64
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = "echo rinx-bench-done\n"
MARK_SHELL = b"rinx: init started"


def run(cmd, timeout):
    """Runs cmd with its serial console on stdout; returns (t_shell, t_exit, status, output)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out = b""
    t_shell = None
    os.set_blocking(p.stdout.fileno(), False)
    while True:
        chunk = p.stdout.read()
        if chunk:
            out += chunk
            if t_shell is None and MARK_SHELL in out:
                t_shell = time.monotonic() - start
        if p.poll() is not None:
            rest = p.stdout.read() or b""
            out += rest
            if t_shell is None and MARK_SHELL in out:
                t_shell = time.monotonic() - start
            break
        if time.monotonic() - start > timeout:
            p.kill()
            p.wait()
            return t_shell, None, None, out
        time.sleep(0.05)
    return t_shell, time.monotonic() - start, p.returncode, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rinx", default=os.path.join(ROOT, "target/release/rinx"))
    ap.add_argument("--engine", default="jit", help="rinx --engine (jit is the x86-64 default)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--arch", default="amd64,i386")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        sys.exit("qemu-system-x86_64 not found: apt-get install -y qemu-system-x86")
    append = "console=ttyS0 panic=-1 rinx.script=" + base64.b64encode(SCRIPT.encode()).decode()
    rows = []
    for arch in args.arch.split(","):
        d = os.path.join(ROOT, "guest-cache", arch)
        kernel, initrd = os.path.join(d, "vmlinuz"), os.path.join(d, "initrd.img")
        if not os.path.exists(kernel):
            sys.exit(f"{kernel} missing: run scripts/guest-images.sh")
        cmds = {
            "rinx": [args.rinx, "run", "--engine", args.engine, "--kernel", kernel, "--initrd", initrd, "--append", append,
                     "--memory", "512M", "--serial", "stdio"],
            "qemu-tcg": [qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
                         "-kernel", kernel, "-initrd", initrd, "-append", append,
                         "-serial", "stdio", "-monitor", "none", "-display", "none", "-nodefaults"],
        }
        res = {}
        for name, cmd in cmds.items():
            best = None
            for _ in range(args.runs):
                t_shell, t_exit, status, out = run(cmd, args.timeout)
                if t_shell is None or t_exit is None:
                    print(f"{arch} {name}: did not reach the shell / exit (status {status})", file=sys.stderr)
                    print(out.decode(errors="replace")[-3000:], file=sys.stderr)
                if best is None or (t_exit or 1e9) < (best[1] or 1e9):
                    best = (t_shell, t_exit, status)
            res[name] = best
            print(f"{arch:6} {name:9} shell {fmt(best[0])}  power-off {fmt(best[1])}  status {best[2]}", flush=True)
        r, q = res["rinx"], res["qemu-tcg"]
        rows.append((arch, ratio(r[0], q[0]), ratio(r[1], q[1])))
    print()
    print("arch    rinx/qemu-tcg time-to-shell   rinx/qemu-tcg time-to-power-off")
    for arch, a, b in rows:
        print(f"{arch:6}  {a:>28}   {b:>32}")


def fmt(t):
    return f"{t:7.2f} s" if t is not None else "     n/a"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


if __name__ == "__main__":
    main()
