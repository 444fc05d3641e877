"""The channel between the runtime process and its children, and every message on it.

A SOCK_SEQPACKET socketpair per child that speaks, made by the runtime before the first fork.
SEQPACKET keeps message boundaries, so each message is one JSON object: {"type": ..., ...}.
Reading end-of-file means every child end is closed: the child died without saying why.

`create` and `exec` are the only conversations.  `exec`'s (P, joiner, exec'd process) is short
and written at the top of joiner.py.  `create`'s (P = runtime/parent, M = intermediate, I = init)
uses two pairs: M inherits both child ends, keeps its own and hands the other to I, closing it
itself once I is born.  P reads M's channel until `init_pid` and only then I's, so the order
below holds on each channel whatever the scheduler does (with one shared socket the init could
speak before the intermediate's `init_pid` arrived).  In order:

  (M's channel)

  P → M  go            M may start: it was born in the container's cgroup2 directory, or P
                       has moved it there (cgroups/join.py); M then joins the v1 hierarchies
                       itself, before any namespace.
  M → P  userns        (only with a new user namespace) M has unshared it; P writes
                       /proc/M/{uid_map,gid_map}.
  P → M  userns_done   maps written; M becomes root inside and carries on.
  M → P  init_pid      {"pid": host pid of I}; M exits right after.
  M → P  error         {"msg": "..."} at any point before init_pid; M exits 1.

  (I's channel)

  P → I  netdevs_done  (only with linux.netDevices) P has moved the devices into I's network
                       namespace (network.py); I waits for it right after bringing `lo` up, so
                       hooks and net.* sysctls find them.  On failure P kills I instead.
  I → P  mounts_done   (only if prestart/createRuntime/createContainer hooks exist) the container's mounts are in
                       place, pivot_root not done yet.  P runs prestart + createRuntime hooks.
  P → I  hooks_done    {"state": {...}} hooks ran; I runs createContainer hooks and pivots.
  I → P  mount_source  {"index": i, "idmap": bool} either (in a user namespace) I may not look
                       up the source of bind mount mounts[i] (a path only host root may reach),
                       as in runc; or mounts[i] is idmapped (rootfs/idmap.py), in any container.
                       P checks the request against the config, never trusting the flag.
  P → I  mount_source  P, host root, opened the source through /proc/I/root (so the fd belongs
                       to I's mount namespace: a bind from it is allowed there) or, for idmap,
                       made a detached idmapped clone of it that I moves into place; sent as
                       SCM_RIGHTS.  If P cannot, P fails the create.
  I → P  listener_state  (only with a seccomp listener and noNewPrivileges false: the filter is
                       then loaded before `ready`, while I is still privileged) I needs the state
                       for the agent's payload before it loads the filter.
  P → I  state         {"state": {...}} the answer, status "creating" (runc sends the same).
  I → P  ready         I is fully set up and blocks on the exec fifo; P writes state.json and the
                       pid file and exits (or, for `run`, starts it).
  I → P  error         {"msg": "..."} at any point before ready; I exits 1 and P cleans up.

  P → I  state         {"state": {...}} right after `ready`, only when I needs the state with
                       its host pid later: for startContainer hooks, or for the seccomp
                       listener payload when the filter is loaded last, with noNewPrivileges
                       (init.needs_state_after_ready decides for both sides).

After that the init has no one to talk to: `start` releases it through the exec fifo, and the
channel is closed before the container's process runs.

Deadlines: the runtime's end (the first of `Channel.pair()`) gives every answer it waits for
STEP_TIMEOUT_S seconds (plus the timeouts of hooks the child runs meanwhile), then raises
`Timeout`, naming what it waited for; the caller kills the children.  So no bug of ours, no
stuck kernel call and no seccomp agent that never answers can hang create or exec.  The
children's ends have no deadline: they wait for the runtime, which either answers, times out
and kills them, or dies (end-of-file).  The environment variable OCIRUN_STEP_TIMEOUT (seconds)
overrides STEP_TIMEOUT_S, for slow machines and for the tests that prove the deadline fires.
A deadline longer than poll(2) can wait at once (~24.8 days: a hook's timeout may be anything)
is waited for in steps (wait_step).
"""
from __future__ import annotations

import os
import sys
import time

# _socket, not socket (ARCHITECTURE.md, Startup speed): a SEQPACKET pair needs nothing socket.py adds.
import _socket

from .. import jsonio
from ..errors import OCIError, os_words


# The message names, one constant each: every send/expect uses these (a unit test checks), so a
# typo is a NameError, not a conversation that hangs until the deadline.  create's (above):
GO = "go"
USERNS = "userns"
USERNS_DONE = "userns_done"
INIT_PID = "init_pid"
NETDEVS_DONE = "netdevs_done"
MOUNTS_DONE = "mounts_done"
HOOKS_DONE = "hooks_done"
MOUNT_SOURCE = "mount_source"
LISTENER_STATE = "listener_state"
STATE = "state"
READY = "ready"
ERROR = "error"
# exec's (joiner.py; it also uses GO and ERROR):
EXEC_PID = "exec_pid"
CGROUP_DONE = "cgroup_done"


class ChildDied(OCIError):
    """End-of-file on the channel: every end of the other side is closed.  For the runtime, its
    child died without a word; for a child, the runtime died or gave up on it."""


class Timeout(OCIError):
    pass


STEP_TIMEOUT_S = 60.0  # one step of the conversation normally takes milliseconds

# poll(2) takes an int of milliseconds (~24.8 days), and so does every socket timeout (CPython
# hands it to poll): a longer wait wraps around (to under a second for a hook timeout of
# 4294908 s).  So one wait lasts at most this many whole seconds, and the caller loops until
# its deadline (hooks._communicate too).
MAX_WAIT_STEP_S = ((1 << 31) - 1) // 1000


