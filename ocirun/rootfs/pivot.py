"""Switching the init's root to the container's rootfs.

pivot_root (the default) leaves no path back to the host: the old root is detached.  With
--no-pivot (rootfs on a ramfs/initramfs, where pivot_root is impossible) the rootfs is moved
onto / and we chroot into it; the host's procfs/sysfs mounts are removed first, because a
chroot can be escaped through them (runc's msMoveRoot does the same).
"""
from __future__ import annotations

import os

from .. import kernel, linux, mountinfo
from ..errors import os_error


def pivot_into(root_path: str) -> None:
    """pivot_root(".", ".") with the fd trick: no temporary put_old directory in the image."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(root_path, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.KERNEL.fchdir(new_root)
        kernel.KERNEL.pivot_root(".", ".")
        # The old root now sits under the new one, on the same mount point ".".
        kernel.KERNEL.fchdir(old_root)
        # Make sure the unmount does not propagate to the host (its mounts may be shared).
        kernel.KERNEL.mount(None, ".", None, linux.MS_SLAVE | linux.MS_REC)
        kernel.KERNEL.umount2(".", linux.MNT_DETACH)
        kernel.KERNEL.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_root(root_path: str) -> None:
    """MS_MOVE the rootfs onto / and chroot into it (runc --no-pivot)."""
    _hide_host_proc_and_sys(root_path)
    kernel.KERNEL.chdir(root_path)
    kernel.KERNEL.mount(root_path, "/", None, linux.MS_MOVE)
    kernel.KERNEL.chroot(".")
    kernel.KERNEL.chdir("/")


def _hide_host_proc_and_sys(root_path: str) -> None:
    """Unmount (or cover with a tmpfs) every full procfs/sysfs outside the rootfs: the kernel's
    "is there an unmasked proc already" check would otherwise allow new proc mounts."""
    prefix = root_path.rstrip("/") + "/"
    targets = [m.mountpoint for m in mountinfo.read()
               if m.root == "/" and m.fstype in ("proc", "sysfs") and not m.mountpoint.startswith(prefix)]
    gone: list[str] = []
    for path in targets:
        if any(path.startswith(g.rstrip("/") + "/") for g in gone):
            continue  # went away with a lazily unmounted parent
        kernel.KERNEL.mount(None, path, None, linux.MS_SLAVE | linux.MS_REC)
        try:
            kernel.KERNEL.umount2(path, linux.MNT_DETACH)
        except OSError:
            kernel.KERNEL.mount("tmpfs", path, "tmpfs", 0)
        gone.append(path)


def chroot_into(root_path: str) -> None:
    """In the runtime's own mount namespace, where neither pivot_root nor MS_MOVE onto / may
    touch what every other process there sees (runc chroots there too)."""
    kernel.KERNEL.chdir(root_path)
    kernel.KERNEL.chroot(".")
    kernel.KERNEL.chdir("/")


def enter(root_path: str, no_pivot: bool, chroot_only: bool = False) -> None:
    how = "chroot" if chroot_only else "move" if no_pivot else "pivot_root"
    try:
        if chroot_only:
            chroot_into(root_path)
        elif no_pivot:
            move_root(root_path)
        else:
            pivot_into(root_path)
    except OSError as e:
        raise os_error(f"{how} into {root_path}", e) from None
