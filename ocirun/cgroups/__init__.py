"""The container's cgroups (cgroupfs driver; v1, hybrid and unified hosts).

    m = manager_for(container_id, linux.cgroupsPath, linux.resources)   # paths only
    m.create(); m.apply_resources(); m.add_pid(pid)      # apply_resources(update=True) for `update`
    m.pids(); m.kill_all(sig); m.freeze(); m.thaw(); m.state(); m.destroy()
    load_manager(m.to_state())                                         # in a later process

detect.py   which layout the host has, where the hierarchies are, our own cgroup
paths.py    linux.cgroupsPath -> one directory per hierarchy (runc's cgroupfs rules)
fs.py       cgroupfs file helpers (writes that name the config field on failure)
v1.py       v1 resource files, cpuset preparation, v1 freezer
v2.py       v2 controller enabling, resource files (with v1->v2 conversions), freeze, kill
manager.py  the Manager tying them together, its state for state.json
freezer.py  where the freezer is and whether it is frozen (light: for status checks)
join.py     new processes into the cgroup without the kernel's slow path (clone3, v1 self-move)
devices.py  device rules -> one policy (runc's emulator + default devices); v1 transitions
ebpf.py     the v2 device filter: BPF_PROG_TYPE_CGROUP_DEVICE built in Python, bpf(2) through linux.syscall
stats.py    usage in runc's `events --stats` JSON shape; the OOM-kill counter
"""
__all__ = ["Manager", "cgroup_mode", "load_manager", "manager_for"]


def __getattr__(name: str):
    """The names above, loaded on first use: `import ocirun.cgroups.freezer` alone must not
    pull in the manager and every resource writer."""
    if name == "cgroup_mode":
        from .detect import cgroup_mode
        return cgroup_mode
    if name in ("Manager", "load_manager", "manager_for"):
        from . import manager
        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
