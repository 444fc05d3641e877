"""The container's cgroup across every hierarchy: create, limit, join, signal, freeze, remove.

One `Manager` covers the three host layouts, because they differ only in which directories
exist and which files do the work:

* legacy (v1 only): one directory per mounted hierarchy; limits and freezer in v1 files.
* hybrid: the same, plus a directory in the cgroup2 tree (/sys/fs/cgroup/unified).  Limits
  stay in v1 (the cgroup2 tree has no v1 controllers); pause, resume and SIGKILL use the
  cgroup2 directory (cgroup.freeze / cgroup.kill), which are race-free where v1's are not.
* unified (v2 only): one directory; controllers enabled down the tree; everything in v2 files.

What we create is remembered (`created`: `plan()` lists it before the first mkdir, so that a
create killed half-way is recorded too), and `to_state()` / `load_manager()` carry it to a
later `kill` / `delete` process: `destroy()` removes the container's own directory and
everything below it, and of its ancestors only those this runtime made, when they are empty.

A cgroup that already holds processes is used as runc does, with its warning (kubelet and
systemd setups place processes first); it is then `shared`: `destroy()` kills nothing by cgroup
there and leaves the directory if someone else's processes still hold it.
"""
from __future__ import annotations

import os
import time

from ..errors import ConfigError, OCIError, os_words
from . import freezer, fs, v1, v2
from .detect import CGROUP_ROOT, UNIFIED_KEY, cgroup_mode, hierarchies
from .paths import check_dirs, container_dirs, inner_path

SIGKILL = 9  # not via the signal module: it imports enum, a few ms on the hot path
STATE_VERSION = 1
DESTROY_TIMEOUT_S = 10.0

# Every field of linux.resources we know, with its JSON type (checked before anything is
# written); an unknown one with a value is reported through `warn`, not silently dropped.
FIELDS: dict[str, dict[str, str]] = {
    "memory": {"limit": "int", "reservation": "int", "swap": "int", "kernel": "int", "kernelTCP": "int",
               "swappiness": "int", "disableOOMKiller": "bool", "useHierarchy": "bool",
               "checkBeforeUpdate": "bool"},
    "cpu": {"shares": "int", "quota": "int", "burst": "int", "period": "int", "realtimeRuntime": "int",
            "realtimePeriod": "int", "cpus": "str", "mems": "str", "idle": "int"},
    "pids": {"limit": "int"},
    "blockIO": {"weight": "int", "leafWeight": "int", "weightDevice": "list",
                "throttleReadBpsDevice": "list", "throttleWriteBpsDevice": "list",
                "throttleReadIOPSDevice": "list", "throttleWriteIOPSDevice": "list"},
    "network": {"classID": "int", "priorities": "list"},
}
TOP_LEVEL = {"devices": list, "hugepageLimits": list, "rdma": dict, "unified": dict}
# Sections whose controller, on a hybrid host, may live in the cgroup2 tree instead of v1.
SECTION_CONTROLLER = {"memory": "memory", "cpu": "cpu", "pids": "pids", "blockIO": ("blkio", "io"),
                      "hugepageLimits": "hugetlb", "rdma": "rdma", "network": None}
_JSON_TYPES = {"int": (int,), "str": (str,), "bool": (bool,), "list": (list,)}


