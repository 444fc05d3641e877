"""`ocirun exec`: run a new process inside a running container (library side).

The process is described by `--process FILE` (a runtime-spec `process` object, as engines send)
or built from the container's own `process` plus the command line, as runc does.  It joins every
namespace the container has, its cgroup, and gets its own user, capabilities, rlimits and the
container's seccomp profile.  Detached, the caller's subreaper inherits it and `--pid-file` holds
its host pid; otherwise we wait and return its exit status.
"""
from __future__ import annotations

import os

import _socket  # not socket.py (ARCHITECTURE.md, Startup speed)

from . import jsonio
from . import log as _log
from .config import Config, Process, parse_process, read_json
from .errors import ConfigError, OCIError
from .record import Record
from .state import PAUSED, Container, write_pid_file


class ExecOptions(Record):
    args: list[str]
    process_file: str | None
    tty: bool
    console_socket: str | None
    detach: bool
    pid_file: str | None
    env: list[str]
    cwd: str | None
    user: str | None
    additional_gids: list[int]
    caps: list[str]
    no_new_privs: bool
    apparmor: str | None
    process_label: str | None
    preserve_fds: int
    ignore_paused: bool
    cgroup: list[str]
    process: object
    forward_signals: bool
    FIELDS = {
        "args": list, "process_file": None, "tty": False, "console_socket": None, "detach": False,
        "pid_file": None, "env": list, "cwd": None, "user": None, "additional_gids": list,
        "caps": list, "no_new_privs": False, "apparmor": None, "process_label": None,
        "preserve_fds": 0, "ignore_paused": False, "cgroup": list,
        "process": None,  # a runtime-spec process object (the library API), instead of process_file
        # In the foreground: relay our signals to the process and reap every child while waiting,
        # as `ocirun exec` does (runc's); False (the library API) waits for the process alone,
        # leaves the caller's signal handlers alone and gives its subreaper flag back.
        "forward_signals": True,
    }


def exec_in_container(root: str, cid: str, opts: ExecOptions) -> int:
    """Run the process in container `cid`; its exit status, or its host pid with `detach`."""
    from .foreground import become_subreaper, stop_being_subreaper
    # In the foreground the process is re-parented to us (a subreaper) when the joiner exits.
    was_subreaper = True if opts.detach else become_subreaper()
    try:
        return _exec(root, cid, opts)
    finally:
        if not opts.forward_signals:
            stop_being_subreaper(was_subreaper)


def _exec(root: str, cid: str, opts: ExecOptions) -> int:
    from .process import joiner  # noqa: F401 — loads every module the child needs
    from .process.exec_parent import spawn_exec

    c = Container.open(root, cid, lock=False)  # unlocked: an exec runs beside other commands (runc)
    st, status = c.state, c.status
    c.require("exec", ignore_paused=opts.ignore_paused)
    log = _log.get()
    log.debug(f"exec in {cid}: its init is {st.pid}, {status}")
    sub_cgroup = parse_cgroup_flags(opts.cgroup)
    cfg = c.config()
    proc = build_process(opts, cfg)
    if opts.console_socket and not proc.terminal:  # (in the foreground too: runc refuses that)
        from .create import NO_CONSOLE_FOR_SOCKET
        raise OCIError(NO_CONSOLE_FOR_SOCKET)
    from .lsm import check_available
    check_available(proc)
    if os.geteuid() != 0 and _setgroups_denied(st.pid):
        from .user import refuse_groups_setgroups_denies
        refuse_groups_setgroups_denies(proc.user)
    lin = cfg.linux
    ctx = joiner.ExecContext(process=proc, preserve_fds=opts.preserve_fds, personality=lin.personality)
    own_console = None
    try:
        ctx.ns_fds = joiner.container_namespace_fds(st.pid, [n.type for n in lin.namespaces])
        if "mount" not in ctx.ns_fds:  # no mount namespace: the init chrooted in ours, so do we
            ctx.root_fd = joiner.container_root_fd(st.pid)
        if lin.seccomp:
            from . import seccomp
            ctx.seccomp_filter = seccomp.prepare(lin.seccomp)
        from .exechelper import sealed_stub_fd
        ctx.exec_stub_fd = sealed_stub_fd()
        if proc.terminal:
            if opts.console_socket:
                from .console import connect_console_socket
                ctx.console_fd = connect_console_socket(opts.console_socket)
            elif opts.detach:
                raise OCIError("--detach with a terminal needs --console-socket")
            else:
                own_console, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
                ctx.console_fd = theirs.detach()
        cgroup = c.cgroup()
        if sub_cgroup and cgroup is None:
            raise OCIError("--cgroup: the container has no cgroup")
        if not proc.terminal and not opts.detach:
            from .pipes import TerminalPipes
            ctx.stdio_pipes = TerminalPipes.if_needed()  # never the caller's terminal (pipes.py)
        pid = spawn_exec(ctx, cgroup, frozen=status == PAUSED, state=c.public_state(), sub_cgroup=sub_cgroup)
    except BaseException:
        if ctx.stdio_pipes is not None:
            ctx.stdio_pipes.close()
        raise
    finally:
        listener = ctx.seccomp_filter.listener_sock if ctx.seccomp_filter is not None else -1
        for fd in [*ctx.ns_fds.values(), ctx.console_fd, ctx.exec_stub_fd, listener, ctx.root_fd]:
            if fd >= 0:
                os.close(fd)
    log.debug(f"exec in {cid}: process {pid} runs {proc.args!r}")
    if opts.pid_file:
        try:
            write_pid_file(opts.pid_file, pid)
        except BaseException:
            # The caller is told the exec failed and never learns the pid: the process must not
            # live on (runc kills it too), nor our relays of its stdio.
            _kill_started(pid, in_foreground=not opts.detach)
            if own_console is not None:
                own_console.close()
            if ctx.stdio_pipes is not None:
                ctx.stdio_pipes.close()
            raise
    if opts.detach:
        return pid
    from .foreground import SignalRelay, install_resize, wait_for, wait_for_child
    master = -1
    if own_console is not None:
        from .console import recv_console_fd, relay_terminal
        master = recv_console_fd(own_console.fileno())
        own_console.close()
    if opts.forward_signals:
        SignalRelay().attach(pid)
        install_resize(master)
    if master >= 0:
        relay_terminal(master, pid)
    elif ctx.stdio_pipes is not None:
        ctx.stdio_pipes.relay(pid)
    exit_status = wait_for(pid) if opts.forward_signals else wait_for_child(pid)
    log.debug(f"exec in {cid}: process {pid} exited, status {exit_status}")
    return exit_status


