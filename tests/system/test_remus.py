"""test_remus.py — Remus end to end with real processes: failover keeps memory exact (work=dirty),
a dead / hung / corrupting / truncating standby path, manual failover drills, and the KV service
under INCR load with the primary killed at random moments (network namespaces; the seed and every
kill time are printed, DOPPEL_SEED=N replays them)."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import netns
from etcd import etcd_single  # noqa: F401  (fixture)
from kvserver import finish_load, kv_op, start_load, target_of
from vmproc import VM, ctl, wait_for

pytestmark = pytest.mark.needs_kvm

MEM = "128M"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doppel(doppel_bin, *args, timeout=30):
    return subprocess.run([doppel_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def status(vm, timeout=5.0):
    return vm.ctl("status")


def remus(vm):
    return status(vm)["remus"]


def protect(doppel_bin, vm, peer, *extra, check=True):
    r = doppel(doppel_bin, "protect", vm.name, "--peer", peer, "--control", vm.control, *extra,
               timeout=60)
    if check:
        assert r.returncode == 0, f"protect failed: {r.stderr}"
    return r


def dirty_vm(doppel_bin, guest_elf, tmp, name, ws="16M"):
    vm = VM(doppel_bin, tmp, name=name, kernel=guest_elf, cmdline=f"work=dirty ws={ws} pi=200", mem=MEM)
    vm.wait_output(r"dirty: pass=", timeout=20)
    return vm


def standby_vm(doppel_bin, guest_elf, tmp, name, listen, netns_name=None, extra=()):
    vm = VM(doppel_bin, tmp, name=name, kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", listen, *extra], netns=netns_name)
    vm.wait_ctl()
    return vm


def last_pass(vm):
    d = vm.dirty()
    return d[-1]["pass"] if d else -1


def assert_took_over(sb, before_pass):
    """The standby runs the guest on: bad=0 and the pass counter goes beyond `before_pass`."""
    wait_for(lambda: remus(sb)["role"] == "unprotected", 5, what="standby takeover")
    wait_for(lambda: last_pass(sb) > before_pass, 10, what=f"standby pass > {before_pass}")
    d = sb.dirty()
    assert d and all(x["bad"] == 0 for x in d), sb.output()[-1500:]


@pytest.fixture
def pair(doppel_bin, guest_elf, tmp_path):
    vms = []
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb", f"127.0.0.1:{port}")
    vms.append(sb)
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "pr")
    vms.append(pr)
    yield pr, sb, f"127.0.0.1:{port}", vms
    for v in vms:
        if v.proc.poll() is None:
            v.kill(signal.SIGCONT)
        v.close()


# ---- delta encoding and the phase breakdown (issue 15) ------------------------------------------------

PHASES = ("pause", "kick", "sync", "capture", "copy", "queue", "encode", "send", "ack_wait", "ack")


def test_delta_cache_status_and_failover(doppel_bin, pair):
    """A cache smaller than the hot set (12M for 16M: direct-mapped, slot = page % 3072, so the hot
    set's first and last 4 MiB evict each other every epoch while its middle 8 MiB hits): status
    reports it, the phases are measured, and a failover still has exact memory."""
    pr, sb, peer, _ = pair
    r = doppel(doppel_bin, "protect", "pr", "--peer", peer, "--delta-cache", "lots", "--control", pr.control)
    assert r.returncode == 2 and "--delta-cache" in r.stderr, r.stderr
    protect(doppel_bin, pr, peer, "--delta-cache", "12M")
    wait_for(lambda: remus(pr)["epochs"] > 20, 10, what="20 epochs")
    st = remus(pr)
    d = st["delta"]
    assert d["enabled"] and d["cache_bytes"] == 12 << 20 and d["cache_pages"] == 3072, d
    assert d["misses"] >= 3072 and d["evictions"] > 0 and d["hits"] > 0, d
    assert d["hits"] == d["unchanged"] + d["dense"] + d["delta_pages"], d
    ph = st["phases"]
    assert set(ph) == set(PHASES), ph
    assert ph["pause"]["n"] > 20 and ph["copy"]["p50_us"] > 0 and ph["ack"]["n"] > 0, ph
    assert ph["pause"]["p50_us"] >= ph["copy"]["p50_us"], ph
    before = last_pass(pr)
    pr.kill()
    pr.wait()
    assert_took_over(sb, before)


def test_delta_cache_off(doppel_bin, pair):
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer, "--delta-cache", "0")
    wait_for(lambda: remus(pr)["epochs"] > 5, 10, what="5 epochs")
    d = remus(pr)["delta"]
    assert not d["enabled"] and d["cache_bytes"] == 0 and d["hits"] == 0 and d["plain_pages"] > 0, d


# ---- (d) kill the primary: the standby continues with exact memory ----------------------------------

def test_failover_dirty_sigkill(doppel_bin, pair):
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer)
    st = remus(pr)
    assert st["role"] == "primary" and st["acked_epoch"] >= 1
    time.sleep(1.5)
    st = remus(pr)
    assert st["epochs"] > 10 and st["pause"]["p99_us"] > 0 and st["dirty_pages"]["avg"] > 100
    assert st["bytes"]["wire"] > 0 and st["ack_latency"]["p50_ms"] > 0
    sst = remus(sb)
    assert sst["role"] == "standby" and sst["connected"] and sst["have_state"]
    before = last_pass(pr)
    pr.kill()
    pr.wait()
    assert_took_over(sb, before)
    ev = remus(sb)["events"]
    assert ev and ev[-1]["kind"] == "failover"


def test_protect_after_snapshot_takes_over_the_dirty_log(doppel_bin, pair, tmp_path):
    # a snapshot leaves a dirty log running for the next incremental; protect must take it over
    # and still copy every page first, or the replica lacks what was written before
    pr, sb, peer, _ = pair
    snap = str(tmp_path / "s1")
    r = doppel(doppel_bin, "snapshot", pr.name, snap, "--control", pr.control)
    assert r.returncode == 0, r.stderr
    protect(doppel_bin, pr, peer)
    time.sleep(1.0)
    # the incremental baseline is gone now: one clear error, VM untouched
    r = doppel(doppel_bin, "snapshot", pr.name, str(tmp_path / "s2"), "--incremental-from", snap,
               "--control", pr.control)
    assert r.returncode != 0 and "full snapshot" in r.stderr, r.stderr
    assert remus(pr)["role"] == "primary"
    # a migration cannot share the dirty log with replication
    dport = free_port()
    dst = VM(doppel_bin, str(tmp_path), name="dst", kernel=None, cmdline=None, mem=MEM,
             extra=["--incoming", f"127.0.0.1:{dport}"])
    try:
        dst.wait_ctl()
        r = doppel(doppel_bin, "migrate", pr.name, "--to", f"127.0.0.1:{dport}", "--control", pr.control)
        assert r.returncode != 0 and "in use" in r.stderr, (r.stdout, r.stderr)
    finally:
        dst.close()
    assert remus(pr)["role"] == "primary"
    before = last_pass(pr)
    pr.kill()
    pr.wait()
    assert_took_over(sb, before)


# ---- (b) kill the standby: the primary continues unprotected; protect again to a new one -------------

def test_standby_killed_then_reprotect(doppel_bin, guest_elf, pair, tmp_path):
    pr, sb, peer, vms = pair
    protect(doppel_bin, pr, peer)
    time.sleep(0.5)
    sb.kill()
    sb.wait()
    wait_for(lambda: remus(pr)["role"] == "unprotected", 3, what="primary to notice")
    p0 = last_pass(pr)
    pr.wait_output(rf"dirty: pass=(?!{p0}\b)\d+", timeout=5)
    assert all(x["bad"] == 0 for x in pr.dirty())
    assert "running unprotected" in pr.stderr()
    # a new standby: full resync, then a failover to it still works
    port2 = free_port()
    sb2 = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb2", f"127.0.0.1:{port2}")
    vms.append(sb2)
    protect(doppel_bin, pr, f"127.0.0.1:{port2}")
    assert remus(pr)["role"] == "primary"
    time.sleep(0.8)
    before = last_pass(pr)
    pr.kill()
    pr.wait()
    assert_took_over(sb2, before)


# ---- (e) SIGSTOP the standby: the primary stays responsive and declares it dead -------------------

def test_standby_stopped_primary_responsive(doppel_bin, pair):
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer, "--heartbeat-timeout", "200")
    time.sleep(0.3)
    sb.kill(signal.SIGSTOP)
    t0 = time.monotonic()
    worst = 0.0
    role = "primary"
    while time.monotonic() - t0 < 2.0:
        t = time.monotonic()
        role = remus(pr)["role"]
        worst = max(worst, time.monotonic() - t)
        if role == "unprotected":
            break
        time.sleep(0.02)
    detect = time.monotonic() - t0
    assert role == "unprotected", "primary never declared the stopped standby dead"
    assert detect < 1.5, detect
    assert worst < 0.5, f"status took {worst:.3f}s while the standby was stopped"
    p0 = last_pass(pr)
    pr.wait_output(rf"dirty: pass=(?!{p0}\b)\d+", timeout=5)
    sb.kill(signal.SIGCONT)


# ---- an orderly stop of the primary ends replication; the standby does not take over -------------

def test_primary_stop_is_not_a_failure(doppel_bin, pair):
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer)
    time.sleep(0.3)
    r = doppel(doppel_bin, "stop", "pr", "--control", pr.control)
    assert r.returncode == 0, r.stderr
    pr.wait()
    wait_for(lambda: not remus(sb)["connected"], 3, what="standby to see the end")
    time.sleep(0.3)
    s = remus(sb)
    assert s["role"] == "standby" and "ended replication" in s.get("last_error", ""), s
    # the replica is still there: a drill takeover from it works
    r = doppel(doppel_bin, "failover", "sb", "--control", sb.control)
    assert r.returncode == 0, r.stderr
    assert_took_over(sb, -1)


# ---- (c) a corrupted or truncated stream ---------------------------------------------------------------

class Proxy:
    """TCP proxy primary -> standby; can flip a byte of the next chunk or cut the connection."""

    def __init__(self, target_port):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.target = target_port
        self.mode = None  # "corrupt" | "cut"
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, src, dst, forward):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if forward and self.mode == "corrupt" and len(b) >= 64:
                    b = bytearray(b)
                    b[len(b) // 2] ^= 0x5A
                    b = bytes(b)
                    self.mode = None
                    self.done.set()
                if forward and self.mode == "cut" and len(b) >= 64:
                    dst.sendall(b[: len(b) // 2])
                    self.done.set()
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
        c, _ = self.ls.accept()
        u = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
        threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()


def test_corrupt_epoch_rejected(doppel_bin, pair):
    pr, sb, peer, _ = pair
    px = Proxy(int(peer.rsplit(":", 1)[1]))
    protect(doppel_bin, pr, f"127.0.0.1:{px.port}")
    time.sleep(0.5)
    good = remus(sb)["epoch"]
    px.mode = "corrupt"
    assert px.done.wait(5)
    wait_for(lambda: remus(sb)["rejected"] >= 1, 5, what="standby to reject the corrupt epoch")
    s = remus(sb)
    # one byte flipped once: exactly one epoch rejected; the replica keeps the last good one (epochs
    # committed between reading `good` and the flip make it >= good)
    assert s["rejected"] == 1, s
    assert s["role"] == "standby" and s["have_state"] and s["epoch"] >= good
    wait_for(lambda: remus(pr)["role"] == "unprotected", 3, what="primary to drop the standby")
    # the primary is not heard any more: a plain failover is allowed and the replica is exact
    before = s["epoch"]
    r = doppel(doppel_bin, "failover", "sb", "--control", sb.control)
    assert r.returncode == 0, r.stderr
    assert remus(sb)["role"] == "unprotected"
    sb.wait_output(r"dirty: pass=", timeout=10)
    time.sleep(0.6)
    d = sb.dirty()
    assert d and all(x["bad"] == 0 for x in d), sb.output()[-1500:]
    assert remus(sb)["events"][-1]["epoch"] == before


def test_truncated_epoch_fails_over(doppel_bin, pair):
    pr, sb, peer, _ = pair
    px = Proxy(int(peer.rsplit(":", 1)[1]))
    protect(doppel_bin, pr, f"127.0.0.1:{px.port}")
    time.sleep(0.5)
    px.mode = "cut"
    assert px.done.wait(5)
    wait_for(lambda: remus(sb)["role"] == "unprotected", 5, what="standby takeover after a cut")
    sb.wait_output(r"dirty: pass=", timeout=10)
    time.sleep(0.6)
    d = sb.dirty()
    assert d and all(x["bad"] == 0 for x in d), sb.output()[-1500:]
    wait_for(lambda: remus(pr)["role"] == "unprotected", 3, what="primary to drop the standby")


# ---- manual failover (drill) -----------------------------------------------------------------------------

def test_failover_refused_while_primary_heard(doppel_bin, pair):
    pr, sb, peer, _ = pair
    r = doppel(doppel_bin, "failover", "sb", "--control", sb.control)
    assert r.returncode == 4 and "no complete checkpoint" in r.stderr, r.stderr  # refused by state
    protect(doppel_bin, pr, peer)
    time.sleep(0.3)
    r = doppel(doppel_bin, "failover", "sb", "--control", sb.control)
    assert r.returncode == 4 and "still heard" in r.stderr, r.stderr  # refused by state
    assert remus(sb)["role"] == "standby"
    before = last_pass(pr)
    assert before >= 0, "the primary printed no dirty pass before the drill"
    r = doppel(doppel_bin, "failover", "sb", "--force", "--control", sb.control)
    assert r.returncode == 0, r.stderr
    # the forced takeover runs the replica on from the last checkpoint: its pass counter goes beyond
    # the primary's at the moment of the drill, with exact memory (bad == 0)
    assert_took_over(sb, before)
    wait_for(lambda: remus(pr)["role"] == "unprotected", 3, what="primary to drop the standby")


def test_protect_errors(doppel_bin, pair):
    pr, sb, peer, _ = pair
    r = doppel(doppel_bin, "protect", "pr", "--control", pr.control)
    assert r.returncode == 2 and "--peer" in r.stderr
    r = doppel(doppel_bin, "protect", "pr", "--peer", "127.0.0.1:1", "--control", pr.control)
    assert r.returncode == 1 and "connect" in r.stderr
    r = doppel(doppel_bin, "protect", "pr", "--peer", peer, "--interval", "0", "--control", pr.control)
    assert r.returncode == 2
    r = doppel(doppel_bin, "protect", "sb", "--peer", peer, "--control", sb.control)
    assert r.returncode == 4 and "standby" in r.stderr  # refused by state
    assert remus(pr)["role"] == "unprotected"


# ---- (a) KV service: INCR load, the primary killed at a random moment ----------------------------------

NET_MAC = "52:54:00:12:34:56"


def kv_failover_iteration(doppel_bin, kv_bin, guest_elf, topo, tmp, i, rng, n=300, rate=150):
    port = free_port()
    listen = f"{netns.REPL_B_IP}:{port}"
    net = ["--net", f"tap=tp{i % 100}x,bridge=br0,mac={NET_MAC}"]
    cmd = f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}"
    sb = VM(doppel_bin, tmp, name=f"kb{i}", kernel=guest_elf, cmdline=cmd, mem="64M",
            extra=["--standby", "--listen", listen, *net], netns=topo.hostB)
    pr = VM(doppel_bin, tmp, name=f"ka{i}", kernel=guest_elf, cmdline=cmd, mem="64M", extra=net,
            netns=topo.hostA)
    try:
        sb.wait_ctl()
        pr.wait_ctl()
        wait_for(lambda: kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), "GET", "ready",
                               timeout_ms=100, retries=1).returncode in (0, 1),
                 20, interval=0.1, what="guest KV service")
        # hold, not the default release: on this loaded 2-core machine the primary can miss the
        # standby's heartbeats for > T while both live (a spurious "standby lost"); with release it
        # would run on unprotected while the standby, seeing the cut, takes over — the documented
        # two-copies case without a witness (docs/failure-model.md), which the final value would
        # then show (seen: 199 vs 200 acknowledged). This test is about failover, not that policy.
        protect(doppel_bin, pr, listen, "--standby-lost", "hold")
        log = os.path.join(tmp, f"kv{i}.jsonl")
        load = start_load(kv_bin, topo.client, netns.GUEST_IP, str(n), str(rate), cmd="INCR", key="k",
                          log=log, timeout_ms="100", deadline="20")
        kill_at = rng.uniform(0.3, n / rate - 0.3)
        # mostly SIGKILL (the primary's kernel resets the connection); every 4th iteration SIGSTOP:
        # a silent primary, detected by the heartbeat timeout like a dead host
        sig = signal.SIGSTOP if i % 4 == 3 else signal.SIGKILL
        choice = f"seed={rng.seed_value} iteration={i} kill_at={kill_at:.3f}s signal={sig.name}"
        print(f"kv iteration {i}: {choice}", flush=True)
        time.sleep(kill_at)
        pr.kill(sig)
        res = finish_load(load, log, timeout=40)
        pr.close()
        assert remus(sb)["role"] == "unprotected", choice
        acked = [int(e["value"]) for e in res.log if e.get("cmd") == "INCR" and e.get("value") is not None]
        assert res.rc == 0, f"not every INCR acknowledged ({choice}): {res.summary} {res.stderr}"
        r = kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), "GET", "k")
        assert r.returncode == 0, (choice, r)
        got = int(r.stdout.strip())
        assert got == max(acked) == n, (choice, got, max(acked, default=0), n)
        print(f"kv iteration {i}: value {got}, longest stall {res.summary.get('longest_stall_ms')} ms")
        return res.summary
    finally:
        for v in (pr, sb):
            v.close()


def test_kv_failover_iterations(doppel_bin, kv_bin, guest_elf, topology, tmp_path, rng):
    iters = int(os.environ.get("DOPPEL_KV_ITERS", "20"))
    for i in range(iters):
        kv_failover_iteration(doppel_bin, kv_bin, guest_elf, topology, str(tmp_path), i, rng, n=200, rate=100)


# Skipped by design outside `make soak`: N long iterations (default 200) would make `make check`
# take an hour; `make soak` sets DOPPEL_SOAK=N and runs only this test.
@pytest.mark.skipif(not os.environ.get("DOPPEL_SOAK"),
                    reason="soak test: runs only under `make soak` (DOPPEL_SOAK=N iterations); skipped by design")
def test_remus_kv_soak(doppel_bin, kv_bin, guest_elf, topology, tmp_path, rng):
    for i in range(int(os.environ["DOPPEL_SOAK"])):
        kv_failover_iteration(doppel_bin, kv_bin, guest_elf, topology, str(tmp_path), i, rng)


# ---- issue 10: explicit endings, validation, liveness on progress, policies -------------------------

class SlowProxy(Proxy):
    """Proxy that, once `slow` is set, forwards primary -> standby at about `rate` bytes/s."""

    def __init__(self, target_port, rate=256 * 1024):
        self.slow = False
        self.rate = rate
        super().__init__(target_port)

    def _pipe(self, src, dst, forward):
        try:
            while True:
                b = src.recv(16384 if forward and self.slow else 65536)
                if not b:
                    break
                if forward and self.slow:
                    time.sleep(len(b) / self.rate)
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_unprotect_mid_epoch_abandons(doppel_bin, guest_elf, pair, tmp_path):
    # defects 1+2: unprotect while an epoch takes seconds to send. Before: the sender got 1 s, then
    # the socket was cut mid-epoch, the standby read a truncated stream and took over while the
    # primary ran on (two copies). Now: the epoch in flight completes, END (ABANDON) follows, the
    # standby confirms and stays held; only then is held output released.
    _, sb, peer, vms = pair
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "pr2", ws="2M")  # epochs <= 512 pages
    vms.append(pr)
    px = SlowProxy(int(peer.rsplit(":", 1)[1]), rate=512 * 1024)
    protect(doppel_bin, pr, f"127.0.0.1:{px.port}", "--heartbeat-timeout", "3000")
    time.sleep(0.5)
    px.slow = True
    time.sleep(0.3)
    t0 = time.monotonic()
    r = doppel(doppel_bin, "unprotect", "pr2", "--control", pr.control, "--timeout", "30000", timeout=40)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    print(f"unprotect took {took:.2f}s over the slow link")
    s = remus(sb)
    assert s["role"] == "standby" and s["state"] == "abandoned", s
    assert "ended replication" in s.get("last_error", ""), s
    p = remus(pr)
    assert p["role"] == "unprotected" and p["state"] == "running", p
    assert p["events"][-1]["kind"] == "unprotected", p["events"]
    time.sleep(0.5)
    assert remus(sb)["role"] == "standby"


def test_standby_rejects_state_it_cannot_run(doppel_bin, guest_elf, topology, tmp_path):
    # defect 3: the standby has a NIC the primary lacks. Before: it acked every epoch and the
    # failover then failed (no copy survived). Now: protect fails with one clear line.
    port = free_port()
    listen = f"{netns.REPL_B_IP}:{port}"
    sb = VM(doppel_bin, str(tmp_path), name="rsb", kernel=guest_elf, cmdline=None, mem="64M",
            extra=["--standby", "--listen", listen, "--net", f"tap=tpr1x,bridge=br0,mac={NET_MAC}"],
            netns=topology.hostB)
    pr = VM(doppel_bin, str(tmp_path), name="rpr", kernel=guest_elf, cmdline="work=dirty ws=4M pi=200",
            mem="64M", netns=topology.hostA)
    try:
        sb.wait_ctl()
        pr.wait_output(r"dirty: pass=", timeout=20)
        r = protect(doppel_bin, pr, listen, check=False)
        assert r.returncode == 1, r.stdout
        line = r.stderr.strip()
        assert "refused" in line and "devices or vCPUs differ" in line and "\n" not in line, line
        s = remus(sb)
        assert s["role"] == "standby" and "rejected primary" in s["last_error"], s
        assert "virtio" in s["last_error"] or "device" in s["last_error"], s
        assert remus(pr)["role"] == "unprotected"
    finally:
        pr.close()
        sb.close()


def wedgeable_primary(doppel_bin, guest_elf, tmp_path, vms):
    """A primary whose serial console is a FIFO drained by a thread; clear the returned event to stall
    the console (the guest's vCPU then blocks in a UART write and the next epoch's pause waits on
    it), set it again to unstall."""
    fifo = str(tmp_path / "wedge.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        import fcntl
        fcntl.fcntl(rfd, 1031, 4096)  # F_SETPIPE_SZ: fills fast once not drained
    except OSError:
        pass
    draining = threading.Event()
    draining.set()
    seen = []

    def drain():  # pauses while the event is clear (set it again to unstall)
        while True:
            if draining.is_set():
                try:
                    b = os.read(rfd, 65536)
                    if b:
                        seen.append(b)
                except BlockingIOError:
                    pass
                except OSError:  # closed by the test
                    return
            time.sleep(0.002)

    threading.Thread(target=drain, daemon=True).start()
    wp = VM(doppel_bin, str(tmp_path), name="wp", kernel=guest_elf, cmdline="work=dirty ws=4M pi=1",
            mem=MEM, serial=fifo)
    vms.append(wp)
    wait_for(lambda: b"dirty: pass=" in b"".join(seen[-50:]), 20, what="wedge guest output")
    return wp, draining, rfd


def test_wedged_primary_detected_by_progress(doppel_bin, guest_elf, pair, tmp_path):
    # defect 5: a primary whose vCPU is stuck in a UART write to a stalled console cannot be paused
    # for an epoch; its sender still heartbeats. Before: the standby waited forever. Now: no
    # CHECKPOINT_END for the progress timeout = primary lost.
    _, sb, peer, vms = pair
    wp, draining, rfd = wedgeable_primary(doppel_bin, guest_elf, tmp_path, vms)
    protect(doppel_bin, wp, peer, "--heartbeat-timeout", "200")
    time.sleep(0.5)
    assert remus(sb)["have_state"]
    pto = remus(sb)["progress_timeout_ms"]
    draining.clear()  # the console stalls: the vCPU blocks, the next epoch's pause never ends
    t0 = time.monotonic()
    wait_for(lambda: remus(sb)["role"] == "unprotected", 8, what="standby takeover of a wedged primary")
    print(f"wedged primary: standby took over after {time.monotonic() - t0:.2f}s "
          f"(progress timeout {pto} ms)")
    ev = remus(sb)["events"][-1]
    assert ev["kind"] == "failover" and "no checkpoint" in ev["reason"], ev
    wp.kill()
    os.close(rfd)


def test_primary_loop_stall_keeps_its_standby(doppel_bin, guest_elf, pair, tmp_path):
    # defect 1: libev runs expired timers before I/O: after a stall of the primary's loop longer
    # than the heartbeat timeout (here: an epoch's pause waiting ~0.6 s on a vCPU blocked in a UART
    # write) its liveness check judged the standby silent while the standby's heartbeats sat unread
    # in the socket, and gave it up (the standby, heartbeated by the sender thread meanwhile, was
    # fine). Now the socket is drained before silence is judged: the primary stays protected.
    _, sb, peer, vms = pair
    wp, draining, rfd = wedgeable_primary(doppel_bin, guest_elf, tmp_path, vms)
    protect(doppel_bin, wp, peer, "--heartbeat-timeout", "200")
    wait_for(lambda: remus(sb)["have_state"], 10, what="standby has state")
    time.sleep(0.3)
    poll = {"t0": None, "worst": 0.0, "stop": False}

    def poller():  # status in a loop: a call outstanding for long = the loop is stalled
        while not poll["stop"]:
            poll["t0"] = t0 = time.monotonic()
            remus(wp)
            poll["t0"] = None
            poll["worst"] = max(poll["worst"], time.monotonic() - t0)
            time.sleep(0.01)

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    for i in range(2):
        draining.clear()  # the console fills: the vCPU blocks, the next epoch's pause waits on it
        wait_for(lambda: poll["t0"] and time.monotonic() - poll["t0"] > 0.5, 20,
                 what=f"the loop to stall (stall {i}, worst so far {poll['worst']:.2f}s)")
        draining.set()  # ~0.5 s: past the heartbeat timeout, short of the standby's progress timeout
        time.sleep(1.0)
        st = remus(wp)
        assert st["role"] == "primary" and st["state"] == "protected", \
            f"the primary gave up its standby after a {poll['worst']:.2f}s loop stall: {st.get('events')}"
    poll["stop"] = True
    th.join(5)
    worst = poll["worst"]
    st = remus(wp)
    print(f"primary loop stalled up to {worst * 1000:.0f} ms (heartbeat timeout 200 ms); events "
          f"{[e['kind'] for e in st['events']]}")
    assert worst > 0.3, f"the loop never stalled past the heartbeat timeout ({worst:.3f}s): no test"
    assert st["role"] == "primary" and st["state"] == "protected", st
    assert not any(e["kind"] in ("standby-lost", "unprotected") for e in st["events"]), st["events"]
    s = remus(sb)
    assert s["role"] == "standby" and s["connected"], s
    wp.kill()
    os.close(rfd)


def test_wedged_primary_with_witness_loses_the_key(doppel_bin, guest_elf, tmp_path, etcd_single):
    # The same wedge with a witness. Before: the wedged primary's witness thread kept renewing its
    # lease, so the standby (which detected the wedge by progress) could never take the key and
    # waited forever. Now renewals are tied to the primary's loop: its window runs out and the
    # standby takes the key over (a larger token) and runs.
    ttl = 600
    vms = []
    port = free_port()
    wit = ["--witness", etcd_single.urls, "--witness-name", "wedge", "--witness-ttl", str(ttl)]
    try:
        sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb", f"127.0.0.1:{port}", extra=wit)
        vms.append(sb)
        wp, draining, rfd = wedgeable_primary(doppel_bin, guest_elf, tmp_path, vms)
        protect(doppel_bin, wp, f"127.0.0.1:{port}", "--heartbeat-timeout", "200", *wit)
        wait_for(lambda: remus(sb)["have_state"], 10, what="standby has state")
        tok = remus(wp)["witness"]["token"]
        assert tok > 0
        pto = remus(sb)["progress_timeout_ms"]
        draining.clear()
        t0 = time.monotonic()
        wait_for(lambda: remus(sb)["role"] == "unprotected", 10,
                 what=f"standby takeover of a wedged primary with a witness ({remus(sb).get('witness')})")
        took = time.monotonic() - t0
        st = remus(sb)
        print(f"wedged primary with a witness: standby took over after {took:.2f}s (progress timeout "
              f"{pto} ms, witness window {ttl} ms); tokens {tok} -> {st['witness']['token']}")
        assert st["witness"]["token"] > tok
        assert etcd_single.get("/doppel/vm/wedge/active")[1] == st["witness"]["token"]
        wp.kill()
        os.close(rfd)
    finally:
        for v in vms:
            if v.proc.poll() is None:
                v.kill(signal.SIGCONT)
            v.close()


def test_failover_force_must_be_boolean(doppel_bin, pair):
    # defect 6: {"force":"false"} forced a drill (any non-empty string was true)
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer)
    time.sleep(0.3)
    rep = sb.ctl("failover", force="false")
    assert rep.get("ok") is False and "boolean" in rep.get("error", ""), rep
    rep = sb.ctl("failover", force=False)
    assert rep.get("ok") is False and "still heard" in rep.get("error", ""), rep
    assert remus(sb)["role"] == "standby"


def sched_policies(pid):
    """{tid: policy} of every thread of pid (field 41 of /proc/PID/task/TID/stat; 1 = SCHED_FIFO)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        out[int(tid)] = int(st.rsplit(")", 1)[1].split()[38])  # field 41: fields from 3 on
    return out


def test_fifo_only_around_epochs(doppel_bin, pair, tmp_path):
    # defect 6: SCHED_FIFO stayed set on the loop thread, so every thread it created later (snapshot,
    # migration, zstd workers) ran FIFO too and could starve vCPUs. Now FIFO is held only around
    # each epoch: sampled at random, threads are almost never FIFO, and a snapshot worker never.
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer)
    time.sleep(0.3)
    pid = pr.proc.pid
    fifo_samples = 0
    n = 60
    for _ in range(n):
        if any(p == 1 for p in sched_policies(pid).values()):
            fifo_samples += 1
        time.sleep(0.007)
    print(f"FIFO seen in {fifo_samples}/{n} samples")
    assert fifo_samples < n / 2, fifo_samples
    assert remus(pr)["role"] == "primary"


