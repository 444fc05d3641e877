"""The `ocirun` command line: runc's subcommands, flags, exit codes and output.

No logic lives here beyond parsing and printing: the container commands are thin calls of the
Python API (api.py, which imports each operation's module only when it runs); update, events,
spec and features call their modules directly.
Every failure ends in `main()`: one line on stderr, one error line in `--log`, exit status 1.
"""
from __future__ import annotations

import os
import sys

from . import SPEC_VERSION, __version__, jsonio
from . import log as _log
from .errors import OCIError, describe, os_words


class UsageError(OCIError):
    pass


class _OutputGone(Exception):
    """Whoever read our stdout went away (`ocirun list | head -1`): stop quietly."""


def _out(text: str) -> None:
    try:
        print(text)
    except BrokenPipeError:
        raise _OutputGone from None


# ---------------------------------------------------------------------------- the table

# Every command's flags and positionals, declared once.  The argparse parser (`build_parser`),
# the fast parser of the engine commands (`_fast_parse`), the global flags that take a value
# (`invoked_command`) and the --log pre-scan (`_log_flags`) are derived from it, and
# tests/unit/test_cli_table.py walks every flag through both parsers.  Plain constant tuples:
# the compiler folds them into the .pyc, so the table costs nothing at import (a record class
# would cost a call per flag on every command).
#
# A flag:       (names, dest, kind, default, help)
#     kind: "bool" (present or not), "str", "int", "list" (repeatable), "ints" (repeatable
#     integers), or a tuple of the values allowed (a choice).
# A positional: (name, arity, default, help)
#     arity: "1"; "?" (optional: `default` when absent); "..." (the rest of the command line,
#     dashes included: `exec ID cmd -l`, `ps ID -ef`, as runc).
# A command:    (help, flags, argparse_only, positionals, fast)
#     argparse_only: flags the fast parser leaves to argparse (engines do not pass them);
#     fast: whether `_fast_parse` reads the command at all (those engines run for every container).

_ID = (("id", "1", None, "the container's id"),)

_CREATE_FLAGS = (
    (("--bundle", "-b"), "bundle", "str", ".", "path to the bundle (default: cwd)"),
    (("--console-socket",), "console_socket", "str", None, "AF_UNIX socket that receives the pty master"),
    (("--pid-file",), "pid_file", "str", None, "file to write the container's host pid to"),
    (("--no-pivot",), "no_pivot", "bool", False, "MS_MOVE + chroot instead of pivot_root"),
    (("--no-new-keyring",), "no_new_keyring", "bool", False, "keep the caller's session keyring"),
    (("--preserve-fds",), "preserve_fds", "int", 0, "pass N extra fds (3..3+N-1)"),
)

_FORMAT = (("--format", "-f"), "format", ("table", "json"), "table", "output format")

_UPDATE_FLAGS = (
    (("--resources", "-r"), "resources", "str", None,
     "path to a linux.resources JSON file, or '-' for stdin (other flags are then ignored)"),
    (("--memory",), "memory", "str", None, "memory limit in bytes (64m, 1g; -1 = unlimited)"),
    (("--memory-reservation",), "memory_reservation", "str", None, "memory soft limit in bytes"),
    (("--memory-swap",), "memory_swap", "str", None, "memory+swap limit in bytes (-1 = unlimited)"),
    (("--kernel-memory",), "kernel_memory", "str", None, "(ignored by the kernel, as in runc)"),
    (("--kernel-memory-tcp",), "kernel_memory_tcp", "str", None, "kernel TCP buffer limit in bytes (v1 only)"),
    (("--cpu-shares", "--cpu-share"), "cpu_shares", "str", None, "cpu shares (relative weight)"),
    (("--cpu-period",), "cpu_period", "str", None, "CFS period in microseconds"),
    (("--cpu-quota",), "cpu_quota", "str", None, "CFS quota in microseconds per period (-1 = none)"),
    (("--cpu-rt-period",), "cpu_rt_period", "str", None, "realtime period in microseconds (v1 only)"),
    (("--cpu-rt-runtime",), "cpu_rt_runtime", "str", None, "realtime runtime in microseconds (v1 only)"),
    (("--cpuset-cpus",), "cpuset_cpus", "str", None, "cpus to use (0-3, 0,1)"),
    (("--cpuset-mems",), "cpuset_mems", "str", None, "memory nodes to use"),
    (("--pids-limit",), "pids_limit", "str", None, "maximum number of pids (-1 = unlimited)"),
    (("--blkio-weight",), "blkio_weight", "str", None, "block I/O weight, 10 to 1000"),
    (("--l3-cache-schema",), "l3_cache_schema", "str", None, "Intel RDT L3 schema (not supported)"),
    (("--mem-bw-schema",), "mem_bw_schema", "str", None, "Intel RDT memory bandwidth schema (not supported)"),
)

