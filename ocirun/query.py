"""The read-only operations over several containers or processes: `ocirun list` and `ps` (the
pids; cli.py formats them).  Neither takes the container's lock.  (`state` is api.py's
`Container.state`: one container's `public_state`, read without this module.)"""
from __future__ import annotations

import os

from . import log as _log
from .errors import OCIError
from .state import Container, StateDir


def list_all(root: str) -> list[dict]:
    from .state import list_ids
    out = []
    owners: dict[int, str] = {}
    for cid in list_ids(root):
        sd = StateDir(root, cid)
        try:
            row = Container(sd, sd.read()).public_state()
        except OCIError as e:
            try:
                os.stat(os.path.join(sd.path, "state.json"))
            except PermissionError:  # another user's container: named, and left out, as runc does
                _log.get().warn(str(e))
                continue
            except OSError:
                continue  # deleted meanwhile (delete takes the files before the directory)
            _log.get().warn(str(e))
            row = _unknown_state(cid, sd)
        row["owner"] = _owner(sd.path, owners)
        out.append(row)
    return out


def _owner(path: str, names: dict[int, str]) -> str:
    """Who owns the container's state directory, by name (`#uid` without one), as runc's list:
    the user who made it (root's runtime makes root's)."""
    try:
        uid = os.lstat(path).st_uid
    except OSError:
        return ""
    if uid not in names:
        import pwd
        try:
            names[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            names[uid] = f"#{uid}"
    return names[uid]


def _unknown_state(cid: str, sd: StateDir) -> dict:
    """`list`'s row for a container whose state.json cannot be read: status "unknown" (the
    reason went to stderr), and the bundle and creation time if they are still legible."""
    try:
        raw = sd.read_raw()
    except OCIError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}

    def text(key: str) -> str:
        v = raw.get(key)
        return v if isinstance(v, str) and v.isprintable() else ""
    return {"ociVersion": text("ociVersion"), "id": cid, "pid": 0, "status": "unknown",
            "bundle": text("bundle"), "rootfs": text("rootfs"), "created": text("created"), "owner": ""}



def processes(root: str, cid: str) -> list[int]:
    with Container.open(root, cid, lock=False) as c:
        return c.processes()
