"""`exec --cgroup`: the exec'd process runs in an existing sub-cgroup of the container's cgroup
(runc's `[CONTROLLER[,CONTROLLER]:]PATH`), and never outside the container's cgroup."""
from __future__ import annotations

import json
import os

import pytest

import helpers
from helpers import make_bundle, run_ocirun
from ocirun.cgroups import load_manager


@pytest.fixture
def running(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    r = run_ocirun("run", "--detach", "--bundle", str(bundle), "ec", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    state = json.loads((ocirun_root / "ec" / "state.json").read_text())
    manager = load_manager(state["cgroup"])
    made = []
    for leaf in manager.paths.values():
        for sub in ("sub", "sub2"):
            path = os.path.join(leaf, sub)
            os.mkdir(path)
            made.append(path)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset child starts empty: unusable
                if os.path.exists(os.path.join(path, knob)):
                    with open(os.path.join(leaf, knob)) as src, open(os.path.join(path, knob), "w") as dst:
                        dst.write(src.read())
    yield manager
    helpers.delete(ocirun_root, "ec", check=False)  # removes the sub-cgroups with it
    for d in made:
        if os.path.isdir(d):
            os.rmdir(d)


def _cgroups_of(output: str) -> dict[str, str]:
    """/proc/self/cgroup lines → {controllers: path}."""
    out = {}
    for line in output.strip().splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def test_exec_into_a_sub_cgroup_everywhere(running, ocirun_root):
    r = run_ocirun("exec", "--cgroup", "sub", "ec", "cat", "/proc/self/cgroup", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    seen = _cgroups_of(r.stdout)
    assert seen and all(path == "/sub" for path in seen.values()), seen  # relative to the cgroup ns root


def test_exec_into_a_sub_cgroup_of_one_controller(running, ocirun_root):
    r = run_ocirun("exec", "--cgroup", "memory:sub2", "ec", "cat", "/proc/self/cgroup", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    seen = _cgroups_of(r.stdout)
    assert seen["memory"] == "/sub2"
    assert all(path == "/" for ctrl, path in seen.items() if ctrl != "memory"), seen


@pytest.mark.parametrize("value, words", [("nosuch", "does not exist"), ("../..", "inside the container's cgroup"),
                                          ("nosuch:/sub", "no cgroup for controller 'nosuch'")])
def test_bad_sub_cgroup_is_refused(running, ocirun_root, value, words):
    r = run_ocirun("exec", "--cgroup", value, "ec", "true", root=ocirun_root)
    assert r.returncode == 255 and words in r.stderr, r.stderr  # exec failed (runc's status)
    assert "Traceback" not in r.stderr


def test_a_controller_names_its_hierarchy_and_slash_is_the_cgroup_itself(running, ocirun_root):
    """`cpu` is the hierarchy cpu is mounted in (cpu,cpuacct on v1: it was ignored), and `/`
    the container's own cgroup (it was refused; runc takes both)."""
    r = run_ocirun("exec", "--cgroup", "cpu:sub", "--cgroup", "pids:/", "ec", "cat", "/proc/self/cgroup",
                   root=ocirun_root)
    if running.mode == "unified":  # one tree: two paths for it cannot both hold
        assert r.returncode == 255 and "give one path" in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr
    seen = _cgroups_of(r.stdout)
    cpu = [path for ctrl, path in seen.items() if "cpu" in ctrl.split(",")]
    assert cpu == ["/sub"] and all(p == "/" for c, p in seen.items() if "cpu" not in c.split(",")), seen
