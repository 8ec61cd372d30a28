"""test_witness.py — the etcd witness on a 3-member cluster in the test namespaces: leader loss, host isolation.

The witness client is driven by `build/tests/test_witness --driver URLS VM TTL_MS HOLDER` (it acquires,
keeps the lease alive and prints one JSON line every 20 ms: mono_ns, valid, valid_ms, token, lost,
renew_age_ms, rtt_ms; it releases when its stdin closes).
"""

import json
import os
import subprocess
import threading
import time

import pytest

import netns
from etcd import etcd_cluster, etcd_single  # noqa: F401  (fixtures)
from netns import HOSTA_IP, HOSTB_IP

pytestmark = pytest.mark.needs_root
TTL_MS = 2000


class Driver:
    """One witness client process in a namespace; its status lines collected by a thread."""

    def __init__(self, topology, build_dir, ns, urls, vm, holder, ttl_ms=TTL_MS, renew_ms=None, takeover=False):
        self.lines = []
        argv = [build_dir / "tests" / "test_witness", "--driver-takeover" if takeover else "--driver", urls, vm,
                ttl_ms, holder]
        if renew_ms:
            argv.append(renew_ms)
        self.p = topology.popen(ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"junk": line})

    def status(self):
        return [x for x in list(self.lines) if "mono_ns" in x]

    def last(self):
        s = self.status()
        return s[-1] if s else None

    def wait_valid(self, timeout=15.0):
        return netns.wait_for(lambda: (self.last() or {}).get("valid"), timeout=timeout,
                              what=f"driver valid (lines: {self.lines[-3:]})")

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.t.join(timeout=2)
        return [x for x in self.lines if "released" in x]


@pytest.fixture
def driver_bin(build_dir):
    p = build_dir / "tests" / "test_witness"
    if not p.exists():
        pytest.fail(f"{p} missing: run `make build/tests/test_witness` (or make unit)", pytrace=False)
    return p


def test_cluster_reachable_from_hosts(etcd_cluster, topology):
    c = etcd_cluster
    assert c.leader() is not None
    for ns in (topology.hostA, topology.hostB, topology.client):
        r = netns.run_in(ns, ["etcdctl", "--endpoints", c.urls, "--dial-timeout=1s", "endpoint", "health"],
                         env=dict(os.environ, ETCDCTL_API="3"))
        assert r.returncode == 0, f"{ns}: {r.stdout}{r.stderr}"


