"""The systemd subset: runs where systemd is PID 1 on a pure cgroup v2 hierarchy (in CI: the
`v2run.sh -s` guest that tools/systemdtests.sh boots); everywhere else each test skips, saying so.
The engine scenarios reuse tests/e2e's engine drivers."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))

from ocirun.cgroups import cgroup_mode  # noqa: E402

SYSTEMD_HOST = os.path.isdir("/run/systemd/system") and cgroup_mode() == "unified"


def pytest_collection_modifyitems(items):
    skip = pytest.mark.skip(reason="needs systemd as PID 1 on pure cgroup v2: run tools/systemdtests.sh "
                                   "(boots such a guest under qemu)")
    for item in items:
        if "/systemd/" in str(item.fspath):
            item.add_marker(pytest.mark.systemd)
            if not SYSTEMD_HOST:
                item.add_marker(skip)


@pytest.fixture(params=["runc", "ocirun"])
def runtime(request):
    """"runc" or "ocirun" (tests/e2e's fixture): each engine scenario runs on both."""
    import engines
    engines.runtime_path(request.param)  # skips if this runtime is missing
    return request.param
