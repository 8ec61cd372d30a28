"""test_sandbox.py — the VM process's seccomp allowlist and capability drop (vmm/sandbox.c): on by
default, a forbidden system call made by one of its threads kills the whole process (SIGSYS) instead
of succeeding; --no-sandbox lets the same call through; capabilities are narrowed. The forbidden
call comes from the hidden `sandbox-selftest` command, which exists only with DOPPEL_TEST_HOOKS=1."""
import signal

import pytest

from vmproc import VM, ctl, wait_for

pytestmark = pytest.mark.needs_kvm

# CAP_DAC_OVERRIDE(1) CAP_DAC_READ_SEARCH(2) CAP_FOWNER(3) CAP_SYS_NICE(23)
KEPT = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 23)


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


def start(doppel_bin, guest_elf, tmp_path, monkeypatch, extra=(), hooks=True):
    if hooks:
        monkeypatch.setenv("DOPPEL_TEST_HOOKS", "1")
    v = VM(doppel_bin, str(tmp_path), name="sbx", kernel=guest_elf, cmdline="work=dirty ws=8M pi=200",
           mem="64M", extra=list(extra))
    v.wait_output(r"dirty: pass=", timeout=20)
    v.wait_ctl()
    return v


def test_forbidden_syscall_from_a_thread_kills(doppel_bin, guest_elf, tmp_path, monkeypatch):
    v = start(doppel_bin, guest_elf, tmp_path, monkeypatch)
    try:
        st = proc_status(v.proc.pid)
        assert st["Seccomp"] == "2" and st["Seccomp_filters"] == "1", st
        assert int(st["CapEff"], 16) & ~KEPT == 0 and int(st["CapPrm"], 16) & ~KEPT == 0, st
        assert v.ctl("status")["state"] == "running"  # the filter lets the VM work
        try:
            rep = ctl(v.control, {"cmd": "sandbox-selftest"})
        except (OSError, ValueError) as e:  # the process died under the request
            rep = f"no reply: {e}"
        print("reply:", rep)
        assert v.wait(10) == -signal.SIGSYS
    finally:
        v.close()


def test_no_sandbox_lets_it_through(doppel_bin, guest_elf, tmp_path, monkeypatch):
    v = start(doppel_bin, guest_elf, tmp_path, monkeypatch, extra=["--no-sandbox"])
    try:
        assert proc_status(v.proc.pid)["Seccomp"] == "0"
        assert v.ctl("sandbox-selftest")["unshare"] == 0
        n = v.dirty()[-1]["pass"]
        wait_for(lambda: v.dirty()[-1]["pass"] > n, 5, what="the guest to keep running")
        assert "sandbox off" in v.stderr()
    finally:
        v.close()


def test_selftest_absent_without_hooks(doppel_bin, guest_elf, tmp_path, monkeypatch):
    monkeypatch.delenv("DOPPEL_TEST_HOOKS", raising=False)
    v = start(doppel_bin, guest_elf, tmp_path, monkeypatch, hooks=False)
    try:
        rep = ctl(v.control, {"cmd": "sandbox-selftest"})
        assert rep["ok"] is False and "unknown" in rep["error"], rep
        assert v.proc.poll() is None
    finally:
        v.close()
