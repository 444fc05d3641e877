"""Shared test helpers: a cached busybox rootfs, bundles, and running ocirun (or runc).

- `shared_rootfs()` builds a busybox rootfs once in tests/.cache/rootfs (tools/mkrootfs.sh) and
  returns its path.  Bundles point `root.path` at it directly with `readonly: true`, so no test
  may write into it; a test that needs a writable root takes `private_rootfs(tmp_path)`.  Note
  that a runtime creates missing mount points (and, without a /dev tmpfs, device nodes) in the
  root before it makes it read-only: a test whose mounts need new mount points, or that takes
  /dev away, must use a private rootfs.  `rootfs_changes()` lists what a test wrote (the
  suite fails on it, and a changed cache is rebuilt before the next run uses it).
- `make_bundle(tmp_path, args, **overrides)` writes a bundle whose config.json is like
  `runc spec`'s, with `overrides` deep-merged into it (see `deep_update`).
- `run_ocirun(*args, root=...)` runs the installed `ocirun` and captures its output.

Everything the suite creates on the host is named so that conftest.py can find leftovers:
state roots /run/ocirun-test-*, cgroups ocirun-test-*.
"""
from __future__ import annotations

import copy
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "tests" / ".cache"
ROOTFS = CACHE / "rootfs"
MKROOTFS = REPO / "tools" / "mkrootfs.sh"
# The engines' real config.json files (shared/ lies beside the checkout, here and in CI).
FIXTURES = REPO.parent / "shared" / "fixtures" / "client-configs"
# Bump when mkrootfs.sh changes what it builds, so cached copies are rebuilt.
ROOTFS_VERSION = "2"

TEST_PREFIX = "ocirun-test"
# This test run's mark in the cgroup names make_bundle gives: `ocirun-test-s<run>-<unique>`.
# The leak check then leaves alone the cgroups of another run going on at the same time.
RUN_MARK = f"s{secrets.token_hex(3)}"
RUNC = shutil.which("runc")

DEFAULT_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


# --------------------------------------------------------------------------- rootfs

def shared_rootfs(check: bool = False) -> Path:
    """The cached busybox rootfs, built on first use (safe with parallel test processes).
    With `check`, a copy that some test wrote into is rebuilt too."""
    stamp = ROOTFS / ".ocirun-rootfs-version"
    if _read(stamp) == ROOTFS_VERSION and not (check and rootfs_changes()):
        return ROOTFS
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _read(stamp) != ROOTFS_VERSION or (check and rootfs_changes()):
            _build_rootfs_atomically(stamp.name)
    return ROOTFS


_LISTING = ".ocirun-rootfs-listing"


def _listing(top: Path) -> list[str]:
    """Every entry of the tree with its type and mode, not its times."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if rel != _LISTING:
                out.append(f"{rel!r} {st.st_mode:o} {st.st_size if not os.path.isdir(path) else 0}")
    return sorted(out)


def rootfs_changes() -> list[str]:
    """Entries of the shared rootfs added, removed or changed since it was built."""
    try:
        built = set((ROOTFS / _LISTING).read_text().splitlines())
    except OSError:
        return []
    now = set(_listing(ROOTFS))
    return sorted(built ^ now)


def _build_rootfs_atomically(stamp_name: str) -> None:
    # Build beside the final place and rename, so an interrupted build never looks finished.
    tmp = CACHE / f"rootfs.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([str(MKROOTFS), str(tmp)], check=True)
    (tmp / stamp_name).write_text(ROOTFS_VERSION)
    (tmp / _LISTING).write_text("\n".join(_listing(tmp)))
    if ROOTFS.exists():
        shutil.rmtree(ROOTFS)
    os.rename(tmp, ROOTFS)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def private_rootfs(tmp_path: Path, name: str = "rootfs") -> Path:
    """A writable copy of the shared rootfs under tmp_path (busybox is 2 MB: the copy is cheap)."""
    dest = Path(tmp_path) / name
    # cp -a, not shutil.copytree: a device node is copied as a node, never read (copying what
    # a careless test left there, /dev/full say, once filled the disk).
    subprocess.run(["cp", "-a", str(shared_rootfs()), str(dest)], check=True)
    return dest


# --------------------------------------------------------------------------- config.json

def default_config(args: list[str] | None = None, rootfs: Path | str | None = None) -> dict:
    """A config.json like `runc spec` writes, running `args` in the busybox rootfs."""
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args) if args else ["sh"],
            "env": list(DEFAULT_ENV),
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs or shared_rootfs()), "readonly": True},
        "hostname": "ocirun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            # Named so conftest.py's leak check finds it if a test forgets to delete.
            "cgroupsPath": f"/{TEST_PREFIX}-{RUN_MARK}-{secrets.token_hex(5)}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def deep_update(config: dict, overrides: dict) -> dict:
    """Merge `overrides` into `config` in place and return it.

    Dicts merge key by key; any other value (lists included) replaces the old one; a value of
    None deletes the key.  `deep_update(c, {"process": {"terminal": True}})` changes one field.
    """
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            deep_update(config[key], value)
        else:
            config[key] = copy.deepcopy(value)
    return config


def make_bundle(tmp_path: Path | str, args: list[str] | None = None, *, name: str = "bundle",
                rootfs: Path | str | None = None, **overrides) -> Path:
    """Write tmp_path/name/config.json (default_config + overrides) and return the bundle dir.

    `overrides` are top-level config keys deep-merged with `deep_update`, e.g.
    ``make_bundle(tmp_path, ["id", "-u"], process={"user": {"uid": 1000}})``.
    root.path is the absolute path of the shared rootfs unless `rootfs` is given.
    """
    bundle = Path(tmp_path) / name
    bundle.mkdir(parents=True, exist_ok=True)
    config = deep_update(default_config(args, rootfs), overrides)
    write_config(bundle, config)
    return bundle


def read_config(bundle: Path | str) -> dict:
    return json.loads((Path(bundle) / "config.json").read_text())


def write_config(bundle: Path | str, config: dict) -> None:
    (Path(bundle) / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# --------------------------------------------------------------------------- running

def ocirun_command() -> list[str]:
    """How to start ocirun: the venv's entry script, else `python -m ocirun`."""
    script = Path(sys.prefix) / "bin" / "ocirun"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ocirun"]


