"""`ocirun run` and what create hands to the container: exit statuses, signal forwarding,
`--detach`, `--keep`, `--pid-file`, `--preserve-fds`, `LISTEN_FDS`, and no leaked fds.
"""
from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import helpers
from helpers import alive, make_bundle, ok, run_ocirun, state_of


def popen_ocirun(args, root, **kw) -> subprocess.Popen:
    env = dict(os.environ, **kw.pop("env", {}))
    env["PYTHONPATH"] = str(helpers.REPO)
    return subprocess.Popen(helpers.ocirun_command() + ["--root", str(root)] + [str(a) for a in args],
                            stdin=subprocess.DEVNULL, env=env, **kw)


def read_until(proc: subprocess.Popen, marker: bytes, timeout: float = 15) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
    assert marker in buf, f"never saw {marker!r}: {buf!r}"
    return buf


# ============================================================================ exit status

@pytest.mark.parametrize("script,expect", [("exit 0", 0), ("exit 3", 3), ("exit 255", 255)])
def test_run_exit_status(ocirun_root, tmp_path, script, expect):
    bundle = make_bundle(tmp_path, ["sh", "-c", script])
    r = run_ocirun("run", "-b", bundle, "r1", root=ocirun_root)
    assert r.returncode == expect, r.stderr
    assert not (ocirun_root / "r1").exists()  # no --keep: nothing left


def test_run_exit_status_of_a_signal(ocirun_root, tmp_path):
    # A pid-namespace init cannot be killed from inside; with the host's pid namespace the
    # process is an ordinary one and may kill itself.
    namespaces = [{"type": t} for t in ("network", "ipc", "uts", "mount", "cgroup")]
    bundle = make_bundle(tmp_path, ["sh", "-c", "kill -USR2 $$"], linux={"namespaces": namespaces})
    r = run_ocirun("run", "-b", bundle, "r1", root=ocirun_root)
    assert r.returncode == 128 + signal.SIGUSR2, r.stderr
    assert not (ocirun_root / "r1").exists()


def test_run_killed_by_signal_from_outside(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sh", "-c", "echo ready; exec sleep 1000"])
    proc = popen_ocirun(["run", "-b", bundle, "r2"], ocirun_root, stdout=subprocess.PIPE)
    read_until(proc, b"ready")
    pid = state_of(ocirun_root, "r2")["pid"]
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=15) == 128 + signal.SIGKILL
    proc.stdout.close()
    assert not (ocirun_root / "r2").exists()


def test_run_forwards_signals(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sh", "-c",
                                    "trap 'echo got-TERM; exit 9' TERM; trap 'echo got-USR1' USR1; "
                                    "echo ready; while :; do sleep 0.05; done"])
    proc = popen_ocirun(["run", "-b", bundle, "r3"], ocirun_root, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    read_until(proc, b"ready")
    proc.send_signal(signal.SIGUSR1)
    out = read_until(proc, b"got-USR1")
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=15)
    assert b"got-TERM" in out + rest, (out, rest, err)
    assert proc.returncode == 9, err
    assert not (ocirun_root / "r3").exists()


