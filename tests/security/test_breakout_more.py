"""More black-box breakout regressions (see test_breakout.py for the first ones).

The same rules: each test names the CVE it models, mounts the attack through the real CLI,
and checks the host is untouched.  Each was run once against ocirun with the defence it leans
on switched off (the docstring says which) and failed there.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from helpers import make_bundle, ok, run_ocirun


HOST_MARKER = "host-side-marker-5c1e"
# A host-global sysctl that is harmless to rewrite with its own value: the tests that could
# reach it through a redirected mount only ever write back what is already there.
HOST_KNOB = "/proc/sys/kernel/printk_ratelimit"


def read(path) -> str:
    with open(path) as f:
        return f.read()


def host_mounts_mentioning(*paths) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if any(str(p) in line for p in paths)]


@pytest.fixture
def sentinel(tmp_path):
    """An empty host directory that nothing may create anything in, nor mount on."""
    d = tmp_path / "host-sentinel"
    d.mkdir()
    return d


def without_mounts(*destinations) -> list[dict]:
    return [m for m in helpers.default_config()["mounts"] if m["destination"] not in destinations]


# ============================================================================ CVE-2022-29162

CAP_NET_BIND_SERVICE = 1 << 10
CAP_SYS_ADMIN = 1 << 21
CAPS_SCRIPT = "grep -E '^Cap(Inh|Amb|Eff)' /proc/self/status"


def parse_caps(out: str) -> dict[str, int]:
    caps = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        caps[name.strip()] = int(value.strip(), 16)
    return caps


def with_leaked_caps(cmd: list) -> list[str]:
    """`cmd` started with CAP_SYS_ADMIN and CAP_NET_ADMIN in its inheritable *and* ambient sets:
    a runtime that only leaves those sets alone hands them to the container."""
    return ["capsh", "--inh=cap_sys_admin,cap_net_admin", "--addamb=cap_sys_admin,cap_net_admin",
            "--", "-c", 'exec "$@"', "leak", *map(str, cmd)]


def run_cmd(cmd: list, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def capsh():
    if shutil.which("capsh") is None:
        pytest.skip("capsh is not installed")
    control = parse_caps(run_cmd(with_leaked_caps(["sh", "-c", CAPS_SCRIPT])).stdout)
    assert control["CapInh"] and control["CapAmb"], control   # the wrapper does leak them


def test_cve_2022_29162_no_inheritable_or_ambient_caps_after_run_and_exec(tmp_path, ocirun_root, capsh):
    """runc's `exec --cap` put capabilities in the inheritable set, where a file capability of
    an executable in the image could turn them into permitted ones.  Neither run, exec nor
    `exec --cap` may leave anything in CapInh/CapAmb the config did not ask for, not even what
    the caller of ocirun itself carried (apply_caps sets inheritable with capset and clears
    ambient explicitly)."""
    ocirun = helpers.ocirun_command() + ["--root", ocirun_root]
    r = run_cmd(with_leaked_caps(ocirun + ["run", "-b", make_bundle(tmp_path, ["sh", "-c", CAPS_SCRIPT]), "r1"]))
    assert r.returncode == 0, r.stderr
    caps = parse_caps(r.stdout)
    assert caps["CapInh"] == 0 and caps["CapAmb"] == 0, r.stdout
    ok("run", "-d", "-b", make_bundle(tmp_path, ["sleep", "1000"], name="b2"), "r2", root=ocirun_root)
    try:
        for extra in ([], ["--cap", "CAP_SYS_ADMIN"]):
            r = run_cmd(with_leaked_caps(ocirun + ["exec", *extra, "r2", "sh", "-c", CAPS_SCRIPT]))
            assert r.returncode == 0, r.stderr
            caps = parse_caps(r.stdout)
            assert caps["CapInh"] == 0 and caps["CapAmb"] == 0, (extra, r.stdout)
            assert bool(caps["CapEff"] & CAP_SYS_ADMIN) == bool(extra), (extra, r.stdout)  # --cap did apply
    finally:
        helpers.delete(ocirun_root, "r2", check=False)


def test_cve_2022_29162_ambient_gets_only_what_was_asked(tmp_path, ocirun_root, capsh):
    """A non-root process asking for ambient CAP_NET_BIND_SERVICE gets exactly that one, in
    inheritable and ambient, even when ocirun's caller leaked others into both sets."""
    want = ["CAP_NET_BIND_SERVICE"]
    caps = {"bounding": want, "effective": want, "permitted": want, "inheritable": want, "ambient": want}
    bundle = make_bundle(tmp_path, ["sh", "-c", CAPS_SCRIPT], process={"user": {"uid": 1000, "gid": 1000},
                                                                       "capabilities": caps})
    ocirun = helpers.ocirun_command() + ["--root", ocirun_root]
    r = run_cmd(with_leaked_caps(ocirun + ["run", "-b", bundle, "a1"]))
    assert r.returncode == 0, r.stderr
    got = parse_caps(r.stdout)
    assert got == {"CapInh": CAP_NET_BIND_SERVICE, "CapEff": CAP_NET_BIND_SERVICE,
                   "CapAmb": CAP_NET_BIND_SERVICE}, r.stdout


