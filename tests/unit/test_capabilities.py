"""Capability names and masks (no root needed)."""
import pytest

from ocirun import capabilities
from ocirun.config import Capabilities
from ocirun.errors import ConfigError


def test_table_is_complete_and_contiguous():
    assert sorted(capabilities.CAPS.values()) == list(range(41))
    assert capabilities.CAPS["CAP_CHOWN"] == 0
    assert capabilities.CAPS["CAP_CHECKPOINT_RESTORE"] == 40
    assert capabilities.CAP_NAMES[21] == "CAP_SYS_ADMIN"


def test_check_names_accepts_known():
    capabilities.check_names(["CAP_KILL", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"], "process.capabilities.bounding")


def test_check_names_names_the_index():
    with pytest.raises(ConfigError) as ei:
        capabilities.check_names(["CAP_KILL", "CAP_FOO"], "process.capabilities.effective")
    assert str(ei.value) == "process.capabilities.effective[1]: unknown capability 'CAP_FOO'"


def test_check_names_is_case_sensitive():
    # runc's table is upper-case only; so is the spec's
    with pytest.raises(ConfigError):
        capabilities.check_names(["cap_kill"], "x")


def test_last_cap_matches_proc():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capabilities.last_cap() == int(f.read())


def test_mask_skips_caps_the_kernel_lacks(monkeypatch):
    monkeypatch.setattr(capabilities, "_last_cap", 37)
    assert capabilities.mask(["CAP_CHOWN", "CAP_KILL", "CAP_BPF"]) == (1 << 0) | (1 << 5)
    caps = Capabilities(bounding=["CAP_BPF", "CAP_KILL"], effective=["CAP_BPF", "CAP_PERFMON"])
    assert capabilities.unsupported_names(caps) == ["CAP_BPF", "CAP_PERFMON"]
    assert capabilities.unsupported_names(None) == []


def test_parse_capabilities_uses_check_names():
    from ocirun.config import parse_capabilities
    with pytest.raises(ConfigError, match=r"process.capabilities.ambient\[0\]: unknown capability"):
        parse_capabilities({"ambient": ["CAP_NOPE"]}, "process.capabilities")


def test_import_is_cheap():
    import subprocess, sys
    out = subprocess.run([sys.executable, "-c", "import sys, ocirun.capabilities; "
                          "print(' '.join(m for m in ('prctl', '_prctl', 'jsonschema') if m in sys.modules))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
