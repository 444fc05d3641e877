"""The commands engines run on every container import only what they need (issue 6: startup
speed is a feature).  Black-box: the real entry script under `python -X importtime`, on a real
container; a module that drags in `re`, `enum`, `json`, `socket`, `argparse` or `typing` (each a
few ms) shows up here as a failure naming the command.  The same runs check ocirun/preload.py's
lists against what each command really imports."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from helpers import make_bundle, ocirun_command


HEAVY = {"re", "enum", "json", "socket", "argparse", "typing", "jsonschema", "pyroute2", "dataclasses",
         "pathlib", "shutil", "hashlib", "signal", "subprocess",
         "prctl"}  # python-prctl's prctl.py; its C module _prctl is what the runtime calls


def _imported(cmd: list[str], root: Path, tmp_path: Path) -> tuple[int, str, set[str]]:
    """Exit status, stderr and imported module names of one command (preload.py stands aside
    under -X importtime: every import shows).  Output goes to files: a created container's init
    inherits them, and would hold a pipe open."""
    script = ocirun_command()
    if len(script) != 1:
        pytest.skip("ocirun is not installed as a script (pip install -e .)")
    full = [sys.executable, "-X", "importtime", script[0], "--root", str(root), *cmd]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        rc = subprocess.run(full, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err, timeout=30).returncode
    stderr = err_path.read_text()
    names = {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return rc, stderr, names


def _heavy_on_the_default_path() -> set[str]:
    """HEAVY, and ctypes (~2.5 ms) where the C syscall module is built (setup.py): without a
    compiler at install, ocirun.linux falls back to ctypes."""
    import importlib.util
    return HEAVY | ({"ctypes"} if importlib.util.find_spec("ocirun._syscalls") else set())


def _finish_order(stderr: str) -> list[str]:
    """Our pure-Python modules in the order their imports finished (importtime prints a line as
    each import finishes), less those loaded before preload.py runs."""
    from ocirun import preload
    package = Path(preload.__file__).parent
    out = []
    for line in stderr.splitlines():
        name = line.rsplit("|", 1)[1].strip() if line.startswith("import time:") else ""
        if not name.startswith("ocirun.") or name in preload.LOADED_BEFORE:
            continue
        rel = name.removeprefix("ocirun.").replace(".", "/")
        if (package / f"{rel}.py").exists() or (package / rel / "__init__.py").exists():
            out.append(name.removeprefix("ocirun."))  # not C modules: the import system loads those
    return out


def test_the_engine_path_stays_light(tmp_path, ocirun_root):
    from ocirun import preload
    heavy = _heavy_on_the_default_path()
    bundle = make_bundle(tmp_path, ["sleep", "100"])
    steps = [["create", "--bundle", str(bundle), "imp"], ["start", "imp"], ["state", "imp"],
             ["exec", "imp", "true"], ["kill", "imp", "KILL"], ["delete", "--force", "imp"],
             ["run", "--bundle", str(make_bundle(tmp_path, ["true"], name="b2")), "imp2"]]
    drifted = {}
    try:
        for cmd in steps:
            rc, stderr, names = _imported(cmd, ocirun_root, tmp_path)
            assert rc == 0, (cmd, stderr[-2000:])
            assert names & heavy == set(), f"ocirun {cmd[0]} imported {sorted(names & heavy)}"
            assert "ocirun" in names  # the probe works: it sees our own imports
            order = tuple(_finish_order(stderr))
            if not _list_matches(preload.MODULES_BY_COMMAND.get(cmd[0], ()), order):
                drifted[cmd[0]] = order
    finally:
        for cid in ("imp", "imp2"):
            helpers.delete(ocirun_root, cid, check=False)
    # A drifted list costs time, not behaviour (preload.py); keep them exact so it stays fast.
    assert not drifted, ("ocirun/preload.py's MODULES_BY_COMMAND no longer match what these commands import; "
                         f"the lists to put there: {drifted!r}")


# Imported only on some hosts, so a list recorded elsewhere may have them or lack them: the
# device rules (the v1 devices controller, the eBPF filter on cgroup v2), the ctypes syscall
# layer (no compiler at install), the systemd driver.
HOST_DEPENDENT = {"cgroups.devices", "cgroups.ebpf", "_syscalls_ctypes", "cgroups.systemd_manager",
                  "cgroups.systemd", "cgroups.dbus"}


def _list_matches(listed: tuple[str, ...], imported: tuple[str, ...]) -> bool:
    """The list is what the command imported, in the same order, give or take the modules only
    some hosts import."""
    common = set(listed) & set(imported)
    return (tuple(m for m in listed if m in common) == tuple(m for m in imported if m in common)
            and set(listed) ^ set(imported) <= HOST_DEPENDENT)


def test_seccomp_keeps_the_path_light(tmp_path, ocirun_root):
    """With a seccomp profile (every docker/podman container) `run` still imports no json/re —
    once the compiled filter is cached: the first sight of a profile loads pyseccomp (~17 ms,
    it pulls in subprocess and re) to compile it."""
    from helpers import read_config, write_config
    bundle = make_bundle(tmp_path, ["true"])
    cfg = read_config(bundle)
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}
    write_config(bundle, cfg)
    for _ in range(2):  # the first run fills the cache (if another test has not already)
        rc, stderr, names = _imported(["run", "--bundle", str(bundle), "imps"], ocirun_root, tmp_path)
        assert rc == 0, stderr[-2000:]
    assert "ocirun.seccomp" in names
    heavy = _heavy_on_the_default_path()
    assert names & heavy == set(), sorted(names & heavy)


def test_loading_a_systemd_driven_container_stays_light():
    """exec, kill, pause, ps of a container made with --systemd-cgroup load its manager from the
    state: that must not drag in re/enum (nor jeepney, which only create/update/delete need)."""
    state = {"version": 1, "mode": "unified", "paths": {"": "/sys/fs/cgroup/system.slice/ocirun-x.scope"},
             "mounts": {"": "/sys/fs/cgroup"}, "created": [], "shared": False, "driver": "systemd",
             "unit": "ocirun-x.scope", "slice": "system.slice", "bus": "system"}
    code = f"from ocirun.cgroups import load_manager; m = load_manager({state!r}); m.join_plan(); m.pids()"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "ocirun.cgroups.systemd_manager" in names
    assert names & (HEAVY | {"jeepney"}) == set(), sorted(names & (HEAVY | {"jeepney"}))
