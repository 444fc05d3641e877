"""Putting a new process into the container's cgroup without the kernel's slow path.

Writing a pid to `cgroup.procs` takes the kernel's global threadgroup lock for writing, and
the first such write in a while waits for an RCU grace period: 8-27 ms measured on this
project's hosts, paid by every `create`, `run` and `exec` (runc pays it too).  Two moves skip
that lock, and together they cover every layout:

* cgroup v1: a single-threaded process moving *itself* by writing "0" to a hierarchy's
  `tasks` file (the kernel needs no threadgroup stability for the calling thread);
* cgroup v2: being born in the cgroup, clone3(CLONE_INTO_CGROUP) (`linux.fork_into_cgroup`).

So `fork(join)` forks the child straight into the cgroup2 directory when there is one; the
parent calls `join.finish_in_parent(pid)` (the classic write, only where clone3 was refused:
an old kernel, another Python, a cgroup that cannot take processes) and then tells the child
to go on; the child calls `join.enter_v1()` before its namespaces (the paths are host paths,
and a new cgroup namespace is rooted where the process stands).
"""
from __future__ import annotations

import os

from ..errors import OCIError, os_words
from . import fs


class Join:
    """Where one new process goes: the v1 `tasks` files and the cgroup2 directory."""

    def __init__(self, v1_dirs: list[str], v2_dir: str | None) -> None:
        self.v1_dirs = v1_dirs
        self.v2_dir = v2_dir
        self.v2_pending = v2_dir is not None  # cleared once the child was born there

    def enter_v1(self) -> None:
        """In the child: move this (single-threaded) process into every v1 hierarchy."""
        for d in self.v1_dirs:
            try:
                fs.write(f"{d}/tasks", "0")
            except OSError as e:
                raise OCIError(f"cgroup: joining {d}: {os_words(e)}") from None

    def finish_in_parent(self, pid: int) -> None:
        """In the parent, after `fork`: the cgroup2 move clone3 could not do."""
        if self.v2_pending:
            try:
                fs.write(f"{self.v2_dir}/cgroup.procs", str(pid))
            except OSError as e:
                raise OCIError(f"cgroup: adding pid {pid} to {self.v2_dir}: {os_words(e)}") from None


def fork(join: Join | None) -> int:
    """os.fork(), with the child born in `join`'s cgroup2 directory where the kernel allows."""
    if join is None or join.v2_dir is None:
        return os.fork()
    from .. import linux
    try:
        fd = os.open(join.v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"cgroup: opening {join.v2_dir}: {os_words(e)}") from None
    try:
        pid = linux.fork_into_cgroup(fd)
    except OSError:
        os.close(fd)
        return os.fork()  # finish_in_parent() does the move the slow way
    os.close(fd)
    join.v2_pending = False
    return pid
