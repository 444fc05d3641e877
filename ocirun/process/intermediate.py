"""The intermediate process: enters or creates the namespaces, then forks the init.

It exists because a new pid (and time) namespace applies only to the children of the process that
unshared it: the init must be forked *after* the unshare.  It talks to the parent on its own
channel (see channel.py), hands the init the other one, and exits as soon as the init is born,
so the init is re-parented to the nearest subreaper (`run`: ocirun itself; `create`: the
engine's shim/conmon).
"""
from __future__ import annotations

import os

from .. import namespaces
from ..errors import OCIError
from ..linux import CLONE_NEWTIME
from .channel import GO, INIT_PID, USERNS, USERNS_DONE, Channel, report_error_and_exit
from .context import LaunchContext


def main(ctx: LaunchContext, ch: Channel, init_ch: Channel, join=None) -> None:
    """Runs in the forked child; never returns.  `ch`: ours with the parent; `init_ch`: the
    init's, passed on untouched.  `join` (cgroups.join.Join): the container's cgroup, which this
    process enters itself, before its namespaces."""
    try:
        ch.expect(GO)  # the parent did what clone3 could not (cgroups/join.py)
        if join is not None:
            join.enter_v1()  # before any namespace: the cgroup namespace is rooted where we are
        from ..rootfs import mounts
        mounts.remember_own_cgroup2()  # a new cgroup namespace hides it (the userns cgroup fallback)
        _enter_namespaces(ctx, ch)
        pid = _fork_init()
        if pid == 0:
            ch.close()  # the intermediate's conversation is not the init's
            from . import init
            init.main(ctx, init_ch)
        init_ch.close()
        ch.send(INIT_PID, pid=pid)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 — every failure goes to the parent as one line
        report_error_and_exit(ch, e)


def _fork_init() -> int:
    try:
        return os.fork()
    except BlockingIOError:  # EAGAIN: we are in the container's cgroup already, under its limits
        raise OCIError("forking the container's init: resource temporarily unavailable (its cgroup "
                       "allows no more processes: a pids.max too low, such as linux.resources.unified "
                       "\"pids.max\": \"0\", or the user's process limit)") from None


def _enter_namespaces(ctx: LaunchContext, ch: Channel) -> None:
    cfg = ctx.cfg
    namespaces.join_user_namespace(ctx.ns_fds, cfg)
    if ctx.new_userns:
        namespaces.unshare(namespaces.NAMESPACE_TYPES["user"])
        ch.send(USERNS)
        ch.expect(USERNS_DONE)
    if ctx.in_userns:
        namespaces.become_root_in_userns()
    namespaces.join_namespaces(ctx.ns_fds, cfg)
    flags = namespaces.new_namespace_flags(cfg)
    namespaces.unshare(flags)
    if flags & CLONE_NEWTIME:
        namespaces.write_time_offsets(cfg)
    for fd in ctx.ns_fds.values():
        os.close(fd)
    ctx.ns_fds = {}
