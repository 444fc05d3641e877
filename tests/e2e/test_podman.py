"""podman (with conmon, cgroupfs, no network) running its everyday commands on ocirun and on runc.

One podman configuration serves the whole module; both runtimes are registered in its
containers.conf and each scenario picks one with `podman --runtime NAME`.
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
def podman():
    engines.require_engine({"podman": "podman", "conmon": "conmon"})
    engine = engines.Podman()
    yield engine
    problems = engine.close()
    assert not problems, f"podman left behind: {problems}"


@contextlib.contextmanager
def detached(podman, runtime, *run_args, command=("sleep", "1000")):
    """A container started with `podman run -d`; force-removed afterwards."""
    name = f"{engines.PREFIX}-{secrets.token_hex(4)}"
    result = podman("run", "-d", "--name", name, *run_args, IMAGE, *command, runtime=runtime)
    assert result.returncode == 0, describe(result)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name)


def run_rm(podman, runtime, *args, tty=False):
    return podman("run", "--rm", *args, runtime=runtime, tty=tty)


def status(podman, name):
    result = podman("inspect", "--format", "{{.State.Status}}", name)
    assert result.returncode == 0, describe(result)
    return result.stdout.strip()


# --------------------------------------------------------------------------- lifecycle

def test_run_rm_output_and_exit_code(podman, runtime):
    result = run_rm(podman, runtime, IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, describe(result)
    assert result.stdout == "out\n", describe(result)
    assert "err" in result.stderr, describe(result)


def test_run_stdin(podman, runtime):
    result = podman("run", "--rm", "-i", IMAGE, "tr", "a-z", "A-Z", runtime=runtime, input="hello\n")
    assert (result.returncode, result.stdout) == (0, "HELLO\n"), describe(result)


def test_detached_exec_stop_rm(podman, runtime):
    name = f"{engines.PREFIX}-{secrets.token_hex(4)}"
    result = podman("run", "-d", "--name", name, IMAGE, "sleep", "1000", runtime=runtime)
    assert result.returncode == 0, describe(result)
    try:
        assert status(podman, name) == "running"
        result = podman("exec", name, "sh", "-c", "echo in $(hostname); exit 5")
        assert result.returncode == 5, describe(result)
        assert result.stdout.startswith("in "), describe(result)
        # sleep as pid 1 ignores SIGTERM: stop has to fall back to SIGKILL after the timeout.
        result = podman("stop", "--time", "1", name)
        assert result.returncode == 0, describe(result)
        assert status(podman, name) == "exited"
        result = podman("rm", name)
        assert result.returncode == 0, describe(result)
    finally:
        podman("rm", "--force", "--time", "0", name)
    assert podman("container", "exists", name).returncode == 1


def test_exec_sees_container_processes(podman, runtime):
    with detached(podman, runtime) as name:
        result = podman("exec", name, "ps", "-o", "pid,args")
        assert result.returncode == 0, describe(result)
        assert re.search(r"^\s*1\s+sleep 1000$", result.stdout, re.M), describe(result)


def test_run_tty(podman, runtime):
    result = run_rm(podman, runtime, "-t", IMAGE, "sh", "-c", "tty; exit 4", tty=True)
    assert result.returncode == 4, describe(result)
    assert "/dev/pts/0" in result.stdout, describe(result)


def test_exec_tty(podman, runtime):
    with detached(podman, runtime) as name:
        result = podman("exec", "-t", name, "sh", "-c", "tty; test -t 0 && echo stdin-is-tty",
                        tty=True)
        assert result.returncode == 0, describe(result)
        assert "/dev/pts/" in result.stdout and "stdin-is-tty" in result.stdout, describe(result)


def test_pause_unpause(podman, runtime):
    with detached(podman, runtime) as name:
        result = podman("pause", name)
        assert result.returncode == 0, describe(result)
        assert status(podman, name) == "paused"
        result = podman("unpause", name)
        assert result.returncode == 0, describe(result)
        assert status(podman, name) == "running"
        result = podman("exec", name, "true")
        assert result.returncode == 0, describe(result)


def test_top(podman, runtime):
    with detached(podman, runtime) as name:
        result = podman("top", name, "pid", "args")
        assert result.returncode == 0, describe(result)
        assert re.search(r"^1\s+sleep 1000\s*$", result.stdout, re.M), describe(result)


def test_kill_signal(podman, runtime):
    script = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done"
    with detached(podman, runtime, command=("sh", "-c", script)) as name:
        _wait_for_log(podman, name, "ready")
        result = podman("kill", "--signal", "USR1", name)
        assert result.returncode == 0, describe(result)
        _wait_for_log(podman, name, "got-usr1")
        result = podman("kill", "--signal", "KILL", name)
        assert result.returncode == 0, describe(result)
        result = podman("wait", name)
        assert result.stdout.strip() == "137", describe(result)


def _wait_for_log(podman, name, text, tries=50):
    # A poll with its own bound: the failure shows the last `podman logs`.
    import time
    for _ in range(tries):
        logs = podman("logs", name)
        if text in logs.stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"{text!r} never appeared in the logs of {name}: {describe(logs)}")


# --------------------------------------------------------------------------- options

def test_read_only(podman, runtime):
    result = run_rm(podman, runtime, "--read-only", IMAGE, "sh", "-c",
                    "touch /tmp/ok && echo tmp-writable; touch /x")
    assert result.returncode == 1, describe(result)
    assert "tmp-writable" in result.stdout, describe(result)
    assert "Read-only file system" in result.stderr, describe(result)


def test_volume(podman, runtime, tmp_path):
    (tmp_path / "from-host").write_text("host data\n")
    result = run_rm(podman, runtime, "-v", f"{tmp_path}:/data", IMAGE, "sh", "-c",
                    "cat /data/from-host && echo ctr data > /data/from-ctr")
    assert (result.returncode, result.stdout) == (0, "host data\n"), describe(result)
    assert (tmp_path / "from-ctr").read_text() == "ctr data\n"


def test_tmpfs(podman, runtime):
    result = run_rm(podman, runtime, "--tmpfs", "/scratch:size=1m", IMAGE, "sh", "-c",
                    "grep ' /scratch ' /proc/mounts && touch /scratch/x")
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith("tmpfs /scratch tmpfs"), describe(result)
    assert "size=1024k" in result.stdout, describe(result)


@pytest.mark.parametrize("user, expected", [
    ("1000:1000", "uid=1000(test) gid=1000(test)"),
    ("test", "uid=1000(test) gid=1000(test) groups=100(users),1000(test)"),
    ("65534:100", "uid=65534(nobody) gid=100(users)"),
])
def test_user(podman, runtime, user, expected):
    result = run_rm(podman, runtime, "--user", user, IMAGE, "id")
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip().startswith(expected), describe(result)


def test_cap_drop_add(podman, runtime):
    result = run_rm(podman, runtime, "--cap-drop", "all", "--cap-add", "NET_RAW,CHOWN", IMAGE,
                    "grep", "^Cap", "/proc/self/status")
    assert result.returncode == 0, describe(result)
    caps = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000002001", describe(result)


def test_cap_drop_chown(podman, runtime):
    result = run_rm(podman, runtime, "--cap-drop", "CHOWN", IMAGE, "chown", "1000", "/tmp")
    assert result.returncode == 1, describe(result)
    assert "Operation not permitted" in result.stderr, describe(result)


def test_memory(podman, runtime):
    result = run_rm(podman, runtime, "--memory", "64m", IMAGE,
                    "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert (result.returncode, result.stdout) == (0, f"{64 << 20}\n"), describe(result)


def test_pids_limit(podman, runtime):
    result = run_rm(podman, runtime, "--pids-limit", "50", IMAGE,
                    "cat", "/sys/fs/cgroup/pids/pids.max")
    assert (result.returncode, result.stdout) == (0, "50\n"), describe(result)


def test_cpus(podman, runtime):
    result = run_rm(podman, runtime, "--cpus", "0.5", IMAGE, "sh", "-c",
                    "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us")
    assert (result.returncode, result.stdout) == (0, "50000\n100000\n"), describe(result)


@pytest.mark.parametrize("opts, expected", [([], "0"),
                                            (["--security-opt", "no-new-privileges"], "1")])
def test_no_new_privileges(podman, runtime, opts, expected):
    result = run_rm(podman, runtime, *opts, IMAGE, "grep", "NoNewPrivs", "/proc/self/status")
    assert result.returncode == 0, describe(result)
    assert result.stdout.split() == ["NoNewPrivs:", expected], describe(result)


def test_default_seccomp_profile(podman, runtime):
    if runtime == "ocirun" and not _ocirun_has_seccomp():
        pytest.skip("ocirun seccomp not implemented yet (features: linux.seccomp.enabled false)")
    result = run_rm(podman, runtime, IMAGE, "grep", "^Seccomp:", "/proc/self/status")
    assert (result.returncode, result.stdout.split()) == (0, ["Seccomp:", "2"]), describe(result)
    unconfined = run_rm(podman, runtime, "--security-opt", "seccomp=unconfined", IMAGE,
                        "grep", "^Seccomp:", "/proc/self/status")
    assert unconfined.stdout.split() == ["Seccomp:", "0"], describe(unconfined)


def _ocirun_has_seccomp() -> bool:
    out = subprocess.run([engines.RUNTIMES["ocirun"], "features"], capture_output=True, text=True)
    try:
        return bool(json.loads(out.stdout)["linux"]["seccomp"]["enabled"])
    except (ValueError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("command, code, words", [
    ("/no/such/binary", 127, "no such file or directory"),
    ("/etc/passwd", 126, "permission denied"),
])
def test_exec_failure_exit_code_and_message(podman, runtime, command, code, words):
    result = run_rm(podman, runtime, IMAGE, command)
    assert result.returncode == code, describe(result)
    assert words in result.stderr.lower(), describe(result)
    # podman names the runtime before the message it read from the runtime's JSON log.
    assert f"{runtime}:" in result.stderr, describe(result)


def test_exec_failure_in_podman_exec(podman, runtime):
    with detached(podman, runtime) as name:
        result = podman("exec", name, "/no/such/binary")
        assert result.returncode == 127, describe(result)
        assert "no such file or directory" in result.stderr.lower(), describe(result)
