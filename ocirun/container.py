"""The library API: create, start, state, kill, delete — used by the CLI and by tests.

Each operation takes the state root and an id, holds the container's lock for its whole run,
and raises `OCIError` with a one-line message for anything the user should see.
"""
from __future__ import annotations

import os
import select
import time

# _signal: the same C module as signal, without the enum wrappers signal.py adds (it
# imports enum: ~3 ms per command).
import _signal as signal

from . import SPEC_VERSION
from . import log as _log
from .errors import ConfigError, OCIError, os_error
from .record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (~6 ms to import)
if TYPE_CHECKING:
    from .config import Config
from .state import (NET_DEVICES_RECORD, PAUSED, STOPPED, Container, ContainerState, StateDir, load_cgroup, pid_alive,
                    proc_start_time, utc_now, write_pid_file)


class CreateOptions(Record):
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
    }


# ============================================================================ create

def create(root: str, cid: str, opts: CreateOptions) -> int:
    """Create the container; return the init's host pid.  The init waits on the exec fifo."""
    from .process import parent
    from .process.context import LaunchContext

    from .config import load_bundle  # here: start/state/kill/delete never parse a config
    cfg = load_bundle(opts.bundle, doc=opts.config_doc)
    _check_before_fork(cfg)
    # Paths only, checked before anything exists (a cgroupsPath through a control file, `..`).
    manager = _cgroup_manager(cid, cfg)
    sd = StateDir.new(root, cid)
    cgroup = None
    ctx = LaunchContext(cfg=cfg, id=cid, state_dir=sd.path, no_pivot=opts.no_pivot,
                        no_new_keyring=opts.no_new_keyring, stdio_pipes=opts.stdio_pipes)
    pid, spawned, st = 0, False, None
    try:
        manager.check_not_frozen()  # refused before any mkdir: nothing of the cgroup to undo
        cgroup = manager
        cgroup.plan()  # what create() will make, recorded before it exists (a kill -9 may come)
        st = _initial_state(cid, cfg, cgroup)
        sd.write_recovery(st.cgroup)  # for `delete --force` should state.json become unreadable
        sd.write(st)
        cgroup.create()
        cgroup.apply_resources()
        st.cgroup = cgroup.to_state()  # what it really made: the state written below has it
        ctx.lock_fd = sd.lock_fd
        _open_launch_fds(ctx, sd, opts)
        _compile_seccomp(ctx)
        hook_state = lambda pid, status="creating": _hook_state(cid, cfg, pid, status)  # noqa: E731
        spawned = True
        _bind_shared_rootfs(cfg, sd, st)  # no mount namespace: its mounts go into ours
        pid, ch = parent.spawn(ctx, cgroup, hook_state, lambda s: _run_runtime_hooks(cfg, s))
        ch.close()
        st.pid = pid
        st.start_time = proc_start_time(pid)
        sd.write(st)
        if opts.pid_file:
            write_pid_file(opts.pid_file, pid)
        return pid
    except BaseException:
        _undo_create(sd, cgroup, pid, spawned)
        if st is not None and st.shared_rootfs_mount:
            _release_rootfs_mount(cfg.root_path, st.shared_rootfs_mount)
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


def _release_rootfs_mount(root_path: str, mnt_id: int) -> None:
    from . import rootfs
    try:
        rootfs.release_shared_rootfs(root_path, mnt_id)
    except OCIError as e:
        _log.get().warn(str(e))


def _check_before_fork(cfg: Config) -> None:
    """Everything we can refuse on the host, before any process or cgroup exists."""
    from . import sysctl
    if not cfg.has_new_namespace("mount"):
        _check_shared_mount_namespace(cfg)
    sysctl.validate(cfg)
    from . import capabilities, limits
    capabilities.last_cap()  # cached now: the init reads it after pivot_root, where /proc may differ
    limits.validate_personality(cfg.linux.personality)
    if cfg.process is None:
        # runtime.md: `process` is REQUIRED only when `start` is called.  The container is
        # created and waits; `start` refuses it (see start).  runc 1.1 refuses it at create.
        return
    from . import lsm
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


def _cgroup_manager(cid: str, cfg: Config):
    from .cgroups import manager_for
    return manager_for(cid, cfg.linux.cgroups_path, cfg.linux.resources)


