"""test_switchover.py — `doppel switchover` (planned role swap, two-phase with GO) and `doppel reprotect`
(a fenced copy rejoining, the new primary protecting again): memory exact (work=dirty), the KV value
equal to the acknowledged INCRs, and never two live copies (both status sockets polled at >= 50 Hz),
also when the link dies at each step of the switchover."""
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import netns
from etcd import etcd_single  # noqa: F401  (fixture)
from kvserver import finish_load, kv_op, start_load, target_of
from test_tls import certs, raw_tls_client, refusals  # noqa: F401  (certs: fixture)
from vmproc import VM, ctl, wait_for

pytestmark = pytest.mark.needs_kvm

MEM = "128M"
NET_MAC = "52:54:00:12:34:76"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doppel(doppel_bin, *args, timeout=90):
    return subprocess.run([doppel_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def remus(vm):
    return vm.ctl("status")["remus"]


def protect(doppel_bin, vm, peer, *extra):
    r = doppel(doppel_bin, "protect", vm.name, "--peer", peer, "--control", vm.control, *extra)
    assert r.returncode == 0, f"protect failed: {r.stderr}"


def last_pass(vm):
    d = vm.dirty()
    return d[-1]["pass"] if d else -1


def assert_runs_exact(vm, before_pass):
    wait_for(lambda: last_pass(vm) > before_pass, 15, what=f"pass > {before_pass}")
    d = vm.dirty()
    assert d and all(x["bad"] == 0 for x in d), vm.output()[-1500:]


def live(st):
    """A copy whose guest runs and whose output can leave: not a standby, not fenced, not held."""
    return st.get("state") == "running" and st.get("role") != "standby"


class LiveChecker:
    """One thread per control socket polls `status` at >= 50 Hz and logs (time, live, state, role).
    finish() asserts the rate and that no sample of one copy being live falls inside a span where the
    other copy was live at its samples just before and just after (two live copies)."""

    def __init__(self, *paths):
        self.paths, self.stop = paths, threading.Event()
        self.logs = [[] for _ in paths]
        self.t0 = time.monotonic()
        self.ths = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(paths))]
        for t in self.ths:
            t.start()

    def _run(self, i):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                st = ctl(self.paths[i], {"cmd": "status"}, timeout=0.5)
            except Exception:  # noqa: BLE001 — a copy that is gone or busy is not live
                st = {}
            self.logs[i].append((time.monotonic() - self.t0, live(st), st.get("state"), st.get("role"),
                                 st.get("remus", {}).get("witness", {}).get("token")))
            time.sleep(max(0.0, 0.005 - (time.monotonic() - t)))

    def finish(self):
        self.stop.set()
        for t in self.ths:
            t.join(5)
        dur = time.monotonic() - self.t0
        for i, lg in enumerate(self.logs):
            rate = len(lg) / dur
            assert rate >= 50, f"{self.paths[i]} polled at {rate:.0f} Hz only"
        a, b = self.logs
        bad = []
        for x, y in ((a, b), (b, a)):
            for t, lv, *rest in x:
                if not lv:
                    continue
                before = [s for s in y if s[0] <= t]
                after = [s for s in y if s[0] > t]
                if before and after and before[-1][1] and after[0][1]:
                    bad.append((t, rest, before[-1], after[0]))
        assert not bad, f"two live copies: {bad[:3]}"
        return self.logs


@pytest.fixture
def pair(doppel_bin, guest_elf, tmp_path):
    port = free_port()
    sb = VM(doppel_bin, str(tmp_path), name="sb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}"])
    sb.wait_ctl()
    pr = VM(doppel_bin, str(tmp_path), name="pr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200",
            mem=MEM)
    pr.wait_output(r"dirty: pass=", timeout=20)
    yield pr, sb, f"127.0.0.1:{port}"
    for v in (pr, sb):
        if v.proc.poll() is None:
            v.kill(signal.SIGCONT)
        v.close()


