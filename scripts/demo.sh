#!/usr/bin/env bash
# demo.sh — a protected VM survives the death of its host: Remus failover with a live client.
#
# Builds three hosts as network namespaces (client, hostA, hostB), runs the test guest's key-value
# service on hostA protected by a standby on hostB, drives a client INCR load from the client host,
# SIGKILLs the primary mid-load, and shows the client carrying on with no acknowledged operation lost.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
P=${DEMO_PREFIX:-dpdemo-}
MAC=52:54:00:12:34:56
GUEST="work=kv ip=10.0.0.10/24"
tmp=$(mktemp -d /tmp/doppel-demo.XXXXXX)
pids=()

cleanup() {
	for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
	scripts/topology.sh down "$P" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }

say "building hosts: ${P}client, ${P}hostA, ${P}hostB (one LAN, plus a replication link A<->B)"
scripts/topology.sh up "$P" >/dev/null

say "a CA and one certificate per host (scripts/tls-certs.sh: certtool; docs/security.md)"
scripts/tls-certs.sh $tmp/tls hostA hostB

say "hostB: standby (holds a replica, runs no vCPUs), listening on the replication link, TLS 1.3 only"
ip netns exec ${P}hostB $B/doppel run --standby --listen 192.168.100.2:7700 --name standby --mem 256M \
	--tls-dir $tmp/tls/hostB --tls-peer-name hostA \
	--net tap=tapB0,bridge=br0,mac=$MAC --cmdline "$GUEST" \
	--serial file:$tmp/standby.serial --control $tmp/standby.sock 2>$tmp/standby.err &
pids+=($!)

say "hostA: primary runs the guest's KV service at 10.0.0.10:7777"
ip netns exec ${P}hostA $B/doppel run --kernel $B/guest.elf --name primary --mem 256M \
	--net tap=tapA0,bridge=br0,mac=$MAC --cmdline "$GUEST" \
	--serial file:$tmp/primary.serial --control $tmp/primary.sock 2>$tmp/primary.err &
primary=$!
pids+=($primary)
for _ in $(seq 100); do
	in_ns client $B/doppel-kv 10.0.0.10 SET hello world --timeout 100 --retries 1 >/dev/null 2>&1 && break
	sleep 0.1
done
echo "client: SET hello world -> $(in_ns client $B/doppel-kv 10.0.0.10 GET hello)"

say "doppel protect primary --peer 192.168.100.2:7700 --tls-dir hostA (mutual TLS; epochs every 25 ms)"
$B/doppel protect primary --peer 192.168.100.2:7700 --control $tmp/primary.sock \
	--tls-dir $tmp/tls/hostA --tls-peer-name hostB
echo "primary status: tls=$($B/doppel status primary --control $tmp/primary.sock --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tls"])')"
sleep 1

say "client: 4000 INCRs at 800/s, every acknowledged one logged"
in_ns client $B/doppel-kv 10.0.0.10 --load 4000 --rate 800 --cmd INCR --key counter \
	--log $tmp/acks.jsonl --json >$tmp/load.json &
load=$!
sleep 2.5

$B/doppel status primary --control $tmp/primary.sock --json >$tmp/primary-status.json

say "kill -9 the primary (its host dies) in the middle of the load"
{ kill -9 $primary && wait $primary; } 2>/dev/null || true
echo "primary (pid $primary) killed at $(date +%T.%3N)"

wait $load || true
acked=$(wc -l <$tmp/acks.jsonl)
last=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_value"])' $tmp/load.json)
value=$(in_ns client $B/doppel-kv 10.0.0.10 GET counter)

say "result"
python3 - "$tmp/load.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"client: acknowledged {s['acked']} of {s['acked'] + s['unacked']} INCRs, "
      f"{s['ops_per_s']:.0f} ops/s, p50 {s['p50_us'] / 1000:.1f} ms, p99 {s['p99_us'] / 1000:.1f} ms")
print(f"outage seen by the client (longest stall): {s['longest_stall_ms']:.0f} ms "
      "(SIGKILL resets the replication connection; a host that just goes silent is declared dead "
      "after the 200 ms heartbeat timeout)")
EOF
echo "highest acknowledged INCR: $last; value read back after failover: $value"
echo "hello is still: $(in_ns client $B/doppel-kv 10.0.0.10 GET hello)"
if [ "$value" = "$last" ] && [ "$acked" = "$last" ]; then
	echo "=> zero acknowledged operations lost"
else
	echo "=> MISMATCH: acknowledged $acked (last $last), read back $value"
	exit 1
fi

say "epoch statistics (the primary just before it died, the standby after taking over)"
$B/doppel status standby --control $tmp/standby.sock --json >$tmp/standby-status.json
python3 - "$tmp/primary-status.json" "$tmp/standby-status.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))["remus"]
s = json.load(open(sys.argv[2]))
r = s["remus"]
print(f"primary: {p['epochs']} epochs of {p['interval_ms']} ms, last acknowledged {p['acked_epoch']}; "
      f"pause p50 {p['pause']['p50_us']:.0f} us, p99 {p['pause']['p99_us']:.0f} us; "
      f"dirty pages/epoch avg {p['dirty_pages']['avg']:.0f}; "
      f"{p['bytes']['raw'] / 2**20:.1f} MiB raw, {p['bytes']['wire'] / 2**20:.1f} MiB on the wire; "
      f"ack latency p50 {p['ack_latency']['p50_ms']:.1f} ms, p99 {p['ack_latency']['p99_ms']:.1f} ms; "
      f"output held {p['held_output']['frames']} frames, released {p['held_output']['released_frames']}")
print(f"standby: now {s['role']} and {s['state']}; applied {r['rx_epochs']} epochs, {r['failovers']} failover(s)")
for e in r.get("events", []):
    print(f"  {e['kind']} at epoch {e['epoch']}: {e['reason']}")
EOF
