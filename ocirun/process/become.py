"""Becoming the container's process: the steps shared by the init and by `exec`.

`drop_to_process` runs as root inside the container (rootfs entered, namespaces joined) and ends as
the configured user with the configured capabilities, in `cwd`, knowing which file it will exec.
`execute` is the very end: no_new_privs, the seccomp filter (last: from then on only the syscalls
the profile allows may run) and execve.
"""
from __future__ import annotations

import errno
import os
import sys

import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

# The runtime's prctl library (README): its C module, not prctl.py (ARCHITECTURE.md, Startup
# speed), loaded now for kernel.Kernel.set_no_new_privs, which runs after pivot_root
import _prctl  # noqa: F401

from .. import capabilities, exechelper, kernel, limits, lsm, user
from ..errors import OCIError, os_words

# Ignored signals stay ignored across execve; Python ignores these two for its own reasons.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
_CLOSE_RANGE_CLOEXEC = 4


class SeccompStep:
    """A compiled filter and, with SCMP_ACT_NOTIFY + listenerPath, where its listener fd goes."""

    def __init__(self, flt, listener_sock: int = -1):
        if flt.uses_notify and listener_sock < 0:
            # The notify fd would have no one to go to but us: a notified syscall of ours (close,
            # execve...) would wait for ourselves forever, the others get ENOSYS.  runc refuses
            # it too ("listenerPath is not set").
            from ..errors import ConfigError
            raise ConfigError("linux.seccomp.listenerPath",
                              f"is required: {flt.notify_rule}.action is SCMP_ACT_NOTIFY")
        self.filter = flt
        self.listener_sock = listener_sock   # connected before fork: the path is on the host
        self.payload: bytes = b""            # the spec's container process state, built before load
        self.loaded = False

    def load(self) -> None:
        """Load the filter and hand the notify fd to the agent at once: from the load on, every
        notified syscall of ours waits for the agent, which must have the fd by then.  Between
        the two only sendmsg runs (seccomp.py refuses NOTIFY for it)."""
        sender = None
        if self.listener_sock >= 0:
            if not self.payload:
                raise OCIError("internal error: the seccomp listener's state was not prepared before the load")
            from .. import seccomp
            sender = seccomp.ListenerSend(self.listener_sock, self.payload)
        fd = kernel.KERNEL.load_seccomp(self.filter)
        self.loaded = True
        if fd >= 0 and sender is not None:
            sender.send(fd)


def drop_to_process(proc, personality, preserve_fds: int, listen_fds: int,
                    seccomp: SeccompStep | None = None) -> tuple[str, list[str]]:
    """Apply process attributes and drop privileges; return (executable path, environment)."""
    _apply_process_attrs(proc, personality)
    _close_host_fds(preserve_fds)
    if seccomp is not None and not proc.no_new_privileges:
        # Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter, which we are
        # about to drop: load it now, as runc does (the profile must then allow what follows).
        seccomp.load()
    # cwd first as root, as runc does: a directory only root may enter (a 0700 volume) is still
    # the process's cwd; where root is refused (root-squashing NFS, a userns root facing
    # unmapped owners) we try again as the user, with its capabilities.
    in_cwd = _chdir_as_root(proc.cwd)
    user.fix_stdio_permissions(proc.user.uid)
    capabilities.apply_bounding(proc.capabilities)
    user.switch_user(proc.user)
    capabilities.apply_caps(proc.capabilities)
    if not in_cwd:
        _chdir(proc.cwd)
    require_cwd_inside_root(proc.cwd)  # either way: getcwd as the user finds no host path
    env = user.home_env(list(proc.env), proc.user.uid)
    if listen_fds:
        env = [e for e in env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
        env += [f"LISTEN_FDS={listen_fds}", "LISTEN_PID=1"]
    path = find_executable(proc.args[0], env)
    lsm.apply_exec_labels(proc)
    return path, env


def _apply_process_attrs(proc, personality) -> None:
    # As root: all but the memory limits, whose hard limits only go up now (limits.LATE_RLIMITS).
    limits.apply_rlimits(proc.rlimits, stage="early")
    if proc.oom_score_adj is not None:
        limits.apply_oom_score_adj(proc.oom_score_adj)
    if proc.io_priority:
        limits.apply_io_priority(proc.io_priority)
    if proc.scheduler:
        limits.apply_scheduler(proc.scheduler)
    if personality:
        limits.apply_personality(personality)
    user.set_umask(proc.user)


def _close_host_fds(preserve_fds: int) -> None:
    """Every fd above the preserved ones closes on exec; preserved ones must survive it."""
    first_private = 3 + preserve_fds
    kernel.KERNEL.close_range(first_private, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC)
    for fd in range(3, first_private):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass  # the caller promised the fd; if it is not open there is nothing to pass


def close_all_fds_but(keep: set[int]) -> None:
    """Close every fd not in `keep` (os.closerange uses close_range(2): one syscall per gap)."""
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 0x7FFFFFFF)


