"""config.json `mounts` -> mount(2) calls inside the rootfs, plus the post-pivot path masks.

What this module owns:
  * `parse_mount_options`: the pure translation of a mount's `options` list (runc's vocabulary)
    into MS_* flags, propagation changes, recursive mount_setattr attributes and fs data;
  * `mount_entry`: one `mounts[i]`, its destination resolved *inside* the rootfs (paths.py)
    and mounted through /proc/self/fd/N, so an image symlink can never redirect it;
  * maskedPaths / readonlyPaths / read-only root, which run after pivot_root.

Every failure is an OCIError naming the `mounts[i]` entry.  Only os/stat and our syscall
wrappers are used (ocirun.linux; the mounts through ocirun.kernel, the seam the unit tests of the
order replace): this runs in the container's init, after fork, before pivot_root.
"""
from __future__ import annotations

import errno
import os
import stat

from .. import kernel, linux, mountinfo
from ..mountinfo import CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC, fs_magic
from ..record import Record
from ..errors import OCIError, os_error
from .paths import fd_path, make_mount_target, mkdir_all_in_root, open_in_root

# option -> (clear?, MS_* flag).  "clear" options undo an earlier or inherited flag.
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, linux.MS_RDONLY), "rw": (True, linux.MS_RDONLY),
    "nosuid": (False, linux.MS_NOSUID), "suid": (True, linux.MS_NOSUID),
    "nodev": (False, linux.MS_NODEV), "dev": (True, linux.MS_NODEV),
    "noexec": (False, linux.MS_NOEXEC), "exec": (True, linux.MS_NOEXEC),
    "sync": (False, linux.MS_SYNCHRONOUS), "async": (True, linux.MS_SYNCHRONOUS),
    "dirsync": (False, linux.MS_DIRSYNC),
    "remount": (False, linux.MS_REMOUNT),
    "mand": (False, linux.MS_MANDLOCK), "nomand": (True, linux.MS_MANDLOCK),
    "noatime": (False, linux.MS_NOATIME), "atime": (True, linux.MS_NOATIME),
    "nodiratime": (False, linux.MS_NODIRATIME), "diratime": (True, linux.MS_NODIRATIME),
    "relatime": (False, linux.MS_RELATIME), "norelatime": (True, linux.MS_RELATIME),
    "strictatime": (False, linux.MS_STRICTATIME), "nostrictatime": (True, linux.MS_STRICTATIME),
    "lazytime": (False, linux.MS_LAZYTIME), "nolazytime": (True, linux.MS_LAZYTIME),
    "nosymfollow": (False, linux.MS_NOSYMFOLLOW), "symfollow": (True, linux.MS_NOSYMFOLLOW),
    "silent": (False, linux.MS_SILENT), "loud": (True, linux.MS_SILENT),
    "acl": (False, linux.MS_POSIXACL), "noacl": (True, linux.MS_POSIXACL),
    "iversion": (False, linux.MS_I_VERSION), "noiversion": (True, linux.MS_I_VERSION),
}

# Propagation names, shared with linux.rootfsPropagation.
PROPAGATION: dict[str, int] = {
    "private": linux.MS_PRIVATE, "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "shared": linux.MS_SHARED, "rshared": linux.MS_SHARED | linux.MS_REC,
    "slave": linux.MS_SLAVE, "rslave": linux.MS_SLAVE | linux.MS_REC,
    "unbindable": linux.MS_UNBINDABLE, "runbindable": linux.MS_UNBINDABLE | linux.MS_REC,
}

# Recursive options (mount_setattr with AT_RECURSIVE): option -> (clear?, MOUNT_ATTR_*).
_REC_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, linux.MOUNT_ATTR_RDONLY), "rrw": (True, linux.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, linux.MOUNT_ATTR_NOSUID), "rsuid": (True, linux.MOUNT_ATTR_NOSUID),
    "rnodev": (False, linux.MOUNT_ATTR_NODEV), "rdev": (True, linux.MOUNT_ATTR_NODEV),
    "rnoexec": (False, linux.MOUNT_ATTR_NOEXEC), "rexec": (True, linux.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, linux.MOUNT_ATTR_NODIRATIME), "rdiratime": (True, linux.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (False, linux.MOUNT_ATTR_NOSYMFOLLOW), "rsymfollow": (True, linux.MOUNT_ATTR_NOSYMFOLLOW),
}
# The atime mode is one 3-bit field: the kernel wants all of MOUNT_ATTR__ATIME cleared and the
# new mode set.  "ratime" means "back to the default", which is relatime.
_REC_ATIME: dict[str, int] = {
    "rnoatime": linux.MOUNT_ATTR_NOATIME, "ratime": linux.MOUNT_ATTR_RELATIME,
    "rrelatime": linux.MOUNT_ATTR_RELATIME, "rnorelatime": linux.MOUNT_ATTR_RELATIME,
    "rstrictatime": linux.MOUNT_ATTR_STRICTATIME, "rnostrictatime": linux.MOUNT_ATTR_RELATIME,
}

