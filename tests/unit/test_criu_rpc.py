"""ocirun/criu.py's RPC with `criu swrk`, against a stand-in CRIU (no kernel support needed):
the request reaches it, notifications are answered (with the fds they carry), a failure is one
line quoting CRIU's log, an early exit is an error, not a hang.  And the pure rules of
checkpoint/restore: CRIU's names for external mounts, the flags' values."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from ocirun import criu
from ocirun.checkpoint import _page_server, external_mounts, external_sources, resolved_under
from ocirun.config import parse_config
from ocirun.errors import OCIError

REPO = Path(__file__).resolve().parents[2]

# The stand-in: answers one request as the test's SCRIPT tells it.
FAKE = textwrap.dedent("""\
    import os, socket, sys
    sys.path.insert(0, {repo!r})
    from ocirun import criu
    M = criu.messages()
    sock = socket.socket(fileno=int(sys.argv[2]))
    req = M["criu_req"].FromString(sock.recv(65536))
    mode = os.environ["FAKE_MODE"]
    if mode == "notify":
        r, w = os.pipe()
        os.write(w, b"through the fd")
        note = M["criu_resp"](type=criu.NOTIFY, success=True)
        note.notify.script, note.notify.pid = "post-restore", 4242
        socket.send_fds(sock, [note.SerializeToString()], [r])
        ack = M["criu_req"].FromString(sock.recv(65536))
        assert ack.type == criu.NOTIFY and ack.notify_success
        done = M["criu_resp"](type=req.type, success=True)
        done.restore.pid = req.opts.pid + 1
        sock.send(done.SerializeToString())
    elif mode == "fail":
        with open(os.path.join(os.environ["FAKE_LOG_DIR"], "restore.log"), "w") as f:
            f.write("(00.000100) Info: fine\\n(00.000200) Error (criu/mount.c:1): No mapping for /x\\n")
        # CRIU's cr_errmsg ends in a newline: the message must still be one line
        sock.send(M["criu_resp"](type=req.type, success=False, cr_errno=2,
                                 cr_errmsg="mnt: No mapping for /x\\n").SerializeToString())
    elif mode == "fail-same":  # CRIU's message is its log's last error line (a corrupt image)
        line = "Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)"
        with open(os.path.join(os.environ["FAKE_LOG_DIR"], "restore.log"), "w") as f:
            f.write("(00.000200) " + line + "\\n")
        sock.send(M["criu_resp"](type=req.type, success=False, cr_errmsg=line).SerializeToString())
    elif mode == "version":
        answer = M["criu_resp"](type=req.type, success=True)
        answer.version.major_number, answer.version.minor_number = 3, 13
        sock.send(answer.SerializeToString())
    elif mode == "exit":
        sys.exit(3)
