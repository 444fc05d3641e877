"""`ocirun update`: change a live container's cgroup limits (runc's flags and `-r` JSON).

The input is a `linux.resources` object (docker and containerd send it on stdin with
`-r -`) or runc's flags.  As in runc, 0 means "leave as is" for every number (docker sends
zeros for what it does not change), -1 means unlimited for memory, swap and pids.  Only the
sections present are written; device rules never are (runc: an engine's update carries the
create-time list, and a hook may have added rules since).  The container keeps running; a
refused value fails the command and puts back what this update had already written.
"""
from __future__ import annotations

import os
import sys

from . import jsonio
from .errors import OCIError, os_words

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "p": 1 << 50, "pb": 1 << 50}


def parse_bytes(flag: str, text: str) -> int:
    """"64m", "1g", "1048576", "-1" -> bytes (docker's RAMInBytes; binary units)."""
    t = text.strip().lower()
    if t == "-1":
        return -1
    num = t.rstrip("bkmgtpi")
    unit = t[len(num):].replace("i", "")
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value < 0:
        raise OCIError(f"invalid value {text!r} for flag --{flag}: want bytes such as 67108864, 64m or 1g")
    return int(value * _UNITS[unit])


def _int(flag: str, text: str, minimum: int = 0) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        v = minimum - 1
    if v < minimum:
        raise OCIError(f"invalid value {text!r} for flag --{flag}")
    return v


def parse_update_flags(a) -> dict:
    """An argparse namespace of `update` (attribute names as in `update_arguments`) -> resources.

    With `-r FILE|-` the JSON is the whole request and the other flags are ignored, as in runc.
    """
    if a.resources:
        return read_resources(a.resources)
    if a.l3_cache_schema or a.mem_bw_schema:
        raise OCIError("update: Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported")
    res: dict = {}

    def put(section: str, key: str, value) -> None:
        res.setdefault(section, {})[key] = value

    for flag, attr, key in (("memory", "memory", "limit"), ("memory-reservation", "memory_reservation", "reservation"),
                            ("memory-swap", "memory_swap", "swap"), ("kernel-memory", "kernel_memory", "kernel"),
                            ("kernel-memory-tcp", "kernel_memory_tcp", "kernelTCP")):
        if getattr(a, attr, None):
            put("memory", key, parse_bytes(flag, getattr(a, attr)))
    for flag, attr, key, minimum in (("cpu-shares", "cpu_shares", "shares", 0), ("cpu-period", "cpu_period", "period", 0),
                                     ("cpu-quota", "cpu_quota", "quota", -1),
                                     ("cpu-rt-period", "cpu_rt_period", "realtimePeriod", 0),
                                     ("cpu-rt-runtime", "cpu_rt_runtime", "realtimeRuntime", -1)):
        if getattr(a, attr, None):
            put("cpu", key, _int(flag, getattr(a, attr), minimum))
    for attr, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if getattr(a, attr, None):
            put("cpu", key, getattr(a, attr))
    if a.pids_limit:
        put("pids", "limit", _int("pids-limit", a.pids_limit, -1))
    if a.blkio_weight:
        w = _int("blkio-weight", a.blkio_weight)
        if w and not 10 <= w <= 1000:
            raise OCIError(f"invalid value {a.blkio_weight!r} for flag --blkio-weight: the range is 10 to 1000")
        put("blockIO", "weight", w)
    return res


def read_resources(src: str) -> dict:
    """The `-r` argument: a file, or "-" for stdin; a JSON object (linux.resources)."""
    try:
        if src == "-":
            text = _first_json_value(sys.stdin.fileno())
        else:
            with open(src) as f:
                text = f.read()
    except OSError as e:
        raise OCIError(f"update: reading {src}: {os_words(e)}") from None
    try:
        doc = jsonio.loads(text)  # as config.json: NaN and Infinity are not JSON
    except ValueError as e:
        raise OCIError(f"update: {'stdin' if src == '-' else src}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OCIError("update: the resources must be a JSON object (linux.resources)")
    return doc


def _first_json_value(fd: int) -> str:
    """What `fd` sends, up to the end of its first complete JSON value: runc decodes one value
    and goes on, where reading to end-of-file waited for as long as the sender kept it open.
    (Text already wrong before its end is refused at once.)"""
    import json
    decoder = json.JSONDecoder()
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
        try:
            text = data.decode()
            _value, end = decoder.raw_decode(text, len(text) - len(text.lstrip()))
        except json.JSONDecodeError as e:
            if not _could_go_on(text, e):
                return text  # wrong before its end: no more input can mend it (runc fails at once)
            continue  # incomplete so far
        except ValueError:  # UTF-8 cut between two reads
            continue
        return text[:end]
    return data.decode(errors="replace")


def _could_go_on(text: str, err) -> bool:
    """Whether more input could complete `text` where the decoder stopped: at its end, inside a
    string, or in a literal or number cut between two reads ("tr", "-1.")."""
    rest = text[err.pos:].rstrip()
    return (not rest or err.msg.startswith("Unterminated string")
            or any(word.startswith(rest) for word in ("true", "false", "null"))
            or all(c in "-+.0123456789eE" for c in rest))


def update(root: str, cid: str, resources: dict) -> list[str]:
    """Apply `resources` to the container's cgroup; returns the fields left unapplied."""
    from .state import Container
    with Container.open(root, cid) as c:
        c.require("update")
        m = c.cgroup()
        if m is None:
            raise OCIError(f"container {cid} has no cgroup to update")
        m.resources = resources
        from .cgroups.fs import UndoOnError
        with UndoOnError(m.warning):
            return m.apply_resources(update=True)
