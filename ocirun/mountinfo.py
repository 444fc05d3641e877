"""Mounts as the kernel reports them: /proc/<pid>/mountinfo parsed, and statfs(2)'s f_type.

Every reader of mountinfo in the runtime goes through `parse` / `read`, so the format's two
traps are handled once: the optional fields (`shared:N`, `master:N`, …) make the line's length
vary until the lone "-", and the path fields (root, mount point, source, fstype) carry space,
tab, newline and backslash as octal escapes (\\040 \\011 \\012 \\134; proc_namespace.c,
`mangle`), which `unescape` turns back into the characters.  The super options are left as
the kernel wrote them: each filesystem escapes its own (",=" included), and callers only
compare them with names that need no escaping.

Only `os` at the top: the cgroup commands (`delete`, `pause`, `events`…) read the layout
through here without the syscall layer; `fs_magic` imports `ocirun.linux` on first use.
"""
from __future__ import annotations

import os
import sys

# statfs(2) f_type values (include/uapi/linux/magic.h)
PROC_SUPER_MAGIC = 0x9FA0
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270
TMPFS_MAGIC = 0x01021994


class Mount:
    """One line of mountinfo (proc(5)): the fields the runtime reads, paths unescaped."""

    __slots__ = ("mount_id", "parent_id", "major_minor", "root", "mountpoint", "options",
                 "optional", "fstype", "source", "super_options")

    def __init__(self, mount_id: int, parent_id: int, major_minor: str, root: str, mountpoint: str,
                 options: str, optional: tuple[str, ...], fstype: str, source: str,
                 super_options: str) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.major_minor = major_minor
        self.root = root                    # the path inside its filesystem that is mounted
        self.mountpoint = mountpoint        # where, relative to the reader's root
        self.options = options              # per-mount options ("rw,nosuid,relatime")
        self.optional = optional            # ("shared:1", "master:2", …)
        self.fstype = fstype
        self.source = source
        self.super_options = super_options  # per-superblock options, as the filesystem wrote them

    def __repr__(self) -> str:
        return f"Mount({self.mount_id}, {self.fstype!r}, {self.root!r} on {self.mountpoint!r})"


def unescape(s: str) -> str:
    """Undo the kernel's octal escapes (\\NNN, three octal digits); anything else is kept."""
    if "\\" not in s:
        return s  # the usual case
    out, i, n = [], 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and _is_octal(s[i + 1:i + 4]):
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_octal(digits: str) -> bool:
    return len(digits) == 3 and all("0" <= d <= "7" for d in digits)


def parse_line(line: str) -> Mount | None:
    """One mountinfo line, or None for a line that is not one.

    Split on single spaces, not on runs of white space: an empty source (a mount made with "")
    shows as two spaces in a row, and must keep the super options in their place."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)  # after the six fixed fields and the optional ones
        mount_id, parent_id = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    right = fields[sep + 1:]
    if len(right) < 2:
        return None
    return Mount(mount_id, parent_id, fields[2], unescape(fields[3]), unescape(fields[4]), fields[5],
                 tuple(fields[6:sep]), unescape(right[0]), unescape(right[1]),
                 right[2] if len(right) > 2 else "")


def parse(text: str) -> list[Mount]:
    """Every mount of a mountinfo text, in the kernel's order (parents before their children)."""
    return [m for m in map(parse_line, text.splitlines()) if m is not None]


def read(pid: int | str = "self") -> list[Mount]:
    """The mounts of /proc/<pid>/mountinfo (by default this process's mount namespace)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse(f.read())


def fs_magic(path: str) -> int:
    """statfs(2).f_type of `path`: which filesystem it is on (os has no statfs)."""
    from . import linux  # here, not at the top: see the module's comment
    buf = bytearray(256)  # struct statfs is 120 bytes on 64-bit Linux
    linux.check(linux.syscall(linux.NR_STATFS, os.fsencode(path), buf), path)
    # f_type is the first member, a native long (__fsword_t); the magic numbers fit 32 bits.
    return int.from_bytes(buf[:8], sys.byteorder) & 0xFFFFFFFF
