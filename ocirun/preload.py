"""Load the modules an engine command is known to need straight from their byte-code caches.

Why: besides reading and running a module, each `import` runs ~50-100 µs of the import system's
own Python here (finders scanning sys.path, locks, specs, stat calls), and an engine command
imports 4 to 48 of our modules (measured: this saves ~4 ms of `run`, 1-3 ms of `exec`, ~1 ms of
`create`; bench/RESULTS.md, "Issue 19, fourth round").  `preload(command)` runs before the command (cli.main) and loads its list
below the way the import system would — the same `__pycache__` file, checked against its source
the same way, the module made by the import system's own `module_from_spec` — without the rest
of that machinery.  The lists are in the order
the imports *finish*, so when a module's body runs, what it imports is already in sys.modules
(the import statement's fast path).  The layout of the package stays what it is.

It only ever goes faster or stops: at the first thing that is not plain — a cache file that is
missing, stale (mtime or size), hash-based or from another Python, an `-O` interpreter, imports
being timed (`-X importtime`, PYTHONPROFILEIMPORTTIME) or traced (`-v`), a pycache prefix, a
module whose body raises — it undoes that module and returns, and the import system does the
rest exactly as it would have (it also rewrites a stale cache).  (With SOURCE_DATE_EPOCH set at
install, py_compile writes hash-based caches: then preload does nothing.)  Ctrl-C while a body runs is
undone and raised, as `import` would.  What it does not do: ask finders someone added to
sys.meta_path, or look for a compiled extension (`.so`) beside a listed `.py` (ours have none).
A stale list costs time, never behaviour: a module it lacks is imported as before, one it has
too many is loaded early (our module bodies only define things).
tests/integration/test_startup_imports.py runs each command for real and fails, printing the
list to paste, when a list here no longer matches what the command imports (give or take the
few modules only some hosts import).

It runs in the runtime's process, before any fork, pivot_root or setns; and it refuses to run
once `become.seal_imports()` has sealed a process's imports (inside a container, paths name the
container's files).
"""
from __future__ import annotations

import marshal
import sys

import _imp
import _io
from posix import environ, stat

# Loaded before preload() runs: by the `ocirun` script (cli.py and what it imports) and cli.main.
LOADED_BEFORE = ("ocirun", "ocirun.jsonio", "ocirun.log", "ocirun.errors", "ocirun.cli", "ocirun.preload")

# What each command imports after those, in the order the imports finish (names below
# `ocirun.`), recorded on a hybrid-cgroup host.  rootfs.paths, .mounts, .devices and .pivot
# finish before `rootfs` itself (its body imports them): preload() skips them, and the package's
# body loads them through the import system.
MODULES_BY_COMMAND: dict[str, tuple[str, ...]] = {
    "create": ("api", "record", "state", "create", "process", "linux", "config", "namespaces", "cgroups",
        "cgroups.fs", "cgroups.join", "kernel", "network", "sysctl", "mountinfo", "rootfs.paths",
        "rootfs.mounts", "rootfs.devices", "rootfs.pivot", "rootfs", "capabilities", "exechelper", "limits",
        "lsm", "user", "process.become", "process.channel", "process.context", "process.init",
        "process.intermediate", "process.reaping", "process.parent", "schema", "_schema_compiled",
        "rootfs.idmap", "rootless", "cgroups.freezer", "cgroups.v1", "cgroups.v2", "cgroups.detect",
        "cgroups.paths", "cgroups.manager", "cgroups.devices"),
    "start": ("api", "state", "start", "cgroups", "cgroups.freezer"),
    "state": ("api", "state", "cgroups", "cgroups.freezer"),
    "exec": ("api", "linux", "config", "record", "state", "exec_process", "foreground", "process",
        "namespaces", "kernel", "capabilities", "exechelper", "limits", "lsm", "user", "process.become",
        "process.channel", "process.joiner", "cgroups", "cgroups.fs", "cgroups.join", "process.reaping",
        "process.exec_parent", "cgroups.freezer", "cgroups.v1", "cgroups.v2", "mountinfo", "cgroups.detect",
        "cgroups.paths", "cgroups.manager", "pipes"),
    "kill": ("api", "state", "kill", "cgroups", "cgroups.freezer"),
    "delete": ("api", "state", "delete", "cgroups", "cgroups.freezer", "cgroups.fs", "cgroups.v1",
        "cgroups.v2", "mountinfo", "cgroups.detect", "cgroups.paths", "cgroups.manager"),
    "run": ("api", "record", "state", "create", "delete", "start", "foreground", "run", "linux", "config",
        "pipes", "process", "namespaces", "cgroups", "cgroups.fs", "cgroups.join", "kernel", "network",
        "sysctl", "mountinfo", "rootfs.paths", "rootfs.mounts", "rootfs.devices", "rootfs.pivot", "rootfs",
        "capabilities", "exechelper", "limits", "lsm", "user", "process.become", "process.channel",
        "process.context", "process.init", "process.intermediate", "process.reaping", "process.parent",
        "schema", "_schema_compiled", "rootfs.idmap", "rootless", "cgroups.freezer", "cgroups.v1",
        "cgroups.v2", "cgroups.detect", "cgroups.paths", "cgroups.manager", "cgroups.devices"),
}

