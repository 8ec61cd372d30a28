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
from etcd import etcd_cluster  # noqa: F401  (fixture)
from netns import HOSTA_IP, HOSTB_IP

pytestmark = pytest.mark.needs_root
TTL_MS = 2000


class Driver:
    """One witness client process in a namespace; its status lines collected by a thread."""

    def __init__(self, topology, build_dir, ns, urls, vm, holder, ttl_ms=TTL_MS):
        self.lines = []
        self.p = topology.popen(ns, [build_dir / "tests" / "test_witness", "--driver", urls, vm, ttl_ms, holder],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


def test_lease_survives_leader_kill(etcd_cluster, topology, build_dir, driver_bin):
    c = etcd_cluster
    d = Driver(topology, build_dir, topology.hostA, c.urls, "vm1", "hostA")
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
          f"longest time since a renewal {gap:.0f} ms; invalid samples {len(invalid)}/{len(s)}")
    assert all(x["token"] == token and not x["lost"] for x in s)
    assert not invalid, f"lease unprovable for a while after the leader kill: {invalid[:3]}"
    assert gap < TTL_MS
    assert d.last()["valid"]
    # the key is still hostA's, same create revision, on the surviving members
    assert c.get("/doppel/vm/vm1/active")[:2] == ("hostA", token)
    c.restart(old)
    c.wait_healthy()
    assert d.close() == [{"released": 0}]
    assert c.get("/doppel/vm/vm1/active") is None


def test_isolated_holder_loses_before_other_acquires(etcd_cluster, topology, build_dir, driver_bin):
    """Cut hostA from the witness: its lease is seen invalid within the TTL, hostB acquires only
    after that (never two valid holders: both clocks are this machine's CLOCK_MONOTONIC) and gets a
    larger token; after healing, hostA learns its lease is gone."""
    c = etcd_cluster
    a = Driver(topology, build_dir, topology.hostA, c.urls, "vm2", "hostA")
    a.wait_valid()
    tok_a = a.last()["token"]
    time.sleep(0.5)
    t_cut = time.monotonic_ns()
    c.block(HOSTA_IP)
    b = Driver(topology, build_dir, topology.hostB, c.urls, "vm2", "hostB")
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
