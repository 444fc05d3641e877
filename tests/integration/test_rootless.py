"""Rootless: ocirun run by an ordinary user (here `nobody`), beside runc run the same way.

The test process is root only to set the stage: a world-readable bundle and a runtime dir
owned by the user.  Every runtime command runs as that user through `setpriv`, with a clean
environment, as a shell of theirs would run it.  The user's interpreter must be a system one
(the suite's venv sits on pyenv under /root, which other users cannot enter): the launcher
below runs /usr/bin/python3 on this checkout and the venv's site-packages.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import helpers

USER = 65534  # nobody: exists everywhere, has no subordinate ids


def _why_not() -> str | None:
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing"
    return helpers.any_user_launcher_problem()


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


class User:
    """A scratch home for `nobody`: bundle, XDG_RUNTIME_DIR, and the ocirun launcher."""

    def __init__(self, uid: int = USER) -> None:
        self.uid = uid
        self.top = Path(tempfile.mkdtemp(prefix="ocirun-test-rootless-", dir="/tmp"))
        os.chmod(self.top, 0o755)
        self.xdg = self.top / "xdg"
        self.xdg.mkdir(mode=0o700)
        os.chown(self.xdg, uid, uid)
        self.ocirun = helpers.any_user_launcher(self.top / "ocirun")

    def bundle(self, name: str, args: list[str], cfg: dict | None = None) -> Path:
        """A bundle from `ocirun spec --rootless` as the user writes it (their uid mapped to 0)."""
        d = self.top / name
        d.mkdir(mode=0o755)
        os.chown(d, self.uid, self.uid)
        r = self.run(self.ocirun, "spec", "--rootless", "-b", d)
        assert r.returncode == 0, r.stderr
        doc = json.loads((d / "config.json").read_text())
        doc["root"] = {"path": str(helpers.shared_rootfs()), "readonly": True}
        doc["process"].update(terminal=False, args=args)
        doc["linux"]["uidMappings"][0]["hostID"] = self.uid  # `spec` mapped whoever ran it
        doc["linux"]["gidMappings"][0]["hostID"] = self.uid
        helpers.deep_update(doc, cfg or {})
        (d / "config.json").write_text(json.dumps(doc))
        return d

    def run(self, binary, *args, timeout: float = 30) -> subprocess.CompletedProcess:
        argv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "env", "-i",
                f"HOME={self.top}", f"XDG_RUNTIME_DIR={self.xdg}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                str(binary), *map(str, args)]
        # files, not pipes: a detached container keeps the runtime's stdout open
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(argv, p.returncode, out.read().decode(), err.read().decode())

    def close(self) -> None:
        for binary, name in ((self.ocirun, "ocirun"), (helpers.RUNC, "runc")):
            root = self.xdg / name
            if binary and root.is_dir():
                for cid in os.listdir(root):
                    self.run(binary, "delete", "--force", cid)
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def user():
    u = User()
    yield u
    u.close()


def runtimes(u: User) -> dict:
    out = {"ocirun": u.ocirun}
    if helpers.RUNC:
        out["runc"] = helpers.RUNC
    return out


def test_spec_rootless_is_runcs_shape():
    with tempfile.TemporaryDirectory() as ours, tempfile.TemporaryDirectory() as theirs:
        helpers.ok("spec", "--rootless", "-b", ours)
        if helpers.RUNC is None:
            pytest.skip("runc is not installed")
        subprocess.run([helpers.RUNC, "spec", "--rootless", "-b", theirs], check=True)
        a, b = (json.loads((Path(d) / "config.json").read_text()) for d in (ours, theirs))
    for doc in (a, b):
        assert doc["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        assert doc["linux"]["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        assert "resources" not in doc["linux"]
        types = [ns["type"] for ns in doc["linux"]["namespaces"]]
        assert "user" in types and "network" not in types
    mounts = lambda doc: {m["destination"]: m for m in doc["mounts"]}  # noqa: E731
    assert mounts(a)["/sys"] == mounts(b)["/sys"]
    assert mounts(a)["/dev/pts"] == mounts(b)["/dev/pts"]
    assert not any(o.startswith(("uid=", "gid=")) for m in a["mounts"] for o in m.get("options", []))


def test_an_ordinary_user_runs_a_container_as_runc_does(user):
    bundle = user.bundle("b1", ["sh", "-c", "id -u; cat /proc/self/uid_map; ls /sys/kernel >/dev/null && echo sys"])
    results = {name: user.run(binary, "run", "-b", bundle, f"rl-{name}") for name, binary in runtimes(user).items()}
    for name, r in results.items():
        assert r.returncode == 0, (name, r.stderr)
        lines = r.stdout.split()
        assert lines[0] == "0" and lines[1:4] == ["0", str(USER), "1"] and lines[-1] == "sys", (name, r.stdout)
    assert "rootless" in results["ocirun"].stderr and "not writable" in results["ocirun"].stderr
    # the state went into the user's runtime dir, private to them, and is gone after run
    root = user.xdg / "ocirun"
    st = root.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (USER, 0o700)
    assert os.listdir(root) == []


def test_lifecycle_and_exec_as_an_ordinary_user(user):
    bundle = user.bundle("b2", ["sleep", "1000"])
    run = user.run
    ocirun = user.ocirun
    assert run(ocirun, "run", "-d", "-b", bundle, "life").returncode == 0
    st = json.loads(run(ocirun, "state", "life").stdout)
    assert st["status"] == "running"
    assert os.stat(f"/proc/{st['pid']}").st_uid == USER  # root inside is `nobody` outside
    r = run(ocirun, "exec", "life", "id", "-u")
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
    assert run(ocirun, "kill", "life", "KILL").returncode == 0
    helpers.wait_until(lambda: json.loads(run(ocirun, "state", "life").stdout)["status"] == "stopped", 10,
                       "the container to stop")
    r = run(ocirun, "delete", "life")
    assert r.returncode == 0, r.stderr
    assert os.listdir(user.xdg / "ocirun") == []


def test_a_limit_that_cannot_be_applied_is_refused(user):
    bundle = user.bundle("b3", ["true"], {"linux": {"resources": {"memory": {"limit": 64 << 20}}}})
    r = user.run(user.ocirun, "run", "-b", bundle, "lim")
    msg = helpers.one_line_error(r, "linux.resources.memory.limit", "not writable")
    assert "rootless" in msg
    assert not (user.xdg / "ocirun").exists() or os.listdir(user.xdg / "ocirun") == []


def test_rootless_false_tries_the_cgroup_and_says_what_the_kernel_said(user):
    bundle = user.bundle("b4", ["true"])
    r = user.run(user.ocirun, "--rootless=false", "run", "-b", bundle, "nofalse")
    helpers.one_line_error(r, "cgroup", "ermission denied")
    assert os.listdir(user.xdg / "ocirun") == []


def test_ranges_beyond_ones_own_id_need_newuidmap_and_subuid(user):
    bundle = user.bundle("b5", ["true"], {"linux": {"uidMappings": [{"containerID": 0, "hostID": USER, "size": 1},
                                                                   {"containerID": 1, "hostID": 200000, "size": 1000}]}})
    r = user.run(user.ocirun, "run", "-b", bundle, "ranges")
    msg = helpers.one_line_error(r, "linux.uidMappings")
    assert "newuidmap" in msg
    assert os.listdir(user.xdg / "ocirun") == []


def test_a_user_cannot_read_or_touch_roots_containers(user, ocirun_root, tmp_path):
    """root's state dir is 0700: another user gets one line (the kernel's "permission denied"),
    and the container is untouched."""
    bundle = helpers.make_bundle(tmp_path, ["sleep", "1000"])
    helpers.ok("run", "-d", "-b", bundle, "roots", root=ocirun_root)
    os.chmod(ocirun_root, 0o755)  # the test's own root dir: only ocirun's modes may protect the state
    try:
        for args in (("state", "roots"), ("kill", "roots", "KILL"), ("delete", "--force", "roots"),
                     ("exec", "roots", "true"), ("pause", "roots")):
            r = user.run(user.ocirun, "--root", ocirun_root, *args)
            assert r.returncode != 0 and "ermission denied" in r.stderr, (args, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert json.loads(helpers.ok("state", "roots", root=ocirun_root).stdout)["status"] == "running"
    finally:
        helpers.delete(ocirun_root, "roots", check=False)


def test_one_users_state_is_private_to_them(user):
    bundle = user.bundle("b6", ["sleep", "1000"])
    assert user.run(user.ocirun, "run", "-d", "-b", bundle, "mine").returncode == 0
    for path, dirs, files in os.walk(user.xdg / "ocirun"):
        for name in dirs + files:
            st = os.lstat(os.path.join(path, name))
            if not os.path.islink(os.path.join(path, name)):
                assert st.st_uid == USER and st.st_mode & 0o077 == 0, (name, oct(st.st_mode))


def test_one_user_cannot_touch_anothers_containers(user):
    """Two ordinary users (nobody and uid 65533): B cannot read, signal, exec into or delete A's
    container, even naming A's state directory."""
    other = User(65533)
    try:
        bundle = user.bundle("b7", ["sleep", "1000"])
        assert user.run(user.ocirun, "run", "-d", "-b", bundle, "a1").returncode == 0
        os.chmod(user.xdg, 0o755)  # A's runtime dir open: only ocirun's own modes protect the state
        for args in (("state", "a1"), ("kill", "a1", "KILL"), ("exec", "a1", "true"), ("delete", "--force", "a1")):
            r = other.run(other.ocirun, "--root", user.xdg / "ocirun", *args)
            assert r.returncode != 0 and "ermission denied" in r.stderr, (args, r.stderr)
        assert json.loads(user.run(user.ocirun, "state", "a1").stdout)["status"] == "running"
    finally:
        other.close()


