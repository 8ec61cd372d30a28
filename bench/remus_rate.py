"""remus_rate.py — Remus guest speed matrix: hot set x page content x (unprotected, delta on, delta off).

Used by remus_bench.py. For each hot set (16, 64 MiB) and page content (compressible: the test guest's
pages are two words and zeros, ~750:1; random: `fill=random`, the words between the two checked ones
random once, so pages do not compress but change in two words per pass), RATE_RUNS rounds run the
three configurations interleaved (unprotected, protected with delta encoding, protected with
`--delta-cache 0`) at 25 ms epochs, so drift hits all alike. Each run reports the guest's mean rate,
a host-side progress meter (guest progress lines every 20 ms, stamped on the host as they appear:
longest interval below 50 % of the unprotected median rate, work lost in ms of guest time), ack
latency p50/p99, skipped ticks, the phase breakdown of the primary's status (remus.phases) and the
delta counters. Rows give min / median / max over the runs. Protected runs use a 1 s heartbeat
timeout (a loaded machine starves threads past the default 200 ms). `fill=random` is the test guest's
option (guest/work_dirty.c, added with the post-copy work of issue 15).
"""
import os
import statistics
import threading
import time

from benchlib import ctl, dirty_lines, wait_for, DIRTY_RX, read

PI_MS = 20  # guest progress line interval


