"""state.json's format version (issue 14): a state directory written by the release before the
version field still works with every command, and one of a newer format is refused by name —
`delete --force` still removes it, and `list` shows it as unknown."""
from __future__ import annotations

import json
import os

import helpers
from helpers import make_bundle, ok, run_ocirun


def gone(pid: int, timeout: float = 10) -> bool:
    """The pid is reaped, not only dead (stricter than helpers.wait_gone)."""
    return helpers.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout, f"pid {pid} to be reaped")


def _rewrite(path, **changes):
    st = json.loads(path.read_text())
    st.update(changes)
    for k, v in changes.items():
        if v is None:
            del st[k]
    path.write_text(json.dumps(st))
    return st


def test_a_state_dir_of_the_previous_release_still_works(tmp_path, ocirun_root):
    ok("create", "-b", make_bundle(tmp_path, ["sleep", "1000"]), "old", root=ocirun_root)
    try:
        _old_release_lifecycle(ocirun_root)
    finally:
        helpers.delete(ocirun_root, "old", check=False)


def _old_release_lifecycle(ocirun_root):
    path = ocirun_root / "old" / "state.json"
    assert json.loads(path.read_text())["state_version"] == 1
    st = _rewrite(path, state_version=None)  # what the release before the field wrote
    assert json.loads(ok("state", "old", root=ocirun_root).stdout)["status"] == "created"
    ok("start", "old", root=ocirun_root)
    ok("pause", "old", root=ocirun_root)
    ok("resume", "old", root=ocirun_root)
    assert st["pid"] in json.loads(ok("ps", "--format", "json", "old", root=ocirun_root).stdout)
    ok("kill", "old", "KILL", root=ocirun_root)
    assert gone(st["pid"])
    ok("delete", "old", root=ocirun_root)
    assert not (ocirun_root / "old").exists()


def test_a_newer_state_format_is_refused_by_its_version(tmp_path, ocirun_root):
    ok("run", "-d", "-b", make_bundle(tmp_path, ["sleep", "1000"]), "new", root=ocirun_root)
    try:
        _newer_format(ocirun_root)
    finally:
        helpers.delete(ocirun_root, "new", check=False)


def _newer_format(ocirun_root):
    path = ocirun_root / "new" / "state.json"
    st = _rewrite(path, state_version=99)
    for args in (["state", "new"], ["kill", "new", "KILL"], ["delete", "new"], ["ps", "new"]):
        r = run_ocirun(*args, root=ocirun_root)
        assert r.returncode == 1 and "state file format version 99" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = ok("list", root=ocirun_root)
    assert r.stdout.splitlines()[1].split()[:3] == ["new", "0", "unknown"] and "version 99" in r.stderr
    assert os.path.exists(f"/proc/{st['pid']}")
    ok("delete", "--force", "new", root=ocirun_root)
    assert gone(st["pid"]) and not (ocirun_root / "new").exists()
