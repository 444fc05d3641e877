"""The `ocirun-conformance` command: the conformance suite (conformance/README.md).

A wheel installs the suite as `ocirun.conformance` (setup.py maps the repository's top-level
conformance/ folder there).  An editable install of a checkout has no such package: the checkout
itself is on sys.path, where the suite is the top-level `conformance` that `python -m
conformance` runs.  The command finds it either way.
"""
import sys

PROG = "ocirun-conformance"


def main() -> int:
    try:
        from ocirun.conformance.__main__ import main as suite_main
    except ModuleNotFoundError as e:
        if e.name != "ocirun.conformance":
            raise
        from conformance.__main__ import main as suite_main
    return suite_main(sys.argv[1:], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
