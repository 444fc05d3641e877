"""Fixtures for the engine tests: which runtime a scenario runs on, and the engines themselves.

- `runtime`: "runc" or "ocirun"; every scenario runs on both, so a difference is visible.
- every test here is marked `e2e` (deselect with `-m "not e2e"`).
- `OCIRUN_E2E_TRACE=DIR` logs every runtime call the engines make to DIR/<runtime>.log.
"""
from __future__ import annotations

import pytest

import engines


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: drives a real engine (podman, containerd, dockerd)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(params=["runc", "ocirun"])
def runtime(request):
    engines.runtime_path(request.param)  # skips if this runtime is missing
    return request.param
