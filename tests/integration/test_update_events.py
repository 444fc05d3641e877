"""`update` and `events` on live containers (library functions ocirun.update / ocirun.events).

docker's update JSON (zeros mean "unchanged"), runc's update flags, `events --stats` in runc's
JSON shape, and the event stream reporting an OOM kill.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time

import pytest

import helpers
from helpers import delete
from ocirun import events as ev
from ocirun.cgroups import cgroup_mode, load_manager
from ocirun.errors import OCIError
from ocirun.update import parse_bytes, parse_update_flags, update


MODE = cgroup_mode()
DOCKER_UPDATE = helpers.FIXTURES / "docker-update-resources.json"


def start(tmp_path, root, cid, script="sleep 100", **resources):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", script], name=cid, linux={"resources": resources})
    r = helpers.run_ocirun("run", "-d", "-b", bundle, cid, root=root)
    assert r.returncode == 0, r.stderr
    st = json.loads((root / cid / "state.json").read_text())
    return load_manager(st["cgroup"])


def limit(m, v1_ctrl, v1_file, v2_file):
    d = m.paths[""] if MODE == "unified" else m.path(v1_ctrl)
    with open(f"{d}/{v2_file if MODE == 'unified' else v1_file}") as f:
        return f.read().strip()


@pytest.mark.skipif(not DOCKER_UPDATE.exists(), reason="docker update fixture missing")
def test_docker_update_json_changes_live_limits(ocirun_root, tmp_path):
    m = start(tmp_path, ocirun_root, "u1", memory={"limit": 128 << 20, "reservation": 16 << 20},
              pids={"limit": 10})
    try:
        doc = json.loads(DOCKER_UPDATE.read_text())
        update(str(ocirun_root), "u1", doc)
        assert limit(m, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
        assert limit(m, "pids", "pids.max", "pids.max") == "50"
        assert limit(m, "cpu", "cpu.cfs_quota_us", "cpu.max").split()[0] == "50000"
        # reservation 0 means unchanged: still 16 MiB
        assert limit(m, "memory", "memory.soft_limit_in_bytes", "memory.low") == str(16 << 20)
        assert json.loads(helpers.run_ocirun("state", "u1", root=ocirun_root).stdout)["status"] == "running"
    finally:
        delete(ocirun_root, "u1")


def test_update_flags_and_stdin(ocirun_root, tmp_path, monkeypatch):
    ns = argparse.Namespace(resources=None, memory="96m", memory_reservation=None, memory_swap="-1",
                            kernel_memory=None, kernel_memory_tcp=None, cpu_shares=None, cpu_period="100000",
                            cpu_quota="20000", cpu_rt_period=None, cpu_rt_runtime=None, cpuset_cpus="0",
                            cpuset_mems=None, pids_limit="-1", blkio_weight=None, l3_cache_schema=None,
                            mem_bw_schema=None)
    assert parse_update_flags(ns) == {"memory": {"limit": 96 << 20, "swap": -1},
                                      "cpu": {"period": 100000, "quota": 20000, "cpus": "0"},
                                      "pids": {"limit": -1}}
    # One JSON value is read, and no more: the sender may keep stdin open (runc stops there too;
    # reading to end-of-file waited as long as the sender did).
    r, w = os.pipe()
    os.write(w, b'  {"pids": {"limit": 7}}')
    closer = threading.Timer(5, os.close, (w,))
    closer.start()
    try:
        with os.fdopen(r) as stdin:
            monkeypatch.setattr("sys.stdin", stdin)
            ns.resources = "-"
            began = time.monotonic()
            assert parse_update_flags(ns) == {"pids": {"limit": 7}}
            assert time.monotonic() - began < 3
    finally:
        closer.join()
    assert parse_bytes("memory", "1g") == 1 << 30
    with pytest.raises(OCIError, match="--memory"):
        parse_bytes("memory", "lots")


def test_update_stdin_wrong_before_its_end_fails_at_once(ocirun_root, tmp_path):
    """Input that no more text can mend is refused without waiting for the sender to close;
    a value cut between two writes (a literal, a number) is waited for."""
    from ocirun.update import read_resources
    r, w = os.pipe()
    os.write(w, b'{"pids": bogus')
    closer = threading.Timer(5, os.close, (w,))
    closer.start()
    try:
        with os.fdopen(r) as stdin, pytest.MonkeyPatch.context() as mp:
            mp.setattr("sys.stdin", stdin)
            began = time.monotonic()
            with pytest.raises(OCIError, match="invalid JSON"):
                read_resources("-")
            assert time.monotonic() - began < 3
    finally:
        closer.join()
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, b'{"pids": {"limit": -'), time.sleep(0.2),
                                              os.write(w, b'1}, "x": tr'), time.sleep(0.2), os.write(w, b"ue}")))
    writer.start()
    try:
        with os.fdopen(r) as stdin, pytest.MonkeyPatch.context() as mp:
            mp.setattr("sys.stdin", stdin)
            assert read_resources("-") == {"pids": {"limit": -1}, "x": True}
    finally:
        writer.join()
        os.close(w)


@pytest.mark.skipif(MODE == "unified", reason="reads the v1 devices controller's devices.list; "
                    "the eBPF filter of a v2 host is not readable back as rules")
def test_update_leaves_device_rules_alone(ocirun_root, tmp_path):
    """containerd's CRI sends the create-time device list with every update: a rule added since
    (NVIDIA's hook adds `c 195:* rwm` for a GPU) must survive it, as with runc, which never
    touches devices on update."""
    m = start(tmp_path, ocirun_root, "ud", cpu={"shares": 512})
    try:
        d = m.path("devices")
        with open(f"{d}/devices.allow", "w") as f:
            f.write("c 195:* rwm")
        update(str(ocirun_root), "ud", {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 300}})
        assert limit(m, "cpu", "cpu.shares", "cpu.weight") == "300"
        with open(f"{d}/devices.list") as f:
            assert "c 195:* rwm" in f.read().splitlines()
    finally:
        delete(ocirun_root, "ud")


def test_refused_update_puts_back_what_it_wrote(ocirun_root, tmp_path):
    """A refused value (a cpuset the host lacks) fails the update after memory and cpu were
    written: they get their old values back (runc re-applies its config), so the engine's
    "update failed" is true of the cgroup too."""
    m = start(tmp_path, ocirun_root, "uf", memory={"limit": 100 << 20}, cpu={"shares": 512})
    try:
        before = [limit(m, "memory", "memory.limit_in_bytes", "memory.max"), limit(m, "cpu", "cpu.shares", "cpu.weight")]
        missing_cpu = str(os.cpu_count() + 64)
        with pytest.raises(OCIError, match="linux.resources.cpu.cpus"):  # memory, then shares, then cpus
            update(str(ocirun_root), "uf", {"memory": {"limit": 300 << 20}, "cpu": {"shares": 700, "cpus": missing_cpu}})
        assert [limit(m, "memory", "memory.limit_in_bytes", "memory.max"),
                limit(m, "cpu", "cpu.shares", "cpu.weight")] == before
    finally:
        delete(ocirun_root, "uf")


def test_update_of_a_stopped_container_fails(ocirun_root, tmp_path):
    bundle = helpers.make_bundle(tmp_path, ["true"], name="s1")
    assert helpers.run_ocirun("run", "--keep", "-b", bundle, "s1", root=ocirun_root).returncode == 0
    try:
        with pytest.raises(OCIError, match="stopped"):
            update(str(ocirun_root), "s1", {"pids": {"limit": 5}})
    finally:
        delete(ocirun_root, "s1")


def test_events_stats_has_runcs_shape(ocirun_root, tmp_path):
    start(tmp_path, ocirun_root, "e1", memory={"limit": 64 << 20}, pids={"limit": 20})
    try:
        out = io.StringIO()
        assert ev.events(str(ocirun_root), "e1", stats_only=True, out=out) == 0
        doc = json.loads(out.getvalue())
        assert doc["type"] == "stats" and doc["id"] == "e1"
        data = doc["data"]
        assert {"cpu", "memory", "pids", "blkio", "hugetlb"} <= set(data)
        assert data["pids"] == {"current": 1, "limit": 20}
        assert data["memory"]["usage"]["limit"] == 64 << 20
        assert data["memory"]["usage"]["usage"] > 0
        assert data["cpu"]["usage"]["total"] > 0
        # runc's CPUSet fields are not omitempty: all of them, always (0 where v2 lacks the file)
        assert {"cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
                "memory_spread_slab", "memory_pressure", "sched_load_balance",
                "sched_relax_domain_level"} <= set(data["cpuset"])
        if MODE != "unified":
            assert data["cpuset"]["sched_load_balance"] == 1  # the v1 file's default, read
    finally:
        delete(ocirun_root, "e1")


@pytest.mark.skipif(MODE == "unified", reason="v1 blkio files (the v2 io.stat path is another branch)")
def test_events_stats_counts_direct_writes_in_blkio(ocirun_root, tmp_path):
    """BFQ's blkio files exist on this kind of host but stay "Total 0" when the disk uses another
    scheduler: the counts come from the first group that names a device (runc's order)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", "dd if=/dev/zero of=/tmp/f bs=64k count=32 oflag=direct"
                                            " 2>/dev/null; sleep 100"], name="eb",
                                 mounts=helpers.default_config()["mounts"] + [
                                     {"destination": "/tmp", "type": "bind", "source": str(data_dir),
                                      "options": ["rbind", "rw"]}])
    assert helpers.run_ocirun("run", "-d", "-b", bundle, "eb", root=ocirun_root).returncode == 0
    try:
        helpers.wait_until(lambda: (data_dir / "f").exists() and (data_dir / "f").stat().st_size == 32 << 16,
                           what="the container's direct writes")
        out = io.StringIO()
        assert ev.events(str(ocirun_root), "eb", stats_only=True, out=out) == 0
        written = [e for e in json.loads(out.getvalue())["data"]["blkio"].get("ioServiceBytesRecursive", [])
                   if e.get("op") == "Write"]
        assert written and max(e.get("value", 0) for e in written) >= 32 << 16, written
    finally:
        delete(ocirun_root, "eb")


