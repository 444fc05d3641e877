"""Who the container process runs as: groups, gid, uid, umask, HOME.

Called by the init inside the container (after pivot_root), between apply_bounding and
apply_caps, in runc's order:

    keepcaps on -> setgroups(additionalGids) -> setresgid -> setresuid -> keepcaps off

keepcaps makes the kernel keep the permitted set across the switch to a non-zero uid, so
apply_caps can still grant what config.json asks for afterwards.  Like runc, the supplementary
groups are exactly process.user.additionalGids (runc always passes "uid:gid", so it never adds
/etc/group memberships); an empty list clears the groups we inherited.
"""
from __future__ import annotations

import errno
import os
import stat

from . import kernel
from .errors import OCIError, os_words

DEFAULT_UMASK = 0o022  # runc's default when process.user.umask is absent


def switch_user(user, keep_caps: bool = True) -> None:
    """Become user.uid/user.gid with user.additional_gids as the supplementary groups."""
    k = kernel.KERNEL
    if keep_caps:
        _keepcaps(True)
    if k.may_setgroups():
        # In a user namespace whose setgroups is "deny" the groups we inherited stay, as runc
        # leaves them.  A runtime that is not root has refused groups asked for there already,
        # before anything was made (refuse_groups_setgroups_denies); root, in such a namespace
        # (rootless podman with one id, or one joined by path), goes on without them, as runc.
        try:
            k.setgroups(user.additional_gids)
        except OSError as e:
            raise _err("process.user.additionalGids", f"setgroups {_gid_list(user.additional_gids)}", e) from None
        except ValueError as e:  # more than the host's NGROUPS_MAX (config.py checks the kernel's)
            raise OCIError(f"process.user.additionalGids: setgroups of {len(user.additional_gids)} groups: {e}") from None
    try:
        k.setresgid(user.gid, user.gid, user.gid)
    except OSError as e:
        raise _id_err("process.user.gid", f"setgid {user.gid}", e) from None
    try:
        k.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise _id_err("process.user.uid", f"setuid {user.uid}", e) from None
    if keep_caps:
        _keepcaps(False)


def refuse_groups_setgroups_denies(user) -> None:
    """A runtime that is not root cannot give groups in a user namespace whose setgroups is
    "deny" (one mapping only its own gid): refused before anything is made, in runc's terms."""
    if user.additional_gids:
        raise OCIError(f"process.user.additionalGids: cannot set any additional groups in a rootless container "
                       f"that maps only your own gid ({_gid_list(user.additional_gids)}; ranges from "
                       "/etc/subgid through newgidmap allow groups)")


def _gid_list(gids: list[int]) -> str:
    """The groups for a message: all of a short list, the count of a long one (up to 65536)."""
    return str(gids) if len(gids) <= 16 else f"[{', '.join(map(str, gids[:16]))}, ... ({len(gids)} groups)]"


def _keepcaps(on: bool) -> None:
    try:
        kernel.KERNEL.set_keepcaps(on)
    except OSError as e:
        raise _err("process.user", f"prctl(PR_SET_KEEPCAPS, {int(on)})", e) from None


def set_umask(user) -> None:
    kernel.KERNEL.umask(user.umask if user.umask is not None else DEFAULT_UMASK)


def home_env(env: list[str], uid: int, passwd: str = "/etc/passwd") -> list[str]:
    """`env` with HOME added when it is missing: the home of `uid` in the container's
    /etc/passwd (we are already pivoted), or "/" when there is none (runc's default)."""
    if any(e.startswith("HOME=") for e in env):
        return env
    return env + [f"HOME={lookup_home(uid, passwd)}"]


def lookup_home(uid: int, passwd: str = "/etc/passwd") -> str:
    try:
        with open(passwd, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return "/"
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2].strip() == str(uid):
            return fields[5] or "/"
    return "/"


def fix_stdio_permissions(uid: int) -> None:
    """Give our stdio to the container user, so it can reopen /dev/stdin, /proc/self/fd/1 etc.

    What runc does before switching user: skip /dev/null (shared with everyone) and fds the user
    already owns; a pipe or socket we may not chown (EINVAL/EPERM/EROFS) is left alone.  Only
    the owner changes: the group stays what it is (a pty keeps devpts's `gid=5`, tty, as with
    runc, so that `write`/`wall`-style tools and `mesg` behave as on any Linux terminal).
    """
    try:
        null = os.stat("/dev/null")
    except OSError:
        null = None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        is_null = null is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev
        if st.st_uid == uid or is_null:
            continue
        try:
            kernel.KERNEL.fchown(fd, uid, -1)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise OCIError(f"fchown stdio fd {fd} to uid {uid}: {os_words(e)}") from None


def _err(field: str, what: str, e: OSError) -> OCIError:
    return OCIError(f"{field}: {what}: {os_words(e)}")


def _id_err(field: str, what: str, e: OSError) -> OCIError:
    """setresuid/setresgid: EINVAL means only one thing, an id the user namespace does not map."""
    if e.errno == errno.EINVAL:
        kind = "uid" if field.endswith("uid") else "gid"
        return OCIError(f"{field}: {what}: that {kind} is not mapped in the container's user namespace "
                        f"(linux.{kind}Mappings)")
    return _err(field, what, e)