def switchover(doppel_bin, vm, listen, *extra):
    r = doppel(doppel_bin, "switchover", vm.name, "--control", vm.control, "--listen", listen, "--json",
               *extra)
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def test_switchover_swaps_roles_memory_exact(doppel_bin, pair):
    """Switch over and back: each time the standby runs exactly the primary's memory (bad=0), the
    old primary becomes its standby in the same process and is re-synced, and events record it."""
    pr, sb, peer = pair
    protect(doppel_bin, pr, peer)
    chk = LiveChecker(pr.control, sb.control)
    back = f"127.0.0.1:{free_port()}"
    before = last_pass(pr)
    r, rep = switchover(doppel_bin, pr, back)
    assert r.returncode == 0, r.stderr
    print("switchover:", rep)
    assert rep["new_primary"] == peer and rep["listen"] == back and rep["resync_ms"] > 0
    assert remus(pr)["role"] == "standby" and remus(pr)["have_state"]
    st = sb.ctl("status")
    assert st["role"] == "primary" and st["remus"]["state"] == "protected" and st["remus"]["peer"] == back
    assert pr.ctl("config")["pid"] == pr.proc.pid  # the same process
    assert_runs_exact(sb, before)
    kinds = [e["kind"] for e in remus(pr)["events"]]
    assert "switchover-commit" in kinds and "switchover" in kinds, kinds
    # and back again: the old standby's process is primary once more
    before = last_pass(sb)
    r, rep = switchover(doppel_bin, sb, f"127.0.0.1:{free_port()}")
    assert r.returncode == 0, r.stderr
    assert remus(pr)["role"] == "primary" and remus(sb)["role"] == "standby"
    wait_for(lambda: last_pass(pr) > before, 15, what="old primary runs again")
    chk.finish()
    d = pr.dirty()
    assert all(x["bad"] == 0 for x in d), pr.output()[-1500:]


# ---- under client load (namespaces) ------------------------------------------------------------------

def kv_pair(doppel_bin, kv_bin, guest_elf, topo, tmp, tag, standby_extra=()):
    """A KV guest on hostA protected to a standby on hostB; returns (pr, sb, back) where back is
    where hostA's copy will listen as a standby after a switchover."""
    sb_listen = f"{netns.REPL_B_IP}:{free_port()}"
    net = ["--net", f"tap=tp{tag}x,bridge=br0,mac={NET_MAC}"]
    cmd = f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}"
    sb = VM(doppel_bin, tmp, name=f"kb{tag}", kernel=guest_elf, cmdline=cmd, mem="64M",
            extra=["--standby", "--listen", sb_listen, *net, *standby_extra], netns=topo.hostB)
    pr = VM(doppel_bin, tmp, name=f"ka{tag}", kernel=guest_elf, cmdline=cmd, mem="64M", extra=net,
            netns=topo.hostA)
    sb.wait_ctl()
    pr.wait_ctl()
    wait_for(lambda: kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), "GET", "ready",
                           timeout_ms=100, retries=1).returncode in (0, 1),
             20, interval=0.1, what="guest KV service")
    protect(doppel_bin, pr, sb_listen)
    return pr, sb, f"{netns.REPL_A_IP}:{free_port()}"


def check_load(kv_bin, topo, load, log, n):
    res = finish_load(load, log, timeout=60)
    acked = [int(e["value"]) for e in res.log if e.get("cmd") == "INCR" and e.get("value") is not None]
    assert res.rc == 0, f"not every INCR acknowledged: {res.summary} {res.stderr}"
    r = kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), "GET", "k")
    assert r.returncode == 0, r
    got = int(r.stdout.strip())
    assert got == max(acked) == n, (got, max(acked, default=0), n)
    return res


