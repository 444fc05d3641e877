"""Checkpoint and restore with CRIU, ocirun and runc side by side.

CRIU fails on the development host's kernel (vdso) but works in the pure cgroup v2 guest
(tools/v2tests.sh: Debian's 6.1 kernel), so these tests run there, in the same boot as the rest
of tests/v2, and skip wherever `criu check` is unhappy.  The containers write a counter to their
stdout, a pipe of ours: after a restore, the new pipe must carry the numbers that follow the
last one read before the checkpoint — the process went on where it stopped, it did not start
again.  The guest is ~30x slower than the host: few containers, generous timeouts.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time

import pytest

import helpers

TIMEOUT = 180


def _criu_works() -> str | None:
    criu = shutil.which("criu")
    if criu is None:
        return "criu is not installed"
    r = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return f"`criu check` fails on this kernel: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    return None


_why_not = _criu_works() if os.geteuid() == 0 else "needs root"
pytestmark = [pytest.mark.v2, pytest.mark.skipif(_why_not is not None, reason=f"CRIU: {_why_not}; "
                                                 "run tools/v2tests.sh (its guest kernel has what CRIU needs)")]

COUNTER = "i=0; while :; do i=$((i+1)); echo $i; echo $i > /tmp/count; sleep 0.2; done"
TMPFS = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}


@pytest.fixture(params=["ocirun", "runc"])
def runtime(request, ocirun_root, tmp_path):
    if request.param == "runc":
        if helpers.RUNC is None:
            pytest.skip("runc is not installed")
        root = helpers.new_state_root()
        yield Runtime(helpers.run_runc, root)
        for cid in sorted(os.listdir(root)) if root.exists() else []:
            helpers.run_runc("delete", "--force", cid, root=root, timeout=TIMEOUT)
        shutil.rmtree(root, ignore_errors=True)
    else:
        yield Runtime(helpers.run_ocirun, ocirun_root)


class Runtime:
    def __init__(self, run, root):
        self.run, self.root = run, root
        self.name = "runc" if run is helpers.run_runc else "ocirun"

    def command(self) -> list[str]:
        return ([helpers.RUNC] if self.name == "runc" else helpers.ocirun_command()) + ["--root", str(self.root)]

    def ok(self, *args, **kw):
        r = self.run(*args, root=self.root, timeout=TIMEOUT, **kw)
        assert r.returncode == 0, f"[{self.name}] {' '.join(map(str, args))} -> {r.returncode}: {r.stderr}"
        return r

    def with_pipes(self, *args) -> "Pipes":
        """`ARGS` (run -d / restore -d) with three fresh pipes as stdio; our ends back."""
        pipes = Pipes()
        proc = subprocess.Popen(self.command() + [str(a) for a in args], stdin=pipes.theirs[0],
                                stdout=pipes.theirs[1], stderr=pipes.theirs[2],
                                env=dict(os.environ, PYTHONPATH=str(helpers.REPO)))
        pipes.close_theirs()
        status = proc.wait(timeout=TIMEOUT)
        assert status == 0, f"[{self.name}] {args[0]} -> {status}: {pipes.read_err()}"
        return pipes

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid).stdout)


class Pipes:
    def __init__(self) -> None:
        stdin, stdout, stderr = os.pipe(), os.pipe(), os.pipe()
        self.theirs = [stdin[0], stdout[1], stderr[1]]
        self.ours = [stdin[1], stdout[0], stderr[0]]
        self.buffer = b""

    def close_theirs(self) -> None:
        for fd in self.theirs:
            os.close(fd)

    def read_err(self) -> str:
        os.set_blocking(self.ours[2], False)
        try:
            return os.read(self.ours[2], 65536).decode(errors="replace")
        except BlockingIOError:
            return ""

    def numbers(self, at_least: int, timeout: float = 60) -> list[int]:
        """Read the counter's lines until `at_least` complete ones have come."""
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < at_least:
            left = deadline - time.monotonic()
            assert left > 0, f"the counter printed only {self.buffer!r}"
            ready, _, _ = select.select([self.ours[1]], [], [], left)
            if ready:
                chunk = os.read(self.ours[1], 4096)
                assert chunk, f"stdout closed after {self.buffer!r}"
                self.buffer += chunk
        lines, _, self.buffer = self.buffer.rpartition(b"\n")
        return [int(x) for x in lines.split()]

    def close(self) -> None:
        for fd in self.ours:
            os.close(fd)


