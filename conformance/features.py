"""features.md / features-linux.md: the `features` document is well formed and agrees with
what the runtime actually does.  A runtime without a `features` command skips these (the
command is part of runc's CLI, not of the spec's operations)."""
from __future__ import annotations

import json

from .framework import MUST, SHOULD, Fail, check

F = "features.md"
FL = "features-linux.md"
NS_CONFIG = ["pid", "network", "ipc", "uts", "mount", "cgroup"]


def features(t) -> dict:
    r = t.runtime("features")
    t.require(r.returncode == 0, f"the runtime has no working `features` command ({r.stderr.strip()[:100]})")
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise Fail(f"`features` output is not JSON: {r.stdout[:200]!r}") from None


@check("features.document", F, "Features Structure", MUST,
       "features prints ociVersionMin/ociVersionMax and well-typed optional fields")
def document(t):
    f = features(t)
    for key in ("ociVersionMin", "ociVersionMax"):
        t.expect(isinstance(f.get(key), str) and f[key].count(".") >= 2, f"{key} REQUIRED, got {f.get(key)!r}")
    for key in ("hooks", "mountOptions"):
        if key in f:
            t.expect(isinstance(f[key], list) and all(isinstance(x, str) for x in f[key]), f"{key} must be a list of strings")
    lin = f.get("linux", {})
    for key in ("namespaces", "capabilities"):
        if key in lin:
            t.expect(isinstance(lin[key], list), f"linux.{key} must be a list")


@check("features.hooks-run", F, "Features Structure", SHOULD,
       "every hook kind listed in features runs when configured")
def hooks_run(t):
    listed = features(t).get("hooks")
    t.require(bool(listed), "features lists no hooks")
    b = t.bundle(["true"])
    b.config["hooks"] = {kind: [{"path": "/bin/sh" if kind != "startContainer" else "/bin/sh",
                                 "args": ["sh", "-c", f"echo {kind} >> {b.out if kind != 'startContainer' else '/out'}/ran"]}]
                         for kind in listed}
    b.write()
    c = t.container(b)
    t.run(c)
    ran = set((c.bundle.out_file("ran") or "").split())
    t.expect_eq(sorted(set(listed) - ran), [], "listed hook kinds that did not run")


@check("features.namespaces-usable", FL, "Namespaces", SHOULD,
       "every namespace listed in features can be requested (user/time with their settings)")
def namespaces_usable(t):
    listed = features(t).get("linux", {}).get("namespaces", [])
    t.require(bool(listed), "features lists no namespaces")
    bad = []
    for kind in listed:
        if kind in ("time",) and not t.host.has_namespace("time"):
            continue
        c = t.container(args=["true"])
        ns = [{"type": k} for k in NS_CONFIG]
        if kind not in NS_CONFIG:
            ns.append({"type": kind})
        cfg = c.bundle.config
        cfg["linux"]["namespaces"] = ns
        if kind == "user":
            cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 400000, "size": 65536}]
            cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 400000, "size": 65536}]
            cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] in ("/proc", "/dev", "/out")]
        c.bundle.write()
        r = c.create(check=False)
        if r.returncode != 0:
            bad.append(f"{kind}: {r.stderr.strip()[-120:]}")
    t.expect(not bad, f"listed namespaces that fail: {bad}")


@check("features.seccomp-actions", FL, "Seccomp", SHOULD,
       "every seccomp action listed in features is accepted in a profile")
def seccomp_actions(t):
    sec = features(t).get("linux", {}).get("seccomp", {})
    t.require(sec.get("enabled", bool(sec.get("actions"))), "features says seccomp is not enabled")
    bad = []
    for action in sec.get("actions", []):
        if action == "SCMP_ACT_NOTIFY":
            continue  # needs a listenerPath and an agent on the other end
        c = t.container(args=["true"], linux={"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                                                          "syscalls": [{"names": ["acct"], "action": action}]}})
        r = c.create(check=False)
        if r.returncode != 0:
            bad.append(f"{action}: {r.stderr.strip()[-120:]}")
    t.expect(not bad, f"listed actions that are refused: {bad}")


@check("features.capabilities-known", FL, "Capabilities", SHOULD,
       "every capability listed in features is accepted by name (those in the host's bounding set)")
def capabilities_known(t):
    listed = features(t).get("linux", {}).get("capabilities", [])
    t.require(bool(listed), "features lists no capabilities")
    grantable = [c for c in listed if c in t.host.bounding_caps()]
    c = t.container(args=["true"], process={"capabilities": {"bounding": grantable, "permitted": grantable,
                                                             "effective": grantable}})
    r = c.create(check=False)
    t.expect(r.returncode == 0, f"create with every listed (and grantable) capability failed: {r.stderr.strip()[-200:]}")
