"""Network namespaces (ocirun/network.py): loopback, linux.netDevices, joined netns, net.* sysctls.

Everything runs in real containers.  The interfaces are veth pairs (this kernel has no `dummy`
driver) and the namespaces are `ip netns add` ones, all created here with names starting with
`ocit` / `ocirun-test-` and private addresses (10.x, fd00::) only; a module check at the end
says nothing of ours is left.

What the kernel decides, recorded here because it surprises: a veth moved into a container's
*new* network namespace is destroyed with that namespace when the container exits (and takes its
peer with it); only a running (or created) container, or a *joined* namespace, lets `delete`
give the device back.  runc 1.3 behaves the same; runc 1.1.5 (the one on this machine) predates
netDevices and ignores the field (`test_runc_1_1_5_ignores_net_devices`).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

import helpers
from helpers import make_bundle, ok, run_ocirun


LINK_PREFIX = "ocit"            # + 6 hex + a/b: 11 characters, under IFNAMSIZ
NETNS_PREFIX = f"{helpers.TEST_PREFIX}-"


# --------------------------------------------------------------------------- host helpers

def sh(*cmd: str, check: bool = True) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {r.returncode}: {r.stderr}")
    return r.stdout


def link_json(name: str, netns: str | None = None) -> dict | None:
    cmd = (["ip", "-n", netns] if netns else ["ip"]) + ["-j", "addr", "show", "dev", name]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)[0]


def addresses(link: dict) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
            if not a["local"].startswith("fe80:")}


def our_links() -> list[str]:
    return [l["ifname"] for l in json.loads(sh("ip", "-j", "link", "show")) if l["ifname"].startswith(LINK_PREFIX)]


def our_netns() -> list[str]:
    return [n for n in sh("ip", "netns", "list").split() if n.startswith(NETNS_PREFIX)]


def subnet() -> tuple[str, str]:
    """A private /24 and a /64 for one test."""
    n = secrets.randbelow(200) + 20
    return f"10.231.{n}", f"fd00:231:{n:x}:"


class Veth:
    """A veth pair `a`<->`b` on the host; `a` gets `v4`.1/24, `v6`:1/64 and mtu 1400."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.a, self.b = f"{LINK_PREFIX}{tag}a", f"{LINK_PREFIX}{tag}b"
        self.v4, self.v6 = subnet()
        sh("ip", "link", "add", self.a, "type", "veth", "peer", "name", self.b)
        sh("ip", "addr", "add", f"{self.v4}.1/24", "dev", self.a)
        sh("ip", "addr", "add", f"{self.v6}:1/64", "dev", self.a, "nodad")
        sh("ip", "link", "set", self.a, "mtu", "1400", "up")
        self.mac = link_json(self.a)["address"]

    def remove(self) -> None:
        for name in (self.a, self.b):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        for ns in our_netns():  # an end moved into a test netns
            for name in (self.a, self.b):
                subprocess.run(["ip", "-n", ns, "link", "del", name], capture_output=True)


@pytest.fixture
def veth():
    v = Veth()
    yield v
    v.remove()


@pytest.fixture
def netns():
    name = f"{NETNS_PREFIX}{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module", autouse=True)
def _nothing_of_ours_left():
    yield
    links, namespaces = our_links(), our_netns()
    for name in links:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    for name in namespaces:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert not links and not namespaces, f"left on the host: links {links}, netns {namespaces}"


def init_pid(root, cid) -> int:
    return json.loads(ok("state", cid, root=root).stdout)["pid"]


def in_container_netns(pid: int, *cmd: str) -> str:
    return sh("nsenter", "-t", str(pid), "-n", *cmd)


def net_devices(**devs) -> dict:
    return {"netDevices": devs}


def bundle_with(tmp_path, args, linux: dict | None = None, **overrides):
    """make_bundle with `linux` keys merged into the default linux section."""
    b = make_bundle(tmp_path, args, **overrides)
    if linux:
        cfg = helpers.read_config(b)
        helpers.deep_update(cfg["linux"], linux)
        helpers.write_config(b, cfg)
    return b


# --------------------------------------------------------------------------- loopback

