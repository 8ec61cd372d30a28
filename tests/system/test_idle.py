"""test_idle.py — the idle doorbell: an idle guest sleeps in the VMM (no CPU) unless idle=poll, a sleeping
vCPU still pauses promptly (and keeps its time across the pause), and a snapshot of a sleeping guest
restores and runs on."""
import os
import subprocess
import time

import pytest

from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm


def cpu_ms(pid, secs):
    def total():
        t = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                t += int(f.read().split()[0])
        return t
    t0 = total()
    time.sleep(secs)
    return (total() - t0) / 1e6


@pytest.fixture
def vms(doppel_bin, guest_elf, tmp_path):
    started = []

    def start(name, cmdline):
        v = VM(doppel_bin, str(tmp_path), name=name, kernel=guest_elf, cmdline=cmdline, mem="16M")
        started.append(v)
        return v
    yield start
    for v in started:
        v.close()


def test_idle_guest_sleeps_polling_guest_spins(vms):
    wait = vms("iw", "work=idle pi=200")
    poll = vms("ip", "work=idle pi=200 idle=poll")
    for v in (wait, poll):
        v.wait_output(r"idle: t=1\.")
    w, p = cpu_ms(wait.proc.pid, 2.0), cpu_ms(poll.proc.pid, 2.0)
    print(f"CPU over 2 s: doorbell {w:.1f} ms, idle=poll {p:.1f} ms")
    assert w < 100, f"an idle guest used {w:.1f} ms of CPU in 2 s"
    assert p > 5 * max(w, 20), f"polling ({p:.1f} ms) should cost far more than sleeping ({w:.1f} ms)"
    st = wait.ctl("status")
    assert st["idle_waits"] >= 5, st  # one sleep per pi=200 line at least
    assert poll.ctl("status")["idle_waits"] == 0


def test_sleeping_vcpu_pauses_promptly(vms):
    v = vms("ipause", "work=idle pi=1000")  # sleeps up to 1 s at a time
    v.wait_output(r"idle: t=1\.")
    worst = 0
    for _ in range(5):
        t0 = time.monotonic()
        r = v.ctl("pause")
        worst = max(worst, time.monotonic() - t0)
        assert r["state"] == "paused", r
        assert v.ctl("resume")["state"] == "running"
        time.sleep(0.2)
    assert worst < 0.25, f"pausing a sleeping vCPU took {worst * 1000:.0f} ms (its sleep is up to 1 s)"
    v.wait_output(r"idle: t=3\.")  # time goes on after the pauses


def test_snapshot_of_sleeping_guest_restores(vms, doppel_bin, guest_elf, tmp_path):
    v = vms("isnap", "work=idle pi=300")
    v.wait_output(r"idle: t=1\.")
    snap = str(tmp_path / "idle.snap")
    r = subprocess.run([doppel_bin, "snapshot", "--control", v.control, snap, "--stop"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert v.wait(15) == 0
    w = VM(doppel_bin, str(tmp_path), name="isnap2", kernel=None, cmdline=None, mem="16M",
           extra=["--restore", snap])
    try:
        wait_for(lambda: len(w.lines("idle:")) >= 3, 10, what="three idle lines after the restore")
        assert "guest: booted" not in w.output()
    finally:
        w.close()
