"""cgroup v2 device control: a BPF_PROG_TYPE_CGROUP_DEVICE program built from a `Policy`.

cgroup v2 has no devices files; the kernel asks every BPF program attached to the cgroup
(and to its ancestors) whether an open/mknod of a device may go on.  The program gets a
`struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where access_type
is (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*, and returns 1 (allow) or 0 (deny).

The program we emit (the same shape crun and runc use):

    r2 = ctx->access_type & 0xffff      device type (1 block, 2 char)
    r3 = ctx->access_type >> 16         requested access (1 mknod, 2 read, 4 write)
    r4 = ctx->major; r5 = ctx->minor
    for each exception:                 skip to the next block on any mismatch
        if r2 != TYPE goto next         (absent for type "a")
        if (r3 & ACCESS) != r3 goto next   the request must lie within the rule's access
        if r4 != MAJOR goto next        (absent for a wildcard)
        if r5 != MINOR goto next        (absent for a wildcard)
        return EFFECT
    return DEFAULT

Exceptions of a `Policy` all have the same effect, so their order does not matter.

Loading uses bpf(2) through ocirun.linux: BPF_PROG_LOAD (license "Apache"), then BPF_PROG_ATTACH on
an O_DIRECTORY fd of the cgroup with BPF_F_ALLOW_MULTI.  `install` replaces what we attached
before (an `update`): it lists the programs on the cgroup with BPF_PROG_QUERY, attaches the
new one, then detaches the old ones; for the moment both are attached an access must pass
both, so nothing is ever more open than either policy.
"""
from __future__ import annotations

import errno
import os
import struct

from .. import linux
from ..errors import OCIError, os_words
from .devices import WILDCARD, Policy

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
LICENSE = b"Apache\0"

# Opcodes (class | size/op | source) of the few instructions we need.
LDX_MEM_W = 0x61     # dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54   # dst &= imm
ALU32_RSH_K = 0x74   # dst >>= imm
ALU32_MOV_K = 0xB4   # dst = imm
ALU32_MOV_X = 0xBC   # dst = src
JMP_JNE_K = 0x55     # if dst != imm goto pc + off
JMP_JNE_X = 0x5D     # if dst != src goto pc + off
JMP_EXIT = 0x95


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _access_bits(access: str) -> int:
    return ((ACC_READ if "r" in access else 0) | (ACC_WRITE if "w" in access else 0)
            | (ACC_MKNOD if "m" in access else 0))


def _block(type_: str, major: int, minor: int, access: str, effect: int) -> list[bytes]:
    """One exception: the checks (each a jump to the next block) and the return."""
    checks: list[tuple] = []  # (op, dst, src, imm), a jump whose offset is filled in below
    pre: list[list[bytes]] = []  # instructions before each check
    if type_ != "a":
        pre.append([])
        checks.append((JMP_JNE_K, 2, 0, DEV_BLOCK if type_ == "b" else DEV_CHAR))
    bits = _access_bits(access)
    if bits != ACC_READ | ACC_WRITE | ACC_MKNOD:
        pre.append([_insn(ALU32_MOV_X, 1, 3), _insn(ALU32_AND_K, 1, imm=bits)])
        checks.append((JMP_JNE_X, 1, 3, 0))
    if major != WILDCARD:
        pre.append([])
        checks.append((JMP_JNE_K, 4, 0, major))
    if minor != WILDCARD:
        pre.append([])
        checks.append((JMP_JNE_K, 5, 0, minor))
    tail = [_insn(ALU32_MOV_K, 0, imm=effect), _insn(JMP_EXIT)]
    sizes = [len(p) + 1 for p in pre]
    out: list[bytes] = []
    for i, (op, dst, src, imm) in enumerate(checks):
        out += pre[i]
        after = sum(sizes[i + 1:]) + len(tail)  # instructions between this jump and the next block
        out.append(_insn(op, dst, src, after, _s32(imm)))
    return out + tail


def _s32(v: int) -> int:
    """imm is a signed 32-bit field; device numbers above 2^31 wrap (the kernel compares u32 loads
    against the sign-extended imm, so such numbers cannot match anyway — none exist in practice)."""
    return v - (1 << 32) if v >= 1 << 31 else v


