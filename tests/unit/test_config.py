"""ocirun.config: real engine configs parse into typed objects; config faults the schema cannot
see are reported with the JSON path of the field at fault."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import helpers
from ocirun.config import Config, load_bundle, parse_config, parse_process
from ocirun.errors import ConfigError, OCIError

FIXTURES = helpers.FIXTURES
ENGINE_CONFIGS = sorted(FIXTURES.glob("*-config.json"))
EXEC_PROCESSES = sorted(FIXTURES.glob("*-exec-process.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def config_error(doc, bundle="/bundle") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, bundle)
    return info.value


@pytest.fixture
def docker_config() -> dict:
    return load(FIXTURES / "docker-config.json")


@pytest.mark.parametrize("path", ENGINE_CONFIGS, ids=lambda p: p.name)
def test_engine_configs_parse(path):
    doc = load(path)
    cfg = parse_config(doc, "/bundle")
    assert isinstance(cfg, Config)
    assert cfg.oci_version == "1.0.2-dev"
    assert cfg.process is not None and cfg.process.args
    assert cfg.root_path.startswith("/")
    assert [m.destination for m in cfg.mounts] == [m["destination"] for m in doc["mounts"]]
    assert {ns.type for ns in cfg.linux.namespaces} >= {"pid", "mount", "ipc", "uts", "network"}
    assert cfg.process.capabilities.bounding == doc["process"]["capabilities"]["bounding"]
    assert cfg.raw is doc


@pytest.mark.parametrize("path", EXEC_PROCESSES, ids=lambda p: p.name)
def test_engine_exec_processes_parse(path):
    proc = parse_process(load(path))
    assert proc.args and proc.cwd.startswith("/")


def test_relative_root_path_is_resolved_against_the_bundle(docker_config):
    docker_config["root"]["path"] = "rootfs"
    assert parse_config(docker_config, "/b").root_path == "/b/rootfs"


def test_docker_prestart_hook_is_parsed(docker_config):
    cfg = parse_config(docker_config, "/bundle")
    (hook,) = cfg.hooks["prestart"]
    assert hook.path == "/proc/20795/exe" and hook.json_path == "hooks.prestart[0]"


@pytest.mark.parametrize("mutate, path, message", [
    (lambda d: d["process"]["user"].update(uid="0"), "process.user.uid", "must be an integer"),
    (lambda d: d["linux"]["namespaces"][1].update(type="bogus"), "linux.namespaces[1].type", "unknown namespace"),
    (lambda d: d["mounts"][3].update(destination="sys/fs/cgroup"), "mounts[3].destination",
     "must be an absolute path"),
    (lambda d: d.pop("root"), "root", "is required"),
    (lambda d: d["root"].pop("path"), "root.path", "is required"),
    (lambda d: d["process"].update(cwd="tmp"), "process.cwd", "must be an absolute path"),
    (lambda d: d["process"].update(env=["NOEQUALS"]), "process.env[0]", "KEY=value"),
])
def test_bad_config_names_the_field(docker_config, mutate, path, message):
    mutate(docker_config)
    err = config_error(docker_config)
    assert err.path == path
    assert message in err.msg


def test_unknown_capability_names_the_field(docker_config):
    pytest.importorskip("ocirun.capabilities", reason="ocirun/capabilities.py not written yet")
    docker_config["process"]["capabilities"]["effective"][2] = "CAP_FLY"
    err = config_error(docker_config)
    assert err.path == "process.capabilities.effective[2]"
    assert "CAP_FLY" in err.msg


def test_load_bundle_parses_a_default_bundle(tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    bundle = helpers.make_bundle(tmp_path, ["echo", "hi"], rootfs=rootfs, hostname="box")
    cfg = load_bundle(str(bundle))
    assert cfg.process.args == ["echo", "hi"]
    assert cfg.hostname == "box"
    assert cfg.root_path == str(rootfs) and cfg.root_readonly
    assert cfg.bundle == str(bundle)


def test_load_bundle_reports_schema_faults_with_their_path(tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    bundle = helpers.make_bundle(tmp_path, ["true"], rootfs=rootfs, process={"user": {"uid": "root"}})
    with pytest.raises(ConfigError) as info:
        load_bundle(str(bundle))
    assert str(info.value) == "process.user.uid: 'root' is not of type 'integer'"


def test_load_bundle_without_config_json(tmp_path):
    with pytest.raises(OCIError, match="no such file or directory"):
        load_bundle(str(tmp_path))


def test_load_bundle_with_missing_rootfs(tmp_path):
    bundle = helpers.make_bundle(tmp_path, ["true"], rootfs=tmp_path / "nope")
    with pytest.raises(ConfigError) as info:
        load_bundle(str(bundle))
    assert info.value.path == "root.path"


# ---------------------------------------------------------------- tests/helpers.py itself

def test_deep_update_merges_replaces_and_deletes():
    cfg = {"process": {"args": ["a"], "env": ["X=1"], "user": {"uid": 0}}, "hostname": "h"}
    helpers.deep_update(cfg, {"process": {"args": ["b", "c"], "user": {"gid": 5}}, "hostname": None})
    assert cfg == {"process": {"args": ["b", "c"], "env": ["X=1"], "user": {"uid": 0, "gid": 5}}}


def test_make_bundle_writes_a_runc_spec_like_config(tmp_path):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", "exit 3"], rootfs="/somewhere")
    cfg = helpers.read_config(bundle)
    assert cfg["process"]["args"] == ["sh", "-c", "exit 3"]
    assert cfg["process"]["terminal"] is False
    assert cfg["root"] == {"path": "/somewhere", "readonly": True}
    assert [m["destination"] for m in cfg["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert cfg["linux"]["cgroupsPath"].startswith("/ocirun-test-")
    assert "ambient" not in cfg["process"]["capabilities"]


@pytest.mark.skipif(os.geteuid() != 0, reason="building the rootfs chowns /home/test: needs root")
def test_shared_rootfs_is_busybox_with_test_users(rootfs):
    busybox = rootfs / "bin" / "busybox"
    assert busybox.is_file() and not busybox.is_symlink()  # never replaced by its own applet link
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    passwd = (rootfs / "etc" / "passwd").read_text()
    assert "root:x:0:0:" in passwd and "test:x:1000:1000:" in passwd and "nobody:x:65534:65534:" in passwd
    for d in ("proc", "sys", "dev", "tmp"):
        assert (rootfs / d).is_dir()