class SchedSampler:
    """Samples the scheduling policy of every thread of pid at ~1 kHz in the background: which
    threads it saw and which of them it ever saw SCHED_FIFO."""

    def __init__(self, pid):
        self.pid, self.seen, self.fifo, self.samples = pid, set(), {}, 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                pol = sched_policies(self.pid)
            except OSError:
                break
            self.samples += 1
            self.seen |= set(pol)
            for tid, p in pol.items():
                if p != 0:
                    self.fifo[tid] = p
            time.sleep(0.001)

    def finish(self):
        self.stop.set()
        self.t.join(5)
        return self


def test_threads_created_while_protected_run_sched_other(doppel_bin, pair, tmp_path):
    # defect 6: the loop thread went SCHED_FIFO at protect and stayed so; every thread it created
    # afterwards inherited it: the sender of a later protect (and its TLS relays), the snapshot
    # worker and its zstd workers. Only the loop thread (the main thread, tid = pid) may ever be
    # FIFO, and only around an epoch. Workers: a second protect's sender, then a full snapshot
    # (sampled at ~1 kHz while it runs) — each sampled thread other than the loop must be SCHED_OTHER.
    pr, sb, peer, _ = pair
    pid = pr.proc.pid
    # (a long heartbeat timeout: before the fix the FIFO loop starved the sender on this 2-core
    # machine and a 200 ms timeout already failed the first protect)
    protect(doppel_bin, pr, peer, "--heartbeat-timeout", "2000")
    wait_for(lambda: remus(pr)["epochs"] > 5, 10, what="5 epochs")
    r = doppel(doppel_bin, "unprotect", pr.name, "--control", pr.control)
    assert r.returncode == 0, r.stderr
    before = set(sched_policies(pid))
    smp = SchedSampler(pid)
    protect(doppel_bin, pr, peer, "--heartbeat-timeout", "2000")  # a new sender thread, created by the loop thread
    wait_for(lambda: remus(pr)["epochs"] > 5, 10, what="5 epochs after the second protect")
    t0 = time.monotonic()
    r = doppel(doppel_bin, "snapshot", pr.name, str(tmp_path / "snap"), "--control", pr.control)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    smp.finish()
    assert remus(pr)["role"] == "primary"
    new = smp.seen - before
    print(f"{smp.samples} samples; threads before {sorted(before)}, new {sorted(new)}; snapshot took "
          f"{took:.2f}s; ever FIFO: {smp.fifo}")
    assert smp.samples > 50, smp.samples
    assert len(new) >= 2, f"the sender and the snapshot worker were never sampled: {sorted(new)}"
    leaked = {tid: p for tid, p in smp.fifo.items() if tid != pid}
    assert not leaked, f"threads other than the loop thread ran real-time: {leaked}"


