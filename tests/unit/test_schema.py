"""ocirun.schema: the vendored runtime-spec v1.2.0 schema accepts what engines send, and
rejects bad documents with the JSON path of the field at fault."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from ocirun import schema
from ocirun.errors import ConfigError, OCIError

FIXTURES = helpers.FIXTURES
ENGINE_CONFIGS = sorted(FIXTURES.glob("*-config.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def podman_config() -> dict:
    return load(FIXTURES / "podman-rich-config.json")


def schema_error(doc) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        schema.validate_config(doc)
    return info.value


def test_there_are_four_engine_configs():
    assert [p.name for p in ENGINE_CONFIGS] == [
        "containerd-config.json", "docker-config.json", "podman-config.json", "podman-rich-config.json"]


@pytest.mark.parametrize("path", ENGINE_CONFIGS, ids=lambda p: p.name)
def test_engine_configs_are_valid(path):
    schema.validate_config(load(path))


def test_runc_spec_like_default_is_valid():
    schema.validate_config(helpers.default_config(["true"], rootfs="/nonexistent"))


def test_spec_1_2_fields_are_known():
    doc = helpers.default_config(["true"], rootfs="/x")
    helpers.deep_update(doc, {
        "process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
                    "scheduler": {"policy": "SCHED_BATCH", "nice": 5},
                    "execCPUAffinity": {"initial": "0", "final": "0-1"},
                    "user": {"umask": 0o22}},
        "linux": {"namespaces": [{"type": "time"}, {"type": "network"}],
                  "timeOffsets": {"monotonic": {"secs": 10, "nanosecs": 5}},
                  "netDevices": {"veth0": {"name": "eth0"}},
                  "personality": {"domain": "LINUX32"}},
        "mounts": [{"destination": "/m", "type": "bind", "source": "/tmp", "options": ["rbind", "idmap"],
                    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                    "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}],
        "hooks": {"createRuntime": [{"path": "/bin/true", "timeout": 5}]},
    })
    schema.validate_config(doc)


@pytest.mark.parametrize("mutate, path, message", [
    (lambda d: d["process"]["user"].update(uid="abc"), "process.user.uid", "'abc' is not of type 'integer'"),
    (lambda d: d["process"]["user"].update(uid=-1), "process.user.uid", "-1 is less than the minimum of 0"),
    (lambda d: d["linux"]["namespaces"][0].update(type="foo"), "linux.namespaces[0].type", "'foo' is not one of"),
    (lambda d: d["mounts"][3].update(destination=5), "mounts[3].destination", "5 is not of type 'string'"),
    (lambda d: d["mounts"][3].pop("destination"), "mounts[3].destination", "is required"),
    (lambda d: d.pop("ociVersion"), "ociVersion", "is required"),
    (lambda d: d["root"].pop("path"), "root.path", "is required"),
    (lambda d: d["process"].update(args="sh"), "process.args", "'sh' is not of type 'array'"),
    (lambda d: d["process"]["rlimits"][0].update(type="NOFILE"), "process.rlimits[0].type", "does not match"),
    (lambda d: d.update(hooks={"prestart": [{"path": "/x", "timeout": 0}]}), "hooks.prestart[0].timeout",
     "0 is less than the minimum of 1"),
    (lambda d: d["linux"]["seccomp"].update(defaultAction="SCMP_ACT_NOPE"), "linux.seccomp.defaultAction",
     "is not one of"),
    (lambda d: d["linux"]["devices"][0].update(type="x"), "linux.devices[0].type", "does not match"),
    (lambda d: d["process"].update(ioPriority={"class": "IOPRIO_CLASS_X"}), "process.ioPriority.class",
     "is not one of"),
])
def test_bad_config_names_the_field(podman_config, mutate, path, message):
    mutate(podman_config)
    err = schema_error(podman_config)
    assert err.path == path
    assert message in err.msg
    assert str(err).startswith(f"{path}: ")


def test_whole_document_of_wrong_type():
    err = schema_error([1, 2])
    assert err.path == "config.json"
    assert "is not of type 'object'" in err.msg


def test_long_messages_are_cut_to_one_short_line(podman_config):
    podman_config["process"]["env"] = "x" * 1000
    err = schema_error(podman_config)
    assert err.path == "process.env"
    assert len(err.msg) <= 160 and "\n" not in err.msg


def test_podman_device_file_mode_with_type_bits_is_accepted(podman_config):
    # Upstream caps fileMode at 512; podman sends S_IFCHR|0666 and runc takes it.
    assert podman_config["linux"]["devices"][0]["fileMode"] == 8630
    schema.validate_config(podman_config)


def test_foreign_platform_sections_do_not_break_validation(podman_config):
    podman_config["windows"] = {"layerFolders": ["C:\\x"]}
    schema.validate_config(podman_config)
    podman_config["windows"] = 5
    assert schema_error(podman_config).path == "windows"


def test_config_error_is_an_oci_error():
    assert issubclass(ConfigError, OCIError)


def test_state_schema():
    good = {"ociVersion": "1.2.0", "id": "c1", "status": "running", "pid": 42, "bundle": "/b",
            "annotations": {"a": "b"}}
    schema.validate_state(good)
    bad = dict(good, status="paused")
    with pytest.raises(ConfigError) as info:
        schema.validate_state(bad)
    assert info.value.path == "status"
    with pytest.raises(ConfigError) as info:
        schema.validate_state({k: v for k, v in good.items() if k != "bundle"})
    assert info.value.path == "bundle" and info.value.msg == "is required"


def test_features_schema():
    doc = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0", "hooks": ["prestart"],
           "linux": {"namespaces": ["pid", "time"], "capabilities": ["CAP_KILL"],
                     "seccomp": {"enabled": True, "knownFlags": ["SECCOMP_FILTER_FLAG_LOG"]},
                     "mountExtensions": {"idmap": {"enabled": False}}}}
    schema.validate_features(doc)
    doc["linux"]["namespaces"] = ["bogus"]
    with pytest.raises(ConfigError) as info:
        schema.validate_features(doc)
    assert info.value.path == "linux.namespaces[0]"


@pytest.mark.parametrize("parts, text", [
    ([], ""),
    (["ociVersion"], "ociVersion"),
    (["mounts", 3, "destination"], "mounts[3].destination"),
    (["linux", "namespaces", 0, "type"], "linux.namespaces[0].type"),
    (["process", "capabilities", "bounding", 2], "process.capabilities.bounding[2]"),
])
def test_json_path(parts, text):
    assert schema.json_path(parts) == text


def test_validator_is_built_once():
    assert schema._validator("config-schema.json") is schema._validator("config-schema.json")


def test_every_schema_file_is_json_with_resolvable_refs():
    for path in schema.SCHEMA_DIR.glob("*.json"):
        json.loads(path.read_text())
    # A $ref to a missing file or definition raises when the validator meets it: walk them all.
    from referencing.exceptions import Unresolvable
    registry = schema._registry()
    for path in schema.SCHEMA_DIR.glob("*.json"):
        resolver = registry.resolver(base_uri=path.as_uri())
        for ref in _refs(json.loads(path.read_text())):
            try:
                resolver.lookup(ref)
            except Unresolvable:  # pragma: no cover - the assertion message is the point
                pytest.fail(f"{path.name}: unresolvable $ref {ref}")


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_importing_schema_or_config_does_not_import_jsonschema():
    code = ("import sys, ocirun.schema, ocirun.config; "
            "bad = [m for m in ('jsonschema', 'referencing') if m in sys.modules]; "
            "sys.exit(f'imported at module level: {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_validation_does_not_mutate_the_document(podman_config):
    before = copy.deepcopy(podman_config)
    schema.validate_config(podman_config)
    assert podman_config == before
