#!/bin/sh
# scale_bench.sh — N small VMs with a KV service each as one fleet vs QEMU microvm (bench/scale_bench.py).
# Writes bench/results/scale.json and docs/perf/scale.md. Needs root and /dev/kvm.
# Env: N (1000), MEM (16M), QEMU_N (min(N, 100)), IDLE_S (5), DOPPEL_BUILD.
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory binaries >/dev/null
exec /usr/bin/python3 bench/scale_bench.py