def test_switchover_under_kv_load(doppel_bin, kv_bin, guest_elf, topology, tmp_path):
    """INCR load throughout two switchovers (there and back): every INCR acknowledged, the final
    value is exactly the number of INCRs, never two live copies; the outage is printed."""
    pr, sb, back = kv_pair(doppel_bin, kv_bin, guest_elf, topology, str(tmp_path), "s1")
    try:
        n, rate = 500, 100
        log = str(tmp_path / "kv.jsonl")
        chk = LiveChecker(pr.control, sb.control)
        load = start_load(kv_bin, topology.client, netns.GUEST_IP, str(n), str(rate), cmd="INCR", key="k",
                          log=log, timeout_ms="100", deadline="40")
        time.sleep(1.0)
        r, rep = switchover(doppel_bin, pr, back)
        assert r.returncode == 0, r.stderr
        print("switchover there:", rep)
        assert remus(sb)["role"] == "primary" and remus(pr)["role"] == "standby"
        r2, rep2 = switchover(doppel_bin, sb, f"{netns.REPL_B_IP}:{free_port()}")
        assert r2.returncode == 0, r2.stderr
        print("switchover back:", rep2)
        res = check_load(kv_bin, topology, load, log, n)
        chk.finish()
        print(f"kv: longest stall {res.summary.get('longest_stall_ms')} ms; guest parked "
              f"{rep['paused_ms']:.1f} / {rep2['paused_ms']:.1f} ms; re-sync {rep['resync_ms']:.0f} / "
              f"{rep2['resync_ms']:.0f} ms")
    finally:
        for v in (pr, sb):
            v.close()


# ---- the link dies at each step --------------------------------------------------------------------

class SwitchProxy:
    """TCP proxy primary -> standby for every connection. The first is the replication stream
    (`stall` set: stop forwarding both ways); the second is the switchover's GO connection:
    go = "forward" | "refuse" (the proxy stops listening: connect fails) | "drop" (accept, close,
    forward nothing) | "no-reply" (forward GO, drop the standby's answer and close)."""

    def __init__(self, target_port, go="forward"):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.target, self.go = target_port, go
        self.stall = threading.Event()
        self.n = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, src, dst, first, forward):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if first and self.stall.is_set():
                    while True:  # swallow: the link is dead
                        if not src.recv(65536):
                            break
                    break
                if not first and self.go == "no-reply" and not forward:
                    break
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.n += 1
            first = self.n == 1
            if first and self.go == "refuse":
                self.ls.close()
            if not first and self.go == "drop":
                c.close()
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(c, u, first, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, first, False), daemon=True).start()


def cut_pair(doppel_bin, guest_elf, tmp, go, standby_extra=(), protect_extra=()):
    port = free_port()
    sb = VM(doppel_bin, tmp, name="sb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}", *standby_extra])
    sb.wait_ctl()
    pr = VM(doppel_bin, tmp, name="pr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200", mem=MEM)
    pr.wait_output(r"dirty: pass=", timeout=20)
    px = SwitchProxy(port, go)
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{px.port}", *protect_extra)
    except AssertionError:
        print("standby stderr:", sb.stderr()[-2000:], "primary stderr:", pr.stderr()[-2000:])
        pr.close()
        sb.close()
        raise
    return pr, sb, px


def test_switchover_link_dies_before_go_primary_resumes(doppel_bin, guest_elf, tmp_path):
    """The GO connection cannot be made (after the standby confirmed the final epoch): GO never
    left, so the old primary resumes (exact memory) and the standby stays held."""
    pr, sb, px = cut_pair(doppel_bin, guest_elf, str(tmp_path), "refuse")
    try:
        chk = LiveChecker(pr.control, sb.control)
        before = last_pass(pr)
        r, _ = switchover(doppel_bin, pr, f"127.0.0.1:{free_port()}")
        assert r.returncode == 1 and "switchover aborted" in json.loads(r.stdout)["error"], r.stdout
        st = pr.ctl("status")
        assert st["state"] == "running" and st["role"] == "unprotected", st
        assert remus(sb)["state"] == "abandoned" and sb.ctl("status")["role"] == "standby"
        assert_runs_exact(pr, before)
        chk.finish()
    finally:
        pr.close()
        sb.close()


