#!/usr/bin/env bash
# Fetch Debian 12 guest kernels and build busybox initramfs images for rinx.
#
# Output (gitignored) in <repo>/guest-cache/:
#   amd64/vmlinuz      Debian 12 linux-image-6.1.*-amd64 (the version linux-image-amd64 depends on)
#   amd64/initrd.img   cpio newc initramfs: static busybox (amd64) + /init
#   i386/vmlinuz       Debian 12 linux-image-6.1.*-686 (the version linux-image-686:i386 depends on)
#   i386/initrd.img    cpio newc initramfs: static busybox (i386) + /init
#   amd64/storage-modules.cpio
#                      cpio newc archive to append to initrd.img: the kernel modules (from the same
#                      kernel package) that virtio-scsi disks with ext4 need, in /lib/modules/*.ko,
#                      with /lib/modules/order listing them in dependency order for insmod
#   amd64/net-modules.cpio
#                      the same for the NIC drivers: e1000 and virtio_net (with virtio_pci and
#                      virtio_net's failover dependencies)
#   amd64/hba-modules.cpio
#                      the same for disks behind the BusLogic BT-958 HBA (BusLogic, sd_mod, ext4 and
#                      their dependencies), in /lib/hba-modules/*.ko with /lib/hba-modules/order
#   */VERSION          package names and versions used
#
# /init mounts proc, sysfs and devtmpfs, then runs the script named on the kernel command line as
# `rinx.script=<path in the initramfs>` or `rinx.script=<base64 of a sh script>`, prints
# "rinx: script exit status N" and powers off; without rinx.script it starts an interactive /bin/sh
# on the console.
#
# Re-running is a no-op when every output file is present (use --force to rebuild).
# Needs: apt-get, apt-cache, dpkg, dpkg-deb (Debian or Ubuntu host), python3; root (or sudo) only
# if the i386 architecture must be added to dpkg.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/guest-cache"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf 'guest-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Modules for virtio-scsi disks holding ext4 and CD-ROMs holding ISO 9660 (plus everything they
# depend on, resolved from each module's .modinfo "depends=" field; crc32c_generic is ext4's and
# jbd2's crypto soft dependency). amd64/storage-modules.list records the list the cpio was made
# from: a different list rebuilds it.
STORAGE_MODULES="virtio_pci virtio_scsi sd_mod ext4 crc32c_generic sr_mod cdrom isofs"
# Modules for disks behind the BusLogic HBA (tests/boot_hba.rs).
HBA_MODULES="BusLogic sd_mod ext4 crc32c_generic"
# NIC drivers for the network boot test (tests/boot_network.rs).
NET_MODULES="virtio_pci virtio_net e1000"

outputs=("$CACHE/amd64/vmlinuz" "$CACHE/amd64/initrd.img" "$CACHE/amd64/storage-modules.cpio" "$CACHE/amd64/net-modules.cpio" "$CACHE/amd64/hba-modules.cpio" "$CACHE/i386/vmlinuz" "$CACHE/i386/initrd.img")
if [ "$FORCE" = 0 ]; then
    all=1
    for f in "${outputs[@]}"; do [ -s "$f" ] || all=0; done
    # A cache written by an older script may hold the amd64 busybox in the i386 initramfs.
    for a in amd64 i386; do grep -q "_${a}\.deb\$" "$CACHE/$a/VERSION.busybox" 2>/dev/null || all=0; done
    [ "$(cat "$CACHE/amd64/storage-modules.list" 2>/dev/null)" = "$STORAGE_MODULES" ] || all=0
    if [ "$all" = 1 ]; then
        log "all images present in $CACHE (nothing to do; --force rebuilds)"
        exit 0
    fi
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    cat >&2 <<MSG
guest-images: this host has no apt-get/dpkg-deb, so the Debian packages cannot be fetched here.
Do it on a Debian 12 (bookworm) machine or container, e.g.
    docker run --rm -v "$ROOT:/rinx" debian:12 bash -c 'apt-get update && apt-get install -y python3 && /rinx/scripts/guest-images.sh'
