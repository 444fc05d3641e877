"""The runtime side of `create`: fork the intermediate and drive the conversation in channel.py.

`spawn_init(ctx, cgroup, state_for_hooks, run_runtime_hooks)` returns the host pid of the
container's init once the init is ready and blocked on the exec fifo.  On any failure it kills what it started and raises; the
caller (create.py) removes the cgroup and the state directory.
"""
from __future__ import annotations

import errno
import os

import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

from .. import linux, namespaces
from ..cgroups import join as cgroup_join
from ..errors import OCIError, os_words
from . import init as _init  # noqa: F401 — imported now: the init cannot import after pivot_root
from . import become, intermediate
from .channel import (ERROR, GO, HOOKS_DONE, INIT_PID, LISTENER_STATE, MOUNT_SOURCE, MOUNTS_DONE, NETDEVS_DONE, READY,
                      STATE, USERNS, USERNS_DONE, Channel, ChildDied, hooks_time)
from .reaping import KILL_WAIT_S, wait_exit
from .context import LaunchContext

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (ARCHITECTURE.md, Startup speed)
if TYPE_CHECKING:
    from ..network import MovedDevices


class Spawned:
    """What the parent knows about the children while `create` runs."""

    def __init__(self) -> None:
        self.intermediate_pid = 0
        self.init_pid = 0
        self.net_devices: MovedDevices | None = None  # once linux.netDevices were moved

    def release_devices(self, failed: bool) -> None:
        """Close our hold on the container's netns; after a failure, first give the devices back."""
        if self.net_devices is not None:
            if failed:
                self.net_devices.give_back()
            self.net_devices.close()
            self.net_devices = None

    def kill(self) -> None:
        for pid in (self.init_pid, self.intermediate_pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.reap()

    def reap(self) -> None:
        for attr in ("intermediate_pid", "init_pid"):
            pid = getattr(self, attr)
            if pid and not wait_exit(pid, KILL_WAIT_S):
                # Stuck in the kernel (an unkillable sleep): say so rather than hang with it.
                from .. import log
                log.get().warn(f"container process {pid} did not exit {KILL_WAIT_S:g}s after SIGKILL")
            if attr == "intermediate_pid":
                self.intermediate_pid = 0


def spawn_init(ctx: LaunchContext, cgroup, state_for_hooks, run_runtime_hooks) -> tuple[int, Channel]:
    """Start the container's processes; return (init host pid, channel to the init).

    `state_for_hooks(pid)` builds the runtime-spec state; `run_runtime_hooks(state)` runs the
    prestart and createRuntime hooks in the runtime's namespaces.
    """
    # One channel per child (channel.py): the intermediate's conversation ends with the init's
    # pid, and only then do we read the init's, so nothing it says can come before its pid.
    made: list[Channel] = []
    try:
        made += Channel.pair()
        made += Channel.pair()
        to_intermediate, intermediate_end, to_init, init_end = made
        proc = Spawned()
        join = cgroup.join_plan() if cgroup is not None else None
        _import_what_the_init_needs(ctx)
        pid = cgroup_join.fork(join)
    except BaseException:
        for ch in made:
            ch.close()
        raise
    if pid == 0:
        try:
            to_intermediate.close()
            to_init.close()
            if ctx.lock_fd >= 0:
                os.close(ctx.lock_fd)  # else the init would hold the container's lock until exec
            become.reset_signal_handlers()
            if ctx.stdio_pipes is not None:
                ctx.stdio_pipes.install_in_child()
            intermediate.main(ctx, intermediate_end, init_end, join)
        finally:
            os._exit(1)
    intermediate_end.close()
    init_end.close()
    if ctx.stdio_pipes is not None:
        ctx.stdio_pipes.close_child_ends()
    proc.intermediate_pid = pid
    try:
        try:
            if join is not None:
                join.finish_in_parent(pid)
            to_intermediate.send(GO)
            _converse_with_intermediate(ctx, to_intermediate, proc)
            if cgroup is not None:
                cgroup.after_intermediate()
        finally:
            to_intermediate.close()
        _converse_with_init(ctx, to_init, proc, state_for_hooks, run_runtime_hooks)
    except ChildDied:
        _abandon(proc, to_init)
        raise OCIError(_why_it_died_unready(ctx, cgroup)) from None
    except BaseException:
        _abandon(proc, to_init)
        raise
    proc.release_devices(failed=False)
    return proc.init_pid, to_init


def _why_it_died_unready(ctx: LaunchContext, cgroup) -> str:
    """A child that died without a word: the OOM killer is the likely cause worth naming (a
    memory limit too small for the setup itself); else only that it died."""
    if cgroup is not None:
        from ..cgroups.stats import oom_kills
        try:
            killed = oom_kills(cgroup) > 0
        except (OSError, ValueError):
            killed = False
        if killed:
            limit = (ctx.cfg.linux.resources.get("memory") or {}).get("limit")
            why = (f"linux.resources.memory.limit {limit} is too small" if isinstance(limit, int) and limit > 0
                   else "the memory limit of an enclosing cgroup, or the host's memory, is too small")
            return f"container init was killed by the OOM killer before it was ready: {why}"
    return "container init exited before it was ready"


def _abandon(proc: Spawned, to_init: Channel) -> None:
    """After a failure: kill the children, then hang up.  In that order: an init that read
    end-of-file first would take it for our death and say so on the container's stderr."""
    proc.release_devices(failed=True)
    proc.kill()
    to_init.close()


def _import_what_the_init_needs(ctx: LaunchContext) -> None:
    """Modules only some containers use, imported here: the init could not import them after
    pivot_root (the host's paths are gone), nor, in a user namespace, read them at all."""
    cfg = ctx.cfg
    if cfg.process is not None and cfg.process.terminal:
        from .. import console  # noqa: F401
    if any(cfg.hooks.get(k) for k in ("createContainer", "startContainer")):
        from .. import hooks  # noqa: F401


def _converse_with_intermediate(ctx: LaunchContext, ch: Channel, proc: Spawned) -> None:
    """Until the intermediate has forked the init and exited: its user namespace's maps, then
    the init's pid."""
    while True:
        msg = ch.recv("the intermediate process to enter the namespaces and fork the init")
        t = msg["type"]
        if t == ERROR:
            raise OCIError(msg["msg"])
        if t == USERNS:
            namespaces.write_id_maps(proc.intermediate_pid, ctx.cfg)
            ch.send(USERNS_DONE)
        elif t == INIT_PID:
            _got_init_pid(proc, msg)
            return
        else:
            raise OCIError(f"internal error: unexpected message {t!r} from the intermediate process")


def _converse_with_init(ctx: LaunchContext, ch: Channel, proc: Spawned, state_for_hooks, run_runtime_hooks) -> None:
    """From the init's birth to its `ready`: network devices, mount sources, hooks, state."""
    if ctx.cfg.linux.net_devices:
        from .. import network
        try:
            proc.net_devices = network.move_devices(ctx.cfg, proc.init_pid, ctx.state_dir)
        except OCIError:
            # An init that failed before this (bringing up lo) has died and said why; its network
            # namespace went with it, so the move failed too: its reason is the real one.
            said = ch.error_waiting()
            if said is not None:
                raise OCIError(said) from None
            raise
        ch.send(NETDEVS_DONE)
    waiting = "the container's init to finish its setup"
    extra: float | None = 0.0  # for the deadline
    while True:
        msg = ch.recv(waiting, extra)
        t = msg["type"]
        if t == ERROR:
            raise OCIError(msg["msg"])
        if t == MOUNT_SOURCE:
            fd = _open_mount_source(ctx, proc.init_pid, msg.get("index"), msg.get("idmap") is True)
            try:
                ch.send_fd(MOUNT_SOURCE, fd)
            finally:
                os.close(fd)
        elif t == MOUNTS_DONE:
            state = state_for_hooks(proc.init_pid)
            run_runtime_hooks(state)
            ch.send(HOOKS_DONE, state=state)
            # The init runs the createContainer hooks next: their time is theirs.
            waiting = "the container's init to run the createContainer hooks and finish its setup"
            extra = hooks_time(ctx.cfg.hooks.get("createContainer", []))
        elif t == LISTENER_STATE:
            ch.send(STATE, state=state_for_hooks(proc.init_pid, "creating"))
            if extra == 0.0:
                waiting = ("the container's init to finish its setup under its seccomp filter "
                           "(does the agent at linux.seccomp.listenerPath answer?)")
        elif t == READY:
            if _init.needs_state_after_ready(ctx):
                ch.send(STATE, state=state_for_hooks(proc.init_pid, "created"))
            return
        else:
            raise OCIError(f"internal error: unexpected message {t!r} from the container process")


def _open_mount_source(ctx: LaunchContext, init_pid: int, index, idmap: bool = False) -> int:
    """The source of bind mount mounts[index], opened by us (host root) inside the init's mount
    namespace, for an init in a user namespace that may not look it up (runc does the same).
    Resolved under /proc/<init>/root as the init would resolve it: absolute symlinks stay in
    the init's namespace, so the fd is one the init may bind from."""
    from ..rootfs import parse_mount_options
    from ..rootfs.idmap import is_idmapped
    mounts = ctx.cfg.mounts
    refused = OCIError(f"internal error: the container process asked for mount source {index!r}")
    if not (isinstance(index, int) and 0 <= index < len(mounts)):
        raise refused
    o = parse_mount_options(mounts[index].options)
    # What the config says decides, never the request: an idmapped tree only for a mount the
    # config idmaps (it would hand the container's root a host directory), a plain source only
    # where a user namespace keeps the init from opening it itself.
    if not (mounts[index].type == "bind" or o.bind) or idmap != is_idmapped(mounts[index]) or (
            not idmap and not ctx.in_userns):
        raise refused
    m = mounts[index]
    path = m.source if os.path.isabs(m.source) else os.path.join(ctx.cfg.bundle, m.source)
    # An idmapped tree is cloned from our own mount namespace: open_tree copies only mounts of
    # the caller's (the init's is a copy of ours, so the path names the same thing).
    where = "/" if idmap else f"/proc/{init_pid}/root"
    try:
        root = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = linux.openat2(root, path, os.O_PATH | os.O_CLOEXEC, 0, linux.RESOLVE_IN_ROOT)
        finally:
            os.close(root)
    except OSError as e:
        raise OCIError(f"mounts[{index}].source: {path}: {os_words(e)}") from None
    if not idmap:
        return fd
    from ..rootfs import idmap as idmapped
    try:
        uid_map, gid_map, field = idmapped.mappings_for(ctx.cfg, index)
        return idmapped.idmapped_tree(fd, uid_map, gid_map, o.recursive, o.recursive_idmap, field)
    except OSError as e:
        why = {errno.EINVAL: "the kernel or this filesystem does not support idmapped mounts",
               errno.ENOSYS: "the kernel has no mount_setattr (Linux 5.12+)"}.get(e.errno or 0, os_words(e))
        raise OCIError(f"mounts[{index}]: idmapped mount of {path}: {why}") from None
    finally:
        os.close(fd)


def _got_init_pid(proc: Spawned, msg: dict) -> None:
    pid = msg.get("pid")
    if not isinstance(pid, int) or pid <= 0:  # never record a container without its pid
        raise OCIError(f"internal error: the intermediate process sent init pid {pid!r}")
    proc.init_pid = pid
    # The intermediate exits right after it sent the pid.
    if not wait_exit(proc.intermediate_pid, KILL_WAIT_S):
        from .channel import Timeout
        raise Timeout(f"timed out after {KILL_WAIT_S:g}s waiting for the intermediate process "
                      f"{proc.intermediate_pid} to exit")
    proc.intermediate_pid = 0
