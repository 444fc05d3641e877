"""A WebSocket client for the CRI streaming server: what `kubectl exec/attach/port-forward` speak.

The CRI `Exec`, `Attach` and `PortForward` calls answer with a URL on containerd's streaming
server (k8s.io/kubelet's cri/streaming, vendored in containerd 1.6 as pkg/cri/streaming).  It
upgrades a plain HTTP GET to a WebSocket (RFC 6455) whose sub-protocol multiplexes channels:
each binary message starts with its channel's number.

- exec/attach, `v4.channel.k8s.io`: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON
  metav1.Status once the process has ended: `{"status": "Success"}` or a failure whose
  `details.causes` hold the exit code), 4 resize (JSON `{"Width": w, "Height": h}`).
  The v4 protocol cannot close stdin on its own: only closing the whole socket does.
- port-forward, `v4.channel.k8s.io` with `?port=N`: per port a data channel (2i) and an error
  channel (2i+1), each opening with the port as 2 little-endian bytes.

Only the standard library: an HTTP/1.1 upgrade by hand, client frames masked (RFC 6455 5.3),
the server's unmasked frames read back, continuation frames joined, pings answered.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from urllib.parse import urlsplit

EXEC_PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10


class StreamError(Exception):
    pass


class ChannelSocket:
    """One WebSocket on the streaming server; `send(channel, data)`, `receive()`."""

    def __init__(self, url: str, protocol: str = EXEC_PROTOCOL, timeout: float = 20):
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise StreamError(f"only plain http streaming URLs are handled: {url}")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self._buffer = b""
        self.closed = False
        try:
            self.protocol = self._handshake(parts, protocol)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, parts, protocol: str) -> str:
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n")
        self.sock.sendall(request.encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status, *header_lines = head.split("\r\n")
        if " 101 " not in f"{status} ":
            raise StreamError(f"no WebSocket upgrade from {parts.geturl()}: {head.strip()!r} "
                              f"{self._buffer[:500]!r}")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in header_lines if line)}
        expected = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise StreamError(f"bad Sec-WebSocket-Accept in {head!r}")
        return headers.get("sec-websocket-protocol", "")

    # ----------------------------------------------------------------------- bytes

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the streaming server closed the connection")
        self._buffer += chunk

    # ----------------------------------------------------------------------- frames

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            length = struct.pack("!B", 0x80 | size)
        elif size < 1 << 16:
            length = struct.pack("!BH", 0x80 | 126, size)
        else:
            length = struct.pack("!BQ", 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read_exactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._read_exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._read_exactly(8))[0]
        mask = self._read_exactly(4) if second & 0x80 else b""
        payload = self._read_exactly(size)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def _read_message(self) -> bytes | None:
        """The next data message (fragments joined); None once the server closes."""
        parts: list[bytes] = []
        while True:
            try:
                final, opcode, payload = self._read_frame()
            except EOFError:
                return None
            if opcode == _OP_CLOSE:
                self._close_socket(answer=payload[:2])
                return None
            if opcode == _OP_PING:
                self._send_frame(_OP_PONG, payload)
                continue
            if opcode == _OP_PONG:
                continue
            parts.append(payload)
            if final:
                return b"".join(parts)

    # ----------------------------------------------------------------------- channels

    def send(self, channel: int, data: bytes) -> None:
        self._send_frame(_OP_BINARY, bytes([channel]) + data)

    def resize(self, width: int, height: int) -> None:
        self.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    def receive(self) -> tuple[int, bytes] | None:
        """(channel, data) of the next message; None once the server has closed."""
        if self.closed:
            return None
        message = self._read_message()
        if message is None:
            self.closed = True
            return None
        if not message:
            return self.receive()
        return message[0], message[1:]

    def close(self) -> None:
        if not self.closed:
            self._close_socket(answer=struct.pack("!H", 1000))

    def _close_socket(self, answer: bytes) -> None:
        self.closed = True
        try:
            self._send_frame(_OP_CLOSE, answer)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Session:
    """An exec or attach stream: what each channel has said so far, read on demand."""

    def __init__(self, url: str, timeout: float = 20):
        self.socket = ChannelSocket(url, EXEC_PROTOCOL, timeout)
        self.output: dict[int, bytes] = {STDOUT: b"", STDERR: b"", ERROR: b""}
        self.timeout = timeout

    def write(self, data: bytes | str) -> None:
        self.socket.send(STDIN, data.encode() if isinstance(data, str) else data)

    def resize(self, width: int, height: int) -> None:
        self.socket.resize(width, height)

    def read_until(self, channel: int, text: bytes | str, timeout: float | None = None,
                   since: int = 0) -> bytes:
        """What `channel` has said once it has said `text` after its first `since` bytes
        (StreamError if it never does)."""
        wanted = text.encode() if isinstance(text, str) else text
        deadline = time.monotonic() + (timeout or self.timeout)
        while wanted not in self.output[channel][since:]:
            if not self._receive_one(deadline):
                raise StreamError(f"the stream ended before channel {channel} said {wanted!r}: "
                                  f"{self.output}")
        return self.output[channel]

    def finish(self, timeout: float | None = None) -> dict:
        """Everything until the server closes; the error channel's status (JSON) decoded."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._receive_one(deadline):
            pass
        raw = self.output[ERROR]
        return json.loads(raw) if raw else {}

    def _receive_one(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StreamError(f"no end of stream in time: {self.output}")
        self.socket.sock.settimeout(left)
        try:
            frame = self.socket.receive()
        except TimeoutError:
            raise StreamError(f"no end of stream in time: {self.output}") from None
        if frame is None:
            return False
        channel, data = frame
        self.output[channel] = self.output.get(channel, b"") + data
        return True

    def close(self) -> None:
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def exit_code(status: dict) -> int:
    """The exit code an exec's final status reports (0 for Success)."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    raise StreamError(f"no exit code in the status {status}")


class PortForward:
    """One forwarded port: `send(data)`, `receive_until(text)`; the error channel kept."""

    def __init__(self, url: str, port: int, timeout: float = 20):
        separator = "&" if "?" in url else "?"
        self.socket = ChannelSocket(f"{url}{separator}port={port}", EXEC_PROTOCOL, timeout)
        self.port = port
        self.data = b""
        self.error = b""
        self.timeout = timeout
        self._opened = {0: False, 1: False}

    def send(self, data: bytes) -> None:
        self.socket.send(0, data)

    def receive_until(self, wanted: bytes, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while wanted not in self.data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamError(f"port {self.port} never sent {wanted!r}: {self.data!r} "
                                  f"(error channel {self.error!r})")
            self.socket.sock.settimeout(left)
            try:
                frame = self.socket.receive()
            except TimeoutError:
                continue  # out of time: the loop's test says so
            if frame is None:
                raise StreamError(f"port {self.port} closed before sending {wanted!r}: "
                                  f"{self.data!r} (error channel {self.error!r})")
            self._take(*frame)
        return self.data

    def _take(self, channel: int, data: bytes) -> None:
        # Each channel's first message is the port number, little-endian, not data.
        if channel in self._opened and not self._opened[channel]:
            self._opened[channel] = True
            if struct.unpack("<H", data[:2])[0] != self.port:
                raise StreamError(f"channel {channel} opened for port {data[:2]!r}, "
                                  f"not {self.port}")
            data = data[2:]
        if channel == 0:
            self.data += data
        else:
            self.error += data

    def close(self) -> None:
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
