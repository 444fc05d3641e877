"""`ocirun restore`: bring a checkpointed container back with CRIU, as runc does, then behave as
`run`: in the foreground wait for it and exit with its status, or with --detach leave it running.

The restored container gets what `create` would give it before CRIU takes over: a state
directory, the config saved for `exec`, its cgroup (cgroupfs or a systemd scope: CRIU itself is
put in it first, so every process it restores starts inside), and the prestart/createRuntime
hooks when CRIU has made the namespaces.  CRIU needs the rootfs as a mount point whose parent is
not overmounted: we bind it onto `<state dir>/criu-root` for the time of the restore.  The host
parts of the mounts named at checkpoint (binds, masked files, devices) are handed to CRIU by
their destinations; pipes that were the init's stdio are replaced by our stdio (an engine's
new pipes); a terminal comes back as a new pty whose master CRIU gives us for --console-socket.

Any failure removes everything: CRIU and what it restored, the cgroup, the state directory.
"""
from __future__ import annotations

import os

from . import SPEC_VERSION, criu, linux
from . import log as _log
from .checkpoint import CRIU_LSM_OPTIONS, DESCRIPTORS_FILE, external_sources, require_cgroup_v2_support
from .errors import ConfigError, OCIError, os_error, os_words
from .record import Record
from .state import StateDir, proc_start_time, write_pid_file

RESTORE_LOG = "restore.log"
CRIU_ROOT = "criu-root"

# CRIU's names of the namespaces (join_ns)
_CRIU_NS = {"network": "net", "mount": "mnt", "uts": "uts", "ipc": "ipc", "user": "user", "pid": "pid",
            "cgroup": "cgroup", "time": "time"}


class RestoreOptions(Record):
    image_path: str
    work_path: str
    bundle: str
    console_socket: str | None
    detach: bool
    pid_file: str | None
    no_subreaper: bool
    no_pivot: bool
    tcp_established: bool
    ext_unix_sk: bool
    shell_job: bool
    file_locks: bool
    manage_cgroups_mode: str
    empty_ns: list[str]
    auto_dedup: bool
    lazy_pages: bool
    lsm_profile: str
    lsm_mount_context: str
    systemd_cgroup: bool
    rootless: str
    criu_path: str | None
    FIELDS = {
        "image_path": "",
        "work_path": "",
        "bundle": ".",
        "console_socket": None,
        "detach": False,
        "pid_file": None,
        "no_subreaper": False,
        "no_pivot": False,  # accepted as runc does: CRIU makes the mount namespace, not pivot_root
        "tcp_established": False,
        "ext_unix_sk": False,
        "shell_job": False,
        "file_locks": False,
        "manage_cgroups_mode": "",
        "empty_ns": list,
        "auto_dedup": False,
        "lazy_pages": False,
        "lsm_profile": "",
        "lsm_mount_context": "",
        "systemd_cgroup": False,
        "rootless": "auto",
        "criu_path": None,
    }


class _Restoring:
    """What one restore has made so far, so that a failure undoes exactly that."""

    def __init__(self) -> None:
        self.sd: StateDir | None = None
        self.cgroup = None
        self.session: criu.Session | None = None
        self.pid = 0
        self.criu_root = ""
        self.console_fd = -1
        self.master = -1          # a pty master CRIU gave us, to relay in the foreground
        self.fds: list[int] = []  # image dir, work dir, namespace files


def restore(root: str, cid: str, opts: RestoreOptions) -> int:
    binary = criu.criu_binary(opts.criu_path)
    criu.reply_timeout()  # a bad OCIRUN_CRIU_TIMEOUT is refused before anything is made
    criu.warn_if_unprivileged()
    relay = None
    if not opts.detach:
        if not opts.no_subreaper:
            import _prctl  # python-prctl's C module
            _prctl.prctl(_prctl.PR_SET_CHILD_SUBREAPER, True)
        from .foreground import SignalRelay
        relay = SignalRelay()
    r = _Restoring()
    try:
        pipes = _restore(root, cid, opts, binary, r)
    except BaseException:
        _undo(r)
        raise
    finally:
        _release(r)
    if opts.detach:
        _close_quietly(r.master)
        return 0
    return _foreground(root, cid, r, relay, pipes)