# statvfs f_flag bits -> MS_* (ST_RELATIME differs from MS_RELATIME).
_ST_TO_MS = ((1, linux.MS_RDONLY), (2, linux.MS_NOSUID), (4, linux.MS_NODEV), (8, linux.MS_NOEXEC),
             (16, linux.MS_SYNCHRONOUS), (64, linux.MS_MANDLOCK), (1024, linux.MS_NOATIME),
             (2048, linux.MS_NODIRATIME), (4096, linux.MS_RELATIME), (0x2000, linux.MS_NOSYMFOLLOW))
_ATIME_FLAGS = linux.MS_NOATIME | linux.MS_RELATIME | linux.MS_STRICTATIME
_NOT_REMOUNT_FLAGS = linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT | linux.MS_SILENT


class MountOptions(Record):
    """A mount's `options` list, decoded.  Later options win over earlier ones (rw after ro)."""
    flags: int
    clear_flags: int
    propagation: list[int]
    rec_attr_set: int
    rec_attr_clr: int
    data: str
    bind: bool
    recursive: bool
    tmpcopyup: bool
    idmap: bool
    recursive_idmap: bool
    FIELDS = {
        "flags": 0,                 # MS_* to set (includes MS_BIND|MS_REC for bind/rbind)
        "clear_flags": 0,           # MS_* explicitly turned off (rw, suid, dev, exec...)
        "propagation": list,        # MS_PRIVATE|MS_REC etc., in order
        "rec_attr_set": 0,          # MOUNT_ATTR_* for mount_setattr(AT_RECURSIVE)
        "rec_attr_clr": 0,
        "data": "",                 # filesystem options (mode=755,size=64k...), comma-joined
        "bind": False,
        "recursive": False,         # rbind
        "tmpcopyup": False,
        "idmap": False,             # idmap or ridmap asked (rootfs/idmap.py)
        "recursive_idmap": False,
    }

    @property
    def remount_flags(self) -> int:
        """Flags a bind mount needs a second MS_REMOUNT|MS_BIND call for."""
        return self.flags & ~_NOT_REMOUNT_FLAGS


def parse_mount_options(options: list[str]) -> MountOptions:
    """Translate runc's mount option vocabulary; unknown options go to the fs data string."""
    o = MountOptions()
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            if clear:
                o.flags &= ~flag
                o.clear_flags |= flag
            else:
                o.flags |= flag
                o.clear_flags &= ~flag
        elif opt in ("bind", "rbind"):
            o.bind = True
            o.flags |= linux.MS_BIND
            if opt == "rbind":
                o.recursive = True
                o.flags |= linux.MS_REC
        elif opt in PROPAGATION:
            o.propagation.append(PROPAGATION[opt])
        elif opt in _REC_ATTRS:
            clear, attr = _REC_ATTRS[opt]
            if clear:
                o.rec_attr_set &= ~attr
                o.rec_attr_clr |= attr
            else:
                o.rec_attr_set |= attr
                o.rec_attr_clr &= ~attr
        elif opt in _REC_ATIME:
            o.rec_attr_set = (o.rec_attr_set & ~linux.MOUNT_ATTR__ATIME) | _REC_ATIME[opt]
            o.rec_attr_clr |= linux.MOUNT_ATTR__ATIME
        elif opt == "tmpcopyup":
            o.tmpcopyup = True
        elif opt in ("idmap", "ridmap"):
            o.idmap = True
            o.recursive_idmap = o.recursive_idmap or opt == "ridmap"
        elif opt:
            data.append(opt)
    o.data = ",".join(data)
    return o


# --------------------------------------------------------------------------- flag helpers