def hostile_python_environment(tmp_path: Path) -> tuple[dict, str]:
    """(an environment whose PYTHON* variables steer a plain interpreter, its stdin): a
    PYTHONPATH holding a fake `ocirun` package, a PYTHONSTARTUP file, PYTHONINSPECT with Python
    code waiting on stdin.  Each announces itself on stdout if it gets to run."""
    fake = tmp_path / "hostile" / "ocirun"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("print('HIJACKED by PYTHONPATH')\n")
    (fake / "cli.py").write_text("def run_and_exit():\n    print('HIJACKED by PYTHONPATH')\n")
    startup = tmp_path / "hostile" / "startup.py"
    startup.write_text("print('HIJACKED by PYTHONSTARTUP')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent), PYTHONSTARTUP=str(startup), PYTHONINSPECT="1")
    return env, "print('HIJACKED by PYTHONINSPECT')\n"


SYSTEM_PYTHON = "/usr/bin/python3"


def any_user_launcher_problem() -> str | None:
    """Why `any_user_launcher` cannot work on this host, or None."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing"
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.strip()
    if out != str(tuple(sys.version_info[:2])):
        return (f"{SYSTEM_PYTHON} is {out}, the suite's venv {tuple(sys.version_info[:2])}: "
                "its compiled modules would not load")
    return None


def any_user_launcher(path: Path) -> Path:
    """An `ocirun` any user can run (mode 0755 at `path`): the suite's venv sits on pyenv under
    /root, which other users cannot enter, so this runs the system's python3 (same version) on
    this checkout and the venv's site-packages, without site (no .pth files)."""
    import sysconfig
    site = sysconfig.get_paths()["purelib"]
    path.write_text(f"#!{SYSTEM_PYTHON} -S\nimport sys\nsys.path[:0] = [{str(REPO)!r}, {site!r}]\n"
                    "from ocirun.cli import run_and_exit\nrun_and_exit()\n")
    os.chmod(path, 0o755)
    return path


def run_ocirun(*args: str, root: Path | str | None = None, input: str | bytes | None = None,
               timeout: float = 30, env: dict | None = None, cwd: Path | str | None = None,
               ) -> subprocess.CompletedProcess:
    """Run `ocirun [--root ROOT] ARGS...`; capture stdout/stderr (text unless input is bytes).

    stdin is /dev/null unless `input` is given, so a test never blocks on the terminal.
    """
    cmd = ocirun_command()
    return _run(cmd, args, root, input, timeout, env, cwd)


def run_runc(*args: str, root: Path | str | None = None, input: str | bytes | None = None,
             timeout: float = 30, env: dict | None = None, cwd: Path | str | None = None,
             ) -> subprocess.CompletedProcess:
    """Same as run_ocirun, for runc (the reference we compare behaviour with)."""
    if RUNC is None:
        raise RuntimeError("runc is not installed")
    return _run([RUNC], args, root, input, timeout, env, cwd)


def _run(cmd, args, root, input, timeout, env, cwd) -> subprocess.CompletedProcess:
    full = list(cmd) + (["--root", str(root)] if root is not None else []) + [str(a) for a in args]
    run_env = dict(os.environ if env is None else env)
    # `python -m ocirun` must find the package even when it is not installed.
    run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), run_env.get("PYTHONPATH")]))
    binary = isinstance(input, bytes)
    # Output goes to files, not pipes: after `create` or `run -d` the container keeps the
    # runtime's stdout/stderr open, and reading a pipe to EOF would wait for the container.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                                stdout=out, stderr=err, env=run_env, cwd=cwd)
        try:
            if input is not None:
                proc.communicate(input if binary else input.encode(), timeout=timeout)
            else:
                proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        stdout, stderr = _read_back(out), _read_back(err)
    if not binary:
        stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    return subprocess.CompletedProcess(full, proc.returncode, stdout, stderr)


