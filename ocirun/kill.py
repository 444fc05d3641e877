"""`ocirun kill`: a signal, by any name runc accepts, to the init or (--all) the whole cgroup."""
from __future__ import annotations

import os

import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

from .errors import OCIError, os_error, os_words
from .state import Container

SIGNALS = {name[3:]: int(getattr(signal, name)) for name in dir(signal)
           if name.startswith("SIG") and not name.startswith("SIG_") and name.isupper()}


def parse_signal(text: str) -> int:
    """`KILL`, `SIGKILL`, `9`, `sigkill` — runc accepts all of them; `0` only probes (as kill(2));
    an empty one is SIGTERM, as runc's default."""
    t = text.strip()
    if not t:
        return int(signal.SIGTERM)
    if t.isdigit():
        n = int(t)
        if 0 <= n < 65:
            return n
    else:
        name = t.upper()
        name = name[3:] if name.startswith("SIG") else name
        if name in SIGNALS:
            return SIGNALS[name]
        if name.startswith("RTMIN+") and name[6:].isdigit():
            n = int(signal.SIGRTMIN) + int(name[6:])
            if n <= int(signal.SIGRTMAX):  # above it kill(2) would refuse it late (EINVAL)
                return n
    raise OCIError(f"unknown signal {text!r}")


def kill(root: str, cid: str, sig: int, all_procs: bool = False) -> None:
    with Container.open(root, cid) as c:
        if all_procs:
            cg = c.cgroup()
            if cg is not None:
                cg.kill_all(sig)
                return
            c.require("kill")
            for pid in c.processes():  # its pid namespace (a rootless container without a cgroup)
                if pid == c.state.pid:
                    _signal(pid, sig)
                else:
                    _signal_one_of_many(pid, sig)
            return
        c.require("kill")
        _signal(c.state.pid, sig)


def _signal_one_of_many(pid: int, sig: int) -> None:
    """A process of the container besides its init: gone meanwhile is fine, a refusal is said
    and the others still get the signal (runc's kill --all warns and goes on too)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as e:
        from . import log
        log.get().warn(f"kill {pid}: {os_words(e)}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise OCIError("container not running") from None
    except OSError as e:
        raise os_error(f"kill {pid}", e) from None
