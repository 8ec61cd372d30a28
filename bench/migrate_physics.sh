#!/bin/sh
# migrate_physics.sh — what bounds post-copy on this host (bench/migrate_physics.c): loopback link, zstd,
# destination install (pwritev + UFFDIO_CONTINUE); prints median (min-max) of 5 repetitions each and writes
# bench/results/migrate_physics.json. The guest's own rate and the write-protect fault cost come from
# bench/guest_rate.sh and bench/dirty_sync.sh. Run on a quiet machine: every figure here is CPU-bound.
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/bench bench/results
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE bench/migrate_physics.c -lzstd -lpthread \
	-o build/bench/migrate_physics
build/bench/migrate_physics >bench/results/migrate_physics.json.tmp
mv bench/results/migrate_physics.json.tmp bench/results/migrate_physics.json
python3 - bench/results/migrate_physics.json <<'PY'
import json, statistics, sys
for k, v in json.load(open(sys.argv[1])).items():
    print("%-26s %12.1f (%.1f-%.1f)" % (k, statistics.median(v), min(v), max(v)))
PY
