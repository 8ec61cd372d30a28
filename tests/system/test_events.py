"""test_events.py — the per-VM event log: events written across a Remus failover with the failover's
timings, `doppel events` (over the control socket, --json, --file, --follow seeing a new event),
numbering continued across restarts, bad input; logs into the systemd journal (--log journal) read
back from a private journal socket."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from etcd import etcd_single  # noqa: F401  (fixture)
from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm

MEM = "128M"
# not what these tests are about: a heartbeat timeout a loaded machine's scheduling cannot trip
HB_MS = "1000"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doppel(doppel_bin, *args, timeout=30):
    return subprocess.run([doppel_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def ready(vm):
    """The control socket answers (its file appears at bind, a moment before listen)."""
    vm.wait_ctl()

    def answers():
        try:
            return vm.ctl("status")
        except ConnectionRefusedError:
            return None
    return wait_for(answers, 5, what="control socket answering")


def read_events(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def events_file(vm):
    return vm.control[: -len(".sock")] + ".events.jsonl"


@pytest.fixture
def pair(doppel_bin, guest_elf, tmp_path):
    port = free_port()
    sb = VM(doppel_bin, str(tmp_path), name="sb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}"])
    pr = VM(doppel_bin, str(tmp_path), name="pr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200",
            mem=MEM)
    try:
        sb.wait_ctl()
        pr.wait_output(r"dirty: pass=", timeout=20)
        yield pr, sb, f"127.0.0.1:{port}"
    finally:
        pr.close()
        sb.close()


def test_events_across_remus_failover(doppel_bin, pair):
    pr, sb, peer = pair
    r = doppel(doppel_bin, "protect", "pr", "--peer", peer, "--control", pr.control,
               "--heartbeat-timeout", HB_MS, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: pr.ctl("status")["remus"]["epochs"] > 20, 30, what="20 epochs")
    pr.kill()
    pr.wait()
    wait_for(lambda: sb.ctl("status")["remus"]["role"] == "unprotected", 10, what="takeover")

    # the primary's file: started, protection started, protected (SIGKILL: nothing after)
    pev = read_events(events_file(pr))
    assert [e["type"] for e in pev] == ["state", "protect-start", "protected"], pev
    assert pev[0]["state"] == "running" and pev[1]["peer"] == peer and pev[2]["epoch"] >= 1
    assert pev[1]["heartbeat_timeout_ms"] == int(HB_MS) and pev[1]["interval_ms"] == 25
    assert [e["seq"] for e in pev] == [1, 2, 3] and all(e["vm"] == "pr" for e in pev)

    # the standby's: held, primary lost, running, failover with its timings
    wait_for(lambda: any(e["type"] == "failover" for e in read_events(events_file(sb))), 5,
             what="failover event on disk")
    sev = read_events(events_file(sb))
    assert [e["type"] for e in sev] == ["state", "primary-lost", "state", "failover"], sev
    assert [e["seq"] for e in sev] == [1, 2, 3, 4]
    assert sev[0]["state"] == "held" and sev[2]["state"] == "running"
    fo = sev[3]
    print("failover report:", fo)
    for k in ("detect_ms", "decide_ms", "takeover_ms", "outage_ms"):
        assert isinstance(fo[k], (int, float)) and fo[k] >= 0, (k, fo)
    # the parts add up: detection + decision + takeover = the outage since the last epoch
    assert abs(fo["detect_ms"] + fo["decide_ms"] + fo["takeover_ms"] - fo["outage_ms"]) < 1.0, fo
    assert fo["takeover_ms"] > 0 and fo["policy"] == "auto" and fo["failovers"] == 1
    assert fo["epoch"] == sev[1]["epoch"] and fo["epoch"] >= pev[2]["epoch"]
    # status keeps its short list (the same events)
    st = sb.ctl("status")["remus"]
    assert [e["kind"] for e in st["events"]] == ["primary-lost", "failover"]
    assert st["events"][-1]["epoch"] == fo["epoch"]

    # doppel events: the same events over the control socket, as JSON lines and as text
    r = doppel(doppel_bin, "events", "sb", "--control", sb.control, "--json")
    assert r.returncode == 0, r.stderr
    assert [json.loads(l) for l in r.stdout.splitlines()] == sev
    r = doppel(doppel_bin, "events", "sb", "--control", sb.control, "--since", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("4 ") and " failover " in lines[0]
    assert "takeover_ms=" in lines[0]
    # --file reads the file itself, also when the VM is gone; without --file, a VM that is not
    # running is read from its default file
    r = doppel(doppel_bin, "events", "--file", events_file(pr), "--json")
    assert r.returncode == 0 and [json.loads(l) for l in r.stdout.splitlines()] == pev
    r = doppel(doppel_bin, "events", "pr", "--control", pr.control, "--json")
    assert r.returncode == 0 and [json.loads(l) for l in r.stdout.splitlines()] == pev
    assert "pr is not running; reading " + events_file(pr) in r.stderr


def test_events_follow_sees_new_event(doppel_bin, vm):
    v = vm(name="fol")
    ready(v)
    wait_for(lambda: v.ctl("status")["state"] == "running", 10, what="running")
    p = subprocess.Popen([doppel_bin, "events", "fol", "--control", v.control, "--follow", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        assert first["type"] == "state" and first["state"] == "running" and first["seq"] == 1
        r = doppel(doppel_bin, "pause", "fol", "--control", v.control)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        ev = json.loads(p.stdout.readline())  # blocks until --follow prints the new event
        print(f"--follow saw the pause after {time.monotonic() - t0:.3f} s")
        assert ev["type"] == "state" and ev["state"] == "paused" and ev["seq"] == 2, ev
        assert ev["reason"] == "doppel pause"
        p.send_signal(signal.SIGINT)
        assert p.wait(5) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # --follow on a file sees an event appended by the VM too
    path = v.control[:-5] + ".events.jsonl"
    p = subprocess.Popen([doppel_bin, "events", "--file", path, "--follow", "--since", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = doppel(doppel_bin, "resume", "fol", "--control", v.control)
        assert r.returncode == 0, r.stderr
        line = p.stdout.readline()
        assert line.startswith("3 ") and " state " in line and "state=running" in line, line
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(5) == 0
    # the VM going away ends --follow with an error
    p = subprocess.Popen([doppel_bin, "events", "fol", "--control", v.control, "--follow"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("1 ")
    assert doppel(doppel_bin, "stop", "fol", "--control", v.control).returncode == 0
    assert p.wait(10) == 3  # the VM is not running (any more)
    err = p.stderr.read()
    assert err.startswith("doppel events: ") and len(err.splitlines()) == 1, err


def test_event_log_path_and_restart(doppel_bin, guest_elf, tmp_path):
    path = str(tmp_path / "var" / "lib" / "ev.jsonl")  # parents are created
    for i in range(2):
        v = VM(doppel_bin, str(tmp_path), name="rs", kernel=guest_elf, cmdline="work=idle",
               extra=["--event-log", path])
        try:
            v.wait_ctl()
            wait_for(lambda: os.path.exists(path) and len(read_events(path)) >= 1 + 2 * i, 5,
                     what="started event on disk")
            assert doppel(doppel_bin, "stop", "rs", "--control", v.control).returncode == 0
            assert v.wait(10) == 0
        finally:
            v.close()
    ev = read_events(path)
    # each process: started, stopped; numbering continues across the restart
    assert [e["seq"] for e in ev] == [1, 2, 3, 4]
    assert [e["state"] for e in ev] == ["running", "stopped", "running", "stopped"]
    assert ev[1]["exit_status"] == 0
    assert not os.path.exists(str(tmp_path / "rs.events.jsonl"))  # the flag replaced the default
    # none: memory only, still served over the control socket
    v = VM(doppel_bin, str(tmp_path), name="mem", kernel=guest_elf, cmdline="work=idle",
           extra=["--event-log", "none"])
    try:
        v.wait_ctl()
        def events():
            try:  # the socket file appears at bind, a moment before listen
                r = v.ctl("events")
            except ConnectionRefusedError:
                return None
            return r if r["events"] else None
        rep = wait_for(events, 5, what="event")
        assert rep["file"] is None and rep["events"][0]["state"] == "running"
        assert not os.path.exists(str(tmp_path / "mem.events.jsonl"))
    finally:
        v.close()


def test_events_bad_input(doppel_bin, guest_elf, vm, tmp_path):
    v = vm(name="bad")
    ready(v)
    for req, msg in ((dict(since=-1), "since"), (dict(since="1"), "since"), (dict(max=0), "max"),
                     (dict(max=100000), "max")):
        rep = v.ctl("events", **req)
        assert rep["ok"] is False and msg in rep["error"], rep
    assert v.ctl("events", since=10 ** 12)["events"] == []
    r = doppel(doppel_bin, "events", "bad", "--control", v.control, "--since", "x")
    assert r.returncode == 2 and "bad --since" in r.stderr
    r = doppel(doppel_bin, "events", "bad", "--file", "/nonexistent", "--control", v.control)
    assert r.returncode == 2 and "not both" in r.stderr
    r = doppel(doppel_bin, "events", "--file", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 1 and "cannot open" in r.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text('not json\n{"seq":1,"type":"x","time":1}\n[1]\n')
    r = doppel(doppel_bin, "events", "--file", str(junk))
    assert r.returncode == 0 and r.stdout.startswith("1 ") and r.stderr.count("skipping") == 2
    # an event log that cannot be opened: run fails with one clear line
    r = subprocess.run([doppel_bin, "run", "--kernel", guest_elf, "--name", "nolog", "--serial", "none",
                        "--control", str(tmp_path / "nolog.sock"), "--event-log", str(tmp_path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert r.returncode == 1 and "cannot open event log" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([doppel_bin, "run", "--kernel", guest_elf, "--log", "syslog"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert r.returncode == 2 and "bad --log" in r.stderr


def test_log_journal(doppel_bin, guest_elf, tmp_path):
    """--log journal: messages go to the journal's native socket (a private one here: a mount
    namespace puts our datagram socket at /run/systemd/journal/socket), none to stderr."""
    jdir = tmp_path / "journal"
    jdir.mkdir()
    js = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    js.bind(str(jdir / "socket"))
    js.settimeout(10)
    serial = tmp_path / "j.serial"
    script = (f"mount -t tmpfs none /run && mkdir -p /run/systemd/journal && "
              f"mount --bind {jdir} /run/systemd/journal && exec {doppel_bin} run --kernel {guest_elf} "
              f"--name jvm --cmdline 'work=idle' --serial file:{serial} --control {tmp_path}/j.sock "
              f"--log journal --log-level debug")
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        entries = []
        while not any("control socket" in e.get("MESSAGE", "") for e in entries):
            data = js.recv(65536)
            e = {}
            for line in data.split(b"\n"):
                if b"=" in line:
                    k, _, val = line.partition(b"=")
                    e[k.decode()] = val.decode()
            entries.append(e)
        m = [e for e in entries if "control socket" in e.get("MESSAGE", "")][0]
        assert m["SYSLOG_IDENTIFIER"] == "doppel" and m["PRIORITY"] == "7", m  # debug
        assert m["DOPPEL_COMPONENT"] == "vmm" and m["DOPPEL_VM"] == "jvm", m
        assert m["MESSAGE"] == f"vmm jvm: control socket {tmp_path}/j.sock", m
        wait_for(lambda: os.path.exists(f"{tmp_path}/j.sock"), 5, what="control socket")
        assert doppel(doppel_bin, "stop", "jvm", "--control", f"{tmp_path}/j.sock").returncode == 0
        assert p.wait(10) == 0
        assert p.stderr.read() == b""  # nothing on stderr
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        js.close()


def test_migration_events_and_metrics(doppel_bin, guest_elf, tmp_path):
    """A failed and a completed live migration: their events on both sides (the downtime the
    migrate reply reports is the one on disk) and the source's migration counters."""
    port = free_port()
    src = VM(doppel_bin, str(tmp_path), name="src", kernel=guest_elf, cmdline="work=dirty ws=16M pi=100",
             mem=MEM)
    dst = VM(doppel_bin, str(tmp_path), name="dst", kernel=None, cmdline=None, mem=MEM,
             extra=["--incoming", f"127.0.0.1:{port}"])
    try:
        src.wait_output(r"dirty: pass=\d+", timeout=20)
        dst.wait_ctl()
        wait_for(lambda: dst.ctl("status")["migration"]["state"] == "waiting", 20, what="destination ready")
        # a destination that is not there: a failed migration, counted and recorded
        r = doppel(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{free_port()}",
                   "--json", timeout=60)
        assert r.returncode == 1
        wait_for(lambda: src.ctl("status")["migration"]["state"] == "failed", 10, what="failed state")
        text = doppel(doppel_bin, "metrics", "src", "--control", src.control).stdout
        assert 'doppel_migrations_total{result="failed"} 1' in text
        assert 'doppel_migrations_total{result="completed"} 0' in text
        r = doppel(doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}", "--json",
                   timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert src.wait(15) == 0
        sev = read_events(events_file(src))
        assert [e["type"] for e in sev] == ["state", "migration-start", "migration-end", "migration-start",
                                            "migration-end", "state"], sev
        failed, done = sev[2], sev[4]
        assert failed["result"] == "failed" and failed["direction"] == "out" and failed["error"]
        assert sev[3]["to"] == f"127.0.0.1:{port}" and sev[3]["downtime_target_ms"] > 0
        assert done["result"] == "completed" and done["direction"] == "out"
        assert abs(done["downtime_ms"] - res["downtime_ms"]) < 0.001, (done, res["downtime_ms"])
        assert done["rounds"] == res["rounds"] and done["pages_sent"] == res["pages_sent"]
        assert sev[5]["state"] == "stopped" and sev[5]["exit_status"] == 0
        wait_for(lambda: len(read_events(events_file(dst))) >= 4, 10, what="destination events")
        dev = read_events(events_file(dst))
        assert [(e["type"], e.get("state") or e.get("result")) for e in dev] == [
            ("state", "held"), ("migration-start", None), ("state", "running"),
            ("migration-end", "completed")], dev
        assert dev[1]["direction"] == "in" and dev[3]["apply_ms"] >= 0
    finally:
        src.close()
        dst.close()


