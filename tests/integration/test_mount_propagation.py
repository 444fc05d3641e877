"""Mount propagation as Kubernetes volumes ask for it, ocirun beside runc, with real mounts.

containerd's CRI turns a volume's `mountPropagation` into a bind mount option and
`linux.rootfsPropagation`:

- Bidirectional:  options rbind,rshared + rootfsPropagation rshared — mounts go both ways;
- HostToContainer: options rbind,rslave + rootfsPropagation rslave — host mounts come in,
  the container's stay inside;
- None (private): options rbind,rprivate — nothing crosses.

Each test makes its own shared tmpfs as the volume on the host, starts a container with
CAP_SYS_ADMIN, then mounts on both sides *after* the container started and looks from the other.
"""
from __future__ import annotations

import subprocess

import pytest

import helpers

MODES = {
    # mode: (bind propagation option, rootfsPropagation, host->container, container->host)
    "Bidirectional": ("rshared", "rshared", True, True),
    "HostToContainer": ("rslave", "rslave", True, False),
    "None": ("rprivate", "", False, False),
}
RUNNERS = {"ocirun": helpers.run_ocirun, "runc": helpers.run_runc}


@pytest.fixture
def volume(tmp_path):
    """A host directory that is a shared mount of its own (what the kubelet makes of a volume
    with propagation), unmounted with everything below it afterwards."""
    vol = tmp_path / "volume"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ocirun-test-vol", str(vol)], check=True)
    subprocess.run(["mount", "--make-shared", str(vol)], check=True)
    yield vol
    subprocess.run(["umount", "-R", "-l", str(vol)], check=False)


def is_mountpoint(path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_volume_propagation(runtime, mode, volume, tmp_path, ocirun_root, runc_root):
    bind_prop, rootfs_prop, inward, outward = MODES[mode]
    run = RUNNERS[runtime]
    root = ocirun_root if runtime == "ocirun" else runc_root
    caps = [*helpers.DEFAULT_CAPS, "CAP_SYS_ADMIN"]
    script = ("mount -t tmpfs -o size=1m from-container /vol/c2h && touch /vol/c2h/made-inside "
              "&& touch /tmp/ready && exec sleep 1000")
    linux = {"rootfsPropagation": rootfs_prop} if rootfs_prop else {}
    (volume / "c2h").mkdir()
    (volume / "h2c").mkdir()
    bundle = helpers.make_bundle(
        tmp_path, ["sh", "-c", script], rootfs=helpers.private_rootfs(tmp_path), linux=linux,
        process={"capabilities": {"bounding": caps, "effective": caps, "permitted": caps}},
        mounts=helpers.default_config()["mounts"] + [
            {"destination": "/vol", "type": "bind", "source": str(volume), "options": ["rbind", bind_prop]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}])
    cid = f"prop-{mode.lower()}"
    r = run("run", "-d", "-b", bundle, cid, root=root)
    assert r.returncode == 0, r.stderr
    try:
        helpers.wait_until(lambda: run("exec", cid, "test", "-e", "/tmp/ready", root=root).returncode == 0,
                           10, "the container's own mount")
        # container -> host
        assert is_mountpoint(volume / "c2h") is outward
        assert (volume / "c2h" / "made-inside").exists() is outward
        # host -> container: a mount made on the host after the container started
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "from-host", str(volume / "h2c")], check=True)
        (volume / "h2c" / "made-outside").write_text("hi")
        seen = run("exec", cid, "cat", "/vol/h2c/made-outside", root=root)
        assert (seen.returncode == 0 and seen.stdout == "hi") is inward, (seen.stdout, seen.stderr)
    finally:
        helpers.delete(root, cid, run=run, check=False)
    assert not is_mountpoint(volume / "c2h") or outward  # a private copy died with the container