def test_standby_lost_hold_keeps_output(doppel_bin, pair):
    # item 1: --standby-lost hold: a lost standby does not release held output; unprotect does
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer, "--standby-lost", "hold")
    assert remus(pr)["split_brain_possible"] is False
    time.sleep(0.3)
    sb.kill()
    sb.wait()
    wait_for(lambda: remus(pr)["state"] == "holding", 3, what="primary to hold")
    assert remus(pr)["role"] == "unprotected"
    r = doppel(doppel_bin, "unprotect", "pr", "--control", pr.control)
    assert r.returncode == 0, r.stderr
    assert remus(pr)["state"] == "running"


def test_standby_lost_fence_pauses_and_exits(doppel_bin, pair):
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer, "--standby-lost", "fence", "--fence-grace", "800")
    time.sleep(0.3)
    sb.kill()
    sb.wait()
    wait_for(lambda: remus(pr)["state"] == "fenced", 3, what="primary to fence")
    assert status(pr)["state"] == "fenced"
    assert pr.proc.wait(timeout=5) == 5  # doppel run: 5 = the VM fenced itself


def test_manual_failover_policy_waits(doppel_bin, guest_elf, tmp_path):
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "msb", f"127.0.0.1:{port}",
                    extra=["--failover", "manual"])
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "mpr")
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}")
        assert remus(sb)["failover"] == "manual" and remus(sb)["split_brain_possible"] is False
        time.sleep(0.4)
        before = last_pass(pr)
        pr.kill()
        pr.wait()
        wait_for(lambda: remus(sb)["state"] == "awaiting-failover", 3, what="manual policy report")
        time.sleep(0.5)
        assert remus(sb)["role"] == "standby"
        r = doppel(doppel_bin, "failover", "msb", "--control", sb.control)
        assert r.returncode == 0, r.stderr
        assert_took_over(sb, before)
    finally:
        pr.close()
        sb.close()


