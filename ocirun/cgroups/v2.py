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
import time

from ..errors import ConfigError, OCIError
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
        value = _max(quota) if quota else "max"
        if period:
            value += f" {period}"
        fs.write_field(field, d, "cpu.max", value)
    for key in ("cpus", "mems"):
        if cpu.get(key):
            d = dir_for("cpuset", f"linux.resources.cpu.{key}")
            fs.write_field(f"linux.resources.cpu.{key}", d, f"cpuset.{key}", cpu[key])


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
        raise OCIError(f"{what}: {d}/cgroup.freeze: {fs.kernel_words(e)}") from None


def is_frozen(d: str) -> bool:
    try:
        return events(d).get("frozen") == "1"
    except OSError:
        return False


def kill(d: str) -> bool:
    """SIGKILL the whole subtree through cgroup.kill (5.14+); False if the kernel lacks it."""
    try:
        fs.write(f"{d}/cgroup.kill", "1")
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise OCIError(f"kill: {d}/cgroup.kill: {fs.kernel_words(e)}") from None
    return True
