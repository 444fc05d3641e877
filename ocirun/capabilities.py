"""Linux capabilities of the container process: names, the bounding set, and the four sets.

The init applies them in runc's order, as the last privileged steps before exec:

    apply_bounding(caps)     # needs CAP_SETPCAP, so before we give anything up
    user.switch_user(...)    # keepcaps keeps the permitted set across setuid
    apply_caps(caps)         # effective/permitted/inheritable in one capset, then ambient

`check_names` runs on the config-parsing hot path, so this module imports nothing heavy: the
prctl/capset calls go through `ocirun.kernel` (over `ocirun.linux`, already loaded), not
python-prctl, whose table also lacks the newest capabilities.

Names we do not know at all are a config error (a typo should not silently vanish; runc only
warns).  Names we know but the running kernel does not (above /proc/sys/kernel/cap_last_cap)
are ignored like runc does: `unsupported_names` lists them so create can warn before forking.
"""
from __future__ import annotations

import errno

from . import kernel
from .errors import ConfigError, OCIError, os_words

# include/uapi/linux/capability.h
CAPS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
CAP_NAMES: dict[int, str] = {v: k for k, v in CAPS.items()}

_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_last_cap: int | None = None


def check_names(names: list[str], json_path: str) -> None:
    """Reject a capability name we have never heard of; `json_path` is e.g. process.capabilities.bounding."""
    for i, name in enumerate(names):
        if name not in CAPS:
            raise ConfigError(f"{json_path}[{i}]", f"unknown capability {name!r}")


def last_cap() -> int:
    """The highest capability number the running kernel knows (cached).

    Read from /proc/sys/kernel/cap_last_cap; where /proc is not there (inside the container
    before proc is mounted) probe the bounding set instead: PR_CAPBSET_READ answers EINVAL for
    a number the kernel does not know.
    """
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last_cap = int(f.read())
        except (OSError, ValueError):
            _last_cap = _probe_last_cap()
    return _last_cap


def _probe_last_cap() -> int:
    n = max(CAPS.values())
    while n > 0:
        try:
            kernel.KERNEL.capbset_read(n)
            return n
        except OSError:
            n -= 1
    return 0


def unsupported_names(caps) -> list[str]:
    """Known names in any set of `caps` that this kernel does not have (they will be ignored)."""
    if caps is None:
        return []
    top = last_cap()
    out: list[str] = []
    for s in _SETS:
        for name in getattr(caps, s):
            if CAPS[name] > top and name not in out:
                out.append(name)
    return out


def mask(names: list[str]) -> int:
    """The 64-bit mask of `names`, leaving out what the running kernel lacks."""
    top = last_cap()
    m = 0
    for name in names:
        n = CAPS[name]
        if n <= top:
            m |= 1 << n
    return m


def _names(m: int) -> str:
    return ", ".join(CAP_NAMES.get(n, str(n)) for n in range(64) if m >> n & 1)


def apply_bounding(caps) -> None:
    """Drop from our bounding set every capability not in caps.bounding (all of them for None).

    Must run while we still hold CAP_SETPCAP (before switch_user / apply_caps).  Asking to keep
    a capability the runtime's own bounding set already lacks is not an error here: it simply
    stays out (apply_caps reports it if a process set asks for it).
    """
    keep = mask(caps.bounding) if caps is not None else 0
    for n in range(last_cap() + 1):
        if keep >> n & 1:
            continue
        try:
            kernel.KERNEL.capbset_drop(n)
        except OSError as e:
            raise OCIError(f"process.capabilities.bounding: drop {CAP_NAMES.get(n, n)}: "
                           f"{os_words(e)}") from None


def apply_caps(caps, log=None) -> None:
    """Set effective, permitted and inheritable in one capset(2), then the ambient set.

    `caps` None means no capabilities at all (what runc gives a process without a capabilities
    object).  A capability the runtime itself does not hold (say CAP_SYS_RESOURCE, which this
    machine's bounding set lacks) cannot be granted: the error names it and the set asking for
    it.  Ambient capabilities that are not in both the new permitted and inheritable sets
    cannot be raised; like runc we warn through `log(level, msg)` and go on.
    """
    eff = mask(caps.effective) if caps is not None else 0
    prm = mask(caps.permitted) if caps is not None else 0
    inh = mask(caps.inheritable) if caps is not None else 0
    amb = mask(caps.ambient) if caps is not None else 0
    _check_grantable(eff, prm, inh)
    try:
        kernel.KERNEL.capset(eff, prm, inh)
    except OSError as e:
        raise OCIError(f"process.capabilities: capset: {os_words(e)}") from None
    _apply_ambient(amb, prm & inh, log)


def _check_grantable(eff: int, prm: int, inh: int) -> None:
    """Name the capability at fault before capset fails with a bare EPERM."""
    _, have_prm, have_inh = kernel.KERNEL.capget()
    missing = prm & ~have_prm
    if missing:
        raise OCIError(f"process.capabilities.permitted: {_names(missing)}: operation not permitted "
                       "(not in the runtime's own permitted/bounding set)")
    missing = eff & ~prm
    if missing:
        raise OCIError(f"process.capabilities.effective: {_names(missing)}: operation not permitted "
                       "(an effective capability must also be in permitted)")
    missing = inh & ~_bounding_mask()
    if missing:
        raise OCIError(f"process.capabilities.inheritable: {_names(missing)}: operation not permitted "
                       "(not in the bounding set)")


def _bounding_mask() -> int:
    m = 0
    for n in range(last_cap() + 1):
        if kernel.KERNEL.capbset_read(n) == 1:
            m |= 1 << n
    return m


def _apply_ambient(amb: int, raisable: int, log) -> None:
    try:
        kernel.KERNEL.ambient_clear_all()
    except OSError as e:
        if e.errno == errno.EINVAL:  # kernel without ambient capabilities (< 4.3)
            if amb and log:
                log("warning", "this kernel has no ambient capabilities; ignoring process.capabilities.ambient")
            return
        raise OCIError(f"process.capabilities.ambient: clear: {os_words(e)}") from None
    for n in range(64):
        if not amb >> n & 1:
            continue
        if not raisable >> n & 1:
            if log:
                log("warning", f"can't raise ambient capability {CAP_NAMES[n]}: it is not in both "
                               "the permitted and inheritable sets")
            continue
        try:
            kernel.KERNEL.ambient_raise(n)
        except OSError as e:
            if log:
                log("warning", f"can't raise ambient capability {CAP_NAMES[n]}: {os_words(e)}")


def current() -> dict[str, int]:
    """Our own sets as masks (for tests and `ocirun features`-style reporting)."""
    eff, prm, inh = kernel.KERNEL.capget()
    return {"effective": eff, "permitted": prm, "inheritable": inh, "bounding": _bounding_mask()}


__all__ = ["CAPS", "CAP_NAMES", "check_names", "last_cap", "unsupported_names", "mask",
           "apply_bounding", "apply_caps", "current"]