def require_cwd_inside_root(cwd: str) -> None:
    """CVE-2024-21626: a cwd reached through an fd of the host is outside our root, and then
    getcwd(2) fails with ENOENT or answers "(unreachable)/...".  Other errors (a seccomp
    profile may deny getcwd) say nothing about where we are."""
    try:
        where = kernel.KERNEL.getcwd()
    except OSError as e:
        if e.errno != errno.ENOENT:
            return
        where = ""
    if not where.startswith("/"):
        raise OCIError(f"process.cwd: {cwd} is outside the container's root")


def _chdir_as_root(cwd: str) -> bool:
    """chdir while still privileged; False when only a permission error stopped it."""
    try:
        kernel.KERNEL.chdir(cwd)
    except PermissionError:
        return False
    except OSError as e:
        raise OCIError(f"process.cwd: chdir to {cwd}: {os_words(e)}") from None
    return True


def _chdir(cwd: str) -> None:
    try:
        kernel.KERNEL.chdir(cwd)
    except OSError as e:
        raise OCIError(f"process.cwd: chdir to {cwd}: {os_words(e)}") from None


def find_executable(name: str, env: list[str]) -> str:
    """Resolve args[0] as execve will, inside the container; errors read like runc's."""
    if "/" in name:
        _check_executable(name, name)
        return name
    search = next((e[5:] for e in env if e.startswith("PATH=")), "")
    for d in search.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise OCIError(f'exec: "{name}": executable file not found in $PATH')


def _check_executable(name: str, path: str) -> None:
    try:
        os.stat(path)
    except OSError as e:
        raise OCIError(f'exec: "{name}": stat {path}: {os_words(e)}') from None
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise OCIError(f'exec: "{name}": permission denied')


def _env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


def execute(proc, path: str, env: list[str], seccomp: SeccompStep | None = None, stub_fd: int = -1) -> None:
    """The end of the line: no_new_privs, seccomp, execve (through the sealed stub, see exechelper)."""
    k = kernel.KERNEL
    for sig in _RESET_SIGNALS:
        k.default_signal(sig)
    env_map = _env_dict(env)  # as little Python as possible runs under the filter
    # The container's memory limits, last: our own Python would not fit in them.  Only lowering
    # now (a higher hard limit went up early, as root), so no privilege is needed.  Before the
    # filter, which may not allow prlimit64.
    limits.apply_rlimits(proc.rlimits, stage="late")
    if proc.no_new_privileges:
        k.set_no_new_privs()
    if seccomp is not None and not seccomp.loaded:
        seccomp.load()
    try:
        if stub_fd >= 0:
            exechelper.exec_through_stub(stub_fd, path, proc.args, env_map)
        k.execve(path, proc.args, env_map)
    except OSError as e:
        # After `start` there is nobody to report to but the container's stderr.
        os.write(2, f"ocirun: exec {path}: {os_words(e)}\n".encode())
        os._exit(127)


def reset_signal_handlers() -> None:
    """In a child the runtime forked: `run` and `exec` forward signals with Python handlers,
    which a child must not run."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def seal_imports() -> None:
    """After pivot_root or setns(mnt), paths name the container's files: make any import of a
    module not loaded yet fail, instead of running the container's Python with our privileges.
    (Everything we need was imported before; loaded modules stay usable.)"""
    sys.path_hooks[:] = []
    sys.path_importer_cache.clear()
    sys.path[:] = []
