"""colo_bench.py — the same guest and clients, interleaved, RUNS runs each: unprotected (beside a second,
idle VM of the same guest, as COLO's secondary shares the machine), Remus at 25 ms, and COLO
(deterministic workload), and COLO with a nondeterministic reply every NONDET-th request. Per run: a paced KV INCR load (doppel-kv --load: ops/s, p50/p99 latency)
and redis-benchmark SET/GET (ops/s, p50/p99). For the protected modes: checkpoints (epochs) per
second and the pause per checkpoint from `doppel status`. Writes bench/results/colo.json and
docs/perf/colo.md. QEMU's COLO is not run here yet (see docs/colo.md).

Mode colo_nondet runs the guest with nondet=NONDET (every NONDET-th reply carries the TSC), so the
comparator sees mismatches and COLO takes mismatch checkpoints: their pause and phases are the numbers.

Env: DOPPEL_BUILD, RUNS (3), KV_N (2000), KV_RATE (1000/s), REDIS_N (5000), CONNS (20), NONDET (50),
MODES (comma-separated subset of unprotected,remus25,colo,colo_nondet,qemu_colo; default all),
QEMU_REDIS_N (300: QEMU's COLO serves tens of requests a second, so redis-benchmark runs fewer)."""
import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))
sys.path.insert(0, os.path.join(REPO, "bench"))

import netns  # noqa: E402
from benchlib import write_fragment, write_json  # noqa: E402
from kvserver import run_load  # noqa: E402
from vmproc import ctl  # noqa: E402

BUILD = os.environ.get("DOPPEL_BUILD") or os.path.join(REPO, "build")
DOPPEL, GUEST, KV = (os.path.join(BUILD, x) for x in ("doppel", "guest.elf", "doppel-kv"))
RUNS = int(os.environ.get("RUNS", "3"))
KV_N = int(os.environ.get("KV_N", "2000"))
KV_RATE = int(os.environ.get("KV_RATE", "1000"))
REDIS_N = int(os.environ.get("REDIS_N", "5000"))
CONNS = int(os.environ.get("CONNS", "20"))
MAC = "52:54:00:12:34:58"
CMDLINE = f"work=kv isn=fixed ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}"
IDLE_MAC, IDLE_CMDLINE = "52:54:00:12:34:59", f"work=kv isn=fixed ip=10.0.0.20/{netns.GUEST_PREFIX}"
NONDET = int(os.environ.get("NONDET", "50"))
QEMU_REDIS_N = int(os.environ.get("QEMU_REDIS_N", "300"))
ALL_MODES = ("unprotected", "remus25", "colo", "colo_nondet", "qemu_colo")
MODES = tuple(m for m in os.environ.get("MODES", ",".join(ALL_MODES)).split(",") if m)
assert all(m in ALL_MODES for m in MODES), f"MODES: one of {ALL_MODES}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_argv(tmp, name, extra, kernel=True, cmdline=CMDLINE):
    argv = [DOPPEL, "run", "--name", name, "--mem", "64M", "--serial", f"file:{os.path.join(tmp, name + '.serial')}",
            "--control", os.path.join(tmp, f"{name}.sock"), *extra]
    return argv + (["--kernel", GUEST, "--cmdline", cmdline] if kernel else [])


def serving(tmp, name):
    try:
        with open(os.path.join(tmp, name + ".serial"), errors="replace") as f:
            return "kv: tcp resp=6379" in f.read()
    except FileNotFoundError:
        return False


