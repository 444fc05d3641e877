"""`ocirun check`: what this host lets ocirun do, and for each thing it cannot, why and the fix.

One small probe per subject, each returning a `Finding` (name, status, detail, fix):

    ok       works as ocirun uses it
    limited  works in part (the detail says which part is lost)
    missing  not available here

The probes ask the runtime's own modules wherever they already know the answer (cgroups/ for the
layout and delegation, cgroups/dbus.py for systemd's bus, rootless.py, rootfs/idmap.py,
seccomp.py, lsm.py, linux.py for the syscalls, criu.py for the binary the global --criu names),
so `check` says what `create` (or `checkpoint`) would find.

Output: a table (CHECK STATUS DETAIL, a `fix:` line under a finding that has one, then the
verdict), or with --format json {"rootless", "uid", "canRunContainers", "blocking": [names],
"checks": [{"name", "status", "detail", "fix" (null when none)}]}.

Rules every probe keeps: read-only (a kernel feature is tried in a forked child, or on a detached
mount that vanishes when its fd is closed: nothing is left behind), fast, and never waiting
without a deadline on another process (the D-Bus connection, `criu check`, the forked children).
A caller that is not root (or is root of a user namespace) gets the answers for a rootless
runtime: its delegated cgroup, its subordinate ids, the user's own systemd.

Exit status: 0, unless the host cannot run any container at all: a probe marked essential
(`PROBES`) said missing (no cgroup hierarchy, no openat2, no mount namespace, no user namespace
for a rootless caller).  Anything short of that is a limit on some configurations, not a failure.
"""
from __future__ import annotations

import errno
import os
import sys

from . import linux
from .errors import OCIError, os_words
from .record import Record

OK, LIMITED, MISSING = "ok", "limited", "missing"
DBUS_TIMEOUT_S = 2.0
CHILD_TIMEOUT_S = 5.0
CRIU_TIMEOUT_S = 20.0   # `criu check` takes seconds in a slow (emulated) guest
PROBE_CGROUP_ID = "ocirun-check-probe"  # a name for the cgroup a container would get: never made


class Finding(Record):
    name: str
    status: str
    detail: str
    fix: str | None
    FIELDS = {"name": "", "status": "", "detail": "", "fix": None}

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


class Host:
    """What every probe needs to know about the caller, computed once."""

    def __init__(self, rootless: bool, criu: str | None = None) -> None:
        self.rootless = rootless
        self.criu = criu  # the global --criu, as checkpoint and restore take it
        self.uid = os.geteuid()
        self.user = _user_name(self.uid)


def _user_name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# ---------------------------------------------------------------------------- helpers

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    """A sysctl's value, or None where this kernel has no such knob."""
    return _read("/proc/sys/" + name.replace(".", "/"))


def _in_child(action, timeout: float = CHILD_TIMEOUT_S) -> int:
    """Run `action()` in a forked child (so whatever it changes dies with it); 0 if it
    returned, the errno of the OSError it raised otherwise.  Waits at most `timeout`."""
    import time
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            action()
        except OSError as e:
            code = e.errno or errno.EIO
        except BaseException:  # noqa: BLE001 — the child must reach _exit whatever happens
            code = errno.EIO
        os._exit(min(code, 255))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else errno.EINTR
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return errno.ETIMEDOUT
        time.sleep(0.002)


def _unshare_in_child(flags: int, host: Host) -> int:
    """Try unshare(flags) in a child; a rootless caller needs a user namespace first, as
    ocirun itself would make one."""
    if host.rootless:
        flags |= linux.CLONE_NEWUSER
    return _in_child(lambda: linux.unshare(flags))


def _which(binary: str) -> str | None:
    """`binary` on PATH, or in the sbin directories an ordinary user's PATH often lacks."""
    import shutil
    # Empty entries (PATH unset, "::") would mean the current directory: left out.
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    return shutil.which(binary, path=os.pathsep.join(dirs + ["/usr/local/sbin", "/usr/sbin", "/sbin"]))


def _words(code: int) -> str:
    return os_words(OSError(code, os.strerror(code)))


def _this_ocirun() -> str:
    """The path an engine's configuration should name (where we were started from)."""
    arg0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(arg0) == "ocirun":
        return os.path.abspath(arg0)
    return "/abs/path/to/ocirun"


# ---------------------------------------------------------------------------- cgroups

