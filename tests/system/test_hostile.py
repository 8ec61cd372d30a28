"""test_hostile.py — a hostile guest must not take doppel down: stray MMIO and port I/O warn and the VM keeps
running; a triple fault stops the VM with one clear line and a non-zero exit."""
import re

import pytest

from vmproc import VM

pytestmark = pytest.mark.needs_kvm


def run(doppel_bin, guest_elf, tmp_path, cmdline):
    vm = VM(doppel_bin, str(tmp_path), kernel=guest_elf, cmdline=cmdline, mem="128M")
    try:
        rc = vm.wait(30)
    finally:
        vm.close()
    return rc, vm.output(), vm.stderr()


def test_unclaimed_mmio_warns_and_keeps_running(doppel_bin, guest_elf, tmp_path):
    rc, out, err = run(doppel_bin, guest_elf, tmp_path, "work=fault fault=mmio")
    assert re.search(r"^fault: mmio read 0xfe000000 -> 0x[0-9a-f]+ and write survived$", out, re.M), out
    assert rc == 0, (rc, out, err)
    warns = [l for l in err.splitlines() if "0xfe00000" in l]
    # exactly one line per stray access, each naming its address: the read of 0xfe000000 and the
    # write to 0xfe000004 (well under the vm's cap on such warnings)
    assert len(warns) == 2, err
    assert all("no device" in l for l in warns), err
    assert "0xfe000000" in warns[0] and "0xfe000004" in warns[1], err


def test_triple_fault_stops_the_vm_with_one_line(doppel_bin, guest_elf, tmp_path):
    rc, out, err = run(doppel_bin, guest_elf, tmp_path, "work=fault fault=triple")
    assert "fault: triple fault next" in out, out
    assert "survived" not in out, out
    assert rc != 0, (rc, out, err)
    lines = [l for l in err.splitlines() if "triple fault" in l]
    assert len(lines) == 1 and "guest triple fault" in lines[0], err


def test_unclaimed_port_warns_and_keeps_running(doppel_bin, guest_elf, tmp_path):
    rc, out, err = run(doppel_bin, guest_elf, tmp_path, "work=fault fault=port")
    assert "fault: port 0x80 write and read -> 0xff survived" in out, out
    assert rc == 0, (rc, out, err)
    warns = [l for l in err.splitlines() if "port 0x80" in l]
    assert len(warns) == 2 and all("no device" in l for l in warns), err

