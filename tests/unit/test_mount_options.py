"""parse_mount_options: runc's mount option vocabulary -> flags, attrs, data (no root needed)."""
import pytest

from ocirun import linux as L
from ocirun.rootfs import parse_mount_options
from ocirun.rootfs.devices import DEFAULT_DEVICES, dev_is_host_bind, devices_to_create
from ocirun.config import Device, Mount


def test_empty():
    o = parse_mount_options([])
    assert (o.flags, o.clear_flags, o.propagation, o.data) == (0, 0, [], "")
    assert not (o.bind or o.recursive or o.tmpcopyup or o.idmap)


@pytest.mark.parametrize("opt,flag", [
    ("ro", L.MS_RDONLY), ("nosuid", L.MS_NOSUID), ("nodev", L.MS_NODEV), ("noexec", L.MS_NOEXEC),
    ("sync", L.MS_SYNCHRONOUS), ("dirsync", L.MS_DIRSYNC), ("remount", L.MS_REMOUNT),
    ("mand", L.MS_MANDLOCK), ("noatime", L.MS_NOATIME), ("nodiratime", L.MS_NODIRATIME),
    ("relatime", L.MS_RELATIME), ("strictatime", L.MS_STRICTATIME), ("lazytime", L.MS_LAZYTIME),
    ("nosymfollow", L.MS_NOSYMFOLLOW), ("silent", L.MS_SILENT),
])
def test_setting_flags(opt, flag):
    o = parse_mount_options([opt])
    assert o.flags == flag and o.clear_flags == 0 and o.data == ""


@pytest.mark.parametrize("opt,flag", [
    ("rw", L.MS_RDONLY), ("suid", L.MS_NOSUID), ("dev", L.MS_NODEV), ("exec", L.MS_NOEXEC),
    ("async", L.MS_SYNCHRONOUS), ("nomand", L.MS_MANDLOCK), ("atime", L.MS_NOATIME),
    ("diratime", L.MS_NODIRATIME), ("norelatime", L.MS_RELATIME), ("nostrictatime", L.MS_STRICTATIME),
    ("symfollow", L.MS_NOSYMFOLLOW), ("nolazytime", L.MS_LAZYTIME), ("loud", L.MS_SILENT),
])
def test_clearing_flags(opt, flag):
    o = parse_mount_options([opt])
    assert o.flags == 0 and o.clear_flags == flag


def test_later_option_wins():
    o = parse_mount_options(["ro", "rw"])
    assert o.flags & L.MS_RDONLY == 0 and o.clear_flags & L.MS_RDONLY
    o = parse_mount_options(["rw", "ro"])
    assert o.flags & L.MS_RDONLY and o.clear_flags & L.MS_RDONLY == 0


def test_defaults_is_nothing():
    assert parse_mount_options(["defaults"]).flags == 0


def test_bind_and_rbind():
    o = parse_mount_options(["bind"])
    assert o.bind and not o.recursive and o.flags == L.MS_BIND
    o = parse_mount_options(["rbind", "ro"])
    assert o.bind and o.recursive and o.flags == L.MS_BIND | L.MS_REC | L.MS_RDONLY
    # What a bind needs remounted: not the bind/rec bits themselves.
    assert o.remount_flags == L.MS_RDONLY
    assert parse_mount_options(["rbind"]).remount_flags == 0


@pytest.mark.parametrize("opt,flag", [
    ("private", L.MS_PRIVATE), ("rprivate", L.MS_PRIVATE | L.MS_REC),
    ("shared", L.MS_SHARED), ("rshared", L.MS_SHARED | L.MS_REC),
    ("slave", L.MS_SLAVE), ("rslave", L.MS_SLAVE | L.MS_REC),
    ("unbindable", L.MS_UNBINDABLE), ("runbindable", L.MS_UNBINDABLE | L.MS_REC),
])
def test_propagation_is_separate(opt, flag):
    o = parse_mount_options(["bind", opt])
    assert o.propagation == [flag]
    assert o.flags == L.MS_BIND  # never mixed into the mount flags


def test_propagation_order_kept():
    o = parse_mount_options(["rprivate", "shared"])
    assert o.propagation == [L.MS_PRIVATE | L.MS_REC, L.MS_SHARED]


