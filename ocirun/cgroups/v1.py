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

from ..errors import ConfigError, OCIError
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
                raise OCIError(f"cgroup: preparing {path}/{name}: {fs.kernel_words(e)}") from None
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
    for key in ("cpus", "mems"):
        if cpu.get(key):
            d = dir_for("cpuset", f"linux.resources.cpu.{key}")
            fs.write_field(f"linux.resources.cpu.{key}", d, f"cpuset.{key}", cpu[key])


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
        raise OCIError(f"pause: {path}: {fs.kernel_words(e)}") from None


def thaw(d: str) -> None:
    path = f"{d}/freezer.state"
    try:
        fs.write(path, "THAWED")
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        while fs.read(path) != "THAWED" and time.monotonic() < deadline:
            time.sleep(0.001)
    except OSError as e:
        raise OCIError(f"resume: {path}: {fs.kernel_words(e)}") from None


def frozen(d: str) -> bool:
    try:
        return fs.read(f"{d}/freezer.state") == "FROZEN"
    except OSError:
        return False
