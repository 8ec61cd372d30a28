"""test_cli.py — the doppel command line as operators use it: exit codes, JSON errors, --help against each
parser, --version, list (the VM registry), console, run's exit status, sd_notify, the systemd unit, make
install, the man page, the OCF agent (ocf-tester) and bash completion."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from vmproc import VM, ctl, wait_for

pytestmark = pytest.mark.needs_kvm

REPO = Path(__file__).resolve().parents[2]
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_REFUSED, EXIT_FENCED, EXIT_GUEST = 0, 1, 2, 3, 4, 5, 6


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    """A private registry for every test: `doppel list` sees only this test's VMs."""
    d = tmp_path / "rt"
    monkeypatch.setenv("DOPPEL_RUNTIME_DIR", str(d))
    return d


def cli(doppel_bin, *args, timeout=30, input=None):
    return subprocess.run([doppel_bin, *args], capture_output=True, text=True, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)


def verbs(doppel_bin):
    r = cli(doppel_bin, "--list-verbs")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


# ---- help, parser, man page, version ------------------------------------------------------------------

OPTION_LINE = re.compile(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)")


def help_flags(text):
    """Flags documented on option lines ("  -x, --flag ARG  text"; every --flag on such a line counts,
    so aliases named there count too) and flags named in the usage lines."""
    opt, usage = set(), set()
    in_usage = in_option = False
    for line in text.splitlines():
        if line.startswith("usage:"):
            in_usage = True
        elif not line.strip():
            in_usage = False
        if in_usage:
            usage |= set(re.findall(r"--[a-z][a-z0-9-]*", line))
            continue
        if OPTION_LINE.match(line):
            in_option = True
        elif not (in_option and re.match(r"\s{6,}\S", line) and not line.strip().startswith("-")):
            in_option = False  # not an option's description continued on a deeper-indented line
        if in_option:
            opt |= set(re.findall(r"--[a-z][a-z0-9-]*", line))
    return opt, usage


def test_every_verbs_help_matches_its_parser(doppel_bin):
    names = verbs(doppel_bin)
    assert names == ["run", "status", "pause", "resume", "stop", "snapshot", "migrate", "protect",
                     "failover", "unprotect", "switchover", "reprotect", "drill", "events", "metrics",
                     "fleet", "list", "console", "version"]
    man = (REPO / "docs" / "doppel.1.scd").read_text()
    for verb in names:
        parsed = cli(doppel_bin, verb, "--list-options")
        assert parsed.returncode == 0, (verb, parsed.stderr)
        table = set(parsed.stdout.split())
        assert table and all(f.startswith("--") for f in table), (verb, parsed.stdout)
        h = cli(doppel_bin, verb, "--help")
        assert h.returncode == 0 and h.stdout.startswith(f"usage: doppel {verb}"), (verb, h.stdout)
        opt, usage = help_flags(h.stdout)
        assert opt == table, (verb, "help lists", sorted(opt - table), "parser has", sorted(table - opt))
        assert usage <= table, (verb, sorted(usage - table))
        for f in table:  # the man page names every flag the parser accepts
            assert f"*{f}*" in man, (verb, f)
        # each documented flag really parses (not "unknown option")
        for f in table - {"--help"}:
            r = cli(doppel_bin, verb, f)
            assert "unknown option" not in r.stderr, (verb, f, r.stderr)


def test_timeout_help_is_true_for_each_verb(doppel_bin):
    lines = {v: [l for l in cli(doppel_bin, v, "--help").stdout.splitlines() if "--timeout-ms MS " in l
                 and OPTION_LINE.match(l)] for v in ("status", "snapshot", "migrate", "protect", "console")}
    for v, ls in lines.items():
        assert len(ls) == 1, (v, ls)  # migrate printed two contradicting lines before
    assert "default" in lines["status"][0]
    full = {v: cli(doppel_bin, v, "--help").stdout for v in ("snapshot", "migrate", "protect")}
    assert "600000" in full["snapshot"] and "default\n                       10000" not in full["snapshot"]
    assert "I/O timeout during the migration (default 5000" in full["migrate"]
    assert "(default 120000; alias --timeout)" in full["protect"]


