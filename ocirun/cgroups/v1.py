"""cgroup v1: cpuset preparation, resource files and the v1 freezer.

`dir_for(controller, field)` is given by the manager: it returns the container's directory in
the hierarchy that carries that controller, or raises a ConfigError naming `field`.

Value conventions follow runc: 0 (or absent) means "leave as is" for memory, pids and cpu
numbers, -1 means unlimited.  `memory.swap` is memory+swap, which is what v1's
memory.memsw.limit_in_bytes holds, so it is written as is.
"""
from __future__ import annotations

import errno
import os
import time

from ..errors import ConfigError, OCIError, os_words
from . import fs


def prepare_cpuset(mountpoint: str, leaf: str) -> None:
    """Fill empty cpuset.cpus/mems from the parent, top-down.

    A new v1 cpuset cgroup starts with empty cpus and mems (unless cgroup.clone_children is
    set), and a task cannot join a cpuset with nothing in it (ENOSPC).
    """
    rel = leaf[len(mountpoint):].strip("/")
    parent = mountpoint
    for comp in rel.split("/") if rel else ():
        path = f"{parent}/{comp}"
        for name in ("cpuset.cpus", "cpuset.mems"):
            try:
                if not fs.read(f"{path}/{name}"):
                    fs.write(f"{path}/{name}", fs.read(f"{parent}/{name}"))
            except OSError as e:
                raise OCIError(f"cgroup: preparing {path}/{name}: {os_words(e)}") from None
        parent = path


def _num(v: int) -> str:
    return str(v)  # -1 is accepted by v1 files as "unlimited"


def apply_memory(mem: dict, dir_for) -> None:
    limit, swap, reservation = mem.get("limit") or 0, mem.get("swap") or 0, mem.get("reservation") or 0
    if not (limit or swap or reservation):
        return
    field = "linux.resources.memory." + ("limit" if limit else "swap" if swap else "reservation")
    d = dir_for("memory", field)
    has_memsw = os.path.exists(f"{d}/memory.memsw.limit_in_bytes")
    if limit == -1 and not swap and has_memsw:
        swap = -1  # "unlimited memory" includes swap, as in runc
    if swap and not has_memsw:
        if swap != -1:
            raise ConfigError("linux.resources.memory.swap", "swap accounting is not enabled in this kernel")
        swap = 0
    swap_first = False
    if limit and swap:
        # memsw must stay >= limit at every step: raise memsw first when it grows.
        try:
            current = int(fs.read(f"{d}/memory.limit_in_bytes"))
        except (OSError, ValueError):
            current = 0
        swap_first = swap == -1 or current < swap
    if swap and swap_first:
        fs.write_field("linux.resources.memory.swap", d, "memory.memsw.limit_in_bytes", _num(swap))
    if limit:
        fs.write_field("linux.resources.memory.limit", d, "memory.limit_in_bytes", _num(limit))
    if swap and not swap_first:
        fs.write_field("linux.resources.memory.swap", d, "memory.memsw.limit_in_bytes", _num(swap))
    if reservation:
        fs.write_field("linux.resources.memory.reservation", d, "memory.soft_limit_in_bytes", _num(reservation))


def apply_memory_extras(mem: dict, dir_for, warn) -> None:
    """swappiness, disableOOMKiller, kernelTCP, useHierarchy (kernel is ignored, as runc 1.1 does)."""
    if mem.get("kernel"):
        warn("linux.resources.memory.kernel: kernel memory limits are not supported by the kernel any more; ignored")
    swappiness = mem.get("swappiness")
    if swappiness is not None and swappiness != -1:
        if not 0 <= swappiness <= 100:
            raise ConfigError("linux.resources.memory.swappiness", f"{swappiness} is out of range (0-100)")
        d = dir_for("memory", "linux.resources.memory.swappiness")
        fs.write_field("linux.resources.memory.swappiness", d, "memory.swappiness", str(swappiness))
    if mem.get("disableOOMKiller"):
        d = dir_for("memory", "linux.resources.memory.disableOOMKiller")
        fs.write_field("linux.resources.memory.disableOOMKiller", d, "memory.oom_control", "1")
    if mem.get("kernelTCP"):
        d = dir_for("memory", "linux.resources.memory.kernelTCP")
        fs.write_field("linux.resources.memory.kernelTCP", d, "memory.kmem.tcp.limit_in_bytes",
                       _num(mem["kernelTCP"]))
    if mem.get("useHierarchy"):
        d = dir_for("memory", "linux.resources.memory.useHierarchy")
        fs.write_field("linux.resources.memory.useHierarchy", d, "memory.use_hierarchy", "1")


