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
    pip_wrote = os.path.join(os.path.dirname(sys.executable), "python3")  # pip's #! names python3
    real.write_text(f"#!{pip_wrote}\n{ENTRY}\n\nrun_and_exit()\n")
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
    with pytest.raises(ValueError, match="cannot load the ocirun of .*editable_mode=compat"):
        check_importable(sys.executable, [])
    check_importable(sys.executable, site_paths(sys.path, isolated_base_path(sys.executable), False))
    # ...and through the command (-S: no site, so no path but the checkout -m puts first), the
    # script stays as it was
    script = tmp_path / "ocirun"
    text = f"#!{sys.executable}\n{ENTRY}\n\nrun_and_exit()\n"
    script.write_text(text)
    r = subprocess.run([sys.executable, "-S", "-m", "ocirun.launcher", str(script)], capture_output=True,
                       text=True, cwd=helpers.REPO, timeout=60)
    assert r.returncode == 1 and "cannot load the ocirun of" in r.stderr, r
    assert script.read_text() == text


def test_run_in_the_checkout_judges_the_install_not_the_checkout(tmp_path):
    """`python -m` puts the working directory first: run from the checkout, the step compares
    with what the interpreter loads without it (here the same checkout: a compat install)."""
    script = tmp_path / "ocirun"
    r = subprocess.run([sys.executable, "-m", "ocirun.launcher", str(script)], capture_output=True,
                       text=True, cwd=helpers.REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert script.read_text().startswith(f"#!{sys.executable} -IS\n")


def test_another_install_s_script_or_a_missing_default_is_left_alone(tmp_path):
    other = tmp_path / "ocirun"
    text = f"#!/opt/elsewhere/bin/python3\n{ENTRY}\n\nrun_and_exit()\n"
    other.write_text(text)
    r = _write(other)
    assert r.returncode == 1 and "runs '/opt/elsewhere/bin/python3', not one beside" in r.stderr, r.stderr
    assert other.read_text() == text
    from ocirun.launcher import write_launcher
    with pytest.raises(ValueError, match="no ocirun script at"):
        write_launcher(str(tmp_path / "absent"), "x", sys.executable, must_exist=True)
    assert not (tmp_path / "absent").exists()


def test_odd_paths_stay_data_in_the_script():
    """The frozen path is Python source: quotes, newlines, backslashes, undecodable bytes stay data."""
    import ast
    from ocirun.launcher import launcher_source
    odd = ["/a'b\"c", "/new\nline", "/back\\slash", "/x" + "'" * 3 + "y", "/bad\udcffbyte", "/\u00e9"]
    tree = ast.parse(launcher_source(sys.executable, odd))
    frozen = next(n for n in ast.walk(tree) if isinstance(n, ast.AugAssign))
    assert ast.literal_eval(frozen.value) == odd


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


def test_a_broken_dependency_is_not_called_a_moved_install(tmp_path):
    """The hint to rerun the step is for a missing ocirun only: an ocirun that is there but
    cannot load a module of its own says which, without the wrong advice."""
    fake = tmp_path / "site"
    (fake / "ocirun").mkdir(parents=True)
    (fake / "ocirun" / "__init__.py").write_text("")
    (fake / "ocirun" / "cli.py").write_text("import some_missing_dependency\n")
    launcher = tmp_path / "ocirun"
    assert _write(launcher).returncode == 0
    text = launcher.read_text()
    frozen = next(line for line in text.splitlines() if line.strip().startswith("sys.path += "))
    launcher.write_text(text.replace(frozen, f"    sys.path[:0] = [{str(fake)!r}]"))
    r = subprocess.run([launcher, "state", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == ("ocirun: cannot load the ocirun package (No module named "
                        "'some_missing_dependency')\n"), r.stderr


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