def probe_cgroup_layout(host: Host) -> Finding:
    from .cgroups.detect import CGROUP_ROOT, cgroup_mode, hierarchies
    name = "cgroups"
    if not hierarchies():
        return Finding(name=name, status=MISSING, detail=f"no cgroup hierarchy is mounted under {CGROUP_ROOT}",
                       fix=f"mount cgroup2 on {CGROUP_ROOT} (mount -t cgroup2 none {CGROUP_ROOT})")
    mode = cgroup_mode()
    if mode == "unified":
        return Finding(name=name, status=OK, detail=f"pure cgroup v2 (unified) at {CGROUP_ROOT}")
    to_v2 = ("boot with systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=all) on the kernel "
             "command line for pure cgroup v2")
    if mode == "hybrid":
        return Finding(name=name, status=LIMITED, fix=to_v2,
                       detail=f"hybrid: v1 controllers under {CGROUP_ROOT}/<controller>, cgroup2 at "
                              f"{CGROUP_ROOT}/unified; the cgroupfs driver works, --systemd-cgroup and "
                              "cgroup2-only limits (linux.resources.unified, io.max) need pure v2")
    return Finding(name=name, status=LIMITED, fix=to_v2,
                   detail="legacy: cgroup v1 only; the cgroupfs driver works, --systemd-cgroup and "
                          "cgroup2-only limits need pure v2")


