"""test_topology.py — the test network and doppel-kv (client, load generator, reference server)."""

import socket
import time

import pytest

from kvserver import KvServer, kv_op, finish_load, run_load, start_load, target_of
from netns import (CLIENT_IP6, HOSTA_IP, HOSTA_IP6, HOSTB_IP, HOSTB_IP6, REPL_A_IP, REPL_A_IP6,
                   REPL_B_IP, REPL_B_IP6, ping, run_in, udp_exchange, wait_for)


def hostA_server(kv_bin, t):
    return KvServer(kv_bin, ns=t.hostA, listen="7777", probe=(t.client, HOSTA_IP), topo=t)


@pytest.mark.needs_root
def test_links(topology):
    t = topology
    for addr in (HOSTA_IP, HOSTB_IP, HOSTA_IP6, HOSTB_IP6):
        assert ping(t.client, addr), f"client -> {addr}"
    assert ping(t.hostB, CLIENT_IP6)
    for ns, addr in ((t.hostA, REPL_B_IP), (t.hostB, REPL_A_IP), (t.hostA, REPL_B_IP6),
                     (t.hostB, REPL_A_IP6)):
        assert ping(ns, addr), f"{ns} -> {addr} over the replication link"
    # the replication link is private to the hosts
    assert not ping(t.client, REPL_A_IP, timeout=0.2)


@pytest.mark.needs_root
def test_load_incr_2000(topology, kv_bin, tmp_path):
    t = topology
    with hostA_server(kv_bin, t):
        log = tmp_path / "load.jsonl"
        r = run_load(kv_bin, t.client, HOSTA_IP, n=2000, rate=2000, key="ctr", log=log,
                     timeout=30)
        assert r.rc == 0, r.stderr
        s = r.summary
        assert (s["acked"], s["unacked"], s["errors"]) == (2000, 0, 0)
        assert s["last_value"] == 2000
        assert s["p50_us"] <= s["p99_us"] <= s["max_us"]
        assert len(r.log) == 2000
        assert sorted(e["value"] for e in r.log) == list(range(1, 2001))
        assert len({e["id"] for e in r.log}) == 2000
        assert all(e["cmd"] == "INCR" and e["key"] == "ctr" and e["tries"] >= 1 and
                   e["ack_ns"] >= e["sent_ns"] for e in r.log)
        # single requests, also over IPv6
        assert kv_op(kv_bin, t.client, target_of(HOSTA_IP6), "GET", "ctr").stdout.strip() == "2000"
        assert kv_op(kv_bin, t.client, HOSTA_IP, "SET", "name", "doppel").stdout.strip() == "doppel"
        r1 = kv_op(kv_bin, t.client, HOSTA_IP, "GET", "missing")
        assert r1.returncode == 1 and "ERR nokey" in r1.stderr
        r1 = kv_op(kv_bin, t.client, HOSTA_IP, "INCR", "name")
        assert r1.returncode == 1 and "ERR notint" in r1.stderr
        # mixed load over many keys
        r = run_load(kv_bin, t.client, HOSTA_IP6, n=300, rate=0, cmd="mix", keys=7, timeout=30)
        assert r.rc == 0 and r.summary["acked"] == 300, (r.summary, r.stderr)


@pytest.mark.needs_root
def test_retry_is_idempotent(topology, kv_bin):
    t = topology
    with hostA_server(kv_bin, t):
        replies = udp_exchange(t.client, HOSTA_IP, 7777,
                               [b"42 INCR r", b"42 INCR r", b"43 INCR r", b"42 INCR r"])
        assert replies == [b"42 OK 1", b"42 OK 1", b"43 OK 2", b"42 OK 1"]
        assert kv_op(kv_bin, t.client, HOSTA_IP, "GET", "r").stdout.strip() == "2"


@pytest.mark.needs_root
def test_server_killed_mid_load(topology, kv_bin, tmp_path):
    t = topology
    srv = hostA_server(kv_bin, t).start()
    log = tmp_path / "load.jsonl"
    p = start_load(kv_bin, t.client, HOSTA_IP, n=2000, rate=1000, key="ctr", timeout_ms=50,
                   deadline=20, log=log)
    t.procs.append(p)
    wait_for(lambda: log.exists() and log.stat().st_size > 0, 5, what="first acks")
    time.sleep(0.5)
    srv.kill()
    time.sleep(0.6)
    srv.start()
    r = finish_load(p, log, timeout=30)
    assert r.rc == 0, r.stderr  # the restarted (empty) server acknowledged the retried requests
    s = r.summary
    assert s["acked"] == 2000 and s["unacked"] == 0
    assert s["longest_stall_ms"] >= 500, s
    assert s["max_us"] >= 500_000
    assert any(e["tries"] > 1 for e in r.log)
    assert len(r.log) == 2000
    # state was lost: the counter restarted, so it ends below 2000
    assert s["last_value"] < 2000


@pytest.mark.needs_root
def test_malformed_datagrams(topology, kv_bin):
    t = topology
    with hostA_server(kv_bin, t) as srv:
        bad = [b"", b"garbage", b"1 FOO k", b"2 SET k", b"3 GET bad/key", b"4 GET " + b"k" * 33,
               b"5 SET k " + b"v" * 65, b"6 INCR k 5", b"7  GET k", b"8 GET k ", b"\xff\x00\x01",
               b"99999999999999999999999 GET k", b"-1 GET k", b"9 SET k a\x01b", b"x" * 1400,
               b"10 get k", b"11 SET k v extra"]
        replies = udp_exchange(t.client, HOSTA_IP, 7777, bad, timeout=0.2)
        for req, rep in zip(bad, replies):
            if rep is not None:
                rid = req.split(b" ", 1)[0]
                assert rep.startswith(rid + b" ERR "), (req, rep)
        assert replies[2] == b"1 ERR badcmd"
        assert replies[0] is None and replies[1] is None  # no ID: dropped
        assert srv.alive()
        assert udp_exchange(t.client, HOSTA_IP, 7777, [b"12 SET k v\n"]) == [b"12 OK v"]
        assert kv_op(kv_bin, t.client, HOSTA_IP, "GET", "k").stdout.strip() == "v"


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_cli_loopback(kv_bin):
    """Argument errors exit 2, no server exits 3; needs no root (loopback only)."""
    port = _free_udp_port()
    target = f"127.0.0.1:{port}"
    for argv in ([], [target], [target, "PUT", "k"], [target, "GET", "bad key"],
                 [target, "SET", "k"], [target, "GET", "k", "v"], [target, "--load", "5"],
                 [target, "--load", "0", "--rate", "1"], ["[::1", "GET", "k"],
                 [target, "--load", "5", "--rate", "1", "--cmd", "DEL"], ["--serve", "99999"]):
        r = run_in(None, [kv_bin] + argv, timeout=10)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert r.stderr.strip(), argv
    r = kv_op(kv_bin, None, target, "GET", "k", timeout_ms=20, retries=1)
    assert r.returncode == 3 and "no reply" in r.stderr
    with KvServer(kv_bin, ns=None, listen=f"127.0.0.1:{port}", probe=(None, "127.0.0.1")):
        assert kv_op(kv_bin, None, target, "INCR", "n").stdout.strip() == "1"
        r = run_load(kv_bin, None, "127.0.0.1", n=500, rate=0, port=port, cmd="SET", keys=3)
        assert r.rc == 0 and r.summary["acked"] == 500
