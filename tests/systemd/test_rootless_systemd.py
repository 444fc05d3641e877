"""Rootless with the systemd driver: an ordinary user's container as a scope of their own
`systemd --user`, with limits in its delegated cgroup; ocirun beside runc.

Runs in the `v2run.sh -s` guest (tools/systemdtests.sh), whose `v2run-user NAME CMD` runs CMD
as NAME with a systemd user instance, a session bus and cpu/memory/pids delegated to it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import helpers

USER = "ocirun-rl"
TIMEOUT = 120
pytestmark = pytest.mark.skipif(shutil.which("v2run-user") is None or helpers.any_user_launcher_problem() is not None,
                                reason="needs v2run-user (the v2run.sh -s guest) and a system python3 for the user: "
                                       f"{helpers.any_user_launcher_problem()}")


def as_user(*argv, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(["v2run-user", USER, *map(str, argv)], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                           timeout=timeout, cwd="/")
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, p.returncode, out.read().decode(), err.read().decode())


@pytest.fixture
def stage():
    uid = int(subprocess.run(["v2run-user", USER], capture_output=True, text=True, check=True).stdout.strip())
    top = Path(tempfile.mkdtemp(prefix="ocirun-test-rl-", dir="/tmp"))
    os.chmod(top, 0o755)
    launcher = helpers.any_user_launcher(top / "ocirun")
    yield uid, top, {"ocirun": launcher, "runc": helpers.RUNC}
    shutil.rmtree(top, ignore_errors=True)


def bundle_for(top: Path, name: str, launcher: Path, cgroups_path: str) -> Path:
    d = top / name
    d.mkdir()
    os.chmod(d, 0o777)  # the user writes config.json here (mkdir's mode is cut by the umask)
    r = as_user(launcher, "spec", "--rootless", "-b", d)
    assert r.returncode == 0, r.stderr
    doc = json.loads((d / "config.json").read_text())
    doc["root"] = {"path": str(helpers.shared_rootfs()), "readonly": True}
    doc["process"].update(terminal=False, args=["sleep", "1000"])
    doc["linux"]["cgroupsPath"] = cgroups_path
    doc["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 40}}
    (d / "config.json").write_text(json.dumps(doc))
    os.chmod(d / "config.json", 0o644)
    return d


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_a_users_container_is_a_scope_of_their_systemd_with_its_limits(stage, runtime):
    uid, top, binaries = stage
    binary = binaries[runtime]
    if binary is None:
        pytest.skip("runc is not installed")
    cid = f"rl-{runtime}-{secrets.token_hex(3)}"
    unit = f"ocirun-test-{cid}.scope"
    bundle = bundle_for(top, cid, binaries["ocirun"], f"user.slice:ocirun-test:{cid}")
    r = as_user(binary, "--systemd-cgroup", "run", "-d", "-b", bundle, cid)
    assert r.returncode == 0, r.stderr
    try:
        pid = json.loads(as_user(binary, "state", cid).stdout)["pid"]
        scope = f"/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/{unit}"
        cgroup = [line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::")]
        assert cgroup == [scope]
        assert Path(f"/sys/fs/cgroup{scope}/memory.max").read_text().strip() == str(64 << 20)
        assert Path(f"/sys/fs/cgroup{scope}/pids.max").read_text().strip() == "40"
        show = as_user("systemctl", "--user", "show", "-p", "MemoryMax,TasksMax,Delegate,ActiveState", unit).stdout
        props = dict(line.split("=", 1) for line in show.split())
        assert props == {"MemoryMax": str(64 << 20), "TasksMax": "40", "Delegate": "yes", "ActiveState": "active"}
        r = as_user(binary, "exec", cid, "id", "-u")
        assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
        # pause/resume through the delegated cgroup's freezer
        assert as_user(binary, "pause", cid).returncode == 0
        assert json.loads(as_user(binary, "state", cid).stdout)["status"] == "paused"
        assert "frozen 1" in Path(f"/sys/fs/cgroup{scope}/cgroup.events").read_text()
        assert as_user(binary, "resume", cid).returncode == 0
        assert json.loads(as_user(binary, "state", cid).stdout)["status"] == "running"
        r = as_user(binary, "delete", "--force", cid)
        assert r.returncode == 0, r.stderr
        left = as_user("systemctl", "--user", "list-units", "--all", "--no-legend", "--plain").stdout
        assert cid not in left
        assert not Path(f"/sys/fs/cgroup{scope}").exists()
    finally:
        as_user(binary, "delete", "--force", cid)


def test_several_ranges_go_through_newuidmap_and_newgidmap(stage):
    """The user's own id as root and 65536 subordinate ids after it (from /etc/subuid and
    /etc/subgid, which v2run-user fills): the kernel takes that only from the setuid helpers."""
    uid, top, binaries = stage
    sub = _subordinate_start(USER)
    cid = f"rl-ranges-{secrets.token_hex(3)}"
    d = bundle_for(top, cid, binaries["ocirun"], "")
    doc = json.loads((d / "config.json").read_text())
    doc["linux"].pop("resources")
    doc["linux"].pop("cgroupsPath")
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1},
                                   {"containerID": 1, "hostID": sub, "size": 65536}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1},
                                   {"containerID": 1, "hostID": sub, "size": 65536}]
    doc["process"]["args"] = ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; chown 1000:1000 /tmp/f; "
                                          "stat -c %u:%g /tmp/f"]
    doc["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]})
    doc["process"]["args"][2] = "touch /tmp/f; " + doc["process"]["args"][2]
    caps = doc["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        caps[kind] = caps[kind] + ["CAP_CHOWN"]  # to hand a file to a subordinate id
    (d / "config.json").write_text(json.dumps(doc))
    for runtime, binary in binaries.items():
        if binary is None:
            continue
        r = as_user(binary, "run", "-b", d, f"{cid}-{runtime}")
        assert r.returncode == 0, (runtime, r.stderr)
        lines = [line.split() for line in r.stdout.strip().splitlines()]
        assert lines[:4] == [["0", str(uid), "1"], ["1", str(sub), "65536"]] * 2, (runtime, r.stdout)
        assert lines[4] == ["1000:1000"], (runtime, r.stdout)


def _subordinate_start(user: str) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _count = line.split(":")
        if name == user:
            return int(start)
    raise AssertionError(f"{user} has no /etc/subuid range")
