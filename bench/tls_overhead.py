#!/usr/bin/env python3
"""tls_overhead.py — Remus and live migration with TLS 1.3 (--tls-dir) vs plaintext, same machine, same
run, interleaved (plain, tls, plain, tls, ...). Writes bench/results/tls.json and docs/perf/tls.md.

Migration: work=dirty ws=64M in 512M, --compress none (the stream at full size: where encryption costs
most) and auto; throughput = guest bytes moved (bytes_raw) / total time, and the downtime.
Remus: work=dirty ws=16M in 128M; the live full copy of `protect` (ms until the first checkpoint is
acknowledged: stream throughput), then 3 s of 25 ms epochs: pause p50/p99 (encryption must not be in
the pause), ack latency p50, epochs. Targets: TLS >= 90 % of plaintext throughput; pause p50 unchanged
(within 25 % or 0.2 ms on this noisy machine). QEMU is not compared here (its TLS migration uses the
same GnuTLS); docs/perf/migration.md compares the plaintext paths. Env: RUNS (default 3)."""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOPPEL = str(REPO / "build" / "doppel")
GUEST = str(REPO / "build" / "guest.elf")
RUNS = int(os.environ.get("RUNS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    raise TimeoutError("bench: condition not reached")


def status(sock):
    r = subprocess.run([DOPPEL, "status", "--control", sock, "--json"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def serial_ok(path):
    try:
        return re.search(r"dirty: pass=\d+", Path(path).read_text(errors="replace")) is not None
    except OSError:
        return False


def kill(p):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()


def run(argv, tmp, name):
    return subprocess.Popen([DOPPEL, "run", "--name", name, "--control", f"{tmp}/{name}.sock", "--serial",
                             f"file:{tmp}/{name}.serial", *argv], stdout=subprocess.DEVNULL,
                            stderr=open(f"{tmp}/{name}.err", "w"))


def tls_args(certs, mode, me, peer):
    return ["--tls-dir", f"{certs}/{me}", "--tls-peer-name", peer] if mode == "tls" else []


def migration(tmp, certs, mode, compress):
    port = free_port()
    src = run(["--mem", "512M", "--kernel", GUEST, "--cmdline", "work=dirty ws=64M pi=200"], tmp, "src")
    dst = run(["--mem", "512M", "--incoming", f"127.0.0.1:{port}", *tls_args(certs, mode, "dst", "src")], tmp,
              "dst")
    try:
        wait_for(lambda: serial_ok(f"{tmp}/src.serial") and status(f"{tmp}/dst.sock"), 30)
        r = subprocess.run([DOPPEL, "migrate", "--control", f"{tmp}/src.sock", "--to", f"127.0.0.1:{port}",
                            "--json", "--compress", compress, *tls_args(certs, mode, "src", "dst")],
                           capture_output=True, text=True, timeout=120)
        if r.returncode:
            return {"error": r.stderr.strip()}
        j = json.loads(r.stdout)
        return {"total_ms": round(j["total_ms"], 1), "downtime_ms": round(j["downtime_ms"], 2),
                "bytes_wire": j["bytes_wire"], "bytes_raw": j["bytes_raw"],
                # guest memory moved per second, end to end (compress auto may choose differently per run)
                "mbps": round(j["bytes_raw"] / 1e6 / (j["total_ms"] / 1e3), 1)}
    finally:
        kill(src)
        kill(dst)


def remus(tmp, certs, mode):
    port = free_port()
    sb = run(["--mem", "128M", "--standby", "--listen", f"127.0.0.1:{port}", *tls_args(certs, mode, "sb", "pr")],
             tmp, "sb")
    pr = run(["--mem", "128M", "--kernel", GUEST, "--cmdline", "work=dirty ws=16M pi=200"], tmp, "pr")
    try:
        wait_for(lambda: serial_ok(f"{tmp}/pr.serial") and status(f"{tmp}/sb.sock"), 30)
        t0 = time.monotonic()
        r = subprocess.run([DOPPEL, "protect", "pr", "--control", f"{tmp}/pr.sock", "--peer", f"127.0.0.1:{port}",
                            *tls_args(certs, mode, "pr", "sb")], capture_output=True, text=True, timeout=120)
        protect_ms = (time.monotonic() - t0) * 1e3
        if r.returncode:
            return {"error": r.stderr.strip()}
        s0 = status(f"{tmp}/pr.sock")["remus"]
        time.sleep(3)
        s = status(f"{tmp}/pr.sock")["remus"]
        return {"protect_ms": round(protect_ms, 1), "full_copy_mbps": round(128 * 1.048576 / (protect_ms / 1e3), 1),
                "epochs": s["epochs"] - s0["epochs"], "pause_p50_us": round(s["pause"]["p50_us"], 1),
                "pause_p99_us": round(s["pause"]["p99_us"], 1),
                "ack_p50_ms": round(s["ack_latency"]["p50_ms"], 3), "tls": status(f"{tmp}/pr.sock")["tls"]}
    finally:
        kill(pr)
        kill(sb)


def med(rows, key):
    v = [r[key] for r in rows if key in r]
    return round(statistics.median(v), 2) if v else None


def main():
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlsbench-") as tmp:
        certs = f"{tmp}/certs"
        subprocess.run(["sh", str(REPO / "scripts" / "tls-certs.sh"), certs, "src", "dst", "pr", "sb"], check=True,
                       stdout=subprocess.DEVNULL)
        for i in range(RUNS):
            for mode in ("plain", "tls"):
                for comp in ("none", "auto"):
                    rows.append({"bench": "migration", "compress": comp, "mode": mode, "run": i,
                                 **migration(tmp, certs, mode, comp)})
                    print(json.dumps(rows[-1]), flush=True)
                rows.append({"bench": "remus", "mode": mode, "run": i, **remus(tmp, certs, mode)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for key, sel, metric in (("migration none", ("migration", "none"), "mbps"),
                             ("migration auto", ("migration", "auto"), "mbps"),
                             ("remus full copy", ("remus", None), "full_copy_mbps")):
        for mode in ("plain", "tls"):
            rs = [r for r in rows if r["bench"] == sel[0] and r["mode"] == mode and (sel[1] is None or r["compress"] == sel[1])]
            summary.setdefault(key, {})[mode] = {m: med(rs, m) for m in (metric, "downtime_ms", "pause_p50_us", "pause_p99_us", "ack_p50_ms") if med(rs, m) is not None}
    targets = []
    for key, metric in (("migration none", "mbps"), ("migration auto", "mbps"), ("remus full copy", "full_copy_mbps")):
        p, t = summary[key]["plain"].get(metric), summary[key]["tls"].get(metric)
        targets.append({"what": f"{key}: TLS >= 90 % of plaintext throughput",
                        "met": bool(p and t and t >= 0.9 * p), "detail": f"plain {p} MB/s, tls {t} MB/s"})
    pp, pt = summary["remus full copy"]["plain"].get("pause_p50_us"), summary["remus full copy"]["tls"].get("pause_p50_us")
    targets.append({"what": "Remus epoch pause p50 unchanged with TLS (within 25 % or 200 us)",
                    "met": bool(pp and pt and (pt <= pp * 1.25 or pt - pp <= 200)), "detail": f"plain {pp} us, tls {pt} us"})
    res = {"bench": "tls", "started": started, "runs": RUNS, "rows": rows, "summary": summary, "targets": targets}
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "tls.json").write_text(json.dumps(res, indent=1) + "\n")
    md = [f"## TLS 1.3 overhead (Remus and migration)\n",
          f"`bench/tls_overhead.sh`, {started}, {RUNS} interleaved runs, medians. Loopback; GnuTLS in user space "
          "(no kTLS in this kernel), AES-128-GCM; migration encrypts/decrypts on its stream threads (direct path), "
          "Remus through the relay threads, both off the pause path (docs/security.md).\n",
          "| case | plain | TLS |", "|---|---|---|"]
    for key, d in summary.items():
        for m in d["plain"]:
            md.append(f"| {key}: {m} | {d['plain'].get(m)} | {d['tls'].get(m)} |")
    md += ["", "| target | met | detail |", "|---|---|---|"]
    md += [f"| {t['what']} | {'yes' if t['met'] else 'no'} | {t['detail']} |" for t in targets]
    (REPO / "docs" / "perf").mkdir(parents=True, exist_ok=True)
    (REPO / "docs" / "perf" / "tls.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
