"""Regenerates conformance/RESULTS.md: the suite run against several runtimes, side by side.

    .venv/bin/python -m conformance.results [--out conformance/RESULTS.md] [--runtime NAME=PATH ...]

Each runtime gets one ordinary suite run (`python -m conformance --runtime PATH --junit FILE`,
in a child process so one runtime's trouble cannot spoil the others' results); the JUnit files
are merged into one Markdown table, a row per check and a column per runtime.  A runtime that
is not installed is left out with a note.

When a runtime fails the baseline check (it cannot run a plain container here), the suite
itself only says why `create` failed.  That first refusal may hide the next one, so this script
probes once more with the same plain container declaring an older `ociVersion` and records
what that shows.

The explanations of MUST failures (EXPLANATIONS) are written by hand, keyed by runtime name and
check id; a failure without one is still listed, with what the check saw.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .framework import FAIL, MUST, PASS, SKIP, SHOULD, Check

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "conformance" / "RESULTS.md"
DEFAULT_RUNTIMES = [
    ("ocirun", str(REPO / ".venv" / "bin" / "ocirun")),
    ("runc", "/usr/sbin/runc"),
    ("crun", "/usr/bin/crun"),
]
SUITE_TIMEOUT = 900      # seconds for one full suite run (~45 s normally)
CELL_CHARS = 90          # a table cell's reason is cut to this length
PROBE_OCI_VERSION = "1.0.2"  # every 1.x runtime accepts a config declaring this
BASELINE_ID = "baseline.run"
BASELINE_SKIP_PREFIX = "baseline check "

# Why a runtime fails a MUST check, keyed by (runtime name, check id).  Short and factual: the
# table and the list below already show what the check saw.
EXPLANATIONS: dict[tuple[str, str], str] = {
    ("runc", "lifecycle.delete.created"):
        "`runc delete` of a `created` container kills its init and removes it instead of "
        "failing.",
    ("runc", "hooks.create-phase-order"):
        "runc 1.1 runs the `poststart` hooks inside `create`, right after the "
        "`createContainer` hooks; runtime.md § Lifecycle runs them after `start` has started "
        "the program.",
    ("runc", "hooks.start-phase-order"):
        "The other side of the same behaviour: `start` runs `startContainer` and the program, "
        "and no `poststart` hook runs before `start` returns.",
    ("runc", "hooks.poststart-after-exec"):
        "When the poststart hook ran, the container's process was still `runc init`: the "
        "program had not been executed yet.",
    ("runc", "hooks.timeout"):
        "A createRuntime hook with `timeout: 1` running `sleep 20` held `create` for 20 s. "
        "runc kills the hook process at the timeout but then waits for the hook's output "
        "pipes to close, which the hook's child (`sleep`) keeps open.",
    ("runc", "hooks.poststart-failure-warns"):
        "A poststart hook exiting 3 made `create` fail (runc runs poststart during create and "
        "treats a failure as fatal); the spec says a poststart failure is only a warning.",
    ("runc", "hooks.poststop-failure-warns"):
        "After the first poststop hook exited 3, runc did not run the next poststop hook; the "
        "spec says the remaining hooks run and the lifecycle goes on.",
    ("runc", "process.scheduler"):
        "`process.scheduler` is ignored (the process kept SCHED_OTHER, nice 0); the field is "
        "newer than the spec runc 1.1 implements, yet runc accepts the 1.2.0 config.",
    ("runc", "process.ioPriority"):
        "`process.ioPriority` is ignored (I/O priority stayed at the default); newer than "
        "runc 1.1.",
    ("runc", "mounts.tmpfs-options"):
        "A tmpfs at `/mnt` with `mode=750` ended up 755: when the mount point already exists "
        "in the rootfs, runc gives the new tmpfs the old directory's mode, overriding `mode=`.",
    ("runc", "domainname"):
        "`domainname` is ignored: `kernel.domainname` in the container stayed `(none)`.",
    ("runc", "namespaces.new.time"):
        "runc 1.1 does not know the `time` namespace type and refuses the config "
        "(`namespace {\"time\" \"\"} does not exist`).",
    ("runc", "linux.timeOffsets"):
        "Same cause: `timeOffsets` needs a `time` namespace, which runc 1.1 refuses.",
    ("runc", "linux.rootfsPropagation.unbindable"):
        "`create` fails with EINVAL: runc makes the mount tree `unbindable` first and then "
        "bind-mounts the rootfs onto itself, which the kernel refuses for an unbindable mount.",
    ("runc", "linux.personality"):
        "`linux.personality` is ignored: with domain LINUX32, `uname -m` still said x86_64.",
    ("runc", "seccomp.errnoRet-needs-errno-action"):
        "runc accepted `errnoRet` on an `SCMP_ACT_KILL` rule and ran the container; "
        "config-linux.md § Seccomp allows `errnoRet` only with an action that returns an "
        "errno.",
    ("crun", BASELINE_ID):
        "Not a spec violation. The suite's bundles declare `ociVersion` 1.2.0, which crun "
        "1.8.1 refuses (it takes 1.0.x and 1.1.x); config.md § Specification version says a "
        "config for a minor version is not compatible with a runtime that lacks it. Past that, "
        "crun 1.8 refuses hybrid cgroup hosts — a limitation, not a violation: the spec does "
        "not say which cgroup layouts a runtime must support.",
}


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Outcome:
    outcome: str          # pass / fail / skip
    message: str = ""


@dataclass
class RuntimeRun:
    """One runtime's column: its results by check id, or a note saying why there are none."""
    name: str
    path: str
    version: str = ""
    results: dict[str, Outcome] | None = None
    suite_line: str = ""   # the suite's own last line, `N passed, N failed, N skipped`
    note: str = ""         # e.g. "not installed"
    probe: str = ""        # what the second look at a failed baseline showed

    @property
    def ran(self) -> bool:
        return self.results is not None


