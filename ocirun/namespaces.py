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


def join_user_namespace(fds: dict[str, int], cfg: Config | None = None) -> None:
    """`cfg`: the config the fds were opened from (create), so that an error names the field."""
    if "user" in fds:
        _join(fds, "user", cfg)


def join_namespaces(fds: dict[str, int], cfg: Config | None = None) -> None:
    for t in JOIN_ORDER:
        if t in fds:
            _join(fds, t, cfg)


def _join(fds: dict[str, int], ns_type: str, cfg: Config | None) -> None:
    try:
        linux.setns(fds[ns_type], NAMESPACE_TYPES[ns_type])
    except OSError as e:
        for i, ns in enumerate(cfg.linux.namespaces if cfg is not None else ()):
            if ns.type == ns_type and ns.path:
                raise ConfigError(f"linux.namespaces[{i}].path",
                                  f"join {ns_type} namespace {ns.path}: {os_words(e)}") from None
        raise OCIError(f"join {ns_type} namespace: {os_words(e)}") from None


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
    """Parent side: write uid_map/gid_map of `pid`, which has just created its user namespace.

    Root writes any mapping.  An unprivileged caller may write one line mapping its own id
    (and, for gid_map, only after "deny" in setgroups: the kernel's rule, so that a user cannot
    drop a group that denies it access); anything else goes through the setuid helpers
    newuidmap/newgidmap (package uidmap), which allow the ranges /etc/subuid and /etc/subgid
    give the user, as runc does."""
    lin = cfg.linux
    privileged = os.geteuid() == 0
    for key, name, maps, own in (("linux.uidMappings", "uid_map", lin.uid_mappings, os.geteuid()),
                                 ("linux.gidMappings", "gid_map", lin.gid_mappings, os.getegid())):
        if privileged or not maps:
            _write_map(pid, key, name, maps)
        elif _only_own_id(maps, own):
            if name == "gid_map":
                _write_map(pid, key, "setgroups", None)
            _write_map(pid, key, name, maps)
        else:
            _map_with_helper(pid, key, "newuidmap" if name == "uid_map" else "newgidmap", maps)


def _only_own_id(maps: list[IDMapping], own: int) -> bool:
    return len(maps) == 1 and maps[0].host_id == own and maps[0].size == 1


def denies_setgroups(cfg: Config) -> bool:
    """Whether the user namespace create makes will have setgroups "deny": an unprivileged
    runtime that maps only its own gid (write_id_maps; the kernel's rule)."""
    maps = cfg.linux.gid_mappings
    return (os.geteuid() != 0 and cfg.has_new_namespace("user") and bool(maps)
            and _only_own_id(maps, os.getegid()))


def _write_map(pid: int, key: str, name: str, maps: list[IDMapping] | None) -> None:
    try:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(_map_text(maps) if maps is not None else "deny")
    except OSError as e:
        raise ConfigError(key, f"write /proc/{pid}/{name}: {os_words(e)}") from None


def _map_with_helper(pid: int, key: str, helper: str, maps: list[IDMapping]) -> None:
    import shutil
    import subprocess
    path = shutil.which(helper)
    if path is None:
        raise ConfigError(key, f"mapping more than your own id needs {helper} (Debian package uidmap), "
                          "which is not installed")
    args = [path, str(pid)] + [str(n) for m in maps for n in (m.container_id, m.host_id, m.size)]
    try:
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(key, f"{helper}: {e}") from None
    if r.returncode != 0:
        words = " ".join((r.stderr or r.stdout).split()) or f"exit status {r.returncode}"
        raise ConfigError(key, f"{helper} refused {_map_text(maps).strip().replace(chr(10), ', ')!r} (see /etc/sub{'uid' if helper == 'newuidmap' else 'gid'}): {words}")


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