def _initial_state(cid: str, cfg: Config, cgroup) -> ContainerState:
    hooks = cfg.raw.get("hooks") or {}
    return ContainerState(
        cid, cfg.bundle, cfg.root_path, utc_now(), oci_version=SPEC_VERSION,
        annotations=cfg.annotations,
        hooks={k: hooks[k] for k in ("poststart", "poststop") if hooks.get(k)},
        cgroup=cgroup.to_state() if cgroup is not None else None,
        shared_pid_ns=not cfg.has_new_namespace("pid"),
        no_process=cfg.process is None)  # `start` must refuse it (runtime.md)


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
    ctx.listen_fds = _systemd_listen_fds()
    ctx.preserve_fds = ctx.listen_fds + opts.preserve_fds


def _systemd_listen_fds() -> int:
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
        _kill_and_wait(pid, None)
    if spawned:
        _run_poststop_after_failed_create(sd)
    if cgroup is not None:
        try:
            cgroup.destroy()
        except OCIError as e:
            _log.get().warn(f"cleanup after failed create: {e}")
    sd.remove()


def _run_poststop_after_failed_create(sd: StateDir) -> None:
    """runtime.md: a failed prestart/createRuntime/createContainer hook stops the container and
    the lifecycle goes on with the poststop hooks (warnings only)."""
    try:
        st = sd.read()
    except OCIError:
        return
    hooks = _stored_hooks(st, "poststop")
    if hooks:
        from . import hooks as _hooks
        _hooks.run_hooks("poststop", hooks, st.hook_state("stopped"), warn_only=True,
                         log=_log.get().log)


def _hook_state(cid: str, cfg: Config, pid: int, status: str) -> dict:
    return {"ociVersion": SPEC_VERSION, "id": cid, "status": status, "pid": pid,
            "bundle": cfg.bundle, "annotations": cfg.annotations}


def _run_runtime_hooks(cfg: Config, state: dict) -> None:
    from . import hooks
    hooks.run_hooks("prestart", cfg.hooks.get("prestart", []), state)
    hooks.run_hooks("createRuntime", cfg.hooks.get("createRuntime", []), state)


# ============================================================================ state

def state(root: str, cid: str) -> dict:
    with Container.open(root, cid, lock=False) as c:
        return c.public_state()


# ============================================================================ start

def start(root: str, cid: str) -> None:
    with Container.open(root, cid) as c:
        c.require("start")
        st = c.state
        if st.no_process:
            # Refused before the init is released: the container stays `created`, nothing ran.
            raise OCIError("cannot start a container without a process: config.json has no `process`")
        _release_init(c.dir, st)
        hooks = _stored_hooks(st, "poststart")
        if hooks:
            from . import hooks as _hooks
            _hooks.run_hooks("poststart", hooks, st.hook_state("running"), warn_only=True,
                             log=_log.get().log)


