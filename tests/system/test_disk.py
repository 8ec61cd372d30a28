"""test_disk.py — virtio-blk with real VMs: the work=disk oracle under doppel and QEMU microvm, the disk
contents after a clean stop, host I/O errors reaching the guest as IOERR, bad --disk options, read-only
disks, commands that cannot carry a disk yet refusing, and Remus with disks: the primary killed under
write load (the survivor's oracle and image equal its memory), a stream cut mid-epoch, re-protecting
with only the differing blocks, and a standby refusing a disk that does not match."""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
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


def incoming(vm, name, img, port, disk_opts=""):
    v = vm(name=name, kernel=None, cmdline=None, mem="128M",
           extra=["--disk", f"path={img}{disk_opts}", "--incoming", f"127.0.0.1:{port}"])
    v.wait_ctl()

    def ready():
        try:
            return v.ctl("status")["migration"]["state"] == "waiting"
        except (OSError, ValueError, KeyError):  # the socket answers once RAM is prefaulted
            return False
    wait_for(ready, 20, what="destination ready")
    return v


def test_migrate_with_a_disk_under_write_load(vm, doppel_bin, tmp_path):
    """Non-shared storage: the destination has its own (empty) image; every block is pre-copied, the
    blocks written meanwhile go in the stop-and-copy epoch; the guest goes on at the destination with
    bad=0 and, after a clean stop, the destination's image holds what its memory says it wrote."""
    src = primary(vm, "src", make_image(tmp_path / "a.img"), ",id=data")
    port = free_port()
    dimg = make_image(tmp_path / "b.img")
    dst = incoming(vm, "dst", dimg, port, ",id=data")
    wait_for(lambda: disk_lines(src.output())[-1]["seq"] > 1000, 20, what="1000 records")
    r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", "--json",
                timeout=120)
    assert r.returncode == 0, r.stderr
    assert src.wait(20) == 0
    before = disk_lines(src.output())[-1]["seq"]
    wait_for(lambda: len(disk_lines(dst.output())) >= 3 and disk_lines(dst.output())[-1]["seq"] > before, 20,
             what="destination disk lines")
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in disk_lines(dst.output())), dst.output()[-2000:]
    assert all(l["bad"] == 0 for l in disk_lines(src.output()))
    r = run_cli(doppel_bin, "stop", dst.name, "--control", dst.control)
    assert r.returncode == 0 and dst.wait(20) == 0
    last = disk_lines(dst.output())[-1]["seq"]
    assert check_image(dimg, last, run_id(src.output()), 1024, newer_ok=True) == []


