#!/bin/sh
# kv_bench.sh — KV ops/s and p50/p99 latency through doppel vs QEMU microvm (same guest, same topology).
# Writes bench/results/kv_bench.json and docs/perf/kv_bench.md. Needs root and /dev/kvm.
# Env: DOPPEL_BUILD (default build/), N (20000 unpaced ops), RUNS (3), PACED_N (6000), RATE (2000).
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory binaries >/dev/null
exec /usr/bin/python3 bench/kv_bench.py
