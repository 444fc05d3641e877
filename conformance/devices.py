"""config-linux.md "Devices", "Default Devices" and the device allowlist
("Allowed Device List"), checked from inside (stat, open) and from the host cgroup files."""
from __future__ import annotations

from .framework import MUST, check

CL = "config-linux.md"

DEFAULT_DEVICES = {"/dev/null": "1:3", "/dev/zero": "1:5", "/dev/full": "1:7",
                   "/dev/random": "1:8", "/dev/urandom": "1:9", "/dev/tty": "5:0"}


@check("devices.default", CL, "Default Devices", MUST,
       "null, zero, full, random, urandom, tty exist as the right character devices, and /dev/ptmx")
def default_devices(t):
    script = "; ".join(f"echo {d}=$(stat -c '%F %t:%T' {d})" for d in DEFAULT_DEVICES)
    out = t.sh(script + "; test -e /dev/ptmx && echo ptmx-ok")
    for dev, mm in DEFAULT_DEVICES.items():
        major, minor = (int(x) for x in mm.split(":"))
        want = f"{dev}=character special file {major:x}:{minor:x}"
        t.expect(want in out, f"{dev}: {[l for l in out.splitlines() if l.startswith(dev)]}, want {want}")
    t.expect("ptmx-ok" in out, "/dev/ptmx is missing")


@check("devices.default-usable", CL, "Default Devices", MUST,
       "the default devices can be used even with a deny-all device allowlist")
def default_usable(t):
    out = t.sh("echo x > /dev/null && echo null-ok; head -c 5 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c")
    t.expect_eq(out.split(), ["null-ok", "5", "5"], "write /dev/null, read /dev/zero, /dev/urandom")


def _custom(t, allow: list[dict]):
    # c 240:77 (a "local/experimental" major no driver claims): an allowed open fails with
    # ENXIO, a denied one with EPERM — so no real device is ever touched.
    c = t.container(args=["sh", "-c", "stat -c '%F %t:%T %a %u:%g' /dev/conf-dev; "
                                      "echo hi 2>&1 > /dev/conf-dev"])
    c.bundle.config["linux"]["devices"] = [{"path": "/dev/conf-dev", "type": "c", "major": 240, "minor": 77,
                                            "fileMode": 0o662, "uid": 1000, "gid": 100}]
    c.bundle.config["linux"]["resources"]["devices"] = [{"allow": False, "access": "rwm"}] + allow
    c.bundle.write()
    return c


@check("devices.custom", CL, "Devices", MUST,
       "a linux.devices entry is created with its type, numbers, fileMode, uid and gid")
def custom(t):
    out = t.run(_custom(t, [{"allow": True, "type": "c", "major": 240, "minor": 77, "access": "rwm"}]))
    lines = out.splitlines()
    t.expect_eq(lines[0] if lines else "", "character special file f0:4d 662 1000:100", "stat of /dev/conf-dev")
    t.expect("No such device or address" in out, f"opening the allowed device: {out!r}")


@check("devices.allowlist-deny", CL, "Allowed Device List", MUST,
       "a device not allowed by linux.resources.devices cannot be opened")
def allowlist_deny(t):
    out = t.run(_custom(t, []))
    t.expect("Operation not permitted" in out, f"opening a denied device: {out!r}")


@check("devices.allowlist-order", CL, "Allowed Device List", MUST,
       "allowlist entries apply in order: a later deny overrides an earlier allow")
def allowlist_order(t):
    out = t.run(_custom(t, [{"allow": True, "type": "c", "major": 240, "minor": 77, "access": "rwm"},
                            {"allow": False, "type": "c", "major": 240, "minor": 77, "access": "w"}]))
    t.expect("Operation not permitted" in out, f"write although the last entry denies it: {out!r}")


@check("devices.allowlist-host-cgroup", CL, "Allowed Device List", MUST,
       "the host's devices cgroup of the container reflects the allowlist (v1 devices.list)")
def allowlist_cgroup(t):
    t.require(t.host.controller_version("devices") == "v1",
              "no v1 devices controller (v2 uses an eBPF program, not readable as a list)")
    c = _custom(t, [{"allow": True, "type": "c", "major": 240, "minor": 77, "access": "rwm"}])
    c.bundle.config["process"]["args"] = ["sleep", "1000"]
    c.bundle.write()
    c.create()
    pid = c.state()["pid"]
    listing = open(t.host.cgroup_dir(pid, "devices") + "/devices.list").read().split("\n")
    t.expect("a *:* rwm" not in listing, "devices.list still allows everything")
    t.expect("c 240:77 rwm" in listing, f"c 240:77 rwm missing from devices.list: {listing}")
