"""linux.sysctl: which keys a container may set (checked in the runtime) and writing them (init).

A sysctl is only safe when it belongs to a namespace the container does not share with the host
(runc's rule): kernel.msg*/sem/shm*/fs.mqueue.* need a new ipc namespace, net.* a new network
namespace, kernel.hostname/domainname a new uts namespace.  Anything else would change the host.
net.* is also allowed in a *joined* network namespace (`namespaces[].path`, e.g. `ip netns add`)
unless that path is the runtime's own namespace — runc's rule too: the init writes it inside.
"""
from __future__ import annotations

from . import kernel
from .config import Config
from .errors import ConfigError, os_error

_IPC_KEYS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
             "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def _needed_namespace(key: str) -> str | None:
    if key in _IPC_KEYS or key.startswith("fs.mqueue."):
        return "ipc"
    if key.startswith("net."):
        return "network"
    if key in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def validate(cfg: Config) -> None:
    for key in cfg.linux.sysctl:
        ns = _needed_namespace(key.replace("/", "."))
        where = f"linux.sysctl.{key}"
        if ns is None:
            raise ConfigError(where, "is not namespaced and would change the host; refused")
        if ns == "network" and _joined_other_netns(cfg):
            continue
        if not cfg.has_new_namespace(ns):
            raise ConfigError(where, f"needs a new {ns} namespace (it would change the host's)")


def _joined_other_netns(cfg: Config) -> bool:
    ns = cfg.linux.namespace("network")
    if ns is None or not ns.path:
        return False
    from .network import is_runtime_netns
    return not is_runtime_netns(ns.path)


def apply(sysctls: dict[str, str]) -> None:
    """Write each key under /proc/sys inside the container (after pivot_root)."""
    for key, value in sysctls.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            kernel.KERNEL.write_sysctl(path, value)
        except OSError as e:
            raise ConfigError(f"linux.sysctl.{key}", str(os_error(f"write {path}", e))) from None
