"""`ocirun start`: release the init waiting on the exec fifo, then run the poststart hooks."""
from __future__ import annotations

import os
import select
import time

from . import log as _log
from .errors import OCIError
from .state import Container, ContainerState, StateDir, pid_alive


def start(root: str, cid: str) -> None:
    with Container.open(root, cid) as c:
        c.require("start")
        st = c.state
        if st.no_process:
            # Refused before the init is released: the container stays `created`, nothing ran.
            raise OCIError("cannot start a container without a process: config.json has no `process`")
        _release_init(c.dir, st)
        if st.hooks.get("poststart"):
            from . import hooks
            hooks.run_recorded(st, "poststart", "running", log=_log.get().log)


def _release_init(sd: StateDir, st: ContainerState) -> None:
    """Open the exec fifo for reading: the init, blocked opening it for writing, goes on.

    It writes "0" and keeps its end open until execve closes it: end-of-file means the
    container's process runs (or the init died on the way — the process exit tells that later).
    If it fails in between (startContainer hooks) it writes its error and exits.

    The container's lock is given back once the init is released: what follows (startContainer
    hooks, then the poststart hooks) may take as long as hooks without a timeout like, and
    `kill` or `delete --force` must still act meanwhile.

    Only root can open the fifo (its directory is 0700), but what we read is still checked
    against the init itself, so that another writer can neither hold `start` forever (it stops
    once the init no longer has the fifo open: execve closed it) nor speak for the init (text
    counts as the init's error only when the init then died).
    """
    try:
        fd = os.open(sd.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OCIError("cannot start an already running container") from None
    pid, start_time = st.pid, st.start_time
    released = False
    said = b""  # after "0": the init's words if it failed before execve (startContainer hooks)
    deadline = time.monotonic() + FIFO_ANSWER_TIMEOUT_S
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            data = _read_nowait(fd, 4096) if ready else b""
            eof = ready and not data
            if data and not released and b"0" in data:
                released = True
                os.unlink(sd.fifo_path)  # from now on the container is "running"
                sd.unlock()  # the docstring says why
                data = data.replace(b"0", b"", 1)
            said += data if released else b""
            if eof and released:
                break  # end-of-file: every writer, the init's execve included, closed its end
            if not pid_alive(pid, start_time):
                if not released and b"0" in _read_rest(fd):
                    os.unlink(sd.fifo_path)  # it wrote "0", ran and exited between our looks
                    released = True
                    sd.unlock()
                said += _read_rest(fd) if released else b""
                if not released:
                    raise OCIError("cannot start a container that has stopped")
                break  # it ran and is already gone
            if eof:
                time.sleep(0.01)  # end-of-file before the init's "0": another writer came and went
            elif not ready and released and not _holds_fifo(pid, fd):
                said = b""  # the init exec'd; whatever is still open is not the init's
                break
            elif not released and time.monotonic() > deadline:
                raise OCIError(f"container init {pid} did not answer on the exec fifo in "
                               f"{FIFO_ANSWER_TIMEOUT_S:.0f}s (stopped or frozen?)")
    finally:
        os.close(fd)
    if said and _died_soon(pid, start_time):
        raise OCIError(said.decode(errors="replace"))


FIFO_ANSWER_TIMEOUT_S = 30.0  # from `start` opening the fifo to the init's "0": normally < 1 ms


def _holds_fifo(pid: int, fifo_fd: int) -> bool:
    """Whether `pid` still has the fifo open (the init's write end closes at its execve)."""
    me = os.fstat(fifo_fd)
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return True  # cannot tell: wait for end-of-file as before
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if st.st_ino == me.st_ino and st.st_dev == me.st_dev:
            return True
    return False


def _died_soon(pid: int, start_time, timeout: float = 0.5) -> bool:
    """The init writes its error, then exits: text followed by its death is its error; text
    while it lives on (the container's process runs) came from someone else."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, start_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _read_rest(fd: int) -> bytes:
    out = b""
    while chunk := _read_nowait(fd, 4096):
        out += chunk
    return out


def _read_nowait(fd: int, size: int = 1) -> bytes:
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return b""
