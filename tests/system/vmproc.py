"""vmproc.py — start and drive real `doppel run` processes from system tests."""
import json
import os
import re
import signal
import socket
import subprocess
import time


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns something truthy; raise TimeoutError naming `what`."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def ctl(path, req, timeout=5.0):
    """Send one JSON request line to a control socket, return the decoded reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


class VM:
    """A `doppel run` process with its serial console in a file and a private control socket."""

    def __init__(self, doppel, tmp, name="vm", kernel=None, cmdline="work=idle", mem="256M",
                 extra=(), netns=None, vcpus=None, serial=None):
        self.tmp = tmp
        self.name = name
        self.serial = serial or os.path.join(tmp, f"{name}.serial")
        self.control = os.path.join(tmp, f"{name}.sock")
        self.stderr_path = os.path.join(tmp, f"{name}.stderr")
        argv = [doppel, "run", "--name", name, "--mem", mem, "--serial", f"file:{self.serial}",
                "--control", self.control]
        if kernel:
            argv += ["--kernel", kernel]
        if cmdline is not None:
            argv += ["--cmdline", cmdline]
        if vcpus:
            argv += ["--vcpus", str(vcpus)]
        argv += list(extra)
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        self.argv = argv
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err)

    def output(self):
        try:
            with open(self.serial, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr(self):
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()

    def lines(self, prefix):
        return [l for l in self.output().splitlines() if l.startswith(prefix)]

    def dirty(self):
        """Parsed `dirty:` lines: list of dicts with pass, rate, bad."""
        out = []
        for l in self.lines("dirty:"):
            m = re.match(r"dirty: pass=(\d+) rate=(\d+) bad=(\d+)$", l.strip())
            if m:
                out.append({"pass": int(m[1]), "rate": int(m[2]), "bad": int(m[3])})
        return out

    def wait_output(self, pattern, timeout=20.0):
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and not rx.search(self.output()):
                raise AssertionError(f"VM exited ({self.proc.returncode}) before {pattern!r}; "
                                     f"stderr: {self.stderr()!r}; serial: {self.output()[-2000:]!r}")
            return rx.search(self.output())
        return wait_for(found, timeout, what=f"{pattern!r} on the serial console")

    def wait_ctl(self, timeout=10.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"VM exited ({self.proc.returncode}); stderr: {self.stderr()!r}")
            return os.path.exists(self.control)
        wait_for(ready, timeout, what="control socket")

    def ctl(self, cmd, **kw):
        return ctl(self.control, dict(cmd=cmd, **kw))

    def wait(self, timeout=20.0):
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._err.close()
