"""tcp_bench.py — the guest's TCP services (Redis RESP on 6379, HTTP/1.1 on 80) driven by
redis-benchmark and wrk: doppel vs QEMU microvm (same guest ELF, same topology, interleaved, RUNS runs
each), then doppel under Remus at 25 ms and 100 ms epochs (what output commit costs a TCP service).

Per run: `redis-benchmark -t set,get,incr -n N -c CONNS --csv` (ops/s, p50, p99 per command),
`wrk -t1 -c8 -d SECS http://10.0.0.10/` (requests/s) and `wrk -t1 -c1 -d SECS .../bytes/1048576`
(throughput). The row per VMM is the run with the median SET ops/s.
"""
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))

import netns  # noqa: E402
from vmproc import ctl  # noqa: E402

BUILD = os.environ.get("DOPPEL_BUILD") or os.path.join(REPO, "build")
DOPPEL, GUEST = os.path.join(BUILD, "doppel"), os.path.join(BUILD, "guest.elf")
N = int(os.environ.get("N", "20000"))
REMUS_N = int(os.environ.get("REMUS_N", "1000"))
RUNS = int(os.environ.get("RUNS", "3"))
CONNS = int(os.environ.get("CONNS", "20"))
SECS = int(os.environ.get("SECS", "3"))
MAC = "52:54:00:12:34:56"
CMDLINE = f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX}" + os.environ.get("GUEST_EXTRA", "")
HOST = netns.GUEST_IP


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(p, serial, what):
    def up():
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited {p.returncode}")
        try:
            with open(serial, errors="replace") as f:
                return "kv: tcp resp=6379" in f.read()
        except FileNotFoundError:
            return False
    netns.wait_for(up, 30, what=f"{what}: serving")


