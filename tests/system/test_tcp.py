"""test_tcp.py — the guest's TCP services driven by unmodified Debian clients (redis-cli,
redis-benchmark, curl, ab) over IPv4 and IPv6 under doppel and QEMU microvm; hostile TCP, RESP and
HTTP input; one TCP connection doing INCRs across a Remus failover (SIGKILL of the primary) and
across a live migration, with no acknowledged INCR lost (20 repetitions each under `make soak`)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import netns
import tcpclient
from test_net import start_vm
from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm

GUEST_IP6 = "fd00::10"
TCP_CMDLINE = f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX} ip6={GUEST_IP6}/64 pi=1000"
ADDRS = (netns.GUEST_IP, GUEST_IP6)
NET_MAC = "52:54:00:12:34:56"


def need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} missing: run `make deps` (scripts/deps.sh installs it)", pytrace=False)
    return tool


def client(topo, argv, timeout=60, stdin=None):
    return netns.run_in(topo.client, argv, timeout=timeout, input=stdin)


def tcpc(topo, *args, timeout=60):
    r = netns.run_in(topo.client, [sys.executable, tcpclient.SCRIPT, *map(str, args)], timeout=timeout)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def rcli(topo, host, *args, stdin=None):
    r = client(topo, [need("redis-cli"), "-h", host, *args], stdin=stdin)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout.strip()


def url(host, path):
    return f"http://[{host}]{path}" if ":" in host else f"http://{host}{path}"


@pytest.fixture(params=["doppel", "qemu"])
def tcpvm(request, doppel_bin, guest_elf, tmp_path, topology):
    vm = start_vm(request.param, doppel_bin, guest_elf, tmp_path, topology, cmdline=TCP_CMDLINE)
    wait_for(lambda: "kv: tcp resp=6379" in vm.output(), 10, what="tcp line")
    yield vm
    vm.close()


def test_standard_clients(tcpvm, topology):
    """redis-cli, redis-benchmark, curl and ab, over IPv4 and IPv6, against one store."""
    t = topology
    assert netns.ping(t.client, GUEST_IP6, count=2), tcpvm.output()
    for i, h in enumerate(ADDRS):
        assert rcli(t, h, "PING") == "PONG"
        assert rcli(t, h, "SET", f"s{i}", "hello") == "OK"
        assert rcli(t, h, "GET", f"s{i}") == "hello"
        assert rcli(t, h, "INCR", f"n{i}") == "1"
        assert rcli(t, h, "INCRBY", f"n{i}", "41") == "42"
        assert rcli(t, h, "DECR", f"n{i}") == "41"
        assert rcli(t, h, "MSET", f"a{i}", "1", f"b{i}", "2") == "OK"
        assert rcli(t, h, "MGET", f"a{i}", f"b{i}", "nope") == "1\n2"  # the nil is a trailing empty line
        assert rcli(t, h, "EXISTS", f"a{i}", f"b{i}", "nope") == "2"
        assert rcli(t, h, "DEL", f"a{i}", "nope") == "1"
        assert rcli(t, h, "ECHO", "hi there") == "hi there"
        assert "ERR" in rcli(t, h, "NOSUCHCMD")
        # pipelined input: every command in one write, answered in order
        cmds = "".join(f"INCR p{i}\n" for _ in range(50)) + f"GET p{i}\n"
        assert rcli(t, h, stdin=cmds).split("\n")[-1] == "50"
        pipe = b"".join(tcpclient.resp_cmd("SET", f"q{i}:{k}", k) for k in range(100)).decode()
        out = rcli(t, h, "--pipe", stdin=pipe)
        assert "errors: 0, replies: 100" in out, out
        r = client(t, [need("redis-benchmark"), "-h", h, "-t", "ping,set,get,incr,mset", "-n", "300",
                       "-c", "10", "-q"], timeout=120)
        assert r.returncode == 0 and r.stdout.count("requests per second") >= 5, (r.stdout, r.stderr)
        # HTTP: curl, keep-alive over several URLs, the same store
        assert "doppel test guest" in client(t, [need("curl"), "-sf", url(h, "/")]).stdout
        assert client(t, ["curl", "-sf", url(h, f"/kv/s{i}")]).stdout == "hello\n"
        assert client(t, ["curl", "-sf", "-X", "POST", url(h, f"/kv/n{i}/incr")]).stdout == "42\n"
        assert rcli(t, h, "GET", f"n{i}") == "42"
        r = client(t, ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
                       url(h, "/bytes/1000000")])
        assert r.stdout == "1000000 200", r.stdout
        r = client(t, ["curl", "-sv", url(h, "/"), url(h, f"/kv/s{i}"), url(h, "/bytes/5000"),
                       url(h, "/missing")])
        assert r.stderr.count("Re-using existing connection") >= 3, r.stderr
        assert r.stderr.count("HTTP/1.1 404") == 1 and r.stderr.count("HTTP/1.1 200") == 3, r.stderr
        codes = [client(t, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *a]).stdout for a in
                 (["-X", "DELETE", url(h, "/kv/x")], [url(h, "/nope")], [url(h, "/bytes/abc")])]
        assert codes == ["405", "404", "400"], codes
        r = client(t, [need("ab"), "-k", "-n", "300", "-c", "4", url(h, "/")], timeout=120)
        assert r.returncode == 0 and "Failed requests:        0" in r.stdout, r.stdout + r.stderr
        assert "Keep-Alive requests:    300" in r.stdout, r.stdout
    assert tcpvm.alive(), tcpvm.output()


def test_many_connections_and_zero_window(tcpvm, topology):
    t = topology
    assert tcpc(t, "many", netns.GUEST_IP, 200)["ok"] == 200
    isn = tcpc(t, "isn", netns.CLIENT_IP, netns.GUEST_IP, 6379)["isn"]
    assert isn[0] != isn[1], isn  # isn=random (the default)
    r = tcpc(t, "slow", GUEST_IP6, 3000000, 2.0)
    assert r == {"status": "HTTP/1.1 200 OK", "body": 3000000, "x": 3000000}, r
    assert tcpvm.alive(), tcpvm.output()


def _fresh_vm(doppel_bin, guest_elf, tmp_path, topology):
    return start_vm("doppel", doppel_bin, guest_elf, tmp_path, topology, cmdline=TCP_CMDLINE + " isn=fixed")


def test_hostile_tcp_resp_http(doppel_bin, guest_elf, tmp_path, topology, rng):
    t = topology
    vm = _fresh_vm(doppel_bin, guest_elf, tmp_path, topology)
    try:
        isn = tcpc(t, "isn", netns.CLIENT_IP6, GUEST_IP6, 80)["isn"]
        assert isn[0] == isn[1], isn  # isn=fixed: a function of the 4-tuple only
        rcli(t, netns.GUEST_IP, "SET", "keep", "safe")
        rcli(t, netns.GUEST_IP, "SET", "cnt", "7")
        for src, dst in ((netns.CLIENT_IP, netns.GUEST_IP), (netns.CLIENT_IP6, GUEST_IP6)):
            tcpc(t, "hostile", src, dst, rng.getrandbits(32))
            r = tcpc(t, "rststorm", dst, src, 300, rng.getrandbits(32))
            assert r == {"before": "+PONG", "after": ["$10", "still-here"]}, r
            r = tcpc(t, "badsum", dst, src)
            assert r["get"] == ["$4", "good"], r
        bad_resp = [b"*abc\r\n", b"*1\r\n$-5\r\n", b"*2\r\n$3\r\nGET\r\n:5\r\n", b"*999\r\n",
                    b"*1\r\n$4\r\nPINGxx", b"\x00\xff" * 3000, b"*3\r\n$3\r\nSET\r\n$4\r\nkeep\r\n$99999\r\n"]
        for p in bad_resp:
            r = tcpc(t, "exchange", netns.GUEST_IP, 6379, p.hex())
            assert r["reply"] == "" or r["reply"].startswith("-ERR"), (p, r)
        r = tcpc(t, "exchange", netns.GUEST_IP, 6379, b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI".hex())
        assert r["reply"] == "+PONG\r\n" and not r["closed"], r
        bad_http = [b"GARBAGE\r\n\r\n", b"GET /kv/keep HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
                    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
                    b"POST /kv/cnt/incr HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", b"GET /bytes/99999999999999 HTTP/1.1\r\n\r\n"]
        for p in bad_http:
            r = tcpc(t, "exchange", netns.GUEST_IP, 80, p.hex())
            assert r["reply"].startswith("HTTP/1.1 400") or r["reply"] == "", (p, r)
        assert vm.alive(), vm.output()
        assert rcli(t, netns.GUEST_IP, "GET", "keep") == "safe"
        assert rcli(t, GUEST_IP6, "GET", "cnt") == "7"
        assert rcli(t, netns.GUEST_IP, "PING") == "PONG"
        assert client(t, ["curl", "-sf", url(GUEST_IP6, "/kv/keep")]).stdout == "safe\n"
        assert netns.ping(t.client, netns.GUEST_IP), vm.output()
    finally:
        vm.close()


# ---- one TCP connection across a Remus failover and a live migration -------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_incr(topo, host, n, key, deadline=60):
    return netns.popen_in(topo.client, [sys.executable, tcpclient.SCRIPT, "incr", host, 6379, n, key, deadline],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_incr(p, timeout=90):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def check_incr(topo, host, key, res, n, what):
    assert res["errors"] == [] and res["replies"] == n, (what, res)
    assert res["first"] == 1 and res["last"] == n, (what, res)
    got = rcli(topo, host, "GET", key)
    assert got == str(n), (what, got, res)


def remus_tcp_iteration(doppel_bin, guest_elf, topo, tmp, i, rng, n=150):
    import test_remus
    port = free_port()
    listen = f"{netns.REPL_B_IP}:{port}"
    net = ["--net", f"tap=tt{i % 100}x,bridge=br0,mac={NET_MAC}"]
    sb = VM(doppel_bin, tmp, name=f"tb{i}", kernel=guest_elf, cmdline=TCP_CMDLINE, mem="64M",
            extra=["--standby", "--listen", listen, *net], netns=topo.hostB)
    pr = VM(doppel_bin, tmp, name=f"ta{i}", kernel=guest_elf, cmdline=TCP_CMDLINE, mem="64M", extra=net,
            netns=topo.hostA)
    try:
        sb.wait_ctl()
        pr.wait_ctl()
        host = ADDRS[i % 2]
        wait_for(lambda: netns.ping(topo.client, host), 20, interval=0.1, what="guest answers ping")
        test_remus.protect(doppel_bin, pr, listen)
        key = f"r{i}"
        load = start_incr(topo, host, n, key)
        kill_at = rng.uniform(0.3, 1.2)
        what = f"seed={rng.seed_value} iteration={i} host={host} kill_at={kill_at:.3f}s"
        print(f"tcp remus iteration {i}: {what}", flush=True)
        time.sleep(kill_at)
        pr.kill(signal.SIGKILL)
        res = finish_incr(load)
        assert test_remus.remus(sb)["role"] == "unprotected", what
        check_incr(topo, host, key, res, n, what)
        print(f"tcp remus iteration {i}: longest stall {res['longest_stall_ms']} ms", flush=True)
    finally:
        for v in (pr, sb):
            v.close()


def migrate_tcp_iteration(doppel_bin, guest_elf, topo, tmp, i, n=150):
    import test_migrate
    port = free_port()
    net = "--net", f"tap=tm{i % 100}x,bridge=br0,mac={NET_MAC}"
    src = VM(doppel_bin, tmp, name=f"ms{i}", kernel=guest_elf, mem="128M", netns=topo.hostA,
             cmdline=TCP_CMDLINE, extra=net)
    dst = VM(doppel_bin, tmp, name=f"md{i}", cmdline=None, mem="128M", netns=topo.hostB,
             extra=[*net, "--incoming", f"{netns.REPL_B_IP}:{port}"])
    try:
        src.wait_ctl()
        test_migrate.wait_ready(dst)
        host = ADDRS[i % 2]
        wait_for(lambda: netns.ping(topo.client, host), 20, interval=0.1, what="guest answers ping")
        key = f"m{i}"
        load = start_incr(topo, host, n, key)
        time.sleep(0.5)
        r, _ = test_migrate.migrate(doppel_bin, src, f"{netns.REPL_B_IP}:{port}", ns=topo.hostA)
        assert r.returncode == 0, r.stderr
        res = finish_incr(load)
        check_incr(topo, host, key, res, n, f"migration iteration {i} host={host}")
        print(f"tcp migrate iteration {i}: longest stall {res['longest_stall_ms']} ms", flush=True)
        assert src.wait(15) == 0
    finally:
        src.close()
        dst.close()


def test_tcp_connection_across_failover(doppel_bin, guest_elf, topology, tmp_path, rng):
    remus_tcp_iteration(doppel_bin, guest_elf, topology, str(tmp_path), 0, rng)


def test_tcp_connection_across_migration(doppel_bin, guest_elf, topology, tmp_path):
    migrate_tcp_iteration(doppel_bin, guest_elf, topology, str(tmp_path), 0)


SOAK = int(os.environ.get("DOPPEL_TCP_SOAK", "20"))


@pytest.mark.skipif(not os.environ.get("DOPPEL_SOAK"),
                    reason="soak test: runs only under `make soak`; skipped by design")
def test_tcp_failover_soak(doppel_bin, guest_elf, topology, tmp_path, rng):
    for i in range(SOAK):
        remus_tcp_iteration(doppel_bin, guest_elf, topology, str(tmp_path), i, rng)


@pytest.mark.skipif(not os.environ.get("DOPPEL_SOAK"),
                    reason="soak test: runs only under `make soak`; skipped by design")
def test_tcp_migration_soak(doppel_bin, guest_elf, topology, tmp_path):
    for i in range(SOAK):
        migrate_tcp_iteration(doppel_bin, guest_elf, topology, str(tmp_path), i)
