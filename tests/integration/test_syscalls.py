"""ocirun.linux's two syscall layers: the C module `ocirun._syscalls` (built at install) and its
ctypes fallback (`_syscalls_ctypes`, for an install without a compiler) give the same results.

Each check runs in a fresh interpreter, the fallback with the C module made unimportable, and
compares what the kernel did with what /proc or `os` says."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import helpers

CHECKS = r'''
import os, resource, sys
if sys.argv[1] == "ctypes":
    sys.modules["ocirun._syscalls"] = None  # import fails: linux.py takes the fallback
from ocirun import limits, linux, mountinfo
assert linux._sys.__name__ == {"ctypes": "ocirun._syscalls_ctypes", "native": "ocirun._syscalls"}[sys.argv[1]]

status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
assert linux.capget() == tuple(int(status[k], 16) for k in ("CapEff", "CapPrm", "CapInh")), linux.capget()
assert limits.getrlimit(0, resource.RLIMIT_NOFILE) == resource.getrlimit(resource.RLIMIT_NOFILE)
assert mountinfo.fs_magic("/proc") == mountinfo.PROC_SUPER_MAGIC
assert linux.prctl(3) == 1  # PR_GET_DUMPABLE
version = linux.libseccomp_version()
assert version is not None and version >= (2, 0, 0), version
buf = bytearray(8)
n = linux.syscall(linux.NR_PRCTL, 37, linux.address_of(buf))  # PR_GET_CHILD_SUBREAPER into buf by address
assert n == 0 and buf == bytes(8), (n, buf)
fd = linux.openat2(-100, "/proc/version", os.O_RDONLY, resolve=linux.RESOLVE_NO_SYMLINKS)
assert linux.statx_mount_id(fd) > 0
os.close(fd)
try:
    linux.openat2(-100, "/nonexistent/x", os.O_RDONLY)
    raise AssertionError("openat2 of a missing path succeeded")
except FileNotFoundError as e:
    assert e.filename == "/nonexistent/x", e

pid = os.fork()
if pid == 0:  # a child: namespaces, limits and exec are its own
    try:
        linux.unshare(linux.CLONE_NEWUTS)
        linux.setdomainname("ocirun.test")
        assert open("/proc/sys/kernel/domainname").read().strip() == "ocirun.test"
        limits.prlimit(0, resource.RLIMIT_NOFILE, 64, 128)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (64, 128)
        linux.capset(0, 0, 0)
        assert linux.capget() == (0, 0, 0)
        fd = os.open("/bin/sh", os.O_PATH | os.O_CLOEXEC)
        linux.execveat(fd, "", ["sh", "-c", 'exit "$CODE"'], {"CODE": "7"}, linux.AT_EMPTY_PATH)
    finally:
        os._exit(99)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7

own = [line.split("::", 1)[1] for line in open("/proc/self/cgroup").read().splitlines() if line.startswith("0::")]
mount = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
if own and os.path.exists(mount + "/cgroup.procs"):
    dfd = os.open(mount + own[0], os.O_RDONLY | os.O_DIRECTORY)
    pid = linux.fork_into_cgroup(dfd)
    if pid == 0:
        os._exit(5)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 5
print("ok")
'''


@pytest.mark.parametrize("layer", ["native", "ctypes"])
def test_both_syscall_layers_work(layer):
    if layer == "native" and importlib.util.find_spec("ocirun._syscalls") is None:
        pytest.fail("ocirun._syscalls is not built: `pip install -e .` compiles it (gcc, python3-dev)")
    r = subprocess.run([sys.executable, "-c", CHECKS, layer], capture_output=True, text=True, timeout=30,
                       cwd=str(helpers.REPO))
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr[-3000:]


def test_a_bad_argument_is_a_type_error_not_a_crash():
    from ocirun import _syscalls_ctypes, linux
    for layer in (linux._sys, _syscalls_ctypes):
        with pytest.raises(TypeError):
            layer.syscall(linux.NR_UNSHARE, "not bytes")


EBPF = r'''
import os, sys
if sys.argv[1] == "ctypes":
    sys.modules["ocirun._syscalls"] = None
from ocirun.cgroups import ebpf
from ocirun.cgroups.devices import Policy
d = sys.argv[2]
ebpf.install(d, Policy(default_allow=False, exceptions={("c", 1, 3): "rwm"}))
fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
first = ebpf.query(fd)
assert len(first) == 1, first
ebpf.install(d, Policy(default_allow=True))  # replaces the first
second = ebpf.query(fd)
assert len(second) == 1 and second != first, (first, second)
try:
    ebpf.load(b"\xff" + bytes(7))  # no such instruction: the verifier's log comes back
    raise AssertionError("an invalid program loaded")
except OSError as e:
    assert e.errno in (22, 13) and "verifier:" in e.strerror and "no log" not in e.strerror, e
print("ok")
'''


@pytest.mark.parametrize("layer", ["native", "ctypes"])
def test_the_ebpf_device_filter_through_both_layers(layer, tmp_path):
    """bpf(2) with pointers inside bpf_attr (linux.address_of): load, attach, query, replace on
    a cgroup2 directory of this host (the unified hierarchy of a hybrid host will do)."""
    mount = next((m for m in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                  if os.path.exists(m + "/cgroup.procs") and os.path.exists(m + "/cgroup.controllers")), None)
    if mount is None:
        pytest.skip("no cgroup2 mount on this host")
    d = f"{mount}/ocirun-test-ebpf-{os.getpid()}-{layer}"
    os.mkdir(d)
    try:
        r = subprocess.run([sys.executable, "-c", EBPF, layer, d], capture_output=True, text=True, timeout=30,
                           cwd=str(helpers.REPO))
        assert r.returncode == 0 and r.stdout == "ok\n", r.stderr[-3000:]
    finally:
        os.rmdir(d)


def test_the_ctypes_layer_takes_execveat_s_number_at_import():
    """Chosen in the runtime, before any personality: under LINUX32 uname says i686, and the
    number it would then pick (281) is epoll_pwait on x86_64."""
    from ocirun import _syscalls_ctypes, linux
    assert _syscalls_ctypes._NR_EXECVEAT == linux.NR_EXECVEAT
