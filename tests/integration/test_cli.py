"""What the CLI prints, as runc prints it: `state`, `list`, `ps`, `spec`, `features`, `--version`.

Engines parse these outputs (containerd reads `ps --format json`, docker parses `--version`,
podman's recovery reads `state`), so the shapes are asserted field by field.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

import helpers
from helpers import make_bundle, ok, run_ocirun, state_of
from ocirun import schema


SLEEPER = ["sleep", "1000"]


# ============================================================================ state

def test_state_json_shape_through_the_lifecycle(ocirun_root, tmp_path):
    annotations = {"org.example.key": "value", "io.podman.annotations.init": "FALSE"}
    bundle = make_bundle(tmp_path, ["sleep", "0.4"], annotations=annotations)
    ok("create", "-b", bundle, "s1", root=ocirun_root)
    seen = []
    for step in ("created", "start", "stopped"):
        if step == "start":
            ok("start", "s1", root=ocirun_root)
        if step == "stopped":
            helpers.wait_until(lambda: state_of(ocirun_root, "s1")["status"] == "stopped", 10, "s1 to stop")
        st = state_of(ocirun_root, "s1")
        schema.validate_state(st)
        assert isinstance(st["ociVersion"], str) and re.fullmatch(r"\d+\.\d+\.\d+", st["ociVersion"])
        assert st["id"] == "s1"
        assert isinstance(st["pid"], int)
        assert st["bundle"] == str(bundle) and os.path.isabs(st["bundle"])
        assert st["annotations"] == annotations
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", st["created"]), st["created"]
        seen.append((st["status"], st["pid"] > 0))
    assert seen == [("created", True), ("running", True), ("stopped", False)]
    ok("delete", "s1", root=ocirun_root)


def test_state_without_annotations_omits_them(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "s2", root=ocirun_root)
    st = state_of(ocirun_root, "s2")
    schema.validate_state(st)
    assert not st.get("annotations")
    ok("delete", "--force", "s2", root=ocirun_root)


# ============================================================================ list

def test_list_formats(ocirun_root, tmp_path):
    empty = ok("list", root=ocirun_root).stdout.splitlines()
    assert empty[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] and len(empty) == 1
    assert json.loads(ok("list", "--format", "json", root=ocirun_root).stdout) in ([], None)
    assert ok("list", "-q", root=ocirun_root).stdout == ""

    b1 = make_bundle(tmp_path, SLEEPER, name="b1", annotations={"k": "v"})
    b2 = make_bundle(tmp_path, SLEEPER, name="b2")
    ok("create", "-b", b1, "l-created", root=ocirun_root)
    ok("run", "-d", "-b", b2, "l-running", root=ocirun_root)
    try:
        table = ok("list", root=ocirun_root).stdout.splitlines()
        assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        rows = {r.split()[0]: r.split() for r in table[1:]}
        assert set(rows) == {"l-created", "l-running"}
        assert rows["l-created"][2] == "created" and rows["l-running"][2] == "running"
        assert rows["l-created"][3] == str(b1) and rows["l-running"][3] == str(b2)
        assert int(rows["l-running"][1]) == state_of(ocirun_root, "l-running")["pid"]
        assert rows["l-running"][5] == "root"

        items = json.loads(ok("list", "-f", "json", root=ocirun_root).stdout)
        by_id = {i["id"]: i for i in items}
        assert set(by_id) == {"l-created", "l-running"}
        assert by_id["l-created"]["status"] == "created"
        assert by_id["l-running"]["status"] == "running"
        assert by_id["l-created"]["annotations"] == {"k": "v"}
        for item in items:  # as runc: `list` fills in the owner, `state` leaves it empty
            assert item == {**state_of(ocirun_root, item["id"]), "owner": "root"}

        assert ok("list", "-q", root=ocirun_root).stdout.split() == ["l-created", "l-running"]
    finally:
        for cid in ("l-created", "l-running"):
            helpers.delete(ocirun_root, cid, check=False)


# ============================================================================ ps

def test_ps_json_is_the_host_pids(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    ok("run", "-d", "-b", bundle, "p1", root=ocirun_root)
    try:
        init = state_of(ocirun_root, "p1")["pid"]
        def all_three():
            pids = json.loads(ok("ps", "--format", "json", "p1", root=ocirun_root).stdout)
            return pids if len(pids) == 3 else None
        pids = helpers.wait_until(all_three, 10, "ps to list the init and its two sleeps")
        assert isinstance(pids, list) and all(isinstance(p, int) for p in pids)
        assert init in pids and len(pids) == 3, pids
        for pid in pids:  # host pids: /proc here sees them, and they are ours (init's children)
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f)
            assert pid == init or int(fields["PPid"]) == init

        table = ok("ps", "p1", root=ocirun_root).stdout.splitlines()
        col = table[0].split().index("PID")
        assert sorted(int(r.split()[col]) for r in table[1:]) == sorted(pids)
    finally:
        helpers.delete(ocirun_root, "p1", check=False)


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_ps_options_after_the_id_go_to_ps_as_with_runc(ocirun_root, runc_root, tmp_path):
    """`runc ps ID -e -x`: everything after the id is ps's own (ocirun's argparse once refused
    `-e` as an unknown flag of ours)."""
    bundle = make_bundle(tmp_path, SLEEPER)
    tables = {}
    for run, root in ((run_ocirun, ocirun_root), (helpers.run_runc, runc_root)):
        r = run("run", "-d", "-b", str(bundle), "psx", root=root)
        assert r.returncode == 0, r.stderr
        try:
            init = json.loads(run("state", "psx", root=root).stdout)["pid"]
            r = run("ps", "psx", "-o", "pid,comm", root=root)
            assert r.returncode == 0, (run.__name__, r.stderr)
            tables[run.__name__] = r.stdout.split()
            r = run("ps", "psx", "-e", "-x", root=root)
            assert r.returncode == 0, (run.__name__, r.stderr)
            assert str(init) in r.stdout.split(), (run.__name__, r.stdout)
        finally:
            helpers.delete(root, "psx", run=run, check=False)
    for name, words in tables.items():  # -o pid,comm: exactly the header and the sleeper
        assert words[:2] == ["PID", "COMMAND"] and words[3:] == ["sleep"], (name, words)


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_ps_fails_when_ps_refuses_its_options_as_runc_does(ocirun_root, runc_root, tmp_path):
    """A bad option of ps's own once printed nothing and exited 0."""
    bundle = make_bundle(tmp_path, SLEEPER)
    for run, root in ((run_ocirun, ocirun_root), (helpers.run_runc, runc_root)):
        assert run("run", "-d", "-b", str(bundle), "psbad", root=root).returncode == 0
        try:
            r = run("ps", "psbad", "-o", "nosuchfield", root=root)
            assert r.returncode == 1 and r.stdout == "", (run.__name__, r.returncode, r.stdout, r.stderr)
            assert "nosuchfield" in r.stderr or "unknown" in r.stderr.lower(), (run.__name__, r.stderr)
        finally:
            helpers.delete(root, "psbad", run=run, check=False)
    r = run_ocirun("ps", "psbad", "--bogus", root=ocirun_root)  # deleted: the container is missing first
    assert r.returncode == 1 and r.stderr.strip() == "container does not exist: psbad", r.stderr


