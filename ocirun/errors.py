"""One error convention for the whole runtime.

Every failure the user should see is an `OCIError`: the CLI prints its message as
one line (and appends it as a fresh error line to `--log`), then exits 1.  Nothing
else may escape to the user as a traceback.  `ConfigError` carries the JSON path
of the config.json field at fault, e.g. ``mounts[3].destination: must be absolute``.

Messages echo config values, file names and hook output, which whoever wrote the config (or
a container, through a hook's output) controls: a newline there would forge a second line for
log readers, an escape sequence would drive the terminal of the person reading the error.  So
every message is made printable when the error is built (`printable`): a control character
becomes its Python escape (``\\x1b``, ``\\n``).
"""


def printable(text: str) -> str:
    """`text` with every non-printable character escaped as repr() would: one line, no control
    bytes (C0, DEL, C1, Unicode format characters such as bidi overrides, lone surrogates).
    Idempotent: the escapes themselves are printable, so escaping twice changes nothing."""
    if text.isprintable():  # the usual case, at C speed
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


class OCIError(Exception):
    """A failure reported to the user as a single line; exit status 1."""

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (printable(args[0]),)
        super().__init__(*args)


class ConfigError(OCIError):
    """A config.json value that is wrong; the message starts with its JSON path."""

    def __init__(self, path: str, msg: str):
        self.path = path
        self.msg = msg
        super().__init__(f"{path}: {msg}" if path else msg)


def os_words(err: OSError) -> str:
    """The kernel's words for an OSError as runc prints them: strerror with a lower-case first
    letter ("no such file or directory"; Go's own table reads so, "remote I/O error" included).
    An OSError raised without an errno (strerror None) gives its message, never a crash."""
    reason = err.strerror or str(err) or "unknown error"
    return reason[:1].lower() + reason[1:]


def os_error(what: str, err: OSError) -> OCIError:
    """Wrap an OSError as "<what>: <the kernel's words>" (`os_words`)."""
    return OCIError(f"{what}: {os_words(err)}")


def describe(err: BaseException) -> str:
    """One line for an exception nobody turned into an OCIError (the CLI's last resort): the
    kernel's words for an OSError (with the file it names), the reason for the Python errors
    that bad input can still cause, else "internal error: <type>: <message>"."""
    if isinstance(err, OCIError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        reason = os_words(err)
        names = [n for n in (err.filename, err.filename2) if n is not None]
        return printable(": ".join([*(str(n) for n in names), reason]))
    if isinstance(err, MemoryError):
        return "out of memory"
    if isinstance(err, RecursionError):
        return "input nested too deeply"
    return printable(f"internal error: {type(err).__name__}: {err}")
