"""The kernel's formats and numbers, kept once: the mountinfo parser, fs_magic, the syscall
tables per architecture (and the refusal of any other), and the OSError words."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from ocirun import errors, linux, mountinfo

# Lines as the kernel writes them (proc(5) and proc_namespace.c): optional fields of any number,
# paths with octal escapes, an empty source (two spaces in a row), a line without optional fields.
SAMPLE = (
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    "40 36 0:40 / /run/a\\040b\\011c\\012d\\134e rw shared:7 master:3 propagate_from:2 - tmpfs tmpfs rw,size=1k\n"
    "41 36 0:41 / /srv/empty rw - fuse  rw,user_id=0\n"
    "42 36 0:42 /sub /x rw - cgroup2 cgroup2\n"
    "garbage that is not mountinfo\n"
    "\n"
)


def test_parse_fields():
    mounts = mountinfo.parse(SAMPLE)
    assert [m.mount_id for m in mounts] == [36, 40, 41, 42]
    first = mounts[0]
    assert (first.parent_id, first.major_minor, first.root, first.mountpoint) == (35, "98:0", "/mnt1", "/mnt2")
    assert (first.options, first.optional) == ("rw,noatime", ("master:1",))
    assert (first.fstype, first.source, first.super_options) == ("ext3", "/dev/root", "rw,errors=continue")


def test_parse_unescapes_every_path_escape():
    m = mountinfo.parse(SAMPLE)[1]
    assert m.mountpoint == "/run/a b\tc\nd\\e"
    assert m.optional == ("shared:7", "master:3", "propagate_from:2")


def test_parse_keeps_fields_in_place_with_an_empty_source():
    m = mountinfo.parse(SAMPLE)[2]
    assert (m.fstype, m.source, m.super_options) == ("fuse", "", "rw,user_id=0")


def test_parse_without_super_options():
    m = mountinfo.parse(SAMPLE)[3]
    assert (m.root, m.fstype, m.super_options) == ("/sub", "cgroup2", "")


@pytest.mark.parametrize("raw, want", [
    ("plain", "plain"),
    (r"\040\011\012\134", " \t\n\\"),
    (r"a\\b", r"a\\b"),           # a backslash not followed by three octal digits stays
    (r"a\08", r"a\08"),           # 8 is not octal
    (r"trail\04", r"trail\04"),   # too short
    (r"\101", "A"),               # any octal escape, not only the four the kernel uses
])
def test_unescape(raw, want):
    assert mountinfo.unescape(raw) == want


def test_read_own_mountinfo_has_root():
    mounts = mountinfo.read()
    assert any(m.mountpoint == "/" for m in mounts)
    assert all(isinstance(m.mount_id, int) for m in mounts)


def test_fs_magic():
    assert mountinfo.fs_magic("/proc") == mountinfo.PROC_SUPER_MAGIC
    with pytest.raises(OSError) as e:
        mountinfo.fs_magic("/nonexistent/ocirun-test")
    assert e.value.errno == errno.ENOENT and e.value.filename == "/nonexistent/ocirun-test"


# --------------------------------------------------------------------------- architectures

def test_both_tables_name_the_same_syscalls():
    x86, arm = linux.syscall_numbers("x86_64"), linux.syscall_numbers("aarch64")
    assert x86.keys() == arm.keys()
    assert arm["pivot_root"] == 41 and x86["pivot_root"] == 155  # spot checks against the kernel


def test_unknown_architecture_is_refused_by_name():
    with pytest.raises(errors.OCIError) as e:
        linux.syscall_numbers("riscv64")
    msg = str(e.value)
    assert "riscv64" in msg and "x86_64" in msg and "aarch64" in msg and "\n" not in msg


def test_import_on_an_unknown_architecture_fails_clearly():
    """Importing the syscall layer on a machine it has no numbers for raises the OCIError (which
    the CLI prints as one line) instead of using x86_64's or aarch64's numbers."""
    code = (
        "import os\n"
        "real = os.uname()\n"
        "os.uname = lambda: os.uname_result((real.sysname, real.nodename, real.release, real.version, 'mips64'))\n"
        "from ocirun.errors import OCIError\n"
        "try:\n"
        "    import ocirun.linux\n"
        "except OCIError as e:\n"
        "    print('refused:', e)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: unsupported CPU architecture 'mips64'"), out.stdout


def test_this_machine_is_known():
    assert linux.MACHINE == os.uname().machine
    assert linux.NR_SETNS == linux.syscall_numbers(linux.MACHINE)["setns"]


# --------------------------------------------------------------------------- OSError words

@pytest.mark.parametrize("err, want", [
    (OSError(errno.ENOENT, "No such file or directory"), "no such file or directory"),
    (OSError(errno.EREMOTEIO, "Remote I/O error"), "remote I/O error"),
    (OSError("plain text"), "plain text"),              # strerror None: no crash
    (OSError(), "unknown error"),
    (PermissionError(errno.EPERM, "Operation not permitted", "/x"), "operation not permitted"),
])
def test_os_words(err, want):
    assert errors.os_words(err) == want
