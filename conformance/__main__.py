"""Command line: python -m conformance --runtime PATH [--filter PATTERN] [--tap | --junit FILE]
[--root DIR] [--rootfs DIR] [--list].  Installed from a wheel, the same is `ocirun-conformance`
(ocirun/conformance_cli.py)."""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from . import load_checks
from .framework import QuietReporter, TapReporter, run_checks, select, write_junit


PROG = "python -m conformance"


def parse_args(argv, prog: str = PROG):
    p = argparse.ArgumentParser(prog=prog,
                                description="OCI runtime-spec v1.2.0 conformance checks for a runc-CLI runtime")
    p.add_argument("--runtime", required=False, help="path (or name on PATH) of the runtime binary")
    p.add_argument("--filter", metavar="PATTERN",
                   help="run only checks whose id matches (glob like 'hooks.*', substring or regex; comma-separated)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--tap", action="store_true", help="TAP on stdout (the default)")
    out.add_argument("--junit", metavar="FILE", help="write JUnit XML to FILE; stdout gets only the summary")
    p.add_argument("--root", metavar="DIR", help="state directory passed as the runtime's --root (default: a private one)")
    p.add_argument("--rootfs", metavar="DIR", help="use this root filesystem (needs busybox sh) instead of building one")
    p.add_argument("--oci-version", default="1.2.0", metavar="X.Y.Z",
                   help="ociVersion the generated bundles declare (default 1.2.0; older runtimes may refuse it)")
    p.add_argument("--list", action="store_true", help="list the selected checks with their clauses and exit")
    return p.parse_args(argv)


def main(argv=None, prog: str = PROG) -> int:
    """`prog`: how the user called the suite, for the usage line and the error messages."""
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    checks = select(load_checks(), args.filter)
    if args.list:
        for c in checks:
            print(f"{c.id:45} {c.clause.cite():55} {c.title}")
        return 0
    if not args.runtime:
        print(f"{prog}: --runtime PATH is required", file=sys.stderr)
        return 2
    runtime = shutil.which(args.runtime) or args.runtime
    if not (os.path.isfile(runtime) and os.access(runtime, os.X_OK)):
        print(f"{prog}: runtime {args.runtime!r} is not an executable file", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print(f"{prog}: must run as root (it creates real containers)", file=sys.stderr)
        return 2
    from . import trial
    from .trial import Suite, Trial
    trial.OCI_VERSION = args.oci_version
    suite = Suite(runtime, root=args.root, rootfs=args.rootfs)
    reporter = QuietReporter() if args.junit else TapReporter()
    try:
        summary = run_checks(checks, lambda chk: Trial(suite, chk.id), reporter)
    finally:
        suite.close()
    if args.junit:
        write_junit(args.junit, summary, f"conformance ({os.path.basename(runtime)})")
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
