"""A runtime-spec (v1.2.0) conformance suite that judges any runtime with runc's CLI.

`python -m conformance --runtime PATH` builds its own bundles, drives the runtime only through
its command line (create/start/state/kill/delete, plus `features`), and checks the results from
outside (state JSON, exit codes, host cgroup files, files written to a bind-mounted directory)
and from inside (busybox shell commands).  Each check cites the spec clause it enforces; see
framework.py for the registry and README.md for usage.
"""

# The modules that register checks, in the order their checks run.
CHECK_MODULES = [
    "lifecycle", "hooks", "config_process", "config_mounts", "namespaces", "linux_misc",
    "devices", "cgroups", "seccomp", "features",
]


def load_checks():
    """Import every check module (registering its checks) and return the registry."""
    import importlib
    from .framework import REGISTRY
    for name in CHECK_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return REGISTRY
