"""The console protocol: a forked child plays the container's init, the test plays the engine
(or `ocirun run -t`) that receives the pty master over a unix socket."""
import fcntl
import json
import os
import socket
import termios
import time

import pytest

import helpers
from ocirun import console, linux
from ocirun.errors import OCIError


def fork_init(body):
    """Fork a fake init: it gets one end of a socketpair and a report pipe; returns
    (pid, our socket end, report read end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ours.close()
            os.close(rep_r)
            report = body(theirs.detach())
            os.write(rep_w, json.dumps(report).encode())
        except BaseException as e:  # noqa: BLE001 - tell the parent, never return into pytest
            os.write(rep_w, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    os.close(rep_w)
    return pid, ours, rep_r


def read_report(rep_r):
    with os.fdopen(rep_r, "rb") as f:
        rep = json.loads(f.read() or b"{}")
    assert "error" not in rep, rep["error"]
    return rep


def tty_size_of(pid):
    """The window size of the terminal that is `pid`'s stdin (opened without becoming ours)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        return console.get_winsize(fd)
    finally:
        os.close(fd)


def read_until_hangup(fd, want=None, timeout=5.0):
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child's side is closed
            break
        if not chunk:
            break
        out += chunk
        if want and want in out:
            break
    return out


@pytest.mark.rootless
def test_init_side_sends_master_and_becomes_slave():
    def init(sock_fd):
        slave = console.setup_console_in_container(sock_fd, (33, 111))
        rep = {
            "slave": slave,
            "stdin_tty": os.isatty(0),
            "same_tty": os.ttyname(0) == os.ttyname(1) == os.ttyname(2),
            "size": list(console.get_winsize(0)),
            "session_leader": os.getsid(0) == os.getpid(),
            "ctty": os.tcgetpgrp(0) == os.getpgrp(),
            "socket_closed": not _fd_open(sock_fd),
        }
        os.write(1, b"hello\n")
        return rep

    pid, ours, rep_r = fork_init(init)
    try:
        master = console.recv_console_fd(ours.fileno())
        try:
            # report first: closing the master hangs up the tty and SIGHUPs the init
            rep = read_report(rep_r)
            assert fcntl.fcntl(master, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert b"hello" in read_until_hangup(master, b"hello")
        finally:
            os.close(master)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    assert rep["slave"].startswith("/dev/pts/")
    assert rep["stdin_tty"] and rep["same_tty"]
    assert rep["size"] == [33, 111]
    assert rep["session_leader"] and rep["ctty"]
    assert rep["socket_closed"]


def _fd_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


@pytest.mark.rootless
def test_payload_is_the_pty_name_runc_sends():
    def init(sock_fd):
        console.setup_console_in_container(sock_fd, None)
        return {}

    pid, ours, rep_r = fork_init(init)
    try:
        msg, fds, _, _ = socket.recv_fds(ours, 4096, 1)
        read_report(rep_r)  # before closing the master: its hang-up sends the init SIGHUP
        for fd in fds:
            os.close(fd)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    assert msg == b"/dev/ptmx" and len(fds) == 1


@pytest.mark.rootless
def test_zero_size_leaves_default():
    def init(sock_fd):
        console.setup_console_in_container(sock_fd, (0, 80))
        return {"size": list(console.get_winsize(0))}

    pid, ours, rep_r = fork_init(init)
    try:
        master = console.recv_console_fd(ours.fileno())
        rep = read_report(rep_r)
        os.close(master)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    assert rep["size"] == [0, 0]


def test_container_devpts_and_dev_console_mount():
    """Like a real container: private mount ns, tmpfs /dev, a new devpts instance with
    /dev/ptmx -> pts/ptmx, and the slave bind-mounted on /dev/console."""
    def init(sock_fd):
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount("tmpfs", "/dev", "tmpfs", linux.MS_NOSUID, "mode=755")
        os.mkdir("/dev/pts")
        linux.mount("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                    "newinstance,ptmxmode=0666,mode=0620")
        os.symlink("pts/ptmx", "/dev/ptmx")
        os.symlink("/etc/passwd", "/dev/console")  # a planted symlink must not be followed
        slave = console.setup_console_in_container(sock_fd, (10, 20), mount=True)
        st_console, st_slave = os.stat("/dev/console"), os.stat(slave)
        with open("/dev/console", "wb", buffering=0) as f:
            f.write(b"via-console\n")
        return {"slave": slave, "same": st_console.st_rdev == st_slave.st_rdev,
                "first": os.listdir("/dev/pts")}

    pid, ours, rep_r = fork_init(init)
    try:
        master = console.recv_console_fd(ours.fileno())
        try:
            rep = read_report(rep_r)
            out = read_until_hangup(master, b"via-console")
        finally:
            os.close(master)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    assert rep["slave"] == "/dev/pts/0"  # a fresh instance: the container sees pts 0
    assert rep["same"]
    assert b"via-console" in out
    with open("/etc/passwd", "rb") as f:
        assert not f.read().startswith(b"via-console")


@pytest.mark.rootless
def test_relay_terminal_pumps_both_ways_without_onlcr():
    """`ocirun run -t` without --console-socket: a relay process between pipes and the pty."""
    def init(sock_fd):
        console.setup_console_in_container(sock_fd, None)
        line = os.read(0, 100)
        os.write(1, b"got: " + line.strip() + b"\n")
        return {}

    pid, ours, rep_r = fork_init(init)
    master = console.recv_console_fd(ours.fileno())
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    relay = os.fork()
    if relay == 0:
        try:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            n = console.relay_terminal(master, pid)
            os._exit(0 if n > 0 else 3)
        finally:
            os._exit(2)
    os.close(master), os.close(in_r), os.close(out_w)
    try:
        os.write(in_w, b"ping\n")
        with os.fdopen(out_r, "rb") as f:
            out = f.read()
        read_report(rep_r)
    finally:
        os.close(in_w)
        ours.close()
        os.waitpid(pid, 0)
        _, st = os.waitpid(relay, 0)
    assert os.waitstatus_to_exitcode(st) == 0
    assert b"got: ping\n" in out
    assert b"\r" not in out  # ONLCR cleared on the pty, like runc


@pytest.mark.rootless
def test_connect_console_socket(tmp_path):
    long_dir = tmp_path / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    for path in (tmp_path / "s.sock", long_dir / "console.sock"):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(os.fspath(path) if len(os.fspath(path)) < 108 else _short_bind(srv, path))
        srv.listen(1)
        fd = console.connect_console_socket(os.fspath(path))
        conn, _ = srv.accept()
        os.write(fd, b"x")
        assert conn.recv(1) == b"x"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        os.close(fd), conn.close(), srv.close()
    with pytest.raises(OCIError) as ei:
        console.connect_console_socket(str(tmp_path / "none.sock"))
    assert str(ei.value) == f"--console-socket {tmp_path}/none.sock: no such file or directory"


def test_a_console_socket_that_never_accepts_fails_create_at_once(ocirun_root, tmp_path):
    """A listener whose backlog is full made a blocking connect wait forever (runc dials
    without blocking and fails at once); the connected fd is blocking again for sending."""
    path = tmp_path / "full.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(os.fspath(path))
    srv.listen(0)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.setblocking(False)
    filler.connect(os.fspath(path))  # takes the one slot; nobody ever accepts
    try:
        bundle = helpers.make_bundle(tmp_path, ["true"], process={"terminal": True})
        started = time.monotonic()
        r = helpers.run_ocirun("create", "--console-socket", path, "-b", bundle, "cfull", root=ocirun_root,
                               timeout=30)
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip() == f"--console-socket {path}: resource temporarily unavailable", r.stderr
        assert time.monotonic() - started < 15 and not (ocirun_root / "cfull").exists()
    finally:
        filler.close()
        srv.close()
    ok_srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ok_srv.bind(os.fspath(tmp_path / "ok.sock"))
    ok_srv.listen(1)
    fd = console.connect_console_socket(os.fspath(tmp_path / "ok.sock"))
    try:
        assert os.get_blocking(fd)
    finally:
        os.close(fd)
        ok_srv.close()


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_a_console_socket_without_a_terminal_is_refused_as_with_runc(ocirun_root, runc_root, tmp_path):
    """create connected to the socket anyway (and failed on a missing one, or sent nothing);
    exec ignored it."""
    bundle = helpers.make_bundle(tmp_path, ["sleep", "1000"])  # process.terminal false
    words = "cannot use console socket if {} will not detach or allocate tty"
    for run, root, name in ((helpers.run_ocirun, ocirun_root, "ocirun"), (helpers.run_runc, runc_root, "runc")):
        r = run("create", "--console-socket", tmp_path / "none.sock", "-b", bundle, "cs", root=root)
        assert r.returncode == 1 and words.format(name) in r.stderr, (name, r.stderr)
        assert not os.path.exists(os.path.join(root, "cs"))
    helpers.ok("run", "-d", "-b", bundle, "cs2", root=ocirun_root)
    try:
        r = helpers.run_ocirun("exec", "-d", "--console-socket", tmp_path / "none.sock", "cs2", "true",
                               root=ocirun_root)
        assert r.returncode == 255 and words.format("ocirun") in r.stderr, r.stderr
    finally:
        helpers.delete(ocirun_root, "cs2", check=False)


def _short_bind(srv, path):
    dfd = os.open(path.parent, os.O_PATH)
    return f"/proc/self/fd/{dfd}/{path.name}"  # the fd stays open for the test's life


@pytest.mark.rootless
def test_get_and_set_winsize_roundtrip():
    m, s = os.openpty()
    try:
        console.set_winsize(m, 50, 132)
        assert console.get_winsize(s) == (50, 132)
    finally:
        os.close(m), os.close(s)


@pytest.mark.rootless
def test_relay_terminal_raw_mode_and_sigwinch():
    """Our stdin is a terminal: raw mode while relaying (restored after), its size copied to the
    container's pty at start and again on SIGWINCH."""
    import signal
    outer_m, outer_s = os.openpty()
    console.set_winsize(outer_m, 40, 100)

    def init(sock_fd):
        console.setup_console_in_container(sock_fd, None)
        for _ in range(2):
            os.read(0, 100)
            h, w = console.get_winsize(0)
            os.write(1, f"size {h} {w}\n".encode())
        return {}

    pid, ours, rep_r = fork_init(init)
    master = console.recv_console_fd(ours.fileno())
    before = termios.tcgetattr(outer_s)
    relay = os.fork()
    if relay == 0:
        try:
            os.dup2(outer_s, 0)
            os.dup2(outer_s, 1)
            console.relay_terminal(master, pid)
            os._exit(0 if termios.tcgetattr(0) == before else 4)
        finally:
            os._exit(2)
    os.close(master)
    try:
        def raw_attrs():  # type only once the relay has put our terminal in raw mode
            attrs = termios.tcgetattr(outer_s)
            return None if attrs[3] & (termios.ICANON | termios.ECHO) else attrs
        raw = helpers.wait_until(raw_attrs, 10, "the relay to put the terminal in raw mode")
        os.write(outer_m, b"go\n")
        out = read_until_hangup(outer_m, b"size 40 100")
        console.set_winsize(outer_m, 50, 120)
        os.kill(relay, signal.SIGWINCH)
        helpers.wait_until(lambda: tty_size_of(pid) == (50, 120), 10, "the relay to copy the new size")
        os.write(outer_m, b"go\n")
        out += read_until_hangup(outer_m, b"size 50 120")
        read_report(rep_r)
    finally:
        ours.close()
        os.waitpid(pid, 0)
        _, st = os.waitpid(relay, 0)
        os.close(outer_m), os.close(outer_s)
    assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO
    assert b"size 40 100\n" in out and b"size 50 120\n" in out
    assert os.waitstatus_to_exitcode(st) == 0  # termios restored
