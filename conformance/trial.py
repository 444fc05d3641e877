"""What a check works with: the runtime's CLI, bundles, containers and their cleanup.

- `Suite` (one per run) owns the runtime path, a private `--root`, a work directory, the
  busybox root filesystem (built once, from /bin/busybox unless --rootfs is given) and the
  cgroupsPath prefix `/conformance-<token>-` of every container it makes.
- `Trial` (one per check) makes bundles (`config`, `bundle`), containers (`container`) and
  runs throwaway shell scripts to completion (`sh`); `cleanup()` force-deletes every container
  it made, removes leftover cgroups of its prefix and its bundle directories.
- `Container` wraps the runc-style commands for one id: create, start, state, kill, delete.

Each bundle gets a host directory `out/` bind-mounted read-write at /out, through which the
container (and hooks) report back; the container's stdout/stderr go to files in the bundle
(the runtime passes its own stdio to a non-terminal container).
"""
from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import host
from .framework import Fail, Skip

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
# Set in the runtime's own environment: it must never show up in a container's environment.
LEAK_MARKER = "CONFORMANCE_RUNTIME_ENV_MARKER=leaked"
CMD_TIMEOUT = 30


# --------------------------------------------------------------------------- rootfs

def build_rootfs(dest: Path, busybox: str = "/bin/busybox") -> Path:
    """A minimal busybox root filesystem: applets, /etc/passwd+group, mount points, /out."""
    if not os.access(busybox, os.X_OK):
        raise SystemExit(f"conformance: {busybox} not found (apt-get install busybox-static)")
    for d in ("bin", "sbin", "usr/bin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
              "home/test", "mnt", "out", "var/tmp"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":  # linking busybox to itself would destroy the binary
            link = dest / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ntest:x:1000:1000:test:/home/test:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (dest / "etc" / "group").write_text(
        "root:x:0:\ntty:x:5:\nusers:x:100:test\ntest:x:1000:\nnogroup:x:65534:\n")
    (dest / "etc" / "hosts").write_text("")
    (dest / "etc" / "hostname").write_text("conformance\n")
    (dest / ".conformance-rootfs").write_text("busybox rootfs made by the conformance suite\n")
    os.chown(dest / "home" / "test", 1000, 1000)
    return dest


# --------------------------------------------------------------------------- suite

class Suite:
    def __init__(self, runtime: str, root: str | None = None, rootfs: str | None = None,
                 workdir: str | None = None):
        self.runtime = os.path.abspath(runtime)
        self.token = secrets.token_hex(4)
        self.cgroup_prefix = f"conformance-{self.token}-"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="conformance-"))
        # Traversable by the mapped root of a user-namespaced container.
        os.chmod(self.workdir, 0o755)
        self._own_root = root is None
        self.root = Path(root or f"/run/conformance-{self.token}")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._rootfs_given = rootfs is not None
        self.rootfs = Path(rootfs).resolve() if rootfs else build_rootfs(self.workdir / "rootfs")
        self._counter = 0

    def next_name(self) -> str:
        self._counter += 1
        return f"{self.cgroup_prefix}{self._counter}"

    def runtime_cmd(self, *args, stdout=None, stderr=None, timeout=CMD_TIMEOUT, env=None,
                    pass_fds=(), preexec_fn=None) -> subprocess.CompletedProcess:
        """Run `runtime --root ROOT ARGS...`.  Output goes to files, never pipes: after
        `create` the container holds the runtime's stdio open, and a pipe would never reach
        EOF."""
        argv = [self.runtime, "--root", str(self.root), *map(str, args)]
        run_env = dict(os.environ if env is None else env)
        key, _, val = LEAK_MARKER.partition("=")
        run_env[key] = val
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or out,
                                    stderr=stderr or err, env=run_env, pass_fds=pass_fds,
                                    preexec_fn=preexec_fn)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise Fail(f"`{' '.join(argv[3:])}` did not finish within {timeout}s") from None
            return subprocess.CompletedProcess(argv, proc.returncode, _slurp(out, stdout),
                                               _slurp(err, stderr))

    def close(self) -> None:
        """Remove everything this run made: containers, cgroups, the root and work dirs."""
        for cid in (os.listdir(self.root) if self.root.exists() else []):
            try:
                self.runtime_cmd("delete", "--force", cid, timeout=15)
            except Fail:
                pass
        remove_cgroups(self.cgroup_prefix)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _slurp(tmp, given) -> str:
    if given is not None:
        return ""
    tmp.seek(0)
    return tmp.read().decode(errors="replace")


