"""Device nodes and the /dev symlinks inside the rootfs (config-linux.md "Devices" and
"Default Devices").

The six default devices plus `linux.devices` are made with mknod; in a user namespace (where
mknod is refused) the host's node is bind-mounted onto an empty file instead, as runc does.
Everything is created through paths.py, inside the rootfs: an image that ships `dev -> /`
cannot make us create nodes on the host.  /dev/console belongs to the console module.
"""
from __future__ import annotations

import errno
import os
import stat

from .. import kernel, linux
from ..config import Device
from ..errors import OCIError, os_error
from .mounts import open_real_dev_null
from .paths import MAX_LINKS, fd_path, make_mount_target, mkdir_all_in_root, split_parent

DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0),
    Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0),
    Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0),
    Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
)

_TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

# (link name in /dev, target); /dev/core is added when the kernel has /proc/kcore.
_DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


def dev_is_host_bind(mounts) -> bool:
    """runc leaves /dev alone when the config bind-mounts something (the host's /dev) there."""
    for m in mounts:
        if m.destination == "/dev" and (m.type == "bind" or "bind" in m.options or "rbind" in m.options):
            return True
    return False


def reopen_dev_null(root_fd: int) -> None:
    """Stdio that is the host's /dev/null (an engine's `run -d` without stdin gives it) becomes
    the container's own /dev/null, as runc does: an fd of a host mount must not pin that mount
    inside the container, and CRIU cannot checkpoint it ("Can't lookup mount ... /dev/null").
    In the container's view (after pivot_root), only where we made /dev.  The node is checked
    before it is opened for real (through /proc/self/fd: no second lookup of the path)."""
    stdio = [n for n in (0, 1, 2) if _is_null_device(n)]
    if not stdio:
        return
    checked = open_real_dev_null(root_fd, "reopen stdio on /dev/null")
    try:
        fd = os.open(fd_path(checked), os.O_RDWR | os.O_CLOEXEC)
    finally:
        os.close(checked)
    try:
        for n in stdio:
            os.dup2(fd, n)
    finally:
        os.close(fd)


def _is_null_device(fd: int) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:
        return False  # closed: nothing to replace
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def devices_to_create(config_devices: list[Device]) -> list[Device]:
    """The defaults, minus those linux.devices redefines, then linux.devices in order."""
    given = {d.path for d in config_devices}
    return [d for d in DEFAULT_DEVICES if d.path not in given] + list(config_devices)


def create_devices(root_fd: int, devices: list[Device], in_userns: bool) -> None:
    old_umask = kernel.KERNEL.umask(0)  # fileMode is exact, as in runc
    try:
        for dev in devices:
            try:
                _create_device(root_fd, dev, in_userns)
            except OCIError:
                raise
            except OSError as e:
                raise os_error(f"create device {dev.path}", e) from None
    finally:
        kernel.KERNEL.umask(old_umask)


def _create_device(root_fd: int, dev: Device, in_userns: bool) -> None:
    if dev.path == "/" or dev.path.rstrip("/") == "":
        raise OCIError(f"device path {dev.path!r}: cannot create a device on the rootfs")
    if in_userns:
        _bind_host_node(root_fd, dev)
        return
    path = dev.path
    for _ in range(MAX_LINKS):
        parent, name = split_parent(path)
        dir_fd = mkdir_all_in_root(root_fd, parent)
        try:
            target = _make_node(root_fd, dir_fd, name, dev)
        finally:
            os.close(dir_fd)
        if target is None:
            return
        # The image's entry is a symlink: the node goes where it points, inside the root (the
        # parent is resolved in the root again, so `..` and absolute links stay in it), as
        # runc's SecureJoin puts it.  Left alone, /dev/null was missing from such an image.
        path = target if target.startswith("/") else f"{parent}/{target}"
        if path.rstrip("/").rpartition("/")[2] in ("", ".", ".."):
            return  # a link to a directory (".."): something is there, as with EEXIST (runc)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), dev.path)


def _make_node(root_fd: int, dir_fd: int, name: str, dev: Device) -> str | None:
    """mknod `name` under `dir_fd`; None when done (made, or something not a symlink is there
    already), else the symlink's target to follow."""
    mode = (dev.file_mode if dev.file_mode is not None else 0o666) & 0o7777
    rdev = os.makedev(dev.major, dev.minor) if dev.type != "p" else 0
    try:
        kernel.KERNEL.mknod(name, mode | _TYPE_BITS[dev.type], rdev, dir_fd)
    except FileExistsError:
        try:
            return os.readlink(name, dir_fd=dir_fd)
        except OSError:  # EINVAL: not a symlink
            return None  # like runc: what the image or a mount already put there stays
    except PermissionError:
        _bind_host_node(root_fd, dev)  # mknod not allowed (e.g. restricted by a LSM)
        return None
    kernel.KERNEL.chown(name, dev.uid or 0, dev.gid or 0, dir_fd)
    return None


def _bind_host_node(root_fd: int, dev: Device) -> None:
    try:
        src = os.open(dev.path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OCIError(f"device {dev.path}: not present on the host to bind-mount "
                       "(mknod is not allowed in a user namespace)") from None
    try:
        dst = make_mount_target(root_fd, dev.path, is_dir=False)
        try:
            kernel.KERNEL.mount(fd_path(src), fd_path(dst), None, linux.MS_BIND)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def setup_dev_symlinks(root_fd: int) -> None:
    """/dev/{fd,stdin,stdout,stderr,core}, /dev/ptmx -> pts/ptmx, and /dev/pts, /dev/shm dirs."""
    dev = mkdir_all_in_root(root_fd, "/dev")
    try:
        links = list(_DEV_SYMLINKS)
        if os.path.exists("/proc/kcore"):
            links.append(("core", "/proc/kcore"))
        for name, target in links:
            _symlink(target, name, dev)
        # The devpts instance's ptmx: a node from the image or the host's ptmx must not stay.
        try:
            os.unlink("ptmx", dir_fd=dev)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise OCIError("/dev/ptmx is a directory") from None
        _symlink("pts/ptmx", "ptmx", dev)
        for d in ("pts", "shm"):
            try:
                os.mkdir(d, 0o755, dir_fd=dev)
            except FileExistsError:
                pass
    except OSError as e:
        raise os_error("set up /dev", e) from None
    finally:
        os.close(dev)


def _symlink(target: str, name: str, dir_fd: int) -> None:
    try:
        kernel.KERNEL.symlink(target, name, dir_fd)
    except FileExistsError:
        pass
