"""Bad input and failures: exit 1, one line on stderr, one fresh error line in `--log` (json or
text, as engines read it), the message naming the config.json field at fault — and a failed
create leaves no state dir, cgroup, process or mount behind.  Exit codes are compared with runc
(the standard) where it is cheap.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

import helpers
from helpers import default_config, make_bundle, one_line_error, run_ocirun, run_runc


TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def processes_rooted_at(rootfs) -> list[int]:
    """Host pids whose root directory is `rootfs` (a leaked container init would be one)."""
    found = []
    target = os.path.realpath(rootfs)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/root") == target:
                    found.append(int(name))
            except OSError:
                pass
    return found


def assert_nothing_left(root, bundle) -> None:
    config = helpers.read_config(bundle)
    assert os.listdir(root) == [], os.listdir(root)
    cgroups_path = config.get("linux", {}).get("cgroupsPath")
    if cgroups_path:
        assert not os.path.exists("/sys/fs/cgroup/pids" + cgroups_path)
        assert not os.path.exists("/sys/fs/cgroup/unified" + cgroups_path)
    rootfs = config.get("root", {}).get("path")
    if rootfs and os.path.isabs(rootfs):
        assert processes_rooted_at(rootfs) == []
    assert helpers.leftover_mounts(bundle) == []


# ============================================================================ --log

def test_log_json_appends_one_error_line_per_failure(ocirun_root, tmp_path):
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"written before","time":"2020-01-01T00:00:00Z"}\n')
    messages = []
    for cid in ("nope1", "nope2"):
        r = run_ocirun("--log", log, "--log-format", "json", "state", cid, root=ocirun_root)
        messages.append(one_line_error(r))
    lines = log.read_text().splitlines()
    assert len(lines) == 3, lines
    for line, msg in zip(lines[1:], messages, strict=True):
        assert '"level":"error"' in line  # literally, as tools grep for it
        entry = json.loads(line)
        assert set(entry) == {"level", "msg", "time"}
        assert entry["level"] == "error" and entry["msg"] == msg
        assert TIME_RE.match(entry["time"]), entry["time"]
    assert "container does not exist" in messages[0] and "nope2" in messages[1]


def test_log_text_format(ocirun_root, tmp_path):
    log = tmp_path / "log.txt"
    r = run_ocirun("--log", log, "--log-format", "text", "kill", "nope", root=ocirun_root)
    msg = one_line_error(r)
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    m = re.fullmatch(r'time="([^"]+)" level=error msg=(".*")', lines[0])
    assert m, lines[0]
    assert TIME_RE.match(m.group(1)) and json.loads(m.group(2)) == msg


def test_log_failure_of_the_container_side_reaches_the_log(ocirun_root, tmp_path):
    # An error found by the init (after fork) travels back and is logged like any other.
    log = tmp_path / "log.json"
    bundle = make_bundle(tmp_path, ["nope"])
    r = run_ocirun("--log", log, "--log-format", "json", "create", "-b", bundle, "c1", root=ocirun_root)
    msg = one_line_error(r)
    assert msg == 'exec: "nope": executable file not found in $PATH'
    assert json.loads(log.read_text().splitlines()[-1])["msg"] == msg
    assert_nothing_left(ocirun_root, bundle)


def test_unwritable_log_does_not_hide_the_error(ocirun_root, tmp_path):
    """A log that opens but takes no writes (/dev/full: ENOSPC) must not hide the real error.
    (One that cannot be opened at all fails the command first, as with runc: test_cli.py.)"""
    r = run_ocirun("--log", "/dev/full", "--log-format", "json", "state", "x", root=ocirun_root)
    assert "container does not exist" in one_line_error(r)


# ============================================================================ bad ids, bundles

@pytest.mark.parametrize("cid,needle", [
    ("../x", "invalid container id format"), ("a/b", "invalid container id format"),
    ("..", "invalid container id format"), ("", "container id cannot be empty"),
])
def test_bad_container_id(ocirun_root, tmp_path, cid, needle):
    bundle = make_bundle(tmp_path, ["true"])
    for cmd in (["create", "-b", bundle, cid], ["run", "-b", bundle, cid], ["state", cid],
                ["kill", cid], ["delete", cid], ["start", cid]):
        msg = one_line_error(run_ocirun(*cmd, root=ocirun_root))
        assert needle in msg, (cmd, msg)
    assert os.listdir(ocirun_root) == []
    assert not (tmp_path / "x").exists()
    assert_nothing_left(ocirun_root, bundle)


def test_duplicate_id(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "1000"])
    other = make_bundle(tmp_path, ["sleep", "1000"], name="other")
    assert run_ocirun("create", "-b", bundle, "dup", root=ocirun_root).returncode == 0
    try:
        before = json.loads(run_ocirun("state", "dup", root=ocirun_root).stdout)
        msg = one_line_error(run_ocirun("create", "-b", other, "dup", root=ocirun_root))
        assert msg == "container with id exists: dup"
        after = json.loads(run_ocirun("state", "dup", root=ocirun_root).stdout)
        assert after == before  # the first container is untouched
        cg = "/sys/fs/cgroup/pids" + helpers.read_config(other)["linux"]["cgroupsPath"]
        assert not os.path.exists(cg)
    finally:
        helpers.delete(ocirun_root, "dup", check=False)


def test_missing_bundle(ocirun_root, tmp_path):
    msg = one_line_error(run_ocirun("create", "-b", tmp_path / "nope", "c1", root=ocirun_root))
    assert str(tmp_path / "nope") in msg
    msg = one_line_error(run_ocirun("create", "-b", tmp_path, "c1", root=ocirun_root))
    assert "config.json" in msg and "no such file" in msg
    assert os.listdir(ocirun_root) == []


def test_invalid_json(ocirun_root, tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"ociVersion": "1.2.0",')
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert msg.startswith("config.json: invalid JSON")
    assert os.listdir(ocirun_root) == []


@pytest.mark.parametrize("overrides,path", [
    ({"process": {"user": {"uid": "abc"}}}, "process.user.uid: "),
    ({"process": {"args": "sh"}}, "process.args: "),
    ({"linux": {"namespaces": [{"type": "mount"}, {"type": "bogus"}]}}, "linux.namespaces[1].type: "),
    ({"mounts": [{"destination": 5, "type": "tmpfs", "source": "tmpfs"}]}, "mounts[0].destination: "),
    ({"ociVersion": None}, "ociVersion"),
])
def test_schema_violation_names_the_json_path(ocirun_root, tmp_path, overrides, path):
    bundle = make_bundle(tmp_path, ["true"], **overrides)
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert msg.startswith(path), msg
    assert_nothing_left(ocirun_root, bundle)


def test_missing_rootfs(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], root={"path": "rootfs-that-is-not-there"})
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert msg.startswith("root.path: ") and "rootfs-that-is-not-there" in msg
    assert_nothing_left(ocirun_root, bundle)


@pytest.mark.parametrize("args,expect", [
    (["nope"], 'exec: "nope": executable file not found in $PATH'),
    (["/bin/nope"], 'exec: "/bin/nope": stat /bin/nope: no such file or directory'),
])
def test_missing_binary_fails_create_and_leaves_nothing(ocirun_root, tmp_path, args, expect):
    bundle = make_bundle(tmp_path, args)
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert msg == expect
    assert_nothing_left(ocirun_root, bundle)
    # `run` fails the same way (and does not print a second error when cleaning up).
    msg = one_line_error(run_ocirun("run", "-b", bundle, "c1", root=ocirun_root))
    assert msg == expect
    assert_nothing_left(ocirun_root, bundle)


def test_not_executable(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["/etc/passwd"])
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert "permission denied" in msg
    assert_nothing_left(ocirun_root, bundle)


def test_bind_mount_source_missing(ocirun_root, tmp_path):
    mounts = default_config()["mounts"] + [
        {"destination": "/mnt", "type": "bind", "source": str(tmp_path / "gone"), "options": ["rbind"]}]
    bundle = make_bundle(tmp_path, ["true"], mounts=mounts)
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert msg.startswith(f"mounts[{len(mounts) - 1}].source: "), msg
    assert "no such file or directory" in msg
    assert_nothing_left(ocirun_root, bundle)


def test_terminal_without_console_socket(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process={"terminal": True})
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert "console-socket" in msg
    assert_nothing_left(ocirun_root, bundle)


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here: tests/systemd covers it")
def test_systemd_cgroup_without_systemd_is_refused(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], linux={"cgroupsPath": "system.slice:ocirun-test:c1"})
    msg = one_line_error(run_ocirun("--systemd-cgroup", "create", "-b", bundle, "c1", root=ocirun_root))
    assert "systemd is not running on this host" in msg
    assert_nothing_left(ocirun_root, bundle)


def test_systemd_form_without_the_flag_is_refused(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], linux={"cgroupsPath": "system.slice:ocirun-test:c1"})
    msg = one_line_error(run_ocirun("create", "-b", bundle, "c1", root=ocirun_root))
    assert "linux.cgroupsPath" in msg and "--systemd-cgroup" in msg
    assert_nothing_left(ocirun_root, bundle)


# ============================================================================ the same exit codes as runc

def _runc_cases(tmp_path):
    good = make_bundle(tmp_path, ["sleep", "1000"], name="good")
    nobin = make_bundle(tmp_path, ["nope"], name="nobin")
    badjson = tmp_path / "badjson"
    badjson.mkdir()
    (badjson / "config.json").write_text("{")
    return [
        ("bad id", ["create", "-b", good, "a/b"]),
        ("empty id", ["create", "-b", good, ""]),
        ("missing bundle", ["create", "-b", tmp_path / "nope", "x1"]),
        ("invalid json", ["create", "-b", badjson, "x2"]),
        ("missing binary", ["create", "-b", nobin, "x3"]),
        ("state missing", ["state", "nope"]),
        ("kill missing", ["kill", "nope", "9"]),
        ("start missing", ["start", "nope"]),
        ("delete missing", ["delete", "nope"]),
        ("delete --force missing", ["delete", "--force", "nope"]),
    ]


def test_exit_codes_match_runc(ocirun_root, runc_root, tmp_path):
    ours, theirs = {}, {}
    for name, args in _runc_cases(tmp_path):
        ours[name] = run_ocirun(*args, root=ocirun_root).returncode
        theirs[name] = run_runc(*args, root=runc_root).returncode
    assert ours == theirs
    assert os.listdir(ocirun_root) == []
    shutil.rmtree(runc_root / "x3", ignore_errors=True)  # runc leaves nothing either; be sure


def test_wrong_state_exit_codes_match_runc(ocirun_root, runc_root, tmp_path):
    """start twice, delete running without --force, kill stopped: runc's codes and messages."""
    bundle = make_bundle(tmp_path, ["sh", "-c", "sleep 0.3"])
    results = {}
    for run, root in ((run_ocirun, ocirun_root), (run_runc, runc_root)):
        codes = []
        codes.append(run("create", "-b", bundle, "w1", root=root).returncode)
        codes.append(run("start", "w1", root=root).returncode)
        codes.append(run("start", "w1", root=root).returncode)
        codes.append(run("delete", "w1", root=root).returncode)
        def stopped(run=run, root=root) -> bool:
            return json.loads(run("state", "w1", root=root).stdout)["status"] == "stopped"
        helpers.wait_until(stopped, 10, f"w1 of {run.__name__} to stop")
        codes.append(run("kill", "w1", "KILL", root=root).returncode)
        codes.append(run("start", "w1", root=root).returncode)
        codes.append(run("delete", "w1", root=root).returncode)
        results[run.__name__] = codes
    assert results["run_ocirun"] == results["run_runc"] == [0, 0, 1, 1, 1, 1, 0]