@pytest.mark.parametrize("dst_size,dst_opts,expect", [
    (32 << 20, ",id=data", "disk0 is 67108864 bytes on the source, 33554432 here"),
    (64 << 20, ",id=other", "disk0 has id 'data' on the source, 'other' here"),
])
def test_migrate_refused_by_a_destination_disk_that_does_not_match(vm, doppel_bin, tmp_path, dst_size, dst_opts,
                                                                  expect):
    src = primary(vm, "src", make_image(tmp_path / "a.img"), ",id=data")
    port = free_port()
    dst = incoming(vm, "dst", make_image(tmp_path / "b.img", dst_size), port, dst_opts)
    r = run_cli(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", timeout=120)
    assert r.returncode != 0 and expect in r.stderr, r.stderr
    n = len(disk_lines(src.output()))
    wait_for(lambda: len(disk_lines(src.output())) >= n + 2, 10, what="the source's guest to go on")
    assert all(l["bad"] == 0 for l in disk_lines(src.output()))
    assert dst.wait(20) == 1  # it refused: discarded, never ran (status raced its exit: gone or going)


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


# ---- Remus with disks ----------------------------------------------------------------------------

RING = "4M"
RING_BLOCKS = (4 << 20) // (64 << 10)  # the blocks a 4M ring covers: all a sync may find different


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standby(vm, name, img, port, disk_opts=""):
    v = vm(name=name, kernel=None, cmdline=None, mem="128M",
           extra=["--disk", f"path={img}{disk_opts}", "--standby", "--listen", f"127.0.0.1:{port}"])
    v.wait_ctl()
    return v


def primary(vm, name, img, disk_opts=""):
    v = vm(name=name, cmdline=f"work=disk dws={RING} pi=200", mem="128M",
           extra=["--disk", f"path={img}{disk_opts}"])
    v.wait_output(r"disk: seq=\d+", 20)
    return v


def protect(doppel_bin, v, port, check=True):
    r = run_cli(doppel_bin, "protect", v.name, "--peer", f"127.0.0.1:{port}", "--control", v.control,
                timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def rstatus(v):
    return v.ctl("status")["remus"]


def run_id(out):
    return int(re.search(r"^disk: ring=\d+K slots=\d+ run=([0-9a-f]+)", out, re.M)[1], 16)


def took_over_clean(sb, min_seq):
    """The standby took over and its guest runs on from its memory: a full ring pass (8 steps at
    this ring size; a line comes every 200 ms) reports bad=0, beyond the seq its primary printed."""
    wait_for(lambda: rstatus(sb)["role"] == "unprotected", 10, what="standby takeover")
    wait_for(lambda: len(disk_lines(sb.output())) >= 2 and disk_lines(sb.output())[-1]["seq"] > min_seq, 20,
             what=f"the survivor's disk lines past seq {min_seq}")
    lines = disk_lines(sb.output())
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), sb.output()[-2000:]
    return lines[-1]["seq"]


def test_remus_disk_kill_primary_iterations(vm, doppel_bin, tmp_path, rng):
    """The primary is SIGKILLed under heavy guest writes 20 times (random moments, printed; mostly in
    the middle of an epoch's transfer); each survivor's oracle reports bad=0 (its disk is exactly what
    its memory says it wrote) and is re-protected to a standby on the dead primary's image, which the
    initial sync brings up to date by sending only the blocks that differ."""
    imgs = [make_image(tmp_path / "a.img"), make_image(tmp_path / "b.img")]
    pr = primary(vm, "p0", imgs[0], ",id=data")
    run = run_id(pr.output())
    seq = 0
    for i in range(20):
        port = free_port()
        sb = standby(vm, f"s{i}", imgs[(i + 1) % 2], port, ",id=data")
        protect(doppel_bin, pr, port)
        d = rstatus(pr)["disk"]
        assert d["disks"] == 1 and d["mode"] == "log" and d["sync_blocks"] == 1024 and d["sync_done"] == 1024
        assert d["sync_sent"] <= RING_BLOCKS, d  # only the ring's blocks can differ
        t = rng.uniform(0.2, 1.5)
        print(f"iteration {i}: kill after {t:.3f} s", flush=True)
        time.sleep(t)
        assert rstatus(sb)["disk"]["verified"] == 1
        before = disk_lines(pr.output())[-1]["seq"]
        pr.kill()
        pr.proc.wait(10)
        seq = took_over_clean(sb, before)
        pr.close()
        pr = sb
    r = run_cli(doppel_bin, "stop", pr.name, "--control", pr.control)
    assert r.returncode == 0 and pr.wait(20) == 0
    last = disk_lines(pr.output())[-1]["seq"]
    assert last >= seq
    # the last survivor's image after a clean stop holds every record its memory says it wrote
    assert check_image(imgs[20 % 2], last, run, 1024, newer_ok=True) == []


class CutProxy:
    """TCP proxy primary -> standby that cuts the primary's stream in the middle of a chunk once asked."""

    def __init__(self, target_port):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.target = target_port
        self.cut = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, src, dst, forward):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if forward and self.cut.is_set() and len(b) >= 64:
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


