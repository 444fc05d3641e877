"""The `ocirun` command line: runc's subcommands, flags, exit codes and output.

No logic lives here beyond parsing and printing: each subcommand calls `ocirun.container`.
Every failure ends in `main()`: one line on stderr, one error line in `--log`, exit status 1.
"""
from __future__ import annotations

import os
import sys

from . import SPEC_VERSION, __version__, jsonio
from . import log as _log
from .errors import OCIError, describe

COMMIT = "none"


def _add_create_flags(p) -> None:
    p.add_argument("--bundle", "-b", default=".", help="path to the bundle (default: cwd)")
    p.add_argument("--console-socket", help="AF_UNIX socket that receives the pty master")
    p.add_argument("--pid-file", help="file to write the container's host pid to")
    p.add_argument("--no-pivot", action="store_true", help="MS_MOVE + chroot instead of pivot_root")
    p.add_argument("--no-new-keyring", action="store_true", help="keep the caller's session keyring")
    p.add_argument("--preserve-fds", type=int, default=0, help="pass N extra fds (3..3+N-1)")


class UsageError(OCIError):
    pass


class _OutputGone(Exception):
    """Whoever read our stdout went away (`ocirun list | head -1`): stop quietly."""


def _out(text: str) -> None:
    try:
        print(text)
    except BrokenPipeError:
        raise _OutputGone from None


def _parser_class():
    """argparse is imported only when a command line needs it (see `_fast_parse`)."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """Usage mistakes are one-line errors with exit status 1, like runc's."""

        def error(self, message: str):
            raise UsageError(f"{self.prog}: {message}")

    return _Parser


def _args_create(p) -> None:
    _add_create_flags(p)
    p.add_argument("id")


def _args_run(p) -> None:
    _add_create_flags(p)
    p.add_argument("--detach", "-d", action="store_true")
    p.add_argument("--keep", action="store_true", help="do not delete the container after it exits")
    p.add_argument("id")


def _args_kill(p) -> None:
    p.add_argument("--all", "-a", action="store_true", help="signal every process of the container")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="SIGTERM")


def _args_delete(p) -> None:
    p.add_argument("--force", "-f", action="store_true")
    p.add_argument("id")


def _args_list(p) -> None:
    p.add_argument("--format", "-f", default="table", choices=("table", "json"))
    p.add_argument("--quiet", "-q", action="store_true")


def _args_ps(p) -> None:
    p.add_argument("--format", "-f", default="table", choices=("table", "json"))
    p.add_argument("id")
    # runc: `ps [options] ID [ps options]`: everything after the id is ps's, dashes included.
    p.add_argument("ps_args", nargs="...")  # argparse.REMAINDER


def _args_update(p) -> None:
    p.add_argument("--resources", "-r", default=None,
                   help="path to a linux.resources JSON file, or '-' for stdin (other flags are then ignored)")
    p.add_argument("--memory", default=None, help="memory limit in bytes (64m, 1g; -1 = unlimited)")
    p.add_argument("--memory-reservation", default=None, help="memory soft limit in bytes")
    p.add_argument("--memory-swap", default=None, help="memory+swap limit in bytes (-1 = unlimited)")
    p.add_argument("--kernel-memory", default=None, help="(ignored by the kernel, as in runc)")
    p.add_argument("--kernel-memory-tcp", default=None, help="kernel TCP buffer limit in bytes (v1 only)")
    p.add_argument("--cpu-shares", "--cpu-share", dest="cpu_shares", default=None, help="cpu shares (relative weight)")
    p.add_argument("--cpu-period", default=None, help="CFS period in microseconds")
    p.add_argument("--cpu-quota", default=None, help="CFS quota in microseconds per period (-1 = none)")
    p.add_argument("--cpu-rt-period", default=None, help="realtime period in microseconds (v1 only)")
    p.add_argument("--cpu-rt-runtime", default=None, help="realtime runtime in microseconds (v1 only)")
    p.add_argument("--cpuset-cpus", default=None, help="cpus to use (0-3, 0,1)")
    p.add_argument("--cpuset-mems", default=None, help="memory nodes to use")
    p.add_argument("--pids-limit", default=None, help="maximum number of pids (-1 = unlimited)")
    p.add_argument("--blkio-weight", default=None, help="block I/O weight, 10 to 1000")
    p.add_argument("--l3-cache-schema", default=None, help="Intel RDT L3 schema (not supported)")
    p.add_argument("--mem-bw-schema", default=None, help="Intel RDT memory bandwidth schema (not supported)")
    p.add_argument("id")


