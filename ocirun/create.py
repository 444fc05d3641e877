"""`ocirun create`: check the config, make the state directory and the cgroup, spawn the init
(process/parent.py), and leave it waiting on the exec fifo for `start`.

A failure at any point undoes what was made (the init, its cgroup, the state directory) and
runs the poststop hooks as runtime.md asks.
"""
from __future__ import annotations

import os

from . import SPEC_VERSION
from . import log as _log
from .errors import ConfigError, OCIError, describe, os_error
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (ARCHITECTURE.md, Startup speed)
if TYPE_CHECKING:
    from .config import Config
    from .pipes import TerminalPipes
from .state import ContainerState, StateDir, proc_start_time, utc_now, write_pid_file


class CreateOptions(Record):
    bundle: str
    console_socket: str | None
    pid_file: str | None
    no_pivot: bool
    no_new_keyring: bool
    preserve_fds: int
    console_fd: int
    config_doc: object
    stdio_pipes: TerminalPipes | None
    systemd_cgroup: bool
    rootless: str
    created_pid: int
    FIELDS = {
        "bundle": ".",
        "console_socket": None,
        "pid_file": None,
        "no_pivot": False,
        "no_new_keyring": False,
        "preserve_fds": 0,
        "console_fd": -1,   # `run -t` without --console-socket: our own socketpair end
        "config_doc": None,  # config.json as `run` already read it (else create reads it)
        "stdio_pipes": None,  # `run` in the foreground: pipes.TerminalPipes for the init's stdio
        "systemd_cgroup": False,  # --systemd-cgroup: the cgroup is a transient systemd scope
        "rootless": "auto",  # --rootless: auto | true | false (see is_rootless)
        "created_pid": 0,  # set by create() once the container is complete (even if then interrupted)
    }


# ============================================================================ create

def create(root: str, cid: str, opts: CreateOptions) -> int:
    """Create the container; return the init's host pid.  The init waits on the exec fifo."""
    from .process import parent
    from .process.context import LaunchContext

    from .config import load_bundle  # here: start/state/kill/delete never parse a config
    cfg = load_bundle(opts.bundle, doc=opts.config_doc)
    check_before_fork(cfg)
    if opts.console_socket and not (cfg.process is not None and cfg.process.terminal):
        raise OCIError(NO_CONSOLE_FOR_SOCKET)
    # Paths only, checked before anything exists (a cgroupsPath through a control file, `..`).
    from .rootless import in_user_namespace, is_rootless
    rootless = is_rootless(opts.rootless, opts.systemd_cgroup)
    if os.geteuid() != 0 and cfg.linux.namespace("user") is None:
        # As runc: without one, the first privileged step fails with a bare EPERM.  (Root of a
        # user namespace, as under rootless podman, is root here: it needs none of its own.)
        raise ConfigError("linux.namespaces", f"a rootless container needs a user namespace (uid "
                          f"{os.geteuid()} is not root): `ocirun spec --rootless` writes one")
    manager = cgroup_manager(cid, cfg, opts.systemd_cgroup, rootless)
    no_cgroup_warning = None
    # no eBPF device filter without privilege; root of a user namespace has none either
    manager.rootless = rootless or in_user_namespace()
    if rootless and not opts.systemd_cgroup and not manager.writable():
        no_cgroup_warning = _without_cgroup(manager)
        manager = None
    sd = StateDir.new(root, cid)
    cgroup = None
    ctx = LaunchContext(cfg=cfg, id=cid, state_dir=sd.path, no_pivot=opts.no_pivot,
                        no_new_keyring=opts.no_new_keyring, stdio_pipes=opts.stdio_pipes)
    pid, spawned, st = 0, False, None
    try:
        if manager is not None:
            manager.check_not_frozen()  # refused before any mkdir: nothing of the cgroup to undo
            manager.defer_single_pid_limit = True  # our intermediate is in the cgroup for a moment
            cgroup = manager
            cgroup.plan()  # what create() will make, recorded before it exists (a kill -9 may come)
        st = initial_state(cid, cfg, cgroup)
        sd.write_recovery(st.cgroup)  # for `delete --force` should state.json become unreadable
        sd.write(st)
        sd.write_config(cfg.raw)  # what `exec` builds on (the bundle may change after create)
        if cgroup is not None:
            cgroup.create()
            cgroup.apply_resources()
            st.cgroup = cgroup.to_state()  # what it really made: the state written below has it
        ctx.lock_fd = sd.lock_fd
        _open_launch_fds(ctx, sd, opts)
        _compile_seccomp(ctx)
        hook_state = lambda pid, status="creating": _hook_state(cid, cfg, pid, status)  # noqa: E731
        spawned = True
        _bind_shared_rootfs(cfg, sd, st)  # no mount namespace: its mounts go into ours
        pid, ch = parent.spawn_init(ctx, cgroup, hook_state, lambda s: _run_runtime_hooks(cfg, s))
        ch.close()
        st.pid = pid
        st.start_time = proc_start_time(pid)
        sd.write(st)
        if opts.pid_file:
            write_pid_file(opts.pid_file, pid)
        if no_cgroup_warning:
            _log.get().warn(no_cgroup_warning)  # once the container exists: an error stays one line
        opts.created_pid = pid  # for a caller interrupted while we return (run.py)
        return pid
    except BaseException:
        _undo_create(sd, cgroup, pid, spawned)
        if st is not None and st.shared_rootfs_mount:
            from .delete import release_rootfs_mount
            release_rootfs_mount(cfg.root_path, st.shared_rootfs_mount)
        raise
    finally:
        _close_launch_fds(ctx)
        sd.unlock()


