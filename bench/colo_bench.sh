#!/bin/sh
# colo_bench.sh — COLO vs Remus 25 ms vs unprotected (beside an idle second VM): KV and redis-benchmark
# throughput and p50/p99, checkpoints/s, pause per checkpoint. Writes bench/results/colo.json and
# docs/perf/colo.md. Needs root, /dev/kvm, redis-benchmark. Env: see bench/colo_bench.py.
set -eu
cd "$(dirname "$0")/.."
[ -n "${DOPPEL_BUILD:-}" ] || make --no-print-directory binaries >/dev/null
/usr/bin/python3 bench/colo_bench.py
/usr/bin/python3 bench/render.py