def current_mount_flags(fd_or_path) -> int:
    """The MS_* flags the mount holding `fd_or_path` has now (for remounts that keep them)."""
    f_flag = os.statvfs(fd_or_path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


def _remount_bind(target: str, set_flags: int, clear_flags: int = 0) -> None:
    """MS_REMOUNT|MS_BIND keeping the flags not asked to change: a remount sets *all* of them,
    and in a user namespace dropping a locked one (nosuid on a host mount) fails with EPERM."""
    keep = current_mount_flags(target) & ~clear_flags
    if set_flags & _ATIME_FLAGS or clear_flags & _ATIME_FLAGS:
        keep &= ~_ATIME_FLAGS
    kernel.KERNEL.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | keep | set_flags)


def _apply_after(target: str, o: MountOptions) -> None:
    """The parts of a mount that are separate calls: recursive attributes, then propagation."""
    if o.rec_attr_set or o.rec_attr_clr:
        fd = os.open(target, os.O_PATH | os.O_CLOEXEC)
        try:
            kernel.KERNEL.mount_setattr(fd, "", linux.AT_EMPTY_PATH | linux.AT_RECURSIVE,
                                o.rec_attr_set, o.rec_attr_clr)
        finally:
            os.close(fd)
    for prop in o.propagation:
        kernel.KERNEL.mount(None, target, None, prop)


# --------------------------------------------------------------------------- one mounts[i]

class MountContext:
    """What every mount of one container shares."""

    def __init__(self, root_fd: int, root_path: str, bundle: str, in_userns: bool, cgroupns: bool):
        self.root_fd = root_fd
        self.root_path = root_path      # the real path of root_fd, for the /proc check
        self.bundle = bundle
        self.in_userns = in_userns
        self.cgroupns = cgroupns
        self.fetch_source = None        # index -> fd: the runtime opens a source we may not reach


def mount_entry(ctx: MountContext, index: int, m) -> None:
    """Perform cfg.mounts[index]; errors name the entry."""
    where = f"mounts[{index}]"
    o = parse_mount_options(m.options)
    if m.type == "bind":
        o.bind = True
        o.flags |= linux.MS_BIND
    if m.uid_mappings or m.gid_mappings:
        o.idmap = True  # mappings on a mount make it idmapped (runc; rootfs/idmap.is_idmapped)
    if o.idmap and not o.bind:
        raise OCIError(f"{where}: idmapped mounts (idmap, ridmap, uidMappings) are supported for bind mounts only")
    try:
        if o.idmap:
            _mount_idmapped(ctx, index, m, o)
        elif o.bind:
            _mount_bind(ctx, index, where, m, o)
        elif m.type in ("cgroup", "cgroup2"):
            _mount_cgroup(ctx, m, o)
        else:
            _mount_fs(ctx, m, o)
    except OCIError as e:
        if str(e).startswith(where):
            raise
        raise OCIError(f"{where}: {e}") from None
    except OSError as e:
        raise os_error(f"{where}: mount {m.source or m.type} to {m.destination}", e) from None


def _reopen(ctx: MountContext, dest: str) -> int:
    """An O_PATH fd of what now sits at `dest`: the fd we mounted onto still names the
    directory *under* the new mount, and remounts must reach the mount itself."""
    return open_in_root(ctx.root_fd, dest, os.O_PATH)


def _bind_source(ctx: MountContext, index: int, where: str, source: str) -> int:
    path = source if os.path.isabs(source) else os.path.join(ctx.bundle, source)
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except PermissionError:
        if ctx.fetch_source is None or not ctx.in_userns:
            raise OCIError(f"{where}.source: {path}: permission denied") from None
        # Our root is a user namespace's: a path only host root may reach (a 0700 directory on
        # the way) is opened by the runtime for us, as runc does.
        return ctx.fetch_source(index)
    except FileNotFoundError:
        raise OCIError(f"{where}.source: {path}: no such file or directory") from None
    except OSError as e:
        raise os_error(f"{where}.source: {path}", e) from None