or place the files by hand:
    $CACHE/amd64/vmlinuz     from linux-image-6.1.0-*-amd64 (/boot/vmlinuz-*)
    $CACHE/amd64/initrd.img  cpio newc archive with a static busybox and an /init script
    $CACHE/i386/vmlinuz      from linux-image-6.1.0-*-686 (i386)
    $CACHE/i386/initrd.img   same as amd64 with busybox-static:i386
MSG
    exit 1
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to write the cpio archives (apt-get install python3)"

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

# Kernel package that a Debian meta package (linux-image-amd64, linux-image-686:i386) depends on.
kernel_pkg() {
    apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# A partial failure (e.g. "Mirror sync in progress" on one index) is not fatal: the packages needed
# may still be resolvable; kernel_pkg/download report clearly if they are not.
apt_update() {
    $SUDO apt-get update -qq || log "warning: apt-get update reported errors; continuing with the lists we have"
}

ensure_i386() {
    if ! dpkg --print-foreign-architectures | grep -qx i386 && [ "$(dpkg --print-architecture)" != i386 ]; then
        log "adding dpkg architecture i386 and refreshing the package lists"
        $SUDO dpkg --add-architecture i386 || die "dpkg --add-architecture i386 failed (run as root)"
        apt_update
    elif ! apt-cache show busybox-static:i386 >/dev/null 2>&1; then
        apt_update
    fi
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# download <pkg[:arch]> -> prints the .deb path
download() {
    # One directory per package spec: busybox-static:amd64 and busybox-static:i386 share a file-name
    # prefix, and picking "the" .deb from a shared directory once took the wrong architecture.
    local pkg="$1" dir="$WORK/debs/${1//:/_}"
    mkdir -p "$dir"
    # apt drops privileges to _apt for downloads; let it write here to avoid the "unsandboxed" warning.
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chmod 755 "$WORK" && chown _apt "$dir"; fi
    (cd "$dir" && apt-get download -qq "$pkg" >&2) || die "apt-get download $pkg failed"
    local name="${pkg%%:*}"
    local deb
    deb="$(ls "$dir"/"${name}"_*.deb | head -n1)"
    [ -f "$deb" ] || die "no .deb for $pkg"
    printf '%s\n' "$deb"
}

# check_elf <file> <amd64|i386>: the ELF class and e_machine must match the guest architecture
# (an x86-64 busybox in the i386 initramfs makes the -686 kernel panic with "No working init").
check_elf() {
    python3 - "$1" "$2" <<'PY' || die "$1 is not an $2 ELF executable"
import struct, sys
path, arch = sys.argv[1:3]
with open(path, "rb") as f:
    h = f.read(20)
want = {"amd64": (2, 62), "i386": (1, 3)}[arch]  # (EI_CLASS, e_machine): ELFCLASS64/EM_X86_64, ELFCLASS32/EM_386
ok = h[:4] == b"\x7fELF" and (h[4], struct.unpack("<H", h[18:20])[0]) == want
sys.exit(0 if ok else 1)
PY
}

write_init() {
    cat > "$1" <<'INIT'
#!/bin/busybox sh
# rinx guest init (scripts/guest-images.sh)
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || echo "rinx: devtmpfs mount failed"
echo "rinx: init started ($(uname -m) $(uname -r))"
script=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        rinx.script=*) script="${arg#rinx.script=}" ;;
    esac
done
if [ -n "$script" ]; then
    case "$script" in
        /*) path="$script" ;;
        *) path=/tmp/rinx-script.sh
           echo "$script" | base64 -d > "$path" || echo "rinx: rinx.script is not valid base64" ;;
    esac
    sh "$path"
    echo "rinx: script exit status $?"
    sync
    poweroff -f
    echo "rinx: poweroff failed, starting a shell"
fi
exec setsid cttyhack /bin/sh
INIT
}

# make_initrd <busybox binary> <output>
make_initrd() {
    local busybox="$1" out="$2"
    write_init "$WORK/init"
    python3 - "$busybox" "$WORK/init" "$out.tmp" <<'PY'
import sys

busybox_path, init_path, out_path = sys.argv[1:4]
entries = []  # (name, mode, data, rdevmajor, rdevminor)
for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root"]:
    entries.append((d, 0o040755, b"", 0, 0))
entries.append(("dev/console", 0o020600, b"", 5, 1))
entries.append(("dev/null", 0o020666, b"", 1, 3))
with open(busybox_path, "rb") as f:
    entries.append(("bin/busybox", 0o100755, f.read(), 0, 0))
entries.append(("bin/sh", 0o120777, b"busybox", 0, 0))
with open(init_path, "rb") as f:
    entries.append(("init", 0o100755, f.read(), 0, 0))

def header(ino, name, mode, size, nlink, maj, mnr):
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, maj, mnr, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % v for v in fields)

def pad(buf):
    return b"\0" * ((4 - len(buf) % 4) % 4)

out = bytearray()
for ino, (name, mode, data, maj, mnr) in enumerate(entries, start=1):
    nlink = 2 if mode & 0o170000 == 0o040000 else 1
    out += header(ino, name, mode, len(data), nlink, maj, mnr) + name.encode() + b"\0"
    out += pad(out)
    out += data
    out += pad(out)
out += header(0, "TRAILER!!!", 0, 0, 1, 0, 0) + b"TRAILER!!!\0"
out += pad(out)
out += b"\0" * ((512 - len(out) % 512) % 512)
with open(out_path, "wb") as f:
    f.write(out)
PY
    mv "$out.tmp" "$out"
}


# make_modules_cpio <extracted kernel package dir> <output> <directory in the archive> <module>...
make_modules_cpio() {
    local root="$1" out="$2" dir="$3"
    shift 3
    python3 - "$root" "$out.tmp" "$dir" "$@" <<'PY'
import os, sys

root, out_path, moddir, wanted = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
mods = {}
for dirpath, _, files in os.walk(os.path.join(root, "lib", "modules")):
    for f in files:
        if f.endswith(".ko"):
            mods[f[:-3].replace("-", "_")] = os.path.join(dirpath, f)

def depends(path):
    data = open(path, "rb").read()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    v = data[i + 9:data.index(b"\0", i + 1)].decode()
    return [d.replace("-", "_") for d in v.split(",") if d]

order, seen = [], set()
def visit(name, stack=()):
    if name in seen:
        return
    if name not in mods:
        sys.exit(f"module {name} not found (built in? check the kernel config)")
    if name in stack:
        sys.exit(f"dependency loop at {name}")
    for d in depends(mods[name]):
        visit(d, stack + (name,))
    seen.add(name)
    order.append(name)
for w in wanted:
    visit(w)

entries = [("lib", 0o040755, b""), (f"lib/{moddir}", 0o040755, b"")]
for m in order:
    entries.append((f"lib/{moddir}/{m}.ko", 0o100644, open(mods[m], "rb").read()))
entries.append((f"lib/{moddir}/order", 0o100644, ("\n".join(order) + "\n").encode()))

def header(ino, name, mode, size, nlink):
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % v for v in fields)

def pad(buf):
    return b"\0" * ((4 - len(buf) % 4) % 4)

out = bytearray()
for ino, (name, mode, data) in enumerate(entries, start=1000):
    nlink = 2 if mode & 0o170000 == 0o040000 else 1
    out += header(ino, name, mode, len(data), nlink) + name.encode() + b"\0"
    out += pad(out)
    out += data
    out += pad(out)
out += header(0, "TRAILER!!!", 0, 0, 1) + b"TRAILER!!!\0"
out += pad(out)
out += b"\0" * ((512 - len(out) % 512) % 512)
open(out_path, "wb").write(out)
print(f"guest-images: {moddir} (insmod order): " + " ".join(order), file=sys.stderr)
PY
    mv "$out.tmp" "$out"
}

# build <arch dir> <kernel meta package> <busybox package>
build() {
    local arch="$1" meta="$2" bbpkg="$3" dest="$CACHE/$1"
    mkdir -p "$dest"
    local kpkg
    kpkg="$(kernel_pkg "$meta")"
    kpkg="${kpkg%%:*}"
    [ -n "$kpkg" ] || die "cannot resolve the kernel package that $meta depends on (apt-get update?)"
    local suffix=""
    case "$meta" in *:*) suffix=":${meta##*:}" ;; esac
    log "$arch: kernel package $kpkg$suffix, busybox package $bbpkg"

    local want_modules=0
    [ "$arch" = amd64 ] && want_modules=1
    if [ "$FORCE" = 1 ] || [ ! -s "$dest/vmlinuz" ] || ! grep -q "^kernel ${kpkg}_" "$dest/VERSION.kernel" 2>/dev/null \
        || { [ "$want_modules" = 1 ] && { [ ! -s "$dest/storage-modules.cpio" ] || [ ! -s "$dest/net-modules.cpio" ] || [ ! -s "$dest/hba-modules.cpio" ]; }; } \
        || { [ "$want_modules" = 1 ] && [ "$(cat "$dest/storage-modules.list" 2>/dev/null)" != "$STORAGE_MODULES" ]; }; then
        local deb x
        deb="$(download "$kpkg$suffix")"
        x="$WORK/x-kernel-$arch"
        mkdir -p "$x"
        dpkg-deb -x "$deb" "$x"
        local vmlinuz
        vmlinuz="$(ls "$x"/boot/vmlinuz-* | head -n1)"
        [ -f "$vmlinuz" ] || die "$deb holds no /boot/vmlinuz-*"
        cp "$vmlinuz" "$dest/vmlinuz.tmp" && mv "$dest/vmlinuz.tmp" "$dest/vmlinuz"
        if [ "$want_modules" = 1 ]; then
            make_modules_cpio "$x" "$dest/storage-modules.cpio" modules $STORAGE_MODULES
            echo "$STORAGE_MODULES" > "$dest/storage-modules.list"
            make_modules_cpio "$x" "$dest/net-modules.cpio" modules $NET_MODULES
            make_modules_cpio "$x" "$dest/hba-modules.cpio" hba-modules $HBA_MODULES
        fi
        echo "kernel $(basename "$deb")" > "$dest/VERSION.kernel"
        rm -rf "$x"
    fi
    if [ "$FORCE" = 1 ] || [ ! -s "$dest/initrd.img" ] || ! grep -q "_${arch}\.deb\$" "$dest/VERSION.busybox" 2>/dev/null; then
        local deb x
        deb="$(download "$bbpkg")"
        x="$WORK/x-busybox-$arch"
        mkdir -p "$x"
        dpkg-deb -x "$deb" "$x"
        [ -f "$x/bin/busybox" ] || die "$deb holds no /bin/busybox"
        check_elf "$x/bin/busybox" "$arch"
        make_initrd "$x/bin/busybox" "$dest/initrd.img"
        echo "busybox $(basename "$deb")" > "$dest/VERSION.busybox"
        rm -rf "$x"
    fi
    cat "$dest"/VERSION.* > "$dest/VERSION"
    log "$arch: $(ls -l "$dest/vmlinuz" | awk '{print $5}') byte vmlinuz, $(ls -l "$dest/initrd.img" | awk '{print $5}') byte initrd.img"
}

build amd64 linux-image-amd64 busybox-static:amd64
ensure_i386
build i386 linux-image-686:i386 busybox-static:i386
log "done: images in $CACHE"
