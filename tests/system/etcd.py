"""etcd.py — start a real etcd (1 or 3 members) for witness tests: on loopback or in namespaces on the LAN.

    from etcd import EtcdCluster, etcd_cluster, etcd_single   # the two fixtures, imported into a test

    def test_x(etcd_cluster, topology):     # 3 members in their own namespaces on the test LAN
        c = etcd_cluster
        urls = c.urls                       # "http://10.0.0.21:2379,http://10.0.0.22:2379,http://10.0.0.23:2379"
        i = c.kill_leader()                 # SIGKILL the Raft leader; returns its index
        c.wait_leader(exclude=i)            # a new leader among the rest
        c.block("10.0.0.11")                # silently drop traffic between every member and hostA
        c.heal()                            # undo every block

Netns mode (topology given): member i (0..n-1) runs in namespace <prefix>etcd<i+1> with one veth port
on the LAN bridge, address 10.0.0.(21+i)/24, client URL http://10.0.0.(21+i):2379. hostA (10.0.0.11),
hostB (10.0.0.12) and the client (10.0.0.2) reach every member; a test cuts a host from the witness
with block(host_ip) (blackhole route + rule inside the member namespaces: packets from and to that
host vanish, so its requests time out — no RST), or cuts a host from everything by downing its uplink itself.
Loopback mode (no topology): members on 127.0.0.(21+i) with free ports, in namespace `ns` (None:
this one). Timing: --heartbeat-interval 50 ms, --election-timeout 500 ms (etcd's minimum lease TTL
is then 1 s). Data dirs and logs under the given directory (the test's tmp_path). A cluster that is
not healthy in time raises RuntimeError (the test FAILS, never skips). Teardown is guaranteed by the
fixtures / the context manager: members are killed, namespaces deleted.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import netns

ETCD, ETCDCTL = "etcd", "etcdctl"
_STALE_RE = re.compile(r"^dpt(\d+)x\d+-etcd\d+$")


def _free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reap_stale_etcd():
    """Delete etcd namespaces left by test processes that no longer exist."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for n in names:
        m = _STALE_RE.match(n)
        if m and not netns._pid_alive(int(m.group(1))):
            _del_ns(n)


