"""test_scale.py — the short scale run of `make check`: DOPPEL_SCALE_N (default 20) VMs of 16 MiB with a
KV service each, started as one fleet on bridges in a namespace; every VM answers, the idle fleet uses
little CPU, all stop cleanly. `make scale` runs the full bench (bench/scale_bench.sh, N=1000)."""
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))

pytestmark = pytest.mark.needs_kvm


def test_fleet_of_small_vms_all_answer(doppel_bin, guest_elf, monkeypatch):
    import benchlib
    import scale_bench

    monkeypatch.setattr(benchlib, "DOPPEL", doppel_bin)
    monkeypatch.setattr(benchlib, "GUEST", guest_elf)
    n = int(os.environ.get("DOPPEL_SCALE_N", "20"))
    tmp = tempfile.mkdtemp(prefix="scaletest")
    net = scale_bench.Net(n)
    try:
        r = scale_bench.run_doppel(n, "16M", tmp, net, 3)
    finally:
        net.down()
    print(r)
    assert r["answered"] == n and r["missing"] == [], r
    assert r["procs"] == n
    assert r["down_ok"], r
    # idle guests block in the VMM: the whole fleet well under one core (polling would be n cores)
    assert r["idle_cpu_pct_of_core"] < 5.0 * max(1, n / 100), r
