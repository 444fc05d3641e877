"""cgroup path computation, host-layout parsing, value conversions and state checks (no root)."""
import json

import pytest

from ocirun.cgroups import detect, v2
from ocirun.cgroups.manager import Manager, load_manager
from ocirun.cgroups.paths import container_dirs, inner_path, is_systemd_form
from ocirun.errors import ConfigError, OCIError

HYBRID_MOUNTINFO = """\
22 1 0:20 / /sys rw - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,clone_children,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 1 0:38 / /mnt/elsewhere rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_PROC_CGROUP = """\
9:name=systemd:/user.slice/session-1.scope
8:pids:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/user.slice/session-1.scope
"""
UNIFIED_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
UNIFIED_PROC_CGROUP = "0::/user.slice/user-0.slice/session-3.scope\n"


def hybrid():
    return detect.parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP)


def unified():
    return detect.parse_hierarchies(UNIFIED_MOUNTINFO, UNIFIED_PROC_CGROUP)


# ---------------------------------------------------------------- linux.cgroupsPath

@pytest.mark.parametrize("given, want", [
    ("/a/b", "/a/b"),
    ("/a//b/", "/a/b"),
    ("/a/./b/../c", "/a/c"),
    ("a/b", "a/b"),
    ("./a", "a"),
    ("a/../b", "b"),
    ("/docker/0be7c1412af4", "/docker/0be7c1412af4"),
])
def test_inner_path_normalises(given, want):
    assert inner_path("cid", given) == want


def test_empty_path_is_the_container_id_relative():
    assert inner_path("cid", "") == "cid"


@pytest.mark.parametrize("given", ["/..", "/../x", "/a/../../x", "..", "../x", "a/../../x"])
def test_dotdot_escaping_is_refused(given):
    with pytest.raises(ConfigError) as e:
        inner_path("cid", given)
    assert str(e.value).startswith("linux.cgroupsPath: ")
    assert "climbs above" in str(e.value)


@pytest.mark.parametrize("given", ["/", "//", "/a/..", ".", "a/.."])
def test_path_naming_the_root_itself_is_refused(given):
    with pytest.raises(ConfigError, match="must name a cgroup below"):
        inner_path("cid", given)


@pytest.mark.parametrize("given", ["system.slice:docker:abc", "machine.slice:libpod:x", ":crio:x"])
def test_systemd_form_without_the_systemd_driver_is_refused(given):
    assert is_systemd_form(given)
    with pytest.raises(ConfigError, match="pass --systemd-cgroup"):
        inner_path("cid", given)


def test_colons_in_an_absolute_path_are_a_plain_name():
    assert not is_systemd_form("/a:b:c")
    assert inner_path("cid", "/a:b:c") == "/a:b:c"


def test_bad_container_id_for_default_path():
    with pytest.raises(OCIError):
        inner_path("../x", "")


# ---------------------------------------------------------------- host layout

def test_parse_hybrid_hierarchies():
    h = hybrid()
    assert set(h) == {"cpu,cpuacct", "memory", "pids", "name=systemd", ""}
    assert h["cpu,cpuacct"].controllers == ("cpu", "cpuacct")
    assert h["pids"].controllers == ("pids",)  # mount flags are not controllers
    assert h["name=systemd"].controllers == ()
    assert h[""].mountpoint == "/sys/fs/cgroup/unified"  # not the stray mount elsewhere
    assert h["memory"].own == "/process_api/abc"


def test_absolute_path_is_below_each_hierarchy_root():
    dirs = container_dirs("/x/y", "hybrid", hybrid())
    assert dirs == {
        "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/x/y",
        "memory": "/sys/fs/cgroup/memory/x/y",
        "pids": "/sys/fs/cgroup/pids/x/y",
        "name=systemd": "/sys/fs/cgroup/systemd/x/y",
        "": "/sys/fs/cgroup/unified/x/y",
    }


def test_relative_path_is_below_our_own_cgroup_per_hierarchy():
    dirs = container_dirs("c1", "hybrid", hybrid())
    assert dirs["memory"] == "/sys/fs/cgroup/memory/process_api/abc/c1"
    assert dirs["pids"] == "/sys/fs/cgroup/pids/c1"
    assert dirs["name=systemd"] == "/sys/fs/cgroup/systemd/user.slice/session-1.scope/c1"
    # hybrid's cgroup2 tree follows the v1 rule (our own cgroup), as runc's fs manager does
    assert dirs[""] == "/sys/fs/cgroup/unified/user.slice/session-1.scope/c1"


def test_legacy_skips_cgroup2():
    assert "" not in container_dirs("/c1", "legacy", hybrid())


def test_unified_relative_path_uses_parent_of_own_cgroup():
    dirs = container_dirs("c1", "unified", unified())
    assert dirs == {"": "/sys/fs/cgroup/user.slice/user-0.slice/c1"}
    assert container_dirs("/c1", "unified", unified()) == {"": "/sys/fs/cgroup/c1"}


def test_unified_relative_path_from_root_cgroup():
    h = detect.parse_hierarchies(UNIFIED_MOUNTINFO, "0::/\n")
    assert container_dirs("c1", "unified", h) == {"": "/sys/fs/cgroup/c1"}


def test_mount_root_is_stripped_from_own_cgroup():
    mi = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    h = detect.parse_hierarchies(mi, "0::/kubepods/pod1/ctr\n")
    assert h[""].own == "/ctr"


def test_mountinfo_octal_escapes():
    from ocirun import mountinfo
    assert mountinfo.unescape(r"/sys/fs/cgroup/a\040b") == "/sys/fs/cgroup/a b"
    assert mountinfo.unescape("plain") == "plain"


def test_cgroup_mode_is_cached_and_valid():
    assert detect.cgroup_mode() in ("unified", "hybrid", "legacy")
    assert detect.cgroup_mode() is detect.cgroup_mode()


# ---------------------------------------------------------------- conversions

@pytest.mark.parametrize("swap, limit, want", [
    (0, 0, 0), (0, -1, -1), (-1, 100, -1), (300, 100, 200), (100, 100, 0)])
def test_v2_swap_conversion(swap, limit, want):
    assert v2.swap_max(swap, limit) == want


@pytest.mark.parametrize("swap, limit", [(100, 0), (100, -1), (50, 100)])
def test_v2_swap_conversion_refuses_nonsense(swap, limit):
    with pytest.raises(ConfigError, match="linux.resources.memory.swap"):
        v2.swap_max(swap, limit)


@pytest.mark.parametrize("shares, weight", [(0, 0), (2, 1), (1024, 39), (262144, 10000)])
def test_cpu_shares_to_weight(shares, weight):
    assert v2.cpu_weight(shares) == weight


# ---------------------------------------------------------------- manager without root

def fake_manager(**kw):
    paths = {"pids": "/sys/fs/cgroup/pids/c", "": "/sys/fs/cgroup/unified/c"}
    mounts = {"pids": "/sys/fs/cgroup/pids", "": "/sys/fs/cgroup/unified"}
    return Manager("hybrid", paths, mounts, [], kw.get("resources", {}), kw.get("warn"))


def test_missing_controller_names_the_field():
    m = fake_manager(resources={"memory": {"limit": 1 << 20}})
    with pytest.raises(ConfigError) as e:
        m.apply_resources()
    assert str(e.value) == "linux.resources.memory.limit: the memory controller is not available"


def test_wrong_type_names_the_field():
    m = fake_manager(resources={"pids": {"limit": "5"}})
    with pytest.raises(ConfigError, match=r"^linux.resources.pids.limit: must be an integer"):
        m.apply_resources()


def test_unknown_resources_are_reported_not_fatal():
    seen = []
    m = fake_manager(resources={"futureThing": {"a": 1}, "memory": {"disableOOMKiller": False, "bogus": 10},
                                "blockIO": {}}, warn=seen.append)
    assert m.apply_resources() == ["linux.resources.futureThing", "linux.resources.memory.bogus"]
    assert len(seen) == 1 and "linux.resources.memory.bogus" in seen[0]


def test_devices_without_a_devices_controller_names_the_field():
    m = fake_manager(resources={"devices": [{"allow": False, "access": "rwm"}]})
    with pytest.raises(ConfigError, match=r"^linux.resources.devices: the devices controller is not available"):
        m.apply_resources()


def test_state_round_trip_through_json():
    m = fake_manager()
    m.created = ["/sys/fs/cgroup/pids/c"]
    m2 = load_manager(json.loads(json.dumps(m.to_state())))
    assert (m2.mode, m2.paths, m2.mounts, m2.created) == (m.mode, m.paths, m.mounts, m.created)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(paths={"pids": "/etc"}),
    lambda d: d.update(created=["/sys/fs/cgroup/pids/../../../etc"]),
    lambda d: d.update(mounts={"pids": "/etc", "": "/sys/fs/cgroup/unified"}, paths={"pids": "/etc/x"}),
    lambda d: d.update(mode="weird"),
    lambda d: d.pop("paths"),
])
def test_tampered_state_is_refused(mutate):
    d = fake_manager().to_state()
    mutate(d)
    with pytest.raises(OCIError):
        load_manager(d)


def test_manager_for_has_no_side_effects():
    from ocirun.cgroups import manager_for
    m = manager_for("ocirun-test-unit-nofx", "/ocirun-test-unit-nofx", {})
    assert m.created == []
    assert all(p.endswith("/ocirun-test-unit-nofx") for p in m.paths.values())
    import os
    assert not any(os.path.exists(p) for p in m.paths.values())
