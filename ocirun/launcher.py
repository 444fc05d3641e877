"""`python -m ocirun.launcher [PATH]`: rewrite the installed `ocirun` command to start its
interpreter isolated and without `site` (`-I -S`).

Why: `site` costs ~2 ms of every command (it reads pyvenv.cfg, lists site-packages, runs its
.pth files: setuptools' distutils-precedence.pth imports `_distutils_hack`), and `-I` keeps a
runtime that runs as root from obeying its caller's PYTHONPATH, PYTHONSTARTUP, PYTHONINSPECT,
PYTHONHOME... (ARCHITECTURE.md, "Startup speed").  Why a step after `pip install`: pip rewrites a
script's `#!python` line to the bare interpreter path and drops any option that followed
(`fix_script` in pip's wheel installer, every venv, pipx, `--prefix` and editable install), so no
installed file can carry `-IS`; only something that runs after the install knows the
interpreter.

What it writes: `#!<this interpreter> -IS`, then the module search path that `site` (and any
PYTHONPATH of the environment this step runs in) gave this interpreter, frozen into the script:
the install's site-packages, the checkout of an editable install (its .pth file), a
`--prefix` install's directory.  Before writing, it checks that this interpreter, started so,
loads this very ocirun package (a setuptools editable install in its default mode does not: it
needs `site` to install its import hook; `editable_mode=compat` is a path).  Without -S
(`python /path/to/ocirun`, as the import tests run it) `site` has already set that path up and
the list is left alone.  The file is replaced
atomically; a symlink to it (`/usr/local/bin/ocirun`, pipx's bin directory) follows.  Run the
step again after moving the install or reinstalling ocirun (a reinstall writes pip's plain
script back: it works, ~2 ms slower).  PATH defaults to `ocirun` beside this interpreter.
"""
from __future__ import annotations

import os
import sys

# What identifies a script of ours: the step never replaces any other file.
ENTRY = "from ocirun.cli import run_and_exit"
# The kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE - 1 on Linux).
SHEBANG_MAX = 255

TEMPLATE = '''#!{interpreter} -IS
# The `ocirun` command, written by `python -m ocirun.launcher` (ocirun/launcher.py): an isolated
# interpreter without `site`, with the module search path of the install frozen below.
import sys

if sys.flags.no_site:
    sys.path += {paths!r}
try:
    {entry}
except ImportError as e:
    # Only a missing ocirun means the frozen path is wrong; anything else is worded as it is.
    sys.exit(f"ocirun: cannot load the ocirun package ({{e}})" + (
        f": the install moved?  Rerun `{{sys.executable}} -m ocirun.launcher`"
        if e.name in ("ocirun", "ocirun.cli") else ""))

run_and_exit()
'''


