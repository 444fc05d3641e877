"""The state directory of one container: `<root>/<id>/`.

Files in it:
  state.json  what `state`, `kill`, `delete`, … need after `create` has exited; written atomically
              (temp file + rename) so a reader never sees half a document.
  exec.fifo   exists between `create` and `start`: the init blocks opening it for writing, `start`
              opens it for reading and so releases the init.  Its presence means "created".
  (flock)     every command that changes a container holds an exclusive flock on the directory
              itself, so concurrent commands on one id are serialised.

The init's pid alone cannot identify it: pids are reused.  We store the process start time
(field 22 of /proc/<pid>/stat, clock ticks since boot) and treat a pid whose start time differs
as "stopped" — like crun's status.c and runc's `InitProcessStartTime`.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from . import jsonio
from .errors import OCIError

DEFAULT_ROOT = "/run/ocirun"
STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
NET_DEVICES_RECORD = "netdevices.json"  # network.py: the linux.netDevices moved in, to give back

# runc's rule for ids (its regexp ^[\w+-\.]+$, ASCII as in Go): letters, digits, and _ + - . ;
# never "." or ".." (would escape the root).  A set, not `re`: that import costs ~4 ms.
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def validate_id(cid: str) -> None:
    if not cid:
        raise OCIError("container id cannot be empty")
    if cid in (".", "..") or not _ID_CHARS.issuperset(cid):
        raise OCIError(f"invalid container id format: {cid}")


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks, or None if it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def pid_alive(pid: int, start_time: int | None) -> bool:
    if pid <= 0:
        return False
    st = proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class StateDir:
    """One container's state directory.  Use `StateDir.new` (create) or `StateDir.open`."""

    def __init__(self, root: str, cid: str):
        self.root = root
        self.id = cid
        self.path = os.path.join(root, cid)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ creation / lookup
    @classmethod
    def new(cls, root: str, cid: str) -> "StateDir":
        validate_id(cid)
        os.makedirs(root, mode=0o711, exist_ok=True)
        sd = cls(root, cid)
        try:
            os.mkdir(sd.path, 0o711)
        except FileExistsError:
            raise OCIError(f"container with id exists: {cid}") from None
        except OSError as e:
            raise OCIError(f"create state directory {sd.path}: {e.strerror.lower()}") from None
        sd.lock()
        return sd

    @classmethod
    def open(cls, root: str, cid: str, lock: bool = True) -> "StateDir":
        validate_id(cid)
        sd = cls(root, cid)
        if lock:
            try:
                sd.lock()
            except FileNotFoundError:
                raise OCIError(f"container does not exist: {cid}") from None
        if not os.path.exists(os.path.join(sd.path, STATE_FILE)):
            sd.unlock()
            raise OCIError(f"container does not exist: {cid}")
        return sd

    # ------------------------------------------------------------------ locking
    def lock(self) -> None:
        """Take the directory's flock; FileNotFoundError if it is gone (also while we waited)."""
        while self._lock_fd is None:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # The holder we waited for may have removed the directory (delete), and a new
                # create may have made another one of the same name: our lock must be on it.
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self._lock_fd, fd = fd, -1
            finally:
                if fd >= 0:
                    os.close(fd)

    @property
    def lock_fd(self) -> int:
        """The fd holding our flock (-1 when unlocked); forked children must close it."""
        return -1 if self._lock_fd is None else self._lock_fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ files
    @property
    def fifo_path(self) -> str:
        return os.path.join(self.path, FIFO_NAME)

    def make_fifo(self) -> str:
        # 0622: the init may already have switched to a non-root user when it opens it.
        old = os.umask(0)
        try:
            os.mkfifo(self.fifo_path, 0o622)
        finally:
            os.umask(old)
        return self.fifo_path

    def has_fifo(self) -> bool:
        return os.path.exists(self.fifo_path)

    def read(self) -> dict:
        try:
            with open(os.path.join(self.path, STATE_FILE), "rb") as f:
                return jsonio.loads(f.read())
        except FileNotFoundError:
            raise OCIError(f"container does not exist: {self.id}") from None
        except ValueError as e:
            raise OCIError(f"container {self.id}: corrupt state file: {e}") from None

    def write(self, data: dict) -> None:
        tmp = os.path.join(self.path, f".{STATE_FILE}.tmp")
        with open(tmp, "w") as f:
            f.write(jsonio.dumps(data))
        os.rename(tmp, os.path.join(self.path, STATE_FILE))

    def remove(self) -> None:
        for name in os.listdir(self.path) if os.path.isdir(self.path) else ():
            path = os.path.join(self.path, name)
            try:
                os.unlink(path)
            except OSError as e:
                if e.errno == errno.EBUSY:  # a mount point (network.py pins a netns here)
                    _detach_and_unlink(path)
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        self.unlock()


def _detach_and_unlink(path: str) -> None:
    from . import linux
    try:
        linux.umount2(path, linux.MNT_DETACH)
        os.unlink(path)
    except OSError:
        pass


def write_pid_file(path: str, pid: int) -> None:
    """Atomically write `pid` (no newline, like runc) so readers never see an empty file."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)
    except OSError as e:
        raise OCIError(f"write pid file {path}: {e.strerror.lower()}") from None


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, STATE_FILE)))
