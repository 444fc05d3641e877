"""`ocirun exec` against real containers, checked from inside the exec'd process.

One long-lived busybox container (`box`, running `sleep 1000`) serves most tests: exec does not
change it.  Tests that need another container (a seccomp profile, paused or stopped states, a
different process) make their own.  Each check looks at what the exec'd process itself sees:
/proc/self/{ns,status,cgroup,fd}, `id`, `pwd`, its own output and exit status.
"""
from __future__ import annotations

import functools
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

import helpers
from helpers import make_bundle, ok, run_ocirun, state_of


FIXTURES = helpers.FIXTURES
NS_LINKS = ["net", "ipc", "uts", "mnt", "pid", "cgroup"]
CAP_SYS_ADMIN = 21


# `exec` itself failed: runc's status 255 (not one the process could have returned) and runc's
# "exec failed: " before the one line that names the problem.
one_line_error = functools.partial(helpers.one_line_error, status=255, prefix="exec failed: ")


def container_pids(root, cid) -> list[int]:
    return json.loads(ok("ps", "--format", "json", cid, root=root).stdout)


def status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def with_fds(cmd: list[str], mapping: dict[int, int]) -> tuple[list[str], tuple[int, ...]]:
    """`cmd` started by bash with our fd `src` at fd `dst` for each dst: src, nothing else added.

    (subprocess's pass_fds cannot place an fd at a given number; bash redirections can.)"""
    redir = " ".join(f"{dst}<&{src}" for dst, src in mapping.items())
    close = " ".join(f"{src}<&-" for src in mapping.values() if src not in mapping)
    return ["bash", "-c", f'exec {redir} {close}; exec "$@"', "bash", *map(str, cmd)], tuple(mapping.values())


def fds_seen(ls_output: str) -> dict[int, str]:
    """`ls -l /proc/self/fd` of the exec'd `ls`: fd -> target, minus ls's own directory fd."""
    fds = {}
    for line in ls_output.splitlines():
        m = re.search(r" (\d+) -> (.*)$", line)
        if m and not re.fullmatch(r"/proc/\d+/fd/?", m.group(2)):
            fds[int(m.group(1))] = m.group(2)
    return fds


# ============================================================================ the shared container

