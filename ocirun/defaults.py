"""`ocirun spec` (a default config.json, like `runc spec`) and `ocirun features`."""
from __future__ import annotations

from . import SPEC_VERSION, __version__

_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_config(args: list[str] | None = None, terminal: bool = True) -> dict:
    return {
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "ocirun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            # runc's: the container sees its own cgroups (read-only) where tools look for them.
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


MOUNT_OPTIONS = [
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "lazytime",
    "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime",
    "nostrictatime", "nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime",
    "relatime", "remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime",
    "rnostrictatime", "rnosuid", "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw",
    "rshared", "rslave", "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared",
    "slave", "strictatime", "suid", "symfollow", "sync", "tmpcopyup", "unbindable",
]


def to_rootless(cfg: dict, uid: int, gid: int) -> dict:
    """`spec --rootless`: what runc's specconv.ToRootless makes of the default config.

    A user namespace mapping the caller (uid, gid) to root, and no network namespace (an
    unprivileged user could only give it a loopback); /sys bound from the host (a new sysfs
    needs a network namespace of one's own); no uid=/gid= mount options (gid=5 of devpts is not
    mapped); no cgroup limits (a user's cgroup is writable only where it was delegated)."""
    linux = cfg["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    linux.pop("resources", None)
    mounts = []
    for m in cfg["mounts"]:
        if m["destination"].rstrip("/") == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        if "options" in m:
            m["options"] = [o for o in m["options"] if not o.startswith(("uid=", "gid="))]
        mounts.append(m)
    cfg["mounts"] = mounts
    return cfg


def _seccomp_features() -> dict:
    from . import seccomp
    return seccomp.features()


def features() -> dict:
    from .capabilities import CAPS
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": sorted(CAPS, key=CAPS.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": True, "rdma": False},
            "seccomp": _seccomp_features(),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
            "netDevices": {"enabled": True},
        },
        "annotations": {"io.github.ocirun.version": __version__,
                        # runc says whether it was built with checkpoint/restore; ours is always
                        # there, so what decides is whether CRIU is installed (`ocirun check`
                        # says whether it works on this kernel).
                        "io.github.ocirun.checkpoint.enabled": "true" if _criu_installed() else "false"},
    }


def _criu_installed() -> bool:
    import shutil
    return shutil.which("criu") is not None
