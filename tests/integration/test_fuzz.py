"""A small fuzzer of our own (issue 13, "Also"): mutated config.json files and hostile filesystem
objects in a bundle, a few hundred cases per run with a fixed seed.

Every case must end in success or in one line on stderr — never a Python traceback, never
"internal error", never a hang (each command has a deadline) — and leave nothing behind: no
state, cgroup, mount or process.  A case is `ocirun create` (the whole setup but the final
execve: validation, cgroups, namespaces, mounts, devices, hooks) then `delete --force` when it
succeeded.  The container's program never runs, so hostile arguments are harmless.

Safety of the host: mutations never choose what could reach outside the test's own objects —
cgroupsPath keeps our prefix, root.path and mount destinations resolve inside a private copy
of the rootfs, no sysctl, no propagation change, no joined mount or user namespace.

Reproduce a failure: the report names the case number; FUZZ_SEED=<seed> FUZZ_CASES=<n> change the
run (the default seed is fixed so that CI runs are comparable).
"""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import time

import helpers
from helpers import run_ocirun


SEED = int(os.environ.get("FUZZ_SEED", "13"))
CASES = int(os.environ.get("FUZZ_CASES", "260"))
DEADLINE = 20  # seconds per command: a create answers in well under one

HOSTILE_STRINGS = [
    "", " ", "\x00", "a\x00b", "\udcff", "\ud800x", "\x1b[2J\x1b]0;t\x07", "line\nbreak\r",
    "\u202e\u200b", "é中\U0001f600", "%s%n%x", "../../../../x", "./x/../../y", "/x/./y//z",
    "x" * 5000, "/" + "d/" * 2000, "-1", "0", "1e400", "NaN", "true", "null", "{}", "[]",
    "CAP_SYS_ADMIN", "RLIMIT_NOFILE", "SCMP_ACT_KILL", "bind", "tmpfs", "ro", "rw,rw",
]
HOSTILE_NUMBERS = [
    0, -1, 1, 7, 4096, 2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
    2**64, -2**63, -2**64, 10**30, 0.5, -0.0, 1e308, 3.0,
]
OTHER_VALUES = [None, True, False, [], {}, [None], {"": ""}, [[[]]], {"a": {"b": {}}}]

