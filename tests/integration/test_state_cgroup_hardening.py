"""Issue 13 hardening of the state directory and of the container's cgroup, through the real CLI,
side by side with runc where runc behaves correctly:

- the state root, container directories and files are private (0700 / 0600, fifo 0622 in a
  0700 directory) whatever the caller's umask; another user can neither read state.json nor
  open exec.fifo; a writer on the fifo that is not our init cannot block `start` or speak for it;
- a cgroupsPath naming a frozen cgroup (v1 freezer or cgroup2 cgroup.freeze) is refused at once,
  leaving nothing behind; one through a control file is refused before anything is created, and
  `delete --force` removes a container whatever its state file says about cgroups;
- the ancestors of a nested cgroupsPath that create made are removed by delete (only those);
- a malformed state.json is reported, never a traceback: `list` goes on, `state` / `delete`
  refuse it, `delete --force` still kills and removes the container;
- a cgroup that already holds processes: a warning (runc's words), the container runs;
- `delete` of a created container without --force fails (runtime.md: MUST).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time

import pytest

import helpers
from helpers import alive, make_bundle, ok, run_ocirun, run_runc, wait_gone


SLEEPER = ["sleep", "1000"]
CG = "/sys/fs/cgroup"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


def unique_name() -> str:
    return f"{helpers.TEST_PREFIX}-{secrets.token_hex(5)}"


def v1_hierarchies() -> list[str]:
    """The mounted cgroup directories (v1 controllers and the cgroup2 tree) that take processes."""
    out = []
    for name in sorted(os.listdir(CG)):
        d = f"{CG}/{name}"
        if os.path.isdir(d) and not os.path.islink(d) and os.path.exists(f"{d}/cgroup.procs"):
            out.append(d)
    return out


def dirs_named(name: str) -> list[str]:
    return sorted(p for p in (f"{h}/{name}" for h in v1_hierarchies()) if os.path.exists(p))


@pytest.fixture
def cgname():
    """A cgroup name for the test; every directory carrying it is removed afterwards."""
    name = unique_name()
    yield name
    for h in v1_hierarchies():
        top = f"{h}/{name}"
        if os.path.isdir(top):
            tree = [d for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/"))]
            for d in tree:
                _thaw(d)  # a frozen task dies only once thawed
                for p in _procs(d):
                    _kill(p)
            # rmdir fails while a killed task is still listed (a zombie no longer is)
            helpers.wait_until(lambda tree=tree: not any(_procs(d) for d in tree), 10, f"the tasks in {top} to die")
            helpers.remove_cgroup_tree(top)


def _thaw(d: str) -> None:
    for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        try:
            with open(f"{d}/{name}", "w") as f:
                f.write(value)
        except OSError:
            pass


def _procs(d: str) -> list[int]:
    try:
        with open(f"{d}/cgroup.procs") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _freeze_v1(d: str, frozen: bool) -> None:
    with open(f"{d}/freezer.state", "w") as f:
        f.write("FROZEN" if frozen else "THAWED")


# ============================================================================ item 2: permissions

@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777])
def test_state_is_private_whatever_the_umask(tmp_path, umask):
    top = helpers.new_state_root()
    os.rmdir(top)  # let ocirun create it, and its parents (runc makes them 0700 too)
    root = top / "a" / "b"
    bundle = make_bundle(tmp_path, SLEEPER)
    try:
        with open(tmp_path / "err", "w+") as err:  # not a pipe: the container keeps it open
            rc = subprocess.run(["sh", "-c", f'umask {umask:03o}; exec "$@"', "sh", *helpers.ocirun_command(),
                                 "--root", str(root), "create", "-b", str(bundle), "p1"],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=30).returncode
        assert rc == 0, (tmp_path / "err").read_text()
        modes = {p: stat.S_IMODE(os.lstat(top / p).st_mode)
                 for p in ("", "a", "a/b", "a/b/p1", "a/b/p1/state.json", "a/b/p1/exec.fifo")}
        assert modes == {"": 0o700, "a": 0o700, "a/b": 0o700, "a/b/p1": 0o700, "a/b/p1/state.json": 0o600,
                         "a/b/p1/exec.fifo": 0o622}, {k: oct(v) for k, v in modes.items()}
        assert all(stat.S_IMODE(os.lstat(root / "p1" / n).st_mode) & 0o077 == 0
                   for n in os.listdir(root / "p1") if n != "exec.fifo")
        ok("start", "p1", root=root)
        ok("delete", "--force", "p1", root=root)
    finally:
        helpers.delete(root, "p1", check=False)
        subprocess.run(["rm", "-rf", str(top)])


def test_a_relative_root_with_missing_parents(tmp_path):
    """`--root rel/a/b` from a directory where `rel` is missing: the parents are made (0700);
    looking for the first existing one once never ended (dirname of a relative path ends at "")."""
    work = tmp_path / "work"
    work.mkdir()
    bundle = make_bundle(tmp_path, ["true"])
    r = run_ocirun("run", "-b", str(bundle), "rel1", root="rel/a/b", cwd=work, timeout=30)
    assert r.returncode == 0, r.stderr
    assert [stat.S_IMODE(os.stat(work / p).st_mode) for p in ("rel", "rel/a", "rel/a/b")] == [0o700] * 3
    assert os.listdir(work / "rel/a/b") == []


def test_old_0711_root_is_tightened(tmp_path, ocirun_root):
    os.chmod(ocirun_root, 0o711)  # what earlier versions made
    bundle = make_bundle(tmp_path, ["true"])
    ok("run", "-b", bundle, "t1", root=ocirun_root)
    assert stat.S_IMODE(os.stat(ocirun_root).st_mode) == 0o700


def test_another_user_cannot_read_state_or_open_the_fifo(tmp_path, ocirun_root, runc_root):
    bundle = make_bundle(tmp_path, SLEEPER)
    # ocirun's root as someone made it with mkdir (0755): its own 0700 container directory must
    # hold alone.  runc's container directory is 0711 (its fifo 0622), so runc relies on its
    # root being 0700, as runc makes it (and the fixture does).
    os.chmod(ocirun_root, 0o755)
    for run, root in ((run_ocirun, ocirun_root), (run_runc, runc_root)):
        ok("create", "-b", bundle, "u1", root=root, run=run)
    try:
        for root in (ocirun_root, runc_root):
            read = subprocess.run(NOBODY + ["cat", f"{root}/u1/state.json"], capture_output=True, text=True,
                                  timeout=10)
            assert read.returncode != 0 and "Permission denied" in read.stderr, (root, read)
            # A writer would block until `start` opens the fifo; a refused open fails at once.
            write = subprocess.run(NOBODY + ["sh", "-c", f"echo evil > {root}/u1/exec.fifo"],
                                   capture_output=True, text=True, timeout=10)
            assert write.returncode != 0 and "Permission denied" in write.stderr, (root, write)
        ok("start", "u1", root=ocirun_root)
        ok("start", "u1", root=runc_root, run=run_runc)
    finally:
        helpers.delete(ocirun_root, "u1", check=False)
        helpers.delete(runc_root, "u1", run=run_runc, check=False)


def test_delete_force_of_a_symlinked_entry_removes_only_the_link(tmp_path, ocirun_root, runc_root):
    """A container directory is never a symlink of ours: `delete --force` removes the link and
    nothing it points to (it once emptied the target directory; runc removes only the link)."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep").write_text("precious")
    (decoy / "state.json").write_text("{}")
    for run, root in ((run_ocirun, ocirun_root), (run_runc, runc_root)):
        os.symlink(decoy, os.path.join(root, "sl1"))
        r = run("delete", "--force", "sl1", root=root, timeout=30)
        assert r.returncode == 0, (run, r.stderr)
        assert not os.path.lexists(os.path.join(root, "sl1")), run
        assert sorted(os.listdir(decoy)) == ["keep", "state.json"], run
    assert (decoy / "keep").read_text() == "precious"


