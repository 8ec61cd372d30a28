"""test_migrate.py — live migration (`doppel run --incoming`, `doppel migrate`): work=dirty over loopback
and between namespaces, bad=0 and the pass counter continuing on the destination, the failure cases
(destination killed, link cut, mismatched destination, silent destination) leaving the source running,
and the two-phase switchover broken at each step (never two copies; the survivor has every
acknowledged INCR)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import netns
from vmproc import VM, ctl, wait_for

pytestmark = pytest.mark.needs_kvm


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def migrate(doppel, src, to, *extra, ns=None, timeout=60):
    argv = [doppel, "migrate", "--control", src.control, "--to", to, "--json", *extra]
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def start_pair(doppel, guest_elf, tmp, ws="64M", vcpus=1, mem="512M", dst_mem=None, port=None, ns=(None, None),
               addr="127.0.0.1", extra=((), ()), guest_args=""):
    port = port or free_port()
    src = VM(doppel, tmp, name="src", kernel=guest_elf, cmdline=f"work=dirty ws={ws} pi=100 {guest_args}".strip(), mem=mem,
             vcpus=vcpus, netns=ns[0], extra=extra[0])
    dst = VM(doppel, tmp, name="dst", kernel=None, cmdline=None, mem=dst_mem or mem, vcpus=vcpus, netns=ns[1],
             extra=["--incoming", f"{addr}:{port}", *extra[1]])
    try:
        src.wait_output(r"dirty: pass=\d+", timeout=20)
        wait_ready(dst)
    except BaseException:
        # a set-up that fails must not leave two VMs spinning the cores for the tests after it
        src.close()
        dst.close()
        raise
    return src, dst, port


def wait_ready(dst):
    """The destination answers status once its RAM is prefaulted and it listens."""
    dst.wait_ctl()

    def ready():
        try:
            return dst.ctl("status")["migration"]["state"] == "waiting"
        except (OSError, ValueError, KeyError):
            return False
    wait_for(ready, 20, what="destination ready")


def assert_progressing(vm, timeout=10):
    """The guest keeps running: a new dirty: line with a higher pass, and bad=0 throughout."""
    before = vm.dirty()[-1]["pass"] if vm.dirty() else -1
    wait_for(lambda: vm.dirty() and vm.dirty()[-1]["pass"] > before, timeout, what="guest progress")
    assert all(d["bad"] == 0 for d in vm.dirty()), vm.dirty()


def check_success(r, src, dst):
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for k in ("total_ms", "downtime_ms", "bytes_wire", "bytes_raw", "rounds"):
        assert k in res, res
    assert src.wait(15) == 0, src.stderr()
    last_src = src.dirty()[-1]["pass"]
    wait_for(lambda: len(dst.dirty()) >= 3, 15, what="destination dirty lines")
    d = dst.dirty()
    assert all(x["bad"] == 0 for x in src.dirty() + d), (src.dirty()[-3:], d)
    assert d[0]["pass"] >= last_src, (last_src, d[0])  # the counter continues, no reboot
    assert "booted" not in dst.output()
    return res


@pytest.mark.parametrize("ws,vcpus", [("64M", 1), ("16M", 2), ("200M", 1)])
def test_migrate_loopback(doppel_bin, guest_elf, tmp_path, ws, vcpus):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws=ws, vcpus=vcpus)
    try:
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}")
        res = check_success(r, src, dst)
        assert res["downtime_ms"] < 1000
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_migrate_compress_modes(doppel_bin, guest_elf, tmp_path, compress):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="16M")
    try:
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", "--compress", compress, "--downtime-ms", "20")
        res = check_success(r, src, dst)
        if compress == "zstd":
            assert res["bytes_wire"] < res["bytes_raw"] / 4
    finally:
        src.close()
        dst.close()


@pytest.mark.needs_root
def test_migrate_between_namespaces(doppel_bin, guest_elf, tmp_path, topology):
    t = topology
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="64M", vcpus=2, ns=(t.hostA, t.hostB),
                                addr=netns.REPL_B_IP)
    try:
        r, _ = migrate(doppel_bin, src, f"{netns.REPL_B_IP}:{port}", ns=t.hostA)
        check_success(r, src, dst)
    finally:
        src.close()
        dst.close()


def slow_args():
    # Uncompressed and capped: the migration takes seconds, leaving time to break it.
    return ("--compress", "none", "--max-bandwidth", "40M")


def json_error(r, code=1):
    """migrate() runs with --json: a failure is one JSON object on stdout, nothing on stderr."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr == "" and r.stdout.count("\n") == 1, (r.stdout, r.stderr)
    e = json.loads(r.stdout)
    assert e["ok"] is False and e["exit"] == code and "\n" not in e["error"], e
    return e["error"]


