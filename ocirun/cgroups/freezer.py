"""Which freezer a container's cgroup has, and whether it is frozen — from the paths alone.

Kept apart from the Manager (and importing nothing else of the package) because `state`,
`kill` and `list` ask "is it paused?" on every call an engine makes, and that question needs
two small file reads, not the whole cgroup code (~1 ms of imports).
"""
from __future__ import annotations

import os

UNIFIED_KEY = ""  # detect.UNIFIED_KEY: the cgroup2 hierarchy's key in every path map


def locate(mode: str, paths: dict[str, str]) -> tuple[str, str] | None:
    """('v2', dir) when cgroup.freeze exists (unified, hybrid), else ('v1', dir) for the v1
    freezer hierarchy, else None."""
    d = paths.get(UNIFIED_KEY)
    if d is not None and os.path.exists(f"{d}/cgroup.freeze"):
        return "v2", d
    if mode != "unified":
        for key, d in paths.items():
            if "freezer" in key.split(","):
                return "v1", d
    return None


def is_frozen(kind: str, d: str) -> bool:
    """The kernel's word: cgroup.events "frozen 1" (v2), freezer.state FROZEN (v1)."""
    try:
        if kind == "v2":
            return any(line == "frozen 1" for line in _read(f"{d}/cgroup.events").splitlines())
        return _read(f"{d}/freezer.state") == "FROZEN"
    except OSError:
        return False


def paused(mode: str, paths: dict[str, str]) -> bool:
    where = locate(mode, paths)
    return where is not None and is_frozen(*where)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode().strip()
