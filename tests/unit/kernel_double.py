"""RecordingKernel: a double of ocirun.kernel.Kernel for unit tests of the order of the
privileged steps (test_become_order.py, test_rootfs_order.py).  No root needed.

It records every call as (name, args) in `calls` and answers as the kernel would, without
making the call: it keeps the state the answers depend on (our root and cwd, uid and gid,
keepcaps, the capability sets and the bounding set, no_new_privs, rlimits, umask).  It models
the rules a wrong order would break: setuid away from 0 clears the effective set, and the
permitted one too without keepcaps; a seccomp filter needs no_new_privs or CAP_SYS_ADMIN;
execve does not return (it raises `Replaced`).  With `enforce = False` it only records (to see
an order assertion fail on its own, with the rules out of the way).

Paths are recorded as the real paths they name, so that a test can speak of one place
whatever way the code reached it: /proc/self/fd/N and dir_fd-relative names are resolved
(our own fds, read through /proc), "." is the cwd, and an absolute path is taken inside the
root the double was pivoted or chrooted into.

What still touches the real system is only what the code itself does outside the seam:
reads (openat2, fstat, statvfs, readlink, mountinfo) and directories or empty files made
inside the test's own rootfs (tmp_path).
"""
from __future__ import annotations

import errno
import os

from ocirun import capabilities, kernel
from ocirun.kernel import Kernel

CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
ALL_CAPS = (1 << 64) - 1


class Replaced(BaseException):
    """execve succeeded: the process image is gone (a BaseException, so that no `except
    Exception` or `except OSError` of the code under test can catch it)."""


