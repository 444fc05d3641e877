"""One error convention for the whole runtime.

Every failure the user should see is an `OCIError`: the CLI prints its message as
one line (and appends it as a fresh error line to `--log`), then exits 1.  Nothing
else may escape to the user as a traceback.  `ConfigError` carries the JSON path
of the config.json field at fault, e.g. ``mounts[3].destination: must be absolute``.
"""


class OCIError(Exception):
    """A failure reported to the user as a single line; exit status 1."""


class ConfigError(OCIError):
    """A config.json value that is wrong; the message starts with its JSON path."""

    def __init__(self, path: str, msg: str):
        self.path = path
        self.msg = msg
        super().__init__(f"{path}: {msg}" if path else msg)


def os_error(what: str, err: OSError) -> OCIError:
    """Wrap an OSError as "<what>: <strerror>" (the kernel's words, lower-case as runc prints them)."""
    reason = err.strerror or str(err)
    return OCIError(f"{what}: {reason[:1].lower()}{reason[1:]}")
