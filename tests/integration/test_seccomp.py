"""Seccomp filters loaded for real: each check runs in a forked child that loads the filter and
then makes the syscall (or execs busybox), so the test process itself is never filtered.
At the end, real containers through `ocirun run` with engine profiles.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import struct

import prctl
import pytest

import helpers
from helpers import make_bundle, run_ocirun
from ocirun import seccomp


FIXTURES = helpers.FIXTURES


def fixture_profile(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}-config.json").read_text())["linux"]["seccomp"]


def allow_all_but(names, action="SCMP_ACT_ERRNO", **extra) -> dict:
    rule = {"names": list(names), "action": action, **extra}
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}


def in_child(flt: seccomp.Filter, then) -> tuple[int, bytes]:
    """Fork; the child loads `flt`, runs then(write) and exits 0.  Returns (wait status, output).

    `then` reports through `write(bytes)` (a pipe), because the filter may forbid other ways.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            prctl.set_no_new_privs(True)
            flt.load()
            then(lambda b: os.write(w, b))
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(w, f"child: {e!r}".encode())
            finally:
                code = 99
        os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return status, out


def errno_of(call) -> int:
    try:
        call()
    except OSError as e:
        return e.errno
    return 0


def report_errno(call):
    return lambda write: write(str(errno_of(call)).encode())


def test_mkdir_gets_eperm(tmp_path):
    flt = seccomp.compile_filter(allow_all_but(["mkdir", "mkdirat"]), cache_dir=None)
    status, out = in_child(flt, report_errno(lambda: os.mkdir(tmp_path / "d")))
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert int(out) == errno.EPERM
    assert not (tmp_path / "d").exists()


def test_custom_errno_ret(tmp_path):
    flt = seccomp.compile_filter(allow_all_but(["mkdir", "mkdirat"], errnoRet=38), cache_dir=None)
    status, out = in_child(flt, report_errno(lambda: os.mkdir(tmp_path / "d")))
    assert int(out) == errno.ENOSYS


def test_trace_without_a_tracer_fails_the_syscall(tmp_path):
    # With no tracer attached the kernel fails SECCOMP_RET_TRACE syscalls with ENOSYS.
    flt = seccomp.compile_filter(allow_all_but(["mkdir", "mkdirat"], action="SCMP_ACT_TRACE"),
                                 cache_dir=None)
    status, out = in_child(flt, report_errno(lambda: os.mkdir(tmp_path / "d")))
    assert int(out) == errno.ENOSYS


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_with_sigsys(tmp_path, action):
    flt = seccomp.compile_filter(allow_all_but(["mkdir", "mkdirat"], action=action), cache_dir=None)
    status, out = in_child(flt, lambda write: os.mkdir(tmp_path / "d"))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (status, out)
    assert not (tmp_path / "d").exists()


def test_log_allows_the_syscall(tmp_path):
    flt = seccomp.compile_filter(allow_all_but(["mkdir", "mkdirat"], action="SCMP_ACT_LOG"), cache_dir=None)
    status, out = in_child(flt, report_errno(lambda: os.mkdir(tmp_path / "d")))
    assert int(out) == 0 and (tmp_path / "d").is_dir()


def test_flags_are_passed_to_the_kernel(tmp_path):
    profile = allow_all_but(["mkdir", "mkdirat"])
    profile["flags"] = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
    flt = seccomp.compile_filter(profile, cache_dir=None)
    status, out = in_child(flt, report_errno(lambda: os.mkdir(tmp_path / "d")))
    assert int(out) == errno.EPERM


def test_docker_profile_runs_busybox_sh(rootfs):
    flt = seccomp.compile_filter(fixture_profile("docker"), cache_dir=None)
    busybox = str(rootfs / "bin" / "busybox")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            prctl.set_no_new_privs(True)
            flt.load()
            os.execv(busybox, [busybox, "sh", "-c", "echo ok; mkdir /proc/x 2>/dev/null; unshare -m true || echo denied"])
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.split() == ["ok", "denied"]  # unshare is outside docker's default allowlist


def test_podman_profile_answers_enosys_for_syscalls_newer_than_the_profile():
    # A deny-by-default profile whose newest syscall is exit_group: getrandom (newer) must get
    # ENOSYS (libc falls back), mkdir (older, not listed) the default EPERM.
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW", "names": [
        "write", "mmap", "munmap", "brk", "mprotect", "madvise", "exit", "exit_group",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "close", "getpid"]}]}
    flt = seccomp.compile_filter(profile, cache_dir=None)

    def probe(write):
        got = [errno_of(lambda: os.getrandom(1)), errno_of(lambda: os.mkdir("/nonexistent-dir/x"))]
        write(json.dumps(got).encode())
    status, out = in_child(flt, probe)
    assert json.loads(out) == [errno.ENOSYS, errno.EPERM], out


