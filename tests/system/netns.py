"""netns.py — the doppel test network (network namespaces) and helpers to run things inside it.

The topology itself is built by scripts/topology.sh (one source of truth); this module wraps it:

    with Topology() as t:                     # unique prefix, torn down on exit even on failure
        run_in(t.client, ["ip", "-br", "addr"])
        p = t.popen(t.hostA, [kv_bin, "--serve", "7777"])   # killed at teardown
        assert ping(t.client, HOSTA_IP)

Addresses (see scripts/topology.sh): client 10.0.0.2 / fd00::2, hostA br0 10.0.0.11 / fd00::11,
hostB br0 10.0.0.12 / fd00::12, guest VM 10.0.0.10, replication link hostA 192.168.100.1 / fd01::1
<-> hostB 192.168.100.2 / fd01::2.  Traffic goes only to loopback and to these namespaces.
"""

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY_SH = REPO / "scripts" / "topology.sh"

CLIENT_IP, CLIENT_IP6 = "10.0.0.2", "fd00::2"
HOSTA_IP, HOSTA_IP6 = "10.0.0.11", "fd00::11"
HOSTB_IP, HOSTB_IP6 = "10.0.0.12", "fd00::12"
GUEST_IP, GUEST_PREFIX = "10.0.0.10", 24
REPL_A_IP, REPL_A_IP6 = "192.168.100.1", "fd01::1"
REPL_B_IP, REPL_B_IP6 = "192.168.100.2", "fd01::2"
KV_PORT = 7777

# Namespaces of test topologies are named "dpt<pid>x<n>-<role>" so stale ones (from a killed run)
# can be recognised and removed.
_PREFIX_RE = re.compile(r"^(dpt(\d+)x\d+-)(client|hostA|hostB|lan)$")
_counter = itertools.count()


# ---- environment checks ---------------------------------------------------------------------------

def netns_unavailable():
    """None if network namespaces can be built here, else a one-line reason (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip"):
        return "needs iproute2 'ip'"
    return None


def kvm_unavailable():
    """None if VMs can run here (root, /dev/kvm usable), else a one-line reason."""
    why = netns_unavailable()
    if why:
        return why
    if not os.path.exists("/dev/kvm"):
        return "needs /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm not accessible"
    return None


# ---- running things in namespaces -----------------------------------------------------------------

def _argv_in(ns, argv):
    argv = [str(a) for a in argv]
    return argv if ns is None else ["ip", "netns", "exec", ns] + argv


def run_in(ns, argv, timeout=30, check=False, capture=True, **kw):
    """Run argv inside namespace ns (None = the current one) and wait; returns CompletedProcess
    (text mode; stdout/stderr captured unless capture=False). check=True raises on non-zero exit
    with the output in the message."""
    if capture:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    r = subprocess.run(_argv_in(ns, argv), timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} in {ns}: exit {r.returncode}\n"
                           f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def popen_in(ns, argv, **kw):
    """Start argv inside namespace ns (None = current) in its own process group; returns Popen.
    Stop it with stop_proc()."""
    kw.setdefault("start_new_session", True)
    kw.setdefault("text", True)
    return subprocess.Popen(_argv_in(ns, argv), **kw)


def stop_proc(p, sig=signal.SIGTERM, timeout=3.0):
    """Signal p's process group (it was started in its own session), escalate to SIGKILL after
    timeout; returns the exit status. Safe on already-exited processes."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)
    for f in (p.stdout, p.stderr, p.stdin):
        if f:
            try:
                f.close()
            except OSError:
                pass
    return p.returncode


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value (returned) or raise TimeoutError naming `what`."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


_PING_CODE = r"""
import os, socket, struct, sys, time
addr, count, tmo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident = os.getpid() & 0xffff
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
got = 0
for seq in range(count):
    typ = 128 if v6 else 8
    hdr = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + b"doppel-ping"
    if not v6:  # the kernel fills the ICMPv6 checksum
        hdr = hdr[:2] + struct.pack("!H", csum(hdr)) + hdr[4:]
    s.sendto(hdr, (addr, 0))
    end = time.monotonic() + tmo
    while time.monotonic() < end:
        s.settimeout(max(0.001, end - time.monotonic()))
        try:
            b = s.recv(2048)
        except socket.timeout:
            break
        if not v6: b = b[(b[0] & 15) * 4:]
        t, _, _, i, q = struct.unpack("!BBHHH", b[:8])
        if t == (129 if v6 else 0) and i == ident and q == seq:
            got += 1
            break
print(got)
"""


