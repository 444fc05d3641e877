"""`ocirun delete`: kill what is left, return moved network devices, remove the cgroup, run the
poststop hooks and remove the state directory.  With --force every step goes on after a failure
(a warning), also for a container whose state.json cannot be read."""
from __future__ import annotations

import os
import time

import _signal as signal  # not signal.py (ARCHITECTURE.md, Startup speed)

from . import log as _log
from .errors import OCIError
from .state import NET_DEVICES_RECORD, PAUSED, STOPPED, Container, StateDir, load_cgroup, pid_alive


def delete(root: str, cid: str, force: bool = False) -> None:
    from .state import validate_id
    validate_id(cid)
    sd = StateDir(root, cid)
    try:
        # Lock before looking: a `create` still running holds the lock, and its half-written
        # directory must not be removed under it.
        sd.lock()
    except FileNotFoundError:
        if force:
            return
        raise OCIError(f"container does not exist: {cid}") from None
    try:
        if not os.path.exists(os.path.join(sd.path, "state.json")):
            # A create killed before it wrote anything (only the directory exists), or a
            # concurrent delete that removed it while we waited for the lock.
            if force:
                sd.remove()
                return
            raise OCIError(f"container does not exist: {cid}")
        try:
            c = Container(sd, sd.read())
        except OCIError as e:
            if not force:
                raise  # "corrupt state file": nothing is touched without --force
            _delete_unreadable(sd, e)
            return
        st, status = c.state, c.status
        c.require("delete", force=force)  # not stopped: refused (runtime.md) unless forced
        cg = _forced(force, c.cgroup)
        if os.path.exists(os.path.join(sd.path, NET_DEVICES_RECORD)):
            from . import network  # pyroute2 loads only now: this container moved devices
            network.return_devices(sd.path, st.pid if status != STOPPED else 0)
        if status != STOPPED or st.shared_pid_ns:
            if cg is not None and status == PAUSED:
                _forced(force, lambda: cg.kill_all(signal.SIGKILL))
                # The frozen processes die once thawed.  systemd stops a scope whose processes
                # all got SIGKILL and removes its cgroup: then nothing is left to thaw.
                if cg.state() == "paused":
                    _forced(force, cg.thaw)
            _forced(force, lambda: kill_and_wait(st.pid, st.start_time))
        if cg is not None:
            _forced(force, cg.destroy)
        if st.shared_rootfs_mount:  # no mount namespace: its mounts are in ours
            release_rootfs_mount(st.rootfs, st.shared_rootfs_mount)
        if st.hooks.get("poststop"):
            from . import hooks
            hooks.run_recorded(st, "poststop", "stopped", log=_log.get().log)
        sd.remove()
    finally:
        sd.unlock()


def _forced(force: bool, step):
    """One step of delete: with --force a failure is a warning and the removal goes on (what
    is ours must always go); without it, the error stops delete with the state kept."""
    try:
        return step()
    except OCIError as e:
        if not force:
            raise
        _log.get().warn(f"delete --force: {e}")
        return None


def _delete_unreadable(sd: StateDir, err: OCIError) -> None:
    """`delete --force` of a container whose state.json cannot be used (corrupt, tampered):
    kill and remove what can still be found, then the state directory.

    Where it comes from: each field of state.json that still has its type (the init's pid is
    killed only with its start time, so a reused pid is never hit), and for the cgroup, when
    state.json's section is gone, cgroup.json (the same section, written by create before
    anything existed).  Killing the cgroup's processes stops the container even without a pid;
    poststop hooks are not run from a file we could not read."""
    from .state import cgroup_section_ok
    log = _log.get()
    log.warn(f"{err}; removing what can be found")
    try:
        raw = sd.read_raw()
    except OCIError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    pid, start_time = raw.get("pid"), raw.get("start_time")
    section = raw.get("cgroup") if cgroup_section_ok(raw.get("cgroup")) else sd.read_recovery()
    cg = None
    if cgroup_section_ok(section):
        cg = _forced(True, lambda: load_cgroup(section))
    if type(pid) is int and type(start_time) is int and pid > 0:
        _forced(True, lambda: kill_and_wait(pid, start_time))
    if os.path.exists(os.path.join(sd.path, NET_DEVICES_RECORD)):
        from . import network
        try:
            network.return_devices(sd.path, 0)
        except OCIError as e:
            log.warn(f"delete --force: {e}")
    if cg is not None:
        if cg.state() == "paused":
            _forced(True, cg.thaw)
        _forced(True, cg.destroy)
    else:
        log.warn(f"delete --force: no cgroup record for {sd.id}: its processes, if any, are left running")
    mnt, rootfs = raw.get("shared_rootfs_mount"), raw.get("rootfs")
    if type(mnt) is int and mnt > 0 and isinstance(rootfs, str):
        release_rootfs_mount(rootfs, mnt)
    sd.remove()


def release_rootfs_mount(root_path: str, mnt_id: int) -> None:
    """Detach the bind of the rootfs made for a container without a mount namespace
    (create.py, `_bind_shared_rootfs`); a failure is a warning: the rest must still go."""
    from . import rootfs
    try:
        rootfs.release_shared_rootfs(root_path, mnt_id)
    except OCIError as e:
        _log.get().warn(str(e))


def kill_and_wait(pid: int, start_time, timeout: float = 10.0) -> None:
    """SIGKILL the init (checked against its start time: a reused pid is never hit) and wait
    until it is gone; our own child (`run`, a failed create) is reaped."""
    if not pid or not pid_alive(pid, start_time):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # our own child (`run`, failed create): reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not pid_alive(pid, start_time):
            return
        time.sleep(0.005)
    raise OCIError(f"container init {pid} did not die after SIGKILL")
