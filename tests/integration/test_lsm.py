"""LSM labels: a requested AppArmor profile or SELinux label on a host without that LSM is a clear
error naming the field (as runc), never a container silently running unconfined.  Where the host
has the LSM, the label must show in /proc/self/attr/current inside.
"""
from __future__ import annotations

import pytest

from helpers import make_bundle, run_ocirun
from ocirun import lsm


@pytest.mark.skipif(lsm.apparmor_enabled(), reason="this host has AppArmor: the refusal path does not apply")
def test_apparmor_profile_without_apparmor_is_refused(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process={"apparmorProfile": "docker-default"})
    r = run_ocirun("run", "--bundle", str(bundle), "a1", root=ocirun_root)
    assert r.returncode == 1
    assert r.stderr.startswith("process.apparmorProfile: ") and "AppArmor is not enabled" in r.stderr
    assert not (ocirun_root / "a1").exists()


@pytest.mark.skipif(lsm.selinux_enabled(), reason="this host has SELinux: the refusal path does not apply")
def test_selinux_label_without_selinux_is_refused(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process={"selinuxLabel": "system_u:system_r:container_t:s0"})
    r = run_ocirun("run", "--bundle", str(bundle), "s1", root=ocirun_root)
    assert r.returncode == 1
    assert r.stderr.startswith("process.selinuxLabel: ") and "SELinux is not enabled" in r.stderr


@pytest.mark.skipif(lsm.selinux_enabled(), reason="this host has SELinux")
def test_mount_label_without_selinux_is_ignored(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], linux={"mountLabel": "system_u:object_r:container_file_t:s0"})
    r = run_ocirun("run", "--bundle", str(bundle), "m1", root=ocirun_root)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not lsm.apparmor_enabled(), reason="this host has no AppArmor (kernel without the LSM)")
def test_apparmor_profile_is_applied(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["cat", "/proc/self/attr/current"], process={"apparmorProfile": "unconfined"})
    r = run_ocirun("run", "--bundle", str(bundle), "a2", root=ocirun_root)
    assert r.returncode == 0 and "unconfined" in r.stdout, r.stderr