def remove_cgroups(prefix: str) -> list[str]:
    """Kill what is left in cgroups named `prefix*` (processes this run started) and rmdir them,
    deepest first.  Returns the directories that were found."""
    found = []
    seen = set()
    for top in set(host.cgroup_mounts().values()):
        if top in seen:
            continue
        seen.add(top)
        try:
            entries = os.listdir(top)
        except OSError:
            continue
        found += [os.path.join(top, e) for e in entries if e.startswith(prefix)]
    for path in found:
        for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
            _kill_cgroup_members(dirpath)
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
    return found


def _kill_cgroup_members(path: str) -> None:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- config

# The ociVersion the bundles declare (`--oci-version`): a runtime may refuse versions it does not
# know (config.md "Specification version"), e.g. crun 1.8.1 refuses 1.2.0.
OCI_VERSION = "1.2.0"


def base_config(args: list[str], rootfs: str, cgroups_path: str, out_dir: str) -> dict:
    """A conventional Linux config (the shape `runc spec` writes) plus the /out bind mount."""
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [PATH_ENV, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": "conformance",
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
            {"destination": "/out", "type": "bind", "source": out_dir, "options": ["rbind", "rw"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


def deep_update(config: dict, overrides: dict) -> dict:
    """Merge `overrides` into `config`: dicts key by key, other values replace, None deletes."""
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            deep_update(config[key], value)
        else:
            config[key] = copy.deepcopy(value)
    return config


class Bundle:
    def __init__(self, path: Path, config: dict):
        self.path = path
        self.config = config
        self.out = path / "out"
        self.stdout = path / "container.stdout"
        self.stderr = path / "container.stderr"

    def write(self) -> "Bundle":
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        return self

    def out_file(self, name: str) -> str | None:
        try:
            return (self.out / name).read_text()
        except OSError:
            return None


# --------------------------------------------------------------------------- containers

class Container:
    """One container id in the suite's --root, driven only through the runtime's CLI."""

    def __init__(self, suite: Suite, bundle: Bundle, cid: str):
        self.suite, self.bundle, self.id = suite, bundle, cid

    def cmd(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.suite.runtime_cmd(*args, **kw)

    def create(self, *extra, check: bool = True, **kw) -> subprocess.CompletedProcess:
        with open(self.bundle.stdout, "wb") as out, open(self.bundle.stderr, "wb") as err:
            r = self.suite.runtime_cmd("create", *extra, "--bundle", self.bundle.path, self.id,
                                       stdout=out, stderr=err, **kw)
        r.stderr = self.bundle.stderr.read_text(errors="replace")
        if check and r.returncode != 0:
            raise Fail(f"create failed (exit {r.returncode}): {_first_lines(r.stderr)}")
        return r

    def start(self, check: bool = True) -> subprocess.CompletedProcess:
        r = self.cmd("start", self.id)
        if check and r.returncode != 0:
            raise Fail(f"start failed (exit {r.returncode}): {_first_lines(r.stderr)}")
        return r

    def kill(self, sig: str = "KILL", check: bool = True) -> subprocess.CompletedProcess:
        r = self.cmd("kill", self.id, sig)
        if check and r.returncode != 0:
            raise Fail(f"kill {sig} failed (exit {r.returncode}): {_first_lines(r.stderr)}")
        return r

    def delete(self, force: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        r = self.cmd("delete", *(["--force"] if force else []), self.id)
        if check and r.returncode != 0:
            raise Fail(f"delete failed (exit {r.returncode}): {_first_lines(r.stderr)}")
        return r

    def state(self) -> dict:
        r = self.cmd("state", self.id)
        if r.returncode != 0:
            raise Fail(f"state failed (exit {r.returncode}): {_first_lines(r.stderr)}")
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise Fail(f"state output is not JSON: {r.stdout[:200]!r}") from None

    def status(self) -> str:
        return self.state().get("status")

    def wait_status(self, want: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if st.get("status") == want:
                return st
            if time.monotonic() > deadline:
                raise Fail(f"status stayed {st.get('status')!r}, expected {want!r} within {timeout}s")
            time.sleep(0.02)

    def output(self) -> str:
        return self.bundle.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.bundle.stderr.read_text(errors="replace")


def _first_lines(text: str, n: int = 3) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


# --------------------------------------------------------------------------- trial

class Trial:
    """The per-check handle: everything a check needs, and the cleanup of what it made."""

    def __init__(self, suite: Suite, check_id: str):
        self.suite = suite
        self.check_id = check_id
        self.host = host
        self.notes: list[str] = []
        self._containers: list[Container] = []
        self._dirs: list[Path] = []

    # ---- building bundles

    def note(self, text: str) -> None:
        self.notes.append(text)

    def skip(self, reason: str):
        raise Skip(reason)

    def require(self, condition: bool, reason: str) -> None:
        if not condition:
            raise Skip(reason)

    def new_dir(self, name: str = "tmp") -> Path:
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.suite.workdir))
        os.chmod(d, 0o755)
        self._dirs.append(d)
        return d

    def private_rootfs(self, where: Path) -> Path:
        dest = where / "rootfs"
        shutil.copytree(self.suite.rootfs, dest, symlinks=True)
        return dest

    def bundle(self, args: list[str] | None = None, *, rootfs: str | None = None,
               **overrides) -> Bundle:
        path = self.new_dir("bundle")
        (path / "out").mkdir()
        name = self.suite.next_name()
        cfg = base_config(args or ["true"], rootfs or str(self.suite.rootfs), "/" + name,
                          str(path / "out"))
        deep_update(cfg, overrides)
        return Bundle(path, cfg).write()

    def container(self, bundle: Bundle | None = None, args: list[str] | None = None,
                  **overrides) -> Container:
        bundle = bundle or self.bundle(args, **overrides)
        c = Container(self.suite, bundle, self.suite.next_name())
        self._containers.append(c)
        return c

    def sleeper(self, **overrides) -> Container:
        """A created+started container that stays up (sleep as PID 1) until it is killed."""
        c = self.container(args=["sleep", "1000"], **overrides)
        c.create()
        c.start()
        return c

    def run(self, c: Container, timeout: float = 10) -> str:
        """create, start, wait until stopped, delete; return the container's stdout."""
        c.create()
        c.start()
        c.wait_status("stopped", timeout)
        out = c.output()
        c.delete()
        return out

    def sh(self, script: str, **overrides) -> str:
        """Run `sh -c SCRIPT` in a fresh container to completion and return its stdout."""
        return self.run(self.container(args=["sh", "-c", script], **overrides))

    def runtime(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.suite.runtime_cmd(*args, **kw)

    # ---- assertions

    def expect(self, cond: bool, msg: str) -> None:
        if not cond:
            raise Fail(msg)

    def expect_eq(self, got, want, what: str) -> None:
        if got != want:
            raise Fail(f"{what}: got {got!r}, want {want!r}")

    def expect_error(self, r: subprocess.CompletedProcess, what: str) -> None:
        if r.returncode == 0:
            raise Fail(f"{what} succeeded (exit 0); the spec requires an error")

    def expect_gone(self, c: Container, what: str) -> None:
        r = c.cmd("state", c.id)
        if r.returncode == 0:
            raise Fail(f"{what}: `state {c.id}` still answers: {r.stdout.strip()[:200]}")

    # ---- terminal support (runc's --console-socket contract)

    def console_socket(self) -> "ConsoleSocket":
        return ConsoleSocket(self.new_dir("console") / "sock")

    # ---- cleanup

    def cleanup(self) -> None:
        for c in self._containers:
            r = c.cmd("state", c.id, timeout=15)
            if r.returncode == 0:
                c.cmd("delete", "--force", c.id, timeout=15)
        remove_cgroups(self.suite.cgroup_prefix)
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


class ConsoleSocket:
    """A unix socket that receives the pty master the runtime sends with SCM_RIGHTS."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(CMD_TIMEOUT)
        self.master: int | None = None
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
                if fds:
                    self.master = fds[0]
                    for extra in fds[1:]:
                        os.close(extra)
        except OSError:
            pass

    def read_all(self, timeout: float = 10) -> str:
        """Everything the container writes to its terminal until it closes (EIO) or timeout."""
        self._thread.join(timeout)
        if self.master is None:
            raise Fail("the runtime sent no terminal fd to --console-socket")
        import select
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
        self.sock.close()
