"""Rootless podman with ocirun as its runtime, podman's defaults untouched (the user's systemd
as cgroup manager, its own user namespace with the user's subordinate ids, vfs storage in the
guest), beside runc.

podman runs the runtime as root of podman's own user namespace, with conmon's trimmed
environment: ocirun must find the user's bus and runtime dir by itself and claim the user's
real uid on the bus.  Runs in the `v2run.sh -s` guest (tools/systemdtests.sh) through
`v2run-user`, which gives the user a systemd instance and /etc/subuid ranges.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import helpers

USER = "ocirun-podman"
TIMEOUT = 300
pytestmark = pytest.mark.skipif(
    shutil.which("v2run-user") is None or shutil.which("podman") is None
    or helpers.any_user_launcher_problem() is not None,
    reason=f"needs v2run-user (the v2run.sh -s guest), podman and a system python3 for the user: "
           f"{helpers.any_user_launcher_problem()}")


def podman(*args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(["v2run-user", USER, "podman", *map(str, args)], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, timeout=timeout, cwd="/")
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, p.returncode, out.read().decode(), err.read().decode())


def ok(*args, **kw) -> str:
    r = podman(*args, **kw)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def user_podman():
    import engines  # tests/e2e: the busybox image archive
    uid = int(subprocess.run(["v2run-user", USER], capture_output=True, text=True, check=True).stdout.strip())
    top = Path(tempfile.mkdtemp(prefix="ocirun-test-podman-", dir="/tmp"))
    os.chmod(top, 0o755)
    ocirun = helpers.any_user_launcher(top / "ocirun")
    archive = top / "bbox.tar"
    shutil.copy(engines.image_archive(), archive)
    os.chmod(archive, 0o644)
    ok("load", "-i", archive)
    yield uid, {"ocirun": ocirun, "runc": helpers.RUNC}
    podman("rm", "-a", "-f")
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_rootless_podman_run_exec_limits_stop_rm(user_podman, runtime):
    import engines
    uid, runtimes = user_podman
    if runtimes[runtime] is None:
        pytest.skip("runc is not installed")
    rt = ("--runtime", runtimes[runtime])
    out = ok(*rt, "run", "--rm", engines.IMAGE, "sh", "-c", "id -u; cat /proc/self/uid_map")
    lines = [line.split() for line in out.strip().splitlines()]
    assert lines[0] == ["0"] and lines[1] == ["0", str(uid), "1"] and len(lines) == 3, out  # + the subuid range

    name = f"rl-{runtime}"
    cid = ok(*rt, "run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "50", engines.IMAGE,
             "sleep", "1000").strip()
    try:
        assert ok(*rt, "exec", name, "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max").split() == \
            [str(64 << 20), "50"]
        pid = int(ok(*rt, "inspect", "--format", "{{.State.Pid}}", name).strip())
        cgroup = [line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::")]
        assert cgroup == [f"/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/libpod-{cid}.scope"]
        ok(*rt, "stop", "-t", "1", name)
        ok(*rt, "rm", name)
        units = subprocess.run(["v2run-user", USER, "systemctl", "--user", "list-units", "--all", "--plain",
                                "--no-legend"], capture_output=True, text=True).stdout
        assert cid not in units
    finally:
        podman(*rt, "rm", "-f", name)
