"""`ocirun checkpoint`: save a running container's processes to image files with CRIU, as runc does.

CRIU is told what it cannot find out alone (criu.py speaks to it):
  - the rootfs, and which mounts come from outside the container: every bind mount, each masked
    file (a bind of /dev/null) and the device nodes, keyed by their destination, so that restore
    can bind them again from wherever they then are (`ext_mnt`);
  - the namespaces the container joined by path (network, pid), which CRIU leaves out of the
    images and restore joins again;
  - the cgroup to freeze the processes with, instead of stopping each with ptrace;
  - descriptors.json in the image directory: what the init's stdio were (pipes of an engine, a
    terminal), so that restore can hand the new pipes in their place (runc's file, same format).
Unless --leave-running or --pre-dump, the container is gone afterwards (CRIU killed its
processes; we then delete it, as runc does), and `restore` brings it back.
"""
from __future__ import annotations

import os

from . import criu
from . import log as _log
from .errors import OCIError, os_words
from .rootfs.paths import MAX_LINKS
from .record import Record
from .state import Container

DESCRIPTORS_FILE = "descriptors.json"
DUMP_LOG = "dump.log"


class CheckpointOptions(Record):
    image_path: str
    work_path: str
    parent_path: str
    leave_running: bool
    tcp_established: bool
    tcp_skip_in_flight: bool
    link_remap: bool
    ext_unix_sk: bool
    shell_job: bool
    lazy_pages: bool
    status_fd: int
    page_server: str
    file_locks: bool
    pre_dump: bool
    manage_cgroups_mode: str
    empty_ns: list[str]
    auto_dedup: bool
    criu_path: str | None
    FIELDS = {
        "image_path": "",
        "work_path": "",
        "parent_path": "",
        "leave_running": False,
        "tcp_established": False,
        "tcp_skip_in_flight": False,
        "link_remap": False,
        "ext_unix_sk": False,
        "shell_job": False,
        "lazy_pages": False,
        "status_fd": -1,
        "page_server": "",
        "file_locks": False,
        "pre_dump": False,
        "manage_cgroups_mode": "",
        "empty_ns": list,
        "auto_dedup": False,
        "criu_path": None,  # the global --criu
    }


def checkpoint(root: str, cid: str, opts: CheckpointOptions) -> None:
    binary = criu.criu_binary(opts.criu_path)
    criu.reply_timeout()  # a bad OCIRUN_CRIU_TIMEOUT is refused before anything is made
    criu.warn_if_unprivileged()
    cg_mode = criu.cgroup_mode(opts.manage_cgroups_mode)
    with Container.open(root, cid) as c:
        c.require("checkpoint")
        image_dir = _image_dir(opts)  # made only for a container that can be checkpointed
        _check_parent(image_dir, opts.parent_path)
        require_cgroup_v2_support(binary, c.cgroup(), "checkpoint")
        if opts.pre_dump:
            criu.check_features(binary, mem_track=True)
        if opts.lazy_pages:
            criu.check_features(binary, lazy_pages=True)
        _check_status_fd(opts)
        cfg = c.config()
        fds = _open_dirs(image_dir, opts.work_path)
        try:
            req_opts = _dump_options(c, cfg, opts, fds, cg_mode, binary)
            if not opts.pre_dump:
                _write_descriptors(image_dir, c.state.pid)
            _dump(c, binary, opts, req_opts, log_dir=opts.work_path or image_dir)
        finally:
            for fd in fds:
                os.close(fd)
    if not opts.leave_running and not opts.pre_dump:
        _remove_dumped(root, cid)


# CRIU releases that first did what we ask of them (runc asks the same).
CRIU_CGROUP_V2 = 31400  # dumps and restores a cgroup v2 container (its freezer, its controllers)
CRIU_LSM_OPTIONS = 31600  # --lsm-profile and --lsm-mount-context at restore


def require_cgroup_v2_support(binary: str, manager, operation: str) -> None:
    if manager is not None and manager.mode == "unified":
        criu.require_version(binary, CRIU_CGROUP_V2, f"{operation} on cgroup v2")


def _dump(c: Container, binary: str, opts: CheckpointOptions, req_opts, log_dir: str) -> None:
    """Run CRIU's dump.  CRIU freezes the cgroup while it works and thaws it when it fails; a
    CRIU that we had to kill (a deadline, Ctrl-C) cannot, so we thaw what it left frozen."""
    was_paused = c.status == "paused"
    session = criu.Session(binary, log_dir=log_dir, log_file=DUMP_LOG)
    try:
        session.call(criu.PRE_DUMP if opts.pre_dump else criu.DUMP, req_opts,
                     on_notify=lambda script, _pid, _fds: _on_notify(opts, script))
        session.finish(failure_expected=opts.pre_dump)
    except BaseException:
        session.abort(grace=0)  # a dump makes no yard, and a CRIU left running could still kill the container
        mgr = c.cgroup()
        if mgr is not None and not was_paused and c.refresh_status() == "paused":
            try:
                mgr.thaw()
            except OCIError as e:
                _log.get().warn(f"after the failed checkpoint the container stays frozen: {e}")
        raise


