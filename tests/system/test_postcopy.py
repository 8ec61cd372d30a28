"""test_postcopy.py — post-copy live migration (`doppel migrate --postcopy`): a 200 MiB hot set moved with
the dirty-page oracle intact (bad=0, the pass counter continuing), the automatic switch, and the one defined
outcome of a link cut during post-copy: the destination stops with a clear error, the source stays paused,
reports postcopy-failed and refuses to resume — no copy runs."""
import json
import os
import subprocess
import time

import pytest

from test_migrate import check_success, free_port, migrate, proxy_log, start_pair, start_proxy
from test_tls import certs  # noqa: F401  (fixture)
from vmproc import wait_for

pytestmark = pytest.mark.needs_kvm


# auto: a 200 MiB hot set in 512 MiB leaves > 50 % of RAM never written (zero on the fresh destination),
# so auto goes post-copy at once (no dirty log, no round); with --postcopy-min-pct 100 it never may.
@pytest.mark.parametrize("when,ws,extra,at_once", [
    ("now", "200M", (), True), ("round", "200M", (), False), ("auto", "200M", (), True),
    ("auto", "16M", ("--postcopy-min-pct", "100"), None)], ids=["now-200M", "round-200M", "auto-200M", "auto-16M-min100"])
def test_postcopy_oracle(doppel_bin, guest_elf, tmp_path, when, ws, extra, at_once):
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws=ws, extra=(("--log-level", "debug"), ("--log-level", "debug")))
    try:
        arg = "--postcopy" if when == "round" else f"--postcopy={when}"
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", arg, *extra, timeout=120)
        res = check_success(r, src, dst)
        if at_once is None:  # min-pct 100: never post-copy (some of RAM always holds data)
            assert not res.get("postcopy"), res
            return
        assert res["postcopy"] is True and res["postcopy_pages"] > 0, res
        assert res["postcopy_at_once"] is at_once, res
        assert res["max_throttle_pct"] == 0, res  # never throttled
        st = dst.ctl("status")["migration"]
        assert st["state"] == "completed" and st["postcopy"] is True, st
        assert st["pages_left"] == 0, st
    finally:
        src.close()
        dst.close()


def test_delta_cache_precopy(doppel_bin, guest_elf, tmp_path):
    """--delta-cache: rounds after the full one send the random hot set's pages as PAGE_DELTA (two words
    of each page change per pass), the destination applies them against its RAM (bad=0)."""
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="64M", guest_args="fill=random")
    try:
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", "--delta-cache", "128M", timeout=120)
        res = check_success(r, src, dst)
        assert res["rounds"] >= 2, res  # a 64 MiB hot set never fits 10 ms after one round
        assert res["delta_cache_bytes"] == 128 << 20, res
        assert res["delta_pages"] > 0 and res["delta_bytes"] > 0, res
    finally:
        src.close()
        dst.close()


def test_delta_cache_postcopy(doppel_bin, guest_elf, tmp_path):
    """--delta-cache with --postcopy=round: the cache is attached after the full round only, so the
    post-copy switch follows a round without PAGE_DELTA; the guest's oracle stays intact."""
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="64M", guest_args="fill=random")
    try:
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", "--postcopy", "--delta-cache", "64M", timeout=120)
        res = check_success(r, src, dst)
        assert res["postcopy"] is True and res["delta_pages"] == 0, res
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("bad", ["bogus", "65G", "-1"])
def test_delta_cache_bad(doppel_bin, bad):
    r = subprocess.run([doppel_bin, "migrate", "vm", "--to", "127.0.0.1:1", "--delta-cache", bad],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr == f"doppel migrate: bad --delta-cache '{bad}' (bytes, K/M/G, 0..64G) (try doppel migrate --help)\n"


def test_postcopy_link_cut(doppel_bin, guest_elf, tmp_path):
    """The link cut 4 MiB into the post-copy phase (paced to 20 MB/s so 200 MiB would take ~10 s)."""
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="200M")
    proxy = None
    try:
        proxy, pport = start_proxy(None, f"127.0.0.1:{port}", "postcopy-cut", src.proc.pid)
        r, took = migrate(doppel_bin, src, f"127.0.0.1:{pport}", "--postcopy", "--max-bandwidth", "20M",
                          "--timeout", "2000", timeout=60)
        log = proxy_log(proxy)
        assert "cut post-copy cut after" in log, log
        # the CLI: one line, exit 1
        assert r.returncode == 1 and not r.stderr, (r.stdout, r.stderr)
        e = json.loads(r.stdout)  # --json: the error is one JSON object on stdout
        assert e["ok"] is False and e["exit"] == 1, e
        assert e["error"].startswith("migration failed: post-copy failed after the destination started: "), e
        assert "neither host holds the whole VM" in e["error"], e
        # the destination: stops with a clear error, exit status 1
        assert dst.wait(15) == 1
        err = dst.stderr()
        assert "incoming migration failed: post-copy failed: the link to the source was lost (" in err, err
        # the source: alive, paused, committed, postcopy-failed; refuses to resume
        st = src.ctl("status")
        assert st["state"] == "paused", st
        mg = st["migration"]
        assert mg["state"] == "postcopy-failed" and mg["committed"] is True and mg["postcopy"] is True, mg
        assert "cannot be resumed" in mg["error"], mg
        rs = subprocess.run([doppel_bin, "migrate", "--control", src.control, "--resume-source"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert rs.returncode == 1 and "refused: the post-copy migration of" in rs.stderr, rs.stderr
        rs = subprocess.run([doppel_bin, "resume", "--control", src.control],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        again = subprocess.run([doppel_bin, "migrate", "--control", src.control, "--to", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
        assert again.returncode == 1 and "cannot migrate again" in again.stderr, again.stderr
        # the operator's resume releases only its own hold: the source stays paused, the guest frozen
        n = len(src.output())
        time.sleep(0.5)  # an absence: nothing may appear in this window
        assert src.ctl("status")["state"] == "paused"
        assert len(src.output()) == n
        assert src.proc.poll() is None
    finally:
        if proxy:
            proxy.kill()
            proxy.wait(5)
        src.close()
        dst.close()


@pytest.mark.parametrize("when", ["now", "round"])
def test_postcopy_over_tls(doppel_bin, guest_elf, tmp_path, certs, when):  # noqa: F811
    """Post-copy with --tls-dir on both ends: the stale bitmap, the page frames, the destination's page
    requests and PC_DONE all go through the TLS links' direct paths (no relay on the stream) and the
    oracle stays intact."""
    src, dst, port = start_pair(doppel_bin, guest_elf, str(tmp_path), ws="200M",
                                extra=((), ("--tls-dir", certs["sb"], "--tls-peer-name", "pr")))
    try:
        arg = "--postcopy" if when == "round" else f"--postcopy={when}"
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", arg, "--tls-dir", certs["pr"], "--tls-peer-name",
                       "sb", timeout=120)
        res = check_success(r, src, dst)
        assert res["postcopy"] is True and res["postcopy_pages"] > 0, res
        st = dst.ctl("status")
        assert st["tls"] is True and st["migration"]["state"] == "completed" and st["migration"]["pages_left"] == 0
        assert "incoming migration from" in dst.stderr() and "over TLS 1.3 (peer certificate pr)" in dst.stderr()
    finally:
        src.close()
        dst.close()
