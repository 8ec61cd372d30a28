"""test_disk_colo.py — COLO with a disk: the secondary (SVM) runs the guest's disk oracle next to the
KV service (`work=kv,disk`) on its own image, its writes going to an overlay that each checkpoint
discards while the primary's writes of the epoch are applied to the image; both oracles stay at bad=0
under KV load, and when the primary is killed the survivor writes its overlay back, keeps every
acknowledged INCR and its oracle stays at bad=0. The seed and kill time are printed."""
import signal
import time

import pytest

import netns
from test_colo import HB_MS, NET_MAC, client, client_bg, client_wait, colo, free_port
from test_disk import disk_lines, make_image
from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm


def oracle_clean(v, what):
    lines = disk_lines(v.output())
    assert lines and all(l["bad"] == 0 and l["ioerr"] == 0 for l in lines), (what, v.output()[-2000:])
    return lines[-1]["seq"]


def test_colo_disk_kill_primary(doppel_bin, guest_elf, topology, tmp_path, rng):
    tmp = str(tmp_path)
    listen = f"{netns.REPL_B_IP}:{free_port()}"
    net = ["--net", f"tap=tcdx,bridge=br0,mac={NET_MAC}"]
    cmd = f"work=kv,disk dws=4M pi=200 isn=fixed ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}"
    a, b = make_image(tmp_path / "a.img"), make_image(tmp_path / "b.img")
    sb = VM(doppel_bin, tmp, name="cdb", kernel=guest_elf, cmdline=cmd, mem="64M",
            extra=["--standby", "--listen", listen, "--disk", f"path={b},id=data", *net], netns=topology.hostB)
    pr = VM(doppel_bin, tmp, name="cda", kernel=guest_elf, cmdline=cmd, mem="64M",
            extra=["--disk", f"path={a},id=data", *net], netns=topology.hostA)
    try:
        sb.wait_ctl()
        pr.wait_ctl()
        wait_for(lambda: client(topology, "get", netns.GUEST_IP, "ready")["reply"] is not None, 20,
                 interval=0.1, what="guest KV service")
        r = netns.run_in(None, [doppel_bin, "protect", pr.name, "--peer", listen, "--control", pr.control,
                                "--mode", "colo", "--heartbeat-timeout", HB_MS, "--compare-timeout", "1000",
                                "--checkpoint-interval", "500"], timeout=60)
        assert r.returncode == 0, f"protect --mode colo failed: {r.stdout} {r.stderr}"
        wait_for(lambda: sb.ctl("status")["colo"]["running"], 10, what="secondary running")
        n = 300
        load = client_bg(topology, "kv", netns.GUEST_IP, n, "k", 90)
        # a few checkpoints with the SVM writing its own overlay in between
        wait_for(lambda: sb.ctl("status")["remus"]["disk"]["overlay_resets"] >= 3, 30,
                 what="three overlay resets (checkpoints)")
        d = sb.ctl("status")["remus"]["disk"]
        assert d["applied_writes"] > 0, d  # the primary's writes, applied to the image per checkpoint
        svm_seq = oracle_clean(sb, "the secondary's oracle, over image + overlay")
        assert svm_seq > 0
        oracle_clean(pr, "the primary's oracle")
        kill_at = rng.uniform(0.1, 1.0)
        print(f"seed={rng.seed_value}: kill the primary {kill_at:.3f} s after 3 checkpoints", flush=True)
        time.sleep(kill_at)
        ck = colo(pr)["checkpoints"]
        before = disk_lines(pr.output())[-1]["seq"]
        pr.kill(signal.SIGKILL)
        res = client_wait(load)
        assert not res["errors"] and res["acked"] == list(range(1, n + 1)), res
        wait_for(lambda: sb.ctl("status")["role"] == "unprotected", 10, what="secondary takeover")
        got = client(topology, "get", netns.GUEST_IP, "k")["reply"]
        assert got is not None and int(got[1]) == n, got
        # sane checkpoint counts: no mismatch (the guest is deterministic); periodic ones every 500 ms,
        # or earlier ones (`queue`) when the primary's disk write log passed 3/4 of its bound first
        assert ck["mismatch"] == 0 and ck["initial"] == 1 and ck["periodic"] + ck["queue"] >= 2, ck
        # the survivor: its overlay went into its image, a full ring pass past the primary's last seq
        wait_for(lambda: disk_lines(sb.output())[-1]["seq"] > before + 2048, 30, what="survivor disk lines")
        oracle_clean(sb, "the survivor's oracle")
        d = sb.ctl("status")["remus"]["disk"]
        assert d["overlay_bytes"] == 0 and d["overlay_written_back"] > 0, d
    finally:
        for v in (pr, sb):
            if v.proc.poll() is None:
                v.kill(signal.SIGCONT)
            v.close()
