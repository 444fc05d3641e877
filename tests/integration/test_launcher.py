"""`python -m ocirun.launcher` (issue 19): the installed command starts its interpreter with
`-I -S`, finds the package through the path frozen into it, and obeys none of its caller's
PYTHON* variables.  Here for the suite's own install (the editable one of a checkout);
test_packaging.py does the same for a wheel in a venv and in a `--prefix` install."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from ocirun import __version__
from ocirun.launcher import ENTRY, site_paths


def _write(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "ocirun.launcher", str(path)], capture_output=True,
                          text=True, env=env, cwd=path.parent, timeout=60)


def test_site_paths_keeps_what_site_added_in_order():
    base = ["/py/lib/python311.zip", "/py/lib/python3.11", "/py/lib/python3.11/lib-dynload"]
    found = ["/cwd", *base, "/venv/site", "/checkout", "/venv/site"]
    assert site_paths(found, base, safe_path=False) == ["/venv/site", "/checkout"]
    # under -P/-I nothing is put first, so the first entry is a real one
    assert site_paths(["/pp", *base, "/venv/site"], base, safe_path=True) == ["/pp", "/venv/site"]
    # a relative PYTHONPATH entry is frozen as the absolute path it meant, once
    assert site_paths(["rel", *base, os.path.abspath("rel")], base, safe_path=True) == [os.path.abspath("rel")]


def test_the_launcher_runs_isolated(tmp_path, ocirun_root):
    launcher = tmp_path / "bin" / "ocirun"
    launcher.parent.mkdir()
    r = _write(launcher)
    assert r.returncode == 0, r.stderr
    text = launcher.read_text()
    assert text.startswith(f"#!{sys.executable} -IS\n") and ENTRY in text, text
    assert os.stat(launcher).st_mode & 0o777 == 0o755

    r = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith(f"ocirun version {__version__}\n"), r

    env, stdin = helpers.hostile_python_environment(tmp_path)
    # The same file started without -IS takes the fake package: the probe works
    r = subprocess.run([sys.executable, launcher, "--version"], input=stdin, capture_output=True,
                       text=True, env=env, timeout=30)
    assert "HIJACKED by PYTHONPATH" in r.stdout, r
    # Started as a command it obeys none of them, and runs a container
    bundle = helpers.make_bundle(tmp_path, ["echo", "isolated"])
    cid = f"launcher-{secrets.token_hex(4)}"
    r = subprocess.run([launcher, "--root", ocirun_root, "run", "--bundle", bundle, cid], input=stdin,
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stdout == "isolated\n", r
    assert "HIJACKED" not in r.stderr


def test_a_symlinked_install_is_rewritten_through_the_link(tmp_path):
    """/usr/local/bin/ocirun -> /opt/ocirun/bin/ocirun: the link stays, the file it names changes."""
    real = tmp_path / "opt" / "ocirun"
    real.parent.mkdir()
    real.write_text(f"#!/usr/bin/python3\n{ENTRY}\n\nrun_and_exit()\n")
    real.chmod(0o750)
    link = tmp_path / "ocirun"
    link.symlink_to(real)
    r = _write(link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and real.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert os.stat(real).st_mode & 0o777 == 0o750
    assert sorted(os.listdir(real.parent)) == ["ocirun"]  # no temporary file left
    r = subprocess.run([link, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ocirun version"), r


def test_a_path_that_does_not_load_this_ocirun_is_refused(tmp_path):
    """What a setuptools editable install in its default mode gives: the package comes from an
    import hook that a .pth file installs, so without `site` nothing finds it.  The step says so
    and leaves the script as it was."""
    from ocirun.launcher import check_importable, isolated_base_path
    with pytest.raises(ValueError, match="does not load the ocirun of .*editable_mode=compat"):
        check_importable(sys.executable, [])
    check_importable(sys.executable, site_paths(sys.path, isolated_base_path(sys.executable), False))


def test_other_files_are_left_alone(tmp_path):
    other = tmp_path / "ocirun"
    other.write_text("#!/bin/sh\necho not ours\n")
    r = _write(other)
    assert r.returncode == 1 and r.stderr == f"ocirun.launcher: {other} is not an ocirun script: left alone\n"
    assert other.read_text() == "#!/bin/sh\necho not ours\n"


@pytest.mark.parametrize("interpreter", ["/with space/python3", "/" + "p" * 260])
def test_an_interpreter_no_shebang_can_name_is_refused(interpreter):
    from ocirun.launcher import launcher_source
    with pytest.raises(ValueError, match="cannot be named on a #! line"):
        launcher_source(interpreter, [])


def test_a_moved_install_says_so_in_one_line(tmp_path):
    launcher = tmp_path / "ocirun"
    assert _write(launcher).returncode == 0
    text = launcher.read_text()
    frozen = next(line for line in text.splitlines() if line.strip().startswith("sys.path += "))
    launcher.write_text(text.replace(frozen, "    sys.path += ['/nonexistent/site-packages']"))
    r = subprocess.run([launcher, "state", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == ("ocirun: cannot load the ocirun package (No module named 'ocirun'): the install "
                        f"moved?  Rerun `{sys.executable} -m ocirun.launcher`\n"), r.stderr
