"""What cgroup layout this host has, and where its hierarchies are mounted.

`cgroup_mode()` answers 'unified' (cgroup v2 only), 'hybrid' (v1 controllers plus a cgroup2
tree at /sys/fs/cgroup/unified) or 'legacy' (v1 only) from the filesystem magic of
/sys/fs/cgroup, like runc and systemd do.  `hierarchies()` lists the mounted hierarchies with
the cgroup this process is in, which relative `linux.cgroupsPath` values are resolved against.

Both are cached for the life of the process: the layout does not change under a running
runtime, and this sits on the `create` hot path.
"""
from __future__ import annotations

from .. import mountinfo
from ..mountinfo import CGROUP2_SUPER_MAGIC, fs_magic

CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED_KEY = ""  # key of the cgroup2 hierarchy in every path map (as in /proc/self/cgroup)

# v1 controllers we know; anything else in a cgroup mount's super options is a mount flag.
V1_CONTROLLERS = frozenset((
    "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls",
    "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc", "debug",
))

_mode: str | None = None
_hierarchies: dict[str, "Hierarchy"] | None = None


def cgroup_mode() -> str:
    """'unified', 'hybrid' or 'legacy'; one statfs (two on a v1 host), cached."""
    global _mode
    if _mode is None:
        _mode = _detect_mode()
    return _mode


def _detect_mode() -> str:
    try:
        if fs_magic(CGROUP_ROOT) == CGROUP2_SUPER_MAGIC:
            return "unified"
    except OSError:
        return "legacy"
    try:
        if fs_magic(CGROUP_ROOT + "/unified") == CGROUP2_SUPER_MAGIC:
            return "hybrid"
    except OSError:
        pass
    return "legacy"


class Hierarchy:
    """One mounted cgroup hierarchy: v1 (one or more comounted controllers) or cgroup2."""

    __slots__ = ("key", "controllers", "mountpoint", "mount_root", "own")

    def __init__(self, key: str, controllers: tuple[str, ...], mountpoint: str, mount_root: str, own: str):
        self.key = key                  # "memory", "cpu,cpuacct", "name=systemd", "" for cgroup2
        self.controllers = controllers  # v1 controllers it carries (empty for cgroup2 / name=)
        self.mountpoint = mountpoint    # /sys/fs/cgroup/memory
        self.mount_root = mount_root    # the cgroup mounted there ("/" unless in a container)
        self.own = own                  # this process's cgroup, relative to the mountpoint

    def __repr__(self) -> str:
        return f"Hierarchy({self.key!r}, {self.mountpoint!r}, own={self.own!r})"


def hierarchies() -> dict[str, Hierarchy]:
    """The cgroup hierarchies mounted under /sys/fs/cgroup, keyed like /proc/self/cgroup."""
    global _hierarchies
    if _hierarchies is None:
        with open("/proc/self/mountinfo") as f:
            mounts = f.read()
        with open("/proc/self/cgroup") as f:
            own = f.read()
        _hierarchies = parse_hierarchies(mounts, own)
    return _hierarchies


def v1_key(super_options: str) -> tuple[str, tuple[str, ...]]:
    """The hierarchy key and controllers from a v1 mount's super options ("rw,cpu,cpuacct")."""
    names = [o for o in super_options.split(",") if o in V1_CONTROLLERS or o.startswith("name=")]
    return ",".join(names), tuple(n for n in names if not n.startswith("name="))


def parse_hierarchies(mountinfo_text: str, proc_cgroup: str) -> dict[str, Hierarchy]:
    """Pure parser of /proc/self/mountinfo + /proc/self/cgroup (unit-tested without root)."""
    own_by_key: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own_by_key[parts[1]] = parts[2]
    found: dict[str, Hierarchy] = {}
    ctrls: tuple[str, ...]
    for m in mountinfo.parse(mountinfo_text):
        fstype, mount_root, mountpoint = m.fstype, m.root, m.mountpoint
        if fstype == "cgroup2":
            key, ctrls = UNIFIED_KEY, ()
        elif fstype == "cgroup":
            key, ctrls = v1_key(m.super_options)
            if not key:
                continue
        else:
            continue
        if not (mountpoint + "/").startswith(CGROUP_ROOT + "/"):
            continue  # a stray mount elsewhere (a container's view, a test) is not the host's tree
        if key in found or key not in own_by_key:
            continue  # first mount wins; a hierarchy this process is not in is not ours to use
        found[key] = Hierarchy(key, ctrls, mountpoint, mount_root, _strip_root(own_by_key[key], mount_root))
    return found


def _strip_root(own: str, mount_root: str) -> str:
    """Our cgroup as seen below a mount of `mount_root` (a container sees only its subtree)."""
    if mount_root in ("/", ""):
        return own or "/"
    if own == mount_root:
        return "/"
    if own.startswith(mount_root + "/"):
        return own[len(mount_root):]
    return own  # outside the mounted subtree (cgroup ns): the best guess is the path as is

