"""The engines with their default cgroup configuration on a systemd host: the systemd driver.

podman (`cgroup_manager = "systemd"`, its default), dockerd (`native.cgroupdriver=systemd`, its
default on cgroup v2) and containerd (`SystemdCgroup = true` in the runc shim's options, through
ctr and through the CRI with a Kubernetes pod slice) each call the runtime with `--systemd-cgroup`
and a `slice:prefix:name` cgroupsPath; the container must then be a transient scope of that
slice, hold the limits the engine asked for (in the cgroup files and in the unit's properties),
and the scope must be gone once the engine removed the container.  Every scenario runs on ocirun
and on runc.  One daemon per engine for the whole module: the guest that runs these is slow.
"""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

import engines
import helpers
from engines import IMAGE, describe

CGROUP = Path("/sys/fs/cgroup")
# Everything here runs under software emulation: engine commands get generous deadlines.
SLOW = 300

MEMORY = 64 << 20


def systemctl(*args: str) -> str:
    result = engines.run(["systemctl", *args], timeout=SLOW)
    assert result.returncode == 0, describe(result)
    return result.stdout


def unit_property(unit: str, name: str) -> str:
    return systemctl("show", "-p", name, "--value", unit).strip()


def unit_listed(unit: str) -> bool:
    """Is `unit` known to systemd at all (loaded, active or not)?"""
    return unit in systemctl("list-units", "--all", "--plain", "--no-legend", unit)


def proc_cgroup(pid: int) -> str:
    """The cgroup v2 path of a host pid, as /proc/PID/cgroup says ("0::/a/b")."""
    return Path(f"/proc/{pid}/cgroup").read_text().strip()


def assert_limits(cgroup: Path, unit: str, memory: int = MEMORY, pids: int | None = 50,
                  cpu: str = "50000 100000") -> None:
    """The cgroup files and the unit's properties hold --memory 64m, --pids-limit 50, --cpus 0.5."""
    files = {"memory.max": str(memory), "cpu.max": cpu}
    if pids is not None:
        files["pids.max"] = str(pids)
    found = {name: (cgroup / name).read_text().strip() for name in files}
    assert found == files, f"{cgroup}: {found}"
    # The runtime's unit: delegated (its cgroup files are the runtime's to write), devices
    # restricted by systemd too (runc: DevicePolicy=strict plus a DeviceAllow list).
    assert unit_property(unit, "Delegate") == "yes"
    assert unit_property(unit, "DevicePolicy") == "strict"
    assert unit_property(unit, "MemoryMax") == str(memory)
    assert unit_property(unit, "CPUQuotaPerSecUSec") == "500ms"
    if pids is not None:
        assert unit_property(unit, "TasksMax") == str(pids)


def assert_unit_gone(unit: str, cgroup: Path) -> None:
    # systemd stops an emptied scope asynchronously: give it a moment.
    helpers.wait_until(lambda: not unit_listed(unit), 60, f"{unit} to leave systemctl list-units",
                       interval=0.5)
    helpers.wait_until(lambda: not cgroup.exists(), 60, f"{cgroup} to be removed", interval=0.5)


def new_name() -> str:
    return f"{engines.PREFIX}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- podman

@pytest.fixture(scope="module")
def podman():
    engines.require_engine({"podman": "podman", "conmon": "conmon"})
    engine = engines.Podman(cgroup_manager="systemd")
    yield engine
    problems = engine.close()
    assert not problems, f"podman left behind: {problems}"


