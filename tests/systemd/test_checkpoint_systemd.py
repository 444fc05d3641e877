"""Checkpoint and restore of a container whose cgroup is a systemd scope (--systemd-cgroup),
ocirun beside runc, in the `v2run.sh -s` guest (tools/systemdtests.sh), whose kernel CRIU
works on.  The restored container must be in a scope of the same name again, with its limits,
and `delete` must stop that scope.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest

import helpers
from checkpointing import Runtime, assert_continues, counter_bundle, criu_problem

_why_not = criu_problem() if os.geteuid() == 0 else "needs root"
pytestmark = pytest.mark.skipif(_why_not is not None, reason=f"CRIU: {_why_not}")


@pytest.fixture(params=["ocirun", "runc"])
def runtime(request, ocirun_root, runc_root):
    return Runtime(request.param, ocirun_root if request.param == "ocirun" else runc_root, "--systemd-cgroup")


def _unit_state(unit: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", "-p", "ActiveState,MemoryMax,ControlGroup", unit],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_restored_container_is_in_its_scope_again(runtime, tmp_path):
    cid = f"cr-{runtime.name}-{secrets.token_hex(3)}"
    unit = f"ocirun-test-{cid}.scope"
    bundle = counter_bundle(tmp_path, "b", linux={"cgroupsPath": f"system.slice:ocirun-test:{cid}",
                                                  "resources": {"memory": {"limit": 96 << 20}}})
    images = tmp_path / "images"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        before = first.numbers(2)
        runtime.ok("checkpoint", "--image-path", images, cid)
        assert _unit_state(unit).get("ActiveState") != "active", "the scope outlived the checkpoint"
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, cid)
        try:
            assert_continues(before, second.numbers(2))
            props = _unit_state(unit)
            assert props["ActiveState"] == "active", props
            assert props["MemoryMax"] == str(96 << 20), props
            pid = json.loads(runtime.ok("state", cid).stdout)["pid"]
            with open(f"/proc/{pid}/cgroup") as f:
                assert f.read().strip() == f"0::{props['ControlGroup']}", props
        finally:
            second.close()
        runtime.ok("delete", "--force", cid)
        assert _unit_state(unit).get("ActiveState") != "active", "delete left the scope"
    finally:
        first.close()
        helpers.delete(runtime.root, cid, run=runtime.run, check=False, timeout=180)
