"""JSON Schema checks of config.json, state.json and features.json.

The schemas are the OCI runtime-spec v1.2.0 files kept in the repository's `spec/schema/`
(see spec/README.md for where each came from), installed as `ocirun/spec/schema/` (setup.py).  `validate_config(doc)` raises a `ConfigError`
whose path points at the field at fault (``linux.namespaces[0].type``) and whose message is
one short line (``'foo' is not one of ['mount', 'pid', ...]``).

Two validators, one verdict.  jsonschema costs ~60 ms to import and build (half a `run`), so
the hot path first asks `ocirun/_schema_compiled.py`: plain Python that fastjsonschema generated
from the same schema files (`python -m ocirun.schema --regenerate`), standalone (it imports only
`re`) and ~0.1 ms per document.  It only ever *accepts*: when it rejects a document, or when its
recorded digest of the schema inputs no longer matches the files, jsonschema runs (imported
lazily, its validators cached for the life of the process) and its verdict and message are the
ones the user sees.  So a bad config costs the old ~60 ms and gets the same message as before,
and a difference between the two libraries can only cost time, never let a bad document in —
provided the generated code accepts nothing jsonschema rejects, which
tests/unit/test_schema_fast.py checks on every fixture and on thousands of mutated documents.

Why the generated module is committed rather than generated into a cache at first use: a runtime
that writes code it later imports needs a writable, trusted directory (root-owned, not shared
with containers) and a lock against parallel `create`s racing to write it; a committed file needs
neither, works on a read-only install, and makes fastjsonschema a development dependency only.

The schema says what is well-formed; the rules it cannot express (absolute paths, known
capability names, namespace cross-checks) live in `ocirun.config`.
"""
from __future__ import annotations

import os
from . import jsonio
from .errors import ConfigError, OCIError


def _find_schema_dir() -> str:
    """Where the schema files are: inside the package when it was installed from a wheel or an
    sdist (setup.py installs the repository's spec/ as ocirun/spec/), else the checkout's
    spec/schema beside the package (an editable install, PYTHONPATH).  One stat either way."""
    package = os.path.dirname(os.path.realpath(__file__))
    installed = os.path.join(package, "spec", "schema")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(package), "spec", "schema")


# A str here: no pathlib on the hot path (ARCHITECTURE.md, Startup speed); `SCHEMA_DIR` (a Path)
# is built on first use.
_SCHEMA_DIR = _find_schema_dir()


def __getattr__(name: str):
    if name == "SCHEMA_DIR":
        from pathlib import Path
        return Path(_SCHEMA_DIR)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Where the upstream schema rejects what real engines send and runc accepts, we follow the
# engines.  Each entry: (file, path of keys to the object, key, new value, why).
_LOCAL_OVERRIDES = [
    ("defs-linux.json", ("definitions", "FileMode"), "maximum", 0xFFFFFFFF,
     "podman sends device fileMode with the file-type bits (8630 == S_IFCHR|0666); "
     "upstream caps it at 512, runc takes any uint32"),
    ("defs-linux.json", ("definitions", "RootfsPropagation"), "enum",
     ["private", "shared", "slave", "unbindable", "rprivate", "rshared", "rslave", "runbindable"],
     "containerd's CRI sets rshared (Bidirectional volumes) and rslave (HostToContainer); "
     "upstream lists only the plain four, runc takes the recursive ones too"),
]

# Other platforms' sections: a Linux runtime ignores them, but a config that carries one must
# still validate instead of failing on a schema file we do not ship.
_FOREIGN_PLATFORMS = ("solaris", "windows", "vm", "zos")

_MAX_MESSAGE = 160


def validate_config(doc: object) -> None:
    """Check a parsed config.json; raise ConfigError(json_path, message) on the first fault."""
    if _fast_accepts(doc):
        return
    _check("config-schema.json", doc, "config.json")


def validate_state(doc: object) -> None:
    """Check a state document (what `ocirun state` prints) against state-schema.json."""
    _check("state-schema.json", doc, "state")


def validate_features(doc: object) -> None:
    """Check a features document (what `ocirun features` prints) against features-schema.json."""
    _check("features-schema.json", doc, "features")


