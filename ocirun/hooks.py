"""Running the lifecycle hooks of config.json (prestart, createRuntime, ..., poststop).

Each hook is run the way runc runs it:
- argv is hook.args as given (args[0] is argv[0]); no args means argv = [path];
- the environment is exactly hook.env; a hook without env inherits ours (Go's exec.Cmd with a
  nil Env, which is what runc passes for a missing "env");
- stdin is the container's state JSON (runtime-spec state: ociVersion, id, status, pid, bundle,
  annotations), then EOF;
- stdout and stderr are captured, not shown: on success they are dropped, on failure they go
  into the message, like runc's `exit status 1, stdout: ..., stderr: ...`;
- `timeout` seconds elapsed -> SIGKILL, and that is a failure.

We are often the container's init (single-threaded, maybe already pivoted, maybe PID 1), so this
is fork + execve + pipes + poll, no threads and no `subprocess`: it imports only builtin
modules, so it still works after pivot_root once this module is loaded.  A pidfd tells us when
the hook exits, so a hook that leaves a daemon holding its stdout open cannot hang us.
"""
from __future__ import annotations

import errno
import os
import select
import time

import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

from . import jsonio, linux
from .errors import OCIError, os_words

_MAX_CAPTURE = 64 * 1024  # per stream; a chatty hook must not fill our memory
CLOSE_RANGE_CLOEXEC = 4


class HookFailed(Exception):
    """One hook failed; the message is runc's wording without the "error running hook #i" prefix."""


def make_state(container_id: str, status: str, pid: int | None, bundle: str,
               annotations: dict | None = None, oci_version: str = "1.2.0") -> dict:
    """The runtime-spec state object hooks read on stdin."""
    state: dict[str, object] = {"ociVersion": oci_version, "id": container_id, "status": status, "bundle": bundle}
    if pid:
        state["pid"] = pid
    state["annotations"] = dict(annotations or {})
    return state


def run_hooks(kind: str, hooks, state: dict, warn_only: bool = False, log=None) -> None:
    """Run `hooks` (list of config.Hook) in order, each with `state` as JSON on stdin.

    The first failure raises OCIError("error running <kind> hook #<i>: <why>") and the rest are
    not run; with `warn_only` (poststop: the container is gone whatever happens) each failure is
    reported through `log("warning", msg)` and the next hook still runs.
    """
    if not hooks:
        return
    data = jsonio.dumps(state, compact=True).encode()
    for i, hook in enumerate(hooks):
        try:
            run_hook(hook, data)
        except HookFailed as e:
            msg = f"error running {kind} hook #{i}: {e}"
            if not warn_only:
                raise OCIError(msg) from None
            if log is not None:
                log("warning", msg)
            else:
                os.write(2, f"ocirun: warning: {msg}\n".encode())


def run_recorded(st, kind: str, status: str, log=None) -> None:
    """The poststart/poststop hooks that `create` kept in state.json (`st.hooks`), run as
    warnings only (runtime.md).  Callers look at `st.hooks.get(kind)` first: a container
    without such hooks never loads this module."""
    raw = st.hooks.get(kind)
    if not raw:
        return
    from .config import parse_hooks
    hooks = parse_hooks({"hooks": {kind: raw}}).get(kind, [])
    if hooks:
        run_hooks(kind, hooks, st.hook_state(status), warn_only=True, log=log)


def run_hook(hook, stdin_data: bytes) -> None:
    """Run one hook to completion; raise HookFailed saying why it failed."""
    argv = list(hook.args) or [hook.path]
    env = _env(hook.env)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    exec_r, exec_w = os.pipe2(os.O_CLOEXEC)  # closed by a successful exec, else carries errno
    pid = os.fork()
    if pid == 0:
        _child(hook.path, argv, env, in_r, out_w, err_w, exec_w)  # never returns
    for fd in (in_r, out_w, err_w, exec_w):
        os.close(fd)
    try:
        failed_errno = _read_exec_status(exec_r)
        if failed_errno is not None:
            os.close(in_w)
            in_w = -1
            _reap(pid)
            reason = os_words(OSError(failed_errno, os.strerror(failed_errno)))
            raise HookFailed(f"fork/exec {hook.path}: {reason}")
        in_fd, in_w = in_w, -1  # _communicate owns and closes it
        try:
            out, err, status = _communicate(pid, in_fd, out_r, err_r, stdin_data, hook.timeout)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM unwinding): take the hook with us
            _kill(pid)
            raise
    finally:
        for fd in (in_w, out_r, err_r, exec_r):
            if fd >= 0:
                _close_quietly(fd)
    if status is None:
        raise HookFailed(f"hook ran past specified timeout of {float(hook.timeout):.1f}s")
    why = _describe_status(status)
    if why:
        raise HookFailed(f"{why}, stdout: {_text(out)}, stderr: {_text(err)}")


