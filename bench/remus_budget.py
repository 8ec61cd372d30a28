"""remus_budget.py — where a Remus epoch's time and the host's CPU go (issue 15, "What bounds Remus").

For each hot set and page content given, one unprotected run and one protected run (25 ms epochs,
delta encoding on, standby on this host): the guest's rate, the CPU each thread used over the
measured window (from /proc/PID/task/TID/stat: the primary's vCPU, its loop thread (pause: sync,
capture, copy), its sender (encode + send), the standby's reader (read, verify, apply)) in % of one
core, the primary's phases (remus.phases p50/p99), skipped ticks and ack latency.

    SECS=4 RUNS=1 SETS=16M,64M FILLS=zero,random python3 bench/remus_budget.py [out.json]

The machine's other load shows as `host_idle_pct` (idle % of all cores over the window, from
/proc/stat): figures from a loaded machine say what the threads needed, not what they could get.
"""
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import remus_bench as rb  # noqa: E402
from benchlib import ctl, dirty_lines, wait_for  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def threads(pid):
    """{tid: (comm, ticks)} of a process (utime + stime)."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[int(tid)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def cpu_total():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]


def role(comm, tid, pid):
    if tid == pid:
        return "loop"
    if comm in ("vcpu", "remus-send", "remus-read"):
        return comm
    return "other"


def cpu_use(procs, secs_fn):
    """Sample thread ticks of {label: pid} before and after secs_fn(); % of one core per label/role."""
    b = {k: threads(p.pid) for k, p in procs.items()}
    tot0, idle0 = cpu_total()
    t0 = time.monotonic()
    secs_fn()
    dt = time.monotonic() - t0
    tot1, idle1 = cpu_total()
    res = {}
    for k, p in procs.items():
        a = threads(p.pid)
        for tid, (comm, ticks) in a.items():
            name = f"{k}.{role(comm, tid, p.pid)}"
            d = ticks - b[k].get(tid, (comm, 0))[1]
            res[name] = res.get(name, 0) + d
    out = {k: round(100.0 * v / HZ / dt, 1) for k, v in sorted(res.items())}
    out["host_idle_pct"] = round(100.0 * (idle1 - idle0) / max(1, tot1 - tot0), 1)
    return out


def one(tmp, ws, fill, protect, secs):
    cmd = f"work=dirty ws={ws} pi=20" + (" fill=random" if fill == "random" else "")
    procs = {}
    try:
        pr, serial, sock = rb.run_vm(tmp, "pr", cmd)
        procs["primary"] = pr
        wait_for(lambda: dirty_lines(serial), 20, "guest start", 0.05)
        if protect:
            port = rb.free_port()
            sb, _, ssock = rb.run_vm(tmp, "sb", None, ["--standby", "--listen", f"127.0.0.1:{port}"])
            procs["standby"] = sb
            rb.protect(sock, f"127.0.0.1:{port}", 25, ["--heartbeat-timeout", "1000"])
        time.sleep(1.0)
        n0 = len(dirty_lines(serial))
        st0 = ctl(sock, {"cmd": "status"}).get("remus", {}) if protect else {}
        cpu = cpu_use(procs, lambda: time.sleep(secs))
        lines = dirty_lines(serial)[n0:]
        out = {"ws": ws, "fill": fill, "protected": protect, "secs": secs, "cpu_pct": cpu,
               "rate": statistics.mean(r for _, r, _ in lines) if lines else 0,
               "bad": max((b for _, _, b in dirty_lines(serial)), default=0)}
        if protect:
            st = ctl(sock, {"cmd": "status"})["remus"]
            sst = ctl(ssock, {"cmd": "status"}).get("remus", {})
            ticks = st["epochs"] - st0["epochs"] + st["epochs_skipped"] - st0["epochs_skipped"]
            out.update(epochs=st["epochs"] - st0["epochs"], skipped=st["epochs_skipped"] - st0["epochs_skipped"],
                       ticks=ticks, dirty_avg=st["dirty_pages"]["avg"], hot=st["dirty_pages"].get("hot"),
                       ack_p50=st["ack_latency"]["p50_ms"], ack_p99=st["ack_latency"]["p99_ms"],
                       phases={k: (v["p50_us"], v["p99_us"]) for k, v in st.get("phases", {}).items()},
                       delta={k: st["delta"].get(k) for k in ("hits", "unchanged", "delta_pages", "dense",
                                                             "plain_pages")} if st.get("delta") else None,
                       apply_ms_last=sst.get("apply_ms_last"), standby_apply=sst.get("apply"))
        return out
    finally:
        for p in procs.values():
            rb.kill(p)


def main():
    secs = float(os.environ.get("SECS", "4"))
    runs = int(os.environ.get("RUNS", "1"))
    sets = os.environ.get("SETS", "16M,64M").split(",")
    fills = os.environ.get("FILLS", "zero,random").split(",")
    res = []
    with tempfile.TemporaryDirectory() as tmp:
        for ws in sets:
            for fill in fills:
                for _ in range(runs):
                    for prot in (False, True):
                        r = one(tmp, ws, fill, prot, secs)
                        res.append(r)
                        print(json.dumps(r), flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