def test_switchover_go_lost_nobody_runs_then_failover(doppel_bin, guest_elf, tmp_path):
    """GO may have been sent but nothing came back (the proxy swallowed it): the old primary stays a
    held standby (never resumes on a guess), the standby stays held; `doppel failover` on the old
    primary then runs its own final state exactly."""
    pr, sb, px = cut_pair(doppel_bin, guest_elf, str(tmp_path), "drop")
    try:
        chk = LiveChecker(pr.control, sb.control)
        before = last_pass(pr)
        r, _ = switchover(doppel_bin, pr, f"127.0.0.1:{free_port()}")
        assert r.returncode == 1 and "stays a held standby" in json.loads(r.stdout)["error"], r.stdout
        assert remus(pr)["role"] == "standby" and remus(sb)["state"] == "abandoned"
        assert not live(pr.ctl("status")) and not live(sb.ctl("status"))
        f = doppel(doppel_bin, "failover", "pr", "--control", pr.control)
        assert f.returncode == 0, f.stderr
        assert_runs_exact(pr, before)
        chk.finish()
    finally:
        pr.close()
        sb.close()


def test_switchover_running_lost_new_primary_wins(doppel_bin, guest_elf, tmp_path):
    """GO arrives but the standby's RUNNING answer is lost: the standby runs, the old primary stays
    a held standby — and is protected by the new primary all the same (it connects directly)."""
    pr, sb, px = cut_pair(doppel_bin, guest_elf, str(tmp_path), "no-reply")
    try:
        chk = LiveChecker(pr.control, sb.control)
        before = last_pass(pr)
        r, _ = switchover(doppel_bin, pr, f"127.0.0.1:{free_port()}", "--no-wait")
        assert r.returncode == 1, r.stderr
        wait_for(lambda: remus(sb)["role"] == "primary" and remus(sb)["state"] == "protected", 30,
                 what="new primary protected")
        assert remus(pr)["role"] == "standby" and remus(pr)["have_state"]
        assert_runs_exact(sb, before)
        chk.finish()
    finally:
        pr.close()
        sb.close()


def test_switchover_link_dies_in_final_epoch(doppel_bin, guest_elf, tmp_path):
    """The replication link dies while the final epoch is in flight (standby with --failover manual,
    as without a witness a cut link is a partition): the old primary resumes, the standby only
    reports (awaiting-failover)."""
    pr, sb, px = cut_pair(doppel_bin, guest_elf, str(tmp_path), "forward", ("--failover", "manual"))
    try:
        chk = LiveChecker(pr.control, sb.control)
        before = last_pass(pr)
        px.stall.set()
        r, _ = switchover(doppel_bin, pr, f"127.0.0.1:{free_port()}")
        assert r.returncode == 1 and "switchover aborted" in json.loads(r.stdout)["error"], r.stdout
        st = pr.ctl("status")
        assert st["state"] == "running" and st["role"] == "unprotected", st
        wait_for(lambda: remus(sb)["state"] == "awaiting-failover", 10, what="standby reports")
        assert_runs_exact(pr, before)
        chk.finish()
    finally:
        pr.close()
        sb.close()


# ---- reprotect ----------------------------------------------------------------------------------------

