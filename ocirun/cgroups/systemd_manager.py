"""The systemd cgroup driver (`--systemd-cgroup`): the container's cgroup as a transient scope.

On a host that boots systemd, systemd owns the cgroup tree: a cgroup it did not make is
moved, trimmed or has its limits reset on its next reload.  So, like runc, we ask systemd for
the container's cgroup: a transient scope unit "<prefix>-<name>.scope" in the slice that
`linux.cgroupsPath` ("slice:prefix:name") names, with `Delegate=yes` (the files below it are
ours) and the limits it understands as unit properties (systemd.py).  Everything else is the
cgroupfs driver's code, run on the scope's directory: the same resource files, freezer,
cgroup.kill, eBPF device filter, clone3 into the cgroup for `exec`.

The order, in `create`:

    create()            check that systemd runs; build (and so check) the unit properties
    apply_resources()   deferred: the scope's directory does not exist yet
    join_plan()         a join whose finish_in_parent(pid) starts the scope with the
                        intermediate process in it (systemd moves it there), waits for the
                        job, checks the cgroup it landed in, then writes the resource files
    destroy()           SIGKILL what is left through cgroup.kill, StopUnit, ResetFailedUnit

A scope cannot be started empty, so it is started with the first process of the container,
which has not yet forked the init: the init is born in the scope.

Supported on unified (pure cgroup v2) hosts; on a v1 or hybrid host `--systemd-cgroup` is
refused with a line that says so (see the README's status table).
"""
from __future__ import annotations

import os
import time

from ..errors import OCIError
from . import systemd
from .manager import Manager, SIGKILL
from .detect import UNIFIED_KEY

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (ARCHITECTURE.md, Startup speed)
if TYPE_CHECKING:
    from .dbus import Systemd

EMPTY_WAIT_S = 10.0


