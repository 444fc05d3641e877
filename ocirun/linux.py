"""Wrappers for the Linux syscalls Python 3.11's `os` lacks.

Each wrapper raises `OSError(errno, strerror)` like `os` does, so callers can wrap it with
`errors.os_error("what we tried", e)`.  The kernel's constants live here once (CLONE_*, MS_*,
mount API, openat2), and the syscall numbers of x86_64 and aarch64; any other architecture is
refused at import with a one-line OCIError.

The calls go through `ocirun._syscalls`, a small C module built at install, which loads in
~0.1 ms; where it could not be built, through the same functions over ctypes
(`_syscalls_ctypes`, ~2.5 ms to import).  Structures are packed here, as bytes.
"""
from __future__ import annotations

import errno
import os
import sys

import _signal  # not signal.py (ARCHITECTURE.md, Startup speed)

from .errors import OCIError

_SYSCALLS_API = ("syscall", "execveat", "fork_into_cgroup", "libseccomp_version", "address_of")
try:
    from . import _syscalls as _sys
    if not all(hasattr(_sys, name) for name in _SYSCALLS_API):
        raise ImportError("a _syscalls built from older sources (run pip install again)")
except ImportError:  # not compiled (no compiler or Python headers at install), or stale: ctypes
    from . import _syscalls_ctypes as _sys  # type: ignore[no-redef]  # the same functions, same contract

# The raw entry, for the few callers that make a syscall of their own (bpf, sched_setattr,
# prlimit64, seccomp): syscall(nr, *args) with ints, None, bytes (read-only memory) or a
# bytearray (memory the kernel writes); returns the result or -errno (see `check`).
syscall = _sys.syscall
# The address of a bytes or bytearray, for a pointer inside a structure (sock_fprog, bpf_attr);
# keep the object alive (and a bytearray unresized) while the kernel may read it.
address_of = _sys.address_of
# libseccomp's (major, minor, micro), or None without libseccomp.so.2.
libseccomp_version = _sys.libseccomp_version

# Syscall numbers that differ between architectures, checked against the kernel's tables:
# arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h (arm64 uses the
# generic table).  An architecture missing here is refused at import (`syscall_numbers`): another
# architecture's numbers would call other syscalls, silently.
_SYSCALL_NUMBERS = {
    "x86_64": {
        "pivot_root": 155, "setns": 308, "unshare": 272, "keyctl": 250, "ioprio_set": 251,
        "capset": 126, "capget": 125, "sched_setattr": 314, "personality": 135, "seccomp": 317,
        "bpf": 321, "memfd_create": 319, "execveat": 322, "mount": 165, "umount2": 166,
        "setdomainname": 171, "prctl": 157, "statx": 332, "prlimit64": 302, "statfs": 137,
        "timer_create": 222, "timer_settime": 223,
    },
    "aarch64": {
        "pivot_root": 41, "setns": 268, "unshare": 97, "keyctl": 219, "ioprio_set": 30,
        "capset": 91, "capget": 90, "sched_setattr": 274, "personality": 92, "seccomp": 277,
        "bpf": 280, "memfd_create": 279, "execveat": 281, "mount": 40, "umount2": 39,
        "setdomainname": 162, "prctl": 167, "statx": 291, "prlimit64": 261, "statfs": 43,
        "timer_create": 107, "timer_settime": 110,
    },
}


def syscall_numbers(machine: str) -> dict[str, int]:
    """The table for `machine` (os.uname().machine), or the one-line refusal of the CLI."""
    table = _SYSCALL_NUMBERS.get(machine)
    if table is None:
        raise OCIError(f"unsupported CPU architecture {machine!r}: ocirun knows the syscall numbers "
                       f"of {' and '.join(_SYSCALL_NUMBERS)} only")
    return table


