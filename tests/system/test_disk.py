"""test_disk.py — virtio-blk with real VMs: the work=disk oracle under doppel and QEMU microvm, the disk
contents after a clean stop, host I/O errors reaching the guest as IOERR, bad --disk options, read-only
disks, and commands that cannot carry a disk yet refusing."""
import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from vmproc import wait_for

pytestmark = pytest.mark.needs_kvm

QEMU = shutil.which("qemu-system-x86_64")
REC = 4096
MAGIC = 0x315244534B4C5044
M64 = (1 << 64) - 1
LINE = re.compile(r"^disk: seq=(\d+) rate=(\d+) bad=(\d+) ioerr=(\d+)$", re.M)
FINAL = re.compile(r"^disk: final seq=(\d+) run=([0-9a-f]+) slots=(\d+) bad=(\d+) ioerr=(\d+)$", re.M)


def make_image(path, size=64 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def disk_lines(out):
    return [dict(seq=int(a), rate=int(b), bad=int(c), ioerr=int(d)) for a, b, c, d in LINE.findall(out)]


def rec_ok(buf, run, seq, nslots=None):
    """buf is record `seq` of `run` — or, with nslots, a later record of the same slot."""
    w = struct.unpack("<512Q", buf)
    if w[0] != MAGIC or w[1] != run:
        return False
    if w[2] != seq and (nslots is None or w[2] < seq or (w[2] - seq) % nslots):
        return False
    h = 0xCBF29CE484222325
    for i, x in enumerate(w):
        h = ((h ^ (0 if i == 3 else x)) * 0x100000001B3) & M64
    return h == w[3]


def check_image(path, seq, run, nslots, newer_ok=False):
    """What the guest's memory says it wrote (records 0..seq-1 of run, slot = seq % nslots) is what the
    image holds; no record of this run from the future. newer_ok: seq is a lower bound (the guest went
    on writing after it printed it). Returns a list of problems."""
    bad = []
    with open(path, "rb") as f:
        data = f.read(nslots * REC)
    for s in range(nslots):
        buf = data[s * REC:(s + 1) * REC]
        if s < seq:
            last = s + (seq - 1 - s) // nslots * nslots
            if not rec_ok(buf, run, last, nslots if newer_ok else None):
                bad.append((s, last, struct.unpack_from("<3Q", buf)))
        else:
            m, r, q = struct.unpack_from("<3Q", buf)
            if m == MAGIC and r == run and q >= seq and not newer_ok:
                bad.append((s, "future", q))
    return bad


def final(out):
    m = FINAL.search(out)
    assert m, out[-2000:]
    return dict(seq=int(m[1]), run=int(m[2], 16), slots=int(m[3]), bad=int(m[4]), ioerr=int(m[5]))


def run_cli(doppel_bin, *args, timeout=30):
    return subprocess.run([doppel_bin, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flush", [0, 1])
def test_oracle_clean_under_doppel(vm, tmp_path, flush):
    img = make_image(tmp_path / "d.img")
    v = vm(cmdline=f"work=disk dws=4M dflush={flush} pi=300 secs=3", extra=["--disk", f"path={img},id=d0"])
    assert v.wait(40) == 0, v.stderr()
    out = v.output()
    assert re.search(r"^virtio: blk at 0xfeb00e00 v2 sectors=131072 ro=0 flush=1 queue=\d+$", out, re.M), out
    lines = disk_lines(out)
    assert len(lines) >= 4, out
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), out
    seqs = [l["seq"] for l in lines]
    assert seqs == sorted(seqs) and seqs[-1] > seqs[0] > 0, out
    f = final(out)
    assert f["bad"] == 0 and f["slots"] == 1024 and f["seq"] >= seqs[-1]
    # The disk after the guest's clean exit holds exactly what its last records say.
    assert check_image(img, f["seq"], f["run"], f["slots"]) == []


def test_clean_stop_keeps_every_reported_record(vm, doppel_bin, tmp_path):
    img = make_image(tmp_path / "d.img")
    v = vm(cmdline="work=disk dws=4M pi=200", extra=["--disk", f"path={img}"])
    v.wait_ctl()
    wait_for(lambda: len(disk_lines(v.output())) >= 3, 30, what="3 disk lines")
    r = run_cli(doppel_bin, "stop", v.name, "--control", v.control)
    assert r.returncode == 0, r.stderr
    assert v.wait(20) == 0
    out = v.output()
    last = disk_lines(out)[-1]
    run = int(re.search(r"^disk: ring=\d+K slots=1024 run=([0-9a-f]+)", out, re.M)[1], 16)
    # Records up to the last printed seq are all there; later ones (written after the print) may be.
    problems = check_image(img, last["seq"], run, 1024, newer_ok=True)
    assert problems == [], problems[:5]


def qemu_boot(img, cmdline, modern):
    accel = ["-accel", "kvm"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else []
    cmd = [QEMU, "-M", "microvm,acpi=off", *accel, "-accel", "tcg", "-m", "256M", "-nodefaults",
           "-no-user-config", "-display", "none", "-serial", "stdio",
           "-device", "isa-debug-exit,iobase=0x501,iosize=2",
           "-drive", f"file={img},format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0"]
    if modern:
        cmd += ["-global", "virtio-mmio.force-legacy=false"]
    cmd += ["-kernel", os.environ.get("GUEST_ELF"), "-append", cmdline]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
    return p.returncode, p.stdout.decode(errors="replace").replace("\r", "")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (optional cross-check)")
@pytest.mark.parametrize("modern", [False, True])
def test_same_guest_under_qemu(guest_elf, tmp_path, modern, monkeypatch):
    monkeypatch.setenv("GUEST_ELF", guest_elf)
    img = make_image(tmp_path / "q.img")
    rc, out = qemu_boot(img, "work=disk dws=4M dflush=1 pi=300 secs=3", modern)
    assert rc == 1, out  # guest status 0
    assert re.search(r"^virtio: blk at 0xfeb00e00 %s " % ("v2" if modern else "legacy v1"), out, re.M), out
    lines = disk_lines(out)
    assert len(lines) >= 4 and all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), out
    f = final(out)
    assert check_image(img, f["seq"], f["run"], f["slots"]) == []


@pytest.fixture
def full_tmpfs(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True)
    assert r.returncode == 0, r.stderr
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_host_io_error_reaches_guest_as_ioerr(vm, doppel_bin, full_tmpfs):
    img = make_image(full_tmpfs / "d.img", 16 << 20)  # sparse: 16M image on a 1M tmpfs
    v = vm(cmdline="work=disk dws=8M pi=200", extra=["--disk", f"path={img}"])
    v.wait_ctl()
    v.wait_output(r"disk: error: write seq \d+ status=IOERR", 30)
    wait_for(lambda: any(l["ioerr"] > 0 for l in disk_lines(v.output())), 20, what="ioerr count")
    n = len(disk_lines(v.output()))
    wait_for(lambda: len(disk_lines(v.output())) >= n + 3, 20, what="3 more disk lines")
    assert v.proc.poll() is None, v.stderr()  # doppel keeps running
    assert v.ctl("status")["state"] == "running"
    lines = disk_lines(v.output())
    assert all(l["bad"] == 0 for l in lines), v.output()[-2000:]  # failed writes are not counted
    r = run_cli(doppel_bin, "stop", v.name, "--control", v.control)
    assert r.returncode == 0 and v.wait(20) == 0


def one_line_error(stderr):
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("spec,expect", [
    ("", "empty option"),
    ("file=/tmp/x", "unknown key 'file'"),
    ("readonly", "path= is required"),
    ("path=/nonexistent/dir/x.img", "No such file"),
    ("path={tmp}", "Is a directory"),
    ("path=/dev/null", "not a regular file or block device"),
    ("path={img},id=waytoolongforavirtioblkid", "bad id"),
    ("path={img},path={img}", "'path' given twice"),
    ("path={empty}", "smaller than one 512-byte sector"),
])
def test_bad_disk_options_one_line(doppel_bin, guest_elf, tmp_path, spec, expect):
    img = make_image(tmp_path / "d.img", 1 << 20)
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    spec = spec.format(tmp=tmp_path, img=img, empty=empty)
    r = run_cli(doppel_bin, "run", "--kernel", guest_elf, "--serial", "none", "--control",
                str(tmp_path / "c.sock"), "--disk", spec, "--cmdline", "work=exit")
    assert r.returncode != 0
    line = one_line_error(r.stderr)
    assert line.startswith("doppel run: ") and expect in line, line


def test_same_image_twice_is_refused(vm, doppel_bin, guest_elf, tmp_path):
    img = make_image(tmp_path / "d.img", 1 << 20)
    v = vm(cmdline="work=idle", extra=["--disk", f"path={img}"])
    v.wait_ctl()
    r = run_cli(doppel_bin, "run", "--kernel", guest_elf, "--serial", "none", "--name", "other", "--control",
                str(tmp_path / "o.sock"), "--disk", f"path={img}", "--cmdline", "work=exit")
    assert "in use by another process" in one_line_error(r.stderr)
    # a second read-only user is refused too while a writer holds it
    r = run_cli(doppel_bin, "run", "--kernel", guest_elf, "--serial", "none", "--name", "other", "--control",
                str(tmp_path / "o.sock"), "--disk", f"path={img},readonly", "--cmdline", "work=exit")
    assert r.returncode != 0


def test_readonly_disk(vm, tmp_path):
    img = make_image(tmp_path / "d.img", 1 << 20)
    st = tmp_path / "exit-status"
    v = vm(cmdline="work=disk dws=64K", extra=["--disk", f"path={img},readonly", "--exit-status-file", str(st)])
    assert v.wait(30) == 6  # doppel run: the guest exited nonzero; its status in the file
    assert st.read_text() == "2\n"
    out = v.output()
    assert re.search(r"^virtio: blk at 0x\w+ v2 sectors=2048 ro=1 ", out, re.M), out
    assert "disk: error: the disk is read-only" in out


def test_two_disks_and_a_net_free_layout(vm, tmp_path):
    a = make_image(tmp_path / "a.img", 8 << 20)
    b = make_image(tmp_path / "b.img", 8 << 20)
    v = vm(cmdline="work=disk dws=1M pi=200 secs=1", extra=["--disk", f"path={a}", "--disk", f"path={b}"])
    assert v.wait(30) == 0, v.stderr()
    out = v.output()
    assert "virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11" in out, out
    assert all(l["bad"] == 0 for l in disk_lines(out))


def test_snapshot_migrate_protect_refuse_a_vm_with_disks(vm, doppel_bin, tmp_path):
    img = make_image(tmp_path / "d.img", 8 << 20)
    v = vm(cmdline="work=disk dws=1M pi=200", extra=["--disk", f"path={img}"])
    v.wait_ctl()
    v.wait_output(r"disk: seq=\d+", 20)
    r = run_cli(doppel_bin, "snapshot", v.name, str(tmp_path / "s"), "--control", v.control)
    assert "not supported for a VM with --disk yet" in one_line_error(r.stderr)
    assert not (tmp_path / "s").exists()
    for cmd in ("protect", "migrate"):
        rep = v.ctl(cmd)
        assert rep.get("ok") is False and "--disk" in rep.get("error", ""), rep
    assert v.ctl("status")["state"] == "running"
    time.sleep(0.5)
    assert all(l["bad"] == 0 for l in disk_lines(v.output()))


def test_pause_resume_under_disk_load(vm, doppel_bin, tmp_path):
    """Operator pauses close the DMA gate while requests are in flight: completions are held and
    delivered after resume; the oracle stays clean and keeps going."""
    img = make_image(tmp_path / "d.img", 8 << 20)
    v = vm(cmdline="work=disk dws=2M pi=100", extra=["--disk", f"path={img}"])
    v.wait_ctl()
    v.wait_output(r"disk: seq=\d+", 20)
    for _ in range(10):
        assert v.ctl("pause").get("state") == "paused"
        time.sleep(0.05)
        assert v.ctl("resume").get("state") == "running"
        time.sleep(0.05)
    n = len(disk_lines(v.output()))
    wait_for(lambda: len(disk_lines(v.output())) >= n + 3, 20, what="3 more disk lines")
    lines = disk_lines(v.output())
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), v.output()[-2000:]
    assert lines[-1]["seq"] > lines[0]["seq"]



@pytest.fixture
def loopdev(tmp_path):
    if not shutil.which("losetup"):
        pytest.skip("losetup not installed")
    backing = make_image(tmp_path / "loop.img", 4 << 20)
    r = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    yield r.stdout.strip()
    subprocess.run(["losetup", "-d", r.stdout.strip()], capture_output=True)


def test_block_device_backend(vm, loopdev):
    v = vm(cmdline="work=disk dws=2M dflush=1 pi=200 secs=2", extra=["--disk", f"path={loopdev},id=loop"])
    assert v.wait(30) == 0, v.stderr()
    out = v.output()
    assert re.search(r"^virtio: blk at 0x\w+ v2 sectors=8192 ", out, re.M), out
    lines = disk_lines(out)
    assert lines and all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), out
    f = final(out)
    assert check_image(loopdev, f["seq"], f["run"], f["slots"]) == []