""")


@pytest.fixture
def fake_criu(tmp_path, monkeypatch):
    path = tmp_path / "criu"
    path.write_text(f"#!{sys.executable}\n" + FAKE.format(repo=str(REPO)))
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_LOG_DIR", str(tmp_path))
    return str(path)


def test_notifications_are_answered_with_their_fds(fake_criu, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "notify")
    seen = []

    def on_notify(script, pid, fds):
        seen.append((script, pid, os.read(fds[0], 100)))

    session = criu.Session(fake_criu, log_dir=str(tmp_path), log_file="restore.log")
    resp = session.call(criu.RESTORE, criu.new_opts(pid=41), on_notify=on_notify)
    session.finish()
    assert seen == [("post-restore", 4242, b"through the fd")]
    assert resp.restore.pid == 42  # the request's options reached CRIU


def test_a_failure_quotes_criu_s_log_in_one_line(fake_criu, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "fail")
    session = criu.Session(fake_criu, log_dir=str(tmp_path), log_file="restore.log")
    with pytest.raises(criu.CriuError) as e:
        session.call(criu.RESTORE, criu.new_opts())
    session.abort()
    msg = str(e.value)
    assert "\n" not in msg and "criu restore failed: mnt: No mapping for /x: Error" in msg
    assert "Error (criu/mount.c:1): No mapping for /x" in msg and "(00." not in msg
    assert str(tmp_path / "restore.log") in msg


def test_criu_s_message_is_said_once_when_it_is_its_log_s_last_error(fake_criu, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "fail-same")
    session = criu.Session(fake_criu, log_dir=str(tmp_path), log_file="restore.log")
    with pytest.raises(criu.CriuError) as e:
        session.call(criu.RESTORE, criu.new_opts())
    session.abort()
    assert str(e.value).count("Unexpected EOF") == 1, str(e.value)


def test_criu_exiting_without_an_answer_is_an_error(fake_criu, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "exit")
    session = criu.Session(fake_criu)
    with pytest.raises(criu.CriuError, match="criu exited without an answer"):
        session.call(criu.DUMP, criu.new_opts())
    session.abort()


def test_an_old_criu_is_refused_by_version_and_asked_once(fake_criu, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "version")
    assert criu.version(fake_criu) == 31300
    criu.require_version(fake_criu, 31300, "anything")
    with pytest.raises(OCIError, match=rf"^restore on cgroup v2 needs CRIU 3\.14 or newer; {fake_criu} is 3\.13$"):
        criu.require_version(fake_criu, 31400, "restore on cgroup v2")
    monkeypatch.setenv("FAKE_MODE", "exit")  # a second question would now fail
    criu.require_version(fake_criu, 31300, "anything")


def test_a_missing_criu_is_named():
    with pytest.raises(OCIError, match="/nonexistent/criu: not found.*install the criu package"):
        criu.criu_binary("/nonexistent/criu")


def test_flag_values():
    assert criu.cgroup_mode("") == criu.CGROUP_MODES[""] and criu.cgroup_mode("strict") == 5
    with pytest.raises(OCIError, match="--manage-cgroups-mode 'x'"):
        criu.cgroup_mode("x")
    assert criu.empty_ns_mask([]) == criu.empty_ns_mask(["network"]) == 0x40000000  # CLONE_NEWNET always
    with pytest.raises(OCIError, match="--empty-ns 'ipc'"):
        criu.empty_ns_mask(["ipc"])
    assert _page_server("10.0.0.1:1234") == ("10.0.0.1", 1234)
    assert _page_server("[::1]:80") == ("::1", 80)
    with pytest.raises(OCIError, match="ADDRESS:PORT"):
        _page_server("nohost")


def test_external_mounts_are_named_as_criu_expects(tmp_path):
    (tmp_path / "rootfs").mkdir()
    cfg = parse_config({
        "ociVersion": "1.2.0", "root": {"path": "rootfs"},
        "mounts": [{"destination": "/data/", "type": "bind", "source": "vol", "options": ["rbind"]},
                   {"destination": "/etc/hosts", "source": "/etc/hosts", "options": ["bind", "ro"]},
                   {"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"maskedPaths": ["/proc/kcore"],
                  "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]},
    }, str(tmp_path))
    # dump: where each is mounted -> its name in the images (pid 0: no running init, so no
    # masked file is seen; the names of the others do not depend on it)
    dump = dict(external_mounts(cfg, 0))
    assert dump["/data"] == "/data" and dump["/etc/hosts"] == "/etc/hosts" and "/proc" not in dump
    assert dump["/dev/fuse"] == "/dev/fuse" and dump["/dev/null"] == "/dev/null"  # defaults too
    # restore: name -> host path; a relative source is the bundle's; masks share one name
    restore = dict(external_sources(cfg))
    assert restore["/data"] == str(tmp_path / "vol") and restore["/etc/hosts"] == "/etc/hosts"
    assert restore["/dev/null"] == "/dev/null" and restore["/dev/fuse"] == "/dev/fuse"


def test_mount_points_are_resolved_inside_the_container_root(tmp_path):
    """CRIU knows a bind by the point mountinfo shows, which is where the init mounted after
    resolving the destination's symlinks inside the rootfs: the dump's keys must be that."""
    root = tmp_path / "root"
    (root / "real" / "etc").mkdir(parents=True)
    (root / "srv").mkdir()
    (root / "etc").symlink_to("/real/etc")            # absolute: from the container's root
    (root / "srv" / "up").symlink_to("../../../real")  # `..` stops at the root
    (root / "loop").symlink_to("loop")
    (root / "real" / "etc" / "resolv.conf").symlink_to("../run.conf")  # the last component too
    assert resolved_under(str(root), "/etc/hosts") == "/real/etc/hosts"
    assert resolved_under(str(root), "/srv/up/etc/x") == "/real/etc/x"
    assert resolved_under(str(root), "/etc/resolv.conf") == "/real/run.conf"
    assert resolved_under(str(root), "//data/./x/") == "/data/x"  # not there: as written
    assert resolved_under(str(root), "/loop/x") == "/loop/x"  # a loop: as written
    assert resolved_under(str(tmp_path / "absent"), "/a/b") == "/a/b"


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot(2) needs root")
def test_masked_files_are_found_through_the_container_s_symlinks(tmp_path):
    """A masked file behind an image's absolute symlink is tested at its resolved point (the
    kernel would resolve /proc/<pid>/root/etc -> /real/etc against the host's root)."""
    root = tmp_path / "rootfs"
    (root / "real" / "etc").mkdir(parents=True)
    (root / "real" / "etc" / "secret").write_text("x")
    (root / "etc").symlink_to("/real/etc")
    cfg = parse_config({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
                        "linux": {"maskedPaths": ["/etc/secret", "/etc/missing"]}}, str(tmp_path))
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a stand-in for the container's init: a process whose root is the rootfs
        try:
            os.close(w)  # else our own copy keeps the pipe open and the read below never ends
            os.chroot(root)
            os.write(ready_w, b"!")
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    try:
        masked = [where for where, name in external_mounts(cfg, pid) if name == "/dev/null"]
    finally:
        os.close(w)
        os.waitpid(pid, 0)
    assert "/real/etc/secret" in masked and "/etc/secret" not in masked
    assert not any("missing" in where for where in masked)


def test_sessions_never_leave_fds(fake_criu, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "notify")
    before = set(os.listdir("/proc/self/fd"))
    session = criu.Session(fake_criu)
    session.call(criu.RESTORE, criu.new_opts(), on_notify=lambda *_: None)
    session.finish()
    assert set(os.listdir("/proc/self/fd")) <= before
