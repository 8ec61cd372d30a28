#!/bin/sh
# disk_bench.sh — guest disk throughput and latency through doppel vs QEMU microvm (same guest, same image),
# on tmpfs and on the real filesystem. Writes bench/results/disk.json and docs/perf/disk.md, then runs
# bench/render.py. Needs root and /dev/kvm. Env: DOPPEL_BUILD (default build/), RUNS (3), SECS (2),
# REALDIR (default /var/tmp).
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory binaries >/dev/null
/usr/bin/python3 bench/disk_bench.py
exec /usr/bin/python3 bench/render.py