class RecordingKernel(Kernel):
    enforce = True  # refuse what the real kernel would refuse (see the module's docstring)

    def __init__(self, last_cap: int | None = None) -> None:
        if last_cap is None:
            last_cap = capabilities.last_cap()  # the code under test drops up to the host's
        self.calls: list[tuple[str, tuple]] = []
        self.root = "/"
        self.cwd = "/"
        self.uid = self.gid = 0
        self.keepcaps = False
        self.effective = self.permitted = (1 << (last_cap + 1)) - 1
        self.inheritable = 0
        self.bounding = set(range(last_cap + 1))
        self.last_cap = last_cap
        self.no_new_privs = False
        self.rlimits: dict[int, tuple[int, int]] = {}
        self.mask = 0o022
        self.setgroups_allowed = True
        self.root_only_dirs: set[str] = set()  # chdir there fails with EACCES unless uid is 0

    # ------------------------------------------------------------------ for the tests

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def indexes(self, name: str, match=None) -> list[int]:
        """Positions of the calls of `name` (whose args satisfy `match(args)`, if given)."""
        return [i for i, (n, args) in enumerate(self.calls) if n == name and (match is None or match(args))]

    def first(self, name: str, match=None) -> int:
        found = self.indexes(name, match)
        assert found, f"no {name} call{' matching' if match else ''} in {self.names()}"
        return found[0]

    def last(self, name: str, match=None) -> int:
        found = self.indexes(name, match)
        assert found, f"no {name} call{' matching' if match else ''} in {self.names()}"
        return found[-1]

    # ------------------------------------------------------------------ paths

    def _path(self, path, dir_fd: int | None = None):
        """The real path `path` names, as the kernel would resolve it for us."""
        if not isinstance(path, str):
            return path
        if path.startswith("/proc/self/fd/"):
            return os.readlink(path)
        if dir_fd is not None and not path.startswith("/"):
            return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        if path == "." or not path.startswith("/"):
            return os.path.normpath(os.path.join(self.cwd, path))
        return os.path.normpath(self.root + path) if self.root != "/" else path

    def _record(self, name: str, *args) -> None:
        self.calls.append((name, args))

    # ------------------------------------------------------------------ mounts and the root

    def mount(self, source, target, fstype, flags=0, data=None):
        self._record("mount", self._path(source) if source and source.startswith(("/", ".")) else source,
                     self._path(target), fstype, flags, data)

    def umount2(self, target, flags=0):
        self._record("umount2", self._path(target), flags)

    def mount_setattr(self, dirfd, path, flags, attr_set=0, attr_clr=0):
        self._record("mount_setattr", os.readlink(f"/proc/self/fd/{dirfd}"), flags, attr_set, attr_clr)

    def move_mount(self, from_dirfd, from_path, to_dirfd, to_path, flags):
        self._record("move_mount", from_dirfd, os.readlink(f"/proc/self/fd/{to_dirfd}"), flags)

    def pivot_root(self, new_root, put_old):
        new, old = self._path(new_root), self._path(put_old)
        self._record("pivot_root", new, old)
        self.root = new

    def chroot(self, path):
        where = self._path(path)
        self._record("chroot", where)
        self.root = where

    def chdir(self, path):
        where = self._path(path)
        if self.uid != 0 or where not in self.root_only_dirs or not self.enforce:
            self._record("chdir", where)
            self.cwd = where
            return
        self._record("chdir refused", where)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    def fchdir(self, fd):
        where = os.readlink(f"/proc/self/fd/{fd}")
        self._record("fchdir", where)
        self.cwd = where

    def getcwd(self):
        self._record("getcwd")
        if self.root == "/":
            return self.cwd
        if self.cwd == self.root or self.cwd.startswith(self.root + "/"):
            return self.cwd[len(self.root):] or "/"
        return "(unreachable)" + self.cwd

    def open_root(self):
        self._record("open_root", self.root)
        return os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    # ------------------------------------------------------------------ files in the rootfs

    def mknod(self, name, mode, device, dir_fd):
        self._record("mknod", self._path(name, dir_fd), mode, device)

    def chown(self, name, uid, gid, dir_fd):
        self._record("chown", self._path(name, dir_fd), uid, gid)

    def symlink(self, target, name, dir_fd):
        self._record("symlink", target, self._path(name, dir_fd))

    # ------------------------------------------------------------------ names and sysctls

    def sethostname(self, name):
        self._record("sethostname", name)

    def setdomainname(self, name):
        self._record("setdomainname", name)

    def write_sysctl(self, path, value):
        self._record("write_sysctl", path, value)

    # ------------------------------------------------------------------ the process

    def prlimit(self, pid, resource, soft, hard):
        self._record("prlimit", resource, soft, hard)
        self.rlimits[resource] = (soft, hard)

    def getrlimit(self, pid, resource):
        self._record("getrlimit", resource)
        return self.rlimits.get(resource, (1024, 4096))

    def umask(self, mask):
        self._record("umask", mask)
        old, self.mask = self.mask, mask
        return old

    def close_range(self, first, last, flags):
        self._record("close_range", first, last, flags)

    def fchown(self, fd, uid, gid):
        self._record("fchown", fd, uid, gid)

    def may_setgroups(self):
        self._record("may_setgroups")
        return self.setgroups_allowed

    def setgroups(self, gids):
        self._record("setgroups", list(gids))

    def setresgid(self, rgid, egid, sgid):
        self._record("setresgid", rgid, egid, sgid)
        self.gid = egid

    def setresuid(self, ruid, euid, suid):
        self._record("setresuid", ruid, euid, suid)
        if self.uid == 0 and euid != 0 and self.enforce:
            # capabilities(7), "Effect of user ID changes on capabilities"
            self.effective = 0
            if not self.keepcaps:
                self.permitted = 0
        self.uid = euid

    def set_keepcaps(self, on):
        self._record("set_keepcaps", on)
        self.keepcaps = on

    def capbset_read(self, cap):
        self._record("capbset_read", cap)
        if cap > self.last_cap:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return 1 if cap in self.bounding else 0

    def capbset_drop(self, cap):
        self._record("capbset_drop", cap)
        if self.enforce and not self.effective >> CAP_SETPCAP & 1:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        self.bounding.discard(cap)

    def capget(self):
        self._record("capget")
        return self.effective, self.permitted, self.inheritable

    def capset(self, effective, permitted, inheritable):
        self._record("capset", effective, permitted, inheritable)
        if self.enforce and (permitted & ~self.permitted or effective & ~permitted):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        self.effective, self.permitted, self.inheritable = effective, permitted, inheritable

    def ambient_clear_all(self):
        self._record("ambient_clear_all")

    def ambient_raise(self, cap):
        self._record("ambient_raise", cap)

    def set_no_new_privs(self):
        self._record("set_no_new_privs")
        self.no_new_privs = True

    def load_seccomp(self, flt):
        self._record("load_seccomp")
        if self.enforce and not self.no_new_privs and not self.effective >> CAP_SYS_ADMIN & 1:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return -1

    def default_signal(self, signo):
        self._record("default_signal", signo)

    refuse_execveat = False  # as a seccomp profile that allows execve but not execveat

    def execveat(self, dirfd, path, argv, env, flags):
        self._record("execveat", dirfd, path, list(argv))
        if self.refuse_execveat:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        raise Replaced()

    def execve(self, path, argv, env):
        self._record("execve", path, list(argv))
        raise Replaced()


def install(monkeypatch, **kw) -> RecordingKernel:
    """Put a RecordingKernel in ocirun.kernel.KERNEL for the test's duration."""
    double = RecordingKernel(**kw)
    monkeypatch.setattr(kernel, "KERNEL", double)
    return double
