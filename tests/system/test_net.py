"""test_net.py — the guest's network path (virtio-net, ARP/IPv4/ICMP/UDP, work=kv) under doppel and QEMU.

Same guest ELF, same topology: the VM sits on hostA's br0 as 10.0.0.10; the client namespace
pings it, runs single KV operations and a 3000-INCR load, and throws malformed traffic at it.
"""
import os
import shutil
import subprocess
import sys
import time

import pytest

import netns
from kvserver import kv_op, run_load, target_of
from vmproc import VM

QEMU = shutil.which("qemu-system-x86_64")
GUEST_MAC = "52:54:00:12:34:56"
KV_CMDLINE = f"work=kv ip={netns.GUEST_IP}/{netns.GUEST_PREFIX} pi=1000"

pytestmark = pytest.mark.needs_kvm


class QemuVM:
    """QEMU microvm running the guest with a virtio-net on a tap in ns's br0: QEMU's default
    legacy virtio-mmio (version 1), or modern (version 2) with modern=True."""

    def __init__(self, guest_elf, tmp, ns, cmdline, tap="tapq0", mem="256M", modern=False):
        self.serial = os.path.join(tmp, "qemu.serial")
        self.ns, self.tap = ns, tap
        netns.run_in(ns, ["ip", "tuntap", "add", tap, "mode", "tap"], check=True)
        netns.run_in(ns, ["ip", "link", "set", tap, "master", "br0", "up"], check=True)
        argv = [QEMU, "-M", "microvm,acpi=off", "-enable-kvm", "-m", mem, "-nodefaults",
                "-no-user-config", "-display", "none", "-serial", f"file:{self.serial}",
                *(["-global", "virtio-mmio.force-legacy=false"] if modern else []),
                "-device", "isa-debug-exit,iobase=0x501,iosize=2",
                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device", f"virtio-net-device,netdev=n0,mac={GUEST_MAC}",
                "-kernel", guest_elf, "-append", cmdline]
        self.errpath = os.path.join(tmp, "qemu.stderr")
        with open(self.errpath, "wb") as err:
            self.proc = netns.popen_in(ns, argv, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)

    def output(self):
        try:
            with open(self.serial, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        with open(self.errpath, errors="replace") as f:
            return f.read()

    def close(self):
        netns.stop_proc(self.proc, timeout=5)
        netns.run_in(self.ns, ["ip", "link", "del", self.tap])


class DoppelVM(VM):
    def alive(self):
        return self.proc.poll() is None


def start_vm(kind, doppel_bin, guest_elf, tmp_path, topo, cmdline=KV_CMDLINE):
    if kind in ("qemu", "qemu-modern"):
        if QEMU is None:
            pytest.skip("qemu-system-x86_64 not installed")
        vm = QemuVM(guest_elf, str(tmp_path), topo.hostA, cmdline, modern=kind == "qemu-modern")
    else:
        vm = DoppelVM(doppel_bin, str(tmp_path), kernel=guest_elf, cmdline=cmdline, netns=topo.hostA,
                      extra=["--net", f"tap=tapA0,bridge=br0,mac={GUEST_MAC}"])
    try:
        # the UART is slow: wait for the whole line, up to its newline
        def served():
            out = vm.output()
            return not vm.alive() or ("kv: serving on" in out and
                                      "\n" in out.split("kv: serving on", 1)[1])
        netns.wait_for(served, 20, what="kv: serving line")
        out = vm.output()
        assert "kv: serving on 10.0.0.10:7777 mac=52:54:00:12:34:56" in out, \
            (out, vm.alive(), vm.stderr())
        # doppel's device and QEMU with force-legacy=false are modern; QEMU's default is legacy
        path = "legacy v1" if kind == "qemu" else "v2"
        assert f" {path} mac=52:54:00:12:34:56 " in out, out
    except BaseException:
        vm.close()
        raise
    return vm


@pytest.fixture(params=["doppel", "qemu"])
def kvvm(request, doppel_bin, guest_elf, tmp_path, topology):
    vm = start_vm(request.param, doppel_bin, guest_elf, tmp_path, topology)
    yield vm
    vm.close()


def kv(kv_bin, topo, *args):
    r = kv_op(kv_bin, topo.client, target_of(netns.GUEST_IP), *args)
    return r.returncode, r.stdout.strip(), r.stderr.strip()


def test_ping_kv_ops_and_load(kvvm, kv_bin, topology):
    t = topology
    assert netns.ping(t.client, netns.GUEST_IP, count=3), kvvm.output()
    assert kv(kv_bin, t, "SET", "a", "hello")[:2] == (0, "hello")
    assert kv(kv_bin, t, "GET", "a")[:2] == (0, "hello")
    assert kv(kv_bin, t, "INCR", "n")[:2] == (0, "1")
    assert kv(kv_bin, t, "INCR", "n")[:2] == (0, "2")
    rc, _, err = kv(kv_bin, t, "GET", "missing")
    assert rc == 1 and "nokey" in err
    rc, _, err = kv(kv_bin, t, "INCR", "a")
    assert rc == 1 and "notint" in err
    res = run_load(kv_bin, t.client, netns.GUEST_IP, n=3000, rate=2000, key="load")
    assert res.rc == 0, (res.summary, res.stderr)
    assert res.summary["unacked"] == 0 and res.summary["acked"] == 3000, res.summary
    assert str(res.summary["last_value"]) == "3000", res.summary
    assert kv(kv_bin, t, "GET", "load")[:2] == (0, "3000")
    assert kvvm.alive(), kvvm.output()


def test_retry_is_idempotent(kvvm, kv_bin, topology):
    """The same ID from the same socket is answered from the cache, not applied twice."""
    t = topology
    rep = netns.udp_exchange(t.client, netns.GUEST_IP, netns.KV_PORT,
                             [b"77 INCR r", b"77 INCR r", b"78 INCR r", b"77 INCR r"], timeout=1.0)
    assert rep == [b"77 OK 1", b"77 OK 1", b"78 OK 2", b"77 OK 1"], rep


# Raw Ethernet frames from the client's eth0 (AF_PACKET), addressed to the guest's MAC.
_RAW_CODE = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for hx in sys.argv[1:]:
    s.send(bytes.fromhex(hx))
"""


def _csum(b):
    import struct
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff


def _ipv4(payload, proto=17, src="10.0.0.2", dst="10.0.0.10", tot=None, ihl=5, frag=0, bad_csum=False):
    import socket
    import struct
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot if tot is not None else 20 + len(payload),
                      1, frag, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    c = _csum(hdr)
    if bad_csum:
        c ^= 0x5555
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def _hostile_frames(client_mac):
    import struct
    dst = bytes.fromhex(GUEST_MAC.replace(":", ""))
    src = bytes.fromhex(client_mac.replace(":", ""))
    eth = lambda typ: dst + src + struct.pack("!H", typ)
    udp = lambda data, ulen=None: struct.pack("!HHHH", 40000, 7777,
                                              ulen if ulen is not None else 8 + len(data), 0) + data
    ipv6 = bytes.fromhex("6000000000083a40") + bytes(16) + bytes(15) + b"\x01" + bytes(8)
    return [
        eth(0x86dd) + ipv6,                                    # IPv6 to our MAC
        eth(0x0800),                                           # empty IPv4
        eth(0x0800) + b"\x45",                                 # truncated header
        eth(0x0800) + _ipv4(udp(b"1 GET a"), tot=2000),        # total length > frame
        eth(0x0800) + _ipv4(udp(b"1 GET a"), tot=10),          # total length < header
        eth(0x0800) + _ipv4(udp(b"1 GET a"), ihl=15),          # header length > packet
        eth(0x0800) + _ipv4(udp(b"1 GET a"), ihl=2),           # header length < 20
        eth(0x0800) + _ipv4(udp(b"1 GET a"), bad_csum=True),   # bad checksum
        eth(0x0800) + _ipv4(udp(b"1 GET a"), frag=0x2000),     # fragment (MF)
        eth(0x0800) + _ipv4(udp(b"1 GET a", ulen=4000)),       # UDP length > packet
        eth(0x0800) + _ipv4(udp(b"1 GET a", ulen=3)),          # UDP length < 8
        eth(0x0800) + _ipv4(b"\x08\x00"),                      # truncated ICMP
        eth(0x0806) + bytes(10),                               # truncated ARP
        eth(0x8100) + bytes(50),                               # VLAN tag
    ]


def test_hostile_traffic_is_dropped(kvvm, kv_bin, topology):
    t = topology
    # malformed KV datagrams: an ERR reply or nothing, never a crash
    junk = [b"", b"garbage", b"\xff" * 40, b"x" * 300, b"5 FOO k", b"6 GET", b"7 SET k",
            b"8 GET bad/key", b"9 SET k " + b"v" * 80, b"10 GET k extra", b"11  GET k",
            b"12 INCR " + b"k" * 40, b"99999999999999999999999 GET k", b"13 SET k \x01"]
    rep = netns.udp_exchange(t.client, netns.GUEST_IP, netns.KV_PORT, junk, timeout=0.3)
    for payload, r in zip(junk, rep):
        assert r is None or b" ERR " in r, (payload, r)
    assert rep[4] == b"5 ERR badcmd" and rep[5] == b"6 ERR args", rep
    # a datagram bigger than the MTU reaches the guest as IP fragments: dropped
    big = netns.udp_exchange(t.client, netns.GUEST_IP, netns.KV_PORT, [b"1 GET " + b"k" * 3000],
                             timeout=0.3)
    assert big == [None]
    # broken frames straight onto the wire
    mac = netns.run_in(t.client, ["cat", "/sys/class/net/eth0/address"], check=True).stdout.strip()
    frames = _hostile_frames(mac)
    netns.run_in(t.client, [sys.executable, "-c", _RAW_CODE] + [f.hex() for f in frames], check=True)
    time.sleep(0.2)
    assert kvvm.alive(), kvvm.output()
    assert netns.ping(t.client, netns.GUEST_IP), kvvm.output()
    assert kv(kv_bin, t, "SET", "after", "ok")[:2] == (0, "ok")


def test_qemu_modern_virtio_mmio(doppel_bin, guest_elf, tmp_path, topology, kv_bin):
    """QEMU with -global virtio-mmio.force-legacy=false: the modern (v2) path under QEMU too."""
    vm = start_vm("qemu-modern", doppel_bin, guest_elf, tmp_path, topology)
    try:
        t = topology
        assert netns.ping(t.client, netns.GUEST_IP, count=2), vm.output()
        assert kv(kv_bin, t, "SET", "m", "modern")[:2] == (0, "modern")
        res = run_load(kv_bin, t.client, netns.GUEST_IP, n=1000, rate=2000, key="mload")
        assert res.rc == 0 and res.summary["acked"] == 1000, (res.summary, res.stderr)
        assert vm.alive(), vm.output()
    finally:
        vm.close()