def test_witness_events_and_failover_decision(doppel_bin, guest_elf, tmp_path, etcd_single):
    """With a witness the standby takes over only once the primary's lease expired: the failover
    report's decide_ms is that wait, and both copies record acquiring the key."""
    urls, ttl = etcd_single.urls, 1000
    port = free_port()
    sb = VM(doppel_bin, str(tmp_path), name="wsb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}", "--witness", urls, "--witness-name", "wvm",
                   "--witness-ttl", str(ttl)])
    pr = VM(doppel_bin, str(tmp_path), name="wpr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200",
            mem=MEM)
    try:
        sb.wait_ctl()
        pr.wait_output(r"dirty: pass=", timeout=20)
        r = doppel(doppel_bin, "protect", "wpr", "--peer", f"127.0.0.1:{port}", "--control", pr.control,
                   "--witness", urls, "--witness-name", "wvm", "--witness-ttl", str(ttl),
                   "--heartbeat-timeout", HB_MS, timeout=60)
        assert r.returncode == 0, r.stderr
        pev = read_events(events_file(pr))
        assert [e["type"] for e in pev] == ["state", "witness-acquired", "protect-start", "protected"], pev
        acq = pev[1]
        assert acq["role"] == "primary" and acq["token"] > 0 and acq["key"] == "/doppel/vm/wvm/active", acq
        wait_for(lambda: pr.ctl("status")["remus"]["epochs"] > 10, 30, what="10 epochs")
        pr.kill()
        pr.wait()
        wait_for(lambda: sb.ctl("status")["remus"]["role"] == "unprotected", 15, what="takeover")
        wait_for(lambda: any(e["type"] == "failover" for e in read_events(events_file(sb))), 5,
                 what="failover event")
        sev = read_events(events_file(sb))
        assert [e["type"] for e in sev] == ["state", "primary-lost", "witness-acquired", "state",
                                            "failover"], sev
        sacq, fo = sev[2], sev[4]
        print("failover report:", fo)
        assert sacq["role"] == "standby" and sacq["token"] > acq["token"]
        assert fo["witness_token"] == sacq["token"]
        # the primary's lease had up to its TTL left when the loss was seen: the standby waited
        # for it (the decision), not for the detection
        assert 0 < fo["decide_ms"] <= ttl + 1000, fo
        assert fo["detect_ms"] < fo["decide_ms"] + ttl, fo
        assert abs(fo["detect_ms"] + fo["decide_ms"] + fo["takeover_ms"] - fo["outage_ms"]) < 1.0, fo
    finally:
        pr.close()
        sb.close()
