"""conftest.py — shared fixtures and markers of the doppel system tests.

Markers:
    @pytest.mark.needs_root   network namespaces (root + iproute2); skipped with the reason when the
                              machine has none (these tests exercise only the namespace topology)
    @pytest.mark.needs_kvm    root + /dev/kvm; FAILS (never skips) when missing: doppel's tests run on
                              KVM hosts as root, so a missing /dev/kvm is a broken set-up, not an option
Fixtures:
    build_dir   Path: $DOPPEL_BUILD or <repo>/build
    doppel_bin  / kv_bin / guest_elf   str paths of build/doppel, build/doppel-kv, build/guest.elf
                (fail with "run make binaries" when missing)
    topology    a netns.Topology that is up (unique prefix per test; torn down always)
    rng         random.Random seeded from $DOPPEL_SEED (replay) or a fresh seed; the seed is printed
                (shown with the test's captured output on failure, and by -rA)
Helpers for tests live in netns.py (namespaces, run_in, popen_in, wait_for, ping) and kvserver.py
(reference server, single requests, load runs).
"""

import os
import random
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
    root_why = netns.netns_unavailable()
    for item in items:
        if root_why and item.get_closest_marker("needs_root") and not item.get_closest_marker("needs_kvm"):
            item.add_marker(pytest.mark.skip(reason=root_why))


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_kvm"):
        why = netns.kvm_unavailable()
        if why:
            pytest.fail(f"set-up: {why} (needs_kvm tests fail rather than skip)", pytrace=False)


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


# ---- randomness ---------------------------------------------------------------------------------------------

@pytest.fixture
def rng(request):
    """random.Random for a test's random choices; DOPPEL_SEED=N replays a run."""
    env = os.environ.get("DOPPEL_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 32)
    print(f"{request.node.nodeid}: seed={seed} (replay with DOPPEL_SEED={seed})", flush=True)
    r = random.Random(seed)
    r.seed_value = seed
    return r


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
