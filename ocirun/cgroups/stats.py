"""The container's resource usage as runc's `events --stats` prints it, from v1 or v2 files.

`collect(manager)` returns the "data" object of runc's stats event (runc/types/events.go):
cpu, cpuset, memory, pids, blkio, hugetlb, intel_rdt, network_interfaces.  Field names and
omissions follow runc's JSON tags (`omitempty` scalars are left out when zero; nested objects
always appear), so tools that parse runc's output (docker stats through containerd's
runc shim, kubelet's summaries) read ours.  Units as runc: nanoseconds for cpu, bytes.

`oom_kills(manager)` is the counter `events` watches to report OOM kills.
"""
from __future__ import annotations

import os

from . import fs

UNLIMITED = (1 << 64) - 1  # what runc reports as the limit when there is none ("max")
USER_HZ = 100


def _read(path: str) -> str | None:
    try:
        return fs.read(path)
    except OSError:
        return None


def _int(path: str, default: int = 0) -> int:
    text = _read(path)
    if text is None:
        return default
    if text == "max":
        return UNLIMITED
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return default


def _flat_keyed(path: str) -> dict[str, int]:
    """"key value" lines (memory.stat, cpu.stat, memory.events, cpuacct.stat)."""
    out = {}
    for line in (_read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def _omit_zero(d: dict, *keys: str) -> dict:
    for k in keys:
        if not d.get(k):
            d.pop(k, None)
    return d


def _dir(m, controller: str) -> tuple[str | None, bool]:
    """(directory, is_v2) holding `controller`'s files for this manager."""
    u = m.paths.get("")
    if m.mode == "unified":
        return u, True
    d = m.path(controller)
    if d is not None:
        return d, False
    if u is not None and controller in _controllers(u):
        return u, True
    return None, False


def _controllers(d: str) -> set[str]:
    return set((_read(f"{d}/cgroup.controllers") or "").split())


# --------------------------------------------------------------------------- sections

def cpu_stats(m) -> dict:
    usage: dict = {}
    throttling: dict = {}
    d, is_v2 = _dir(m, "cpu")
    if is_v2 and d:
        st = _flat_keyed(f"{d}/cpu.stat")
        usage = {"total": st.get("usage_usec", 0) * 1000,
                 "kernel": st.get("system_usec", 0) * 1000, "user": st.get("user_usec", 0) * 1000}
        throttling = {"periods": st.get("nr_periods", 0), "throttledPeriods": st.get("nr_throttled", 0),
                      "throttledTime": st.get("throttled_usec", 0) * 1000}
    else:
        acct, _ = _dir(m, "cpuacct")
        if acct:
            st = _flat_keyed(f"{acct}/cpuacct.stat")
            usage = {"total": _int(f"{acct}/cpuacct.usage"),
                     "percpu": [int(x) for x in (_read(f"{acct}/cpuacct.usage_percpu") or "").split()],
                     "percpu_kernel": [int(x) for x in (_read(f"{acct}/cpuacct.usage_percpu_sys") or "").split()],
                     "percpu_user": [int(x) for x in (_read(f"{acct}/cpuacct.usage_percpu_user") or "").split()],
                     "kernel": st.get("system", 0) * (10**9 // USER_HZ),
                     "user": st.get("user", 0) * (10**9 // USER_HZ)}
        if d:
            st = _flat_keyed(f"{d}/cpu.stat")
            throttling = {"periods": st.get("nr_periods", 0), "throttledPeriods": st.get("nr_throttled", 0),
                          "throttledTime": st.get("throttled_time", 0)}
    usage.setdefault("kernel", 0)
    usage.setdefault("user", 0)
    _omit_zero(usage, "total", "percpu", "percpu_kernel", "percpu_user")
    return {"usage": usage, "throttling": _omit_zero(throttling, "periods", "throttledPeriods", "throttledTime")}


def _mem_entry(limit: int, usage: int = 0, max_: int = 0, failcnt: int = 0) -> dict:
    return _omit_zero({"limit": limit, "usage": usage, "max": max_, "failcnt": failcnt}, "usage", "max")


def memory_stats(m) -> dict:
    d, is_v2 = _dir(m, "memory")
    if d is None:
        return {"usage": _mem_entry(0), "swap": _mem_entry(0), "kernel": _mem_entry(0), "kernelTCP": _mem_entry(0)}
    raw = _flat_keyed(f"{d}/memory.stat")
    if is_v2:
        events = _flat_keyed(f"{d}/memory.events")
        usage, limit = _int(f"{d}/memory.current"), _int(f"{d}/memory.max", UNLIMITED)
        swap, swap_limit = _int(f"{d}/memory.swap.current"), _int(f"{d}/memory.swap.max", UNLIMITED)
        # runc reports v2 swap the v1 way (memory+swap) so the numbers mean the same on both.
        both_limit = UNLIMITED if UNLIMITED in (limit, swap_limit) else limit + swap_limit
        out = {"cache": raw.get("file", 0),
               "usage": _mem_entry(limit, usage, _int(f"{d}/memory.peak"), events.get("max", 0)),
               "swap": _mem_entry(both_limit, usage + swap),
               "kernel": _mem_entry(0), "kernelTCP": _mem_entry(0)}
    else:
        def entry(prefix: str) -> dict:
            return _mem_entry(_int(f"{d}/{prefix}limit_in_bytes"), _int(f"{d}/{prefix}usage_in_bytes"),
                              _int(f"{d}/{prefix}max_usage_in_bytes"), _int(f"{d}/{prefix}failcnt"))
        out = {"cache": raw.get("cache", 0), "usage": entry("memory."), "swap": entry("memory.memsw."),
               "kernel": entry("memory.kmem."), "kernelTCP": entry("memory.kmem.tcp.")}
    if raw:
        out["raw"] = raw
    return _omit_zero(out, "cache")


def pids_stats(m) -> dict:
    d, _ = _dir(m, "pids")
    if d is None:
        return {}
    limit = _int(f"{d}/pids.max")
    return _omit_zero({"current": _int(f"{d}/pids.current"), "limit": 0 if limit == UNLIMITED else limit},
                      "current", "limit")


def _v1_blkio_entries(path: str) -> list[dict]:
    out = []
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue  # the final "Total N" line
        major, _, minor = parts[0].partition(":")
        out.append(_omit_zero({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])},
                              "major", "minor", "op", "value"))
    return out


def blkio_stats(m) -> dict:
    d, is_v2 = _dir(m, "io" if m.mode == "unified" else "blkio")
    if d is None:
        return {}
    if not is_v2:
        # BFQ's files, CFQ's, then the throttle policy's, which counts every request: the first
        # group whose byte counts name a device, in runc's order (BFQ's exist but stay
        # "Total 0" when the device's scheduler is another).
        for prefix in ("blkio.bfq.", "blkio.", "blkio.throttle."):
            service_bytes = _v1_blkio_entries(f"{d}/{prefix}io_service_bytes_recursive")
            if service_bytes:
                out = {"ioServiceBytesRecursive": service_bytes,
                       "ioServicedRecursive": _v1_blkio_entries(f"{d}/{prefix}io_serviced_recursive")}
                return {k: v for k, v in out.items() if v}
        return {}
    service_bytes, serviced = [], []
    for line in (_read(f"{d}/io.stat") or "").splitlines():
        dev, *kvs = line.split()
        major, _, minor = dev.partition(":")
        vals = dict(kv.split("=", 1) for kv in kvs if "=" in kv)
        for op, b, n in (("Read", "rbytes", "rios"), ("Write", "wbytes", "wios"), ("Discard", "dbytes", "dios")):
            if b in vals:
                service_bytes.append(_omit_zero({"major": int(major), "minor": int(minor), "op": op,
                                                 "value": int(vals[b])}, "value"))
            if n in vals:
                serviced.append(_omit_zero({"major": int(major), "minor": int(minor), "op": op,
                                            "value": int(vals[n])}, "value"))
    out = {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}
    return {k: v for k, v in out.items() if v}


def hugetlb_stats(m) -> dict:
    d, is_v2 = _dir(m, "hugetlb")
    if d is None:
        return {}
    out = {}
    try:
        names = os.listdir(d)
    except OSError:
        return {}
    sizes = sorted({n.split(".")[1] for n in names if n.startswith("hugetlb.") and n.count(".") >= 2})
    for size in sizes:
        if is_v2:
            events = _flat_keyed(f"{d}/hugetlb.{size}.events")
            out[size] = _omit_zero({"usage": _int(f"{d}/hugetlb.{size}.current"), "failcnt": events.get("max", 0)},
                                   "usage")
        else:
            out[size] = _omit_zero({"usage": _int(f"{d}/hugetlb.{size}.usage_in_bytes"),
                                    "max": _int(f"{d}/hugetlb.{size}.max_usage_in_bytes"),
                                    "failcnt": _int(f"{d}/hugetlb.{size}.failcnt")}, "usage", "max")
    return out


# runc's CPUSet fields besides cpus and mems: not `omitempty`, so always present (0 where the
# file is missing, as on cgroup v2, which has none of them).
_CPUSET_FLAGS = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                 "memory_spread_slab", "memory_pressure", "sched_load_balance", "sched_relax_domain_level")


def cpuset_stats(m) -> dict:
    d, _ = _dir(m, "cpuset")
    out: dict = {}
    for key, name in (("cpus", "cpuset.cpus.effective"), ("mems", "cpuset.mems.effective")):
        text = (_read(f"{d}/{name}") or _read(f"{d}/cpuset.{key}") or "") if d else ""
        ids = _parse_list(text)
        if ids:
            out[key] = ids
    for key in _CPUSET_FLAGS:
        out[key] = _int(f"{d}/cpuset.{key}") if d else 0
    return out


def _parse_list(text: str) -> list[int]:
    """"0-2,4" -> [0, 1, 2, 4]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            return []
    return out


def collect(m) -> dict:
    """runc's stats "data" object for the container of manager `m`."""
    return {
        "cpu": cpu_stats(m),
        "cpuset": cpuset_stats(m),
        "memory": memory_stats(m),
        "pids": pids_stats(m),
        "blkio": blkio_stats(m),
        "hugetlb": hugetlb_stats(m),
        "intel_rdt": {},
        "network_interfaces": None,
    }


def oom_kills(m) -> int:
    """How many times the kernel OOM-killed in the container's memory cgroup so far.

    v2: memory.events "oom_kill" (this cgroup and below); v1: memory.oom_control "oom_kill"
    (kernel 4.13+).  -1 when the cgroup is gone.
    """
    d, is_v2 = _dir(m, "memory")
    if d is None or not os.path.isdir(d):
        return -1
    if is_v2:
        return _flat_keyed(f"{d}/memory.events").get("oom_kill", 0)
    return _flat_keyed(f"{d}/memory.oom_control").get("oom_kill", 0)
