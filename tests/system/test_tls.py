"""test_tls.py — TLS 1.3 with mutual authentication on Remus and migration (`--tls-dir`): end to end
over TLS, and every way in that must be refused with one log line and no change on the standby or
destination: a plaintext client, a certificate of another CA, an expired one, one for another name,
a handshake dribbled byte by byte (closed at the deadline, a real primary then connects), a valid
certificate of another identity sending HELLO and a forged epoch after protection ended, and a TLS
stream cut mid-epoch (the standby takes over with exact memory). Certificates are made per session
with scripts/tls-certs.sh (certtool)."""
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from test_migrate import check_success, migrate, wait_ready
from test_remus import (MEM, Proxy, assert_took_over, dirty_vm, doppel, free_port, last_pass, protect,
                        remus, standby_vm)
from vmproc import VM, wait_for

pytestmark = pytest.mark.needs_kvm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFUSED = "refused a connection from"
HELLO = struct.pack("<IIQ", 0x534D4552, 1, (25 << 32) | 200)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """pr, sb, mallory: one CA; other/pr: a second CA; old: expired (2020-2021)."""
    d = str(tmp_path_factory.mktemp("certs"))
    script = os.path.join(ROOT, "scripts", "tls-certs.sh")
    for argv, env in (([d, "pr", "sb", "mallory"], {}),
                      ([d, "old"], {"EXPIRATION": "2021-01-01 00:00:00"}),
                      ([os.path.join(d, "other"), "pr"], {})):
        r = subprocess.run(["sh", script, *argv], env={**os.environ, **env}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return {n: os.path.join(d, n) for n in ("pr", "sb", "mallory", "old")} | {
        "other": os.path.join(d, "other", "pr")}


def refusals(vm):
    return [l for l in vm.stderr().splitlines() if REFUSED in l]


def raw_tls_client(port, cdir, payload=HELLO, timeout=8.0):
    """Python's ssl as a client presenting cdir's certificate (it does not check the server: the
    subject is the server's check). Sends payload, returns how the connection ended."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(os.path.join(cdir, "cert.pem"), os.path.join(cdir, "key.pem"))
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        ss = ctx.wrap_socket(s)
    except (ssl.SSLError, OSError) as e:
        s.close()
        return f"handshake: {e}"
    try:
        ss.sendall(payload)
        b = ss.recv(100)
        return "eof" if not b else f"data {b!r}"
    except (ssl.SSLError, OSError) as e:
        return f"closed: {e}"
    finally:
        ss.close()


@pytest.fixture
def tls_pair(doppel_bin, guest_elf, tmp_path, certs):
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb", f"127.0.0.1:{port}",
                    extra=["--tls-dir", certs["sb"], "--tls-peer-name", "pr"])
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "pr")
    yield pr, sb, port
    for v in (pr, sb):
        v.close()


def tls_protect(doppel_bin, pr, port, certs, cdir="pr", check=True):
    return protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs[cdir], "--tls-peer-name", "sb",
                   check=check)


def test_remus_over_tls_fails_over_exactly(doppel_bin, tls_pair, certs):
    pr, sb, port = tls_pair
    tls_protect(doppel_bin, pr, port, certs)
    s, ss = pr.ctl("status"), sb.ctl("status")
    assert s["tls"] is True and s["remus"]["tls"] is True and s["remus"]["tls_peer_name"] == "sb"
    assert ss["tls"] is True and ss["remus"]["tls"] is True
    wait_for(lambda: remus(pr)["epochs"] > 10, 10, what="epochs over TLS")
    assert remus(sb)["primary_identity"] == "pr"
    assert "over TLS 1.3 (peer certificate sb)" in pr.stderr()
    before = last_pass(pr)
    pr.kill()
    pr.wait()
    assert_took_over(sb, before)
    assert refusals(sb) == []


def test_plaintext_without_tls_dir_says_so(doppel_bin, guest_elf, tmp_path):
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb", f"127.0.0.1:{port}")
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "pr")
    try:
        assert sb.ctl("status")["tls"] is False and remus(sb)["tls"] is False
        protect(doppel_bin, pr, f"127.0.0.1:{port}")
        assert pr.ctl("status")["tls"] is False
        assert sb.stderr().count("plaintext and unauthenticated") == 1
        assert pr.stderr().count("plaintext and unauthenticated") == 1
    finally:
        pr.close()
        sb.close()


@pytest.mark.parametrize("who", ["plaintext", "other-ca", "expired", "other-name"])
def test_bad_client_refused_then_real_primary(doppel_bin, tls_pair, certs, who):
    pr, sb, port = tls_pair
    if who == "plaintext":
        with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
            s.sendall(HELLO + b"DOPPELSR" + bytes(40))
            s.settimeout(8)
            try:
                end = s.recv(100)
            except OSError as e:
                end = str(e)
    else:
        cdir = {"other-ca": certs["other"], "expired": certs["old"], "other-name": certs["mallory"]}[who]
        end = raw_tls_client(port, cdir)
    print("client saw:", end)
    wait_for(lambda: remus(sb)["refused"] == 1, 8, what="the standby to refuse")
    lines = refusals(sb)
    assert len(lines) == 1, sb.stderr()
    want = {"plaintext": "TLS handshake failed", "other-ca": "peer certificate rejected",
            "expired": "expired", "other-name": "peer certificate names mallory, expected pr"}[who]
    assert want in lines[0], lines[0]
    st = remus(sb)
    assert st["role"] == "standby" and not st["connected"] and not st["have_state"] and st["rx_epochs"] == 0
    assert "last_error" not in st
    tls_protect(doppel_bin, pr, port, certs)
    assert remus(sb)["have_state"] and remus(sb)["refused"] == 1


def test_primary_checks_the_standby_certificate(doppel_bin, tls_pair, certs):
    pr, sb, port = tls_pair
    r = protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs["pr"], "--tls-peer-name", "mallory",
                check=False)
    assert r.returncode != 0
    assert "peer certificate names sb, expected mallory" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    r = protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs["old"], check=False)
    assert r.returncode != 0 and "has expired" in r.stderr, r.stderr
    assert remus(pr)["role"] == "unprotected"
    tls_protect(doppel_bin, pr, port, certs)


def dribble(port, payload, every):
    """Send payload one byte per `every` s; return seconds until the peer closed (None: never)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for b in payload:
            try:
                s.sendall(bytes([b]))
                time.sleep(every)
                s.setblocking(False)
                try:
                    if s.recv(100) == b"":
                        return time.monotonic() - t0
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            except OSError:
                return time.monotonic() - t0
    return None


@pytest.mark.parametrize("mode", ["tls", "plaintext"])
def test_dribbled_handshake_closed_at_deadline(doppel_bin, guest_elf, tmp_path, certs, mode):
    port = free_port()
    extra = ["--tls-dir", certs["sb"]] if mode == "tls" else []
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb", f"127.0.0.1:{port}", extra=extra)
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "pr")
    try:
        # a TLS ClientHello-looking prefix, or a HELLO: one byte every 0.4 s would take 12 s
        payload = (bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + bytes(25)) if mode == "tls" else HELLO * 2
        took = dribble(port, payload, 0.4)
        print(f"closed after {took} s")
        assert took is not None and 4.5 <= took <= 7.5, took  # HELLO_TIMEOUT_MS = 5000, one deadline
        wait_for(lambda: remus(sb)["refused"] == 1, 3, what="refusal counted")
        assert len(refusals(sb)) == 1 and not remus(sb)["have_state"]
        extra = ["--tls-dir", certs["pr"]] if mode == "tls" else []
        protect(doppel_bin, pr, f"127.0.0.1:{port}", *extra)
        assert remus(sb)["have_state"]
    finally:
        pr.close()
        sb.close()


