"""JSON Schema checks of config.json, state.json and features.json.

The schemas are the OCI runtime-spec v1.2.0 files kept in the repository's `spec/schema/`
(see spec/README.md for where each came from).  `validate_config(doc)` raises a `ConfigError`
whose path points at the field at fault (``linux.namespaces[0].type``) and whose message is
one short line (``'foo' is not one of ['mount', 'pid', ...]``).

jsonschema costs ~70 ms to import, so it is imported only inside the functions here, and the
built validators are cached for the life of the process (the test-suite validates hundreds of
documents; the CLI validates one).

The schema says what is well-formed; the rules it cannot express (absolute paths, known
capability names, namespace cross-checks) live in `ocirun.config`.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError, OCIError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "spec" / "schema"

# Where the upstream schema rejects what real engines send and runc accepts, we follow the
# engines.  Each entry: (file, path of keys to the object, key, new value, why).
_LOCAL_OVERRIDES = [
    ("defs-linux.json", ("definitions", "FileMode"), "maximum", 0xFFFFFFFF,
     "podman sends device fileMode with the file-type bits (8630 == S_IFCHR|0666); "
     "upstream caps it at 512, runc takes any uint32"),
]

# Other platforms' sections: a Linux runtime ignores them, but a config that carries one must
# still validate instead of failing on a schema file we do not ship.
_FOREIGN_PLATFORMS = ("solaris", "windows", "vm", "zos")

_MAX_MESSAGE = 160


def validate_config(doc: Any) -> None:
    """Check a parsed config.json; raise ConfigError(json_path, message) on the first fault."""
    _check("config-schema.json", doc, "config.json")


def validate_state(doc: Any) -> None:
    """Check a state document (what `ocirun state` prints) against state-schema.json."""
    _check("state-schema.json", doc, "state")


def validate_features(doc: Any) -> None:
    """Check a features document (what `ocirun features` prints) against features-schema.json."""
    _check("features-schema.json", doc, "features")


def json_path(parts) -> str:
    """["mounts", 3, "destination"] -> "mounts[3].destination"."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


# --------------------------------------------------------------------------- internals

def _check(schema_file: str, doc: Any, what: str) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(_validator(schema_file).iter_errors(doc))
    if error is None:
        return
    parts = list(error.absolute_path)
    message = " ".join(error.message.split())  # one line, whatever the instance held
    if error.validator == "required":
        # Point at the missing field itself, not at the object that lacks it.
        missing = _first_missing(error.validator_value, error.instance)
        if missing is not None:
            parts.append(missing)
            message = "is required"
    path = json_path(parts)
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE - 3] + "..."
    raise ConfigError(path or what, message)


def _first_missing(required, instance):
    if isinstance(instance, dict):
        for name in required:
            if name not in instance:
                return name
    return None


@lru_cache(maxsize=None)
def _validator(schema_file: str):
    from jsonschema import validators

    registry = _registry()
    schema = registry[_uri(schema_file)].contents
    cls = validators.validator_for(schema)
    return cls(schema, registry=registry)


@lru_cache(maxsize=1)
def _registry():
    """Every schema file, registered under its file:// URI so that relative $refs
    ("defs.json#/definitions/uint32") resolve between them."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    documents = {p.name: json.loads(p.read_bytes()) for p in SCHEMA_DIR.glob("*.json")}
    if "config-schema.json" not in documents:
        raise OCIError(f"config.json schema not found in {SCHEMA_DIR}")
    for name, keys, key, value, _why in _LOCAL_OVERRIDES:
        target = documents[name]
        for k in keys:
            target = target[k]
        target[key] = value
    for platform in _FOREIGN_PLATFORMS:
        documents.setdefault(f"config-{platform}.json", {platform: {"type": "object"}})
    resources = []
    for name, doc in documents.items():
        # Draft 4's "id" gives each document its base URI, which relative $refs resolve against.
        doc.setdefault("id", _uri(name))
        resources.append((_uri(name), Resource.from_contents(doc, default_specification=DRAFT4)))
    return Registry().with_resources(resources)


def _uri(name: str) -> str:
    return (SCHEMA_DIR / name).as_uri()