def test_events_reports_an_oom_kill_and_ends_with_the_container(ocirun_root, tmp_path):
    start(tmp_path, ocirun_root, "o1", "sleep 1; awk 'BEGIN{s=\"x\"; while (1) s = s s}'; sleep 2",
          memory={"limit": 32 << 20, "swap": 32 << 20})
    out = io.StringIO()
    t = threading.Thread(target=ev.events, args=(str(ocirun_root), "o1", 0.5, False, out), daemon=True)
    t.start()
    t.join(timeout=20)
    try:
        assert not t.is_alive(), "events did not end when the container stopped"
        kinds = [json.loads(line)["type"] for line in out.getvalue().splitlines()]
        assert "oom" in kinds and kinds[0] == "stats", kinds
    finally:
        delete(ocirun_root, "o1")


def test_events_of_a_stopped_container_fails(ocirun_root, tmp_path):
    bundle = helpers.make_bundle(tmp_path, ["true"], name="s2")
    assert helpers.run_ocirun("run", "--keep", "-b", bundle, "s2", root=ocirun_root).returncode == 0
    try:
        with pytest.raises(OCIError, match="is not running"):
            ev.events(str(ocirun_root), "s2", stats_only=True, out=io.StringIO())
    finally:
        delete(ocirun_root, "s2")


@pytest.mark.parametrize("text, seconds", [("5s", 5), ("250ms", 0.25), ("1m30s", 90), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert ev.parse_duration(text) == pytest.approx(seconds)
