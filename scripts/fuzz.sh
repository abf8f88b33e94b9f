#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for SECONDS seconds each (default 60), one at a time,
# single job, and stop with a non-zero status at the first target that fails (crash, panic,
# out-of-bounds access, leak, timeout or out-of-memory; libFuzzer leaves the input in
# fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # no TARGET: every target in fuzz/Cargo.toml
#
# Installs cargo-fuzz when it is missing. Uses `cargo +nightly` when a nightly toolchain is
# installed, otherwise the current toolchain with RUSTC_BOOTSTRAP=1. Corpora grow in
# fuzz/corpus/<target>/ (gitignored) and are reused by the next run. Not run by CI.
# Environment: FUZZ_RSS_MB (default 4096) is libFuzzer's RSS limit, FUZZ_TIMEOUT (default 25)
# its per-input timeout in seconds, FUZZ_ARGS extra libFuzzer flags.
set -euo pipefail

cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

cargo=(cargo)
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo=(cargo +nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

# Targets whose interesting bytes sit far into the input get a fixed maximum length at once
# (-len_control=0): libFuzzer otherwise grows the length limit from a few bytes, and these
# targets run only tens to hundreds of inputs per second. The guest-code targets' code starts
# after 129 bytes of mode and registers; a bzImage setup header is at 0x1f1.
max_len() {
    case $1 in
        exec_any | jit_vs_interp) echo "-max_len=700 -len_control=0" ;;
        boot_images) echo "-max_len=4096 -len_control=0" ;;
    esac
}

"${cargo[@]}" fuzz build

for t in "${targets[@]}"; do
    echo "=== fuzz.sh: $t for ${secs}s" >&2
    if [ "$t" = boot_images ]; then
        python3 scripts/fuzz-seeds.py fuzz/corpus/boot_images
    fi
    # shellcheck disable=SC2046,SC2086
    if ! "${cargo[@]}" fuzz run "$t" -- -max_total_time="$secs" \
        -rss_limit_mb="${FUZZ_RSS_MB:-4096}" -timeout="${FUZZ_TIMEOUT:-25}" \
        -print_final_stats=1 $(max_len "$t") ${FUZZ_ARGS:-}; then
        echo "fuzz.sh: $t FAILED (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
done
echo "fuzz.sh: all ${#targets[@]} targets ran ${secs}s without a failure" >&2
