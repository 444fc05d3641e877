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


def mappings_for(cfg, index: int) -> tuple[str, str]:
    """(uid_map text, gid_map text) for mounts[index]."""
    m = cfg.mounts[index]
    uids = m.uid_mappings or cfg.linux.uid_mappings
    gids = m.gid_mappings or cfg.linux.gid_mappings
    if not uids or not gids:
        raise ConfigError(f"mounts[{index}]", "an idmapped mount needs uidMappings and gidMappings, "
                          "its own or the container's user namespace's")
    return map_text(uids), map_text(gids)


def user_namespace_fd(uid_map: str, gid_map: str, field: str) -> int:
    """An fd of a new user namespace with these maps, which no process keeps alive: a child
    made to hold it long enough for us to write its maps and open it."""
    r, w = os.pipe()          # parent -> child: closed when the child may go
    ready_r, ready_w = os.pipe()  # child -> parent: one byte once it has its namespace
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.close(ready_r)
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(r, 1)  # until the parent closes its end
        finally:
            os._exit(0)
    os.close(r)
    os.close(ready_w)
    try:
        import select
        ready, _, _ = select.select([ready_r], [], [], USERNS_HELPER_TIMEOUT_S)
        if not ready or os.read(ready_r, 1) != b"u":
            raise ConfigError(field, "could not make a user namespace for the idmapped mount")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise ConfigError(f"{field}.{'uidMappings' if name == 'uid_map' else 'gidMappings'}",
                                  f"{text.strip()!r}: {os_words(e)}") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(w)
        os.waitpid(pid, 0)  # it exits as soon as the pipe closes (or has failed already)


def idmapped_tree(source_fd: int, uid_map: str, gid_map: str, rbind: bool, ridmap: bool, field: str) -> int:
    """A detached copy of the mount at `source_fd` (with the mounts below it for `rbind`),
    idmapped: the top mount only for `idmap`, every mount of the copy for `ridmap`."""
    flags = linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_EMPTY_PATH
    tree = linux.open_tree(source_fd, "", flags | (linux.AT_RECURSIVE if rbind or ridmap else 0))
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
