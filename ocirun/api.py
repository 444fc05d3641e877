"""The Python API: drive containers from Python (test harnesses, CI systems, teaching).

    from ocirun.api import Container, OCIError

    c = Container.create("/path/to/bundle", "web1")   # state under the CLI's default root
    c.start()
    print(c.state()["status"])                       # "running"
    status = c.exec(["cat", "/etc/hostname"])        # the process's exit status
    c.kill("SIGKILL")
    c.wait(timeout=10)                               # the state once the init has exited
    c.delete()

It is what the `ocirun` command line runs: each `ocirun` subcommand is a thin call of a method
here, so a container made here is an ordinary ocirun container (`ocirun list` shows it, `ocirun
delete` removes it, and the other way round).  The methods run as the CLI commands do, in the
calling process: it needs the same privileges (root, or a rootless setup), and `create` leaves
the container's init with the caller's stdin, stdout and stderr, as `ocirun create` does.

Errors: every failure raises `OCIError` (its message is one printable line, the one `ocirun`
prints); a wrong config.json value raises `ConfigError`, a subclass whose message starts with the
field's JSON path (``process.args: must not be empty``).  No other exception escapes a method,
except KeyboardInterrupt.

State: `root` is the state directory, as `ocirun --root`; None means what the CLI uses without
the flag: $OCIRUN_ROOT, else /run/ocirun for root and $XDG_RUNTIME_DIR/ocirun for anyone else.

The engine commands import this module, so it imports nothing at its top beyond what they
already load (ARCHITECTURE.md, startup speed): each method imports its operation when called.
"""
from __future__ import annotations

import builtins  # always loaded; Container.list shadows `list` in the class's annotations
import os

from .errors import ConfigError, OCIError, describe

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from .create import CreateOptions

__all__ = ["ConfigError", "Container", "OCIError", "default_root", "run"]

WAIT_FOREVER = None  # `Container.wait(timeout=None)`: no deadline


def default_root() -> str:
    """The state root used when `root` is None: $OCIRUN_ROOT if set, else the CLI's default
    (/run/ocirun for root, $XDG_RUNTIME_DIR/ocirun for a rootless user)."""
    env = os.environ.get("OCIRUN_ROOT")
    if env:
        return env
    from .rootless import default_root as runtime_default
    return runtime_default()


