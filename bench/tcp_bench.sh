#!/bin/sh
# tcp_bench.sh — the guest's Redis RESP and HTTP services: redis-benchmark and wrk through doppel vs QEMU
# microvm (interleaved) and under Remus at 25 ms / 100 ms epochs. Writes bench/results/tcp.json and
# docs/perf/tcp.md, then re-renders docs/performance.md. Needs root, /dev/kvm, redis-tools, wrk, QEMU.
# Env: DOPPEL_BUILD (default build/), N (20000 ops per command), REMUS_N (1000), RUNS (3), CONNS (20), SECS (3).
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory binaries >/dev/null
/usr/bin/python3 bench/tcp_bench.py
exec /usr/bin/python3 bench/render.py