def ping(ns, addr, count=1, timeout=1.0):
    """ICMP echo from namespace ns to addr (IPv4 or IPv6; raw socket, root). True if every one of
    `count` echoes was answered within `timeout` seconds each."""
    r = run_in(ns, [sys.executable, "-c", _PING_CODE, addr, count, timeout],
               timeout=count * timeout + 10)
    return r.returncode == 0 and r.stdout.strip() == str(count)


_UDP_CODE = r"""
import socket, sys, time, json
host, port, tmo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.connect((host, port))
out = []
for hx in sys.argv[4:]:
    try:
        s.send(bytes.fromhex(hx))
    except OSError:
        pass
    s.settimeout(tmo)
    try:
        out.append(s.recv(4096).hex())
    except (socket.timeout, ConnectionRefusedError):
        out.append(None)
print(json.dumps(out))
"""


def udp_exchange(ns, host, port, payloads, timeout=0.5):
    """From one UDP socket in namespace ns, send each payload (bytes) to host:port in turn and wait
    up to `timeout` s for one reply. Returns a list of reply bytes or None (no reply)."""
    import json
    args = [sys.executable, "-c", _UDP_CODE, host, port, timeout] + [bytes(p).hex() for p in payloads]
    r = run_in(ns, args, timeout=len(payloads) * timeout + 10, check=True)
    return [None if h is None else bytes.fromhex(h) for h in json.loads(r.stdout)]


# ---- the topology ---------------------------------------------------------------------------------

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def reap_stale():
    """Tear down test topologies left by test processes that no longer exist."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    prefixes = {m.group(1) for m in map(_PREFIX_RE.match, names)
                if m and not _pid_alive(int(m.group(2)))}
    for p in sorted(prefixes):
        subprocess.run([str(TOPOLOGY_SH), "down", p], timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def unique_prefix():
    return f"dpt{os.getpid()}x{next(_counter)}-"


class Topology:
    """client / hostA / hostB / lan namespaces (see scripts/topology.sh). Use as a context manager;
    processes started with popen() are stopped at teardown."""

    def __init__(self, prefix=None):
        self.prefix = prefix or unique_prefix()
        self.client = self.prefix + "client"
        self.hostA = self.prefix + "hostA"
        self.hostB = self.prefix + "hostB"
        self.lan = self.prefix + "lan"
        self.procs = []
        self.is_up = False

    @property
    def namespaces(self):
        return [self.client, self.hostA, self.hostB, self.lan]

    def up(self):
        reap_stale()
        r = subprocess.run([str(TOPOLOGY_SH), "up", self.prefix], timeout=60,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.is_up = True  # down() also cleans a half-built topology
        if r.returncode != 0:
            self.down()
            raise RuntimeError(f"topology up {self.prefix} failed:\n{r.stdout}")
        return self

    def down(self):
        for p in reversed(self.procs):
            stop_proc(p, signal.SIGKILL)
        self.procs.clear()
        if self.is_up:
            subprocess.run([str(TOPOLOGY_SH), "down", self.prefix], timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.is_up = False

    def popen(self, ns, argv, **kw):
        """popen_in() whose process is killed at teardown."""
        p = popen_in(ns, argv, **kw)
        self.procs.append(p)
        return p

    def run(self, ns, argv, **kw):
        return run_in(ns, argv, **kw)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
        return False


if __name__ == "__main__":  # manual use: python3 tests/system/netns.py up|down PREFIX
    if len(sys.argv) == 3 and sys.argv[1] in ("up", "down"):
        t = Topology(sys.argv[2])
        t.up() if sys.argv[1] == "up" else (setattr(t, "is_up", True), t.down())
    else:
        print("usage: netns.py up|down PREFIX", file=sys.stderr)
        sys.exit(2)