def isolated_base_path(interpreter: str) -> list[str]:
    """The module search path of `interpreter -I -S`: the standard library only."""
    import subprocess
    r = subprocess.run([interpreter, "-I", "-S", "-c", "import sys; print('\\0'.join(sys.path))"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"{interpreter} -I -S failed: {r.stderr.strip()[-300:]}")
    return r.stdout.rstrip("\n").split("\0")


def site_paths(search_path: list[str], base: list[str], safe_path: bool) -> list[str]:
    """The entries of search_path beyond the standard library (base), in order, without the
    directory that `python -m` puts first (the caller's working directory)."""
    entries = search_path if safe_path else search_path[1:]
    found: list[str] = []
    for entry in entries:
        entry = os.path.abspath(entry) if entry else entry
        if entry and entry not in base and entry not in found:
            found.append(entry)
    return found


def check_importable(interpreter: str, paths: list[str]) -> None:
    """Refuse paths under which `interpreter -I -S` would not load the ocirun package that
    `interpreter` loads as usual (with `site` and PYTHONPATH, without the working directory:
    `python -m` run in a checkout would otherwise take the checkout's for the install's).
    E.g. a setuptools editable install in its default mode adds an import hook from a .pth
    file, not a path: without `site` nothing finds the package."""
    import subprocess
    show = "import ocirun; print(ocirun.__file__)"
    usual = subprocess.run([interpreter, "-P", "-c", show], capture_output=True, text=True)
    if usual.returncode != 0:
        raise ValueError(f"{interpreter} does not load ocirun at all: install it first")
    expected = os.path.dirname(os.path.abspath(usual.stdout.strip()))
    code = f"import sys; sys.path += {paths!r}; import ocirun.cli; {show}"
    r = subprocess.run([interpreter, "-I", "-S", "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
        raise ValueError(f"without `site`, {interpreter} cannot load the ocirun of {expected} ({why}); an "
                         "editable install must be made with --config-settings editable_mode=compat")
    found = os.path.dirname(os.path.abspath(r.stdout.strip()))
    if found != expected:
        raise ValueError(f"without `site`, {interpreter} loads the ocirun of {found}, not the one of {expected}")


def launcher_source(interpreter: str, paths: list[str]) -> str:
    if any(c.isspace() for c in interpreter) or len(os.fsencode(f"#!{interpreter} -IS")) > SHEBANG_MAX:
        raise ValueError(f"{interpreter!r} cannot be named on a #! line (whitespace, or longer than "
                         f"{SHEBANG_MAX} bytes)")
    return TEMPLATE.format(interpreter=interpreter, paths=paths, entry=ENTRY)


def check_script(path: str, interpreter: str) -> None:
    """Refuse to rewrite a file that is not an ocirun script, or the script of another install
    (its #! names an interpreter in another directory: the step would tie that command to this
    interpreter and this install's modules)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if ENTRY not in text:
        raise ValueError(f"{path} is not an ocirun script: left alone")
    words = text.split("\n", 1)[0][2:].split() if text.startswith("#!") else []
    runs = words[0] if words else ""
    try:
        same = bool(runs) and os.path.samefile(os.path.dirname(runs), os.path.dirname(interpreter))
    except OSError:
        same = False
    if not same:
        raise ValueError(f"{path} runs {runs or 'no interpreter'!r}, not one beside {interpreter}: run the "
                         "step with the interpreter of that install; left alone")


def write_launcher(path: str, source: str, interpreter: str, must_exist: bool = False) -> None:
    """Replace path (an ocirun script of this interpreter's install; or, unless must_exist,
    nothing yet) with source, keeping its mode and, for root, its owner."""
    st: os.stat_result | None
    try:
        check_script(path, interpreter)
        st = os.stat(path)
    except FileNotFoundError:
        if must_exist:
            raise ValueError(f"no ocirun script at {path}: name the script to rewrite") from None
        st = None
    real = os.path.realpath(path)  # write beside the file a symlink names, not over the link
    tmp = f"{real}.launcher-{os.getpid()}"
    with open(tmp, "x", encoding="utf-8") as f:  # "x": never over a file someone else left there
        try:
            f.write(source)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), st.st_mode & 0o7777 if st else 0o755)
            if st is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.replace(tmp, real)
        except BaseException:
            os.unlink(tmp)
            raise


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python -m ocirun.launcher [PATH]   (PATH: the ocirun script to rewrite; "
              "default: ocirun beside this interpreter)", file=sys.stderr)
        return 2
    interpreter = sys.executable
    if not interpreter:
        print("ocirun.launcher: this interpreter does not know its own path (sys.executable)", file=sys.stderr)
        return 1
    path = argv[0] if argv else os.path.join(os.path.dirname(interpreter), "ocirun")
    try:
        paths = site_paths(sys.path, isolated_base_path(interpreter), bool(sys.flags.safe_path))
        check_importable(interpreter, paths)
        # Without PATH only an existing script is rewritten (never a new file in /usr/bin).
        write_launcher(path, launcher_source(interpreter, paths), interpreter, must_exist=not argv)
    except (OSError, ValueError) as e:
        print(f"ocirun.launcher: {e}", file=sys.stderr)
        return 1
    print(f"{path}: #!{interpreter} -IS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
