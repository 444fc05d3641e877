"""The suite's small framework: the check registry, the runner and the reporters.

A check is a function registered with `@check(...)`; it carries an id (`area.name`), the spec
clause it enforces (file, section, level MUST/SHOULD) and a one-line title.  It receives a
`Trial` (conformance.trial) to build bundles and drive the runtime, and signals its outcome by
returning (pass), raising `Fail(msg)` or raising `Skip(reason)`.  Skips come from probing the
host, never from the runtime's name.

The runner runs the selected checks in registration order, cleans up after each one, and hands
results to a reporter (TAP on stdout by default, JUnit XML on request).  A check marked
`baseline=True` is the smoke test: when it fails, every later check is skipped with its error,
so a runtime that cannot run a container at all on this host (crun on a hybrid-cgroup host, for
one) is reported once, clearly, rather than as a hundred failures.
"""
from __future__ import annotations

import fnmatch
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

MUST = "MUST"
SHOULD = "SHOULD"

SPEC_BASE = "https://github.com/opencontainers/runtime-spec/blob/v1.2.0/"


class Fail(Exception):
    """The runtime did not do what the clause requires."""


class Skip(Exception):
    """The host cannot exercise this clause (the reason says which probe decided)."""


@dataclass(frozen=True)
class Clause:
    file: str      # e.g. "config-linux.md"
    section: str   # the section heading, e.g. "Namespaces"
    level: str     # MUST or SHOULD

    def cite(self) -> str:
        return f"{self.file} § {self.section} ({self.level})"

    def url(self) -> str:
        anchor = re.sub(r"[^a-z0-9 -]", "", self.section.lower()).replace(" ", "-")
        return f"{SPEC_BASE}{self.file}#{anchor}"


@dataclass(frozen=True)
class Check:
    id: str
    clause: Clause
    title: str
    func: Callable
    baseline: bool = False

    @property
    def level(self) -> str:
        return self.clause.level


REGISTRY: list[Check] = []


def check(check_id: str, spec_file: str, section: str, level: str, title: str,
          *, baseline: bool = False):
    """Register the decorated function as a check; ids must be unique."""
    if level not in (MUST, SHOULD):
        raise ValueError(f"{check_id}: level must be MUST or SHOULD")

    def register(func):
        if any(c.id == check_id for c in REGISTRY):
            raise ValueError(f"duplicate check id {check_id}")
        REGISTRY.append(Check(check_id, Clause(spec_file, section, level), title, func, baseline))
        return func
    return register


def select(checks: list[Check], pattern: str | None) -> list[Check]:
    """Checks whose id matches `pattern`: a glob (`hooks.*`), or else a substring / regex.

    Several patterns may be given separated by commas.  Baseline checks are always kept, since
    the others depend on them.
    """
    if not pattern:
        return list(checks)
    pats = [p.strip() for p in pattern.split(",") if p.strip()]

    def matches(c: Check) -> bool:
        for p in pats:
            if any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(c.id, p):
                return True
            if p in c.id or re.search(p, c.id):
                return True
        return False
    return [c for c in checks if c.baseline or matches(c)]


# --------------------------------------------------------------------------- results

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class Result:
    check: Check
    outcome: str
    message: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def must_failure(self) -> bool:
        return self.outcome == FAIL and self.check.level == MUST


@dataclass
class Summary:
    results: list[Result]

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def must_failures(self) -> list[Result]:
        return [r for r in self.results if r.must_failure]

    def line(self) -> str:
        return f"{self.count(PASS)} passed, {self.count(FAIL)} failed, {self.count(SKIP)} skipped"

    @property
    def exit_status(self) -> int:
        """0 only when every MUST check passed (or was skipped for a host reason)."""
        return 1 if self.must_failures else 0


# --------------------------------------------------------------------------- running

def run_checks(checks: list[Check], make_trial: Callable, reporter=None) -> Summary:
    """Run each check in a fresh Trial; the trial's cleanup runs whatever the outcome."""
    results = []
    blocked: str | None = None
    if reporter:
        reporter.begin(len(checks))
    for n, chk in enumerate(checks, 1):
        if blocked is not None:
            result = Result(chk, SKIP, blocked)
        else:
            result = _run_one(chk, make_trial)
            if chk.baseline and result.outcome == FAIL:
                blocked = f"baseline check {chk.id} failed: {result.message}"
        results.append(result)
        if reporter:
            reporter.result(n, result)
    summary = Summary(results)
    if reporter:
        reporter.end(summary)
    return summary