def test_a_root_owned_host_file_stays_read_only_to_the_containers_root(user, tmp_path):
    """A rootless container's root is the user outside: a root-owned 0644 file bound in
    read-write is still not theirs to write (nor to chmod or chown)."""
    target = user.top / "roots-file"
    target.write_text("root's\n")
    os.chmod(target, 0o644)
    bundle = user.bundle("b8", ["sh", "-c", "echo x >> /etc/hostname; chmod 666 /etc/hostname; "
                                            "chown 0:0 /etc/hostname; echo done"])
    doc = json.loads((bundle / "config.json").read_text())
    doc["mounts"].append({"destination": "/etc/hostname", "type": "bind", "source": str(target),
                          "options": ["bind", "rw"]})
    (bundle / "config.json").write_text(json.dumps(doc))
    r = user.run(user.ocirun, "run", "-b", bundle, "rw")
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert "ermission denied" in r.stdout + r.stderr or "not permitted" in r.stdout + r.stderr
    st = os.stat(target)
    assert target.read_text() == "root's\n" and (st.st_uid, st.st_mode & 0o777) == (0, 0o644)


def test_groups_a_one_gid_mapping_cannot_have_are_refused_as_runc_does(user):
    """With only the user's own gid mapped, setgroups is denied: runc refuses additionalGids
    ("cannot set any additional groups in a rootless container") rather than run without them."""
    bundle = user.bundle("g1", ["id", "-G"], {"process": {"user": {"additionalGids": [5]}}})
    r = user.run(user.ocirun, "run", "-b", bundle, "groups")
    helpers.one_line_error(r, "process.user.additionalGids", "cannot set any additional groups")
    assert not (user.xdg / "ocirun").exists() or os.listdir(user.xdg / "ocirun") == []  # refused up front
    if helpers.RUNC:
        assert user.run(helpers.RUNC, "run", "-b", bundle, "groups-runc").returncode != 0
    bundle = user.bundle("g2", ["sleep", "1000"])
    assert user.run(user.ocirun, "run", "-d", "-b", bundle, "groups2").returncode == 0
    r = user.run(user.ocirun, "exec", "--additional-gids", "5", "groups2", "true")
    helpers.one_line_error(r, "process.user.additionalGids", "cannot set any additional groups", status=255,
                           prefix="exec failed: ")