def test_new_netns_has_lo_up_with_both_loopback_addresses(tmp_path, ocirun_root):
    b = make_bundle(tmp_path, ["sh", "-c",
                               "ip link show lo; "
                               "nc -l -p 7001 -e echo v4ok & sleep 0.3; nc 127.0.0.1 7001; "
                               "nc -l -p 7002 -e echo v6ok & sleep 0.3; nc ::1 7002; wait"])
    r = ok("run", "-b", b, "lo", root=ocirun_root)
    assert "LOOPBACK,UP" in r.stdout
    assert "v4ok" in r.stdout and "v6ok" in r.stdout


def test_runc_also_brings_lo_up(tmp_path, runc_root):
    b = make_bundle(tmp_path, ["ip", "link", "show", "lo"])
    r = helpers.run_runc("run", "-b", b, "lo", root=runc_root)
    assert r.returncode == 0, r.stderr
    assert "LOOPBACK,UP" in r.stdout


def test_pyroute2_is_not_imported_without_net_devices(tmp_path, ocirun_root, veth):
    b = make_bundle(tmp_path, ["true"])
    cmd = [sys.executable, "-X", "importtime", "-m", "ocirun", "--root", str(ocirun_root), "run", "-b", str(b), "imp"]
    env = dict(os.environ, PYTHONPATH=str(helpers.REPO))
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert plain.returncode == 0, plain.stderr
    assert "pyroute2" not in plain.stderr
    # and the control: with a device to move, pyroute2 is loaded
    cfg = helpers.read_config(b)
    cfg["linux"]["netDevices"] = {veth.a: {}}
    helpers.write_config(b, cfg)
    moved = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert moved.returncode == 0, moved.stderr
    assert "pyroute2" in moved.stderr


def test_features_report_net_devices(ocirun_root):
    doc = json.loads(ok("features", root=ocirun_root).stdout)
    assert doc["linux"]["netDevices"] == {"enabled": True}


# --------------------------------------------------------------------------- netDevices

def test_moved_device_keeps_addresses_mtu_and_mac_and_is_renamed(tmp_path, ocirun_root, veth):
    b = bundle_with(tmp_path, ["sh", "-c", "ip addr show eth0; ip route"],
                    linux=net_devices(**{veth.a: {"name": "eth0"}}))
    r = ok("run", "-b", b, "mv", root=ocirun_root)
    assert f"inet {veth.v4}.1/24" in r.stdout
    assert f"inet6 {veth.v6}:1/64" in r.stdout
    assert "mtu 1400" in r.stdout and veth.mac in r.stdout
    assert "UP" in r.stdout.split("\n", 1)[0]
    assert f"{veth.v4}.0/24 dev eth0" in r.stdout  # the connected route came back with the address
    # `run` deleted the exited container: its netns was pinned until then, so the veth came
    # back to the host under its own name (without the pin the kernel destroys it with the ns).
    back = link_json(veth.a)
    assert back is not None and back.get("mtu") == 1400 and back.get("address") == veth.mac
    assert not (ocirun_root / "mv").exists()


def test_traffic_through_a_veth_between_container_and_test_netns(tmp_path, ocirun_root, veth, netns):
    sh("ip", "addr", "flush", "dev", veth.a)
    sh("ip", "addr", "add", f"{veth.v4}.1/24", "dev", veth.a)
    sh("ip", "link", "set", veth.b, "netns", netns)
    sh("ip", "-n", netns, "addr", "add", f"{veth.v4}.2/24", "dev", veth.b)
    sh("ip", "-n", netns, "link", "set", veth.b, "up")
    server = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c",
         "import socket,sys\n"
         "s=socket.socket(); s.bind(('0.0.0.0', 7100)); s.listen(1); print('ready', flush=True)\n"
         "c,_=s.accept(); c.settimeout(10); data=b''\n"
         "while not data.endswith(b'\\n'): data+=c.recv(100)\n"
         "c.sendall(b'pong\\n'); print(data.decode().strip(), flush=True)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        b = bundle_with(tmp_path, ["sh", "-c", f"ping -c1 -W5 {veth.v4}.2 >/dev/null && echo pinged; "
                                              f"echo ping-from-container | nc -w5 {veth.v4}.2 7100"],
                        linux=net_devices(**{veth.a: {"name": "eth1"}}),
                        process={"capabilities": {k: helpers.DEFAULT_CAPS + ["CAP_NET_RAW"]
                                                  for k in ("bounding", "effective", "permitted")}})
        r = ok("run", "-b", b, "tx", root=ocirun_root)
        assert "pinged" in r.stdout
        assert "pong" in r.stdout
        assert server.stdout.readline().strip() == "ping-from-container"
    finally:
        server.kill()
        server.wait()


