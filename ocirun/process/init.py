"""The container's init: PID 1 of a new pid namespace (or a plain child when the pid ns is shared).

A straight line, in the order runc's standard_init uses, each step for a reason:

  setsid, non-dumpable           own session; the container cannot ptrace us or open our /proc/<pid>/
  close inherited fds            fds leaked to ocirun never reach chdir or the container
                                 (CVE-2016-9962, CVE-2024-21626)
  lo up, [netdevs_done]          a new netns gets loopback; linux.netDevices are moved in by the
                                 parent before anything (hooks, net.* sysctls) may look for them
  prepare_rootfs                 mounts and devices, still able to see host paths (bind sources)
  [mounts_done / hooks_done]     prestart + createRuntime hooks run in the parent meanwhile
  createContainer hooks          in the container's namespaces, before pivot_root (spec)
  enter_rootfs                   pivot_root: from here on host paths are gone, so every module we
                                 need was imported by the runtime before it forked
  console                        the pty comes from the container's own devpts instance
  hostname, sysctl               sysctls need /proc before readonlyPaths makes /proc/sys read-only
  finalize_rootfs                maskedPaths, readonlyPaths, read-only root
  keyring, limits, umask         while we are still root with every capability
  fds                            the rest close on exec; preserved fds (3..) are passed on
  bounding set, user, caps       drop privileges (keepcaps across setuid), then chdir as that user
                                 and check the cwd is inside the root
  look up the executable         so a missing binary fails `create`, not silently after `start`
  ready → wait on exec fifo      `create` returns here; `start` releases us and reads the fifo
                                 until execve closes our end (or we write why we failed)
  startContainer hooks
  no_new_privs, seccomp, execve  seccomp is last (without no_new_privs it is loaded before the
                                 privilege drop, as runc does); the execve goes through the sealed
                                 stub of exechelper.py (CVE-2019-5736)
"""
from __future__ import annotations

import os
import sys

# not socket.py (ARCHITECTURE.md, Startup speed); loaded now for kernel.Kernel.sethostname,
# which runs after pivot_root
import _socket  # noqa: F401
import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

import _prctl  # python-prctl's C module, not prctl.py (ARCHITECTURE.md, Startup speed)

from .. import kernel, linux, network, sysctl
from ..errors import OCIError, os_error
from ..rootfs import enter_rootfs, finalize_rootfs, prepare_rootfs
from . import become
from .channel import (HOOKS_DONE, LISTENER_STATE, MOUNT_SOURCE, MOUNTS_DONE, NETDEVS_DONE, READY, STATE, Channel,
                      hooks_time, report_error_and_exit, step_timeout)
from .context import LaunchContext



def main(ctx: LaunchContext, ch: Channel) -> None:
    """Runs in the forked init; never returns."""
    try:
        _run(ctx, ch)
    except BaseException as e:  # noqa: BLE001
        if _started_fd >= 0:
            # After `start` released us nobody reads the channel, but `start` still reads the
            # fifo until it closes: tell it why the container's process will never run.
            _tell_start(e)
            os._exit(1)
        report_error_and_exit(ch, e)
    os._exit(127)


_started_fd = -1  # the exec fifo's write end once `start` released us (closes at execve)


def _tell_start(err: BaseException) -> None:
    try:
        os.write(_started_fd, str(err).encode()[:4000])
    except OSError:
        pass


def _run(ctx: LaunchContext, ch: Channel) -> None:
    cfg = ctx.cfg
    proc = cfg.process
    os.setsid()
    _prctl.prctl(_prctl.PR_SET_DUMPABLE, False)  # the container must not ptrace us or read our /proc/<pid>/ before exec
    # Fds our caller leaked to us must not even reach chdir (CVE-2024-21626): close them now.
    become.close_all_fds_but(_fds_we_need(ctx, ch))
    if cfg.has_new_namespace("network"):
        network.bring_up_loopback()
    if cfg.linux.net_devices:
        ch.expect(NETDEVS_DONE)  # the parent moves them in; hooks and sysctls may need them

    state = build_container_fs(ctx, ch)
    if not ctx.no_new_keyring:
        _join_session_keyring(ctx.id)
    if proc is not None:
        if _loads_filter_early(ctx):
            # drop_to_process loads the filter and sends the agent its fd: the payload first.
            ch.send(LISTENER_STATE)
            _prepare_listener_payload(ctx.seccomp_filter, ch.expect(STATE)["state"], "creating")
        path, env = become.drop_to_process(proc, cfg.linux.personality, ctx.preserve_fds, ctx.listen_fds,
                                           ctx.seccomp_filter)
        _check_fds_left_for_start(ctx, proc)

    ch.send(READY)
    if needs_state_after_ready(ctx):
        state = ch.expect(STATE)["state"]
        if _has_listener(ctx) and not _loads_filter_early(ctx):
            _prepare_listener_payload(ctx.seccomp_filter, state, "running")
    global _started_fd
    _started_fd = _wait_for_start(ctx.fifo_fd)
    if ctx.seccomp_filter is not None:
        _arm_exec_deadline(cfg.hooks.get("startContainer", []))
    ch.close()
    if proc is None:  # `start` refuses such a container: only a hand-opened fifo gets here
        raise OCIError("cannot start a container without a process: config.json has no `process`")
    if cfg.hooks.get("startContainer"):
        from .. import hooks  # loaded by the parent before the fork (parent._import_what_the_init_needs)
        hooks.run_hooks("startContainer", cfg.hooks["startContainer"], state or {})
    become.execute(proc, path, env, ctx.seccomp_filter, ctx.exec_stub_fd)


