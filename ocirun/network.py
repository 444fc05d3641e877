"""The container's network namespace: loopback, linux.netDevices, and which netns is the runtime's.

What a runtime owns here is small (engines do the rest through CNI, netavark or hooks):

* **Loopback.**  A new network namespace starts with `lo` down.  The init brings it up with one
  SIOCSIFFLAGS ioctl (`bring_up_loopback`), as runc and crun do; the kernel then configures
  127.0.0.1 and ::1 itself.  No pyroute2 for that (ARCHITECTURE.md, Startup speed): every
  container pays for loopback.  A *joined* namespace (`namespaces[].path`) is used as it is.

* **linux.netDevices** (runtime-spec 1.2+, config-linux.md "Network Devices").  The runtime
  process moves each named host interface into the container's namespace once the init's pid
  is known, before the init builds its rootfs (see `netdevs_done` in process/channel.py), so
  createContainer hooks and `net.*` sysctls already see it.  Per device:
    - checks first, before anything moves: the interface exists here, the new name is valid,
      unique and free inside, the target is not the runtime's own namespace;
    - addresses are saved (moving a link to another netns flushes them), the link is moved and
      renamed in one RTM_NEWLINK (IFLA_NET_NS_FD + IFLA_IFNAME: no window with a clashing name),
      the addresses are added back inside, and the link is set up (the spec's MUST).
      MTU and hardware address travel with the device (the kernel keeps them).  The kernel
      regenerates IPv6 link-local addresses from the MAC, so those are not copied.  Connected
      routes come back with the addresses; other routes (gateways) are routing, which the spec
      leaves to the engine, and are not copied — runc and crun do not either.
  What was moved is recorded in `<state dir>/netdevices.json`, so `delete` can return it.

* **Giving devices back** (`return_devices`).  On delete, while the container's namespace
  still exists, each device is set down (spec MUST), moved back to the runtime's namespace
  under its original name (spec MUST) and gets its addresses back (so create/delete can be
  repeated with the same result); it stays down.  A failed `create` gives back everything it
  moved exactly as it was (up state included): the parent holds an fd to the namespace, which
  keeps it alive after the init died.
  A *new* namespace that received devices is pinned by a bind mount at `<state dir>/netns`
  until `delete`, so its devices come back even after the container's last process exited
  (without the pin the kernel would send physical devices to the initial namespace under their
  in-container name and destroy virtual ones — a veth with its peer).  A *joined* namespace
  outlives the container anyway.

* **`net.*` sysctls** are written by the init inside the container's namespace (sysctl.py).
  `is_runtime_netns(path)` lets sysctl.py accept a joined namespace that is not the runtime's
  own, as runc does.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys

# _socket, not socket (ARCHITECTURE.md, Startup speed): the container's init loads this module
# for `lo` alone.
import _socket

from .errors import ConfigError, OCIError, os_words
from .state import NET_DEVICES_RECORD as _RECORD

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


# ============================================================================ loopback (init)

def _ifreq_flags(name: bytes, flags: int) -> bytes:
    """struct ifreq's name[16] and short ifr_flags, padded (without `struct`: ~0.3 ms to import)."""
    return name.ljust(16, b"\0") + flags.to_bytes(2, sys.byteorder, signed=True) + bytes(14)


