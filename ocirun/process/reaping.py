"""Reaping our own children with a deadline: no wait of the runtime on another process may
last forever (a child stuck in the kernel, or one we forgot to kill, must not hang an engine)."""
from __future__ import annotations

import os
import select
import time

from .. import linux

KILL_WAIT_S = 10.0  # SIGKILL takes effect in microseconds unless the process is stuck in the kernel


def wait_exit(pid: int, timeout: float) -> bool:
    """Reap our child `pid`, waiting at most `timeout` seconds; False if it is still running.
    True as well when it is not our child (the init belongs to a subreaper) or already reaped."""
    try:
        pidfd = linux.pidfd_open(pid)  # readable once it exits: no polling latency on create's path
    except OSError:
        pidfd = -1  # gone already (ESRCH) or an old kernel: short sleeps below
    try:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return True
            except ChildProcessError:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if pidfd >= 0:
                # poll, not select: the pidfd may be above 1023 (a caller's --preserve-fds).
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.poll(min(left, 86400) * 1000)
            else:
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.05)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
