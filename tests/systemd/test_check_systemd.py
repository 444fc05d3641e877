"""`ocirun check` where systemd is PID 1 on pure cgroup v2 (the `v2run.sh -s` guest,
tools/systemdtests.sh): systemd ok and its bus answering, as root (the system instance) and as
a user with a systemd --user (their session bus, the controllers it delegates)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import helpers
from check_report import check, parse_table

USER = "ocirun-check"
TIMEOUT = 300


def test_systemd_and_its_bus_as_root():
    table, doc = check(timeout=TIMEOUT)
    assert doc["canRunContainers"] is True and doc["rootless"] is False
    assert table["cgroups"]["status"] == "ok"
    assert table["systemd"]["status"] == "ok", table["systemd"]
    assert "--systemd-cgroup makes each container a transient scope of systemd" in table["systemd"]["detail"]
    assert table["dbus"]["status"] == "ok", table["dbus"]
    assert re.fullmatch(r"the system bus \(unix:path=/run/dbus/system_bus_socket\) is reachable: systemd \d+\S* answers",
                        table["dbus"]["detail"]), table["dbus"]


@pytest.fixture
def user_launcher():
    if shutil.which("v2run-user") is None or helpers.any_user_launcher_problem() is not None:
        pytest.skip("needs v2run-user (the v2run.sh -s guest) and a system python3 for the user: "
                    f"{helpers.any_user_launcher_problem()}")
    uid = int(subprocess.run(["v2run-user", USER], capture_output=True, text=True, check=True,
                             timeout=TIMEOUT).stdout.strip())
    top = Path(tempfile.mkdtemp(prefix="ocirun-test-check-", dir="/tmp"))
    os.chmod(top, 0o755)
    yield uid, helpers.any_user_launcher(top / "ocirun")
    shutil.rmtree(top, ignore_errors=True)


def as_user(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(["v2run-user", USER, *map(str, argv)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT, cwd="/")


def test_as_a_user_with_systemd_user(user_launcher):
    uid, launcher = user_launcher
    r = as_user(launcher, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    table, verdict = parse_table(r.stdout)
    assert verdict.startswith("ocirun can run containers here as a rootless caller"), verdict
    doc = json.loads(as_user(launcher, "check", "--format", "json").stdout)
    assert doc["rootless"] is True and doc["uid"] == uid
    assert table["systemd"]["status"] == "ok"
    assert "transient scope of systemd --user of " + USER in table["systemd"]["detail"]
    assert table["dbus"]["status"] == "ok", table["dbus"]
    assert f"the user bus (unix:path=/run/user/{uid}/bus) is reachable" in table["dbus"]["detail"]
    delegated = table["cgroup-controllers"]
    assert delegated["status"] == "ok", delegated
    service = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service"
    assert delegated["detail"].startswith("with --systemd-cgroup: systemd --user delegates "
                                          + Path(f"{service}/cgroup.controllers").read_text().strip())
    assert table["subids"]["status"] == "ok", table["subids"]  # v2run-user gives the user ranges
    assert table["userns"]["status"] == "ok"
