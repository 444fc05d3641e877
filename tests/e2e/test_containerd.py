"""containerd (ctr, the CRI and the runc v2 shim) running containers on ocirun and on runc.

The runtime is given to the shim as its options (`BinaryName`, `Root`) two ways: ctr's
`--runc-binary` and `--runc-root`, which ctr sends as the task's runc shim options; and, the
Kubernetes way, a runtime entry in containerd's config.toml
(`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME.options] BinaryName = ...`)
picked by a pod's CRI runtime handler (a RuntimeClass's `handler`), through tests/e2e/cri.py.

ctr 1.6 has no way to give the runc shim its options from a file: for `io.containerd.runc.v2`
(its default `--runtime`) it builds them from its `--runc-*` flags alone and ignores
`--runtime-config-path`, and with any other `--runtime` (a path to containerd-shim-runc-v2
included) it sends the file's path as `runtimeoptions.v1.Options`, which the runc shim refuses
("type with url runtimeoptions.v1.Options: not found").  So the shim would run its default
`runc` from PATH; test_run_rm_shim_options_binary_name_is_what_runs checks, through a logging
wrapper, that the binary given as `BinaryName` is the one the shim runs.
"""
from __future__ import annotations

import contextlib
import re
import secrets
import time

import pytest

import engines
from engines import IMAGE, describe


@pytest.fixture(scope="module")
def containerd():
    engines.require_engine({"containerd": "containerd", "ctr": "containerd",
                            "containerd-shim-runc-v2": "containerd"})
    engine = engines.Containerd()
    yield engine
    problems = engine.close()
    assert not problems, f"containerd left behind: {problems}"


def new_id():
    return f"{engines.PREFIX}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def detached_task(containerd, runtime, *command):
    """A task started with `ctr run -d`; killed and deleted afterwards."""
    cid = new_id()
    result = containerd.ctr("run", "-d", *containerd.run_args(runtime), IMAGE, cid,
                            *(command or ("sleep", "1000")))
    assert result.returncode == 0, describe(result)
    try:
        yield cid
    finally:
        containerd.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid)
        containerd.ctr("task", "delete", "--force", cid)
        containerd.ctr("container", "delete", cid)


def task_status(containerd, cid):
    """(pid, status) of a task from `ctr task ls`."""
    listed = containerd.ctr("task", "ls")
    for line in listed.stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == cid:
            return int(fields[1]), fields[2]
    pytest.fail(f"task {cid} not listed: {describe(listed)}")


def wait_status(containerd, cid, wanted, timeout=10):
    # A poll with its own deadline: the failure shows the task's last status.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if task_status(containerd, cid)[1] == wanted:
            return
        time.sleep(0.1)
    pytest.fail(f"task {cid} never became {wanted}: {task_status(containerd, cid)}")


# --------------------------------------------------------------------------- run --rm

