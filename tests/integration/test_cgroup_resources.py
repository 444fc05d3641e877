"""linux.resources enforced by the kernel in real containers (`ocirun run`), on this host's layout.

Enforcement, not file contents: a denied device cannot be opened while the default devices
still work, a process over the memory limit is OOM-killed, a fork loop stops at pids.max, a
10 % cpu quota throttles a busy loop, and the v1 file mapping of the remaining resources.
Every container is deleted by the test (the `ocirun_root` fixture fails on leftovers) and the
suite's leak check finds any ocirun-test-* cgroup left behind.
"""
from __future__ import annotations

import json
import os
import time

import pytest

import helpers
from helpers import delete
from ocirun.cgroups import cgroup_mode, devices, ebpf, load_manager
from ocirun.errors import ConfigError


MODE = cgroup_mode()
DENY_ALL = [{"allow": False, "access": "rwm"}]
LOOP = {"path": "/dev/loop9", "type": "b", "major": 7, "minor": 0}  # a device no default rule allows


def run(tmp_path, root, script: str, cid: str = "c1", **linux):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name=cid, linux=linux)
    return helpers.run_ocirun("run", "-b", bundle, cid, root=root, timeout=60)


def start_detached(tmp_path, root, script: str, cid: str, **overrides):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name=cid, **overrides)
    r = helpers.run_ocirun("run", "-d", "-b", bundle, cid, root=root)
    assert r.returncode == 0, r.stderr
    return manager(root, cid)


def manager(root, cid):
    st = json.loads((root / cid / "state.json").read_text())
    return load_manager(st["cgroup"])


def read(path) -> str:
    with open(path) as f:
        return f.read().strip()


# ---------------------------------------------------------------- devices

PROBE = ("for d in /dev/loop9 /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/ptmx; do "
         "if e=$( (true <$d) 2>&1); then echo $d ok; else echo $d $e; fi; done; "
         "echo x >/dev/null && echo write-null ok")


def test_denied_device_cannot_be_opened_but_defaults_work(ocirun_root, tmp_path):
    r = run(tmp_path, ocirun_root, PROBE, resources={"devices": DENY_ALL}, devices=[LOOP])
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert "Operation not permitted" in lines.pop("/dev/loop9")
    assert set(lines.values()) == {"ok"}, r.stdout


def test_allowed_device_opens_and_access_letters_count(ocirun_root, tmp_path):
    rules = DENY_ALL + [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}]
    script = ("head -c1 /dev/loop9 >/dev/null && echo read ok; "
              "(echo -n >/dev/loop9) 2>&1 | grep -q 'not permitted' && echo write denied")
    r = run(tmp_path, ocirun_root, script, resources={"devices": rules}, devices=[LOOP])
    assert r.stdout.split("\n")[:2] == ["read ok", "write denied"], (r.stdout, r.stderr)


def test_later_rule_wins(ocirun_root, tmp_path):
    rules = DENY_ALL + [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwm"},
                        {"allow": False, "type": "b", "major": 7, "minor": 0, "access": "rwm"}]
    r = run(tmp_path, ocirun_root, "head -c1 /dev/loop9 >/dev/null 2>&1 || echo denied",
            resources={"devices": rules}, devices=[LOOP])
    assert r.stdout.strip() == "denied"


def test_device_rules_are_checked(ocirun_root, tmp_path):
    bad = DENY_ALL + [{"allow": True, "type": "x", "access": "rwm"}]
    r = run(tmp_path, ocirun_root, "true", resources={"devices": bad})
    assert r.returncode == 1
    assert "linux.resources.devices[1].type: invalid cgroup device type 'x'" in r.stderr
    assert not os.listdir(ocirun_root)


def test_policy_matches_the_v1_kernel_list(tmp_path):
    """The emulator's view equals what devices.list shows after our writes (v1 controller)."""
    from ocirun.cgroups import manager_for
    rules = DENY_ALL + [{"allow": True, "type": "c", "major": 4, "minor": 1, "access": "rw"}]
    m = manager_for("x", f"/{helpers.TEST_PREFIX}-devlist-{os.getpid()}", {"devices": rules})
    if m.path("devices") is None:
        pytest.skip("no v1 devices controller on this host")
    m.create()
    try:
        m.apply_resources()
        listed = devices.policy_from_list(read(f"{m.path('devices')}/devices.list"))
        assert listed.exceptions == devices.policy_for(rules).exceptions
        assert listed.default_allow is False
    finally:
        m.destroy()


def test_ebpf_program_decides_like_the_emulator():
    """The program is run by the kernel only in a v2 cgroup; here we check its shape and, with
    BPF_PROG_TEST_RUN unavailable for device programs, that the kernel's verifier accepts it."""
    pol = devices.policy_for(DENY_ALL + [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}])
    prog = ebpf.build_program(pol)
    assert len(prog) % 8 == 0
    try:
        fd = ebpf.load(prog)
    except OSError as e:
        pytest.skip(f"bpf(2) unavailable here: {e}")
    os.close(fd)


