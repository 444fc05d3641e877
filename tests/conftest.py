"""Fixtures for the whole suite; the helpers themselves live in tests/helpers.py.

- the root check, once for the suite: outside tests/unit every test needs root (real
  containers, mounts, cgroups) and is skipped without it, unless marked `rootless`.
- `rootfs` (session): the cached busybox rootfs (built once in tests/.cache/rootfs).
- `ocirun_root` / `runc_root`: a unique `--root` state dir per test; at teardown it must be
  empty (a container left behind is a bug in the test or the runtime), and it is cleaned.
- an autouse session check that, after the last test, no mount of the test rootfs and no
  `ocirun-test*` cgroup made during this run is left on the host, and that no test wrote into
  the shared rootfs (one that changed is rebuilt before the next run).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers

TESTS = Path(__file__).resolve().parent
# Folders whose tests all run without root; elsewhere a test says so with @pytest.mark.rootless.
ROOTLESS_DIRS = {"unit"}


def pytest_configure(config):
    config.addinivalue_line("markers", "rootless: runs without root (outside tests/unit, the rest "
                                       "of the suite needs root and is skipped without it)")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real containers, mounts and cgroups)")
    for item in items:
        if not _runs_rootless(item):
            item.add_marker(skip)


def _runs_rootless(item) -> bool:
    try:
        top = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
    except ValueError:  # a test file outside tests/ (named on the command line): no rule of ours
        return True
    return top in ROOTLESS_DIRS or item.get_closest_marker("rootless") is not None


@pytest.fixture(scope="session")
def rootfs():
    return helpers.shared_rootfs()


@pytest.fixture
def ocirun_root():
    root = helpers.new_state_root()
    yield root
    _require_empty_state_root(root, helpers.run_ocirun)


@pytest.fixture
def runc_root():
    if helpers.RUNC is None:
        pytest.skip("runc is not installed")
    root = helpers.new_state_root()
    yield root
    _require_empty_state_root(root, helpers.run_runc)


def _require_empty_state_root(root, run) -> None:
    left = sorted(os.listdir(root)) if root.exists() else []
    for container_id in left:
        # Best effort: kill and remove what the test left, so one failure does not leak
        # processes and cgroups into the rest of the run.
        try:
            run("delete", "--force", container_id, root=root, timeout=20)
        except (subprocess.TimeoutExpired, OSError):
            pass
    shutil.rmtree(root, ignore_errors=True)
    if left:
        pytest.fail(f"containers left in {root}: {', '.join(left)}")


@pytest.fixture(scope="session", autouse=True)
def _no_leaks_after_suite():
    # Only what appeared during this run is ours: another test run on this host (or a person
    # trying something) may hold ocirun-test* cgroups of its own, which we must not remove.
    before = set(helpers.leftover_cgroups())
    helpers.shared_rootfs(check=True)
    yield
    mounts = helpers.leftover_mounts(helpers.CACHE)
    cgroups = [c for c in helpers.leftover_cgroups() if c not in before and not helpers.another_runs_cgroup(c)]
    for target in reversed(mounts):  # innermost first
        subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)
    for path in cgroups:
        helpers.remove_cgroup_tree(path)
    problems = []
    if mounts:
        problems.append("mounts of the test rootfs left on the host: " + ", ".join(mounts))
    if cgroups:
        problems.append("cgroups left on the host: " + ", ".join(cgroups))
    written = helpers.rootfs_changes()
    if written:
        problems.append("the shared read-only rootfs was written to (use a private rootfs): "
                        + ", ".join(written[:10]))
    assert not problems, "; ".join(problems)
