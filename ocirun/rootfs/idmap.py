"""Idmapped bind mounts (runtime-spec 1.2: `mounts[].uidMappings`/`gidMappings`, the `idmap` and
`ridmap` options), made by the runtime, which is host root.

A mount can carry a user namespace through which the kernel translates the owners of its files:
a file whose owner on disk is `containerID` shows (and is written) as `hostID`.  So that a
container in a user namespace sees its own root as the owner of a host directory's root-owned
files, say.  Setting that needs CAP_SYS_ADMIN over the mount, which a container's init in a user
namespace does not have; the runtime therefore clones the source as a detached tree
(open_tree), attaches a user namespace made for the mapping (mount_setattr MOUNT_ATTR_IDMAP),
and hands the tree's fd to the init, which moves it into place (move_mount).

The mapping is the mount's own; without one, the container's user namespace mappings (runc).
"""
from __future__ import annotations

import os

from .. import linux
from ..errors import ConfigError, os_words

USERNS_HELPER_TIMEOUT_S = 10.0


def map_text(entries) -> str:
    """Mount mappings (JSON dicts) or linux.*Mappings (IDMapping) -> uid_map file text."""
    lines = []
    for e in entries:
        if isinstance(e, dict):
            lines.append(f"{e['containerID']} {e['hostID']} {e['size']}\n")
        else:
            lines.append(f"{e.container_id} {e.host_id} {e.size}\n")
    return "".join(lines)


def is_idmapped(m, options=None) -> bool:
    """Does mounts[i] ask for an idmapped mount?  One answer for the init and the runtime."""
    if m.uid_mappings or m.gid_mappings:
        return True
    return any(o in ("idmap", "ridmap") for o in (options if options is not None else m.options))


def check_config(cfg) -> None:
    """Refuse, before anything exists, the idmapped mounts we cannot make."""
    for i, m in enumerate(cfg.mounts):
        if not is_idmapped(m):
            continue
        where = f"mounts[{i}]"
        if m.type != "bind" and not any(o in ("bind", "rbind") for o in m.options):
            raise ConfigError(where, "idmapped mounts (idmap, ridmap, uidMappings) are supported for bind mounts only")
        if bool(m.uid_mappings) != bool(m.gid_mappings):
            raise ConfigError(f"{where}.{'gidMappings' if m.uid_mappings else 'uidMappings'}",
                              "an idmapped mount's own mapping needs both uidMappings and gidMappings")
        if not m.uid_mappings and not (cfg.linux.uid_mappings and cfg.linux.gid_mappings):
            raise ConfigError(where, "an idmapped mount needs uidMappings and gidMappings, its own or the "
                              "container's user namespace's")
        ns = cfg.linux.namespace("mount")
        if ns is not None and ns.path:
            raise ConfigError(where, "idmapped mounts need a new mount namespace (the source is cloned from "
                              "the runtime's, which a namespace joined by path is not a copy of)")
        if os.geteuid() != 0:
            raise ConfigError(where, "idmapped mounts need root (mount_setattr on a clone of a host mount)")


def mappings_for(cfg, index: int) -> tuple[str, str, str]:
    """(uid_map text, gid_map text, the field they came from) for mounts[index]."""
    m = cfg.mounts[index]
    if m.uid_mappings:
        return map_text(m.uid_mappings), map_text(m.gid_mappings), f"mounts[{index}]"
    return map_text(cfg.linux.uid_mappings), map_text(cfg.linux.gid_mappings), "linux"


def user_namespace_fd(uid_map: str, gid_map: str, field: str) -> int:
    """An fd of a new user namespace with these maps, which no process keeps alive: a child
    made to hold it long enough for us to write its maps and open it."""
    import select
    r, w = os.pipe()              # parent -> child: closed when the child may go
    try:
        ready_r, ready_w = os.pipe()  # child -> parent: "u" once it has its namespace, or "e<errno>"
    except OSError:
        os.close(r)
        os.close(w)
        raise
    try:
        pid = os.fork()
    except OSError:
        for fd in (r, w, ready_r, ready_w):
            os.close(fd)
        raise
    if pid == 0:
        try:
            os.close(w)
            os.close(ready_r)
            try:
                linux.unshare(linux.CLONE_NEWUSER)
                os.write(ready_w, b"u")
            except OSError as e:
                os.write(ready_w, b"e%d" % (e.errno or 0))  # a syscall's OSError has one
            os.read(r, 1)  # until the parent closes its end
        finally:
            os._exit(0)
    os.close(r)
    os.close(ready_w)
    ok = False
    try:
        ready, _, _ = select.select([ready_r], [], [], USERNS_HELPER_TIMEOUT_S)
        answer = os.read(ready_r, 16) if ready else b""
        if answer != b"u":
            why = os_words(OSError(int(answer[1:]), os.strerror(int(answer[1:])))) \
                if answer[:1] == b"e" and answer[1:].isdigit() else "no answer from the helper process"
            raise ConfigError(field, f"cannot make a user namespace for the idmapped mount: {why}")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                key = "uidMappings" if name == "uid_map" else "gidMappings"
                raise ConfigError(f"{field}.{key}", f"{text.strip()!r}: {os_words(e)}") from None
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        ok = True
        return fd
    finally:
        os.close(ready_r)
        os.close(w)
        if not ok:
            try:
                os.kill(pid, 9)  # whatever state it is in: never wait on it unbounded
            except ProcessLookupError:
                pass
        os.waitpid(pid, 0)  # it exits as soon as the pipe closes (or was killed)


def idmapped_tree(source_fd: int, uid_map: str, gid_map: str, rbind: bool, ridmap: bool, field: str) -> int:
    """A detached copy of the mount at `source_fd` (with the mounts below it for `rbind`, as a
    plain bind would), idmapped: the top mount only for `idmap`, every mount copied for `ridmap`."""
    flags = linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_EMPTY_PATH
    tree = linux.open_tree(source_fd, "", flags | (linux.AT_RECURSIVE if rbind else 0))
    try:
        userns = user_namespace_fd(uid_map, gid_map, field)
        try:
            linux.mount_setattr(tree, "", linux.AT_EMPTY_PATH | (linux.AT_RECURSIVE if ridmap else 0),
                                attr_set=linux.MOUNT_ATTR_IDMAP, userns_fd=userns)
        finally:
            os.close(userns)
    except BaseException:
        os.close(tree)
        raise
    return tree