def build_program(policy: Policy) -> bytes:
    """The program's instructions for `policy`, ready for BPF_PROG_LOAD."""
    insns = [
        _insn(LDX_MEM_W, 2, 1, 0),
        _insn(ALU32_AND_K, 2, imm=0xFFFF),
        _insn(LDX_MEM_W, 3, 1, 0),
        _insn(ALU32_RSH_K, 3, imm=16),
        _insn(LDX_MEM_W, 4, 1, 4),
        _insn(LDX_MEM_W, 5, 1, 8),
    ]
    effect = 0 if policy.default_allow else 1
    for (t, ma, mi), acc in sorted(policy.exceptions.items()):
        insns += _block(t, ma, mi, acc, effect)
    insns += [_insn(ALU32_MOV_K, 0, imm=1 if policy.default_allow else 0), _insn(JMP_EXIT)]
    return b"".join(insns)


# --------------------------------------------------------------------------- bpf(2)

def _bpf(cmd: int, attr: bytearray) -> int:
    return linux.check(linux.syscall(linux.NR_BPF, cmd, attr, len(attr)))


def _attr(size: int = 128) -> bytearray:
    return bytearray(size)  # zero-filled: unused fields must be 0


def load(program: bytes) -> int:
    """BPF_PROG_LOAD; returns the program fd.  A verifier refusal carries its log."""
    log = bytearray(65536)
    attr = _attr()
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf (program, LICENSE and log
    # stay referenced here while the kernel reads their addresses)
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                     linux.address_of(program), linux.address_of(LICENSE), 0, 0, 0)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        if e.errno != errno.EACCES and e.errno != errno.EINVAL:
            raise
    struct.pack_into("<IIQ", attr, 24, 1, len(log), linux.address_of(log))  # again, with the verifier's log
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        text = bytes(log).split(b"\0", 1)[0].decode(errors="replace").strip().splitlines()
        raise OSError(e.errno, f"{e.strerror} (verifier: {text[-1] if text else 'no log'})") from None


def attach(cgroup_fd: int, prog_fd: int) -> None:
    attr = _attr()
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
    _bpf(BPF_PROG_ATTACH, attr)


def detach(cgroup_fd: int, prog_fd: int) -> None:
    attr = _attr()
    struct.pack_into("<III", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE)
    _bpf(BPF_PROG_DETACH, attr)


def query(cgroup_fd: int) -> list[int]:
    """Ids of the device programs attached to this cgroup itself (not inherited ones)."""
    ids = bytearray(4 * 64)
    attr = _attr()
    # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, linux.address_of(ids), len(ids) // 4)
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(struct.unpack_from(f"<{count}I", ids))


def prog_fd_by_id(prog_id: int) -> int:
    attr = _attr()
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr)


def install(cgroup_dir: str, policy: Policy, field: str = "linux.resources.devices", replace: bool = True) -> None:
    """Attach the program for `policy` to `cgroup_dir`, replacing device programs already there
    (`replace=False`: beside them; systemd's own filter on a fresh scope stays)."""
    try:
        dfd = os.open(cgroup_dir, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"{field}: opening {cgroup_dir}: {os_words(e)}") from None
    try:
        try:
            old = query(dfd) if replace else []
            pfd = load(build_program(policy))
        except OSError as e:
            raise OCIError(f"{field}: loading the eBPF device filter: {os_words(e)}") from None
        try:
            attach(dfd, pfd)
        except OSError as e:
            raise OCIError(f"{field}: attaching the eBPF device filter to {cgroup_dir}: {os_words(e)}") from None
        finally:
            os.close(pfd)
        for prog_id in old:
            _detach_id(dfd, prog_id, cgroup_dir, field)
    finally:
        os.close(dfd)


def _detach_id(dfd: int, prog_id: int, cgroup_dir: str, field: str) -> None:
    try:
        fd = prog_fd_by_id(prog_id)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return  # gone meanwhile
        raise OCIError(f"{field}: replacing the old device filter on {cgroup_dir}: {os_words(e)}") from None
    try:
        detach(dfd, fd)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise OCIError(f"{field}: detaching the old device filter from {cgroup_dir}: {os_words(e)}") from None
    finally:
        os.close(fd)
