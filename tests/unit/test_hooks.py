"""Lifecycle hooks: argv, env, state on stdin, failures, timeouts, warn_only (no root needed)."""
import json
import os
import threading
import time

import pytest

from ocirun import hooks
from ocirun.config import Hook
from ocirun.errors import OCIError

STATE = hooks.make_state("c1", "created", 4242, "/bundle", {"a": "b"}, "1.2.0")


def script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def test_state_args_env_exact(tmp_path):
    out = tmp_path / "out"
    body = script(tmp_path, "h", f'cat > {out}.stdin\ncat /proc/$$/cmdline > {out}.args\nenv > {out}.env\n')
    # exec /bin/sh itself so argv[0] is ours (for a #! script the kernel puts the script path there)
    hooks.run_hooks("prestart", [Hook("/bin/sh", ["my-argv0", body, "one", "two words"], ["FOO=bar", "X=1=2"])], STATE)
    assert json.loads((tmp_path / "out.stdin").read_text()) == STATE
    assert (tmp_path / "out.args").read_text().split("\0") == ["my-argv0", body, "one", "two words", ""]
    env = dict(l.split("=", 1) for l in (tmp_path / "out.env").read_text().splitlines())
    env.pop("PWD", None), env.pop("SHLVL", None), env.pop("_", None)  # what sh adds itself
    assert env == {"FOO": "bar", "X": "1=2"}


def test_no_args_means_argv0_is_path_and_no_env_inherits(tmp_path, monkeypatch):
    out = tmp_path / "out"
    path = script(tmp_path, "h", f'echo "$0 $#" > {out}\necho "$OCIRUN_TEST_VAR" >> {out}\n')
    monkeypatch.setenv("OCIRUN_TEST_VAR", "inherited")
    hooks.run_hooks("poststart", [Hook(path)], STATE)
    assert out.read_text() == f"{path} 0\ninherited\n"


def test_hooks_run_in_order_and_stop_at_first_failure(tmp_path):
    log = tmp_path / "log"
    a = script(tmp_path, "a", f"echo a >> {log}\n")
    bad = script(tmp_path, "bad", f"echo bad >> {log}\necho oops; echo 'it broke' >&2; exit 3\n")
    c = script(tmp_path, "c", f"echo c >> {log}\n")
    with pytest.raises(OCIError) as ei:
        hooks.run_hooks("createRuntime", [Hook(a), Hook(bad), Hook(c)], STATE)
    assert str(ei.value) == "error running createRuntime hook #1: exit status 3, stdout: oops, stderr: it broke"
    assert log.read_text() == "a\nbad\n"


def test_killed_by_signal(tmp_path):
    path = script(tmp_path, "h", "kill -TERM $$\n")
    with pytest.raises(OCIError, match=r"hook #0: signal: terminated, stdout: , stderr: $"):
        hooks.run_hooks("prestart", [Hook(path)], STATE)


def test_exec_failure(tmp_path):
    with pytest.raises(OCIError) as ei:
        hooks.run_hooks("prestart", [Hook(str(tmp_path / "missing"))], STATE)
    assert str(ei.value) == f"error running prestart hook #0: fork/exec {tmp_path}/missing: no such file or directory"
    p = tmp_path / "noexec"
    p.write_text("#!/bin/sh\n")
    with pytest.raises(OCIError, match="permission denied"):
        hooks.run_hooks("prestart", [Hook(str(p))], STATE)


def test_timeout_kills(tmp_path):
    pidfile = tmp_path / "pid"
    path = script(tmp_path, "h", f"echo $$ > {pidfile}\nexec sleep 30\n")
    t0 = time.monotonic()
    with pytest.raises(OCIError) as ei:
        hooks.run_hooks("poststart", [Hook(path, timeout=1)], STATE)
    took = time.monotonic() - t0
    assert str(ei.value) == "error running poststart hook #0: hook ran past specified timeout of 1.0s"
    assert 0.9 < took < 5
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_hook_that_leaves_a_daemon_does_not_hang(tmp_path):
    # the background sleep keeps the stdout pipe open; we must return when the hook exits
    path = script(tmp_path, "h", "echo started\n(sleep 5 &)\nexit 0\n")
    t0 = time.monotonic()
    hooks.run_hooks("prestart", [Hook(path, timeout=10)], STATE)
    assert time.monotonic() - t0 < 3


def test_hook_not_reading_stdin_is_fine(tmp_path):
    path = script(tmp_path, "h", "exit 0\n")
    big = dict(STATE, annotations={f"k{i}": "v" * 100 for i in range(2000)})  # > pipe buffer
    hooks.run_hooks("prestart", [Hook(path)], big)


def test_big_output_is_captured_without_deadlock(tmp_path):
    path = script(tmp_path, "h", "head -c 300000 /dev/zero | tr '\\0' x; exit 1\n")
    with pytest.raises(OCIError) as ei:
        hooks.run_hooks("prestart", [Hook(path, timeout=10)], STATE)
    assert "exit status 1, stdout: xxx" in str(ei.value)
    assert len(str(ei.value)) < 70_000


def test_warn_only_logs_and_continues(tmp_path):
    log = tmp_path / "log"
    bad = script(tmp_path, "bad", "exit 1\n")
    good = script(tmp_path, "good", f"echo good >> {log}\n")
    seen = []
    hooks.run_hooks("poststop", [Hook(bad), Hook(good)], STATE, warn_only=True,
                    log=lambda level, msg: seen.append((level, msg)))
    assert seen == [("warning", "error running poststop hook #0: exit status 1, stdout: , stderr: ")]
    assert log.read_text() == "good\n"


def test_hook_fds_do_not_leak(tmp_path):
    out = tmp_path / "fds"
    path = script(tmp_path, "h", f"ls /proc/self/fd > {out}\n")
    r, w = os.pipe()  # an fd without close-on-exec
    os.set_inheritable(w, True)
    try:
        hooks.run_hooks("prestart", [Hook(path)], STATE)
    finally:
        os.close(r), os.close(w)
    fds = sorted(int(x) for x in out.read_text().split())
    assert fds[:3] == [0, 1, 2] and len(fds) <= 4  # ls's own directory fd may show


def test_no_threads_started(tmp_path):
    path = script(tmp_path, "h", "exit 0\n")
    before = threading.active_count()
    hooks.run_hooks("prestart", [Hook(path)], STATE)
    assert threading.active_count() == before
