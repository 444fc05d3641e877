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
    each import finishes), less those loaded before preload.py runs (the script, cli.py, itself)."""
    import ocirun
    package = Path(ocirun.__file__).parent
    loaded_first = {"ocirun", "ocirun.jsonio", "ocirun.log", "ocirun.errors", "ocirun.cli", "ocirun.preload"}
    out = []
    for line in stderr.splitlines():
        name = line.rsplit("|", 1)[1].strip() if line.startswith("import time:") else ""
        if not name.startswith("ocirun.") or name in loaded_first:
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
            if not _list_matches(preload.COMMANDS.get(cmd[0], ()), order):
                drifted[cmd[0]] = order
    finally:
        for cid in ("imp", "imp2"):
            helpers.delete(ocirun_root, cid, check=False)
    # A drifted list costs time, not behaviour (preload.py); keep them exact so it stays fast.
    assert not drifted, ("ocirun/preload.py's COMMANDS no longer match what these commands import; "
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
