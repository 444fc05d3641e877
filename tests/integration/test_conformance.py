"""The conformance suite (conformance/) run as a black box against ocirun and runc.

The whole suite takes ~45 s per runtime here, so it runs in full.  For each runtime the set of
MUST failures is compared with a recorded list of known gaps, each with its reason: a new
failure fails the test, and so does a known gap that starts passing (prune the list then).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import helpers


# MUST checks ocirun fails today: spec violations to fix in ocirun (or to decide to keep).
KNOWN_OCIRUN_MUST_FAILURES: set[str] = set()

# runc 1.1.5 on this host, for the record (see conformance/README.md for the explanations).
KNOWN_RUNC_MUST_FAILURES = {
    "lifecycle.delete.created", "hooks.create-phase-order", "hooks.start-phase-order",
    "hooks.poststart-after-exec", "hooks.timeout", "hooks.poststart-failure-warns",
    "hooks.poststop-failure-warns", "process.scheduler", "process.ioPriority",
    "mounts.tmpfs-options", "domainname", "namespaces.new.time", "linux.rootfsPropagation.unbindable",
    "linux.personality", "linux.timeOffsets", "seccomp.errnoRet-needs-errno-action",
}


def run_suite(runtime: str, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    junit = tmp_path / "results.xml"
    r = subprocess.run([sys.executable, "-m", "conformance", "--runtime", runtime,
                        "--junit", str(junit), *extra],
                       cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    results = {}
    if junit.exists():
        for tc in ET.parse(junit).getroot().iter("testcase"):
            fail, skip = tc.find("failure"), tc.find("skipped")
            if fail is not None:
                results[tc.get("name")] = ("fail", fail.get("type"), fail.get("message"))
            elif skip is not None:
                results[tc.get("name")] = ("skip", None, skip.get("message"))
            else:
                results[tc.get("name")] = ("pass", None, "")
    return r, results


def must_failures(results: dict) -> dict:
    return {k: v[2] for k, v in results.items() if v[0] == "fail" and v[1] == "MUST"}


def test_ocirun_passes_every_must(tmp_path):
    r, results = run_suite(helpers.ocirun_command()[0], tmp_path)
    assert results, f"no results: {r.stdout} {r.stderr}"
    assert results["baseline.run"][0] == "pass"
    failures = must_failures(results)
    new = {k: v for k, v in failures.items() if k not in KNOWN_OCIRUN_MUST_FAILURES}
    fixed = KNOWN_OCIRUN_MUST_FAILURES - set(failures)
    assert not new, f"new MUST failures on ocirun: {new}"
    assert not fixed, f"known ocirun gaps now pass, remove them from the list: {sorted(fixed)}"
    assert r.stdout.strip().endswith("skipped"), r.stdout
    assert r.returncode == (1 if failures else 0)


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_runc_known_differences(tmp_path):
    r, results = run_suite(shutil.which("runc"), tmp_path)
    assert results.get("baseline.run", ("?",))[0] == "pass", r.stdout + r.stderr
    failures = must_failures(results)
    assert set(failures) == KNOWN_RUNC_MUST_FAILURES, (
        f"runc differs from the record: new {sorted(set(failures) - KNOWN_RUNC_MUST_FAILURES)}, "
        f"no longer failing {sorted(KNOWN_RUNC_MUST_FAILURES - set(failures))}")


def test_filter_tap_and_exit_status(tmp_path):
    """--filter selects (plus the baseline), TAP is the default, exit 0 when every MUST passes."""
    r = subprocess.run([sys.executable, "-m", "conformance", "--runtime", helpers.ocirun_command()[0],
                        "--filter", "lifecycle.state.*"], cwd=helpers.REPO, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = r.stdout.splitlines()
    assert lines[0] == "TAP version 13"
    assert lines[1].startswith("1..")
    assert any(l.startswith("ok ") and "baseline.run" in l for l in lines)
    assert all("lifecycle.state." in l or "baseline" in l for l in lines if l.startswith(("ok", "not ok")))
    assert lines[-1].startswith("# ") and lines[-1].endswith("skipped")
    assert r.returncode == 0, r.stdout


def test_unusable_runtime_is_one_failure(tmp_path):
    """A runtime that cannot run anything fails the baseline; everything else skips, saying why."""
    fake = tmp_path / "broken-runtime"
    fake.write_text("#!/bin/sh\necho 'cannot run containers on this host' >&2\nexit 1\n")
    fake.chmod(0o755)
    r, results = run_suite(str(fake), tmp_path, "--filter", "lifecycle.kill")
    assert r.returncode == 1
    assert results["baseline.run"][0] == "fail"
    others = [v for k, v in results.items() if k != "baseline.run"]
    assert others and all(v[0] == "skip" and "baseline" in v[2] for v in others)


def test_no_leftovers_after_run(tmp_path):
    # Only what this run adds counts: another suite run (a developer's) may be going on meanwhile.
    def ours():
        return (set(helpers.leftover_cgroups("conformance-")),
                {d for d in os.listdir("/run") if d.startswith("conformance-")})
    cgroups_before, dirs_before = ours()
    run_suite(helpers.ocirun_command()[0], tmp_path, "--filter", "cgroups.pids,hooks.timeout")
    cgroups_after, dirs_after = ours()
    assert not cgroups_after - cgroups_before
    assert not dirs_after - dirs_before