_EXEC_FLAGS = (
    (("--process", "-p"), "process_file", "str", None, "runtime-spec process JSON (instead of the command)"),
    (("--tty", "-t"), "tty", "bool", False, "allocate a pseudo-terminal"),
    (("--console-socket",), "console_socket", "str", None, "AF_UNIX socket that receives the pty master"),
    (("--detach", "-d"), "detach", "bool", False, "do not wait for the process"),
    (("--pid-file",), "pid_file", "str", None, "file to write the process's host pid to"),
    (("--env", "-e"), "env", "list", None, "set an environment variable NAME=VALUE (repeatable)"),
    (("--cwd",), "cwd", "str", None, "working directory inside the container"),
    (("--user", "-u"), "user", "str", None, "UID[:GID] to run as"),
    (("--no-new-privs",), "no_new_privs", "bool", False, "set no_new_privileges"),
    (("--preserve-fds",), "preserve_fds", "int", 0, "pass N extra fds (3..3+N-1)"),
    (("--ignore-paused",), "ignore_paused", "bool", False, "exec even if the container is paused"),
)
_EXEC_ARGPARSE_ONLY = (
    (("--additional-gids", "-g"), "additional_gids", "ints", None, "an additional group id (repeatable)"),
    (("--cap", "-c"), "cap", "list", None, "add a capability (repeatable)"),
    (("--apparmor",), "apparmor", "str", None, "AppArmor profile"),
    (("--process-label",), "process_label", "str", None, "SELinux label"),
    (("--cgroup",), "cgroup", "list", None,
     "[CONTROLLER[,CONTROLLER]:]PATH: run in an existing sub-cgroup (repeatable)"),
)

# runc's checkpoint/restore flags (CRIU's options; checkpoint.py, restore.py).
_CRIU_SHARED = (
    (("--image-path",), "image_path", "str", "", "directory of the CRIU image files (default: ./checkpoint)"),
    (("--work-path",), "work_path", "str", "", "directory for CRIU's work files and log (default: the image path)"),
    (("--tcp-established",), "tcp_established", "bool", False, "allow open TCP connections"),
    (("--ext-unix-sk",), "ext_unix_sk", "bool", False, "allow external unix sockets"),
    (("--shell-job",), "shell_job", "bool", False, "allow shell jobs (a session reaching outside the container)"),
    (("--file-locks",), "file_locks", "bool", False, "handle file locks"),
    (("--manage-cgroups-mode",), "manage_cgroups_mode", "str", "",
     "cgroups mode: soft|full|strict|ignore (default: CRIU's, soft)"),
    (("--empty-ns",), "empty_ns", "list", None,
     "create this namespace but do not restore its content (repeatable; network only)"),
    (("--auto-dedup",), "auto_dedup", "bool", False, "deduplicate memory images against the parent's"),
    (("--lazy-pages",), "lazy_pages", "bool", False, "restore memory pages on first use (userfaultfd)"),
)
_CHECKPOINT_FLAGS = _CRIU_SHARED + (
    (("--parent-path",), "parent_path", "str", "", "a pre-dump's image directory, relative to --image-path"),
    (("--leave-running",), "leave_running", "bool", False, "leave the container running after the checkpoint"),
    (("--tcp-skip-in-flight",), "tcp_skip_in_flight", "bool", False, "skip TCP connections still being set up"),
    (("--link-remap",), "link_remap", "bool", False, "link deleted-but-open files back when possible"),
    (("--status-fd",), "status_fd", "int", -1, "with --lazy-pages: fd CRIU writes \\0 to when pages can be served"),
    (("--page-server",), "page_server", "str", "", "ADDRESS:PORT of a CRIU page server to send memory to"),
    (("--pre-dump",), "pre_dump", "bool", False, "dump memory only and leave the container running"),
)
_RESTORE_FLAGS = _CRIU_SHARED + (
    (("--bundle", "-b"), "bundle", "str", ".", "path to the bundle (default: cwd)"),
    (("--console-socket",), "console_socket", "str", None, "AF_UNIX socket that receives the pty master"),
    (("--detach", "-d"), "detach", "bool", False, "do not wait for the container"),
    (("--pid-file",), "pid_file", "str", None, "file to write the container's host pid to"),
    (("--no-subreaper",), "no_subreaper", "bool", False, "do not become a subreaper for the container's orphans"),
    (("--no-pivot",), "no_pivot", "bool", False, "(accepted for runc compatibility: CRIU makes the mounts)"),
    (("--lsm-profile",), "lsm_profile", "str", "", "LSM profile for the restored processes (TYPE:NAME)"),
    (("--lsm-mount-context",), "lsm_mount_context", "str", "", "LSM mount context for the restored mounts"),
)

