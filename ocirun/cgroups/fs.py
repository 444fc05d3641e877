"""Small cgroupfs file operations shared by the v1 and v2 code.

Every function here raises plain `OSError`; the callers know which config field or action was
meant and turn it into an `OCIError` with the kernel's words (`field_error`).  Directory walks
use os.scandir: cgroupfs directories have a link count that fools find(1)'s leaf optimisation.
"""
from __future__ import annotations

import errno
import os

from ..errors import ConfigError, OCIError, os_words


def write(path: str, value: str) -> None:
    """One write(2) of `value`: cgroupfs parses each write as one request."""
    # (cgroup.subtree_control, cgroup.procs ... are not limits: a controller enabled for the
    # update's files stays enabled, and their contents do not read back as written)
    keep = _undo is not None and not os.path.basename(path).startswith("cgroup.")
    old = _old_value(path) if keep else None
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    if keep and _undo is not None:
        _undo.append((path, old))  # only what was written: a refused write changed nothing


_undo: list[tuple[str, str | None]] | None = None  # set inside `UndoOnError`


class UndoOnError:
    """`with UndoOnError(warn):` — should the block raise, every file it wrote gets its old
    contents back, newest first, so a refused `update` leaves the limits as they were (runc
    re-applies the config it had; a refused cpuset after a new memory limit must not leave the
    limit changed).  Only one-line values can be written back as read (memory.max, cpu.max,
    cpuset.cpus, pids.max ...); a file of one line per device (io.max, blkio.*_device), one that
    reads as several lines (memory.oom_control) or cannot be read keeps what the block wrote,
    and `warn` names it."""

    def __init__(self, warn) -> None:
        self.warn = warn

    def __enter__(self) -> None:
        global _undo
        _undo = []

    def __exit__(self, exc_type, exc, tb) -> None:
        global _undo
        written, _undo = _undo or [], None
        if exc_type is None:
            return
        for path, old in reversed(written):
            try:
                if old is None:
                    raise OSError(0, "its old contents could not be read back as one value")
                write(path, old)
            except OSError as e:
                self.warn(f"cgroup: could not put back {path} after the failed update: {os_words(e)}")


# Files that hold one line per device (or interface): a write sets one key, and writing back
# what was read would not take away a key the update added.
_KEYED = ("io.max", "io.weight", "io.bfq.weight", "io.latency", "rdma.max", "net_prio.ifpriomap")


def _old_value(path: str) -> str | None:
    """What to write back after a failed update; None when the file cannot be put back so."""
    name = os.path.basename(path)
    if name in _KEYED or name.endswith("_device"):
        return None
    try:
        text = read(path)
    except OSError:
        return None
    return None if "\n" in text else text


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks).decode().strip()


def write_field(field: str, directory: str, filename: str, value: str) -> None:
    """Write a resource value; a refusal names the config field, the file and the kernel's words."""
    path = f"{directory}/{filename}"
    try:
        write(path, value)
    except FileNotFoundError:
        raise ConfigError(field, f"{path} does not exist (not supported by this kernel or controller)") from None
    except OSError as e:
        raise OCIError(f"{field}: writing {value!r} to {path}: {os_words(e)}") from None


def subdirs_bottom_up(top: str) -> list[str]:
    """Every directory below `top`, deepest first (children before parents), `top` excluded."""
    out: list[str] = []
    try:
        entries = list(os.scandir(top))
    except OSError:
        return out
    for ent in entries:
        if ent.is_dir(follow_symlinks=False):
            out.extend(subdirs_bottom_up(ent.path))
            out.append(ent.path)
    return out


def procs(directory: str, recursive: bool = True) -> list[int]:
    """Pids in cgroup.procs of `directory` (and of every cgroup below it)."""
    dirs = [directory] + (subdirs_bottom_up(directory) if recursive else [])
    pids: list[int] = []
    for d in dirs:
        try:
            text = read(d + "/cgroup.procs")
        except OSError:
            continue  # vanished meanwhile, or not a cgroup
        pids.extend(int(x) for x in text.split())
    return pids


def mkdirs(mountpoint: str, target: str, created: list[str]) -> None:
    """mkdir every missing directory from `mountpoint` down to `target`; record what we made."""
    rel = target[len(mountpoint):].strip("/")
    path = mountpoint
    for comp in rel.split("/") if rel else ():
        path = f"{path}/{comp}"
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        created.append(path)


def rmdir(path: str) -> bool:
    """rmdir, tolerating a directory that is already gone; False if it is still busy.

    A path through a file (ENOTDIR: a tampered or corrupt state file naming a control file)
    names no cgroup of ours: nothing to remove there either."""
    try:
        os.rmdir(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True
