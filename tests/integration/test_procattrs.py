"""Process attributes applied by the init: user, groups, capabilities, rlimits, umask,
oom_score_adj, I/O priority, scheduler, personality.

Every change is made in a forked child (uid, caps and limits never touch the test runner); the
child reports what /proc/self/status says as JSON over a pipe.  The validators run without root.
"""
import json
import os
import platform
import resource
import traceback

import pytest

from ocirun import capabilities, limits, linux, user
from ocirun.config import Capabilities, Rlimit, User
from ocirun.errors import ConfigError, OCIError


def in_child(fn):
    """Run fn() in a forked child; return its JSON-able result, or raise what it raised as OCIError."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out = {"ok": fn()}
            except OCIError as e:
                out = {"oci_error": str(e)}
            except BaseException:
                out = {"crash": traceback.format_exc()}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    if "crash" in out:
        pytest.fail(out["crash"])
    if "oci_error" in out:
        raise OCIError(out["oci_error"])
    return out["ok"]


def status() -> dict:
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def bits(*names) -> str:
    return f"{capabilities.mask(list(names)):016x}"


def exec_status_in_child(argv) -> str:
    """exec argv in a forked child with stdout on a pipe; return what it printed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


SMALL = Capabilities(
    bounding=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
    effective=["CAP_KILL", "CAP_NET_BIND_SERVICE"],
    permitted=["CAP_KILL", "CAP_NET_BIND_SERVICE"],
    inheritable=["CAP_NET_BIND_SERVICE"],
    ambient=["CAP_NET_BIND_SERVICE"],
)


def test_user_groups_and_caps_as_runc_orders_them():
    def child():
        warnings = []
        capabilities.apply_bounding(SMALL)
        user.switch_user(User(uid=1000, gid=1000, additional_gids=[10, 20, 1000]))
        capabilities.apply_caps(SMALL, log=lambda lvl, msg: warnings.append(msg))
        st = status()
        # and after exec, as uid 1000: the ambient cap is what survives
        after = exec_status_in_child(["/bin/grep", "^Cap", "/proc/self/status"])
        return {k: st[k] for k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} | {
            "warnings": warnings, "after": after}

    got = in_child(child)
    assert got["Uid"].split() == ["1000"] * 4
    assert got["Gid"].split() == ["1000"] * 4
    assert got["Groups"].split() == ["10", "20", "1000"]
    assert got["CapBnd"] == bits("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert got["CapPrm"] == got["CapEff"] == bits("CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert got["CapInh"] == got["CapAmb"] == bits("CAP_NET_BIND_SERVICE")
    assert got["warnings"] == []
    after = dict(line.split(":\t") for line in got["after"].splitlines())
    assert after["CapEff"] == after["CapPrm"] == after["CapAmb"] == bits("CAP_NET_BIND_SERVICE")


def test_no_capabilities_object_drops_everything():
    def child():
        capabilities.apply_bounding(None)
        capabilities.apply_caps(None)
        return status()

    st = in_child(child)
    for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[k], 16) == 0, k


def test_root_keeps_full_requested_set():
    names = ["CAP_SYS_ADMIN", "CAP_SETPCAP", "CAP_NET_ADMIN"]
    caps = Capabilities(bounding=names, effective=names, permitted=names, inheritable=[], ambient=[])

    def child():
        capabilities.apply_bounding(caps)
        user.switch_user(User(uid=0, gid=0))
        capabilities.apply_caps(caps)
        return status()

    st = in_child(child)
    assert st["CapBnd"] == st["CapEff"] == st["CapPrm"] == bits(*names)
    assert st["Groups"].strip() == ""  # no additionalGids: inherited groups are cleared


def test_cap_missing_from_our_bounding_set_is_named():
    if capabilities.current()["bounding"] >> capabilities.CAPS["CAP_SYS_RESOURCE"] & 1:
        pytest.skip("this machine has CAP_SYS_RESOURCE in its bounding set")
    caps = Capabilities(bounding=["CAP_SYS_RESOURCE"], effective=["CAP_SYS_RESOURCE"],
                        permitted=["CAP_SYS_RESOURCE"])

    def child():
        capabilities.apply_bounding(caps)
        capabilities.apply_caps(caps)

    with pytest.raises(OCIError) as ei:
        in_child(child)
    assert str(ei.value).startswith("process.capabilities.permitted: CAP_SYS_RESOURCE: operation not permitted")


def test_effective_outside_permitted_is_named():
    caps = Capabilities(bounding=["CAP_KILL"], effective=["CAP_KILL"], permitted=[])
    with pytest.raises(OCIError, match=r"^process.capabilities.effective: CAP_KILL: operation not permitted"):
        in_child(lambda: capabilities.apply_caps(caps))