# The flags before the command; the same layout as a command.
GLOBALS = (
    "OCI runtime-spec container runtime (runc-compatible)",
    ((("--root",), "root", "str", None, "state directory (default /run/ocirun)"),
     (("--log",), "log", "str", None, "log file (default: stderr)"),
     (("--log-format",), "log_format", ("text", "json"), "text", "log format"),
     (("--debug",), "debug", "bool", False, "write debug lines to the log"),
     (("--systemd-cgroup",), "systemd_cgroup", "bool", False,
      "let systemd make the container's cgroup: a transient scope in the slice that cgroupsPath "
      "(\"slice:prefix:name\") names"),
     (("--rootless",), "rootless", "str", "auto",
      "run without root: auto (when not root, or inside a user namespace), true or false (runc's)"),
     (("--criu",), "criu", "str", None, "the criu binary for checkpoint and restore (default: criu on PATH)")),
    ((("--version", "-v"), "version", "bool", False, "print the version"),),
    (),
    True,
)

# Only the invoked command's argparse parser is built: all of them cost ~4 ms, on every call.
SUBCOMMANDS = {
    "create": ("create a container", _CREATE_FLAGS, (), _ID, True),
    "run": ("create and start a container, wait for it",
            _CREATE_FLAGS + ((("--detach", "-d"), "detach", "bool", False, "do not wait for the container"),
                             (("--keep",), "keep", "bool", False, "do not delete the container after it exits")),
            (), _ID, True),
    "start": ("start a container", (), (), _ID, True),
    "state": ("state a container", (), (), _ID, True),
    "pause": ("pause a container", (), (), _ID, False),
    "resume": ("resume a container", (), (), _ID, False),
    "kill": ("send a signal to a container's init",
             ((("--all", "-a"), "all", "bool", False, "signal every process of the container"),),
             (), _ID + (("signal", "?", "SIGTERM", "signal name or number (default SIGTERM)"),), True),
    "delete": ("delete a container",
               ((("--force", "-f"), "force", "bool", False, "kill and delete a running container"),),
               (), _ID, True),
    "list": ("list containers",
             (_FORMAT, (("--quiet", "-q"), "quiet", "bool", False, "only the ids")), (), (), False),
    # runc: `ps [options] ID [ps options]`: everything after the id is ps's, dashes included.
    "ps": ("processes of a container",
           (_FORMAT,), (), _ID + (("ps_args", "...", None, "options for ps(1) (default -ef)"),), False),
    "update": ("update a container's resource limits", _UPDATE_FLAGS, (), _ID, False),
    "events": ("print a container's resource usage and OOM events (JSON lines)",
               ((("--interval",), "interval", "str", "5s", "time between stats events (Go duration, default 5s)"),
                (("--stats",), "stats", "bool", False, "print one stats event and exit")),
               (), _ID, False),
    "spec": ("write a default config.json",
             ((("--bundle", "-b"), "bundle", "str", ".", "where to write config.json (default: cwd)"),
              (("--rootless",), "spec_rootless", "bool", False,
               "a config for a rootless container: a user namespace mapping you to root, no network namespace")),
             (), (), False),
    "exec": ("run a new process inside a running container", _EXEC_FLAGS, _EXEC_ARGPARSE_ONLY,
             _ID + (("args", "...", None, "the command and its arguments"),), True),
    "features": ("print what this runtime supports (JSON)", (), (), (), False),
    "checkpoint": ("checkpoint a running container with CRIU", _CHECKPOINT_FLAGS, (), _ID, False),
    "restore": ("restore a container from a checkpoint, then wait for it as run does", _RESTORE_FLAGS, (),
                _ID, False),
    "check": ("tell what this host supports for ocirun, and how to fix what it lacks", (_FORMAT,), (), (), False),
}


