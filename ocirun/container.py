"""The library API in one place, for code and tests that import it from here: each operation
lives in its own module (create.py, start.py, kill.py, delete.py, query.py, pause.py) over the
container spine in state.py.  The CLI imports each from its own module, so that `ocirun state`
does not load create's code; importing this module loads them all.

Each operation takes the state root and an id, holds the container's lock for its whole run,
and raises `OCIError` with a one-line message for anything the user should see.
"""
from __future__ import annotations

from .create import CreateOptions, create
from .delete import delete, kill_and_wait, release_rootfs_mount
from .kill import SIGNALS, kill, parse_signal
from .pause import pause, resume
from .query import list_all, processes, state
from .start import FIFO_ANSWER_TIMEOUT_S, start

__all__ = ["FIFO_ANSWER_TIMEOUT_S", "SIGNALS", "CreateOptions", "create", "delete", "kill", "kill_and_wait",
           "list_all", "parse_signal", "pause", "processes", "release_rootfs_mount", "resume", "start", "state"]
