"""The processes of `exec`: join a running container and become a new process in it.

Conversation on the channel (P = `ocirun exec`, J = joiner, X = the exec'd process):

  P → J  go           (not in a paused container) J was born in the container's cgroup2
                      directory and has joined the v1 hierarchies itself (cgroups/join.py);
                      P has done whatever clone3 could not.  X is then born in the cgroup.
  J → P  exec_pid     {"pid": host pid of X}; J exits right after (X must be forked after
                      setns(pid): a pid namespace applies to children only).
  P → X  cgroup_done  {"pid": X's host pid, "state": the container's state} X is in the
                      container's cgroup (pid and state feed a seccomp listener).  X waits
                      for it before it does anything as the container's process.  In a
                      paused container (`--ignore-paused`) J stays outside, and P moves X
                      into the cgroup before this message: X freezes right here, blocked
                      on this read, and carries on when the container is resumed.
  X → P  error        {"msg": ...} if anything fails before execve.
  (EOF)               X's end is close-on-exec: end-of-file without an error means execve ran.

fd hygiene (CVE-2016-9962, CVE-2024-21626): J closes every fd it did not come for before it
joins anything, so no fd of the caller's (containerd leaks its own) and none of ocirun's reaches
X, where `cwd: /proc/self/fd/N` would otherwise chdir onto a host directory.  After the chdir X
also checks that its cwd is inside the container's root.
"""
from __future__ import annotations

import os

import _prctl  # python-prctl's C module, not prctl.py (ARCHITECTURE.md, Startup speed)

from .. import namespaces
from ..config import NAMESPACE_TYPES
from ..record import Record
from ..errors import OCIError, os_words
from . import become
from .channel import CGROUP_DONE, EXEC_PID, GO, Channel, report_error_and_exit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (ARCHITECTURE.md, Startup speed)
if TYPE_CHECKING:
    from ..config import Process
    from ..pipes import TerminalPipes
    from .become import SeccompStep



class ExecContext(Record):
    process: Process  # always given
    ns_fds: dict[str, int]
    console_fd: int
    preserve_fds: int
    personality: dict | None
    seccomp_filter: SeccompStep | None
    exec_stub_fd: int
    stdio_pipes: TerminalPipes | None
    root_fd: int
    FIELDS = {
        "process": None,          # config.Process
        "ns_fds": dict,           # the init's /proc/<pid>/ns/* by type
        "console_fd": -1,
        "preserve_fds": 0,
        "personality": None,
        "seccomp_filter": None,   # become.SeccompStep
        "exec_stub_fd": -1,
        "stdio_pipes": None,      # pipes.TerminalPipes: the runtime's side only, never the joiner's
        "root_fd": -1,            # the init's /proc/<pid>/root when the container has no mount
                                  # namespace (it shares ours): we chroot there instead of setns
    }


def main(ctx: ExecContext, ch: Channel, join=None) -> None:
    """Runs in the forked joiner; never returns.  With `join` (cgroups.join.Join) we enter the
    container's cgroup ourselves, first: the process we fork is then born in it."""
    try:
        _prctl.prctl(_prctl.PR_SET_DUMPABLE, False)  # the container must not reach into us through /proc/<pid>/
        if ctx.process.terminal:
            from .. import console  # noqa: F401 — now: after setns(mnt) the host's paths are gone
        if join is not None:
            ch.expect(GO)  # the parent did what clone3 could not (cgroups/join.py)
            join.enter_v1()
        become.close_all_fds_but(_fds_we_need(ctx, ch))
        _join(ctx)
        become.seal_imports()  # in the container's mount namespace: never load its modules
        pid = os.fork()
        if pid == 0:
            _become(ctx, ch)
        ch.send(EXEC_PID, pid=pid)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        report_error_and_exit(ch, e)


def _fds_we_need(ctx: ExecContext, ch: Channel) -> set[int]:
    listener = ctx.seccomp_filter.listener_sock if ctx.seccomp_filter is not None else -1
    keep = {0, 1, 2, ch.fileno(), ctx.console_fd, ctx.exec_stub_fd, listener, ctx.root_fd, *ctx.ns_fds.values()}
    keep.update(range(3, 3 + ctx.preserve_fds))
    return {fd for fd in keep if fd >= 0}


def _join(ctx: ExecContext) -> None:
    namespaces.join_user_namespace(ctx.ns_fds)
    if "user" in ctx.ns_fds:
        namespaces.become_root_in_userns()
    namespaces.join_namespaces(ctx.ns_fds)  # mount last: it also moves our root and cwd
    for fd in ctx.ns_fds.values():
        os.close(fd)
    ctx.ns_fds = {}
    if ctx.root_fd >= 0:
        try:
            os.fchdir(ctx.root_fd)
            os.chroot(".")
            os.chdir("/")
        except OSError as e:
            raise OCIError(f"enter the container's root: {os_words(e)}") from None
        finally:
            os.close(ctx.root_fd)
            ctx.root_fd = -1


def _become(ctx: ExecContext, ch: Channel) -> None:
    try:
        # A session of its own, as the init has: the caller's controlling terminal is then not
        # the process's, and ioctl(TIOCSTI) on an inherited terminal fd fails (EPERM) instead
        # of typing into the caller's shell.  With a pty, the console makes it the new one.
        os.setsid()
        placed = ch.expect(CGROUP_DONE)
        step = ctx.seccomp_filter
        if step is not None and step.listener_sock >= 0:
            from .. import SPEC_VERSION, seccomp
            step.payload = seccomp.listener_payload(placed["state"], placed["pid"],
                                                    step.filter.listener_metadata, SPEC_VERSION)
        proc = ctx.process
        if proc.terminal:
            from .. import console
            console.setup_console_in_container(ctx.console_fd, proc.console_size)
        elif ctx.console_fd >= 0:
            os.close(ctx.console_fd)
        path, env = become.drop_to_process(proc, ctx.personality, ctx.preserve_fds, 0, ctx.seccomp_filter)
        become.execute(proc, path, env, ctx.seccomp_filter, ctx.exec_stub_fd)
    except BaseException as e:  # noqa: BLE001
        report_error_and_exit(ch, e)


def container_namespace_fds(init_pid: int, ns_types: list[str]) -> dict[str, int]:
    """Open the init's namespaces of the given types (those the container does not share)."""
    names = {"user": "user", "pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts",
             "mount": "mnt", "cgroup": "cgroup", "time": "time"}
    fds: dict[str, int] = {}
    try:
        for t in ns_types:
            if t in NAMESPACE_TYPES:
                fds[t] = os.open(f"/proc/{init_pid}/ns/{names[t]}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        for fd in fds.values():
            os.close(fd)
        raise OCIError(f"open the container's namespaces: {os_words(e)}") from None
    return fds


def container_root_fd(init_pid: int) -> int:
    """The init's root directory, for a container that shares our mount namespace."""
    try:
        return os.open(f"/proc/{init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"open the container's root: {os_words(e)}") from None
