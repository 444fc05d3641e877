"""dockerd 20.10 (with its own private containerd) running containers on ocirun and on runc.

ocirun is registered with `--add-runtime ocirun=PATH` and is the `--default-runtime`; each
scenario names its runtime with `docker run --runtime NAME`.
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess

import pytest

import engines
from engines import IMAGE, describe


@pytest.fixture(scope="module")
def docker():
    engines.require_engine({"dockerd": "docker.io", "docker": "docker.io",
                            "containerd": "containerd", "containerd-shim-runc-v2": "containerd"})
    engine = engines.Docker()
    yield engine
    problems = engine.close()
    assert not problems, f"docker left behind: {problems}"


def run_args(runtime):
    return ["--runtime", engines.DOCKER_RUNTIME_NAMES[runtime], "--network", "none"]


@contextlib.contextmanager
def detached(docker, runtime, *run_args_, command=("sleep", "1000")):
    name = f"{engines.PREFIX}-{secrets.token_hex(4)}"
    result = docker("run", "-d", "--name", name, *run_args(runtime), *run_args_, IMAGE, *command)
    assert result.returncode == 0, describe(result)
    try:
        yield name
    finally:
        docker("rm", "--force", name)


def inspect(docker, name, template):
    result = docker("inspect", "--format", template, name)
    assert result.returncode == 0, describe(result)
    return result.stdout.strip()


def test_run_rm_output_and_exit_code(docker, runtime):
    result = docker("run", "--rm", *run_args(runtime), IMAGE, "sh", "-c",
                    "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, describe(result)
    assert result.stdout == "out\n" and "err" in result.stderr, describe(result)


def test_default_runtime_is_ocirun(docker):
    result = docker("run", "-d", "--network", "none", IMAGE, "sleep", "1000")
    assert result.returncode == 0, describe(result)
    cid = result.stdout.strip()
    try:
        assert inspect(docker, cid, "{{.HostConfig.Runtime}}") == "ocirun"
    finally:
        docker("rm", "--force", cid)


def test_detached_exec_stop_rm(docker, runtime):
    with detached(docker, runtime) as name:
        assert inspect(docker, name, "{{.State.Status}}") == "running"
        result = docker("exec", name, "sh", "-c", "echo in $(hostname); exit 5")
        assert result.returncode == 5 and result.stdout.startswith("in "), describe(result)
        # sleep as pid 1 ignores SIGTERM: docker stop falls back to SIGKILL after --time.
        result = docker("stop", "--time", "1", name)
        assert result.returncode == 0, describe(result)
        assert inspect(docker, name, "{{.State.Status}} {{.State.ExitCode}}") == "exited 137"
        result = docker("rm", name)
        assert result.returncode == 0, describe(result)


def test_run_tty(docker, runtime):
    result = docker("run", "--rm", "-t", *run_args(runtime), IMAGE, "sh", "-c", "tty; exit 4",
                    tty=True)
    assert result.returncode == 4, describe(result)
    assert "/dev/pts/0" in result.stdout, describe(result)


def test_exec_tty(docker, runtime):
    with detached(docker, runtime) as name:
        result = docker("exec", "-t", name, "sh", "-c", "tty; exit 6", tty=True)
        assert result.returncode == 6, describe(result)
        assert "/dev/pts/" in result.stdout, describe(result)


def test_top(docker, runtime):
    with detached(docker, runtime) as name:
        result = docker("top", name)  # dockerd asks the runtime: `ps --format json <id>`
        assert result.returncode == 0, describe(result)
        assert re.search(r"sleep 1000\s*$", result.stdout, re.M), describe(result)


def test_pause_unpause(docker, runtime):
    with detached(docker, runtime) as name:
        result = docker("pause", name)
        assert result.returncode == 0, describe(result)
        assert inspect(docker, name, "{{.State.Status}}") == "paused"
        result = docker("unpause", name)
        assert result.returncode == 0, describe(result)
        assert inspect(docker, name, "{{.State.Status}}") == "running"
        assert docker("exec", name, "true").returncode == 0


def test_update_resources(docker, runtime):
    if runtime == "ocirun" and not _ocirun_has_update():
        pytest.skip("ocirun update not implemented yet")
    with detached(docker, runtime, "--memory", "128m") as name:
        result = docker("update", "--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5",
                        "--pids-limit", "40", name)
        assert result.returncode == 0, describe(result)
        result = docker("exec", name, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/pids/pids.max")
        assert result.returncode == 0, describe(result)
        assert result.stdout.split() == [str(64 << 20), "50000", "40"], describe(result)


def _ocirun_has_update() -> bool:
    return subprocess.run([engines.RUNTIMES["ocirun"], "update", "--help"],
                          capture_output=True).returncode == 0


def test_info_shows_ocirun(docker):
    result = docker("info", "--format", "{{json .}}")
    assert result.returncode == 0, describe(result)
    info = json.loads(result.stdout)
    assert info["DefaultRuntime"] == "ocirun"
    assert "ocirun" in info["Runtimes"]
    # dockerd ran `ocirun --version` and parsed it the way it parses runc's.
    version = subprocess.run([engines.RUNTIMES["ocirun"], "--version"], capture_output=True,
                             text=True).stdout
    commit = re.search(r"^commit: (.*)$", version, re.M).group(1)
    assert info["RuncCommit"]["ID"] == commit, info["RuncCommit"]
    result = docker("version", "--format", "{{json .Server.Components}}")
    components = {c["Name"]: c for c in json.loads(result.stdout)}
    assert components["ocirun"]["Version"] == re.search(r"version (\S+)", version).group(1)


def test_create_error(docker, runtime):
    result = docker("run", "--rm", *run_args(runtime), IMAGE, "/no/such/binary")
    assert result.returncode == 127, describe(result)
    assert "OCI runtime create failed" in result.stderr, describe(result)
    assert "no such file or directory" in result.stderr.lower(), describe(result)