def _read_back(f) -> bytes:
    f.seek(0)
    return f.read()


def ok(*args: str, root: Path | str | None = None, run=None, **kw) -> subprocess.CompletedProcess:
    """Run ocirun (or `run`, e.g. run_runc) like run_ocirun and require exit 0."""
    r = (run or run_ocirun)(*args, root=root, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, args))} -> {r.returncode}: {r.stderr}"
    return r


def state_of(root: Path | str, cid: str, *, run=None) -> dict:
    """`state cid` parsed, requiring exit 0."""
    return json.loads(ok("state", cid, root=root, run=run).stdout)


def one_line_error(r: subprocess.CompletedProcess, *needles: str, status: int = 1,
                   prefix: str = "") -> str:
    """A clean failure: exit `status`, and stderr is one line that starts with `prefix` and
    names each of `needles`, with no traceback and no "internal error".  Returns the line.

    exec passes status=255 and prefix="exec failed: " (runc's, for a failure of exec itself).
    """
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.stderr.startswith(prefix), r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def delete(root: Path | str, cid: str, *, run=None, check: bool = True, timeout: float = 30) -> None:
    """`delete --force cid`: kills the container if it still runs.  With check=False it is a
    best-effort cleanup (a `finally:` after a test that may have failed half way)."""
    r = (run or run_ocirun)("delete", "--force", cid, root=root, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr


def wait_until(predicate, timeout: float = 10, what: str = "condition", interval: float = 0.01):
    """Poll `predicate` until it returns something true and return that; fail naming `what`
    after `timeout` seconds.  Instead of a fixed sleep: as fast as the thing waited for, and
    not flaky on a slow host."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 10) -> None:
    wait_until(lambda: not alive(pid), timeout, f"pid {pid} to exit")


def new_state_root() -> Path:
    """A fresh, unique --root directory for one test."""
    root = Path("/run") / f"{TEST_PREFIX}-{secrets.token_hex(6)}"
    root.mkdir(mode=0o700, parents=True)
    return root


# --------------------------------------------------------------------------- leak checks

def leftover_mounts(marker: str | Path = CACHE) -> list[str]:
    """Mount points in our mount namespace whose source or target mentions `marker`."""
    marker = str(marker)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if marker in line:
                found.append(line.split()[4])
    return found


def another_runs_cgroup(path: str) -> bool:
    """Named by make_bundle in another test run (see RUN_MARK)."""
    name = os.path.basename(path)
    mark = name[len(TEST_PREFIX) + 1:].split("-", 1)[0]
    return len(mark) == len(RUN_MARK) and mark.startswith("s") and mark != RUN_MARK \
        and all(c in "0123456789abcdef" for c in mark[1:]) and name.count("-") >= 3


def leftover_cgroups(prefix: str = TEST_PREFIX, top: str = "/sys/fs/cgroup") -> list[str]:
    """Cgroup directories (any hierarchy, any depth) whose name starts with `prefix`.

    os.walk rather than find(1): find's leaf optimisation skips cgroupfs subdirectories.
    """
    found = []
    for dirpath, dirnames, _files in os.walk(top):
        for d in list(dirnames):
            if d.startswith(prefix):
                found.append(os.path.join(dirpath, d))
                dirnames.remove(d)  # its children go with it
    return found


def remove_cgroup_tree(path: str) -> None:
    """rmdir a cgroup and its children, deepest first (cgroupfs dirs go with rmdir, not unlink)."""
    for dirpath, _dirnames, _files in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
