"""The order in which the init builds the container's filesystem (process/init.py
build_container_fs, rootfs/), recorded through the kernel seam (ocirun.kernel) by a double:
no root, no real mount.  The rootfs is a directory of the test's own; the double resolves
every path the code hands the kernel (/proc/self/fd/N included) to the real path it names.

Each assertion is an order the container's safety depends on; the real-container tests
(tests/integration, tests/security) check the end result, these the way there.
"""
from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

import kernel_double
from ocirun import linux
from ocirun.config import parse_config
from ocirun.process import become, init


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    for d in ("proc/sys", "proc/acpi", "sys/firmware", "dev", "etc"):
        (root / d).mkdir(parents=True)
    (tmp_path / "data").mkdir()
    return root


@pytest.fixture
def stdio_not_dev_null():
    """finalize_rootfs reopens stdio that is the host's /dev/null on the container's, a device
    node the double does not make: give the test other stdio, and put it back afterwards."""
    null = os.stat("/dev/null").st_rdev
    saved = {}
    for fd in (0, 1, 2):
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == null:
            saved[fd] = os.dup(fd)
            r, w = os.pipe()
            os.dup2(r if fd == 0 else w, fd)
            os.close(r)
            os.close(w)
    yield
    for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)


def config(tmp_path, **overrides):
    doc = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "box",
        "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]},
            {"destination": "/data", "type": "bind", "source": str(tmp_path / "data"), "options": ["rbind", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("mount", "pid", "uts", "ipc", "network")],
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
            "sysctl": {"net.ipv4.ip_forward": "1"},
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"],
        },
    }
    doc.update(overrides)
    return parse_config(doc, str(tmp_path))


def build(monkeypatch, cfg, no_pivot=False):
    """init.build_container_fs under the double; returns the double."""
    k = kernel_double.install(monkeypatch)
    # Sealing imports is for the real init: here it would seal pytest's own process.
    monkeypatch.setattr(become, "seal_imports", lambda: k.calls.append(("seal_imports", ())))
    ctx = SimpleNamespace(cfg=cfg, in_userns=False, no_pivot=no_pivot, console_fd=-1)
    assert init.build_container_fs(ctx, None) is None  # no hooks: no state
    return k


def under(root, *names) -> callable:
    """A `match` for mount-like calls whose target is one of `names` inside `root`."""
    targets = {os.path.join(str(root), n.lstrip("/")).rstrip("/") for n in names}
    return lambda args: args[1] in targets


def switch(k) -> int:
    """Where the init's root became the container's."""
    found = k.indexes("pivot_root") + k.indexes("chroot")
    assert len(found) == 1, k.names()
    return found[0]


def test_host_root_made_rslave_before_any_other_mount(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    k = build(monkeypatch, config(tmp_path))
    first = k.calls[k.first("mount")]
    assert first == ("mount", (None, "/", None, linux.MS_SLAVE | linux.MS_REC, None))


def test_every_container_mount_and_node_before_pivot_root(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    k = build(monkeypatch, config(tmp_path))
    pivot = switch(k)
    assert k.calls[pivot] == ("pivot_root", (str(rootfs), str(rootfs)))
    bind = k.first("mount", lambda a: a[:3] == (str(rootfs), str(rootfs), "bind"))
    mounts = k.indexes("mount", under(rootfs, "/proc", "/dev", "/dev/pts", "/sys", "/data"))
    assert len(mounts) == 6  # five mounts, the ro remount of /data
    assert bind < min(mounts)  # the rootfs bound onto itself first: every mount is under it
    nodes = k.indexes("mknod") + k.indexes("symlink")
    assert len(k.indexes("mknod")) == 7  # the six defaults and /dev/fuse
    assert max(mounts + nodes) < pivot
    # The nodes go into the container's /dev tmpfs, not into the image's /dev.
    assert k.first("mount", under(rootfs, "/dev")) < min(nodes)


def test_old_root_made_rslave_before_it_is_detached(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    # The unmount of the old root must not propagate to the host's mounts.
    k = build(monkeypatch, config(tmp_path))
    pivot = switch(k)
    slaves = k.indexes("mount", lambda a: a[1] == "/" and a[3] == linux.MS_SLAVE | linux.MS_REC)
    slave = min(i for i in slaves if i > pivot)  # "." after the pivot: the old root, on top of "/"
    assert pivot < slave < k.first("umount2", lambda a: a == ("/", linux.MNT_DETACH))


def test_masked_and_readonly_paths_after_the_sysctls_and_the_pivot(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    k = build(monkeypatch, config(tmp_path))
    pivot = switch(k)
    sysctl = k.first("write_sysctl")
    assert k.calls[sysctl] == ("write_sysctl", ("/proc/sys/net/ipv4/ip_forward", "1"))
    assert pivot < sysctl  # the container's /proc/sys, not the host's
    assert pivot < k.first("sethostname")
    masks = k.indexes("mount", under(rootfs, "/proc/acpi", "/sys/firmware", "/proc/sys"))
    assert len(masks) == 4  # two tmpfs masks, the bind and the ro remount of /proc/sys
    assert pivot < sysctl < min(masks)


def test_read_only_root_is_the_last_mount(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    k = build(monkeypatch, config(tmp_path))
    ro_root = k.last("mount", lambda a: a[1] == str(rootfs) and a[3] & linux.MS_REMOUNT and a[3] & linux.MS_RDONLY)
    assert k.indexes("mount")[-1] == ro_root
    assert not [n for n in k.names()[ro_root + 1:] if n in ("mount", "umount2", "mount_setattr", "move_mount")]


def test_no_pivot_moves_and_chroots_after_every_mount(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    k = build(monkeypatch, config(tmp_path), no_pivot=True)
    chroot = switch(k)
    move = k.first("mount", lambda a: a[0] == str(rootfs) and a[3] == linux.MS_MOVE)
    assert max(k.indexes("mknod") + k.indexes("mount", under(rootfs, "/data"))) < move < chroot
    assert chroot < k.first("write_sysctl") < k.first("mount", under(rootfs, "/proc/acpi"))


def test_imports_sealed_right_after_the_switch(monkeypatch, tmp_path, rootfs, stdio_not_dev_null):
    k = build(monkeypatch, config(tmp_path))
    seal = k.first("seal_imports")
    assert k.names()[seal - 1] == "chdir" and k.calls[seal - 1][1] == (str(rootfs),)  # pivot_into's chdir("/")
    assert switch(k) < seal < k.first("sethostname")
