"""test_metrics.py — Prometheus metrics (`--metrics ADDR:PORT` /metrics and `doppel metrics`) of a
protected VM under load checked with `promtool check metrics` and against status; the status page
rendered in headless Chromium (DOM after its script ran, screenshot kept in the test's tmp_path);
HTTP and flag errors."""
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm

MEM = "128M"
# not what these tests are about: a heartbeat timeout a loaded machine's scheduling cannot trip
HB_MS = "1000"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doppel(doppel_bin, *args, timeout=30):
    return subprocess.run([doppel_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def http(url, method="GET", timeout=10):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def promtool_ok(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0, f"promtool: {r.stdout}{r.stderr}"


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


@pytest.fixture
def pair(doppel_bin, guest_elf, tmp_path):
    port, mp, ms = free_port(), free_port(), free_port()
    sb = VM(doppel_bin, str(tmp_path), name="sb", kernel=guest_elf, cmdline=None, mem=MEM,
            extra=["--standby", "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{ms}"])
    pr = VM(doppel_bin, str(tmp_path), name="pr", kernel=guest_elf, cmdline="work=dirty ws=16M pi=200",
            mem=MEM, extra=["--metrics", f"127.0.0.1:{mp}"])
    try:
        sb.wait_ctl()
        pr.wait_output(r"dirty: pass=", timeout=20)
        r = doppel(doppel_bin, "protect", "pr", "--peer", f"127.0.0.1:{port}", "--control", pr.control,
                   "--heartbeat-timeout", HB_MS, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: pr.ctl("status")["remus"]["epochs"] > 30, 30, what="30 epochs")
        yield pr, sb, f"http://127.0.0.1:{mp}", f"http://127.0.0.1:{ms}"
    finally:
        pr.close()
        sb.close()


def test_metrics_promtool_and_status(doppel_bin, pair):
    pr, sb, purl, surl = pair
    s1 = pr.ctl("status")
    code, ctype, text = http(purl + "/metrics")
    s2 = pr.ctl("status")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4"), (code, ctype)
    promtool_ok(text)
    m = samples(text)
    r1, r2 = s1["remus"], s2["remus"]
    # counters between the two status replies around the scrape
    assert r1["epochs"] <= m["doppel_remus_epochs_total"] <= r2["epochs"]
    assert r1["acked_epoch"] <= m["doppel_remus_acked_epoch"] <= r2["acked_epoch"]
    assert r1["epoch"] <= m["doppel_remus_epoch"] <= r2["epoch"]
    assert r1["epochs_skipped"] <= m["doppel_remus_epochs_skipped_total"] <= r2["epochs_skipped"]
    # every epoch's pause is in the histogram of the same scrape; acks at most one per epoch
    assert m["doppel_remus_epoch_pause_seconds_count"] == m["doppel_remus_epochs_total"]
    assert m['doppel_remus_epoch_pause_seconds_bucket{le="+Inf"}'] == m["doppel_remus_epochs_total"]
    assert 0 < m["doppel_remus_ack_latency_seconds_count"] <= m["doppel_remus_epochs_total"]
    assert m["doppel_remus_epoch_pause_seconds_sum"] > 0
    buckets = [v for k, v in m.items() if k.startswith("doppel_remus_epoch_pause_seconds_bucket")]
    assert buckets == sorted(buckets)  # cumulative
    assert m['doppel_remus_role{role="primary"}'] == 1 and m['doppel_remus_role{role="standby"}'] == 0
    assert m['doppel_remus_state{state="protected"}'] == 1
    assert m['doppel_vm_state{state="running"}'] == 1 and m['doppel_vm_info{name="pr"}'] == 1
    assert m["doppel_remus_stream_wire_bytes_total"] > 0
    assert m["doppel_remus_stream_raw_bytes_total"] >= r1["bytes"]["raw"]
    assert m["doppel_remus_dirty_pages_total"] >= m["doppel_remus_epoch_dirty_pages"] > 0
    assert s1["uptime_s"] <= m["doppel_vm_uptime_seconds"] <= s2["uptime_s"]
    assert m["doppel_vm_memory_bytes"] == s1["mem_bytes"] and m["doppel_vm_vcpus"] == s1["vcpus"]
    assert m["doppel_events_total"] == 3 and m["doppel_events_dropped_total"] == 0  # started, protect-start, protected
    assert m["doppel_migration_active"] == 0
    assert m['doppel_migrations_total{result="completed"}'] == 0
    # doppel metrics prints the same exposition (the same names, later values)
    r = doppel(doppel_bin, "metrics", "pr", "--control", pr.control)
    assert r.returncode == 0, r.stderr
    promtool_ok(r.stdout)
    m2 = samples(r.stdout)
    assert m2.keys() == m.keys()
    assert m2["doppel_remus_epochs_total"] >= m["doppel_remus_epochs_total"]
    # the standby: its own view; after the primary dies it took over once
    code, _, text = http(surl + "/metrics")
    promtool_ok(text)
    ms = samples(text)
    assert ms['doppel_remus_role{role="standby"}'] == 1 and ms["doppel_remus_standby_connected"] == 1
    assert ms["doppel_remus_standby_received_epochs_total"] > 0
    pr.kill()
    pr.wait()
    wait_for(lambda: sb.ctl("status")["remus"]["role"] == "unprotected", 10, what="takeover")
    code, _, text = http(surl + "/metrics")
    promtool_ok(text)
    ms = samples(text)
    st = sb.ctl("status")
    assert ms["doppel_remus_failovers_total"] == st["remus"]["failovers"] == 1
    assert ms['doppel_remus_role{role="unprotected"}'] == 1 and ms['doppel_vm_state{state="running"}'] == 1


def chromium(url, *flags, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=4000", *flags, url],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


def test_status_page_renders(pair, tmp_path):
    pr, sb, purl, surl = pair
    code, ctype, html = http(purl + "/")
    assert code == 200 and ctype.startswith("text/html")
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external assets
    code, ctype, js = http(purl + "/status.json")
    j = json.loads(js)
    assert code == 200 and j["status"]["name"] == "pr" and len(j["epochs"]) > 10
    assert all(len(e) == 5 and 0 <= e[0] <= 60 and e[2] >= 0 for e in j["epochs"])
    assert j["last_failover"] is None
    t0 = time.monotonic()
    r = chromium(purl + "/", "--dump-dom")
    print(f"chromium --dump-dom took {time.monotonic() - t0:.1f} s")
    dom = r.stdout
    assert r.returncode == 0 and 'data-rendered="1"' in dom, r.stderr[-2000:]
    assert '<span id="vm-name">pr</span>' in dom
    assert re.search(r'id="vm-role"[^>]*>primary<', dom)
    assert re.search(r'id="protection"[^>]*>protected<', dom)
    n = int(re.search(r'data-epochs="(\d+)"', dom)[1])
    assert n > 10 and dom.count('class="bar"') >= n  # one pause bar per epoch at least
    assert 'id="failover">none recorded<' in dom
    shot = tmp_path / "status-primary.png"
    r = chromium(purl + "/", f"--screenshot={shot}", "--window-size=1000,700")
    assert r.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.stderr[-2000:]
    print(f"screenshot: {shot}")
    # after a failover the standby's page shows the failover report from its event log
    pr.kill()
    pr.wait()
    wait_for(lambda: sb.ctl("status")["remus"]["role"] == "unprotected", 10, what="takeover")
    fo = json.loads(http(surl + "/status.json")[2])["last_failover"]
    assert fo["type"] == "failover" and fo["takeover_ms"] > 0
    r = chromium(surl + "/", "--dump-dom")
    dom = r.stdout
    assert 'data-rendered="1"' in dom and 'id="failover-report"' in dom, r.stderr[-2000:]
    assert re.search(r"<td>takeover_ms</td><td>[0-9.]+</td>", dom)
    assert re.search(rf"<td>epoch</td><td>{fo['epoch']}</td>", dom)
    shot = tmp_path / "status-after-failover.png"
    r = chromium(surl + "/", f"--screenshot={shot}", "--window-size=1000,900")
    assert r.returncode == 0 and shot.stat().st_size > 1000


def test_metrics_http_and_flag_errors(doppel_bin, guest_elf, vm, tmp_path):
    port = free_port()
    v = vm(name="m1", extra=["--metrics", f"127.0.0.1:{port}"])
    v.wait_ctl()
    url = f"http://127.0.0.1:{port}"
    assert http(url + "/nope")[0] == 404
    assert http(url + "/metrics", method="POST")[0] == 405
    code, _, text = http(url + "/metrics")
    assert code == 200 and "doppel_remus_role" in text and "doppel_migration_active 0" in text
    promtool_ok(text)  # an unprotected VM too
    # the port is taken: the second VM fails with one clear line
    r = subprocess.run([doppel_bin, "run", "--kernel", guest_elf, "--name", "m2", "--serial", "none",
                        "--control", str(tmp_path / "m2.sock"), "--metrics", f"127.0.0.1:{port}"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert r.returncode == 1 and "cannot listen on" in r.stderr and "in use" in r.stderr, r.stderr
    for bad in ("nonsense", "127.0.0.1:", "127.0.0.1:99999", "[::1", "1.2.3.4.5:80"):
        r = subprocess.run([doppel_bin, "run", "--kernel", guest_elf, "--name", "m3", "--serial", "none",
                            "--control", str(tmp_path / "m3.sock"), "--metrics", bad],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
        assert r.returncode == 1 and "--metrics" in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = doppel(doppel_bin, "metrics", "nosuchvm", "--control", str(tmp_path / "none.sock"))
    assert r.returncode == 3 and "no VM control socket" in r.stderr  # 3: not running / unknown
