"""`ocirun run`: create + start, then (unless --detach) wait, relay and return the exit status.

Without --detach we are a child subreaper, so the init is re-parented to us when the
intermediate exits and we can wait for it.  Signals we receive, from before `create` on, are
forwarded to the init (like runc's signal handler: none kills us half-way and leaves the
container behind); the exit status is the init's, or 128+signal when a signal killed it.
With --detach, SIGTERM/SIGHUP during create unwind it (cli.py) like Ctrl-C.
With `process.terminal` and no --console-socket we receive the pty master ourselves and relay
it to our own terminal.
"""
from __future__ import annotations

import os

import _socket  # not socket.py (ARCHITECTURE.md, Startup speed)

from . import create, delete, start
from . import log as _log
from .create import CreateOptions
from .foreground import SignalRelay, become_subreaper, install_resize, stop_being_subreaper, wait_for, wait_for_child


def run(root: str, cid: str, opts: CreateOptions, detach: bool = False, keep: bool = False,
        forward_signals: bool = True) -> int:
    """The init's exit status (128+n for signal n), or its host pid with `detach`.

    `forward_signals` False (the library API) waits for the init alone, leaves the caller's
    signal handlers as they are and gives its subreaper flag back; the CLI relays and reaps."""
    if detach:
        return _run(root, cid, opts, True, keep, False)
    was_subreaper = become_subreaper()  # the init is re-parented to us when the intermediate exits
    try:
        return _run(root, cid, opts, False, keep, forward_signals)
    finally:
        if not forward_signals:
            stop_being_subreaper(was_subreaper)


def _run(root: str, cid: str, opts: CreateOptions, detach: bool, keep: bool, forward_signals: bool) -> int:
    relay = None
    if forward_signals:
        # From the first moment, so that no signal kills us half-way and leaves the container.
        relay = SignalRelay()
    own_console = _needs_own_console(opts)
    console_peer = None
    if own_console:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        opts.console_fd = theirs.detach()
        console_peer = ours
    elif not detach and not opts.console_socket:
        from .pipes import TerminalPipes
        opts.stdio_pipes = TerminalPipes.if_needed()  # never our terminal to the container (pipes.py)
    try:
        pid = create.create(root, cid, opts)
    except BaseException:
        if opts.stdio_pipes is not None:
            opts.stdio_pipes.close()
        if opts.created_pid:  # interrupted (a second TERM/INT) as create returned: it is ours
            _cleanup(root, cid)
        raise
    try:
        opts.console_fd = -1  # create() closed it
        master = _receive_master(console_peer) if console_peer else -1
        start.start(root, cid)
        if detach:
            return pid
        if relay is not None:
            relay.attach(pid)
            install_resize(master)
        if master >= 0:
            from . import console
            console.relay_terminal(master, pid)
        elif opts.stdio_pipes is not None:
            opts.stdio_pipes.relay(pid)
        status = wait_for(pid) if forward_signals else wait_for_child(pid)
        _log.get().debug(f"run {cid}: the init {pid} exited, status {status}")
    except BaseException:
        # Also with --detach: a container that never started is no use to anyone (runc too).
        if opts.stdio_pipes is not None:
            opts.stdio_pipes.close()
        _cleanup(root, cid)
        raise
    if not keep:
        _cleanup(root, cid)
    return status


def _needs_own_console(opts: CreateOptions) -> bool:
    if opts.console_socket:
        return False
    from .config import read_json
    doc = opts.config_doc = read_json(os.path.join(opts.bundle, "config.json"))  # create reuses it
    return bool(isinstance(doc, dict) and isinstance(doc.get("process"), dict)
                and doc["process"].get("terminal") is True)


def _receive_master(peer) -> int:
    from . import console
    fd = console.recv_console_fd(peer.fileno())
    peer.close()
    return fd


def _cleanup(root: str, cid: str) -> None:
    try:
        delete.delete(root, cid, force=True)
    except Exception as e:  # noqa: BLE001
        _log.get().warn(f"delete {cid}: {e}")
