"""What the runtime hands to its children across fork (no serialisation: fork copies it)."""
from __future__ import annotations

from ..record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (ARCHITECTURE.md, Startup speed)
if TYPE_CHECKING:
    from ..config import Config
    from ..pipes import TerminalPipes
    from .become import SeccompStep


class LaunchContext(Record):
    cfg: Config  # always given
    id: str
    state_dir: str
    lock_fd: int
    fifo_fd: int
    console_fd: int
    ns_fds: dict[str, int]
    no_pivot: bool
    no_new_keyring: bool
    preserve_fds: int
    listen_fds: int
    seccomp_filter: SeccompStep | None
    exec_stub_fd: int
    stdio_pipes: TerminalPipes | None
    FIELDS = {
        "cfg": None,                  # config.Config
        "id": "",
        "state_dir": "",
        "lock_fd": -1,                # the state dir's flock: children must not hold it
        "fifo_fd": -1,                # O_PATH fd of <state>/exec.fifo; reopened for writing by the init
        "console_fd": -1,             # connected --console-socket (or our own socketpair end for `run -t`)
        "ns_fds": dict,               # namespaces to join: {type: fd}
        "no_pivot": False,
        "no_new_keyring": False,
        "preserve_fds": 0,            # fds 3 .. 3+preserve_fds-1 go to the container (LISTEN_FDS included)
        "listen_fds": 0,              # systemd socket activation fds among them
        "seccomp_filter": None,       # become.SeccompStep: compiled now, loaded last, right before exec
        "exec_stub_fd": -1,           # sealed memfd with the exec stub (CVE-2019-5736, exechelper.py)
        "stdio_pipes": None,          # pipes.TerminalPipes: the init's stdio instead of our terminal
    }

    @property
    def new_userns(self) -> bool:
        return self.cfg.has_new_namespace("user")

    @property
    def in_userns(self) -> bool:
        return self.cfg.linux.namespace("user") is not None