def memory_usage(d: str) -> int:
    return int(fs.read(f"{d}/memory.usage_in_bytes"))


def apply_pids(pids: dict, dir_for) -> None:
    limit = pids.get("limit") or 0
    if limit:
        d = dir_for("pids", "linux.resources.pids.limit")
        fs.write_field("linux.resources.pids.limit", d, "pids.max", "max" if limit < 0 else str(limit))


def apply_cpu(cpu: dict, dir_for) -> None:
    shares, quota, period = cpu.get("shares") or 0, cpu.get("quota") or 0, cpu.get("period") or 0
    if shares:
        d = dir_for("cpu", "linux.resources.cpu.shares")
        fs.write_field("linux.resources.cpu.shares", d, "cpu.shares", str(shares))
    if quota or period:
        d = dir_for("cpu", "linux.resources.cpu.quota" if quota else "linux.resources.cpu.period")
        _write_cfs(d, quota, period)
    if cpu.get("burst") is not None:
        d = dir_for("cpu", "linux.resources.cpu.burst")
        fs.write_field("linux.resources.cpu.burst", d, "cpu.cfs_burst_us", str(cpu["burst"]))
    if cpu.get("idle") is not None:
        d = dir_for("cpu", "linux.resources.cpu.idle")
        fs.write_field("linux.resources.cpu.idle", d, "cpu.idle", str(cpu["idle"]))
    _write_rt(cpu, dir_for)
    for key in ("cpus", "mems"):
        if cpu.get(key):
            d = dir_for("cpuset", f"linux.resources.cpu.{key}")
            fs.write_field(f"linux.resources.cpu.{key}", d, f"cpuset.{key}", cpu[key])


def _write_rt(cpu: dict, dir_for) -> None:
    """Realtime budget: the period first when it grows (runtime must stay <= period)."""
    runtime, period = cpu.get("realtimeRuntime") or 0, cpu.get("realtimePeriod") or 0
    if not (runtime or period):
        return
    d = dir_for("cpu", "linux.resources.cpu." + ("realtimeRuntime" if runtime else "realtimePeriod"))
    writes = []
    if period:
        writes.append(("realtimePeriod", "cpu.rt_period_us", period))
    if runtime:
        writes.append(("realtimeRuntime", "cpu.rt_runtime_us", runtime))
    try:
        current = int(fs.read(f"{d}/cpu.rt_period_us"))
    except (OSError, ValueError):
        current = 0
    if period and period < current:
        writes.reverse()  # shrinking the period: lower the runtime first
    for key, name, value in writes:
        fs.write_field(f"linux.resources.cpu.{key}", d, name, str(value))


