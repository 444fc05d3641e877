"""linux.seccomp: compile a runtime-spec profile to a BPF program, install it just before execve.

Two halves, split by *when* they run:

- `compile_filter(profile)` runs in the runtime process, before it forks.  It checks the profile
  (errors name the JSON path), builds the rules with libseccomp (pyseccomp), and exports the
  finished classic-BPF program as bytes.  Programs are cached on disk (see "Cache" below), and a
  cache hit never imports pyseccomp.
- `Filter.load()` runs in the container's init (or in `exec`'s process) as the very last step
  before execve: after pivot_root, single-threaded, with no imports and no file access.  It is one
  seccomp(2) call with a program prepared in advance, so whatever the profile forbids (`close`,
  `write`, `getcwd`...) cannot trip the runtime on its way out.  Loading the raw program ourselves
  (as runc's patchbpf does), rather than calling seccomp_load, is also what lets us pass the flags the
  spec asks for and get the notify listener fd back.

Semantics follow runc (libcontainer/seccomp): syscall names unknown to libseccomp are skipped (a
debug line), a rule whose action equals the default action is skipped (libseccomp refuses it),
several conditions on one rule are ANDed, except that when two of them test the same argument each
condition becomes a rule of its own (libseccomp cannot AND two tests of one argument).  As runc
does, the filter answers ENOSYS rather than the default errno for syscalls newer than any the
profile names (see `_enosys_stub`), so a libc can fall back from a syscall the profile predates.

Cache: /run/ocirun-cache/seccomp/<sha256>.bpf, the key covering the canonical JSON of the profile,
the libseccomp version, the machine, the kernel release and `_COMPILER_VERSION`.  The directory must
be ours and not group/world writable, or the cache is not used (a planted program would be
a sandbox escape).  Files are written whole and renamed into place.

The listener (SCMP_ACT_NOTIFY with `listenerPath`): the runtime connects to the socket on the host
before it forks (`connect_listener`); the init builds the payload before loading
(`listener_payload`), loads the filter (which returns the notify fd), then sends both over the
already-connected socket (`send_listener_fd`) — one sendmsg(2), the only syscall between the load
and the moment the agent holds the fd, which is why NOTIFY on `sendmsg` is refused.  Every later
syscall of ours may be notified: the agent answers it.  This holds in both orders: with
no_new_privs the load is the last step before execve (after `start`); without it the filter is
loaded while still privileged, during `create` (process/become.py), and the init asks the runtime
for the state first (process/channel.py, `listener_state`).  NOTIFY without `listenerPath` is
refused (process/become.py SeccompStep), as by runc.
"""
from __future__ import annotations

import errno as _errno
import os
import struct
import sys

from . import jsonio
from .errors import ConfigError, OCIError, os_error

TYPE_CHECKING = False  # typing.TYPE_CHECKING without `typing` (ARCHITECTURE.md, Startup speed)
if TYPE_CHECKING:
    from typing import TypeGuard

__all__ = ["Filter", "ListenerSend", "compile_filter", "connect_listener", "features", "libseccomp_version",
           "listener_payload", "notify_supported", "prepare", "send_listener_fd"]

_COMPILER_VERSION = "1"   # bump when the program we generate for a given profile changes
DEFAULT_CACHE_DIR = "/run/ocirun-cache/seccomp"

# ---------------------------------------------------------------------------- the spec's names

_KILL_THREAD = 0x00000000
_KILL_PROCESS = 0x80000000
_TRAP = 0x00030000
_ERRNO = 0x00050000
_NOTIFY = 0x7FC00000
_TRACE = 0x7FF00000
_LOG = 0x7FFC0000
_ALLOW = 0x7FFF0000

_ACTIONS = {
    "SCMP_ACT_KILL": _KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": _KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _KILL_PROCESS,
    "SCMP_ACT_TRAP": _TRAP,
    "SCMP_ACT_ERRNO": _ERRNO,
    "SCMP_ACT_TRACE": _TRACE,
    "SCMP_ACT_ALLOW": _ALLOW,
    "SCMP_ACT_LOG": _LOG,
    "SCMP_ACT_NOTIFY": _NOTIFY,
}
_TAKES_ERRNO = (_ERRNO, _TRACE)

