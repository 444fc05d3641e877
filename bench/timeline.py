#!/usr/bin/env python3
"""Where one `ocirun` command spends its time: phase marks from every process it forks.

    cd BUNDLE && /path/to/.venv/bin/python bench/timeline.py run ID     (any ocirun arguments)

Wraps the main phases (config load, cgroup setup, spawn, the intermediate, the init's rootfs
steps, start, delete) and prints, on stderr, milliseconds since this script started and the
pid of the process (the init shows as 1: it is pid 1 of its namespace).  The imports line is
what loading ocirun costs before main() runs; the interpreter's own start (`python -c pass`) comes
on top.  A development tool: it patches module attributes, so use it on a test bundle only.
"""
from __future__ import annotations

import os
import sys
import time

T0 = time.perf_counter()

import ocirun.cli  # noqa: E402
import ocirun.config as config  # noqa: E402
import ocirun.create as create  # noqa: E402
import ocirun.delete as delete  # noqa: E402
import ocirun.start as start  # noqa: E402
from ocirun.process import become, init, intermediate, parent  # noqa: E402


def mark(name: str) -> None:
    os.write(2, f"{(time.perf_counter() - T0) * 1000:7.2f} ms [{os.getpid()}] {name}\n".encode())


def wrap(module, name: str) -> None:
    original = getattr(module, name)

    def timed(*args, **kwargs):
        mark(f"{name} >")
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{name} <")

    setattr(module, name, timed)


# What gets a mark; tests/unit/test_bench_tools.py checks each name still exists.
PHASES = ((config, ["load_bundle"]),
          (create, ["create", "cgroup_manager"]), (start, ["start"]), (delete, ["delete"]),
          (parent, ["spawn_init"]), (intermediate, ["main"]),
          (init, ["_run", "build_container_fs", "prepare_rootfs", "enter_rootfs", "finalize_rootfs", "_wait_for_start"]),
          (become, ["drop_to_process", "execute"]))

if __name__ == "__main__":
    mark("imports done")
    for module, names in PHASES:
        for n in names:
            wrap(module, n)
    rc = ocirun.cli.main(sys.argv[1:])
    mark("main done")
    sys.exit(rc)
