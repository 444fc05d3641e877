"""runc-compatible logging: `--log FILE --log-format text|json`, `--debug`.

Engines read our errors from the log file: containerd's shim takes the *last* line with
`"level":"error"`, podman shows the `msg` of the JSON line.  So every failure appends one fresh
error line, and the same message goes to stderr as one line for people.  Text lines look like
logrus's: `time="..." level=error msg="..."`.
"""
from __future__ import annotations

import os
import sys
import time

from . import jsonio

_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


# The log file is ours alone: error text can carry config values (hook arguments, paths).
_LOG_FILE_MODE = 0o600


class Logger:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False):
        self.path = path or None
        self.fmt = fmt
        self.debug_enabled = debug
        self._fd = -1      # the --log file, held open by the process that opened it (open_file)
        self._fd_pid = 0

    def _stamp(self) -> str:
        t = time.time()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"

    def _line(self, level: str, msg: str) -> str:
        if self.fmt == "json":
            # Compact, as logrus writes it: tools match the literal `"level":"error"`.
            return jsonio.dumps({"level": level, "msg": msg, "time": self._stamp()}, compact=True)
        return f'time="{self._stamp()}" level={level} msg={jsonio.dumps(msg)}'

    def log(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_enabled:
            return
        if self.path:
            self._append(self.path, self._line(level, msg) + "\n")
        elif level in ("warning", "debug"):
            sys.stderr.write(self._line(level, msg) + "\n")
            sys.stderr.flush()

    def _append(self, path: str, text: str) -> None:
        try:
            if self._fd >= 0 and os.getpid() == self._fd_pid:
                os.write(self._fd, text.encode())
            else:  # a forked child: the fd may be closed, or its number another file's by now
                self._write(path, text)
        except OSError:
            pass  # a broken log file must not hide the real error

    @staticmethod
    def _write(path: str, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _LOG_FILE_MODE)
        try:
            if text:
                os.write(fd, text.encode())
        finally:
            os.close(fd)

    def open_file(self) -> str | None:
        """Open the --log file (created if missing) and hold it for this process's lines; why
        it cannot be opened, or None.  runc refuses to run without its log (an engine reads
        our errors there) and holds it open too: a FIFO's reader sees one writer until we
        exit, where an open per line gave it end-of-file after the first and hung the next
        open for want of a reader."""
        if not self.path:
            return None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _LOG_FILE_MODE)
        except OSError as e:
            from .errors import os_words
            return f"open {self.path}: {os_words(e)}"
        self._fd_pid = os.getpid()
        return None

    def debug(self, msg: str) -> None:
        self.log("debug", msg)

    def warn(self, msg: str) -> None:
        self.log("warning", msg)

    def error(self, msg: str) -> None:
        """The one-line error for people (stderr) and engines (log file)."""
        self.log("error", msg)
        try:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
        except OSError:
            pass


# The process-wide logger; the CLI replaces it after parsing the global flags.
LOG = Logger()


def configure(path: str | None, fmt: str, debug: bool) -> Logger:
    global LOG
    LOG = Logger(path, fmt, debug)
    return LOG


def get() -> Logger:
    return LOG
