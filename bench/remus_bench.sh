#!/bin/sh
# remus_bench.sh — Remus: guest dirty rate protected vs not, pause per epoch vs dirty pages, failover
# outage and added output latency of the KV service. Writes bench/results/remus.json and
# docs/perf/remus.md. Needs root and /dev/kvm. Env: DOPPEL_BUILD (default build/), SECS (4 per rate run),
# FO_RUNS (3 failovers per kind), KV_N (1500 paced INCRs), KV_RATE (500/s), PARTS (rate,pause,net; or
# "failover" alone: only the failover rows, into bench/results/remus_failover_check.json).
set -eu
cd "$(dirname "$0")/.."
[ -n "${DOPPEL_BUILD:-}" ] || make --no-print-directory binaries >/dev/null
/usr/bin/python3 bench/remus_bench.py
/usr/bin/python3 bench/render.py