def _remove_dumped(root: str, cid: str) -> None:
    """CRIU killed the processes after dumping them: the container is gone (runc destroys it).
    The images are good whatever happens here, so a failure is a warning (as runc's)."""
    from .delete import delete
    try:
        delete(root, cid, force=True)
    except OCIError as e:
        _log.get().warn(f"checkpoint done, but removing the container failed: {e}")


def _image_dir(opts: CheckpointOptions) -> str:
    """--image-path (runc's default: ./checkpoint), made if missing (private: it holds the
    container's memory)."""
    path = os.path.abspath(opts.image_path or "checkpoint")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise OCIError(f"--image-path {path}: {os_words(e)}") from None
    return path


def _check_parent(image_dir: str, parent: str) -> None:
    """--parent-path names a pre-dump's images relative to the image directory (CRIU's rule)."""
    if not parent:
        return
    if os.path.isabs(parent):
        raise OCIError("--parent-path must be relative (to --image-path)")
    if not os.path.isdir(os.path.join(image_dir, parent)):
        raise OCIError(f"invalid --parent-path: {os.path.join(image_dir, parent)}: no such directory")


def _check_status_fd(opts: CheckpointOptions) -> None:
    if not opts.lazy_pages or opts.status_fd < 0:
        return
    import fcntl
    try:
        flags = fcntl.fcntl(opts.status_fd, fcntl.F_GETFL)
    except OSError as e:
        raise OCIError(f"invalid --status-fd {opts.status_fd}: {os_words(e)}") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise OCIError(f"invalid --status-fd {opts.status_fd}: not writable")


def _open_dirs(image_dir: str, work_path: str) -> list[int]:
    """fds of the image directory and of --work-path (made if missing), for CRIU to open
    through /proc/<our pid>/fd."""
    fds: list[int] = []
    for flag, path in [("--image-path", image_dir)] + ([("--work-path", work_path)] if work_path else []):
        try:
            if flag == "--work-path":
                os.makedirs(path, mode=0o700, exist_ok=True)
            fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            raise OCIError(f"{flag} {path}: {os_words(e)}") from None
    return fds


def _dump_options(c: Container, cfg, opts: CheckpointOptions, fds: list[int], cg_mode: int, binary: str):
    o = criu.new_opts(
        images_dir_fd=fds[0], log_level=4, log_file=DUMP_LOG, root=c.state.rootfs,
        manage_cgroups=True, manage_cgroups_mode=cg_mode, notify_scripts=True, pid=c.state.pid,
        shell_job=opts.shell_job, leave_running=opts.leave_running,
        tcp_established=opts.tcp_established, tcp_skip_in_flight=opts.tcp_skip_in_flight,
        link_remap=opts.link_remap, ext_unix_sk=opts.ext_unix_sk, file_locks=opts.file_locks,
        empty_ns=criu.empty_ns_mask(opts.empty_ns), orphan_pts_master=True,
        auto_dedup=opts.auto_dedup, lazy_pages=opts.lazy_pages)
    if len(fds) > 1:
        o.work_dir_fd = fds[1]
    conf = criu.config_file(cfg.annotations)
    if conf:
        o.config_file = conf
    for ns_type in ("network", "pid"):
        ns = cfg.linux.namespace(ns_type)
        if ns is not None and ns.path:
            o.external.append(criu.ns_external(ns_type, ns.path))
    freeze = _freezer_dir(c)
    if freeze:
        o.freeze_cgroup = freeze
    if opts.page_server:
        address, port = _page_server(opts.page_server)
        o.ps.address, o.ps.port = address, port
    if opts.parent_path:
        o.parent_img, o.track_mem = opts.parent_path, True
    if opts.lazy_pages and opts.status_fd >= 0 and criu.version(binary) < 31500:
        o.status_fd = opts.status_fd  # newer CRIUs say "status-ready" instead (see _on_notify)
    if not opts.pre_dump:
        for where, name in external_mounts(cfg, c.state.pid):
            o.ext_mnt.add(key=where, val=name)
    return o


