#!/bin/sh
# migrate_bench.sh — live migration bench: doppel vs QEMU 7.2 (see bench/migrate_bench.py). ~3-5 minutes.
# Env: SIZES="16M 64M 200M" (hot sets), QEMU_CAP_S=20 (give up on a QEMU migration after this).
set -e
cd "$(dirname "$0")/.."
make -s binaries
command -v qemu-system-x86_64 >/dev/null || { echo "migrate_bench: qemu-system-x86_64 not installed" >&2; exit 1; }
/usr/bin/python3 bench/migrate_bench.py "$@"
/usr/bin/python3 bench/render.py
