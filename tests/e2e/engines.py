"""End-to-end helpers: real engines (podman, containerd, dockerd) driving ocirun or runc.

- `RUNTIMES`: the runtimes every scenario runs on, name → absolute path; `runtime_path(name)`
  applies `OCIRUN_E2E_TRACE=DIR` (each call of the runtime logged there, see `trace_wrapper`).
- `require_engine(binaries)`: skips (with the reason) unless the engine's binaries are there,
  installing Debian's packages first when it can.
- `image_archive(image)`: a docker-archive of a busybox image (`IMAGE`, or `PAUSE_IMAGE` for CRI
  pod sandboxes), built offline from the suite's cached rootfs in tests/.cache/e2e (podman load,
  ctr import and docker load all read it).
- `Scratch`: a private directory for one engine with its sockets and roots; `close()` unmounts
  whatever the engine left mounted under it and removes it.
- `Daemon`: a background process started with every fd >= 3 closed and stopped by its pid.
- `CgroupJanitor`: removes the empty cgroups that engines create and never remove.
- `Podman`, `Containerd`, `Docker`: one engine instance each, configured for both runtimes;
  `Containerd(cri=True)` also serves the CRI with one runtime entry (`BinaryName`) per runtime.
  All three use the cgroupfs driver unless told otherwise: `Podman(cgroup_manager="systemd")`,
  `Docker(cgroup_driver="systemd")` and `Containerd(systemd_cgroup=True)` (ctr's
  `--runc-systemd-cgroup`, `SystemdCgroup = true` in the CRI runtime entries) are their defaults
  on a systemd host, used by tests/systemd.

Everything made here is named `ocirun-e2e-*`, so a leftover is easy to attribute.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import helpers

PREFIX = "ocirun-e2e"
IMAGE = "localhost/bbox:latest"
# The pod sandbox ("pause") image for the CRI tests: the same busybox, sleeping.
PAUSE_IMAGE = "localhost/pause:latest"
IMAGE_COMMANDS = {IMAGE: ["/bin/sh"], PAUSE_IMAGE: ["/bin/sleep", "2147483647"]}
E2E_CACHE = helpers.CACHE / "e2e"
# Bump when the images' format changes; a rebuilt test rootfs rebuilds them too.
ARCHIVE_VERSION = f"1-rootfs{helpers.ROOTFS_VERSION}"


# Directories that engines create whatever their configuration says.  Only those that did not
# exist when this test session started are ours to remove (when empty) afterwards.
_HOST_DIRS = ("/run/containerd", "/run/docker", "/var/lib/containers", "/var/lib/cni")
_HOST_DIRS_BEFORE = {d for d in _HOST_DIRS if os.path.exists(d)}


def _tidy_host_dir(path: str, remove_files: bool = False) -> None:
    if path in _HOST_DIRS_BEFORE:
        return
    if remove_files:
        shutil.rmtree(path, ignore_errors=True)
    else:
        _remove_empty_dirs(path)


# --------------------------------------------------------------------------- runtimes

def _ocirun_path() -> str | None:
    # Engines need one executable: the venv's entry script (`pip install -e .` makes it).
    script = helpers.ocirun_command()
    return script[0] if len(script) == 1 else None


RUNTIMES = {"runc": helpers.RUNC, "ocirun": _ocirun_path()}


def runtime_path(name: str) -> str:
    """The binary an engine should call for runtime `name` (skips if it is missing)."""
    path = RUNTIMES[name]
    if path is None:
        pytest.skip(f"{name} is not installed")
    trace_dir = os.environ.get("OCIRUN_E2E_TRACE")
    if trace_dir:
        return trace_wrapper(path, Path(trace_dir), name)
    return path


def trace_wrapper(real: str, trace_dir: Path, name: str) -> str:
    """A script that logs each call (argv, cwd, env, open fds) to trace_dir/NAME.log, then execs real.

    For debugging a scenario: OCIRUN_E2E_TRACE=/tmp/trace pytest tests/e2e -k ...
    """
    trace_dir.mkdir(parents=True, exist_ok=True)
    log = trace_dir / f"{name}.log"
    script = trace_dir / f"{name}-traced"
    script.write_text(
        "#!/bin/sh\n"
        f"{{ echo \"=== $(date +%T.%N) pid $$ cwd $(pwd)\"; printf ' %s' \"$@\"; echo;"
        " env | sed 's/^/  env /'; ls -l /proc/$$/fd | sed -n 's/^.* \\([0-9]*\\) -> /  fd \\1 -> /p';"
        f" }} >> {log} 2>&1\n"
        f"exec {real} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


# --------------------------------------------------------------------------- installing

def require_engine(binaries: dict[str, str]) -> None:
    """Skip unless every binary (name → Debian package) is on PATH; try apt-get first."""
    missing = {b: p for b, p in binaries.items() if not _which(b)}
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get") or os.environ.get("OCIRUN_E2E_NO_INSTALL"):
        pytest.skip(f"not installed: {', '.join(sorted(missing))}")
    packages = sorted(set(missing.values()))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    still = [b for b in missing if not _which(b)]
    if still:
        pytest.skip(f"could not install {' '.join(packages)} ({', '.join(still)} missing): "
                    f"{result.stderr.strip()[-300:]}")


def _which(binary: str) -> str | None:
    # Debian's paths first: /usr/local/bin/docker may be a newer client than Debian's dockerd.
    for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        if os.access(os.path.join(d, binary), os.X_OK):
            return os.path.join(d, binary)
    return shutil.which(binary)


# --------------------------------------------------------------------------- the image

def image_archive(image: str = IMAGE) -> Path:
    """tests/.cache/e2e/<name>-archive.tar: a docker-archive of `image`, built once."""
    name = image.split("/")[-1].split(":")[0]
    archive = E2E_CACHE / f"{name}-archive.tar"
    stamp = E2E_CACHE / f"{name}-archive.version"
    if helpers._read(stamp) == ARCHIVE_VERSION and archive.exists():
        return archive
    E2E_CACHE.mkdir(parents=True, exist_ok=True)
    with open(E2E_CACHE / "archive.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if helpers._read(stamp) != ARCHIVE_VERSION or not archive.exists():
            tmp = archive.with_suffix(f".tmp-{os.getpid()}")
            _write_docker_archive(tmp, image, IMAGE_COMMANDS[image],
                                  _rootfs_layer(helpers.shared_rootfs()))
            os.rename(tmp, archive)
            stamp.write_text(ARCHIVE_VERSION)
    return archive


def _rootfs_layer(rootfs: Path) -> bytes:
    # GNU tar keeps hard links, numeric owners and modes exactly; fixed order and mtime keep
    # the layer's digest stable from one build to the next.
    return subprocess.run(
        ["tar", "-C", str(rootfs), "--sort=name", "--mtime=@0", "--numeric-owner",
         "--exclude=./.ocirun-rootfs-version", "-cf", "-", "."],
        check=True, stdout=subprocess.PIPE).stdout


def _write_docker_archive(path: Path, image: str, cmd: list[str], layer: bytes) -> None:
    """The `docker save` format: manifest.json, the image config and one uncompressed layer."""
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ocirun tests/e2e"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [image], "Layers": [f"{layer_digest}.tar"]}]
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{layer_digest}.tar", layer), (config_name, config_bytes),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------- scratch and daemons

class Scratch:
    """A private directory /run/ocirun-e2e-<engine>-<hex> for one engine's state."""

    def __init__(self, engine: str):
        self.path = Path("/run") / f"{PREFIX}-{engine}-{secrets.token_hex(4)}"
        self.path.mkdir(mode=0o711)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def mounts(self) -> list[str]:
        """Mount points at or under the scratch dir in our mount namespace, deepest first."""
        found = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                target = line.split()[4].replace("\\040", " ")
                if target == str(self.path) or target.startswith(str(self.path) + "/"):
                    found.append(target)
        return sorted(set(found), key=lambda t: -t.count("/"))

    def close(self) -> list[str]:
        """Unmount what the engine left under the scratch dir, remove it; return those mounts."""
        left = self.mounts()
        for target in left:
            subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.path, ignore_errors=True)
        return left


