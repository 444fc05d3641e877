"""prepare_rootfs / enter_rootfs / finalize_rootfs against a real temp rootfs (needs root).

Each test runs the rootfs code in a forked child that unshared its mount namespace (and, when it
pivots and mounts proc, a pid namespace with a grandchild as pid 1), so nothing reaches the host.
The child reports what it saw as JSON through a pipe.  The rootfs is seeded with symlinks that
would escape to a host "sentinel" directory if anything resolved them on the host's side; after
every test the sentinel must be empty and the test process's mount table unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import traceback

import pytest

import helpers
from ocirun import linux
from ocirun.config import parse_config
from ocirun.errors import OCIError
from ocirun.rootfs import enter_rootfs, finalize_rootfs, prepare_rootfs


# --------------------------------------------------------------------------- harness

def run_isolated(fn, pidns: bool = False, userns: bool = False) -> dict:
    """Run fn() in a child with its own mount namespace (+ pid namespace, fn as pid 1;
    + a user namespace mapping ids 0-65535 to themselves, and an ipc namespace)."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        os.close(go_w)
        code = 1
        try:
            if userns:
                linux.unshare(linux.CLONE_NEWUSER)
                os.write(w, b"u")
                os.read(go_r, 1)  # the parent wrote our id maps
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            extra = (linux.CLONE_NEWPID if pidns else 0) | (linux.CLONE_NEWIPC if userns else 0)
            linux.unshare(linux.CLONE_NEWNS | extra)
            linux.mount(None, "/", None, linux.MS_PRIVATE | linux.MS_REC)
            if pidns:
                inner = os.fork()
                if inner == 0:
                    _report(w, fn)
                _, st = os.waitpid(inner, 0)
                code = os.waitstatus_to_exitcode(st)
            else:
                _report(w, fn)
        finally:
            os._exit(code)
    os.close(w)
    os.close(go_r)
    if userns:
        assert os.read(r, 1) == b"u"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("0 0 65536")
    os.close(go_w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, st = os.waitpid(pid, 0)
    assert data, f"child reported nothing (status {st})"
    out = json.loads(data)
    if "traceback" in out:
        pytest.fail("child failed:\n" + out["traceback"])
    return out


def result_of(out: dict):
    assert "result" in out, f"child reported an error: {out}"
    return out["result"]


def _report(w: int, fn) -> None:
    try:
        try:
            out = {"result": fn()}
        except OCIError as e:
            out = {"oci_error": str(e)}
        except BaseException:
            out = {"traceback": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
    finally:
        os._exit(0)


def mountinfo(prefix: str = "") -> dict[str, dict]:
    """mount point (relative to prefix, "/" for prefix itself) -> {fstype, opts, root, source, optional}."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a, b = left.split(), right.split()
            mp = a[4]
            if prefix:
                if mp != prefix and not mp.startswith(prefix + "/"):
                    continue
                mp = mp[len(prefix):] or "/"
            out[mp] = {"root": a[3], "opts": a[5].split(","), "optional": a[6:], "fstype": b[0],
                       "source": b[1], "super": b[2].split(",")}
    return out


def ftype(path: str) -> str:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    m = st.st_mode
    if stat.S_ISCHR(m):
        return f"c{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}:{oct(stat.S_IMODE(m))}"
    if stat.S_ISLNK(m):
        return "l->" + os.readlink(path)
    if stat.S_ISDIR(m):
        return "d"
    if stat.S_ISFIFO(m):
        return "p"
    return "f"


@pytest.fixture
def world():
    """A bundle with a rootfs seeded with escaping symlinks, a host sentinel dir, and a host file."""
    base = tempfile.mkdtemp(prefix="ocirun-rootfs-test-")
    sentinel = tempfile.mkdtemp(prefix="ocirun-sentinel-")
    root = os.path.join(base, "rootfs")
    for d in ("etc", "proc", "sys", "tmp", "data/sub", "evil"):
        os.makedirs(os.path.join(root, d))
    with open(os.path.join(root, "data/sub/file"), "w") as f:
        f.write("image data")
    os.chmod(os.path.join(root, "data"), 0o711)
    os.symlink(os.path.join(root, "data/sub/file"), os.path.join(root, "data/abs-link"))
    os.symlink("/", os.path.join(root, "etc2"))                                    # etc2 -> /
    os.symlink(sentinel, os.path.join(root, "abs"))                                # abs -> /tmp/sentinel
    os.symlink("../../../../../../../../.." + sentinel, os.path.join(root, "rel"))  # ../../.. escape
    os.symlink("/proc/self/root/" + sentinel.lstrip("/"), os.path.join(root, "evil/magic"))
    os.symlink("../../../../../../" + sentinel + "/hosts", os.path.join(root, "etc/hosts"))
    hostfile = os.path.join(base, "hostfile")
    with open(hostfile, "w") as f:
        f.write("from the host\n")
    w = {"base": base, "root": root, "sentinel": sentinel, "hostfile": hostfile}
    yield w
    assert os.listdir(sentinel) == [], "something escaped into the host sentinel"
    # Only mounts of ours count: other tests and engines may mount and unmount meanwhile.
    ours = [line for line in open("/proc/self/mountinfo") if base in line or sentinel in line]
    assert ours == [], "a mount leaked to the host"
    shutil.rmtree(base)
    shutil.rmtree(sentinel)


def make_cfg(w, mounts, **linux_extra):
    # The child runs in a mount namespace of its own (run_isolated): say so, as a container
    # with one would (without it the rootfs is the runtime's bind, made before the fork).
    linux_extra.setdefault("namespaces", [{"type": "mount"}])
    doc = {"ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": linux_extra.pop("readonly", False)},
           "mounts": mounts, "linux": linux_extra}
    return parse_config(doc, w["base"])


STD_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
]


# --------------------------------------------------------------------------- prepare_rootfs

def test_prepare_standard_mounts_devices_and_escapes(world):
    w = world
    mounts = STD_MOUNTS + [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/abs/mnt", "type": "tmpfs", "source": "tmpfs", "options": []},
        {"destination": "/rel/bound", "type": "bind", "source": w["hostfile"], "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/etc2/etc/hostname", "type": "bind", "source": w["hostfile"],
         "options": ["bind", "ro", "nosuid"]},
        {"destination": "/etc/hosts", "source": w["hostfile"], "options": ["bind"]},
        {"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "nosuid", "ro"]},
        {"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=700"]},
    ]
    cfg = make_cfg(w, mounts, devices=[
        {"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o20640, "uid": 0, "gid": 5},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
        {"path": "/dev/sub/fifo", "type": "p"},
    ])
    root = w["root"]

    def child():
        prepare_rootfs(cfg, in_userns=False)
        names = ["dev/null", "dev/zero", "dev/full", "dev/random", "dev/urandom", "dev/tty", "dev/xnull",
                 "dev/sub/fifo", "dev/ptmx", "dev/fd", "dev/stdin", "dev/stdout", "dev/stderr", "dev/pts",
                 "dev/shm", "dev/console", "data", "data/sub", "data/sub/file", "data/abs-link",
                 "sys/fs/cgroup/cpu", "sys/fs/cgroup/memory"]
        xnull = os.stat(root + "/dev/xnull")
        with open(root + "/data/sub/file") as f:
            copied = f.read()
        return {"mi": mountinfo(root), "types": {n: ftype(f"{root}/{n}") for n in names},
                "data_mode": oct(stat.S_IMODE(os.stat(root + "/data").st_mode)),
                "xnull_gid": xnull.st_gid, "copied": copied,
                "hostname": open(root + "/etc/hostname").read(),
                "in_root_tmp": sorted(os.listdir(root + w["sentinel"])),
                "mnt_x_mode": oct(stat.S_IMODE(os.stat(root + "/mnt/x").st_mode))}

    out = result_of(run_isolated(child))
    mi, types = out["mi"], out["types"]
    s = w["sentinel"]
    # The rootfs is a mount of its own (pivot_root needs that) and every mount is under it.
    assert "/" in mi
    assert mi["/proc"]["fstype"] == "proc" and {"nosuid", "nodev", "noexec"} <= set(mi["/proc"]["opts"])
    assert mi["/dev"]["fstype"] == "tmpfs" and "mode=755" in mi["/dev"]["super"]
    assert mi["/dev/pts"]["fstype"] == "devpts" and {"gid=5", "mode=620", "ptmxmode=666"} <= set(mi["/dev/pts"]["super"])
    assert mi["/dev/shm"]["fstype"] == "tmpfs" and "noexec" in mi["/dev/shm"]["opts"]
    assert mi["/dev/mqueue"]["fstype"] == "mqueue"
    assert mi["/sys"]["fstype"] == "sysfs" and "ro" in mi["/sys"]["opts"]
    # Symlinked destinations land inside the rootfs, never in the host sentinel.
    assert mi[s + "/mnt"]["fstype"] == "tmpfs"
    assert "ro" in mi[s + "/bound"]["opts"]
    assert {"ro", "nosuid"} <= set(mi["/etc/hostname"]["opts"])    # via etc2 -> /
    assert "/etc2/etc/hostname" not in mi
    assert s + "/hosts" in mi                                      # etc/hosts -> ../../..<sentinel>/hosts
    assert out["in_root_tmp"] == ["bound", "hosts", "mnt"]
    assert out["hostname"] == "from the host\n"
    # tmpcopyup: contents copied, directory mode kept, then made read-only.
    assert "ro" in mi["/data"]["opts"] and "nosuid" in mi["/data"]["opts"]
    assert out["copied"] == "image data" and out["data_mode"] == "0o711"
    assert types["data/abs-link"] == "l->" + w["root"] + "/data/sub/file"
    assert out["mnt_x_mode"] == "0o700"
    # Devices: defaults, a config override of /dev/null's mode, extra ones with type bits in fileMode.
    assert types["dev/zero"] == "c1:5:0o666" and types["dev/tty"] == "c5:0:0o666"
    assert types["dev/full"] == "c1:7:0o666" and types["dev/urandom"] == "c1:9:0o666"
    assert types["dev/random"] == "c1:8:0o666"
    assert types["dev/null"] == "c1:3:0o600"
    assert types["dev/xnull"] == "c1:3:0o640" and out["xnull_gid"] == 5
    assert types["dev/sub/fifo"] == "p"
    assert types["dev/ptmx"] == "l->pts/ptmx" and types["dev/fd"] == "l->/proc/self/fd"
    assert types["dev/stdin"] == "l->/proc/self/fd/0" and types["dev/stderr"] == "l->/proc/self/fd/2"
    assert types["dev/pts"] == "d" and types["dev/shm"] == "d"
    assert types["dev/console"] == "missing"  # the console module's job
    # cgroup v1 (hybrid host): a read-only tmpfs with one read-only bind per hierarchy.
    if mi["/sys/fs/cgroup"]["fstype"] == "tmpfs":
        assert "ro" in mi["/sys/fs/cgroup"]["opts"]
        assert mi["/sys/fs/cgroup/memory"]["fstype"] == "cgroup"
        assert "ro" in mi["/sys/fs/cgroup/memory"]["opts"]
        with open("/proc/self/cgroup") as f:
            mem = [ln.split(":")[2].strip() for ln in f if ln.split(":")[1] == "memory"]
        assert mi["/sys/fs/cgroup/memory"]["root"] == mem[0]  # the container's own cgroup
    else:
        assert mi["/sys/fs/cgroup"]["fstype"] == "cgroup2"


def test_bind_source_missing_names_the_mount(world):
    cfg = make_cfg(world, [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/x", "type": "bind", "source": "/nonexistent-ocirun-src", "options": ["bind"]},
    ])
    out = run_isolated(lambda: prepare_rootfs(cfg, False))
    assert out["oci_error"] == "mounts[1].source: /nonexistent-ocirun-src: no such file or directory"


def test_relative_bind_source_is_relative_to_bundle(world):
    cfg = make_cfg(world, [{"destination": "/etc/hostfile", "type": "bind", "source": "hostfile",
                            "options": ["bind"]}])

    def child():
        prepare_rootfs(cfg, False)
        return open(world["root"] + "/etc/hostfile").read()

    assert result_of(run_isolated(child)) == "from the host\n"


@pytest.mark.parametrize("mount,msg", [
    ({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}, "/proc cannot be mounted because it is not of type proc"),
    ({"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs"}, "/proc/sys cannot be mounted because it is inside /proc"),
    ({"destination": "/evil/procdir", "type": "proc", "source": "proc"}, "must be mounted on ordinary directory"),
])
def test_proc_guards(world, mount, msg):
    os.symlink("/tmp", world["root"] + "/evil/procdir")
    cfg = make_cfg(world, [{"destination": "/proc", "type": "proc", "source": "proc"}] if mount["destination"] != "/proc" else [])
    cfg.mounts.extend(make_cfg(world, [mount]).mounts)
    out = run_isolated(lambda: prepare_rootfs(cfg, False))
    assert msg in out["oci_error"]


@pytest.mark.parametrize("with_proc", [True, False])
def test_magic_link_destination_is_refused(world, with_proc):
    """evil/magic -> /proc/self/root/<sentinel>: with a proc mounted it is a magic link (ELOOP);
    without, it resolves to an ordinary path under the image's /proc (refused by the /proc guard)."""
    proc = [{"destination": "/proc", "type": "proc", "source": "proc"}] if with_proc else []
    cfg = make_cfg(world, proc + [{"destination": "/evil/magic/x", "type": "tmpfs", "source": "tmpfs"}])
    out = run_isolated(lambda: prepare_rootfs(cfg, False))
    i = len(proc)
    if with_proc:
        assert out["oci_error"] == f"mounts[{i}]: mount tmpfs to /evil/magic/x: too many levels of symbolic links"
    else:
        assert out["oci_error"] == f"mounts[{i}]: /evil/magic/x cannot be mounted because it is inside /proc"


def test_dev_symlink_to_host_stays_inside(world):
    """No /dev mount and an image whose /dev points at a host directory."""
    os.symlink(world["sentinel"], world["root"] + "/dev")
    cfg = make_cfg(world, [])

    def child():
        prepare_rootfs(cfg, False)
        return sorted(os.listdir(world["root"] + world["sentinel"]))

    created = result_of(run_isolated(child))
    assert {"null", "zero", "ptmx", "fd", "pts", "shm"} <= set(created)


def test_device_entries_that_are_symlinks_out_get_their_node_inside(world):
    """No /dev mount and an image whose /dev/null and /dev/zero are symlinks, absolute and
    `..`-relative, pointing at host paths: the nodes are made where the links point *inside*
    the root (runc's SecureJoin does the same); they were skipped, leaving no /dev/null."""
    dev = world["root"] + "/dev"
    os.mkdir(dev)
    os.symlink(world["sentinel"] + "/d-null", dev + "/null")
    os.symlink("../../../../../../.." + world["sentinel"] + "/d-zero", dev + "/zero")
    os.symlink("..", dev + "/full")  # a directory: left as it is (runc's mknod gets EEXIST)
    cfg = make_cfg(world, [])

    def child():
        prepare_rootfs(cfg, False)
        inside = world["root"] + world["sentinel"]
        return {name: ftype(f"{inside}/{name}") for name in sorted(os.listdir(inside))}

    made = result_of(run_isolated(child))
    assert made == {"d-null": "c1:3:0o666", "d-zero": "c1:5:0o666"}, made


def test_userns_devices_are_bind_mounts(world):
    cfg = make_cfg(world, STD_MOUNTS[1:2])  # just the /dev tmpfs

    def child():
        prepare_rootfs(cfg, in_userns=True)
        return {"mi": mountinfo(world["root"]), "null": ftype(world["root"] + "/dev/null")}

    out = result_of(run_isolated(child))
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        assert out["mi"]["/dev/" + name]["fstype"] == "devtmpfs"
    assert out["null"] == "c1:3:0o666"


def test_in_a_real_user_namespace(world):
    """mknod is refused there (nodes are host binds), sysfs needs a netns (host /sys is bound),
    locked flags (nosuid on host mounts) must survive every remount."""
    mounts = STD_MOUNTS + [{"destination": "/etc/hostname", "type": "bind", "source": world["hostfile"],
                            "options": ["bind", "ro"]}]
    cfg = make_cfg(world, mounts, readonly=True, maskedPaths=["/proc/keys", "/proc/acpi"],
                   readonlyPaths=["/proc/sys"])

    def child():
        prepare_rootfs(cfg, in_userns=True)
        enter_rootfs(cfg, False)
        finalize_rootfs(cfg)
        mi = mountinfo()
        return {"mi": mi, "null": ftype("/dev/null"), "ls": sorted(os.listdir("/"))}

    out = result_of(run_isolated(child, pidns=True, userns=True))
    mi = out["mi"]
    assert out["null"] == "c1:3:0o666" and mi["/dev/null"]["fstype"] == "devtmpfs"
    assert "ro" in mi["/"]["opts"] and "ro" in mi["/sys"]["opts"] and "ro" in mi["/etc/hostname"]["opts"]
    assert "ro" in mi["/proc/sys"]["opts"] and mi["/proc/acpi"]["fstype"] == "tmpfs"


def test_dev_bind_skips_device_setup(world):
    fakedev = os.path.join(world["base"], "fakedev")
    os.mkdir(fakedev)
    cfg = make_cfg(world, [{"destination": "/dev", "type": "bind", "source": fakedev, "options": ["rbind"]}])

    def child():
        prepare_rootfs(cfg, False)
        return os.listdir(world["root"] + "/dev")

    assert result_of(run_isolated(child)) == []


def test_recursive_attributes_and_plain_ro_bind(world):
    src = os.path.join(world["base"], "tree")
    os.makedirs(src + "/sub")
    cfg = make_cfg(world, [
        {"destination": "/rro", "type": "bind", "source": src, "options": ["rbind", "rro", "rnoexec"]},
        {"destination": "/ro", "type": "bind", "source": src, "options": ["rbind", "ro"]},
    ])

    def child():
        linux.mount("tmpfs", src + "/sub", "tmpfs", 0)  # a submount in the source (child ns only)
        prepare_rootfs(cfg, False)
        return mountinfo(world["root"])

    mi = result_of(run_isolated(child))
    assert {"ro", "noexec"} <= set(mi["/rro"]["opts"]) and {"ro", "noexec"} <= set(mi["/rro/sub"]["opts"])
    # Plain "ro" only reaches the top mount, as with runc.
    assert "ro" in mi["/ro"]["opts"] and "rw" in mi["/ro/sub"]["opts"]


def test_idmap_needs_a_bind_mount(world):
    """(Idmapped binds themselves: tests/integration/test_idmapped_mounts.py, real containers.)"""
    cfg = make_cfg(world, [{"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}])
    out = run_isolated(lambda: prepare_rootfs(cfg, False))
    assert "bind mounts only" in out["oci_error"] and out["oci_error"].startswith("mounts[0]")


# --------------------------------------------------------------------------- pivot + finalize

def _full_cfg(w, readonly=True, propagation=""):
    extra = {"maskedPaths": ["/proc/keys", "/proc/acpi", "/proc/nonexistent", "/sys/firmware"],
             "readonlyPaths": ["/proc/sys", "/proc/bus", "/proc/nonexistent"]}
    if propagation:
        extra["rootfsPropagation"] = propagation
    return make_cfg(w, STD_MOUNTS + [{"destination": "/etc/hosts", "type": "bind", "source": w["hostfile"],
                                      "options": ["bind", "ro"]}], readonly=readonly, **extra)


def _inside_checks(w):
    def probe_write(path):
        try:
            with open(path, "w") as f:
                f.write("x")
            return "ok"
        except OSError as e:
            return os.strerror(e.errno)

    return {"pid": os.getpid(), "cwd": os.getcwd(), "ls": sorted(os.listdir("/")), "mi": mountinfo(),
            "host_base_visible": os.path.exists(w["base"]),
            "write_root": probe_write("/newfile"), "write_hostname": probe_write("/proc/sys/kernel/hostname"),
            "keys": ftype("/proc/keys"), "acpi": sorted(os.listdir("/proc/acpi")),
            "dev_null": ftype("/dev/null"), "hosts": open("/etc/hosts").read()}


@pytest.mark.parametrize("no_pivot", [False, True], ids=["pivot_root", "no_pivot"])
def test_enter_and_finalize(world, no_pivot):
    cfg = _full_cfg(world)

    def child():
        prepare_rootfs(cfg, False)
        enter_rootfs(cfg, no_pivot)
        finalize_rootfs(cfg)
        return _inside_checks(world)

    out = result_of(run_isolated(child, pidns=True))
    mi = out["mi"]
    assert out["pid"] == 1 and out["cwd"] == "/"
    assert {"dev", "etc", "proc", "sys", "data"} <= set(out["ls"])
    assert not out["host_base_visible"]
    # root.readonly; readonlyPaths; maskedPaths (files get /dev/null, dirs an empty ro tmpfs).
    assert out["write_root"] == "Read-only file system" and "ro" in mi["/"]["opts"]
    assert out["write_hostname"] == "Read-only file system"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mi["/proc/sys"]["opts"])
    assert "ro" in mi["/proc/bus"]["opts"]
    assert out["keys"] == "c1:3:0o666" and mi["/proc/keys"]["fstype"] == "tmpfs"  # bind of /dev on tmpfs
    assert out["acpi"] == [] and mi["/proc/acpi"]["fstype"] == "tmpfs" and "ro" in mi["/proc/acpi"]["opts"]
    assert out["dev_null"] == "c1:3:0o666" and out["hosts"] == "from the host\n"
    # Nothing of the host's tree is left in the container's mount table.
    host_only = [mp for mp in mi if mp.startswith(world["base"]) or mp.startswith("/mnt/sandboxing")]
    assert host_only == []
    procs = [mp for mp, m in mi.items() if m["fstype"] == "proc" and m["root"] == "/"]
    assert procs == ["/proc"]


def test_finalize_applies_shared_propagation(world):
    cfg = _full_cfg(world, readonly=False, propagation="rshared")

    def child():
        prepare_rootfs(cfg, False)
        enter_rootfs(cfg, False)
        finalize_rootfs(cfg)
        return mountinfo()["/"]

    root = result_of(run_isolated(child, pidns=True))
    assert any(o.startswith("shared:") for o in root["optional"])
    assert "rw" in root["opts"]


def test_masking_refuses_fake_dev_null(world):
    """An image /dev/null that is a symlink must not become the source of every mask."""
    os.makedirs(world["root"] + "/dev")
    os.symlink("/etc/hosts", world["root"] + "/dev/null")
    cfg = make_cfg(world, STD_MOUNTS[:1], maskedPaths=["/proc/keys"])  # /proc only; /dev from the image

    def child():
        prepare_rootfs(cfg, False)
        enter_rootfs(cfg, False)
        finalize_rootfs(cfg)

    out = run_isolated(child, pidns=True)
    assert "/dev/null is not the null device" in out["oci_error"]


# --------------------------------------------------------------------------- real engine configs

FIXTURES = str(helpers.FIXTURES)


@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="shared fixtures not present")
@pytest.mark.parametrize("name", ["docker-config.json", "podman-config.json", "containerd-config.json",
                                  "podman-rich-config.json"])
def test_engine_config_end_to_end(world, name):
    """An engine's config.json with its root swapped for our rootfs and its host bind sources
    swapped for temp files: prepare, pivot, finalize, then look around inside."""
    with open(os.path.join(FIXTURES, name)) as f:
        doc = json.load(f)
    doc.pop("process", None)
    doc.pop("hooks", None)
    doc["root"]["path"] = "rootfs"
    os.unlink(os.path.join(world["root"], "etc/hosts"))  # the escaping one: tested above
    for i, m in enumerate(doc["mounts"]):
        if m["source"].startswith("/var/lib/example"):
            src = os.path.join(world["base"], f"src{i}")
            if m["destination"] in ("/dev/shm", "/data"):
                os.mkdir(src)
            else:
                with open(src, "w") as f:
                    f.write(f"{m['destination']}\n")
            m["source"] = src
    cfg = parse_config(doc, world["base"])

    def child():
        prepare_rootfs(cfg, False)
        enter_rootfs(cfg, False)
        finalize_rootfs(cfg)
        mi = mountinfo()
        return {"mi": {k: v["fstype"] for k, v in mi.items()}, "ro_root": "ro" in mi["/"]["opts"],
                "null": ftype("/dev/null"), "xnull": ftype("/dev/xnull"),
                "masked_dirs": [p for p in cfg.linux.masked_paths if os.path.isdir(p) and os.listdir(p)]}

    out = result_of(run_isolated(child, pidns=True))
    for m in cfg.mounts:
        assert m.destination in out["mi"], m.destination
    assert out["null"] == "c1:3:0o666"
    assert out["masked_dirs"] == []
    assert out["ro_root"] == cfg.root_readonly
    if name == "podman-rich-config.json":
        assert out["xnull"] == "c1:3:0o666"
