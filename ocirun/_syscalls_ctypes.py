"""ocirun._syscalls over ctypes: the same functions, for an install where the C module
could not be compiled (no compiler or no Python headers when the wheel was built).

Same contract as _syscalls.c: each returns the kernel's result or -errno.  Importing ctypes
costs ~2.5 ms per command, which is why this is the fallback and not the rule.
"""
import ctypes
import os

import _signal

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# The same function called without releasing the GIL: between clone3 and the interpreter's
# after-fork work no other thread may run (see fork_into_cgroup).
_held = ctypes.PyDLL(None, use_errno=True).syscall
_held.restype = ctypes.c_long

_LONG_MAX = (1 << 63) - 1


def _word(arg):
    if arg is None or isinstance(arg, bytes):
        return arg
    if isinstance(arg, int):
        return ctypes.c_ulong(arg) if arg > _LONG_MAX else ctypes.c_long(arg)
    return (ctypes.c_char * len(arg)).from_buffer(arg)  # bytearray: the kernel writes into it


def _result(ret: int) -> int:
    return -ctypes.get_errno() if ret == -1 else ret


def syscall(nr: int, *args) -> int:
    return _result(_libc.syscall(ctypes.c_long(nr), *[_word(a) for a in args]))


def _array(items: list) -> "ctypes.Array":
    arr = (ctypes.c_char_p * (len(items) + 1))()
    arr[:-1] = items
    arr[-1] = None
    return arr


# Chosen at import, in the runtime: by the time the init execs, a LINUX32 personality would
# make uname say i686 (and 281 on x86_64 is epoll_pwait).  linux.py refuses other machines.
_NR_EXECVEAT = 322 if os.uname().machine == "x86_64" else 281


def execveat(dirfd: int, path: bytes, argv: list, envp: list, flags: int) -> int:
    _libc.syscall(ctypes.c_long(_NR_EXECVEAT), ctypes.c_int(dirfd), path, _array(argv), _array(envp), ctypes.c_int(flags))
    return -ctypes.get_errno()


def address_of(buffer) -> int:
    if isinstance(buffer, bytes):  # c_char_p points into the bytes object itself, no copy
        return ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value or 0
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def libseccomp_version() -> tuple[int, int, int] | None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return v.major, v.minor, v.micro


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_dir_fd: int) -> int:
    args = _CloneArgs(flags=0x200000000, exit_signal=_signal.SIGCHLD, cgroup=cgroup_dir_fd)
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _held(ctypes.c_long(435), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    return -err if pid < 0 else pid

