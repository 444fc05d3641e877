"""seccomp `listenerPath`: with SCMP_ACT_NOTIFY rules the runtime sends the notify fd and the
container process state (runtime-spec config-linux.md "Seccomp") to the listener — for the
container's process at start, and for every exec'd process.
"""
from __future__ import annotations

import array
import json
import os
import socket

import pytest

from helpers import make_bundle, run_ocirun

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


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
        run_ocirun("delete", "--force", "sl1", root=ocirun_root)
        server.close()
