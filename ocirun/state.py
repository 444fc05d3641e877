"""The state directory of one container: `<root>/<id>/`.

Files in it:
  state.json  what `state`, `kill`, `delete`, … need after `create` has exited; written atomically
              (temp file + rename) so a reader never sees half a document.
  exec.fifo   exists between `create` and `start`: the init blocks opening it for writing, `start`
              opens it for reading and so releases the init.  Its presence means "created".
  cgroup.json the cgroup section of state.json, written once before anything is created: what
              `delete --force` kills and removes when state.json itself is unreadable.
  (flock)     every command that changes a container holds an exclusive flock on the directory
              itself, so concurrent commands on one id are serialised.

Everything here is private to root whatever the caller's umask (runc's modes): the root and the
container directories 0700, files 0600 (state.json holds the annotations, hook arguments and
environment: secrets).  exec.fifo is 0622 inside its 0700 directory: only root can reach it by
path, and the init, which may no longer be root, reopens it through an fd it already holds.

The init's pid alone cannot identify it: pids are reused.  We store the process start time
(field 22 of /proc/<pid>/stat, clock ticks since boot) and treat a pid whose start time differs
as "stopped" — like crun's status.c and runc's `InitProcessStartTime`.

The spine every command after `create` stands on: `ContainerState` (state.json's fields, with a
format version), the status and what each operation may do in it (`can_start`, `can_kill`, …:
one table with runc's error words), and `Container.open` (lock, read, status, cgroup).
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from . import jsonio
from .errors import OCIError, os_words

DEFAULT_ROOT = "/run/ocirun"
STATE_FILE = "state.json"
FIFO_NAME = "exec.fifo"
NET_DEVICES_RECORD = "netdevices.json"  # network.py: the linux.netDevices moved in, to give back
RECOVERY_FILE = "cgroup.json"
# The config.json the container was created from, as create read it: `exec` builds its process
# from this copy, not from the bundle, which may have changed (or gone) since.
CONFIG_FILE = "config.json"
DIR_MODE = 0o700
FILE_MODE = 0o600
_OLD_ROOT_MODE = 0o711  # what ocirun made before: tightened when found (see _private_root)

# runc's rule for ids (its regexp ^[\w+-\.]+$, ASCII as in Go): letters, digits, and _ + - . ;
# never "." or ".." (would escape the root).  A set, not `re` (ARCHITECTURE.md, Startup speed).
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def validate_id(cid: str) -> None:
    if not cid:
        raise OCIError("container id cannot be empty")
    if cid in (".", "..") or not _ID_CHARS.issuperset(cid):
        raise OCIError(f"invalid container id format: {cid}")


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks, or None if it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def pid_alive(pid: int, start_time: int | None) -> bool:
    if pid <= 0:
        return False
    st = proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def pid_namespace_members(init: int, start_time: int | None) -> list[int]:
    """Every process in the pid namespace whose pid 1 is host pid `init` (started at
    `start_time`), found by its /proc/PID/ns/pid link (the owner of a user namespace may read
    its processes' links).  A container that others joined (a pod's sandbox) includes theirs.
    OCIError when the init's namespace cannot be read, or the init is no longer that process
    (a reused pid would name another namespace, maybe the host's)."""
    try:
        ns = os.readlink(f"/proc/{init}/ns/pid")
    except OSError as e:
        raise OCIError(f"reading the pid namespace of the container's init {init}: {os_words(e)}") from None
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    members.append(int(name))
            except OSError:
                continue  # exited meanwhile, or not ours to read: not in a namespace we own
    if not pid_alive(init, start_time):
        raise OCIError("container not running")
    return sorted(members)


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class StateDir:
    """One container's state directory.  Use `StateDir.new` (create) or `StateDir.open`."""

    def __init__(self, root: str, cid: str):
        self.root = root
        self.id = cid
        self.path = os.path.join(root, cid)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ creation / lookup
    @classmethod
    def new(cls, root: str, cid: str) -> "StateDir":
        validate_id(cid)
        sd = cls(root, cid)
        try:
            _private_root(root)
            os.mkdir(sd.path, DIR_MODE)
            os.chmod(sd.path, DIR_MODE)  # mkdir's mode went through the caller's umask
        except FileExistsError:
            raise OCIError(f"container with id exists: {cid}") from None
        except OSError as e:
            raise OCIError(f"create state directory {e.filename or sd.path}: {os_words(e)}") from None
        sd.lock()
        return sd

    @classmethod
    def open(cls, root: str, cid: str, lock: bool = True) -> "StateDir":
        validate_id(cid)
        sd = cls(root, cid)
        if lock:
            try:
                sd.lock()
            except FileNotFoundError:
                raise OCIError(f"container does not exist: {cid}") from None
            except OSError as e:  # another user's state (0700): say so, not "does not exist"
                raise OCIError(f"container {cid}: {e.filename or sd.path}: {os_words(e)}") from None
        try:
            os.stat(os.path.join(sd.path, STATE_FILE))
        except FileNotFoundError:
            sd.unlock()
            raise OCIError(f"container does not exist: {cid}") from None
        except OSError as e:
            sd.unlock()
            raise OCIError(f"container {cid}: {e.filename}: {os_words(e)}") from None
        return sd

    # ------------------------------------------------------------------ locking
    def lock(self) -> None:
        """Take the directory's flock; FileNotFoundError if it is gone (also while we waited).
        OCIError once another command has held it for LOCK_WAIT_STEPS protocol steps: `create`
        holds it through its hooks, and nothing may wait on another process forever."""
        while self._lock_fd is None:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _flock_with_deadline(fd, os.path.basename(self.path))
                # The holder we waited for may have removed the directory (delete), and a new
                # create may have made another one of the same name: our lock must be on it.
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self._lock_fd, fd = fd, -1
            finally:
                if fd >= 0:
                    os.close(fd)

    @property
    def lock_fd(self) -> int:
        """The fd holding our flock (-1 when unlocked); forked children must close it."""
        return -1 if self._lock_fd is None else self._lock_fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ files
    @property
    def fifo_path(self) -> str:
        return os.path.join(self.path, FIFO_NAME)

    def make_fifo(self) -> str:
        # 0622: the init may already have switched to a non-root user when it opens it.
        old = os.umask(0)
        try:
            os.mkfifo(self.fifo_path, 0o622)
        finally:
            os.umask(old)
        return self.fifo_path

    def has_fifo(self) -> bool:
        return os.path.exists(self.fifo_path)

    def read(self) -> "ContainerState":
        """state.json as a ContainerState, checked field by field: OCIError "corrupt state
        file" if it is not ours, or naming the format version if a newer ocirun wrote it."""
        return ContainerState.from_json(self.id, self.read_raw())

    def read_raw(self):
        """state.json as JSON, whatever its shape (only `delete --force` wants that)."""
        try:
            with open(os.path.join(self.path, STATE_FILE), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise OCIError(f"container does not exist: {self.id}") from None
        except OSError as e:
            raise OCIError(f"container {self.id}: read state file: {os_words(e)}") from None
        try:
            return jsonio.loads(data)
        except (ValueError, RecursionError) as e:
            raise OCIError(f"container {self.id}: corrupt state file: {_one_line(str(e))}") from None

    def write(self, state: "ContainerState") -> None:
        write_private(os.path.join(self.path, STATE_FILE), jsonio.dumps(state.to_json()).encode())

    def write_recovery(self, cgroup_section) -> None:
        write_private(os.path.join(self.path, RECOVERY_FILE), jsonio.dumps(cgroup_section).encode())

    def write_config(self, doc: dict) -> None:
        write_private(os.path.join(self.path, CONFIG_FILE), jsonio.dumps(doc).encode())

    def read_config(self) -> dict | None:
        """The container's config as create saved it; None for a container made before this
        copy existed (an older ocirun): the caller falls back to the bundle's."""
        try:
            with open(os.path.join(self.path, CONFIG_FILE), "rb") as f:
                doc = jsonio.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            raise OCIError(f"container {self.id}: its saved config.json is unreadable: {_one_line(str(e))}") from None
        if not isinstance(doc, dict):
            raise OCIError(f"container {self.id}: its saved config.json is not a JSON object")
        return doc

    def read_recovery(self):
        """The cgroup section as create first wrote it, or None."""
        try:
            with open(os.path.join(self.path, RECOVERY_FILE), "rb") as f:
                return jsonio.loads(f.read())
        except (OSError, ValueError, RecursionError):
            return None

    def remove(self) -> None:
        if os.path.islink(self.path):
            # Never ours (we make directories): remove the link, nothing it points to (runc too).
            os.unlink(self.path)
            self.unlock()
            return
        for name in os.listdir(self.path) if os.path.isdir(self.path) else ():
            path = os.path.join(self.path, name)
            try:
                os.unlink(path)
            except IsADirectoryError:  # restore's bind of the rootfs for CRIU, left by a kill -9
                _detach_and_rmdir(path)
            except OSError as e:
                if e.errno == errno.EBUSY:  # a mount point (network.py pins a netns here)
                    _detach_and_unlink(path)
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        self.unlock()


LOCK_WAIT_STEPS = 5


def _flock_with_deadline(fd: int, cid: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return  # the usual case: nobody holds it
    except BlockingIOError:
        pass
    from .process.channel import step_timeout  # only when contended: not on the short commands' path
    # The holder may legitimately take a while: `create` holds the lock through hooks and their
    # own timeouts.  Five protocol steps (300 s by default) is room for those, and still an end.
    limit = LOCK_WAIT_STEPS * step_timeout()
    deadline = time.monotonic() + limit
    pause = 0.001
    while True:
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OCIError(f"container {cid} is busy: another ocirun command has held it for "
                               f"{limit:g}s (a hook without a timeout?)") from None


def _private_root(root: str) -> None:
    """The state root, 0700 whatever the umask.  A root an older ocirun made (0711, ours) is
    tightened; one the user made with other modes is left as it is: the container directories
    inside are 0700 anyway."""
    try:
        os.mkdir(root, DIR_MODE)
    except FileExistsError:
        st = os.stat(root)
        if stat_mode(st.st_mode) == _OLD_ROOT_MODE and st.st_uid == os.geteuid():
            os.chmod(root, DIR_MODE)
        return
    except FileNotFoundError:
        _make_private_parents(root)
        try:
            os.mkdir(root, DIR_MODE)
        except FileExistsError:
            return
    os.chmod(root, DIR_MODE)


def _make_private_parents(root: str) -> None:
    """The missing parents of `root`, as `mkdir -p` but each 0700 (runc's too): a parent the
    umask left writable to others would let them swap the state root for one of their own,
    whose state.json names any host pid for our `kill`."""
    missing = []
    parent = os.path.dirname(os.path.abspath(root))  # a relative root: dirname ends at "" (forever)
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, DIR_MODE)  # 0700 exactly: a umask of 0777 would leave even us out


def stat_mode(mode: int) -> int:
    return mode & 0o7777


def write_private(path: str, data: bytes) -> None:
    """Write `path` atomically (temp file + rename), mode 0600 whatever the umask."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away, a stale temp file have others
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:  # ENOSPC, EDQUOT, EROFS of the state root: say which file, leave no temp file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OCIError(f"write {path}: {os_words(e)}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------ the shape of state.json

# The format of state.json this release writes, in its "state_version" field.  Releases before
# the field existed wrote the same fields without it: a missing field means version 1.  Raise it
# when a field changes meaning or a reader would misread the new shape; a state directory of a
# newer format is then refused by name (rather than half-understood) by an older ocirun.
STATE_VERSION = 1


class ContainerState:
    """What state.json holds: everything the commands after `create` need.  A plain class with
    declared fields (no dataclasses: ARCHITECTURE.md, Startup speed); `from_json` checks a loaded document
    field by field, `to_json` is what `StateDir.write` stores."""

    state_version: int
    oci_version: str
    id: str
    pid: int                   # the init's host pid; 0 until create has forked it
    start_time: int | None     # its start time (see proc_start_time): a reused pid is not ours
    bundle: str
    rootfs: str
    created: str               # RFC 3339, UTC
    owner: str
    annotations: dict          # str -> str
    hooks: dict                # "poststart"/"poststop" -> config.json's hook objects (run after create)
    cgroup: dict | None        # Manager.to_state()
    shared_pid_ns: bool        # no pid namespace of its own: delete kills the init even when stopped
    no_process: bool           # config.json had no `process`: start refuses it (runtime.md)
    shared_rootfs_mount: int | None  # no mount namespace: the mount id of the rootfs bind to detach

    def __init__(self, id: str, bundle: str, rootfs: str, created: str, *, oci_version: str,  # noqa: A002
                 pid: int = 0, start_time: int | None = None, owner: str = "", annotations=None,
                 hooks=None, cgroup: dict | None = None, shared_pid_ns: bool = False,
                 no_process: bool = False, shared_rootfs_mount: int | None = None,
                 state_version: int = STATE_VERSION):
        self.state_version = state_version
        self.oci_version = oci_version
        self.id = id
        self.pid = pid
        self.start_time = start_time
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.owner = owner
        self.annotations = annotations or {}
        self.hooks = hooks or {}
        self.cgroup = cgroup
        self.shared_pid_ns = shared_pid_ns
        self.no_process = no_process
        self.shared_rootfs_mount = shared_rootfs_mount

    def to_json(self) -> dict:
        doc = {
            "state_version": STATE_VERSION,
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": self.pid,
            "start_time": self.start_time,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
            "hooks": self.hooks,
            "cgroup": self.cgroup,
            "shared_pid_ns": self.shared_pid_ns,
        }
        if self.no_process:
            doc["no_process"] = True
        if self.shared_rootfs_mount is not None:
            doc["shared_rootfs_mount"] = self.shared_rootfs_mount
        return doc

    @classmethod
    def from_json(cls, cid: str, doc) -> "ContainerState":
        """A loaded state.json of container `cid`; OCIError for anything else (see check_state)."""
        if not isinstance(doc, dict):
            raise OCIError(f"container {cid}: corrupt state file: not a JSON object")
        version = doc.get("state_version", 1)
        if not _is_int(version) or version < 1:
            raise OCIError(f"container {cid}: corrupt state file: field state_version: not a positive integer")
        if version > STATE_VERSION:
            raise OCIError(f"container {cid}: state file format version {version} is newer than this ocirun "
                           f"reads (up to {STATE_VERSION}): use the ocirun release that created the container")
        check_state(cid, doc)
        return cls(doc["id"], doc["bundle"], doc["rootfs"], doc["created"], oci_version=doc["ociVersion"],
                   pid=doc["pid"], start_time=doc.get("start_time"), owner=doc.get("owner", ""),
                   annotations=doc.get("annotations"), hooks=doc.get("hooks"), cgroup=doc.get("cgroup"),
                   shared_pid_ns=doc.get("shared_pid_ns", False), no_process=doc.get("no_process", False),
                   shared_rootfs_mount=doc.get("shared_rootfs_mount"), state_version=version)

    def hook_state(self, status: str) -> dict:
        """The runtime-spec state a poststart/poststop hook reads on its stdin."""
        return {"ociVersion": self.oci_version, "id": self.id, "status": status,
                "pid": self.pid if status != STOPPED else 0, "bundle": self.bundle,
                "annotations": self.annotations}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_STR_FIELDS = ("ociVersion", "bundle", "rootfs", "created")


def check_state(cid: str, st) -> None:
    """Refuse a state.json that is not what create wrote (valid JSON of the wrong shape, a
    tampered field): OCIError "container ID: corrupt state file: field X: ..." instead of a
    KeyError or TypeError somewhere later."""
    def bad(field: str, what: str):
        return OCIError(f"container {cid}: corrupt state file: field {field}: {what}")
    if not isinstance(st, dict):
        raise OCIError(f"container {cid}: corrupt state file: not a JSON object")
    if st.get("id") != cid:
        raise bad("id", f"is {_short(st.get('id'))}, not the directory's name")
    for key in _STR_FIELDS:
        if not isinstance(st.get(key), str):
            raise bad(key, "missing or not a string")
    if not isinstance(st.get("owner", ""), str):
        raise bad("owner", "not a string")
    if not _is_int(st.get("pid")) or st["pid"] < 0:
        raise bad("pid", "missing or not a non-negative integer")
    if st.get("start_time") is not None and not _is_int(st["start_time"]):
        raise bad("start_time", "not an integer")
    ann = st.get("annotations")
    if ann is not None and not (isinstance(ann, dict) and all(isinstance(v, str) for v in ann.values())):
        raise bad("annotations", "not an object of strings")
    hooks = st.get("hooks")
    if hooks is not None and not (isinstance(hooks, dict) and all(isinstance(v, list) for v in hooks.values())):
        raise bad("hooks", "not an object of arrays")
    if not isinstance(st.get("shared_pid_ns", False), bool):
        raise bad("shared_pid_ns", "not a boolean")
    cg = st.get("cgroup")
    if cg is not None and not cgroup_section_ok(cg):
        raise bad("cgroup", "not a cgroup record")
    if not isinstance(st.get("no_process", False), bool):
        raise bad("no_process", "not a boolean")
    mnt = st.get("shared_rootfs_mount")
    if mnt is not None and not (_is_int(mnt) and mnt > 0):
        raise bad("shared_rootfs_mount", "not a mount id")


def cgroup_section_ok(cg) -> bool:
    """The shape `Manager.to_state()` writes (load_manager checks where the paths point)."""
    return (isinstance(cg, dict) and isinstance(cg.get("mode"), str)
            and all(isinstance(cg.get(k), dict) and all(isinstance(a, str) and isinstance(b, str)
                                                         for a, b in cg[k].items())
                    for k in ("paths", "mounts"))
            and isinstance(cg.get("created", []), list)
            and all(isinstance(p, str) for p in cg.get("created", [])))


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _detach_and_unlink(path: str) -> None:
    from . import linux
    try:
        linux.umount2(path, linux.MNT_DETACH)
        os.unlink(path)
    except OSError:
        pass


def _detach_and_rmdir(path: str) -> None:
    from . import linux
    try:
        linux.umount2(path, linux.MNT_DETACH)
    except OSError:
        pass  # not (or no longer) a mount point
    try:
        os.rmdir(path)
    except OSError:
        pass


def write_pid_file(path: str, pid: int) -> None:
    """Atomically write `pid` (no newline, like runc) so readers never see an empty file."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)
    except OSError as e:
        raise OCIError(f"write pid file {path}: {os_words(e)}") from None


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _may_be_a_container(os.path.join(root, n, STATE_FILE)))


def _may_be_a_container(state_file: str) -> bool:
    """A state file, or one we may not look at (another user's container: `list` says so)."""
    try:
        return stat.S_ISREG(os.stat(state_file).st_mode)
    except PermissionError:
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ status and its transitions

CREATED, RUNNING, PAUSED, STOPPED = "created", "running", "paused", "stopped"

# What each operation refuses, by status, with the words it fails with (runc's; `{id}` and
# `{status}` are filled in).  A status not listed is allowed; `delete --force` and
# `exec --ignore-paused` lift their refusals (see can_delete, can_exec).
_REFUSED = {
    "start": {RUNNING: "cannot start an already running container",
              PAUSED: "cannot start a container in the paused state",
              STOPPED: "cannot start a container that has stopped"},
    # runtime.md (Delete): deleting a container that is not stopped MUST fail — a created one
    # included (runc 1.1 kills and removes it; engines use --force or kill first).
    "delete": {s: "cannot delete container {id} that is not stopped: {status}" for s in (CREATED, RUNNING, PAUSED)},
    "kill": {STOPPED: "container not running"},
    "exec": {STOPPED: "cannot exec in a stopped container",
             PAUSED: "cannot exec in a paused container (use --ignore-paused)"},
    # A created container may be paused (runc too): its init is frozen on the exec fifo, and
    # `resume` gives it back as created.
    "pause": {s: "container not running" for s in (PAUSED, STOPPED)},
    "resume": {s: "container not paused" for s in (CREATED, RUNNING, STOPPED)},
    "update": {STOPPED: "container {id} is not running: cannot update a stopped container"},
    "events": {STOPPED: "container with id {id} is not running"},
    "checkpoint": {s: "Container cannot be checkpointed in {status} state" for s in (CREATED, STOPPED)},
}


def can_start(status: str) -> bool:
    return status not in _REFUSED["start"]


def can_delete(status: str, force: bool = False) -> bool:
    return force or status not in _REFUSED["delete"]


def can_kill(status: str) -> bool:
    return status not in _REFUSED["kill"]


def can_exec(status: str, ignore_paused: bool = False) -> bool:
    return (ignore_paused and status == PAUSED) or status not in _REFUSED["exec"]


def can_pause(status: str) -> bool:
    return status not in _REFUSED["pause"]


def can_resume(status: str) -> bool:
    return status not in _REFUSED["resume"]


def can_update(status: str) -> bool:
    return status not in _REFUSED["update"]


def can_watch(status: str) -> bool:
    """`events`: only a container that has not stopped has events to report."""
    return status not in _REFUSED["events"]


def can_checkpoint(status: str) -> bool:
    """CRIU dumps processes that run (or are frozen): a created init has not begun its work."""
    return status not in _REFUSED["checkpoint"]


_CAN = {"start": can_start, "delete": can_delete, "kill": can_kill, "exec": can_exec, "pause": can_pause,
        "resume": can_resume, "update": can_update, "events": can_watch, "checkpoint": can_checkpoint}


def refusal(op: str, status: str, cid: str) -> OCIError:
    """The error `op` fails with on a container in `status`."""
    return OCIError(_REFUSED[op][status].format(id=cid, status=status))


def status_of(sd: StateDir, st: ContainerState) -> str:
    if not st.pid or not pid_alive(st.pid, st.start_time):
        return STOPPED
    if _cgroup_paused(st.cgroup):  # first: a created container may be paused too (runc)
        return PAUSED
    if sd.has_fifo():
        return CREATED
    return RUNNING


def _cgroup_paused(section) -> bool:
    """Whether state.json's cgroup section names a frozen cgroup, read without loading the
    cgroup manager (`state`, `kill` and `list` ask on every call).  Paths outside the cgroup
    mounts are not read (a tampered state file); `load_manager` refuses them later anyway."""
    if not isinstance(section, dict) or not isinstance(section.get("paths"), dict):
        return False
    paths = {k: p for k, p in section["paths"].items()
             if isinstance(k, str) and isinstance(p, str) and p.startswith("/sys/fs/cgroup/") and ".." not in p}
    from .cgroups import freezer
    return freezer.paused(section.get("mode", ""), paths)


# ------------------------------------------------------------------ one opened container

class Container:
    """A container opened for one operation: its state directory (locked or not), its checked
    state, its status and its cgroup manager.  The one way every command after `create` gets at
    a container:

        with Container.open(root, cid) as c:   # lock, read, check
            c.require("kill")                  # the status allows it, or runc's error
            c.cgroup()                         # the manager, or None without a cgroup

    The status is computed once, at first use (it reads /proc and the freezer); `refresh_status`
    looks again.  `close` (or leaving the `with`) releases the lock."""

    def __init__(self, sd: StateDir, state: ContainerState):
        self.dir = sd
        self.state = state
        self._status: str | None = None
        self._cgroup = None
        self._cgroup_loaded = False

    @classmethod
    def open(cls, root: str, cid: str, lock: bool = True) -> "Container":
        sd = StateDir.open(root, cid, lock=lock)
        try:
            return cls(sd, sd.read())
        except BaseException:
            sd.unlock()
            raise

    @property
    def id(self) -> str:
        return self.dir.id

    @property
    def status(self) -> str:
        if self._status is None:
            self._status = status_of(self.dir, self.state)
        return self._status

    def refresh_status(self) -> str:
        self._status = None
        return self.status

    def require(self, op: str, **flags) -> None:
        """Raise runc's error unless the status allows `op` (flags: force=, ignore_paused=)."""
        if not _CAN[op](self.status, **flags):
            raise refusal(op, self.status, self.id)

    def cgroup(self):
        """The cgroup manager (loaded once; load_manager checks where its paths point), or None."""
        if not self._cgroup_loaded:
            self._cgroup = load_cgroup(self.state.cgroup)
            self._cgroup_loaded = True
        return self._cgroup

    def processes(self) -> list[int]:
        """The container's processes (host pids): its cgroup's; without a cgroup (rootless, no
        delegated one) those in its own pid namespace; [] once stopped.  OCIError when neither
        tells them from the host's (a container in the host's pid namespace without a cgroup:
        runc's `kill --all` and `ps` fail there too)."""
        cg = self.cgroup()
        if cg is not None:
            return sorted(cg.pids())
        if self.status == STOPPED:
            return []
        if self.state.shared_pid_ns:
            raise OCIError(f"container {self.id} has no cgroup and no pid namespace of its own: "
                           "its processes cannot be told from the others")
        return pid_namespace_members(self.state.pid, self.state.start_time)

    def config(self):
        """The typed config (config.Config) the container was created from: the document
        create saved in the state directory, schema-checked then, parsed again (~0.15 ms); the
        bundle's config.json only for a container an older ocirun made (parsed, not
        schema-checked again: create checked it when it made the container)."""
        from .config import parse_config, read_json
        doc: object = self.dir.read_config()
        if doc is None:
            doc = read_json(os.path.join(self.state.bundle, "config.json"))
        return parse_config(doc, self.state.bundle)

    def public_state(self) -> dict:
        """The runtime-spec state (plus runc's extra fields), as `state` and `list` print it."""
        st, status = self.state, self.status
        out = {
            "ociVersion": st.oci_version,
            "id": st.id,
            "pid": st.pid if status != STOPPED else 0,
            "status": status,
            "bundle": st.bundle,
            "rootfs": st.rootfs,
            "created": st.created,
            "owner": st.owner,
        }
        if st.annotations:
            out["annotations"] = st.annotations
        return out

    def save(self) -> None:
        self.dir.write(self.state)

    def close(self) -> None:
        self.dir.unlock()

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_cgroup(section):
    """A cgroup manager for state.json's cgroup section, or None when there is none."""
    if not section:
        return None
    from .cgroups import load_manager
    return load_manager(section)
