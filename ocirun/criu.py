"""CRIU, the tool that checkpoints and restores process trees, driven the way runc drives it.

`criu swrk FD` serves one client over a SOCK_SEQPACKET socket: we send a `criu_req` (protobuf),
CRIU answers with `criu_resp` messages.  While it works it sends NOTIFY responses at its
milestones ("setup-namespaces", "post-dump", "post-restore", "orphan-pts-master" with a pty
master attached as SCM_RIGHTS…); each is acknowledged with a NOTIFY request before CRIU goes on.
The final response carries the request's type.  CRIU opens the fds we name in the options
(the image directory, the work directory) through /proc/<our pid>/fd, so they need not be
inherited; those it must *inherit* (stdio, namespace files for `inherit_fd`) are passed with
their numbers unchanged.

The messages are CRIU's `rpc.proto` (images/rpc.proto in CRIU's sources): we declare the
fields we use here and let the protobuf library build the classes, so there is no generated
code to keep in step with the library's version.  Field numbers are CRIU's wire format and
never change meaning.

Only `checkpoint` and `restore` import this module (protobuf costs tens of milliseconds).
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import time

from .errors import OCIError, os_words

# How long we wait for each of CRIU's answers.  A dump writes all of the container's memory
# (and with --lazy-pages answers only once the other side has taken every page), so this is
# generous, and OCIRUN_CRIU_TIMEOUT=SECONDS changes it; but a CRIU that hangs must not hang us
# (and the engine) for ever.
DEFAULT_REPLY_TIMEOUT_S = 3600.0
# A question about CRIU itself (its version, what the kernel offers) takes it milliseconds:
# a CRIU that does not answer that is stuck, and a dump's hour is no deadline for it.
QUERY_TIMEOUT_MAX_S = 60.0


def reply_timeout() -> float:
    """OCIRUN_CRIU_TIMEOUT (seconds, positive and finite), else an hour."""
    text = os.environ.get("OCIRUN_CRIU_TIMEOUT", "")
    if not text:
        return DEFAULT_REPLY_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e9:  # nan, inf, 0, negative: no usable deadline
        raise OCIError(f"OCIRUN_CRIU_TIMEOUT={text!r}: want a number of seconds, such as 600")
    return value


def query_timeout() -> float:
    return min(QUERY_TIMEOUT_MAX_S, reply_timeout())


EXIT_TIMEOUT_S = 30.0
# After a failure on our side, how long CRIU gets to notice that we hung up and undo its own
# work (its cgroup yard, mounted in our mount namespace) before it is killed.
ABORT_GRACE_S = 5.0
POLL_S = 1.0  # how often a wait for an answer also looks whether CRIU itself still runs
_MAX_MESSAGE = 10 * 4096  # runc's buffer: a response never comes near it

# criu_req_type
EMPTY, DUMP, RESTORE, CHECK, PRE_DUMP, PAGE_SERVER, NOTIFY = 0, 1, 2, 3, 4, 5, 6
FEATURE_CHECK, VERSION = 9, 10
_TYPE_NAMES = {DUMP: "dump", RESTORE: "restore", PRE_DUMP: "pre-dump", FEATURE_CHECK: "feature check",
               VERSION: "version", NOTIFY: "notify"}

# criu_cg_mode, by the words of runc's --manage-cgroups-mode
CGROUP_MODES = {"": 6, "ignore": 0, "none": 1, "props": 2, "soft": 3, "full": 4, "strict": 5}

# (name, number, kind, repeated); kind: a scalar type or ".message"/":enum" type name
_OPT, _REP = False, True
_SCHEMA = {
    "criu_page_server_info": [("address", 1, "string", _OPT), ("port", 2, "int32", _OPT),
                              ("pid", 3, "int32", _OPT), ("fd", 4, "int32", _OPT)],
    "ext_mount_map": [("key", 1, "string", _OPT), ("val", 2, "string", _OPT)],
    "join_namespace": [("ns", 1, "string", _OPT), ("ns_file", 2, "string", _OPT),
                       ("extra_opt", 3, "string", _OPT)],
    "inherit_fd": [("key", 1, "string", _OPT), ("fd", 2, "int32", _OPT)],
    "cgroup_root": [("ctrl", 1, "string", _OPT), ("path", 2, "string", _OPT)],
    "criu_opts": [
        ("images_dir_fd", 1, "int32", _OPT), ("pid", 2, "int32", _OPT),
        ("leave_running", 3, "bool", _OPT), ("ext_unix_sk", 4, "bool", _OPT),
        ("tcp_established", 5, "bool", _OPT), ("evasive_devices", 6, "bool", _OPT),
        ("shell_job", 7, "bool", _OPT), ("file_locks", 8, "bool", _OPT),
        ("log_level", 9, "int32", _OPT), ("log_file", 10, "string", _OPT),
        ("ps", 11, ".criu_page_server_info", _OPT), ("notify_scripts", 12, "bool", _OPT),
        ("root", 13, "string", _OPT), ("parent_img", 14, "string", _OPT),
        ("track_mem", 15, "bool", _OPT), ("auto_dedup", 16, "bool", _OPT),
        ("work_dir_fd", 17, "int32", _OPT), ("link_remap", 18, "bool", _OPT),
        ("ext_mnt", 23, ".ext_mount_map", _REP), ("manage_cgroups", 24, "bool", _OPT),
        ("cg_root", 25, ".cgroup_root", _REP), ("rst_sibling", 26, "bool", _OPT),
        ("inherit_fd", 27, ".inherit_fd", _REP), ("manage_cgroups_mode", 34, ":criu_cg_mode", _OPT),
        ("external", 37, "string", _REP), ("empty_ns", 38, "uint32", _OPT),
        ("join_ns", 39, ".join_namespace", _REP), ("freeze_cgroup", 44, "string", _OPT),
        ("tcp_skip_in_flight", 46, "bool", _OPT), ("lazy_pages", 48, "bool", _OPT),
        ("status_fd", 49, "int32", _OPT), ("orphan_pts_master", 50, "bool", _OPT),
        ("config_file", 51, "string", _OPT), ("lsm_profile", 53, "string", _OPT),
        ("lsm_mount_context", 63, "string", _OPT),
    ],
    "criu_dump_resp": [("restored", 1, "bool", _OPT)],
    "criu_restore_resp": [("pid", 1, "int32", _OPT)],
    "criu_notify": [("script", 1, "string", _OPT), ("pid", 2, "int32", _OPT)],
    "criu_features": [("mem_track", 1, "bool", _OPT), ("lazy_pages", 2, "bool", _OPT),
                      ("pidfd_store", 3, "bool", _OPT)],
    "criu_req": [("type", 1, ":criu_req_type", _OPT), ("opts", 2, ".criu_opts", _OPT),
                 ("notify_success", 3, "bool", _OPT), ("keep_open", 4, "bool", _OPT),
                 ("features", 5, ".criu_features", _OPT), ("pid", 6, "uint32", _OPT)],
    "criu_version": [("major_number", 1, "int32", _OPT), ("minor_number", 2, "int32", _OPT),
                     ("gitid", 3, "string", _OPT), ("sublevel", 4, "int32", _OPT),
                     ("extra", 5, "int32", _OPT), ("name", 6, "string", _OPT)],
    "criu_resp": [("type", 1, ":criu_req_type", _OPT), ("success", 2, "bool", _OPT),
                  ("dump", 3, ".criu_dump_resp", _OPT), ("restore", 4, ".criu_restore_resp", _OPT),
                  ("notify", 5, ".criu_notify", _OPT), ("ps", 6, ".criu_page_server_info", _OPT),
                  ("cr_errno", 7, "int32", _OPT), ("features", 8, ".criu_features", _OPT),
                  ("cr_errmsg", 9, "string", _OPT), ("version", 10, ".criu_version", _OPT),
                  ("status", 11, "int32", _OPT)],
}
_ENUMS = {
    "criu_req_type": {"EMPTY": 0, "DUMP": 1, "RESTORE": 2, "CHECK": 3, "PRE_DUMP": 4, "PAGE_SERVER": 5,
                      "NOTIFY": 6, "CPUINFO_DUMP": 7, "CPUINFO_CHECK": 8, "FEATURE_CHECK": 9,
                      "VERSION": 10, "WAIT_PID": 11, "PAGE_SERVER_CHLD": 12, "SINGLE_PRE_DUMP": 13},
    "criu_cg_mode": {"IGNORE": 0, "CG_NONE": 1, "PROPS": 2, "SOFT": 3, "FULL": 4, "STRICT": 5, "DEFAULT": 6},
}

_classes: dict | None = None


def messages() -> dict:
    """The message classes by name (built once; proto2, as CRIU's file)."""
    global _classes
    if _classes is None:
        _classes = _build_classes()
    return _classes


def _build_classes() -> dict:
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise OCIError("checkpoint/restore needs the Python protobuf package (pip install protobuf)") from None
    F = descriptor_pb2.FieldDescriptorProto
    scalar = {"string": F.TYPE_STRING, "int32": F.TYPE_INT32, "uint32": F.TYPE_UINT32, "bool": F.TYPE_BOOL}
    proto = descriptor_pb2.FileDescriptorProto(name="ocirun/criu_rpc.proto", syntax="proto2")
    for name, values in _ENUMS.items():
        enum = proto.enum_type.add(name=name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    for name, fields in _SCHEMA.items():
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            f = msg.field.add(name=field_name, number=number,
                              label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if kind[0] == ".":
                f.type, f.type_name = F.TYPE_MESSAGE, kind
            elif kind[0] == ":":
                f.type, f.type_name = F.TYPE_ENUM, "." + kind[1:]
            else:
                f.type = scalar[kind]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name)) for name in _SCHEMA}