def bring_up_loopback() -> None:
    """Set IFF_UP on `lo` in the current network namespace (struct ifreq: name[16] + short flags)."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        req = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, _ifreq_flags(b"lo", 0))
        flags = int.from_bytes(req[16:18], sys.byteorder, signed=True)
        if not flags & _IFF_UP:
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, _ifreq_flags(b"lo", flags | _IFF_UP))
    except OSError as e:
        raise OCIError(f"bring up lo in the container's network namespace: {_words(e.errno)}") from None
    finally:
        s.close()


# ============================================================================ namespaces

def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def is_runtime_netns(path: str) -> bool:
    """True when `path` names the network namespace this process (the runtime) is in."""
    try:
        return _ns_id(path) == _ns_id("/proc/self/ns/net")
    except OSError:
        return False  # a bad path is reported when the namespace is joined


class _InNamespace:
    """Run a block in another network namespace (single-threaded runtime: setns is safe)."""

    def __init__(self, nsfd: int):
        self.nsfd = nsfd
        self.home = -1

    def __enter__(self):
        from . import linux  # here: `delete` imports this module and needs no syscall layer
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        linux.setns(self.nsfd, linux.CLONE_NEWNET)
        return self

    def __exit__(self, *exc):
        from . import linux
        try:
            linux.setns(self.home, linux.CLONE_NEWNET)
        finally:
            os.close(self.home)


def _netlink_in(nsfd: int):
    """An IPRoute whose socket lives in the namespace `nsfd` (a socket keeps the netns it was
    made in).  pyroute2's own netns= forks a helper process; this is one setns there and back."""
    from pyroute2 import IPRoute
    with _InNamespace(nsfd):
        ipr = IPRoute()
        ipr.get_links()  # the socket is made on first use: make it now, while we are inside
    return ipr


def _netlink_here():
    from pyroute2 import IPRoute
    return IPRoute()


# ============================================================================ netlink helpers

def _words(code: int | None) -> str:
    """The kernel's words for an errno (netlink answers carry the number alone)."""
    return os_words(OSError(code, os.strerror(code))) if code else "unknown error"


def _nl_code(e: BaseException) -> int:
    return getattr(e, "code", 0) or getattr(e, "errno", 0) or 0


def _index(ipr, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _link_names(ipr) -> set[str]:
    return {link.get("ifname") for link in ipr.get_links()}


def _is_up(ipr, index: int) -> bool:
    return bool(ipr.get_links(index)[0]["flags"] & _IFF_UP)


def _saved_addresses(ipr, index: int) -> list[dict]:
    """The link's addresses in a form `_add_addresses` can replay (JSON-safe for the record)."""
    out = []
    for msg in ipr.get_addr(index=index):
        family, address = msg["family"], msg.get("address")
        if family == _socket.AF_INET6 and address and address.lower().startswith("fe80:"):
            continue  # link-local: the kernel makes it again from the (unchanged) MAC
        out.append({k: v for k, v in {
            "family": family, "prefixlen": msg["prefixlen"], "scope": msg["scope"],
            "address": address, "local": msg.get("local"), "broadcast": msg.get("broadcast"),
            "flags": msg.get("flags"),
        }.items() if v is not None})
    return out


def _add_addresses(ipr, index: int, addrs: list[dict]) -> None:
    for a in addrs:
        try:
            ipr.addr("add", index=index, **a)
        except Exception as e:  # noqa: BLE001 — pyroute2's NetlinkError
            if _nl_code(e) != errno.EEXIST:
                raise


def _move(ipr, index: int, nsfd: int, new_name: str) -> None:
    """Move and rename in one RTM_NEWLINK, so the name never clashes in between."""
    ipr.link("set", index=index, state="down")
    ipr.link("set", index=index, net_ns_fd=nsfd, ifname=new_name)


# ============================================================================ netDevices: create

def _valid_ifname(name: str) -> bool:
    # The kernel's dev_valid_name(): at most 15 bytes, not . or .., no '/', ':' or whitespace.
    return (0 < len(name.encode()) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() for c in name))


def _plan(cfg, host_names: set[str], ns_names: set[str]) -> list[tuple[str, str]]:
    """[(host name, name inside)], every check done before anything moves."""
    plan, inside_names = [], set()
    for host_name, dev in cfg.linux.net_devices.items():
        where = f"linux.netDevices.{host_name}"
        if not isinstance(dev, dict):
            raise ConfigError(where, "must be an object")
        if host_name not in host_names:
            raise ConfigError(where, f"no interface {host_name} in the runtime's network namespace")
        inside = dev.get("name") or host_name
        if not isinstance(inside, str) or not _valid_ifname(inside):
            raise ConfigError(f"{where}.name", f"{inside!r} is not a valid interface name")
        if inside in inside_names:
            raise ConfigError(f"{where}.name", f"{inside} is the name of another device in linux.netDevices")
        if inside in ns_names:
            raise ConfigError(where, f"{inside} already exists in the container's network namespace")
        inside_names.add(inside)
        plan.append((host_name, inside))
    return plan