class Manager:
    def __init__(self, mode: str, paths: dict[str, str], mounts: dict[str, str],
                 created: list[str] | None = None, resources: dict | None = None, warn=None):
        self.mode = mode            # 'unified' | 'hybrid' | 'legacy'
        self.paths = paths          # hierarchy key ("memory", "cpu,cpuacct", "" = cgroup2) -> container dir
        self.mounts = mounts        # hierarchy key -> its mountpoint
        self.created = created if created is not None else []  # dirs we made, in mkdir order
        self.resources = resources or {}
        self.warn = warn
        self.shared = False         # create() found processes already in the cgroup (not ours)
        # Rootless: no device filter (loading eBPF needs privilege the caller lacks; and a user
        # namespace can make no device nodes: the container has only the host's, bind-mounted).
        self.rootless = False
        # `create` sets this: a pids limit of 1 then waits until its intermediate is gone
        # (after_intermediate); `restore` and `update` write it at once.
        self.defer_single_pid_limit = False
        self.pids_limit_pending = False

    # ------------------------------------------------------------------ lookups

    def path(self, controller: str) -> str | None:
        """The container's directory for a v1 controller (or "" for the cgroup2 one), or None."""
        if controller in self.paths:
            return self.paths[controller]
        for key, p in self.paths.items():
            if controller in key.split(","):
                return p
        return None

    def _dir_for(self, controller: str, field: str) -> str:
        """The directory whose files carry `controller` ("" = the cgroup2 directory itself)."""
        u = self.paths.get(UNIFIED_KEY)
        if controller == UNIFIED_KEY and u is not None:
            return u
        if self.mode != "unified":
            d = self.path(controller)
            if d is not None:
                return d
        if u is not None and controller in v2.available(u):
            return u
        raise ConfigError(field, f"the {controller} controller is not available")

    def _freezer(self) -> tuple[str, str] | None:
        """('v2', dir) when cgroup.freeze exists (unified, hybrid), else ('v1', dir), else None."""
        return freezer.locate(self.mode, self.paths)

    # ------------------------------------------------------------------ lifecycle

    def check_not_frozen(self) -> None:
        """Refuse a cgroupsPath whose cgroup (or the nearest existing ancestor, which a new child
        inherits it from) is frozen: the init would stop on its first step and create would wait
        for it forever.  runc: "container's cgroup unexpectedly frozen".  Called before any mkdir,
        so that nothing is left to undo."""
        for key, leaf in self.paths.items():
            kind = "v2" if key == UNIFIED_KEY else "v1" if "freezer" in key.split(",") else None
            if kind is None:
                continue
            d = _deepest_existing(self.mounts[key], leaf)
            if d != self.mounts[key] and freezer.is_frozen(kind, d):
                raise ConfigError("linux.cgroupsPath", f"the container's cgroup {d} is frozen (its process "
                                  "could never run): thaw it or choose another cgroup")

    def writable(self) -> bool:
        """Can this process make (or use) the container's cgroup in every hierarchy?  For a
        rootless caller: only where the cgroup was delegated to them."""
        for key, leaf in self.paths.items():
            d = _deepest_existing(self.mounts[key], leaf)
            target = f"{d}/cgroup.procs" if d == leaf else d
            if not os.access(target, os.W_OK):
                return False
        return True

    def limits_asked(self) -> list[str]:
        """The linux.resources fields that ask for a limit (device rules aside: a rootless
        container cannot make device nodes anyway)."""
        out = []
        for section, value in self.resources.items():
            if section == "devices":
                continue
            if isinstance(value, dict):
                out += [f"linux.resources.{section}.{k}" for k, v in value.items() if _meaningful(v)]
            elif _meaningful(value):
                out.append(f"linux.resources.{section}")
        return out

    def plan(self) -> None:
        """Record, before the first mkdir, every directory create() will make (saved in the state
        so that a create killed half-way is undone by `delete --force`)."""
        self.created = [d for key, leaf in self.paths.items() for d in _missing(self.mounts[key], leaf)]

    def create(self) -> None:
        """mkdir the container's cgroup in every hierarchy; idempotent."""
        self._note_busy()
        made: list[str] = []
        for key, leaf in self.paths.items():
            mount = self.mounts[key]
            try:
                fs.mkdirs(mount, leaf, made)
            except OSError as e:
                raise OCIError(f"cgroup: creating {leaf}: {os_words(e)}") from None
            if key != UNIFIED_KEY and "cpuset" in key.split(","):
                v1.prepare_cpuset(mount, leaf)
            if key == UNIFIED_KEY and self.mode == "unified":
                v2.enable_controllers(mount, leaf)
        self.created = made  # exactly what we made (plan() may have counted one someone else made since)

    def _note_busy(self) -> None:
        """A pre-existing cgroup that holds processes: warn as runc does and go on (kubelet and
        systemd setups put processes there first), but remember that they are not ours."""
        pids: set[int] = set()
        for leaf in self.paths.values():
            if leaf not in self.created and os.path.isdir(leaf):
                pids.update(fs.procs(leaf))
        if pids:
            self.shared = True
            self.warning(f"container's cgroup is not empty: {len(pids)} process(es) found")

    def apply_resources(self, update: bool = False) -> list[str]:
        """Write linux.resources; returns (and passes to `warn`) the fields left unapplied.

        On create (`update=False`) the device policy is always written: with no rules at all
        it is runc's (deny everything but the default devices).  On `update` only the sections
        given are touched, and 0 means "leave as is" (what docker sends for unchanged values);
        the device rules never are, as runc never does: containerd's CRI sends the create-time
        list with every update, and rules added since by a hook (NVIDIA's, for a GPU) would be
        dropped.
        """
        res = self.resources
        check_types(res)
        warn = self.warning
        skipped = [f"linux.resources.{k}" for k, v in res.items()
                   if k not in FIELDS and k not in TOP_LEVEL and _meaningful(v)]
        for section, keys in FIELDS.items():
            sec = res.get(section)
            if sec:
                skipped += [f"linux.resources.{section}.{k}" for k, v in sec.items()
                            if k not in keys and _meaningful(v)]
        if isinstance(res.get("memory"), dict):
            self._apply_memory(res["memory"], update)
        if isinstance(res.get("cpu"), dict):
            self._impl("cpu").apply_cpu(res["cpu"], self._dir_for)
        if isinstance(res.get("pids"), dict):
            if not update and self.defer_single_pid_limit and res["pids"].get("limit") == 1:
                # The intermediate and the init it forks are both in the cgroup for a moment:
                # a limit of one would refuse the init's birth.  Written once the intermediate
                # is gone (runc writes its limits at that point too).
                self.pids_limit_pending = True
            else:
                self._impl("pids").apply_pids(res["pids"], self._dir_for)
        if res.get("blockIO"):
            self._impl("blockIO").apply_block_io(res["blockIO"], self._dir_for, warn)
        if res.get("hugepageLimits"):
            self._impl("hugepageLimits").apply_hugetlb(res["hugepageLimits"], self._dir_for, warn)
        if res.get("rdma"):
            self._impl("rdma").apply_rdma(res["rdma"], self._dir_for, warn)
        if res.get("network"):
            (v2 if self.mode == "unified" else v1).apply_network(res["network"], self._dir_for, warn)
        if not update:
            self._apply_devices(res.get("devices"))
        if res.get("unified"):
            self._apply_unified(res["unified"])
        if skipped:
            warn("cgroup: not applied (unknown fields): " + ", ".join(skipped))
        return skipped

    def warning(self, msg: str) -> None:
        if self.warn is not None:
            self.warn(msg)
        else:
            from .. import log
            log.get().warn(msg)

    def _impl(self, section: str):
        """v2 on unified hosts; v1 elsewhere, except on a hybrid host for a controller that only the
        cgroup2 tree offers (hugetlb on this kind of host)."""
        if self.mode == "unified":
            return v2
        ctrl = SECTION_CONTROLLER.get(section)
        v1_name, v2_name = ctrl if isinstance(ctrl, tuple) else (ctrl, ctrl)
        if (self.mode == "hybrid" and v1_name and self.path(v1_name) is None
                and v2_name in v2.available(self.paths.get(UNIFIED_KEY, ""))):
            return v2
        return v1

    def _apply_memory(self, mem: dict, update: bool) -> None:
        impl = self._impl("memory")
        limit = mem.get("limit") or 0
        if mem.get("checkBeforeUpdate") and limit > 0:
            d = self._dir_for("memory", "linux.resources.memory.checkBeforeUpdate")
            try:
                usage = impl.memory_usage(d)
            except (OSError, ValueError):
                usage = 0
            if usage > limit:
                raise ConfigError("linux.resources.memory.limit",
                                  f"rejecting memory limit {limit} below the current usage {usage} "
                                  "(checkBeforeUpdate)")
        impl.apply_memory(mem, self._dir_for)
        impl.apply_memory_extras(mem, self._dir_for, self.warning)

    def _apply_devices(self, rules) -> None:
        if self.rootless:
            return
        from .devices import policy_for
        policy = policy_for(rules)
        if self.mode == "unified":
            v2.apply_devices(policy, self._dir_for)
        elif self.path("devices") is not None:
            v1.apply_devices(policy, self._dir_for)
        elif rules:
            raise ConfigError("linux.resources.devices", "the devices controller is not available")

    def _apply_unified(self, unified: dict) -> None:
        if self.mode == "legacy" or UNIFIED_KEY not in self.paths:
            raise ConfigError("linux.resources.unified", "cannot be used on a cgroup v1 host")
        v2.apply_unified(unified, self.paths[UNIFIED_KEY])

    def after_intermediate(self) -> None:
        """`create`'s intermediate process has exited: only the init is in the cgroup now."""
        if self.pids_limit_pending:
            self.pids_limit_pending = False
            self._impl("pids").apply_pids(self.resources["pids"], self._dir_for)

    def add_pid(self, pid: int, sub: dict[str, str] | None = None) -> None:
        """Move `pid` into the container's cgroup in every hierarchy — or, for `exec --cgroup`,
        into an existing sub-cgroup of it: `sub` maps a hierarchy key ("*" for all) to a path
        relative to the container's cgroup."""
        rels = self._sub_paths(sub)
        for key, leaf in self.paths.items():
            if rels.get(key):
                leaf = _sub_cgroup(leaf, rels[key])
            try:
                fs.write(f"{leaf}/cgroup.procs", str(pid))
            except OSError as e:
                raise OCIError(f"cgroup: adding pid {pid} to {leaf}: {os_words(e)}") from None

    def adopt(self, pid: int) -> None:
        """Make the cgroup around a process that already runs, write the limits and move it in.
        `restore` puts CRIU there, so that the processes it restores start inside."""
        self.create()
        self.apply_resources()
        self.add_pid(pid)

    def pids_room(self) -> int | None:
        """How many more processes the pids controller lets the container start; None when it
        sets no limit (or there is no pids controller)."""
        d = self.paths.get(UNIFIED_KEY) if self.mode == "unified" else self.path("pids")
        if d is None:
            return None
        try:
            limit = fs.read(f"{d}/pids.max")
            current = fs.read(f"{d}/pids.current")
        except OSError:
            return None
        return None if limit == "max" else int(limit) - int(current)

    def join_plan(self, sub: dict[str, str] | None = None):
        """A `join.Join` for a new process (see join.py: no cgroup.procs write, no kernel
        grace period); `sub` as for add_pid."""
        from .join import Join
        v1_dirs, v2_dir = [], None
        rels = self._sub_paths(sub)
        for key, leaf in self.paths.items():
            if rels.get(key):
                leaf = _sub_cgroup(leaf, rels[key])
            if key == UNIFIED_KEY:
                v2_dir = leaf
            else:
                v1_dirs.append(leaf)
        return Join(v1_dirs, v2_dir)

    def _sub_paths(self, sub: dict[str, str] | None) -> dict[str, str]:
        """`exec --cgroup`'s {controller, "*" (all) or "" (cgroup2): path} as {hierarchy key:
        path}.  A v1 controller names the hierarchy it is mounted in (cpu → "cpu,cpuacct");
        on a pure v2 host every name means the one tree.  A controller the container has no
        hierarchy for is refused (runc too): it was ignored, and the process ran elsewhere."""
        if not sub:
            return {}
        out = dict.fromkeys(self.paths, sub.get("*", ""))
        sub_given: set[str] = set()
        for name, rel in sub.items():
            if name == "*":
                continue
            if self.mode == "unified":
                keys = [UNIFIED_KEY] if name == UNIFIED_KEY or name in self._v2_controllers() else []
            else:
                keys = [k for k in self.paths if k == name or name in k.split(",")]
            if not keys:
                raise OCIError(f"--cgroup {name}:{rel}: the container has no cgroup for controller {name!r}")
            for key in keys:
                if self.mode == "unified" and key in sub_given and out[key] != rel:
                    raise OCIError(f"--cgroup: {out[key]!r} and {rel!r} for one cgroup v2 tree: give one path")
                out[key] = rel
                sub_given.add(key)
        return out

    def _v2_controllers(self) -> list[str]:
        """The controllers enabled in the container's cgroup (pure v2)."""
        try:
            return fs.read(f"{self.paths[UNIFIED_KEY]}/cgroup.controllers").split()
        except (OSError, KeyError):
            return []

    def pids(self) -> list[int]:
        """Every pid in the container's cgroup tree, in any hierarchy (sorted, no duplicates)."""
        seen: set[int] = set()
        for leaf in self.paths.values():
            seen.update(fs.procs(leaf))
        return sorted(seen)

    def kill_all(self, sig: int) -> None:
        """Send `sig` to every process of the container."""
        if sig == SIGKILL and UNIFIED_KEY in self.paths and os.path.isdir(self.paths[UNIFIED_KEY]):
            v2.kill(self.paths[UNIFIED_KEY])  # atomic against forks; the loop below catches the rest
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except OSError as e:
                raise OCIError(f"kill: pid {pid}: {os_words(e)}") from None
        if sig == SIGKILL and self.state() == "paused":
            self.thaw()  # a v1-frozen task only dies once thawed

    # ------------------------------------------------------------------ freezer

    def freeze(self) -> None:
        fz = self._freezer()
        if fz is None:
            raise OCIError("pause: no freezer cgroup is available")
        if fz[0] == "v2":
            v2.set_frozen(fz[1], True, "pause")
        else:
            v1.freeze(fz[1])

    def thaw(self) -> None:
        fz = self._freezer()
        if fz is None:
            raise OCIError("resume: no freezer cgroup is available")
        if fz[0] == "v2":
            v2.set_frozen(fz[1], False, "resume")
        else:
            v1.thaw(fz[1])

    def state(self) -> str:
        """'paused' if the freezer says the tree is frozen, else 'running' (also when it is gone)."""
        return "paused" if freezer.paused(self.mode, self.paths) else "running"

    # ------------------------------------------------------------------ removal

    def destroy(self) -> None:
        """SIGKILL what is left, wait for the tree to empty, rmdir it (and ancestors we made)."""
        if not any(os.path.isdir(p) for p in self.paths.values()) and not self._leftover_created():
            return
        if self.shared:
            self._remove_shared()
        elif not all(fs.rmdir(d) for d in self.paths.values()):
            # The usual case is the line above (no process, no sub-cgroup left: one rmdir per
            # directory, nothing read first); the kernel refused one: kill and wait.
            deadline = time.monotonic() + DESTROY_TIMEOUT_S
            self._kill_until_empty(deadline)
            busy = self._remove_dirs(deadline)
            if busy:
                raise OCIError(f"delete: cgroup {busy} could not be removed (still busy; pids {self.pids()})")
        self._remove_created_ancestors()

    def _remove_shared(self) -> None:
        """A cgroup that held processes before the container came: remove what is empty, kill
        nothing (runc leaves it too, with an error line; the processes are not ours)."""
        for leaf in self.paths.values():
            for d in fs.subdirs_bottom_up(leaf) + [leaf]:
                if not fs.rmdir(d):
                    self.warning(f"cgroup {d} still holds processes that are not the container's: left in place")
                    break

    def _remove_created_ancestors(self) -> None:
        """The parents create made, deepest first, each only if empty: a busy one holds another
        container's cgroup (a sibling under the same parent), which is not a failure."""
        leaves = set(self.paths.values())
        for d in sorted((p for p in self.created if p not in leaves), key=lambda p: p.count("/"), reverse=True):
            fs.rmdir(d)

    def _leftover_created(self) -> bool:
        return any(os.path.isdir(p) for p in self.created)

    def _kill_until_empty(self, deadline: float) -> None:
        delay = 0.001
        while True:
            if not self.pids():
                return
            self.kill_all(SIGKILL)
            if time.monotonic() > deadline:
                return  # _remove_dirs reports what is still there
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _remove_dirs(self, deadline: float) -> str | None:
        """rmdir leaves' subtrees and leaves; returns the first busy dir."""
        order: list[str] = []
        for leaf in self.paths.values():
            order += fs.subdirs_bottom_up(leaf) + [leaf]
        for d in order:
            delay = 0.001
            while not fs.rmdir(d):  # EBUSY right after the last task exits: the kernel lags a little
                if time.monotonic() > deadline:
                    return d
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        return None

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict:
        return {"version": STATE_VERSION, "mode": self.mode, "paths": dict(self.paths),
                "mounts": dict(self.mounts), "created": list(self.created), "shared": self.shared,
                "rootless": self.rootless}

    def __repr__(self) -> str:
        return f"Manager({self.mode!r}, {self.paths!r})"


