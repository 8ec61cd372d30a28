#!/usr/bin/env python3
"""migrate_bench.py — live migration as the guest feels it: doppel vs QEMU 7.2, same guest, same run.

The guest (build/guest.elf work=dirty ws=WS pi=10 meter=1 [fill=random]) rewrites its hot set and prints
its progress every 10 ms; bench/progress.py stamps the lines on the host and gives, per migration, the
longest interval below 50 % of normal progress, the work lost (ms of normal progress), the total time,
next to the downtime the VMM reports. Configurations are run interleaved (run 1 of every configuration,
then run 2, ...), RUNS times each (default 5), for a compressible hot set (two words per page, zeros
elsewhere) and an incompressible one (fill=random). Writes bench/results/migration.json and
docs/perf/migration.md. Env: RUNS, SIZES ("200M"), FILLS ("zero random"), CONFIGS (names, see CONFIGS),
QEMU_CAP_S (give up on a QEMU migration after this)."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
from progress import SerialMeter, disruption, flag_noisy, noise_note, spread  # noqa: E402

MEM = "512M"
RUNS = int(os.environ.get("RUNS", "5"))
SIZES = os.environ.get("SIZES", "200M").split()
FILLS = os.environ.get("FILLS", "zero random").split()
QEMU_CAP_S = float(os.environ.get("QEMU_CAP_S", "30"))
PI = 10

# name -> (vmm, description, options)
CONFIGS = {
    "doppel-10ms": ("doppel", "pre-copy, downtime 10 ms, auto-converge throttle (default)", []),
    "doppel-10ms-delta": ("doppel", "pre-copy, downtime 10 ms, --delta-cache 256M (PAGE_DELTA from round 2)",
                          ["--delta-cache", "256M"]),
    "doppel-300ms": ("doppel", "pre-copy, downtime 300 ms (QEMU's default target)", ["--downtime-ms", "300"]),
    "doppel-postcopy": ("doppel", "--postcopy (= round: after one full pre-copy round)", ["--postcopy"]),
    "doppel-postcopy-now": ("doppel", "--postcopy=now (no pre-copy round)", ["--postcopy=now"]),
    "doppel-postcopy-auto": ("doppel", "--postcopy=auto (post-copy at once when >= 50 % of RAM is held; "
                             "else pre-copy, post-copy when it stalls and costs less)", ["--postcopy=auto"]),
    "qemu-defaults": ("qemu", "defaults: downtime 300 ms, 128 MiB/s", {}),
    "qemu-300ms": ("qemu", "downtime 300 ms, unlimited", {"bw": True, "downtime": 300}),
    "qemu-10ms": ("qemu", "downtime 10 ms, unlimited", {"bw": True, "downtime": 10}),
    "qemu-10ms-ac": ("qemu", "downtime 10 ms, unlimited, auto-converge",
                     {"bw": True, "downtime": 10, "caps": ["auto-converge"]}),
    "qemu-multifd": ("qemu", "downtime 300 ms, unlimited, multifd x2",
                     {"bw": True, "downtime": 300, "caps": ["multifd"], "channels": 2}),
    "qemu-postcopy": ("qemu", "unlimited, postcopy-ram (switch after the first round)",
                      {"bw": True, "downtime": 300, "caps": ["postcopy-ram"], "postcopy": True}),
}
ORDER = os.environ.get("CONFIGS", " ".join(CONFIGS)).split()


def cmdline(ws, fill):
    return f"work=dirty ws={ws} pi={PI} meter=1" + (" fill=random" if fill == "random" else "")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(meter, start, finish):
    """Baseline, then the event; returns (disruption figures, start()'s value, finish()'s value)."""
    meter.wait_pass(2, timeout=120)  # steady state: every page touched once
    time.sleep(1.0)  # >= 1 s of baseline at pi=10 ms
    t0 = time.monotonic()
    a = start()
    b = finish(a)
    t1 = time.monotonic()
    time.sleep(0.8)
    samples = meter.stop()
    return disruption(samples, t0, t1), a, b, samples


def run_doppel(ws, fill, opts, tmp):
    port = free_port()
    ss, ds = f"{tmp}/ds.serial", f"{tmp}/dd.serial"
    cs, cd = f"{tmp}/ds.sock", f"{tmp}/dd.sock"
    for p in (ss, ds, cs, cd):
        if os.path.exists(p):
            os.unlink(p)
    common = ["--mem", MEM, "--vcpus", "1"]
    src = bl.popen([bl.DOPPEL, "run", "--name", "bsrc", "--control", cs, "--serial", f"file:{ss}",
                    "--kernel", bl.GUEST, "--cmdline", cmdline(ws, fill), *common])
    dst = bl.popen([bl.DOPPEL, "run", "--name", "bdst", "--control", cd, "--serial", f"file:{ds}",
                    "--incoming", f"127.0.0.1:{port}", *common])
    row = {}
    try:
        bl.wait_for(lambda: subprocess.run([bl.DOPPEL, "status", "--control", cd], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL).returncode == 0, 60, "destination ready",
                    0.05)
        meter = SerialMeter([ss, ds]).start()

        def start():
            return subprocess.Popen([bl.DOPPEL, "migrate", "--control", cs, "--to", f"127.0.0.1:{port}",
                                     "--json", *opts], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def finish(p):
            out, err = p.communicate(timeout=180)
            return p.returncode, out, err
        d, _, (rc, out, err), samples = measure(meter, start, finish)
        row.update(d)
        if rc != 0:  # with --json the CLI prints its error as {"ok": false, "error": ...} on stdout
            try:
                why = json.loads(out).get("error")
            except ValueError:
                why = None
            row.update(converged=False, error=why or err.strip() or out.strip() or f"exit {rc}")
            return row
        res = json.loads(out)
        row.update(converged=True, total_ms=round(res["total_ms"], 1), downtime_ms=round(res["downtime_ms"], 2),
                   bytes_wire=res["bytes_wire"], rounds=res["rounds"], max_throttle_pct=res["max_throttle_pct"],
                   postcopy=res.get("postcopy", False), postcopy_ms=res.get("postcopy_ms"))
        src.wait(10)
        return row
    finally:
        for p in (src, dst):
            if p.poll() is None:
                p.kill()
                p.wait()


def qemu_argv(serial, qmp, ws, fill, incoming=None):
    argv, _ = bl.qemu_argv(os.path.dirname(serial), "x", cmdline(ws, fill), MEM,
                           ["-qmp", f"unix:{qmp},server,nowait"] + (["-incoming", incoming] if incoming else []))
    i = argv.index("-serial")
    argv[i + 1] = f"file:{serial}"
    return argv


def run_qemu(ws, fill, o, tmp):
    port = free_port()
    ss, ds, qs, qd = f"{tmp}/qs.serial", f"{tmp}/qd.serial", f"{tmp}/qs.qmp", f"{tmp}/qd.qmp"
    for p in (ss, ds, qs, qd):
        if os.path.exists(p):
            os.unlink(p)
    src = bl.popen(qemu_argv(ss, qs, ws, fill))
    dst = bl.popen(qemu_argv(ds, qd, ws, fill, f"tcp:127.0.0.1:{port}"))
    row = {}
    try:
        qm, qdm = bl.QMP(qs), bl.QMP(qd)
        caps = [{"capability": c, "state": True} for c in o.get("caps", [])]
        if caps:
            qm.cmd("migrate-set-capabilities", capabilities=caps)
            qdm.cmd("migrate-set-capabilities", capabilities=caps)
        params = {}
        if o.get("bw"):
            params["max-bandwidth"] = 100 << 30
        if o.get("downtime"):
            params["downtime-limit"] = o["downtime"]
        if o.get("channels"):
            params["multifd-channels"] = o["channels"]
            qdm.cmd("migrate-set-parameters", **{"multifd-channels": o["channels"]})
        if params:
            qm.cmd("migrate-set-parameters", **params)
        meter = SerialMeter([ss, ds]).start()
        st = {}

        def start():
            qm.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
            return time.monotonic()

        def finish(t_start):
            switched = False
            while time.monotonic() - t_start < QEMU_CAP_S:
                s = qm.cmd("query-migrate")
                st.update(s)
                if s.get("status") in ("completed", "failed", "cancelled"):
                    return s.get("status")
                if o.get("postcopy") and not switched and s.get("ram", {}).get("dirty-sync-count", 0) >= 2:
                    qm.cmd("migrate-start-postcopy")
                    switched = True
                time.sleep(0.005)
            return "timeout"
        d, _, status, _ = measure(meter, start, finish)
        row.update(d)
        if status != "completed":
            row.update(converged=False, error=f"{status} (cap {QEMU_CAP_S:.0f} s)")
            try:
                qm.cmd("migrate_cancel")
            except Exception:
                pass
            return row
        row.update(converged=True, total_ms=st.get("total-time"), downtime_ms=st.get("downtime"),
                   bytes_wire=st.get("ram", {}).get("transferred"), rounds=st.get("ram", {}).get("dirty-sync-count"))
        return row
    except Exception as e:
        row.update(converged=False, error=str(e))
        return row
    finally:
        for p in (src, dst):
            if p.poll() is None:
                p.kill()
                p.wait()


def summarize(rows):
    """Per hot set: runs whose baseline (normal rate, measured on the same VM in the second before its
    migration) is more than 2x off the median of all runs of that hot set are flagged `noisy` (the
    machine's load changed) and left out of the figures, not mixed in."""
    out = []
    for ws in SIZES:
        for fill in FILLS:
            flag_noisy([r for r in rows if r["ws"] == ws and r["fill"] == fill])
            for name in ORDER:
                rs = [r for r in rows if r["ws"] == ws and r["fill"] == fill and r["config"] == name]
                done = [r for r in rs if r.get("converged")]
                ok = [r for r in done if not r.get("noisy")]
                s = {"ws": ws, "fill": fill, "config": name, "vmm": CONFIGS[name][0], "what": CONFIGS[name][1],
                     "runs": len(rs), "completed": len(done), "noisy": len(done) - len(ok),
                     "bad": max((r.get("bad") or 0 for r in done), default=None)}
                for k in ("longest_below_ms", "work_lost_ms", "total_ms", "downtime_ms", "gap_max_ms", "normal_rate"):
                    s[k] = spread(r.get(k) for r in ok)
                out.append(s)
    return out


def fmt(sp):
    if not sp:
        return "—"
    f = (lambda v: f"{v:.0f}") if sp["max"] >= 20 else (lambda v: f"{v:.1f}")
    return f"{f(sp['median'])} ({f(sp['min'])}–{f(sp['max'])})"


def kfmt(sp):
    return "—" if not sp else f"{sp['median'] / 1e3:.0f} ({sp['min'] / 1e3:.0f}–{sp['max'] / 1e3:.0f})"


def targets(bd, bq):
    """Issue 15's done-when for the 200 MiB hot set: doppel's least-disruptive configuration against
    QEMU's (medians)."""
    lb, wl, tt = bd["longest_below_ms"]["median"], bd["work_lost_ms"]["median"], bd["total_ms"]["median"]
    qwl, qtt = bq["work_lost_ms"]["median"], bq["total_ms"]["median"]
    rows = [("longest interval below 50 % <= 50 ms", lb <= 50, f"{lb:.0f} ms"),
            ("work lost <= 25 % of QEMU's", wl <= 0.25 * qwl, f"{wl:.0f} vs {qwl:.0f} ms ({100 * wl / qwl:.0f} %)"),
            ("total time <= QEMU's", tt <= qtt, f"{tt:.0f} vs {qtt:.0f} ms"),
            ("bad=0", bd["bad"] == 0 and bq["bad"] == 0, f"doppel {bd['bad']}, QEMU {bq['bad']}")]
    out = [f"Issue 15 targets (doppel `{bd['config']}` vs QEMU `{bq['config']}`, medians):", ""]
    out += [f"- {w}: **{'met' if ok else 'missed'}** ({d})" for w, ok, d in rows]
    return out + [""]


def markdown(summary, started):
    out = ["## Live migration: what the guest feels (doppel vs QEMU 7.2)", "",
           f"Generated by `bench/migrate_bench.sh` on {started}: same machine, same run, the same guest "
           f"(`build/guest.elf work=dirty ws=SIZE pi={PI} meter=1`, 512 MiB, 1 vCPU) under doppel and under "
           "`qemu-system-x86_64 -M microvm`, loopback TCP, configurations interleaved, "
           f"{RUNS} runs each: median (min–max). `fill=random` makes the hot set incompressible. "
           "Measured by the guest's progress lines (every 10 ms) stamped on the host (bench/progress.py): "
           "**longest < 50 %** = the longest interval in which the guest made less than half its normal "
           "progress; **work lost** = the shortfall against normal progress over the migration (+0.5 s), in "
           "ms of normal guest progress; **total** and **downtime** as each VMM reports them. An effect is "
           "claimed only where the min–max ranges do not overlap.", ""]
    out += ["The normal rate of every run is measured on the same VM in the second right before its migration "
            "(pages stored / host time); a run whose normal rate is more than 2x off the median of all runs of that "
            "hot set is **flagged noisy** (the machine's load changed) and left out of the figures: `done` says "
            "completed/runs and how many were flagged.", ""]
    nr = [x for s in summary if s.get("normal_rate") for x in (s["normal_rate"]["min"], s["normal_rate"]["max"])]
    if nr and min(nr) > 0 and max(nr) / min(nr) > 1.5:
        out += [f"**Caution:** among the runs kept the normal rate still ranged {min(nr) / 1e3:.0f} k – "
                f"{max(nr) / 1e3:.0f} k pages/s (last column): the machine was shared, so these figures are "
                "indicative only; a quiet machine is needed for conclusions.", ""]
    for ws in SIZES:
        for fill in FILLS:
            rows = [s for s in summary if s["ws"] == ws and s["fill"] == fill]
            out += [f"### {ws} hot set, {'incompressible (fill=random)' if fill == 'random' else 'compressible'}",
                    "", "| config | done | longest < 50 % ms | work lost ms | total ms | downtime ms | bad | normal k pages/s |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for s in rows:
                nz = f", {s['noisy']} noisy" if s.get("noisy") else ""
                out.append(f"| {s['config']}: {s['what']} | {s['completed']}/{s['runs']}{nz} | {fmt(s['longest_below_ms'])} "
                           f"| {fmt(s['work_lost_ms'])} | {fmt(s['total_ms'])} | {fmt(s['downtime_ms'])} | "
                           f"{'—' if s['bad'] is None else s['bad']} | {kfmt(s.get('normal_rate'))} |")
            out.append("")
            q = [s for s in rows if s["vmm"] == "qemu" and s["work_lost_ms"]]
            d = [s for s in rows if s["vmm"] == "doppel" and s["work_lost_ms"]]
            if q and d:
                bq = min(q, key=lambda s: s["work_lost_ms"]["median"])
                bd = min(d, key=lambda s: s["work_lost_ms"]["median"])
                out.append(f"Least work lost: doppel `{bd['config']}` {fmt(bd['work_lost_ms'])} ms vs QEMU "
                           f"`{bq['config']}` {fmt(bq['work_lost_ms'])} ms: "
                           f"{noise_note(bd['work_lost_ms'], bq['work_lost_ms'])}.")
                out.append("")
                if fill == "zero":
                    out += targets(bd, bq)
    return "\n".join(out)


def main():
    if sys.argv[1:] == ["--render"]:  # rewrite docs/perf/migration.md from bench/results/migration.json
        res = json.load(open(os.path.join(bl.REPO, "bench", "results", "migration.json")))
        global RUNS
        RUNS = res["runs"]
        print(bl.write_fragment("migration", markdown(res["summary"], res["started"])))
        return 0
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    with tempfile.TemporaryDirectory(prefix="migbench-") as tmp:
        for run in range(RUNS):
            for ws in SIZES:
                for fill in FILLS:
                    for name in ORDER:
                        vmm, _, opts = CONFIGS[name]
                        r = (run_doppel if vmm == "doppel" else run_qemu)(ws, fill, opts, tmp)
                        r.update(config=name, vmm=vmm, ws=ws, fill=fill, run=run + 1)
                        rows.append(r)
                        print(json.dumps(r), flush=True)
    summary = summarize(rows)
    res = {"bench": "migration", "started": started, "mem": MEM, "runs": RUNS, "pi_ms": PI, "rows": rows,
           "summary": summary}
    bl.write_json("migration", res)
    md = markdown(summary, started)
    bl.write_fragment("migration", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
