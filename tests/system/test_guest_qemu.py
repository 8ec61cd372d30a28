"""test_guest_qemu.py — boot build/guest.elf under QEMU microvm and check its output and exit statuses."""
import os
import re
import shutil
import subprocess

import pytest

QEMU = shutil.which("qemu-system-x86_64")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DOPPEL_BUILD", os.path.join(ROOT, "build"))
GUEST = os.path.join(BUILD, "guest.elf")

# QEMU is an optional cross-check (not a doppel dependency): absent, these tests skip. A missing
# guest.elf is a broken build and fails (the guest_elf fixture).
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (optional cross-check)")


@pytest.fixture(autouse=True)
def _guest_built(guest_elf):
    assert os.path.samefile(guest_elf, GUEST), (guest_elf, GUEST)


def boot(cmdline, mem="256M", timeout=60):
    """Run the guest to completion; return (qemu exit status, serial output)."""
    # KVM when usable, else TCG (slower, but the guest calibrates its TSC against the PIT then).
    accel = ["-accel", "kvm"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else []
    cmd = [QEMU, "-M", "microvm,acpi=off", *accel, "-accel", "tcg", "-m", mem,
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
           "-device", "isa-debug-exit,iobase=0x501,iosize=2",
           "-kernel", GUEST, "-append", cmdline]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode(errors="replace").replace("\r", "")
    return p.returncode, out + p.stderr.decode(errors="replace")


def test_dirty_runs_clean_and_exits_after_secs():
    rc, out = boot("work=dirty ws=16M pi=200 secs=2")
    assert 'guest: booted cmdline="work=dirty ws=16M pi=200 secs=2" mem=' in out, out
    assert re.search(r"^guest: tsc \d+ kHz \(\w+\)$", out, re.M), out
    lines = re.findall(r"^dirty: pass=(\d+) rate=(\d+) bad=(\d+)$", out, re.M)
    assert len(lines) >= 3, out
    passes = [int(p) for p, _, _ in lines]
    assert all(b == "0" for _, _, b in lines), out
    assert passes == sorted(passes) and passes[-1] > passes[0], out
    assert all(int(r) > 0 for _, r, _ in lines), out
    assert rc == 1, out  # status 0 -> (0 << 1) | 1


def test_dirty_meter_and_random_fill():
    """meter=1 adds done= (pages stored in all, growing by what each line's interval stored); fill=random
    leaves the oracle intact."""
    rc, out = boot("work=dirty ws=8M pi=50 secs=2 meter=1 fill=random")
    lines = [tuple(map(int, m)) for m in
             re.findall(r"^dirty: pass=(\d+) rate=(\d+) bad=(\d+) done=(\d+)$", out, re.M)]
    assert len(lines) >= 3, out
    assert all(b == 0 for _, _, b, _ in lines), out
    done = [d for _, _, _, d in lines]
    assert all(b > a for a, b in zip(done, done[1:])), out
    assert done[-1] >= lines[-1][0] * 2048, out  # 8M = 2048 pages per pass
    assert rc == 1, out


def test_idle_prints_time():
    rc, out = boot("work=idle pi=100 secs=1")
    ts = [float(t) for t in re.findall(r"^idle: t=([\d.]+)$", out, re.M)]
    assert len(ts) >= 5 and ts == sorted(ts), out
    assert rc == 1, out


@pytest.mark.parametrize("cmdline,status,expect", [
    ("work=exit exit=5", 5, None),
    ("work=exit", 0, None),
    ("work=fault fault=ud", 3, r"^guest: exception 6 err=0x0 rip=0x[0-9a-f]+$"),
    ("work=fault fault=io", 3, r"^guest: exception 13 "),
    ("work=fault fault=pf", 3, r"^guest: exception 14 err=0x6 "),
    ("work=dirty ws=1G", 2, r"^dirty: error: .*does not fit in RAM"),
    ("work=dirty ws=12Q", 2, r"^dirty: error: bad ws=12Q"),
    ("work=dirty fill=bogus", 2, r"^dirty: error: bad fill=bogus \(want zero or random\)$"),
    ("work=bogus", 2, r"^guest: error: unknown work=bogus$"),
    ("pi=0 work=idle", 2, r"^guest: error: bad pi=0"),
])
def test_exit_status(cmdline, status, expect):
    rc, out = boot(cmdline)
    assert rc == (status << 1) | 1, out
    if expect:
        assert re.search(expect, out, re.M), out
