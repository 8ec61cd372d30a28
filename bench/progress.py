"""progress.py — what the guest feels: a host-side progress meter over the test guest's serial lines.

The guest (work=dirty ... pi=10 meter=1) prints `dirty: pass=P rate=R bad=B done=D` every pi ms of guest
time, D being the pages it has stored in all (kept in guest memory, so it carries across a migration or a
failover). A SerialMeter tails one or more serial files (a migration's source and destination, a Remus
primary and its standby) on a thread and stamps every line with the host's time.monotonic() when it
appears. disruption() then turns the samples into the figures issue 15 asks for, for any event window
(a migration, a Remus run, a failover):

    m = SerialMeter([src_serial, dst_serial]); m.start()
    ... wait for a steady baseline (m.wait_pass(2)) ...
    t0 = time.monotonic(); <migrate / protect / ...>; t1 = time.monotonic()
    time.sleep(0.5); samples = m.stop()
    d = disruption(samples, t0, t1)   # {"normal_rate", "longest_below_ms", "work_lost_ms", ...}

Definitions (docs/performance.md): the normal rate is the median pages/s over the baseline intervals
(those ending before t0, at most the last `baseline_s`); an interval between two consecutive lines is
*below* when its rate is < threshold (0.5) of normal; longest_below_ms is the longest run of adjacent
below intervals that overlaps [t0, t1 + tail_s]; work_lost_ms is the integral over that window of the
shortfall max(0, normal - rate) / normal, i.e. milliseconds of normal guest progress lost; gap_max_ms is
the longest time without any line. Host timestamps are polled every ~1 ms, so figures below ~2 ms are
noise.
"""
import os
import re
import statistics
import threading
import time

LINE = re.compile(rb"dirty: pass=(\d+) rate=(\d+) bad=(\d+) done=(\d+)")