def test_fence_cmd_gates_takeover(doppel_bin, guest_elf, tmp_path):
    port = free_port()
    flag = tmp_path / "fenced"
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "fsb", f"127.0.0.1:{port}",
                    extra=["--fence-cmd", f"test -e {flag}"])
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "fpr")
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}")
        time.sleep(0.4)
        before = last_pass(pr)
        pr.kill()
        pr.wait()
        wait_for(lambda: any(e["kind"] == "no-takeover" for e in remus(sb)["events"]), 3,
                 what="refused takeover")
        assert remus(sb)["role"] == "standby"
        flag.write_text("ok")
        r = doppel(doppel_bin, "failover", "fsb", "--control", sb.control)
        assert r.returncode == 0, r.stderr
        assert_took_over(sb, before)
    finally:
        pr.close()
        sb.close()


def test_fence_cmd_runs_real_programs_outside_the_sandbox(doppel_bin, guest_elf, tmp_path):
    # The VM process runs under its seccomp allowlist (no execve); --fence-cmd is run by a helper
    # forked before the filter, so a real STONITH agent (python, cat, a pipeline) works and sees none
    # of the VM's descriptors. Before the helper, the shell inherited the filter: `cat` died of SIGSYS.
    port = free_port()
    out = tmp_path / "fence.out"
    agent = tmp_path / "agent.py"
    agent.write_text("import os, sys\n"
                     "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
                     "open(sys.argv[1], 'w').write(' '.join(map(str, fds)) + '\\n')\n")
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "rsb", f"127.0.0.1:{port}",
                    extra=["--fence-cmd", f"echo fenced | cat > {out}.cat && python3 {agent} {out}"])
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "rpr")
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}", "--heartbeat-timeout", "1000")
        wait_for(lambda: remus(sb)["have_state"], 10, what="standby has state")
        seccomp = [ln for ln in open(f"/proc/{sb.proc.pid}/status") if ln.startswith("Seccomp:")]
        assert seccomp == ["Seccomp:\t2\n"], seccomp  # the standby runs filtered
        before = last_pass(pr)
        pr.kill()
        pr.wait()
        assert_took_over(sb, before)
        assert (tmp_path / "fence.out.cat").read_text() == "fenced\n"
        fds = [int(x) for x in out.read_text().split()]
        # stdin/out/err and the one python opened to list them: nothing of the VM's (KVM, taps, sockets)
        assert all(fd <= 3 for fd in fds), fds
    finally:
        pr.close()
        sb.close()


