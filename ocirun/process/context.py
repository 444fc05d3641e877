"""What the runtime hands to its children across fork (no serialisation: fork copies it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Config


@dataclass
class LaunchContext:
    cfg: Config
    id: str
    state_dir: str
    lock_fd: int = -1                 # the state dir's flock: children must not hold it
    fifo_fd: int = -1                 # O_PATH fd of <state>/exec.fifo; reopened for writing by the init
    console_fd: int = -1              # connected --console-socket (or our own socketpair end for `run -t`)
    ns_fds: dict[str, int] = field(default_factory=dict)   # namespaces to join, by type
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0             # fds 3 .. 3+preserve_fds-1 go to the container (LISTEN_FDS included)
    listen_fds: int = 0               # systemd socket activation fds among them
    seccomp_filter: object = None
    exec_stub_fd: int = -1            # sealed memfd with the exec stub (CVE-2019-5736, exechelper.py)     # compiled filter (issue 3); loaded last, right before exec

    @property
    def new_userns(self) -> bool:
        return self.cfg.has_new_namespace("user")

    @property
    def in_userns(self) -> bool:
        return self.cfg.linux.namespace("user") is not None
