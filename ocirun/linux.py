"""ctypes wrappers for the Linux syscalls Python 3.11's `os` lacks.

Each wrapper raises `OSError(errno, strerror)` like `os` does, so callers can wrap it with
`errors.os_error("what we tried", e)`.  The kernel's constants live here once (CLONE_*, MS_*,
mount API, openat2), and the syscall numbers of x86_64 and aarch64; any other architecture is
refused at import with a one-line OCIError.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys

import _signal  # not signal.py (ARCHITECTURE.md, Startup speed)

from .errors import OCIError

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
# For the few callers that wrap a syscall or libc function of their own (bpf, sched_setattr,
# prlimit64, seccomp): the one handle on libc, with errno kept.
libc = _libc
syscall = _syscall

# Syscall numbers that differ between architectures, checked against the kernel's tables:
# arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h (arm64 uses the
# generic table).  An architecture missing here is refused at import (`syscall_numbers`): another
# architecture's numbers would call other syscalls, silently.
_SYSCALL_NUMBERS = {
    "x86_64": {
        "pivot_root": 155, "setns": 308, "unshare": 272, "keyctl": 250, "ioprio_set": 251,
        "capset": 126, "capget": 125, "sched_setattr": 314, "personality": 135, "seccomp": 317,
        "bpf": 321, "memfd_create": 319, "execveat": 322,
    },
    "aarch64": {
        "pivot_root": 41, "setns": 268, "unshare": 97, "keyctl": 219, "ioprio_set": 30,
        "capset": 91, "capget": 90, "sched_setattr": 274, "personality": 92, "seccomp": 277,
        "bpf": 280, "memfd_create": 279, "execveat": 281,
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

# prctl (python-prctl's 1.3 ms import bought only these calls)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _check(ret: int, *what) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), *what)
    return ret


def _c(s: str | bytes | None):
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_syscall(NR_UNSHARE, ctypes.c_int(flags)))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_syscall(NR_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)))


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_c(source), _c(target), _c(fstype), flags, _c(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_c(target), flags), target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(NR_PIVOT_ROOT, _c(new_root), _c(put_old)))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_syscall(NR_OPENAT2, ctypes.c_int(dirfd), _c(path), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how))), path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _check(_syscall(NR_MOUNT_SETATTR, ctypes.c_int(dirfd), _c(path), ctypes.c_uint(flags),
                    ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_syscall(NR_OPEN_TREE, ctypes.c_int(dirfd), _c(path), ctypes.c_uint(flags)), path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    _check(_syscall(NR_MOVE_MOUNT, ctypes.c_int(from_dirfd), _c(from_path), ctypes.c_int(to_dirfd),
                    _c(to_path), ctypes.c_uint(flags)), to_path)


_STATX_SIZE = 256
_STATX_MASK_OFF, _STATX_MNT_ID_OFF = 0, 0x90  # struct statx: stx_mask, stx_mnt_id


def statx_mount_id(fd: int) -> int:
    """The id of the mount `fd` is on: the unique one where the kernel has it, else the
    mountinfo one (the two never meet: unique ids start at 2^31, above every mountinfo id)."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    _check(_libc.statx(ctypes.c_int(fd), b"", ctypes.c_int(AT_EMPTY_PATH),
                       ctypes.c_uint(STATX_MNT_ID_UNIQUE | STATX_MNT_ID), buf))
    mask = int.from_bytes(buf.raw[_STATX_MASK_OFF:_STATX_MASK_OFF + 4], sys.byteorder)
    if not mask & (STATX_MNT_ID_UNIQUE | STATX_MNT_ID):
        raise OSError(errno.ENOSYS, "statx has no mount id on this kernel")
    return int.from_bytes(buf.raw[_STATX_MNT_ID_OFF:_STATX_MNT_ID_OFF + 8], sys.byteorder)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(_syscall(NR_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)))


def pidfd_open(pid: int) -> int:
    return _check(_syscall(NR_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0)))


def keyctl_join_session_keyring(name: str | None) -> int:
    return _check(_syscall(NR_KEYCTL, ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), _c(name)))


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    _check(_syscall(NR_IOPRIO_SET, ctypes.c_int(which), ctypes.c_int(who), ctypes.c_int(ioprio)))


def personality(persona: int) -> int:
    return _check(_syscall(NR_PERSONALITY, ctypes.c_ulong(persona)))


_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def setdomainname(name: str) -> None:
    b = _c(name)
    _check(_libc.setdomainname(b, len(b)))


_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return _check(_libc.prctl(option, a2, a3, a4, a5))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the three per-thread capability sets (64-bit masks) in one call."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_syscall(NR_CAPSET, ctypes.byref(hdr), data))


def capget() -> tuple[int, int, int]:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_syscall(NR_CAPGET, ctypes.byref(hdr), data))
    join = lambda f: getattr(data[0], f) | (getattr(data[1], f) << 32)  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def memfd_create(name: str, flags: int) -> int:
    return _check(_syscall(NR_MEMFD_CREATE, _c(name), ctypes.c_uint(flags)))



def _cstr_array(items) -> "ctypes.Array":
    arr = (ctypes.c_char_p * (len(items) + 1))()
    arr[:-1] = [_c(s) for s in items]
    arr[-1] = None
    return arr


def execveat(dirfd: int, path: str, argv: list[str], env: dict[str, str], flags: int = 0) -> None:
    """execveat(2); returns only on failure (raises OSError)."""
    c_argv = _cstr_array(argv)
    c_env = _cstr_array([f"{k}={v}" for k, v in env.items()])
    _check(_syscall(NR_EXECVEAT, ctypes.c_int(dirfd), _c(path), c_argv, c_env, ctypes.c_int(flags)), path)


# clone3(2) with CLONE_INTO_CGROUP: the child is born in a cgroup2 directory.  Moving a
# process there by writing cgroup.procs takes the kernel's global threadgroup lock for
# writing, which waits for an RCU grace period (10-20 ms here, once per command); a child
# born in place costs nothing extra.
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_dir_fd: int) -> int:
    """os.fork(), but the child starts in the cgroup2 directory `cgroup_dir_fd`.

    Returns 0 in the child and the child's pid in the parent, like os.fork; raises OSError
    when the kernel refuses (no clone3, or the cgroup cannot take processes).  The
    interpreter's own fork bookkeeping (import lock, at-fork hooks, the GIL in the child)
    runs exactly as os.fork runs it: PyDLL calls keep the GIL held around the syscall.
    """
    if sys.version_info[:2] != (3, 11) or len(os.listdir("/proc/self/task")) != 1:
        # Checked on CPython 3.11 only; and glibc's own fork bookkeeping (at-fork handlers,
        # the cached thread id) is skipped, which only a single-threaded process can afford.
        raise OSError(errno.ENOTSUP, "clone3 fork: needs single-threaded CPython 3.11")
    api = ctypes.pythonapi
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=cgroup_dir_fd)
    raw = _raw_syscall()
    # No signal handler may run between the syscall and the interpreter's after-fork work:
    # in the child it would be the parent's handler (os.fork has no such gap).
    old_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    api.PyOS_BeforeFork()
    pid = raw(NR_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
    if pid < 0:
        raise OSError(err, os.strerror(err))
    return pid


_pydll_syscall = None


def _raw_syscall():
    """libc's syscall() called without releasing the GIL (see fork_into_cgroup)."""
    global _pydll_syscall
    if _pydll_syscall is None:
        f = ctypes.PyDLL(None, use_errno=True).syscall
        f.restype = ctypes.c_long
        _pydll_syscall = f
    return _pydll_syscall
