"""The commit this ocirun was built from, for `ocirun --version` (docker shows it in `docker info`).

An installed package (a wheel, or a wheel built from an sdist) has no git history to ask, so
setup.py writes the commit into `ocirun/_build_info.py` when it builds one.  A checkout (an
editable install, PYTHONPATH) has no such file and asks git when `--version` is asked: only
that flag pays for the subprocess, never an engine command, and nothing here is imported on
their path.

setup.py loads this file by its path (the package is not importable while it is being built),
so `git_commit` must not depend on the rest of the package.
"""
from __future__ import annotations

import os

UNKNOWN = "unknown"


def commit() -> str:
    """The commit recorded at build time, else the checkout's own, else "unknown"."""
    try:
        from ._build_info import COMMIT
    except ImportError:
        checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        return git_commit(checkout) or UNKNOWN
    return COMMIT


def git_commit(project_dir: str) -> str | None:
    """What runc's Makefile records as its commit, `git describe --always --long --dirty`
    (TAG-N-gSHA, or the abbreviated SHA when there is no tag; "-dirty" with uncommitted
    changes), for the checkout whose top is project_dir; None when project_dir is not the top
    of a checkout (never ask a repository that merely encloses an installed package) or git
    cannot say (not installed, or a checkout owned by another user)."""
    if not os.path.exists(os.path.join(project_dir, ".git")):  # a directory, or a worktree's file
        return None
    import subprocess
    try:
        r = subprocess.run(["git", "-C", project_dir, "describe", "--always", "--long", "--dirty"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    described = r.stdout.strip()
    return described if r.returncode == 0 and described else None


def build_info_source(commit_id: str) -> str:
    """The text of ocirun/_build_info.py that setup.py writes into a wheel or an sdist."""
    return ('"""Written by setup.py when this package was built (see ocirun/buildinfo.py); do not edit."""\n'
            f"COMMIT = {commit_id!r}\n")
