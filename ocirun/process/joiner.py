"""The processes of `exec`: join a running container and become a new process in it.

Conversation on the channel (P = `ocirun exec`, J = joiner, X = the exec'd process):

  P → J  go        P has put J in the container's cgroup (before J joins the cgroup namespace).
  J → P  exec_pid  {"pid": host pid of X}; J exits right after (X must be forked after
                   setns(pid): a pid namespace applies to children only).
  X → P  error     {"msg": ...} if anything fails before execve.
  (EOF)            X's end is close-on-exec: end-of-file without an error means execve ran.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import prctl

from .. import console, namespaces
from ..config import NAMESPACE_TYPES, Process
from . import become
from .channel import Channel, report_error_and_exit


@dataclass
class ExecContext:
    process: Process
    ns_fds: dict[str, int] = field(default_factory=dict)   # the init's /proc/<pid>/ns/* by type
    console_fd: int = -1
    preserve_fds: int = 0
    personality: dict | None = None
    seccomp_filter: object = None
    exec_stub_fd: int = -1


def main(ctx: ExecContext, ch: Channel) -> None:
    """Runs in the forked joiner; never returns."""
    try:
        ch.expect("go")
        prctl.set_dumpable(False)  # the container must not reach into us through /proc/<pid>/
        _join(ctx)
        pid = os.fork()
        if pid == 0:
            _become(ctx, ch)
        ch.send("exec_pid", pid=pid)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        report_error_and_exit(ch, e)


def _join(ctx: ExecContext) -> None:
    namespaces.join_user_namespace(ctx.ns_fds)
    if "user" in ctx.ns_fds:
        namespaces.become_root_in_userns()
    namespaces.join_namespaces(ctx.ns_fds)  # mount last: it also moves our root and cwd
    for fd in ctx.ns_fds.values():
        os.close(fd)
    ctx.ns_fds = {}


def _become(ctx: ExecContext, ch: Channel) -> None:
    try:
        proc = ctx.process
        if proc.terminal:
            console.setup_console_in_container(ctx.console_fd, proc.console_size)
        elif ctx.console_fd >= 0:
            os.close(ctx.console_fd)
        path, env = become.drop_to_process(proc, ctx.personality, ctx.preserve_fds, 0, ctx.seccomp_filter)
        become.execute(proc, path, env, ctx.seccomp_filter, ctx.exec_stub_fd)
    except BaseException as e:  # noqa: BLE001
        report_error_and_exit(ch, e)


def container_namespace_fds(init_pid: int, ns_types: list[str]) -> dict[str, int]:
    """Open the init's namespaces of the given types (those the container does not share)."""
    from ..errors import OCIError
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
        raise OCIError(f"open the container's namespaces: {e.strerror.lower()}") from None
    return fds
