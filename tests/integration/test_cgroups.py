"""The cgroup manager against the real cgroup trees of this host (root; hybrid, legacy or unified).

Every test works in cgroups named ocirun-test-<pid>-<n>; the `fresh_id` fixture kills what it
started and removes every directory carrying its name in every hierarchy, even when the test
failed half-way, so nothing is left on the host.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time

import pytest

import helpers
from ocirun.cgroups import cgroup_mode, load_manager, manager_for
from ocirun.cgroups.detect import hierarchies
from ocirun.cgroups.manager import Manager
from ocirun.errors import OCIError


MODE = cgroup_mode()
_counter = itertools.count()


def dirs_named(name: str) -> list[str]:
    """Every directory in every mounted hierarchy whose path contains `name` (os.walk, not find)."""
    out = []
    for h in hierarchies().values():
        for root, dirs, _ in os.walk(h.mountpoint):
            out += [os.path.join(root, d) for d in dirs if name in d]
    return out


def _sweep(name: str) -> None:
    for top in sorted(dirs_named(name), key=len):
        if not os.path.isdir(top):
            continue
        subs = [os.path.join(r, d) for r, ds, _ in os.walk(top, topdown=False) for d in ds]
        for d in subs + [top]:
            for _ in range(100):
                try:
                    pids = open(f"{d}/cgroup.procs").read().split()
                except OSError:
                    pids = []
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY: the killed tasks are still leaving; a bounded retry
                    time.sleep(0.01)


@pytest.fixture
def fresh_id():
    name = f"ocirun-test-{os.getpid()}-{next(_counter)}"
    started: list[subprocess.Popen] = []
    yield name, started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
    _sweep(name)
    assert dirs_named(name) == [], "cleanup left cgroups behind"


def sleeper(started) -> subprocess.Popen:
    p = subprocess.Popen(["sleep", "1000"])
    started.append(p)
    return p


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def proc_state(pid: int) -> str:
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return "?"


def limit_file(m, controller, v1_name, v2_name) -> str:
    if m.mode == "unified":
        return read(f"{m.paths['']}/{v2_name}")
    return read(f"{m.path(controller)}/{v1_name}")


# ---------------------------------------------------------------- the whole life cycle

def test_life_cycle(fresh_id):
    name, started = fresh_id
    res = {"memory": {"limit": 64 << 20, "reservation": 32 << 20}, "pids": {"limit": 50},
           "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}}
    m = manager_for(name, "/" + name, res)
    m.create()
    m.create()  # idempotent
    assert m.apply_resources() == []
    p = sleeper(started)
    m.add_pid(p.pid)

    assert limit_file(m, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert limit_file(m, "memory", "memory.soft_limit_in_bytes", "memory.low") == str(32 << 20)
    assert limit_file(m, "pids", "pids.max", "pids.max") == "50"
    assert limit_file(m, "cpuset", "cpuset.cpus", "cpuset.cpus") == "0"
    if m.mode == "unified":
        assert read(f"{m.paths['']}/cpu.max") == "50000 100000"
        assert read(f"{m.paths['']}/cpu.weight") == "20"
    else:
        assert read(f"{m.path('cpu')}/cpu.cfs_quota_us") == "50000"
        assert read(f"{m.path('cpu')}/cpu.shares") == "512"

    # the pid is in every hierarchy, the cgroup2 one included on hybrid hosts
    expected = {"", "memory", "pids", "freezer"} if MODE == "hybrid" else set()
    assert expected <= set(m.paths)
    for key, d in m.paths.items():
        assert str(p.pid) in read(f"{d}/cgroup.procs").split(), key
    assert m.pids() == [p.pid]

    # freeze / thaw, observed from outside the manager
    assert m.state() == "running"
    m.freeze()
    assert m.state() == "paused"
    if "" in m.paths:
        assert "frozen 1" in read(f"{m.paths['']}/cgroup.events")
    else:
        assert read(f"{m.path('freezer')}/freezer.state") == "FROZEN"
    m.thaw()
    assert m.state() == "running"
    # cgroup.events says "frozen 0" at once; the tasks wake a moment later
    helpers.wait_until(lambda: proc_state(p.pid) == "S", 5, "the thawed task to sleep again")

    # a later process rebuilds the manager from state.json
    m2 = load_manager(json.loads(json.dumps(m.to_state())))
    m2.kill_all(signal.SIGKILL)
    assert p.wait(timeout=5) == -signal.SIGKILL
    m2.destroy()
    m2.destroy()  # idempotent
    assert dirs_named(name) == []


def test_kill_all_with_a_catchable_signal(fresh_id):
    name, started = fresh_id
    m = manager_for(name, "/" + name, {})
    m.create()
    procs = [sleeper(started) for _ in range(3)]
    for p in procs:
        m.add_pid(p.pid)
    assert m.pids() == sorted(p.pid for p in procs)
    m.kill_all(signal.SIGTERM)
    assert [p.wait(timeout=5) for p in procs] == [-signal.SIGTERM] * 3
    m.destroy()


def test_kill_a_paused_container(fresh_id):
    name, started = fresh_id
    m = manager_for(name, "/" + name, {})
    m.create()
    p = sleeper(started)
    m.add_pid(p.pid)
    m.freeze()
    m.kill_all(signal.SIGKILL)
    assert p.wait(timeout=5) == -signal.SIGKILL
    m.destroy()
    assert dirs_named(name) == []


@pytest.mark.skipif(MODE == "unified", reason="the v1 freezer exists only on v1/hybrid hosts")
def test_v1_freezer(fresh_id):
    """On a legacy host pause uses freezer.state: simulate one by leaving out the cgroup2 tree."""
    name, started = fresh_id
    full = manager_for(name, "/" + name, {})
    paths = {k: v for k, v in full.paths.items() if k != ""}
    m = Manager("legacy", paths, {k: full.mounts[k] for k in paths})
    m.create()
    p = sleeper(started)
    m.add_pid(p.pid)
    m.freeze()
    assert read(f"{m.path('freezer')}/freezer.state") == "FROZEN"
    assert m.state() == "paused"
    assert proc_state(p.pid) in ("D", "T")
    m.thaw()
    assert m.state() == "running"
    m.freeze()
    m.destroy()  # kills a frozen task: must thaw for it to die
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert dirs_named(name) == []


def test_destroy_kills_leftovers_and_nested_cgroups(fresh_id):
    """The container made a cgroup of its own below ours and moved a process there."""
    name, started = fresh_id
    m = manager_for(name, "/" + name, {})
    m.create()
    p = sleeper(started)
    m.add_pid(p.pid)
    q = sleeper(started)
    for d in m.paths.values():
        os.mkdir(f"{d}/inner")
        for f in ("cpuset.cpus", "cpuset.mems"):  # a new v1 cpuset starts empty
            if os.path.exists(f"{d}/inner/{f}") and not read(f"{d}/inner/{f}"):
                with open(f"{d}/inner/{f}", "w") as fh:
                    fh.write(read(f"{d}/{f}"))
        with open(f"{d}/inner/cgroup.procs", "w") as fh:
            fh.write(str(q.pid))
    assert m.pids() == sorted([p.pid, q.pid])
    m.destroy()
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert q.wait(timeout=5) == -signal.SIGKILL
    assert dirs_named(name) == []


# ---------------------------------------------------------------- enforcement

def test_a_single_pid_limit_waits_only_for_creates_intermediate(fresh_id):
    """Only `create` (whose intermediate is in the cgroup beside the init for a moment) defers a
    limit of 1 to after_intermediate(); anyone else (restore's adopt) gets it written at once."""
    name, _started = fresh_id
    m = manager_for(name, "/" + name, {"pids": {"limit": 1}})
    m.create()
    m.apply_resources()
    assert limit_file(m, "pids", "pids.max", "pids.max") == "1"
    m.destroy()
    m = manager_for(name, "/" + name, {"pids": {"limit": 1}})
    m.defer_single_pid_limit = True
    m.create()
    m.apply_resources()
    assert limit_file(m, "pids", "pids.max", "pids.max") == "max"
    m.after_intermediate()
    assert limit_file(m, "pids", "pids.max", "pids.max") == "1"
    m.destroy()


def test_pids_limit_is_enforced(fresh_id):
    """pids.limit 5: a process in the cgroup trying to start 10 children gets only 4."""
    name, started = fresh_id
    m = manager_for(name, "/" + name, {"pids": {"limit": 5}})
    m.create()
    m.apply_resources()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the spawner: waits until placed, forks sleepers, reports how many it got
        try:
            os.close(go_w)
            os.read(go_r, 1)
            ok = 0
            for _ in range(10):
                try:
                    if os.fork() == 0:
                        os.execv("/bin/sleep", ["sleep", "1000"])
                    ok += 1
                except OSError:
                    pass
            os.write(res_w, str(ok).encode())
            os.read(go_r, 1)  # stay until the parent looked
        finally:
            os._exit(0)
    try:
        os.close(go_r)
        os.close(res_w)
        m.add_pid(pid)
        os.write(go_w, b"g")
        got = int(os.read(res_r, 16))
        assert got == 4  # the spawner itself is the 5th
        assert len(m.pids()) == 5
    finally:
        m.destroy()
        os.waitpid(pid, 0)
        os.close(go_w)
        os.close(res_r)


def test_memory_limit_is_enforced(fresh_id):
    """A process allocating past memory.limit is OOM-killed (swap capped to the same value)."""
    name, started = fresh_id
    m = manager_for(name, "/" + name, {"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    m.create()
    m.apply_resources()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        b = bytearray(128 << 20)  # noqa: F841  # touched by the zero fill: 128 MiB > 32 MiB
        os._exit(0)
    os.close(r)
    m.add_pid(pid)
    os.write(w, b"g")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    m.destroy()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


# ---------------------------------------------------------------- paths and ownership

def test_relative_path_is_below_our_cgroup_and_ancestors_are_kept(fresh_id):
    name, started = fresh_id
    m = manager_for(name, f"{name}/sub", {})
    own = {k: h.own for k, h in hierarchies().items()}
    for key, d in m.paths.items():
        base = own[key] if not (m.mode == "unified") else os.path.dirname(own[key].rstrip("/")) or "/"
        assert d == os.path.normpath(f"{m.mounts[key]}/{base}/{name}/sub")
    m.create()
    assert all(os.path.isdir(d) for d in m.paths.values())
    m.destroy()
    assert dirs_named(name) == []
    for key in m.paths:  # the runtime's own cgroup is still there
        assert os.path.isdir(os.path.normpath(f"{m.mounts[key]}/{own[key]}"))


def test_default_path_is_the_id(fresh_id):
    name, _ = fresh_id
    m = manager_for(name, "", {})
    assert all(d.endswith("/" + name) for d in m.paths.values())


def test_ancestor_we_did_not_create_is_kept(fresh_id):
    name, _ = fresh_id
    parent = manager_for(name, "/" + name, {})
    parent.create()  # someone else's parent cgroup
    m = manager_for(name + "-c", f"/{name}/c", {})
    m.create()
    assert all(d.endswith(f"/{name}/c") for d in m.created)
    m.destroy()
    assert all(os.path.isdir(d) for d in parent.paths.values())
    assert not any(os.path.exists(d) for d in m.paths.values())
    parent.destroy()


def test_created_parents_are_removed(fresh_id):
    name, _ = fresh_id
    m = manager_for(name, f"/{name}/a/b", {})
    m.create()
    assert len(m.created) == 3 * len(m.paths)
    m.destroy()
    assert dirs_named(name) == []


def test_busy_cgroup_is_used_with_a_warning_and_left_alone(fresh_id):
    # runc: "container's cgroup is not empty: N process(es) found", and it goes on (issue 13)
    name, started = fresh_id
    other = manager_for(name, "/" + name, {})
    other.create()
    p = sleeper(started)
    other.add_pid(p.pid)
    warnings = []
    m = manager_for(name + "-2", "/" + name, {}, warn=warnings.append)
    m.plan()
    m.create()
    assert warnings == ["container's cgroup is not empty: 1 process(es) found"]
    assert m.shared and load_manager(m.to_state()).shared
    m.destroy()  # must not kill someone else's process, nor wait for it
    assert p.poll() is None
    assert all(os.path.isdir(d) for d in other.paths.values() if p.pid in _procs_of(d))
    other.destroy()


def _procs_of(d: str) -> list[int]:
    with open(f"{d}/cgroup.procs") as f:
        return [int(x) for x in f.read().split()]


def test_destroy_after_an_interrupted_create(fresh_id):
    name, _ = fresh_id
    m = manager_for(name, f"/{name}/x", {})
    state = m.to_state()  # saved before create, as a crash could leave it
    first_key = next(iter(m.paths))
    os.makedirs(m.paths[first_key])  # only one hierarchy got its directory
    m2 = load_manager(state)
    m2.destroy()
    assert not os.path.exists(m.paths[first_key])  # the leaf is the container's: removed
    # its parent was not recorded as ours: kept (the sweep in the fixture removes it)
    assert os.path.isdir(os.path.dirname(m.paths[first_key]))


def test_planned_parents_are_removed_after_an_interrupted_create(fresh_id):
    # create saves the state after plan(): the parents it was about to make count as ours
    name, _ = fresh_id
    m = manager_for(name, f"/{name}/x", {})
    m.plan()
    state = m.to_state()
    first_key = next(iter(m.paths))
    os.makedirs(m.paths[first_key])  # killed after the first hierarchy's mkdirs
    load_manager(state).destroy()
    assert dirs_named(name) == []


# ---------------------------------------------------------------- errors

def test_kernel_refusal_names_field_file_and_reason(fresh_id):
    name, _ = fresh_id
    m = manager_for(name, "/" + name, {"cpu": {"cpus": "999999"}})
    m.create()
    with pytest.raises(OCIError) as e:
        m.apply_resources()
    msg = str(e.value)
    assert msg.startswith("linux.resources.cpu.cpus: writing '999999' to ")
    assert "cpuset.cpus" in msg and msg.endswith(("invalid argument", "numerical result out of range"))
    m.destroy()


def test_add_pid_of_a_dead_process_fails_cleanly(fresh_id):
    name, _ = fresh_id
    m = manager_for(name, "/" + name, {})
    m.create()
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(OCIError, match=rf"^cgroup: adding pid {p.pid} to .*: no such process"):
        m.add_pid(p.pid)
    m.destroy()


# ---------------------------------------------------------------- joining (cgroups/join.py)

def _own_cgroups(pid: int) -> dict[str, str]:
    """/proc/<pid>/cgroup → {hierarchy key: path}, keys as in Manager.paths ("" = cgroup2)."""
    out = {}
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def _fork_joined(m, force_slow_v2: bool = False) -> int:
    """Fork a child that joins `m` the way create/exec do, reports, and waits to be killed."""
    from ocirun.cgroups import join as cgroup_join
    plan = m.join_plan()
    if force_slow_v2:
        plan.v2_dir, v2 = None, plan.v2_dir  # fork() then takes plain os.fork
    r, w = os.pipe()
    pid = cgroup_join.fork(plan)
    if pid == 0:
        try:
            os.close(r)
            plan.enter_v1()
            os.write(w, b"joined")
            time.sleep(1000)  # the child's whole job: stay in the cgroup until the test kills it
        finally:
            os._exit(1)
    os.close(w)
    if force_slow_v2:
        plan.v2_dir, plan.v2_pending = v2, v2 is not None
        plan.finish_in_parent(pid)
    assert os.read(r, 16) == b"joined"
    os.close(r)
    return pid


@pytest.mark.parametrize("slow_v2", [False, True], ids=["clone3", "cgroup.procs"])
def test_a_new_process_joins_every_hierarchy(fresh_id, slow_v2):
    """A forked child is in the container's cgroup in every hierarchy: the cgroup2 one by birth
    (clone3 CLONE_INTO_CGROUP) or by the parent's write, each v1 one by its own `tasks` write."""
    name, _ = fresh_id
    m = manager_for(name, "/" + name, {})
    m.create()
    pid = _fork_joined(m, force_slow_v2=slow_v2)
    try:
        seen = _own_cgroups(pid)
        hier = hierarchies()
        for key, leaf in m.paths.items():
            rel = "/" + os.path.relpath(leaf, hier[key].mountpoint)
            assert seen[key] == rel, (key, seen)
        assert pid in m.pids()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    m.destroy()


def test_fork_into_cgroup_is_a_real_fork():
    """linux.fork_into_cgroup behaves as os.fork in both processes (own pid, exit status seen
    by waitpid, the interpreter usable in the child) and lands the child in the cgroup."""
    from ocirun import linux
    from ocirun.cgroups.detect import UNIFIED_KEY
    h = hierarchies().get(UNIFIED_KEY)
    if h is None:
        pytest.skip("host has no cgroup2 hierarchy")
    target = os.path.join(h.mountpoint, f"ocirun-test-{os.getpid()}-fork")
    os.mkdir(target)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        r, w = os.pipe()
        pid = linux.fork_into_cgroup(fd)
        if pid == 0:
            try:
                line = [ln for ln in read("/proc/self/cgroup").splitlines() if ln.startswith("0::")][0]
                os.write(w, f"{os.getpid()} {line}".encode())
            finally:
                os._exit(7)
        os.close(fd)
        os.close(w)
        got = os.read(r, 200).decode()
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 7
        assert got == f"{pid} 0::/{os.path.basename(target)}"
    finally:
        os.rmdir(target)
