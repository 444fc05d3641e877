"""Am I rootless?  The answers every command needs, in one place (runc's rules throughout).

- `is_rootless(flag, systemd)`: the global `--rootless` (auto | a boolean, as runc parses it).
  "auto" is true when we are not root, or root of a user namespace that is not the initial one
  (rootless podman runs the runtime so) — except, with the systemd driver, where that user
  namespace is the one systemd itself runs in (root of a system container, LXD or sysbox, whose
  PID 1 is its own systemd): there the system instance is ours to use.
- `default_root()`: where state goes without `--root`.
"""
from __future__ import annotations

import os

from .errors import OCIError

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def in_user_namespace() -> bool:
    """Not in the initial user namespace (whose uid_map maps every id onto itself)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def is_rootless(flag: str, systemd: bool = False) -> bool:
    if flag in _TRUE:
        return True
    if flag in _FALSE:
        return False
    if flag and flag.lower() != "auto":  # runc: empty or any case of "auto" is auto
        raise OCIError(f"--rootless {flag!r}: want auto, true or false")
    if os.geteuid() != 0:
        return True
    if not in_user_namespace():
        return False
    return not (systemd and _systemd_shares_our_user_namespace())


def _systemd_shares_our_user_namespace() -> bool:
    """PID 1 is systemd and lives in our user namespace (we cannot even look at another
    namespace's PID 1 from a user namespace: that answers no as well)."""
    if not os.path.isdir("/run/systemd/system"):
        return False
    try:
        ours, theirs = os.stat("/proc/self/ns/user"), os.stat("/proc/1/ns/user")
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


def default_root() -> str:
    """/run/ocirun for root; $XDG_RUNTIME_DIR/ocirun for anyone else (runc's rule, with runc's
    name swapped): a user's own runtime directory, private to them and emptied at logout.
    "Anyone else" includes root of a user namespace that is not the initial one, unless $USER
    says root (rootless podman runs the runtime as root of its own user namespace)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and (os.geteuid() != 0 or (in_user_namespace() and os.environ.get("USER") != "root")):
        return os.path.join(xdg, "ocirun")
    return "/run/ocirun"