class SystemdManager(Manager):
    """A `Manager` whose one cgroup2 directory is a transient scope that systemd makes."""

    def __init__(self, paths: dict[str, str], mounts: dict[str, str], unit: systemd.Unit,
                 resources: dict | None = None, warn=None, bus: str = "system",
                 container_id: str = "", annotations: dict | None = None, started: bool = True):
        super().__init__("unified", paths, mounts, [], resources, warn)
        self.unit = unit
        self.bus = bus
        self.container_id = container_id
        self.annotations = annotations or {}
        self.started = started     # False from manager_for until the scope exists
        self._systemd: Systemd | None = None  # connected on first use
        self._unit_props: list | None = None

    @property
    def dir(self) -> str:
        return self.paths[UNIFIED_KEY]

    def _bus(self) -> Systemd:
        if self._systemd is None:
            from .dbus import Systemd
            self._systemd = Systemd(self.bus)
        return self._systemd

    # ------------------------------------------------------------------ create

    def plan(self) -> None:
        self.created = []  # systemd makes the scope's directory and removes it

    def create(self) -> None:
        """Connect to systemd and build the unit's properties, so that a bad annotation or
        resource is refused before any process exists.  The scope itself comes with the
        first process (`join_plan`)."""
        bus = self._bus()
        state = bus.unit_state(self.unit.name)
        if state not in (None, "inactive", "failed"):
            raise OCIError(f"systemd unit {self.unit.name} already exists ({state}): another container "
                           "with this cgroupsPath?")
        res = _copy_resources(self.resources)
        self._unit_props = (systemd.resource_properties(res, bus.version())
                            + self._device_properties(res)
                            + systemd.annotation_properties(self.annotations))
        self.resources = res  # the CPU quota as systemd rounds it (systemd.resource_properties)
        if self.defer_single_pid_limit and (res.get("pids") or {}).get("limit") == 1:
            # The scope starts around the intermediate, which then forks the init: TasksMax=1
            # would refuse that fork.  Two until the intermediate is gone (after_intermediate).
            self._unit_props = [("TasksMax", ("t", 2)) if name == "TasksMax" else (name, value)
                                for name, value in self._unit_props]

    def apply_resources(self, update: bool = False) -> list[str]:
        if not self.started:
            return []  # start_scope() writes them, once the directory exists
        if not update:
            return super().apply_resources()
        # `update`: the files first (they are what the kernel enforces now), then the unit's
        # properties, so that a later daemon-reload keeps the new values.
        res = _copy_resources(self.resources)
        self._complete_cpu_quota(res)
        props = systemd.resource_properties(res, self._bus().version())  # no devices (Manager.apply_resources)
        self.resources = res
        skipped = super().apply_resources(update=True)
        self._bus().set_properties(self.unit.name, props)
        return skipped

    def _complete_cpu_quota(self, res: dict) -> None:
        """`update --cpu-period` alone (or `--cpu-quota` alone): systemd takes the quota as a
        share of a second, so it needs both; the missing one is the scope's current value,
        as the cgroupfs code keeps it (never "unlimited" because a field was left out)."""
        cpu = res.get("cpu")
        if not isinstance(cpu, dict) or bool(cpu.get("quota")) == bool(cpu.get("period")):
            return
        try:
            with open(f"{self.dir}/cpu.max") as f:
                quota, period = (f.read().split() + ["max", "100000"])[:2]
        except OSError:
            return
        if not cpu.get("quota"):
            cpu["quota"] = -1 if quota == "max" else int(quota)
        if not cpu.get("period"):
            cpu["period"] = int(period)

    def _device_properties(self, res: dict) -> list:
        if self.rootless:
            return []  # a user's systemd cannot filter devices either (no eBPF without privilege)
        from .devices import policy_for
        return systemd.device_properties(policy_for(res.get("devices"))) or [
            ("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]

    def _apply_devices(self, rules) -> None:
        if self.rootless:
            return
        from . import v2
        from .devices import policy_for
        # On a fresh scope systemd has just attached its own filter (the same policy, in its
        # words): ours goes beside it.  Written again to a scope that already runs (never by
        # `update`, which leaves devices alone), ours replaces every filter there.
        v2.apply_devices(policy_for(rules), self._dir_for, replace=self._fresh is False)

    _fresh = False

    def after_intermediate(self) -> None:
        pending = self.pids_limit_pending
        super().after_intermediate()  # pids.max
        if pending:
            self._bus().set_properties(self.unit.name, [("TasksMax", ("t", 1))])  # kept by daemon-reload

    def join_plan(self, sub: dict[str, str] | None = None):
        if not self.started:
            return _ScopeJoin(self)
        if self.rootless:
            return _AttachJoin(self, sub)
        return super().join_plan(sub)

    def add_pid(self, pid: int, sub: dict[str, str] | None = None) -> None:
        if self.rootless:
            self.attach(pid, sub)
        else:
            super().add_pid(pid, sub)

    def attach(self, pid: int, sub: dict[str, str] | None = None) -> None:
        """Have systemd move `pid` into the scope (or a sub-cgroup of it).  A rootless caller
        cannot: moving a process needs write access where its old and new cgroups meet, which
        for a user is above their delegated subtree; systemd (≥ 238) does it for them, as runc
        asks it to."""
        rel = self._sub_paths(sub).get(UNIFIED_KEY, "")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise OCIError(f"--cgroup {rel!r}: must name a sub-cgroup inside the container's cgroup")
        try:
            self._bus().call("AttachProcessesToUnit", "ssau", (self.unit.name, "/" + "/".join(parts), [pid]))
        except OCIError as e:
            raise OCIError(f"cgroup: systemd could not move pid {pid} into {self.unit.name}: {e}") from None

    def adopt(self, pid: int) -> None:
        """The scope is started around a process that already runs (restore's CRIU)."""
        self.start_scope(pid)

    def start_scope(self, pid: int) -> None:
        """Start the scope with `pid` in it, check where it landed, write the limits."""
        if self._unit_props is None:
            self.create()
        from .dbus import UnitExists
        props = systemd.base_properties(self.container_id, self.unit, pid) + list(self._unit_props or [])
        try:
            self._bus().start_transient_unit(self.unit.name, props)
        except UnitExists:
            raise  # someone else's: `destroy` must leave it alone
        except BaseException:
            self.started = True  # a job was queued (or may have been): destroy() stops it
            raise
        self.started = True
        self._fresh = True
        try:
            landed = _cgroup_of(pid)
            expected = self.dir[len(self.mounts[UNIFIED_KEY]):] or "/"
            if landed is not None and landed != expected:
                raise OCIError(f"systemd put the container's process in {landed}, not in {expected} "
                               f"(unit {self.unit.name})")
            super().apply_resources()
        finally:
            self._fresh = False

    # ------------------------------------------------------------------ removal

    def destroy(self) -> None:
        """Kill what is left, have systemd stop the scope (it removes the directory), forget a
        failed one; then remove whatever is still there the cgroupfs way."""
        if not self.started:
            return  # create failed before there was a scope (or the unit was someone else's)
        if os.path.isdir(self.dir):
            self._kill_and_wait_empty()
        try:
            self._bus().stop_unit(self.unit.name)
        except OCIError as e:
            if os.path.isdir(self.dir):
                raise
            self.warning(f"systemd: {e}")  # the scope's cgroup is gone all the same
        super().destroy()

    def _kill_and_wait_empty(self) -> None:
        """A scope's stop sends SIGTERM and waits TimeoutStopSec (90 s by default) before
        SIGKILL; the container is being deleted, so SIGKILL it ourselves first."""
        deadline = time.monotonic() + EMPTY_WAIT_S
        delay = 0.001
        while self.pids() and time.monotonic() < deadline:
            self.kill_all(SIGKILL)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict:
        d = super().to_state()
        d.update(driver="systemd", unit=self.unit.name, slice=self.unit.slice, bus=self.bus)
        return d

    def __repr__(self) -> str:
        return f"SystemdManager({self.unit!r}, {self.dir!r})"


class _ScopeJoin:
    """cgroups/join.py's Join for the create of a systemd container: no clone3 into a cgroup
    (none exists yet); the parent's `finish_in_parent(pid)` starts the scope around `pid`."""

    def __init__(self, manager: SystemdManager) -> None:
        self.manager = manager
        self.v1_dirs: list[str] = []
        self.v2_dir = None
        self.v2_pending = False

    def enter_v1(self) -> None:
        pass

    def finish_in_parent(self, pid: int) -> None:
        self.manager.start_scope(pid)


class _AttachJoin(_ScopeJoin):
    """The join for a rootless `exec`: a plain fork, then systemd moves the process (attach)."""

    def __init__(self, manager: SystemdManager, sub: dict[str, str] | None) -> None:
        super().__init__(manager)
        self.sub = sub

    def finish_in_parent(self, pid: int) -> None:
        self.manager.attach(pid, self.sub)


def _copy_resources(res: dict) -> dict:
    """A copy whose sections may be changed (the CPU quota rounding) without touching the config."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in res.items()}


def _cgroup_of(pid: int) -> str | None:
    """The cgroup2 path of `pid` ("0::/system.slice/x.scope"), None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def manager_for(container_id: str, cgroups_path: str, resources: dict | None, annotations: dict | None,
                warn=None, rootless: bool = False) -> SystemdManager:
    """The systemd driver's manager for a new container (paths only; nothing is made).

    Rootless, the scope is the user's own systemd's (`systemd --user`, over the session bus):
    its slices live below the user manager's cgroup
    (/user.slice/user-UID.slice/user@UID.service), and an empty slice means user.slice."""
    from .dbus import systemd_running
    from .detect import cgroup_mode, hierarchies
    if not systemd_running():
        raise OCIError("--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); "
                       "use the cgroupfs driver (no --systemd-cgroup)")
    mode = cgroup_mode()
    if mode != "unified":
        raise OCIError(f"--systemd-cgroup: this runtime drives systemd on pure cgroup v2 hosts only "
                       f"(this host's cgroups are {mode}); use the cgroupfs driver")
    unit = systemd.unit_for(container_id, cgroups_path, systemd.USER_SLICE if rootless else systemd.DEFAULT_SLICE)
    mount = hierarchies()[UNIFIED_KEY].mountpoint.rstrip("/")
    bus = "user" if rootless else "system"
    base = ""
    systemd_bus: Systemd | None = None
    if rootless:
        from .dbus import Systemd
        systemd_bus = Systemd(bus)
        base = systemd_bus.manager_cgroup().rstrip("/")
    paths = {UNIFIED_KEY: mount + base + unit.cgroup()}
    m = SystemdManager(paths, {UNIFIED_KEY: mount}, unit, dict(resources or {}), warn, bus,
                       container_id=container_id, annotations=annotations, started=False)
    m._systemd = systemd_bus
    m.rootless = rootless
    return m


def load(d: dict, base: Manager, warn=None) -> SystemdManager:
    """Rebuild from `to_state()`: `base` is the cgroupfs manager load_manager checked."""
    unit, slice_, bus = d.get("unit"), d.get("slice"), d.get("bus", "system")
    if not isinstance(unit, str) or not isinstance(slice_, str) or bus not in ("system", "user") \
            or set(base.paths) != {UNIFIED_KEY}:
        raise OCIError("state.json: the systemd cgroup section is malformed")
    # A tampered state must not make `delete` stop some other unit: only a scope whose cgroup
    # is the directory recorded beside it.
    try:
        where = systemd.Unit(slice_, unit).cgroup()
    except OCIError:
        where = None
    if not (unit.endswith(".scope") and systemd.valid_unit_text(unit) and where
            and base.paths[UNIFIED_KEY].endswith(where)):
        raise OCIError(f"state.json: systemd unit {unit!r} does not match the recorded cgroup")
    m = SystemdManager(base.paths, base.mounts, systemd.Unit(slice_, unit), {}, warn, bus)
    m.shared = base.shared
    m.rootless = base.rootless
    return m
