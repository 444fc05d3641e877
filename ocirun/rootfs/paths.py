"""Resolve and create paths *inside* the container's rootfs without ever leaving it.

An image is untrusted: any directory on the way to a mount destination or device node may be a
symlink such as ``etc -> /`` or ``x -> ../../../../tmp``.  Every lookup here goes through
``openat2(root_fd, rel, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``, so the kernel treats
``root_fd`` as ``/`` for absolute links and ``..`` (the way a chroot would), and refuses
``/proc/<pid>/root``-style magic links.  Callers get O_PATH fds and mount onto
``/proc/self/fd/N`` (see `fd_path`), so the path is never looked up again by string.

Creating missing components follows the semantics runc gets from securejoin: a dangling symlink
is followed (inside the root) and its target is created.
"""
from __future__ import annotations

import errno
import os

from .. import linux
from ..errors import os_words

RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
MAX_LINKS = 40  # same limit as the kernel's MAXSYMLINKS


def fd_path(fd: int) -> str:
    """The magic link that names what `fd` points to, for mount(2) and friends."""
    return f"/proc/self/fd/{fd}"


def _rel(path: str) -> str:
    rel = path.lstrip("/")
    return rel or "."


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat2 `path` (absolute or relative, both meaning "from the rootfs") confined to root_fd."""
    return linux.openat2(root_fd, _rel(path), flags, mode, RESOLVE)


def _open_dir(root_fd: int, parts: list[str]) -> int:
    return open_in_root(root_fd, "/".join(parts), os.O_PATH | os.O_DIRECTORY)


def mkdir_all_in_root(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Create `path` and its missing parents inside the rootfs; return an O_PATH fd of it.

    Raises OSError (ENOTDIR when a component is a file, ELOOP on symlink cycles).
    """
    parts = _parts(path)
    for _ in range(MAX_LINKS):
        # The longest prefix that already resolves (symlinks and all) inside the root.
        have = len(parts)
        while True:
            try:
                fd = _open_dir(root_fd, parts[:have])
                break
            except FileNotFoundError:
                have -= 1  # parts[:0] is the root itself, which always opens
        if have == len(parts):
            return fd
        redirected = _create_missing(fd, root_fd, parts, have, mode)
        if redirected is None:
            return _open_dir(root_fd, parts)
        parts = redirected
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


def _create_missing(fd: int, root_fd: int, parts: list[str], have: int, mode: int) -> list[str] | None:
    """mkdir parts[have:] one by one below `fd` (consumed).

    Returns None when done, or a new component list when a dangling symlink is in the way:
    the caller restarts with the link's target spliced in (resolved inside the root).
    """
    try:
        for i in range(have, len(parts)):
            name = parts[i]
            if name == "..":
                # "new/.." after a directory we just made (a symlink target spliced in):
                # start over, the kernel resolves the now-existing prefix inside the root.
                return parts
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                target = _readlink_or_none(fd, name)
                if target is None:
                    # Exists and is not a symlink: a file in the way (or a race).
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                             "/" + "/".join(parts[:i + 1])) from None
                base = [] if target.startswith("/") else parts[:i]
                return base + _parts(target) + parts[i + 1:]
            except OSError as e:  # the same kind of error, saying which directory could not be made
                where = "/" + "/".join(parts[:i + 1])
                raise OSError(e.errno, f"mkdir {where}: {os_words(e)}") from None
            nfd = linux.openat2(fd, name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, 0,
                                linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_BENEATH)
            os.close(fd)
            fd = nfd
        return None
    finally:
        os.close(fd)


def _readlink_or_none(dir_fd: int, name: str) -> str | None:
    """The target if `name` is a symlink; None if it is something else or nothing."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):
            return None
        raise


def split_parent(path: str) -> tuple[str, str]:
    """("/a/b", "c") for "/a/b/c"; the name must be a real component."""
    parts = _parts(path)
    if not parts or parts[-1] == "..":
        raise OSError(errno.EINVAL, "invalid path", path)
    return "/" + "/".join(parts[:-1]), parts[-1]


def make_mount_target(root_fd: int, path: str, is_dir: bool) -> int:
    """Make sure `path` exists inside the rootfs (a directory, or an empty file when `is_dir`
    is False and nothing is there yet) and return an O_PATH fd of it.

    A symlink as the last component is followed inside the root, like runc does with
    securejoin: a destination can never point outside the container.
    """
    if is_dir:
        return mkdir_all_in_root(root_fd, path)
    for _ in range(MAX_LINKS):
        try:
            return open_in_root(root_fd, path, os.O_PATH)
        except FileNotFoundError:
            pass
        parent, name = split_parent(path)
        dir_fd = mkdir_all_in_root(root_fd, parent)
        try:
            target = _readlink_or_none(dir_fd, name)
            if target is None:
                fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644, dir_fd=dir_fd)
                os.close(fd)
                return open_in_root(root_fd, path, os.O_PATH)
        finally:
            os.close(dir_fd)
        # A dangling symlink: create what it points at (inside the root), its parents included.
        path = target if target.startswith("/") else f"{parent}/{target}"
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