def test_remus_disk_stream_cut_mid_epoch(vm, doppel_bin, tmp_path):
    """The stream stops half-way through a chunk of an epoch full of DISK_WRITE records: the standby
    applies none of that epoch (memory or disk) and takes over on the last whole one, bad=0."""
    pr = primary(vm, "pr", make_image(tmp_path / "a.img"))
    port = free_port()
    sb = standby(vm, "sb", make_image(tmp_path / "b.img"), port)
    px = CutProxy(port)
    protect(doppel_bin, pr, px.port)
    wait_for(lambda: rstatus(pr)["disk"]["logged_writes"] > 2000, 20, what="2000 logged writes")
    before = disk_lines(pr.output())[-1]["seq"]
    px.cut.set()
    assert px.done.wait(5)
    took_over_clean(sb, before)
    # beyond the initial sync (at most the ring's 64 blocks), epochs' writes were applied
    assert rstatus(sb)["disk"]["applied_writes"] > RING_BLOCKS
    wait_for(lambda: rstatus(pr)["role"] == "unprotected", 5, what="the primary to drop the standby")
    assert all(l["bad"] == 0 for l in disk_lines(pr.output()))


@pytest.mark.parametrize("what,sb_size,sb_opts,expect", [
    ("size", 32 << 20, ",id=data", "disk0 is 67108864 bytes on the primary, 33554432 here"),
    ("id", 64 << 20, ",id=other", "disk0 has id 'data' on the primary, 'other' here"),
    ("readonly", 64 << 20, ",id=data,readonly", "disk0 is read-write on the primary, read-only here"),
])
def test_standby_refuses_a_disk_that_does_not_match(vm, doppel_bin, tmp_path, what, sb_size, sb_opts, expect):
    pr = primary(vm, "pr", make_image(tmp_path / "a.img"), ",id=data")
    port = free_port()
    sb = standby(vm, "sb", make_image(tmp_path / "b.img", sb_size), port, sb_opts)
    r = protect(doppel_bin, pr, port, check=False)
    assert r.returncode != 0 and "the standby refused this VM" in r.stderr, (what, r.stderr)
    s = rstatus(sb)
    assert s["last_error"] == f"rejected primary: {expect}", s
    assert s["have_state"] is False and s["disk"]["verified"] == 0 and s["disk"]["applied_writes"] == 0
    assert rstatus(pr)["role"] == "unprotected"
    n = len(disk_lines(pr.output()))
    wait_for(lambda: len(disk_lines(pr.output())) >= n + 2, 10, what="the primary's guest to go on")
    assert all(l["bad"] == 0 for l in disk_lines(pr.output()))


def test_standby_without_the_disk_refuses(vm, doppel_bin, tmp_path):
    pr = primary(vm, "pr", make_image(tmp_path / "a.img"))
    port = free_port()
    sb = vm(name="sb", kernel=None, cmdline=None, mem="128M", extra=["--standby", "--listen", f"127.0.0.1:{port}"])
    sb.wait_ctl()
    r = protect(doppel_bin, pr, port, check=False)
    assert r.returncode != 0 and "the standby refused this VM" in r.stderr, r.stderr
    assert rstatus(sb)["last_error"] == "rejected primary: the primary has disk0, this standby not"


# ---- snapshots with disks ----------------------------------------------------------------------

