"""conformance.results: the Markdown writer and the helpers it uses, fed with fake results (no root)."""
from conformance import results as R
from conformance.framework import FAIL, MUST, PASS, SHOULD, SKIP, Check, Clause

CHECKS = [
    Check("baseline.run", Clause("runtime.md", "Lifecycle", MUST), "plain container", lambda t: None, True),
    Check("lifecycle.delete.created", Clause("runtime.md", "Delete", MUST), "delete created", lambda t: None),
    Check("hooks.state-status", Clause("config.md", "POSIX-platform Hooks", SHOULD), "hook state", lambda t: None),
    Check("cgroups.hugetlb", Clause("config-linux.md", "Control groups", MUST), "hugetlb", lambda t: None),
]
MACHINE = {"os": "Debian 12", "kernel": "6.18 (x86_64)", "cgroups": "hybrid", "date": "2026-01-01 00:00 UTC"}
BLOCKED = "baseline check baseline.run failed: create failed (exit 1): no"


def runs():
    good = R.RuntimeRun("alpha", "/bin/alpha", "alpha version 1 (spec 1.2.0)", {
        "baseline.run": R.Outcome(PASS),
        "lifecycle.delete.created": R.Outcome(FAIL, 'create failed: time="2026-01-01T00:00:00Z" '
                                                    'level=error msg="alpha said \\"no\\" | really"'),
        "hooks.state-status": R.Outcome(FAIL, "got <created>"),
        "cgroups.hugetlb": R.Outcome(SKIP, "hugetlb is only on the unified hierarchy"),
    }, "1 passed, 2 failed, 1 skipped")
    broken = R.RuntimeRun("beta", "/bin/beta", "beta 2", {
        "baseline.run": R.Outcome(FAIL, "create failed (exit 1): unknown version specified"),
        "lifecycle.delete.created": R.Outcome(SKIP, BLOCKED),
        "hooks.state-status": R.Outcome(SKIP, BLOCKED),
        "cgroups.hugetlb": R.Outcome(SKIP, BLOCKED),
    }, "0 passed, 1 failed, 3 skipped", probe="create failed (exit 1): hybrid hosts are not supported")
    missing = R.RuntimeRun("gamma", "/usr/bin/gamma", note="not installed (no executable at `/usr/bin/gamma`)")
    return [good, broken, missing]


def test_one_table_row_per_check_and_column_per_runtime_that_ran():
    md = R.render_markdown(MACHINE, runs(), CHECKS)
    table = [l for l in md.splitlines() if l.startswith("| ")]
    assert table[0] == "| Check | Level | Clause | alpha | beta |"
    assert len(table) == 1 + len(CHECKS)
    row = next(l for l in table if l.startswith("| `lifecycle.delete.created`"))
    # every row has the same number of cells: an escaped | in a message does not split a cell
    assert row.replace("\\|", "").count("|") == table[0].count("|")
    assert "| MUST | runtime.md § Delete |" in row
    assert "**FAIL**: create failed: alpha said \"no\" \\| really" in row
    assert row.endswith("| skip: baseline failed |")
    assert "skip: hugetlb is only on the unified hierarchy" in md
    assert "got &lt;created>" in md


def test_machine_runtimes_and_summary_lines():
    md = R.render_markdown(MACHINE, runs(), CHECKS)
    for value in MACHINE.values():
        assert value in md
    assert "**alpha** — alpha version 1 (spec 1.2.0), `/bin/alpha`: 1 passed, 2 failed (1 MUST, 1 SHOULD), 1 skipped" in md
    assert "**beta** — beta 2, `/bin/beta`: 0 passed, 1 failed (1 MUST, 0 SHOULD), 3 skipped" in md
    assert "**gamma** — not installed" in md
    assert "gamma |" not in md


def test_violations_list_must_failures_with_explanations_and_the_probe(monkeypatch):
    monkeypatch.setitem(R.EXPLANATIONS, ("alpha", "lifecycle.delete.created"), "Alpha removes it.")
    md = R.render_markdown(MACHINE, runs(), CHECKS)
    violations = md.split("## Where a runtime violates the spec", 1)[1].split("## SHOULD", 1)[0]
    assert "### alpha" in violations and "### beta" in violations
    assert "Alpha removes it." in violations
    assert "runtime.md#delete" in violations
    assert "hooks.state-status" not in violations          # a SHOULD is listed elsewhere
    assert "The other 3 checks were skipped for that reason." in violations
    assert "hybrid hosts are not supported" in violations
    should = md.split("## SHOULD failures", 1)[1]
    assert "alpha `hooks.state-status`" in should


def test_cells_are_short_and_one_line():
    long = R.Outcome(FAIL, "x" * 500 + "\nsecond line")
    text = R.cell(long)
    assert "\n" not in text and len(text) <= len("**FAIL**: ") + R.CELL_CHARS
    assert R.cell(None) == "—"
    assert R.cell(R.Outcome(PASS)) == "pass"


def test_runtime_specs():
    assert R.parse_runtime_specs(None) == R.DEFAULT_RUNTIMES
    assert R.parse_runtime_specs(["x=/opt/x", "/usr/bin/youki"]) == [("x", "/opt/x"), ("youki", "/usr/bin/youki")]


def test_missing_runtime_is_a_note_not_a_run(tmp_path):
    run = R.run_runtime("nope", str(tmp_path / "nope"), tmp_path)
    assert not run.ran and "not installed" in run.note


def test_ocirun_keeps_no_deliberate_delete_deviation():
    # issue 13: `delete` of a created container now fails as runtime.md requires (was a
    # runc-compatible deviation with an explanation here)
    assert ("ocirun", "lifecycle.delete.created") not in R.EXPLANATIONS
    assert ("runc", "lifecycle.delete.created") in R.EXPLANATIONS
