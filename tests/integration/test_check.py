"""`ocirun check` on this host: each line against what the host really has, found here by other
means (statfs, the kernel's own tools: unshare, criu), as root and as `nobody`; the JSON and the
table say the same; nothing is left behind; a host that cannot run containers exits 1.

This development host: hybrid cgroups, no systemd as PID 1, no AppArmor or SELinux, and a kernel
on which `criu check` fails (vdso); the pure-v2 and systemd guests give other answers
(tests/v2/test_check_v2.py, tests/systemd/test_check_systemd.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import helpers
from check_report import check, parse_table

STATUSES = {"ok", "limited", "missing"}
EVERY_CHECK = ["cgroups", "cgroup-controllers", "systemd", "dbus", "namespaces", "userns", "uidmap", "subids",
               "timens", "seccomp", "seccomp-notify", "lsm", "idmapped-mounts", "clone3", "openat2",
               "capabilities", "criu", "podman", "containerd", "dockerd"]


@pytest.fixture(scope="module")
def as_root():
    return check()


def fs_type(path: str) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout.strip()


def succeeds(*argv: str) -> bool:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == 0


def test_every_check_once_in_both_formats_and_they_agree(as_root):
    table, doc = as_root
    assert list(table) == EVERY_CHECK
    assert [c["name"] for c in doc["checks"]] == EVERY_CHECK
    for c in doc["checks"]:
        assert c["status"] in STATUSES, c
        assert table[c["name"]] == {"status": c["status"], "detail": c["detail"], "fix": c["fix"]}
        assert c["status"] == "ok" or c["detail"], c  # every shortfall says why
    assert doc["rootless"] is False and doc["uid"] == 0
    assert doc["canRunContainers"] is True and doc["blocking"] == []


def test_the_cgroup_layout_is_what_statfs_says(as_root):
    table, _doc = as_root
    top = fs_type("/sys/fs/cgroup")
    if top == "cgroup2fs":
        assert table["cgroups"]["status"] == "ok"
    elif os.path.isdir("/sys/fs/cgroup/unified") and fs_type("/sys/fs/cgroup/unified") == "cgroup2fs":
        assert table["cgroups"]["status"] == "limited"
        assert table["cgroups"]["detail"].startswith("hybrid:")
        assert "systemd.unified_cgroup_hierarchy=1" in table["cgroups"]["fix"]
    else:
        assert table["cgroups"]["detail"].startswith("legacy:")


def test_the_controllers_are_those_mounted(as_root):
    table, _doc = as_root
    if fs_type("/sys/fs/cgroup") == "cgroup2fs":
        pytest.skip("pure cgroup v2: tests/v2/test_check_v2.py covers it")
    mounted = {opt for line in Path("/proc/self/mountinfo").read_text().splitlines()
               if " - cgroup " in line for opt in line.rsplit(" ", 1)[1].split(",")}
    detail = table["cgroup-controllers"]["detail"]
    for ctrl in ("memory", "pids", "cpu", "cpuset", "devices", "freezer", "blkio"):
        assert (f" {ctrl} " in f" {detail.split(';')[0]} ".replace("(", " ")) == (ctrl in mounted), (ctrl, detail)
    if "hugetlb" not in mounted:  # this hybrid host: hugetlb lives in cgroup2 only
        assert table["cgroup-controllers"]["status"] == "limited"
        assert "hugetlb: in cgroup2 only" in detail


def test_systemd_and_its_bus(as_root):
    table, _doc = as_root
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd is PID 1 here: tests/systemd/test_check_systemd.py covers it")
    pid1 = Path("/proc/1/comm").read_text().strip()
    assert table["systemd"]["status"] == "missing"
    assert f"systemd is not PID 1 (PID 1 is {pid1}; no /run/systemd/system)" in table["systemd"]["detail"]
    assert "--systemd-cgroup" in table["systemd"]["fix"]
    assert table["dbus"]["status"] == "missing"


def test_kernel_features_as_the_kernels_own_tools_find_them(as_root):
    table, _doc = as_root
    assert table["openat2"]["status"] == "ok"  # every path inside a rootfs depends on it
    expect = {
        "namespaces": succeeds("unshare", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--cgroup", "true"),
        "userns": succeeds("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "--user", "true"),
        "timens": succeeds("unshare", "--time", "true"),
        "seccomp": "Seccomp:" in Path("/proc/self/status").read_text(),
    }
    for name, works in expect.items():
        assert (table[name]["status"] == "ok") == works, (name, table[name])
    assert table["seccomp"]["detail"].startswith("libseccomp ")
    assert table["seccomp-notify"]["status"] == "ok"


def test_the_bounding_set(as_root):
    table, _doc = as_root
    bounding = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("CapBnd:")).split()[1], 16)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    full = bounding & ((1 << (last + 1)) - 1) == (1 << (last + 1)) - 1
    assert (table["capabilities"]["status"] == "ok") == full
    if not bounding >> 24 & 1:  # this host: CAP_SYS_RESOURCE (24) is not in the bounding set
        assert "CAP_SYS_RESOURCE" in table["capabilities"]["detail"]


def test_lsm_line(as_root):
    table, _doc = as_root
    apparmor = Path("/sys/module/apparmor/parameters/enabled")
    if os.path.exists("/sys/fs/selinux/enforce") or (apparmor.exists() and apparmor.read_text().strip() == "Y"):
        pytest.skip("an LSM is enabled here: the guest tests cover that case")
    assert table["lsm"]["status"] == "limited"
    assert "neither AppArmor nor SELinux" in table["lsm"]["detail"]


def test_criu_line_carries_criu_own_reason(as_root):
    table, _doc = as_root
    criu = shutil.which("criu") or shutil.which("criu", path="/usr/sbin:/sbin")
    if criu is None:
        assert table["criu"]["status"] == "missing" and table["criu"]["fix"] == "apt-get install criu"
        assert table["criu"]["detail"].startswith("criu: not found")
        return
    r = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        assert table["criu"]["status"] in ("ok", "limited")
        return
    assert table["criu"]["status"] == "missing"
    errors = [line.split("):", 1)[1].strip() for line in (r.stdout + r.stderr).splitlines()
              if line.startswith("Error (") and "exited, status" not in line]
    assert table["criu"]["detail"] == f"{criu} check fails: {errors[0]}"  # on this kernel: the vdso line


def test_criu_is_the_one_the_global_flag_names():
    r = helpers.run_ocirun("--criu", "/nonexistent/criu", "check", "--format", "json", timeout=60)
    assert r.returncode == 0, r.stderr
    criu = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "criu")
    assert criu["status"] == "missing" and criu["detail"].startswith("--criu /nonexistent/criu: not found")


def test_idmapped_mounts_are_tried_for_real_and_leave_nothing(as_root):
    table, _doc = as_root
    assert table["idmapped-mounts"]["status"] == "ok", table["idmapped-mounts"]  # this host: ext4 root, kernel 6.x
    assert table["idmapped-mounts"]["detail"].startswith(f"tried on / ({fs_type_of_root()}), ")
    assert "(tmpfs)" in table["idmapped-mounts"]["detail"]  # and on a tmpfs, to tell a filesystem's no from the kernel's


def fs_type_of_root() -> str:
    return subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "/"], capture_output=True, text=True).stdout.strip()


def test_it_is_quick_and_leaves_nothing_behind():
    before = Path("/proc/self/mountinfo").read_text()
    cgroups_before = {d for d in os.listdir("/sys/fs/cgroup/memory")} if os.path.isdir("/sys/fs/cgroup/memory") else set()
    start = time.monotonic()
    r = helpers.run_ocirun("check", timeout=60)
    took = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert took < 5, f"ocirun check took {took:.1f} s"  # ~0.3 s here; a probe waiting on a deadline would show
    assert Path("/proc/self/mountinfo").read_text() == before
    if cgroups_before:
        assert {d for d in os.listdir("/sys/fs/cgroup/memory")} == cgroups_before
    assert not any("ocirun-check" in line for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_an_engine_configured_for_ocirun_is_recognised(tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    runtime = helpers.ocirun_command()[0]
    conf = tmp_path / "containers.conf"
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    conf.write_text(f'[engine]\nruntime = "ocirun"\n[engine.runtimes]\nocirun = ["{runtime}"]\n')
    doc = json.loads(helpers.run_ocirun("check", "-f", "json", env=env).stdout)
    podman = next(c for c in doc["checks"] if c["name"] == "podman")
    assert podman["status"] == "ok", podman
    assert f"ocirun = {runtime}, the default runtime (in {conf})" in podman["detail"]

    conf.write_text('[engine.runtimes]\nocirun = ["/nonexistent/ocirun"]\n')
    doc = json.loads(helpers.run_ocirun("check", "-f", "json", env=env).stdout)
    podman = next(c for c in doc["checks"] if c["name"] == "podman")
    assert podman["status"] == "limited" and "/nonexistent/ocirun is not an executable file" in podman["detail"]

    conf.write_text("[engine\n")  # broken TOML: a finding, not a traceback
    doc = json.loads(helpers.run_ocirun("check", "-f", "json", env=env).stdout)
    podman = next(c for c in doc["checks"] if c["name"] == "podman")
    assert podman["status"] == "limited" and "cannot read its configuration" in podman["detail"]

    conf.write_text("[engine]\n")
    doc = json.loads(helpers.run_ocirun("check", "-f", "json", env=env).stdout)
    podman = next(c for c in doc["checks"] if c["name"] == "podman")
    assert podman["status"] == "limited" and podman["detail"].endswith("its configuration does not name ocirun")
    assert "[engine.runtimes] ocirun" in podman["fix"]


# A filter that makes the kernel say ENOSYS for openat2 and clone3, as an old kernel (or a
# container engine's seccomp profile around ocirun) would: then no container can run.
_WITHOUT_SYSCALLS = """
import errno, os, sys, pyseccomp
f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
for name in ("openat2", "clone3"):
    f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), name)
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_a_host_without_openat2_cannot_run_containers_and_says_so():
    argv = [sys.executable, "-c", _WITHOUT_SYSCALLS, *helpers.ocirun_command(), "check"]
    env = dict(os.environ, PYTHONPATH=str(helpers.REPO))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    table, verdict = parse_table(r.stdout)
    assert table["openat2"]["status"] == "missing"
    assert table["openat2"]["detail"].startswith("openat2: function not implemented")
    assert table["clone3"]["status"] == "missing"  # not essential: the slower cgroup.procs write remains
    assert verdict == "ocirun cannot run containers here as root: openat2 missing"
    r = subprocess.run(argv + ["--format", "json"], capture_output=True, text=True, timeout=60, env=env)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["canRunContainers"] is False and doc["blocking"] == ["openat2"]


