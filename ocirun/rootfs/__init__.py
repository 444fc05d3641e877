"""The container's filesystem view, built by its init in three steps.

    prepare_rootfs(cfg, in_userns)   just after unshare(CLONE_NEWNS), host paths still visible:
                                     / made rslave (nothing reaches the host), rootfs bound onto
                                     itself, cfg.mounts in order, devices and /dev symlinks
    (createContainer hooks run here, by the caller)
    enter_rootfs(cfg, no_pivot)      pivot_root (or MS_MOVE + chroot with --no-pivot)
    finalize_rootfs(cfg)             rootfsPropagation, readonlyPaths, maskedPaths, ro /dev, ro root

Every path inside the image is resolved inside it (paths.py).  Only os, stat and ctypes are
used, so importing this package before forking is cheap and nothing is imported after pivot.
"""
from __future__ import annotations

import os

from .. import linux
from ..errors import os_error
from .devices import create_devices, dev_is_host_bind, devices_to_create, setup_dev_symlinks
from .mounts import (PROPAGATION, MountOptions, MountContext, mask_path, mount_entry,
                     parse_mount_options, readonly_path, remount_dev_readonly, remount_root_readonly)
from .paths import fd_path, make_mount_target, mkdir_all_in_root, open_in_root
from .pivot import enter

__all__ = ["prepare_rootfs", "enter_rootfs", "finalize_rootfs", "parse_mount_options", "MountOptions",
           "open_in_root", "mkdir_all_in_root", "make_mount_target", "shares_runtime_mount_namespace",
           "mount_id", "release_shared_rootfs"]

_DEFAULT_ROOT_PROPAGATION = linux.MS_SLAVE | linux.MS_REC


def shares_runtime_mount_namespace(cfg) -> bool:
    """No `mount` entry in linux.namespaces: the container lives in the runtime's mount table.

    The spec allows it (runc runs it).  Then the init leaves the propagation of the runtime's
    mounts alone, binds the rootfs onto itself (one mount of ours that holds every other mount
    of the container), mounts into it and chroots: pivot_root would move the root of every
    process of the namespace.  `delete` detaches that one bind (release_shared_rootfs).
    A mount namespace joined by path is the caller's to give: there we do what runc does,
    the same as in a new one.
    """
    return cfg.linux.namespace("mount") is None


def prepare_rootfs(cfg, in_userns: bool, fetch_source=None) -> None:
    """Build the rootfs from the host side.  Runs in the init's mount namespace: a new one, one
    joined by path, or the runtime's own (shares_runtime_mount_namespace).  `fetch_source(i)`:
    an fd of mounts[i]'s bind source opened by the runtime, for the sources we may not reach."""
    root = cfg.root_path
    prop = PROPAGATION.get(cfg.linux.rootfs_propagation, _DEFAULT_ROOT_PROPAGATION)
    if prop & linux.MS_UNBINDABLE:
        # An unbindable parent refuses our bind of the rootfs: keep the host safe with the default
        # now; finalize_rootfs applies the requested propagation to the new root.
        prop = _DEFAULT_ROOT_PROPAGATION
    try:
        if not shares_runtime_mount_namespace(cfg):  # the runtime's mounts are not ours to change
            linux.mount(None, "/", None, prop)
            _make_parent_mount_private(root)
        linux.mount(root, root, "bind", linux.MS_BIND | linux.MS_REC)
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise os_error(f"prepare rootfs {root}", e) from None
    try:
        ctx = MountContext(root_fd, os.readlink(fd_path(root_fd)), cfg.bundle, in_userns,
                        cgroupns=cfg.linux.namespace("cgroup") is not None)
        ctx.fetch_source = fetch_source
        for i, m in enumerate(cfg.mounts):
            mount_entry(ctx, i, m)
        if not dev_is_host_bind(cfg.mounts):
            create_devices(root_fd, devices_to_create(cfg.linux.devices), in_userns)
            setup_dev_symlinks(root_fd)
    finally:
        os.close(root_fd)


def _make_parent_mount_private(root: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared, and a shared parent would
    also carry our bind of the rootfs to its peers: make just that one mount private."""
    real = os.path.realpath(root)
    best, shared = "", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left = line.partition(" - ")[0].split()
            mp = left[4].replace("\\040", " ")
            if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, shared = mp, any(opt.startswith("shared:") for opt in left[6:])
    if best and shared:
        linux.mount(None, best, None, linux.MS_PRIVATE)


def enter_rootfs(cfg, no_pivot: bool) -> None:
    """Make cfg.root_path the init's /; the host's tree is gone afterwards (in the runtime's own
    mount namespace: out of reach, by chroot)."""
    enter(cfg.root_path, no_pivot, chroot_only=shares_runtime_mount_namespace(cfg))


def mount_id(path: str) -> int:
    """The id of the mount `path` is on (its top mount when it is a mount point); 0 if none."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    return 0


def release_shared_rootfs(root_path: str, mnt_id: int) -> None:
    """Detach the rootfs bind a container without a mount namespace left in the runtime's mount
    table (and every mount below it), if the mount at `root_path` is still that one."""
    if mnt_id and mount_id(root_path) == mnt_id:
        try:
            linux.umount2(root_path, linux.MNT_DETACH)
        except OSError as e:
            raise os_error(f"unmount the container's rootfs {root_path}", e) from None


def finalize_rootfs(cfg) -> None:
    """The steps that need the container's own view (after enter_rootfs)."""
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if cfg.linux.rootfs_propagation:
            try:
                linux.mount(None, "/", None, PROPAGATION[cfg.linux.rootfs_propagation])
            except OSError as e:
                raise os_error(f"set rootfs propagation {cfg.linux.rootfs_propagation}", e) from None
        for path in cfg.linux.readonly_paths:
            readonly_path(root_fd, path)
        for path in cfg.linux.masked_paths:
            mask_path(root_fd, path)
        remount_dev_readonly(cfg.mounts)
        if cfg.root_readonly:
            remount_root_readonly()
    finally:
        os.close(root_fd)
