"""ocirun.schema's fast path: the generated validator (ocirun/_schema_compiled.py) is fresh,
standalone, and never accepts a config that jsonschema rejects.

The fast validator only short-circuits *accepts*; every reject is re-checked by jsonschema, whose
verdict and message the user sees.  So the property that keeps bad configs out is "fast accept
implies jsonschema accept"; the one that keeps bad configs fast is "they agree", which we check
exactly on the real documents and the invalid cases of test_schema.py, and count on the
mutation corpus.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
import test_schema
from ocirun import _schema_compiled, schema
from ocirun.defaults import default_config

FIXTURES = test_schema.FIXTURES
ENGINE_CONFIGS = test_schema.ENGINE_CONFIGS


def fast_accepts(doc) -> bool:
    return schema._fast_accepts(doc)


def jsonschema_accepts(doc) -> bool:
    return schema._validator("config-schema.json").is_valid(doc)


def test_generated_validator_matches_the_schema_files():
    assert _schema_compiled.INPUTS_DIGEST == schema.inputs_digest(), (
        "spec/schema or the overrides changed: run `.venv/bin/python -m ocirun.schema --regenerate`")
    assert schema._compiled_config_validator() is _schema_compiled.validate_config


def test_regenerating_gives_the_committed_file():
    if importlib.util.find_spec("fastjsonschema") is None:
        pytest.skip("fastjsonschema is not installed (pip install -e '.[test]')")
    import fastjsonschema
    if fastjsonschema.VERSION != _schema_compiled.VERSION:
        pytest.skip(f"generated with fastjsonschema {_schema_compiled.VERSION}, "
                    f"{fastjsonschema.VERSION} installed")
    assert Path(_schema_compiled.__file__).read_text() == schema.generated_source()


def test_hot_path_imports_neither_jsonschema_nor_fastjsonschema(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(default_config(["true"])))
    code = ("import json, sys; from ocirun import schema; "
            f"schema.validate_config(json.load(open({str(path)!r}))); "
            "bad = [m for m in ('jsonschema', 'referencing', 'fastjsonschema', 'decimal', 'hashlib')"
            " if m in sys.modules]; "
            "sys.exit(f'imported on the hot path: {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_stale_generated_validator_is_not_used(monkeypatch):
    schema._compiled_config_validator.cache_clear()
    monkeypatch.setattr(schema, "inputs_digest", lambda: "something else")
    try:
        assert schema._compiled_config_validator() is None
        doc = default_config(["true"])
        assert not fast_accepts(doc)
        schema.validate_config(doc)  # jsonschema still accepts it
    finally:
        monkeypatch.undo()
        schema._compiled_config_validator.cache_clear()


# ---------------------------------------------------------------------------- same verdicts

def real_documents() -> list[tuple[str, dict]]:
    docs = [(p.name, test_schema.load(p)) for p in ENGINE_CONFIGS]
    docs.append(("ocirun spec", default_config()))
    docs.append(("ocirun spec /bin/true", default_config(["/bin/true"], terminal=False)))
    docs.append(("helpers.default_config", helpers.default_config(["true"], rootfs="/nonexistent")))
    return docs


@pytest.mark.parametrize("name, doc", real_documents(), ids=lambda x: x if isinstance(x, str) else "")
def test_real_documents_are_accepted_by_both(name, doc):
    assert jsonschema_accepts(doc)
    assert fast_accepts(doc)


def bad_cases_of_test_schema():
    marks = [m for m in test_schema.test_bad_config_names_the_field.pytestmark if m.name == "parametrize"]
    return [case[0] for case in marks[0].args[1]]


@pytest.mark.parametrize("mutate", bad_cases_of_test_schema())
def test_invalid_cases_are_rejected_by_both(mutate):
    doc = test_schema.load(FIXTURES / "podman-rich-config.json")
    mutate(doc)
    assert not jsonschema_accepts(doc)
    assert not fast_accepts(doc)


def test_non_objects_are_rejected_by_both():
    for doc in ([1, 2], "x", None, 5, True):
        assert not jsonschema_accepts(doc) and not fast_accepts(doc)


# Values that probe each type rule's edges: bool vs integer, float vs integer, 2^32 and 2^64,
# negative numbers, a trailing newline against `^...$` patterns, empty containers.
PROBES = [None, True, False, 0, 1, -1, 1.0, 1.5, 2**32, 2**63, 2**64, "", "x", "RLIMIT_X\n",
          "c", [], ["x"], [1], {}, {"k": "v"}, {"k": 1}]


def mutations(doc, rng: random.Random, per_list: int = 3):
    """(description, keys, new value) for every node replaced by every probe and every object key
    dropped.  Long lists are sampled."""
    out = []
    for keys in _node_paths(doc, rng, per_list):
        where = schema.json_path(keys)
        out += [(f"{where} = {probe!r}", keys, probe) for probe in PROBES]
        if isinstance(keys[-1], str):
            out.append((f"del {where}", keys, _DELETE))
    return out


_DELETE = object()


def _node_paths(node, rng, per_list, keys=()):
    if keys:
        yield keys
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _node_paths(v, rng, per_list, keys + (k,))
    elif isinstance(node, list):
        picks = range(len(node)) if len(node) <= per_list else sorted(rng.sample(range(len(node)), per_list))
        for i in picks:
            yield from _node_paths(node[i], rng, per_list, keys + (i,))


def _changed(doc, keys, value):
    out = copy.deepcopy(doc)
    parent = out
    for k in keys[:-1]:
        parent = parent[k]
    if value is _DELETE:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    return out


def corpus_documents() -> list[tuple[str, dict]]:
    """The real documents, with docker's 300-odd seccomp rules cut to a few (the rules are all
    alike; the full list only slows the test down)."""
    out = []
    for name, doc in real_documents():
        doc = copy.deepcopy(doc)
        sec = (doc.get("linux") or {}).get("seccomp")
        if sec and len(sec.get("syscalls", [])) > 4:
            sec["syscalls"] = sec["syscalls"][:4]
        out.append((name, doc))
    rich = helpers.default_config(["true"], rootfs="/x")
    helpers.deep_update(rich, {
        "process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
                    "scheduler": {"policy": "SCHED_BATCH", "nice": 5, "flags": ["SCHED_FLAG_RECLAIM"]},
                    "execCPUAffinity": {"initial": "0", "final": "0-1"}, "consoleSize": {"height": 1, "width": 2}},
        "linux": {"timeOffsets": {"monotonic": {"secs": 10, "nanosecs": 5}},
                  "netDevices": {"veth0": {"name": "eth0"}}, "personality": {"domain": "LINUX32"},
                  "intelRdt": {"closID": "x", "memBwSchema": "MB:0=20"},
                  "resources": {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}],
                                "pids": {"limit": 5}, "rdma": {"mlx": {"hcaHandles": 1}},
                                "blockIO": {"weight": 10, "weightDevice": [{"major": 8, "minor": 0, "weight": 5}]}}},
        "hooks": {"createRuntime": [{"path": "/bin/true", "timeout": 5}]},
        "windows": {}, "annotations": {"a": "b"},
    })
    out.append(("rich", rich))
    return out


# ~19,000 mutations in all (30 s, jsonschema is the slow side): a fixed sample of them by default,
# every one with OCIRUN_SCHEMA_FUZZ=all.
SAMPLE = None if os.environ.get("OCIRUN_SCHEMA_FUZZ") == "all" else 2500


def test_mutations_never_get_a_fast_accept_that_jsonschema_rejects():
    rng = random.Random(6)
    cases = [(name, doc, m) for name, doc in corpus_documents() for m in mutations(doc, rng)]
    if SAMPLE is not None:
        cases = rng.sample(cases, SAMPLE)
        # the one known disagreement, so that its explanation below stays checked
        cases += [(name, doc, m) for name, doc in corpus_documents()[:1]
                  for m in mutations(doc, rng) if m[2] == "RLIMIT_X\n"]
    fast_only_rejects = []
    for name, doc, (what, keys, value) in cases:
        mutated = _changed(doc, keys, value)
        fast, slow = fast_accepts(mutated), jsonschema_accepts(mutated)
        assert not (fast and not slow), f"{name}: {what}: the fast validator accepts what jsonschema rejects"
        if fast != slow:
            fast_only_rejects.append(f"{name}: {what}")
    # Where they differ, the fast one is stricter and jsonschema decides (at the old cost).  The
    # one known case: fastjsonschema reads `$` in a pattern as the end of the string, where
    # Python's re (and so jsonschema) also matches before a final newline.
    unexplained = [w for w in fast_only_rejects if not w.endswith("'RLIMIT_X\\n'")]
    assert not unexplained, unexplained[:10]
    assert fast_only_rejects, "the known pattern difference went away: update this test's notes"