def test_ambient_not_inheritable_warns_like_runc():
    caps = Capabilities(bounding=["CAP_KILL"], effective=["CAP_KILL"], permitted=["CAP_KILL"],
                        ambient=["CAP_KILL"])

    def child():
        seen = []
        capabilities.apply_caps(caps, log=lambda lvl, msg: seen.append([lvl, msg]))
        return [seen, status()["CapAmb"]]

    seen, amb = in_child(child)
    assert seen and seen[0][0] == "warning" and "CAP_KILL" in seen[0][1]
    assert int(amb, 16) == 0


def test_switch_user_errors_name_the_field():
    def child():
        user.switch_user(User(uid=1000, gid=1000))
        user.switch_user(User(uid=0, gid=0))

    with pytest.raises(OCIError) as ei:
        in_child(child)
    assert str(ei.value) == "process.user.additionalGids: setgroups []: operation not permitted"


def test_setgroups_deny_in_user_namespace_is_skipped():
    def child():
        uid, gid = os.geteuid(), os.getegid()
        linux.unshare(linux.CLONE_NEWUSER)
        for name, data in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(data)
        user.switch_user(User(uid=0, gid=0, additional_gids=[5]))
        return status()["Uid"]

    assert in_child(child).split() == ["0"] * 4


def test_rlimits_applied_and_eperm_named():
    def child():
        limits.apply_rlimits([Rlimit("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, 512, 1024),
                              Rlimit("RLIMIT_CORE", resource.RLIMIT_CORE, 0, limits.RLIM_INFINITY)])
        got = [resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE)]
        try:  # raising a hard limit needs CAP_SYS_RESOURCE, which we drop first
            capabilities.apply_caps(Capabilities(effective=["CAP_KILL"], permitted=["CAP_KILL"]))
            limits.apply_rlimits([Rlimit("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, 4096, 4096)])
            err = None
        except OCIError as e:
            err = str(e)
        return [got, err]

    got, err = in_child(child)
    assert got == [[512, 1024], [0, resource.RLIM_INFINITY]]
    assert err == "process.rlimits[0]: setrlimit RLIMIT_NOFILE (soft 4096, hard 4096): operation not permitted"


@pytest.mark.rootless
def test_memory_rlimits_raise_hard_early_and_lower_late(monkeypatch):
    """The memory limits (limits.LATE_RLIMITS): early, while root, only a hard limit above ours
    goes up (our soft one kept, nothing lowered: our Python must still fit); late, unprivileged,
    the final values, which then only lower.  Other limits are all set early.  (A fake prlimit:
    this host cannot raise a hard limit even as root; the real-container side is in
    test_rlimits_and_long_deadlines.py.)"""
    M = 1 << 20
    ours = {limits.RLIMIT_STACK: (8 * M, 8 * M), limits.RLIMIT_DATA: (64 * M, 1024 * M),
            limits.RLIMIT_AS: (limits.RLIM_INFINITY, limits.RLIM_INFINITY)}
    calls = []
    monkeypatch.setattr(limits, "getrlimit", lambda pid, res: ours[res])
    monkeypatch.setattr(limits, "prlimit", lambda pid, res, soft, hard: calls.append((res, soft, hard)))
    rl = [Rlimit("RLIMIT_STACK", limits.RLIMIT_STACK, 4 * M, 16 * M),  # hard goes up
          Rlimit("RLIMIT_DATA", limits.RLIMIT_DATA, 4 * M, 512 * M),  # both go down
          Rlimit("RLIMIT_AS", limits.RLIMIT_AS, 64 * M, 64 * M),
          Rlimit("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, 100, 100)]
    limits.apply_rlimits(rl, stage="early")
    assert calls == [(limits.RLIMIT_STACK, 8 * M, 16 * M), (resource.RLIMIT_NOFILE, 100, 100)]
    calls.clear()
    limits.apply_rlimits(rl, stage="late")
    assert calls == [(limits.RLIMIT_STACK, 4 * M, 16 * M), (limits.RLIMIT_DATA, 4 * M, 512 * M),
                     (limits.RLIMIT_AS, 64 * M, 64 * M)]


@pytest.mark.rootless
def test_rlimit_soft_above_hard_fails_early():
    with pytest.raises(ConfigError, match=r"process.rlimits\[0\]: RLIMIT_NOFILE: soft limit 10 is above"):
        limits.validate_rlimits([Rlimit("RLIMIT_NOFILE", 7, 10, 5)])


@pytest.mark.rootless
def test_umask():
    def child():
        user.set_umask(User(umask=0o077))
        a = os.umask(0)
        user.set_umask(User())
        return [a, os.umask(0)]

    assert in_child(child) == [0o077, 0o022]


@pytest.mark.rootless
def test_home_env(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\nodd:x:7:7::\n")
    assert user.home_env(["PATH=/bin"], 1000, str(pw)) == ["PATH=/bin", "HOME=/home/bob"]
    assert user.home_env(["HOME=/x"], 1000, str(pw)) == ["HOME=/x"]
    assert user.home_env([], 4242, str(pw)) == ["HOME=/"]
    assert user.home_env([], 7, str(pw)) == ["HOME=/"]
    assert user.home_env([], 0, str(tmp_path / "none")) == ["HOME=/"]


def test_oom_score_adj():
    def child():
        limits.apply_oom_score_adj(500)
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())

    assert in_child(child) == 500


_NR_IOPRIO_GET = 252 if platform.machine() == "x86_64" else 31


def test_io_priority():
    def child():
        limits.apply_io_priority({"class": "IOPRIO_CLASS_BE", "priority": 5})
        return linux.syscall(_NR_IOPRIO_GET, 1, 0)

    assert in_child(child) == (2 << 13) | 5


@pytest.mark.rootless
def test_scheduler_batch_and_nice():
    def child():
        limits.apply_scheduler({"policy": "SCHED_BATCH", "nice": 7})
        return [os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)]

    assert in_child(child) == [os.SCHED_BATCH, 7]


def test_scheduler_fifo_priority():
    def child():
        limits.apply_scheduler({"policy": "SCHED_FIFO", "priority": 10, "flags": ["SCHED_FLAG_RESET_ON_FORK"]})
        return [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]

    policy, prio = in_child(child)
    assert policy & ~0x40000000 == os.SCHED_FIFO  # SCHED_RESET_ON_FORK shows in the policy
    assert prio == 10


@pytest.mark.rootless
def test_scheduler_kernel_error_is_clear():
    with pytest.raises(OCIError, match=r"^process.scheduler: sched_setattr SCHED_ISO: invalid argument$"):
        in_child(lambda: limits.apply_scheduler({"policy": "SCHED_ISO"}))


@pytest.mark.rootless
def test_personality_linux32():
    def child():
        limits.apply_personality({"domain": "LINUX32"})
        return [linux.personality(0xFFFFFFFF), os.uname().machine]

    persona, machine = in_child(child)
    assert persona & 0xFF == 0x0008
    if platform.machine() == "x86_64":
        assert machine == "i686"


@pytest.mark.rootless
@pytest.mark.parametrize("fn,value,msg", [
    (limits.validate_io_priority, {"class": "IOPRIO_CLASS_X"}, r"process.ioPriority.class: unknown class 'IOPRIO_CLASS_X'"),
    (limits.validate_io_priority, {"class": "IOPRIO_CLASS_RT", "priority": 8}, r"process.ioPriority.priority: 8 is out of range"),
    (limits.validate_scheduler, {"policy": "SCHED_NOPE"}, r"process.scheduler.policy: unknown policy 'SCHED_NOPE'"),
    (limits.validate_scheduler, {}, r"process.scheduler.policy: unknown policy None"),
    (limits.validate_scheduler, {"policy": "SCHED_OTHER", "priority": 3}, r"process.scheduler.priority: can only be set for SCHED_FIFO or SCHED_RR"),
    (limits.validate_scheduler, {"policy": "SCHED_RR", "runtime": 3}, r"process.scheduler: runtime, deadline and period"),
    (limits.validate_scheduler, {"policy": "SCHED_OTHER", "nice": 20}, r"process.scheduler.nice: 20 is out of range"),
    (limits.validate_scheduler, {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}, r"process.scheduler.flags\[0\]: unknown flag"),
    (limits.validate_personality, {"domain": "BSD"}, r"linux.personality.domain: unknown domain 'BSD'"),
    (limits.validate_personality, {"domain": "LINUX", "flags": ["X"]}, r"linux.personality.flags\[0\]: unsupported"),
])
def test_validators(fn, value, msg):
    with pytest.raises(ConfigError, match=msg):
        fn(value)


@pytest.mark.rootless
def test_validators_accept_good_values():
    assert limits.validate_io_priority(None) is None
    assert limits.validate_io_priority({"class": "IOPRIO_CLASS_IDLE"}) == 3 << 13
    attr = limits.validate_scheduler({"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 20, "period": 30})
    assert (attr.sched_policy, attr.sched_runtime, attr.sched_period, attr.size) == (6, 10, 30, 48)
    assert limits.validate_personality({"domain": "LINUX", "flags": []}) == 0
