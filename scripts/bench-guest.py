#!/usr/bin/env python3
"""In-guest workload benchmark: rinx (each engine) vs qemu-system-x86_64 -accel tcg vs native.

Boots Debian's amd64 kernel and the busybox initramfs from guest-cache/ (scripts/guest-images.sh)
in each emulator with a script that makes 16 MiB of deterministic data and runs, one after the
other, `md5sum`, `sha256sum`, `gzip -1` and `bzip2` on it. Each step prints a start and an end
marker on the serial console; the host timestamps the markers as they arrive, so every emulator
is measured the same way (no guest clock involved). The same script runs natively under the
same busybox binary (taken from the initramfs). All of it in one run on one machine; the table
gives seconds and the ratio to QEMU TCG (lower is better for rinx) and to native. With --runs N
the emulators take turns for N rounds (a slow phase of a shared host hits them alike) and each
row of the table is the fastest of the N runs.

The outputs (md5sum, sha256sum, gzip and bzip2 output digests) of every run must equal the
native ones, else the script reports OUTPUT MISMATCH.

Usage: scripts/bench-guest.py [--rinx target/release/rinx] [--engines interp,jit] [--runs N]
                              [--skip-qemu] [--timeout S]
Needs: scripts/guest-images.sh run once; qemu-system-x86 (installed with apt-get when missing
and running as root).
"""
import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = [
    ("md5sum", "md5sum /tmp/d"),
    ("sha256sum", "sha256sum /tmp/d"),
    ("gzip -1", "gzip -1 -c /tmp/d > /tmp/d.gz"),
    ("bzip2", "bzip2 -c /tmp/d > /tmp/d.bz2"),
]
MARK_SHELL = b"rinx: init started"


def guest_script(tmp="/tmp"):
    lines = [f"seq 1 3000000 | head -c 16777216 > {tmp}/d"]
    for i, (_, cmd) in enumerate(WORKLOADS):
        cmd = cmd.replace("/tmp/", tmp + "/")
        lines.append(f"echo BENCH-START-{i}; {cmd} >/dev/null; echo BENCH-END-{i}")
    # Outputs checked against the native run: a fast but wrong emulator must not pass.
    lines.append(f"echo BENCH-CHECK $(md5sum < {tmp}/d) $(md5sum < {tmp}/d.gz) "
                 f"$(md5sum < {tmp}/d.bz2) $(sha256sum < {tmp}/d)")
    lines.append("echo BENCH-DONE")
    return "\n".join(lines) + "\n"


