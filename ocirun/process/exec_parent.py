"""The runtime side of `exec`: fork the joiner and drive the conversation in joiner.py.

`spawn_exec(ctx, cgroup, ...)` returns the host pid of the exec'd process once it ran execve
(or, in a paused container, once it is in the cgroup).  On any failure it kills what it started
and raises.  create's side is parent.py; this module imports none of the init's (init.py,
rootfs, ...): exec loads only what the joiner needs.
"""
from __future__ import annotations

import os

from ..cgroups import join as cgroup_join
from ..errors import OCIError
from . import become, joiner
from .channel import CGROUP_DONE, ERROR, EXEC_PID, GO, Channel, ChildDied
from .reaping import KILL_WAIT_S, wait_exit


def spawn_exec(ctx, cgroup, frozen: bool = False, state: dict | None = None, sub_cgroup=None) -> int:
    """Fork the joiner, get the exec'd process into the cgroup; its host pid once it exec'd.

    The joiner itself enters the container's cgroup before its namespaces (cgroups/join.py:
    born in the cgroup2 directory, v1 by itself), so the process it forks is born there, as
    runc 1.2's setns process is (no slow cgroup.procs write).  Two cases keep the joiner out
    and move the exec'd process in once it exists, as runc 1.1 does:
    * a paused container (--ignore-paused): the joiner would freeze before forking; the exec'd
      process freezes as soon as it is in the cgroup, before its execve, so then we do not
      wait for the execve;
    * a container at (or one short of) its pids limit: a move ignores pids.max, a birth does
      not, and a debugging shell must still get into a container that forked all it may.
    """
    join = None
    if cgroup is not None and not frozen:
        room = cgroup.pids_room()
        if room is None or room >= 2:  # the joiner and the process it forks
            join = cgroup.join_plan(sub_cgroup)
    ours, theirs = Channel.pair()
    try:
        child = cgroup_join.fork(join)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if child == 0:
        try:
            ours.close()
            become.reset_signal_handlers()
            if ctx.stdio_pipes is not None:
                ctx.stdio_pipes.install_in_child()
            joiner.main(ctx, theirs, join)
        finally:
            os._exit(1)
    theirs.close()
    if ctx.stdio_pipes is not None:
        ctx.stdio_pipes.close_child_ends()
    pid = -1
    try:
        if join is not None:
            join.finish_in_parent(child)
            ours.send(GO)
        pid = ours.expect(EXEC_PID)["pid"]
        _reap(child)  # it exits right after telling us
        if cgroup is not None and join is None:
            cgroup.add_pid(pid, sub_cgroup)
        ours.send(CGROUP_DONE, state=state or {}, pid=pid)
        if frozen:
            return pid
        try:
            msg = ours.recv("the exec'd process to start")  # EOF (ChildDied) here means execve succeeded
        except ChildDied:
            return pid
        if msg.get("type") == ERROR:
            raise OCIError(msg["msg"])
        raise OCIError(f"internal error: unexpected message {msg.get('type')!r} from the exec'd process")
    except BaseException as e:
        ours.close()  # a joiner still waiting for "go" reads end-of-file and exits
        _reap(child, kill=True)
        if pid > 0:
            _reap(pid, kill=True)  # never leave a half-made process behind (it may be outside the cgroup)
        if isinstance(e, ChildDied):
            raise OCIError("the exec'd process died before it started") from None
        raise
    finally:
        ours.close()


def _reap(pid: int, kill: bool = False) -> None:
    """Reap our child `pid` (after SIGKILL with `kill`), waiting a bounded time: a process
    stuck in the kernel is reported, never waited for forever."""
    if kill:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    if not wait_exit(pid, KILL_WAIT_S):
        from .. import log
        log.get().warn(f"exec: process {pid} did not exit {KILL_WAIT_S:g}s after "
                       f"{'SIGKILL' if kill else 'it should have'}")
