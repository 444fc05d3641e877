"""cgroup v2: enabling controllers down the tree, resource files, freeze and kill.

On a pure v2 host a controller's files exist in a cgroup only if its parent lists the
controller in cgroup.subtree_control, so `enable_controllers` writes "+ctrl" into every
ancestor of the container's cgroup (the root included).  Like runc we enable every controller
the tree offers, so a later `update` finds its files.  A controller that cannot be enabled
(an ancestor holding processes refuses with EBUSY) is skipped here; `apply_*` then reports the
config field that needed it.

The spec's values are v1-shaped; conversions follow runc: memory.swap (memory+swap) becomes
memory.swap.max = swap - limit; cpu.shares becomes cpu.weight on the 1..10000 scale.
"""
from __future__ import annotations

import errno
import os
import time

from ..errors import ConfigError, OCIError, os_words
from . import fs


def enable_controllers(mountpoint: str, leaf: str) -> None:
    """Make every available controller reach `leaf` through its ancestors' subtree_control."""
    rel = leaf[len(mountpoint):].strip("/")
    comps = rel.split("/") if rel else []
    path = mountpoint
    for comp in comps:  # the parent of each level, ending with the leaf's parent
        _enable_in(path)
        path = f"{path}/{comp}"


def _enable_in(path: str) -> None:
    try:
        available = fs.read(f"{path}/cgroup.controllers").split()
        enabled = set(fs.read(f"{path}/cgroup.subtree_control").split())
    except OSError:
        return
    missing = [c for c in available if c not in enabled]
    if not missing:
        return
    try:
        fs.write(f"{path}/cgroup.subtree_control", " ".join("+" + c for c in missing))
    except OSError:
        for c in missing:  # one refusal fails the whole write: take what we can get
            try:
                fs.write(f"{path}/cgroup.subtree_control", "+" + c)
            except OSError:
                pass


def available(leaf: str) -> set[str]:
    try:
        return set(fs.read(f"{leaf}/cgroup.controllers").split())
    except OSError:
        return set()


def _max(v: int) -> str:
    return "max" if v < 0 else str(v)


def swap_max(swap: int, limit: int) -> int:
    """v1's memory+swap -> v2's swap-only limit (-1 = max, 0 = leave as is)."""
    if limit == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise ConfigError("linux.resources.memory.swap", "a swap limit needs a memory limit")
    if swap < limit:
        raise ConfigError("linux.resources.memory.swap", f"{swap} is below memory.limit {limit} (swap is memory+swap)")
    return swap - limit


def cpu_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000), linear like runc; 0 = leave as is."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def apply_memory(mem: dict, dir_for) -> None:
    limit, swap, reservation = mem.get("limit") or 0, mem.get("swap") or 0, mem.get("reservation") or 0
    if not (limit or swap or reservation):
        return
    field = "linux.resources.memory." + ("limit" if limit else "swap" if swap else "reservation")
    d = dir_for("memory", field)
    sw = swap_max(swap, limit)
    if limit:
        fs.write_field("linux.resources.memory.limit", d, "memory.max", _max(limit))
    if sw:
        try:
            fs.write_field("linux.resources.memory.swap", d, "memory.swap.max", _max(sw))
        except ConfigError:
            if sw != -1:  # no swap accounting: only "unlimited" can be honoured silently
                raise ConfigError("linux.resources.memory.swap", "swap accounting is not enabled in this kernel") from None
    if reservation:
        fs.write_field("linux.resources.memory.reservation", d, "memory.low", _max(reservation))


def apply_memory_extras(mem: dict, dir_for, warn) -> None:
    """Fields with no cgroup v2 file: warned about and ignored, as runc ignores them."""
    for key, why in (("kernel", "kernel memory limits are not supported any more"),
                     ("kernelTCP", "cgroup v2 has no separate TCP memory limit"),
                     ("disableOOMKiller", "cgroup v2 cannot disable the OOM killer"),
                     ("swappiness", "cgroup v2 has no per-cgroup swappiness")):
        v = mem.get(key)
        if v not in (None, 0, False) and not (key == "swappiness" and v == -1):
            warn(f"linux.resources.memory.{key}: {why}; ignored")


def memory_usage(d: str) -> int:
    return int(fs.read(f"{d}/memory.current"))


def apply_pids(pids: dict, dir_for) -> None:
    limit = pids.get("limit") or 0
    if limit:
        d = dir_for("pids", "linux.resources.pids.limit")
        fs.write_field("linux.resources.pids.limit", d, "pids.max", _max(limit))


def apply_cpu(cpu: dict, dir_for) -> None:
    shares, quota, period = cpu.get("shares") or 0, cpu.get("quota") or 0, cpu.get("period") or 0
    if shares:
        d = dir_for("cpu", "linux.resources.cpu.shares")
        fs.write_field("linux.resources.cpu.shares", d, "cpu.weight", str(cpu_weight(shares)))
    if quota or period:
        field = "linux.resources.cpu.quota" if quota else "linux.resources.cpu.period"
        d = dir_for("cpu", field)
        # Without a quota keep the current one: an `update --cpu-period` must not lift the limit.
        value = _max(quota) if quota else _current_quota(d)
        if period:
            value += f" {period}"
        fs.write_field(field, d, "cpu.max", value)
    if cpu.get("burst") is not None:
        d = dir_for("cpu", "linux.resources.cpu.burst")
        fs.write_field("linux.resources.cpu.burst", d, "cpu.max.burst", str(cpu["burst"]))
    if cpu.get("idle") is not None:
        d = dir_for("cpu", "linux.resources.cpu.idle")
        fs.write_field("linux.resources.cpu.idle", d, "cpu.idle", str(cpu["idle"]))
    for key in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(key):
            raise ConfigError(f"linux.resources.cpu.{key}", "realtime scheduling limits are not supported by cgroup v2")
    for key in ("cpus", "mems"):
        if cpu.get(key):
            d = dir_for("cpuset", f"linux.resources.cpu.{key}")
            fs.write_field(f"linux.resources.cpu.{key}", d, f"cpuset.{key}", cpu[key])