def test_device_returns_to_host_after_delete_and_create_can_repeat(tmp_path, ocirun_root, veth):
    b = bundle_with(tmp_path, ["sleep", "100"], linux=net_devices(**{veth.a: {"name": "eth0"}}))
    for round_ in range(2):  # idempotent: the second create finds the device as the first did
        cid = f"back{round_}"
        ok("create", "-b", b, cid, root=ocirun_root)
        assert link_json(veth.a) is None
        inside = json.loads(in_container_netns(init_pid(ocirun_root, cid), "ip", "-j", "addr", "show", "eth0"))[0]
        assert addresses(inside) == {f"{veth.v4}.1/24", f"{veth.v6}:1/64"}
        if round_ == 1:
            ok("start", cid, root=ocirun_root)
        ok("delete", "--force", cid, root=ocirun_root)
        back = link_json(veth.a)
        assert back is not None, "the device did not come back to the host"
        assert addresses(back) == {f"{veth.v4}.1/24", f"{veth.v6}:1/64"}
        assert back["mtu"] == 1400 and back["address"] == veth.mac
        assert "UP" not in back["flags"]  # the spec: set down before it is moved back


def test_failed_create_leaves_the_device_on_the_host(tmp_path, ocirun_root, veth):
    before = link_json(veth.a)
    b = bundle_with(tmp_path, ["/no/such/binary"], linux=net_devices(**{veth.a: {"name": "eth0"}}))
    r = run_ocirun("create", "-b", b, "bad", root=ocirun_root)
    assert r.returncode != 0 and "/no/such/binary" in r.stderr
    after = link_json(veth.a)
    assert after is not None, "the device was lost"
    assert addresses(after) == addresses(before)
    assert "UP" in after["flags"] and after["mtu"] == 1400


@pytest.mark.parametrize("devices, message", [
    ({"ocitmissing": {}}, "linux.netDevices.ocitmissing: no interface ocitmissing in the runtime's network namespace"),
    ({"{a}": {"name": "lo"}}, "linux.netDevices.{a}: lo already exists in the container's network namespace"),
    ({"{a}": {"name": "bad/name"}}, "linux.netDevices.{a}.name: 'bad/name' is not a valid interface name"),
    ({"{a}": {"name": "x" * 16}}, "linux.netDevices.{a}.name: 'xxxxxxxxxxxxxxxx' is not a valid interface name"),
])
def test_bad_net_devices_are_clear_errors_and_move_nothing(tmp_path, ocirun_root, veth, devices, message):
    devices = {k.format(a=veth.a): v for k, v in devices.items()}
    devices.setdefault(veth.a, {})  # a good one beside it: it must not move either
    b = bundle_with(tmp_path, ["true"], linux=net_devices(**devices))
    r = run_ocirun("create", "-b", b, "bad", root=ocirun_root)
    assert r.returncode == 1
    assert r.stderr.strip().endswith(message.format(a=veth.a)), r.stderr
    assert link_json(veth.a) is not None and "UP" in link_json(veth.a)["flags"]


def test_net_devices_need_a_network_namespace(tmp_path, ocirun_root, veth):
    b = bundle_with(tmp_path, ["true"], linux=net_devices(**{veth.a: {}}))
    cfg = helpers.read_config(b)
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    helpers.write_config(b, cfg)
    r = run_ocirun("create", "-b", b, "nonet", root=ocirun_root)
    assert r.returncode == 1 and "linux.netDevices" in r.stderr
    assert link_json(veth.a) is not None


def test_net_devices_into_the_runtimes_own_netns_by_path_are_refused(tmp_path, ocirun_root, veth):
    b = bundle_with(tmp_path, ["true"], linux=net_devices(**{veth.a: {"name": "ocitrenamed"}}))
    cfg = helpers.read_config(b)
    for n in cfg["linux"]["namespaces"]:
        if n["type"] == "network":
            n["path"] = f"/proc/{os.getpid()}/ns/net"
    helpers.write_config(b, cfg)
    r = run_ocirun("create", "-b", b, "hostnet", root=ocirun_root)
    assert r.returncode == 1 and "linux.netDevices: the container is in the runtime's network namespace" in r.stderr
    assert link_json(veth.a) is not None and link_json("ocitrenamed") is None


