"""The container must never type into the caller's terminal (issue 13, item 1).

A process holding an fd of a terminal can push bytes into that terminal's input queue with
ioctl(TIOCSTI) (allowed by `dev.tty.legacy_tiocsti=1`, as on this host), and the admin's shell
reads them as if typed: `ocirun exec ID prog` from an interactive root shell ran `id > pwned`
that way.  Defences (pipes.py, joiner._become): every process we start in a container gets a
session of its own (TIOCSTI on a terminal that is not one's controlling terminal needs
CAP_SYS_ADMIN), and in the foreground it gets pipes, never the caller's terminal (ENOTTY even
with CAP_SYS_ADMIN).  Each scenario runs ocirun and runc on a real pseudo-terminal that is the
controlling terminal of the caller, as an interactive shell's is, and checks that nothing
arrives in that terminal's input queue.
"""
from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess
import termios
import time

import pytest

import helpers
from helpers import make_bundle, run_ocirun, run_runc


INJECTED = b"echo pwned-through-tiocsti"

POC_SOURCE = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
int main(void) {
    const char *line = "echo pwned-through-tiocsti\n";
    for (const char *p = line; *p; p++) {
        if (ioctl(0, TIOCSTI, p) < 0) {
            printf("tiocsti-refused: %s\n", strerror(errno));
            return 1;
        }
    }
    printf("tiocsti-injected\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def poc(tmp_path_factory) -> str:
    """A static binary doing what the attacker's program did (busybox has no TIOCSTI)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the TIOCSTI program (the CI installs it)")
    d = tmp_path_factory.mktemp("tiocsti")
    (d / "poc.c").write_text(POC_SOURCE)
    r = subprocess.run([gcc, "-static", "-Os", "-o", str(d / "poc"), str(d / "poc.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static binary here (libc6-dev's libc.a): {r.stderr.strip()}")
    return str(d / "poc")


def _tiocsti_allowed() -> bool:
    try:
        with open("/proc/sys/dev/tty/legacy_tiocsti") as f:
            return f.read().strip() == "1"
    except FileNotFoundError:
        return True  # kernels before 6.2 have no switch: TIOCSTI always works


needs_tiocsti = pytest.mark.skipif(not _tiocsti_allowed(),
                                   reason="dev.tty.legacy_tiocsti=0: the kernel refuses TIOCSTI to everyone")


def _bundle(tmp_path, poc: str, args, caps=None, uid=0, name="bundle"):
    caps = helpers.DEFAULT_CAPS if caps is None else caps
    rootfs = helpers.private_rootfs(tmp_path, f"{name}-rootfs")
    shutil.copy(poc, rootfs / "poc")
    process = {"user": {"uid": uid, "gid": uid},
               "capabilities": {s: caps for s in ("bounding", "effective", "permitted")}}
    return make_bundle(tmp_path, args, name=name, rootfs=rootfs, process=process)


def on_terminal(cmd: list[str], timeout: float = 30, typed: bytes = b"",
                controlling: bool = True) -> tuple[int, bytes, bytes]:
    """Run `cmd` with a new pty as its controlling terminal and stdio, like a command typed in an
    interactive shell.  Returns (exit status, what it printed, what is left in the terminal's
    input queue afterwards: bytes pushed there by TIOCSTI).  `typed` is typed on it first."""
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO  # what is typed (or injected) is not mixed into the output
    termios.tcsetattr(slave, termios.TCSANOW, attrs)

    def become_session_leader_on_the_pty():
        if controlling:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                             preexec_fn=become_session_leader_on_the_pty)
        os.write(master, typed)
        out = b""
        deadline = time.monotonic() + timeout
        while p.poll() is None and time.monotonic() < deadline:
            out += _read_ready(master, 0.05)
        if p.poll() is None:
            p.kill()
            p.wait()
            pytest.fail(f"{cmd} did not finish in {timeout} s")
        out += _read_ready(master, 0.2)
        queued = _read_ready(slave, 0.2)
        return p.returncode, out, queued
    finally:
        os.close(master)
        os.close(slave)


def _read_ready(fd: int, wait: float) -> bytes:
    data = b""
    while select.select([fd], [], [], wait)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        wait = 0.05
    return data


def _exec_cmd(runtime: str, root, cid: str, *args: str) -> list[str]:
    base = helpers.ocirun_command() if runtime == "ocirun" else [helpers.RUNC]
    return [*base, "--root", str(root), "exec", *args, cid, "/poc"]


def _start_detached(runtime: str, root, bundle, cid: str) -> None:
    run = run_ocirun if runtime == "ocirun" else run_runc
    r = run("run", "-d", "-b", str(bundle), cid, root=root)
    assert r.returncode == 0, r.stderr


def _delete(runtime: str, root, cid: str) -> None:
    helpers.delete(root, cid, run=run_ocirun if runtime == "ocirun" else run_runc, check=False)


RUNTIMES = ["ocirun", pytest.param("runc", marks=pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed"))]


@needs_tiocsti
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_exec_cannot_type_into_the_callers_terminal(tmp_path, poc, runtime, detach, ocirun_root, runc_root):
    """The issue's scenario: uid 1000 without capabilities, `exec` from a root shell's terminal."""
    root = ocirun_root if runtime == "ocirun" else runc_root
    bundle = _bundle(tmp_path, poc, ["sleep", "1000"], caps=[], uid=1000)
    _start_detached(runtime, root, bundle, "tty1")
    try:
        args = ("-d",) if detach else ()
        # Detached, the poc runs on after `exec` returns: the terminal is watched a while longer.
        rc, out, queued = on_terminal(["sh", "-c", _shell(_exec_cmd(runtime, root, "tty1", *args))
                                       + ("; sleep 1" if detach else "")])
    finally:
        _delete(runtime, root, "tty1")
    assert INJECTED not in queued, (runtime, out, queued)
    if not detach:
        assert b"tiocsti-refused" in out, (runtime, rc, out)
        assert rc == 1, (runtime, rc, out)


@needs_tiocsti
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_privileged_exec_in_the_foreground_gets_no_terminal_at_all(tmp_path, poc, runtime, ocirun_root, runc_root):
    """With CAP_SYS_ADMIN a new session is not enough (TIOCSTI works on any terminal then):
    in the foreground the process gets pipes, so the ioctl fails with ENOTTY."""
    root = ocirun_root if runtime == "ocirun" else runc_root
    bundle = _bundle(tmp_path, poc, ["sleep", "1000"], caps=["CAP_SYS_ADMIN"])
    _start_detached(runtime, root, bundle, "tty2")
    try:
        rc, out, queued = on_terminal(_exec_cmd(runtime, root, "tty2"))
    finally:
        _delete(runtime, root, "tty2")
    assert INJECTED not in queued, (runtime, out, queued)
    assert b"tiocsti-refused: Inappropriate ioctl for device" in out, (runtime, rc, out)


@needs_tiocsti
@pytest.mark.parametrize("caps", [[], ["CAP_SYS_ADMIN"]], ids=["unprivileged", "cap_sys_admin"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_in_the_foreground_cannot_type_into_the_callers_terminal(tmp_path, poc, runtime, caps,
                                                                     ocirun_root, runc_root):
    """The init has always had its own session; in the foreground it also gets pipes."""
    root = ocirun_root if runtime == "ocirun" else runc_root
    base = helpers.ocirun_command() if runtime == "ocirun" else [helpers.RUNC]
    bundle = _bundle(tmp_path, poc, ["/poc"], caps=caps)
    try:
        rc, out, queued = on_terminal([*base, "--root", str(root), "run", "-b", str(bundle), "tty3"])
    finally:
        _delete(runtime, root, "tty3")
    assert INJECTED not in queued, (runtime, out, queued)
    assert b"tiocsti-refused" in out and rc == 1, (runtime, rc, out)


@pytest.mark.parametrize("how", ["exec", "exec-d", "run", "run-d"])
def test_every_process_we_start_has_its_own_session_and_no_controlling_terminal(tmp_path, how, ocirun_root):
    """Field 7 of /proc/self/stat (tty_nr) is 0 without a controlling terminal, and a session
    leader's sid (field 6) is its own pid."""
    # `$$` is the shell itself, and `read` a builtin: the shell reads its own stat.
    probe = ["sh", "-c", 'read -r line < /proc/$$/stat; set -- ${line#*) }; echo "sid=$4 tty=$5 me=$$"']
    if how.startswith("exec"):
        bundle = make_bundle(tmp_path, ["sleep", "1000"])
        r = run_ocirun("run", "-d", "-b", str(bundle), "sess", root=ocirun_root)
        assert r.returncode == 0, r.stderr
        cmd = [*helpers.ocirun_command(), "--root", str(ocirun_root), "exec",
               *(["-d"] if how == "exec-d" else []), "sess", *probe]
    else:
        bundle = make_bundle(tmp_path, probe)
        cmd = [*helpers.ocirun_command(), "--root", str(ocirun_root), "run",
               *(["-d"] if how == "run-d" else []), "-b", str(bundle), "sess"]
    try:
        # Detached, the process writes to our terminal after we return: keep reading a moment.
        rc, out, _ = on_terminal(["sh", "-c", _shell(cmd) + "; sleep 0.5"])
    finally:
        helpers.delete(ocirun_root, "sess", check=False)
    assert rc == 0, out
    words = dict(w.split("=") for w in out.decode().split() if "=" in w)
    assert words.get("tty") == "0", out
    assert words.get("sid") == words.get("me"), out


def _shell(cmd: list[str]) -> str:
    return " ".join("'" + str(c).replace("'", "'\\''") + "'" for c in cmd)


def test_foreground_exec_and_run_still_talk_to_the_terminal_through_the_pipes(tmp_path, ocirun_root):
    """What the pipes must keep: typed input reaches the process, its stdout and stderr reach
    the terminal, end-of-file on stdin is passed on, and the exit status is the process's."""
    script = 'read -r line; echo "got:$line"; echo "to-stderr" >&2; cat; echo "eof-seen"; exit 7'
    bundle = make_bundle(tmp_path, ["sh", "-c", script])
    base = [*helpers.ocirun_command(), "--root", str(ocirun_root)]
    typed = b"hello\nmore\n\x04"  # ^D: end-of-file on a terminal in canonical mode
    rc, out, _ = on_terminal([*base, "run", "-b", str(bundle), "talk"], typed=typed)
    assert rc == 7, (rc, out)
    assert b"got:hello" in out and b"to-stderr" in out and b"more" in out and b"eof-seen" in out, out
    r = run_ocirun("run", "-d", "-b", str(make_bundle(tmp_path, ["sleep", "100"], name="b2")), "talk2",
                   root=ocirun_root)
    assert r.returncode == 0, r.stderr
    try:
        rc, out, _ = on_terminal([*base, "exec", "talk2", "sh", "-c", script], typed=typed)
    finally:
        helpers.delete(ocirun_root, "talk2", check=False)
    assert rc == 7, (rc, out)
    assert b"got:hello" in out and b"to-stderr" in out and b"more" in out and b"eof-seen" in out, out


def test_a_terminal_that_is_not_ours_to_control_is_still_relayed(tmp_path, ocirun_root):
    """stdin a terminal but not ocirun's controlling terminal (`setsid ocirun ... </dev/pts/N`):
    no job control applies, so typed input must reach the process (it once was never read)."""
    bundle = make_bundle(tmp_path, ["sh", "-c", 'read -r line; echo "got:$line"'])
    cmd = [*helpers.ocirun_command(), "--root", str(ocirun_root), "run", "-b", str(bundle), "nc"]
    rc, out, _ = on_terminal(cmd, typed=b"typed-here\n", controlling=False, timeout=20)
    assert rc == 0 and b"got:typed-here" in out, (rc, out)