def test_kill_all_without_a_cgroup_reaches_the_whole_pid_namespace(user):
    """No delegated cgroup to list the processes by: `kill --all` and `ps` use the container's
    pid namespace (it used to signal the init alone and say it had signalled all)."""
    bundle = user.bundle("k1", ["sh", "-c", "trap '' TERM; sleep 1000"])
    run, ocirun = user.run, user.ocirun
    assert run(ocirun, "run", "-d", "-b", bundle, "killall").returncode == 0
    assert run(ocirun, "exec", "-d", "killall", "sleep", "777").returncode == 0

    def exec_sleep() -> list[int]:
        pids = json.loads(run(ocirun, "ps", "--format", "json", "killall").stdout)
        return [p for p in pids if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\x00777")]
    pid = helpers.wait_until(exec_sleep, 10, "ps to list the exec'd process")[0]
    r = run(ocirun, "kill", "--all", "killall", "TERM")
    assert r.returncode == 0, r.stderr
    helpers.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "the exec'd sleep to end")
    assert json.loads(run(ocirun, "state", "killall").stdout)["status"] == "running"  # its init ignores TERM


def test_a_rootless_config_without_a_user_namespace_says_so(user):
    bundle = user.bundle("n1", ["true"])
    doc = json.loads((bundle / "config.json").read_text())
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != "user"]
    del doc["linux"]["uidMappings"], doc["linux"]["gidMappings"]
    (bundle / "config.json").write_text(json.dumps(doc))
    r = user.run(user.ocirun, "run", "-b", bundle, "nouserns")
    helpers.one_line_error(r, "linux.namespaces", "needs a user namespace")
    assert not (user.xdg / "ocirun").exists() or os.listdir(user.xdg / "ocirun") == []


