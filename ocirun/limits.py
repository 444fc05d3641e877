"""Per-process limits and scheduling: rlimits, oom_score_adj, I/O priority, CPU scheduler,
personality.

Two kinds of functions:
- `validate_*` are pure: create calls them while parsing, before anything is forked, so a bad
  value fails early with the JSON path of the field (ConfigError).  They return the value in the
  form the matching `apply_*` takes, so nothing is parsed twice.
- `apply_*` run in the init (or the exec'd process) just before exec and report the kernel's
  words, naming the field at fault.

All syscalls go through `ocirun.linux.syscall`, the rlimits' through `ocirun.kernel` (the seam
the unit tests of the order replace); nothing heavy is imported.
"""
from __future__ import annotations

import os
import sys

from . import kernel, linux
from .errors import ConfigError, OCIError, os_words

# --------------------------------------------------------------------------- rlimits

RLIM_INFINITY = (1 << 64) - 1


def prlimit(pid: int, resource: int, soft: int, hard: int) -> None:
    """setrlimit for any process (0 = ourselves) with full 64-bit values (os.setrlimit stops at 2**63)."""
    kernel.KERNEL.prlimit(pid, resource, soft, hard)


RLIMIT_DATA, RLIMIT_STACK, RLIMIT_AS = 2, 3, 9

# Limits on memory that the runtime's own Python, still running in the process until execve,
# would be held to: its heap (RLIMIT_DATA), its stack (RLIMIT_STACK) and its whole address
# space (RLIMIT_AS) are bigger than what a container may ask for its program (a static binary
# runs in a few MiB).  Set any earlier, they make our next allocation fail (MemoryError in the
# middle of the start) or our stack overflow; so they are set last, just before the execve.
# runc's Go init gets them from its parent once it is ready, and its runtime reserved what it
# needs long before.  A hard limit above ours still goes up early, while we are root
# (apply_rlimits, stage "early"): raising it needs CAP_SYS_RESOURCE, which the process has lost
# by the time of the late stage.
LATE_RLIMITS = (RLIMIT_DATA, RLIMIT_STACK, RLIMIT_AS)

# No program can start in an address space smaller than this: the new image needs at least a
# page of code, one of stack and the vDSO with its data pages (a 9 KiB static binary that only
# calls exit needs 32 KiB here).  Below it, execve fails past its point of no return and the
# container dies of SIGSEGV at `start` (runc: exit 139, no word why): refuse it at create.
MIN_ADDRESS_SPACE = 16 << 10


def validate_rlimits(rlimits) -> None:
    """Fail early on an entry the kernel would refuse whatever our privileges (soft above hard),
    or one with which no program could ever start."""
    for i, r in enumerate(rlimits):
        if r.soft > r.hard:
            raise ConfigError(f"process.rlimits[{i}]", f"{r.type}: soft limit {r.soft} is above the hard limit {r.hard}")
        if r.resource == RLIMIT_AS and r.soft < MIN_ADDRESS_SPACE:
            raise ConfigError(f"process.rlimits[{i}]",
                              f"{r.type}: soft limit {r.soft} is too small for any program to start "
                              f"(execve needs at least {MIN_ADDRESS_SPACE >> 10} KiB of address space)")


def getrlimit(pid: int, resource: int) -> tuple[int, int]:
    """(soft, hard) of `pid` (0 = ourselves), full 64-bit values."""
    return kernel.KERNEL.getrlimit(pid, resource)


def apply_rlimits(rlimits, pid: int = 0, stage: str = "all") -> None:
    """Set process.rlimits entries (list of config.Rlimit) on `pid` (0: ourselves).

    `stage`: "early" (still root, before the user and capabilities are dropped) sets all but
    LATE_RLIMITS and, of those, only raises a hard limit that goes up (the soft one stays ours);
    "late" (right before execve, unprivileged) sets LATE_RLIMITS to their final values, which
    then only lowers limits; "all" sets every one.  Raising a hard limit needs CAP_SYS_RESOURCE,
    which this machine's bounding set lacks: that fails with EPERM and the message says which
    entry and values.
    """
    for i, r in enumerate(rlimits):
        values = _values_at(stage, pid, r)
        if values is None:
            continue
        try:
            prlimit(pid, r.resource, *values)
        except OSError as e:
            raise OCIError(f"process.rlimits[{i}]: setrlimit {r.type} (soft {_lim(r.soft)}, "
                           f"hard {_lim(r.hard)}): {os_words(e)}") from None


def _values_at(stage: str, pid: int, r) -> tuple[int, int] | None:
    """(soft, hard) to set for entry `r` at `stage`, None for nothing."""
    if stage == "all":
        return r.soft, r.hard
    if r.resource not in LATE_RLIMITS:
        return (r.soft, r.hard) if stage == "early" else None
    return _raised_hard(pid, r) if stage == "early" else (r.soft, r.hard)


def _raised_hard(pid: int, r) -> tuple[int, int] | None:
    """For a memory limit set late: (our soft, its hard) if its hard limit is above ours, else
    None.  Raising a hard limit needs CAP_SYS_RESOURCE, gone after the drop to the process's
    user and capabilities (runc sets every rlimit as root); so it goes up early, and the final
    values, set late, only lower limits.  Our soft limit stays: nothing is lowered early."""
    try:
        cur_soft, cur_hard = getrlimit(pid, r.resource)
    except OSError:
        return None  # the late stage says what the kernel thinks of it
    if r.hard <= cur_hard:
        return None
    return cur_soft, r.hard


def _lim(v: int) -> str:
    return "unlimited" if v == RLIM_INFINITY else str(v)


# --------------------------------------------------------------------------- oom_score_adj

