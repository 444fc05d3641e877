"""The pure parts of `ocirun check`: CRIU's reason line, /etc/subuid ranges, the sysctl fixes,
the verdict and the table (tests/integration/test_check.py runs the real command)."""
from __future__ import annotations

from ocirun import check
from ocirun.check import LIMITED, MISSING, OK, Finding

CRIU_ON_THIS_KERNEL = """\
Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
"""


def test_criu_reason_is_its_first_error_without_the_source_location():
    assert check._criu_reason(CRIU_ON_THIS_KERNEL) == "vdso: Unexpected rt vDSO area bounds"


def test_criu_reason_skips_its_helpers_exit_lines_and_falls_back_to_the_last_line():
    out = "Error (criu/util.c:642): exited, status=1\nError (criu/tun.c:85): tun: Unable to create tun: Permission denied\n"
    assert check._criu_reason(out) == "tun: Unable to create tun: Permission denied"
    assert check._criu_reason("Warn  (x.c:1): something\nLooks good but some kernel features are missing\n") == \
        "Looks good but some kernel features are missing"
    assert check._criu_reason("") == "no output"


def test_subordinate_ranges_by_name_or_uid(tmp_path):
    sub = tmp_path / "subuid"
    sub.write_text("alice:100000:65536\nbob:165536:65536\n1000:231072:1000\nbroken line\n")
    host = check.Host(rootless=True)
    host.user, host.uid = "alice", 1000
    assert check._ranges_of(str(sub), host) == ["100000+65536", "231072+1000"]
    host.user, host.uid = "carol", 1001
    assert check._ranges_of(str(sub), host) == []


def test_userns_fix_names_the_sysctl_that_forbids():
    limits = ["kernel.unprivileged_userns_clone = 0"]
    assert check._userns_fix(limits) == "sysctl -w kernel.unprivileged_userns_clone=1"
    assert check._userns_fix([]) is None


def _fake_probe(name, status):
    def probe(host):
        return Finding(name=name, status=status, detail=f"{name} says {status}",
                       fix=None if status == OK else f"fix {name}")
    return probe


def test_only_an_essential_missing_probe_blocks(monkeypatch):
    monkeypatch.setattr(check, "PROBES", (
        (_fake_probe("a", MISSING), False),
        (_fake_probe("b", MISSING), True),
        (_fake_probe("c", MISSING), None),   # essential for a rootless caller only
        (_fake_probe("d", LIMITED), True),
    ))
    assert check.run_checks(rootless=False)[1] == ["b"]
    assert check.run_checks(rootless=True)[1] == ["b", "c"]


def test_a_probe_that_breaks_is_a_finding_not_a_traceback(monkeypatch):
    def probe_broken(host):
        raise ValueError("unexpected")
    monkeypatch.setattr(check, "PROBES", ((probe_broken, True),))
    findings, blocking = check.run_checks(rootless=False)
    assert [(f.name, f.status) for f in findings] == [("broken", LIMITED)]
    assert "unexpected" in findings[0].detail and blocking == []


def test_table_lines():
    findings = [Finding(name="cgroups", status=OK, detail="pure cgroup v2"),
                Finding(name="criu", status=MISSING, detail="not installed", fix="apt-get install criu")]
    assert check.as_table(findings, [], rootless=False) == [
        "CHECK    STATUS   DETAIL",
        "cgroups  ok       pure cgroup v2",
        "criu     missing  not installed",
        "                  fix: apt-get install criu",
        "ocirun can run containers here as root (1 ok, 0 limited, 1 missing)",
    ]
    assert check.as_table(findings, ["criu"], rootless=True)[-1] == \
        "ocirun cannot run containers here as a rootless caller: criu missing"
