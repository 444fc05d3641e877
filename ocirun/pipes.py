"""Pipes instead of the caller's terminal, for a container process run in the foreground.

Why: a process that holds an fd of a terminal can push bytes into that terminal's input queue
with ioctl(TIOCSTI) (where `dev.tty.legacy_tiocsti` allows it) and make the admin's shell run
them, or change its settings with other ioctls.  A new session (setsid) already denies TIOCSTI
to a process without CAP_SYS_ADMIN, but a privileged container keeps it.  So, as runc does
in the foreground without `-t`, the container's process never gets a terminal of the host:
each of our stdin/stdout/stderr that is a terminal is replaced by a pipe, and `relay` copies
between the pipes and our own fds until the process exits.  Stdio that is not a terminal
(pipes, files, /dev/null — what engines and scripts pass) is handed on unchanged: nothing to
inject into there, and no copy to pay for.

`--detach` cannot relay (we exit): there the process gets our stdio, as with runc, and its new
session is the defence.
"""
from __future__ import annotations

import os
import select

from . import linux

_CHUNK = 65536
_DRAIN_LIMIT = 1 << 20  # after the process exited: the default pipe buffer is 64 KiB


class TerminalPipes:
    """For each of fds 0, 1, 2 that is a terminal: a pipe, its far end for the container."""

    def __init__(self) -> None:
        self.child_ends: dict[int, int] = {}   # stdio number -> the end the container gets
        self.our_ends: dict[int, int] = {}     # stdio number -> the end we relay through
        for fd in (0, 1, 2):
            if not _is_terminal(fd):
                continue
            r, w = os.pipe2(os.O_CLOEXEC)
            if fd == 0:
                self.child_ends[fd], self.our_ends[fd] = r, w
            else:
                self.child_ends[fd], self.our_ends[fd] = w, r

    @classmethod
    def if_needed(cls) -> "TerminalPipes | None":
        pipes = cls()
        return pipes if pipes.child_ends else None

    def install_in_child(self) -> None:
        """In the forked child, before anything else: our pipe ends become its stdio."""
        for fd, end in self.child_ends.items():
            os.dup2(end, fd)  # dup2's copy is inheritable: it survives execve
        for end in (*self.child_ends.values(), *self.our_ends.values()):
            if end > 2:
                os.close(end)

    def close_child_ends(self) -> None:
        """In the runtime, once the child has its copies: only the container holds them now,
        so our reads see end-of-file when the container's side is closed."""
        for end in self.child_ends.values():
            os.close(end)
        self.child_ends = {}

    def close(self) -> None:
        for end in (*self.child_ends.values(), *self.our_ends.values()):
            try:
                os.close(end)
            except OSError:
                pass
        self.child_ends, self.our_ends = {}, {}

    def relay(self, pid: int) -> None:
        """Copy our stdin to the process and its output to our stdout/stderr until `pid` exits,
        then whatever it left in the pipes.  The caller reaps `pid`."""
        try:
            pidfd = linux.pidfd_open(pid)
        except OSError:
            pidfd = -1
        try:
            _Relay(self.our_ends, pidfd, pid).run()  # closes what it is done with, and forgets it
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            self.close()