def _meaningful(v) -> bool:
    """A value that asks for something (engines send empty lists and false defaults)."""
    return v not in (None, False, 0, "", [], {})


def check_types(resources) -> None:
    """Refuse a wrongly typed field before anything is written (the error names it)."""
    if not isinstance(resources, dict):
        raise ConfigError("linux.resources", "must be an object")
    for section, keys in FIELDS.items():
        sec = resources.get(section)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise ConfigError(f"linux.resources.{section}", "must be an object")
        for k, kind in keys.items():
            v = sec.get(k)
            if v is None:
                continue
            if not isinstance(v, _JSON_TYPES[kind]) or (kind == "int" and isinstance(v, bool)):
                raise ConfigError(f"linux.resources.{section}.{k}", f"must be {'an' if kind == 'int' else 'a'} "
                                  f"{ {'int': 'integer', 'str': 'string', 'bool': 'boolean', 'list': 'array'}[kind]}")
    for key, typ in TOP_LEVEL.items():
        v = resources.get(key)
        if v is not None and not isinstance(v, typ):
            raise ConfigError(f"linux.resources.{key}", "must be an " + ("array" if typ is list else "object"))


def manager_for(container_id: str, cgroups_path: str, resources: dict | None, warn=None,
                systemd: bool = False, annotations: dict | None = None, rootless: bool = False) -> Manager:
    """A manager for the container's cgroup; computes paths only (no side effects).

    `warn(msg)` (optional) receives a line about resources this module does not apply yet.
    `systemd`: the systemd driver (systemd_manager.py; `annotations` carry its unit properties;
    `rootless`: the user's own systemd instead of the system's).
    """
    if systemd:
        from . import systemd_manager
        return systemd_manager.manager_for(container_id, cgroups_path, resources, annotations, warn, rootless)
    inner = inner_path(container_id, cgroups_path or "")
    mode = cgroup_mode()
    hier = hierarchies()
    paths = container_dirs(inner, mode, hier)
    if not paths:
        raise OCIError(f"cgroup: no cgroup hierarchy is mounted under {CGROUP_ROOT}")
    mounts = {k: hier[k].mountpoint for k in paths}
    check_dirs(paths, mounts)
    return Manager(mode, paths, mounts, [], dict(resources or {}), warn)