def _args_events(p) -> None:
    p.add_argument("--interval", default="5s", help="time between stats events (Go duration, default 5s)")
    p.add_argument("--stats", action="store_true", help="print one stats event and exit")
    p.add_argument("id")


def _args_spec(p) -> None:
    p.add_argument("--bundle", "-b", default=".")
    p.add_argument("--rootless", action="store_true")


def _args_exec(p) -> None:
    p.add_argument("--process", "-p", dest="process_file", help="runtime-spec process JSON")
    p.add_argument("--tty", "-t", action="store_true")
    p.add_argument("--console-socket")
    p.add_argument("--detach", "-d", action="store_true")
    p.add_argument("--pid-file")
    p.add_argument("--env", "-e", action="append", default=[])
    p.add_argument("--cwd")
    p.add_argument("--user", "-u")
    p.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    p.add_argument("--cap", "-c", action="append", default=[])
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("--apparmor")
    p.add_argument("--process-label")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("--ignore-paused", action="store_true")
    p.add_argument("--cgroup", action="append", default=[],
                   help="[CONTROLLER[,CONTROLLER]:]PATH: run in an existing sub-cgroup (repeatable)")
    p.add_argument("id")
    p.add_argument("args", nargs="...")  # argparse.REMAINDER


def _args_id_only(p) -> None:
    p.add_argument("id")


# name -> (help, function adding its arguments).  Only the invoked command's parser is built:
# all of them cost ~4 ms, on every call.
SUBCOMMANDS = {
    "create": ("create a container", _args_create),
    "run": ("create and start a container, wait for it", _args_run),
    **{name: (f"{name} a container", _args_id_only) for name in ("start", "state", "pause", "resume")},
    "kill": ("send a signal to a container's init", _args_kill),
    "delete": ("delete a container", _args_delete),
    "list": ("list containers", _args_list),
    "ps": ("processes of a container", _args_ps),
    "update": ("update a container's resource limits", _args_update),
    "events": ("print a container's resource usage and OOM events (JSON lines)", _args_events),
    "spec": ("write a default config.json", _args_spec),
    "exec": ("run a new process inside a running container", _args_exec),
    "features": ("print what this runtime supports (JSON)", None),
}

_GLOBAL_WITH_VALUE = ("--root", "--log", "--log-format", "--rootless", "--criu")


def invoked_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (skipping global flags and their values)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def build_parser(only: str | None = None):
    """The parser; with `only`, just that subcommand (each sub-parser costs ~0.3 ms to build)."""
    ap = _parser_class()(prog="ocirun", description="OCI runtime-spec container runtime (runc-compatible)")
    ap.add_argument("--root", default=None, help="state directory (default /run/ocirun)")
    ap.add_argument("--log", default=None, help="log file (default: stderr)")
    ap.add_argument("--log-format", default="text", choices=("text", "json"))
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--systemd-cgroup", action="store_true", help="(not supported)")
    ap.add_argument("--rootless", default=None, help="(accepted for runc compatibility)")
    ap.add_argument("--criu", default=None, help="(accepted for runc compatibility)")
    ap.add_argument("--version", "-v", action="store_true")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else SUBCOMMANDS:
        helptext, add_args = SUBCOMMANDS[name]
        p = sub.add_parser(name, help=helptext)
        if add_args is not None:
            add_args(p)
    return ap


# ---------------------------------------------------------------------------- commands

def _checked_preserve_fds(n: int) -> int:
    """--preserve-fds N hands fds 3..3+N-1 on: no more than this process may hold (a huge N
    once meant a loop over billions of fds), never negative (runc's flag is unsigned)."""
    most = os.sysconf("SC_OPEN_MAX") - 3
    if not 0 <= n <= most:
        raise OCIError(f"--preserve-fds {n}: must be between 0 and {most} (the open-files limit less stdio)")
    return n


