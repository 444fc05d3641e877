"""What `run` and `exec` do in the foreground while the container's process runs: forward the
signals we receive to it, keep its terminal the size of ours, and wait for it (as a child
subreaper, so the init re-parented to us can be reaped).  Both import it; neither owns it.
"""
from __future__ import annotations

import os

import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

# Every signal a user can send is relayed, except: those that cannot be caught; SIGCHLD and
# SIGWINCH, which are about us; SIGPIPE and SIGURG, which our own I/O raises; and the fault
# signals, which a Python-level handler would turn into an endless loop on a real fault.
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGWINCH, signal.SIGPIPE,
                  signal.SIGURG, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                  signal.SIGTRAP, signal.SIGSYS}
# The named signals (what signal.Signals lists, aliases once), by number.
_FORWARDED = sorted({getattr(signal, n) for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")}
                    - _NOT_FORWARDED)


# Termination signals: a second one before the container's process runs gives up on it.
_TERMINATION = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalRelay:
    """Forwards every signal `run` (or `exec`) receives to the container's process (like runc).

    Installed before `create`; signals that arrive before the init runs the container's process
    are held and delivered right after `start`, as runc's buffered signal channel does.  But a
    second termination signal (TERM, INT, HUP) before then raises KeyboardInterrupt: `create`
    unwinds and the container is removed.  Without that, a createContainer hook without a
    timeout that never ends held `run` until a SIGKILL, which leaves the container behind.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        self.giving_up = False
        for sig in _FORWARDED:
            try:
                signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass

    def _on_signal(self, sig, _frame) -> None:
        if self.pid:
            self._forward(sig)
        elif self.giving_up:
            return  # the unwinding must not be interrupted in its turn
        elif sig in _TERMINATION and any(s in _TERMINATION for s in self.pending):
            self.giving_up = True
            raise KeyboardInterrupt
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


def install_resize(master: int) -> None:
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


def wait_for(pid: int) -> int:
    """Reap children until `pid` exits (orphans of a shared pid ns are reaped too); its exit
    status, or 128+n when signal n killed it."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def wait_for_child(pid: int) -> int:
    """Reap only `pid` (no other child of the caller's is touched: the library API's foreground,
    where the caller may have children of its own); its exit status, or 128+n for signal n."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # the caller ignores SIGCHLD (the kernel reaps), or reaped it itself
        from .errors import OCIError
        raise OCIError(f"process {pid} exited, but its exit status was taken before ours "
                       "(SIGCHLD ignored, or reaped elsewhere)") from None
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def become_subreaper() -> bool:
    """Make this process a child subreaper (so a grandchild whose parent exits is re-parented
    to us and can be waited for); whether it already was one, for `stop_being_subreaper`."""
    import _prctl  # python-prctl's C module, not prctl.py (ARCHITECTURE.md, Startup speed)
    was = bool(_prctl.prctl(_prctl.PR_GET_CHILD_SUBREAPER))
    _prctl.prctl(_prctl.PR_SET_CHILD_SUBREAPER, True)
    return was


def stop_being_subreaper(was: bool) -> None:
    """Give back what `become_subreaper` changed (the library API leaves its caller as it was)."""
    if not was:
        import _prctl
        _prctl.prctl(_prctl.PR_SET_CHILD_SUBREAPER, False)
