"""The runtime lifecycle through the real CLI: create → start → running → stopped → delete, and
runc's state machine around it (what each command does in the wrong state, exit codes, signal
names, `--force`), under podman's bare environment, with concurrent commands on one id, and the
cleanup of a create that was killed half-way.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import helpers
from helpers import alive, make_bundle, ok, one_line_error, run_ocirun, state_of, wait_gone


# A container that stays up until it is killed (`sleep` as PID 1 ignores SIGTERM).
SLEEPER = ["sleep", "1000"]


def wait_status(root, cid, want: str, timeout: float = 10) -> dict:
    """The container's state once its status is `want`."""
    def reached():
        st = state_of(root, cid)
        return st if st["status"] == want else None
    return helpers.wait_until(reached, timeout, f"{cid} to be {want}")


def foreground_run(root, bundle, cid, ready: str = "ready") -> subprocess.Popen:
    """`ocirun run` in the background; returns once the container printed `ready`."""
    proc = subprocess.Popen(helpers.ocirun_command() + ["--root", str(root), "run", "-b", str(bundle), cid],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    buf = b""
    deadline = time.monotonic() + 15
    while ready.encode() not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            proc.kill()
            proc.communicate()
            pytest.fail(f"container never printed {ready!r}; got {buf!r}")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            rc = proc.wait()
            pytest.fail(f"run exited {rc} before {ready!r}: {buf!r} {proc.stderr.read()!r}")
        buf += chunk
    proc.early_output = buf
    return proc


def finish(proc: subprocess.Popen, timeout: float = 15) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (proc.early_output + out).decode() + err.decode()


# ============================================================================ the happy path

def test_create_start_stop_delete(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "0.5"])
    pid_file = tmp_path / "init.pid"
    ok("create", "-b", bundle, "--pid-file", pid_file, "c1", root=ocirun_root)

    # Before create returned: the pid file holds the init's host pid, alive, PID 1 in its ns.
    st = state_of(ocirun_root, "c1")
    assert st["status"] == "created"
    assert st["pid"] > 0 and alive(st["pid"])
    assert pid_file.read_text() == str(st["pid"])
    with open(f"/proc/{st['pid']}/status") as f:
        nspid = next(line for line in f if line.startswith("NSpid:")).split()
    assert nspid[1] == str(st["pid"]) and nspid[-1] == "1"
    assert st["bundle"] == str(bundle)
    assert st["id"] == "c1"

    ok("start", "c1", root=ocirun_root)
    running = state_of(ocirun_root, "c1")
    assert running["status"] == "running" and running["pid"] == st["pid"]

    stopped = wait_status(ocirun_root, "c1", "stopped")
    assert stopped["pid"] == 0

    ok("delete", "c1", root=ocirun_root)
    assert not (ocirun_root / "c1").exists()
    r = run_ocirun("state", "c1", root=ocirun_root)
    one_line_error(r, "container does not exist")


def test_start_twice_and_start_stopped(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "0.3"])
    ok("create", "-b", bundle, "c1", root=ocirun_root)
    ok("start", "c1", root=ocirun_root)
    one_line_error(run_ocirun("start", "c1", root=ocirun_root), "cannot start an already running container")
    wait_status(ocirun_root, "c1", "stopped")
    one_line_error(run_ocirun("start", "c1", root=ocirun_root), "cannot start a container that has stopped")
    one_line_error(run_ocirun("kill", "c1", "KILL", root=ocirun_root), "container not running")
    ok("delete", "c1", root=ocirun_root)


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_a_created_container_can_be_paused_as_with_runc(ocirun_root, runc_root, tmp_path):
    """runc pauses a created container (its init frozen on the exec fifo); `resume` gives it
    back created, and `start` of the paused one is refused in runc's words."""
    bundle = make_bundle(tmp_path, SLEEPER)
    for run, root in ((run_ocirun, ocirun_root), (helpers.run_runc, runc_root)):
        ok("create", "-b", bundle, "pc", root=root, run=run)
        try:
            ok("pause", "pc", root=root, run=run)
            assert state_of(root, "pc", run=run)["status"] == "paused", run.__name__
            one_line_error(run("start", "pc", root=root), "cannot start a container in the paused state")
            one_line_error(run("pause", "pc", root=root), "container not running")
            ok("resume", "pc", root=root, run=run)
            assert state_of(root, "pc", run=run)["status"] == "created", run.__name__
            ok("start", "pc", root=root, run=run)
            assert state_of(root, "pc", run=run)["status"] == "running", run.__name__
        finally:
            helpers.delete(root, "pc", run=run, check=False)