def load_manager(d: dict, warn=None) -> Manager:
    """Rebuild a manager from `to_state()` (for kill, pause, resume, delete in a later process)."""
    try:
        mode, paths, mounts, created = d["mode"], d["paths"], d["mounts"], d.get("created", [])
        ok = (mode in ("unified", "hybrid", "legacy") and isinstance(paths, dict) and isinstance(mounts, dict)
              and isinstance(created, list) and set(paths) <= set(mounts)
              and all(isinstance(m, str) for m in mounts.values()))
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise OCIError("state.json: the cgroup section is malformed")
    # A tampered state file must not make delete rmdir (or kill) outside the cgroup trees.
    for p in list(paths.values()) + list(created):
        if not isinstance(p, str) or not _under_any(p, mounts.values()):
            raise OCIError(f"state.json: cgroup path {p!r} is outside the cgroup mounts")
    for m in mounts.values():
        if not (m + "/").startswith(CGROUP_ROOT + "/"):
            raise OCIError(f"state.json: cgroup mount {m!r} is outside {CGROUP_ROOT}")
    m = Manager(mode, dict(paths), dict(mounts), list(created), {}, warn)
    # "refused": older versions refused a busy cgroup and recorded that they never touched it
    m.shared = bool(d.get("shared", False) or d.get("refused", False))
    m.rootless = d.get("rootless") is True
    if d.get("driver") == "systemd":
        from . import systemd_manager
        return systemd_manager.load(d, m, warn)
    return m