def build_container_fs(ctx: LaunchContext, ch: Channel) -> dict | None:
    """From the host's view to the container's own: mounts and devices, the createContainer
    hooks, pivot_root, then what needs the container's /proc and /dev (console, names,
    sysctls) before the masks and read-only paths close them.  Returns the state the hooks
    got (None without hooks).  tests/unit/test_rootfs_order.py checks this order."""
    cfg = ctx.cfg
    proc = cfg.process
    prepare_rootfs(cfg, ctx.in_userns, fetch_source=_source_from_parent(ch))
    state = None
    if any(cfg.hooks.get(k) for k in ("prestart", "createRuntime", "createContainer")):
        ch.send(MOUNTS_DONE)
        state = ch.expect(HOOKS_DONE)["state"]
        from .. import hooks
        hooks.run_hooks("createContainer", cfg.hooks.get("createContainer", []), state)
    enter_rootfs(cfg, ctx.no_pivot)
    become.seal_imports()  # the host's modules are behind us: never load one from the container

    if proc is not None and proc.terminal:
        from .. import console
        console.setup_console_in_container(ctx.console_fd, proc.console_size, mount=True)
    elif ctx.console_fd >= 0:
        os.close(ctx.console_fd)
    ctx.console_fd = -1
    _set_names(cfg)
    sysctl.apply(cfg.linux.sysctl)
    finalize_rootfs(cfg)
    return state


def _source_from_parent(ch: Channel):
    """What only host root can do for a mount, the parent does (channel.py, mount_source): in a
    user namespace, open a bind source our root may not look up; anywhere, make the idmapped
    detached tree of an idmapped bind (rootfs/idmap.py)."""
    def fetch(index: int, idmap: bool = False) -> int:
        ch.send(MOUNT_SOURCE, index=index, idmap=idmap)
        return ch.expect_fd(MOUNT_SOURCE)
    return fetch


# ------------------------------------------------------------ the deadline between start and execve
#
# `start` reads the exec fifo until our execve closes it.  Between the startContainer hooks (their
# own timeouts) and the execve only our last steps run: the memory rlimits, no_new_privs, the
# seccomp load and the send to the agent, the execve.  A seccomp agent that takes the fd and never
# answers a notified syscall of ours (close, execveat...) would stall us there, and `start` with
# us, forever.  So two POSIX timers, which a successful execve deletes (timer_create(2)): after
# STEP_TIMEOUT_S a signal whose handler tells `start` why and exits; 5 s later SIGKILL, should
# that handler be stalled too (a notified write).  Armed right after `start` released us, only
# with a seccomp filter (nothing else there waits on anyone), the hooks' timeouts added.

_CLOCK_MONOTONIC = 1
_SIGEV_SIGNAL = 0


def _arm_exec_deadline(start_hooks) -> None:
    hooks_limit = hooks_time(start_hooks)
    if hooks_limit is None:
        return  # a hook without a timeout may take what it likes (as with runc)
    limit = step_timeout() + hooks_limit

    def stalled(_sig, _frame):
        _tell_start(OCIError(f"timed out after {limit:g}s waiting for the container's process to "
                             f"start: the runtime stalled under the seccomp filter before execve "
                             f"(does the agent at linux.seccomp.listenerPath answer?)"))
        os._exit(1)
    signal.signal(signal.SIGVTALRM, stalled)
    _start_timer(signal.SIGVTALRM, limit)
    _start_timer(signal.SIGKILL, limit + 5)