@pytest.fixture
def dm_error(tmp_path):
    """A device-mapper device whose first half is a loop device over a file and second half the error
    target (every I/O there fails with EIO)."""
    if not shutil.which("dmsetup") or not shutil.which("losetup"):
        pytest.skip("dmsetup/losetup not installed (the full-tmpfs test covers host I/O errors)")
    backing = make_image(tmp_path / "dm.img", 4 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True, text=True)
    if loop.returncode:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    loopdev = loop.stdout.strip()
    name = f"doppel-err-{os.getpid()}"
    table = f"0 8192 linear {loopdev} 0\n8192 8192 error\n"
    r = subprocess.run(["dmsetup", "create", name], input=table, capture_output=True, text=True)
    if r.returncode:
        subprocess.run(["losetup", "-d", loopdev])
        pytest.skip(f"dmsetup create failed: {r.stderr.strip()}")
    yield f"/dev/mapper/{name}"
    subprocess.run(["dmsetup", "remove", "--retry", name], capture_output=True)
    subprocess.run(["losetup", "-d", loopdev], capture_output=True)


def test_block_device_with_error_target(vm, doppel_bin, dm_error):
    # A ring over the good half only: a block device backend, clean.
    v = vm(name="dmgood", cmdline="work=disk dws=2M pi=200 secs=2", extra=["--disk", f"path={dm_error}"])
    assert v.wait(30) == 0, v.stderr()
    out = v.output()
    assert re.search(r"^virtio: blk at 0x\w+ v2 sectors=16384 ", out, re.M), out
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in disk_lines(out)), out
    # A ring reaching into the error half: EIO becomes IOERR for those requests, doppel keeps running.
    v = vm(name="dmbad", cmdline="work=disk dws=8M pi=200", extra=["--disk", f"path={dm_error}"])
    v.wait_ctl()
    v.wait_output(r"disk: error: (write seq|read slot) \d+ status=IOERR", 30)
    n = len(disk_lines(v.output()))
    wait_for(lambda: len(disk_lines(v.output())) >= n + 2, 20, what="2 more disk lines")
    assert v.ctl("status")["state"] == "running"
    assert all(l["bad"] == 0 for l in disk_lines(v.output())), v.output()[-2000:]
    r = run_cli(doppel_bin, "stop", v.name, "--control", v.control)
    assert r.returncode == 0 and v.wait(20) == 0