class Daemon:
    """A background daemon: no stdin, output to a log file, every fd >= 3 closed, own session."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None):
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            # close_fds=True (the default) is what keeps the sandbox's stray fds out of the
            # daemon and so out of its shims and containers.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, close_fds=True,
                                         start_new_session=True)

    def wait_for_socket(self, sock: Path, timeout: float = 30) -> None:
        # A poll with its own deadline: it stops early if the daemon died, and names its log.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}")
            if sock.exists():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not create {sock} in {timeout}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM by pid, SIGKILL if it does not exit in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kill_processes_mentioning(marker: str, grace: float = 10) -> list[int]:
    """SIGKILL processes whose command line contains `marker` (a path unique to this session)
    and that are still there after `grace` seconds; return their pids.

    Used for shims and conmons an engine started and left: their argv names our private
    directory, so they cannot be anybody else's.  The grace period lets the ones that are
    finishing (conmon's `podman container cleanup` exit command) finish.
    """
    deadline = time.monotonic() + grace
    # A poll with its own deadline that never fails: what is left after it is killed.
    while _processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for pid in _processes_mentioning(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


class CgroupJanitor:
    """Removes empty cgroups named `names` that appeared while an engine ran.

    Engines create parents (libpod_parent, docker, a containerd namespace) and never remove
    them.  Only directories that did not exist at `__init__` are touched, and only if empty.
    """

    def __init__(self, names: list[str], top: str = "/sys/fs/cgroup"):
        self.names = set(names)
        self.top = top
        self.before = set(self._matching())

    def _matching(self) -> list[str]:
        found = []
        for dirpath, dirnames, _files in os.walk(self.top):
            for d in list(dirnames):
                if d in self.names:
                    found.append(os.path.join(dirpath, d))
                    dirnames.remove(d)
        return found

    def clean(self) -> list[str]:
        """rmdir new matching cgroups (children first); return those that would not go."""
        stuck = []
        for path in set(self._matching()) - self.before:
            helpers.remove_cgroup_tree(path)
            if os.path.exists(path):
                stuck.append(path)
        return stuck


def run(argv: list[str], *, env: dict | None = None, timeout: float = 60, input: str | None = None,
        tty: bool = False) -> subprocess.CompletedProcess:
    """Run a client command; output captured as text. `tty=True` runs it under script(1)."""
    if tty:
        # script(1) gives the client a pty of its own, as a user's terminal would.
        argv = ["script", "-qec", shlex.join(argv), "/dev/null"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)


def describe(result: subprocess.CompletedProcess) -> str:
    """A one-paragraph account of a command's result, for assertion messages."""
    return (f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
            f"stdout: {result.stdout!r}\nstderr: {result.stderr!r}")


# --------------------------------------------------------------------------- podman

class Podman:
    """podman with conmon, a private containers.conf/storage.conf, both runtimes registered.

    Each call picks the runtime by name (`podman --runtime NAME`), exactly as a user whose
    containers.conf has `runtime = "ocirun"` would get it by default.
    """

    def __init__(self, cgroup_manager: str = "cgroupfs"):
        self.scratch = Scratch("podman")
        s = self.scratch
        self.cgroup_manager = cgroup_manager
        runtimes = {name: runtime_path(name) for name, path in RUNTIMES.items() if path}
        (s / "containers.conf").write_text(podman_containers_conf(runtimes, s.path,
                                                                  cgroup_manager))
        (s / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{s / "graph"}"\n'
            f'runroot = "{s / "runroot"}"\n')
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CONTAINERS_CONF": str(s / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(s / "storage.conf"),
            "HOME": str(s.path),
            "TMPDIR": str(s.path),
        }
        self.janitor = CgroupJanitor(["libpod_parent"])
        load = self("load", "-i", str(image_archive()))
        if load.returncode != 0:
            self.close()
            raise RuntimeError(f"podman load failed: {describe(load)}")

    def __call__(self, *args: str, runtime: str | None = None, timeout: float = 60,
                 tty: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        argv = ["podman"] + (["--runtime", runtime] if runtime else []) + list(args)
        return run(argv, env=self.env, timeout=timeout, tty=tty, input=input)

    def close(self) -> list[str]:
        """Remove every container, stop podman's leftovers; return what had to be forced."""
        problems = []
        self("rm", "--all", "--force", "--time", "0", timeout=120)
        problems += [f"mount {m}" for m in self.scratch.mounts()
                     if not m.endswith("/graph/overlay")]
        problems += [f"process {p}" for p in kill_processes_mentioning(str(self.scratch.path))]
        self.scratch.close()
        problems += [f"cgroup {c}" for c in self.janitor.clean()]
        # c/image keeps a blob-info cache in /var/lib/containers/cache whatever storage.conf says.
        _tidy_host_dir("/var/lib/containers", remove_files=True)
        return problems


def podman_containers_conf(runtimes: dict[str, str], scratch: Path,
                           cgroup_manager: str = "cgroupfs") -> str:
    """The containers.conf a user would write to run podman on ocirun (README shows the same).

    `cgroup_manager = "systemd"` (podman's own default) needs systemd as PID 1: each container
    is then a transient libpod-<id>.scope in machine.slice, and the runtime gets --systemd-cgroup.
    """
    entries = "\n".join(f'{name} = ["{path}"]' for name, path in runtimes.items())
    names = ", ".join(f'"{name}"' for name in runtimes)
    return f"""\
[containers]
netns = "none"
# This host's hard NOFILE is 20000 and there is no CAP_SYS_RESOURCE: podman's defaults fail.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "{cgroup_manager}"
events_logger = "file"
runtime = "ocirun"
runtime_supports_json = [{names}]
lock_type = "file"
tmp_dir = "{scratch / "tmp"}"
static_dir = "{scratch / "graph" / "libpod"}"
volume_path = "{scratch / "volumes"}"

[engine.runtimes]
{entries}
"""


# --------------------------------------------------------------------------- containerd

SHIM_SOCKETS = Path("/run/containerd/s")


def _shim_sockets_of(marker: str) -> set[str]:
    """The socket names (in SHIM_SOCKETS) of the running shims whose argv names `marker`: a
    shim's socket is sha256(containerd's address/namespace/id), containerd 1.6's rule, and its
    argv carries all three (`-namespace NS -id ID -address SOCK`)."""
    import hashlib
    names = set()
    for pid in _processes_mentioning(marker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if not argv[0].endswith("containerd-shim-runc-v2"):
            continue
        flags = {arg: value for arg, value in zip(argv, argv[1:], strict=False)
                 if arg in ("-namespace", "-id", "-address")}
        if len(flags) == 3:
            key = os.path.join(flags["-address"], flags["-namespace"], flags["-id"])
            names.add(hashlib.sha256(key.encode()).hexdigest())
    return names


class Containerd:
    """A private containerd in a scratch dir, driven with ctr (and, with `cri=True`, the CRI).

    `ctr(*args)` runs ctr against it in its own namespace; `run_args(runtime)` are the ctr run
    flags that select a runtime the way ctr users do (`--runc-binary`, which ctr sends to the
    runc shim as its `BinaryName` option; ctr 1.6 cannot send shim options from a file).
    With `cri=True` the CRI plugin is on and config.toml has a runtime entry per runtime
    (`runtimes.<name>.options.BinaryName`): the CRI `runtime_handler` — a Kubernetes
    RuntimeClass's `handler` — picks it.  Pods use the host network, so no CNI is needed,
    unless `pod_network=True`: then a pod asking for its own network namespace gets one with
    an eth0 on a private bridge (`CNI_BRIDGE_PLUGIN`, see `cni_conflist`).
    """

    CRI_NAMESPACE = "k8s.io"

    def __init__(self, import_image: bool = True, cri: bool = False, systemd_cgroup: bool = False,
                 pod_network: bool = False):
        self.scratch = Scratch("containerd")
        s = self.scratch
        self.sock = s / "containerd.sock"
        self.cri = cri
        self.systemd_cgroup = systemd_cgroup
        self.namespace = f"{PREFIX}-{secrets.token_hex(3)}"
        self.cgroup_parent = f"/{PREFIX}-cri-{secrets.token_hex(3)}"
        self.janitor = CgroupJanitor([self.namespace, self.cgroup_parent.lstrip("/")])
        self.shim_sockets: set[str] = set()  # names in SHIM_SOCKETS of our shims (see close)
        # A bridge name is at most 15 characters.
        self.bridge = f"oce2e{secrets.token_hex(3)}" if pod_network else None
        config = containerd_config(s.path, self.sock, cri)
        if cri:
            runtimes = {name: runtime_path(name) for name, path in RUNTIMES.items() if path}
            config += containerd_cri_config(s.path, runtimes, systemd_cgroup, pod_network)
        if self.bridge:
            (s / "cni" / "conf").mkdir(parents=True)
            (s / "cni" / "conf" / "10-ocirun-e2e.conflist").write_text(
                cni_conflist(self.bridge, s / "cni" / "ipam"))
        (s / "config.toml").write_text(config)
        self.daemon = Daemon("containerd", ["containerd", "--config", str(s / "config.toml")],
                             s / "containerd.log", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        try:
            self.daemon.wait_for_socket(self.sock)
            self._check(self.ctr("version"))
            if import_image:
                self._check(self.ctr("image", "import", str(image_archive()), timeout=120))
            if cri:
                for image in (IMAGE, PAUSE_IMAGE):
                    self._check(self.ctr("image", "import", str(image_archive(image)),
                                         namespace=self.CRI_NAMESPACE, timeout=120))
        except BaseException:
            self.close()
            raise

    def _check(self, result: subprocess.CompletedProcess) -> None:
        if result.returncode != 0:
            raise RuntimeError(f"containerd: {describe(result)}\n{self.daemon.log_tail()}")

    def ctr(self, *args: str, namespace: str | None = None, timeout: float = 60,
            tty: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        argv = ["ctr", "--address", str(self.sock), "--namespace", namespace or self.namespace]
        return run(argv + list(args), timeout=timeout, tty=tty, input=input,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def run_args(self, runtime: str) -> list[str]:
        """ctr run flags for `runtime`; with `systemd_cgroup` also `--runc-systemd-cgroup`
        (the task's cgroup must then be given as `--cgroup SLICE:PREFIX:NAME`)."""
        args = ["--runc-binary", runtime_path(runtime), "--runc-root", str(self.scratch / "runc")]
        return args + (["--runc-systemd-cgroup"] if self.systemd_cgroup else [])

    def remove_everything(self, namespace: str | None = None) -> None:
        """Kill and delete every task and container of a namespace."""
        listed = self.ctr("container", "list", "--quiet", namespace=namespace)
        for cid in listed.stdout.split():
            self.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid, namespace=namespace)
            self.ctr("task", "delete", "--force", cid, namespace=namespace)
            self.ctr("container", "delete", cid, namespace=namespace)

    def close(self) -> list[str]:
        problems = []
        self.shim_sockets |= _shim_sockets_of(str(self.scratch.path))
        if self.daemon.proc.poll() is None:
            self.remove_everything()
            if self.cri:
                self.remove_everything(self.CRI_NAMESPACE)
        self.daemon.stop()
        # Shims are started by containerd but outlive it; theirs name our socket in argv.
        problems += [f"shim process {p}" for p in kill_processes_mentioning(str(self.scratch.path))]
        problems += [f"mount {m}" for m in self.scratch.mounts()]
        self.scratch.close()
        # Only our shims' sockets: another test run's containerd shares this directory.
        for name in self.shim_sockets & _listdir(SHIM_SOCKETS):
            problems.append(f"shim socket {SHIM_SOCKETS / name}")
            with contextlib_suppress():
                os.unlink(SHIM_SOCKETS / name)
        # ctr's stdio fifos, the shims' sockets and the shim's default runc root go under
        # /run/containerd whatever the config says.
        _remove_empty_dirs(f"/run/containerd/runc/{self.namespace}")
        _tidy_host_dir("/run/containerd")
        problems += [f"cgroup {c}" for c in self.janitor.clean()]
        if self.bridge:
            # The bridge plugin makes the bridge on first use and never removes it.
            run(["ip", "link", "delete", self.bridge], timeout=20)
            # libcni keeps each attachment's result under /var/lib/cni until its DEL.
            _tidy_host_dir("/var/lib/cni")
        return problems


@contextlib.contextmanager
def cri_containerd(**options):
    """containerd serving the CRI (a runtime entry per runtime; `options` go to Containerd) and
    a CRI client on it: yields (engine, client), then checks the engine left nothing behind.
    Skips, saying why, without containerd or grpcio (cri.py's transport)."""
    require_engine({"containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd"})
    import importlib.util
    if importlib.util.find_spec("grpc") is None:
        pytest.skip("the CRI tests need grpcio (pip install grpcio)")
    if options.get("pod_network") and not os.path.exists(CNI_BRIDGE_PLUGIN):
        options["pod_network"] = False  # only the tests that need it skip: require_pod_network
    import cri
    engine = Containerd(cri=True, **options)
    client = cri.CRIClient(str(engine.sock))
    try:
        yield engine, client
    finally:
        client.close()
        problems = engine.close()
    assert not problems, f"containerd (CRI) left behind: {problems}"


def require_pod_network(engine: Containerd) -> None:
    """Skip unless `engine` gives pods of their own network namespace a CNI network."""
    if not engine.bridge:
        pytest.skip(f"pods of their own network need {CNI_BRIDGE_PLUGIN} "
                    "(Debian's containernetworking-plugins)")


def containerd_config(scratch: Path, sock: Path, cri: bool = False) -> str:
    # Without the CRI plugin containerd needs no pause image and no CNI configuration.
    disabled = "[]" if cri else '["io.containerd.grpc.v1.cri"]'
    return f"""\
version = 2
root = "{scratch / "root"}"
state = "{scratch / "state"}"
disabled_plugins = {disabled}

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{scratch / "opt"}"
"""


def containerd_cri_config(scratch: Path, runtimes: dict[str, str],
                          systemd_cgroup: bool = False, pod_network: bool = False) -> str:
    """The CRI plugin's section: one runtime entry per runtime, selected by `BinaryName`;
    `systemd_cgroup` adds `SystemdCgroup = true` (what kubeadm configures on systemd hosts);
    `pod_network` takes the CNI plugins from Debian's directory (else: none at all)."""
    systemd = "\n    SystemdCgroup = true" if systemd_cgroup else ""
    cni_bin = Path(CNI_BRIDGE_PLUGIN).parent if pod_network else scratch / "cni" / "bin"
    entries = "".join(f"""
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]
    BinaryName = "{path}"
    Root = "{scratch / "runc"}"{systemd}
""" for name, path in runtimes.items())
    return f"""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Pause containers ask for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which
  # this host's bounding set lacks (runc fails too): keep it at containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{scratch / "cni" / "conf"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
{entries}"""


CNI_BRIDGE_PLUGIN = "/usr/lib/cni/bridge"
# No route on the host leads there: the bridge has no address (isGateway false), so pods on
# it reach nothing but each other, and the host's forwarding and firewall stay untouched.
POD_SUBNET = "10.213.0.0/24"


def cni_conflist(bridge: str, ipam_dir: Path) -> str:
    """A CNI network for pods of their own network namespace: eth0 on `bridge`, an address
    from `POD_SUBNET` recorded in `ipam_dir` (not /var/lib/cni/networks)."""
    return json.dumps({"cniVersion": "0.4.0", "name": f"{PREFIX}-{bridge}", "plugins": [{
        "type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": POD_SUBNET, "dataDir": str(ipam_dir)}}]})


def _remove_empty_dirs(top: str) -> None:
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        with contextlib_suppress():
            os.rmdir(dirpath)


def _listdir(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def contextlib_suppress():
    return contextlib.suppress(OSError)


# --------------------------------------------------------------------------- dockerd

DOCKER_RUNTIME_NAMES = {"runc": "runc", "ocirun": "ocirun"}


class Docker:
    """dockerd 20.10 on a private containerd, no bridge and no iptables, ocirun as default.

    ocirun is added with `--add-runtime ocirun=PATH` and made the default; runc stays
    available under docker's built-in name `runc`, so `docker run --runtime NAME` picks either.
    """

    def __init__(self, cgroup_driver: str = "cgroupfs"):
        self.containerd = Containerd(import_image=False)
        self.cgroup_driver = cgroup_driver
        self.scratch = Scratch("docker")
        s = self.scratch
        self.sock = s / "docker.sock"
        self.janitor = CgroupJanitor(["docker"])
        (s / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(s / "key.json")}))
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(s.path),
                    "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": str(s / "client")}
        trace = os.environ.get("OCIRUN_E2E_TRACE")
        if trace and RUNTIMES["runc"]:
            # docker finds its built-in runc on PATH: put the traced one first.
            (s / "bin").mkdir()
            os.symlink(runtime_path("runc"), s / "bin" / "runc")
            self.env["PATH"] = f"{s / 'bin'}:{self.env['PATH']}"
        argv = ["dockerd", "--config-file", str(s / "daemon.json"),
                "--data-root", str(s / "data"), "--exec-root", str(s / "exec"),
                "--pidfile", str(s / "docker.pid"), "-H", f"unix://{self.sock}",
                "--containerd", str(self.containerd.sock),
                "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                "--ip-masq=false", "--storage-driver", "overlay2",
                "--exec-opt", f"native.cgroupdriver={cgroup_driver}",
                "--add-runtime", f"ocirun={runtime_path('ocirun')}",
                "--default-runtime", "ocirun"]
        self.daemon = Daemon("dockerd", argv, s / "dockerd.log", env=self.env)
        try:
            self.daemon.wait_for_socket(self.sock)
            result = self("load", "-i", str(image_archive()), timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"docker load failed: {describe(result)}")
        except BaseException:
            self.close()
            raise

    def __call__(self, *args: str, timeout: float = 60, tty: bool = False,
                 input: str | None = None) -> subprocess.CompletedProcess:
        # Debian's client: /usr/local/bin/docker may be a newer one that 20.10 dislikes.
        return run(["/usr/bin/docker", *args], env=self.env, timeout=timeout, tty=tty,
                   input=input)

    def close(self) -> list[str]:
        problems = []
        if self.daemon.proc.poll() is None:
            listed = self("ps", "--all", "--quiet")
            if listed.stdout.split():
                self("rm", "--force", *listed.stdout.split(), timeout=120)
        self.daemon.stop()
        problems += [f"mount {m}" for m in self.scratch.mounts()]
        self.scratch.close()
        problems += self.containerd.close()
        problems += [f"cgroup {c}" for c in self.janitor.clean()]
        # dockerd makes /run/docker/plugins (plugin discovery) whatever --exec-root says.
        _tidy_host_dir("/run/docker")
        return problems