class MovedDevices:
    """What `create` moved; holds the container's netns open so a failed create can give back."""

    def __init__(self, state_dir: str, nsfd: int, netns_path: str):
        self.nsfd = nsfd
        self.path = os.path.join(state_dir, _RECORD)
        self.record: dict = {"netns_path": netns_path, "devices": []}

    def note(self, entry: dict) -> None:
        self.record["devices"].append(entry)
        import json
        from .state import write_private  # 0600, atomic, like every file of the state directory
        write_private(self.path, json.dumps(self.record).encode())

    def give_back(self) -> None:
        """Failed create: every device back where and as it was; errors become warnings."""
        _give_back(self.record, self.nsfd, restore_up=True)
        _unpin_netns(self.record.pop("pinned", None))
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def close(self) -> None:
        if self.nsfd >= 0:
            os.close(self.nsfd)
            self.nsfd = -1


def move_devices(cfg, init_pid: int, state_dir: str) -> MovedDevices:
    """Move `linux.netDevices` into the network namespace of `init_pid` (runtime process).

    Raises ConfigError naming `linux.netDevices.<name>`; whatever was moved before the error is
    already given back, so the host is as it was.  The caller closes the result when `create`
    is over (or calls `give_back()` first if it failed later).
    """
    try:
        nsfd = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OCIError(f"open the container's network namespace: {_words(e.errno)}") from None
    ns = cfg.linux.namespace("network")
    moved = MovedDevices(state_dir, nsfd, ns.path if ns is not None else "")
    host = inside = None
    try:
        if _ns_id(f"/proc/self/fd/{nsfd}") == _ns_id("/proc/self/ns/net"):
            raise ConfigError("linux.netDevices", "the container is in the runtime's network namespace: "
                                                  "devices can only move into another one")
        if not moved.record["netns_path"]:
            moved.record["netns_path"] = moved.record["pinned"] = _pin_netns(nsfd, state_dir)
        host, inside = _netlink_here(), _netlink_in(nsfd)
        for host_name, inside_name in _plan(cfg, _link_names(host), _link_names(inside)):
            _move_one(host, inside, moved, host_name, inside_name)
        return moved
    except BaseException:
        moved.give_back()
        moved.close()
        raise
    finally:
        for ipr in (host, inside):
            if ipr is not None:
                ipr.close()


def _move_one(host, inside, moved: MovedDevices, host_name: str, inside_name: str) -> None:
    where = f"linux.netDevices.{host_name}"
    index = _index(host, host_name)
    if index is None:
        raise ConfigError(where, f"no interface {host_name} in the runtime's network namespace")
    entry: dict = {"host": host_name, "inside": inside_name, "up": _is_up(host, index),
             "addresses": _saved_addresses(host, index)}
    try:
        _move(host, index, moved.nsfd, inside_name)
    except Exception as e:  # noqa: BLE001
        if entry["up"]:
            host.link("set", index=index, state="up")
        raise ConfigError(where, f"move into the container's network namespace: {_words(_nl_code(e))}") from None
    moved.note(entry)
    try:
        new_index = _index(inside, inside_name)
        if new_index is not None:
            _add_addresses(inside, new_index, entry["addresses"])
            inside.link("set", index=new_index, state="up")
    except Exception as e:  # noqa: BLE001
        raise ConfigError(where, f"configure {inside_name} in the container: {_words(_nl_code(e))}") from None
    if new_index is None:
        raise ConfigError(where, f"{inside_name} vanished from the container's network namespace after the move")


# ============================================================================ netDevices: give back