FENCE_SCRIPT = """echo $$ > {pidfile}
while [ ! -e {go} ]; do sleep 0.02; done
read code < {go}
exit $code
"""


def decide(go, code):
    """Let the waiting fence command exit with code (the file appears whole: rename)."""
    tmp = go.with_suffix(".tmp")
    tmp.write_text(f"{code}\n")
    os.rename(tmp, go)


@pytest.mark.parametrize("outcome", ["exit0", "exit1", "killed"])
def test_fence_cmd_runs_off_the_loop(doppel_bin, guest_elf, tmp_path, outcome):
    # --fence-cmd ran on the standby's loop: a fence command taking 10 s froze status, control and
    # everything else for 10 s. Now it runs as a child watched from a job thread: status answers
    # (remus.takeover = "fencing") while it runs; exit 0 -> takeover; exit 1 or killed -> no
    # takeover, the standby stays held with its state and says why.
    port = free_port()
    pidfile, go = tmp_path / "fence.pid", tmp_path / "fence.go"
    script = tmp_path / "fence.sh"
    script.write_text(FENCE_SCRIPT.format(pidfile=pidfile, go=go))
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "osb", f"127.0.0.1:{port}",
                    extra=["--fence-cmd", f"sh {script}"])
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "opr")
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}", "--heartbeat-timeout", "1000")  # a loaded machine
        wait_for(lambda: remus(sb)["have_state"], 10, what="standby has state")
        before = last_pass(pr)
        pr.kill()
        pr.wait()
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="fence command started")
        # while it runs: every status answers within 1 s and says what the standby is doing
        for _ in range(10):
            t0 = time.monotonic()
            try:
                st = ctl(sb.control, {"cmd": "status"}, timeout=1.0)["remus"]
            except OSError as e:
                raise AssertionError(f"status did not answer within 1 s while the fence command ran: {e!r}")
            took = time.monotonic() - t0
            assert took < 1.0, took
            assert st["role"] == "standby" and st.get("takeover") == "fencing" and st["have_state"], st
            time.sleep(0.1)
        rep = sb.ctl("failover")  # one takeover at a time
        assert rep.get("ok") is False and "in progress" in rep.get("error", ""), rep
        if outcome == "exit0":
            decide(go, 0)
            assert_took_over(sb, before)
            st = remus(sb)
            assert "takeover" not in st and st["events"][-1]["kind"] == "failover", st
            return
        if outcome == "exit1":
            decide(go, 1)
        else:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        wait_for(lambda: remus(sb).get("takeover") == "refused", 5, what="refused takeover")
        st = remus(sb)
        print(f"{outcome}: {st['last_error']}")
        assert st["role"] == "standby" and st["have_state"] and "no takeover" in st["last_error"], st
        assert "status 1" in st["last_error"] if outcome == "exit1" else \
            ("signal 9" in st["last_error"] or "status 137" in st["last_error"]), st["last_error"]
        kinds = [e["kind"] for e in st["events"]]
        assert kinds[-2:] == ["fence-failed", "no-takeover"], kinds
        time.sleep(0.3)
        assert remus(sb)["role"] == "standby" and status(sb)["state"] != "running"
        # the operator can try again: the fence command runs again (and decides again)
        decide(go, 0)
        r = doppel(doppel_bin, "failover", "osb", "--control", sb.control)
        assert r.returncode == 0, r.stderr
        assert_took_over(sb, before)
    finally:
        pr.close()
        sb.close()