def _bundle(tmp_path, name, mounts=(), **overrides):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", COUNTER], name=name, **overrides)
    config = helpers.read_config(bundle)
    config["mounts"] += [TMPFS, *mounts]
    config["process"]["terminal"] = False
    helpers.write_config(bundle, config)
    return bundle


def _continues(before: list[int], after: list[int]) -> None:
    assert after[0] > before[-1], f"restarted instead of restored: {before[-3:]} then {after[:3]}"
    assert after == list(range(after[0], after[0] + len(after))), after


# ------------------------------------------------------------------------- scenarios

def test_checkpoint_and_restore_continue_the_count(runtime, tmp_path):
    bundle, images, cid = _bundle(tmp_path, "b"), tmp_path / "images", "cr1"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        before = first.numbers(3)
        runtime.ok("checkpoint", "--image-path", images, "--work-path", tmp_path / "work", cid)
        assert runtime.run("state", cid, root=runtime.root).returncode != 0, "the container outlived its checkpoint"
        assert (images / "descriptors.json").exists()
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "--work-path", tmp_path / "work2",
                                    "-b", bundle, cid)
        try:
            st = runtime.state(cid)
            assert st["status"] == "running", st
            after = second.numbers(3)
            _continues(before, after)
            # a restored container is an ordinary one: exec, kill, delete
            assert runtime.ok("exec", cid, "cat", "/tmp/count").stdout.strip().isdigit()
            runtime.ok("kill", cid, "KILL")
            helpers.wait_until(lambda: runtime.state(cid)["status"] == "stopped", timeout=60, what="stopped")
            runtime.ok("delete", cid)
        finally:
            second.close()
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_leave_running_and_restore_under_another_id(runtime, tmp_path):
    bundle, images = _bundle(tmp_path, "b"), tmp_path / "images"
    first = runtime.with_pipes("run", "-d", "-b", bundle, "orig")
    try:
        first.numbers(2)
        runtime.ok("checkpoint", "--leave-running", "--image-path", images, "orig")
        assert runtime.state("orig")["status"] == "running"
        before = first.numbers(2)  # still counting after the checkpoint
        runtime.ok("kill", "orig", "KILL")
        helpers.wait_until(lambda: runtime.state("orig")["status"] == "stopped", timeout=60, what="stopped")
        runtime.ok("delete", "orig")
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, "copy")
        try:
            after = second.numbers(2)
            # restored from the moment of the checkpoint: behind what the original reached since
            assert after[0] <= before[-1], (before, after)
            assert runtime.state("copy")["status"] == "running"
        finally:
            second.close()
    finally:
        first.close()
        for cid in ("orig", "copy"):
            runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_pre_dump_then_dump(runtime, tmp_path):
    bundle, images, cid = _bundle(tmp_path, "b"), tmp_path / "images", "cr3"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        first.numbers(2)
        runtime.ok("checkpoint", "--pre-dump", "--image-path", images / "pre", cid)
        assert runtime.state(cid)["status"] == "running", "pre-dump must leave the container running"
        before = first.numbers(2)
        runtime.ok("checkpoint", "--image-path", images / "final", "--parent-path", "../pre", cid)
        second = runtime.with_pipes("restore", "-d", "--image-path", images / "final", "-b", bundle, cid)
        try:
            _continues(before, second.numbers(2))
        finally:
            second.close()
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_bind_mount_and_tmpfs_come_back(runtime, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    bind = {"destination": "/home", "type": "bind", "source": str(shared), "options": ["rbind", "rw"]}
    bundle, images, cid = _bundle(tmp_path, "b", mounts=[bind]), tmp_path / "images", "cr4"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        before = first.numbers(2)
        runtime.ok("exec", cid, "sh", "-c", "echo kept > /tmp/note")
        runtime.ok("checkpoint", "--image-path", images, cid)
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, cid)
        try:
            _continues(before, second.numbers(2))
            assert runtime.ok("exec", cid, "cat", "/tmp/note").stdout == "kept\n"  # tmpfs content
            assert runtime.ok("exec", cid, "cat", "/home/hello").stdout == "from the host\n"
            runtime.ok("exec", cid, "sh", "-c", "echo back > /home/from-container")
            assert (shared / "from-container").read_text() == "back\n"  # the bind, not a copy
        finally:
            second.close()
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