@pytest.mark.parametrize("kind", ["user", "userns"])
def test_non_root_init_still_opens_the_fifo(tmp_path, ocirun_root, kind):
    over = {"process": {"user": {"uid": 1000, "gid": 1000}}}
    if kind == "userns":
        over = {"linux": {"namespaces": helpers.default_config()["linux"]["namespaces"] + [{"type": "user"}],
                          "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                          "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
                "process": {"user": {"uid": 1000, "gid": 1000}}}
    bundle = make_bundle(tmp_path, ["sh", "-c", "id -u"], **over)
    r = ok("run", "-b", bundle, "n1", root=ocirun_root)
    assert r.stdout.strip() == "1000"


def test_foreign_fifo_writer_neither_blocks_start_nor_speaks_for_the_init(tmp_path, ocirun_root):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "w1", root=ocirun_root)
    # root (the only one who can reach it now) opens the fifo, says something and holds it open
    writer = subprocess.Popen([sys.executable, "-c",
                               "import os, sys, time\n"
                               f"fd = os.open({str(ocirun_root / 'w1' / 'exec.fifo')!r}, os.O_WRONLY)\n"
                               "os.write(fd, b'evil words')\n"
                               "time.sleep(60)\n"])  # holds the fifo open; killed below
    try:
        r = run_ocirun("start", "w1", root=ocirun_root, timeout=20)
        assert r.returncode == 0 and "evil" not in r.stderr, r.stderr
        st = json.loads(ok("state", "w1", root=ocirun_root).stdout)
        assert st["status"] == "running"
    finally:
        writer.kill()
        writer.wait()
        helpers.delete(ocirun_root, "w1", check=False)