# AUDIT_ARCH_* values, which are also libseccomp's SCMP_ARCH_* values.
_LE, _64 = 0x40000000, 0x80000000
_ARCHES = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _64 | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64 | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64,
    "SCMP_ARCH_MIPS64N32": 8 | _64 | 0x20000000,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64 | _LE | 0x20000000,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64,
    "SCMP_ARCH_PPC64LE": 21 | _64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _64,
    "SCMP_ARCH_RISCV64": 243 | _64 | _LE,
}

_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

# seccomp(2) flags (linux/seccomp.h)
_FLAG_TSYNC = 1
_FLAG_LOG = 2
_FLAG_SPEC_ALLOW = 4
_FLAG_NEW_LISTENER = 8
_FLAG_WAIT_KILLABLE_RECV = 32
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": _FLAG_WAIT_KILLABLE_RECV,
}

_MAX_U64 = (1 << 64) - 1
_ENOSYS = 38
_SCMP_FLTATR_CTL_OPTIMIZE = 8
_SCMP_FLTATR_CTL_NNP = 3

# ---------------------------------------------------------------------------- the syscall

_SECCOMP_SET_MODE_FILTER = 1


def _seccomp_set_filter(flags: int, prog: bytes | None) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, prog): the result, or -errno (linux.syscall)."""
    # Imported here, not at the top: `ocirun features` reads this module's tables without
    # the syscall layer; the init and exec's joiner, which load filters, already hold it.
    from . import linux
    return linux.syscall(linux.NR_SECCOMP, _SECCOMP_SET_MODE_FILTER, flags, prog)


# ---------------------------------------------------------------------------- the filter


class Filter:
    """A compiled seccomp program, ready to install with one seccomp(2) call.

    `program` is the classic-BPF program (8 bytes per instruction), `flags` the seccomp(2) flags
    `load()` passes, `uses_notify` whether load returns a notify listener fd, `listener_path` and
    `listener_metadata` the profile's fields, `from_cache` whether the program came from the cache.
    """

    def __init__(self, program: bytes, flags: int, uses_notify: bool,
                 listener_path: str | None = None, listener_metadata: str | None = None,
                 from_cache: bool = False, notify_rule: str | None = None):
        self.program = program
        self.flags = flags
        self.uses_notify = uses_notify
        self.notify_rule = notify_rule  # JSON path of the first SCMP_ACT_NOTIFY rule
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata
        self.from_cache = from_cache
        # Everything load() touches is allocated now, in the runtime process: struct sock_fprog
        # (unsigned short len, padding, the filter's address), pointing into self.program.
        from . import linux
        self._fprog = ((len(program) // 8).to_bytes(2, sys.byteorder) + bytes(6)
                       + linux.address_of(program).to_bytes(8, sys.byteorder))

    def load(self) -> int:
        """Install the filter in the calling thread; return the notify listener fd, or -1.

        Needs no_new_privs or CAP_SYS_ADMIN (the kernel's rule: EACCES otherwise).  The listener fd
        is close-on-exec: send it on (`send_listener_fd`) before execve.
        """
        rc = _seccomp_set_filter(self.flags, self._fprog)
        if rc < 0:  # -errno
            raise os_error("seccomp: load the filter", OSError(-rc, os.strerror(-rc)))
        return rc if self.uses_notify else -1


# ---------------------------------------------------------------------------- compile


class _Rule:
    __slots__ = ("path", "names", "action", "conds")

    def __init__(self, path: str, names: list[str], action: int, conds: list[tuple[int, int, int, int]]):
        self.path = path
        self.names = names
        self.action = action
        self.conds = conds


class _Plan:
    """A checked profile, in numbers."""

    def __init__(self):
        self.default_action = 0
        self.arches: list[int] = []
        self.flags = 0
        self.rules: list[_Rule] = []
        self.uses_notify = False
        self.listener_path: str | None = None
        self.listener_metadata: str | None = None


def compile_filter(profile: dict, json_path: str = "linux.seccomp",
                   cache_dir: str | None = DEFAULT_CACHE_DIR) -> Filter:
    """Check `profile` (a runtime-spec `linux.seccomp` object) and compile it to a `Filter`.

    Raises ConfigError (path starting with `json_path`) for a bad profile and OCIError when
    libseccomp is missing or refuses the profile.  `cache_dir=None` turns the on-disk cache off.
    """
    plan = _check_profile(profile, json_path)
    _check_kernel_takes_flags(plan.flags, json_path)
    key = _cache_key(profile) if cache_dir else None
    program = _cache_read(cache_dir, key) if cache_dir and key else None
    from_cache = program is not None
    if program is None:
        program = _build_program(plan, json_path)
        if cache_dir and key:
            _cache_write(cache_dir, key, program)
    _check_kernel_takes_length(program, json_path)
    notify_rule = next((r.path for r in plan.rules if r.action == _NOTIFY), None)
    return Filter(program, plan.flags, plan.uses_notify, plan.listener_path,
                  plan.listener_metadata, from_cache, notify_rule)


def _check_profile(profile, p: str) -> _Plan:
    if not isinstance(profile, dict):
        raise ConfigError(p, "must be an object")
    plan = _Plan()
    default_errno = _errno_ret(profile, "defaultErrnoRet", p)
    plan.default_action = _action(profile.get("defaultAction"), default_errno, f"{p}.defaultAction",
                                  f"{p}.defaultErrnoRet")
    if plan.default_action == _NOTIFY:
        raise ConfigError(f"{p}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action")
    plan.arches = [_lookup(_ARCHES, a, f"{p}.architectures[{i}]", "architecture")
                   for i, a in enumerate(_list(profile, "architectures", p))]
    for i, f in enumerate(_list(profile, "flags", p)):
        plan.flags |= _lookup(_FLAGS, f, f"{p}.flags[{i}]", "flag")
    plan.rules = [_check_rule(s, f"{p}.syscalls[{i}]") for i, s in enumerate(_list(profile, "syscalls", p))]
    _check_listener(profile, plan, p)
    return plan


def _check_rule(entry, p: str) -> _Rule:
    if not isinstance(entry, dict):
        raise ConfigError(p, "must be an object")
    names = entry.get("names")
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{p}.names", "must be a non-empty list of syscall names")
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{p}.names[{j}]", "must be a syscall name")
    action = _action(entry.get("action"), _errno_ret(entry, "errnoRet", p), f"{p}.action", f"{p}.errnoRet")
    conds = [_check_arg(a, f"{p}.args[{j}]") for j, a in enumerate(_list(entry, "args", p))]
    if len(conds) > 6:
        raise ConfigError(f"{p}.args", "at most 6 argument conditions per rule")
    return _Rule(p, names, action, conds)


def _check_arg(arg, p: str) -> tuple[int, int, int, int]:
    if not isinstance(arg, dict):
        raise ConfigError(p, "must be an object")
    index = arg.get("index")
    if not _is_uint(index) or index > 5:
        raise ConfigError(f"{p}.index", f"must be a syscall argument index 0..5, not {index!r}")
    value = arg.get("value")
    if not _is_uint(value) or value > _MAX_U64:
        raise ConfigError(f"{p}.value", f"must be an unsigned 64-bit integer, not {value!r}")
    value_two = arg.get("valueTwo", 0)
    if not _is_uint(value_two) or value_two > _MAX_U64:
        raise ConfigError(f"{p}.valueTwo", f"must be an unsigned 64-bit integer, not {value_two!r}")
    op = _lookup(_OPS, arg.get("op"), f"{p}.op", "operator")
    # libseccomp's MASKED_EQ takes (mask, value): the spec's value is the mask, as runc passes it.
    return index, op, value, value_two


def _check_listener(profile: dict, plan: _Plan, p: str) -> None:
    path = profile.get("listenerPath")
    meta = profile.get("listenerMetadata")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"{p}.listenerPath", "must be a string")
    if meta is not None and not isinstance(meta, str):
        raise ConfigError(f"{p}.listenerMetadata", "must be a string")
    if meta and not path:
        raise ConfigError(f"{p}.listenerMetadata", "must not be set without listenerPath")
    plan.uses_notify = any(r.action == _NOTIFY for r in plan.rules)
    if not plan.uses_notify:
        # The kernel refuses WAIT_KILLABLE_RECV without a listener; without NOTIFY it means nothing.
        plan.flags &= ~_FLAG_WAIT_KILLABLE_RECV
        return
    for r in plan.rules:
        if r.action == _NOTIFY and "sendmsg" in r.names:
            # The process that loads the filter sends the notify fd to the agent with sendmsg
            # right after the load: notified, it would wait for an agent that has no fd yet.
            # (runc refuses `write` instead: its init writes the fd's number to its parent.)
            raise ConfigError(f"{r.path}.action", "SCMP_ACT_NOTIFY cannot be used for the sendmsg syscall "
                              "(the runtime sends the notify fd to the agent with it)")
    plan.listener_path = path or None
    plan.listener_metadata = meta
    # TSYNC and NEW_LISTENER exclude each other; the loading process is single-threaded anyway.
    plan.flags = (plan.flags & ~_FLAG_TSYNC) | _FLAG_NEW_LISTENER


def _action(name, errno_ret, p: str, errno_path: str) -> int:
    if name is None:
        raise ConfigError(p, "is required")
    action = _lookup(_ACTIONS, name, p, "action")
    if action in _TAKES_ERRNO:
        return action | (_errno_default(errno_ret))
    if errno_ret is not None:
        raise ConfigError(errno_path, f"{name} takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)")
    return action


def _errno_default(errno_ret) -> int:
    return _errno.EPERM if errno_ret is None else errno_ret


def _errno_ret(obj: dict, key: str, p: str):
    value = obj.get(key)
    if value is not None and (not _is_uint(value) or value > 0xFFFF):
        raise ConfigError(f"{p}.{key}", f"must be an errno number 0..65535, not {value!r}")
    return value


def _lookup(table: dict, name, p: str, what: str) -> int:
    if not isinstance(name, str) or name not in table:
        raise ConfigError(p, f"unknown {what} {name!r}")
    return table[name]


def _list(obj: dict, key: str, p: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{p}.{key}", "must be a list")
    return value


def _is_uint(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_BPF_MAXINSNS = 4096  # the kernel's limit for one classic-BPF seccomp program


def _check_kernel_takes_length(program: bytes, p: str) -> None:
    """seccomp(2) refuses a longer program with EINVAL; say so at create, not after `start`."""
    n = len(program) // 8
    if n > _BPF_MAXINSNS:
        raise ConfigError(p, f"the profile compiles to {n} BPF instructions; the kernel loads at most {_BPF_MAXINSNS}")


def _check_kernel_takes_flags(flags: int, p: str) -> None:
    """Refuse at create time, not at start, flags this kernel does not know.

    seccomp(2) checks flags before it reads the program: EFAULT for a NULL program means "flags
    fine" (libseccomp probes the same way).
    """
    if not flags:
        return
    rc = _seccomp_set_filter(flags, None)
    if rc >= 0:
        return  # cannot happen with a NULL program
    if -rc == _errno.EINVAL:
        raise ConfigError(f"{p}.flags", "this kernel does not support these seccomp flags")


# ---------------------------------------------------------------------------- libseccomp


def _build_program(plan: _Plan, p: str) -> bytes:
    """libseccomp builds the rules and exports the program; we prepend the ENOSYS stub."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as e:
        raise OCIError(f"{p}: seccomp needs libseccomp: {e}") from None
    f = _new_filter(pyseccomp, plan, p)
    skipped: list[str] = []
    nr_cache: dict[str, int] = {}
    for rule in plan.rules:
        for name in rule.names:
            nr = nr_cache.get(name)
            if nr is None:
                nr = nr_cache[name] = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
            if nr == -1:  # __NR_SCMP_ERROR: libseccomp does not know it on any arch
                skipped.append(name)
                continue
            if rule.action != plan.default_action:
                _add_rule(pyseccomp, f, rule, name, nr)
    if skipped:
        from . import log
        log.get().debug(f"seccomp: syscalls unknown to libseccomp ignored: {', '.join(sorted(set(skipped)))}")
    program = _export_bpf(f, p)
    stub = _enosys_stub(pyseccomp, plan, nr_cache)
    return stub + program if stub else program


def _new_filter(pyseccomp, plan: _Plan, p: str):
    try:
        f = pyseccomp.SyscallFilter(plan.default_action)
    except OSError as e:
        raise os_error(f"{p}.defaultAction: libseccomp refused it", e) from None
    f.set_attr(_SCMP_FLTATR_CTL_NNP, 0)  # we load the program ourselves; nnp is process.noNewPrivileges
    if len(plan.rules) > 32:
        # A binary tree of syscall numbers instead of a linear list (runc's threshold: libseccomp
        # <= 2.5.4 misbehaves with the tree and no rules).
        try:
            f.set_attr(_SCMP_FLTATR_CTL_OPTIMIZE, 2)
        except OSError:
            pass
    for i, arch in enumerate(plan.arches):
        try:
            f.add_arch(arch)
        except OSError as e:
            if e.errno != _errno.EEXIST:  # the native arch is always there
                raise os_error(f"{p}.architectures[{i}]: libseccomp refused it", e) from None
    return f


def _add_rule(pyseccomp, f, rule: _Rule, name: str, nr: int) -> None:
    args = [pyseccomp.Arg(i, op, a, b) for i, op, a, b in rule.conds]
    indexes = [c[0] for c in rule.conds]
    # libseccomp cannot AND two tests of the same argument: one rule per condition (runc's rule).
    groups = [[a] for a in args] if len(set(indexes)) < len(indexes) else [args]
    for group in groups:
        try:
            f.add_rule(rule.action, nr, *group)
        except OSError as e:
            raise os_error(f"{rule.path}: libseccomp refused the rule for {name}", e) from None


def _export_bpf(f, p: str) -> bytes:
    fd = os.memfd_create("ocirun-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(fd, "r+b", closefd=False) as mem:
            try:
                f.export_bpf(mem)
            except OSError as e:
                raise os_error(f"{p}: export the seccomp program", e) from None
            mem.seek(0)
            return mem.read()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- the ENOSYS stub
#
# With a deny-by-default profile, a syscall newer than the profile gets the default errno (often
# EPERM), and a libc that probes a new syscall then fails instead of falling back.  runc answers
# ENOSYS for any syscall number above the highest one the profile names, per architecture; so do we.
# The stub runs before libseccomp's program and only ever returns ENOSYS or falls through to it.

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGT_K = 0x25
_BPF_JSET_K = 0x45
_BPF_JA = 0x05
_BPF_RET_K = 0x06
_OFF_NR, _OFF_ARCH = 0, 4
_X32_SYSCALL_BIT = 0x40000000
_AUDIT_X86_64 = _ARCHES["SCMP_ARCH_X86_64"]
_AUDIT_X32 = _ARCHES["SCMP_ARCH_X32"]


def _insn(code: int, jt: int = 0, jf: int = 0, k: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _enosys_stub(pyseccomp, plan: _Plan, nr_cache: dict[str, int]) -> bytes:
    default = plan.default_action
    if default in (_ALLOW, _LOG) or (default & 0xFFFF0000) == _TRACE:
        return b""  # permissive: unknown syscalls already run
    if (default & 0xFFFF0000) == _ERRNO and default & 0xFFFF == _ENOSYS:
        return b""
    native = pyseccomp.system_arch()
    arches = list(dict.fromkeys([native, *plan.arches]))
    names = {n for n, nr in nr_cache.items() if nr != -1}
    highest = {a: _highest_nr(pyseccomp, a, names) for a in arches}
    highest = {a: nr for a, nr in highest.items() if nr is not None}
    if not highest:
        return b""
    return _stub_program(highest)


def _highest_nr(pyseccomp, arch: int, names: set[str]):
    best = None
    for name in names:
        nr = pyseccomp.resolve_syscall(arch, name)
        if nr >= 0 and (best is None or nr > best):
            best = nr
    return best


def _stub_program(highest: dict[int, int]) -> bytes:
    """Per arch: if arch matches and nr > highest: return ENOSYS.  x86_64 and x32 share an audit
    arch and differ by the x32 bit in nr, so they are one block with two limits."""
    blocks = []
    x86_64, x32 = highest.pop(_AUDIT_X86_64, None), highest.pop(_AUDIT_X32, None)
    if x86_64 is not None or x32 is not None:
        blocks.append(_x86_64_block(x86_64, x32))
    for arch, nr in highest.items():
        blocks.append(_arch_block(arch, [_insn(_BPF_JGT_K, 0, 0, nr)]))
    # Each block's last jump target "ENOSYS" is the instruction after all blocks + 1 (ret ENOSYS
    # sits right after the final `ja` over it).  Assemble back to front so offsets are known.
    out: list[bytes] = []
    for block in blocks:
        out.extend(block)
    body_len = len(out)
    enosys_at = body_len + 1   # [blocks][ja +1][ret ENOSYS][libseccomp's program]
    fixed = []
    for i, ins in enumerate(out):
        code, jt, jf, k = struct.unpack("=HBBI", ins)
        if jt == 0xFF:
            jt = enosys_at - i - 1
        fixed.append(struct.pack("=HBBI", code, jt, jf, k))
    fixed.append(_insn(_BPF_JA, k=1))
    fixed.append(_insn(_BPF_RET_K, k=_ERRNO | _ENOSYS))
    if any(struct.unpack("=HBBI", i)[1] > 255 for i in fixed):
        return b""
    return b"".join(fixed)


def _arch_block(arch: int, checks: list[bytes]) -> list[bytes]:
    """ld arch; jne arch → skip block; ld nr; checks (their jt=0xFF means "to ENOSYS")."""
    body = [_insn(_BPF_LD_W_ABS, k=_OFF_NR)] + [_mark_enosys(c) for c in checks]
    return [_insn(_BPF_LD_W_ABS, k=_OFF_ARCH), _insn(_BPF_JEQ_K, 0, len(body), arch)] + body


def _x86_64_block(x86_64, x32) -> list[bytes]:
    # nr has the x32 bit: compare with x32's highest, else with x86_64's.
    if x86_64 is None:
        x86_64 = _X32_SYSCALL_BIT - 1     # no x86_64 limit: never ENOSYS below the x32 range
    x32_limit = x32 if x32 is not None else 0xFFFFFFFF
    checks = [
        _insn(_BPF_JSET_K, 1, 0, _X32_SYSCALL_BIT),          # x32? skip the next
        _mark_enosys(_insn(_BPF_JGT_K, 0, 1, x86_64)),       # x86_64: > highest → ENOSYS, else out
        _mark_enosys(_insn(_BPF_JGT_K, 0, 0, x32_limit)),    # x32 (nr includes the bit)
    ]
    return _arch_block(_AUDIT_X86_64, checks)


def _mark_enosys(ins: bytes) -> bytes:
    code, _jt, jf, k = struct.unpack("=HBBI", ins)
    return struct.pack("=HBBI", code, 0xFF, jf, k)


# ---------------------------------------------------------------------------- the cache


def libseccomp_version() -> str:
    from . import linux
    version = linux.libseccomp_version()
    if version is None:
        raise OCIError("seccomp needs libseccomp: libseccomp.so.2 cannot be loaded")
    return ".".join(map(str, version))


def _cache_key(profile: dict) -> str:
    try:
        from _sha256 import sha256  # CPython's own: a third of hashlib's (OpenSSL) import time
    except ImportError:
        from hashlib import sha256
    uname = os.uname()
    canon = jsonio.dumps(profile, compact=True, sort_keys=True)
    parts = [_COMPILER_VERSION, libseccomp_version(), uname.machine, uname.release, canon]
    return sha256("\0".join(parts).encode()).hexdigest()


def _trusted_dir(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _cache_read(cache_dir: str, key: str) -> bytes | None:
    if not _trusted_dir(cache_dir):
        return None
    try:
        fd = os.open(os.path.join(cache_dir, key + ".bpf"), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        data = os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)
    if not data or len(data) % 8 or len(data) // 8 > 0xFFFF:
        return None
    return data


def _cache_write(cache_dir: str, key: str, program: bytes) -> None:
    """Best effort: a cache we cannot write only costs the next compile."""
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        if not _trusted_dir(cache_dir):
            return
        tmp = os.path.join(cache_dir, f".{key}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, program)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(cache_dir, key + ".bpf"))
    except OSError:
        pass


# ---------------------------------------------------------------------------- create and exec


def prepare(profile):
    """linux.seccomp as `create` and `exec` both need it before they fork: the program compiled
    (or fetched from the cache) and, for SCMP_ACT_NOTIFY with a listenerPath, the agent's socket
    connected (a host path).  Returns a process.become.SeccompStep, or None without a profile."""
    if not profile:
        return None
    from .process.become import SeccompStep
    flt = compile_filter(profile)
    sock = connect_listener(flt.listener_path) if flt.uses_notify and flt.listener_path else -1
    return SeccompStep(flt, sock)


# ---------------------------------------------------------------------------- the listener


def connect_listener(path: str, json_path: str = "linux.seccomp.listenerPath") -> int:
    """Connect to the seccomp agent's socket (AF_UNIX, SOCK_STREAM); return the fd (close-on-exec).

    Call in the runtime process before forking: the path is a host path.  (This also imports
    `socket`, which `send_listener_fd` needs after pivot_root.)
    """
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise os_error(f"{json_path}: connect to {path}", e) from None
    return sock.detach()


def listener_payload(state: dict, pid: int, metadata: str | None, oci_version: str) -> bytes:
    """The runtime-spec ContainerProcessState, encoded; build it before `Filter.load()`."""
    doc = {"ociVersion": oci_version, "fds": ["seccompFd"], "pid": pid, "state": state}
    if metadata:
        doc["metadata"] = metadata
    return jsonio.dumps(doc).encode()


class ListenerSend:
    """The send of the notify fd to the agent, made ready before `Filter.load()`: between the
    load and the moment the agent holds the fd, every syscall of ours that the profile notifies
    waits for an agent that cannot answer yet.  So the only syscall left there is the sendmsg
    (NOTIFY on it is refused): Python's socket object, whose constructor calls getsockname(2)
    even when told the family, is made here, before the load."""

    def __init__(self, sock_fd: int, payload: bytes):
        import socket  # imported by connect_listener, in the runtime, before the fork
        self.sock_fd = sock_fd
        self.payload = payload
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=sock_fd)
        self._rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        # MSG_NOSIGNAL: an agent gone away is an error to report, not a SIGPIPE that kills us
        # silently (SIGPIPE is back to its default by then).
        self._flags = socket.MSG_NOSIGNAL

    def send(self, seccomp_fd: int) -> None:
        """Send the payload and the notify fd (SCM_RIGHTS, with the first byte), then close both:
        the spec wants one state per connection, closed after sending."""
        try:
            ancillary = [(*self._rights, struct.pack("i", seccomp_fd))]
            sent = self.sock.sendmsg([self.payload], ancillary, self._flags)
            if sent < len(self.payload):
                self.sock.sendall(self.payload[sent:], self._flags)  # the fd went with the first part
        except OSError as e:
            raise os_error("seccomp: send the notify fd to the listener", e) from None
        finally:
            self.sock.detach()
            _close_quietly(self.sock_fd)
            _close_quietly(seccomp_fd)


def send_listener_fd(sock_fd: int, seccomp_fd: int, payload: bytes) -> None:
    """ListenerSend in one go (for a caller that has no filter loaded)."""
    ListenerSend(sock_fd, payload).send(seccomp_fd)


def _close_quietly(fd: int) -> None:
    # Both are close-on-exec, so a profile that denies close(2) still closes them at execve.
    try:
        os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------------- features


def features() -> dict:
    """`linux.seccomp` of `ocirun features` (runtime-spec features.md).

    supportedFlags are probed like `_check_kernel_takes_flags`: one seccomp(2) call per flag with
    a NULL program, which the kernel answers EFAULT for a flag it knows.
    """
    supported = [name for name, bit in sorted(_FLAGS.items()) if _kernel_takes_flag(bit)]
    return {
        "enabled": True,
        "actions": sorted(_ACTIONS),
        "operators": sorted(_OPS),
        "archs": sorted(_ARCHES),
        "knownFlags": sorted(_FLAGS),
        "supportedFlags": supported,
    }


def notify_supported() -> bool:
    """Does the kernel hand out a notify listener (SCMP_ACT_NOTIFY, Linux 5.0)?  `ocirun check`."""
    return _kernel_takes_flag(_FLAG_NEW_LISTENER)


def _kernel_takes_flag(bit: int) -> bool:
    if bit == _FLAG_WAIT_KILLABLE_RECV:
        bit |= _FLAG_NEW_LISTENER  # meaningless (and refused) alone
    return -_seccomp_set_filter(bit, None) == _errno.EFAULT
