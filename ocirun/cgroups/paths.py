"""`linux.cgroupsPath` -> one directory per hierarchy (the cgroupfs driver's rules).

What runc (libcontainer/cgroups/fs and fs2) does, and what we do:

* ``"/a/b"`` (absolute): relative to the root of every hierarchy, e.g.
  /sys/fs/cgroup/memory/a/b and /sys/fs/cgroup/unified/a/b.
* ``"a/b"`` (relative): below the cgroup of the *runtime process* in each v1 hierarchy (and in
  the cgroup2 tree of a hybrid host).  On a pure v2 host runc takes the *parent* of its own
  cgroup instead, because its own cgroup holds processes and so (no-internal-processes rule)
  could not enable controllers for a child; we do the same.
* ``""`` (absent): the container id, as a relative path (runc sets Name=<id>, Parent="").
* ``"slice:prefix:name"`` is the systemd driver's form (systemd.py): without `--systemd-cgroup`
  it is refused with a line that says so (runc would make a directory of that literal name).

runc silently clamps ``..`` (``../../x`` becomes ``x``); we refuse a path whose ``..`` climbs
above where it starts (the hierarchy root for absolute paths, the runtime's cgroup for relative
ones), and one that names the starting point itself: a container must get a cgroup of its own,
or `kill --all` / `delete` would hit processes that are not its.
"""
from __future__ import annotations

import os

from ..errors import ConfigError, OCIError, os_words
from .detect import UNIFIED_KEY, Hierarchy

FIELD = "linux.cgroupsPath"


def is_systemd_form(cgroups_path: str) -> bool:
    """"system.slice:docker:abc" — three colon-separated parts and not a filesystem path."""
    return not cgroups_path.startswith("/") and cgroups_path.count(":") == 2


def inner_path(container_id: str, cgroups_path: str) -> str:
    """The normalised path: "/a/b" (from each hierarchy's root) or "a/b" (from our cgroup)."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise OCIError(f"container id {container_id!r} cannot name a cgroup")
        return container_id
    if is_systemd_form(cgroups_path):
        raise ConfigError(FIELD, f"{cgroups_path!r} is in the systemd driver's \"slice:prefix:name\" form: "
                          "pass --systemd-cgroup, or give a cgroupfs path such as \"/machine/<id>\"")
    if "\0" in cgroups_path:
        raise ConfigError(FIELD, "must not contain a NUL byte")
    absolute = cgroups_path.startswith("/")
    parts: list[str] = []
    for comp in cgroups_path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                where = "the cgroup hierarchy root" if absolute else "the runtime's own cgroup"
                raise ConfigError(FIELD, f"{cgroups_path!r} climbs above {where}")
            parts.pop()
        else:
            parts.append(comp)
    if not parts:
        raise ConfigError(FIELD, f"{cgroups_path!r} must name a cgroup below "
                          + ("the hierarchy root" if absolute else "the runtime's own cgroup"))
    joined = "/".join(parts)
    return "/" + joined if absolute else joined


def check_dirs(paths: dict[str, str], mounts: dict[str, str]) -> None:
    """Refuse a cgroup path that goes through something other than a directory (a control file:
    "/x/../memory.limit_in_bytes"), before anything is created: each existing component from the
    hierarchy's mountpoint down must be a directory; the first missing one ends the walk (from
    there on, create makes them)."""
    import stat
    for key, leaf in paths.items():
        d = mounts[key]
        rest = leaf[len(d):].strip("/")
        for comp in rest.split("/") if rest else ():
            d = f"{d}/{comp}"
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                break
            except OSError as e:
                raise ConfigError(FIELD, f"{d}: {os_words(e)}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigError(FIELD, f"{d} is not a directory (a cgroup file?): no cgroup can be made there")


def hierarchy_dir(h: Hierarchy, inner: str, mode: str) -> str:
    """The container's directory in hierarchy `h`."""
    if inner.startswith("/"):
        return h.mountpoint + inner
    base = h.own
    if mode == "unified" and h.key == UNIFIED_KEY:
        base = os.path.dirname(base.rstrip("/")) or "/"
    return os.path.normpath(f"{h.mountpoint}/{base}/{inner}")


def container_dirs(inner: str, mode: str, hier: dict[str, Hierarchy]) -> dict[str, str]:
    """key -> directory for every hierarchy the container joins.

    Like runc we join every mounted v1 hierarchy (name=systemd included: tools find a
    container's processes through it), plus the cgroup2 tree on hybrid and unified hosts.
    """
    out = {}
    for key, h in hier.items():
        if mode == "unified" and key != UNIFIED_KEY:
            continue
        if mode == "legacy" and key == UNIFIED_KEY:
            continue
        out[key] = hierarchy_dir(h, inner, mode)
    return out