def _memo(fn):
    """functools.lru_cache without functools, which imports collections (~1.5 ms per command)."""
    cache: dict = {}

    def cached(*args):
        if args not in cache:
            cache[args] = fn(*args)
        return cache[args]

    cached.cache_clear = cache.clear  # type: ignore[attr-defined]  # as lru_cache has it
    return cached


def json_path(parts) -> str:
    """["mounts", 3, "destination"] -> "mounts[3].destination"."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


# --------------------------------------------------------------------------- fast path

def _fast_accepts(doc: object) -> bool:
    """True when the generated validator, built from exactly these schema files, accepts `doc`."""
    validate = _compiled_config_validator()
    if validate is None:
        return False
    try:
        validate(doc)
    except Exception:  # its own exception type, or a type error on a document it did not expect
        return False
    return True


@_memo
def _compiled_config_validator():
    """The generated validate function, or None when it is missing or was built from other inputs."""
    try:
        from . import _schema_compiled as compiled
    except ImportError:
        return None
    try:
        if compiled.INPUTS_DIGEST != inputs_digest():
            return None
    except OSError:  # no schema files: the jsonschema path says so
        return None
    return compiled.validate_config


def inputs_digest() -> str:
    """A fingerprint of what the validators are built from: the schema files and our overrides.

    It only has to notice an edited schema meeting a stale generated validator, not resist an
    attacker, so no hash module (importing one costs more than the rest of this check): every
    byte, read as one big-endian integer, modulo the Mersenne prime 2**127 - 1.  Each file's
    name and length go in before its bytes.  Reading ~60 KB costs ~0.1 ms."""
    parts = [repr((_LOCAL_OVERRIDES, _FOREIGN_PLATFORMS)).encode()]
    for name in sorted(n for n in os.listdir(_SCHEMA_DIR) if n.endswith(".json")):
        with open(os.path.join(_SCHEMA_DIR, name), "rb") as f:
            data = f.read()
        parts += [f"\0{name}\0{len(data)}\0".encode(), data]
    return format(int.from_bytes(b"".join(parts), "big") % ((1 << 127) - 1), "032x")


# The generated module names functions after the schemas' URIs: a fixed, machine-independent
# base keeps it the same wherever it is generated.
_GENERATED_BASE = "file:///ocirun/spec/schema/"

_STANDALONE_PRELUDE = '''
class JsonSchemaValueException(ValueError):
    def __init__(self, message, value=None, name=None, definition=None, rule=None):
        super().__init__(message)


class JsonSchemaValuesException(ValueError):
    def __init__(self, errors):
        super().__init__(str(errors))


class _Pattern:
    """What the generated code calls `.search` on, without importing `re` (ARCHITECTURE.md, Startup
    speed: nearly every config reaches a pattern, rlimits, devices).  The schema's patterns are plain character
    rules, written out in _PATTERN_RULES; an unknown one is compiled with `re` on first use."""

    def __init__(self, source):
        self.source = source
        self.rule = _PATTERN_RULES.get(source)
        self.compiled = None

    def search(self, text):
        if self.rule is not None:
            return self.rule(text)
        if self.compiled is None:
            import re as _re
            self.compiled = _re.compile(self.source)
        return self.compiled.search(text)


_DIGITS = frozenset("0123456789")
_CPU_LIST = frozenset("0123456789, -")
_PATTERN_RULES = {
    '^RLIMIT_[A-Z]+\\\\Z': lambda s: s[:7] == "RLIMIT_" and len(s) > 7 and s[7:].isascii()
                                   and s[7:].isalpha() and s[7:].isupper(),
    '^[0-9, -]*\\\\Z': lambda s: _CPU_LIST.issuperset(s),
    '^[1-9][0-9]*[KMG]B\\\\Z': lambda s: len(s) >= 3 and s[0] in "123456789" and s[-2] in "KMG"
                                      and s[-1] == "B" and _DIGITS.issuperset(s[1:-2]),
    '^MB:[^\\\\n]*\\\\Z': lambda s: s[:3] == "MB:" and "\\n" not in s,
    '.{1,}': lambda s: s.strip("\\n") != "",
    '^[cbup]\\\\Z': lambda s: s in ("c", "b", "u", "p"),
}


# json.loads never yields a Decimal; the name only keeps the generated type checks valid
# without importing the decimal module (~5 ms).
Decimal = float
'''


def generated_source() -> str:
    """Source of ocirun/_schema_compiled.py, built with fastjsonschema (a development dependency)."""
    import fastjsonschema

    documents = _documents()
    by_uri = {}
    for name, doc in documents.items():
        doc["id"] = _GENERATED_BASE + name
        by_uri[doc["id"]] = doc

    def load(uri: str):
        return by_uri[uri.split("#", 1)[0]]

    code = fastjsonschema.compile_to_code(
        documents["config-schema.json"], handlers={"file": load},
        use_default=False,          # never write defaults into the caller's document
        use_formats=False,          # jsonschema checks no "format" unless asked: neither do we
        detailed_exceptions=False)  # its messages are never shown: jsonschema words the error
    code = code.replace("from decimal import Decimal\n", "")
    imports = "from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n"
    if imports not in code:
        raise OCIError("fastjsonschema changed its generated imports: update ocirun/schema.py")
    code = code.replace(imports, _STANDALONE_PRELUDE)
    if "\nimport re\n" not in code or "': re.compile(" not in code:
        raise OCIError("fastjsonschema changed how it compiles patterns: update ocirun/schema.py")
    code = code.replace("\nimport re\n", "\n", 1).replace("': re.compile(", "': _Pattern(")
    import re
    root = re.search(r"^def (validate_\w*config_schema_json)\(", code, re.M)
    if root is None:
        raise OCIError("generated schema code has no config validator")
    header = (
        '"""Generated by `python -m ocirun.schema --regenerate` -- do not edit.\n\n'
        f"fastjsonschema {fastjsonschema.VERSION} compiled spec/schema/config-schema.json (with the\n"
        "overrides in ocirun/schema.py) into this standalone module; ocirun.schema uses it only to\n"
        'accept valid configs fast, and asks jsonschema whenever it rejects one.\n"""\n'
        "# flake8: noqa\n"
        f"INPUTS_DIGEST = {inputs_digest()!r}\n\n")
    return header + code + f"\n\nvalidate_config = {root.group(1)}\n"


