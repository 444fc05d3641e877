"""Namespaces: which to create, which to join, in what order, and the user-namespace id maps.

Order matters (runc's nsexec and youki's intermediate process agree):
  1. the user namespace first — joined, or created and mapped by the *parent* (writing uid_map of
     a child needs privileges in the parent namespace; the child then becomes root inside);
  2. join every other namespace given by `path` (mount last, since it changes what paths mean);
  3. unshare every new one in a single call, so they are all owned by the user namespace of (1);
  4. fork: a new pid (and time) namespace applies only to children — the child is the init.
The cgroup namespace is unshared in (3) *after* the parent placed us in the container's cgroup,
so the container sees its own cgroup as its root.
"""
from __future__ import annotations

import os
import stat

from . import linux
from .config import NAMESPACE_TYPES, Config, IDMapping, file_kind
from .errors import ConfigError, OCIError, os_words

# Join order for namespaces given by path (user handled separately, before all others).
JOIN_ORDER = ("ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def open_namespace_paths(cfg: Config) -> dict[str, int]:
    """Open every `namespaces[].path` now, on the host, before anything moves: {type: fd}."""
    fds: dict[str, int] = {}
    try:
        for i, ns in enumerate(cfg.linux.namespaces):
            if not ns.path:
                continue
            fds[ns.type] = _open_namespace(ns.path, f"linux.namespaces[{i}].path")
            _check_ns_kind(fds[ns.type], ns.type, f"linux.namespaces[{i}].path", ns.path)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _open_namespace(path: str, json_path: str) -> int:
    """Open a namespace file for setns(2) without side effects on anything else.

    A namespace file (/proc/PID/ns/*, or a bind mount of one) is a regular file of nsfs.  The
    type is checked on an O_PATH fd first: opening a FIFO for reading would block until a writer
    comes (runc hangs there), opening a device may do things (a watchdog starts counting); only
    a regular file is then opened for real, through that same fd (no race with a rename)."""
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(json_path, f"{path}: {os_words(e)}") from None
    try:
        mode = os.fstat(pfd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(json_path, f"{path} is not a namespace (it is {file_kind(mode)})")
        return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(json_path, f"{path}: {os_words(e)}") from None
    finally:
        os.close(pfd)


def _check_ns_kind(fd: int, ns_type: str, json_path: str, path: str) -> None:
    """A path to a namespace of another kind is a config error, not an EINVAL from setns.

    NS_GET_NSTYPE rather than readlink: a bind-mounted namespace (`ip netns add`) reads back as
    its path, not as `net:[...]`.
    """
    import fcntl
    try:
        kind = fcntl.ioctl(fd, 0xB703)  # NS_GET_NSTYPE -> its CLONE_NEW* flag (Linux 4.11)
    except OSError:
        raise ConfigError(json_path, f"{path} is not a namespace") from None
    if kind != NAMESPACE_TYPES[ns_type]:
        raise ConfigError(json_path, f"{path} is not a {ns_type} namespace")


def new_namespace_flags(cfg: Config) -> int:
    """CLONE_NEW* flags of the namespaces to create (those without a path), user excluded."""
    flags = 0
    for ns in cfg.linux.namespaces:
        if not ns.path and ns.type != "user":
            flags |= NAMESPACE_TYPES[ns.type]
    return flags


def join_user_namespace(fds: dict[str, int]) -> None:
    if "user" in fds:
        try:
            linux.setns(fds["user"], linux.CLONE_NEWUSER)
        except OSError as e:
            raise OCIError(f"join user namespace: {os_words(e)}") from None


def join_namespaces(fds: dict[str, int]) -> None:
    for t in JOIN_ORDER:
        if t in fds:
            try:
                linux.setns(fds[t], NAMESPACE_TYPES[t])
            except OSError as e:
                raise OCIError(f"join {t} namespace: {os_words(e)}") from None


def unshare(flags: int) -> None:
    if flags:
        try:
            linux.unshare(flags)
        except OSError as e:
            raise OCIError(f"create namespaces: unshare: {os_words(e)}") from None


def become_root_in_userns() -> None:
    """After the maps are written: be uid/gid 0 inside, with a full capability set again."""
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _map_text(maps: list[IDMapping]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


def write_id_maps(pid: int, cfg: Config) -> None:
    """Parent side: write uid_map/gid_map of `pid`, which has just created its user namespace."""
    lin = cfg.linux
    for key, name, maps in (("linux.uidMappings", "uid_map", lin.uid_mappings),
                            ("linux.gidMappings", "gid_map", lin.gid_mappings)):
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(_map_text(maps))
        except OSError as e:
            raise ConfigError(key, f"write /proc/{pid}/{name}: {os_words(e)}") from None


_CLOCKS = {"monotonic": 1, "boottime": 7}


def write_time_offsets(cfg: Config) -> None:
    """After unshare(CLONE_NEWTIME) and before the first child: /proc/self/timens_offsets."""
    lines = []
    for clock, off in cfg.linux.time_offsets.items():
        if clock not in _CLOCKS:
            raise ConfigError(f"linux.timeOffsets.{clock}", "unknown clock (want monotonic or boottime)")
        secs = off.get("secs", 0) if isinstance(off, dict) else 0
        nanos = off.get("nanosecs", 0) if isinstance(off, dict) else 0
        lines.append(f"{_CLOCKS[clock]} {int(secs)} {int(nanos)}\n")
    if not lines:
        return
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(lines))
    except OSError as e:
        raise ConfigError("linux.timeOffsets", f"write timens_offsets: {os_words(e)}") from None