# ============================================================================ --debug and --log

def test_debug_writes_debug_lines_and_creates_the_log_file_private(ocirun_root, tmp_path):
    """As runc: `--debug` writes level=debug lines (to --log, else stderr), and the --log file
    exists afterwards even when nothing failed.  It is ours alone (0600): error lines can
    carry config values."""
    log = tmp_path / "ocirun.log"
    bundle = make_bundle(tmp_path, ["true"])
    old = os.umask(0)
    try:
        ok("--debug", "--log", str(log), "--log-format", "json", "run", "-b", str(bundle), "dbg", root=ocirun_root)
    finally:
        os.umask(old)
    assert oct(os.stat(log).st_mode & 0o777) == "0o600"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(line["level"] == "debug" for line in lines), lines
    r = run_ocirun("--debug", "state", "nosuch", root=ocirun_root)
    assert r.returncode == 1
    assert 'level=debug msg="ocirun' in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "container does not exist: nosuch", r.stderr
    r = run_ocirun("state", "nosuch", root=ocirun_root)
    assert "level=debug" not in r.stderr, r.stderr


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_a_log_file_that_cannot_be_opened_is_an_error_as_with_runc(tmp_path, ocirun_root, runc_root):
    """An engine reads our errors from --log: a path that cannot be written was once ignored
    (and the command went on).  runc refuses to run; so do we, saying why on stderr."""
    missing = tmp_path / "no" / "such" / "log.json"
    for run, root in ((run_ocirun, ocirun_root), (helpers.run_runc, runc_root)):
        r = run("--log", str(missing), "--log-format", "json", "list", root=root)
        assert r.returncode == 1 and r.stdout == "", (run.__name__, r.returncode, r.stdout, r.stderr)
    r = run_ocirun("--log", str(missing), "list", root=ocirun_root)
    assert r.stderr.strip() == f"open {missing}: no such file or directory", r.stderr
    log = tmp_path / "made.json"  # created when missing, as runc does, also without --debug
    ok("--log", str(log), "list", root=ocirun_root)
    assert log.exists() and oct(os.stat(log).st_mode & 0o777) == "0o600"


