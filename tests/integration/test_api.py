"""The Python API (ocirun/api.py) runs real containers in the test's own process: the lifecycle,
exec, wait, run, list, and its one error type; and that a long-lived caller is left as it was
(no fd leaked, its subreaper flag and signal handlers untouched)."""
from __future__ import annotations

import json
import os
import signal
import time

import prctl
import pytest

from helpers import alive, deep_update, make_bundle, ok, read_config, run_ocirun, wait_gone, write_config
from ocirun.api import ConfigError, Container, OCIError, run

SLEEPER = ["sleep", "1000"]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and "internal error" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_a_container_through_the_api(ocirun_root, tmp_path, capfd):
    fds, sigterm = open_fds(), signal.getsignal(signal.SIGTERM)
    assert not prctl.get_child_subreaper()
    pid_file = tmp_path / "init.pid"
    c = Container.create(make_bundle(tmp_path, SLEEPER), "api1", root=ocirun_root, pid_file=str(pid_file))
    try:
        st = c.state()
        assert (st["id"], st["status"]) == ("api1", "created") and alive(st["pid"])
        assert pid_file.read_text() == str(st["pid"])
        c.start()
        assert c.status() == "running"
        # The CLI sees the same container: one state directory, one format.
        assert json.loads(ok("state", "api1", root=ocirun_root).stdout) == c.state()
        assert Container.load("api1", root=ocirun_root).state()["pid"] == st["pid"]

        capfd.readouterr()
        assert c.exec(["sh", "-c", "echo from-exec; exit 3"]) == 3
        assert "from-exec" in capfd.readouterr().out
        assert c.exec({"args": ["/bin/sh", "-c", "exit $CODE"], "cwd": "/", "env": ["CODE=4"]}) == 4
        assert c.exec(["sh", "-c", 'test "$V" = 1 && test "$PWD" = /tmp'], env=["V=1"], cwd="/tmp") == 0
        assert not prctl.get_child_subreaper()  # the foreground gave the flag back

        pid = c.exec(["sleep", "100"], detach=True)
        assert pid > 0 and alive(pid) and pid in c.processes() and st["pid"] in c.processes()

        c.pause()
        assert c.status() == "paused"
        c.resume()
        c.kill("SIGKILL")
        stopped = c.wait(timeout=10)
        assert (stopped["status"], stopped["pid"]) == ("stopped", 0)
        wait_gone(pid)  # the whole pid namespace went with its init
        c.delete()
        with pytest.raises(OCIError) as err:
            c.state()
        one_line(err, "container does not exist: api1")
    finally:
        c.delete(force=True)
    assert open_fds() == fds  # a long-lived caller keeps no fd of ours
    assert signal.getsignal(signal.SIGTERM) == sigterm


def test_wait_has_a_deadline_and_returns_at_the_exit(ocirun_root, tmp_path):
    c = Container.create(make_bundle(tmp_path, SLEEPER, name="b1"), "w1", root=ocirun_root)
    short = Container.create(make_bundle(tmp_path, ["sleep", "0.5"], name="b2"), "w2", root=ocirun_root)
    try:
        c.start()
        began = time.monotonic()
        with pytest.raises(OCIError) as err:
            c.wait(timeout=0.3)
        one_line(err, "container w1 still running after 0.3s")
        assert 0.3 <= time.monotonic() - began < 5
        assert c.status() == "running"

        short.start()
        began = time.monotonic()
        assert short.wait()["status"] == "stopped"  # no timeout: until the init exits
        assert time.monotonic() - began < 10
    finally:
        c.delete(force=True)
        short.delete(force=True)


def test_run_returns_the_exit_status_and_removes_the_container(ocirun_root, tmp_path):
    assert run(make_bundle(tmp_path, ["sh", "-c", "exit 5"]), "r1", root=ocirun_root) == 5
    assert Container.list(ocirun_root) == []
    assert not prctl.get_child_subreaper()
    pid = run(make_bundle(tmp_path, SLEEPER, name="b2"), "r2", root=ocirun_root, detach=True)
    try:
        assert alive(pid) and Container("r2", ocirun_root).state()["pid"] == pid
    finally:
        Container("r2", ocirun_root).delete(force=True)
    wait_gone(pid)