MACHINE = os.uname().machine
_NR = syscall_numbers(MACHINE)
NR_PIVOT_ROOT = _NR["pivot_root"]
NR_SETNS = _NR["setns"]
NR_UNSHARE = _NR["unshare"]
NR_KEYCTL = _NR["keyctl"]
NR_IOPRIO_SET = _NR["ioprio_set"]
NR_CAPSET = _NR["capset"]
NR_CAPGET = _NR["capget"]
NR_SCHED_SETATTR = _NR["sched_setattr"]
NR_PERSONALITY = _NR["personality"]
NR_SECCOMP = _NR["seccomp"]
NR_BPF = _NR["bpf"]
NR_MEMFD_CREATE = _NR["memfd_create"]
NR_EXECVEAT = _NR["execveat"]
NR_MOUNT = _NR["mount"]
NR_UMOUNT2 = _NR["umount2"]
NR_SETDOMAINNAME = _NR["setdomainname"]
NR_PRCTL = _NR["prctl"]
NR_STATX = _NR["statx"]
NR_PRLIMIT64 = _NR["prlimit64"]
NR_STATFS = _NR["statfs"]
NR_TIMER_CREATE = _NR["timer_create"]
NR_TIMER_SETTIME = _NR["timer_settime"]
# Unified numbers (asm-generic, since 5.1): the same on both architectures above.
NR_PIDFD_SEND_SIGNAL = 424
NR_OPEN_TREE = 428
NR_MOVE_MOUNT = 429
NR_FSOPEN = 430
NR_PIDFD_OPEN = 434
NR_CLONE3 = 435
NR_CLOSE_RANGE = 436
NR_OPENAT2 = 437
NR_MOUNT_SETATTR = 442

# clone / unshare flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# statx: the id of the mount a file is on.  STATX_MNT_ID_UNIQUE (Linux 6.8) is never reused;
# STATX_MNT_ID (5.8) is the id of /proc/*/mountinfo, handed out again once the mount is gone.
STATX_MNT_ID = 0x1000
STATX_MNT_ID_UNIQUE = 0x4000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# mount_setattr / open_tree
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# keyctl
KEYCTL_JOIN_SESSION_KEYRING = 1

# prctl (the flags python-prctl has no function for: capabilities.py, user.py)
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def check(ret: int, *what) -> int:
    """`ret` of a syscall, or OSError(errno, strerror, *what) for a -errno."""
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret), *what)
    return ret



def _c(s: str | bytes | None):
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def _u64s(*values: int) -> bytes:
    """A struct of 64-bit fields (open_how, mount_attr, clone_args), in the machine's order."""
    return b"".join(v.to_bytes(8, sys.byteorder) for v in values)


def unshare(flags: int) -> None:
    check(syscall(NR_UNSHARE, flags))