# ============================================================================ item 4: frozen cgroups

@pytest.mark.parametrize("where", ["leaf", "parent"])
def test_frozen_v1_cgroup_is_refused_like_runc(tmp_path, ocirun_root, runc_root, cgname, where):
    if not os.path.exists(f"{CG}/freezer/cgroup.procs"):
        pytest.skip("no v1 freezer hierarchy")
    frozen = f"{CG}/freezer/{cgname}"
    os.mkdir(frozen)
    _freeze_v1(frozen, True)
    path = f"/{cgname}" if where == "leaf" else f"/{cgname}/inner"
    bundle = make_bundle(tmp_path, SLEEPER, linux={"cgroupsPath": path})
    # runc refuses a frozen leaf; below a frozen parent it hangs (its init frozen): ocirun only
    runtimes = [(run_ocirun, ocirun_root)] + ([(run_runc, runc_root)] if where == "leaf" else [])
    for run, root in runtimes:
        r = run("run", "-d", "-b", bundle, "f1", root=root, timeout=30)
        assert r.returncode == 1 and "frozen" in r.stderr, (run, r.stderr)
        assert os.listdir(root) == []
        if run is run_ocirun:
            no_traceback(r)
            assert "linux.cgroupsPath" in r.stderr
            assert dirs_named(cgname) == [frozen]  # nothing made, the test's cgroup untouched
            assert not os.path.exists(f"{frozen}/inner")
            with open(f"{frozen}/freezer.state") as f:
                assert f.read().strip() == "FROZEN"
    _freeze_v1(frozen, False)


def test_frozen_cgroup2_is_refused(tmp_path, ocirun_root, cgname):
    unified = f"{CG}/unified" if os.path.exists(f"{CG}/unified/cgroup.freeze") or \
        os.path.isdir(f"{CG}/unified") else CG
    if not os.path.exists(f"{unified}/cgroup.controllers"):
        pytest.skip("no cgroup2 tree")
    d = f"{unified}/{cgname}"
    os.mkdir(d)
    with open(f"{d}/cgroup.freeze", "w") as f:
        f.write("1")
    bundle = make_bundle(tmp_path, SLEEPER, linux={"cgroupsPath": f"/{cgname}"})
    r = run_ocirun("run", "-d", "-b", bundle, "f2", root=ocirun_root, timeout=30)
    assert r.returncode == 1 and "frozen" in r.stderr and "linux.cgroupsPath" in r.stderr, r.stderr
    no_traceback(r)
    assert os.listdir(ocirun_root) == []
    assert dirs_named(cgname) == [d]
    with open(f"{d}/cgroup.freeze", "w") as f:
        f.write("0")


# ============================================================================ item 7: bad cgroup paths

def test_cgroups_path_through_a_control_file_is_refused_before_anything(tmp_path, ocirun_root, cgname):
    mem = f"{CG}/memory/{cgname}"
    os.mkdir(mem)  # so that <cgname>/memory.limit_in_bytes is a control file in that hierarchy
    for path in (f"/{cgname}/x/../memory.limit_in_bytes", f"/{cgname}/memory.limit_in_bytes/c"):
        bundle = make_bundle(tmp_path, SLEEPER, linux={"cgroupsPath": path})
        r = run_ocirun("run", "-d", "-b", bundle, "b1", root=ocirun_root)
        assert r.returncode == 1, r.stderr
        no_traceback(r)
        assert "linux.cgroupsPath" in r.stderr and "not a directory" in r.stderr, r.stderr
        assert os.listdir(ocirun_root) == []
        assert dirs_named(cgname) == [mem]
        assert os.path.isfile(f"{mem}/memory.limit_in_bytes")
        assert not any(os.path.isdir(f"{h}/{cgname}/memory.limit_in_bytes") for h in v1_hierarchies())
    r = run_ocirun("delete", "--force", "b1", root=ocirun_root)
    assert r.returncode == 0, r.stderr


