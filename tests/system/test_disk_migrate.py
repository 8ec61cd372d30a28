"""test_disk_migrate.py — live migration over shared storage (`doppel migrate --shared-disks`): the
destination opens the source's image without its lock, no disk block is sent, the source flushes at
stop-and-copy and the image's lock moves at GO; a link cut after GO leaves the lock with exactly the side
that runs (an operator's --resume-source is refused while the destination holds it)."""
import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from test_disk import (check_image, disk_lines, free_port, incoming, make_image, primary, run_cli, run_id)
from vmproc import wait_for

pytestmark = pytest.mark.needs_kvm

MIGPROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migproxy.py")


def lock_holders(img):
    """PIDs holding a flock on img (from /proc/locks, by inode)."""
    ino = os.stat(img).st_ino
    pids = set()
    with open("/proc/locks") as f:
        for line in f:
            p = line.split()
            if p[1] == "FLOCK" and int(p[5].split(":")[2]) == ino:
                pids.add(int(p[4]))
    return pids


def probe_locked(img):
    """A third party's exclusive flock attempt fails."""
    with open(img, "rb+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def goes_on_clean(v, after, what):
    wait_for(lambda: len(disk_lines(v.output())) >= 3 and disk_lines(v.output())[-1]["seq"] > after, 20,
             what=what)
    lines = disk_lines(v.output())
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), v.output()[-2000:]
    return lines[-1]["seq"]


def third_open_refused(doppel_bin, guest_elf, tmp_path, img):
    r = run_cli(doppel_bin, "run", "--kernel", guest_elf, "--serial", "none", "--name", "third", "--control",
                str(tmp_path / "third.sock"), "--disk", f"path={img}", "--cmdline", "work=exit")
    return r.returncode != 0 and "in use by another process (locked)" in r.stderr


def test_migrate_shared_disk_under_write_load(vm, doppel_bin, guest_elf, tmp_path):
    """Both sides open one image; the guest writes all along; the destination goes on with bad=0, no disk
    block went over the link, the source exited, and afterwards only the destination holds the lock."""
    img = make_image(tmp_path / "shared.img")
    src = primary(vm, "src", img, ",id=data")
    port = free_port()
    dst = incoming(vm, "dst", img, port, ",id=data")  # the source holds the lock: opened without it
    assert lock_holders(img) == {src.proc.pid}
    wait_for(lambda: disk_lines(src.output())[-1]["seq"] > 1000, 20, what="1000 records")
    r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", "--json",
                "--shared-disks", timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["shared_disks"] is True
    assert src.wait(20) == 0  # committed: the source exits, it never runs again
    before = disk_lines(src.output())[-1]["seq"]
    goes_on_clean(dst, before, "destination disk lines")
    assert all(l["bad"] == 0 for l in disk_lines(src.output()))
    assert lock_holders(img) == {dst.proc.pid}
    assert probe_locked(img)
    assert third_open_refused(doppel_bin, guest_elf, tmp_path, img)
    r = run_cli(doppel_bin, "stop", dst.name, "--control", dst.control)
    assert r.returncode == 0 and dst.wait(20) == 0
    last = disk_lines(dst.output())[-1]["seq"]
    assert check_image(img, last, run_id(src.output()), 1024, newer_ok=True) == []


def test_migrate_shared_mode_must_match_the_images(vm, doppel_bin, tmp_path):
    """Without --shared-disks a destination on the source's (locked) image refuses before any block is
    written into it; with --shared-disks a destination on its own image refuses. The source runs on."""
    img = make_image(tmp_path / "a.img")
    src = primary(vm, "src", img, ",id=data")
    port = free_port()
    dst = incoming(vm, "dst", img, port, ",id=data")
    r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", timeout=120)
    assert r.returncode != 0
    assert "disk0 here is locked by another process (shared? use --shared-disks)" in r.stderr, r.stderr
    dst.wait(20)
    port = free_port()
    dst2 = incoming(vm, "dst2", make_image(tmp_path / "own.img"), port, ",id=data")
    r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", "--shared-disks",
                timeout=120)
    assert r.returncode != 0
    assert "--shared-disks, but disk0 here is not the source's image (not locked)" in r.stderr, r.stderr
    dst2.wait(20)
    n = disk_lines(src.output())[-1]["seq"]
    goes_on_clean(src, n, "the source's guest to go on")
    assert lock_holders(img) == {src.proc.pid}