# ============================================================================ CVE-2019-16884 / CVE-2023-27561 / CVE-2025-52881

PROC = {"destination": "/proc", "type": "proc", "source": "proc"}


def _fake_proc(tmp_path: Path) -> Path:
    """A host directory dressed up as procfs: a bind of it over /proc (or part of it) would
    send the masks, the read-only paths and label/sysctl writes into plain files."""
    fake = tmp_path / "fakeproc"
    (fake / "sys" / "kernel").mkdir(parents=True)
    (fake / "sys" / "kernel" / "core_pattern").write_text(f"{HOST_MARKER}\n")
    (fake / "attr").mkdir()
    (fake / "attr" / "current").write_text(f"{HOST_MARKER}\n")
    return fake


REFUSED_PROC_MOUNTS = {
    "tmpfs-after-proc": lambda fake: [PROC, {"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}],
    "tmpfs-before-proc": lambda fake: [{"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}, PROC],
    "bind-over-proc": lambda fake: [PROC, {"destination": "/proc", "type": "bind", "source": str(fake),
                                           "options": ["rbind"]}],
    # type says proc, options say bind: it is a bind of the fake, not a fresh procfs
    "proc-typed-bind": lambda fake: [{"destination": "/proc", "type": "proc", "source": str(fake),
                                      "options": ["rbind"]}],
    "bind-over-proc-sys": lambda fake: [PROC, {"destination": "/proc/sys", "type": "bind",
                                               "source": str(fake / "sys"), "options": ["rbind"]}],
    "bind-over-proc-self-attr": lambda fake: [PROC, {"destination": "/proc/self/attr", "type": "bind",
                                                     "source": str(fake / "attr"), "options": ["rbind"]}],
    "bind-over-proc-knob": lambda fake: [PROC, {"destination": "/proc/sys/kernel/core_pattern", "type": "bind",
                                                 "source": str(fake / "sys" / "kernel" / "core_pattern"),
                                                 "options": ["bind"]}],
    # through a symlink the image plants: the destination's *resolved* place is what counts
    "bind-through-image-symlink": lambda fake: [PROC, {"destination": "/evil/kernel", "type": "bind",
                                                       "source": str(fake / "sys" / "kernel"),
                                                       "options": ["rbind"]}],
}


@pytest.mark.parametrize("case", sorted(REFUSED_PROC_MOUNTS))
def test_cve_2019_16884_nothing_but_procfs_on_proc(tmp_path, ocirun_root, case):
    """A volume (or any non-procfs mount) over /proc, /proc/sys or /proc/self/attr hides the
    real procfs behind files the container controls: the masks, read-only paths and the LSM
    label write land there, and the kernel's knobs stay writable wherever procfs ended up
    (CVE-2019-16884; CVE-2025-52881 redirected runc's own procfs writes the same way).
    ocirun's guard (mounts._check_proc_destination) refuses them at create, with a clear error."""
    fake = _fake_proc(tmp_path)
    before = {p: read(p) for p in fake.rglob("*") if p.is_file()}
    rootfs = helpers.private_rootfs(tmp_path)
    os.symlink("/proc/sys", rootfs / "evil")
    mounts = REFUSED_PROC_MOUNTS[case](fake) + without_mounts("/proc")
    script = "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern; stat -f -c %T /proc"
    bundle = make_bundle(tmp_path, ["sh", "-c", script], rootfs=rootfs, mounts=mounts)
    r = run_ocirun("run", "-b", bundle, "p1", root=ocirun_root)
    helpers.delete(ocirun_root, "p1", check=False)
    assert r.returncode != 0 and "cannot be mounted because" in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p: read(p) for p in fake.rglob("*") if p.is_file()} == before
    assert not host_mounts_mentioning(fake)


def test_cve_2019_16884_lxcfs_style_files_may_still_be_bound_below_proc(tmp_path, ocirun_root):
    """Control for the guard above: binds onto the files lxcfs serves are allowed (runc's list)."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 1 kB {HOST_MARKER}\n")
    mounts = [PROC, {"destination": "/proc/meminfo", "type": "bind", "source": str(meminfo),
                     "options": ["bind", "ro"]}] + without_mounts("/proc")
    r = ok("run", "-b", make_bundle(tmp_path, ["cat", "/proc/meminfo"], mounts=mounts), "l1", root=ocirun_root)
    assert HOST_MARKER in r.stdout


@pytest.mark.parametrize("link", ["/tmp", "host-looking", "relative-escape"])
def test_cve_2023_27561_proc_symlink_in_the_image(tmp_path, ocirun_root, sentinel, link):
    """The image's /proc is a symlink (CVE-2019-19921, back in runc as CVE-2023-27561): procfs
    must never be mounted through it (it would land wherever the link points, while the masks
    and read-only paths go to the link's name).  ocirun refuses a proc mount on anything but a
    real directory (mounts._check_ordinary_dir), and the link resolves inside the rootfs anyway
    (paths.py), so the host path it names is never touched."""
    rootfs = helpers.private_rootfs(tmp_path)
    (rootfs / "proc").rmdir()
    target = {"/tmp": "/tmp", "host-looking": str(sentinel),
              "relative-escape": "../" * 12 + str(sentinel).lstrip("/")}[link]
    os.symlink(target, rootfs / "proc")
    bundle = make_bundle(tmp_path, ["sh", "-c", "stat -f -c %T /proc; wc -c < /proc/kcore"], rootfs=rootfs,
                         root={"readonly": False})
    r = run_ocirun("run", "-b", bundle, "s1", root=ocirun_root)
    helpers.delete(ocirun_root, "s1", check=False)
    if r.returncode == 0:   # allowed only if procfs and its masks ended up where /proc leads
        assert r.stdout.split() == ["proc", "0"], r.stdout
    else:
        assert "must be mounted on ordinary directory" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(sentinel) == []
    assert not host_mounts_mentioning(sentinel)


# ============================================================================ CVE-2025-52565

def _run_with_console(tmp_path: Path, bundle: Path, cid: str, root: Path) -> str:
    """create with --console-socket, start, and return what the container wrote to its pty."""
    from ocirun import console
    path = tmp_path / "console.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    try:
        ok("create", "-b", bundle, "--console-socket", path, cid, root=root)
        try:
            conn, _ = srv.accept()
            with conn:
                master = console.recv_console_fd(conn.fileno())
            try:
                ok("start", cid, root=root)
                return _read_until_hangup(master)
            finally:
                os.close(master)
        finally:
            helpers.delete(root, cid, check=False)
    finally:
        srv.close()


def _read_until_hangup(fd: int, timeout: float = 10) -> str:
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the container's side is closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


# The container checks what /dev/console is, then writes the knob's own value into it: a
# harmless write to a pty, or (without the defence) a write into the host's sysctl.
CONSOLE_SCRIPT = f"stat -c 'console=%F:%t:%T' /dev/console; cat {HOST_KNOB} > /dev/console"
PTY_MAJOR_HEX = "88"  # 136: Unix98 pty slaves


def _assert_console_is_the_pty(out: str) -> None:
    line = next((ln for ln in out.splitlines() if ln.startswith("console=")), out)
    assert line.startswith(f"console=character special file:{PTY_MAJOR_HEX}:"), out


def test_cve_2025_52565_dev_pts_n_symlinks_never_become_dev_console(tmp_path, ocirun_root):
    """runc bind-mounted the *path* /dev/pts/N on /dev/console.  Here the image's /dev/pts is
    a plain directory with ptmx -> pts/ptmx and 0..63 -> a host sysctl, and the config puts the
    devpts one level down: the pty comes from the real devpts, but its name /dev/pts/N is the
    planted symlink.  Following it bound the procfs knob on /dev/console, writable (the bind
    predates readonlyPaths).  ocirun mounts the slave from its fd (console.mount_console)."""
    knob = read(HOST_KNOB)
    rootfs = helpers.private_rootfs(tmp_path)
    pts = rootfs / "dev" / "pts"
    pts.mkdir()
    os.symlink("pts/ptmx", pts / "ptmx")
    for n in range(64):
        os.symlink(HOST_KNOB, pts / str(n))
    mounts = without_mounts("/dev", "/dev/pts") + [
        {"destination": "/dev/pts/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}]
    bundle = make_bundle(tmp_path, ["sh", "-c", CONSOLE_SCRIPT], rootfs=rootfs, mounts=mounts,
                         root={"readonly": False}, process={"terminal": True})
    out = _run_with_console(tmp_path, bundle, "t1", ocirun_root)
    _assert_console_is_the_pty(out)
    assert read(HOST_KNOB) == knob


def test_cve_2025_52565_dev_console_symlink_planted_before_the_console(tmp_path, ocirun_root):
    """A process racing ocirun (played by a createContainer hook, which runs in the container's
    mount namespace just before the console is set up) makes /dev/console a symlink to a host
    sysctl: it is replaced, never followed, and /dev/console is the container's pty."""
    knob = read(HOST_KNOB)
    rootfs = helpers.private_rootfs(tmp_path)
    plant = f"ln -sfn {HOST_KNOB} {rootfs}/dev/console && ln -sfn {HOST_KNOB} {rootfs}/dev/tty0"
    hooks = {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", plant]}]}
    bundle = make_bundle(tmp_path, ["sh", "-c", CONSOLE_SCRIPT], rootfs=rootfs, root={"readonly": False},
                         process={"terminal": True}, hooks=hooks)
    out = _run_with_console(tmp_path, bundle, "t2", ocirun_root)
    _assert_console_is_the_pty(out)
    assert read(HOST_KNOB) == knob


# ============================================================================ /dev as a symlink

@pytest.mark.parametrize("plant", ["dev-absolute", "dev-relative", "dev-subdir"])
def test_dev_symlink_out_of_the_rootfs_never_gets_device_nodes(tmp_path, ocirun_root, sentinel, plant):
    """With no tmpfs over /dev, the image's /dev (or a directory below it that linux.devices
    names) is a symlink to a host directory: every mknod, the /dev symlinks and the devpts,
    shm and mqueue mounts must stay inside the rootfs (devices.py creates through paths.py)."""
    rootfs = helpers.private_rootfs(tmp_path)
    dev = rootfs / "dev"
    if plant == "dev-subdir":
        os.symlink(str(sentinel), dev / "sub")
    else:
        dev.rmdir()
        os.symlink(str(sentinel) if plant == "dev-absolute" else "../" * 12 + str(sentinel).lstrip("/"), dev)
    devices = [{"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
               {"path": "/dev/sub/xzero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666}]
    bundle = make_bundle(tmp_path, ["sh", "-c", "stat -c %F:%t:%T /dev/xnull /dev/sub/xzero /dev/null"],
                         rootfs=rootfs, root={"readonly": False}, mounts=without_mounts("/dev"),
                         linux={"devices": devices})
    r = run_ocirun("run", "-b", bundle, "d1", root=ocirun_root)
    helpers.delete(ocirun_root, "d1", check=False)
    assert os.listdir(sentinel) == []
    assert not host_mounts_mentioning(sentinel)
    if r.returncode == 0:
        assert r.stdout.splitlines() == ["character special file:1:3", "character special file:1:5",
                                    "character special file:1:3"], r.stdout
    else:
        assert "Traceback" not in r.stderr and r.stderr.strip(), r.stderr


# ============================================================================ CVE-2024-45310

RACE_SECONDS = 8
# In the shared volume: `d1`, `d2` flip between a directory and a symlink out of the rootfs.
# Self-healing: ocirun may recreate a name while it is missing; `flips` counts full cycles.
RACER = """
cd /vol
flip() {
  mv -T "$1" "$1.dir" 2>/dev/null || rm -rf "$1"
  ln -sfn "$2" "$1.new" && mv -Tf "$1.new" "$1" 2>/dev/null
  rm -f "$1" 2>/dev/null
  mv -T "$1.dir" "$1" 2>/dev/null || mkdir -p "$1"
}
mkdir -p d1 d2
touch ready
i=0
while :; do
  flip d1 "$1"; flip d2 "$2"
  i=$((i + 1)); [ $((i % 50)) = 0 ] && echo $i > flips
done
"""


def test_cve_2024_45310_rename_race_on_a_shared_volume(tmp_path, ocirun_root, sentinel):
    """runc's MkdirAll could be raced through a volume shared with a running container into
    creating directories (or files) on the host.  Here a container keeps flipping two entries
    of a shared volume between a directory and a symlink to a host directory (absolute, and
    `../../..`) while ocirun creates containers with mounts below them: no mount and no
    new file ever reaches the host (everything goes through openat2 RESOLVE_IN_ROOT)."""
    vol = tmp_path / "vol"
    vol.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "payload").write_text("payload\n")
    (tmp_path / "srcfile").write_text("file\n")
    escape_abs, escape_rel = str(sentinel), "../" * 12 + str(sentinel).lstrip("/")
    racer_mounts = helpers.default_config()["mounts"] + [
        {"destination": "/vol", "type": "bind", "source": str(vol), "options": ["rbind"]}]
    racer = make_bundle(tmp_path, ["sh", "-c", RACER, "racer", escape_abs, escape_rel], name="racer",
                        mounts=racer_mounts, rootfs=helpers.private_rootfs(tmp_path, "racer-rootfs"))
    rootfs = helpers.private_rootfs(tmp_path)
    victim_mounts = racer_mounts + [
        {"destination": "/vol/d1/t/a", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/vol/d2/b/c", "type": "bind", "source": str(src), "options": ["rbind"]},
        {"destination": "/vol/d1/f", "type": "bind", "source": str(tmp_path / "srcfile"), "options": ["bind"]},
        {"destination": "/vol/d2/x/y/z", "type": "tmpfs", "source": "tmpfs"},
    ]
    victim = make_bundle(tmp_path, ["true"], name="victim", rootfs=rootfs, mounts=victim_mounts,
                         root={"readonly": False})
    ok("run", "-d", "-b", racer, "racer", root=ocirun_root)
    runs = 0
    try:
        helpers.wait_until(lambda: (vol / "ready").exists(), 5, "the racer to be ready")
        end = time.monotonic() + RACE_SECONDS
        while time.monotonic() < end:
            run_ocirun("run", "-b", victim, f"v{runs}", root=ocirun_root)
            helpers.delete(ocirun_root, f"v{runs}", check=False)
            runs += 1
            assert os.listdir(sentinel) == [], f"after {runs} runs"
    finally:
        helpers.delete(ocirun_root, "racer", check=False)
    assert runs >= 10 and int(read(vol / "flips")) >= 1000, (runs, read(vol / "flips"))
    assert os.listdir(sentinel) == []
    assert not host_mounts_mentioning(tmp_path)