# --------------------------------------------------------------------------- joined netns

def joined(cfg_path_netns: str) -> list[dict]:
    return [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")] + \
           [{"type": "network", "path": f"/run/netns/{cfg_path_netns}"}]


def test_joined_netns_is_used_as_is_and_gets_devices_and_net_sysctls(tmp_path, ocirun_root, veth, netns):
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    host_forward = open("/proc/sys/net/ipv4/ip_forward").read().strip()
    want = "0" if host_forward == "1" else "1"
    b = bundle_with(tmp_path, ["sh", "-c", "ip addr; cat /proc/sys/net/ipv4/ip_forward"],
                    linux={"namespaces": joined(netns), "netDevices": {veth.a: {"name": "eth7"}},
                           "sysctl": {"net.ipv4.ip_forward": want}})
    r = ok("run", "-b", b, "joined", root=ocirun_root)
    assert f"inet {veth.v4}.1/24" in r.stdout and "eth7" in r.stdout
    assert r.stdout.strip().endswith(want)
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == host_forward
    assert sh("ip", "netns", "exec", netns, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == want
    # The joined namespace outlives the container: delete (run does it) gave the device back.
    back = link_json(veth.a)
    assert back is not None and addresses(back) == {f"{veth.v4}.1/24", f"{veth.v6}:1/64"}
    assert link_json("eth7", netns) is None


def test_joined_netns_lo_is_left_as_it_is(tmp_path, ocirun_root, netns):
    b = bundle_with(tmp_path, ["ip", "link", "show", "lo"], linux={"namespaces": joined(netns)})
    r = ok("run", "-b", b, "asis", root=ocirun_root)
    assert "LOOPBACK" in r.stdout and "LOOPBACK,UP" not in r.stdout


# --------------------------------------------------------------------------- net.* sysctls

def test_net_sysctl_is_set_inside_only(tmp_path, ocirun_root, veth):
    host_forward = open("/proc/sys/net/ipv4/ip_forward").read().strip()
    want = "0" if host_forward == "1" else "1"
    b = bundle_with(tmp_path, ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/eth0/rp_filter"],
                    linux={"sysctl": {"net.ipv4.ip_forward": want, "net.ipv4.conf.eth0.rp_filter": "2"},
                           "netDevices": {veth.a: {"name": "eth0"}}})
    r = ok("run", "-b", b, "sysctl", root=ocirun_root)
    assert r.stdout.split() == [want, "2"]  # a moved device's own sysctl works: it was moved first
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == host_forward


@pytest.mark.parametrize("where", ["no network namespace", "the runtime's netns by path"])
def test_net_sysctl_with_the_hosts_netns_is_refused(tmp_path, ocirun_root, where):
    b = bundle_with(tmp_path, ["true"], linux={"sysctl": {"net.ipv4.ip_forward": "1"}})
    cfg = helpers.read_config(b)
    namespaces = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    if where != "no network namespace":
        namespaces.append({"type": "network", "path": f"/proc/{os.getpid()}/ns/net"})
    cfg["linux"]["namespaces"] = namespaces
    helpers.write_config(b, cfg)
    r = run_ocirun("run", "-b", b, "refused", root=ocirun_root)
    assert r.returncode == 1
    assert "linux.sysctl.net.ipv4.ip_forward: needs a new network namespace" in r.stderr


# --------------------------------------------------------------------------- runc 1.1.5

def test_runc_1_1_5_ignores_net_devices(tmp_path, runc_root, veth):
    """Recorded, not wanted: runc 1.1.5 predates netDevices (runc 1.3 / runtime-spec 1.2) and
    silently ignores the field — the container has no eth0 and the device stays on the host."""
    version = helpers.run_runc("--version").stdout
    if "1.1." not in version:
        pytest.skip(f"this compares with runc 1.1.x, found {version.splitlines()[0]}")
    b = bundle_with(tmp_path, ["ip", "-o", "link"], linux=net_devices(**{veth.a: {"name": "eth0"}}))
    r = helpers.run_runc("run", "-b", b, "ign", root=runc_root)
    assert r.returncode == 0, r.stderr
    assert "eth0" not in r.stdout
    assert link_json(veth.a) is not None