def _restore(root: str, cid: str, opts: RestoreOptions, binary: str, r: _Restoring):
    from . import create
    from .config import load_bundle
    image_dir = _image_dir(opts.image_path)
    descriptors = _read_descriptors(image_dir)
    cfg = load_bundle(opts.bundle)
    create.check_before_fork(cfg)
    cg_mode = criu.cgroup_mode(opts.manage_cgroups_mode)
    empty_ns = criu.empty_ns_mask(opts.empty_ns)
    if opts.detach and not opts.console_socket and cfg.process is not None and cfg.process.terminal:
        raise OCIError("process.terminal is true: --console-socket is required with --detach")
    manager = _cgroup_manager(cid, cfg, opts)
    require_cgroup_v2_support(binary, manager, "restore")
    if opts.lsm_profile or opts.lsm_mount_context:
        criu.require_version(binary, CRIU_LSM_OPTIONS, "--lsm-profile or --lsm-mount-context")
    if opts.console_socket:
        from . import console
        r.console_fd = console.connect_console_socket(opts.console_socket)
    r.sd = StateDir.new(root, cid)
    manager.check_not_frozen()
    manager.plan()  # recorded before anything is made, as create does (a kill -9 may come)
    r.cgroup = manager
    st = create.initial_state(cid, cfg, manager)
    r.sd.write_recovery(st.cgroup)
    r.sd.write(st)
    r.sd.write_config(cfg.raw)
    o = criu.new_opts(
        log_level=4, log_file=RESTORE_LOG, rst_sibling=True, evasive_devices=True,
        manage_cgroups=True, manage_cgroups_mode=cg_mode, notify_scripts=True,
        shell_job=opts.shell_job, ext_unix_sk=opts.ext_unix_sk, tcp_established=opts.tcp_established,
        file_locks=opts.file_locks, empty_ns=empty_ns, orphan_pts_master=True,
        auto_dedup=opts.auto_dedup, lazy_pages=opts.lazy_pages)
    o.images_dir_fd = _open_dir(r, image_dir, "--image-path")
    log_dir = image_dir
    if opts.work_path:
        o.work_dir_fd = _open_dir(r, opts.work_path, "--work-path", make=True)
        log_dir = opts.work_path
    if opts.lsm_profile:
        o.lsm_profile = opts.lsm_profile
    if opts.lsm_mount_context:
        o.lsm_mount_context = opts.lsm_mount_context
    conf = criu.config_file(cfg.annotations)
    if conf:
        o.config_file = conf
    inherited = _namespaces(cfg, o, r)
    r.criu_root = _bind_rootfs(cfg.root_path, r.sd.path)
    o.root = r.criu_root
    _make_mount_points(cfg)
    for name, source in external_sources(cfg):
        o.ext_mnt.add(key=name, val=source)
    # The stdio of the init that were pipes (an engine's) become the ones CRIU gets from us.
    pipes = _foreground_pipes(opts)
    stdio = tuple(pipes.child_ends.get(fd) for fd in range(3)) if pipes else (None, None, None)
    for fd, name in enumerate(descriptors):
        if "pipe:" in name:
            o.inherit_fd.add(key=name, fd=fd)
    r.session = criu.Session(binary, stdio=stdio, pass_fds=tuple(inherited),
                             log_dir=log_dir, log_file=RESTORE_LOG, yard_dirs=(image_dir, log_dir))
    if pipes:
        pipes.close_child_ends()
    manager.adopt(r.session.pid)
    st.cgroup = manager.to_state()
    r.sd.write(st)
    for ctrl, path in _cgroups_of(r.session.pid):
        o.cg_root.add(ctrl=ctrl, path=path)
    resp = r.session.call(criu.RESTORE, o, on_notify=lambda script, pid, fds: _on_notify(cfg, cid, opts, r, script,
                                                                                         pid, fds))
    r.pid = resp.restore.pid
    r.session.finish()
    r.session = None
    st.pid, st.start_time = r.pid, proc_start_time(r.pid)
    r.sd.write(st)
    if opts.pid_file:
        write_pid_file(opts.pid_file, r.pid)
    return pipes


def _image_dir(path: str) -> str:
    image_dir = os.path.abspath(path or "checkpoint")
    if not os.path.isdir(image_dir):
        raise OCIError(f"--image-path {image_dir}: no such directory")
    return image_dir