class SerialMeter:
    """Tail serial files on a thread; samples are (host_time, done, bad, pass), merged over all files."""

    def __init__(self, paths, poll_s=0.001):
        self.paths = list(paths)
        self.poll_s = poll_s
        self.samples = []
        self._pos = {p: 0 for p in self.paths}
        self._buf = {p: b"" for p in self.paths}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._th = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._th.start()
        return self

    def _poll(self, now):
        for p in self.paths:
            try:
                with open(p, "rb") as f:
                    f.seek(self._pos[p])
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self._pos[p] += len(data)
            buf = self._buf[p] + data
            lines = buf.split(b"\n")
            self._buf[p] = lines.pop()
            with self._lock:
                for ln in lines:
                    m = LINE.search(ln)
                    if m:
                        self.samples.append((now, int(m[4]), int(m[3]), int(m[1])))

    def _run(self):
        while not self._stop.is_set():
            self._poll(time.monotonic())
            time.sleep(self.poll_s)

    def count(self):
        with self._lock:
            return len(self.samples)

    def wait_samples(self, n, timeout=30.0):
        end = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > end:
                raise TimeoutError(f"progress meter: fewer than {n} lines in {timeout} s ({self.paths})")
            time.sleep(0.01)

    def wait_pass(self, n, timeout=60.0):
        """Until the guest has finished n passes over its hot set (first touches are slow: steady state
        only after pass 1)."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                p = max((s[3] for s in self.samples), default=-1)
            if p >= n:
                return
            if time.monotonic() > end:
                raise TimeoutError(f"progress meter: guest not at pass {n} in {timeout} s ({self.paths})")
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._th.join(5)
        self._poll(time.monotonic())
        with self._lock:
            # one guest, several files: keep the lines in the order of its own counter
            return sorted(set(self.samples), key=lambda s: (s[1], s[0]))


def baseline_rate(samples, t0, baseline_s=1.0):
    """The guest's normal rate right before the event, in pages/s: the pages it stored in the last
    baseline_s before t0 over the host time they took (first to last line of the window). Not the
    median of the 10 ms intervals: a line delayed on the host makes one interval slow and the next fast,
    and under CPU contention those medians ranged 8 k - 15,000 k pages/s between runs."""
    w = [(t, d) for t, d, *_ in samples if t0 - baseline_s <= t <= t0]
    if len(w) < 6 or w[-1][0] <= w[0][0]:
        raise ValueError(f"progress meter: only {len(w)} baseline lines before the event")
    return (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])


def flag_noisy(rows, key="normal_rate", factor=2.0):
    """Mark rows (dicts with key) whose baseline differs more than factor x from the median of all of
    them (the machine was busier or quieter during that run): row["noisy"] = True. Returns the median."""
    xs = [r[key] for r in rows if r.get(key)]
    if not xs:
        return None
    med = statistics.median(xs)
    for r in rows:
        v = r.get(key)
        r["noisy"] = bool(v) and (v > factor * med or v < med / factor)
    return med


def disruption(samples, t0, t1, threshold=0.5, baseline_s=1.0, tail_s=0.5):
    """Figures for the event [t0, t1] (host time.monotonic()) from SerialMeter samples."""
    iv = []  # (start, end, rate pages/s)
    for (ta, da, *_), (tb, db, *_) in zip(samples, samples[1:]):
        if tb > ta and db >= da:
            iv.append((ta, tb, (db - da) / (tb - ta)))
    base = [r for a, b, r in iv if b <= t0 and b >= t0 - baseline_s]
    if len(base) < 5:
        raise ValueError(f"progress meter: only {len(base)} baseline intervals before the event")
    normal = baseline_rate(samples, t0, baseline_s)
    w0, w1 = t0, t1 + tail_s
    lost = 0.0
    longest = cur = 0.0
    cur_end = None
    gap = 0.0
    for a, b, r in iv:
        if b <= w0 or a >= w1:
            continue
        gap = max(gap, b - a)
        ov = min(b, w1) - max(a, w0)
        if ov > 0:
            lost += ov * max(0.0, normal - r) / normal
        if r < threshold * normal:
            cur = cur + (b - a) if cur_end is not None and abs(a - cur_end) < 1e-9 else (b - a)
            cur_end = b
            longest = max(longest, cur)
        else:
            cur_end = None
    bad = max((s[2] for s in samples), default=None)
    return {"normal_rate": round(normal), "longest_below_ms": round(longest * 1e3, 1),
            "work_lost_ms": round(lost * 1e3, 1), "gap_max_ms": round(gap * 1e3, 1),
            "event_ms": round((t1 - t0) * 1e3, 1), "bad": bad, "samples": len(samples)}


def spread(xs):
    """min / median / max of the numbers in xs (None dropped), or None."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def noise_note(a, b):
    """'lower', 'higher' or 'within noise' for spread a against b: an effect counts only when the
    min-max ranges do not overlap, and only with >= 3 runs each."""
    if not a or not b:
        return "n/a"
    if a["n"] < 3 or b["n"] < 3:
        return "too few runs to tell (fewer than 3 each)"
    if a["max"] < b["min"]:
        return "lower"
    if a["min"] > b["max"]:
        return "higher"
    return "within noise"


if __name__ == "__main__":  # self-check on synthetic samples
    s = [(i * 0.01, i * 1000, 0, 0) for i in range(200)]  # 100 k pages/s
    s += [(2.0 + 0.2, 200 * 1000 + 10, 0, 0)]  # 200 ms nearly frozen
    s += [(2.2 + (i + 1) * 0.01, 200010 + (i + 1) * 1000, 0, 0) for i in range(100)]
    d = disruption(s, 1.995, 2.25)
    assert abs(d["longest_below_ms"] - 210) < 1, d
    assert abs(d["work_lost_ms"] - 200) < 12, d
    assert abs(d["normal_rate"] - 100000) < 1000, d
    rows = [{"normal_rate": x} for x in (100, 110, 90, 300, 40)]
    assert flag_noisy(rows) == 100 and [r["noisy"] for r in rows] == [False, False, False, True, True]
    print(os.path.basename(__file__), "ok", d)
