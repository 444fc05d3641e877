"""ocirun/preload.py loads a command's modules from their byte-code caches, bypassing the import
system, and leaves anything unusual to it.  Each case runs in a fresh interpreter over a copy of
the package (so the caches and sources can be changed); tests/integration/test_startup_imports.py
checks the lists themselves against real commands."""
from __future__ import annotations

import compileall
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ocirun

# Runs in the child: records every module the import system is asked to find, preloads a
# command, then prints what was loaded and how.
PROBE = r"""
import importlib, json, sys
asked = []
class Recorder:
    def find_spec(self, name, path=None, target=None):
        asked.append(name)
        return None
sys.path.insert(0, sys.argv[1])
import ocirun.cli
from ocirun import preload
sys.meta_path.insert(0, Recorder())
preload.preload(sys.argv[2])
names = ["ocirun." + n for n in preload.MODULES_BY_COMMAND[sys.argv[2]]]
preloaded = [n for n in names if n in sys.modules]
for n in names:  # what the command then imports
    importlib.import_module(n)
attrs = all(getattr(sys.modules[n.rpartition(".")[0]], n.rpartition(".")[2], None) is sys.modules[n]
            for n in names)
print(json.dumps({"asked": [a for a in asked if a.startswith("ocirun")], "preloaded": preloaded,
                  "names": names, "attrs": attrs, "files": [sys.modules[n].__file__ for n in names]}))
"""


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """The ocirun package, byte-compiled, in a directory of its own."""
    src = Path(ocirun.__file__).parent
    dst = tmp_path / "ocirun"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))
    assert compileall.compile_dir(str(dst), quiet=1)
    return tmp_path


