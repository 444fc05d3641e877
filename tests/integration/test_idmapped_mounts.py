"""Idmapped bind mounts (runtime-spec 1.2 `mounts[].uidMappings`/`gidMappings`, `idmap`/`ridmap`),
with real containers.  runc 1.1.5 has no idmapped mounts, so ocirun alone; the control case (the
same bind without idmap) shows what the mapping changes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import helpers

USERNS = {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")],
          "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
          "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
OVERFLOW = "65534:65534"  # how an unmapped owner shows inside a user namespace


@pytest.fixture
def world():
    """A root-owned host directory with a root-owned file, a rootfs the container's root can
    reach (pytest's tmp_path sits in a 0700 directory), and cleanup of the tmpfs a test mounts
    below the directory."""
    tmp_path = Path(tempfile.mkdtemp(prefix="ocirun-test-idmap-", dir="/tmp"))
    os.chmod(tmp_path, 0o755)
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("x")
    rootfs = helpers.private_rootfs(tmp_path)
    yield tmp_path, vol, rootfs
    subprocess.run(["umount", "-R", "-l", str(vol / "sub")], stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(tmp_path, ignore_errors=True)


def run(tmp_path, root, rootfs, name, script, mount, linux=None):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name=name, rootfs=rootfs, linux=linux or {},
                                 mounts=helpers.default_config()["mounts"] + [mount])
    return helpers.run_ocirun("run", "-b", bundle, name, root=root)


def test_container_root_owns_the_hosts_root_files_through_idmap(world, ocirun_root):
    tmp_path, vol, rootfs = world
    script = "stat -c %u:%g /home/f; touch /home/made-inside"
    plain = run(tmp_path, ocirun_root, rootfs, "plain", script,
                {"destination": "/home", "type": "bind", "source": str(vol), "options": ["rbind"]}, USERNS)
    assert plain.stdout.split()[0] == OVERFLOW and "denied" in plain.stderr  # not its to write
    mapped = run(tmp_path, ocirun_root, rootfs, "mapped", script,
                 {"destination": "/home", "type": "bind", "source": str(vol), "options": ["rbind", "idmap"]}, USERNS)
    assert (mapped.returncode, mapped.stdout.split()) == (0, ["0:0"]), mapped.stderr
    st = os.stat(vol / "made-inside")  # written as the container's root: the host's root on disk
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_a_mounts_own_mapping_without_a_user_namespace(world, ocirun_root):
    tmp_path, vol, rootfs = world
    m = {"destination": "/home", "type": "bind", "source": str(vol), "options": ["rbind"],
         "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
         "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 1}]}
    r = run(tmp_path, ocirun_root, rootfs, "own", "stat -c %u:%g /home/f", m)
    assert (r.returncode, r.stdout.split()) == (0, ["1000:2000"]), r.stderr


def test_ridmap_maps_the_mounts_below_and_idmap_only_the_top(world, ocirun_root):
    tmp_path, vol, rootfs = world
    sub = vol / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ocirun-test-idmap", str(sub)], check=True)
    (sub / "g").write_text("y")
    script = "stat -c %u:%g /home/f /home/sub/g"
    top_only = run(tmp_path, ocirun_root, rootfs, "top", script,
                   {"destination": "/home", "type": "bind", "source": str(vol), "options": ["rbind", "idmap"]}, USERNS)
    assert (top_only.returncode, top_only.stdout.split()) == (0, ["0:0", OVERFLOW]), top_only.stderr
    every = run(tmp_path, ocirun_root, rootfs, "every", script,
                {"destination": "/home", "type": "bind", "source": str(vol), "options": ["rbind", "ridmap"]}, USERNS)
    assert (every.returncode, every.stdout.split()) == (0, ["0:0", "0:0"]), every.stderr


@pytest.mark.parametrize("mount,linux,needle", [
    ({"destination": "/home", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}, None, "bind mounts only"),
    ({"destination": "/home", "type": "bind", "source": "/tmp", "options": ["rbind", "idmap"]}, None, "uidMappings"),
    ({"destination": "/home", "type": "bind", "source": "/tmp", "options": ["rbind"],
      "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, None, "needs both"),
    ({"destination": "/home", "type": "bind", "source": "/tmp", "options": ["rbind"],
      "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
      "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
     {"namespaces": [{"type": "mount", "path": "/proc/1/ns/mnt"}, {"type": "uts"}]}, "joined by path"),
])
def test_idmap_errors_are_one_line_naming_the_mount_before_anything_runs(world, ocirun_root, mount, linux, needle):
    tmp_path, _vol, rootfs = world
    r = run(tmp_path, ocirun_root, rootfs, "bad", "true", mount, linux)
    msg = helpers.one_line_error(r, "mounts[")
    assert needle in msg


def test_the_runtime_refuses_an_idmap_the_config_does_not_ask_for(world):
    """The init asks the runtime for mount sources; the config, not the request, says which
    mount is idmapped (else a container could have a plain bind handed to its root)."""
    from ocirun.config import parse_config
    from ocirun.errors import OCIError
    from ocirun.process import parent
    from ocirun.process.context import LaunchContext
    _tmp, vol, rootfs = world
    doc = helpers.default_config(["true"], rootfs=rootfs)
    doc["linux"].update(USERNS)
    doc["mounts"].append({"destination": "/home", "type": "bind", "source": str(vol), "options": ["rbind"]})
    cfg = parse_config(doc, str(_tmp))
    ctx = LaunchContext(cfg=cfg, id="x", state_dir=str(_tmp))
    with pytest.raises(OCIError, match="internal error"):
        parent._open_mount_source(ctx, os.getpid(), len(doc["mounts"]) - 1, idmap=True)
