"""seccomp `listenerPath`: with SCMP_ACT_NOTIFY rules the runtime sends the notify fd and the
container process state (runtime-spec config-linux.md "Seccomp") to the listener — for the
container's process, and for every exec'd process, with or without no_new_privs (without it the
filter is loaded during `create`, while still privileged).  A real agent answers them here.
"""
from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import threading
import time

import helpers
import pytest

from helpers import RUNC, make_bundle, ocirun_command, read_config, run_ocirun, run_runc


def _receive(server: socket.socket) -> tuple[dict, int]:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(10)
        fds = array.array("i")
        msg, anc, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        assert len(fds) == 1, "exactly one fd (the seccomp notify fd)"
        return json.loads(msg), fds[0]


def test_listener_gets_fd_and_state_for_run_and_exec(ocirun_root, tmp_path):
    sock_path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(4)
    server.settimeout(20)
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock_path, "listenerMetadata": "meta-1",
               "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    bundle = make_bundle(tmp_path, ["sleep", "1000"], linux={"seccomp": profile})
    try:
        r = run_ocirun("run", "--detach", "--bundle", str(bundle), "sl1", root=ocirun_root)
        assert r.returncode == 0, r.stderr
        first, fd1 = _receive(server)
        init_pid = json.loads(run_ocirun("state", "sl1", root=ocirun_root).stdout)["pid"]
        assert first["fds"] == ["seccompFd"] and first["metadata"] == "meta-1"
        assert first["pid"] == init_pid and first["state"]["id"] == "sl1"
        assert os.readlink(f"/proc/self/fd/{fd1}") == "anon_inode:seccomp notify"

        r = run_ocirun("exec", "--detach", "--pid-file", str(tmp_path / "x.pid"), "sl1", "sleep", "999",
                       root=ocirun_root)
        assert r.returncode == 0, r.stderr
        second, fd2 = _receive(server)
        assert second["pid"] == int((tmp_path / "x.pid").read_text()) != init_pid
        assert second["state"]["id"] == "sl1" and second["state"]["pid"] == init_pid
        os.close(fd1)
        os.close(fd2)
    finally:
        helpers.delete(ocirun_root, "sl1", check=False)
        server.close()


# ---------------------------------------------------------------------------- a real agent

_NOTIF_RECV = 0xC0502100   # _IOWR('!', 0, struct seccomp_notif)       (80 bytes)
_NOTIF_SEND = 0xC0182101   # _IOWR('!', 1, struct seccomp_notif_resp)  (24 bytes)
_FLAG_CONTINUE = 1         # SECCOMP_USER_NOTIF_FLAG_CONTINUE: let the syscall run
_NR = {"mkdir": 83, "mkdirat": 258}  # x86_64