def test_delete_created_container_needs_force(ocirun_root, tmp_path):
    # runtime.md Delete: deleting a container that is not stopped MUST fail — a created one too
    # (runc 1.1 kills and removes it); --force kills its init and removes it.
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "c1", root=ocirun_root)
    pid = state_of(ocirun_root, "c1")["pid"]
    one_line_error(run_ocirun("delete", "c1", root=ocirun_root), "not stopped", "created")
    assert state_of(ocirun_root, "c1")["status"] == "created" and alive(pid)
    ok("delete", "--force", "c1", root=ocirun_root)
    wait_gone(pid)
    assert not (ocirun_root / "c1").exists()


def test_delete_running_needs_force(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("run", "-d", "-b", bundle, "c1", root=ocirun_root)
    st = state_of(ocirun_root, "c1")
    assert st["status"] == "running"
    one_line_error(run_ocirun("delete", "c1", root=ocirun_root), "not stopped", "running")
    assert alive(st["pid"])
    cgroup = f"/sys/fs/cgroup/pids{helpers.read_config(bundle)['linux']['cgroupsPath']}"
    assert os.path.isdir(cgroup)
    ok("delete", "--force", "c1", root=ocirun_root)
    wait_gone(st["pid"])
    assert not (ocirun_root / "c1").exists()
    assert not os.path.exists(cgroup)


def test_missing_container_exit_codes(ocirun_root):
    # containerd relies on these: delete --force of a missing id is success, the rest fail.
    assert run_ocirun("delete", "--force", "nope", root=ocirun_root).returncode == 0
    for args in (["state", "nope"], ["kill", "nope"], ["kill", "nope", "9"], ["start", "nope"],
                 ["delete", "nope"], ["kill", "--all", "nope", "KILL"]):
        one_line_error(run_ocirun(*args, root=ocirun_root), "container does not exist")


# ============================================================================ kill

# PID 1 of the container runs this: TERM is trapped (exit 42); any other catchable signal is
# ignored by a pid-namespace init without a handler, so exit 42 proves TERM arrived.
TRAP_TERM = ["sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"]


@pytest.mark.parametrize("name,expect", [
    ("KILL", 128 + 9), ("SIGKILL", 128 + 9), ("9", 128 + 9),
    ("sigterm", 42), ("TERM", 42), ("15", 42), (None, 42),  # default is SIGTERM
    ("", 42),  # an empty one too, as runc takes it
])
def test_kill_signal_names(ocirun_root, tmp_path, name, expect):
    bundle = make_bundle(tmp_path, TRAP_TERM)
    proc = foreground_run(ocirun_root, bundle, "k1")
    args = ["kill", "k1"] + ([name] if name is not None else [])
    r = run_ocirun(*args, root=ocirun_root)
    assert r.returncode == 0, r.stderr
    rc, out = finish(proc)
    assert rc == expect, out
    assert not (ocirun_root / "k1").exists()


def test_sigterm_stops_a_created_container(ocirun_root, tmp_path):
    # podman's `stop` of a created container sends 15, and only 10 s later 9.
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "c1", root=ocirun_root)
    try:
        ok("kill", "c1", "TERM", root=ocirun_root)
        wait_status(ocirun_root, "c1", "stopped", timeout=2)
    finally:
        helpers.delete(ocirun_root, "c1")


def test_kill_unknown_signal(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "c1", root=ocirun_root)
    one_line_error(run_ocirun("kill", "c1", "NOPE", root=ocirun_root), "NOPE")
    one_line_error(run_ocirun("kill", "c1", "99", root=ocirun_root), "99")
    # Past SIGRTMAX: refused by name up front, not by kill(2) late ("invalid argument").
    one_line_error(run_ocirun("kill", "c1", "SIGRTMIN+40", root=ocirun_root), "unknown signal 'SIGRTMIN+40'")
    # Signal 0 only probes, as with kill(2) and runc: it succeeds while the init lives.
    ok("kill", "c1", "0", root=ocirun_root)
    assert state_of(ocirun_root, "c1")["status"] == "created"
    ok("delete", "--force", "c1", root=ocirun_root)
    one_line_error(run_ocirun("kill", "c1", "0", root=ocirun_root), "container does not exist")


