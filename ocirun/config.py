"""config.json -> typed objects, parsed once.

`load_bundle(dir)` reads `<dir>/config.json`, checks it against the runtime-spec schema in
`spec/` (see `ocirun.schema`, imported lazily) and turns it into a `Config`.  Every error is a
`ConfigError` whose message starts with the JSON path of the field at fault
(``mounts[3].destination: must be absolute``) so a person can find it in one look.

The objects are plain record classes: the rest of the runtime never touches the raw dict again,
except for sections that are passed through untouched (`raw` keeps the whole document for
hooks, `linux.resources` and `linux.seccomp` which their own modules parse).
"""
from __future__ import annotations

import os
import stat

from . import jsonio, linux
from .errors import ConfigError, OCIError, os_words

# Namespace type in config.json -> CLONE_* flag.  The order is the order we join them in:
# user first (it decides what we may do in the others), mount last but one (paths change), then
# cgroup after we were placed in our cgroup, time before the fork that makes the init.
NAMESPACE_TYPES = {
    "user": linux.CLONE_NEWUSER,
    "pid": linux.CLONE_NEWPID,
    "network": linux.CLONE_NEWNET,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "mount": linux.CLONE_NEWNS,
    "cgroup": linux.CLONE_NEWCGROUP,
    "time": linux.CLONE_NEWTIME,
}

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}


# --------------------------------------------------------------------------- field readers

