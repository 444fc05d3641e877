"""systemd's manager over D-Bus: the few calls the systemd cgroup driver makes.

The client library is jeepney (pure Python, synchronous, no compiled parts; see the README
for why).  It is imported here only, and this module only by the systemd driver: the
cgroupfs path never pays its ~20 ms of imports.

Every call has a deadline.  A unit's start or stop is a *job*: the method returns the job's
object path at once, and the outcome arrives later as the manager's JobRemoved signal.  We
subscribe and set the match rule before asking, so a signal that overtakes the reply is
queued rather than lost.

`bus` is "system" (root: the system instance of systemd) or "user" (a rootless caller's own
`systemd --user`, over the session bus), so the same driver serves both.
"""
from __future__ import annotations

import os
import time

from ..errors import OCIError

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT_S = 25.0
JOB_TIMEOUT_S = 30.0   # runc's too: a start or stop that takes longer is reported, not waited for
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"


class BusError(OCIError):
    """An error reply: `name` is the D-Bus error name, the message systemd's own words."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class UnitExists(OCIError):
    """The unit is someone else's: nothing was started, so nothing of it is ours to stop."""


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 exactly when /run/systemd/system is a directory."""
    return os.path.isdir("/run/systemd/system")


PRIVATE_SOCKET = "/run/systemd/private"  # the system instance's direct socket (root only)
CONNECT_ERRORS = (OSError, RuntimeError, ValueError, StopIteration)


def _why(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(e, StopIteration):
        return "no unix: address in it"
    return str(e) or type(e).__name__


class Systemd:
    """A connection to one systemd instance's manager."""

    def __init__(self, bus: str = "system", timeout: float = CALL_TIMEOUT_S) -> None:
        """`timeout` bounds the connection and Hello (`ocirun check` waits less than the driver).

        root falls back to systemd's own socket when the system bus does not answer (no
        dbus-daemon, or one restarting), as runc does: a direct connection to the manager,
        without the bus daemon in between (no Hello, no match rules to register)."""
        self.bus = bus
        self.address = where = _bus_address(bus)
        self.direct = False
        try:
            self.conn = _connect(where, timeout)
        except CONNECT_ERRORS as e:
            why = _why(e, timeout)
            if not (bus == "system" and os.geteuid() == 0 and os.path.exists(PRIVATE_SOCKET)):
                raise OCIError(f"systemd cgroup driver: cannot connect to the {bus} bus ({where}): {why}") from None
            try:
                self.conn = _connect(f"unix:path={PRIVATE_SOCKET}", timeout, hello=False)
            except CONNECT_ERRORS as e2:
                raise OCIError(f"systemd cgroup driver: cannot connect to the {bus} bus ({where}): {why}; "
                               f"nor to systemd's own socket {PRIVATE_SOCKET}: {_why(e2, timeout)}") from None
            self.address, self.direct = f"unix:path={PRIVATE_SOCKET}", True
        self._version: int | None = None
        self._subscribed = False

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ plain calls

    def call(self, member: str, signature: str = "", body: tuple = (), *, path: str = SYSTEMD_PATH,
             interface: str = MANAGER, timeout: float = CALL_TIMEOUT_S) -> tuple:
        from jeepney import DBusAddress, MessageType, new_method_call
        msg = new_method_call(DBusAddress(path, SYSTEMD, interface), member, signature or None, body)
        try:
            reply = self.conn.send_and_get_reply(msg, timeout=timeout)
        except TimeoutError:
            raise OCIError(f"systemd: no answer to {member} within {timeout:g} s") from None
        except OSError as e:
            raise OCIError(f"systemd: {member}: the bus connection failed: {e}") from None
        if reply.header.message_type == MessageType.error:
            from jeepney import HeaderFields
            name = reply.header.fields.get(HeaderFields.error_name, "")
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
            raise BusError(name, text)
        return reply.body

    def version(self) -> int:
        """systemd's version number ("252.39-1~deb12u1" -> 252); 0 if it cannot be read."""
        if self._version is None:
            try:
                sig, text = self.call("Get", "ss", (MANAGER, "Version"), interface=PROPERTIES)[0]
                digits = "".join(c for c in str(text).lstrip("v").split(".")[0] if c.isdigit())
                self._version = int(digits) if digits else 0
            except OCIError:
                self._version = 0
        return self._version

    def manager_cgroup(self) -> str:
        """The cgroup of this systemd instance ("/" for the system one; for a user's,
        /user.slice/user-UID.slice/user@UID.service): its slices are below it."""
        return str(self.call("Get", "ss", (MANAGER, "ControlGroup"), interface=PROPERTIES)[0][1]) or "/"

    def unit_state(self, unit: str) -> str | None:
        """The unit's ActiveState ("active", "failed", ...), or None if systemd has no such unit."""
        try:
            path = self.call("GetUnit", "s", (unit,))[0]
        except BusError as e:
            if e.name == NO_SUCH_UNIT:
                return None
            raise
        return self.call("Get", "ss", ("org.freedesktop.systemd1.Unit", "ActiveState"),
                         path=path, interface=PROPERTIES)[0][1]

    def reset_failed(self, unit: str) -> None:
        """Forget a failed unit (an OOM-killed scope stays listed as failed until then)."""
        try:
            self.call("ResetFailedUnit", "s", (unit,))
        except BusError as e:
            if e.name != NO_SUCH_UNIT:
                raise

    def set_properties(self, unit: str, props: list) -> None:
        """Change a running unit's properties (runtime only: nothing is written to /etc)."""
        if props:
            self.call("SetUnitProperties", "sba(sv)", (unit, True, props))

    # ------------------------------------------------------------------ jobs

    def start_transient_unit(self, unit: str, props: list) -> None:
        """Start `unit` with `props`; return once systemd says the job is done.

        A unit of that name that exists only as failed (a container of the same name that was
        OOM-killed) is reset and the start tried once more, as runc does."""
        for attempt in (1, 2):
            try:
                result = self._job("StartTransientUnit", "ssa(sv)a(sa(sv))", (unit, "replace", props, []))
                break
            except BusError as e:
                if e.name != UNIT_EXISTS or attempt == 2:
                    if e.name == UNIT_EXISTS:
                        raise UnitExists(f"systemd unit {unit} already exists (a container with this "
                                         "cgroupsPath is running?)") from None
                    raise OCIError(f"systemd: starting unit {unit}: {e}") from None
                self.reset_failed(unit)
        if result != "done":
            self.reset_failed(unit)
            raise OCIError(f"systemd: starting unit {unit}: the job ended as {result!r}"
                           + (" (see journalctl -u " + unit + ")" if result == "failed" else ""))

    def stop_unit(self, unit: str) -> bool:
        """Stop `unit` and forget it if it failed; False if there was no such unit."""
        try:
            result = self._job("StopUnit", "ss", (unit, "replace"))
        except BusError as e:
            if e.name == NO_SUCH_UNIT:
                return False
            raise OCIError(f"systemd: stopping unit {unit}: {e}") from None
        self.reset_failed(unit)
        if result not in ("done", "canceled"):
            raise OCIError(f"systemd: stopping unit {unit}: the job ended as {result!r}")
        return True

    def _job(self, member: str, signature: str, body: tuple) -> str:
        """Call a method that queues a job; wait for its JobRemoved; return its result."""
        from jeepney import MatchRule, message_bus
        rule = MatchRule(type="signal", interface=MANAGER, member="JobRemoved", path=SYSTEMD_PATH)
        with self.conn.filter(rule, bufsize=1024) as queue:
            if not self._subscribed:
                if not self.direct:  # a direct connection gets the manager's signals unasked
                    self._send_to_bus(message_bus.AddMatch(rule))
                self.call("Subscribe")  # systemd sends its signals only to subscribers
                self._subscribed = True
            job = self.call(member, signature, body)[0]
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while True:
                left = deadline - time.monotonic()
                try:
                    # pops a signal the calls above queued, or waits for the next one
                    signal = self.conn.recv_until_filtered(queue, timeout=max(left, 0))
                except TimeoutError:
                    raise OCIError(f"systemd: {member} {body[0]}: no result after {JOB_TIMEOUT_S:g} s") from None
                except OSError as e:
                    raise OCIError(f"systemd: {member} {body[0]}: the bus connection failed: {e}") from None
                _id, path, _unit, result = signal.body
                if path == job:
                    return result

    def _send_to_bus(self, msg) -> None:
        from jeepney import MessageType
        try:
            reply = self.conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            raise OCIError(f"D-Bus: {msg.header.fields.get(3, 'call')}: {str(e) or 'no answer'}") from None
        if reply.header.message_type == MessageType.error:
            raise OCIError(f"D-Bus: {reply.body[0] if reply.body else 'AddMatch refused'}")


