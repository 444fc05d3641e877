"""`ocirun check` in the pure cgroup v2 guest (tools/v2tests.sh): the answers that differ from the
development host's (tests/integration/test_check.py): cgroups pure v2 and every controller ok,
and CRIU, which works on the guest's Debian kernel."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from check_report import check
from ocirun.cgroups import cgroup_mode

pytestmark = [
    pytest.mark.v2,
    pytest.mark.skipif(cgroup_mode() != "unified",
                       reason="needs a pure cgroup v2 host: run tools/v2tests.sh (boots one under qemu)"),
]

TIMEOUT = 300  # the guest is slow, and `criu check` there takes seconds


def test_check_in_a_pure_v2_guest():
    table, doc = check(timeout=TIMEOUT)
    assert doc["canRunContainers"] is True
    assert table["cgroups"] == {"status": "ok", "detail": "pure cgroup v2 (unified) at /sys/fs/cgroup", "fix": None}
    controllers = table["cgroup-controllers"]
    assert controllers["status"] == "ok", controllers
    for ctrl in ("cpu", "cpuset", "memory", "pids", "io", "hugetlb"):
        assert f" {ctrl}" in controllers["detail"], (ctrl, controllers)
    if not os.path.isdir("/run/systemd/system"):
        assert table["systemd"]["status"] == "missing"
    # the guest's kernel (6.1) has mount_setattr, but its / (an overlay) and tmpfs (idmappable
    # from 6.3) refuse: limited, never missing
    assert table["idmapped-mounts"]["status"] in ("ok", "limited"), table["idmapped-mounts"]
    assert "/dev/shm (tmpfs)" in table["idmapped-mounts"]["detail"]
    for name in ("namespaces", "userns", "timens", "seccomp", "seccomp-notify", "clone3", "openat2"):
        assert table[name]["status"] == "ok", (name, table[name])

    criu = shutil.which("criu", path="/usr/sbin:/sbin:/usr/bin")
    if criu is None:
        pytest.skip("criu is not installed")
    looks_good = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=TIMEOUT)
    if looks_good.returncode == 0 and "Looks good." in looks_good.stdout + looks_good.stderr:
        assert table["criu"] == {"status": "ok", "detail": f"{criu} check: Looks good.", "fix": None}
    else:
        assert table["criu"]["status"] != "ok", table["criu"]
