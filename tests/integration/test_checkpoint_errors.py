"""checkpoint/restore on the host: every mistake is one line, and a failed restore leaves nothing.

The checkpoints themselves need a kernel CRIU works on: tests/v2/test_checkpoint.py runs them
in the pure v2 guest.  Here CRIU itself fails (`criu check`: vdso), which is the case of "the
kernel refusing": the container must survive a failed checkpoint, and a failed restore must
leave no state directory, cgroup or mount.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import helpers
from helpers import ok, one_line_error, run_ocirun

CRIU = shutil.which("criu")
LOOP = ["sh", "-c", "while :; do sleep 0.2; done"]


def _criu_fails_here() -> bool:
    return CRIU is not None and subprocess.run([CRIU, "check"], capture_output=True, timeout=60).returncode != 0


def test_usage_mistakes(ocirun_root, tmp_path):
    bundle = helpers.make_bundle(tmp_path, LOOP)
    ok("run", "-d", "-b", bundle, "c1", root=ocirun_root)
    try:
        one_line_error(run_ocirun("checkpoint", "--manage-cgroups-mode", "bogus", "c1", root=ocirun_root),
                       "--manage-cgroups-mode", "soft")
        one_line_error(run_ocirun("checkpoint", "--parent-path", "/abs", "--image-path", tmp_path / "i", "c1",
                                  root=ocirun_root), "--parent-path", "relative")
        one_line_error(run_ocirun("checkpoint", "--parent-path", "nope", "--image-path", tmp_path / "i", "c1",
                                  root=ocirun_root), "--parent-path", "no such directory")
        one_line_error(run_ocirun("checkpoint", "--empty-ns", "ipc", "--image-path", tmp_path / "i", "c1",
                                  root=ocirun_root), "--empty-ns", "network")
        one_line_error(run_ocirun("--criu", "/nonexistent/criu", "checkpoint", "c1", root=ocirun_root),
                       "/nonexistent/criu", "not found")
        assert json.loads(ok("state", "c1", root=ocirun_root).stdout)["status"] == "running"
    finally:
        helpers.delete(ocirun_root, "c1")
    one_line_error(run_ocirun("checkpoint", "--image-path", tmp_path / "i", "nope", root=ocirun_root),
                   "container does not exist: nope")


def test_a_criu_that_never_answers_is_given_up_and_the_container_runs_on(ocirun_root, tmp_path):
    """Every wait on CRIU has a deadline; a question about CRIU itself (its version) has a short
    one (query_timeout(), at most 60 s: it took the dump's hour); here shortened further."""
    from ocirun import criu
    assert criu.query_timeout() <= 60
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\nexec sleep 1000\n")
    fake.chmod(0o755)
    bundle = helpers.make_bundle(tmp_path, LOOP)
    ok("run", "-d", "-b", bundle, "c1", root=ocirun_root)
    try:
        env = dict(os.environ, OCIRUN_CRIU_TIMEOUT="2")
        r = run_ocirun("--criu", fake, "checkpoint", "--image-path", tmp_path / "i", "c1", root=ocirun_root,
                       env=env, timeout=60)
        one_line_error(r, "no answer within 2 s")
        assert json.loads(ok("state", "c1", root=ocirun_root).stdout)["status"] == "running"
    finally:
        helpers.delete(ocirun_root, "c1")


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "0"])
def test_a_bad_criu_timeout_is_one_line_before_anything_is_made(ocirun_root, tmp_path, value):
    bundle = helpers.make_bundle(tmp_path, LOOP)
    ok("run", "-d", "-b", bundle, "c1", root=ocirun_root)
    try:
        env = dict(os.environ, OCIRUN_CRIU_TIMEOUT=value)
        r = run_ocirun("--criu", "/bin/true", "checkpoint", "--image-path", tmp_path / "i", "c1",
                       root=ocirun_root, env=env)
        one_line_error(r, "OCIRUN_CRIU_TIMEOUT", "number of seconds")
        assert not (tmp_path / "i").exists()
        assert json.loads(ok("state", "c1", root=ocirun_root).stdout)["status"] == "running"
        r = run_ocirun("--criu", "/bin/true", "restore", "-d", "--image-path", tmp_path / "i", "-b", bundle, "r1",
                       root=ocirun_root, env=env)
        one_line_error(r, "OCIRUN_CRIU_TIMEOUT")
        assert not (ocirun_root / "r1").exists()
    finally:
        helpers.delete(ocirun_root, "c1")