def start(mode, topo, tmp, i):
    """Returns (procs, primary control socket)."""
    procs = []
    pa, pb = f"p{i}", f"s{i}"
    net = ["--net", f"tap=cbn{i}x,bridge=br0,mac={MAC}"]
    if mode == "unprotected":
        # the second, idle VM of the same guest (its own MAC and address: the KV service needs a
        # NIC, without one the guest exits at boot) on hostB; nobody talks to it: it halts in the
        # idle doorbell like the primary between requests
        idle = ["--net", f"tap=cbi{i}x,bridge=br0,mac={IDLE_MAC}"]
        procs.append(topo.popen(topo.hostB, vm_argv(tmp, pb, idle, cmdline=IDLE_CMDLINE),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        netns.wait_for(lambda: serving(tmp, pb), 30, what="idle VM serving")
        procs.append(topo.popen(topo.hostA, vm_argv(tmp, pa, net), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL))
        netns.wait_for(lambda: serving(tmp, pa), 30, what="guest serving")
        return procs, os.path.join(tmp, f"{pa}.sock")
    listen = f"{netns.REPL_B_IP}:{free_port()}"
    procs.append(topo.popen(topo.hostB, vm_argv(tmp, pb, ["--standby", "--listen", listen, *net], kernel=False),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cmdline = CMDLINE + (f" nondet={NONDET}" if mode == "colo_nondet" else "")
    procs.append(topo.popen(topo.hostA, vm_argv(tmp, pa, net, cmdline=cmdline), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL))
    netns.wait_for(lambda: serving(tmp, pa), 30, what="guest serving")
    netns.wait_for(lambda: os.path.exists(os.path.join(tmp, f"{pb}.sock")), 20, what="standby listening")
    args = ["--interval", "25"] if mode == "remus25" else ["--mode", "colo"]
    if mode == "colo_nondet":
        args += ["--checkpoint-interval", "10000"]  # the checkpoints are the mismatches
    for _ in range(20):
        r = subprocess.run(["ip", "netns", "exec", topo.hostA, DOPPEL, "protect", "--control",
                            os.path.join(tmp, f"{pa}.sock"), "--peer", listen, "--heartbeat-timeout", "1000",
                            *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if r.returncode == 0:
            return procs, os.path.join(tmp, f"{pa}.sock")
        time.sleep(0.2)
    raise RuntimeError(f"protect ({mode}) failed: {r.stderr}")


def counters(sock):
    st = ctl(sock, {"cmd": "status"})
    c = st.get("colo")
    if c:
        return {"role": st.get("role"), "checkpoints": sum(c["checkpoints"].values()),
                "by_reason": c["checkpoints"], "pause_p50_ms": c["pause"]["p50_ms"],
                "pause_p99_ms": c["pause"]["p99_ms"], "mismatched": c["frames"]["mismatched"],
                "svm_dirty_pages_last": c.get("svm_dirty_pages_last"),
                "checkpoint_time": c.get("checkpoint_time"), "latency": c.get("latency"),
                "checkpoint_phases": c.get("checkpoint_phases"), "forwarded": c.get("forwarded"),
                "forwarded_direct": c.get("forwarded_direct"),
                "pause_phases_us": st.get("remus", {}).get("pause", {}).get("last_phases")}
    r = st.get("remus", {})
    return {"role": st.get("role"), "checkpoints": r.get("epochs", 0),
            "pause_p50_ms": r.get("pause", {}).get("p50_us", 0) / 1e3,
            "pause_p99_ms": r.get("pause", {}).get("p99_us", 0) / 1e3}


def redis(topo, n=REDIS_N):
    r = netns.run_in(topo.client, ["redis-benchmark", "-h", netns.GUEST_IP, "-t", "set,get", "-n", n,
                                   "-c", CONNS, "--csv"], timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark: {r.stderr}")
    return {row["test"].lower(): {"ops_per_s": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                                  "p99_ms": float(row["p99_latency_ms"])}
            for row in csv.DictReader(io.StringIO(r.stdout))}


def one_run_qemu(topo, tmp, i):
    import qemu_colo
    q, cleanup = qemu_colo.start(topo, tmp, i, GUEST, CMDLINE, MAC, serving)
    try:
        kv = run_load(KV, topo.client, netns.GUEST_IP, str(KV_N), str(KV_RATE), cmd="INCR", key=f"b{i}",
                      timeout_ms="200", timeout=600).summary
        rd = redis(topo, QEMU_REDIS_N)
        st = q.cmd("query-colo-status")
        return {"kv": {k: kv.get(k) for k in ("ops_per_s", "p50_us", "p99_us", "acked", "unacked")},
                "redis": rd, "status": {"role": st.get("mode"), "pause_p50_ms": None, "pause_p99_ms": None}}
    finally:
        cleanup()


def one_run(mode, topo, tmp, i):
    if mode == "qemu_colo":
        return one_run_qemu(topo, tmp, i)
    procs, sock = start(mode, topo, tmp, i)
    try:
        c0, t0 = counters(sock), time.monotonic()
        kv = run_load(KV, topo.client, netns.GUEST_IP, str(KV_N), str(KV_RATE), cmd="INCR", key=f"b{i}",
                      timeout_ms="200", timeout=120).summary
        rd = redis(topo)
        c1, secs = counters(sock), time.monotonic() - t0
        # both VMs must halt when idle (the idle doorbell): the secondary / the idle second VM too
        c1["idle_waits"] = ctl(sock, {"cmd": "status"}).get("idle_waits")
        peer = ctl(os.path.join(tmp, f"s{i}.sock"), {"cmd": "status"})
        c1["peer_idle_waits"] = peer.get("idle_waits")
        if peer.get("colo"):
            c1["svm"] = {k: peer["colo"].get(k) for k in ("injected", "output_frames", "output_direct", "applies")}
        out = {"kv": {k: kv.get(k) for k in ("ops_per_s", "p50_us", "p99_us", "acked", "unacked")},
               "redis": rd, "status": c1}
        if mode != "unprotected":
            out["checkpoints_per_s"] = round((c1["checkpoints"] - c0["checkpoints"]) / secs, 2)
        return out
    finally:
        for p in reversed(procs):
            netns.stop_proc(p, timeout=5)


def med(runs, f):
    xs = sorted(f(r) for r in runs)
    return xs[len(xs) // 2] if xs else 0


def write_md(res):
    rows = []
    for m in MODES:
        rs = res["runs"][m]
        if not rs:
            continue
        q = m == "qemu_colo"  # QEMU reports no checkpoint counts or pauses
        ckpt = "n/a" if q else med(rs, lambda r: r.get('checkpoints_per_s', 0))
        pause = "n/a" if q else (f"{med(rs, lambda r: r['status']['pause_p50_ms']):.2f} / "
                                 f"{med(rs, lambda r: r['status']['pause_p99_ms']):.2f}")
        rows.append(f"| {m} | {med(rs, lambda r: r['kv']['ops_per_s']):.0f} | {med(rs, lambda r: r['kv']['p50_us'])} / "
                    f"{med(rs, lambda r: r['kv']['p99_us'])} | {med(rs, lambda r: r['redis']['set']['ops_per_s']):.0f} | "
                    f"{med(rs, lambda r: r['redis']['set']['p50_ms'])} / {med(rs, lambda r: r['redis']['set']['p99_ms'])} | "
                    f"{ckpt} | {pause} |")
    write_fragment("colo", f"""## COLO vs Remus vs unprotected

Same guest (`{CMDLINE}`), same clients, interleaved, {res['runs_n']} runs each, medians
({res['date']}). Unprotected runs beside a second, idle VM of the same guest. KV: `doppel-kv --load
{KV_N} --rate {KV_RATE}` INCRs; redis-benchmark `-t set,get -n {REDIS_N} -c {CONNS}` (SET shown).
Pause: Remus per epoch; COLO the primary's pause per checkpoint (capture of its state: it resumes
while the secondary applies the checkpoint, its new output compared afterwards). colo_nondet:
`nondet={NONDET}` (every {NONDET}th reply differs), so its checkpoints are mismatch checkpoints.

| mode | KV ops/s | KV p50 / p99 us | SET ops/s | SET p50 / p99 ms | checkpoints/s | pause p50 / p99 ms |
| --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + f"""

qemu_colo: QEMU 7.2's COLO on the same guest (bench/qemu_colo.py: filter-mirror, filter-redirector,
colo-compare and filter-rewriter with vnet_hdr_support=on, x-colo migration; the guest spins under
QEMU, having no idle doorbell); redis-benchmark there runs `-n {QEMU_REDIS_N}`; QEMU reports no
checkpoint counts or pauses to compare.
""")


def main():
    why = netns.kvm_unavailable() or (None if shutil.which("redis-benchmark") else "no redis-benchmark")
    if why:
        write_json("colo", {"skipped": why})
        print("colo_bench: skipped:", why)
        return 0
    res = {"runs_n": RUNS, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": {m: [] for m in MODES}}
    modes = [m for m in MODES if m != "qemu_colo" or shutil.which("qemu-system-x86_64")]
    if len(modes) < len(MODES):
        res["qemu_colo_skipped"] = "qemu-system-x86_64 not installed"
    with tempfile.TemporaryDirectory() as tmp, netns.Topology() as topo:
        k = 0
        for r in range(RUNS):  # interleaved, rotating the order
            for m in modes[r % len(modes):] + modes[:r % len(modes)]:
                res["runs"][m].append(one_run(m, topo, tmp, k))
                print(m, res["runs"][m][-1], flush=True)
                k += 1
    write_json("colo", res)
    write_md(res)
    print(open(os.path.join(REPO, "docs", "perf", "colo.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