def _probe(where: Path, command: str, *flags: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    r = subprocess.run([sys.executable, *flags, "-c", PROBE, str(where), command], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_a_command_s_modules_load_without_the_import_system(package_copy):
    out = _probe(package_copy, "run")
    assert all(path.startswith(str(package_copy)) for path in out["files"])
    assert out["attrs"], "each module is bound on its package, as `import a.b` leaves it"
    # Only what preload leaves to the import system on purpose: submodules that their package's
    # own body imports (rootfs/__init__.py) and C extension modules.
    asked = set(out["asked"])
    assert asked <= {"ocirun.rootfs.paths", "ocirun.rootfs.mounts", "ocirun.rootfs.devices",
                     "ocirun.rootfs.pivot", "ocirun._syscalls"}, sorted(asked)
    assert set(out["names"]) - set(out["preloaded"]) <= asked
    assert len(asked) < len(out["names"]) // 4


def test_a_stale_cache_stops_it_and_the_import_system_takes_over(package_copy):
    state = package_copy / "ocirun" / "state.py"
    state.write_text(state.read_text() + "\nEDITED_AFTER_COMPILE = True\n")  # its .pyc is now stale
    out = _probe(package_copy, "start")  # api, state, start
    assert out["preloaded"] == ["ocirun.api"]
    assert "ocirun.state" in out["asked"], "the stale module went to the import system"
    assert "ocirun.start" in out["asked"], "and so did everything after it"
    check = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import ocirun.cli;"
         "from ocirun import preload; preload.preload('start'); import ocirun.state as s;"
         "print(s.EDITED_AFTER_COMPILE)", str(package_copy)], capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "True", check.stderr[-2000:]


def test_a_module_that_fails_is_undone_and_fails_again_where_it_is_imported(package_copy):
    kill = package_copy / "ocirun" / "kill.py"
    kill.write_text(kill.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    compileall.compile_file(str(kill), quiet=1)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import ocirun.cli; from ocirun import preload;"
            "preload.preload('kill'); print('ocirun.kill' in sys.modules, 'ocirun.state' in sys.modules);"
            "import ocirun.kill")
    r = subprocess.run([sys.executable, "-c", code, str(package_copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split() == ["False", "True"]
    assert "broken on purpose" in r.stderr  # the real import raises it, with its traceback


def test_it_stands_aside_when_imports_are_watched(package_copy):
    out = _probe(package_copy, "state", "-X", "importtime")
    assert out["preloaded"] == []
    assert set(out["asked"]) >= {"ocirun.api", "ocirun.state"}  # everything went the usual way


def _run(where: Path, code: str, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    head = "import sys; sys.path.insert(0, sys.argv[1]); import ocirun.cli; from ocirun import preload\n"
    return subprocess.run([sys.executable, *flags, "-c", head + code, str(where)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_source_touched_after_compiling_is_stale_by_its_mtime_alone(package_copy):
    state = package_copy / "ocirun" / "state.py"
    st = state.stat()
    os.utime(state, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # same size, newer
    assert _probe(package_copy, "start")["preloaded"] == ["ocirun.api"]


def test_hash_based_caches_are_left_to_the_import_system(package_copy):
    pkg = package_copy / "ocirun"
    compileall.compile_file(str(pkg / "api.py"), quiet=1, force=True,
                            invalidation_mode=compileall.py_compile.PycInvalidationMode.CHECKED_HASH)
    assert _probe(package_copy, "start")["preloaded"] == []


def test_a_moved_install_gets_its_new_paths(package_copy, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(package_copy / "ocirun", moved / "ocirun")  # caches compiled under the old path
    r = _run(moved, "preload.preload('start'); print('ocirun.start' in sys.modules)\n"
                    "import ocirun.start as s\n"
                    "print(s.start.__code__.co_filename, s.__file__, s.__spec__.cached)")
    assert r.returncode == 0, r.stderr[-2000:]
    preloaded, filename, file, cached = r.stdout.split()
    assert preloaded == "True"  # preload made it, not the import system (which would fix the paths too)
    assert filename == file == str(moved / "ocirun" / "start.py")
    assert cached == str(moved / "ocirun" / "__pycache__" / f"start.{sys.implementation.cache_tag}.pyc")


def test_a_module_looks_as_if_imported(package_copy):
    show = ("m = sys.modules['ocirun.cgroups']; f = sys.modules['ocirun.cgroups.freezer']\n"
            "print(sorted((k, repr(v)) for k, v in vars(m).items() if k.startswith('__') and k != '__builtins__'))\n"
            "print(sorted((k, repr(v)) for k, v in vars(f).items() if k.startswith('__') and k != '__builtins__'))\n"
            "print(m.__spec__.submodule_search_locations, f.__spec__.parent, f.__spec__.has_location)")
    preloaded = _run(package_copy, "preload.preload('state'); print('ocirun.cgroups.freezer' in sys.modules)\n"
                                   "import ocirun.cgroups.freezer\n" + show)
    imported = _run(package_copy, "print(True); import ocirun.cgroups.freezer\n" + show)
    assert preloaded.returncode == imported.returncode == 0, preloaded.stderr[-2000:] + imported.stderr[-2000:]
    assert preloaded.stdout.split("\n", 1)[0] == "True"  # preload made them: the comparison means something
    # reprs hold ids of loader objects: compare them with the addresses taken out
    strip = re.compile(r" at 0x[0-9a-f]+")
    assert strip.sub("", preloaded.stdout) == strip.sub("", imported.stdout)


def test_nothing_is_loaded_once_imports_are_sealed(package_copy):
    r = _run(package_copy, "from ocirun.process.become import seal_imports; seal_imports()\n"
                           "preload.preload('state'); print('ocirun.state' in sys.modules)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False"]


def test_ctrl_c_in_a_module_body_is_undone_and_raised(package_copy):
    kill = package_copy / "ocirun" / "kill.py"
    kill.write_text(kill.read_text() + "\nraise KeyboardInterrupt\n")
    compileall.compile_file(str(kill), quiet=1)
    r = _run(package_copy, "try:\n    preload.preload('kill')\nexcept KeyboardInterrupt:\n"
                           "    print('raised', 'ocirun.kill' in sys.modules)")
    assert r.stdout.split() == ["raised", "False"], r.stderr[-2000:]


def test_the_command_line_preloads_before_the_command_runs(package_copy, tmp_path):
    """cli.main is what calls preload: a `state` (of a container that does not exist: the
    modules load before that is found out) never asks the import system for state.py."""
    code = ("asked = []\n"
            "class Recorder:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        asked.append(name)\n"
            "sys.meta_path.insert(0, Recorder())\n"
            f"rc = ocirun.cli.main(['--root', {str(tmp_path / 'root')!r}, 'state', 'nosuch'])\n"
            "print(rc, 'ocirun.state' in sys.modules, [a for a in asked if a.startswith('ocirun')])")
    r = _run(package_copy, code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1", "True", "[]"], (r.stdout, r.stderr[-2000:])


@pytest.mark.parametrize("flags, env", [(["-O"], {}), (["-v"], {}), ([], {"PYTHONPROFILEIMPORTTIME": "1"})])
def test_it_stands_aside_for_other_interpreter_modes(package_copy, flags, env):
    """-O reads other cache files; -v and PYTHONPROFILEIMPORTTIME watch every import."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | env
    r = subprocess.run([sys.executable, *flags, "-c", PROBE, str(package_copy), "state"], env=full_env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1])["preloaded"] == []