def test_kill_all_reaches_every_process(ocirun_root, tmp_path):
    # PID 1 (sh, no trap) ignores TERM; its child sleep does not.  Only `--all` signals the child,
    # and when the child dies sh's `wait` returns and it exits 5.
    bundle = make_bundle(tmp_path, ["sh", "-c", "sleep 1000 & echo ready; wait; exit 5"])
    proc = foreground_run(ocirun_root, bundle, "a1")
    ok("kill", "a1", "TERM", root=ocirun_root)
    time.sleep(0.2)  # a fixed wait on purpose: the check is that `run` did NOT end meanwhile
    assert proc.poll() is None, "TERM without --all must only reach PID 1, which ignores it"
    ok("kill", "--all", "a1", "TERM", root=ocirun_root)
    rc, out = finish(proc)
    assert rc == 5, out


# ============================================================================ podman's environment

def test_podman_minimal_environment(ocirun_root, tmp_path):
    # podman runs kill/delete/state with only XDG_RUNTIME_DIR= (empty): no PATH, no HOME.
    env = {"XDG_RUNTIME_DIR": ""}
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "--pid-file", tmp_path / "pid", "p1", root=ocirun_root, env=env)
    ok("start", "p1", root=ocirun_root, env=env)
    st = json.loads(ok("state", "p1", root=ocirun_root, env=env).stdout)
    assert st["status"] == "running"
    ok("kill", "p1", "9", root=ocirun_root, env=env)
    wait_gone(st["pid"])
    ok("delete", "--force", "p1", root=ocirun_root, env=env)
    assert not (ocirun_root / "p1").exists()


# ============================================================================ concurrency

def test_concurrent_deletes_of_one_id(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("run", "-d", "-b", bundle, "d1", root=ocirun_root)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_ocirun("delete", "--force", "d1", root=ocirun_root),
                                range(4)))
    # delete --force of a missing container succeeds, so all may exit 0; none may crash.
    for r in results:
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr and "internal error" not in r.stderr, r
    assert not (ocirun_root / "d1").exists()

    ok("run", "-d", "-b", bundle, "d2", root=ocirun_root)
    ok("kill", "d2", "KILL", root=ocirun_root)
    wait_status(ocirun_root, "d2", "stopped")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_ocirun("delete", "d2", root=ocirun_root), range(2)))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 1], results
    loser = next(r for r in results if r.returncode == 1)
    assert loser.stderr.strip() == "container does not exist: d2", loser.stderr


def test_concurrent_starts_of_one_id(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "s1", root=ocirun_root)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_ocirun("start", "s1", root=ocirun_root), range(3)))
    assert sorted(r.returncode for r in results) == [0, 1, 1], results
    for r in results:
        assert r.returncode == 0 or r.stderr.strip() == "cannot start an already running container", r
    assert state_of(ocirun_root, "s1")["status"] == "running"
    ok("delete", "--force", "s1", root=ocirun_root)


# ============================================================================ killed during create

