"""The pure cgroup v2 subset: limits the kernel enforces, through real `ocirun run` containers.

Run with tools/v2tests.sh, which boots a qemu guest whose only hierarchy is cgroup2 (every
controller enabled) and runs `pytest -m v2 tests/v2` there.  On any other host these tests
skip.  Python runs ~30x slower under the guest's software emulation: keep containers few and
short.  Bundles and state live under /tmp and /run (tmpfs in the guest).
"""
from __future__ import annotations

import functools
import json
import mmap
import os
import subprocess
import signal
import time

import pytest

import helpers
from ocirun.cgroups import cgroup_mode, load_manager, manager_for, stats

pytestmark = [
    pytest.mark.v2,
    pytest.mark.skipif(cgroup_mode() != "unified",
                       reason="needs a pure cgroup v2 host: run tools/v2tests.sh (boots one under qemu)"),
]

DENY_ALL = [{"allow": False, "access": "rwm"}]
TIMEOUT = 120  # per ocirun call: the guest is slow


def run(tmp_path, root, script, cid="c1", **linux):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name=cid, linux=linux)
    return helpers.run_ocirun("run", "-b", bundle, cid, root=root, timeout=TIMEOUT)


def start(tmp_path, root, script, cid, **overrides):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name=cid, **overrides)
    r = helpers.run_ocirun("run", "-d", "-b", bundle, cid, root=root, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return load_manager(json.loads((root / cid / "state.json").read_text())["cgroup"])


delete = functools.partial(helpers.delete, timeout=TIMEOUT)


def read(path) -> str:
    with open(path) as f:
        return f.read().strip()


# ---------------------------------------------------------------- memory, pids, cpu, cpuset

def test_memory_max_oom_kills(ocirun_root, tmp_path):
    r = run(tmp_path, ocirun_root, "awk 'BEGIN{s=\"x\"; while (1) s = s s}'; echo status=$?",
            resources={"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert r.stdout.strip() == "status=137", (r.stdout, r.stderr)


def test_pids_max_and_update(ocirun_root, tmp_path):
    from ocirun.update import update
    m = start(tmp_path, ocirun_root, "for i in $(seq 20); do (sleep 300 &); done 2>/dev/null; sleep 300", "p1",
              linux={"resources": {"pids": {"limit": 6}}})
    try:
        # A fixed wait on purpose: the loop must have tried all its forks for "never above 6"
        # to say something (a wait for 4 pids could return before a missing limit shows).
        time.sleep(3)
        assert 4 <= len(m.pids()) <= 6, m.pids()
        assert read(f"{m.paths['']}/pids.max") == "6"
        update(str(ocirun_root), "p1", {"pids": {"limit": 40}})
        assert read(f"{m.paths['']}/pids.max") == "40"
    finally:
        delete(ocirun_root, "p1")


def test_a_pids_max_with_no_room_for_the_init_is_named(ocirun_root, tmp_path):
    """The init's fork inside the cgroup gets EAGAIN: the error said only the kernel's words."""
    r = run(tmp_path, ocirun_root, "true", cid="p0", resources={"unified": {"pids.max": "0"}})
    helpers.one_line_error(r, "forking the container's init", "pids.max")
    assert not (ocirun_root / "p0").exists()


def test_cpu_max_throttles_a_busy_loop(ocirun_root, tmp_path):
    m = start(tmp_path, ocirun_root, "while :; do :; done", "cpu1",
              linux={"resources": {"cpu": {"quota": 10000, "period": 100000}}})
    try:
        assert read(f"{m.paths['']}/cpu.max") == "10000 100000"
        c0, t0 = stats.cpu_stats(m)["usage"]["total"], time.monotonic()
        time.sleep(3)  # the measuring window, not a wait for anything
        share = (stats.cpu_stats(m)["usage"]["total"] - c0) / 1e9 / (time.monotonic() - t0)
        assert 0.02 < share < 0.2, share
        assert stats.cpu_stats(m)["throttling"].get("throttledPeriods", 0) > 0
    finally:
        delete(ocirun_root, "cpu1")


def test_cpuset_pins_the_container(ocirun_root, tmp_path):
    if os.cpu_count() < 2:
        pytest.skip("the guest has one cpu")
    r = run(tmp_path, ocirun_root, "grep Cpus_allowed_list /proc/self/status",
            resources={"cpu": {"cpus": "1", "mems": "0"}})
    assert r.stdout.split() == ["Cpus_allowed_list:", "1"], (r.stdout, r.stderr)


# ---------------------------------------------------------------- io, hugetlb (cgroup level)

def _ram_disk() -> str | None:
    """MAJ:MIN of a RAM block device: the guest's root is 9p, so load brd (1 MiB) for one."""
    if not os.path.exists("/sys/block/ram0"):
        subprocess.run(["modprobe", "brd", "rd_nr=1", "rd_size=1024"], capture_output=True)
    try:
        return read("/sys/block/ram0/dev")
    except OSError:
        return None


def test_io_max_throttles_reads(ocirun_root, tmp_path):
    dev = _ram_disk()
    if dev is None:
        pytest.skip("no block device in the guest and brd could not be loaded")
    major, minor = map(int, dev.split(":"))
    rate = 256 << 10  # 256 KiB/s: reading 1 MiB directly must take about 4 s
    linux = {"devices": [{"path": "/dev/ram0", "type": "b", "major": major, "minor": minor}],
             "resources": {"devices": [{"allow": True, "type": "b", "major": major, "minor": minor, "access": "rwm"}],
                           "blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": rate}]}}}
    script = ("s=$(date +%s); dd if=/dev/ram0 of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null; "
              "echo took=$(( $(date +%s) - s ))")
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name="io1", linux=linux)
    cfg = helpers.read_config(bundle)
    cfg["linux"]["devices"] = linux["devices"]
    cfg["linux"]["resources"]["devices"] = cfg["linux"]["resources"].get("devices", []) + linux["resources"]["devices"]
    helpers.write_config(bundle, cfg)
    r = helpers.run_ocirun("run", "-b", bundle, "io1", root=ocirun_root, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    took = int(r.stdout.strip().rpartition("took=")[2])
    assert took >= 2, r.stdout  # unthrottled, 1 MiB from RAM takes well under a second


MAP_HUGETLB = 0x40000


def _touch_hugepages(cg: str, pages: int) -> str:
    """In a child placed in `cg`, map and touch `pages` 2 MiB huge pages; report what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            with open(f"{cg}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            try:
                mm = mmap.mmap(-1, pages << 21, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB)
                for i in range(pages):
                    mm[i << 21] = 1
                os.write(w, b"ok")
            except OSError as e:
                os.write(w, f"errno {e.errno}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 64).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return out


def test_hugetlb_limit(tmp_path):
    if int(read("/proc/sys/vm/nr_hugepages") or 0) < 4:
        pytest.skip("fewer than 4 huge pages reserved in the guest (V2RUN_HUGEPAGES)")
    name = f"/{helpers.TEST_PREFIX}-huge-{os.getpid()}"
    m = manager_for("huge", name, {"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]})
    m.create()
    try:
        m.apply_resources()
        d = m.paths[""]
        assert read(f"{d}/hugetlb.2MB.max") == str(2 << 20)
        assert _touch_hugepages(d, 1) == "ok"
        assert _touch_hugepages(d, 3) in ("errno 12", f"signal {signal.SIGBUS}")
    finally:
        m.destroy()


# ---------------------------------------------------------------- eBPF device filter

def _test_device():
    for path in ("/dev/rtc0", "/dev/hpet", "/dev/tty1", "/dev/loop0"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        kind = "b" if (st.st_mode & 0o170000) == 0o060000 else "c"
        return path, kind, os.major(st.st_rdev), os.minor(st.st_rdev)
    pytest.skip("no spare device node in the guest")


def test_ebpf_device_filter(ocirun_root, tmp_path):
    path, kind, major, minor = _test_device()
    node = {"path": "/dev/probe", "type": kind, "major": major, "minor": minor}
    script = ("for d in /dev/probe /dev/null /dev/zero /dev/urandom /dev/ptmx; do "
              "if e=$( (true <$d) 2>&1); then echo $d ok; else echo $d $e; fi; done")
    r = run(tmp_path, ocirun_root, script, cid="d1", resources={"devices": DENY_ALL}, devices=[node])
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert "Operation not permitted" in lines.pop("/dev/probe"), (r.stdout, r.stderr)
    assert set(lines.values()) == {"ok"}, r.stdout
    allow = DENY_ALL + [{"allow": True, "type": kind, "major": major, "minor": minor, "access": "rw"}]
    r = run(tmp_path, ocirun_root, script, cid="d2", resources={"devices": allow}, devices=[node])
    assert "Operation not permitted" not in r.stdout, (path, r.stdout)


# ---------------------------------------------------------------- freeze, kill, events

def test_freeze_stops_a_counter(ocirun_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mounts = helpers.default_config()["mounts"] + [
        # On /tmp, which the image has: a new mount point would be made in the shared rootfs.
        {"destination": "/tmp", "type": "bind", "source": str(out), "options": ["bind", "rw"]}]
    m = start(tmp_path, ocirun_root, "while :; do echo .; done >/tmp/n", "fz", mounts=mounts)
    size = lambda: (out / "n").stat().st_size  # noqa: E731
    try:
        helpers.wait_until(lambda: (out / "n").exists() and size() > 0, 60, "the counter to start")
        assert helpers.run_ocirun("pause", "fz", root=ocirun_root, timeout=TIMEOUT).returncode == 0
        assert "frozen 1" in read(f"{m.paths['']}/cgroup.events")
        a = size()
        time.sleep(1)  # a fixed wait on purpose: the check is that the counter did NOT move
        assert size() == a
        assert helpers.run_ocirun("resume", "fz", root=ocirun_root, timeout=TIMEOUT).returncode == 0
        helpers.wait_until(lambda: size() > a, 60, "the counter to move again after resume")
    finally:
        delete(ocirun_root, "fz")


def test_kill_all_uses_cgroup_kill(ocirun_root, tmp_path):
    m = start(tmp_path, ocirun_root, "for i in 1 2 3; do sleep 300 & done; wait", "k1")
    try:
        helpers.wait_until(lambda: len(m.pids()) == 4, 60, "the shell and its three sleeps")
        r = helpers.run_ocirun("kill", "--all", "k1", "KILL", root=ocirun_root, timeout=TIMEOUT)
        assert r.returncode == 0, r.stderr
        helpers.wait_until(lambda: m.pids() == [], 10, "every process of k1 to die")
        assert read(f"{m.paths['']}/cgroup.events").count("populated 0") == 1
    finally:
        delete(ocirun_root, "k1")


def test_events_stats_on_v2(ocirun_root, tmp_path):
    import io

    from ocirun import events as ev
    start(tmp_path, ocirun_root, "sleep 300", "ev1", linux={"resources": {"memory": {"limit": 64 << 20},
                                                                        "pids": {"limit": 9}}})
    try:
        out = io.StringIO()
        ev.events(str(ocirun_root), "ev1", stats_only=True, out=out)
        data = json.loads(out.getvalue())["data"]
        assert data["pids"] == {"current": 1, "limit": 9}
        assert data["memory"]["usage"]["limit"] == 64 << 20
        assert data["cpu"]["usage"]["total"] > 0
    finally:
        delete(ocirun_root, "ev1")


def test_processes_are_born_in_the_container_cgroup(ocirun_root, tmp_path):
    """The init and an exec'd process are in the container's cgroup: born there by clone3
    CLONE_INTO_CGROUP (cgroups/join.py), with no cgroup.procs write (the slow path)."""
    m = start(tmp_path, ocirun_root, "sleep 300", "born")
    try:
        leaf = m.paths[""]
        rel = "/" + os.path.relpath(leaf, "/sys/fs/cgroup")
        [init] = m.pids()
        assert read(f"/proc/{init}/cgroup") == f"0::{rel}"
        r = helpers.run_ocirun("exec", "born", "cat", "/proc/self/cgroup", root=ocirun_root, timeout=TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "0::/"  # the root of its cgroup namespace: the container's cgroup
        # exec --cgroup on the one v2 tree: a controller enabled there names it; others are refused.
        os.mkdir(f"{leaf}/sub")
        r = helpers.run_ocirun("exec", "--cgroup", "pids:sub", "born", "cat", "/proc/self/cgroup",
                               root=ocirun_root, timeout=TIMEOUT)
        assert (r.returncode, r.stdout.strip()) == (0, "0::/sub"), r.stderr
        r = helpers.run_ocirun("exec", "--cgroup", "nosuch:sub", "born", "true", root=ocirun_root, timeout=TIMEOUT)
        assert r.returncode == 255 and "no cgroup for controller 'nosuch'" in r.stderr, r.stderr
        r = helpers.run_ocirun("exec", "--cgroup", "pids:sub", "--cgroup", "memory:/", "born", "true",
                               root=ocirun_root, timeout=TIMEOUT)
        assert r.returncode == 255 and "give one path" in r.stderr, r.stderr
    finally:
        delete(ocirun_root, "born")


def test_no_cgroups_left():
    """Runs last in this file: nothing of ours is left in the guest's tree."""
    assert helpers.leftover_cgroups() == []
