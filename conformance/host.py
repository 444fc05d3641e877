"""Probes of the host, so that a check can say *why* it cannot run here, and readers of the
host-side cgroup files of a container.

Every probe looks at the kernel's own interfaces (/proc, /sys, mountinfo); none asks the
runtime anything.
"""
from __future__ import annotations

import functools
import os

CAP_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]


def cap_mask(names) -> int:
    return sum(1 << CAP_NAMES.index(n) for n in names)


def proc_status(pid: int | str = "self") -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def bounding_caps() -> set[str]:
    mask = int(proc_status()["CapBnd"], 16)
    return {name for i, name in enumerate(CAP_NAMES) if mask & (1 << i)}


def has_bounding_cap(name: str) -> bool:
    return name in bounding_caps()


@functools.cache
def cgroup_mounts() -> dict[str, str]:
    """{controller: mount point} for v1 hierarchies, plus "unified" for the cgroup2 mount."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _src, opts = post.split()[:3]
            mnt = pre.split()[4]
            if fstype == "cgroup2":
                found.setdefault("unified", mnt)
            elif fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                               "net_cls", "net_prio", "blkio", "perf_event", "hugetlb",
                               "pids", "rdma", "misc"}:
                        found.setdefault(opt, mnt)
    return found


def cgroup_mode() -> str:
    """"v2" (pure unified), "hybrid" (v1 controllers and a cgroup2 mount) or "v1"."""
    mounts = cgroup_mounts()
    v1 = [k for k in mounts if k != "unified"]
    if not v1 and mounts.get("unified") == "/sys/fs/cgroup":
        return "v2"
    return "hybrid" if "unified" in mounts else "v1"


def v2_controllers() -> set[str]:
    top = cgroup_mounts().get("unified")
    if not top:
        return set()
    try:
        with open(os.path.join(top, "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def controller_version(ctrl: str) -> str | None:
    """Where this host serves `ctrl`: "v1", "v2" or None (nowhere)."""
    if ctrl in cgroup_mounts():
        return "v1"
    if ctrl in v2_controllers():
        return "v2"
    return None


def process_cgroups(pid: int) -> dict[str, str]:
    """{controller: cgroup path} from /proc/<pid>/cgroup; the v2 entry is keyed "unified"."""
    paths = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if not ctrls:
                paths["unified"] = path
            for c in ctrls.split(","):
                paths[c.removeprefix("name=")] = path
    return paths


def cgroup_dir(pid: int, ctrl: str) -> str:
    """The host directory of `pid`'s cgroup for `ctrl` (v1 hierarchy, or the v2 one)."""
    mounts = cgroup_mounts()
    paths = process_cgroups(pid)
    if ctrl in mounts and ctrl in paths:
        return mounts[ctrl] + paths[ctrl]
    return mounts["unified"] + paths["unified"]


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def lsm_list() -> str:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def has_namespace(kind: str) -> bool:
    return os.path.exists(f"/proc/self/ns/{kind}")


def userns_allowed() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read()) > 0
    except OSError:
        return has_namespace("user")


def first_block_device() -> str | None:
    """"major:minor" of a whole block device (from /proc/partitions), for blkio throttles."""
    try:
        with open("/proc/partitions") as f:
            rows = [l.split() for l in f.read().splitlines()[2:] if l.strip()]
    except OSError:
        return None
    for major, minor, _blocks, _name in rows:
        return f"{major}:{minor}"
    return None


def resctrl_mounted() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(" - resctrl " in line for line in f)


def nofile_hard() -> int:
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def machine() -> str:
    return os.uname().machine
