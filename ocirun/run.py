"""`ocirun run`: create + start, then (unless --detach) wait, relay and return the exit status.

Without --detach we are a child subreaper, so the init is re-parented to us when the
intermediate exits and we can wait for it.  Signals we receive are forwarded to the init (like
runc's signal handler); the exit status is the init's, or 128+signal when a signal killed it.
With `process.terminal` and no --console-socket we receive the pty master ourselves and relay
it to our own terminal.
"""
from __future__ import annotations

import os
import signal
import socket

import prctl

from . import container
from . import log as _log
from .container import CreateOptions

_FORWARDED = [s for s in signal.Signals
              if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGWINCH)]


def run(root: str, cid: str, opts: CreateOptions, detach: bool = False, keep: bool = False) -> int:
    if not detach:
        prctl.set_child_subreaper(True)
    own_console = _needs_own_console(opts)
    console_peer = None
    if own_console:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        opts.console_fd = theirs.detach()
        console_peer = ours
    pid = container.create(root, cid, opts)
    opts.console_fd = -1  # create() closed it
    try:
        master = _receive_master(console_peer) if console_peer else -1
        container.start(root, cid)
        if detach:
            return 0
        _install_forwarders(pid, master)
        if master >= 0:
            from . import console
            console.relay_terminal(master, pid)
        status = _wait_for(pid)
    except BaseException:
        if not detach:
            _cleanup(root, cid)
        raise
    if not keep:
        _cleanup(root, cid)
    return status


def _needs_own_console(opts: CreateOptions) -> bool:
    if opts.console_socket:
        return False
    from .config import read_json
    doc = read_json(os.path.join(opts.bundle, "config.json"))
    return bool(isinstance(doc, dict) and isinstance(doc.get("process"), dict)
                and doc["process"].get("terminal") is True)


def _receive_master(peer: socket.socket) -> int:
    from . import console
    fd = console.recv_console_fd(peer.fileno())
    peer.close()
    return fd


def _install_forwarders(pid: int, master: int) -> None:
    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    if master >= 0 and os.isatty(0):
        def resize(_sig, _frame):
            import fcntl
            import termios
            try:
                fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
            except OSError:
                pass
        signal.signal(signal.SIGWINCH, resize)
        resize(None, None)


def _wait_for(pid: int) -> int:
    """Reap children until the init exits (orphans of a shared pid ns are reaped too)."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def _cleanup(root: str, cid: str) -> None:
    try:
        container.delete(root, cid, force=True)
    except Exception as e:  # noqa: BLE001
        _log.get().warn(f"delete {cid}: {e}")
