"""The kubelet's streaming and log calls through containerd's CRI, on runc and ocirun.

`kubectl exec`, `kubectl attach` and `kubectl port-forward` reach a container through the CRI's
`Exec`, `Attach` and `PortForward` calls: each answers with a URL on containerd's streaming
server, spoken to here over a WebSocket (tests/e2e/k8s_stream.py) as the kubelet's clients do.
Unlike ExecSync these carry a live stdin, a terminal and its resizes, and the container's own
stdio (attach).  Also the kubelet's log rotation (`ReopenContainerLog` after a rename) and a
pod's terminationMessagePath (a host file bind-mounted at /dev/termination-log).

Pods use the host network, as in test_cri_features.py, whose `pod` helper makes them, but for
a port-forward into a pod's own network namespace (CNI's bridge plugin, engines.cni_conflist);
one containerd serves the module.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import time

import pytest

import engines
from test_cri_features import mounts_at, pod, wait_log

# One containerd for this module too (a module's fixture is not shared with another module).


@pytest.fixture(scope="module")
def cri_engine():
    with engines.cri_containerd(import_image=False, pod_network=True) as pair:
        yield pair


# --------------------------------------------------------------------------- exec

def test_exec_stdin_to_stdout_and_exit_code(cri_engine, runtime):
    import k8s_stream
    from k8s_stream import STDERR, STDOUT
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1")
        # A line-by-line filter: each answer must come back before the next line is sent,
        # so stdin really is live (not gathered up and handed over at the end).
        script = ('while read line; do echo "got $line"; echo "err $line" >&2; '
                  '[ "$line" = end ] && exit 3; done')
        url = client.exec(cid, ["sh", "-c", script], stdin=True)
        with k8s_stream.Session(url) as session:
            session.write("one\n")
            session.read_until(STDOUT, "got one\n")
            session.read_until(STDERR, "err one\n")
            session.write("two\nend\n")
            status = session.finish()
        assert session.output[STDOUT] == b"got one\ngot two\ngot end\n", session.output
        assert session.output[STDERR] == b"err one\nerr two\nerr end\n", session.output
        # A non-zero exit is a Failure status whose cause carries the code.
        assert (status.get("status"), status.get("reason")) == ("Failure", "NonZeroExitCode"), \
            status
        assert k8s_stream.exit_code(status) == 3, status

        # Without stdin, the process's own end closes the stream with a Success status.
        url = client.exec(cid, ["sh", "-c", "pwd; id -u; echo warn >&2"])
        with k8s_stream.Session(url) as session:
            status = session.finish()
        assert status.get("status") == "Success", status
        assert session.output[STDOUT] == b"/\n0\n", session.output
        assert session.output[STDERR] == b"warn\n", session.output

        # A megabyte of output arrives whole before the status (no pipe cut short).
        url = client.exec(cid, ["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x"])
        with k8s_stream.Session(url) as session:
            status = session.finish()
        assert status.get("status") == "Success", status
        assert session.output[STDOUT] == b"x" * 1048576, len(session.output[STDOUT])


def test_exec_tty_and_resize(cri_engine, runtime):
    import k8s_stream
    from k8s_stream import STDOUT
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1")
        # A terminal's size is whatever the last resize said: each input line asks for it.
        script = 'tty; while read line; do echo "size $(stty size)"; done'
        url = client.exec(cid, ["sh", "-c", script], tty=True, stdin=True, stderr=False)
        with k8s_stream.Session(url) as session:
            session.read_until(STDOUT, "\n")
            assert re.match(rb"/dev/pts/\d+\r\n", session.output[STDOUT]), session.output
            for width, height in ((123, 45), (80, 24)):
                session.resize(width, height)
                wait_for_size(session, f"size {height} {width}\r\n")
            # A terminal echoes what is typed, and turns \n into \r\n (onlcr).
            assert b"\r\n" in session.output[STDOUT] and b"size 0 0" not in \
                session.output[STDOUT], session.output


def wait_for_size(session, wanted: str, ask: str = "\n", timeout: float = 10) -> None:
    """Ask (type `ask`) until the terminal's size is `wanted`: a resize travels apart from
    stdin, so the first answer may still be the old size."""
    import k8s_stream
    deadline = time.monotonic() + timeout
    while True:
        before = len(session.output[k8s_stream.STDOUT])
        session.write(ask)
        with contextlib.suppress(k8s_stream.StreamError):
            session.read_until(k8s_stream.STDOUT, wanted, timeout=1, since=before)
            return
        assert time.monotonic() < deadline, f"never {wanted!r}: {session.output}"


# Traps ^C; says whether it has a controlling terminal (/proc/self/stat's tty_nr, field 7).
INTERRUPTIBLE = ('trap "echo interrupted; exit 9" INT; '
                 'echo "tty_nr $(cut -d" " -f7 /proc/self/stat)"; echo ready; '
                 'while :; do sleep 0.1; done')


def test_tty_interrupt(cri_engine, runtime):
    # ^C typed into `kubectl exec -it` or `kubectl attach -it` interrupts the process: the
    # runtime made the terminal its controlling terminal (a new session, TIOCSCTTY).
    import k8s_stream
    from k8s_stream import STDOUT
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1")
        url = client.exec(cid, ["sh", "-c", INTERRUPTIBLE], stdin=True, tty=True, stderr=False)
        with k8s_stream.Session(url) as session:
            out = session.read_until(STDOUT, "ready\r\n")
            assert re.match(rb"tty_nr [1-9]\d*\r\n", out), out
            session.write(b"\x03")
            status = session.finish()
        assert b"interrupted" in session.output[STDOUT], session.output
        assert k8s_stream.exit_code(status) == 9, status

        cid = p.start("attached", INTERRUPTIBLE, stdin=True, tty=True)
        wait_log(p, "attached", "ready")
        with k8s_stream.Session(client.attach(cid, stdin=True, tty=True, stderr=False)) as session:
            session.write(b"\x03")
            assert client.wait_exited(cid) == 9, p.log_lines("attached")
        assert re.match(r"tty_nr [1-9]\d*\n", p.log_text("attached")), p.log_lines("attached")


def test_exec_missing_command(cri_engine, runtime):
    # What kubectl shows for a typo: an error status, not a hang and not a success.
    import k8s_stream
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1")
        url = client.exec(cid, ["/no/such/command"])
        with k8s_stream.Session(url) as session:
            status = session.finish()
        assert status.get("status") == "Failure", status
        assert "no such file" in status.get("message", "").lower(), status


def test_non_root_stdio_and_terminal(cri_engine, runtime):
    # A non-root process reopens its own stdio by name (/dev/stdout: nginx-style images log
    # there), so the runtime hands it pipes it owns; an exec's terminal is its user's too.
    import cri
    import k8s_stream
    from k8s_stream import STDERR, STDOUT
    client = cri_engine[1]
    user = cri.container_security(run_as_user=1000, run_as_group=1000)
    reopen = "echo via-dev-stdout > /dev/stdout; echo via-dev-stderr > /dev/stderr"
    with pod(cri_engine, runtime) as p:
        code, _ = p.run("first", reopen, security=user)
        assert code == 0, p.log_lines("first")
        lines = p.log_lines("first")
        assert ("stdout", "F", "via-dev-stdout") in lines, lines
        assert ("stderr", "F", "via-dev-stderr") in lines, lines

        cid = p.start("c1", security=user)
        with k8s_stream.Session(client.exec(cid, ["sh", "-c", reopen], stdin=True)) as session:
            assert session.finish().get("status") == "Success", session.output
        assert (session.output[STDOUT], session.output[STDERR]) == (
            b"via-dev-stdout\n", b"via-dev-stderr\n"), session.output
        url = client.exec(cid, ["sh", "-c", "stat -c '%u %n' $(tty)"], stdin=True, tty=True,
                          stderr=False)
        with k8s_stream.Session(url) as session:
            assert session.finish().get("status") == "Success", session.output
        assert re.fullmatch(rb"1000 /dev/pts/\d+\r\n", session.output[STDOUT]), session.output


# --------------------------------------------------------------------------- attach

def test_attach_with_tty(cri_engine, runtime):
    # `kubectl run -it`: the container's first process has a terminal; attach types into it.
    import k8s_stream
    from k8s_stream import STDOUT
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1", "exec sh", stdin=True, tty=True)
        url = client.attach(cid, stdin=True, tty=True, stderr=False)
        with k8s_stream.Session(url) as session:
            session.write("tty; echo $((6 * 7))\n")
            out = session.read_until(STDOUT, "42\r\n")
            assert b"tty; echo $((6 * 7))" in out, out  # the terminal's echo
            assert re.search(rb"/dev/pts/\d+\r\n", out), out
            # The container's own terminal follows the attached client's window.
            session.resize(100, 30)
            wait_for_size(session, "size 30 100\r\n", ask='echo "size $(stty size)"\n')
            session.write("exit 5\n")
            assert client.wait_exited(cid) == 5
        # The terminal's output is the container's log too (containerd drops the \r).
        assert "42" in p.log_text("c1").split("\n"), p.log_lines("c1")


def test_attach_without_tty_stdin_once(cri_engine, runtime):
    # stdin and stdout/stderr are the container's own pipes; with stdinOnce the first attach's
    # end closes stdin, which the container sees as end of input.
    import k8s_stream
    from k8s_stream import STDERR, STDOUT
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        script = ('while read line; do echo "attached $line"; echo "to stderr $line" >&2; done; '
                  'echo "stdin closed"; exit 4')
        cid = p.start("c1", script, stdin=True, stdin_once=True)
        url = client.attach(cid, stdin=True)
        with k8s_stream.Session(url) as session:
            session.write("x\n")
            session.read_until(STDOUT, "attached x\n")
            session.read_until(STDERR, "to stderr x\n")
        assert client.wait_exited(cid) == 4
        lines = p.log_lines("c1")
        assert ("stdout", "F", "attached x") in lines, lines
        assert ("stderr", "F", "to stderr x") in lines, lines
        assert ("stdout", "F", "stdin closed") in lines, lines


# --------------------------------------------------------------------------- port-forward

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, tables, timeout: float = 10) -> None:
    """Until a TCP socket listens on `port` by `tables()` (the text of /proc/net/tcp and tcp6,
    read rather than connecting, which would use up the one connection `nc -l` takes)."""
    deadline = time.monotonic() + timeout  # own deadline (see helpers.wait_until): names the port
    while not listening(port, tables()):
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.05)


def host_tcp_tables() -> str:
    with open("/proc/net/tcp") as v4, open("/proc/net/tcp6") as v6:
        return v4.read() + v6.read()


def listening(port: int, tables: str) -> bool:
    rows = [line.split() for line in tables.splitlines() if ":" in line.split(maxsplit=2)[1]]
    return any(int(row[1].rsplit(":", 1)[1], 16) == port and row[3] == "0A" for row in rows)


def answering_server(port: int, persistent: bool = False) -> str:
    """A script for busybox nc: each connection gets `pong <the line it sent>`."""
    listen = "-ll" if persistent else "-l"
    return (f"printf '#!/bin/sh\\nread line\\necho \"pong $line\"\\n' > /tmp/answer; "
            f"chmod +x /tmp/answer; exec nc {listen} -p {port} -e /tmp/answer")


def test_port_forward(cri_engine, runtime):
    import k8s_stream
    client = cri_engine[1]
    port = free_port()
    with pod(cri_engine, runtime) as p:
        # One connection: nc hands it to a script that answers the line it reads.
        cid = p.start("server", answering_server(port))
        wait_listening(port, host_tcp_tables)
        url = client.port_forward(p.id, [port])
        with k8s_stream.PortForward(url, port) as forward:
            forward.send(b"ping\n")
            assert forward.receive_until(b"\n") == b"pong ping\n", forward.error
        assert client.wait_exited(cid) == 0

        # Nothing listening: the error channel says so (the pod itself is fine).
        closed = free_port()
        url = client.port_forward(p.id, [closed])
        with k8s_stream.PortForward(url, closed) as forward:
            forward.send(b"ping\n")
            with pytest.raises(k8s_stream.StreamError):
                forward.receive_until(b"\n", timeout=10)
        assert f"localhost:{closed}" in forward.error.decode(), forward.error


def test_port_forward_into_pod_network(cri_engine, runtime):
    # A pod of its own network namespace: containerd connects to localhost in there (the
    # namespace the pause container's runtime joined the pod to), not on the host.
    import cri
    import k8s_stream
    engines.require_pod_network(cri_engine[0])
    client = cri_engine[1]
    port = free_port()
    own_network = cri.namespace_options(network=cri.NAMESPACE_POD)
    with pod(cri_engine, runtime, namespaces=own_network) as p:
        cid = p.start("server", answering_server(port, persistent=True),
                      security=cri.container_security(namespaces=own_network))
        wait_listening(port, lambda: p.sh(cid, "cat /proc/net/tcp /proc/net/tcp6"))
        assert not listening(port, host_tcp_tables()), "the server listens on the host"
        for attempt in ("one", "two"):
            with k8s_stream.PortForward(client.port_forward(p.id, [port]), port) as forward:
                forward.send(f"ping {attempt}\n".encode())
                assert forward.receive_until(b"\n") == f"pong ping {attempt}\n".encode(), \
                    forward.error


# --------------------------------------------------------------------------- logs, termination

def test_log_rotation_reopen(cri_engine, runtime):
    # The kubelet rotates a log by renaming it and asking containerd to reopen the log path:
    # later lines go to a new file there, none is lost and the old file stops growing.
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1", 'i=0; while :; do echo "line $i"; i=$((i+1)); sleep 0.05; done')
        wait_log(p, "c1", "line 3")
        log = p.logs / "c1.log"
        rotated = p.logs / "c1.log.20260101-000000"
        os.rename(log, rotated)
        client.reopen_container_log(cid)
        deadline = time.monotonic() + 10  # own deadline: the failure lists the log directory
        while len(log_numbers(log)) < 3:
            assert time.monotonic() < deadline, f"no new lines at {log}: {sorted(p.logs.iterdir())}"
            time.sleep(0.05)
        size = rotated.stat().st_size
        time.sleep(0.3)  # a fixed wait on purpose: the check is that the old file did NOT grow
        assert rotated.stat().st_size == size, "the renamed log still grows"
        old, new = log_numbers(rotated), log_numbers(log)
        assert old == list(range(len(old))) and len(old) >= 4, old
        assert new == list(range(old[-1] + 1, old[-1] + 1 + len(new))), (old, new)


def log_numbers(path) -> list[int]:
    if not path.exists():
        return []
    return [int(n) for n in re.findall(r" stdout F line (\d+)$", path.read_text(), re.M)]


def test_termination_message_path(cri_engine, runtime, tmp_path):
    # The kubelet makes an empty host file (mode 0666, so any user may write it) and mounts it
    # at the pod's terminationMessagePath; after the exit it reads the file on the host.
    import cri
    message = tmp_path / "termination-log"
    message.touch()
    message.chmod(0o666)
    with pod(cri_engine, runtime) as p:
        mounts = (cri.mount("/dev/termination-log", str(message)),)
        code, out = p.run("c1", "cat /proc/self/mountinfo; "
                          "echo 'the reason it stopped' > /dev/termination-log; exit 2",
                          mounts=mounts, security=cri.container_security(run_as_user=1000))
        assert code == 2, out
        assert message.read_text() == "the reason it stopped\n", out
        mount = mounts_at(out, "/dev/termination-log")
        assert mount and mount[-1][5].startswith("rw"), out

        # A restricted pod: read-only root filesystem, and a terminationMessagePath of its own
        # under a directory the image lacks (made in the rootfs before it turns read-only).
        custom = tmp_path / "custom-log"
        custom.touch()
        custom.chmod(0o666)
        mounts = (cri.mount("/var/termination/reason", str(custom)),)
        security = cri.container_security(run_as_user=1000, readonly_rootfs=True)
        code, out = p.run("ro", "touch /x 2>&1; echo 'read-only, still told' > "
                          "/var/termination/reason; exit 3", mounts=mounts, security=security)
        assert code == 3, out
        assert "Read-only file system" in out, out
        assert custom.read_text() == "read-only, still told\n", out