def _current_quota(d: str) -> str:
    try:
        return fs.read(f"{d}/cpu.max").split()[0]
    except (OSError, IndexError):
        return "max"


def io_weight(blkio_weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000), linear like runc."""
    return 1 + (blkio_weight - 10) * 9999 // 990


IO_MAX_KEYS = {
    "throttleReadBpsDevice": "rbps",
    "throttleWriteBpsDevice": "wbps",
    "throttleReadIOPSDevice": "riops",
    "throttleWriteIOPSDevice": "wiops",
}


def apply_block_io(bio: dict, dir_for, warn) -> None:
    """io.bfq.weight when BFQ is there (same scale as blkio), else io.weight; io.max per device."""
    from .v1 import device_number, rate
    field = "linux.resources.blockIO"
    if not any(bio.get(k) for k in ("weight", "leafWeight", "weightDevice", *IO_MAX_KEYS)):
        return
    d = dir_for("io", field)
    bfq = os.path.exists(f"{d}/io.bfq.weight")
    if bio.get("weight"):
        w = bio["weight"]
        if bfq:
            fs.write_field(f"{field}.weight", d, "io.bfq.weight", str(w))
        else:
            fs.write_field(f"{field}.weight", d, "io.weight", str(io_weight(w)))
    if bio.get("leafWeight"):
        warn(f"{field}.leafWeight: cgroup v2 has no leaf weight; ignored")
    for i, wd in enumerate(bio.get("weightDevice") or []):
        f = f"{field}.weightDevice[{i}]"
        dev = device_number(wd, f)
        if not wd.get("weight"):
            continue
        if not bfq:
            warn(f"{f}: per-device weights need the BFQ I/O scheduler (io.bfq.weight); ignored")
            continue
        fs.write_field(f + ".weight", d, "io.bfq.weight", f"{dev} {wd['weight']}")
    for key, name in IO_MAX_KEYS.items():
        for i, td in enumerate(bio.get(key) or []):
            f = f"{field}.{key}[{i}]"
            value = rate(td, f)
            fs.write_field(f, d, "io.max", f"{device_number(td, f)} {name}={value if value else 'max'}")


def apply_hugetlb(limits: list, dir_for, warn) -> None:
    """hugetlb.<size>.max (and .rsvd.max where the kernel has it): v1's code, v2's file names."""
    from .v1 import apply_hugetlb as apply_v1_style
    apply_v1_style(limits, dir_for, warn, limit="max")


def apply_network(net: dict, dir_for, warn) -> None:
    if net.get("classID") or net.get("priorities"):
        warn("linux.resources.network: net_cls and net_prio do not exist in cgroup v2; ignored")


def apply_rdma(rdma: dict, dir_for, warn) -> None:
    from .v1 import rdma_lines
    for line, field in rdma_lines(rdma):
        fs.write_field(field, dir_for("rdma", field), "rdma.max", line)


def apply_devices(policy, dir_for, field: str = "linux.resources.devices", replace: bool = True) -> None:
    from . import ebpf
    ebpf.install(dir_for("", field), policy, field, replace)


# Files a `unified` entry may not write: they move or kill processes, they are not limits.
UNIFIED_REFUSED = {"cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.freeze", "cgroup.subtree_control"}


def apply_unified(unified: dict, d: str) -> None:
    """linux.resources.unified: each key names a file of the container's cgroup2 directory."""
    ctrls = available(d)
    for key, value in unified.items():
        field = f"linux.resources.unified.{key}"
        if not isinstance(value, str):
            raise ConfigError(field, "must be a string")
        if not key or "/" in key or key in (".", "..") or "." not in key.strip("."):
            raise ConfigError(field, "must name a file of the cgroup (controller.file, no '/')")
        if key in UNIFIED_REFUSED:
            raise ConfigError(field, "is not a resource limit")
        ctrl = key.split(".", 1)[0]
        if ctrl != "cgroup" and ctrl not in ctrls:
            raise ConfigError(field, f"the {ctrl} controller is not available in {d}"
                              f" (available: {' '.join(sorted(ctrls)) or 'none'})")
        fs.write_field(field, d, key, value)


# --------------------------------------------------------------------------- freeze / kill

FREEZE_TIMEOUT_S = 5.0


def events(d: str) -> dict[str, str]:
    out = {}
    for line in fs.read(f"{d}/cgroup.events").splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


def set_frozen(d: str, frozen: bool, what: str) -> None:
    """Write cgroup.freeze and wait for cgroup.events to say the tree got there."""
    want = "1" if frozen else "0"
    try:
        fs.write(f"{d}/cgroup.freeze", want)
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        delay = 0.0005
        while events(d).get("frozen") != want:
            if time.monotonic() > deadline:
                if frozen:
                    fs.write(f"{d}/cgroup.freeze", "0")
                raise OCIError(f"{what}: {d} did not {'freeze' if frozen else 'thaw'} within {FREEZE_TIMEOUT_S:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
    except OSError as e:
        raise OCIError(f"{what}: {d}/cgroup.freeze: {os_words(e)}") from None


def kill(d: str) -> bool:
    """SIGKILL the whole subtree through cgroup.kill (5.14+); False if the kernel lacks it."""
    try:
        fs.write(f"{d}/cgroup.kill", "1")
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise OCIError(f"kill: {d}/cgroup.kill: {os_words(e)}") from None
    return True
