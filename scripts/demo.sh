#!/usr/bin/env bash
# demo.sh — boot the test guest with its dirty workload, show status, pause/resume, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
tmp=$(mktemp -d /tmp/doppel-demo.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
sock=$tmp/demo.sock
echo "== booting build/guest.elf under doppel: work=dirty ws=64M"
$B/doppel run --name demo --kernel $B/guest.elf --mem 256M --cmdline "work=dirty ws=64M pi=500" \
	--serial file:$tmp/serial --control $sock &
pid=$!
for _ in $(seq 100); do [ -S $sock ] && break; sleep 0.05; done
sleep 2
echo "== guest console"
cat $tmp/serial
echo "== doppel status demo"
$B/doppel status demo --control $sock
echo "== doppel pause / resume"
$B/doppel pause demo --control $sock
sleep 0.5
$B/doppel resume demo --control $sock
sleep 1
tail -2 $tmp/serial
echo "== doppel stop demo"
$B/doppel stop demo --control $sock
wait $pid && echo "guest exited with status $?"
