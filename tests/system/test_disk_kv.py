"""test_disk_kv.py — `work=kv,disk`: the guest serves KV and runs the disk oracle together. Remus with a
disk under KV INCR load and the oracle's writes, the primary killed at a random moment (seed printed):
the survivor's value is every acknowledged INCR and its disk oracle stays at bad=0."""
import os
import signal
import time

import pytest

import netns
from kvserver import finish_load, kv_op, start_load, target_of
from test_disk import disk_lines, make_image, run_cli
from test_remus import free_port, protect, remus
from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm

NET_MAC = "52:54:00:12:34:58"


def kv_disk_iteration(doppel_bin, kv_bin, guest_elf, topo, tmp, i, rng, n=200, rate=100):
    port = free_port()
    listen = f"{netns.REPL_B_IP}:{port}"
    net = ["--net", f"tap=td{i % 100}x,bridge=br0,mac={NET_MAC}"]
    cmd = f"work=kv,disk dws=4M pi=200 ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}"
    a, b = make_image(os.path.join(tmp, f"a{i}.img")), make_image(os.path.join(tmp, f"b{i}.img"))
    sb = VM(doppel_bin, tmp, name=f"db{i}", kernel=guest_elf, cmdline=cmd, mem="64M",
            extra=["--standby", "--listen", listen, "--disk", f"path={b},id=data", *net], netns=topo.hostB)
    pr = VM(doppel_bin, tmp, name=f"da{i}", kernel=guest_elf, cmdline=cmd, mem="64M",
            extra=["--disk", f"path={a},id=data", *net], netns=topo.hostA)
    try:
        sb.wait_ctl()
        pr.wait_ctl()
        wait_for(lambda: kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), "GET", "ready",
                               timeout_ms=100, retries=1).returncode in (0, 1),
                 20, interval=0.1, what="guest KV service")
        pr.wait_output(r"disk: seq=\d+", 20)  # both works run in the one guest
        # hold: see test_remus.py; 1 s heartbeats: two spinning guests on this 2-core machine (test_colo.py)
        protect(doppel_bin, pr, listen, "--standby-lost", "hold", "--heartbeat-timeout", "1000")
        assert remus(pr)["disk"]["mode"] == "log"
        log = os.path.join(tmp, f"kvd{i}.jsonl")
        load = start_load(kv_bin, topo.client, netns.GUEST_IP, str(n), str(rate), cmd="INCR", key="k",
                          log=log, timeout_ms="100", deadline="30")
        kill_at = rng.uniform(0.3, n / rate - 0.3)
        choice = f"seed={rng.seed_value} iteration={i} kill_at={kill_at:.3f}s"
        print(f"kv,disk iteration {i}: {choice}", flush=True)
        time.sleep(kill_at)
        before = disk_lines(pr.output())[-1]["seq"]
        assert remus(pr)["disk"]["logged_writes"] > 0, choice
        pr.kill(signal.SIGKILL)
        res = finish_load(load, log, timeout=60)
        pr.close()
        assert remus(sb)["role"] == "unprotected", choice
        acked = [int(e["value"]) for e in res.log if e.get("cmd") == "INCR" and e.get("value") is not None]
        assert res.rc == 0, f"not every INCR acknowledged ({choice}): {res.summary} {res.stderr}"
        r = kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), "GET", "k")
        assert r.returncode == 0, (choice, r)
        got = int(r.stdout.strip())
        assert got == max(acked) == n, (choice, got, max(acked, default=0), n)
        # the survivor's oracle: a full ring pass (4M ring: 8 verify steps) past the primary's seq
        wait_for(lambda: len(disk_lines(sb.output())) >= 3 and disk_lines(sb.output())[-1]["seq"] > before + 2048,
                 30, what=f"survivor disk lines past seq {before} ({choice})")
        lines = disk_lines(sb.output())
        assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), (choice, sb.output()[-2000:])
        print(f"kv,disk iteration {i}: value {got}, survivor disk seq {lines[-1]['seq']} bad=0, "
              f"rates {[l['rate'] for l in lines[-3:]]}")
        r = run_cli(doppel_bin, "stop", sb.name, "--control", sb.control)
        assert r.returncode == 0, r.stderr
    finally:
        for v in (pr, sb):
            v.close()


def test_remus_kv_and_disk_kill_primary(doppel_bin, kv_bin, guest_elf, topology, tmp_path, rng):
    for i in range(int(os.environ.get("DOPPEL_KV_DISK_ITERS", "3"))):
        kv_disk_iteration(doppel_bin, kv_bin, guest_elf, topology, str(tmp_path), i, rng)
