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
import socket
import subprocess
import time

import pytest

import helpers
from checkpointing import TIMEOUT, Pipes, Runtime, assert_continues, counter_bundle, criu_problem

_why_not = criu_problem() if os.geteuid() == 0 else "needs root"
pytestmark = [pytest.mark.v2, pytest.mark.skipif(_why_not is not None, reason=f"CRIU: {_why_not}; "
                                                 "run tools/v2tests.sh (its guest kernel has what CRIU needs)")]


@pytest.fixture(params=["ocirun", "runc"])
def runtime(request, ocirun_root, runc_root):
    return Runtime(request.param, ocirun_root if request.param == "ocirun" else runc_root)


# ------------------------------------------------------------------------- scenarios

def test_checkpoint_and_restore_continue_the_count(runtime, tmp_path):
    bundle, images, cid = counter_bundle(tmp_path, "b"), tmp_path / "images", "cr1"
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
            assert_continues(before, after)
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
    bundle, images = counter_bundle(tmp_path, "b"), tmp_path / "images"
    first = runtime.with_pipes("run", "-d", "-b", bundle, "orig")
    try:
        first.numbers(2)
        runtime.ok("checkpoint", "--leave-running", "--image-path", images, "orig")
        assert runtime.state("orig")["status"] == "running"
        # Still counting after the checkpoint.  A line or two read now may predate the dump (left
        # in the pipe): four make sure the original went on past the moment it was dumped.
        before = first.numbers(4)
        runtime.ok("kill", "orig", "KILL")
        helpers.wait_until(lambda: runtime.state("orig")["status"] == "stopped", timeout=60, what="stopped")
        runtime.ok("delete", "orig")
        reached = max(before + first.rest())
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, "copy")
        try:
            after = second.numbers(2)
            # restored from the moment of the checkpoint: behind what the original reached since
            assert after[0] <= reached, (before, reached, after)
            assert runtime.state("copy")["status"] == "running"
        finally:
            second.close()
    finally:
        first.close()
        for cid in ("orig", "copy"):
            runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_pre_dump_then_dump(runtime, tmp_path):
    bundle, images, cid = counter_bundle(tmp_path, "b"), tmp_path / "images", "cr3"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        first.numbers(2)
        runtime.ok("checkpoint", "--pre-dump", "--image-path", images / "pre", cid)
        assert runtime.state(cid)["status"] == "running", "pre-dump must leave the container running"
        before = first.numbers(2)
        runtime.ok("checkpoint", "--image-path", images / "final", "--parent-path", "../pre", cid)
        second = runtime.with_pipes("restore", "-d", "--image-path", images / "final", "-b", bundle, cid)
        try:
            assert_continues(before, second.numbers(2))
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
    bundle, images, cid = counter_bundle(tmp_path, "b", mounts=[bind]), tmp_path / "images", "cr4"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        before = first.numbers(2)
        runtime.ok("exec", cid, "sh", "-c", "echo kept > /tmp/note")
        runtime.ok("checkpoint", "--image-path", images, cid)
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, cid)
        try:
            assert_continues(before, second.numbers(2))
            assert runtime.ok("exec", cid, "cat", "/tmp/note").stdout == "kept\n"  # tmpfs content
            assert runtime.ok("exec", cid, "cat", "/home/hello").stdout == "from the host\n"
            runtime.ok("exec", cid, "sh", "-c", "echo back > /home/from-container")
            assert (shared / "from-container").read_text() == "back\n"  # the bind, not a copy
        finally:
            second.close()
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_bind_mount_through_a_symlink_comes_back(runtime, tmp_path):
    """The destination goes through a symlink of the image (/data -> /srv/data): the bind sits
    at the resolved point, which is the one CRIU must be told is external."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("through the link\n")
    rootfs = helpers.private_rootfs(tmp_path)
    (rootfs / "srv" / "data").mkdir(parents=True)
    (rootfs / "data").symlink_to("/srv/data")
    bind = {"destination": "/data/vol", "type": "bind", "source": str(shared), "options": ["rbind", "rw"]}
    bundle = counter_bundle(tmp_path, "sl", mounts=[bind], rootfs=rootfs)
    images, cid = tmp_path / "images", "cr-sl"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        before = first.numbers(2)
        runtime.ok("checkpoint", "--image-path", images, cid)
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, cid)
        try:
            assert_continues(before, second.numbers(2))
            assert runtime.ok("exec", cid, "cat", "/srv/data/vol/hello").stdout == "through the link\n"
        finally:
            second.close()
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


# ------------------------------------------------------------------------- errors (ocirun)

def test_errors_are_one_line_and_leave_nothing(ocirun_root, tmp_path):
    bundle = counter_bundle(tmp_path, "b")
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
    first = Runtime("ocirun", ocirun_root).with_pipes("run", "-d", "-b", bundle, "live")
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
    with_bind, images2 = counter_bundle(tmp_path, "with-bind", mounts=[bind]), tmp_path / "images2"
    first = Runtime("ocirun", ocirun_root).with_pipes("run", "-d", "-b", with_bind, "src")
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


def test_terminal_comes_back_through_the_console_socket(runtime, tmp_path):
    """The container's terminal is a pty of its own devpts: CRIU makes a new pair at restore and
    gives us the master, which goes to --console-socket as at create."""
    bundle = counter_bundle(tmp_path, "b")
    config = helpers.read_config(bundle)
    config["process"]["terminal"] = True
    helpers.write_config(bundle, config)
    images, cid, sock_path = tmp_path / "images", "tty1", tmp_path / "console.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(2)
    masters = []
    try:
        runtime.ok("run", "-d", "--console-socket", sock_path, "-b", bundle, cid)
        masters.append(_receive_master(server))
        before = _numbers_from(masters[0], 2)
        runtime.ok("checkpoint", "--image-path", images, cid)
        runtime.ok("restore", "-d", "--console-socket", sock_path, "--image-path", images, "-b", bundle, cid)
        masters.append(_receive_master(server))
        assert_continues(before, _numbers_from(masters[1], 2))
        # the restored init's stdio is the new pty's slave, in the container's devpts
        assert runtime.ok("exec", cid, "readlink", "/proc/1/fd/0").stdout.startswith("/dev/pts/")
    finally:
        server.close()
        for fd in masters:
            os.close(fd)
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def _receive_master(server: socket.socket) -> int:
    server.settimeout(TIMEOUT)
    conn, _ = server.accept()
    with conn:
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    assert fds, "no fd came through the console socket"
    return fds[0]


def _numbers_from(master: int, at_least: int, timeout: float = 60) -> list[int]:
    """The counter's lines as they come out of the pty (CR LF, possibly a partial first line)."""
    buffer, deadline = b"", time.monotonic() + timeout
    while True:
        lines = [x for x in buffer.replace(b"\r", b"").split(b"\n")[:-1] if x.strip().isdigit()]
        if len(lines) > at_least:
            return [int(x) for x in lines[1:]]  # the first may be the tail of an older line
        left = deadline - time.monotonic()
        assert left > 0, f"the counter printed only {buffer!r}"
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            buffer += os.read(master, 4096)