def _create_opts(a):
    from .container import CreateOptions
    return CreateOptions(bundle=a.bundle, console_socket=a.console_socket, pid_file=a.pid_file,
                         no_pivot=a.no_pivot, no_new_keyring=a.no_new_keyring,
                         preserve_fds=_checked_preserve_fds(a.preserve_fds))


def _unwind_on_termination() -> None:
    """SIGTERM or SIGHUP during `create` unwinds like Ctrl-C, so the half-made container is removed
    instead of left for `delete --force`.  (The children reset these signals after fork.)"""
    import _signal as signal  # signal.py only adds enums, and imports enum (~3 ms)

    def interrupt(_sig, _frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def cmd_create(a) -> int:
    from .container import create
    _unwind_on_termination()
    create(a.root, a.id, _create_opts(a))
    return 0


def cmd_start(a) -> int:
    from .container import start
    start(a.root, a.id)
    return 0


def cmd_run(a) -> int:
    from .run import run
    if a.detach:
        _unwind_on_termination()  # without --detach, run forwards every signal to the container
    return run(a.root, a.id, _create_opts(a), detach=a.detach, keep=a.keep)


def cmd_state(a) -> int:
    from .container import state
    _out(jsonio.dumps_indented(state(a.root, a.id)))
    return 0


def cmd_kill(a) -> int:
    from .container import kill, parse_signal
    kill(a.root, a.id, parse_signal(a.signal), all_procs=a.all)
    return 0


def cmd_delete(a) -> int:
    from .container import delete
    delete(a.root, a.id, force=a.force)
    return 0


def cmd_pause(a) -> int:
    from .container import pause
    pause(a.root, a.id)
    return 0


def cmd_resume(a) -> int:
    from .container import resume
    resume(a.root, a.id)
    return 0


def cmd_ps(a) -> int:
    from .container import processes
    pids = processes(a.root, a.id)
    if a.format == "json":
        _out(jsonio.dumps(pids))
        return 0
    import subprocess
    ps_args = a.ps_args[1:] if a.ps_args[:1] == ["--"] else a.ps_args
    out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True).stdout.splitlines()
    if not out:
        return 0
    header, rows = out[0], out[1:]
    if "PID" not in header.split():
        raise OCIError(f"ps {' '.join(ps_args)}: its output has no PID column")
    col = header.split().index("PID")
    _out(header)
    for row in rows:
        fields = row.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            _out(row)
    return 0