def wait_step(left: float) -> float:
    """How long one poll (or socket timeout) may wait with `left` seconds to the deadline."""
    return min(left, MAX_WAIT_STEP_S)


def hooks_time(hooks) -> float | None:
    """How long hooks may run: the sum of their timeouts; None (no bound) if one has none
    (a hook without a timeout may take what it likes, as with runc)."""
    total = 0.0
    for h in hooks:
        if not h.timeout:
            return None
        total += h.timeout
    return total


def step_timeout() -> float:
    """STEP_TIMEOUT_S, or OCIRUN_STEP_TIMEOUT from the environment (a positive number)."""
    text = os.environ.get("OCIRUN_STEP_TIMEOUT")
    if text:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if 0 < value < 1e9:
            return value
    return STEP_TIMEOUT_S


# What the runtime waits for, by message type (for the deadline's error).
_WAITING_FOR = {
    EXEC_PID: "the joiner to enter the container and fork the exec'd process",
}


class Channel:
    def __init__(self, sock, timeout: float | None = None):
        self.sock = sock
        self.timeout = timeout  # seconds each recv may wait; None: no deadline

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        """(the runtime's end, with the step deadline; the child's end, without one)."""
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        return cls(a, step_timeout()), cls(b)

    def send(self, mtype: str, **fields) -> None:
        fields["type"] = mtype
        self.sock.send(jsonio.dumps(fields).encode())

    def recv(self, what: str = "the container process", extra: float | None = 0.0) -> dict:
        """One message.  With a deadline, wait at most `timeout` + `extra` seconds (`extra` None:
        no deadline for this one, e.g. a hook without a timeout runs meanwhile)."""
        limit = None if self.timeout is None or extra is None else self.timeout + extra
        if self.timeout is None:  # a child: no fcntl(2) there, a filter may be loaded
            data = self.sock.recv(1 << 20)
        else:
            data = self._recv_by(None if limit is None else time.monotonic() + limit, limit, what)
        if not data:
            raise ChildDied("container init exited before it was ready")
        return jsonio.loads(data)

    def _recv_by(self, deadline: float | None, limit: float | None, what: str) -> bytes:
        """recv, waiting until `deadline` (monotonic; None: forever) in steps poll can take."""
        while True:
            if deadline is None:
                self.sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:  # (a timeout of 0 would make the socket non-blocking)
                    raise Timeout(f"timed out after {limit:g}s waiting for {what}")
                self.sock.settimeout(wait_step(left))
            try:
                return self.sock.recv(1 << 20)
            except TimeoutError:
                continue  # a step, or the deadline: the top of the loop says which

    def expect(self, mtype: str, what: str | None = None, extra: float | None = 0.0) -> dict:
        """Read one message; an `error` message becomes the OCIError it describes."""
        msg = self.recv(what or _WAITING_FOR.get(mtype, f"{mtype!r} from the container process"), extra)
        if msg["type"] == ERROR:
            raise OCIError(msg["msg"])
        if msg["type"] != mtype:
            raise OCIError(f"internal error: expected {mtype!r} from the container process, got {msg['type']!r}")
        return msg

    def error_waiting(self) -> str | None:
        """The text of an `error` message the other side already sent, without waiting (None if
        nothing, or something else, is waiting).  For a runtime whose own step failed because
        its child had died: the child's reason is the one worth reporting."""
        try:
            data = self.sock.recv(1 << 20, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
        except OSError:  # nothing waiting (EAGAIN) or the socket is gone
            return None
        try:
            msg = jsonio.loads(data) if data else None
        except ValueError:
            return None
        if isinstance(msg, dict) and msg.get("type") == ERROR and isinstance(msg.get("msg"), str):
            return msg["msg"]
        return None

    def send_fd(self, mtype: str, fd: int, **fields) -> None:
        """One message carrying one open fd (SCM_RIGHTS)."""
        fields["type"] = mtype
        self.sock.sendmsg([jsonio.dumps(fields).encode()],
                          [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])

    def expect_fd(self, mtype: str) -> int:
        """Like expect, for a message sent by send_fd: the fd received (close-on-exec)."""
        data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, _socket.CMSG_SPACE(4), _socket.MSG_CMSG_CLOEXEC)
        fds = [int.from_bytes(d[:4], sys.byteorder) for lvl, kind, d in anc
               if lvl == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(d) >= 4]
        if not data:
            raise ChildDied("container init exited before it was ready")
        msg = jsonio.loads(data)
        if msg["type"] == ERROR or msg["type"] != mtype or not fds:
            for fd in fds:
                os.close(fd)
            if msg["type"] == ERROR:
                raise OCIError(msg["msg"])
            raise OCIError(f"internal error: expected {mtype!r} with an fd, got {msg['type']!r}")
        return fds[0]

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def detach_fd(self) -> int:
        return self.sock.detach()


def report_error_and_exit(ch: Channel, err: BaseException) -> None:
    """Child side: tell the parent what went wrong in one line, then exit without cleanup.
    A parent that hung up (end-of-file) is dead or has given up on us: nothing to tell."""
    try:
        if isinstance(err, ChildDied):
            return
        if isinstance(err, OCIError):
            msg = str(err)
        elif isinstance(err, OSError):
            msg = os_words(err)
            if err.filename:
                msg = f"{err.filename}: {msg}"
        else:
            msg = f"internal error: {type(err).__name__}: {err}"
        try:
            ch.send(ERROR, msg=msg)
        except OSError:
            # After `ready` nobody listens any more: the container's stderr is all we have.
            os.write(2, f"ocirun: {msg}\n".encode())
    finally:
        os._exit(1)