def test_restore_in_the_foreground_waits_and_gives_the_status(runtime, tmp_path):
    """Without --detach, restore is `run`: it waits for the container, exits with its status
    and removes it."""
    bundle, images, cid = counter_bundle(tmp_path, "b"), tmp_path / "images", "fg1"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        before = first.numbers(2)
        runtime.ok("checkpoint", "--image-path", images, cid)
    finally:
        first.close()
    pipes = Pipes()
    proc = subprocess.Popen(runtime.command() + ["restore", "--image-path", str(images), "-b", str(bundle), cid],
                            stdin=pipes.theirs[0], stdout=pipes.theirs[1], stderr=pipes.theirs[2],
                            env=dict(os.environ, PYTHONPATH=str(helpers.REPO)))
    pipes.close_theirs()
    try:
        assert_continues(before, pipes.numbers(2))
        assert runtime.state(cid)["status"] == "running"
        runtime.ok("kill", cid, "KILL")
        assert proc.wait(timeout=TIMEOUT) == 137
        assert runtime.run("state", cid, root=runtime.root).returncode != 0, "restore left the container"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pipes.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_prestart_and_create_runtime_hooks_run_at_restore(runtime, tmp_path):
    log = tmp_path / "hooks.log"
    hook = lambda kind: {"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind} $(cat) >> {log}"]}  # noqa: E731
    bundle = counter_bundle(tmp_path, "b", hooks={"prestart": [hook("prestart")], "createRuntime": [hook("createRuntime")]})
    images, cid = tmp_path / "images", "hk1"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        first.numbers(1)
        runtime.ok("checkpoint", "--image-path", images, cid)
        log.unlink()
        second = runtime.with_pipes("restore", "-d", "--image-path", images, "-b", bundle, cid)
        second.close()
        lines = log.read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["prestart", "createRuntime"], lines
        state = json.loads(lines[0].split(" ", 1)[1])
        assert state["id"] == cid and state["pid"] > 0, state
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)