def _release_init(sd: StateDir, st: ContainerState) -> None:
    """Open the exec fifo for reading: the init, blocked opening it for writing, goes on.

    It writes "0" and keeps its end open until execve closes it: end-of-file means the
    container's process runs (or the init died on the way — the process exit tells that later).
    If it fails in between (startContainer hooks) it writes its error and exits.

    Only root can open the fifo (its directory is 0700), but what we read is still checked
    against the init itself, so that another writer can neither hold `start` forever (it stops
    once the init no longer has the fifo open: execve closed it) nor speak for the init (text
    counts as the init's error only when the init then died).
    """
    try:
        fd = os.open(sd.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OCIError("cannot start an already running container") from None
    pid, start_time = st.pid, st.start_time
    released = False
    said = b""  # after "0": the init's words if it failed before execve (startContainer hooks)
    deadline = time.monotonic() + FIFO_ANSWER_TIMEOUT_S
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            data = _read_nowait(fd, 4096) if ready else b""
            eof = ready and not data
            if data and not released and b"0" in data:
                released = True
                os.unlink(sd.fifo_path)  # from now on the container is "running"
                data = data.replace(b"0", b"", 1)
            said += data if released else b""
            if eof and released:
                break  # end-of-file: every writer, the init's execve included, closed its end
            if not pid_alive(pid, start_time):
                if not released and b"0" in _read_rest(fd):
                    os.unlink(sd.fifo_path)  # it wrote "0", ran and exited between our looks
                    released = True
                said += _read_rest(fd) if released else b""
                if not released:
                    raise OCIError("cannot start a container that has stopped")
                break  # it ran and is already gone
            if eof:
                time.sleep(0.01)  # end-of-file before the init's "0": another writer came and went
            elif not ready and released and not _holds_fifo(pid, fd):
                said = b""  # the init exec'd; whatever is still open is not the init's
                break
            elif not released and time.monotonic() > deadline:
                raise OCIError(f"container init {pid} did not answer on the exec fifo in "
                               f"{FIFO_ANSWER_TIMEOUT_S:.0f}s (stopped or frozen?)")
    finally:
        os.close(fd)
    if said and _died_soon(pid, start_time):
        raise OCIError(said.decode(errors="replace"))


FIFO_ANSWER_TIMEOUT_S = 30.0  # from `start` opening the fifo to the init's "0": normally < 1 ms


def _holds_fifo(pid: int, fifo_fd: int) -> bool:
    """Whether `pid` still has the fifo open (the init's write end closes at its execve)."""
    me = os.fstat(fifo_fd)
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return True  # cannot tell: wait for end-of-file as before
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if st.st_ino == me.st_ino and st.st_dev == me.st_dev:
            return True
    return False


def _died_soon(pid: int, start_time, timeout: float = 0.5) -> bool:
    """The init writes its error, then exits: text followed by its death is its error; text
    while it lives on (the container's process runs) came from someone else."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, start_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _read_rest(fd: int) -> bytes:
    out = b""
    while chunk := _read_nowait(fd, 4096):
        out += chunk
    return out


def _read_nowait(fd: int, size: int = 1) -> bytes:
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return b""


def _stored_hooks(st: ContainerState, kind: str):
    raw = st.hooks.get(kind)
    if not raw:
        return []
    from .config import parse_hooks
    return parse_hooks({"hooks": {kind: raw}}).get(kind, [])


# ============================================================================ kill

SIGNALS = {name[3:]: int(getattr(signal, name)) for name in dir(signal)
           if name.startswith("SIG") and not name.startswith("SIG_") and name.isupper()}


def parse_signal(text: str) -> int:
    """`KILL`, `SIGKILL`, `9`, `sigkill` — runc accepts all of them; `0` only probes (as kill(2))."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        if 0 <= n < 65:
            return n
    else:
        name = t.upper()
        name = name[3:] if name.startswith("SIG") else name
        if name in SIGNALS:
            return SIGNALS[name]
        if name.startswith("RTMIN+") and name[6:].isdigit():
            return int(signal.SIGRTMIN) + int(name[6:])
    raise OCIError(f"unknown signal {text!r}")


def kill(root: str, cid: str, sig: int, all_procs: bool = False) -> None:
    with Container.open(root, cid) as c:
        if all_procs:
            cg = c.cgroup()
            if cg is not None:
                cg.kill_all(sig)
                return
        c.require("kill")
        _signal(c.state.pid, sig)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise OCIError("container not running") from None
    except OSError as e:
        raise os_error(f"kill {pid}", e) from None


# ============================================================================ delete

def delete(root: str, cid: str, force: bool = False) -> None:
    from .state import validate_id
    validate_id(cid)
    sd = StateDir(root, cid)
    try:
        # Lock before looking: a `create` still running holds the lock, and its half-written
        # directory must not be removed under it.
        sd.lock()
    except FileNotFoundError:
        if force:
            return
        raise OCIError(f"container does not exist: {cid}") from None
    try:
        if not os.path.exists(os.path.join(sd.path, "state.json")):
            # A create killed before it wrote anything (only the directory exists), or a
            # concurrent delete that removed it while we waited for the lock.
            if force:
                sd.remove()
                return
            raise OCIError(f"container does not exist: {cid}")
        try:
            c = Container(sd, sd.read())
        except OCIError as e:
            if not force:
                raise  # "corrupt state file": nothing is touched without --force
            _delete_unreadable(sd, e)
            return
        st, status = c.state, c.status
        c.require("delete", force=force)  # not stopped: refused (runtime.md) unless forced
        cg = _forced(force, c.cgroup)
        if os.path.exists(os.path.join(sd.path, NET_DEVICES_RECORD)):
            from . import network  # pyroute2 loads only now: this container moved devices
            network.return_devices(sd.path, st.pid if status != STOPPED else 0)
        if status != STOPPED or st.shared_pid_ns:
            if cg is not None and status == PAUSED:
                cg.kill_all(signal.SIGKILL)
                cg.thaw()
            _forced(force, lambda: _kill_and_wait(st.pid, st.start_time))
        if cg is not None:
            _forced(force, cg.destroy)
        if st.shared_rootfs_mount:  # no mount namespace: its mounts are in ours
            _release_rootfs_mount(st.rootfs, st.shared_rootfs_mount)
        hooks = _stored_hooks(st, "poststop")
        if hooks:
            from . import hooks as _hooks
            _hooks.run_hooks("poststop", hooks, st.hook_state("stopped"), warn_only=True,
                             log=_log.get().log)
        sd.remove()
    finally:
        sd.unlock()


def _forced(force: bool, step):
    """One step of delete: with --force a failure is a warning and the removal goes on (what
    is ours must always go); without it, the error stops delete with the state kept."""
    try:
        return step()
    except OCIError as e:
        if not force:
            raise
        _log.get().warn(f"delete --force: {e}")
        return None


def _delete_unreadable(sd: StateDir, err: OCIError) -> None:
    """`delete --force` of a container whose state.json cannot be used (corrupt, tampered):
    kill and remove what can still be found, then the state directory.

    Where it comes from: each field of state.json that still has its type (the init's pid is
    killed only with its start time, so a reused pid is never hit), and for the cgroup, when
    state.json's section is gone, cgroup.json (the same section, written by create before
    anything existed).  Killing the cgroup's processes stops the container even without a pid;
    poststop hooks are not run from a file we could not read."""
    from .state import cgroup_section_ok
    log = _log.get()
    log.warn(f"{err}; removing what can be found")
    try:
        raw = sd.read_raw()
    except OCIError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    pid, start_time = raw.get("pid"), raw.get("start_time")
    section = raw.get("cgroup") if cgroup_section_ok(raw.get("cgroup")) else sd.read_recovery()
    cg = None
    if cgroup_section_ok(section):
        cg = _forced(True, lambda: load_cgroup(section))
    if type(pid) is int and type(start_time) is int and pid > 0:
        _forced(True, lambda: _kill_and_wait(pid, start_time))
    if os.path.exists(os.path.join(sd.path, NET_DEVICES_RECORD)):
        from . import network
        try:
            network.return_devices(sd.path, 0)
        except OCIError as e:
            log.warn(f"delete --force: {e}")
    if cg is not None:
        if cg.state() == "paused":
            _forced(True, cg.thaw)
        _forced(True, cg.destroy)
    else:
        log.warn(f"delete --force: no cgroup record for {sd.id}: its processes, if any, are left running")
    mnt, rootfs = raw.get("shared_rootfs_mount"), raw.get("rootfs")
    if type(mnt) is int and mnt > 0 and isinstance(rootfs, str):
        _release_rootfs_mount(rootfs, mnt)
    sd.remove()


def _kill_and_wait(pid: int, start_time, timeout: float = 10.0) -> None:
    if not pid or not pid_alive(pid, start_time):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # our own child (`run`, failed create): reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not pid_alive(pid, start_time):
            return
        time.sleep(0.005)
    raise OCIError(f"container init {pid} did not die after SIGKILL")


# ============================================================================ list

def list_all(root: str) -> list[dict]:
    from .state import list_ids
    out = []
    for cid in list_ids(root):
        sd = StateDir(root, cid)
        try:
            out.append(Container(sd, sd.read()).public_state())
        except OCIError as e:
            if os.path.exists(os.path.join(sd.path, "state.json")):  # else: deleted meanwhile
                _log.get().warn(str(e))
                out.append(_unknown_state(cid, sd))
    return out


def _unknown_state(cid: str, sd: StateDir) -> dict:
    """`list`'s row for a container whose state.json cannot be read: status "unknown" (the
    reason went to stderr), and the bundle and creation time if they are still legible."""
    try:
        raw = sd.read_raw()
    except OCIError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}

    def text(key: str) -> str:
        v = raw.get(key)
        return v if isinstance(v, str) and v.isprintable() else ""
    return {"ociVersion": text("ociVersion"), "id": cid, "pid": 0, "status": "unknown",
            "bundle": text("bundle"), "rootfs": text("rootfs"), "created": text("created"), "owner": ""}


# ============================================================================ pause / ps

def pause(root: str, cid: str) -> None:
    _freeze(root, cid, True)


def resume(root: str, cid: str) -> None:
    _freeze(root, cid, False)


def _freeze(root: str, cid: str, frozen: bool) -> None:
    with Container.open(root, cid) as c:
        c.require("pause" if frozen else "resume")
        cg = c.cgroup()
        if cg is None:
            raise OCIError("the container has no cgroup: cannot pause or resume it")
        cg.freeze() if frozen else cg.thaw()


def processes(root: str, cid: str) -> list[int]:
    with Container.open(root, cid, lock=False) as c:
        cg = c.cgroup()
        if cg is not None:
            return sorted(cg.pids())
        return [c.state.pid] if c.status != STOPPED else []