def _missing(mount: str, leaf: str) -> list[str]:
    """The directories from `mount` down to `leaf` that do not exist yet, in mkdir order."""
    d = _deepest_existing(mount, leaf)
    rest = leaf[len(d):].strip("/")
    out = []
    for comp in rest.split("/") if rest else ():
        d = f"{d}/{comp}"
        out.append(d)
    return out


def _deepest_existing(mount: str, leaf: str) -> str:
    """`leaf` or its nearest existing ancestor (at worst `mount`)."""
    d = leaf
    while d != mount and len(d) > len(mount) and not os.path.isdir(d):
        d = os.path.dirname(d)
    return d if len(d) >= len(mount) else mount


def _under_any(p: str, mounts) -> bool:
    p = os.path.normpath(p)
    return any(p.startswith(m.rstrip("/") + "/") for m in mounts)


def _sub_cgroup(leaf: str, rel: str) -> str:
    """An existing cgroup below `leaf`; never a path that climbs out of it."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OCIError(f"--cgroup {rel!r}: must name a sub-cgroup inside the container's cgroup")
    if not parts:
        return leaf  # "/": the container's cgroup itself (runc takes it so too)
    path = os.path.join(leaf, *parts)
    if not os.path.isdir(path):
        raise OCIError(f"--cgroup {rel!r}: sub-cgroup {path} does not exist")
    return path
