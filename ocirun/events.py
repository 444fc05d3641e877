"""`ocirun events`: the container's resource usage and OOM kills as JSON lines, like runc.

    {"type":"stats","id":"c1","data":{"cpu":{...},"memory":{...},"pids":{...},...}}
    {"type":"oom","id":"c1"}

`--stats` prints one stats event and exits.  Otherwise a stats event is printed every
`--interval` (Go duration syntax: 5s, 500ms, 1m30s), and an "oom" event as soon as the
kernel's OOM-kill counter of the container's memory cgroup grows (polled several times a
second; memory.events on v2, memory.oom_control on v1).  The stream ends, with status 0, when
the container stops or is deleted.
"""
from __future__ import annotations

import json
import sys
import time

from .errors import OCIError

OOM_POLL_S = 0.2
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration subset: "5s", "250ms", "1m30s", "1.5h" -> seconds."""
    t = text.strip()
    total, i = 0.0, 0
    if not t:
        raise OCIError(f"invalid duration {text!r}")
    while i < len(t):
        j = i
        while j < len(t) and (t[j].isdigit() or t[j] == "."):
            j += 1
        k = j
        while k < len(t) and not (t[k].isdigit() or t[k] == "."):
            k += 1
        num, unit = t[i:j], t[j:k]
        if not num or unit not in _DURATION_UNITS:
            if t == "0":
                return 0.0
            raise OCIError(f"invalid duration {text!r} (want e.g. 5s, 500ms, 1m)")
        try:
            total += float(num) * _DURATION_UNITS[unit]
        except ValueError:
            raise OCIError(f"invalid duration {text!r}") from None
        i = k
    return total


def _emit(out, kind: str, cid: str, data=None) -> None:
    ev = {"type": kind, "id": cid}
    if data is not None:
        ev["data"] = data
    out.write(json.dumps(ev, separators=(",", ":")) + "\n")
    out.flush()


def _load(root: str, cid: str):
    """(manager, status) — the state is re-read so a deleted container ends the stream."""
    from .state import Container
    with Container.open(root, cid, lock=False) as c:
        status = c.status
        if not c.state.cgroup:
            raise OCIError(f"container {cid} has no cgroup: no events")
        return c.cgroup(), status


def events(root: str, cid: str, interval: float = 5.0, stats_only: bool = False, out=None) -> int:
    from .cgroups import stats
    out = out or sys.stdout
    if interval <= 0:
        raise OCIError("duration interval must be greater than 0")
    from .state import can_watch, refusal
    m, status = _load(root, cid)
    if not can_watch(status):
        raise refusal("events", status, cid)
    if stats_only:
        _emit(out, "stats", cid, stats.collect(m))
        return 0
    ooms = stats.oom_kills(m)
    next_stats = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_stats:
            _emit(out, "stats", cid, stats.collect(m))
            next_stats = now + interval
        time.sleep(max(0.0, min(OOM_POLL_S, next_stats - time.monotonic())))
        count = stats.oom_kills(m)
        if count > ooms >= 0:
            _emit(out, "oom", cid)
        ooms = max(ooms, count)
        try:
            _, status = _load(root, cid)
        except OCIError:
            return 0  # deleted
        if not can_watch(status):
            return 0
