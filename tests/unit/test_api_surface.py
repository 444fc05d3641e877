"""The Python API's surface (ocirun/api.py), without root or containers: every public name is
documented and fully typed, the default root is the CLI's, errors are OCIErrors, and importing
the API costs the engine commands nothing."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import typing

import pytest

import ocirun
from ocirun import api, rootless
from ocirun.errors import ConfigError, OCIError

METHODS = ["create", "load", "list", "start", "state", "status", "kill", "delete", "pause", "resume",
           "processes", "exec", "wait"]


def public_callables():
    yield from ((name, getattr(api, name)) for name in api.__all__ if callable(getattr(api, name)))
    yield from ((f"Container.{name}", getattr(api.Container, name)) for name in METHODS)


@pytest.mark.parametrize(("name", "fn"), list(public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_name_is_documented(name, fn):
    assert inspect.getdoc(fn) and len(inspect.getdoc(fn)) > 30, f"{name} has no docstring"


@pytest.mark.parametrize(("name", "fn"), [(n, f) for n, f in public_callables() if not inspect.isclass(f)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_function_is_typed(name, fn):
    hints = typing.get_type_hints(fn)  # the string annotations resolve
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
    assert [p for p in params if p not in hints] == [], f"{name}: untyped parameters"
    assert "return" in hints, f"{name}: no return type"


def test_the_module_and_package_say_how_to_use_it():
    assert "from ocirun.api import Container, OCIError" in api.__doc__
    assert (ocirun.Container, ocirun.OCIError, ocirun.ConfigError) == (api.Container, OCIError, ConfigError)
    assert issubclass(ConfigError, OCIError)
    with pytest.raises(AttributeError):
        ocirun.no_such_name  # noqa: B018


def test_the_default_root_is_the_clis(monkeypatch):
    monkeypatch.setenv("OCIRUN_ROOT", "/some/where")
    assert api.Container("x").root == "/some/where"
    monkeypatch.delenv("OCIRUN_ROOT")
    assert api.Container("x").root == rootless.default_root()
    assert api.Container("x", root="/r").root == "/r"


def test_an_unexpected_error_arrives_as_an_oci_error(tmp_path):
    plain = tmp_path / "a-file"
    plain.write_text("")
    with pytest.raises(OCIError, match="not a directory") as err:
        api.Container.list(plain)
    assert isinstance(err.value.__cause__, NotADirectoryError)  # kept for a debug traceback


def test_importing_the_api_loads_nothing_more():
    """The engine commands import api.py: it must not pull in an operation or a heavy module."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ocirun.cli, ocirun.api"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    names = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    ours = {n for n in names if n.startswith("ocirun")}
    assert ours == {"ocirun", "ocirun.cli", "ocirun.api", "ocirun.errors", "ocirun.jsonio", "ocirun.log"}, ours


def test_exec_refuses_a_command_string_and_two_processes(tmp_path):
    """`exec("ls -l")` would otherwise run `l` (a string is a sequence of characters)."""
    import pytest

    from ocirun.api import Container, OCIError
    c = Container("nobody-runs-this", tmp_path)
    with pytest.raises(OCIError, match="list of strings"):
        c.exec("ls -l")
    with pytest.raises(OCIError, match="pass one"):
        c.exec({"args": ["true"]}, process_file="p.json")