def _read_descriptors(image_dir: str) -> list[str]:
    """descriptors.json, written by checkpoint: its absence means this is no container's checkpoint."""
    from . import jsonio
    path = os.path.join(image_dir, DESCRIPTORS_FILE)
    try:
        with open(path, "rb") as f:
            doc = jsonio.loads(f.read())
    except FileNotFoundError:
        raise OCIError(f"--image-path {image_dir}: not a container checkpoint ({DESCRIPTORS_FILE} is missing)") from None
    except (OSError, ValueError) as e:
        raise OCIError(f"{path}: {os_words(e) if isinstance(e, OSError) else e}") from None
    if not isinstance(doc, list) or not all(isinstance(n, str) for n in doc):
        raise OCIError(f"{path}: not a list of file names")
    return doc


def _cgroup_manager(cid: str, cfg, opts: RestoreOptions):
    """The container's cgroup manager, as create makes it (restore needs root: CRIU does)."""
    from . import create
    from .rootless import in_user_namespace, is_rootless
    rootless = is_rootless(opts.rootless, opts.systemd_cgroup)
    manager = create.cgroup_manager(cid, cfg, opts.systemd_cgroup, rootless)
    manager.rootless = rootless or in_user_namespace()  # no eBPF device filter without privilege
    return manager


def _open_dir(r: _Restoring, path: str, flag: str, make: bool = False) -> int:
    try:
        if make:
            os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"{flag} {path}: {os_words(e)}") from None
    r.fds.append(fd)
    return fd


def _namespaces(cfg, o, r: _Restoring) -> list[int]:
    """Namespaces the container joins by path: network and pid are `external` in the images
    and handed to CRIU as inherited fds; the others it joins itself (join_ns).  Returns the fds
    CRIU must inherit."""
    inherited = []
    for ns in cfg.linux.namespaces:
        if not ns.path:
            continue
        where = f"linux.namespaces ({ns.type})"
        if ns.type in ("network", "pid"):
            try:
                fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)  # CRIU gets it (pass_fds), same number
            except OSError as e:
                raise ConfigError(where, f"{ns.path}: {os_words(e)}") from None
            r.fds.append(fd)
            inherited.append(fd)
            o.inherit_fd.add(key=criu.ns_key(ns.type), fd=fd)
        elif ns.type == "cgroup":
            raise ConfigError(where, "CRIU cannot restore into a cgroup namespace joined by path")
        else:
            o.join_ns.add(ns=_CRIU_NS[ns.type], ns_file=ns.path)
    return inherited


def _bind_rootfs(root_path: str, state_dir: str) -> str:
    """CRIU wants the root as a mount point whose parent is not overmounted: a bind of the
    rootfs in the state directory.  Its propagation stays what the bind inherits: a container
    whose root was a slave of the host's shared mount is restored as one, and CRIU takes the
    peer group from this bind (made private, it fails: "Failed to copy sharing")."""
    target = os.path.join(state_dir, CRIU_ROOT)
    try:
        os.mkdir(target, 0o700)
    except OSError as e:
        raise os_error(f"make {target} for CRIU's root", e) from None
    try:
        linux.mount(root_path, target, "", linux.MS_BIND | linux.MS_REC, None)
    except OSError as e:
        os.rmdir(target)
        raise os_error(f"bind the rootfs {root_path} for CRIU", e) from None
    return target