# --------------------------------------------------------------------------- running

def parse_runtime_specs(specs: list[str] | None) -> list[tuple[str, str]]:
    """`NAME=PATH` (or a bare PATH, named after its basename) → [(name, path)]."""
    if not specs:
        return list(DEFAULT_RUNTIMES)
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(spec), spec
        out.append((name, path))
    return out


def runtime_version(path: str) -> str:
    """`NAME version X (spec Y)` from the runtime's `--version`, or what went wrong."""
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    lines = (r.stdout or r.stderr).strip().splitlines()
    if not lines:
        return "unknown"
    spec = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("spec:")), "")
    return f"{lines[0].strip()} (spec {spec})" if spec else lines[0].strip()


def run_suite(path: str, junit: Path) -> tuple[dict[str, Outcome], str]:
    """One full suite run against `path`; returns the parsed JUnit results and the summary line."""
    r = subprocess.run([sys.executable, "-m", "conformance", "--runtime", path,
                        "--junit", str(junit)], cwd=REPO, capture_output=True, text=True,
                       timeout=SUITE_TIMEOUT, stdin=subprocess.DEVNULL)
    lines = r.stdout.strip().splitlines()
    if not junit.exists():
        raise RuntimeError(f"the suite wrote no results (exit {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")
    return parse_junit(junit), (lines[-1] if lines else "")


def parse_junit(path: Path) -> dict[str, Outcome]:
    results = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        fail, skip = tc.find("failure"), tc.find("skipped")
        if fail is not None:
            results[tc.get("name")] = Outcome(FAIL, fail.get("message", ""))
        elif skip is not None:
            results[tc.get("name")] = Outcome(SKIP, skip.get("message", ""))
        else:
            results[tc.get("name")] = Outcome(PASS)
    return results


def probe_plain_container(path: str, oci_version: str = PROBE_OCI_VERSION) -> str:
    """Run the baseline's plain container once more, declaring `oci_version`; say what happened."""
    from .framework import Fail
    from .trial import Suite, Trial
    suite = Suite(path)
    trial = Trial(suite, "results.probe")
    try:
        out = trial.sh("echo ok", ociVersion=oci_version)
        return "it runs" if out.strip() == "ok" else f"container stdout {out.strip()[:80]!r}"
    except Fail as e:
        return str(e)
    finally:
        trial.cleanup()
        suite.close()