def _bind_shared_rootfs(cfg: Config, sd: StateDir, st: ContainerState) -> None:
    """Without a mount namespace the init's mounts stay in ours, all under one bind of the
    rootfs that we make here, before the fork.  Its mount id is in state.json before the bind
    is attached (rootfs.bind_shared_rootfs), so that a create killed at any later point leaves
    `delete --force` the record of what to detach."""
    if cfg.linux.namespace("mount") is not None:
        return
    from . import rootfs

    def record(mnt_id: int) -> None:
        st.shared_rootfs_mount = mnt_id
        sd.write(st)
    try:
        rootfs.bind_shared_rootfs(cfg.root_path, record)
    except OSError as e:
        raise os_error(f"bind the rootfs {cfg.root_path} onto itself", e) from None


def check_before_fork(cfg: Config) -> None:
    """Everything we can refuse on the host, before any process or cgroup exists."""
    from . import sysctl
    if not cfg.has_new_namespace("mount"):
        _check_shared_mount_namespace(cfg)
    sysctl.validate(cfg)
    from .rootfs import idmap  # light: os, linux, errors
    idmap.check_config(cfg)
    from . import capabilities, limits
    capabilities.last_cap()  # cached now: the init reads it after pivot_root, where /proc may differ
    limits.validate_personality(cfg.linux.personality)
    if cfg.process is None:
        # runtime.md: `process` is REQUIRED only when `start` is called.  The container is
        # created and waits; `start` refuses it (see start).  runc 1.1 refuses it at create.
        return
    from . import lsm, namespaces, user
    if namespaces.denies_setgroups(cfg):
        user.refuse_groups_setgroups_denies(cfg.process.user)
    lsm.check_available(cfg.process)
    limits.validate_rlimits(cfg.process.rlimits)
    limits.validate_io_priority(cfg.process.io_priority)
    limits.validate_scheduler(cfg.process.scheduler)


def _check_shared_mount_namespace(cfg: Config) -> None:
    """No new mount namespace: one joined by path, or none (the runtime's own, as the spec allows:
    the container's mounts then go into that table, the init chroots instead of pivot_root, and
    `delete` takes them away again; see rootfs.prepare_rootfs)."""
    if cfg.linux.namespace("mount") is None and cfg.linux.namespace("user") is not None:
        raise ConfigError("linux.namespaces", "a container in a user namespace needs a mount namespace "
                          "of its own (its root may not mount in the runtime's)")


def _without_cgroup(manager) -> str:
    """Rootless, and the cgroup is not ours to write (not delegated): run in the caller's own
    cgroup, as runc does, unless limits were asked for, which then cannot be honoured.
    Returns the warning to give once the container exists."""
    asked = manager.limits_asked()
    where = next(iter(manager.paths.values()), "")
    if asked:
        raise ConfigError(asked[0], f"cannot be applied: running rootless, and the cgroup {where} is not "
                          "writable for you (not delegated); drop the limit or use a delegated cgroup "
                          "(systemd: --systemd-cgroup with your user instance)")
    return (f"rootless: the cgroup {where} is not writable (not delegated): the container runs "
            "in your own cgroup, without limits")


def cgroup_manager(cid: str, cfg: Config, systemd: bool, rootless: bool):
    from .cgroups import manager_for
    return manager_for(cid, cfg.linux.cgroups_path, cfg.linux.resources, systemd=systemd,
                       annotations=cfg.annotations, rootless=rootless)