@pytest.mark.skipif(helpers.RUNC is None, reason="runc not installed")
def test_a_log_fifo_gets_every_line_as_with_runc(tmp_path, ocirun_root, runc_root):
    """--log opened once and held, as runc holds it: opened per line, a FIFO's reader saw
    end-of-file after the first line and the next open waited forever for a reader."""
    bundle = make_bundle(tmp_path, ["true"])
    for run, root in ((run_ocirun, ocirun_root), (helpers.run_runc, runc_root)):
        fifo = tmp_path / f"log-{run.__name__}"
        os.mkfifo(fifo)
        reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
        try:
            r = run("--debug", "--log", str(fifo), "--log-format", "json", "run", "-b", str(bundle), "lf",
                    root=root, timeout=30)
            assert r.returncode == 0, (run.__name__, r.stderr)
            out, _ = reader.communicate(timeout=30)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
            helpers.delete(root, "lf", run=run, check=False)
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert len(lines) >= 2 and all(line["level"] == "debug" for line in lines), (run.__name__, lines)


# ============================================================================ spec

def test_spec_writes_config_and_refuses_to_overwrite(tmp_path):
    ok("spec", "--bundle", tmp_path)
    path = tmp_path / "config.json"
    doc = json.loads(path.read_text())
    schema.validate_config(doc)
    assert doc["root"]["path"] == "rootfs"
    assert doc["process"]["terminal"] is True  # like `runc spec`
    before = path.read_text()

    r = run_ocirun("spec", "--bundle", tmp_path)
    assert r.returncode == 1 and "exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert path.read_text() == before

    # Without --bundle it writes into the current directory.
    cwd = tmp_path / "here"
    cwd.mkdir()
    ok("spec", cwd=cwd)
    assert json.loads((cwd / "config.json").read_text()) == doc


def test_spec_into_missing_dir_fails_cleanly(tmp_path):
    r = run_ocirun("spec", "--bundle", tmp_path / "nope")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no such file or directory" in r.stderr


# ============================================================================ features, --version

def test_features(ocirun_root):
    doc = json.loads(ok("features").stdout)
    schema.validate_features(doc)
    assert doc["ociVersionMax"] == "1.2.0"
    assert set(doc["hooks"]) == {"prestart", "createRuntime", "createContainer", "startContainer",
                                 "poststart", "poststop"}
    assert {"pid", "mount", "network", "user"} <= set(doc["linux"]["namespaces"])
    assert "CAP_SYS_ADMIN" in doc["linux"]["capabilities"]
    assert "rbind" in doc["mountOptions"]


def _docker_parse_runtime_version(text: str) -> tuple[str, str, str]:
    """dockerd's parseRuntimeVersion (daemon/info_unix.go), line for line."""
    runtime = version = commit = ""
    for line in text.strip().split("\n"):
        if "version" in line:
            parts = line.split("version")
            runtime, version = parts[0].strip(), parts[-1].strip()
            continue
        if line.startswith("commit:"):
            commit = line[len("commit:"):].strip()
    if not version and not commit:
        raise ValueError(f"unknown output format: {text}")
    return runtime, version, commit


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version_is_runc_style(flag):
    r = ok(flag)
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    assert re.fullmatch(r"ocirun version \d+\.\d+\.\d+\S*", lines[0])
    assert re.fullmatch(r"commit: \S+", lines[1])
    assert re.fullmatch(r"spec: \d+\.\d+\.\d+", lines[2])
    runtime, version, commit = _docker_parse_runtime_version(r.stdout)
    assert runtime == "ocirun" and version and commit


def test_no_command_prints_help():
    r = run_ocirun()
    assert r.returncode == 0 and "create" in r.stdout


def test_unknown_command_is_usage_error():
    r = run_ocirun("frobnicate")
    assert r.returncode != 0 and "Traceback" not in r.stderr