_PACKAGE = __name__.rpartition(".")[0]  # "ocirun"
_ROOT = __file__.rpartition("/")[0]  # the package's directory
_bootstrap = sys.modules["_frozen_importlib"]  # the import system's own modules: always loaded
_external = sys.modules["_frozen_importlib_external"]


def preload(command: str) -> None:
    """Load `command`'s modules; any that this cannot load are left to the import system."""
    names = MODULES_BY_COMMAND.get(command)
    if not names or not _plain_interpreter():
        return
    for name in names:
        full = f"{_PACKAGE}.{name}"
        parent = sys.modules.get(full.rpartition(".")[0])
        if full in sys.modules or parent is None:
            # A submodule of a package not loaded yet is left to that package's body (it imports
            # it, rootfs/__init__.py does): a package is never made here before its body runs.
            continue
        if not _load(full, parent):
            return


def _plain_interpreter() -> bool:
    """Byte-code caches where the import system looks for them, nobody watching imports, and
    imports not sealed (become.seal_imports empties sys.path_hooks once a process is inside a
    container: nothing may be loaded from a path there, by the import system or by us)."""
    return (sys.flags.optimize == 0 and sys.pycache_prefix is None and not sys.flags.verbose
            and "importtime" not in sys._xoptions and bool(sys.path_hooks)
            and (bool(sys.flags.ignore_environment) or b"PYTHONPROFILEIMPORTTIME" not in environ))


def _load(full: str, parent) -> bool:
    rel = full[len(_PACKAGE) + 1:].replace(".", "/")
    # A package before a module of the same name, as the import system's path finder looks.
    source, is_package = f"{_ROOT}/{rel}/__init__.py", True
    try:
        st = stat(source)
    except OSError:
        source, is_package = f"{_ROOT}/{rel}.py", False
        try:
            st = stat(source)
        except OSError:
            return False
    directory, _, base = source.rpartition("/")
    cached = f"{directory}/__pycache__/{base[:-3]}.{sys.implementation.cache_tag}.pyc"
    data = _read(cached)
    if data is None or not _fresh(data, st):
        return False
    sys.audit("import", full, None, sys.path, sys.meta_path, sys.path_hooks)  # as `import` does
    spec = _spec(full, source, cached, is_package)
    module = _bootstrap.module_from_spec(spec)  # the attributes exactly as the import system sets them
    sys.modules[full] = module
    spec._initializing = True
    try:
        code = marshal.loads(memoryview(data)[16:])
        _imp._fix_co_filename(code, source)  # type: ignore[attr-defined]  # as importlib does (a moved checkout)
        exec(code, module.__dict__)
    except Exception:  # noqa: BLE001 — the import system will run it again and report it
        sys.modules.pop(full, None)
        return False
    except BaseException:  # Ctrl-C, SystemExit: undo, and stop the command as `import` would
        sys.modules.pop(full, None)
        raise
    finally:
        spec._initializing = False
    setattr(parent, full.rpartition(".")[2], sys.modules[full])  # as the import system binds it
    return True


def _read(path: str) -> bytes | None:
    """The cache file, opened as the import system opens it (io.open_code: an embedder's hook
    sees it)."""
    try:
        with _io.open_code(path) as f:
            return f.read()
    except OSError:
        return None


def _fresh(data: bytes, source_stat) -> bool:
    """The checks of importlib's _validate_timestamp_pyc: this Python's magic number, a
    timestamp-based cache (flags 0), the source's mtime and size."""
    return (len(data) > 16 and data[:4] == _external.MAGIC_NUMBER and data[4:8] == b"\0\0\0\0"
            and int.from_bytes(data[8:12], "little") == int(source_stat.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(data[12:16], "little") == source_stat.st_size & 0xFFFFFFFF)


def _spec(full: str, source: str, cached: str, is_package: bool):
    """The spec the import system's path finder would make for this source file."""
    loader = _external.SourceFileLoader(full, source)
    spec = _bootstrap.ModuleSpec(full, loader, origin=source, is_package=is_package)
    spec.cached = cached
    spec.has_location = True
    if is_package:
        spec.submodule_search_locations = [source.rpartition("/")[0]]
    return spec