# The controllers whose limits a container may ask for, by layout.
_WANTED_V1 = ("cpu", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb")
_WANTED_V2 = ("cpu", "cpuset", "memory", "pids", "io", "hugetlb")


def probe_cgroup_controllers(host: Host) -> Finding:
    from .cgroups.detect import UNIFIED_KEY, cgroup_mode, hierarchies
    name = "cgroup-controllers"
    hier = hierarchies()
    if not hier:
        return Finding(name=name, status=MISSING, detail="no cgroup hierarchy (see cgroups)")
    if host.rootless:
        return _delegation(host)
    wanted: tuple[str, ...]
    if cgroup_mode() == "unified":
        have = set(_v2_controllers_for_container())
        wanted = _WANTED_V2
    else:
        have = {c for h in hier.values() if h.key != UNIFIED_KEY for c in h.controllers}
        wanted = _WANTED_V1
    lacking = [c for c in wanted if c not in have]
    detail = "available: " + (" ".join(sorted(have)) or "none")
    in_v2_only: list[str] = []
    if UNIFIED_KEY in hier and cgroup_mode() != "unified":
        v2 = (_read(f"{hier[UNIFIED_KEY].mountpoint}/cgroup.controllers") or "").split()
        detail += f" (cgroup2 at {hier[UNIFIED_KEY].mountpoint}: {' '.join(v2) or 'none'})"
        in_v2_only = [c for c in lacking if c in v2]
    if not lacking:
        return Finding(name=name, status=OK, detail=detail)
    if in_v2_only:
        return Finding(name=name, status=LIMITED,
                       detail=f"{detail}; {' '.join(in_v2_only)}: in cgroup2 only on this hybrid host, so its "
                              "limits are errors" + _also(lacking, in_v2_only),
                       fix="pure cgroup v2 (see cgroups) gives every controller one hierarchy")
    return Finding(name=name, status=LIMITED,
                   detail=f"{detail}; not available: {' '.join(lacking)} (limits on those are errors)",
                   fix="enable the controllers in the kernel (CONFIG_CGROUP_*) and mount them"
                       + (" (on cgroup v2: +CONTROLLER in the parents' cgroup.subtree_control)"
                          if cgroup_mode() == "unified" else ""))


def _also(lacking: list[str], explained: list[str]) -> str:
    rest = [c for c in lacking if c not in explained]
    return f"; not available at all: {' '.join(rest)}" if rest else ""


def _container_dirs() -> dict[str, str]:
    """Where a container with the default cgroupsPath would get its cgroup (paths only)."""
    from .cgroups import manager_for
    return manager_for(PROBE_CGROUP_ID, "", None).paths


def _v2_controllers_for_container() -> list[str]:
    """The cgroup2 controllers a new container cgroup can have: those of its nearest existing
    parent (its own directory does not exist)."""
    from .cgroups.detect import UNIFIED_KEY
    from .cgroups.v2 import available
    try:
        d = os.path.dirname(_container_dirs()[UNIFIED_KEY])
    except (OCIError, KeyError):
        return []
    while d != "/" and not os.path.isdir(d):
        d = os.path.dirname(d)
    return sorted(available(d))


def _delegation(host: Host) -> Finding:
    """Rootless: limits need a cgroup the user may write (delegated), or systemd --user."""
    from .cgroups import manager_for
    from .cgroups.dbus import systemd_running
    from .cgroups.detect import cgroup_mode
    name = "cgroup-controllers"
    try:
        m = manager_for(PROBE_CGROUP_ID, "", None, rootless=True)
        if m.writable():
            return Finding(name=name, status=OK, detail="your own cgroup is delegated to you: "
                           + " ".join(m.paths.values()))
    except OCIError as e:
        return Finding(name=name, status=MISSING, detail=str(e))
    if systemd_running() and cgroup_mode() == "unified":
        uid = host.uid
        service = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service"
        ctrls = _read(f"{service}/cgroup.controllers")
        if ctrls is not None:
            return Finding(name=name, status=OK,
                           detail=f"with --systemd-cgroup: systemd --user delegates {ctrls or 'no controllers'} "
                                  f"({service}); without it limits are refused")
        return Finding(name=name, status=MISSING,
                       detail=f"your cgroup is not delegated and systemd --user is not running for uid {uid}",
                       fix=f"loginctl enable-linger {host.user} (starts user@{uid}.service), then "
                           "use --systemd-cgroup")
    return Finding(name=name, status=MISSING,
                   detail="no cgroup is delegated to you: containers run without limits, and a config "
                          "with limits is refused",
                   fix="have root make a cgroup and chown it to you (cgroup v2), or use a systemd host "
                       "with --systemd-cgroup")


# ---------------------------------------------------------------------------- systemd

def probe_systemd(host: Host) -> Finding:
    from .cgroups.dbus import systemd_running
    from .cgroups.detect import cgroup_mode
    name = "systemd"
    if not systemd_running():
        comm = _read("/proc/1/comm") or "unknown"
        return Finding(name=name, status=MISSING,
                       detail=f"systemd is not PID 1 (PID 1 is {comm}; no /run/systemd/system): "
                              "--systemd-cgroup cannot work, the cgroupfs driver (the default) is used",
                       fix="boot with systemd as init on pure cgroup v2 to use --systemd-cgroup "
                           "(the cgroupfs driver needs nothing)")
    if cgroup_mode() != "unified":
        return Finding(name=name, status=LIMITED,
                       detail=f"systemd is PID 1, but cgroups are {cgroup_mode()}: --systemd-cgroup "
                              "is refused (ocirun's systemd driver needs pure cgroup v2)",
                       fix="boot with systemd.unified_cgroup_hierarchy=1")
    which = "systemd --user of " + host.user if host.rootless else "systemd"
    return Finding(name=name, status=OK, detail=f"systemd is PID 1 on cgroup v2: --systemd-cgroup makes "
                                                 f"each container a transient scope of {which}")


def probe_dbus(host: Host) -> Finding:
    from .cgroups.dbus import MANAGER, PROPERTIES, Systemd, systemd_running
    name = "dbus"
    bus = "user" if host.rootless else "system"
    if not systemd_running():
        return Finding(name=name, status=MISSING, detail=f"not asked: no systemd to answer on the {bus} bus")
    try:
        conn = Systemd(bus, timeout=DBUS_TIMEOUT_S)
    except OCIError as e:
        fix = (f"loginctl enable-linger {host.user}; set XDG_RUNTIME_DIR=/run/user/{host.uid}"
               if host.rootless else "systemctl start dbus (package dbus)")
        return Finding(name=name, status=MISSING, detail=str(e), fix=fix)
    try:
        version = conn.call("Get", "ss", (MANAGER, "Version"), interface=PROPERTIES, timeout=DBUS_TIMEOUT_S)[0][1]
    except OCIError as e:
        return Finding(name=name, status=LIMITED, detail=f"{conn.address} connects, but systemd does not answer: {e}",
                       fix="systemctl status dbus; journalctl -u dbus")
    finally:
        conn.close()
    if conn.direct:  # the driver works (runc's fallback too), but whatever else needs the bus does not
        return Finding(name=name, status=LIMITED, detail=f"the {bus} bus does not answer; systemd {version} "
                       f"answers on its own socket ({conn.address}), which the systemd cgroup driver uses",
                       fix="systemctl start dbus (package dbus)")
    return Finding(name=name, status=OK, detail=f"the {bus} bus ({conn.address}) is reachable: systemd {version} answers")


# ---------------------------------------------------------------------------- namespaces

_PLAIN_NAMESPACES = (("mount", linux.CLONE_NEWNS), ("pid", linux.CLONE_NEWPID), ("network", linux.CLONE_NEWNET),
                     ("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS), ("cgroup", linux.CLONE_NEWCGROUP))


def probe_namespaces(host: Host) -> Finding:
    name = "namespaces"
    every = 0
    for _ns, flag in _PLAIN_NAMESPACES:
        every |= flag
    if _unshare_in_child(every, host) == 0:
        return Finding(name=name, status=OK, detail="mount, pid, network, ipc, uts and cgroup can be created")
    failed = [f"{ns} ({_words(code)})" for ns, flag in _PLAIN_NAMESPACES
              if (code := _unshare_in_child(flag, host)) != 0]
    status = MISSING if any(f.startswith("mount ") for f in failed) else LIMITED
    return Finding(name=name, status=status, detail="cannot create: " + ", ".join(failed),
                   fix="a kernel with CONFIG_NAMESPACES and the namespace options; inside a container, "
                       "run it with the privilege to create namespaces (or nest with a user namespace)")


def probe_user_namespaces(host: Host) -> Finding:
    name = "userns"
    code = _in_child(lambda: linux.unshare(linux.CLONE_NEWUSER))
    limits = _userns_sysctls()
    if code != 0:
        return Finding(name=name, status=MISSING,
                       detail=f"unshare(CLONE_NEWUSER): {_words(code)}" + (f" ({'; '.join(limits)})" if limits else ""),
                       fix=_userns_fix(limits) or "a kernel with CONFIG_USER_NS")
    if host.rootless:
        return Finding(name=name, status=OK, detail="you can create user namespaces (rootless containers work)")
    code = _in_child(_unshare_as_nobody)
    if code == 0:
        return Finding(name=name, status=OK, detail="root and unprivileged users can create user namespaces")
    return Finding(name=name, status=LIMITED,
                   detail=f"root can, unprivileged users cannot ({_words(code)}"
                          + (f"; {'; '.join(limits)}" if limits else "") + "): no rootless containers",
                   fix=_userns_fix(limits) or "see the kernel's and your distribution's user namespace settings")


def _unshare_as_nobody() -> None:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    linux.unshare(linux.CLONE_NEWUSER)


# sysctl -> (the value that forbids, what to set); absent knobs are skipped (not every kernel has them)
_USERNS_KNOBS = (
    ("user.max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"),
    ("kernel.unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1"),
    ("kernel.apparmor_restrict_unprivileged_userns", "1",
     "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns for ocirun)"),
)


def _userns_sysctls() -> list[str]:
    return [f"{knob} = {value}" for knob, forbids, _fix in _USERNS_KNOBS
            if (value := _sysctl(knob)) == forbids]


def _userns_fix(limits: list[str]) -> str | None:
    fixes = [fix for knob, _forbids, fix in _USERNS_KNOBS if any(line.startswith(knob + " ") for line in limits)]
    return "; ".join(fixes) or None


def probe_time_namespace(host: Host) -> Finding:
    name = "timens"
    if not os.path.exists("/proc/self/ns/time"):
        return Finding(name=name, status=MISSING, detail="this kernel has no time namespaces (linux.timeOffsets)",
                       fix="Linux 5.6 or later with CONFIG_TIME_NS")
    code = _unshare_in_child(linux.CLONE_NEWTIME, host)
    if code != 0:
        return Finding(name=name, status=MISSING, detail=f"unshare(CLONE_NEWTIME): {_words(code)}")
    return Finding(name=name, status=OK, detail="time namespaces can be created (linux.timeOffsets)")


# ---------------------------------------------------------------------------- id mapping

def probe_id_map_helpers(host: Host) -> Finding:
    name = "uidmap"
    found = {h: _which(h) for h in ("newuidmap", "newgidmap")}
    absent = [h for h, path in found.items() if path is None]
    who = "root does not need them; " if not host.rootless else ""
    if absent:
        return Finding(name=name, status=MISSING,
                       detail=f"{' and '.join(absent)} not found: {who}a rootless container can map only "
                              "its user's own id", fix="apt-get install uidmap")
    unprivileged = [h for h, path in found.items() if path is not None and not _grants_privilege(path)]
    if unprivileged:
        return Finding(name=name, status=LIMITED,
                       detail=f"{' and '.join(unprivileged)} neither setuid nor with file capabilities: "
                              "they cannot write another user's maps",
                       fix="reinstall the uidmap package (chmod u+s /usr/bin/newuidmap /usr/bin/newgidmap)")
    return Finding(name=name, status=OK, detail=f"{found['newuidmap']} and {found['newgidmap']} "
                                                 "(setuid or with capabilities)")


def _grants_privilege(path: str) -> bool:
    import stat
    try:
        if os.stat(path).st_mode & stat.S_ISUID:
            return True
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def probe_subordinate_ids(host: Host) -> Finding:
    name = "subids"
    if not host.rootless:
        return Finding(name=name, status=OK, detail="root maps any ids directly (/etc/subuid is for "
                                                    "rootless users)")
    ranges = {f: _ranges_of(f, host) for f in ("/etc/subuid", "/etc/subgid")}
    empty = [f for f, r in ranges.items() if not r]
    if empty:
        return Finding(name=name, status=LIMITED,
                       detail=f"no range for {host.user} in {' and '.join(empty)}: only your own id can be mapped",
                       fix=f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {host.user}")
    return Finding(name=name, status=OK, detail="; ".join(f"{f}: {', '.join(r)}" for f, r in ranges.items()))


def _ranges_of(path: str, host: Host) -> list[str]:
    """The user's `start:count` lines of /etc/subuid or /etc/subgid (by name or by uid)."""
    text = _read(path) or ""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (host.user, str(host.uid)):
            out.append(f"{parts[1]}+{parts[2]}")
    return out


# ---------------------------------------------------------------------------- seccomp, LSMs

def probe_seccomp(host: Host) -> Finding:
    from . import seccomp
    name = "seccomp"
    status_line = next((line for line in (_read("/proc/self/status") or "").splitlines()
                        if line.startswith("Seccomp:")), None)
    if status_line is None:
        return Finding(name=name, status=MISSING, detail="this kernel has no seccomp (no Seccomp: line in "
                       "/proc/self/status): linux.seccomp is refused", fix="a kernel with CONFIG_SECCOMP_FILTER")
    flags = seccomp.features()["supportedFlags"]  # none: seccomp(2) refuses filters (or predates 4.14)
    if not flags:
        return Finding(name=name, status=MISSING, detail="seccomp(2) takes no filter flags here: linux.seccomp "
                       "is refused", fix="Linux 4.14 or later with CONFIG_SECCOMP_FILTER")
    try:
        import pyseccomp  # noqa: F401 — compiling a profile needs libseccomp's bindings
        version = seccomp.libseccomp_version()
    except (ImportError, OSError, OCIError) as e:
        return Finding(name=name, status=MISSING, detail=f"the kernel filters, but libseccomp cannot be used: {e}",
                       fix="apt-get install libseccomp2; pip install pyseccomp")
    already = status_line.split()[-1] != "0"
    return Finding(name=name, status=OK,
                   detail=f"libseccomp {version}; flags: {' '.join(flags) or 'none'}"
                          + ("; this process already runs under a seccomp filter" if already else ""))


def probe_seccomp_notify(host: Host) -> Finding:
    from . import seccomp
    name = "seccomp-notify"
    if seccomp.notify_supported():
        return Finding(name=name, status=OK, detail="SCMP_ACT_NOTIFY with listenerPath (the kernel hands out "
                                                     "a listener fd)")
    return Finding(name=name, status=MISSING, detail="the kernel refuses SECCOMP_FILTER_FLAG_NEW_LISTENER: "
                   "SCMP_ACT_NOTIFY profiles fail", fix="Linux 5.0 or later")


def probe_lsm(host: Host) -> Finding:
    from . import lsm
    name = "lsm"
    active = _read("/sys/kernel/security/lsm")
    listed = f" (active LSMs: {active})" if active else ""
    if lsm.selinux_enabled():
        return Finding(name=name, status=OK, detail="SELinux is enabled: process.selinuxLabel applies" + listed)
    if lsm.apparmor_enabled():
        if _which("apparmor_parser") is None:
            return Finding(name=name, status=LIMITED,
                           detail="AppArmor is enabled, but apparmor_parser is missing: only profiles "
                                  "already loaded can be named in process.apparmorProfile" + listed,
                           fix="apt-get install apparmor")
        return Finding(name=name, status=OK, detail="AppArmor is enabled: process.apparmorProfile applies" + listed)
    return Finding(name=name, status=LIMITED,
                   detail="neither AppArmor nor SELinux is enabled: a config asking for a profile or a label "
                          "is refused, containers run without LSM confinement" + listed,
                   fix="boot a kernel with AppArmor (lsm=...,apparmor) and apt-get install apparmor")


# ---------------------------------------------------------------------------- mounts, syscalls

def probe_idmapped_mounts(host: Host) -> Finding:
    name = "idmapped-mounts"
    if host.rootless:
        return Finding(name=name, status=MISSING, detail="idmapped mounts need a root runtime "
                       "(mount_setattr on a clone of a host mount)", fix="run ocirun as root for them")
    tried = {where: _try_idmapped_clone(where) for where in _idmap_places()}
    works = [f"{w} ({_fstype_of(w)})" for w, err in tried.items() if err is None]
    refused = [f"{w} ({_fstype_of(w)}): {err}" for w, err in tried.items() if err is not None]
    if "/" not in {w for w, err in tried.items() if err is not None}:
        return Finding(name=name, status=OK, detail="tried on " + ", ".join(works))
    if works:
        return Finding(name=name, status=LIMITED,
                       detail=f"they work on {', '.join(works)}, but not on {'; '.join(refused)}: a bind source "
                              "there cannot be idmapped")
    if any("function not implemented" in r for r in refused):
        return Finding(name=name, status=MISSING, detail="refused on " + "; ".join(refused), fix="Linux 5.12 or later")
    return Finding(name=name, status=LIMITED,
                   detail=f"the kernel has mount_setattr, but these filesystems refuse: {'; '.join(refused)}: "
                          "bind sources must be on one that supports idmapping (ext4, xfs, btrfs; tmpfs since "
                          "Linux 6.3)")


def _idmap_places() -> list[str]:
    """Where the idmapped-mount probe tries: the root filesystem (most bind sources) and a tmpfs
    (scratch volumes; idmappable since Linux 6.3), so that a refusal by / is put in context."""
    tmpfs = next((p for p in ("/dev/shm", "/run", "/tmp") if _fstype_of(p) == "tmpfs"), None)
    return ["/"] + ([tmpfs] if tmpfs else [])


def _try_idmapped_clone(where: str) -> str | None:
    """Idmap a detached clone of the mount at `where`: None if it worked, else why not.  The
    clone is never attached anywhere and vanishes with its fd."""
    from .rootfs import idmap
    try:
        fd = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return os_words(e)
    try:
        tree = idmap.idmapped_tree(fd, "0 0 65536\n", "0 0 65536\n", rbind=False, ridmap=False, field="check")
        os.close(tree)
    except OSError as e:
        return os_words(e)
    except OCIError as e:
        return str(e)
    finally:
        os.close(fd)
    return None


def _fstype_of(path: str) -> str:
    from . import mountinfo
    best = None
    for m in mountinfo.parse(_read("/proc/self/mountinfo") or ""):
        if (path.rstrip("/") + "/").startswith(m.mountpoint.rstrip("/") + "/"):
            best = m
    return best.fstype if best is not None else "unknown filesystem"


def probe_clone3(host: Host) -> Finding:
    name = "clone3"
    # clone3(NULL, 0): EINVAL from a kernel that has it (the size is too small), ENOSYS where
    # the kernel or a seccomp filter around us has not; nothing is cloned either way.
    code = -linux.syscall(linux.NR_CLONE3, None, 0)  # -errno
    if code != errno.EINVAL:
        return Finding(name=name, status=MISSING,
                       detail=f"clone3: {_words(code)}: new processes join the cgroup by a cgroup.procs write "
                              "(slower)", fix="Linux 5.7 or later (and a seccomp profile around ocirun that allows clone3)")
    if sys.version_info[:2] != (3, 11):
        return Finding(name=name, status=LIMITED,
                       detail=f"the kernel has clone3, but ocirun forks into a cgroup with it on CPython 3.11 "
                              f"only (this is {sys.version_info[0]}.{sys.version_info[1]})",
                       fix="run ocirun on CPython 3.11")
    return Finding(name=name, status=OK, detail="CLONE_INTO_CGROUP: processes are born in their cgroup2 directory")


def probe_openat2(host: Host) -> Finding:
    name = "openat2"
    try:
        fd = linux.openat2(-100, "/", os.O_PATH, resolve=linux.RESOLVE_IN_ROOT)  # AT_FDCWD
    except OSError as e:
        return Finding(name=name, status=MISSING,
                       detail=f"openat2: {os_words(e)}: ocirun resolves every path inside a root filesystem "
                              "with openat2(RESOLVE_IN_ROOT) and cannot run containers without it",
                       fix="Linux 5.6 or later (and a seccomp profile around ocirun that allows openat2)")
    os.close(fd)
    return Finding(name=name, status=OK, detail="RESOLVE_IN_ROOT: paths inside a rootfs cannot lead out")


def probe_capabilities(host: Host) -> Finding:
    from .capabilities import CAP_NAMES, current, last_cap
    name = "capabilities"
    bounding = current()["bounding"]
    lacking = [CAP_NAMES.get(n, str(n)) for n in range(last_cap() + 1) if not bounding >> n & 1]
    if not lacking:
        return Finding(name=name, status=OK, detail=f"the bounding set is full (0..{last_cap()})")
    if host.rootless:
        return Finding(name=name, status=OK, detail=f"rootless: containers get what their user namespace "
                                                     f"gives; not in your bounding set: {' '.join(lacking)}")
    return Finding(name=name, status=LIMITED,
                   detail=f"not in this host's bounding set: {' '.join(lacking)} (no container can get "
                          f"{'it' if len(lacking) == 1 else 'them'})",
                   fix="whatever started this system or shell dropped them (a container or sandbox around it)")


# ---------------------------------------------------------------------------- CRIU

def probe_criu(host: Host) -> Finding:
    import subprocess
    from .criu import criu_binary
    name = "criu"
    try:
        path = criu_binary(host.criu or _which("criu"))  # the binary `checkpoint` and `restore` would run
    except OCIError as e:
        return Finding(name=name, status=MISSING, detail=str(e),
                       fix="give --criu the path of a criu binary" if host.criu else "apt-get install criu")
    try:
        r = subprocess.run([path, "check"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=CRIU_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Finding(name=name, status=LIMITED, detail=f"{path} check: no answer within {CRIU_TIMEOUT_S:g} s")
    except OSError as e:
        return Finding(name=name, status=MISSING, detail=f"{path} check: {os_words(e)}")
    out = (r.stdout + r.stderr).strip()
    if r.returncode == 0 and "Looks good." in out:
        return Finding(name=name, status=OK, detail=f"{path} check: Looks good.")
    if r.returncode == 0:
        return Finding(name=name, status=LIMITED, detail=f"{path} check: {_criu_reason(out)}")
    return Finding(name=name, status=MISSING, detail=f"{path} check fails: {_criu_reason(out)}",
                   fix="checkpoint/restore needs root: run `ocirun check` as root to see what the kernel lacks"
                       if host.rootless else "a kernel CRIU supports (`criu check` names what it lacks)")


def _criu_reason(out: str) -> str:
    """CRIU's own words: its first error line without the source location (and without the
    "exited, status=1" of its helper processes), else its last line."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Error (") and "):" in line:
            words = line.split("):", 1)[1].strip()
            if not words.startswith("exited, status="):
                return words
    return lines[-1] if lines else "no output"


# ---------------------------------------------------------------------------- engines

def _toml(path: str):
    """A TOML file as a dict; None if absent; an OCIError naming it if it cannot be read."""
    import tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise OCIError(f"{path}: {e}") from None


def _names_ocirun(name: str, path) -> bool:
    return "ocirun" in name or "ocirun" in os.path.basename(str(path))


def _runtime_path_problem(path: str) -> str | None:
    if not os.path.isabs(path):
        return None  # the engine looks it up on its PATH
    if not os.access(path, os.X_OK):
        return f"{path} is not an executable file"
    return None


def _engine(name: str, binary: str, configured, fix: str, host: Host) -> Finding:
    """One engine: found or not, then what `configured()` finds: (entry, path, where) or None."""
    found = _which(binary)
    if found is None:
        return Finding(name=name, status=MISSING, detail=f"{binary} is not installed",
                       fix=f"apt-get install {dict(podman='podman', containerd='containerd', dockerd='docker.io')[name]}")
    try:
        entry = configured(host)
    except OCIError as e:
        return Finding(name=name, status=LIMITED, detail=f"{found}; cannot read its configuration: {e}")
    if entry is None:
        return Finding(name=name, status=LIMITED, detail=f"{found}; its configuration does not name ocirun", fix=fix)
    what, path, where = entry
    problem = _runtime_path_problem(path)
    if problem:
        return Finding(name=name, status=LIMITED, detail=f"{found}; {what} (in {where}), but {problem}", fix=fix)
    return Finding(name=name, status=OK, detail=f"{found}; {what} (in {where})")


def _user_config(rel: str) -> str:
    """A file under the user's configuration directory (rootless engines read theirs there)."""
    return os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), rel)


def _podman_files(host: Host) -> list[str]:
    """containers.conf in the order podman reads it (later ones win); CONTAINERS_CONF replaces all."""
    import glob
    if os.environ.get("CONTAINERS_CONF"):
        return [os.environ["CONTAINERS_CONF"]]
    files = ["/usr/share/containers/containers.conf", "/etc/containers/containers.conf"]
    files += sorted(glob.glob("/etc/containers/containers.conf.d/*.conf"))
    if host.rootless:
        files += [_user_config("containers/containers.conf")]
        files += sorted(glob.glob(_user_config("containers/containers.conf.d/*.conf")))
    return files


def _podman_configured(host: Host):
    found, default = None, None
    for path in _podman_files(host):
        doc = _toml(path)
        engine = (doc or {}).get("engine", {})
        for rt, paths in (engine.get("runtimes") or {}).items():
            candidates = paths if isinstance(paths, list) else [paths]
            if _names_ocirun(rt, "") or any(_names_ocirun("", p) for p in candidates):
                found = (rt, (candidates or [""])[0], path)
        default = engine.get("runtime", default)
    if found is None:
        return None
    rt, binary, where = found
    return (f"[engine.runtimes] {rt} = {binary}" + (", the default runtime" if default == rt else ""), binary, where)


def _containerd_config(host: Host) -> str:
    return _user_config("containerd/config.toml") if host.rootless else "/etc/containerd/config.toml"


def _dockerd_config(host: Host) -> str:
    return _user_config("docker/daemon.json") if host.rootless else "/etc/docker/daemon.json"


def _containerd_configured(host: Host):
    where = _containerd_config(host)
    doc = _toml(where)
    for keys, value in _walk(doc or {}):
        if keys and keys[-1] == "BinaryName" and isinstance(value, str) and _names_ocirun("", value):
            runtime = keys[-3] if len(keys) >= 3 else "?"
            return (f"runtime {runtime!r}: BinaryName = {value}", value, where)
    return None


def _walk(doc: dict, keys: tuple = ()):
    for k, v in doc.items():
        if isinstance(v, dict):
            yield from _walk(v, keys + (k,))
        else:
            yield keys + (k,), v


def _dockerd_configured(host: Host):
    import json
    where = _dockerd_config(host)
    try:
        with open(where) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OCIError(f"{where}: {e}") from None
    runtimes = doc.get("runtimes") if isinstance(doc, dict) else None
    for rt, spec in (runtimes or {}).items():
        path = spec.get("path", "") if isinstance(spec, dict) else ""
        if _names_ocirun(rt, path):
            default = ", the default runtime" if doc.get("default-runtime") == rt else ""
            return (f"runtime {rt!r}: path {path}{default}", path, where)
    return None


def probe_podman(host: Host) -> Finding:
    conf = _user_config("containers/containers.conf") if host.rootless else "/etc/containers/containers.conf"
    return _engine("podman", "podman", _podman_configured,
                   f"in {conf}: [engine.runtimes] ocirun = [\"{_this_ocirun()}\"] "
                   f"(or podman --runtime {_this_ocirun()})", host)


def probe_containerd(host: Host) -> Finding:
    return _engine("containerd", "containerd", _containerd_configured,
                   f"a runtime with options BinaryName = \"{_this_ocirun()}\" in {_containerd_config(host)} "
                   f"(README, \"Using ocirun with engines\"), or ctr run --runc-binary {_this_ocirun()}", host)


def probe_dockerd(host: Host) -> Finding:
    return _engine("dockerd", "dockerd", _dockerd_configured,
                   f"{{\"runtimes\": {{\"ocirun\": {{\"path\": \"{_this_ocirun()}\"}}}}}} in {_dockerd_config(host)} "
                   f"(or dockerd --add-runtime ocirun={_this_ocirun()})", host)


# ---------------------------------------------------------------------------- all of it

# (probe, essential): an essential probe that says missing means no container can run here.
PROBES = (
    (probe_cgroup_layout, True),
    (probe_cgroup_controllers, False),
    (probe_systemd, False),
    (probe_dbus, False),
    (probe_namespaces, True),
    (probe_user_namespaces, None),  # essential for a rootless caller only (see `blocking`)
    (probe_id_map_helpers, False),
    (probe_subordinate_ids, False),
    (probe_time_namespace, False),
    (probe_seccomp, False),
    (probe_seccomp_notify, False),
    (probe_lsm, False),
    (probe_idmapped_mounts, False),
    (probe_clone3, False),
    (probe_openat2, True),
    (probe_capabilities, False),
    (probe_criu, False),
    (probe_podman, False),
    (probe_containerd, False),
    (probe_dockerd, False),
)


def run_checks(rootless: bool, criu: str | None = None) -> tuple[list[Finding], list[str]]:
    """Every finding, and the names of those that stop any container from running here."""
    host = Host(rootless, criu)
    findings, blocking = [], []
    for probe, essential in PROBES:
        f = _safely(probe, host)
        findings.append(f)
        if f.status == MISSING and (essential or (essential is None and rootless)):
            blocking.append(f.name)
    return findings, blocking


def _safely(probe, host: Host) -> Finding:
    """A probe that fails unexpectedly is a finding too, never a traceback."""
    from .errors import describe
    name = probe.__name__.removeprefix("probe_").replace("_", "-")
    try:
        return probe(host)
    except Exception as e:  # noqa: BLE001 — one broken probe must not hide the others
        return Finding(name=name, status=LIMITED, detail=f"the probe failed: {describe(e)}")


def as_json(findings: list[Finding], blocking: list[str], rootless: bool) -> dict:
    return {"rootless": rootless, "uid": os.geteuid(), "canRunContainers": not blocking,
            "blocking": blocking, "checks": [f.to_json() for f in findings]}


def as_table(findings: list[Finding], blocking: list[str], rootless: bool) -> list[str]:
    width = max(len(f.name) for f in findings)
    lines = [f"{'CHECK'.ljust(width)}  {'STATUS':<7}  DETAIL"]
    for f in findings:
        lines.append(f"{f.name.ljust(width)}  {f.status:<7}  {f.detail}")
        if f.fix:
            lines.append(f"{'':{width}}  {'':7}  fix: {f.fix}")
    who = "a rootless caller" if rootless else "root"
    if blocking:
        lines.append(f"ocirun cannot run containers here as {who}: {', '.join(blocking)} missing")
    else:
        counts = {s: sum(f.status == s for f in findings) for s in (OK, LIMITED, MISSING)}
        lines.append(f"ocirun can run containers here as {who} ({counts[OK]} ok, {counts[LIMITED]} limited, "
                     f"{counts[MISSING]} missing)")
    return lines
