"""test_config.py — `doppel run --config FILE`: the file's values, flags overriding them, every problem
of a bad file on its own line (nothing started), and a standby built from the same file."""
import json
import os
import subprocess

import pytest

from vmproc import ctl, wait_for

pytestmark = pytest.mark.needs_kvm


def write(tmp_path, cfg, name="vm.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return str(p)


def base(tmp_path, guest_elf, **kw):
    cfg = {"name": "cfgvm", "memory": "16M", "vcpus": 1, "kernel": guest_elf,
           "cmdline": "work=exit exit=7", "serial": f"file:{tmp_path}/serial",
           "control": f"{tmp_path}/cfgvm.sock"}
    cfg.update(kw)
    return cfg


def run(doppel_bin, *args, timeout=30):
    return subprocess.run([doppel_bin, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def test_config_boots_with_the_files_values(doppel_bin, guest_elf, tmp_path):
    r = run(doppel_bin, "--config", write(tmp_path, base(tmp_path, guest_elf)))
    assert r.returncode == 6 and "guest exited with status 7" in r.stderr, r.stderr  # 6: the guest's
    banner = (tmp_path / "serial").read_text().splitlines()[0]
    assert banner == 'guest: booted cmdline="work=exit exit=7" mem=15M'


def test_flags_override_the_file(doppel_bin, guest_elf, tmp_path):
    r = run(doppel_bin, "--config", write(tmp_path, base(tmp_path, guest_elf)), "--mem", "32M",
            "--cmdline", "work=exit exit=3")
    assert r.returncode == 6 and "guest exited with status 3" in r.stderr, r.stderr
    banner = (tmp_path / "serial").read_text().splitlines()[0]
    assert banner == 'guest: booted cmdline="work=exit exit=3" mem=31M'


def test_bad_file_every_problem_one_line(doppel_bin, guest_elf, tmp_path):
    cfg = base(tmp_path, guest_elf, memory="3M", vcpus=0, net=[{"tap": "a/b"}], bogus=1,
               protection={"mode": "colo"})
    path = write(tmp_path, cfg)
    r = run(doppel_bin, "--config", path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"doppel run: {path}: (top): unknown key \"bogus\"",
        f"doppel run: {path}: memory: 3145728 bytes: must be 2M..64G in 2M steps",
        f"doppel run: {path}: vcpus: 0 out of range (1..64)",
        f"doppel run: {path}: net[0].tap: bad interface name \"a/b\"",
        f"doppel run: {path}: protection.peer: missing (the standby's ADDR:PORT)",
        f"doppel run: {path}: protection.mode: \"colo\" is not one of remus",
    ]
    assert not os.path.exists(f"{tmp_path}/cfgvm.sock") and not os.path.exists(f"{tmp_path}/serial")


@pytest.mark.parametrize("text,msg", [
    ("", "(top): not valid JSON at byte 0: unexpected end of input"),
    ("{\"name\": ", "(top): not valid JSON at byte 9: unexpected end of input"),
    ("[]", "(top): expected a JSON object, got array"),
])
def test_not_json(doppel_bin, tmp_path, text, msg):
    p = tmp_path / "bad.json"
    p.write_text(text)
    r = run(doppel_bin, "--config", str(p))
    assert r.returncode == 2
    assert r.stderr == f"doppel run: {p}: {msg}\n"


def test_missing_file(doppel_bin, tmp_path):
    r = run(doppel_bin, "--config", f"{tmp_path}/nope.json")
    assert r.returncode == 2
    assert r.stderr == f"doppel run: {tmp_path}/nope.json: cannot open {tmp_path}/nope.json: No such file or directory\n"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standby_from_the_same_file(doppel_bin, guest_elf, tmp_path):
    """Both sides read one file: the standby listens on protection.peer, the primary protects to it."""
    port = free_port()
    cfg = base(tmp_path, guest_elf, memory="32M", cmdline="work=dirty ws=1M", protection={"peer": f"127.0.0.1:{port}",
                                                                            "interval_ms": 50})
    path = write(tmp_path, cfg)
    sb_sock, pr_sock = f"{tmp_path}/sb.sock", f"{tmp_path}/pr.sock"
    sb = subprocess.Popen([doppel_bin, "run", "--config", path, "--standby", "--control", sb_sock,
                           "--serial", f"file:{tmp_path}/sb.serial"], stderr=subprocess.PIPE)
    pr = None
    try:
        wait_for(lambda: os.path.exists(sb_sock), 10, what="standby control socket")
        s = ctl(sb_sock, {"cmd": "status"})
        assert s["role"] == "standby" and s["mem_bytes"] == 32 << 20, s
        pr = subprocess.Popen([doppel_bin, "run", "--config", path, "--control", pr_sock],
                              stderr=subprocess.PIPE)
        wait_for(lambda: os.path.exists(pr_sock), 10, what="primary control socket")
        r = subprocess.run([doppel_bin, "protect", "--control", pr_sock, "--peer", f"127.0.0.1:{port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert ctl(pr_sock, {"cmd": "status"})["role"] == "primary"
        wait_for(lambda: ctl(sb_sock, {"cmd": "status"})["remus"].get("epoch", 0) >= 3, 10,
                 what="three epochs applied on the standby")
    finally:
        for p in (pr, sb):
            if p:
                p.terminate()
                p.wait(10)
