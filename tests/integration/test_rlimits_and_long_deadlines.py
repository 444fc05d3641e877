"""Two things the last changes got wrong (review of issue 13):

- The memory rlimits (RLIMIT_AS/DATA/STACK) are set last, right before execve, because the
  runtime's own Python does not fit under small ones; by then the process has dropped to its user
  and capabilities, and raising a hard limit needs CAP_SYS_RESOURCE.  So a hard limit above the
  runtime's own must be raised early, while still root, and only lowered late (runc sets every
  rlimit as root).  This host's bounding set lacks CAP_SYS_RESOURCE, so nothing can go above the
  host's hard limits here: the runtime runs under LOWER hard limits (prlimit) and the config asks
  for limits between those and the host's.
- Deadlines longer than poll(2) can take (an int of milliseconds, ~24.8 days) wrapped around: a
  createContainer hook with a timeout of 4294908 s made `create` time out at once.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

import helpers
import pytest

from helpers import RUNC, make_bundle, ocirun_command, run_ocirun


# (prlimit option, resource name in /proc/PID/limits, unit): the runtime's hard limit, what the
# config asks for (soft, hard), hard above the runtime's.
M = 1 << 20
RUNTIME = {"stack": 8 * M, "data": 1024 * M, "as": 4096 * M}
ASKED = [("RLIMIT_STACK", "Max stack size", 8 * M, 16 * M),
         ("RLIMIT_DATA", "Max data size", 512 * M, 2048 * M),
         ("RLIMIT_AS", "Max address space", 2048 * M, 8192 * M)]


def _host_allows() -> None:
    import resource
    for res, want in ((resource.RLIMIT_STACK, 16 * M), (resource.RLIMIT_DATA, 2048 * M), (resource.RLIMIT_AS, 8192 * M)):
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"the host's hard limit of resource {res} is below {want}")


def _root_can_raise_hard_limits() -> bool:
    """Whether root here has CAP_SYS_RESOURCE (this host's bounding set lacks it)."""
    r = subprocess.run(["prlimit", f"--stack={8 * M}:{8 * M}", "sh", "-c", "ulimit -H -s 16384"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def _under_low_limits(cmd: list[str], root, *args: str) -> subprocess.CompletedProcess:
    """`cmd --root ROOT ARGS` under lower hard (and soft) memory limits than the config's."""
    opts = [f"--{name}={v}:{v}" for name, v in RUNTIME.items()]
    full = ["prlimit", *opts, *cmd, "--root", str(root), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.run(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60).returncode
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(full, rc, out.read().decode(), err.read().decode())


def _limits_seen(text: str) -> dict[str, tuple[str, str]]:
    got = {}
    for _res, name, _soft, _hard in ASKED:
        line = next(line for line in text.splitlines() if line.startswith(name))
        soft, hard = line[len(name):].split()[:2]
        got[name] = (soft, hard)
    return got


EXPECTED = {name: (str(soft), str(hard)) for _res, name, soft, hard in ASKED}


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_hard_limits_above_the_runtimes_are_raised_before_the_user_drop(ocirun_root, runc_root, tmp_path, runtime):
    """A non-root user without capabilities gets hard limits above the runtime's own: `run` and
    `exec` both (the bug: `start`/`exec` failed with EPERM at the late setrlimit)."""
    _host_allows()
    if not _root_can_raise_hard_limits():
        pytest.skip("root cannot raise a hard limit here (no CAP_SYS_RESOURCE in the bounding set): "
                    "test_a_hard_limit_we_cannot_raise_fails_create_as_with_runc covers this host")
    if runtime == "runc" and RUNC is None:
        pytest.skip("runc is not installed")
    cmd, root = (ocirun_command(), ocirun_root) if runtime == "ocirun" else ([RUNC], runc_root)
    rl = [{"type": t, "soft": soft, "hard": hard} for t, _n, soft, hard in ASKED]
    process = {"user": {"uid": 1000, "gid": 1000}, "capabilities": {}, "rlimits": rl}
    bundle = make_bundle(tmp_path, ["cat", "/proc/self/limits"], process=process)
    r = _under_low_limits(cmd, root, "run", "-b", str(bundle), "rl1")
    assert r.returncode == 0, (runtime, r.stderr)
    assert _limits_seen(r.stdout) == EXPECTED, r.stdout

    bundle = make_bundle(tmp_path, ["sleep", "60"], process=process, name="b2")
    r = _under_low_limits(cmd, root, "run", "-d", "-b", str(bundle), "rl2")
    assert r.returncode == 0, (runtime, r.stderr)
    try:
        r = _under_low_limits(cmd, root, "exec", "rl2", "cat", "/proc/self/limits")
        assert r.returncode == 0, (runtime, r.stderr)
        assert _limits_seen(r.stdout) == EXPECTED, r.stdout
        r = _under_low_limits(cmd, root, "exec", "rl2", "sh", "-c", "ulimit -s; ulimit -H -s")
        assert r.returncode == 0 and r.stdout.split() == [str(8 * M >> 10), str(16 * M >> 10)], (r.stdout, r.stderr)
    finally:
        helpers.delete(root, "rl2", run=run_ocirun if runtime == "ocirun" else helpers.run_runc, check=False)


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_a_hard_limit_we_cannot_raise_fails_create_as_with_runc(ocirun_root, runc_root, tmp_path, runtime):
    """Where root cannot raise a hard limit (this host), asking for one above the runtime's
    fails at `create`, naming the entry, as with runc, and leaves nothing; before, `create`
    succeeded and the container died at `start` with EPERM."""
    if _root_can_raise_hard_limits():
        pytest.skip("root can raise hard limits here: the test above covers it")
    if runtime == "runc" and RUNC is None:
        pytest.skip("runc is not installed")
    cmd, root = (ocirun_command(), ocirun_root) if runtime == "ocirun" else ([RUNC], runc_root)
    rl = [{"type": "RLIMIT_STACK", "soft": 8 * M, "hard": 16 * M}]
    bundle = make_bundle(tmp_path, ["true"], process={"user": {"uid": 1000, "gid": 1000}, "capabilities": {},
                                                      "rlimits": rl})
    r = _under_low_limits(cmd, root, "create", "-b", str(bundle), "rl4")
    if r.returncode == 0:
        helpers.delete(root, "rl4", run=run_ocirun if runtime == "ocirun" else helpers.run_runc, check=False)
    assert r.returncode != 0, f"{runtime} create succeeded"
    if runtime == "ocirun":
        assert r.stderr == ("process.rlimits[0]: setrlimit RLIMIT_STACK (soft 8388608, hard 16777216): "
                            "operation not permitted\n"), r.stderr
        assert os.listdir(root) == []
    else:
        assert "error setting rlimit type 3: operation not permitted" in r.stderr, r.stderr


def test_exec_with_a_hard_limit_we_cannot_raise_fails_before_the_process_runs(ocirun_root, tmp_path):
    """The same for `exec --process`: the joiner fails while still root, with the entry named
    (before, the exec'd process died at its late setrlimit)."""
    if _root_can_raise_hard_limits():
        pytest.skip("root can raise hard limits here")
    bundle = make_bundle(tmp_path, ["sleep", "60"])
    assert run_ocirun("run", "-d", "-b", str(bundle), "rl5", root=ocirun_root).returncode == 0
    try:
        spec = {"args": ["echo", "ran"], "cwd": "/", "user": {"uid": 1000, "gid": 1000},
                "env": ["PATH=/bin:/usr/bin"], "rlimits": [{"type": "RLIMIT_STACK", "soft": 8 * M, "hard": 16 * M}]}
        (tmp_path / "process.json").write_text(json.dumps(spec))
        r = _under_low_limits(ocirun_command(), ocirun_root, "exec", "-p", str(tmp_path / "process.json"), "rl5")
        assert r.returncode == 255 and "ran" not in r.stdout, (r.returncode, r.stdout, r.stderr)
        assert r.stderr == ("exec failed: process.rlimits[0]: setrlimit RLIMIT_STACK (soft 8388608, hard 16777216): "
                            "operation not permitted\n"), r.stderr
    finally:
        helpers.delete(ocirun_root, "rl5", check=False)


def test_the_init_waits_under_the_runtimes_soft_limits(ocirun_root, tmp_path):
    """Nothing is lowered before execve: the init that waits for `start` keeps the runtime's
    memory limits (our Python would not fit under the container's), the program gets them."""
    rl = [{"type": "RLIMIT_STACK", "soft": 4 * M, "hard": 8 * M},
          {"type": "RLIMIT_DATA", "soft": 4 * M, "hard": 1024 * M},
          {"type": "RLIMIT_AS", "soft": 2048 * M, "hard": 4096 * M}]
    bundle = make_bundle(tmp_path, ["sleep", "60"], process={"user": {"uid": 1000, "gid": 1000}, "rlimits": rl})
    r = _under_low_limits(ocirun_command(), ocirun_root, "create", "-b", str(bundle), "rl3")
    assert r.returncode == 0, r.stderr
    try:
        pid = json.loads(run_ocirun("state", "rl3", root=ocirun_root).stdout)["pid"]
        with open(f"/proc/{pid}/limits") as f:
            seen = _limits_seen(f.read())
        assert seen == {"Max stack size": (str(8 * M), str(8 * M)), "Max data size": (str(1024 * M), str(1024 * M)),
                        "Max address space": (str(4096 * M), str(4096 * M))}, seen
        assert run_ocirun("start", "rl3", root=ocirun_root).returncode == 0
        r = run_ocirun("exec", "rl3", "cat", "/proc/self/limits", root=ocirun_root)
        assert r.returncode == 0, r.stderr
        assert _limits_seen(r.stdout) == {name: (str(v["soft"]), str(v["hard"]))
                                          for name, v in zip(["Max stack size", "Max data size",
                                                              "Max address space"], rl, strict=True)}, r.stdout
    finally:
        helpers.delete(ocirun_root, "rl3", check=False)


def test_a_hook_timeout_beyond_what_poll_takes(ocirun_root, tmp_path):
    """4294908 s (~49.7 days) plus the step deadline is more milliseconds than an int holds: the
    socket's timeout wrapped to under a second and `create` failed while the hook slept."""
    hook = {"path": "/bin/sleep", "args": ["sleep", "2"], "timeout": 4294908}
    bundle = make_bundle(tmp_path, ["true"], hooks={"createContainer": [hook]})
    r = run_ocirun("create", "-b", str(bundle), "lt1", root=ocirun_root, timeout=30)
    try:
        assert r.returncode == 0, r.stderr
    finally:
        helpers.delete(ocirun_root, "lt1", check=False)


def test_channel_waits_past_one_poll_step_and_still_times_out(monkeypatch):
    """The runtime's end of the channel waits in steps no longer than poll takes: a message
    after several steps arrives; with none the deadline still fires, on time.  (Steps made
    tiny here; the real one is ~24.8 days.)"""
    import threading
    import time
    from ocirun.process import channel
    monkeypatch.setattr(channel, "MAX_WAIT_STEP_S", 0.05)
    ours, theirs = channel.Channel.pair()
    ours.timeout = 0.2
    try:
        threading.Timer(0.3, theirs.send, args=("ready",)).start()
        assert ours.recv("the test", extra=1.0)["type"] == "ready"
        t0 = time.monotonic()
        with pytest.raises(channel.Timeout, match=r"timed out after 0.5s waiting for the test"):
            ours.recv("the test", extra=0.3)
        assert 0.45 < time.monotonic() - t0 < 2
    finally:
        ours.close()
        theirs.close()


def test_hooks_time_is_the_sum_or_unbounded():
    from types import SimpleNamespace as H
    from ocirun.process.channel import hooks_time, wait_step
    assert hooks_time([]) == 0.0
    assert hooks_time([H(timeout=2), H(timeout=4294908)]) == 4294910.0
    assert hooks_time([H(timeout=2), H(timeout=None)]) is None
    assert wait_step(4294968.0) * 1000 <= (1 << 31) - 1 and wait_step(1.5) == 1.5