class Agent:
    """A seccomp agent on a unix socket, in threads of the test process: it takes every
    connection's state and fd, then answers each notification — EROFS for mkdir/mkdirat,
    CONTINUE for the rest — or, `stuck`, never answers (a hung agent)."""

    def __init__(self, path: str, stuck: bool = False):
        self.path, self.stuck = path, stuck
        self.states: list[dict] = []
        self.notified: list[int] = []          # syscall numbers, in order
        self._fds: list[int] = []
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(8)
        self._server.settimeout(0.2)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                state, fd = _receive_from(conn)
            self.states.append(state)
            self._fds.append(fd)
            if not self.stuck:
                t = threading.Thread(target=self._answer, args=(fd,), daemon=True)
                self._threads.append(t)
                t.start()

    def _answer(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            events = poller.poll(100)
            if not events:
                continue
            if events[0][1] & (select.POLLHUP | select.POLLERR):
                return  # every process under the filter is gone
            req = bytearray(80)
            try:
                fcntl.ioctl(fd, _NOTIF_RECV, req)
            except OSError:
                continue  # the process died between poll and recv
            notif_id, _pid, _flags, nr = struct.unpack_from("=QIIi", req)
            self.notified.append(nr)
            if nr in _NR.values():
                resp = struct.pack("=QqiI", notif_id, 0, -errno.EROFS, 0)
            else:
                resp = struct.pack("=QqiI", notif_id, 0, 0, _FLAG_CONTINUE)
            try:
                fcntl.ioctl(fd, _NOTIF_SEND, bytearray(resp))
            except OSError:
                pass  # ENOENT: the process was killed meanwhile

    def wait_for_states(self, n: int, timeout: float = 10) -> list[dict]:
        helpers.wait_until(lambda: len(self.states) >= n, timeout, f"{n} container state(s) from the runtime")
        return self.states

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._server.close()
        for fd in self._fds:
            os.close(fd)


def _receive_from(conn: socket.socket) -> tuple[dict, int]:
    conn.settimeout(10)
    fds = array.array("i")
    msg, anc, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    assert len(fds) == 1, f"exactly one fd (the seccomp notify fd), got {len(fds)} with {msg!r}"
    # Not read to end-of-file first: the runtime's close(2) of its end may itself be notified
    # (and then waits for us to answer on this very fd).
    while True:
        try:
            return json.loads(msg), fds[0]
        except ValueError:
            msg += conn.recv(1 << 16) or b"}"  # the rest of a payload larger than one segment


@pytest.fixture
def agent(tmp_path):
    a = Agent(str(tmp_path / "agent.sock"))
    yield a
    a.close()


def notify_profile(path: str, names: list[str]) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
            "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}]}


# The init and the exec'd process make these after the filter is loaded, in either order
# (without no_new_privs the filter is loaded while still privileged, before `ready`).
BUSY = ["execve", "execveat", "openat", "read", "close", "write", "chdir", "getcwd", "newfstatat", "getsockname",
        "mkdir", "mkdirat"]


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_agent_answers_for_the_init_and_an_exec_in_either_order(ocirun_root, tmp_path, agent, nnp):
    bundle = make_bundle(tmp_path, ["sh", "-c", "mkdir /x 2>&1; sleep 1000"],
                         linux={"seccomp": notify_profile(agent.path, BUSY)},
                         process={"noNewPrivileges": nnp})
    log = tmp_path / "out.log"
    try:
        with open(log, "w") as out:
            r = subprocess.run([*ocirun_command(), "--root", str(ocirun_root), "create", "-b", str(bundle), "n1"],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30)
        assert r.returncode == 0, log.read_text()
        assert run_ocirun("start", "n1", root=ocirun_root).returncode == 0
        init_pid = json.loads(run_ocirun("state", "n1", root=ocirun_root).stdout)["pid"]
        states = agent.wait_for_states(1)
        assert len(states) == 1 and states[0]["pid"] == init_pid and states[0]["state"]["id"] == "n1"
        assert states[0]["fds"] == ["seccompFd"]
        r = run_ocirun("exec", "n1", "mkdir", "/y", root=ocirun_root)
        assert r.returncode == 1 and "Read-only file system" in r.stderr, (r.stdout, r.stderr)
        assert len(agent.wait_for_states(2)) == 2 and agent.states[1]["state"]["pid"] == init_pid
        # The agent answered the mkdir of both processes (EROFS) and let the rest run.
        assert agent.notified.count(_NR["mkdir"]) + agent.notified.count(_NR["mkdirat"]) == 2
        assert "Read-only file system" in log.read_text()
    finally:
        helpers.delete(ocirun_root, "n1", check=False)


# ---------------------------------------------------------------------------- deadlines

FAST = dict(os.environ, OCIRUN_STEP_TIMEOUT="2")  # channel.py: our waits on our children


def test_a_stuck_agent_fails_create_at_the_deadline_and_leaves_nothing(ocirun_root, tmp_path):
    # Without no_new_privs the filter is loaded before `ready`: an agent that takes the fd and
    # never answers stalls the init on its next notified syscall.  create must not wait forever.
    agent = Agent(str(tmp_path / "stuck.sock"), stuck=True)
    bundle = make_bundle(tmp_path, ["true"], linux={"seccomp": notify_profile(agent.path, BUSY)},
                         process={"noNewPrivileges": False})
    try:
        t0 = time.monotonic()
        r = run_ocirun("create", "-b", str(bundle), "st1", root=ocirun_root, env=FAST, timeout=60)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert time.monotonic() - t0 < 20
        assert "timed out after 2s waiting for the container's init to finish its setup under its seccomp filter" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert len(agent.states) == 1 and agent.states[0]["state"]["status"] == "creating"
        assert not os.path.exists(ocirun_root / "st1")
        assert run_ocirun("list", "-q", root=ocirun_root).stdout.strip() == ""
    finally:
        helpers.delete(ocirun_root, "st1", check=False)
        agent.close()


def test_a_stuck_agent_fails_exec_at_the_deadline(ocirun_root, tmp_path):
    # The container's process (no_new_privs: filter loaded right before execve) never calls
    # chdir under the filter; an exec'd process without no_new_privs does, before its execve.
    agent = Agent(str(tmp_path / "stuck.sock"), stuck=True)
    bundle = make_bundle(tmp_path, ["sleep", "1000"],
                         linux={"seccomp": notify_profile(agent.path, ["chdir", "mkdir"])})
    proc = dict(read_config(bundle)["process"], args=["true"], noNewPrivileges=False)
    (tmp_path / "proc.json").write_text(json.dumps(proc))
    try:
        assert run_ocirun("run", "-d", "-b", str(bundle), "st2", root=ocirun_root).returncode == 0
        t0 = time.monotonic()
        r = run_ocirun("exec", "--process", str(tmp_path / "proc.json"), "st2", root=ocirun_root,
                       env=FAST, timeout=60)
        assert r.returncode != 0 and time.monotonic() - t0 < 20
        assert "timed out after 2s waiting for the exec'd process" in r.stderr, r.stderr
        assert len(agent.states) == 2
        # The stalled process was killed: only the init is left in the container.
        assert len(run_ocirun("ps", "st2", root=ocirun_root).stdout.strip().splitlines()) == 2
    finally:
        helpers.delete(ocirun_root, "st2", check=False)
        agent.close()


def test_a_stuck_agent_fails_start_at_the_deadline(ocirun_root, tmp_path):
    # With no_new_privs the filter is loaded after `start` released the init: a notified close
    # of ours right after the send waits for the agent; `start` (reading the exec fifo until the
    # execve) must not wait forever.
    agent = Agent(str(tmp_path / "stuck.sock"), stuck=True)
    bundle = make_bundle(tmp_path, ["true"], linux={"seccomp": notify_profile(agent.path, ["close", "mkdir"])})
    try:
        r = run_ocirun("create", "-b", str(bundle), "st3", root=ocirun_root, env=FAST)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        r = run_ocirun("start", "st3", root=ocirun_root, timeout=60)
        assert r.returncode == 1 and time.monotonic() - t0 < 20, (r.returncode, r.stderr)
        assert "timed out after 2s waiting for the container's process to start" in r.stderr, r.stderr
        assert len(agent.states) == 1
        assert json.loads(run_ocirun("state", "st3", root=ocirun_root).stdout)["status"] == "stopped"
    finally:
        helpers.delete(ocirun_root, "st3", check=False)
        agent.close()


# ---------------------------------------------------------------------------- refused profiles


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
def test_notify_without_listener_path_is_refused_at_create_as_by_runc(ocirun_root, runc_root, tmp_path):
    # Nobody would ever get the notify fd: the process would wait on itself (or get ENOSYS).
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    bundle = make_bundle(tmp_path, ["true"], linux={"seccomp": profile})
    r = run_ocirun("create", "-b", str(bundle), "nl1", root=ocirun_root)
    assert r.returncode == 1
    assert "linux.seccomp.listenerPath: is required" in r.stderr and "linux.seccomp.syscalls[0]" in r.stderr
    assert not os.path.exists(ocirun_root / "nl1")
    r = run_runc("create", "-b", str(bundle), "nl1", root=runc_root)
    helpers.delete(runc_root, "nl1", run=run_runc, check=False)
    assert r.returncode == 1 and "listenerPath is not set" in r.stderr


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_notify_on_the_syscall_that_carries_the_fd_is_refused(ocirun_root, runc_root, tmp_path, agent, nnp):
    # Each runtime refuses the one syscall its init needs to get the notify fd out after the
    # load: runc writes the fd's number to its parent (write), ocirun sends the fd to the agent
    # itself (sendmsg).  Everything after that, write included, the agent answers.
    for name, runtime, run, root in (("sendmsg", "ocirun", run_ocirun, ocirun_root),
                                     ("write", "runc", run_runc, runc_root)):
        bundle = make_bundle(tmp_path, ["true"], name=f"b-{runtime}",
                             linux={"seccomp": notify_profile(agent.path, ["mkdir", name])},
                             process={"noNewPrivileges": nnp})
        r = run("run", "-b", str(bundle), "rf1", root=root)
        helpers.delete(root, "rf1", run=run, check=False)
        assert r.returncode != 0, (runtime, r.stderr)
        assert f"SCMP_ACT_NOTIFY cannot be used for the {name} syscall" in r.stderr, (runtime, r.stderr)
        if runtime == "ocirun":
            assert "linux.seccomp.syscalls[0].action" in r.stderr and "Traceback" not in r.stderr
    assert agent.states == []