@pytest.mark.parametrize("kind", ["createRuntime", "createContainer"])
def test_delete_force_after_create_was_killed(ocirun_root, tmp_path, kind):
    # createRuntime runs in the runtime (the init waits for the parent's word); createContainer
    # runs under the init, in the container's cgroup and pid namespace, so the init is alive and
    # busy when create dies.  Only the host-side hook writes its (host) pid for the cleanup.
    hook_pid = tmp_path / "hook.pid"
    started = tmp_path / "hook.started"
    record = f"echo $$ > {hook_pid}; " if kind == "createRuntime" else ""
    bundle = make_bundle(tmp_path, SLEEPER, hooks={kind: [{
        "path": "/bin/sh",
        "args": ["sh", "-c", f"{record}touch {started}; exec sleep 1000"],
    }]})
    cgroups_path = helpers.read_config(bundle)["linux"]["cgroupsPath"]
    create = subprocess.Popen(helpers.ocirun_command() + ["--root", str(ocirun_root), "create", "-b", str(bundle), "h1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        helpers.wait_until(lambda: started.exists() or create.poll() is not None, 15,
                           f"the {kind} hook to start (or create to exit)")
        assert started.exists(), f"the {kind} hook never ran (create exited {create.poll()})"
        # The container's processes as they are now: the init waits for the hook's end.
        procs = f"/sys/fs/cgroup/pids{cgroups_path}/cgroup.procs"
        with open(procs) as f:
            in_cgroup = [int(p) for p in f.read().split()]
        assert in_cgroup, "the init should be in the container's cgroup"
        create.send_signal(signal.SIGKILL)
        create.wait()
        assert (ocirun_root / "h1").is_dir()

        r = run_ocirun("delete", "--force", "h1", root=ocirun_root)
        assert r.returncode == 0, r.stderr
        assert not (ocirun_root / "h1").exists()
        assert not os.path.exists(os.path.dirname(procs))
        for pid in in_cgroup:
            wait_gone(pid)
        assert run_ocirun("state", "h1", root=ocirun_root).returncode == 1
    finally:
        if create.poll() is None:
            create.kill()
            create.wait()
        if hook_pid.exists():  # a host-side hook is our grandchild: it outlives the killed create
            try:
                os.kill(int(hook_pid.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_sigterm_during_create_undoes_it(ocirun_root, tmp_path):
    # A polite stop (SIGTERM) of `create` unwinds: no state dir, cgroup or init is left.
    hook_pid = tmp_path / "hook.pid"
    bundle = make_bundle(tmp_path, SLEEPER, hooks={"createRuntime": [{
        "path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {hook_pid}.tmp; mv {hook_pid}.tmp {hook_pid}; exec sleep 1000"],
    }]})
    cgroup = "/sys/fs/cgroup/pids" + helpers.read_config(bundle)["linux"]["cgroupsPath"]
    create = subprocess.Popen(helpers.ocirun_command() + ["--root", str(ocirun_root), "create", "-b", str(bundle), "t1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        helpers.wait_until(lambda: hook_pid.exists() or create.poll() is not None, 15,
                           "the createRuntime hook to start (or create to exit)")
        assert hook_pid.exists(), "the createRuntime hook never ran"
        with open(f"{cgroup}/cgroup.procs") as f:
            in_cgroup = [int(p) for p in f.read().split()]
        create.send_signal(signal.SIGTERM)
        _, err = create.communicate(timeout=15)
        assert create.returncode != 0
        assert len(err.decode().strip().splitlines()) == 1 and b"Traceback" not in err, err
        assert os.listdir(ocirun_root) == []
        assert not os.path.exists(cgroup)
        for pid in in_cgroup:
            wait_gone(pid)
    finally:
        if create.poll() is None:
            create.kill()
            create.wait()
        if hook_pid.exists():
            try:
                os.kill(int(hook_pid.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_reused_pid_is_not_the_container(ocirun_root, tmp_path):
    # state.json keeps the init's start time: a new process that got the same pid is not ours.
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("run", "-d", "-b", bundle, "u1", root=ocirun_root)
    init = state_of(ocirun_root, "u1")["pid"]
    ok("kill", "u1", "KILL", root=ocirun_root)
    wait_gone(init)
    victim = subprocess.Popen(["sleep", "1000"])
    try:
        path = ocirun_root / "u1" / "state.json"
        st = json.loads(path.read_text())
        st["pid"] = victim.pid  # as if the kernel had handed the init's pid to `victim`
        path.write_text(json.dumps(st))
        shown = state_of(ocirun_root, "u1")
        assert shown["status"] == "stopped" and shown["pid"] == 0
        one_line_error(run_ocirun("kill", "u1", "KILL", root=ocirun_root), "container not running")
        ok("delete", "u1", root=ocirun_root)
        assert victim.poll() is None, "ocirun killed a process that only shares the pid"
    finally:
        victim.kill()
        victim.wait()


def test_kill_all_of_stopped_container_is_not_an_error(ocirun_root, tmp_path):
    # runc: `kill --all` signals what is in the cgroup, which may be nothing.
    bundle = make_bundle(tmp_path, ["true"])
    ok("run", "--keep", "-b", bundle, "s1", root=ocirun_root)
    assert state_of(ocirun_root, "s1")["status"] == "stopped"
    ok("kill", "--all", "s1", "KILL", root=ocirun_root)
    ok("delete", "s1", root=ocirun_root)