def _mount_idmapped(ctx: MountContext, index: int, m, o: MountOptions) -> None:
    """The runtime makes the idmapped tree (rootfs/idmap.py); we put it in place."""
    if ctx.fetch_source is None:
        raise OCIError("internal error: no runtime to make the idmapped mount")
    tree = ctx.fetch_source(index, True)
    try:
        is_dir = stat.S_ISDIR(os.fstat(tree).st_mode)
        dst = make_mount_target(ctx.root_fd, m.destination, is_dir)
        try:
            _check_proc_destination(ctx, dst, m, bind_src=tree)
            kernel.KERNEL.move_mount(tree, "", dst, "", linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
        finally:
            os.close(dst)
    finally:
        os.close(tree)
    _finish(ctx, m.destination, o, remount_bind=bool(o.remount_flags))


def _mount_bind(ctx: MountContext, index: int, where: str, m, o: MountOptions) -> None:
    src = _bind_source(ctx, index, where, m.source)
    try:
        is_dir = stat.S_ISDIR(os.fstat(src).st_mode)
        dst = make_mount_target(ctx.root_fd, m.destination, is_dir)
        try:
            _check_proc_destination(ctx, dst, m, bind_src=src)
            kernel.KERNEL.mount(fd_path(src), fd_path(dst), None, linux.MS_BIND | (linux.MS_REC if o.recursive else 0))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    # Like runc: only flags to *set* warrant the remount ("rw" alone leaves the bind as it is).
    _finish(ctx, m.destination, o, remount_bind=bool(o.remount_flags))


def _finish(ctx: MountContext, dest: str, o: MountOptions, remount_bind: bool) -> None:
    fd = _reopen(ctx, dest)
    try:
        target = fd_path(fd)
        if remount_bind:
            _remount_bind(target, o.remount_flags, o.clear_flags)
        _apply_after(target, o)
    finally:
        os.close(fd)


def _mount_fs(ctx: MountContext, m, o: MountOptions) -> None:
    dest = m.destination
    dst = make_mount_target(ctx.root_fd, dest, is_dir=True)
    old_dir = -1
    try:
        before = os.fstat(dst)
        _check_proc_destination(ctx, dst, m)
        if m.type in ("proc", "sysfs"):
            _check_ordinary_dir(ctx, dest, m.type, dst)
        flags = o.flags
        # A read-only tmpfs is mounted rw and turned ro once we are done with it: we may still
        # chmod it to the image's mode, fill it (tmpcopyup), or make device nodes in /dev.
        defer_ro = m.type == "tmpfs" and bool(flags & linux.MS_RDONLY)
        if defer_ro:
            flags &= ~linux.MS_RDONLY
        if o.tmpcopyup and m.type == "tmpfs":
            # Keep a handle on the image's directory: it stays reachable under the new mount.
            old_dir = open_in_root(ctx.root_fd, dest, os.O_RDONLY | os.O_DIRECTORY)
        was_bound = _mount_fs_at(ctx, m, fd_path(dst), flags, o.data)
    finally:
        os.close(dst)
    fd = _reopen(ctx, dest)
    try:
        target = fd_path(fd)
        if was_bound and o.remount_flags:
            _remount_bind(target, o.remount_flags, o.clear_flags)
        if m.type == "tmpfs":
            if "mode=" not in o.data:
                os.chmod(target, stat.S_IMODE(before.st_mode))  # keep the image's directory mode
            if old_dir >= 0:
                new_dir = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    copy_tree(old_dir, new_dir)
                finally:
                    os.close(new_dir)
            if defer_ro and dest != "/dev":  # /dev: finalize_rootfs, after the device nodes
                kernel.KERNEL.mount(None, target, None, linux.MS_REMOUNT | o.flags, o.data or None)
        _apply_after(target, o)
    finally:
        os.close(fd)
        if old_dir >= 0:
            os.close(old_dir)


_USERNS_FALLBACK = {"sysfs": "/sys", "mqueue": "/dev/mqueue"}


def _mount_fs_at(ctx: MountContext, m, target: str, flags: int, data: str) -> bool:
    """mount(2) the filesystem; True when it had to bind the host's instance instead."""
    source = m.source or m.type
    try:
        kernel.KERNEL.mount(source, target, m.type, flags, data or None)
    except OSError as e:
        if m.type == "devpts" and e.errno == errno.EINVAL and "gid=" in data:
            # In a user namespace without gid 5 mapped, devpts refuses gid=5: drop it (as crun does).
            data = ",".join(d for d in data.split(",") if not d.startswith("gid="))
            kernel.KERNEL.mount(source, target, m.type, flags, data or None)
        elif (m.type in _USERNS_FALLBACK and e.errno == errno.EPERM and ctx.in_userns
              and os.path.isdir(_USERNS_FALLBACK[m.type])):
            # A user namespace without its own network (sysfs) or IPC (mqueue) namespace may
            # not mount a fresh instance: give it the host's, with the flags asked for (as runc).
            kernel.KERNEL.mount(_USERNS_FALLBACK[m.type], target, None, linux.MS_BIND | linux.MS_REC)
            return True
        else:
            raise
    return False


# --------------------------------------------------------------------------- /proc guards

# Files under /proc that lxcfs legitimately bind-mounts over (runc's allow-list).
_PROC_ALLOWED = frozenset({
    "cpuinfo", "diskstats", "meminfo", "stat", "swaps", "uptime", "loadavg", "slabinfo",
    "net/dev", "sys/kernel/ns_last_pid", "sys/crypto/fips_enabled",
})


def _check_proc_destination(ctx: MountContext, dst_fd: int, m, bind_src: int | None = None) -> None:
    """Only a procfs may sit on /proc, and nothing but lxcfs-style files below it: a mount
    there would hide the masks and read-only paths applied later (CVE-2019-16884 family).
    A bind onto /proc (`bind_src`) must bring the root of a procfs, whatever its `type` says:
    `"type": "proc"` with `"options": ["rbind"]` is a bind of its source, not a fresh procfs."""
    real = os.readlink(fd_path(dst_fd))
    proc = ctx.root_path.rstrip("/") + "/proc"
    if real == proc:
        if bind_src is not None:
            if not _is_procfs_root(bind_src):
                raise OCIError(f"{m.destination} cannot be mounted because its source is not the root of a procfs")
        elif m.type != "proc":
            raise OCIError(f"{m.destination} cannot be mounted because it is not of type proc")
    elif real.startswith(proc + "/"):
        if real[len(proc) + 1:] not in _PROC_ALLOWED:
            raise OCIError(f"{m.destination} cannot be mounted because it is inside /proc")


_PROC_ROOT_INO = 1


def _is_procfs_root(fd: int) -> bool:
    return os.fstat(fd).st_ino == _PROC_ROOT_INO and fs_magic(fd_path(fd)) == PROC_SUPER_MAGIC


def _check_ordinary_dir(ctx: MountContext, dest: str, fstype: str, target_fd: int) -> None:
    """proc and sysfs go on a real directory, never through a final symlink (CVE-2019-19921).

    The re-open without following must find the very directory we are about to mount on
    (`target_fd`): otherwise the image was changed under us between the two lookups."""
    fd = open_in_root(ctx.root_fd, dest, os.O_PATH | os.O_NOFOLLOW)
    try:
        here, target = os.fstat(fd), os.fstat(target_fd)
        if not stat.S_ISDIR(here.st_mode) or (here.st_dev, here.st_ino) != (target.st_dev, target.st_ino):
            raise OCIError(f"filesystem {fstype!r} must be mounted on ordinary directory ({dest})")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- tmpcopyup

def copy_tree(src_dir: int, dst_dir: int) -> None:
    """Copy a directory's contents between two open directory fds, keeping type, mode,
    owner and times (like `cp -a` without hard links and xattrs).  Nothing is followed."""
    with os.scandir(src_dir) as it:
        names = [e.name for e in it]
    for name in names:
        st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst_dir)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_dir)
            try:
                copy_tree(s, d)
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISREG(mode):
            _copy_file(src_dir, dst_dir, name)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
        else:  # devices, fifos, sockets
            os.mknod(name, mode, st.st_rdev, dir_fd=dst_dir)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_dir)  # after chown, which drops setuid
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _copy_file(src_dir: int, dst_dir: int, name: str) -> None:
    s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600, dir_fd=dst_dir)
        try:
            while os.sendfile(d, s, None, 1 << 20) > 0:
                pass
        finally:
            os.close(d)
    finally:
        os.close(s)


