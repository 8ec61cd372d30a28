"""test_switchover.py — `doppel switchover` (planned role swap, two-phase with GO) and `doppel reprotect`
(a fenced copy rejoining, the new primary protecting again): memory exact (work=dirty), the KV value
equal to the acknowledged INCRs, and never two live copies (both status sockets polled at >= 50 Hz),
also when the link dies at each step of the switchover."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import netns
from kvserver import finish_load, kv_op, start_load, target_of
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
            time.sleep(max(0.0, 0.008 - (time.monotonic() - t)))

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