def test_delete_force_succeeds_whatever_the_cgroup_section_says(tmp_path, ocirun_root, cgname):
    mem = f"{CG}/memory/{cgname}"
    os.mkdir(mem)
    bundle = make_bundle(tmp_path, ["true"])
    ok("create", "-b", bundle, "d1", root=ocirun_root)
    ok("start", "d1", root=ocirun_root)
    path = ocirun_root / "d1" / "state.json"
    st = json.loads(path.read_text())
    real = dict(st["cgroup"]["paths"])
    st["cgroup"]["paths"]["memory"] = f"{mem}/memory.limit_in_bytes"  # a control file, not a dir
    st["cgroup"]["created"] = [f"{mem}/memory.limit_in_bytes/x"]
    path.write_text(json.dumps(st))
    r = run_ocirun("delete", "--force", "d1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert not (ocirun_root / "d1").exists()
    assert os.path.isfile(f"{mem}/memory.limit_in_bytes")
    assert not any(os.path.exists(p) for k, p in real.items() if k != "memory")
    os.rmdir(real["memory"])  # the state file no longer named it: ours to remove


# ============================================================================ item 8: ancestors

def test_nested_cgroups_path_ancestors_we_made_are_removed(tmp_path, ocirun_root, cgname):
    bundle = make_bundle(tmp_path, SLEEPER, linux={"cgroupsPath": f"/{cgname}/b/c"})
    ok("run", "-d", "-b", bundle, "a1", root=ocirun_root)
    assert os.path.isdir(f"{CG}/pids/{cgname}/b/c")
    ok("delete", "--force", "a1", root=ocirun_root)
    assert dirs_named(cgname) == []


def test_pre_existing_ancestor_is_kept(tmp_path, ocirun_root, cgname):
    mine = f"{CG}/pids/{cgname}"
    os.mkdir(mine)
    bundle = make_bundle(tmp_path, SLEEPER, linux={"cgroupsPath": f"/{cgname}/b/c"})
    ok("run", "-d", "-b", bundle, "a2", root=ocirun_root)
    ok("delete", "--force", "a2", root=ocirun_root)
    assert dirs_named(cgname) == [mine]
    assert os.listdir(mine) and not os.path.exists(f"{mine}/b")


def test_shared_ancestor_does_not_stall_delete(tmp_path, ocirun_root, cgname):
    b1 = make_bundle(tmp_path, SLEEPER, name="b1", linux={"cgroupsPath": f"/{cgname}/p/c1"})
    b2 = make_bundle(tmp_path, SLEEPER, name="b2", linux={"cgroupsPath": f"/{cgname}/p/c2"})
    ok("run", "-d", "-b", b1, "s1", root=ocirun_root)
    ok("run", "-d", "-b", b2, "s2", root=ocirun_root)
    t0 = time.monotonic()
    ok("delete", "--force", "s1", root=ocirun_root)
    assert time.monotonic() - t0 < 3
    assert json.loads(ok("state", "s2", root=ocirun_root).stdout)["status"] == "running"
    assert os.path.isdir(f"{CG}/pids/{cgname}/p/c2") and not os.path.exists(f"{CG}/pids/{cgname}/p/c1")
    ok("delete", "--force", "s2", root=ocirun_root)


# ============================================================================ item 9: malformed state

def _drop(key):
    def f(st):
        del st[key]
        return json.dumps(st)
    return f


def _set(key, value):
    def f(st):
        st[key] = value
        return json.dumps(st)
    return f


BAD_STATES = {
    "empty-object": lambda st: "{}",
    "array": lambda st: "[]",
    "null": lambda st: "null",
    "string": lambda st: '"state"',
    "not-json": lambda st: "{",
    "string-pid": _set("pid", "123"),
    "bool-pid": _set("pid", True),
    "negative-pid": _set("pid", -1),
    "float-start-time": _set("start_time", 1.5),
    "missing-id": _drop("id"),
    "missing-bundle": _drop("bundle"),
    "other-id": _set("id", "someone-else"),
    "cgroup-number": _set("cgroup", 5),
    "cgroup-paths-list": lambda st: json.dumps(dict(st, cgroup=dict(st["cgroup"], paths=["x"]))),
    "annotations-list": _set("annotations", ["a"]),
    "hooks-string": _set("hooks", "x"),
}


@pytest.mark.parametrize("shape", sorted(BAD_STATES))
def test_malformed_state_file(tmp_path, ocirun_root, shape):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("run", "-d", "-b", bundle, "bad", root=ocirun_root)
    good = make_bundle(tmp_path, SLEEPER, name="good")
    ok("run", "-d", "-b", good, "good", root=ocirun_root)
    path = ocirun_root / "bad" / "state.json"
    st = json.loads(path.read_text())
    pid = st["pid"]
    cgroup = f"{CG}/pids{helpers.read_config(bundle)['linux']['cgroupsPath']}"
    assert os.path.isdir(cgroup)
    path.write_text(BAD_STATES[shape](st))

    r = ok("list", root=ocirun_root)
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["good"][2] == "running" and rows["bad"][2] == "unknown", r.stdout
    assert "corrupt state file" in r.stderr, r.stderr
    no_traceback(r)
    items = {s["id"]: s for s in json.loads(ok("list", "-f", "json", root=ocirun_root).stdout)}
    assert items["bad"]["status"] == "unknown" and items["good"]["status"] == "running"

    for args in (["state", "bad"], ["delete", "bad"], ["kill", "bad", "KILL"], ["start", "bad"],
                 ["pause", "bad"], ["ps", "bad"]):
        r = run_ocirun(*args, root=ocirun_root)
        assert r.returncode == 1 and "corrupt state file" in r.stderr, (args, r.stderr)
        no_traceback(r)
    assert alive(pid) and path.exists()

    r = run_ocirun("delete", "--force", "bad", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    wait_gone(pid)
    assert not (ocirun_root / "bad").exists()
    assert not os.path.exists(cgroup)
    assert json.loads(ok("state", "good", root=ocirun_root).stdout)["status"] == "running"
    ok("delete", "--force", "good", root=ocirun_root)


# ============================================================================ item 12

def test_populated_cgroup_warns_and_goes_on_like_runc(tmp_path, ocirun_root, runc_root, cgname):
    foreign = subprocess.Popen(["sleep", "1000"])
    try:
        for h in ("pids", "memory", "devices", "freezer"):  # runc counts them in devices
            os.mkdir(f"{CG}/{h}/{cgname}")
            with open(f"{CG}/{h}/{cgname}/cgroup.procs", "w") as f:
                f.write(str(foreign.pid))
        bundle = make_bundle(tmp_path, SLEEPER, linux={"cgroupsPath": f"/{cgname}"})
        for run, root in ((run_ocirun, ocirun_root), (run_runc, runc_root)):
            r = run("run", "-d", "-b", bundle, "pop", root=root)
            assert r.returncode == 0, (run, r.stderr)
            assert "container's cgroup is not empty: 1 process(es) found" in r.stderr, (run, r.stderr)
            st = json.loads(ok("state", "pop", root=root, run=run).stdout)
            assert st["status"] == "running"
            r = run("delete", "--force", "pop", root=root)
            assert r.returncode == 0, (run, r.stderr)
            wait_gone(st["pid"])
            assert foreign.poll() is None, "delete killed a process that is not the container's"
            assert os.listdir(root) == []
    finally:
        foreign.kill()
        foreign.wait()


def test_delete_of_created_container_needs_force(tmp_path, ocirun_root):
    bundle = make_bundle(tmp_path, SLEEPER)
    ok("create", "-b", bundle, "c1", root=ocirun_root)
    pid = json.loads(ok("state", "c1", root=ocirun_root).stdout)["pid"]
    r = run_ocirun("delete", "c1", root=ocirun_root)
    assert r.returncode == 1 and r.stderr.strip() == "cannot delete container c1 that is not stopped: created", r.stderr
    st = json.loads(ok("state", "c1", root=ocirun_root).stdout)
    assert (st["status"], st["pid"]) == ("created", pid) and alive(pid)
    ok("delete", "--force", "c1", root=ocirun_root)
    wait_gone(pid)
    assert not (ocirun_root / "c1").exists()


def test_the_inits_own_error_still_reaches_start(tmp_path, ocirun_root):
    # after "0" the init reports a failure before execve (a startContainer hook) on the fifo,
    # then dies: that text is its error, `start` fails with it
    bundle = make_bundle(tmp_path, SLEEPER, hooks={"startContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]})
    ok("create", "-b", bundle, "e1", root=ocirun_root)
    r = run_ocirun("start", "e1", root=ocirun_root, timeout=20)
    assert r.returncode == 1 and "startContainer" in r.stderr, r.stderr
    no_traceback(r)
    ok("delete", "--force", "e1", root=ocirun_root)