def start(kind, topo, tmp, i):
    serial = os.path.join(tmp, f"{kind}{i}.serial")
    if kind == "qemu":
        netns.run_in(topo.hostA, ["ip", "tuntap", "add", "tapq0", "mode", "tap"], check=True)
        netns.run_in(topo.hostA, ["ip", "link", "set", "tapq0", "master", "br0", "up"], check=True)
        argv = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-m", "256M",
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", f"file:{serial}",
                "-device", "isa-debug-exit,iobase=0x501,iosize=2",
                "-netdev", "tap,id=n0,ifname=tapq0,script=no,downscript=no",
                "-device", f"virtio-net-device,netdev=n0,mac={MAC}",
                "-kernel", GUEST, "-append", CMDLINE]
    else:
        argv = [DOPPEL, "run", "--name", f"tcpb{i}", "--mem", "256M", "--kernel", GUEST,
                "--cmdline", CMDLINE, "--serial", f"file:{serial}",
                "--control", os.path.join(tmp, f"d{i}.sock"),
                "--net", f"tap=tapA{i % 10},bridge=br0,mac={MAC}"]
    p = topo.popen(topo.hostA, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wait_serving(p, serial, kind)
    return [p]


def start_remus(topo, tmp, i, interval):
    port = free_port()
    listen = f"{netns.REPL_B_IP}:{port}"
    net = ["--net", f"tap=tr{i}x,bridge=br0,mac={MAC}"]
    procs = []
    for name, ns, extra in ((f"rb{i}", topo.hostB, ["--standby", "--listen", listen]), (f"ra{i}", topo.hostA, [])):
        serial = os.path.join(tmp, f"{name}.serial")
        argv = [DOPPEL, "run", "--name", name, "--mem", "64M", "--serial", f"file:{serial}",
                "--control", os.path.join(tmp, f"{name}.sock"), *extra, *net]
        if not extra:
            argv += ["--kernel", GUEST, "--cmdline", CMDLINE]
        procs.append(topo.popen(ns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL))
    wait_serving(procs[1], os.path.join(tmp, f"ra{i}.serial"), "remus primary")
    netns.wait_for(lambda: os.path.exists(os.path.join(tmp, f"rb{i}.sock")), 20, what="standby listening")
    for attempt in range(20):  # the standby's listener may trail its control socket a little
        r = subprocess.run(["ip", "netns", "exec", topo.hostA, DOPPEL, "protect", "--control",
                            os.path.join(tmp, f"ra{i}.sock"), "--peer", listen, "--interval", str(interval)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if r.returncode == 0:
            return procs
        time.sleep(0.2)
    raise RuntimeError(f"protect failed: {r.stderr}")


def remus_status(tmp, i):
    """The primary's Remus role and epoch counters: a row only counts if it stayed protected."""
    st = ctl(os.path.join(tmp, f"ra{i}.sock"), {"cmd": "status"})["remus"]
    return {k: st.get(k) for k in ("role", "epochs", "epochs_skipped", "epochs_forced")}


def stop(kind, procs, topo):
    for p in reversed(procs):
        netns.stop_proc(p, timeout=5)
    if kind == "qemu":
        netns.run_in(topo.hostA, ["ip", "link", "del", "tapq0"])


def redis_bench(topo, n):
    r = netns.run_in(topo.client, ["redis-benchmark", "-h", HOST, "-t", "set,get,incr", "-n", n, "-c", CONNS,
                                   "--csv"], timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark: {r.stderr}")
    out = {}
    for row in csv.DictReader(io.StringIO(r.stdout)):
        out[row["test"].lower()] = {"ops_per_s": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                                    "p99_ms": float(row["p99_latency_ms"])}
    return out


def _unit(v, u, table):
    return float(v) * table[u]


def wrk(topo, path, conns):
    r = netns.run_in(topo.client, ["wrk", "-t1", f"-c{conns}", f"-d{SECS}s", f"http://{HOST}{path}"],
                     timeout=SECS + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk: {r.stderr}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", r.stdout)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", r.stdout)
    mb = _unit(tr[1], tr[2], {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}) if tr else 0.0
    return {"req_per_s": float(rps[1]) if rps else 0.0, "mib_per_s": round(mb, 2),
            "errors": errs[0] if errs else None}


def one_run(topo, n):
    res = {"redis": redis_bench(topo, n)}
    res["http"] = wrk(topo, "/", 8)
    res["bytes"] = wrk(topo, "/bytes/1048576", 1)
    return res


def median_run(runs):
    return sorted(runs, key=lambda r: r["redis"]["set"]["ops_per_s"])[len(runs) // 2]


def main():
    why = netns.kvm_unavailable()
    for tool in ("qemu-system-x86_64", "redis-benchmark", "wrk"):
        if not why and not shutil.which(tool):
            why = f"no {tool}"
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    out_json = os.path.join(REPO, "bench", "results", "tcp.json")
    if why:
        json.dump({"skipped": why}, open(out_json, "w"))
        print("tcp_bench: skipped:", why)
        return 0
    res = {"n": N, "remus_n": REMUS_N, "runs": RUNS, "conns": CONNS, "secs": SECS,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "vmm": {"doppel": [], "qemu": []}, "remus": {}}
    with tempfile.TemporaryDirectory() as tmp, netns.Topology() as topo:
        k = 0
        for r in range(RUNS):  # interleaved: drift on the shared machine hits both alike
            for kind in (("doppel", "qemu") if r % 2 == 0 else ("qemu", "doppel")):
                procs = start(kind, topo, tmp, k)
                k += 1
                try:
                    res["vmm"][kind].append(one_run(topo, N))
                finally:
                    stop(kind, procs, topo)
        for interval in (25, 100):
            procs = start_remus(topo, tmp, k, interval)
            k += 1
            try:
                run = {}
                for part, fn in (("redis", lambda: redis_bench(topo, REMUS_N)), ("http", lambda: wrk(topo, "/", 8)),
                                 ("bytes", lambda: wrk(topo, "/bytes/1048576", 1))):
                    run[part] = fn()
                    run[f"status_after_{part}"] = remus_status(tmp, k - 1)
                res["remus"][f"{interval}ms"] = run
            finally:
                stop("doppel", procs, topo)
    d, q = median_run(res["vmm"]["doppel"]), median_run(res["vmm"]["qemu"])
    res["median"] = {"doppel": d, "qemu": q}
    res["target"] = "doppel >= QEMU (redis-benchmark SET ops/s and wrk requests/s)"
    res["met"] = (d["redis"]["set"]["ops_per_s"] >= q["redis"]["set"]["ops_per_s"] and
                  d["http"]["req_per_s"] >= q["http"]["req_per_s"])
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)
    write_md(res)
    print(open(os.path.join(REPO, "docs", "perf", "tcp.md")).read())
    return 0


def row(name, v):
    rd = v["redis"]
    cells = [f"{rd[c]['ops_per_s']:,.0f} ({rd[c]['p50_ms']:.2f} / {rd[c]['p99_ms']:.2f})" for c in ("set", "get", "incr")]
    return (f"| {name} | {' | '.join(cells)} | {v['http']['req_per_s']:,.0f} | {v['bytes']['mib_per_s']:,.1f} |")


def write_md(res):
    rows = [row(k, res["median"][k]) for k in ("doppel", "qemu")]
    rows += [row(f"doppel, Remus {k} epochs" + ("" if all(v[f"status_after_{p}"]["role"] == "primary"
                                                          for p in ("redis", "http", "bytes"))
                                                 else " (protection LOST during the run)"), v)
             for k, v in res["remus"].items()]
    allruns = "; ".join(f"{k}: " + ", ".join(f"{r['redis']['set']['ops_per_s']:,.0f}" for r in v)
                        for k, v in res["vmm"].items())
    md = f"""## TCP services (Redis RESP, HTTP/1.1): doppel vs QEMU microvm, and under Remus

`bench/tcp_bench.sh` ({res['date']}): the same `build/guest.elf` running `work=kv` (guest TCP stack,
RESP on 6379, HTTP on 80) on hostA's bridge, driven from the client namespace by unmodified Debian
clients: `redis-benchmark -t set,get,incr -n {res['n']:,} -c {res['conns']}` (ops/s, client p50 / p99 in
ms), `wrk -t1 -c8 -d{res['secs']}s /` (requests/s, keep-alive) and `wrk -t1 -c1 -d{res['secs']}s
/bytes/1048576` (MiB/s). doppel and QEMU runs are interleaved, {res['runs']} each; the row is the run with
the median SET ops/s (all SET runs: {allruns}). Remus rows: primary protected to a standby on hostB at that
epoch interval (output commit: replies leave only after their epoch's checkpoint), `-n {res['remus_n']:,}`.

| VMM | SET ops/s (p50 / p99 ms) | GET ops/s (p50 / p99) | INCR ops/s (p50 / p99) | HTTP req/s | /bytes MiB/s |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Target: doppel ≥ QEMU (SET ops/s and HTTP req/s) — **{'met' if res['met'] else 'NOT met'}**.
"""
    os.makedirs(os.path.join(REPO, "docs", "perf"), exist_ok=True)
    with open(os.path.join(REPO, "docs", "perf", "tcp.md"), "w") as f:
        f.write(md)


if __name__ == "__main__":
    sys.exit(main())
