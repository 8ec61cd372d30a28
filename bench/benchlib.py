"""benchlib.py — shared helpers of the python benchmarks (bench/*.py): processes, serial files, QMP."""
import json
import os
import re
import socket
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))
import vmproc  # noqa: E402
from vmproc import ctl  # noqa: E402,F401  (re-exported for the bench scripts)
BUILD = os.environ.get("DOPPEL_BUILD") or os.path.join(REPO, "build")
DOPPEL = os.path.join(BUILD, "doppel")
GUEST = os.path.join(BUILD, "guest.elf")
QEMU = "qemu-system-x86_64"
DIRTY_RX = re.compile(r"dirty: pass=(\d+) rate=(\d+) bad=(\d+)")


def read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def dirty_lines(path):
    return [(int(m[1]), int(m[2]), int(m[3])) for m in DIRTY_RX.finditer(read(path))]


def wait_for(pred, timeout, what, interval=0.001):
    return vmproc.wait_for(pred, timeout, interval=interval, what=what)


def doppel_argv(tmp, name, cmdline, mem="256M", extra=()):
    serial = os.path.join(tmp, f"{name}.serial")
    sock = os.path.join(tmp, f"{name}.sock")
    for p in (serial, sock):
        if os.path.exists(p):
            os.unlink(p)
    argv = [DOPPEL, "run", "--name", name, "--mem", mem, "--serial", f"file:{serial}",
            "--control", sock]
    if cmdline is not None:
        argv += ["--kernel", GUEST, "--cmdline", cmdline]
    return argv + list(extra), serial, sock


def qemu_argv(tmp, name, cmdline, mem="256M", extra=()):
    serial = os.path.join(tmp, f"{name}.serial")
    if os.path.exists(serial):
        os.unlink(serial)
    argv = [QEMU, "-M", "microvm,acpi=off", "-enable-kvm", "-m", mem, "-nodefaults",
            "-no-user-config", "-nographic", "-serial", f"file:{serial}",
            "-device", "isa-debug-exit,iobase=0x501,iosize=2", "-kernel", GUEST,
            "-append", cmdline] + list(extra)
    return argv, serial


def popen(argv):
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(p, timeout=10):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class QMP:
    """A minimal QMP client over a unix socket."""

    def __init__(self, path, timeout=20):
        wait_for(lambda: os.path.exists(path), timeout, "QMP socket", 0.005)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self._line()  # greeting
        self.cmd("qmp_capabilities")

    def _line(self):
        line = self.f.readline()
        if not line:
            raise EOFError("QMP closed")
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write((json.dumps(msg) + "\n").encode())
        self.f.flush()
        while True:
            r = self._line()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")

    def close(self):
        self.s.close()


def stats(xs):
    xs = list(xs)
    if not xs:
        return {"mean": None, "min": None, "max": None, "stdev": None, "n": 0}
    return {"mean": statistics.mean(xs), "min": min(xs), "max": max(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def write_json(name, obj):
    d = os.path.join(REPO, "bench", "results")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"{name}.json")
    with open(p, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    return p


def write_fragment(name, text):
    d = os.path.join(REPO, "docs", "perf")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"{name}.md")
    with open(p, "w") as f:
        f.write(text)
    return p