def test_default_errno_ret_is_used():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13, "syscalls": [
        {"action": "SCMP_ACT_ALLOW", "names": ["write", "mmap", "munmap", "brk", "exit_group", "exit",
                                               "rt_sigaction", "rt_sigprocmask", "getrandom"]}]}
    flt = seccomp.compile_filter(profile, cache_dir=None)
    status, out = in_child(flt, report_errno(lambda: os.mkdir("/nonexistent-dir/x")))
    assert int(out) == errno.EACCES


def _socket_errnos(write):
    got = {}
    for name, fam, typ in [("inet_stream", socket.AF_INET, socket.SOCK_STREAM),
                           ("inet_dgram", socket.AF_INET, socket.SOCK_DGRAM),
                           ("inet6_dgram", socket.AF_INET6, socket.SOCK_DGRAM),
                           ("unix", socket.AF_UNIX, socket.SOCK_STREAM)]:
        def make(fam=fam, typ=typ):
            socket.socket(fam, typ).close()
        got[name] = errno_of(make)
    write(json.dumps(got).encode())


def test_args_on_different_indexes_are_anded():
    # socket(AF_INET, SOCK_DGRAM | any flags) → EPERM; the type is masked because Python adds
    # SOCK_CLOEXEC.  AF_INET streams and AF_UNIX still work.
    profile = allow_all_but(["socket"], args=[
        {"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
        {"index": 1, "value": 0xF, "valueTwo": socket.SOCK_DGRAM, "op": "SCMP_CMP_MASKED_EQ"}])
    status, out = in_child(seccomp.compile_filter(profile, cache_dir=None), _socket_errnos)
    assert json.loads(out) == {"inet_stream": 0, "inet_dgram": errno.EPERM, "inet6_dgram": 0, "unix": 0}


def test_args_on_the_same_index_become_separate_rules():
    # As runc: two tests of arg 0 cannot be ANDed by libseccomp, so each is its own rule (OR).
    profile = allow_all_but(["socket"], args=[
        {"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}])
    status, out = in_child(seccomp.compile_filter(profile, cache_dir=None), _socket_errnos)
    assert json.loads(out) == {"inet_stream": errno.EPERM, "inet_dgram": errno.EPERM,
                               "inet6_dgram": errno.EPERM, "unix": 0}


def test_personality_blocked_only_for_one_value():
    libc = ctypes.CDLL(None, use_errno=True)
    profile = allow_all_but(["personality"], args=[{"index": 0, "value": 0x0008, "op": "SCMP_CMP_EQ"}])

    def probe(write):
        query = libc.personality(0xFFFFFFFF)            # allowed: reads the persona
        ctypes.set_errno(0)
        denied = libc.personality(0x0008)               # STICKY_TIMEOUTS: blocked
        write(json.dumps([query >= 0, denied, ctypes.get_errno()]).encode())
    status, out = in_child(seccomp.compile_filter(profile, cache_dir=None), probe)
    assert json.loads(out) == [True, -1, errno.EPERM]


# ---------------------------------------------------------------------------- NOTIFY

_NOTIF_RECV = 0xC0502100   # _IOWR('!', 0, struct seccomp_notif)       (80 bytes)
_NOTIF_SEND = 0xC0182101   # _IOWR('!', 1, struct seccomp_notif_resp)  (24 bytes)


def _recv_fd(conn: socket.socket) -> tuple[bytes, int]:
    data, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            return data, struct.unpack("i", payload[:4])[0]
    raise AssertionError("no fd received")


def test_notify_listener_gets_the_fd_and_answers(tmp_path):
    sock_path = str(tmp_path / "agent.sock")
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(sock_path)
    agent.listen(1)
    profile = allow_all_but(["mkdir", "mkdirat"], action="SCMP_ACT_NOTIFY")
    profile.update(listenerPath=sock_path, listenerMetadata="hello")
    flt = seccomp.compile_filter(profile, cache_dir=None)
    assert flt.uses_notify and flt.listener_path == sock_path
    # The runtime's side: connect on the host before forking, payload built before load.
    conn_fd = seccomp.connect_listener(flt.listener_path)
    state = {"ociVersion": "1.2.0", "id": "t", "status": "creating", "pid": 0, "bundle": str(tmp_path)}
    payload = seccomp.listener_payload(state, 0, flt.listener_metadata, "1.2.0")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            prctl.set_no_new_privs(True)
            listener = flt.load()
            seccomp.send_listener_fd(conn_fd, listener, payload)
            os.write(w, str(errno_of(lambda: os.mkdir(tmp_path / "d"))).encode())
        finally:
            os._exit(0)
    os.close(conn_fd)
    os.close(w)
    conn, _ = agent.accept()
    with conn:
        data, notify_fd = _recv_fd(conn)
        assert conn.recv(1) == b""  # one state per connection, then closed
    doc = json.loads(data)
    assert doc["fds"] == ["seccompFd"] and doc["metadata"] == "hello" and doc["state"]["id"] == "t"
    req = bytearray(80)
    fcntl.ioctl(notify_fd, _NOTIF_RECV, req)
    notif_id, notif_pid = struct.unpack_from("=QI", req)
    assert notif_pid == pid
    resp = struct.pack("=QqiI", notif_id, 0, -errno.EROFS, 0)   # id, val, error, flags
    fcntl.ioctl(notify_fd, _NOTIF_SEND, bytearray(resp))
    out = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    os.close(notify_fd)
    agent.close()
    assert int(out) == errno.EROFS
    assert not (tmp_path / "d").exists()


def test_notify_with_wait_killable_recv_loads_and_returns_a_listener():
    profile = allow_all_but(["mkdir", "mkdirat"], action="SCMP_ACT_NOTIFY")
    profile["flags"] = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    flt = seccomp.compile_filter(profile, cache_dir=None)
    assert flt.flags == 8 | 32
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            prctl.set_no_new_privs(True)
            fd = flt.load()
            os.write(w, str(fd).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    assert int(out) >= 3


# ---------------------------------------------------------------------------- real containers


def run_container(tmp_path, root, args, profile, **overrides):
    bundle = make_bundle(tmp_path, args, linux={"seccomp": profile}, **overrides)
    return run_ocirun("run", "-b", bundle, "sc1", root=root)


def test_container_with_docker_profile(tmp_path, ocirun_root):
    r = run_container(tmp_path, ocirun_root,
                      ["sh", "-c", "echo hello; unshare -m true 2>/dev/null || echo blocked"],
                      fixture_profile("docker"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hello", "blocked"]


def test_container_with_podman_profile(tmp_path, ocirun_root):
    r = run_container(tmp_path, ocirun_root, ["sh", "-c", "echo hello"], fixture_profile("podman"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello"


def test_container_mkdir_gets_eperm(tmp_path, ocirun_root):
    r = run_container(tmp_path, ocirun_root, ["sh", "-c", "mkdir /tmp/x; echo rc=$?"],
                      allow_all_but(["mkdir", "mkdirat"]))
    assert r.returncode == 0, r.stderr
    assert "rc=1" in r.stdout
    assert "Operation not permitted" in r.stdout + r.stderr


@pytest.mark.parametrize("blocked", [["getcwd"], ["close", "close_range"], ["write", "writev"],
                                     ["getcwd", "close", "close_range", "write", "writev", "chdir"]])
def test_container_starts_when_the_profile_blocks_what_the_runtime_uses(tmp_path, ocirun_root, blocked):
    # Loading is the very last step before execve: nothing of ours runs under the filter.
    r = run_container(tmp_path, ocirun_root, ["/bin/true"], allow_all_but(blocked))
    assert r.returncode == 0, r.stderr


def test_container_killed_by_kill_process(tmp_path, ocirun_root):
    r = run_container(tmp_path, ocirun_root, ["mkdir", "/tmp/x"],
                      allow_all_but(["mkdir", "mkdirat"], action="SCMP_ACT_KILL_PROCESS"))
    assert r.returncode == 128 + signal.SIGSYS, (r.returncode, r.stderr)


@pytest.mark.parametrize("rule,message", [
    ({"action": "SCMP_ACT_FOO"}, "linux.seccomp.syscalls[0].action: "),   # the schema may say it first
    ({"action": "SCMP_ACT_ALLOW", "errnoRet": 1}, "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_ALLOW takes no errno"),
])
def test_container_bad_profile_fails_with_the_path(tmp_path, ocirun_root, rule, message):
    profile = allow_all_but(["mkdir"], **rule)
    r = run_container(tmp_path, ocirun_root, ["true"], profile)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
