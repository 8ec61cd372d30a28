"""conftest.py — shared fixtures and markers of the doppel system tests.

Markers (skips with the reason when the machine cannot run the test):
    @pytest.mark.needs_root   network namespaces (root + iproute2)
    @pytest.mark.needs_kvm    root + /dev/kvm
Fixtures:
    build_dir   Path: $DOPPEL_BUILD or <repo>/build
    doppel_bin  / kv_bin / guest_elf   str paths of build/doppel, build/doppel-kv, build/guest.elf
                (fail with "run make binaries" when missing)
    topology    a netns.Topology that is up (unique prefix per test; torn down always)
Helpers for tests live in netns.py (namespaces, run_in, popen_in, wait_for, ping) and kvserver.py
(reference server, single requests, load runs).
"""

import os
from pathlib import Path

import pytest

import netns
from vmproc import VM

REPO = Path(__file__).resolve().parents[2]


# ---- markers ----------------------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "needs_root: needs root and network namespaces")
    config.addinivalue_line("markers", "needs_kvm: needs root and /dev/kvm")


def pytest_collection_modifyitems(config, items):
    root_why, kvm_why = netns.netns_unavailable(), netns.kvm_unavailable()
    for item in items:
        if kvm_why and item.get_closest_marker("needs_kvm"):
            item.add_marker(pytest.mark.skip(reason=kvm_why))
        elif root_why and item.get_closest_marker("needs_root"):
            item.add_marker(pytest.mark.skip(reason=root_why))


# ---- build artefacts ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def build_dir():
    return Path(os.environ.get("DOPPEL_BUILD") or REPO / "build").resolve()


def _artefact(build_dir, name):
    p = build_dir / name
    if not p.exists():
        pytest.fail(f"{p} missing: run `make binaries` (or set DOPPEL_BUILD)", pytrace=False)
    return str(p)


@pytest.fixture(scope="session")
def doppel_bin(build_dir):
    return _artefact(build_dir, "doppel")


@pytest.fixture(scope="session")
def kv_bin(build_dir):
    return _artefact(build_dir, "doppel-kv")


@pytest.fixture(scope="session")
def guest_elf(build_dir):
    return _artefact(build_dir, "guest.elf")


# ---- network ----------------------------------------------------------------------------------------------

@pytest.fixture
def topology():
    """client/hostA/hostB/lan namespaces, fresh for each test, torn down even on failure."""
    why = netns.netns_unavailable()
    if why:
        pytest.skip(why)
    with netns.Topology() as t:
        yield t


@pytest.fixture
def vm(doppel_bin, guest_elf, tmp_path):
    """Factory of `doppel run` processes (tests/system/vmproc.VM) booting the test guest by default;
    every VM made is killed at teardown."""
    made = []

    def make(**kw):
        kw.setdefault("kernel", guest_elf)
        v = VM(doppel_bin, str(tmp_path), **kw)
        made.append(v)
        return v
    yield make
    for v in made:
        v.close()
