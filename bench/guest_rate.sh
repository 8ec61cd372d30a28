#!/bin/sh
# guest_rate.sh — guest dirty rate, boot time and pause latency, doppel vs QEMU microvm (see guest_rate.py).
# Env: DOPPEL_BUILD (default build/), RUNS (3), PAUSES (50).
set -e
cd "$(dirname "$0")/.."
/usr/bin/python3 bench/guest_rate.py
/usr/bin/python3 bench/render.py