def assert_source_untouched(r, src, elapsed, limit, *words):
    err = json_error(r)
    assert any(w in err for w in words), err
    assert elapsed < limit, elapsed
    assert src.proc.poll() is None, src.stderr()
    assert src.ctl("status")["state"] == "running"
    assert src.ctl("status")["migration"]["state"] == "failed"
    assert_progressing(src)


def test_destination_killed(doppel_bin, guest_elf, tmp_path):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path))
    try:
        threading.Timer(0.5, lambda: dst.kill(signal.SIGKILL)).start()
        r, el = migrate(doppel_bin, src, f"127.0.0.1:{port}", *slow_args())
        assert_source_untouched(r, src, el, 20, "failed", "closed", "reset", "Broken pipe")
    finally:
        src.close()
        dst.close()


class CuttingProxy:
    """TCP proxy 127.0.0.1:listen -> 127.0.0.1:target that closes both sides after `cut_after` bytes."""

    def __init__(self, target, cut_after):
        self.target, self.cut_after = target, cut_after
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        c, _ = self.ls.accept()
        u = socket.create_connection(("127.0.0.1", self.target))
        done = threading.Event()

        def back():
            try:
                while not done.is_set():
                    b = u.recv(65536)
                    if not b:
                        break
                    c.sendall(b)
            except OSError:
                pass
        threading.Thread(target=back, daemon=True).start()
        n = 0
        try:
            while n < self.cut_after:
                b = c.recv(65536)
                if not b:
                    break
                u.sendall(b)
                n += len(b)
        except OSError:
            pass
        done.set()
        for s in (c, u):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_link_cut(doppel_bin, guest_elf, tmp_path):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path))
    try:
        proxy = CuttingProxy(port, 24 << 20)
        r, el = migrate(doppel_bin, src, f"127.0.0.1:{proxy.port}", *slow_args())
        assert_source_untouched(r, src, el, 20, "failed", "closed", "reset", "Broken pipe", "answering")
        assert dst.wait(15) != 0  # the destination discards what it got
        assert "incoming migration failed" in dst.stderr()
    finally:
        src.close()
        dst.close()


def test_mismatched_destination(doppel_bin, guest_elf, tmp_path):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), dst_mem="256M")
    try:
        r, el = migrate(doppel_bin, src, f"127.0.0.1:{port}")
        assert_source_untouched(r, src, el, 10, "rejected")
        assert "MiB" in json_error(r)
        assert dst.wait(10) != 0
        assert "rejected" in dst.stderr()
        st = src.ctl("status")["migration"]
        assert st["bytes_raw"] == 0  # nothing but the header went out
    finally:
        src.close()
        dst.close()


def test_destination_silent(doppel_bin, guest_elf, tmp_path):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path))
    try:
        threading.Timer(0.5, lambda: dst.kill(signal.SIGSTOP)).start()
        r, el = migrate(doppel_bin, src, f"127.0.0.1:{port}", "--timeout", "2000", *slow_args())
        assert_source_untouched(r, src, el, 15, "timed out", "answer", "failed")
    finally:
        dst.kill(signal.SIGCONT)
        src.close()
        dst.close()