def start_proxy(target, mode, pid):
    p = subprocess.Popen([sys.executable, MIGPROXY, target, mode, str(pid)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "port", line
    p.lines = []
    threading.Thread(target=lambda: p.lines.extend(iter(p.stdout.readline, "")), daemon=True).start()
    return p, int(line[1])


@pytest.mark.parametrize("mode", ["after-go", "drop-go"])
def test_shared_disk_lock_at_a_cut_switchover(vm, doppel_bin, tmp_path, mode):
    """after-go: the destination got GO and runs; the source (uncertain, paused) gave up the lock, and the
    operator's --resume-source is refused because the destination holds it. drop-go: the destination never
    got GO and exits without the lock; --resume-source takes it back and the source runs on clean."""
    img = make_image(tmp_path / "shared.img")
    src = primary(vm, "src", img, ",id=data")
    port = free_port()
    dst = incoming(vm, "dst", img, port, ",id=data")
    proxy, pport = start_proxy(f"127.0.0.1:{port}", mode, src.proc.pid)
    try:
        wait_for(lambda: disk_lines(src.output())[-1]["seq"] > 500, 20, what="500 records")
        r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{pport}",
                    "--shared-disks", "--timeout", "1500", timeout=120)
        assert r.returncode != 0 and "switchover uncertain" in r.stderr, r.stderr
        st = src.ctl("status")
        assert st["state"] == "paused" and st["migration"]["state"] == "switchover-uncertain"
        before = disk_lines(src.output())[-1]["seq"]
        res = run_cli(doppel_bin, "migrate", "src", "--resume-source", "--control", src.control, timeout=30)
        if mode == "after-go":
            goes_on_clean(dst, before, "the destination's disk lines")
            assert lock_holders(img) == {dst.proc.pid}
            assert res.returncode == 4, res.stderr
            assert "disk0's image is locked by another process (does the destination run?)" in res.stderr
            assert src.ctl("status")["state"] == "paused"
            assert lock_holders(img) == {dst.proc.pid}
        else:
            assert dst.wait(20) == 1  # no GO: discarded, never ran, never locked
            assert res.returncode == 0, res.stderr
            goes_on_clean(src, before, "the source's disk lines after --resume-source")
            assert lock_holders(img) == {src.proc.pid}
    finally:
        proxy.kill()
        proxy.wait()


def test_migrate_disk_blocks_converge_with_memory(vm, doppel_bin, tmp_path):
    """Non-shared storage under write load (a 16 MiB ring): the blocks written during the pre-copy go with
    the rounds, the remaining dirty disk bytes count in the stop decision, so the stop-and-copy epoch
    carries only about what the last round left dirty; the destination goes on with bad=0 and its image
    holds what its memory says."""
    src = vm(name="src", cmdline="work=disk dws=16M pi=200", mem="128M",
             extra=["--disk", f"path={make_image(tmp_path / 'a.img')},id=data"])
    src.wait_output(r"disk: seq=\d+", 20)
    port = free_port()
    dimg = make_image(tmp_path / "b.img")
    dst = incoming(vm, "dst", dimg, port, ",id=data")
    wait_for(lambda: disk_lines(src.output())[-1]["seq"] > 1000, 20, what="1000 records")
    r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", "--json",
                timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    print({k: res[k] for k in ("rounds", "downtime_ms", "disk_initial_bytes", "disk_round_bytes",
                               "disk_final_bytes", "page_rate")},
          [(x["pages"], x["dirty"], x["disk_dirty_bytes"]) for x in res["round_log"]])
    assert src.wait(20) == 0
    assert res["disk_initial_bytes"] == 64 << 20  # every block up front (the image was new: zeroes)
    last = res["round_log"][-1]
    # what the stop decision saw, plus what the guest wrote between that sync and the pause (~1 ms)
    assert res["disk_final_bytes"] <= last["disk_dirty_bytes"] + (1 << 20), res
    if res["rounds"] > 1:
        assert res["disk_round_bytes"] > 0, res
    before = disk_lines(src.output())[-1]["seq"]
    goes_on_clean(dst, before, "destination disk lines")
    r = run_cli(doppel_bin, "stop", dst.name, "--control", dst.control)
    assert r.returncode == 0 and dst.wait(20) == 0
    seq = disk_lines(dst.output())[-1]["seq"]
    assert check_image(dimg, seq, run_id(src.output()), 4096, newer_ok=True) == []