def apply_oom_score_adj(value: int | None, pid: int | str = "self") -> None:
    """Write process.oomScoreAdj to /proc/<pid>/oom_score_adj (nothing for None).

    Lowering it below the current value needs CAP_SYS_RESOURCE (EACCES otherwise).
    """
    if value is None:
        return
    try:
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OCIError(f"process.oomScoreAdj: write {value} to /proc/{pid}/oom_score_adj: {os_words(e)}") from None


# --------------------------------------------------------------------------- I/O priority

IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1


def validate_io_priority(d: dict | None, path: str = "process.ioPriority") -> int | None:
    """{"class": "IOPRIO_CLASS_BE", "priority": 4} -> the ioprio value for ioprio_set(2)."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(path, "must be an object")
    cls = d.get("class")
    if cls not in IOPRIO_CLASSES:
        raise ConfigError(f"{path}.class", f"unknown class {cls!r} (want one of {', '.join(IOPRIO_CLASSES)})")
    prio = d.get("priority", 0)
    if isinstance(prio, bool) or not isinstance(prio, int) or not 0 <= prio <= 7:
        raise ConfigError(f"{path}.priority", f"{prio!r} is out of range (0..7)")
    return IOPRIO_CLASSES[cls] << IOPRIO_CLASS_SHIFT | prio


def apply_io_priority(d: dict | None) -> None:
    ioprio = validate_io_priority(d)
    if d is None or ioprio is None:
        return
    try:
        linux.ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio)
    except OSError as e:
        raise OCIError(f"process.ioPriority: ioprio_set {d.get('class')} {d.get('priority', 0)}: "
                       f"{os_words(e)}") from None


# --------------------------------------------------------------------------- scheduler

SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                  "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}


class SchedAttr:
    """struct sched_attr, version 0 (48 bytes): enough for every field process.scheduler has."""

    size = 48

    def __init__(self, policy: int, flags: int, nice: int, priority: int, runtime: int, deadline: int,
                 period: int) -> None:
        self.sched_policy = policy
        self.sched_flags = flags
        self.sched_nice = nice
        self.sched_priority = priority
        self.sched_runtime = runtime
        self.sched_deadline = deadline
        self.sched_period = period

    def pack(self) -> bytes:
        o = sys.byteorder
        return b"".join((self.size.to_bytes(4, o), self.sched_policy.to_bytes(4, o), self.sched_flags.to_bytes(8, o),
                         self.sched_nice.to_bytes(4, o, signed=True), self.sched_priority.to_bytes(4, o),
                         self.sched_runtime.to_bytes(8, o), self.sched_deadline.to_bytes(8, o),
                         self.sched_period.to_bytes(8, o)))


def _int_field(d: dict, key: str, path: str, lo: int, hi: int) -> int:
    v = d.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{path}.{key}", f"{v!r} is out of range ({lo}..{hi})")
    return v


def validate_scheduler(d: dict | None, path: str = "process.scheduler") -> SchedAttr | None:
    """process.scheduler -> a filled struct sched_attr, with runc's consistency rules."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(path, "must be an object")
    policy = d.get("policy")
    if policy not in SCHED_POLICIES:
        raise ConfigError(f"{path}.policy", f"unknown policy {policy!r} (want one of {', '.join(SCHED_POLICIES)})")
    u64 = (1 << 64) - 1
    nice = _int_field(d, "nice", path, -20, 19)
    prio = _int_field(d, "priority", path, 0, 99)
    runtime = _int_field(d, "runtime", path, 0, u64)
    deadline = _int_field(d, "deadline", path, 0, u64)
    period = _int_field(d, "period", path, 0, u64)
    if prio and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise ConfigError(f"{path}.priority", "can only be set for SCHED_FIFO or SCHED_RR")
    if (runtime or deadline or period) and policy != "SCHED_DEADLINE":
        raise ConfigError(path, "runtime, deadline and period can only be set for SCHED_DEADLINE")
    flags = 0
    for i, f in enumerate(d.get("flags") or []):
        if f not in SCHED_FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", f"unknown flag {f!r}")
        flags |= SCHED_FLAGS[f]
    return SchedAttr(SCHED_POLICIES[policy], flags, nice, prio, runtime, deadline, period)


def sched_setattr(pid: int, attr: SchedAttr, flags: int = 0) -> None:
    linux.check(linux.syscall(linux.NR_SCHED_SETATTR, pid, attr.pack(), flags))


def apply_scheduler(d: dict | None) -> None:
    attr = validate_scheduler(d)
    if d is None or attr is None:
        return
    try:
        sched_setattr(0, attr)
    except OSError as e:
        raise OCIError(f"process.scheduler: sched_setattr {d.get('policy')}: {os_words(e)}") from None


# --------------------------------------------------------------------------- personality

PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}


def validate_personality(d: dict | None, path: str = "linux.personality") -> int | None:
    """linux.personality -> the persona for personality(2).

    The spec defines no flag values yet ("currently no flag values are supported"), so any flag
    is refused rather than silently dropped.
    """
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(path, "must be an object")
    domain = d.get("domain")
    if domain not in PERSONALITY_DOMAINS:
        raise ConfigError(f"{path}.domain", f"unknown domain {domain!r} (want LINUX or LINUX32)")
    for i, f in enumerate(d.get("flags") or []):
        raise ConfigError(f"{path}.flags[{i}]", f"unsupported personality flag {f!r}")
    return PERSONALITY_DOMAINS[domain]


def apply_personality(d: dict | None) -> None:
    persona = validate_personality(d)
    if d is None or persona is None:
        return
    try:
        linux.personality(persona)
    except OSError as e:
        raise OCIError(f"linux.personality: personality {d.get('domain')}: {os_words(e)}") from None
