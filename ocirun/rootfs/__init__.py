"""The container's filesystem view, built by its init in three steps.

    prepare_rootfs(cfg, in_userns)   just after unshare(CLONE_NEWNS), host paths still visible:
                                     / made rslave (nothing reaches the host), rootfs bound onto
                                     itself, cfg.mounts in order, devices and /dev symlinks
    (createContainer hooks run here, by the caller)
    enter_rootfs(cfg, no_pivot)      pivot_root (or MS_MOVE + chroot with --no-pivot)
    finalize_rootfs(cfg)             rootfsPropagation, stdio on the host's /dev/null → ours,
                                     readonlyPaths, maskedPaths, ro /dev, ro root

Every path inside the image is resolved inside it (paths.py).  The mounts, device nodes and the
switch of root go through ocirun.kernel (the seam the unit tests of the order replace).  Only
os, stat, ocirun.linux and ocirun.kernel are used, so importing this package before forking is
cheap and nothing is imported after pivot.
"""
from __future__ import annotations

import os

from .. import kernel, linux, mountinfo
from ..errors import os_error
from .devices import create_devices, dev_is_host_bind, devices_to_create, reopen_dev_null, setup_dev_symlinks
from .mounts import (PROPAGATION, MountOptions, MountContext, mask_path, mount_entry,
                     parse_mount_options, readonly_path, remount_dev_readonly, remount_root_readonly)
from .paths import fd_path, make_mount_target, mkdir_all_in_root, open_in_root
from .pivot import enter

__all__ = ["prepare_rootfs", "enter_rootfs", "finalize_rootfs", "parse_mount_options", "MountOptions",
           "open_in_root", "mkdir_all_in_root", "make_mount_target", "shares_runtime_mount_namespace",
           "bind_shared_rootfs", "release_shared_rootfs"]

_DEFAULT_ROOT_PROPAGATION = linux.MS_SLAVE | linux.MS_REC


def shares_runtime_mount_namespace(cfg) -> bool:
    """No `mount` entry in linux.namespaces: the container lives in the runtime's mount table.

    The spec allows it (runc runs it).  Then the init leaves the propagation of the runtime's
    mounts alone, binds the rootfs onto itself (one mount of ours that holds every other mount
    of the container: made by the runtime before the fork, bind_shared_rootfs), mounts into it
    and chroots: pivot_root would move the root of every process of the namespace.  `delete`
    detaches that one bind (release_shared_rootfs).
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
            kernel.KERNEL.mount(None, "/", None, prop)
            _make_parent_mount_private(root)
            kernel.KERNEL.mount(root, root, "bind", linux.MS_BIND | linux.MS_REC)
        # else the runtime made the bind before the fork (bind_shared_rootfs): we mount under it
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
        if cfg.process is not None and cfg.process.cwd:
            _make_missing_cwd(root_fd, cfg.process.cwd)
    finally:
        os.close(root_fd)


def _make_missing_cwd(root_fd: int, cwd: str) -> None:
    """A `process.cwd` the image lacks is made (root's, 0755), as runc does: the kubelet passes
    a pod's workingDir whether or not the image has it, and containerd does not make it.  Any
    other trouble (a file in the way) is left for the chdir to report.  Nothing is ever made
    under /proc, /sys or /dev: kernel filesystems, whose magic links (/proc/self/fd/N) must not
    turn into directories of the image."""
    if os.path.normpath(cwd).lstrip("/").split("/")[0] in ("proc", "sys", "dev"):
        return
    try:
        os.close(open_in_root(root_fd, cwd, os.O_PATH))
        return
    except FileNotFoundError:
        pass
    except OSError:
        return
    try:
        os.close(mkdir_all_in_root(root_fd, cwd))
    except OSError:
        pass


def _make_parent_mount_private(root: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared, and a shared parent would
    also carry our bind of the rootfs to its peers: make just that one mount private."""
    real = os.path.realpath(root)
    best, shared = "", False
    for m in mountinfo.read():
        mp = m.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best, shared = mp, any(opt.startswith("shared:") for opt in m.optional)
    if best and shared:
        kernel.KERNEL.mount(None, best, None, linux.MS_PRIVATE)


def enter_rootfs(cfg, no_pivot: bool) -> None:
    """Make cfg.root_path the init's /; the host's tree is gone afterwards (in the runtime's own
    mount namespace: out of reach, by chroot)."""
    enter(cfg.root_path, no_pivot, chroot_only=shares_runtime_mount_namespace(cfg))


def bind_shared_rootfs(root_path: str, record) -> int:
    """Bind the rootfs onto itself in the runtime's mount table for a container without a mount
    namespace (the init mounts everything under it) and return the bind's mount id.

    The bind is made detached (open_tree), `record(id)` is called (create writes it to
    state.json), and only then is it attached: a `kill -9` at any point leaves either nothing
    (a detached tree dies with its fd) or a mount that state.json names, for `delete --force`."""
    dir_fd = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tree = linux.open_tree(dir_fd, "", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC
                               | linux.AT_RECURSIVE | linux.AT_EMPTY_PATH)
        try:
            mnt_id = linux.statx_mount_id(tree)
            record(mnt_id)
            linux.move_mount(tree, "", dir_fd, "", linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
        finally:
            os.close(tree)
    finally:
        os.close(dir_fd)
    return mnt_id


def release_shared_rootfs(root_path: str, mnt_id: int) -> None:
    """Detach the rootfs bind a container without a mount namespace left in the runtime's mount
    table (and every mount below it), if the mount at `root_path` is still that one.

    The check and the unmount are about one object: the mount an O_PATH fd of `root_path` lands
    on, compared by its id (unique since Linux 6.8: a mount made later at the same path, ours or
    not, never matches), is detached through /proc/self/fd/N, which names that very mount
    whatever happens to the path meanwhile (a symlink swapped in, another mount stacked on it).
    What the kernel leaves open: a mount stacked onto our bind's root between the open and the
    detach is detached with it (MNT_DETACH takes a mount's children), and a bind that is covered
    by a later one (two such containers on one rootfs path, deleted first-made-first) is not
    reachable by path: it is left, not guessed at."""
    if not mnt_id:
        return
    try:
        fd = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # gone (the bundle was removed): nothing of ours can be there
    try:
        try:
            if linux.statx_mount_id(fd) != mnt_id:
                return
            linux.umount2(f"/proc/self/fd/{fd}", linux.MNT_DETACH)
        except OSError as e:
            raise os_error(f"unmount the container's rootfs {root_path}", e) from None
    finally:
        os.close(fd)


def finalize_rootfs(cfg) -> None:
    """The steps that need the container's own view (after enter_rootfs)."""
    root_fd = kernel.KERNEL.open_root()
    try:
        if cfg.linux.rootfs_propagation:
            try:
                kernel.KERNEL.mount(None, "/", None, PROPAGATION[cfg.linux.rootfs_propagation])
            except OSError as e:
                raise os_error(f"set rootfs propagation {cfg.linux.rootfs_propagation}", e) from None
        if not dev_is_host_bind(cfg.mounts):
            try:
                reopen_dev_null(root_fd)
            except OSError as e:
                raise os_error("reopen /dev/null inside the container", e) from None
        for path in cfg.linux.readonly_paths:
            readonly_path(root_fd, path)
        for path in cfg.linux.masked_paths:
            mask_path(root_fd, path)
        remount_dev_readonly(cfg.mounts)
        if cfg.root_readonly:
            remount_root_readonly()
    finally:
        os.close(root_fd)
