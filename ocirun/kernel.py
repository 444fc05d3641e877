"""The seam between the container's setup and the kernel: the privileged calls, in one object.

The two flows whose *order* the container's safety depends on call the kernel through
`KERNEL` (an instance of `Kernel`) instead of `os`/`linux` directly:

- the rootfs (rootfs/: mounts, device nodes, pivot_root or chroot, masked and read-only
  paths, the read-only root) and the names and sysctls set between pivot and masks
  (process/init.py `build_container_fs`);
- the drop to the container's process (process/become.py, user.py, capabilities.py, the
  rlimits of limits.py, exechelper.py): rlimits, umask, fds, groups, gid, uid, keepcaps,
  the bounding set and the capability sets, cwd, no_new_privs, seccomp, execve.

Each method is the plain call, with the plain call's errors (OSError), and nothing more: the
decisions stay with the callers.  Unit tests replace `KERNEL` with a double that records the
calls and answers them without touching the kernel (tests/unit/kernel_double.py), and check
the order without root (tests/unit/test_become_order.py, test_rootfs_order.py).  Callers
look `KERNEL` up at each call (`kernel.KERNEL.mount(...)`), never keep it.

What stays direct: reads and lookups (openat2 in the rootfs, fstat, statvfs, readlink,
mountinfo), the directories and empty files made inside the rootfs, and the steps the
ordering does not hinge on (oom_score_adj, I/O priority, scheduler, personality, LSM labels,
the session keyring, tmpcopyup's copy); and, not yet routed, the /dev/console bind
(console.py) and close_all_fds_but (become.py).

Imports: os, sys, _signal and ocirun.linux only (all loaded by every command that imports this): the
engine commands load it (capabilities.py, limits.py, rootfs/), so nothing heavy here
(ARCHITECTURE.md, Startup speed).
"""
from __future__ import annotations

import os
import sys

import _signal  # not signal.py (ARCHITECTURE.md, Startup speed); built in, so free

from . import linux

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8

_ORDER = sys.byteorder
_OPEN_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class Kernel:
    """The real kernel: every method is one call (or the fallback pair of one call)."""

    # ---------------------------------------------------------------- mounts and the root

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        linux.mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        linux.umount2(target, flags)

    def mount_setattr(self, dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0) -> None:
        linux.mount_setattr(dirfd, path, flags, attr_set, attr_clr)

    def move_mount(self, from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
        linux.move_mount(from_dirfd, from_path, to_dirfd, to_path, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        linux.pivot_root(new_root, put_old)

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def fchdir(self, fd: int) -> None:
        os.fchdir(fd)

    def getcwd(self) -> str:
        return os.getcwd()

    def open_root(self) -> int:
        """An O_PATH fd of our root directory as it is now (the container's, after the pivot)."""
        return os.open("/", _OPEN_DIR)

    # ---------------------------------------------------------------- files in the rootfs

    def mknod(self, name: str, mode: int, device: int, dir_fd: int) -> None:
        os.mknod(name, mode, device, dir_fd=dir_fd)

    def chown(self, name: str, uid: int, gid: int, dir_fd: int) -> None:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def symlink(self, target: str, name: str, dir_fd: int) -> None:
        os.symlink(target, name, dir_fd=dir_fd)

    # ---------------------------------------------------------------- names and sysctls

    def sethostname(self, name: str) -> None:
        import _socket  # loaded by process/init.py before pivot_root (module level there)
        _socket.sethostname(name)

    def setdomainname(self, name: str) -> None:
        linux.setdomainname(name)

    def write_sysctl(self, path: str, value: str) -> None:
        """Write `value` to `path` under /proc/sys."""
        with open(path, "w") as f:
            f.write(value)

    # ---------------------------------------------------------------- the process

    def prlimit(self, pid: int, resource: int, soft: int, hard: int) -> None:
        """setrlimit of `pid` (0: ourselves) with 64-bit values (os.setrlimit stops at 2**63)."""
        new = soft.to_bytes(8, _ORDER) + hard.to_bytes(8, _ORDER)  # struct rlimit64
        linux.check(linux.syscall(linux.NR_PRLIMIT64, pid, resource, new, None))

    def getrlimit(self, pid: int, resource: int) -> tuple[int, int]:
        old = bytearray(16)  # struct rlimit64
        linux.check(linux.syscall(linux.NR_PRLIMIT64, pid, resource, None, old))
        return int.from_bytes(old[:8], _ORDER), int.from_bytes(old[8:], _ORDER)

    def umask(self, mask: int) -> int:
        return os.umask(mask)

    def close_range(self, first: int, last: int, flags: int) -> None:
        linux.close_range(first, last, flags)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        os.fchown(fd, uid, gid)

    def may_setgroups(self) -> bool:
        """False in a user namespace whose setgroups is "deny" (setgroups(2) would be EPERM)."""
        try:
            with open("/proc/self/setgroups", "rb") as f:
                return f.read().strip() != b"deny"
        except OSError:
            return True  # no /proc here, or a kernel without the file: try, and report a failure

    def setgroups(self, gids: list[int]) -> None:
        os.setgroups(gids)

    def setresgid(self, rgid: int, egid: int, sgid: int) -> None:
        os.setresgid(rgid, egid, sgid)

    def setresuid(self, ruid: int, euid: int, suid: int) -> None:
        os.setresuid(ruid, euid, suid)

    def set_keepcaps(self, on: bool) -> None:
        linux.prctl(PR_SET_KEEPCAPS, 1 if on else 0)

    def capbset_read(self, cap: int) -> int:
        """1 if `cap` is in our bounding set, 0 if not; EINVAL for a number the kernel lacks."""
        return linux.prctl(PR_CAPBSET_READ, cap)

    def capbset_drop(self, cap: int) -> None:
        linux.prctl(PR_CAPBSET_DROP, cap)

    def capget(self) -> tuple[int, int, int]:
        """(effective, permitted, inheritable) as 64-bit masks."""
        return linux.capget()

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        linux.capset(effective, permitted, inheritable)

    def ambient_clear_all(self) -> None:
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)

    def ambient_raise(self, cap: int) -> None:
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)

    def set_no_new_privs(self) -> None:
        # python-prctl is the runtime's prctl library (README), through its C module (prctl.py
        # costs ~1 ms of import: ARCHITECTURE.md, Startup speed); imported here, not at module
        # level, to keep this module light.  The process that gets here imported it before
        # pivot_root (process/become.py, module level), so this finds it loaded.
        import _prctl
        _prctl.prctl(_prctl.PR_SET_NO_NEW_PRIVS, True)

    def load_seccomp(self, flt) -> int:
        """Load a compiled filter (seccomp.Filter); the notify fd, or -1."""
        return flt.load()

    def default_signal(self, signo: int) -> None:
        _signal.signal(signo, _signal.SIG_DFL)

    def execveat(self, dirfd: int, path: str, argv: list[str], env: dict[str, str], flags: int) -> None:
        """Returns only on failure (OSError)."""
        linux.execveat(dirfd, path, argv, env, flags)

    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        """Returns only on failure (OSError)."""
        os.execve(path, argv, env)


# The one instance every caller goes through; unit tests put a double in its place.
KERNEL = Kernel()