def test_version(doppel_bin):
    a = cli(doppel_bin, "--version")
    b = cli(doppel_bin, "version")
    j = cli(doppel_bin, "version", "--json")
    assert a.returncode == b.returncode == j.returncode == 0
    assert a.stdout == b.stdout
    assert re.fullmatch(r"doppel \d+\.\d+\.\d+\S*\n", a.stdout), a.stdout
    assert json.loads(j.stdout) == {"version": a.stdout.split()[1]}
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    if head:  # built from this checkout: the version names a commit of it or a tag
        v = a.stdout.split()[1]
        assert re.search(r"-g[0-9a-f]{7,}", v) or re.fullmatch(r"v?\d+\.\d+\.\d+", v), v


# ---- exit codes and JSON errors -------------------------------------------------------------------

def test_exit_codes_and_json_errors(doppel_bin, tmp_path):
    r = cli(doppel_bin, "status", "nosuchvm")
    assert r.returncode == EXIT_NOT_RUNNING and r.stdout == ""
    assert r.stderr == "doppel status: no VM control socket at /run/doppel/nosuchvm.sock (is the VM running?)\n"
    r = cli(doppel_bin, "status", "nosuchvm", "--json")
    assert r.returncode == EXIT_NOT_RUNNING and r.stderr == ""
    assert json.loads(r.stdout) == {"ok": False, "exit": 3, "error": "no VM control socket at "
                                    "/run/doppel/nosuchvm.sock (is the VM running?)"}
    # a stale socket: nothing listening
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    r = cli(doppel_bin, "pause", "--control", str(stale), "--json")
    assert r.returncode == EXIT_NOT_RUNNING and json.loads(r.stdout)["exit"] == 3
    # usage errors, plain and JSON
    r = cli(doppel_bin, "snapshot", "vm1")
    assert r.returncode == EXIT_USAGE
    assert r.stderr == ("doppel snapshot: missing FILE (doppel snapshot NAME FILE) "
                        "(try doppel snapshot --help)\n")
    r = cli(doppel_bin, "protect", "vm1", "--json", "--interval-ms", "0")
    assert r.returncode == EXIT_USAGE and r.stderr == ""
    assert json.loads(r.stdout) == {"ok": False, "exit": 2,
                                    "error": "bad --interval-ms '0' (milliseconds, 1..10000)"}
    r = cli(doppel_bin, "status", "vm1", "--bogus", "--json")
    assert r.returncode == EXIT_USAGE and json.loads(r.stdout)["error"] == "unknown option '--bogus'"
    r = cli(doppel_bin, "frobnicate", "--json")
    assert r.returncode == EXIT_USAGE and json.loads(r.stdout)["exit"] == 2
    r = cli(doppel_bin, "list", "extra")
    assert r.returncode == EXIT_USAGE and "unexpected argument 'extra'" in r.stderr
    # the old unit-less names still parse
    r = cli(doppel_bin, "status", "nosuchvm", "--timeout", "50")
    assert r.returncode == EXIT_NOT_RUNNING, r.stderr


def test_refused_by_state_exits_4(vm, doppel_bin, tmp_path):
    sb = vm(name="sb", kernel=None, cmdline=None, extra=["--standby", "--listen", f"127.0.0.1:{free_port()}"])
    sb.wait_ctl()
    r = cli(doppel_bin, "pause", "--control", sb.control)
    assert r.returncode == EXIT_REFUSED and r.stderr == "doppel pause: sb is not running\n", r.stderr
    r = cli(doppel_bin, "failover", "--control", sb.control, "--json")
    assert r.returncode == EXIT_REFUSED, r
    out = json.loads(r.stdout)
    assert out["exit"] == 4 and "no complete checkpoint" in out["error"]
    # a request that fails for another reason stays 1
    pr = vm(name="pr", cmdline="work=idle pi=200")
    pr.wait_ctl()
    r = cli(doppel_bin, "protect", "--control", pr.control, "--peer", "127.0.0.1:1")
    assert r.returncode == EXIT_FAIL and "connect" in r.stderr, r.stderr