def test_run_rm_runc_binary(containerd, runtime):
    result = containerd.ctr("run", "--rm", *containerd.run_args(runtime), IMAGE, new_id(),
                            "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3, describe(result)
    assert result.stdout == "out\n" and "err" in result.stderr, describe(result)


def runtime_calls(log):
    """The argv (after the binary) of each call that engines.trace_wrapper logged, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [lines[i + 1].split() for i, line in enumerate(lines[:-1]) if line.startswith("=== ")]


def test_run_rm_shim_options_binary_name_is_what_runs(containerd, runtime):
    # BinaryName is a wrapper that logs each call and execs the runtime: a call logged is a
    # call of that runtime, and a shim that ran its default `runc` instead logs nothing.
    wrapper_dir = containerd.scratch / f"binary-name-{secrets.token_hex(4)}"
    wrapper = engines.trace_wrapper(engines.runtime_path(runtime), wrapper_dir, runtime)
    args = containerd.run_args(runtime)
    args[args.index("--runc-binary") + 1] = wrapper
    cid = new_id()
    result = containerd.ctr("run", "--rm", *args, IMAGE, cid, "sh", "-c", "echo via BinaryName")
    assert (result.returncode, result.stdout) == (0, "via BinaryName\n"), describe(result)
    calls = [call for call in runtime_calls(wrapper_dir / f"{runtime}.log") if cid in call]
    assert {"create", "start", "delete"} <= {word for call in calls for word in call}, (
        f"the shim did not run {runtime} (BinaryName {wrapper}) for {cid}; its calls: {calls}")
    root = str(containerd.scratch / "runc" / containerd.namespace)  # Root, per namespace
    roots = [call[call.index("--root") + 1] if "--root" in call else None for call in calls]
    assert roots == [root] * len(calls), (root, calls)


def test_run_tty(containerd, runtime):
    result = containerd.ctr("run", "--rm", "-t", *containerd.run_args(runtime), IMAGE, new_id(),
                            "sh", "-c", "tty; exit 2", tty=True)
    assert result.returncode == 2, describe(result)
    assert "/dev/pts/0" in result.stdout, describe(result)


# --------------------------------------------------------------------------- detached tasks

def test_detached_exec_ps_pause_resume_kill_delete(containerd, runtime):
    cid = new_id()
    result = containerd.ctr("run", "-d", *containerd.run_args(runtime), IMAGE, cid,
                            "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    assert result.returncode == 0, describe(result)
    try:
        pid, status = task_status(containerd, cid)
        assert status == "RUNNING"

        result = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c",
                                "echo exec out; exit 4")
        assert (result.returncode, result.stdout) == (4, "exec out\n"), describe(result)

        result = containerd.ctr("task", "ps", cid)  # the shim calls `<runtime> ps --format json`
        assert result.returncode == 0, describe(result)
        assert re.search(rf"^{pid}\s", result.stdout, re.M), describe(result)

        result = containerd.ctr("task", "pause", cid)
        assert result.returncode == 0, describe(result)
        assert task_status(containerd, cid)[1] == "PAUSED"
        result = containerd.ctr("task", "resume", cid)
        assert result.returncode == 0, describe(result)
        assert task_status(containerd, cid)[1] == "RUNNING"

        result = containerd.ctr("task", "kill", "--signal", "SIGTERM", cid)
        assert result.returncode == 0, describe(result)
        wait_status(containerd, cid, "STOPPED")
        result = containerd.ctr("task", "delete", cid)
        assert result.returncode == 0, describe(result)
        assert "exit code 7" in result.stderr, describe(result)  # ctr warns of the status
        result = containerd.ctr("container", "delete", cid)
        assert result.returncode == 0, describe(result)
    finally:
        containerd.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid)
        containerd.ctr("task", "delete", "--force", cid)
        containerd.ctr("container", "delete", cid)


def test_exec_tty(containerd, runtime):
    with detached_task(containerd, runtime) as cid:
        result = containerd.ctr("task", "exec", "-t", "--exec-id", "e1", cid, "sh", "-c",
                                "tty; exit 6", tty=True)
        assert result.returncode == 6, describe(result)
        assert "/dev/pts/" in result.stdout, describe(result)


def test_kill_all(containerd, runtime):
    with detached_task(containerd, runtime) as cid:
        result = containerd.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid)
        assert result.returncode == 0, describe(result)
        wait_status(containerd, cid, "STOPPED")


# --------------------------------------------------------------------------- errors

def test_create_error_reaches_ctr(containerd, runtime):
    result = containerd.ctr("run", "--rm", *containerd.run_args(runtime), IMAGE, new_id(),
                            "/no/such/binary")
    assert result.returncode != 0, describe(result)
    message = result.stderr
    assert "OCI runtime create failed: " in message, describe(result)
    assert "no such file or directory" in message.lower(), describe(result)
    # The shim reports the last error line of the runtime's JSON log, not a generic one.
    assert "/no/such/binary" in message, describe(result)


def test_exec_error_reaches_ctr(containerd, runtime):
    with detached_task(containerd, runtime) as cid:
        result = containerd.ctr("task", "exec", "--exec-id", "e1", cid, "/no/such/binary")
        assert result.returncode != 0, describe(result)
        assert "OCI runtime exec failed: " in result.stderr, describe(result)
        assert "no such file or directory" in result.stderr.lower(), describe(result)


# --------------------------------------------------------------------------- the CRI (Kubernetes)

@pytest.fixture(scope="module")
def cri_containerd():
    """containerd with the CRI plugin on and a config.toml runtime entry per runtime."""
    with engines.cri_containerd(import_image=False) as pair:
        yield pair


@contextlib.contextmanager
def pod(cri_containerd, runtime):
    """A pod sandbox whose RuntimeClass handler is `runtime`; stopped and removed afterwards."""
    import cri
    engine, client = cri_containerd
    name = new_id()
    config = cri.sandbox_config(name, str(engine.scratch / "pods" / name), engine.cgroup_parent)
    sandbox_id = client.run_pod_sandbox(config, runtime)
    try:
        yield client, sandbox_id, config, engine.scratch / "pods" / name
    finally:
        client.stop_pod_sandbox(sandbox_id)
        client.remove_pod_sandbox(sandbox_id)


def test_cri_runtime_handler_runs_container(cri_containerd, runtime):
    import cri
    with pod(cri_containerd, runtime) as (client, sandbox_id, config, logs):
        container = cri.container_config("c1", IMAGE, ["sh", "-c", "echo hi; exit 3"], "c1.log")
        cid = client.create_container(sandbox_id, container, config)
        client.start_container(cid)
        assert client.wait_exited(cid) == 3
        assert (logs / "c1.log").read_text().endswith(" stdout F hi\n")
        client.remove_container(cid)


def test_cri_exec_sync_in_pod(cri_containerd, runtime):
    import cri
    with pod(cri_containerd, runtime) as (client, sandbox_id, config, _logs):
        container = cri.container_config("c1", IMAGE, ["sleep", "1000"], "c1.log")
        cid = client.create_container(sandbox_id, container, config)
        client.start_container(cid)
        code, out, err = client.exec_sync(cid, ["sh", "-c", "ps -o pid,args; exit 4"])
        assert code == 4, (out, err)
        # The container joined the pod's pid namespace: the sandbox's sleep is pid 1.
        assert re.search(rb"^\s*1\s+/bin/sleep 2147483647$", out, re.M), out
        assert re.search(rb"^\s*\d+\s+sleep 1000$", out, re.M), out
        client.remove_container(cid)


def test_cri_create_error(cri_containerd, runtime):
    import cri
    import grpc
    with pod(cri_containerd, runtime) as (client, sandbox_id, config, _logs):
        container = cri.container_config("c1", IMAGE, ["/no/such/binary"], "c1.log")
        cid = client.create_container(sandbox_id, container, config)
        with pytest.raises(grpc.RpcError) as failure:
            client.start_container(cid)
        message = failure.value.details()
        assert "OCI runtime create failed: " in message, message
        assert "/no/such/binary" in message and "no such file or directory" in message, message
        client.remove_container(cid)