# Fragments that take the parser into every section (then mutated like the rest).
FRAGMENTS = [
    (["process", "rlimits"], [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                              {"type": "RLIMIT_AS", "soft": 1 << 30, "hard": 1 << 30}]),
    (["process", "user"], {"uid": 1000, "gid": 1000, "umask": 0o22, "additionalGids": [5, 6]}),
    (["process", "capabilities", "ambient"], ["CAP_KILL"]),
    (["process", "oomScoreAdj"], 100),
    (["process", "ioPriority"], {"class": "IOPRIO_CLASS_BE", "priority": 4}),
    (["process", "scheduler"], {"policy": "SCHED_OTHER", "nice": 5}),
    (["process", "execCPUAffinity"], {"initial": "0", "final": "0-1"}),
    (["process", "consoleSize"], {"height": 24, "width": 80}),
    (["process", "apparmorProfile"], "unconfined"),
    (["hooks"], {"createRuntime": [{"path": "/bin/true", "args": ["true", "x"], "env": ["A=1"], "timeout": 5}],
                 "poststop": [{"path": "/bin/true"}]}),
    (["hooks", "prestart"], [{"path": "/nonexistent-hook"}]),
    (["linux", "devices"], [{"path": "/dev/fuzz", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
                             "uid": 0, "gid": 0}, {"path": "/dev/fuzzpipe", "type": "p"}]),
    (["linux", "resources", "memory"], {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20}),
    (["linux", "resources", "pids"], {"limit": 100}),
    (["linux", "resources", "cpu"], {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}),
    (["linux", "resources", "blockIO"], {"weight": 500}),
    (["linux", "resources", "devices"], [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]),
    (["linux", "resources", "unified"], {"pids.max": "10"}),
    (["linux", "resources", "hugepageLimits"], [{"pageSize": "2MB", "limit": 0}]),
    (["linux", "seccomp"], {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                                          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
    (["linux", "personality"], {"domain": "LINUX32"}),
    (["linux", "timeOffsets"], {"monotonic": {"secs": 10, "nanosecs": 0}}),
    (["linux", "maskedPaths"], ["/proc/kcore", "/nonexistent"]),
    (["linux", "readonlyPaths"], ["/proc/sys", "/etc"]),
    (["linux", "mountLabel"], "system_u:object_r:container_file_t:s0"),
    (["linux", "netDevices"], {"ocifuzz0": {"name": "eth9"}}),
    (["linux", "intelRdt"], {"closID": "x"}),
    (["domainname"], "example.org"),
    (["annotations"], {"org.example.a": "b", "io.kubernetes.cri.sandbox-id": "x"}),
    (["mounts", "+"], {"destination": "/fuzz", "type": "tmpfs", "source": "tmpfs",
                       "options": ["size=1m", "mode=700", "nosuid", "tmpcopyup"]}),
    (["mounts", "+"], {"destination": "/fuzzbind", "type": "bind", "source": "BUNDLE/config.json",
                       "options": ["bind", "ro"]}),
    (["mounts", "+"], {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["ro", "nosuid"]}),
    (["linux", "namespaces", "+"], {"type": "time"}),
    (["linux", "namespaces", "+"], {"type": "user"}),
    (["linux", "uidMappings"], [{"containerID": 0, "hostID": 100000, "size": 65536}]),
    (["linux", "gidMappings"], [{"containerID": 0, "hostID": 100000, "size": 65536}]),
]


class Mutator:
    """Random edits of a config document: a value of another type, a hostile string or number,
    a deleted key, deep nesting, an inserted fragment."""

    def __init__(self, rng: random.Random, bundle: str, hostile_paths: list[str], cgroup_base: str):
        self.rng = rng
        self.bundle = bundle
        self.hostile_paths = hostile_paths
        self.cgroup_base = cgroup_base

    def config(self, base: dict, case: int) -> tuple[dict, list[str]]:
        doc = copy.deepcopy(base)
        doc["linux"]["cgroupsPath"] = f"{self.cgroup_base}-{case}"
        done = []
        for _ in range(self.rng.randint(0, 2)):
            where, value = self.rng.choice(FRAGMENTS)
            value = json.loads(json.dumps(value).replace("BUNDLE", self.bundle))
            self._insert(doc, where, value)
            done.append("insert " + "/".join(where))
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            done.append(self._mutate(doc, case))
        return doc, done

    @staticmethod
    def _insert(doc, where, value) -> None:
        """doc[where...] = value, making the dicts on the way; a last key "+" appends to a list."""
        append = where[-1] == "+"
        keys = where[:-1] if append else where
        obj = doc
        for key in keys[:-1]:
            if not isinstance(obj.get(key), dict):
                obj[key] = {}
            obj = obj[key]
        if append:
            if not isinstance(obj.get(keys[-1]), list):
                obj[keys[-1]] = []
            obj[keys[-1]].append(value)
        else:
            obj[keys[-1]] = value

    def _pick(self, doc) -> tuple[object, object, list]:
        """A random (container, key, path) in the document."""
        parent, key, path = None, None, []
        node = doc
        while isinstance(node, (dict, list)) and node and (parent is None or self.rng.random() < 0.75):
            k = self.rng.choice(list(node)) if isinstance(node, dict) else self.rng.randrange(len(node))
            parent, key, node = node, k, node[k]
            path.append(k)
        return parent, key, path

    def _mutate(self, doc, case: int) -> str:
        parent, key, path = self._pick(doc)
        if parent is None:
            return "nothing"
        where = "/".join(map(str, path))
        if not self._safe(path):
            return f"skip {where}"
        old = parent[key]
        op = self.rng.random()
        if op < 0.15:
            parent.pop(key)
            return f"delete {where}"
        if op < 0.65 and isinstance(old, str):  # same type, hostile value: past the schema, deeper in
            value = self.rng.choice(HOSTILE_STRINGS + self.hostile_paths)
        elif op < 0.65 and isinstance(old, int) and not isinstance(old, bool):
            value = self.rng.choice([n for n in HOSTILE_NUMBERS if isinstance(n, int)])
        elif op < 0.65 and isinstance(old, list):
            value = old * self.rng.choice((0, 2, 100))
        elif op < 0.75:
            value = self.rng.choice(HOSTILE_STRINGS + self.hostile_paths)
        elif op < 0.85:
            value = self.rng.choice(HOSTILE_NUMBERS)
        elif op < 0.95:
            value = copy.deepcopy(self.rng.choice(OTHER_VALUES))
        else:
            value = f"@@DEEP{self.rng.choice((50, 500, 990, 1500))}@@"  # see to_text
        if path == ["linux", "cgroupsPath"] and isinstance(value, str):
            value = f"{self.cgroup_base}-{case}" + self.rng.choice(("", "/sub/dir", "/.", "/a/../b", "\x00x", ":x"))
        parent[key] = value
        return f"set {where} = {short(value)}"

    @staticmethod
    def _safe(path: list) -> bool:
        """Never point what the container mounts or joins at the host."""
        text = "/".join(map(str, path))
        return not (text.startswith("linux/sysctl") or text == "linux/rootfsPropagation"
                    or text.startswith("root/path"))


def to_text(doc) -> str:
    """json.dumps, with each "@@DEEP<n>@@" marker replaced by arrays and objects nested n deep
    (built as text: Python's own json and deepcopy would hit the recursion limit)."""
    text = json.dumps(doc)
    while "\"@@DEEP" in text:
        start = text.index("\"@@DEEP")
        end = text.index("@@\"", start + 7)
        depth = int(text[start + 7:end])
        opening = "".join("[" if i % 2 else '{"k":' for i in range(depth))
        closing = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
        text = text[:start] + opening + "0" + closing + text[end + 3:]
    return text


def short(value) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


# ============================================================================ the cases

def hostile_objects(tmp_path) -> dict[str, str]:
    """Filesystem objects that are not what their name promises."""
    d = tmp_path / "objs"
    d.mkdir()
    os.mkfifo(d / "fifo")
    os.symlink("/dev/zero", d / "zero")
    os.mkdir(d / "dir")
    os.symlink(d / "nowhere", d / "dangling")
    os.symlink(d / "loop", d / "loop")
    (d / "empty").write_bytes(b"")
    (d / "garbage").write_bytes(bytes(range(256)) * 4)
    (d / "unreadable").write_text("{}")
    os.chmod(d / "unreadable", 0)  # root reads it anyway: it must be parsed, not trusted
    return {p.name: str(p) for p in d.iterdir()}


def check(r, what: str, problems: list[str]) -> None:
    err = r.stderr
    if "Traceback" in err or "internal error" in err:
        problems.append(f"{what}: traceback or internal error: {err.strip()[-400:]}")
        return
    if r.returncode != 0:
        lines = [ln for ln in err.strip().splitlines() if "level=warning" not in ln]
        if len(lines) != 1 or r.returncode != 1:
            problems.append(f"{what}: exit {r.returncode}, stderr not one line: {err[-400:]!r}")


def run_case(what: str, bundle, root, cid: str, problems: list[str]) -> bool:
    """create, then delete --force; True when create succeeded."""
    try:
        r = run_ocirun("create", "-b", bundle, cid, root=root, timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        problems.append(f"{what}: create hung for {DEADLINE}s")
        r = None
    if r is not None:
        check(r, what, problems)
    if r is None or r.returncode == 0 or os.listdir(root):
        try:
            d = run_ocirun("delete", "--force", cid, root=root, timeout=DEADLINE)
            if r is not None and r.returncode == 0 and d.returncode != 0:
                problems.append(f"{what}: delete --force failed: {d.stderr.strip()}")
        except subprocess.TimeoutExpired:
            problems.append(f"{what}: delete --force hung for {DEADLINE}s")
    if os.listdir(root):
        problems.append(f"{what}: state left: {os.listdir(root)}")
    return r is not None and r.returncode == 0


def test_fuzz_config_json(ocirun_root, tmp_path):
    rng = random.Random(SEED)
    rootfs = helpers.private_rootfs(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    objs = hostile_objects(tmp_path)
    run_tag = f"{helpers.TEST_PREFIX}-fz{rng.randrange(1 << 24):06x}"
    base = helpers.default_config(["true"], rootfs=rootfs)
    mutator = Mutator(rng, str(bundle), list(objs.values()), f"/{run_tag}")
    problems: list[str] = []
    ok = 0
    started = time.monotonic()
    for case in range(CASES):
        doc, done = mutator.config(base, case)
        what = f"case {case} ({'; '.join(done)})"
        text = to_text(doc)
        if rng.random() < 0.08:  # the text itself: cut short, or a byte changed
            cut = rng.randrange(len(text))
            data = (text[:cut] if rng.random() < 0.5 else text[:cut] + rng.choice("\x00}]\"\\,:x") + text[cut + 1:])
            (bundle / "config.json").write_bytes(data.encode("utf-8", "surrogatepass"))
            what += f" (text changed at {cut})"
        else:
            (bundle / "config.json").write_text(text)
        ok += run_case(what, bundle, ocirun_root, f"{run_tag}-{case}", problems)
    elapsed = time.monotonic() - started
    problems += leftovers(rootfs, run_tag)
    print(f"fuzz: seed {SEED}, {CASES} cases, {ok} created, {elapsed:.1f}s")
    assert not problems, f"{len(problems)} problems (seed {SEED}):\n" + "\n".join(problems[:30])
    assert ok > CASES // 10, "the mutations are too hostile: hardly any case got past validation"


BUNDLE_CASES = [
    # (what, where: "bundle" | "config" | "root" | "ns", object name)
    *((f"bundle is {o}", "bundle", o) for o in ("fifo", "zero", "empty", "dangling", "loop")),
    *((f"config.json is {o}", "config", o) for o in ("fifo", "zero", "dir", "dangling", "loop", "empty",
                                                     "garbage", "unreadable")),
    *((f"root.path is {o}", "root", o) for o in ("fifo", "zero", "empty", "dangling", "loop")),
    *((f"a namespace path is {o}", "ns", o) for o in ("fifo", "zero", "dir", "dangling", "loop", "empty")),
]


def test_fuzz_hostile_bundle_objects(ocirun_root, tmp_path):
    objs = hostile_objects(tmp_path)
    problems: list[str] = []
    for i, (what, where, name) in enumerate(BUNDLE_CASES):
        target = objs[name]
        bundle = tmp_path / f"b{i}"
        bundle.mkdir()
        config = helpers.default_config(["true"])
        config["linux"]["cgroupsPath"] += f"-{i}"
        if where == "root":
            config["root"]["path"] = target
        if where == "ns":
            config["linux"]["namespaces"][1]["path"] = target  # network
        if where == "config":
            os.symlink(target, bundle / "config.json")
        else:
            helpers.write_config(bundle, config)
        if where == "bundle":
            bundle = target
        started = time.monotonic()
        ok = run_case(what, bundle, ocirun_root, f"ho{i}", problems)
        if ok:
            problems.append(f"{what}: create succeeded")
        if time.monotonic() - started > 5:
            problems.append(f"{what}: took {time.monotonic() - started:.1f}s")
    assert not problems, "\n".join(problems)


def leftovers(rootfs, run_tag: str) -> list[str]:
    found = [f"mount left: {m}" for m in helpers.leftover_mounts(rootfs)]
    found += [f"cgroup left: {c}" for c in helpers.leftover_cgroups(run_tag)]
    target = os.path.realpath(rootfs)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/root") == target:
                    found.append(f"process left: {name}")
            except OSError:
                pass
    return found
