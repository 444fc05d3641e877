"""The config.json files real engines generated (docker, podman, containerd; see
../shared/fixtures/client-configs/ and ../shared/reference/clients.md): they parse and
validate unchanged, and each runs once with ocirun after the smallest changes this host needs.

What `adapt()` changes, and why (everything else is run exactly as the engine wrote it):
  * root.path        -> a private copy of the test busybox rootfs (the engine's overlay mount
                        does not exist here); root.readonly is kept.
  * process.args     -> a short command that prints a marker (the engines' own commands sleep or
                        exit 3 on purpose); podman-rich also reads its bind-mounted volume.
  * linux.cgroupsPath -> /ocirun-test-<random>: the suite's leak check finds it, and we do not
                        leave the engines' parent cgroups (/docker, /libpod_parent, /ceo) behind.
  * bind-mount sources under /var/lib/example/ (the engines' host paths, anonymised) -> files or
                        directories made in tmp_path (hosts, hostname, resolv.conf, .containerenv
                        are files; the shm and volume dirs are directories).
  * process.rlimits   hard and soft capped at this process's hard limit: raising a hard limit
                        needs CAP_SYS_RESOURCE, which this host's bounding set lacks (podman asks
                        for NOFILE 20000, exactly the hard limit here: unchanged in practice).
  * capabilities      names this host's bounding set lacks (CAP_SYS_RESOURCE) are dropped from
                        every set: no runtime can grant them here (none of the four asks today).
  * process.oomScoreAdj raised to our own value if below it: lowering it needs CAP_SYS_RESOURCE.
  * hooks             hooks whose binary does not exist here are dropped: docker's prestart hook
                        is `/proc/<dockerd pid>/exe libnetwork-setkey ...` (dockerd is not running).
  * linux.seccomp     kept: ocirun does not implement seccomp yet and warns on stderr (the
                        container then runs without a filter); once it does, the filter applies.
"""
from __future__ import annotations

import copy
import json
import os
import re
import resource
import secrets
from pathlib import Path

import pytest

import helpers
from helpers import run_ocirun
from ocirun import capabilities, schema
from ocirun.config import parse_config

FIXTURES = helpers.FIXTURES
ENGINES = ["containerd", "docker", "podman", "podman-rich"]
FILE_MOUNTS = {"hosts", "hostname", "resolv.conf", ".containerenv"}
EXAMPLE_HOST_PATH = "/var/lib/example/"


def load(engine: str) -> dict:
    return json.loads((FIXTURES / f"{engine}-config.json").read_text())


@pytest.mark.rootless
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_config_parses_and_validates(engine, tmp_path):
    doc = load(engine)
    schema.validate_config(doc)
    cfg = parse_config(copy.deepcopy(doc), str(tmp_path))
    assert cfg.process is not None and cfg.process.args == doc["process"]["args"]
    assert len(cfg.mounts) == len(doc["mounts"])
    assert cfg.has_new_namespace("mount") and cfg.has_new_namespace("pid")


@pytest.mark.rootless
def test_exec_process_files_parse():
    # The process.json files engines hand to `exec --process` (exec itself is not done yet).
    from ocirun.config import parse_process
    for engine in ("containerd", "docker", "podman"):
        doc = json.loads((FIXTURES / f"{engine}-exec-process.json").read_text())
        proc = parse_process(doc)
        assert proc.args


# ============================================================================ running them

def _own_bounding_caps() -> set[str]:
    with open("/proc/self/status") as f:
        bnd = int(next(line for line in f if line.startswith("CapBnd:")).split()[1], 16)
    return {name for name, bit in capabilities.CAPS.items() if bnd >> bit & 1}


def _own_oom_score_adj() -> int:
    with open("/proc/self/oom_score_adj") as f:
        return int(f.read())


def _fake_host_path(source: str, tmp_path: Path) -> str:
    """A file or directory in tmp_path standing for the engine's host path `source`."""
    rel = source[len(EXAMPLE_HOST_PATH):]
    dest = tmp_path / "host" / rel
    if dest.name in FILE_MOUNTS:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f"fake {dest.name}\n")
    else:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "f").write_text("volume-data\n")
    return str(dest)


def _hook_exists(hook: dict) -> bool:
    # /proc/<pid>/exe may exist by chance, as some other process: docker's hook is recognised
    # by its argument and dropped in any case.
    if re.fullmatch(r"/proc/\d+/exe", hook["path"]) and "libnetwork-setkey" in hook.get("args", []):
        return False
    return os.path.exists(hook["path"])


def adapt(engine: str, doc: dict, tmp_path: Path) -> dict:
    """The changes the module docstring lists, and nothing else."""
    doc = copy.deepcopy(doc)
    doc["root"]["path"] = str(helpers.private_rootfs(tmp_path))
    script = f"echo ok-{engine}"
    if engine == "podman-rich":
        script += "; cat /data/f; id -u"
    doc["process"]["args"] = ["sh", "-c", script]
    doc["linux"]["cgroupsPath"] = f"/{helpers.TEST_PREFIX}-{secrets.token_hex(6)}"
    for m in doc.get("mounts", []):
        if m.get("source", "").startswith(EXAMPLE_HOST_PATH):
            m["source"] = _fake_host_path(m["source"], tmp_path)
    for rl in doc["process"].get("rlimits", []):
        res = getattr(resource, rl["type"])
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            rl["hard"] = min(rl["hard"], hard)
            rl["soft"] = min(rl["soft"], rl["hard"])
    have = _own_bounding_caps()
    for key, names in (doc["process"].get("capabilities") or {}).items():
        doc["process"]["capabilities"][key] = [n for n in names if n in have]
    if "oomScoreAdj" in doc["process"]:
        doc["process"]["oomScoreAdj"] = max(doc["process"]["oomScoreAdj"], _own_oom_score_adj())
    hooks = doc.get("hooks") or {}
    for kind in list(hooks):
        hooks[kind] = [h for h in hooks[kind] if _hook_exists(h)]
        if not hooks[kind]:
            del hooks[kind]
    if "hooks" in doc and not hooks:
        del doc["hooks"]
    return doc


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_config_runs(engine, ocirun_root, tmp_path):
    doc = adapt(engine, load(engine), tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    helpers.write_config(bundle, doc)
    pid_file = tmp_path / "pid"
    # The engines' way: create with a pid file and a JSON log, start, wait, delete.
    r = run_ocirun("--log", tmp_path / "log.json", "--log-format", "json", "run", "-b", bundle,
                   "--pid-file", pid_file, "e1", root=ocirun_root)
    assert r.returncode == 0, (r.stdout, r.stderr, _log(tmp_path))
    lines = r.stdout.splitlines()
    assert lines[0] == f"ok-{engine}", r.stdout
    if engine == "podman-rich":
        assert lines[1:] == ["volume-data", "65534"], r.stdout
    assert pid_file.read_text().isdigit()
    if doc["linux"].get("seccomp") and not _seccomp_supported():
        # Not silently: the log has a warning that the container ran without the filter.
        warnings = [json.loads(line) for line in _log(tmp_path).splitlines()]
        assert any(w["level"] == "warning" and "seccomp" in w["msg"] for w in warnings), warnings
    assert os.listdir(ocirun_root) == []


def _seccomp_supported() -> bool:
    features = json.loads(run_ocirun("features").stdout)
    return features["linux"].get("seccomp", {}).get("enabled", False)


def _log(tmp_path: Path) -> str:
    p = tmp_path / "log.json"
    return p.read_text() if p.exists() else ""