def new_opts(**fields):
    """A criu_opts message."""
    return messages()["criu_opts"](**fields)


def criu_binary(path: str | None) -> str:
    """The criu executable: --criu PATH, else `criu` on PATH; a clear error when there is none."""
    import shutil
    found = shutil.which(path or "criu")
    if found is None:
        where = f"--criu {path}" if path else "criu"
        raise OCIError(f"{where}: not found: checkpoint and restore need CRIU (install the criu package)")
    return found


def warn_if_unprivileged() -> None:
    from . import log as _log
    from .rootless import in_user_namespace
    if os.geteuid() != 0 or in_user_namespace():
        _log.get().warn("checkpoint and restore are untested without root (as in runc): CRIU needs it")


class CriuError(OCIError):
    pass


class Session:
    """One `criu swrk` process and the socket we talk to it on."""

    def __init__(self, binary: str, *, stdio: tuple = (None, None, None), pass_fds: tuple[int, ...] = (),
                 log_dir: str | None = None, log_file: str | None = None, yard_dirs: tuple[str, ...] = ()) -> None:
        """`yard_dirs`: where CRIU may make its cgroup yard (its images and work directories),
        for `abort` to clear should CRIU have to be killed."""
        self.log_path = os.path.join(log_dir, log_file) if log_dir and log_file else None
        self.yard_dirs = yard_dirs
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        try:
            self.proc = subprocess.Popen([binary, "swrk", str(theirs.fileno())], stdin=stdio[0],
                                         stdout=stdio[1], stderr=stdio[2],
                                         pass_fds=(theirs.fileno(), *pass_fds), close_fds=True)
        except OSError as e:
            ours.close()
            raise OCIError(f"start {binary} swrk: {os_words(e)}") from None
        finally:
            theirs.close()  # CRIU's end (the processes CRIU forks may keep a copy: see _receive)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, req_type: int, opts=None, on_notify=None, features=None, timeout: float | None = None):
        """Send one request; answer CRIU's notifications with `on_notify(script, pid, fds)`;
        return the final response (waiting `timeout`, else `reply_timeout()`, for each message).
        CriuError (quoting CRIU's log) on failure."""
        if timeout is None:
            timeout = reply_timeout()
        req = messages()["criu_req"](type=req_type)
        if opts is not None:
            req.opts.CopyFrom(opts)
        if features is not None:
            req.features.CopyFrom(features)
        self._send(req)
        while True:
            resp, fds = self._receive(req_type, timeout)
            if not resp.success:
                self._close_fds(fds)
                raise self._failure(req_type, resp)
            if resp.type != NOTIFY:
                self._close_fds(fds)
                return resp
            try:
                if on_notify is not None:
                    on_notify(resp.notify.script, resp.notify.pid, fds)
            finally:
                self._close_fds(fds)
            self._send(messages()["criu_req"](type=NOTIFY, notify_success=True))

    def _send(self, req) -> None:
        try:
            self.sock.send(req.SerializeToString())
        except OSError as e:
            raise CriuError(f"criu: sending the request: {os_words(e)}{self._log_hint()}") from None

    def _receive(self, req_type: int, timeout: float):
        """The next message.  A CRIU that died does not always close the socket (the tasks it
        forked during a restore inherited its end), so the wait also watches CRIU itself."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CriuError(f"criu {_TYPE_NAMES.get(req_type, req_type)}: no answer within "
                                f"{timeout:.0f} s{self._log_hint()}")
            ready, _, _ = select.select([self.sock], [], [], min(left, POLL_S))
            if ready:
                break
            if self.proc.poll() is not None and not select.select([self.sock], [], [], 0)[0]:
                raise CriuError(f"criu {_TYPE_NAMES.get(req_type, req_type)} failed: criu exited "
                                f"(status {self.proc.returncode}) without an answer"
                                f"{self._log_error()}{self._log_hint()}")
        fds: list[int] = []
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(4 * 16))
        except OSError as e:
            raise CriuError(f"criu: reading its answer: {os_words(e)}{self._log_hint()}") from None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(int.from_bytes(payload[i:i + 4], "little") for i in range(0, usable, 4))
        if not data:
            raise CriuError(f"criu {_TYPE_NAMES.get(req_type, req_type)} failed: criu exited "
                            f"without an answer{self._log_error()}{self._log_hint()}")
        try:
            if len(data) >= _MAX_MESSAGE:
                raise ValueError(f"longer than {_MAX_MESSAGE} bytes")
            return messages()["criu_resp"].FromString(data), fds
        except Exception as e:  # noqa: BLE001 — protobuf's DecodeError and ours: one line
            self._close_fds(fds)
            raise CriuError(f"criu: an answer we cannot read ({e}){self._log_hint()}") from None

    @staticmethod
    def _close_fds(fds: list[int]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _failure(self, req_type: int, resp) -> CriuError:
        what = _TYPE_NAMES.get(resp.type, _TYPE_NAMES.get(req_type, str(req_type)))
        detail = (resp.cr_errmsg or "").strip() or (os.strerror(resp.cr_errno) if resp.cr_errno else "")
        said = f": {detail}" if detail else ""
        logged = self._log_error()
        if detail and detail in logged:
            logged = ""  # CRIU's message is often its log's last error line: once is enough
        return CriuError(f"criu {what} failed{said}{logged}{self._log_hint()}")

    def _log_error(self) -> str:
        """CRIU's own words: the last error line of its log."""
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                errors = [line.strip() for line in f if "Error" in line]
        except OSError:
            return ""
        if not errors:
            return ""
        last = errors[-1]
        if last.startswith("(") and ") " in last:  # "(00.018661) Error (...)": CRIU's clock
            last = last.split(") ", 1)[1]
        return f": {last}"

    def _log_hint(self) -> str:
        return f" (log: {self.log_path})" if self.log_path and os.path.exists(self.log_path) else ""

    def finish(self, failure_expected: bool = False) -> None:
        """Close our end and reap CRIU (with a deadline); an exit status other than 0 is a
        failure unless `failure_expected` (a pre-dump's CRIU waits for a next request that
        never comes, and ends unhappily when we hang up: runc ignores its status too)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()
        try:
            status = self.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise CriuError(f"criu did not exit within {EXIT_TIMEOUT_S:.0f} s of its answer") from None
        if status != 0 and not failure_expected:
            raise CriuError(f"criu exited with status {status}{self._log_error()}{self._log_hint()}")

    def abort(self, grace: float = ABORT_GRACE_S) -> None:
        """Stop CRIU after a failure on our side.  Hung up on, CRIU fails by itself and takes
        down what it mounted in our mount namespace (a restore's cgroup yard), as runc lets it;
        one still running after `grace` seconds (or at Ctrl-C meanwhile) is killed.  A CRIU
        that ended by a signal (ours or anyone's) undid nothing: its yards are detached here."""
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            if grace > 0:
                try:
                    self.proc.wait(timeout=grace)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    pass  # (a Ctrl-C here ends the wait: CRIU is killed, the caller's cleanup goes on)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=EXIT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.returncode is not None and self.proc.returncode < 0:
                detach_yards(self.yard_dirs)


YARD_PREFIX = ".criu.cgyard."  # CRIU's mkdtemp() name for its cgroup yard, in its working directory


def detach_yards(dirs: tuple[str, ...]) -> None:
    """Detach and remove the cgroup yards (a tmpfs with cgroup hierarchies on it) that a killed
    CRIU left in `dirs`: nobody else unmounts them, and the hierarchies in them keep the image
    directory from being removed."""
    if not dirs:
        return
    from . import linux, mountinfo
    tops = tuple(os.path.realpath(d) + "/" + YARD_PREFIX for d in dirs)
    points = sorted({m.mountpoint for m in mountinfo.read() if m.mountpoint.startswith(tops)},
                    key=lambda p: p.count("/"), reverse=True)
    for point in points:
        try:
            linux.umount2(point, linux.MNT_DETACH)
        except OSError:
            continue
    for point in points:
        if os.path.basename(point).startswith(YARD_PREFIX):
            try:
                os.rmdir(point)
            except OSError:
                pass


_versions: dict[tuple, int] = {}  # one question per binary (an upgraded one is asked again)


def version(binary: str) -> int:
    """CRIU's version as one number (3.17.1 → 31701), asked over RPC as runc does."""
    try:
        st = os.stat(binary)
        key: tuple = (binary, st.st_dev, st.st_ino, st.st_mtime_ns)
    except OSError:
        key = (binary,)
    if key not in _versions:
        _versions[key] = _ask_version(binary)
    return _versions[key]


def require_version(binary: str, minimum: int, what: str) -> None:
    """Refuse `what` up front when this CRIU is older than `minimum` (it would fail later, in
    words that do not say so)."""
    have = version(binary)
    if have < minimum:
        raise OCIError(f"{what} needs CRIU {_dotted(minimum)} or newer; {binary} is {_dotted(have)}")


def _dotted(number: int) -> str:
    return f"{number // 10000}.{number // 100 % 100}" + (f".{number % 100}" if number % 100 else "")


def _ask_version(binary: str) -> int:
    session = Session(binary)
    try:
        resp = session.call(VERSION, timeout=query_timeout())
        session.finish(failure_expected=True)
    except BaseException:
        session.abort(grace=0)  # a question mounts nothing
        raise
    v = resp.version
    return v.major_number * 10000 + v.minor_number * 100 + v.sublevel


def check_features(binary: str, **wanted: bool) -> None:
    """Refuse, by name, a CRIU feature (mem_track, lazy_pages) that CRIU says this host lacks."""
    session = Session(binary)
    try:
        resp = session.call(FEATURE_CHECK, features=messages()["criu_features"](**wanted), timeout=query_timeout())
        session.finish(failure_expected=True)
    except BaseException:
        session.abort(grace=0)  # a question mounts nothing
        raise
    # A feature CRIU does not mention is not refused (runc's rule: older CRIUs answer less).
    missing = [name for name in wanted if resp.features.HasField(name) and not getattr(resp.features, name)]
    if missing:
        words = {"mem_track": "memory tracking (needed by --pre-dump and --parent-path)",
                 "lazy_pages": "lazy pages (userfaultfd; needed by --lazy-pages)"}
        raise OCIError("CRIU reports that this kernel lacks " + ", ".join(words.get(m, m) for m in missing))


def cgroup_mode(words: str) -> int:
    try:
        return CGROUP_MODES[words]
    except KeyError:
        raise OCIError(f"--manage-cgroups-mode {words!r}: must be one of soft, full, strict, ignore") from None


def empty_ns_mask(names: list[str]) -> int:
    """--empty-ns: the namespaces CRIU creates but does not fill; as runc, the network namespace
    is always among them (ocirun configures no network devices of its own to restore)."""
    from .config import NAMESPACE_TYPES
    mask = NAMESPACE_TYPES["network"]
    for name in names:
        if name != "network":
            raise OCIError(f"--empty-ns {name!r}: only the network namespace is supported (as in runc)")
    return mask


def config_file(annotations: dict) -> str | None:
    """CRIU's configuration file for this container: the annotation org.criu.config names one
    (empty: none), else /etc/criu/runc.conf, the file runc points CRIU at (ocirun reads the same,
    so a host tuned for runc's checkpoints needs nothing new)."""
    if "org.criu.config" in annotations:
        return annotations["org.criu.config"] or None
    return "/etc/criu/runc.conf"


def ns_key(ns_type: str) -> str:
    """The key naming an external namespace in the images ("extRootNetNS"), runc's."""
    short = {"network": "net", "pid": "pid"}[ns_type]
    return f"extRoot{short.capitalize()}NS"


def ns_external(ns_type: str, path: str) -> str:
    """--external for a namespace the container joined by path: `net[INODE]:extRootNetNS`."""
    short = {"network": "net", "pid": "pid"}[ns_type]
    try:
        inode = os.stat(path).st_ino
    except OSError as e:
        raise OCIError(f"linux.namespaces: {ns_type} namespace {path}: {os_words(e)}") from None
    return f"{short}[{inode}]:{ns_key(ns_type)}"