def test_other_identity_refused_after_abandon(doppel_bin, guest_elf, tmp_path, certs):
    """No pinned name: any certificate of the CA may protect a fresh standby, but once a primary's
    checkpoint was committed, a valid certificate of another name cannot replace it (HELLO and a
    forged epoch are never read); with --accept-any-peer it could."""
    port = free_port()
    sb = standby_vm(doppel_bin, guest_elf, str(tmp_path), "sb", f"127.0.0.1:{port}",
                    extra=["--tls-dir", certs["sb"]])
    pr = dirty_vm(doppel_bin, guest_elf, str(tmp_path), "pr")
    try:
        protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs["pr"])
        time.sleep(0.3)
        r = doppel(doppel_bin, "unprotect", "pr", "--control", pr.control)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: remus(sb)["state"] == "abandoned", 5, what="ABANDON")
        kept = remus(sb)
        assert kept["primary_identity"] == "pr" and kept["have_state"]
        forged = HELLO + b"DOPPELSR" + struct.pack("<IIIIQII", 1, 0x01020304, 4096, 1, 128 << 20, 1, 0)
        end = raw_tls_client(port, certs["mallory"], payload=forged + bytes(4096))
        print("client saw:", end)
        wait_for(lambda: remus(sb)["refused"] == 1, 8, what="refusal")
        lines = refusals(sb)
        assert len(lines) == 1 and "peer mallory is not this replica's primary pr" in lines[0], lines
        now = remus(sb)
        assert (now["epoch"], now["have_state"], now["state"], now["rx_epochs"]) == (
            kept["epoch"], True, "abandoned", kept["rx_epochs"])
        # the real primary may come back
        protect(doppel_bin, pr, f"127.0.0.1:{port}", "--tls-dir", certs["pr"])
        assert remus(sb)["state"] == "held"
    finally:
        pr.close()
        sb.close()