def test_console_socket_missing(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process={"terminal": True})
    msg = one_line_error(run_ocirun("create", "-b", bundle, "--console-socket", tmp_path / "no.sock", "c1",
                                      root=ocirun_root))
    assert "no.sock" in msg or "console" in msg, msg
    assert_nothing_left(ocirun_root, bundle)


def test_corrupt_state_file(ocirun_root, tmp_path):
    # A damaged state.json is reported in one line; `list` shows it as "unknown" (issue 13: it
    # used to skip it), plain `delete` refuses it, `delete --force` removes what it can find
    # (test_state_cgroup_hardening.py checks the killing with real containers).
    (ocirun_root / "bad").mkdir()
    (ocirun_root / "bad" / "state.json").write_text("{")
    msg = one_line_error(run_ocirun("state", "bad", root=ocirun_root))
    assert "bad" in msg and "state" in msg
    listed = json.loads(run_ocirun("list", "-f", "json", root=ocirun_root).stdout)
    assert [(s["id"], s["status"]) for s in listed] == [("bad", "unknown")]
    assert "corrupt state file" in one_line_error(run_ocirun("delete", "bad", root=ocirun_root))
    r = run_ocirun("delete", "--force", "bad", root=ocirun_root)
    assert r.returncode == 0 and not (ocirun_root / "bad").exists(), r.stderr