def _env(entries: list[str]) -> dict[str, str]:
    if not entries:
        return dict(os.environ)
    env: dict[str, str] = {}
    for e in entries:
        k, sep, v = e.partition("=")
        if sep:
            env[k] = v
    return env


def _child(path: str, argv: list[str], env: dict, in_r: int, out_w: int, err_w: int, exec_w: int):
    """In the forked child: wire stdio, shed our fds and signal state, exec.  Never returns."""
    try:
        os.dup2(in_r, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        try:  # every other fd closes on exec (exec_w already is O_CLOEXEC)
            linux.close_range(3, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC)
        except OSError:
            os.closerange(3, exec_w)
        # Python ignores SIGPIPE/SIGXFSZ and ignored signals survive exec: give the hook defaults.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execve(path, argv, env)
    except OSError as e:
        try:
            os.write(exec_w, (e.errno or errno.ENOEXEC).to_bytes(4, "little"))
        except OSError:
            pass
    except BaseException:
        pass
    os._exit(127)


def _read_exec_status(exec_r: int) -> int | None:
    data = b""
    while True:
        try:
            chunk = os.read(exec_r, 4)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return int.from_bytes(data[:4], "little") if len(data) >= 4 else None


def _communicate(pid: int, in_w: int, out_r: int, err_r: int, data: bytes, timeout):
    """Feed stdin, collect stdout/stderr until the hook exits or times out.

    Returns (stdout, stderr, wait status), the status None on timeout (the hook was killed).
    """
    for fd in (in_w, out_r, err_r):
        os.set_blocking(fd, False)
    try:
        pidfd = linux.pidfd_open(pid)
    except OSError:
        pidfd = -1  # old kernel: we stop at EOF on both pipes instead
    bufs = {out_r: bytearray(), err_r: bytearray()}
    deadline = time.monotonic() + timeout if timeout else None
    if deadline is not None:
        # Loaded already wherever hooks run in the container (the init imported it before
        # pivot_root); elsewhere only needed with a timeout.
        from .process.channel import wait_step
    poller = select.poll()
    poller.register(in_w, select.POLLOUT)
    for fd in bufs:
        poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    open_pipes = set(bufs)
    sent = 0
    in_open = True
    try:
        if not data:
            poller.unregister(in_w)
            os.close(in_w)
            in_open = False
        while True:
            wait_ms = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill(pid)
                    return bytes(bufs[out_r]), bytes(bufs[err_r]), None
                wait_ms = max(1, int(wait_step(left) * 1000))  # at most what poll(2) takes
            for fd, _ev in poller.poll(wait_ms):
                if fd == pidfd:
                    _drain(bufs, open_pipes)
                    return bytes(bufs[out_r]), bytes(bufs[err_r]), _reap(pid)
                if fd == in_w:
                    try:
                        sent += os.write(in_w, data[sent:sent + 65536])
                        done = sent >= len(data)
                    except BlockingIOError:
                        done = False
                    except OSError:  # EPIPE: the hook does not read its stdin, that is fine
                        done = True
                    if done:
                        poller.unregister(in_w)
                        os.close(in_w)
                        in_open = False
                elif fd in open_pipes and not _read_some(fd, bufs[fd]):
                    poller.unregister(fd)
                    open_pipes.discard(fd)
            if pidfd < 0 and not open_pipes:
                return bytes(bufs[out_r]), bytes(bufs[err_r]), _reap(pid)
    finally:
        if in_open:
            _close_quietly(in_w)
        if pidfd >= 0:
            os.close(pidfd)


def _read_some(fd: int, buf: bytearray) -> bool:
    """Read what is there; False at EOF."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    if len(buf) < _MAX_CAPTURE:
        buf += chunk[:_MAX_CAPTURE - len(buf)]
    return True


def _drain(bufs: dict, open_pipes: set) -> None:
    """The hook has exited: take what it wrote, but don't wait for a descendant that kept the pipe."""
    for fd in list(open_pipes):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            buf = bufs[fd]
            if len(buf) < _MAX_CAPTURE:
                buf += chunk[:_MAX_CAPTURE - len(buf)]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:  # someone else reaped it (a SIGCHLD handler): call it a success
            return 0


def _describe_status(status: int) -> str:
    """"" for success, else Go's wording (what runc prints): "exit status 2", "signal: killed"."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f"exit status {code}" if code else ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.strsignal(sig) or f"signal {sig}"
        return f"signal: {name[:1].lower()}{name[1:]}"
    return f"wait status {status}"


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace").rstrip("\n")


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
