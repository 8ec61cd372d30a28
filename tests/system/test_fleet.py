"""test_fleet.py — `doppel fleet up|down|status|check FILE`: a bad fleet refused whole with nothing
started; a fleet started (resources reserved: pins, locked memory; depends_on order), listed and stopped;
a protected fleet across two namespaces (`fleet up --standby` on hostB, `fleet up` on hostA)."""
import json
import os
import subprocess

import pytest

import netns
from vmproc import ctl, wait_for

pytestmark = pytest.mark.needs_kvm


def fleet(doppel_bin, *args, ns=None, timeout=120):
    argv = [doppel_bin, "fleet", *args]
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


def vm(name, guest_elf, tmp_path, **kw):
    c = {"name": name, "memory": "16M", "kernel": guest_elf, "cmdline": "work=idle pi=60000",
         "serial": f"file:{tmp_path}/{name}.serial"}
    c.update(kw)
    return c


def write(tmp_path, obj, name="fleet.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def test_bad_fleet_refused_whole(doppel_bin, guest_elf, tmp_path):
    run = f"{tmp_path}/run"
    f = write(tmp_path, {"host": {"runtime_dir": run, "memory": "40M"}, "vms": [
        vm("a", guest_elf, tmp_path, cpus=[0], cpus_exclusive=True,
           net=[{"tap": "fa0", "mac": "52:54:00:00:00:01"}]),
        vm("a", guest_elf, tmp_path, cpus=[0], net=[{"tap": "fa0", "mac": "52:54:00:00:00:01"}]),
        vm("c", guest_elf, tmp_path, memory="3M", depends_on=["nobody"]),
    ]})
    for verb in ("check", "up"):
        r = fleet(doppel_bin, verb, f)
        assert r.returncode == 1
        assert r.stdout == ""
        assert r.stderr.splitlines() == [
            f"doppel fleet: {f}: vms[2].memory: 3145728 bytes: must be 2M..64G in 2M steps",
            f"doppel fleet: {f}: vms[1]: name a is also used by vms[0] (a)",
            f"doppel fleet: {f}: vms[1]: tap fa0 is also used by vms[0] (a)",
            f"doppel fleet: {f}: vms[1]: MAC 52:54:00:00:00:01 is also used by vms[0] (a)",
            f"doppel fleet: {f}: vms[0].cpus[0]: CPU 0 is exclusive to a but 1 other VM(s) use it too",
            f"doppel fleet: {f}: vms: the VMs need 288 MiB of memory, the host has 40 MiB for them",
            f"doppel fleet: {f}: vms[2].depends_on[0]: no VM named nobody in this fleet",
            f"doppel fleet: {f} refused (7 problems), nothing started",
        ]
        assert not os.path.exists(run)  # nothing started: not even the runtime directory


def thread_cpus(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            st = dict(l.split(":\t", 1) for l in fh.read().splitlines() if ":\t" in l)
        out[tid] = st["Cpus_allowed_list"].strip()
    return out


def test_fleet_up_status_down(doppel_bin, guest_elf, tmp_path):
    run = f"{tmp_path}/run"
    f = write(tmp_path, {"host": {"runtime_dir": run}, "vms": [
        vm("fa", guest_elf, tmp_path, cpus=[1], memory_policy="populate"),
        vm("fb", guest_elf, tmp_path, depends_on=["fa"], memory_policy="lock"),
        vm("fc", guest_elf, tmp_path),
    ]})
    r = fleet(doppel_bin, "up", f)
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"fleet {f}: 3 VM(s) running in ")
        r = fleet(doppel_bin, "status", f, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"vms": [{"name": n, "state": "running", "role": "unprotected"}
                                                 for n in ("fa", "fb", "fc")]}
        st = {n: ctl(f"{run}/{n}.sock", {"cmd": "status"}) for n in ("fa", "fb", "fc")}
        # fa's vCPU thread is pinned to CPU 1 (the other threads are not)
        assert "1" in thread_cpus(st["fa"]["pid"]).values()
        # fb's memory is locked; every VM is its own process, detached (its own session)
        with open(f"/proc/{st['fb']['pid']}/status") as fh:
            assert "VmLck:\t   16384 kB" in fh.read()
        assert len({s["pid"] for s in st.values()}) == 3
        for n, s in st.items():
            assert os.getsid(s["pid"]) == s["pid"]
            with open(f"/proc/{s['pid']}/comm") as fh:
                assert fh.read() == f"dp-{n}\n"

        # fb started after fa was running (depends_on): its uptime is not longer
        assert st["fb"]["uptime_s"] <= st["fa"]["uptime_s"]
        # running twice is refused
        r = fleet(doppel_bin, "up", f)
        assert r.returncode == 1 and "fa is already running" in r.stderr
    finally:
        r = fleet(doppel_bin, "down", f)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"fleet {f}: 3 VM(s) stopped\n"
    for s in st.values():
        assert not os.path.exists(f"/proc/{s['pid']}")
    r = fleet(doppel_bin, "status", f, "--json")
    assert json.loads(r.stdout) == {"vms": [{"name": n, "state": "stopped", "role": None}
                                             for n in ("fa", "fb", "fc")]}


def kv_get(ns, ip, key):
    r = netns.run_in(ns, ["python3", "-c", f"""
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.5)
for i in range(20):
    s.sendto(('%d GET {key}' % i).encode(),('{ip}',7777))
    try:
        print(s.recv(512).decode()); sys.exit(0)
    except socket.timeout: pass
sys.exit(1)
"""], timeout=30)
    return r.stdout.strip() if r.returncode == 0 else None


def test_protected_fleet_two_namespaces(doppel_bin, guest_elf, tmp_path, topology):
    """hostB: fleet up --standby (standbys listen on the repl link); hostA: fleet up (primaries
    protect to them). Every VM is protected; killing one primary makes its standby serve."""
    vms = []
    for i in range(2):
        vms.append(vm(f"p{i}", guest_elf, tmp_path, memory="32M",
                      cmdline=f"work=kv ip=10.0.0.{20 + i}/24",
                      net=[{"tap": f"pt{i}", "bridge": "br0", "mac": f"52:54:00:aa:00:0{i}"}],
                      protection={"peer": f"192.168.100.2:{7710 + i}", "interval_ms": 50}))
    f = write(tmp_path, {"vms": vms})
    runA, runB = f"{tmp_path}/A", f"{tmp_path}/B"
    try:
        r = fleet(doppel_bin, "up", f, "--standby", "--runtime-dir", runB, ns=topology.hostB)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"fleet {f}: 2 VM(s) held as standbys in ")
        r = fleet(doppel_bin, "up", f, "--runtime-dir", runA, ns=topology.hostA)
        assert r.returncode == 0, r.stderr
        rA = fleet(doppel_bin, "status", f, "--json", "--runtime-dir", runA, ns=topology.hostA)
        rB = fleet(doppel_bin, "status", f, "--json", "--runtime-dir", runB, ns=topology.hostB)
        assert json.loads(rA.stdout) == {"vms": [{"name": f"p{i}", "state": "running", "role": "primary"}
                                                  for i in range(2)]}
        assert [v["role"] for v in json.loads(rB.stdout)["vms"]] == ["standby", "standby"]
        for i in range(2):
            assert (kv_get(topology.client, f"10.0.0.{20 + i}", "k") or "").endswith(" ERR nokey")
        # lose p0's primary: its standby on hostB takes over and serves
        pid = ctl(f"{runA}/p0.sock", {"cmd": "status"})["pid"]
        os.kill(pid, 9)
        wait_for(lambda: ctl(f"{runB}/p0.sock", {"cmd": "status"})["role"] == "unprotected", 10,
                 what="p0's standby to take over")
        assert (kv_get(topology.client, "10.0.0.20", "k") or "").endswith(" ERR nokey")
    finally:
        fleet(doppel_bin, "down", f, "--runtime-dir", runA, ns=topology.hostA)
        fleet(doppel_bin, "down", f, "--standby", "--runtime-dir", runB, ns=topology.hostB)