def _parser_class():
    """argparse is imported only when a command line needs it (see `_fast_parse`)."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """Usage mistakes are one-line errors with exit status 1, like runc's."""

        def error(self, message: str):
            raise UsageError(f"{self.prog}: {message}")

    return _Parser


def _add_arguments(p, command: tuple) -> None:
    """One command's (or the globals') table entry as argparse arguments."""
    _help, flags, argparse_only, positionals, _fast = command
    for names, dest, kind, default, helptext in flags + argparse_only:
        if kind == "bool":
            p.add_argument(*names, dest=dest, action="store_true", help=helptext)
        elif kind in ("list", "ints"):
            p.add_argument(*names, dest=dest, action="append", default=[], help=helptext,
                           type=int if kind == "ints" else None)
        elif isinstance(kind, tuple):
            p.add_argument(*names, dest=dest, default=default, choices=kind, help=helptext)
        else:
            p.add_argument(*names, dest=dest, default=default, help=helptext,
                           type=int if kind == "int" else None)
    for name, arity, default, helptext in positionals:
        if arity == "1":
            p.add_argument(name, help=helptext)
        else:  # "?" or "..." (argparse.REMAINDER)
            p.add_argument(name, nargs=arity, default=default, help=helptext)


def _global_with_value() -> set[str]:
    """The global flags whose value is the next argument (`--root DIR`)."""
    _help, flags, argparse_only, _positionals, _fast = GLOBALS
    return {name for names, _dest, kind, _default, _text in flags + argparse_only if kind != "bool"
            for name in names}


def invoked_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (skipping global flags and their values)."""
    with_value = _global_with_value()
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def build_parser(only: str | None = None):
    """The parser; with `only`, just that subcommand (each sub-parser costs ~0.3 ms to build)."""
    ap = _parser_class()(prog="ocirun", description=GLOBALS[0])
    _add_arguments(ap, GLOBALS)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else SUBCOMMANDS:
        command = SUBCOMMANDS[name]
        _add_arguments(sub.add_parser(name, help=command[0]), command)
    return ap


# ---------------------------------------------------------------------------- commands

def _preserve_fds_refusal(a) -> str | None:
    """Why the command's --preserve-fds cannot be honoured (None: fine, or no such flag).  The
    API checks it again for its own callers; main() asks first, in the flag's name, before we
    open anything of our own (a huge N once meant a loop over billions of fds; an fd not open
    in the range would be filled by one of ours)."""
    n = getattr(a, "preserve_fds", None)
    if not n:  # absent, or 0: nothing to check (and no module to load for it)
        return None
    listen = 0
    if a.command in ("create", "run") and "LISTEN_FDS" in os.environ:  # they come first (create.py)
        from .create import systemd_listen_fds
        listen = systemd_listen_fds()
    from .api import checked_preserve_fds
    try:
        checked_preserve_fds(n, "--preserve-fds", listen)
    except OCIError as e:
        return str(e)
    return None


def _create_args(a) -> dict:
    """The keyword arguments of api.Container.create (and api.run) from create's flags."""
    return {"console_socket": a.console_socket, "pid_file": a.pid_file, "no_pivot": a.no_pivot,
            "no_new_keyring": a.no_new_keyring, "preserve_fds": a.preserve_fds,
            "systemd_cgroup": a.systemd_cgroup, "rootless": a.rootless}


