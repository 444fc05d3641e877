"""config-linux.md "Control groups": cgroupsPath placement and each resource, read back from
the host's cgroup files of the container (v1 files on v1/hybrid hosts, v2 files where the
controller lives on the unified hierarchy).  Where the host lacks a controller the check skips
and says so."""
from __future__ import annotations

import os

from .framework import MUST, check

CL = "config-linux.md"


def _created(t, resources: dict):
    c = t.container(args=["sleep", "1000"])
    c.bundle.config["linux"]["resources"].update(resources)
    c.bundle.write()
    c.create()
    return c, c.state()["pid"]


def read(t, pid: int, ctrl: str, name: str) -> str:
    path = os.path.join(t.host.cgroup_dir(pid, ctrl), name)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        from .framework import Fail
        raise Fail(f"cannot read {path}: {e.strerror}") from None


def need(t, ctrl: str) -> str:
    v = t.host.controller_version(ctrl)
    t.require(v is not None, f"the host has no {ctrl} cgroup controller")
    return v


@check("cgroups.path", CL, "Cgroups Path", MUST,
       "the container is placed at cgroupsPath in every hierarchy")
def cgroups_path(t):
    c = t.container(args=["sleep", "1000"])
    c.create()
    want = c.bundle.config["linux"]["cgroupsPath"]
    paths = t.host.process_cgroups(c.state()["pid"])
    for ctrl in ("memory", "pids", "cpu", "devices", "unified"):
        if ctrl in paths and (ctrl == "unified" or t.host.controller_version(ctrl) == "v1"):
            t.expect_eq(paths[ctrl], want, f"{ctrl} cgroup of the container process")


@check("cgroups.memory", CL, "Memory", MUST, "memory limit, reservation and swap land in the memory cgroup")
def memory(t):
    v = need(t, "memory")
    c, pid = _created(t, {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20}})
    if v == "v1":
        t.expect_eq(read(t, pid, "memory", "memory.limit_in_bytes"), str(64 << 20), "memory.limit_in_bytes")
        t.expect_eq(read(t, pid, "memory", "memory.soft_limit_in_bytes"), str(32 << 20), "memory.soft_limit_in_bytes")
        if os.path.exists(os.path.join(t.host.cgroup_dir(pid, "memory"), "memory.memsw.limit_in_bytes")):
            t.expect_eq(read(t, pid, "memory", "memory.memsw.limit_in_bytes"), str(128 << 20), "memory.memsw.limit_in_bytes")
        else:
            t.note("no swap accounting on this host: memsw not checked")
    else:
        t.expect_eq(read(t, pid, "memory", "memory.max"), str(64 << 20), "memory.max")
        t.expect_eq(read(t, pid, "memory", "memory.low"), str(32 << 20), "memory.low")


@check("cgroups.memory.v1-knobs", CL, "Memory", MUST,
       "swappiness and disableOOMKiller land in the v1 memory cgroup")
def memory_v1(t):
    t.require(need(t, "memory") == "v1", "memory is on cgroup v2 here (swappiness/oom_control are v1 files)")
    c, pid = _created(t, {"memory": {"limit": 64 << 20, "swappiness": 17, "disableOOMKiller": True}})
    t.expect_eq(read(t, pid, "memory", "memory.swappiness"), "17", "memory.swappiness")
    t.expect("oom_kill_disable 1" in read(t, pid, "memory", "memory.oom_control"), "oom_kill_disable not set")


@check("cgroups.cpu", CL, "CPU", MUST, "cpu shares, quota and period land in the cpu cgroup")
def cpu(t):
    v = need(t, "cpu")
    c, pid = _created(t, {"cpu": {"shares": 512, "quota": 50000, "period": 100000}})
    if v == "v1":
        t.expect_eq(read(t, pid, "cpu", "cpu.shares"), "512", "cpu.shares")
        t.expect_eq(read(t, pid, "cpu", "cpu.cfs_quota_us"), "50000", "cpu.cfs_quota_us")
        t.expect_eq(read(t, pid, "cpu", "cpu.cfs_period_us"), "100000", "cpu.cfs_period_us")
    else:
        t.expect_eq(read(t, pid, "cpu", "cpu.max"), "50000 100000", "cpu.max")


@check("cgroups.cpuset", CL, "CPU", MUST, "cpus and mems land in the cpuset cgroup")
def cpuset(t):
    need(t, "cpuset")
    c, pid = _created(t, {"cpu": {"cpus": "0", "mems": "0"}})
    prefix = "cpuset." if t.host.controller_version("cpuset") == "v1" else "cpuset."
    t.expect_eq(read(t, pid, "cpuset", prefix + "cpus"), "0", "cpuset.cpus")
    t.expect_eq(read(t, pid, "cpuset", prefix + "mems"), "0", "cpuset.mems")