# --------------------------------------------------------------------------- cgroup mounts

def host_is_unified() -> bool:
    """True on a pure cgroup v2 host (/sys/fs/cgroup is itself cgroup2)."""
    try:
        return fs_magic("/sys/fs/cgroup") == CGROUP2_SUPER_MAGIC
    except OSError:
        return False


_own_cgroup2: str | None = None  # this process's cgroup2 path before any cgroup namespace


def remember_own_cgroup2() -> None:
    """Note our cgroup2 path (the container's cgroup) while the host's view still shows it."""
    global _own_cgroup2
    try:
        with open("/proc/self/cgroup") as f:
            _own_cgroup2 = next((line[3:].rstrip("\n") for line in f if line.startswith("0::")), None)
    except OSError:
        _own_cgroup2 = None


def _mount_cgroup(ctx: MountContext, m, o: MountOptions) -> None:
    """cgroup2 (or "cgroup" on a pure v2 host): mount the fs.  "cgroup" on a v1/hybrid host:
    a tmpfs with one entry per hierarchy, like runc.  Partial: no cgroup v1 'cgroup.clone_children'
    tuning, no rootless EPERM fallbacks for v1.

    In a user namespace the kernel may refuse a fresh cgroup2 (EPERM, or EBUSY over the host's
    instance that a bind of /sys brought along): then, as runc does, the container's own cgroup
    directory is bound there instead, which is what a cgroup namespace would have shown."""
    if m.type == "cgroup2" or host_is_unified():
        dst = make_mount_target(ctx.root_fd, m.destination, is_dir=True)
        remount_bind = False
        try:
            kernel.KERNEL.mount("cgroup2", fd_path(dst), "cgroup2", o.flags, o.data or None)
        except OSError as e:
            if not (ctx.in_userns and e.errno in (errno.EPERM, errno.EBUSY)):
                raise
            own = f"/sys/fs/cgroup{_own_cgroup2}" if _own_cgroup2 else None
            if own is None or not os.path.isdir(own):
                raise  # never widen to the host's whole tree
            kernel.KERNEL.mount(own, fd_path(dst), None, linux.MS_BIND | linux.MS_REC)
            remount_bind = True
        finally:
            os.close(dst)
        _finish(ctx, m.destination, o, remount_bind=remount_bind)
        return
    _mount_cgroup_v1(ctx, m, o)


