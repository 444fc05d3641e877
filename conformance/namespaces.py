"""config-linux.md "Namespaces" and "User namespace mappings": a new namespace for each type
listed, the runtime's own for each type not listed, joining by path, the errors for bad paths
and duplicates, and uid/gid mappings."""
from __future__ import annotations

import os

from .framework import MUST, check

CL = "config-linux.md"
# namespace type in config.json → name under /proc/<pid>/ns/
NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
            "cgroup": "cgroup", "user": "user", "time": "time"}
DEFAULT_NS = ["pid", "network", "ipc", "uts", "mount", "cgroup"]


def ns_of(pid, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{NS_FILES[kind]}")


def _new_namespace_check(kind: str):
    extra = {}
    if kind == "user":
        extra = {"linux": {"uidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
                           "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]}}

    @check(f"namespaces.new.{kind}", CL, "Namespaces", MUST,
           f"a `{kind}` entry without path gives the container a new {kind} namespace")
    def new_ns(t):
        t.require(t.host.has_namespace(NS_FILES[kind]), f"this kernel has no {kind} namespaces")
        if kind == "user":
            t.require(t.host.userns_allowed(), "user namespaces are disabled (max_user_namespaces=0)")
        namespaces = [{"type": k} for k in DEFAULT_NS]
        if kind not in DEFAULT_NS:
            namespaces.append({"type": kind})
        c = t.container(args=["sleep", "1000"], **extra)
        c.bundle.config["linux"]["namespaces"] = namespaces
        c.bundle.config["linux"].update(extra.get("linux", {}))
        if kind == "user":  # keep to mounts an unprivileged-in-host root can make
            c.bundle.config["mounts"] = [m for m in c.bundle.config["mounts"] if m["destination"] in ("/proc", "/dev", "/out")]
        c.bundle.write()
        c.create()
        c.start()
        pid = c.state()["pid"]
        t.expect(ns_of(pid, kind) != ns_of("self", kind),
                 f"the container shares the runtime's {kind} namespace ({ns_of(pid, kind)})")
    return new_ns


for _kind in NS_FILES:
    _new_namespace_check(_kind)


@check("namespaces.absent-inherits", CL, "Namespaces", MUST,
       "a namespace type not listed is inherited from the runtime (network, ipc, uts here)")
def absent_inherits(t):
    c = t.container(args=["sleep", "1000"])
    c.bundle.config["linux"]["namespaces"] = [{"type": k} for k in ("pid", "mount")]
    c.bundle.config["hostname"] = None
    c.bundle.config.pop("hostname", None)
    c.bundle.config["mounts"] = [m for m in c.bundle.config["mounts"] if m["destination"] not in ("/sys", "/dev/mqueue")]
    c.bundle.write()
    c.create()
    c.start()
    pid = c.state()["pid"]
    for kind in ("network", "ipc", "uts"):
        t.expect_eq(ns_of(pid, kind), ns_of("self", kind), f"{kind} namespace")


@check("namespaces.pid-init", CL, "Namespaces", MUST,
       "in a new pid namespace the container process is pid 1")
def pid_one(t):
    t.expect_eq(t.sh("echo $$").strip(), "1", "pid of the container process inside")


def _join_check(kind: str):
    @check(f"namespaces.join.{kind}", CL, "Namespaces", MUST,
           f"a `{kind}` entry with a path joins that namespace")
    def join(t):
        a = t.sleeper()
        apid = a.state()["pid"]
        c = t.container(args=["sleep", "1000"])
        c.bundle.config["linux"]["namespaces"] = [
            {"type": k, "path": f"/proc/{apid}/ns/{NS_FILES[k]}"} if k == kind else {"type": k}
            for k in DEFAULT_NS]
        if kind == "uts":
            c.bundle.config.pop("hostname", None)
        c.bundle.write()
        c.create()
        c.start()
        t.expect_eq(ns_of(c.state()["pid"], kind), ns_of(apid, kind), f"{kind} namespace of the joiner")
    return join


for _kind in ("network", "ipc", "uts"):
    _join_check(_kind)


@check("namespaces.path-not-a-namespace", CL, "Namespaces", MUST,
       "a namespace path that is not a namespace of that type is an error")
def bad_path(t):
    c = t.container(args=["true"])
    wrong = t.new_dir("ns") / "not-a-ns"
    wrong.write_text("")
    c.bundle.config["linux"]["namespaces"] = [
        {"type": "network", "path": str(wrong)} if k == "network" else {"type": k} for k in DEFAULT_NS]
    c.bundle.write()
    r = c.create(check=False)
    t.expect_error(r, "create joining a regular file as a network namespace")
    t.expect_gone(c, "after the failed create")


@check("namespaces.path-wrong-type", CL, "Namespaces", MUST,
       "a namespace path of another type (ipc given as network) is an error")
def wrong_type(t):
    c = t.container(args=["true"])
    c.bundle.config["linux"]["namespaces"] = [
        {"type": "network", "path": "/proc/self/ns/ipc"} if k == "network" else {"type": k} for k in DEFAULT_NS]
    c.bundle.write()
    t.expect_error(c.create(check=False), "create joining an ipc namespace as network")


@check("namespaces.duplicate", CL, "Namespaces", MUST, "a namespace type listed twice is an error")
def duplicate(t):
    c = t.container(args=["true"])
    c.bundle.config["linux"]["namespaces"] = [{"type": k} for k in DEFAULT_NS] + [{"type": "ipc"}]
    c.bundle.write()
    t.expect_error(c.create(check=False), "create with two ipc namespaces")


@check("namespaces.user-mappings", CL, "User namespace mappings", MUST,
       "uidMappings/gidMappings are written to the container's uid_map/gid_map")
def user_mappings(t):
    t.require(t.host.has_namespace("user") and t.host.userns_allowed(), "user namespaces are unavailable")
    c = t.container(args=["sleep", "1000"])
    cfg = c.bundle.config
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 1000}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 310000, "size": 2000}]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] in ("/proc", "/dev", "/out")]
    c.bundle.write()
    c.create()
    c.start()
    pid = c.state()["pid"]
    uid_map = open(f"/proc/{pid}/uid_map").read().split()
    gid_map = open(f"/proc/{pid}/gid_map").read().split()
    t.expect_eq(uid_map, ["0", "300000", "1000"], "uid_map")
    t.expect_eq(gid_map, ["0", "310000", "2000"], "gid_map")
    status = t.host.proc_status(pid)
    t.expect_eq(status["Uid"].split()[0], "300000", "host uid of container root")