@check("cgroups.pids", CL, "PIDs", MUST, "pids.limit lands in pids.max")
def pids(t):
    need(t, "pids")
    c, pid = _created(t, {"pids": {"limit": 37}})
    t.expect_eq(read(t, pid, "pids", "pids.max"), "37", "pids.max")


@check("cgroups.pids.enforced", CL, "PIDs", MUST, "pids.limit stops forks beyond it")
def pids_enforced(t):
    need(t, "pids")
    # busybox sh gives up at the first fork that fails, so the count of "started" lines is
    # the number of children the limit let through (sh itself is the fifth task).
    out = t.sh("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & echo started; done",
               linux={"resources": {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 5}}})
    started = out.split().count("started")
    t.expect(started <= 4, f"{started} children forked under pids.limit 5 (the shell is the 5th task)")


@check("cgroups.blockIO.throttle", CL, "Block IO", MUST,
       "blockIO throttle limits land in the blkio (v1) or io (v2) cgroup")
def blkio_throttle(t):
    dev = t.host.first_block_device()
    t.require(dev is not None, "no block device on this host to throttle")
    major, minor = (int(x) for x in dev.split(":"))
    ctrl = "blkio" if t.host.controller_version("blkio") == "v1" else "io"
    need(t, ctrl)
    c, pid = _created(t, {"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
                                      "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 300}]}})
    if ctrl == "blkio":
        t.expect(f"{dev} 1048576" in read(t, pid, "blkio", "blkio.throttle.read_bps_device"), "read_bps_device")
        t.expect(f"{dev} 300" in read(t, pid, "blkio", "blkio.throttle.write_iops_device"), "write_iops_device")
    else:
        line = read(t, pid, "io", "io.max")
        t.expect(f"{dev} rbps=1048576" in line and "wiops=300" in line, f"io.max: {line!r}")


@check("cgroups.blockIO.weight", CL, "Block IO", MUST, "blockIO.weight lands in the blkio/io weight file")
def blkio_weight(t):
    ctrl = "blkio" if t.host.controller_version("blkio") == "v1" else "io"
    need(t, ctrl)
    c = t.container(args=["true"])
    c.create()
    d = t.host.cgroup_dir(c.state()["pid"], ctrl)
    names = [n for n in ("blkio.weight", "blkio.bfq.weight", "io.weight", "io.bfq.weight") if os.path.exists(os.path.join(d, n))]
    t.require(bool(names), f"the host's {ctrl} controller has no weight file (no weight-capable I/O scheduler)")
    c2, pid = _created(t, {"blockIO": {"weight": 321}})
    val = read(t, pid, ctrl, names[0])
    t.expect("321" in val.split(), f"{names[0]}: {val!r}")


@check("cgroups.hugetlb", CL, "HugePage limits", MUST, "hugepageLimits land in the hugetlb cgroup")
def hugetlb(t):
    v = t.host.controller_version("hugetlb")
    t.require(v is not None, "the host has no hugetlb controller")
    t.require(v == "v1" or t.host.cgroup_mode() == "v2",
              "hugetlb is only on the unified hierarchy of this hybrid host, where a v1-style runtime cannot place it")
    c, pid = _created(t, {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}]})
    name = "hugetlb.2MB.limit_in_bytes" if v == "v1" else "hugetlb.2MB.max"
    t.expect_eq(read(t, pid, "hugetlb", name), str(4 << 21), name)


@check("cgroups.network", CL, "Network", MUST, "network classID lands in net_cls.classid")
def net_cls(t):
    t.require(t.host.controller_version("net_cls") == "v1", "the host has no v1 net_cls controller")
    c, pid = _created(t, {"network": {"classID": 1048577}})
    t.expect_eq(read(t, pid, "net_cls", "net_cls.classid"), "1048577", "net_cls.classid")


@check("cgroups.unified.missing-controller", CL, "Unified", MUST,
       "a unified key for a controller absent from the v2 hierarchy is an error")
def unified_missing(t):
    t.require(t.host.cgroup_mode() != "v1", "no cgroup v2 hierarchy at all")
    t.require("memory" not in t.host.v2_controllers(),
              "memory is available on this host's v2 hierarchy, so memory.max would be valid")
    c = t.container(args=["true"])
    c.bundle.config["linux"]["resources"]["unified"] = {"memory.max": str(64 << 20)}
    c.bundle.write()
    r = c.create(check=False)
    t.expect_error(r, "create with unified memory.max on a host whose v2 hierarchy has no memory controller")
