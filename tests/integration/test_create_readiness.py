"""`create` says yes only for a container that `start` can start: the init reports `ready` once
nothing but `start` stands between it and the container's process (issue 13, item 10).

With process.rlimits RLIMIT_NOFILE that low, the init could not even open the exec fifo after
`ready`: create said yes, the init died, and start failed ("cannot start a container that has
stopped").  runc fails at create then too (its init cannot open /proc/self/fd).
"""
from __future__ import annotations

import os

import helpers
import pytest

from helpers import RUNC, make_bundle, run_ocirun, run_runc


def nofile(soft: int, hard: int) -> dict:
    return {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard}]}


@pytest.mark.parametrize("soft,hard", [(0, 0), (0, 1024), (1, 1024), (3, 1024)])
def test_nofile_too_low_fails_create_with_the_reason(ocirun_root, tmp_path, soft, hard):
    bundle = make_bundle(tmp_path, ["true"], process=nofile(soft, hard))
    r = run_ocirun("create", "-b", str(bundle), "nf1", root=ocirun_root)
    try:
        assert r.returncode == 1, (r.stdout, r.stderr, run_ocirun("state", "nf1", root=ocirun_root).stdout)
        assert f"process.rlimits[0]: RLIMIT_NOFILE soft limit {soft} is too low to start the container" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not os.path.exists(ocirun_root / "nf1")  # nothing left behind
    finally:
        helpers.delete(ocirun_root, "nf1", check=False)


@pytest.mark.skipif(RUNC is None, reason="runc is not installed")
def test_runc_fails_create_too(runc_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process=nofile(0, 0))
    r = run_runc("create", "-b", str(bundle), "nf2", root=runc_root)
    helpers.delete(runc_root, "nf2", run=run_runc, check=False)
    assert r.returncode == 1 and "too many open files" in r.stderr


def test_a_low_limit_that_leaves_room_runs(ocirun_root, tmp_path):
    # The container's process gets exactly its limit, and runs with it.
    bundle = make_bundle(tmp_path, ["sh", "-c", "ulimit -n"], process=nofile(16, 16))
    r = run_ocirun("run", "-b", str(bundle), "nf3", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "16"


def test_start_container_hooks_need_their_fds_at_create(ocirun_root, tmp_path):
    # A startContainer hook takes pipes after `ready`: the limit must leave room for them too.
    hook = {"path": "/bin/true"}
    bundle = make_bundle(tmp_path, ["true"], process=nofile(8, 8), hooks={"startContainer": [hook]})
    r = run_ocirun("create", "-b", str(bundle), "nf4", root=ocirun_root)
    helpers.delete(ocirun_root, "nf4", check=False)
    assert r.returncode == 1 and "RLIMIT_NOFILE soft limit 8 is too low" in r.stderr, r.stderr
