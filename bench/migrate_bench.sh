#!/bin/sh
# migrate_bench.sh — live migration as the guest feels it: doppel vs QEMU 7.2, interleaved (see
# bench/migrate_bench.py). 11 configurations x 2 hot sets x RUNS (5): ~30-40 minutes on a quiet machine.
# Env: RUNS=5, SIZES="200M", FILLS="zero random", CONFIGS="doppel-10ms ... qemu-postcopy", QEMU_CAP_S=30.
set -e
cd "$(dirname "$0")/.."
make -s binaries
command -v qemu-system-x86_64 >/dev/null || { echo "migrate_bench: qemu-system-x86_64 not installed" >&2; exit 1; }
/usr/bin/python3 bench/migrate_bench.py "$@"
/usr/bin/python3 bench/render.py