@pytest.mark.parametrize("renew_ms", [None, TTL_MS // 6], ids=["renew-ttl/3", "renew-ttl/6"])
def test_lease_survives_leader_kill(etcd_cluster, topology, build_dir, driver_bin, renew_ms):
    c = etcd_cluster
    d = Driver(topology, build_dir, topology.hostA, c.urls, "vm1", "hostA", renew_ms=renew_ms)
    d.wait_valid()
    token = d.last()["token"]
    assert c.get("/doppel/vm/vm1/active")[:2] == ("hostA", token)
    time.sleep(1.0)
    t_kill = time.monotonic_ns()
    old = c.kill_leader()
    new = c.wait_leader(exclude=old, timeout=10)
    t_leader = time.monotonic_ns()
    time.sleep(3 * TTL_MS / 1000)
    s = [x for x in d.status() if x["mono_ns"] >= t_kill]
    gap = max(x["renew_age_ms"] for x in s)
    invalid = [x for x in s if not x["valid"]]
    print(f"leader {old} killed; new leader {new} after {(t_leader - t_kill) / 1e6:.0f} ms; "
          f"longest time since a renewal {gap:.0f} ms; lease unprovable for ~{20 * len(invalid)} ms "
          f"({len(invalid)}/{len(s)} samples)")
    assert all(x["token"] == token and not x["lost"] for x in s)
    # etcd needs one election (election timeout 500 ms, randomised up to 2x, plus the vote) before
    # renewals go through again; with renewals every TTL/3 the gap since the last successful one is
    # then at most ~TTL/3 + 2 * election + one request timeout. Within that the lease may be
    # unprovable for a moment (a holder must then hold output), but it is never lost.
    assert gap < (renew_ms or TTL_MS / 3) + 2 * c.election_ms + TTL_MS / 4 + 300, f"renewals stalled {gap:.0f} ms"
    # Unprovable only when it truly cannot be proven: the last successful renewal was sent more than
    # TTL - margin ago (margin = TTL/10 + 50 ms; 50 ms of slack for the 20 ms sampling and the request's
    # own time). Whether renewals every TTL/6 keep it provable throughout depends on how fast the
    # loaded machine elects a leader: reported above, not asserted (a holder that cannot prove its
    # lease holds output: safe, a matter of availability).
    margin = TTL_MS / 10 + 50
    assert all(x["renew_age_ms"] >= TTL_MS - margin - 50 for x in invalid), \
        f"lease reported unprovable while a recent renewal proved it: {invalid[:3]}"
    netns.wait_for(lambda: d.last()["valid"], timeout=2, what="lease valid again")
    # the key is still hostA's, same create revision, on the surviving members
    assert c.get("/doppel/vm/vm1/active")[:2] == ("hostA", token)
    c.restart(old)
    c.wait_healthy()
    assert d.close() == [{"released": 0}]
    assert c.get("/doppel/vm/vm1/active") is None


@pytest.mark.parametrize("how", ["acquire", "takeover"])
def test_isolated_holder_loses_before_other_acquires(etcd_cluster, topology, build_dir, driver_bin, how):
    """Cut hostA from the witness: its lease is seen invalid within the TTL, hostB acquires only
    after that (never two valid holders: both clocks are this machine's CLOCK_MONOTONIC) and gets a
    larger token; after healing, hostA learns its lease is gone. hostB either waits for the key to
    expire (acquire) or takes it over once hostA's renewals stopped for hostA's window (takeover, as
    a doppel standby does)."""
    c = etcd_cluster
    a = Driver(topology, build_dir, topology.hostA, c.urls, "vm2", "hostA")
    a.wait_valid()
    tok_a = a.last()["token"]
    time.sleep(0.5)
    t_cut = time.monotonic_ns()
    c.block(HOSTA_IP)
    b = Driver(topology, build_dir, topology.hostB, c.urls, "vm2", "hostB", takeover=how == "takeover")
    b.wait_valid(timeout=TTL_MS / 1000 * 3 + 5)
    first_b = b.status()[0]
    last_a_valid = max(x["mono_ns"] for x in a.status() if x["valid"])
    a_invalid_after = (last_a_valid - t_cut) / 1e6
    print(f"hostA cut: its lease unprovable {a_invalid_after:.0f} ms after the cut; hostB holds "
          f"{(first_b['mono_ns'] - t_cut) / 1e6:.0f} ms after the cut; tokens {tok_a} -> {first_b['token']}")
    assert last_a_valid < first_b["mono_ns"], "two valid holders at once"
    assert a_invalid_after <= TTL_MS + 50
    assert first_b["token"] > tok_a
    c.heal()
    netns.wait_for(lambda: (a.last() or {}).get("lost"), timeout=10, what="hostA told its lease is gone")
    assert not a.last()["valid"]
    assert c.get("/doppel/vm/vm2/active")[:2] == ("hostB", first_b["token"])
    a.close()
    assert b.close() == [{"released": 0}]


@pytest.mark.parametrize("fault", ["sigstop", "partition"])
def test_stuck_member_is_skipped(etcd_cluster, topology, build_dir, driver_bin, fault):
    """SIGSTOP the member the client talks to first (connections stay open, nothing answers), or
    cut it from the other members (it answers nothing linearizable): the client times out on it
    and moves on; the lease is never lost."""
    c = etcd_cluster
    d = Driver(topology, build_dir, topology.hostA, c.urls, "vm3", "hostA", renew_ms=TTL_MS // 6)
    d.wait_valid()
    token = d.last()["token"]
    time.sleep(0.5)
    t0 = time.monotonic_ns()
    was_leader = c.leader() == 0
    c.pause(0) if fault == "sigstop" else c.partition_member(0)
    time.sleep(3 * TTL_MS / 1000)
    s = [x for x in d.status() if x["mono_ns"] >= t0]
    gap = max(x["renew_age_ms"] for x in s)
    invalid = [x for x in s if not x["valid"]]
    print(f"member 0 (leader: {was_leader}) {fault}: longest time since a renewal {gap:.0f} ms; "
          f"lease unprovable for ~{20 * len(invalid)} ms")
    assert all(x["token"] == token and not x["lost"] for x in s)
    assert gap < TTL_MS // 6 + 2 * c.election_ms + TTL_MS / 4 + 300, f"renewals stalled {gap:.0f} ms"
    assert d.last()["valid"]
    c.resume(0) if fault == "sigstop" else c.heal()
    c.wait_healthy()
    assert d.close() == [{"released": 0}]


def test_single_loopback(etcd_single, build_dir, driver_bin):
    """The loopback fixture: one member on 127.0.0.21; freezing it makes the lease unprovable
    within the TTL of the last renewal."""
    c = etcd_single
    assert c.urls.startswith("http://127.0.0.21:")
    p = netns.popen_in(None, [driver_bin, "--driver", c.urls, "vm4", 1000, "me"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        first = json.loads(p.stdout.readline())
        assert first["valid"] and first["token"] > 0
        assert c.get("/doppel/vm/vm4/active")[0] == "me"
        c.pause(0)
        t_stop = time.monotonic_ns()
        while True:
            x = json.loads(p.stdout.readline())
            if not x["valid"]:
                break
        assert x["renew_age_ms"] <= 1000 and (x["mono_ns"] - t_stop) / 1e6 <= 1000 + 50
        c.resume(0)
    finally:
        netns.stop_proc(p)