@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A running container (sleep 1000) with noNewPrivileges off, so --no-new-privs shows."""
    root = helpers.new_state_root()
    bundle = make_bundle(tmp_path_factory.mktemp("box"), ["sleep", "1000"],
                         process={"noNewPrivileges": False})
    ok("run", "-d", "-b", bundle, "box", root=root)
    try:
        yield root, state_of(root, "box")["pid"]
    finally:
        helpers.delete(root, "box", check=False)
        left = os.listdir(root)
        os.rmdir(root) if not left else None
        assert not left, left


def exec_in(box, *args, **kw) -> subprocess.CompletedProcess:
    root, _ = box
    return run_ocirun("exec", *args, root=root, **kw)


def exec_ok(box, *args, **kw) -> str:
    r = exec_in(box, *args, **kw)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


# ============================================================================ args form

@pytest.mark.parametrize("code", [0, 5, 255])
def test_output_and_exit_status(box, code):
    r = exec_in(box, "box", "sh", "-c", f"echo out; echo err >&2; exit {code}")
    assert r.returncode == code, r.stderr
    assert r.stdout == "out\n" and r.stderr == "err\n"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_by_a_signal_is_128_plus_n(box, sig):
    r = exec_in(box, "box", "sh", "-c", f"kill -{int(sig)} $$")
    assert r.returncode == 128 + sig, r.stderr


def test_joins_every_namespace_of_the_container(box):
    _, init = box
    script = ("hostname; tr '\\0' ' ' </proc/1/cmdline; echo; "
              + "".join(f"readlink /proc/self/ns/{n}; " for n in NS_LINKS)
              + "cmp -s /proc/self/cgroup /proc/1/cgroup && echo same-cgroup; "
              + "test -x /bin/busybox && ! test -e /work && echo busybox-root")
    lines = exec_ok(box, "box", "sh", "-c", script).splitlines()
    assert lines[0] == "ocirun"                       # the container's hostname (uts)
    assert lines[1].strip() == "sleep 1000"           # its PID 1 (pid ns + its /proc)
    for n, seen in zip(NS_LINKS, lines[2:2 + len(NS_LINKS)], strict=True):
        assert seen == os.readlink(f"/proc/{init}/ns/{n}"), n
        assert seen != os.readlink(f"/proc/self/ns/{n}"), n   # and not the host's
    assert lines[2 + len(NS_LINKS):] == ["same-cgroup", "busybox-root"]


def test_ps_shows_the_container_processes_only(box):
    out = exec_ok(box, "box", "ps", "-o", "pid,args")
    rows = [r.split(None, 1) for r in out.splitlines()[1:]]
    assert rows[0] == ["1", "sleep 1000"], out
    assert [r[1] for r in rows[1:]] == ["ps -o pid,args"], out


# ============================================================================ flags

@pytest.mark.parametrize("flags,script,want", [
    (["--env", "FOO=bar", "-e", "BAZ=two words"], 'echo "$FOO|$BAZ|$PATH"', "bar|two words|/usr/sbin:/usr/bin:/sbin:/bin"),
    (["--cwd", "/etc"], "pwd", "/etc"),
    (["--user", "1000:1001"], "echo $(id -u) $(id -g)", "1000 1001"),
    (["--user", "1000"], "echo $(id -u) $(id -g)", "1000 0"),
    (["--user", "1000:1001", "--additional-gids", "10", "-g", "20"], "id -G", "1001 10 20"),
    (["--no-new-privs"], "grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t1"),
    ([], "grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t0"),
])
def test_process_flags(box, flags, script, want):
    assert exec_ok(box, *flags, "box", "sh", "-c", script).strip() == want


def test_cap_flag_adds_the_capability(box):
    without = int(status_field(exec_ok(box, "box", "cat", "/proc/self/status"), "CapEff"), 16)
    with_it = int(status_field(exec_ok(box, "--cap", "CAP_SYS_ADMIN", "box", "cat", "/proc/self/status"), "CapEff"), 16)
    assert not without >> CAP_SYS_ADMIN & 1
    assert with_it >> CAP_SYS_ADMIN & 1
    assert with_it & ~(1 << CAP_SYS_ADMIN) == without  # nothing else changed


def test_preserve_fds_passes_exactly_those(box):
    root, _ = box
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        cmd, keep = with_fds(helpers.ocirun_command() + ["--root", root, "exec", "--preserve-fds", "2",
                                                         "box", "ls", "-l", "/proc/self/fd"], {3: r1, 4: r2})
        p = subprocess.run(cmd, pass_fds=keep, capture_output=True, text=True, timeout=30)
        want = {3: f"pipe:[{os.fstat(r1).st_ino}]", 4: f"pipe:[{os.fstat(r2).st_ino}]"}
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    assert p.returncode == 0, p.stderr
    fds = fds_seen(p.stdout)
    assert sorted(fds) == [0, 1, 2, 3, 4], p.stdout
    assert {3: fds[3], 4: fds[4]} == want


def test_no_host_fd_leaks_into_the_exec_process(box, tmp_path):
    # The caller leaks a host directory at fd 7 and 3 (containerd's shim leaks fd 3).
    root, _ = box
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        cmd, keep = with_fds(helpers.ocirun_command() + ["--root", root, "exec", "box", "ls", "-l", "/proc/self/fd"],
                             {3: d, 7: d})
        p = subprocess.run(cmd, pass_fds=keep, capture_output=True, text=True, timeout=30)
    finally:
        os.close(d)
    assert p.returncode == 0, p.stderr
    assert sorted(fds_seen(p.stdout)) == [0, 1, 2], p.stdout


def _recv_pty_master(server: socket.socket, timeout: float = 15) -> int:
    server.settimeout(timeout)
    conn, _ = server.accept()
    with conn:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1, msg
    return fds[0]


def _read_all(fd: int, timeout: float = 15) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the last slave fd closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_tty_with_console_socket(box, tmp_path):
    root, _ = box
    sock_path = tmp_path / "console.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    proc = subprocess.Popen(helpers.ocirun_command() + ["--root", str(root), "exec", "--tty", "--console-socket",
                                                        str(sock_path), "box", "sh", "-c", "tty; test -t 0 && echo stdin-tty; exit 3"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        master = _recv_pty_master(server)
        try:
            out = _read_all(master).decode()
        finally:
            os.close(master)
        _, err = proc.communicate(timeout=15)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out
    assert "stdin-tty" in out


_DETACH_PROBE = r"""
import json, os, subprocess, sys, tempfile, prctl
prctl.set_child_subreaper(True)       # what conmon / containerd-shim are to runc
ocirun, root, pid_file, init = sys.argv[1:5]
with tempfile.TemporaryFile() as err:  # a file, not a pipe: the detached process keeps it open
    r = subprocess.run([ocirun, "--root", root, "exec", "--detach", "--pid-file", pid_file,
                        "box", "sh", "-c", "exec sleep 1000"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=err, timeout=30)
    err.seek(0)
    out = {"rc": r.returncode, "stderr": err.read().decode()}
pid = int(open(pid_file).read())
with open(f"/proc/{pid}/status") as f:
    out["ppid"] = int(next(l for l in f if l.startswith("PPid:")).split()[1])
out["cgroup"] = open(f"/proc/{pid}/cgroup").read()
out["init_cgroup"] = open(f"/proc/{init}/cgroup").read()
out["me"], out["pid"] = os.getpid(), pid
os.kill(pid, 9)
waited, status = os.waitpid(pid, 0)   # ours to reap: we are its subreaper
out["reaped"] = waited == pid and os.WIFSIGNALED(status)
print(json.dumps(out))
"""


def test_detach_with_pid_file_leaves_the_process_to_the_subreaper(box, tmp_path):
    root, init = box
    pid_file = tmp_path / "exec.pid"
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _DETACH_PROBE, helpers.ocirun_command()[0], str(root),
                        str(pid_file), str(init)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["rc"] == 0, got["stderr"]
    assert time.monotonic() - started < 20          # detached: did not wait for `sleep 1000`
    assert got["ppid"] == got["me"]                 # re-parented to the caller's subreaper
    assert got["cgroup"] == got["init_cgroup"]      # in the container's cgroup, every hierarchy
    assert got["reaped"]
    assert container_pids(root, "box") == [init]


@pytest.mark.parametrize("detach", [True, False])
def test_a_pid_file_that_cannot_be_written_leaves_no_process(box, tmp_path, detach):
    """exec fails (255) when --pid-file cannot be written, so the process it started must not
    live on unknown to its caller (runc kills it too)."""
    root, init = box
    flags = ["--detach"] if detach else []
    r = run_ocirun("exec", *flags, "--pid-file", tmp_path / "missing" / "x.pid", "box", "sleep", "4243",
                   root=root, timeout=30)
    assert r.returncode == 255 and "pid" in r.stderr, (r.returncode, r.stderr)
    deadline = time.monotonic() + 10  # detached, the process is the init's to reap after the kill
    while container_pids(root, "box") != [init] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container_pids(root, "box") == [init]


# ============================================================================ --process FILE

def _own_hard_limit(kind: str) -> int:
    return resource.getrlimit(getattr(resource, kind))[1]


def _adapt_exec_process(doc: dict) -> dict:
    """The smallest changes this host needs, as test_client_configs.adapt() makes to configs:
    * args           kept: the engines' own `echo exec-out; ps; exit 5` already proves output,
                     the container's process table and the exit status.
    * user           kept (uid 0, gid 0; docker and containerd add additionalGids [0]).
    * rlimits        hard and soft capped at our own hard limit: raising one needs
                     CAP_SYS_RESOURCE, which this host's bounding set lacks.
    * capabilities   names our bounding set lacks are dropped (none of the three asks for one).
    * oomScoreAdj    raised to our own value if below it (lowering needs CAP_SYS_RESOURCE)."""
    for rl in doc.get("rlimits", []):
        hard = _own_hard_limit(rl["type"])
        if hard != resource.RLIM_INFINITY:
            rl["hard"] = min(rl["hard"], hard)
            rl["soft"] = min(rl["soft"], rl["hard"])
    with open("/proc/self/status") as f:
        bnd = int(status_field(f.read(), "CapBnd"), 16)
    from ocirun import capabilities
    have = {n for n, bit in capabilities.CAPS.items() if bnd >> bit & 1}
    for key, names in (doc.get("capabilities") or {}).items():
        doc["capabilities"][key] = [n for n in names if n in have]
    if "oomScoreAdj" in doc:
        with open("/proc/self/oom_score_adj") as f:
            doc["oomScoreAdj"] = max(doc["oomScoreAdj"], int(f.read()))
    return doc


@pytest.mark.parametrize("engine", ["containerd", "docker", "podman"])
def test_engine_exec_process_files(box, tmp_path, engine):
    doc = json.loads((FIXTURES / f"{engine}-exec-process.json").read_text())
    path = tmp_path / "process.json"
    path.write_text(json.dumps(_adapt_exec_process(doc)))
    r = exec_in(box, "--process", path, "box")
    assert r.returncode == 5, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "exec-out"
    assert "sleep 1000" in lines[2] and lines[2].split()[0] == "1", r.stdout  # ps: the container's PID 1


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_a_process_file_without_cwd_and_an_env_without_a_name_are_refused(box, tmp_path, runc_root):
    """process.cwd is REQUIRED (runc refuses an exec --process without it; it ran in /), and an
    env entry needs a name before its '=' (runc refuses "=x"; it reached the process)."""
    path = tmp_path / "process.json"
    path.write_text(json.dumps({"args": ["true"], "user": {"uid": 0, "gid": 0}}))
    r = exec_in(box, "--process", path, "box")
    assert r.returncode == 255 and r.stderr.strip() == "exec failed: process.cwd: is required (an absolute path)", \
        r.stderr
    r = exec_in(box, "--env", "=x", "box", "true")
    assert r.returncode == 255 and "process.env[" in r.stderr and "'=x' is not of the form KEY=value" in r.stderr, \
        r.stderr
    bundle = make_bundle(tmp_path, ["sleep", "1000"], name="rb")
    ok("run", "-d", "-b", bundle, "rx", root=runc_root, run=helpers.run_runc)
    try:
        assert helpers.run_runc("exec", "--process", path, "rx", root=runc_root).returncode != 0
        assert helpers.run_runc("exec", "--env", "=x", "rx", "true", root=runc_root).returncode != 0
    finally:
        helpers.delete(runc_root, "rx", run=helpers.run_runc, check=False)


# ============================================================================ seccomp

def test_container_seccomp_profile_applies_to_exec(tmp_path, ocirun_root):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    bundle = make_bundle(tmp_path, ["sleep", "1000"], linux={"seccomp": profile},
                         mounts=helpers.default_config()["mounts"] + [
                             {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}])
    ok("run", "-d", "-b", bundle, "sc", root=ocirun_root)
    try:
        r = run_ocirun("exec", "sc", "mkdir", "/tmp/x", root=ocirun_root)
        assert r.returncode == 1
        assert "Operation not permitted" in r.stderr, r.stderr   # EPERM from the filter
        # ...and only mkdir: /tmp is a writable tmpfs, so without the filter it would work.
        assert ok("exec", "sc", "sh", "-c", "touch /tmp/y && echo made", root=ocirun_root).stdout == "made\n"
        assert "Seccomp:\t2" in ok("exec", "sc", "cat", "/proc/self/status", root=ocirun_root).stdout
    finally:
        helpers.delete(ocirun_root, "sc", check=False)


# ============================================================================ cgroup limits

@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_exec_into_a_container_at_its_pids_limit(tmp_path, ocirun_root, runtime):
    """A container that forked all pids.max allows still takes an exec (a debugging shell):
    the exec'd process is moved in, which the limit does not stop, rather than born there
    (process/exec_parent.spawn_exec).  runc does the same; the runc run is the reference."""
    if runtime == "runc" and helpers.RUNC is None:
        pytest.skip("runc is not installed")
    run = run_ocirun if runtime == "ocirun" else helpers.run_runc
    root = ocirun_root if runtime == "ocirun" else tmp_path / "runc-root"
    bundle = make_bundle(tmp_path, ["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
                         linux={"resources": {"pids": {"limit": 3}}})
    r = run("run", "-d", "-b", bundle, "pl", root=root)
    assert r.returncode == 0, r.stderr
    try:
        def at_limit():
            ps = run("ps", "--format", "json", "pl", root=root)
            return ps.returncode == 0 and len(json.loads(ps.stdout)) == 3
        helpers.wait_until(at_limit, 10, "the container to reach its pids limit")
        full = run("exec", "pl", "sh", "-c", "echo in", root=root)
        if runtime == "runc" and "pthread_create failed" in full.stderr:
            # runc's Go runtime starts threads once its setns process is in the cgroup: at the
            # limit that sometimes fails (seen under load); a race of runc's, not what is tested.
            pytest.xfail("runc 1.1.5's exec ran out of pids for its own threads")
        assert (full.returncode, full.stdout) == (0, "in\n"), full.stderr
    finally:
        helpers.delete(root, "pl", run=run, check=False)


# ============================================================================ errors

def test_exec_into_a_stopped_container(tmp_path, ocirun_root):
    bundle = make_bundle(tmp_path, ["true"])
    ok("run", "-d", "-b", bundle, "st", root=ocirun_root)
    try:
        helpers.wait_until(lambda: state_of(ocirun_root, "st")["status"] == "stopped", 10, "st to stop")
        one_line_error(run_ocirun("exec", "st", "true", root=ocirun_root), "stopped")
    finally:
        ok("delete", "st", root=ocirun_root)


def test_exec_into_a_missing_container(ocirun_root):
    one_line_error(run_ocirun("exec", "nope", "true", root=ocirun_root), "nope")


@pytest.mark.parametrize("binary,message", [
    ("no-such-binary", "executable file not found"),
    ("/bin/no-such-binary", "no such file or directory"),
])
def test_missing_binary(box, binary, message):
    root, init = box
    one_line_error(exec_in(box, "box", binary), message)
    assert container_pids(root, "box") == [init]   # nothing left running in the container


def test_paused_container(tmp_path, ocirun_root):
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    ok("run", "-d", "-b", bundle, "pz", root=ocirun_root)
    try:
        ok("pause", "pz", root=ocirun_root)
        one_line_error(run_ocirun("exec", "pz", "true", root=ocirun_root), "paused")

        pid_file = tmp_path / "x.pid"
        r = run_ocirun("exec", "--ignore-paused", "--detach", "--pid-file", pid_file, "pz",
                       "sh", "-c", "echo ran > /dev/shm/flag", root=ocirun_root, timeout=15)
        assert r.returncode == 0, r.stderr
        pid = int(pid_file.read_text())
        assert pid in container_pids(ocirun_root, "pz")      # in the (frozen) cgroup
        assert state_of(ocirun_root, "pz")["status"] == "paused"
        ok("resume", "pz", root=ocirun_root)
        cat = "cat /dev/shm/flag 2>/dev/null || echo none"
        helpers.wait_until(lambda: ok("exec", "pz", "sh", "-c", cat, root=ocirun_root).stdout == "ran\n",
                           10, "the --ignore-paused process to run after resume")
    finally:
        run_ocirun("resume", "pz", root=ocirun_root)
        helpers.delete(ocirun_root, "pz", check=False)


def test_paused_exec_does_not_run_before_resume(tmp_path, ocirun_root):
    # --ignore-paused: the process is made, frozen with the container, and runs on resume.
    # A writable private rootfs lets the host see whether it ran.
    rootfs = helpers.private_rootfs(tmp_path)
    bundle = make_bundle(tmp_path, ["sleep", "1000"], rootfs=rootfs, root={"readonly": False})
    ok("run", "-d", "-b", bundle, "pz2", root=ocirun_root)
    try:
        ok("pause", "pz2", root=ocirun_root)
        ok("exec", "--ignore-paused", "-d", "pz2", "touch", "/ran", root=ocirun_root, timeout=15)
        time.sleep(0.3)  # a fixed wait on purpose: the check is that nothing ran meanwhile
        assert not (rootfs / "ran").exists()
        ok("resume", "pz2", root=ocirun_root)
        helpers.wait_until(lambda: (rootfs / "ran").exists(), 10, "the exec'd touch to run after resume")
    finally:
        run_ocirun("resume", "pz2", root=ocirun_root)
        helpers.delete(ocirun_root, "pz2", check=False)


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_exec_failures_exit_255_as_with_runc(tmp_path, ocirun_root, runc_root):
    """Engines and scripts tell "exec failed" (255) from the process's own status (here 1)."""
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    ok("run", "-d", "-b", bundle, "e255", root=ocirun_root)
    r = helpers.run_runc("run", "-d", "-b", str(bundle), "e255", root=runc_root)
    assert r.returncode == 0, r.stderr
    try:
        for run in (run_ocirun, helpers.run_runc):
            root = ocirun_root if run is run_ocirun else runc_root
            assert run("exec", "e255", "sh", "-c", "exit 1", root=root).returncode == 1
            for args in (["e255", "no-such-binary"], ["no-such-container", "true"]):
                r = run("exec", *args, root=root)
                assert r.returncode == 255, (run.__name__, args, r.returncode, r.stderr)
                assert "exec failed: " in r.stderr, (run.__name__, r.stderr)
    finally:
        helpers.delete(ocirun_root, "e255", check=False)
        helpers.delete(runc_root, "e255", run=helpers.run_runc, check=False)


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_exec_uses_the_config_the_container_was_created_from(tmp_path, ocirun_root, runtime):
    """The bundle's config.json changed (or went) after create: ocirun's exec still builds on
    the one the container runs with (its env, its seccomp profile).  runc 1.1.5 re-reads the
    bundle's file (the edit shows; without the file exec fails): a deliberate difference (README)."""
    if runtime == "runc" and helpers.RUNC is None:
        pytest.skip("runc is not installed")
    run = run_ocirun if runtime == "ocirun" else helpers.run_runc
    root = ocirun_root if runtime == "ocirun" else tmp_path / "runc-root"
    bundle = make_bundle(tmp_path, ["sleep", "1000"], process={"env": ["PATH=/bin:/usr/bin", "FOO=created"]})
    r = run("run", "-d", "-b", bundle, "cfg", root=root)
    assert r.returncode == 0, r.stderr
    try:
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "FOO=edited"]
        (bundle / "config.json").write_text(json.dumps(cfg))
        seen = run("exec", "cfg", "sh", "-c", "echo $FOO", root=root).stdout
        assert seen == ("created\n" if runtime == "ocirun" else "edited\n")
        (bundle / "config.json").unlink()
        r = run("exec", "cfg", "sh", "-c", "echo $FOO", root=root)
        if runtime == "ocirun":
            assert (r.returncode, r.stdout) == (0, "created\n"), r.stderr
        else:
            assert r.returncode != 0
    finally:
        helpers.delete(root, "cfg", run=run, check=False)


def test_exec_into_a_container_of_an_older_ocirun_reads_the_bundle(tmp_path, ocirun_root):
    """A state dir without the saved config (an ocirun before that copy existed): exec builds
    on the bundle's config.json."""
    bundle = make_bundle(tmp_path, ["sleep", "1000"], process={"env": ["PATH=/bin:/usr/bin", "FOO=bundle"]})
    assert run_ocirun("run", "-d", "-b", bundle, "oldcfg", root=ocirun_root).returncode == 0
    try:
        (ocirun_root / "oldcfg" / "config.json").unlink()
        r = run_ocirun("exec", "oldcfg", "sh", "-c", "echo $FOO", root=ocirun_root)
        assert (r.returncode, r.stdout) == (0, "bundle\n"), r.stderr
    finally:
        helpers.delete(ocirun_root, "oldcfg", check=False)