def write_generated(path: str | None = None) -> str:
    """(Re)write ocirun/_schema_compiled.py; returns its path."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "_schema_compiled.py")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(generated_source())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- internals

def _check(schema_file: str, doc: object, what: str) -> None:
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


@_memo
def _validator(schema_file: str):
    from jsonschema import validators

    registry = _registry()
    schema = registry[_uri(schema_file)].contents
    cls = validators.validator_for(schema)
    return cls(schema, registry=registry)


@_memo
def _registry():
    """Every schema file, registered under its file:// URI so that relative $refs
    ("defs.json#/definitions/uint32") resolve between them."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    resources = []
    for name, doc in _documents().items():
        # Draft 4's "id" gives each document its base URI, which relative $refs resolve against.
        doc.setdefault("id", _uri(name))
        resources.append((_uri(name), Resource.from_contents(doc, default_specification=DRAFT4)))
    return Registry().with_resources(resources)


def _documents() -> dict[str, dict]:
    """Every schema file by name, with our local overrides applied and stubs for the platforms
    whose schema files we do not ship.  A fresh copy on each call."""
    try:
        names = sorted(n for n in os.listdir(_SCHEMA_DIR) if n.endswith(".json"))
    except FileNotFoundError:
        names = []
    if "config-schema.json" not in names:
        raise OCIError(f"config.json schema not found in {_SCHEMA_DIR}")
    documents: dict[str, dict] = {}
    for name in names:
        with open(os.path.join(_SCHEMA_DIR, name), "rb") as f:
            documents[name] = jsonio.loads(f.read())
    for name, keys, key, value, _why in _LOCAL_OVERRIDES:
        target = documents[name]
        for k in keys:
            target = target[k]
        target[key] = value
    for platform in _FOREIGN_PLATFORMS:
        documents.setdefault(f"config-{platform}.json", {platform: {"type": "object"}})
    return documents


def _uri(name: str) -> str:
    from urllib.parse import quote  # only on the jsonschema path
    return "file://" + quote(os.path.join(_SCHEMA_DIR, name))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m ocirun.schema --regenerate")
    print(write_generated())