def test_fleet_up_window_and_readiness(doppel_bin, guest_elf, tmp_path):
    """--parallel 1: each VM is forked only once the one before said it runs (on the readiness pipe),
    so their uptimes are ordered; `up` returns once every VM runs."""
    run = f"{tmp_path}/run"
    names = ["wa", "wb", "wc"]
    f = write(tmp_path, {"host": {"runtime_dir": run}, "vms": [vm(n, guest_elf, tmp_path) for n in names]})
    st = {}
    try:
        r = fleet(doppel_bin, "up", f, "--parallel", "1")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"fleet {f}: 3 VM(s) running in ")
        st = {n: ctl(f"{run}/{n}.sock", {"cmd": "status"}) for n in names}
        assert [st[n]["state"] for n in names] == ["running"] * 3
        assert st["wa"]["uptime_s"] >= st["wb"]["uptime_s"] >= st["wc"]["uptime_s"], st
        # fleet up forks at a higher priority; its VMs run at the caller's
        assert {os.getpriority(os.PRIO_PROCESS, s["pid"]) for s in st.values()} == {os.getpriority(os.PRIO_PROCESS, 0)}
    finally:
        r = fleet(doppel_bin, "down", f)
    assert r.returncode == 0, r.stderr
    for s in st.values():
        assert not os.path.exists(f"/proc/{s['pid']}")


def test_fleet_up_vm_failing_at_start_stops_the_rest(doppel_bin, guest_elf, tmp_path):
    """A VM whose process ends before it runs (its kernel is no ELF) fails `up`, named with its
    status; the VMs already started are stopped again and nothing stays running."""
    run = f"{tmp_path}/run"
    bad = tmp_path / "not-an-elf"
    bad.write_text("no kernel here\n")
    f = write(tmp_path, {"host": {"runtime_dir": run}, "vms": [
        vm("ga", guest_elf, tmp_path), vm("gb", str(bad), tmp_path, depends_on=["ga"])]})
    r = fleet(doppel_bin, "up", f)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == ["doppel fleet: gb exited with status 1 while starting (see its log)"]
    r = fleet(doppel_bin, "status", f, "--json")
    assert json.loads(r.stdout) == {"vms": [{"name": n, "state": "stopped", "role": None} for n in ("ga", "gb")]}
    with open(f"{run}/gb.log") as fh:
        assert "not-an-elf" in fh.read()


@pytest.mark.parametrize("argv,err", [
    (["fleet", "up", "F", "--parallel", "0"], "doppel fleet: bad --parallel '0' (VMs starting at once, 1..4096) (try doppel fleet --help)"),
    (["run", "--ready-fd", "999", "--kernel", "K"], "doppel run: bad --ready-fd '999' (an open descriptor, 3 or above)"),
    (["run", "--ready-fd", "1", "--kernel", "K"], "doppel run: bad --ready-fd '1' (an open descriptor, 3 or above)"),
])
def test_bad_parallel_and_ready_fd(doppel_bin, argv, err):
    r = subprocess.run([doppel_bin] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == err