def test_fenced_copy_rejoins_as_standby(doppel_bin, guest_elf, tmp_path):
    """The replication link is cut: the standby takes over, the old primary (--standby-lost fence)
    fences. `doppel reprotect --listen` turns the fenced copy into a standby instead of exiting; the
    new primary protects to it (`reprotect --peer`); killing the new primary then fails over to the
    rejoined copy with exact memory."""
    pr, sb, px = cut_pair(doppel_bin, guest_elf, str(tmp_path), "forward",
                          protect_extra=("--standby-lost", "fence", "--fence-grace", "20000"))
    try:
        px.stall.set()
        wait_for(lambda: pr.ctl("status")["state"] == "fenced", 10, what="old primary fenced")
        wait_for(lambda: remus(sb)["role"] == "unprotected", 10, what="standby took over")
        back = f"127.0.0.1:{free_port()}"
        r = doppel(doppel_bin, "reprotect", "pr", "--control", pr.control, "--listen", back, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"role": "standby", "listen": back}
        st = pr.ctl("status")
        assert st["role"] == "standby" and st["state"] != "fenced", st
        r = doppel(doppel_bin, "reprotect", "sb", "--control", sb.control, "--peer", back)
        assert r.returncode == 0, r.stderr
        assert remus(sb)["state"] == "protected" and remus(pr)["have_state"]
        time.sleep(20 / 1000 * 10)
        assert pr.proc.poll() is None  # the fence grace no longer ends it
        before = last_pass(sb)
        sb.kill(signal.SIGKILL)
        wait_for(lambda: remus(pr)["role"] == "unprotected", 10, what="rejoined copy takes over")
        assert_runs_exact(pr, before)
        kinds = [e["kind"] for e in remus(pr)["events"]]
        assert "fenced" in kinds and "rejoined" in kinds and "failover" in kinds, kinds
    finally:
        pr.close()
        sb.close()


def test_reprotect_errors(doppel_bin, pair):
    pr, sb, peer = pair
    r = doppel(doppel_bin, "reprotect", "pr", "--control", pr.control, "--listen", "127.0.0.1:1")
    assert r.returncode == 1 and "not fenced" in r.stderr, r.stderr
    r = doppel(doppel_bin, "reprotect", "pr", "--control", pr.control)
    assert r.returncode == 2 and "exactly one of" in r.stderr, r.stderr
    r = doppel(doppel_bin, "switchover", "pr", "--control", pr.control, "--listen", "127.0.0.1:1")
    assert r.returncode == 1 and "not a protected primary" in r.stderr, r.stderr
    r = doppel(doppel_bin, "switchover", "pr", "--control", pr.control)
    assert r.returncode == 2 and "--listen" in r.stderr, r.stderr
    protect(doppel_bin, pr, peer)
    r = doppel(doppel_bin, "switchover", "pr", "--control", pr.control, "--listen", "nonsense")
    assert r.returncode == 1 and pr.ctl("status")["remus"]["state"] == "protected", r.stderr


def test_reprotect_after_sigkill_failover(doppel_bin, guest_elf, pair, tmp_path):
    """SIGKILL the primary; the standby takes over; a fresh standby on the old host; `reprotect
    --peer` protects the new primary to it with the settings it had; a second failover is exact."""
    pr, sb, peer = pair
    protect(doppel_bin, pr, peer, "--interval", "30")
    before = last_pass(pr)
    pr.kill(signal.SIGKILL)
    wait_for(lambda: remus(sb)["role"] == "unprotected", 10, what="takeover")
    port = free_port()
    nb = VM(doppel_bin, str(tmp_path), name="nb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}"])
    try:
        nb.wait_ctl()
        r = doppel(doppel_bin, "reprotect", "sb", "--control", sb.control, "--peer", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr
        rm = remus(sb)
        assert rm["state"] == "protected" and rm["interval_ms"] == 30, rm
        assert_runs_exact(sb, before)
        before = last_pass(sb)
        sb.kill(signal.SIGKILL)
        wait_for(lambda: remus(nb)["role"] == "unprotected", 10, what="second takeover")
        assert_runs_exact(nb, before)
    finally:
        nb.close()


def test_switchover_moves_the_witness_key(doppel_bin, guest_elf, tmp_path, etcd_single):
    """With a witness the old primary releases the key before GO and the new primary takes it: a
    larger token, held by the new primary (etcd agrees), and back again; never two live copies."""
    port = free_port()
    wit = ["--witness", etcd_single.urls, "--witness-name", "swk", "--witness-ttl", "1000"]
    sb = VM(doppel_bin, str(tmp_path), name="sb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}", *wit])
    pr = VM(doppel_bin, str(tmp_path), name="pr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200",
            mem=MEM)
    try:
        sb.wait_ctl()
        pr.wait_output(r"dirty: pass=", timeout=20)
        protect(doppel_bin, pr, f"127.0.0.1:{port}", *wit)
        tok = remus(pr)["witness"]["token"]
        chk = LiveChecker(pr.control, sb.control)
        before = last_pass(pr)
        r, rep = switchover(doppel_bin, pr, f"127.0.0.1:{free_port()}")
        assert r.returncode == 0, r.stderr
        w = remus(sb)["witness"]
        assert w["token"] > tok and w["holder"], w
        assert etcd_single.get("/doppel/vm/swk/active")[1] == w["token"]
        assert remus(pr)["witness"]["holder"] is None
        assert pr.ctl("status")["state"] != "fenced"  # a standby without the key is not fenced
        assert_runs_exact(sb, before)
        r, rep = switchover(doppel_bin, sb, f"127.0.0.1:{free_port()}")
        assert r.returncode == 0, r.stderr
        w2 = remus(pr)["witness"]
        assert w2["token"] > w["token"] and etcd_single.get("/doppel/vm/swk/active")[1] == w2["token"]
        chk.finish()
    finally:
        pr.close()
        sb.close()