def test_migrate_cli_errors(doppel_bin, tmp_path):
    r = subprocess.run([doppel_bin, "migrate", "x"], stderr=subprocess.PIPE, text=True)
    assert r.returncode == 2 and "--to" in r.stderr
    r = subprocess.run([doppel_bin, "migrate", "x", "--to", "1.2.3.4:5", "--compress", "lz4"],
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 2 and "compress" in r.stderr


N_INCR = 4000


@pytest.mark.needs_root
def test_kv_load_across_migration(doppel_bin, guest_elf, kv_bin, tmp_path, topology):
    """A KV client writing through the migration loses no acknowledged operation; the network follows."""
    t = topology
    port = free_port()
    net = "--net", "tap=tapX,bridge=br0,mac=52:54:00:12:34:56"
    src = VM(doppel_bin, str(tmp_path), name="src", kernel=guest_elf, mem="256M", netns=t.hostA,
             cmdline=f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}", extra=net)
    dst = VM(doppel_bin, str(tmp_path), name="dst", cmdline=None, mem="256M", netns=t.hostB,
             extra=[*net, "--incoming", f"{netns.REPL_B_IP}:{port}"])
    try:
        src.wait_ctl()
        wait_ready(dst)
        wait_for(lambda: netns.ping(t.client, netns.GUEST_IP), 20, what="guest answers ping")
        load = t.popen(t.client, [kv_bin, netns.GUEST_IP, "--load", str(N_INCR), "--rate", "400", "--cmd", "INCR",
                                  "--key", "k", "--json"], stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        r, _ = migrate(doppel_bin, src, f"{netns.REPL_B_IP}:{port}", ns=t.hostA)
        assert r.returncode == 0, r.stderr
        out, _ = load.communicate(timeout=60)
        res = json.loads(out.strip().splitlines()[-1])
        assert load.returncode == 0 and res["unacked"] == 0 and res["errors"] == 0, res
        assert res["acked"] == N_INCR, res
        # Exactly the acknowledged INCRs were applied, each once: the client re-sends an unanswered
        # request with the SAME id and the guest's server deduplicates, so a retry whose first copy
        # was applied (reply lost in the switch-over) is not applied again. With nothing left in
        # flight (unacked == 0) there is no op of unknown outcome: the value is exact. Nothing
        # acknowledged was lost, and nothing was applied twice.
        g = subprocess.run(["ip", "netns", "exec", t.client, kv_bin, netns.GUEST_IP, "GET", "k"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert g.returncode == 0, g.stderr
        assert int(g.stdout.strip()) == res["acked"], (g.stdout, res)
        assert src.wait(15) == 0
    finally:
        src.close()
        dst.close()


# ---- the two-phase switchover broken at each step -------------------------------------------------

MIGPROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migproxy.py")
POST_SWITCH = ("failed", "switchover", "switchover-uncertain", "completed")


def vm_state(vm, timeout=5.0):
    """(VM state, migration state) from status, or (None, None) when the process does not answer
    (gone, or stopped: then after `timeout`)."""
    try:
        st = ctl(vm.control, {"cmd": "status"}, timeout=timeout)
        return st["state"], st["migration"]["state"]
    except (OSError, ValueError, KeyError):
        return None, None


class CopyChecker:
    """Polls both status sockets (destination first, then source) until stopped and records the
    samples. Violations: both 'running' in one sample; or, over the whole test, the destination seen
    running and the source seen running after the switchover began (migration state failed, switchover,
    switchover-uncertain or completed) — exactly one side may run once the source paused for good."""

    def __init__(self, src, dst, period=0.005):
        self.src, self.dst, self.period = src, dst, period
        self.samples, self.stop_ev = [], threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            d, dm = vm_state(self.dst, 0.1)
            s, sm = vm_state(self.src, 0.1)
            self.samples.append((t, s, sm, d, dm))
            time.sleep(self.period)

    def finish(self):
        self.stop_ev.set()
        self.th.join(5)
        smp = self.samples
        both = [x for x in smp if x[1] == "running" and x[3] == "running"]
        dst_ran = any(x[3] == "running" for x in smp)
        src_after = [x for x in smp if x[1] == "running" and x[2] in POST_SWITCH]
        assert not both, f"two copies running: {both[:3]}"
        assert not (dst_ran and src_after), f"both sides ran after the switchover: {src_after[:3]}"
        # The rate while both processes answered promptly (a SIGSTOPped one holds a poll for 0.1 s).
        gaps = [b[0] - a[0] for a, b in zip(smp, smp[1:]) if b[0] - a[0] < 0.09]
        rate = len(gaps) / sum(gaps) if gaps else 0
        assert rate >= 50, f"status polled at {rate:.0f} Hz only"
        return dst_ran, bool(src_after), rate


def start_proxy(ns, target, mode, pid):
    p = subprocess.Popen(netns._argv_in(ns, [sys.executable, MIGPROXY, target, mode, str(pid)]),
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "port", line
    p.lines = []
    threading.Thread(target=lambda: p.lines.extend(iter(p.stdout.readline, "")), daemon=True).start()
    return p, int(line[1])


def proxy_log(p):
    """The proxy's event lines so far (it has cut the link by the time doppel migrate returned)."""
    time.sleep(0.2)
    return "".join(p.lines)


def resolve_and_check(mode, doppel, r, src, dst, proxy):
    """Assert what each side did at this step and apply the operator's decision. Returns the survivor."""
    log = proxy_log(proxy)
    assert r.returncode == 1, (mode, r.returncode, r.stdout, r.stderr, log)
    err = json_error(r)
    if mode in ("before-ready", "after-ready"):
        # Not committed: the source resumes, the destination discards without ever running.
        assert "cut" in log and "go" not in log.split(), log
        assert dst.wait(20) != 0
        assert "no GO from the source" in dst.stderr(), dst.stderr()
        st = src.ctl("status")
        assert st["state"] == "running" and st["migration"]["state"] == "failed", st
        assert st["migration"]["committed"] is False, st
        rr = subprocess.run([doppel, "migrate", "--control", src.control, "--resume-source"],
                            stderr=subprocess.PIPE, text=True)
        assert rr.returncode == 4 and "not in an uncertain switchover" in rr.stderr, rr.stderr
        return src
    if mode == "stall-dst":  # the late RUNNING resolves it: the source exits 0, never having resumed
        assert "uncertain" in err, err
        st = src.ctl("status")
        assert st["state"] == "paused" and st["migration"]["state"] == "switchover-uncertain", st
        assert src.wait(20) == 0, src.stderr()
        wait_for(lambda: vm_state(dst)[0] == "running", 10, what="destination runs")
        return dst
    if mode == "kill-at-go":
        assert dst.proc.poll() is None, dst.stderr()
        wait_for(lambda: vm_state(dst)[0] == "running", 10, what="destination runs")
        assert src.wait(10) == -signal.SIGKILL
        return dst
    # GO sent: the source committed and must not resume by itself.
    assert "uncertain" in err, err
    st = src.ctl("status")
    assert st["state"] == "paused", st
    assert st["migration"]["state"] == "switchover-uncertain" and st["migration"]["committed"], st
    if mode == "after-go":  # the destination got GO: it runs; the operator stops the source
        wait_for(lambda: vm_state(dst)[0] == "running", 10, what="destination runs")
        time.sleep(1.5)
        assert vm_state(src)[0] == "paused"
        src.ctl("stop")
        assert src.wait(10) == 0
        return dst
    # drop-go: GO lost. Zero copies run; the destination discards, the source waits for the operator.
    assert dst.wait(20) != 0
    assert "no GO from the source" in dst.stderr(), dst.stderr()
    time.sleep(1.0)
    assert vm_state(src)[0] == "paused"
    rr = subprocess.run([doppel, "migrate", "--control", src.control, "--resume-source"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    assert rr.returncode == 0, rr.stderr
    st = src.ctl("status")
    assert st["state"] == "running" and st["migration"]["state"] == "failed", st
    assert "resumed by the operator" in st["migration"]["error"], st
    return src


SWITCH_MODES = ["before-ready", "after-ready", "drop-go", "after-go", "kill-at-go", "stall-dst"]


def proxy_pid(mode, src, dst):
    return dst.proc.pid if mode == "stall-dst" else src.proc.pid


@pytest.mark.needs_root
@pytest.mark.parametrize("mode", SWITCH_MODES)
def test_switchover_cut_kv(doppel_bin, guest_elf, kv_bin, tmp_path, topology, mode):
    """The migration link broken at each switchover step under a KV INCR load: never two copies, the
    right side survives (after an operator decision where the protocol cannot know), and it holds
    exactly the acknowledged INCRs."""
    t = topology
    port, n = free_port(), 2000
    net = "--net", "tap=tapX,bridge=br0,mac=52:54:00:12:34:56"
    src = VM(doppel_bin, str(tmp_path), name="src", kernel=guest_elf, mem="256M", netns=t.hostA,
             cmdline=f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}", extra=net)
    dst = VM(doppel_bin, str(tmp_path), name="dst", cmdline=None, mem="256M", netns=t.hostB,
             extra=[*net, "--incoming", f"{netns.REPL_B_IP}:{port}"])
    proxy = None
    try:
        src.wait_ctl()
        wait_ready(dst)
        wait_for(lambda: netns.ping(t.client, netns.GUEST_IP), 20, what="guest answers ping")
        proxy, pport = start_proxy(t.hostA, f"{netns.REPL_B_IP}:{port}", mode, proxy_pid(mode, src, dst))
        chk = CopyChecker(src, dst)
        load = t.popen(t.client, [kv_bin, netns.GUEST_IP, "--load", str(n), "--rate", "400", "--cmd", "INCR",
                                  "--key", "k", "--json", "--deadline", "40"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{pport}", "--timeout", "2000", ns=t.hostA)
        survivor = resolve_and_check(mode, doppel_bin, r, src, dst, proxy)
        out, _ = load.communicate(timeout=60)
        res = json.loads(out.strip().splitlines()[-1])
        assert load.returncode == 0 and res["unacked"] == 0 and res["acked"] == n, res
        g = subprocess.run(["ip", "netns", "exec", t.client, kv_bin, netns.GUEST_IP, "GET", "k"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert g.returncode == 0, g.stderr
        assert int(g.stdout.strip()) == res["acked"], (g.stdout, res)
        assert survivor.proc.poll() is None
        dst_ran, src_ran, rate = chk.finish()
        assert dst_ran == (survivor is dst) and src_ran == (survivor is src), (dst_ran, src_ran)
        print(f"{mode}: status polled at {rate:.0f} Hz")
    finally:
        if proxy:
            netns.stop_proc(proxy)
        src.close()
        dst.close()


@pytest.mark.parametrize("mode", SWITCH_MODES)
def test_switchover_cut_dirty(doppel_bin, guest_elf, tmp_path, mode):
    """The same breaks over loopback with the dirty-page oracle: the survivor keeps bad=0 and its pass
    counter continues (the destination does not reboot)."""
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="16M")
    proxy = None
    try:
        proxy, pport = start_proxy(None, f"127.0.0.1:{port}", mode, proxy_pid(mode, src, dst))
        chk = CopyChecker(src, dst)
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{pport}", "--timeout", "2000")
        last_src = src.dirty()[-1]["pass"]
        survivor = resolve_and_check(mode, doppel_bin, r, src, dst, proxy)
        assert_progressing(survivor, timeout=15)
        if survivor is dst:
            assert dst.dirty()[0]["pass"] >= last_src and "booted" not in dst.output()
        assert all(x["bad"] == 0 for x in src.dirty() + dst.dirty())
        dst_ran, src_ran, _ = chk.finish()
        assert dst_ran == (survivor is dst) and src_ran == (survivor is src), (dst_ran, src_ran)
    finally:
        if proxy:
            netns.stop_proc(proxy)
        src.close()
        dst.close()


UDP_FLOOD = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, b, n = time.monotonic() + float(sys.argv[2]), bytes(1200), 0
while time.monotonic() < end:
    try:
        s.sendto(b, (sys.argv[1], 9))
        n += 1
    except OSError:
        pass
    if n % 50 == 0:
        time.sleep(0.002)
print(n)
"""


@pytest.mark.needs_root
def test_kv_migration_under_rx_flood(doppel_bin, guest_elf, kv_bin, tmp_path, topology):
    """Heavy inbound traffic (a UDP flood to the guest besides the KV load) through stop-and-copy: RX
    must not be delivered into the paused source's rings after the final sync (the DMA gate), else
    the destination's virtio-net indices disagree with the pages it got and the guest's network
    stops. Afterwards the destination still answers KV and ping, with every INCR acknowledged."""
    t = topology
    port, n = free_port(), 2000
    net = "--net", "tap=tapX,bridge=br0,mac=52:54:00:12:34:56"
    src = VM(doppel_bin, str(tmp_path), name="src", kernel=guest_elf, mem="256M", netns=t.hostA,
             cmdline=f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}", extra=net)
    dst = VM(doppel_bin, str(tmp_path), name="dst", cmdline=None, mem="256M", netns=t.hostB,
             extra=[*net, "--incoming", f"{netns.REPL_B_IP}:{port}"])
    try:
        src.wait_ctl()
        wait_ready(dst)
        wait_for(lambda: netns.ping(t.client, netns.GUEST_IP), 20, what="guest answers ping")
        flood = t.popen(t.client, [sys.executable, "-c", UDP_FLOOD, netns.GUEST_IP, "8"],
                        stdout=subprocess.PIPE, text=True)
        load = t.popen(t.client, [kv_bin, netns.GUEST_IP, "--load", str(n), "--rate", "400", "--cmd", "INCR",
                                  "--key", "k", "--json"], stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        r, _ = migrate(doppel_bin, src, f"{netns.REPL_B_IP}:{port}", ns=t.hostA)
        assert r.returncode == 0, r.stderr
        out, _ = load.communicate(timeout=60)
        res = json.loads(out.strip().splitlines()[-1])
        sent, _ = flood.communicate(timeout=30)
        assert int(sent) > 1000, sent
        assert load.returncode == 0 and res["unacked"] == 0 and res["acked"] == n, res
        g = subprocess.run(["ip", "netns", "exec", t.client, kv_bin, netns.GUEST_IP, "GET", "k"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert g.returncode == 0 and int(g.stdout.strip()) == n, (g.stdout, g.stderr)
        assert netns.ping(t.client, netns.GUEST_IP, count=3)
        assert src.wait(15) == 0
        assert dst.proc.poll() is None
    finally:
        src.close()
        dst.close()