class _OneErrorType:
    """`with _ONE_ERROR_TYPE:` turns any exception but OCIError (an OSError, a bug) into an
    OCIError with describe()'s one line, the original as its __cause__ (for a debug traceback)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, err: BaseException | None, _tb: object) -> None:
        if err is not None and isinstance(err, Exception) and not isinstance(err, OCIError):
            raise OCIError(describe(err)) from err


_ONE_ERROR_TYPE = _OneErrorType()


def _create_options(bundle: str | os.PathLike[str], console_socket: str | None, pid_file: str | None,
                    no_pivot: bool, no_new_keyring: bool, preserve_fds: int, systemd_cgroup: bool,
                    rootless: str) -> CreateOptions:
    from .create import CreateOptions
    return CreateOptions(bundle=os.fspath(bundle), console_socket=console_socket, pid_file=pid_file,
                         no_pivot=no_pivot, no_new_keyring=no_new_keyring,
                         preserve_fds=checked_preserve_fds(preserve_fds), systemd_cgroup=systemd_cgroup,
                         rootless=rootless)


def checked_preserve_fds(n: int, flag: str = "preserve_fds", listen: int = 0) -> int:
    """fds 3..3+n-1 (after `listen` fds of systemd's socket activation, for create) are handed
    on: never negative, never more than this process may hold, and each already open.  An fd
    missing from that range would be filled by one of our own as we open them (the channel to
    the process, the exec stub, the --log file) and reach the container: runc refuses such a
    range too.  `flag`: how the caller named it, for the error."""
    most = os.sysconf("SC_OPEN_MAX") - 3
    if type(n) is not int or not 0 <= n <= most:
        raise OCIError(f"{flag} {n!r}: must be between 0 and {most} (the open-files limit less stdio)")
    last = 2 + listen + n
    for fd in range(3, last + 1) if n else ():
        try:
            os.fstat(fd)
        except OSError:
            raise OCIError(f"{flag} {n}: fd {fd} is not open (fds 3 to {last} are handed to the "
                           "container: each must be open)") from None
    return n


class Container:
    """One container, by id, under a state root.

    `Container(id, root)` is only a handle: nothing is checked or read until a method runs
    (`delete(force=True)` of a container that does not exist succeeds, as `ocirun delete
    --force`).  `Container.create` makes a new container, `Container.load` opens an existing
    one (and fails if it does not exist), `Container.list` lists a root.

    Attributes: `id` (the container's id) and `root` (its state root, resolved: never None).
    """

    id: str
    root: str

    def __init__(self, id: str, root: str | os.PathLike[str] | None = None) -> None:
        self.id = id
        self.root = default_root() if root is None else os.fspath(root)

    def __repr__(self) -> str:
        return f"Container({self.id!r}, root={self.root!r})"

    # ------------------------------------------------------------------ making and finding

    @classmethod
    def create(cls, bundle: str | os.PathLike[str], id: str, *,
               root: str | os.PathLike[str] | None = None, console_socket: str | None = None,
               pid_file: str | None = None, no_pivot: bool = False, no_new_keyring: bool = False,
               preserve_fds: int = 0, systemd_cgroup: bool = False, rootless: str = "auto") -> Container:
        """Create container `id` from the bundle directory (its config.json and rootfs), as
        `ocirun create`: the init is left waiting for `start` (status "created").

        console_socket: an AF_UNIX socket path that receives the pty master (config with
        `process.terminal`).  pid_file: a file to write the init's host pid to.  no_pivot:
        MS_MOVE + chroot instead of pivot_root.  no_new_keyring: keep the caller's session
        keyring.  preserve_fds: hand fds 3..3+N-1 of the caller to the container.
        systemd_cgroup: the cgroup is a transient systemd scope (cgroupsPath "slice:prefix:name").
        rootless: "auto", "true" or "false" (`--rootless`).

        Raises OCIError ("container with id exists: ID", ...) or ConfigError for config.json.
        """
        c = cls(id, root)
        with _ONE_ERROR_TYPE:
            from .create import create
            create(c.root, id, _create_options(bundle, console_socket, pid_file, no_pivot, no_new_keyring,
                                               preserve_fds, systemd_cgroup, rootless))
        return c

    @classmethod
    def load(cls, id: str, root: str | os.PathLike[str] | None = None) -> Container:
        """The existing container `id`; OCIError "container does not exist: ID" if there is
        none (or "invalid container id format" for an id no container can have)."""
        c = cls(id, root)
        with _ONE_ERROR_TYPE:
            from .state import StateDir
            StateDir.open(c.root, id, lock=False)  # checks the id and that state.json is there
        return c

    @classmethod
    def list(cls, root: str | os.PathLike[str] | None = None) -> list[dict]:
        """The state of every container under `root`, sorted by id, each as `state()` returns
        it (`ocirun list --format json`) with "owner" the user who owns its state directory, as
        runc's list.  A container whose state file is there but cannot be read is listed with
        status "unknown" (and a warning on stderr); one whose directory this user may not enter is
        left out with the warning.  An empty list if the root does not exist."""
        with _ONE_ERROR_TYPE:
            from .query import list_all
            return list_all(default_root() if root is None else os.fspath(root))

    # ------------------------------------------------------------------ the lifecycle

    def start(self) -> None:
        """Run the container's process (`ocirun start`): created → running.  OCIError if the
        container is not "created" ("cannot start an already running container", ...)."""
        with _ONE_ERROR_TYPE:
            from .start import start
            start(self.root, self.id)

    def state(self) -> dict:
        """The container's state as `ocirun state` prints it: a dict of the runtime-spec state
        ("ociVersion", "id", "status", "pid", "bundle", "annotations" when there are any) plus
        runc's "rootfs", "created" (RFC 3339, UTC) and "owner".  "status" is one of "created",
        "running", "paused", "stopped"; "pid" is the init's host pid, 0 once stopped."""
        with _ONE_ERROR_TYPE:
            from .state import Container as Opened  # one import fewer for `ocirun state` than query.py
            with Opened.open(self.root, self.id, lock=False) as c:
                return c.public_state()

    def status(self) -> str:
        """Just `state()["status"]`: "created", "running", "paused" or "stopped"."""
        return self.state()["status"]

    def kill(self, signal: str | int = "SIGTERM", all: bool = False) -> None:
        """Send `signal` to the init (`ocirun kill`), or with `all` to every process of the
        container's cgroup.  `signal`: a number, or a name as runc takes it ("KILL", "SIGKILL",
        "sigkill", "RTMIN+3").  OCIError "container not running" for a stopped container."""
        with _ONE_ERROR_TYPE:
            from .kill import kill, parse_signal
            kill(self.root, self.id, parse_signal(str(signal)), all_procs=all)

    def delete(self, force: bool = False) -> None:
        """Remove the container (`ocirun delete`): its cgroup, its state, the poststop hooks.
        Only a stopped container, unless `force`, which kills it first (and succeeds when the
        container does not exist)."""
        with _ONE_ERROR_TYPE:
            from .delete import delete
            delete(self.root, self.id, force=force)

    def pause(self) -> None:
        """Freeze every process of the container (`ocirun pause`): running → paused."""
        with _ONE_ERROR_TYPE:
            from .pause import pause
            pause(self.root, self.id)

    def resume(self) -> None:
        """Thaw a paused container (`ocirun resume`): paused → running."""
        with _ONE_ERROR_TYPE:
            from .pause import resume
            resume(self.root, self.id)

    def checkpoint(self, image_path: str | os.PathLike[str], *, leave_running: bool = False,
                   **criu_options: object) -> None:
        """Save the running container's processes to `image_path` with CRIU (`ocirun
        checkpoint`); unless `leave_running` (or `pre_dump=True`) the container is gone after.
        `criu_options`: the other flags of `ocirun checkpoint` by their option names
        (work_path, parent_path, pre_dump, tcp_established, file_locks, manage_cgroups_mode,
        ...; see checkpoint.CheckpointOptions).  OCIError quoting CRIU's log on failure."""
        with _ONE_ERROR_TYPE:
            from .checkpoint import CheckpointOptions, checkpoint
            checkpoint(self.root, self.id, CheckpointOptions(image_path=os.fspath(image_path),
                                                             leave_running=leave_running, **criu_options))

    @classmethod
    def restore(cls, bundle: str | os.PathLike[str], id: str, image_path: str | os.PathLike[str], *,
                root: str | os.PathLike[str] | None = None, **criu_options: object) -> Container:
        """Bring a checkpoint back as container `id` (`ocirun restore --detach`): it is running
        when this returns.  `criu_options`: the other flags of `ocirun restore` by their option
        names (console_socket, pid_file, work_path, systemd_cgroup, ...; see
        restore.RestoreOptions).  On failure nothing of the container is left."""
        c = cls(id, root)
        with _ONE_ERROR_TYPE:
            from .restore import RestoreOptions, restore
            restore(c.root, id, RestoreOptions(bundle=os.fspath(bundle), image_path=os.fspath(image_path),
                                               detach=True, **criu_options))
        return c

    def processes(self) -> builtins.list[int]:
        """The host pids of the container's processes, sorted (`ocirun ps --format json`)."""
        with _ONE_ERROR_TYPE:
            from .query import processes
            return processes(self.root, self.id)

    def exec(self, args: builtins.list[str] | dict | None = None, *, process_file: str | None = None,
             env: builtins.list[str] | None = None, cwd: str | None = None, user: str | None = None,
             additional_gids: builtins.list[int] | None = None, caps: builtins.list[str] | None = None,
             no_new_privs: bool = False, apparmor: str | None = None, process_label: str | None = None,
             tty: bool = False, console_socket: str | None = None, detach: bool = False,
             pid_file: str | None = None, preserve_fds: int = 0, ignore_paused: bool = False,
             cgroup: builtins.list[str] | None = None, forward_signals: bool = False) -> int:
        """Run a new process in the running container (`ocirun exec`); its exit status (128+n
        when signal n killed it), or with `detach` its host pid as soon as it runs.

        args: the command (a list of strings), built on the container's own `process` as runc
        does (env, cwd, user, additional_gids, caps, no_new_privs, apparmor, process_label
        change it); or a runtime-spec `process` dict used as it is (as `process_file`, a path
        to one in JSON).  user: "UID[:GID]".  env: "NAME=VALUE" strings added to the
        container's.  cgroup: "[CONTROLLER[,CONTROLLER]:]PATH" sub-cgroups to run in.

        In the foreground (not `detach`) the process's stdin/stdout/stderr are the caller's
        (each that is a terminal through a pipe that is relayed, never the terminal itself);
        with `tty` and no `console_socket` its pty is relayed to the caller's terminal (main
        thread only).  The call blocks until the process exits.  While it waits this process is
        a child subreaper (given back after); with `forward_signals` it also relays the signals
        it receives to the process and reaps every child, as `ocirun exec` (main thread only);
        without it, see `run` for the orphans of a container in the caller's pid namespace.

        OCIError "cannot exec in a stopped container", "... paused container" (unless
        `ignore_paused`), or why the process could not be started; ConfigError for a bad
        `process`."""
        with _ONE_ERROR_TYPE:
            from .exec_process import ExecOptions, exec_in_container
            process: dict | None = None
            if isinstance(args, str):  # list("ls -l") would run `l`
                raise OCIError(f"exec: args must be a list of strings, not the string {args!r}")
            if isinstance(args, dict):
                if process_file is not None:
                    raise OCIError("exec: a process dict and process_file both given: pass one")
                process, args = args, []
            opts = ExecOptions(args=list(args or []), process=process, process_file=process_file, tty=tty,
                               console_socket=console_socket, detach=detach, pid_file=pid_file,
                               env=list(env or []), cwd=cwd, user=user,
                               additional_gids=list(additional_gids or []), caps=list(caps or []),
                               no_new_privs=no_new_privs, apparmor=apparmor, process_label=process_label,
                               preserve_fds=checked_preserve_fds(preserve_fds), ignore_paused=ignore_paused,
                               cgroup=list(cgroup or []), forward_signals=forward_signals)
            return exec_in_container(self.root, self.id, opts)

    def wait(self, timeout: float | None = WAIT_FOREVER) -> dict:
        """Block until the container's init has exited; its final `state()` (status
        "stopped").  A "created" or "paused" container is waited for like a running one.

        The caller need not be the init's parent: the init is watched through a pidfd (checked
        against its start time, so a reused pid is never mistaken for it), so the wait costs no
        polling.  timeout: seconds, after which OCIError "container ID still STATUS after Ns";
        None waits as long as it takes.  OCIError "container does not exist" if it is deleted
        meanwhile.  The init's exit status is not known here (only its parent learns it):
        `run()` returns it."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with _ONE_ERROR_TYPE:
                from .state import STOPPED
                from .state import Container as Opened
                with Opened.open(self.root, self.id, lock=False) as c:
                    if c.status == STOPPED:
                        return c.public_state()
                    pid, start_time, status = c.state.pid, c.state.start_time, c.status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise OCIError(f"container {self.id} still {status} after {timeout}s")
                _wait_for_exit(pid, start_time, left)


def _wait_for_exit(pid: int, start_time: int | None, timeout: float | None) -> None:
    """Return when `pid` (the process started at `start_time`) has exited or `timeout` passed
    (None: no limit).  A pidfd wakes us at its exit; without one (the pid is gone already, or an
    old kernel) a short sleep, and the caller looks again."""
    import select
    import time

    from .state import pid_alive
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        time.sleep(0.05 if timeout is None else min(0.05, timeout))
        return
    try:
        if not pid_alive(pid, start_time):  # the pidfd names a newer process of that pid
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(None if timeout is None else max(1, int(timeout * 1000)))
    finally:
        os.close(fd)


def run(bundle: str | os.PathLike[str], id: str, *, root: str | os.PathLike[str] | None = None,
        detach: bool = False, keep: bool = False, console_socket: str | None = None,
        pid_file: str | None = None, no_pivot: bool = False, no_new_keyring: bool = False,
        preserve_fds: int = 0, systemd_cgroup: bool = False, rootless: str = "auto",
        forward_signals: bool = False) -> int:
    """Create, start and wait for container `id` (`ocirun run`); the init's exit status
    (128+n when signal n killed it).  The container is deleted once it has exited, unless
    `keep`.  With `detach` it returns the init's host pid once the container runs (and leaves
    it for `Container(id, root)` to wait for and delete).

    In the foreground the container's stdio are the caller's (terminals through relayed pipes,
    or a config with `process.terminal` relayed to the caller's terminal: main thread only).
    While it waits this process is a child subreaper (given back after); with `forward_signals`
    it also relays the signals it receives to the init and reaps every child, as `ocirun run`
    (main thread only).  Without it only the init is reaped: processes of a container that
    shares the caller's pid namespace and outlive their parents are re-parented to the caller
    while it waits, and stay its zombies until it reaps them (give such a container a pid
    namespace, or pass `forward_signals`).  The other arguments are `Container.create`'s.  OCIError or ConfigError
    if the container cannot be created or started (nothing is left behind then)."""
    with _ONE_ERROR_TYPE:
        from .run import run as run_container
        return run_container(default_root() if root is None else os.fspath(root), id,
                             _create_options(bundle, console_socket, pid_file, no_pivot, no_new_keyring,
                                             preserve_fds, systemd_cgroup, rootless),
                             detach=detach, keep=keep, forward_signals=forward_signals)
