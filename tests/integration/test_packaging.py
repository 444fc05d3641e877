"""A wheel that works wherever pip puts it (issue 18).

`python -m build` makes the sdist and, from it, the wheel, as a release would.  The wheel is
installed into a fresh venv (what `pip install ocirun` or pipx does) and, with the system's
python3, into a scratch prefix (`pip install --prefix`: the layout of a system-wide /usr/local
install, never the host's own /usr/local); each installed `ocirun` runs a real container, reports
the commit it was built from, and carries the conformance suite inside the ocirun package.

Building needs PyPI: pip's isolated build environment fetches the build backend (setuptools),
and the fresh venv its dependencies (pip's cache makes a second run quick).
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import helpers
from ocirun import __version__
from ocirun.buildinfo import UNKNOWN, git_commit

SPEC_SCHEMAS = sorted(p.name for p in (helpers.REPO / "spec" / "schema").glob("*.json"))
SUITE_MODULES = sorted(p.name for p in (helpers.REPO / "conformance").glob("*.py"))
# What the runtime imports on the engine path only when something is wrong (see
# test_startup_imports.py): a wheel whose schemas differ from the checkout's would show here,
# and one built without its C syscall module (ctypes is the fallback).
HEAVY = {"re", "json", "jsonschema", "subprocess", "ctypes"}


def _env(**extra: str) -> dict:
    """The caller's environment without PYTHONPATH (the checkout must not leak in) plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env.update(extra)
    return env