@pytest.mark.parametrize("opt,attr", [
    ("rro", L.MOUNT_ATTR_RDONLY), ("rnosuid", L.MOUNT_ATTR_NOSUID), ("rnodev", L.MOUNT_ATTR_NODEV),
    ("rnoexec", L.MOUNT_ATTR_NOEXEC), ("rnodiratime", L.MOUNT_ATTR_NODIRATIME),
    ("rnosymfollow", L.MOUNT_ATTR_NOSYMFOLLOW),
])
def test_recursive_set(opt, attr):
    o = parse_mount_options([opt])
    assert o.rec_attr_set == attr and o.rec_attr_clr == 0 and o.flags == 0


@pytest.mark.parametrize("opt,attr", [
    ("rrw", L.MOUNT_ATTR_RDONLY), ("rsuid", L.MOUNT_ATTR_NOSUID), ("rdev", L.MOUNT_ATTR_NODEV),
    ("rexec", L.MOUNT_ATTR_NOEXEC), ("rdiratime", L.MOUNT_ATTR_NODIRATIME),
    ("rsymfollow", L.MOUNT_ATTR_NOSYMFOLLOW),
])
def test_recursive_clear(opt, attr):
    o = parse_mount_options([opt])
    assert o.rec_attr_set == 0 and o.rec_attr_clr == attr


@pytest.mark.parametrize("opt,mode", [
    ("rnoatime", L.MOUNT_ATTR_NOATIME), ("rstrictatime", L.MOUNT_ATTR_STRICTATIME),
    ("rrelatime", L.MOUNT_ATTR_RELATIME), ("ratime", L.MOUNT_ATTR_RELATIME),
])
def test_recursive_atime_replaces_the_whole_field(opt, mode):
    o = parse_mount_options([opt])
    assert o.rec_attr_clr == L.MOUNT_ATTR__ATIME  # kernel: all three bits or none
    assert o.rec_attr_set == mode


def test_recursive_atime_last_wins():
    o = parse_mount_options(["rnoatime", "rstrictatime"])
    assert o.rec_attr_set == L.MOUNT_ATTR_STRICTATIME


def test_recursive_set_then_clear():
    o = parse_mount_options(["rro", "rrw"])
    assert o.rec_attr_set == 0 and o.rec_attr_clr == L.MOUNT_ATTR_RDONLY


def test_data_keeps_unknown_options_in_order():
    o = parse_mount_options(["nosuid", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])
    assert o.flags == L.MS_NOSUID
    assert o.data == "newinstance,ptmxmode=0666,mode=0620,gid=5"


def test_docker_tmpfs():
    o = parse_mount_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert o.flags == L.MS_NOSUID | L.MS_STRICTATIME and o.data == "mode=755,size=65536k"


def test_tmpcopyup_and_idmap_are_extensions():
    o = parse_mount_options(["tmpcopyup", "rw"])
    assert o.tmpcopyup and o.data == ""
    o = parse_mount_options(["idmap"])
    assert o.idmap and not o.recursive_idmap and o.data == ""
    o = parse_mount_options(["ridmap"])
    assert o.idmap and o.recursive_idmap


def test_empty_option_ignored():
    assert parse_mount_options(["", "ro"]).data == ""


def test_podman_rich_fixture_options():
    o = parse_mount_options(["bind", "rprivate", "ro", "nosuid", "noexec", "nodev"])
    assert o.bind and not o.recursive
    assert o.remount_flags == L.MS_RDONLY | L.MS_NOSUID | L.MS_NOEXEC | L.MS_NODEV
    assert o.propagation == [L.MS_PRIVATE | L.MS_REC]


# ---- devices: pure parts

def test_config_device_overrides_default():
    mine = Device("/dev/null", "c", 1, 3, 0o600, 0, 0)
    devs = devices_to_create([mine, Device("/dev/fuse", "c", 10, 229)])
    paths = [d.path for d in devs]
    assert paths.count("/dev/null") == 1
    assert devs[paths.index("/dev/null")].file_mode == 0o600
    assert "/dev/fuse" in paths and len(devs) == len(DEFAULT_DEVICES) + 1


def test_defaults():
    assert {(d.path, d.major, d.minor) for d in DEFAULT_DEVICES} == {
        ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)}
    assert all(d.file_mode == 0o666 and d.type == "c" for d in DEFAULT_DEVICES)


def test_dev_bind_detection():
    assert dev_is_host_bind([Mount("/dev", "bind", "/dev", ["rbind"])])
    assert dev_is_host_bind([Mount("/dev", "", "/dev", ["bind"])])
    assert not dev_is_host_bind([Mount("/dev", "tmpfs", "tmpfs", ["mode=755"])])
    assert not dev_is_host_bind([Mount("/dev/shm", "bind", "/x", ["bind"])])
