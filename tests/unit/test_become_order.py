"""The order of the drop to the container's process (process/become.py), recorded through the
kernel seam (ocirun.kernel) by a double: no root, no real privilege changes.

Each assertion is an order the container's safety depends on (runc keeps the same one); the
real-container tests (tests/integration) check the end result, these the way there.
"""
from __future__ import annotations

import os

import pytest

import kernel_double
from kernel_double import Replaced
from ocirun import capabilities
from ocirun.config import parse_config
from ocirun.errors import OCIError
from ocirun.limits import RLIMIT_AS
from ocirun.process import become

RLIMIT_NOFILE = 7
UID, GID = 1000, 1001


class FakeFilter:
    """A compiled seccomp filter as SeccompStep sees it; loading it is the kernel's business."""
    uses_notify = False


@pytest.fixture
def program(tmp_path) -> str:
    path = tmp_path / "prog"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def process(program: str, **overrides):
    doc = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {
            "args": [program, "arg"],
            "cwd": "/work",
            "env": ["PATH=/bin", "HOME=/home/u"],
            "user": {"uid": UID, "gid": GID, "additionalGids": [5, 10]},
            "noNewPrivileges": True,
            "capabilities": {"bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                             "effective": ["CAP_KILL"], "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                             "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512},
                        {"type": "RLIMIT_AS", "soft": 1 << 30, "hard": 1 << 30}],
        },
    }
    doc["process"].update(overrides)
    return parse_config(doc, "/bundle").process


def run_to_exec(k, proc, seccomp=True) -> None:
    """drop_to_process then execute, as the init does (the seccomp filter compiled before)."""
    step = become.SeccompStep(FakeFilter()) if seccomp else None
    path, env = become.drop_to_process(proc, None, 0, 0, step)
    with pytest.raises(Replaced):
        become.execute(proc, path, env, step)


def uid_change(k) -> int:
    return k.first("setresuid", lambda a: a[1] == UID)


def test_groups_then_gid_then_uid(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program))
    assert k.calls[k.first("setgroups")] == ("setgroups", ([5, 10],))
    assert k.first("setgroups") < k.first("setresgid") < uid_change(k)


def test_keepcaps_around_setuid_and_caps_after_it(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program))
    keep_on = k.first("set_keepcaps", lambda a: a == (True,))
    keep_off = k.first("set_keepcaps", lambda a: a == (False,))
    assert keep_on < uid_change(k) < keep_off
    assert uid_change(k) < k.first("capset") < k.first("ambient_raise")
    assert (k.effective, k.permitted) == (capabilities.mask(["CAP_KILL"]),
                                          capabilities.mask(["CAP_KILL", "CAP_NET_BIND_SERVICE"]))


def test_bounding_set_dropped_before_the_uid_change(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program))
    drops = k.indexes("capbset_drop")
    kept = {capabilities.CAPS["CAP_KILL"], capabilities.CAPS["CAP_NET_BIND_SERVICE"]}
    assert {k.calls[i][1][0] for i in drops} == set(range(capabilities.last_cap() + 1)) - kept
    assert drops[-1] < uid_change(k)


def test_stdio_given_and_rlimits_raised_while_root(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((0o20600, 0, 0, 1, 0, 0, 0, 0, 0, 0)))
    run_to_exec(k, process(program))
    # stdio not the user's (here: all root's ttys) is given to the user while we may still.
    gives = k.indexes("fchown")
    assert [k.calls[i][1] for i in gives] == [(0, UID, -1), (1, UID, -1), (2, UID, -1)]
    assert gives[-1] < uid_change(k)
    # Raising a hard limit needs CAP_SYS_RESOURCE: the early rlimits are set before the drop.
    assert k.first("prlimit", lambda a: a[0] == RLIMIT_NOFILE) < uid_change(k)
    # ...and the memory limits last (our own Python would not fit in them), before the filter.
    late = k.last("prlimit", lambda a: a[0] == RLIMIT_AS)
    assert k.calls[late][1] == (RLIMIT_AS, 1 << 30, 1 << 30)
    assert uid_change(k) < late < k.first("load_seccomp")


