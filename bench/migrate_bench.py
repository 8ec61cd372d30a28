#!/usr/bin/env python3
"""migrate_bench.py — live migration: doppel vs QEMU 7.2 on the same guest (build/guest.elf work=dirty),
same machine, same run. Writes bench/results/migration.json and docs/perf/migration.md.

Per hot-set size (16M, 64M, 200M): doppel (downtime target 10 ms, unlimited bandwidth, compress auto),
QEMU at its defaults, QEMU with unlimited bandwidth, QEMU with unlimited bandwidth + multifd (2 channels).
QEMU runs are capped at QEMU_CAP_S and reported as "did not converge" past it. After each migration the
destination's serial console is read: the guest's bad= counter must be 0 and its pass counter must go on."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOPPEL = str(REPO / "build" / "doppel")
GUEST = str(REPO / "build" / "guest.elf")
QEMU = "qemu-system-x86_64"
MEM = "512M"
SIZES = os.environ.get("SIZES", "16M 64M 200M").split()
QEMU_CAP_S = float(os.environ.get("QEMU_CAP_S", "20"))
PI = 200
DIRTY = re.compile(r"dirty: pass=(\d+) rate=(\d+) bad=(\d+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dirty_lines(path):
    try:
        return [tuple(map(int, m.groups())) for m in DIRTY.finditer(Path(path).read_text(errors="replace"))]
    except FileNotFoundError:
        return []


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def guest_after(src_serial, dst_serial):
    """bad= on the destination (max over its lines) and whether the pass counter went on."""
    wait_for(lambda: len(dirty_lines(dst_serial)) >= 3, 10)
    s, d = dirty_lines(src_serial), dirty_lines(dst_serial)
    if not d:
        return {"bad": None, "continued": False}
    return {"bad": max(x[2] for x in s + d), "continued": bool(s) and d[0][0] >= s[-1][0]}


def kill(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait(10)


# ---- doppel ----------------------------------------------------------------------------------------------

def run_doppel(ws, tmp):
    port = free_port()
    ss, ds = f"{tmp}/d-src-{ws}.serial", f"{tmp}/d-dst-{ws}.serial"
    cs, cd = f"{tmp}/d-src.sock", f"{tmp}/d-dst.sock"
    common = ["--mem", MEM, "--vcpus", "1"]
    src = subprocess.Popen([DOPPEL, "run", "--name", "bsrc", "--control", cs, "--serial", f"file:{ss}",
                            "--kernel", GUEST, "--cmdline", f"work=dirty ws={ws} pi={PI}", *common],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dst = subprocess.Popen([DOPPEL, "run", "--name", "bdst", "--control", cd, "--serial", f"file:{ds}",
                            "--incoming", f"127.0.0.1:{port}", *common],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    row = {"vmm": "doppel", "config": "downtime 10 ms, unlimited, compress auto", "ws": ws}
    try:
        # The destination serves status once it is ready (its RAM is prefaulted before the loop runs).
        wait_for(lambda: len(dirty_lines(ss)) >= 3 and subprocess.run(
            [DOPPEL, "status", "--control", cd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0, 30)
        r = subprocess.run([DOPPEL, "migrate", "--control", cs, "--to", f"127.0.0.1:{port}", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        if r.returncode != 0:
            row.update(converged=False, error=r.stderr.strip())
            return row
        res = json.loads(r.stdout)
        row.update(converged=True, total_ms=round(res["total_ms"], 1), downtime_ms=round(res["downtime_ms"], 2),
                   bytes_wire=res["bytes_wire"], bytes_raw=res["bytes_raw"], rounds=res["rounds"],
                   compress=res["compress"], max_throttle_pct=res["max_throttle_pct"],
                   downtime_source=res["downtime_source"])
        row.update(guest_after(ss, ds))
        src.wait(10)
        return row
    finally:
        kill(src)
        kill(dst)


# ---- QEMU ------------------------------------------------------------------------------------------------

class QMP:
    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
        wait_for(lambda: os.path.exists(path), 10)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.f.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write((json.dumps({"execute": name, "arguments": args}) + "\n").encode())
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")

    def close(self):
        self.s.close()


def qemu_argv(serial, qmp, ws, incoming=None):
    a = [QEMU, "-M", "microvm,acpi=off", "-enable-kvm", "-m", MEM, "-nodefaults", "-no-user-config",
         "-nographic", "-serial", f"file:{serial}", "-device", "isa-debug-exit,iobase=0x501,iosize=2",
         "-kernel", GUEST, "-append", f"work=dirty ws={ws} pi={PI}", "-qmp", f"unix:{qmp},server,nowait"]
    if incoming:
        a += ["-incoming", incoming]
    return a


def run_qemu(ws, tmp, config):
    port = free_port()
    ss, ds = f"{tmp}/q-src-{ws}-{config}.serial", f"{tmp}/q-dst-{ws}-{config}.serial"
    qs, qd = f"{tmp}/q-src-{config}.qmp", f"{tmp}/q-dst-{config}.qmp"
    for p in (qs, qd):
        if os.path.exists(p):
            os.unlink(p)
    src = subprocess.Popen(qemu_argv(ss, qs, ws), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL)
    dst = subprocess.Popen(qemu_argv(ds, qd, ws, f"tcp:127.0.0.1:{port}"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    row = {"vmm": "qemu-7.2", "config": config, "ws": ws}
    try:
        wait_for(lambda: len(dirty_lines(ss)) >= 3, 30)
        qm, qdm = QMP(qs), QMP(qd)
        params = {}
        if config in ("unlimited", "multifd"):
            params["max-bandwidth"] = 100 << 30
        if config == "multifd":
            caps = [{"capability": "multifd", "state": True}]
            qm.cmd("migrate-set-capabilities", capabilities=caps)
            qdm.cmd("migrate-set-capabilities", capabilities=caps)
            params["multifd-channels"] = 2
            qdm.cmd("migrate-set-parameters", **{"multifd-channels": 2})
        if params:
            qm.cmd("migrate-set-parameters", **params)
        p = qm.cmd("query-migrate-parameters")
        row["downtime_limit_ms"] = p.get("downtime-limit")
        row["max_bandwidth"] = p.get("max-bandwidth")
        qm.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        t0 = time.monotonic()
        st = {}
        while time.monotonic() - t0 < QEMU_CAP_S:
            st = qm.cmd("query-migrate")
            if st.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        ram = st.get("ram", {})
        row.update(rounds=ram.get("dirty-sync-count"),
                   bytes_wire=ram.get("transferred", 0) + st.get("multifd-bytes", 0) * 0)
        if st.get("status") == "completed":
            row.update(converged=True, total_ms=st.get("total-time"), downtime_ms=st.get("downtime"))
            row.update(guest_after(ss, ds))
        else:
            row.update(converged=False, status=st.get("status"), total_ms=None, downtime_ms=None,
                       note=f"did not converge in {QEMU_CAP_S:.0f} s")
            try:
                qm.cmd("migrate_cancel")
            except Exception:
                pass
        qm.close()
        qdm.close()
        return row
    except Exception as e:
        row.update(converged=False, error=str(e))
        return row
    finally:
        kill(src)
        kill(dst)


# ---- report ----------------------------------------------------------------------------------------------

def fmt(v, suffix=""):
    return "—" if v is None else f"{v}{suffix}"


def markdown(rows, targets, started):
    out = ["## Live migration: doppel vs QEMU 7.2", "",
           f"Generated by `bench/migrate_bench.sh` on {started} (same machine, same run, same guest "
           "`build/guest.elf work=dirty ws=SIZE pi=200`, 512 MiB, 1 vCPU, loopback TCP). "
           "doppel: downtime target 10 ms, no bandwidth cap, `--compress auto`. QEMU: `-M microvm,acpi=off "
           "-enable-kvm`, `defaults` = QEMU's migration parameters untouched (downtime-limit 300 ms, "
           "max-bandwidth 128 MiB/s), `unlimited` = max-bandwidth 100 GiB/s, `multifd` = unlimited + multifd "
           f"with 2 channels; QEMU runs capped at {QEMU_CAP_S:.0f} s. "
           "downtime: doppel = source pause -> destination vCPUs started (destination CLOCK_MONOTONIC "
           "timestamp in the ack, same host); QEMU = its own `downtime` from query-migrate.", "",
           "| hot set | VMM | config | converged | total ms | downtime ms | wire MiB | rounds | bad after | counter continued |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        wire = r.get("bytes_wire")
        out.append(f"| {r['ws']} | {r['vmm']} | {r['config']} | {'yes' if r.get('converged') else 'no: ' + r.get('note', r.get('error', r.get('status', '?')))} | "
                   f"{fmt(r.get('total_ms'))} | {fmt(r.get('downtime_ms'))} | "
                   f"{'—' if wire is None else round(wire / 1048576, 1)} | {fmt(r.get('rounds'))} | "
                   f"{fmt(r.get('bad'))} | {fmt(r.get('continued'))} |")
    out += ["", "Notes: QEMU at its defaults is bandwidth-capped at 128 MiB/s, while the guest re-dirties its "
            "hot set faster than that, so with 64M/200M each round re-sends the whole set and it never gets "
            "under the 300 ms downtime-limit. doppel converges because (1) the per-round page rate is end to "
            "end and high (zstd: the guest's pages are a counter plus zeros, ~100x smaller; 2 worker threads), "
            "(2) dirty logging's write-protect faults bound the guest's dirty rate, and (3) the auto-converge "
            "throttle (50 %+ of each 10 ms slice) kicks in when a round does not shrink. doppel's bytes_wire "
            "is dominated by the one raw chunk `--compress auto` sends to measure the link (16 MiB). "
            "Numbers vary run to run on this shared 2-core machine (other jobs run concurrently); "
            "see bench/results/migration.json for every field.", "", "### Targets", ""]
    for t in targets:
        out.append(f"- {t['what']}: **{'met' if t['met'] else 'missed'}** ({t['detail']})")
    out.append("")
    return "\n".join(out)


def main():
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    with tempfile.TemporaryDirectory(prefix="migbench-") as tmp:
        for ws in SIZES:
            rows.append(run_doppel(ws, tmp))
            print(json.dumps(rows[-1]), flush=True)
            for cfg in ("defaults", "unlimited", "multifd"):
                rows.append(run_qemu(ws, tmp, cfg))
                print(json.dumps(rows[-1]), flush=True)
    d = [r for r in rows if r["vmm"] == "doppel"]
    d200 = [r for r in d if r["ws"] == "200M"]
    targets = [
        {"what": "doppel converges in every case", "met": all(r.get("converged") for r in d),
         "detail": ", ".join(f"{r['ws']}: {'yes' if r.get('converged') else 'no'}" for r in d)},
        {"what": "guest bad=0 after every completed migration",
         "met": all(r.get("bad") == 0 for r in rows if r.get("converged")),
         "detail": ", ".join(f"{r['vmm']}/{r['config'].split(',')[0]}/{r['ws']}: {r.get('bad')}" for r in rows if r.get("converged"))},
    ]
    if d200:
        r = d200[0]
        targets.append({"what": "200M hot set: doppel downtime <= 10 ms",
                        "met": bool(r.get("converged") and r["downtime_ms"] <= 10),
                        "detail": f"{r.get('downtime_ms')} ms"})
        targets.append({"what": "200M hot set: doppel total <= 0.6 s",
                        "met": bool(r.get("converged") and r["total_ms"] <= 600),
                        "detail": f"{r.get('total_ms')} ms"})
    res = {"bench": "migration", "started": started, "mem": MEM, "qemu_cap_s": QEMU_CAP_S, "rows": rows,
           "targets": targets}
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "migration.json").write_text(json.dumps(res, indent=1) + "\n")
    (REPO / "docs" / "perf").mkdir(parents=True, exist_ok=True)
    (REPO / "docs" / "perf" / "migration.md").write_text(markdown(rows, targets, started))
    print(markdown(rows, targets, started))
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