class Meter(threading.Thread):
    """Stamp the guest's progress lines on the host as they appear in the serial file."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stop, self.lines = path, threading.Event(), []  # (host_t, rate)

    def run(self):
        n = 0
        while not self.stop.is_set():
            ms = list(DIRTY_RX.finditer(read(self.path)))
            t = time.monotonic()
            for m in ms[n:]:
                self.lines.append((t, int(m[2])))
            n = len(ms)
            time.sleep(0.004)


def disruption(lines, normal, t0, t1):
    """Longest interval (ms) below 50 % of normal, work lost (ms of guest time at the normal rate)."""
    pts = [(t, r) for t, r in lines if t0 <= t <= t1]
    longest = cur = lost = 0.0
    for (ta, _), (tb, r) in zip(pts, pts[1:]):
        dt = (tb - ta) * 1000
        # the guest's rate r is over its own interval since the previous line, which a stall stretches
        # like the host gap dt (the guest clock runs while it is paused)
        frac = min(1.0, r / normal) if normal else 1.0
        lost += (1 - frac) * dt
        cur = cur + dt if frac < 0.5 else 0.0
        longest = max(longest, cur)
    return round(longest, 1), round(lost, 1)


def one_run(rb, tmp, ws, fill, mode, secs, normal):
    """mode: 'unprotected', 'delta' or 'nodelta'. normal: unprotected rate for the meter (or None)."""
    cmd = f"work=dirty ws={ws} pi={PI_MS}" + (" fill=random" if fill == "random" else "")
    procs = []
    try:
        pr, serial, sock = rb.run_vm(tmp, "pr", cmd)
        procs.append(pr)
        wait_for(lambda: dirty_lines(serial), 20, "guest start", 0.05)
        if mode != "unprotected":
            port = rb.free_port()
            sb, _, ssock = rb.run_vm(tmp, "sb", None, ["--standby", "--listen", f"127.0.0.1:{port}"])
            procs.append(sb)
            # a 1 s heartbeat timeout: on a loaded 2-core machine 200 ms of starvation is common and
            # would end the run (the epoch interval, what is measured, is unaffected)
            rb.protect(sock, f"127.0.0.1:{port}", 25,
                       ["--heartbeat-timeout", "1000"] + (["--delta-cache", "0"] if mode == "nodelta" else []))
        time.sleep(1.0)
        meter = Meter(serial)
        meter.start()
        n0 = len(dirty_lines(serial))
        t0 = time.monotonic()
        time.sleep(secs)
        t1 = time.monotonic()
        meter.stop.set()
        meter.join()
        lines = dirty_lines(serial)[n0:]
        rates = [r for _, r, _ in lines]
        out = {"rate": statistics.mean(rates) if rates else 0,
               "bad": max((b for _, _, b in dirty_lines(serial)), default=0), "meter": meter.lines,
               "t0": t0, "t1": t1}
        if mode != "unprotected":
            st = ctl(sock, {"cmd": "status"})["remus"]
            sst = ctl(ssock, {"cmd": "status"}).get("remus", {})
            out.update(epochs=st["epochs"], skipped=st["epochs_skipped"], dirty_avg=st["dirty_pages"]["avg"],
                       hot=st["dirty_pages"].get("hot"), ack_p50=st["ack_latency"]["p50_ms"],
                       ack_p99=st["ack_latency"]["p99_ms"], wire=st["bytes"]["wire"], raw=st["bytes"]["raw"],
                       phases={k: (v["p50_us"], v["p99_us"]) for k, v in st.get("phases", {}).items()},
                       delta=st.get("delta"), apply_ms_last=sst.get("apply_ms_last"))
        return out
    finally:
        for p in procs:
            rb.kill(p)


def mmm(xs):
    xs = [x for x in xs if x is not None]
    return [min(xs), statistics.median(xs), max(xs)] if xs else None


def matrix(rb, tmp, runs, secs, sets=("16M", "64M"), fills=("zero", "random")):
    rows = []
    for ws in sets:
        for fill in fills:
            got = {m: [] for m in ("unprotected", "delta", "nodelta")}
            for i in range(runs):  # interleaved
                for m in got:
                    normal = statistics.median(x["rate"] for x in got["unprotected"]) if got["unprotected"] else None
                    got[m].append(one_run(rb, tmp, ws, fill, m, secs, normal))
            normal = statistics.median(x["rate"] for x in got["unprotected"])
            for m, rs in got.items():
                for x in rs:
                    x["longest_below_50_ms"], x["work_lost_ms"] = disruption(x.pop("meter"), normal, x.pop("t0"),
                                                                             x.pop("t1"))
                row = {"ws": ws, "fill": fill, "mode": m, "runs": len(rs),
                       "rate": mmm([x["rate"] for x in rs]),
                       "rel": [round(v / normal, 3) for v in mmm([x["rate"] for x in rs])],
                       "longest_below_50_ms": mmm([x["longest_below_50_ms"] for x in rs]),
                       "work_lost_ms": mmm([x["work_lost_ms"] for x in rs]),
                       "secs": secs, "bad": max(x["bad"] for x in rs)}
                if m != "unprotected":
                    row.update({k: mmm([x[k] for x in rs]) for k in ("ack_p50", "ack_p99", "skipped", "epochs",
                                                                      "dirty_avg", "hot", "wire", "raw")})
                    names = rs[0]["phases"].keys()
                    row["phases"] = {k: [statistics.median(x["phases"][k][0] for x in rs),
                                         statistics.median(x["phases"][k][1] for x in rs)] for k in names}
                    row["delta"] = sorted((x["delta"] for x in rs if x.get("delta")),
                                          key=lambda d: d.get("bytes_saved", 0))[len(rs) // 2]
                    row["apply_ms_last"] = mmm([x["apply_ms_last"] for x in rs])
                # protected ranges overlapping the unprotected range are within the noise
                u = [x["rate"] for x in got["unprotected"]]
                row["within_noise"] = m != "unprotected" and max(x["rate"] for x in rs) >= min(u)
                rows.append(row)
                print("rate", {k: v for k, v in row.items() if k != "phases"}, flush=True)
    return rows


def fmt3(v, f="{:.0f}"):
    return " / ".join(f.format(x) for x in v) if v else ""


def render(rows):
    L = ["### Guest speed protected vs unprotected, with and without delta encoding (25 ms epochs)", "",
         "`work=dirty`: the guest rewrites two words of every page of its hot set per pass. *zero*: the rest of "
         "each page is zero (compresses ~750:1); *random*: `fill=random`, the rest is random (incompressible, "
         "but a pass changes two words: the case delta encoding is for). Each cell is min / median / max over "
         "the interleaved runs. Meter: guest progress lines every 20 ms stamped on the host; "
         "*below 50 %* = longest interval with less than half the unprotected median rate; *lost* = work lost "
         "in ms of guest time over the run.", "",
         "| hot set | pages | mode | guest vs unprotected | below 50 % (ms) | lost (ms) | ack p50 (ms) | ack p99 (ms) | "
         "skipped / epochs | wire MB | bad |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rel = fmt3([x * 100 for x in r["rel"]], "{:.0f}%") + (" (noise)" if r.get("within_noise") else "")
        if r["mode"] == "unprotected":
            L.append(f"| {r['ws']} | {r['fill']} | unprotected | {rel} | {fmt3(r['longest_below_50_ms'])} | "
                     f"{fmt3(r['work_lost_ms'])} | | | | | {r['bad']} |")
            continue
        sk = f"{fmt3(r['skipped'])} of {r['epochs'][1] + r['skipped'][1]:.0f}"
        L.append(f"| {r['ws']} | {r['fill']} | {r['mode']} | {rel} | {fmt3(r['longest_below_50_ms'])} | "
                 f"{fmt3(r['work_lost_ms'])} | {fmt3(r['ack_p50'], '{:.1f}')} | {fmt3(r['ack_p99'], '{:.1f}')} | {sk} | "
                 f"{fmt3([w / 1e6 for w in r['wire']], '{:.1f}')} | {r['bad']} |")
    L += ["", "Where an epoch's time goes (median over the runs of each phase's p50 / p99, µs; status `remus.phases`): "
          "kick..copy are inside the pause, queue = pause end -> the sender starts, encode = zero scan, XOR, zstd, "
          "send = socket writes, ack_wait = last byte sent -> ACK (the standby's read, decode, apply), "
          "ack = pause end -> ACK.", ""]
    prot = [r for r in rows if r["mode"] != "unprotected"]
    if prot:
        names = list(prot[0]["phases"].keys())
        L += ["| hot set | pages | mode | " + " | ".join(names) + " | delta: hits / unchanged / as delta / dense |",
              "| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
        for r in prot:
            d = r.get("delta") or {}
            dd = f"{d.get('hits', 0)} / {d.get('unchanged', 0)} / {d.get('delta_pages', 0)} / {d.get('dense', 0)}" \
                if d.get("enabled") else "off"
            L.append(f"| {r['ws']} | {r['fill']} | {r['mode']} | "
                     + " | ".join(f"{r['phases'][k][0]:.0f} / {r['phases'][k][1]:.0f}" for k in names) + f" | {dd} |")
    return L