def test_through_the_python_api(ocirun_root, tmp_path):
    from ocirun.api import Container
    bundle, images = counter_bundle(tmp_path, "b"), tmp_path / "images"
    first = Runtime("ocirun", ocirun_root).with_pipes("run", "-d", "-b", bundle, "api1")
    try:
        before = first.numbers(2)
        Container("api1", ocirun_root).checkpoint(images)
        assert Container.list(ocirun_root) == []
        second = Pipes()
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        try:  # restore hands our stdio to CRIU: the new pipes, for the time of the call
            for fd, end in enumerate(second.theirs):
                os.dup2(end, fd)
            c = Container.restore(bundle, "api1", images, root=ocirun_root)
        finally:
            for fd, old in enumerate(saved):
                os.dup2(old, fd)
                os.close(old)
            second.close_theirs()
        try:
            assert c.status() == "running"
            assert_continues(before, second.numbers(2))
            c.kill("KILL")
            c.wait(timeout=TIMEOUT)
            c.delete()
        finally:
            second.close()
    finally:
        first.close()
        helpers.delete(ocirun_root, "api1", check=False, timeout=TIMEOUT)


def _criu_yards() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if "/.criu.cgyard." in line.split()[4]]


def test_a_restore_undone_by_a_failing_hook_leaves_no_criu_mounts(ocirun_root, tmp_path):
    """CRIU mounts its cgroup yard (a tmpfs, the cgroup2 tree on it) in our mount namespace; a
    CRIU killed at once after our failure left both there, and the image directory could not be
    removed.  Hung up on, CRIU undoes them itself, as runc lets it (runc 1.1.5 leaves nothing
    mounted either, but its cgroup stays behind here: ocirun alone)."""
    runtime = Runtime("ocirun", ocirun_root)
    fail = {"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}
    bundle, images, cid = counter_bundle(tmp_path, "b"), tmp_path / "images", "yard"
    first = runtime.with_pipes("run", "-d", "-b", bundle, cid)
    try:
        first.numbers(1)
        runtime.ok("checkpoint", "--image-path", images, cid)
    finally:
        first.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)
    failing = counter_bundle(tmp_path, "failing", hooks={"prestart": [fail]})
    before = _criu_yards()
    pipes = Pipes()  # stdio pipes again, as the dumped process had: CRIU gets as far as the hook
    proc = subprocess.Popen(runtime.command() + ["restore", "-d", "--image-path", str(images), "-b", str(failing), cid],
                            stdin=pipes.theirs[0], stdout=pipes.theirs[1], stderr=pipes.theirs[2],
                            env=dict(os.environ, PYTHONPATH=str(helpers.REPO)))
    pipes.close_theirs()
    try:
        assert proc.wait(timeout=TIMEOUT) != 0
        assert "prestart" in pipes.read_err()
        assert _criu_yards() == before
        assert not (runtime.root / cid).exists()
    finally:
        pipes.close()
        runtime.run("delete", "--force", cid, root=runtime.root, timeout=TIMEOUT)