def test_podman_systemd_scope_limits_exec_stop_rm(podman, runtime):
    name = new_name()
    result = podman("run", "-d", "--name", name, "--memory", "64m", "--pids-limit", "50",
                    "--cpus", "0.5", IMAGE, "sleep", "1000", runtime=runtime, timeout=SLOW)
    assert result.returncode == 0, describe(result)
    try:
        cid, pid = podman("inspect", "--format", "{{.Id}} {{.State.Pid}}", name,
                          timeout=SLOW).stdout.split()
        unit = f"libpod-{cid}.scope"
        cgroup = CGROUP / "machine.slice" / unit
        assert proc_cgroup(int(pid)) == f"0::/machine.slice/{unit}"
        assert unit_property(unit, "ActiveState") == "active"
        assert_limits(cgroup, unit)
        # exec joins the container's cgroup (its cgroup namespace shows it as the root).
        result = podman("exec", name, "sh", "-c", "cat /sys/fs/cgroup/memory.max; exit 5",
                        timeout=SLOW)
        assert (result.returncode, result.stdout) == (5, f"{MEMORY}\n"), describe(result)
        # pause freezes the scope's cgroup (the runtime's freezer, not systemd's).
        result = podman("pause", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert "frozen 1" in (cgroup / "cgroup.events").read_text()
        result = podman("unpause", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert "frozen 0" in (cgroup / "cgroup.events").read_text()
        # sleep as pid 1 ignores SIGTERM: stop falls back to SIGKILL after the timeout.
        result = podman("stop", "--time", "1", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        state = podman("inspect", "--format", "{{.State.Status}}", name, timeout=SLOW)
        assert state.stdout.strip() == "exited", describe(state)
        result = podman("rm", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert_unit_gone(unit, cgroup)
    finally:
        podman("rm", "--force", "--time", "0", name, timeout=SLOW)


COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done"


def _log_numbers(podman, name: str) -> list[int]:
    out = podman("logs", name, timeout=SLOW).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def test_podman_checkpoint_and_restore(podman, runtime):
    """`podman container checkpoint` / `restore` (live migration's building blocks) drive the
    runtime's checkpoint and restore: the counter goes on from where it was, never from 1."""
    if shutil.which("criu") is None:
        pytest.skip("criu is not installed")
    name = new_name()
    result = podman("run", "-d", "--name", name, IMAGE, "sh", "-c", COUNTER, runtime=runtime, timeout=SLOW)
    assert result.returncode == 0, describe(result)
    try:
        helpers.wait_until(lambda: len(_log_numbers(podman, name)) >= 3, 60, "the counter to count", interval=0.5)
        result = podman("container", "checkpoint", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        state = podman("inspect", "--format", "{{.State.Status}}", name, timeout=SLOW).stdout.strip()
        assert state == "exited", state
        before = _log_numbers(podman, name)
        result = podman("container", "restore", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert podman("inspect", "--format", "{{.State.Status}}", name, timeout=SLOW).stdout.strip() == "running"
        helpers.wait_until(lambda: len(_log_numbers(podman, name)) >= len(before) + 3, 60,
                           "the restored counter to go on", interval=0.5)
        numbers = _log_numbers(podman, name)
        assert numbers == list(range(1, len(numbers) + 1)), numbers  # continued: no second 1
        result = podman("exec", name, "true", timeout=SLOW)
        assert result.returncode == 0, describe(result)
    finally:
        podman("rm", "--force", "--time", "0", name, timeout=SLOW)


# --------------------------------------------------------------------------- docker

@pytest.fixture(scope="module")
def docker():
    engines.require_engine({"dockerd": "docker.io", "docker": "docker.io",
                            "containerd": "containerd", "containerd-shim-runc-v2": "containerd"})
    engine = engines.Docker(cgroup_driver="systemd")
    yield engine
    problems = engine.close()
    assert not problems, f"docker left behind: {problems}"


def test_docker_systemd_scope_limits_exec_stop_rm(docker, runtime):
    name = new_name()
    result = docker("run", "-d", "--name", name, "--runtime", engines.DOCKER_RUNTIME_NAMES[runtime],
                    "--network", "none", "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5",
                    IMAGE, "sleep", "1000", timeout=SLOW)
    assert result.returncode == 0, describe(result)
    try:
        cid, pid = docker("inspect", "--format", "{{.Id}} {{.State.Pid}}", name,
                          timeout=SLOW).stdout.split()
        unit = f"docker-{cid}.scope"
        cgroup = CGROUP / "system.slice" / unit
        assert proc_cgroup(int(pid)) == f"0::/system.slice/{unit}"
        assert unit_property(unit, "ActiveState") == "active"
        assert_limits(cgroup, unit)
        result = docker("exec", name, "sh", "-c", "cat /sys/fs/cgroup/pids.max; exit 5",
                        timeout=SLOW)
        assert (result.returncode, result.stdout) == (5, "50\n"), describe(result)
        # docker update: the runtime's `update` changes the unit's properties and the files; a
        # daemon-reload (systemd re-applying the unit's properties) must keep the new values.
        result = docker("update", "--memory", "96m", "--memory-swap", "192m", "--pids-limit", "40",
                        "--cpus", "0.25", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        systemctl("daemon-reload")
        found = {f: (cgroup / f).read_text().strip() for f in ("memory.max", "pids.max", "cpu.max")}
        assert found == {"memory.max": str(96 << 20), "pids.max": "40",
                         "cpu.max": "25000 100000"}, found
        assert unit_property(unit, "MemoryMax") == str(96 << 20)
        assert unit_property(unit, "TasksMax") == "40"
        assert unit_property(unit, "CPUQuotaPerSecUSec") == "250ms"
        result = docker("stop", "--time", "1", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        state = docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name,
                       timeout=SLOW)
        assert state.stdout.strip() == "exited 137", describe(state)
        result = docker("rm", name, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert_unit_gone(unit, cgroup)
    finally:
        docker("rm", "--force", name, timeout=SLOW)


# --------------------------------------------------------------------------- containerd

@pytest.fixture(scope="module")
def containerd():
    """One containerd for ctr and the CRI, `SystemdCgroup = true` in every runc option table."""
    with engines.cri_containerd(systemd_cgroup=True) as pair:
        yield pair


def ctr_task_pid(containerd, cid: str) -> int:
    listed = containerd.ctr("task", "ls", timeout=SLOW)
    for line in listed.stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == cid:
            return int(fields[1])
    pytest.fail(f"task {cid} not listed: {describe(listed)}")


def ctr_remove(containerd, cid: str) -> None:
    containerd.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid, timeout=SLOW)
    containerd.ctr("task", "delete", "--force", cid, timeout=SLOW)
    containerd.ctr("container", "delete", cid, timeout=SLOW)


def test_ctr_systemd_cgroup_scope_limits_exec_kill_delete(containerd, runtime):
    engine, _client = containerd
    cid = new_name()
    # ctr's way: --runc-systemd-cgroup (SystemdCgroup in the shim's options) with --cgroup
    # naming "slice:prefix:name".
    result = engine.ctr("run", "-d", *engine.run_args(runtime), "--cgroup",
                        f"system.slice:ctr:{cid}", "--memory-limit", str(MEMORY), "--cpus", "0.5",
                        IMAGE, cid, "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 1; done",
                        timeout=SLOW)
    assert result.returncode == 0, describe(result)
    try:
        unit = f"ctr-{cid}.scope"
        cgroup = CGROUP / "system.slice" / unit
        pid = ctr_task_pid(engine, cid)
        assert proc_cgroup(pid) == f"0::/system.slice/{unit}"
        assert unit_property(unit, "ActiveState") == "active"
        assert_limits(cgroup, unit, pids=None)
        result = engine.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c",
                            "cat /proc/self/cgroup; exit 4", timeout=SLOW)
        assert result.returncode == 4, describe(result)
        # ctr gives no cgroup namespace: the exec'd process sees its host path.
        assert result.stdout == f"0::/system.slice/{unit}\n", describe(result)
        result = engine.ctr("task", "kill", "--signal", "SIGTERM", cid, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        helpers.wait_until(lambda: not helpers.alive(pid), 60, f"task {cid} to exit", 0.5)
        result = engine.ctr("task", "delete", cid, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert "exit code 7" in result.stderr, describe(result)
        result = engine.ctr("container", "delete", cid, timeout=SLOW)
        assert result.returncode == 0, describe(result)
        assert_unit_gone(unit, cgroup)
    finally:
        ctr_remove(engine, cid)


def cri_call(client, method: str, *fields) -> dict:
    """A RuntimeService call with the slow guest's deadline (cri.CRIClient's methods use 60 s)."""
    return client.call(method, list(fields), timeout=SLOW)


def test_cri_pod_in_kubepods_slice(containerd, runtime):
    """A kubelet with the systemd driver: the pod's cgroup_parent is a slice name and each of the
    pod's containers (the sandbox's too) is a cri-containerd-<id>.scope in it."""
    import cri
    engine, client = containerd
    uid = secrets.token_hex(8)  # kubelet writes a pod uid's dashes as underscores
    pod_slice = f"kubepods-besteffort-pod{uid}.slice"
    pod_cgroup = CGROUP / "kubepods.slice" / "kubepods-besteffort.slice" / pod_slice
    name = new_name()
    config = cri.sandbox_config(name, str(engine.scratch / "pods" / name), pod_slice)
    sandbox_id = cri.first(cri_call(client, "RunPodSandbox", (1, config), (2, runtime)), 1).decode()
    try:
        sandbox_scope = pod_cgroup / f"cri-containerd-{sandbox_id}.scope"
        assert (sandbox_scope / "cgroup.procs").read_text().split(), sandbox_scope
        # LinuxContainerConfig.resources: cpu_period, cpu_quota, memory_limit_in_bytes.
        resources = [(1, 100000), (2, 50000), (4, MEMORY)]
        container = cri.container_config("c1", IMAGE, ["sleep", "1000"], "c1.log") + \
            [(15, [(1, resources)])]
        cid = cri.first(cri_call(client, "CreateContainer", (1, sandbox_id), (2, container),
                                 (3, config)), 1).decode()
        cri_call(client, "StartContainer", (1, cid))
        unit = f"cri-containerd-{cid}.scope"
        scope = pod_cgroup / unit
        pids = (scope / "cgroup.procs").read_text().split()
        assert pids, scope
        assert [Path(f"/proc/{p}/cmdline").read_bytes() for p in pids] == [b"sleep\x001000\x00"]
        assert_limits(scope, unit, pids=None)
        # The CRI gives the container a cgroup namespace rooted at its scope; the exec'd process
        # joins it (and the scope's limits are what it sees).
        code, out, err = client.exec_sync(
            cid, ["sh", "-c", "cat /proc/self/cgroup /sys/fs/cgroup/memory.max; exit 4"],
            timeout=SLOW)
        assert (code, out) == (4, f"0::/\n{MEMORY}\n".encode()), (code, out, err)
        cri_call(client, "StopPodSandbox", (1, sandbox_id))
        cri_call(client, "RemoveContainer", (1, cid))
        assert_unit_gone(unit, scope)
        cri_call(client, "RemovePodSandbox", (1, sandbox_id))
        sandbox_id = None
        assert_unit_gone(sandbox_scope.name, sandbox_scope)
    finally:
        if sandbox_id:
            cri_call(client, "StopPodSandbox", (1, sandbox_id))
            cri_call(client, "RemovePodSandbox", (1, sandbox_id))
        # The kubelet removes a pod's slice; here nobody else will.
        engines.run(["systemctl", "stop", pod_slice], timeout=SLOW)