def test_signal_right_after_start_is_not_lost(ocirun_root, tmp_path):
    # A signal that reaches `ocirun run` while the container starts must not kill ocirun (which
    # would leave the container behind) — it is forwarded like any other.
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    proc = popen_ocirun(["run", "-b", bundle, "r4"], ocirun_root, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    # A short interval: the point is to signal as soon as the container exists.
    helpers.wait_until(lambda: (ocirun_root / "r4" / "state.json").exists(), 15, "r4's state.json",
                       interval=0.001)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # a fixed wait on purpose: either outcome below is right, we only look which
    if proc.poll() is not None:
        # Forwarded before execve, it ends the init (as runc's created init dies of it): `run`
        # reports that as the container's exit and cleans up — it did not die itself.
        assert proc.returncode == 128 + signal.SIGINT, proc.stderr.read()
        proc.stderr.close()
        assert not (ocirun_root / "r4").exists()
        return
    # Forwarded after execve: sleep (PID 1, no handler) ignores it and the container runs on.
    proc.send_signal(signal.SIGKILL)  # not forwardable: ocirun dies, the container stays
    proc.wait()
    proc.stderr.close()
    r = run_ocirun("delete", "--force", "r4", root=ocirun_root)
    assert r.returncode == 0


# ============================================================================ --detach, --keep

def test_run_detach_returns_at_once(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    t0 = time.monotonic()
    ok("run", "--detach", "-b", bundle, "d1", root=ocirun_root, timeout=10)
    assert time.monotonic() - t0 < 5
    st = state_of(ocirun_root, "d1")
    assert st["status"] == "running" and alive(st["pid"])
    ok("delete", "--force", "d1", root=ocirun_root)
    assert not alive(st["pid"])


def test_run_keep_leaves_a_stopped_container(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sh", "-c", "exit 4"])
    r = run_ocirun("run", "--keep", "-b", bundle, "k1", root=ocirun_root)
    assert r.returncode == 4
    st = state_of(ocirun_root, "k1")
    assert st["status"] == "stopped" and st["pid"] == 0
    ok("delete", "k1", root=ocirun_root)
    assert not (ocirun_root / "k1").exists()


def test_run_without_keep_leaves_nothing(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"])
    cgroup = "/sys/fs/cgroup/pids" + helpers.read_config(bundle)["linux"]["cgroupsPath"]
    ok("run", "-b", bundle, "n1", root=ocirun_root)
    assert os.listdir(ocirun_root) == []
    assert not os.path.exists(cgroup)


def test_run_output_and_stdin(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sh", "-c", "read line; echo out:$line; echo err >&2"])
    r = run_ocirun("run", "-b", bundle, "io1", root=ocirun_root, input="hello\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "out:hello\n" and r.stderr == "err\n"


# ============================================================================ --pid-file

def test_pid_file_relative_to_cwd(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    work = tmp_path / "work"
    work.mkdir()
    ok("create", "-b", bundle, "--pid-file", "init.pid", "pf1", root=ocirun_root, cwd=work)
    try:
        pid = state_of(ocirun_root, "pf1")["pid"]
        assert (work / "init.pid").read_text() == str(pid)
        assert [n for n in os.listdir(work) if n != "init.pid"] == []  # no temp file left
    finally:
        helpers.delete(ocirun_root, "pf1")


def test_pid_file_in_missing_dir_fails_and_cleans_up(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    cgroup = "/sys/fs/cgroup/pids" + helpers.read_config(bundle)["linux"]["cgroupsPath"]
    r = run_ocirun("create", "-b", bundle, "--pid-file", tmp_path / "no" / "pid", "pf2", root=ocirun_root)
    assert r.returncode == 1 and "pid file" in r.stderr and "no such file or directory" in r.stderr
    assert os.listdir(ocirun_root) == []
    assert not os.path.exists(cgroup)


# ============================================================================ fds

LIST_FDS = ["ls", "-l", "/proc/self/fd"]


def container_fds(output: str) -> dict[int, str]:
    """Parse `ls -l /proc/self/fd` run as the container's process: fd -> link target.

    ls itself holds one more fd: the directory /proc/self/fd it is listing (shown as a link to
    /proc/<pid>/fd).  That one is dropped; everything else was inherited through exec.
    """
    fds = {}
    for line in output.splitlines():
        if "->" not in line:
            continue
        left, target = line.split(" -> ", 1)
        fd = int(left.split()[-1])
        if target.rstrip("/").endswith("/fd") and target.startswith("/proc/"):
            continue
        fds[fd] = target.strip()
    return fds


def _pipe_at(fd_numbers):
    """Pipes whose read ends the child gets at exactly `fd_numbers` (the caller's fds stay high)."""
    keep, ends = [], []
    for _ in fd_numbers:
        r, w = os.pipe()
        hr = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(r)
        keep += [hr, w]
        ends.append(hr)

    def place():
        for src, dst in zip(ends, fd_numbers, strict=True):
            os.dup2(src, dst, inheritable=True)

    return keep, ends, place


def _inode_link(fd: int) -> str:
    return f"pipe:[{os.fstat(fd).st_ino}]"


def test_preserve_fds_passes_exactly_those(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, LIST_FDS)
    keep, ends, place = _pipe_at([3, 4])
    links = [_inode_link(fd) for fd in ends]
    try:
        proc = popen_ocirun(["run", "--preserve-fds", "2", "-b", bundle, "f1"], ocirun_root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=place, pass_fds=(3, 4))
        out, err = proc.communicate(timeout=30)
    finally:
        for fd in keep:
            os.close(fd)
    assert proc.returncode == 0, err
    fds = container_fds(out.decode())
    assert sorted(fds) == [0, 1, 2, 3, 4], out.decode()
    assert [fds[3], fds[4]] == links, out.decode()


def test_no_fd_leaks_without_preserve_fds(ocirun_root, tmp_path):
    # containerd's shim leaves its socket at fd 3 in the runtime; it must not reach the container.
    bundle = make_bundle(tmp_path, LIST_FDS)
    keep, _ends, place = _pipe_at([3, 7])
    try:
        proc = popen_ocirun(["run", "-b", bundle, "f2"], ocirun_root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=place, pass_fds=(3, 7))
        out, err = proc.communicate(timeout=30)
    finally:
        for fd in keep:
            os.close(fd)
    assert proc.returncode == 0, err
    assert sorted(container_fds(out.decode())) == [0, 1, 2], out.decode()


def test_no_fd_leaks_after_create_start(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, LIST_FDS)
    log = tmp_path / "out"
    keep, _ends, place = _pipe_at([3])
    try:
        with open(log, "wb") as f:
            proc = popen_ocirun(["create", "-b", bundle, "f3"], ocirun_root, stdout=f,
                                stderr=subprocess.STDOUT, preexec_fn=place, pass_fds=(3,))
            assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        for fd in keep:
            os.close(fd)
    ok("start", "f3", root=ocirun_root)
    helpers.wait_until(lambda: state_of(ocirun_root, "f3")["status"] == "stopped", 10, "f3 to stop")
    ok("delete", "f3", root=ocirun_root)
    assert sorted(container_fds(log.read_text())) == [0, 1, 2], log.read_text()


def _run_with_listen_fds(root, bundle, cid, listen_pid: str | None, extra: tuple[str, ...] = (), rc: int = 0):
    """`ocirun run` with LISTEN_FDS=1, fd 3 a pipe, LISTEN_PID ocirun's own pid (None) or the
    given one.  A shell sets LISTEN_PID=$$ and execs ocirun, so the pid is ocirun's."""
    keep, ends, place = _pipe_at([3])
    link = _inode_link(ends[0])
    pid_value = "$$" if listen_pid is None else listen_pid
    cmd = helpers.ocirun_command() + ["--root", str(root), "run", *extra, "-b", str(bundle), cid]
    env = dict(os.environ, PYTHONPATH=str(helpers.REPO))
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", f'LISTEN_FDS=1 LISTEN_PID={pid_value} exec "$@"', "sh"] + cmd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, preexec_fn=place, pass_fds=(3,))
        out, err = proc.communicate(timeout=30)
    finally:
        for fd in keep:
            os.close(fd)
    assert proc.returncode == rc, err
    return (out.decode() if rc == 0 else err.decode()), link


SHOW_LISTEN = ["sh", "-c", 'echo "env:$LISTEN_FDS:$LISTEN_PID"; exec ls -l /proc/self/fd']


def test_listen_fds_passes_fd3_and_sets_env(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, SHOW_LISTEN)
    text, link = _run_with_listen_fds(ocirun_root, bundle, "f4", None)
    assert "env:1:1\n" in text, text
    fds = container_fds(text)
    assert sorted(fds) == [0, 1, 2, 3] and fds[3] == link, text


def test_listen_fds_for_another_pid_are_not_passed(ocirun_root, tmp_path):
    # sd_listen_fds(3) and runc: LISTEN_FDS is for the process LISTEN_PID names, not an heir.
    bundle = make_bundle(tmp_path, SHOW_LISTEN)
    text, _link = _run_with_listen_fds(ocirun_root, bundle, "f5", str(os.getpid()))
    assert "env::\n" in text, text
    assert sorted(container_fds(text)) == [0, 1, 2], text


def test_preserved_fds_after_listen_fds_must_be_open(ocirun_root, tmp_path):
    """The preserved fds come after systemd's: with LISTEN_FDS=1 and --preserve-fds 1 the
    container gets 3 and 4, so 4 must be open too (else one of ours would fill it)."""
    bundle = make_bundle(tmp_path, SHOW_LISTEN)
    err, _link = _run_with_listen_fds(ocirun_root, bundle, "f6", None, ("--preserve-fds", "1"), rc=1)
    assert "--preserve-fds 1: fd 4 is not open (fds 3 to 4" in err, err
    assert not (ocirun_root / "f6").exists()


# ============================================================================ concurrency

def test_parallel_runs(ocirun_root, tmp_path):
    bundles = [make_bundle(tmp_path, ["sh", "-c", f"echo hi-{i}; exit {i}"], name=f"b{i}")
               for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: run_ocirun("run", "-b", bundles[i], f"par{i}", root=ocirun_root,
                                                     timeout=60), range(10)))
    for i, r in enumerate(results):
        assert r.returncode == i and r.stdout == f"hi-{i}\n", (i, r.returncode, r.stdout, r.stderr)
    assert os.listdir(ocirun_root) == []