# ---- run's own exit status -----------------------------------------------------------------------

def test_run_exit_status_never_collides(vm, doppel_bin, tmp_path):
    st = tmp_path / "st0"
    v = vm(name="z", cmdline="work=exit exit=0", extra=["--exit-status-file", str(st)])
    assert v.wait() == EXIT_OK and st.read_text() == "0\n"
    for status in (1, 2, 3, 4):  # exactly the values doppel uses for itself
        st = tmp_path / f"st{status}"
        v = vm(name=f"g{status}", cmdline=f"work=exit exit={status}", extra=["--exit-status-file", str(st)])
        assert v.wait() == EXIT_GUEST, v.stderr()
        assert st.read_text() == f"{status}\n"
        assert f"guest exited with status {status}" in v.stderr()
    # stopped by the host: 0, and the file is not written (the guest did not end it)
    st = tmp_path / "stop"
    v = vm(name="s", cmdline="work=idle pi=200", extra=["--exit-status-file", str(st)])
    v.wait_ctl()
    assert cli(doppel_bin, "stop", "--control", v.control).returncode == 0
    assert v.wait() == EXIT_OK and not st.exists()
    v = vm(name="t", cmdline="work=idle pi=200")
    v.wait_ctl()
    v.kill(signal.SIGTERM)
    assert v.wait() == EXIT_OK
    assert not os.path.exists(v.control)


# ---- list -------------------------------------------------------------------------------------------

