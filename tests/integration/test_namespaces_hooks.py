"""Hooks through a whole lifecycle (order, moment, namespace, state on stdin), user namespaces with
id maps, and a time namespace with offsets — each seen from the host and from inside.
"""
from __future__ import annotations

import json
import os

import helpers
from helpers import make_bundle, ok, read_config, run_ocirun, write_config


def _hook(kind: str, logfile: str) -> dict:
    # Each hook appends "<kind> <its view of /proc/self/ns/mnt> <state JSON from stdin>".
    script = f'read -r state; echo "{kind} $(readlink /proc/self/ns/mnt) $state" >> {logfile}'
    return {"path": "/bin/sh", "args": ["sh", "-c", script]}


def test_hooks_run_in_order_at_the_right_moment_with_state(ocirun_root, tmp_path):
    logdir = tmp_path / "hooklog"
    logdir.mkdir()
    host_log = str(logdir / "log")
    hooks = {k: [_hook(k, host_log)] for k in ("prestart", "createRuntime", "createContainer",
                                                "poststart", "poststop")}
    # startContainer runs inside the container after pivot_root: it sees the log dir at /hl.
    hooks["startContainer"] = [_hook("startContainer", "/hl/log")]
    # A private rootfs: the runtime makes the /hl mount point in it.
    bundle = make_bundle(tmp_path, ["true"], hooks=hooks, rootfs=helpers.private_rootfs(tmp_path))
    cfg = read_config(bundle)
    cfg["mounts"].append({"destination": "/hl", "type": "bind", "source": str(logdir), "options": ["rbind"]})
    write_config(bundle, cfg)

    ok("create", "--bundle", str(bundle), "h1", root=ocirun_root)
    after_create = [line.split(" ", 2) for line in open(host_log).read().splitlines()]
    assert [k for k, _, _ in after_create] == ["prestart", "createRuntime", "createContainer"]
    ok("start", "h1", root=ocirun_root)
    ok("delete", "--force", "h1", root=ocirun_root)  # waits for the container if still exiting
    lines = [line.split(" ", 2) for line in open(host_log).read().splitlines()]
    kinds = [k for k, _, _ in lines]
    assert kinds == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                     "poststop"]
    states = {k: json.loads(s) for k, _, s in lines}
    init_pid = states["prestart"]["pid"]
    assert init_pid > 0 and all(states[k]["pid"] == init_pid for k in ("createRuntime", "createContainer"))
    assert all(s["id"] == "h1" and s["bundle"] == str(bundle) for s in states.values())
    assert states["prestart"]["status"] == "creating"
    assert states["poststop"]["status"] == "stopped"
    # prestart/createRuntime/poststart/poststop run in the runtime's mount namespace,
    # createContainer/startContainer in the container's.
    host_mnt = os.readlink("/proc/self/ns/mnt")
    ns = {k: m for k, m, _ in lines}
    assert ns["prestart"] == ns["createRuntime"] == ns["poststart"] == ns["poststop"] == host_mnt
    assert ns["createContainer"] != host_mnt and ns["startContainer"] == ns["createContainer"]


def test_failing_prestart_hook_fails_create_and_leaves_nothing(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], hooks={"prestart": [
        {"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}]})
    r = run_ocirun("create", "--bundle", str(bundle), "h2", root=ocirun_root)
    assert r.returncode == 1
    assert "prestart" in r.stderr and "exit status 3" in r.stderr and "nope" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (ocirun_root / "h2").exists()


def test_user_namespace_maps_ids(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map; "
                                                 "stat -c %u /proc/1"])
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    cfg["linux"].pop("resources", None)  # devices cgroup rules are not ours to test here
    write_config(bundle, cfg)
    r = run_ocirun("run", "--bundle", str(bundle), "u1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[0] == "0"                                   # root inside …
    assert out[1:4] == ["0", "200000", "65536"]            # … mapped to 200000 outside
    assert out[4:7] == ["0", "200000", "65536"]


def test_a_namespace_that_cannot_be_joined_names_the_field(ocirun_root, tmp_path):
    """setns(2) refuses our own user namespace (EINVAL): the error once named neither the field
    nor the path."""
    bundle = make_bundle(tmp_path, ["true"])
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "user", "path": "/proc/self/ns/user"})
    write_config(bundle, cfg)
    i = len(cfg["linux"]["namespaces"]) - 1
    r = run_ocirun("run", "--bundle", str(bundle), "uj", root=ocirun_root)
    assert r.returncode == 1
    assert r.stderr.strip() == f"linux.namespaces[{i}].path: join user namespace /proc/self/ns/user: invalid argument", \
        r.stderr
    assert not (ocirun_root / "uj").exists()


def test_time_namespace_offsets(ocirun_root, tmp_path):
    offset = 1000000  # seconds added to CLOCK_BOOTTIME inside
    bundle = make_bundle(tmp_path, ["cat", "/proc/uptime"])
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"boottime": {"secs": offset, "nanosecs": 0}}
    write_config(bundle, cfg)
    host_uptime = float(open("/proc/uptime").read().split()[0])
    r = run_ocirun("run", "--bundle", str(bundle), "t1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    inside = float(r.stdout.split()[0])
    assert offset <= inside - host_uptime < offset + 60