def test_fenced_copy_rejoins_by_policy(doppel_bin, guest_elf, tmp_path):
    """protect --rejoin ADDR:PORT: a copy that fences becomes a standby on ADDR:PORT by itself
    (never two live copies meanwhile); the new primary protects to it and a failover to it is exact."""
    back = f"127.0.0.1:{free_port()}"
    pr, sb, px = cut_pair(doppel_bin, guest_elf, str(tmp_path), "forward",
                          protect_extra=("--standby-lost", "fence", "--fence-grace", "300", "--rejoin", back))
    try:
        chk = LiveChecker(pr.control, sb.control)
        px.stall.set()
        wait_for(lambda: remus(pr)["role"] == "standby", 10, what="fenced copy rejoined")
        wait_for(lambda: remus(sb)["role"] == "unprotected", 10, what="standby took over")
        time.sleep(0.5)
        assert pr.proc.poll() is None, "the fence grace (300 ms) ended a copy told to rejoin"
        r = doppel(doppel_bin, "reprotect", "sb", "--control", sb.control, "--peer", back)
        assert r.returncode == 0, r.stderr
        before = last_pass(sb)
        chk.finish()
        sb.kill(signal.SIGKILL)
        wait_for(lambda: remus(pr)["role"] == "unprotected", 10, what="rejoined copy takes over")
        assert_runs_exact(pr, before)
    finally:
        pr.close()
        sb.close()


# ---- over TLS (--tls-dir on both sides) --------------------------------------------------------------

REMUS_MAGIC = 0x534D4552


def remus_msg(kind, value):
    return struct.pack("<IIQ", REMUS_MAGIC, kind, value)  # REMUS_MSG_GO = 10, REMUS_MSG_BACK = 11


@pytest.fixture
def tls_pair(doppel_bin, guest_elf, tmp_path, certs):  # noqa: F811
    port = free_port()
    sb = VM(doppel_bin, str(tmp_path), name="sb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}", "--tls-dir", certs["sb"],
                   "--tls-peer-name", "pr"])
    sb.wait_ctl()
    pr = VM(doppel_bin, str(tmp_path), name="pr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200",
            mem=MEM)
    pr.wait_output(r"dirty: pass=", timeout=20)
    protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs["pr"], "--tls-peer-name", "sb")
    yield pr, sb, port
    for v in (pr, sb):
        if v.proc.poll() is None:
            v.kill(signal.SIGCONT)
        v.close()


