"""Hooks without a `timeout` may run as long as they like (the spec sets no bound, runc none
either) — but they must not take the container's other commands, or the user's way out, with
them:

- `start` held the container's lock while its startContainer and poststart hooks ran, so `kill`
  and `delete --force` waited on the lock for as long (forever for a hook that never ends);
- `run` holds the signals it receives until the container's process runs (runc does too), so a
  createContainer hook that never ended left SIGTERM and Ctrl-C without effect: only a SIGKILL
  stopped it, and that leaves the container behind.  Now a second termination signal gives up.
- Any command waiting for the lock gives up after the step deadline (OCIRUN_STEP_TIMEOUT).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

import pytest

import helpers
from helpers import make_bundle, ocirun_command, run_ocirun


def _hook_sleep() -> tuple[list[str], str]:
    """A `sleep` with a number of its own, to find exactly this test's hook among processes."""
    seconds = str(100000 + secrets.randbelow(800000))
    return ["sleep", seconds], seconds


def _sleeps_of(seconds: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                    found.append(int(name))
        except OSError:
            continue
    return found


def _kill_sleeps(seconds: str) -> None:
    """This test's own hook processes (their number is its own), should a failure leave any."""
    for pid in _sleeps_of(seconds):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _popen(args: list[str], root, err_file) -> subprocess.Popen:
    # Files, not pipes: a container (or a hook) left holding a pipe would block the reader.
    with open(err_file, "wb") as err:
        return subprocess.Popen(ocirun_command() + ["--root", str(root), *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["startContainer", "poststart"])
def test_kill_and_delete_act_while_start_runs_a_hook_without_timeout(ocirun_root, tmp_path, kind):
    args, seconds = _hook_sleep()
    bundle = make_bundle(tmp_path, ["sleep", "1000"], hooks={kind: [{"path": "/bin/sleep", "args": args}]})
    helpers.ok("create", "-b", bundle, "sk1", root=ocirun_root)
    start = _popen(["start", "sk1"], ocirun_root, tmp_path / "err")
    try:
        helpers.wait_until(lambda: _sleeps_of(seconds), 20, f"the {kind} hook to run")
        began = time.monotonic()
        r = run_ocirun("kill", "sk1", "KILL", root=ocirun_root, timeout=30)
        assert r.returncode in (0, 1), r.stderr  # 1: the init was already gone (a startContainer hook's run)
        r = run_ocirun("delete", "--force", "sk1", root=ocirun_root, timeout=30)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - began < 10  # they waited on the lock for as long as the hook
        assert not (ocirun_root / "sk1").exists()
    finally:
        _stop(start)
        helpers.delete(ocirun_root, "sk1", check=False)
        _kill_sleeps(seconds)  # a poststart hook outlives a SIGKILLed `start`


def test_the_lock_wait_has_a_deadline(ocirun_root, tmp_path):
    """A command that cannot get the container's lock says so after five protocol steps
    (OCIRUN_STEP_TIMEOUT each)."""
    args, seconds = _hook_sleep()
    bundle = make_bundle(tmp_path, ["true"], hooks={"createRuntime": [{"path": "/bin/sleep", "args": args}]})
    create = _popen(["create", "-b", str(bundle), "sk2"], ocirun_root, tmp_path / "err")  # holds the lock in its hook
    try:
        helpers.wait_until(lambda: _sleeps_of(seconds), 20, "the createRuntime hook to run")
        r = run_ocirun("kill", "sk2", "KILL", root=ocirun_root, env=dict(os.environ, OCIRUN_STEP_TIMEOUT="0.4"))
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip() == ("container sk2 is busy: another ocirun command has held it for 2s "
                                    "(a hook without a timeout?)"), r.stderr
    finally:
        create.send_signal(signal.SIGTERM)  # `create` unwinds on SIGTERM and takes its hook along
        try:
            create.wait(timeout=30)
        finally:
            _stop(create)
            helpers.delete(ocirun_root, "sk2", check=False)
            left = _sleeps_of(seconds)
            _kill_sleeps(seconds)
    assert not left


@pytest.mark.parametrize("kind", ["createRuntime", "createContainer"])
def test_a_second_termination_signal_gives_up_a_run_stuck_in_a_hook(ocirun_root, tmp_path, kind):
    args, seconds = _hook_sleep()
    bundle = make_bundle(tmp_path, ["true"], hooks={kind: [{"path": "/bin/sleep", "args": args}]})
    run = _popen(["run", "-b", str(bundle), "sk3"], ocirun_root, tmp_path / "err")
    try:
        helpers.wait_until(lambda: _sleeps_of(seconds), 20, f"the {kind} hook to run")
        run.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the first is held for the container's process, as runc holds it
        assert run.poll() is None
        run.send_signal(signal.SIGINT)
        run.wait(timeout=20)
        err = (tmp_path / "err").read_text()
        assert run.returncode == 130 and err.strip() == "interrupted", (run.returncode, err)
        assert not (ocirun_root / "sk3").exists()
        helpers.wait_until(lambda: not _sleeps_of(seconds), 10, "the hook to be gone")
    finally:
        _stop(run)
        helpers.delete(ocirun_root, "sk3", check=False)
        _kill_sleeps(seconds)  # after a failure: a SIGKILLed `run` cannot take its hook along