def test_an_unreadable_rootfs_and_an_unmapped_uid_are_named(user):
    private = user.top / "private"
    (private / "rootfs").mkdir(parents=True)
    os.chmod(private, 0o700)  # root's: the user cannot look inside
    bundle = user.bundle("p1", ["true"], {"root": {"path": str(private / "rootfs")}})
    r = user.run(user.ocirun, "run", "-b", bundle, "unreadable")
    helpers.one_line_error(r, "root.path", "permission denied")
    bundle = user.bundle("p2", ["true"], {"process": {"user": {"uid": 0, "gid": 1000}}})
    r = user.run(user.ocirun, "run", "-b", bundle, "unmapped")
    helpers.one_line_error(r, "process.user.gid", "not mapped in the container's user namespace")
    # a mount point the container's root may not make in root's rootfs: the mkdir is named
    bundle = user.bundle("p3", ["true"])
    doc = json.loads((bundle / "config.json").read_text())
    doc["mounts"].append({"destination": "/no-such-dir/sub", "type": "tmpfs", "source": "tmpfs"})
    (bundle / "config.json").write_text(json.dumps(doc))
    r = user.run(user.ocirun, "run", "-b", bundle, "nomkdir")
    helpers.one_line_error(r, "mounts[", "mkdir /no-such-dir: permission denied")
    assert os.listdir(user.xdg / "ocirun") == []


def test_list_names_each_containers_owner_and_the_ones_it_cannot_read(user, ocirun_root, tmp_path):
    """runc's list: OWNER is who owns the state directory; another user's container it may
    not read is left out with a line on stderr."""
    bundle = user.bundle("l1", ["sleep", "1000"])
    assert user.run(user.ocirun, "run", "-d", "-b", bundle, "listed").returncode == 0
    r = user.run(user.ocirun, "list", "--format", "json")
    assert [(c["id"], c["owner"]) for c in json.loads(r.stdout)] == [("listed", "nobody")], r.stdout
    r = helpers.ok("--root", user.xdg / "ocirun", "list")
    assert r.stdout.splitlines()[1].split()[-1] == "nobody", r.stdout
    helpers.ok("run", "-d", "-b", helpers.make_bundle(tmp_path, ["sleep", "1000"]), "roots-listed", root=ocirun_root)
    os.chmod(ocirun_root, 0o755)  # the test's own root: only the state dir's 0700 keeps the user out
    try:
        r = user.run(user.ocirun, "--root", ocirun_root, "list", "--format", "json")
        assert r.returncode == 0 and json.loads(r.stdout) == [], (r.stdout, r.stderr)
        assert "roots-listed" in r.stderr and "ermission denied" in r.stderr, r.stderr
        assert json.loads(helpers.ok("list", "--format", "json", root=ocirun_root).stdout)[0]["owner"] == "root"
    finally:
        helpers.delete(ocirun_root, "roots-listed", check=False)


@pytest.mark.parametrize("value", ["AUTO", "Auto", ""])
def test_rootless_auto_in_any_case_or_empty_is_auto(user, value):
    bundle = user.bundle("a1", ["true"])
    r = user.run(user.ocirun, f"--rootless={value}", "run", "-b", bundle, "auto")
    assert r.returncode == 0, r.stderr
