#!/bin/sh
# Generates host-CPU oracle cases for the integer unit tests (x86-64 Linux host with gcc).
# Usage: src/cpu/integer/host_oracle/run.sh OUTDIR
#        RINX_HOST_ORACLE_DIR=OUTDIR cargo test -p rinx --lib host_oracle
set -e
out=${1:?usage: run.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cd "$out"
python3 "$here/gen_alu.py"
python3 "$here/gen_data.py"
gcc -O1 -mno-red-zone -o alu alu.c
gcc -O1 -mno-red-zone -o data data.c
./alu > alu.txt
./data > data.txt
wc -l alu.txt data.txt
python3 "$here/gen_mem.py"
gcc -O1 -mno-red-zone -o mem mem.c
./mem > mem.txt
wc -l mem.txt
python3 "$here/gen_stack.py"
gcc -O1 -mno-red-zone -no-pie -o stack stack.c
./stack > stack.txt
wc -l stack.txt
