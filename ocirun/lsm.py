"""Linux security module labels: process.apparmorProfile, process.selinuxLabel, linux.mountLabel.

A requested profile or label on a host without that LSM is an error (as runc does): silently
running a container unconfined that asked for confinement would be worse.  A mount label without
SELinux is ignored (as crun does) — it only names files, it confines nothing.  Labels are written
to /proc/thread-self/attr/... just before execve: they take effect at the exec.
"""
from __future__ import annotations

import os

from .errors import ConfigError, OCIError, os_words


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def check_available(proc, prefix: str = "process") -> None:
    """Before forking: refuse labels this host cannot apply."""
    if proc.apparmor_profile and not apparmor_enabled():
        raise ConfigError(f"{prefix}.apparmorProfile",
                          f"profile {proc.apparmor_profile!r} requested but AppArmor is not enabled on this host")
    if proc.selinux_label and not selinux_enabled():
        raise ConfigError(f"{prefix}.selinuxLabel",
                          f"label {proc.selinux_label!r} requested but SELinux is not enabled on this host")


def apply_exec_labels(proc) -> None:
    """In the container, right before execve (and before seccomp: it needs open and write)."""
    if proc.apparmor_profile:
        _write_attr(("apparmor/exec", "exec"), f"exec {proc.apparmor_profile}", "process.apparmorProfile")
    if proc.selinux_label:
        _write_attr(("exec",), proc.selinux_label, "process.selinuxLabel")


def _write_attr(names: tuple[str, ...], value: str, json_path: str) -> None:
    last: OSError | None = None
    for name in names:
        try:
            with open(f"/proc/thread-self/attr/{name}", "w") as f:
                f.write(value)
            return
        except OSError as e:
            last = e
    assert last is not None  # names is never empty
    raise OCIError(f"{json_path}: set {value!r}: {os_words(last)}")
