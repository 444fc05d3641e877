"""Error messages are one printable line (issue 13, item 11): config values echoed in them must not
drive the reader's terminal or forge log lines."""
from __future__ import annotations

import errno

import pytest

from ocirun.errors import ConfigError, OCIError, describe, printable


@pytest.mark.parametrize("raw, shown", [
    ("plain /path: ok é 中", "plain /path: ok é 中"),
    ("a\nb\r\tc", "a\\nb\\r\\tc"),
    ("\x1b[2J\x07\x00\x7f", "\\x1b[2J\\x07\\x00\\x7f"),
    ("\x9b31m", "\\x9b31m"),                       # C1 CSI
    ("\u202eevil\u200b", "\\u202eevil\\u200b"),    # bidi override, zero-width space
    ("\udcff", "\\udcff"),                         # lone surrogate
    ("\U000e0041", "\\U000e0041"),                 # tag character (format)
])
def test_printable(raw, shown):
    assert printable(raw) == shown
    assert printable(shown) == shown  # idempotent: messages relayed twice are not escaped twice
    assert OCIError(raw).args == (shown,) and str(OCIError(raw)) == shown


def test_config_error_is_escaped_too():
    e = ConfigError("process.args[0]", "\x1b]0;title\x07 not found")
    assert str(e) == "process.args[0]: \\x1b]0;title\\x07 not found"


def test_describe():
    assert describe(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert describe(FileNotFoundError(errno.ENOENT, "No such file or directory", "/a\nb")) == \
        "/a\\nb: no such file or directory"
    assert describe(ValueError("x\x1by")) == "internal error: ValueError: x\\x1by"
    assert describe(MemoryError()) == "out of memory"
    assert describe(OCIError("already one")) == "already one"