def _run(cmd: list, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, **{"env": _env(), **kw})
    assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(directory with the sdist and the wheel, the commit they should carry)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` package is not installed (pip install -e '.[test]' installs it)")
    expected = git_commit(str(helpers.REPO)) or UNKNOWN
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, helpers.REPO], timeout=600)
    return out, expected


def _wheel(built) -> Path:
    (wheel,) = built[0].glob(f"ocirun-{__version__}-*.whl")
    return wheel


def test_the_sdist_keeps_the_repository_layout_and_the_commit(built):
    (sdist,) = built[0].glob(f"ocirun-{__version__}.tar.gz")
    top = f"ocirun-{__version__}"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        info = tar.extractfile(f"{top}/ocirun/_build_info.py").read().decode()
    assert {f"{top}/spec/schema/{n}" for n in SPEC_SCHEMAS} <= names
    assert {f"{top}/conformance/{n}" for n in SUITE_MODULES} <= names
    assert {f"{top}/setup.py", f"{top}/bin/ocirun"} <= names
    assert f"COMMIT = {built[1]!r}" in info


def test_the_wheel_holds_schemas_and_suite_inside_the_package(built):
    with zipfile.ZipFile(_wheel(built)) as wheel:
        names = set(wheel.namelist())
        info = wheel.read("ocirun/_build_info.py").decode()
    assert {f"ocirun/spec/schema/{n}" for n in SPEC_SCHEMAS} <= names
    assert {f"ocirun/conformance/{n}" for n in SUITE_MODULES} <= names
    assert [n for n in names if n.startswith("ocirun/_syscalls.") and n.endswith(".so")], "no C module"
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"ocirun", f"ocirun-{__version__}.dist-info", f"ocirun-{__version__}.data"}, tops
    assert f"COMMIT = {built[1]!r}" in info


def test_pip_wheel_of_the_checkout_records_the_commit_and_nothing_stale(tmp_path):
    """`pip install .` builds in the checkout's build/ (no sdist step).  setuptools never empties
    build/lib and a wheel takes all of it: a top-level package left there by a build of an
    older layout must not ship (setup.py rebuilds build/lib whole).  With the C module the
    wheel is a platform one, built in build/lib.<platform>-<python>."""
    build_lib = f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
    stale = helpers.REPO / "build" / build_lib / "conformance"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "__init__.py").write_text("# left by a build of an older layout\n")
    expected = git_commit(str(helpers.REPO)) or UNKNOWN
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", tmp_path, helpers.REPO],
         timeout=600)
    assert not stale.exists()
    (wheel,) = tmp_path.glob("ocirun-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = whl.read("ocirun/_build_info.py").decode()
    assert {name.split("/", 1)[0] for name in names} == {
        "ocirun", f"ocirun-{__version__}.dist-info", f"ocirun-{__version__}.data"}
    assert {f"ocirun/spec/schema/{n}" for n in SPEC_SCHEMAS} <= names
    assert f"COMMIT = {expected!r}" in info


def _check_installed(ocirun: Path, python: Path, tmp_path: Path, root: Path, commit: str, env: dict):
    """What every install must do: a plain `ocirun` script, --version with the build's commit, a
    container run on the engine path without heavy imports, and the conformance command."""
    script = ocirun.read_text()
    assert "run_and_exit()" in script and "import re" not in script, script  # bin/ocirun, not pip's wrapper
    version = _run([ocirun, "--version"], env=env).stdout.splitlines()
    assert version == [f"ocirun version {__version__}", f"commit: {commit}", "spec: 1.2.0"], version

    bundle = helpers.make_bundle(tmp_path, ["echo", "hello from the wheel"])
    cid = f"pkg-{secrets.token_hex(4)}"
    r = _run([python, "-X", "importtime", ocirun, "--root", root, "run", "--bundle", bundle, cid],
             env=env, cwd=tmp_path)
    assert r.stdout == "hello from the wheel\n"
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "ocirun.schema" in imported and not imported & HEAVY, sorted(imported & HEAVY)

    # `ocirun check` and the Python API, from the installed copy
    report = json.loads(_run([ocirun, "check", "--format", "json"], env=env, cwd=tmp_path).stdout)
    assert report["canRunContainers"] and {c["name"] for c in report["checks"]} >= {"cgroups", "openat2"}
    api_bundle = helpers.make_bundle(tmp_path, ["sh", "-c", "exit 7"], name="api-bundle")
    r = _run([python, "-c", "import sys, ocirun.api as api; print(api.__file__); "
              "print(api.run(sys.argv[1], sys.argv[2], root=sys.argv[3]))", api_bundle, cid + "-api", root],
             env=env, cwd=tmp_path)
    api_file, status = r.stdout.split()
    assert status == "7" and not Path(api_file).is_relative_to(helpers.REPO), r.stdout

    suite = _run([ocirun.parent / "ocirun-conformance", "--list"], env=env, cwd=tmp_path).stdout.splitlines()
    assert len(suite) > 100 and suite[0].startswith("baseline.run"), suite[:3]
    where = _run([python, "-c", "import ocirun, ocirun.conformance, ocirun.schema as s; "
                  "print(ocirun.__file__); print(s.SCHEMA_DIR)"], env=env, cwd=tmp_path).stdout.split()
    return [Path(p) for p in where]


def _make_isolated(ocirun: Path, python: Path, tmp_path: Path, env: dict, ocirun_root) -> None:
    """README's step after the install: `python -m ocirun.launcher` rewrites the command to
    start `python -IS` with the install's path frozen in; it then obeys no PYTHON* variable of
    its caller (PYTHONPATH included, which the `--prefix` install needed to be found).  Run, as
    README's recipes do, in the checkout: `python -m` puts it first on the path, and the step
    must still freeze the install's package, not the checkout's."""
    _run([python, "-m", "ocirun.launcher", ocirun], env=env, cwd=helpers.REPO)
    assert ocirun.read_text().startswith(f"#!{python} -IS\n")
    hostile, stdin = helpers.hostile_python_environment(tmp_path)
    r = subprocess.run([ocirun, "--version"], env=hostile, input=stdin, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(f"ocirun version {__version__}\n") and "HIJACKED" not in r.stdout, r.stdout
    bundle = helpers.make_bundle(tmp_path, ["echo", "isolated"], name="isolated-bundle")
    r = subprocess.run([ocirun, "--root", ocirun_root, "run", "--bundle", bundle, f"iso-{secrets.token_hex(4)}"],
                       env=hostile, input=stdin, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "isolated\n" and "HIJACKED" not in r.stderr, r


def test_the_wheel_in_a_fresh_venv(built, tmp_path, ocirun_root):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "pip", "install", "-q", _wheel(built)], timeout=600)
    package, schema_dir = _check_installed(venv / "bin" / "ocirun", venv / "bin" / "python", tmp_path,
                                           ocirun_root, built[1], _env())
    site = package.parent.parent
    assert site.is_relative_to(venv) and schema_dir == package.parent / "spec" / "schema"
    assert not (site / "conformance").exists() and not (site / "spec").exists(), sorted(os.listdir(site))
    r = subprocess.run([venv / "bin" / "python", "-c", "import conformance"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True)
    assert "No module named 'conformance'" in r.stderr

    _make_isolated(venv / "bin" / "ocirun", venv / "bin" / "python", tmp_path, _env(), ocirun_root)
    assert _check_installed(venv / "bin" / "ocirun", venv / "bin" / "python", tmp_path, ocirun_root,
                            built[1], _env())[0] == package


def test_the_wheel_installed_system_wide(built, tmp_path, ocirun_root):
    """pip of the system's python3 into a scratch prefix; the dependencies come from the suite's
    venv (same Python version: see helpers.any_user_launcher), so only the wheel is installed."""
    problem = helpers.any_user_launcher_problem()
    if problem:
        pytest.skip(f"no system python3 of the suite's version: {problem}")
    prefix = tmp_path / "prefix"
    _run([sys.executable, "-m", "pip", "--python", helpers.SYSTEM_PYTHON, "install", "-q", "--no-deps",
          "--no-index", "--prefix", prefix, _wheel(built)])
    (ocirun,) = prefix.glob("**/bin/ocirun")  # Debian's python3 puts a prefix's files under local/
    (init,) = prefix.glob("**/ocirun/__init__.py")  # in site-packages, or Debian's dist-packages
    site = init.parent.parent
    assert ocirun.read_text().startswith(f"#!{helpers.SYSTEM_PYTHON}\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]))
    package, schema_dir = _check_installed(ocirun, Path(helpers.SYSTEM_PYTHON), tmp_path, ocirun_root,
                                           built[1], env)
    assert package == init and schema_dir == site / "ocirun" / "spec" / "schema"
    assert sorted(os.listdir(site)) == ["ocirun", f"ocirun-{__version__}.dist-info"]

    _make_isolated(ocirun, Path(helpers.SYSTEM_PYTHON), tmp_path, env, ocirun_root)
    assert _check_installed(ocirun, Path(helpers.SYSTEM_PYTHON), tmp_path, ocirun_root, built[1],
                            env)[0] == init


def test_a_checkout_reports_its_own_commit():
    """Editable installs and PYTHONPATH on a checkout have no _build_info.py: --version asks git."""
    commit = git_commit(str(helpers.REPO))
    if commit is None:
        pytest.skip(f"{helpers.REPO} is not a git checkout (or git is missing)")
    r = helpers.ok("--version")
    assert r.stdout.splitlines()[1] == f"commit: {commit}"
