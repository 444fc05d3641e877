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

import _socket  # socket.py imports enum and selectors (~3 ms per command)
# _signal: the same C module as signal, without the enum wrappers signal.py adds (it
# imports enum: ~3 ms per command).
import _signal as signal

import prctl

from . import container
from . import log as _log
from .container import CreateOptions

# Every signal a user can send is relayed, except: those that cannot be caught; SIGCHLD and
# SIGWINCH, which are about us; SIGPIPE and SIGURG, which our own I/O raises; and the fault
# signals, which a Python-level handler would turn into an endless loop on a real fault.
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGWINCH, signal.SIGPIPE,
                  signal.SIGURG, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                  signal.SIGTRAP, signal.SIGSYS}
# The named signals (what signal.Signals lists, aliases once), by number.
_FORWARDED = sorted({getattr(signal, n) for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")}
                    - _NOT_FORWARDED)


def run(root: str, cid: str, opts: CreateOptions, detach: bool = False, keep: bool = False) -> int:
    relay = None
    if not detach:
        prctl.set_child_subreaper(True)
        # From the first moment, so that no signal kills us half-way and leaves the container.
        relay = _SignalRelay()
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
        pid = container.create(root, cid, opts)
    except BaseException:
        if opts.stdio_pipes is not None:
            opts.stdio_pipes.close()
        raise
    opts.console_fd = -1  # create() closed it
    try:
        master = _receive_master(console_peer) if console_peer else -1
        container.start(root, cid)
        if detach:
            return 0
        relay.attach(pid)
        _install_resize(master)
        if master >= 0:
            from . import console
            console.relay_terminal(master, pid)
        elif opts.stdio_pipes is not None:
            opts.stdio_pipes.relay(pid)
        status = _wait_for(pid)
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


class _SignalRelay:
    """Forwards every signal `ocirun run` receives to the container's init (like runc).

    Installed before `create`; signals that arrive before the init runs the container's process
    are held and delivered right after `start`, as runc's buffered signal channel does.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        for sig in _FORWARDED:
            try:
                signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass

    def _on_signal(self, sig, _frame) -> None:
        if self.pid:
            self._forward(sig)
        elif len(self.pending) < 64:
            self.pending.append(sig)

    def _forward(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def attach(self, pid: int) -> None:
        self.pid = pid
        held, self.pending = self.pending, []
        for sig in held:
            self._forward(sig)


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


def _install_resize(master: int) -> None:
    """Keep the container's terminal the size of ours."""
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