def _del_ns(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Member:
    def __init__(self, idx, name, ns, ip, client_port, peer_port, datadir, log):
        self.idx, self.name, self.ns, self.ip = idx, name, ns, ip
        self.client_port, self.peer_port = client_port, peer_port
        self.url = f"http://{ip}:{client_port}"
        self.peer_url = f"http://{ip}:{peer_port}"
        self.datadir, self.log = datadir, log
        self.proc = None
        self.stopped = False  # SIGSTOPped

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """n etcd members; see the module doc. Use as a context manager (or start()/stop())."""

    def __init__(self, workdir, members=3, topology=None, ns=None, heartbeat_ms=50, election_ms=500,
                 start_timeout=20.0):
        self.workdir = Path(workdir)
        self.topology = topology
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.start_timeout = start_timeout
        self.own_ns = []
        self.blocked = set()
        self.members = []
        token = f"doppel-{os.getpid()}-{time.monotonic_ns()}"
        self.token = token
        for i in range(members):
            name = f"etcd{i + 1}"
            if topology is not None:
                m_ns, ip, cp, pp = topology.prefix + name, f"10.0.0.{21 + i}", 2379, 2380
            else:
                m_ns, ip = ns, f"127.0.0.{21 + i}"
                cp, pp = _free_port(ip), _free_port(ip)
            d = self.workdir / name
            self.members.append(Member(i, name, m_ns, ip, cp, pp, d / "data", d / "etcd.log"))

    # ---- life cycle ----------------------------------------------------------------------------

    @property
    def urls(self):
        """Client URLs of all members, comma-separated (the form --witness takes)."""
        return ",".join(m.url for m in self.members)

    @property
    def ctl_ns(self):
        """Namespace etcdctl runs in: the client namespace (netns mode) or the members' one."""
        return self.topology.client if self.topology is not None else self.members[0].ns

    def _mk_member_ns(self, m):
        if os.path.exists(f"/run/netns/{m.ns}"):
            _del_ns(m.ns)
        lan, port = self.topology.lan, f"v{m.name}"
        cmds = [["ip", "netns", "add", m.ns],
                ["ip", "-n", m.ns, "link", "set", "lo", "up"],
                ["ip", "-n", lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", m.ns],
                ["ip", "-n", lan, "link", "set", port, "master", "br0", "up"],
                ["ip", "-n", m.ns, "addr", "add", f"{m.ip}/24", "dev", "eth0"],
                ["ip", "-n", m.ns, "link", "set", "eth0", "up"]]
        self.own_ns.append(m.ns)
        for c in cmds:
            netns.run_in(None, c, check=True)

    def _spawn(self, m, state):
        m.datadir.parent.mkdir(parents=True, exist_ok=True)
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        argv = [ETCD, "--name", m.name, "--data-dir", m.datadir,
                "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", state,
                "--initial-cluster-token", self.token,
                "--heartbeat-interval", self.heartbeat_ms, "--election-timeout", self.election_ms,
                "--logger", "zap", "--log-outputs", "stderr"]
        log = open(m.log, "a")
        try:
            m.proc = netns.popen_in(m.ns, argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        m.stopped = False

    def start(self):
        try:
            if self.topology is not None:
                reap_stale_etcd()
                for m in self.members:
                    self._mk_member_ns(m)
            for m in self.members:
                self._spawn(m, "new")
            self.wait_healthy(self.start_timeout)
            self.wait_leader(timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for m in self.members:
            if m.proc is not None:
                if m.stopped:
                    self._signal(m, signal.SIGCONT)
                netns.stop_proc(m.proc, signal.SIGKILL)
                m.proc = None
        for ns in self.own_ns:
            _del_ns(ns)
        self.own_ns.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def logs(self, lines=15):
        """The last lines of every member's log (for failure messages)."""
        out = []
        for m in self.members:
            try:
                tail = m.log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log)"]
            out.append(f"--- {m.name} ({m.url}):\n" + "\n".join(tail))
        return "\n".join(out)

    # ---- queries -------------------------------------------------------------------------------

    def ctl(self, *args, endpoints=None, timeout=10, check=False):
        """Run etcdctl (API v3) against `endpoints` (default: all) in ctl_ns; CompletedProcess."""
        eps = endpoints or self.urls
        env = dict(os.environ, ETCDCTL_API="3")
        return netns.run_in(self.ctl_ns, [ETCDCTL, "--endpoints", eps, "--command-timeout=2s",
                                          "--dial-timeout=1s", *args],
                            timeout=timeout, check=check, env=env)

    def healthy(self, members=None):
        """True when every given member (default: all running, not stopped) reports healthy."""
        ms = [m for m in (members or self.members) if m.alive and not m.stopped]
        if not ms:
            return False
        r = self.ctl("endpoint", "health", endpoints=",".join(m.url for m in ms))
        return r.returncode == 0

    def wait_healthy(self, timeout=20.0):
        try:
            netns.wait_for(self.healthy, timeout=timeout, interval=0.2, what="etcd cluster healthy")
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{self.logs()}") from None

    def status(self):
        """{member index: (member_id, leader_id, raft_term)} of the members that answer."""
        out = {}
        for m in self.members:
            if not m.alive or m.stopped:
                continue
            r = self.ctl("endpoint", "status", "-w", "json", endpoints=m.url, timeout=5)
            try:
                st = json.loads(r.stdout)[0]["Status"]
                out[m.idx] = (st["header"]["member_id"], st["leader"], st["header"].get("raft_term", 0))
            except (ValueError, LookupError, TypeError):
                pass
        return out

    def leader(self):
        """Index of the member that is leader now (agreed by the answering members), or None."""
        st = self.status()
        for i, (mid, lead, _) in st.items():
            if mid == lead and lead != 0:
                return i
        return None

    def wait_leader(self, exclude=None, timeout=10.0):
        """Wait until a member other than `exclude` is leader; returns its index."""
        def ok():
            i = self.leader()
            return None if i is None or i == exclude else i + 1
        try:
            return netns.wait_for(ok, timeout=timeout, interval=0.05, what="an etcd leader") - 1
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{self.logs()}") from None

    def get(self, key):
        """(holder, create_revision, lease) of key via etcdctl, or None when absent. A doppel key's
        value is "holder\nttl_ms=N" (the holder's validity window): holder is its first line."""
        r = self.ctl("get", key, "-w", "json", check=True)
        kvs = json.loads(r.stdout).get("kvs") or []
        if not kvs:
            return None
        import base64
        kv = kvs[0]
        return (base64.b64decode(kv.get("value", "")).decode().split("\n")[0], int(kv.get("create_revision", 0)),
                int(kv.get("lease", 0)))

    # ---- faults --------------------------------------------------------------------------------

    def _signal(self, m, sig):
        try:
            os.kill(m.proc.pid, sig)  # etcd is the session leader (exec, in netns mode via ip netns exec)
        except ProcessLookupError:
            pass

    def kill(self, i):
        """SIGKILL member i (its data stays: restart(i) brings it back)."""
        m = self.members[i]
        if m.proc is not None:
            if m.stopped:
                self._signal(m, signal.SIGCONT)
            netns.stop_proc(m.proc, signal.SIGKILL)
            m.proc = None

    def restart(self, i):
        """Start member i again on its data dir (it rejoins the cluster)."""
        m = self.members[i]
        if m.alive:
            return
        self._spawn(m, "existing")

    def kill_leader(self):
        """SIGKILL the current leader; returns its index."""
        i = self.leader()
        if i is None:
            raise RuntimeError("no etcd leader to kill\n" + self.logs())
        self.kill(i)
        return i

    def pause(self, i):
        """SIGSTOP member i (frozen: connections stay open, nothing answers)."""
        m = self.members[i]
        self._signal(m, signal.SIGSTOP)
        m.stopped = True

    def resume(self, i):
        """SIGCONT member i."""
        m = self.members[i]
        self._signal(m, signal.SIGCONT)
        m.stopped = False

    def block(self, ip, members=None):
        """Silently drop traffic between the given members (default: all) and address `ip`
        (netns mode: in each member namespace a blackhole route to ip and a blackhole rule for
        packets from ip — both directions vanish, so the peer sees timeouts, never a reset)."""
        if self.topology is None:
            raise RuntimeError("block() needs netns mode")
        for i in (range(len(self.members)) if members is None else members):
            m = self.members[i]
            # out: a blackhole route; in: a blackhole rule on the source (input route lookup)
            netns.run_in(m.ns, ["ip", "route", "replace", "blackhole", f"{ip}/32"], check=True)
            netns.run_in(m.ns, ["ip", "rule", "add", "from", f"{ip}/32", "blackhole"], check=True)
            self.blocked.add((i, ip))

    def unblock(self, ip):
        for (i, b) in sorted(self.blocked):
            if b == ip:
                netns.run_in(self.members[i].ns, ["ip", "route", "del", "blackhole", f"{ip}/32"])
                netns.run_in(self.members[i].ns, ["ip", "rule", "del", "from", f"{ip}/32", "blackhole"])
                self.blocked.discard((i, b))

    def partition_member(self, i):
        """Cut member i from the other members (it keeps its clients): a minority of one."""
        others = [m for m in self.members if m.idx != i]
        for o in others:
            self.block(self.members[i].ip, members=[o.idx])
            self.block(o.ip, members=[i])

    def heal(self):
        """Undo every block / partition."""
        for ip in {b for (_, b) in self.blocked}:
            self.unblock(ip)


# ---- fixtures (import them into a test module) ----------------------------------------------------

@pytest.fixture
def etcd_cluster(topology, tmp_path):
    """A healthy 3-member etcd cluster in namespaces on the topology's LAN; torn down always."""
    with EtcdCluster(tmp_path / "etcd", members=3, topology=topology) as c:
        yield c


@pytest.fixture
def etcd_single(tmp_path):
    """A healthy single etcd on loopback (127.0.0.21:<free port>) in this namespace."""
    with EtcdCluster(tmp_path / "etcd", members=1) as c:
        yield c
