"""Black-box regressions modelled on real container-runtime breakouts (runc, crun, youki).

Each test names the CVE it models, mounts the attack against ocirun from inside a real container
(or from the caller's side, where the real attack came from there), and checks the host is
untouched.  Every test was written to fail against ocirun with the defence switched off; the
comment of each says which defence it leans on.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from helpers import make_bundle, ok, run_ocirun


HOST_MARKER = "host-side-marker-7f3a"


def leaking(cmd: list, path: Path, fds=range(3, 21)) -> list[str]:
    """`cmd` run with a host directory open (inheritable) at each of `fds`: the careless caller
    (containerd's shim leaks fd 3; runc itself leaked a cgroupfs fd in CVE-2024-21626)."""
    redir = " ".join(f'{n}<"$0"' for n in fds)
    return ["bash", "-c", f'exec {redir}; exec "$@"', str(path), *map(str, cmd)]


def run_cmd(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def fd_numbers(ls_output: str) -> list[int]:
    """fds listed by `ls -l /proc/self/fd`, minus ls's own directory fd."""
    out = []
    for line in ls_output.splitlines():
        if " -> " in line:
            left, target = line.rsplit(" -> ", 1)
            if not (target.startswith("/proc/") and target.rstrip("/").endswith("/fd")):
                out.append(int(left.split()[-1]))
    return sorted(out)


@pytest.fixture
def host_dir(tmp_path):
    """A host directory the container must never see: it holds a marker file."""
    d = tmp_path / "host-dir"
    d.mkdir()
    (d / HOST_MARKER).write_text("secret\n")
    return d


# ============================================================================ CVE-2019-5736

POC = "#!/proc/self/exe\nprint('PWNED-' + 'BY-HOST-INTERPRETER')\n"
PWNED = "PWNED-BY-HOST-INTERPRETER"


def _poc_bundle(tmp_path: Path, args: list[str]) -> Path:
    """A rootfs holding `/poc` (a `#!/proc/self/exe` Python script) and everything the host's
    interpreter needs to run in there (its libraries, its prefix, read-only).  So the attack
    would succeed the moment the kernel ran ocirun's own executable for the script: the only
    thing between the container and the host's interpreter is the sealed stub (exechelper.py)."""
    rootfs = helpers.private_rootfs(tmp_path)
    (rootfs / "poc").write_text(POC)
    os.chmod(rootfs / "poc", 0o755)
    prefix = sys.base_prefix
    mounts = helpers.default_config()["mounts"] + [
        {"destination": "/lib", "type": "bind", "source": "/usr/lib", "options": ["rbind", "ro"]},
        {"destination": "/lib64", "type": "bind", "source": "/usr/lib64", "options": ["rbind", "ro"]},
        {"destination": prefix, "type": "bind", "source": prefix, "options": ["rbind", "ro"]},
        {"destination": "/hostpython", "type": "bind", "source": os.path.realpath(sys.executable),
         "options": ["bind", "ro"]},
    ]
    env = helpers.DEFAULT_ENV + [f"PYTHONHOME={prefix}"]
    return make_bundle(tmp_path, args, rootfs=rootfs, mounts=mounts, process={"env": env})


def test_cve_2019_5736_proc_self_exe_script_via_run(tmp_path, ocirun_root):
    r = run_ocirun("run", "-b", _poc_bundle(tmp_path, ["/poc"]), "x1", root=ocirun_root)
    assert PWNED not in r.stdout + r.stderr
    assert r.returncode == 127, (r.returncode, r.stderr)


def test_cve_2019_5736_proc_self_exe_script_via_exec(tmp_path, ocirun_root):
    ok("run", "-d", "-b", _poc_bundle(tmp_path, ["sleep", "1000"]), "x2", root=ocirun_root)
    try:
        # Control: the host interpreter *can* run in this container when named explicitly, so
        # the PoC below fails because of the defence, not because Python cannot start here.
        ctl = ok("exec", "x2", "/hostpython", "/poc", root=ocirun_root)
        assert ctl.stdout.strip() == PWNED
        r = run_ocirun("exec", "x2", "/poc", root=ocirun_root)
        assert PWNED not in r.stdout + r.stderr
        assert r.returncode == 127, (r.returncode, r.stderr)
    finally:
        helpers.delete(ocirun_root, "x2", check=False)


def test_cve_2019_5736_exec_stub_is_a_sealed_memfd():
    from ocirun import exechelper
    fd = exechelper.sealed_stub_fd()
    if fd < 0:
        pytest.skip("no exec stub for this architecture")
    try:
        assert fcntl.fcntl(fd, exechelper.F_GET_SEALS) == exechelper.ALL_SEALS
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        for attempt in (lambda: os.write(fd, b"x"), lambda: os.ftruncate(fd, 0),
                        lambda: fcntl.fcntl(fd, exechelper.F_ADD_SEALS, 0)):
            with pytest.raises(PermissionError):
                attempt()
        # A fresh open through /proc (what `/proc/<pid>/exe` of a stub process gives) is no better.
        again = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.pwrite(again, b"\x90", 0)
        finally:
            os.close(again)
        assert os.pread(fd, 4, 0) == b"\x7fELF"
    finally:
        os.close(fd)


# ============================================================================ CVE-2016-9962 (and 5736's /proc/<pid>/exe)

_PROBE = r"""
reach() {  # what a container root without CAP_SYS_PTRACE gets from /proc/$1
  r="$1:"
  readlink /proc/$1/fd/0 >/dev/null 2>&1 && r="$r fd-link"
  readlink /proc/$1/exe >/dev/null 2>&1 && r="$r exe-link"
  head -c1 /proc/$1/exe >/dev/null 2>&1 && r="$r exe-open"
  (exec 3</proc/$1/mem) 2>/dev/null && r="$r mem-open"   # PTRACE_MODE_ATTACH, as ptrace(2) wants
  head -c1 /proc/$1/auxv >/dev/null 2>&1 && r="$r auxv"
  echo "$r"
}
for i in $(seq 200); do
  for p in /proc/[0-9]*; do
    grep -q 'victim[.]json' $p/cmdline 2>/dev/null || continue  # (a pattern that is not itself)
    reach ${p#/proc/}
    reach 1
    echo > /etc/passwd
    exit 0
  done
  sleep 0.02
done
echo "never found"
"""


def test_cve_2016_9962_exec_process_is_not_reachable_from_the_container(tmp_path, ocirun_root):
    """While `exec` still runs our Python inside the container, a container root without
    CAP_SYS_PTRACE must not reach it through /proc/<pid>/{fd/N,exe,mem,auxv} (mem needs
    what ptrace(2) attach needs) (CVE-2016-9962: a
    host fd; CVE-2019-5736: the host's interpreter through /proc/<pid>/exe).  The joiner makes
    itself non-dumpable (joiner.main) and the exec'd process inherits that until execve.
    To hold the exec'd process there, /etc/passwd in the image is a FIFO: with no HOME in the
    env, ocirun reads it (user.home_env) and blocks until the probe, another exec'd process,
    writes to it.  Control: the same probe reaches everything of the container's PID 1.
    (No `ls -l` in the probe: it would read the FIFO /etc/passwd for user names.)"""
    rootfs = helpers.private_rootfs(tmp_path)
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    env = helpers.DEFAULT_ENV + ["HOME=/root"]  # the init and the probe do not read /etc/passwd
    bundle = make_bundle(tmp_path, ["sleep", "1000"], rootfs=rootfs, root={"readonly": False},
                         process={"env": env})
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"args": ["echo", "victim-ran"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                                  "env": helpers.DEFAULT_ENV,
                                  "capabilities": helpers.default_config()["process"]["capabilities"]}))
    ok("run", "-d", "-b", bundle, "v", root=ocirun_root)
    try:
        exec_victim = subprocess.Popen(helpers.ocirun_command() + ["--root", str(ocirun_root), "exec", "--process",
                                                                   str(victim), "v"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        probe = run_ocirun("exec", "v", "sh", "-c", _PROBE, root=ocirun_root)
        out, err = exec_victim.communicate(timeout=20)
    finally:
        helpers.delete(ocirun_root, "v", check=False)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "1: fd-link exe-link exe-open mem-open auxv", probe.stdout  # control
    assert lines[0].endswith(":") and lines[0] != "1:", probe.stdout    # found it, reached nothing
    assert exec_victim.returncode == 0 and out == b"victim-ran\n", err


# ============================================================================ CVE-2024-21626

def test_cve_2024_21626_cwd_through_leaked_fd_via_run(tmp_path, ocirun_root, host_dir):
    """runc leaked a host directory fd into its init; `cwd: /proc/self/fd/7` then put the
    container's process in a host directory.  Every fd 3..20 is a host directory here."""
    escaped = []
    for n in range(3, 21):
        bundle = make_bundle(tmp_path, ["sh", "-c", "pwd; ls -a"], name=f"b{n}",
                             process={"cwd": f"/proc/self/fd/{n}"})
        r = run_cmd(leaking(helpers.ocirun_command() + ["--root", ocirun_root, "run", "-b", bundle, f"c{n}"],
                            host_dir))
        if HOST_MARKER in r.stdout or r.returncode == 0:
            escaped.append((n, r.returncode, r.stdout))
        helpers.delete(ocirun_root, f"c{n}", check=False)
    assert not escaped


def test_cve_2024_21626_cwd_through_leaked_fd_via_exec(tmp_path, ocirun_root, host_dir):
    ok("run", "-d", "-b", make_bundle(tmp_path, ["sleep", "1000"]), "e", root=ocirun_root)
    try:
        escaped = []
        for n in range(3, 21):
            r = run_cmd(leaking(helpers.ocirun_command() + ["--root", ocirun_root, "exec", "--cwd",
                                                            f"/proc/self/fd/{n}", "e", "sh", "-c", "pwd; ls -a"],
                                host_dir))
            if HOST_MARKER in r.stdout or r.returncode == 0:
                escaped.append((n, r.returncode, r.stdout))
        assert not escaped
    finally:
        helpers.delete(ocirun_root, "e", check=False)


def test_cve_2024_21626_no_host_fd_in_the_container(tmp_path, ocirun_root, host_dir):
    ls = ["ls", "-l", "/proc/self/fd"]
    r = run_cmd(leaking(helpers.ocirun_command() + ["--root", ocirun_root, "run", "-b",
                                                    make_bundle(tmp_path, ls, name="b1"), "f1"], host_dir))
    assert r.returncode == 0, r.stderr
    assert fd_numbers(r.stdout) == [0, 1, 2], r.stdout
    ok("run", "-d", "-b", make_bundle(tmp_path, ["sleep", "1000"], name="b2"), "f2", root=ocirun_root)
    try:
        r = run_cmd(leaking(helpers.ocirun_command() + ["--root", ocirun_root, "exec", "f2", *ls], host_dir))
        assert r.returncode == 0, r.stderr
        assert fd_numbers(r.stdout) == [0, 1, 2], r.stdout
    finally:
        helpers.delete(ocirun_root, "f2", check=False)


# ============================================================================ CVE-2021-30465

def test_cve_2021_30465_symlinked_mount_destinations_stay_in_the_rootfs(tmp_path, ocirun_root, host_dir):
    """Mount destinations through symlinks planted in the image (absolute, relative `../..`,
    and `-> /`) resolve inside the rootfs (openat2 RESOLVE_IN_ROOT): nothing is created or
    mounted at the host path they name."""
    rootfs = helpers.private_rootfs(tmp_path)
    os.symlink(str(host_dir), rootfs / "abs")
    os.symlink("../" * 12 + str(host_dir).lstrip("/"), rootfs / "rel")
    os.symlink("/", rootfs / "slash")
    src = tmp_path / "volume"
    src.mkdir()
    (src / "payload").write_text("volume\n")
    before = sorted(os.listdir(host_dir))
    mounts = helpers.default_config()["mounts"] + [
        {"destination": "/abs/t1", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/rel/b1", "type": "bind", "source": str(src), "options": ["bind"]},
        {"destination": f"/slash{host_dir}/t2", "type": "tmpfs", "source": "tmpfs"},
    ]
    bundle = make_bundle(tmp_path, ["cat", f"{host_dir}/b1/payload"], rootfs=rootfs, mounts=mounts,
                         root={"readonly": False})
    r = run_ocirun("run", "-b", bundle, "m1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "volume\n"            # the bind landed, inside the container
    assert sorted(os.listdir(host_dir)) == before
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(host_dir) in line]
    inside = rootfs / str(host_dir).lstrip("/")
    assert {"t1", "b1", "t2"} <= set(os.listdir(inside))   # where they belong: in the rootfs


# ============================================================================ CVE-2025-31133

@pytest.mark.parametrize("plant", ["symlink-to-procfs", "symlink-to-host-file", "regular-file"])
def test_cve_2025_31133_masking_never_uses_a_fake_dev_null(tmp_path, ocirun_root, plant):
    """Masked paths are hidden by binding /dev/null over them.  If the image's /dev/null is a
    symlink (to a procfs knob or a host file) or a plain file, that bind would hand the
    container a writable host file at a masked path.  Config without a /dev tmpfs, so the
    image's own /dev is used."""
    secret = tmp_path / "host-secret"
    secret.write_text(f"{HOST_MARKER}\n")
    rootfs = helpers.private_rootfs(tmp_path)
    null = rootfs / "dev" / "null"
    if null.exists() or null.is_symlink():
        null.unlink()
    if plant == "symlink-to-procfs":
        os.symlink("/proc/sys/kernel/core_pattern", null)
    elif plant == "symlink-to-host-file":
        os.symlink(str(secret), null)
    else:
        null.write_text(f"{HOST_MARKER}\n")
    with open("/proc/sys/kernel/core_pattern") as f:
        core_pattern = f.read()
    mounts = [m for m in helpers.default_config()["mounts"] if m["destination"] != "/dev"]
    script = "cat /proc/keys /proc/timer_list; echo; stat -c %F:%t:%T /dev/null"
    bundle = make_bundle(tmp_path, ["sh", "-c", script], rootfs=rootfs, mounts=mounts, root={"readonly": False})
    r = run_ocirun("run", "-b", bundle, "n1", root=ocirun_root)
    assert HOST_MARKER not in r.stdout and core_pattern.strip() not in r.stdout.split()
    if r.returncode == 0:   # masked correctly: a real null device over each masked path
        assert r.stdout.split() == ["character:1:3"], r.stdout
    else:
        assert "/dev/null" in r.stderr and "Traceback" not in r.stderr, r.stderr
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core_pattern
    assert secret.read_text() == f"{HOST_MARKER}\n"


# ============================================================================ host knobs

def test_host_kernel_knobs_are_read_only_with_the_default_config(tmp_path, ocirun_root):
    """readonlyPaths / maskedPaths of `runc spec`'s config (CVE-2019-16884 class: the knobs the
    container must not turn).  The write puts back the value already there, so even a broken
    runtime changes nothing on the host; what counts is whether the write was allowed."""
    with open("/proc/sys/kernel/core_pattern") as f:
        core_pattern = f.read().strip()
    with open("/proc/sys/vm/overcommit_memory") as f:
        overcommit = f.read().strip()
    script = (f"echo '{core_pattern}' > /proc/sys/kernel/core_pattern && echo WROTE-core_pattern; "
              f"echo '{overcommit}' > /proc/sys/vm/overcommit_memory && echo WROTE-overcommit; "
              "wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l")
    r = run_ocirun("run", "-b", make_bundle(tmp_path, ["sh", "-c", script]), "k1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    assert [w for w in r.stdout.split() if not w.isdigit()] == [], r.stdout
    assert r.stdout.split() == ["0", "0", "0"], r.stdout   # masked: empty
    assert "Read-only file system" in r.stderr