def test_switchover_over_tls_swaps_roles_memory_exact(doppel_bin, tls_pair):
    """With --tls-dir on both sides: switch over and back. The GO connection and the protect back are
    TLS with the same certificate checks (pinned names, bound identity): memory exact both ways,
    every status says tls, no connection refused anywhere."""
    pr, sb, port = tls_pair
    chk = LiveChecker(pr.control, sb.control)
    back = f"127.0.0.1:{free_port()}"
    before = last_pass(pr)
    r, rep = switchover(doppel_bin, pr, back)
    assert r.returncode == 0, (r.stderr, "PR:", pr.stderr()[-2500:], "SB:", sb.stderr()[-2500:])
    print("switchover:", rep)
    assert rep["new_primary"] == f"127.0.0.1:{port}" and rep["listen"] == back
    assert f"switchover GO to 127.0.0.1:{port} over TLS 1.3 (peer certificate sb)" in pr.stderr()
    assert f"replication to {back} over TLS 1.3 (peer certificate pr)" in sb.stderr()
    st = sb.ctl("status")
    assert st["role"] == "primary" and st["remus"]["state"] == "protected" and st["remus"]["peer"] == back
    assert st["tls"] is True and st["remus"]["tls"] is True and st["remus"]["tls_peer_name"] == "pr"
    wait_for(lambda: remus(pr)["have_state"], 10, what="the old primary re-synced as standby")
    assert remus(pr)["role"] == "standby" and remus(pr)["tls"] is True
    assert remus(pr)["primary_identity"] == "sb"
    assert_runs_exact(sb, before)
    # and back again
    before = last_pass(sb)
    r, rep = switchover(doppel_bin, sb, f"127.0.0.1:{free_port()}")
    assert r.returncode == 0, (r.stdout, "PR:", pr.stderr()[-2500:], "SB:", sb.stderr()[-2500:])
    assert remus(pr)["role"] == "primary" and remus(sb)["role"] == "standby"
    assert "over TLS 1.3 (peer certificate pr)" in sb.stderr()
    wait_for(lambda: last_pass(pr) > before, 15, what="old primary runs again")
    chk.finish()
    d = pr.dirty()
    assert all(x["bad"] == 0 for x in d), pr.output()[-1500:]
    assert refusals(pr) == [] and refusals(sb) == []
    assert remus(sb)["refused"] == 0  # the standby now; the primary has no such counter


@pytest.mark.parametrize("who", ["plaintext", "other-name"])
def test_switchover_go_from_wrong_peer_refused_over_tls(doppel_bin, tls_pair, certs, who):  # noqa: F811
    """After the primary ended replication (the state a switchover's GO finds), a GO for the held
    epoch in plaintext, or over TLS with a valid certificate of another name, is refused at the
    handshake with one log line: the standby stays held with the same epoch and never runs. The real
    primary can then protect again."""
    pr, sb, port = tls_pair
    time.sleep(0.3)
    r = doppel(doppel_bin, "unprotect", "pr", "--control", pr.control)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: remus(sb)["state"] == "abandoned", 5, what="ABANDON")
    kept = remus(sb)
    go = remus_msg(10, kept["epoch"]) + remus_msg(11, free_port())
    if who == "plaintext":
        with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
            s.sendall(go)
            s.settimeout(8)
            try:
                end = s.recv(100)
            except OSError as e:
                end = str(e)
    else:
        end = raw_tls_client(port, certs["mallory"], payload=go)
    print("client saw:", end)
    wait_for(lambda: remus(sb)["refused"] == 1, 8, what="the standby to refuse")
    lines = refusals(sb)
    assert len(lines) == 1, sb.stderr()
    want = {"plaintext": "TLS handshake failed", "other-name": "peer certificate names mallory, expected pr"}[who]
    assert want in lines[0], lines[0]
    now = sb.ctl("status")
    assert now["role"] == "standby" and now["state"] != "running", now["state"]
    assert (now["remus"]["epoch"], now["remus"]["state"], now["remus"]["have_state"]) == (
        kept["epoch"], "abandoned", True)
    assert "switchover" not in [e["kind"] for e in now["remus"]["events"]]
    protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs["pr"], "--tls-peer-name", "sb")
    assert remus(sb)["state"] == "held"
