"""Reading `ocirun check`'s two outputs back, for the tests of it on this host and in the guests."""
from __future__ import annotations

import json

import helpers


def parse_table(text: str) -> tuple[dict[str, dict], str]:
    """{name: {status, detail, fix}} and the verdict line, from the human table."""
    lines = text.rstrip("\n").splitlines()
    header, body, verdict = lines[0], lines[1:-1], lines[-1]
    assert header.split() == ["CHECK", "STATUS", "DETAIL"], header
    found: dict[str, dict] = {}
    last = None
    for line in body:
        if line.startswith(" "):
            assert last is not None and line.strip().startswith("fix: "), line
            found[last]["fix"] = line.strip()[len("fix: "):]
            continue
        name, status, detail = line.split(None, 2)
        found[name] = {"status": status, "detail": detail, "fix": None}
        last = name
    return found, verdict


def check(*global_flags: str, timeout: float = 60) -> tuple[dict[str, dict], dict]:
    """Run `ocirun check` in both formats; the table's findings and the JSON document."""
    table = helpers.run_ocirun(*global_flags, "check", timeout=timeout)
    assert table.returncode == 0, table.stdout + table.stderr
    doc_run = helpers.run_ocirun(*global_flags, "check", "--format", "json", timeout=timeout)
    assert doc_run.returncode == 0, doc_run.stderr
    findings, _verdict = parse_table(table.stdout)
    return findings, json.loads(doc_run.stdout)
