#!/usr/bin/env bash
# End-to-end check of the firmware crate against real Debian kernels, using QEMU as a stand-in
# CPU until rinx can boot them itself.
#
# For each configuration, `cargo run -p firmware --example qemu_image` lays out the machine
# exactly as rinx will (firmware::load_linux + firmware::write_pc_tables: zero page, e820,
# command line, initrd, GDT, identity page tables, ACPI and MP tables) and writes it as QEMU
# `-bios` + `-device loader` pieces; a tiny reset-vector trampoline sets the registers from the
# LinuxBootPlan. The guest runs a rinx.script and powers off through the ACPI \_S5_ object, so
# a pass proves: Linux accepted boot_params/e820/ACPI/MADT/HPET, reached /init, ran the script
# and wrote S5_SLP_TYP to PM1a_CNT.
#
# Needs qemu-system-x86_64 / qemu-system-i386 and guest-cache/ from scripts/guest-images.sh.
# The *-mptable configurations boot with acpi=off so Linux configures CPUs and interrupts from
# the Intel MP tables instead (they end with `reboot -f`, which exits QEMU under -no-reboot).
# Usage: scripts/qemu-firmware-check.sh [CONFIG...]   (default: all; names below)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/guest-cache"
OUT="${TMPDIR:-/tmp}/rinx-qemu-firmware-check"
TIMEOUT="${TIMEOUT:-240}"

for tool in qemu-system-x86_64 qemu-system-i386; do
    command -v "$tool" >/dev/null 2>&1 || { echo "qemu-firmware-check: $tool missing (apt-get install qemu-system-x86)" >&2; exit 2; }
done
for f in amd64/vmlinuz amd64/initrd.img i386/vmlinuz i386/initrd.img; do
    [ -s "$CACHE/$f" ] || { echo "qemu-firmware-check: $CACHE/$f missing; run scripts/guest-images.sh" >&2; exit 2; }
done

(cd "$ROOT" && cargo build -q -p firmware --example qemu_image) || exit 1
EXAMPLE="$ROOT/target/debug/examples/qemu_image"

ACPI_SCRIPT="$(printf 'echo RINX-CHECK-SCRIPT-RAN; uname -m; grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo\n' | base64 -w0)"
MP_SCRIPT="$(printf 'echo RINX-CHECK-SCRIPT-RAN; grep -c ^processor /proc/cpuinfo; head -4 /proc/interrupts; reboot -f\n' | base64 -w0)"

# name:arch:entry:ram_mib:cpus:tables
configs_all="amd64-64:amd64:64:256:1:acpi amd64-32:amd64:32:256:1:acpi i386-32:i386:32:256:1:acpi
amd64-64-smp:amd64:64:512:2:acpi amd64-64-6g:amd64:64:6144:1:acpi
i386-32-mptable:i386:32:256:2:mp amd64-64-mptable:amd64:64:256:2:mp"
want="${*:-$(for c in $configs_all; do printf '%s ' "${c%%:*}"; done)}"

fail=0
for c in $configs_all; do
    IFS=: read -r name arch entry ram cpus tables <<<"$c"
    case " $want " in *" $name "*) ;; *) continue ;; esac
    dir="$OUT/$name"
    rm -rf "$dir" && mkdir -p "$dir"
    if [ "$tables" = mp ]; then
        cmdline="console=ttyS0 panic=-1 acpi=off rinx.script=$MP_SCRIPT"
        pats=("Intel MultiProcessor Specification v1.4" "MPTABLE: OEM ID: RINX" "Processors: $cpus"
              "RINX-CHECK-SCRIPT-RAN" "IO-APIC   2-edge      timer")
    else
        cmdline="console=ttyS0 panic=-1 rinx.script=$ACPI_SCRIPT"
        pats=("ACPI: RSDP 0x00000000000E0000" "BIOS-e820: \[mem 0x0000000000100000" "ACPI: PM: (supports S0 S5)"
              "RINX-CHECK-SCRIPT-RAN" "rinx: script exit status 0" "reboot: Power down")
    fi
    "$EXAMPLE" "$CACHE/$arch/vmlinuz" "$CACHE/$arch/initrd.img" "$dir" "$ram" "$entry" "$cpus" \
        "$cmdline" >"$dir/layout.txt" || { echo "FAIL $name: qemu_image"; fail=1; continue; }
    qemu="qemu-system-x86_64"
    [ "$arch" = i386 ] && qemu="qemu-system-i386"
    # shellcheck disable=SC2046
    timeout "$TIMEOUT" "$qemu" -machine pc -m "$ram" -smp "$cpus" -nographic -no-reboot \
        $(cat "$dir/qemu-args") >"$dir/serial.log" 2>&1
    rc=$?
    log="$dir/serial.log"
    ok=1
    for pat in "${pats[@]}"; do
        grep -aq "$pat" "$log" || { echo "  $name: missing \"$pat\""; ok=0; }
    done
    if [ "$cpus" -gt 1 ]; then
        grep -aq "smpboot: Total of $cpus processors activated" "$log" || { echo "  $name: not all $cpus CPUs came up"; ok=0; }
    fi
    [ "$rc" = 0 ] || { echo "  $name: qemu exit status $rc (124 = timeout: the guest did not power off/reboot)"; ok=0; }
    if [ "$ok" = 1 ]; then echo "PASS $name ($(cat "$dir/layout.txt"))"; else echo "FAIL $name (log: $log)"; fail=1; fi
done
exit "$fail"