def test_witness_takeover_runs_off_the_loop(doppel_bin, guest_elf, tmp_path, etcd_single):
    # The standby's witness takeover (witness_takeover every TTL/20) ran on its loop: with etcd not
    # answering, each attempt blocked the loop for the request timeout (here 3 s) — status, control,
    # everything froze. Now a job thread acquires: status answers (remus.takeover =
    # "acquiring-witness", witness.waiting says why) and the takeover follows once etcd answers.
    ttl = 3000
    wit = ["--witness", etcd_single.urls, "--witness-name", "slowwit", "--witness-ttl", str(ttl)]
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "wsb", f"127.0.0.1:{port}", extra=wit)
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "wpr")
    paused = False
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}", "--heartbeat-timeout", "1000", *wit)
        wait_for(lambda: remus(sb)["have_state"], 10, what="standby has state")
        tok = remus(pr)["witness"]["token"]
        before = last_pass(pr)
        pr.kill()
        pr.wait()
        wait_for(lambda: (remus(sb).get("witness") or {}).get("waiting"), 5, what="standby waiting for the key")
        etcd_single.pause(0)  # connections are accepted, nothing answers: every request runs into its timeout
        paused = True
        t_end = time.monotonic() + 2.5
        seen = []
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            try:
                seen.append(ctl(sb.control, {"cmd": "status"}, timeout=1.0)["remus"])
            except OSError as e:
                raise AssertionError(f"status did not answer within 1 s while acquiring the key "
                                     f"(answered {len(seen)} times before): {e!r}")
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.1)
        print(f"{len(seen)} status answers while etcd was frozen; waiting: {seen[-1]['witness'].get('waiting')}")
        for st in seen:
            assert st["role"] == "standby" and st.get("takeover") == "acquiring-witness", st
        etcd_single.resume(0)
        paused = False
        wait_for(lambda: remus(sb)["role"] == "unprotected", 3 * ttl / 1000 + 5, what="takeover once etcd answers")
        st = remus(sb)
        assert st["witness"]["token"] > tok and "takeover" not in st, st
        assert etcd_single.get("/doppel/vm/slowwit/active")[1] == st["witness"]["token"]
        assert_took_over(sb, before)
    finally:
        if paused:
            etcd_single.resume(0)
        pr.close()
        sb.close()


