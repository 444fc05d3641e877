"""`fs.UndoOnError`, what a refused `update` puts back: pure file logic, on plain files."""
from __future__ import annotations

import pytest

from ocirun.cgroups import fs


def test_a_failed_block_puts_back_one_line_values_newest_first(tmp_path):
    limit, swap = tmp_path / "memory.limit_in_bytes", tmp_path / "memory.memsw.limit_in_bytes"
    keyed, control = tmp_path / "blkio.throttle.read_bps_device", tmp_path / "cgroup.subtree_control"
    limit.write_text("100\n")
    swap.write_text("200\n")
    keyed.write_text("8:0 1000\n")
    control.write_text("cpu\n")
    warnings: list[str] = []
    with pytest.raises(RuntimeError), fs.UndoOnError(warnings.append):
        fs.write(str(swap), "600")
        fs.write(str(limit), "300")
        fs.write(str(keyed), "253:0 5")
        fs.write(str(control), "+memory")
        raise RuntimeError("a later value refused")
    # (plain files are not truncated by a write as cgroupfs files are: compare what was written)
    assert (limit.read_text().strip(), swap.read_text().strip()) == ("100", "200")
    # a per-device file cannot be put back by rewriting what it read: said, not guessed
    assert keyed.read_text().startswith("253:0 5")
    assert [w for w in warnings if "blkio.throttle.read_bps_device" in w] and len(warnings) == 1, warnings
    assert control.read_text().startswith("+memory")  # not a limit: left as written, silently


def test_a_block_that_succeeds_keeps_its_writes_and_journals_nothing_after(tmp_path):
    f = tmp_path / "pids.max"
    f.write_text("10")
    with fs.UndoOnError(lambda msg: pytest.fail(msg)):
        fs.write(str(f), "20")
    assert f.read_text() == "20"
    with pytest.raises(RuntimeError), fs.UndoOnError(lambda msg: pytest.fail(msg)):
        raise RuntimeError("refused before any write")
    assert f.read_text() == "20"  # the earlier block's write is not undone by a later one