def apply_block_io(bio: dict, dir_for, warn) -> None:
    """blkio.weight (or blkio.bfq.weight), weight_device, throttle.* (one "maj:min value" per write)."""
    field = "linux.resources.blockIO"
    if not _block_io_wanted(bio):
        return
    d = dir_for("blkio", field)
    bfq = not os.path.exists(f"{d}/blkio.weight") and os.path.exists(f"{d}/blkio.bfq.weight")
    prefix = "blkio.bfq." if bfq else "blkio."
    if bio.get("weight"):
        fs.write_field(f"{field}.weight", d, prefix + "weight", str(bio["weight"]))
    if bio.get("leafWeight"):
        fs.write_field(f"{field}.leafWeight", d, "blkio.leaf_weight", str(bio["leafWeight"]))
    for i, wd in enumerate(bio.get("weightDevice") or []):
        f = f"{field}.weightDevice[{i}]"
        dev = device_number(wd, f)
        if wd.get("weight"):
            fs.write_field(f + ".weight", d, prefix + "weight_device", f"{dev} {wd['weight']}")
        if wd.get("leafWeight"):
            fs.write_field(f + ".leafWeight", d, "blkio.leaf_weight_device", f"{dev} {wd['leafWeight']}")
    for key, name in THROTTLE_V1.items():
        for i, td in enumerate(bio.get(key) or []):
            f = f"{field}.{key}[{i}]"
            fs.write_field(f, d, name, f"{device_number(td, f)} {rate(td, f)}")


THROTTLE_V1 = {
    "throttleReadBpsDevice": "blkio.throttle.read_bps_device",
    "throttleWriteBpsDevice": "blkio.throttle.write_bps_device",
    "throttleReadIOPSDevice": "blkio.throttle.read_iops_device",
    "throttleWriteIOPSDevice": "blkio.throttle.write_iops_device",
}


def _block_io_wanted(bio: dict) -> bool:
    return any(bio.get(k) for k in ("weight", "leafWeight", "weightDevice", *THROTTLE_V1))


def device_number(entry, field: str) -> str:
    """"major:minor" of a blockIO device entry."""
    if not isinstance(entry, dict):
        raise ConfigError(field, "must be an object")
    nums = []
    for k in ("major", "minor"):
        v = entry.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{field}.{k}", "is required and must be a non-negative integer")
        nums.append(v)
    return f"{nums[0]}:{nums[1]}"


def rate(entry: dict, field: str) -> int:
    v = entry.get("rate")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"{field}.rate", "is required and must be a non-negative integer")
    return v


def apply_hugetlb(limits: list, dir_for, warn, limit: str = "limit_in_bytes") -> None:
    """hugetlb.<size>.<limit> (and .rsvd.<limit> where the kernel has it); v2 passes "max"."""
    for i, lim in enumerate(limits):
        field = f"linux.resources.hugepageLimits[{i}]"
        size, value = hugepage_entry(lim, field)
        d = dir_for("hugetlb", field)
        if not os.path.exists(f"{d}/hugetlb.{size}.{limit}"):
            raise ConfigError(f"{field}.pageSize", f"{size!r} is not a huge page size this kernel has "
                              f"({', '.join(hugepage_sizes(d)) or 'none'})")
        fs.write_field(f"{field}.limit", d, f"hugetlb.{size}.{limit}", str(value))
        if os.path.exists(f"{d}/hugetlb.{size}.rsvd.{limit}"):
            fs.write_field(f"{field}.limit", d, f"hugetlb.{size}.rsvd.{limit}", str(value))


def hugepage_entry(lim, field: str) -> tuple[str, int]:
    if not isinstance(lim, dict):
        raise ConfigError(field, "must be an object")
    size, value = lim.get("pageSize"), lim.get("limit")
    if not isinstance(size, str) or not size or "/" in size or "." in size:
        raise ConfigError(f"{field}.pageSize", "must be a size such as \"2MB\"")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{field}.limit", "must be a non-negative integer")
    return size, value


def hugepage_sizes(d: str) -> list[str]:
    try:
        names = os.listdir(d)
    except OSError:
        return []
    return sorted({n.split(".")[1] for n in names if n.startswith("hugetlb.") and n.count(".") >= 2})


