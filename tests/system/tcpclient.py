"""tcpclient.py — small TCP clients for the guest's RESP (6379) and HTTP (80) services, run as scripts
inside the client namespace (`python3 tcpclient.py <mode> ...`, one JSON line on stdout), plus the
hostile-input senders of test_tcp.py. Only the standard library."""
import json
import os
import random
import socket
import struct
import sys
import time


def connect(host, port, timeout=5.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed by the guest")
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln


def incr_loop(host, port, n, key, deadline):
    """INCR key n times over ONE connection; each reply must be the previous + 1 (the first one
    sets the base). Returns a summary dict; errors are reported, never raised."""
    res = {"sent": 0, "replies": 0, "first": None, "last": None, "errors": [], "longest_stall_ms": 0}
    end = time.monotonic() + deadline
    try:
        s = connect(host, port, timeout=deadline)
        r = Reader(s)
        for _ in range(n):
            t0 = time.monotonic()
            s.sendall(resp_cmd("INCR", key))
            res["sent"] += 1
            ln = r.line()
            res["longest_stall_ms"] = max(res["longest_stall_ms"], int((time.monotonic() - t0) * 1000))
            if not ln.startswith(b":"):
                res["errors"].append(ln.decode(errors="replace"))
                break
            v = int(ln[1:])
            if res["last"] is not None and v != res["last"] + 1:
                res["errors"].append(f"reply {v} after {res['last']}")
                break
            res["first"] = v if res["first"] is None else res["first"]
            res["last"] = v
            res["replies"] += 1
            if time.monotonic() > end:
                res["errors"].append("deadline")
                break
            time.sleep(0.005)
        s.close()
    except OSError as e:
        res["errors"].append(f"{type(e).__name__}: {e}")
    return res


def exchange(host, port, payloads, timeout=1.0, close_wait=0.5):
    """Send each payload on ONE connection, collect what comes back; reports whether the guest closed."""
    s = connect(host, port, timeout)
    got, closed = b"", False
    for p in payloads:
        try:
            s.sendall(p)
        except OSError:
            closed = True
            break
    s.settimeout(close_wait)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            got += d
    except socket.timeout:
        pass
    except OSError:
        closed = True
    s.close()
    return {"reply": got.decode("latin-1"), "closed": closed}


def slow_reader(host, n, pause):
    """GET /bytes/n with a tiny receive buffer and no reading for `pause` s (the guest sees a zero
    window and must probe, not give up), then read it all."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.settimeout(10)
    s.connect((host, 80))
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n" % n)
    time.sleep(pause)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    return {"status": head.split(b"\r\n")[0].decode(), "body": len(body), "x": body.count(b"x")}


def many_conns(host, n):
    """n connections open at once, each PINGs; returns how many got +PONG."""
    socks, ok = [], 0
    for _ in range(n):
        socks.append(connect(host, 6379, timeout=10))
    for s in socks:
        s.sendall(b"PING\r\n")
    for s in socks:
        if Reader(s).line() == b"+PONG":
            ok += 1
    for s in socks:
        s.close()
    return {"ok": ok}


# ---- raw TCP segments (hostile input) --------------------------------------------------------------

def _csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff


def tcp_segment(src, dst, sport, dport, seq, ack, flags, win=65535, payload=b"", bad_csum=False, doff=5,
                opts=b""):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xffffffff, ack & 0xffffffff,
                      doff << 4, flags, win, 0, 0) + opts
    if ":" in src:
        ph = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + \
            struct.pack("!IxxxB", len(hdr) + len(payload), 6)
    else:
        ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!xBH", 6, len(hdr) + len(payload))
    c = _csum(ph + hdr + payload)
    if bad_csum:
        c ^= 0x1234
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


def raw_send(src, dst, segs):
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, 7, -1)  # IPV6_CHECKSUM off: we computed it
    for seg in segs:
        s.sendto(seg, (dst, 0))
    s.close()


def hostile(src, dst, rng_seed):
    """Bad checksums, bad header lengths, SYN+FIN, a SYN flood (more SYNs than the table), and junk
    flags to both service ports. The client kernel answers the guest's SYN-ACKs with RSTs."""
    rng = random.Random(rng_seed)
    segs = []
    for port in (6379, 80):
        segs.append(tcp_segment(src, dst, 40001, port, 1, 0, 0x02, bad_csum=True))
        segs.append(tcp_segment(src, dst, 40002, port, 1, 0, 0x03))           # SYN+FIN
        segs.append(tcp_segment(src, dst, 40003, port, 1, 0, 0x06))           # SYN+RST
        segs.append(tcp_segment(src, dst, 40004, port, 1, 0, 0x02, doff=15))  # data offset > segment
        segs.append(tcp_segment(src, dst, 40005, port, 1, 0, 0x02, doff=2))   # data offset < 20
        segs.append(tcp_segment(src, dst, 40006, port, 1, 0, 0x02, doff=6, opts=b"\x02\x09\x00\x00"))
        segs.append(tcp_segment(src, dst, 40007, port, 1, 0, 0x02, win=0, doff=6, opts=b"\x02\x04\x00\x01"))
        segs.append(tcp_segment(src, dst, 40008, port, 5, 9, 0x10, payload=b"SET k x\r\n"))  # no conn
        segs.append(tcp_segment(src, dst, 40009, port, 5, 9, 0xff))
    for i in range(400):  # SYN flood, more than the 256-entry table
        segs.append(tcp_segment(src, dst, 20000 + i, rng.choice((6379, 80)), rng.getrandbits(32), 0, 0x02))
    raw_send(src, dst, segs)
    return {"sent": len(segs)}


def rst_storm(host, src, n, rng_seed):
    """A real connection, then n RSTs / SYNs with wrong sequence numbers on its 4-tuple: it must
    survive (RFC 5961: only an exact RST closes) and still answer."""
    rng = random.Random(rng_seed)
    s = connect(host, 6379)
    r = Reader(s)
    s.sendall(b"PING\r\n")
    before = r.line()
    sport = s.getsockname()[1]
    segs = []
    for _ in range(n):
        fl = rng.choice((0x04, 0x14, 0x02, 0x12))
        segs.append(tcp_segment(src, host, sport, 6379, rng.getrandbits(32), rng.getrandbits(32), fl))
    raw_send(src, host, segs)
    time.sleep(0.3)
    s.sendall(resp_cmd("ECHO", "still-here"))
    after = [r.line(), r.line()]
    s.close()
    return {"before": before.decode(), "after": [a.decode() for a in after]}


def bad_checksum_data(host, src):
    """On a real connection: a segment at the right sequence with a wrong checksum carrying
    SET victim corrupted (dropped), then the real SET through the socket."""
    s = connect(host, 6379)
    r = Reader(s)
    s.sendall(resp_cmd("SET", "victim", "good"))
    assert r.line() == b"+OK"
    # we do not know the kernel's sequence numbers here; spray the likely window instead
    sport = s.getsockname()[1]
    segs = [tcp_segment(src, host, sport, 6379, seq, 0, 0x18, payload=resp_cmd("SET", "victim", "corrupted"),
                        bad_csum=True) for seq in range(0, 1 << 32, 1 << 24)]
    raw_send(src, host, segs)
    time.sleep(0.2)
    s.sendall(resp_cmd("GET", "victim"))
    out = [r.line(), r.line()]
    s.close()
    return {"get": [o.decode() for o in out]}


def syn_isns(src, dst, port, n=2, gap=1.2):
    """n SYNs from the same 4-tuple (the client kernel resets each half-open connection; the guest's
    TIME_WAIT-free slot is reused), returning the ISN of each SYN-ACK."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    r = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    r.settimeout(2)
    out = []
    for k in range(n):
        raw_send(src, dst, [tcp_segment(src, dst, 33333, port, 1000 + k * 100000, 0, 0x02)])
        while True:
            b = r.recv(2048)
            t = b if fam == socket.AF_INET6 else b[(b[0] & 15) * 4:]
            sp, dp, seq = struct.unpack("!HHI", t[:8])
            if sp == port and dp == 33333 and t[13] & 0x12 == 0x12:
                out.append(seq)
                break
        time.sleep(gap)
    return {"isn": out}


def main(argv):
    mode = argv[1]
    if mode == "incr":
        out = incr_loop(argv[2], int(argv[3]), int(argv[4]), argv[5], float(argv[6]))
    elif mode == "exchange":
        out = exchange(argv[2], int(argv[3]), [bytes.fromhex(h) for h in argv[4:]])
    elif mode == "slow":
        out = slow_reader(argv[2], int(argv[3]), float(argv[4]))
    elif mode == "many":
        out = many_conns(argv[2], int(argv[3]))
    elif mode == "hostile":
        out = hostile(argv[2], argv[3], int(argv[4]))
    elif mode == "rststorm":
        out = rst_storm(argv[2], argv[3], int(argv[4]), int(argv[5]))
    elif mode == "isn":
        out = syn_isns(argv[2], argv[3], int(argv[4]))
    elif mode == "badsum":
        out = bad_checksum_data(argv[2], argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))


SCRIPT = os.path.abspath(__file__)
