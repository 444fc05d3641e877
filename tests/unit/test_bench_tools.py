"""bench/timeline.py wraps functions by name: a rename in ocirun must not leave it broken."""
from __future__ import annotations

import importlib.util
from pathlib import Path

TIMELINE = Path(__file__).resolve().parents[2] / "bench" / "timeline.py"


def test_every_phase_timeline_marks_still_exists():
    spec = importlib.util.spec_from_file_location("bench_timeline", TIMELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its __main__ guard keeps it from running a command
    missing = [f"{m.__name__}.{n}" for m, names in module.PHASES for n in names if not callable(getattr(m, n, None))]
    assert not missing, f"bench/timeline.py marks functions that are gone: {missing}"