def apply_network(net: dict, dir_for, warn) -> None:
    if net.get("classID"):
        d = dir_for("net_cls", "linux.resources.network.classID")
        fs.write_field("linux.resources.network.classID", d, "net_cls.classid", str(net["classID"]))
    for i, prio in enumerate(net.get("priorities") or []):
        field = f"linux.resources.network.priorities[{i}]"
        if not isinstance(prio, dict) or not isinstance(prio.get("name"), str) or not isinstance(
                prio.get("priority"), int):
            raise ConfigError(field, "must be an object with a name and an integer priority")
        d = dir_for("net_prio", field)
        fs.write_field(field, d, "net_prio.ifpriomap", f"{prio['name']} {prio['priority']}")


def apply_rdma(rdma: dict, dir_for, warn) -> None:
    for line, field in rdma_lines(rdma):
        fs.write_field(field, dir_for("rdma", field), "rdma.max", line)


def rdma_lines(rdma: dict) -> list[tuple[str, str]]:
    """"mlx5_1 hca_handle=3 hca_object=max" per device (same format on v1 and v2)."""
    out = []
    for dev, lim in rdma.items():
        field = f"linux.resources.rdma.{dev}"
        if not isinstance(lim, dict) or not dev or any(c.isspace() for c in dev):
            raise ConfigError(field, "must be an object keyed by an rdma device name")
        parts = []
        for key, name in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")):
            v = lim.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{field}.{key}", "must be a non-negative integer")
            parts.append(f"{name}={v}")
        if parts:
            out.append((f"{dev} {' '.join(parts)}", field))
    return out


def apply_devices(policy, dir_for, field: str = "linux.resources.devices") -> None:
    """Move devices.list to `policy` with the fewest writes (see devices.transition)."""
    from .devices import policy_from_list, transition
    d = dir_for("devices", field)
    try:
        current = policy_from_list(fs.read(f"{d}/devices.list"))
    except OSError as e:
        raise OCIError(f"{field}: reading {d}/devices.list: {os_words(e)}") from None
    for rule in transition(current, policy):
        fs.write_field(field, d, "devices.allow" if rule.allow else "devices.deny", rule.v1_text())


def _write_cfs(d: str, quota: int, period: int) -> None:
    """Period then quota; if the kernel refuses the period against the old quota, swap the order."""
    if period:
        try:
            fs.write(f"{d}/cpu.cfs_period_us", str(period))
        except OSError as e:
            if e.errno != errno.EINVAL or not quota:
                fs.write_field("linux.resources.cpu.period", d, "cpu.cfs_period_us", str(period))
            fs.write_field("linux.resources.cpu.quota", d, "cpu.cfs_quota_us", str(quota))
            fs.write_field("linux.resources.cpu.period", d, "cpu.cfs_period_us", str(period))
            return
    if quota:
        fs.write_field("linux.resources.cpu.quota", d, "cpu.cfs_quota_us", str(quota))


# --------------------------------------------------------------------------- freezer

FREEZE_TIMEOUT_S = 5.0


def freeze(d: str) -> None:
    """Write FROZEN and wait until the kernel reports FROZEN (it passes through FREEZING)."""
    path = f"{d}/freezer.state"
    deadline = time.monotonic() + FREEZE_TIMEOUT_S
    delay = 0.0005
    try:
        fs.write(path, "FROZEN")
        tries = 0
        while fs.read(path) != "FROZEN":
            if time.monotonic() > deadline:
                fs.write(path, "THAWED")
                raise OCIError(f"pause: {d} did not freeze within {FREEZE_TIMEOUT_S:g} s")
            tries += 1
            if tries % 10 == 0:
                fs.write(path, "FROZEN")  # a task that forked meanwhile may have escaped the first pass
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
    except OSError as e:
        raise OCIError(f"pause: {path}: {os_words(e)}") from None


def thaw(d: str) -> None:
    path = f"{d}/freezer.state"
    try:
        fs.write(path, "THAWED")
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        while fs.read(path) != "THAWED" and time.monotonic() < deadline:
            time.sleep(0.001)
    except OSError as e:
        raise OCIError(f"resume: {path}: {os_words(e)}") from None