def test_no_new_privs_then_seccomp_then_execve_with_nothing_between(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program))
    nnp, load = k.first("set_no_new_privs"), k.first("load_seccomp")
    assert uid_change(k) < k.first("capset") < nnp < load
    # Under the filter only what the profile allows may run: seccomp is the last call, execve next.
    assert k.names()[load + 1:] == ["execve"]
    assert k.calls[-1] == ("execve", (program, [program, "arg"]))


def test_without_no_new_privs_seccomp_is_loaded_before_the_privilege_drop(monkeypatch, program):
    # Without no_new_privs loading a filter needs CAP_SYS_ADMIN: as runc, before it is dropped.
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program, noNewPrivileges=False))
    load = k.first("load_seccomp")
    assert "set_no_new_privs" not in k.names()
    assert load < k.first("capbset_drop") < k.first("setgroups") < uid_change(k) < k.first("capset")
    assert k.names().count("load_seccomp") == 1
    assert k.names()[-1] == "execve"


def test_cwd_entered_as_root_then_checked_as_the_user(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program))
    assert k.calls[k.first("chdir")] == ("chdir", ("/work",))
    # CVE-2024-21626: the check that the cwd is inside the root comes after the last chdir.
    assert k.last("chdir") < k.first("getcwd")


def test_cwd_only_the_user_may_enter_is_entered_after_the_uid_change(monkeypatch, program):
    # Root refused (root-squashing NFS, a userns root facing unmapped owners): try as the user.
    k = kernel_double.install(monkeypatch)
    k.root_only_dirs.add("/work")
    run_to_exec(k, process(program))
    assert k.first("chdir refused") < uid_change(k) < k.first("chdir") < k.first("getcwd")


def test_cwd_outside_the_root_is_refused(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    k.root = "/container"  # the cwd /work, reached through an fd of the host, lies outside it
    k.cwd = "/elsewhere"
    monkeypatch.setattr(k, "chdir", lambda path: k._record("chdir", path))
    with pytest.raises(OCIError, match="process.cwd: /work is outside the container's root"):
        become.drop_to_process(process(program), None, 0, 0, None)
    assert "execve" not in k.names()


def test_host_fds_closed_on_exec_before_the_process_runs(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    run_to_exec(k, process(program))
    assert k.calls[k.first("close_range")][1][:2] == (3, 0xFFFFFFFF)
    assert k.first("close_range") < uid_change(k)


def _exec_through_a_stub(k, program: str) -> int:
    """drop_to_process, then execute through a stand-in for the sealed stub; its fd number."""
    proc = process(program)
    path, env = become.drop_to_process(proc, None, 0, 0, None)
    stub = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(Replaced):
            become.execute(proc, path, env, None, stub)
    finally:
        os.close(stub)
    return stub


def test_the_sealed_stub_is_the_exec_when_there_is_one(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    _exec_through_a_stub(k, program)
    assert k.calls[-1][0] == "execveat"
    assert k.calls[-1][1][2] == ["\x01" + program, program, "arg"]
    assert k.names()[k.first("set_no_new_privs") + 1:] == ["execveat"]


def test_a_refused_execveat_falls_back_to_execve_of_the_stub(monkeypatch, program):
    k = kernel_double.install(monkeypatch)
    k.refuse_execveat = True
    stub = _exec_through_a_stub(k, program)
    assert k.names()[-2:] == ["execveat", "execve"]
    assert k.calls[-1][1] == (f"/proc/self/fd/{stub}", ["\x01" + program, program, "arg"])


def test_the_double_stands_in_for_every_kernel_call():
    """A new method of the seam must get a recording twin, or a unit test would make the real call."""
    from ocirun.kernel import Kernel
    real = {n for n, v in vars(Kernel).items() if callable(v) and not n.startswith("_")}
    missing = {n for n in real if vars(kernel_double.RecordingKernel).get(n) is None}
    assert missing == set()
