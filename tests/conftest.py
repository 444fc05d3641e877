"""Fixtures for the whole suite; the helpers themselves live in tests/helpers.py.

- `rootfs` (session): the cached busybox rootfs (built once in tests/.cache/rootfs).
- `ocirun_root` / `runc_root`: a unique `--root` state dir per test; at teardown it must be
  empty (a container left behind is a bug in the test or the runtime), and it is cleaned.
- an autouse session check that, after the last test, no mount of the test rootfs and no
  `ocirun-test*` cgroup is left on the host.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import helpers


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
    yield
    mounts = helpers.leftover_mounts(helpers.CACHE)
    cgroups = helpers.leftover_cgroups()
    for target in reversed(mounts):  # innermost first
        subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)
    for path in cgroups:
        helpers.remove_cgroup_tree(path)
    problems = []
    if mounts:
        problems.append("mounts of the test rootfs left on the host: " + ", ".join(mounts))
    if cgroups:
        problems.append("cgroups left on the host: " + ", ".join(cgroups))
    assert not problems, "; ".join(problems)