@pytest.mark.skipif(MODE != "hybrid", reason="the cgroup2 tree of a hybrid host carries the eBPF program")
def test_ebpf_filter_on_the_hybrid_cgroup2_tree(tmp_path):
    """On a hybrid host device programs on the cgroup2 tree are enforced too: check ours there."""
    cg = f"/sys/fs/cgroup/unified/{helpers.TEST_PREFIX}-bpf-{os.getpid()}"
    os.mkdir(cg)

    def probe(path, flags=os.O_RDONLY):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                with open(f"{cg}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
                try:
                    os.close(os.open(path, flags))
                    os.write(w, b"ok")
                except OSError as e:
                    os.write(w, str(e.errno).encode())
            finally:
                os._exit(0)
        os.close(w)
        out = os.read(r, 64).decode()
        os.waitpid(pid, 0)
        os.close(r)
        return out

    try:
        ebpf.install(cg, devices.policy_for(DENY_ALL))
        assert probe("/dev/loop0") == "1"  # EPERM
        assert probe("/dev/null", os.O_RDWR) == "ok"
        ebpf.install(cg, devices.policy_for(DENY_ALL + [{"allow": True, "type": "b", "major": 7, "access": "r"}]))
        fd = os.open(cg, os.O_RDONLY)
        try:
            assert len(ebpf.query(fd)) == 1  # replaced, not stacked
        finally:
            os.close(fd)
        assert probe("/dev/loop0") == "ok"
        assert probe("/dev/loop0", os.O_RDWR) == "1"
    finally:
        os.rmdir(cg)


# ---------------------------------------------------------------- memory, pids, cpu

def test_memory_limit_oom_kills_in_a_container(ocirun_root, tmp_path):
    # busybox sort keeps its whole (newline-free) input in memory: 100 MiB > 32 MiB
    r = run(tmp_path, ocirun_root, "awk 'BEGIN{s=\"x\"; while (1) s = s s}'; echo status=$?",
            resources={"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert r.stdout.strip() == "status=137", (r.stdout, r.stderr)


def test_a_memory_limit_too_small_for_the_setup_is_named(ocirun_root, tmp_path):
    """The init OOM-killed before it was ready once said only that it "exited"."""
    bundle = helpers.make_bundle(tmp_path, ["true"], name="tiny", linux={"resources": {"memory": {"limit": 4096}}})
    r = helpers.run_ocirun("run", "-b", bundle, "tiny", root=ocirun_root, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == ("container init was killed by the OOM killer before it was ready: "
                                "linux.resources.memory.limit 4096 is too small"), r.stderr
    assert not (ocirun_root / "tiny").exists()


def test_pids_limit_stops_a_fork_loop(ocirun_root, tmp_path):
    # busybox sh gives up on a failed `cmd &`, so each sleeper is started by a short-lived subshell
    m = start_detached(tmp_path, ocirun_root, "for i in $(seq 30); do (sleep 100 &); done 2>/dev/null; sleep 100",
                       "p1", linux={"resources": {"pids": {"limit": 8}}})
    try:
        helpers.wait_until(lambda: len(m.pids()) >= 6, 15, "the fork loop to fill the pids limit")
        assert len(m.pids()) <= 8, m.pids()  # 30 were asked for
        assert int(read(f"{m.path('pids')}/pids.max" if MODE != "unified" else f"{m.paths['']}/pids.max")) == 8
    finally:
        delete(ocirun_root, "p1")


def test_a_pids_limit_of_one_lets_the_container_start(ocirun_root, tmp_path):
    """The intermediate and the init are both in the cgroup for a moment: a limit of 1 written
    before them refused the init's fork (EAGAIN); runc starts such a container."""
    bundle = helpers.make_bundle(tmp_path, ["sleep", "100"], name="one",
                                 linux={"resources": {"pids": {"limit": 1}}})
    r = helpers.run_ocirun("run", "-d", "-b", bundle, "one", root=ocirun_root, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        m = manager(ocirun_root, "one")
        assert int(read(f"{m.path('pids')}/pids.max" if MODE != "unified" else f"{m.paths['']}/pids.max")) == 1
        assert len(m.pids()) == 1
    finally:
        delete(ocirun_root, "one")


def cpu_seconds(m) -> float:
    from ocirun.cgroups import stats
    return stats.cpu_stats(m)["usage"].get("total", 0) / 1e9


def busy_share(m, seconds: float = 1.5) -> float:
    c0, t0 = cpu_seconds(m), time.monotonic()
    time.sleep(seconds)  # the measuring window, not a wait for anything
    return (cpu_seconds(m) - c0) / (time.monotonic() - t0)


def test_cpu_quota_throttles_and_update_lifts_it(ocirun_root, tmp_path):
    from ocirun.update import update
    m = start_detached(tmp_path, ocirun_root, "while :; do :; done", "cpu1",
                       linux={"resources": {"cpu": {"quota": 10000, "period": 100000}}})
    try:
        share = busy_share(m)
        assert 0.03 < share < 0.16, share
        update(str(ocirun_root), "cpu1", {"cpu": {"quota": 50000}})
        share = busy_share(m)
        assert 0.35 < share < 0.6, share
    finally:
        delete(ocirun_root, "cpu1")


def test_pause_stops_a_counter_and_resume_restarts_it(ocirun_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mounts = helpers.default_config()["mounts"] + [
        # On /tmp, which the image has: a new mount point would be made in the shared rootfs.
        {"destination": "/tmp", "type": "bind", "source": str(out), "options": ["bind", "rw"]}]
    start_detached(tmp_path, ocirun_root, "while :; do echo .; done >/tmp/n", "pz", mounts=mounts)
    n = lambda: (out / "n").stat().st_size  # noqa: E731  # only grows while the loop runs
    try:
        helpers.wait_until(lambda: (out / "n").exists() and n() > 0, 10, "the counter to start")
        r = helpers.run_ocirun("pause", "pz", root=ocirun_root)
        assert r.returncode == 0, r.stderr
        a = n()
        time.sleep(0.5)  # a fixed wait on purpose: the check is that the counter did NOT move
        assert n() == a
        assert json.loads(helpers.run_ocirun("state", "pz", root=ocirun_root).stdout)["status"] == "paused"
        assert helpers.run_ocirun("resume", "pz", root=ocirun_root).returncode == 0
        helpers.wait_until(lambda: n() > a, 10, "the counter to move again after resume")
    finally:
        delete(ocirun_root, "pz")


# ---------------------------------------------------------------- the remaining v1 files

@pytest.mark.skipif(MODE == "unified", reason="v1 file mapping")
def test_v1_files_of_the_remaining_resources(ocirun_root, tmp_path):
    res = {"memory": {"limit": 64 << 20, "swappiness": 10, "disableOOMKiller": True, "kernel": 1 << 20},
           "cpu": {"shares": 512, "burst": 1000, "idle": 0, "realtimeRuntime": 0},
           "blockIO": {"throttleReadBpsDevice": [{"major": 7, "minor": 0, "rate": 1048576}],
                       "throttleWriteIOPSDevice": [{"major": 7, "minor": 0, "rate": 100}]}}
    m = start_detached(tmp_path, ocirun_root, "sleep 100", "v1f", linux={"resources": res})
    try:
        mem, cpu, blk = m.path("memory"), m.path("cpu"), m.path("blkio")
        assert read(f"{mem}/memory.swappiness") == "10"
        assert "oom_kill_disable 1" in read(f"{mem}/memory.oom_control")
        assert read(f"{cpu}/cpu.cfs_burst_us") == "1000"
        assert read(f"{blk}/blkio.throttle.read_bps_device") == "7:0 1048576"
        assert read(f"{blk}/blkio.throttle.write_iops_device") == "7:0 100"
    finally:
        delete(ocirun_root, "v1f")


def test_errors_name_the_field(ocirun_root, tmp_path):
    cases = [
        ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness: 101 is out of range"),
        ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]}, "linux.resources.hugepageLimits[0]"),
        ({"unified": {"memory.max": "1"}} if MODE != "unified" else {"unified": {"../x": "1"}},
         "linux.resources.unified"),
        ({"cpu": {"shares": "x"}}, "linux.resources.cpu.shares: "),
        ({"blockIO": {"throttleReadBpsDevice": [{"major": 7, "rate": 1}]}},
         "linux.resources.blockIO.throttleReadBpsDevice[0].minor"),
    ]
    for i, (res, msg) in enumerate(cases):
        r = run(tmp_path, ocirun_root, "true", cid=f"e{i}", resources=res)
        assert r.returncode == 1 and msg in r.stderr, (res, r.stderr)
    assert not os.listdir(ocirun_root)


def test_kernel_memory_is_ignored_with_a_warning(ocirun_root, tmp_path):
    r = run(tmp_path, ocirun_root, "echo hi", resources={"memory": {"kernel": 1 << 30}})
    assert r.returncode == 0 and r.stdout == "hi\n"
    assert "linux.resources.memory.kernel" in r.stderr


def test_policy_refuses_a_hole_in_a_wildcard():
    with pytest.raises(ConfigError, match="punch a hole"):
        devices.policy_for([{"allow": True, "access": "rwm"}, {"allow": False, "type": "c", "access": "rwm"}])