def _make_mount_points(cfg) -> None:
    """The mount points that a new rootfs may lack (restore from another copy of the bundle):
    create makes them at create time, CRIU only mounts.  Not under a tmpfs: CRIU restores a
    tmpfs with its content, mount points included.  (A mount point inside a bind mount's
    source is not made here: runc binds the sources first for that; not yet ocirun.)"""
    from .checkpoint import is_bind
    from .rootfs.paths import make_mount_target
    tmpfs = [m.destination.rstrip("/") + "/" for m in cfg.mounts if m.type == "tmpfs"]
    root_fd = os.open(cfg.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, m in enumerate(cfg.mounts):
            if m.type in ("cgroup", "cgroup2") or any(m.destination.startswith(t) for t in tmpfs):
                continue
            source = os.path.join(cfg.bundle, m.source)
            is_dir = not (is_bind(m) and os.path.exists(source) and not os.path.isdir(source))
            try:
                os.close(make_mount_target(root_fd, m.destination, is_dir))
            except OSError as e:
                raise os_error(f"mounts[{i}]: create the mount point {m.destination}", e) from None
    finally:
        os.close(root_fd)


def _foreground_pipes(opts: RestoreOptions):
    """In the foreground, as `run`: never our terminal as the container's stdio (pipes.py)."""
    if opts.detach or opts.console_socket:
        return None
    from .pipes import TerminalPipes
    return TerminalPipes.if_needed()


def _cgroups_of(pid: int) -> list[tuple[str, str]]:
    """(controllers, path) per hierarchy of `pid`: where CRIU is to put the restored tree."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise OCIError(f"read the cgroups of CRIU ({pid}): {os_words(e)}") from None
    out = []
    for line in lines:
        _hier, ctrls, path = line.split(":", 2)
        out.append((ctrls, path))
    return out


def _on_notify(cfg, cid: str, opts: RestoreOptions, r: _Restoring, script: str, pid: int, fds: list[int]) -> None:
    if script == "setup-namespaces":
        # The namespaces exist, the processes are not back yet: the hooks' moment (runc's).
        from . import hooks
        state = {"ociVersion": SPEC_VERSION, "id": cid, "status": "creating", "pid": pid,
                 "bundle": cfg.bundle, "annotations": cfg.annotations}
        hooks.run_hooks("prestart", cfg.hooks.get("prestart", []), state)
        hooks.run_hooks("createRuntime", cfg.hooks.get("createRuntime", []), state)
    elif script == "post-restore":
        r.pid = pid  # known now, so a failure from here on kills it
    elif script == "orphan-pts-master":
        _take_terminal(opts, r, fds)


def _take_terminal(opts: RestoreOptions, r: _Restoring, fds: list[int]) -> None:
    """The container had a terminal: CRIU made a new pty and sends us its master."""
    if not fds:
        raise OCIError("criu: the terminal's master was announced but not sent")
    if r.console_fd >= 0:
        from . import console
        console.send_fd(r.console_fd, fds[0])
    elif opts.detach:
        raise OCIError("the checkpointed container has a terminal: --console-socket is required with --detach")
    else:
        r.master = os.dup(fds[0])


def _foreground(root: str, cid: str, r: _Restoring, relay, pipes) -> int:
    """Wait for the restored init as `run` waits for its own; then delete the container."""
    from .foreground import install_resize, wait_for
    from .delete import delete
    try:
        relay.attach(r.pid)
        install_resize(r.master)
        if r.master >= 0:
            from . import console
            console.relay_terminal(r.master, r.pid)
        elif pipes is not None:
            pipes.relay(r.pid)
        status = wait_for(r.pid)
    finally:
        _close_quietly(r.master)
        try:
            delete(root, cid, force=True)
        except OCIError as e:
            _log.get().warn(f"delete {cid}: {e}")
    return status


def _undo(r: _Restoring) -> None:
    """After a failure: CRIU, the restored processes, the cgroup, the state directory.  Each
    step runs whatever the one before did: the user's error is the first, the rest warnings."""
    steps: list = []
    if r.session is not None:
        steps.append(("stop CRIU", r.session.abort))
    if r.pid:
        from .delete import kill_and_wait
        steps.append((f"kill the restored process {r.pid}", lambda: kill_and_wait(r.pid, None)))
    if r.cgroup is not None:
        steps.append(("remove the cgroup", r.cgroup.destroy))
    steps.append(("close the terminal", lambda: _close_quietly(r.master)))
    if r.sd is not None:
        steps.append(("unmount CRIU's root", lambda: _unbind_rootfs(r)))
        steps.append(("remove the state directory", r.sd.remove))
    for what, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 — every step is tried; the first error is the user's
            _log.get().warn(f"cleanup after failed restore: {what}: {e}")
    r.master = -1


def _release(r: _Restoring) -> None:
    """What only the restore itself needed: the rootfs bind, open fds, the directory lock."""
    for fd in r.fds + [r.console_fd]:
        _close_quietly(fd)
    r.fds, r.console_fd = [], -1
    if r.sd is not None:
        _unbind_rootfs(r)
        r.sd.unlock()


def _unbind_rootfs(r: _Restoring) -> None:
    if not r.criu_root:
        return
    try:
        linux.umount2(r.criu_root, linux.MNT_DETACH)
    except OSError:
        pass
    try:
        os.rmdir(r.criu_root)
    except OSError:
        pass
    r.criu_root = ""


def _close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