def test_a_criu_that_dies_is_noticed_though_its_children_hold_the_socket(ocirun_root, tmp_path):
    """The tasks a restoring CRIU forks inherit its end of our socket: its death is no
    end-of-file, and the wait went on to the reply deadline (an hour)."""
    fake = tmp_path / "criu"
    holder = tmp_path / "holder.pid"
    fake.write_text(f"#!/bin/sh\nsleep 1000 & echo $! > {holder}\nexit 3\n")
    fake.chmod(0o755)
    bundle = helpers.make_bundle(tmp_path, LOOP)
    ok("run", "-d", "-b", bundle, "c1", root=ocirun_root)
    try:
        env = dict(os.environ, OCIRUN_CRIU_TIMEOUT="50")
        r = run_ocirun("--criu", fake, "checkpoint", "--image-path", tmp_path / "i", "c1", root=ocirun_root,
                       env=env, timeout=40)
        one_line_error(r, "criu exited (status 3) without an answer")
        assert json.loads(ok("state", "c1", root=ocirun_root).stdout)["status"] == "running"
    finally:
        if holder.exists():
            try:
                os.kill(int(holder.read_text()), 9)
            except ProcessLookupError:
                pass
        helpers.delete(ocirun_root, "c1")


def test_the_cgroup_yard_a_killed_criu_left_is_detached(tmp_path):
    """What `abort` clears when CRIU had to be killed: its yard (a tmpfs named by mkdtemp in its
    working directory, hierarchies mounted on it) and nothing beside it."""
    from ocirun import criu
    yard, other = tmp_path / ".criu.cgyard.AbC123", tmp_path / "not-a-yard"
    for d in (yard, other):
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "none", d], check=True)
    (yard / "unified").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", yard / "unified"], check=True)
    try:
        criu.detach_yards((str(tmp_path),))
        assert not yard.exists()
        assert os.path.ismount(other)
    finally:
        for d in (yard / "unified", yard, other):
            subprocess.run(["umount", "-l", d], capture_output=True)


def test_created_container_cannot_be_checkpointed(ocirun_root, tmp_path):
    if CRIU is None:
        pytest.skip("criu is not installed: checkpoint stops at that first")
    bundle = helpers.make_bundle(tmp_path, LOOP)
    ok("create", "-b", bundle, "c1", root=ocirun_root)
    try:
        r = run_ocirun("checkpoint", "--image-path", tmp_path / "i", "c1", root=ocirun_root)
        one_line_error(r, "Container cannot be checkpointed in created state")  # runc's words
    finally:
        helpers.delete(ocirun_root, "c1")


def test_restore_refusals_leave_nothing(ocirun_root, tmp_path):
    if CRIU is None:
        pytest.skip("criu is not installed")
    bundle = helpers.make_bundle(tmp_path, LOOP)
    one_line_error(run_ocirun("restore", "-d", "--image-path", tmp_path / "missing", "-b", bundle, "r1",
                              root=ocirun_root), "--image-path", "no such directory")
    (tmp_path / "empty").mkdir()
    one_line_error(run_ocirun("restore", "-d", "--image-path", tmp_path / "empty", "-b", bundle, "r1",
                              root=ocirun_root), "not a container checkpoint", "descriptors.json")
    assert not (ocirun_root / "r1").exists()


@pytest.mark.skipif(not _criu_fails_here(), reason="CRIU works on this kernel: its refusal cannot be provoked "
                                                  "(tests/v2/test_checkpoint.py covers the working case)")
def test_kernel_refusing_leaves_the_container_and_nothing_else(ocirun_root, tmp_path):
    bundle = helpers.make_bundle(tmp_path, LOOP)
    ok("run", "-d", "-b", bundle, "c1", root=ocirun_root)
    try:
        r = run_ocirun("checkpoint", "--image-path", tmp_path / "img", "c1", root=ocirun_root)
        line = one_line_error(r, "criu dump failed", "Error", "dump.log")
        assert "(00." not in line  # CRIU's clock is dropped from the quote
        assert json.loads(ok("state", "c1", root=ocirun_root).stdout)["status"] == "running"
    finally:
        helpers.delete(ocirun_root, "c1")
    # restore from images CRIU will not even read (it fails first): no state, cgroup or mount left
    other = helpers.make_bundle(tmp_path, LOOP, name="other")
    cgroup = helpers.read_config(other)["linux"]["cgroupsPath"]
    r = run_ocirun("restore", "-d", "--image-path", tmp_path / "img", "-b", other, "r1", root=ocirun_root)
    one_line_error(r, "criu restore failed", "restore.log")
    assert not (ocirun_root / "r1").exists()
    assert "criu-root" not in open("/proc/self/mountinfo").read()
    assert not [c for c in helpers.leftover_cgroups() if cgroup.strip("/").split(":")[-1] in c]


def test_features_say_whether_criu_is_installed():
    r = ok("features")
    enabled = json.loads(r.stdout)["annotations"]["io.github.ocirun.checkpoint.enabled"]
    assert enabled == ("true" if CRIU else "false")


def test_api_checkpoint_errors_are_oci_errors(ocirun_root, tmp_path):
    from ocirun.api import Container, OCIError
    with pytest.raises(OCIError, match="container does not exist: nope"):
        Container("nope", ocirun_root).checkpoint(tmp_path / "img", criu_path=CRIU or "criu")
    with pytest.raises(OCIError, match="not a container checkpoint"):
        (tmp_path / "empty").mkdir()
        Container.restore(helpers.make_bundle(tmp_path, LOOP), "r1", tmp_path / "empty", root=ocirun_root)
    assert not (ocirun_root / "r1").exists()
