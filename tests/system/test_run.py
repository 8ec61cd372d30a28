"""test_run.py — `doppel run` boots the test guest: console, exit status, control socket, dirty oracle, bad input."""
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from vmproc import ctl, wait_for


def run(doppel_bin, *args, timeout=20):
    return subprocess.run([doppel_bin, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_boot_prints_banner_and_reports_guest_status(vm, tmp_path):
    st = tmp_path / "exit-status"
    v = vm(cmdline="work=exit exit=7", extra=["--exit-status-file", str(st)])
    assert v.wait() == 6  # doppel run: 6 = the guest exited nonzero; the byte is in the file
    assert st.read_text() == "7\n"
    assert "guest: booted" in v.output()
    assert "guest exited with status 7" in v.stderr()


def test_guest_exit_zero_after_seconds(vm):
    v = vm(cmdline="work=idle pi=200 secs=1")
    assert v.wait(30) == 0
    assert len(v.lines("idle:")) >= 3


def test_dirty_workload_has_no_bad_pages(vm):
    v = vm(cmdline="work=dirty ws=64M pi=250 secs=3")
    assert v.wait(40) == 0
    d = v.dirty()
    assert len(d) >= 6, v.output()
    assert all(x["bad"] == 0 for x in d)
    assert d[-1]["pass"] > d[0]["pass"]
    assert all(x["rate"] > 0 for x in d[1:])


def test_two_vcpus_boot(vm):
    v = vm(cmdline="work=dirty ws=16M pi=200 secs=1", vcpus=2)
    assert v.wait(30) == 0
    assert all(x["bad"] == 0 for x in v.dirty())


def test_status_pause_resume_stop(vm, doppel_bin):
    v = vm(cmdline="work=dirty ws=16M pi=100")
    v.wait_ctl()
    v.wait_output(r"dirty: pass=\d+")
    st = v.ctl("status")
    assert st["ok"] and st["state"] == "running" and st["vcpus"] == 1

    # pause: the guest makes no progress while paused
    r = run(doppel_bin, "pause", "vm", "--control", v.control)
    assert r.returncode == 0, r.stderr
    assert v.ctl("status")["state"] == "paused"
    time.sleep(0.15)  # let the last line already in flight land
    before = v.output()
    time.sleep(0.6)
    assert v.output() == before, "guest progressed while paused"

    # resume: progress continues, the pass counter keeps counting up
    last_pass = v.dirty()[-1]["pass"]
    r = run(doppel_bin, "resume", "vm", "--control", v.control, "--json")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: v.dirty()[-1]["pass"] > last_pass, 10, what="progress after resume")

    st = json.loads(run(doppel_bin, "status", "vm", "--control", v.control, "--json").stdout)
    assert st["state"] == "running"
    assert st["pause"]["count"] >= 1 and st["pause"]["last_us"] > 0

    r = run(doppel_bin, "stop", "vm", "--control", v.control)
    assert r.returncode == 0, r.stderr
    assert v.wait() == 0
    assert not os.path.exists(v.control), "control socket left behind"
    assert all(x["bad"] == 0 for x in v.dirty())


def test_sigterm_stops_cleanly(vm):
    v = vm(cmdline="work=idle pi=100")
    v.wait_ctl()
    v.wait_output("idle:")
    v.kill(signal.SIGTERM)
    assert v.wait() == 0
    assert not os.path.exists(v.control)


# ---- bad input -----------------------------------------------------------------------------------

def one_line_error(r, *needles):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, f"expected one error line, got: {r.stderr!r}"
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


def test_missing_kernel(doppel_bin, tmp_path):
    one_line_error(run(doppel_bin, "run", "--kernel", str(tmp_path / "nope.elf"),
                       "--control", str(tmp_path / "c.sock")), "nope.elf")


def test_non_elf_kernel(doppel_bin, tmp_path):
    p = tmp_path / "k"
    p.write_bytes(b"this is not an ELF file at all\n" * 10)
    one_line_error(run(doppel_bin, "run", "--kernel", str(p), "--control", str(tmp_path / "c.sock")),
                   "ELF")


def test_truncated_kernel(doppel_bin, guest_elf, tmp_path):
    data = open(guest_elf, "rb").read()
    # end of the loadable bytes: a cut anywhere before it must be refused (after it, only
    # debug sections are lost and the kernel is still whole)
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    load_end = max(struct.unpack_from("<Q", data, phoff + i * phentsize + 8)[0] +
                   struct.unpack_from("<Q", data, phoff + i * phentsize + 32)[0]
                   for i in range(phnum)
                   if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 1)
    for n in (0, 10, 64, 200, load_end // 2, load_end - 1):
        p = tmp_path / f"k{n}"
        p.write_bytes(data[:n])
        r = run(doppel_bin, "run", "--kernel", str(p), "--control", str(tmp_path / "c.sock"))
        one_line_error(r)


def test_elf_without_pvh_note(doppel_bin, tmp_path):
    # /bin/true is a perfectly good ELF with no PVH entry note.
    one_line_error(run(doppel_bin, "run", "--kernel", "/bin/true", "--control",
                       str(tmp_path / "c.sock")), "PVH")


def elf_with_segment(paddr, size):
    """A minimal ELF64 with a PVH note and one PT_LOAD at paddr."""
    note_desc = struct.pack("<Q", paddr)
    note = struct.pack("<III", 4, len(note_desc), 18) + b"Xen\0" + note_desc
    ehsize, phsz = 64, 56
    phoff = ehsize
    data_off = phoff + 2 * phsz
    note_off = data_off
    load_off = note_off + len(note)
    payload = b"\xf4" * 16
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7, 2, 62, 1,
                     paddr, phoff, 0, 0, ehsize, phsz, 2, 64, 0, 0)
    ph_note = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    ph_load = struct.pack("<IIQQQQQQ", 1, 5, load_off, paddr, paddr, len(payload), size, 0x1000)
    return eh + ph_note + ph_load + note + payload


def test_segment_outside_guest_memory(doppel_bin, tmp_path):
    p = tmp_path / "k"
    p.write_bytes(elf_with_segment(0x40000000, 0x1000))  # 1 GiB, in a 256 MiB guest
    one_line_error(run(doppel_bin, "run", "--kernel", str(p), "--mem", "256M",
                       "--control", str(tmp_path / "c.sock")), "outside guest memory")


@pytest.mark.parametrize("mem", ["0", "1", "abc", "999T", "-5M", "3M", "100G", ""])
def test_absurd_mem(doppel_bin, guest_elf, tmp_path, mem):
    one_line_error(run(doppel_bin, "run", "--kernel", guest_elf, "--mem", mem,
                       "--control", str(tmp_path / "c.sock")), "--mem")


@pytest.mark.parametrize("args", [["run", "--bogus"], ["frobnicate"], ["status"],
                                  ["run", "--vcpus", "0", "--kernel", "x"],
                                  ["run", "--vcpus", "lots", "--kernel", "x"]])
def test_unknown_flags_and_verbs(doppel_bin, args):
    r = run(doppel_bin, *args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help(doppel_bin):
    r = run(doppel_bin, "--help")
    assert r.returncode == 0 and "run" in r.stdout and "status" in r.stdout
    for verb in ("run", "status", "pause", "resume", "stop"):
        r = run(doppel_bin, verb, "--help")
        assert r.returncode == 0 and "usage" in r.stdout.lower(), verb


def test_control_socket_bad_json(vm):
    v = vm(cmdline="work=idle pi=1000")
    v.wait_ctl()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(v.control)
        f = s.makefile("rwb")
        for bad in (b"{not json\n", b"[1,2]\n", b"{\"cmd\": 5}\n", b"{}\n", b"{\"cmd\":\"nope\"}\n"):
            f.write(bad)
            f.flush()
            rep = json.loads(f.readline())
            assert rep["ok"] is False and rep["error"], bad
        f.write(b'{"cmd":"status"}\n')
        f.flush()
        assert json.loads(f.readline())["ok"] is True
    # oversized request: error reply, connection closed, VM unaffected
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(v.control)
        try:
            s.sendall(b"{\"cmd\":\"" + b"x" * (200 * 1024) + b"\"}\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while True:
                c = s.recv(4096)
                if not c:
                    break
                data += c
        except ConnectionResetError:
            pass
        if data:
            assert json.loads(data.splitlines()[0])["ok"] is False
    assert v.ctl("status")["state"] == "running"
    assert v.proc.poll() is None


def test_stale_socket_is_replaced_and_live_one_refused(vm, doppel_bin, guest_elf, tmp_path):
    path = str(tmp_path / "vm.sock")
    # a dead VM's socket: bound, never listening, owner gone
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    assert os.path.exists(path)
    v = vm(cmdline="work=idle pi=1000")
    v.wait_ctl()
    wait_for(lambda: ctl_ok(path), 10, what="VM answering on the reclaimed socket")
    # a second VM on the same socket path is refused with one clear line
    r = run(doppel_bin, "run", "--kernel", guest_elf, "--control", path)
    one_line_error(r, "in use")
    assert v.ctl("status")["ok"]


def ctl_ok(path):
    try:
        return ctl(path, {"cmd": "status"})["ok"]
    except OSError:
        return False


def test_status_of_missing_vm(doppel_bin, tmp_path):
    r = run(doppel_bin, "status", "ghost", "--control", str(tmp_path / "ghost.sock"))
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1
