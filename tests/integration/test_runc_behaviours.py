"""runc behaviours engines and users rely on (issue 13, item 12), each next to runc 1.1.5:

- a `process.cwd` only root can enter: changed into before the privileges are dropped;
- a bind-mount source only host root can reach, in a container with a user namespace;
- the pty keeps devpts's tty group (gid=5), not the process's gid;
- no mount namespace at all, and a mount namespace joined by path;
- `create` without `process` (the spec: create succeeds, start fails; runc refuses create).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from helpers import make_bundle, private_rootfs, read_config, run_ocirun, run_runc, write_config


RUNTIMES = ("ocirun", "runc")


def _runtime(name: str):
    if name == "runc" and helpers.RUNC is None:
        pytest.skip("runc is not installed")
    return run_ocirun if name == "ocirun" else run_runc


def _root_for(name: str, ocirun_root: Path, runc_root: Path) -> Path:
    return ocirun_root if name == "ocirun" else runc_root


# ============================================================================ cwd

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cwd_only_root_can_enter(runtime, ocirun_root, runc_root, tmp_path):
    """/root is 0700 root in the image; the process runs as uid 1000 and starts there: the
    runtime changes directory while still root (runc's finalizeNamespace), then drops."""
    run = _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    bundle = make_bundle(tmp_path, ["sh", "-c", "pwd; id -u; ls . >/dev/null 2>&1 || echo denied"],
                         process={"cwd": "/root", "user": {"uid": 1000, "gid": 1000}})
    r = run("run", "-b", bundle, "cwd1", root=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/root", "1000", "denied"], r.stdout


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_cwd_only_root_can_enter(runtime, ocirun_root, runc_root, tmp_path):
    run = _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    bundle = make_bundle(tmp_path, ["sleep", "30"])
    r = run("run", "-d", "-b", bundle, "cwd3", root=root)
    assert r.returncode == 0, r.stderr
    try:
        r = run("exec", "--cwd", "/root", "--user", "1000:1000", "cwd3", "sh", "-c", "pwd; id -u", root=root)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["/root", "1000"], r.stdout
    finally:
        helpers.delete(root, "cwd3", run=run, check=False)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cwd_not_a_directory_still_fails_clearly(runtime, ocirun_root, runc_root, tmp_path):
    """Only a permission error is retried as the user; anything else fails at once."""
    run = _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    bundle = make_bundle(tmp_path, ["true"], process={"cwd": "/etc/passwd", "user": {"uid": 1000, "gid": 1000}})
    r = run("run", "-b", bundle, "cwd2", root=root)
    assert r.returncode != 0
    assert "/etc/passwd" in r.stderr and "not a directory" in r.stderr and "Traceback" not in r.stderr
    assert os.listdir(root) == []


# ============================================================================ pty group

def _run_on_pty(run, root: Path, tmp_path: Path, bundle: Path, cid: str) -> str:
    """create with --console-socket, start, return what the container wrote on its pty."""
    from ocirun import console
    path = tmp_path / f"{cid}.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(20)
    try:
        r = run("create", "-b", bundle, "--console-socket", path, cid, root=root)
        assert r.returncode == 0, r.stderr
        try:
            conn, _ = srv.accept()
            with conn:
                master = console.recv_console_fd(conn.fileno())
            try:
                r = run("start", cid, root=root)
                assert r.returncode == 0, r.stderr
                return _read_until_hangup(master)
            finally:
                os.close(master)
        finally:
            helpers.delete(root, cid, run=run, check=False)
    finally:
        srv.close()


def _read_until_hangup(fd: int, timeout: float = 10) -> str:
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the container's side is closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pty_keeps_the_tty_group(runtime, ocirun_root, runc_root, tmp_path):
    """devpts is mounted gid=5: the pty's group stays tty, its owner becomes the process's uid."""
    run = _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    bundle = make_bundle(tmp_path, ["sh", "-c", "stat -L -c 'pty=%u:%g' /proc/self/fd/0; id -g"],
                         process={"terminal": True, "user": {"uid": 1000, "gid": 1000}})
    out = _run_on_pty(run, root, tmp_path, bundle, "pty1")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    assert "pty=1000:5" in lines, out
    assert "1000" in lines, out


# ============================================================================ create without process

def test_create_without_process_then_start_fails(ocirun_root, runc_root, tmp_path):
    """runtime.md: `process` is REQUIRED only when start is called.  ocirun creates the container
    and refuses `start` (it stays created, delete removes it); runc 1.1.5 refuses at create
    ("process property must not be empty") — here we follow the spec."""
    bundle = make_bundle(tmp_path, ["true"])
    cfg = read_config(bundle)
    del cfg["process"]
    write_config(bundle, cfg)

    r = run_ocirun("create", "-b", bundle, "np1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    try:
        st = json.loads(run_ocirun("state", "np1", root=ocirun_root).stdout)
        assert st["status"] == "created" and st["pid"] > 0
        r = run_ocirun("start", "np1", root=ocirun_root)
        assert r.returncode == 1
        assert "process" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        st = json.loads(run_ocirun("state", "np1", root=ocirun_root).stdout)
        assert st["status"] == "created"   # a failed start changes nothing
        # exec needs a running container, as ever
        r = run_ocirun("exec", "np1", "true", root=ocirun_root)
        assert r.returncode != 0
    finally:
        r = run_ocirun("delete", "--force", "np1", root=ocirun_root)
    assert r.returncode == 0, r.stderr
    assert os.listdir(ocirun_root) == []

    r = run_runc("create", "-b", bundle, "np1", root=runc_root)   # the reference: refused at once
    assert r.returncode == 1 and "process property must not be empty" in r.stderr, r.stderr


def test_run_without_process_fails_and_leaves_nothing(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"])
    cfg = read_config(bundle)
    del cfg["process"]
    write_config(bundle, cfg)
    r = run_ocirun("run", "-b", bundle, "np2", root=ocirun_root)
    assert r.returncode != 0
    assert "process" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(ocirun_root) == []


# ============================================================================ userns bind sources

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bind_source_only_host_root_can_reach_in_userns(runtime, ocirun_root, runc_root, tmp_path):
    """The source is a 0700 root directory (under pytest's 0700 tmp dirs too): the container's
    root is host uid 100000 and cannot look it up; the runtime, host root, opens it for it."""
    run = _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    (secret / "f").write_text("hidden\n")
    os.chmod(tmp_path, 0o700)
    bundle = make_bundle(tmp_path, ["sh", "-c", "grep -c ' /tmp ' /proc/self/mountinfo; "
                                                "stat -c %a /tmp; cat /tmp/f || echo unreadable"])
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"].pop("resources", None)
    cfg["mounts"].append({"destination": "/tmp", "type": "bind", "source": str(secret),
                          "options": ["rbind", "ro"]})
    write_config(bundle, cfg)
    r = run("run", "-b", bundle, "ub1", root=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["1", "700"], r.stdout
    assert "unreadable" in r.stdout          # the mount is there; the permissions still hold


def test_bind_source_missing_in_userns_names_the_mount(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"])
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"].pop("resources", None)
    cfg["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(tmp_path / "nope"),
                          "options": ["rbind"]})
    write_config(bundle, cfg)
    r = run_ocirun("run", "-b", bundle, "ub2", root=ocirun_root)
    assert r.returncode == 1
    assert "mounts[6]" in r.stderr and "no such file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(ocirun_root) == []


# ============================================================================ mount namespaces

def _runtime_cmd(runtime: str, root: Path) -> list[str]:
    base = helpers.ocirun_command() if runtime == "ocirun" else [helpers.RUNC]
    return base + ["--root", str(root)]


def _mounts_under(path: Path, mountinfo: str) -> list[str]:
    p = str(path)
    return [ln for ln in mountinfo.splitlines() if ln.split()[4] == p or ln.split()[4].startswith(p + "/")]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_no_mount_namespace(runtime, ocirun_root, runc_root, tmp_path):
    """No `mount` in linux.namespaces: the container shares the runtime's mount table, as the
    spec allows.  The runtime runs inside `unshare --mount` here, so that this test's runtime
    namespace is a private copy and nothing can reach the host's mounts whatever happens."""
    _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    rootfs = private_rootfs(tmp_path)
    bundle = make_bundle(tmp_path, ["sh", "-c", "echo in; hostname; ls /proc/1/ns/pid >/dev/null && echo proc"],
                         rootfs=rootfs)
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "mount"]
    if runtime == "runc":   # runc: "unable to restrict sys entries without a private MNT namespace"
        cfg["linux"].pop("maskedPaths")
        cfg["linux"].pop("readonlyPaths")
    write_config(bundle, cfg)
    script = (f"{' '.join(map(str, _runtime_cmd(runtime, root)))} run -b {bundle} nomnt; echo rc=$?; "
              "echo ---; cat /proc/self/mountinfo")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    out, _, mountinfo = r.stdout.partition("---\n")
    assert "rc=0" in out, r.stdout + r.stderr
    assert out.split()[:3] == ["in", "ocirun", "proc"], out
    if runtime == "ocirun":
        # What the container mounted in the shared table went with it (runc leaves it all there).
        assert _mounts_under(rootfs, mountinfo) == []
    assert os.listdir(root) == []


def test_exec_into_a_container_without_mount_namespace_sees_its_root(ocirun_root, tmp_path):
    """`exec` joins no mount namespace there: it must still land in the container's root."""
    rootfs = private_rootfs(tmp_path)
    (rootfs / "marker").write_text("inside\n")
    bundle = make_bundle(tmp_path, ["sleep", "30"], rootfs=rootfs)
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "mount"]
    write_config(bundle, cfg)
    oci = " ".join(map(str, _runtime_cmd("ocirun", ocirun_root)))
    script = (f"{oci} run -d -b {bundle} nomnt3 </dev/null >/dev/null; echo rc=$?; "
              f"{oci} exec --cwd / nomnt3 sh -c 'cat /marker; pwd'; echo rc=$?; "
              f"{oci} exec nomnt3 sh -c 'cd ..; ls -a / | grep -c marker'; "
              f"{oci} delete --force nomnt3; echo ---; cat /proc/self/mountinfo")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    out, _, mountinfo = r.stdout.partition("---\n")
    assert out.split() == ["rc=0", "inside", "/", "rc=0", "1"], r.stdout + r.stderr
    assert _mounts_under(rootfs, mountinfo) == []
    assert os.listdir(ocirun_root) == []


def _no_mount_ns_bundle(tmp_path: Path, args: list[str], rootfs: Path, **cfg_extra) -> Path:
    bundle = make_bundle(tmp_path, args, rootfs=rootfs)
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "mount"]
    cfg.update(cfg_extra)
    write_config(bundle, cfg)
    return bundle


def test_no_mount_namespace_create_killed_at_any_point_is_cleaned(ocirun_root, tmp_path):
    """`kill -9` of `create` while it sets up a container without a mount namespace (here during
    a createRuntime hook, after the init made all its mounts in the shared table, and at earlier
    and later points): `delete --force` removes every mount it made.  Before the fix the mount
    record reached state.json only after the init was spawned: 18 mounts stayed behind."""
    rootfs = private_rootfs(tmp_path)
    bundle = _no_mount_ns_bundle(tmp_path, ["sleep", "30"], rootfs,
                                 hooks={"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "3"]}]})
    oci = " ".join(map(str, _runtime_cmd("ocirun", ocirun_root)))
    script = ""
    for i, delay in enumerate((2, 0.05, 0.2, 0.4, 0.8, 1.2)):
        script += (f"{oci} create -b {bundle} k{i} </dev/null >/dev/null 2>&1 & pid=$!; sleep {delay}; "
                   f"kill -9 $pid; wait $pid; {oci} delete --force k{i}; echo rc=$?; "
                   f"grep -c ' {rootfs}[ /]' /proc/self/mountinfo; ")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["rc=0", "0"] * 6, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert os.listdir(ocirun_root) == []


def test_no_mount_namespace_delete_detaches_only_its_own_mount(ocirun_root, tmp_path):
    """`delete` detaches the container's rootfs bind only if the very mount it opens at the rootfs
    path is the one create made.  Here the container's bind is taken away by someone else and
    another mount is made at the same path (the kernel hands the freed mount id out again):
    `delete --force` must leave that other mount alone.  Before the fix the check compared the
    reusable mount id and unmounted the path afterwards: it detached the stranger's mount."""
    rootfs = private_rootfs(tmp_path)
    bundle = _no_mount_ns_bundle(tmp_path, ["sleep", "30"], rootfs)
    oci = " ".join(map(str, _runtime_cmd("ocirun", ocirun_root)))
    mnt_id = f"awk '$5 == \"{rootfs}\" {{print $1}}' /proc/self/mountinfo | tail -n1"
    script = (f"{oci} run -d -b {bundle} own1 </dev/null >/dev/null; echo rc=$?; "
              f"{oci} kill own1 KILL; sleep 0.5; "
              f"before=$({mnt_id}); umount -l {rootfs}; sleep 0.3; n=0; "
              # Binds at the path until one gets the freed id (the kernel hands out the lowest free).
              f"while [ $n -lt 300 ]; do mount --bind {rootfs} {rootfs}; n=$((n+1)); "
              f"[ \"$({mnt_id})\" = \"$before\" ] && break; done; "
              f"[ \"$({mnt_id})\" = \"$before\" ] && echo same-id || echo other-id; "
              f"{oci} delete --force own1; echo rc=$?; "
              f"[ $(grep -c ' {rootfs} ' /proc/self/mountinfo) = $n ] && echo kept || echo detached; "
              f"umount -R -l {rootfs}")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout.split()
    assert out == ["rc=0", "same-id", "rc=0", "kept"], r.stdout + r.stderr
    assert os.listdir(ocirun_root) == []


def test_no_mount_namespace_with_new_userns_is_refused(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"])
    cfg = read_config(bundle)
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "mount"]
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    write_config(bundle, cfg)
    r = run_ocirun("create", "-b", bundle, "nomnt2", root=ocirun_root)
    assert r.returncode == 1
    assert "linux.namespaces" in r.stderr and "mount" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(ocirun_root) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_join_mount_namespace_by_path(runtime, ocirun_root, runc_root, tmp_path):
    """A mount namespace given by path (here one `unshare --mount` holds open): the container's
    mounts and pivot_root happen in it, none reaches ours."""
    run = _runtime(runtime)
    root = _root_for(runtime, ocirun_root, runc_root)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
    try:
        ns = f"/proc/{holder.pid}/ns/mnt"
        helpers.wait_until(lambda: os.readlink(ns) != os.readlink("/proc/self/ns/mnt"), 10,
                           "unshare to make its mount namespace")
        bundle = make_bundle(tmp_path, ["sh", "-c", "hostname; readlink /proc/self/ns/mnt"])
        cfg = read_config(bundle)
        for n in cfg["linux"]["namespaces"]:
            if n["type"] == "mount":
                n["path"] = ns
        write_config(bundle, cfg)
        r = run("run", "-b", bundle, "joinmnt", root=root)
        assert r.returncode == 0, r.stderr
        out = r.stdout.split()
        assert out[0] == "ocirun"
        assert out[1] == os.readlink(ns)   # the container runs in the namespace it was given
        assert helpers.leftover_mounts(helpers.CACHE) == []
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_a_missing_cwd_is_made(tmp_path, ocirun_root, runtime):
    """The kubelet passes a pod's workingDir whether or not the image has it (and containerd
    does not make it): like runc, the runtime makes it, root's, 0755."""
    if runtime == "runc" and helpers.RUNC is None:
        pytest.skip("runc is not installed")
    run = run_ocirun if runtime == "ocirun" else helpers.run_runc
    root = ocirun_root if runtime == "ocirun" else tmp_path / "runc-root"
    rootfs = helpers.private_rootfs(tmp_path)
    bundle = make_bundle(tmp_path, ["pwd"], rootfs=rootfs, process={"cwd": "/made/by/runtime"},
                         root={"readonly": False})
    r = run("run", "-b", bundle, "cwd1", root=root)
    assert (r.returncode, r.stdout) == (0, "/made/by/runtime\n"), r.stderr
    st = os.stat(rootfs / "made" / "by" / "runtime")
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)