# ---------------------------------------------------------------- as an ordinary user

NOBODY = 65534


@pytest.fixture
def nobody():
    problem = helpers.any_user_launcher_problem()
    if shutil.which("setpriv") is None or problem:
        pytest.skip(f"needs setpriv and a system python3 for nobody: {problem or 'setpriv is missing'}")
    top = Path(tempfile.mkdtemp(prefix="ocirun-test-check-", dir="/tmp"))
    os.chmod(top, 0o755)
    xdg = top / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, NOBODY, NOBODY)
    launcher = helpers.any_user_launcher(top / "ocirun")

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i",
                f"HOME={top}", f"XDG_RUNTIME_DIR={xdg}", "PATH=/usr/bin:/bin", str(launcher), *args]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    yield run
    shutil.rmtree(top, ignore_errors=True)


def test_as_nobody_it_reports_what_a_rootless_user_can_do(nobody):
    r = nobody("check")
    assert r.returncode == 0, r.stdout + r.stderr
    table, verdict = parse_table(r.stdout)
    doc = json.loads(nobody("check", "--format", "json").stdout)
    assert doc["rootless"] is True and doc["uid"] == NOBODY
    assert {c["name"]: {"status": c["status"], "detail": c["detail"], "fix": c["fix"]} for c in doc["checks"]} == table
    assert verdict.startswith("ocirun can run containers here as a rootless caller")
    assert table["userns"] == {"status": "ok", "detail": "you can create user namespaces (rootless containers work)",
                               "fix": None}
    assert table["idmapped-mounts"]["status"] == "missing"
    assert "need a root runtime" in table["idmapped-mounts"]["detail"]
    # nobody has no subordinate ids (and no delegated cgroup) on this host
    assert table["subids"]["status"] == "limited"
    assert "usermod --add-subuids" in table["subids"]["fix"]
    if not os.path.isdir("/run/systemd/system"):
        assert table["cgroup-controllers"]["status"] == "missing"
        assert "no cgroup is delegated to you" in table["cgroup-controllers"]["detail"]
    if shutil.which("criu", path="/usr/sbin:/sbin"):
        assert table["criu"]["status"] != "ok"  # CRIU needs root
        assert "needs root" in table["criu"]["fix"]