# ------------------------------------------------------------------------- errors (ocirun)

def test_errors_are_one_line_and_leave_nothing(ocirun_root, tmp_path):
    bundle = _bundle(tmp_path, "b")
    # no such container
    helpers.one_line_error(helpers.run_ocirun("checkpoint", "--image-path", tmp_path / "i", "nope",
                                              root=ocirun_root, timeout=TIMEOUT), "nope")
    # an image directory that is no checkpoint
    (tmp_path / "empty").mkdir()
    r = helpers.run_ocirun("restore", "-d", "--image-path", tmp_path / "empty", "-b", bundle, "x",
                           root=ocirun_root, timeout=TIMEOUT)
    helpers.one_line_error(r, "descriptors.json")
    assert not (ocirun_root / "x").exists()
    # a created (not started) container cannot be checkpointed
    helpers.ok("create", "-b", bundle, "made", root=ocirun_root, timeout=TIMEOUT)
    try:
        r = helpers.run_ocirun("checkpoint", "--image-path", tmp_path / "i", "made", root=ocirun_root, timeout=TIMEOUT)
        helpers.one_line_error(r, "created")
    finally:
        helpers.delete(ocirun_root, "made", timeout=TIMEOUT)
    # restore onto an id that exists: refused, the running one untouched
    images = tmp_path / "images"
    first = Runtime(helpers.run_ocirun, ocirun_root).with_pipes("run", "-d", "-b", bundle, "live")
    try:
        first.numbers(1)
        helpers.ok("checkpoint", "--leave-running", "--image-path", images, "live", root=ocirun_root, timeout=TIMEOUT)
        r = helpers.run_ocirun("restore", "-d", "--image-path", images, "-b", bundle, "live",
                               root=ocirun_root, timeout=TIMEOUT)
        helpers.one_line_error(r, "exists")
        assert json.loads(helpers.ok("state", "live", root=ocirun_root).stdout)["status"] == "running"
    finally:
        first.close()
        helpers.delete(ocirun_root, "live", timeout=TIMEOUT)
    # images of another container: its bind mount is missing from this bundle, CRIU refuses;
    # one line quoting CRIU, nothing left behind
    shared = tmp_path / "shared"
    shared.mkdir()
    bind = {"destination": "/home", "type": "bind", "source": str(shared), "options": ["rbind"]}
    with_bind, images2 = _bundle(tmp_path, "with-bind", mounts=[bind]), tmp_path / "images2"
    first = Runtime(helpers.run_ocirun, ocirun_root).with_pipes("run", "-d", "-b", with_bind, "src")
    try:
        first.numbers(1)
        helpers.ok("checkpoint", "--image-path", images2, "src", root=ocirun_root, timeout=TIMEOUT)
        r = helpers.run_ocirun("restore", "-d", "--image-path", images2, "-b", bundle, "again",
                               root=ocirun_root, timeout=TIMEOUT)
        helpers.one_line_error(r, "criu")
        assert not (ocirun_root / "again").exists()
        assert not [d for d in os.listdir(ocirun_root)], os.listdir(ocirun_root)
    finally:
        first.close()
        helpers.delete(ocirun_root, "src", check=False, timeout=TIMEOUT)