def test_list(ocirun_root, tmp_path):
    assert Container.list(ocirun_root / "absent") == []
    Container.create(make_bundle(tmp_path, SLEEPER, name="b1"), "l2", root=ocirun_root)
    Container.create(make_bundle(tmp_path, SLEEPER, name="b2"), "l1", root=ocirun_root).start()
    try:
        listed = Container.list(ocirun_root)
        assert [(s["id"], s["status"]) for s in listed] == [("l1", "running"), ("l2", "created")]
        assert listed == json.loads(ok("list", "--format", "json", root=ocirun_root).stdout)
    finally:
        for cid in ("l1", "l2"):
            Container(cid, ocirun_root).delete(force=True)


def test_every_failure_is_one_oci_error(ocirun_root, tmp_path):
    missing = Container("nope", ocirun_root)
    for call in (lambda: Container.load("nope", ocirun_root), missing.state, missing.start, missing.kill,
                 missing.delete, missing.pause, missing.processes, lambda: missing.exec(["true"]),
                 missing.wait):
        with pytest.raises(OCIError) as err:
            call()
        one_line(err, "container does not exist: nope")
    missing.delete(force=True)  # as `ocirun delete --force`: nothing to do is success

    with pytest.raises(OCIError) as err:
        Container.load("../x", ocirun_root)
    one_line(err, "invalid container id format")

    bundle = make_bundle(tmp_path, name="noargs")
    write_config(bundle, deep_update(read_config(bundle), {"process": {"args": []}}))
    with pytest.raises(ConfigError) as err:  # a ConfigError is an OCIError naming the field
        Container.create(bundle, "bad", root=ocirun_root)
    one_line(err, "process.args")
    assert isinstance(err.value, OCIError) and Container.list(ocirun_root) == []
    with pytest.raises(OCIError) as err:
        Container.create(tmp_path / "no-such-bundle", "bad", root=ocirun_root)
    one_line(err, "no-such-bundle")
    with pytest.raises(OCIError) as err:  # an OSError deep down still arrives as an OCIError
        Container.list(make_bundle(tmp_path, name="plain") / "config.json")
    one_line(err, "not a directory")
    assert Container.list(ocirun_root) == []

    c = Container.create(make_bundle(tmp_path, ["true"], name="b1"), "e1", root=ocirun_root)
    try:
        with pytest.raises(OCIError) as err:
            c.kill("SIGNOPE")
        one_line(err, "unknown signal 'SIGNOPE'")
        with pytest.raises(OCIError) as err:
            c.delete()
        one_line(err, "cannot delete container e1 that is not stopped: created")
        c.start()
        c.wait(timeout=10)
        with pytest.raises(OCIError) as err:
            c.exec(["true"])
        one_line(err, "cannot exec in a stopped container")
        with pytest.raises(OCIError) as err:
            c.exec(["true"], preserve_fds=-1)
        one_line(err, "preserve_fds -1")
        c.delete()
    finally:
        c.delete(force=True)
    # The CLI reports the same words (it is built on this API).
    r = run_ocirun("state", "nope", root=ocirun_root)
    assert (r.returncode, r.stderr.strip()) == (1, "container does not exist: nope")


def test_an_exit_status_taken_by_someone_else_is_an_oci_error(ocirun_root, tmp_path):
    """A caller that ignores SIGCHLD lets the kernel reap its children: the status is gone, and
    exec says so instead of a ChildProcessError (or a made-up status)."""
    c = Container.create(make_bundle(tmp_path, SLEEPER), "s1", root=ocirun_root)
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        c.start()
        with pytest.raises(OCIError) as err:
            c.exec(["true"])
        one_line(err, "exit status was taken before ours")
    finally:
        signal.signal(signal.SIGCHLD, old)
        c.delete(force=True)
