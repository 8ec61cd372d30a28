"""coloclient.py — load clients for the COLO tests, run inside the client namespace:

    python3 coloclient.py kv HOST N KEY DEADLINE      # UDP KV INCRs (retried with the same ID)
    python3 coloclient.py resp HOST N KEY DEADLINE    # RESP over TCP: SET + INCR pairs
    python3 coloclient.py http HOST N DEADLINE        # HTTP GET / over keep-alive TCP

Replies of the guest's nondet=N option carry an extra " ~TSC" (KV, RESP simple strings) or an
X-Nondet header (HTTP): accepted, counted as "nondet". Prints one JSON summary; never raises."""
import json
import os
import socket
import sys
import time


def fam_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def kv(host, n, key, deadline):
    res = {"acked": [], "nondet": 0, "retries": 0, "errors": [], "longest_stall_ms": 0}
    s = socket.socket(fam_of(host), socket.SOCK_DGRAM)
    s.settimeout(0.1)
    end = time.monotonic() + deadline
    rid = int.from_bytes(os.urandom(4), "little") << 20
    for i in range(n):
        rid += 1
        req = f"{rid} INCR {key}".encode()
        t0 = time.monotonic()
        while True:
            if time.monotonic() > end:
                res["errors"].append(f"deadline at request {i}")
                return res
            s.sendto(req, (host, 7777))
            try:
                d, _ = s.recvfrom(2048)
            except socket.timeout:
                res["retries"] += 1
                continue
            f = d.decode(errors="replace").split()
            if len(f) < 3 or f[0] != str(rid):
                continue  # a late reply to an earlier request
            if f[1] != "OK":
                res["errors"].append(d.decode(errors="replace"))
                return res
            if len(f) == 4 and f[3].startswith("~"):
                res["nondet"] += 1
            elif len(f) != 3:
                res["errors"].append(f"bad reply {d!r}")
                return res
            res["acked"].append(int(f[2]))
            break
        res["longest_stall_ms"] = max(res["longest_stall_ms"], int((time.monotonic() - t0) * 1000))
    return res


def kv_get(host, key):
    s = socket.socket(fam_of(host), socket.SOCK_DGRAM)
    s.settimeout(0.2)
    rid = int.from_bytes(os.urandom(4), "little")
    for _ in range(25):
        s.sendto(f"{rid} GET {key}".encode(), (host, 7777))
        try:
            d, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        f = d.decode().split()
        if f[0] == str(rid):
            return {"reply": f[1:]}
    return {"reply": None}


class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""

    def fill(self):
        d = self.s.recv(65536)
        if not d:
            raise ConnectionError("closed by the guest")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        b, self.buf = self.buf[:n], self.buf[n:]
        return b


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def resp(host, n, key, deadline):
    """n rounds of SET key:i i, INCR key over one connection; INCR replies must count up by one."""
    res = {"replies": 0, "last": None, "nondet": 0, "errors": [], "longest_stall_ms": 0}
    end = time.monotonic() + deadline
    try:
        s = socket.create_connection((host, 6379), timeout=deadline)
        r = Reader(s)
        for i in range(n):
            t0 = time.monotonic()
            s.sendall(resp_cmd("SET", f"{key}:{i}", i) + resp_cmd("INCR", key))
            ok = r.line()
            if ok == b"+OK":
                pass
            elif ok.startswith(b"+OK ~"):
                res["nondet"] += 1
            else:
                res["errors"].append(f"SET reply {ok!r}")
                break
            ln = r.line()
            if not ln.startswith(b":"):
                res["errors"].append(f"INCR reply {ln!r}")
                break
            v = int(ln[1:])
            if res["last"] is not None and v != res["last"] + 1:
                res["errors"].append(f"INCR {v} after {res['last']}")
                break
            res["last"] = v
            res["replies"] += 2
            res["longest_stall_ms"] = max(res["longest_stall_ms"], int((time.monotonic() - t0) * 1000))
            if time.monotonic() > end:
                res["errors"].append("deadline")
                break
        s.close()
    except OSError as e:
        res["errors"].append(f"{type(e).__name__}: {e}")
    return res


def http(host, n, deadline):
    res = {"replies": 0, "nondet": 0, "errors": [], "longest_stall_ms": 0}
    end = time.monotonic() + deadline
    try:
        s = socket.create_connection((host, 80), timeout=deadline)
        r = Reader(s)
        for _ in range(n):
            t0 = time.monotonic()
            s.sendall(b"GET / HTTP/1.1\r\nHost: g\r\n\r\n")
            st = r.line()
            if not st.startswith(b"HTTP/1.1 200"):
                res["errors"].append(f"status {st!r}")
                break
            clen = None
            while True:
                h = r.line()
                if not h:
                    break
                k, _, v = h.partition(b":")
                if k.lower() == b"content-length":
                    clen = int(v)
                if k.lower() == b"x-nondet":
                    res["nondet"] += 1
            body = r.take(clen or 0)
            if b"doppel" not in body:
                res["errors"].append(f"body {body[:60]!r}")
                break
            res["replies"] += 1
            res["longest_stall_ms"] = max(res["longest_stall_ms"], int((time.monotonic() - t0) * 1000))
            if time.monotonic() > end:
                res["errors"].append("deadline")
                break
        s.close()
    except OSError as e:
        res["errors"].append(f"{type(e).__name__}: {e}")
    return res


def main(argv):
    mode = argv[1]
    if mode == "kv":
        out = kv(argv[2], int(argv[3]), argv[4], float(argv[5]))
    elif mode == "get":
        out = kv_get(argv[2], argv[3])
    elif mode == "resp":
        out = resp(argv[2], int(argv[3]), argv[4], float(argv[5]))
    elif mode == "http":
        out = http(argv[2], int(argv[3]), float(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

SCRIPT = os.path.abspath(__file__)
