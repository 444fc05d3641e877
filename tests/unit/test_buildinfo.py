"""ocirun.buildinfo: where `ocirun --version` gets its commit (the real git; no root)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from ocirun import buildinfo


@pytest.fixture
def checkout(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("one\n")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return tmp_path, head


def test_the_top_of_a_checkout_gives_its_commit_and_dirtiness(checkout):
    top, head = checkout
    assert buildinfo.git_commit(str(top)) == head
    (top / "f").write_text("two\n")
    assert buildinfo.git_commit(str(top)) == f"{head}-dirty"


def test_a_folder_inside_someone_elses_repository_gives_none(checkout):
    """An installed package's parent (site-packages, /usr/lib/python3) may lie inside a repository
    of the user's: its commit is not ocirun's."""
    top, _head = checkout
    (top / "lib").mkdir()
    assert buildinfo.git_commit(str(top / "lib")) is None


def test_the_build_info_file_round_trips():
    namespace: dict = {}
    exec(buildinfo.build_info_source("v1.2.3-4-gabcdef0'\"x"), namespace)
    assert namespace["COMMIT"] == "v1.2.3-4-gabcdef0'\"x"