def return_devices(state_dir: str, init_pid: int = 0, restore_up: bool = False) -> None:
    """Delete side: give every recorded device back to the runtime's namespace, down, under its
    original name, with its addresses.  `init_pid` is the container's init if it still runs, else 0.
    `restore_up=True` (undoing a create) also sets up again the devices that were up.

    Nothing to do (and no pyroute2 import) when the container moved no devices.  Problems are
    warnings: `delete` must go on.  See the module docstring for a stopped container.
    """
    path = os.path.join(state_dir, _RECORD)
    try:
        with open(path) as f:
            import json
            record = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        _warn(f"netDevices: cannot read {path}: {e}")
        return
    nsfd = _open_container_netns(record, init_pid)
    if nsfd < 0:
        _debug("netDevices: the container's network namespace is gone; the kernel returned its "
               "physical devices to the initial namespace and destroyed the virtual ones")
    else:
        try:
            _give_back(record, nsfd, restore_up=restore_up)
        finally:
            os.close(nsfd)
    _unpin_netns(record.get("pinned"))
    try:
        os.unlink(path)
    except OSError:
        pass


_PIN = "netns"


def _pin_netns(nsfd: int, state_dir: str) -> str:
    """Keep a *new* network namespace alive until `delete` (a bind mount of it in the state dir),
    so the devices we moved in can still be given back after the container's last process exited
    — otherwise the kernel destroys virtual devices (a veth and its peer) with the namespace."""
    from . import linux
    path = os.path.join(state_dir, _PIN)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        linux.mount(f"/proc/self/fd/{nsfd}", path, None, linux.MS_BIND)
    except OSError as e:
        raise OCIError(f"linux.netDevices: keep the container's network namespace at {path}: "
                       f"{_words(e.errno)}") from None
    return path


def _unpin_netns(path: str | None) -> None:
    if not path:
        return
    from . import linux
    try:
        linux.umount2(path, linux.MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            _warn(f"netDevices: unmount {path}: {_words(e.errno)}")
    try:
        os.unlink(path)
    except OSError:
        pass


def _open_container_netns(record: dict, init_pid: int) -> int:
    for candidate in ([f"/proc/{init_pid}/ns/net"] if init_pid else []) + [record.get("netns_path") or ""]:
        if not candidate:
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        if _ns_id(f"/proc/self/fd/{fd}") != _ns_id("/proc/self/ns/net"):
            return fd
        os.close(fd)
    return -1  # a new namespace that died with the container: the kernel already decided


def _give_back(record: dict, nsfd: int, restore_up: bool) -> None:
    if not record["devices"]:
        return
    host = inside = None
    try:
        host, inside = _netlink_here(), _netlink_in(nsfd)
        home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for entry in reversed(record["devices"]):
                _give_back_one(host, inside, home, entry, restore_up)
        finally:
            os.close(home)
    except Exception as e:  # noqa: BLE001 — giving back is best effort, never the error itself
        _warn(f"netDevices: give devices back: {e}")
    finally:
        for ipr in (host, inside):
            if ipr is not None:
                ipr.close()


def _give_back_one(host, inside, home: int, entry: dict, restore_up: bool) -> None:
    name, inside_name = entry["host"], entry["inside"]
    index = _index(inside, inside_name)
    if index is None:
        _warn(f"netDevices: {inside_name} is no longer in the container's network namespace; "
              f"{name} cannot be given back")
        return
    if _index(host, name) is not None:
        _warn(f"netDevices: {name} exists again in the runtime's network namespace; "
              f"{inside_name} stays in the container's")
        return
    try:
        _move(inside, index, home, name)
        back = _index(host, name)
        if back is None:
            _warn(f"netDevices: {name} vanished from the runtime's network namespace after the move back")
            return
        _add_addresses(host, back, entry.get("addresses", []))
        if restore_up and entry.get("up"):
            host.link("set", index=back, state="up")
    except Exception as e:  # noqa: BLE001
        _warn(f"netDevices: give {name} back: {_words(_nl_code(e))}")


def _warn(msg: str) -> None:
    from . import log
    log.get().warn(msg)


def _debug(msg: str) -> None:
    from . import log
    log.get().debug(msg)