def test_forced_failover_refused_while_primary_holds_the_key(doppel_bin, guest_elf, tmp_path, etcd_single):
    # doppel failover --force with a witness: the job thread tries the key once and is refused
    # while the primary holds it; the standby stays connected and replicating.
    wit = ["--witness", etcd_single.urls, "--witness-name", "forced", "--witness-ttl", "1000"]
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "fsb", f"127.0.0.1:{port}", extra=wit)
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "fpr")
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}", "--heartbeat-timeout", "1000", *wit)
        wait_for(lambda: remus(sb)["have_state"], 10, what="standby has state")
        r = doppel(doppel_bin, "failover", "fsb", "--force", "--control", sb.control)
        assert r.returncode == 4 and "failover refused: witness" in r.stderr, (r.returncode, r.stderr)
        st = remus(sb)
        assert st["role"] == "standby" and st["connected"] and st.get("takeover") == "refused", st
        e0 = st["epoch"]
        wait_for(lambda: remus(sb)["epoch"] > e0, 5, what="replication goes on")
        p = remus(pr)
        assert p["role"] == "primary" and p["state"] == "protected", p
    finally:
        pr.close()
        sb.close()


def test_standby_lost_hold_timeout_releases(doppel_bin, pair):
    pr, sb, peer, _ = pair
    protect(doppel_bin, pr, peer, "--standby-lost", "hold", "--hold-timeout", "600")
    time.sleep(0.3)
    sb.kill()
    sb.wait()
    wait_for(lambda: remus(pr)["state"] == "holding", 3, what="primary to hold")
    wait_for(lambda: remus(pr)["state"] == "running", 3, what="hold timeout release")
    assert "hold timeout" in remus(pr)["events"][-1]["reason"]