def _setgroups_denied(init: int) -> bool:
    try:
        with open(f"/proc/{init}/setgroups", "rb") as f:
            return f.read().strip() == b"deny"
    except OSError:
        return False  # gone meanwhile: the exec fails on that, with its own words


def _kill_started(pid: int, in_foreground: bool) -> None:
    """SIGKILL the exec'd process; in the foreground it is our child (we are its subreaper and
    the joiner was reaped): reap it, with a deadline."""
    import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

    from .process.reaping import KILL_WAIT_S, wait_exit
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if in_foreground:
        wait_exit(pid, KILL_WAIT_S)


def parse_cgroup_flags(values) -> dict[str, str]:
    """runc's `--cgroup [CONTROLLER[,CONTROLLER]:]PATH` (repeatable) → {hierarchy key: path};
    key "*" is every hierarchy, "" the unified one (its controllers have no v1 name)."""
    out: dict[str, str] = {}
    for value in values or ():
        controllers, sep, path = value.rpartition(":")
        if not sep:
            out["*"] = value
            continue
        for name in controllers.split(","):
            out["" if name in ("unified", "cgroup2") else name] = path
    return out


def _given_process(doc: object) -> Process:
    if not isinstance(doc, dict):
        raise ConfigError("process", "must be a JSON object")
    if not doc.get("cwd"):  # REQUIRED by the spec; runc refuses an exec without it too
        raise ConfigError("process.cwd", "is required (an absolute path)")
    return parse_process(doc)


def build_process(opts: ExecOptions, cfg: Config) -> Process:
    """The runtime-spec process to run, as runc builds it for `exec`: `--process`, or the
    container's own `process` object with the flags laid over it.  The overlay is done on the
    JSON object and parsed like a `--process` file, so a bad flag value is refused with the
    field's path (`process.env[2]: ...`), as it would be in the file."""
    if opts.process is not None:
        return _given_process(opts.process)
    if opts.process_file:
        return _given_process(read_json(opts.process_file, what="--process"))
    if not opts.args:
        raise OCIError("exec: no command given (arguments or --process are required)")
    base = jsonio.loads(jsonio.dumps(cfg.raw.get("process") or {}))  # a deep copy (copy: +1 ms of imports)
    base["args"] = list(opts.args)
    base["terminal"] = opts.tty
    base.pop("consoleSize", None)
    if opts.env:
        base["env"] = list(base.get("env") or []) + list(opts.env)
    if opts.cwd:
        base["cwd"] = opts.cwd
    if opts.user:
        base["user"] = _parse_user_flag(opts.user, base.get("user") or {})
    if opts.additional_gids:
        base.setdefault("user", {})["additionalGids"] = list(opts.additional_gids)
    if opts.caps:
        caps = base.setdefault("capabilities", {})
        for s in ("bounding", "effective", "permitted", "ambient"):
            caps[s] = list(dict.fromkeys(list(caps.get(s) or []) + list(opts.caps)))
    if opts.no_new_privs:
        base["noNewPrivileges"] = True
    if opts.apparmor:
        base["apparmorProfile"] = opts.apparmor
    if opts.process_label:
        base["selinuxLabel"] = opts.process_label
    return parse_process(base)


def _parse_user_flag(text: str, old: dict) -> dict:
    uid, _, gid = text.partition(":")
    try:
        new = {"uid": int(uid), "gid": int(gid) if gid else 0}
    except ValueError:
        raise OCIError(f"--user {text!r}: want uid[:gid] (numbers)") from None
    if "umask" in old:
        new["umask"] = old["umask"]
    return new
