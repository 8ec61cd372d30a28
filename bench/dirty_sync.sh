#!/bin/sh
# dirty_sync.sh — build bench/dirty_sync.c against build/libdoppel.a, run it, write bench/results/dirty_sync.json.
# Usage: bench/dirty_sync.sh [--quick]
set -eu
cd "$(dirname "$0")/.."
make --no-print-directory build/libdoppel.a >/dev/null
mkdir -p build/bench bench/results
LIBS="$(pkg-config --libs libnl-route-3.0 json-c libzstd libxxhash 2>/dev/null || true)"
gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -I. bench/dirty_sync.c build/libdoppel.a \
	$LIBS -lev -lpthread -lm -o build/bench/dirty_sync
build/bench/dirty_sync "$@" >bench/results/dirty_sync.json.tmp
mv bench/results/dirty_sync.json.tmp bench/results/dirty_sync.json
python3 - bench/results/dirty_sync.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if "skipped" in r:
    print("dirty_sync: skipped:", r["skipped"]); sys.exit(0)
print("%-8s %-15s %-5s %10s %14s %12s" % ("mem MiB", "mode", "start", "start us", "first sync us", "idle sync us"))
for e in r["idle"]:
    print("%-8d %-15s %-5s %10.1f %14.1f %12.1f" % (e["mem_mib"], e["mode"], e["start"], e["start_us"],
          e["first_sync_us"], e["idle_sync_us"]))
print("%-15s %-14s %7s %9s %12s %14s" % ("mode", "guest", "dirty", "sync us", "ns/page", "wr-fault us/pg"))
for e in r["dirty"]:
    print("%-15s %-14s %7d %9.1f %12.0f %14.2f" % (e["mode"], e["guest"], e["dirty_pages"], e["sync_us"],
          e["sync_ns_per_page"], e["write_fault_us_per_page"]))
PY
