"""test_files.py — files doppel creates: the control socket is born 0660 (no chmod after bind) and
serves only root, the VM's user or --control-group members (SO_PEERCRED, checked as `nobody` with
setpriv); snapshots are 0600 and their temporary file is created exclusively under an unpredictable
name (a symlink planted at the old PATH.tmp is not followed); `--serial file:` is 0600."""
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from vmproc import VM

pytestmark = pytest.mark.needs_kvm

CLIENT = ("import json,socket,sys\n"
          "s=socket.socket(socket.AF_UNIX); s.settimeout(5)\n"
          "try:\n"
          "    s.connect(sys.argv[1])\n"
          "except OSError as e:\n"
          "    print(json.dumps({'connect_error': e.errno})); sys.exit(0)\n"
          "s.settimeout(1)\n"
          "try:\n"
          "    b=s.recv(65536)  # a refused client is answered at once, before any request\n"
          "except socket.timeout:\n"
          "    b=b''\n"
          "s.settimeout(5)\n"
          "if not b:\n"
          "    s.sendall(b'{\"cmd\":\"status\"}\\n')\n"
          "while not b.endswith(b'\\n'):\n"
          "    c=s.recv(65536)\n"
          "    if not c: break\n"
          "    b+=c\n"
          "print(b.decode().strip() or '{}')\n")


def as_nobody(path, groups="--clear-groups"):
    r = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", groups, "/usr/bin/python3", "-c",
                        CLIENT, path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def open_dir():
    """A directory `nobody` can traverse (pytest's tmp_path parents are 0700)."""
    d = tempfile.mkdtemp(prefix="doppel-files-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.needs_root
def test_control_socket_mode_and_peer_check(doppel_bin, guest_elf, open_dir):
    v = VM(doppel_bin, open_dir, name="f", kernel=guest_elf, cmdline="work=idle", mem="64M")
    try:
        v.wait_ctl()
        st = os.lstat(v.control)
        assert stat.S_ISSOCK(st.st_mode) and mode(v.control) == 0o660 and st.st_uid == 0
        assert as_nobody(v.control) == {"connect_error": 13}  # EACCES from the file mode
        os.chmod(v.control, 0o666)  # the file made reachable anyway: SO_PEERCRED still refuses
        rep = as_nobody(v.control)
        assert rep["ok"] is False and "permission denied" in rep["error"], rep
        assert v.stderr().count("refused uid 65534") == 1
        assert v.ctl("status")["name"] == "f"  # root still served
    finally:
        v.close()


@pytest.mark.needs_root
def test_control_group_member_allowed(doppel_bin, guest_elf, open_dir):
    v = VM(doppel_bin, open_dir, name="g", kernel=guest_elf, cmdline="work=idle", mem="64M",
           extra=["--control-group", "nogroup"])
    try:
        v.wait_ctl()
        st = os.lstat(v.control)
        assert mode(v.control) == 0o660 and st.st_gid == 65534
        rep = as_nobody(v.control, groups="--clear-groups")
        assert rep.get("ok", True) is not False and rep["name"] == "g", rep
    finally:
        v.close()


def test_snapshot_and_serial_modes(doppel_bin, guest_elf, tmp_path):
    serial = tmp_path / "s.serial"
    serial.write_text("old\n")
    os.chmod(serial, 0o644)
    v = VM(doppel_bin, str(tmp_path), name="m", kernel=guest_elf, cmdline="work=idle", mem="64M",
           serial=str(serial))
    try:
        v.wait_ctl()
        assert mode(serial) == 0o600
        snap = tmp_path / "m.snap"
        victim = tmp_path / "victim"
        victim.write_text("untouched")
        os.symlink(victim, str(snap) + ".tmp")  # the old predictable name, planted
        r = subprocess.run([doppel_bin, "snapshot", "m", str(snap), "--control", v.control], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert victim.read_text() == "untouched" and os.path.islink(str(snap) + ".tmp")
        assert mode(snap) == 0o600 and not stat.S_ISLNK(os.lstat(snap).st_mode)
        left = [p for p in os.listdir(tmp_path) if p.startswith("m.snap.tmp.")]
        assert left == []
        with open(snap, "rb") as f:
            assert f.read(8) == b"DOPPELSR"
    finally:
        v.close()
