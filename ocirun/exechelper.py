"""Protection against CVE-2019-5736: never let the container run (and rewrite) our interpreter.

A container binary that is a script starting `#!/proc/self/exe` makes the kernel run *the
exec'ing process's own executable* as its interpreter.  For ocirun that is the host's Python,
which the container could then reopen through /proc/<pid>/exe and overwrite once it is idle.

Our answer costs one tiny execve instead of a second interpreter start: the last thing the
container's process does in Python is execveat() a ~150-byte static ELF held in a *sealed
memfd*; that stub then execve()s the real binary.  At that moment /proc/self/exe is the sealed
memfd, so a `#!/proc/self/exe` trick only ever reaches the stub, which cannot be written
(F_SEAL_WRITE) and holds nothing of the host.  The Python process itself is non-dumpable until
then, so its /proc/<pid>/exe cannot be opened by the container either.

The stub (x86_64): if argv[0][0] != MARK: exit_group(127); execve(argv[0]+1, &argv[1], envp).
It is called with argv = [MARK + path, *args], so the container sees exactly `args` as its argv.
The mark stops a `#!/proc/self/exe` script from looping through the stub forever: run as an
interpreter, the stub gets the script's interpreter path as argv[0] and refuses.
"""
from __future__ import annotations

import fcntl
import os

from . import kernel, linux

_CODE_X86_64 = bytes.fromhex(
    "488b7c2408"      # mov rdi, [rsp+8]        argv[0]: MARK + the path to exec
    "803f01"          # cmp byte [rdi], 1       called by us? (as a script interpreter it is not)
    "7518"            # jne fail
    "48ffc7"          # inc rdi                 skip the mark
    "488d742410"      # lea rsi, [rsp+16]       &argv[1]: the container's argv
    "488b0424"        # mov rax, [rsp]          argc
    "488d54c410"      # lea rdx, [rsp+rax*8+16] envp
    "b83b000000"      # mov eax, 59             execve
    "0f05"            # syscall
    "bf7f000000"      # fail: mov edi, 127      (execve failed, or not called by us)
    "b8e7000000"      # mov eax, 231            exit_group
    "0f05"            # syscall
)

_MARK = "\x01"
_BASE = 0x400000
_EHDR = 64
_PHDR = 56

MFD_CLOEXEC = 1
MFD_ALLOW_SEALING = 2
F_ADD_SEALS = 1033
F_GET_SEALS = 1034
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8
ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


def _le(*fields: tuple[int, int]) -> bytes:
    """(size, value) pairs as little-endian fields (without `struct`: ~0.3 ms to import)."""
    return b"".join(value.to_bytes(size, "little") for size, value in fields)


def stub_elf() -> bytes | None:
    """The static ELF stub for this machine, or None where we have none (then: plain execve)."""
    if linux.MACHINE != "x86_64":
        return None
    code = _CODE_X86_64
    size = _EHDR + _PHDR + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + _le((2, 2), (2, 0x3E), (4, 1), (8, _BASE + _EHDR + _PHDR), (8, _EHDR), (8, 0), (4, 0),
                       (2, _EHDR), (2, _PHDR), (2, 1), (2, 0), (2, 0), (2, 0))
    phdr = _le((4, 1), (4, 5), (8, 0), (8, _BASE), (8, _BASE), (8, size), (8, size), (8, 0x1000))
    return ehdr + phdr + code


def sealed_stub_fd() -> int:
    """A close-on-exec, fully sealed memfd holding the stub; -1 where no stub exists."""
    elf = stub_elf()
    if elf is None:
        return -1
    fd = linux.memfd_create("ocirun-exec", MFD_CLOEXEC | MFD_ALLOW_SEALING)
    try:
        os.write(fd, elf)
        os.fchmod(fd, 0o555)
        fcntl.fcntl(fd, F_ADD_SEALS, ALL_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def exec_through_stub(stub_fd: int, path: str, args: list[str], env: dict[str, str]) -> None:
    """Replace this process with `path args` by way of the sealed stub (never returns on success)."""
    argv = [_MARK + path, *args]
    try:
        kernel.KERNEL.execveat(stub_fd, "", argv, env, linux.AT_EMPTY_PATH)
    except OSError:
        # A seccomp profile may allow execve but not execveat: go through the fd's proc path.
        kernel.KERNEL.execve(f"/proc/self/fd/{stub_fd}", argv, env)