def list_json(doppel_bin):
    r = cli(doppel_bin, "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["vms"]


def test_list_finds_vms_with_custom_control_paths(vm, doppel_bin, runtime_dir, tmp_path):
    assert list_json(doppel_bin) == []
    a = vm(name="alpha", cmdline="work=idle pi=200")
    b = vm(name="beta", cmdline="work=idle pi=200")
    sb = vm(name="gamma", kernel=None, cmdline=None, extra=["--standby", "--listen", f"127.0.0.1:{free_port()}"])
    for v in (a, b, sb):
        v.wait_ctl()
    wait_for(lambda: len(list(runtime_dir.glob("vms/*.json"))) == 3, 10, what="3 registry entries")
    entries = {p.name for p in (runtime_dir / "vms").glob("*.json")}
    assert entries == {f"alpha.{a.proc.pid}.json", f"beta.{b.proc.pid}.json", f"gamma.{sb.proc.pid}.json"}
    vms = list_json(doppel_bin)
    assert [x["name"] for x in vms] == ["alpha", "beta", "gamma"]
    by = {x["name"]: x for x in vms}
    assert by["alpha"]["control"] == a.control and by["alpha"]["pid"] == a.proc.pid
    assert by["alpha"]["state"] == "running" and by["alpha"]["role"] == "unprotected"
    assert by["alpha"]["protection"] is None and 0 < by["alpha"]["uptime_s"] < 60
    assert by["gamma"]["role"] == "standby" and by["gamma"]["control"] == sb.control
    # plain table: a header and one row each
    r = cli(doppel_bin, "list")
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["NAME", "STATE", "ROLE", "PROTECTION", "UPTIME", "CONTROL"]
    assert [row.split()[0] for row in rows[1:]] == ["alpha", "beta", "gamma"]
    assert rows[1].split()[1:4] == ["running", "unprotected", "-"] and rows[1].split()[-1] == a.control
    # a verb finds a VM by name through the registry although its socket is not /run/doppel/NAME.sock
    r = cli(doppel_bin, "status", "alpha", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "alpha", r
    # clean exit removes the entry
    assert cli(doppel_bin, "stop", "beta").returncode == 0
    assert b.wait() == 0
    assert [x["name"] for x in list_json(doppel_bin)] == ["alpha", "gamma"]
    # SIGKILL leaves a stale entry: list skips and removes it
    a.kill()
    a.wait()
    assert (runtime_dir / "vms" / f"alpha.{a.proc.pid}.json").exists()
    assert [x["name"] for x in list_json(doppel_bin)] == ["gamma"]
    assert not (runtime_dir / "vms" / f"alpha.{a.proc.pid}.json").exists()
    r = cli(doppel_bin, "status", "alpha")
    assert r.returncode == EXIT_NOT_RUNNING


def test_list_two_vms_of_one_name_need_control(doppel_bin, guest_elf, tmp_path):
    twins = []
    try:
        for d in ("one", "two"):
            (tmp_path / d).mkdir()
            twins.append(VM(doppel_bin, str(tmp_path / d), name="twin", kernel=guest_elf, cmdline="work=idle pi=200"))
        for t in twins:
            t.wait_ctl()
        wait_for(lambda: len(list_json(doppel_bin)) == 2, 10, what="both twins listed")
        assert sorted(x["control"] for x in list_json(doppel_bin)) == sorted(t.control for t in twins)
        r = cli(doppel_bin, "status", "twin")
        assert r.returncode == EXIT_USAGE
        assert "2 VMs named 'twin' run here: say which with --control PATH" in r.stderr
        r = cli(doppel_bin, "status", "twin", "--control", twins[1].control, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["pid"] == twins[1].proc.pid
    finally:
        for t in twins:
            t.close()


# ---- console ------------------------------------------------------------------------------------------

class Console:
    def __init__(self, doppel_bin, control):
        self.p = subprocess.Popen([doppel_bin, "console", "--control", control], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.buf = b""

    def read_until(self, pattern, timeout=10):
        rx = re.compile(pattern)

        def more():
            try:
                chunk = self.p.stdout.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                self.buf += chunk
            return rx.search(self.buf.decode(errors="replace"))
        return wait_for(more, timeout, what=f"{pattern!r} on the console")


def test_console_streams_serial_takes_input_and_detaches(vm, doppel_bin):
    v = vm(name="con", cmdline="work=idle pi=100")
    v.wait_ctl()
    c = Console(doppel_bin, v.control)
    try:
        m = c.read_until(r"idle: t=(\d+\.\d+)\n")
        wait_for(lambda: v.ctl("status")["console"]["attached"], 5, what="console attached")
        # the serial log file goes on being written while a console is attached
        assert m.group(0).strip() in v.output()
        # one console at a time: a second client gets a clear error, exit 4
        r = cli(doppel_bin, "console", "--control", v.control)
        assert r.returncode == EXIT_REFUSED
        assert r.stderr == "doppel console: con: a console client is already attached (one at a time)\n"
        # input reaches the UART
        c.p.stdin.write(b"hello")
        c.p.stdin.flush()
        wait_for(lambda: v.ctl("status")["console"]["bytes_in"] == 5, 5, what="5 bytes into the UART")
        # Ctrl-] detaches: bytes before it still go in, the VM runs on
        c.p.stdin.write(b"ab\x1dcd")
        c.p.stdin.flush()
        assert c.p.wait(10) == 0
        assert b"detached from" in c.p.stderr.read()
    finally:
        if c.p.poll() is None:
            c.p.kill()
    st = wait_for(lambda: (s := v.ctl("status")["console"]) and not s["attached"] and s, 5, what="detach")
    assert st["bytes_in"] == 7 and st["sessions"] == 1 and st["bytes_out"] > 0
    assert v.ctl("status")["state"] == "running"
    # a new console attaches after the first left, and sees the VM stop
    c = Console(doppel_bin, v.control)
    try:
        c.read_until(r"idle: t=")
        assert cli(doppel_bin, "stop", "--control", v.control).returncode == 0
        assert c.p.wait(10) == 0
        assert b"closed the console" in c.p.stderr.read()
    finally:
        if c.p.poll() is None:
            c.p.kill()
    assert v.wait() == 0


def test_console_not_running(doppel_bin, tmp_path):
    r = cli(doppel_bin, "console", "--control", str(tmp_path / "none.sock"))
    assert r.returncode == EXIT_NOT_RUNNING and "no VM control socket" in r.stderr


# ---- systemd: sd_notify and the unit ---------------------------------------------------------------------

def systemd_is_pid1():
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def test_sd_notify_ready_when_control_socket_is_up(doppel_bin, guest_elf, tmp_path):
    """systemd is not PID 1 on the test machine, so a fake NOTIFY_SOCKET stands in for it: doppel must
    send READY=1 once, and only when its control socket already answers."""
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    ns.bind(path)
    ns.settimeout(20)
    control = str(tmp_path / "n.sock")
    env = dict(os.environ, NOTIFY_SOCKET=path)
    p = subprocess.Popen([doppel_bin, "run", "--name", "n", "--kernel", guest_elf, "--cmdline", "work=idle pi=200",
                          "--serial", "none", "--control", control], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        msg = ns.recv(4096).decode()
        fields = dict(l.split("=", 1) for l in msg.splitlines())
        assert fields["READY"] == "1" and fields["STATUS"] == "n running, control socket up", msg
        assert ctl(control, {"cmd": "status"})["state"] == "running"  # already up when READY arrived
        p.send_signal(signal.SIGTERM)  # how the unit stops it
        assert p.wait(20) == 0
        assert not os.path.exists(control)
    finally:
        if p.poll() is None:
            p.kill()
        ns.close()


def test_systemd_unit_verifies(build_dir, tmp_path):
    unit = (REPO / "scripts" / "doppel@.service").read_text()
    assert "Type=notify" in unit and "KillSignal=SIGTERM" in unit
    assert "ExecStart=@BINDIR@/doppel run --config /etc/doppel/%i.json --name %i" in unit
    inst = tmp_path / "doppel@vm1.service"
    inst.write_text(unit.replace("@BINDIR@", str(build_dir)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(inst)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_transient_unit_where_systemd_runs(doppel_bin, guest_elf, tmp_path):
    """The unit's service settings as a transient unit (systemd-run): active only after READY=1 with
    the control socket up, and stopped cleanly by SIGTERM. Needs systemd as PID 1; where it is not (the
    CI containers), test_sd_notify_ready_when_control_socket_is_up covers the notify path instead."""
    if not systemd_is_pid1():
        pytest.skip("systemd is not PID 1 here: the sd_notify path is tested with a fake NOTIFY_SOCKET")
    unit = f"doppel-test-{os.getpid()}"
    control = str(tmp_path / "u.sock")
    r = subprocess.run(["systemd-run", f"--unit={unit}", "-p", "Type=notify", "-p", "NotifyAccess=main",
                        "-p", "KillSignal=SIGTERM", "-p", "KillMode=mixed", doppel_bin, "run", "--name", "u",
                        "--kernel", guest_elf, "--cmdline", "work=idle pi=200", "--serial", "none",
                        "--control", control], capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        # systemd-run returns once the start job is done: for Type=notify, after READY=1
        assert ctl(control, {"cmd": "status"})["state"] == "running"
        st = subprocess.run(["systemctl", "show", unit, "-p", "ActiveState", "-p", "StatusText"],
                            capture_output=True, text=True).stdout
        assert "ActiveState=active" in st and "StatusText=u running, control socket up" in st, st
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, timeout=60)
    res = subprocess.run(["systemctl", "show", unit, "-p", "Result"], capture_output=True, text=True).stdout
    assert "Result=success" in res or res.strip() in ("", "Result="), res  # unit gone once stopped cleanly
    assert not os.path.exists(control)


# ---- make install, man page ---------------------------------------------------------------------------

def test_make_install_into_destdir(build_dir, tmp_path):
    dest = tmp_path / "dest"
    # Install the binaries under test, never rebuild them: pass the version they were built with (a
    # commit since, or a dirty tree, would otherwise regenerate the version header and relink
    # build_dir/doppel — without an asan build's flags — under the feet of the tests still running).
    built = subprocess.run([str(build_dir / "doppel"), "--version"], capture_output=True, text=True)
    version = built.stdout.split()[-1]
    mtime = os.stat(build_dir / "doppel").st_mtime_ns
    r = subprocess.run(["make", "-s", "-C", str(REPO), f"B={build_dir}", "install", f"DESTDIR={dest}",
                        "PREFIX=/usr", f"VERSION={version}"], capture_output=True, text=True, timeout=300)
    assert os.stat(build_dir / "doppel").st_mtime_ns == mtime, "make install relinked the binary under test"
    assert r.returncode == 0, r.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["usr/bin/doppel", "usr/lib/ocf/resource.d/doppel/doppel",
                     "usr/lib/systemd/system/doppel@.service", "usr/share/bash-completion/completions/doppel",
                     "usr/share/man/man1/doppel.1"]
    assert os.stat(dest / "usr/bin/doppel").st_mode & 0o777 == 0o755
    assert os.stat(dest / "usr/lib/ocf/resource.d/doppel/doppel").st_mode & 0o777 == 0o755
    assert (dest / "usr/bin/doppel").read_bytes() == (build_dir / "doppel").read_bytes()
    unit = (dest / "usr/lib/systemd/system/doppel@.service").read_text()
    assert "ExecStart=/usr/bin/doppel run --config /etc/doppel/%i.json" in unit and "@BINDIR@" not in unit
    assert ': "${OCF_RESKEY_doppel:=/usr/bin/doppel}"' in (dest / "usr/lib/ocf/resource.d/doppel/doppel").read_text()
    man = subprocess.run(["man", "-l", str(dest / "usr/share/man/man1/doppel.1")], capture_output=True, text=True,
                         env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0"))
    assert man.returncode == 0, man.stderr
    text = re.sub(r".\x08", "", man.stdout)
    section = text[text.index("EXIT STATUS"):text.index("FILES")]
    codes = [int(l.strip()) for l in section.splitlines() if re.fullmatch(r"\s+\d", l)]
    assert codes == [0, 1, 2, 3, 4, 5, 6], section


# ---- OCF resource agent -----------------------------------------------------------------------------------

def ocf_agent(build_dir, tmp_path):
    # ocf-tester runs the agent through a path every user can traverse: not under pytest's 0700 tmp
    d = Path(tempfile.mkdtemp(prefix="doppel-ocf-"))
    d.chmod(0o755)
    a = d / "ocf-doppel"
    a.write_text((REPO / "scripts" / "ocf-doppel").read_text().replace("@BINDIR@", str(build_dir)))
    a.chmod(0o755)
    return str(a)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ocf_tester_passes(build_dir, guest_elf, tmp_path, doppel_bin):
    agent = ocf_agent(build_dir, tmp_path)
    ctlp = str(tmp_path / "ocf.sock")
    r = subprocess.run(["ocf-tester", "-n", "ocfvm", "-o", "name=ocfvm", "-o", f"listen=127.0.0.1:{free_port()}",
                        "-o", f"control={ctlp}", "-o", f"kernel={guest_elf}", "-o", "cmdline=work=idle pi=500",
                        "-o", "run_options=--mem 64M", "-o", f"log={tmp_path / 'ocf.log'}", agent],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and f"{agent} passed all tests" in r.stdout, (r.stdout, r.stderr)
    assert cli(doppel_bin, "status", "--control", ctlp).returncode == EXIT_NOT_RUNNING  # left stopped


def test_ocf_agent_fails_over_between_two_nodes(build_dir, guest_elf, tmp_path, doppel_bin):
    """Two instances on one host stand in for two nodes: A promoted (first boot) protects to B's standby;
    Pacemaker's switch (demote A, promote B, notify) makes B the primary from its last checkpoint, then
    protects B to A's new standby."""
    agent = ocf_agent(build_dir, tmp_path)
    pa, pb = free_port(), free_port()
    nodes = {}
    for n, listen, peer in (("a", pa, pb), ("b", pb, pa)):
        nodes[n] = dict(os.environ, OCF_ROOT="/usr/lib/ocf", OCF_RESKEY_name="ha",
                        OCF_RESKEY_listen=f"127.0.0.1:{listen}", OCF_RESKEY_peer=f"127.0.0.1:{peer}",
                        OCF_RESKEY_control=str(tmp_path / f"{n}.sock"), OCF_RESKEY_kernel=guest_elf,
                        OCF_RESKEY_cmdline="work=dirty ws=4M pi=200", OCF_RESKEY_run_options="--mem 64M",
                        OCF_RESKEY_log=str(tmp_path / f"{n}.log"))

    def act(n, action, **extra):
        return subprocess.run([agent, action], env=dict(nodes[n], **extra), capture_output=True, text=True,
                              timeout=180).returncode

    def status(n):
        return ctl(str(tmp_path / f"{n}.sock"), {"cmd": "status"})
    OCF_SUCCESS, OCF_NOT_RUNNING, OCF_RUNNING_MASTER = 0, 7, 8
    try:
        assert act("a", "monitor") == OCF_NOT_RUNNING
        assert act("a", "start") == OCF_SUCCESS and act("b", "start") == OCF_SUCCESS
        assert act("a", "monitor") == OCF_SUCCESS and act("b", "monitor") == OCF_SUCCESS  # two standbys
        assert act("a", "promote") == OCF_SUCCESS  # nothing ever ran: A boots the VM, protects to B
        assert act("a", "monitor") == OCF_RUNNING_MASTER
        wait_for(lambda: status("a")["role"] == "primary" and status("a")["remus"]["acked_epoch"] > 2, 30,
                 what="A protected to B")
        assert status("b")["role"] == "standby"
        # the switch: demote A (stop + standby), promote B (failover from the last checkpoint), notify
        assert act("a", "demote") == OCF_SUCCESS and act("a", "monitor") == OCF_SUCCESS
        assert act("b", "promote") == OCF_SUCCESS
        assert act("b", "monitor") == OCF_RUNNING_MASTER
        assert status("b")["state"] == "running"
        assert act("b", "notify", OCF_RESKEY_CRM_meta_notify_type="post",
                   OCF_RESKEY_CRM_meta_notify_operation="promote") == OCF_SUCCESS
        wait_for(lambda: status("b")["role"] == "primary", 30, what="B protected to A")
        assert status("a")["role"] == "standby"
    finally:
        for n in nodes:
            act(n, "stop")
    assert act("a", "monitor") == OCF_NOT_RUNNING and act("b", "monitor") == OCF_NOT_RUNNING


# ---- bash completion ------------------------------------------------------------------------------------

def complete(build_dir, words, env=None):
    script = (f"source {REPO}/scripts/doppel.bash-completion; PATH={build_dir}:$PATH; "
              f"COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
              "[ \"${COMP_LINE_EMPTY:-}\" = 1 ] && COMP_CWORD=${#COMP_WORDS[@]}; _doppel; echo \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env or os.environ)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion(vm, build_dir, runtime_dir):
    assert complete(build_dir, "doppel pro") == ["protect"]
    assert complete(build_dir, "doppel l") == ["list"]
    assert complete(build_dir, "doppel --v") == ["--version"]
    assert complete(build_dir, "doppel protect vm1 --inter") == ["--interval-ms", "--interval"]
    assert complete(build_dir, "doppel protect vm1 --standby-lost f") == ["fence"]
    assert complete(build_dir, "doppel migrate vm1 --comp") == ["--compress"]
    v = vm(name="compvm", cmdline="work=idle pi=200")
    w = vm(name="compother", cmdline="work=idle pi=200")
    v.wait_ctl()
    w.wait_ctl()
    assert complete(build_dir, "doppel console compv") == ["compvm"]
    assert sorted(complete(build_dir, "doppel status comp")) == ["compother", "compvm"]
    assert complete(build_dir, "doppel run compv") == []  # run takes no VM name
