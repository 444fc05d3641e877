"""The container's init: PID 1 of a new pid namespace (or a plain child when the pid ns is shared).

A straight line, in the order runc's standard_init uses, each step for a reason:

  setsid                         the container gets its own session (and may get a controlling tty)
  prepare_rootfs                 mounts and devices, still able to see host paths (bind sources)
  [mounts_done / hooks_done]     prestart + createRuntime hooks run in the parent meanwhile
  createContainer hooks          in the container's namespaces, before pivot_root (spec)
  enter_rootfs                   pivot_root: from here on host paths are gone, so every module we
                                 need was imported by the runtime before it forked
  console                        the pty comes from the container's own devpts instance
  hostname, sysctl               sysctls need /proc before readonlyPaths makes /proc/sys read-only
  finalize_rootfs                maskedPaths, readonlyPaths, read-only root
  keyring, limits, umask         while we are still root with every capability
  fds                            nothing of the host's may reach the container (CVE-2016-9962 and
                                 CVE-2024-21626 were leaked fds)
  bounding set, user, caps       drop privileges (keepcaps across setuid), then chdir as that user
  look up the executable         so a missing binary fails `create`, not silently after `start`
  ready → wait on exec fifo      `create` returns here; `start` releases us
  startContainer hooks
  no_new_privs, seccomp, execve  seccomp is last: only the syscalls of execve itself remain
"""
from __future__ import annotations

import os
import signal
import socket

import prctl

from .. import capabilities, console, hooks, limits, sysctl, user
from .. import linux
from ..errors import OCIError, os_error
from ..rootfs import enter_rootfs, finalize_rootfs, prepare_rootfs
from .channel import Channel, report_error_and_exit
from .context import LaunchContext

# Ignored signals stay ignored across execve; Python ignores these two for its own reasons.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
_CLOSE_RANGE_CLOEXEC = 4


def main(ctx: LaunchContext, ch: Channel) -> None:
    """Runs in the forked init; never returns."""
    try:
        _run(ctx, ch)
    except BaseException as e:  # noqa: BLE001
        report_error_and_exit(ch, e)
    os._exit(127)


def _run(ctx: LaunchContext, ch: Channel) -> None:
    cfg = ctx.cfg
    proc = cfg.process
    os.setsid()
    prctl.set_dumpable(False)  # the container must not ptrace us or read our /proc/<pid>/ before exec

    prepare_rootfs(cfg, ctx.in_userns)
    state = None
    if any(cfg.hooks.get(k) for k in ("prestart", "createRuntime", "createContainer")):
        ch.send("mounts_done")
        state = ch.expect("hooks_done")["state"]
        hooks.run_hooks("createContainer", cfg.hooks.get("createContainer", []), state)
    enter_rootfs(cfg, ctx.no_pivot)

    if proc is not None and proc.terminal:
        console.setup_console_in_container(ctx.console_fd, proc.console_size, mount=True)
    elif ctx.console_fd >= 0:
        os.close(ctx.console_fd)
    ctx.console_fd = -1
    _set_names(cfg)
    sysctl.apply(cfg.linux.sysctl)
    finalize_rootfs(cfg)
    if not ctx.no_new_keyring:
        _join_session_keyring(ctx.id)
    if proc is None:
        raise OCIError("process: config.json has no process to run")
    _apply_process_attrs(cfg)
    _close_host_fds(ctx, ch)

    user.fix_stdio_permissions(proc.user.uid, proc.user.gid)
    capabilities.apply_bounding(proc.capabilities)
    user.switch_user(proc.user)
    capabilities.apply_caps(proc.capabilities)
    _chdir(proc.cwd)
    env = user.home_env(list(proc.env), proc.user.uid)
    if ctx.listen_fds:
        env = [e for e in env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
        env += [f"LISTEN_FDS={ctx.listen_fds}", "LISTEN_PID=1"]
    path = find_executable(proc.args[0], env)

    ch.send("ready")
    if cfg.hooks.get("startContainer"):
        state = ch.expect("state")["state"]
    _wait_for_start(ctx.fifo_fd)
    ch.close()
    hooks.run_hooks("startContainer", cfg.hooks.get("startContainer", []), state or {})
    _exec(ctx, path, proc.args, env)


def _set_names(cfg) -> None:
    try:
        if cfg.hostname is not None:
            socket.sethostname(cfg.hostname)
        if cfg.domainname is not None:
            linux.setdomainname(cfg.domainname)
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


def _apply_process_attrs(cfg) -> None:
    proc = cfg.process
    limits.apply_rlimits(proc.rlimits)
    if proc.oom_score_adj is not None:
        limits.apply_oom_score_adj(proc.oom_score_adj)
    if proc.io_priority:
        limits.apply_io_priority(proc.io_priority)
    if proc.scheduler:
        limits.apply_scheduler(proc.scheduler)
    if cfg.linux.personality:
        limits.apply_personality(cfg.linux.personality)
    user.set_umask(proc.user)


def _close_host_fds(ctx: LaunchContext, ch: Channel) -> None:
    """Every fd above the preserved ones closes on exec; preserved ones must survive it."""
    first_private = 3 + ctx.preserve_fds
    linux.close_range(first_private, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC)
    for fd in range(3, first_private):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass  # the caller promised the fd; if it is not open there is nothing to pass


def _chdir(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as e:
        raise OCIError(f"process.cwd: chdir to {cwd}: {e.strerror.lower()}") from None


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
        st = os.stat(path)
    except OSError as e:
        raise OCIError(f'exec: "{name}": stat {path}: {e.strerror.lower()}') from None
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise OCIError(f'exec: "{name}": permission denied')
    del st


def _wait_for_start(fifo_fd: int) -> None:
    # Opening the fifo for writing blocks until `start` opens it for reading.
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)


def _env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


def _exec(ctx: LaunchContext, path: str, args: list[str], env: list[str]) -> None:
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    if ctx.cfg.process.no_new_privileges:
        prctl.set_no_new_privs(True)
    if ctx.seccomp_filter is not None:
        ctx.seccomp_filter.load()
    try:
        os.execve(path, args, _env_dict(env))
    except OSError as e:
        # After `start` there is nobody to report to but the container's stderr.
        os.write(2, f"ocirun: exec {path}: {e.strerror.lower()}\n".encode())
        os._exit(127)