def snapshot(doppel_bin, v, path, *extra):
    r = run_cli(doppel_bin, "snapshot", v.name, str(path), "--control", v.control, *extra, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def restored(vm, name, snap, img, disk_opts=""):
    return vm(name=name, kernel=None, cmdline=None, mem="128M",
              extra=["--restore", str(snap), "--disk", f"path={img}{disk_opts}"])


def resumes_clean(v, min_seq):
    """A restored guest goes on from its memory: its disk lines (a full ring pass each) stay at bad=0
    and its seq moves past min_seq (what it had printed before the snapshot)."""
    wait_for(lambda: len(disk_lines(v.output())) >= 3 and disk_lines(v.output())[-1]["seq"] > min_seq, 20,
             what=f"restored disk lines past seq {min_seq}")
    assert all(l["bad"] == 0 and l["ioerr"] == 0 for l in disk_lines(v.output())), v.output()[-2000:]


def test_snapshot_clones_the_disk_and_restore_checks_it(vm, doppel_bin, tmp_path):
    """Default: the image is copied at the paused point next to the snapshot (FILE.disk0); restoring
    with that copy goes on with bad=0; the live image (written on after the snapshot) is refused."""
    img = make_image(tmp_path / "d.img")
    v = primary(vm, "a", img, ",id=data")
    wait_for(lambda: disk_lines(v.output())[-1]["seq"] > 2000, 20, what="2000 records")
    snap = tmp_path / "s1"
    snapshot(doppel_bin, v, snap, "--stop")
    assert v.wait(20) == 0
    before = disk_lines(v.output())[-1]["seq"]
    clone = tmp_path / "s1.disk0"
    assert clone.stat().st_size == 64 << 20
    # (with --stop the live image still equals the clone) one byte written after the snapshot: refused
    with open(img, "r+b") as f:
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0xff]))
    r = run_cli(doppel_bin, "run", "--restore", str(snap), "--serial", "none", "--control",
                str(tmp_path / "x.sock"), "--disk", f"path={img},id=data")
    assert r.returncode != 0
    assert one_line_error(r.stderr) == (f"doppel run: snapshot {snap}: disk0 does not match the snapshot (its "
                                        f"contents differ from the copy made at the snapshot, {snap}.disk0)")
    r = run_cli(doppel_bin, "run", "--restore", str(snap), "--serial", "none", "--control",
                str(tmp_path / "x.sock"), "--disk", f"path={clone},id=other")
    assert one_line_error(r.stderr) == (f"doppel run: snapshot {snap}: disk0 has id 'data' in the snapshot, "
                                        "'other' here")
    r = run_cli(doppel_bin, "run", "--restore", str(snap), "--serial", "none", "--control",
                str(tmp_path / "x.sock"))
    assert one_line_error(r.stderr) == f"doppel run: snapshot {snap}: the snapshot has disk0, this VM not"
    w = restored(vm, "b", snap, clone, ",id=data")
    resumes_clean(w, before)


def test_snapshot_with_disks_and_incremental(vm, doppel_bin, tmp_path):
    """--with-disks: the blocks go into the snapshot; an incremental one carries only the blocks written
    since its base (smaller than the full one); restoring the chain onto an empty image goes on bad=0."""
    v = primary(vm, "a", make_image(tmp_path / "d.img"))
    wait_for(lambda: disk_lines(v.output())[-1]["seq"] > 1000, 20, what="1000 records")
    full, inc = tmp_path / "full", tmp_path / "inc"
    snapshot(doppel_bin, v, full, "--with-disks")
    assert not (tmp_path / "full.disk0").exists()
    n = disk_lines(v.output())[-1]["seq"]
    wait_for(lambda: disk_lines(v.output())[-1]["seq"] > n + 500, 20, what="500 more records")
    snapshot(doppel_bin, v, inc, "--with-disks", "--incremental-from", str(full), "--stop")
    assert v.wait(20) == 0
    before = disk_lines(v.output())[-1]["seq"]
    # a 4M ring: the full snapshot carries it (plus memory); the incremental one at most the ring again
    assert full.stat().st_size > 4 << 20
    w = restored(vm, "b", inc, make_image(tmp_path / "empty.img"))
    resumes_clean(w, before)
    # the base alone restores too (an older point), onto another empty image
    x = restored(vm, "c", full, make_image(tmp_path / "empty2.img"))
    resumes_clean(x, 0)
    # mixing the two ways in one chain is refused
    y = primary(vm, "d", make_image(tmp_path / "e.img"))
    snapshot(doppel_bin, y, tmp_path / "f1")
    r = run_cli(doppel_bin, "snapshot", y.name, str(tmp_path / "f2"), "--with-disks", "--incremental-from",
                str(tmp_path / "f1"), "--control", y.control)
    assert "an incremental snapshot must carry its disks as its base" in one_line_error(r.stderr)