def run_runtime(name: str, path: str, workdir: Path) -> RuntimeRun:
    resolved = shutil.which(path) or path
    run = RuntimeRun(name, resolved)
    if not (os.path.isfile(resolved) and os.access(resolved, os.X_OK)):
        run.note = f"not installed (no executable at `{path}`)"
        return run
    run.version = runtime_version(resolved)
    print(f"results: running the suite against {name} ({resolved})", file=sys.stderr, flush=True)
    try:
        run.results, run.suite_line = run_suite(resolved, workdir / f"{name}.xml")
    except (RuntimeError, subprocess.TimeoutExpired, ET.ParseError) as e:
        run.note = f"the suite did not complete: {e}"
        return run
    if run.results.get(BASELINE_ID, Outcome(PASS)).outcome == FAIL:
        run.probe = probe_plain_container(resolved)
    return run


# --------------------------------------------------------------------------- the machine

def machine_facts() -> dict[str, str]:
    from . import host
    mode = host.cgroup_mode()
    mounts = host.cgroup_mounts()
    if mode == "hybrid":
        mode_text = f"hybrid (v1 controllers, cgroup2 at `{mounts.get('unified')}`)"
    elif mode == "v2":
        mode_text = "unified (cgroup v2 only)"
    else:
        mode_text = "legacy (cgroup v1 only)"
    return {
        "os": _os_name(),
        "kernel": f"{platform.release()} ({platform.machine()})",
        "cgroups": mode_text,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


# --------------------------------------------------------------------------- Markdown

def clean_message(text: str) -> str:
    """One line, without runc's logrus wrapping (`time="…" level=error msg="…"`)."""
    text = re.sub(r'time="[^"]*" level=\w+ msg="((?:[^"\\]|\\.)*)"',
                  lambda m: m.group(1).replace('\\"', '"'), text)
    # The suite's scratch paths change every run; keep the file stable across regenerations.
    text = re.sub(r"/tmp/conformance-\w+", "/tmp/conformance-*", text)
    return " ".join(text.split())


def md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("`", "'")


def shorten(text: str, limit: int = CELL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def cell(result: Outcome | None) -> str:
    if result is None:
        return "—"
    if result.outcome == PASS:
        return "pass"
    msg = clean_message(result.message)
    if result.outcome == SKIP:
        if msg.startswith(BASELINE_SKIP_PREFIX):
            return "skip: baseline failed"
        return f"skip: {md_escape(shorten(msg))}"
    return f"**FAIL**: {md_escape(shorten(msg))}"


def summary_line(run: RuntimeRun, checks: list[Check]) -> str:
    """`N passed, N failed (N MUST, N SHOULD), N skipped` for a runtime that ran."""
    res = run.results or {}
    levels = {c.id: c.level for c in checks}
    count = lambda o: sum(1 for r in res.values() if r.outcome == o)
    fails = [k for k, r in res.items() if r.outcome == FAIL]
    must = sum(1 for k in fails if levels.get(k, MUST) == MUST)
    return (f"{count(PASS)} passed, {len(fails)} failed ({must} MUST, {len(fails) - must} SHOULD), "
            f"{count(SKIP)} skipped")


def render_markdown(machine: dict[str, str], runs: list[RuntimeRun], checks: list[Check]) -> str:
    ran = [r for r in runs if r.ran]
    out = ["# Conformance results", "",
           "Generated by `.venv/bin/python -m conformance.results` (see README.md); do not edit "
           "by hand. Each runtime had one full run of the suite against runtime-spec v1.2.0.", "",
           "## Machine", ""]
    out += [f"- OS: {machine['os']}", f"- Kernel: {machine['kernel']}",
            f"- cgroups: {machine['cgroups']}", f"- Date: {machine['date']}", ""]

    out += ["## Runtimes", ""]
    for r in runs:
        if r.ran:
            out.append(f"- **{r.name}** — {r.version}, `{_shown_path(r.path)}`: {summary_line(r, checks)}")
        else:
            out.append(f"- **{r.name}** — {r.note}")
    out += ["", "A failed MUST fails a run; a failed SHOULD is reported only. Skips come from "
            "probing the host, never from the runtime's name.", ""]

    out += _table(ran, checks)
    out += _violations(ran, checks)
    out += _should_failures(ran, checks)
    return "\n".join(out).rstrip() + "\n"


def _shown_path(path: str) -> str:
    """Paths inside the checkout relative to it, so the file does not name one machine's tree."""
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return path


def _table(ran: list[RuntimeRun], checks: list[Check]) -> list[str]:
    head = "| Check | Level | Clause | " + " | ".join(r.name for r in ran) + " |"
    rule = "|---|---|---|" + "---|" * len(ran)
    rows = [f"| `{c.id}` | {c.level} | {md_escape(c.clause.file)} § {md_escape(c.clause.section)} | "
            + " | ".join(cell(r.results.get(c.id)) for r in ran) + " |" for c in checks]
    return ["## Results", "", head, rule, *rows, ""]


def _violations(ran: list[RuntimeRun], checks: list[Check]) -> list[str]:
    out = ["## Where a runtime violates the spec", "",
           "Every failed MUST check, with what the check saw and why.", ""]
    for r in ran:
        failed = [c for c in checks if c.level == MUST and r.results.get(c.id, Outcome(PASS)).outcome == FAIL]
        out += [f"### {r.name}", ""]
        if not failed:
            out += ["No MUST failures.", ""]
            continue
        for c in failed:
            saw = clean_message(r.results[c.id].message)
            why = EXPLANATIONS.get((r.name, c.id), "")
            out.append(f"- [`{c.id}`]({c.clause.url()}) ({c.clause.cite()}): {why}".rstrip())
            out.append(f"  - Saw: {md_escape(saw)}")
            if c.id == BASELINE_ID:
                skipped = sum(1 for k, v in r.results.items()
                              if v.outcome == SKIP and v.message.startswith(BASELINE_SKIP_PREFIX))
                out.append(f"  - The other {skipped} checks were skipped for that reason.")
                if r.probe:
                    out.append(f"  - The same plain container declaring ociVersion {PROBE_OCI_VERSION}: "
                               f"{md_escape(clean_message(r.probe))}")
        out.append("")
    return out


def _should_failures(ran: list[RuntimeRun], checks: list[Check]) -> list[str]:
    out = ["## SHOULD failures (reported, not fatal)", ""]
    any_found = False
    for r in ran:
        failed = [c for c in checks if c.level == SHOULD and r.results.get(c.id, Outcome(PASS)).outcome == FAIL]
        for c in failed:
            any_found = True
            out.append(f"- {r.name} `{c.id}` ({c.clause.cite()}): "
                       f"{md_escape(clean_message(r.results[c.id].message))}")
    if not any_found:
        out.append("None.")
    return out + [""]


# --------------------------------------------------------------------------- command line

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m conformance.results",
                                description="run the conformance suite against several runtimes "
                                            "and write the side-by-side results as Markdown")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown file to write (default: %(default)s)")
    p.add_argument("--runtime", action="append", metavar="NAME=PATH",
                   help="a runtime to judge (repeatable; default: "
                        + ", ".join(f"{n}={p}" for n, p in DEFAULT_RUNTIMES) + ")")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("python -m conformance.results: must run as root (the suite creates real containers)",
              file=sys.stderr)
        return 2
    from . import load_checks
    checks = list(load_checks())
    with tempfile.TemporaryDirectory(prefix="conformance-results-") as tmp:
        runs = [run_runtime(name, path, Path(tmp)) for name, path in parse_runtime_specs(args.runtime)]
    text = render_markdown(machine_facts(), runs, checks)
    Path(args.out).write_text(text)
    for r in runs:
        print(f"{r.name}: {summary_line(r, checks) if r.ran else r.note}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