def run(cmd, timeout, env=None):
    """Runs cmd; returns ({marker: seconds since start}, status, output)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env)
    os.set_blocking(p.stdout.fileno(), False)
    out = b""
    marks = {}
    buf = b""
    while True:
        chunk = p.stdout.read()
        now = time.monotonic() - start
        if chunk:
            out += chunk
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.strip()
                if line.startswith(b"BENCH-") and line not in marks:
                    marks[line.decode()] = now
                if MARK_SHELL in line and "shell" not in marks:
                    marks["shell"] = now
        if p.poll() is not None:
            out += p.stdout.read() or b""
            break
        if now > timeout:
            p.kill()
            p.wait()
            return marks, None, out
        time.sleep(0.01)
    return marks, p.returncode, out


def durations(marks):
    d = {"time to shell": marks.get("shell")}
    for i, (name, _) in enumerate(WORKLOADS):
        a, b = marks.get(f"BENCH-START-{i}"), marks.get(f"BENCH-END-{i}")
        d[name] = (b - a) if a is not None and b is not None else None
    return d


def extract_busybox(initrd, dest):
    """Pulls bin/busybox out of the cpio newc initramfs that guest-images.sh wrote."""
    data = open(initrd, "rb").read()
    off = 0
    while off + 110 <= len(data):
        h = data[off:off + 110]
        if h[:6] != b"070701":
            break
        size = int(h[54:62], 16)
        namesize = int(h[94:102], 16)
        name = data[off + 110:off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        if name == "bin/busybox":
            with open(dest, "wb") as f:
                f.write(data[off:off + size])
            os.chmod(dest, 0o755)
            return dest
        off = (off + size + 3) & ~3
    sys.exit(f"no bin/busybox in {initrd}")


def ensure_qemu():
    q = shutil.which("qemu-system-x86_64")
    if q or os.geteuid() != 0 or not shutil.which("apt-get"):
        return q
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"],
                   check=False, stdout=subprocess.DEVNULL)
    return shutil.which("qemu-system-x86_64")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rinx", default=os.path.join(ROOT, "target/release/rinx"))
    ap.add_argument("--engines", default="interp")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--skip-qemu", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    d = os.path.join(ROOT, "guest-cache", "amd64")
    kernel, initrd = os.path.join(d, "vmlinuz"), os.path.join(d, "initrd.img")
    if not os.path.exists(kernel):
        sys.exit(f"{kernel} missing: run scripts/guest-images.sh")
    append = ("console=ttyS0 panic=-1 rinx.script="
              + base64.b64encode(guest_script().encode()).decode())
    cmds = {}
    for e in args.engines.split(","):
        cmds[f"rinx {e}"] = [args.rinx, "run", "--engine", e, "--kernel", kernel, "--initrd", initrd,
                             "--append", append, "--memory", "512M", "--serial", "stdio"]
    if not args.skip_qemu:
        qemu = ensure_qemu()
        if not qemu:
            sys.exit("qemu-system-x86_64 not found: apt-get install -y qemu-system-x86 (or --skip-qemu)")
        cmds["qemu-tcg"] = [qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
                            "-kernel", kernel, "-initrd", initrd, "-append", append,
                            "-serial", "stdio", "-monitor", "none", "-display", "none", "-nodefaults"]
    tmp = tempfile.mkdtemp(prefix="rinx-bench-")
    bb = extract_busybox(initrd, os.path.join(tmp, "busybox"))
    cmds["native"] = [bb, "sh", "-c", guest_script(tmp)]

    # Runs are interleaved (every emulator once per round) so that a slow phase of the host
    # hits all of them alike; each row takes the fastest of the runs.
    results = {}
    checks = {}
    for r in range(args.runs):
        for name, cmd in cmds.items():
            marks, status, out = run(cmd, args.timeout)
            if "BENCH-DONE" not in marks:
                print(f"{name}: did not finish (status {status})", file=sys.stderr)
                print(out.decode(errors="replace")[-3000:], file=sys.stderr)
            d = durations(marks)
            for line in out.decode(errors="replace").splitlines():
                if line.startswith("BENCH-CHECK") and "$(" not in line:
                    checks.setdefault(name, set()).add(line.split(None, 1)[-1].strip())
            best = results.setdefault(name, dict(d))
            for k, v in d.items():
                if v is not None and (best.get(k) is None or v < best[k]):
                    best[k] = v
            print(f"run {r + 1} {name:12} " + "  ".join(f"{k} {fmt(v)}" for k, v in d.items()),
                  flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    want = checks.get("native")
    bad = [n for n in cmds if n != "native" and (checks.get(n) != want or len(want) != 1)]
    if want is None or bad:
        print(f"OUTPUT MISMATCH against native (md5 of data, gzip, bzip2 output; sha256): "
              f"{bad or 'native run failed'}", file=sys.stderr)
        for n in cmds:
            print(f"  {n}: {checks.get(n)}", file=sys.stderr)
    else:
        print("outputs (md5sum, gzip, bzip2, sha256sum) identical to native in every run")

    rows = ["time to shell"] + [w for w, _ in WORKLOADS]
    print()
    print(f"{'':14}" + "".join(f"{n:>14}" for n in results))
    for r in rows:
        print(f"{r:14}" + "".join(f"{fmt(results[n][r]):>14}" for n in results))
    for base in ("qemu-tcg", "native"):
        if base not in results:
            continue
        print(f"\nratio to {base} (time; lower is faster)")
        for n in results:
            if n.startswith("rinx"):
                print(f"  {n:12} " + "  ".join(
                    f"{r}: {ratio(results[n][r], results[base][r])}" for r in rows))


def fmt(t):
    return f"{t:.2f} s" if t is not None else "n/a"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


if __name__ == "__main__":
    main()