def external_mounts(cfg, pid: int) -> list[tuple[str, str]]:
    """The mounts that come from outside the container, as CRIU's dump takes them: (where it
    is mounted, the name it gets in the images).  Bind mounts are named by their destination;
    masked files (binds of a null device: only the files among maskedPaths, seen through the
    running init) all by "/dev/null"; device nodes by their path.  Where it is mounted is the
    path with its symlinks resolved inside the container (rootfs/paths.py mounted there, and
    CRIU knows a mount by the point mountinfo shows); the name stays the config's, which is
    what restore binds by."""
    out = [(resolved_in_container(pid, m.destination), _clean(m.destination)) for m in cfg.mounts if is_bind(m)]
    masked = [resolved_in_container(pid, p) for p in cfg.linux.masked_paths]
    out += [(where, "/dev/null") for where in masked if _is_file_in(pid, where)]
    out += [(resolved_in_container(pid, d.path), _clean(d.path)) for d in _devices(cfg)]
    return out


def resolved_in_container(pid: int, path: str) -> str:
    """`path` with every symlink on it resolved as the init resolved it when it mounted there."""
    return resolved_under(f"/proc/{pid}/root", path)


def resolved_under(root: str, path: str) -> str:
    """`path` resolved inside `root`: absolute links from that root, `..` never above it.  Each
    component is read with readlink(2) once the ones before it were found to be plain
    directories.  (A container swapping one for a link meanwhile can only make this string
    wrong, and CRIU's dump then fails: it names the mount points, it grants nothing.)"""
    done: list[str] = []
    todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    links = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        try:
            target = os.readlink("/".join([root, *done, part]))
        except OSError:  # not a link (EINVAL), or not there: the path is what the config says
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            return _clean(path)  # a loop: the init could not have mounted there either
        if target.startswith("/"):
            done = []
        todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
    return "/" + "/".join(done)


def external_sources(cfg) -> list[tuple[str, str]]:
    """What restore binds for each name `external_mounts` gave: (name in the images, host path).
    A relative bind source is the bundle's, as at create."""
    out = [(_clean(m.destination), os.path.join(cfg.bundle, m.source)) for m in cfg.mounts if is_bind(m)]
    if cfg.linux.masked_paths:
        out.append(("/dev/null", "/dev/null"))
    out += [(_clean(d.path), d.path) for d in _devices(cfg)]
    return out


def _devices(cfg) -> list:
    """Every device node the init makes, the six defaults included: in a user namespace each
    is a bind of the host's node, which CRIU must be told about."""
    from .rootfs.devices import devices_to_create
    return devices_to_create(cfg.linux.devices)


def is_bind(m) -> bool:
    """A bind mount (by type, or by the bind/rbind option, as engines write it)."""
    return m.type == "bind" or any(o in ("bind", "rbind") for o in m.options)


def _clean(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p not in ("", "."))


def _is_file_in(pid: int, resolved: str) -> bool:
    """Whether the container's `resolved` (symlinks already resolved inside its root: the
    kernel would resolve an absolute one against ours) is there and not a directory."""
    import stat
    try:
        return not stat.S_ISDIR(os.stat(f"/proc/{pid}/root{resolved}", follow_symlinks=False).st_mode)
    except OSError:
        return False


def _freezer_dir(c: Container) -> str | None:
    """The cgroup CRIU freezes the container with (else it stops each process with ptrace)."""
    mgr = c.cgroup()
    if mgr is None:
        return None
    from .cgroups import freezer
    found = freezer.locate(mgr.mode, mgr.paths)
    return found[1] if found else None


def _page_server(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    address = address.strip("[]")
    if not address or not port.isdigit():
        raise OCIError("use --page-server ADDRESS:PORT to name the page server")
    return address, int(port)


def _write_descriptors(image_dir: str, pid: int) -> None:
    """What the init's fds 0-2 were (`pipe:[1234]`, `/dev/pts/0`, `/dev/null`): restore maps the
    pipes among them to the new ones."""
    from . import jsonio
    from .state import write_private
    names = []
    for fd in range(3):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            names.append("/dev/null")
    write_private(os.path.join(image_dir, DESCRIPTORS_FILE), jsonio.dumps(names).encode())


def _on_notify(opts: CheckpointOptions, script: str) -> None:
    """--lazy-pages: tell whoever waits on --status-fd that the pages can be served now."""
    if script == "status-ready" and opts.status_fd >= 0:
        try:
            os.write(opts.status_fd, b"\0")
            os.close(opts.status_fd)
        except OSError as e:
            _log.get().warn(f"--status-fd {opts.status_fd}: {os_words(e)}")
        opts.status_fd = -1