def _start_timer(signo: int, seconds: float) -> None:
    # The raw syscalls (glibc's timer_t wraps the kernel's int id).  struct sigevent, 64 bytes:
    # sigev_value, sigev_signo, sigev_notify, then padding.
    order = sys.byteorder
    ev = bytes(8) + signo.to_bytes(4, order) + _SIGEV_SIGNAL.to_bytes(4, order) + bytes(48)
    timer = bytearray(4)
    if linux.syscall(linux.NR_TIMER_CREATE, _CLOCK_MONOTONIC, ev, timer) < 0:
        return  # best effort: a profile may deny timer_create (the filter is loaded without NNP)
    whole = int(seconds)
    spec = b"".join(v.to_bytes(8, order) for v in (0, 0, whole, int((seconds - whole) * 1e9)))  # itimerspec
    linux.syscall(linux.NR_TIMER_SETTIME, int.from_bytes(timer, order, signed=True), 0, spec, None)


def _fds_we_need(ctx: LaunchContext, ch: Channel) -> set[int]:
    listener = ctx.seccomp_filter.listener_sock if ctx.seccomp_filter is not None else -1
    keep = {0, 1, 2, ch.fileno(), ctx.fifo_fd, ctx.console_fd, ctx.exec_stub_fd, listener}
    keep.update(range(3, 3 + ctx.preserve_fds))
    return {fd for fd in keep if fd >= 0}


def needs_state_after_ready(ctx: LaunchContext) -> bool:
    """Whether the parent sends `state` after `ready` (see channel.py)."""
    late_listener = _has_listener(ctx) and not _loads_filter_early(ctx)
    return bool(ctx.cfg.hooks.get("startContainer")) or late_listener


def _has_listener(ctx: LaunchContext) -> bool:
    return ctx.seccomp_filter is not None and ctx.seccomp_filter.listener_sock >= 0


def _loads_filter_early(ctx: LaunchContext) -> bool:
    """Without no_new_privs the filter is loaded before `ready`, while we are still privileged
    (become.drop_to_process); with a listener the init then asks for the state first."""
    proc = ctx.cfg.process
    return _has_listener(ctx) and proc is not None and not proc.no_new_privileges


def _prepare_listener_payload(step, state: dict, status: str) -> None:
    from .. import SPEC_VERSION, seccomp
    now = dict(state, status=status)
    step.payload = seccomp.listener_payload(now, state["pid"], step.filter.listener_metadata, SPEC_VERSION)


def _check_fds_left_for_start(ctx: LaunchContext, proc) -> None:
    """`ready` promises that nothing but `start` stands between us and the container's process.
    After it we still open the exec fifo (then close two fds, which leaves room for the notify
    fd of a filter loaded last) and startContainer hooks take up to four pipes and a pidfd:
    with process.rlimits RLIMIT_NOFILE that low we would die after `create` said yes (runc
    fails at create then too).  Try now, so that `create` fails with the reason."""
    need = 1 + (8 if ctx.cfg.hooks.get("startContainer") else 0)
    probes: list[int] = []
    try:
        for _ in range(need):
            probes.append(os.dup(ctx.fifo_fd))
    except OSError as e:
        if e.errno not in (24, 22):  # EMFILE; EINVAL: F_DUPFD's minimum 0 is not below a limit of 0
            raise
        where = next((f"process.rlimits[{i}]: RLIMIT_NOFILE soft limit {r.soft}"
                      for i, r in enumerate(proc.rlimits) if r.type == "RLIMIT_NOFILE"),
                     "the RLIMIT_NOFILE soft limit")
        raise OCIError(f"{where} is too low to start the container: the runtime still needs "
                       f"{need} more open files before the container's process runs") from None
    finally:
        for fd in probes:
            os.close(fd)


def _set_names(cfg) -> None:
    try:
        if cfg.hostname is not None:
            kernel.KERNEL.sethostname(cfg.hostname)
        if cfg.domainname is not None:
            kernel.KERNEL.setdomainname(cfg.domainname)
    except OSError as e:
        raise os_error("set hostname", e) from None


def _join_session_keyring(cid: str) -> None:
    # A fresh session keyring keeps the host's keys out of the container (runc does the same);
    # kernels or seccomp policies without keyctl are not an error.
    try:
        linux.keyctl_join_session_keyring(f"_ses.{cid}")
    except OSError as e:
        if e.errno not in (38, 1, 13):  # ENOSYS, EPERM, EACCES
            raise os_error("join session keyring", e) from None


_STOP_WHILE_CREATED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                       signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)


def _die_of(sig, _frame) -> None:
    os._exit(128 + sig)


def _wait_for_start(fifo_fd: int) -> int:
    # As PID 1 of its namespace the init ignores signals it has no handler for, yet engines stop a
    # created container with SIGTERM (runc's Go init dies of it): die of them until execve resets.
    for sig in _STOP_WHILE_CREATED:
        signal.signal(sig, _die_of)
    # Opening the fifo for writing blocks until `start` opens it for reading.  The write end
    # stays open (close-on-exec): `start` reads on to end-of-file, so it returns only once the
    # container's process runs, after the startContainer hooks (poststart must come after them).
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fifo_fd)
    return fd