class _Relay:
    def __init__(self, ends: dict[int, int], pidfd: int, pid: int):
        self.ends = ends
        self.poller = select.poll()
        self.outputs = {ends[fd]: fd for fd in (1, 2) if fd in ends}  # pipe -> our fd
        self.stdin_pipe = ends.get(0, -1)
        self.pending = b""       # read from our stdin, not yet taken by the process
        self.stdin_eof = self.stdin_pipe < 0
        # In a background job (`ocirun exec ID cmd &`) a read of the terminal is refused with
        # SIGTTIN (which would stop the job, ocirun forwarding it to the process): stdin is
        # left alone until the job is brought to the foreground (`fg`), looked at every 200 ms.
        self.stdin_waits_for_foreground = not self.stdin_eof and not _in_foreground(0)
        self.pidfd = pidfd
        self.pid = pid
        for pipe in self.outputs:
            self.poller.register(pipe, select.POLLIN)
        if self.stdin_pipe >= 0:
            os.set_blocking(self.stdin_pipe, False)
        if pidfd >= 0:
            self.poller.register(pidfd, select.POLLIN)
        self.watched: set[int] = set()
        self._watch_stdin()

    def run(self) -> None:
        while True:
            # Without a pidfd (kernels before 5.3) we look at the process every 100 ms.
            timeout = None if self.pidfd >= 0 else 100
            if self.stdin_waits_for_foreground:
                if _in_foreground(0):
                    self.stdin_waits_for_foreground = False
                    self._watch_stdin()
                else:
                    timeout = 200 if timeout is None else min(timeout, 200)
            for fd, _ev in self.poller.poll(timeout):
                if fd == self.pidfd:
                    self._drain_outputs()
                    return
                if fd in self.outputs:
                    self._copy_output(fd)
                elif fd == 0:
                    self._read_stdin()
                elif fd == self.stdin_pipe:
                    self._feed_stdin()
            if self.pidfd < 0 and _exited(self.pid):
                self._drain_outputs()
                return

    def _copy_output(self, pipe: int) -> None:
        data = _read(pipe)
        if data:
            write_all(self.outputs[pipe], data)
        elif data is not None:  # end-of-file: the process closed it
            self.poller.unregister(pipe)
            self._close(self.outputs.pop(pipe))

    def _drain_outputs(self) -> None:
        """What the process wrote before it exited; not more (its own children may hold the
        pipes open forever, and we do not wait for them): at most what a pipe holds, plus what
        a writer still running adds meanwhile, up to _DRAIN_LIMIT."""
        for pipe in list(self.outputs):
            os.set_blocking(pipe, False)
            left = _DRAIN_LIMIT
            while left > 0 and (data := _read(pipe)):
                write_all(self.outputs[pipe], data)
                left -= len(data)

    def _read_stdin(self) -> None:
        data = _read(0)
        if data is None:
            return
        if data:
            self.pending += data
        else:
            self.stdin_eof = True  # the process gets end-of-file too, once it took the rest
        self._feed_stdin()

    def _feed_stdin(self) -> None:
        if self.pending and self.stdin_pipe >= 0:
            try:
                self.pending = self.pending[os.write(self.stdin_pipe, self.pending):]
            except BlockingIOError:
                pass
            except OSError:  # the process closed its stdin: nobody will read the rest
                self.pending, self.stdin_eof = b"", True
        if self.stdin_eof and not self.pending and self.stdin_pipe >= 0:
            if self.stdin_pipe in self.watched:
                self.poller.unregister(self.stdin_pipe)
                self.watched.discard(self.stdin_pipe)
            self._close(0)
            self.stdin_pipe = -1
        self._watch_stdin()

    def _close(self, stdio: int) -> None:
        os.close(self.ends.pop(stdio))

    def _watch_stdin(self) -> None:
        """Poll our stdin while the process has taken all we read; while it has not, poll its
        pipe for room instead (no unbounded buffer, as a pipe would behave)."""
        want = set()
        if self.pending and self.stdin_pipe >= 0:
            want.add(self.stdin_pipe)
        elif not self.stdin_eof and not self.stdin_waits_for_foreground:
            want.add(0)
        for fd in self.watched - want:
            self.poller.unregister(fd)
        for fd in want - self.watched:
            self.poller.register(fd, select.POLLOUT if fd == self.stdin_pipe else select.POLLIN)
        self.watched = want


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _in_foreground(fd: int) -> bool:
    """Whether a read of terminal `fd` is ours to make: we are in its foreground process group,
    or it is not our controlling terminal at all (no job control applies then)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:  # ENOTTY: not our controlling terminal
        return True


def _exited(pid: int) -> bool:
    from .state import proc_start_time
    return proc_start_time(pid) is None


def _read(fd: int) -> bytes | None:
    """One read: the data, b"" at end-of-file (or an error), None when nothing is there."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd`, waiting while it is full; a reader gone ends it quietly (the
    output has nowhere to go).  Shared with console.py's pty relay."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            _wait_writable(fd)
        except OSError:  # our own stdout is gone: the process's output has nowhere to go
            return


def _wait_writable(fd: int) -> None:
    poller = select.poll()  # not select(): fds above 1023 are possible (--preserve-fds)
    poller.register(fd, select.POLLOUT)
    poller.poll()
