#!/bin/bash
# topology.sh — build / tear down the doppel test network out of network namespaces.
#
# usage: scripts/topology.sh up|down|status [PREFIX]      (PREFIX defaults to "dp-")
#
#   ${P}client   eth0 10.0.0.2/24 fd00::2/64 ───┐
#   ${P}hostA    br0  10.0.0.11/24 fd00::11/64 ─┤  (uplink port in br0; VM taps join br0)
#   ${P}hostB    br0  10.0.0.12/24 fd00::12/64 ─┤
#   ${P}lan      br0: one shared L2 segment ────┘  (ports vclient, vhostA, vhostB)
#   ${P}hostA repl 192.168.100.1/24 fd01::1/64 <──veth──> ${P}hostB repl 192.168.100.2/24 fd01::2/64
#   Guest VMs use 10.0.0.10/24 on the shared segment.
#
# Interface names live inside the namespaces, so any PREFIX length works. IPv6 DAD is off on every
# link so addresses are usable at once. `up` first tears down leftovers of the same PREFIX; `down`
# removes everything that exists (also a half-built topology), killing processes left in the
# namespaces, and always succeeds.
set -u

cmd=${1:-}
P=${2:-dp-}
NS_ALL="${P}client ${P}hostA ${P}hostB ${P}lan"

building=0
die() { echo "topology: $*" >&2; [ $building = 1 ] && down; exit 1; }

ns_exists() { [ -e "/run/netns/$1" ]; }

# run a command, failing the script with the command line on error
x() { "$@" || die "failed: $*"; }

nsexec() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

no_dad() { # ns [ifname...]: accept_dad=0 for all/default and the named links
	local ns=$1; shift
	for c in all default "$@"; do
		nsexec "$ns" sh -c "echo 0 > /proc/sys/net/ipv6/conf/$c/accept_dad" 2>/dev/null || true
	done
}

down() {
	local ns pids
	for ns in $NS_ALL; do
		ns_exists "$ns" || continue
		pids=$(ip netns pids "$ns" 2>/dev/null)
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	return 0
}

mkns() {
	local ns=$1
	x ip netns add "$ns"
	x ip -n "$ns" link set lo up
	no_dad "$ns"
}

up() {
	[ "$(id -u)" = 0 ] || die "must run as root"
	[[ "$P" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad prefix '$P' (want [A-Za-z0-9_.-]+)"
	down
	building=1
	for ns in $NS_ALL; do mkns "$ns"; done

	# the shared segment
	x ip -n "${P}lan" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
	x ip -n "${P}lan" link set br0 up

	# client <-> lan
	x ip -n "${P}lan" link add vclient type veth peer name eth0 netns "${P}client"
	no_dad "${P}client" eth0
	x ip -n "${P}lan" link set vclient master br0 up
	x ip -n "${P}client" addr add 10.0.0.2/24 dev eth0
	x ip -n "${P}client" addr add fd00::2/64 dev eth0 nodad
	x ip -n "${P}client" link set eth0 up

	# hostX.br0 <-> lan
	local h a
	for h in hostA hostB; do
		[ $h = hostA ] && a=11 || a=12
		x ip -n "${P}$h" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
		x ip -n "${P}lan" link add "v$h" type veth peer name uplink netns "${P}$h"
		no_dad "${P}$h" br0 uplink
		x ip -n "${P}lan" link set "v$h" master br0 up
		x ip -n "${P}$h" link set uplink master br0 up
		x ip -n "${P}$h" addr add "10.0.0.$a/24" dev br0
		x ip -n "${P}$h" addr add "fd00::$a/64" dev br0 nodad
		x ip -n "${P}$h" link set br0 up
	done

	# replication link hostA <-> hostB
	x ip -n "${P}hostA" link add repl type veth peer name repl netns "${P}hostB"
	no_dad "${P}hostA" repl
	no_dad "${P}hostB" repl
	x ip -n "${P}hostA" addr add 192.168.100.1/24 dev repl
	x ip -n "${P}hostA" addr add fd01::1/64 dev repl nodad
	x ip -n "${P}hostB" addr add 192.168.100.2/24 dev repl
	x ip -n "${P}hostB" addr add fd01::2/64 dev repl nodad
	x ip -n "${P}hostA" link set repl up
	x ip -n "${P}hostB" link set repl up

	# the kernel reports carrier changes lazily (linkwatch, up to ~1 s): wait until every link has it
	local i ns ok
	for i in $(seq 100); do
		ok=1
		for ns in $NS_ALL; do
			ip -n "$ns" -o link show 2>/dev/null | grep -q NO-CARRIER && { ok=0; break; }
		done
		[ $ok = 1 ] && return 0
		sleep 0.05
	done
	die "links still without carrier after 5 s"
}

status() {
	local ns
	for ns in $NS_ALL; do
		if ns_exists "$ns"; then
			echo "== $ns"
			ip -n "$ns" -brief addr
		else
			echo "== $ns (absent)"
		fi
	done
}

case "$cmd" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status [PREFIX]" >&2; exit 2 ;;
esac