def _mount_cgroup_v1(ctx: MountContext, m, o: MountOptions) -> None:
    dest = m.destination
    dst = make_mount_target(ctx.root_fd, dest, is_dir=True)
    try:
        kernel.KERNEL.mount("tmpfs", fd_path(dst), "tmpfs", o.flags & ~linux.MS_RDONLY, "mode=755")
    finally:
        os.close(dst)
    attr_flags = o.flags & ~_NOT_REMOUNT_FLAGS
    for name, host_dir, fstype, fsdata in cgroup_v1_hierarchies(ctx.cgroupns):
        sub = mkdir_all_in_root(ctx.root_fd, f"{dest}/{name}")
        try:
            target = fd_path(sub)
            if ctx.cgroupns:
                # A fresh mount shows the cgroup namespace's root, i.e. the container's cgroup.
                kernel.KERNEL.mount("cgroup", target, fstype, attr_flags, fsdata or None)
                continue
            if not os.path.isdir(host_dir):
                continue
            kernel.KERNEL.mount(host_dir, target, None, linux.MS_BIND)
        finally:
            os.close(sub)
        if attr_flags:
            fd = _reopen(ctx, f"{dest}/{name}")
            try:
                _remount_bind(fd_path(fd), attr_flags, o.clear_flags)
            finally:
                os.close(fd)
    fd = _reopen(ctx, dest)
    try:
        _add_comount_links(fd)
        if o.flags & linux.MS_RDONLY:
            kernel.KERNEL.mount(None, fd_path(fd), None, linux.MS_REMOUNT | attr_flags, "mode=755")
        _apply_after(fd_path(fd), o)
    finally:
        os.close(fd)


def _add_comount_links(dir_fd: int) -> None:
    """cpu -> cpu,cpuacct for co-mounted controllers, as every v1 distro lays them out."""
    names = os.listdir(fd_path(dir_fd))
    for name in names:
        if "," not in name:
            continue
        for ctrl in name.split(","):
            if ctrl not in names:
                kernel.KERNEL.symlink(name, ctrl, dir_fd)  # O_PATH dir fds work for *at()


def cgroup_v1_hierarchies(in_cgroupns: bool = False) -> list[tuple[str, str, str, str]]:
    """(dir name, host dir of our cgroup, fstype, mount data) per hierarchy we are in.

    Read from /proc/self/cgroup and /proc/self/mountinfo: the init has already joined the
    container's cgroups, so its own paths are the container's.  In a cgroup namespace both are
    shown relative to its root, the host's mounts with roots outside it ("/.."): the container
    then gets a fresh mount of each hierarchy and needs no host directory ("").
    """
    mounts = _cgroup_mounts()
    out = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            if hid == "0":
                key, fstype, data = "", "cgroup2", ""
            else:
                key, fstype, data = ctrls, "cgroup", ctrls
            mnt = mounts.get((fstype, key))
            if mnt is None:
                continue
            root, mountpoint = mnt
            rel = os.path.relpath(path, root) if path.startswith(root) else None
            name = os.path.basename(mountpoint)
            if rel is None or rel.startswith(".."):
                if in_cgroupns:
                    out.append((name, "", fstype, data))
                continue
            out.append((name, os.path.normpath(os.path.join(mountpoint, rel)), fstype, data))
    return out