def initial_state(cid: str, cfg: Config, cgroup) -> ContainerState:
    hooks = cfg.raw.get("hooks") or {}
    return ContainerState(
        cid, cfg.bundle, cfg.root_path, utc_now(), oci_version=SPEC_VERSION,
        annotations=cfg.annotations,
        hooks={k: hooks[k] for k in ("poststart", "poststop") if hooks.get(k)},
        cgroup=cgroup.to_state() if cgroup is not None else None,
        shared_pid_ns=not cfg.has_new_namespace("pid"),
        no_process=cfg.process is None)  # `start` must refuse it (runtime.md)


# runc's words: a console socket is for a process with a terminal (runc also wants it detached;
# we also take a foreground `run` or `exec` with one).
NO_CONSOLE_FOR_SOCKET = "cannot use console socket if ocirun will not detach or allocate tty"


def _open_launch_fds(ctx, sd: StateDir, opts: CreateOptions) -> None:
    from . import namespaces
    ctx.fifo_fd = os.open(sd.make_fifo(), os.O_PATH | os.O_CLOEXEC)
    from .exechelper import sealed_stub_fd
    ctx.exec_stub_fd = sealed_stub_fd()
    ctx.ns_fds = namespaces.open_namespace_paths(ctx.cfg)
    if opts.console_fd >= 0:
        ctx.console_fd = opts.console_fd
    elif opts.console_socket:
        from . import console
        ctx.console_fd = console.connect_console_socket(opts.console_socket)
    elif ctx.cfg.process is not None and ctx.cfg.process.terminal:
        raise OCIError("process.terminal is true: --console-socket is required")
    ctx.listen_fds = systemd_listen_fds()
    ctx.preserve_fds = ctx.listen_fds + opts.preserve_fds


def systemd_listen_fds() -> int:
    """How many fds from 3 on systemd socket activation gave *us* (sd_listen_fds(3), as runc).

    LISTEN_FDS counts only when LISTEN_PID is our own pid: the variables are inherited by
    processes they were not meant for, and their fd 3 (containerd's shim socket) must not
    reach the container.
    """
    count = os.environ.get("LISTEN_FDS", "")
    if not count.isdigit() or os.environ.get("LISTEN_PID", "") != str(os.getpid()):
        return 0
    return int(count)


def _compile_seccomp(ctx) -> None:
    """Compile (or fetch from the cache) the filter now; the init only loads it, last."""
    if ctx.cfg.linux.seccomp:
        from . import seccomp
        ctx.seccomp_filter = seccomp.prepare(ctx.cfg.linux.seccomp)


def _close_launch_fds(ctx) -> None:
    fds = [ctx.fifo_fd, ctx.exec_stub_fd, *ctx.ns_fds.values()]
    if ctx.seccomp_filter is not None:
        fds.append(ctx.seccomp_filter.listener_sock)
    if ctx.console_fd >= 0 and ctx.console_fd is not None:
        fds.append(ctx.console_fd)
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _undo_create(sd: StateDir, cgroup, pid: int, spawned: bool) -> None:
    if pid:
        from . import network
        network.return_devices(sd.path, pid, restore_up=True)
        from .delete import kill_and_wait
        kill_and_wait(pid, None)
    if spawned:
        _run_poststop_after_failed_create(sd)
    if cgroup is not None:
        try:
            cgroup.destroy()
        except Exception as e:  # noqa: BLE001 — the state dir goes all the same; the first error is the user's
            _log.get().warn(f"cleanup after failed create: {describe(e)}")
    sd.remove()


def _run_poststop_after_failed_create(sd: StateDir) -> None:
    """runtime.md: a failed prestart/createRuntime/createContainer hook stops the container and
    the lifecycle goes on with the poststop hooks (warnings only)."""
    try:
        st = sd.read()
    except OCIError:
        return
    if st.hooks.get("poststop"):
        from . import hooks
        hooks.run_recorded(st, "poststop", "stopped", log=_log.get().log)


def _hook_state(cid: str, cfg: Config, pid: int, status: str) -> dict:
    return {"ociVersion": SPEC_VERSION, "id": cid, "status": status, "pid": pid,
            "bundle": cfg.bundle, "annotations": cfg.annotations}


def _run_runtime_hooks(cfg: Config, state: dict) -> None:
    from . import hooks
    hooks.run_hooks("prestart", cfg.hooks.get("prestart", []), state)
    hooks.run_hooks("createRuntime", cfg.hooks.get("createRuntime", []), state)