def _run_one(chk: Check, make_trial: Callable) -> Result:
    start = time.monotonic()
    trial = make_trial(chk)
    try:
        chk.func(trial)
        outcome, message = PASS, ""
    except Fail as e:
        outcome, message = FAIL, str(e)
    except Skip as e:
        outcome, message = SKIP, str(e)
    except Exception as e:  # a bug in the check or an unexpected runtime reaction
        outcome, message = FAIL, f"check raised {type(e).__name__}: {e}"
        trial.note(traceback.format_exc().strip().splitlines()[-3:][0].strip())
    finally:
        try:
            trial.cleanup()
        except Exception as e:  # cleanup trouble must not hide the result
            trial.note(f"cleanup: {type(e).__name__}: {e}")
    return Result(chk, outcome, message, time.monotonic() - start, list(trial.notes))


# --------------------------------------------------------------------------- reporters

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class TapReporter:
    """TAP 13 on a stream.  A failed SHOULD is `not ok ... # TODO`, which TAP consumers do not
    count as a failure — the same rule as our exit status."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout

    def begin(self, total: int) -> None:
        self._w("TAP version 13")
        self._w(f"1..{total}")

    def result(self, n: int, r: Result) -> None:
        c = r.check
        desc = f"{c.id} - {c.title}"
        if r.outcome == PASS:
            self._w(f"ok {n} {desc}")
        elif r.outcome == SKIP:
            self._w(f"ok {n} {desc} # SKIP {_one_line(r.message)}")
        elif c.level == SHOULD:
            self._w(f"not ok {n} {desc} # TODO SHOULD: {_one_line(r.message)}")
        else:
            self._w(f"not ok {n} {desc}")
        if r.outcome == FAIL:
            self._w("  ---")
            self._w(f"  clause: {c.clause.cite()}")
            self._w(f"  url: {c.clause.url()}")
            self._w(f"  message: {_yaml_str(r.message)}")
            for note in r.notes:
                self._w(f"  note: {_yaml_str(note)}")
            self._w("  ...")
        self.out.flush()

    def end(self, s: Summary) -> None:
        self._w(f"# {s.line()}")
        if s.must_failures:
            self._w(f"# MUST failures: {', '.join(r.check.id for r in s.must_failures)}")

    def _w(self, line: str) -> None:
        print(line, file=self.out)


def _yaml_str(text: str) -> str:
    return '"' + _one_line(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


class QuietReporter:
    """Only the summary (used with --junit when TAP is not wanted on stdout)."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout

    def begin(self, total):
        pass

    def result(self, n, r):
        pass

    def end(self, s: Summary) -> None:
        print(s.line(), file=self.out)


def write_junit(path: str, summary: Summary, suite_name: str) -> None:
    """JUnit XML: one testcase per check, classname = area, SHOULD failures as failures
    whose type says SHOULD (CI dashboards show them; our exit status ignores them)."""
    res = summary.results
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr(suite_name)} tests="{len(res)}" '
             f'failures="{summary.count(FAIL)}" skipped="{summary.count(SKIP)}" errors="0" '
             f'time="{sum(r.seconds for r in res):.3f}">']
    for r in res:
        c = r.check
        area = c.id.split(".", 1)[0]
        lines.append(f'  <testcase classname={quoteattr("conformance." + area)} '
                     f'name={quoteattr(c.id)} time="{r.seconds:.3f}">')
        lines.append(f'    <properties><property name="clause" value={quoteattr(c.clause.cite())}/>'
                     f'<property name="level" value="{c.level}"/></properties>')
        if r.outcome == FAIL:
            body = escape("\n".join([c.clause.url()] + r.notes))
            lines.append(f'    <failure type="{c.level}" message={quoteattr(_one_line(r.message))}>'
                         f'{body}</failure>')
        elif r.outcome == SKIP:
            lines.append(f'    <skipped message={quoteattr(_one_line(r.message))}/>')
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
