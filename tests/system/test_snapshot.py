"""test_snapshot.py — `doppel snapshot` / `doppel run --restore` with real VMs: continuity, incremental
snapshots, hostile snapshot files, failed snapshots, a KV guest keeping its keys."""
import json
import os
import struct
import subprocess
import time

import pytest

import streamfile
from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm


def run(doppel_bin, *args, timeout=30):
    return subprocess.run([doppel_bin, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def restored(vm, path, name, mem, **kw):
    """A new `doppel run --restore path` process (no kernel, no cmdline)."""
    extra = ["--restore", str(path)] + list(kw.pop("extra", ()))
    return vm(name=name, kernel=None, cmdline=None, mem=mem, extra=extra, **kw)


def snapshot(doppel_bin, v, path, *extra):
    return run(doppel_bin, "snapshot", v.name, str(path), "--control", v.control, "--json", *extra)


def wait_dirty(v, n, timeout=30):
    return wait_for(lambda: len(v.dirty()) >= n and v.dirty(), timeout, what=f"{n} dirty lines of {v.name}")


def one_line_error(r):
    """The one error line of a failed command: on stderr, or, for a verb run with --json, the one JSON
    object {"ok": false, "error": ..., "exit": <the exit status>} on stdout (stderr then empty)."""
    assert r.returncode != 0, (r.returncode, r.stdout, r.stderr)
    if "--json" in r.args:
        assert r.stderr == "" and r.stdout.count("\n") == 1, (r.stdout, r.stderr)
        e = json.loads(r.stdout)
        assert e["ok"] is False and e["exit"] == r.returncode, e
        return e["error"]
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ---- continuity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("vcpus", [1, 2])
def test_snapshot_stop_restore_continues(vm, doppel_bin, tmp_path, vcpus):
    v = vm(cmdline="work=dirty ws=32M pi=200", vcpus=vcpus)
    v.wait_ctl()
    wait_dirty(v, 3)
    snap = tmp_path / "s1.snap"
    r = snapshot(doppel_bin, v, snap, "--stop")
    assert r.returncode == 0, r.stderr
    assert v.wait(15) == 0
    before = v.dirty()
    assert before and all(d["bad"] == 0 for d in before)
    assert snap.exists() and not (tmp_path / "s1.snap.tmp").exists()

    w = restored(vm, snap, "r", "256M")
    w.wait_ctl()
    after = wait_dirty(w, 4)
    st = w.ctl("status")
    assert st["state"] == "running" and st["vcpus"] == vcpus
    assert after[0]["pass"] >= before[-1]["pass"], (before[-1], after[0])
    assert after[-1]["pass"] > after[0]["pass"]
    assert all(d["bad"] == 0 for d in after), after
    assert "guest: booted" not in w.output(), "restored guest rebooted"


def test_snapshot_without_stop_both_run(vm, doppel_bin, tmp_path):
    v = vm(cmdline="work=dirty ws=32M pi=200")
    v.wait_ctl()
    wait_dirty(v, 2)
    snap = tmp_path / "live.snap"
    r = snapshot(doppel_bin, v, snap)
    assert r.returncode == 0, r.stderr
    n = len(v.dirty())
    w = restored(vm, snap, "r", "256M")
    w.wait_ctl()
    wait_dirty(w, 3)
    wait_dirty(v, n + 3)
    assert v.ctl("status")["state"] == "running"
    assert all(d["bad"] == 0 for d in v.dirty())
    assert all(d["bad"] == 0 for d in w.dirty())


# ---- incremental --------------------------------------------------------------------------------

def test_incremental_snapshot_chain(vm, doppel_bin, tmp_path):
    # rate-capped guest: by pass 1 all of ws was touched, then only ~rate pages/s change.
    v = vm(cmdline="work=dirty ws=128M rate=20000 pi=200", mem="512M")
    v.wait_ctl()
    wait_for(lambda: any(d["pass"] >= 1 for d in v.dirty()), 30, what="pass 1")
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    r = snapshot(doppel_bin, v, s1)
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    r = snapshot(doppel_bin, v, s2, "--incremental-from", str(s1))
    assert r.returncode == 0, r.stderr
    assert s2.stat().st_size < s1.stat().st_size, (s1.stat().st_size, s2.stat().st_size)
    assert s2.stat().st_size < s1.stat().st_size * 0.6

    # From a snapshot that is not the last one: one clear error, VM untouched, no file.
    r = snapshot(doppel_bin, v, s3, "--incremental-from", str(s1))
    assert "not the last snapshot" in one_line_error(r)
    assert not s3.exists() and not (tmp_path / "s3.tmp").exists()
    n = len(v.dirty())
    wait_dirty(v, n + 2)
    assert v.ctl("status")["state"] == "running"
    assert all(d["bad"] == 0 for d in v.dirty())

    # Restoring s2 pulls s1 through its recorded path.
    before_stop = v.dirty()[-1]["pass"]
    w = restored(vm, s2, "r", "512M")
    w.wait_ctl()
    after = wait_dirty(w, 3)
    assert all(d["bad"] == 0 for d in after), after
    assert after[0]["pass"] <= before_stop + 1
    w.close()

    # Base gone: one clear error naming it, nothing runs.
    os.rename(s1, tmp_path / "moved")
    r = run(doppel_bin, "run", "--restore", str(s2), "--name", "x", "--serial",
            f"file:{tmp_path}/x.serial", "--control", f"{tmp_path}/x.sock")
    assert str(s1) in one_line_error(r)
    serial = tmp_path / "x.serial"  # nothing ran: no serial output at all (if the file was made)
    assert not serial.exists() or serial.read_text() == "", serial.read_text()


# ---- failed snapshots leave the VM running ---------------------------------------------------------

def test_snapshot_to_unwritable_path(vm, doppel_bin, tmp_path):
    v = vm(cmdline="work=dirty ws=16M pi=200")
    v.wait_ctl()
    wait_dirty(v, 2)
    r = snapshot(doppel_bin, v, tmp_path / "nodir" / "s")
    one_line_error(r)
    d = tmp_path / "adir"
    d.mkdir()
    (d / "f").write_text("x")
    r = snapshot(doppel_bin, v, d)  # rename onto a non-empty directory fails
    one_line_error(r)
    assert not (tmp_path / "adir.tmp").exists()
    assert list(d.iterdir()) == [d / "f"]
    n = len(v.dirty())
    wait_dirty(v, n + 3)
    assert v.ctl("status")["state"] == "running"
    assert all(x["bad"] == 0 for x in v.dirty())
    # And a good snapshot still works afterwards.
    r = snapshot(doppel_bin, v, tmp_path / "ok")
    assert r.returncode == 0, r.stderr


def test_snapshot_of_paused_vm_stays_paused(vm, doppel_bin, tmp_path):
    v = vm(cmdline="work=dirty ws=16M pi=200")
    v.wait_ctl()
    wait_dirty(v, 2)
    assert run(doppel_bin, "pause", "vm", "--control", v.control).returncode == 0
    r = snapshot(doppel_bin, v, tmp_path / "p1")
    assert r.returncode == 0, r.stderr
    assert v.ctl("status")["state"] == "paused"
    r = snapshot(doppel_bin, v, tmp_path / "nodir" / "x")  # a failed one too
    one_line_error(r)
    assert v.ctl("status")["state"] == "paused"
    # An incremental snapshot may not overwrite its own base.
    r = snapshot(doppel_bin, v, tmp_path / "p1", "--incremental-from", str(tmp_path / "p1"))
    assert "base" in one_line_error(r)
    assert run(doppel_bin, "resume", "vm", "--control", v.control).returncode == 0
    n = len(v.dirty())
    wait_dirty(v, n + 2)
    assert all(x["bad"] == 0 for x in v.dirty())


# ---- hostile snapshot files -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_snapshot(doppel_bin, guest_elf, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("snapbad")
    v = VM(doppel_bin, str(tmp), kernel=guest_elf, cmdline="work=dirty ws=8M pi=100", mem="64M")
    try:
        v.wait_ctl()
        wait_dirty(v, 2)
        path = tmp / "good.snap"
        r = run(doppel_bin, "snapshot", "vm", str(path), "--control", v.control, "--stop")
        assert r.returncode == 0, r.stderr
        v.wait(15)
    finally:
        v.close()
    return path.read_bytes()


def _restore_bytes(doppel_bin, tmp_path, data, *extra):
    f = tmp_path / "bad.snap"
    f.write_bytes(data)
    serial = tmp_path / "bad.serial"
    r = run(doppel_bin, "run", "--restore", str(f), "--name", "bad", "--serial", f"file:{serial}",
            "--control", str(tmp_path / "bad.sock"), *extra)
    msg = one_line_error(r)
    out = serial.read_text() if serial.exists() else ""
    assert "dirty:" not in out and "guest:" not in out, out
    return msg


def _mutations(data):
    s = streamfile.Stream(data)
    pd = s.page_data()
    assert pd, s.records
    rec, count, enc, idx = pd[0]
    out = {}
    cuts = {"5": 5, "30": 30, "hdr": s.header_len, "hdr+20": s.header_len + 20,
            "pages": rec.body_off + 8 + 8 * count + 10, "half": len(data) // 2,
            "-48": len(data) - 48, "-1": len(data) - 1}
    for k, cut in cuts.items():
        out[f"truncated@{k}"] = data[:cut]
    b = bytearray(data)
    b[rec.body_off + 8 + 8 * count + 100] ^= 0x10
    out["flipped-page-byte"] = bytes(b)
    big = max(pd, key=lambda x: x[0].length)[0]
    b = bytearray(data)
    b[big.body_off + big.length - 300] ^= 0x01
    out["flipped-byte-large-batch"] = bytes(b)
    out["magic"] = b"NOTADOPP" + data[8:]
    out["version"] = data[:8] + struct.pack("<I", 7) + data[12:]
    b = bytearray(data)
    struct.pack_into("<I", b, s.records[1].off + 4, 0xFFFFFFF0)
    out["absurd-length"] = bytes(b)
    b = bytearray(data)
    struct.pack_into("<Q", b, rec.body_off + 8, s.mem_size // 4096 + 5)
    out["pfn-outside-memory"] = bytes(b)
    b = bytearray(data)
    end = s.of_type("CHECKPOINT_END")[0]
    out["no-checkpoint"] = data[:s.header_len] + data[end.off + 8 + 40:]
    out["empty"] = b""
    return out


MUTATIONS = ["truncated@5", "truncated@30", "truncated@hdr", "truncated@hdr+20", "truncated@pages",
             "truncated@half", "truncated@-48", "truncated@-1", "flipped-page-byte",
             "flipped-byte-large-batch", "magic", "version", "absurd-length", "pfn-outside-memory",
             "no-checkpoint", "empty"]


@pytest.mark.parametrize("which", MUTATIONS)
def test_restore_rejects_bad_snapshot(good_snapshot, doppel_bin, tmp_path, which):
    data = _mutations(good_snapshot)[which]
    msg = _restore_bytes(doppel_bin, tmp_path, data)
    if which == "magic":
        assert "magic" in msg
    if which == "version":
        assert "version" in msg
    if which == "absurd-length":
        assert "length" in msg
    if which.startswith("truncated"):
        assert "truncated" in msg or "EOF" in msg, msg


def test_restore_good_snapshot_runs(good_snapshot, doppel_bin, tmp_path, vm):
    f = tmp_path / "good.snap"
    f.write_bytes(good_snapshot)
    w = restored(vm, f, "g", "64M")
    w.wait_ctl()
    assert all(d["bad"] == 0 for d in wait_dirty(w, 2))


@pytest.mark.parametrize("extra,word", [(["--mem", "128M"], "differ"), (["--vcpus", "2"], "differ")])
def test_restore_mismatched_shape(good_snapshot, doppel_bin, tmp_path, extra, word):
    assert word in _restore_bytes(doppel_bin, tmp_path, good_snapshot, *extra)


# ---- a KV guest keeps its keys ------------------------------------------------------------------------

@pytest.mark.needs_root
def test_kv_guest_keeps_keys(topology, doppel_bin, guest_elf, kv_bin, tmp_path):
    net = ["--net", "tap=tapA0,bridge=br0,mac=52:54:00:12:34:56"]

    def kv(*args):
        return topology.run(topology.client, [kv_bin, "10.0.0.10", *args])

    v = VM(doppel_bin, str(tmp_path), name="kv", kernel=guest_elf, cmdline="work=kv ip=10.0.0.10/24",
           extra=net, netns=topology.hostA)
    try:
        v.wait_ctl()
        wait_for(lambda: kv("SET", "k", "v").returncode == 0, 30, what="kv guest answering SET")
        assert kv("SET", "k2", "v2").returncode == 0
        snap = tmp_path / "kv.snap"
        r = run(doppel_bin, "snapshot", "kv", str(snap), "--control", v.control, "--stop")
        assert r.returncode == 0, r.stderr
        v.wait(15)
    finally:
        v.close()
    # Same host namespace: the tap name is free again now that the first process has exited.
    w = VM(doppel_bin, str(tmp_path), name="kv2", kernel=None, cmdline=None,
           extra=["--restore", str(snap)] + net, netns=topology.hostA)
    try:
        w.wait_ctl()
        r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(kv("GET", "k")), 30,
                     what="kv GET after restore")
        assert r.stdout.strip() == "v", r.stdout
        r = kv("GET", "k2")
        assert r.returncode == 0 and r.stdout.strip() == "v2", (r.stdout, r.stderr)
    finally:
        w.close()


def test_snapshot_under_rx_flood_restores_a_working_nic(topology, doppel_bin, guest_elf, kv_bin, tmp_path):
    # issue 10 defect 7 (snapshots): tap RX kept being delivered into the rings while the snapshot
    # captured state after its final dirty sync, so a restore could get virtio-net indices that
    # disagree with the ring pages (the guest's network then stops). A UDP flood runs through a
    # snapshot --stop; the restored guest must still answer ping and a full KV load.
    import sys
    from test_migrate import UDP_FLOOD
    t = topology
    net = ["--net", "tap=tapF0,bridge=br0,mac=52:54:00:12:34:56"]

    def kv(*args):
        return t.run(t.client, [kv_bin, "10.0.0.10", *args])

    v = VM(doppel_bin, str(tmp_path), name="fl", kernel=guest_elf, cmdline="work=kv ip=10.0.0.10/24",
           extra=net, netns=t.hostA)
    try:
        v.wait_ctl()
        wait_for(lambda: kv("SET", "k", "7").returncode == 0, 30, what="kv guest answering SET")
        flood = t.popen(t.client, [sys.executable, "-c", UDP_FLOOD, "10.0.0.10", "6"], stdout=subprocess.PIPE,
                        text=True)
        time.sleep(1.5)
        snap = tmp_path / "fl.snap"
        r = run(doppel_bin, "snapshot", "fl", str(snap), "--control", v.control, "--stop")
        assert r.returncode == 0, r.stderr
        v.wait(15)
        sent, _ = flood.communicate(timeout=30)
        assert int(sent) > 1000, sent
    finally:
        v.close()
    w = VM(doppel_bin, str(tmp_path), name="fl2", kernel=None, cmdline=None,
           extra=["--restore", str(snap)] + net, netns=t.hostA)
    try:
        w.wait_ctl()
        r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(kv("GET", "k")), 30,
                     what="kv GET after restore")
        assert r.stdout.strip() == "7", r.stdout
        load = t.run(t.client, [kv_bin, "10.0.0.10", "--load", "300", "--rate", "300", "--cmd", "INCR",
                                "--key", "n", "--json"])
        res = json.loads(load.stdout.strip().splitlines()[-1])
        assert load.returncode == 0 and res["acked"] == 300 and res["unacked"] == 0, res
    finally:
        w.close()