def cmd_list(a) -> int:
    from .container import list_all
    items = list_all(a.root)
    if a.quiet:
        for s in items:
            _out(s["id"])
    elif a.format == "json":
        _out(jsonio.dumps(items))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s.get("owner") or "root")
                 for s in items]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            _out("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_spec(a) -> int:
    from .defaults import default_config
    path = os.path.join(a.bundle, "config.json")
    if os.path.exists(path):
        raise OCIError(f"File {path} exists. Remove it first")
    try:
        with open(path, "w") as f:
            import json
            json.dump(default_config(), f, indent="\t")
            f.write("\n")
    except OSError as e:
        raise OCIError(f"write {path}: {e.strerror.lower()}") from None
    return 0


def cmd_exec(a) -> int:
    from .exec_process import ExecOptions, exec_in_container
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    opts = ExecOptions(args=args, process_file=a.process_file, tty=a.tty, console_socket=a.console_socket,
                       detach=a.detach, pid_file=a.pid_file, env=a.env, cwd=a.cwd, user=a.user,
                       additional_gids=a.additional_gids, caps=a.cap, no_new_privs=a.no_new_privs,
                       apparmor=a.apparmor, process_label=a.process_label,
                       preserve_fds=_checked_preserve_fds(a.preserve_fds),
                       ignore_paused=a.ignore_paused, cgroup=a.cgroup)
    return exec_in_container(a.root, a.id, opts)


def cmd_update(a) -> int:
    from .update import parse_update_flags, update
    update(a.root, a.id, parse_update_flags(a))
    return 0


def cmd_events(a) -> int:
    from .events import events, parse_duration
    return events(a.root, a.id, parse_duration(a.interval), a.stats)


def cmd_features(a) -> int:
    from .defaults import features
    import json
    _out(json.dumps(features(), indent=4))
    return 0


# runc's exit status when the command itself fails (not the container's process): `exec`
# says 255, so that a caller can tell "exec failed" from any status the process may return.
_FAILURE_STATUS = {"exec": 255}
_FAILURE_PREFIX = {"exec": "exec failed: "}

COMMANDS = {
    "create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "list": cmd_list, "ps": cmd_ps, "spec": cmd_spec, "features": cmd_features,
    "pause": cmd_pause, "resume": cmd_resume, "exec": cmd_exec,
    "update": cmd_update, "events": cmd_events,
}


def _print_version() -> None:
    _out(f"ocirun version {__version__}\ncommit: {COMMIT}\nspec: {SPEC_VERSION}")


def _log_flags(argv: list[str]) -> tuple[str | None, str]:
    """--log and --log-format from a command line argparse refused, so the error still lands."""
    path, fmt = None, "text"
    for i, arg in enumerate(argv):
        for flag in ("--log", "--log-format"):
            value = None
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg[len(flag) + 1:]
            if value is not None:
                if flag == "--log":
                    path = value
                elif value in ("text", "json"):
                    fmt = value
    return path, fmt


# Engines call these all the time; their usual forms are parsed without argparse (~8 ms of
# imports and parser building: a third of what `state` costs).  Anything else — an unknown or
# abbreviated flag, `-bVALUE`, a missing or extra argument — goes to argparse, which decides
# and reports.  Each table: flag -> (attribute, kind); kinds: bool, str, int, list.
_CREATE_FAST = {"--bundle": ("bundle", "str"), "-b": ("bundle", "str"),
                "--console-socket": ("console_socket", "str"), "--pid-file": ("pid_file", "str"),
                "--no-pivot": ("no_pivot", "bool"), "--no-new-keyring": ("no_new_keyring", "bool"),
                "--preserve-fds": ("preserve_fds", "int")}
_FAST_FLAGS = {
    "start": {}, "state": {},
    "delete": {"--force": ("force", "bool"), "-f": ("force", "bool")},
    "kill": {"--all": ("all", "bool"), "-a": ("all", "bool")},
    "create": _CREATE_FAST,
    "run": {**_CREATE_FAST, "--detach": ("detach", "bool"), "-d": ("detach", "bool"),
            "--keep": ("keep", "bool")},
    "exec": {"--process": ("process_file", "str"), "-p": ("process_file", "str"),
             "--tty": ("tty", "bool"), "-t": ("tty", "bool"), "--detach": ("detach", "bool"),
             "-d": ("detach", "bool"), "--console-socket": ("console_socket", "str"),
             "--pid-file": ("pid_file", "str"), "--preserve-fds": ("preserve_fds", "int"),
             "--env": ("env", "list"), "-e": ("env", "list"), "--cwd": ("cwd", "str"),
             "--user": ("user", "str"), "-u": ("user", "str"),
             "--no-new-privs": ("no_new_privs", "bool"), "--ignore-paused": ("ignore_paused", "bool")},
}
_FAST_DEFAULTS = {
    "create": {"bundle": ".", "console_socket": None, "pid_file": None, "no_pivot": False,
               "no_new_keyring": False, "preserve_fds": 0},
    "exec": {"process_file": None, "tty": False, "detach": False, "console_socket": None,
             "pid_file": None, "preserve_fds": 0, "env": None, "cwd": None, "user": None,
             "additional_gids": None, "cap": None, "no_new_privs": False, "apparmor": None,
             "process_label": None, "ignore_paused": False, "cgroup": None, "args": None},
}
_FAST_DEFAULTS["run"] = {**_FAST_DEFAULTS["create"], "detach": False, "keep": False}
_FAST_GLOBALS = {"--root": ("root", "str"), "--log": ("log", "str"), "--log-format": ("log_format", "str"),
                 "--debug": ("debug", "bool"), "--systemd-cgroup": ("systemd_cgroup", "bool"),
                 "--rootless": ("rootless", "str"), "--criu": ("criu", "str")}

def _take_flag(a, table: dict, argv: list[str], i: int):
    """Store argv[i] (and its value) on `a`; the next index, or None to leave it to argparse."""
    flag, eq, value = argv[i].partition("=")
    if flag not in table:
        return None
    dest, kind = table[flag]
    if kind == "bool":
        if eq:
            return None
        setattr(a, dest, True)
        return i + 1
    if not eq:
        if i + 1 >= len(argv) or (argv[i + 1].startswith("-") and argv[i + 1] != "-"):
            return None  # argparse decides whether "--pid-file --detach" is a value
        i += 1
        value = argv[i]
    if kind == "int":
        try:
            value = int(value)
        except ValueError:
            return None
    if kind == "list":
        if getattr(a, dest) is None:
            setattr(a, dest, [])
        getattr(a, dest).append(value)
    else:
        setattr(a, dest, value)
    return i + 1


class _Args:
    """What argparse's Namespace is to the rest of cli.py (types.SimpleNamespace: one import more)."""

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


def _fast_parse(argv: list[str]):
    a = _Args(root=None, log=None, log_format="text", debug=False, systemd_cgroup=False,
                        rootless=None, criu=None, version=False, command=None, force=False, all=False)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i = _take_flag(a, _FAST_GLOBALS, argv, i)
        if i is None:
            return None
    if a.log_format not in ("text", "json") or i >= len(argv) or argv[i] not in _FAST_FLAGS:
        return None
    a.command, i = argv[i], i + 1
    table = _FAST_FLAGS[a.command]
    for k, v in _FAST_DEFAULTS.get(a.command, {}).items():
        setattr(a, k, v)
    positional = []
    while i < len(argv):
        if a.command == "exec" and positional:
            a.args = argv[i:]  # everything after the id is the command, flags included
            if a.args[0] == "--":
                a.args = a.args[1:]
            break
        if argv[i].startswith("-") and argv[i] != "-":
            i = _take_flag(a, table, argv, i)
            if i is None:
                return None
        else:
            positional.append(argv[i])
            i += 1
    want = (1, 2) if a.command == "kill" else (1,)
    if len(positional) not in want:
        return None
    a.id = positional[0]
    if a.command == "kill":
        a.signal = positional[1] if len(positional) == 2 else "SIGTERM"
    if a.command == "exec":
        for k in ("env", "additional_gids", "cap", "cgroup", "args"):
            if getattr(a, k) is None:
                setattr(a, k, [])
    return a


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    a = _fast_parse(args)
    if a is None:
        parser = build_parser(invoked_command(args))
        try:
            a = parser.parse_args(args)
        except UsageError as e:
            _log.configure(*_log_flags(args), False).error(str(e))
            return 1
    logger = _log.configure(a.log, a.log_format, a.debug)
    if a.version:
        _print_version()
        return 0
    if not a.command:
        build_parser().print_help()
        return 0
    a.root = a.root or os.environ.get("OCIRUN_ROOT") or "/run/ocirun"
    failed = _FAILURE_STATUS.get(a.command, 1)
    prefix = _FAILURE_PREFIX.get(a.command, "")
    if logger.debug_enabled:
        logger.debug(f"ocirun {__version__} {a.command}: root {a.root}, arguments {args!r}")
    try:
        if a.systemd_cgroup:
            raise OCIError("--systemd-cgroup: the systemd cgroup driver is not supported; use cgroupfs")
        return COMMANDS[a.command](a)
    except OCIError as e:
        logger.error(prefix + str(e))
        return failed
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except _OutputGone:
        return 1
    except Exception as e:  # noqa: BLE001 — a bug must still be one line for the user
        if a.debug:
            import traceback
            logger.debug(traceback.format_exc())
        logger.error(prefix + describe(e))  # the kernel's words for an OSError; one printable line
        return failed


def run_and_exit() -> None:
    """The `ocirun` executable: main(), then leave without the interpreter's teardown (~1 ms
    of freeing every module and object: nothing of ours needs it; every file we write is
    closed by then, and stdout/stderr are flushed here)."""
    rc = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: we were started with that fd closed
                stream.flush()
        except OSError:  # a reader that went away: what was left unread is lost either way
            rc = rc or 1
    os._exit(rc)


if __name__ == "__main__":
    run_and_exit()