def test_tls_stream_cut_mid_epoch_takes_over_exactly(doppel_bin, tls_pair, certs):
    pr, sb, port = tls_pair
    px = Proxy(port)
    protect(doppel_bin, pr, f"127.0.0.1:{px.port}", "--tls-dir", certs["pr"], "--tls-peer-name", "sb")
    time.sleep(0.5)
    kept = remus(sb)["epoch"]
    px.mode = "cut"  # half of a chunk of TLS records, then close: a record cut in the middle
    assert px.done.wait(5)
    wait_for(lambda: remus(sb)["role"] == "unprotected", 5, what="standby takeover after a cut")
    ev = remus(sb)["events"][-1]
    assert ev["kind"] == "failover" and ev["epoch"] >= kept
    sb.wait_output(r"dirty: pass=", timeout=10)
    time.sleep(0.6)
    d = sb.dirty()
    assert d and all(x["bad"] == 0 for x in d), sb.output()[-1500:]


def test_migration_over_tls_and_wrong_source_refused(doppel_bin, guest_elf, tmp_path, certs):
    port = free_port()
    src = VM(doppel_bin, str(tmp_path), name="src", kernel=guest_elf, cmdline="work=dirty ws=16M pi=100",
             mem="256M")
    dst = VM(doppel_bin, str(tmp_path), name="dst", kernel=None, cmdline=None, mem="256M",
             extra=["--incoming", f"127.0.0.1:{port}", "--tls-dir", certs["sb"], "--tls-peer-name", "pr"])
    try:
        src.wait_output(r"dirty: pass=\d+", timeout=20)
        wait_ready(dst)
        assert dst.ctl("status")["migration"]["tls"] is True
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", "--tls-dir", certs["mallory"])
        assert r.returncode == 1 and "migration failed" in json.loads(r.stdout)["error"], r.stdout
        wait_for(lambda: len(dst.stderr().splitlines()) and REFUSED in dst.stderr(), 5, what="refusal line")
        assert dst.stderr().count(REFUSED) == 1
        assert "peer certificate names mallory, expected pr" in dst.stderr()
        assert dst.ctl("status")["migration"]["state"] == "waiting"
        assert src.ctl("status")["migration"]["state"] == "failed"
        r, _ = migrate(doppel_bin, src, f"127.0.0.1:{port}", "--tls-dir", certs["pr"], "--tls-peer-name", "sb")
        check_success(r, src, dst)
        assert dst.ctl("status")["tls"] is True
    finally:
        src.close()
        dst.close()