def setns(fd: int, nstype: int = 0) -> None:
    check(syscall(NR_SETNS, fd, nstype))


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    check(syscall(NR_MOUNT, _c(source), _c(target), _c(fstype), flags, _c(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    check(syscall(NR_UMOUNT2, _c(target), flags), target)


def pivot_root(new_root: str, put_old: str) -> None:
    check(syscall(NR_PIVOT_ROOT, _c(new_root), _c(put_old)))


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _u64s(flags | os.O_CLOEXEC, mode, resolve)  # struct open_how
    return check(syscall(NR_OPENAT2, dirfd, _c(path), how, len(how)), path)


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _u64s(attr_set, attr_clr, propagation, userns_fd)  # struct mount_attr
    check(syscall(NR_MOUNT_SETATTR, dirfd, _c(path), flags, attr, len(attr)), path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return check(syscall(NR_OPEN_TREE, dirfd, _c(path), flags), path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    check(syscall(NR_MOVE_MOUNT, from_dirfd, _c(from_path), to_dirfd, _c(to_path), flags), to_path)


_STATX_SIZE = 256
_STATX_MASK_OFF, _STATX_MNT_ID_OFF = 0, 0x90  # struct statx: stx_mask, stx_mnt_id


def statx_mount_id(fd: int) -> int:
    """The id of the mount `fd` is on: the unique one where the kernel has it, else the
    mountinfo one (the two never meet: unique ids start at 2^31, above every mountinfo id)."""
    buf = bytearray(_STATX_SIZE)
    check(syscall(NR_STATX, fd, b"", AT_EMPTY_PATH, STATX_MNT_ID_UNIQUE | STATX_MNT_ID, buf))
    mask = int.from_bytes(buf[_STATX_MASK_OFF:_STATX_MASK_OFF + 4], sys.byteorder)
    if not mask & (STATX_MNT_ID_UNIQUE | STATX_MNT_ID):
        raise OSError(errno.ENOSYS, "statx has no mount id on this kernel")
    return int.from_bytes(buf[_STATX_MNT_ID_OFF:_STATX_MNT_ID_OFF + 8], sys.byteorder)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    check(syscall(NR_CLOSE_RANGE, first, last, flags))


def pidfd_open(pid: int) -> int:
    return check(syscall(NR_PIDFD_OPEN, pid, 0))


def keyctl_join_session_keyring(name: str | None) -> int:
    return check(syscall(NR_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, _c(name)))


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    check(syscall(NR_IOPRIO_SET, which, who, ioprio))


def personality(persona: int) -> int:
    return check(syscall(NR_PERSONALITY, persona))


def setdomainname(name: str) -> None:
    b = _c(name)
    check(syscall(NR_SETDOMAINNAME, b, len(b)))


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return check(syscall(NR_PRCTL, option, a2, a3, a4, a5))


_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_HEADER = _LINUX_CAPABILITY_VERSION_3.to_bytes(4, sys.byteorder) + bytes(4)  # version, pid 0


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the three per-thread capability sets (64-bit masks) in one call."""
    data = b"".join(((v >> shift) & 0xFFFFFFFF).to_bytes(4, sys.byteorder)
                    for shift in (0, 32) for v in (effective, permitted, inheritable))
    check(syscall(NR_CAPSET, _CAP_HEADER, data))


def capget() -> tuple[int, int, int]:
    data = bytearray(24)  # two struct __user_cap_data_struct: effective, permitted, inheritable
    check(syscall(NR_CAPGET, _CAP_HEADER, data))
    word = [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, 24, 4)]
    return word[0] | word[3] << 32, word[1] | word[4] << 32, word[2] | word[5] << 32


def memfd_create(name: str, flags: int) -> int:
    return check(syscall(NR_MEMFD_CREATE, _c(name), flags))


def execveat(dirfd: int, path: str, argv: list[str], env: dict[str, str], flags: int = 0) -> None:
    """execveat(2); returns only on failure (raises OSError)."""
    c_argv = [_c(s) for s in argv]
    c_env = [_c(f"{k}={v}") for k, v in env.items()]
    check(_sys.execveat(dirfd, _c(path), c_argv, c_env, flags), path)


# clone3(2) with CLONE_INTO_CGROUP: the child is born in a cgroup2 directory.  Moving a
# process there by writing cgroup.procs takes the kernel's global threadgroup lock for
# writing, which waits for an RCU grace period (10-20 ms here, once per command); a child
# born in place costs nothing extra.
CLONE_INTO_CGROUP = 0x200000000


def fork_into_cgroup(cgroup_dir_fd: int) -> int:
    """os.fork(), but the child starts in the cgroup2 directory `cgroup_dir_fd`.

    Returns 0 in the child and the child's pid in the parent, like os.fork; raises OSError
    when the kernel refuses (no clone3, or the cgroup cannot take processes).  The
    interpreter's own fork bookkeeping (import lock, at-fork hooks, the GIL in the child)
    runs exactly as os.fork runs it, with the GIL held around the syscall.
    """
    if sys.version_info[:2] != (3, 11) or len(os.listdir("/proc/self/task")) != 1:
        # Checked on CPython 3.11 only; and glibc's own fork bookkeeping (at-fork handlers,
        # the cached thread id) is skipped, which only a single-threaded process can afford.
        raise OSError(errno.ENOTSUP, "clone3 fork: needs single-threaded CPython 3.11")
    # No signal handler may run between the syscall and the interpreter's after-fork work:
    # in the child it would be the parent's handler (os.fork has no such gap).
    old_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    pid = _sys.fork_into_cgroup(cgroup_dir_fd)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
    return check(pid)