def _type_name(v: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _get(obj: dict, key: str, path: str, kind, default=None, required=False):
    """obj[key] checked against `kind` (a type or tuple of types); errors name `path.key`."""
    p = f"{path}.{key}" if path else key
    if key not in obj or obj[key] is None:
        if required:
            raise ConfigError(p, "is required")
        return default
    v = obj[key]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(p, f"must be an integer, not {_type_name(v)}")
    if kind is not int and not isinstance(v, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        want = {"dict": "an object", "list": "an array", "str": "a string", "bool": "a boolean"}.get(want, want)
        raise ConfigError(p, f"must be {want}, not {_type_name(v)}")
    return v


def _str_list(obj: dict, key: str, path: str) -> list[str]:
    items = _get(obj, key, path, list, [])
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise ConfigError(f"{path}.{key}[{i}]" if path else f"{key}[{i}]", f"must be a string, not {_type_name(s)}")
    return list(items)


def _uint(obj: dict, key: str, path: str, default=None, required=False, bits=32):
    v = _get(obj, key, path, int, default, required)
    if v is not None and not (0 <= v < (1 << bits)):
        raise ConfigError(f"{path}.{key}", f"{v} is out of range (0..{(1 << bits) - 1})")
    return v


# --------------------------------------------------------------------------- the objects
#
# Plain classes with explicit __init__s rather than @dataclass (ARCHITECTURE.md, Startup speed):
# these cost nothing until used.  They keep what the dataclasses gave:
# keyword or positional construction in field order, fresh mutable defaults, == and repr.

class _Record:
    """Equality and repr over the fields named in __slots__, in order (as a dataclass)."""
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq=True

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"


class User(_Record):
    __slots__ = ("uid", "gid", "umask", "additional_gids")

    def __init__(self, uid: int = 0, gid: int = 0, umask: int | None = None,
                 additional_gids: list[int] | None = None) -> None:
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.additional_gids = [] if additional_gids is None else additional_gids


class Rlimit(_Record):
    __slots__ = ("type", "resource", "soft", "hard")

    def __init__(self, type: str, resource: int, soft: int, hard: int) -> None:
        self.type = type
        self.resource = resource
        self.soft = soft
        self.hard = hard


class Capabilities(_Record):
    __slots__ = ("bounding", "effective", "inheritable", "permitted", "ambient")

    def __init__(self, bounding: list[str] | None = None, effective: list[str] | None = None,
                 inheritable: list[str] | None = None, permitted: list[str] | None = None,
                 ambient: list[str] | None = None) -> None:
        self.bounding = [] if bounding is None else bounding
        self.effective = [] if effective is None else effective
        self.inheritable = [] if inheritable is None else inheritable
        self.permitted = [] if permitted is None else permitted
        self.ambient = [] if ambient is None else ambient


class Process(_Record):
    __slots__ = ("args", "env", "cwd", "terminal", "console_size", "user", "capabilities", "rlimits",
                 "no_new_privileges", "oom_score_adj", "apparmor_profile", "selinux_label",
                 "io_priority", "scheduler", "exec_cpu_affinity")

    def __init__(self, args: list[str], env: list[str] | None = None, cwd: str = "/",
                 terminal: bool = False,
                 console_size: tuple[int, int] | None = None,  # (height, width)
                 user: User | None = None, capabilities: Capabilities | None = None,
                 rlimits: list[Rlimit] | None = None, no_new_privileges: bool = False,
                 oom_score_adj: int | None = None, apparmor_profile: str = "",
                 selinux_label: str = "", io_priority: dict | None = None,
                 scheduler: dict | None = None, exec_cpu_affinity: dict | None = None) -> None:
        self.args = args
        self.env = [] if env is None else env
        self.cwd = cwd
        self.terminal = terminal
        self.console_size = console_size
        self.user = User() if user is None else user
        self.capabilities = capabilities
        self.rlimits = [] if rlimits is None else rlimits
        self.no_new_privileges = no_new_privileges
        self.oom_score_adj = oom_score_adj
        self.apparmor_profile = apparmor_profile
        self.selinux_label = selinux_label
        self.io_priority = io_priority
        self.scheduler = scheduler
        self.exec_cpu_affinity = exec_cpu_affinity


class Mount(_Record):
    __slots__ = ("destination", "type", "source", "options", "uid_mappings", "gid_mappings")

    def __init__(self, destination: str, type: str = "", source: str = "",
                 options: list[str] | None = None, uid_mappings: list[dict] | None = None,
                 gid_mappings: list[dict] | None = None) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = [] if options is None else options
        self.uid_mappings = [] if uid_mappings is None else uid_mappings
        self.gid_mappings = [] if gid_mappings is None else gid_mappings


class Namespace(_Record):
    __slots__ = ("type", "path")

    def __init__(self, type: str, path: str = "") -> None:
        self.type = type
        self.path = path

    @property
    def flag(self) -> int:
        return NAMESPACE_TYPES[self.type]


class IDMapping(_Record):
    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size


class Device(_Record):
    __slots__ = ("path", "type", "major", "minor", "file_mode", "uid", "gid")

    def __init__(self, path: str, type: str, major: int = 0, minor: int = 0,
                 file_mode: int | None = None, uid: int | None = None, gid: int | None = None) -> None:
        self.path = path
        self.type = type
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid


class Hook(_Record):
    __slots__ = ("path", "args", "env", "timeout", "json_path")

    def __init__(self, path: str, args: list[str] | None = None, env: list[str] | None = None,
                 timeout: int | None = None,
                 json_path: str = "") -> None:  # e.g. hooks.prestart[0], for error messages
        self.path = path
        self.args = [] if args is None else args
        self.env = [] if env is None else env
        self.timeout = timeout
        self.json_path = json_path


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Linux(_Record):
    __slots__ = ("namespaces", "uid_mappings", "gid_mappings", "devices", "cgroups_path", "resources",
                 "sysctl", "masked_paths", "readonly_paths", "rootfs_propagation", "mount_label",
                 "personality", "time_offsets", "seccomp", "intel_rdt", "net_devices")

    def __init__(self, namespaces: list[Namespace] | None = None,
                 uid_mappings: list[IDMapping] | None = None,
                 gid_mappings: list[IDMapping] | None = None,
                 devices: list[Device] | None = None, cgroups_path: str = "",
                 resources: dict | None = None, sysctl: dict[str, str] | None = None,
                 masked_paths: list[str] | None = None, readonly_paths: list[str] | None = None,
                 rootfs_propagation: str = "", mount_label: str = "",
                 personality: dict | None = None, time_offsets: dict[str, dict] | None = None,
                 seccomp: dict | None = None, intel_rdt: dict | None = None,
                 net_devices: dict[str, dict] | None = None) -> None:
        self.namespaces = [] if namespaces is None else namespaces
        self.uid_mappings = [] if uid_mappings is None else uid_mappings
        self.gid_mappings = [] if gid_mappings is None else gid_mappings
        self.devices = [] if devices is None else devices
        self.cgroups_path = cgroups_path
        self.resources = {} if resources is None else resources
        self.sysctl = {} if sysctl is None else sysctl
        self.masked_paths = [] if masked_paths is None else masked_paths
        self.readonly_paths = [] if readonly_paths is None else readonly_paths
        self.rootfs_propagation = rootfs_propagation
        self.mount_label = mount_label
        self.personality = personality
        self.time_offsets = {} if time_offsets is None else time_offsets
        self.seccomp = seccomp
        self.intel_rdt = intel_rdt
        self.net_devices = {} if net_devices is None else net_devices

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


class Config(_Record):
    __slots__ = ("oci_version", "root_path", "root_readonly", "process", "mounts", "hostname",
                 "domainname", "hooks", "annotations", "linux", "bundle", "raw")

    def __init__(self, oci_version: str,
                 root_path: str,  # absolute, resolved against the bundle
                 root_readonly: bool, process: Process | None, mounts: list[Mount],
                 hostname: str | None, domainname: str | None, hooks: dict[str, list[Hook]],
                 annotations: dict[str, str], linux: Linux, bundle: str, raw: dict) -> None:
        self.oci_version = oci_version
        self.root_path = root_path
        self.root_readonly = root_readonly
        self.process = process
        self.mounts = mounts
        self.hostname = hostname
        self.domainname = domainname
        self.hooks = hooks
        self.annotations = annotations
        self.linux = linux
        self.bundle = bundle
        self.raw = raw

    def has_new_namespace(self, ns_type: str) -> bool:
        ns = self.linux.namespace(ns_type)
        return ns is not None and not ns.path


# --------------------------------------------------------------------------- parsers

# The kernel's limit on supplementary groups (NGROUPS_MAX in include/uapi/linux/limits.h):
# setgroups(2) refuses more with EINVAL, Python's os.setgroups with "too many groups".
NGROUPS_MAX = 65536


def parse_user(d: dict, path: str) -> User:
    gids = _get(d, "additionalGids", path, list, [])
    if len(gids) > NGROUPS_MAX:
        raise ConfigError(f"{path}.additionalGids", f"{len(gids)} groups, more than the kernel's NGROUPS_MAX ({NGROUPS_MAX})")
    return User(
        uid=_uint(d, "uid", path, 0),
        gid=_uint(d, "gid", path, 0),
        umask=_uint(d, "umask", path),
        additional_gids=[_check_uint(g, f"{path}.additionalGids[{i}]") for i, g in enumerate(gids)],
    )


def _check_uint(v, path: str, bits=32) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(path, f"must be an integer, not {_type_name(v)}")
    if not 0 <= v < (1 << bits):
        raise ConfigError(path, f"{v} is out of range")
    return v


def parse_capabilities(d: dict, path: str) -> Capabilities:
    from .capabilities import check_names  # small module, no heavy imports
    caps = Capabilities()
    for s in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        names = _str_list(d, s, path)
        check_names(names, f"{path}.{s}")
        setattr(caps, s, names)
    return caps


def parse_process(d: dict, path: str = "process", need_args=True) -> Process:
    args = _str_list(d, "args", path)
    if need_args and not args and "commandLine" not in d:
        raise ConfigError(f"{path}.args", "must not be empty")
    cwd = _get(d, "cwd", path, str, "/", required=False) or "/"
    if not cwd.startswith("/"):
        raise ConfigError(f"{path}.cwd", f"{cwd!r} must be an absolute path")
    size = _get(d, "consoleSize", path, dict)
    rlimits = []
    seen = set()
    for i, r in enumerate(_get(d, "rlimits", path, list, [])):
        rp = f"{path}.rlimits[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(rp, "must be an object")
        t = _get(r, "type", rp, str, required=True)
        if t not in RLIMITS:
            raise ConfigError(f"{rp}.type", f"unknown rlimit {t!r}")
        if t in seen:
            raise ConfigError(f"{rp}.type", f"duplicate rlimit {t}")
        seen.add(t)
        rlimits.append(Rlimit(t, RLIMITS[t], _uint(r, "soft", rp, required=True, bits=64),
                              _uint(r, "hard", rp, required=True, bits=64)))
    oom = _get(d, "oomScoreAdj", path, int)
    if oom is not None and not -1000 <= oom <= 1000:
        raise ConfigError(f"{path}.oomScoreAdj", f"{oom} is out of range (-1000..1000)")
    for i, e in enumerate(_str_list(d, "env", path)):
        if "=" not in e or e.startswith("="):  # a name is needed (runc refuses "=x" too)
            raise ConfigError(f"{path}.env[{i}]", f"{e!r} is not of the form KEY=value")
    return Process(
        args=args,
        env=_str_list(d, "env", path),
        cwd=cwd,
        terminal=_get(d, "terminal", path, bool, False),
        console_size=(_uint(size, "height", f"{path}.consoleSize", 0),
                      _uint(size, "width", f"{path}.consoleSize", 0)) if size else None,
        user=parse_user(_get(d, "user", path, dict, {}), f"{path}.user"),
        capabilities=parse_capabilities(d["capabilities"], f"{path}.capabilities")
        if isinstance(_get(d, "capabilities", path, dict), dict) else None,
        rlimits=rlimits,
        no_new_privileges=_get(d, "noNewPrivileges", path, bool, False),
        oom_score_adj=oom,
        apparmor_profile=_get(d, "apparmorProfile", path, str, ""),
        selinux_label=_get(d, "selinuxLabel", path, str, ""),
        io_priority=_get(d, "ioPriority", path, dict),
        scheduler=_get(d, "scheduler", path, dict),
        exec_cpu_affinity=_get(d, "execCPUAffinity", path, dict),
    )


def _parse_mounts(doc: dict) -> list[Mount]:
    mounts = []
    for i, m in enumerate(_get(doc, "mounts", "", list, [])):
        p = f"mounts[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(p, "must be an object")
        dest = _get(m, "destination", p, str, required=True)
        if not dest.startswith("/"):
            # runc accepts relative destinations (relative to /) with a warning; the spec
            # says absolute.  We are strict: engines always send absolute ones.
            raise ConfigError(f"{p}.destination", f"{dest!r} must be an absolute path")
        mounts.append(Mount(
            destination=os.path.normpath(dest),
            type=_get(m, "type", p, str, ""),
            source=_get(m, "source", p, str, ""),
            options=_str_list(m, "options", p),
            uid_mappings=_get(m, "uidMappings", p, list, []),
            gid_mappings=_get(m, "gidMappings", p, list, []),
        ))
    return mounts


def _parse_idmaps(lin: dict, key: str) -> list[IDMapping]:
    out = []
    for i, m in enumerate(_get(lin, key, "linux", list, [])):
        p = f"linux.{key}[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(p, "must be an object")
        out.append(IDMapping(_uint(m, "containerID", p, required=True),
                             _uint(m, "hostID", p, required=True),
                             _uint(m, "size", p, required=True)))
    return out


def _parse_namespaces(lin: dict) -> list[Namespace]:
    out, seen = [], set()
    for i, n in enumerate(_get(lin, "namespaces", "linux", list, [])):
        p = f"linux.namespaces[{i}]"
        if not isinstance(n, dict):
            raise ConfigError(p, "must be an object")
        t = _get(n, "type", p, str, required=True)
        if t not in NAMESPACE_TYPES:
            raise ConfigError(f"{p}.type", f"unknown namespace type {t!r}")
        if t in seen:
            raise ConfigError(f"{p}.type", f"duplicate namespace type {t!r}")
        seen.add(t)
        nspath = _get(n, "path", p, str, "")
        if nspath and not nspath.startswith("/"):
            raise ConfigError(f"{p}.path", f"{nspath!r} must be an absolute path")
        out.append(Namespace(t, nspath))
    return out


_DEV_TYPES = {"c", "u", "b", "p"}


def _parse_devices(lin: dict) -> list[Device]:
    out = []
    for i, d in enumerate(_get(lin, "devices", "linux", list, [])):
        p = f"linux.devices[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(p, "must be an object")
        dpath = _get(d, "path", p, str, required=True)
        if not dpath.startswith("/"):
            raise ConfigError(f"{p}.path", f"{dpath!r} must be an absolute path")
        t = _get(d, "type", p, str, required=True)
        if t not in _DEV_TYPES:
            raise ConfigError(f"{p}.type", f"unknown device type {t!r} (want c, b, u or p)")
        dev = Device(os.path.normpath(dpath), t,
                     _get(d, "major", p, int, 0), _get(d, "minor", p, int, 0),
                     _uint(d, "fileMode", p), _uint(d, "uid", p), _uint(d, "gid", p))
        if t != "p" and ("major" not in d or "minor" not in d):
            raise ConfigError(p, "major and minor are required for character and block devices")
        out.append(dev)
    return out


# The largest timeout runc can represent (a Go time.Duration: 2**63-1 ns, whole seconds); beyond
# it runc's timer overflows and fires at once, and our clock arithmetic would overflow too.
MAX_HOOK_TIMEOUT = ((1 << 63) - 1) // 10**9


def parse_hooks(doc: dict) -> dict[str, list[Hook]]:
    """The `hooks` of config.json (or of state.json, which keeps poststart/poststop for later)."""
    hooks_d = _get(doc, "hooks", "", dict, {})
    out: dict[str, list[Hook]] = {}
    for kind in HOOK_KINDS:
        lst = []
        for i, h in enumerate(_get(hooks_d, kind, "hooks", list, [])):
            p = f"hooks.{kind}[{i}]"
            if not isinstance(h, dict):
                raise ConfigError(p, "must be an object")
            hp = _get(h, "path", p, str, required=True)
            if not hp.startswith("/"):
                raise ConfigError(f"{p}.path", f"{hp!r} must be an absolute path")
            timeout = _get(h, "timeout", p, int)
            if timeout is not None and timeout <= 0:
                raise ConfigError(f"{p}.timeout", "must be greater than zero")
            if timeout is not None and timeout > MAX_HOOK_TIMEOUT:
                raise ConfigError(f"{p}.timeout", f"{timeout} is too large (at most {MAX_HOOK_TIMEOUT} seconds, ~292 years)")
            lst.append(Hook(hp, _str_list(h, "args", p), _str_list(h, "env", p), timeout, p))
        if lst:
            out[kind] = lst
    return out


def _parse_linux(doc: dict) -> Linux:
    lin = _get(doc, "linux", "", dict, {})
    sysctl = _get(lin, "sysctl", "linux", dict, {})
    for k, v in sysctl.items():
        if not isinstance(v, str):
            raise ConfigError(f"linux.sysctl.{k}", f"must be a string, not {_type_name(v)}")
    prop = _get(lin, "rootfsPropagation", "linux", str, "")
    if prop and prop not in ("shared", "slave", "private", "unbindable", "rshared", "rslave",
                             "rprivate", "runbindable"):
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    cg = _get(lin, "cgroupsPath", "linux", str, "")
    return Linux(
        namespaces=_parse_namespaces(lin),
        uid_mappings=_parse_idmaps(lin, "uidMappings"),
        gid_mappings=_parse_idmaps(lin, "gidMappings"),
        devices=_parse_devices(lin),
        cgroups_path=cg,
        resources=_get(lin, "resources", "linux", dict, {}),
        sysctl=dict(sysctl),
        masked_paths=_str_list(lin, "maskedPaths", "linux"),
        readonly_paths=_str_list(lin, "readonlyPaths", "linux"),
        rootfs_propagation=prop,
        mount_label=_get(lin, "mountLabel", "linux", str, ""),
        personality=_get(lin, "personality", "linux", dict),
        time_offsets=_get(lin, "timeOffsets", "linux", dict, {}),
        seccomp=_get(lin, "seccomp", "linux", dict),
        intel_rdt=_get(lin, "intelRdt", "linux", dict),
        net_devices=_get(lin, "netDevices", "linux", dict, {}),
    )


def _check_linux_consistency(cfg: Config) -> None:
    """Cross-field rules of config-linux.md that the schema cannot express."""
    lin = cfg.linux
    userns = lin.namespace("user")
    if (lin.uid_mappings or lin.gid_mappings) and userns is None:
        raise ConfigError("linux.uidMappings", "id mappings need a user namespace in linux.namespaces")
    if userns and not userns.path and not (lin.uid_mappings and lin.gid_mappings):
        raise ConfigError("linux.namespaces", "a new user namespace needs linux.uidMappings and linux.gidMappings")
    if cfg.hostname and lin.namespace("uts") is None:
        raise ConfigError("hostname", "setting the hostname needs a new uts namespace")
    if cfg.domainname and lin.namespace("uts") is None:
        raise ConfigError("domainname", "setting the domainname needs a new uts namespace")
    if lin.time_offsets and not cfg.has_new_namespace("time"):
        raise ConfigError("linux.timeOffsets", "time offsets need a new time namespace")
    if lin.net_devices and lin.namespace("network") is None:
        raise ConfigError("linux.netDevices", "moving network devices needs a network namespace")


def parse_config(doc: object, bundle: str) -> Config:
    if not isinstance(doc, dict):
        raise ConfigError("", "config.json: the document must be a JSON object")
    oci_version = _get(doc, "ociVersion", "", str, required=True)
    root = _get(doc, "root", "", dict, required=True)
    root_path = _get(root, "path", "root", str, required=True)
    if not os.path.isabs(root_path):
        root_path = os.path.join(bundle, root_path)
    proc = _get(doc, "process", "", dict)
    cfg = Config(
        oci_version=oci_version,
        root_path=os.path.normpath(root_path),
        root_readonly=_get(root, "readonly", "root", bool, False),
        process=parse_process(proc) if proc is not None else None,
        mounts=_parse_mounts(doc),
        hostname=_get(doc, "hostname", "", str),
        domainname=_get(doc, "domainname", "", str),
        hooks=parse_hooks(doc),
        annotations=_get(doc, "annotations", "", dict, {}),
        linux=_parse_linux(doc),
        bundle=bundle,
        raw=doc,
    )
    _check_linux_consistency(cfg)
    return cfg


# runc has no cap (Go's decoder reads whatever the file holds); real configs are well under 1 MiB
# (the biggest part, a seccomp profile, is ~100 KiB; Kubernetes caps annotations at 256 KiB).
MAX_JSON_BYTES = 16 << 20

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "a FIFO", "a directory", ..."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def read_json(path: str, what: str = "config.json") -> object:
    """Read and parse a JSON file of the bundle or the caller (config.json, exec's --process).

    Only a regular file of at most MAX_JSON_BYTES: a FIFO would block us forever, /dev/zero (or
    a huge file) would grow our memory until the kernel kills us.  The type is checked with
    stat before the open, which never blocks (O_NONBLOCK) and is checked again on the fd, so
    opening a device has no side effects and a file swapped in between is still caught."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise OCIError(f"{what}: {path}: is {file_kind(st.st_mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OCIError(f"{what}: {path}: is {file_kind(st.st_mode)}, not a regular file")
            data = _read_at_most(fd, MAX_JSON_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise OCIError(f"{what}: {path}: {os_words(e)}") from None
    if len(data) > MAX_JSON_BYTES:
        raise OCIError(f"{what}: {path}: larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        doc = jsonio.loads(data)
    except ValueError as e:
        raise OCIError(f"{what}: invalid JSON: {e}") from None
    if _may_hold_bad_strings(data):
        bad = find_bad_string(doc)
        if bad:
            raise OCIError(f"{what}: {bad[0] or '(the document)'}: {bad[1]}")
    return doc


_SUSPECT_ESCAPES = (b"\\u0000",) + tuple(b"\\ud" + bytes([c]) for c in b"89abcdef")


def _may_hold_bad_strings(data: bytes) -> bool:
    """Whether the text has a \\u0000 or a \\uD800-\\uDFFF escape: in valid UTF-8 JSON a NUL or a
    surrogate can be written no other way.  Engines escape often (Go writes "&" as \\u0026), so
    this look at the bytes (microseconds) spares most documents the walk (~0.1 ms)."""
    if b"\\u" not in data:
        return False
    low = data.lower()
    return any(e in low for e in _SUSPECT_ESCAPES)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def find_bad_string(doc: object) -> tuple[str, str] | None:
    """(JSON path, reason) of the first string (value or key) that no syscall can take: a NUL
    ends a C string early (a path, an argument, a hostname silently cut, or Python's "embedded
    null byte"), a lone surrogate is not Unicode at all (Go would turn it into U+FFFD, Python
    into an invalid byte).  Iterative: the document may be nested ~1,000 deep."""
    stack: list[tuple[object, tuple]] = [(doc, ())]
    while stack:
        obj, where = stack.pop()
        if isinstance(obj, str):
            reason = _bad_string_reason(obj)
            if reason:
                return _json_path(where), reason
        elif isinstance(obj, dict):
            for k, v in obj.items():
                reason = _bad_string_reason(k)
                if reason:
                    return _json_path(where), f"{reason} in the key {k!r}"
                stack.append((v, where + (k,)))
        elif isinstance(obj, list):
            stack.extend((v, where + (i,)) for i, v in enumerate(obj))
    return None


def _bad_string_reason(s: str) -> str:
    if "\x00" in s:
        return "contains a NUL character (\\u0000), which no system call can take"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate (\\u{ord(s[e.start]):04x}), which is not Unicode"
    return ""


def _json_path(parts: tuple) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def load_bundle(bundle: str, validate: bool = True, doc: object = None) -> Config:
    """Read (unless the caller already did: `doc`), schema-check and parse `<bundle>/config.json`."""
    bundle = os.path.abspath(bundle)
    problem = _not_a_directory(bundle)
    if problem:
        raise OCIError(f"bundle {bundle}: {problem}")
    if doc is None:
        doc = read_json(os.path.join(bundle, "config.json"))
    if validate:
        from .schema import validate_config
        validate_config(doc)
    cfg = parse_config(doc, bundle)
    problem = _not_a_directory(cfg.root_path)
    if problem:
        raise ConfigError("root.path", f"{cfg.root_path}: {problem}")
    return cfg


def _not_a_directory(path: str) -> str | None:
    """Why `path` is not a directory we can use, in the kernel's words (a rootless user's
    "permission denied" is not "no such directory"); None when it is one."""
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return None
    except OSError as e:
        return os_words(e) if not isinstance(e, FileNotFoundError) else "no such directory"
    return "not a directory"
