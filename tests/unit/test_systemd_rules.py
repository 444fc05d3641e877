"""The systemd driver's pure rules (ocirun/cgroups/systemd.py): names, slice paths, unit
properties.  That a real systemd takes them is proven in tests/systemd (the -s guest)."""
import pytest

from ocirun.cgroups import systemd
from ocirun.cgroups.devices import policy_for
from ocirun.errors import ConfigError


def test_unit_from_slice_prefix_name():
    u = systemd.unit_for("abc", "system.slice:docker:abc")
    assert (u.slice, u.name) == ("system.slice", "docker-abc.scope")
    assert u.cgroup() == "/system.slice/docker-abc.scope"


def test_empty_slice_and_empty_path_take_the_defaults():
    assert systemd.unit_for("c1", ":libpod:c1").cgroup() == "/system.slice/libpod-c1.scope"
    assert systemd.unit_for("c1", "").cgroup() == "/system.slice/ocirun-c1.scope"
    assert systemd.unit_for("c1", "", default_slice="user.slice").slice == "user.slice"


def test_kubernetes_pod_slice_expands_to_its_parents():
    u = systemd.unit_for("x", "kubepods-burstable-pod1234.slice:cri-containerd:x")
    assert u.cgroup() == ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
                          "/cri-containerd-x.scope")


def test_root_slice():
    assert systemd.expand_slice("-.slice") == "/"
    assert systemd.unit_for("x", "-.slice:p:x").cgroup() == "/p-x.scope"


@pytest.mark.parametrize("path", ["/machine/abc", "a:b", "a:b:c:d", "system.slice:p:", "bad-.slice:p:x",
                                  "a--b.slice:p:x", "foo:p:x", "sys/tem.slice:p:x", "system.slice:p:x y",
                                  "system.slice:p:n.slice"])
def test_bad_paths_are_refused_naming_the_field(path):
    with pytest.raises(ConfigError) as e:
        systemd.unit_for("x", path)
    assert "linux.cgroupsPath" in str(e.value) and repr(path) in str(e.value)


def test_resource_properties_follow_runc_conversions():
    res = {"memory": {"limit": 100 << 20, "reservation": 50 << 20, "swap": 200 << 20},
           "cpu": {"shares": 1024, "quota": 12345, "period": 100000, "cpus": "0-2,7"},
           "pids": {"limit": 64}, "blockIO": {"weight": 500}}
    props = dict(systemd.resource_properties(res, 252))
    assert props["MemoryMax"] == ("t", 100 << 20)
    assert props["MemoryLow"] == ("t", 50 << 20)
    assert props["MemorySwapMax"] == ("t", 100 << 20)        # swap is memory+swap in the spec
    assert props["CPUWeight"] == ("t", 1 + (1024 - 2) * 9999 // 262142)
    assert props["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert props["CPUQuotaPerSecUSec"] == ("t", 130000)      # 123450 rounded up to 10 ms steps
    assert res["cpu"]["quota"] == 13000                       # and the file gets the same value
    assert props["AllowedCPUs"] == ("ay", bytes([0b10000111]))
    assert props["TasksMax"] == ("t", 64)
    assert props["IOWeight"] == ("t", 1 + (500 - 10) * 9999 // 990)


def test_unlimited_values_are_infinity_and_old_systemd_gets_fewer_properties():
    props = dict(systemd.resource_properties({"memory": {"limit": -1}, "pids": {"limit": -1},
                                              "cpu": {"quota": -1, "period": 50000, "cpus": "1"}}, 240))
    assert props["MemoryMax"] == ("t", systemd.UINT64_MAX)
    assert props["TasksMax"] == ("t", systemd.UINT64_MAX)
    assert props["CPUQuotaPerSecUSec"] == ("t", systemd.UINT64_MAX)
    assert "CPUQuotaPeriodUSec" not in props and "AllowedCPUs" not in props


def test_unified_keys_with_a_property():
    props = dict(systemd.resource_properties({"unified": {"memory.high": "1048576", "pids.max": "max",
                                                          "cpu.max": "50000 100000", "io.max": "8:0 rbps=1"}}, 252))
    assert props["MemoryHigh"] == ("t", 1048576)
    assert props["TasksMax"] == ("t", systemd.UINT64_MAX)
    assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert len(props) == 4  # io.max: files only


def test_default_device_policy_in_systemds_words():
    props = dict(systemd.device_properties(policy_for([]), "Character devices:\n136 pts\n"))
    assert props["DevicePolicy"] == ("s", "strict")
    allow = dict(props["DeviceAllow"][1])
    assert allow["/dev/char/1:3"] == "rwm"          # /dev/null
    assert allow["char-pts"] == "rwm"               # 136:*
    assert allow["char-*"] == "m" and allow["block-*"] == "m"


def test_allow_all_is_auto_and_a_hole_in_allow_all_cannot_be_said():
    assert dict(systemd.device_properties(policy_for([{"allow": True, "access": "rwm"}])))["DevicePolicy"] == \
        ("s", "auto")
    holed = policy_for([{"allow": True, "access": "rwm"}, {"allow": False, "type": "c", "major": 10, "minor": 229,
                                                         "access": "rwm"}])
    assert systemd.device_properties(holed) is None


def test_a_major_without_a_name_cannot_be_said():
    assert systemd.device_properties(policy_for([]), "Character devices:\n1 mem\n") is None


@pytest.mark.parametrize("text,expected", [
    ("uint64 5000000", ("t", 5000000)), ("@t 7", ("t", 7)), ("true", ("b", True)), ("12", ("i", 12)),
    ("'inactive-or-failed'", ("s", "inactive-or-failed")), ('"a\\"b"', ("s", 'a"b')),
    ("['a', 'b,c']", ("as", ["a", "b,c"])), ("double 1.5", ("d", 1.5)),
])
def test_gvariant_values(text, expected):
    assert systemd.parse_variant(text, "f") == expected


@pytest.mark.parametrize("text", ["uint64 -1", "byte 256", "yes", "'unterminated", "uint64 'x'"])
def test_bad_gvariant_values_are_refused(text):
    with pytest.raises(ConfigError):
        systemd.parse_variant(text, "f")


def test_annotations_become_properties_and_sec_becomes_usec():
    props = systemd.annotation_properties({
        "org.systemd.property.TimeoutStopSec": "uint64 3",
        "org.systemd.property.CollectMode": "'inactive-or-failed'",
        "org.systemd.property.TimeoutStartUSec": "uint64 9",
        "io.kubernetes.cri.container-type": "container"})
    assert props == [("CollectMode", ("s", "inactive-or-failed")), ("TimeoutStartUSec", ("t", 9)),
                     ("TimeoutStopUSec", ("t", 3_000_000))]


@pytest.mark.parametrize("name", ["lower", "Wi", "Has1Digit", "With_Under"])
def test_bad_property_names_are_refused_naming_the_annotation(name):
    with pytest.raises(ConfigError) as e:
        systemd.annotation_properties({f"org.systemd.property.{name}": "true"})
    assert f"org.systemd.property.{name}" in str(e.value)


def test_a_unified_cpu_max_is_rounded_for_the_file_too():
    res = {"unified": {"cpu.max": "12345 100000"}}
    props = dict(systemd.resource_properties(res, 252))
    assert props["CPUQuotaPerSecUSec"] == ("t", 130000)
    assert res["unified"]["cpu.max"] == "13000 100000"
