"""`ocirun spec` writes what `runc spec` writes where engines and people can tell (issue 13, item 12),
and a container made from it runs on this host as it does with runc.
"""
from __future__ import annotations

import json
import secrets

import pytest

import helpers
from helpers import run_ocirun, run_runc


def spec_of(run, bundle) -> dict:
    bundle.mkdir()
    r = run("spec", "--bundle", bundle)
    assert r.returncode == 0, r.stderr
    return json.loads((bundle / "config.json").read_text())


def test_spec_mounts_are_runcs(tmp_path):
    if helpers.RUNC is None:
        pytest.skip("runc is not installed")
    ours, theirs = spec_of(run_ocirun, tmp_path / "ocirun"), spec_of(run_runc, tmp_path / "runc")
    assert ours["mounts"] == theirs["mounts"]
    assert {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]} in ours["mounts"]
    # The suite's own default config is `runc spec`'s but for what the tests need (no cgroupfs
    # mount by default: most tests do not look at it, and it costs a mount per hierarchy).
    test_mounts = helpers.default_config()["mounts"]
    assert test_mounts == [m for m in ours["mounts"] if m["destination"] != "/sys/fs/cgroup"]


# mount point, options, fs type of each mount under /sys/fs/cgroup (the type follows the "-").
SHOW_CGROUPFS = ("awk '$5 ~ \"^/sys/fs/cgroup\" {i = 7; while ($i != \"-\") i++; print $5, $6, $(i + 1)}' "
                 "/proc/self/mountinfo; "
                 "cat /sys/fs/cgroup/pids/pids.max; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
                 "mkdir /sys/fs/cgroup/pids/sub 2>/dev/null && echo writable || echo read-only")


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_container_from_spec_sees_its_cgroupfs(runtime, ocirun_root, runc_root, tmp_path):
    """The spec's config (cgroup namespace, /sys/fs/cgroup of type cgroup) on this hybrid host:
    one read-only cgroup v1 mount per hierarchy under a tmpfs, showing the container's own
    cgroup as the root (its limits are there)."""
    run, root = (run_ocirun, ocirun_root) if runtime == "ocirun" else (run_runc, runc_root)
    if runtime == "runc" and helpers.RUNC is None:
        pytest.skip("runc is not installed")
    bundle = tmp_path / "bundle"
    config = spec_of(run, bundle)
    config["root"]["path"] = str(helpers.shared_rootfs())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", SHOW_CGROUPFS]
    # Named for conftest's leak check; limits to see from inside.
    config["linux"]["cgroupsPath"] = f"/{helpers.TEST_PREFIX}-spec-{secrets.token_hex(4)}"
    config["linux"]["resources"].update({"pids": {"limit": 77}, "memory": {"limit": 64 << 20}})
    (bundle / "config.json").write_text(json.dumps(config))
    r = run("run", "-b", bundle, "spec1", root=root, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    mounts = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.startswith("/sys/fs/cgroup")}
    assert mounts["/sys/fs/cgroup"][1] == "tmpfs", mounts  # runc leaves this tmpfs read-write, we do not
    for ctrl in ("pids", "memory", "cpu,cpuacct" if "/sys/fs/cgroup/cpu,cpuacct" in mounts else "cpu"):
        opts, fstype = mounts[f"/sys/fs/cgroup/{ctrl}"]
        assert fstype == "cgroup" and opts.split(",")[0] == "ro", (ctrl, mounts)
    assert lines[-3:] == ["77", str(64 << 20), "read-only"], r.stdout
