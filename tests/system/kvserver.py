"""kvserver.py — drive doppel-kv from tests: the reference server, single requests, load runs.

    srv = KvServer(kv_bin, ns=t.hostA, listen="7777", probe=(t.client, "10.0.0.11"), topo=t).start()
    res = run_load(kv_bin, t.client, "10.0.0.11", n=2000, rate=2000, log=tmp_path / "l.jsonl")
    assert res.rc == 0 and res.summary["last_value"] == 2000
    srv.kill(); srv.start()

ns=None everywhere means "the current namespace" (loopback tests need no root).
"""

import json
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from netns import KV_PORT, popen_in, run_in, stop_proc, wait_for


def kv_op(kv_bin, ns, target, cmd, key, value=None, timeout_ms=200, retries=5):
    """One request: `doppel-kv TARGET CMD KEY [VALUE]` in ns. Returns CompletedProcess (rc 0 OK with
    the value on stdout, 1 ERR, 2 usage, 3 no reply)."""
    argv = [kv_bin, target, cmd, key] + ([value] if value is not None else [])
    argv += ["--timeout", timeout_ms, "--retries", retries]
    return run_in(ns, argv, timeout=(retries + 1) * timeout_ms / 1000 + 10)


def target_of(host, port=KV_PORT):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KvServer:
    """`doppel-kv --serve LISTEN` in namespace ns. start() waits until a probe request from
    probe=(ns, host) is answered; kill() is kill -9 (state lost); stop() is SIGTERM."""

    def __init__(self, kv_bin, ns=None, listen=str(KV_PORT), probe=(None, "127.0.0.1"), topo=None):
        self.kv_bin, self.ns, self.listen, self.probe, self.topo = kv_bin, ns, listen, probe, topo
        self.proc = None
        port = listen.rsplit(":", 1)[-1]
        self.target = target_of(probe[1], int(port))

    def start(self, timeout=5.0):
        argv = [self.kv_bin, "--serve", self.listen]
        if self.topo is not None:
            self.proc = self.topo.popen(self.ns, argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        else:
            self.proc = popen_in(self.ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def answered():
            if self.proc.poll() is not None:
                raise RuntimeError(f"doppel-kv --serve exited {self.proc.returncode}: "
                                   f"{self.proc.stderr.read()}")
            r = kv_op(self.kv_bin, self.probe[0], self.target, "GET", "_probe", timeout_ms=50,
                      retries=0)
            return r.returncode in (0, 1)  # OK or ERR nokey: the server answers

        wait_for(answered, timeout, what=f"kv server in {self.ns} answering on {self.target}")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """kill -9: the server's state (store, retry cache) is lost."""
        if self.proc:
            stop_proc(self.proc, signal.SIGKILL)

    def stop(self):
        """SIGTERM; returns the exit status (0 = clean)."""
        return stop_proc(self.proc, signal.SIGTERM) if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()
        return False


@dataclass
class LoadResult:
    rc: int
    summary: dict
    stderr: str
    log: list = field(default_factory=list)


def load_argv(kv_bin, target, n, rate, cmd="INCR", key=None, keys=None, timeout_ms=None,
              deadline=None, log=None, window=None):
    argv = [kv_bin, target, "--load", n, "--rate", rate, "--cmd", cmd, "--json"]
    for opt, v in (("--key", key), ("--keys", keys), ("--timeout", timeout_ms),
                   ("--deadline", deadline), ("--log", log), ("--window", window)):
        if v is not None:
            argv += [opt, v]
    return argv


def start_load(kv_bin, ns, host, n, rate, port=KV_PORT, **kw):
    """Start a load run in the background (Popen; finish it with finish_load)."""
    return popen_in(ns, load_argv(kv_bin, target_of(host, port), n, rate, **kw),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_load(proc, log=None, timeout=60):
    """Wait for a load run; parse its JSON summary and (if given) its JSONL log."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_proc(proc, signal.SIGKILL)
        raise
    try:
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except json.JSONDecodeError:
        raise AssertionError(f"doppel-kv load printed no JSON summary: {out!r} {err!r}")
    return LoadResult(proc.returncode, summary, err, read_log(log) if log else [])


def run_load(kv_bin, ns, host, n, rate, port=KV_PORT, timeout=60, **kw):
    """Run a load to completion; returns LoadResult."""
    return finish_load(start_load(kv_bin, ns, host, n, rate, port=port, **kw), kw.get("log"),
                       timeout)


def read_log(path):
    """The JSONL log of acknowledged operations as a list of dicts ([] if absent)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
