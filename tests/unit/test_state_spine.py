"""The container spine (state.py): the typed state.json with its format version, the status
table and `Container.open` — pure logic, no root, no containers."""
import fcntl
import json
import os

import pytest

from ocirun import state as S
from ocirun.errors import OCIError

# What the release before the format version wrote (no "state_version"), field for field.
OLD_RELEASE = {
    "ociVersion": "1.2.0", "id": "c1", "pid": 0, "start_time": None, "bundle": "/b", "rootfs": "/b/rootfs",
    "created": "2024-01-01T00:00:00.000000000Z", "owner": "", "annotations": {"k": "v"},
    "hooks": {"poststop": [{"path": "/bin/true"}]},
    "cgroup": {"mode": "legacy", "paths": {"pids": "/sys/fs/cgroup/pids/c1"}, "mounts": {}, "created": []},
    "shared_pid_ns": False,
}


def test_a_state_file_of_the_previous_release_loads():
    st = S.ContainerState.from_json("c1", dict(OLD_RELEASE, no_process=True, shared_rootfs_mount=42))
    assert (st.state_version, st.oci_version, st.id, st.pid, st.bundle, st.rootfs) == (1, "1.2.0", "c1", 0, "/b", "/b/rootfs")
    assert st.annotations == {"k": "v"} and st.hooks == OLD_RELEASE["hooks"] and st.cgroup == OLD_RELEASE["cgroup"]
    assert st.no_process and st.shared_rootfs_mount == 42 and st.start_time is None


def test_round_trip_keeps_every_field_and_adds_the_version():
    doc = dict(OLD_RELEASE, pid=7, start_time=123, no_process=True, shared_rootfs_mount=42)
    out = S.ContainerState.from_json("c1", doc).to_json()
    assert out == dict(doc, state_version=S.STATE_VERSION)
    assert S.ContainerState.from_json("c1", json.loads(json.dumps(out))).to_json() == out


def test_optional_fields_are_left_out_as_before():
    out = S.ContainerState.from_json("c1", OLD_RELEASE).to_json()
    assert "no_process" not in out and "shared_rootfs_mount" not in out


def test_a_newer_format_is_refused_by_its_version():
    with pytest.raises(OCIError) as ei:
        S.ContainerState.from_json("c1", dict(OLD_RELEASE, state_version=S.STATE_VERSION + 1, pid="new shape"))
    msg = str(ei.value)
    assert f"version {S.STATE_VERSION + 1}" in msg and "c1" in msg and "corrupt" not in msg, msg


@pytest.mark.parametrize("bad", [0, -1, "2", True, None, 1.0])
def test_a_malformed_version_is_corrupt(bad):
    with pytest.raises(OCIError, match="corrupt state file: field state_version"):
        S.ContainerState.from_json("c1", dict(OLD_RELEASE, state_version=bad))


@pytest.mark.parametrize("field,value", [("no_process", 1), ("shared_rootfs_mount", "5"),
                                         ("shared_rootfs_mount", 0), ("shared_rootfs_mount", True)])
def test_typed_optional_fields(field, value):
    with pytest.raises(OCIError, match=f"corrupt state file: field {field}"):
        S.ContainerState.from_json("c1", dict(OLD_RELEASE, **{field: value}))


def test_hook_state():
    st = S.ContainerState.from_json("c1", dict(OLD_RELEASE, pid=9))
    assert st.hook_state("running") == {"ociVersion": "1.2.0", "id": "c1", "status": "running", "pid": 9,
                                        "bundle": "/b", "annotations": {"k": "v"}}
    assert st.hook_state("stopped")["pid"] == 0


# ------------------------------------------------------------------ the status table

ALL = (S.CREATED, S.RUNNING, S.PAUSED, S.STOPPED)


def allowed(can, **kw):
    return {s for s in ALL if can(s, **kw)}


def test_transitions():
    assert allowed(S.can_start) == {S.CREATED}
    assert allowed(S.can_kill) == {S.CREATED, S.RUNNING, S.PAUSED}
    assert allowed(S.can_delete) == {S.STOPPED}
    assert allowed(S.can_delete, force=True) == set(ALL) and S.can_delete("unknown", force=True)
    assert allowed(S.can_exec) == {S.CREATED, S.RUNNING}
    assert allowed(S.can_exec, ignore_paused=True) == {S.CREATED, S.RUNNING, S.PAUSED}
    assert allowed(S.can_pause) == {S.CREATED, S.RUNNING}
    assert allowed(S.can_resume) == {S.PAUSED}
    assert allowed(S.can_update) == allowed(S.can_watch) == {S.CREATED, S.RUNNING, S.PAUSED}


def test_refusals_use_runcs_words():
    words = {(op, s): str(S.refusal(op, s, "c1")) for op, table in S._REFUSED.items() for s in table}
    assert words[("start", S.RUNNING)] == "cannot start an already running container"
    assert words[("start", S.PAUSED)] == "cannot start a container in the paused state"
    assert words[("start", S.STOPPED)] == "cannot start a container that has stopped"
    assert words[("delete", S.RUNNING)] == "cannot delete container c1 that is not stopped: running"
    assert words[("kill", S.STOPPED)] == "container not running"
    assert words[("exec", S.PAUSED)] == "cannot exec in a paused container (use --ignore-paused)"
    assert words[("pause", S.PAUSED)] == "container not running"
    assert words[("resume", S.RUNNING)] == "container not paused"
    assert words[("update", S.STOPPED)] == "container c1 is not running: cannot update a stopped container"
    assert words[("events", S.STOPPED)] == "container with id c1 is not running"


# ------------------------------------------------------------------ Container.open

def _write(root, cid, doc):
    os.makedirs(root / cid, exist_ok=True)
    (root / cid / S.STATE_FILE).write_text(json.dumps(doc))


def test_open_reads_status_and_cgroup(tmp_path):
    _write(tmp_path, "c1", dict(OLD_RELEASE, cgroup=None))  # pid 0: stopped
    with S.Container.open(str(tmp_path), "c1") as c:
        assert c.dir.lock_fd >= 0 and c.id == "c1" and c.state.bundle == "/b"
        assert c.status == S.STOPPED and c.cgroup() is None
        c.require("delete")
        with pytest.raises(OCIError, match="^container not running$"):
            c.require("kill")
        with pytest.raises(OCIError, match="cannot exec in a stopped container"):
            c.require("exec", ignore_paused=True)
    assert c.dir.lock_fd == -1


def test_open_unlocks_when_the_state_is_refused(tmp_path):
    _write(tmp_path, "c1", dict(OLD_RELEASE, state_version=99))
    with pytest.raises(OCIError, match="version 99"):
        S.Container.open(str(tmp_path), "c1")
    fd = os.open(tmp_path / "c1", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if open had kept its lock
    finally:
        os.close(fd)


def test_open_of_a_missing_container(tmp_path):
    with pytest.raises(OCIError, match="^container does not exist: nope$"):
        S.Container.open(str(tmp_path), "nope")


def test_save_writes_the_versioned_state(tmp_path):
    _write(tmp_path, "c1", OLD_RELEASE)
    with S.Container.open(str(tmp_path), "c1") as c:
        c.state.pid = 0
        c.save()
    assert json.loads((tmp_path / "c1" / S.STATE_FILE).read_text())["state_version"] == S.STATE_VERSION