def _bus_address(bus: str) -> str:
    """The bus's address.  The session bus of a rootless caller: DBUS_SESSION_BUS_ADDRESS, else
    the user's runtime dir (engines such as conmon call the runtime with a trimmed environment)."""
    if bus == "system":
        return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "unix:path=/run/dbus/system_bus_socket"
    addr = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if addr:
        return addr
    xdg = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{host_uid()}"
    return f"unix:path={xdg}/bus"


def host_uid() -> int:
    """Our euid one user namespace up: rootless podman runs the runtime as root of its own user
    namespace, and the user's bus is still at /run/user/<their uid>/bus."""
    uid = os.geteuid()
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, outside, count = (int(x) for x in line.split())
                if inside <= uid < inside + count:
                    return outside + uid - inside
    except (OSError, ValueError):
        pass
    return uid


def _connect(address: str, timeout: float = CALL_TIMEOUT_S, hello: bool = True):
    """An authenticated connection that has said Hello (to a bus daemon; `hello=False` for a
    direct connection to systemd), each step with a deadline (jeepney's own constructor waits
    for the Hello reply without one)."""
    from jeepney import MessageType
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import DBusConnection, DBusConnectionBase
    from jeepney.io.common import MessageFilters

    class Connection(DBusConnection):
        def __init__(self, sock) -> None:
            DBusConnectionBase.__init__(self, sock)  # not DBusConnection's: its Hello has no deadline
            self._filters = MessageFilters()
            if not hello:
                self.unique_name = None
                return
            reply = self.send_and_get_reply(message_bus.Hello(), timeout=timeout)
            if reply.header.message_type == MessageType.error:
                raise OSError(f"Hello refused: {reply.body[0] if reply.body else ''}")
            self.unique_name = reply.body[0]

    sock = _authenticated_socket(address, timeout)
    try:
        return Connection(sock)
    except BaseException:
        sock.close()
        raise


def _auth_line(sock) -> bytes:
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise OSError("the bus closed the connection during authentication")
        reply += chunk
    return reply


def _authenticated_socket(address: str, timeout: float = CALL_TIMEOUT_S):
    """Connect to a unix: bus address and authenticate (SASL EXTERNAL with our host uid)."""
    import socket
    from jeepney.bus import get_connectable_addresses
    path = next(get_connectable_addresses(address))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        # EXTERNAL without claiming a uid: the bus takes the one it sees on the socket
        # (SO_PEERCRED, in its own user namespace), so this works as root of rootless podman's
        # namespace, in a system container, and everywhere else (what sd-bus does).
        sock.sendall(b"\0AUTH EXTERNAL\r\n")
        reply = _auth_line(sock)
        if reply.startswith(b"DATA"):
            sock.sendall(b"DATA\r\n")
            reply = _auth_line(sock)
        if not reply.startswith(b"OK "):
            raise OSError(f"authentication refused ({reply.decode(errors='replace').strip()})")
        sock.sendall(b"BEGIN\r\n")
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock
