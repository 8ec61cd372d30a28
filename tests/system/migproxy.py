"""migproxy.py — a TCP proxy for one migration connection that breaks it at a chosen switchover step.

Run as a program (so it can live in the source's network namespace):

    python3 migproxy.py TARGET_HOST:PORT MODE [SOURCE_PID]

It listens on 127.0.0.1 (ephemeral port), prints "port N", accepts one connection (the source) and
forwards it to TARGET. The back channel (destination -> source) is parsed as the fixed 144-byte
messages of migrate/migrate_priv.h; after READY has gone to the source, the next bytes from the
source are GO. It prints one line per event ("msg TYPE", "go", "cut ...") and, in every mode, closes
both sides (FIN) at the chosen point:

  pass           forward everything
  before-ready   withhold READY: the source never sees it (resumes), the destination gets no GO
  after-ready    SIGSTOP the source, give it READY followed by EOF, SIGCONT: it sees READY but the
                 link is gone before it could send GO (resumes); the destination gets no GO
  drop-go        forward READY, swallow GO: the source committed, the destination never gets GO
  after-go       forward GO, then cut before RUNNING: the destination runs, the source never hears
  kill-at-go     SIGKILL the source when its GO arrives, forward GO: the destination runs alone
  stall-dst      SIGSTOP the destination (PID) as its READY passes, SIGCONT it 3.5 s later: the source
                 sends GO, hears nothing (uncertain), then gets the late RUNNING
  postcopy-cut   forward GO and then 4 MiB of post-copy pages, then cut: the destination runs on pages
                 it lacks, the source has committed (the VM is lost)
"""
import os
import signal
import socket
import struct
import sys
import threading
import time

MSG = 144
TYPES = {1: "ACCEPT", 2: "REJECT", 3: "RUNNING", 4: "ERROR", 5: "EPOCH", 6: "READY", 7: "GO", 8: "PAGE_REQ",
         9: "PC_DONE"}
POSTCOPY_CUT = 4 << 20


def say(*a):
    print(*a, flush=True)


def stop(pid):
    """SIGSTOP pid and wait until every thread of it is stopped (kill() only queues the stop)."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(2000):
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass
        if states and all(s in "Tt" for s in states):
            return
        time.sleep(0.001)
    raise RuntimeError(f"{pid} did not stop")


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    mode = sys.argv[2]
    pid = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    say("port", ls.getsockname()[1])
    c, _ = ls.accept()
    u = socket.create_connection((host, int(port)))
    lock = threading.Lock()
    st = {"ready": False, "cut": False}

    def cut(why):
        with lock:
            if st["cut"]:
                return
            st["cut"] = True
        say("cut", why)
        for s in (c, u):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def back():  # destination -> source, message by message
        buf = b""
        try:
            while True:
                b = u.recv(65536)
                if not b:
                    break
                buf += b
                while len(buf) >= MSG:
                    m, buf = buf[:MSG], buf[MSG:]
                    t = TYPES.get(struct.unpack_from("<I", m, 4)[0], "?")
                    if t not in ("EPOCH", "PAGE_REQ"):
                        say("msg", t)
                    if t == "READY" and mode == "before-ready":
                        return cut("READY withheld")
                    if t == "READY" and mode == "after-ready":
                        stop(pid)
                        c.sendall(m)
                        cut("after READY, before GO")
                        os.kill(pid, signal.SIGCONT)
                        return
                    if t == "READY" and mode == "stall-dst":
                        stop(pid)
                        threading.Timer(3.5, os.kill, (pid, signal.SIGCONT)).start()
                    if t == "RUNNING" and mode == "after-go":
                        return cut("RUNNING withheld")
                    c.sendall(m)
                    if t == "READY":
                        with lock:
                            st["ready"] = True
        except OSError:
            pass
        cut("destination side closed")

    threading.Thread(target=back, daemon=True).start()
    after_go = 0
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            with lock:
                go = st["ready"]
            if go:
                if mode != "postcopy-cut" or after_go == 0:
                    say("go", len(b))
                if mode == "drop-go":
                    cut("GO swallowed")
                    break
                if mode == "kill-at-go":
                    os.kill(pid, signal.SIGKILL)
                if mode == "postcopy-cut":
                    after_go += len(b)
                    if after_go > POSTCOPY_CUT:
                        cut(f"post-copy cut after {after_go} bytes past READY")
                        break
                u.sendall(b)
                if mode == "after-go":
                    continue  # RUNNING is withheld by the back thread
            else:
                u.sendall(b)
    except OSError:
        pass
    cut("source side closed")
    threading.Event().wait(2)  # let the last lines out before the process ends


if __name__ == "__main__":
    main()