def _cgroup_mounts() -> dict[tuple[str, str], tuple[str, str]]:
    """(fstype, sorted controllers) -> (mount root, mount point) of the host's cgroup mounts."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for m in mountinfo.read():
        if m.fstype not in ("cgroup", "cgroup2"):
            continue
        if m.fstype == "cgroup2":
            key = ""
        else:
            opts = m.super_options.split(",")
            key = ",".join(o for o in opts if o not in _CGROUP_NON_CONTROLLER_OPTS
                           and not o.startswith("release_agent="))
        found.setdefault((m.fstype, key), (m.root, m.mountpoint))
    return {(t, _sorted_ctrls(k)): v for (t, k), v in found.items()}


_CGROUP_NON_CONTROLLER_OPTS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode",
                               "nosuid", "nodev", "noexec", "relatime", "favordynmods"}


def _sorted_ctrls(key: str) -> str:
    return ",".join(sorted(key.split(","))) if key else key


# --------------------------------------------------------------------------- after pivot_root

def _fd_or_path(fd: int, path: str) -> str:
    """/proc/self/fd/N when the container has a /proc, else the path (we are already chrooted
    in the container, where no symlink can reach the host)."""
    target = fd_path(fd)
    return target if os.path.exists(target) else path


def mask_path(root_fd: int, path: str) -> None:
    """Hide `path`: /dev/null over a file, an empty read-only tmpfs over a directory."""
    try:
        fd = open_in_root(root_fd, path, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        target = _fd_or_path(fd, path)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            kernel.KERNEL.mount("tmpfs", target, "tmpfs", linux.MS_RDONLY)
            return
        null = open_real_dev_null(root_fd, "mask paths")
        try:
            kernel.KERNEL.mount(_fd_or_path(null, "/dev/null"), target, None, linux.MS_BIND)
        finally:
            os.close(null)
    except OSError as e:
        raise os_error(f"mask {path}", e) from None
    finally:
        os.close(fd)


def open_real_dev_null(root_fd: int, purpose: str) -> int:
    """An O_PATH fd of the container's /dev/null, checked to be the 1:3 device: an image could
    plant a symlink or a file there to turn every mask into a bind of something writable
    (CVE-2025-31133), or have the init's stdio reopened on it.  `purpose` starts the error."""
    fd = open_in_root(root_fd, "/dev/null", os.O_PATH | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 1 or os.minor(st.st_rdev) != 3:
        os.close(fd)
        raise OCIError(f"{purpose}: /dev/null is not the null device")
    return fd


def readonly_path(root_fd: int, path: str) -> None:
    """Bind `path` onto itself and make that bind read-only, keeping nosuid/nodev/noexec."""
    try:
        fd = open_in_root(root_fd, path, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        target = _fd_or_path(fd, path)
        kernel.KERNEL.mount(target, target, None, linux.MS_BIND | linux.MS_REC)
        nfd = open_in_root(root_fd, path, os.O_PATH)
        try:
            _remount_bind(_fd_or_path(nfd, path), linux.MS_RDONLY)
        finally:
            os.close(nfd)
    except OSError as e:
        raise os_error(f"readonly path {path}", e) from None
    finally:
        os.close(fd)


def remount_root_readonly() -> None:
    try:
        _remount_bind("/", linux.MS_RDONLY)
    except OSError as e:
        raise os_error("make the root read-only", e) from None


def remount_dev_readonly(mounts) -> None:
    """A read-only /dev tmpfs was mounted rw so the device nodes could be made; close it now."""
    for m in mounts:
        if m.destination == "/dev" and m.type == "tmpfs":
            o = parse_mount_options(m.options)
            if o.flags & linux.MS_RDONLY:
                try:
                    kernel.KERNEL.mount(None, "/dev", None, linux.MS_REMOUNT | (o.flags & ~_NOT_REMOUNT_FLAGS),
                                o.data or None)
                except OSError as e:
                    raise os_error("remount /dev read-only", e) from None