def _unwind_on_termination() -> None:
    """SIGTERM or SIGHUP during `create` unwinds like Ctrl-C, so the half-made container is removed
    instead of left for `delete --force`.  (The children reset these signals after fork.)"""
    import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

    def interrupt(_sig, _frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def cmd_create(a) -> int:
    from .api import Container
    _unwind_on_termination()
    Container.create(a.bundle, a.id, root=a.root, **_create_args(a))
    return 0


def cmd_start(a) -> int:
    from .api import Container
    Container(a.id, a.root).start()
    return 0


def cmd_run(a) -> int:
    from .api import run
    if a.detach:
        _unwind_on_termination()  # without --detach, run forwards every signal to the container
    status = run(a.bundle, a.id, root=a.root, detach=a.detach, keep=a.keep, forward_signals=True,
                 **_create_args(a))
    return 0 if a.detach else status  # detached, run() returns the init's pid


def cmd_state(a) -> int:
    from .api import Container
    _out(jsonio.dumps_indented(Container(a.id, a.root).state()))
    return 0


def cmd_kill(a) -> int:
    from .api import Container
    Container(a.id, a.root).kill(a.signal, all=a.all)
    return 0


def cmd_delete(a) -> int:
    from .api import Container
    Container(a.id, a.root).delete(force=a.force)
    return 0


def cmd_pause(a) -> int:
    from .api import Container
    Container(a.id, a.root).pause()
    return 0


def cmd_resume(a) -> int:
    from .api import Container
    Container(a.id, a.root).resume()
    return 0


PS_TIMEOUT_S = 30.0  # ps(1) reads /proc: seconds on the busiest host, never forever


def cmd_ps(a) -> int:
    from .api import Container
    pids = Container(a.id, a.root).processes()
    if a.format == "json":
        _out(jsonio.dumps(pids))
        return 0
    import subprocess
    ps_args = a.ps_args[1:] if a.ps_args[:1] == ["--"] else a.ps_args
    shown = " ".join(ps_args or ["-ef"])
    try:
        ps = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True, timeout=PS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OCIError(f"ps {shown}: no answer after {PS_TIMEOUT_S:g}s") from None
    except OSError as e:
        raise OCIError(f"ps: {os_words(e)}") from None
    if ps.returncode != 0:  # a bad option of ps's own: its complaint, and a failure (runc too)
        said = next((line.strip() for line in ps.stderr.splitlines() if line.strip()), "")
        raise OCIError(f"ps {shown}: exit status {ps.returncode}" + (f": {said}" if said else ""))
    out = ps.stdout.splitlines()
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
    from .api import Container
    items = Container.list(a.root)
    if a.quiet:
        for s in items:
            _out(s["id"])
    elif a.format == "json":
        _out(jsonio.dumps(items))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s.get("owner", ""))
                 for s in items]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            _out("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_spec(a) -> int:
    from .defaults import default_config, to_rootless
    path = os.path.join(a.bundle, "config.json")
    if os.path.exists(path):
        raise OCIError(f"File {path} exists. Remove it first")
    cfg = default_config()
    if a.spec_rootless:
        cfg = to_rootless(cfg, os.geteuid(), os.getegid())
    try:
        with open(path, "w") as f:
            import json
            json.dump(cfg, f, indent="\t")
            f.write("\n")
    except OSError as e:
        raise OCIError(f"write {path}: {os_words(e)}") from None
    return 0


def cmd_exec(a) -> int:
    from .api import Container
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    status = Container(a.id, a.root).exec(
        args, process_file=a.process_file, tty=a.tty, console_socket=a.console_socket, detach=a.detach,
        pid_file=a.pid_file, env=a.env, cwd=a.cwd, user=a.user, additional_gids=a.additional_gids,
        caps=a.cap, no_new_privs=a.no_new_privs, apparmor=a.apparmor, process_label=a.process_label,
        preserve_fds=a.preserve_fds, ignore_paused=a.ignore_paused, cgroup=a.cgroup,
        forward_signals=True)
    return 0 if a.detach else status  # detached, exec() returns the process's pid


def cmd_update(a) -> int:
    from .update import parse_update_flags, update
    update(a.root, a.id, parse_update_flags(a))
    return 0


def cmd_events(a) -> int:
    from .events import events, parse_duration
    return events(a.root, a.id, parse_duration(a.interval), a.stats)


def cmd_checkpoint(a) -> int:
    from .checkpoint import CheckpointOptions, checkpoint
    checkpoint(a.root, a.id, CheckpointOptions(**_criu_flags(a, _CHECKPOINT_FLAGS)))
    return 0


def cmd_restore(a) -> int:
    from .restore import RestoreOptions, restore
    if a.detach:
        _unwind_on_termination()  # undone like a half-created one; in the foreground signals are relayed
    return restore(a.root, a.id, RestoreOptions(systemd_cgroup=a.systemd_cgroup, rootless=a.rootless,
                                                **_criu_flags(a, _RESTORE_FLAGS)))


def _criu_flags(a, flags: tuple) -> dict:
    """The command's flags as its options record's fields (same names), and the global --criu."""
    return {dest: getattr(a, dest) for _names, dest, *_rest in flags} | {"criu_path": a.criu}


def cmd_features(a) -> int:
    from .defaults import features
    import json
    _out(json.dumps(features(), indent=4))
    return 0


def cmd_check(a) -> int:
    from .check import as_json, as_table, run_checks
    from .rootless import is_rootless
    rootless = is_rootless(a.rootless)
    findings, blocking = run_checks(rootless, a.criu)
    if a.format == "json":
        import json
        _out(json.dumps(as_json(findings, blocking, rootless), indent=2))
    else:
        _out("\n".join(as_table(findings, blocking, rootless)))
    return 1 if blocking else 0


# runc's exit status when the command itself fails (not the container's process): `exec`
# says 255, so that a caller can tell "exec failed" from any status the process may return.
_FAILURE_STATUS = {"exec": 255}
_FAILURE_PREFIX = {"exec": "exec failed: "}

COMMANDS = {
    "create": cmd_create, "start": cmd_start, "run": cmd_run, "state": cmd_state, "kill": cmd_kill,
    "delete": cmd_delete, "list": cmd_list, "ps": cmd_ps, "spec": cmd_spec, "features": cmd_features,
    "pause": cmd_pause, "resume": cmd_resume, "exec": cmd_exec,
    "update": cmd_update, "events": cmd_events, "checkpoint": cmd_checkpoint, "restore": cmd_restore,
    "check": cmd_check,
}


def _print_version() -> None:
    from .buildinfo import commit  # in a checkout it asks git: only --version pays for that
    _out(f"ocirun version {__version__}\ncommit: {commit()}\nspec: {SPEC_VERSION}")


def _log_flags(argv: list[str]) -> tuple[str | None, str]:
    """--log and --log-format from a command line argparse refused, so the error still lands."""
    found: dict = {}
    for names, dest, kind, default, _text in GLOBALS[1]:
        if dest not in ("log", "log_format"):
            continue
        found[dest] = default
        for i, arg in enumerate(argv):
            for name in names:
                value = None
                if arg == name and i + 1 < len(argv):
                    value = argv[i + 1]
                elif arg.startswith(name + "="):
                    value = arg[len(name) + 1:]
                if value is not None and (not isinstance(kind, tuple) or value in kind):
                    found[dest] = value
    return found["log"], found["log_format"]


# Engines call these all the time; their usual forms are parsed without argparse (~8 ms of
# imports and parser building: a third of what `state` costs).  Anything else — an unknown,
# abbreviated or argparse-only flag, `-bVALUE`, a value that is not an int or not a choice,
# a missing or extra argument — goes to argparse, which decides and reports.

class _Args:
    """What argparse's Namespace is to the rest of cli.py (types.SimpleNamespace: one import more)."""
    command: str | None

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


def _set_defaults(a: _Args, flags: tuple) -> None:
    """What argparse leaves on its namespace for the flags the command line does not give."""
    for _names, dest, kind, default, _text in flags:
        setattr(a, dest, [] if kind in ("list", "ints") else default)


def _find_flag(flags: tuple, name: str) -> tuple | None:
    """The record of the flag called `name`.  (Scanning the few flags costs less than building
    a name -> flag dict, once per process.)"""
    for flag in flags:
        if name in flag[0]:
            return flag
    return None


def _take_flag(a, flags: tuple, argv: list[str], i: int):
    """Store argv[i] (and its value) on `a`; the next index, or None to leave it to argparse."""
    value: str | int
    name, eq, value = argv[i].partition("=")
    flag = _find_flag(flags, name)
    if flag is None:
        return None
    _names, dest, kind, _default, _text = flag
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
    if kind in ("int", "ints"):
        try:
            value = int(value)
        except ValueError:
            return None
    elif isinstance(kind, tuple) and value not in kind:
        return None
    if kind in ("list", "ints"):
        getattr(a, dest).append(value)
    else:
        setattr(a, dest, value)
    return i + 1


def _fast_parse(argv: list[str]):
    flags: tuple
    argparse_only: tuple
    _text, flags, argparse_only, _positionals, _fast = GLOBALS
    a = _Args(command=None)
    _set_defaults(a, flags)
    _set_defaults(a, argparse_only)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i = _take_flag(a, flags, argv, i)
        if i is None:
            return None
    command = SUBCOMMANDS.get(argv[i]) if i < len(argv) else None
    if command is None or not command[4]:
        return None
    a.command, i = argv[i], i + 1
    _text, flags, argparse_only, positionals, _fast = command
    _set_defaults(a, flags)
    _set_defaults(a, argparse_only)
    fixed, required, rest = [], 0, None
    for name, arity, default, _text in positionals:
        if arity == "...":
            rest = name
            setattr(a, name, [])
        else:
            fixed.append(name)
            required += arity == "1"
            setattr(a, name, default)
    values: list[str] = []
    while i < len(argv):
        if rest and len(values) == len(fixed):
            tail = argv[i:]  # everything after the id is the command, flags included
            setattr(a, rest, tail[1:] if tail[0] == "--" else tail)
            break
        if argv[i].startswith("-") and argv[i] != "-":
            i = _take_flag(a, flags, argv, i)
            if i is None:
                return None
        else:
            values.append(argv[i])
            i += 1
    if not required <= len(values) <= len(fixed):
        return None
    for name, value in zip(fixed, values, strict=False):  # the optional ones may be absent
        setattr(a, name, value)
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
    # Before we open anything (the log): fds 3..3+N-1 must be the caller's, none of ours.
    fds_refused = _preserve_fds_refusal(a)
    logger = _log.configure(a.log, a.log_format, a.debug)
    if a.version:
        _print_version()
        return 0
    if not a.command:
        build_parser().print_help()
        return 0
    unusable = logger.open_file()
    if unusable:  # where an engine would look for our errors: say so where a person looks
        _log.Logger().error(unusable)
        return 1
    a.root = a.root or os.environ.get("OCIRUN_ROOT")
    if not a.root:
        from .rootless import default_root
        a.root = default_root()
    failed = _FAILURE_STATUS.get(a.command, 1)
    prefix = _FAILURE_PREFIX.get(a.command, "")
    if logger.debug_enabled:
        logger.debug(f"ocirun {__version__} {a.command}: root {a.root}, arguments {args!r}")
    if fds_refused:
        logger.error(prefix + fds_refused)
        return failed
    try:
        from .preload import preload
        preload(a.command)
        return COMMANDS[a.command](a)
    except OCIError as e:
        if a.debug and e.__cause__ is not None:  # a bug the API turned into an OCIError
            import traceback
            logger.debug("".join(traceback.format_exception(e.__cause__)))
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
